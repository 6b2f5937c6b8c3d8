//! The history APIs `msgext discover` walks (the API notes, "Where message
//! lists come from"): the app's groups, a group's messages, an account's
//! conversations and a pair's one-to-one messages. Wire types of requests and
//! answers, shared by the client and the simulator, what each API's codes
//! mean, and whether an OK answer is whole.

use super::BadAnswer;
use crate::codes::{Action, classify_code};
use serde::{Deserialize, Serialize};

pub const GROUP_LIST_PATH: &str = "/v4/group_open_http_svc/get_appid_group_list";
pub(crate) const GROUP_HISTORY_PATH: &str = "/v4/group_open_http_svc/group_msg_get_simple";
pub(crate) const CONVERSATIONS_PATH: &str = "/v4/recentcontact/get_list";
pub const ROAM_PATH: &str = "/v4/openim/admin_getroammsg";

/// The group list answers at most this many IDs a call.
pub(crate) const GROUP_LIST_LIMIT: u32 = 10_000;
/// The group list's own quota: calls a second.
pub(crate) const GROUP_LIST_RATE: u32 = 1;
/// A group's history answers at most this many messages a call.
pub(crate) const GROUP_HISTORY_PAGE: u32 = 20;
/// The messages a roaming call asks for (pages are cut by size anyway).
pub(crate) const ROAM_MAX_CNT: u32 = 100;
/// `IsPlaceMsg` of a deleted, expired or unstored group message.
pub(crate) const PLACE_DELETED: i64 = 1;
/// `Type` of a one-to-one conversation.
pub(crate) const SESSION_C2C: i64 = 1;
/// `Type` of a group conversation.
pub(crate) const SESSION_GROUP: i64 = 2;

/// The group types whose messages carry extensions (Work, Public, Meeting,
/// Community); AVChatRoom and BChatRoom keep no history and no extensions.
pub(crate) const EXTENSION_GROUP_TYPES: [&str; 4] = ["Private", "Public", "ChatRoom", "Community"];

/// The parts every answer has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    #[serde(
        rename = "ActionStatus",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) action_status: Option<String>,
    #[serde(rename = "ErrorCode")]
    pub error_code: i64,
    #[serde(rename = "ErrorInfo", default)]
    pub(crate) error_info: String,
}

impl Status {
    pub(crate) fn ok() -> Self {
        Status {
            action_status: Some("OK".into()),
            error_code: 0,
            error_info: String::new(),
        }
    }

    pub(crate) fn error(code: i64, info: impl Into<String>) -> Self {
        Status {
            action_status: Some("FAIL".into()),
            error_code: code,
            error_info: info.into(),
        }
    }

    /// An OK code under an ActionStatus that is not OK is no answer to take.
    fn check(&self) -> Result<(), BadAnswer> {
        match self.action_status.as_deref() {
            Some(s) if !s.eq_ignore_ascii_case("OK") => {
                Err(BadAnswer("ErrorCode 0 but ActionStatus is not OK"))
            }
            _ => Ok(()),
        }
    }
}

macro_rules! answer {
    ($t:ty) => {
        impl super::Answer for $t {
            fn error_code(&self) -> i64 {
                self.status.error_code
            }
            fn into_info(self) -> String {
                self.status.error_info
            }
        }
    };
}

/// `get_appid_group_list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GroupListRequest {
    #[serde(rename = "Limit", default, skip_serializing_if = "Option::is_none")]
    pub(crate) limit: Option<u32>,
    #[serde(rename = "Next", default, skip_serializing_if = "Option::is_none")]
    pub(crate) next: Option<u64>,
    #[serde(rename = "GroupType", default, skip_serializing_if = "Option::is_none")]
    pub(crate) group_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GroupIdItem {
    #[serde(rename = "GroupId")]
    pub(crate) group_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupListResponse {
    #[serde(flatten)]
    pub status: Status,
    #[serde(
        rename = "TotalCount",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) total_count: Option<u64>,
    #[serde(
        rename = "GroupIdList",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) group_id_list: Option<Vec<GroupIdItem>>,
    #[serde(rename = "Next", default, skip_serializing_if = "Option::is_none")]
    pub(crate) next: Option<u64>,
}
answer!(GroupListResponse);

