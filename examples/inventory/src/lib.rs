//! An inventory domain embedded with `retro-engine` alone, written with the typed API: stock of
//! one item in one warehouse is the aggregate `stock/<warehouse>/<sku>`.
//!
//! - `receive {quantity}` adds stock, `ship {quantity}` removes it: the stock on hand is never
//!   negative (the invariant), and never past `u64::MAX`;
//! - `move {to, quantity}` moves stock of the same item to another warehouse: it reads the other
//!   aggregate and emits `MovedOut` to this partition and `MovedIn` to the other **in one
//!   checkpoint** (one affix: consumers see both or neither);
//! - rejections are the domain's own enum, [`StockRejection`], each with its code.
//!
//! A history that does not add up (imported from elsewhere, say) marks the stock
//! [`Stock::inconsistent`], and every command on it is then refused.
//!
//! ```
//! use std::sync::Arc;
//! use engine::{Depot, Engine};
//! use inventory::{stock_path, Move, Receive, Stock};
//!
//! let engine = Engine::new(Arc::new(Depot::in_memory()?), inventory::manifest()?);
//! let berlin = stock_path("berlin", "bolt-m6")?;
//! let paris = stock_path("paris", "bolt-m6")?;
//! engine.execute("cli", &berlin, &Receive { quantity: 100 })?;
//! engine.execute("cli", &berlin, &Move { to: paris.clone(), quantity: 30 })?;
//! assert_eq!(engine.load::<Stock>(&berlin)?.state.on_hand, 70);
//! assert_eq!(engine.load::<Stock>(&paris)?.state.on_hand, 30);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use engine::{
    Context, DomainCommand, DomainError, Events, Manifest, PartitionName, RegistrationError,
    Rejection, TypedAggregate,
};
use serde::{Deserialize, Serialize};

/// The aggregate kind: every stock path starts with it.
pub const KIND: &str = "stock";

/// The path of an item's stock in a warehouse, `stock/<warehouse>/<sku>`; each part is one
/// path segment.
pub fn stock_path(warehouse: &str, sku: &str) -> Result<String, StockRejection> {
    let path = format!("{KIND}/{warehouse}/{sku}");
    match StockAddress::parse(&path) {
        Some(_) if PartitionName::new(&path).is_ok() => Ok(path),
        _ => Err(StockRejection::NotAStockPath(path)),
    }
}

/// A stock path taken apart.
struct StockAddress<'a> {
    warehouse: &'a str,
    sku: &'a str,
}

impl<'a> StockAddress<'a> {
    fn parse(path: &'a str) -> Option<StockAddress<'a>> {
        let mut parts = path.split('/');
        let (kind, warehouse, sku) = (parts.next()?, parts.next()?, parts.next()?);
        if kind != KIND || warehouse.is_empty() || sku.is_empty() || parts.next().is_some() {
            return None;
        }
        Some(StockAddress { warehouse, sku })
    }
}

/// The inventory's events, as stored (a variant's name is the event's name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StockEvent {
    /// Stock arrived.
    Received {
        /// How many units.
        quantity: u64,
    },
    /// Stock left to a customer.
    Shipped {
        /// How many units.
        quantity: u64,
    },
    /// Stock left for another warehouse.
    MovedOut {
        /// The receiving stock path.
        to: String,
        /// How many units.
        quantity: u64,
    },
    /// Stock arrived from another warehouse.
    MovedIn {
        /// The sending stock path.
        from: String,
        /// How many units.
        quantity: u64,
    },
}

impl Events for StockEvent {}

/// The write side's view of one item in one warehouse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stock {
    /// Units on hand: never negative.
    pub on_hand: u64,
    /// Whether the history does not add up (more out than in, or past `u64::MAX`): only a history
    /// written outside these commands can do this. Every command is then refused.
    pub inconsistent: bool,
}

impl Stock {
    fn add(&mut self, quantity: u64) {
        match self.on_hand.checked_add(quantity) {
            Some(on_hand) => self.on_hand = on_hand,
            None => self.inconsistent = true,
        }
    }

    fn remove(&mut self, quantity: u64) {
        match self.on_hand.checked_sub(quantity) {
            Some(on_hand) => self.on_hand = on_hand,
            None => self.inconsistent = true,
        }
    }
}

impl TypedAggregate for Stock {
    type Event = StockEvent;

    fn apply(&mut self, event: StockEvent) {
        match event {
            StockEvent::Received { quantity } | StockEvent::MovedIn { quantity, .. } => {
                self.add(quantity)
            }
            StockEvent::Shipped { quantity } | StockEvent::MovedOut { quantity, .. } => {
                self.remove(quantity)
            }
        }
    }
}

/// Receive `quantity` units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receive {
    /// How many units (at least 1).
    pub quantity: u64,
}

impl DomainCommand for Receive {
    const NAME: &'static str = "receive";
}

/// Ship `quantity` units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ship {
    /// How many units (at least 1).
    pub quantity: u64,
}

impl DomainCommand for Ship {
    const NAME: &'static str = "ship";
}

