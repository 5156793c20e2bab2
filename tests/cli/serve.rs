//! `retro serve` over real sockets: every endpoint and error status of `docs/http.md`, the
//! Server-Sent Events of `/watch` (live, filtered, resumed), concurrent writers meeting in the
//! group commit, and a SIGTERM while clients are writing. The HTTP client is a minimal HTTP/1.1
//! one over `std::net::TcpStream` (one request per connection, `Connection: close`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{assert_same_snapshot, json as parse, json_lines, misbehaving, TestDepot};
use crate::watch::{std_cmd, Lines, Proc};

const IO_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client.

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        assert!(
            self.header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "not a JSON response ({:?}): {}",
            self.header("content-type"),
            self.text()
        );
        parse(&self.text())
    }

    /// Asserts the status and the documented error body with `code`.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.text());
        let body = self.json();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            !body["error"]["message"].as_str().unwrap().is_empty(),
            "{body}"
        );
    }
}

fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

fn write_request(
    stream: &mut TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    // Defaults (`Host: localhost`, and a JSON content type on a POST) unless `headers` name them;
    // a header given with an empty value is left out (to send none at all).
    let given = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !given("host") {
        head.push_str("Host: localhost\r\n");
    }
    if method == "POST" && !given("content-type") {
        head.push_str("Content-Type: application/json\r\n");
    }
    let mut head = head.into_bytes();
    for (name, value) in headers.iter().filter(|(_, v)| !v.is_empty()) {
        head.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if method == "POST" || !body.is_empty() {
        head.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    stream.write_all(&head)?;
    // The server may answer (413) and stop reading before the body is all sent: keep going to
    // the response anyway.
    if let Err(err) = stream.write_all(body) {
        if body.len() <= 1 << 20 {
            return Err(err);
        }
    }
    Ok(())
}

/// The status line and headers.
fn read_head(reader: &mut impl BufRead) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            return Ok((status, headers));
        }
        let (name, value) = line.split_once(':').unwrap();
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
}

/// One chunk of a chunked body, or None at its end.
fn read_chunk(reader: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let size = usize::from_str_radix(line.trim().split(';').next().unwrap(), 16)
        .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
    let mut chunk = vec![0; size + 2];
    reader.read_exact(&mut chunk)?;
    chunk.truncate(size);
    Ok((size > 0).then_some(chunk))
}

/// One request on a fresh connection.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = connect(addr)?;
    write_request(&mut stream, method, path, headers, body)?;
    let mut reader = BufReader::new(stream);
    let (status, headers) = read_head(&mut reader)?;
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(length) = header("content-length") {
        body = vec![0; length.parse().unwrap()];
        reader.read_exact(&mut body)?;
    } else if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        while let Some(chunk) = read_chunk(&mut reader)? {
            body.extend(chunk);
        }
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn get(addr: &str, path: &str) -> Response {
    request(addr, "GET", path, &[], b"").unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn get_json(addr: &str, path: &str) -> Value {
    let response = get(addr, path);
    assert_eq!(response.status, 200, "GET {path}: {}", response.text());
    response.json()
}

fn post(addr: &str, headers: &[(&str, &str)], body: &str) -> Response {
    request(addr, "POST", "/apply", headers, body.as_bytes())
        .unwrap_or_else(|e| panic!("POST /apply {body}: {e}"))
}

/// POST /apply, which must answer 201; returns the new checkpoint id.
fn apply(addr: &str, body: &str) -> String {
    let response = post(addr, &[], body);
    assert_eq!(response.status, 201, "{body}: {}", response.text());
    response.json()["checkpoint"].as_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------------
// Server-Sent Events.

#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

impl SseEvent {
    fn json(&self) -> Value {
        parse(&self.data)
    }
}

/// An open `/watch` stream, decoded (chunks, then events) on a thread.
pub struct Sse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    events: mpsc::Receiver<SseEvent>,
    stream: TcpStream,
}

impl Sse {
    pub fn open(addr: &str, path: &str, headers: &[(&str, &str)]) -> Sse {
        let mut stream = connect(addr).unwrap();
        stream.set_read_timeout(None).unwrap();
        write_request(&mut stream, "GET", path, headers, b"").unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let (status, headers) = read_head(&mut reader).unwrap();
        let chunked = headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v == "chunked");
        let (tx, events) = mpsc::channel();
        thread::spawn(move || {
            let mut text = String::new();
            let mut event = SseEvent::default();
            loop {
                let bytes = if chunked {
                    match read_chunk(&mut reader) {
                        Ok(Some(bytes)) => bytes,
                        _ => return,
                    }
                } else {
                    let mut buf = vec![0; 4096];
                    match reader.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf[..n].to_vec(),
                    }
                };
                text.push_str(&String::from_utf8(bytes).unwrap());
                while let Some(end) = text.find('\n') {
                    let line: String = text.drain(..=end).collect();
                    let line = line.trim_end_matches(['\n', '\r']);
                    if line.is_empty() {
                        let complete = !event.event.is_empty() || !event.data.is_empty();
                        if complete && tx.send(std::mem::take(&mut event)).is_err() {
                            return;
                        }
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event.event = v.trim_start().to_owned();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim_start().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !event.data.is_empty() {
                            event.data.push('\n');
                        }
                        event.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                    // `:` comments (keep-alives) are skipped.
                }
            }
        });
        Sse {
            status,
            headers,
            events,
            stream,
        }
    }

    /// The next event within `timeout`; `Err(true)` when the stream ended, `Err(false)` on timeout.
    pub fn next(&self, timeout: Duration) -> Result<SseEvent, bool> {
        self.events
            .recv_timeout(timeout)
            .map_err(|e| matches!(e, mpsc::RecvTimeoutError::Disconnected))
    }

    pub fn expect(&self, what: &str) -> SseEvent {
        self.next(Duration::from_secs(5))
            .unwrap_or_else(|ended| panic!("no SSE event ({what}); stream ended: {ended}"))
    }

    /// Expects a `checkpoint` event for `id`; returns its data.
    pub fn expect_checkpoint(&self, id: &str) -> Value {
        let event = self.expect(id);
        assert_eq!(event.event, "checkpoint", "{event:?}");
        assert_eq!(event.id.as_deref(), Some(id), "{event:?}");
        let data = event.json();
        assert_eq!(data["type"], "checkpoint");
        assert_eq!(data["checkpoint"], id);
        data
    }
}

impl Drop for Sse {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

// ---------------------------------------------------------------------------------------------
// The server.

struct Server {
    proc: Proc,
    addr: String,
    stderr: Lines,
}

impl Server {
    /// Starts `retro serve --listen 127.0.0.1:0 ARGS` (the kernel picks a free port; the address
    /// comes from its first stderr line) and waits until GET /health answers.
    fn start(depot: &TestDepot, args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_probing(depot, args, env, &[])
    }

    /// As `start`, probing /health with these headers (a read token).
    fn start_probing(
        depot: &TestDepot,
        args: &[&str],
        env: &[(&str, &str)],
        probe: &[(&str, &str)],
    ) -> Server {
        let mut full = vec!["serve", "--listen", "127.0.0.1:0"];
        full.extend_from_slice(args);
        let mut cmd = std_cmd(depot, &full);
        cmd.envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut proc = Proc(Some(cmd.spawn().unwrap()));
        let stderr = Lines::new(proc.child().stderr.take().unwrap());
        let first = stderr.expect(Duration::from_secs(10), "the 'serving' line");
        let addr = first
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.strip_suffix('/'))
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .to_owned();
        assert!(addr.starts_with("127.0.0.1:"), "{first}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(response) = request(&addr, "GET", "/health", probe, b"") {
                assert_eq!(response.status, 200);
                break;
            }
            assert!(Instant::now() < deadline, "/health never answered");
            thread::sleep(Duration::from_millis(20));
        }
        Server { proc, addr, stderr }
    }
}

