//! The checkpoint log: the Merkle tree a checkpoint commits to in its `log` field, over the ids of
//! every checkpoint of its first-parent chain before it (leaf 0 is the root checkpoint), in the
//! shape of RFC 6962 (Certificate Transparency) and Go's tlog: leaf hash `SHA-256(0x00 || id)`,
//! node hash `SHA-256(0x01 || left || right)`, the empty tree's head `SHA-256("")`.
//!
//! This module owns the field's syntax ([`LogHead`]: `log <size> <root hex>`), the
//! [`Frontier`] (the roots of the perfect subtrees, at most 64 hashes) that extends a head by one
//! leaf in O(log n), audit paths ([`inclusion_path`], O(n) over the leaves, for the prover) and
//! their check ([`verify_inclusion`], O(log n), for a verifier that has nothing but the proof).
//! No I/O.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::ObjectId;

/// The checkpoint field holding the log head.
pub const LOG_KEY: &str = "log";

/// A SHA-256 hash inside the log.
pub type Hash = [u8; 32];

/// A tree head: how many leaves and the root over them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogHead {
    /// The number of leaves (checkpoints before this one on its first-parent chain).
    pub size: u64,
    /// The Merkle tree hash over them.
    pub root: Hash,
}

impl LogHead {
    /// Parses a `log` field value strictly: `<size> <root>`, the size decimal without leading
    /// zeros, the root 64 lowercase hex digits. Anything else is an error saying why.
    pub fn parse(value: &str) -> Result<LogHead, String> {
        let (size, root) = value
            .split_once(' ')
            .ok_or_else(|| format!("log '{value}' is not '<size> <root>'"))?;
        let canonical_number = !size.is_empty()
            && size.bytes().all(|b| b.is_ascii_digit())
            && (size == "0" || !size.starts_with('0'));
        let size: u64 = size
            .parse()
            .ok()
            .filter(|_| canonical_number)
            .ok_or_else(|| format!("log size '{size}' is not a decimal number"))?;
        if root.len() != 64 || !root.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(format!("log root '{root}' is not 64 lowercase hex digits"));
        }
        let mut hash = [0u8; 32];
        hex::decode_to_slice(root, &mut hash).map_err(|e| format!("log root: {e}"))?;
        Ok(LogHead { size, root: hash })
    }
}

impl fmt::Display for LogHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.size, hex::encode(self.root))
    }
}

/// The leaf hash of a checkpoint id: `SHA-256(0x00 || id's 32 bytes)`.
pub fn leaf_hash(id: &ObjectId) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(id.as_bytes());
    h.finalize().into()
}

/// An interior node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The head of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest(b"").into()
}

/// The roots of the perfect subtrees a tree of `size` leaves decomposes into, largest (leftmost)
/// first: one per set bit of `size`. Enough to extend the tree by a leaf and to compute its head.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    roots: Vec<Hash>,
}

impl Frontier {
    /// The empty tree's frontier.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// A frontier from its parts; `None` unless there is one root per set bit of `size`.
    pub fn from_parts(size: u64, roots: Vec<Hash>) -> Option<Frontier> {
        (roots.len() == size.count_ones() as usize).then_some(Frontier { size, roots })
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The subtree roots, largest first.
    pub fn roots(&self) -> &[Hash] {
        &self.roots
    }

    /// Appends a leaf (its leaf hash): O(log n) hashes.
    pub fn push(&mut self, leaf: Hash) {
        let mut carry = leaf;
        let mut size = self.size;
        // Each trailing one bit of the old size is a perfect subtree the same height as carry.
        while size & 1 == 1 {
            let left = self.roots.pop().expect("one root per set bit");
            carry = node_hash(&left, &carry);
            size >>= 1;
        }
        self.roots.push(carry);
        self.size += 1;
    }

    /// Appends a checkpoint id as the next leaf.
    pub fn push_id(&mut self, id: &ObjectId) {
        self.push(leaf_hash(id))
    }

    /// The tree head: the roots folded from the right (RFC 6962's MTH).
    pub fn head(&self) -> LogHead {
        let root = match self.roots.split_last() {
            None => empty_root(),
            Some((last, rest)) => rest
                .iter()
                .rev()
                .fold(*last, |acc, left| node_hash(left, &acc)),
        };
        LogHead {
            size: self.size,
            root,
        }
    }
}

/// The Merkle tree hash of leaf hashes (RFC 6962 MTH): O(n).
pub fn tree_hash(leaves: &[Hash]) -> Hash {
    let mut frontier = Frontier::new();
    for leaf in leaves {
        frontier.push(*leaf);
    }
    frontier.head().root
}

/// The audit path of leaf `index` among `leaves` (RFC 6962 PATH), nearest the leaf first;
/// `None` when `index` is out of range. O(n) hashes; at most 64 entries, ⌈log₂ n⌉ in practice.
pub fn inclusion_path(leaves: &[Hash], index: u64) -> Option<Vec<Hash>> {
    let index = usize::try_from(index).ok().filter(|i| *i < leaves.len())?;
    let mut path = Vec::new();
    path_into(leaves, index, &mut path);
    path.reverse();
    Some(path)
}

/// Pushes the path's entries farthest from the leaf first (the caller reverses).
fn path_into(leaves: &[Hash], index: usize, path: &mut Vec<Hash>) {
    if leaves.len() <= 1 {
        return;
    }
    let split = split_point(leaves.len());
    if index < split {
        path.push(tree_hash(&leaves[split..]));
        path_into(&leaves[..split], index, path);
    } else {
        path.push(tree_hash(&leaves[..split]));
        path_into(&leaves[split..], index - split, path);
    }
}

/// The largest power of two smaller than `n` (n ≥ 2).
fn split_point(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// Why an audit path does not prove inclusion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InclusionError {
    /// The leaf index is not below the tree size.
    #[error("leaf {index} is outside a log of {size} checkpoint(s)")]
    OutOfRange {
        /// The claimed leaf index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// The path has more or fewer hashes than a leaf at that index in a tree of that size needs.
    #[error("the audit path has {got} hash(es), a leaf at {index} of {size} needs {needed}")]
    WrongLength {
        /// The claimed leaf index.
        index: u64,
        /// The tree size.
        size: u64,
        /// How many the path has.
        got: usize,
        /// How many it must have.
        needed: usize,
    },
    /// The path hashes to another root.
    #[error("the audit path leads to another root than the log head's")]
    RootMismatch,
}

/// Checks that `leaf` is leaf `index` of the tree of `size` leaves whose head is `root`, by
/// `path` (RFC 9162 §2.1.3.2): O(log n) hashes.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    path: &[Hash],
    root: &Hash,
) -> Result<(), InclusionError> {
    if index >= size {
        return Err(InclusionError::OutOfRange { index, size });
    }
    let needed = path_length(index, size);
    if path.len() != needed {
        return Err(InclusionError::WrongLength {
            index,
            size,
            got: path.len(),
            needed,
        });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 || r != *root {
        return Err(InclusionError::RootMismatch);
    }
    Ok(())
}

/// How many hashes the audit path of leaf `index` in a tree of `size` has.
fn path_length(index: u64, size: u64) -> usize {
    let (mut f, mut s) = (index, size - 1);
    let mut n = 0;
    while s != 0 {
        if f & 1 == 1 || f == s {
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        }
        n += 1;
        f >>= 1;
        s >>= 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&ObjectId::of(i.to_string().as_bytes())))
            .collect()
    }

