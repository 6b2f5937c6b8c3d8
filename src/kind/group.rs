//! Group messages: `v4/openim_msg_ext_http_svc/group_get_key_values`,
//! identified by (GroupId, MsgSeq). The API's answer has exactly the shape
//! of the one-to-one call's; its error codes are not all documented.

use super::{
    BadId, Identity, IdentityColumns, JsonObject, Kind, KindMismatch, KindSpec, MessageId,
};
use crate::codes::{self, Action};
use crate::columns::{finish_int, finish_text};
use arrow_array::ArrayRef;
use arrow_array::builder::{Int64Builder, StringBuilder};
use arrow_schema::{DataType, Field};
use serde::Serialize;
use std::fmt;

/// The group kind (`KindSpec`).
pub(crate) struct Group;

impl KindSpec for Group {
    fn name(&self) -> &'static str {
        "group"
    }

    fn columns(&self) -> &'static [&'static str] {
        &["GroupId", "MsgSeq"]
    }

    /// A non-empty GroupId and a positive integer MsgSeq.
    fn parse_cells(&self, cells: &[&str]) -> Result<MessageId, BadId> {
        let [group_id, msg_seq] = cells else {
            return Err(BadId::Cells);
        };
        if group_id.is_empty() {
            return Err(BadId::Empty("GroupId"));
        }
        match msg_seq.parse::<i64>() {
            Ok(seq) if seq > 0 => Ok(GroupMessageRef::new(group_id, seq).into()),
            _ => Err(BadId::NotPositive {
                field: "MsgSeq",
                given: Some(msg_seq.to_string()),
            }),
        }
    }

    fn api_path(&self) -> &'static str {
        "/v4/openim_msg_ext_http_svc/group_get_key_values"
    }

    /// GroupId a non-empty string, MsgSeq a positive integer.
    fn parse_request(&self, body: &JsonObject) -> Result<MessageId, BadId> {
        let group_id = match body.get("GroupId") {
            Some(serde_json::Value::String(s)) if !s.is_empty() => s,
            Some(serde_json::Value::String(_)) => return Err(BadId::Empty("GroupId")),
            Some(_) => return Err(BadId::NotString("GroupId")),
            None => return Err(BadId::Required("GroupId")),
        };
        let msg_seq = match body.get("MsgSeq") {
            Some(v) => v.as_i64().filter(|s| *s > 0).ok_or(BadId::NotPositive {
                field: "MsgSeq",
                given: None,
            })?,
            None => return Err(BadId::Required("MsgSeq")),
        };
        Ok(GroupMessageRef::new(group_id, msg_seq).into())
    }

    /// Codes of the group API that read differently from the common table:
    /// the group is missing or dissolved (10010), the group ID is invalid
    /// (10015), no such message (23004) are "not found"; no permission
    /// (10007) and a plan without the feature (10059) stop the run.
    fn classify_code(&self, code: i64) -> Option<Action> {
        match code {
            10010 | 10015 | 23004 => Some(Action::NotFound),
            10007 | 10059 => Some(Action::FailRun),
            _ => None,
        }
    }

    fn not_found(&self, group_known: bool) -> (i64, &'static str) {
        match group_known {
            false => (
                codes::GROUP_NOT_FOUND,
                "the group does not exist or was dismissed",
            ),
            true => (codes::NOT_FOUND, "the group message does not exist"),
        }
    }

    fn tables(&self) -> [&'static str; 2] {
        ["group_key_values", "group_messages"]
    }

    fn events_table(&self) -> &'static str {
        "group_extension_events"
    }

    fn changes_table(&self) -> &'static str {
        "group_key_value_changes"
    }

    fn identity_fields(&self) -> Vec<Field> {
        vec![
            Field::new("group_id", DataType::Utf8, false),
            Field::new("msg_seq", DataType::Int64, false),
        ]
    }

    fn identity_columns(&self) -> Box<dyn IdentityColumns> {
        Box::<Columns>::default()
    }
}

/// One group message, as identified by the API: (GroupId, MsgSeq).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct GroupMessageRef {
    pub group_id: String,
    pub msg_seq: i64,
}

impl GroupMessageRef {
    pub fn new(group_id: &str, msg_seq: i64) -> Self {
        GroupMessageRef {
            group_id: group_id.to_owned(),
            msg_seq,
        }
    }
}

impl Identity for GroupMessageRef {
    fn kind(&self) -> Kind {
        Kind::Group
    }

    /// The leading tag keeps it apart from every one-to-one fingerprint.
    fn fingerprint(&self) -> u128 {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update([2u8]);
        h.update((self.group_id.len() as u64).to_le_bytes());
        h.update(self.group_id.as_bytes());
        h.update(self.msg_seq.to_le_bytes());
        super::fingerprint_of(&h.finalize())
    }

