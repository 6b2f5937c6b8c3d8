//! The pairs of an answer, as compact as they came: `PairList` holds the
//! strings of all of a message's (or a page's) pairs in one buffer, from
//! the response's decoding (`wire`) to the WAL and the lake.

/// A pair borrowed for writing: what a row of `key_values` is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairRef<'a> {
    pub key: &'a str,
    pub value: &'a str,
    pub seq: i64,
    pub fetched_at_us: i64,
}

/// The pairs of a message (or of one page): the strings of all of them in one
/// buffer, so that a page of 200 pairs costs two allocations, not 400, from
/// the response's decoding to the WAL and the lake.
///
/// The WAL keeps it as a JSON array of `[key, value, seq, fetched_at_us]`;
/// the API's `ExtensionList` form is `api::wire::ExtensionList`.
#[derive(Debug, Clone, Default)]
pub struct PairList {
    text: String,
    slots: Vec<Slot>,
}

/// Where a pair's strings are in `PairList::text`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    key: (usize, usize),
    value: (usize, usize),
    seq: i64,
    fetched_at_us: i64,
}

/// No pairs, for answers and records that have none.
pub(crate) static NO_PAIRS: PairList = PairList::new();

impl PairList {
    pub(crate) const fn new() -> Self {
        PairList {
            text: String::new(),
            slots: Vec::new(),
        }
    }

    /// Room for `pairs` pairs whose strings take `bytes` bytes.
    pub(crate) fn with_capacity(pairs: usize, bytes: usize) -> Self {
        PairList {
            text: String::with_capacity(bytes),
            slots: Vec::with_capacity(pairs),
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn text_range(&mut self, s: &str) -> (usize, usize) {
        let start = self.text.len();
        self.text.push_str(s);
        (start, self.text.len())
    }

    pub(crate) fn push(&mut self, p: PairRef<'_>) {
        let slot = Slot {
            key: self.text_range(p.key),
            value: self.text_range(p.value),
            seq: p.seq,
            fetched_at_us: p.fetched_at_us,
        };
        self.slots.push(slot);
    }

    /// Put `p` in place of the `i`-th pair (the old strings stay unused in
    /// the buffer until `live_in_seq_order` compacts it).
    pub(crate) fn replace(&mut self, i: usize, p: PairRef<'_>) {
        let slot = Slot {
            key: self.text_range(p.key),
            value: self.text_range(p.value),
            seq: p.seq,
            fetched_at_us: p.fetched_at_us,
        };
        self.slots[i] = slot;
    }

    fn pair(&self, s: &Slot) -> PairRef<'_> {
        PairRef {
            key: &self.text[s.key.0..s.key.1],
            value: &self.text[s.value.0..s.value.1],
            seq: s.seq,
            fetched_at_us: s.fetched_at_us,
        }
    }

    pub(crate) fn get(&self, i: usize) -> Option<PairRef<'_>> {
        self.slots.get(i).map(|s| self.pair(s))
    }

    pub(crate) fn first(&self) -> Option<PairRef<'_>> {
        self.get(0)
    }

    pub(crate) fn last(&self) -> Option<PairRef<'_>> {
        self.slots.last().map(|s| self.pair(s))
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = PairRef<'_>> + '_ {
        self.slots.iter().map(|s| self.pair(s))
    }

    /// The Seq of each pair, in order.
    pub(crate) fn seqs(&self) -> impl ExactSizeIterator<Item = i64> + '_ {
        self.slots.iter().map(|s| s.seq)
    }

    /// Every pair arrived at `fetched_at_us` (a page's pairs share its time).
    pub(crate) fn stamp(&mut self, fetched_at_us: i64) {
        for s in &mut self.slots {
            s.fetched_at_us = fetched_at_us;
        }
    }

    /// The pairs with Seq above `clear_seq`, in Seq order (stable), their
    /// strings compacted. A list that already is that (one page, sorted,
    /// nothing cleared, nothing replaced) is returned as it is.
    pub(crate) fn live_in_seq_order(self, clear_seq: i64) -> PairList {
        let used: usize = self
            .slots
            .iter()
            .map(|s| s.key.1 - s.key.0 + s.value.1 - s.value.0)
            .sum();
        if used == self.text.len() && self.seqs().all(|q| q > clear_seq) && self.seqs().is_sorted()
        {
            return self;
        }
        let mut order: Vec<&Slot> = self.slots.iter().filter(|s| s.seq > clear_seq).collect();
        order.sort_by_key(|s| s.seq);
        let mut out = PairList::with_capacity(order.len(), used);
        for s in order {
            out.push(self.pair(s));
        }
        out
    }
}

/// Equal when they hold the same pairs in the same order (however the
/// strings lie in the buffer).
impl PartialEq for PairList {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for PairList {}

impl<'a> FromIterator<PairRef<'a>> for PairList {
    fn from_iter<I: IntoIterator<Item = PairRef<'a>>>(iter: I) -> Self {
        let mut out = PairList::new();
        for p in iter {
            out.push(p);
        }
        out
    }
}

/// A string decoded straight into a `PairList`'s buffer: no `String` of its
/// own (serde_json hands over a borrowed `str` when it has no escapes).
pub(crate) struct StrInto<'a>(pub &'a mut String);

impl<'de> serde::de::DeserializeSeed<'de> for StrInto<'_> {
    type Value = (usize, usize);

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(usize, usize), D::Error> {
        d.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for StrInto<'_> {
    type Value = (usize, usize);

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(usize, usize), E> {
        let start = self.0.len();
        self.0.push_str(v);
        Ok((start, self.0.len()))
    }
}