    /// RFC 6962's MTH by its recursive definition, to check the frontier against.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n);
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn the_frontier_gives_rfc_6962_heads() {
        let all = leaves(70);
        let mut frontier = Frontier::new();
        for n in 0..=all.len() {
            assert_eq!(frontier.head().root, mth(&all[..n]), "size {n}");
            assert_eq!(frontier.roots().len(), n.count_ones() as usize);
            if n < all.len() {
                frontier.push(all[n]);
            }
        }
    }

    #[test]
    fn every_path_verifies_and_any_change_is_refused() {
        for n in 1..40usize {
            let all = leaves(n);
            let root = mth(&all);
            for i in 0..n {
                let path = inclusion_path(&all, i as u64).unwrap();
                assert_eq!(path.len(), path_length(i as u64, n as u64));
                verify_inclusion(&all[i], i as u64, n as u64, &path, &root).unwrap();
                // Another leaf, index, root or any flipped path byte fails.
                let other = (i + 1) % n;
                if other != i {
                    assert!(
                        verify_inclusion(&all[other], i as u64, n as u64, &path, &root).is_err()
                    );
                    assert!(
                        verify_inclusion(&all[i], other as u64, n as u64, &path, &root).is_err()
                    );
                }
                // (The size and the root come together, from the trusted head: the same root
                // claimed for another size proves nothing about that size's tree.)
                assert!(
                    verify_inclusion(&all[i], i as u64, n as u64, &path, &mth(&all[1..])).is_err()
                );
                for (j, _) in path.iter().enumerate() {
                    let mut bad = path.clone();
                    bad[j][0] ^= 1;
                    assert!(verify_inclusion(&all[i], i as u64, n as u64, &bad, &root).is_err());
                }
                let mut short = path.clone();
                short.pop();
                if !path.is_empty() {
                    assert!(verify_inclusion(&all[i], i as u64, n as u64, &short, &root).is_err());
                }
            }
            assert!(inclusion_path(&all, n as u64).is_none());
        }
    }

    #[test]
    fn known_heads() {
        // RFC 6962's empty tree and the shape of a one-leaf tree: its head is the leaf hash.
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let id = ObjectId::of(b"hello");
        let mut frontier = Frontier::new();
        frontier.push_id(&id);
        assert_eq!(frontier.head().root, leaf_hash(&id));
    }

    #[test]
    fn log_heads_parse_strictly() {
        let head = LogHead {
            size: 12,
            root: [0xab; 32],
        };
        let text = head.to_string();
        assert_eq!(LogHead::parse(&text), Ok(head));
        for bad in [
            "",
            "12",
            "012 abab",
            &format!("012 {}", "ab".repeat(32)),
            &format!("-1 {}", "ab".repeat(32)),
            &format!("+1 {}", "ab".repeat(32)),
            &format!("12 {}", "AB".repeat(32)),
            &format!("12 {}", "ab".repeat(31)),
            &format!("12  {}", "ab".repeat(32)),
            &format!("18446744073709551616 {}", "ab".repeat(32)),
        ] {
            assert!(LogHead::parse(bad).is_err(), "{bad:?}");
        }
    }
}
