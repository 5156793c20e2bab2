//! Encoding: the one place that frames `<kind> … <len>\0<body>`.

use std::io::Write;

use super::{Affix, Checkpoint, Data, Event, Object};

pub(super) fn encode(object: &Object) -> Vec<u8> {
    match object {
        Object::Event(event) => encode_event(event),
        Object::Affix(affix) => frame("affix", &affix_body(affix)),
        Object::Checkpoint(checkpoint) => frame("checkpoint", &checkpoint_body(checkpoint)),
        Object::Data(data) => frame("data", &data_body(data)),
    }
}

fn frame(header: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len() + 24 + body.len());
    write!(out, "{header} {}", body.len()).expect("writing to a Vec cannot fail");
    out.push(0);
    out.extend_from_slice(body);
    out
}

fn encode_event(event: &Event) -> Vec<u8> {
    let version = match event.version() {
        super::DEFAULT_EVENT_VERSION => String::new(),
        n => format!(";v={n}"),
    };
    match event.sealed_data() {
        None => frame(
            &format!("event json{version} {}", event.name()),
            event.data(),
        ),
        Some(data_id) => frame(
            &format!("event sealed{version} {}", event.name()),
            format!("data {data_id}\n").as_bytes(),
        ),
    }
}

fn data_body(data: &Data) -> Vec<u8> {
    let mut body = Vec::with_capacity(38 + data.json().len());
    writeln!(body, "salt {}", hex::encode(data.salt())).expect("writing to a Vec cannot fail");
    body.extend_from_slice(data.json());
    body
}

fn affix_body(affix: &Affix) -> Vec<u8> {
    let mut body = Vec::with_capacity(affix.event_count() * 96);
    for (index, (partition, events)) in affix.partitions().enumerate() {
        for id in events {
            writeln!(body, "{index} {partition} {id}").expect("writing to a Vec cannot fail");
        }
    }
    body
}

fn checkpoint_body(checkpoint: &Checkpoint) -> Vec<u8> {
    let mut body = Vec::with_capacity(256 + checkpoint.stored_message().len());
    writeln!(body, "affix {}", checkpoint.affix()).expect("writing to a Vec cannot fail");
    for parent in checkpoint.parents() {
        writeln!(body, "parent {parent}").expect("writing to a Vec cannot fail");
    }
    for (key, value) in checkpoint.fields() {
        writeln!(body, "{key} {value}").expect("writing to a Vec cannot fail");
    }
    body.push(b'\n');
    body.extend_from_slice(checkpoint.stored_message());
    body.push(b'\n');
    body
}
