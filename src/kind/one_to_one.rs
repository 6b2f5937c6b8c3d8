//! One-to-one messages: `v4/openim_msg_ext_http_svc/get_key_values`,
//! identified by (From_Account, To_Account, MsgKey), From_Account optional.

use arrow_array::ArrayRef;
use arrow_array::builder::StringBuilder;
use arrow_schema::{DataType, Field};
use serde::Serialize;
use std::fmt;

/// The input columns (any case, any order); From_Account may be absent.
pub const COLUMNS: &[&str] = &["From_Account", "To_Account", "MsgKey"];
pub const OPTIONAL_COLUMN: &str = "From_Account";

/// A message from (From_Account, To_Account, MsgKey); an empty sender is none.
pub fn parse_cells(cells: &[&str]) -> Result<MessageRef, String> {
    let [from, to, msg_key] = cells else {
        return Err("wrong number of identity cells".into());
    };
    if to.is_empty() {
        return Err("To_Account is empty".into());
    }
    if msg_key.is_empty() {
        return Err("MsgKey is empty".into());
    }
    Ok(MessageRef::new(Some(from), to, msg_key))
}

pub const API_PATH: &str = "/v4/openim_msg_ext_http_svc/get_key_values";

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

/// The JSON body of a call. `From_Account` and `StartSeq` are optional.
#[derive(Debug, Serialize)]
pub struct Request<'a> {
    #[serde(rename = "From_Account", skip_serializing_if = "Option::is_none")]
    pub from_account: Option<&'a str>,
    #[serde(rename = "To_Account")]
    pub to_account: &'a str,
    #[serde(rename = "MsgKey")]
    pub msg_key: &'a str,
    #[serde(rename = "StartSeq", skip_serializing_if = "Option::is_none")]
    pub start_seq: Option<i64>,
}

impl MessageRef {
    pub fn request(&self, start_seq: Option<i64>) -> Request<'_> {
        Request {
            from_account: self.from.as_deref(),
            to_account: &self.to,
            msg_key: &self.msg_key,
            start_seq,
        }
    }

    pub fn errors_cells(&self) -> Vec<String> {
        vec![
            self.from.clone().unwrap_or_default(),
            self.to.clone(),
            self.msg_key.clone(),
        ]
    }

    pub fn text_len(&self) -> usize {
        self.from.as_ref().map_or(0, String::len) + self.to.len() + self.msg_key.len()
    }
}

pub fn identity_fields() -> Vec<Field> {
    vec![
        Field::new("from_account", DataType::Utf8, true),
        Field::new("to_account", DataType::Utf8, false),
        Field::new("msg_key", DataType::Utf8, false),
    ]
}

/// The builders of `from_account`, `to_account`, `msg_key`.
#[derive(Default)]
pub struct Columns {
    from: StringBuilder,
    to: StringBuilder,
    msg_key: StringBuilder,
}

impl Columns {
    pub fn append(&mut self, m: &MessageRef) {
        self.from.append_option(m.from.as_deref());
        self.to.append_value(&m.to);
        self.msg_key.append_value(&m.msg_key);
    }

    pub fn finish(&mut self) -> Vec<ArrayRef> {
        use crate::write::schema::finish_text;
        vec![
            finish_text(&mut self.from),
            finish_text(&mut self.to),
            finish_text(&mut self.msg_key),
        ]
    }
}
