//! Given/when/then tests for domains: the events a partition already holds, one command, and
//! what must come of it, checked against any [`Manifest`] (Rust runners and exec handlers alike)
//! over a fresh in-memory depot ([`Depot::in_memory`]) through the real [`Engine`] pipeline.
//!
//! ```
//! use engine::example::bank_manifest;
//! use engine::testing::{command, event, TestDomain};
//! use serde_json::json;
//!
//! let bank = TestDomain::new(bank_manifest()?);
//! bank.given([event("accounts/a", "AccountOpened", json!({"owner": "A"}))])
//!     .when(command("accounts/a", "deposit", json!({"amount": 50})))
//!     .then_events([event("accounts/a", "Deposited", json!({"amount": 50}))]);
//! bank.given([event("accounts/a", "AccountOpened", json!({"owner": "A"}))])
//!     .when(command("accounts/a", "withdraw", json!({"amount": 1})))
//!     .then_rejected("insufficient_funds");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The `then_*` methods panic with a readable report (this is a test helper): for events, which
//! event differs, which field, and the two values, as a JSON diff. [`Scenario::check`] and
//! [`TestDomain::check`] return the same report as a [`Mismatch`] instead, for callers that go
//! on (`retro test` runs a spec file of cases and prints a TAP report).
//!
//! What a case sees and compares:
//!
//! - The given events are committed in one checkpoint, in order (session `given`). A command's
//!   handler sees its partition's given events as its history.
//! - The command runs in the session named by [`When::in_session`], which is started first (its
//!   `SessionStarted` is written to `session/<id>` with the given events); without one, in session
//!   `test`, which was never started (enough for commands that do not require a live session).
//! - New aggregates (a path naming only a kind) get the ids `new-1`, `new-2`, … in order.
//! - The emitted events are compared as the checkpoint records them: partitions in lexicographic
//!   order, each partition's events in the order emitted (the depot keeps no order across
//!   partitions). The expected events are put in the same order (a stable sort by partition)
//!   before comparing, so the order across partitions in a case does not matter, the order within
//!   one does. Data compares as JSON values (key order does not matter; `1` and `1.0` differ).
//! - A command that emits nothing matches `then_events([])`.
//! - `then_rejected(code)` matches a domain rejection ([`ApplyError::Rejected`]) with that code;
//!   `then_error(text)` matches any other failure whose message (with its causes) contains `text`:
//!   a handler that crashed or printed garbage, an unknown command, a missing session.
//!
//! The spec format of `retro test` (one JSON case a line) is [`parse_spec`]'s; see
//! docs/handlers.md.

use std::error::Error as StdError;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use depot::{Base, CommitRequest, Depot, Event, EventName, PartitionName};

use crate::command::{duplicate_key, Command, CommandError};
use crate::domain::Manifest;
use crate::engine::{ApplyError, Engine, SESSION_STARTED};

/// The session the given events are committed in.
pub const GIVEN_SESSION: &str = "given";
/// The session a command runs in when its case names none (never started).
pub const DEFAULT_SESSION: &str = "test";

/// One event: its partition, its name and its JSON data.
#[derive(Debug, Clone, PartialEq)]
pub struct TestEvent {
    /// The partition (`accounts/1`).
    pub partition: String,
    /// The event's name (`AccountOpened`).
    pub name: String,
    /// Its data.
    pub data: Value,
}

impl TestEvent {
    /// The event as one compact JSON object `{"partition","name","data"}`.
    pub fn to_json(&self) -> Value {
        json!({"partition": self.partition, "name": self.name, "data": self.data})
    }
}

impl fmt::Display for TestEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

/// An event for [`TestDomain::given`] or [`Scenario::then_events`].
pub fn event(partition: &str, name: &str, data: Value) -> TestEvent {
    TestEvent {
        partition: partition.to_owned(),
        name: name.to_owned(),
        data,
    }
}

/// The command of a case: path, name, params and, optionally, a (started) session.
#[derive(Debug, Clone, PartialEq)]
pub struct When {
    /// The aggregate's path (`accounts/1`, or a kind alone for a new aggregate).
    pub path: String,
    /// The command's name.
    pub name: String,
    /// Its parameters: a JSON object (or `null` for none).
    pub params: Value,
    /// The session to run it in, started before the command; `None`: [`DEFAULT_SESSION`].
    pub session: Option<String>,
}

impl When {
    /// Runs the command in session `id`, started before it.
    pub fn in_session(mut self, id: &str) -> When {
        self.session = Some(id.to_owned());
        self
    }

    /// The command, validated as [`Command::parse`] validates a payload.
    fn to_command(&self) -> Result<Command, CommandError> {
        let payload = json!({"path": self.path, "name": self.name, "params": self.params});
        Command::parse(payload.to_string().as_bytes())
    }
}

/// A command for [`Given::when`].
pub fn command(path: &str, name: &str, params: Value) -> When {
    When {
        path: path.to_owned(),
        name: name.to_owned(),
        params,
        session: None,
    }
}

