//! The bounded replay of the fuzz targets on stable Rust, shared by the test binaries that run
//! it (`tests/depot/fuzz_smoke.rs`, `tests/engine/fuzz_smoke.rs` include this file by path):
//! every file in `crates/tools/fuzz/corpus-seed/<target>/` (seeds, and the regression inputs of
//! crashes libFuzzer found) and a few thousand pseudo-random inputs (mutations of the seeds, plus
//! random bytes, drawn from `benchkit::Rng` with a fixed seed: the including crates have
//! `retro-benchkit` as a dev-dependency) go through the very check the target runs.

use std::path::PathBuf;

use benchkit::Rng;

/// Pseudo-random inputs per target, on top of the seed files.
pub const RANDOM_INPUTS: usize = 4000;

/// `crates/tools/fuzz/corpus-seed/<target>`, from a test binary of any workspace crate.
pub fn seed_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tools/fuzz/corpus-seed")
        .join(target)
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = seed_dir(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "{} holds no seed", dir.display());
    out
}

/// Bytes worth inserting: the syntax of ids, names, revisions and objects, and a multibyte char.
const DICTIONARY: &[&[u8]] = &[
    b"/",
    b".",
    b"..",
    b"~",
    b"^",
    b"~1",
    b"^2",
    b"0",
    b"9",
    b" ",
    b"\n",
    b"\n\n",
    b"\0",
    b"\t",
    b"sha256:",
    b"refs/",
    b"heads/",
    b"HEAD",
    b".lock",
    b"@{",
    b"a",
    b"f",
    b"\xc3\xa9",
    b"\xe2\x82\xac",
    b"\xff",
    b"affix ",
    b"parent ",
    b"session ",
    b"date ",
    b"event json ",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..1 + rng.index(4) {
        let at = rng.index(data.len() + 1);
        match rng.index(6) {
            0 if !data.is_empty() => {
                let i = rng.index(data.len());
                data[i] ^= 1 << rng.index(8);
            }
            1 if !data.is_empty() => {
                data.remove(at.min(data.len() - 1));
            }
            2 => {
                let word = DICTIONARY[rng.index(DICTIONARY.len())];
                data.splice(at..at, word.iter().copied());
            }
            3 => data.truncate(at),
            4 if !data.is_empty() => {
                let start = rng.index(data.len());
                let end = (start + rng.index(16)).min(data.len());
                let span = data[start..end].to_vec();
                data.splice(at..at, span);
            }
            _ => data.insert(at, rng.next_u64() as u8),
        }
    }
    data
}

/// Rewrites an object header's length to the body's actual length, so that mutated bodies get
/// past the header check and reach the body decoders.
fn fix_object_len(data: &mut Vec<u8>) {
    let Some(nul) = data.iter().position(|&b| b == 0) else {
        return;
    };
    let Ok(header) = std::str::from_utf8(&data[..nul]) else {
        return;
    };
    let Some((head, len)) = header.rsplit_once(' ') else {
        return;
    };
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return;
    }
    let fixed = format!("{head} {}", data.len() - nul - 1);
    data.splice(..nul, fixed.into_bytes());
}

/// Replays `target`'s seed files and pseudo-random inputs through `check`; panics naming the
/// first input that fails.
pub fn replay(target: &str, check: fn(&[u8])) {
    let seeds = seeds(target);
    for (name, data) in &seeds {
        let outcome = std::panic::catch_unwind(|| check(data));
        assert!(
            outcome.is_ok(),
            "{target}: seed corpus-seed/{target}/{name} fails its check"
        );
    }
    let mut rng = Rng::new(0x2545_f491_4f6c_dd1d ^ target.len() as u64);
    for n in 0..RANDOM_INPUTS {
        let data = if n % 5 == 0 {
            (0..rng.index(64)).map(|_| rng.next_u64() as u8).collect()
        } else {
            let seed = &seeds[rng.index(seeds.len())].1;
            let mut data = mutate(&mut rng, seed);
            if target == "object_decode" && n % 2 == 0 {
                fix_object_len(&mut data);
            }
            data
        };
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(
            outcome.is_ok(),
            "{target}: pseudo-random input #{n} fails its check: {:?}",
            String::from_utf8_lossy(&data)
        );
    }
}

/// A table of fuzz checks by target name (`checks::TARGETS`, `engine_checks::TARGETS`).
pub type Targets<'a> = &'a [(&'a str, fn(&[u8]))];

/// Replays the target called `target` among `targets`.
pub fn replay_named(targets: Targets<'_>, target: &str) {
    let check = targets
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no check named {target}"))
        .1;
    replay(target, check);
}

/// Asserts that every target of `targets` has its seed directory.
pub fn assert_seed_dirs(targets: Targets<'_>) {
    for (target, _) in targets {
        assert!(
            seed_dir(target).is_dir(),
            "crates/tools/fuzz/corpus-seed/{target} is missing"
        );
    }
}
