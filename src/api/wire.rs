//! Wire types of the answer of `get_key_values` and `group_get_key_values`
//! (the same shape), which the client decodes and the simulator encodes. The
//! request bodies belong to the kinds of message (`kind`).

use super::pairs::{PairList, PairRef, StrInto};
use serde::de::{Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, SerializeStruct};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `ExtensionList`: `[{"Key": …, "Value": …, "Seq": …}, …]`, decoded
/// straight into one `PairList` (no `String` per key and value). `Value` may
/// be missing (empty); `Key` and `Seq` may not; other fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ExtensionList(pub PairList);

impl ExtensionList {
    /// A list of (key, value, seq), as the simulator and the tests build them.
    pub(crate) fn of<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str, i64)>) -> Self {
        ExtensionList(
            pairs
                .into_iter()
                .map(|(key, value, seq)| PairRef {
                    key,
                    value,
                    seq,
                    fetched_at_us: 0,
                })
                .collect(),
        )
    }
}

impl Serialize for ExtensionList {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        struct Pair<'a>(PairRef<'a>);
        impl Serialize for Pair<'_> {
            fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                let mut st = ser.serialize_struct("Pair", 3)?;
                st.serialize_field("Key", self.0.key)?;
                st.serialize_field("Value", self.0.value)?;
                st.serialize_field("Seq", &self.0.seq)?;
                st.end()
            }
        }
        let mut seq = ser.serialize_seq(Some(self.0.len()))?;
        for p in self.0.iter() {
            seq.serialize_element(&Pair(p))?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for ExtensionList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(ListVisitor).map(ExtensionList)
    }
}

struct ListVisitor;

impl<'de> Visitor<'de> for ListVisitor {
    type Value = PairList;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of {Key, Value, Seq}")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<PairList, A::Error> {
        let mut out = PairList::default();
        while a.next_element_seed(PairInto(&mut out))?.is_some() {}
        Ok(out)
    }
}

/// One `{Key, Value, Seq}`, decoded into the list.
struct PairInto<'a>(&'a mut PairList);

/// A pair's field name, read as an identifier (the key's text compared in
/// place) rather than as an enum (a variant access per key).
#[derive(Deserialize)]
#[serde(field_identifier)]
enum Field {
    Key,
    Value,
    Seq,
    #[serde(other)]
    Other,
}

impl<'de> serde::de::DeserializeSeed<'de> for PairInto<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PairInto<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a pair {Key, Value, Seq}")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let (mut key, mut value, mut seq) = (None, None, None);
        while let Some(field) = m.next_key::<Field>()? {
            match field {
                Field::Key if key.is_some() => return Err(A::Error::duplicate_field("Key")),
                Field::Value if value.is_some() => return Err(A::Error::duplicate_field("Value")),
                Field::Seq if seq.is_some() => return Err(A::Error::duplicate_field("Seq")),
                Field::Key => key = Some(m.next_value_seed(StrInto(self.0.text_mut()))?),
                Field::Value => value = Some(m.next_value_seed(StrInto(self.0.text_mut()))?),
                Field::Seq => seq = Some(m.next_value::<i64>()?),
                Field::Other => {
                    m.next_value::<IgnoredAny>()?;
                }
            }
        }
        let key = key.ok_or_else(|| A::Error::missing_field("Key"))?;
        let seq = seq.ok_or_else(|| A::Error::missing_field("Seq"))?;
        let end = self.0.text_mut().len();
        self.0
            .push_decoded(key, value.unwrap_or((end, end)), seq, 0);
        Ok(())
    }
}

/// A response. `ErrorCode` is required (a body without it is unparseable);
/// everything else may be missing, `ActionStatus` included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetKeyValuesResponse {
    #[serde(
        rename = "ActionStatus",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) action_status: Option<String>,
    #[serde(rename = "ErrorCode")]
    pub(crate) error_code: i64,
    #[serde(rename = "ErrorInfo", default)]
    pub(crate) error_info: String,
    #[serde(
        rename = "CompleteFlag",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) complete_flag: Option<i64>,
    #[serde(rename = "LatestSeq", default, skip_serializing_if = "Option::is_none")]
    pub(crate) latest_seq: Option<i64>,
    #[serde(rename = "ClearSeq", default, skip_serializing_if = "Option::is_none")]
    pub(crate) clear_seq: Option<i64>,
    /// `None` when the answer has no `ExtensionList` at all (which an OK
    /// answer must have: see `fetch::pager::check_answer`).
    #[serde(
        rename = "ExtensionList",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) extension_list: Option<ExtensionList>,
}

impl GetKeyValuesResponse {
    /// An error answer as the service gives it.
    pub(crate) fn error(code: i64, info: impl Into<String>) -> Self {
        GetKeyValuesResponse {
            action_status: Some("FAIL".into()),
            error_code: code,
            error_info: info.into(),
            complete_flag: None,
            latest_seq: None,
            clear_seq: None,
            extension_list: None,
        }
    }

