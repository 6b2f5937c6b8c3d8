//! The kind of message, the one seam of a message's identity: one-to-one
//! messages (`get_key_values`, keyed by From/To/MsgKey) and group messages
//! (`group_get_key_values`, keyed by GroupId/MsgSeq).
//!
//! A kind is one file that implements two traits: `KindSpec` says what a run
//! of that kind reads and writes (input columns, API path and request body
//! rules, its own error codes, table names, identity columns, errors.csv
//! columns), `Identity` what one message offers (request body, fingerprint,
//! cells, a looser form of itself). The input reader, the pager, limiter,
//! retry loop, writer, WAL, ledger and the simulator carry a `MessageId`
//! and ask these traits; none of them names a kind. Adding a kind is its
//! file plus one line in each of the three tables below (`Kind`,
//! `Kind::spec`, `MessageId` with `MessageId::identity`).

pub(crate) mod group;
pub(crate) mod one_to_one;

pub use group::GroupMessageRef;
pub use one_to_one::MessageRef;

use crate::codes::{self, Action};
use arrow_array::ArrayRef;
use arrow_schema::Field;
use std::fmt;

/// A JSON object, as a request body is read by the simulator.
pub(crate) type JsonObject = serde_json::Map<String, serde_json::Value>;

/// Which API a run exports, decided by the input's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    OneToOne,
    Group,
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

impl Kind {
    pub(crate) const ALL: [Kind; 2] = [Kind::OneToOne, Kind::Group];

    /// What this kind is to a run: the dispatch table of kinds.
    pub fn spec(self) -> &'static dyn KindSpec {
        match self {
            Kind::OneToOne => &one_to_one::OneToOne,
            Kind::Group => &group::Group,
        }
    }
}

impl MessageId {
    /// What this message offers: the dispatch table of identities.
    pub(crate) fn identity(&self) -> &dyn Identity {
        match self {
            MessageId::OneToOne(m) => m,
            MessageId::Group(m) => m,
        }
    }
}

/// Why input cells or a request body name no message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadId {
    #[error("wrong number of identity cells")]
    Cells,
    #[error("{0} is required")]
    Required(&'static str),
    #[error("{0} is empty")]
    Empty(&'static str),
    #[error("{0} must be a string")]
    NotString(&'static str),
    #[error(
        "{field} must be a positive integer{}",
        .given.as_ref().map(|g| format!(", not {g:?}")).unwrap_or_default()
    )]
    NotPositive {
        field: &'static str,
        given: Option<String>,
    },
}

/// What a kind of message is to a run; each kind implements it in its file.
pub trait KindSpec: Sync {
    /// What the API calls a message of this kind, for messages to users.
    fn name(&self) -> &'static str;
    /// The input columns a message is read from, as documented (any case, any order).
    fn columns(&self) -> &'static [&'static str];
    /// The columns of `columns` an input may leave out.
    fn optional_columns(&self) -> &'static [&'static str] {
        &[]
    }
    /// A message from its input cells (in `columns` order, trimmed; an
    /// absent optional column is empty), or why the row is invalid.
    fn parse_cells(&self, cells: &[&str]) -> Result<MessageId, BadId>;
    /// The path of the API call, relative to the region's domain or `--endpoint`.
    fn api_path(&self) -> &'static str;
    /// The message a request body names, read as strictly as the service
    /// reads it (the simulator's side of `Identity::request_body`).
    fn parse_request(&self, body: &JsonObject) -> Result<MessageId, BadId>;
    /// This API's own reading of an error code, where it differs from the
    /// common table (`codes::classify_code`).
    fn classify_code(&self, _code: i64) -> Option<Action> {
        None
    }
    /// The API's answer (code, text) for a message it does not have;
    /// `scope_known` says whether the conversation it names exists
    /// (`Identity::scope`).
    fn not_found(&self, _scope_known: bool) -> (i64, &'static str) {
        (codes::NOT_FOUND, "the message does not exist")
    }
    /// The lake's two tables for this kind: (pairs, messages).
    fn tables(&self) -> [&'static str; 2];
    /// The lake's table of this kind's extension callbacks (`msgext listen`).
    fn events_table(&self) -> &'static str;
    /// The lake's table of what each run changed in the current tables.
    fn changes_table(&self) -> &'static str;
    /// The identity columns that open both tables.
    fn identity_fields(&self) -> Vec<Field>;
    /// The identity column an input may leave empty (a one-to-one
    /// message's sender): the current tables know a message without it
    /// (`MessageId::state_fingerprint`) and keep the last one given.
    fn sender_column(&self) -> Option<&'static str> {
        None
    }
    /// Empty builders of those columns.
    fn identity_columns(&self) -> Box<dyn IdentityColumns>;
}

