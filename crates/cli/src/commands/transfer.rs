//! `retro export` and `retro import`: history as JSON lines, one checkpoint per line, oldest first:
//!
//! ```json
//! {"id":"sha256:…","parents":["sha256:…"],"session":"s1","date":"2026-11-25T10:00:00Z",
//!  "message":{…command…},"events":[{"partition":"accounts/a","name":"Deposited","data":{"amount":5}}]}
//! ```
//!
//! `message` and `data` carry the stored bytes verbatim when they are JSON (else `message_text` /
//! `data_text` strings), so importing an export into an empty depot gives the very same ids.
//! An event at a schema version other than 1 carries `"version": N` (absent means 1).
//! Only `events` is required, so other stores' histories come in easily.
//!
//! A recorded failed command (an orphaned checkpoint in the depot's failure log) is a line with
//! `failed` instead of `id`, right after the line of the checkpoint it was tried on (the failed
//! checkpoint's parent), with its other header fields (`error`) under `fields`:
//!
//! ```json
//! {"failed":"sha256:…","parents":["sha256:…"],"session":"cli","date":"2026-11-25T10:00:00Z",
//!  "fields":{"error":"insufficient_funds: …"},"message":{…command…},"events":[]}
//! ```
//!
//! Export writes the failures recorded on checkpoints of the exported history (and those tried
//! on an empty one). Import restores each into the failure log with the very same id, once: one
//! already recorded is skipped, and one whose parent checkpoint is not in the depot is not
//! restored (a warning names it; `--json` counts it as `failed_missing_parent`).
//!
//! Re-running an import (interrupted or complete) never writes a line twice. Every checkpoint an
//! import writes is recorded in the moved branch's reflog, in the same journal record (or
//! transaction) as the ref move, as `import line <N> <chain>`, where `<chain>` is a SHA-256 over
//! the file's non-blank lines 1..=N: so a prefix of a file, or the file itself, is recognised by
//! its lines, whatever its name. Before writing anything, import reads the whole input (checking
//! every line), finds the longest run of leading lines whose marker names a checkpoint on `HEAD`'s
//! first-parent history, then checks the checkpoints after that one, oldest first, against the
//! following lines by content (events, message, session, and date when the line has one), and
//! skips every line found; lines whose `id` the depot already has are skipped too. The rest is
//! imported on top of `HEAD`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, Write};
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use depot::{
    Affix, Base, Checkpoint, CommitRequest, Depot, EncodedObject, Event, EventName, FieldKey,
    FieldValue, HistoryOrder, Object, ObjectId, PartitionName, RefName,
};

use super::resolve;
use crate::ui::{status, Ui};

#[derive(Serialize, Deserialize)]
struct Line {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    /// Set on a failed-command line: the failed checkpoint's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failed: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    parents: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message_text: Option<String>,
    /// Header fields other than `session` and `date`: a failed-command line's (`error`, and the
    /// command's ids), a checkpoint line's command ids (`command-id`, `correlation-id`,
    /// `causation-id`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    fields: BTreeMap<String, String>,
    events: Vec<LineEvent>,
}

#[derive(Serialize, Deserialize)]
struct LineEvent {
    partition: String,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data_text: Option<String>,
    /// The event's schema version; absent means 1 (docs/format.md, `json;v=<N>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<u32>,
}

fn raw_or_text(bytes: &[u8]) -> (Option<Box<RawValue>>, Option<String>) {
    match std::str::from_utf8(bytes)
        .ok()
        .filter(|text| !text.is_empty() && text.trim() == *text)
        .and_then(|text| RawValue::from_string(text.to_owned()).ok())
    {
        Some(raw) => (Some(raw), None),
        None => (None, Some(String::from_utf8_lossy(bytes).into_owned())),
    }
}

/// The events of an affix as export lines.
fn line_events(depot: &Depot, affix: &Affix) -> Result<Vec<LineEvent>> {
    let mut events = Vec::with_capacity(affix.event_count());
    for (partition, ids) in affix.partitions() {
        for event_id in ids {
            let event = depot.read_event(event_id)?;
            let (data, data_text) = raw_or_text(event.data());
            events.push(LineEvent {
                partition: partition.to_string(),
                name: event.name().to_string(),
                data,
                data_text,
                version: (event.version() != 1).then_some(event.version()),
            });
        }
    }
    Ok(events)
}

