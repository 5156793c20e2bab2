//! The commit-graph (`<depot>/commit-graph`): a derived, rebuildable file of fixed-width rows, one
//! per checkpoint reachable from refs (its id, parent row numbers, generation number, date and a
//! 128-bit bloom filter of the partitions its affix touches), so that walks which need only ids,
//! parents and dates, and partition filters that can rule checkpoints out, read no object.
//!
//! This module owns the file: its format (docs/format.md, "The commit-graph"), opening it (a
//! header read and a map: no scan), looking rows up by id, checking each row's crc32 as it is
//! read, appending rows (not fsynced: derived data), and writing a whole new file (temp file and
//! rename). It trusts nothing it reads: a torn tail is dropped, a row whose checksum fails is
//! reported as [`GraphError::Damaged`], and no byte content makes it panic. The depot
//! (`depot/graph_walk.rs`) decides when to use, extend or rebuild it, and falls back to the object
//! walk whenever it cannot answer.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::hash::ObjectId;
use crate::storage::{Mapped, OpenOptions, Storage};

/// The file's first 8 bytes.
pub const MAGIC: &[u8; 8] = b"RETROCG1";
/// The format version in the header.
pub const VERSION: u32 = 1;
/// Bytes per row.
pub const ROW: usize = 80;
/// Bytes of the header: magic, version, row width, sorted count, flags, nonce, crc32.
pub const HEADER: usize = 36;
/// "No parent" in a parent slot.
pub const NONE: u32 = u32::MAX;
/// Set in the second parent slot: the low bits name the first overflow (edges) row.
pub const EDGE_FLAG: u32 = 0x8000_0000;
/// Parent row numbers an edges row holds.
pub const EDGES_PER_ROW: usize = 18;
const KIND_CHECKPOINT: u8 = 1;
const KIND_EDGES: u8 = 2;
/// Date slot of a checkpoint without a date.
pub const NO_DATE: i64 = i64::MIN;

/// What can go wrong with the graph file. None of it is ever an error of history: the caller falls
/// back to the objects.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// The file could not be read or written.
    #[error("commit-graph '{path}': could not {verb}: {source}")]
    Io {
        /// What was being done.
        verb: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The header is not a commit-graph header this build reads.
    #[error("commit-graph '{path}': bad header: {reason}")]
    Header {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A row (or the lookup table) fails its checksum or names rows that are not there.
    #[error("commit-graph '{path}': damaged at row {row}: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// The row (or `u32::MAX` for the lookup table).
        row: u32,
        /// What is wrong.
        reason: String,
    },
    /// Another handle holds the graph's lock.
    #[error("commit-graph '{path}' is being written by another handle")]
    Busy {
        /// The file.
        path: PathBuf,
    },
}

/// One checkpoint row, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// The checkpoint.
    pub id: ObjectId,
    /// How many parents it has (255 means 255 or more: count the edges).
    pub parent_count: u8,
    /// First parent's row, or [`NONE`].
    pub parent1: u32,
    /// Second parent's row, [`NONE`], or [`EDGE_FLAG`] | the first edges row.
    pub parent2: u32,
    /// 1 + the largest generation of its parents (1 for a root).
    pub generation: u32,
    /// Unix seconds, or [`NO_DATE`].
    pub date: i64,
    /// Bloom filter of the partition names (and their directory prefixes) it touches.
    pub bloom: [u8; 16],
}

/// What a new row is made of (parents as row numbers, already in the file or earlier in the batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRow {
    /// The checkpoint.
    pub id: ObjectId,
    /// Parent rows, in the checkpoint's order.
    pub parents: Vec<u32>,
    /// Its generation.
    pub generation: u32,
    /// Unix seconds, or [`NO_DATE`].
    pub date: i64,
    /// Its partition bloom filter.
    pub bloom: [u8; 16],
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn bloom_bits(key: &str) -> [u8; 3] {
    let h = fnv1a(key.as_bytes());
    let h1 = h as u32;
    let h2 = ((h >> 32) as u32) | 1;
    let mut out = [0u8; 3];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = (h1.wrapping_add((i as u32).wrapping_mul(h2)) % 128) as u8;
    }
    out
}

