//! A simulated file system for power-loss tests: everything in memory, with what is durable kept
//! apart from what is only written.
//!
//! The model is the disk `docs/crash-safety.md` was designed on, ext4 **without a journal**, at
//! its harshest:
//!
//! - a file's writes and length changes are pending until the file is fsynced (`sync_data` or
//!   `sync_all`);
//! - a directory's entries (a file or directory created in it, a rename into or out of it, a
//!   removal) are pending until the directory is fsynced. Fsyncing a file does not make its name
//!   durable; a rename is two independent entry changes (the new name, then the old one's
//!   removal), so it is not atomic;
//! - nothing pending is ordered: a crash may keep any subset of it ([`CrashMode`]), and a write
//!   may be torn (only a prefix of its bytes lands, possibly with the file's length already
//!   covering all of it, the rest zeros).
//!
//! Every call that changes state is one *operation*, recorded in order. [`SimStorage::replay`]
//! rebuilds the state after any prefix of the operations, and [`SimReplay::crash`] cuts the power
//! there: the result is a new storage holding what survived, with a new boot id.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use super::{DirEntry, Mapped, Metadata, OpenOptions, Storage, StorageFile};

/// What a simulated crash keeps of the operations that were not yet durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// A power cut that keeps nothing that was not fsynced.
    DropUnsynced,
    /// A power cut that keeps a random prefix of the pending operations, in order; the first one
    /// dropped may land torn.
    KeepPrefix,
    /// A power cut that keeps a random subset of the pending operations, in any order; any kept
    /// write may be torn.
    KeepSubset,
    /// Not a power cut: the process died and the page cache survived. Everything is kept and the
    /// boot id stays the same.
    ProcessDeath,
}

/// One operation that changed the simulated state.
#[derive(Debug, Clone)]
enum Op {
    Create {
        path: PathBuf,
        dir: bool,
    },
    Write {
        ino: u64,
        offset: u64,
        bytes: Arc<[u8]>,
    },
    SetLen {
        ino: u64,
        len: u64,
    },
    SyncFile {
        ino: u64,
    },
    Rename {
        from: PathBuf,
        to: PathBuf,
    },
    Remove {
        path: PathBuf,
    },
    SyncDir {
        path: PathBuf,
    },
}

/// A change not yet durable.
#[derive(Debug, Clone)]
enum Pending {
    Write {
        ino: u64,
        offset: u64,
        bytes: Arc<[u8]>,
    },
    SetLen {
        ino: u64,
        len: u64,
    },
    /// A directory entry set (`Some`) or removed (`None`).
    Entry {
        path: PathBuf,
        ino: Option<u64>,
    },
}

#[derive(Debug, Clone)]
struct Inode {
    dir: bool,
    data: Arc<Vec<u8>>,
    durable: Arc<Vec<u8>>,
    modified: SystemTime,
}

#[derive(Debug, Clone)]
struct State {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    pending: Vec<Pending>,
}

const ROOT_INO: u64 = 0;

fn root() -> PathBuf {
    PathBuf::from("/")
}

