//! The comparison table (retro against its targets and its peers) and its two renderings: a
//! plain table for the terminal and `docs/benchmarks.md`.
//!
//! The top of the bench's module graph: it reads the [`Figures`] of a run, the [`Machine`], and
//! the memory bench's command list and limit ([`memory::COMMANDS`], [`memory::LIMIT_MIB`]); no
//! measurement module uses it (they record into [`Figures`], which depends on nothing in the
//! crate), so the graph is acyclic: `figures`, `machine`, `workload` ← `depot_bench` ← `memory`,
//! `engine_bench` ← … ← `report` ← `main`.

use serde::Serialize;
use std::fmt::Write as _;
use std::time::Duration;

use crate::eventsourcing_bench as es;
use crate::figures::Figures;
use crate::machine::Machine;
use crate::memory;

/// A target from the issue.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Target {
    /// At least this much.
    AtLeast(f64),
    /// Strictly less than this.
    Below(f64),
    /// At most this much.
    AtMost(f64),
}

impl Target {
    fn met(self, value: f64) -> bool {
        match self {
            Target::AtLeast(t) => value >= t,
            Target::Below(t) => value < t,
            Target::AtMost(t) => value <= t,
        }
    }

    fn show(self) -> String {
        match self {
            Target::AtLeast(t) => format!(">= {}", number(t)),
            Target::Below(t) => format!("< {}", number(t)),
            Target::AtMost(t) => format!("<= {}", number(t)),
        }
    }
}

/// How a figure fares against its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The target is met.
    Pass,
    /// The target is missed.
    Miss,
    /// No target: for comparison only.
    Info,
    /// Not measured in this run.
    Missing,
}

impl Status {
    fn show(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Miss => "MISS",
            Status::Info => "-",
            Status::Missing => "n/a",
        }
    }
}

/// One line of the comparison table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What retro did.
    pub comparison: String,
    /// The unit of `retro` and `peer`.
    pub unit: String,
    /// retro's value.
    pub retro: Option<f64>,
    /// The target, if any.
    pub target: Option<Target>,
    /// What it is compared with.
    pub peer_label: String,
    /// The peer's value, measured in the same run.
    pub peer: Option<f64>,
    /// `retro / peer`.
    pub ratio: Option<f64>,
    /// Against the target.
    pub status: Status,
}

impl Row {
    fn new(
        comparison: impl Into<String>,
        unit: &str,
        retro: Option<f64>,
        target: Option<Target>,
        peer_label: impl Into<String>,
        peer: Option<f64>,
    ) -> Self {
        let ratio = match (retro, peer) {
            (Some(r), Some(p)) if p != 0.0 => Some(r / p),
            _ => None,
        };
        let status = match (retro, target) {
            (None, _) => Status::Missing,
            (Some(_), None) => Status::Info,
            (Some(v), Some(t)) if t.met(v) => Status::Pass,
            (Some(_), Some(_)) => Status::Miss,
        };
        Self {
            comparison: comparison.into(),
            unit: unit.to_owned(),
            retro,
            target,
            peer_label: peer_label.into(),
            peer,
            ratio,
            status,
        }
    }
}

