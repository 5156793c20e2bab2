//! Finding the depot: `--depot DIR`, then `$RETRO_DEPOT`, then the nearest `.retro` directory from
//! the working directory upward, like Git.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};

/// The name of a depot directory found by walking up.
pub const DEFAULT_DIR: &str = ".retro";

/// Where the depot is, per the rules above.
pub fn depot_dir(flag: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os("RETRO_DEPOT").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
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
