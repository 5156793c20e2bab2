//! Inclusion proofs: that an event is in the history a trusted checkpoint commits to. This module
//! owns the proof file (JSON, [`InclusionProof::to_json`], [`InclusionProof::parse`]) and its
//! check ([`InclusionProof::verify`]), which needs no depot: only the proof's bytes. Building one
//! from a depot is `Depot::prove` (`depot/checkpoint_log.rs`).
//!
//! A proof holds the bytes of the checkpoint it is *at* (whose id the verifier trusts; its `log`
//! field is the head of the Merkle tree over the ids of every checkpoint before it on its
//! first-parent chain), the bytes of the checkpoint that added the event and of that checkpoint's
//! affix, the checkpoint's leaf index in the tree and the audit path (⌈log₂ n⌉ hashes). The
//! verifier decodes and hashes every object itself: the affix must be the checkpoint's, list the
//! event, and the checkpoint's leaf hash must lead to the log head by the path. An event added by
//! the trusted checkpoint itself has no leaf and no path.

use serde::{Deserialize, Serialize};

use crate::hash::ObjectId;
use crate::object::checkpoint_log::{self, Hash, InclusionError, LogHead};
use crate::object::{Affix, Checkpoint, DecodeError, EncodedObject, Object};

/// The value of the proof file's `proof` key: the format and its version.
pub const PROOF_FORMAT: &str = "retro-inclusion-proof-1";

/// The longest proof file read (the objects in it are small; an affix of a huge command is the
/// only thing that grows).
pub const MAX_PROOF_BYTES: usize = 64 << 20;

/// An inclusion proof, as built by `Depot::prove` or read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// The event proved.
    pub event: ObjectId,
    /// The encoded checkpoint the proof is at (the one the verifier trusts).
    pub at: Vec<u8>,
    /// The encoded checkpoint that added the event; `None` when it is `at` itself.
    pub checkpoint: Option<Vec<u8>>,
    /// The encoded affix of that checkpoint.
    pub affix: Vec<u8>,
    /// The checkpoint's leaf index in `at`'s log; `None` when it is `at` itself.
    pub leaf: Option<u64>,
    /// The audit path, nearest the leaf first.
    pub path: Vec<Hash>,
}

/// The file's JSON shape.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProofFile {
    proof: String,
    event: String,
    at: String,
    checkpoint: Option<String>,
    affix: String,
    leaf: Option<u64>,
    path: Vec<String>,
}

/// What a proof proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    /// The event.
    pub event: ObjectId,
    /// The partition(s) its checkpoint's affix lists it under.
    pub partitions: Vec<String>,
    /// The checkpoint that added it.
    pub checkpoint: ObjectId,
    /// Its leaf index in the log (`None`: the event is in the trusted checkpoint itself).
    pub leaf: Option<u64>,
    /// The log's size: checkpoints before the trusted one on its first-parent chain.
    pub size: u64,
    /// The trusted checkpoint: the id the proof is only as good as.
    pub at: ObjectId,
}

