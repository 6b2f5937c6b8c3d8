//! The simulator's data: messages with their pairs, the paging rule of the real
//! service (pages of at most 200 cut wherever they fall, inside runs of equal
//! Seq too), and a deterministic generator for the demo and the tests.

use crate::api::wire::{ExtensionList, GetKeyValuesResponse};
use crate::model::{GroupMessageRef, MessageId, MessageRef};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A pair as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPair {
    pub key: String,
    pub value: String,
    pub seq: i64,
}

/// One message of the store. `script` lists answers given to the first calls
/// for this message (an API code such as `"10002"`, `"http_502"` or `"drop"`),
/// `always` an answer given to every call: faults scripted per message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    #[serde(default)]
    pub from: Option<String>,
    pub to: String,
    pub msg_key: String,
    #[serde(default)]
    pub clear_seq: i64,
    pub pairs: Vec<StoredPair>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub script: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always: Option<String>,
    /// A group message (GroupId, MsgSeq); `from`, `to` and `msg_key` are then empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupMessageRef>,
}

impl StoredMessage {
    pub fn new(
        from: Option<&str>,
        to: &str,
        msg_key: &str,
        clear_seq: i64,
        mut pairs: Vec<StoredPair>,
    ) -> Self {
        pairs.sort_by_key(|p| p.seq);
        StoredMessage {
            from: from.map(str::to_owned),
            to: to.to_owned(),
            msg_key: msg_key.to_owned(),
            clear_seq,
            pairs,
            script: Vec::new(),
            always: None,
            group: None,
        }
    }

    /// A stored message of either kind, for `id`.
    pub fn of(id: &MessageId, clear_seq: i64, pairs: Vec<StoredPair>) -> Self {
        match id {
            MessageId::OneToOne(m) => {
                StoredMessage::new(m.from.as_deref(), &m.to, &m.msg_key, clear_seq, pairs)
            }
            MessageId::Group(g) => StoredMessage {
                group: Some(g.clone()),
                ..StoredMessage::new(None, "", "", clear_seq, pairs)
            },
        }
    }

    pub fn message_ref(&self) -> MessageRef {
        MessageRef::new(self.from.as_deref(), &self.to, &self.msg_key)
    }

    /// The message's identity, of its kind.
    pub fn id(&self) -> MessageId {
        match &self.group {
            Some(g) => g.clone().into(),
            None => self.message_ref().into(),
        }
    }

    pub fn latest_seq(&self) -> i64 {
        self.pairs
            .iter()
            .map(|p| p.seq)
            .max()
            .unwrap_or(0)
            .max(self.clear_seq)
    }

    /// What a correct export holds for this message: pairs with Seq > ClearSeq.
    pub fn live_pairs(&self) -> Vec<StoredPair> {
        self.pairs
            .iter()
            .filter(|p| p.seq > self.clear_seq)
            .cloned()
            .collect()
    }

    /// The service's answer to a pull from `start_seq`: the first `page_size`
    /// pairs with Seq >= StartSeq, cut wherever the count ends. Pairs at or
    /// below ClearSeq are returned as they are: dropping them is the client's job.
    pub fn page(&self, start_seq: Option<i64>, page_size: usize) -> GetKeyValuesResponse {
        let from = match start_seq {
            None => 0,
            Some(s) => self.pairs.partition_point(|p| p.seq < s),
        };
        let end = (from + page_size).min(self.pairs.len());
        GetKeyValuesResponse {
            action_status: Some("OK".into()),
            error_code: 0,
            error_info: String::new(),
            complete_flag: Some(i64::from(end == self.pairs.len())),
            latest_seq: Some(self.latest_seq()),
            clear_seq: Some(self.clear_seq),
            extension_list: Some(ExtensionList::of(
                self.pairs[from..end]
                    .iter()
                    .map(|p| (p.key.as_str(), p.value.as_str(), p.seq)),
            )),
        }
    }
}

/// All messages the simulator knows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Store {
    pub messages: Vec<StoredMessage>,
}