fn sigterm(pid: i32) {
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
}

fn cli_json_lines(depot: &TestDepot, args: &[&str]) -> Value {
    Value::Array(json_lines(&depot.ok(args)))
}

fn head(depot: &TestDepot) -> String {
    depot.head().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Reads.

#[test]
fn serve_reads_answer_as_the_cli_prints() {
    let depot = TestDepot::with_history();
    let server = Server::start(&depot, &[], &[]);
    let addr = server.addr.as_str();
    let head_id = head(&depot);

    // /health and the UI.
    let health = get(addr, "/health");
    assert_eq!(health.json(), json!({"status": "ok", "head": head_id}));
    let ui = get(addr, "/");
    assert_eq!(ui.status, 200);
    assert!(ui.header("content-type").unwrap().starts_with("text/html"));
    assert!(ui.text().contains("<title>retro depot</title>"));

    // /refs.
    let refs = get_json(addr, "/refs");
    assert!(refs
        .as_array()
        .unwrap()
        .contains(&json!({"ref": "HEAD", "kind": "symbolic", "target": "refs/heads/master"})));
    assert!(refs
        .as_array()
        .unwrap()
        .contains(&json!({"ref": "refs/heads/master", "kind": "direct", "target": head_id})));

    // /log: default, n, rev, partition, errors.
    let log = cli_json_lines(&depot, &["log", "--json"]);
    assert_eq!(log.as_array().unwrap().len(), 8);
    assert_eq!(get_json(addr, "/log"), log);
    assert_eq!(
        get_json(addr, "/log?n=2"),
        cli_json_lines(&depot, &["log", "--json", "-n", "2"])
    );
    assert_eq!(
        get_json(addr, "/log?rev=HEAD~2&n=3"),
        cli_json_lines(&depot, &["log", "--json", "-n", "3", "HEAD~2"])
    );
    assert_eq!(
        get_json(addr, "/log?partition=accounts/bob"),
        cli_json_lines(&depot, &["log", "--json", "--partition", "accounts/bob"])
    );
    assert_eq!(get_json(addr, "/log?n=0"), json!([]));
    get(addr, "/log?rev=nosuchrev").assert_error(404, "not_found");
    get(addr, &format!("/log?rev=sha256:{}", "0".repeat(64))).assert_error(404, "not_found");

    // /objects: raw bytes as `cat-object` prints them, or decoded JSON; prefix and revision.
    let raw = depot
        .cmd()
        .args(["cat-object", &head_id])
        .output()
        .unwrap()
        .stdout;
    let object = get(addr, &format!("/objects/{head_id}"));
    assert_eq!(object.status, 200);
    assert_eq!(
        object.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(object.body, raw);
    let hex = head_id.strip_prefix("sha256:").unwrap();
    assert_eq!(get(addr, &format!("/objects/{}", &hex[..12])).body, raw);
    assert_eq!(get(addr, "/objects/HEAD").body, raw);
    let accept = [("Accept", "application/json")];
    let decoded = request(addr, "GET", "/objects/HEAD", &accept, b"")
        .unwrap()
        .json();
    assert_eq!(decoded["kind"], "checkpoint");
    assert_eq!(decoded["id"], head_id.as_str());
    assert_eq!(decoded["affix"], log[0]["affix"]);
    let affix_id = decoded["affix"].as_str().unwrap();
    let affix = request(addr, "GET", &format!("/objects/{affix_id}"), &accept, b"")
        .unwrap()
        .json();
    assert_eq!(affix["kind"], "affix");
    let event_id = affix["partitions"][0]["events"][0].as_str().unwrap();
    let event = request(addr, "GET", &format!("/objects/{event_id}"), &accept, b"")
        .unwrap()
        .json();
    assert_eq!(event["kind"], "event");
    assert_eq!(event["name"], "Withdrawn");
    assert_eq!(event["data"], json!({"amount": 300}));
    get(addr, &format!("/objects/sha256:{}", "0".repeat(64))).assert_error(404, "not_found");
    get(addr, "/objects/0000000000ff").assert_error(404, "not_found");

    // /checkpoints/{rev} as `retro show --json`.
    let show = parse(&depot.ok(&["show", "--json", "HEAD~4"]));
    assert_eq!(get_json(addr, "/checkpoints/HEAD~4"), show);
    assert_eq!(
        get_json(addr, &format!("/checkpoints/{head_id}")),
        parse(&depot.ok(&["show", "--json", "HEAD"]))
    );
    get(addr, "/checkpoints/nosuchrev").assert_error(404, "not_found");
    // Past the root: answered as a bad revision (400) today; either is a JSON error.
    let deep = get(addr, "/checkpoints/HEAD~99");
    assert!(deep.status == 400 || deep.status == 404, "{}", deep.text());
    assert!(deep.json()["error"]["code"].is_string());

    // /partitions and /events.
    assert_eq!(
        get_json(addr, "/partitions"),
        cli_json_lines(&depot, &["partitions", "--json"])
    );
    let accounts = get_json(addr, "/partitions?glob=accounts/*");
    assert_eq!(
        accounts,
        cli_json_lines(&depot, &["partitions", "--json", "accounts/*"])
    );
    assert!(accounts
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["partition"].as_str().unwrap().starts_with("accounts/")));
    let all_events = cli_json_lines(&depot, &["events", "--json"]);
    assert_eq!(get_json(addr, "/events"), all_events);
    assert_eq!(
        get_json(addr, "/events?glob=accounts/bob"),
        cli_json_lines(&depot, &["events", "--json", "accounts/bob"])
    );
    let since = get_json(addr, "/events?since=HEAD~3");
    assert_eq!(
        since,
        cli_json_lines(&depot, &["events", "--json", "--since", "HEAD~3"])
    );
    assert!(!since.as_array().unwrap().is_empty());
    assert!(since.as_array().unwrap().len() < all_events.as_array().unwrap().len());
    assert_eq!(
        get_json(addr, "/events?limit=2"),
        json!(all_events.as_array().unwrap()[..2])
    );
    get(addr, "/events?since=nosuchrev").assert_error(404, "not_found");
    // A malformed query parameter is a 400 (axum's own rejection, answered as the JSON error).
    get(addr, "/log?n=abc").assert_error(400, "bad_request");
    get(addr, "/events?limit=-1").assert_error(400, "bad_request");
    get(addr, "/events?glob=accounts/%5B").assert_error(400, "bad_request");
}

// ---------------------------------------------------------------------------------------------
// Writes.

#[test]
fn serve_apply_answers_201_400_413_422_and_records_rejections() {
    let depot = TestDepot::with_history();
    let server = Server::start(&depot, &[], &[]);
    let addr = server.addr.as_str();
    let before = head(&depot);

    // 201, with the session header and without (default session `http`).
    let response = post(
        addr,
        &[("X-Retro-Session", "s1")],
        r#"{"path":"accounts/erin","name":"open","params":{"owner":"Erin"}}"#,
    );
    assert_eq!(response.status, 201, "{}", response.text());
    let body = response.json();
    let opened = body["checkpoint"].as_str().unwrap().to_owned();
    assert_eq!(
        body,
        json!({"checkpoint": opened, "parent": before, "path": "accounts/erin", "events": 2,
               "partitions": ["accounts/erin", "registry/accounts"], "attempts": 1})
    );
    let deposited = apply(
        addr,
        r#"{"path":"accounts/erin","name":"deposit","params":{"amount":10}}"#,
    );
    let log = json_lines(&depot.ok(&["log", "--json", "-n", "2"]));
    assert_eq!(log[0]["checkpoint"], deposited.as_str());
    assert_eq!(log[0]["session"], "http");
    assert_eq!(log[0]["parents"], json!([opened]));
    assert_eq!(log[1]["checkpoint"], opened.as_str());
    assert_eq!(log[1]["session"], "s1");
    assert_eq!(get_json(addr, "/health")["head"], deposited.as_str());

    // 400: malformed JSON, a malformed command, a bad session id, unknown command or aggregate.
    post(addr, &[], r#"{"path":"accounts/erin","#).assert_error(400, "bad_command");
    post(addr, &[], "").assert_error(400, "bad_command");
    post(addr, &[], r#"{"path":"accounts/erin"}"#).assert_error(400, "bad_command");
    post(
        addr,
        &[("X-Retro-Session", "no spaces allowed")],
        r#"{"path":"accounts/erin","name":"deposit","params":{"amount":1}}"#,
    )
    .assert_error(400, "bad_command");
    post(
        addr,
        &[],
        r#"{"path":"accounts/erin","name":"fly","params":{}}"#,
    )
    .assert_error(400, "unknown_command");
    post(
        addr,
        &[],
        r#"{"path":"ships/s1","name":"open","params":{}}"#,
    )
    .assert_error(400, "unknown_command");

    // 413: one byte over 1 MiB (a valid command padded with spaces); exactly 1 MiB is accepted.
    let command = r#"{"path":"accounts/erin","name":"deposit","params":{"amount":1}}"#;
    let padded = |size: usize| format!("{command}{}", " ".repeat(size - command.len()));
    let big = request(
        addr,
        "POST",
        "/apply",
        &[],
        padded((1 << 20) + 1).as_bytes(),
    )
    .unwrap();
    big.assert_error(413, "too_large");
    assert_eq!(head(&depot), deposited, "a refused request moved HEAD");
    let limit = request(addr, "POST", "/apply", &[], padded(1 << 20).as_bytes()).unwrap();
    assert_eq!(limit.status, 201, "{}", limit.text());
    let at_limit = limit.json()["checkpoint"].as_str().unwrap().to_owned();

    // 422: the domain's own code; recorded as a failed command; HEAD does not move.
    let rejected = post(
        addr,
        &[("X-Retro-Session", "s2")],
        r#"{"path":"accounts/erin","name":"withdraw","params":{"amount":500}}"#,
    );
    rejected.assert_error(422, "insufficient_funds");
    assert_eq!(
        rejected.json()["error"]["message"],
        "cannot withdraw 500 from accounts/erin: the balance is 11"
    );
    post(
        addr,
        &[],
        r#"{"path":"accounts/nobody","name":"deposit","params":{"amount":1}}"#,
    )
    .assert_error(422, "not_open");
    assert_eq!(head(&depot), at_limit);
    let failed = json_lines(&depot.ok(&["failed", "--json"]));
    assert_eq!(failed.len(), 2, "{failed:?}");
    let erin = failed
        .iter()
        .find(|f| f["command"]["path"] == "accounts/erin")
        .expect("the rejected withdraw in `retro failed`");
    assert_eq!(erin["session"], "s2");
    assert_eq!(erin["command"]["name"], "withdraw");
    // One error shape with HTTP: `{code, message}`.
    assert_eq!(erin["error"]["code"], "insufficient_funds");
    assert_eq!(
        erin["error"]["message"],
        "cannot withdraw 500 from accounts/erin: the balance is 11"
    );
    assert!(depot.ok(&["failed"]).contains("accounts/erin withdraw"));

    // Wrong method and unknown path: the JSON error too.
    get(addr, "/apply").assert_error(405, "method_not_allowed");
    get(addr, "/nowhere").assert_error(404, "not_found");

    // 409 (`conflict`: the aggregate kept changing through every retry) needs a writer racing
    // the same aggregate faster than the engine retries; not provoked here.
    let fsck = depot.ok(&["fsck"]);
    assert!(fsck.contains("no problems"), "{fsck}");
}

#[test]
fn serve_with_a_token_requires_it_for_writes_only() {
    let depot = TestDepot::with_history();
    let command = r#"{"path":"accounts/fay","name":"open","params":{"owner":"Fay"}}"#;
    // --token, then the same through RETRO_TOKEN.
    for (args, env) in [
        (&["--token", "s3cret"][..], &[][..]),
        (&[][..], &[("RETRO_TOKEN", "s3cret")][..]),
    ] {
        let server = Server::start(&depot, args, env);
        let addr = server.addr.as_str();
        let before = head(&depot);
        post(addr, &[], command).assert_error(401, "unauthorized");
        post(addr, &[("Authorization", "Bearer wrong")], command).assert_error(401, "unauthorized");
        post(
            addr,
            &[("Authorization", "Bearer s3cret-and-more")],
            command,
        )
        .assert_error(401, "unauthorized");
        post(addr, &[("Authorization", "Bearer s3cre")], command).assert_error(401, "unauthorized");
        post(addr, &[("Authorization", "s3cret")], command).assert_error(401, "unauthorized");
        assert_eq!(head(&depot), before, "a 401 moved HEAD");
        // Reads need no token.
        assert_eq!(get_json(addr, "/health")["head"], before.as_str());
        assert_eq!(get_json(addr, "/log?n=1")[0]["checkpoint"], before.as_str());
        assert_eq!(get(addr, "/").status, 200);
        let ok = post(addr, &[("Authorization", "Bearer s3cret")], command);
        if args.is_empty() {
            // The account exists from the first round.
            ok.assert_error(422, "already_open");
        } else {
            assert_eq!(ok.status, 201, "{}", ok.text());
        }
    }
}

#[test]
fn serve_reports_a_failing_handler_as_502() {
    let depot = TestDepot::with_history();
    let manifest = misbehaving();
    let server = Server::start(&depot, &["--manifest", manifest.to_str().unwrap()], &[]);
    let before = head(&depot);
    post(
        &server.addr,
        &[],
        r#"{"path":"bad/b1","name":"crash","params":{}}"#,
    )
    .assert_error(502, "handler_failed");
    post(
        &server.addr,
        &[],
        r#"{"path":"bad/b1","name":"garbage","params":{}}"#,
    )
    .assert_error(502, "handler_failed");
    assert_eq!(head(&depot), before);
    let failed = json_lines(&depot.ok(&["failed", "--json"]));
    assert_eq!(failed.len(), 2, "{failed:?}");
}

// ---------------------------------------------------------------------------------------------
// Server-Sent Events.

#[test]
fn serve_watch_streams_checkpoints_live_and_resumes_after_last_event_id() {
    let depot = TestDepot::with_history();
    let server = Server::start(&depot, &[], &[]);
    let addr = server.addr.as_str();
    let history: Vec<String> = json_lines(&depot.ok(&["log", "--json", "--reverse"]))
        .iter()
        .map(|c| c["checkpoint"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(history.len(), 8);

    // Live from the head: nothing old, then what lands (through the API and through the CLI).
    let live = Sse::open(addr, "/watch", &[]);
    assert_eq!(live.status, 200);
    assert!(
        live.headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("content-type")
                && v.starts_with("text/event-stream"))
    );
    let registry = Sse::open(addr, "/watch?glob=registry/**", &[]);
    assert_eq!(registry.status, 200);
    let opened = apply(
        addr,
        r#"{"path":"accounts/gus","name":"open","params":{"owner":"Gus"}}"#,
    );
    let data = live.expect_checkpoint(&opened);
    assert_eq!(data["parent"], history[7].as_str());
    assert_eq!(data["session"], "http");
    let names: Vec<&str> = data["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["AccountOpened", "AccountListed"]);
    let deposited =
        depot.apply(r#"{"path":"accounts/gus","name":"deposit","params":{"amount":3}}"#);
    assert_eq!(live.expect_checkpoint(&deposited)["session"], "cli");
    // The registry stream got the opening (its registry event only), not the deposit.
    let registry_data = registry.expect_checkpoint(&opened);
    assert_eq!(registry_data["events"].as_array().unwrap().len(), 1);
    assert_eq!(registry_data["events"][0]["partition"], "registry/accounts");
    assert!(registry
        .next(Duration::from_millis(300))
        .is_err_and(|ended| !ended));

    // Resume after an earlier checkpoint: exactly the ones after it, in order, then live ones.
    let mut all = history.clone();
    all.extend([opened.clone(), deposited.clone()]);
    for (k, how) in [(3, "last-event-id"), (5, "since"), (usize::MAX, "start")] {
        let resumed = match how {
            "last-event-id" => Sse::open(addr, "/watch", &[("Last-Event-ID", &all[k])]),
            "since" => Sse::open(addr, &format!("/watch?since={}", all[k]), &[]),
            _ => Sse::open(addr, "/watch?since=start", &[]),
        };
        assert_eq!(resumed.status, 200);
        let from = if k == usize::MAX { 0 } else { k + 1 };
        for id in &all[from..] {
            resumed.expect_checkpoint(id);
        }
        // The next one is a new checkpoint, not a repeat.
        let marker = apply(
            addr,
            r#"{"path":"accounts/gus","name":"deposit","params":{"amount":1}}"#,
        );
        resumed.expect_checkpoint(&marker);
        live.expect_checkpoint(&marker);
        all.push(marker);
    }
    // Last-Event-ID wins over since.
    let both = Sse::open(
        addr,
        &format!("/watch?since={}", all[0]),
        &[("Last-Event-ID", all[all.len() - 2].as_str())],
    );
    both.expect_checkpoint(&all[all.len() - 1]);
    assert!(both
        .next(Duration::from_millis(300))
        .is_err_and(|ended| !ended));

    // A non-fast-forward move: `event: non_fast_forward` with the base as its id, then delivery
    // resumes after the base.
    let from = all.last().unwrap().clone();
    let base = all[all.len() - 4].clone();
    depot.ok(&["update-ref", "refs/heads/master", "HEAD~3"]);
    let after = apply(
        addr,
        r#"{"path":"accounts/hal","name":"open","params":{"owner":"Hal"}}"#,
    );
    let nff = live.expect("non_fast_forward");
    assert_eq!(nff.event, "non_fast_forward", "{nff:?}");
    assert_eq!(nff.id.as_deref(), Some(base.as_str()));
    let nff = nff.json();
    assert_eq!(nff["type"], "non_fast_forward");
    assert_eq!(nff["from"], from.as_str());
    assert_eq!(nff["base"], base.as_str());
    assert_eq!(live.expect_checkpoint(&after)["parent"], base.as_str());

    // Errors before the stream starts.
    get(addr, "/watch?since=nosuchrev").assert_error(404, "not_found");
    get(addr, "/watch?glob=accounts/%5B").assert_error(400, "bad_request");
}

// ---------------------------------------------------------------------------------------------
// Concurrency and shutdown.

#[test]
fn serve_concurrent_applies_all_land_in_a_linear_history() {
    const CLIENTS: usize = 16;
    const EACH: usize = 4;
    let depot = TestDepot::with_history();
    let server = Server::start(&depot, &[], &[]);
    let start = Arc::new(Barrier::new(CLIENTS));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let addr = server.addr.clone();
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                let session = format!("client{i}");
                let mut ids = Vec::new();
                for j in 0..EACH {
                    let body = if j == 0 {
                        format!(r#"{{"path":"accounts/c{i}","name":"open","params":{{"owner":"C{i}"}}}}"#)
                    } else {
                        format!(r#"{{"path":"accounts/c{i}","name":"deposit","params":{{"amount":{j}}}}}"#)
                    };
                    let response = post(&addr, &[("X-Retro-Session", &session)], &body);
                    assert_eq!(response.status, 201, "client {i}: {}", response.text());
                    ids.push(response.json()["checkpoint"].as_str().unwrap().to_owned());
                }
                ids
            })
        })
        .collect();
    let per_client: Vec<Vec<String>> = threads.into_iter().map(|t| t.join().unwrap()).collect();

    let mut applied: Vec<&String> = per_client.iter().flatten().collect();
    applied.sort();
    applied.dedup();
    assert_eq!(
        applied.len(),
        CLIENTS * EACH,
        "checkpoints are not distinct"
    );

    // One linear chain: each checkpoint's only parent is the next older one.
    let log = json_lines(&depot.ok(&["log", "--json", "-n", "1000"]));
    assert_eq!(log.len(), 8 + CLIENTS * EACH);
    for pair in log.windows(2) {
        assert_eq!(
            pair[0]["parents"],
            json!([pair[1]["checkpoint"]]),
            "not linear"
        );
    }
    let position = |id: &str| log.iter().position(|c| c["checkpoint"] == id).unwrap();
    for (i, ids) in per_client.iter().enumerate() {
        let positions: Vec<usize> = ids.iter().map(|id| position(id)).collect();
        assert!(
            positions.windows(2).all(|w| w[0] > w[1]),
            "client {i} out of order"
        );
        assert_eq!(log[positions[0]]["session"], format!("client{i}"));
        let events = json_lines(&depot.ok(&["events", "--json", &format!("accounts/c{i}")]));
        assert_eq!(events.len(), EACH);
    }
    let fsck = depot.ok(&["fsck"]);
    assert!(fsck.contains("no problems"), "{fsck}");
}

#[test]
fn serve_sigterm_lets_requests_in_flight_finish_and_exits_0() {
    const CLIENTS: usize = 8;
    let depot = TestDepot::with_history();
    let mut server = Server::start(&depot, &[], &[]);
    let stream = Sse::open(&server.addr, "/watch", &[]);
    assert_eq!(stream.status, 200);

    let committed = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let addr = server.addr.clone();
            let committed = committed.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut unanswered = None;
                for j in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let body = if j == 0 {
                        format!(r#"{{"path":"accounts/t{i}","name":"open","params":{{"owner":"T{i}"}}}}"#)
                    } else {
                        format!(r#"{{"path":"accounts/t{i}","name":"deposit","params":{{"amount":1}}}}"#)
                    };
                    match request(&addr, "POST", "/apply", &[], body.as_bytes()) {
                        Ok(response) => {
                            assert_eq!(response.status, 201, "client {i}: {}", response.text());
                            let id = response.json()["checkpoint"].as_str().unwrap().to_owned();
                            committed.lock().unwrap().push(id);
                        }
                        // Refused or cut off by the shutdown: this client is done.
                        Err(err) => {
                            unanswered = Some(err.kind());
                            break;
                        }
                    }
                }
                unanswered
            })
        })
        .collect();

    // Let the clients get going, then SIGTERM while they apply.
    let deadline = Instant::now() + Duration::from_secs(20);
    while committed.lock().unwrap().len() < 40 {
        assert!(Instant::now() < deadline, "the clients made no progress");
        thread::sleep(Duration::from_millis(5));
    }
    sigterm(server.proc.pid());
    let signalled = Instant::now();
    let status = server
        .proc
        .wait_for(Duration::from_secs(15), "retro serve after SIGTERM");
    let took = signalled.elapsed();
    stop.store(true, Ordering::SeqCst);
    let unanswered: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(status.code(), Some(0), "retro serve exited with {status:?}");
    let stderr = server.stderr.rest(Duration::from_secs(5)).join("\n");
    assert!(stderr.contains("shutting down"), "{stderr}");
    crate::common::assert_no_panic(&stderr);
    // The event stream ended with the server (else the graceful shutdown would still wait).
    loop {
        match stream.next(Duration::from_secs(2)) {
            Ok(_) => continue,
            Err(true) => break,
            Err(false) => panic!("the event stream is still open after the exit"),
        }
    }
    drop(stream);

    let committed = committed.lock().unwrap().clone();
    let log = json_lines(&depot.ok(&["log", "--json", "-n", "100000"]));
    let in_history: std::collections::HashSet<&str> = log
        .iter()
        .map(|c| c["checkpoint"].as_str().unwrap())
        .collect();
    for id in &committed {
        assert!(
            in_history.contains(id.as_str()),
            "{id} got 201 but is not in history"
        );
    }
    // And nothing was committed behind a client's back: a request the server took in was answered.
    assert_eq!(
        log.len(),
        8 + committed.len(),
        "a commit whose request got no answer"
    );
    for pair in log.windows(2) {
        assert_eq!(
            pair[0]["parents"],
            json!([pair[1]["checkpoint"]]),
            "not linear"
        );
    }
    let fsck = depot.ok(&["fsck"]);
    assert!(fsck.contains("no problems"), "{fsck}");
    eprintln!(
        "SIGTERM: exit after {took:?}; {} requests got 201, then the clients saw {unanswered:?}; {} checkpoints in history",
        committed.len(),
        log.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Issue 17: the red team's findings, one regression test each.

/// Polls `condition` until it holds, or panics after `limit`.
fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// A domain with one command, `slow/<id> wait`, whose handler creates `<dir>/started` and then
/// waits until `<dir>/go` exists: the test decides when the apply ends.
fn slow_domain(dir: &std::path::Path) -> std::path::PathBuf {
    let script = dir.join("wait.sh");
    std::fs::write(
        &script,
        format!(
            "cat >/dev/null\n: > '{dir}/started'\nwhile [ ! -e '{dir}/go' ]; do sleep 0.01; done\n\
             printf '{{\"events\":{{\"%s\":[{{\"name\":\"Waited\",\"data\":{{}}}}]}}}}\\n' \"$RETRO_PATH\"\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    let manifest = dir.join("slow.json");
    std::fs::write(
        &manifest,
        json!({"aggregates": {"slow": {"commands": {"wait": {
            "exec": ["sh", script.to_str().unwrap()], "timeout_ms": 120_000
        }}}}})
        .to_string(),
    )
    .unwrap();
    manifest
}

#[test]
fn d4_an_apply_that_outlives_the_request_timeout_is_answered_with_its_outcome() {
    let depot = TestDepot::with_history();
    let control = tempfile::tempdir().unwrap();
    let manifest = slow_domain(control.path());
    let server = Server::start(
        &depot,
        &[
            "--manifest",
            manifest.to_str().unwrap(),
            "--request-timeout",
            "1",
        ],
        &[],
    );
    let before = head(&depot);

    let (tx, answer) = mpsc::channel();
    let addr = server.addr.clone();
    thread::spawn(move || {
        let _ = tx.send(request(
            &addr,
            "POST",
            "/apply",
            &[],
            br#"{"path":"slow/s1","name":"wait","params":{}}"#,
        ));
    });
    let started = control.path().join("started");
    wait_until(Duration::from_secs(20), "the handler to start", || {
        started.exists()
    });
    // The handler is held past three request timeouts: the old server answered 408 after its
    // timeout and committed anyway. Now no answer may come before the outcome is known.
    match answer.recv_timeout(Duration::from_secs(3)) {
        Err(mpsc::RecvTimeoutError::Timeout) => {}
        other => panic!(
            "answered before the apply finished: {:?}",
            other.map(|r| r.map(|r| (r.status, r.text())))
        ),
    }
    assert_eq!(
        head(&depot),
        before,
        "committed before the handler answered"
    );
    std::fs::write(control.path().join("go"), b"").unwrap();
    let response = answer
        .recv_timeout(Duration::from_secs(30))
        .expect("no answer after the handler finished")
        .expect("the request failed");
    assert_eq!(response.status, 201, "{}", response.text());
    let checkpoint = response.json()["checkpoint"].as_str().unwrap().to_owned();
    assert_eq!(head(&depot), checkpoint, "the 201 names what HEAD holds");
    let log = json_lines(&depot.ok(&["log", "--json", "-n", "2"]));
    assert_eq!(
        log[1]["checkpoint"],
        before.as_str(),
        "applied once, on top of the old head"
    );

    // The timeout still covers reading the request: a body that never arrives is a 408, and
    // nothing is applied.
    let mut stream = connect(&server.addr).unwrap();
    stream
        .write_all(
            b"POST /apply HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\nConnection: close\r\n\r\n{\"path\":",
        )
        .unwrap();
    let mut reader = BufReader::new(stream);
    let (status, _) = read_head(&mut reader).unwrap();
    assert_eq!(status, 408);
    assert_eq!(head(&depot), checkpoint, "a 408 moved HEAD");
}

#[test]
fn d11_a_token_followed_by_more_characters_is_refused() {
    let depot = TestDepot::with_history();
    let server = Server::start(&depot, &["--token", "s3cret"], &[]);
    let command = r#"{"path":"accounts/fay","name":"open","params":{"owner":"Fay"}}"#;
    let before = depot.snapshot();
    // 6 + 256 characters: the old check compared the lengths modulo 256 and only the token's
    // own length of bytes, so this was accepted.
    for extra in [256, 512, 1, 255] {
        let given = format!("Bearer s3cret{}", "x".repeat(extra));
        post(&server.addr, &[("Authorization", &given)], command).assert_error(401, "unauthorized");
    }
    let prefix_of_256 = format!("Bearer {}", "s".repeat(262));
    post(&server.addr, &[("Authorization", &prefix_of_256)], command)
        .assert_error(401, "unauthorized");
    assert_same_snapshot(
        &before,
        &depot.snapshot(),
        &["POST /apply with a wrong token"],
    );
    let ok = post(&server.addr, &[("Authorization", "Bearer s3cret")], command);
    assert_eq!(ok.status, 201, "{}", ok.text());
}

#[test]
fn d11_apply_refuses_content_types_other_than_json() {
    let depot = TestDepot::with_history();
    let server = Server::start(&depot, &[], &[]);
    let command = r#"{"path":"accounts/fay","name":"open","params":{"owner":"Fay"}}"#;
    let before = depot.snapshot();
    // What a page of another origin may POST without a CORS preflight, and none at all.
    for content_type in [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "",
    ] {
        post(&server.addr, &[("Content-Type", content_type)], command)
            .assert_error(415, "unsupported_media_type");
    }
    assert_same_snapshot(&before, &depot.snapshot(), &["POST /apply, not JSON"]);
    let ok = post(
        &server.addr,
        &[("Content-Type", "Application/JSON; charset=utf-8")],
        command,
    );
    assert_eq!(ok.status, 201, "{}", ok.text());
}

#[test]
fn d11_unexpected_host_headers_are_refused() {
    let depot = TestDepot::with_history();
    let server = Server::start(&depot, &["--allow-host", "depot.example"], &[]);
    let addr = server.addr.as_str();
    let port = addr.rsplit_once(':').unwrap().1;
    let command = r#"{"path":"accounts/fay","name":"open","params":{"owner":"Fay"}}"#;
    let before = depot.snapshot();
    // A DNS-rebinding page sends its own name (with this port); other ports of allowed names
    // are another server.
    for host in [
        format!("evil.example:{port}"),
        "evil.example".to_owned(),
        "localhost:1".to_owned(),
        format!("localhost.evil.example:{port}"),
        format!("depot.example:{}", port.parse::<u16>().unwrap() ^ 1),
        format!("[::1]x:{port}"),
        "".to_owned(),
    ] {
        let headers = [("Host", host.as_str())];
        post(addr, &headers, command).assert_error(403, "host_not_allowed");
        request(addr, "GET", "/health", &headers, b"")
            .unwrap()
            .assert_error(403, "host_not_allowed");
    }
    assert_same_snapshot(&before, &depot.snapshot(), &["POST /apply, bad Host"]);
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("LocalHost:{port}"),
        "depot.example".to_owned(),
        format!("depot.example:{port}"),
    ] {
        let response = request(addr, "GET", "/health", &[("Host", &host)], b"").unwrap();
        assert_eq!(response.status, 200, "{host}: {}", response.text());
    }
    let ok = post(addr, &[("Host", &format!("127.0.0.1:{port}"))], command);
    assert_eq!(ok.status, 201, "{}", ok.text());
}

#[test]
fn d11_listening_beyond_loopback_without_a_token_warns() {
    let depot = TestDepot::with_history();
    let mut cmd = std_cmd(&depot, &["serve", "--listen", "0.0.0.0:0"]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut proc = Proc(Some(cmd.spawn().unwrap()));
    let stderr = Lines::new(proc.child().stderr.take().unwrap());
    let first = stderr.expect(Duration::from_secs(10), "the 'serving' line");
    assert!(first.contains("serving"), "{first}");
    let warning = stderr.expect(Duration::from_secs(10), "the warning");
    assert!(
        warning.starts_with("retro: warning: ") && warning.contains("without a token"),
        "{warning}"
    );
}

#[test]
fn d11_a_session_header_that_is_not_ascii_is_refused() {
    let depot = TestDepot::with_history();
    let server = Server::start(&depot, &[], &[]);
    let before = depot.snapshot();
    post(
        &server.addr,
        &[("X-Retro-Session", "café")],
        r#"{"path":"accounts/fay","name":"open","params":{"owner":"Fay"}}"#,
    )
    .assert_error(400, "bad_command");
    assert_same_snapshot(
        &before,
        &depot.snapshot(),
        &["POST /apply, non-ASCII session"],
    );
    assert!(json_lines(&depot.ok(&["failed", "--json"])).is_empty());
}

#[test]
fn d11_a_connection_that_never_finishes_its_headers_is_closed() {
    let depot = TestDepot::with_history();
    let server = Server::start(&depot, &["--header-timeout", "1"], &[]);
    let opened = Instant::now();
    let mut stream = connect(&server.addr).unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .unwrap();
    // The server must close it (EOF, or a reset) long before our 20 s read timeout.
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(err) => panic!(
            "the half-sent request was still open after {:?}: {err}",
            opened.elapsed()
        ),
    }
    // An idle keep-alive connection that sends nothing is cut off the same way.
    let mut idle = connect(&server.addr).unwrap();
    match idle.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(err) => panic!("the idle connection was still open: {err}"),
    }
    // And the server still answers.
    assert_eq!(get(&server.addr, "/health").status, 200);
}

/// The threads of process `pid`.
fn threads_of(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

#[test]
fn d11_event_streams_do_not_cost_a_thread_each() {
    const CLIENTS: usize = 200;
    let depot = TestDepot::with_history();
    let server = Server::start(&depot, &[], &[]);
    let streams: Vec<Sse> = (0..CLIENTS)
        .map(|i| {
            let path = if i % 2 == 0 {
                "/watch"
            } else {
                "/watch?glob=accounts/**"
            };
            let stream = Sse::open(&server.addr, path, &[]);
            assert_eq!(stream.status, 200);
            stream
        })
        .collect();
    let threads = threads_of(server.proc.pid());
    assert!(
        threads < 64,
        "{threads} threads in the server with {CLIENTS} event streams open"
    );
    assert_eq!(get(&server.addr, "/health").status, 200);
    // Every stream still gets what lands.
    let opened = apply(
        &server.addr,
        r#"{"path":"accounts/ivy","name":"open","params":{"owner":"Ivy"}}"#,
    );
    for stream in &streams {
        stream.expect_checkpoint(&opened);
    }
    let threads = threads_of(server.proc.pid());
    assert!(
        threads < 64,
        "{threads} threads after delivering to {CLIENTS} streams"
    );
}

#[test]
fn d12_events_with_limit_0_returns_none() {
    let depot = TestDepot::with_history();
    let server = Server::start(&depot, &[], &[]);
    assert_eq!(get_json(&server.addr, "/events?limit=0"), json!([]));
    assert_eq!(
        get_json(&server.addr, "/events?limit=0&glob=accounts/**"),
        json!([])
    );
    assert_eq!(
        get_json(&server.addr, "/events?limit=1")
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // The parameters are still checked.
    get(&server.addr, "/events?limit=0&glob=accounts/%5B").assert_error(400, "bad_request");
    get(&server.addr, "/events?limit=0&since=nosuchrev").assert_error(404, "not_found");
}

#[test]
fn d12_resuming_after_an_event_id_is_a_400() {
    let depot = TestDepot::with_history();
    let server = Server::start(&depot, &[], &[]);
    let events = get_json(&server.addr, "/events?limit=1");
    let event = events[0]["event"].as_str().unwrap();
    let response = request(
        &server.addr,
        "GET",
        "/watch",
        &[("Last-Event-ID", event)],
        b"",
    )
    .unwrap();
    response.assert_error(400, "bad_request");
    let message = response.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("not a checkpoint"), "{message}");
    get(&server.addr, &format!("/watch?since={event}")).assert_error(400, "bad_request");
    request(
        &server.addr,
        "GET",
        "/watch",
        &[("Last-Event-ID", "sha256:ü")],
        b"",
    )
    .unwrap()
    .assert_error(400, "bad_request");
    // A checkpoint still resumes.
    let head_id = head(&depot);
    let resumed = Sse::open(&server.addr, "/watch", &[("Last-Event-ID", &head_id)]);
    assert_eq!(resumed.status, 200);
}

#[test]
fn d12_an_io_failure_is_a_5xx_that_names_no_path() {
    let depot = TestDepot::with_history();
    let mut server = Server::start(&depot, &[], &[]);
    let before = head(&depot);
    // The depot lock file replaced by a directory: the next commit cannot open it.
    let lock = depot.dir.join("lock");
    let aside = depot.dir.join("lock.aside");
    std::fs::rename(&lock, &aside).unwrap();
    std::fs::create_dir(&lock).unwrap();
    let response = post(
        &server.addr,
        &[],
        r#"{"path":"accounts/fay","name":"open","params":{"owner":"Fay"}}"#,
    );
    std::fs::remove_dir(&lock).unwrap();
    std::fs::rename(&aside, &lock).unwrap();
    response.assert_error(500, "io_error");
    let text = response.text();
    let root = depot.tmp.path().to_str().unwrap();
    assert!(
        !text.contains(root) && !text.contains("/lock"),
        "a path in {text}"
    );
    let id = response.json()["error"]["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(response.header("x-request-id"), Some(id.as_str()));
    assert_eq!(head(&depot), before);
    // The log has the whole error under that id.
    let logged = server
        .stderr
        .expect(Duration::from_secs(10), "the logged error");
    assert!(
        logged.contains(&format!("request {id} ")) && logged.contains(root),
        "{logged}"
    );
    // The depot works again once the lock is back.
    apply(
        &server.addr,
        r#"{"path":"accounts/fay","name":"open","params":{"owner":"Fay"}}"#,
    );
    server.proc.kill();
}

#[test]
fn d12_every_error_body_is_the_json_error() {
    let depot = TestDepot::with_history();
    let server = Server::start(&depot, &[], &[]);
    let addr = server.addr.as_str();
    let command = r#"{"path":"accounts/fay","name":"open","params":{"owner":"Fay"}}"#;
    get(addr, "/nowhere").assert_error(404, "not_found");
    request(addr, "POST", "/health", &[], b"")
        .unwrap()
        .assert_error(405, "method_not_allowed");
    request(addr, "DELETE", "/apply", &[], b"")
        .unwrap()
        .assert_error(405, "method_not_allowed");
    post(addr, &[], r#"{"path":"#).assert_error(400, "bad_command");
    post(addr, &[("Content-Type", "")], command).assert_error(415, "unsupported_media_type");
    let big = format!("{command}{}", " ".repeat(1 << 20));
    request(addr, "POST", "/apply", &[], big.as_bytes())
        .unwrap()
        .assert_error(413, "too_large");
    get(addr, "/log?n=abc").assert_error(400, "bad_request");
    get(addr, "/events?limit=-1").assert_error(400, "bad_request");
    get(addr, "/partitions?glob=%5B").assert_error(400, "bad_request");
    // Every error carries its request id, as the header does.
    let response = get(addr, "/nowhere");
    let id = response.json()["error"]["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(response.header("x-request-id"), Some(id.as_str()));
}

// ---------------------------------------------------------------------------------------------
// Token classes, the OpenAPI document, the request log.

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn serve_token_classes_read_write_admin() {
    let depot = TestDepot::with_history();
    let command = r#"{"path":"accounts/fay","name":"open","params":{"owner":"Fay"}}"#;
    // Flags, then the same through the environment.
    for (args, env) in [
        (
            &["--read-token", "r", "--token", "w", "--admin-token", "a"][..],
            &[][..],
        ),
        (
            &[][..],
            &[
                ("RETRO_READ_TOKEN", "r"),
                ("RETRO_TOKEN", "w"),
                ("RETRO_ADMIN_TOKEN", "a"),
            ][..],
        ),
    ] {
        let (r, w, a) = (bearer("r"), bearer("w"), bearer("a"));
        let server = Server::start_probing(&depot, args, env, &[("Authorization", &r)]);
        let addr = server.addr.as_str();
        let before = head(&depot);
        // Reads: a read token is set, so they need a token, any of the three.
        get(addr, "/health").assert_error(401, "unauthorized");
        get(addr, "/").assert_error(401, "unauthorized");
        request(addr, "GET", "/log", &[("Authorization", "Bearer x")], b"")
            .unwrap()
            .assert_error(401, "unauthorized");
        for token in [&r, &w, &a] {
            let log = request(addr, "GET", "/log?n=1", &[("Authorization", token)], b"").unwrap();
            assert_eq!(log.status, 200, "{token}: {}", log.text());
            assert_eq!(log.json()[0]["checkpoint"], before.as_str());
        }
        // Writes: the write or admin token; the read token is a 403.
        post(addr, &[("Authorization", &r)], command).assert_error(403, "forbidden");
        post(addr, &[], command).assert_error(401, "unauthorized");
        assert_eq!(head(&depot), before, "a refused write moved HEAD");
        // Admin: only the admin token.
        let stats = |token: &str| {
            request(
                addr,
                "GET",
                "/admin/stats",
                &[("Authorization", token)],
                b"",
            )
            .unwrap()
        };
        stats(&r).assert_error(403, "forbidden");
        stats(&w).assert_error(403, "forbidden");
        let answer = stats(&a);
        assert_eq!(answer.status, 200, "{}", answer.text());
        let counts = answer.json();
        assert_eq!(counts["head"], before.as_str());
        let partitions = cli_json_lines(&depot, &["partitions", "--json"]);
        assert_eq!(
            counts["partitions"].as_u64().unwrap() as usize,
            partitions.as_array().unwrap().len()
        );
        let events: u64 = partitions
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["events"].as_u64().unwrap())
            .sum();
        assert_eq!(counts["events"], events);
        let refs = cli_json_lines(&depot, &["refs", "--json"]);
        assert_eq!(
            counts["refs"].as_u64().unwrap() as usize,
            refs.as_array().unwrap().len()
        );
        // The write token applies (the admin token too, in the second round).
        let token = if args.is_empty() { &a } else { &w };
        let ok = post(addr, &[("Authorization", token)], command);
        if args.is_empty() {
            ok.assert_error(422, "already_open");
        } else {
            assert_eq!(ok.status, 201, "{}", ok.text());
        }
    }
}

#[test]
fn serve_admin_routes_take_the_write_token_without_an_admin_token() {
    let depot = TestDepot::with_history();
    let server = Server::start(&depot, &["--token", "w"], &[]);
    let addr = server.addr.as_str();
    get(addr, "/admin/stats").assert_error(401, "unauthorized");
    let stats = request(
        addr,
        "GET",
        "/admin/stats",
        &[("Authorization", "Bearer w")],
        b"",
    )
    .unwrap();
    assert_eq!(stats.status, 200, "{}", stats.text());
    // Reads stay open.
    assert_eq!(get(addr, "/refs").status, 200);
}

/// The `METHOD /path` of each row of docs/http.md's endpoint table, `{param}` as written.
fn documented_routes() -> std::collections::BTreeSet<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/http.md"))
        .unwrap();
    doc.lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .filter(|route| route.starts_with("GET ") || route.starts_with("POST "))
        .map(|route| route.split('?').next().unwrap().to_owned())
        .collect()
}

#[test]
fn serve_openapi_json_describes_every_route_of_docs_http_md() {
    let depot = TestDepot::with_history();
    let server = Server::start(&depot, &[], &[]);
    let response = get(&server.addr, "/openapi.json");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let document = response.json();
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        document["openapi"]
    );
    let mut described = std::collections::BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            described.insert(format!("{} {path}", method.to_ascii_uppercase()));
        }
    }
    assert_eq!(described, documented_routes());
    // The bodies are described: POST /apply's 201 is the Applied schema.
    let created = &document["paths"]["/apply"]["post"]["responses"]["201"];
    assert_eq!(
        created["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Applied"
    );
    let applied = &document["components"]["schemas"]["Applied"]["properties"];
    for field in [
        "checkpoint",
        "parent",
        "path",
        "events",
        "partitions",
        "attempts",
    ] {
        assert!(applied.get(field).is_some(), "Applied has no {field}");
    }
}

#[test]
fn serve_apply_body_is_what_apply_json_prints() {
    let depot = TestDepot::with_history();
    let server = Server::start(&depot, &[], &[]);
    let served = post(
        &server.addr,
        &[],
        r#"{"path":"accounts/fay","name":"open","params":{"owner":"Fay"}}"#,
    );
    assert_eq!(served.status, 201, "{}", served.text());
    let printed = crate::common::json(
        depot
            .ok(&[
                "apply",
                "--json",
                r#"{"path":"accounts/gus","name":"open","params":{"owner":"Gus"}}"#,
            ])
            .trim(),
    );
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    // The same fields in the same order: one struct prints both.
    assert_eq!(keys(&served.json()), keys(&printed));
    assert_eq!(printed["parent"], served.json()["checkpoint"]);
}

#[test]
fn serve_rust_log_traces_each_request_with_its_id() {
    let depot = TestDepot::with_history();
    let mut server = Server::start(&depot, &[], &[("RUST_LOG", "info")]);
    let response = get(&server.addr, "/refs");
    let id = response.header("x-request-id").unwrap().to_owned();
    // The probe's lines come first: read until this request's.
    let wanted = format!("(request id={id} method=GET path=/refs)");
    loop {
        let line = server
            .stderr
            .expect(Duration::from_secs(10), "the request's trace line");
        if line.contains(&wanted) {
            assert!(
                line.starts_with("retro: ") && line.contains("status=200"),
                "{line}"
            );
            break;
        }
    }
    server.proc.kill();
}

/// `GET /metrics` of `server`, with `headers`: the text, each line checked for its shape.
fn scrape_metrics(addr: &str, headers: &[(&str, &str)]) -> std::collections::BTreeMap<String, f64> {
    let response = request(addr, "GET", "/metrics", headers, b"").unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let mut samples = std::collections::BTreeMap::new();
    let mut typed = std::collections::BTreeSet::new();
    for line in response.text().lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            assert!(
                rest.split_once(' ')
                    .is_some_and(|(_, help)| !help.is_empty()),
                "{line}"
            );
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            typed.insert(name.to_owned());
        } else {
            // name[{labels}] value, the name of a family typed above.
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
            let name = series.split('{').next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix).filter(|f| typed.contains(*f)))
                .unwrap_or(name);
            assert!(typed.contains(family), "{line}: no TYPE for {family}");
            if let Some(labels) = series.strip_prefix(name) {
                assert!(
                    labels.is_empty() || (labels.starts_with('{') && labels.ends_with("\"}")),
                    "{line}"
                );
            }
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("{line}")),
            };
            samples.insert(series.to_owned(), value);
        }
    }
    samples
}