/// What a case expects of its command.
#[derive(Debug, Clone, PartialEq)]
pub enum Then {
    /// These events, in the checkpoint's order (see the module docs).
    Events(Vec<TestEvent>),
    /// A domain rejection with this code.
    Rejected(String),
    /// Any other failure, whose message contains this text.
    Error(String),
}

impl fmt::Display for Then {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Then::Events(events) => write!(f, "{} event(s)", events.len()),
            Then::Rejected(code) => write!(f, "a rejection '{}'", depot::shown(code)),
            Then::Error(text) => write!(f, "an error containing '{}'", depot::shown(text)),
        }
    }
}

/// One case: a name, the given events, the command, the expectation.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// What the case checks, for people.
    pub name: String,
    /// The events already in the depot.
    pub given: Vec<TestEvent>,
    /// The command.
    pub when: When,
    /// What must come of it.
    pub then: Then,
}

/// Why a case is not a valid case (before anything runs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CaseError {
    /// Not JSON.
    #[error("not valid JSON: {0}")]
    NotJson(String),
    /// A key given twice in one object.
    #[error("the key \"{0}\" is given twice (a duplicate key is ambiguous)")]
    DuplicateKey(String),
    /// A key the format does not have.
    #[error("unknown key \"{key}\" (expected {expected})")]
    UnknownKey {
        /// Its path (`when.sesion`).
        key: String,
        /// The keys allowed there.
        expected: &'static str,
    },
    /// The line is JSON, but not an object.
    #[error(
        "a case must be a JSON object like {{\"name\",\"given\",\"when\",\"then\"}}, found {0}"
    )]
    NotAnObject(&'static str),
    /// A required key is missing.
    #[error("missing \"{0}\"")]
    Missing(String),
    /// A value of the wrong type.
    #[error("\"{key}\" must be {expected}, found {found}")]
    WrongType {
        /// Its path.
        key: String,
        /// What it must be.
        expected: &'static str,
        /// What it is.
        found: &'static str,
    },
    /// A bad partition name.
    #[error("\"{key}\": '{value}' is not a valid partition name: {reason}")]
    BadPartition {
        /// Its path.
        key: String,
        /// The name (escaped).
        value: String,
        /// Why.
        reason: String,
    },
    /// A bad event name.
    #[error("\"{key}\": '{value}' is not a valid event name: {reason}")]
    BadEventName {
        /// Its path.
        key: String,
        /// The name (escaped).
        value: String,
        /// Why.
        reason: String,
    },
    /// A string that must not be empty (or only whitespace) is: a case's name, a rejection code,
    /// an error's text (an empty text would match any failure).
    #[error("\"{0}\" must not be empty")]
    Empty(String),
    /// `then` must hold exactly one of `events`, `rejected`, `error`.
    #[error("\"then\" must hold exactly one of \"events\", \"rejected\" or \"error\", found {0}")]
    Then(usize),
    /// The command does not parse as a command.
    #[error("\"when\" is not a valid command")]
    Command(#[source] CommandError),
}

/// Why a spec file was refused: the line (from 1, counting every line) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec line {line} is not a valid case")]
pub struct SpecError {
    /// The line, from 1.
    pub line: usize,
    /// Why.
    #[source]
    pub error: CaseError,
}

/// An object with only `allowed` keys, else the error naming the first other one.
fn object<'v>(
    value: &'v Value,
    key: &str,
    allowed: &[&str],
    expected: &'static str,
) -> Result<&'v Map<String, Value>, CaseError> {
    let Value::Object(map) = value else {
        if key.is_empty() {
            return Err(CaseError::NotAnObject(crate::command::kind_of(value)));
        }
        return Err(CaseError::WrongType {
            key: key.to_owned(),
            expected: "an object",
            found: crate::command::kind_of(value),
        });
    };
    if let Some(other) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(CaseError::UnknownKey {
            key: depot::shown(&join(key, other)),
            expected,
        });
    }
    Ok(map)
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn string<'v>(map: &'v Map<String, Value>, parent: &str, key: &str) -> Result<&'v str, CaseError> {
    match map.get(key) {
        None => Err(CaseError::Missing(join(parent, key))),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(CaseError::WrongType {
            key: join(parent, key),
            expected: "a string",
            found: crate::command::kind_of(other),
        }),
    }
}

fn partition_name(key: &str, value: &str) -> Result<PartitionName, CaseError> {
    PartitionName::new(value).map_err(|e| CaseError::BadPartition {
        key: key.to_owned(),
        value: depot::shown(value),
        reason: e.to_string(),
    })
}

fn event_name(key: &str, value: &str) -> Result<EventName, CaseError> {
    EventName::new(value).map_err(|e| CaseError::BadEventName {
        key: key.to_owned(),
        value: depot::shown(value),
        reason: e.to_string(),
    })
}

fn non_empty<'v>(
    map: &'v Map<String, Value>,
    parent: &str,
    key: &str,
) -> Result<&'v str, CaseError> {
    let text = string(map, parent, key)?;
    if text.trim().is_empty() {
        return Err(CaseError::Empty(join(parent, key)));
    }
    Ok(text)
}