impl PairList {
    /// Add a pair whose strings were decoded into the buffer already.
    pub(crate) fn push_decoded(
        &mut self,
        key: (usize, usize),
        value: (usize, usize),
        seq: i64,
        fetched_at_us: i64,
    ) {
        self.slots.push(Slot {
            key,
            value,
            seq,
            fetched_at_us,
        });
    }

    /// The buffer, for decoding strings into it.
    pub(crate) fn text_mut(&mut self) -> &mut String {
        &mut self.text
    }
}

/// The WAL's form: `[[key, value, seq, fetched_at_us], ...]`.
impl serde::Serialize for PairList {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = ser.serialize_seq(Some(self.len()))?;
        for p in self.iter() {
            seq.serialize_element(&(p.key, p.value, p.seq, p.fetched_at_us))?;
        }
        seq.end()
    }
}

impl<'de> serde::Deserialize<'de> for PairList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PairList, D::Error> {
        struct Pairs;
        impl<'de> serde::de::Visitor<'de> for Pairs {
            type Value = PairList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of [key, value, seq, fetched_at_us]")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<PairList, A::Error> {
                let mut out = PairList::new();
                while a.next_element_seed(Tuple(&mut out))?.is_some() {}
                Ok(out)
            }
        }
        /// One `[key, value, seq, fetched_at_us]`, decoded into the list.
        struct Tuple<'a>(&'a mut PairList);
        impl<'de> serde::de::DeserializeSeed<'de> for Tuple<'_> {
            type Value = ();
            fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                d.deserialize_tuple(4, self)
            }
        }
        impl<'de> serde::de::Visitor<'de> for Tuple<'_> {
            type Value = ();
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("[key, value, seq, fetched_at_us]")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
                use serde::de::Error;
                let short = |n| A::Error::invalid_length(n, &"4 elements");
                let key = a
                    .next_element_seed(StrInto(self.0.text_mut()))?
                    .ok_or_else(|| short(0))?;
                let value = a
                    .next_element_seed(StrInto(self.0.text_mut()))?
                    .ok_or_else(|| short(1))?;
                let seq: i64 = a.next_element()?.ok_or_else(|| short(2))?;
                let at: i64 = a.next_element()?.ok_or_else(|| short(3))?;
                if a.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(A::Error::invalid_length(5, &"4 elements"));
                }
                self.0.push_decoded(key, value, seq, at);
                Ok(())
            }
        }
        d.deserialize_seq(Pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(pairs: &[(&str, &str, i64)]) -> PairList {
        pairs
            .iter()
            .map(|&(key, value, seq)| PairRef {
                key,
                value,
                seq,
                fetched_at_us: 0,
            })
            .collect()
    }

    fn triples(l: &PairList) -> Vec<(String, String, i64)> {
        l.iter()
            .map(|p| (p.key.to_owned(), p.value.to_owned(), p.seq))
            .collect()
    }

    #[test]
    fn live_in_seq_order_drops_cleared_pairs_sorts_stably_and_compacts() {
        type Case = (PairList, i64, Vec<(&'static str, &'static str, i64)>);
        let mut replaced = list(&[("a", "1", 1), ("b", "2", 2)]);
        replaced.replace(
            0,
            PairRef {
                key: "a",
                value: "new",
                seq: 3,
                fetched_at_us: 0,
            },
        );
        let cases: Vec<Case> = vec![
            (list(&[]), 0, vec![]),
            (
                list(&[("a", "1", 1), ("b", "", 2)]),
                0,
                vec![("a", "1", 1), ("b", "", 2)],
            ),
            (
                list(&[("a", "1", 1), ("b", "2", 2)]),
                1,
                vec![("b", "2", 2)],
            ),
            (list(&[("a", "1", 1), ("b", "2", 2)]), 2, vec![]),
            (
                list(&[("c", "3", 3), ("a", "1", 1), ("b", "2", 1)]),
                0,
                vec![("a", "1", 1), ("b", "2", 1), ("c", "3", 3)],
            ),
            (replaced, 0, vec![("b", "2", 2), ("a", "new", 3)]),
        ];
        for (i, (l, clear, want)) in cases.into_iter().enumerate() {
            let got = l.live_in_seq_order(clear);
            let want: Vec<_> = want
                .into_iter()
                .map(|(k, v, s)| (k.to_owned(), v.to_owned(), s))
                .collect();
            assert_eq!(triples(&got), want, "case {i}");
            let used: usize = got.iter().map(|p| p.key.len() + p.value.len()).sum();
            assert_eq!(got.text.len(), used, "case {i}: strings not compacted");
        }
    }

    #[test]
    fn the_wal_form_is_an_array_of_four_element_arrays() {
        // The form msgext has written since the WAL's first version.
        let line = r#"[["k","v,\"\n",3,7],["é","",4,8]]"#;
        let l: PairList = serde_json::from_str(line).unwrap();
        let got: Vec<PairRef> = l.iter().collect();
        assert_eq!(
            got,
            [
                PairRef {
                    key: "k",
                    value: "v,\"\n",
                    seq: 3,
                    fetched_at_us: 7
                },
                PairRef {
                    key: "é",
                    value: "",
                    seq: 4,
                    fetched_at_us: 8
                }
            ]
        );
        assert_eq!(serde_json::to_string(&l).unwrap(), line);
        for bad in [
            r#"[["k","v",3]]"#,
            r#"[["k","v",3,7,9]]"#,
            r#"[["k",1,3,7]]"#,
            r#"{"k":1}"#,
        ] {
            assert!(serde_json::from_str::<PairList>(bad).is_err(), "{bad}");
        }
    }
}
