//! Pack files: retro's default object store and the medium of its one-fsync commit.
//!
//! A pack directory holds numbered, append-only files `pack-<seq>.pack`. Each starts with the magic
//! `RETROPK1` and holds records:
//!
//! ```text
//! tag: u8 | len: u32 BE | payload: len bytes | crc32: u32 BE over tag, len and payload
//! ```
//!
//! An object record (tag 1) carries `id[32] | codec u8 | data` where codec 0 is the encoded object
//! as is and codec 1 is it deflated with zlib. A journal record (tag 2) is opaque here: the depot's
//! journal uses it to make a ref move ride in the same append (and the same fsync) as the objects.
//!
//! gc writes *version 2* packs (`RETROPK2`): a dictionary record (tag 4) first, then object
//! records `codec u8 | data` without ids, compressed against that dictionary ([`codec`]); their
//! ids are in the index, or derived by hashing when a scan has to rebuild it. [`Layout`] tells
//! the two apart; everything else about packs is the same for both.
//!
//! The highest-numbered pack without an index is *active*: writers append to it under
//! `packs/write.lock`. When it grows past a size it is *sealed*: a sorted index `pack-<seq>.idx`
//! (fan-out table, then `id[32] | offset u64 BE` entries) is written durably and a new active pack
//! begins. Sealed packs never change again; their indexes are memory-mapped.
//!
//! Crash safety: a record is acknowledged only after an fsync that covers it. A crash can leave a
//! torn tail (a partial record, or one whose crc does not match); readers stop at the first invalid
//! record and never serve anything after it, and the next writer truncates the tail before
//! appending. Every object read is verified against its id.

use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::{codec, keys, Error, LooseStore, ObjectStore};
use crate::fsutil;
use crate::hash::{ObjectId, Prefix};
use crate::lockfile::{DepotLock, LockFile};
use crate::object::EncodedObject;
use crate::storage::{FsStorage, Mapped, OpenOptions, Storage, StorageFile, Writer};

const PACK_MAGIC: &[u8; 8] = b"RETROPK1";
/// A version 2 pack (written by gc): a dictionary record first, object records without ids.
const PACK_MAGIC_V2: &[u8; 8] = b"RETROPK2";
/// The tag of a version 2 pack's dictionary record, at offset 8.
const DICTIONARY_TAG: u8 = 4;
const IDX_MAGIC: &[u8; 8] = b"RETROIX1";
/// The index of a version 2 pack: entries keep a short id prefix (the records hold no ids, and
/// every lookup decodes and hashes the record it finds, so a prefix is all a lookup needs).
const IDX_MAGIC_V2: &[u8; 8] = b"RETROIX2";
/// Header of an index: magic, covered pack length (u64), entry count (u64), 256 cumulative u32.
const IDX_HEADER: usize = 8 + 8 + 8 + 256 * 4;
/// A version 1 entry: `id[32] | offset u64`.
const IDX_ENTRY: usize = 32 + 8;
/// A version 2 entry: `id[..10] | offset u48`.
const IDX_ENTRY_V2: usize = SHORT_ID + 6;
/// Bytes of an id a version 2 index keeps: 80 bits, so that two objects of a pack share a prefix
/// with odds of 1 in 10^12 at a million objects (and a lookup still tells them apart).
const SHORT_ID: usize = 10;
const RECORD_OVERHEAD: u64 = 1 + 4 + 4;
/// The tag of a batch record, which frames one append.
const BATCH_TAG: u8 = 3;
/// Records larger than this are treated as corruption.
const MAX_RECORD: u32 = 256 << 20;
/// Active packs are sealed once they pass this size.
const DEFAULT_ROLL_SIZE: u64 = 8 << 20;

/// The kinds of record a pack holds. Crate-private: only the journal writes journal records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordKind {
    /// An object.
    Object,
    /// A journal entry (a ref transaction), opaque to the pack store.
    Journal,
}

impl RecordKind {
    fn tag(self) -> u8 {
        match self {
            RecordKind::Object => 1,
            RecordKind::Journal => 2,
        }
    }

    fn from_tag(tag: u8) -> Option<RecordKind> {
        match tag {
            1 => Some(RecordKind::Object),
            2 => Some(RecordKind::Journal),
            _ => None,
        }
    }
}

/// Where a record sits: pack sequence number and byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// The pack's number.
    pub pack: u64,
    /// The record's byte offset in it.
    pub offset: u64,
}

/// Counts for `gc` and reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackStats {
    /// Number of pack files.
    pub packs: usize,
    /// Objects in packs (duplicates across packs counted once per pack).
    pub objects: u64,
    /// Bytes of pack and index files.
    pub bytes: u64,
}

fn pack_name(seq: u64) -> String {
    format!("pack-{seq:016}.pack")
}

fn idx_name(seq: u64) -> String {
    format!("pack-{seq:016}.idx")
}

/// gc's marker naming the packs a repack into `seq` replaces.
fn replaces_name(seq: u64) -> String {
    format!("pack-{seq:016}.replaces")
}

fn parse_pack_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("pack-")?.strip_suffix(".pack")?;
    if digits.len() != 16 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Frames one record.
pub(crate) fn frame_record(out: &mut Vec<u8>, kind: RecordKind, payload_parts: &[&[u8]]) {
    frame_raw(out, kind.tag(), payload_parts);
}

fn frame_raw(out: &mut Vec<u8>, tag: u8, payload_parts: &[&[u8]]) {
    let len: usize = payload_parts.iter().map(|p| p.len()).sum();
    let start = out.len();
    out.push(tag);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    for part in payload_parts {
        out.extend_from_slice(part);
    }
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// Reads one record at `offset`: `Some((kind_tag, payload))` when it is whole and its crc matches.
fn read_record_at(file: &dyn StorageFile, offset: u64, len_limit: u64) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    file.read_exact_at(&mut head, offset).ok()?;
    let len = u32::from_be_bytes(head[1..5].try_into().expect("4 bytes"));
    if len > MAX_RECORD || offset + RECORD_OVERHEAD + u64::from(len) > len_limit {
        return None;
    }
    let mut rest = vec![0u8; len as usize + 4];
    file.read_exact_at(&mut rest, offset + 5).ok()?;
    let (body, crc) = rest.split_at(len as usize);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&head);
    hasher.update(body);
    if hasher.finalize() != u32::from_be_bytes(crc.try_into().expect("4 bytes")) {
        return None;
    }
    rest.truncate(len as usize);
    Some((head[0], rest))
}

/// The offset of the next valid batch record after `from`, searching byte by byte (only after
/// damage, so the cost does not matter): a batch header is 17 bytes whose crc must match.
fn next_batch_after(file: &dyn StorageFile, from: u64, file_len: u64) -> Option<u64> {
    let mut window = Vec::new();
    let mut base = from + 1;
    while base + RECORD_OVERHEAD + 8 <= file_len {
        let len = (1u64 << 20).min(file_len - base) as usize;
        window.resize(len, 0);
        file.read_exact_at(&mut window, base).ok()?;
        for i in 0..len.saturating_sub(16) {
            if window[i] == BATCH_TAG
                && window[i + 1..i + 5] == [0, 0, 0, 8]
                && read_record_at(file, base + i as u64, file_len).is_some()
            {
                return Some(base + i as u64);
            }
        }
        base += (len.saturating_sub(16)).max(1) as u64;
    }
    None
}

/// Where a scan stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ScanEnd {
    /// Offset just past the last valid record: everything after it is a torn tail.
    pub valid_end: u64,
    /// Byte ranges of damaged batches that valid data follows (corruption, not a crash).
    pub damaged: Vec<(u64, u64)>,
}

/// Scans records from `start`, calling `f(offset, kind, payload)` for each valid one.
///
/// Appends are framed by a batch record giving the length of the records that follow. An invalid
/// record inside a batch is a *torn tail* when nothing valid follows the batch (a crash during
/// that append: nothing in it was acknowledged) and the scan ends at the batch's start; when a
/// valid record follows the batch, the batch is *damaged* (bit rot): it is reported, its valid
/// records are still delivered, and the scan goes on after it. Nothing is ever truncated here.
///
/// `floor` is the offset up to which the file is known to hold acknowledged data (the journal's
/// materialized position, when it lies in this file; 0 otherwise). An invalid record that starts
/// below it cannot be a torn write, since everything below it was fsynced and acknowledged: it is
/// damage, reported, and the scan resumes after the damaged batch (or at the floor), so that no
/// writer ever truncates an acknowledged commit.
pub(crate) fn scan_records(
    file: &dyn StorageFile,
    start: u64,
    floor: u64,
    mut f: impl FnMut(u64, RecordKind, &[u8]) -> Result<(), Error>,
) -> Result<ScanEnd, Error> {
    let file_len = file.len().map_err(|e| Error::Io {
        verb: "stat",
        path: PathBuf::from("pack"),
        source: e,
    })?;
    let mut reader = BufReader::with_capacity(8 << 10, ReadAt { file, pos: start });
    let mut offset = start;
    let mut end = ScanEnd {
        valid_end: start,
        damaged: Vec::new(),
    };
    // The batch the scan is inside: (start, end), and its records, delivered only once the
    // whole batch has been read and checked.
    let mut batch: Option<(u64, u64)> = None;
    let mut pending: Vec<(u64, RecordKind, Vec<u8>)> = Vec::new();
    let mut payload = Vec::new();
    // Where the scan resumes after damage at `bad_start` that looks like a torn tail: `None`
    // when it is one (at or past the floor), else the offset past the damage.
    let resume_below_floor = |bad_start: u64, batch_end: Option<u64>| -> Option<u64> {
        if bad_start >= floor {
            return None;
        }
        let candidate = batch_end
            .filter(|&e| e > bad_start && e <= file_len)
            .or_else(|| next_batch_after(file, bad_start, file_len))
            .unwrap_or(floor);
        Some(candidate.max(floor.min(file_len)).max(bad_start + 1))
    };
    loop {
        if let Some((_, batch_end)) = batch {
            if offset >= batch_end {
                for (at, kind, body) in pending.drain(..) {
                    f(at, kind, &body)?;
                }
                batch = None;
                end.valid_end = offset;
            }
        }
        let record = next_record(&mut reader, &mut payload)?;
        let Some((tag, len)) = record else {
            // Invalid or missing record at `offset`.
            if offset >= file_len && batch.is_none() {
                end.valid_end = offset;
                return Ok(end);
            }
            match batch {
                Some((batch_start, batch_end))
                    if (batch_end < file_len
                        && read_record_at(file, batch_end, file_len).is_some())
                        || (batch_start < floor && batch_end <= file_len) =>
                {
                    // Damage inside a batch that valid data follows (or that was acknowledged):
                    // report and skip it, but keep the batch's other valid records visible,
                    // skipping damaged records whose header still tells their length.
                    for (at, kind, body) in pending.drain(..) {
                        f(at, kind, &body)?;
                    }
                    let mut inner = offset;
                    while inner < batch_end {
                        if let Some((tag, body)) = read_record_at(file, inner, batch_end) {
                            if let Some(kind) = RecordKind::from_tag(tag) {
                                f(inner, kind, &body)?;
                            }
                            inner += RECORD_OVERHEAD + body.len() as u64;
                            continue;
                        }
                        let mut head = [0u8; 5];
                        if file.read_exact_at(&mut head, inner).is_err() {
                            break;
                        }
                        let len = u32::from_be_bytes(head[1..5].try_into().expect("4 bytes"));
                        inner += RECORD_OVERHEAD + u64::from(len);
                    }
                    end.damaged.push((batch_start, batch_end));
                    offset = batch_end;
                    reader = BufReader::with_capacity(8 << 10, ReadAt { file, pos: offset });
                    batch = None;
                    end.valid_end = offset;
                    continue;
                }
                Some((batch_start, batch_end)) => {
                    match resume_below_floor(batch_start, Some(batch_end)) {
                        Some(resume) => {
                            pending.clear();
                            end.damaged.push((batch_start, resume));
                            offset = resume;
                            reader =
                                BufReader::with_capacity(8 << 10, ReadAt { file, pos: offset });
                            batch = None;
                            end.valid_end = offset;
                            continue;
                        }
                        None => {
                            end.valid_end = batch_start;
                            return Ok(end);
                        }
                    }
                }
                None => {
                    // Outside a batch: a torn tail only if no valid batch follows and nothing
                    // here was acknowledged. Damage to a batch header with commits after it must
                    // never be mistaken for a crash.
                    let resume = next_batch_after(file, offset, file_len)
                        .or_else(|| resume_below_floor(offset, None));
                    match resume {
                        Some(next) => {
                            end.damaged.push((offset, next));
                            offset = next;
                            reader =
                                BufReader::with_capacity(8 << 10, ReadAt { file, pos: offset });
                            end.valid_end = offset;
                            continue;
                        }
                        None => {
                            end.valid_end = offset;
                            return Ok(end);
                        }
                    }
                }
            }
        };
        let body = &payload[..len];
        if tag == BATCH_TAG {
            if let Some((batch_start, batch_end)) = batch {
                // A batch header inside a batch: the earlier batch was cut short.
                match resume_below_floor(batch_start, Some(offset)) {
                    Some(_) => {
                        // Acknowledged, so damage: drop the cut batch's records, resume here.
                        let _ = batch_end;
                        pending.clear();
                        end.damaged.push((batch_start, offset));
                    }
                    None => {
                        end.valid_end = batch_start;
                        return Ok(end);
                    }
                }
            }
            let Ok(bytes) = <[u8; 8]>::try_from(body) else {
                end.valid_end = offset;
                return Ok(end);
            };
            let inner_len = u64::from_be_bytes(bytes);
            let header_end = offset + RECORD_OVERHEAD + 8;
            batch = Some((offset, header_end + inner_len));
            offset = header_end;
            continue;
        }
        match RecordKind::from_tag(tag) {
            Some(kind) if batch.is_some() => pending.push((offset, kind, body.to_vec())),
            Some(kind) => f(offset, kind, body)?,
            None => {
                end.valid_end = batch.map_or(offset, |b| b.0);
                return Ok(end);
            }
        }
        offset += RECORD_OVERHEAD + len as u64;
        if batch.is_none() {
            end.valid_end = offset;
        }
    }
}

