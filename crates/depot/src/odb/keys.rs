//! The key log of the active pack, `pack-<seq>.keys`: which object record starts at which offset,
//! persisted as the pack grows, so that opening a depot reads this small file instead of scanning
//! the pack (an open costs the same in a fresh depot and in one right after a large import).
//!
//! ```text
//! magic "RETROKY1"
//! chunk*: start u64 | end u64 | count u32 | count × (id[32] | offset u64) | crc32 over the chunk before it
//! ```
//!
//! All integers big-endian. A chunk covers the pack bytes `[start, end)`: it lists every object
//! record that starts there (journal and batch records are not listed). Chunks are contiguous: the
//! first starts just after the pack magic, each next one where the previous one ended.
//!
//! The file is derived data and never fsynced. A chunk is written only after the `fdatasync` that
//! made every pack byte it covers durable, so whatever part of the file survives a crash describes
//! durable records. A reader takes chunks in order and stops at the first one that is cut short,
//! fails its crc, is not contiguous, lists an offset outside its range, or reaches past the pack's
//! end; the pack is scanned from where the last good chunk ended. A wrong entry cannot serve wrong
//! data either: every object read is verified against its id.

use crate::hash::ObjectId;

/// The first bytes of a key log.
pub(crate) const MAGIC: &[u8; 8] = b"RETROKY1";
const CHUNK_HEAD: usize = 8 + 8 + 4;
const ENTRY: usize = 32 + 8;
/// A pack is appended to in small batches; a chunk is written once this many bytes of the pack
/// are not covered yet, so an open scans at most this much (plus one batch) of the pack.
pub(crate) const CHUNK_EVERY: u64 = 32 << 10;

/// The name of pack `seq`'s key log.
pub(crate) fn keys_name(seq: u64) -> String {
    format!("pack-{seq:016}.keys")
}

/// What [`parse`] accepted.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Parsed {
    /// The entries of the accepted chunks, in file order.
    pub entries: Vec<(ObjectId, u64)>,
    /// The pack offset the accepted chunks cover up to (`start` when none was accepted).
    pub end: u64,
    /// How many bytes of `bytes` the accepted chunks take.
    pub consumed: usize,
}

/// Parses the chunks in `bytes` (a key log's content after `skip` bytes), the first of which must
/// start at pack offset `start`; accepts chunks while they are whole, valid, contiguous and end at
/// or before `pack_len`. Never fails: a bad chunk ends what is accepted.
pub(crate) fn parse(bytes: &[u8], start: u64, pack_len: u64) -> Parsed {
    let mut parsed = Parsed {
        entries: Vec::new(),
        end: start,
        consumed: 0,
    };
    let mut at = 0usize;
    loop {
        let Some(head) = bytes.get(at..at + CHUNK_HEAD) else {
            return parsed;
        };
        let chunk_start = u64::from_be_bytes(head[..8].try_into().expect("8 bytes"));
        let chunk_end = u64::from_be_bytes(head[8..16].try_into().expect("8 bytes"));
        let count = u32::from_be_bytes(head[16..20].try_into().expect("4 bytes")) as usize;
        let Some(total) = count
            .checked_mul(ENTRY)
            .and_then(|n| n.checked_add(CHUNK_HEAD + 4))
        else {
            return parsed;
        };
        let Some(chunk) = bytes.get(at..at.saturating_add(total)) else {
            return parsed;
        };
        let (body, crc) = chunk.split_at(total - 4);
        if crc32fast::hash(body) != u32::from_be_bytes(crc.try_into().expect("4 bytes"))
            || chunk_start != parsed.end
            || chunk_end <= chunk_start
            || chunk_end > pack_len
        {
            return parsed;
        }
        let mut entries = Vec::with_capacity(count);
        for entry in body[CHUNK_HEAD..].chunks_exact(ENTRY) {
            let id = ObjectId::from_slice(&entry[..32]).expect("32 bytes");
            let offset = u64::from_be_bytes(entry[32..].try_into().expect("8 bytes"));
            if offset < chunk_start || offset >= chunk_end {
                return parsed;
            }
            entries.push((id, offset));
        }
        parsed.entries.extend(entries);
        parsed.end = chunk_end;
        at += total;
        parsed.consumed = at;
    }
}

/// Appends to `out` one chunk covering `[start, end)` with `entries`.
pub(crate) fn encode_chunk(out: &mut Vec<u8>, start: u64, end: u64, entries: &[(ObjectId, u64)]) {
    let from = out.len();
    out.extend_from_slice(&start.to_be_bytes());
    out.extend_from_slice(&end.to_be_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for (id, offset) in entries {
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&offset.to_be_bytes());
    }
    let crc = crc32fast::hash(&out[from..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ObjectId {
        ObjectId::from_slice(&[n; 32]).expect("32 bytes")
    }

    fn log() -> Vec<u8> {
        let mut out = Vec::new();
        encode_chunk(&mut out, 8, 100, &[(id(1), 8), (id(2), 50)]);
        encode_chunk(&mut out, 100, 180, &[(id(3), 120)]);
        encode_chunk(&mut out, 180, 200, &[]);
        out
    }

    #[test]
    fn whole_chunks_are_accepted_in_order() {
        let bytes = log();
        let parsed = parse(&bytes, 8, 200);
        assert_eq!(parsed.entries, vec![(id(1), 8), (id(2), 50), (id(3), 120)]);
        assert_eq!((parsed.end, parsed.consumed), (200, bytes.len()));
    }

    #[test]
    fn a_cut_or_flipped_chunk_ends_what_is_accepted() {
        let bytes = log();
        let first = CHUNK_HEAD + 2 * ENTRY + 4;
        for cut in 0..bytes.len() {
            let parsed = parse(&bytes[..cut], 8, 200);
            assert!(parsed.consumed <= cut);
            assert!(parsed.end == 8 || parsed.end == 100 || parsed.end == 180);
        }
        let starts = [0, first, first + CHUNK_HEAD + ENTRY + 4, bytes.len()];
        for byte in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[byte] ^= 0x10;
            let parsed = parse(&flipped, 8, 200);
            // Every chunk before the flipped one survives; it and all after it are refused.
            let chunk_start = starts.iter().rev().find(|&&s| s <= byte).copied();
            assert_eq!(Some(parsed.consumed), chunk_start, "flip at {byte}");
        }
    }

    #[test]
    fn chunks_past_the_pack_or_out_of_order_are_refused() {
        let bytes = log();
        assert_eq!(parse(&bytes, 8, 150).end, 100, "past the end of the pack");
        assert_eq!(
            parse(&bytes, 100, 200).end,
            100,
            "not where the log must start"
        );
        let mut out = Vec::new();
        encode_chunk(&mut out, 8, 100, &[(id(1), 100)]);
        assert_eq!(parse(&out, 8, 200).end, 8, "an offset outside its range");
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for len in 0..400 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let parsed = parse(&bytes, 8, u64::MAX);
            assert!(parsed.consumed <= bytes.len());
        }
    }
}