/// Why a proof file could not be read or does not prove what it says.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// Not a proof file: not JSON, a missing or unknown key, a value of the wrong type.
    #[error("not an inclusion proof: {0}")]
    Malformed(#[source] serde_json::Error),
    /// The `proof` key names another format.
    #[error("not an inclusion proof: format '{0}', this retro reads '{PROOF_FORMAT}'")]
    Format(String),
    /// A value is not what its key holds (hex, an id, a 32-byte hash).
    #[error("not an inclusion proof: '{key}' is not {what}")]
    BadValue {
        /// The key.
        key: &'static str,
        /// What it must be.
        what: &'static str,
    },
    /// `checkpoint` and `leaf` must both be present or both be null.
    #[error("not an inclusion proof: 'checkpoint' and 'leaf' must both be given or both be null")]
    LeafWithoutCheckpoint,
    /// An object in the proof does not decode.
    #[error("the proof's {what} does not decode: {source}")]
    Decode {
        /// Which object.
        what: &'static str,
        /// Why.
        source: DecodeError,
    },
    /// An object in the proof is of another kind.
    #[error("the proof's {what} is not a {expected}")]
    WrongKind {
        /// Which object.
        what: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// The trusted checkpoint has no `log` field: it commits to no log.
    #[error("checkpoint {0} has no 'log' field: it was committed before retro wrote one, so it commits to no log")]
    NoLog(ObjectId),
    /// The affix is not the checkpoint's.
    #[error("the proof's affix {found} is not checkpoint {checkpoint}'s (it names {expected})")]
    AffixMismatch {
        /// The checkpoint.
        checkpoint: ObjectId,
        /// The affix it names.
        expected: ObjectId,
        /// The affix in the proof.
        found: ObjectId,
    },
    /// The affix does not list the event.
    #[error("checkpoint {checkpoint}'s affix does not list event {event}")]
    NotInAffix {
        /// The event.
        event: ObjectId,
        /// The checkpoint.
        checkpoint: ObjectId,
    },
    /// The audit path does not lead to the log head.
    #[error("checkpoint {checkpoint} is not leaf {leaf} of checkpoint {at}'s log: {source}")]
    NotIncluded {
        /// The checkpoint.
        checkpoint: ObjectId,
        /// The claimed leaf.
        leaf: u64,
        /// The trusted checkpoint.
        at: ObjectId,
        /// Why.
        source: InclusionError,
    },
    /// The proof is at another checkpoint than the one trusted.
    #[error("the proof is at checkpoint {found}, not at the trusted {trusted}")]
    Untrusted {
        /// The id given as trusted.
        trusted: ObjectId,
        /// The proof's.
        found: ObjectId,
    },
}

impl ProofError {
    /// True when the file is not a proof at all (unreadable), as opposed to a proof that does
    /// not verify (tampered, or for another checkpoint).
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            ProofError::Malformed(_)
                | ProofError::Format(_)
                | ProofError::BadValue { .. }
                | ProofError::LeafWithoutCheckpoint
        )
    }
}

fn hex_bytes(key: &'static str, text: &str) -> Result<Vec<u8>, ProofError> {
    hex::decode(text).map_err(|_| ProofError::BadValue {
        key,
        what: "hex digits",
    })
}

fn hash_of(text: &str) -> Result<Hash, ProofError> {
    let bad = || ProofError::BadValue {
        key: "path",
        what: "a list of 64-hex-digit hashes",
    };
    if text.len() != 64 {
        return Err(bad());
    }
    let mut hash = [0u8; 32];
    hex::decode_to_slice(text, &mut hash).map_err(|_| bad())?;
    Ok(hash)
}

fn checkpoint_of(what: &'static str, bytes: &[u8]) -> Result<(ObjectId, Checkpoint), ProofError> {
    let encoded = EncodedObject::from_bytes(bytes.to_vec());
    match Object::decode(bytes).map_err(|source| ProofError::Decode { what, source })? {
        Object::Checkpoint(checkpoint) => Ok((encoded.id(), checkpoint)),
        _ => Err(ProofError::WrongKind {
            what,
            expected: "checkpoint",
        }),
    }
}

impl InclusionProof {
    /// The proof file: one JSON object, objects in lowercase hex.
    pub fn to_json(&self) -> String {
        let file = ProofFile {
            proof: PROOF_FORMAT.to_owned(),
            event: self.event.to_string(),
            at: hex::encode(&self.at),
            checkpoint: self.checkpoint.as_ref().map(hex::encode),
            affix: hex::encode(&self.affix),
            leaf: self.leaf,
            path: self.path.iter().map(hex::encode).collect(),
        };
        serde_json::to_string_pretty(&file).expect("a proof serializes")
    }

