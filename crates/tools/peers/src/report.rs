//! Figures as JSON lines on stdout, and latency percentiles.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

/// One measured figure, printed as one JSON object per line.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What was measured: `disk`, `sqlite`, `git`.
    pub peer: &'static str,
    /// The figure's name, e.g. `durable_commit`.
    pub figure: String,
    /// Unit of `value`, e.g. `commands/s`, `us`, `B/event`.
    pub unit: &'static str,
    /// The measured value.
    pub value: f64,
    /// Sample size: operations, commands or events behind the value.
    pub n: u64,
    /// How it was measured, when the name does not say it all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Figure {
    /// A figure without a note; `value` is rounded to 3 decimals.
    pub fn new(
        peer: &'static str,
        figure: impl Into<String>,
        unit: &'static str,
        value: f64,
        n: u64,
    ) -> Self {
        Self {
            peer,
            figure: figure.into(),
            unit,
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

/// Where figures go: printed as they come (and kept, for tests).
#[derive(Debug, Default)]
pub struct Report {
    print: bool,
    figures: Vec<Figure>,
}

impl Report {
    /// A report printing each figure as a JSON line on stdout.
    pub fn printing() -> Self {
        Self {
            print: true,
            figures: Vec::new(),
        }
    }

    /// A report only keeping its figures.
    #[cfg(test)]
    pub fn collecting() -> Self {
        Self::default()
    }

    /// Records a figure, printing it if this report prints.
    pub fn push(&mut self, figure: Figure) -> Result<()> {
        if self.print {
            let line = serde_json::to_string(&figure).context("encoding a figure")?;
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{line}")
                .and_then(|()| stdout.flush())
                .context("writing to stdout")?;
        }
        self.figures.push(figure);
        Ok(())
    }

    /// The figures recorded so far.
    #[cfg(test)]
    pub fn figures(&self) -> &[Figure] {
        &self.figures
    }
}

/// `count` operations over `elapsed`, per second.
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// Median and 99th percentile of a set of latencies, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    /// The median.
    pub p50_us: f64,
    /// The 99th percentile.
    pub p99_us: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples` (sorted in place); zeros when empty.
    pub fn of(samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        let at = |p: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1].as_secs_f64() * 1e6
        };
        Self {
            p50_us: at(0.50),
            p99_us: at(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let p = Percentiles::of(&mut samples);
        assert_eq!((p.p50_us, p.p99_us), (50.0, 99.0));
        assert_eq!(Percentiles::of(&mut []).p50_us, 0.0);
    }

    #[test]
    fn figures_are_json_lines() {
        let figure = Figure::new("sqlite", "durable_commit", "commands/s", 2100.5004, 2000);
        let json = serde_json::to_string(&figure).unwrap();
        assert_eq!(
            json,
            r#"{"peer":"sqlite","figure":"durable_commit","unit":"commands/s","value":2100.5,"n":2000}"#
        );
    }
}
