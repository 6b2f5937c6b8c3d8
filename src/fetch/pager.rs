//! Paging one message, as a pure state machine: feed it each page's answer, it
//! says which `StartSeq` to ask for next, or that the message is complete.
//!
//! Pages hold at most 200 pairs and may end inside a run of pairs sharing one
//! Seq, so the next page starts at the *last* Seq seen (not last + 1) and keys
//! already held are dropped. Every step must make progress: a page that adds
//! no new key moves `StartSeq` past its last Seq, unless that would skip pairs
//! (a whole page of one Seq), in which case the message is reported stuck
//! rather than silently cut short.

use crate::api::BadAnswer;
use crate::api::pairs::{PairList, PairRef};
use crate::api::wire::GetKeyValuesResponse;
use std::collections::HashMap;

/// Hard limit on pages per message; the API's 300 keys need at most a few.
pub(crate) const MAX_PAGES: u32 = 10_000;

/// The result of draining a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PagedMessage {
    /// Live pairs (Seq > ClearSeq), one per key, in Seq order.
    pub(crate) pairs: PairList,
    pub(crate) latest_seq: i64,
    pub(crate) clear_seq: i64,
    pub(crate) pages: u32,
}

/// What to do after a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Ask again with this `StartSeq`.
    Next(i64),
    /// Everything has been returned.
    Done,
    /// The API cannot page past this point without dropping pairs.
    Stuck,
}

#[derive(Debug, Default)]
pub(crate) struct Pager {
    start_seq: Option<i64>,
    /// Key → position in `pairs`; built only when a second page comes (most
    /// messages fit one page, and the index costs a key copy per pair).
    index: Option<HashMap<String, usize>>,
    pairs: PairList,
    latest_seq: i64,
    clear_seq: i64,
    pages: u32,
}

impl Pager {
    /// A pager whose first request asks from `start_seq` (an incremental
    /// read: only pairs with a Seq at or above it).
    pub(crate) fn starting_at(start_seq: Option<i64>) -> Self {
        Pager {
            start_seq,
            ..Self::default()
        }
    }

    /// The `StartSeq` of the next request (`None` for the first).
    pub(crate) fn start_seq(&self) -> Option<i64> {
        self.start_seq
    }

    pub(crate) fn pages(&self) -> u32 {
        self.pages
    }

    /// Whether an answer with ErrorCode 0 can be the whole truth about this
    /// page. An answer that cannot (see `check_answer`) is a bad response: it
    /// is retried, never taken for data.
    pub(crate) fn check(&self, page: &GetKeyValuesResponse) -> Result<(), BadAnswer> {
        check_answer(page)
    }

    /// Take in a successful page (ErrorCode 0) that passed `check`.
    pub(crate) fn accept(&mut self, page: GetKeyValuesResponse, fetched_at_us: i64) -> Step {
        self.pages += 1;
        if let Some(l) = page.latest_seq {
            self.latest_seq = l;
        }
        if let Some(c) = page.clear_seq {
            self.clear_seq = c;
        }
        let mut list = page.extension_list.map(|l| l.0).unwrap_or_default();
        let full = list.len() >= crate::api::PAGE_SIZE;
        let (first_seq, last_seq) = match (list.first(), list.last()) {
            (Some(f), Some(l)) => (f.seq, l.seq),
            // An empty page that says it is complete ends the message; one
            // that says "more to come" never passes `check`.
            _ if page.complete_flag == Some(1) => return Step::Done,
            _ => return Step::Stuck,
        };
        let mut added = 0usize;
        list.stamp(fetched_at_us);
        if self.pages == 1 {
            added = list.len();
            self.pairs = list;
        } else {
            self.build_index();
            for p in list.iter() {
                added += usize::from(self.insert(p));
            }
        }
        // CompleteFlag 1 ends the message; 0 asks for more (`check` has refused any other).
        if page.complete_flag == Some(1) {
            return Step::Done;
        }
        if self.pages >= MAX_PAGES {
            return Step::Stuck;
        }
        let prev = self.start_seq.unwrap_or(i64::MIN);
        let next = if added > 0 {
            last_seq
        } else if full && first_seq == last_seq {
            // 200 pairs of one Seq, all known: more of that Seq may exist, and
            // no StartSeq can reach them.
            return Step::Stuck;
        } else {
            last_seq.saturating_add(1)
        };
        if next < prev || (next == prev && added == 0) {
            return Step::Stuck;
        }
        self.start_seq = Some(next);
        Step::Next(next)
    }

