//! Compacted reflogs: `retro gc` folds a reflog's lines into one zstd frame at the start of the
//! file, and commits go on appending plain lines after it.
//!
//! ```text
//! RETRORL1 | frame length u64 big-endian | zstd frame of the lines | plain lines appended since
//! ```
//!
//! A reflog's lines repeat each move's old id (the previous line's new one), dates a second
//! apart and the same session: zstd stores a line in about a third of its bytes. The file is
//! replaced whole (temp file, fsync, rename, fsync of the directory) under the depot lock, so a
//! crash leaves the old reflog or the new one, never a mix; it is streamed through, so a
//! reflog of millions of lines is never held in memory.

use std::io::{self, Read, Write};
use std::path::Path;

use crate::fsutil;
use crate::storage::{OpenOptions, Storage, StorageFile, Writer};

/// The first bytes of a compacted reflog.
pub(crate) const MAGIC: &[u8; 8] = b"RETRORL1";
const HEADER: u64 = 16;
/// Plain reflogs smaller than this are left as they are.
const WORTH_IT: u64 = 16 << 10;
/// zstd's level: fast enough for a reflog of millions of lines in a few seconds.
const LEVEL: i32 = 3;
/// No reflog line is longer (a ref move's line is ~250 bytes).
const MAX_TEXT: u64 = 1 << 40;

/// The text of a reflog file's bytes: the frame's lines, then the plain ones after it.
#[cfg(test)]
pub(crate) fn text(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if !bytes.starts_with(MAGIC) {
        return Ok(bytes.to_vec());
    }
    let (frame, rest) = split(bytes)?;
    let mut out = Vec::with_capacity(frame.len() * 3 + rest.len());
    zstd::stream::read::Decoder::with_buffer(frame)
        .and_then(|d| d.take(MAX_TEXT).read_to_end(&mut out))
        .map_err(|e| format!("its compacted part does not decompress: {e}"))?;
    // The frame's text ends with a newline, so a line appended after it starts a line.
    out.extend_from_slice(rest);
    Ok(out)
}

/// A reader of the text of the reflog file at `path` (the frame's lines, then the plain ones),
/// streamed: a reflog of millions of lines is never held in memory. `Ok(None)` when there is no
/// such file.
pub(crate) fn reader(storage: &dyn Storage, path: &Path) -> io::Result<Option<Box<dyn Read>>> {
    let file = match storage.open(path, OpenOptions::READ) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.len()?;
    let mut head = [0u8; HEADER as usize];
    let compacted =
        len >= 8 && file.read_exact_at(&mut head[..8], 0).is_ok() && head[..8] == *MAGIC;
    if !compacted {
        return Ok(Some(Box::new(ReadAt {
            file,
            pos: 0,
            end: len,
        })));
    }
    if len < HEADER {
        return Err(io::Error::other("its compacted header is cut short"));
    }
    file.read_exact_at(&mut head, 0)?;
    let frame_len = u64::from_be_bytes(head[8..16].try_into().expect("8 bytes"));
    let end = HEADER
        .checked_add(frame_len)
        .filter(|&end| end <= len)
        .ok_or_else(|| io::Error::other("its compacted part runs past the end of the file"))?;
    let file: std::sync::Arc<dyn StorageFile> = std::sync::Arc::from(file);
    let frame = ReadAt {
        file: file.clone(),
        pos: HEADER,
        end,
    };
    let decoder = zstd::stream::read::Decoder::new(frame)
        .map_err(|e| io::Error::other(format!("its compacted part does not decompress: {e}")))?;
    let tail = ReadAt {
        file,
        pos: end,
        end: len,
    };
    Ok(Some(Box::new(Checked(decoder).take(MAX_TEXT).chain(tail))))
}

/// Names a decompression failure for what it is.
struct Checked<R>(R);

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .read(buf)
            .map_err(|e| io::Error::other(format!("its compacted part does not decompress: {e}")))
    }
}

#[cfg(test)]
fn split(bytes: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let len = bytes
        .get(8..16)
        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
        .ok_or("its compacted header is cut short")?;
    let end = HEADER
        .checked_add(len)
        .filter(|&end| end <= bytes.len() as u64)
        .ok_or("its compacted part runs past the end of the file")? as usize;
    Ok((&bytes[HEADER as usize..end], &bytes[end..]))
}

