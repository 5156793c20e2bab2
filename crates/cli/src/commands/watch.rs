//! `retro watch`: stream whole checkpoints as they land, optionally as a durable consumer.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Result;

use depot::{Delivery, Depot, RefName};

use crate::ui::Ui;

pub struct WatchArgs {
    pub glob: String,
    pub since: Option<String>,
    pub all: bool,
    pub consumer: Option<String>,
    pub target: Option<String>,
    pub idle_exit: Option<f64>,
    pub json: bool,
}

fn print(delivery: &Delivery, json: bool, ui: &mut Ui) -> Result<()> {
    if json {
        // The same body as the `data` of `GET /watch`'s events.
        ui.json(&server::api::Delivered::from(delivery))?;
    } else {
        match delivery {
            Delivery::Checkpoint {
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
                        "  {}#{} {} {}",
                        event.partition,
                        event.version,
                        event.event.name(),
                        String::from_utf8_lossy(event.event.data())
                    ))?;
                }
            }
            Delivery::NonFastForward { from, head, base } => {
                ui.line(format!(
                    "non-fast-forward: {} moved from {} to {}; replaying from {}",
                    "the ref",
                    from.to_short_hex(12),
                    head.map_or("nothing".to_owned(), |h| h.to_short_hex(12)),
                    base.map_or("the start".to_owned(), |b| b.to_short_hex(12)),
                ))?;
            }
        }
    }
    ui.flush()?;
    Ok(())
}

/// Whether stdout is a pipe or socket whose reading end is gone: `poll` reports an error or a
/// hang-up on it. Never true for files and terminals that are still there.
#[cfg(unix)]
pub(crate) fn stdout_closed() -> bool {
    let mut fd = libc::pollfd {
        fd: 1,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no timeout.
    let ready = unsafe { libc::poll(&mut fd, 1, 0) };
    ready > 0 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

#[cfg(not(unix))]
pub(crate) fn stdout_closed() -> bool {
    false
}

pub fn run(depot: &Depot, args: &WatchArgs, ui: &mut Ui) -> Result<()> {
    let target = match &args.target {
        Some(name) => RefName::new(name)?,
        None => RefName::head(),
    };
    let start = if args.all {
        None
    } else {
        match &args.since {
            Some(rev) => Some(depot.resolve_revision(rev)?),
            None => depot.resolve_ref(&target)?.1,
        }
    };
    let idle = args.idle_exit.map(Duration::from_secs_f64);
    let step = Duration::from_millis(500);
    let mut last = Instant::now();
    match &args.consumer {
        Some(name) => {
            let start = if args.all || args.since.is_some() {
                start
            } else {
                None
            };
            let mut consumer = depot.consumer(name, &target, &args.glob, start)?;
            loop {
                match consumer.subscription().next_timeout(step)? {
                    Some(delivery) => {
                        print(&delivery, args.json, ui)?;
                        // Acknowledge only after the output is flushed: at-least-once.
                        consumer.ack()?;
                        last = Instant::now();
                    }
                    None => {
                        consumer.ack()?;
                        if idle.is_some_and(|idle| last.elapsed() >= idle) || stdout_closed() {
                            return Ok(());
                        }
                    }
                }
            }
        }
        None => {
            let mut subscription = depot.subscribe(&target, &args.glob, start)?;
            loop {
                match subscription.next_timeout(step)? {
                    Some(delivery) => {
                        print(&delivery, args.json, ui)?;
                        last = Instant::now();
                    }
                    None => {
                        // A closed stdout ends the watch quietly even when idle (flushing an
                        // empty buffer writes nothing, so it cannot tell).
                        if idle.is_some_and(|idle| last.elapsed() >= idle) || stdout_closed() {
                            return Ok(());
                        }
                        ui.out().flush()?;
                    }
                }
            }
        }
    }
}
