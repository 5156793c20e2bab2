//! Decoding: strict and total. Every malformation is a [`DecodeError`] naming what is wrong; no input
//! panics, and whatever decodes re-encodes to the same bytes (non-canonical forms are refused).

use std::collections::BTreeMap;
use std::str;

use super::{
    parse_date, Affix, Checkpoint, Data, Event, Kind, Object, DATE_KEY, MESSAGE_DATA_KEY, SALT_LEN,
    SESSION_KEY,
};
use crate::hash::ObjectId;
use crate::name::{EventName, FieldKey, FieldValue, NameError, PartitionName};

/// The longest header accepted before the NUL byte.
const MAX_HEADER: usize = 512;

/// Why bytes are not a valid object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// No NUL byte ends the header within its first 512 bytes.
    #[error("object has no header: no NUL byte in the first {MAX_HEADER} bytes")]
    MissingHeaderEnd,
    /// The header is not ASCII text of the expected shape.
    #[error("malformed object header '{0}'")]
    BadHeader(String),
    /// The header names a kind that does not exist.
    #[error("unknown object kind '{0}'")]
    UnknownKind(String),
    /// An event's encoding is not `json`, `sealed`, or one of them with `;v=<N>`.
    #[error("event encoding '{0}' is not supported (only 'json', 'sealed', 'json;v=<N>' and 'sealed;v=<N>')")]
    UnknownEncoding(String),
    /// An event's `;v=<N>` carries a version that is never written: not a decimal number
    /// of at least 2 without leading zeros (1 is written without it).
    #[error("event encoding '{0}' has an invalid schema version (expected 'json;v=<N>' or 'sealed;v=<N>', N a decimal number >= 2 without leading zeros)")]
    BadEventVersion(String),
    /// A sealed event's body is not exactly `data sha256:<64 lowercase hex>\n`.
    #[error("sealed event body is not 'data sha256:<hex>\\n': {0}")]
    BadSealedBody(String),
    /// A data object's body does not start with `salt <32 lowercase hex>\n`.
    #[error("data object does not start with 'salt <32 lowercase hex>\\n'")]
    BadSalt,
    /// The declared body length differs from the actual one.
    #[error("header declares a body of {declared} bytes but the body has {actual}")]
    LengthMismatch {
        /// The length in the header.
        declared: usize,
        /// The bytes actually present.
        actual: usize,
    },
    /// The object is of another kind than expected.
    #[error("expected a {expected} object, found a {found}")]
    WrongKind {
        /// What the caller wanted.
        expected: Kind,
        /// What the bytes are.
        found: Kind,
    },
    /// A name inside the object is invalid.
    #[error("invalid name in {kind}: {source}")]
    BadName {
        /// The object kind.
        kind: Kind,
        /// What was wrong with the name.
        source: NameError,
    },
    /// An affix line is malformed.
    #[error("affix line {line}: {reason}")]
    BadAffixLine {
        /// The 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint header line is malformed.
    #[error("checkpoint line {line}: {reason}")]
    BadCheckpointLine {
        /// The 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A required checkpoint field is missing.
    #[error("checkpoint has no '{0}' field")]
    MissingField(&'static str),
    /// The body is not valid UTF-8 where text is required.
    #[error("{0} body is not valid UTF-8")]
    NotUtf8(Kind),
}

/// Splits `<header>\0<body>` and checks the declared length.
fn split(bytes: &[u8]) -> Result<(&str, &[u8]), DecodeError> {
    let window = &bytes[..bytes.len().min(MAX_HEADER)];
    let nul = window
        .iter()
        .position(|&b| b == 0)
        .ok_or(DecodeError::MissingHeaderEnd)?;
    let header = str::from_utf8(&bytes[..nul])
        .map_err(|_| DecodeError::BadHeader(String::from_utf8_lossy(&bytes[..nul]).into_owned()))?;
    Ok((header, &bytes[nul + 1..]))
}

fn parse_len(header: &str, token: &str) -> Result<usize, DecodeError> {
    let canonical = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    if !canonical {
        return Err(DecodeError::BadHeader(header.to_owned()));
    }
    token
        .parse()
        .map_err(|_| DecodeError::BadHeader(header.to_owned()))
}

fn check_len(declared: usize, body: &[u8]) -> Result<(), DecodeError> {
    if declared != body.len() {
        return Err(DecodeError::LengthMismatch {
            declared,
            actual: body.len(),
        });
    }
    Ok(())
}

/// The kind named by the header, checked for shape but without decoding the body.
pub(super) fn kind_of(bytes: &[u8]) -> Result<Kind, DecodeError> {
    let (header, _) = split(bytes)?;
    match header.split(' ').next() {
        Some("event") => Ok(Kind::Event),
        Some("affix") => Ok(Kind::Affix),
        Some("checkpoint") => Ok(Kind::Checkpoint),
        Some("data") => Ok(Kind::Data),
        Some(other) => Err(DecodeError::UnknownKind(other.to_owned())),
        None => Err(DecodeError::BadHeader(header.to_owned())),
    }
}

pub(super) fn decode(bytes: &[u8]) -> Result<Object, DecodeError> {
    let (header, body) = split(bytes)?;
    let tokens: Vec<&str> = header.split(' ').collect();
    match tokens.as_slice() {
        ["event", encoding, name, len] => {
            let version = parse_event_format(encoding)?;
            check_len(parse_len(header, len)?, body)?;
            let name = EventName::new(name).map_err(|source| DecodeError::BadName {
                kind: Kind::Event,
                source,
            })?;
            if encoding.starts_with("sealed") {
                let event = Event::new_sealed(name, decode_sealed(body)?);
                return Ok(Object::Event(event.with_version(version)));
            }
            Ok(Object::Event(Event::new(name, body).with_version(version)))
        }
        ["data", len] => {
            check_len(parse_len(header, len)?, body)?;
            decode_data(body).map(Object::Data)
        }
        ["affix", len] => {
            check_len(parse_len(header, len)?, body)?;
            decode_affix(body).map(Object::Affix)
        }
        ["checkpoint", len] => {
            check_len(parse_len(header, len)?, body)?;
            decode_checkpoint(body).map(Object::Checkpoint)
        }
        [kind, ..] if !matches!(*kind, "event" | "affix" | "checkpoint" | "data") => {
            Err(DecodeError::UnknownKind((*kind).to_owned()))
        }
        _ => Err(DecodeError::BadHeader(header.to_owned())),
    }
}

/// The schema version an event's `<format>` token declares: `json` and `sealed` are 1,
/// `json;v=<N>` and `sealed;v=<N>` are N (N a decimal number >= 2 without leading zeros, fitting a
/// u32); anything else is refused.
pub fn parse_event_format(format: &str) -> Result<u32, DecodeError> {
    let unknown = || DecodeError::UnknownEncoding(format.to_owned());
    let rest = format
        .strip_prefix("json")
        .or_else(|| format.strip_prefix("sealed"))
        .ok_or_else(unknown)?;
    if rest.is_empty() {
        return Ok(super::DEFAULT_EVENT_VERSION);
    }
    let Some(digits) = rest.strip_prefix(";v=") else {
        return Err(unknown());
    };
    let bad = || DecodeError::BadEventVersion(format.to_owned());
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
        return Err(bad());
    }
    match digits.parse::<u32>() {
        Ok(version) if version >= 2 => Ok(version),
        _ => Err(bad()),
    }
}

/// A sealed event's body: exactly `data sha256:<64 lowercase hex>\n`.
fn decode_sealed(body: &[u8]) -> Result<ObjectId, DecodeError> {
    let bad = |reason: &str| DecodeError::BadSealedBody(reason.to_owned());
    let text = str::from_utf8(body).map_err(|_| bad("not UTF-8"))?;
    let line = text
        .strip_prefix("data ")
        .and_then(|rest| rest.strip_suffix('\n'))
        .ok_or_else(|| bad("expected one line 'data <id>'"))?;
    let id: ObjectId = line
        .parse()
        .map_err(|e| bad(&format!("bad object id: {e}")))?;
    // Canonical only: the id must re-print as it was written (lowercase hex).
    if id.to_string() != line {
        return Err(bad("the id is not in its canonical lowercase form"));
    }
    Ok(id)
}

/// A data object's body: `salt <32 lowercase hex>\n` and the JSON bytes, kept as they are.
fn decode_data(body: &[u8]) -> Result<Data, DecodeError> {
    let prefix_len = 5 + 2 * SALT_LEN + 1;
    if body.len() < prefix_len || &body[..5] != b"salt " || body[prefix_len - 1] != b'\n' {
        return Err(DecodeError::BadSalt);
    }
    let hex_digits = &body[5..prefix_len - 1];
    if !hex_digits
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    {
        return Err(DecodeError::BadSalt);
    }
    let mut salt = [0u8; SALT_LEN];
    hex::decode_to_slice(hex_digits, &mut salt).map_err(|_| DecodeError::BadSalt)?;
    Ok(Data::new(salt, &body[prefix_len..]))
}

fn parse_id(text: &str, line: usize, kind: Kind) -> Result<ObjectId, DecodeError> {
    text.parse().map_err(|err| {
        let reason = format!("bad object id: {err}");
        match kind {
            Kind::Affix => DecodeError::BadAffixLine { line, reason },
            _ => DecodeError::BadCheckpointLine { line, reason },
        }
    })
}

fn decode_affix(body: &[u8]) -> Result<Affix, DecodeError> {
    let text = str::from_utf8(body).map_err(|_| DecodeError::NotUtf8(Kind::Affix))?;
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(DecodeError::BadAffixLine {
            line: text.lines().count(),
            reason: "last line does not end with a newline".to_owned(),
        });
    }
    let mut affix = Affix::new();
    let mut current: Option<(usize, PartitionName)> = None;
    for (number, line) in text.split_terminator('\n').enumerate() {
        let line_no = number + 1;
        let bad = |reason: &str| DecodeError::BadAffixLine {
            line: line_no,
            reason: reason.to_owned(),
        };
        let mut parts = line.split(' ');
        let (Some(index), Some(partition), Some(id), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected '<index> <partition> sha256:<hex>'"));
        };
        let index: usize = parse_len(line, index).map_err(|_| bad("index is not a number"))?;
        let partition =
            PartitionName::stored(partition).map_err(|source| DecodeError::BadName {
                kind: Kind::Affix,
                source,
            })?;
        let id = parse_id(id, line_no, Kind::Affix)?;
        match &current {
            None if index != 0 => return Err(bad("the first partition's index must be 0")),
            Some((prev_index, prev)) if *prev == partition && *prev_index != index => {
                return Err(bad("events of one partition must share its index"));
            }
            Some((_, prev)) if *prev == partition => {}
            Some((prev_index, prev)) => {
                if partition <= *prev {
                    return Err(bad("partitions are not in lexicographic order"));
                }
                if index != prev_index + 1 {
                    return Err(bad("partition indexes must count up from 0 by one"));
                }
            }
            None => {}
        }
        current = Some((index, partition.clone()));
        affix.push(partition, id);
    }
    Ok(affix)
}

