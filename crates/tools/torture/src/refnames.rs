//! Ref-name clashes and random ref names: names under `refs/tags/` and `refs/consumers/` built
//! from a few segments, so that `x`, `x/y` and `x/y/z` clash often (a ref cannot be both a file
//! and a directory). Moves go through `retro update-ref`, `retro watch --consumer` and the
//! library (one edit, or two in one transaction). A move that clashes with an existing ref (or
//! with the other edit of its transaction) must be refused, through the CLI with a non-zero exit
//! and a `retro: error:` line, before anything is journaled (the refs and the packs are as they
//! were); any other valid move must succeed; invalid names must be refused. After the round,
//! `retro log`, `retro fsck`, `retro gc` and `retro reindex` must all still work.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use depot::{Depot, Expected, LogInfo, ObjectId, RefEdit, RefName, RefValue};

use benchkit::Rng;

use crate::check::Ack;
use crate::class::{Ctx, Tally};
use crate::proc;
use crate::round;

const SEGMENTS: &[&str] = &["x", "y", "z", "x", "y", "x.y", "x-1"];
const INVALID: &[&str] = &[
    "x..y", "x.lock", "x/", "@{x}", "x y", "/x", "x//y", "x~1", ".",
];
const DEADLINE: Duration = Duration::from_secs(120);

fn random_name(rng: &mut Rng, prefix: &str) -> String {
    let depth = rng.range(1, 4);
    let segments: Vec<&str> = (0..depth)
        .map(|_| SEGMENTS[rng.index(SEGMENTS.len())])
        .collect();
    format!("{prefix}{}", segments.join("/"))
}

/// Whether `name` cannot coexist with `other` (one is a directory of the other).
fn clashes(name: &str, other: &str) -> bool {
    name != other
        && (other.starts_with(&format!("{name}/")) || name.starts_with(&format!("{other}/")))
}

fn refs(depot: &Depot) -> anyhow::Result<BTreeMap<String, Option<ObjectId>>> {
    Ok(depot
        .list_refs("refs/")?
        .into_iter()
        .map(|(name, value)| (name.to_string(), value.id()))
        .collect())
}

fn pack_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("packs"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".pack"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Parses a finished `retro-torture writer`'s output: its acknowledgements and its complaints.
pub fn writer_output(output: &std::process::Output, place: &str) -> (Vec<Ack>, Vec<String>) {
    let mut acks = Vec::new();
    let mut problems = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let mut parts = line.split(' ');
        if let (Some("ACK"), Some(checkpoint), Some(cid)) =
            (parts.next(), parts.next(), parts.next())
        {
            acks.push(Ack {
                cid: cid.to_owned(),
                checkpoint: checkpoint.to_owned(),
                via: "lib",
            });
        }
    }
    for line in String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| !l.starts_with("CONFLICT "))
    {
        problems.push(format!("library writer: {line} {place}"));
    }
    if !output.status.success() {
        problems.push(format!(
            "a library writer exited {:?} {place}",
            output.status.code()
        ));
    }
    (acks, problems)
}

