//! Shared value types that cross module boundaries: a message of the input
//! with its line, sets of message fingerprints, and one key-value pair as the
//! API returns it. The identity of a message itself is the `kind` module's.

pub use crate::kind::{GroupMessageRef, Identity, MessageId, MessageRef};

/// A set of message fingerprints that stays small for huge inputs: 4,096
/// shards chosen by 12 bits of the fingerprint, each holding 64 more bits, so
/// about 12 bytes a message, and a shard that grows reallocates only itself
/// (no doubling of the whole set). 76 bits are kept: the chance that two of
/// 10 million distinct messages collide is below 1e-9.
#[derive(Debug, Clone)]
pub(crate) struct FingerprintSet {
    shards: Vec<std::collections::HashSet<u64, FpHasher>>,
    len: usize,
}

/// The fingerprints are already uniform: hash them by taking their bits.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FpHasher;

impl std::hash::BuildHasher for FpHasher {
    type Hasher = FpHash;
    fn build_hasher(&self) -> FpHash {
        FpHash(0)
    }
}

#[derive(Debug, Default)]
pub(crate) struct FpHash(u64);

impl std::hash::Hasher for FpHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

const SHARD_BITS: u32 = 12;

impl Default for FingerprintSet {
    fn default() -> Self {
        FingerprintSet {
            shards: (0..1usize << SHARD_BITS)
                .map(|_| std::collections::HashSet::with_hasher(FpHasher))
                .collect(),
            len: 0,
        }
    }
}

impl FingerprintSet {
    fn split(fp: u128) -> (usize, u64) {
        ((fp >> (128 - SHARD_BITS)) as usize, fp as u64)
    }

    /// `true` when the fingerprint was not there yet.
    pub(crate) fn insert(&mut self, fp: u128) -> bool {
        let (shard, rest) = Self::split(fp);
        let new = self.shards[shard].insert(rest);
        self.len += usize::from(new);
        new
    }

    pub(crate) fn contains(&self, fp: u128) -> bool {
        let (shard, rest) = Self::split(fp);
        self.shards[shard].contains(&rest)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A message of the input with the line it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InputMessage {
    pub(crate) msg: MessageId,
    pub(crate) line: u64,
    /// Spaces were trimmed from its IDs (counted in the summary).
    pub(crate) trimmed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::Identity;

    #[test]
    fn fingerprint_sets_find_what_was_put_in() {
        let mut set = FingerprintSet::default();
        let fps: Vec<u128> = (0..10_000u64)
            .map(|i| MessageRef::new(None, &i.to_string(), "k").fingerprint())
            .collect();
        for &fp in &fps {
            assert!(set.insert(fp));
        }
        assert!(fps.iter().all(|&fp| set.contains(fp) && !set.insert(fp)));
        assert_eq!(set.len(), 10_000);
        assert!(!set.contains(MessageRef::new(None, "x", "k").fingerprint()));
        // Same low 64 bits, another shard: a different message.
        assert!(set.insert(fps[0] ^ (1u128 << 127)));
    }

    #[test]
    fn fingerprint_separates_fields_and_missing_sender() {
        let cases = [
            (
                MessageRef::new(Some("ab"), "c", "k"),
                MessageRef::new(Some("a"), "bc", "k"),
            ),
            (
                MessageRef::new(None, "c", "k"),
                MessageRef::new(Some("x"), "c", "k"),
            ),
            (
                MessageRef::new(Some("a"), "b", "k1"),
                MessageRef::new(Some("a"), "b", "k2"),
            ),
        ];
        for (a, b) in cases {
            assert_ne!(a.fingerprint(), b.fingerprint(), "{a} vs {b}");
        }
        assert_eq!(
            MessageRef::new(Some(""), "b", "k").fingerprint(),
            MessageRef::new(None, "b", "k").fingerprint(),
            "an empty sender is no sender"
        );
    }
}
