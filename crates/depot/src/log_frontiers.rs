//! The `log-frontiers` file of a native depot (derived, never trusted): for the most recently
//! committed checkpoints, the frontier of the checkpoint log each one commits to (see
//! [`retro_object::checkpoint_log`]), so that the next commit on top of one computes its `log`
//! field in O(log n) without walking history, even in a new process.
//!
//! Format (all integers big-endian): `RETROLF1 | count u32 | count × (id[32] | size u64 |
//! popcount(size) × root[32]) | crc32 (IEEE) of everything before it`, newest entry first, at most
//! [`KEEP`] entries. Replaced whole (temp file, rename) every few dozen commits and when a depot
//! closes, never fsynced: a stale file costs a walk back to the newest checkpoint it knows, a lost
//! or torn one a walk of the first-parent chain, never a wrong field, since an
//! entry is used only when its frontier's head equals the `log` field of the checkpoint it is
//! for (read and hash-verified).

use std::path::Path;

use crate::hash::ObjectId;
use crate::object::checkpoint_log::Frontier;
use crate::storage::{OpenOptions, Storage};

const MAGIC: &[u8; 8] = b"RETROLF1";
/// How many checkpoints' frontiers the file keeps.
pub(crate) const KEEP: usize = 16;

/// The file's name in a native depot.
pub(crate) const FILE_NAME: &str = "log-frontiers";

/// Encodes entries (newest first) into the file's bytes.
pub(crate) fn encode(entries: &[(ObjectId, Frontier)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + entries.len() * 400);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for (id, frontier) in entries {
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&frontier.size().to_be_bytes());
        for root in frontier.roots() {
            out.extend_from_slice(root);
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// Decodes the file's bytes; `None` for anything that is not a whole, checksummed file.
pub(crate) fn decode(bytes: &[u8]) -> Option<Vec<(ObjectId, Frontier)>> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32fast::hash(body).to_be_bytes() != crc {
        return None;
    }
    let rest = body.strip_prefix(MAGIC)?;
    let (count, mut rest) = rest.split_at_checked(4)?;
    let count = u32::from_be_bytes(count.try_into().ok()?) as usize;
    let mut entries = Vec::with_capacity(count.min(KEEP));
    for _ in 0..count {
        let (id, after) = rest.split_at_checked(32)?;
        let (size, after) = after.split_at_checked(8)?;
        let size = u64::from_be_bytes(size.try_into().ok()?);
        let n = size.count_ones() as usize;
        let (roots, after) = after.split_at_checked(n * 32)?;
        let roots = roots
            .chunks_exact(32)
            .map(|c| c.try_into().expect("32 bytes"))
            .collect();
        entries.push((
            ObjectId::from_slice(id)?,
            Frontier::from_parts(size, roots)?,
        ));
        rest = after;
    }
    rest.is_empty().then_some(entries)
}

/// Reads the file at `path`; empty when it is missing or damaged.
pub(crate) fn read(storage: &dyn Storage, path: &Path) -> Vec<(ObjectId, Frontier)> {
    storage
        .read(path)
        .ok()
        .and_then(|bytes| decode(&bytes))
        .unwrap_or_default()
}

/// Replaces the file with `entries` (newest first, at most [`KEEP`]): temp file and rename, no
/// fsync (derived data). Best effort: a failure only costs a later walk.
pub(crate) fn write(storage: &dyn Storage, path: &Path, entries: &[(ObjectId, Frontier)]) {
    let bytes = encode(&entries[..entries.len().min(KEEP)]);
    let temp = crate::fsutil::temp_path_for(path);
    let written = (|| {
        let file = storage.open(&temp, OpenOptions::CREATE_NEW)?;
        file.write_all(&bytes)?;
        drop(file);
        storage.rename(&temp, path)
    })();
    if written.is_err() {
        let _ = storage.remove_file(&temp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_damage_reads_as_nothing() {
        let mut entries = Vec::new();
        let mut frontier = Frontier::new();
        for i in 0..5u8 {
            entries.push((ObjectId::of(&[i]), frontier.clone()));
            frontier.push_id(&ObjectId::of(&[i]));
        }
        let bytes = encode(&entries);
        assert_eq!(decode(&bytes), Some(entries));
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert_eq!(decode(&flipped), None);
    }
}
