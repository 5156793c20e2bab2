//! The disk's own limits: what one durable append or one lock-file ref update costs here.
//!
//! Every peer's durable write ends in one of these, so they bound what any design can reach on
//! this filesystem: an append of 1 KiB followed by `fdatasync`, an overwrite of a preallocated
//! file followed by `fdatasync`, and a Git-style lock-file ref update (`O_EXCL` create, write,
//! `fsync`, rename), with and without a directory `fsync` after the rename.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use benchkit::{per_second, Figure, Percentiles};

use crate::report::Report;

const PEER: &str = "disk";
/// Unmeasured operations run first, so that file creation and caches settle.
const WARMUP: usize = 20;

/// Options of `retro-peers fsync`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Operations measured per figure.
    #[arg(long, default_value_t = Args::DEFAULT_N)]
    pub n: usize,
    /// Bytes written per append or overwrite.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
}

impl Args {
    const DEFAULT_N: usize = 2000;

    /// The sizes `retro-peers all --quick` uses.
    pub fn quick() -> Self {
        Self {
            n: 1000,
            ..Self::default()
        }
    }
}

impl Default for Args {
    fn default() -> Self {
        Self {
            n: Self::DEFAULT_N,
            size: 1024,
        }
    }
}

/// Measures the disk in `dir` (an empty scratch directory).
pub fn run(args: &Args, dir: &Path, report: &mut Report) -> Result<()> {
    let n = args.n.max(1);
    eprintln!("fsync: {n} appends of {} B + fdatasync", args.size);
    let samples = append(&dir.join("append.log"), args.size, n)?;
    push_all(report, "append_fdatasync", samples, "ops/s")?;

    eprintln!("fsync: {n} overwrites of a preallocated file + fdatasync");
    let samples = overwrite(&dir.join("prealloc.dat"), args.size, n)?;
    push_all(report, "overwrite_prealloc_fdatasync", samples, "ops/s")?;

    eprintln!("fsync: {n} lock-file ref updates");
    let samples = lock_file_updates(dir, n, false)?;
    push_all(report, "lockfile_ref_update", samples, "ops/s")?;

    eprintln!("fsync: {n} lock-file ref updates with a directory fsync");
    let samples = lock_file_updates(dir, n, true)?;
    push_all(report, "lockfile_ref_update_dirsync", samples, "ops/s")?;
    Ok(())
}

/// Pushes the rate (from the summed latencies) and the p50 and p99 of `samples`.
fn push_all(
    report: &mut Report,
    name: &str,
    mut samples: Vec<Duration>,
    unit: &'static str,
) -> Result<()> {
    let n = samples.len() as u64;
    let total: Duration = samples.iter().sum();
    let p = Percentiles::of(&mut samples);
    report.push(Figure::new(PEER, name, unit, per_second(n, total), n))?;
    report.push(Figure::new(PEER, format!("{name}_p50"), "us", p.p50_us, n))?;
    report.push(Figure::new(PEER, format!("{name}_p99"), "us", p.p99_us, n))
}

/// Times `n` appends of `size` bytes, each followed by `fdatasync`.
fn append(path: &Path, size: usize, n: usize) -> Result<Vec<Duration>> {
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let block = vec![b'x'; size];
    let mut samples = Vec::with_capacity(n);
    for i in 0..WARMUP + n {
        let start = Instant::now();
        file.write_all(&block).context("appending")?;
        file.sync_data().context("fdatasync")?;
        if i >= WARMUP {
            samples.push(start.elapsed());
        }
    }
    Ok(samples)
}

/// Times `n` overwrites of `size` bytes in a file written and synced beforehand.
fn overwrite(path: &Path, size: usize, n: usize) -> Result<Vec<Duration>> {
    let file = File::create_new(path).with_context(|| format!("creating {}", path.display()))?;
    let block = vec![b'y'; size];
    let slots = WARMUP + n;
    for slot in 0..slots {
        file.write_all_at(&block, (slot * size) as u64)
            .context("preallocating")?;
    }
    file.sync_all().context("fsync")?;
    let mut samples = Vec::with_capacity(n);
    for slot in 0..slots {
        let start = Instant::now();
        file.write_all_at(&block, (slot * size) as u64)
            .context("overwriting")?;
        file.sync_data().context("fdatasync")?;
        if slot >= WARMUP {
            samples.push(start.elapsed());
        }
    }
    Ok(samples)
}

/// Times `n` Git-style ref updates: create `HEAD.lock` exclusively, write a 72-byte value,
/// `fsync`, rename over `HEAD`, and if `dir_sync`, `fsync` the directory.
fn lock_file_updates(dir: &Path, n: usize, dir_sync: bool) -> Result<Vec<Duration>> {
    let refs = dir.join(if dir_sync { "refs-dirsync" } else { "refs" });
    fs::create_dir(&refs).with_context(|| format!("creating {}", refs.display()))?;
    let directory = File::open(&refs).with_context(|| format!("opening {}", refs.display()))?;
    let (lock, head) = (refs.join("HEAD.lock"), refs.join("HEAD"));
    let mut samples = Vec::with_capacity(n);
    for i in 0..WARMUP + n {
        let value = format!("sha256:{i:064x}\n");
        let start = Instant::now();
        let mut file = File::create_new(&lock).context("taking the lock")?;
        file.write_all(value.as_bytes())
            .context("writing the lock file")?;
        file.sync_all().context("fsync")?;
        drop(file);
        fs::rename(&lock, &head).context("renaming the lock file")?;
        if dir_sync {
            directory.sync_all().context("fsync of the directory")?;
        }
        if i >= WARMUP {
            samples.push(start.elapsed());
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_figure() {
        let dir = tempfile::tempdir().unwrap();
        let mut report = Report::collecting();
        let args = Args { n: 5, size: 64 };
        run(&args, dir.path(), &mut report).unwrap();
        assert_eq!(report.figures().len(), 12);
        assert!(report.figures().iter().all(|f| f.value > 0.0 && f.n == 5));
        assert_eq!(
            fs::read(dir.path().join("append.log")).unwrap().len(),
            64 * 25
        );
    }
}
