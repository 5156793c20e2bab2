//! Helpers: the shared server, fresh databases, `retro` with a clean environment.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// The built `retro` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_retro"))
}

/// The URL of a fresh, empty database on the shared test server.
pub fn fresh_url() -> String {
    pgtest::PgServer::shared().create_database()
}

/// `retro ARGS` in `work`, with a clean environment.
pub fn retro(work: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.current_dir(work)
        .env_remove("RETRO_DEPOT")
        .env_remove("RETRO_SESSION")
        .env_remove("RETRO_MANIFEST")
        .env_remove("RUST_BACKTRACE")
        .env("NO_COLOR", "1")
        .args(args)
        .stdin(Stdio::null());
    cmd
}

/// Runs `retro ARGS` and returns its output, whatever the exit code.
pub fn run(work: &Path, args: &[&str]) -> Output {
    retro(work, args).output().expect("run retro")
}

/// Runs `retro ARGS`, asserting success; returns stdout.
pub fn ok(work: &Path, args: &[&str]) -> String {
    let out = run(work, args);
    assert!(
        out.status.success(),
        "retro {args:?} failed ({:?}):\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Parses JSON lines.
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
        .collect()
}

/// A bank command.
pub fn command(path: &str, name: &str, params: &str) -> String {
    format!(r#"{{"path":"{path}","name":"{name}","params":{params}}}"#)
}