fn events(value: &Value, key: &str) -> Result<Vec<TestEvent>, CaseError> {
    let Value::Array(items) = value else {
        return Err(CaseError::WrongType {
            key: key.to_owned(),
            expected: "an array of events",
            found: crate::command::kind_of(value),
        });
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("{key}[{i}]");
            let map = object(
                item,
                &at,
                &["partition", "name", "data"],
                "partition, name, data",
            )?;
            let partition = string(map, &at, "partition")?;
            partition_name(&join(&at, "partition"), partition)?;
            let name = string(map, &at, "name")?;
            event_name(&join(&at, "name"), name)?;
            let data = map
                .get("data")
                .ok_or_else(|| CaseError::Missing(join(&at, "data")))?;
            Ok(event(partition, name, data.clone()))
        })
        .collect()
}

impl Case {
    /// Parses one case: `{"name", "given"?, "when": {"path","name","params"?,"session"?},
    /// "then": {"events": […]} | {"rejected": "code"} | {"error": "text"}}`. Strict: unknown and
    /// duplicate keys are refused at any depth, names are validated, and `when` must be a valid
    /// command.
    pub fn parse(line: &[u8]) -> Result<Case, CaseError> {
        let value: Value =
            serde_json::from_slice(line).map_err(|e| CaseError::NotJson(e.to_string()))?;
        if let Some(path) = duplicate_key(line) {
            return Err(CaseError::DuplicateKey(depot::shown(&path)));
        }
        let top = object(
            &value,
            "",
            &["name", "given", "when", "then"],
            "name, given, when, then",
        )?;
        let name = non_empty(top, "", "name")?;
        let given = match top.get("given") {
            None => Vec::new(),
            Some(value) => events(value, "given")?,
        };
        let when_value = top
            .get("when")
            .ok_or_else(|| CaseError::Missing("when".to_owned()))?;
        let when_map = object(
            when_value,
            "when",
            &["path", "name", "params", "session"],
            "path, name, params, session",
        )?;
        let session = match when_map.get("session") {
            None => None,
            Some(_) => {
                let id = string(when_map, "when", "session")?;
                partition_name("when.session", &format!("session/{id}"))?;
                Some(id.to_owned())
            }
        };
        let mut payload = when_map.clone();
        payload.remove("session");
        let parsed = Command::parse(Value::Object(payload).to_string().as_bytes())
            .map_err(CaseError::Command)?;
        let when = When {
            path: parsed.path().to_owned(),
            name: parsed.name().to_owned(),
            params: Value::Object(parsed.params().clone()),
            session,
        };
        let then_value = top
            .get("then")
            .ok_or_else(|| CaseError::Missing("then".to_owned()))?;
        let then_map = object(
            then_value,
            "then",
            &["events", "rejected", "error"],
            "events, rejected or error",
        )?;
        if then_map.len() != 1 {
            return Err(CaseError::Then(then_map.len()));
        }
        let then = if let Some(value) = then_map.get("events") {
            Then::Events(events(value, "then.events")?)
        } else if then_map.contains_key("rejected") {
            Then::Rejected(non_empty(then_map, "then", "rejected")?.to_owned())
        } else {
            Then::Error(non_empty(then_map, "then", "error")?.to_owned())
        };
        Ok(Case {
            name: name.to_owned(),
            given,
            when,
            then,
        })
    }

    /// The case as one compact JSON line, in the form [`Case::parse`] reads.
    pub fn to_line(&self) -> String {
        let events = |events: &[TestEvent]| -> Value {
            Value::Array(events.iter().map(TestEvent::to_json).collect())
        };
        let mut when =
            json!({"path": self.when.path, "name": self.when.name, "params": self.when.params});
        if let Some(session) = &self.when.session {
            when["session"] = Value::String(session.clone());
        }
        let then = match &self.then {
            Then::Events(list) => json!({ "events": events(list) }),
            Then::Rejected(code) => json!({ "rejected": code }),
            Then::Error(text) => json!({ "error": text }),
        };
        json!({"name": self.name, "given": events(&self.given), "when": when, "then": then})
            .to_string()
    }
}

/// Parses a spec: one case a line. Blank lines (only ASCII whitespace) and comment lines (whose
/// first other character is `#`) are skipped; a `\r\n` line end is fine. The first line that is
/// not a valid case (or not UTF-8) is the error, numbered from 1 counting every line.
pub fn parse_spec(text: &[u8]) -> Result<Vec<Case>, SpecError> {
    let mut cases = Vec::new();
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let trimmed = line.trim_ascii_start();
        if trimmed.is_empty() || trimmed.starts_with(b"#") {
            continue;
        }
        let case = Case::parse(line).map_err(|error| SpecError { line: i + 1, error })?;
        cases.push(case);
    }
    Ok(cases)
}

