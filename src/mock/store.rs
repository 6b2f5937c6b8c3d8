//! The simulator's data: messages with their pairs, the paging rule of the real
//! service (pages of at most 200 cut wherever they fall, inside runs of equal
//! Seq too), and a deterministic generator for the demo and the tests.

use crate::api::callback::{CallbackPair, ExtensionEvent, Operation};
use crate::api::wire::{ExtensionList, GetKeyValuesResponse};
use crate::kind::{Kind, MessageId, MessageRef};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// A pair as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPair {
    pub key: String,
    pub value: String,
    pub seq: i64,
}

/// One message of the store: its identity (tagged with its kind, as in the
/// WAL: `{"kind": "group", "group_id": "@TGS#1", "msg_seq": 7, ...}`), its
/// ClearSeq and pairs. `script` lists answers given to the first calls for
/// this message (an API code such as `"10002"`, `"http_502"` or `"drop"`),
/// `always` an answer given to every call: faults scripted per message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    #[serde(flatten)]
    pub id: MessageId,
    #[serde(default)]
    pub clear_seq: i64,
    pub pairs: Vec<StoredPair>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub script: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always: Option<String>,
    /// The Seq of the last operation (a delete leaves no pair at it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) op_seq: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// What the service does with a deleted key; undocumented, so each is a
/// setting of the simulator and the tests run every one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Deletes {
    /// The key stays as a pair with an empty Value at the delete's Seq (as
    /// the extension callbacks report deletes).
    #[default]
    Tombstone,
    /// The key is gone; LatestSeq moves to the delete's Seq.
    Hidden,
    /// The key is gone; LatestSeq is the highest Seq still held, so a
    /// delete of an older key shows nowhere.
    HighestHeld,
}

/// One operation on a message's extensions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Set {
        key: String,
        value: String,
    },
    Delete {
        key: String,
    },
    /// "Clear all": ClearSeq moves to this operation's Seq.
    Clear,
    /// The message is gone (deleted, expired): the service no longer has it.
    Vanish,
}

/// What applying an operation did to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Applied {
    /// The message is gone.
    Gone,
    /// Nothing changed (a delete of a key it does not hold).
    Nothing,
    /// Changed at this Seq; the pair written (a delete's with an empty value; a clear: none).
    Changed(i64, Option<StoredPair>),
}

/// An operation on one message, as a store file lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    #[serde(flatten)]
    pub id: MessageId,
    #[serde(flatten)]
    pub op: Op,
}

impl StoredMessage {
    pub fn new(id: impl Into<MessageId>, clear_seq: i64, mut pairs: Vec<StoredPair>) -> Self {
        pairs.sort_by_key(|p| p.seq);
        StoredMessage {
            id: id.into(),
            clear_seq,
            pairs,
            script: Vec::new(),
            always: None,
            op_seq: 0,
        }
    }

    /// The highest Seq of a pair held or of the last "clear all".
    fn held_seq(&self) -> i64 {
        self.pairs
            .iter()
            .map(|p| p.seq)
            .max()
            .unwrap_or(0)
            .max(self.clear_seq)
    }

    /// LatestSeq as a service that reports every operation's Seq answers it.
    pub fn latest_seq(&self) -> i64 {
        self.held_seq().max(self.op_seq)
    }

    /// LatestSeq as the service answers it, under its way with deletes.
    pub fn latest_seq_with(&self, deletes: Deletes) -> i64 {
        match deletes {
            Deletes::HighestHeld => self.held_seq(),
            Deletes::Tombstone | Deletes::Hidden => self.latest_seq(),
        }
    }

