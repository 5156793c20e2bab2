//! Helpers for the CLI tests: a fresh depot per test, `retro` with a clean environment, error
//! checks, depot snapshots and golden files.

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

/// The built `retro` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_retro"))
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// `<repo>/fixtures`.
pub fn fixtures() -> PathBuf {
    repo_root().join("fixtures")
}

/// The good fixture domain's manifest (python and shell handlers).
pub fn manifest() -> PathBuf {
    fixtures().join("domain/manifest.json")
}

/// The misbehaving fixture domain's manifest.
pub fn misbehaving() -> PathBuf {
    fixtures().join("domain/misbehaving.json")
}

/// The fixed history that makes ids (and so golden outputs) stable.
pub fn history_file() -> PathBuf {
    fixtures().join("cli/history.jsonl")
}

/// `retro` with no depot flag, the retro environment variables removed, `NO_COLOR=1`, run in
/// `cwd`.
pub fn retro_in(cwd: &Path) -> Command {
    let mut cmd = Command::new(bin());
    cmd.current_dir(cwd)
        .env_remove("RETRO_DEPOT")
        .env_remove("RETRO_SESSION")
        .env_remove("RETRO_MANIFEST")
        .env_remove("RETRO_SIGNING_KEY")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env("NO_COLOR", "1");
    cmd
}

/// The output of a finished command, as text.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a prepared command and collects its output.
pub fn run(cmd: &mut Command) -> Run {
    let output = cmd.output().expect("could not run retro");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Asserts stderr holds no sign of a Rust panic or backtrace.
pub fn assert_no_panic(stderr: &str) {
    for marker in [
        "panicked at",
        "RUST_BACKTRACE",
        "stack backtrace",
        "thread 'main'",
    ] {
        assert!(
            !stderr.contains(marker),
            "stderr shows a panic ({marker:?}):\n{stderr}"
        );
    }
}

/// Asserts a failed run exited with `code`, printed a `retro: error:` line and no panic.
pub fn assert_error(run: &Run, code: i32) {
    assert_eq!(
        run.code, code,
        "expected exit {code}, got {}\nstdout:\n{}\nstderr:\n{}",
        run.code, run.stdout, run.stderr
    );
    assert!(
        run.stderr.lines().any(|l| l.starts_with("retro: error: ")),
        "no 'retro: error:' line in stderr:\n{}",
        run.stderr
    );
    assert_no_panic(&run.stderr);
}

/// Asserts a usage error: exit 2, clap's `error:` line, a `retro: error:` line or (for a missing
/// subcommand) the usage text on stderr, and no panic.
pub fn assert_usage(run: &Run) {
    assert_eq!(
        run.code, 2,
        "expected exit 2 (usage), got {}\nstdout:\n{}\nstderr:\n{}",
        run.code, run.stdout, run.stderr
    );
    assert!(
        run.stderr.lines().any(|l| l.starts_with("error: ")
            || l.starts_with("retro: error: ")
            || l.starts_with("Usage: retro")),
        "no error line in stderr:\n{}",
        run.stderr
    );
    assert_no_panic(&run.stderr);
}

/// A fresh temporary directory with an initialized depot in `<tmp>/depot`.
pub struct TestDepot {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
}

impl TestDepot {
    /// A new, initialized, empty depot.
    pub fn new() -> TestDepot {
        let depot = TestDepot::uninitialized();
        depot.ok(&["init"]);
        depot
    }

    /// A fresh depot that writes plain events (`retro init --events plain`): its ids are
    /// reproducible from the same history (golden files, export/import round trips), which
    /// sealed events, salted at random, never are.
    pub fn plain() -> TestDepot {
        let depot = TestDepot::uninitialized();
        depot.ok(&["init", "--events", "plain"]);
        depot
    }

    /// A temporary directory whose depot path does not exist yet.
    pub fn uninitialized() -> TestDepot {
        let tmp = tempfile::Builder::new()
            .prefix("retro-cli-test-")
            .tempdir()
            .expect("a temporary directory");
        let dir = tmp.path().join("depot");
        TestDepot { tmp, dir }
    }

    /// A depot holding the fixed history of `fixtures/cli/history.jsonl`.
    pub fn with_history() -> TestDepot {
        let depot = TestDepot::plain();
        let file = history_file();
        let out = depot.ok(&["import", file.to_str().unwrap()]);
        assert!(out.starts_with("imported 8 checkpoints"), "{out}");
        depot
    }

    /// A depot with `n` imported checkpoints of fixed content (one event each, long messages).
    pub fn with_bulk(n: usize) -> TestDepot {
        let depot = TestDepot::plain();
        let file = depot.tmp.path().join("bulk.jsonl");
        fs::write(&file, bulk_history(n)).unwrap();
        let out = depot.ok(&["import", file.to_str().unwrap()]);
        assert!(
            out.starts_with(&format!("imported {n} checkpoints")),
            "{out}"
        );
        depot
    }

    /// `retro --depot <dir>`, clean environment, working directory the temp dir.
    pub fn cmd(&self) -> Command {
        let mut cmd = retro_in(self.tmp.path());
        cmd.arg("--depot").arg(&self.dir);
        cmd
    }

    /// Runs `retro --depot <dir> ARGS`.
    pub fn run(&self, args: &[&str]) -> Run {
        run(self.cmd().args(args))
    }

    /// Runs `retro --depot <dir> ARGS` with `stdin`.
    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Run {
        run(self.cmd().args(args).write_stdin(stdin.as_bytes().to_vec()))
    }

    /// Runs and asserts exit 0 with no panic; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_eq!(
            run.code, 0,
            "retro {args:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
            run.code, run.stdout, run.stderr
        );
        assert_no_panic(&run.stderr);
        run.stdout
    }

    /// Like [`TestDepot::ok`] with stdin.
    pub fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        let run = self.run_stdin(args, stdin);
        assert_eq!(
            run.code, 0,
            "retro {args:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
            run.code, run.stdout, run.stderr
        );
        assert_no_panic(&run.stderr);
        run.stdout
    }

    /// Runs and asserts the exit code, a `retro: error:` line and no panic; returns the run.
    pub fn fails(&self, args: &[&str], code: i32) -> Run {
        let run = self.run(args);
        assert_error(&run, code);
        run
    }

    /// Runs and asserts a usage error (exit 2).
    pub fn usage(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert_usage(&run);
        run
    }

    /// `retro apply` with the built-in bank; returns the new checkpoint id.
    pub fn apply(&self, command: &str) -> String {
        let out = self.ok(&["apply", command]);
        let id = out.trim().to_owned();
        assert!(id.starts_with("sha256:") && id.len() == 71, "{out}");
        id
    }

    /// The id HEAD resolves to (via `cat-object`-free `log --json -n 1`), or None when unborn.
    pub fn head(&self) -> Option<String> {
        let out = self.ok(&["log", "--json", "-n", "1"]);
        out.lines()
            .next()
            .map(|line| json(line)["checkpoint"].as_str().unwrap().to_owned())
    }

    /// The refs as `(name, target)` pairs.
    pub fn refs(&self) -> Vec<(String, String)> {
        json_lines(&self.ok(&["refs", "--json"]))
            .into_iter()
            .map(|v| {
                (
                    v["ref"].as_str().unwrap().to_owned(),
                    v["target"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// Every file of the depot with its bytes, except the derived index and the lock files.
    pub fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        snapshot(&self.dir)
    }

    /// Runs an erroring command and asserts it left the depot byte-for-byte unchanged.
    pub fn fails_unchanged(&self, args: &[&str], code: i32) -> Run {
        let before = self.snapshot();
        let run = self.fails(args, code);
        assert_same_snapshot(&before, &self.snapshot(), args);
        run
    }

    /// [`TestDepot::fails_unchanged`] with stdin.
    pub fn fails_unchanged_stdin(&self, args: &[&str], stdin: &str, code: i32) -> Run {
        let before = self.snapshot();
        let run = self.run_stdin(args, stdin);
        assert_error(&run, code);
        assert_same_snapshot(&before, &self.snapshot(), args);
        run
    }

    /// Runs a usage error and asserts the depot is unchanged.
    pub fn usage_unchanged(&self, args: &[&str]) -> Run {
        let before = self.snapshot();
        let run = self.usage(args);
        assert_same_snapshot(&before, &self.snapshot(), args);
        run
    }
}

/// Every file under `dir` with its bytes, sorted, minus `index.sqlite*`, `lock` and
/// `packs/write.lock`.
pub fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            if name.starts_with("index.sqlite")
                || name.starts_with("snapshots.sqlite")
                || name == "lock"
                || name == "packs/write.lock"
            {
                continue;
            }
            out.push((name, fs::read(&path).unwrap()));
        }
    }
    out.sort();
    out
}