/// The export line of checkpoint `id` (`failed`: of a recorded failed command).
fn export_line(
    depot: &Depot,
    id: &ObjectId,
    checkpoint: &Checkpoint,
    failed: bool,
) -> Result<Line> {
    let affix = depot.read_affix(&checkpoint.affix())?;
    let (message, message_text) = raw_or_text(checkpoint.message());
    // Every other field: so an import into an empty depot gives the very same ids. Not a sealed
    // checkpoint's `message-data`: the line carries the command itself, and the importing depot
    // seals it (or not) as it is configured to. `log` goes with the line, so that the import
    // writes one exactly when the original had one (it computes it again for its own parent).
    let fields = checkpoint
        .fields()
        .filter(|(key, _)| !matches!(key.as_str(), "session" | "date" | "message-data"))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    Ok(Line {
        id: (!failed).then(|| id.to_string()),
        failed: failed.then(|| id.to_string()),
        parents: checkpoint
            .parents()
            .iter()
            .map(ToString::to_string)
            .collect(),
        session: Some(checkpoint.session().to_owned()),
        date: checkpoint.field("date").map(str::to_owned),
        message,
        message_text,
        fields,
        events: line_events(depot, &affix)?,
    })
}

/// Failed commands by the checkpoint they were tried on.
type FailuresOn = HashMap<Option<ObjectId>, Vec<(ObjectId, Checkpoint)>>;

/// The recorded failed commands whose parents are all in `history` (or that have none), by the
/// checkpoint each was tried on (`None`: an empty history), in the failure log's order.
fn failures_on(depot: &Depot, history: &[ObjectId]) -> Result<FailuresOn> {
    let in_history: HashSet<ObjectId> = history.iter().copied().collect();
    let mut seen = HashSet::new();
    let mut on = FailuresOn::new();
    let mut outside = 0u64;
    for id in depot.failures()? {
        if !seen.insert(id) {
            continue;
        }
        let checkpoint = match depot.read_checkpoint(&id) {
            Ok(checkpoint) => checkpoint,
            Err(e) => {
                status(format!(
                    "retro: warning: failed command {id} is unreadable and not exported: {e}"
                ));
                continue;
            }
        };
        if checkpoint.parents().iter().all(|p| in_history.contains(p)) {
            on.entry(checkpoint.first_parent())
                .or_default()
                .push((id, checkpoint));
        } else {
            outside += 1;
        }
    }
    if outside > 0 {
        status(format!(
            "retro: note: {outside} failed command(s) tried on checkpoints outside this history are not exported"
        ));
    }
    Ok(on)
}

pub fn export(depot: &Depot, rev: Option<&str>, output: Option<&Path>, ui: &mut Ui) -> Result<()> {
    let start = resolve(depot, rev)?;
    let mut chain: Vec<ObjectId> = Vec::new();
    depot.walk(start, HistoryOrder::FirstParent, |id, _| {
        chain.push(id);
        Ok(true)
    })?;
    let mut failures = failures_on(depot, &chain)?;
    let bar = ui.progress(chain.len() as u64, "checkpoints exported");
    let mut file_out;
    let out: &mut dyn Write = match output {
        Some(path) => {
            file_out = BufWriter::new(
                File::create(path)
                    .with_context(|| format!("could not create '{}'", path.display()))?,
            );
            &mut file_out
        }
        None => ui.out(),
    };
    let mut write_failures = |out: &mut dyn Write, on: Option<ObjectId>| -> Result<()> {
        for (id, checkpoint) in failures.remove(&on).unwrap_or_default() {
            serde_json::to_writer(&mut *out, &export_line(depot, &id, &checkpoint, true)?)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    };
    write_failures(out, None)?;
    for id in chain.iter().rev() {
        let checkpoint = depot.read_checkpoint(id)?;
        serde_json::to_writer(&mut *out, &export_line(depot, id, &checkpoint, false)?)?;
        out.write_all(b"\n")?;
        write_failures(out, Some(*id))?;
        bar.inc(1);
    }
    out.flush()?;
    bar.finish_and_clear();
    Ok(())
}

/// One input line as a commit request, with the id it names and whether it names a date.
struct Parsed {
    id: Option<ObjectId>,
    request: CommitRequest,
    dated: bool,
}

/// A line's events as depot events.
fn events_of(events: Vec<LineEvent>, number: usize) -> Result<Vec<(PartitionName, Event)>> {
    let context = |what: String| anyhow::anyhow!("line {number}: {what}");
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        let partition = PartitionName::new(&event.partition).map_err(|e| context(e.to_string()))?;
        let name = EventName::new(&event.name).map_err(|e| context(e.to_string()))?;
        let data = match (event.data, event.data_text) {
            (Some(raw), _) => raw.get().as_bytes().to_vec(),
            (None, Some(text)) => text.into_bytes(),
            (None, None) => b"{}".to_vec(),
        };
        let stored = match event.version {
            Some(0) => {
                return Err(context(
                    "event version 0 does not exist (absent means 1)".to_owned(),
                ))
            }
            Some(version) => Event::new(name, data).with_version(version),
            None => Event::new(name, data),
        };
        out.push((partition, stored));
    }
    Ok(out)
}