/// The comparison rows for the figures of a run.
pub fn rows(figures: &Figures, max_rss_mib: f64) -> Vec<Row> {
    let retro = |name: &str| figures.get("retro", name).map(|f| f.value);
    let retro_n = |name: &str| figures.get("retro", name).map(|f| f.n);
    let peer = |peer: &str, name: &str| figures.get(peer, name).map(|f| f.value);
    let mut rows = Vec::new();

    let bulk_n = retro_n("bulk_write").unwrap_or(0);
    rows.push(Row::new(
        format!("bulk write ({} events, commit_many x1,000)", count(bulk_n)),
        "events/s",
        retro("bulk_write"),
        Some(Target::AtLeast(100_000.0)),
        "git fast-import",
        peer("git", "fast_import_events"),
    ));

    let durable = retro("durable_commit");
    rows.push(Row::new(
        "durable commit, 1 writer",
        "commands/s",
        durable,
        None,
        "append 1 KiB + fdatasync (this bench)",
        peer("disk-bench", "append_fdatasync"),
    ));
    rows.push(Row::new(
        "durable commit, 1 writer",
        "commands/s",
        durable,
        None,
        "append 1 KiB + fdatasync (retro-peers)",
        peer("disk", "append_fdatasync"),
    ));
    rows.push(Row::new(
        "durable commit, 1 writer",
        "commands/s",
        durable,
        None,
        "SQLite WAL synchronous=FULL",
        peer("sqlite", "durable_commit"),
    ));
    for p in ["p50", "p99"] {
        rows.push(Row::new(
            format!("durable commit latency {p}"),
            "us",
            retro(&format!("durable_commit_{p}")),
            None,
            "SQLite WAL synchronous=FULL",
            peer("sqlite", &format!("durable_commit_{p}")),
        ));
    }
    rows.push(Row::new(
        "group commit, 4 writers, disjoint partitions",
        "commands/s",
        retro("group_commit"),
        None,
        "retro, 1 writer",
        durable,
    ));

    engine_rows(figures, &mut rows);

    // `retro verify`: the replay of a bank history, against the bulk read of the same events.
    if let Some(replay) = figures.get("retro", "verify_replay") {
        rows.push(Row::new(
            format!(
                "verify: replay {} events, each command on its parent's state",
                count(replay.n)
            ),
            "events/s",
            Some(replay.value),
            None,
            "retro durable apply, 1 writer (applies/s)",
            retro("engine_apply"),
        ));
    }

    let mut read_sizes: Vec<u64> = figures
        .all()
        .iter()
        .filter(|f| f.peer == "retro" && f.figure == "read_partition_p50")
        .map(|f| f.n)
        .collect();
    read_sizes.sort_unstable();
    for &n in &read_sizes {
        let large = Some(&n) == read_sizes.last() && read_sizes.len() > 1;
        for p in ["p50", "p99"] {
            let name = format!("read_partition_{p}");
            let target = (large && p == "p50" && n >= 900_000).then_some(Target::Below(50.0));
            let comparison = format!("read 10-event partition {p}, {} events", count(n));
            let retro_read = figures.get_n("retro", &name, n).map(|f| f.value);
            rows.push(Row::new(
                comparison.clone(),
                "us",
                retro_read,
                target,
                "SQLite, indexed",
                figures.get_near("sqlite", &name, n).map(|f| f.value),
            ));
            let es_read = Eventsourcing {
                comparison: &comparison,
                unit: "us",
                retro: retro_read,
                figure: &format!("read_stream_{p}"),
                what: "raw rows (recorder.select_events)",
            };
            es_read.push_near(figures, &mut rows, n, Some(&n) == read_sizes.last());
        }
    }
    if let (Some(&small), Some(&large)) = (read_sizes.first(), read_sizes.last()) {
        if small != large {
            let p50 = |peer: &str, n: u64, near: bool| {
                let found = if near {
                    figures.get_near(peer, "read_partition_p50", n)
                } else {
                    figures.get_n(peer, "read_partition_p50", n)
                };
                found.map(|f| f.value)
            };
            let ratio =
                |peer: &str, near: bool| match (p50(peer, large, near), p50(peer, small, near)) {
                    (Some(l), Some(s)) if s > 0.0 => Some(l / s),
                    _ => None,
                };
            rows.push(Row::new(
                format!("read p50, {} / {} events", count(large), count(small)),
                "x",
                ratio("retro", false),
                Some(Target::AtMost(2.0)),
                "SQLite, same sizes",
                ratio("sqlite", true),
            ));
        }
    }
    if let Some(f) = figures.get("retro", "read_partition_p50_after_gc") {
        rows.push(Row::new(
            format!(
                "read 10-event partition p50, {} events, after gc",
                count(f.n)
            ),
            "us",
            Some(f.value),
            None,
            "SQLite, indexed",
            figures
                .get_near("sqlite", "read_partition_p50", f.n)
                .map(|f| f.value),
        ));
    }

    rows.push(Row::new(
        format!(
            "log walk, first parent ({} checkpoints)",
            count(retro_n("walk_first_parent").unwrap_or(0))
        ),
        "checkpoints/s",
        retro("walk_first_parent"),
        Some(Target::AtLeast(500_000.0)),
        "git rev-list, commit-graph",
        peer("git", "rev_list_walk_commit_graph"),
    ));

    let disk_n = retro_n("disk_bytes_per_event").unwrap_or(0);
    let disk_before = format!("disk per event, {} events, before gc", count(disk_n));
    rows.push(Row::new(
        disk_before.clone(),
        "B/event",
        retro("disk_bytes_per_event"),
        None,
        "git fast-import pack",
        peer("git", "fast_import_pack_bytes_per_event"),
    ));
    Eventsourcing {
        comparison: &disk_before,
        unit: "B/event",
        retro: retro("disk_bytes_per_event"),
        figure: "bytes_per_event",
        what: "store",
    }
    .push_sized(figures, &mut rows);
    rows.push(Row::new(
        format!("disk per event, {} events, after gc", count(disk_n)),
        "B/event",
        retro("disk_bytes_per_event_after_gc"),
        None,
        "git after gc (.git/objects)",
        peer("git", "gc_objects_bytes_per_event"),
    ));
    // SQLite's size per event hardly depends on the size: take its largest database.
    let sqlite_file = figures
        .all()
        .iter()
        .filter(|f| f.peer == "sqlite" && f.figure == "file_bytes_per_event")
        .max_by_key(|f| f.n);
    rows.push(Row::new(
        format!("disk per event, {} events, after gc", count(disk_n)),
        "B/event",
        retro("disk_bytes_per_event_after_gc"),
        None,
        format!(
            "SQLite file ({} events)",
            count(sqlite_file.map_or(0, |f| f.n))
        ),
        sqlite_file.map(|f| f.value),
    ));
    for (name, when) in [
        ("index_bytes_per_event", "before gc"),
        ("index_bytes_per_event_after_gc", "after gc"),
    ] {
        rows.push(Row::new(
            format!("  of which index.sqlite, {when}"),
            "B/event",
            retro(name),
            None,
            "",
            None,
        ));
    }
    scale_rows(figures, &mut rows);
    snapshot_rows(figures, &mut rows);
    memory_rows(figures, &mut rows);
    rows.push(Row::new(
        "max RSS of retro-bench",
        "MiB",
        Some(max_rss_mib),
        None,
        "",
        None,
    ));
    let http_one = retro("http_apply_1");
    rows.push(Row::new(
        "durable applies over HTTP, 1 client",
        "applies/s",
        http_one,
        None,
        "-",
        None,
    ));
    Eventsourcing {
        comparison: "durable applies over HTTP, 1 client",
        unit: "applies/s",
        retro: http_one,
        figure: "bank_1",
        what: "same deposits in-process: load + 1 event + save",
    }
    .push(figures, &mut rows);
    rows.push(Row::new(
        "durable applies over HTTP, 16 clients",
        "applies/s",
        retro("http_apply_16"),
        None,
        "1 client (same run)",
        http_one,
    ));
    rows.push(Row::new(
        "delivery latency, apply to subscriber in another process, p50",
        "us",
        retro("delivery_latency_p50"),
        Some(Target::Below(100_000.0)),
        "-",
        None,
    ));
    rows.push(Row::new(
        "delivery latency, p99",
        "us",
        retro("delivery_latency_p99"),
        None,
        "-",
        None,
    ));
    postgres_rows(figures, &mut rows);
    rows
}

