//! Measures retro's engine: `Engine::apply` with a Rust handler on the workload, durable on
//! return, for one writer and for 4 writers on disjoint aggregates; and the latency of one apply
//! on an existing aggregate in a small and in a large depot.
//!
//! The domain is kind `identity`: command `create` emits `IdentityCreated` and
//! `EmailVerificationRequested` to the aggregate's own partition and `SessionCommandApplied` to
//! `session/<s>` through `ctx.emit_to` (the depot workload's 3 events over 2 partitions, ~60 bytes
//! each); command `requestVerification` does the same shape on an existing identity.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use depot::{Base, Depot, ObjectId};
use engine::{Aggregate, DomainError, DomainEvent, Engine, Manifest, RecordedEvent};
use serde::{Deserialize, Serialize};

use benchkit::{per_second, Figure, Percentiles};

use crate::depot_bench::{bulk_load, Stage};
use crate::figures::Figures;
use crate::workload::{self, Shape, EVENTS_PER_COMMAND};

/// Where retro's own figures are filed.
const RETRO: &str = "retro";
/// Applies (and depot commits) per block when the two are interleaved.
const BLOCK: u64 = 100;
/// Unmeasured applies before a measurement.
const WARMUP: u64 = 50;
/// The aggregates the scale measurement applies to, `identity/0..SCALE_AGGREGATES`: as many as
/// the 1,000-event depot holds, so both depots see the very same aggregates grow the same way.
const SCALE_AGGREGATES: u64 = 66;

/// The sizes of the engine measurements.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Durable applies by one writer (as many depot commits are interleaved with them, and as
    /// many by each of the writers).
    pub applies: u64,
    /// Writer threads in the group measurement (each makes `applies` applies).
    pub writers: u64,
    /// Events in the small and the large depot of the scale measurement.
    pub scale_events: [u64; 2],
    /// Measured applies per depot in the scale measurement.
    pub scale_applies: u64,
}

impl Sizes {
    /// The full run.
    pub fn full() -> Self {
        Self {
            applies: 2000,
            writers: 4,
            scale_events: [1000, 1_000_000],
            scale_applies: 1000,
        }
    }

    /// The quick run.
    pub fn quick() -> Self {
        Self {
            applies: 500,
            writers: 4,
            scale_events: [1000, 100_000],
            scale_applies: 300,
        }
    }
}

// The domain: typed events and the identity aggregate.

/// An identity was created.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IdentityCreated {
    identity: String,
    email: String,
}
impl DomainEvent for IdentityCreated {
    const NAME: &'static str = "IdentityCreated";
}

/// A verification mail was requested.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EmailVerificationRequested {
    identity: String,
    #[serde(rename = "requestedAt")]
    requested_at: String,
}
impl DomainEvent for EmailVerificationRequested {
    const NAME: &'static str = "EmailVerificationRequested";
}

/// A verification mail was queued (the second event of `requestVerification`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct VerificationMailQueued {
    identity: String,
    email: String,
    seq: u64,
}
impl DomainEvent for VerificationMailQueued {
    const NAME: &'static str = "VerificationMailQueued";
}

/// The session's record of a command.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionCommandApplied {
    session: String,
    identity: String,
    seq: u64,
    ok: bool,
}
impl DomainEvent for SessionCommandApplied {
    const NAME: &'static str = "SessionCommandApplied";
}

/// The write side's view of an identity.
#[derive(Debug, Clone, Default)]
struct Identity {
    identity: String,
    email: String,
    requests: u64,
}

impl Aggregate for Identity {
    fn apply(&mut self, event: &RecordedEvent) {
        if let Some(Ok(e)) = event.decode::<IdentityCreated>() {
            self.identity = e.identity;
            self.email = e.email;
        } else if event.name == EmailVerificationRequested::NAME {
            self.requests += 1;
        }
    }
}

fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The `identity` kind with its commands `create {identity, email, seq}` and
/// `requestVerification {seq}`.
pub fn identity_manifest() -> Result<Manifest> {
    let mut manifest = Manifest::new();
    manifest
        .aggregate::<Identity>("identity")?
        .command("create", |identity, ctx| {
            if !identity.identity.is_empty() {
                return Err(DomainError::new(
                    "already_exists",
                    format!("{} already exists", ctx.path()),
                ));
            }
            let id: String = ctx.param("identity")?;
            let email: String = ctx.param("email")?;
            let seq: u64 = ctx.param("seq")?;
            let session = ctx.session().to_owned();
            ctx.emit(&IdentityCreated {
                identity: id.clone(),
                email,
            })?;
            ctx.emit(&EmailVerificationRequested {
                identity: id.clone(),
                requested_at: now_text(),
            })?;
            ctx.emit_to(
                &format!("session/{session}"),
                &SessionCommandApplied {
                    session: session.clone(),
                    identity: id,
                    seq,
                    ok: true,
                },
            )
        })?
        .command("requestVerification", |identity, ctx| {
            if identity.identity.is_empty() {
                return Err(DomainError::new(
                    "not_found",
                    format!("{} does not exist", ctx.path()),
                ));
            }
            let seq: u64 = ctx.param("seq")?;
            let session = ctx.session().to_owned();
            ctx.emit(&EmailVerificationRequested {
                identity: identity.identity.clone(),
                requested_at: now_text(),
            })?;
            ctx.emit(&VerificationMailQueued {
                identity: identity.identity.clone(),
                email: identity.email.clone(),
                seq,
            })?;
            ctx.emit_to(
                &format!("session/{session}"),
                &SessionCommandApplied {
                    session: session.clone(),
                    identity: identity.identity.clone(),
                    seq,
                    ok: true,
                },
            )
        })?;
    Ok(manifest)
}

/// The payload of `create` on `path`, with `seq` making every event body unique.
pub fn create_payload(path: &str, seq: u64) -> String {
    format!(
        r#"{{"path":"{path}","name":"create","params":{{"identity":"id-{seq:08}","email":"user{seq}@example.org","seq":{seq}}}}}"#
    )
}

