//! Helpers shared by the engine tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use depot::Depot;
use engine::{example, Engine, Manifest};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/domain")
}

pub fn native_engine(manifest: Manifest) -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let depot = Arc::new(Depot::init(dir.path().join("d")).unwrap());
    (dir, Engine::new(depot, manifest))
}

pub fn bank() -> (tempfile::TempDir, Engine) {
    native_engine(example::bank_manifest().unwrap())
}

/// Every file of a depot directory with its bytes (the derived index and lock files excluded).
pub fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.strip_prefix(dir).unwrap().display().to_string();
            if name.starts_with("index.sqlite")
                || name.starts_with("snapshots.sqlite")
                || name == "lock"
                || name == "packs/write.lock"
            {
                continue;
            }
            out.push((name, std::fs::read(&path).unwrap()));
        }
    }
    out.sort();
    out
}

pub fn depot_dir(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("d")
}