impl Store {
    pub fn new(mut messages: Vec<StoredMessage>) -> Self {
        for m in &mut messages {
            m.pairs.sort_by_key(|p| p.seq);
        }
        Store { messages }
    }

    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let store: Store =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Store::new(store.messages))
    }

    /// An index from (To_Account, MsgKey) and from (GroupId, MsgSeq) to message positions.
    pub fn index(&self) -> StoreIndex {
        let mut idx = StoreIndex::default();
        for (i, m) in self.messages.iter().enumerate() {
            match &m.group {
                Some(g) => {
                    idx.by_group.insert((g.group_id.clone(), g.msg_seq), i);
                    idx.groups.insert(g.group_id.clone());
                }
                None => idx
                    .by_key
                    .entry((m.to.clone(), m.msg_key.clone()))
                    .or_default()
                    .push(i),
            }
        }
        idx
    }

    /// A deterministic store for `messages`: most exist with 0 to 300 pairs
    /// (some spanning pages, some with a ClearSeq and dead pairs), about one
    /// in `missing_one_in` does not exist (answers 23004).
    pub fn generate<M: Clone + Into<MessageId>>(
        messages: &[M],
        seed: u64,
        missing_one_in: u64,
    ) -> Store {
        let mut out = Vec::with_capacity(messages.len());
        for (i, msg) in messages.iter().enumerate() {
            let msg: MessageId = msg.clone().into();
            let mut rng = SplitMix64::new(
                seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ msg.fingerprint() as u64,
            );
            if missing_one_in > 0 && rng.below(missing_one_in) == 0 {
                continue;
            }
            let n = match rng.below(10) {
                0 => 0,
                1..=6 => 1 + rng.below(30),
                7 | 8 => 31 + rng.below(150),
                _ => 180 + rng.below(121),
            } as usize;
            let mut pairs = Vec::with_capacity(n + 8);
            let mut seq = 0i64;
            let mut clear_seq = 0i64;
            if n > 0 && rng.below(8) == 0 {
                // A "clear all" happened after some pairs were set.
                seq += 1;
                for d in 0..=rng.below(5) {
                    pairs.push(StoredPair {
                        key: format!("dead_{d}"),
                        value: "cleared".into(),
                        seq,
                    });
                }
                seq += 1;
                clear_seq = seq;
            }
            let mut k = 0usize;
            while k < n {
                seq += 1;
                let run = (1 + rng.below(20) as usize).min(n - k);
                for _ in 0..run {
                    pairs.push(StoredPair {
                        key: format!("k{k:03}"),
                        value: tricky_value(&mut rng, k),
                        seq,
                    });
                    k += 1;
                }
            }
            out.push(StoredMessage::of(&msg, clear_seq, pairs));
        }
        Store::new(out)
    }
}