/// What a command did.
#[derive(Debug)]
pub enum Outcome {
    /// It emitted these events (none: it had nothing to write).
    Events(Vec<TestEvent>),
    /// The domain rejected it.
    Rejected {
        /// The rejection's code.
        code: String,
        /// Its message.
        message: String,
    },
    /// It failed otherwise (its handler broke, the command is unknown, a session is missing …).
    Failed(ApplyError),
}

/// One field that differs between an expected and an emitted event.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldDiff {
    /// The field's JSON path (`events[1].data.amount`).
    pub path: String,
    /// The expected value; `None`: not expected (the event or key is extra).
    pub expected: Option<Value>,
    /// The emitted value; `None`: missing.
    pub actual: Option<Value>,
}

impl fmt::Display for FieldDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<Value>| match v {
            Some(v) => v.to_string(),
            None => "(none)".to_owned(),
        };
        write!(
            f,
            "{}: expected {}, actual {}",
            self.path,
            show(&self.expected),
            show(&self.actual)
        )
    }
}

/// Expected and emitted events that differ: the first event that does, its fields, and both
/// lists.
#[derive(Debug, Clone, PartialEq)]
pub struct EventsDiff {
    /// The first differing position (in the checkpoint's order).
    pub index: usize,
    /// The fields that differ there (for an event on one side only: the whole event).
    pub fields: Vec<FieldDiff>,
    /// The expected events, in the checkpoint's order.
    pub expected: Vec<TestEvent>,
    /// The emitted events.
    pub actual: Vec<TestEvent>,
}

impl fmt::Display for EventsDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "emitted events differ from the expected ones at events[{}] ({} expected, {} emitted):",
            self.index,
            self.expected.len(),
            self.actual.len()
        )?;
        for field in &self.fields {
            writeln!(f, "  {field}")?;
        }
        writeln!(f, "expected:")?;
        list(f, &self.expected)?;
        writeln!(f, "actual:")?;
        list(f, &self.actual)
    }
}

fn list(f: &mut fmt::Formatter<'_>, events: &[TestEvent]) -> fmt::Result {
    if events.is_empty() {
        return writeln!(f, "  (no events)");
    }
    for (i, event) in events.iter().enumerate() {
        writeln!(f, "  events[{i}] {event}")?;
    }
    Ok(())
}

/// Why a case did not pass.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Mismatch {
    /// Events were expected and other events were emitted.
    #[error("{0}")]
    Events(EventsDiff),
    /// Events were emitted, and a rejection or an error was expected.
    #[error("expected {expected}, but the command emitted {} event(s):\n{}", .events.len(), EventList(.events))]
    Emitted {
        /// The expectation.
        expected: Then,
        /// What was emitted.
        events: Vec<TestEvent>,
    },
    /// The domain rejected the command, and something else was expected (another code, events, an
    /// error).
    #[error("expected {expected}, but the command was rejected: {code}: {message}")]
    Rejected {
        /// The expectation.
        expected: Then,
        /// The rejection's code.
        code: String,
        /// Its message.
        message: String,
    },
    /// The command failed, and something else was expected (events, a rejection, another error).
    #[error("expected {expected}, but the command failed")]
    Failed {
        /// The expectation.
        expected: Then,
        /// The failure.
        #[source]
        error: Box<ApplyError>,
    },
    /// The case is not valid (a bad name, a command that does not parse).
    #[error("the case is invalid")]
    Invalid(#[source] CaseError),
    /// The in-memory depot failed (writing the given events, or reading the emitted ones).
    #[error("the test depot failed")]
    Depot(#[source] depot::Error),
}

struct EventList<'a>(&'a [TestEvent]);

impl fmt::Display for EventList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        list(f, self.0)
    }
}

impl Mismatch {
    /// The mismatch with its causes, one `: `-separated chain after the first line (what the
    /// `then_*` methods panic with and `retro test` prints).
    pub fn report(&self) -> String {
        let mut out = self.to_string();
        let mut source = self.source();
        while let Some(cause) = source {
            out.push_str(": ");
            out.push_str(&cause.to_string());
            source = cause.source();
        }
        out.trim_end().to_owned()
    }
}

/// The JSON paths where `expected` and `actual` differ, under `path`.
fn value_diff(path: &str, expected: &Value, actual: &Value, out: &mut Vec<FieldDiff>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (key, ev) in e {
                let at = format!("{path}.{key}");
                match a.get(key) {
                    Some(av) => value_diff(&at, ev, av, out),
                    None => out.push(FieldDiff {
                        path: at,
                        expected: Some(ev.clone()),
                        actual: None,
                    }),
                }
            }
            for (key, av) in a {
                if !e.contains_key(key) {
                    out.push(FieldDiff {
                        path: format!("{path}.{key}"),
                        expected: None,
                        actual: Some(av.clone()),
                    });
                }
            }
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                value_diff(&format!("{path}[{i}]"), ev, av, out);
            }
        }
        (e, a) if e != a => out.push(FieldDiff {
            path: path.to_owned(),
            expected: Some(e.clone()),
            actual: Some(a.clone()),
        }),
        _ => {}
    }
}