/// Rows holding a retro figure against the Python `eventsourcing` library's, one per backend
/// (SQLite, PostgreSQL): when the peer did not run, its row says n/a and why.
struct Eventsourcing<'a> {
    /// What retro did (the retro row's first cell).
    comparison: &'a str,
    /// The unit of both.
    unit: &'a str,
    /// retro's value.
    retro: Option<f64>,
    /// The driver's figure (see [`es::FIGURES`]).
    figure: &'a str,
    /// What the peer did, for its label.
    what: &'a str,
}

impl Eventsourcing<'_> {
    const BACKENDS: [(&'static str, &'static str); 2] =
        [(es::SQLITE, "SQLite"), (es::POSTGRES, "PostgreSQL")];

    /// One row per backend that ran or was skipped (none when the phase did not run).
    fn push(&self, figures: &Figures, rows: &mut Vec<Row>) {
        for (peer, backend) in Self::BACKENDS {
            let value = figures.get(peer, self.figure).map(|f| f.value);
            self.row(figures, rows, peer, backend, value, String::new());
        }
    }

    /// As [`Self::push`], the peer's figure from a store of about `n` events; a skipped peer
    /// only gets its n/a row when `last` (the largest size).
    fn push_near(&self, figures: &Figures, rows: &mut Vec<Row>, n: u64, last: bool) {
        for (peer, backend) in Self::BACKENDS {
            match figures.get_near(peer, self.figure, n) {
                Some(f) => self.row(figures, rows, peer, backend, Some(f.value), String::new()),
                None if last => self.row(figures, rows, peer, backend, None, String::new()),
                None => {}
            }
        }
    }

    /// As [`Self::push`], the peer's store size in its label.
    fn push_sized(&self, figures: &Figures, rows: &mut Vec<Row>) {
        for (peer, backend) in Self::BACKENDS {
            let found = figures.get(peer, self.figure);
            let size = found.map_or(String::new(), |f| format!(", {} events", count(f.n)));
            self.row(figures, rows, peer, backend, found.map(|f| f.value), size);
        }
    }

    fn row(
        &self,
        figures: &Figures,
        rows: &mut Vec<Row>,
        peer: &str,
        backend: &str,
        value: Option<f64>,
        size: String,
    ) {
        let skipped = figures.skipped(peer);
        if value.is_none() && skipped.is_none() {
            return;
        }
        let mut label = format!(
            "eventsourcing {} on {backend}, {}{size}",
            es::VERSION,
            self.what
        );
        if let Some(reason) = skipped {
            label.push_str(&format!(" (not run: {reason})"));
        }
        rows.push(Row::new(
            self.comparison,
            self.unit,
            self.retro,
            None,
            label,
            value,
        ));
    }
}

/// PostgreSQL 15 with a CAS on a head row, one client (commands/s and average latency in us):
/// from `/work/shared/reference/peers.md` (2026-11-23), not measured in the run.
const POSTGRES_HEAD_CAS_1_CLIENT: (f64, f64) = (1700.0, 580.0);

/// The PostgreSQL depot's rows (phase `postgres`).
fn postgres_rows(figures: &Figures, rows: &mut Vec<Row>) {
    let pg = |name: &str| figures.get("retro-postgres", name);
    let Some(one) = pg("apply_1") else {
        return;
    };
    rows.push(Row::new(
        "PostgreSQL depot: durable apply, 1 writer",
        "applies/s",
        Some(one.value),
        None,
        "PostgreSQL head CAS, 1 client (peers.md, not this run)",
        Some(POSTGRES_HEAD_CAS_1_CLIENT.0),
    ));
    rows.push(Row::new(
        "PostgreSQL depot: durable apply latency p50, 1 writer",
        "us",
        pg("apply_1_p50").map(|f| f.value),
        None,
        "PostgreSQL head CAS, 1 client, average (peers.md)",
        Some(POSTGRES_HEAD_CAS_1_CLIENT.1),
    ));
    for p in ["p50", "p99"] {
        if let Some(delivery) = pg(&format!("delivery_latency_{p}")) {
            rows.push(Row::new(
                format!("PostgreSQL depot: delivery latency, apply to subscriber {p}"),
                "us",
                Some(delivery.value),
                None,
                "retro files depot, over HTTP (this run)",
                figures
                    .get("retro", &format!("delivery_latency_{p}"))
                    .map(|f| f.value),
            ));
        }
    }
    if let Some(writers) = pg("apply_writers") {
        rows.push(Row::new(
            "PostgreSQL depot: durable apply, 8 writers with their own depots",
            "applies/s",
            Some(writers.value),
            None,
            "PostgreSQL head CAS, 4 clients (peers.md, not this run)",
            Some(POSTGRES_HEAD_CAS_4_CLIENTS),
        ));
    }
    if let Some(bulk) = pg("bulk_write") {
        rows.push(Row::new(
            format!("PostgreSQL depot: bulk write ({} events)", count(bulk.n)),
            "events/s",
            Some(bulk.value),
            None,
            "retro files depot, bulk (this run)",
            figures.get("retro", "bulk_write").map(|f| f.value),
        ));
    }
    for p in ["p50", "p99"] {
        if let Some(read) = pg(&format!("read_partition_{p}")) {
            rows.push(Row::new(
                format!(
                    "PostgreSQL depot: read 10-event partition {p}, {} events",
                    count(read.n)
                ),
                "us",
                Some(read.value),
                None,
                "retro files depot, same size (this run)",
                figures
                    .get_near("retro", &format!("read_partition_{p}"), read.n)
                    .map(|f| f.value),
            ));
        }
    }
}

