//! Projection handlers in any language: one long-lived program per generation, fed one JSON line
//! per batch on stdin, answering one JSON line per batch on stdout (docs/handlers.md).
//!
//! In: `{"projection","generation","live","checkpoint","events":[{"id","partition","version",
//! "name","schema_version","data","checkpoint","date","session"}…]}`, plus `"switched_from": N`
//! on the switch notice (no events). Environment: `RETRO_PROJECTION`, `RETRO_GENERATION`.
//!
//! Out: `{"ack":"<the batch's checkpoint>"}` (with `"commands":[{"event":"<id>","command":
//! {"path","name","params"}}…]` to issue commands), or `{"error":"…"}` (optionally `"event":
//! "<id>"`) to fail the batch. Anything else — no line within the timeout, a line longer than the
//! output limit, invalid JSON, an ack of another checkpoint, the program exiting — fails the batch
//! too, and the program is killed (its whole process group) and started again for the next
//! attempt.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command as Process, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use std::os::unix::process::CommandExt;

use serde::Deserialize;
use serde_json::{json, Value};

use depot::ObjectId;

use super::RetryPolicy;
use super::{Ack, Batch, HandlerFailure, Issued, Projection, ProjectionDef, ProjectionError};
use crate::command::Command;
use crate::exec::{DEFAULT_MAX_OUTPUT, DEFAULT_TIMEOUT_MS};

const STDERR_KEEP: usize = 2048;

/// A projection's entry in a JSON manifest's `"projections"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecProjectionSpec {
    /// The partition globs.
    partitions: Vec<String>,
    /// The program and its arguments (a relative program with a `/` is the manifest
    /// directory's, which is also the working directory).
    exec: Vec<String>,
    /// How long one batch may take (ms, 1 to 600000).
    #[serde(default)]
    timeout_ms: Option<u64>,
    /// The longest answer line.
    #[serde(default)]
    max_output_bytes: Option<u64>,
    /// How failures are retried.
    #[serde(default)]
    retry: Option<RetrySpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetrySpec {
    #[serde(default)]
    attempts: Option<u32>,
    #[serde(default)]
    backoff_ms: Option<u64>,
    #[serde(default)]
    max_backoff_ms: Option<u64>,
}

impl ExecProjectionSpec {
    /// The declaration of projection `name` (`dir`: the manifest's directory).
    pub fn into_def(self, name: &str, dir: &Path) -> Result<ProjectionDef, ProjectionError> {
        let invalid = |reason: &str| ProjectionError::Invalid {
            projection: name.to_owned(),
            reason: reason.to_owned(),
        };
        if self.exec.is_empty() {
            return Err(invalid("\"exec\" is empty"));
        }
        let timeout_ms = self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if timeout_ms == 0 || timeout_ms > 600_000 {
            return Err(invalid("\"timeout_ms\" must be between 1 and 600000"));
        }
        let max_output = self.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT);
        if max_output == 0 {
            return Err(invalid("\"max_output_bytes\" must be at least 1"));
        }
        let mut retry = RetryPolicy::default();
        if let Some(spec) = self.retry {
            if let Some(attempts) = spec.attempts {
                if attempts == 0 || attempts > 1000 {
                    return Err(invalid("\"retry.attempts\" must be between 1 and 1000"));
                }
                retry.attempts = attempts;
            }
            for (value, slot, what) in [
                (spec.backoff_ms, &mut retry.backoff, "retry.backoff_ms"),
                (
                    spec.max_backoff_ms,
                    &mut retry.max_backoff,
                    "retry.max_backoff_ms",
                ),
            ] {
                if let Some(ms) = value {
                    if ms > 3_600_000 {
                        return Err(invalid(&format!(
                            "\"{what}\" must be at most 3600000 (an hour)"
                        )));
                    }
                    *slot = Duration::from_millis(ms);
                }
            }
        }
        let mut program = self.exec;
        if program[0].contains('/') && Path::new(&program[0]).is_relative() {
            program[0] = dir.join(&program[0]).display().to_string();
        }
        let globs: Vec<&str> = self.partitions.iter().map(String::as_str).collect();
        let handler = ExecProjection {
            program,
            dir: dir.to_path_buf(),
            timeout: Duration::from_millis(timeout_ms),
            max_output,
            running: Mutex::new(HashMap::new()),
        };
        Ok(ProjectionDef::new(name, &globs, std::sync::Arc::new(handler))?.with_retry(retry))
    }
}

