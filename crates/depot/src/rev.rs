//! Revisions: the names users give checkpoints, as in Git.
//!
//! `HEAD`, `master` (→ `refs/heads/master`), `refs/heads/master`, a full id `sha256:…`, a unique
//! hex prefix of at least 4 digits, each optionally followed by `~N` (N first-parent steps back,
//! `~` alone is `~1`) and `^N` (the N-th parent, `^` alone is `^1`, `^0` the checkpoint itself).
//! A ref may be followed by `@{N}`: its value N moves ago, from its reflog (`HEAD@{0}` is its
//! value now, `HEAD@{1}` the one before, as `retro reflog` numbers them; `@{N}` alone is
//! `HEAD@{N}`), and steps may follow (`master@{2}~1`).

use crate::depot::{Depot, Error};
use crate::hash::{ObjectId, Prefix};
use crate::refdb::RefName;

/// One navigation step after the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `~N`: N first-parent steps back.
    Ancestor(u32),
    /// `^N`: the N-th parent (0: itself).
    Parent(u32),
}

/// A parsed revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// The text before the first `~` or `^`.
    pub base: String,
    /// The steps after it.
    pub steps: Vec<Step>,
}

impl Revision {
    /// Parses revision syntax (without resolving anything).
    pub fn parse(text: &str) -> Result<Revision, Error> {
        let bad = |reason: &str| Error::BadRevision {
            rev: text.to_owned(),
            reason: reason.to_owned(),
        };
        if text.is_empty() {
            return Err(bad("it is empty"));
        }
        if text.len() > 1024 {
            return Err(bad("it is too long"));
        }
        let split = text.find(['~', '^']).unwrap_or(text.len());
        let (base, mut rest) = text.split_at(split);
        if base.is_empty() {
            return Err(bad("it has no base before '~' or '^'"));
        }
        let mut steps = Vec::new();
        while let Some(op) = rest.chars().next() {
            rest = &rest[op.len_utf8()..];
            let digits_end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let (digits, after) = rest.split_at(digits_end);
            let n = if digits.is_empty() {
                1
            } else {
                digits
                    .parse::<u32>()
                    .map_err(|_| bad("a step count is too large"))?
            };
            steps.push(match op {
                '~' => Step::Ancestor(n),
                '^' => Step::Parent(n),
                _ => return Err(bad("expected '~' or '^'")),
            });
            rest = after;
        }
        Ok(Revision {
            base: base.to_owned(),
            steps,
        })
    }
}

impl Depot {
    /// Resolves revision syntax to a checkpoint (or, for a bare id or prefix, any object).
    pub fn resolve_revision(&self, text: &str) -> Result<ObjectId, Error> {
        let revision = Revision::parse(text)?;
        let mut id = self.resolve_base(&revision.base)?;
        for step in &revision.steps {
            id = match *step {
                Step::Parent(0) => {
                    self.read_checkpoint_unresolved(&id)?;
                    id
                }
                Step::Parent(n) => {
                    let checkpoint = self.read_checkpoint_unresolved(&id)?;
                    *checkpoint
                        .parents()
                        .get(n as usize - 1)
                        .ok_or_else(|| Error::BadRevision {
                            rev: text.to_owned(),
                            reason: format!(
                                "checkpoint {} has {} parent(s), not {n}",
                                id.to_short_hex(12),
                                checkpoint.parents().len()
                            ),
                        })?
                }
                Step::Ancestor(n) => {
                    let mut current = id;
                    for walked in 0..n {
                        current = self
                            .read_checkpoint_unresolved(&current)?
                            .first_parent()
                            .ok_or_else(|| Error::BadRevision {
                                rev: text.to_owned(),
                                reason: format!(
                                    "history is only {walked} checkpoint(s) deep there"
                                ),
                            })?;
                    }
                    current
                }
            };
        }
        Ok(id)
    }

    /// The names a ref-like base may stand for, in Git's order.
    fn ref_candidates(base: &str) -> impl Iterator<Item = RefName> {
        [
            base.to_owned(),
            format!("refs/{base}"),
            format!("refs/heads/{base}"),
            format!("refs/tags/{base}"),
            format!("refs/consumers/{base}"),
        ]
        .into_iter()
        .filter_map(|candidate| RefName::new(&candidate).ok())
    }

    /// `REF@{N}`: the value of REF N moves ago, read from its reflog (newest is `@{0}`).
    fn resolve_reflog_entry(&self, base: &str, name: &str, n: &str) -> Result<ObjectId, Error> {
        let bad = |reason: String| Error::BadRevision {
            rev: base.to_owned(),
            reason,
        };
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(format!(
                "'@{{{}}}' is not supported: give '@{{N}}', N moves ago in the reflog",
                crate::shown(n)
            )));
        }
        let n: usize = n
            .parse()
            .map_err(|_| bad("the reflog index is too large".to_owned()))?;
        let name = if name.is_empty() { "HEAD" } else { name };
        let mut found = None;
        for candidate in Self::ref_candidates(name) {
            // A deleted ref keeps its reflog: look there too.
            if self.read_ref(&candidate)?.is_some() || !self.reflog(&candidate)?.is_empty() {
                found = Some(candidate);
                break;
            }
        }
        let Some(name) = found else {
            return Err(Error::UnknownRevision(base.to_owned()));
        };
        let entries = self.reflog(&name)?;
        let Some(entry) = entries.len().checked_sub(n + 1).map(|i| &entries[i]) else {
            return Err(bad(format!(
                "the reflog of '{name}' has only {} entr{}",
                entries.len(),
                if entries.len() == 1 { "y" } else { "ies" }
            )));
        };
        entry
            .new
            .ok_or_else(|| bad(format!("'{name}' was deleted at that entry")))
    }

    fn resolve_base(&self, base: &str) -> Result<ObjectId, Error> {
        let unborn = |name: &RefName| Error::BadRevision {
            rev: base.to_owned(),
            reason: format!("'{name}' has no checkpoint yet"),
        };
        if let Some(inner) = base.strip_suffix('}') {
            if let Some(at) = inner.rfind("@{") {
                return self.resolve_reflog_entry(base, &inner[..at], &inner[at + 2..]);
            }
        }
        for name in Self::ref_candidates(base) {
            if self.read_ref(&name)?.is_some() {
                let (target, id) = self.resolve_ref(&name)?;
                return id.ok_or_else(|| unborn(&target));
            }
        }
        let hex = base.strip_prefix("sha256:").unwrap_or(base);
        if !hex.is_empty()
            && hex.len() < Prefix::MIN_LEN
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(Error::BadRevision {
                rev: base.to_owned(),
                reason: format!(
                    "no such ref, and an id prefix needs at least {} hex digits (this has {})",
                    Prefix::MIN_LEN,
                    hex.len()
                ),
            });
        }
        if base.starts_with("sha256:") && base.len() == 71 {
            let id: ObjectId = base.parse()?;
            if self.objects().contains(&id)? {
                return Ok(id);
            }
            return Err(Error::NoSuchObject(id));
        }
        match base.parse::<Prefix>() {
            Ok(prefix) => self.resolve_prefix(&prefix),
            Err(_) => Err(Error::UnknownRevision(base.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_git_style_steps() {
        let r = Revision::parse("HEAD~3^2~").unwrap();
        assert_eq!(r.base, "HEAD");
        assert_eq!(
            r.steps,
            vec![Step::Ancestor(3), Step::Parent(2), Step::Ancestor(1)]
        );
        assert!(Revision::parse("").is_err());
        assert!(Revision::parse("~1").is_err());
        assert!(Revision::parse("HEAD~99999999999").is_err());
    }
}