/// `path` made absolute (relative paths are taken from `/`), without `.` components.
fn normal(path: &Path) -> PathBuf {
    let mut out = root();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn err(kind: io::ErrorKind, what: &str, path: &Path) -> io::Error {
    io::Error::new(kind, format!("{what}: {}", path.display()))
}

fn write_into(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let end = offset as usize + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[offset as usize..end].copy_from_slice(bytes);
}

impl State {
    fn new() -> State {
        let mut inodes = HashMap::new();
        inodes.insert(
            ROOT_INO,
            Inode {
                dir: true,
                data: Arc::default(),
                durable: Arc::default(),
                modified: SystemTime::now(),
            },
        );
        let mut names = BTreeMap::new();
        names.insert(root(), ROOT_INO);
        State {
            inodes,
            next_ino: 1,
            durable_names: names.clone(),
            names,
            pending: Vec::new(),
        }
    }

    fn lookup(&self, path: &Path) -> Option<(u64, &Inode)> {
        let ino = *self.names.get(path)?;
        Some((ino, &self.inodes[&ino]))
    }

    /// Checks that `path`'s parent is a directory.
    fn check_parent(&self, path: &Path) -> io::Result<()> {
        let Some(parent) = path.parent() else {
            return Err(err(io::ErrorKind::AlreadyExists, "the root", path));
        };
        match self.lookup(parent) {
            Some((_, inode)) if inode.dir => Ok(()),
            Some(_) => Err(err(io::ErrorKind::NotADirectory, "not a directory", parent)),
            None => Err(err(io::ErrorKind::NotFound, "no such directory", parent)),
        }
    }

    fn children(&self, dir: &Path) -> Vec<(PathBuf, u64)> {
        self.names
            .range(dir.to_path_buf()..)
            .skip(1)
            .take_while(|(p, _)| p.starts_with(dir))
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, i)| (p.clone(), *i))
            .collect()
    }

    fn inode_mut(&mut self, ino: u64) -> &mut Inode {
        self.inodes.get_mut(&ino).expect("a handle's inode is kept")
    }

    /// Applies one operation (already validated by the caller).
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Create { path, dir } => {
                let ino = self.next_ino;
                self.next_ino += 1;
                self.inodes.insert(
                    ino,
                    Inode {
                        dir: *dir,
                        data: Arc::default(),
                        durable: Arc::default(),
                        modified: SystemTime::now(),
                    },
                );
                self.names.insert(path.clone(), ino);
                self.pending.push(Pending::Entry {
                    path: path.clone(),
                    ino: Some(ino),
                });
            }
            Op::Write { ino, offset, bytes } => {
                let inode = self.inode_mut(*ino);
                write_into(Arc::make_mut(&mut inode.data), *offset, bytes);
                inode.modified = SystemTime::now();
                self.pending.push(Pending::Write {
                    ino: *ino,
                    offset: *offset,
                    bytes: bytes.clone(),
                });
            }
            Op::SetLen { ino, len } => {
                let inode = self.inode_mut(*ino);
                Arc::make_mut(&mut inode.data).resize(*len as usize, 0);
                inode.modified = SystemTime::now();
                self.pending.push(Pending::SetLen {
                    ino: *ino,
                    len: *len,
                });
            }
            Op::SyncFile { ino } => {
                let inode = self.inode_mut(*ino);
                inode.durable = inode.data.clone();
                self.pending.retain(|p| match p {
                    Pending::Write { ino: i, .. } | Pending::SetLen { ino: i, .. } => i != ino,
                    Pending::Entry { .. } => true,
                });
            }
            Op::Rename { from, to } => {
                let ino = self.names.remove(from).expect("checked by the caller");
                self.names.insert(to.clone(), ino);
                self.pending.push(Pending::Entry {
                    path: to.clone(),
                    ino: Some(ino),
                });
                self.pending.push(Pending::Entry {
                    path: from.clone(),
                    ino: None,
                });
            }
            Op::Remove { path } => {
                self.names.remove(path);
                self.pending.push(Pending::Entry {
                    path: path.clone(),
                    ino: None,
                });
            }
            Op::SyncDir { path } => {
                let stale: Vec<PathBuf> = self
                    .durable_names
                    .keys()
                    .filter(|p| p.parent() == Some(path.as_path()))
                    .cloned()
                    .collect();
                for p in stale {
                    self.durable_names.remove(&p);
                }
                for (p, ino) in self.children(path) {
                    self.durable_names.insert(p, ino);
                }
                self.pending.retain(|p| match p {
                    Pending::Entry { path: entry, .. } => entry.parent() != Some(path.as_path()),
                    _ => true,
                });
            }
        }
    }

    /// What a crash leaves: the durable state plus the pending changes `keep` keeps (`Some(cut)`
    /// keeps a write's first `cut` bytes, with `true` when the length covers the whole write).
    fn crashed(&self, mut keep: impl FnMut(&Pending) -> Keep) -> State {
        let mut names = self.durable_names.clone();
        let mut inodes: HashMap<u64, Inode> = self
            .inodes
            .iter()
            .map(|(ino, inode)| {
                (
                    *ino,
                    Inode {
                        dir: inode.dir,
                        data: inode.durable.clone(),
                        durable: inode.durable.clone(),
                        modified: inode.modified,
                    },
                )
            })
            .collect();
        for pending in &self.pending {
            let kept = keep(pending);
            if kept == Keep::No {
                continue;
            }
            match pending {
                Pending::Entry { path, ino } => match ino {
                    Some(ino) => {
                        names.insert(path.clone(), *ino);
                    }
                    None => {
                        names.remove(path);
                    }
                },
                Pending::SetLen { ino, len } => {
                    let inode = inodes.get_mut(ino).expect("inodes are kept");
                    Arc::make_mut(&mut inode.data).resize(*len as usize, 0);
                }
                Pending::Write { ino, offset, bytes } => {
                    let inode = inodes.get_mut(ino).expect("inodes are kept");
                    let data = Arc::make_mut(&mut inode.data);
                    match kept {
                        Keep::Torn {
                            bytes: cut,
                            whole_length,
                        } => {
                            write_into(data, *offset, &bytes[..cut.min(bytes.len())]);
                            if whole_length {
                                let end = *offset as usize + bytes.len();
                                if data.len() < end {
                                    data.resize(end, 0);
                                }
                            }
                        }
                        _ => write_into(data, *offset, bytes),
                    }
                }
            }
        }
        // An entry whose directory did not survive is gone with it (parents sort first).
        let mut kept_names: BTreeMap<PathBuf, u64> = BTreeMap::new();
        for (path, ino) in names {
            let parent_ok = match path.parent() {
                None => true,
                Some(parent) => kept_names
                    .get(parent)
                    .is_some_and(|p| inodes.get(p).is_some_and(|i| i.dir)),
            };
            if parent_ok {
                kept_names.insert(path, ino);
            }
        }
        let live: std::collections::HashSet<u64> = kept_names.values().copied().collect();
        inodes.retain(|ino, inode| {
            inode.durable = inode.data.clone();
            live.contains(ino)
        });
        State {
            inodes,
            next_ino: self.next_ino,
            durable_names: kept_names.clone(),
            names: kept_names,
            pending: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    No,
    Yes,
    Torn { bytes: usize, whole_length: bool },
}

/// A small deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

#[derive(Debug)]
struct Sim {
    /// The state this storage started in (what a replay starts from).
    start: State,
    state: State,
    log: Vec<Op>,
    boot: u64,
}

/// A file system in memory that knows what a power cut would keep; see the module documentation.
#[derive(Debug, Clone)]
pub struct SimStorage {
    sim: Arc<Mutex<Sim>>,
}

impl Default for SimStorage {
    fn default() -> Self {
        SimStorage::new()
    }
}

impl SimStorage {
    /// An empty file system (just `/`).
    pub fn new() -> SimStorage {
        SimStorage::from_state(State::new(), 0)
    }

    fn from_state(state: State, boot: u64) -> SimStorage {
        SimStorage {
            sim: Arc::new(Mutex::new(Sim {
                start: state.clone(),
                state,
                log: Vec::new(),
                boot,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Sim> {
        self.sim.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many state-changing operations have run so far.
    pub fn op_count(&self) -> usize {
        self.lock().log.len()
    }

    /// How many changes are not durable yet.
    pub fn pending_count(&self) -> usize {
        self.lock().state.pending.len()
    }

    /// A hash of what the files hold now (names, kinds and contents): two storages with the same
    /// fingerprint hold the same tree, so a test can skip a crash it has already checked.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash as _, Hasher as _};
        let sim = self.lock();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for (path, ino) in &sim.state.names {
            let inode = &sim.state.inodes[ino];
            (path, inode.dir, &inode.data[..]).hash(&mut hasher);
        }
        hasher.finish()
    }

    /// A replay of the operations recorded so far, from the state this storage started in.
    pub fn replay(&self) -> SimReplay {
        let sim = self.lock();
        SimReplay {
            log: sim.log.clone(),
            state: sim.start.clone(),
            applied: 0,
            boot: sim.boot,
        }
    }

    /// Cuts the power now (see [`SimReplay::crash`]).
    pub fn crash(&self, mode: CrashMode, seed: u64) -> SimStorage {
        let sim = self.lock();
        crash_state(&sim.state, sim.boot, mode, seed)
    }

    fn run(&self, op: Op) {
        let mut sim = self.lock();
        sim.state.apply(&op);
        sim.log.push(op);
    }
}

fn crash_state(state: &State, boot: u64, mode: CrashMode, seed: u64) -> SimStorage {
    let mut rng = Rng(seed ^ 0x5eed_0fc0_ffee);
    let torn = |rng: &mut Rng, p: &Pending| match p {
        Pending::Write { bytes, .. } => Keep::Torn {
            bytes: rng.below(bytes.len() as u64) as usize,
            whole_length: rng.below(2) == 0,
        },
        _ => Keep::No,
    };
    let crashed = match mode {
        CrashMode::DropUnsynced => state.crashed(|_| Keep::No),
        CrashMode::ProcessDeath => state.crashed(|_| Keep::Yes),
        CrashMode::KeepPrefix => {
            let cut = rng.below(state.pending.len() as u64 + 1) as usize;
            let mut i = 0;
            state.crashed(|p| {
                i += 1;
                match (i - 1).cmp(&cut) {
                    std::cmp::Ordering::Less => Keep::Yes,
                    std::cmp::Ordering::Equal if rng.below(2) == 0 => torn(&mut rng, p),
                    _ => Keep::No,
                }
            })
        }
        CrashMode::KeepSubset => state.crashed(|p| match rng.below(3) {
            0 => Keep::No,
            1 => Keep::Yes,
            _ => match torn(&mut rng, p) {
                Keep::No => Keep::Yes,
                kept => kept,
            },
        }),
    };
    let boot = match mode {
        CrashMode::ProcessDeath => boot,
        _ => boot + 1,
    };
    SimStorage::from_state(crashed, boot)
}

/// The operations a [`SimStorage`] recorded, replayed one by one from the state it started in, to
/// cut the power after any of them.
#[derive(Debug)]
pub struct SimReplay {
    log: Vec<Op>,
    state: State,
    applied: usize,
    boot: u64,
}

impl SimReplay {
    /// How many operations were recorded.
    pub fn len(&self) -> usize {
        self.log.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }

    /// The recorded operations, one line each, for failure reports.
    pub fn describe(&self, range: std::ops::Range<usize>) -> Vec<String> {
        let end = range.end.min(self.log.len());
        (range.start.min(end)..end)
            .map(|i| match &self.log[i] {
                Op::Write { ino, offset, bytes } => {
                    format!("{i}: write inode {ino} at {offset}, {} bytes", bytes.len())
                }
                other => format!("{i}: {other:?}"),
            })
            .collect()
    }

    /// Applies operations up to (not including) the `n`-th; `n` must not go backwards.
    pub fn advance_to(&mut self, n: usize) {
        assert!(n >= self.applied, "a replay only goes forward");
        for op in &self.log[self.applied..n.min(self.log.len())] {
            self.state.apply(op);
        }
        self.applied = n.min(self.log.len());
    }

    /// How many changes are pending at this point.
    pub fn pending_count(&self) -> usize {
        self.state.pending.len()
    }

    /// Cuts the power after the operations applied so far: a new storage holding what `mode`
    /// (drawing from `seed`) keeps of the pending changes, on a new boot (the same one for
    /// [`CrashMode::ProcessDeath`]).
    pub fn crash(&self, mode: CrashMode, seed: u64) -> SimStorage {
        crash_state(&self.state, self.boot, mode, seed)
    }
}

struct SimFile {
    storage: SimStorage,
    ino: u64,
    append: bool,
    cursor: Mutex<u64>,
}

impl SimFile {
    fn with_data<T>(&self, f: impl FnOnce(&[u8]) -> T) -> T {
        let sim = self.storage.lock();
        f(&sim.state.inodes[&self.ino].data)
    }
}

impl StorageFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        Ok(self.with_data(|data| {
            let start = (offset as usize).min(data.len());
            let n = buf.len().min(data.len() - start);
            buf[..n].copy_from_slice(&data[start..start + n]);
            n
        }))
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if self.read_at(buf, offset)? < buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "failed to fill whole buffer",
            ));
        }
        Ok(())
    }

    fn read_to_end(&self, out: &mut Vec<u8>) -> io::Result<usize> {
        let mut cursor = self.cursor.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.with_data(|data| {
            let start = (*cursor as usize).min(data.len());
            out.extend_from_slice(&data[start..]);
            data.len() - start
        });
        *cursor += n as u64;
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.storage.run(Op::Write {
            ino: self.ino,
            offset,
            bytes: buf.into(),
        });
        Ok(())
    }

    fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        let mut cursor = self.cursor.lock().unwrap_or_else(|p| p.into_inner());
        let mut sim = self.storage.lock();
        let offset = if self.append {
            sim.state.inodes[&self.ino].data.len() as u64
        } else {
            *cursor
        };
        let op = Op::Write {
            ino: self.ino,
            offset,
            bytes: buf.into(),
        };
        sim.state.apply(&op);
        sim.log.push(op);
        *cursor = offset + buf.len() as u64;
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.with_data(|data| data.len() as u64))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.storage.run(Op::SetLen { ino: self.ino, len });
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.storage.run(Op::SyncFile { ino: self.ino });
        Ok(())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }

    fn identity(&self) -> io::Result<(u64, u64)> {
        Ok((0, self.ino))
    }

    fn try_lock(&self, _exclusive: bool) -> io::Result<()> {
        // One process: its writers are serialized by the depot's lock mutexes.
        Ok(())
    }
}