/// PostgreSQL 15 with a CAS on a head row, 4 contending clients (commands/s): from
/// `/work/shared/reference/peers.md` (2026-11-23), not measured in the run.
const POSTGRES_HEAD_CAS_4_CLIENTS: f64 = 880.0;
/// go-retro's `createIdentity` after 25 and after 400 commands (commands/s), from the same page:
/// its cost per apply grows with history.
const GO_RETRO_APPLY_25_400: (f64, f64) = (86.0, 10.9);

/// The engine's rows: durable applies, one writer and several, against the depot and the peers.
fn engine_rows(figures: &Figures, rows: &mut Vec<Row>) {
    let retro = |name: &str| figures.get("retro", name).map(|f| f.value);
    let peer = |peer: &str, name: &str| figures.get(peer, name).map(|f| f.value);
    let Some(one) = retro("engine_apply") else {
        return;
    };
    rows.push(Row::new(
        "durable apply, 1 writer, Rust handler (engine)",
        "applies/s",
        Some(one),
        None,
        "depot durable commit, interleaved",
        retro("engine_ref_durable_commit"),
    ));
    let versus_depot = retro("engine_ref_durable_commit")
        .filter(|d| *d > 0.0)
        .map(|d| one / d);
    rows.push(Row::new(
        "durable apply / depot durable commit, 1 writer",
        "x",
        versus_depot,
        Some(Target::AtLeast(0.8)),
        "",
        None,
    ));
    let sqlite = peer("sqlite", "durable_commit");
    rows.push(Row::new(
        "durable apply, 1 writer (engine)",
        "applies/s",
        Some(one),
        sqlite.map(Target::AtLeast),
        "SQLite WAL synchronous=FULL",
        sqlite,
    ));
    Eventsourcing {
        comparison: "durable apply, 1 writer (engine)",
        unit: "applies/s",
        retro: Some(one),
        figure: "identity_1",
        what: "same commands, Application.save",
    }
    .push(figures, rows);
    for p in ["p50", "p99"] {
        let comparison = format!("durable apply latency {p}, 1 writer");
        rows.push(Row::new(
            comparison.clone(),
            "us",
            retro(&format!("engine_apply_{p}")),
            None,
            "SQLite WAL synchronous=FULL",
            peer("sqlite", &format!("durable_commit_{p}")),
        ));
        Eventsourcing {
            comparison: &comparison,
            unit: "us",
            retro: retro(&format!("engine_apply_{p}")),
            figure: &format!("identity_1_{p}"),
            what: "same commands",
        }
        .push(figures, rows);
    }
    let Some(many) = retro("engine_apply_writers") else {
        return;
    };
    let writers = retro("engine_apply_writers_threads").unwrap_or(0.0);
    rows.push(Row::new(
        format!("durable apply, {writers} writers, disjoint aggregates"),
        "applies/s",
        Some(many),
        None,
        "retro engine, 1 writer",
        Some(one),
    ));
    rows.push(Row::new(
        format!("durable apply, {writers} writers / 1 writer"),
        "x",
        retro("engine_apply_writers_speedup"),
        Some(Target::AtLeast(3.0)),
        "",
        None,
    ));
    rows.push(Row::new(
        format!("durable apply, {writers} writers, disjoint aggregates"),
        "applies/s",
        Some(many),
        None,
        "PostgreSQL head CAS, 4 clients (peers.md, not this run)",
        Some(POSTGRES_HEAD_CAS_4_CLIENTS),
    ));
    Eventsourcing {
        comparison: &format!("durable apply, {writers} writers, disjoint aggregates"),
        unit: "applies/s",
        retro: Some(many),
        figure: "identity_writers",
        what: &format!("same commands, {writers} processes"),
    }
    .push(figures, rows);
    rows.push(Row::new(
        format!("durable apply, {writers} writers, depot group commit"),
        "applies/s",
        Some(many),
        None,
        "depot group commit (this run)",
        retro("group_commit"),
    ));
    for (name, what) in [
        ("engine_apply_writers_reruns", "re-run (attempts > 1)"),
        ("engine_apply_writers_rebased", "rebased without re-running"),
        ("engine_apply_writers_conflicts", "gave up (conflict)"),
    ] {
        rows.push(Row::new(
            format!("  {writers} writers: commands {what}"),
            "commands",
            retro(name),
            None,
            "",
            None,
        ));
    }
}

/// One apply on an existing aggregate in a small and a large depot.
fn scale_rows(figures: &Figures, rows: &mut Vec<Row>) {
    let mut sizes: Vec<u64> = figures
        .all()
        .iter()
        .filter(|f| f.peer == "retro" && f.figure == "engine_scale_apply_p50")
        .map(|f| f.n)
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    let at = |name: &str, n: u64| figures.get_n("retro", name, n).map(|f| f.value);
    for &n in &sizes {
        for p in ["p50", "p99"] {
            rows.push(Row::new(
                format!("apply on an existing aggregate {p}, {} events", count(n)),
                "us",
                at(&format!("engine_scale_apply_{p}"), n),
                None,
                "",
                None,
            ));
        }
        rows.push(Row::new(
            format!("  first apply after Depot::open, {} events", count(n)),
            "us",
            at("engine_scale_first_apply", n),
            None,
            "",
            None,
        ));
    }
    if let (Some(&small), Some(&large)) = (sizes.first(), sizes.last()) {
        if small != large {
            let ratio = match (
                at("engine_scale_apply_p50", large),
                at("engine_scale_apply_p50", small),
            ) {
                (Some(l), Some(s)) if s > 0.0 => Some(l / s),
                _ => None,
            };
            let (early, late) = GO_RETRO_APPLY_25_400;
            rows.push(Row::new(
                format!("apply p50, {} / {} events", count(large), count(small)),
                "x",
                ratio,
                (large >= 900_000).then_some(Target::AtMost(2.0)),
                "go-retro, 400 / 25 commands (peers.md, not this run)",
                Some(early / late),
            ));
        }
    }
}

