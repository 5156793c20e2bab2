//! Commands: `{"path":"users/123","name":"createProfile","params":{...}}`, parsed and validated,
//! with the optional ids that travel with them: `"id"` (the command id: applying it twice writes
//! once), `"correlation_id"` and `"causation_id"` ([`CommandIds`]), kept in the checkpoint's
//! `command-id`, `correlation-id` and `causation-id` fields, never in its message.

use serde_json::{Map, Value};

use depot::PartitionName;

/// The longest command payload accepted, in bytes.
pub const MAX_COMMAND_BYTES: usize = 1 << 20;

/// Why a command payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// Not JSON at all.
    #[error("command is not valid JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object.
    #[error("command must be a JSON object like {{\"path\":\"users/123\",\"name\":\"create\",\"params\":{{}}}}")]
    NotAnObject,
    /// No `name`.
    #[error("command has no \"name\" (a non-empty string)")]
    MissingName,
    /// A bad `name`.
    #[error("command name '{0}' must be letters, digits, '_' or '-', starting with a letter")]
    BadName(String),
    /// No `path`.
    #[error("command has no \"path\" (a string such as \"users/123\" or \"_\")")]
    MissingPath,
    /// A bad `path`.
    #[error("command path '{path}' is invalid: {reason}")]
    BadPath {
        /// The path given.
        path: String,
        /// Why.
        reason: String,
    },
    /// `params` present but not an object.
    #[error("command \"params\" must be a JSON object, found {0}")]
    ParamsNotObject(&'static str),
    /// A key other than path, name, params and the ids.
    #[error("command has an unknown key \"{0}\" (expected path, name, params, id, correlation_id, causation_id)")]
    UnknownKey(String),
    /// A command id, correlation id or causation id that is not one token of the allowed
    /// characters and length.
    #[error("{what} '{}' is invalid: {reason}", depot::shown(value))]
    BadId {
        /// Which id (`command id`, `correlation id`, `causation id`).
        what: &'static str,
        /// The value given (at most 80 characters of it).
        value: String,
        /// Why.
        reason: String,
    },
    /// An id given twice with different values (in the JSON and as a flag or header).
    #[error(
        "{what} is given twice, as '{}' and as '{}'",
        depot::shown(first),
        depot::shown(second)
    )]
    IdGivenTwice {
        /// Which id.
        what: &'static str,
        /// The first value.
        first: String,
        /// The second value.
        second: String,
    },
    /// A key given twice in one object, at any depth (named by its path, `params.amount`): the
    /// command would be ambiguous.
    #[error("command has the key \"{0}\" twice (a duplicate key is ambiguous)")]
    DuplicateKey(String),
    /// Too large.
    #[error("command is {0} bytes, the limit is {MAX_COMMAND_BYTES}")]
    TooLarge(usize),
}

/// The longest command id, correlation id or causation id, in bytes.
pub const MAX_ID_BYTES: usize = 200;

/// Checks that `value` is one token: 1 to [`MAX_ID_BYTES`] bytes of ASCII letters, digits and
/// `- _ . : @ / + =` (a UUID, a W3C trace id, `sha256:<hex>`, `orders/42@3` all are).
pub fn check_id(what: &'static str, value: &str) -> Result<(), CommandError> {
    let bad = |reason: String| CommandError::BadId {
        what,
        value: value.chars().take(80).collect(),
        reason,
    };
    if value.is_empty() {
        return Err(bad("it is empty".to_owned()));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(bad(format!(
            "it is {} bytes, the limit is {MAX_ID_BYTES}",
            value.len()
        )));
    }
    if let Some(c) = value.chars().find(|c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@' | '/' | '+' | '='))
    }) {
        return Err(bad(format!(
            "'{}' is not allowed (ASCII letters, digits and - _ . : @ / + = are)",
            c.escape_default()
        )));
    }
    Ok(())
}

/// The ids a command carries besides its payload: each optional, each one token
/// ([`check_id`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandIds {
    /// The command id: a command whose id was already applied on the ref is not applied again;
    /// the original result comes back, marked replayed.
    pub id: Option<String>,
    /// The request, trace or workflow the command belongs to.
    pub correlation_id: Option<String>,
    /// What caused the command: an event, a message, a parent span.
    pub causation_id: Option<String>,
}

