//! The kind of message, the one seam of a message's identity: one-to-one
//! messages (`get_key_values`, keyed by From/To/MsgKey) and group messages
//! (`group_get_key_values`, keyed by GroupId/MsgSeq). `Kind` says what a run
//! of that kind reads and writes (input columns, API path, per-API error
//! codes, table names, identity columns, errors.csv columns); `MessageId`
//! carries one message through every stage (its request body, fingerprint,
//! identity cells). The pager, limiter, retry loop, writer loop, WAL and
//! ledger carry a `MessageId` without looking inside. Each kind lives in a
//! file of its own; this file only dispatches.

pub mod group;
pub mod one_to_one;

pub use group::GroupMessageRef;
pub use one_to_one::MessageRef;

use crate::fetch::retry::Action;
use arrow_array::ArrayRef;
use arrow_schema::Field;
use std::fmt;

/// Which API a run exports, decided by the input's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    OneToOne,
    Group,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::OneToOne, Kind::Group];

    /// The kind whose required input columns the header (lower-cased names) holds.
    pub fn from_header(names: &[String]) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| {
            k.columns()
                .iter()
                .filter(|c| !k.is_optional(c))
                .all(|c| names.iter().any(|n| n.eq_ignore_ascii_case(c)))
        })
    }

    /// The input columns a message of this kind is read from, as documented.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Kind::OneToOne => one_to_one::COLUMNS,
            Kind::Group => group::COLUMNS,
        }
    }

    /// Whether an input may leave this column out.
    pub fn is_optional(self, column: &str) -> bool {
        self == Kind::OneToOne && column == one_to_one::OPTIONAL_COLUMN
    }

    /// A message from its input cells (in `columns` order, trimmed; an
    /// absent optional column is empty), or why the row is invalid.
    pub fn parse_cells(self, cells: &[&str]) -> Result<MessageId, String> {
        match self {
            Kind::OneToOne => one_to_one::parse_cells(cells).map(MessageId::OneToOne),
            Kind::Group => group::parse_cells(cells).map(MessageId::Group),
        }
    }

    /// The path of the API call, relative to the region's domain or `--endpoint`.
    pub fn api_path(self) -> &'static str {
        match self {
            Kind::OneToOne => one_to_one::API_PATH,
            Kind::Group => group::API_PATH,
        }
    }

    /// This API's own reading of an error code, where it differs from the
    /// common table (`fetch::retry::classify`).
    pub fn classify_code(self, code: i64) -> Option<Action> {
        match self {
            Kind::OneToOne => None,
            Kind::Group => group::classify_code(code),
        }
    }

    /// Whether the API's `code` says the message does not exist (a final
    /// answer: asking again gives the same).
    pub fn is_not_found(self, code: i64) -> bool {
        let action = self
            .classify_code(code)
            .unwrap_or_else(|| crate::fetch::retry::classify_code(code));
        action == Action::NotFound
    }

    /// The lake's two tables for this kind: (pairs, messages).
    pub fn tables(self) -> [&'static str; 2] {
        match self {
            Kind::OneToOne => ["key_values", "messages"],
            Kind::Group => ["group_key_values", "group_messages"],
        }
    }

    /// The identity columns that open both tables.
    pub fn identity_fields(self) -> Vec<Field> {
        match self {
            Kind::OneToOne => one_to_one::identity_fields(),
            Kind::Group => group::identity_fields(),
        }
    }

    /// The first columns of errors.csv: those of the input, so that the file
    /// can be fed back as `--input`.
    pub fn errors_columns(self) -> &'static [&'static str] {
        self.columns()
    }

    /// What the API calls a message of this kind, for messages to users.
    pub fn name(self) -> &'static str {
        match self {
            Kind::OneToOne => "one-to-one",
            Kind::Group => "group",
        }
    }
}

/// The identity of one message of either kind. In the WAL and the ledger
/// it carries its kind by name (`"kind": "group"`), so that a record is
/// never read as another kind whose fields happen to fit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MessageId {
    OneToOne(MessageRef),
    Group(GroupMessageRef),
}

impl From<MessageRef> for MessageId {
    fn from(m: MessageRef) -> Self {
        MessageId::OneToOne(m)
    }
}

impl From<GroupMessageRef> for MessageId {
    fn from(m: GroupMessageRef) -> Self {
        MessageId::Group(m)
    }
}

impl MessageId {
    pub fn kind(&self) -> Kind {
        match self {
            MessageId::OneToOne(_) => Kind::OneToOne,
            MessageId::Group(_) => Kind::Group,
        }
    }

    /// A 128-bit fingerprint of the identity, to de-duplicate huge inputs
    /// and to name settled messages in the ledger without their strings.
    pub fn fingerprint(&self) -> u128 {
        match self {
            MessageId::OneToOne(m) => m.fingerprint(),
            MessageId::Group(m) => m.fingerprint(),
        }
    }

    /// The JSON body of the call for the page from `start_seq`.
    pub fn request_body(&self, start_seq: Option<i64>) -> Vec<u8> {
        let body = match self {
            MessageId::OneToOne(m) => serde_json::to_vec(&m.request(start_seq)),
            MessageId::Group(m) => serde_json::to_vec(&m.request(start_seq)),
        };
        // Plain structs of strings and integers always serialize.
        body.unwrap_or_default()
    }

    /// The identity's cells of errors.csv, in `Kind::errors_columns` order.
    pub fn errors_cells(&self) -> Vec<String> {
        match self {
            MessageId::OneToOne(m) => m.errors_cells(),
            MessageId::Group(m) => m.errors_cells(),
        }
    }

