//! The incremental rules (DESIGN §7) as pure functions: where a message's
//! read starts, what its answer says about the stored state, and how the
//! stored pairs follow (in the tests' reference model; a run applies them
//! over the tables in `table::current`). The state of a message (its `latest_seq`,
//! `clear_seq` and live pairs) is what the current tables hold; nothing
//! here reads or writes them.

use std::time::Duration;

/// A fingerprint as two halves, high first (so that they sort as it does).
pub(crate) fn halves(fp: u128) -> [u64; 2] {
    [(fp >> 64) as u64, fp as u64]
}

/// What the current tables know of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Known {
    pub(crate) latest_seq: i64,
    pub(crate) clear_seq: i64,
    /// When it was last read in full, µs since the epoch.
    pub(crate) last_full_read_us: i64,
}

/// Where a message's read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// From the beginning (`StartSeq` absent): a message new to the table,
    /// `--full`, or a last full read older than `full_every`.
    Full,
    /// From `StartSeq`: only what changed after the stored `LatestSeq`.
    From(i64),
}

/// Where to start reading a message. `full_every`: the longest time
/// between two full reads (for a service that hides deletes), none: never
/// forced.
pub(crate) fn start(
    known: Option<&Known>,
    now_us: i64,
    full_every: Option<Duration>,
    force_full: bool,
) -> Start {
    let Some(k) = known else {
        return Start::Full;
    };
    let stale = full_every.is_some_and(|every| {
        now_us.saturating_sub(k.last_full_read_us) >= every.as_micros().min(i64::MAX as u128) as i64
    });
    if force_full || stale {
        Start::Full
    } else {
        Start::From(k.latest_seq + 1)
    }
}

/// What an incremental read's answer (every page of it) means for the
/// stored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Same `LatestSeq` and `ClearSeq`, no pair: nothing to write.
    Unchanged,
    /// Drop the stored pairs at or below `clear_seq`, then let the returned
    /// pairs replace the stored ones by key (`apply`).
    Changed { clear_seq: i64 },
    /// A change the answer does not show (`LatestSeq` went back, or moved
    /// with no pair and no clear at that Seq, as a deleted key does on a
    /// service that reports no tombstone): read the message in full and
    /// replace its state.
    ReadFull,
}

/// Judge an incremental answer against what was known. `returned`: the Seq
/// of every pair the read returned.
///
/// Every operation (a set, a delete, a clear) takes the message's next Seq,
/// so the answer must account for each Seq from `known.latest_seq + 1` to
/// the new LatestSeq: a Seq at or below a moved ClearSeq is covered by the
/// clear (every pair up to it is dead, whatever happened there), any other
/// by a pair returned at it. A Seq neither covers is an operation the
/// answer hides (a delete that left no pair, a key set and set again): the
/// message is read in full. "A pair at the new LatestSeq" is not enough: a
/// delete and a later set between two reads would pass it.
pub(crate) fn judge(
    known: &Known,
    latest_seq: i64,
    clear_seq: i64,
    returned: impl IntoIterator<Item = i64>,
) -> Verdict {
    if latest_seq < known.latest_seq || clear_seq < known.clear_seq {
        return Verdict::ReadFull;
    }
    // Seqs above `covered` must each show a pair.
    let covered = known.latest_seq.max(clear_seq);
    let mut any = false;
    let mut shown: Vec<i64> = Vec::new();
    for seq in returned {
        any = true;
        if seq > covered && seq <= latest_seq {
            shown.push(seq);
        }
    }
    if latest_seq == known.latest_seq && clear_seq == known.clear_seq && !any {
        return Verdict::Unchanged;
    }
    shown.sort_unstable();
    shown.dedup();
    let needed = u64::try_from(latest_seq.saturating_sub(covered)).unwrap_or(0);
    if shown.len() as u64 == needed {
        Verdict::Changed { clear_seq }
    } else {
        Verdict::ReadFull
    }
}

/// How a message was read in a run (the history `messages.read` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Read {
    /// Every pair, from the first (`StartSeq` absent).
    #[default]
    Full,
    /// Only what changed after the stored `LatestSeq`.
    Incremental,
    /// Asked from after the stored `LatestSeq`: nothing had changed.
    Unchanged,
}

