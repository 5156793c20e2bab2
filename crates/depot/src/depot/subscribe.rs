//! Subscriptions: whole checkpoints delivered in history order, catching up from a position and
//! then following a ref live, across processes.
//!
//! A [`Subscription`] walks the ref's first-parent history from its position (exclusive) to the
//! head and delivers, per checkpoint, the events of the partitions matching its glob, together
//! (consumers never see half a checkpoint). Checkpoints with no matching event advance the
//! position silently. When the ref moves in a way that is not a fast-forward of the position, a
//! [`Delivery::NonFastForward`] names the new head and the last common checkpoint, and delivery
//! resumes from there: a projection rebuilds from it (or from the start).
//!
//! Live following waits on inotify (the `notify` crate) for the ref's directory, or on the ref
//! store's own notifications (PostgreSQL's `LISTEN`, which wakes subscribers on every host), with a
//! polling fallback, so a commit made by another process reaches a subscriber within milliseconds.
//!
//! A subscription borrows its depot ([`Depot::subscribe`]) or shares it
//! ([`Depot::subscribe_shared`], from an `Arc<Depot>`): a shared one is `'static` and `Send`, so it
//! moves into a thread of its own.
//!
//! A durable [`Consumer`] keeps its position in the ref `refs/consumers/<name>`, moved by
//! compare-and-swap when the consumer acknowledges a checkpoint: a restarted consumer resumes
//! right after its last acknowledged checkpoint (at-least-once; checkpoint ids make effects
//! idempotent).

use std::collections::{HashSet, VecDeque};
use std::ops::Deref;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use globset::GlobMatcher;
use notify::Watcher;

use super::history::compile_glob;
use super::{Depot, Error, EventRecord, HistoryOrder};
use crate::hash::ObjectId;
use crate::refdb::{Expected, LogInfo, RefEdit, RefName, RefValue};

/// How often the ref is polled when no file-system notification arrives.
const POLL_FALLBACK: Duration = Duration::from_millis(50);

/// One thing a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A checkpoint and its matching events, in affix order.
    Checkpoint {
        /// The checkpoint.
        id: ObjectId,
        /// Its first parent.
        parent: Option<ObjectId>,
        /// Its date.
        date: Option<DateTime<Utc>>,
        /// Its session.
        session: String,
        /// The matching events (never empty).
        events: Vec<EventRecord>,
    },
    /// The ref moved to a head that does not descend from the subscriber's position.
    NonFastForward {
        /// The position the subscriber had reached.
        from: ObjectId,
        /// The new head.
        head: Option<ObjectId>,
        /// The newest checkpoint both histories share (`None`: nothing, rebuild from t0).
        base: Option<ObjectId>,
    },
}

/// The depot a subscription reads: borrowed, or shared (`'static`).
pub(crate) enum DepotRef<'d> {
    Borrowed(&'d Depot),
    Shared(Arc<Depot>),
}

impl Deref for DepotRef<'_> {
    type Target = Depot;

    fn deref(&self) -> &Depot {
        match self {
            DepotRef::Borrowed(depot) => depot,
            DepotRef::Shared(depot) => depot,
        }
    }
}

/// A position in a ref's history and what to deliver from it.
pub struct Subscription<'d> {
    depot: DepotRef<'d>,
    versions: std::collections::HashMap<crate::name::PartitionName, u64>,
    target: RefName,
    matcher: GlobMatcher,
    position: Option<ObjectId>,
    queue: VecDeque<ObjectId>,
    watcher: Option<(notify::RecommendedWatcher, mpsc::Receiver<()>)>,
    /// The ref store's own wake-ups (PostgreSQL's `LISTEN`), for depots without a directory.
    listener: Option<Box<dyn crate::refdb::RefListener>>,
}

impl Depot {
    /// Subscribes to `target`'s history after `position` (`None`: from the start) for the
    /// partitions matching `glob`.
    pub fn subscribe(
        &self,
        target: &RefName,
        glob: &str,
        position: Option<ObjectId>,
    ) -> Result<Subscription<'_>, Error> {
        Subscription::new(DepotRef::Borrowed(self), target, glob, position)
    }

    /// [`Depot::subscribe`] holding the depot by `Arc`: the subscription borrows nothing, so it
    /// can move into another thread.
    pub fn subscribe_shared(
        self: &Arc<Self>,
        target: &RefName,
        glob: &str,
        position: Option<ObjectId>,
    ) -> Result<Subscription<'static>, Error> {
        Subscription::new(DepotRef::Shared(self.clone()), target, glob, position)
    }
}