impl Store {
    /// `n` messages of `pairs` pairs each (values of `value_len` bytes, Seq
    /// runs of 20): uniform data for benchmarks.
    pub fn synthetic(n: usize, pairs: usize, value_len: usize) -> Store {
        const ALPHABET: &[u8] =
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-";
        let messages = (0..n)
            .map(|i| {
                let from = format!("bench_from_{}", i % 100);
                let mut rng = SplitMix64::new(i as u64);
                let ps = (0..pairs)
                    .map(|j| StoredPair {
                        key: format!("k{j:03}"),
                        // Varied text, so that compression is not flattered.
                        value: (0..value_len)
                            .map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize] as char)
                            .collect(),
                        seq: 1 + (j / 20) as i64,
                    })
                    .collect();
                StoredMessage::new(
                    Some(&from),
                    &format!("bench_to_{i}"),
                    &format!("{i}_1_1700000000"),
                    0,
                    ps,
                )
            })
            .collect();
        Store { messages }
    }

    /// The input CSV listing every message of the store.
    pub fn input_csv(&self) -> String {
        let mut out = b"From_Account,To_Account,MsgKey\n".to_vec();
        for m in self.messages.iter().filter(|m| m.group.is_none()) {
            if let Some(f) = &m.from {
                crate::write::csv::push_text(&mut out, f);
            }
            out.push(b',');
            crate::write::csv::push_text(&mut out, &m.to);
            out.push(b',');
            crate::write::csv::push_text(&mut out, &m.msg_key);
            out.push(b'\n');
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The input CSV listing every group message of the store.
    pub fn group_input_csv(&self) -> String {
        let mut out = b"GroupId,MsgSeq\n".to_vec();
        for g in self.messages.iter().filter_map(|m| m.group.as_ref()) {
            crate::write::csv::push_text(&mut out, &g.group_id);
            out.extend_from_slice(format!(",{}\n", g.msg_seq).as_bytes());
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Values that break naive writers, mixed into generated data.
pub const TRICKY_VALUES: [&str; 10] = [
    "",
    "a,b,c",
    "say \"hi\"",
    "line one\nline two",
    "tab\there",
    "ünïcødé 中文 🚀",
    "null",
    "\\N",
    " padded ",
    "\r\n",
];

fn tricky_value(rng: &mut SplitMix64, k: usize) -> String {
    match rng.below(12) {
        0 => TRICKY_VALUES[rng.below(TRICKY_VALUES.len() as u64) as usize].to_owned(),
        1 => "x".repeat(1000),
        _ => format!("value-{k}-{}", rng.below(1_000_000)),
    }
}

/// Lookup from a request's identity to a stored message.
#[derive(Debug, Default)]
pub struct StoreIndex {
    by_key: HashMap<(String, String), Vec<usize>>,
    by_group: HashMap<(String, i64), usize>,
    groups: std::collections::HashSet<String>,
}

impl StoreIndex {
    /// `From_Account` is optional in the API: when given it must match.
    pub fn lookup(
        &self,
        store: &Store,
        from: Option<&str>,
        to: &str,
        msg_key: &str,
    ) -> Option<usize> {
        let candidates = self.by_key.get(&(to.to_owned(), msg_key.to_owned()))?;
        candidates
            .iter()
            .copied()
            .find(|&i| from.is_none() || store.messages[i].from.as_deref() == from)
    }

    /// A group message: `Err(true)` when the group itself is unknown (10010),
    /// `Err(false)` when only the message is (23004).
    pub fn lookup_group(&self, group_id: &str, msg_seq: i64) -> Result<usize, bool> {
        match self.by_group.get(&(group_id.to_owned(), msg_seq)) {
            Some(&i) => Ok(i),
            None => Err(!self.groups.contains(group_id)),
        }
    }
}

/// A tiny deterministic generator (SplitMix64), stable across crate versions,
/// so that seeded data and seeded faults are reproducible.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(n: usize) -> Vec<MessageRef> {
        (0..n)
            .map(|i| {
                MessageRef::new(
                    if i % 5 == 0 { None } else { Some("alice") },
                    &format!("u{i}"),
                    &format!("{i}_1_1700000000"),
                )
            })
            .collect()
    }

    #[test]
    fn generated_store_is_deterministic_and_varied() {
        let a = Store::generate(&msgs(300), 7, 25);
        assert_eq!(a, Store::generate(&msgs(300), 7, 25));
        assert_ne!(a, Store::generate(&msgs(300), 8, 25));
        assert!(a.messages.len() < 300, "some messages are missing");
        assert!(
            a.messages.iter().any(|m| m.pairs.len() > 200),
            "some span pages"
        );
        assert!(
            a.messages
                .iter()
                .any(|m| m.clear_seq > 0 && m.live_pairs().len() < m.pairs.len())
        );
        for m in &a.messages {
            assert!(m.pairs.windows(2).all(|w| w[0].seq <= w[1].seq));
            let mut per_seq: HashMap<i64, usize> = HashMap::new();
            for p in &m.pairs {
                *per_seq.entry(p.seq).or_default() += 1;
            }
            assert!(
                per_seq.values().all(|&n| n <= 20),
                "one set touches at most 20 keys"
            );
            assert!(m.live_pairs().len() <= 300);
        }
    }

    #[test]
    fn pages_are_cut_at_200_inside_equal_seq_runs() {
        let pairs = (0..250)
            .map(|i| StoredPair {
                key: format!("k{i}"),
                value: String::new(),
                seq: 1 + i / 20,
            })
            .collect();
        let m = StoredMessage::new(None, "b", "k", 0, pairs);
        let p1 = m.page(None, 200);
        assert_eq!(p1.pairs().len(), 200);
        assert_eq!(p1.complete_flag, Some(0));
        assert_eq!(p1.latest_seq, Some(13));
        // Pair 199 has Seq 10, and so do 180..=199: StartSeq 10 repeats them.
        let p2 = m.page(Some(10), 200);
        assert_eq!(p2.pairs().first().unwrap().key, "k180");
        assert_eq!(p2.pairs().len(), 70);
        assert_eq!(p2.complete_flag, Some(1));
        assert!(m.page(Some(14), 200).pairs().is_empty());
    }

    #[test]
    fn lookup_honours_an_optional_sender() {
        let store = Store::new(vec![
            StoredMessage::new(Some("a"), "b", "k", 0, vec![]),
            StoredMessage::new(Some("c"), "b", "k", 0, vec![]),
        ]);
        let idx = store.index();
        assert_eq!(idx.lookup(&store, Some("c"), "b", "k"), Some(1));
        assert_eq!(idx.lookup(&store, None, "b", "k"), Some(0));
        assert_eq!(idx.lookup(&store, Some("z"), "b", "k"), None);
        assert_eq!(idx.lookup(&store, None, "b", "other"), None);
    }
}
