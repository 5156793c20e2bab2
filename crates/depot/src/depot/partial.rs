//! Partial clones: a depot that holds every checkpoint and affix of its history but only the
//! events (and their sealed data) of the partitions its *partition filter* matches.
//!
//! The filter is durable: a native depot keeps it in its `partial` file (`retro partial 1`, then
//! one `partitions <glob>` line per glob; docs/format.md), written atomically by `retro clone
//! --partitions` before the first object arrives, and widened by `retro sync --partitions` only
//! after the events it newly covers are durable (docs/crash-safety.md). A depot without the
//! file holds every partition. This module owns the filter, its file, and the checks every
//! reader and writer goes through: a partition outside the filter is refused with
//! [`Error::OutsidePartialClone`] (naming the filter, never "corrupt"), an event read by id
//! that is absent by design is [`Error::AbsentFromPartialClone`], and a commit that would write
//! to a partition outside the filter is refused before anything is written (its aggregate would
//! have been rehydrated from missing events).

use globset::GlobMatcher;

use super::{Depot, Error, Layout};
use crate::hash::ObjectId;
use crate::name::PartitionName;

/// The first line of a `partial` file.
const PARTIAL_FORMAT_LINE: &str = "retro partial 1";
/// The word that starts each glob line.
const PARTITIONS_WORD: &str = "partitions ";
/// The file's name in a native depot's directory.
const PARTIAL_FILE: &str = "partial";

/// Which partitions' events a partial clone holds: any partition matching one of its globs.
#[derive(Debug, Clone)]
pub struct PartialFilter {
    globs: Vec<String>,
    matchers: Vec<GlobMatcher>,
}

impl PartialFilter {
    /// A filter of these globs (`*` within a segment, `**` across, as `retro events`), in the
    /// order given, duplicates dropped. None at all, an empty glob, one with whitespace or a
    /// control character, or one that does not compile is [`Error::Glob`].
    pub fn new<S: AsRef<str>>(globs: impl IntoIterator<Item = S>) -> Result<PartialFilter, Error> {
        let mut filter = PartialFilter {
            globs: Vec::new(),
            matchers: Vec::new(),
        };
        for glob in globs {
            filter.push(glob.as_ref())?;
        }
        if filter.globs.is_empty() {
            return Err(Error::Glob {
                pattern: String::new(),
                reason: "a partial clone needs at least one partition glob".to_owned(),
            });
        }
        Ok(filter)
    }