/// Compacts the reflog at `path` if it is worth it: `Ok(false)` when it is missing, small, or
/// compacted with nothing appended since. The new file is written in `temp_dir` (the depot's
/// root, where an open removes what a killed gc left there) and renamed over the reflog.
pub(crate) fn compact(storage: &dyn Storage, path: &Path, temp_dir: &Path) -> io::Result<bool> {
    let file = match storage.open(path, OpenOptions::READ) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let len = file.len()?;
    let mut head = [0u8; HEADER as usize];
    let compacted =
        len >= HEADER && file.read_exact_at(&mut head, 0).is_ok() && head[..8] == *MAGIC;
    let frame_len = u64::from_be_bytes(head[8..16].try_into().expect("8 bytes"));
    if (!compacted && len < WORTH_IT) || (compacted && HEADER + frame_len >= len) {
        return Ok(false);
    }
    if compacted && HEADER + frame_len > len {
        return Err(io::Error::other(
            "its compacted part runs past the end of the file",
        ));
    }
    let temp = fsutil::temp_path_for(&temp_dir.join("reflog"));
    let result = (|| {
        let out = storage.open(&temp, OpenOptions::CREATE_NEW)?;
        let mut writer = io::BufWriter::with_capacity(1 << 20, Writer(&*out));
        writer.write_all(MAGIC)?;
        writer.write_all(&0u64.to_be_bytes())?;
        let mut encoder = zstd::stream::write::Encoder::new(writer, LEVEL)?;
        encoder.include_checksum(true)?;
        let mut last = b'\n';
        {
            let mut feed = |reader: &mut dyn Read| -> io::Result<()> {
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = reader.read(&mut buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    last = buf[n - 1];
                    encoder.write_all(&buf[..n])?;
                }
            };
            let tail_start = if compacted {
                let frame = ReadAt {
                    file: &*file,
                    pos: HEADER,
                    end: HEADER + frame_len,
                };
                feed(&mut zstd::stream::read::Decoder::new(frame)?)?;
                HEADER + frame_len
            } else {
                0
            };
            // The plain lines: a torn last line (a power cut) stays as it is, ended here by a
            // newline so that the next append starts a line of its own.
            feed(&mut ReadAt {
                file: &*file,
                pos: tail_start,
                end: len,
            })?;
        }
        if last != b'\n' {
            encoder.write_all(b"\n")?;
        }
        let writer = encoder.finish()?;
        writer.into_inner().map_err(|e| e.into_error())?;
        let total = out.len()?;
        out.write_all_at(&(total - HEADER).to_be_bytes(), 8)?;
        out.sync_all()?;
        drop(out);
        storage.rename(&temp, path)?;
        if let Some(dir) = path.parent() {
            fsutil::fsync_dir(storage, dir)?;
        }
        fsutil::fsync_dir(storage, temp_dir)?;
        Ok(true)
    })();
    if result.is_err() {
        let _ = storage.remove_file(&temp);
    }
    result
}

/// A `Read` over `[pos, end)` of a file: borrowed (`&dyn StorageFile`), owned (`Box`) or
/// shared by two readers (`Arc`).
struct ReadAt<F> {
    file: F,
    pos: u64,
    end: u64,
}

impl<F: std::ops::Deref<Target = dyn StorageFile>> Read for ReadAt<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (self.end.saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FsStorage;

    fn lines(n: usize, from: usize) -> String {
        (from..from + n)
            .map(|i| {
                format!(
                    "sha256:{i:064x} sha256:{:064x} 2026-01-01T00:00:00Z s1\tcommit {i}\n",
                    i + 1
                )
            })
            .collect()
    }

    #[test]
    fn compacting_keeps_every_line_and_appends_go_on_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master");
        let storage = FsStorage;
        std::fs::write(&path, lines(500, 0)).unwrap();
        assert!(compact(&storage, &path, dir.path()).unwrap());
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(MAGIC));
        assert!(bytes.len() * 2 < lines(500, 0).len());
        assert_eq!(text(&bytes).unwrap(), lines(500, 0).as_bytes());
        assert!(
            !compact(&storage, &path, dir.path()).unwrap(),
            "nothing new to fold"
        );
        // Appended lines (and a torn one) follow the frame; a second compaction folds them.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(lines(3, 500).as_bytes()).unwrap();
        file.write_all(b"sha256:torn").unwrap();
        drop(file);
        let expected = format!("{}{}sha256:torn", lines(500, 0), lines(3, 500));
        assert_eq!(
            text(&std::fs::read(&path).unwrap()).unwrap(),
            expected.as_bytes()
        );
        assert!(compact(&storage, &path, dir.path()).unwrap());
        assert_eq!(
            text(&std::fs::read(&path).unwrap()).unwrap(),
            format!("{expected}\n").as_bytes()
        );
    }

    fn streamed(path: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        reader(&FsStorage, path)
            .unwrap()
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn the_streamed_text_is_the_whole_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master");
        assert!(reader(&FsStorage, &path).unwrap().is_none());
        std::fs::write(&path, lines(700, 0)).unwrap();
        assert_eq!(streamed(&path), lines(700, 0).as_bytes());
        assert!(compact(&FsStorage, &path, dir.path()).unwrap());
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(lines(2, 700).as_bytes()).unwrap();
        drop(file);
        let expected = format!("{}{}", lines(700, 0), lines(2, 700));
        assert_eq!(streamed(&path), expected.as_bytes());
        assert_eq!(
            text(&std::fs::read(&path).unwrap()).unwrap(),
            expected.as_bytes()
        );
        // A damaged frame is an error, not a short text.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[40] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let mut out = Vec::new();
        let result = reader(&FsStorage, &path)
            .unwrap()
            .unwrap()
            .read_to_end(&mut out);
        assert!(
            result.is_err(),
            "a damaged frame read as {} bytes",
            out.len()
        );
    }

    #[test]
    fn small_or_missing_reflogs_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master");
        assert!(!compact(&FsStorage, &path, dir.path()).unwrap());
        std::fs::write(&path, lines(3, 0)).unwrap();
        assert!(!compact(&FsStorage, &path, dir.path()).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), lines(3, 0).as_bytes());
    }

    #[test]
    fn damaged_compacted_reflogs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master");
        std::fs::write(&path, lines(500, 0)).unwrap();
        compact(&FsStorage, &path, dir.path()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(text(&bytes[..20]).is_err());
        let mut flipped = bytes.clone();
        flipped[40] ^= 0x55;
        assert!(text(&flipped).is_err());
        let mut long = bytes.clone();
        long[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(text(&long).is_err());
        assert!(compact(&FsStorage, &path, dir.path()).is_ok());
    }
}