    /// Apply one operation at the next Seq: what it did.
    pub(crate) fn apply(&mut self, op: &Op, deletes: Deletes) -> Applied {
        let seq = self.latest_seq() + 1;
        let pair = |key: &String, value: &str| StoredPair {
            key: key.clone(),
            value: value.to_owned(),
            seq,
        };
        let written = match op {
            Op::Vanish => return Applied::Gone,
            Op::Set { key, value } => {
                self.pairs.retain(|p| &p.key != key);
                self.pairs.push(pair(key, value));
                Some(pair(key, value))
            }
            Op::Delete { key } => {
                let clear = self.clear_seq;
                if !self.pairs.iter().any(|p| &p.key == key && p.seq > clear) {
                    return Applied::Nothing;
                }
                self.pairs.retain(|p| &p.key != key);
                if deletes == Deletes::Tombstone {
                    self.pairs.push(pair(key, ""));
                }
                Some(pair(key, ""))
            }
            Op::Clear => {
                self.clear_seq = seq;
                None
            }
        };
        self.op_seq = seq;
        Applied::Changed(seq, written)
    }

    fn live_pairs_ref(&self) -> impl Iterator<Item = &StoredPair> {
        self.pairs.iter().filter(|p| p.seq > self.clear_seq)
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
    pub(crate) fn page(&self, start_seq: Option<i64>, page_size: usize) -> GetKeyValuesResponse {
        self.page_with(start_seq, page_size, Deletes::default())
    }

    /// `page`, from a service with its own way with deletes.
    pub(crate) fn page_with(
        &self,
        start_seq: Option<i64>,
        page_size: usize,
        deletes: Deletes,
    ) -> GetKeyValuesResponse {
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
            latest_seq: Some(self.latest_seq_with(deletes)),
            clear_seq: Some(self.clear_seq),
            extension_list: Some(ExtensionList::of(
                self.pairs[from..end]
                    .iter()
                    .map(|p| (p.key.as_str(), p.value.as_str(), p.seq)),
            )),
        }
    }
}

/// The callback of a change at `seq`.
fn event(
    id: &MessageId,
    op: &Op,
    seq: i64,
    pair: Option<StoredPair>,
    at_ms: i64,
) -> ExtensionEvent {
    let operation = match op {
        Op::Set { .. } => Operation::Set,
        Op::Delete { .. } => Operation::Delete,
        Op::Clear | Op::Vanish => Operation::Clear,
    };
    ExtensionEvent {
        message: id.clone(),
        operation,
        pairs: pair
            .map(|p| CallbackPair {
                key: p.key,
                value: p.value,
                seq: p.seq,
            })
            .into_iter()
            .collect(),
        seq,
        event_time_ms: at_ms,
    }
}

/// All messages the simulator knows. A store file may also list rounds
/// of changes (`msgext mock --round N` serves the store after the first N),
/// and say how the service shows deletes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Store {
    pub messages: Vec<StoredMessage>,
    #[serde(default)]
    pub deletes: Deletes,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) rounds: Vec<Vec<Change>>,
    /// The app's history (groups, accounts, one-to-one messages) the history APIs serve.
    #[serde(default, skip_serializing_if = "super::history::History::is_empty")]
    pub history: super::history::History,
}

/// Why a store file cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {reason}", .path.display())]
    File {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("--round {asked}: the store lists {listed} rounds of changes")]
    Round { asked: usize, listed: usize },
}

impl Store {
    pub fn new(mut messages: Vec<StoredMessage>) -> Self {
        for m in &mut messages {
            m.pairs.sort_by_key(|p| p.seq);
        }
        Store {
            messages,
            deletes: Deletes::default(),
            rounds: Vec::new(),
            history: Default::default(),
        }
    }

    /// The store with this history: a message of the history the store has
    /// no extensions for is stored without pairs (get_key_values answers it
    /// with an empty list, as the service does).
    pub fn with_history(mut self, history: super::history::History) -> Self {
        let known: HashSet<MessageId> = self.messages.iter().map(|m| m.id.clone()).collect();
        let bare: Vec<StoredMessage> = history
            .message_ids()
            .filter(|id| !known.contains(id))
            .map(|id| StoredMessage::new(id, 0, Vec::new()))
            .collect();
        self.messages.extend(bare);
        self.history = history;
        self
    }

    /// Apply changes in order; a change to a message the store does not
    /// have (any more) is ignored, as the service would refuse it.
    pub fn apply(&mut self, changes: &[Change]) {
        self.apply_with_events(changes, 0);
    }

