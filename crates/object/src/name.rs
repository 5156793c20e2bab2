//! Validated names that end up inside objects: partitions, event names, checkpoint field keys and
//! values.
//!
//! Every constructor checks its input, so a value of these types is always safe to encode: it cannot
//! break the line-oriented affix and checkpoint formats, and a partition name can never be used to
//! escape a directory or smuggle a control character into an index.

use std::fmt;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("{what} is empty")]
    Empty {
        /// What kind of name.
        what: &'static str,
    },
    /// The name is longer than allowed.
    #[error("{what} '{name}' is {len} bytes long, the limit is {max}")]
    TooLong {
        /// What kind of name.
        what: &'static str,
        /// The offending name (cut to 80 bytes).
        name: String,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The name holds a character it may not.
    #[error("{what} '{name}' contains {found}, which is not allowed")]
    BadCharacter {
        /// What kind of name.
        what: &'static str,
        /// The offending name.
        name: String,
        /// A description of the character.
        found: String,
    },
    /// A partition has an empty, `.` or `..` segment.
    #[error("partition '{name}' has a bad segment '{segment}': segments must be non-empty and not '.' or '..'")]
    BadSegment {
        /// The offending name.
        name: String,
        /// The segment.
        segment: String,
    },
}

fn cut(name: &str) -> String {
    let mut end = name.len().min(80);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    shown(&name[..end])
}

/// Whether `c` is invisible or can disguise the text around it: a control character (C0, DEL,
/// C1), a Unicode format character (category Cf: the bidi controls such as U+202E, zero-width
/// spaces and joiners, the byte-order mark, tag characters …), or a line or paragraph separator.
pub fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c as u32,
            0x00AD
                | 0x0600..=0x0605
                | 0x061C
                | 0x06DD
                | 0x070F
                | 0x0890..=0x0891
                | 0x08E2
                | 0x180E
                | 0x200B..=0x200F
                | 0x2028..=0x202E
                | 0x2060..=0x2064
                | 0x2066..=0x206F
                | 0xFEFF
                | 0xFFF9..=0xFFFB
                | 0x110BD
                | 0x110CD
                | 0x13430..=0x1343F
                | 0x1BCA0..=0x1BCA3
                | 0x1D173..=0x1D17A
                | 0xE0001
                | 0xE0020..=0xE007F
        )
}