impl CommandIds {
    /// Whether no id is set.
    pub fn is_empty(&self) -> bool {
        self.id.is_none() && self.correlation_id.is_none() && self.causation_id.is_none()
    }

    /// The checkpoint fields these ids become (sorted by key, absent ones left out).
    pub fn fields(&self) -> Vec<(depot::FieldKey, depot::FieldValue)> {
        [
            (depot::CAUSATION_ID_FIELD, &self.causation_id),
            (depot::COMMAND_ID_FIELD, &self.id),
            (depot::CORRELATION_ID_FIELD, &self.correlation_id),
        ]
        .into_iter()
        .filter_map(|(key, value)| {
            let value = value.as_deref()?;
            Some((
                depot::FieldKey::new(key).expect("a valid constant key"),
                // Checked by `check_id`: one token, far below the field value limit.
                depot::FieldValue::new(value).expect("a checked id is a valid field value"),
            ))
        })
        .collect()
    }

    /// The ids a stored checkpoint carries.
    pub fn of_checkpoint(checkpoint: &depot::Checkpoint) -> CommandIds {
        let field = |key| checkpoint.field(key).map(str::to_owned);
        CommandIds {
            id: field(depot::COMMAND_ID_FIELD),
            correlation_id: field(depot::CORRELATION_ID_FIELD),
            causation_id: field(depot::CAUSATION_ID_FIELD),
        }
    }
}

/// A parsed command.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    path: String,
    name: String,
    params: Map<String, Value>,
    ids: CommandIds,
}

