//! [`Figure`]: one measured value, as `retro-peers` prints it (one JSON object per line) and
//! `retro-bench` reads and reports it.

use serde::{Deserialize, Serialize};

/// One measured figure: retro's (`peer` is `retro`), the bench's own disk figures (`disk-bench`)
/// or one of `retro-peers`' (`disk`, `sqlite`, `git`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Figure {
    /// Who was measured.
    pub peer: String,
    /// The figure's name, e.g. `durable_commit`.
    pub figure: String,
    /// Unit of `value`, e.g. `commands/s`, `us`, `B/event`.
    pub unit: String,
    /// The measured value.
    pub value: f64,
    /// Sample size: operations, commands or events behind the value.
    pub n: u64,
    /// How it was measured, when the name does not say it all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Figure {
    /// A figure without a note; `value` is rounded to 3 decimals.
    pub fn new(
        peer: impl Into<String>,
        figure: impl Into<String>,
        unit: impl Into<String>,
        value: f64,
        n: u64,
    ) -> Self {
        Self {
            peer: peer.into(),
            figure: figure.into(),
            unit: unit.into(),
            value: (value * 1000.0).round() / 1000.0,
            n,
            note: None,
        }
    }

    /// The same figure with a note.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_json_lines() {
        let figure = Figure::new("sqlite", "durable_commit", "commands/s", 2100.5004, 2000);
        let json = serde_json::to_string(&figure).unwrap();
        assert_eq!(
            json,
            r#"{"peer":"sqlite","figure":"durable_commit","unit":"commands/s","value":2100.5,"n":2000}"#
        );
        assert_eq!(serde_json::from_str::<Figure>(&json).unwrap(), figure);
    }
}