/// Asserts two snapshots are equal, naming the files that differ.
pub fn assert_same_snapshot(
    before: &[(String, Vec<u8>)],
    after: &[(String, Vec<u8>)],
    what: &[&str],
) {
    if before == after {
        return;
    }
    let names = |s: &[(String, Vec<u8>)]| s.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    let changed: Vec<&String> = before
        .iter()
        .filter(|(n, b)| after.iter().any(|(m, a)| m == n && a != b))
        .map(|(n, _)| n)
        .collect();
    panic!(
        "retro {what:?} changed the depot\nbefore: {:?}\nafter:  {:?}\nchanged: {changed:?}",
        names(before),
        names(after)
    );
}

/// Parses one JSON value.
pub fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

/// Parses JSON lines.
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(json)
        .collect()
}

/// `n` export lines of fixed content: dates, sessions and messages are all deterministic, and the
/// messages are long so that `retro log` writes well over 100 KiB.
pub fn bulk_history(n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        let item = i % 20;
        out.push_str(&format!(
            concat!(
                r#"{{"session":"bulk","date":"2026-02-{:02}T{:02}:{:02}:00Z","#,
                r#""message":{{"path":"items/i{}","name":"put","params":{{"n":{},"pad":"{}"}}}},"#,
                r#""events":[{{"partition":"items/i{}","name":"Put","data":{{"n":{}}}}}]}}"#,
                "\n"
            ),
            1 + i / 1440,
            i / 60 % 24,
            i % 60,
            item,
            i,
            "x".repeat(500),
            item,
            i
        ));
    }
    out
}

/// Compares `actual` with `fixtures/cli/<name>.txt`, or rewrites that file when `RETRO_BLESS=1`.
pub fn golden(name: &str, actual: &str) {
    let path = fixtures().join("cli").join(format!("{name}.txt"));
    if std::env::var_os("RETRO_BLESS").is_some_and(|v| v == "1") {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, actual).unwrap();
        return;
    }
    let expected = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "golden file {} is unreadable ({e}); run with RETRO_BLESS=1 to create it",
            path.display()
        )
    });
    if expected != actual {
        panic!(
            "output differs from the golden file {} (rerun with RETRO_BLESS=1 to accept)\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        );
    }
}

/// Copies the directory tree `from` to `to` (a fixture depot into a test's own directory).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
