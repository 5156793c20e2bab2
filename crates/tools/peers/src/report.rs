//! [`Report`]: where figures go, one JSON line each on stdout (the [`Figure`] itself, percentiles
//! and rates are `benchkit`'s, shared with `retro-bench`, which reads these lines).

use std::io::Write;

use anyhow::{Context, Result};
use benchkit::Figure;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_collecting_report_keeps_its_figures() {
        let mut report = Report::collecting();
        report
            .push(Figure::new(
                "sqlite",
                "durable_commit",
                "commands/s",
                1.0,
                1,
            ))
            .unwrap();
        assert_eq!(report.figures().len(), 1);
    }
}