/// Reads the next whole, crc-valid record into `payload`: `(tag, len)`, or `None` when the
/// record is missing, cut short or corrupt.
fn next_record(
    reader: &mut impl Read,
    payload: &mut Vec<u8>,
) -> Result<Option<(u8, usize)>, Error> {
    let mut head = [0u8; 5];
    if !read_full(reader, &mut head)? {
        return Ok(None);
    }
    let len = u32::from_be_bytes(head[1..5].try_into().expect("4 bytes"));
    if len > MAX_RECORD {
        return Ok(None);
    }
    payload.resize(len as usize + 4, 0);
    if !read_full(reader, payload)? {
        return Ok(None);
    }
    let (body, crc) = payload.split_at(len as usize);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&head);
    hasher.update(body);
    if hasher.finalize() != u32::from_be_bytes(crc.try_into().expect("4 bytes")) {
        return Ok(None);
    }
    Ok(Some((head[0], len as usize)))
}

/// Reads exactly `buf.len()` bytes; `false` on a clean or partial end of file.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> Result<bool, Error> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Error::Io {
                    verb: "read",
                    path: PathBuf::from("pack"),
                    source: e,
                })
            }
        }
    }
    Ok(true)
}

/// A `Read` over a file at a moving offset, without touching the file's cursor.
struct ReadAt<'a> {
    file: &'a dyn StorageFile,
    pos: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// How a pack's object records are laid out, from its first bytes.
#[derive(Debug, Clone)]
enum Layout {
    /// `RETROPK1`: object records carry their id: `id[32] | codec u8 | data`.
    V1,
    /// `RETROPK2`: a dictionary record at offset 8, then object records `codec u8 | data`, whose
    /// ids are the hashes of what they decode to (the index holds them).
    V2 {
        dictionary: Arc<codec::Dictionary>,
        /// Where the object records start: just past the dictionary record.
        start: u64,
    },
}

impl Layout {
    /// Reads the layout of the pack in `file` (`len` bytes): `(layout, header damaged)`. A pack
    /// whose magic is damaged is still read: as version 2 when a dictionary record follows it.
    fn read(file: &dyn StorageFile, len: u64) -> (Layout, bool) {
        let mut magic = [0u8; 8];
        let read = file.read_exact_at(&mut magic, 0).is_ok();
        if read && &magic == PACK_MAGIC {
            return (Layout::V1, false);
        }
        match read_record_at(file, PACK_MAGIC.len() as u64, len) {
            Some((DICTIONARY_TAG, bytes)) => (
                Layout::V2 {
                    start: PACK_MAGIC.len() as u64 + RECORD_OVERHEAD + bytes.len() as u64,
                    dictionary: Arc::new(codec::Dictionary::new(bytes)),
                },
                !(read && &magic == PACK_MAGIC_V2),
            ),
            _ => (Layout::V1, true),
        }
    }

    /// Where object records start.
    fn start(&self) -> u64 {
        match self {
            Layout::V1 => PACK_MAGIC.len() as u64,
            Layout::V2 { start, .. } => *start,
        }
    }

    fn magic(&self) -> &'static [u8; 8] {
        match self {
            Layout::V1 => PACK_MAGIC,
            Layout::V2 { .. } => PACK_MAGIC_V2,
        }
    }

    /// The id of the object an object record's payload holds (in a version 2 pack, the hash of
    /// what it decodes to); `None` when the payload is not a whole object record.
    fn record_id(&self, payload: &[u8]) -> Option<ObjectId> {
        match self {
            Layout::V1 => (payload.len() >= 33).then(|| ObjectId::from_slice(&payload[..32]))?,
            Layout::V2 { dictionary, .. } => {
                let (&codec, data) = payload.split_first()?;
                codec::decode(codec, data, Some(dictionary), u64::from(MAX_RECORD))
                    .ok()
                    .map(|bytes| ObjectId::of(&bytes))
            }
        }
    }

    /// Decodes an object record's payload into the encoded object bytes (which the caller
    /// verifies against `id`, as every read is).
    fn decode(&self, payload: &[u8], id: &ObjectId) -> Result<Vec<u8>, Error> {
        let corrupt = |reason: &str| Error::Corrupt {
            id: *id,
            reason: reason.to_owned(),
        };
        let (codec, data, dictionary) = match self {
            Layout::V1 => {
                if payload.len() < 33 {
                    return Err(corrupt("pack record is too short"));
                }
                if &payload[..32] != id.as_bytes() {
                    return Err(corrupt("pack index points at another object's record"));
                }
                (payload[32], &payload[33..], None)
            }
            Layout::V2 { dictionary, .. } => {
                let Some((&codec, data)) = payload.split_first() else {
                    return Err(corrupt("pack record is empty"));
                };
                (codec, data, Some(&**dictionary))
            }
        };
        codec::decode(codec, data, dictionary, u64::from(MAX_RECORD)).map_err(|r| corrupt(&r))
    }
}

/// A sealed pack: its data is read with `pread` (so walking a large depot does not grow the
/// process's resident memory with mapped pages), its index is memory-mapped.
struct Sealed {
    seq: u64,
    layout: Layout,
    data: Box<dyn StorageFile>,
    data_len: u64,
    /// Memory-mapped on the real file system ([`Storage::map`]).
    idx: Mapped,
    /// The index keeps id prefixes (version 2), not whole ids.
    short: bool,
    count: usize,
    /// The pack length the index covers.
    covered: u64,
    /// A bit filter over the ids (ids are uniform hashes: three 32-bit slices of the id are the
    /// probe positions), built once a pack has been probed often, so that a miss costs three
    /// bit tests instead of a binary search: with dozens of packs most probes are misses.
    filter: std::sync::OnceLock<IdFilter>,
    probes: std::sync::atomic::AtomicU32,
}

/// Probes before a pack builds its filter: at least this many, and at least one for every
/// [`FILTER_ENTRIES_PER_PROBE`] entries of its index, so that building it (which reads the whole
/// index) never costs a short-lived process more than the probes it saves.
const FILTER_AFTER_PROBES: u32 = 64;
const FILTER_ENTRIES_PER_PROBE: usize = 16;

struct IdFilter {
    bits: Vec<u64>,
    mask: u64,
}

impl IdFilter {
    fn positions(id: &[u8], mask: u64) -> [u64; 3] {
        let part = |i: usize| u32::from_le_bytes(id[i..i + 4].try_into().expect("4 bytes"));
        // Within the first 10 bytes: all a version 2 index keeps (byte 0 picks the fan-out slot).
        [part(1), part(5), part(3).rotate_left(16)].map(|p| u64::from(p) & mask)
    }

    fn build(sealed: &Sealed) -> IdFilter {
        let size = (sealed.count.max(1) * 16).next_power_of_two() as u64;
        let mut filter = IdFilter {
            bits: vec![0; (size / 64).max(1) as usize],
            mask: size - 1,
        };
        for i in 0..sealed.count {
            for bit in Self::positions(sealed.entry(i).0, filter.mask) {
                filter.bits[(bit / 64) as usize] |= 1 << (bit % 64);
            }
        }
        filter
    }

    fn may_contain(&self, id: &ObjectId) -> bool {
        Self::positions(id.as_bytes(), self.mask)
            .iter()
            .all(|bit| self.bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }
}

impl Sealed {
    fn open(storage: &dyn Storage, dir: &Path, seq: u64) -> Result<Sealed, Error> {
        let pack_path = dir.join(pack_name(seq));
        let idx_path = dir.join(idx_name(seq));
        let pack = storage
            .open(&pack_path, OpenOptions::READ)
            .map_err(Error::io("open", &pack_path))?;
        let data_len = pack.len().map_err(Error::io("stat", &pack_path))?;
        let (layout, bad_header) = Layout::read(&*pack, data_len);
        let idx = storage
            .map(&idx_path)
            .map_err(Error::io("map", &idx_path))?;
        let bad = |reason: &str| Error::CorruptFile {
            path: idx_path.clone(),
            reason: reason.to_owned(),
        };
        let short = match idx.get(..8) {
            _ if idx.len() < IDX_HEADER => return Err(bad("not a retro pack index")),
            Some(magic) if magic == IDX_MAGIC => false,
            Some(magic) if magic == IDX_MAGIC_V2 => true,
            _ => return Err(bad("not a retro pack index")),
        };
        let width = if short { IDX_ENTRY_V2 } else { IDX_ENTRY };
        let covered = u64::from_be_bytes(idx[8..16].try_into().expect("8 bytes"));
        let count = u64::from_be_bytes(idx[16..24].try_into().expect("8 bytes")) as usize;
        if (idx.len() as u64) != (IDX_HEADER as u64 + count as u64 * width as u64 + 4) {
            return Err(bad("its length does not match its entry count"));
        }
        if bad_header {
            return Err(Error::CorruptFile {
                path: pack_path,
                reason: "not a retro pack (bad header)".to_owned(),
            });
        }
        let sealed = Sealed {
            seq,
            layout,
            data: pack,
            data_len,
            idx,
            short,
            count,
            covered,
            filter: std::sync::OnceLock::new(),
            probes: std::sync::atomic::AtomicU32::new(0),
        };
        // The index must belong to this pack: its first entry's record must be there and carry
        // that id (one read). A pack number is never reused, so this only fails on damage.
        if count > 0 {
            let (key, offset) = sealed.entry(0);
            if offset < covered.min(data_len) {
                let bound = match sealed.layout {
                    Layout::V1 => {
                        let mut head = [0u8; 5 + 32];
                        sealed
                            .data
                            .read_exact_at(&mut head, offset)
                            .is_ok_and(|()| head[0] == 1 && head[5..5 + key.len()] == *key)
                    }
                    // Its records hold no id: the first one must decode to an object whose id
                    // starts as the entry says.
                    Layout::V2 { .. } => sealed
                        .decoded_id(offset)
                        .is_some_and(|id| id.as_bytes().starts_with(key)),
                };
                if !bound {
                    return Err(bad(
                        "it does not describe this pack (its first entry is not there)",
                    ));
                }
            }
        }
        Ok(sealed)
    }

    /// True when the pack is shorter than its index says (cut): objects past the end are lost.
    fn truncated(&self) -> bool {
        self.data_len < self.covered
    }

    /// Entry `i`: the id (a version 2 index: its first [`SHORT_ID`] bytes) and the offset.
    fn entry(&self, i: usize) -> (&[u8], u64) {
        if self.short {
            let at = IDX_HEADER + i * IDX_ENTRY_V2;
            let mut offset = [0u8; 8];
            offset[2..].copy_from_slice(&self.idx[at + SHORT_ID..at + IDX_ENTRY_V2]);
            return (&self.idx[at..at + SHORT_ID], u64::from_be_bytes(offset));
        }
        let at = IDX_HEADER + i * IDX_ENTRY;
        let id = &self.idx[at..at + 32];
        let offset = u64::from_be_bytes(self.idx[at + 32..at + 40].try_into().expect("8 bytes"));
        (id, offset)
    }

    /// The id of the object the record at `offset` holds: a version 1 record says it (one
    /// small read, checked later by the read that hashes the record); a version 2 one is decoded
    /// and hashed.
    fn id_at(&self, offset: u64) -> Option<ObjectId> {
        match self.layout {
            Layout::V1 => {
                let mut head = [0u8; 5 + 32];
                self.data.read_exact_at(&mut head, offset).ok()?;
                (head[0] == RecordKind::Object.tag()).then(|| ObjectId::from_slice(&head[5..]))?
            }
            Layout::V2 { .. } => self.decoded_id(offset),
        }
    }

