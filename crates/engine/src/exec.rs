//! Handlers in any language: external programs speaking JSON over stdin and stdout, and the JSON
//! domain manifest that maps aggregate kinds and commands to them.
//!
//! Request on stdin: `{"command": …, "session": "…", "aggregate": {"path", "exists", "version",
//! "events": [{"name", "version", "data", "checkpoint"}…]}}` (an event's `version` is its schema
//! version, always the domain's newest for its name: events are upcast before a handler sees
//! them, see [`crate::upcast`]). The same facts are in the environment for shell
//! handlers: `RETRO_PATH`, `RETRO_COMMAND`, `RETRO_SESSION`, `RETRO_PARAMS` (compact JSON),
//! `RETRO_AGGREGATE_EXISTS`, `RETRO_AGGREGATE_VERSION`. The command name in both is the
//! manifest's spelling (`Deposit` given, `deposit` registered: the handler sees `deposit`).
//!
//! Response on stdout: exit 0 with `{"events": {"<partition>": [{"name", "data", "version"?}…]}}`
//! (an event without `version` is written at its name's newest version in the domain; one newer
//! than that is a failure), or a domain
//! rejection `{"error": {"code", "message"}}` with a non-zero exit (an error object wins even with
//! exit 0). A handler that cannot start, times out, dies, prints invalid JSON, prints more than its
//! output limit, or emits invalid names is a [`Failure::Broken`] naming the handler; nothing it
//! printed is written. Each handler runs in its own process group, killed whole on timeout.
//!
//! Snapshots (opt-in per kind: `"snapshot_every": N` in the manifest): a handler may add
//! `"state": <any JSON>` to its events response, the aggregate's state *after* the events it
//! emits. Once one is stored, the handler gets `"aggregate": {…, "version": V, "snapshot":
//! {"version": S, "state": <that JSON>}, "events": [the events after S]}` instead of the whole
//! history. Snapshots are keyed by a hash of the command's manifest entry and the bytes of its
//! handler files: editing the script (or the entry) ignores the old ones. A handler that never
//! returns `"state"` never gets a `"snapshot"`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use depot::{Event, EventName, PartitionName};

use crate::aggregate::{DomainError, RecordedEvent};
use crate::context::Context;
use crate::domain::{Failure, Manifest, Runner, SnapshotPolicy};
use crate::upcast::{exec_step, Transform, Upcaster, Upcasters};

/// Default time a handler may take.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// Default limit on what a handler may print.
pub const DEFAULT_MAX_OUTPUT: u64 = 8 << 20;
const STDERR_KEEP: usize = 2048;

/// One external handler.
#[derive(Debug, Clone)]
pub struct ExecHandler {
    label: String,
    program: Vec<String>,
    dir: PathBuf,
    timeout: Duration,
    max_output: u64,
}

impl ExecHandler {
    /// A handler running `program` (argv) in `dir`.
    pub fn new(label: impl Into<String>, program: Vec<String>, dir: PathBuf) -> ExecHandler {
        ExecHandler {
            label: label.into(),
            program,
            dir,
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            max_output: DEFAULT_MAX_OUTPUT,
        }
    }

    /// Sets the time limit.
    pub fn with_timeout(mut self, timeout: Duration) -> ExecHandler {
        self.timeout = timeout;
        self
    }

    /// Sets the output limit in bytes.
    pub fn with_max_output(mut self, bytes: u64) -> ExecHandler {
        self.max_output = bytes;
        self
    }

    fn broken(&self, reason: impl Into<String>) -> Failure {
        Failure::Broken {
            handler: self.describe(),
            reason: reason.into(),
        }
    }

    fn request(ctx: &Context<'_>, snapshot: Option<&Value>, events: &[RecordedEvent]) -> Value {
        let mut request = json!({
            "command": {
                "path": ctx.path().as_str(),
                "name": ctx.command().name(),
                "params": ctx.params(),
            },
            "session": ctx.session(),
            "aggregate": {
                "path": ctx.path().as_str(),
                "exists": ctx.exists(),
                "version": ctx.version(),
                "events": events.iter().map(|e| json!({
                    "name": e.name,
                    "version": e.schema_version,
                    "data": e.data,
                    "checkpoint": e.checkpoint.to_string(),
                })).collect::<Vec<_>>(),
            }
        });
        if let (Some(state), Some(aggregate)) = (snapshot, request.get_mut("aggregate")) {
            if let Some(aggregate) = aggregate.as_object_mut() {
                let from = ctx.version().saturating_sub(events.len() as u64);
                aggregate.insert(
                    "snapshot".to_owned(),
                    json!({"version": from, "state": state}),
                );
            }
        }
        request
    }