/// The payload of `requestVerification` on `path`.
fn verify_payload(path: &str, seq: u64) -> String {
    format!(r#"{{"path":"{path}","name":"requestVerification","params":{{"seq":{seq}}}}}"#)
}

/// An engine with the identity domain over a depot.
fn engine_over(depot: Depot) -> Result<Engine> {
    Ok(Engine::new(Arc::new(depot), identity_manifest()?))
}

/// Applies `payload` in `session`, checking that it wrote the workload's 3 events.
fn apply_one(engine: &Engine, session: &str, payload: &str) -> Result<engine::Applied> {
    let applied = engine
        .apply(session, payload.as_bytes())
        .with_context(|| format!("applying {payload}"))?;
    ensure!(
        applied.events as u64 == EVENTS_PER_COMMAND && applied.partitions.len() == 2,
        "{payload} wrote {} events to {:?}",
        applied.events,
        applied.partitions
    );
    Ok(applied)
}

/// Runs the engine measurements: `engine` (one writer and `writers` writers) and
/// `engine-scale` (one apply on an existing aggregate, small and large depot), as wanted.
pub fn run(
    sizes: &Sizes,
    one_and_group: bool,
    scale: bool,
    scratch: &Path,
    figures: &mut Figures,
) -> Result<()> {
    let stage = Stage::new(scratch);
    if one_and_group {
        let dirs = [
            stage.dir("engine-depot")?,
            stage.dir("engine-one")?,
            stage.dir("engine-writers")?,
        ];
        durable_applies(&dirs, sizes, figures)?;
        for dir in &dirs {
            stage.remove(dir)?;
        }
    }
    if scale {
        let dirs = sizes
            .scale_events
            .map(|events| stage.dir(&format!("engine-scale-{events}")));
        let [small, large] = dirs;
        let dirs = [small?, large?];
        scale_depots(&dirs, sizes, figures)?;
        for dir in &dirs {
            stage.remove(dir)?;
        }
    }
    Ok(())
}

/// Counts of the writers' outcomes.
#[derive(Default)]
struct Outcomes {
    applied: AtomicU64,
    rerun_commands: AtomicU64,
    reruns: AtomicU64,
    rebased: AtomicU64,
    conflicts: AtomicU64,
}

/// Applies `count` `create`s from `first` on in each of `writers` threads sharing `engine`,
/// writer `t` on `identity/w<t>-<i>` in session `s<t+1>`; returns the wall time.
fn writers_round(
    engine: &Engine,
    writers: u64,
    first: u64,
    count: u64,
    outcomes: &Outcomes,
) -> Result<Duration> {
    let start = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = (0..writers)
            .map(|writer| {
                scope.spawn(move || -> Result<()> {
                    let session = format!("s{}", writer + 1);
                    for i in first..first + count {
                        let payload = create_payload(
                            &format!("identity/w{writer}-{i}"),
                            (writer + 1) * 100_000_000 + i,
                        );
                        match engine.apply(&session, payload.as_bytes()) {
                            Ok(a) => {
                                outcomes.applied.fetch_add(1, Ordering::Relaxed);
                                if a.attempts > 1 {
                                    outcomes.rerun_commands.fetch_add(1, Ordering::Relaxed);
                                    outcomes
                                        .reruns
                                        .fetch_add(u64::from(a.attempts - 1), Ordering::Relaxed);
                                }
                                if a.rebased {
                                    outcomes.rebased.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Err(e) if e.is_conflict() => {
                                outcomes.conflicts.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => return Err(e).context(format!("writer {writer}, apply {i}")),
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        benchkit::join_all(handles.into_iter().map(|h| h.join()), "a writer")
    })?;
    Ok(start.elapsed())
}

/// a. and b. Three depots in the same directory, measured in rounds so that all three see the
/// same disk at the same moments: [`BLOCK`] `Depot::commit`s of the depot workload (the
/// reference), [`BLOCK`] `Engine::apply`s of `create` on fresh identities by one writer, then
/// `writers` threads each applying [`BLOCK`] on their own identities and session. Every commit
/// and apply is durable on return.
fn durable_applies(dirs: &[PathBuf; 3], sizes: &Sizes, figures: &mut Figures) -> Result<()> {
    let (n, writers) = (sizes.applies, sizes.writers);
    eprintln!(
        "retro-bench: durable applies (engine, Rust handler): 1 writer x {n} and {writers} \
         writers x {n}, in rounds of {BLOCK} with {n} depot commits"
    );
    let depot = crate::workload::init_plain(&dirs[0])?;
    let one = engine_over(crate::workload::init_plain(&dirs[1])?)?;
    let many = engine_over(crate::workload::init_plain(&dirs[2])?)?;
    let mut head: Option<ObjectId> = None;
    let mut commit = |i: u64| -> Result<Duration> {
        let request = workload::request(i, Shape::Fresh, Base::Expect(head))?;
        let start = Instant::now();
        let committed = depot
            .commit(request)
            .with_context(|| format!("durable commit of command {i}"))?;
        let elapsed = start.elapsed();
        head = Some(committed.checkpoint);
        Ok(elapsed)
    };
    let apply = |i: u64| -> Result<(Duration, u32)> {
        let payload = create_payload(&format!("identity/{i}"), i);
        let start = Instant::now();
        let applied = apply_one(&one, "s1", &payload)?;
        Ok((start.elapsed(), applied.attempts))
    };
    let warmup = Outcomes::default();
    for i in 0..WARMUP {
        commit(i)?;
        apply(i)?;
    }
    writers_round(&many, writers, 0, WARMUP / 5, &warmup)?;

    let outcomes = Outcomes::default();
    let mut commit_samples = Vec::with_capacity(usize::try_from(n)?);
    let mut apply_samples = Vec::with_capacity(usize::try_from(n)?);
    let mut one_reruns = 0u64;
    let mut many_time = Duration::ZERO;
    let mut next = WARMUP;
    while next < WARMUP + n {
        let end = (next + BLOCK).min(WARMUP + n);
        for i in next..end {
            commit_samples.push(commit(i)?);
        }
        for i in next..end {
            let (elapsed, attempts) = apply(i)?;
            apply_samples.push(elapsed);
            one_reruns += u64::from(attempts.saturating_sub(1));
        }
        many_time += writers_round(&many, writers, next, end - next, &outcomes)?;
        next = end;
    }
    ensure!(one_reruns == 0, "one writer re-ran {one_reruns} commands");
    let commit_rate = per_second(n, commit_samples.iter().sum());
    let one_rate = per_second(n, apply_samples.iter().sum());
    let pc = Percentiles::of(&mut commit_samples);
    let pa = Percentiles::of(&mut apply_samples);
    let note = format!(
        "Engine::apply of identity create (Rust handler: 2 events to identity/<i>, 1 to \
         session/s1 via emit_to), one thread, durable on return; rounds of {BLOCK} with the \
         depot's commits and the {writers} writers; time inside apply"
    );
    figures.push(Figure::new(RETRO, "engine_apply", "applies/s", one_rate, n).note(note.clone()));
    figures.push(Figure::new(RETRO, "engine_apply_p50", "us", pa.p50_us, n).note(note.clone()));
    figures.push(Figure::new(RETRO, "engine_apply_p99", "us", pa.p99_us, n).note(note));
    let note = format!(
        "Depot::commit of the same workload, Base::Expect(previous head), in rounds of {BLOCK} \
         with the engine's applies; time inside commit"
    );
    figures.push(
        Figure::new(
            RETRO,
            "engine_ref_durable_commit",
            "commands/s",
            commit_rate,
            n,
        )
        .note(note.clone()),
    );
    figures
        .push(Figure::new(RETRO, "engine_ref_durable_commit_p50", "us", pc.p50_us, n).note(note));

    let applied = outcomes.applied.into_inner();
    let rerun_commands = outcomes.rerun_commands.into_inner();
    let reruns = outcomes.reruns.into_inner();
    let rebased = outcomes.rebased.into_inner();
    let conflicts = outcomes.conflicts.into_inner();
    let many_rate = per_second(applied, many_time);
    let attempted = writers * n;
    let note = format!(
        "{writers} threads sharing one Engine, each on its own identities (identity/w<t>-<i>) \
         and session (s<t+1>), {BLOCK} applies each per round; wall time of the rounds; \
         {applied} applied, {rebased} rebased without re-running, {rerun_commands} re-run \
         (attempts > 1, {reruns} extra runs), {conflicts} gave up (conflict)"
    );
    figures.push(
        Figure::new(
            RETRO,
            "engine_apply_writers",
            "applies/s",
            many_rate,
            applied,
        )
        .note(note.clone()),
    );
    figures.push(
        Figure::new(
            RETRO,
            "engine_apply_writers_threads",
            "threads",
            writers as f64,
            applied,
        )
        .note("writer threads of engine_apply_writers"),
    );
    figures.push(
        Figure::new(
            RETRO,
            "engine_apply_writers_speedup",
            "x",
            if one_rate > 0.0 {
                many_rate / one_rate
            } else {
                0.0
            },
            applied,
        )
        .note("applies/s of the writers over the one writer's, measured in the same rounds"),
    );
    for (name, value) in [
        ("engine_apply_writers_reruns", rerun_commands),
        ("engine_apply_writers_rebased", rebased),
        ("engine_apply_writers_conflicts", conflicts),
    ] {
        figures
            .push(Figure::new(RETRO, name, "commands", value as f64, attempted).note(note.clone()));
    }
    Ok(())
}

/// One depot of the scale measurement, opened.
struct ScaleDepot {
    stored: u64,
    engine: Engine,
    opened: Duration,
    first: Duration,
    samples: Vec<Duration>,
}

/// c. Builds depots of about `sizes.scale_events` events with the bulk path (10-event identity
/// partitions spread over the whole history), opens them afresh, and measures single applies of
/// `requestVerification` on the existing identities `identity/<i mod 66>` in session `s1`: the
/// first one after opening, then [`WARMUP`] unmeasured ones, then `sizes.scale_applies` measured
/// ones in rounds alternating between the depots (so both see the same disk conditions).
fn scale_depots(dirs: &[PathBuf; 2], sizes: &Sizes, figures: &mut Figures) -> Result<()> {
    for (dir, events) in dirs.iter().zip(sizes.scale_events) {
        let commands = workload::read_commands(events);
        let stored = commands * EVENTS_PER_COMMAND;
        ensure!(
            workload::read_partitions(events) >= SCALE_AGGREGATES,
            "a depot of {stored} events has fewer than {SCALE_AGGREGATES} identities"
        );
        eprintln!("retro-bench: engine scale: building a depot of {stored} events");
        let depot = crate::workload::init_plain(dir)?;
        bulk_load(
            &depot,
            commands,
            Shape::for_reads(events),
            &format!("engine depot of {stored} events"),
        )?;
    }
    let path = |i: u64| format!("identity/{}", i % SCALE_AGGREGATES);
    // Event bodies must not repeat those of the bulk history: seq starts past it.
    let seq = |i: u64| 1_000_000_000 + i;
    let mut depots = Vec::new();
    for (dir, events) in dirs.iter().zip(sizes.scale_events) {
        let stored = workload::read_commands(events) * EVENTS_PER_COMMAND;
        let start = Instant::now();
        let engine = engine_over(Depot::open(dir)?)?;
        let opened = start.elapsed();
        let start = Instant::now();
        apply_one(&engine, "s1", &verify_payload(&path(0), seq(0)))?;
        let first = start.elapsed();
        depots.push(ScaleDepot {
            stored,
            engine,
            opened,
            first,
            samples: Vec::new(),
        });
    }
    let applies = sizes.scale_applies;
    eprintln!("retro-bench: engine scale: {applies} applies on existing identities in each depot");
    for depot in &depots {
        for i in 1..=WARMUP {
            apply_one(&depot.engine, "s1", &verify_payload(&path(i), seq(i)))?;
        }
    }
    let round = BLOCK / 2;
    let mut next = WARMUP + 1;
    let mut flip = false;
    while next < WARMUP + 1 + applies {
        let end = (next + round).min(WARMUP + 1 + applies);
        let order: Vec<usize> = if flip { vec![1, 0] } else { vec![0, 1] };
        flip = !flip;
        for k in order {
            let depot = &mut depots[k];
            for i in next..end {
                let payload = verify_payload(&path(i), seq(i));
                let start = Instant::now();
                apply_one(&depot.engine, "s1", &payload)?;
                depot.samples.push(start.elapsed());
            }
        }
        next = end;
    }
    let grown = 10 + 2 * (WARMUP + 1 + applies) / SCALE_AGGREGATES;
    for depot in &mut depots {
        let stored = depot.stored;
        let total: Duration = depot.samples.iter().sum();
        let p = Percentiles::of(&mut depot.samples);
        let note = format!(
            "Engine::apply of identity requestVerification on an existing identity (one of \
             {SCALE_AGGREGATES}, 10 events each at first, about {grown} at the end) in a \
             bulk-built depot of {stored} events, session s1, durable on return, one thread; \
             {WARMUP} unmeasured applies first, then rounds of {round} alternating with the \
             other depot; Depot::open took {:.0} ms",
            depot.opened.as_secs_f64() * 1e3
        );
        figures.push(
            Figure::new(RETRO, "engine_scale_apply_p50", "us", p.p50_us, stored).note(note.clone()),
        );
        figures.push(
            Figure::new(RETRO, "engine_scale_apply_p99", "us", p.p99_us, stored).note(note.clone()),
        );
        figures.push(
            Figure::new(
                RETRO,
                "engine_scale_apply",
                "applies/s",
                per_second(applies, total),
                stored,
            )
            .note(note),
        );
        figures.push(
            Figure::new(
                RETRO,
                "engine_scale_first_apply",
                "us",
                depot.first.as_secs_f64() * 1e6,
                stored,
            )
            .note("the first apply after Depot::open (index catch-up and cold caches included)"),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Sizes {
        Sizes {
            applies: 120,
            writers: 2,
            scale_events: [1000, 1500],
            scale_applies: 10,
        }
    }

    #[test]
    fn every_engine_measurement_runs_on_tiny_sizes() {
        let scratch = tempfile::tempdir().unwrap();
        let mut figures = Figures::default();
        run(&tiny(), true, true, scratch.path(), &mut figures).unwrap();
        for name in [
            "engine_apply",
            "engine_apply_p50",
            "engine_ref_durable_commit",
            "engine_apply_writers",
            "engine_apply_writers_speedup",
        ] {
            let figure = figures.get(RETRO, name).unwrap_or_else(|| panic!("{name}"));
            assert!(figure.value > 0.0, "{name}");
        }
        assert_eq!(figures.get(RETRO, "engine_apply_writers").unwrap().n, 240);
        assert!(figures
            .get_n(RETRO, "engine_scale_apply_p50", 990)
            .is_some());
        assert!(figures
            .get_n(RETRO, "engine_scale_apply_p50", 1500)
            .is_some());
    }

    #[test]
    fn create_rejects_an_existing_identity() {
        let engine = engine_over(Depot::in_memory().unwrap()).unwrap();
        apply_one(&engine, "s1", &create_payload("identity/1", 1)).unwrap();
        let again = engine.apply("s1", create_payload("identity/1", 2).as_bytes());
        assert!(again.is_err());
        apply_one(&engine, "s1", &verify_payload("identity/1", 3)).unwrap();
        assert!(engine
            .apply("s1", verify_payload("identity/2", 4).as_bytes())
            .is_err());
        let events = engine
            .depot()
            .partition_events(&depot::PartitionName::new("session/s1").unwrap())
            .unwrap();
        assert_eq!(events.len(), 2);
    }
}
