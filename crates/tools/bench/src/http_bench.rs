//! `retro serve` under load: durable applies over HTTP with 1 and 16 concurrent clients (each
//! on its own keep-alive connection, depositing round-robin to its own 20 accounts, so commands
//! are disjoint, share fsyncs in the group commit, and aggregates stay small: the figure is the
//! server's, not the cost of rehydrating one ever-growing account), and the delivery latency
//! from sending an apply to a subscriber in another process receiving its checkpoint.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use depot::{Delivery, Depot, RefName};

use benchkit::{per_second, Figure, Percentiles};

use crate::figures::Figures;

/// Accounts each client deposits to, round-robin.
pub const ACCOUNTS: u64 = 20;

/// How much each phase does.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Applies by the single client.
    pub one_client: u64,
    /// Applies by each of the 16 clients.
    pub per_client: u64,
    /// Applies timed for the delivery latency.
    pub latency: u64,
}

impl Sizes {
    /// The full run.
    pub fn full() -> Sizes {
        Sizes {
            one_client: 1_500,
            per_client: 250,
            latency: 400,
        }
    }

    /// `--quick`.
    pub fn quick() -> Sizes {
        Sizes {
            one_client: 300,
            per_client: 40,
            latency: 100,
        }
    }
}

/// A keep-alive HTTP/1.1 connection that posts commands.
struct Client {
    reader: BufReader<TcpStream>,
    port: u16,
}

impl Client {
    fn connect(port: u16) -> Result<Client> {
        let stream =
            TcpStream::connect(("127.0.0.1", port)).context("connecting to retro serve")?;
        stream.set_nodelay(true)?;
        Ok(Client {
            reader: BufReader::new(stream),
            port,
        })
    }

    /// POSTs a command and returns the status code.
    fn apply(&mut self, body: &str) -> Result<u16> {
        let request = format!(
            "POST /apply HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nX-Retro-Session: bench\r\nContent-Length: {}\r\n\r\n{body}",
            self.port,
            body.len()
        );
        self.reader.get_mut().write_all(request.as_bytes())?;
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line)?;
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {status_line:?}"))?;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body)?;
        Ok(status)
    }
}

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(retro: &Path, depot: &Path) -> Result<Server> {
    let mut child = Command::new(retro)
        .arg("--depot")
        .arg(depot)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting retro serve")?;
    let mut stderr = BufReader::new(child.stderr.take().expect("piped"));
    let mut line = String::new();
    stderr.read_line(&mut line)?;
    let port = line
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().trim_end_matches('/').parse().ok())
        .with_context(|| format!("retro serve said {line:?}"))?;
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
    });
    Ok(Server { child, port })
}

fn deposit(account: &str) -> String {
    format!(r#"{{"path":"accounts/{account}","name":"deposit","params":{{"amount":1}}}}"#)
}

/// Runs the HTTP phases.
pub fn run(sizes: &Sizes, scratch: &Path, figures: &mut Figures) -> Result<()> {
    let retro = benchkit::sibling_binary("retro", "`cargo build --release -p retro-cli`")?;
    let dir = scratch.join("http");
    crate::workload::init_plain(&dir).context("creating the HTTP bench depot")?;
    let server = start_server(&retro, &dir)?;
    let port = server.port;
    let mut setup = Client::connect(port)?;
    for k in 0..16 {
        for j in 0..ACCOUNTS {
            let status = setup.apply(&format!(
                r#"{{"path":"accounts/c{k}-{j}","name":"open","params":{{"owner":"client {k}"}}}}"#
            ))?;
            if status != 201 {
                bail!("opening account c{k}-{j} answered {status}");
            }
        }
    }

    eprintln!("http: {} applies, 1 client", sizes.one_client);
    let started = Instant::now();
    for i in 0..sizes.one_client {
        let status = setup.apply(&deposit(&format!("c0-{}", i % ACCOUNTS)))?;
        if status != 201 {
            bail!("apply answered {status}");
        }
    }
    let one = per_second(sizes.one_client, started.elapsed());
    figures.push(
        Figure::new("retro", "http_apply_1", "applies/s", one, sizes.one_client)
            .note("POST /apply, one keep-alive client, each apply durable before its 201"),
    );

    eprintln!("http: {} applies, 16 clients", 16 * sizes.per_client);
    let started = Instant::now();
    let handles: Vec<_> = (0..16)
        .map(|k| {
            let per_client = sizes.per_client;
            std::thread::spawn(move || -> Result<()> {
                let mut client = Client::connect(port)?;
                for i in 0..per_client {
                    let status = client.apply(&deposit(&format!("c{k}-{}", i % ACCOUNTS)))?;
                    if status != 201 {
                        bail!("apply answered {status}");
                    }
                }
                Ok(())
            })
        })
        .collect();
    benchkit::join_all(handles.into_iter().map(|h| h.join()), "a client")?;
    let sixteen = per_second(16 * sizes.per_client, started.elapsed());
    figures.push(
        Figure::new(
            "retro",
            "http_apply_16",
            "applies/s",
            sixteen,
            16 * sizes.per_client,
        )
        .note("16 keep-alive clients on disjoint accounts: group commit shares fsyncs"),
    );

    eprintln!("http: delivery latency over {} applies", sizes.latency);
    let observer = Depot::open(&dir).context("opening the depot to subscribe")?;
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
    let head = observer.head()?;
    let mut subscription = observer.subscribe(&RefName::head(), "accounts/c1-*", head)?;
    let writer = {
        let sent = sent.clone();
        let count = sizes.latency;
        std::thread::spawn(move || -> Result<()> {
            let mut client = Client::connect(port)?;
            for i in 0..count {
                sent.lock().expect("sent poisoned").push(Instant::now());
                let status = client.apply(&deposit(&format!("c1-{}", i % ACCOUNTS)))?;
                if status != 201 {
                    bail!("apply answered {status}");
                }
                // Spaced out, so each delivery is timed on its own.
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        })
    };
    let mut delays = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while (delays.len() as u64) < sizes.latency && Instant::now() < deadline {
        if let Some(Delivery::Checkpoint { .. }) =
            subscription.next_timeout(Duration::from_secs(5))?
        {
            let received = Instant::now();
            let index = delays.len();
            let sent_at = sent.lock().expect("sent poisoned").get(index).copied();
            if let Some(sent_at) = sent_at {
                delays.push(received.saturating_duration_since(sent_at));
            }
        }
    }
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))??;
    if delays.is_empty() {
        bail!("the subscriber received nothing");
    }
    let n = delays.len() as u64;
    let p = Percentiles::of(&mut delays);
    figures.push(
        Figure::new("retro", "delivery_latency_p50", "us", p.p50_us, n).note(
            "from sending POST /apply to a subscriber in another process receiving the checkpoint",
        ),
    );
    figures.push(Figure::new(
        "retro",
        "delivery_latency_p99",
        "us",
        p.p99_us,
        n,
    ));
    drop(server);
    Ok(())
}
