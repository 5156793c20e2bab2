//! `inventory DEPOT_DIR`: runs a small scenario of the inventory domain in the depot at
//! `DEPOT_DIR` (created on first use) and prints the stock on hand, then a rejected shipment.
//! Running it again adds to the same depot's history.

use std::process::ExitCode;
use std::sync::Arc;

use engine::{ApplyError, Depot, Engine};
use inventory::{stock_path, Move, Receive, Ship, Stock};

fn run(dir: &str) -> Result<(), Box<dyn std::error::Error>> {
    let depot = Arc::new(Depot::open_or_init(dir)?);
    let engine = Engine::new(depot, inventory::manifest()?);
    let session = engine.start_session()?;
    let berlin = stock_path("berlin", "bolt-m6")?;
    let paris = stock_path("paris", "bolt-m6")?;
    engine.execute(&session, &berlin, &Receive { quantity: 100 })?;
    let moved = engine.execute(
        &session,
        &berlin,
        &Move {
            to: paris.clone(),
            quantity: 30,
        },
    )?;
    println!(
        "moved 30 in checkpoint {} (partitions {})",
        moved.checkpoint.to_short_hex(12),
        moved.partitions.join(", ")
    );
    engine.execute(&session, &paris, &Ship { quantity: 10 })?;
    for path in [&berlin, &paris] {
        let stock = engine.load::<Stock>(path)?;
        println!(
            "{path}: {} on hand ({} events)",
            stock.state.on_hand, stock.version
        );
    }
    let on_hand = engine.load::<Stock>(&berlin)?.state.on_hand;
    match engine.execute(
        &session,
        &berlin,
        &Ship {
            quantity: on_hand + 1,
        },
    ) {
        Err(ApplyError::Rejected { error, .. }) => println!("rejected: {error}"),
        Ok(_) => return Err("shipping more than is on hand was accepted".into()),
        Err(e) => return Err(e.into()),
    }
    engine.end_session(&session)?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir] = args.as_slice() else {
        eprintln!("usage: inventory DEPOT_DIR");
        return ExitCode::from(2);
    };
    match run(dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut message = format!("inventory: error: {e}");
            let mut source = e.source();
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}