    /// Index the pairs held so far, keeping one per key (the highest Seq).
    fn build_index(&mut self) {
        if self.index.is_some() {
            return;
        }
        let held = std::mem::take(&mut self.pairs);
        self.index = Some(HashMap::with_capacity(held.len() * 2));
        for p in held.iter() {
            self.insert(p);
        }
    }

    /// Keep one pair per key: the one with the highest Seq. Returns whether it changed anything.
    fn insert(&mut self, p: PairRef<'_>) -> bool {
        let index = self.index.get_or_insert_with(HashMap::new);
        match index.get(p.key).copied() {
            Some(i) if self.pairs.get(i).is_some_and(|held| held.seq >= p.seq) => false,
            Some(i) => {
                self.pairs.replace(i, p);
                true
            }
            None => {
                index.insert(p.key.to_owned(), self.pairs.len());
                self.pairs.push(p);
                true
            }
        }
    }

    /// The live pairs: those with Seq <= ClearSeq are dead and dropped.
    pub(crate) fn finish(mut self) -> PagedMessage {
        if self.index.is_none() && has_duplicate_keys(&self.pairs) {
            // One page that repeats a key: keep one pair per key all the same.
            self.build_index();
        }
        let clear = self.clear_seq;
        PagedMessage {
            pairs: self.pairs.live_in_seq_order(clear),
            latest_seq: self.latest_seq,
            clear_seq: clear,
            pages: self.pages,
        }
    }
}

/// The checks an OK answer must pass before its pairs are believed: the
/// fields the API documents for an OK answer are all there, it does not also
/// say FAIL, its pairs are sorted by Seq and none is newer than LatestSeq,
/// and a page with no pairs does not claim that more are to come (page 2
/// empty with CompleteFlag 0 once cut 450 pairs to 200 without a word).
pub(crate) fn check_answer(page: &GetKeyValuesResponse) -> Result<(), BadAnswer> {
    if page
        .action_status
        .as_deref()
        .is_some_and(|s| !s.eq_ignore_ascii_case("OK"))
    {
        return Err(BadAnswer("ErrorCode 0 but ActionStatus is not OK"));
    }
    let Some(list) = page.extension_list.as_ref().map(|l| &l.0) else {
        return Err(BadAnswer("an OK answer without ExtensionList"));
    };
    let Some(latest) = page.latest_seq else {
        return Err(BadAnswer("an OK answer without LatestSeq"));
    };
    if page.clear_seq.is_none() {
        return Err(BadAnswer("an OK answer without ClearSeq"));
    }
    match page.complete_flag {
        Some(0) if list.is_empty() => {
            return Err(BadAnswer(
                "an empty page with CompleteFlag 0 (more pairs announced, none given)",
            ));
        }
        Some(0 | 1) => {}
        Some(_) => return Err(BadAnswer("CompleteFlag is neither 0 nor 1")),
        None => return Err(BadAnswer("an OK answer without CompleteFlag")),
    }
    if !list.seqs().is_sorted() {
        return Err(BadAnswer("ExtensionList is not sorted by Seq"));
    }
    if list.last().is_some_and(|p| p.seq > latest) {
        return Err(BadAnswer("a pair newer than LatestSeq"));
    }
    Ok(())
}