/// An external projection handler (see the module docs).
#[derive(Debug)]
pub struct ExecProjection {
    program: Vec<String>,
    dir: PathBuf,
    timeout: Duration,
    max_output: u64,
    /// The running program of each generation.
    running: Mutex<HashMap<u64, Running>>,
}

/// One running program.
#[derive(Debug)]
struct Running {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<Result<Vec<u8>, String>>,
    stderr: std::sync::Arc<Mutex<String>>,
}

impl Running {
    fn kill(mut self) {
        kill_group(self.child.id());
        let _ = self.child.wait();
    }
}

impl Drop for ExecProjection {
    fn drop(&mut self) {
        let running = std::mem::take(&mut *self.running.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, program) in running {
            program.kill();
        }
    }
}

fn kill_group(pid: u32) {
    crate::exec::kill_group(pid);
}

impl ExecProjection {
    fn start(&self, batch: &Batch<'_>) -> Result<Running, String> {
        let (program, args) = self
            .program
            .split_first()
            .ok_or_else(|| "its exec list is empty".to_owned())?;
        let mut child = Process::new(program)
            .args(args)
            .current_dir(&self.dir)
            .env("RETRO_PROJECTION", batch.projection)
            .env("RETRO_GENERATION", batch.generation.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("could not start {program:?}: {e}"))?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = mpsc::channel();
        let limit = self.max_output;
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut line = Vec::new();
                match (&mut reader).take(limit + 1).read_until(b'\n', &mut line) {
                    Ok(0) => {
                        let _ = tx.send(Err("it closed its standard output (exited?)".to_owned()));
                        return;
                    }
                    Ok(_) if line.len() as u64 > limit && !line.ends_with(b"\n") => {
                        let _ =
                            tx.send(Err(format!("it printed a line longer than {limit} bytes")));
                        return;
                    }
                    Ok(_) => {
                        if tx.send(Ok(line)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("its standard output failed: {e}")));
                        return;
                    }
                }
            }
        });
        let kept = std::sync::Arc::new(Mutex::new(String::new()));
        let tail = kept.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    return;
                }
                let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                tail.push_str(&String::from_utf8_lossy(&buf[..n]));
                if tail.len() > 2 * STDERR_KEEP {
                    let mut cut = tail.len() - STDERR_KEEP;
                    while !tail.is_char_boundary(cut) {
                        cut += 1;
                    }
                    tail.drain(..cut);
                }
            }
        });
        Ok(Running {
            child,
            stdin,
            lines,
            stderr: kept,
        })
    }

    /// One exchange with the generation's program: a line out, a line back.
    fn exchange(&self, running: &mut Running, line: &[u8]) -> Result<Vec<u8>, String> {
        running
            .stdin
            .write_all(line)
            .and_then(|()| running.stdin.flush())
            .map_err(|e| format!("could not write the batch to it: {e}"))?;
        match running.lines.recv_timeout(self.timeout) {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(reason)) => Err(reason),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(format!(
                "it did not answer within {} ms",
                self.timeout.as_millis()
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err("its standard output closed".to_owned())
            }
        }
    }
}

/// The batch as the line the program reads (ending in a newline).
pub(crate) fn request_line(batch: &Batch<'_>) -> Vec<u8> {
    let events: Vec<Value> = batch
        .events
        .iter()
        .map(|e| {
            json!({
                "id": e.record.id.to_string(),
                "partition": e.record.partition.as_str(),
                "version": e.record.version,
                "name": e.name,
                "schema_version": e.schema_version,
                "data": e.data,
                "checkpoint": e.record.checkpoint.to_string(),
                "date": e.record.date.map(depot::format_date),
                "session": e.record.session,
            })
        })
        .collect();
    let mut request = json!({
        "projection": batch.projection,
        "generation": batch.generation,
        "live": batch.live,
        "checkpoint": batch.checkpoint.map(|c| c.to_string()),
        "events": events,
    });
    if let (Some(from), Some(object)) = (batch.switched_from, request.as_object_mut()) {
        object.insert("switched_from".to_owned(), json!(from));
    }
    let mut line = request.to_string().into_bytes();
    line.push(b'\n');
    line
}

