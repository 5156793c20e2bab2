//! Signed checkpoints: the ed25519 key that signs each new checkpoint ([`Signer`]), the
//! `signature` header field it adds, and the check of one checkpoint's signature
//! ([`check_signature`]) that `retro verify --signatures` runs over a chain.
//!
//! The signed bytes are the checkpoint's canonical encoding (`checkpoint <len>\0affix …`, exactly
//! as [`Object::encode`] writes it) *without* its `signature` field: [`signed_bytes`]. The field is
//! `signature ed25519:<public key, 64 hex>:<signature, 128 hex>` (lowercase hex), so a checkpoint
//! names the key that signed it and a verifier decides which keys it trusts. A key lives outside
//! the hashed objects, in a key file: one line `retro-ed25519-secret <seed, 64 hex>`.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};

use crate::name::{FieldKey, FieldValue};
use crate::object::{Checkpoint, Object};

/// The header key of a checkpoint's signature.
pub const SIGNATURE_KEY: &str = "signature";
/// The scheme word before the key in the field's value.
const SCHEME: &str = "ed25519";
/// The first word of a key file's line.
const KEY_FILE_WORD: &str = "retro-ed25519-secret";

/// Why a key file or a public key could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file is not one line `retro-ed25519-secret <64 hex digits>`.
    #[error("not a retro signing key file (expected one line '{KEY_FILE_WORD} <64 hex digits>')")]
    BadKeyFile,
    /// A public key is not 64 hex digits naming an ed25519 point.
    #[error("'{0}' is not an ed25519 public key (64 hex digits)")]
    BadPublicKey(String),
}

/// The key that signs new checkpoints. Its secret is never printed: `Debug` shows the public key.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("public_key", &self.public_key_hex())
            .finish()
    }
}

impl Signer {
    /// The key with this 32-byte seed (the ed25519 secret key).
    pub fn from_seed(seed: [u8; 32]) -> Signer {
        Signer {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// Reads a key file's text: one line `retro-ed25519-secret <64 hex digits>`.
    pub fn from_key_file(text: &str) -> Result<Signer, KeyError> {
        let line = text.strip_suffix('\n').unwrap_or(text);
        let hex_seed = line
            .strip_prefix(KEY_FILE_WORD)
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or(KeyError::BadKeyFile)?;
        if hex_seed.len() != 64 || line.contains('\n') {
            return Err(KeyError::BadKeyFile);
        }
        let mut seed = [0u8; 32];
        hex::decode_to_slice(hex_seed, &mut seed).map_err(|_| KeyError::BadKeyFile)?;
        Ok(Signer::from_seed(seed))
    }

    /// The key file's text for this key (it holds the secret: write it with mode 0600).
    pub fn key_file_text(&self) -> String {
        format!("{KEY_FILE_WORD} {}\n", hex::encode(self.key.to_bytes()))
    }

    /// The public key, 64 lowercase hex digits.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    /// Signs `checkpoint`: replaces its `signature` field with one over [`signed_bytes`].
    pub fn sign(&self, checkpoint: &mut Checkpoint) {
        let signature = self.key.sign(&signed_bytes(checkpoint));
        let value = format!(
            "{SCHEME}:{}:{}",
            self.public_key_hex(),
            hex::encode(signature.to_bytes())
        );
        checkpoint.set_field(
            FieldKey::new(SIGNATURE_KEY).expect("'signature' is a valid field key"),
            FieldValue::new(&value).expect("hex digits and colons are a valid field value"),
        );
    }
}

/// Parses a public key given as 64 hex digits (as `--trusted-key` takes it); returns it in
/// lowercase.
pub fn parse_public_key(text: &str) -> Result<String, KeyError> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text, &mut bytes).map_err(|_| KeyError::BadPublicKey(text.to_owned()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::BadPublicKey(text.to_owned()))?;
    Ok(hex::encode(bytes))
}

/// The bytes a checkpoint's signature covers: its canonical encoding without the `signature`
/// field (every other field, the parents, the affix and the message are covered).
pub fn signed_bytes(checkpoint: &Checkpoint) -> Vec<u8> {
    let fields: BTreeMap<FieldKey, FieldValue> = checkpoint
        .fields()
        .filter(|(k, _)| k.as_str() != SIGNATURE_KEY)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let unsigned = Checkpoint::with_fields(
        checkpoint.affix(),
        checkpoint.parents().to_vec(),
        fields,
        checkpoint.stored_message().to_vec(),
    );
    Object::Checkpoint(unsigned).encode()
}

/// What a checkpoint's signature says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureCheck {
    /// It has no `signature` field.
    Unsigned,
    /// The signature is good, by this public key (64 hex digits).
    Valid {
        /// The signing key.
        key: String,
    },
    /// The field is malformed or the signature does not verify.
    Invalid {
        /// The key it names, when it names one that parses.
        key: Option<String>,
        /// Why it is refused.
        reason: String,
    },
}

