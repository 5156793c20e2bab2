//! A long-lived `retro serve` and `retro watch` across other processes' applies and `retro gc`:
//! every `POST /apply` must be answered 2xx and be in history afterwards, every
//! `GET /checkpoints/HEAD` 200, and the watcher must print every checkpoint of HEAD's history
//! since it started, in order.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use depot::{Depot, ObjectId};

use benchkit::Rng;

use crate::check::Ack;
use crate::class::{Ctx, Tally};
use crate::proc;
use crate::round;

/// A minimal HTTP/1.1 exchange: status and body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nX-Retro-Session: torture-http\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("no end of headers in {text:?}"))?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked"));
    let body = if chunked {
        let mut out = String::new();
        let mut rest = rest;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if size == 0 || after.len() < size {
                break;
            }
            out.push_str(&after[..size]);
            rest = after[size..].trim_start_matches("\r\n");
        }
        out
    } else {
        rest.to_owned()
    };
    Ok((status, body))
}

/// A free loopback port (bound, read, released).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Killing(Child);

impl Drop for Killing {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the class once on `ctx.dir`.
pub fn run(
    ctx: &Ctx<'_>,
    rng: &mut Rng,
    tally: &mut Tally,
) -> anyhow::Result<(Vec<Ack>, Vec<String>)> {
    let place = format!("[{}, depot {}]", ctx.tag, ctx.dir.display());
    let mut problems: Vec<String> = Vec::new();
    let mut acks = Vec::new();
    let start_head = Depot::open(ctx.dir)?.head()?.context("no HEAD")?;

    // The server, on a port that was free a moment ago (retried if someone took it).
    let mut server = None;
    let mut port = 0;
    for _ in 0..5 {
        port = free_port()?;
        let mut child = round::retro(ctx.setup, ctx.dir)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("could not start retro serve")?;
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel::<String>();
        let log = Arc::new(Mutex::new(String::new()));
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log2.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&line);
                log2.lock().unwrap_or_else(|e| e.into_inner()).push('\n');
                let _ = tx.send(line);
            }
        });
        let child = Killing(child);
        // The ready line, or the end of stderr (it died).
        let ready = loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line.contains("serving") => break true,
                Ok(_) => continue,
                Err(_) => break false,
            }
        };
        if ready {
            server = Some((child, log));
            break;
        }
        let text = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if !text.contains("could not listen") {
            problems.push(format!(
                "retro serve did not get ready in 30 s: {text:?} {place}"
            ));
            return Ok((acks, problems));
        }
    }
    let Some((server, server_log)) = server else {
        problems.push(format!("retro serve found no free port in 5 tries {place}"));
        return Ok((acks, problems));
    };

    // The watcher, from the head we just read (so that nothing lands unseen in between).
    let mut watcher = round::retro(ctx.setup, ctx.dir)
        .args(["watch", "--json", "--since", &start_head.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("could not start retro watch")?;
    let wout = watcher.stdout.take().expect("piped stdout");
    let werr = watcher.stderr.take().expect("piped stderr");
    let watcher = Killing(watcher);
    let seen: Arc<Mutex<Vec<ObjectId>>> = Arc::new(Mutex::new(Vec::new()));
    let odd: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let (seen2, odd2) = (Arc::clone(&seen), Arc::clone(&odd));
    let wreader = std::thread::spawn(move || {
        for line in BufReader::new(wout).lines().map_while(Result::ok) {
            let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            match (value["type"].as_str(), value["checkpoint"].as_str()) {
                (Some("checkpoint"), Some(id)) => match id.parse() {
                    Ok(id) => seen2.lock().unwrap_or_else(|e| e.into_inner()).push(id),
                    Err(_) => odd2.lock().unwrap().push(line),
                },
                _ => odd2.lock().unwrap_or_else(|e| e.into_inner()).push(line),
            }
        }
    });
    let werr_text = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(werr).read_to_string(&mut text);
        text
    });

    // Other processes: library writers (each stops by itself) and repeated retro gc.
    let mut writers = Vec::new();
    for w in 0..rng.range(1, 3) {
        let child = ctx
            .writer(&format!("{}v{w}", ctx.tag), rng.next_u64())
            .arg("--threads")
            .arg(rng.range(1, 3).to_string())
            .arg("--limit")
            .arg(rng.range(10, 40).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("could not start a writer")?;
        writers.push(std::thread::spawn(move || child.wait_with_output()));
    }
    let gcs = rng.range(2, 5);
    let setup_retro = ctx.setup.retro.clone();
    let dir = ctx.dir.to_path_buf();
    let gc_thread = std::thread::spawn(move || {
        let mut results = Vec::new();
        for _ in 0..gcs {
            let mut cmd = Command::new(&setup_retro);
            cmd.arg("--depot").arg(&dir).arg("gc").env("NO_COLOR", "1");
            results.push(proc::run(&mut cmd, Duration::from_secs(120)));
        }
        results
    });

    // The HTTP client: an account of its own (so the domain never refuses or conflicts).
    let account = format!("accounts/http{}", ctx.tag);
    let posts = rng.range(10, 40);
    let mut posted: Vec<String> = Vec::new();
    for i in 0..=posts {
        let cid = format!("{}h.{i}", ctx.tag);
        let body = if i == 0 {
            serde_json::json!({"path": account, "name": "open",
                "params": {"owner": "http", "cid": cid}})
        } else {
            serde_json::json!({"path": account, "name": "deposit",
                "params": {"amount": rng.range(1, 100), "cid": cid}})
        };
        match http(port, "POST", "/apply", Some(&body.to_string())) {
            Ok((status, text)) if (200..300).contains(&status) => {
                let checkpoint = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["checkpoint"].as_str().map(str::to_owned));
                match checkpoint {
                    Some(checkpoint) => {
                        tally.posts += 1;
                        posted.push(checkpoint.clone());
                        acks.push(Ack {
                            cid,
                            checkpoint,
                            via: "http",
                        });
                    }
                    None => problems.push(format!(
                        "POST /apply {body} answered {status} without a checkpoint: {text:?} {place}"
                    )),
                }
            }
            Ok((status, text)) => problems.push(format!(
                "POST /apply {body} answered {status}, expected 2xx: {text:?} {place}"
            )),
            Err(e) => problems.push(format!("POST /apply {body} failed: {e:#} {place}")),
        }
        if rng.chance(0.3) {
            match http(port, "GET", "/checkpoints/HEAD", None) {
                Ok((200, _)) => {}
                Ok((status, text)) => problems.push(format!(
                    "GET /checkpoints/HEAD answered {status}, expected 200: {text:?} {place}"
                )),
                Err(e) => problems.push(format!("GET /checkpoints/HEAD failed: {e:#} {place}")),
            }
        }
    }
    for writer in writers {
        match writer.join() {
            Ok(Ok(output)) => {
                for line in String::from_utf8_lossy(&output.stdout).lines() {
                    let mut parts = line.split(' ');
                    if let (Some("ACK"), Some(checkpoint), Some(cid)) =
                        (parts.next(), parts.next(), parts.next())
                    {
                        acks.push(Ack {
                            cid: cid.to_owned(),
                            checkpoint: checkpoint.to_owned(),
                            via: "lib",
                        });
                    }
                }
                let err = String::from_utf8_lossy(&output.stderr);
                for line in err.lines().filter(|l| !l.starts_with("CONFLICT ")) {
                    problems.push(format!("library writer: {line} {place}"));
                }
                if !output.status.success() {
                    problems.push(format!(
                        "a library writer exited {:?} {place}",
                        output.status.code()
                    ));
                }
            }
            Ok(Err(e)) => problems.push(format!("a library writer could not be waited for: {e}")),
            Err(_) => problems.push("a writer thread panicked".to_owned()),
        }
    }
    for ran in gc_thread.join().unwrap_or_default() {
        match ran {
            Ok(ran) if ran.code == Some(0) => tally.serve_gcs += 1,
            Ok(ran) => problems.push(format!(
                "retro gc beside the server failed: {} {place}",
                ran.describe()
            )),
            Err(e) => problems.push(format!("could not run retro gc: {e}")),
        }
    }

    // Every checkpoint since the watcher's start, oldest first.
    let depot = Depot::open(ctx.dir)?;
    let head = depot.head()?.context("no HEAD")?;
    let expected = depot.first_parents_since(head, Some(start_head))?;
    for checkpoint in &posted {
        if !expected.iter().any(|id| id.to_string() == *checkpoint) {
            problems.push(format!(
                "POST /apply was answered with {checkpoint}, which is not in HEAD's history {place}"
            ));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = seen.lock().unwrap_or_else(|e| e.into_inner()).len();
        if got >= expected.len() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut server = server;
    let mut watcher = watcher;
    // The server stops gracefully on SIGTERM.
    // SAFETY-free: libc::kill on a pid we own.
    unsafe_kill(server.0.id(), libc::SIGTERM);
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = server.0.try_wait()? {
            break Some(status);
        }
        if stopped.elapsed() > Duration::from_secs(30) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    match status {
        Some(status) if status.success() => {}
        other => problems.push(format!(
            "retro serve did not exit 0 within 30 s of SIGTERM ({other:?}): {:?} {place}",
            server_log.lock().unwrap_or_else(|e| e.into_inner())
        )),
    }
    let _ = watcher.0.kill();
    let _ = watcher.0.wait();
    let _ = wreader.join();
    let werr = werr_text.join().unwrap_or_default();
    if !werr.trim().is_empty() {
        problems.push(format!(
            "retro watch wrote to stderr: {:?} {place}",
            werr.trim()
        ));
    }
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    tally.watched += seen.len() as u64;
    if seen != expected {
        let first = seen
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(seen.len().min(expected.len()));
        problems.push(format!(
            "retro watch printed {} checkpoints, HEAD's history since {start_head} has {}; first \
             difference at {first} {place}",
            seen.len(),
            expected.len()
        ));
    }
    for line in odd.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        problems.push(format!("retro watch printed {line:?} {place}"));
    }
    drop(server);
    drop(watcher);
    Ok((acks, problems))
}

/// Sends `signal` to `pid` (one of our children).
fn unsafe_kill(pid: u32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}