    /// `apply`, with the extension callback the service sends after each
    /// change that changed something (at `at_ms`, `EventTime`).
    pub fn apply_with_events(&mut self, changes: &[Change], at_ms: i64) -> Vec<ExtensionEvent> {
        let mut at: HashMap<MessageId, usize> = self
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.clone(), i))
            .collect();
        let mut gone = HashSet::new();
        let mut events = Vec::new();
        for c in changes {
            let Some(&i) = at.get(&c.id) else { continue };
            match self.messages[i].apply(&c.op, self.deletes) {
                Applied::Gone => {
                    gone.insert(i);
                    at.remove(&c.id);
                }
                Applied::Nothing => {}
                Applied::Changed(seq, pair) => events.push(event(&c.id, &c.op, seq, pair, at_ms)),
            }
        }
        let mut i = 0;
        self.messages.retain(|_| {
            i += 1;
            !gone.contains(&(i - 1))
        });
        events
    }

    /// Apply the store's first `n` rounds of changes (`--round`); the
    /// callbacks of the last of them (tonight's changes), at `at_ms`.
    pub(crate) fn advance(
        &mut self,
        n: usize,
        at_ms: i64,
    ) -> Result<Vec<ExtensionEvent>, StoreError> {
        if n > self.rounds.len() {
            return Err(StoreError::Round {
                asked: n,
                listed: self.rounds.len(),
            });
        }
        let rounds = std::mem::take(&mut self.rounds);
        let mut events = Vec::new();
        for r in &rounds[..n] {
            events = self.apply_with_events(r, at_ms);
        }
        self.rounds = rounds;
        Ok(events)
    }

    /// A round of changes to about `share` of the messages (seeded): new
    /// values and new keys, deletes, clears, messages that grow past two
    /// pages, and some that vanish.
    pub fn random_changes(&self, seed: u64, share: f64) -> Vec<Change> {
        let mut rng = SplitMix64::new(seed);
        let mut out = Vec::new();
        let per_million = (share.clamp(0.0, 1.0) * 1e6) as u64;
        for m in &self.messages {
            if rng.below(1_000_000) >= per_million {
                continue;
            }
            let live: Vec<&StoredPair> = m.live_pairs_ref().collect();
            let pick = |rng: &mut SplitMix64| -> Option<String> {
                (!live.is_empty()).then(|| live[rng.below(live.len() as u64) as usize].key.clone())
            };
            let change = |op| Change {
                id: m.id.clone(),
                op,
            };
            let roll = rng.below(100);
            let set = |key: String, rng: &mut SplitMix64| Op::Set {
                value: tricky_value(rng, key.len()),
                key,
            };
            match roll {
                0..=39 => {
                    for _ in 0..=rng.below(3) {
                        let key = pick(&mut rng).unwrap_or_else(|| "k000".into());
                        out.push(change(set(key, &mut rng)));
                    }
                }
                40..=59 => {
                    let key = format!("new_{seed}_{}", rng.below(1000));
                    out.push(change(set(key, &mut rng)));
                }
                60..=79 => {
                    if let Some(key) = pick(&mut rng) {
                        out.push(change(Op::Delete { key }));
                    }
                }
                80..=86 => {
                    out.push(change(Op::Clear));
                    if rng.below(2) == 0 {
                        out.push(change(set("after_clear".into(), &mut rng)));
                    }
                }
                87..=93 => {
                    // Grows past two pages, some keys in one Seq each.
                    for k in 0..(250 + rng.below(200)) {
                        out.push(change(set(format!("grow_{seed}_{k}"), &mut rng)));
                    }
                }
                _ => out.push(change(Op::Vanish)),
            }
        }
        out
    }

    pub fn load(path: &std::path::Path) -> Result<Self, StoreError> {
        let path_err = |reason: String| StoreError::File {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| path_err(e.to_string()))?;
        let store: Store = serde_json::from_str(&text).map_err(|e| path_err(e.to_string()))?;
        Ok(Store {
            deletes: store.deletes,
            rounds: store.rounds,
            ..Store::new(store.messages)
        }
        .with_history(store.history))
    }

    /// An index from every identity a request may name a message by to its
    /// position: the full one, and the looser one without the sender (the
    /// first message of that form wins).
    pub(crate) fn index(&self) -> StoreIndex {
        let mut idx = StoreIndex::default();
        for (i, m) in self.messages.iter().enumerate() {
            let id = m.id.identity();
            idx.by_id.entry(m.id.clone()).or_insert(i);
            if let Some(loose) = id.without_sender() {
                idx.by_id.entry(loose).or_insert(i);
            }
            if let Some(scope) = id.scope() {
                idx.scopes.insert((m.id.kind(), scope.to_owned()));
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
            out.push(StoredMessage::new(msg, clear_seq, pairs));
        }
        Store::new(out)
    }
}