    /// Bytes of the identity, for sizing batches.
    pub fn text_len(&self) -> usize {
        match self {
            MessageId::OneToOne(m) => m.text_len(),
            MessageId::Group(m) => m.group_id.len() + 8,
        }
    }

    /// Whether the message is listed without an optional part of its
    /// identity (a one-to-one message without From_Account).
    pub fn lacks_sender(&self) -> bool {
        matches!(self, MessageId::OneToOne(m) if m.from.is_none())
    }

    /// The same message without its sender, when it has one: a row listing
    /// that form is a duplicate of this one.
    pub fn without_sender(&self) -> Option<MessageId> {
        match self {
            MessageId::OneToOne(m) if m.from.is_some() => Some(MessageId::OneToOne(MessageRef {
                from: None,
                ..m.clone()
            })),
            _ => None,
        }
    }

    /// The one-to-one identity, if this is one.
    pub fn one_to_one(&self) -> Option<&MessageRef> {
        match self {
            MessageId::OneToOne(m) => Some(m),
            MessageId::Group(_) => None,
        }
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageId::OneToOne(m) => m.fmt(f),
            MessageId::Group(m) => m.fmt(f),
        }
    }
}

/// The Arrow builders of the identity columns of one table.
pub enum IdentityColumns {
    OneToOne(one_to_one::Columns),
    Group(group::Columns),
}

impl IdentityColumns {
    pub fn new(kind: Kind) -> Self {
        match kind {
            Kind::OneToOne => IdentityColumns::OneToOne(one_to_one::Columns::default()),
            Kind::Group => IdentityColumns::Group(group::Columns::default()),
        }
    }

    /// Append the identity of `id`; a message of another kind than the
    /// table's is a bug, reported as such.
    pub fn append(&mut self, id: &MessageId) -> Result<(), KindMismatch> {
        match (self, id) {
            (IdentityColumns::OneToOne(c), MessageId::OneToOne(m)) => c.append(m),
            (IdentityColumns::Group(c), MessageId::Group(m)) => c.append(m),
            (_, id) => return Err(KindMismatch(id.kind())),
        }
        Ok(())
    }

    /// The gathered columns; the builders start empty again.
    pub fn finish(&mut self) -> Vec<ArrayRef> {
        match self {
            IdentityColumns::OneToOne(c) => c.finish(),
            IdentityColumns::Group(c) => c.finish(),
        }
    }
}

/// A message of one kind handed to a table of the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {} message was given to a table of another kind", .0.name())]
pub struct KindMismatch(pub Kind);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_decides_the_kind() {
        let names = |s: &str| s.split(',').map(str::to_owned).collect::<Vec<_>>();
        let table = [
            ("from_account,to_account,msgkey", Some(Kind::OneToOne)),
            ("to_account,msgkey", Some(Kind::OneToOne)),
            ("msgseq,note,groupid", Some(Kind::Group)),
            ("GroupId,MsgSeq", Some(Kind::Group)),
            ("groupid", None),
            ("a,b,c", None),
        ];
        for (header, want) in table {
            assert_eq!(Kind::from_header(&names(header)), want, "{header}");
        }
    }

    #[test]
    fn fingerprints_of_the_two_kinds_never_meet() {
        let a = MessageId::from(MessageRef::new(None, "g", "1"));
        let b = MessageId::from(GroupMessageRef::new("g", 1));
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.kind(), Kind::OneToOne);
        assert_eq!(b.kind(), Kind::Group);
    }

    #[test]
    fn request_bodies_follow_the_api_pages() {
        let one = MessageId::from(MessageRef::new(
            Some("62768"),
            "116400",
            "44739199_12_1665388280",
        ));
        assert_eq!(
            String::from_utf8(one.request_body(Some(2))).unwrap(),
            r#"{"From_Account":"62768","To_Account":"116400","MsgKey":"44739199_12_1665388280","StartSeq":2}"#
        );
        let group = MessageId::from(GroupMessageRef::new("@TGS#1YMVAB3IZ", 158));
        assert_eq!(
            String::from_utf8(group.request_body(Some(2))).unwrap(),
            r#"{"GroupId":"@TGS#1YMVAB3IZ","MsgSeq":158,"StartSeq":2}"#
        );
        assert_eq!(
            String::from_utf8(group.request_body(None)).unwrap(),
            r#"{"GroupId":"@TGS#1YMVAB3IZ","MsgSeq":158}"#
        );
    }

    #[test]
    fn the_wal_names_each_message_s_kind() {
        for (id, kind) in [
            (
                MessageId::from(MessageRef::new(Some("a"), "b", "k")),
                "one_to_one",
            ),
            (MessageId::from(GroupMessageRef::new("@TGS#1", 7)), "group"),
        ] {
            let json = serde_json::to_string(&id).unwrap();
            assert!(
                json.starts_with(&format!(r#"{{"kind":"{kind}","#)),
                "{json}"
            );
            assert_eq!(
                serde_json::from_str::<MessageId>(&json).unwrap(),
                id,
                "{json}"
            );
        }
        // A record without its kind (format version 1) is not guessed at.
        assert!(serde_json::from_str::<MessageId>(r#"{"group_id":"@TGS#1","msg_seq":7}"#).is_err());
        assert!(
            serde_json::from_str::<MessageId>(
                r#"{"kind":"group","from":"a","to":"b","msg_key":"k"}"#
            )
            .is_err(),
            "the fields of another kind do not pass for this one"
        );
    }
}