impl GroupListResponse {
    pub(crate) fn check(&self) -> Result<(), BadAnswer> {
        self.status.check()?;
        match (&self.group_id_list, self.next) {
            (Some(_), Some(_)) => Ok(()),
            _ => Err(BadAnswer("an OK group list without GroupIdList or Next")),
        }
    }
}

/// `group_msg_get_simple`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GroupHistoryRequest {
    #[serde(rename = "GroupId")]
    pub(crate) group_id: String,
    #[serde(rename = "ReqMsgNumber")]
    pub(crate) req_msg_number: u32,
    #[serde(rename = "ReqMsgSeq", default, skip_serializing_if = "Option::is_none")]
    pub(crate) req_msg_seq: Option<u64>,
    #[serde(
        rename = "WithRecalledMsg",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) with_recalled_msg: Option<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GroupMsg {
    #[serde(rename = "From_Account", default)]
    pub(crate) from_account: String,
    #[serde(rename = "MsgSeq")]
    pub(crate) msg_seq: u64,
    #[serde(rename = "MsgRandom", default)]
    pub(crate) msg_random: u64,
    #[serde(rename = "MsgTimeStamp", default)]
    pub(crate) msg_time_stamp: i64,
    /// An array of elements, or one object for a system message; unread.
    #[serde(rename = "MsgBody", default, skip_serializing_if = "is_null")]
    pub(crate) msg_body: serde_json::Value,
    #[serde(rename = "IsPlaceMsg", default)]
    pub(crate) is_place_msg: i64,
}

fn is_null(v: &serde_json::Value) -> bool {
    v.is_null()
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GroupHistoryResponse {
    #[serde(flatten)]
    pub(crate) status: Status,
    #[serde(rename = "GroupId", default, skip_serializing_if = "Option::is_none")]
    pub(crate) group_id: Option<String>,
    #[serde(
        rename = "IsFinished",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) is_finished: Option<i64>,
    #[serde(rename = "RspMsgList", default)]
    pub(crate) rsp_msg_list: Vec<GroupMsg>,
}
answer!(GroupHistoryResponse);

impl GroupHistoryResponse {
    pub(crate) fn check(&self) -> Result<(), BadAnswer> {
        self.status.check()?;
        match self.is_finished {
            Some(_) => Ok(()),
            None => Err(BadAnswer("an OK group history without IsFinished")),
        }
    }
}

/// `recentcontact/get_list`: the four cursors are copied from each answer
/// into the next request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Cursors {
    #[serde(rename = "TimeStamp")]
    pub(crate) time_stamp: u64,
    #[serde(rename = "StartIndex")]
    pub(crate) start_index: u64,
    #[serde(rename = "TopTimeStamp")]
    pub(crate) top_time_stamp: u64,
    #[serde(rename = "TopStartIndex")]
    pub(crate) top_start_index: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ConversationsRequest {
    #[serde(rename = "From_Account")]
    pub(crate) from_account: String,
    #[serde(flatten)]
    pub(crate) cursors: Cursors,
    #[serde(rename = "AssistFlags")]
    pub(crate) assist_flags: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Session {
    #[serde(rename = "Type")]
    pub(crate) kind: i64,
    #[serde(
        rename = "To_Account",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) to_account: Option<String>,
    #[serde(rename = "GroupId", default, skip_serializing_if = "Option::is_none")]
    pub(crate) group_id: Option<String>,
    /// The time of the conversation's last message (Unix seconds).
    #[serde(rename = "MsgTime", default)]
    pub(crate) msg_time: i64,
    #[serde(rename = "TopFlag", default)]
    pub(crate) top_flag: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ConversationsResponse {
    #[serde(flatten)]
    pub(crate) status: Status,
    #[serde(rename = "SessionItem", default)]
    pub(crate) session_item: Vec<Session>,
    #[serde(
        rename = "CompleteFlag",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) complete_flag: Option<i64>,
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub(crate) cursors: Option<Cursors>,
}
answer!(ConversationsResponse);

