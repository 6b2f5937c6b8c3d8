//! One-to-one messages: `v4/openim_msg_ext_http_svc/get_key_values`,
//! identified by (From_Account, To_Account, MsgKey), From_Account optional.

use super::{
    BadId, Identity, IdentityColumns, JsonObject, Kind, KindMismatch, KindSpec, MessageId,
};
use crate::columns::finish_text;
use arrow_array::ArrayRef;
use arrow_array::builder::StringBuilder;
use arrow_schema::{DataType, Field};
use serde::Serialize;
use std::fmt;

/// The one-to-one kind (`KindSpec`).
pub(crate) struct OneToOne;

impl KindSpec for OneToOne {
    fn name(&self) -> &'static str {
        "one-to-one"
    }

    fn columns(&self) -> &'static [&'static str] {
        &["From_Account", "To_Account", "MsgKey"]
    }

    /// The API finds a message by (To_Account, MsgKey) alone.
    fn optional_columns(&self) -> &'static [&'static str] {
        &["From_Account"]
    }

    /// An empty sender is none; To_Account and MsgKey must not be empty.
    fn parse_cells(&self, cells: &[&str]) -> Result<MessageId, BadId> {
        let [from, to, msg_key] = cells else {
            return Err(BadId::Cells);
        };
        if to.is_empty() {
            return Err(BadId::Empty("To_Account"));
        }
        if msg_key.is_empty() {
            return Err(BadId::Empty("MsgKey"));
        }
        Ok(MessageRef::new(Some(from), to, msg_key).into())
    }

    fn api_path(&self) -> &'static str {
        "/v4/openim_msg_ext_http_svc/get_key_values"
    }

    /// To_Account and MsgKey non-empty strings, From_Account an optional string.
    fn parse_request(&self, body: &JsonObject) -> Result<MessageId, BadId> {
        let string = |name: &'static str, required: bool| -> Result<Option<&str>, BadId> {
            match body.get(name) {
                None if required => Err(BadId::Required(name)),
                None => Ok(None),
                Some(serde_json::Value::String(s)) if s.is_empty() && required => {
                    Err(BadId::Empty(name))
                }
                Some(serde_json::Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(BadId::NotString(name)),
            }
        };
        let from = string("From_Account", false)?;
        let to = string("To_Account", true)?.unwrap_or_default();
        let msg_key = string("MsgKey", true)?.unwrap_or_default();
        Ok(MessageRef::new(from, to, msg_key).into())
    }

    fn not_found(&self, _scope_known: bool) -> (i64, &'static str) {
        (
            crate::codes::NOT_FOUND,
            "the one-to-one message does not exist",
        )
    }

    fn tables(&self) -> [&'static str; 2] {
        ["key_values", "messages"]
    }

    fn events_table(&self) -> &'static str {
        "extension_events"
    }

    fn changes_table(&self) -> &'static str {
        "key_value_changes"
    }

    fn identity_fields(&self) -> Vec<Field> {
        vec![
            Field::new("from_account", DataType::Utf8, true),
            Field::new("to_account", DataType::Utf8, false),
            Field::new("msg_key", DataType::Utf8, false),
        ]
    }

    fn identity_columns(&self) -> Box<dyn IdentityColumns> {
        Box::<Columns>::default()
    }

    fn sender_column(&self) -> Option<&'static str> {
        Some("from_account")
    }
}

/// One one-to-one message, as identified by the API: (From_Account, To_Account, MsgKey).
/// `from` is `None` when the input had no sender (the API treats it as optional).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
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
}

impl Identity for MessageRef {
    fn kind(&self) -> Kind {
        Kind::OneToOne
    }

    fn fingerprint(&self) -> u128 {
        fingerprint(self.from.as_deref(), &self.to, &self.msg_key)
    }

    /// The message without its sender, with no copy of its strings.
    fn state_fingerprint(&self) -> u128 {
        fingerprint(None, &self.to, &self.msg_key)
    }

