//! `retro group run` (one member of a consumer group, printing its slots' events) and `retro
//! group status` (members, slots, lag).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use depot::group::{GroupDelivery, GroupMember, GroupOptions};
use depot::{Depot, ErrorClass, RefName};

use crate::ui::Ui;

pub struct RunArgs {
    pub name: String,
    pub glob: String,
    pub member: Option<String>,
    pub lease_ms: u64,
    pub slots: Option<u32>,
    pub since: Option<String>,
    pub target: Option<String>,
    pub idle_exit: Option<f64>,
    pub json: bool,
}

/// `HOST-PID`: unique among live processes of one host, and valid as a member id.
fn default_member_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| {
            h.trim()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect::<String>()
        })
        .filter(|h| !h.is_empty() && !h.starts_with(['.', '-']))
        .unwrap_or_else(|| "host".to_owned());
    format!("{host}-{}", std::process::id())
}

fn slots_text(slots: &[u32]) -> String {
    if slots.is_empty() {
        return "none".to_owned();
    }
    // Ranges of consecutive slots: 0-3,8,10-11.
    let mut parts = Vec::new();
    let mut i = 0;
    while i < slots.len() {
        let mut j = i;
        while j + 1 < slots.len() && slots[j + 1] == slots[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            slots[i].to_string()
        } else {
            format!("{}-{}", slots[i], slots[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

fn print(member: &str, delivery: &GroupDelivery, json: bool, ui: &mut Ui) -> Result<()> {
    if json {
        ui.json(&server::api::GroupDelivered::new(member, delivery))?;
        ui.flush()?;
        return Ok(());
    }
    match delivery {
        GroupDelivery::Checkpoint {
            id,
            date,
            session,
            events,
            ..
        } => {
            ui.line(format!(
                "{} {} {}",
                ui.yellow(&id.to_short_hex(12)),
                date.map(depot::format_date)
                    .unwrap_or_else(|| "-".to_owned()),
                session
            ))?;
            for event in events {
                ui.line(format!(
                    "  {}#{} {} {} (slot {}, event {})",
                    event.record.partition,
                    event.record.version,
                    event.record.event.name(),
                    String::from_utf8_lossy(event.record.event.data()),
                    event.slot,
                    event.index
                ))?;
            }
        }
        GroupDelivery::Slots {
            held,
            taken,
            released,
        } => {
            ui.line(format!(
                "slots: {member} holds {} (took {}, gave up {})",
                slots_text(held),
                slots_text(taken),
                slots_text(released)
            ))?;
        }
        GroupDelivery::NonFastForward {
            slots,
            from,
            head,
            base,
        } => {
            ui.line(format!(
                "non-fast-forward: slots {} were at {}, the ref is at {}; replaying from {}",
                slots_text(slots),
                from.to_short_hex(12),
                head.map_or("nothing".to_owned(), |h| h.to_short_hex(12)),
                base.map_or("the start".to_owned(), |b| b.to_short_hex(12)),
            ))?;
        }
    }
    ui.flush()?;
    Ok(())
}

/// Whether an error is worth waiting out (PostgreSQL restarting, a lock held too long).
fn retryable(err: &depot::Error) -> bool {
    err.class() == ErrorClass::Unavailable
}

/// Waits out a retryable failure: says so once per outage, backs off up to 2 s.
fn back_off(err: &depot::Error, pause: &mut Duration) {
    if *pause == Duration::ZERO {
        crate::ui::status(format!(
            "retro: warning: {err}; retrying (this member delivers nothing until it has renewed its leases)"
        ));
        *pause = Duration::from_millis(50);
    }
    std::thread::sleep(*pause);
    *pause = (*pause * 2).min(Duration::from_secs(2));
}

pub fn run(depot: &Arc<Depot>, args: &RunArgs, ui: &mut Ui) -> Result<()> {
    let target = match &args.target {
        Some(name) => RefName::new(name)?,
        None => RefName::head(),
    };
    let start = match &args.since {
        Some(rev) => Some(depot.resolve_revision(rev)?),
        None => None,
    };
    let options = GroupOptions {
        target,
        glob: args.glob.clone(),
        slots: args.slots,
        start,
        lease: Duration::from_millis(args.lease_ms),
    };
    let id = args.member.clone().unwrap_or_else(default_member_id);
    let mut member: GroupMember<'_> = depot.join_group(&args.name, &id, &options)?;
    let idle = args.idle_exit.map(Duration::from_secs_f64);
    let step = Duration::from_millis(500).min(options.lease / 3);
    let mut last = Instant::now();
    let mut pause = Duration::ZERO;
    loop {
        match member.next_timeout(step) {
            Ok(Some(delivery)) => {
                pause = Duration::ZERO;
                print(&id, &delivery, args.json, ui)?;
                // Acknowledge only after the output is flushed: at-least-once. A failed ack is
                // retried with the next one (the positions stay pending meanwhile).
                if let Err(err) = member.ack() {
                    if !retryable(&err) {
                        return Err(err.into());
                    }
                    back_off(&err, &mut pause);
                }
                last = Instant::now();
            }
            Ok(None) => {
                pause = Duration::ZERO;
                if let Err(err) = member.ack() {
                    if !retryable(&err) {
                        return Err(err.into());
                    }
                    back_off(&err, &mut pause);
                    continue;
                }
                if idle.is_some_and(|idle| last.elapsed() >= idle) || super::watch::stdout_closed()
                {
                    member.leave()?;
                    return Ok(());
                }
            }
            Err(err) if retryable(&err) => back_off(&err, &mut pause),
            Err(err) => return Err(err.into()),
        }
    }
}

pub fn status(depot: &Depot, name: Option<&str>, json: bool, ui: &mut Ui) -> Result<()> {
    let Some(name) = name else {
        let groups = server::api::GroupStatusBody::read_all(depot)?;
        if json {
            ui.json(&groups)?;
            return Ok(());
        }
        for group in &groups {
            ui.line(format!(
                "{}  {} members  {} slots  {} without a live lease  behind {}",
                group.name,
                group.members.len(),
                group.slots.len(),
                group.unowned,
                group
                    .behind
                    .map_or("?".to_owned(), |b| format!("{b} checkpoints"))
            ))?;
        }
        return Ok(());
    };
    let body = server::api::GroupStatusBody::from(&depot.group_status(name)?);
    if json {
        ui.json(&body)?;
        return Ok(());
    }
    ui.line(format!(
        "group {}  ref {}  glob {}  slots {}  behind {}",
        body.name,
        body.target,
        body.glob,
        body.slots.len(),
        body.behind.map_or(
            "? (a slot is off the ref's history)".to_owned(),
            |b| format!("{b} checkpoints")
        )
    ))?;
    ui.line(format!("members: {}", body.members.len()))?;
    for m in &body.members {
        let held: Vec<u32> = body
            .slots
            .iter()
            .filter(|s| s.owner.as_deref() == Some(m.id.as_str()))
            .map(|s| s.slot)
            .collect();
        ui.line(format!(
            "  {}  slots {}  heartbeat expires in {} ms",
            m.id,
            slots_text(&held),
            m.expires_in_ms
        ))?;
    }
    let free: Vec<u32> = body
        .slots
        .iter()
        .filter(|s| s.owner.is_none())
        .map(|s| s.slot)
        .collect();
    ui.line(format!("slots without a live lease: {}", slots_text(&free)))?;
    for s in &body.slots {
        ui.line(format!(
            "  slot {:>4}  {:<24} epoch {:<4} behind {:<6} {}",
            s.slot,
            s.owner.as_deref().unwrap_or("-"),
            s.epoch,
            s.behind.map_or("?".to_owned(), |b| b.to_string()),
            s.position.as_deref().unwrap_or("-")
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn consecutive_slots_are_shown_as_ranges() {
        assert_eq!(super::slots_text(&[]), "none");
        assert_eq!(super::slots_text(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
    }
}