/// The expected events in the checkpoint's order: a stable sort by partition.
fn in_checkpoint_order(mut events: Vec<TestEvent>) -> Vec<TestEvent> {
    events.sort_by(|a, b| a.partition.cmp(&b.partition));
    events
}

/// Compares expected and emitted events (both in the checkpoint's order).
pub fn diff_events(expected: &[TestEvent], actual: &[TestEvent]) -> Option<EventsDiff> {
    let longest = expected.len().max(actual.len());
    for index in 0..longest {
        let path = format!("events[{index}]");
        let mut fields = Vec::new();
        match (expected.get(index), actual.get(index)) {
            (Some(e), Some(a)) => value_diff(&path, &e.to_json(), &a.to_json(), &mut fields),
            (e, a) => fields.push(FieldDiff {
                path,
                expected: e.map(TestEvent::to_json),
                actual: a.map(TestEvent::to_json),
            }),
        }
        if !fields.is_empty() {
            return Some(EventsDiff {
                index,
                fields,
                expected: expected.to_vec(),
                actual: actual.to_vec(),
            });
        }
    }
    None
}

/// Whether `outcome` is what `then` expects.
pub fn compare(then: &Then, outcome: Outcome) -> Result<(), Mismatch> {
    match (then, outcome) {
        (Then::Events(expected), Outcome::Events(actual)) => {
            let expected = in_checkpoint_order(expected.clone());
            match diff_events(&expected, &actual) {
                None => Ok(()),
                Some(diff) => Err(Mismatch::Events(diff)),
            }
        }
        (Then::Rejected(want), Outcome::Rejected { code, .. }) if *want == code => Ok(()),
        (Then::Error(text), Outcome::Failed(error)) if chain(&error).contains(text.as_str()) => {
            Ok(())
        }
        (expected, Outcome::Events(events)) => Err(Mismatch::Emitted {
            expected: expected.clone(),
            events,
        }),
        (expected, Outcome::Rejected { code, message }) => Err(Mismatch::Rejected {
            expected: expected.clone(),
            code,
            message,
        }),
        (expected, Outcome::Failed(error)) => Err(Mismatch::Failed {
            expected: expected.clone(),
            error: Box::new(error),
        }),
    }
}

/// An error and its causes, `: `-separated.
fn chain(error: &dyn StdError) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// A domain under test: a manifest, and a fresh in-memory depot for every case.
#[derive(Clone)]
pub struct TestDomain {
    manifest: Manifest,
}

impl TestDomain {
    /// Tests the commands of `manifest`.
    pub fn new(manifest: Manifest) -> TestDomain {
        TestDomain { manifest }
    }

    /// Starts a case with the events the depot already holds.
    pub fn given(&self, events: impl IntoIterator<Item = TestEvent>) -> Given<'_> {
        Given {
            domain: self,
            events: events.into_iter().collect(),
        }
    }

    /// Checks a parsed case (as [`parse_spec`] returns them).
    pub fn check(&self, case: &Case) -> Result<(), Mismatch> {
        self.given(case.given.iter().cloned())
            .when(case.when.clone())
            .check(&case.then)
    }

    /// Runs `when` after `given` in a fresh in-memory depot and says what happened.
    pub fn outcome(&self, given: &[TestEvent], when: &When) -> Result<Outcome, Mismatch> {
        let command = when
            .to_command()
            .map_err(|e| Mismatch::Invalid(CaseError::Command(e)))?;
        let depot = Arc::new(Depot::in_memory().map_err(Mismatch::Depot)?);
        write_given(&depot, given, when.session.as_deref())?;
        let next = Arc::new(AtomicU64::new(1));
        let engine = Engine::new(depot.clone(), self.manifest.clone())
            .with_id_fn(move || format!("new-{}", next.fetch_add(1, Ordering::Relaxed)));
        let session = when.session.as_deref().unwrap_or(DEFAULT_SESSION);
        let applied = match engine.apply_command(session, command) {
            Ok(applied) => applied,
            Err(ApplyError::NothingToWrite { .. }) => return Ok(Outcome::Events(Vec::new())),
            Err(ApplyError::Rejected { error, .. }) => {
                return Ok(Outcome::Rejected {
                    code: error.code,
                    message: error.message,
                })
            }
            Err(error) => return Ok(Outcome::Failed(error)),
        };
        // The checkpoint's events, as it records them: partitions sorted, each in emitted order.
        let mut emitted = Vec::with_capacity(applied.events);
        for partition in &applied.partitions {
            let name = partition_name("partition", partition).map_err(Mismatch::Invalid)?;
            let records = depot.partition_events(&name).map_err(Mismatch::Depot)?;
            for record in records
                .into_iter()
                .filter(|r| r.checkpoint == applied.checkpoint)
            {
                let data = serde_json::from_slice(record.event.data()).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(record.event.data()).into_owned())
                });
                emitted.push(event(partition, record.event.name().as_str(), data));
            }
        }
        Ok(Outcome::Events(emitted))
    }
}

