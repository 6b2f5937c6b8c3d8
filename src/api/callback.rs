//! The service's extension callbacks (webhooks), as `msgext listen` reads
//! them and the simulator sends them: the query's signature, and the two
//! extension events (`C2C.CallbackAfterC2CMsgExtension`,
//! `Group.CallbackAfterGroupMsgExtension`). Pure: no I/O, no clock.
//!
//! The signature is lowercase hex `sha256(token + RequestTime)` (no HMAC,
//! the body unsigned): it proves only that the sender knows the token at
//! that time, so a stale time is refused and an event is a hint that the
//! API confirms.

use crate::kind::{GroupMessageRef, MessageId, MessageRef};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How far `RequestTime` may be from the listener's clock.
pub const MAX_SKEW_SECS: i64 = 300;

/// The one-to-one extension callback's command.
pub const C2C_COMMAND: &str = "C2C.CallbackAfterC2CMsgExtension";
/// The group extension callback's command.
pub const GROUP_COMMAND: &str = "Group.CallbackAfterGroupMsgExtension";

/// `Sign` for `token` at `request_time` (Unix seconds, as the query gives it).
pub fn sign(token: &str, request_time: &str) -> String {
    let digest = Sha256::new()
        .chain_update(token.as_bytes())
        .chain_update(request_time.as_bytes())
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the query of a callback says of who sent it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallbackQuery {
    pub sdkappid: Option<String>,
    pub command: Option<String>,
    pub request_time: Option<String>,
    pub sign: Option<String>,
    pub platform: Option<String>,
}

impl CallbackQuery {
    /// The query's parameters by their documented names (any order, URL-encoded).
    pub fn parse(query: &str) -> Self {
        let mut q = CallbackQuery::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match k.as_ref() {
                "SdkAppid" => &mut q.sdkappid,
                "CallbackCommand" => &mut q.command,
                "RequestTime" => &mut q.request_time,
                "Sign" => &mut q.sign,
                "OptPlatform" => &mut q.platform,
                _ => continue,
            };
            *slot = Some(v.into_owned());
        }
        q
    }
}

/// Why a callback is refused (a 4xx answer, nothing stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("SdkAppid is not this app's")]
    OtherApp,
    #[error("no RequestTime or Sign")]
    Unsigned,
    #[error("Sign does not match")]
    BadSign,
    #[error("RequestTime is more than 5 minutes from this listener's clock")]
    Stale,
}

impl Refused {
    /// The short name counted in the listener's status lines.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::OtherApp => "other_app",
            Refused::Unsigned => "unsigned",
            Refused::BadSign => "bad_sign",
            Refused::Stale => "stale",
        }
    }
}

/// Whether a callback is the app's and signed with `token` at a time
/// within `MAX_SKEW_SECS` of `now` (Unix seconds); `token` `None`: the app
/// signs nothing, and only the app is checked.
pub fn verify(
    q: &CallbackQuery,
    sdkappid: u64,
    token: Option<&str>,
    now: i64,
) -> Result<(), Refused> {
    if q.sdkappid.as_deref().map(str::trim) != Some(sdkappid.to_string().as_str()) {
        return Err(Refused::OtherApp);
    }
    let Some(token) = token else { return Ok(()) };
    let (Some(time), Some(given)) = (&q.request_time, &q.sign) else {
        return Err(Refused::Unsigned);
    };
    let want = sign(token, time);
    if !equal_in_constant_time(want.as_bytes(), given.to_ascii_lowercase().as_bytes()) {
        return Err(Refused::BadSign);
    }
    match time.parse::<i64>() {
        Ok(t) if t.abs_diff(now) <= MAX_SKEW_SECS.unsigned_abs() => Ok(()),
        _ => Err(Refused::Stale),
    }
}

