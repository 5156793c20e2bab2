//! The built-in example domain, compiled in Rust through the public API: a small bank.
//!
//! `accounts/<id>` holds an account: `open {owner}`, `deposit {amount}`, `withdraw {amount}` (never
//! below zero: the no-overdraft invariant), `transfer {to, amount}` (reads the other account and
//! emits to both partitions in one affix). Opening an account also lists it in
//! `registry/accounts`. `make demo` and the README tour use it.
//!
//! All arithmetic is checked: a deposit or transfer that would take a balance past `u64::MAX`
//! is rejected with `balance_overflow` (never wrapped), and a history whose events overflow
//! (imported, say) marks the account `overflowed`, which every command then refuses.

use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregate, DomainError, DomainEvent, RecordedEvent};
use crate::context::Context;
use crate::domain::{Manifest, RegistrationError};

/// An account was opened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountOpened {
    /// Who owns it.
    pub owner: String,
}
impl DomainEvent for AccountOpened {
    const NAME: &'static str = "AccountOpened";
}

/// Money came in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deposited {
    /// How much, in cents.
    pub amount: u64,
}
impl DomainEvent for Deposited {
    const NAME: &'static str = "Deposited";
}

/// Money went out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Withdrawn {
    /// How much, in cents.
    pub amount: u64,
}
impl DomainEvent for Withdrawn {
    const NAME: &'static str = "Withdrawn";
}

/// Money moved to another account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferSent {
    /// The receiving account.
    pub to: String,
    /// How much.
    pub amount: u64,
}
impl DomainEvent for TransferSent {
    const NAME: &'static str = "TransferSent";
}

/// Money arrived from another account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferReceived {
    /// The sending account.
    pub from: String,
    /// How much.
    pub amount: u64,
}
impl DomainEvent for TransferReceived {
    const NAME: &'static str = "TransferReceived";
}

/// An account was listed in the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountListed {
    /// The account's path.
    pub account: String,
}
impl DomainEvent for AccountListed {
    const NAME: &'static str = "AccountListed";
}

/// The write side's view of an account (snapshotted every 100 events: see [`register_bank`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// Whether it was opened.
    pub open: bool,
    /// Its owner.
    pub owner: String,
    /// Its balance, never negative.
    pub balance: u64,
    /// Whether its history does not add up in a `u64` (only an imported history can do this:
    /// commands are checked). The balance is then meaningless and every command is refused.
    pub overflowed: bool,
}

impl Account {
    fn credit(&mut self, amount: u64) {
        match self.balance.checked_add(amount) {
            Some(balance) => self.balance = balance,
            None => self.overflowed = true,
        }
    }

    fn debit(&mut self, amount: u64) {
        match self.balance.checked_sub(amount) {
            Some(balance) => self.balance = balance,
            None => self.overflowed = true,
        }
    }
}

impl Aggregate for Account {
    fn apply(&mut self, event: &RecordedEvent) {
        if let Some(Ok(e)) = event.decode::<AccountOpened>() {
            self.open = true;
            self.owner = e.owner;
        } else if let Some(Ok(e)) = event.decode::<Deposited>() {
            self.credit(e.amount);
        } else if let Some(Ok(e)) = event.decode::<Withdrawn>() {
            self.debit(e.amount);
        } else if let Some(Ok(e)) = event.decode::<TransferSent>() {
            self.debit(e.amount);
        } else if let Some(Ok(e)) = event.decode::<TransferReceived>() {
            self.credit(e.amount);
        }
        // Anything else has no business value here and is skipped.
    }
}

fn amount(ctx: &Context<'_>) -> Result<u64, DomainError> {
    let amount: u64 = ctx.param("amount")?;
    if amount == 0 {
        return Err(DomainError::invalid_params("amount must be positive"));
    }
    Ok(amount)
}

fn must_be_open(account: &Account, ctx: &Context<'_>) -> Result<(), DomainError> {
    if !account.open {
        return Err(DomainError::new(
            "not_open",
            format!("account {} is not open", ctx.path()),
        ));
    }
    must_add_up(account, ctx.path().as_str())
}

