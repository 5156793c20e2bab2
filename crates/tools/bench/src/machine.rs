//! [`Machine`]: what a run ran on (CPUs, kernel, memory, the scratch directory's filesystem), for
//! the report. It depends on nothing else in the crate.

use std::path::Path;

use serde::Serialize;

/// What the run ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs available.
    pub nproc: usize,
    /// The CPU model from `/proc/cpuinfo`.
    pub cpu: String,
    /// The kernel release.
    pub kernel: String,
    /// Total memory, from `/proc/meminfo`.
    pub memory: String,
    /// The filesystem of the scratch directory (type, device, mount point, options).
    pub filesystem: String,
}

impl Machine {
    /// Describes this machine, with the filesystem holding `scratch`.
    pub fn describe(scratch: &Path) -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
        let memory = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<f64>().ok())
            .map(|kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0))
            .unwrap_or_else(|| "unknown".to_owned());
        Self {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            kernel,
            memory,
            filesystem: filesystem_of(scratch, &read("/proc/mounts")),
        }
    }
}

/// The `/proc/mounts` line whose mount point is the longest prefix of `dir`, described.
fn filesystem_of(dir: &Path, mounts: &str) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let device = fields.next()?;
            let point = fields.next()?.replace("\\040", " ");
            let kind = fields.next()?;
            let options = fields.next().unwrap_or("");
            dir.starts_with(&point).then(|| {
                (
                    point.len(),
                    format!("{kind} on {device} at {point} ({options})"),
                )
            })
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, text)| text)
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filesystem_is_the_longest_mount_prefix() {
        let mounts = "/dev/vda / ext4 rw,relatime 0 0\n/dev/vdb /work xfs rw 0 0\n";
        assert!(filesystem_of(Path::new("/work/x"), mounts).starts_with("xfs on /dev/vdb"));
    }
}