/// Applies on a small and a long aggregate with snapshots (phase `snapshot`), Rust and exec.
fn snapshot_rows(figures: &Figures, rows: &mut Vec<Row>) {
    let at = |name: &str, n: u64| figures.get_n("retro", name, n).map(|f| f.value);
    let [small, large] = crate::snapshot_bench::EVENTS;
    for (kind, label) in [("rust", "Rust aggregate"), ("exec", "exec handler")] {
        let figure = format!("snapshot_{kind}_apply_p50");
        if at(&figure, small).is_none() && at(&figure, large).is_none() {
            continue;
        }
        for n in [small, large] {
            let plain = (n == large)
                .then(|| at(&format!("snapshot_{kind}_plain_apply_p50"), n))
                .flatten();
            rows.push(Row::new(
                format!("apply p50 with snapshots, {label}, {} events", count(n)),
                "us",
                at(&figure, n),
                None,
                if plain.is_some() {
                    "without snapshots"
                } else {
                    ""
                },
                plain,
            ));
        }
        let ratio = match (at(&figure, large), at(&figure, small)) {
            (Some(l), Some(s)) if s > 0.0 => Some(l / s),
            _ => None,
        };
        rows.push(Row::new(
            format!(
                "apply p50 with snapshots, {label}, {} / {} events",
                count(large),
                count(small)
            ),
            "x",
            ratio,
            Some(Target::AtMost(1.5)),
            "",
            None,
        ));
    }
}

/// Max RSS of each `retro` command on the large depot.
fn memory_rows(figures: &Figures, rows: &mut Vec<Row>) {
    for name in memory::COMMANDS {
        let Some(rss) = figures.get("retro", &format!("cli_{name}_max_rss")) else {
            continue;
        };
        let wall = figures
            .get("retro", &format!("cli_{name}_wall"))
            .map_or(0.0, |f| f.value);
        rows.push(Row::new(
            format!(
                "max RSS of `retro {name}`, {} events (wall {wall:.1} s)",
                count(rss.n)
            ),
            "MiB",
            Some(rss.value),
            (rss.n >= 900_000).then_some(Target::AtMost(memory::LIMIT_MIB)),
            "",
            None,
        ));
    }
}