/// Escapes the invisible characters of `text` ([`is_invisible`]) as `\n`, `\r`, `\t` or
/// `\u{…}`, leaving everything else as it is: safe to print on a terminal (no ANSI escape, no
/// bidi reordering) without touching text that was already escaped.
pub fn escape_invisible(text: &str) -> String {
    if !text.chars().any(is_invisible) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_invisible(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// User text (a revision, a ref or partition name, a command name, a key) as an error message
/// echoes it: backslashes doubled and invisible characters escaped ([`escape_invisible`]), so the
/// message shows exactly what was given and a terminal cannot be driven by it. Every error that
/// quotes user input renders it through this.
pub fn shown(text: &str) -> String {
    escape_invisible(&text.replace('\\', "\\\\"))
}

fn describe(c: char) -> String {
    match c {
        '\0' => "a NUL byte".to_owned(),
        ' ' => "a space".to_owned(),
        c if c.is_whitespace() => format!("whitespace ({})", c.escape_debug()),
        c if c.is_control() => {
            format!("a control character ({})", escape_invisible(&c.to_string()))
        }
        c if is_invisible(c) => format!(
            "an invisible or bidi format character ({})",
            escape_invisible(&c.to_string())
        ),
        c => format!("'{c}'"),
    }
}

fn check_chars(
    what: &'static str,
    name: &str,
    max: usize,
    refuse: impl Fn(char) -> bool,
) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    if name.len() > max {
        return Err(NameError::TooLong {
            what,
            name: cut(name),
            len: name.len(),
            max,
        });
    }
    if let Some(c) = name.chars().find(|&c| refuse(c)) {
        return Err(NameError::BadCharacter {
            what,
            name: cut(name),
            found: describe(c),
        });
    }
    Ok(())
}

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = NameError;
            fn try_from(value: &str) -> Result<Self, Self::Error> {
                $name::new(value)
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                $name::new(&value)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(value: &str) -> Result<Self, Self::Err> {
                $name::new(value)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// The name of a partition (an aggregate's stream), such as `users/123` or `_`.
    ///
    /// Segments separated by `/` are non-empty and never `.` or `..`; no whitespace, control
    /// characters or NUL; at most [`PartitionName::MAX_LEN`] bytes.
    PartitionName
);

impl PartitionName {
    /// The longest partition name, in bytes.
    pub const MAX_LEN: usize = 255;

    /// Validates a new partition name (a command's path, an event's partition, an import): the
    /// stored rules ([`PartitionName::stored`]) and no invisible or bidi format character
    /// ([`is_invisible`]: U+202E would make `accounts/\u{202e}cilA` display as another name).
    pub fn new(name: &str) -> Result<PartitionName, NameError> {
        check_chars("partition", name, Self::MAX_LEN, |c| {
            c.is_whitespace() || is_invisible(c)
        })?;
        Self::stored(name)
    }

    /// Validates a partition name read from an object or an index. go-retro does not restrict
    /// partition names beyond what its affix lines can hold, so format characters are accepted
    /// here (a depot go-retro wrote stays readable); only whitespace, control characters and bad
    /// segments are refused, as they always were.
    pub fn stored(name: &str) -> Result<PartitionName, NameError> {
        check_chars("partition", name, Self::MAX_LEN, |c| {
            c.is_whitespace() || c.is_control()
        })?;
        if let Some(segment) = name
            .split('/')
            .find(|s| s.is_empty() || *s == "." || *s == "..")
        {
            return Err(NameError::BadSegment {
                name: cut(name),
                segment: segment.to_owned(),
            });
        }
        Ok(PartitionName(name.to_owned()))
    }

    /// The first segment: the aggregate kind (`users` for `users/123`).
    pub fn kind(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }
}

string_newtype!(
    /// The name of an event type, such as `AccountOpened`: no whitespace or control characters, at
    /// most [`EventName::MAX_LEN`] bytes.
    EventName
);

impl EventName {
    /// The longest event name, in bytes.
    pub const MAX_LEN: usize = 255;

    /// Validates an event name.
    pub fn new(name: &str) -> Result<EventName, NameError> {
        check_chars("event name", name, Self::MAX_LEN, |c| {
            c.is_whitespace() || c.is_control()
        })?;
        Ok(EventName(name.to_owned()))
    }
}

string_newtype!(
    /// A checkpoint header key such as `session` or `date`: ASCII letters, digits, `-` and `_`.
    FieldKey
);

impl FieldKey {
    /// The longest key, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Validates a header key. `affix` and `parent` are structural and refused here.
    pub fn new(key: &str) -> Result<FieldKey, NameError> {
        check_chars("checkpoint field key", key, Self::MAX_LEN, |c| {
            !(c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })?;
        if key == "affix" || key == "parent" {
            return Err(NameError::BadCharacter {
                what: "checkpoint field key",
                name: key.to_owned(),
                found: "a reserved key".to_owned(),
            });
        }
        Ok(FieldKey(key.to_owned()))
    }
}

string_newtype!(
    /// A checkpoint header value: one line, no control characters, at most
    /// [`FieldValue::MAX_LEN`] bytes.
    FieldValue
);

impl FieldValue {
    /// The longest value, in bytes.
    pub const MAX_LEN: usize = 4096;

    /// Validates a header value.
    pub fn new(value: &str) -> Result<FieldValue, NameError> {
        check_chars("checkpoint field value", value, Self::MAX_LEN, |c| {
            c.is_control()
        })?;
        Ok(FieldValue(value.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_accept_paths_and_the_root() {
        for ok in ["users/123", "_", "a/b/c", "session/DEAD-BEEF", "ünïcode/1"] {
            assert!(PartitionName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn partitions_refuse_escapes_whitespace_and_control_characters() {
        for bad in [
            "", "/a", "a/", "a//b", "../x", "a/./b", "a b", "a\tb", "a\0b", "a\nb",
        ] {
            assert!(PartitionName::new(bad).is_err(), "{bad:?}");
        }
        assert!(PartitionName::new(&"x".repeat(256)).is_err());
        assert_eq!(
            PartitionName::new("a b").unwrap_err().to_string(),
            "partition 'a b' contains a space, which is not allowed"
        );
    }

    #[test]
    fn d12_partitions_refuse_bidi_and_invisible_format_characters_on_write() {
        for (bad, found) in [
            ("accounts/\u{202e}cilA", "\\u{202e}"),
            ("accounts/a\u{200b}b", "\\u{200b}"),
            ("accounts/\u{2066}x", "\\u{2066}"),
            ("accounts/\u{feff}x", "\\u{feff}"),
            ("accounts/a\u{85}", "\\u{85}"),
            ("accounts/\u{1b}[31m", "\\u{1b}"),
        ] {
            let text = PartitionName::new(bad).unwrap_err().to_string();
            assert!(text.contains(found), "{text}");
            assert!(!text.chars().any(is_invisible), "{text:?}");
        }
        // What go-retro may have written stays readable.
        assert!(PartitionName::stored("accounts/\u{202e}cilA").is_ok());
        assert!(PartitionName::stored("accounts/a b").is_err());
        assert!(PartitionName::new("ünïcode/名前").is_ok());
    }

    #[test]
    fn d12_shown_escapes_what_could_drive_a_terminal() {
        assert_eq!(shown("HEAD\u{1b}[2J"), "HEAD\\u{1b}[2J");
        assert_eq!(shown("a\u{202e}b\nc\\"), "a\\u{202e}b\\nc\\\\");
        assert_eq!(shown("plain/ü"), "plain/ü");
    }

    #[test]
    fn event_names_refuse_whitespace() {
        assert!(EventName::new("AccountOpened").is_ok());
        assert!(EventName::new("has space").is_err());
        assert!(EventName::new("").is_err());
    }

    #[test]
    fn field_keys_and_values_are_single_line() {
        assert!(FieldKey::new("session").is_ok());
        assert!(FieldKey::new("parent").is_err());
        assert!(FieldKey::new("a b").is_err());
        assert!(FieldValue::new("DEADBEEF-SESSIONID").is_ok());
        assert!(FieldValue::new("two\nlines").is_err());
    }
}
