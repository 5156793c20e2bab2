#!/usr/bin/env python3
"""retro-bench's driver for the Python `eventsourcing` library (a peer measured in the same run).

`retro-bench` (crates/tools/bench/src/eventsourcing_bench.rs) runs this script with the venv's
Python, once per persistence module, and reads ONE JSON object from stdout:

    {"backend": "sqlite", "versions": {...}, "settings": {...},
     "figures": [{"figure": "identity_1", "unit": "commands/s", "value": 1455.0, "n": 2000,
                  "note": "..."}, ...]}

Progress goes to stderr. Anything that goes wrong raises, so the script exits non-zero and the
bench fails naming it; nothing here is a hard-coded result.

The workloads are retro-bench's (crates/tools/bench/src/workload.rs, http_bench.rs):

- identity: one command = `createIdentity`: a new Identity aggregate (`identity/<i>`) with 2
  events (IdentityCreated, EmailVerificationRequested) and 1 event (SessionCommandApplied) on the
  writer's Session aggregate (`session/s<w+1>`), saved with ONE `Application.save(identity,
  session)` call: one transaction, durable when it returns. The event attributes are the fields of
  retro's ~60-byte JSON bodies. The session aggregate stays in memory between commands, as retro's
  engine keeps its head: its version is the optimistic-concurrency check.
- identity with W writer processes: writer w on `identity/w<w>-<i>` and its own session.
- bank: accounts opened first (unmeasured), then deposits round-robin over them; each command
  loads the account through the repository (all its events, decoded and replayed), triggers one
  Deposited event and saves it.
- read: a store of the read shape (command i adds 2 events to `identity/<i mod P>`, P = events/15,
  so every identity stream holds exactly 10 events spread over the whole history, and 1 to
  `session/s1`), built through the library's bulk path (domain events encoded by the
  application's mapper, many stored events per `recorder.insert_events` call, one transaction
  each); then a fresh Application reads random 10-event streams' raw rows with
  `recorder.select_events` (as many unmeasured reads first). Percentiles are nearest-rank.
- disk: that store's bytes per event: SQLite's database file plus -wal and -shm after
  `PRAGMA wal_checkpoint(TRUNCATE)`; PostgreSQL's `pg_total_relation_size` (heap, TOAST, indexes)
  of the library's tables.

Snapshots and the aggregate cache are off (the library's defaults).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlsplit
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

# 2026-01-01T00:00:00Z: command i happens i seconds later (as in retro-bench's workload).
EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)
# Unmeasured commands before the measured ones (retro-bench's engine does 50 too).
WARMUP = 50
# Events per identity stream in the read store, and per command.
EVENTS_PER_READ_STREAM = 10
EVENTS_PER_COMMAND = 3
# Stored events per `insert_events` call when building the read store.
BULK_EVENTS = 15_000


def log(message: str) -> None:
    print(f"eventsourcing-peer: {message}", file=sys.stderr, flush=True)


def stream_id(name: str) -> UUID:
    """The aggregate id of a retro partition name: the library wants UUIDs."""
    return uuid5(NAMESPACE_URL, f"retro:{name}")


# The domain: retro-bench's identity workload and the example bank, as library aggregates.


class Identity(Aggregate):
    @staticmethod
    def create_id(name: str) -> UUID:
        return stream_id(name)

    @event("IdentityCreated")
    def __init__(self, name: str, identity: str, email: str) -> None:
        self.identity = identity
        self.email = email
        self.requested_at: str | None = None

    @event("EmailVerificationRequested")
    def request_verification(self, identity: str, requested_at: str) -> None:
        self.requested_at = requested_at


class Session(Aggregate):
    @staticmethod
    def create_id(name: str) -> UUID:
        return stream_id(name)

    @event("SessionStarted")
    def __init__(self, name: str, session: str) -> None:
        self.session = session
        self.applied = 0

    @event("SessionCommandApplied")
    def command_applied(self, session: str, identity: str, seq: int, ok: bool) -> None:
        self.applied += 1


class Account(Aggregate):
    @staticmethod
    def create_id(name: str) -> UUID:
        return stream_id(name)

    @event("Opened")
    def __init__(self, name: str, owner: str) -> None:
        self.owner = owner
        self.balance = 0

    @event("Deposited")
    def deposit(self, amount: int) -> None:
        self.balance += amount


class RetroBench(Application):
    """The application; its name makes PostgreSQL's table `retrobench_events`."""


# The workload's command bodies (retro-bench's workload::request).


def stamp(index: int) -> str:
    return (EPOCH + timedelta(seconds=index)).strftime("%Y-%m-%dT%H:%M:%SZ")


