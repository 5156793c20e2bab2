//! Loose objects: one zlib-compressed file per object at `<root>/<hex[0:2]>/<hex[2:4]>/<hex[4:]>`,
//! go-retro's layout. Each write is durable on return: temp file in the target directory, write,
//! fsync, rename, fsync the directory (and any directory created on the way).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use flate2::Compression;

use super::{Error, ObjectStore};
use crate::fsutil;
use crate::hash::{ObjectId, Prefix};
use crate::object::EncodedObject;
use crate::storage::FsStorage;

/// The most bytes a loose object may inflate to (a guard against zip bombs).
const MAX_OBJECT: u64 = 64 << 20;

/// A directory of loose objects.
pub struct LooseStore {
    root: PathBuf,
}

impl LooseStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> LooseStore {
        LooseStore { root: root.into() }
    }

    /// The directory holding the objects.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of one object.
    pub fn path_of(&self, id: &ObjectId) -> PathBuf {
        let hex = id.to_hex();
        self.root.join(&hex[0..2]).join(&hex[2..4]).join(&hex[4..])
    }

    fn write_one(&self, object: &EncodedObject) -> Result<(), Error> {
        let path = self.path_of(&object.id());
        if path.exists() {
            return Ok(());
        }
        let dir = path.parent().expect("an object path has a parent");
        fsutil::create_dir_durable(&FsStorage, dir).map_err(Error::io("create directory", dir))?;
        let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
        encoder
            .write_all(object.bytes())
            .and_then(|_| encoder.finish())
            .map_err(Error::io("compress", &path))
            .and_then(|compressed| {
                fsutil::write_atomic(&FsStorage, &path, &compressed)
                    .map_err(Error::io("write", &path))
            })
    }

    /// Removes one object's file (gc after it was packed).
    pub fn remove(&self, id: &ObjectId) -> Result<(), Error> {
        let path = self.path_of(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", path)(e)),
        }
    }

    /// The modification time of an object's file, for grace periods.
    pub fn mtime(&self, id: &ObjectId) -> Option<std::time::SystemTime> {
        fs::metadata(self.path_of(id))
            .and_then(|m| m.modified())
            .ok()
    }

    fn hex_dirs(dir: &Path, len: usize) -> Result<Vec<(String, PathBuf)>, Error> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list", dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(Error::io("list", dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.len() == len
                && name
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                out.push((name, entry.path()));
            }
        }
        out.sort();
        Ok(out)
    }
}

impl ObjectStore for LooseStore {
    fn read(&self, id: &ObjectId) -> Result<Option<EncodedObject>, Error> {
        let path = self.path_of(id);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", path)(e)),
        };
        let mut bytes = Vec::new();
        ZlibDecoder::new(file)
            .take(MAX_OBJECT + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::Corrupt {
                id: *id,
                reason: format!("'{}' does not inflate: {e}", path.display()),
            })?;
        if bytes.len() as u64 > MAX_OBJECT {
            return Err(Error::Corrupt {
                id: *id,
                reason: format!(
                    "'{}' inflates to more than {MAX_OBJECT} bytes",
                    path.display()
                ),
            });
        }
        super::verify(id, bytes).map(Some)
    }

    fn contains(&self, id: &ObjectId) -> Result<bool, Error> {
        Ok(self.path_of(id).is_file())
    }

    fn write(&self, objects: &[EncodedObject]) -> Result<(), Error> {
        objects.iter().try_for_each(|o| self.write_one(o))
    }

    fn sync(&self) -> Result<(), Error> {
        Ok(())
    }

    fn for_each_id(&self, f: &mut dyn FnMut(ObjectId) -> Result<(), Error>) -> Result<(), Error> {
        for (a, dir_a) in Self::hex_dirs(&self.root, 2)? {
            for (b, dir_b) in Self::hex_dirs(&dir_a, 2)? {
                for (rest, _) in Self::hex_dirs(&dir_b, 60)? {
                    if let Ok(id) = ObjectId::from_hex(&format!("{a}{b}{rest}")) {
                        f(id)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn find_prefix(&self, prefix: &Prefix, limit: usize) -> Result<Vec<ObjectId>, Error> {
        let hex = prefix.as_str();
        let mut found = Vec::new();
        let dir = self.root.join(&hex[0..2]);
        for (b, dir_b) in Self::hex_dirs(&dir, 2)? {
            if !b.starts_with(&hex[2..hex.len().min(4)]) {
                continue;
            }
            for (rest, _) in Self::hex_dirs(&dir_b, 60)? {
                if let Ok(id) = ObjectId::from_hex(&format!("{}{b}{rest}", &hex[0..2])) {
                    if prefix.matches(&id) {
                        found.push(id);
                        if found.len() >= limit {
                            return Ok(found);
                        }
                    }
                }
            }
        }
        Ok(found)
    }

    fn describe(&self) -> String {
        format!("loose store at '{}'", self.root.display())
    }
}
