//! Shared value types that cross module boundaries: the identity of a message
//! (`MessageRef`) and one key-value pair as the API returns it (`KeyValue`).
//!
//! The identity is a type of its own (not three loose strings) so that the
//! group variant of the API, keyed by (GroupId, MsgSeq), can be added later.

use std::fmt;

/// One one-to-one message, as identified by the API: (From_Account, To_Account, MsgKey).
/// `from` is `None` when the input had no sender (the API treats it as optional).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageRef {
    pub from: Option<String>,
    pub to: String,
    pub msg_key: String,
}

impl MessageRef {
    pub fn new(from: Option<&str>, to: &str, msg_key: &str) -> Self {
        MessageRef {
            from: from.filter(|f| !f.is_empty()).map(str::to_owned),
            to: to.to_owned(),
            msg_key: msg_key.to_owned(),
        }
    }

    /// A 128-bit fingerprint of the identity, used to de-duplicate huge inputs
    /// without keeping the strings. Fields are length-prefixed so that
    /// ("ab","c") and ("a","bc") differ, and `None` differs from `Some("")`.
    pub fn fingerprint(&self) -> u128 {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        match &self.from {
            None => h.update([0u8]),
            Some(f) => {
                h.update([1u8]);
                h.update((f.len() as u64).to_le_bytes());
                h.update(f.as_bytes());
            }
        }
        for part in [&self.to, &self.msg_key] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        let d = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        u128::from_le_bytes(b)
    }
}

impl fmt::Display for MessageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}→{} {}",
            self.from.as_deref().unwrap_or("-"),
            self.to,
            self.msg_key
        )
    }
}

/// A message of the input with the line it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputMessage {
    pub msg: MessageRef,
    pub line: u64,
}

/// One key-value pair as returned by `get_key_values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    pub seq: i64,
}

/// A fetched pair with the time its page arrived (µs since the Unix epoch, UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPair {
    pub kv: KeyValue,
    pub fetched_at_us: i64,
}

/// A pair borrowed for writing: what a row of `key_values` is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairRef<'a> {
    pub key: &'a str,
    pub value: &'a str,
    pub seq: i64,
    pub fetched_at_us: i64,
}

impl FetchedPair {
    pub fn as_ref(&self) -> PairRef<'_> {
        PairRef {
            key: &self.kv.key,
            value: &self.kv.value,
            seq: self.kv.seq,
            fetched_at_us: self.fetched_at_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