    /// Reads a proof file strictly: every key once, no other key, values of the right form.
    /// Never panics, whatever the bytes.
    pub fn parse(bytes: &[u8]) -> Result<InclusionProof, ProofError> {
        let file: ProofFile = serde_json::from_slice(bytes).map_err(ProofError::Malformed)?;
        if file.proof != PROOF_FORMAT {
            return Err(ProofError::Format(file.proof));
        }
        let event = file
            .event
            .parse::<ObjectId>()
            .ok()
            .filter(|id| id.to_string() == file.event)
            .ok_or(ProofError::BadValue {
                key: "event",
                what: "a canonical object id (sha256: and 64 lowercase hex digits)",
            })?;
        if file.checkpoint.is_some() != file.leaf.is_some() {
            return Err(ProofError::LeafWithoutCheckpoint);
        }
        if file.path.len() > 64 {
            return Err(ProofError::BadValue {
                key: "path",
                what: "at most 64 hashes",
            });
        }
        Ok(InclusionProof {
            event,
            at: hex_bytes("at", &file.at)?,
            checkpoint: file
                .checkpoint
                .as_deref()
                .map(|c| hex_bytes("checkpoint", c))
                .transpose()?,
            affix: hex_bytes("affix", &file.affix)?,
            leaf: file.leaf,
            path: file
                .path
                .iter()
                .map(|h| hash_of(h))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Checks the proof by itself: decodes and hashes every object it holds, and the audit path
    /// against the trusted checkpoint's `log` field. O(log n) hashes. `trusted`, when given, must
    /// be the id of the checkpoint the proof is at.
    pub fn verify(&self, trusted: Option<ObjectId>) -> Result<Proven, ProofError> {
        let (at, at_checkpoint) = checkpoint_of("trusted checkpoint ('at')", &self.at)?;
        if let Some(trusted) = trusted {
            if trusted != at {
                return Err(ProofError::Untrusted { trusted, found: at });
            }
        }
        let head: LogHead = at_checkpoint.log_head().ok_or(ProofError::NoLog(at))?;
        let (checkpoint, holder) = match &self.checkpoint {
            Some(bytes) => checkpoint_of("checkpoint", bytes)?,
            None => (at, at_checkpoint.clone()),
        };
        let affix_encoded = EncodedObject::from_bytes(self.affix.clone());
        let affix: Affix =
            match Object::decode(&self.affix).map_err(|source| ProofError::Decode {
                what: "affix",
                source,
            })? {
                Object::Affix(affix) => affix,
                _ => {
                    return Err(ProofError::WrongKind {
                        what: "affix",
                        expected: "affix",
                    })
                }
            };
        if affix_encoded.id() != holder.affix() {
            return Err(ProofError::AffixMismatch {
                checkpoint,
                expected: holder.affix(),
                found: affix_encoded.id(),
            });
        }
        let partitions: Vec<String> = affix
            .partitions()
            .filter(|(_, ids)| ids.contains(&self.event))
            .map(|(p, _)| p.to_string())
            .collect();
        if partitions.is_empty() {
            return Err(ProofError::NotInAffix {
                event: self.event,
                checkpoint,
            });
        }
        if let Some(leaf) = self.leaf {
            checkpoint_log::verify_inclusion(
                &checkpoint_log::leaf_hash(&checkpoint),
                leaf,
                head.size,
                &self.path,
                &head.root,
            )
            .map_err(|source| ProofError::NotIncluded {
                checkpoint,
                leaf,
                at,
                source,
            })?;
        } else if !self.path.is_empty() {
            return Err(ProofError::BadValue {
                key: "path",
                what: "empty when the event is in the trusted checkpoint itself",
            });
        }
        Ok(Proven {
            event: self.event,
            partitions,
            checkpoint,
            leaf: self.leaf,
            size: head.size,
            at,
        })
    }
}

impl std::fmt::Display for Proven {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let partitions = self.partitions.join(", ");
        match self.leaf {
            Some(leaf) => write!(
                f,
                "event {} ({partitions}) is in checkpoint {}, leaf {leaf} of the {}-checkpoint log committed to by {}",
                self.event, self.checkpoint, self.size, self.at
            ),
            None => write!(
                f,
                "event {} ({partitions}) is in checkpoint {} itself, which commits to a {}-checkpoint log",
                self.event, self.at, self.size
            ),
        }
    }
}
