//! A throw-away PostgreSQL server on loopback, for retro's tests and benchmarks: no mocks for the
//! PostgreSQL backend, and nothing installed or started by hand.
//!
//! [`PgServer::start`] runs Debian's `initdb` into a fresh directory under
//! `$TMPDIR/retro-pg/<pid>-<n>` and starts `postgres` on a free port of 127.0.0.1 (its socket in
//! that directory, `trust` authentication for the `postgres` user). As root, both run as the
//! `postgres` user through `setpriv` (PostgreSQL refuses to run as root). The server is started
//! with a parent-death signal, so it dies with the thread that started it; [`PgServer::shared`]
//! starts one per process on a thread that lives as long as the process. Directories left by dead
//! processes are removed by the next start.
//!
//! [`PgServer::start_with_tls`] also makes a throw-away certificate authority and a server
//! certificate for 127.0.0.1 (with Debian's `openssl`, which the `postgresql` package pulls in),
//! turns `ssl` on, and only accepts TCP connections that use TLS; the CA is at
//! [`PgServer::ca_file`]. Administration (readiness, `CREATE DATABASE`) goes through the Unix
//! socket in any case.
//!
//! The package is installed by `tests/postgres/install.sh` (run by `make test`).

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A PostgreSQL server owned by this process.
pub struct PgServer {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres_user: bool,
    tls: bool,
    child: Mutex<Option<Child>>,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

impl PgServer {
    /// Creates a cluster and starts it. Panics with a clear message when PostgreSQL is missing.
    pub fn start() -> PgServer {
        Self::start_cluster(false)
    }

    /// [`PgServer::start`] with TLS required on TCP (see the module docs).
    pub fn start_with_tls() -> PgServer {
        Self::start_cluster(true)
    }

    /// The CA that signed the server's certificate (PEM), when started with TLS.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.then(|| self.dir.join("ca.crt"))
    }

    fn start_cluster(tls: bool) -> PgServer {
        let bin = find_bin().unwrap_or_else(|| {
            panic!("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); run 'bash tests/postgres/install.sh' or 'make test'")
        });
        let base = std::env::temp_dir().join("retro-pg");
        fs::create_dir_all(&base).expect("create the PostgreSQL test directory");
        remove_dead(&base);
        let dir = base.join(format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("data")).expect("create the cluster directory");
        let as_postgres_user = is_root();
        if as_postgres_user {
            for path in [&base, &dir] {
                run(Command::new("chmod").arg("0755").arg(path));
            }
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(&dir));
        }
        let server = PgServer {
            port: free_port(),
            dir,
            bin,
            as_postgres_user,
            tls,
            child: Mutex::new(None),
        };
        let mut initdb = server.command("initdb");
        initdb.arg("-D").arg(server.data()).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        run(&mut initdb);
        if tls {
            server.make_certificates();
        }
        server.launch();
        server
    }

    /// A CA, a server key and certificate for 127.0.0.1, `ssl = on`, and TCP without TLS refused.
    fn make_certificates(&self) {
        let dir = &self.dir;
        let openssl = |args: &[&str]| {
            run(Command::new("openssl").current_dir(dir).args(args));
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=retro test CA",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write the certificate extensions");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "server.crt",
            "-extfile",
            "server.ext",
        ]);
        let data = self.data();
        let conf = format!(
            "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            dir.join("server.crt").display(),
            dir.join("server.key").display()
        );
        let mut text = fs::read_to_string(data.join("postgresql.conf")).expect("postgresql.conf");
        text.push_str(&conf);
        fs::write(data.join("postgresql.conf"), text).expect("write postgresql.conf");
        fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 127.0.0.1/32 reject\n",
        )
        .expect("write pg_hba.conf");
        run(Command::new("chmod")
            .arg("0600")
            .arg(dir.join("server.key")));
        if self.as_postgres_user {
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(dir));
        }
    }

    /// Key-value connection settings for the Unix socket (administration: no TLS there).
    fn admin(&self, db: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={db}",
            self.dir.display(),
            self.port
        )
    }

    /// One server for the whole process, started on first use.
    pub fn shared() -> &'static PgServer {
        static SHARED: OnceLock<PgServer> = OnceLock::new();
        SHARED.get_or_init(|| {
            // The parent-death signal fires when the starting *thread* ends: start it on a
            // thread that never does.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                tx.send(PgServer::start()).expect("send the server");
                loop {
                    std::thread::park();
                }
            });
            rx.recv().expect("the PostgreSQL server failed to start")
        })
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a fresh, empty database and returns its URL.
    pub fn create_database(&self) -> String {
        let name = format!(
            "retro_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::SeqCst)
        );
        let mut client = postgres::Client::connect(&self.admin("postgres"), postgres::NoTls)
            .expect("connect to the test server");
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create a test database");
        self.url(&name)
    }

    /// Stops the server the way a crash would (immediate shutdown: no checkpoint, WAL replayed
    /// at the next start).
    pub fn kill(&self) {
        let mut child = self.child.lock().expect("server lock");
        if let Some(mut process) = child.take() {
            let _ = Command::new("kill")
                .arg("-QUIT")
                .arg(process.id().to_string())
                .status();
            let _ = process.wait();
        }
    }

    /// Starts the server again after [`PgServer::kill`], on the same port.
    pub fn restart(&self) {
        self.kill();
        self.launch();
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn launch(&self) {
        let log = fs::File::create(self.dir.join("server.log")).expect("create the server log");
        if self.as_postgres_user {
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(self.dir.join("server.log")));
        }
        let mut command = self.command("postgres");
        command
            .arg("-D")
            .arg(self.data())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.dir)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "max_connections=200"])
            .args(["-c", "fsync=on"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        let child = command.spawn().expect("start postgres");
        *self.child.lock().expect("server lock") = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if postgres::Client::connect(&self.admin("postgres"), postgres::NoTls).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                let log = fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                panic!("PostgreSQL did not accept connections within 60 s:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A command for one of PostgreSQL's programs, as the `postgres` user when we are root, dying
    /// with the thread that starts it.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = Command::new("setpriv");
        if self.as_postgres_user {
            command.args([
                "--reuid=postgres",
                "--regid=postgres",
                "--clear-groups",
                "--reset-env",
            ]);
        }
        command.args(["--pdeathsig", "KILL", "--"]).arg(path);
        command
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn find_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    found.sort();
    found.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("could not run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Removes cluster directories of processes that no longer exist.
fn remove_dead(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((pid, _)) = name.split_once('-') else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            release_shared_memory(&entry.path().join("data/postmaster.pid"));
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Removes the small System V segment a killed server leaves behind (`postmaster.pid`'s seventh
/// line holds its key and id); PostgreSQL would reuse it only when restarted in the same directory.
fn release_shared_memory(pid_file: &Path) {
    let Ok(text) = fs::read_to_string(pid_file) else {
        return;
    };
    if let Some(shmid) = text
        .lines()
        .nth(6)
        .and_then(|line| line.split_whitespace().nth(1))
        .filter(|id| id.parse::<u64>().is_ok())
    {
        let _ = Command::new("ipcrm")
            .args(["-m", shmid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