    /// Parses a handler's standard output: events per partition, or a rejection; anything else
    /// is a failure naming the handler. Never panics, whatever the bytes.
    /// An event without `"version"` is at version 1 here; [`Runner::run`] writes it at its name's
    /// newest version in the domain.
    pub fn parse_response(&self, stdout: &[u8]) -> Result<Vec<(PartitionName, Event)>, Failure> {
        Ok(self
            .parse_versioned(stdout)?
            .into_iter()
            .map(|(partition, event, _)| (partition, event))
            .collect())
    }

    /// [`ExecHandler::parse_response`], with whether each event declared its `"version"`.
    fn parse_versioned(&self, stdout: &[u8]) -> Result<Vec<(PartitionName, Event, bool)>, Failure> {
        let value: Value = serde_json::from_slice(stdout).map_err(|e| {
            let shown = String::from_utf8_lossy(&stdout[..stdout.len().min(80)]).into_owned();
            self.broken(format!("printed invalid JSON ({e}): {shown:?}"))
        })?;
        if let Some(rejection) = rejection_of(&value) {
            return Err(Failure::Rejected(rejection));
        }
        let events = value
            .get("events")
            .and_then(Value::as_object)
            .ok_or_else(|| self.broken("response has no \"events\" object"))?;
        let mut out = Vec::new();
        for (partition, list) in events {
            let partition = PartitionName::new(partition)
                .map_err(|e| self.broken(format!("emitted to an invalid partition: {e}")))?;
            let list = list
                .as_array()
                .ok_or_else(|| self.broken(format!("events of '{partition}' are not an array")))?;
            for event in list {
                let name = event.get("name").and_then(Value::as_str).ok_or_else(|| {
                    self.broken(format!("an event of '{partition}' has no \"name\""))
                })?;
                let name = EventName::new(name)
                    .map_err(|e| self.broken(format!("emitted an invalid event name: {e}")))?;
                let data = event
                    .get("data")
                    .cloned()
                    .unwrap_or(Value::Object(Default::default()));
                let version = match event.get("version") {
                    None => None,
                    Some(v) => Some(
                        v.as_u64()
                            .and_then(|v| u32::try_from(v).ok())
                            .filter(|v| *v >= 1)
                            .ok_or_else(|| {
                                self.broken(format!(
                                    "event {name} of '{partition}': \"version\" is not a whole number from 1 to 2^32-1"
                                ))
                            })?,
                    ),
                };
                let event = Event::new(name, data.to_string());
                out.push(match version {
                    Some(version) => (partition.clone(), event.with_version(version), true),
                    None => (partition.clone(), event, false),
                });
            }
        }
        Ok(out)
    }
}

fn rejection_of(value: &Value) -> Option<DomainError> {
    let error = value.get("error")?;
    // A missing, empty or non-string code or message gets a default: a rejection always says
    // something.
    let text = |key: &str| {
        error
            .get(key)
            .and_then(Value::as_str)
            .filter(|t| !t.trim().is_empty())
    };
    let code = text("code").unwrap_or("rejected").to_owned();
    let message = text("message")
        .unwrap_or("the handler rejected the command")
        .to_owned();
    Some(DomainError { code, message })
}

pub(crate) fn kill_group(pid: u32) {
    // The handler leads its own process group: kill everything it started.
    #[allow(unsafe_code)]
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
    unsafe {
        libc::kill(-(pid as i32), libc::SIGKILL);
    }
}

impl Runner for ExecHandler {
    fn run(&self, ctx: &mut Context<'_>, events: &[RecordedEvent]) -> Result<(), Failure> {
        self.run_resumed(ctx, None, events)
    }