/// Byte strings compared without stopping at the first difference.
fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What an extension change did (`OperateType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Set,
    Delete,
    Clear,
}

impl Operation {
    /// As the events tables name it.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Set => "set",
            Operation::Delete => "delete",
            Operation::Clear => "clear",
        }
    }
}

/// One pair of a callback's `ExtensionList` (a delete: Value empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackPair {
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "Value", default)]
    pub value: String,
    #[serde(rename = "Seq")]
    pub seq: i64,
}

/// An extension callback: which message changed, how, and when (in the
/// listener's journal as JSON, the message tagged with its kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtensionEvent {
    #[serde(flatten)]
    pub message: MessageId,
    pub operation: Operation,
    pub pairs: Vec<CallbackPair>,
    /// The message's extensions version after the change (`Seq`).
    pub seq: i64,
    /// `EventTime`, milliseconds.
    pub event_time_ms: i64,
}

/// The body as the service sends it; the identity fields of both kinds.
#[derive(Deserialize)]
struct Body {
    #[serde(rename = "CallbackCommand")]
    command: String,
    #[serde(rename = "From_Account", default)]
    from_account: Option<String>,
    #[serde(rename = "To_Account", default)]
    to_account: Option<String>,
    #[serde(rename = "MsgKey", default)]
    msg_key: Option<String>,
    #[serde(rename = "GroupId", default)]
    group_id: Option<String>,
    #[serde(rename = "MsgSeq", default)]
    msg_seq: Option<i64>,
    #[serde(rename = "OperateType")]
    operate_type: i64,
    #[serde(rename = "ExtensionList", default)]
    extension_list: Vec<CallbackPair>,
    #[serde(rename = "Seq")]
    seq: i64,
    #[serde(rename = "EventTime")]
    event_time: i64,
}

/// Why a body is not an extension event (a 400 answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadCallback {
    #[error("not JSON of an extension callback: {0}")]
    Json(String),
    #[error("{0} is missing or empty")]
    Missing(&'static str),
    #[error("OperateType {0} is none of 1 (set), 2 (delete), 3 (clear)")]
    Operation(i64),
}

/// The event of an extension callback's body; `None` for any other
/// callback (one URL receives all of an app's callbacks).
pub fn parse_event(body: &[u8]) -> Result<Option<ExtensionEvent>, BadCallback> {
    let b: Body = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => {
            // Another callback has other fields: only the command decides.
            #[derive(Deserialize)]
            struct Command {
                #[serde(rename = "CallbackCommand")]
                command: String,
            }
            return match serde_json::from_slice::<Command>(body) {
                Ok(c) if c.command != C2C_COMMAND && c.command != GROUP_COMMAND => Ok(None),
                _ => Err(BadCallback::Json(e.to_string())),
            };
        }
    };
    let text = |v: Option<String>, name| {
        v.filter(|s| !s.is_empty())
            .ok_or(BadCallback::Missing(name))
    };
    let message: MessageId = match b.command.as_str() {
        C2C_COMMAND => MessageRef::new(
            b.from_account.as_deref().filter(|s| !s.is_empty()),
            &text(b.to_account, "To_Account")?,
            &text(b.msg_key, "MsgKey")?,
        )
        .into(),
        GROUP_COMMAND => {
            let seq = b
                .msg_seq
                .filter(|s| *s > 0)
                .ok_or(BadCallback::Missing("MsgSeq"))?;
            GroupMessageRef::new(&text(b.group_id, "GroupId")?, seq).into()
        }
        _ => return Ok(None),
    };
    let operation = match b.operate_type {
        1 => Operation::Set,
        2 => Operation::Delete,
        3 => Operation::Clear,
        other => return Err(BadCallback::Operation(other)),
    };
    Ok(Some(ExtensionEvent {
        message,
        operation,
        pairs: b.extension_list,
        seq: b.seq,
        event_time_ms: b.event_time,
    }))
}

impl Operation {
    /// `OperateType` as the service sends it.
    pub fn code(self) -> i64 {
        match self {
            Operation::Set => 1,
            Operation::Delete => 2,
            Operation::Clear => 3,
        }
    }
}

impl ExtensionEvent {
    /// The callback's command.
    pub fn command(&self) -> &'static str {
        match self.message {
            MessageId::OneToOne(_) => C2C_COMMAND,
            MessageId::Group(_) => GROUP_COMMAND,
        }
    }

    /// The body the service POSTs for this event (`parse_event` reads it back).
    pub fn body(&self) -> Vec<u8> {
        let mut b = serde_json::json!({
            "CallbackCommand": self.command(),
            "OperateType": self.operation.code(),
            "ExtensionList": self.pairs,
            "Seq": self.seq,
            "EventTime": self.event_time_ms,
        });
        match &self.message {
            MessageId::OneToOne(m) => {
                if let Some(from) = &m.from {
                    b["From_Account"] = from.as_str().into();
                }
                b["To_Account"] = m.to.as_str().into();
                b["MsgKey"] = m.msg_key.as_str().into();
            }
            MessageId::Group(g) => {
                b["GroupId"] = g.group_id.as_str().into();
                b["MsgSeq"] = g.msg_seq.into();
            }
        }
        b.to_string().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented known answer, and the verdicts around it.
    #[test]
    fn a_callback_is_taken_only_from_the_app_signed_and_in_time() {
        let known = "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061";
        assert_eq!(sign("xxxxyyyy", "1669872112"), known);
        let q = |app: &str, time: Option<&str>, sign: Option<&str>| CallbackQuery {
            sdkappid: Some(app.into()),
            command: Some(C2C_COMMAND.into()),
            request_time: time.map(str::to_owned),
            sign: sign.map(str::to_owned),
            platform: None,
        };
        let now = 1669872112;
        let good = q("1400000000", Some("1669872112"), Some(known));
        let upper = known.to_ascii_uppercase();
        // (query, the listener's token, its clock, the verdict)
        type Case<'a> = (CallbackQuery, Option<&'a str>, i64, Result<(), Refused>);
        let far = i64::MAX.to_string();
        let far_sign = sign("xxxxyyyy", &far);
        let table: [Case; 10] = [
            // A signed time whose distance overflows an i64 (`t - now` wraps to
            // i64::MIN, whose `abs()` stays negative): refused.
            (
                q("1400000000", Some(&far), Some(&far_sign)),
                Some("xxxxyyyy"),
                -1,
                Err(Refused::Stale),
            ),
            (good.clone(), Some("xxxxyyyy"), now, Ok(())),
            (good.clone(), Some("xxxxyyyy"), now + 300, Ok(())),
            (
                good.clone(),
                Some("xxxxyyyy"),
                now - 301,
                Err(Refused::Stale),
            ),
            (good.clone(), Some("another"), now, Err(Refused::BadSign)),
            (
                q("1400000000", Some("1669872112"), Some(&upper)),
                Some("xxxxyyyy"),
                now,
                Ok(()),
            ),
            (
                q("1400000001", Some("1669872112"), Some(known)),
                Some("xxxxyyyy"),
                now,
                Err(Refused::OtherApp),
            ),
            (
                q("1400000000", None, None),
                Some("xxxxyyyy"),
                now,
                Err(Refused::Unsigned),
            ),
            (q("1400000000", None, None), None, now, Ok(())),
            (
                q("1400000000", Some("1669872113"), Some(known)),
                Some("xxxxyyyy"),
                now,
                Err(Refused::BadSign),
            ),
        ];
        for (i, (query, token, at, want)) in table.into_iter().enumerate() {
            assert_eq!(verify(&query, 1400000000, token, at), want, "case {i}");
        }
        let parsed = CallbackQuery::parse(
            "SdkAppid=1400000000&CallbackCommand=C2C.CallbackAfterC2CMsgExtension\
             &contenttype=json&ClientIP=1.2.3.4&OptPlatform=RESTAPI&RequestTime=1669872112&Sign=ab%63",
        );
        assert_eq!(parsed.sign.as_deref(), Some("abc"));
        assert_eq!(parsed.platform.as_deref(), Some("RESTAPI"));
        assert_eq!(parsed.command.as_deref(), Some(C2C_COMMAND));
    }

    #[test]
    fn extension_bodies_read_as_events_and_other_callbacks_are_none() {
        let c2c = br#"{"CallbackCommand": "C2C.CallbackAfterC2CMsgExtension", "From_Account": "user1",
            "To_Account": "user2", "MsgKey": "93847636_1287657_1764688415", "OperateType": 1,
            "ExtensionList": [{"Key": "k1", "Value": "v1", "Seq": 1}], "Seq": 1, "EventTime": 1764688415123}"#;
        let e = parse_event(c2c).unwrap().unwrap();
        assert_eq!(
            e.message,
            MessageRef::new(Some("user1"), "user2", "93847636_1287657_1764688415").into()
        );
        assert_eq!(
            (e.operation, e.seq, e.event_time_ms),
            (Operation::Set, 1, 1764688415123)
        );
        assert_eq!(
            e.pairs,
            [CallbackPair {
                key: "k1".into(),
                value: "v1".into(),
                seq: 1
            }]
        );
        let clear =
            br#"{"CallbackCommand": "Group.CallbackAfterGroupMsgExtension", "GroupId": "@TGS#1",
            "MsgSeq": 7, "OperateType": 3, "ExtensionList": [], "Seq": 3, "EventTime": 5}"#;
        let e = parse_event(clear).unwrap().unwrap();
        assert_eq!(e.message, GroupMessageRef::new("@TGS#1", 7).into());
        assert_eq!((e.operation, e.pairs.len()), (Operation::Clear, 0));
        let other = br#"{"CallbackCommand": "C2C.CallbackAfterSendMsg", "From_Account": "a"}"#;
        assert_eq!(parse_event(other), Ok(None));
        let bad: [(&[u8], &str); 4] = [
            (b"not json", "not JSON"),
            (br#"{"CallbackCommand": "Group.CallbackAfterGroupMsgExtension", "GroupId": "g", "MsgSeq": 0, "OperateType": 1, "Seq": 1, "EventTime": 1}"#, "MsgSeq"),
            (br#"{"CallbackCommand": "C2C.CallbackAfterC2CMsgExtension", "To_Account": "", "MsgKey": "k", "OperateType": 1, "Seq": 1, "EventTime": 1}"#, "To_Account"),
            (br#"{"CallbackCommand": "C2C.CallbackAfterC2CMsgExtension", "To_Account": "b", "MsgKey": "k", "OperateType": 4, "Seq": 1, "EventTime": 1}"#, "OperateType 4"),
        ];
        for (body, want) in bad {
            let e = parse_event(body).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn a_rendered_body_reads_back_as_the_same_event() {
        for event in [
            ExtensionEvent {
                message: MessageRef::new(Some("a"), "b", "1_2_3").into(),
                operation: Operation::Set,
                pairs: vec![CallbackPair {
                    key: "k\"1".into(),
                    value: "v\n1".into(),
                    seq: 4,
                }],
                seq: 4,
                event_time_ms: 1_764_688_415_123,
            },
            ExtensionEvent {
                message: MessageRef::new(None, "b", "1_2_3").into(),
                operation: Operation::Delete,
                pairs: vec![CallbackPair {
                    key: "k".into(),
                    value: String::new(),
                    seq: 5,
                }],
                seq: 5,
                event_time_ms: 1,
            },
            ExtensionEvent {
                message: GroupMessageRef::new("@TGS#1", 7).into(),
                operation: Operation::Clear,
                pairs: vec![],
                seq: 6,
                event_time_ms: 2,
            },
        ] {
            let body = event.body();
            assert_eq!(
                parse_event(&body).unwrap(),
                Some(event.clone()),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }
}