/// Move `quantity` units to the same item's stock in another warehouse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Move {
    /// The receiving stock path, `stock/<warehouse>/<same sku>`.
    pub to: String,
    /// How many units (at least 1).
    pub quantity: u64,
}

impl DomainCommand for Move {
    const NAME: &'static str = "move";
}

/// Why the inventory refuses a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StockRejection {
    /// A quantity of zero.
    #[error("the quantity must be at least 1")]
    ZeroQuantity,
    /// Fewer units on hand than asked for.
    #[error("{path} has {on_hand} unit(s) on hand, {requested} asked for")]
    InsufficientStock {
        /// The stock path.
        path: String,
        /// Units on hand.
        on_hand: u64,
        /// Units asked for.
        requested: u64,
    },
    /// More units than a `u64` holds.
    #[error("{path} would hold more than {} units", u64::MAX)]
    Overflow {
        /// The stock path.
        path: String,
    },
    /// Not `stock/<warehouse>/<sku>`.
    #[error("'{0}' is not a stock path (stock/<warehouse>/<sku>)")]
    NotAStockPath(String),
    /// A move to the same warehouse.
    #[error("cannot move stock of {0} to where it is")]
    SameWarehouse(String),
    /// A move to another item.
    #[error("cannot move {from} to {to}: another item")]
    OtherItem {
        /// The sending stock path.
        from: String,
        /// The receiving stock path.
        to: String,
    },
    /// A history that does not add up.
    #[error("the history of {0} does not add up; it needs repair by hand")]
    Inconsistent(String),
}

impl Rejection for StockRejection {
    fn code(&self) -> &str {
        match self {
            StockRejection::ZeroQuantity => "invalid_params",
            StockRejection::InsufficientStock { .. } => "insufficient_stock",
            StockRejection::Overflow { .. } => "stock_overflow",
            StockRejection::NotAStockPath(_) => "not_a_stock_path",
            StockRejection::SameWarehouse(_) => "same_warehouse",
            StockRejection::OtherItem { .. } => "other_item",
            StockRejection::Inconsistent(_) => "inconsistent_history",
        }
    }
}

fn usable(stock: &Stock, path: &str, quantity: u64) -> Result<(), StockRejection> {
    if stock.inconsistent {
        return Err(StockRejection::Inconsistent(path.to_owned()));
    }
    if quantity == 0 {
        return Err(StockRejection::ZeroQuantity);
    }
    Ok(())
}

fn take(stock: &Stock, path: &str, quantity: u64) -> Result<(), StockRejection> {
    usable(stock, path, quantity)?;
    if quantity > stock.on_hand {
        return Err(StockRejection::InsufficientStock {
            path: path.to_owned(),
            on_hand: stock.on_hand,
            requested: quantity,
        });
    }
    Ok(())
}

fn put(stock: &Stock, path: &str, quantity: u64) -> Result<(), StockRejection> {
    usable(stock, path, quantity)?;
    if stock.on_hand.checked_add(quantity).is_none() {
        return Err(StockRejection::Overflow {
            path: path.to_owned(),
        });
    }
    Ok(())
}

fn move_stock(stock: &Stock, command: Move, ctx: &mut Context<'_>) -> Result<(), DomainError> {
    let from = ctx.path().to_string();
    let (Some(here), Some(there)) = (StockAddress::parse(&from), StockAddress::parse(&command.to))
    else {
        return Err(StockRejection::NotAStockPath(command.to).into());
    };
    if here.sku != there.sku {
        return Err(StockRejection::OtherItem {
            from: from.clone(),
            to: command.to,
        }
        .into());
    }
    if here.warehouse == there.warehouse {
        return Err(StockRejection::SameWarehouse(from.clone()).into());
    }
    take(stock, &from, command.quantity)?;
    // Reading the other stock joins this command's read set: if it changes before this commits,
    // the command runs again on fresh state.
    let other = ctx.load::<Stock>(&command.to)?;
    put(&other.state, &command.to, command.quantity)?;
    ctx.emit_event(&StockEvent::MovedOut {
        to: command.to.clone(),
        quantity: command.quantity,
    })?;
    ctx.emit_event_to(
        &command.to,
        &StockEvent::MovedIn {
            from,
            quantity: command.quantity,
        },
    )
}

/// The inventory's manifest: kind `stock` with `receive`, `ship` and `move`.
pub fn manifest() -> Result<Manifest, RegistrationError> {
    let mut manifest = Manifest::new();
    manifest
        .aggregate::<Stock>(KIND)?
        .handle(|stock, command: Receive, ctx| {
            let path = ctx.path().to_string();
            if StockAddress::parse(&path).is_none() {
                return Err(StockRejection::NotAStockPath(path).into());
            }
            put(stock, &path, command.quantity)?;
            ctx.emit_event(&StockEvent::Received {
                quantity: command.quantity,
            })
        })?
        .handle(|stock, command: Ship, ctx| {
            take(stock, ctx.path().as_str(), command.quantity)?;
            ctx.emit_event(&StockEvent::Shipped {
                quantity: command.quantity,
            })
        })?
        .handle(move_stock)?;
    Ok(manifest)
}