/// What kind of JSON value `value` is, for error messages ("a string", "an array", ...).
pub(crate) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Command {
    /// Parses and validates a command payload.
    pub fn parse(payload: &[u8]) -> Result<Command, CommandError> {
        if payload.len() > MAX_COMMAND_BYTES {
            return Err(CommandError::TooLarge(payload.len()));
        }
        let value: Value =
            serde_json::from_slice(payload).map_err(|e| CommandError::NotJson(e.to_string()))?;
        if let Some(path) = duplicate_key(payload) {
            return Err(CommandError::DuplicateKey(depot::shown(&path)));
        }
        let Value::Object(mut object) = value else {
            return Err(CommandError::NotAnObject);
        };
        if let Some(key) = object.keys().find(|k| {
            !matches!(
                k.as_str(),
                "path" | "name" | "params" | "id" | "correlation_id" | "causation_id"
            )
        }) {
            return Err(CommandError::UnknownKey(depot::shown(key)));
        }
        let mut id_of = |key: &str, what: &'static str| match object.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(value)) => {
                check_id(what, &value)?;
                Ok(Some(value))
            }
            Some(other) => Err(CommandError::BadId {
                what,
                value: other.to_string().chars().take(80).collect(),
                reason: format!("it must be a string, found {}", kind_of(&other)),
            }),
        };
        let ids = CommandIds {
            id: id_of("id", "command id")?,
            correlation_id: id_of("correlation_id", "correlation id")?,
            causation_id: id_of("causation_id", "causation id")?,
        };
        let name = match object.remove("name") {
            Some(Value::String(name)) if !name.is_empty() => name,
            _ => return Err(CommandError::MissingName),
        };
        let valid_name = name.len() <= 128
            && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid_name {
            return Err(CommandError::BadName(depot::shown(
                &name.chars().take(80).collect::<String>(),
            )));
        }
        let path = match object.remove("path") {
            Some(Value::String(path)) => path,
            _ => return Err(CommandError::MissingPath),
        };
        PartitionName::new(&path).map_err(|e| CommandError::BadPath {
            path: depot::shown(&path),
            reason: e.to_string(),
        })?;
        let params = match object.remove("params") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(params)) => params,
            Some(other) => return Err(CommandError::ParamsNotObject(kind_of(&other))),
        };
        Ok(Command {
            path,
            name,
            params,
            ids,
        })
    }

    /// The ids the command carries.
    pub fn ids(&self) -> &CommandIds {
        &self.ids
    }

    /// The command id, if any.
    pub fn id(&self) -> Option<&str> {
        self.ids.id.as_deref()
    }

    /// The command with the ids of `ids` added (checked first). An id the command already
    /// carries with another value is [`CommandError::IdGivenTwice`]; the same value is fine.
    pub fn with_ids(mut self, ids: CommandIds) -> Result<Command, CommandError> {
        for (what, mine, given) in [
            ("command id", &mut self.ids.id, ids.id),
            (
                "correlation id",
                &mut self.ids.correlation_id,
                ids.correlation_id,
            ),
            ("causation id", &mut self.ids.causation_id, ids.causation_id),
        ] {
            let Some(given) = given else { continue };
            check_id(what, &given)?;
            match mine {
                Some(first) if *first != given => {
                    return Err(CommandError::IdGivenTwice {
                        what,
                        first: first.clone(),
                        second: given,
                    })
                }
                _ => *mine = Some(given),
            }
        }
        Ok(self)
    }

    /// The command with the ids of `ids` that it does not carry yet (ambient ids, such as a
    /// W3C `traceparent`'s: the command's own win). Invalid ones are left out.
    pub fn or_ids(mut self, ids: CommandIds) -> Command {
        for (what, mine, given) in [
            ("command id", &mut self.ids.id, ids.id),
            (
                "correlation id",
                &mut self.ids.correlation_id,
                ids.correlation_id,
            ),
            ("causation id", &mut self.ids.causation_id, ids.causation_id),
        ] {
            if mine.is_none() {
                *mine = given.filter(|g| check_id(what, g).is_ok());
            }
        }
        self
    }

    /// The command as caused by `event` (a projection or a process manager reacting to it): its
    /// causation id is the event's id (`sha256:<hex>`) and its correlation id the one of the
    /// checkpoint that added the event (`correlation`, when it had one), else that checkpoint's
    /// id, so that a whole chain of reactions shares the correlation id of the command that
    /// started it. Ids the command already carries are kept.
    pub fn caused_by(mut self, event: &depot::EventRecord, correlation: Option<&str>) -> Command {
        if self.ids.causation_id.is_none() {
            self.ids.causation_id = Some(event.id.to_string());
        }
        if self.ids.correlation_id.is_none() {
            self.ids.correlation_id = Some(
                correlation
                    .filter(|c| check_id("correlation id", c).is_ok())
                    .map_or_else(|| event.checkpoint.to_string(), str::to_owned),
            );
        }
        self
    }

    /// Builds a command from parts (the path is validated).
    pub fn new(
        path: &str,
        name: &str,
        params: Map<String, Value>,
    ) -> Result<Command, CommandError> {
        let payload = serde_json::json!({"path": path, "name": name, "params": params});
        Command::parse(payload.to_string().as_bytes())
    }

    /// The aggregate path as given (`users/123`, `_`, or a kind alone for a new aggregate).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The command name: as given when parsed; in the manifest's spelling once the engine
    /// resolved it (what handlers see in [`crate::Context::command`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The parameters.
    pub fn params(&self) -> &Map<String, Value> {
        &self.params
    }

    /// The command with `path` replaced (after an anonymous aggregate got its id).
    pub fn with_path(mut self, path: String) -> Command {
        self.path = path;
        self
    }

    /// The command with its name replaced by the manifest's spelling of it (`Deposit` given,
    /// `deposit` registered: handlers, the checkpoint message and the reflog all say `deposit`).
    pub(crate) fn with_name(mut self, name: &str) -> Command {
        name.clone_into(&mut self.name);
        self
    }

    /// Compact canonical JSON: `{"path":…,"name":…,"params":…}`, the checkpoint message.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(64);
        out.push_str("{\"path\":");
        out.push_str(&Value::String(self.path.clone()).to_string());
        out.push_str(",\"name\":");
        out.push_str(&Value::String(self.name.clone()).to_string());
        out.push_str(",\"params\":");
        out.push_str(&Value::Object(self.params.clone()).to_string());
        out.push('}');
        out
    }
}

