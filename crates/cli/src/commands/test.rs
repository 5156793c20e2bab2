//! `retro test SPEC.jsonl [--manifest FILE]`: given/when/then cases (one JSON object a line, see
//! docs/handlers.md) run against a domain's handlers, Rust or exec, each in a fresh in-memory
//! depot, with a TAP report on stdout: the plan `1..N`, then `ok N - name` or `not ok N - name`
//! followed by the mismatch, indented. The whole spec is parsed before any case runs, so a
//! malformed line fails the command (exit 1, naming the line) with nothing run.

use std::io::Read;
use std::path::Path;

use anyhow::{Context as _, Result};

use engine::testing::{parse_spec, TestDomain};
use engine::{example, exec, Manifest};

use crate::error::TestsFailed;
use crate::ui::Ui;

/// A case name as a TAP description: one line, no control characters, `#` (a TAP directive)
/// escaped.
fn description(name: &str) -> String {
    depot::escape_invisible(name).replace('#', "\\#")
}

pub fn run(spec: &Path, manifest: Option<&Path>, ui: &mut Ui) -> Result<()> {
    let text = if spec == Path::new("-") {
        let mut text = Vec::new();
        std::io::stdin()
            .read_to_end(&mut text)
            .context("cannot read the spec from stdin")?;
        text
    } else {
        std::fs::read(spec).with_context(|| format!("cannot read the spec '{}'", spec.display()))?
    };
    let cases = parse_spec(&text).with_context(|| match spec.to_str() {
        Some("-") => "cannot run the spec from stdin".to_owned(),
        _ => format!("cannot run the spec '{}'", spec.display()),
    })?;
    let mut domain = Manifest::new();
    match manifest {
        Some(path) => exec::load_manifest(path, &mut domain)?,
        None => example::register_bank(&mut domain)?,
    }
    let domain = TestDomain::new(domain);
    ui.line(format!("1..{}", cases.len()))?;
    let mut failed = 0;
    for (i, case) in cases.iter().enumerate() {
        match domain.check(case) {
            Ok(()) => ui.line(format!("ok {} - {}", i + 1, description(&case.name)))?,
            Err(mismatch) => {
                failed += 1;
                ui.line(format!("not ok {} - {}", i + 1, description(&case.name)))?;
                for line in mismatch.report().lines() {
                    ui.line(format!("  {}", depot::escape_invisible(line)))?;
                }
            }
        }
        // A case may take a while (exec handlers): report each as it ends.
        ui.flush()?;
    }
    if failed > 0 {
        return Err(TestsFailed {
            failed,
            total: cases.len(),
        }
        .into());
    }
    Ok(())
}
