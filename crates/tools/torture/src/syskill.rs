//! Syscall-level kill points: every command that writes (`apply`, `gc`, `import`, `sync`,
//! `update-ref`, a consumer move through `retro watch --consumer`) is run under
//! `strace -f -e inject=SYSCALL:signal=KILL:when=N`, so that it dies exactly on entering its N-th
//! `write`/`pwrite64`/`fdatasync`/`fsync`/`rename`/`renameat2`/`openat`, with N drawn from the
//! count a traced run of the same command just observed (`strace -c`). After each kill: the depot
//! opens, fsck is clean, every acknowledged command is there exactly once, the command's own
//! state is one of the two it may be in (old or new), no `.tmp-*` file survives the next command,
//! and a following apply succeeds.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use depot::{Depot, HistoryOrder, ObjectId, RefName};

use benchkit::Rng;

use crate::check::{self, Ack};
use crate::class::{Ctx, Tally};
use crate::domain::ACCOUNTS;
use crate::proc::{self, Ran};
use crate::round;

/// The syscalls a kill is injected on.
const SYSCALLS: &[&str] = &[
    "write",
    "pwrite64",
    "fdatasync",
    "fsync",
    "rename",
    "renameat2",
    "openat",
];

/// The writing commands.
const COMMANDS: &[&str] = &["apply", "gc", "import", "sync", "update-ref", "consumer"];

const DEADLINE: Duration = Duration::from_secs(120);

/// Makes sure `strace` can be run; the reason when it cannot.
pub fn available() -> Result<(), String> {
    match Command::new("strace").arg("-V").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("strace -V exited {:?}", out.status.code())),
        Err(e) => Err(format!("cannot run strace: {e}")),
    }
}

struct Kit<'a> {
    ctx: &'a Ctx<'a>,
    acks: Vec<Ack>,
    problems: Vec<String>,
    serial: u64,
    mirror: PathBuf,
}

/// One planned invocation of a writing command, and what it may leave behind.
enum Plan {
    Apply {
        cid: String,
    },
    Gc,
    Import {
        cids: Vec<String>,
    },
    Sync {
        force: bool,
    },
    UpdateRef {
        name: RefName,
        old: Option<ObjectId>,
        new: Option<ObjectId>,
    },
    Consumer {
        name: String,
        before: Option<ObjectId>,
    },
}

