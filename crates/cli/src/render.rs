//! How objects, checkpoints and events look: the human forms and their `--json` twins.

use serde_json::{json, Value};

use depot::{Affix, Checkpoint, EventRecord, Object, ObjectId};

use crate::ui::Ui;

/// A message as JSON when it is JSON (retro keeps the command payload there), else a string.
pub fn message_value(message: &[u8]) -> Value {
    serde_json::from_slice(message)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(message).into_owned()))
}

/// A one-line summary of a message: `path name` for a command, else its first line.
pub fn summary(message: &[u8]) -> String {
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(message) {
        if let (Some(Value::String(path)), Some(Value::String(name))) =
            (map.get("path"), map.get("name"))
        {
            return format!("{path} {name}");
        }
    }
    let text = String::from_utf8_lossy(message);
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > 72 {
        format!("{}…", line.chars().take(71).collect::<String>())
    } else {
        line.to_owned()
    }
}

/// The date field as written, or `-`.
pub fn date_text(checkpoint: &Checkpoint) -> String {
    checkpoint.field("date").unwrap_or("-").to_owned()
}

/// Event data as JSON (or a string if it is not JSON).
pub fn data_value(data: &[u8]) -> Value {
    message_value(data)
}

/// A checkpoint as a JSON object.
pub fn checkpoint_json(id: &ObjectId, checkpoint: &Checkpoint, affix: Option<&Affix>) -> Value {
    let mut value = json!({
        "checkpoint": id.to_string(),
        "parents": checkpoint.parents().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "affix": checkpoint.affix().to_string(),
        "session": checkpoint.session(),
        "date": checkpoint.field("date"),
        "message": message_value(checkpoint.message()),
    });
    for (key, field) in checkpoint.fields() {
        if !matches!(key.as_str(), "session" | "date") {
            value[key.as_str()] = Value::String(field.to_string());
        }
    }
    if let Some(affix) = affix {
        let partitions: serde_json::Map<String, Value> = affix
            .partitions()
            .map(|(p, ids)| (p.to_string(), json!(ids.len())))
            .collect();
        value["partitions"] = Value::Object(partitions);
    }
    value
}

/// An event record as a JSON object.
pub fn event_json(record: &EventRecord) -> Value {
    json!({
        "partition": record.partition.as_str(),
        "version": record.version,
        "event": record.id.to_string(),
        "name": record.event.name().as_str(),
        "data": data_value(record.event.data()),
        "checkpoint": record.checkpoint.to_string(),
        "date": record.date.map(depot::format_date),
        "session": record.session,
    })
}

/// A checkpoint with its affix's events expanded (`retro show --json`, `GET /checkpoints/…`).
pub fn checkpoint_with_events_json(
    depot: &depot::Depot,
    id: &ObjectId,
) -> Result<Value, depot::Error> {
    let checkpoint = depot.read_checkpoint(id)?;
    let affix = depot.read_affix(&checkpoint.affix())?;
    let mut value = checkpoint_json(id, &checkpoint, Some(&affix));
    let mut events = Vec::new();
    for (partition, ids) in affix.partitions() {
        for event_id in ids {
            let event = depot.read_event(event_id)?;
            events.push(json!({
                "partition": partition.as_str(),
                "event": event_id.to_string(),
                "name": event.name().as_str(),
                "data": data_value(event.data()),
            }));
        }
    }
    value["events"] = Value::Array(events);
    Ok(value)
}

/// The human form of a checkpoint, as `retro log` and `retro show` print it.
pub fn checkpoint_text(
    ui: &Ui,
    id: &ObjectId,
    checkpoint: &Checkpoint,
    affix: Option<&Affix>,
    event_names: Option<&dyn Fn(&ObjectId) -> String>,
) -> String {
    let mut out = format!("{}\n", ui.yellow(&format!("checkpoint {id}")));
    if checkpoint.parents().len() > 1 {
        let parents: Vec<String> = checkpoint
            .parents()
            .iter()
            .map(|p| p.to_short_hex(12))
            .collect();
        out.push_str(&format!("Merge:   {}\n", parents.join(" ")));
    }
    out.push_str(&format!("Session: {}\n", checkpoint.session()));
    out.push_str(&format!("Date:    {}\n", date_text(checkpoint)));
    for (key, value) in checkpoint.fields() {
        if !matches!(key.as_str(), "session" | "date") {
            out.push_str(&format!(
                "{:<8} {value}\n",
                format!("{}:", capitalize(key.as_str()))
            ));
        }
    }
    out.push('\n');
    let message = String::from_utf8_lossy(checkpoint.message());
    for line in message.lines() {
        out.push_str(&format!("    {line}\n"));
    }
    if let Some(affix) = affix {
        if !affix.is_empty() {
            out.push('\n');
            let width = affix
                .partitions()
                .map(|(p, _)| p.as_str().len())
                .max()
                .unwrap_or(0);
            for (partition, ids) in affix.partitions() {
                let names = match event_names {
                    Some(name_of) => ids.iter().map(name_of).collect::<Vec<_>>().join(", "),
                    None => String::new(),
                };
                out.push_str(&format!(
                    "    {:<width$}  +{}  {}\n",
                    partition.as_str(),
                    ids.len(),
                    names,
                    width = width
                ));
            }
        }
    }
    out
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().collect::<String>() + chars.as_str(),
        None => String::new(),
    }
}

/// `cat-object -p`: a readable form of any object.
pub fn pretty_object(object: &Object) -> String {
    match object {
        Object::Event(event) => {
            let data = data_value(event.data());
            let body = serde_json::to_string_pretty(&data).unwrap_or_default();
            format!("event {}\n{body}\n", event.name())
        }
        Object::Affix(affix) => {
            let mut out = String::new();
            for (i, (partition, ids)) in affix.partitions().enumerate() {
                for id in ids {
                    out.push_str(&format!("{i} {partition} {id}\n"));
                }
            }
            out
        }
        Object::Checkpoint(checkpoint) => {
            let mut out = format!("affix {}\n", checkpoint.affix());
            for parent in checkpoint.parents() {
                out.push_str(&format!("parent {parent}\n"));
            }
            for (key, value) in checkpoint.fields() {
                out.push_str(&format!("{key} {value}\n"));
            }
            out.push('\n');
            let message = message_value(checkpoint.message());
            match message {
                Value::String(text) => out.push_str(&text),
                other => out.push_str(&serde_json::to_string_pretty(&other).unwrap_or_default()),
            }
            out.push('\n');
            out
        }
    }
}

/// A failed command's recorded error text as the HTTP API's error object, `{"code","message"}`:
/// a rejection is recorded as `code: message`; a broken handler as `handler … failed: …`, which
/// is `handler_failed` (the code `POST /apply` answers it with) with the text as its message.
pub fn failure_error(text: &str) -> serde_json::Value {
    let (code, message) = if text.starts_with("handler ") && text.contains(" failed: ") {
        ("handler_failed", text)
    } else {
        match text.split_once(": ") {
            Some((code, message))
                if !code.is_empty()
                    && code
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) =>
            {
                (code, message)
            }
            _ => ("rejected", text),
        }
    };
    serde_json::json!({"code": code, "message": message})
}
