//! Object ids: the SHA-256 names of encoded objects, their text form and short prefixes.
//!
//! An [`ObjectId`] is a fixed-size, `Copy` value: the 32 bytes of a SHA-256 digest (the only
//! algorithm today; [`ObjectId::kind`] names it as a [`HashKind`], so the text form and callers
//! already say which). Its text form is `sha256:<64 lowercase hex>`. A
//! [`Prefix`] is a short hex form (at least [`Prefix::MIN_LEN`] characters) that a store can resolve to a
//! unique id.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// The hash algorithms an id can be made with. Only SHA-256 exists today.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum HashKind {
    /// SHA-256, written `sha256:` in text.
    Sha256,
}

impl HashKind {
    /// The text tag before the colon.
    pub fn name(self) -> &'static str {
        match self {
            HashKind::Sha256 => "sha256",
        }
    }
}

/// The name of an object: the SHA-256 of its encoded bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    bytes: [u8; 32],
}

/// Why a text could not be read as an [`ObjectId`] or a [`Prefix`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseIdError {
    /// The text does not start with `sha256:`.
    #[error("object id '{0}' does not start with 'sha256:'")]
    MissingKind(String),
    /// The hex part is not 64 characters long.
    #[error("object id '{text}' has {len} hex digits, expected 64")]
    WrongLength {
        /// The text as given.
        text: String,
        /// How many hex digits it had.
        len: usize,
    },
    /// A character is not a lowercase hex digit.
    #[error("'{0}' is not lowercase hexadecimal")]
    NotHex(String),
    /// A prefix shorter than the minimum.
    #[error("prefix '{0}' is too short: give at least 4 hex digits")]
    PrefixTooShort(String),
}

impl ObjectId {
    /// The length of an id in bytes.
    pub const LEN: usize = 32;

    /// The id of `encoded`: SHA-256 over the whole encoded object (header, NUL and body).
    pub fn of(encoded: &[u8]) -> ObjectId {
        ObjectId::from_bytes(Sha256::digest(encoded).into())
    }

    /// Wraps raw digest bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> ObjectId {
        ObjectId { bytes }
    }

    /// Reads raw digest bytes from a slice of exactly 32 bytes.
    pub fn from_slice(slice: &[u8]) -> Option<ObjectId> {
        let bytes: [u8; 32] = slice.try_into().ok()?;
        Some(ObjectId { bytes })
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// The algorithm that made this id.
    pub fn kind(&self) -> HashKind {
        HashKind::Sha256
    }

    /// 64 lowercase hex digits, without the `sha256:` tag.
    pub fn to_hex(&self) -> String {
        hex::encode(self.bytes)
    }

    /// The first `len` hex digits (clamped to 4..=64), for display.
    pub fn to_short_hex(&self, len: usize) -> String {
        let mut hex = self.to_hex();
        hex.truncate(len.clamp(Prefix::MIN_LEN, 64));
        hex
    }

    /// Parses 64 lowercase hex digits (no tag).
    pub fn from_hex(text: &str) -> Result<ObjectId, ParseIdError> {
        if text.len() != 64 {
            return Err(ParseIdError::WrongLength {
                text: text.to_owned(),
                len: text.len(),
            });
        }
        if !is_lower_hex(text) {
            return Err(ParseIdError::NotHex(text.to_owned()));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes)
            .map_err(|_| ParseIdError::NotHex(text.to_owned()))?;
        Ok(ObjectId { bytes })
    }

    /// The first byte, used to fan out indexes.
    pub fn first_byte(&self) -> u8 {
        self.bytes[0]
    }
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl FromStr for ObjectId {
    type Err = ParseIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let hex = text
            .strip_prefix("sha256:")
            .ok_or_else(|| ParseIdError::MissingKind(text.to_owned()))?;
        ObjectId::from_hex(hex).map_err(|err| match err {
            ParseIdError::WrongLength { len, .. } => ParseIdError::WrongLength {
                text: text.to_owned(),
                len,
            },
            other => other,
        })
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId(sha256:{})", self.to_short_hex(12))
    }
}

/// A short hex form of an id (at least 4 digits), resolved by a store to the unique id it starts.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Prefix {
    hex: String,
}

impl Prefix {
    /// The fewest hex digits a prefix may have.
    pub const MIN_LEN: usize = 4;

    /// The hex digits.
    pub fn as_str(&self) -> &str {
        &self.hex
    }

    /// True when `id` starts with this prefix.
    pub fn matches(&self, id: &ObjectId) -> bool {
        id.to_hex().starts_with(&self.hex)
    }

    /// The smallest id that starts with this prefix (the prefix padded with zeros).
    pub fn lower_bound(&self) -> ObjectId {
        let mut padded = self.hex.clone();
        while padded.len() < 64 {
            padded.push('0');
        }
        ObjectId::from_hex(&padded).expect("a validated prefix padded with zeros is valid hex")
    }
}

impl FromStr for Prefix {
    type Err = ParseIdError;

    /// Accepts `abcd…` or `sha256:abcd…`, 4 to 64 lowercase hex digits.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let hex = text.strip_prefix("sha256:").unwrap_or(text);
        if hex.len() < Prefix::MIN_LEN {
            return Err(ParseIdError::PrefixTooShort(text.to_owned()));
        }
        if hex.len() > 64 {
            return Err(ParseIdError::WrongLength {
                text: text.to_owned(),
                len: hex.len(),
            });
        }
        if !is_lower_hex(hex) {
            return Err(ParseIdError::NotHex(text.to_owned()));
        }
        Ok(Prefix {
            hex: hex.to_owned(),
        })
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOO: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    #[test]
    fn id_of_foo_matches_the_known_digest() {
        assert_eq!(ObjectId::of(b"foo").to_string(), FOO);
    }

    #[test]
    fn parse_and_display_round_trip() {
        let id: ObjectId = FOO.parse().unwrap();
        assert_eq!(id.to_string(), FOO);
        assert_eq!(id.to_short_hex(7), "2c26b46");
    }

    #[test]
    fn parse_rejects_missing_tag_wrong_length_and_uppercase() {
        assert_eq!(
            "2c26".parse::<ObjectId>(),
            Err(ParseIdError::MissingKind("2c26".into()))
        );
        assert!(matches!(
            "sha256:2c26".parse::<ObjectId>(),
            Err(ParseIdError::WrongLength { len: 4, .. })
        ));
        let upper = FOO.to_uppercase().replace("SHA256", "sha256");
        assert!(matches!(
            upper.parse::<ObjectId>(),
            Err(ParseIdError::NotHex(_))
        ));
    }

    #[test]
    fn prefix_needs_four_hex_digits() {
        assert!(matches!(
            "2c2".parse::<Prefix>(),
            Err(ParseIdError::PrefixTooShort(_))
        ));
        let prefix: Prefix = "sha256:2c26b4".parse().unwrap();
        assert!(prefix.matches(&FOO.parse().unwrap()));
        assert!(prefix.lower_bound() <= FOO.parse().unwrap());
    }
}