fn has_duplicate_keys(pairs: &PairList) -> bool {
    // FxHash: the set only checks one page for a repeated key, nothing an
    // attacker could flood.
    let mut seen: rustc_hash::FxHashSet<&str> =
        rustc_hash::FxHashSet::with_capacity_and_hasher(pairs.len(), Default::default());
    !pairs.iter().all(|p| seen.insert(p.key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::wire::ExtensionList;
    use crate::kind::MessageRef;
    use crate::mock::store::{StoredMessage, StoredPair};

    /// A message of `n` pairs whose Seq runs are 20 long after a first run of
    /// 7, so that every multiple of 200 falls inside a run.
    fn straddling(n: usize) -> StoredMessage {
        let pairs = (0..n)
            .map(|i| StoredPair {
                key: format!("key-{i:04}"),
                value: format!("value {i}"),
                seq: if i < 7 { 1 } else { 2 + ((i - 7) / 20) as i64 },
            })
            .collect();
        StoredMessage::new(MessageRef::new(Some("a"), "b", "1_2_3"), 0, pairs)
    }

    /// Drain a stored message through the simulator's own paging rule.
    fn drain(m: &StoredMessage) -> (PagedMessage, Vec<Option<i64>>) {
        let mut pager = Pager::default();
        let mut asked = Vec::new();
        loop {
            asked.push(pager.start_seq());
            let page = m.page(pager.start_seq(), crate::api::PAGE_SIZE);
            match pager.accept(page, 1) {
                Step::Next(_) => assert!(asked.len() < 100, "no progress: {asked:?}"),
                Step::Done => break,
                Step::Stuck => panic!("stuck after {asked:?}"),
            }
        }
        (pager.finish(), asked)
    }

    #[test]
    fn pages_across_equal_seq_boundaries_lose_nothing() {
        for n in [0usize, 1, 199, 200, 201, 400, 401, 1000] {
            let m = straddling(n);
            for boundary in (200..n).step_by(200) {
                assert_eq!(
                    m.pairs[boundary - 1].seq,
                    m.pairs[boundary].seq,
                    "fixture: boundary {boundary} of {n} must fall inside a run"
                );
            }
            let (got, asked) = drain(&m);
            let want: Vec<_> = m.live_pairs().into_iter().map(|p| p.key).collect();
            let keys: Vec<_> = got.pairs.iter().map(|p| p.key.to_owned()).collect();
            assert_eq!(keys, want, "n={n}");
            assert_eq!(got.pages as usize, asked.len());
            assert!(asked.len() <= n / 180 + 1, "n={n}: {} pages", asked.len());
        }
    }

    #[test]
    fn naive_last_plus_one_would_drop_pairs() {
        // The fixture really exercises the rule: StartSeq = last + 1 loses keys.
        let m = straddling(401);
        let first = m.page(None, 200);
        let last = first.pairs().last().unwrap().seq;
        let second = m.page(Some(last + 1), 200);
        let seen = first.pairs().len() + second.pairs().len();
        let third_start = second.pairs().last().unwrap().seq + 1;
        let rest = m.page(Some(third_start), 200).pairs().len();
        assert!(seen + rest < 401);
    }

    #[test]
    fn dead_pairs_are_dropped_and_seqs_carried() {
        let pairs = vec![
            StoredPair {
                key: "old".into(),
                value: "x".into(),
                seq: 1,
            },
            StoredPair {
                key: "k1".into(),
                value: "v1".into(),
                seq: 3,
            },
            StoredPair {
                key: "k2".into(),
                value: "".into(),
                seq: 4,
            },
        ];
        let m = StoredMessage::new(MessageRef::new(None, "b", "k"), 2, pairs);
        let (got, _) = drain(&m);
        let keys: Vec<_> = got.pairs.iter().map(|p| p.key).collect();
        assert_eq!(keys, ["k1", "k2"]);
        assert_eq!((got.latest_seq, got.clear_seq), (4, 2));
    }

    fn page(list: &[(&str, i64)], complete: Option<i64>) -> GetKeyValuesResponse {
        GetKeyValuesResponse {
            action_status: None,
            error_code: 0,
            error_info: String::new(),
            complete_flag: complete,
            latest_seq: Some(list.last().map_or(0, |p| p.1)),
            clear_seq: Some(0),
            extension_list: Some(ExtensionList::of(list.iter().map(|&(k, s)| (k, "v", s)))),
        }
    }

    #[test]
    fn answers_that_cannot_be_the_whole_truth_are_refused() {
        let good = page(&[("a", 1), ("b", 2)], Some(1));
        let with = |f: &dyn Fn(&mut GetKeyValuesResponse)| {
            let mut p = good.clone();
            f(&mut p);
            p
        };
        let table: Vec<(GetKeyValuesResponse, Option<&str>)> = vec![
            (good.clone(), None),
            (with(&|p| p.action_status = Some("OK".into())), None),
            (page(&[], Some(1)), None),
            (page(&[("a", 1)], Some(0)), None),
            (
                with(&|p| p.action_status = Some("FAIL".into())),
                Some("ActionStatus"),
            ),
            (
                with(&|p| p.extension_list = None),
                Some("without ExtensionList"),
            ),
            (with(&|p| p.latest_seq = None), Some("without LatestSeq")),
            (with(&|p| p.clear_seq = None), Some("without ClearSeq")),
            (
                with(&|p| p.complete_flag = None),
                Some("without CompleteFlag"),
            ),
            (
                with(&|p| p.complete_flag = Some(2)),
                Some("neither 0 nor 1"),
            ),
            (page(&[], Some(0)), Some("empty page with CompleteFlag 0")),
            (page(&[("a", 2), ("b", 1)], Some(1)), Some("not sorted")),
            (
                with(&|p| p.latest_seq = Some(1)),
                Some("newer than LatestSeq"),
            ),
        ];
        for (i, (p, want)) in table.into_iter().enumerate() {
            let got = check_answer(&p).err().map(|e| e.to_string());
            match (want, got) {
                (None, None) => {}
                (Some(w), Some(g)) => assert!(g.contains(w), "case {i}: {g}"),
                (w, g) => panic!("case {i}: want {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn every_answer_makes_progress_or_ends() {
        // (pages fed in order, expected steps)
        let run_of_200: Vec<(String, i64)> = (0..200).map(|i| (format!("k{i}"), 5)).collect();
        let run: Vec<(&str, i64)> = run_of_200.iter().map(|(k, s)| (k.as_str(), *s)).collect();
        let cases: Vec<(Vec<GetKeyValuesResponse>, Vec<Step>)> = vec![
            (vec![page(&[], Some(1))], vec![Step::Done]),
            (
                vec![
                    page(&[("a", 1), ("b", 2)], Some(0)),
                    page(&[("b", 2), ("c", 3)], Some(1)),
                ],
                vec![Step::Next(2), Step::Done],
            ),
            // A server that repeats itself with CompleteFlag 0 cannot trap the pager.
            (
                vec![
                    page(&[("a", 1), ("b", 2)], Some(0)),
                    page(&[("b", 2)], Some(0)),
                    page(&[("b", 2)], Some(0)),
                ],
                vec![Step::Next(2), Step::Next(3), Step::Stuck],
            ),
            // 200 pairs of one Seq, then the same again: cannot go further without loss.
            (
                vec![page(&run, Some(0)), page(&run, Some(0))],
                vec![Step::Next(5), Step::Stuck],
            ),
        ];
        for (i, (pages, steps)) in cases.into_iter().enumerate() {
            let mut pager = Pager::default();
            let got: Vec<Step> = pages.into_iter().map(|p| pager.accept(p, 0)).collect();
            assert_eq!(got, steps, "case {i}");
        }
    }

    fn keys_and_seqs(m: &PagedMessage) -> Vec<(&str, i64)> {
        m.pairs.iter().map(|p| (p.key, p.seq)).collect()
    }

    #[test]
    fn a_single_page_repeating_a_key_still_gives_one_pair_per_key() {
        let mut pager = Pager::default();
        assert_eq!(
            pager.accept(page(&[("a", 1), ("b", 2), ("a", 3)], Some(1)), 0),
            Step::Done
        );
        assert_eq!(keys_and_seqs(&pager.finish()), [("b", 2), ("a", 3)]);
    }

    #[test]
    fn a_key_seen_again_with_a_higher_seq_replaces_the_old_pair() {
        let mut pager = Pager::default();
        assert_eq!(
            pager.accept(page(&[("a", 1), ("b", 2)], Some(0)), 0),
            Step::Next(2)
        );
        assert_eq!(
            pager.accept(page(&[("b", 2), ("a", 3)], Some(1)), 0),
            Step::Done
        );
        assert_eq!(keys_and_seqs(&pager.finish()), [("b", 2), ("a", 3)]);
    }

    #[test]
    fn repeated_keys_are_found_in_a_page_whatever_their_length() {
        let long = "k".repeat(40);
        let long2 = format!("{}x", "k".repeat(39));
        let cases: Vec<(Vec<&str>, bool)> = vec![
            (vec![], false),
            (vec!["a"], false),
            (vec!["a", "b", "c"], false),
            (vec!["a", "b", "a"], true),
            (vec!["", ""], true),
            (vec!["", "\0"], false),
            (vec!["abcdefgh", "abcdefgh\0"], false),
            (vec!["abcdefgh", "abcdefghi", "abcdefgh"], true),
            (vec![&long, &long2], false),
            (vec![&long, &long2, &long], true),
        ];
        for (i, (keys, want)) in cases.into_iter().enumerate() {
            let list: PairList = keys
                .iter()
                .map(|&key| PairRef {
                    key,
                    value: "",
                    seq: 1,
                    fetched_at_us: 0,
                })
                .collect();
            assert_eq!(has_duplicate_keys(&list), want, "case {i}: {keys:?}");
        }
        // 300 distinct keys that share prefixes and lengths.
        let many: Vec<String> = (0..300).map(|i| format!("key-{i:04}")).collect();
        let list: PairList = many
            .iter()
            .map(|key| PairRef {
                key,
                value: "",
                seq: 1,
                fetched_at_us: 0,
            })
            .collect();
        assert!(!has_duplicate_keys(&list));
    }
}