/// `n` with thousands separators.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && i % 3 == digits.len() % 3 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A value with as many digits as are meaningful: thousands separators from 1,000 up.
pub fn number(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        let s = count(a.round() as u64);
        if v < 0.0 {
            format!("-{s}")
        } else {
            s
        }
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn cells(row: &Row) -> [String; 7] {
    let opt = |v: Option<f64>| v.map(number).unwrap_or_else(|| "n/a".to_owned());
    [
        row.comparison.clone(),
        format!("{} {}", opt(row.retro), row.unit),
        row.target
            .map(Target::show)
            .unwrap_or_else(|| "-".to_owned()),
        if row.peer_label.is_empty() {
            "-".to_owned()
        } else {
            format!("{}: {}", row.peer_label, opt(row.peer))
        },
        row.ratio
            .map(|r| format!("{r:.2}x"))
            .unwrap_or_else(|| "-".to_owned()),
        row.status.show().to_owned(),
        String::new(),
    ]
}

const HEADERS: [&str; 6] = [
    "figure",
    "retro",
    "target",
    "peer (same run)",
    "retro/peer",
    "status",
];

/// The rows as a plain, aligned table.
pub fn text_table(rows: &[Row]) -> String {
    let all: Vec<[String; 7]> = rows.iter().map(cells).collect();
    let mut widths = HEADERS.map(str::len);
    for cells in &all {
        for (w, c) in widths.iter_mut().zip(cells.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
        let mut text = String::new();
        for (i, (c, w)) in cells.iter().zip(widths.iter()).enumerate() {
            // Numbers right-aligned, words left-aligned.
            if i == 1 || i == 4 {
                let _ = write!(text, "{c:>w$}  ");
            } else {
                let _ = write!(text, "{c:<w$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut out, &HEADERS);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(
        &mut out,
        &rule.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    for cells in &all {
        line(
            &mut out,
            &cells[..6].iter().map(String::as_str).collect::<Vec<_>>(),
        );
    }
    out
}

/// The rows as a Markdown table.
pub fn markdown_table(rows: &[Row]) -> String {
    let mut out = format!("| {} |\n", HEADERS.join(" | "));
    out.push_str("| --- | ---: | --- | --- | ---: | --- |\n");
    for row in rows {
        let cells = cells(row);
        let cells: Vec<String> = cells[..6].iter().map(|c| c.replace('|', "\\|")).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

/// Everything `docs/benchmarks.md` says.
pub struct Document<'a> {
    /// The machine.
    pub machine: &'a Machine,
    /// When the run started (RFC 3339).
    pub date: String,
    /// The command to reproduce the run.
    pub command: String,
    /// How long the whole run took.
    pub elapsed: Duration,
    /// Whether the quick sizes were used.
    pub quick: bool,
    /// The comparison rows.
    pub rows: &'a [Row],
    /// Every figure.
    pub figures: &'a Figures,
    /// Problems worth a line (a peer that failed, say).
    pub warnings: &'a [String],
}

impl Document<'_> {
    /// The Markdown text.
    pub fn render(&self) -> String {
        let m = self.machine;
        let mut out = String::new();
        let _ = writeln!(out, "# retro benchmarks\n");
        let _ = writeln!(
            out,
            "Generated by `retro-bench` (crates/tools/bench); overwritten on each run. Compare retro with \
             the peers measured in the same run (the ratios), not with figures from other runs: \
             these machines are shared and noisy (10-30% run to run).\n"
        );
        let _ = writeln!(out, "- date: {}", self.date);
        let _ = writeln!(
            out,
            "- sizes: {}",
            if self.quick {
                "quick (`--quick`)"
            } else {
                "full"
            }
        );
        let _ = writeln!(out, "- run time: {:.0} s", self.elapsed.as_secs_f64());
        let _ = writeln!(out, "- reproduce: `{}`", self.command);
        let _ = writeln!(out, "- CPUs (nproc): {}", m.nproc);
        let _ = writeln!(out, "- CPU model: {}", m.cpu);
        let _ = writeln!(out, "- memory: {}", m.memory);
        let _ = writeln!(out, "- kernel: {}", m.kernel);
        let _ = writeln!(out, "- scratch filesystem: {}", m.filesystem);
        for w in self.warnings {
            let _ = writeln!(out, "- warning: {w}");
        }
        let _ = writeln!(out, "\n## Results\n");
        out.push_str(&markdown_table(self.rows));
        let _ = writeln!(
            out,
            "\nPASS/MISS: against the targets of the benchmark issue (bulk write >= 100,000 \
             events/s; a 10-event partition read in 1,000,000 events with p50 under 50 us and \
             within 2x of the 10,000-event depot; first-parent log walk >= 500,000 \
             checkpoints/s; durable applies through the engine, one writer, at least 80% of the \
             depot's durable commit rate and at least SQLite's WAL synchronous=FULL rate; 4 \
             writers on disjoint aggregates at least 3x one writer; one apply on an existing \
             aggregate in 1,000,000 events within 2x of 1,000 events; `retro log`, `events`, \
             `export`, `fsck`, `gc` and `import` on 1,000,000 events within 256 MiB resident). \
             Rows marked `-` have no target and are there for the comparison. The ratio is \
             retro / peer: above 1 is better for rates, below 1 is better for latencies and \
             sizes. Rows citing peers.md hold a figure measured on 2026-11-23, not in this run."
        );
        out.push_str(METHOD);
        let _ = writeln!(out, "\n## Every figure of the run\n");
        let _ = writeln!(out, "| source | figure | value | unit | n | note |");
        let _ = writeln!(out, "| --- | --- | ---: | --- | ---: | --- |");
        for f in self.figures.all() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                f.peer,
                f.figure,
                number(f.value),
                f.unit,
                count(f.n),
                f.note.as_deref().unwrap_or("").replace('|', "\\|")
            );
        }
        out
    }
}

const METHOD: &str = "
## Method

- **Workload** (as `retro-peers`): one command = 3 events of ~60-byte JSON over 2 partitions
  (2 on `identity/<n>`, 1 on `session/s1`), an affix, and a checkpoint whose message is the
  ~100-byte command JSON. Every event body carries the command's index, so nothing is deduplicated.
- **Scratch directory**: created with `tempfile` in the current directory (or `--dir`), so fsync
  costs are those of the filesystem above; every depot is removed once measured. `retro-peers` runs
  first, in the same run, with its scratch directory in the same place.
- **Bulk write**: `Depot::commit_many` with `Base::Tip` requests, 1,000 commands per call (one fsync
  per call); time spent inside `commit_many` (request building excluded, index catch-up included).
- **Durable commit**: one thread, `Depot::commit` one command at a time, each expecting the head the
  previous one produced (`Base::Expect`), durable when it returns; 50 unmeasured commits first. The
  disk's own rate (append 1 KiB + `fdatasync`) is measured by the bench in the same scratch directory,
  just before, and by `retro-peers fsync`.
- **Group commit**: 4 threads on disjoint partitions (`identity/w<t>-<i>`, `session/s<t+1>`), each
  request based on the head read just before it with `rebase = true`; the rate counts committed
  requests over the wall time of the 4 threads (conflicts, if any, are reported in the figure's note).
- **Partition read**: depots built with the bulk path where command `i` writes 2 events to
  `identity/<i mod P>` with P = commands / 5, so every identity partition holds exactly 10 events
  spread over the whole history (SQLite's read database keeps them adjacent). Freshly opened depot;
  as many unmeasured reads as measured ones first; `Depot::partition_events` of a random partition,
  in-process (it checks the index against `HEAD` on every call). Percentiles are nearest-rank.
- **Log walk**: `Depot::walk_ids(head, HistoryOrder::FirstParent, ...)` over the bulk depot's
  checkpoints, freshly opened depot, median of 3 walks: ids, parents and dates come from the
  commit-graph (`<depot>/commit-graph`, appended by the bulk build's commits; opening it maps the
  file and reads its header), as `git rev-list` reads git's commit-graph; no checkpoint object is
  read. `walk_first_parent_read` (in the list of figures) is the same walk through `Depot::walk`,
  each checkpoint read, hash-verified and decoded, as `retro log` does for what it prints.
- **Disk use**: apparent size of every file in the depot directory after the bulk build of the large
  read depot, `index.sqlite` (with `-wal`/`-shm`) included and also shown on its own; then
  `Depot::gc(&GcOptions::default(), ...)` (repack, no pruning) and again. Git: `.git/objects` after
  `git gc`; SQLite: the database file.
- **Engine, one writer**: `Engine::apply` with a Rust handler: kind `identity`, command `create`
  emits `IdentityCreated` and `EmailVerificationRequested` to `identity/<i>` and
  `SessionCommandApplied` to `session/s1` through `ctx.emit_to` (the workload's 3 events over 2
  partitions), each apply durable on return; time inside `apply` (command parsing, rehydration
  through the partition index, the handler, the commit). 50 unmeasured applies, then blocks of 100
  applies alternating with blocks of 100 `Depot::commit`s of the depot workload on a second depot
  in the same directory, so that the ratio compares the two under the same disk conditions.
- **Engine, 4 writers**: 4 threads sharing one `Engine`, each applying `create` on its own
  identities (`identity/w<t>-<i>`) in its own session (`s<t+1>`, so its own session partition);
  applies over the wall time of the 4 threads. Commands that ran more than once (`attempts` > 1),
  were re-parented without re-running (`rebased`) or gave up are counted. PostgreSQL's figure (a
  head-row CAS with 4 contending clients) is the one in `peers.md`, not measured in the run.
- **Engine, scale**: depots of 990 and 999,990 events built with the bulk path (10-event identity
  partitions spread over the whole history, 1 session event per command in `session/s1`), then
  opened afresh; single applies of `requestVerification` (3 events, same shape) on the existing
  identities `identity/0..65` in turn, in session `s1`: the first apply after `Depot::open` is
  reported alone, then 50 unmeasured, then the measured ones (the same aggregates, growing the same
  way, in both depots). go-retro's ratio is its apply rate after 25 over after 400 commands.
- **Verify** (`--only verify`): a bank history (opens of 1,000 accounts, then deposits and
  transfers among them: 100,000 commands; 5,000 over 100 accounts with `--quick`) made by the
  engine in memory and copied into a files depot with `sync_from`; then `engine::replay::Replay`,
  what `retro verify` runs, re-runs every command on its parent's state and compares event ids
  (the history walk excluded, the mirror's index catch-up included). Figures in events/s and
  commands/s.
- **Snapshots** (phase `snapshot`): a fresh depot per case whose `counters/c` holds 10 or 10,000
  events (bulk-committed, 1,000 a checkpoint); a Rust aggregate registered with
  `snapshot_every(100)`, and an exec handler (`sh`, returns `\"state\"`, `\"snapshot_every\": 100`);
  one unmeasured apply, then durable applies one at a time. Compared with the same 10,000-event
  apply without snapshots.
- **Upcasting** (phase `upcast`): `Engine::load` of one partition of schema-version-1 `Deposited`
  events (10,000; the exec case fewer, one process each) read with no upcaster, a declarative one
  (v1 -> v2: a renamed field and a default) and an exec one (`sh`), each from a fresh engine, and
  the exec case again from the same engine (its results cached in memory). Figures:
  `upcast_read_*_ms` and the cost over the plain read per event, `upcast_read_*_us_per_event`.
- **Redaction** (phase `redact`): a depot that seals its events (the default of `retro init`)
  bulk-built with the workload's commands (999,999 events; `--quick`: 30,000), then single events
  of random identities redacted one `Depot::redact` call at a time (intent fsynced, the data's
  pack record overwritten in place and fsynced, the redaction checkpoint committed): p50 and p99.
  Then gc and the same disk figure as the `disk` phase (`disk_bytes_per_event_sealed_after_gc`),
  so that what erasability costs in bytes stands beside the plain depot's. The other phases build
  plain-event depots (`configure_events(false)`): the peers hold the same JSON, unerasable.
- **Memory of the command line** (in the default run, or alone with `--only memory`: about 2.5
  minutes): a JSON-lines file of 333,330 workload commands (999,990 events, 10-event identity
  partitions) is imported into a fresh depot (`retro init`: sealed events, the default) with
  `retro import` (batches of 1,000), then
  `retro log` and `retro events` (stdout to /dev/null), `retro export -o FILE`, `retro fsck` and
  `retro gc` run on it, each under GNU `/usr/bin/time -v` (Debian package `time`): max RSS as the
  kernel counts it for that process (pages of memory-mapped files it touched included), and wall
  time. Not `wait4`: Linux carries the peak RSS of a process's memory before `execve` into its
  count, and a child spawned by the bench starts as a copy of the bench. It needs `retro` built
  next to `retro-bench` (`make bench` builds both).
- **Memory of the bench**: the bench process's max RSS (`getrusage`), over the whole run; pages of
  memory-mapped packs that were touched count in it.
- **PostgreSQL depot** (phase `postgres`): a throw-away PostgreSQL 15 cluster (Debian's package,
  `crates/tools/pgtest`) on 127.0.0.1 in the scratch machine's temporary directory, `fsync=on`,
  `synchronous_commit=on`, started by the bench. One writer: `Engine::apply` of identity `create`
  over `depot_postgres::open` (50 unmeasured first), each apply committed before it returns.
  8 writers: 8 threads, each with its own `depot_postgres::open` (own connections, own engine:
  application servers on other hosts, as far as the depot can tell), disjoint identities, own
  session. Reads: a depot of the read shape (10-event identity partitions over the whole history)
  bulk-loaded with `commit_many` (1,000 commands per call), then a fresh `depot_postgres::open`;
  `partition_events` of random partitions, as many unmeasured first. Peers' PostgreSQL figures come from peers.md (a head-row CAS per command), not this run.
- **Python `eventsourcing`** (phase `eventsourcing`; the event-sourcing library users pick
  instead): version 9.5.6 from PyPI with the binary psycopg build, installed by the bench into
  `target/bench-venv` (`python3 -m venv`, then `pip install \"eventsourcing[postgres]==9.5.6\"
  \"psycopg[binary]\"`; reused while it holds those versions), driven by
  `crates/tools/peers/python/eventsourcing_peer.py` as a subprocess that prints its figures as one
  JSON object. SQLite: the library's `eventsourcing.sqlite` persistence on a file in the scratch
  directory, WAL, `synchronous=FULL` (SQLite's default, read back and checked: one fsync of the
  WAL per commit); PostgreSQL: `eventsourcing.postgres` on a throw-away server as the PostgreSQL
  depot's (`fsync=on`, `synchronous_commit=on`; the library takes `LOCK TABLE ... IN EXCLUSIVE
  MODE` per insert, which serialises writers). Snapshots and the aggregate cache off (its
  defaults); the library adds its own timestamp, version and topic to each event and keeps no
  checkpoint or affix. The same workload means: the same commands in the same number, with
  the same event attributes as retro's JSON bodies. Identity: per command a new `Identity`
  aggregate (`IdentityCreated`, `EmailVerificationRequested`) and one `SessionCommandApplied`
  on the writer's `Session` aggregate (kept in memory, as retro's engine keeps its head), saved
  by one `Application.save(identity, session)`: one transaction, durable on return; 50
  unmeasured first; as many commands as the engine's one writer, and 4 writer *processes* (the
  library is a library: processes, not threads sharing one engine) each with its own
  `Application`, identities and session, as many commands each as the engine's writers, over the
  wall time from a common start. Bank: the HTTP bench's single client's deposits (same number,
  round-robin over the same number of accounts, opened first), each `repository.get` (every event
  of the account decoded and replayed), `deposit`, `save`, in-process (retro's figure includes
  its HTTP round trip). Reads and disk: a store of the read shape (10-event identity streams over
  the whole history, 1 session event per command) written through the library's bulk path (the
  application's mapper encodes the domain events, `recorder.insert_events` stores 15,000 per
  call, one transaction each), then a fresh `Application`'s `recorder.select_events` of random
  10-event streams (raw rows, not decoded), as many unmeasured first; 1,000,000 events (10,000
  with `--quick`, labelled). Disk: SQLite's file with `-wal` and `-shm` after
  `PRAGMA wal_checkpoint(TRUNCATE)`; PostgreSQL's `pg_total_relation_size` of the library's tables
  (heap, TOAST, indexes). When Python, its venv module, PyPI or PostgreSQL are missing, the rows
  say n/a and why; a driver that runs and fails fails the run. The time it took is the
  `wall` figure of each backend.

## How the storage figures were reached, and what is still missing

- **Open costs the same at any size.** The active pack (up to 8 MiB, large right after an import)
  used to be scanned by every process at open. Its key log `pack-N.keys` (derived, written after
  the fsync it describes, see crash-safety.md) lists where its objects start; an open reads it and
  scans at most 32 KiB of the pack (`Depot::pack_scan_work`, tested after 2,000 commits and after a
  4,000-command import). Cost: one unsynced write per 32 KiB of commits; fsck and gc scan the
  skipped part for damage instead.
- **Partition read.** Each event row of the partition index keeps a location hint (pack, offset),
  so a read goes straight to the record, verified, instead of probing every pack's index for the
  id (what made the 1,000,000-event read slower than the 10,000-event one: dozens of packs). gc
  rewrites the hints for its new pack. Sealed packs build their id filter only once they were
  probed one time per 16 entries, so a short process never pays for reading a whole index. Still
  missing: the read costs one `pread`, a crc, an inflate and a SHA-256 per event plus the SQLite
  query with two joins; SQLite's indexed read of the same rows is one B-tree range in its page
  cache. Reaching 1.5x of it needs events read from a mapped or cached region and a leaner query.
- **Durable commit.** Per-commit system calls went from about 120 to about 60 (the boot id, host
  name, pack writer, journal state file and commit-graph file are opened once; a ref read is one
  `pread`; refs are read once per batch; directories are created only when missing; the lock
  note is fixed-width, so no truncate). The remaining gap to SQLite is the fsync itself: an
  append plus `fdatasync` (this run's `fsync` rows) flushes file size metadata every time, where
  SQLite's WAL overwrites its own preallocated file. The disk's overwrite rate measured on this
  machine (7,051 syncs/s against 5,540 for appends) is 1.17x SQLite's rate, so one fsync per
  command cannot reach 1.2x SQLite here even with a preallocated journal; that design (and its
  torn-write tests) is not built yet.
- **Log walk.** The commit-graph file (`<depot>/commit-graph`: fixed-width rows of parents,
  generation, date and a partition bloom filter) answers walks without reading objects; see the
  Log walk item above.
- **Disk.** Not reached, but halved. What changed: `retro gc` writes *version 2* packs
  (format.md, Packs): a zstd dictionary of up to 16 KiB trained on the pack's own objects is its
  first record; each object is transcoded (every `sha256:` + 64 hex digits becomes one marker byte
  and the 32 raw bytes, so ids take half their hex size) and compressed against the dictionary,
  which catches the names, partitions, keys and dates that repeat across objects (zlib, working
  inside one ~100-byte object, found almost nothing); records no longer carry their id (it is the
  hash of what they decode to, and every read hashes anyway); the index keeps a 10-byte id prefix
  and a 48-bit offset (16 bytes an entry instead of 40), a lookup decoding the record it finds to
  confirm the whole id. gc also folds each reflog into a zstd frame (format.md, Compacted
  reflogs). What it cost: gc trains a dictionary (a fraction of a second) and reads version 2
  records twice (listing ids decodes them); a lookup in a version 2 pack hashes the record it
  finds. What remains: the SQLite partition index (32-byte event ids and hints per event,
  checkpoint rows with their ids indexed twice, B-tree overhead) is now the largest part, then
  the commit-graph's 80-byte rows; beating the SQLite table needs a compact partition index of
  retro's own (delta-coded rows per partition), not built yet.
- **Writers.** 4 writer processes on one files depot still serialize on the depot lock (one fsync
  each); sharing fsyncs across processes needs a leader that drains other processes' requests,
  not built yet. PostgreSQL writers likewise.
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(999), "999");
        assert_eq!(number(123_456.7), "123,457");
        assert_eq!(number(12.345), "12.3");
        assert_eq!(number(1.5), "1.50");
    }

    #[test]
    fn status_follows_the_target() {
        let row = Row::new(
            "x",
            "us",
            Some(40.0),
            Some(Target::Below(50.0)),
            "p",
            Some(20.0),
        );
        assert_eq!((row.status, row.ratio), (Status::Pass, Some(2.0)));
        let row = Row::new("x", "us", Some(60.0), Some(Target::Below(50.0)), "p", None);
        assert_eq!((row.status, row.ratio), (Status::Miss, None));
        assert_eq!(
            Row::new("x", "us", None, None, "p", None).status,
            Status::Missing
        );
    }
}
