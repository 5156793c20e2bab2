//! Runs `retro-peers` (the binary next to this one) in the same run and collects its figures.
//!
//! `retro-peers` prints one JSON object per line on stdout (parsed into [`Figure`]s) and its
//! progress on stderr (passed through).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use benchkit::Figure;

use crate::figures::Figures;

/// `retro-peers` next to the running executable.
pub fn binary() -> Result<PathBuf> {
    benchkit::sibling_binary(
        "retro-peers",
        "`cargo build --release -p retro-peers` (or pass --no-peers)",
    )
}

/// Runs `retro-peers [--quick] --dir <dir> all`, adding each figure it prints to `figures`;
/// returns how many it printed.
pub fn run(quick: bool, dir: &Path, figures: &mut Figures) -> Result<usize> {
    let binary = binary()?;
    let mut command = Command::new(&binary);
    command.arg("--dir").arg(dir);
    if quick {
        command.arg("--quick");
    }
    command.arg("all");
    eprintln!("retro-bench: running {command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let stdout = child.stdout.take().context("retro-peers has no stdout")?;
    let mut printed = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading retro-peers' output")?;
        if line.trim().is_empty() {
            continue;
        }
        let figure = parse(&line)?;
        figures.push(figure);
        printed += 1;
    }
    let status = child.wait().context("waiting for retro-peers")?;
    if !status.success() {
        bail!("retro-peers failed ({status}) after {printed} figures");
    }
    Ok(printed)
}

/// One JSON line of `retro-peers`.
pub fn parse(line: &str) -> Result<Figure> {
    serde_json::from_str(line).with_context(|| format!("parsing retro-peers' line {line:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_line_becomes_a_figure() {
        let figure = parse(
            r#"{"peer":"git","figure":"fast_import_events","unit":"events/s","value":49679.076,"n":30000,"note":"git"}"#,
        )
        .unwrap();
        assert_eq!(figure.peer, "git");
        assert_eq!(figure.n, 30000);
        assert!(parse("not json").is_err());
    }
}
