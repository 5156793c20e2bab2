//! Revisions: the names users give checkpoints, as in Git.
//!
//! `HEAD`, `master` (→ `refs/heads/master`), `refs/heads/master`, a full id `sha256:…`, a unique
//! hex prefix of at least 4 digits, each optionally followed by `~N` (N first-parent steps back,
//! `~` alone is `~1`) and `^N` (the N-th parent, `^` alone is `^1`, `^0` the checkpoint itself).

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
            id =
                match *step {
                    Step::Parent(0) => {
                        self.read_checkpoint(&id)?;
                        id
                    }
                    Step::Parent(n) => {
                        let checkpoint = self.read_checkpoint(&id)?;
                        *checkpoint.parents().get(n as usize - 1).ok_or_else(|| {
                            Error::BadRevision {
                                rev: text.to_owned(),
                                reason: format!(
                                    "checkpoint {} has {} parent(s), not {n}",
                                    id.to_short_hex(12),
                                    checkpoint.parents().len()
                                ),
                            }
                        })?
                    }
                    Step::Ancestor(n) => {
                        let mut current = id;
                        for walked in 0..n {
                            current = self.read_checkpoint(&current)?.first_parent().ok_or_else(
                                || Error::BadRevision {
                                    rev: text.to_owned(),
                                    reason: format!(
                                        "history is only {walked} checkpoint(s) deep there"
                                    ),
                                },
                            )?;
                        }
                        current
                    }
                };
        }
        Ok(id)
    }

    fn resolve_base(&self, base: &str) -> Result<ObjectId, Error> {
        let unborn = |name: &RefName| Error::BadRevision {
            rev: base.to_owned(),
            reason: format!("'{name}' has no checkpoint yet"),
        };
        let candidates = [
            base.to_owned(),
            format!("refs/{base}"),
            format!("refs/heads/{base}"),
            format!("refs/tags/{base}"),
            format!("refs/consumers/{base}"),
        ];
        for candidate in candidates {
            let Ok(name) = RefName::new(&candidate) else {
                continue;
            };
            if self.read_ref(&name)?.is_some() {
                let (target, id) = self.resolve_ref(&name)?;
                return id.ok_or_else(|| unborn(&target));
            }
        }
        if base.starts_with("sha256:") && base.len() == 71 {
            let id: ObjectId = base.parse()?;
            if self.objects().contains(&id)? {
                return Ok(id);
            }
            return Err(Error::UnknownRevision(base.to_owned()));
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
