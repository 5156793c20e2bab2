//! Upcasting: reading events written under an older schema version as the newest one.
//!
//! This module owns the [`Upcasters`] of a domain: per event name, a chain of steps v1 → v2 →
//! v3 …, each an [`Upcaster`] (a declarative [`Transform`], a split into several transforms, an
//! external program speaking JSON, or a Rust function), and the newest version of every name it
//! knows. [`Upcasters::upcast`] turns one stored event into the events the domain reads today;
//! stored bytes and ids never change (upcasting happens on read only).
//!
//! An event newer than the domain knows is an [`UpcastError::UnknownVersion`]; a step that fails
//! (a program that crashes, times out or prints garbage, a transform that does not fit the data)
//! is an [`UpcastError::StepFailed`] naming the step: never a silent pass-through.
//!
//! The exec protocol: the step's program gets `{"name", "version", "data", "partition"}` on stdin
//! and prints a JSON array of `{"name", "data", "version"?}`: one event, several (a split) or
//! another name (a rename). A result under the event's own name is at the step's `to` unless it
//! says a higher version; one under another name is at that name's newest version unless it says
//! one. Each result goes on through its own name's chain (so a rename may land at that name's v1
//! and be upcast from there), at most 256 steps deep.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use depot::{EventName, ObjectId, PartitionName};

use crate::aggregate::RecordedEvent;
use crate::exec::{run_process, DEFAULT_MAX_OUTPUT, DEFAULT_TIMEOUT_MS};

/// One event as an upcaster sees and returns it: name, schema version and JSON payload.
#[derive(Debug, Clone, PartialEq)]
pub struct UpcastEvent {
    /// The event's name.
    pub name: String,
    /// Its schema version (1 or more).
    pub version: u32,
    /// Its payload.
    pub data: Value,
}

/// A Rust upcaster step: the event (at the step's `from`) and its partition in, the resulting
/// events out, each with its version (under the event's name: above `from`).
pub type UpcastFn =
    dyn Fn(&UpcastEvent, &PartitionName) -> Result<Vec<UpcastEvent>, String> + Send + Sync;

/// A declarative transform of one event: rename fields, remove fields, add defaults for absent
/// fields, rename the event; applied in that order.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Transform {
    /// Field renames, old name → new name (a field that is absent is left alone; one whose new
    /// name is already taken is an error).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rename: BTreeMap<String, String>,
    /// Fields to remove (absent ones are ignored).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    /// Values for fields that are absent.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub default: Map<String, Value>,
    /// The event's new name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rename_event: Option<String>,
}

impl Transform {
    /// Whether it changes nothing but, perhaps, the event's name (and so fits any payload).
    fn touches_fields(&self) -> bool {
        !(self.rename.is_empty() && self.remove.is_empty() && self.default.is_empty())
    }

    fn check(&self) -> Result<(), String> {
        if let Some(name) = &self.rename_event {
            EventName::new(name).map_err(|e| format!("\"rename_event\": {e}"))?;
        }
        for (old, new) in &self.rename {
            if old == new {
                return Err(format!("\"rename\" maps '{old}' to itself"));
            }
        }
        let mut targets: Vec<&String> = self.rename.values().collect();
        targets.sort();
        if targets.windows(2).any(|w| w[0] == w[1]) {
            return Err("\"rename\" maps two fields to one name".to_owned());
        }
        Ok(())
    }

    fn apply(
        &self,
        event: &UpcastEvent,
        version_of: &VersionOf<'_>,
    ) -> Result<UpcastEvent, String> {
        let data = if self.touches_fields() {
            let Value::Object(fields) = &event.data else {
                return Err(format!(
                    "its payload is not a JSON object but {}",
                    crate::command::kind_of(&event.data)
                ));
            };
            let mut fields = fields.clone();
            let mut moved = Vec::new();
            for (old, new) in &self.rename {
                if let Some(value) = fields.remove(old) {
                    moved.push((new, value));
                }
            }
            for (new, value) in moved {
                if fields.contains_key(new.as_str()) {
                    return Err(format!("renaming into '{new}', which is already present"));
                }
                fields.insert(new.clone(), value);
            }
            for field in &self.remove {
                fields.remove(field);
            }
            for (field, value) in &self.default {
                fields.entry(field.clone()).or_insert_with(|| value.clone());
            }
            Value::Object(fields)
        } else {
            event.data.clone()
        };
        let name = self
            .rename_event
            .clone()
            .unwrap_or_else(|| event.name.clone());
        Ok(UpcastEvent {
            version: version_of(&name),
            name,
            data,
        })
    }
}

