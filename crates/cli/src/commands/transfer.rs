//! `retro export` and `retro import`: history as JSON lines, one checkpoint per line, oldest first:
//!
//! ```json
//! {"id":"sha256:…","parents":["sha256:…"],"session":"s1","date":"2026-11-25T10:00:00Z",
//!  "message":{…command…},"events":[{"partition":"accounts/a","name":"Deposited","data":{"amount":5}}]}
//! ```
//!
//! `message` and `data` carry the stored bytes verbatim when they are JSON (else `message_text` /
//! `data_text` strings), so importing an export into an empty depot gives the very same ids.
//! Lines whose `id` the depot already has are skipped: re-running an import is harmless. Only
//! `events` is required, so other stores' histories come in easily.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use depot::{
    Base, CommitRequest, Depot, Event, EventName, HistoryOrder, ObjectId, PartitionName, RefName,
};

use super::resolve;
use crate::ui::{status, Ui};

#[derive(Serialize, Deserialize)]
struct Line {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
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

pub fn export(depot: &Depot, rev: Option<&str>, output: Option<&Path>, ui: &mut Ui) -> Result<()> {
    let start = resolve(depot, rev)?;
    let mut chain: Vec<ObjectId> = Vec::new();
    depot.walk(start, HistoryOrder::FirstParent, |id, _| {
        chain.push(id);
        Ok(true)
    })?;
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
    for id in chain.iter().rev() {
        let checkpoint = depot.read_checkpoint(id)?;
        let affix = depot.read_affix(&checkpoint.affix())?;
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
                });
            }
        }
        let (message, message_text) = raw_or_text(checkpoint.message());
        let line = Line {
            id: Some(id.to_string()),
            parents: checkpoint
                .parents()
                .iter()
                .map(ToString::to_string)
                .collect(),
            session: Some(checkpoint.session().to_owned()),
            date: checkpoint.field("date").map(str::to_owned),
            message,
            message_text,
            events,
        };
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
        bar.inc(1);
    }
    out.flush()?;
    bar.finish_and_clear();
    Ok(())
}

fn request_of(line: Line, number: usize) -> Result<(Option<ObjectId>, CommitRequest)> {
    let context = |what: String| format!("line {number}: {what}");
    let id = line
        .id
        .as_deref()
        .map(str::parse::<ObjectId>)
        .transpose()
        .map_err(|e| anyhow::anyhow!(context(e.to_string())))?;
    let mut events = Vec::with_capacity(line.events.len());
    for event in line.events {
        let partition = PartitionName::new(&event.partition)
            .map_err(|e| anyhow::anyhow!(context(e.to_string())))?;
        let name =
            EventName::new(&event.name).map_err(|e| anyhow::anyhow!(context(e.to_string())))?;
        let data = match (event.data, event.data_text) {
            (Some(raw), _) => raw.get().as_bytes().to_vec(),
            (None, Some(text)) => text.into_bytes(),
            (None, None) => b"{}".to_vec(),
        };
        events.push((partition, Event::new(name, data)));
    }
    let message = match (line.message, line.message_text) {
        (Some(raw), _) => raw.get().as_bytes().to_vec(),
        (None, Some(text)) => text.into_bytes(),
        (None, None) => b"{\"name\":\"import\"}".to_vec(),
    };
    let date = match line.date {
        Some(text) => depot::parse_date(&text).map_err(|e| anyhow::anyhow!(context(e)))?,
        None => chrono::Utc::now(),
    };
    let mut request = CommitRequest::new(
        None,
        events,
        line.session.unwrap_or_else(|| "import".to_owned()),
        message,
    );
    request.base = Base::Tip;
    request.date = date;
    request.target = RefName::head();
    request.reflog_message = "import".to_owned();
    Ok((id, request))
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
    let reader: Box<dyn BufRead> = match file {
        Some(path) if path != Path::new("-") => Box::new(BufReader::with_capacity(
            1 << 20,
            File::open(path).with_context(|| format!("could not open '{}'", path.display()))?,
        )),
        _ => Box::new(BufReader::new(std::io::stdin())),
    };
    let bar = ui.progress(0, "checkpoints imported");
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
        bar.set_position(imported);
        Ok(())
    };
    for (number, line) in reader.lines().enumerate() {
        let line = line.context("could not read the input")?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line = serde_json::from_str(&line)
            .with_context(|| format!("line {}: not an export line", number + 1))?;
        let (id, request) = request_of(parsed, number + 1)?;
        if let Some(id) = id {
            if depot.objects().contains(&id)? {
                skipped += 1;
                continue;
            }
        }
        pending.push((id, request));
        if pending.len() >= batch {
            flush(&mut pending)?;
        }
    }
    flush(&mut pending)?;
    bar.finish_and_clear();
    if differing > 0 {
        status(format!(
            "retro: warning: {differing} checkpoint(s) got other ids than the input names (their parents differ: was the depot not empty?)"
        ));
    }
    if json {
        ui.json(&serde_json::json!({
            "imported": imported, "events": events, "skipped": skipped, "differing": differing,
            "head": depot.head()?.map(|id| id.to_string()),
        }))?;
    } else {
        ui.line(format!(
            "imported {imported} checkpoints ({events} events); skipped {skipped} already present"
        ))?;
    }
    Ok(())
}