impl ConversationsResponse {
    pub(crate) fn check(&self) -> Result<(), BadAnswer> {
        self.status.check()?;
        match (self.complete_flag, self.cursors) {
            (Some(1), _) | (Some(_), Some(_)) => Ok(()),
            (None, _) => Err(BadAnswer("an OK conversation list without CompleteFlag")),
            (Some(_), None) => Err(BadAnswer(
                "an unfinished conversation list without its cursors",
            )),
        }
    }
}

/// `admin_getroammsg`: times are Unix seconds, inclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoamRequest {
    #[serde(rename = "Operator_Account")]
    pub operator_account: String,
    #[serde(rename = "Peer_Account")]
    pub peer_account: String,
    #[serde(rename = "MaxCnt")]
    pub max_cnt: u32,
    #[serde(rename = "MinTime")]
    pub min_time: i64,
    #[serde(rename = "MaxTime")]
    pub max_time: i64,
    #[serde(
        rename = "LastMsgKey",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_msg_key: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoamMsg {
    #[serde(rename = "From_Account")]
    pub(crate) from_account: String,
    #[serde(rename = "To_Account")]
    pub(crate) to_account: String,
    #[serde(rename = "MsgSeq", default)]
    pub(crate) msg_seq: u64,
    #[serde(rename = "MsgRandom", default)]
    pub(crate) msg_random: u64,
    #[serde(rename = "MsgTimeStamp", default)]
    pub(crate) msg_time_stamp: i64,
    /// 8: recalled (still listed).
    #[serde(rename = "MsgFlagBits", default)]
    pub(crate) msg_flag_bits: u32,
    #[serde(rename = "IsPeerRead", default)]
    pub(crate) is_peer_read: i64,
    #[serde(rename = "MsgKey")]
    pub msg_key: String,
    #[serde(rename = "MsgBody", default, skip_serializing_if = "is_null")]
    pub(crate) msg_body: serde_json::Value,
    #[serde(
        rename = "CloudCustomData",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) cloud_custom_data: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoamResponse {
    #[serde(flatten)]
    pub status: Status,
    #[serde(rename = "Complete", default, skip_serializing_if = "Option::is_none")]
    pub complete: Option<i64>,
    #[serde(rename = "MsgCnt", default)]
    pub(crate) msg_cnt: u64,
    #[serde(
        rename = "LastMsgTime",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_msg_time: Option<i64>,
    #[serde(
        rename = "LastMsgKey",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_msg_key: Option<String>,
    #[serde(rename = "MsgList", default)]
    pub msg_list: Vec<RoamMsg>,
}
answer!(RoamResponse);

impl RoamResponse {
    pub(crate) fn check(&self) -> Result<(), BadAnswer> {
        self.status.check()?;
        match (self.complete, &self.last_msg_time, &self.last_msg_key) {
            (Some(1), _, _) | (Some(_), Some(_), Some(_)) => Ok(()),
            (None, _, _) => Err(BadAnswer("an OK roaming answer without Complete")),
            _ => Err(BadAnswer(
                "an unfinished roaming answer without LastMsgTime and LastMsgKey",
            )),
        }
    }
}

/// What the group list's codes mean: 10006 is its own quota (1 call a
/// second), 10007 an identifier that is not an admin, 10003/10004 a request
/// the service will never take. 10018 (answer over 1 MB) is told to the
/// caller, which asks again with a smaller `Limit`.
pub(crate) fn classify_group_list(code: i64) -> Action {
    match code {
        10006 => Action::RateLimited,
        10003 | 10004 | 10007 => Action::FailRun,
        10018 => Action::FailMessage,
        c => classify_code(c),
    }
}

/// A group's history: 10010 (dismissed) and 10015 (no such ID) mean there
/// is nothing to list; 10007 and 10003 stop the run; 10004 fails that group.
pub(crate) fn classify_group_history(code: i64) -> Action {
    match code {
        10010 | 10015 => Action::NotFound,
        10006 => Action::RateLimited,
        10003 | 10007 => Action::FailRun,
        10004 => Action::FailMessage,
        c => classify_code(c),
    }
}