impl Store {
    /// `n` messages of `pairs` pairs each (values of `value_len` bytes, Seq
    /// runs of 20): uniform data for benchmarks.
    pub(crate) fn synthetic(n: usize, pairs: usize, value_len: usize) -> Store {
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
                    MessageRef::new(
                        Some(&from),
                        &format!("bench_to_{i}"),
                        &format!("{i}_1_1700000000"),
                    ),
                    0,
                    ps,
                )
            })
            .collect();
        Store::new(messages)
    }

    /// The input CSV listing every message of the store of `kind`.
    pub fn input_csv(&self, kind: Kind) -> String {
        let mut out = kind.spec().columns().join(",").into_bytes();
        out.push(b'\n');
        for m in self.messages.iter().filter(|m| m.id.kind() == kind) {
            for (i, cell) in m.id.identity().cells().iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                crate::write::csv::push_text(&mut out, cell);
            }
            out.push(b'\n');
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Values that break naive writers, mixed into generated data.
pub(crate) const TRICKY_VALUES: [&str; 10] = [
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
pub(crate) struct StoreIndex {
    by_id: HashMap<MessageId, usize>,
    scopes: HashSet<(Kind, String)>,
}

impl StoreIndex {
    /// The stored message a request names, or the API's answer (code,
    /// text) for one it does not have.
    pub(crate) fn lookup(&self, id: &MessageId) -> Result<usize, (i64, &'static str)> {
        if let Some(&i) = self.by_id.get(id) {
            return Ok(i);
        }
        let kind = id.kind();
        let scope_known = id
            .identity()
            .scope()
            .is_none_or(|s| self.scopes.contains(&(kind, s.to_owned())));
        Err(kind.spec().not_found(scope_known))
    }
}

/// A tiny deterministic generator (SplitMix64), stable across crate versions,
/// so that seeded data and seeded faults are reproducible.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
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
        let m = StoredMessage::new(MessageRef::new(None, "b", "k"), 0, pairs);
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
    fn lookup_honours_an_optional_sender_and_tells_a_missing_group() {
        use crate::kind::GroupMessageRef;
        let one = |from, key| MessageId::from(MessageRef::new(from, "b", key));
        let group = |g, seq| MessageId::from(GroupMessageRef::new(g, seq));
        let store = Store::new(vec![
            StoredMessage::new(one(Some("a"), "k"), 0, vec![]),
            StoredMessage::new(one(Some("c"), "k"), 0, vec![]),
            StoredMessage::new(group("@TGS#1", 7), 0, vec![]),
        ]);
        let idx = store.index();
        let table = [
            (one(Some("c"), "k"), Ok(1)),
            (one(None, "k"), Ok(0)),
            (one(Some("z"), "k"), Err(23004)),
            (one(None, "other"), Err(23004)),
            (group("@TGS#1", 7), Ok(2)),
            (group("@TGS#1", 8), Err(23004)),
            (group("@TGS#2", 7), Err(10010)),
        ];
        for (id, want) in table {
            assert_eq!(idx.lookup(&id).map_err(|(code, _)| code), want, "{id}");
        }
    }

    #[test]
    fn a_store_file_names_each_message_s_kind() {
        let m = StoredMessage::new(crate::kind::GroupMessageRef::new("@TGS#1", 7), 3, vec![]);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"group","group_id":"@TGS#1","msg_seq":7,"clear_seq":3,"pairs":[]}"#
        );
        assert_eq!(serde_json::from_str::<StoredMessage>(&json).unwrap(), m);
    }
}