/// Adds a partition name and each of its directory prefixes (`a`, `a/b` for `a/b/c`).
pub fn bloom_add(bloom: &mut [u8; 16], partition: &str) {
    let mut add = |key: &str| {
        for bit in bloom_bits(key) {
            bloom[usize::from(bit / 8)] |= 1 << (bit % 8);
        }
    };
    for (i, b) in partition.bytes().enumerate() {
        if b == b'/' {
            add(&partition[..i]);
        }
    }
    add(partition);
}

/// Whether `key` (a partition name or a directory prefix) may be in the filter.
pub fn bloom_may_contain(bloom: &[u8; 16], key: &str) -> bool {
    bloom_bits(key)
        .iter()
        .all(|bit| bloom[usize::from(bit / 8)] & (1 << (bit % 8)) != 0)
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(x)
}

fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Encodes a checkpoint row, and the edges rows its parents beyond two need (appended right
/// after it, so `first_row` is the row number the checkpoint row will have).
pub fn encode_rows(row: &NewRow, first_row: u32, out: &mut Vec<u8>) {
    let mut r = [0u8; ROW];
    r[0] = KIND_CHECKPOINT;
    r[1] = row.parents.len().min(255) as u8;
    r[4..8].copy_from_slice(&row.generation.to_be_bytes());
    r[8..40].copy_from_slice(row.id.as_bytes());
    let p1 = row.parents.first().copied().unwrap_or(NONE);
    let p2 = match row.parents.len() {
        0 | 1 => NONE,
        2 => row.parents[1],
        _ => EDGE_FLAG | (first_row + 1),
    };
    r[40..44].copy_from_slice(&p1.to_be_bytes());
    r[44..48].copy_from_slice(&p2.to_be_bytes());
    r[48..56].copy_from_slice(&row.date.to_be_bytes());
    r[56..72].copy_from_slice(&row.bloom);
    let sum = crc(&r[..76]);
    r[76..80].copy_from_slice(&sum.to_be_bytes());
    out.extend_from_slice(&r);
    if row.parents.len() > 2 {
        let rest = &row.parents[1..];
        let chunks: Vec<&[u32]> = rest.chunks(EDGES_PER_ROW).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let mut e = [0u8; ROW];
            e[0] = KIND_EDGES;
            e[1] = chunk.len() as u8;
            e[2] = u8::from(i + 1 < chunks.len());
            for (j, p) in chunk.iter().enumerate() {
                e[4 + 4 * j..8 + 4 * j].copy_from_slice(&p.to_be_bytes());
            }
            let sum = crc(&e[..76]);
            e[76..80].copy_from_slice(&sum.to_be_bytes());
            out.extend_from_slice(&e);
        }
    }
}

/// How many rows [`encode_rows`] writes for a checkpoint with `parents` parents.
pub fn rows_for(parents: usize) -> u32 {
    if parents <= 2 {
        1
    } else {
        1 + (parents - 1).div_ceil(EDGES_PER_ROW) as u32
    }
}

/// The header and lookup table of a graph holding `rows` (encoded) whose checkpoint rows are
/// listed in `lookup` as (id, row), in any order.
pub fn encode_head(nonce: u64, mut lookup: Vec<(ObjectId, u32)>) -> Vec<u8> {
    lookup.sort_unstable_by_key(|entry| entry.0);
    let mut out = Vec::with_capacity(HEADER + 1028 + 4 * lookup.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&(ROW as u32).to_be_bytes());
    out.extend_from_slice(&(lookup.len() as u32).to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&nonce.to_be_bytes());
    let sum = crc(&out);
    out.extend_from_slice(&sum.to_be_bytes());
    let start = out.len();
    let mut fanout = [0u32; 256];
    for (id, _) in &lookup {
        fanout[usize::from(id.as_bytes()[0])] += 1;
    }
    let mut total = 0u32;
    for count in fanout {
        total += count;
        out.extend_from_slice(&total.to_be_bytes());
    }
    for (_, row) in &lookup {
        out.extend_from_slice(&row.to_be_bytes());
    }
    let sum = crc(&out[start..]);
    out.extend_from_slice(&sum.to_be_bytes());
    out
}