/// Commits the given events (and the session's start) in one checkpoint.
fn write_given(depot: &Depot, given: &[TestEvent], session: Option<&str>) -> Result<(), Mismatch> {
    let mut events = Vec::with_capacity(given.len() + 1);
    for (i, e) in given.iter().enumerate() {
        let partition = partition_name(&format!("given[{i}].partition"), &e.partition)
            .map_err(Mismatch::Invalid)?;
        let name = event_name(&format!("given[{i}].name"), &e.name).map_err(Mismatch::Invalid)?;
        events.push((partition, Event::new(name, e.data.to_string())));
    }
    if let Some(id) = session {
        let partition =
            partition_name("when.session", &format!("session/{id}")).map_err(Mismatch::Invalid)?;
        let name = event_name("when.session", SESSION_STARTED).map_err(Mismatch::Invalid)?;
        events.push((
            partition,
            Event::new(name, json!({ "session": id }).to_string()),
        ));
    }
    if events.is_empty() {
        return Ok(());
    }
    let message = json!({"path": "_", "name": "given", "params": {}}).to_string();
    let mut request = CommitRequest::new(None, events, GIVEN_SESSION, message);
    request.base = Base::Tip;
    request.reflog_message = "given".to_owned();
    depot.commit(request).map_err(Mismatch::Depot)?;
    Ok(())
}

/// A case with its given events; add the command.
pub struct Given<'d> {
    domain: &'d TestDomain,
    events: Vec<TestEvent>,
}

impl<'d> Given<'d> {
    /// The command to run.
    pub fn when(self, command: When) -> Scenario<'d> {
        Scenario {
            domain: self.domain,
            given: self.events,
            when: command,
        }
    }
}

/// A case with its given events and command; check what comes of it.
pub struct Scenario<'d> {
    domain: &'d TestDomain,
    given: Vec<TestEvent>,
    when: When,
}

