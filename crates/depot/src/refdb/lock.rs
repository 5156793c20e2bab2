//! The depot's writer lock: an OS advisory lock (fs2 `flock`) on one file, held for a whole
//! transaction. The kernel drops it when the holder dies, so a SIGKILLed writer never leaves the
//! depot locked. The file records the holder's pid so that a writer that waited too long can say
//! who holds it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use fs2::FileExt;

use super::Error;

/// How long a writer waits for the lock by default.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// A held depot lock; dropping it releases the lock.
#[must_use = "the lock is released when this value is dropped"]
pub struct DepotLock {
    file: File,
}

impl DepotLock {
    /// Takes the lock on `path`, waiting with backoff up to `timeout`.
    pub fn acquire(path: &Path, timeout: Duration) -> Result<DepotLock, Error> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(Error::io("open", path))?;
        let start = Instant::now();
        let mut pause = Duration::from_micros(50);
        loop {
            match file.try_lock_exclusive() {
                Ok(()) => break,
                Err(e) if is_contended(&e) => {
                    if start.elapsed() >= timeout {
                        let mut holder = String::new();
                        let _ = file.seek(SeekFrom::Start(0));
                        let _ = file.read_to_string(&mut holder);
                        return Err(Error::Locked {
                            path: path.to_path_buf(),
                            holder: holder.trim().to_owned(),
                        });
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Err(e) => return Err(Error::io("lock", path)(e)),
            }
        }
        let _ = file.set_len(0);
        let _ = file.seek(SeekFrom::Start(0));
        let _ = write!(file, "pid {}", std::process::id());
        Ok(DepotLock { file })
    }
}

fn is_contended(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock
        || e.raw_os_error() == fs2::lock_contended_error().raw_os_error()
}

impl Drop for DepotLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = FileExt::unlock(&self.file);
    }
}