/// An opened commit-graph: the file as mapped when opened (or refreshed), plus the rows this
/// handle appended since.
pub struct Graph {
    path: PathBuf,
    bytes: Mapped,
    /// Rows appended by this handle after `bytes` was mapped.
    tail: Vec<u8>,
    rows_start: usize,
    sorted: u32,
    /// Rows in `bytes` (the torn tail excluded).
    mapped_rows: u32,
    nonce: u64,
    /// The file's length when mapped plus what this handle appended.
    file_len: u64,
    /// id → row for rows past the sorted lookup (and how many rows it covers), filled on demand.
    unsorted: Mutex<(HashMap<ObjectId, u32>, u32)>,
    /// The file opened for appending by this handle's first append, with its identity (device,
    /// inode): kept so that each later append costs one `stat` of the path and one write.
    writer: Option<(Box<dyn crate::storage::StorageFile>, (u64, u64))>,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("path", &self.path)
            .field("rows", &self.rows())
            .field("sorted", &self.sorted)
            .finish()
    }
}

impl Graph {
    /// Opens the graph at `path`: `Ok(None)` when there is none. Reads the header and maps the
    /// file; the only rows read are a torn tail's (dropped).
    pub fn open(storage: &dyn Storage, path: &Path) -> Result<Option<Graph>, GraphError> {
        let bytes = match storage.map(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(GraphError::Io {
                    verb: "map",
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Self::from_mapped(path, bytes).map(Some)
    }

    /// Parses a whole file's bytes (what [`Graph::open`] maps).
    pub fn from_mapped(path: &Path, bytes: Mapped) -> Result<Graph, GraphError> {
        let header = |reason: &str| GraphError::Header {
            path: path.to_path_buf(),
            reason: reason.to_owned(),
        };
        if bytes.len() < HEADER {
            return Err(header("shorter than its header"));
        }
        if &bytes[..8] != MAGIC {
            return Err(header("not RETROCG1"));
        }
        if crc(&bytes[..32]) != be32(&bytes, 32) {
            return Err(header("header checksum mismatch"));
        }
        let version = be32(&bytes, 8);
        if version != VERSION {
            return Err(header(&format!(
                "version {version}, this build reads {VERSION}"
            )));
        }
        if be32(&bytes, 12) as usize != ROW {
            return Err(header("row width is not 80"));
        }
        let sorted = be32(&bytes, 16);
        let mut nonce = [0u8; 8];
        nonce.copy_from_slice(&bytes[24..32]);
        let nonce = u64::from_be_bytes(nonce);
        let rows_start = HEADER + 1024 + 4 * sorted as usize + 4;
        if bytes.len() < rows_start {
            return Err(GraphError::Damaged {
                path: path.to_path_buf(),
                row: u32::MAX,
                reason: "shorter than its lookup table".to_owned(),
            });
        }
        let whole = ((bytes.len() - rows_start) / ROW).min(u32::MAX as usize >> 1) as u32;
        let file_len = bytes.len() as u64;
        let mut graph = Graph {
            path: path.to_path_buf(),
            bytes,
            tail: Vec::new(),
            rows_start,
            sorted,
            mapped_rows: whole,
            nonce,
            file_len,
            unsorted: Mutex::new((HashMap::new(), sorted)),
            writer: None,
        };
        // A torn tail: the rows at the end whose checksum fails (a power cut during an append
        // that was never fsynced) are not there.
        let mut valid = whole;
        while valid > 0 && graph.raw(valid - 1).is_none() {
            valid -= 1;
        }
        if valid < sorted {
            return Err(GraphError::Damaged {
                path: path.to_path_buf(),
                row: valid,
                reason: format!("{valid} valid rows but the lookup table lists {sorted}"),
            });
        }
        graph.mapped_rows = valid;
        graph.file_len = (rows_start + valid as usize * ROW) as u64;
        Ok(graph)
    }

    /// The file's nonce (a new one each rebuild): tells a replaced file from this one.
    pub fn nonce(&self) -> u64 {
        self.nonce
    }

    /// The path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rows (checkpoint and edges rows).
    pub fn rows(&self) -> u32 {
        self.mapped_rows + (self.tail.len() / ROW) as u32
    }

    /// Rows listed in the sorted lookup table.
    pub fn sorted(&self) -> u32 {
        self.sorted
    }

    /// The byte offset where the next row goes.
    pub fn end_offset(&self) -> u64 {
        (self.rows_start + self.rows() as usize * ROW) as u64
    }

    /// Row `r`'s bytes if its checksum holds.
    fn raw(&self, r: u32) -> Option<&[u8]> {
        let bytes = if r < self.mapped_rows || self.tail.is_empty() {
            let at = self.rows_start.checked_add(r as usize * ROW)?;
            self.bytes.get(at..at + ROW)?
        } else {
            let at = (r - self.mapped_rows) as usize * ROW;
            self.tail.get(at..at + ROW)?
        };
        (crc(&bytes[..76]) == be32(bytes, 76)).then_some(bytes)
    }

    fn damaged(&self, row: u32, reason: &str) -> GraphError {
        GraphError::Damaged {
            path: self.path.clone(),
            row,
            reason: reason.to_owned(),
        }
    }

    /// Checkpoint row `r`, checked.
    pub fn row(&self, r: u32) -> Result<Row, GraphError> {
        if r >= self.rows() {
            return Err(self.damaged(r, "refers to a row past the end"));
        }
        let b = self
            .raw(r)
            .ok_or_else(|| self.damaged(r, "checksum mismatch"))?;
        if b[0] != KIND_CHECKPOINT {
            return Err(self.damaged(r, "not a checkpoint row"));
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&b[8..40]);
        let mut date = [0u8; 8];
        date.copy_from_slice(&b[48..56]);
        let mut bloom = [0u8; 16];
        bloom.copy_from_slice(&b[56..72]);
        let row = Row {
            id: ObjectId::from_bytes(id),
            parent_count: b[1],
            parent1: be32(b, 40),
            parent2: be32(b, 44),
            generation: be32(b, 4),
            date: i64::from_be_bytes(date),
            bloom,
        };
        // Parents come before their children: a row naming a later one is not trusted.
        let before = |p: u32| p == NONE || p < r;
        let second_ok = if row.parent2 != NONE && row.parent2 & EDGE_FLAG != 0 {
            (row.parent2 & !EDGE_FLAG) > r
        } else {
            before(row.parent2)
        };
        if !before(row.parent1) || !second_ok {
            return Err(self.damaged(r, "a parent row is not before its child"));
        }
        Ok(row)
    }

    /// The parent rows of checkpoint row `r` (`row` is its decoded form), in order, into `out`.
    pub fn parents(&self, r: u32, row: &Row, out: &mut Vec<u32>) -> Result<(), GraphError> {
        out.clear();
        if row.parent1 == NONE {
            return Ok(());
        }
        out.push(row.parent1);
        if row.parent2 == NONE {
            return Ok(());
        }
        if row.parent2 & EDGE_FLAG == 0 {
            out.push(row.parent2);
            return Ok(());
        }
        let mut e = row.parent2 & !EDGE_FLAG;
        loop {
            let b = self
                .raw(e)
                .ok_or_else(|| self.damaged(e, "edges row checksum mismatch"))?;
            if b[0] != KIND_EDGES || usize::from(b[1]) > EDGES_PER_ROW {
                return Err(self.damaged(e, "not an edges row"));
            }
            for j in 0..usize::from(b[1]) {
                let p = be32(b, 4 + 4 * j);
                if p >= r {
                    return Err(self.damaged(e, "a parent row is not before its child"));
                }
                out.push(p);
            }
            if b[2] == 0 {
                break;
            }
            e += 1;
        }
        if row.parent_count != 255 && out.len() != usize::from(row.parent_count) {
            return Err(self.damaged(r, "parent count differs from its edges"));
        }
        Ok(())
    }

    /// The row of checkpoint `id`, if the graph has it. Looks at the newest row first (a walk
    /// from a branch head), then the sorted table (fan-out and binary search), then rows
    /// appended since the last rebuild (indexed in memory on first need).
    pub fn lookup(&self, id: &ObjectId) -> Option<u32> {
        if let Some(r) = self.lookup_cheap(id) {
            return Some(r);
        }
        let n = self.rows();
        let mut unsorted = self.unsorted.lock().unwrap_or_else(|e| e.into_inner());
        let (map, upto) = &mut *unsorted;
        while *upto < n {
            if let Ok(row) = self.row(*upto) {
                map.insert(row.id, *upto);
            }
            *upto += 1;
        }
        map.get(id).copied()
    }

    /// [`Graph::lookup`] without the map of unsorted rows: the newest rows, then the sorted
    /// table. O(log n), never builds anything; misses rows appended since the last rebuild
    /// unless they are the newest.
    pub fn lookup_cheap(&self, id: &ObjectId) -> Option<u32> {
        let n = self.rows();
        for r in (n.saturating_sub(2)..n).rev() {
            if self.row(r).is_ok_and(|row| row.id == *id) {
                return Some(r);
            }
        }
        self.lookup_sorted(id)
    }

    fn lookup_sorted(&self, id: &ObjectId) -> Option<u32> {
        let table = HEADER;
        let first = usize::from(id.as_bytes()[0]);
        let hi = be32(&self.bytes, table + 4 * first).min(self.sorted);
        let lo = if first == 0 {
            0
        } else {
            be32(&self.bytes, table + 4 * (first - 1)).min(hi)
        };
        let entries = table + 1024;
        let (mut lo, mut hi) = (lo, hi);
        // A damaged table can only make this miss (every hit is checked against the row's id).
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let r = be32(&self.bytes, entries + 4 * mid as usize);
            let row = self.row(r).ok()?;
            match row.id.cmp(id) {
                std::cmp::Ordering::Equal => return Some(r),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        None
    }

    /// Checks the header's lookup table checksum and every row's (fsck): the first problem found.
    pub fn verify(&self) -> Result<(), GraphError> {
        let start = HEADER;
        let end = self.rows_start - 4;
        if crc(&self.bytes[start..end]) != be32(&self.bytes, end) {
            return Err(self.damaged(u32::MAX, "lookup table checksum mismatch"));
        }
        let mut parents = Vec::new();
        let mut r = 0;
        let mut released = self.rows_start;
        while r < self.rows() {
            let row = self.row(r)?;
            self.parents(r, &row, &mut parents)?;
            r += rows_for(parents.len());
            released = self.release_before(r, released);
        }
        Ok(())
    }

    /// After a pass reached row `r`: drops the mapped pages before it from memory every 8 MiB
    /// (a pass over a large graph stays within bounded resident memory); returns the new mark.
    fn release_before(&self, r: u32, released: usize) -> usize {
        let at = (self.rows_start + r as usize * ROW).min(self.bytes.len());
        if at - released.min(at) < 8 << 20 {
            return released;
        }
        self.bytes.release(released..at);
        at
    }

    /// Every checkpoint row, in row order: (row, decoded, parent rows). Stops at the first
    /// damaged row with its error.
    pub fn for_each(&self, mut f: impl FnMut(u32, &Row, &[u32]) -> bool) -> Result<(), GraphError> {
        let mut parents = Vec::new();
        let mut r = 0;
        let mut released = self.rows_start;
        while r < self.rows() {
            let row = self.row(r)?;
            self.parents(r, &row, &mut parents)?;
            if !f(r, &row, &parents) {
                break;
            }
            r += rows_for(parents.len());
            released = self.release_before(r, released);
        }
        Ok(())
    }

    /// Whether the file at the path is still this graph with nothing appended by others.
    fn current_on_disk(&self, storage: &dyn Storage) -> bool {
        if let Some((_, identity)) = &self.writer {
            // The file this handle appends to is still the one at the path (a rebuild renames a
            // new file there) and nobody appended since: one `stat`.
            return storage
                .metadata(&self.path)
                .is_ok_and(|m| m.identity == *identity && m.len == self.file_len);
        }
        let Ok(file) = storage.open(&self.path, OpenOptions::READ) else {
            return false;
        };
        let mut head = [0u8; HEADER];
        if file.read_exact_at(&mut head, 0).is_err() || head[24..32] != self.nonce.to_be_bytes() {
            return false;
        }
        // Longer than what this handle knows of: another handle appended (or a torn tail).
        file.len().is_ok_and(|len| len == self.file_len)
    }

    /// Appends `rows` (encoded by [`encode_rows`]) at the end; not fsynced. The caller holds
    /// the graph lock and has checked (with [`Graph::refresh`]) that this handle is current.
    pub fn append(&mut self, storage: &dyn Storage, rows: &[u8]) -> Result<(), GraphError> {
        let io = |verb| {
            let path = self.path.clone();
            move |source| GraphError::Io { verb, path, source }
        };
        if self.writer.is_none() {
            let file = storage
                .open(&self.path, OpenOptions::WRITE)
                .map_err(io("open"))?;
            let identity = file.identity().map_err(io("stat"))?;
            self.writer = Some((file, identity));
        }
        let (file, _) = self.writer.as_ref().expect("opened above");
        let at = self.end_offset();
        file.write_all_at(rows, at).map_err(io("append to"))?;
        self.tail.extend_from_slice(rows);
        self.file_len = at + rows.len() as u64;
        Ok(())
    }

    /// Re-reads the file when it is not what this handle holds (another handle appended or a
    /// rebuild replaced it, or the tail this handle keeps in memory grew large): `None` when it
    /// is gone.
    pub fn refresh(self, storage: &dyn Storage) -> Result<Option<Graph>, GraphError> {
        if self.current_on_disk(storage) && self.tail.len() < (1 << 16) * ROW {
            return Ok(Some(self));
        }
        Graph::open(storage, &self.path)
    }
}

/// Holds the graph's write lock (`commit-graph.lock`, `flock`) while alive.
pub struct GraphLock {
    _file: Box<dyn crate::storage::StorageFile>,
}

/// Takes the graph's write lock without waiting: [`GraphError::Busy`] when another handle holds it.
pub fn try_lock(storage: &dyn Storage, path: &Path) -> Result<GraphLock, GraphError> {
    let lock = lock_path(path);
    let file = storage
        .open(&lock, OpenOptions::WRITE_CREATE)
        .map_err(|source| GraphError::Io {
            verb: "open",
            path: lock.clone(),
            source,
        })?;
    match file.try_lock(true) {
        Ok(()) => Ok(GraphLock { _file: file }),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(GraphError::Busy {
            path: path.to_path_buf(),
        }),
        Err(source) => Err(GraphError::Io {
            verb: "lock",
            path: lock,
            source,
        }),
    }
}

/// The lock file beside the graph.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Writes a whole new graph at `path`: `head` ([`encode_head`]) then the rows, into a temp file
/// renamed over the old one (the directory fsynced: a power cut leaves the old or the new file).
pub fn write_new(
    storage: &dyn Storage,
    path: &Path,
    head: &[u8],
    rows: &[u8],
) -> Result<(), GraphError> {
    let temp = crate::fsutil::temp_path_for(path);
    let _ = storage.remove_file(&temp);
    let result = (|| {
        let file = storage.open(&temp, OpenOptions::CREATE_NEW)?;
        file.write_all(head)?;
        file.write_all(rows)?;
        file.sync_all()?;
        drop(file);
        storage.rename(&temp, path)?;
        if let Some(dir) = path.parent() {
            crate::fsutil::fsync_dir(storage, dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = storage.remove_file(&temp);
    }
    result.map_err(|source| GraphError::Io {
        verb: "write",
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    fn id(n: u32) -> ObjectId {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&n.to_be_bytes());
        b[4] = 0x5a;
        ObjectId::from_bytes(b)
    }

    fn sample() -> Vec<u8> {
        let mut rows = Vec::new();
        let mut lookup = Vec::new();
        let mut r = 0u32;
        let mut rows_of = Vec::new();
        for n in 0..40u32 {
            let parents: Vec<u32> = match n {
                0 => vec![],
                7 => rows_of[..6].to_vec(),
                9 => (0..22).map(|i| rows_of[i % 9]).collect(),
                _ => vec![rows_of[n as usize - 1]],
            };
            let mut bloom = [0u8; 16];
            bloom_add(&mut bloom, &format!("a/{n}"));
            let new = NewRow {
                id: id(n),
                parents: parents.clone(),
                generation: n + 1,
                date: i64::from(n) * 60,
                bloom,
            };
            encode_rows(&new, r, &mut rows);
            lookup.push((id(n), r));
            rows_of.push(r);
            r += rows_for(parents.len());
        }
        let mut out = encode_head(7, lookup[..20].to_vec());
        out.extend_from_slice(&rows);
        out
    }

    #[test]
    fn rows_round_trip_with_overflow_parents() {
        let bytes = sample();
        let g = Graph::from_mapped(Path::new("g"), Mapped::Owned(bytes)).unwrap();
        g.verify().unwrap();
        let r9 = g.lookup(&id(9)).unwrap();
        let row = g.row(r9).unwrap();
        let mut p = Vec::new();
        g.parents(r9, &row, &mut p).unwrap();
        assert_eq!(p.len(), 22);
        for n in [0, 5, 19, 20, 39] {
            let r = g.lookup(&id(n)).unwrap();
            assert_eq!(g.row(r).unwrap().date, i64::from(n) * 60);
            assert!(bloom_may_contain(&g.row(r).unwrap().bloom, "a"));
        }
        assert!(g.lookup(&id(1000)).is_none());
    }

    #[test]
    fn a_cheap_lookup_never_builds_the_map_of_unsorted_rows() {
        // 40 rows: the first 20 in the sorted table, the rest appended after it.
        let g = Graph::from_mapped(Path::new("g"), Mapped::Owned(sample())).unwrap();
        assert_eq!(g.lookup_cheap(&id(1000)), None, "absent");
        assert!(g.lookup_cheap(&id(39)).is_some(), "the newest row");
        assert!(g.lookup_cheap(&id(5)).is_some(), "a sorted row");
        assert_eq!(
            g.lookup_cheap(&id(30)),
            None,
            "an older unsorted row needs the map"
        );
        assert!(
            g.unsorted.lock().unwrap().0.is_empty(),
            "what a commit asks must not cost a pass over every unsorted row"
        );
        assert!(g.lookup(&id(30)).is_some());
        assert!(!g.unsorted.lock().unwrap().0.is_empty());
    }

    #[test]
    fn a_torn_tail_is_dropped() {
        let bytes = sample();
        let full = Graph::from_mapped(Path::new("g"), Mapped::Owned(bytes.clone()))
            .unwrap()
            .rows();
        let mut torn = bytes.clone();
        torn.truncate(bytes.len() - 30);
        torn.extend_from_slice(&[0; 200]);
        let g = Graph::from_mapped(Path::new("g"), Mapped::Owned(torn)).unwrap();
        assert_eq!(g.rows(), full - 1);
    }

    /// No byte content makes the graph panic: random files, and sample files with random bytes
    /// changed, are opened, looked up, walked and verified.
    #[test]
    fn random_bytes_never_panic() {
        let base = sample();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..3000 {
            let mut bytes = if round % 3 == 0 {
                let len = (rng(&mut seed) % 4096) as usize;
                let mut b: Vec<u8> = (0..len).map(|_| rng(&mut seed) as u8).collect();
                if round % 2 == 0 && b.len() >= HEADER {
                    b[..8].copy_from_slice(MAGIC);
                }
                b
            } else {
                base.clone()
            };
            for _ in 0..(rng(&mut seed) % 8) {
                if bytes.is_empty() {
                    break;
                }
                let at = (rng(&mut seed) as usize) % bytes.len();
                bytes[at] = rng(&mut seed) as u8;
            }
            if round % 5 == 0 {
                let cut = (rng(&mut seed) as usize) % (bytes.len() + 1);
                bytes.truncate(cut);
            }
            let Ok(g) = Graph::from_mapped(Path::new("g"), Mapped::Owned(bytes)) else {
                continue;
            };
            let _ = g.verify();
            let _ = g.for_each(|_, _, _| true);
            for n in 0..45 {
                if let Some(r) = g.lookup(&id(n)) {
                    if let Ok(row) = g.row(r) {
                        let mut p = Vec::new();
                        let _ = g.parents(r, &row, &mut p);
                    }
                }
            }
            for r in 0..g.rows() + 2 {
                let _ = g.row(r);
            }
        }
    }
}
