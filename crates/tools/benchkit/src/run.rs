//! Running the pieces of a measurement: the tools' [`sibling_binary`] (built next to the running
//! one) and [`join_all`] for worker threads.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// The executable `name` in the directory of the running one; `hint` says how to build it when it
/// is missing (e.g. "`cargo build --release -p retro-cli`").
pub fn sibling_binary(name: &str, hint: &str) -> Result<PathBuf> {
    let me = std::env::current_exe().context("finding this executable's own path")?;
    let dir = me
        .parent()
        .context("this executable's path has no parent")?;
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        bail!("{} not found: build it with {hint}", path.display());
    }
    Ok(path)
}

/// Takes every joined thread's outcome (`handles.into_iter().map(|h| h.join())`, scoped or not)
/// and returns the first error any returned; a thread that panicked is an error naming `what`
/// ("a writer", "a client"). Every thread is joined, also after an error.
pub fn join_all<I>(joined: I, what: &str) -> Result<()>
where
    I: IntoIterator<Item = std::thread::Result<Result<()>>>,
{
    let mut first = None;
    for outcome in joined {
        let result = outcome.unwrap_or_else(|_| Err(anyhow::anyhow!("{what} thread panicked")));
        if let Err(e) = result {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_all_reports_errors_and_panics() {
        let ok: Vec<_> = (0..3).map(|_| std::thread::spawn(|| Ok(()))).collect();
        assert!(join_all(ok.into_iter().map(|h| h.join()), "a worker").is_ok());
        let failing = vec![
            std::thread::spawn(|| Ok(())),
            std::thread::spawn(|| bail!("no")),
        ];
        let err = join_all(failing.into_iter().map(|h| h.join()), "a worker").unwrap_err();
        assert_eq!(err.to_string(), "no");
        let panicking = vec![std::thread::spawn(|| -> Result<()> { panic!("boom") })];
        let err = join_all(panicking.into_iter().map(|h| h.join()), "a worker")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "a worker thread panicked");
    }

    #[test]
    fn a_missing_sibling_says_how_to_build_it() {
        let err = sibling_binary("no-such-tool", "`make it`").unwrap_err();
        assert!(
            err.to_string().ends_with("build it with `make it`"),
            "{err}"
        );
    }
}