    fn request_body(&self, start_seq: Option<i64>) -> Vec<u8> {
        super::json_body(&Request {
            group_id: &self.group_id,
            msg_seq: self.msg_seq,
            start_seq,
        })
    }

    fn cells(&self) -> Vec<String> {
        vec![self.group_id.clone(), self.msg_seq.to_string()]
    }

    fn text_len(&self) -> usize {
        self.group_id.len() + 8
    }

    fn scope(&self) -> Option<&str> {
        Some(&self.group_id)
    }
}

impl fmt::Display for GroupMessageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} #{}", self.group_id, self.msg_seq)
    }
}

/// The JSON body of a call. `StartSeq` is optional.
#[derive(Debug, Serialize)]
struct Request<'a> {
    #[serde(rename = "GroupId")]
    group_id: &'a str,
    #[serde(rename = "MsgSeq")]
    msg_seq: i64,
    #[serde(rename = "StartSeq", skip_serializing_if = "Option::is_none")]
    start_seq: Option<i64>,
}

/// The builders of `group_id`, `msg_seq`.
#[derive(Default)]
struct Columns {
    group_id: StringBuilder,
    msg_seq: Int64Builder,
}

impl IdentityColumns for Columns {
    fn append(&mut self, id: &MessageId) -> Result<(), KindMismatch> {
        let MessageId::Group(m) = id else {
            return Err(KindMismatch(id.kind()));
        };
        self.group_id.append_value(&m.group_id);
        self.msg_seq.append_value(m.msg_seq);
        Ok(())
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            finish_text(&mut self.group_id),
            finish_int(&mut self.msg_seq),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::Action;

    #[test]
    fn rows_are_a_group_id_and_a_positive_seq() {
        let table: [(&[&str], Result<GroupMessageRef, &str>); 7] = [
            (&["@TGS#1", "158"], Ok(GroupMessageRef::new("@TGS#1", 158))),
            (&["g", "1"], Ok(GroupMessageRef::new("g", 1))),
            (&["", "1"], Err("GroupId is empty")),
            (&["g", "0"], Err("MsgSeq must be a positive integer")),
            (&["g", "-3"], Err("MsgSeq must be a positive integer")),
            (&["g", "1.5"], Err("MsgSeq must be a positive integer")),
            (&["g", ""], Err("MsgSeq must be a positive integer")),
        ];
        for (cells, want) in table {
            match (Group.parse_cells(cells), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w.into()),
                (Err(got), Err(w)) => assert!(got.to_string().starts_with(w), "{got}"),
                (got, w) => panic!("{cells:?}: {got:?} vs {w:?}"),
            }
        }
    }

    #[test]
    fn group_codes_of_the_api_notes() {
        let table = [
            (10010, Some(Action::NotFound)),
            (10015, Some(Action::NotFound)),
            (23004, Some(Action::NotFound)),
            (10007, Some(Action::FailRun)),
            (10059, Some(Action::FailRun)),
            (10002, None),
            (10004, None),
            (10006, None),
        ];
        for (code, want) in table {
            assert_eq!(Group.classify_code(code), want, "{code}");
        }
    }

    #[test]
    fn request_bodies_are_read_as_strictly_as_the_service_reads_them() {
        let table: [(&str, Result<GroupMessageRef, &str>); 7] = [
            (
                r#"{"GroupId":"@TGS#1","MsgSeq":158}"#,
                Ok(GroupMessageRef::new("@TGS#1", 158)),
            ),
            (
                r#"{"GroupId":"g","MsgSeq":1,"StartSeq":9}"#,
                Ok(GroupMessageRef::new("g", 1)),
            ),
            (r#"{"MsgSeq":1}"#, Err("GroupId is required")),
            (r#"{"GroupId":"","MsgSeq":1}"#, Err("GroupId is empty")),
            (
                r#"{"GroupId":5,"MsgSeq":1}"#,
                Err("GroupId must be a string"),
            ),
            (r#"{"GroupId":"g"}"#, Err("MsgSeq is required")),
            (
                r#"{"GroupId":"g","MsgSeq":"1"}"#,
                Err("MsgSeq must be a positive integer"),
            ),
        ];
        for (body, want) in table {
            let obj: JsonObject = serde_json::from_str(body).unwrap();
            let got = Group.parse_request(&obj).map_err(|e| e.to_string());
            assert_eq!(
                got,
                want.map(MessageId::from).map_err(str::to_owned),
                "{body}"
            );
        }
        let m = GroupMessageRef::new("@TGS#\"1", 7);
        let obj: JsonObject = serde_json::from_slice(&m.request_body(None)).unwrap();
        assert_eq!(Group.parse_request(&obj), Ok(m.into()));
    }
}