impl<'d> Subscription<'d> {
    pub(crate) fn new(
        depot: DepotRef<'d>,
        target: &RefName,
        glob: &str,
        position: Option<ObjectId>,
    ) -> Result<Subscription<'d>, Error> {
        let matcher = compile_glob(glob)?;
        let (target, _) = depot.resolve_ref(target)?;
        if let Some(id) = position {
            depot.read_checkpoint_unresolved(&id)?;
        }
        Ok(Subscription {
            depot,
            versions: std::collections::HashMap::new(),
            target,
            matcher,
            position,
            queue: VecDeque::new(),
            watcher: None,
            listener: None,
        })
    }
}

impl Subscription<'_> {
    /// The last checkpoint delivered or skipped.
    pub fn position(&self) -> Option<ObjectId> {
        self.position
    }

    /// The next delivery if one is ready now, without waiting.
    pub fn poll(&mut self) -> Result<Option<Delivery>, Error> {
        loop {
            if let Some(id) = self.queue.pop_front() {
                self.position = Some(id);
                if let Some(delivery) = self.deliver(id)? {
                    return Ok(Some(delivery));
                }
                continue;
            }
            let (_, head) = self.depot.resolve_ref(&self.target)?;
            if head == self.position {
                return Ok(None);
            }
            if let Some(nff) = self.plan(head)? {
                return Ok(Some(nff));
            }
        }
    }

    /// The next delivery, waiting up to `timeout` for one (`None` if none came).
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Delivery>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(delivery) = self.poll()? {
                return Ok(Some(delivery));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.wait((deadline - now).min(POLL_FALLBACK));
        }
    }

    /// Waits for a change notification on the ref's directory, or `pause`.
    pub(crate) fn wait(&mut self, pause: Duration) {
        if self.depot.root().is_none() {
            if self.listener.is_none() {
                self.listener = self.depot.refs().listener();
            }
            match &mut self.listener {
                Some(listener) => {
                    listener.wait(pause);
                }
                None => std::thread::sleep(pause),
            }
            return;
        }
        if self.watcher.is_none() {
            self.watcher = self.start_watcher();
        }
        match &self.watcher {
            Some((_, events)) => {
                let _ = events.recv_timeout(pause);
                while events.try_recv().is_ok() {}
            }
            None => std::thread::sleep(pause),
        }
    }

    fn start_watcher(&self) -> Option<(notify::RecommendedWatcher, mpsc::Receiver<()>)> {
        let root = self.depot.root()?;
        let dir = root.join(self.target.as_str());
        let dir = dir.parent()?.to_path_buf();
        let (tx, rx) = mpsc::channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok() {
                    let _ = tx.send(());
                }
            })
            .ok()?;
        watcher
            .watch(&dir, notify::RecursiveMode::NonRecursive)
            .ok()?;
        Some((watcher, rx))
    }

    /// Queues the checkpoints from the position to `head`; returns a non-fast-forward notice
    /// when `head` does not descend from the position.
    fn plan(&mut self, head: Option<ObjectId>) -> Result<Option<Delivery>, Error> {
        let mut chain = Vec::new();
        let mut found = self.position.is_none();
        if let Some(head) = head {
            self.depot.walk(head, HistoryOrder::FirstParent, |id, _| {
                if Some(id) == self.position {
                    found = true;
                    return Ok(false);
                }
                chain.push(id);
                Ok(true)
            })?;
        }
        if found {
            self.queue.extend(chain.into_iter().rev());
            return Ok(None);
        }
        // Not a descendant: find the newest checkpoint the two histories share.
        let from = self.position.expect("found is true without a position");
        let on_head: HashSet<ObjectId> = chain.iter().copied().collect();
        let mut base = None;
        self.depot.walk(from, HistoryOrder::FirstParent, |id, _| {
            if on_head.contains(&id) {
                base = Some(id);
                return Ok(false);
            }
            Ok(true)
        })?;
        let resume: Vec<ObjectId> = chain
            .into_iter()
            .take_while(|id| Some(*id) != base)
            .collect();
        self.position = base;
        self.versions.clear();
        self.queue.extend(resume.into_iter().rev());
        Ok(Some(Delivery::NonFastForward { from, head, base }))
    }

    fn deliver(&mut self, id: ObjectId) -> Result<Option<Delivery>, Error> {
        let checkpoint = self.depot.read_checkpoint(&id)?;
        let affix = self.depot.read_affix(&checkpoint.affix())?;
        let mut events = Vec::new();
        for (partition, ids) in affix.partitions() {
            if !self.matcher.is_match(partition.as_str()) {
                continue;
            }
            let version = match self.versions.get(partition) {
                Some(v) => *v,
                None => self.depot.partition_version_before(partition, &id)?,
            };
            self.versions
                .insert(partition.clone(), version + ids.len() as u64);
            for (i, event_id) in ids.iter().enumerate() {
                events.push(EventRecord {
                    partition: partition.clone(),
                    version: version + i as u64 + 1,
                    id: *event_id,
                    event: self.depot.read_event(event_id)?,
                    checkpoint: id,
                    date: checkpoint.date(),
                    session: checkpoint.session().to_owned(),
                });
            }
        }
        if events.is_empty() {
            return Ok(None);
        }
        Ok(Some(Delivery::Checkpoint {
            id,
            parent: checkpoint.first_parent(),
            date: checkpoint.date(),
            session: checkpoint.session().to_owned(),
            events,
        }))
    }
}