fn metadata_of(ino: u64, inode: &Inode) -> Metadata {
    Metadata {
        len: inode.data.len() as u64,
        is_dir: inode.dir,
        is_file: !inode.dir,
        identity: (0, ino),
        modified: inode.modified,
    }
}

impl Storage for SimStorage {
    fn open(&self, path: &Path, o: OpenOptions) -> io::Result<Box<dyn StorageFile>> {
        let path = normal(path);
        let mut sim = self.lock();
        sim.state.check_parent(&path)?;
        let ino = match sim.state.lookup(&path) {
            Some(_) if o.create_new => {
                return Err(err(io::ErrorKind::AlreadyExists, "exists", &path))
            }
            Some((_, inode)) if inode.dir => {
                return Err(err(io::ErrorKind::IsADirectory, "is a directory", &path))
            }
            Some((ino, inode)) => {
                if o.truncate && !inode.data.is_empty() {
                    let op = Op::SetLen { ino, len: 0 };
                    sim.state.apply(&op);
                    sim.log.push(op);
                }
                ino
            }
            None if o.create || o.create_new => {
                let op = Op::Create {
                    path: path.clone(),
                    dir: false,
                };
                sim.state.apply(&op);
                sim.log.push(op);
                sim.state.next_ino - 1
            }
            None => return Err(err(io::ErrorKind::NotFound, "no such file", &path)),
        };
        drop(sim);
        Ok(Box::new(SimFile {
            storage: self.clone(),
            ino,
            append: o.append,
            cursor: Mutex::new(0),
        }))
    }

    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        let path = normal(path);
        let sim = self.lock();
        match sim.state.lookup(&path) {
            Some((ino, inode)) => Ok(metadata_of(ino, inode)),
            None => {
                sim.state.check_parent(&path)?;
                Err(err(io::ErrorKind::NotFound, "no such file", &path))
            }
        }
    }

    fn symlink_metadata(&self, path: &Path) -> io::Result<Metadata> {
        self.metadata(path)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let path = normal(path);
        let sim = self.lock();
        match sim.state.lookup(&path) {
            Some((_, inode)) if inode.dir => {}
            Some(_) => return Err(err(io::ErrorKind::NotADirectory, "not a directory", &path)),
            None => return Err(err(io::ErrorKind::NotFound, "no such directory", &path)),
        }
        Ok(sim
            .state
            .children(&path)
            .into_iter()
            .map(|(p, ino)| {
                let dir = sim.state.inodes[&ino].dir;
                DirEntry {
                    name: p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    path: p,
                    is_dir: dir,
                    is_file: !dir,
                }
            })
            .collect())
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let path = normal(path);
        let mut sim = self.lock();
        sim.state.check_parent(&path)?;
        if sim.state.lookup(&path).is_some() {
            return Err(err(io::ErrorKind::AlreadyExists, "exists", &path));
        }
        let op = Op::Create { path, dir: true };
        sim.state.apply(&op);
        sim.log.push(op);
        Ok(())
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let path = normal(path);
        let mut prefix = PathBuf::new();
        for c in path.components() {
            prefix.push(c);
            match self.metadata(&prefix) {
                Ok(m) if m.is_dir => continue,
                Ok(_) if prefix == path => {
                    return Err(err(io::ErrorKind::AlreadyExists, "exists", &prefix))
                }
                Ok(_) => {
                    return Err(err(
                        io::ErrorKind::NotADirectory,
                        "not a directory",
                        &prefix,
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => self.create_dir(&prefix)?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let path = normal(path);
        let mut sim = self.lock();
        match sim.state.lookup(&path) {
            Some((_, inode)) if inode.dir => {}
            Some(_) => return Err(err(io::ErrorKind::NotADirectory, "not a directory", &path)),
            None => return Err(err(io::ErrorKind::NotFound, "no such directory", &path)),
        }
        if !sim.state.children(&path).is_empty() {
            return Err(err(io::ErrorKind::DirectoryNotEmpty, "not empty", &path));
        }
        let op = Op::Remove { path };
        sim.state.apply(&op);
        sim.log.push(op);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let path = normal(path);
        let mut sim = self.lock();
        match sim.state.lookup(&path) {
            Some((_, inode)) if inode.dir => {
                return Err(err(io::ErrorKind::IsADirectory, "is a directory", &path))
            }
            Some(_) => {}
            None => {
                sim.state.check_parent(&path)?;
                return Err(err(io::ErrorKind::NotFound, "no such file", &path));
            }
        }
        let op = Op::Remove { path };
        sim.state.apply(&op);
        sim.log.push(op);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from, to) = (normal(from), normal(to));
        let mut sim = self.lock();
        match sim.state.lookup(&from) {
            Some((_, inode)) if inode.dir => {
                return Err(err(
                    io::ErrorKind::Unsupported,
                    "the simulation renames files only",
                    &from,
                ))
            }
            Some(_) => {}
            None => return Err(err(io::ErrorKind::NotFound, "no such file", &from)),
        }
        sim.state.check_parent(&to)?;
        if let Some((_, inode)) = sim.state.lookup(&to) {
            if inode.dir {
                return Err(err(io::ErrorKind::IsADirectory, "is a directory", &to));
            }
        }
        if from == to {
            return Ok(());
        }
        let op = Op::Rename { from, to };
        sim.state.apply(&op);
        sim.log.push(op);
        Ok(())
    }

    fn fsync_dir(&self, path: &Path) -> io::Result<()> {
        let path = normal(path);
        let mut sim = self.lock();
        match sim.state.lookup(&path) {
            Some((_, inode)) if inode.dir => {}
            Some(_) => return Err(err(io::ErrorKind::NotADirectory, "not a directory", &path)),
            None => return Err(err(io::ErrorKind::NotFound, "no such directory", &path)),
        }
        let op = Op::SyncDir { path };
        sim.state.apply(&op);
        sim.log.push(op);
        Ok(())
    }

    fn map(&self, path: &Path) -> io::Result<Mapped> {
        let path = normal(path);
        let sim = self.lock();
        match sim.state.lookup(&path) {
            Some((_, inode)) if !inode.dir => Ok(Mapped::Owned(inode.data.to_vec())),
            Some(_) => Err(err(io::ErrorKind::IsADirectory, "is a directory", &path)),
            None => Err(err(io::ErrorKind::NotFound, "no such file", &path)),
        }
    }

    fn boot_id(&self) -> String {
        format!("simulated boot {}", self.lock().boot)
    }

    fn is_os(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(storage: &SimStorage, path: &str, bytes: &[u8]) -> Box<dyn StorageFile> {
        let file = storage
            .open(Path::new(path), OpenOptions::WRITE_CREATE)
            .unwrap();
        file.write_all_at(bytes, 0).unwrap();
        file
    }

    fn read(storage: &SimStorage, path: &str) -> Option<Vec<u8>> {
        storage.read(Path::new(path)).ok()
    }

    #[test]
    fn only_fsynced_data_and_fsynced_names_survive_a_power_cut() {
        let storage = SimStorage::new();
        storage.create_dir(Path::new("/d")).unwrap();
        storage.fsync_dir(Path::new("/")).unwrap();
        let synced = write(&storage, "/d/synced", b"one");
        synced.sync_data().unwrap();
        // Data durable but the name is not (the directory was not fsynced): gone.
        let cut = storage.crash(CrashMode::DropUnsynced, 1);
        assert_eq!(read(&cut, "/d/synced"), None);
        storage.fsync_dir(Path::new("/d")).unwrap();
        write(&storage, "/d/unsynced", b"two");
        storage.fsync_dir(Path::new("/d")).unwrap();
        synced.write_all_at(b"ONE", 0).unwrap();
        let cut = storage.crash(CrashMode::DropUnsynced, 1);
        assert_eq!(read(&cut, "/d/synced").unwrap(), b"one");
        // The name survived, its data did not.
        assert_eq!(read(&cut, "/d/unsynced").unwrap(), b"");
        let kept = storage.crash(CrashMode::ProcessDeath, 1);
        assert_eq!(read(&kept, "/d/synced").unwrap(), b"ONE");
        assert_eq!(read(&kept, "/d/unsynced").unwrap(), b"two");
        assert_eq!(kept.boot_id(), storage.boot_id());
        assert_ne!(cut.boot_id(), storage.boot_id());
    }

    #[test]
    fn a_rename_is_two_entry_changes_that_survive_independently() {
        let storage = SimStorage::new();
        let file = write(&storage, "/a", b"x");
        file.sync_all().unwrap();
        storage.fsync_dir(Path::new("/")).unwrap();
        storage.rename(Path::new("/a"), Path::new("/b")).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let cut = storage.crash(CrashMode::KeepSubset, seed);
            seen.insert((read(&cut, "/a").is_some(), read(&cut, "/b").is_some()));
        }
        // Old name only, both, new name only, neither.
        assert_eq!(seen.len(), 4, "{seen:?}");
    }

    #[test]
    fn a_replay_rebuilds_the_state_after_any_prefix_and_writes_tear() {
        let storage = SimStorage::new();
        // Ops: create, an empty write, fsync the directory, fsync the file, the write.
        let file = write(&storage, "/f", b"");
        storage.fsync_dir(Path::new("/")).unwrap();
        file.sync_data().unwrap();
        file.write_all_at(&[7u8; 100], 0).unwrap();
        let mut replay = storage.replay();
        assert_eq!(replay.len(), 5);
        replay.advance_to(4);
        assert_eq!(
            read(&replay.crash(CrashMode::ProcessDeath, 0), "/f").unwrap(),
            b""
        );
        replay.advance_to(5);
        let mut lengths = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let cut = replay.crash(CrashMode::KeepPrefix, seed);
            let data = read(&cut, "/f").unwrap();
            assert!(data.iter().all(|&b| b == 7 || b == 0), "{data:?}");
            lengths.insert(data.iter().filter(|&&b| b == 7).count());
        }
        assert!(lengths.contains(&0) && lengths.contains(&100) && lengths.len() > 3);
    }
}
