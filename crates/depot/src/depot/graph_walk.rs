//! How the depot uses its commit-graph (`crate::graph`): id-only history walks
//! ([`Depot::walk_ids`]), partition-filtered log walks ([`Depot::walk_touching`]), ancestry by
//! generation numbers, keeping the graph up to date (rows appended after each native commit, a
//! bounded catch-up when a ref moved by other means) and rebuilding it (gc, reindex).
//!
//! The graph only ever speeds a walk up: every walk gives the same entries, in the same order, as
//! the object walk; a node the graph does not have (or cannot vouch for) is read from the objects
//! and the walk goes on. A damaged graph is reported once through `Depot::on_warning` and not used
//! again by this handle; gc rebuilds it. Only native depots have one: elsewhere the object walk.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use globset::GlobMatcher;

use super::{history::compile_glob, Depot, Error, HistoryOrder};
use crate::graph::{self, Graph, GraphError, NewRow, NO_DATE};
use crate::hash::ObjectId;
use crate::index::IndexedCheckpoint;
use crate::object::{Affix, Checkpoint};
use crate::storage::Storage;

/// How many checkpoints a read may add to the graph before leaving it to gc.
const CATCH_UP_LIMIT: usize = 4096;

/// One checkpoint of an id-only walk: what the graph holds (or the object says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The checkpoint.
    pub id: ObjectId,
    /// Its parents, in order.
    pub parents: Vec<ObjectId>,
    /// Its date, if it has one.
    pub date: Option<DateTime<Utc>>,
    /// The graph's partition summary, when the entry came from the graph.
    bloom: Option<[u8; 16]>,
    generation: Option<u32>,
}

/// A partition glob, with what a graph row's summary can rule out without reading the affix.
pub struct PartitionFilter {
    matcher: GlobMatcher,
    /// The glob's literal name, or the directory its literal prefix names (`accounts` for
    /// `accounts/*`): a row whose summary lacks it touches no matching partition.
    key: Option<String>,
}

impl PartitionFilter {
    /// Compiles `glob` (as `retro log -- GLOB` and `retro events` read it).
    pub fn new(glob: &str) -> Result<PartitionFilter, Error> {
        let matcher = compile_glob(glob)?;
        let key = match glob.find(['*', '?', '[', '{', '\\']) {
            None => Some(glob.to_owned()),
            Some(end) => glob[..end]
                .rfind('/')
                .map(|slash| glob[..slash].to_owned())
                .filter(|k| !k.is_empty()),
        };
        Ok(PartitionFilter { matcher, key })
    }

    /// False only when the entry certainly touches no matching partition.
    pub fn may_touch(&self, entry: &HistoryEntry) -> bool {
        match (&entry.bloom, &self.key) {
            (Some(bloom), Some(key)) => graph::bloom_may_contain(bloom, key),
            _ => true,
        }
    }

    /// Whether the partition's name matches the glob.
    pub fn matches(&self, partition: &str) -> bool {
        self.matcher.is_match(partition)
    }

    /// Whether the affix touches a matching partition.
    pub fn touches(&self, affix: &Affix) -> bool {
        affix
            .partitions()
            .any(|(p, _)| self.matcher.is_match(p.as_str()))
    }
}

/// A native depot's graph file and what this handle knows of it.
pub(crate) struct GraphHandle {
    storage: Arc<dyn Storage>,
    path: PathBuf,
    state: Mutex<GraphState>,
}

#[derive(Default)]
struct GraphState {
    opened: bool,
    graph: Option<Arc<Graph>>,
    /// Found damaged: not used again until rebuilt.
    damaged: bool,
}