/// Runs the class once on `ctx.dir`.
pub fn run(
    ctx: &Ctx<'_>,
    rng: &mut Rng,
    tally: &mut Tally,
) -> anyhow::Result<(Vec<Ack>, Vec<String>)> {
    let place = format!("[{}, depot {}]", ctx.tag, ctx.dir.display());
    let mut problems = Vec::new();
    let mut acks = Vec::new();
    let ops = rng.range(20, 60);
    let mut writer_n = 0;
    for op in 0..ops {
        if rng.chance(0.15) {
            // Let history move on (a writer that stops by itself).
            writer_n += 1;
            let output = ctx
                .writer(&format!("{}n{writer_n}", ctx.tag), rng.next_u64())
                .arg("--limit")
                .arg(rng.range(1, 6).to_string())
                .stdin(Stdio::null())
                .output()?;
            let (a, p) = writer_output(&output, &place);
            acks.extend(a);
            problems.extend(p);
        }
        let depot = Depot::open(ctx.dir)?;
        let before = refs(&depot)?;
        let bytes_before = pack_bytes(ctx.dir);
        let head = depot.head()?.expect("a HEAD");
        let prefix = if rng.chance(0.5) {
            "refs/tags/"
        } else {
            "refs/consumers/"
        };
        let clash_with_existing =
            |name: &str| before.keys().any(|other| clashes(name, other.as_str()));
        let what;
        // (expected to be refused, refused, the ref and the value it must hold after success)
        let mut expect: Option<(String, Option<ObjectId>)> = None;
        let kind = rng.range(0, 10);
        let (should_refuse, refused, detail) = match kind {
            0 => {
                // An invalid name: refused, nothing changes.
                let name = format!("{prefix}{}", INVALID[rng.index(INVALID.len())]);
                what = format!("retro update-ref {name:?} HEAD");
                let ran = proc::run(
                    round::retro(ctx.setup, ctx.dir).args(["update-ref", &name, "HEAD"]),
                    DEADLINE,
                )?;
                if ran.clean_error() {
                    tally.ref_invalid += 1;
                }
                (true, ran.clean_error(), ran.describe())
            }
            1..=3 => {
                let name = random_name(rng, prefix);
                let k = rng.range(0, 3);
                let target = depot.resolve_revision(&format!("HEAD~{k}"))?;
                what = format!("retro update-ref {name} HEAD~{k}");
                let ran = proc::run(
                    round::retro(ctx.setup, ctx.dir).args([
                        "update-ref",
                        &name,
                        &target.to_string(),
                    ]),
                    DEADLINE,
                )?;
                let refuse = clash_with_existing(&name);
                expect = Some((name, Some(target)));
                (
                    refuse,
                    if refuse {
                        ran.clean_error()
                    } else {
                        ran.code != Some(0)
                    },
                    ran.describe(),
                )
            }
            4 => {
                let name = random_name(rng, prefix);
                what = format!("retro update-ref -d {name}");
                let ran = proc::run(
                    round::retro(ctx.setup, ctx.dir).args(["update-ref", "-d", &name]),
                    DEADLINE,
                )?;
                if before.contains_key(&name) {
                    expect = Some((name, None));
                    (false, ran.code != Some(0), ran.describe())
                } else {
                    // Nothing to delete: exit 1 or 3 with an error line, or 0; nothing changes.
                    let fine = ran.code == Some(0)
                        || (matches!(ran.code, Some(1 | 3)) && ran.clean_error());
                    (true, fine, ran.describe())
                }
            }
            5..=7 => {
                let name = random_name(rng, prefix);
                what = format!("update_refs([{name} -> HEAD])");
                let edit = RefEdit {
                    name: RefName::new(&name)?,
                    expected: Expected::Any,
                    new: Some(RefValue::Direct(head)),
                    log: LogInfo {
                        session: "torture".into(),
                        message: format!("torture refs {op}"),
                    },
                };
                let result = depot.update_refs(&[edit]);
                let refuse = clash_with_existing(&name);
                expect = Some((name, Some(head)));
                (refuse, result.is_err(), format!("{result:?}"))
            }
            8 => {
                // Two edits in one transaction, often clashing with each other.
                let a = random_name(rng, prefix);
                let b = if rng.chance(0.5) {
                    format!("{a}/{}", SEGMENTS[rng.index(SEGMENTS.len())])
                } else {
                    random_name(rng, prefix)
                };
                if a == b {
                    continue;
                }
                what = format!("update_refs([{a} -> HEAD, {b} -> HEAD])");
                let log = LogInfo {
                    session: "torture".into(),
                    message: format!("torture refs {op}"),
                };
                let edits = [
                    RefEdit {
                        name: RefName::new(&a)?,
                        expected: Expected::Any,
                        new: Some(RefValue::Direct(head)),
                        log: log.clone(),
                    },
                    RefEdit {
                        name: RefName::new(&b)?,
                        expected: Expected::Any,
                        new: Some(RefValue::Direct(head)),
                        log,
                    },
                ];
                let result = depot.update_refs(&edits);
                let refuse = clash_with_existing(&a) || clash_with_existing(&b) || clashes(&a, &b);
                if !refuse {
                    let ok = result.is_ok()
                        && depot.read_ref(&RefName::new(&a)?)?.and_then(|v| v.id()) == Some(head);
                    if !ok {
                        problems.push(format!(
                            "{what}: no clash, yet {result:?} and {a} does not hold HEAD {place}"
                        ));
                    }
                    expect = Some((b, Some(head)));
                }
                (refuse, result.is_err(), format!("{result:?}"))
            }
            _ => {
                // A consumer under a random name: the consumer's first ack creates its ref.
                let name = random_name(rng, "");
                let full = format!("refs/consumers/{name}");
                what = format!("retro watch --consumer {name}");
                let ran = proc::run(
                    round::retro(ctx.setup, ctx.dir).args([
                        "watch",
                        "--consumer",
                        &name,
                        "--idle-exit",
                        "0.3",
                        "--json",
                    ]),
                    DEADLINE,
                )?;
                let refuse = clash_with_existing(&full);
                if !refuse {
                    expect = Some((full, Some(head)));
                }
                (
                    refuse,
                    if refuse {
                        ran.clean_error()
                    } else {
                        ran.code != Some(0)
                    },
                    ran.describe(),
                )
            }
        };
        if should_refuse {
            if !refused {
                problems.push(format!(
                    "{what} should have been refused cleanly (a name clash, an invalid name, or \
                     nothing to delete), got {detail} {place}"
                ));
            } else {
                tally.ref_clashes += u64::from(!matches!(kind, 0 | 4));
            }
            let depot = Depot::open(ctx.dir)?;
            let after = refs(&depot)?;
            if after != before {
                problems.push(format!(
                    "{what} was refused, yet the refs changed: {before:?} -> {after:?} {place}"
                ));
            }
            let bytes_after = pack_bytes(ctx.dir);
            if bytes_after != bytes_before {
                problems.push(format!(
                    "{what} was refused, yet the packs grew from {bytes_before} to {bytes_after} \
                     bytes: it was journaled {place}"
                ));
            }
        } else if refused {
            problems.push(format!(
                "{what} clashes with nothing, yet it failed: {detail} {place}"
            ));
        } else {
            tally.ref_moves += 1;
            if let Some((name, value)) = &expect {
                let depot = Depot::open(ctx.dir)?;
                let now = depot.read_ref(&RefName::new(name)?)?.and_then(|v| v.id());
                if now != *value {
                    problems.push(format!(
                        "{what} succeeded, yet {name} holds {now:?}, not {value:?} {place}"
                    ));
                }
            }
        }
        if problems.len() > 20 {
            break;
        }
    }
    // The depot stays usable.
    for args in [
        vec!["log", "-n", "3"],
        vec!["fsck"],
        vec!["gc"],
        vec!["reindex"],
        vec!["refs"],
    ] {
        let ran = proc::run(round::retro(ctx.setup, ctx.dir).args(&args), DEADLINE)?;
        if ran.code != Some(0) || ran.panicked() {
            problems.push(format!(
                "after the ref moves, retro {} failed: {} {place}",
                args.join(" "),
                ran.describe()
            ));
        }
    }
    Ok((acks, problems))
}
