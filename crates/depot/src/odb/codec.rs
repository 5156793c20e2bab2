//! Record codecs of the pack store: how an object's encoded bytes are kept in a pack record, and
//! turned back into exactly those bytes.
//!
//! | codec | data |
//! | --- | --- |
//! | 0 | the encoded object as is |
//! | 1 | the encoded object deflated with zlib (RFC 1950) |
//! | 2 | the object *transcoded* (each `sha256:` followed by 64 lowercase hex digits becomes the byte `0xFF` and the 32 raw bytes), compressed with zstd against the pack's dictionary |
//! | 3 | the object as is (it holds a `0xFF` byte, which transcoding reserves), compressed the same way |
//! | 238 | erased by a redaction: zeros, the record's length unchanged |
//!
//! Version 1 packs use codecs 0 and 1; version 2 packs (written by `retro gc`) carry a zstd
//! dictionary trained on their own objects and use 0, 2 and 3. A zstd frame is stored without
//! its 4-byte magic number, with its content size and without a dictionary id or checksum (the
//! record's crc32 and the object's id check it). Decoding is total: damaged data is an error,
//! never a panic, and what it returns is verified against the object's id by the caller, as
//! every read is.
//!
//! Why zstd (the `zstd` crate, bindings to the reference C library): with a dictionary trained
//! on a depot's objects, records of 60-300 bytes shrink to about half of what zlib makes of them
//! (which finds little to reuse inside one small object), and decompress faster.

use std::cell::RefCell;
use std::io::Read;
use std::sync::OnceLock;

use zstd::zstd_safe::{self, CCtx, CParameter, DCtx, DDict};

/// The encoded object as is.
pub(crate) const RAW: u8 = 0;
/// zlib.
pub(crate) const ZLIB: u8 = 1;
/// Transcoded, then zstd with the pack's dictionary.
pub(crate) const ZSTD_TRANSCODED: u8 = 2;
/// zstd with the pack's dictionary.
pub(crate) const ZSTD: u8 = 3;
/// A record a redaction erased in place: its data is zeros (see `PackStore::erase_object_records`).
pub(crate) const ERASED: u8 = 0xEE;

/// The byte that stands for `sha256:` and 64 hex digits in a transcoded object.
const ID_MARK: u8 = 0xFF;
const ID_PREFIX: &[u8] = b"sha256:";
const HEX_LEN: usize = 64;
/// zstd's frame magic number, little-endian: left out of stored frames.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// The largest dictionary a pack carries.
pub(crate) const DICTIONARY_MAX: usize = 16 << 10;
/// Samples are taken until they add up to this many bytes.
pub(crate) const SAMPLE_BYTES: usize = 2 << 20;
/// Fewer samples than this train no dictionary (zstd needs enough of them).
const MIN_SAMPLES: usize = 256;
/// zstd's level for pack records: higher levels bought under 2% on retro's objects.
const LEVEL: i32 = 3;