def create_identity(app: RetroBench, session: Session, name: str, index: int) -> None:
    """One `createIdentity` command: 3 events over 2 aggregates, one save (one transaction)."""
    identity = f"id-{index:08}"
    aggregate = Identity(name=name, identity=identity, email=f"user{index}@example.org")
    aggregate.request_verification(identity=identity, requested_at=stamp(index))
    session.command_applied(session=session.session, identity=identity, seq=index, ok=True)
    app.save(aggregate, session)


# Persistence settings.


class Backend:
    """Where a measurement's store lives: a fresh SQLite file or a fresh PostgreSQL database."""

    def __init__(self, kind: str, scratch: Path, url: str | None) -> None:
        self.kind = kind
        self.scratch = scratch
        self.url = url

    def env(self, store: str, *, create_table: bool = True) -> dict[str, str]:
        """The library's environment for store `store` (created on first use)."""
        env = {"CREATE_TABLE": "y" if create_table else "n"}
        if self.kind == "sqlite":
            env["PERSISTENCE_MODULE"] = "eventsourcing.sqlite"
            env["SQLITE_DBNAME"] = str(self.scratch / f"{store}.sqlite")
            # Several writer processes share one file: wait for its lock, as PostgreSQL does.
            env["SQLITE_LOCK_TIMEOUT"] = "30"
        else:
            assert self.url is not None
            parts = urlsplit(self.url)
            env.update(
                PERSISTENCE_MODULE="eventsourcing.postgres",
                POSTGRES_HOST=parts.hostname or "127.0.0.1",
                POSTGRES_PORT=str(parts.port or 5432),
                POSTGRES_USER=unquote(parts.username or "postgres"),
                POSTGRES_PASSWORD=unquote(parts.password or ""),
                POSTGRES_DBNAME=f"es_{store}",
            )
        return env

    def create_store(self, store: str) -> None:
        """A fresh, empty store named `store`."""
        if self.kind == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.scratch / store}.sqlite{suffix}").unlink(missing_ok=True)
            return
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS es_{store}")
            conn.execute(f"CREATE DATABASE es_{store}")

    def app(self, store: str, *, create_table: bool = True) -> RetroBench:
        return RetroBench(env=self.env(store, create_table=create_table))

    def settings(self, app: RetroBench) -> dict[str, str]:
        """The settings a reader of the figures needs, read back from the store itself."""
        if self.kind == "sqlite":
            import sqlite3

            with app.recorder.datastore.transaction(commit=False) as c:
                c.execute("PRAGMA journal_mode")
                journal = c.fetchone()[0]
                c.execute("PRAGMA synchronous")
                synchronous = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[c.fetchone()[0]]
            if journal.lower() != "wal" or synchronous != "FULL":
                raise RuntimeError(f"SQLite is {journal}, synchronous={synchronous}: not WAL/FULL")
            return {"sqlite": sqlite3.sqlite_version, "journal_mode": journal, "synchronous": synchronous}
        with app.recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            values = {}
            for setting in ("server_version", "fsync", "synchronous_commit"):
                curs.execute(f"SHOW {setting}")
                values[setting] = curs.fetchone()[setting]
        if values["fsync"] != "on" or values["synchronous_commit"] != "on":
            raise RuntimeError(f"PostgreSQL is not durable: {values}")
        return {"postgresql": values["server_version"], "fsync": "on", "synchronous_commit": "on"}


# Measurements.


class Figures:
    """The figures of this run, as retro-bench's Figure lines (minus the peer's name)."""

    def __init__(self) -> None:
        self.list: list[dict[str, object]] = []

    def add(self, figure: str, unit: str, value: float, n: int, note: str) -> None:
        if not math.isfinite(value):
            raise RuntimeError(f"figure {figure} is {value}")
        self.list.append({"figure": figure, "unit": unit, "value": value, "n": n, "note": note})

    def latencies(self, figure: str, samples_ns: list[int], note: str, n: int | None = None) -> None:
        """p50 and p99 (nearest rank, as benchkit::Percentiles) in microseconds; `n` defaults to
        the number of samples."""
        ordered = sorted(samples_ns)
        for p in (50, 99):
            rank = max(1, math.ceil(p / 100 * len(ordered)))
            self.add(f"{figure}_p{p}", "us", ordered[rank - 1] / 1000, n or len(ordered), note)


def identity_one(backend: Backend, commands: int, figures: Figures) -> dict[str, str]:
    """The identity workload, one writer, each command a durable transaction."""
    backend.create_store("identity1")
    app = backend.app("identity1")
    settings = backend.settings(app)
    session = Session(name="session/s1", session="s1")
    app.save(session)
    for i in range(WARMUP):
        create_identity(app, session, f"identity/warm-{i}", i)
    log(f"{backend.kind}: identity workload, 1 writer x {commands}")
    samples = []
    started = time.perf_counter_ns()
    for i in range(commands):
        t = time.perf_counter_ns()
        create_identity(app, session, f"identity/one-{i}", 1_000_000 + i)
        samples.append(time.perf_counter_ns() - t)
    elapsed = (time.perf_counter_ns() - started) / 1e9
    note = "Application.save(identity, session) per command: 3 events over 2 aggregates, one transaction"
    figures.add("identity_1", "commands/s", commands / elapsed, commands, note)
    figures.latencies("identity_1", samples, "latency per command")
    app.close()
    return settings