fn message_of(message: Option<Box<RawValue>>, message_text: Option<String>) -> Vec<u8> {
    match (message, message_text) {
        (Some(raw), _) => raw.get().as_bytes().to_vec(),
        (None, Some(text)) => text.into_bytes(),
        (None, None) => b"{\"name\":\"import\"}".to_vec(),
    }
}

fn session_of(session: Option<String>, number: usize) -> Result<String> {
    let session = session.unwrap_or_else(|| "import".to_owned());
    if session.is_empty()
        || session.len() > 128
        || session.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        bail!(
            "line {number}: session id '{}' must be 1 to 128 characters with no whitespace",
            session.escape_debug()
        );
    }
    Ok(session)
}

/// The header fields a checkpoint line may carry (the command's ids).
const ID_FIELDS: [&str; 3] = [
    depot::CAUSATION_ID_FIELD,
    depot::COMMAND_ID_FIELD,
    depot::CORRELATION_ID_FIELD,
];

fn request_of(line: Line, number: usize) -> Result<Parsed> {
    let context = |what: String| format!("line {number}: {what}");
    let mut fields = Vec::with_capacity(line.fields.len());
    let mut logged = false;
    for (key, value) in &line.fields {
        if key == depot::checkpoint_log::LOG_KEY {
            // Computed again by the commit for the parent it lands on; only its form is checked.
            depot::checkpoint_log::LogHead::parse(value)
                .map_err(|e| anyhow::anyhow!(context(e)))?;
            logged = true;
            continue;
        }
        let Some(known) = ID_FIELDS.iter().copied().find(|k| *k == key.as_str()) else {
            bail!(context(format!(
                "field '{}' belongs to failed-command lines (with 'failed') only; a checkpoint line's 'fields' are {} and log",
                depot::shown(key),
                ID_FIELDS.join(", ")
            )));
        };
        engine::check_id(known, value).map_err(|e| anyhow::anyhow!(context(e.to_string())))?;
        fields.push((
            FieldKey::new(key).map_err(|e| anyhow::anyhow!(context(e.to_string())))?,
            FieldValue::new(value).map_err(|e| anyhow::anyhow!(context(e.to_string())))?,
        ));
    }
    let id = line
        .id
        .as_deref()
        .map(str::parse::<ObjectId>)
        .transpose()
        .map_err(|e| anyhow::anyhow!(context(e.to_string())))?;
    let events = events_of(line.events, number)?;
    let message = message_of(line.message, line.message_text);
    let dated = line.date.is_some();
    let date = match line.date {
        Some(text) => depot::parse_date(&text).map_err(|e| anyhow::anyhow!(context(e)))?,
        None => chrono::Utc::now(),
    };
    let session = session_of(line.session, number)?;
    let mut request = CommitRequest::new(None, events, session, message);
    request.base = Base::Tip;
    request.date = date;
    request.target = RefName::head();
    request.reflog_message = "import".to_owned();
    request.fields = fields;
    request.log = logged;
    Ok(Parsed { id, request, dated })
}

/// A failed-command line: the orphaned checkpoint to record, its affix and events.
struct FailedLine {
    number: usize,
    id: ObjectId,
    checkpoint: Checkpoint,
    affix: Affix,
    events: Vec<EncodedObject>,
}