fn decode_checkpoint(body: &[u8]) -> Result<Checkpoint, DecodeError> {
    // Headers are text up to the first empty line; the message is arbitrary bytes after it.
    let split_at =
        body.windows(2)
            .position(|w| w == b"\n\n")
            .ok_or(DecodeError::BadCheckpointLine {
                line: 1,
                reason: "no empty line ends the headers".to_owned(),
            })?;
    let head =
        str::from_utf8(&body[..split_at]).map_err(|_| DecodeError::NotUtf8(Kind::Checkpoint))?;
    let rest = &body[split_at + 2..];
    let message = rest
        .strip_suffix(b"\n")
        .ok_or(DecodeError::BadCheckpointLine {
            line: head.lines().count() + 2,
            reason: "the message does not end with a newline".to_owned(),
        })?;

    let mut affix = None;
    let mut parents = Vec::new();
    let mut fields: BTreeMap<FieldKey, FieldValue> = BTreeMap::new();
    for (number, line) in head.split('\n').enumerate() {
        let line_no = number + 1;
        let bad = |reason: String| DecodeError::BadCheckpointLine {
            line: line_no,
            reason,
        };
        let (key, value) = line
            .split_once(' ')
            .ok_or_else(|| bad(format!("'{line}' is not '<key> <value>'")))?;
        match key {
            "affix" if line_no == 1 => affix = Some(parse_id(value, line_no, Kind::Checkpoint)?),
            "affix" => return Err(bad("'affix' must be the first line, once".to_owned())),
            "parent" if affix.is_some() && fields.is_empty() => {
                parents.push(parse_id(value, line_no, Kind::Checkpoint)?)
            }
            "parent" => return Err(bad("'parent' lines must follow 'affix'".to_owned())),
            _ if affix.is_none() => return Err(bad("the first line must be 'affix'".to_owned())),
            _ => {
                let key = FieldKey::new(key).map_err(|source| DecodeError::BadName {
                    kind: Kind::Checkpoint,
                    source,
                })?;
                let value = FieldValue::new(value).map_err(|source| DecodeError::BadName {
                    kind: Kind::Checkpoint,
                    source,
                })?;
                if let Some((last, _)) = fields.last_key_value() {
                    if key <= *last {
                        return Err(bad(format!(
                            "field '{key}' is out of order or repeated (fields are sorted by key)"
                        )));
                    }
                }
                if key.as_str() == DATE_KEY {
                    parse_date(value.as_str()).map_err(bad)?;
                }
                if key.as_str() == crate::checkpoint_log::LOG_KEY {
                    crate::checkpoint_log::LogHead::parse(value.as_str()).map_err(bad)?;
                }
                if key.as_str() == MESSAGE_DATA_KEY {
                    let id: ObjectId = value
                        .as_str()
                        .parse()
                        .map_err(|e| bad(format!("message-data is not an object id: {e}")))?;
                    if id.to_string() != value.as_str() {
                        return Err(bad("message-data is not a canonical id".to_owned()));
                    }
                    if !message.is_empty() {
                        return Err(bad(
                            "a checkpoint with message-data has an empty message".to_owned()
                        ));
                    }
                }
                if key.as_str() == SESSION_KEY && value.as_str().contains(char::is_whitespace) {
                    return Err(bad(format!(
                        "session '{value}' is not one token (no whitespace)"
                    )));
                }
                fields.insert(key, value);
            }
        }
    }
    let affix = affix.ok_or(DecodeError::MissingField("affix"))?;
    if !fields.keys().any(|k| k.as_str() == SESSION_KEY) {
        return Err(DecodeError::MissingField(SESSION_KEY));
    }
    Ok(Checkpoint::with_fields(affix, parents, fields, message))
}