    fn request_body(&self, start_seq: Option<i64>) -> Vec<u8> {
        super::json_body(&Request {
            from_account: self.from.as_deref(),
            to_account: &self.to,
            msg_key: &self.msg_key,
            start_seq,
        })
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.from.clone().unwrap_or_default(),
            self.to.clone(),
            self.msg_key.clone(),
        ]
    }

    fn text_len(&self) -> usize {
        self.from.as_ref().map_or(0, String::len) + self.to.len() + self.msg_key.len()
    }

    fn without_sender(&self) -> Option<MessageId> {
        self.from.as_ref()?;
        Some(
            MessageRef {
                from: None,
                ..self.clone()
            }
            .into(),
        )
    }

    fn lacks_sender(&self) -> bool {
        self.from.is_none()
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

/// The JSON body of a call. `From_Account` and `StartSeq` are optional.
#[derive(Debug, Serialize)]
struct Request<'a> {
    #[serde(rename = "From_Account", skip_serializing_if = "Option::is_none")]
    from_account: Option<&'a str>,
    #[serde(rename = "To_Account")]
    to_account: &'a str,
    #[serde(rename = "MsgKey")]
    msg_key: &'a str,
    #[serde(rename = "StartSeq", skip_serializing_if = "Option::is_none")]
    start_seq: Option<i64>,
}

/// The builders of `from_account`, `to_account`, `msg_key`.
#[derive(Default)]
struct Columns {
    from: StringBuilder,
    to: StringBuilder,
    msg_key: StringBuilder,
}

impl IdentityColumns for Columns {
    fn append(&mut self, id: &MessageId) -> Result<(), KindMismatch> {
        let MessageId::OneToOne(m) = id else {
            return Err(KindMismatch(id.kind()));
        };
        self.from.append_option(m.from.as_deref());
        self.to.append_value(&m.to);
        self.msg_key.append_value(&m.msg_key);
        Ok(())
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            finish_text(&mut self.from),
            finish_text(&mut self.to),
            finish_text(&mut self.msg_key),
        ]
    }
}

/// A one-to-one identity's fingerprint. Fields are length-prefixed so that
/// ("ab","c") and ("a","bc") differ, and `None` differs from `Some("")`.
fn fingerprint(from: Option<&str>, to: &str, msg_key: &str) -> u128 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    match from {
        None => h.update([0u8]),
        Some(f) => {
            h.update([1u8]);
            h.update((f.len() as u64).to_le_bytes());
            h.update(f.as_bytes());
        }
    }
    for part in [to, msg_key] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    super::fingerprint_of(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bodies_are_read_as_strictly_as_the_service_reads_them() {
        let table: [(&str, Result<MessageRef, &str>); 9] = [
            (
                r#"{"To_Account":"b","MsgKey":"k"}"#,
                Ok(MessageRef::new(None, "b", "k")),
            ),
            (
                r#"{"From_Account":"","To_Account":"b","MsgKey":"k","StartSeq":3}"#,
                Ok(MessageRef::new(None, "b", "k")),
            ),
            (
                r#"{"From_Account":"a","To_Account":"b","MsgKey":"k"}"#,
                Ok(MessageRef::new(Some("a"), "b", "k")),
            ),
            (r#"{"MsgKey":"k"}"#, Err("To_Account is required")),
            (r#"{"To_Account":"b"}"#, Err("MsgKey is required")),
            (
                r#"{"To_Account":"","MsgKey":"k"}"#,
                Err("To_Account is empty"),
            ),
            (
                r#"{"To_Account":1,"MsgKey":"k"}"#,
                Err("To_Account must be a string"),
            ),
            (
                r#"{"From_Account":7,"To_Account":"b","MsgKey":"k"}"#,
                Err("From_Account must be a string"),
            ),
            (r#"{"To_Account":"b","MsgKey":""}"#, Err("MsgKey is empty")),
        ];
        for (body, want) in table {
            let obj: JsonObject = serde_json::from_str(body).unwrap();
            let got = OneToOne.parse_request(&obj).map_err(|e| e.to_string());
            assert_eq!(
                got,
                want.map(MessageId::from).map_err(str::to_owned),
                "{body}"
            );
        }
    }

    #[test]
    fn a_request_body_is_read_back_as_the_message_it_names() {
        for m in [
            MessageRef::new(Some("62768"), "116400", "44739199_12_1665388280"),
            MessageRef::new(None, "b", "k\"\\"),
        ] {
            let obj: JsonObject = serde_json::from_slice(&m.request_body(Some(4))).unwrap();
            assert_eq!(OneToOne.parse_request(&obj), Ok(m.into()));
        }
    }
}