/// An external program as an upcaster step (see the module docs for its protocol).
#[derive(Debug, Clone)]
pub struct ExecUpcaster {
    program: Vec<String>,
    dir: PathBuf,
    timeout: Duration,
    max_output: u64,
}

impl ExecUpcaster {
    /// A step running `program` (argv) in `dir`, with the default time and output limits.
    pub fn new(program: Vec<String>, dir: impl Into<PathBuf>) -> ExecUpcaster {
        ExecUpcaster {
            program,
            dir: dir.into(),
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            max_output: DEFAULT_MAX_OUTPUT,
        }
    }

    /// Sets the time limit of one run.
    pub fn with_timeout(mut self, timeout: Duration) -> ExecUpcaster {
        self.timeout = timeout;
        self
    }

    /// Sets the output limit in bytes.
    pub fn with_max_output(mut self, bytes: u64) -> ExecUpcaster {
        self.max_output = bytes;
        self
    }

    fn run(
        &self,
        event: &UpcastEvent,
        partition: &PartitionName,
        version_of: &VersionOf<'_>,
    ) -> Result<Vec<UpcastEvent>, String> {
        let Some((program, args)) = self.program.split_first() else {
            return Err("its exec list is empty".to_owned());
        };
        let input = json!({
            "name": event.name,
            "version": event.version,
            "data": event.data,
            "partition": partition.as_str(),
        })
        .to_string();
        let ran = run_process(
            program,
            args,
            &self.dir,
            &[],
            input.into_bytes(),
            self.timeout,
            self.max_output,
        )?;
        let with_stderr = |reason: String| {
            if ran.stderr.is_empty() {
                reason
            } else {
                format!("{reason}; stderr: {}", ran.stderr)
            }
        };
        let Some(status) = ran.status else {
            return Err(format!(
                "timed out after {} ms and was killed",
                self.timeout.as_millis()
            ));
        };
        if ran.oversized {
            return Err(format!("printed more than {} bytes", self.max_output));
        }
        if !status.success() {
            use std::os::unix::process::ExitStatusExt;
            let how = match (status.code(), status.signal()) {
                (Some(code), _) => format!("exited with status {code}"),
                (None, Some(signal)) => format!("was killed by signal {signal}"),
                _ => "ended abnormally".to_owned(),
            };
            return Err(with_stderr(how));
        }
        parse_exec_output(&ran.stdout, version_of)
    }
}

/// The version a step's result named so gets when the step does not say: the step's `to` for
/// the name it was given, the domain's newest for any other.
pub type VersionOf<'a> = dyn Fn(&str) -> u32 + 'a;

/// Parses an exec upcaster's standard output: a JSON array of `{"name", "data", "version"?}`,
/// `version` defaulting to `version_of(name)`. Never panics, whatever the bytes.
pub fn parse_exec_output(
    stdout: &[u8],
    version_of: &VersionOf<'_>,
) -> Result<Vec<UpcastEvent>, String> {
    let value: Value = serde_json::from_slice(stdout).map_err(|e| {
        let shown = String::from_utf8_lossy(&stdout[..stdout.len().min(80)]).into_owned();
        format!("printed invalid JSON ({e}): {shown:?}")
    })?;
    let Value::Array(list) = value else {
        return Err(format!(
            "printed {} instead of a JSON array of events",
            crate::command::kind_of(&value)
        ));
    };
    let mut out = Vec::with_capacity(list.len());
    for (index, item) in list.into_iter().enumerate() {
        let Value::Object(mut item) = item else {
            return Err(format!("result {index} is not a JSON object"));
        };
        let name = match item.remove("name") {
            Some(Value::String(name)) => name,
            _ => return Err(format!("result {index} has no string \"name\"")),
        };
        EventName::new(&name).map_err(|e| format!("result {index}: invalid event name: {e}"))?;
        let version = match item.remove("version") {
            None => version_of(&name),
            Some(v) => v
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v >= 1)
                .ok_or_else(|| {
                    format!("result {index}: \"version\" is not a whole number from 1 to 2^32-1")
                })?,
        };
        let data = item.remove("data").unwrap_or(Value::Object(Map::new()));
        if let Some(key) = item.keys().next() {
            return Err(format!("result {index} has an unknown key '{key}'"));
        }
        out.push(UpcastEvent {
            name,
            version,
            data,
        });
    }
    Ok(out)
}

