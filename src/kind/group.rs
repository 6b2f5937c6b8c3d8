//! Group messages: `v4/openim_msg_ext_http_svc/group_get_key_values`,
//! identified by (GroupId, MsgSeq). The API's answer has exactly the shape
//! of the one-to-one call's; its error codes are not all documented.

use crate::fetch::retry::Action;
use arrow_array::ArrayRef;
use arrow_array::builder::{Int64Builder, StringBuilder};
use arrow_schema::{DataType, Field};
use serde::Serialize;
use std::fmt;

/// The input columns (any case, any order).
pub const COLUMNS: &[&str] = &["GroupId", "MsgSeq"];

/// A message from (GroupId, MsgSeq): a non-empty ID and a positive integer.
pub fn parse_cells(cells: &[&str]) -> Result<GroupMessageRef, String> {
    let [group_id, msg_seq] = cells else {
        return Err("wrong number of identity cells".into());
    };
    if group_id.is_empty() {
        return Err("GroupId is empty".into());
    }
    match msg_seq.parse::<i64>() {
        Ok(seq) if seq > 0 => Ok(GroupMessageRef::new(group_id, seq)),
        _ => Err(format!(
            "MsgSeq must be a positive integer, not {msg_seq:?}"
        )),
    }
}

pub const API_PATH: &str = "/v4/openim_msg_ext_http_svc/group_get_key_values";

/// Codes of the group API that read differently from the common table: the
/// group is missing or dissolved (10010), the group ID is invalid (10015),
/// no such message (23004) are "not found"; no permission (10007) and a plan
/// without the feature (10059) stop the run.
pub fn classify_code(code: i64) -> Option<Action> {
    match code {
        10010 | 10015 | 23004 => Some(Action::NotFound),
        10007 | 10059 => Some(Action::FailRun),
        _ => None,
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

    /// A 128-bit fingerprint of the identity; the leading tag keeps it apart
    /// from every one-to-one fingerprint.
    pub fn fingerprint(&self) -> u128 {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update([2u8]);
        h.update((self.group_id.len() as u64).to_le_bytes());
        h.update(self.group_id.as_bytes());
        h.update(self.msg_seq.to_le_bytes());
        let d = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        u128::from_le_bytes(b)
    }

    pub fn request(&self, start_seq: Option<i64>) -> Request<'_> {
        Request {
            group_id: &self.group_id,
            msg_seq: self.msg_seq,
            start_seq,
        }
    }

    pub fn errors_cells(&self) -> Vec<String> {
        vec![self.group_id.clone(), self.msg_seq.to_string()]
    }
}

impl fmt::Display for GroupMessageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} #{}", self.group_id, self.msg_seq)
    }
}

/// The JSON body of a call. `StartSeq` is optional.
#[derive(Debug, Serialize)]
pub struct Request<'a> {
    #[serde(rename = "GroupId")]
    pub group_id: &'a str,
    #[serde(rename = "MsgSeq")]
    pub msg_seq: i64,
    #[serde(rename = "StartSeq", skip_serializing_if = "Option::is_none")]
    pub start_seq: Option<i64>,
}

pub fn identity_fields() -> Vec<Field> {
    vec![
        Field::new("group_id", DataType::Utf8, false),
        Field::new("msg_seq", DataType::Int64, false),
    ]
}

/// The builders of `group_id`, `msg_seq`.
#[derive(Default)]
pub struct Columns {
    group_id: StringBuilder,
    msg_seq: Int64Builder,
}

impl Columns {
    pub fn append(&mut self, m: &GroupMessageRef) {
        self.group_id.append_value(&m.group_id);
        self.msg_seq.append_value(m.msg_seq);
    }

    pub fn finish(&mut self) -> Vec<ArrayRef> {
        use crate::write::schema::{finish_int, finish_text};
        vec![
            finish_text(&mut self.group_id),
            finish_int(&mut self.msg_seq),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            match (parse_cells(cells), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w),
                (Err(got), Err(w)) => assert!(got.starts_with(w), "{got}"),
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
            assert_eq!(classify_code(code), want, "{code}");
        }
    }
}