    fn run_resumed(
        &self,
        ctx: &mut Context<'_>,
        snapshot: Option<&[u8]>,
        events: &[RecordedEvent],
    ) -> Result<(), Failure> {
        let Some((program, args)) = self.program.split_first() else {
            return Err(self.broken("its exec list is empty"));
        };
        let snapshot: Option<Value> = match snapshot {
            None => None,
            Some(bytes) => match serde_json::from_slice(bytes) {
                Ok(state) => Some(state),
                Err(e) => {
                    ctx.snapshot_unusable = Some(format!("its state is not JSON: {e}"));
                    return Err(self.broken("unusable snapshot"));
                }
            },
        };
        let request = Self::request(ctx, snapshot.as_ref(), events).to_string();
        let env = [
            ("RETRO_PATH", ctx.path().as_str().to_owned()),
            ("RETRO_COMMAND", ctx.command().name().to_owned()),
            ("RETRO_SESSION", ctx.session().to_owned()),
            (
                "RETRO_PARAMS",
                Value::Object(ctx.params().clone()).to_string(),
            ),
            ("RETRO_AGGREGATE_EXISTS", ctx.exists().to_string()),
            ("RETRO_AGGREGATE_VERSION", ctx.version().to_string()),
        ];
        let ran = run_process(
            program,
            args,
            &self.dir,
            &env,
            request.into_bytes(),
            self.timeout,
            self.max_output,
        )
        .map_err(|e| self.broken(e))?;
        let ProcessRun {
            status,
            stdout,
            oversized,
            stderr,
        } = ran;
        let with_stderr = |reason: String| {
            if stderr.is_empty() {
                reason
            } else {
                format!("{reason}; stderr: {stderr}")
            }
        };
        let Some(status) = status else {
            return Err(self.broken(format!(
                "timed out after {} ms and was killed",
                self.timeout.as_millis()
            )));
        };
        if oversized {
            return Err(self.broken(format!("printed more than {} bytes", self.max_output)));
        }
        if !status.success() {
            if let Some(rejection) = serde_json::from_slice::<Value>(&stdout)
                .ok()
                .as_ref()
                .and_then(rejection_of)
            {
                return Err(Failure::Rejected(rejection));
            }
            let how = match (status.code(), status.signal()) {
                (Some(code), _) => format!("exited with status {code} without an error object"),
                (None, Some(signal)) => format!("was killed by signal {signal}"),
                _ => "ended abnormally".to_owned(),
            };
            return Err(self.broken(with_stderr(how)));
        }
        for (partition, event, explicit) in self.parse_versioned(&stdout)? {
            let event = if explicit {
                let newest = ctx.event_version(event.name().as_str());
                if event.version() > newest {
                    return Err(self.broken(format!(
                        "emitted {} v{}, newer than the domain's newest (v{newest})",
                        event.name(),
                        event.version()
                    )));
                }
                event
            } else {
                ctx.stamped(event)
            };
            ctx.emitted.push((partition, event));
        }
        if ctx.snapshot_policy.is_some() {
            ctx.snapshot_state = serde_json::from_slice::<Value>(&stdout)
                .ok()
                .and_then(|mut v| v.get_mut("state").map(Value::take))
                .map(|state| state.to_string().into_bytes());
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("'{}' ({})", self.label, self.program.join(" "))
    }
}

/// What one run of an external program gave: its exit status (`None`: it timed out and was
/// killed), its standard output (up to the limit), whether it printed more, and the tail of its
/// standard error.
pub(crate) struct ProcessRun {
    pub status: Option<std::process::ExitStatus>,
    pub stdout: Vec<u8>,
    pub oversized: bool,
    pub stderr: String,
}

/// Runs `program args` in `dir` with `env` set, `input` on its standard input, in its own
/// process group (killed whole on timeout or when it prints more than `max_output` bytes).
/// The error is why it could not be started or waited for. Shared by command handlers and
/// exec upcasters.
pub(crate) fn run_process(
    program: &str,
    args: &[String],
    dir: &Path,
    env: &[(&str, String)],
    input: Vec<u8>,
    timeout: Duration,
    max_output: u64,
) -> Result<ProcessRun, String> {
    let mut child = Process::new(program)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("could not start {program:?}: {e}"))?;
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let writer = std::thread::spawn(move || {
        // A program may exit without reading: a broken pipe here is not an error.
        let _ = stdin.write_all(&input);
    });
    let limit = max_output;
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let read = (&mut stdout).take(limit + 1).read_to_end(&mut buf);
        let over = buf.len() as u64 > limit;
        if over {
            kill_group(pid);
        }
        (buf, over, read.is_ok())
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stderr).take(1 << 20).read_to_end(&mut buf);
        let start = buf.len().saturating_sub(STDERR_KEEP);
        String::from_utf8_lossy(&buf[start..]).trim().to_owned()
    });
    let started = Instant::now();
    let mut pause = Duration::from_micros(100);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() >= timeout => {
                kill_group(pid);
                let _ = child.wait();
                break None;
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(5));
            }
            Err(e) => {
                kill_group(pid);
                let _ = child.wait();
                return Err(format!("could not wait for it: {e}"));
            }
        }
    };
    let _ = writer.join();
    let (stdout, oversized, _) = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(ProcessRun {
        status,
        stdout,
        oversized,
        stderr,
    })
}