/// One step of a chain: how an event at version `from` becomes events at `from + 1`.
#[derive(Clone)]
pub enum Upcaster {
    /// A declarative transform.
    Transform(Transform),
    /// Several transforms of the same event: one resulting event each (a split).
    Split(Vec<Transform>),
    /// An external program.
    Exec(ExecUpcaster),
    /// A Rust function, with a label that names it (in errors, and in the snapshot domain
    /// version: change the label when the function changes).
    Function {
        /// Names the function.
        label: String,
        /// The function.
        run: Arc<UpcastFn>,
    },
}

impl Upcaster {
    /// A Rust function step labelled `label`.
    pub fn function(
        label: impl Into<String>,
        run: impl Fn(&UpcastEvent, &PartitionName) -> Result<Vec<UpcastEvent>, String>
            + Send
            + Sync
            + 'static,
    ) -> Upcaster {
        Upcaster::Function {
            label: label.into(),
            run: Arc::new(run),
        }
    }

    fn describe(&self) -> String {
        match self {
            Upcaster::Transform(t) => format!(
                "declarative {}",
                serde_json::to_string(t).unwrap_or_default()
            ),
            Upcaster::Split(ts) => {
                format!("split {}", serde_json::to_string(ts).unwrap_or_default())
            }
            Upcaster::Exec(e) => format!("exec {}", e.program.join(" ")),
            Upcaster::Function { label, .. } => format!("rust {label}"),
        }
    }

    /// What keys snapshots: the step's definition, and for exec steps the bytes of every argv
    /// element that names a file.
    fn fingerprint(&self, into: &mut sha2::Sha256) {
        use sha2::Digest;
        into.update(self.describe().as_bytes());
        into.update([0]);
        if let Upcaster::Exec(e) = self {
            for part in &e.program {
                match std::fs::read(e.dir.join(part)) {
                    Ok(bytes) => {
                        into.update([1]);
                        into.update((bytes.len() as u64).to_be_bytes());
                        into.update(&bytes);
                    }
                    Err(_) => into.update([0]),
                }
            }
        }
    }

    fn check(&self) -> Result<(), String> {
        match self {
            Upcaster::Transform(t) => t.check(),
            Upcaster::Split(ts) if ts.is_empty() => Err("\"split\" is empty".to_owned()),
            Upcaster::Split(ts) => ts.iter().try_for_each(Transform::check),
            Upcaster::Exec(e) if e.program.is_empty() => Err("\"exec\" is empty".to_owned()),
            Upcaster::Exec(_) | Upcaster::Function { .. } => Ok(()),
        }
    }

    fn run(
        &self,
        event: &UpcastEvent,
        partition: &PartitionName,
        version_of: &VersionOf<'_>,
    ) -> Result<Vec<UpcastEvent>, String> {
        match self {
            Upcaster::Transform(t) => Ok(vec![t.apply(event, version_of)?]),
            Upcaster::Split(ts) => ts.iter().map(|t| t.apply(event, version_of)).collect(),
            Upcaster::Exec(e) => e.run(event, partition, version_of),
            Upcaster::Function { run, .. } => {
                let out = run(event, partition)?;
                for e in &out {
                    EventName::new(&e.name).map_err(|err| format!("invalid event name: {err}"))?;
                }
                Ok(out)
            }
        }
    }
}

impl fmt::Debug for Upcaster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Why upcasters cannot be declared as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upcaster of '{}' from v{from}: {reason}", depot::shown(.event))]
pub struct UpcasterError {
    /// The event name.
    pub event: String,
    /// The step's `from` version.
    pub from: u32,
    /// Why.
    pub reason: String,
}