/// Parses a handler's answer to the batch ending at `checkpoint`: an acknowledgement (with the
/// commands to issue) or the handler's failure. Never panics, whatever the bytes.
pub fn parse_ack(line: &[u8], checkpoint: Option<&ObjectId>) -> Result<Ack, HandlerFailure> {
    let shown = || String::from_utf8_lossy(&line[..line.len().min(120)]).into_owned();
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        HandlerFailure::new(format!("it answered invalid JSON ({e}): {:?}", shown()))
    })?;
    let Some(object) = value.as_object() else {
        return Err(HandlerFailure::new(format!(
            "it answered {:?}, not an object",
            shown()
        )));
    };
    let event_of = |v: Option<&Value>| -> Result<Option<ObjectId>, HandlerFailure> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => s
                .parse()
                .map(Some)
                .map_err(|_| HandlerFailure::new(format!("\"event\" {s:?} is not an event id"))),
            Some(other) => Err(HandlerFailure::new(format!(
                "\"event\" is {other}, not an event id"
            ))),
        }
    };
    if let Some(error) = object.get("error") {
        let message = match error {
            Value::String(s) if !s.trim().is_empty() => s.clone(),
            Value::String(_) | Value::Null => "the handler failed the batch".to_owned(),
            other => other.to_string(),
        };
        return Err(HandlerFailure {
            message: format!("the handler failed: {message}"),
            event: event_of(object.get("event")).unwrap_or(None),
        });
    }
    let expected = checkpoint.map(|c| c.to_string());
    let acked = match object.get("ack") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) => None,
        _ => {
            return Err(HandlerFailure::new(format!(
                "it answered {:?}: an answer is {{\"ack\": CHECKPOINT}} or {{\"error\": TEXT}}",
                shown()
            )))
        }
    };
    if acked != expected {
        return Err(HandlerFailure::new(format!(
            "it acknowledged {}, not the batch's checkpoint {}",
            acked.as_deref().unwrap_or("null"),
            expected.as_deref().unwrap_or("null")
        )));
    }
    let mut commands = Vec::new();
    match object.get("commands") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for item in list {
                let event = event_of(item.get("event"))?.ok_or_else(|| {
                    HandlerFailure::new(
                        "an issued command has no \"event\" (the event that caused it)",
                    )
                })?;
                let command = item
                    .get("command")
                    .ok_or_else(|| HandlerFailure::new("an issued command has no \"command\""))?;
                let command =
                    Command::parse(command.to_string().as_bytes()).map_err(|e| HandlerFailure {
                        message: format!("it issued an invalid command: {e}"),
                        event: Some(event),
                    })?;
                commands.push(Issued { event, command });
            }
        }
        Some(_) => return Err(HandlerFailure::new("\"commands\" is not an array")),
    }
    Ok(Ack { commands })
}

impl Projection for ExecProjection {
    fn handle(&self, batch: &Batch<'_>) -> Result<Ack, HandlerFailure> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut program = match running.remove(&batch.generation) {
            Some(program) => program,
            None => self.start(batch).map_err(HandlerFailure::new)?,
        };
        let answer = match self.exchange(&mut program, &request_line(batch)) {
            Ok(answer) => answer,
            Err(reason) => {
                let stderr = program
                    .stderr
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .trim()
                    .to_owned();
                program.kill();
                return Err(HandlerFailure::new(if stderr.is_empty() {
                    reason
                } else {
                    format!("{reason}; stderr: {stderr}")
                }));
            }
        };
        let parsed = parse_ack(&answer, batch.checkpoint.as_ref());
        running.insert(batch.generation, program);
        parsed
    }

    fn retire(&self, generation: u64) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(program) = running.remove(&generation) {
            program.kill();
        }
    }

    fn describe(&self) -> String {
        format!("({})", self.program.join(" "))
    }
}