impl GraphHandle {
    pub(crate) fn new(storage: Arc<dyn Storage>, path: PathBuf) -> GraphHandle {
        GraphHandle {
            storage,
            path,
            state: Mutex::new(GraphState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GraphState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Encoded rows and the (id, row) of each checkpoint row among them.
type Encoded = (Vec<u8>, Vec<(ObjectId, u32)>);

/// A checkpoint to add: (parents, date, bloom).
type Info = (Vec<ObjectId>, i64, [u8; 16]);

fn unix(date: Option<DateTime<Utc>>) -> i64 {
    date.map_or(NO_DATE, |d| d.timestamp())
}

fn bloom_of<'a>(partitions: impl Iterator<Item = &'a str>) -> [u8; 16] {
    let mut bloom = [0u8; 16];
    for p in partitions {
        graph::bloom_add(&mut bloom, p);
    }
    bloom
}

/// Rows for `nodes` (discovered newest first; `pars` their parents: a new node's index, or a
/// row already in `base` with the high bit set), parents before children, numbered from `first`.
/// Returns the encoded rows and (id, row) of each checkpoint row.
fn encode(
    base: Option<&Graph>,
    first: u32,
    nodes: &[ObjectId],
    infos: &[(i64, [u8; 16])],
    starts: &[u32],
    pars: &[u32],
) -> Result<Encoded, GraphError> {
    const KNOWN: u32 = 0x8000_0000;
    let n = nodes.len();
    let parents_of = |i: usize| {
        let end = starts.get(i + 1).map_or(pars.len(), |&e| e as usize);
        &pars[starts[i] as usize..end]
    };
    let mut row_of = vec![u32::MAX; n];
    let mut gen_of = vec![0u32; n];
    let mut out = Vec::with_capacity(n * graph::ROW);
    let mut lookup = Vec::with_capacity(n);
    let mut next = first;
    let mut visited = vec![false; n];
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for root in 0..n {
        if visited[root] {
            continue;
        }
        visited[root] = true;
        stack.push((root, 0));
        while let Some(&mut (i, ref mut cursor)) = stack.last_mut() {
            let ps = parents_of(i);
            if let Some(&p) = ps.get(*cursor) {
                *cursor += 1;
                if p & KNOWN == 0 && !visited[p as usize] {
                    visited[p as usize] = true;
                    stack.push((p as usize, 0));
                }
                continue;
            }
            stack.pop();
            let mut parents = Vec::with_capacity(ps.len());
            let mut generation = 0;
            for &p in ps {
                let (row, g) = if p & KNOWN != 0 {
                    let row = p & !KNOWN;
                    let g = match base {
                        Some(base) => base.row(row)?.generation,
                        None => 0,
                    };
                    (row, g)
                } else {
                    (row_of[p as usize], gen_of[p as usize])
                };
                parents.push(row);
                generation = generation.max(g);
            }
            let generation = generation.saturating_add(1);
            let (date, bloom) = infos[i];
            graph::encode_rows(
                &NewRow {
                    id: nodes[i],
                    parents,
                    generation,
                    date,
                    bloom,
                },
                next,
                &mut out,
            );
            row_of[i] = next;
            gen_of[i] = generation;
            lookup.push((nodes[i], next));
            next += graph::rows_for(ps.len());
        }
    }
    Ok((out, lookup))
}

impl Depot {
    /// The graph as this handle knows it (opened on first use), or `None`.
    fn graph_now(&self) -> Option<Arc<Graph>> {
        let handle = self.graph.as_ref()?;
        let mut state = handle.lock();
        if state.damaged {
            return None;
        }
        if !state.opened {
            state.opened = true;
            match Graph::open(&*handle.storage, &handle.path) {
                Ok(graph) => state.graph = graph.map(Arc::new),
                Err(err) => {
                    drop(state);
                    self.graph_damaged(&err);
                    return None;
                }
            }
        }
        state.graph.clone()
    }

    /// Reports a damaged graph (once per handle) and stops using it.
    fn graph_damaged(&self, err: &GraphError) {
        let Some(handle) = &self.graph else { return };
        let mut state = handle.lock();
        let first = !state.damaged;
        state.damaged = true;
        state.graph = None;
        drop(state);
        // Only damage is reported: an I/O failure or a busy lock just means no graph this time.
        if first && matches!(err, GraphError::Damaged { .. } | GraphError::Header { .. }) {
            self.index
                .lock()
                .expect("index lock poisoned")
                .warn(format!(
                    "{err}; history is read from the objects instead ('retro gc' rebuilds it)"
                ));
        }
    }

    /// After a native commit: appends the batch's checkpoints (parents first) when their parents
    /// are in the graph, not fsynced. Anything else (no graph yet over a long history, another
    /// handle writing it) is left for a later catch-up or gc: derived data.
    pub(crate) fn graph_committed(&self, batch: &[IndexedCheckpoint]) {
        if self.graph.is_none() || batch.is_empty() {
            return;
        }
        let infos: HashMap<ObjectId, Info> = batch
            .iter()
            .map(|c| {
                let bloom = bloom_of(c.partitions.iter().map(|(p, _)| p.as_str()));
                (c.id, (c.parent.into_iter().collect(), unix(c.date), bloom))
            })
            .collect();
        let tips: Vec<ObjectId> = batch.iter().rev().map(|c| c.id).collect();
        let _ = self.graph_add(&tips, usize::MAX, false, true, |id| {
            Ok(infos.get(id).cloned())
        });
    }

    /// Adds `tips` and their ancestors the graph lacks, reading each through `info` (`None`:
    /// unknown, so nothing is added), at most `limit` of them; `rebuild` writes a new file of
    /// exactly these (with a fresh lookup table) instead; `fresh_tips`: the tips were just
    /// committed (so are new). Returns the graph to use.
    fn graph_add(
        &self,
        tips: &[ObjectId],
        limit: usize,
        rebuild: bool,
        fresh_tips: bool,
        mut info: impl FnMut(&ObjectId) -> Result<Option<Info>, Error>,
    ) -> Result<Option<Arc<Graph>>, Error> {
        let Some(handle) = &self.graph else {
            return Ok(None);
        };
        let storage = &*handle.storage;
        let waited = std::time::Instant::now();
        let _lock = loop {
            match graph::try_lock(storage, &handle.path) {
                Ok(lock) => break lock,
                Err(_) if !rebuild => return Ok(None),
                // A rebuild waits for an append (short) as long as a writer waits for the lock.
                Err(GraphError::Busy { .. }) if waited.elapsed() < self.options.lock_timeout => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(err) => return Err(err.into()),
            }
        };
        // Under the lock: what is on disk now (another handle may have appended or rebuilt).
        let base: Option<Graph> = if rebuild {
            None
        } else {
            if self.graph_now().is_none() && handle.lock().damaged {
                return Ok(None);
            }
            let held = handle.lock().graph.take();
            let current = match held.map(Arc::try_unwrap) {
                Some(Ok(graph)) => graph.refresh(storage),
                _ => Graph::open(storage, &handle.path),
            };
            match current {
                Ok(graph) => graph,
                Err(err) => {
                    self.graph_damaged(&err);
                    return Ok(None);
                }
            }
        };
        let known = |id: &ObjectId| base.as_ref().and_then(|g| g.lookup(id));
        // Discover what is missing, breadth first from the tips.
        const KNOWN: u32 = 0x8000_0000;
        let mut nodes: Vec<ObjectId> = Vec::new();
        let mut index: HashMap<ObjectId, u32> = HashMap::new();
        let mut infos: Vec<(i64, [u8; 16])> = Vec::new();
        let mut starts: Vec<u32> = Vec::new();
        let mut pars: Vec<u32> = Vec::new();
        // A tip just committed is new: only the cheap lookups (the newest rows, the sorted
        // table) are asked, never the map of every unsorted row, which would cost a short-lived
        // process O(history) on each commit.
        let is_known = |id: &ObjectId| match (fresh_tips, base.as_ref()) {
            (true, Some(g)) => g.lookup_cheap(id),
            _ => known(id),
        };
        for tip in tips {
            if is_known(tip).is_none() && !index.contains_key(tip) {
                index.insert(*tip, nodes.len() as u32);
                nodes.push(*tip);
            }
        }
        let mut i = 0;
        let mut complete = true;
        while i < nodes.len() {
            if nodes.len() > limit {
                complete = false;
                break;
            }
            let id = nodes[i];
            let Some((parents, date, bloom)) = info(&id)? else {
                complete = false;
                break;
            };
            starts.push(pars.len() as u32);
            infos.push((date, bloom));
            for parent in parents {
                // A parent in this batch first (it is new), then the graph.
                let slot = match index.get(&parent) {
                    Some(&i) => i,
                    None => match known(&parent) {
                        Some(row) => KNOWN | row,
                        None => {
                            index.insert(parent, nodes.len() as u32);
                            nodes.push(parent);
                            (nodes.len() - 1) as u32
                        }
                    },
                };
                pars.push(slot);
            }
            i += 1;
        }
        drop(index);
        let put_back = |graph: Option<Graph>| {
            let graph = graph.map(Arc::new);
            let mut state = handle.lock();
            state.opened = true;
            state.graph = graph.clone();
            if rebuild {
                state.damaged = false;
            }
            graph
        };
        if !complete || (nodes.is_empty() && !rebuild) {
            return Ok(put_back(base));
        }
        let first = base.as_ref().map_or(0, Graph::rows);
        let (rows, lookup) = encode(base.as_ref(), first, &nodes, &infos, &starts, &pars)?;
        drop((nodes, infos, starts, pars));
        let graph = match base {
            Some(mut graph) => {
                graph.append(storage, &rows)?;
                graph
            }
            None => {
                let nonce = rand_nonce();
                let head = graph::encode_head(nonce, if rebuild { lookup } else { Vec::new() });
                graph::write_new(storage, &handle.path, &head, &rows)?;
                match Graph::open(storage, &handle.path)? {
                    Some(graph) => graph,
                    None => return Ok(put_back(None)),
                }
            }
        };
        Ok(put_back(Some(graph)))
    }

    /// What the objects say about a checkpoint, for the graph.
    fn object_info(&self, id: &ObjectId) -> Result<Option<Info>, Error> {
        let checkpoint = self.read_checkpoint_unresolved(id)?;
        let affix = self.read_affix(&checkpoint.affix())?;
        let bloom = bloom_of(affix.partitions().map(|(p, _)| p.as_str()));
        Ok(Some((
            checkpoint.parents().to_vec(),
            unix(checkpoint.date()),
            bloom,
        )))
    }

    /// The graph, with `start` in it if it can be added cheaply (at most [`CATCH_UP_LIMIT`]
    /// checkpoints read); else the graph as it is (the walk reads what it lacks from objects).
    fn graph_for(&self, start: &ObjectId) -> Option<Arc<Graph>> {
        let graph = self.graph_now();
        if graph.as_ref().is_some_and(|g| g.lookup(start).is_some()) {
            return graph;
        }
        // No graph at all (a depot from before it, or gc never ran): reads do not build one over
        // a long history; gc and reindex do. A damaged one waits for gc too.
        graph.as_ref()?;
        match self.graph_add(&[*start], CATCH_UP_LIMIT, false, false, |id| {
            self.object_info(id)
        }) {
            Ok(graph) => graph,
            Err(_) => self.graph_now(),
        }
    }

    /// Rebuilds the graph from every checkpoint reachable from refs (gc, reindex): a new file,
    /// renamed over the old one. Native depots only (a no-op elsewhere).
    pub(crate) fn rebuild_graph(&self) -> Result<(), Error> {
        if self.graph.is_none() {
            return Ok(());
        }
        let mut tips: Vec<ObjectId> = Vec::new();
        if let (_, Some(head)) = self.resolve_ref(&crate::refdb::RefName::head())? {
            tips.push(head);
        }
        for (_, value) in self.list_refs("")? {
            if let Some(id) = value.id() {
                tips.push(id);
            }
        }
        let mut seen = HashSet::new();
        tips.retain(|id| seen.insert(*id));
        self.graph_add(&tips, usize::MAX, true, false, |id| self.object_info(id))?;
        Ok(())
    }

    /// The entry of a graph row (`None` when the row cannot be vouched for).
    fn entry_from_graph(
        graph: &Graph,
        id: &ObjectId,
        r: u32,
        entry: &mut HistoryEntry,
        rows: &mut Vec<Option<u32>>,
        scratch: &mut Vec<u32>,
    ) -> Result<bool, GraphError> {
        let row = graph.row(r)?;
        if row.id != *id {
            return Ok(false);
        }
        graph.parents(r, &row, scratch)?;
        entry.id = *id;
        entry.parents.clear();
        rows.clear();
        for &p in scratch.iter() {
            entry.parents.push(graph.row(p)?.id);
            rows.push(Some(p));
        }
        entry.date = if row.date == NO_DATE {
            None
        } else {
            DateTime::from_timestamp(row.date, 0)
        };
        entry.bloom = Some(row.bloom);
        entry.generation = Some(row.generation);
        Ok(true)
    }

    /// Fills `entry` (and the parents' rows) for `id`: from the graph when it has the row, else
    /// from the checkpoint object.
    fn entry_of(
        &self,
        graph: &mut Option<Arc<Graph>>,
        id: &ObjectId,
        hint: Option<u32>,
        entry: &mut HistoryEntry,
        rows: &mut Vec<Option<u32>>,
        scratch: &mut Vec<u32>,
    ) -> Result<(), Error> {
        if let Some(g) = graph.as_deref() {
            if let Some(r) = hint.or_else(|| g.lookup(id)) {
                match Self::entry_from_graph(g, id, r, entry, rows, scratch) {
                    Ok(true) => return Ok(()),
                    Ok(false) => {}
                    Err(err) => {
                        self.graph_damaged(&err);
                        *graph = None;
                    }
                }
            }
        }
        let checkpoint: Checkpoint = self.read_checkpoint_unresolved(id)?;
        entry.id = *id;
        entry.parents.clear();
        entry.parents.extend_from_slice(checkpoint.parents());
        entry.date = checkpoint.date();
        entry.bloom = None;
        entry.generation = None;
        rows.clear();
        for p in checkpoint.parents() {
            rows.push(graph.as_deref().and_then(|g| g.lookup(p)));
        }
        Ok(())
    }

    /// Walks checkpoint ids from `start`, newest first, in the order of [`Depot::walk`], calling
    /// `f` with each one's parents and date until it returns `false`. In a native depot these come
    /// from the commit-graph (no object read); any checkpoint the graph lacks is read (and
    /// hash-verified) from the objects, so the entries are the same everywhere.
    pub fn walk_ids(
        &self,
        start: ObjectId,
        order: HistoryOrder,
        mut f: impl FnMut(&HistoryEntry) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        let mut graph = self.graph_for(&start);
        let mut entry = HistoryEntry {
            id: start,
            parents: Vec::new(),
            date: None,
            bloom: None,
            generation: None,
        };
        let mut rows = Vec::new();
        let mut scratch = Vec::new();
        match order {
            HistoryOrder::FirstParent => {
                let mut cursor = Some((start, None));
                while let Some((id, hint)) = cursor {
                    self.entry_of(&mut graph, &id, hint, &mut entry, &mut rows, &mut scratch)?;
                    if !f(&entry)? {
                        break;
                    }
                    cursor = entry.parents.first().map(|p| (*p, rows[0]));
                }
            }
            HistoryOrder::Full => {
                let mut seen = HashSet::new();
                let mut queue = VecDeque::from([(start, None)]);
                seen.insert(start);
                while let Some((id, hint)) = queue.pop_front() {
                    self.entry_of(&mut graph, &id, hint, &mut entry, &mut rows, &mut scratch)?;
                    if !f(&entry)? {
                        break;
                    }
                    for (parent, row) in entry.parents.iter().zip(&rows) {
                        if seen.insert(*parent) {
                            queue.push_back((*parent, *row));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// [`Depot::walk`] limited to checkpoints touching a partition matching `filter` (all of them
    /// without one): the graph's summaries skip checkpoints that cannot match without reading
    /// them; each one handed to `f` is read and hash-verified, and its affix checked.
    pub fn walk_touching(
        &self,
        start: ObjectId,
        order: HistoryOrder,
        filter: Option<&PartitionFilter>,
        mut f: impl FnMut(ObjectId, &Checkpoint) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        self.walk_ids(start, order, |entry| {
            if filter.is_some_and(|filter| !filter.may_touch(entry)) {
                return Ok(true);
            }
            let checkpoint = self.read_checkpoint(&entry.id)?;
            if let Some(filter) = filter {
                if !filter.touches(&self.read_affix(&checkpoint.affix())?) {
                    return Ok(true);
                }
            }
            f(entry.id, &checkpoint)
        })
    }

    /// Whether `ancestor` is `descendant` or one of its ancestors: a breadth-first walk that, on
    /// the graph, goes no deeper than `ancestor`'s generation.
    pub(crate) fn graph_is_ancestor(
        &self,
        ancestor: ObjectId,
        descendant: ObjectId,
    ) -> Result<bool, Error> {
        let floor = self
            .graph_for(&ancestor)
            .and_then(|g| g.lookup(&ancestor).and_then(|r| g.row(r).ok()))
            .map(|row| row.generation);
        let mut found = false;
        let mut seen = HashSet::new();
        let mut queue = VecDeque::from([descendant]);
        seen.insert(descendant);
        let mut graph = self.graph_for(&descendant);
        let mut entry = HistoryEntry {
            id: descendant,
            parents: Vec::new(),
            date: None,
            bloom: None,
            generation: None,
        };
        let (mut rows, mut scratch) = (Vec::new(), Vec::new());
        let mut hints: HashMap<ObjectId, u32> = HashMap::new();
        while let Some(id) = queue.pop_front() {
            if id == ancestor {
                found = true;
                break;
            }
            let hint = hints.remove(&id);
            self.entry_of(&mut graph, &id, hint, &mut entry, &mut rows, &mut scratch)?;
            if let (Some(floor), Some(generation)) = (floor, entry.generation) {
                if generation <= floor {
                    continue; // nothing below can be `ancestor` (a different one of its height)
                }
            }
            for (parent, row) in entry.parents.iter().zip(&rows) {
                if seen.insert(*parent) {
                    if let Some(row) = row {
                        hints.insert(*parent, *row);
                    }
                    queue.push_back(*parent);
                }
            }
        }
        Ok(found)
    }

    /// The best common ancestor of `a` and `b` (the one with the greatest generation; a merge's
    /// base), or `None` when their histories are unrelated. Checkpoints are visited highest
    /// generation first, each marked with the sides it is reachable from, so the first one
    /// reachable from both has no common ancestor above it. Generations come from the
    /// commit-graph; a checkpoint it lacks (or a layout without one) has its generation computed
    /// from its parents' by reading them (a walk of its whole ancestry, cached for this call).
    pub fn merge_base(&self, a: ObjectId, b: ObjectId) -> Result<Option<ObjectId>, Error> {
        if a == b {
            return Ok(Some(a));
        }
        let mut nodes = NodeCache {
            graph: self.graph_for(&a),
            nodes: HashMap::new(),
        };
        let mut flags: HashMap<ObjectId, u8> = HashMap::new();
        let mut heap = std::collections::BinaryHeap::new();
        for (id, side) in [(a, 1u8), (b, 2u8)] {
            *flags.entry(id).or_default() |= side;
            heap.push((nodes.generation(self, id)?, id));
        }
        let mut done: HashSet<ObjectId> = HashSet::new();
        while let Some((_, id)) = heap.pop() {
            if !done.insert(id) {
                continue;
            }
            let mark = flags[&id];
            if mark == 3 {
                return Ok(Some(id));
            }
            let parents = nodes.node(self, id)?.0.clone();
            for parent in parents {
                let entry = flags.entry(parent).or_default();
                if *entry | mark != *entry {
                    *entry |= mark;
                    // Pushed again when its marks grow, so it is seen with all of them.
                    done.remove(&parent);
                    heap.push((nodes.generation(self, parent)?, parent));
                }
            }
        }
        Ok(None)
    }

    /// fsck's check of the graph against the objects: warnings (derived data; gc repairs it).
    pub(crate) fn fsck_graph(&self, warnings: &mut Vec<String>) {
        let Some(handle) = &self.graph else { return };
        let graph = match Graph::open(&*handle.storage, &handle.path) {
            Ok(Some(graph)) => graph,
            Ok(None) => return,
            Err(err) => {
                warnings.push(format!("{err} ('retro gc' rebuilds it)"));
                return;
            }
        };
        if let Err(err) = graph.verify() {
            warnings.push(format!("{err} ('retro gc' rebuilds it)"));
            return;
        }
        let mut problem: Option<String> = None;
        let _ = graph.for_each(|_, row, parent_rows| {
            let check = || -> Result<Option<String>, Error> {
                let Some((parents, date, bloom)) = self.object_info(&row.id)? else {
                    return Ok(None);
                };
                let mut ids = Vec::new();
                for &p in parent_rows {
                    ids.push(graph.row(p).map(|r| r.id).ok());
                }
                if ids.iter().map(|p| p.as_ref()).ne(parents.iter().map(Some)) {
                    return Ok(Some("its parents differ from the checkpoint's".to_owned()));
                }
                if date != row.date || bloom != row.bloom {
                    return Ok(Some("its date or partition summary differs".to_owned()));
                }
                Ok(None)
            };
            match check() {
                Ok(None) => true,
                Ok(Some(what)) => {
                    problem = Some(format!("the row of {}: {what}", row.id));
                    false
                }
                Err(err) => {
                    problem = Some(format!("the row of {} cannot be checked: {err}", row.id));
                    false
                }
            }
        });
        if let Some(problem) = problem {
            warnings.push(format!(
                "commit-graph '{}': {problem} ('retro gc' rebuilds it)",
                handle.path.display()
            ));
        }
    }
}

fn rand_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Parents and generations of the checkpoints a [`Depot::merge_base`] visits.
struct NodeCache {
    graph: Option<Arc<Graph>>,
    nodes: HashMap<ObjectId, (Vec<ObjectId>, Option<u32>)>,
}

impl NodeCache {
    fn node(
        &mut self,
        depot: &Depot,
        id: ObjectId,
    ) -> Result<&(Vec<ObjectId>, Option<u32>), Error> {
        if !self.nodes.contains_key(&id) {
            let mut entry = HistoryEntry {
                id,
                parents: Vec::new(),
                date: None,
                bloom: None,
                generation: None,
            };
            let (mut rows, mut scratch) = (Vec::new(), Vec::new());
            depot.entry_of(
                &mut self.graph,
                &id,
                None,
                &mut entry,
                &mut rows,
                &mut scratch,
            )?;
            self.nodes.insert(id, (entry.parents, entry.generation));
        }
        Ok(&self.nodes[&id])
    }

    /// 1 + the largest of its parents' generations (1 for a root), from the graph when it has
    /// the row, else computed without recursion.
    fn generation(&mut self, depot: &Depot, id: ObjectId) -> Result<u32, Error> {
        let mut stack = vec![id];
        while let Some(&top) = stack.last() {
            let (parents, generation) = self.node(depot, top)?.clone();
            if generation.is_some() {
                stack.pop();
                continue;
            }
            let mut highest = 0;
            let mut pending = false;
            for parent in &parents {
                match self.node(depot, *parent)?.1 {
                    Some(g) => highest = highest.max(g),
                    None => {
                        pending = true;
                        stack.push(*parent);
                    }
                }
            }
            if !pending {
                stack.pop();
                if let Some(node) = self.nodes.get_mut(&top) {
                    node.1 = Some(highest.saturating_add(1));
                }
            }
        }
        Ok(self.nodes[&id].1.unwrap_or(1))
    }
}