impl Read {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Read::Full => "full",
            Read::Incremental => "incremental",
            Read::Unchanged => "unchanged",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Read> {
        [Read::Full, Read::Incremental, Read::Unchanged]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// What a run knows before it reads: the state of every message of its
/// app and kind in the current tables, by fingerprint, and when a read
/// must be full. Sorted by fingerprint: 40 bytes a message (a hash map
/// would take twice that), looked up by binary search.
#[derive(Debug, Default)]
pub(crate) struct Prior {
    /// By fingerprint, as two halves: 40 bytes an entry (a `u128` would
    /// align it to 48).
    known: Vec<([u64; 2], Known)>,
    now_us: i64,
    full_every: Option<Duration>,
    force_full: bool,
}

impl Prior {
    /// `known` in any order. A fingerprint given twice (a message the
    /// current tables of an earlier msgext held once with its sender and
    /// once without) is known as neither: it is read in full, and its
    /// commit leaves one row.
    pub(crate) fn new(
        mut known: Vec<([u64; 2], Known)>,
        now_us: i64,
        full_every: Option<Duration>,
        force_full: bool,
    ) -> Self {
        // In place: a stable sort would take half as much again.
        known.sort_unstable_by_key(|(fp, _)| *fp);
        let twice: Vec<[u64; 2]> = known
            .windows(2)
            .filter(|w| w[0].0 == w[1].0)
            .map(|w| w[0].0)
            .collect();
        if !twice.is_empty() {
            known.retain(|(fp, _)| twice.binary_search(fp).is_err());
        }
        Prior {
            known,
            now_us,
            full_every,
            force_full,
        }
    }

    /// What is known of the message with fingerprint `fp`.
    pub(crate) fn known(&self, fp: u128) -> Option<&Known> {
        self.known
            .binary_search_by_key(&halves(fp), |(f, _)| *f)
            .ok()
            .map(|i| &self.known[i].1)
    }

    /// Where the read of message `fp` starts, and what is known of it.
    pub(crate) fn plan(&self, fp: u128) -> (Start, Option<Known>) {
        let known = self.known(fp).copied();
        let start = start(
            known.as_ref(),
            self.now_us,
            self.full_every,
            self.force_full,
        );
        (start, known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A stored pair: its value and Seq.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Stored {
        value: String,
        seq: i64,
    }

    /// The rules applied to one message in memory: the reference the tests
    /// hold the rules to. A run applies them streaming over the current tables
    /// (`table::current::keeps`). Apply a `Changed` verdict: drop the pairs at or below `clear_seq`, then
    /// the returned pairs (`(key, value, seq)`, pages in order, a pair repeated
    /// across a page boundary included) replace the stored ones by key. A pair
    /// at or below `clear_seq` is dead and never stored; of two for one key the
    /// higher Seq wins.
    fn apply<'a>(
        pairs: &mut BTreeMap<String, Stored>,
        clear_seq: i64,
        returned: impl IntoIterator<Item = (&'a str, &'a str, i64)>,
    ) {
        pairs.retain(|_, p| p.seq > clear_seq);
        for (key, value, seq) in returned {
            if seq <= clear_seq {
                continue;
            }
            match pairs.get(key) {
                Some(old) if old.seq > seq => {}
                _ => {
                    pairs.insert(
                        key.to_owned(),
                        Stored {
                            value: value.to_owned(),
                            seq,
                        },
                    );
                }
            }
        }
    }

    const DAY_US: i64 = 86_400_000_000;

    /// What a full read of `m` holds: its live pairs by key.
    fn full_state(m: &crate::mock::store::StoredMessage) -> BTreeMap<String, Stored> {
        m.live_pairs()
            .into_iter()
            .map(|p| {
                let stored = Stored {
                    value: p.value,
                    seq: p.seq,
                };
                (p.key, stored)
            })
            .collect()
    }

    #[test]
    fn a_read_starts_after_what_is_known_unless_a_full_read_is_due() {
        let k = Known {
            latest_seq: 41,
            clear_seq: 3,
            last_full_read_us: 10 * DAY_US,
        };
        let week = Some(Duration::from_secs(7 * 86_400));
        let table = [
            (None, 10 * DAY_US, week, false, Start::Full),
            (Some(&k), 11 * DAY_US, week, false, Start::From(42)),
            (Some(&k), 11 * DAY_US, week, true, Start::Full),
            (Some(&k), 17 * DAY_US - 1, week, false, Start::From(42)),
            (Some(&k), 17 * DAY_US, week, false, Start::Full),
            (Some(&k), 900 * DAY_US, None, false, Start::From(42)),
        ];
        for (known, now, every, force, want) in table {
            assert_eq!(
                start(known, now, every, force),
                want,
                "{known:?} {now} {every:?} {force}"
            );
        }
    }

    #[test]
    fn an_answer_is_unchanged_changed_or_calls_for_a_full_read() {
        let k = Known {
            latest_seq: 10,
            clear_seq: 2,
            last_full_read_us: 0,
        };
        let changed = |clear_seq| Verdict::Changed { clear_seq };
        // (LatestSeq, ClearSeq, Seqs returned, verdict)
        let table: [(i64, i64, &[i64], Verdict); 18] = [
            (10, 2, &[], Verdict::Unchanged),
            // A set of two keys at Seq 11, then one at 12.
            (12, 2, &[11, 11, 12], changed(2)),
            // A delete at 11 that left no pair, then a set at 12: the pair
            // at the new LatestSeq does not account for Seq 11.
            (12, 2, &[12], Verdict::ReadFull),
            // A key set at 11 and set again at 12: only 12 shows (read in full to be sure).
            (12, 2, &[12, 12], Verdict::ReadFull),
            // A clear at 13 covers whatever happened at 11 and 12; a set at 14 follows.
            (14, 13, &[14], changed(13)),
            (14, 13, &[], Verdict::ReadFull),
            // Tombstones at 11 and 13, a set at 12: every Seq shown.
            (13, 2, &[11, 12, 13], changed(2)),
            // A pair at or below the stored LatestSeq (which StartSeq excludes) explains nothing.
            (11, 2, &[10], Verdict::ReadFull),
            // Pairs across a page boundary, repeated: still one Seq each.
            (12, 2, &[11, 12, 12, 11], changed(2)),
            // A tombstone (a deleted key returned with an empty value) is a pair like any other.
            (11, 2, &[11], changed(2)),
            // "Clear all" at Seq 11: ClearSeq moves there, no pair.
            (11, 11, &[], changed(11)),
            // A clear at 11, then a set at 12.
            (12, 11, &[12], changed(11)),
            // A clear at 11, a set at 13: what happened at 12 is not shown.
            (13, 11, &[13], Verdict::ReadFull),
            // ClearSeq moved without LatestSeq (an older clear, seen late).
            (10, 5, &[], changed(5)),
            // LatestSeq moved with no pair there: a delete the service does not show.
            (11, 2, &[], Verdict::ReadFull),
            (14, 2, &[12], Verdict::ReadFull),
            // LatestSeq or ClearSeq went back: the stored state is not the service's.
            (9, 2, &[], Verdict::ReadFull),
            (10, 1, &[], Verdict::ReadFull),
        ];
        for (latest, clear, seqs, want) in table {
            assert_eq!(
                judge(&k, latest, clear, seqs.iter().copied()),
                want,
                "{latest} {clear} {seqs:?}"
            );
        }
    }

    #[test]
    fn applying_an_answer_gives_what_a_full_read_gives() {
        let stored = |pairs: &[(&str, &str, i64)]| -> BTreeMap<String, Stored> {
            pairs
                .iter()
                .map(|(k, v, s)| {
                    (
                        k.to_string(),
                        Stored {
                            value: v.to_string(),
                            seq: *s,
                        },
                    )
                })
                .collect()
        };
        // (stored, ClearSeq, returned, after)
        type Pairs = &'static [(&'static str, &'static str, i64)];
        let table: [(Pairs, i64, Pairs, Pairs); 5] = [
            // A new key and a changed one.
            (
                &[("a", "1", 3), ("b", "2", 4)],
                0,
                &[("b", "3", 5), ("c", "4", 5)],
                &[("a", "1", 3), ("b", "3", 5), ("c", "4", 5)],
            ),
            // A clear at 4 drops what was set at or below it; a set after it stays.
            (
                &[("a", "1", 3), ("b", "2", 4)],
                4,
                &[("c", "5", 6)],
                &[("c", "5", 6)],
            ),
            // A tombstone replaces the key's value with an empty one, as a full read returns it.
            (&[("a", "1", 3)], 0, &[("a", "", 7)], &[("a", "", 7)]),
            // Pages repeat the pairs of the Seq they were cut in: stored once.
            (
                &[],
                0,
                &[("a", "1", 2), ("b", "1", 2), ("b", "1", 2), ("c", "1", 3)],
                &[("a", "1", 2), ("b", "1", 2), ("c", "1", 3)],
            ),
            // A dead pair is never stored; an older value never replaces a newer one.
            (
                &[("a", "new", 9)],
                5,
                &[("z", "dead", 5), ("a", "old", 8)],
                &[("a", "new", 9)],
            ),
        ];
        for (before, clear, returned, after) in table {
            let mut pairs = stored(before);
            apply(&mut pairs, clear, returned.iter().copied());
            assert_eq!(pairs, stored(after), "{before:?} + {returned:?}");
        }
    }

    /// A message changing over rounds (sets of up to 260 keys at one Seq,
    /// tombstones, clears), read each round from where the last read left
    /// it, through the simulator's own paging (pages of 200 cut inside runs
    /// of equal Seq, continued from the last Seq seen): after every round
    /// the state equals a full read.
    #[test]
    fn rounds_of_incremental_reads_equal_a_full_read() {
        use crate::mock::store::{SplitMix64, StoredMessage, StoredPair};
        let mut m = StoredMessage::new(crate::kind::MessageRef::new(None, "b", "k"), 0, vec![]);
        // Every page of a read from `start`, as (LatestSeq, ClearSeq, pairs).
        let read = |m: &StoredMessage, start: Option<i64>| {
            let (mut at, mut pairs, mut pages) = (start, Vec::new(), 0);
            loop {
                let page = m.page(at, 200);
                pages += 1;
                for i in 0..page.pairs().len() {
                    let p = page.pairs().get(i).unwrap();
                    pairs.push((p.key.to_owned(), p.value.to_owned(), p.seq));
                }
                if page.complete_flag == Some(1) {
                    let (l, c) = (page.latest_seq.unwrap(), page.clear_seq.unwrap());
                    return (l, c, pairs, pages);
                }
                at = pairs.last().map(|p| p.2);
            }
        };
        let mut rng = SplitMix64::new(22);
        let mut state = BTreeMap::new();
        let mut known: Option<Known> = None;
        let (mut incremental_pairs, mut full_pairs) = (0, 0);
        for round in 0..60 {
            let seq = m.latest_seq() + 1;
            match rng.below(6) {
                0 => m.clear_seq = seq,
                1 if !m.live_pairs().is_empty() => {
                    let live = m.live_pairs();
                    let key = live[rng.below(live.len() as u64) as usize].key.clone();
                    m.pairs.retain(|p| p.key != key);
                    m.pairs.push(StoredPair {
                        key,
                        value: String::new(),
                        seq,
                    });
                }
                2 => {} // no change this round
                _ => {
                    for _ in 0..1 + rng.below(260) {
                        let key = format!("k{}", rng.below(400));
                        m.pairs.retain(|p| p.key != key);
                        m.pairs.push(StoredPair {
                            key,
                            value: format!("v{round}"),
                            seq,
                        });
                    }
                }
            }
            m.pairs.sort_by_key(|p| p.seq);
            let now = round * DAY_US;
            let (latest, clear, pairs, _) = match start(known.as_ref(), now, None, false) {
                Start::Full => read(&m, None),
                Start::From(s) => read(&m, Some(s)),
            };
            incremental_pairs += pairs.len();
            full_pairs += m.pairs.len();
            let verdict = match &known {
                None => Verdict::ReadFull,
                Some(k) => judge(k, latest, clear, pairs.iter().map(|p| p.2)),
            };
            match verdict {
                Verdict::Unchanged => {}
                Verdict::Changed { clear_seq } => {
                    apply(
                        &mut state,
                        clear_seq,
                        pairs.iter().map(|(k, v, s)| (k.as_str(), v.as_str(), *s)),
                    );
                }
                Verdict::ReadFull => {
                    let (_, clear, all, _) = read(&m, None);
                    state.clear();
                    apply(
                        &mut state,
                        clear,
                        all.iter().map(|(k, v, s)| (k.as_str(), v.as_str(), *s)),
                    );
                }
            }
            known = Some(Known {
                latest_seq: latest,
                clear_seq: clear,
                last_full_read_us: 0,
            });
            assert_eq!(state, full_state(&m), "round {round}");
        }
        assert!(
            incremental_pairs * 2 < full_pairs,
            "incremental reads fetch less: {incremental_pairs} of {full_pairs} pairs"
        );
    }

    /// Sequences of operations (sets, deletes shown as tombstones or not,
    /// clears) between two reads, each read from where the last left it
    /// through the simulator's own answers: after every read the state
    /// equals a full read. Each operation takes the next Seq, as on the
    /// service (`StoredMessage::apply`).
    #[test]
    fn several_operations_between_two_reads_equal_a_full_read() {
        use crate::mock::store::{Deletes, Op, SplitMix64, StoredMessage};
        for deletes in [Deletes::Tombstone, Deletes::Hidden] {
            let mut m = StoredMessage::new(crate::kind::MessageRef::new(None, "b", "k"), 0, vec![]);
            let mut rng = SplitMix64::new(29);
            let (mut state, mut known) = (BTreeMap::new(), None::<Known>);
            let mut full_reads = 0;
            for round in 0..400 {
                for _ in 0..rng.below(5) {
                    let live = m.live_pairs();
                    let op = match rng.below(8) {
                        0 => Op::Clear,
                        1..=3 if !live.is_empty() => Op::Delete {
                            key: live[rng.below(live.len() as u64) as usize].key.clone(),
                        },
                        _ => Op::Set {
                            key: format!("k{}", rng.below(12)),
                            value: format!("v{round}"),
                        },
                    };
                    m.apply(&op, deletes);
                }
                let answer = |start| {
                    let page = m.page_with(start, 300, deletes);
                    let pairs: Vec<(String, String, i64)> = (0..page.pairs().len())
                        .map(|i| page.pairs().get(i).unwrap())
                        .map(|p| (p.key.to_owned(), p.value.to_owned(), p.seq))
                        .collect();
                    (page.latest_seq.unwrap(), page.clear_seq.unwrap(), pairs)
                };
                // The Seqs a run keeps are those of the answer it took.
                let (mut latest, mut clear, pairs) = match &known {
                    None => (0, 0, Vec::new()),
                    Some(k) => answer(Some(k.latest_seq + 1)),
                };
                let verdict = match &known {
                    None => Verdict::ReadFull,
                    Some(k) => judge(k, latest, clear, pairs.iter().map(|p| p.2)),
                };
                match verdict {
                    Verdict::Unchanged => {}
                    Verdict::Changed { clear_seq } => apply(
                        &mut state,
                        clear_seq,
                        pairs.iter().map(|(k, v, s)| (k.as_str(), v.as_str(), *s)),
                    ),
                    Verdict::ReadFull => {
                        full_reads += 1;
                        let all;
                        (latest, clear, all) = answer(None);
                        state.clear();
                        apply(
                            &mut state,
                            clear,
                            all.iter().map(|(k, v, s)| (k.as_str(), v.as_str(), *s)),
                        );
                    }
                }
                known = Some(Known {
                    latest_seq: latest,
                    clear_seq: clear,
                    last_full_read_us: 0,
                });
                assert_eq!(state, full_state(&m), "{deletes:?} round {round}");
            }
            assert!(full_reads < 400, "{deletes:?}: some reads stay incremental");
        }
    }
}