fn failed_of(line: Line, number: usize) -> Result<FailedLine> {
    let context = |what: String| anyhow::anyhow!("line {number}: {what}");
    if line.id.is_some() {
        return Err(context(
            "a line has either 'id' (a checkpoint) or 'failed' (a failed command), not both"
                .to_owned(),
        ));
    }
    let named: ObjectId = line
        .failed
        .as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(|e: depot::ParseIdError| context(format!("'failed': {e}")))?;
    let parents = line
        .parents
        .iter()
        .map(|p| p.parse::<ObjectId>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| context(format!("'parents': {e}")))?;
    let mut affix = Affix::new();
    let mut events = Vec::new();
    for (partition, event) in events_of(line.events, number)? {
        let encoded = Object::Event(event).to_encoded();
        affix.push(partition, encoded.id());
        events.push(encoded);
    }
    let mut fields = BTreeMap::new();
    let date = match line.date {
        Some(text) => {
            depot::parse_date(&text).map_err(context)?;
            text
        }
        None => depot::format_date(chrono::Utc::now()),
    };
    let session = session_of(line.session, number)?;
    for (key, value) in [("session".to_owned(), session), ("date".to_owned(), date)]
        .into_iter()
        .chain(line.fields)
    {
        let key = FieldKey::new(&key).map_err(|e| context(format!("field '{key}': {e}")))?;
        let value = FieldValue::new(&value).map_err(|e| context(format!("field {key}: {e}")))?;
        if fields.insert(key.clone(), value).is_some() {
            return Err(context(format!(
                "field '{key}' is given twice ('session' and 'date' are the line's own keys)"
            )));
        }
    }
    let affix_id = Object::Affix(affix.clone()).to_encoded().id();
    let message = message_of(line.message, line.message_text);
    let checkpoint = Checkpoint::with_fields(affix_id, parents, fields, message);
    let id = Object::Checkpoint(checkpoint.clone()).to_encoded().id();
    if id != named {
        return Err(context(format!(
            "the failed command's content hashes to {id}, not to {named} as 'failed' says"
        )));
    }
    Ok(FailedLine {
        number,
        id,
        checkpoint,
        affix,
        events,
    })
}

/// The input, readable twice: a file, or stdin spooled to a temporary file.
struct Input(File);

impl Input {
    fn open(file: Option<&Path>) -> Result<Input> {
        match file {
            Some(path) if path != Path::new("-") => {
                Ok(Input(File::open(path).with_context(|| {
                    format!("could not open '{}'", path.display())
                })?))
            }
            _ => {
                let mut spool =
                    tempfile::tempfile().context("could not create a temporary file")?;
                std::io::copy(&mut std::io::stdin().lock(), &mut spool)
                    .context("could not read the input")?;
                Ok(Input(spool))
            }
        }
    }

    /// Its size in bytes (0 when it cannot be told).
    fn len(&self) -> u64 {
        self.0.metadata().map(|m| m.len()).unwrap_or(0)
    }

    /// The non-blank lines from the start: (1-based line number, text).
    fn lines(&mut self) -> Result<impl Iterator<Item = Result<(usize, String)>> + '_> {
        self.0.rewind().context("could not read the input")?;
        Ok(BufReader::with_capacity(1 << 20, (&self.0).take(u64::MAX))
            .lines()
            .enumerate()
            .filter_map(|(number, line)| match line {
                Ok(line) if line.trim().is_empty() => None,
                Ok(line) => Some(Ok((number + 1, line))),
                Err(e) => Some(Err(
                    anyhow::Error::new(e).context("could not read the input")
                )),
            }))
    }
}

/// One input line: a checkpoint to commit, or a failed command to record.
enum Item {
    Checkpoint(Parsed),
    Failed(FailedLine),
}

fn parse_line(number: usize, line: &str) -> Result<Item> {
    let parsed: Line =
        serde_json::from_str(line).with_context(|| format!("line {number}: not an export line"))?;
    if parsed.failed.is_some() {
        return Ok(Item::Failed(failed_of(parsed, number)?));
    }
    Ok(Item::Checkpoint(request_of(parsed, number)?))
}

/// What restoring the failed-command lines did.
#[derive(Default)]
struct FailedCounts {
    restored: u64,
    present: u64,
    missing_parent: u64,
}

/// Records the failed-command lines the depot lacks, once each, after the checkpoints they were
/// tried on are in; one whose parent is not in the depot is not restored (fsck would call the
/// record broken), and a warning names it.
fn restore_failures(depot: &Depot, lines: Vec<FailedLine>) -> Result<FailedCounts> {
    let mut counts = FailedCounts::default();
    if lines.is_empty() {
        return Ok(counts);
    }
    let mut recorded: HashSet<ObjectId> = depot.failures()?.into_iter().collect();
    for line in lines {
        if recorded.contains(&line.id) {
            counts.present += 1;
            continue;
        }
        let mut missing = None;
        for parent in line.checkpoint.parents() {
            if !depot.objects().contains(parent)? {
                missing = Some(*parent);
                break;
            }
        }
        if let Some(parent) = missing {
            status(format!(
                "retro: warning: line {}: failed command {} is not restored: the checkpoint it was tried on, {parent}, is not in this depot",
                line.number, line.id
            ));
            counts.missing_parent += 1;
            continue;
        }
        if !line.events.is_empty() {
            depot.write_objects(&line.events)?;
        }
        let id = depot.record_failure(&line.checkpoint, &line.affix)?;
        recorded.insert(id);
        counts.restored += 1;
    }
    Ok(counts)
}