/// A stored event the domain cannot read as its newest version. Class `internal`: the
/// domain's code and its history disagree (exit 10, HTTP 500; `docs/errors.md`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpcastError {
    /// The event's version is newer than the domain knows.
    #[error("event {id} ({} v{version}, event {position} of '{}') is newer than this domain knows: its newest {} is v{newest}", depot::shown(.name), depot::shown(.partition), depot::shown(.name))]
    UnknownVersion {
        /// The stored event's id.
        id: ObjectId,
        /// Its partition.
        partition: String,
        /// Its 1-based position there.
        position: u64,
        /// The name of the event met (the stored one, or one an upcaster produced).
        name: String,
        /// Its version.
        version: u32,
        /// The newest version of that name the domain knows.
        newest: u32,
    },
    /// The domain knows a newer version of the event but has no step from the event's.
    #[error("event {id} ({} v{version}, event {position} of '{}') cannot be upcast: the domain's newest {} is v{newest} but it has no upcaster from v{version}", depot::shown(.name), depot::shown(.partition), depot::shown(.name))]
    NoUpcaster {
        /// The stored event's id.
        id: ObjectId,
        /// Its partition.
        partition: String,
        /// Its 1-based position there.
        position: u64,
        /// The name of the event met.
        name: String,
        /// Its version.
        version: u32,
        /// The newest version of that name the domain knows.
        newest: u32,
    },
    /// A step failed.
    #[error("event {id} ({} v{version}, event {position} of '{}'): upcaster {step} failed: {reason}", depot::shown(.name), depot::shown(.partition))]
    StepFailed {
        /// The stored event's id.
        id: ObjectId,
        /// Its partition.
        partition: String,
        /// Its 1-based position there.
        position: u64,
        /// The name of the event the step was given.
        name: Box<str>,
        /// Its version (the step's `from`).
        version: u32,
        /// The step: `<name> v<from>->v<to> (<what it is>)`.
        step: Box<str>,
        /// What went wrong.
        reason: Box<str>,
    },
}

/// One step of a chain, with its versions.
#[derive(Clone, Debug)]
struct Step {
    from: u32,
    to: u32,
    upcaster: Upcaster,
}

/// The upcasters of a domain: per event name, a gap-free chain of steps from v1, and the newest
/// version of every name (the chain's end, or a declared version).
#[derive(Clone, Default, Debug)]
pub struct Upcasters {
    chains: BTreeMap<String, Vec<Step>>,
    /// Names whose newest version is declared without a chain (reached by a rename).
    declared: BTreeMap<String, u32>,
    fingerprint: Option<String>,
    /// Whether a chain has an exec step (whose results are cached).
    has_exec: bool,
    /// Shared by clones; replaced whenever a step or version is declared.
    exec_cache: Arc<ExecCache>,
}

/// The most stored events whose upcast results are kept in memory (then it starts afresh).
const EXEC_CACHE_ENTRIES: usize = 100_000;

/// What chains with an exec step made of stored events, in memory: a process per event is
/// expensive, and a stored event (named by its bytes' hash) with the same input always upcasts
/// the same under the same upcasters (an upcaster is a function of its input). Keyed by the
/// stored event's id and partition (an exec step's input names it), checked against the input.
#[derive(Default)]
struct ExecCache {
    entries: std::sync::Mutex<CacheMap>,
}

type CacheMap = std::collections::HashMap<(ObjectId, String), (UpcastEvent, Vec<UpcastEvent>)>;

impl fmt::Debug for ExecCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecCache").finish_non_exhaustive()
    }
}

impl ExecCache {
    fn get(&self, key: &(ObjectId, String), input: &UpcastEvent) -> Option<Vec<UpcastEvent>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(cached, _)| cached == input)
            .map(|(_, out)| out.clone())
    }

    fn put(&self, key: (ObjectId, String), input: UpcastEvent, out: &[UpcastEvent]) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= EXEC_CACHE_ENTRIES {
            entries.clear();
        }
        entries.insert(key, (input, out.to_vec()));
    }
}

/// The deepest a chain of results may go (every step raises the version, so a chain ends; this
/// bounds a pathological manifest).
const MAX_DEPTH: usize = 256;

impl Upcasters {
    /// No upcasters: every event is at version 1.
    pub fn new() -> Upcasters {
        Upcasters::default()
    }

