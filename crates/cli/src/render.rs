//! How objects, checkpoints and events look: the human forms. Their `--json` twins are the
//! server's response bodies (`server::api`), one definition each.

use serde_json::Value;

use depot::{Affix, Checkpoint, Object, ObjectId};

use crate::ui::Ui;

pub use server::api::message_value;

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
            match event.version() {
                1 => format!("event {}\n{body}\n", event.name()),
                version => format!("event {} v{version}\n{body}\n", event.name()),
            }
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
        Object::Data(data) => {
            let json = data_value(data.json());
            let body = serde_json::to_string_pretty(&json).unwrap_or_default();
            let salt: String = data.salt().iter().map(|b| format!("{b:02x}")).collect();
            format!("salt {salt}\n{body}\n")
        }
    }
}