def identity_writer(backend: Backend, writer: int, commands: int) -> None:
    """One of several writer processes (`--writer`): set up, say ready, wait for go, run, say done."""
    app = backend.app("identityn", create_table=False)
    session_name = f"s{writer + 1}"
    session = Session(name=f"session/{session_name}", session=session_name)
    app.save(session)
    for i in range(WARMUP // 5):
        create_identity(app, session, f"identity/w{writer}-warm-{i}", i)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise RuntimeError("writer: expected 'go' on stdin")
    for i in range(commands):
        create_identity(app, session, f"identity/w{writer}-{i}", (writer + 1) * 10_000_000 + i)
    print(f"done {commands}", flush=True)
    app.close()


def identity_many(backend: Backend, args: argparse.Namespace, figures: Figures) -> None:
    """The identity workload with `--writers` processes on disjoint aggregates, one store."""
    backend.create_store("identityn")
    backend.app("identityn").close()  # creates the tables before the writers start
    writers, per = args.writers, args.writer_commands
    log(f"{backend.kind}: identity workload, {writers} writer processes x {per}")
    procs = []
    for w in range(writers):
        command = [sys.executable, __file__, *args.forward, "--writer", str(w)]
        procs.append(subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    for w, proc in enumerate(procs):
        line = proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"writer {w} said {line!r} instead of 'ready' (exit {proc.wait()})")
    started = time.perf_counter_ns()
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    done = 0
    for w, proc in enumerate(procs):
        line = proc.stdout.readline().strip()
        if line != f"done {per}":
            raise RuntimeError(f"writer {w} said {line!r} (exit {proc.wait()})")
        done += per
    elapsed = (time.perf_counter_ns() - started) / 1e9
    for w, proc in enumerate(procs):
        if proc.wait() != 0:
            raise RuntimeError(f"writer {w} exited with {proc.returncode}")
    note = (
        f"{writers} processes, each its own Application on one store, disjoint identities, own "
        "session aggregate; commands over the wall time from 'go' to the last 'done'"
    )
    figures.add("identity_writers", "commands/s", done / elapsed, done, note)


def bank(backend: Backend, accounts: int, commands: int, figures: Figures) -> None:
    """Deposits round-robin over `accounts` accounts: load the aggregate, 1 event, save."""
    backend.create_store("bank")
    app = backend.app("bank")
    ids = []
    for j in range(accounts):
        account = Account(name=f"accounts/c0-{j}", owner="client 0")
        app.save(account)
        ids.append(account.id)
    log(f"{backend.kind}: bank, {accounts} accounts, {commands} deposits")
    started = time.perf_counter_ns()
    for i in range(commands):
        account = app.repository.get(ids[i % accounts])
        account.deposit(amount=1)
        app.save(account)
    elapsed = (time.perf_counter_ns() - started) / 1e9
    note = (
        f"{accounts} accounts opened first; per command repository.get (all the account's events "
        "replayed), deposit (1 event), save: one transaction"
    )
    figures.add("bank_1", "commands/s", commands / elapsed, commands, note)
    app.close()


def read_store(backend: Backend, events: int, reads: int, figures: Figures) -> None:
    """Builds the read-shaped store through the bulk path, then reads 10-event streams' rows."""
    partitions = max(1, events // (EVENTS_PER_READ_STREAM // 2 * EVENTS_PER_COMMAND))
    commands = partitions * (EVENTS_PER_READ_STREAM // 2)
    total = commands * EVENTS_PER_COMMAND
    backend.create_store("read")
    app = backend.app("read")
    mapper, recorder = app.mapper, app.recorder
    identity_ids = [stream_id(f"identity/{k}") for k in range(partitions)]
    session_id = stream_id("session/s1")
    identity_topic = f"{Identity.__module__}:{Identity.__qualname__}"
    log(f"{backend.kind}: bulk load of {total} events ({BULK_EVENTS} per insert_events)")
    started = time.perf_counter()
    batch = []
    for i in range(commands):
        k, visit = i % partitions, i // partitions
        identity, when = f"id-{i:08}", EPOCH + timedelta(seconds=i)
        base = dict(originator_id=identity_ids[k], timestamp=when)
        if visit == 0:
            first = Identity.IdentityCreated(
                **base, originator_version=1, originator_topic=identity_topic,
                name=f"identity/{k}", identity=identity, email=f"user{i}@example.org",
            )
        else:
            first = Identity.EmailVerificationRequested(
                **base, originator_version=2 * visit + 1, identity=identity, requested_at=stamp(i),
            )
        second = Identity.EmailVerificationRequested(
            **base, originator_version=2 * visit + 2, identity=identity, requested_at=stamp(i),
        )
        applied = Session.SessionCommandApplied(
            originator_id=session_id, originator_version=i + 1, timestamp=when,
            session="s1", identity=identity, seq=i, ok=True,
        )
        batch.extend(mapper.to_stored_event(e) for e in (first, second, applied))
        if len(batch) >= BULK_EVENTS:
            recorder.insert_events(batch)
            batch = []
    if batch:
        recorder.insert_events(batch)
    loaded = time.perf_counter() - started
    figures.add(
        "bulk_load", "events/s", total / loaded, total,
        f"mapper.to_stored_event + recorder.insert_events, {BULK_EVENTS} events per call",
    )
    figures.add("bytes_per_event", "B/event", store_bytes(backend, app) / total, total, disk_note(backend))
    app.close()

    # A fresh application, as another process would open it.
    app = backend.app("read", create_table=False)
    rng = random.Random(7)
    samples = []
    log(f"{backend.kind}: {reads} reads of a 10-event stream in {total} events")
    for round_ in range(2):
        for _ in range(reads):
            originator = identity_ids[rng.randrange(partitions)]
            t = time.perf_counter_ns()
            rows = app.recorder.select_events(originator)
            spent = time.perf_counter_ns() - t
            if len(rows) != EVENTS_PER_READ_STREAM:
                raise RuntimeError(f"stream {originator} has {len(rows)} rows")
            if round_ == 1:
                samples.append(spent)
    figures.latencies(
        "read_stream", samples,
        f"recorder.select_events of a random 10-event stream (raw rows, not decoded) in {total} "
        f"events; {reads} reads after {reads} unmeasured",
        n=total,  # the store's size, as retro's read figures count it
    )
    app.close()


def store_bytes(backend: Backend, app: RetroBench) -> int:
    """The store's size on disk once loaded."""
    if backend.kind == "sqlite":
        with app.recorder.datastore.transaction(commit=False) as c:
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        name = app.env.get("SQLITE_DBNAME")
        files = [f"{name}{suffix}" for suffix in ("", "-wal", "-shm")]
        return sum(os.path.getsize(f) for f in files if os.path.exists(f))
    with app.recorder.datastore.get_connection() as conn, conn.cursor() as curs:
        curs.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) AS bytes FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
        )
        return int(curs.fetchone()["bytes"])


def disk_note(backend: Backend) -> str:
    if backend.kind == "sqlite":
        return "database file + -wal + -shm after PRAGMA wal_checkpoint(TRUNCATE)"
    return "pg_total_relation_size (heap, TOAST, indexes) of the library's tables"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), required=True)
    parser.add_argument("--scratch", type=Path, required=True, help="directory for SQLite files")
    parser.add_argument("--url", help="PostgreSQL URL of a database to create the stores from")
    parser.add_argument("--commands", type=int, required=True, help="identity commands, 1 writer")
    parser.add_argument("--writers", type=int, required=True)
    parser.add_argument("--writer-commands", type=int, required=True, help="per writer")
    parser.add_argument("--accounts", type=int, required=True)
    parser.add_argument("--bank-commands", type=int, required=True)
    parser.add_argument("--read-events", type=int, required=True)
    parser.add_argument("--reads", type=int, required=True)
    parser.add_argument("--writer", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backend == "postgres" and not args.url:
        parser.error("--backend postgres needs --url")
    backend = Backend(args.backend, args.scratch, args.url)
    if args.writer is not None:
        identity_writer(backend, args.writer, args.writer_commands)
        return
    # What the writer processes are started with (everything but --writer).
    args.forward = sys.argv[1:]

    figures = Figures()
    started = time.perf_counter()
    settings = identity_one(backend, args.commands, figures)
    identity_many(backend, args, figures)
    bank(backend, args.accounts, args.bank_commands, figures)
    read_store(backend, args.read_events, args.reads, figures)
    versions = {
        "python": sys.version.split()[0],
        "eventsourcing": metadata.version("eventsourcing"),
    }
    if args.backend == "postgres":
        import psycopg

        versions["psycopg"] = f"{psycopg.__version__} ({psycopg.pq.__impl__})"
    log(f"{backend.kind}: done in {time.perf_counter() - started:.1f} s")
    json.dump(
        {"backend": args.backend, "versions": versions, "settings": settings, "figures": figures.list},
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