impl Scenario<'_> {
    /// Whether the command does what `then` expects.
    pub fn check(&self, then: &Then) -> Result<(), Mismatch> {
        let outcome = self.domain.outcome(&self.given, &self.when)?;
        compare(then, outcome)
    }

    /// Runs the command and returns what happened.
    pub fn outcome(&self) -> Result<Outcome, Mismatch> {
        self.domain.outcome(&self.given, &self.when)
    }

    #[track_caller]
    fn assert(&self, then: Then) {
        if let Err(mismatch) = self.check(&then) {
            panic!(
                "{} {}: {}",
                self.when.path,
                self.when.name,
                mismatch.report()
            );
        }
    }

    /// Panics unless the command emits these events (see the module docs for the order).
    #[track_caller]
    pub fn then_events(self, events: impl IntoIterator<Item = TestEvent>) {
        self.assert(Then::Events(events.into_iter().collect()));
    }

    /// Panics unless the domain rejects the command with `code`.
    #[track_caller]
    pub fn then_rejected(self, code: &str) {
        self.assert(Then::Rejected(code.to_owned()));
    }

    /// Panics unless the command fails otherwise (its handler broke …) with a message containing
    /// `text`.
    #[track_caller]
    pub fn then_error(self, text: &str) {
        self.assert(Then::Error(text.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"name":"deposit","given":[{"partition":"accounts/1","name":"AccountOpened","data":{"owner":"A"}}],"when":{"path":"accounts/1","name":"deposit","params":{"amount":5}},"then":{"events":[{"partition":"accounts/1","name":"Deposited","data":{"amount":5}}]}}"#;

    fn err(line: &str) -> String {
        let error = Case::parse(line.as_bytes()).unwrap_err();
        let mut text = error.to_string();
        if let Some(cause) = error.source() {
            text = format!("{text}: {cause}");
        }
        text
    }

    #[test]
    fn a_case_parses_and_prints_back_the_same() {
        let case = Case::parse(GOOD.as_bytes()).unwrap();
        assert_eq!(case.name, "deposit");
        assert_eq!(
            case.given,
            vec![event("accounts/1", "AccountOpened", json!({"owner":"A"}))]
        );
        assert_eq!(
            case.when,
            command("accounts/1", "deposit", json!({"amount":5}))
        );
        assert_eq!(
            case.then,
            Then::Events(vec![event("accounts/1", "Deposited", json!({"amount":5}))])
        );
        assert_eq!(Case::parse(case.to_line().as_bytes()).unwrap(), case);
        let rejected = r#"{"name":"r","when":{"path":"a/1","name":"x","session":"s1"},"then":{"rejected":"nope"}}"#;
        let case = Case::parse(rejected.as_bytes()).unwrap();
        assert_eq!(case.given, vec![]);
        assert_eq!(case.when.session.as_deref(), Some("s1"));
        assert_eq!(case.when.params, json!({}));
        assert_eq!(case.then, Then::Rejected("nope".to_owned()));
        assert_eq!(Case::parse(case.to_line().as_bytes()).unwrap(), case);
    }

    #[test]
    fn strict_parsing_names_the_key() {
        let when = r#""when":{"path":"a/1","name":"x"}"#;
        for (line, want) in [
            ("{", "not valid JSON"),
            ("[1]", "a case must be a JSON object like {\"name\",\"given\",\"when\",\"then\"}, found an array"),
            (r#"{"name":"n","when":7,"then":{"error":"e"}}"#, "\"when\" must be an object, found a number"),
            (
                &format!(r#"{{"name":"n",{when},"then":{{"error":"e"}},"extra":1}}"#),
                "unknown key \"extra\" (expected name, given, when, then)",
            ),
            (
                &format!(r#"{{"name":"n","name":"m",{when},"then":{{"error":"e"}}}}"#),
                "the key \"name\" is given twice",
            ),
            (
                r#"{"name":"n","when":{"path":"a/1","name":"x","params":{"a":1,"a":2}},"then":{"error":"e"}}"#,
                "the key \"when.params.a\" is given twice",
            ),
            (
                &format!(r#"{{"name":"n",{when},"then":{{"error":"e","rejected":"r"}}}}"#),
                "exactly one of",
            ),
            (&format!(r#"{{"name":"n",{when},"then":{{}}}}"#), "found 0"),
            (
                &format!(r#"{{"name":"n",{when},"then":{{"events":{{}}}}}}"#),
                "\"then.events\" must be an array of events, found an object",
            ),
            (
                &format!(
                    r#"{{"name":"n",{when},"then":{{"events":[{{"partition":"a/1","name":"E"}}]}}}}"#
                ),
                "missing \"then.events[0].data\"",
            ),
            (
                &format!(
                    r#"{{"name":"n","given":[{{"partition":"../x","name":"E","data":1}}],{when},"then":{{"error":"e"}}}}"#
                ),
                "\"given[0].partition\": '../x' is not a valid partition name",
            ),
            (
                &format!(
                    r#"{{"name":"n","given":[{{"partition":"a/1","name":"has space","data":1,"x":2}}],{when},"then":{{"error":"e"}}}}"#
                ),
                "unknown key \"given[0].x\"",
            ),
            (
                r#"{"name":"n","when":{"path":"a/1","name":"x","sesion":"s"},"then":{"error":"e"}}"#,
                "unknown key \"when.sesion\"",
            ),
            (
                r#"{"name":"n","when":{"path":"a/1","name":"1x"},"then":{"error":"e"}}"#,
                "\"when\" is not a valid command: command name '1x'",
            ),
            (
                r#"{"name":"n","when":{"path":"a/1","name":"x","params":[]},"then":{"error":"e"}}"#,
                "\"when\" is not a valid command: command \"params\" must be a JSON object",
            ),
            (r#"{"name":"n","then":{"error":"e"}}"#, "missing \"when\""),
            (
                &format!(r#"{{"name":" ",{when},"then":{{"error":"e"}}}}"#),
                "\"name\" must not be empty",
            ),
            (
                &format!(r#"{{"name":"n",{when},"then":{{"error":""}}}}"#),
                "\"then.error\" must not be empty",
            ),
            (
                &format!(r#"{{"name":"n",{when},"then":{{"rejected":""}}}}"#),
                "\"then.rejected\" must not be empty",
            ),
            (
                &format!(r#"{{"name":7,{when},"then":{{"error":"e"}}}}"#),
                "\"name\" must be a string, found a number",
            ),
        ] {
            let got = err(line);
            assert!(got.contains(want), "{line}\n  got:  {got}\n  want: {want}");
        }
    }

    #[test]
    fn a_spec_skips_blank_and_comment_lines_and_names_the_bad_line() {
        let text = format!("# a comment\n\n   \r\n{GOOD}\r\n  # indented comment\n{GOOD}\n");
        assert_eq!(parse_spec(text.as_bytes()).unwrap().len(), 2);
        let bad = format!("{GOOD}\n\n{{\"name\":1}}\n{GOOD}\n");
        let error = parse_spec(bad.as_bytes()).unwrap_err();
        assert_eq!(error.line, 3);
        assert_eq!(error.to_string(), "spec line 3 is not a valid case");
        let error = parse_spec(b"\xff\xfe\n").unwrap_err();
        assert_eq!(error.line, 1);
        assert!(matches!(error.error, CaseError::NotJson(_)));
        assert!(parse_spec(b"").unwrap().is_empty());
    }

    /// Garbled lines (every prefix, every byte dropped, bytes flipped) are errors, never panics.
    #[test]
    fn garbled_spec_lines_never_panic() {
        let lines = [
            GOOD.to_owned(),
            r#"{"name":"r","when":{"path":"a","name":"x","params":{"l":[1,{"a":null}]},"session":"s"},"then":{"rejected":"c"}}"#.to_owned(),
        ];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for line in &lines {
            let bytes = line.as_bytes();
            for end in 0..bytes.len() {
                assert!(parse_spec(&bytes[..end]).map(|c| c.len()).unwrap_or(0) <= 1);
                let mut dropped = bytes.to_vec();
                dropped.remove(end);
                let _ = parse_spec(&dropped);
            }
            for _ in 0..2000 {
                let mut garbled = bytes.to_vec();
                for _ in 0..3 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let at = (seed as usize) % garbled.len();
                    garbled[at] = (seed >> 32) as u8;
                }
                if let Ok(cases) = parse_spec(&garbled) {
                    for case in cases {
                        assert_eq!(Case::parse(case.to_line().as_bytes()).unwrap(), case);
                    }
                }
            }
        }
    }

    #[test]
    fn the_events_diff_names_the_event_the_field_and_both_values() {
        let expected = vec![
            event("accounts/1", "Deposited", json!({"amount": 5})),
            event("accounts/1", "Deposited", json!({"amount": 6, "note": "x"})),
        ];
        let actual = vec![
            event("accounts/1", "Deposited", json!({"amount": 5})),
            event("accounts/1", "Deposited", json!({"amount": 7})),
            event("registry/accounts", "AccountListed", json!({})),
        ];
        let diff = diff_events(&expected, &actual).unwrap();
        assert_eq!(diff.index, 1);
        assert_eq!(
            diff.fields,
            vec![
                FieldDiff {
                    path: "events[1].data.amount".to_owned(),
                    expected: Some(json!(6)),
                    actual: Some(json!(7)),
                },
                FieldDiff {
                    path: "events[1].data.note".to_owned(),
                    expected: Some(json!("x")),
                    actual: None,
                },
            ]
        );
        let text = Mismatch::Events(diff).report();
        assert!(text.starts_with("emitted events differ from the expected ones at events[1] (2 expected, 3 emitted):\n  events[1].data.amount: expected 6, actual 7\n  events[1].data.note: expected \"x\", actual (none)\n"), "{text}");
        assert!(text.contains("actual:\n  events[0] {\"partition\":\"accounts/1\",\"name\":\"Deposited\",\"data\":{\"amount\":5}}"), "{text}");
        // One side shorter: the whole extra event is the difference.
        let diff = diff_events(&expected[..1], &actual[..2]).unwrap();
        assert_eq!(diff.index, 1);
        assert_eq!(diff.fields[0].expected, None);
        assert_eq!(diff.fields[0].actual, Some(actual[1].to_json()));
        assert_eq!(diff_events(&actual, &actual), None);
        // Key order does not matter; numbers of another type do.
        assert_eq!(
            diff_events(
                &[event("a/1", "E", json!({"x": 1, "y": 2}))],
                &[event("a/1", "E", json!({"y": 2, "x": 1}))]
            ),
            None
        );
        assert!(diff_events(
            &[event("a/1", "E", json!(1))],
            &[event("a/1", "E", json!(1.0))]
        )
        .is_some());
    }

    #[test]
    fn expected_events_are_compared_in_the_checkpoints_order() {
        // The checkpoint keeps partitions sorted; a case may list them in any order.
        let actual = vec![
            event("accounts/a", "TransferReceived", json!({})),
            event("accounts/b", "TransferSent", json!({})),
            event("accounts/b", "Note", json!({})),
        ];
        let listed = vec![actual[1].clone(), actual[2].clone(), actual[0].clone()];
        compare(&Then::Events(listed), Outcome::Events(actual.clone())).unwrap();
        // Within one partition the order counts.
        let swapped = vec![actual[0].clone(), actual[2].clone(), actual[1].clone()];
        assert!(matches!(
            compare(&Then::Events(swapped), Outcome::Events(actual)),
            Err(Mismatch::Events(_))
        ));
    }

    #[test]
    fn outcomes_of_another_kind_are_mismatches_saying_both() {
        let rejected = || Outcome::Rejected {
            code: "insufficient_funds".to_owned(),
            message: "the balance is 0".to_owned(),
        };
        let m = compare(&Then::Rejected("other".to_owned()), rejected()).unwrap_err();
        assert_eq!(m.report(), "expected a rejection 'other', but the command was rejected: insufficient_funds: the balance is 0");
        compare(&Then::Rejected("insufficient_funds".to_owned()), rejected()).unwrap();
        let m = compare(&Then::Events(vec![]), rejected()).unwrap_err();
        assert!(m
            .report()
            .starts_with("expected 0 event(s), but the command was rejected"));
        let m = compare(
            &Then::Rejected("x".to_owned()),
            Outcome::Events(vec![event("a/1", "E", json!(1))]),
        )
        .unwrap_err();
        assert_eq!(
            m.report(),
            "expected a rejection 'x', but the command emitted 1 event(s):\n  events[0] {\"partition\":\"a/1\",\"name\":\"E\",\"data\":1}"
        );
        let failed = || {
            Outcome::Failed(ApplyError::Handler {
                handler: "h".to_owned(),
                reason: "it crashed".to_owned(),
                recorded: None,
            })
        };
        compare(&Then::Error("crashed".to_owned()), failed()).unwrap();
        let m = compare(&Then::Error("timed out".to_owned()), failed()).unwrap_err();
        assert_eq!(
            m.report(),
            "expected an error containing 'timed out', but the command failed: handler h failed: it crashed"
        );
        assert!(m.source().is_some(), "the failure is kept as the cause");
    }
}