    /// True when no upcaster or version is declared.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.declared.is_empty()
    }

    /// Adds the step `event` v`from` → v`from + 1`. Steps are added in order: `from` must be
    /// the chain's end (1 for the first step).
    pub fn add(&mut self, event: &str, from: u32, upcaster: Upcaster) -> Result<(), UpcasterError> {
        let error = |reason: String| UpcasterError {
            event: event.to_owned(),
            from,
            reason,
        };
        EventName::new(event).map_err(|e| error(e.to_string()))?;
        upcaster.check().map_err(error)?;
        let chain = self.chains.get(event);
        let end = chain.and_then(|c| c.last()).map_or(1, |s| s.to);
        if from != end {
            return Err(error(if chain.is_none() {
                format!("the first step must be from v1, not v{from}")
            } else {
                format!("the chain ends at v{end}: the next step must be from v{end}")
            }));
        }
        let Some(to) = from.checked_add(1) else {
            return Err(error("no version after 2^32-1".to_owned()));
        };
        if let Some(&declared) = self.declared.get(event) {
            return Err(error(format!(
                "the newest version of '{event}' is already declared (v{declared}): declare it after its upcasters"
            )));
        }
        self.has_exec |= matches!(upcaster, Upcaster::Exec(_));
        self.chains
            .entry(event.to_owned())
            .or_default()
            .push(Step { from, to, upcaster });
        self.exec_cache = Arc::default();
        self.fingerprint = Some(self.compute_fingerprint());
        Ok(())
    }

    /// Declares `version` as the newest of `event` (for a name upcasters rename into, or a
    /// name whose older versions are never to be read). With a chain, it must be its end.
    pub fn declare_version(&mut self, event: &str, version: u32) -> Result<(), UpcasterError> {
        let error = |reason: String| UpcasterError {
            event: event.to_owned(),
            from: version,
            reason,
        };
        EventName::new(event).map_err(|e| error(e.to_string()))?;
        if version == 0 {
            return Err(error("versions start at 1".to_owned()));
        }
        if let Some(end) = self.chains.get(event).and_then(|c| c.last()).map(|s| s.to) {
            if end != version {
                return Err(error(format!(
                    "its upcasters end at v{end}, not at the declared v{version}"
                )));
            }
        }
        self.declared.insert(event.to_owned(), version);
        self.exec_cache = Arc::default();
        self.fingerprint = Some(self.compute_fingerprint());
        Ok(())
    }

    /// The newest version of `event` the domain knows (1 for a name with no upcasters).
    pub fn current(&self, event: &str) -> u32 {
        self.chains
            .get(event)
            .and_then(|c| c.last())
            .map(|s| s.to)
            .or_else(|| self.declared.get(event).copied())
            .unwrap_or(1)
    }

    /// Every name with an upcaster chain or a declared version, and its newest version.
    pub fn versions(&self) -> BTreeMap<String, u32> {
        let mut out = self.declared.clone();
        for name in self.chains.keys() {
            out.insert(name.clone(), self.current(name));
        }
        out
    }

    /// A hash of every chain and declared version (exec steps: with their files' bytes), for
    /// keying snapshots; `None` when there are none (snapshot keys stay as before upcasting).
    pub fn fingerprint(&self) -> Option<&str> {
        self.fingerprint.as_deref()
    }

    fn compute_fingerprint(&self) -> String {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        hash.update(b"retro upcasters 1\0");
        for (name, chain) in &self.chains {
            hash.update(name.as_bytes());
            hash.update([0]);
            for step in chain {
                hash.update(step.from.to_be_bytes());
                step.upcaster.fingerprint(&mut hash);
            }
        }
        hash.update(b"\0declared\0");
        for (name, version) in &self.declared {
            hash.update(name.as_bytes());
            hash.update([0]);
            hash.update(version.to_be_bytes());
        }
        hex::encode(&hash.finalize()[..8])
    }

    /// The events stored event `id` (`name`/`version`/`data`, event `position` of `partition`)
    /// is read as today: itself when at its name's newest version, else what its chain makes
    /// of it. Never a silent pass-through: a version newer than known, or one without a step,
    /// or a failing step, is an error. With exec steps, successful results are kept in memory
    /// by stored event (id and partition, checked against `event`): an exec step runs once per
    /// stored event per process, not once per read.
    pub fn upcast(
        &self,
        id: ObjectId,
        partition: &PartitionName,
        position: u64,
        event: UpcastEvent,
    ) -> Result<Vec<UpcastEvent>, UpcastError> {
        if !self.has_exec || event.version == self.current(&event.name) {
            let mut out = Vec::with_capacity(1);
            self.upcast_into(id, partition, position, event, 0, &mut out)?;
            return Ok(out);
        }
        let key = (id, partition.to_string());
        if let Some(out) = self.exec_cache.get(&key, &event) {
            return Ok(out);
        }
        let mut out = Vec::with_capacity(1);
        self.upcast_into(id, partition, position, event.clone(), 0, &mut out)?;
        self.exec_cache.put(key, event, &out);
        Ok(out)
    }

    fn upcast_into(
        &self,
        id: ObjectId,
        partition: &PartitionName,
        position: u64,
        event: UpcastEvent,
        depth: usize,
        out: &mut Vec<UpcastEvent>,
    ) -> Result<(), UpcastError> {
        let newest = self.current(&event.name);
        if event.version == newest {
            out.push(event);
            return Ok(());
        }
        if event.version > newest {
            return Err(UpcastError::UnknownVersion {
                id,
                partition: partition.to_string(),
                position,
                name: event.name,
                version: event.version,
                newest,
            });
        }
        let step = self
            .chains
            .get(&event.name)
            .and_then(|chain| chain.iter().find(|s| s.from == event.version));
        let Some(step) = step else {
            return Err(UpcastError::NoUpcaster {
                id,
                partition: partition.to_string(),
                position,
                name: event.name,
                version: event.version,
                newest,
            });
        };
        let failed = |reason: String| UpcastError::StepFailed {
            id,
            partition: partition.to_string(),
            position,
            name: event.name.as_str().into(),
            version: event.version,
            step: format!(
                "{} v{}->v{} ({})",
                event.name,
                step.from,
                step.to,
                step.upcaster.describe()
            )
            .into(),
            reason: reason.into(),
        };
        if depth >= MAX_DEPTH {
            return Err(failed(format!("more than {MAX_DEPTH} steps deep")));
        }
        let version_of = |name: &str| {
            if name == event.name {
                step.to
            } else {
                self.current(name)
            }
        };
        let results = step
            .upcaster
            .run(&event, partition, &version_of)
            .map_err(failed)?;
        for result in results {
            if result.name == event.name && result.version <= event.version {
                return Err(failed(format!(
                    "it produced {} v{}, not newer than its input",
                    result.name, result.version
                )));
            }
            if result.version == 0 {
                return Err(failed(format!("it produced {} v0", result.name)));
            }
            let known = self.current(&result.name);
            if result.version > known {
                return Err(failed(format!(
                    "it produced {} v{}, newer than the domain's newest {} (v{known})",
                    result.name, result.version, result.name
                )));
            }
            self.upcast_into(id, partition, position, result, depth + 1, out)?;
        }
        Ok(())
    }

    /// A partition's stored events as the domain reads them today, for folding.
    pub fn recorded(
        &self,
        records: &[depot::EventRecord],
    ) -> Result<Vec<RecordedEvent>, UpcastError> {
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            let plain = RecordedEvent::from_record(record);
            // At its name's newest version already: nothing to do (the common case).
            if record.event.version() == self.current(&plain.name) {
                out.push(plain);
                continue;
            }
            let upcast = self.upcast(
                record.id,
                &record.partition,
                record.version,
                UpcastEvent {
                    name: plain.name.clone(),
                    version: record.event.version(),
                    data: plain.data.clone(),
                },
            )?;
            for event in upcast {
                out.push(RecordedEvent {
                    name: event.name,
                    data: event.data,
                    schema_version: event.version,
                    ..plain.clone()
                });
            }
        }
        Ok(out)
    }
}

/// An exec step of a JSON manifest: the program resolved against the manifest's directory
/// (when relative with a `/`), which is also its working directory.
pub(crate) fn exec_step(
    program: Vec<String>,
    dir: &Path,
    timeout_ms: u64,
    max_output: u64,
) -> Upcaster {
    let mut program = program;
    if program
        .first()
        .is_some_and(|p| p.contains('/') && Path::new(p).is_relative())
    {
        program[0] = dir.join(&program[0]).display().to_string();
    }
    Upcaster::Exec(
        ExecUpcaster::new(program, dir)
            .with_timeout(Duration::from_millis(timeout_ms))
            .with_max_output(max_output),
    )
}