/// Refuses to work on an account whose history overflows a `u64`.
fn must_add_up(account: &Account, path: &str) -> Result<(), DomainError> {
    if account.overflowed {
        return Err(DomainError::new(
            "balance_overflow",
            format!("the history of account {path} overflows a 64-bit balance"),
        ));
    }
    Ok(())
}

/// `balance + amount`, or a `balance_overflow` rejection naming the account.
fn credited(account: &Account, path: &str, amount: u64) -> Result<u64, DomainError> {
    account.balance.checked_add(amount).ok_or_else(|| {
        DomainError::new(
            "balance_overflow",
            format!(
                "cannot credit {amount} to {path}: the balance {} would exceed {}",
                account.balance,
                u64::MAX
            ),
        )
    })
}

/// The bank's manifest: kind `accounts` with its four commands.
pub fn bank_manifest() -> Result<Manifest, RegistrationError> {
    let mut manifest = Manifest::new();
    register_bank(&mut manifest)?;
    Ok(manifest)
}

/// Adds the bank's commands to `manifest`.
pub fn register_bank(manifest: &mut Manifest) -> Result<(), RegistrationError> {
    manifest
        .aggregate::<Account>("accounts")?
        .snapshot_every(100, "1")
        .command("open", |account, ctx| {
            if account.open {
                return Err(DomainError::new(
                    "already_open",
                    format!("account {} is already open", ctx.path()),
                ));
            }
            let owner: String = ctx.param("owner")?;
            if owner.trim().is_empty() {
                return Err(DomainError::invalid_params("owner must not be empty"));
            }
            let path = ctx.path().to_string();
            ctx.emit(&AccountOpened { owner })?;
            ctx.emit_to("registry/accounts", &AccountListed { account: path })
        })?
        .command("deposit", |account, ctx| {
            let amount = amount(ctx)?;
            must_be_open(account, ctx)?;
            credited(account, ctx.path().as_str(), amount)?;
            ctx.emit(&Deposited { amount })
        })?
        .command("withdraw", |account, ctx| {
            let amount = amount(ctx)?;
            must_be_open(account, ctx)?;
            if amount > account.balance {
                return Err(DomainError::new(
                    "insufficient_funds",
                    format!(
                        "cannot withdraw {amount} from {}: the balance is {}",
                        ctx.path(),
                        account.balance
                    ),
                ));
            }
            ctx.emit(&Withdrawn { amount })
        })?
        .command("transfer", |account, ctx| {
            let amount = amount(ctx)?;
            let to: String = ctx.param("to")?;
            must_be_open(account, ctx)?;
            if to == ctx.path().as_str() {
                return Err(DomainError::invalid_params(
                    "cannot transfer to the same account",
                ));
            }
            if !to.starts_with("accounts/") {
                return Err(DomainError::invalid_params("'to' must be an account path"));
            }
            let other = ctx.load::<Account>(&to)?;
            if !other.state.open {
                return Err(DomainError::new(
                    "not_open",
                    format!("account {to} is not open"),
                ));
            }
            must_add_up(&other.state, &to)?;
            if amount > account.balance {
                return Err(DomainError::new(
                    "insufficient_funds",
                    format!(
                        "cannot transfer {amount} from {}: the balance is {}",
                        ctx.path(),
                        account.balance
                    ),
                ));
            }
            credited(&other.state, &to, amount)?;
            let from = ctx.path().to_string();
            ctx.emit(&TransferSent {
                to: to.clone(),
                amount,
            })?;
            ctx.emit_to(&to, &TransferReceived { from, amount })
        })?;
    Ok(())
}

/// The demo's commands, in order: what `make demo` applies.
pub const DEMO_COMMANDS: &[&str] = &[
    r#"{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#,
    r#"{"path":"accounts/bob","name":"open","params":{"owner":"Bob"}}"#,
    r#"{"path":"accounts/alice","name":"deposit","params":{"amount":12000}}"#,
    r#"{"path":"accounts/alice","name":"Transfer","params":{"to":"accounts/bob","amount":4500}}"#,
    r#"{"path":"accounts/bob","name":"withdraw","params":{"amount":1000}}"#,
    r#"{"path":"accounts/bob","name":"withdraw","params":{"amount":999999}}"#,
];