impl Kit<'_> {
    fn where_(&self, what: &str) -> String {
        format!(
            "{} [{}, depot {}]",
            what,
            self.ctx.tag,
            self.ctx.dir.display()
        )
    }

    fn problem(&mut self, what: String) {
        let text = self.where_(&what);
        self.problems.push(text);
    }

    fn cid(&mut self) -> String {
        self.serial += 1;
        format!("{}s.{}", self.ctx.tag, self.serial)
    }

    fn retro(&self) -> Command {
        round::retro(self.ctx.setup, self.ctx.dir)
    }

    /// A plan for `command`, and its argument list for `retro`.
    fn plan(&mut self, command: &str, rng: &mut Rng) -> anyhow::Result<(Plan, Vec<String>)> {
        let depot = Depot::open(self.ctx.dir)?;
        Ok(match command {
            "apply" => {
                let cid = self.cid();
                let payload = serde_json::json!({"path": ACCOUNTS[rng.index(ACCOUNTS.len())],
                    "name": "deposit", "params": {"amount": rng.range(1, 100), "cid": cid}});
                let args = vec!["apply".into(), "--json".into(), payload.to_string()];
                (Plan::Apply { cid }, args)
            }
            "gc" => {
                let mut args = vec!["gc".to_owned()];
                if rng.chance(0.3) {
                    args.extend(["--prune".to_owned(), "0".to_owned()]);
                }
                (Plan::Gc, args)
            }
            "import" => {
                let n = rng.range(2, 6);
                let mut cids = Vec::new();
                let mut text = String::new();
                for _ in 0..n {
                    let cid = self.cid();
                    let line = serde_json::json!({
                        "session": "torture-import",
                        "message": {"path": "imports/i0", "name": "import", "params": {"cid": cid}},
                        "events": [{"partition": format!("imports/i{}", rng.range(0, 3)),
                            "name": "Imported", "data": {"cid": cid}}],
                    });
                    text.push_str(&line.to_string());
                    text.push('\n');
                    cids.push(cid);
                }
                let file = self
                    .ctx
                    .tmp
                    .join(format!("import-{}-{}.jsonl", self.ctx.tag, self.serial));
                std::fs::write(&file, text)?;
                let args = vec![
                    "import".into(),
                    "--batch".into(),
                    rng.range(1, 3).to_string(),
                    file.display().to_string(),
                ];
                (Plan::Import { cids }, args)
            }
            "sync" => {
                if !self.mirror.join("config").exists() {
                    Depot::init(&self.mirror)?;
                }
                let force = rng.chance(0.5);
                let mut args = vec!["sync".to_owned()];
                if force {
                    args.push("--force".into());
                }
                args.extend(["--batch".to_owned(), rng.range(1, 50).to_string()]);
                args.push(self.ctx.dir.display().to_string());
                args.push(self.mirror.display().to_string());
                (Plan::Sync { force }, args)
            }
            "update-ref" => {
                let name = RefName::new(&format!("refs/tags/sk{}", rng.range(0, 3)))
                    .expect("a valid ref name");
                let old = depot.read_ref(&name)?.and_then(|v| v.id());
                if rng.chance(0.25) {
                    let args = vec!["update-ref".into(), "-d".into(), name.to_string()];
                    (
                        Plan::UpdateRef {
                            name,
                            old,
                            new: None,
                        },
                        args,
                    )
                } else {
                    let k = rng.range(0, 4);
                    let new = depot.resolve_revision(&format!("HEAD~{k}"))?;
                    let args = vec!["update-ref".into(), name.to_string(), new.to_string()];
                    (
                        Plan::UpdateRef {
                            name,
                            old,
                            new: Some(new),
                        },
                        args,
                    )
                }
            }
            _ => {
                let name = format!("sk{}", rng.range(0, 3));
                let before = depot
                    .read_ref(&RefName::new(&format!("refs/consumers/{name}"))?)?
                    .and_then(|v| v.id());
                let args = vec![
                    "watch".into(),
                    "--consumer".into(),
                    name.clone(),
                    "--idle-exit".into(),
                    "0.5".into(),
                    "--json".into(),
                ];
                (Plan::Consumer { name, before }, args)
            }
        })
    }

    /// Judges how a planned command ended (killed or not); records its acknowledgements.
    fn judge(&mut self, plan: &Plan, ran: &Ran, what: &str) -> anyhow::Result<()> {
        if ran.panicked() || ran.timed_out {
            self.problem(format!("{what}: {}", ran.describe()));
            return Ok(());
        }
        let killed = ran.killed();
        let ok = ran.code == Some(0);
        if !killed && !ok {
            let allowed = match plan {
                Plan::Sync { force: false } => ran.code == Some(3),
                Plan::UpdateRef {
                    old: None,
                    new: None,
                    ..
                } => matches!(ran.code, Some(1 | 3)),
                _ => false,
            };
            if !allowed {
                self.problem(format!("{what} failed: {}", ran.describe()));
                return Ok(());
            }
        }
        let depot = Depot::open(self.ctx.dir)?;
        match plan {
            Plan::Apply { cid } if !killed => {
                let checkpoint = serde_json::from_str::<serde_json::Value>(ran.stdout.trim())
                    .ok()
                    .and_then(|v| v["checkpoint"].as_str().map(str::to_owned));
                match checkpoint {
                    Some(checkpoint) => self.acks.push(Ack {
                        cid: cid.clone(),
                        checkpoint,
                        via: "cli",
                    }),
                    None => self.problem(format!(
                        "{what} exited 0 without a checkpoint: {}",
                        ran.describe()
                    )),
                }
            }
            Plan::Import { cids } if !killed => {
                for cid in cids {
                    self.acks.push(Ack {
                        cid: cid.clone(),
                        checkpoint: String::new(),
                        via: "import",
                    });
                }
            }
            Plan::Sync { .. } => {
                let mirror = Depot::open(&self.mirror)?;
                let report = mirror.fsck(|_| {})?;
                for p in &report.problems {
                    self.problem(format!("{what}: fsck of the mirror: {}", p.message));
                }
                let theirs = mirror.head()?;
                let ours = depot.head()?;
                if !killed && theirs != ours {
                    self.problem(format!(
                        "{what} succeeded but the mirror's HEAD is {theirs:?}, the source's {ours:?}"
                    ));
                }
                if let Some(theirs) = theirs {
                    let ours = ours.expect("the source has a HEAD");
                    if !depot.is_ancestor(theirs, ours)? {
                        self.problem(format!(
                            "{what}: the mirror's HEAD {theirs} is not in the source's history"
                        ));
                    }
                }
            }
            Plan::UpdateRef { name, old, new } => {
                let now = depot.read_ref(name)?.and_then(|v| v.id());
                let fine = if killed {
                    now == *old || now == *new
                } else if ok {
                    now == *new
                } else {
                    now == *old
                };
                if !fine {
                    self.problem(format!(
                        "{what}: {name} holds {now:?}; it held {old:?} and was being set to {new:?}"
                    ));
                }
            }
            Plan::Consumer { name, before } => {
                let printed: Vec<ObjectId> = ran
                    .stdout
                    .split_inclusive('\n')
                    .filter(|l| l.ends_with('\n'))
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .filter_map(|v| v["checkpoint"].as_str().and_then(|c| c.parse().ok()))
                    .collect();
                let now = depot
                    .read_ref(&RefName::new(&format!("refs/consumers/{name}"))?)?
                    .and_then(|v| v.id());
                let mut allowed: Vec<Option<ObjectId>> = Vec::new();
                match printed.len() {
                    0 => allowed.push(*before),
                    1 => allowed.extend([*before, Some(printed[0])]),
                    n => allowed.extend([Some(printed[n - 2]), Some(printed[n - 1])]),
                }
                if !killed {
                    allowed = vec![depot.head()?];
                }
                if !allowed.contains(&now) {
                    self.problem(format!(
                        "{what}: refs/consumers/{name} holds {now:?}; it held {before:?}, {} \
                         checkpoints were printed, allowed {allowed:?}",
                        printed.len()
                    ));
                }
                if let Some(now) = now {
                    let head = depot.head()?.expect("a HEAD");
                    if !depot.is_ancestor(now, head)? {
                        self.problem(format!(
                            "{what}: refs/consumers/{name} = {now} is not on HEAD's history"
                        ));
                    }
                }
                // The printed checkpoints follow history, oldest first, without gaps.
                if !printed.is_empty() {
                    let mut chain = Vec::new();
                    depot.walk(
                        depot.head()?.expect("a HEAD"),
                        HistoryOrder::FirstParent,
                        |id, _| {
                            chain.push(id);
                            Ok(true)
                        },
                    )?;
                    chain.reverse();
                    let at = chain.iter().position(|c| *c == printed[0]);
                    let consistent = at.is_some_and(|at| {
                        chain[at..].len() >= printed.len()
                            && chain[at..at + printed.len()] == printed[..]
                    });
                    if !consistent {
                        self.problem(format!(
                            "{what}: the consumer printed {} checkpoints that are not a run of \
                             HEAD's history, oldest first",
                            printed.len()
                        ));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A plain `retro apply` that must succeed.
    fn must_apply(&mut self, rng: &mut Rng, why: &str) -> anyhow::Result<()> {
        let (plan, args) = self.plan("apply", rng)?;
        let ran = proc::run(self.retro().args(&args), DEADLINE)?;
        if ran.code != Some(0) {
            self.problem(format!("the apply {why} failed: {}", ran.describe()));
            return Ok(());
        }
        self.judge(&plan, &ran, &format!("the apply {why}"))
    }
}

/// Parses `strace -c` output: calls per syscall.
fn counts(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let Some(name) = tokens.last() else { continue };
        if !SYSCALLS.contains(name) || tokens.len() < 5 {
            continue;
        }
        if let Ok(calls) = tokens[3].parse::<u64>() {
            out.insert((*name).to_owned(), calls);
        }
    }
    out
}

/// Runs 4 to 9 kill points on `ctx.dir`, one random writing command each (`only`: one command).
pub fn run(
    ctx: &Ctx<'_>,
    rng: &mut Rng,
    tally: &mut Tally,
) -> anyhow::Result<(Vec<Ack>, Vec<String>)> {
    let mut kit = Kit {
        ctx,
        acks: Vec::new(),
        problems: Vec::new(),
        serial: 0,
        mirror: ctx.tmp.join("mirror"),
    };
    let attempts = rng.range(4, 10);
    let trace = ctx.tmp.join(format!("strace-{}.txt", ctx.tag));
    for attempt in 1..=attempts {
        let command = COMMANDS[rng.index(COMMANDS.len())];
        if command == "consumer" {
            // Give the consumer something to deliver.
            for _ in 0..rng.range(1, 4) {
                kit.must_apply(rng, "before a consumer run")?;
            }
        }
        // The traced run: how many of each syscall this command issues here and now.
        let (plan, args) = kit.plan(command, rng)?;
        let mut traced = strace();
        traced
            .args(["-f", "-qq", "-c", "-o"])
            .arg(&trace)
            .arg(format!("-etrace={}", SYSCALLS.join(",")))
            .arg("--")
            .arg(&ctx.setup.retro)
            .args(kit.retro().get_args())
            .args(&args);
        let ran = proc::run(&mut traced, DEADLINE)?;
        kit.judge(&plan, &ran, &format!("traced {command} {args:?}"))?;
        let seen = counts(&std::fs::read_to_string(&trace).unwrap_or_default());
        let choices: Vec<(&String, &u64)> = seen.iter().filter(|(_, n)| **n > 0).collect();
        if choices.is_empty() {
            kit.problem(format!(
                "strace -c saw none of {SYSCALLS:?} in {command} {args:?}: {}",
                ran.describe()
            ));
            continue;
        }
        let (syscall, count) = choices[rng.index(choices.len())];
        let syscall = syscall.clone();
        let n = rng.range(1, count + 1);
        // The killed run: the same kind of command, SIGKILLed on entering its n-th syscall.
        let (plan, args) = kit.plan(command, rng)?;
        let mut killed = strace();
        killed
            .args(["-f", "-qq", "-o", "/dev/null"])
            .arg(format!("-etrace={syscall}"))
            .arg(format!("-einject={syscall}:signal=KILL:when={n}"))
            .arg("--")
            .arg(&ctx.setup.retro)
            .args(kit.retro().get_args())
            .args(&args);
        let what =
            format!("{command} {args:?} killed at {syscall} #{n} of {count} (attempt {attempt})");
        let ran = proc::run(&mut killed, DEADLINE)?;
        kit.judge(&plan, &ran, &what)?;
        if ran.killed() {
            *tally
                .kill_points
                .entry(command.to_owned())
                .or_default()
                .entry(syscall.clone())
                .or_default() += 1;
        } else {
            tally.kill_missed += 1;
        }
        // The next command opens the depot; then nothing of the dead one may be left over.
        kit.must_apply(rng, &format!("after {what}"))?;
        let temps = proc::temp_files(ctx.dir);
        if !temps.is_empty() {
            kit.problem(format!(
                "after {what} and one more apply, temp files remain: {temps:?}"
            ));
        }
        if let Plan::Sync { .. } = plan {
            if ran.killed() {
                // An interrupted sync resumes.
                let (plan, args) = kit.plan("sync", rng)?;
                let ran = proc::run(kit.retro().args(&args), DEADLINE)?;
                kit.judge(&plan, &ran, &format!("the sync after {what}"))?;
            }
        }
        let mut all: Vec<Ack> = ctx.prior.to_vec();
        all.extend(kit.acks.iter().cloned());
        let checked = check::check(ctx.dir, &all, rng);
        for p in checked.problems {
            kit.problem(format!("after {what}: {p}"));
        }
        if !kit.problems.is_empty() {
            break;
        }
    }
    Ok((kit.acks, kit.problems))
}

/// `a=3 b=1` for a map of counts.
pub fn show(points: &BTreeMap<String, u64>) -> String {
    points
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `strace` with the environment `round::retro` gives `retro`.
fn strace() -> Command {
    let mut cmd = Command::new("strace");
    cmd.env_remove("RETRO_DEPOT")
        .env_remove("RETRO_SESSION")
        .env_remove("RETRO_MANIFEST")
        .env("NO_COLOR", "1");
    cmd
}
