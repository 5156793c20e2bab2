//! Running a child process to its end with a deadline, and judging what it printed.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How a child ended.
#[derive(Debug)]
pub struct Ran {
    /// Its exit code (None: killed by a signal).
    pub code: Option<i32>,
    /// The signal that killed it.
    pub signal: Option<i32>,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// True when the deadline passed and we killed it.
    pub timed_out: bool,
}

impl Ran {
    /// Died of SIGKILL (ours or an injected one) without our deadline.
    pub fn killed(&self) -> bool {
        self.signal == Some(libc::SIGKILL) && !self.timed_out
    }

    /// A short description for problem reports.
    pub fn describe(&self) -> String {
        format!(
            "exit {:?}, signal {:?}{}; stdout {:?}; stderr {:?}",
            self.code,
            self.signal,
            if self.timed_out { ", TIMED OUT" } else { "" },
            cut(self.stdout.trim()),
            cut(self.stderr.trim())
        )
    }

    /// The stderr shows a Rust panic.
    pub fn panicked(&self) -> bool {
        crate::round::shows_panic(&self.stderr)
    }

    /// A failure that is a clean error: a non-zero exit with a `retro: error:` line, no panic.
    pub fn clean_error(&self) -> bool {
        matches!(self.code, Some(c) if c != 0)
            && self.stderr.contains("retro: error:")
            && !self.panicked()
    }
}

fn cut(text: &str) -> String {
    if text.len() <= 600 {
        return text.to_owned();
    }
    let mut end = 600;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Runs `cmd` to its end (killing it after `deadline`), collecting its output.
pub fn run(cmd: &mut Command, deadline: Duration) -> std::io::Result<Ran> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let err = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        bytes
    });
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    Ok(Ran {
        code: status.code(),
        signal: status.signal(),
        stdout,
        stderr,
        timed_out,
    })
}

/// Every file under `dir` whose name starts with `.tmp-` (leftovers of a dead or failed writer).
pub fn temp_files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

/// Copies the directory tree `from` to `to` (regular files and directories).
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