    fn push(&mut self, glob: &str) -> Result<(), Error> {
        let bad = |reason: &str| Error::Glob {
            pattern: glob.to_owned(),
            reason: reason.to_owned(),
        };
        if glob.is_empty() {
            return Err(bad("the glob is empty"));
        }
        if glob.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(
                "a partition glob has no whitespace or control characters (partition names have none)",
            ));
        }
        let matcher = super::history::compile_glob(glob)?;
        if !self.globs.iter().any(|g| g == glob) {
            self.globs.push(glob.to_owned());
            self.matchers.push(matcher);
        }
        Ok(())
    }

    /// The globs, in the order they were recorded.
    pub fn globs(&self) -> &[String] {
        &self.globs
    }

    /// Whether the events of `partition` are held.
    pub fn holds(&self, partition: &str) -> bool {
        self.matchers.iter().any(|m| m.is_match(partition))
    }

    /// This filter with `more`'s globs added (a partition held by either is held).
    pub fn widened(&self, more: &PartialFilter) -> PartialFilter {
        let mut out = self.clone();
        for (glob, matcher) in more.globs.iter().zip(&more.matchers) {
            if !out.globs.contains(glob) {
                out.globs.push(glob.clone());
                out.matchers.push(matcher.clone());
            }
        }
        out
    }

    /// Whether every glob of `other` is one of this filter's (textually).
    pub fn contains_all(&self, other: &PartialFilter) -> bool {
        other.globs.iter().all(|g| self.globs.contains(g))
    }

    /// The globs quoted for messages: `'accounts/*', 'notes/**'`.
    pub fn describe(&self) -> String {
        self.globs
            .iter()
            .map(|g| format!("'{g}'"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The `partial` file's text.
    pub fn to_file_text(&self) -> String {
        let mut text = format!("{PARTIAL_FORMAT_LINE}\n");
        for glob in &self.globs {
            text.push_str(PARTITIONS_WORD);
            text.push_str(glob);
            text.push('\n');
        }
        text
    }

    /// Parses a `partial` file; any other first line, a line that is not `partitions <glob>`,
    /// a bad glob, or no glob at all is an error (the reason; never a panic).
    pub fn parse_file_text(text: &str) -> Result<PartialFilter, String> {
        let mut lines = text.lines();
        let first = lines.next().unwrap_or_default();
        if first != PARTIAL_FORMAT_LINE {
            return Err(format!(
                "its first line is '{}', not '{PARTIAL_FORMAT_LINE}'",
                first.escape_debug()
            ));
        }
        let mut globs = Vec::new();
        for (n, line) in lines.enumerate() {
            if line.is_empty() {
                continue;
            }
            let Some(glob) = line.strip_prefix(PARTITIONS_WORD) else {
                return Err(format!(
                    "line {} is not 'partitions <glob>': '{}'",
                    n + 2,
                    line.escape_debug()
                ));
            };
            globs.push(glob);
        }
        PartialFilter::new(globs).map_err(|e| e.to_string())
    }
}

impl Depot {
    /// The partition filter of a partial clone (`None`: the depot holds every partition).
    pub fn partial_filter(&self) -> Option<PartialFilter> {
        self.partial
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether this depot holds the events of `partition` (always, but in a partial clone).
    pub fn holds_partition(&self, partition: &PartitionName) -> bool {
        self.partial
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_none_or(|f| f.holds(partition.as_str()))
    }

    /// Makes this empty depot a partial clone holding `filter`'s partitions: the first step of
    /// `retro clone --partitions`, before any object arrives. Recorded durably in a native
    /// depot's `partial` file; a memory depot keeps it for this process. Refused
    /// ([`Error::Invalid`]) in a depot that already has refs or is of another layout (a
    /// PostgreSQL or go-retro depot holds every partition).
    pub fn begin_partial_clone(&self, filter: &PartialFilter) -> Result<(), Error> {
        self.check_partial_layout()?;
        if !self.list_refs("refs/")?.is_empty() {
            return Err(Error::Invalid(
                "a partition filter is set when a clone begins, on an empty depot; to fetch more partitions into an existing partial clone use 'retro sync --partitions GLOB SRC DST'".to_owned(),
            ));
        }
        self.write_partial(filter)
    }

    /// Adds `more` to the filter of this partial clone (sync's last step before its refs move,
    /// once the newly covered events are durable). Under the depot lock in a native depot, the
    /// file re-read first, so two widenings at once both count.
    pub(crate) fn widen_partial_filter(&self, more: &PartialFilter) -> Result<(), Error> {
        self.check_partial_layout()?;
        let _lock = match &self.journal {
            Some(journal) => Some(journal.lock()?),
            None => None,
        };
        self.reload_partial()?;
        let current = self.partial_filter().ok_or_else(|| not_partial(self))?;
        self.write_partial(&current.widened(more))
    }

    fn check_partial_layout(&self) -> Result<(), Error> {
        match self.layout {
            Layout::Native | Layout::Memory => Ok(()),
            Layout::Backend(name) => Err(Error::Invalid(format!(
                "a partial clone must be a files depot: a {name} depot holds every partition (clone it whole, or clone into a directory)"
            ))),
            Layout::GoRetro => Err(Error::Invalid(
                "a partial clone must be a native retro depot: a go-retro depot holds every partition".to_owned(),
            )),
        }
    }

    fn write_partial(&self, filter: &PartialFilter) -> Result<(), Error> {
        if let (Layout::Native, Some(root)) = (self.layout, &self.root) {
            let path = root.join(PARTIAL_FILE);
            crate::fsutil::write_atomic(&*self.storage, &path, filter.to_file_text().as_bytes())
                .map_err(Error::io("write", &path))?;
        }
        *self.partial.write().unwrap_or_else(|e| e.into_inner()) = Some(filter.clone());
        Ok(())
    }

    /// Reads a native depot's `partial` file (at open, and again before a refusal or a
    /// widening: another process may have widened it since). A damaged file is
    /// [`Error::PartialFile`] (corrupt): guessing would either refuse held partitions or call
    /// absent events corruption.
    pub(crate) fn reload_partial(&self) -> Result<(), Error> {
        let (Layout::Native, Some(root)) = (self.layout, &self.root) else {
            return Ok(());
        };
        let path = root.join(PARTIAL_FILE);
        if !self.storage.is_file(&path) {
            return Ok(());
        }
        let bytes = self.storage.read(&path).map_err(Error::io("read", &path))?;
        let filter = PartialFilter::parse_file_text(&String::from_utf8_lossy(&bytes))
            .map_err(|reason| Error::PartialFile { path, reason })?;
        *self.partial.write().unwrap_or_else(|e| e.into_inner()) = Some(filter);
        Ok(())
    }

    /// Refuses `partition` when this partial clone does not hold its events: the error names
    /// the partition, the filter, and how to fetch it.
    pub(crate) fn check_partition_held(&self, partition: &PartitionName) -> Result<(), Error> {
        if self.holds_partition(partition) {
            return Ok(());
        }
        // Another process may have widened the filter since this handle read it.
        let _ = self.reload_partial();
        match self.partial_filter() {
            Some(filter) if !filter.holds(partition.as_str()) => Err(Error::OutsidePartialClone {
                partition: partition.to_string(),
                filter: filter.describe(),
                depot: self.shown_root(),
            }),
            _ => Ok(()),
        }
    }

    /// Refuses a commit that writes to a partition this partial clone does not hold.
    pub(crate) fn check_partitions_held<'a>(
        &self,
        partitions: impl IntoIterator<Item = &'a PartitionName>,
    ) -> Result<(), Error> {
        if self
            .partial
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
        {
            return Ok(());
        }
        for partition in partitions {
            self.check_partition_held(partition)?;
        }
        Ok(())
    }

    /// The error for event `id` found missing: absent by design in a partial clone (it is not
    /// corruption), else `missing`.
    pub(crate) fn absent_or(&self, id: &ObjectId, missing: Error) -> Error {
        match (&missing, self.partial_filter()) {
            (Error::MissingObject { .. }, Some(filter)) => Error::AbsentFromPartialClone {
                id: *id,
                filter: filter.describe(),
                depot: self.shown_root(),
            },
            _ => missing,
        }
    }

    fn shown_root(&self) -> String {
        self.root
            .as_ref()
            .map_or_else(String::new, |r| format!(" '{}'", r.display()))
    }
}

/// The refusal of `--partitions` on a depot that is not a partial clone.
pub(crate) fn not_partial(depot: &Depot) -> Error {
    Error::Invalid(format!(
        "the depot{} is not a partial clone: it holds every partition already, so --partitions has nothing to fetch",
        depot.shown_root()
    ))
}

#[cfg(test)]
mod tests {
    use super::PartialFilter;
    use proptest::prelude::*;

    #[test]
    fn a_filter_round_trips_through_its_file_and_matches_by_segment() {
        let filter = PartialFilter::new(["accounts/*", "notes/**", "accounts/*"]).unwrap();
        assert_eq!(filter.globs(), ["accounts/*", "notes/**"]);
        let text = filter.to_file_text();
        assert_eq!(
            text,
            "retro partial 1\npartitions accounts/*\npartitions notes/**\n"
        );
        let back = PartialFilter::parse_file_text(&text).unwrap();
        assert_eq!(back.globs(), filter.globs());
        assert!(back.holds("accounts/alice"));
        assert!(!back.holds("accounts/alice/cards"));
        assert!(back.holds("notes/a/b"));
        assert!(!back.holds("session/s1"));
        let wider = back.widened(&PartialFilter::new(["session/*"]).unwrap());
        assert!(wider.holds("session/s1"));
        assert!(wider.contains_all(&back));
        assert!(!back.contains_all(&wider));
    }

    #[test]
    fn bad_globs_and_bad_files_are_refused() {
        assert!(PartialFilter::new(["accounts/["]).is_err());
        assert!(PartialFilter::new([""]).is_err());
        assert!(PartialFilter::new(["a b"]).is_err());
        assert!(PartialFilter::new(Vec::<String>::new()).is_err());
        assert!(PartialFilter::parse_file_text("").is_err());
        assert!(PartialFilter::parse_file_text("retro partial 1\n").is_err());
        assert!(PartialFilter::parse_file_text("retro partial 2\npartitions a/*\n").is_err());
        assert!(PartialFilter::parse_file_text("retro partial 1\nglob a/*\n").is_err());
    }

    proptest! {
        #[test]
        fn any_partial_file_text_parses_without_a_panic(text in "(retro partial 1\n)?((partitions )?[a-z*/\\[\\]{} ]{0,12}\n){0,4}") {
            if let Ok(filter) = PartialFilter::parse_file_text(&text) {
                let again = PartialFilter::parse_file_text(&filter.to_file_text()).unwrap();
                prop_assert_eq!(again.globs(), filter.globs());
            }
        }
    }
}
