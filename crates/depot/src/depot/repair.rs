//! repair: rebuild what a native depot can derive from its own files after damage, and say
//! plainly what it cannot. fsck finds; repair fixes only what has one right answer:
//!
//! - a pack whose index is missing, unusable or not its own gets its index rebuilt from the pack;
//!   a pack whose header is damaged gets its header rewritten (its records are intact);
//! - leftovers of killed writers (temp files, indexes whose pack never arrived) are removed;
//! - ref files are brought up to date with the journal (the same replay as recovery);
//! - a ref file that cannot be read is restored to the last value its reflog records, when that
//!   checkpoint exists, through the journal like any other move;
//! - unreadable lines of the failed-command log are dropped (the readable ones are kept);
//! - the partition index is rebuilt from history.
//!
//! Damaged records (bit rot inside a pack) and missing objects cannot be derived from what is
//! left: they are reported as unfixable, to be restored from a clone (`retro sync`) or a backup.

use super::{Depot, Error, FailureLog};
use crate::fsutil;
use crate::refdb::Error as RefError;

/// What [`Depot::repair`] did and could not do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// What was fixed, one sentence each.
    pub fixed: Vec<String>,
    /// What could not be fixed, one sentence each (restore it from a clone or a backup).
    pub unfixable: Vec<String>,
}

impl Depot {
    /// Repairs what can be derived (see the module docs). Native depots only.
    pub fn repair(&self) -> Result<RepairReport, Error> {
        let (Some(packs), Some(journal), Some(root)) = (&self.packs, &self.journal, &self.root)
        else {
            return Err(Error::Invalid(
                "repair works on native depots (go-retro and PostgreSQL depots have no derived \
                 files to rebuild; use 'retro fsck' and 'retro sync')"
                    .to_owned(),
            ));
        };
        let mut report = RepairReport::default();
        {
            let _lock = journal.lock()?;
            let packs_report = packs.repair()?;
            report.fixed.extend(packs_report.fixed);
            report.unfixable.extend(packs_report.unfixable);
            journal.recover_locked()?;

            let (_, unreadable) = self.refs.list_lenient("")?;
            for error in unreadable {
                let RefError::Corrupt { path, .. } = &error else {
                    report.unfixable.push(error.to_string());
                    continue;
                };
                let Some(name) = path
                    .strip_prefix(root)
                    .ok()
                    .and_then(|p| p.to_str())
                    .and_then(|p| crate::refdb::RefName::new(p).ok())
                else {
                    report.unfixable.push(error.to_string());
                    continue;
                };
                let last = self
                    .refs
                    .reflog(&name)
                    .ok()
                    .and_then(|log| log.last().and_then(|e| e.new));
                match last {
                    Some(id) if self.objects.contains(&id).unwrap_or(false) => {
                        journal.restore_ref_locked(&name, id, "repair: restored from the reflog")?;
                        report.fixed.push(format!(
                            "restored ref '{name}' to {} (its reflog's last value)",
                            id.to_short_hex(12)
                        ));
                    }
                    _ => report.unfixable.push(format!(
                        "{error}, and its reflog names no checkpoint this depot holds: delete the file or set it with 'retro update-ref'"
                    )),
                }
            }

            let (_, bad_lines) = self.failures_checked()?;
            if let (FailureLog::File(path), false) = (&self.failed_log, bad_lines.is_empty()) {
                let bytes = self.storage.read(path).map_err(Error::io("read", path))?;
                let kept: Vec<u8> = bytes
                    .split(|&b| b == b'\n')
                    .enumerate()
                    .filter(|(i, line)| !bad_lines.contains(&(i + 1)) && !line.is_empty())
                    .flat_map(|(_, line)| line.iter().copied().chain([b'\n']))
                    .collect();
                fsutil::write_atomic(&*self.storage, path, &kept)
                    .map_err(Error::io("write", path))?;
                report.fixed.push(format!(
                    "dropped {} unreadable line(s) from the failed-command log",
                    bad_lines.len()
                ));
            }
        }
        match self.reindex() {
            Ok((checkpoints, partitions, events)) => report.fixed.push(format!(
                "rebuilt the partition index ({checkpoints} checkpoints, {partitions} partitions, {events} events)"
            )),
            // History itself is damaged (an object lost with a pack's damaged bytes): the
            // index cannot be rebuilt past it, and the cause is already listed.
            Err(e) => report
                .unfixable
                .push(format!("the partition index cannot be rebuilt: {e}")),
        }
        Ok(report)
    }
}
