//! `retro serve` over a PostgreSQL depot: applies over HTTP land in the database, reads answer.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;

use crate::common::{command, fresh_url, ok, retro};

/// One HTTP/1.1 request with `Connection: close`; the status and the body.
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nX-Retro-Session: s1\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

#[test]
fn serve_applies_and_reads_a_postgres_depot() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let url = fresh_url();
    ok(w, &["init", &url]);
    let mut server = retro(w, &["--depot", &url, "serve", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(server.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.trim().strip_suffix('/'))
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_owned();

    let (status, body) = http(
        &addr,
        "POST",
        "/apply",
        &command("accounts/a", "open", r#"{"owner":"A"}"#),
    );
    let (bad, _) = http(&addr, "POST", "/apply", "{not json");
    let (health, _) = http(&addr, "GET", "/health", "");
    let (_, events) = http(&addr, "GET", "/events?glob=accounts/*", "");
    let _ = server.kill();
    let _ = server.wait();

    assert_eq!(status, 201, "{body}");
    assert_eq!(bad, 400);
    assert_eq!(health, 200);
    let applied: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = applied["checkpoint"].as_str().unwrap();
    assert!(events.contains(id), "{events}");
    // The CLI sees what the server wrote.
    assert_eq!(
        ok(w, &["--depot", &url, "log", "--oneline"])
            .lines()
            .count(),
        1
    );
}