/// Checks one checkpoint's `signature` field against [`signed_bytes`].
pub fn check_signature(checkpoint: &Checkpoint) -> SignatureCheck {
    let Some(value) = checkpoint.field(SIGNATURE_KEY) else {
        return SignatureCheck::Unsigned;
    };
    let invalid = |key: Option<String>, reason: &str| SignatureCheck::Invalid {
        key,
        reason: reason.to_owned(),
    };
    let mut parts = value.split(':');
    let (Some(scheme), Some(key_hex), Some(sig_hex), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return invalid(
            None,
            "the signature field is not 'ed25519:<key>:<signature>'",
        );
    };
    if scheme != SCHEME {
        return invalid(None, "the signature is not an ed25519 signature");
    }
    let key = match parse_public_key(key_hex) {
        Ok(key) if key == key_hex => key,
        _ => {
            return invalid(
                None,
                "the signing key is not 64 lowercase hex digits of a key",
            )
        }
    };
    let mut key_bytes = [0u8; 32];
    hex::decode_to_slice(&key, &mut key_bytes).expect("checked above");
    let Ok(verifying) = VerifyingKey::from_bytes(&key_bytes) else {
        return invalid(Some(key), "the signing key is not an ed25519 public key");
    };
    let mut sig_bytes = [0u8; 64];
    if sig_hex.len() != 128
        || sig_hex.bytes().any(|b| b.is_ascii_uppercase())
        || hex::decode_to_slice(sig_hex, &mut sig_bytes).is_err()
    {
        return invalid(Some(key), "the signature is not 128 lowercase hex digits");
    }
    let signature = Signature::from_bytes(&sig_bytes);
    match verifying.verify(&signed_bytes(checkpoint), &signature) {
        Ok(()) => SignatureCheck::Valid { key },
        Err(_) => invalid(
            Some(key),
            "the signature does not match the checkpoint's bytes",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::ObjectId;

    fn fixed_checkpoint() -> Checkpoint {
        let date = crate::object::parse_date("2026-12-03T12:00:00Z").unwrap();
        Checkpoint::new(
            ObjectId::of(b"affix"),
            vec![ObjectId::of(b"parent")],
            "s1",
            date,
            r#"{"path":"accounts/a","name":"open","params":{}}"#,
        )
        .unwrap()
    }

    /// docs/format.md's test vector: the signature field of [`fixed_checkpoint`] by seed 32 × 0x01.
    const VECTOR_SIGNATURE: &str = "ed25519:8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c:734ec146f3274ce0cce450ac87d62fd617a57de4ec2f167bc08eb209da5730e42117d604ffbb81df6c02de6a2419905fd7c3ce4268b2dc7b9747fed2884dd904";

    /// The test vector of docs/format.md: seed 32 bytes of 0x01.
    #[test]
    fn a_fixed_key_signs_a_fixed_checkpoint_to_the_documented_vector() {
        let signer = Signer::from_seed([1u8; 32]);
        assert_eq!(
            signer.public_key_hex(),
            "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
        );
        let mut checkpoint = fixed_checkpoint();
        let unsigned = Object::Checkpoint(checkpoint.clone()).encode();
        assert_eq!(
            ObjectId::of(&unsigned).to_string(),
            "sha256:dac316efe9a8bd2964081c0120c85e0b462203597624d405840cc71d6dd20adf"
        );
        signer.sign(&mut checkpoint);
        assert_eq!(signed_bytes(&checkpoint), unsigned);
        let value = checkpoint.field(SIGNATURE_KEY).unwrap().to_owned();
        assert_eq!(value, VECTOR_SIGNATURE);
        assert_eq!(
            check_signature(&checkpoint),
            SignatureCheck::Valid {
                key: signer.public_key_hex()
            }
        );
        // The encoding round-trips with the field in place (sorted after `session`).
        let encoded = Object::Checkpoint(checkpoint.clone()).encode();
        assert!(String::from_utf8_lossy(&encoded).contains("\nsession s1\nsignature ed25519:"));
        assert_eq!(
            Object::decode(&encoded).unwrap(),
            Object::Checkpoint(checkpoint)
        );
    }

    #[test]
    fn a_changed_byte_or_another_key_fails_and_no_field_is_unsigned() {
        let signer = Signer::from_seed([1u8; 32]);
        let mut checkpoint = fixed_checkpoint();
        assert_eq!(check_signature(&checkpoint), SignatureCheck::Unsigned);
        signer.sign(&mut checkpoint);
        let mut tampered = Checkpoint::with_fields(
            checkpoint.affix(),
            checkpoint.parents().to_vec(),
            checkpoint
                .fields()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            b"{}".to_vec(),
        );
        assert!(matches!(
            check_signature(&tampered),
            SignatureCheck::Invalid { key: Some(_), .. }
        ));
        // Another key's signature over the same bytes, under the first key's name.
        let other = Signer::from_seed([2u8; 32]);
        other.sign(&mut tampered);
        let forged = tampered
            .field(SIGNATURE_KEY)
            .unwrap()
            .replace(&other.public_key_hex(), &signer.public_key_hex());
        tampered.set_field(
            FieldKey::new(SIGNATURE_KEY).unwrap(),
            FieldValue::new(&forged).unwrap(),
        );
        assert!(matches!(
            check_signature(&tampered),
            SignatureCheck::Invalid { .. }
        ));
        for bad in ["ed25519:zz", "rsa:00:00", "ed25519:00:00:00"] {
            tampered.set_field(
                FieldKey::new(SIGNATURE_KEY).unwrap(),
                FieldValue::new(bad).unwrap(),
            );
            assert!(matches!(
                check_signature(&tampered),
                SignatureCheck::Invalid { key: None, .. }
            ));
        }
    }

    #[test]
    fn key_files_round_trip_and_bad_ones_are_refused() {
        let signer = Signer::from_seed([7u8; 32]);
        let text = signer.key_file_text();
        let back = Signer::from_key_file(&text).unwrap();
        assert_eq!(back.public_key_hex(), signer.public_key_hex());
        assert!(!format!("{signer:?}").contains(&hex::encode([7u8; 32])));
        for bad in [
            "",
            "retro-ed25519-secret",
            "retro-ed25519-secret 00",
            &format!("retro-ed25519-secret {}\nmore", "0".repeat(64)),
            &format!("other {}", "0".repeat(64)),
            &format!("retro-ed25519-secret {}", "g".repeat(64)),
        ] {
            assert!(Signer::from_key_file(bad).is_err(), "{bad:?}");
        }
        assert!(parse_public_key("xyz").is_err());
        assert_eq!(
            parse_public_key(&signer.public_key_hex().to_uppercase()).unwrap(),
            signer.public_key_hex()
        );
    }

    proptest::proptest! {
        /// Whatever a key file holds, reading it never panics, and only the one form is taken.
        #[test]
        fn any_key_file_is_read_without_a_panic(text in "(retro-ed25519-secret )?[0-9a-fA-Fg \n]{0,80}") {
            if let Ok(signer) = Signer::from_key_file(&text) {
                let written = signer.key_file_text();
                let given = text.strip_suffix('\n').unwrap_or(&text).to_lowercase();
                proptest::prop_assert_eq!(written.trim_end(), given.as_str());
            }
        }


        /// Whatever a signature field holds, checking it never panics.
        #[test]
        fn any_signature_field_is_checked_without_a_panic(value in "[ -~]{0,300}") {
            let mut checkpoint = fixed_checkpoint();
            if let Ok(value) = FieldValue::new(&value) {
                checkpoint.set_field(FieldKey::new(SIGNATURE_KEY).unwrap(), value);
                let _ = check_signature(&checkpoint);
            }
        }
    }
}