    /// The pairs of the page (none when `ExtensionList` is missing).
    pub fn pairs(&self) -> &PairList {
        self.extension_list
            .as_ref()
            .map_or(&super::pairs::NO_PAIRS, |l| &l.0)
    }
}

impl super::Answer for GetKeyValuesResponse {
    fn error_code(&self) -> i64 {
        self.error_code
    }
    fn into_info(self) -> String {
        self.error_info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_documented_example_and_a_response_without_action_status() {
        let doc = r#"{"ErrorCode": 0,"ErrorInfo": "","ActionStatus": "OK","CompleteFlag": 1,"LatestSeq": 2,"ClearSeq": 0,"ExtensionList": [{"Key": "k1","Value": "v1","Seq": 1},{"Key": "k2","Value": "v2","Seq": 1},{"Key": "k3","Value": "v3","Seq": 2}]}"#;
        let r: GetKeyValuesResponse = serde_json::from_str(doc).unwrap();
        assert_eq!(r.error_code, 0);
        assert_eq!(r.complete_flag, Some(1));
        assert_eq!(r.latest_seq, Some(2));
        assert_eq!(r.pairs().len(), 3);
        assert_eq!(r.pairs().get(2).map(|p| p.key), Some("k3"));

        let bare: GetKeyValuesResponse =
            serde_json::from_str(r#"{"ErrorCode":23004,"ErrorInfo":"no such message"}"#).unwrap();
        assert_eq!(bare.action_status, None);
        assert_eq!(bare.error_code, 23004);

        assert!(serde_json::from_str::<GetKeyValuesResponse>(r#"{"ActionStatus":"OK"}"#).is_err());
        assert!(serde_json::from_str::<GetKeyValuesResponse>("<html>502</html>").is_err());
    }

    type Triples = Vec<(String, String, i64)>;

    fn decoded(list: &str) -> Result<Triples, String> {
        serde_json::from_str::<ExtensionList>(list)
            .map(|l| {
                l.0.iter()
                    .map(|p| (p.key.to_owned(), p.value.to_owned(), p.seq))
                    .collect()
            })
            .map_err(|e| e.to_string())
    }

    #[test]
    fn extension_lists_decode_into_one_buffer_as_the_api_writes_them() {
        let ok = |v: &[(&str, &str, i64)]| -> Result<Triples, String> {
            Ok(v.iter()
                .map(|&(k, v, s)| (k.to_owned(), v.to_owned(), s))
                .collect())
        };
        let table: Vec<(&str, Result<Triples, String>)> = vec![
            ("[]", ok(&[])),
            (
                r#"[{"Key":"k1","Value":"v1","Seq":1},{"Seq":2,"Value":"v2","Key":"k2"}]"#,
                ok(&[("k1", "v1", 1), ("k2", "v2", 2)]),
            ),
            // Escapes are decoded (a copy), plain strings borrowed.
            (
                r#"[{"Key":"a\"b","Value":"\u00e9\n","Seq":3}]"#,
                ok(&[("a\"b", "é\n", 3)]),
            ),
            // Value may be missing; other fields are skipped.
            (
                r#"[{"Key":"k","Seq":4,"Extra":{"x":[1,2]}},{"Key":"l","Value":"v","Seq":5}]"#,
                ok(&[("k", "", 4), ("l", "v", 5)]),
            ),
            (
                r#"[{"Value":"v","Seq":1}]"#,
                Err("missing field `Key`".into()),
            ),
            (
                r#"[{"Key":"k","Value":"v"}]"#,
                Err("missing field `Seq`".into()),
            ),
            (
                r#"[{"Key":"k","Key":"j","Seq":1}]"#,
                Err("duplicate field `Key`".into()),
            ),
            (r#"[{"Key":1,"Seq":1}]"#, Err("invalid type".into())),
            (r#"[{"Key":"k","Seq":"1"}]"#, Err("invalid type".into())),
            (r#"{"Key":"k"}"#, Err("invalid type".into())),
        ];
        for (i, (text, want)) in table.into_iter().enumerate() {
            match (decoded(text), want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "case {i}"),
                (Err(g), Err(w)) => assert!(g.contains(&w), "case {i}: {g}"),
                (g, w) => panic!("case {i}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn extension_lists_encode_as_the_documented_objects() {
        let l = ExtensionList::of([("k1", "v\"1", 1), ("k2", "", 2)]);
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            r#"[{"Key":"k1","Value":"v\"1","Seq":1},{"Key":"k2","Value":"","Seq":2}]"#
        );
        let back: ExtensionList =
            serde_json::from_str(&serde_json::to_string(&l).unwrap()).unwrap();
        assert_eq!(back, l);
    }
}