/// A named, durable consumer: its position is the ref `refs/consumers/<name>`.
pub struct Consumer<'d> {
    subscription: Subscription<'d>,
    name: RefName,
    acked: Option<ObjectId>,
}

impl Depot {
    /// Opens the durable consumer `name` on `target` for `glob`. It resumes after its last
    /// acknowledged checkpoint; a new consumer starts after `start` (`None`: the beginning).
    pub fn consumer(
        &self,
        name: &str,
        target: &RefName,
        glob: &str,
        start: Option<ObjectId>,
    ) -> Result<Consumer<'_>, Error> {
        Consumer::new(DepotRef::Borrowed(self), name, target, glob, start)
    }

    /// [`Depot::consumer`] holding the depot by `Arc`, to move into another thread.
    pub fn consumer_shared(
        self: &Arc<Self>,
        name: &str,
        target: &RefName,
        glob: &str,
        start: Option<ObjectId>,
    ) -> Result<Consumer<'static>, Error> {
        Consumer::new(DepotRef::Shared(self.clone()), name, target, glob, start)
    }
}

impl<'d> Consumer<'d> {
    fn new(
        depot: DepotRef<'d>,
        name: &str,
        target: &RefName,
        glob: &str,
        start: Option<ObjectId>,
    ) -> Result<Consumer<'d>, Error> {
        let name = RefName::new(&format!("refs/consumers/{name}"))?;
        let acked = depot.refs().read(&name)?.and_then(|v| v.id());
        let subscription = Subscription::new(depot, target, glob, acked.or(start))?;
        Ok(Consumer {
            subscription,
            name,
            acked,
        })
    }

    /// The consumer's ref.
    pub fn ref_name(&self) -> &RefName {
        &self.name
    }

    /// The subscription behind it (for `poll` and `next_timeout`).
    pub fn subscription(&mut self) -> &mut Subscription<'d> {
        &mut self.subscription
    }

    /// Records that everything up to the subscription's position was handled: moves
    /// `refs/consumers/<name>` by compare-and-swap (a conflict means two processes run the same
    /// consumer).
    pub fn ack(&mut self) -> Result<(), Error> {
        let Some(position) = self.subscription.position() else {
            return Ok(());
        };
        if Some(position) == self.acked {
            return Ok(());
        }
        self.subscription.depot.update_refs(&[RefEdit {
            name: self.name.clone(),
            expected: Expected::MustBeOrAbsent(self.acked),
            new: Some(RefValue::Direct(position)),
            log: LogInfo {
                session: String::new(),
                message: "ack".to_owned(),
            },
        }])?;
        self.acked = Some(position);
        Ok(())
    }
}