/// What an object's stored form looks like once transcoded, or `None` when it holds the byte
/// transcoding reserves.
pub(crate) fn transcode(object: &[u8]) -> Option<Vec<u8>> {
    if object.contains(&ID_MARK) {
        return None;
    }
    let mut out = Vec::with_capacity(object.len());
    let mut i = 0;
    while i < object.len() {
        if object[i] == b's' && is_id_at(object, i) {
            out.push(ID_MARK);
            let hex = &object[i + ID_PREFIX.len()..i + ID_PREFIX.len() + HEX_LEN];
            for pair in hex.chunks_exact(2) {
                out.push(nibble(pair[0]) << 4 | nibble(pair[1]));
            }
            i += ID_PREFIX.len() + HEX_LEN;
        } else {
            out.push(object[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Whether `sha256:` and 64 lowercase hex digits start at `i`.
fn is_id_at(bytes: &[u8], i: usize) -> bool {
    let end = i + ID_PREFIX.len() + HEX_LEN;
    end <= bytes.len()
        && bytes[i..].starts_with(ID_PREFIX)
        && bytes[i + ID_PREFIX.len()..end]
            .iter()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

fn nibble(hex: u8) -> u8 {
    match hex {
        b'0'..=b'9' => hex - b'0',
        _ => hex - b'a' + 10,
    }
}

/// The object a transcoded form stands for.
pub(crate) fn untranscode(bytes: &[u8]) -> Result<Vec<u8>, String> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 2);
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == ID_MARK {
            let raw = bytes
                .get(i + 1..i + 33)
                .ok_or_else(|| "a transcoded id is cut short".to_owned())?;
            out.extend_from_slice(ID_PREFIX);
            for byte in raw {
                out.push(HEX[usize::from(byte >> 4)]);
                out.push(HEX[usize::from(byte & 15)]);
            }
            i += 33;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// The form samples for dictionary training take: what codec 2 or 3 would compress.
pub(crate) fn sample_of(object: &[u8]) -> Vec<u8> {
    transcode(object).unwrap_or_else(|| object.to_vec())
}

/// Trains a dictionary on `samples` (transcoded objects); empty when there are too few to
/// train on, and then records are compressed without one.
pub(crate) fn train(samples: &[Vec<u8>]) -> Vec<u8> {
    let total: usize = samples.iter().map(Vec::len).sum();
    if samples.len() < MIN_SAMPLES {
        return Vec::new();
    }
    // zstd wants about ten times the dictionary's size in samples.
    let size = DICTIONARY_MAX.min(total / 10);
    if size < 1024 {
        return Vec::new();
    }
    zstd::dict::from_samples(samples, size).unwrap_or_default()
}

/// A pack's dictionary, prepared for decompression on first use.
pub(crate) struct Dictionary {
    bytes: Vec<u8>,
    prepared: OnceLock<Option<DDict<'static>>>,
}

impl Dictionary {
    pub(crate) fn new(bytes: Vec<u8>) -> Dictionary {
        Dictionary {
            bytes,
            prepared: OnceLock::new(),
        }
    }

    /// `None` for the empty dictionary (records compressed without one) or one zstd refuses.
    fn prepared(&self) -> Option<&DDict<'static>> {
        if self.bytes.is_empty() {
            return None;
        }
        self.prepared
            .get_or_init(|| DDict::try_create(&self.bytes))
            .as_ref()
    }
}

impl std::fmt::Debug for Dictionary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dictionary({} bytes)", self.bytes.len())
    }
}

/// Compresses the records of one pack against its dictionary.
pub(crate) struct Compressor {
    cctx: CCtx<'static>,
    frame: Vec<u8>,
}

impl Compressor {
    pub(crate) fn new(dictionary: &[u8]) -> Result<Compressor, String> {
        let mut cctx = CCtx::try_create().ok_or("zstd could not allocate a context")?;
        let zstd = |code: usize| zstd_safe::get_error_name(code).to_owned();
        for parameter in [
            CParameter::CompressionLevel(LEVEL),
            CParameter::ContentSizeFlag(true),
            CParameter::ChecksumFlag(false),
            CParameter::DictIdFlag(false),
        ] {
            cctx.set_parameter(parameter).map_err(zstd)?;
        }
        if !dictionary.is_empty() {
            cctx.load_dictionary(dictionary).map_err(zstd)?;
        }
        Ok(Compressor {
            cctx,
            frame: Vec::new(),
        })
    }

    /// Appends the stored form of `object` to `out` and returns its codec: the smaller of the
    /// compressed and the plain form.
    pub(crate) fn compress(&mut self, object: &[u8], out: &mut Vec<u8>) -> Result<u8, String> {
        let transcoded = transcode(object);
        let (codec, input) = match &transcoded {
            Some(t) => (ZSTD_TRANSCODED, t.as_slice()),
            None => (ZSTD, object),
        };
        self.frame.clear();
        self.frame.reserve(zstd_safe::compress_bound(input.len()));
        self.cctx
            .compress2(&mut self.frame, input)
            .map_err(|code| zstd_safe::get_error_name(code).to_owned())?;
        if self.frame.len() < 4 || self.frame[..4] != ZSTD_MAGIC {
            return Err("zstd wrote no frame".to_owned());
        }
        if self.frame.len() - 4 >= object.len() {
            out.extend_from_slice(object);
            return Ok(RAW);
        }
        out.extend_from_slice(&self.frame[4..]);
        Ok(codec)
    }
}

thread_local! {
    /// One decompression context per thread: setting one up costs more than a small record.
    static DCTX: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
}

/// The encoded object a record's `codec` and `data` stand for; `dictionary` is the pack's
/// (`None` in a version 1 pack); nothing larger than `limit` bytes is produced.
pub(crate) fn decode(
    codec: u8,
    data: &[u8],
    dictionary: Option<&Dictionary>,
    limit: u64,
) -> Result<Vec<u8>, String> {
    match codec {
        RAW => Ok(data.to_vec()),
        ZLIB => {
            let mut out = Vec::with_capacity(data.len() * 2);
            flate2::read::ZlibDecoder::new(data)
                .take(limit)
                .read_to_end(&mut out)
                .map_err(|e| format!("record does not inflate: {e}"))?;
            Ok(out)
        }
        ZSTD_TRANSCODED | ZSTD => {
            let dictionary = dictionary.ok_or("a zstd record in a pack without a dictionary")?;
            let plain = unzstd(data, dictionary, limit)?;
            if codec == ZSTD_TRANSCODED {
                untranscode(&plain)
            } else {
                Ok(plain)
            }
        }
        ERASED => Err("its data was erased by a redaction".to_owned()),
        other => Err(format!("unknown codec {other}")),
    }
}

fn unzstd(data: &[u8], dictionary: &Dictionary, limit: u64) -> Result<Vec<u8>, String> {
    let mut frame = Vec::with_capacity(4 + data.len());
    frame.extend_from_slice(&ZSTD_MAGIC);
    frame.extend_from_slice(data);
    let size = zstd_safe::get_frame_content_size(&frame)
        .map_err(|_| "a zstd frame header is damaged".to_owned())?
        .ok_or("a zstd frame has no content size")?;
    if size > limit {
        return Err(format!("a zstd frame claims {size} bytes"));
    }
    let mut out: Vec<u8> = Vec::with_capacity(size as usize);
    let written = DCTX.with(|cell| {
        let mut slot = cell.borrow_mut();
        let dctx = match &mut *slot {
            Some(dctx) => dctx,
            None => slot.insert(DCtx::try_create().ok_or(usize::MAX)?),
        };
        match dictionary.prepared() {
            Some(ddict) => dctx.decompress_using_ddict(&mut out, &frame, ddict),
            None if dictionary.bytes.is_empty() => dctx.decompress(&mut out, &frame),
            None => Err(usize::MAX),
        }
    });
    match written {
        Ok(n) if n as u64 == size => Ok(out),
        Ok(n) => Err(format!("a zstd frame gave {n} bytes, not {size}")),
        Err(usize::MAX) => Err("zstd could not use the pack's dictionary".to_owned()),
        Err(code) => Err(format!(
            "record does not decompress: {}",
            zstd_safe::get_error_name(code)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFFIX: &[u8] = b"affix 83\x000 a sha256:0756fae7f4a43d60b5532e1d4da5665daeb0f1a5274f363b99a7757511ec88db\n";

    #[test]
    fn transcoding_round_trips_and_shrinks_ids() {
        let t = transcode(AFFIX).unwrap();
        assert_eq!(t.len(), AFFIX.len() - 7 - 64 + 33);
        assert_eq!(untranscode(&t).unwrap(), AFFIX);
    }

    #[test]
    fn only_lowercase_whole_ids_are_transcoded() {
        for text in [
            &b"sha256:0756FAE7f4a43d60b5532e1d4da5665daeb0f1a5274f363b99a7757511ec88db"[..],
            b"sha256:0756fae7",
            b"sha256:",
            b"",
        ] {
            assert_eq!(transcode(text).unwrap(), text);
        }
    }

    #[test]
    fn objects_with_the_mark_byte_are_not_transcoded() {
        assert!(transcode(b"event json x 1\0\xff").is_none());
    }

    #[test]
    fn damaged_transcoded_forms_are_errors() {
        assert!(untranscode(b"ab\xff\x01\x02").is_err());
    }

    fn samples() -> Vec<Vec<u8>> {
        (0..2000)
            .map(|i| {
                sample_of(
                    format!(
                        "event json IdentityCreated 60\0{{\"identity\":\"id-{i:08}\",\"email\":\"user{i}@example.org\"}}"
                    )
                    .as_bytes(),
                )
            })
            .collect()
    }

    #[test]
    fn compress_then_decode_gives_the_object_back() {
        for dictionary in [train(&samples()), Vec::new()] {
            let mut compressor = Compressor::new(&dictionary).unwrap();
            let dict = Dictionary::new(dictionary.clone());
            for object in [
                AFFIX.to_vec(),
                b"event json x 3\0\xff\xfe\x00".to_vec(),
                b"tiny".to_vec(),
                samples()[7].clone(),
            ] {
                let mut out = Vec::new();
                let codec = compressor.compress(&object, &mut out).unwrap();
                assert_eq!(decode(codec, &out, Some(&dict), 1 << 20).unwrap(), object);
            }
        }
    }

    #[test]
    fn a_dictionary_is_trained_on_enough_samples_and_pays_for_itself() {
        let samples = samples();
        let dictionary = train(&samples);
        assert!(!dictionary.is_empty() && dictionary.len() <= DICTIONARY_MAX);
        let size = |dictionary: &[u8]| {
            let mut compressor = Compressor::new(dictionary).unwrap();
            let mut out = Vec::new();
            for object in &samples {
                compressor
                    .compress(&untranscode(object).unwrap(), &mut out)
                    .unwrap();
            }
            out.len()
        };
        assert!(size(&dictionary) * 3 < size(&[]) * 2);
        assert!(train(&samples[..10]).is_empty());
    }

    #[test]
    fn garbage_never_panics() {
        let dict = Dictionary::new(train(&samples()));
        for data in [
            &b""[..],
            b"\x00",
            b"\xff\xff\xff\xff\xff\xff",
            b"\x20\x05hello",
        ] {
            for codec in 0..5 {
                let _ = decode(codec, data, Some(&dict), 1 << 20);
                let _ = decode(codec, data, None, 1 << 20);
            }
        }
        // A frame that claims more than the limit is refused before allocating.
        let mut compressor = Compressor::new(&[]).unwrap();
        let mut out = Vec::new();
        let codec = compressor.compress(&vec![b'a'; 10_000], &mut out).unwrap();
        assert!(decode(codec, &out, Some(&Dictionary::new(Vec::new())), 100).is_err());
    }
}