/// The path of the first key that appears twice in one JSON object, at any depth (`name`,
/// `params.amount`, `params.items[2].id`): serde_json keeps the last one silently, so a duplicate
/// would make the command ambiguous. Only called on payloads that already parsed as JSON (so the
/// nesting is within serde_json's recursion limit).
pub(crate) fn duplicate_key(payload: &[u8]) -> Option<String> {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use std::cell::RefCell;

    struct Walk<'a> {
        path: String,
        found: &'a RefCell<Option<String>>,
    }
    impl<'de> DeserializeSeed<'de> for Walk<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
            deserializer.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Walk<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0usize;
            while seq
                .next_element_seed(Walk {
                    path: format!("{}[{i}]", self.path),
                    found: self.found,
                })?
                .is_some()
            {
                i += 1;
            }
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                let path = if self.path.is_empty() {
                    key.clone()
                } else {
                    format!("{}.{key}", self.path)
                };
                if !seen.insert(key) && self.found.borrow().is_none() {
                    *self.found.borrow_mut() = Some(path.clone());
                }
                map.next_value_seed(Walk {
                    path,
                    found: self.found,
                })?;
            }
            Ok(())
        }
    }
    let found = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(payload);
    Walk {
        path: String::new(),
        found: &found,
    }
    .deserialize(&mut deserializer)
    .ok()?;
    found.into_inner()
}

/// go-retro accepts `createProfile` and `CreateProfile` alike: names compare with their first
/// letter lowercased.
pub fn normalize_command_name(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_ascii_lowercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Command::parse(text.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn parses_the_seed_command() {
        let c =
            Command::parse(br#"{"path":"users/123", "name":"createProfile", "params": {"a":1}}"#)
                .unwrap();
        assert_eq!(c.path(), "users/123");
        assert_eq!(c.name(), "createProfile");
        assert_eq!(
            c.to_json(),
            r#"{"path":"users/123","name":"createProfile","params":{"a":1}}"#
        );
    }

    #[test]
    fn every_malformation_has_a_clear_error() {
        assert!(err("{").starts_with("command is not valid JSON"));
        assert!(err("[1]").starts_with("command must be a JSON object"));
        assert_eq!(
            err(r#"{"path":"a/1"}"#),
            "command has no \"name\" (a non-empty string)"
        );
        assert_eq!(
            err(r#"{"name":"x"}"#),
            "command has no \"path\" (a string such as \"users/123\" or \"_\")"
        );
        assert!(
            err(r#"{"name":"x","path":"../etc"}"#).starts_with("command path '../etc' is invalid")
        );
        assert_eq!(
            err(r#"{"name":"x","path":"a/1","params":[1]}"#),
            "command \"params\" must be a JSON object, found an array"
        );
        assert!(err(r#"{"name":"has space","path":"a/1"}"#).starts_with("command name 'has space'"));
        assert!(err(r#"{"name":"x","path":"a/1","extra":1}"#).contains("unknown key \"extra\""));
    }

    #[test]
    fn d12_duplicate_keys_are_refused_at_every_depth_naming_their_path() {
        for (payload, path) in [
            (r#"{"path":"a/1","path":"a/2","name":"x"}"#, "path"),
            (
                r#"{"path":"a/1","name":"x","params":{"amount":1,"amount":2}}"#,
                "params.amount",
            ),
            (
                r#"{"path":"a/1","name":"x","params":{"to":{"id":1,"id":1}}}"#,
                "params.to.id",
            ),
            (
                r#"{"path":"a/1","name":"x","params":{"items":[{"id":1},{"id":2,"id":3}]}}"#,
                "params.items[1].id",
            ),
        ] {
            assert_eq!(
                err(payload),
                format!("command has the key \"{path}\" twice (a duplicate key is ambiguous)"),
                "{payload}"
            );
        }
        // The same key in different objects is no duplicate.
        Command::parse(
            br#"{"path":"a/1","name":"x","params":{"a":{"id":1},"b":{"id":1},"l":[{"id":1},{"id":2}]}}"#,
        )
        .unwrap();
    }

    #[test]
    fn names_compare_in_either_camel_case_style() {
        assert_eq!(normalize_command_name("CreateProfile"), "createProfile");
        assert_eq!(normalize_command_name("createProfile"), "createProfile");
    }
}