    /// The id of the object the record at `offset` holds, by decoding and hashing it.
    fn decoded_id(&self, offset: u64) -> Option<ObjectId> {
        let placeholder = ObjectId::from_slice(&[0; 32]).expect("32 bytes");
        self.record(offset, &placeholder)
            .ok()
            .map(|bytes| ObjectId::of(&bytes))
    }

    /// The bytes of `id` if this pack holds it: `None` when it does not, an error when the
    /// record the index names for it is damaged. With a version 2 index every record whose
    /// entry shares the id's prefix is decoded and hashed until one is `id`.
    fn get(&self, id: &ObjectId) -> Option<Result<Vec<u8>, Error>> {
        let first = self.find(id)?;
        if !self.short {
            return Some(self.record(first.1, id));
        }
        let mut damaged = None;
        let key = &id.as_bytes()[..SHORT_ID];
        for i in first.0..self.count {
            let (probe, offset) = self.entry(i);
            if probe != key {
                break;
            }
            match self.record(offset, id) {
                Ok(bytes) if ObjectId::of(&bytes) == *id => return Some(Ok(bytes)),
                Ok(_) => {}
                // A version 1 record names its object: another one sharing the prefix is no
                // damage, only not this id.
                Err(_) if matches!(self.layout, Layout::V1) && self.id_at(offset) != Some(*id) => {}
                Err(e) => damaged = damaged.or(Some(e)),
            }
        }
        damaged.map(Err)
    }

    /// Whether this pack holds `id` (exactly: a version 2 index is checked against the record).
    fn holds(&self, id: &ObjectId) -> bool {
        match self.short {
            false => self.find(id).is_some(),
            true => self.get(id).is_some_and(|r| r.is_ok()),
        }
    }

    /// Every id this pack holds, in index order. A version 2 index keeps prefixes only: each
    /// record is decoded and hashed (gc and fsck, which read every object anyway).
    fn for_each_id(&self, f: &mut dyn FnMut(ObjectId) -> Result<(), Error>) -> Result<(), Error> {
        for i in 0..self.count {
            let (key, offset) = self.entry(i);
            if !self.short {
                f(ObjectId::from_slice(key).expect("32 bytes"))?;
            } else if let Some(id) = self.id_at(offset) {
                f(id)?;
            }
        }
        Ok(())
    }

    fn fanout(&self, byte: usize) -> usize {
        let at = 24 + byte * 4;
        u32::from_be_bytes(self.idx[at..at + 4].try_into().expect("4 bytes")) as usize
    }

    fn range_of(&self, first: u8) -> (usize, usize) {
        let lo = if first == 0 {
            0
        } else {
            self.fanout(first as usize - 1)
        };
        (
            lo.min(self.count),
            self.fanout(first as usize).min(self.count),
        )
    }

    /// The first entry that may be `id` (a version 2 index: the first with its prefix), and its
    /// offset; not checked against the record.
    fn find(&self, id: &ObjectId) -> Option<(usize, u64)> {
        let probes = self
            .probes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if probes >= FILTER_AFTER_PROBES
            && probes as usize >= self.count / FILTER_ENTRIES_PER_PROBE
            && !self
                .filter
                .get_or_init(|| IdFilter::build(self))
                .may_contain(id)
        {
            return None;
        }
        let (mut lo, mut hi) = self.range_of(id.first_byte());
        let key = match self.short {
            true => &id.as_bytes()[..SHORT_ID],
            false => id.as_bytes().as_slice(),
        };
        // The first entry not below `key`.
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.entry(mid).0 < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let (probe, offset) = (lo < self.count).then(|| self.entry(lo))?;
        (probe == key).then_some((lo, offset))
    }

    fn record(&self, offset: u64, id: &ObjectId) -> Result<Vec<u8>, Error> {
        let corrupt = |reason: &str| Error::Corrupt {
            id: *id,
            reason: format!("pack {}: {reason}", self.seq),
        };
        if offset + RECORD_OVERHEAD > self.data_len {
            return Err(corrupt("index points past the end"));
        }
        // One read covers most records; a larger one needs a second.
        let mut buf = vec![0u8; (self.data_len - offset).min(512) as usize];
        self.data
            .read_exact_at(&mut buf, offset)
            .map_err(|e| corrupt(&format!("read failed: {e}")))?;
        let len = u32::from_be_bytes(buf[1..5].try_into().expect("4 bytes")) as u64;
        let total = RECORD_OVERHEAD + len;
        if offset + total > self.data_len {
            return Err(corrupt("record runs past the end"));
        }
        if (buf.len() as u64) < total {
            let have = buf.len();
            buf.resize(total as usize, 0);
            self.data
                .read_exact_at(&mut buf[have..], offset + have as u64)
                .map_err(|e| corrupt(&format!("read failed: {e}")))?;
        }
        let end = 5 + len as usize;
        let crc = u32::from_be_bytes(buf[end..end + 4].try_into().expect("4 bytes"));
        if crc32fast::hash(&buf[..end]) != crc {
            return Err(corrupt("record checksum mismatch"));
        }
        if buf[0] != RecordKind::Object.tag() {
            return Err(corrupt("index points at a record that is not an object"));
        }
        self.layout.decode(&buf[5..end], id)
    }
}

/// Hashes an [`ObjectId`] by its first eight bytes: ids are SHA-256 digests, uniform already, so
/// the map of a pack's ids needs no keyed hash (and SipHash was most of the cost of filling it).
#[derive(Clone, Copy, Default)]
struct IdHasher;

impl std::hash::BuildHasher for IdHasher {
    type Hasher = FirstBytes;

    fn build_hasher(&self) -> FirstBytes {
        FirstBytes(0)
    }
}

/// The [`std::hash::Hasher`] of [`IdHasher`].
struct FirstBytes(u64);

impl std::hash::Hasher for FirstBytes {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `ObjectId` hashes its 32 bytes in one call (a length prefix may come first).
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
}

/// A pack read by scanning its records into a map: the active pack (the newest, appended to), or
/// an older pack whose index is missing or unusable (read-only until `repair` indexes it).
struct Active {
    storage: Arc<dyn Storage>,
    seq: u64,
    /// Version 1 for every active pack; an unindexed older pack may be a gc's version 2.
    layout: Layout,
    path: PathBuf,
    file: Box<dyn StorageFile>,
    /// The file's identity when opened: a pack removed (by gc) or replaced is noticed.
    ino: (u64, u64),
    map: HashMap<ObjectId, u64, IdHasher>,
    /// Offset just past the last valid record seen.
    scanned: u64,
    /// Offset below which the pack holds acknowledged data (nothing there is a torn write).
    floor: u64,
    /// Damaged batches seen (corruption that valid data follows, or acknowledged data).
    damaged: Vec<(u64, u64)>,
    /// The file does not start with the pack magic (its records are still read).
    bad_header: bool,
    /// True for the active pack, whose key log ([`keys`]) this handle reads at open and extends.
    keyed: bool,
    /// The pack offset the key log covers up to, as far as this handle knows.
    keys_end: u64,
    /// The length of the key log's valid part, as far as this handle knows (0: none yet).
    keys_len: u64,
    /// Entries of object records at or past `keys_end`, for the next chunk of the key log.
    pending: Vec<(ObjectId, u64)>,
    /// Bytes of the pack this handle has read by scanning (what an open costs; see
    /// [`PackStore::scan_work`]).
    scan_work: u64,
    /// The pack opened for writing, kept for the next append (opened by the first one).
    writer: Option<Box<dyn StorageFile>>,
    /// Where the open's scan started because the key log covered the pack before it: that part
    /// was not checked for damage at open ([`Active::verify_covered`] does, for fsck and gc).
    unverified_below: u64,
}

impl Active {
    /// Opens pack `seq` for reading by scanning. `keyed`: it is the active pack, whose key log
    /// is read first so that only the part of the pack it does not cover is scanned.
    fn open(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        seq: u64,
        floor: u64,
        keyed: bool,
    ) -> Result<Active, Error> {
        let path = dir.join(pack_name(seq));
        let file = storage
            .open(&path, OpenOptions::READ)
            .map_err(Error::io("open", &path))?;
        let ino = file.identity().map_err(Error::io("stat", &path))?;
        let len = file.len().map_err(Error::io("stat", &path))?;
        let (layout, bad_header) = Layout::read(&*file, len);
        let start = layout.start();
        let mut active = Active {
            storage: storage.clone(),
            seq,
            layout,
            path,
            file,
            ino,
            map: HashMap::default(),
            scanned: start,
            floor,
            damaged: Vec::new(),
            bad_header,
            keyed,
            keys_end: start,
            keys_len: 0,
            pending: Vec::new(),
            scan_work: 0,
            writer: None,
            unverified_below: 0,
        };
        if keyed {
            active.load_keys(dir)?;
        }
        active.catch_up()?;
        Ok(active)
    }

    /// Reads the key log: its entries go into the map and the scan starts where it ends.
    fn load_keys(&mut self, dir: &Path) -> Result<(), Error> {
        let path = dir.join(keys::keys_name(self.seq));
        let Ok(bytes) = self.storage.read(&path) else {
            return Ok(());
        };
        if bytes.len() < keys::MAGIC.len() || &bytes[..keys::MAGIC.len()] != keys::MAGIC {
            return Ok(());
        }
        let pack_len = self.file.len().map_err(Error::io("stat", &self.path))?;
        let parsed = keys::parse(&bytes[keys::MAGIC.len()..], self.scanned, pack_len);
        self.map.reserve(parsed.entries.len());
        for (id, offset) in parsed.entries {
            self.map.entry(id).or_insert(offset);
        }
        self.scanned = parsed.end;
        self.unverified_below = parsed.end;
        self.keys_end = parsed.end;
        self.keys_len = (keys::MAGIC.len() + parsed.consumed) as u64;
        Ok(())
    }

    /// Scans the part of the pack the key log let the open skip, for damage (fsck and gc must
    /// see every damaged record, as a full scan at open would have shown them). Everything
    /// there is durable, so any invalid record is damage.
    fn verify_covered(&mut self) -> Result<(), Error> {
        let below = std::mem::take(&mut self.unverified_below);
        let start = self.layout.start();
        if below <= start {
            return Ok(());
        }
        let end = scan_records(&*self.file, start, below, |_, _, _| Ok(()))?;
        self.damaged
            .extend(end.damaged.into_iter().filter(|&(from, _)| from < below));
        if end.valid_end < below {
            self.damaged.push((end.valid_end, below));
        }
        Ok(())
    }

    /// Extends the key log to cover the pack up to `scanned`, which the caller has just made
    /// durable (fdatasync) and holds the write lock for. Chunks another process wrote meanwhile
    /// are taken in first; a torn chunk a killed writer left is cut off; a log that is not what
    /// this handle knew is rewritten from the map. Best effort: the log is derived data.
    fn extend_keys(&mut self, dir: &Path) -> Result<(), Error> {
        let path = dir.join(keys::keys_name(self.seq));
        let file = self
            .storage
            .open(&path, OpenOptions::WRITE_CREATE)
            .map_err(Error::io("open", &path))?;
        let len = file.len().map_err(Error::io("stat", &path))?;
        if self.keys_len > 0 && len > self.keys_len {
            let mut newer = vec![0u8; (len - self.keys_len) as usize];
            file.read_exact_at(&mut newer, self.keys_len)
                .map_err(Error::io("read", &path))?;
            let parsed = keys::parse(&newer, self.keys_end, self.scanned);
            self.keys_end = parsed.end;
            self.keys_len += parsed.consumed as u64;
            let end = self.keys_end;
            self.pending.retain(|&(_, offset)| offset >= end);
        } else if len < self.keys_len {
            self.keys_len = 0;
        }
        let mut out = Vec::new();
        if self.keys_len == 0 {
            // Start the log afresh, covering the whole pack from the map.
            out.extend_from_slice(keys::MAGIC);
            let mut all: Vec<(ObjectId, u64)> = self.map.iter().map(|(k, v)| (*k, *v)).collect();
            all.sort_by_key(|e| e.1);
            self.pending = all;
            self.keys_end = self.layout.start();
        }
        if self.scanned > self.keys_end {
            keys::encode_chunk(&mut out, self.keys_end, self.scanned, &self.pending);
        }
        if out.is_empty() {
            return Ok(());
        }
        // Whatever lies past the valid part (a torn chunk) is cut off first.
        file.set_len(self.keys_len)
            .map_err(Error::io("truncate", &path))?;
        file.write_all_at(&out, self.keys_len)
            .map_err(Error::io("write", &path))?;
        self.keys_len += out.len() as u64;
        self.keys_end = self.scanned;
        self.pending.clear();
        Ok(())
    }

    /// True when the file at the pack's path is still the one this handle reads.
    fn still_current(&self) -> bool {
        self.storage
            .metadata(&self.path)
            .is_ok_and(|m| m.identity == self.ino)
    }