/// An account's conversations: 50001 is an account never imported (told,
/// the run goes on), 50004/50005 are transient, 50003 stops the run.
pub(crate) fn classify_conversations(code: i64) -> Action {
    match code {
        50001 => Action::NotFound,
        50002 => Action::FailMessage,
        50003 => Action::FailRun,
        50004 | 50005 => Action::Retry,
        c => classify_code(c),
    }
}

/// A pair's roaming history: 90003/90008 name an account that is not
/// there (nothing to list), 91000 is transient, 90001/90009 stop the run.
pub(crate) fn classify_roam(code: i64) -> Action {
    match code {
        90003 | 90008 => Action::NotFound,
        91000 => Action::Retry,
        90001 | 90009 => Action::FailRun,
        c => classify_code(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_api_reads_its_documented_codes() {
        use Action::*;
        type Classify = fn(i64) -> Action;
        let table: [(Classify, i64, Action); 24] = [
            (classify_group_list, 0, Success),
            (classify_group_list, 10002, Retry),
            (classify_group_list, 10006, RateLimited),
            (classify_group_list, 10004, FailRun),
            (classify_group_list, 10007, FailRun),
            (classify_group_list, 10018, FailMessage),
            (classify_group_list, 70001, RenewSignature),
            (classify_group_history, 10002, Retry),
            (classify_group_history, 10010, NotFound),
            (classify_group_history, 10015, NotFound),
            (classify_group_history, 10007, FailRun),
            (classify_group_history, 10004, FailMessage),
            (classify_conversations, 50001, NotFound),
            (classify_conversations, 50002, FailMessage),
            (classify_conversations, 50003, FailRun),
            (classify_conversations, 50004, Retry),
            (classify_conversations, 50005, Retry),
            (classify_roam, 90001, FailRun),
            (classify_roam, 90003, NotFound),
            (classify_roam, 90008, NotFound),
            (classify_roam, 90009, FailRun),
            (classify_roam, 91000, Retry),
            (classify_roam, 60007, RateLimited),
            (classify_roam, 70003, FailRun),
        ];
        for (classify, code, want) in table {
            assert_eq!(classify(code), want, "{code}");
        }
    }

    /// The notes' example answer decodes, and OK answers missing what the
    /// paging needs are refused.
    #[test]
    fn answers_decode_and_incomplete_ones_are_refused() {
        let r: GroupListResponse = serde_json::from_str(
            r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0,"TotalCount":2,"GroupIdList":[{"GroupId":"@TGS#2J4SZEAEL"},{"GroupId":"@TGS#2C5SZEAEF"}],"Next":4454685361}"#,
        )
        .unwrap();
        assert_eq!(r.next, Some(4454685361));
        assert_eq!(
            r.group_id_list.as_ref().unwrap()[1].group_id,
            "@TGS#2C5SZEAEF"
        );
        assert!(r.check().is_ok());
        let bare: GroupListResponse =
            serde_json::from_str(r#"{"ErrorCode":0,"GroupIdList":[]}"#).unwrap();
        assert!(bare.check().is_err());
        // A system message's body is one object, not an array.
        let h: GroupHistoryResponse = serde_json::from_str(
            r#"{"ErrorCode":0,"IsFinished":1,"RspMsgList":[{"From_Account":"","MsgSeq":3,"MsgTimeStamp":5,"MsgBody":{"MsgType":"TIMCustomElem"},"IsPlaceMsg":0}]}"#,
        )
        .unwrap();
        assert_eq!(h.rsp_msg_list[0].msg_seq, 3);
        let fail0: GroupHistoryResponse =
            serde_json::from_str(r#"{"ActionStatus":"FAIL","ErrorCode":0,"IsFinished":1}"#)
                .unwrap();
        assert!(fail0.check().is_err());
        let c: ConversationsResponse = serde_json::from_str(
            r#"{"ErrorCode":0,"CompleteFlag":0,"SessionItem":[{"Type":1,"To_Account":"b","MsgTime":9}]}"#,
        )
        .unwrap();
        assert!(c.check().is_err(), "no cursors to go on with");
        let r: RoamResponse =
            serde_json::from_str(r#"{"ErrorCode":0,"Complete":0,"LastMsgTime":5,"MsgList":[]}"#)
                .unwrap();
        assert!(r.check().is_err(), "no LastMsgKey to go on with");
    }
}
