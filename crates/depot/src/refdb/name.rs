//! Ref names, validated by Git's `check-ref-format` rules so that no name can escape the depot
//! directory or be mistaken for revision syntax.

use std::fmt;

/// Why a ref name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ref name '{name}': {reason}")]
pub struct RefNameError {
    name: String,
    reason: &'static str,
}

/// A valid ref name: `HEAD`, or `refs/…` (such as `refs/heads/master`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RefName(String);

impl RefName {
    /// The longest ref name, in bytes.
    pub const MAX_LEN: usize = 1024;

    /// Validates a full ref name.
    pub fn new(name: &str) -> Result<RefName, RefNameError> {
        let refuse = |reason| {
            Err(RefNameError {
                name: crate::name::shown(name),
                reason,
            })
        };
        if name == "HEAD" {
            return Ok(RefName(name.to_owned()));
        }
        if name.is_empty() {
            return refuse("it is empty");
        }
        if name.len() > Self::MAX_LEN {
            return refuse("it is too long");
        }
        if !name.starts_with("refs/") {
            return refuse("it must be HEAD or start with 'refs/'");
        }
        if name.ends_with('/') {
            return refuse("it ends with '/'");
        }
        if name.ends_with('.') {
            return refuse("it ends with '.'");
        }
        if name.contains("..") {
            return refuse("it contains '..'");
        }
        if name.contains("//") {
            return refuse("it contains '//'");
        }
        if name.contains("@{") || name == "@" {
            return refuse("it contains '@{'");
        }
        if let Some(c) = name.chars().find(|&c| {
            c.is_ascii_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\')
        }) {
            let _ = c;
            return refuse("it contains a space, a control character or one of ~^:?*[\\");
        }
        for component in name.split('/') {
            if component.len() > 255 {
                return refuse("a component is longer than 255 bytes");
            }
            if component.starts_with('.') {
                return refuse("a component starts with '.'");
            }
            if component.ends_with(".lock") {
                return refuse("a component ends with '.lock'");
            }
        }
        if name.split('/').count() < 2 || name == "refs/" {
            return refuse("it needs a name after 'refs/'");
        }
        Ok(RefName(name.to_owned()))
    }

    /// `refs/heads/master`, the default branch.
    pub fn master() -> RefName {
        RefName("refs/heads/master".to_owned())
    }

    /// `HEAD`.
    pub fn head() -> RefName {
        RefName("HEAD".to_owned())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shortest unambiguous-looking form (`refs/heads/master` → `master`).
    pub fn short(&self) -> &str {
        ["refs/heads/", "refs/tags/", "refs/"]
            .iter()
            .find_map(|p| self.0.strip_prefix(p))
            .unwrap_or(&self.0)
    }
}

impl fmt::Display for RefName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RefName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RefName({:?})", self.0)
    }
}

impl std::str::FromStr for RefName {
    type Err = RefNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RefName::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_head_and_refs() {
        for ok in [
            "HEAD",
            "refs/heads/master",
            "refs/consumers/projector-1",
            "refs/tags/v1.0",
        ] {
            assert!(RefName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_what_git_refuses_and_anything_that_escapes() {
        for bad in [
            "",
            "master",
            "refs/",
            "refs/heads/",
            "refs/heads/../../etc/passwd",
            "refs/heads/a..b",
            "refs//heads",
            "/refs/heads/x",
            "refs/heads/.hidden",
            "refs/heads/x.lock",
            "refs/heads/x.",
            "refs/heads/a b",
            "refs/heads/a~1",
            "refs/heads/a^",
            "refs/heads/a:b",
            "refs/heads/a?",
            "refs/heads/a*",
            "refs/heads/a[",
            "refs/heads/a\\b",
            "refs/heads/a\0",
            "refs/heads/a\x7f",
            "refs/heads/a@{1}",
        ] {
            assert!(RefName::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            RefName::new("refs/heads/a..b").unwrap_err().to_string(),
            "invalid ref name 'refs/heads/a..b': it contains '..'"
        );
    }
}