    /// Indexes records appended since the last scan (by this or another process).
    fn catch_up(&mut self) -> Result<(), Error> {
        let map = &mut self.map;
        let pending = &mut self.pending;
        let keyed = self.keyed;
        let floor = self.floor;
        let start = self.scanned;
        let layout = &self.layout;
        let end = scan_records(&*self.file, start, floor, |offset, kind, payload| {
            if kind == RecordKind::Object {
                // A record that does not decode has no id to file it under: reads of the
                // object it held find nothing, and fsck reports it missing.
                if let Some(id) = layout.record_id(payload) {
                    map.entry(id).or_insert(offset);
                    if keyed {
                        pending.push((id, offset));
                    }
                }
            }
            Ok(())
        })?;
        self.scan_work += end.valid_end.saturating_sub(start);
        self.scanned = end.valid_end;
        self.damaged.extend(end.damaged);
        Ok(())
    }

    fn record(&self, offset: u64, id: &ObjectId) -> Result<Vec<u8>, Error> {
        let mut head = [0u8; 5];
        self.file
            .read_exact_at(&mut head, offset)
            .map_err(Error::io("read", &self.path))?;
        let len = u32::from_be_bytes(head[1..5].try_into().expect("4 bytes")) as usize;
        if len as u64 > u64::from(MAX_RECORD)
            || offset + RECORD_OVERHEAD + len as u64 > self.scanned
        {
            return Err(Error::Corrupt {
                id: *id,
                reason: format!("pack {}: no whole record at offset {offset}", self.seq),
            });
        }
        let mut rest = vec![0u8; len + 4];
        self.file
            .read_exact_at(&mut rest, offset + 5)
            .map_err(Error::io("read", &self.path))?;
        let (payload, crc) = rest.split_at(len);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&head);
        hasher.update(payload);
        if hasher.finalize() != u32::from_be_bytes(crc.try_into().expect("4 bytes")) {
            return Err(Error::Corrupt {
                id: *id,
                reason: format!("pack {}: record checksum mismatch", self.seq),
            });
        }
        if head[0] != RecordKind::Object.tag() {
            return Err(Error::Corrupt {
                id: *id,
                reason: format!("pack {}: no object record at offset {offset}", self.seq),
            });
        }
        self.layout.decode(payload, id)
    }
}

struct State {
    /// Newest first, so recent objects are found first.
    sealed: Vec<Sealed>,
    /// Older packs without a usable index, read by scanning (newest first).
    unindexed: Vec<Active>,
    active: Option<Active>,
    /// The highest pack number any file in the directory carries (packs, indexes, orphans,
    /// temp files): a new pack always gets a higher one, so a number is never reused.
    highest_seen: u64,
    /// Problems found while opening the packs, for fsck, gc and repair.
    problems: Vec<PackProblem>,
    /// Where acknowledged data ends (the journal's materialized position).
    acknowledged: Position,
}

/// Something wrong with a pack file, found when the packs are opened. None of these stops the
/// store from opening: what can still be read is served.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PackProblem {
    /// Records fail their checksum between these offsets, with valid or acknowledged data after
    /// them: bit rot or a damaged disk, never a crash. What they held is lost from this pack.
    Damaged {
        /// The pack's number.
        pack: u64,
        /// First damaged byte.
        start: u64,
        /// First byte after the damage.
        end: u64,
    },
    /// The pack does not start with the pack magic; its records are still read.
    BadHeader {
        /// The pack's number.
        pack: u64,
    },
    /// A sealed pack is shorter than its index says: the objects past its end are lost.
    Truncated {
        /// The pack's number.
        pack: u64,
        /// Its length.
        len: u64,
        /// The length its index covers.
        covered: u64,
    },
    /// A pack older than the active one has no index (deleted?): it is read by scanning.
    MissingIndex {
        /// The pack's number.
        pack: u64,
    },
    /// A pack's index is unusable; the pack is read by scanning.
    BadIndex {
        /// The pack's number.
        pack: u64,
        /// Why the index was refused.
        reason: String,
    },
}

impl PackProblem {
    /// True when data is lost (or may be): gc must not drop the only copy of what is left.
    pub fn loses_data(&self) -> bool {
        matches!(
            self,
            PackProblem::Damaged { .. } | PackProblem::Truncated { .. }
        )
    }

    /// True when `repair` can fix it from the pack itself.
    pub fn repairable(&self) -> bool {
        matches!(
            self,
            PackProblem::MissingIndex { .. }
                | PackProblem::BadIndex { .. }
                | PackProblem::BadHeader { .. }
        )
    }
}

impl std::fmt::Display for PackProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PackProblem::Damaged { pack, start, end } => write!(
                f,
                "{} is damaged between bytes {start} and {end} (records there fail their checksum)",
                pack_name(*pack)
            ),
            PackProblem::BadHeader { pack } => write!(
                f,
                "{} does not start with the pack header (its records are still readable; 'retro repair' rewrites the header)",
                pack_name(*pack)
            ),
            PackProblem::Truncated { pack, len, covered } => write!(
                f,
                "{} is {len} bytes, shorter than the {covered} its index covers: the objects past its end are lost",
                pack_name(*pack)
            ),
            PackProblem::MissingIndex { pack } => write!(
                f,
                "{} has no index (read by scanning; 'retro repair' rebuilds it)",
                pack_name(*pack)
            ),
            PackProblem::BadIndex { pack, reason } => write!(
                f,
                "the index of {} is unusable: {reason} (the pack is read by scanning; 'retro repair' rebuilds it)",
                pack_name(*pack)
            ),
        }
    }
}

/// What [`PackStore::repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackRepair {
    /// What was fixed, one sentence each.
    pub fixed: Vec<String>,
    /// What could not be fixed, one sentence each.
    pub unfixable: Vec<String>,
}

/// What the directory holds, by pack number.
#[derive(Debug, Default)]
struct Listing {
    /// (number, has an index), ascending, for every `pack-N.pack`.
    packs: Vec<(u64, bool)>,
    /// Indexes with no pack (left by a gc killed between its renames).
    orphan_indexes: Vec<u64>,
    /// Temp files (left by killed writers).
    temps: Vec<PathBuf>,
    /// gc's markers `pack-N.replaces`: the packs a repack into N replaces (see `repack`).
    replaces: Vec<u64>,
    /// Key logs ([`keys`]) whose pack is sealed or gone: leftovers.
    stale_keys: Vec<u64>,
    /// The highest number in any name.
    highest: u64,
}