/// What one message of a kind offers; each kind's identity implements it.
pub trait Identity: fmt::Display + Sync {
    fn kind(&self) -> Kind;
    /// A 128-bit fingerprint of the identity, to de-duplicate huge inputs
    /// and to name settled messages in the ledger without their strings.
    /// Each kind tags its own, so that two kinds' never meet.
    fn fingerprint(&self) -> u128;
    /// The fingerprint of the message as the current tables know it
    /// (without an optional sender: `without_sender`'s fingerprint).
    fn state_fingerprint(&self) -> u128 {
        self.fingerprint()
    }
    /// The JSON body of the call for the page from `start_seq`.
    fn request_body(&self, start_seq: Option<i64>) -> Vec<u8>;
    /// The identity's input cells, in `KindSpec::columns` order (errors.csv
    /// opens with them, so that it can be fed back as `--input`).
    fn cells(&self) -> Vec<String>;
    /// Bytes of the identity, for sizing batches.
    fn text_len(&self) -> usize;
    /// The same message listed without an optional part of its identity
    /// (a one-to-one message without its sender), when it has that part:
    /// the API finds the message by either, so a row of that form is a
    /// duplicate of this one.
    fn without_sender(&self) -> Option<MessageId> {
        None
    }
    /// Whether the message is listed without that optional part.
    fn lacks_sender(&self) -> bool {
        false
    }
    /// The conversation the message belongs to, when the API tells a
    /// missing conversation from a missing message (a group).
    fn scope(&self) -> Option<&str> {
        None
    }
}

/// The Arrow builders of the identity columns of one table.
pub trait IdentityColumns: Send {
    /// Append the identity of `id`; a message of another kind than the
    /// table's is a bug, reported as such.
    fn append(&mut self, id: &MessageId) -> Result<(), KindMismatch>;
    /// The gathered columns; the builders start empty again.
    fn finish(&mut self) -> Vec<ArrayRef>;
}

/// A message of one kind handed to a table of the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {} message was given to a table of another kind", .0.spec().name())]
pub struct KindMismatch(pub Kind);

impl Kind {
    /// The kind whose required input columns the header (lower-cased names) holds.
    pub(crate) fn from_header(names: &[String]) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| {
            k.required_columns()
                .all(|c| names.iter().any(|n| n.eq_ignore_ascii_case(c)))
        })
    }

    /// The kind whose API answers at `path`.
    pub(crate) fn from_api_path(path: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.spec().api_path() == path)
    }

    /// The names of the identity columns that open both tables.
    pub(crate) fn identity_names(self) -> Vec<String> {
        let fields = self.spec().identity_fields();
        fields.iter().map(|f| f.name().clone()).collect()
    }

    /// The input columns no input of this kind may leave out.
    pub(crate) fn required_columns(self) -> impl Iterator<Item = &'static str> {
        let spec = self.spec();
        spec.columns()
            .iter()
            .copied()
            .filter(move |c| !spec.optional_columns().contains(c))
    }

    /// Whether the API's `code` says the message does not exist (a final
    /// answer: asking again gives the same).
    pub(crate) fn is_not_found(self, code: i64) -> bool {
        self.classify_code(code) == Action::NotFound
    }

    /// What `code` means to a call of this kind: its own reading, else the common one.
    pub(crate) fn classify_code(self, code: i64) -> Action {
        self.spec()
            .classify_code(code)
            .unwrap_or_else(|| codes::classify_code(code))
    }
}

impl MessageId {
    pub(crate) fn kind(&self) -> Kind {
        self.identity().kind()
    }

    pub(crate) fn fingerprint(&self) -> u128 {
        self.identity().fingerprint()
    }

    /// The fingerprint of the message as the current tables know it: the
    /// same message with or without its optional sender is one message
    /// (DESIGN §2, §7), so the sender is left out.
    pub(crate) fn state_fingerprint(&self) -> u128 {
        self.identity().state_fingerprint()
    }

    pub fn request_body(&self, start_seq: Option<i64>) -> Vec<u8> {
        self.identity().request_body(start_seq)
    }
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

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.identity().fmt(f)
    }
}

/// The first 16 bytes of a SHA-256, as a fingerprint.
pub(crate) fn fingerprint_of(digest: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(b)
}

/// Serialize a request body; plain structs of strings and integers always do.
pub(crate) fn json_body(body: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(body).unwrap_or_default()
}

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
    fn a_message_with_or_without_its_sender_is_one_message_of_the_current_tables() {
        let with = MessageId::from(MessageRef::new(Some("s"), "b", "k"));
        let bare = MessageId::from(MessageRef::new(None, "b", "k"));
        assert_ne!(with.fingerprint(), bare.fingerprint());
        assert_eq!(with.state_fingerprint(), bare.fingerprint());
        assert_eq!(bare.state_fingerprint(), bare.fingerprint());
        let other = MessageId::from(MessageRef::new(Some("s"), "b", "k2"));
        assert_ne!(other.state_fingerprint(), with.state_fingerprint());
        let group = MessageId::from(GroupMessageRef::new("g", 1));
        assert_eq!(group.state_fingerprint(), group.fingerprint());
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