/// Why a domain manifest could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The file could not be read.
    #[error("could not read domain manifest '{path}': {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a valid manifest.
    #[error("domain manifest '{path}' is invalid: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    aggregates: BTreeMap<String, AggregateSpec>,
    /// Per event name, its chain of upcaster steps from v1 (docs/handlers.md).
    #[serde(default)]
    upcasters: BTreeMap<String, Vec<UpcasterSpec>>,
    /// The newest version of names reached only by a rename (with a chain: its end).
    #[serde(default)]
    event_versions: BTreeMap<String, u32>,
    /// Projections by name (docs/handlers.md, "Projections").
    #[serde(default)]
    projections: BTreeMap<String, crate::projection::ExecProjectionSpec>,
}

/// One step of an upcaster chain in a manifest: `from`, `to` (= `from + 1`) and exactly one
/// of: `exec` (with optional limits), `split`, or the declarative keys.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct UpcasterSpec {
    from: u32,
    to: u32,
    #[serde(default)]
    exec: Option<Vec<String>>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    max_output_bytes: Option<u64>,
    #[serde(default)]
    split: Option<Vec<Transform>>,
    #[serde(default)]
    rename: BTreeMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    default: serde_json::Map<String, Value>,
    #[serde(default)]
    rename_event: Option<String>,
}

impl UpcasterSpec {
    fn is_declarative(&self) -> bool {
        !(self.rename.is_empty()
            && self.remove.is_empty()
            && self.default.is_empty()
            && self.rename_event.is_none())
    }

    /// The step, or why it is not one (`dir`: the manifest's directory).
    fn upcaster(self, dir: &Path) -> Result<Upcaster, String> {
        if self.to <= self.from {
            return Err(format!(
                "a step from v{} to v{} goes to a lower (or the same) version",
                self.from, self.to
            ));
        }
        if self.to != self.from.saturating_add(1) {
            return Err(format!(
                "a step from v{} to v{} skips versions: each step goes up by one",
                self.from, self.to
            ));
        }
        let declarative = self.is_declarative();
        match (self.exec, self.split) {
            (Some(_), Some(_)) => Err("a step has either \"exec\" or \"split\", not both".to_owned()),
            (Some(_), None) | (None, Some(_)) if declarative => Err(
                "\"rename\", \"remove\", \"default\" and \"rename_event\" go in a declarative step or in each part of a \"split\", not beside \"exec\" or \"split\"".to_owned(),
            ),
            (Some(exec), None) => {
                if exec.is_empty() {
                    return Err("\"exec\" is empty".to_owned());
                }
                let timeout_ms = self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
                if timeout_ms == 0 || timeout_ms > 600_000 {
                    return Err("\"timeout_ms\" must be between 1 and 600000".to_owned());
                }
                Ok(exec_step(
                    exec,
                    dir,
                    timeout_ms,
                    self.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT),
                ))
            }
            (None, _) if self.timeout_ms.is_some() || self.max_output_bytes.is_some() => Err(
                "\"timeout_ms\" and \"max_output_bytes\" are for \"exec\" steps".to_owned(),
            ),
            (None, Some(split)) => Ok(Upcaster::Split(split)),
            (None, None) => Ok(Upcaster::Transform(Transform {
                rename: self.rename,
                remove: self.remove,
                default: self.default,
                rename_event: self.rename_event,
            })),
        }
    }
}

/// Parses the `upcasters` and `event_versions` sections of a domain manifest (the rest of the
/// file is ignored here) into `upcasters`: what `load_manifest` does with them, alone, for
/// fuzzing and tests. `dir` is where exec steps run.
pub fn parse_upcasters(text: &[u8], dir: &Path, upcasters: &mut Upcasters) -> Result<(), String> {
    #[derive(Deserialize)]
    struct Sections {
        #[serde(default)]
        upcasters: BTreeMap<String, Vec<UpcasterSpec>>,
        #[serde(default)]
        event_versions: BTreeMap<String, u32>,
    }
    let sections: Sections = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    add_upcasters(sections.upcasters, sections.event_versions, dir, upcasters)
}