/// The marker of the file's lines 1..=n: `chain(n) = SHA-256(chain(n-1) || line n)`.
fn chain_next(previous: &ObjectId, line: &str) -> ObjectId {
    let mut bytes = Vec::with_capacity(32 + line.len());
    bytes.extend_from_slice(previous.as_bytes());
    bytes.extend_from_slice(line.as_bytes());
    ObjectId::of(&bytes)
}

fn chain_start() -> ObjectId {
    ObjectId::of(b"retro import 1")
}

/// The reflog message of the checkpoint written for (non-blank) line `position` (1-based).
fn marker(number: usize, chain: &ObjectId) -> String {
    format!("import line {number} {}", chain.to_hex())
}

/// The chain value a reflog message names, if it is an import marker.
fn parse_marker(message: &str) -> Option<ObjectId> {
    let mut words = message.split(' ');
    if words.next()? != "import" || words.next()? != "line" {
        return None;
    }
    words.next()?.parse::<usize>().ok()?;
    let hex = words.next()?;
    if words.next().is_some() {
        return None;
    }
    ObjectId::from_slice(&decode_hex(hex)?)
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

/// Where a previous run of this input stopped: the number of leading (non-blank) lines whose
/// checkpoints are on `HEAD`'s first-parent history by their reflog markers, and the checkpoints
/// after the last of them (oldest first), which may hold further lines without a marker.
fn resume_point(
    depot: &Depot,
    chains: &HashMap<ObjectId, usize>,
) -> Result<(usize, Vec<ObjectId>)> {
    let Some(head) = depot.head()? else {
        return Ok((0, Vec::new()));
    };
    let mut candidates: Vec<(usize, ObjectId)> = depot
        .reflog(&RefName::head())?
        .into_iter()
        .filter_map(|entry| {
            let position = *chains.get(&parse_marker(&entry.message)?)?;
            Some((position, entry.new?))
        })
        .collect();
    candidates.sort_unstable_by(|a, b| b.cmp(a));
    candidates.dedup();
    for (position, checkpoint) in candidates {
        if !depot.on_head_history(&checkpoint)? {
            continue;
        }
        return Ok((position, depot.first_parents_since(head, Some(checkpoint))?));
    }
    // No marker on this history: the lines may still be there without one (a crash between a
    // ref move and its reflog line, where those are separate writes): look at the newest
    // checkpoints, as many as there are lines.
    let mut after = Vec::new();
    depot.walk(head, HistoryOrder::FirstParent, |id, _| {
        after.push(id);
        Ok(after.len() < chains.len())
    })?;
    after.reverse();
    Ok((0, after))
}

/// Whether checkpoint `id` is what importing `parsed` would have written (on whatever parent).
fn holds_line(depot: &Depot, id: &ObjectId, parsed: &Parsed) -> Result<bool> {
    let checkpoint = depot.read_checkpoint(id)?;
    let request = &parsed.request;
    if checkpoint.session() != request.session || checkpoint.message() != request.message {
        return Ok(false);
    }
    let extra: Vec<(&str, &str)> = checkpoint
        .fields()
        .filter(|(key, _)| {
            !matches!(
                key.as_str(),
                "session" | "date" | depot::checkpoint_log::LOG_KEY
            )
        })
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    let mut wanted: Vec<(&str, &str)> = request
        .fields
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    wanted.sort();
    if extra != wanted {
        return Ok(false);
    }
    if parsed.dated && checkpoint.date().map(|d| d.timestamp()) != Some(request.date.timestamp()) {
        return Ok(false);
    }
    let mut affix = Affix::new();
    for (partition, event) in &request.events {
        affix.push(
            partition.clone(),
            Object::Event(event.clone()).to_encoded().id(),
        );
    }
    Ok(Object::Affix(affix).to_encoded().id() == checkpoint.affix())
}

pub fn import(
    depot: &Depot,
    file: Option<&Path>,
    batch: usize,
    json: bool,
    ui: &mut Ui,
) -> Result<()> {
    if batch == 0 {
        bail!("--batch must be at least 1");
    }
    let mut input = Input::open(file)?;
    // First pass: every line must be good before anything is written; and each line's marker.
    let mut chains: HashMap<ObjectId, usize> = HashMap::new();
    let mut chain = chain_start();
    let mut lines = 0usize;
    // Failed-command lines are kept from this pass (they are few) and recorded at the end.
    let mut failed_lines: Vec<FailedLine> = Vec::new();
    let mut failed_positions: HashSet<usize> = HashSet::new();
    let checking = ui.progress_bytes(input.len(), "checked");
    for item in input.lines()? {
        let (number, line) = item?;
        checking.inc(line.len() as u64 + 1);
        let parsed = parse_line(number, &line)?;
        chain = chain_next(&chain, &line);
        lines += 1;
        chains.insert(chain, lines);
        if let Item::Failed(failed) = parsed {
            failed_lines.push(failed);
            failed_positions.insert(lines);
        }
    }
    checking.finish_and_clear();
    let (present, mut after) = resume_point(depot, &chains)?;
    if present > 0 {
        status(format!(
            "retro: the first {present} line(s) of the input are already imported; resuming after them"
        ));
    }
    after.reverse(); // popped oldest first

    let bar = ui.progress(lines as u64, "lines imported");
    let (mut imported, mut skipped, mut differing, mut events) = (0u64, 0u64, 0u64, 0u64);
    let mut pending: Vec<(Option<ObjectId>, CommitRequest)> = Vec::with_capacity(batch);
    let mut flush = |pending: &mut Vec<(Option<ObjectId>, CommitRequest)>| -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let (expected, requests): (Vec<_>, Vec<_>) = pending.drain(..).unzip();
        let counts: Vec<usize> = requests.iter().map(|r| r.events.len()).collect();
        for ((result, expected), count) in depot
            .commit_many(requests)
            .into_iter()
            .zip(expected)
            .zip(counts)
        {
            let committed = result?;
            imported += 1;
            events += count as u64;
            if expected.is_some_and(|e| e != committed.checkpoint) {
                differing += 1;
            }
        }
        Ok(())
    };
    let mut chain = chain_start();
    let mut position = 0usize;
    for item in input.lines()? {
        let (number, line) = item?;
        chain = chain_next(&chain, &line);
        position += 1;
        bar.set_position(position as u64);
        if failed_positions.contains(&position) {
            continue;
        }
        if position <= present {
            skipped += 1;
            continue;
        }
        let Item::Checkpoint(parsed) = parse_line(number, &line)? else {
            continue;
        };
        if let Some(id) = parsed.id {
            if depot.objects().contains(&id)? {
                skipped += 1;
                continue;
            }
        }
        // Checkpoints after the last marker: the following lines, or others' commits between.
        let mut found = false;
        while let Some(candidate) = after.pop() {
            if holds_line(depot, &candidate, &parsed)? {
                found = true;
                break;
            }
        }
        if found {
            skipped += 1;
            continue;
        }
        let mut request = parsed.request;
        request.reflog_message = marker(number, &chain);
        pending.push((parsed.id, request));
        if pending.len() >= batch {
            flush(&mut pending)?;
        }
    }
    flush(&mut pending)?;
    let has_failed_lines = !failed_lines.is_empty();
    let failed = restore_failures(depot, failed_lines)?;
    bar.finish_and_clear();
    if differing > 0 {
        status(format!(
            "retro: warning: {differing} checkpoint(s) got other ids than the input names (their parents differ: was the depot not empty?)"
        ));
    }
    if json {
        ui.json(&serde_json::json!({
            "imported": imported, "events": events, "skipped": skipped, "differing": differing,
            "failed_restored": failed.restored, "failed_present": failed.present,
            "failed_missing_parent": failed.missing_parent,
            "head": depot.head()?.map(|id| id.to_string()),
        }))?;
    } else {
        ui.line(format!(
            "imported {imported} checkpoints ({events} events); skipped {skipped} already present"
        ))?;
        if has_failed_lines {
            let mut text = format!(
                "restored {} failed command(s); {} already recorded",
                failed.restored, failed.present
            );
            if failed.missing_parent > 0 {
                text.push_str(&format!(
                    "; {} not restored (the checkpoint tried on is not in this depot)",
                    failed.missing_parent
                ));
            }
            ui.line(text)?;
        }
        if imported == 0
            && failed.restored == 0
            && failed.missing_parent == 0
            && (skipped > 0 || failed.present > 0)
        {
            ui.line("nothing written: every line is already in the history")?;
        }
    }
    Ok(())
}
