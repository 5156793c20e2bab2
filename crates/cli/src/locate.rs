//! Finding the depot: `--depot DIR`, then `$RETRO_DEPOT`, then the nearest `.retro` directory from
//! the working directory upward, like Git.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};

/// The name of a depot directory found by walking up.
pub const DEFAULT_DIR: &str = ".retro";

/// A directory that is not itself a depot but contains `.retro` stands for that depot
/// (`--depot tour`, `retro sync tour c1`, like Git's work trees); anything else (a depot
/// directory, a URL, a path that does not exist) is returned as it is.
pub fn contained(location: &Path) -> PathBuf {
    let inner = location.join(DEFAULT_DIR);
    let is_url = location.to_str().is_some_and(depot_postgres::is_url);
    if !is_url
        && location.is_dir()
        && !location.join("config").exists()
        && !depot::native_without_config(location)
        && inner.is_dir()
    {
        inner
    } else {
        location.to_path_buf()
    }
}

/// Where a clone puts a new depot: in `DST/.retro`, as `retro init` run in DST would, unless DST
/// is a URL or already names a `.retro` directory.
pub fn clone_destination(location: &Path) -> PathBuf {
    let is_url = location.to_str().is_some_and(depot_postgres::is_url);
    if is_url || location.file_name().is_some_and(|n| n == DEFAULT_DIR) {
        location.to_path_buf()
    } else {
        location.join(DEFAULT_DIR)
    }
}

/// Where the depot is, per the rules above.
pub fn depot_dir(flag: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(contained(dir));
    }
    if let Some(dir) = std::env::var_os("RETRO_DEPOT").filter(|d| !d.is_empty()) {
        return Ok(contained(Path::new(&dir)));
    }
    let cwd = std::env::current_dir()?;
    for dir in cwd.ancestors() {
        let candidate = dir.join(DEFAULT_DIR);
        // A `.retro` that lost its config is still the depot: opening it says what is wrong.
        if candidate.join("config").is_file() || depot::native_without_config(&candidate) {
            return Ok(candidate);
        }
    }
    Err(anyhow!(crate::error::NoDepot(cwd)))
}