fn add_upcasters(
    chains: BTreeMap<String, Vec<UpcasterSpec>>,
    versions: BTreeMap<String, u32>,
    dir: &Path,
    upcasters: &mut Upcasters,
) -> Result<(), String> {
    for (event, steps) in chains {
        if steps.is_empty() {
            return Err(format!("upcasters of '{event}': the chain is empty"));
        }
        for step in steps {
            let from = step.from;
            let upcaster = step
                .upcaster(dir)
                .map_err(|reason| format!("upcaster of '{event}' from v{from}: {reason}"))?;
            upcasters
                .add(&event, from, upcaster)
                .map_err(|e| e.to_string())?;
        }
    }
    for (event, version) in versions {
        upcasters
            .declare_version(&event, version)
            .map_err(|e| format!("event_versions: {e}"))?;
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AggregateSpec {
    commands: BTreeMap<String, CommandSpec>,
    /// Snapshot every N events (handlers that return `"state"`); absent or 0: never.
    #[serde(default)]
    snapshot_every: u64,
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_MS
}

fn default_max_output() -> u64 {
    DEFAULT_MAX_OUTPUT
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct CommandSpec {
    exec: Vec<String>,
    #[serde(default = "default_timeout")]
    timeout_ms: u64,
    #[serde(default = "default_max_output")]
    max_output_bytes: u64,
    #[serde(default)]
    requires_session: bool,
}

/// Loads a JSON domain manifest into `manifest` (see the module docs for the handler protocol).
/// The program (`exec[0]`), when it is a relative path with a `/`, resolves against the manifest's
/// directory, which is also the handlers' working directory; the arguments are passed as written
/// (so a relative file argument names a file of that directory too).
pub fn load_manifest(path: &Path, manifest: &mut Manifest) -> Result<(), ManifestError> {
    let text = std::fs::read(path).map_err(|source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_manifest_bytes(&text, path, manifest)
}

/// [`load_manifest`] from bytes already read; `path` locates relative handler paths.
pub fn load_manifest_bytes(
    text: &[u8],
    path: &Path,
    manifest: &mut Manifest,
) -> Result<(), ManifestError> {
    let invalid = |reason: String| ManifestError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let file: ManifestFile = serde_json::from_slice(text).map_err(|e| invalid(e.to_string()))?;
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    let dir = dir.canonicalize().unwrap_or(dir);
    let mut upcasters = manifest.upcasters().clone();
    add_upcasters(file.upcasters, file.event_versions, &dir, &mut upcasters).map_err(invalid)?;
    manifest.set_upcasters(upcasters);
    for (name, spec) in file.projections {
        let def = spec
            .into_def(&name, &dir)
            .map_err(|e| invalid(e.to_string()))?;
        manifest
            .projection(def)
            .map_err(|e| invalid(e.to_string()))?;
    }
    for (kind, spec) in file.aggregates {
        for (name, command) in spec.commands {
            if command.exec.is_empty() {
                return Err(invalid(format!("{kind}/{name}: \"exec\" is empty")));
            }
            if command.timeout_ms == 0 || command.timeout_ms > 600_000 {
                return Err(invalid(format!(
                    "{kind}/{name}: \"timeout_ms\" must be between 1 and 600000"
                )));
            }
            // Only the program is resolved (a relative path with a '/' is the manifest
            // directory's); arguments are passed exactly as written: a relative file argument
            // still names the manifest directory's file, because that is the working directory.
            let mut program = command.exec.clone();
            if program[0].contains('/') && Path::new(&program[0]).is_relative() {
                program[0] = dir.join(&program[0]).display().to_string();
            }
            let handler = ExecHandler::new(format!("{kind}/{name}"), program, dir.clone())
                .with_timeout(Duration::from_millis(command.timeout_ms))
                .with_max_output(command.max_output_bytes);
            let snapshot = (spec.snapshot_every > 0).then(|| {
                Arc::new(SnapshotPolicy::exec(
                    spec.snapshot_every,
                    exec_domain(&kind, &command, &dir),
                ))
            });
            manifest
                .register_with(
                    &kind,
                    &name,
                    Arc::new(handler),
                    command.requires_session,
                    snapshot,
                )
                .map_err(|e| invalid(e.to_string()))?;
        }
    }
    Ok(())
}

/// The domain version of an exec command's snapshots: a hash of its kind, its manifest entry
/// (as parsed: exec list, limits, session flag) and the bytes of every exec element that names a
/// file (relative ones in the manifest's directory). Commands run by the same handler with the
/// same entry share snapshots; editing the handler or the entry starts afresh.
fn exec_domain(kind: &str, command: &CommandSpec, dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(b"retro exec domain 1\0");
    hash.update(kind.as_bytes());
    hash.update([0]);
    hash.update(serde_json::to_vec(command).unwrap_or_default());
    for part in &command.exec {
        let path = dir.join(part);
        if let Ok(bytes) = std::fs::read(&path) {
            hash.update([1]);
            hash.update((bytes.len() as u64).to_be_bytes());
            hash.update(&bytes);
        } else {
            hash.update([0]);
        }
    }
    format!("exec:{}", hex::encode(hash.finalize()))
}