/// The pack number inside a temp file's name (`.tmp-<pid>-<n>-pack-<seq>.pack`).
fn temp_seq(name: &str) -> Option<u64> {
    let rest = name.strip_prefix(".tmp-")?;
    let at = rest.find("pack-")?;
    let digits: String = rest[at + 5..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// A directory of pack files; see the module documentation for the format.
pub struct PackStore {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    state: RwLock<State>,
    /// `packs/write.lock`: serializes appends, across threads and processes.
    write_lock: LockFile,
    lock_timeout: std::time::Duration,
    loose: Option<LooseStore>,
    roll_size: u64,
    /// Bytes of the active pack its key log may leave uncovered (see [`keys::CHUNK_EVERY`]).
    key_log_every: u64,
}

impl PackStore {
    /// Opens (creating if needed) the pack directory `dir`. Objects missing from packs are looked
    /// up in `loose` when given (a depot's `objects/` directory).
    pub fn open(dir: impl Into<PathBuf>, loose: Option<LooseStore>) -> Result<PackStore, Error> {
        Self::open_on(Arc::new(FsStorage), dir, loose)
    }

    /// [`PackStore::open`] on any storage (a simulated one, in power-loss tests).
    pub fn open_on(
        storage: Arc<dyn Storage>,
        dir: impl Into<PathBuf>,
        loose: Option<LooseStore>,
    ) -> Result<PackStore, Error> {
        let dir = dir.into();
        fsutil::create_dir_durable(&*storage, &dir).map_err(Error::io("create directory", &dir))?;
        let write_lock = LockFile::for_storage(&*storage, dir.join("write.lock"));
        let store = PackStore {
            storage,
            dir,
            state: RwLock::new(State {
                sealed: Vec::new(),
                unindexed: Vec::new(),
                active: None,
                highest_seen: 0,
                problems: Vec::new(),
                acknowledged: Position { pack: 0, offset: 0 },
            }),
            write_lock,
            lock_timeout: crate::refdb::DEFAULT_LOCK_TIMEOUT,
            loose,
            roll_size: DEFAULT_ROLL_SIZE,
            key_log_every: keys::CHUNK_EVERY,
        };
        store.refresh()?;
        if store.remove_leftovers() {
            store.refresh()?;
        }
        Ok(store)
    }

    /// Sets how long a writer waits for `packs/write.lock`.
    pub fn with_lock_timeout(mut self, timeout: std::time::Duration) -> PackStore {
        self.lock_timeout = timeout;
        self
    }

    /// Removes what killed writers left behind: temp files and indexes whose pack never made it
    /// into place (a gc killed between its renames). Only when no writer holds the write lock
    /// (a running gc or seal owns its temp files); otherwise the next open does it.
    fn remove_leftovers(&self) -> bool {
        let Ok(_lock) = self.write_lock.acquire(std::time::Duration::ZERO) else {
            return false;
        };
        let pending = self.list().is_ok_and(|l| {
            !l.orphan_indexes.is_empty()
                || !l.temps.is_empty()
                || !l.replaces.is_empty()
                || !l.stale_keys.is_empty()
        });
        if pending {
            self.remove_leftovers_locked();
        }
        pending
    }

    /// Tells the store where acknowledged data ends (the journal's materialized position):
    /// below it, a record that fails its checksum is damage, never a torn write, and no writer
    /// truncates it.
    pub fn set_acknowledged(&self, position: Position) -> Result<(), Error> {
        let mut state = self.state.write().expect("pack state lock poisoned");
        if state.acknowledged >= position {
            return Ok(());
        }
        state.acknowledged = position;
        if let Some(active) = state.active.as_mut() {
            if active.seq == position.pack && active.floor < position.offset {
                active.floor = position.offset;
                if active.scanned < position.offset {
                    active.catch_up()?;
                }
            }
        }
        Self::collect_problems(&mut state);
        Ok(())
    }

    /// Bytes of pack files this handle has read by scanning, since it was opened: what reading
    /// the active pack's key log saves (a test proves an open scans only the pack's uncovered
    /// tail, never a whole pack).
    pub fn scan_work(&self) -> u64 {
        let state = self.state.read().expect("pack state lock poisoned");
        state
            .active
            .iter()
            .chain(&state.unindexed)
            .map(|a| a.scan_work)
            .sum()
    }

    /// Checks the part of the active pack an open skipped thanks to its key log, so that
    /// [`PackStore::problems`] names every damaged record, as a full scan would. fsck and gc
    /// call it (through `check_indexes` and `repack`).
    pub fn verify_covered(&self) -> Result<(), Error> {
        let mut state = self.state.write().expect("pack state lock poisoned");
        if let Some(active) = state.active.as_mut() {
            active.verify_covered()?;
        }
        Self::collect_problems(&mut state);
        Ok(())
    }

    /// Problems found in the packs as last opened or refreshed.
    pub fn problems(&self) -> Vec<PackProblem> {
        self.state
            .read()
            .expect("pack state lock poisoned")
            .problems
            .clone()
    }

    fn collect_problems(state: &mut State) {
        let mut problems: Vec<PackProblem> = state
            .problems
            .iter()
            .filter(|p| matches!(p, PackProblem::BadIndex { .. }))
            .cloned()
            .collect();
        for sealed in &state.sealed {
            if sealed.truncated() {
                problems.push(PackProblem::Truncated {
                    pack: sealed.seq,
                    len: sealed.data_len,
                    covered: sealed.covered,
                });
            }
        }
        let scanned = state.unindexed.iter().chain(state.active.as_ref());
        for pack in scanned {
            if pack.bad_header {
                problems.push(PackProblem::BadHeader { pack: pack.seq });
            }
            for &(start, end) in &pack.damaged {
                problems.push(PackProblem::Damaged {
                    pack: pack.seq,
                    start,
                    end,
                });
            }
        }
        for pack in &state.unindexed {
            if !problems
                .iter()
                .any(|p| matches!(p, PackProblem::BadIndex { pack: n, .. } if *n == pack.seq))
            {
                problems.push(PackProblem::MissingIndex { pack: pack.seq });
            }
        }
        problems.sort_by_key(|p| match p {
            PackProblem::Damaged { pack, .. }
            | PackProblem::BadHeader { pack }
            | PackProblem::Truncated { pack, .. }
            | PackProblem::MissingIndex { pack }
            | PackProblem::BadIndex { pack, .. } => *pack,
        });
        problems.dedup();
        state.problems = problems;
    }

    /// Sets how many bytes of the active pack its key log may leave uncovered before a synced
    /// write extends it (tests use small sizes).
    pub fn with_key_log_every(mut self, bytes: u64) -> PackStore {
        self.key_log_every = bytes.max(1);
        self
    }

    /// Sets the size past which the active pack is sealed (tests use small sizes).
    pub fn with_roll_size(mut self, bytes: u64) -> PackStore {
        self.roll_size = bytes.max(64);
        self
    }

    /// The storage the packs are kept on.
    pub(crate) fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The directory holding the packs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The loose store consulted for objects not in packs.
    pub fn loose(&self) -> Option<&LooseStore> {
        self.loose.as_ref()
    }

    fn list(&self) -> Result<Listing, Error> {
        let mut listing = Listing::default();
        let mut indexes = Vec::new();
        let mut key_logs = Vec::new();
        let entries = self
            .storage
            .read_dir(&self.dir)
            .map_err(Error::io("list", &self.dir))?;
        for entry in entries {
            let name = entry.name;
            if let Some(seq) = parse_pack_name(&name) {
                listing.packs.push((seq, false));
                listing.highest = listing.highest.max(seq);
            } else if let Some(seq) = name
                .strip_suffix(".idx")
                .and_then(|n| parse_pack_name(&format!("{n}.pack")))
            {
                indexes.push(seq);
                listing.highest = listing.highest.max(seq);
            } else if let Some(seq) = name
                .strip_suffix(".replaces")
                .and_then(|n| parse_pack_name(&format!("{n}.pack")))
            {
                listing.replaces.push(seq);
                listing.highest = listing.highest.max(seq);
            } else if let Some(seq) = name
                .strip_suffix(".keys")
                .and_then(|n| parse_pack_name(&format!("{n}.pack")))
            {
                key_logs.push(seq);
            } else if name.starts_with(".tmp-") {
                if let Some(seq) = temp_seq(&name) {
                    listing.highest = listing.highest.max(seq);
                }
                listing.temps.push(entry.path);
            }
        }
        listing.packs.sort();
        for seq in indexes {
            match listing.packs.binary_search_by_key(&seq, |p| p.0) {
                Ok(at) => listing.packs[at].1 = true,
                Err(_) => listing.orphan_indexes.push(seq),
            }
        }
        for seq in key_logs {
            match listing.packs.binary_search_by_key(&seq, |p| p.0) {
                Ok(at) if !listing.packs[at].1 => {}
                _ => listing.stale_keys.push(seq),
            }
        }
        Ok(listing)
    }

    /// Re-reads the directory: packs sealed, added or removed by other processes, and records
    /// appended to the active pack since the last look. A pack that cannot be opened as sealed
    /// (its index missing, unusable or not its own) is read by scanning and reported in
    /// [`PackStore::problems`]: a damaged file never stops the store from opening.
    pub fn refresh(&self) -> Result<(), Error> {
        let listing = self.list()?;
        let mut state = self.state.write().expect("pack state lock poisoned");
        let acknowledged = state.acknowledged;
        let mut sealed = Vec::new();
        let mut unindexed = Vec::new();
        let mut bad_indexes = Vec::new();
        let mut old_sealed = std::mem::take(&mut state.sealed);
        let mut old_unindexed = std::mem::take(&mut state.unindexed);
        let newest_active = listing.packs.last().filter(|p| !p.1).map(|p| p.0);
        for &(seq, has_index) in &listing.packs {
            if Some(seq) == newest_active {
                continue;
            }
            if has_index {
                if let Some(pos) = old_sealed.iter().position(|s| s.seq == seq) {
                    sealed.push(old_sealed.swap_remove(pos));
                    continue;
                }
                match Sealed::open(&*self.storage, &self.dir, seq) {
                    Ok(s) => {
                        sealed.push(s);
                        continue;
                    }
                    Err(e) => bad_indexes.push(PackProblem::BadIndex {
                        pack: seq,
                        reason: match e {
                            Error::CorruptFile { reason, .. } => reason,
                            other => other.to_string(),
                        },
                    }),
                }
            }
            // An older pack without a usable index: read it by scanning. Everything in it was
            // written before a newer pack existed, so all of it counts as acknowledged.
            match old_unindexed.iter().position(|a| a.seq == seq) {
                Some(pos) => {
                    let mut pack = old_unindexed.swap_remove(pos);
                    pack.catch_up()?;
                    unindexed.push(pack);
                }
                None => {
                    let len = self
                        .storage
                        .metadata(&self.dir.join(pack_name(seq)))
                        .map_err(Error::io("stat", self.dir.join(pack_name(seq))))?
                        .len;
                    unindexed.push(Active::open(&self.storage, &self.dir, seq, len, false)?);
                }
            }
        }
        sealed.sort_by_key(|s| std::cmp::Reverse(s.seq));
        unindexed.sort_by_key(|a| std::cmp::Reverse(a.seq));
        state.sealed = sealed;
        state.unindexed = unindexed;
        state.highest_seen = state.highest_seen.max(listing.highest);
        let floor = |seq: u64| {
            if acknowledged.pack == seq {
                acknowledged.offset
            } else {
                0
            }
        };
        match (newest_active, state.active.as_mut()) {
            (Some(seq), Some(active)) if active.seq == seq && active.still_current() => {
                active.catch_up()?
            }
            (Some(seq), _) => {
                state.active = Some(Active::open(
                    &self.storage,
                    &self.dir,
                    seq,
                    floor(seq),
                    true,
                )?)
            }
            (None, _) => state.active = None,
        }
        state.problems = bad_indexes;
        Self::collect_problems(&mut state);
        Ok(())
    }

    /// Catches up cheaply when only appends happened since the last look: the active pack is
    /// still the file at its path, unsealed, and no newer pack exists (three `stat`s, then a
    /// scan of the new tail). Anything else (a seal, a gc) falls back to a full
    /// [`PackStore::refresh`].
    pub fn refresh_fast(&self) -> Result<(), Error> {
        {
            let mut state = self.state.write().expect("pack state lock poisoned");
            if let Some(active) = state.active.as_mut() {
                let sealed = self.storage.exists(&self.dir.join(idx_name(active.seq)));
                let newer = self
                    .storage
                    .exists(&self.dir.join(pack_name(active.seq + 1)));
                if !sealed && !newer && active.still_current() {
                    return active.catch_up();
                }
            }
        }
        self.refresh()
    }

    fn lookup(&self, id: &ObjectId) -> Result<Option<Vec<u8>>, Error> {
        let state = self.state.read().expect("pack state lock poisoned");
        if let Some(active) = &state.active {
            if let Some(&offset) = active.map.get(id) {
                return active.record(offset, id).map(Some);
            }
        }
        for sealed in &state.sealed {
            if let Some(found) = sealed.get(id) {
                return found.map(Some);
            }
        }
        for pack in &state.unindexed {
            if let Some(&offset) = pack.map.get(id) {
                return pack.record(offset, id).map(Some);
            }
        }
        Ok(None)
    }

    /// Whether the packs as last refreshed hold `id` (no directory re-read: callers holding the
    /// depot lock have just refreshed).
    pub fn has_in_packs(&self, id: &ObjectId) -> bool {
        self.in_packs(id)
    }

    fn in_packs(&self, id: &ObjectId) -> bool {
        let state = self.state.read().expect("pack state lock poisoned");
        state
            .active
            .as_ref()
            .is_some_and(|a| a.map.contains_key(id))
            || state.sealed.iter().any(|s| s.holds(id))
            || state.unindexed.iter().any(|a| a.map.contains_key(id))
    }

    fn take_write_lock(&self) -> Result<DepotLock<'_>, Error> {
        self.write_lock
            .acquire(self.lock_timeout)
            .map_err(Error::Lock)
    }

    /// Appends records to the active pack in one write, fdatasyncs when `sync`, and returns the
    /// positions of the records. A torn tail left by a crashed writer is truncated first. The
    /// caller may hold the depot lock; this takes the pack write lock inside it.
    pub(crate) fn append(
        &self,
        records: &[(RecordKind, Vec<u8>)],
        sync: bool,
    ) -> Result<Vec<Position>, Error> {
        self.append_with_end(records, sync)
            .map(|(positions, _)| positions)
    }

    /// [`PackStore::append`], also returning where the newest pack ends just after it (what
    /// [`PackStore::end`] would say, without looking at the directory again).
    pub(crate) fn append_with_end(
        &self,
        records: &[(RecordKind, Vec<u8>)],
        sync: bool,
    ) -> Result<(Vec<Position>, Position), Error> {
        let _lock = self.take_write_lock()?;
        self.refresh_fast()?;
        let mut state = self.state.write().expect("pack state lock poisoned");
        if state.active.is_none() {
            let next = self.next_seq(&state);
            state.highest_seen = next;
            drop(state);
            self.create_pack(next)?;
            drop(_lock);
            return self.append_with_end(records, sync);
        }
        let active = state.active.as_mut().expect("checked above");
        // `refresh_fast` has just checked that the file at the path is still this pack.
        if active.writer.is_none() {
            active.writer = Some(
                self.storage
                    .open(&active.path, OpenOptions::WRITE)
                    .map_err(Error::io("open", &active.path))?,
            );
        }
        let writer = active.writer.as_ref().expect("opened above");
        let len = writer.len().map_err(Error::io("stat", &active.path))?;
        if len > active.scanned {
            // A crashed writer left a torn tail: nothing in it was acknowledged.
            writer
                .set_len(active.scanned)
                .map_err(Error::io("truncate", &active.path))?;
        }
        let inner_len: u64 = records
            .iter()
            .map(|(_, p)| RECORD_OVERHEAD + p.len() as u64)
            .sum();
        let mut buf = Vec::with_capacity(inner_len as usize + 17);
        frame_raw(&mut buf, BATCH_TAG, &[&inner_len.to_be_bytes()]);
        let mut positions = Vec::with_capacity(records.len());
        for (kind, payload) in records {
            positions.push(Position {
                pack: active.seq,
                offset: active.scanned + buf.len() as u64,
            });
            frame_record(&mut buf, *kind, &[payload]);
        }
        writer
            .write_all_at(&buf, active.scanned)
            .map_err(Error::io("append to", &active.path))?;
        if sync {
            writer
                .sync_data()
                .map_err(Error::io("fsync", &active.path))?;
        }
        for ((kind, payload), pos) in records.iter().zip(&positions) {
            if *kind == RecordKind::Object {
                let id = ObjectId::from_slice(&payload[..32]).expect("object payload has an id");
                active.map.entry(id).or_insert(pos.offset);
                active.pending.push((id, pos.offset));
            }
        }
        active.scanned += buf.len() as u64;
        if sync && active.scanned - active.keys_end >= self.key_log_every {
            // Derived data: a failure here costs the next open a longer scan, nothing else.
            let _ = active.extend_keys(&self.dir);
        }
        if active.scanned >= self.roll_size {
            let seq = active.seq;
            self.seal_locked(&mut state, seq)?;
        }
        let end = state
            .active
            .as_ref()
            .map_or(Position { pack: 0, offset: 0 }, |a| Position {
                pack: a.seq,
                offset: a.scanned,
            });
        Ok((positions, end))
    }

    /// The number for a new pack: above every number any file in the directory has carried
    /// (an orphan index or a temp file included), so a new pack is never paired with a stale
    /// index.
    fn next_seq(&self, state: &State) -> u64 {
        let top_sealed = state.sealed.iter().map(|s| s.seq).max().unwrap_or(0);
        let top_active = state.active.as_ref().map(|a| a.seq).unwrap_or(0);
        let top_unindexed = state.unindexed.iter().map(|a| a.seq).max().unwrap_or(0);
        top_sealed
            .max(top_active)
            .max(top_unindexed)
            .max(state.highest_seen)
            + 1
    }

    fn create_pack(&self, seq: u64) -> Result<(), Error> {
        let path = self.dir.join(pack_name(seq));
        fsutil::write_atomic(&*self.storage, &path, PACK_MAGIC).map_err(Error::io("create", &path))
    }

    /// Writes the active pack's index durably, then starts the next pack. Called with the write
    /// lock held.
    fn seal_locked(&self, state: &mut State, seq: u64) -> Result<(), Error> {
        let active = state.active.take().expect("sealing needs an active pack");
        let pack = self
            .storage
            .open(&active.path, OpenOptions::WRITE)
            .map_err(Error::io("open", &active.path))?;
        pack.sync_data().map_err(Error::io("fsync", &active.path))?;
        let mut entries: Vec<([u8; 32], u64)> = active
            .map
            .iter()
            .map(|(k, v)| (*k.as_bytes(), *v))
            .collect();
        entries.sort();
        write_index(
            &*self.storage,
            &self.dir.join(idx_name(seq)),
            active.scanned,
            &entries,
            true,
        )?;
        // Re-read the directory's numbers: a killed gc may have left a higher one behind.
        if let Ok(listing) = self.list() {
            state.highest_seen = state.highest_seen.max(listing.highest);
        }
        state.highest_seen = state.highest_seen.max(seq);
        let next = self.next_seq(state);
        self.create_pack(next)?;
        state.highest_seen = next;
        state
            .sealed
            .insert(0, Sealed::open(&*self.storage, &self.dir, seq)?);
        // The index covers the pack now: its key log has served its purpose.
        let _ = self
            .storage
            .remove_file(&self.dir.join(keys::keys_name(seq)));
        state.active = Some(Active::open(&self.storage, &self.dir, next, 0, true)?);
        Self::collect_problems(state);
        Ok(())
    }

    /// Seals the active pack now (gc does before repacking).
    pub fn seal(&self) -> Result<(), Error> {
        let _lock = self.take_write_lock()?;
        self.refresh()?;
        let mut state = self.state.write().expect("pack state lock poisoned");
        match state.active.as_ref() {
            Some(active) if active.scanned > PACK_MAGIC.len() as u64 => {
                let seq = active.seq;
                self.seal_locked(&mut state, seq)
            }
            _ => Ok(()),
        }
    }

    /// Scans journal records from `from` (a position in some pack) to the end of the newest pack,
    /// calling `f` for each with the position just after it. Returns the end position.
    pub(crate) fn scan_journal(
        &self,
        from: Position,
        mut f: impl FnMut(Position, &[u8]) -> Result<(), Error>,
    ) -> Result<Position, Error> {
        let listing = self.list()?;
        let acknowledged = self
            .state
            .read()
            .expect("pack state lock poisoned")
            .acknowledged;
        let newest = listing.packs.last().map(|p| p.0);
        let mut end = from;
        for (seq, _) in listing
            .packs
            .into_iter()
            .filter(|(seq, _)| *seq >= from.pack)
        {
            let path = self.dir.join(pack_name(seq));
            let file = self
                .storage
                .open(&path, OpenOptions::READ)
                .map_err(Error::io("open", &path))?;
            let start = if seq == from.pack {
                from.offset.max(8)
            } else {
                8
            };
            // Older packs were complete before a newer one began; in the newest, only what lies
            // past the acknowledged position can be a torn write.
            let floor = if Some(seq) != newest {
                file.len().map_err(Error::io("stat", &path))?
            } else if acknowledged.pack == seq {
                acknowledged.offset
            } else {
                0
            };
            let mut next = start;
            let last = scan_records(&*file, start, floor, |offset, kind, payload| {
                next = offset + RECORD_OVERHEAD + payload.len() as u64;
                if kind == RecordKind::Journal {
                    f(
                        Position {
                            pack: seq,
                            offset: next,
                        },
                        payload,
                    )?;
                }
                Ok(())
            })?
            .valid_end;
            end = Position {
                pack: seq,
                offset: last,
            };
        }
        Ok(end)
    }

    /// The position just past the last valid record of the newest pack.
    pub fn end(&self) -> Result<Position, Error> {
        self.refresh_fast()?;
        let state = self.state.read().expect("pack state lock poisoned");
        Ok(match (&state.active, state.sealed.first()) {
            (Some(active), _) => Position {
                pack: active.seq,
                offset: active.scanned,
            },
            (None, Some(sealed)) => Position {
                pack: sealed.seq,
                offset: sealed.data_len,
            },
            (None, None) => Position { pack: 0, offset: 0 },
        })
    }

    /// Counts of packs, objects and bytes.
    pub fn stats(&self) -> Result<PackStats, Error> {
        self.refresh()?;
        let state = self.state.read().expect("pack state lock poisoned");
        let mut stats = PackStats::default();
        for sealed in &state.sealed {
            stats.packs += 1;
            stats.objects += sealed.count as u64;
            stats.bytes += sealed.data_len + sealed.idx.len() as u64;
        }
        for pack in state.unindexed.iter().chain(state.active.as_ref()) {
            stats.packs += 1;
            stats.objects += pack.map.len() as u64;
            stats.bytes += pack.scanned;
        }
        Ok(stats)
    }

    /// Writes `objects` (already deduplicated by the caller) as one new sealed pack, compressed,
    /// and removes every older pack and the given loose objects. Used by gc with the depot lock
    /// held; readers that still map an old pack keep reading it until they refresh.
    pub fn repack<I>(&self, objects: I, drop_loose: &[ObjectId]) -> Result<PackStats, Error>
    where
        I: IntoIterator<Item = Result<EncodedObject, Error>>,
    {
        let _lock = self.take_write_lock()?;
        self.refresh()?;
        self.verify_covered()?;
        // The state lock is not held while `objects` runs: it reads from these very packs.
        let (old, seq) = {
            let mut state = self.state.write().expect("pack state lock poisoned");
            Self::refuse_damaged(&self.dir, &state)?;
            let old: Vec<u64> = state
                .sealed
                .iter()
                .map(|s| s.seq)
                .chain(state.unindexed.iter().map(|a| a.seq))
                .chain(state.active.as_ref().map(|a| a.seq))
                .collect();
            let seq = self.next_seq(&state);
            // Claimed now: nothing else may take this number or the next, even if this gc dies.
            state.highest_seen = seq + 1;
            (old, seq)
        };
        let path = self.dir.join(pack_name(seq));
        let temp = fsutil::temp_path_for(&path);
        let written = self.write_repacked(&temp, objects);
        let (offset, mut entries) = match written {
            Ok(done) => done,
            Err(e) => {
                // Out of space, or a read failed: leave nothing behind.
                let _ = self.storage.remove_file(&temp);
                return Err(e);
            }
        };
        // By prefix, then offset: `objects` come distinct (and, from gc, sorted already).
        entries.sort_unstable();
        let idx = self.dir.join(idx_name(seq));
        if let Err(e) = write_index(&*self.storage, &idx, offset, &entries, true) {
            let _ = self.storage.remove_file(&temp);
            return Err(e);
        }
        // Before the new pack is in place, record what it replaces (fsynced): a gc killed after
        // the rename has its deletions finished by the next open, so the old active pack never
        // lingers unindexed beside its replacement.
        let marker = self.dir.join(replaces_name(seq));
        let list: String = old.iter().map(|s| format!("{s}\n")).collect();
        if let Err(e) = fsutil::write_atomic(&*self.storage, &marker, list.as_bytes()) {
            let _ = self.storage.remove_file(&temp);
            let _ = self.storage.remove_file(&idx);
            return Err(Error::io("write", &marker)(e));
        }
        // From here a crash leaves at most an orphan index (removed at the next open) or a
        // complete sealed pack beside the old ones: never a new pack paired with a stale index.
        if let Err(e) = self.storage.rename(&temp, &path) {
            let _ = self.storage.remove_file(&marker);
            let _ = self.storage.remove_file(&temp);
            let _ = self.storage.remove_file(&idx);
            return Err(Error::io("rename", &temp)(e));
        }
        // Durable before the next active pack exists: renames in one directory are not ordered
        // unless it is fsynced, and a next pack without this one would make the old active pack
        // an unindexed older one.
        fsutil::fsync_dir(&*self.storage, &self.dir).map_err(Error::io("fsync", &self.dir))?;
        self.create_pack(seq + 1)?;
        // Only now, with the new pack durable, remove what it replaces: each pack before its
        // index (a crash may keep an orphan index, removed at the next open, never an unindexed
        // old pack), and all of them durably before the marker goes (nothing orders removals in
        // one directory unless it is fsynced: the marker must outlive every one it names).
        for old_seq in old {
            let _ = self.storage.remove_file(&self.dir.join(pack_name(old_seq)));
            let _ = self.storage.remove_file(&self.dir.join(idx_name(old_seq)));
            let _ = self
                .storage
                .remove_file(&self.dir.join(keys::keys_name(old_seq)));
        }
        fsutil::fsync_dir(&*self.storage, &self.dir).map_err(Error::io("fsync", &self.dir))?;
        let _ = self.storage.remove_file(&marker);
        if let Some(loose) = &self.loose {
            for id in drop_loose {
                loose.remove(id)?;
            }
        }
        fsutil::fsync_dir(&*self.storage, &self.dir).map_err(Error::io("fsync", &self.dir))?;
        let mut state = self.state.write().expect("pack state lock poisoned");
        state.sealed = vec![Sealed::open(&*self.storage, &self.dir, seq)?];
        state.unindexed = Vec::new();
        state.active = Some(Active::open(&self.storage, &self.dir, seq + 1, 0, true)?);
        state.problems = Vec::new();
        Self::collect_problems(&mut state);
        drop(state);
        self.stats()
    }

    /// Drops the mapped pages of every sealed pack's index from resident memory (a pass that
    /// looked up every object touched them all); later lookups fault back what they need.
    pub fn release_index_pages(&self) {
        let state = self.state.read().expect("pack state lock poisoned");
        for sealed in &state.sealed {
            sealed.idx.release(0..sealed.idx.len());
        }
    }

    /// Damaged records may still be recoverable from their file (by hand, or from a copy of the
    /// depot that predates the damage): gc never deletes the only copy.
    fn refuse_damaged(dir: &Path, state: &State) -> Result<(), Error> {
        match state.problems.iter().find(|p| p.loses_data()) {
            Some(problem) => Err(Error::CorruptFile {
                path: dir.to_path_buf(),
                reason: format!(
                    "{problem}; gc will not delete the damaged pack (run 'retro fsck'; restore what it names from a clone or backup)"
                ),
            }),
            None => Ok(()),
        }
    }

    /// Writes `objects` into a new version 2 pack file at `temp`, fsynced; returns its length
    /// and its index entries. The first objects (up to [`codec::SAMPLE_BYTES`]) are held back
    /// to train the pack's dictionary, written first; every record is then compressed against
    /// it (see [`codec`]).
    fn write_repacked<I>(
        &self,
        temp: &Path,
        objects: I,
    ) -> Result<(u64, Vec<[u8; IDX_ENTRY_V2]>), Error>
    where
        I: IntoIterator<Item = Result<EncodedObject, Error>>,
    {
        let mut objects = objects.into_iter();
        let mut held = Vec::new();
        let mut samples = Vec::new();
        let mut sampled = 0;
        while sampled < codec::SAMPLE_BYTES {
            let Some(object) = objects.next() else { break };
            let object = object?;
            let sample = codec::sample_of(object.bytes());
            sampled += sample.len();
            samples.push(sample);
            held.push(object);
        }
        let dictionary = codec::train(&samples);
        drop(samples);
        let compress_error = |e: String| Error::io("compress for", temp)(io::Error::other(e));
        let mut compressor = codec::Compressor::new(&dictionary).map_err(compress_error)?;
        let file = self
            .storage
            .open(temp, OpenOptions::CREATE_TRUNCATE)
            .map_err(Error::io("create", temp))?;
        let mut out = io::BufWriter::with_capacity(1 << 20, Writer(&*file));
        let mut record = Vec::new();
        record.extend_from_slice(PACK_MAGIC_V2);
        frame_raw(&mut record, DICTIONARY_TAG, &[&dictionary]);
        out.write_all(&record).map_err(Error::io("write", temp))?;
        let mut offset = record.len() as u64;
        let mut entries = Vec::with_capacity(held.len() + objects.size_hint().0);
        let mut data = Vec::new();
        for object in held.into_iter().map(Ok).chain(objects) {
            let object = object?;
            data.clear();
            let codec = compressor
                .compress(object.bytes(), &mut data)
                .map_err(compress_error)?;
            record.clear();
            frame_record(&mut record, RecordKind::Object, &[&[codec], &data]);
            out.write_all(&record).map_err(Error::io("write", temp))?;
            if offset >= 1 << 48 {
                return Err(Error::io("write", temp)(io::Error::other(
                    "a pack offset past 2^48 bytes",
                )));
            }
            let mut entry = [0u8; IDX_ENTRY_V2];
            entry[..SHORT_ID].copy_from_slice(&object.id().as_bytes()[..SHORT_ID]);
            entry[SHORT_ID..].copy_from_slice(&offset.to_be_bytes()[2..]);
            entries.push(entry);
            offset += record.len() as u64;
        }
        out.into_inner()
            .map_err(|e| Error::io("write", temp)(e.into_error()))?;
        file.sync_all().map_err(Error::io("fsync", temp))?;
        Ok((offset, entries))
    }

    /// Rebuilds what the packs themselves can give back: an index for every pack read by
    /// scanning (missing or unusable index), the header of a pack whose magic is damaged. Takes
    /// the write lock. Damage to records cannot be repaired here: it is listed as unfixable.
    pub fn repair(&self) -> Result<PackRepair, Error> {
        let _lock = self.take_write_lock()?;
        self.refresh()?;
        self.verify_covered()?;
        self.remove_leftovers_locked();
        let mut report = PackRepair::default();
        let state = self.state.read().expect("pack state lock poisoned");
        let problems = state.problems.clone();
        for problem in &problems {
            match problem {
                PackProblem::BadHeader { pack } => {
                    let path = self.dir.join(pack_name(*pack));
                    let magic = state
                        .unindexed
                        .iter()
                        .chain(state.active.as_ref())
                        .find(|a| a.seq == *pack)
                        .map_or(PACK_MAGIC, |a| a.layout.magic());
                    let file = self
                        .storage
                        .open(&path, OpenOptions::WRITE)
                        .map_err(Error::io("open", &path))?;
                    file.write_all_at(magic, 0)
                        .map_err(Error::io("write", &path))?;
                    file.sync_data().map_err(Error::io("fsync", &path))?;
                    report
                        .fixed
                        .push(format!("rewrote the header of {}", pack_name(*pack)));
                }
                PackProblem::MissingIndex { pack } | PackProblem::BadIndex { pack, .. } => {
                    let Some(scanned) = state.unindexed.iter().find(|a| a.seq == *pack) else {
                        continue;
                    };
                    let mut entries: Vec<([u8; 32], u64)> = scanned
                        .map
                        .iter()
                        .map(|(k, v)| (*k.as_bytes(), *v))
                        .collect();
                    entries.sort();
                    let idx = self.dir.join(idx_name(*pack));
                    write_index(&*self.storage, &idx, scanned.scanned, &entries, true)?;
                    report.fixed.push(format!(
                        "rebuilt the index of {} ({} objects)",
                        pack_name(*pack),
                        entries.len()
                    ));
                }
                other => report.unfixable.push(other.to_string()),
            }
        }
        drop(state);
        self.refresh()?;
        Ok(report)
    }

    fn remove_leftovers_locked(&self) {
        let Ok(listing) = self.list() else {
            return;
        };
        // A gc that died after putting its pack in place but before deleting what it replaces:
        // finish its deletions (roll forward), durably before its marker goes, as gc does. One
        // that died before: drop its marker.
        let mut rolled_forward = false;
        for &seq in &listing.replaces {
            let marker = self.dir.join(replaces_name(seq));
            let done = listing.packs.iter().any(|&(s, sealed)| s == seq && sealed);
            if done {
                let text = self.storage.read(&marker).unwrap_or_default();
                for old in String::from_utf8_lossy(&text)
                    .lines()
                    .filter_map(|l| l.trim().parse::<u64>().ok())
                    .filter(|&old| old < seq)
                {
                    let _ = self.storage.remove_file(&self.dir.join(pack_name(old)));
                    let _ = self.storage.remove_file(&self.dir.join(idx_name(old)));
                    rolled_forward = true;
                }
            }
        }
        if rolled_forward && fsutil::fsync_dir(&*self.storage, &self.dir).is_err() {
            // The markers stay: the next open finishes again.
            return;
        }
        for &seq in &listing.replaces {
            let _ = self.storage.remove_file(&self.dir.join(replaces_name(seq)));
        }
        for seq in &listing.orphan_indexes {
            let _ = self.storage.remove_file(&self.dir.join(idx_name(*seq)));
        }
        for temp in &listing.temps {
            let _ = self.storage.remove_file(temp);
        }
        for seq in &listing.stale_keys {
            let _ = self
                .storage
                .remove_file(&self.dir.join(keys::keys_name(*seq)));
        }
        let _ = fsutil::fsync_dir(&*self.storage, &self.dir);
    }

    /// Ids of objects in packs modified after `cutoff` (gc's grace period for unreachable
    /// objects: a pack's mtime is the time of its last append).
    pub fn young_object_ids(&self, cutoff: std::time::SystemTime) -> Result<Vec<ObjectId>, Error> {
        self.refresh()?;
        let state = self.state.read().expect("pack state lock poisoned");
        let young = |seq: u64| {
            self.storage
                .metadata(&self.dir.join(pack_name(seq)))
                .map_or(true, |m| m.modified > cutoff)
        };
        let mut out = Vec::new();
        for sealed in state.sealed.iter().filter(|s| young(s.seq)) {
            sealed.for_each_id(&mut |id| {
                out.push(id);
                Ok(())
            })?;
        }
        for pack in state
            .unindexed
            .iter()
            .chain(state.active.as_ref())
            .filter(|a| young(a.seq))
        {
            out.extend(pack.map.keys().copied());
        }
        Ok(out)
    }

    /// Verifies every sealed index's checksum and order; returns the problems found.
    pub fn check_indexes(&self) -> Result<Vec<String>, Error> {
        self.refresh()?;
        self.verify_covered()?;
        let state = self.state.read().expect("pack state lock poisoned");
        let mut problems = Vec::new();
        for sealed in &state.sealed {
            let body = &sealed.idx[..sealed.idx.len() - 4];
            let crc = u32::from_be_bytes(
                sealed.idx[sealed.idx.len() - 4..]
                    .try_into()
                    .expect("4 bytes"),
            );
            if crc32fast::hash(body) != crc {
                problems.push(format!("index of pack {} has a bad checksum", sealed.seq));
            }
            for i in 1..sealed.count {
                // Prefixes (version 2) may repeat; whole ids may not.
                let (before, after) = (sealed.entry(i - 1).0, sealed.entry(i).0);
                if before > after || (!sealed.short && before == after) {
                    problems.push(format!("index of pack {} is not sorted", sealed.seq));
                    break;
                }
            }
        }
        problems.extend(state.problems.iter().map(|p| p.to_string()));
        Ok(problems)
    }
}

/// Writes a pack index durably (temp file, fsync, rename, fsync the directory), streaming the
/// entries so that a large index is never built in memory. `short`: a version 2 index (id
/// prefixes and 48-bit offsets), which every index written now is (the version 1 one is read).
fn write_index<E: IndexEntry>(
    storage: &dyn Storage,
    path: &Path,
    covered: u64,
    entries: &[E],
    short: bool,
) -> Result<(), Error> {
    let temp = fsutil::temp_path_for(path);
    let result = (|| -> std::io::Result<()> {
        let file = storage.open(&temp, OpenOptions::CREATE_TRUNCATE)?;
        let mut out = io::BufWriter::with_capacity(1 << 20, Writer(&*file));
        let mut crc = crc32fast::Hasher::new();
        let mut put = |out: &mut io::BufWriter<Writer>, bytes: &[u8]| -> std::io::Result<()> {
            crc.update(bytes);
            out.write_all(bytes)
        };
        put(&mut out, if short { IDX_MAGIC_V2 } else { IDX_MAGIC })?;
        put(&mut out, &covered.to_be_bytes())?;
        put(&mut out, &(entries.len() as u64).to_be_bytes())?;
        let mut fanout = [0u32; 256];
        for entry in entries {
            fanout[entry.key()[0] as usize] += 1;
        }
        let mut running = 0u32;
        for count in fanout {
            running += count;
            put(&mut out, &running.to_be_bytes())?;
        }
        for entry in entries {
            let (key, offset) = (entry.key(), entry.offset());
            if short {
                if offset >= 1 << 48 {
                    return Err(io::Error::other("a pack offset past 2^48 bytes"));
                }
                put(&mut out, &key[..SHORT_ID])?;
                put(&mut out, &offset.to_be_bytes()[2..])?;
            } else {
                put(&mut out, key)?;
                put(&mut out, &offset.to_be_bytes())?;
            }
        }
        let crc = crc.finalize();
        out.write_all(&crc.to_be_bytes())?;
        out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        storage.rename(&temp, path)?;
        if let Some(dir) = path.parent() {
            fsutil::fsync_dir(storage, dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = storage.remove_file(&temp);
    }
    result.map_err(Error::io("write", path))
}

/// What [`write_index`] writes an entry from: an id (or its prefix) and an offset.
trait IndexEntry {
    fn key(&self) -> &[u8];
    fn offset(&self) -> u64;
}

impl IndexEntry for ([u8; 32], u64) {
    fn key(&self) -> &[u8] {
        &self.0
    }
    fn offset(&self) -> u64 {
        self.1
    }
}

/// A version 2 entry as it is stored, `prefix[10] | offset u48`: 16 bytes an object, so gc's
/// list of a million-object pack's entries stays small.
impl IndexEntry for [u8; IDX_ENTRY_V2] {
    fn key(&self) -> &[u8] {
        &self[..SHORT_ID]
    }
    fn offset(&self) -> u64 {
        let mut offset = [0u8; 8];
        offset[2..].copy_from_slice(&self[SHORT_ID..]);
        u64::from_be_bytes(offset)
    }
}

/// A location hint packs a pack number and an offset in one `u64` (the partition index keeps it
/// in a signed 64-bit column): the offset in the low 40 bits.
const HINT_OFFSET_BITS: u32 = 40;

fn hint_of(position: Position) -> Option<u64> {
    (position.offset < 1 << HINT_OFFSET_BITS && position.pack < 1 << (63 - HINT_OFFSET_BITS))
        .then_some((position.pack << HINT_OFFSET_BITS) | position.offset)
}

impl PackStore {
    /// The record bytes of `id` at hint `at`, when the pack it names is open and the record
    /// there is whole and carries that id; `None` in every other case (the caller looks the id
    /// up instead).
    fn read_at_hint(&self, id: &ObjectId, at: u64) -> Option<Vec<u8>> {
        let pack = at >> HINT_OFFSET_BITS;
        let offset = at & ((1 << HINT_OFFSET_BITS) - 1);
        let state = self.state.read().expect("pack state lock poisoned");
        if let Some(active) = state.active.as_ref().filter(|a| a.seq == pack) {
            return active.record(offset, id).ok();
        }
        if let Some(sealed) = state.sealed.iter().find(|s| s.seq == pack) {
            return sealed.record(offset, id).ok();
        }
        state
            .unindexed
            .iter()
            .find(|a| a.seq == pack)
            .and_then(|a| a.record(offset, id).ok())
    }
}

impl ObjectStore for PackStore {
    fn locate(&self, id: &ObjectId) -> Option<u64> {
        let state = self.state.read().expect("pack state lock poisoned");
        if let Some(active) = &state.active {
            if let Some(&offset) = active.map.get(id) {
                return hint_of(Position {
                    pack: active.seq,
                    offset,
                });
            }
        }
        for sealed in &state.sealed {
            if let Some((_, offset)) = sealed.find(id) {
                return hint_of(Position {
                    pack: sealed.seq,
                    offset,
                });
            }
        }
        None
    }

    fn read_many_hinted(
        &self,
        ids: &[(ObjectId, Option<u64>)],
    ) -> Result<Vec<Option<EncodedObject>>, Error> {
        ids.iter()
            .map(|&(id, at)| {
                match at.and_then(|at| self.read_at_hint(&id, at)) {
                    // Verified like every read; a record that does not hash to its id is
                    // corrupt, whichever way it was found.
                    Some(bytes) => super::verify(&id, bytes).map(Some),
                    None => self.read(&id),
                }
            })
            .collect()
    }

    fn read(&self, id: &ObjectId) -> Result<Option<EncodedObject>, Error> {
        let bytes = match self.lookup(id) {
            Ok(Some(bytes)) => Some(bytes),
            // Missing, or a pack removed by a concurrent gc: look again after a refresh.
            Ok(None) | Err(Error::Io { .. }) => {
                self.refresh_fast()?;
                self.lookup(id)?
            }
            Err(e) => return Err(e),
        };
        match bytes {
            Some(bytes) => super::verify(id, bytes).map(Some),
            None => match &self.loose {
                Some(loose) => loose.read(id),
                None => Ok(None),
            },
        }
    }

    fn contains(&self, id: &ObjectId) -> Result<bool, Error> {
        if self.in_packs(id) {
            return Ok(true);
        }
        self.refresh_fast()?;
        if self.in_packs(id) {
            return Ok(true);
        }
        match &self.loose {
            Some(loose) => loose.contains(id),
            None => Ok(false),
        }
    }

    fn write(&self, objects: &[EncodedObject]) -> Result<(), Error> {
        let mut records = Vec::with_capacity(objects.len());
        for object in objects {
            if self.in_packs(&object.id()) {
                continue;
            }
            records.push((RecordKind::Object, object_payload(object)));
        }
        if records.is_empty() {
            return Ok(());
        }
        self.append(&records, false).map(|_| ())
    }

    fn sync(&self) -> Result<(), Error> {
        let behind = {
            let state = self.state.read().expect("pack state lock poisoned");
            let Some(active) = &state.active else {
                return Ok(());
            };
            let file = self
                .storage
                .open(&active.path, OpenOptions::WRITE)
                .map_err(Error::io("open", &active.path))?;
            file.sync_data().map_err(Error::io("fsync", &active.path))?;
            active.scanned - active.keys_end >= self.key_log_every
        };
        // Everything this handle has seen of the pack is durable now: extend the key log, if no
        // writer holds the lock (else a later sync or append does it; it is derived data).
        if behind {
            if let Ok(_lock) = self.write_lock.acquire(std::time::Duration::ZERO) {
                let mut state = self.state.write().expect("pack state lock poisoned");
                if let Some(active) = state.active.as_mut() {
                    let _ = active.extend_keys(&self.dir);
                }
            }
        }
        Ok(())
    }

    fn for_each_id(&self, f: &mut dyn FnMut(ObjectId) -> Result<(), Error>) -> Result<(), Error> {
        self.refresh()?;
        let state = self.state.read().expect("pack state lock poisoned");
        for sealed in &state.sealed {
            sealed.for_each_id(f)?;
        }
        for pack in state.unindexed.iter().chain(state.active.as_ref()) {
            for id in pack.map.keys() {
                f(*id)?;
            }
        }
        drop(state);
        if let Some(loose) = &self.loose {
            loose.for_each_id(f)?;
        }
        Ok(())
    }

    fn find_prefix(&self, prefix: &Prefix, limit: usize) -> Result<Vec<ObjectId>, Error> {
        self.refresh()?;
        let mut found = Vec::new();
        {
            let state = self.state.read().expect("pack state lock poisoned");
            let lower = prefix.lower_bound();
            for sealed in &state.sealed {
                let (lo, hi) = sealed.range_of(lower.first_byte());
                let (mut start, mut end) = (lo, hi);
                let key_len = if sealed.short { SHORT_ID } else { 32 };
                let lower_key = &lower.as_bytes()[..key_len];
                while start < end {
                    let mid = (start + end) / 2;
                    if sealed.entry(mid).0 < lower_key {
                        start = mid + 1;
                    } else {
                        end = mid;
                    }
                }
                let mut matched = 0;
                for i in start..hi {
                    let (key, offset) = sealed.entry(i);
                    if !sealed.short {
                        let id = ObjectId::from_slice(key).expect("32 bytes");
                        if !prefix.matches(&id) {
                            break;
                        }
                        found.push(id);
                        continue;
                    }
                    // A version 2 entry keeps 20 hex digits: past them, decode to compare.
                    let digits = prefix.as_str().len().min(2 * SHORT_ID);
                    if !hex::encode(key).starts_with(&prefix.as_str()[..digits]) {
                        break;
                    }
                    if matched > limit {
                        break;
                    }
                    if let Some(id) = sealed.id_at(offset).filter(|id| prefix.matches(id)) {
                        found.push(id);
                        matched += 1;
                    }
                }
            }
            for pack in state.unindexed.iter().chain(state.active.as_ref()) {
                found.extend(pack.map.keys().filter(|id| prefix.matches(id)));
            }
        }
        if let Some(loose) = &self.loose {
            found.extend(loose.find_prefix(prefix, limit)?);
        }
        found.sort();
        found.dedup();
        found.truncate(limit);
        Ok(found)
    }

    fn describe(&self) -> String {
        format!("pack store at '{}'", self.dir.display())
    }
}

/// The payload of an uncompressed object record.
pub(crate) fn object_payload(object: &EncodedObject) -> Vec<u8> {
    let mut payload = Vec::with_capacity(33 + object.bytes().len());
    payload.extend_from_slice(object.id().as_bytes());
    payload.push(0);
    payload.extend_from_slice(object.bytes());
    payload
}

// ---------------------------------------------------------------------------------------------
// Erasure (redaction, `crates/depot/src/depot/redact.rs`): an object record overwritten in place.
// ---------------------------------------------------------------------------------------------

/// The codec byte of an object record whose data was erased in place (see
/// [`PackStore::erase_object_records`]); reads of it fail, and the depot consults its redaction
/// list before reading such an object.
pub(crate) const ERASED_CODEC: u8 = codec::ERASED;

impl Sealed {
    /// The offset of `id`'s record, checked against the record (a version 2 index keeps
    /// prefixes: each candidate is decoded and hashed); `None` when the pack does not hold it
    /// or its record no longer decodes (erased already).
    fn verified_offset(&self, id: &ObjectId) -> Option<u64> {
        let (first, offset) = self.find(id)?;
        if !self.short {
            return Some(offset);
        }
        let key = &id.as_bytes()[..SHORT_ID];
        (first..self.count)
            .map(|i| self.entry(i))
            .take_while(|(probe, _)| *probe == key)
            .map(|(_, offset)| offset)
            .find(|&offset| self.id_at(offset) == Some(*id))
    }
}

impl PackStore {
    /// Overwrites every pack record of object `id` in place, at the same length: the tag (and,
    /// in a version 1 pack, the id) stay, the codec becomes [`ERASED_CODEC`], every data byte
    /// becomes zero, and the crc is recomputed, so offsets, pack indexes, key logs and scans stay
    /// valid. Each pack written is `fdatasync`ed before this returns. Returns how many records
    /// were overwritten (0 when no pack holds the object, or every record of it was erased
    /// already): idempotent, so a re-run after a crash finishes the job. Holds the pack write
    /// lock (appends wait).
    pub(crate) fn erase_object_records(&self, id: &ObjectId) -> Result<usize, Error> {
        let _lock = self.take_write_lock()?;
        self.refresh()?;
        let places: Vec<(u64, u64, bool)> = {
            let state = self.state.read().expect("pack state lock poisoned");
            let mut places = Vec::new();
            if let Some(active) = &state.active {
                places.extend(active.map.get(id).map(|&o| (active.seq, o, false)));
            }
            for sealed in &state.sealed {
                let v2 = matches!(sealed.layout, Layout::V2 { .. });
                places.extend(sealed.verified_offset(id).map(|o| (sealed.seq, o, v2)));
            }
            for pack in &state.unindexed {
                let v2 = matches!(pack.layout, Layout::V2 { .. });
                places.extend(pack.map.get(id).map(|&o| (pack.seq, o, v2)));
            }
            places
        };
        let mut erased = 0;
        for (seq, offset, v2) in places {
            let path = self.dir.join(pack_name(seq));
            let options = OpenOptions {
                read: true,
                ..OpenOptions::WRITE
            };
            let file = self
                .storage
                .open(&path, options)
                .map_err(Error::io("open", &path))?;
            let len = file.len().map_err(Error::io("stat", &path))?;
            let Some((tag, payload)) = read_record_at(&*file, offset, len) else {
                return Err(Error::Corrupt {
                    id: *id,
                    reason: format!("pack {seq}: no whole record at offset {offset} to erase"),
                });
            };
            // Version 1 records carry their id; version 2 ones were checked by decoding.
            let id_len = if v2 { 0 } else { 32 };
            if RecordKind::from_tag(tag) != Some(RecordKind::Object)
                || payload.len() < id_len + 1
                || (!v2 && &payload[..32] != id.as_bytes())
            {
                return Err(Error::Corrupt {
                    id: *id,
                    reason: format!("pack {seq}: the record at {offset} is not this object's"),
                });
            }
            if payload[id_len] == ERASED_CODEC && payload[id_len + 1..].iter().all(|&b| b == 0) {
                continue;
            }
            let zeros = vec![0u8; payload.len() - id_len - 1];
            let mut record = Vec::with_capacity(payload.len() + RECORD_OVERHEAD as usize);
            frame_raw(
                &mut record,
                tag,
                &[&payload[..id_len], &[ERASED_CODEC], &zeros],
            );
            file.write_all_at(&record, offset)
                .map_err(Error::io("write", &path))?;
            file.sync_data().map_err(Error::io("fdatasync", &path))?;
            erased += 1;
        }
        Ok(erased)
    }
}

/// Ids taken from one sealed pack's index per refill: enough that the merge rarely refills,
/// few enough that a merge over a hundred packs holds a few MiB.
const SORTED_CHUNK: usize = 4096;

/// Every object id of a [`PackStore`] (its packs and its loose objects), ascending, each once
/// ([`PackStore::sorted_ids`]): a merge of the packs' sorted indexes, each read a slice at a time,
/// so gc walks millions of objects without ever holding their ids. The pack state lock is held
/// only while a slice is read, never while the caller works with an id.
pub struct SortedIds<'a> {
    store: &'a PackStore,
    /// Per source: the ids taken and not yet merged (ascending), and for a sealed pack its
    /// number and the next index entry to read.
    sources: Vec<SortedSource>,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<(ObjectId, usize)>>,
    last: Option<ObjectId>,
}

struct SortedSource {
    pending: std::collections::VecDeque<ObjectId>,
    /// `(pack number, next entry)` of a sealed pack still to read; `None` once all is taken.
    sealed: Option<(u64, usize)>,
}

impl PackStore {
    /// Every object id, ascending, each once (see `SortedIds`). The active and unindexed packs
    /// and the loose objects are listed whole (they are small: the active pack is sealed at
    /// 8 MiB); sealed packs are read from their indexes as the merge goes.
    pub fn sorted_ids(&self) -> Result<SortedIds<'_>, Error> {
        self.refresh()?;
        self.verify_covered()?;
        let mut sources = Vec::new();
        {
            let state = self.state.read().expect("pack state lock poisoned");
            Self::refuse_damaged(&self.dir, &state)?;
            for sealed in &state.sealed {
                sources.push(SortedSource {
                    pending: Default::default(),
                    sealed: Some((sealed.seq, 0)),
                });
            }
            let mut listed: Vec<ObjectId> = state
                .unindexed
                .iter()
                .chain(state.active.as_ref())
                .flat_map(|pack| pack.map.keys().copied())
                .collect();
            listed.sort_unstable();
            sources.push(SortedSource {
                pending: listed.into(),
                sealed: None,
            });
        }
        if let Some(loose) = &self.loose {
            let mut listed = Vec::new();
            loose.for_each_id(&mut |id| {
                listed.push(id);
                Ok(())
            })?;
            listed.sort_unstable();
            sources.push(SortedSource {
                pending: listed.into(),
                sealed: None,
            });
        }
        let mut ids = SortedIds {
            store: self,
            sources,
            heap: Default::default(),
            last: None,
        };
        for i in 0..ids.sources.len() {
            ids.advance(i)?;
        }
        Ok(ids)
    }
}

impl SortedIds<'_> {
    /// Puts source `i`'s next id on the heap, refilling it from its pack's index when empty.
    fn advance(&mut self, i: usize) -> Result<(), Error> {
        if self.sources[i].pending.is_empty() {
            self.refill(i)?;
        }
        if let Some(id) = self.sources[i].pending.pop_front() {
            self.heap.push(std::cmp::Reverse((id, i)));
        }
        Ok(())
    }

    /// Reads the next slice of a sealed pack's index into source `i`. Entries of a version 2
    /// index are sorted by prefix only: a slice always ends where the prefix changes, and is
    /// sorted by whole id once the ids are known.
    fn refill(&mut self, i: usize) -> Result<(), Error> {
        let Some((seq, next)) = self.sources[i].sealed else {
            return Ok(());
        };
        let state = self.store.state.read().expect("pack state lock poisoned");
        let Some(sealed) = state.sealed.iter().find(|s| s.seq == seq) else {
            return Err(Error::CorruptFile {
                path: self.store.dir.join(pack_name(seq)),
                reason: "the pack went away while its ids were listed".to_owned(),
            });
        };
        let mut end = (next + SORTED_CHUNK).min(sealed.count);
        while end < sealed.count && end > next && sealed.entry(end).0 == sealed.entry(end - 1).0 {
            end += 1;
        }
        let mut ids = Vec::with_capacity(end - next);
        for n in next..end {
            let (key, offset) = sealed.entry(n);
            if !sealed.short {
                ids.push(ObjectId::from_slice(key).expect("32 bytes"));
            } else if let Some(id) = sealed.listed_id(offset)? {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let source = &mut self.sources[i];
        source.pending.extend(ids);
        source.sealed = (end < sealed.count).then_some((seq, end));
        Ok(())
    }
}

impl Iterator for SortedIds<'_> {
    type Item = Result<ObjectId, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        while let Some(std::cmp::Reverse((id, i))) = self.heap.pop() {
            if let Err(e) = self.advance(i) {
                return Some(Err(e));
            }
            if self.last == Some(id) {
                continue;
            }
            self.last = Some(id);
            return Some(Ok(id));
        }
        None
    }
}

impl Sealed {
    /// The id of the object whose record is at `offset`, for listing: `Ok(None)` for a record a
    /// redaction erased (version 2: it no longer decodes; gc drops it), an error for a damaged
    /// one (never skipped: gc must not drop an object it could not read). A version 1 record
    /// names its object (the read that follows verifies it).
    fn listed_id(&self, offset: u64) -> Result<Option<ObjectId>, Error> {
        let damaged = |reason: &str| Error::CorruptFile {
            path: PathBuf::from(pack_name(self.seq)),
            reason: format!("the record at offset {offset}: {reason}"),
        };
        let Some((tag, payload)) = read_record_at(&*self.data, offset, self.data_len) else {
            return Err(damaged("no whole record (its checksum or length is wrong)"));
        };
        if RecordKind::from_tag(tag) != Some(RecordKind::Object) {
            return Err(damaged(
                "the index points at a record that is not an object",
            ));
        }
        match self.layout {
            Layout::V1 => Ok(self.layout.record_id(&payload)),
            Layout::V2 { .. } if payload.first() == Some(&ERASED_CODEC) => Ok(None),
            Layout::V2 { .. } => self
                .layout
                .record_id(&payload)
                .map(Some)
                .ok_or_else(|| damaged("it does not decode")),
        }
    }
}