#[test]
fn serve_metrics_count_applies_and_show_each_consumers_lag() {
    let depot = TestDepot::with_history();
    depot.ok(&["update-ref", "refs/consumers/billing", "HEAD"]);
    // Writes guarded, reads (and so scrapes) open: the usual operator setup.
    let server = Server::start(&depot, &["--token", "w"], &[]);
    let write = [("Authorization", "Bearer w")];
    let before = scrape_metrics(&server.addr, &[]);
    assert_eq!(before["retro_commits_total"], 0.0);
    assert_eq!(
        before[r#"retro_consumer_lag_checkpoints{consumer="billing"}"#],
        0.0
    );
    let n = 3;
    let open = post(
        &server.addr,
        &write,
        r#"{"path":"accounts/metered","name":"open","params":{"owner":"M"}}"#,
    );
    assert_eq!(open.status, 201, "{}", open.text());
    for amount in 1..n {
        let deposit = format!(
            r#"{{"path":"accounts/metered","name":"deposit","params":{{"amount":{amount}}}}}"#
        );
        let answer = post(&server.addr, &write, &deposit);
        assert_eq!(answer.status, 201, "{}", answer.text());
    }
    let withdraw = r#"{"path":"accounts/metered","name":"withdraw","params":{"amount":1000}}"#;
    post(&server.addr, &write, withdraw).assert_error(422, "insufficient_funds");
    let after = scrape_metrics(&server.addr, &[]);
    assert_eq!(after["retro_commits_total"], f64::from(n));
    assert_eq!(after["retro_commit_rejections_total"], 1.0);
    assert_eq!(after["retro_commit_conflicts_total"], 0.0);
    assert_eq!(
        after["retro_commit_duration_seconds_count"],
        f64::from(n) + 1.0
    );
    assert_eq!(
        after[r#"retro_commit_duration_seconds_bucket{le="+Inf"}"#],
        f64::from(n) + 1.0
    );
    assert_eq!(
        after[r#"retro_http_requests_total{route="/apply",status="201"}"#],
        f64::from(n)
    );
    // The lag is what `retro status` shows.
    assert_eq!(
        after[r#"retro_consumer_lag_checkpoints{consumer="billing"}"#],
        f64::from(n)
    );
    let status = parse(&depot.ok(&["status", "--json"]));
    assert_eq!(status["consumers"][0]["name"], "billing");
    assert_eq!(status["consumers"][0]["behind"], n);
    assert!(!after.keys().any(|k| k.starts_with("retro_projection_lag")));
}

/// One OTLP/HTTP request a collector stand-in received: its path, content type and body.
struct Export {
    path: String,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// A collector stand-in on 127.0.0.1: hands each request over the returned channel, then
/// answers it 200 (an empty `ExportTraceServiceResponse`).
fn collector() -> (String, mpsc::Receiver<Export>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            let mut length = 0;
            let mut content_type = None;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = header.trim().split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    } else if name.eq_ignore_ascii_case("content-type") {
                        content_type = Some(value.trim().to_owned());
                    }
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            // Handed over before the answer: once the exporter has its answer, the test sees
            // the request.
            if tx
                .send(Export {
                    path,
                    content_type,
                    body,
                })
                .is_err()
            {
                return;
            }
            let mut stream = stream;
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (endpoint, rx)
}

#[test]
fn serve_exports_its_spans_over_otlp_when_an_endpoint_is_set() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use prost::Message as _;

    let (endpoint, exports) = collector();
    let depot = TestDepot::with_history();
    let mut server = Server::start(&depot, &[], &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]);
    let checkpoint = apply(
        &server.addr,
        r#"{"path":"accounts/traced","name":"open","params":{"owner":"T"}}"#,
    );
    // The exit flushes the spans still batched, and waits for the collector's answer: every
    // export is in the channel once the process has exited.
    sigterm(server.proc.pid());
    let status = server.proc.wait_for(Duration::from_secs(20), "retro serve");
    assert_eq!(status.code(), Some(0));
    let mut spans = Vec::new();
    while let Ok(export) = exports.try_recv() {
        assert_eq!(export.path, "/v1/traces");
        assert_eq!(
            export.content_type.as_deref(),
            Some("application/x-protobuf")
        );
        let request = ExportTraceServiceRequest::decode(export.body.as_slice()).unwrap();
        for resource in request.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref()?.value.clone());
            assert_eq!(service, Some(Any::StringValue("retro".to_owned())));
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
    }
    let attribute = |span: &opentelemetry_proto::tonic::trace::v1::Span, key: &str| {
        span.attributes.iter().find(|a| a.key == key).and_then(|a| {
            match a.value.as_ref()?.value.as_ref()? {
                Any::StringValue(s) => Some(s.clone()),
                Any::IntValue(n) => Some(n.to_string()),
                _ => None,
            }
        })
    };
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let apply = spans
        .iter()
        .find(|s| s.name == "apply")
        .unwrap_or_else(|| panic!("no apply span among {names:?}"));
    assert_eq!(attribute(apply, "path").as_deref(), Some("accounts/traced"));
    assert_eq!(attribute(apply, "command").as_deref(), Some("open"));
    assert_eq!(attribute(apply, "outcome").as_deref(), Some("committed"));
    assert_eq!(attribute(apply, "checkpoint"), Some(checkpoint.clone()));
    // The engine's spans are its children: the handler's run and the commit (fsync included).
    for child in ["handler", "commit"] {
        let span = spans
            .iter()
            .find(|s| s.name == child)
            .unwrap_or_else(|| panic!("no {child} span among {names:?}"));
        assert_eq!(span.parent_span_id, apply.span_id, "{child}'s parent");
        assert_eq!(span.trace_id, apply.trace_id);
    }
    let commit = spans.iter().find(|s| s.name == "commit").unwrap();
    assert_eq!(attribute(commit, "checkpoint"), Some(checkpoint));
    assert_eq!(attribute(commit, "outcome").as_deref(), Some("committed"));
    // And the apply is inside its request's span.
    let request = spans
        .iter()
        .find(|s| s.span_id == apply.parent_span_id)
        .unwrap_or_else(|| panic!("the apply's parent is not among {names:?}"));
    assert_eq!(request.name, "request");
}
