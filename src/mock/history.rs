//! The simulated history APIs (`msgext discover` walks them), as strict as
//! the extension calls: every request field checked, cursors honoured and
//! checked, the group list paced at 1 call a second (10006 beyond it), a
//! group's history newest first with deleted (`IsPlaceMsg` 1, empty body and
//! time) and recalled (2) seqs, roaming pages cut by size inside a second's
//! burst, and unknown accounts and groups answered with their codes.

use super::{Reply, State};
use crate::api::history::{
    self as h, ConversationsRequest, ConversationsResponse, Cursors, GroupHistoryRequest,
    GroupHistoryResponse, GroupIdItem, GroupListRequest, GroupListResponse, GroupMsg, RoamMsg,
    RoamRequest, RoamResponse, Session, Status,
};
use crate::kind::{GroupMessageRef, MessageId, MessageRef};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// What the app's history holds: its accounts, its groups and their
/// messages, and its one-to-one messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(default)]
    pub accounts: Vec<String>,
    #[serde(default)]
    pub groups: Vec<HistoryGroup>,
    #[serde(default)]
    pub chats: Vec<ChatMsg>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryGroup {
    pub group_id: String,
    /// `Private`, `Public`, `ChatRoom`, `AVChatRoom`, `Community`.
    pub group_type: String,
    #[serde(default)]
    pub messages: Vec<GroupEvent>,
    /// History calls answered before the group is dismissed (10010 after).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dismissed_after: Option<u32>,
    /// Every history call of the group is answered with this code (a fault
    /// that does not pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always: Option<i64>,
}

/// A group message: `place` 0 normal, 1 deleted, 2 recalled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEvent {
    pub seq: u64,
    pub time: i64,
    pub from: String,
    #[serde(default)]
    pub place: i64,
}

/// A one-to-one message; `text` sets its body's size (roaming pages are cut by size).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMsg {
    pub from: String,
    pub to: String,
    pub key: String,
    pub time: i64,
    #[serde(default)]
    pub recalled: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub text: String,
}

impl History {
    pub(crate) fn is_empty(&self) -> bool {
        self.accounts.is_empty() && self.groups.is_empty() && self.chats.is_empty()
    }

    /// Every message of the history, as get_key_values names it.
    pub fn message_ids(&self) -> impl Iterator<Item = MessageId> + '_ {
        let groups = self.groups.iter().flat_map(|g| {
            g.messages
                .iter()
                .map(|m| GroupMessageRef::new(&g.group_id, m.seq as i64).into())
        });
        let chats = self
            .chats
            .iter()
            .map(|c| MessageRef::new(Some(&c.from), &c.to, &c.key).into());
        groups.chain(chats)
    }

    /// The one-to-one messages of a pair in the roaming order: newest first,
    /// within a second by key, descending.
    fn between(&self, a: &str, b: &str) -> Vec<&ChatMsg> {
        let mut msgs: Vec<&ChatMsg> = self
            .chats
            .iter()
            .filter(|c| (c.from == a && c.to == b) || (c.from == b && c.to == a))
            .collect();
        msgs.sort_by(|x, y| y.time.cmp(&x.time).then_with(|| y.key.cmp(&x.key)));
        msgs
    }

    /// An account's conversations, most recent first, at most `cap`: its
    /// one-to-one peers and the groups it wrote in, each with the time of
    /// its last message.
    fn conversations(&self, account: &str, cap: usize) -> Vec<Session> {
        let mut last: std::collections::BTreeMap<(i64, String), i64> = Default::default();
        for c in &self.chats {
            let peer = match (c.from == account, c.to == account) {
                (true, _) => &c.to,
                (_, true) => &c.from,
                _ => continue,
            };
            let t = last.entry((h::SESSION_C2C, peer.clone())).or_default();
            *t = (*t).max(c.time);
        }
        for g in &self.groups {
            for m in g.messages.iter().filter(|m| m.from == account) {
                let t = last
                    .entry((h::SESSION_GROUP, g.group_id.clone()))
                    .or_default();
                *t = (*t).max(m.time);
            }
        }
        let mut sessions: Vec<Session> = last
            .into_iter()
            .map(|((kind, id), time)| Session {
                kind,
                to_account: (kind == h::SESSION_C2C).then(|| id.clone()),
                group_id: (kind == h::SESSION_GROUP).then_some(id),
                msg_time: time,
                top_flag: 0,
            })
            .collect();
        sessions.sort_by_key(|s| std::cmp::Reverse(s.msg_time));
        sessions.truncate(cap);
        sessions
    }
}

/// How the simulator pages the history APIs (the service's own limits by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPaging {
    /// Group IDs in one answer of the group list, whatever the `Limit`.
    pub group_list: usize,
    /// Conversations in one page of `get_list`.
    pub conversations: usize,
    /// Conversations an account's list holds (the most recent).
    pub conversation_cap: usize,
    /// A roaming page ends once its messages pass this many bytes.
    pub roam_bytes: usize,
}

impl Default for HistoryPaging {
    fn default() -> Self {
        HistoryPaging {
            group_list: 10_000,
            conversations: 100,
            conversation_cap: 100,
            roam_bytes: 13 * 1024,
        }
    }
}

/// Which history API a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HistoryApi {
    GroupList,
    GroupHistory,
    Conversations,
    Roam,
}

impl HistoryApi {
    pub(crate) fn from_path(path: &str) -> Option<Self> {
        Some(match path {
            h::GROUP_LIST_PATH => HistoryApi::GroupList,
            h::GROUP_HISTORY_PATH => HistoryApi::GroupHistory,
            h::CONVERSATIONS_PATH => HistoryApi::Conversations,
            h::ROAM_PATH => HistoryApi::Roam,
            _ => return None,
        })
    }

    /// The API's code for a transient internal error.
    pub(crate) fn internal_code(self) -> i64 {
        match self {
            HistoryApi::GroupList | HistoryApi::GroupHistory => 10002,
            HistoryApi::Conversations => 50004,
            HistoryApi::Roam => 91000,
        }
    }

    /// The API's code for a body it cannot take.
    fn bad_request_code(self) -> i64 {
        match self {
            HistoryApi::GroupList | HistoryApi::GroupHistory => 10004,
            HistoryApi::Conversations => 50002,
            HistoryApi::Roam => 90001,
        }
    }

    /// An error answer of this API.
    pub(crate) fn fail(self, code: i64, info: impl Into<String>) -> Reply {
        json(code, &Status::error(code, info))
    }
}

fn json(code: i64, body: &impl Serialize) -> Reply {
    Reply::Body(
        code,
        Bytes::from(serde_json::to_vec(body).unwrap_or_default()),
    )
}

/// The answer to a history call that passed the URL, UserSig and quota checks.
pub(super) fn answer(state: &State, api: HistoryApi, body: &[u8], now: i64) -> Reply {
    let bad =
        |e: serde_json::Error| api.fail(api.bad_request_code(), format!("bad request body: {e}"));
    match api {
        HistoryApi::GroupList => match serde_json::from_slice(body) {
            Ok(r) => group_list(state, &r),
            Err(e) => bad(e),
        },
        HistoryApi::GroupHistory => match serde_json::from_slice(body) {
            Ok(r) => group_history(state, &r),
            Err(e) => bad(e),
        },
        HistoryApi::Conversations => match serde_json::from_slice(body) {
            Ok(r) => conversations(state, &r),
            Err(e) => bad(e),
        },
        HistoryApi::Roam => match serde_json::from_slice(body) {
            Ok(r) => roam(state, &r, now),
            Err(e) => bad(e),
        },
    }
}

/// `Next` of the group list: an opaque 64-bit number, 0 at the end.
const NEXT_BASE: u64 = 4_454_685_361;

fn group_list(state: &State, r: &GroupListRequest) -> Reply {
    let api = HistoryApi::GroupList;
    let limit = r.limit.unwrap_or(h::GROUP_LIST_LIMIT) as usize;
    if limit == 0 || limit > h::GROUP_LIST_LIMIT as usize {
        return api.fail(10004, "Limit must be 1 to 10000");
    }
    const TYPES: [&str; 6] = [
        "Public",
        "Private",
        "ChatRoom",
        "AVChatRoom",
        "BChatRoom",
        "Community",
    ];
    if let Some(t) = &r.group_type
        && !TYPES.contains(&t.as_str())
    {
        return api.fail(10004, format!("GroupType {t:?} is not a group type"));
    }
    if state.over_group_list_quota() {
        return api.fail(10006, "get_appid_group_list: 1 call a second");
    }
    let groups: Vec<&HistoryGroup> = state
        .store
        .history
        .groups
        .iter()
        .filter(|g| r.group_type.as_ref().is_none_or(|t| *t == g.group_type))
        .collect();
    let start = match r.next.unwrap_or(0) {
        0 => 0,
        n if n >= NEXT_BASE && ((n - NEXT_BASE) as usize) < groups.len() => {
            (n - NEXT_BASE) as usize
        }
        n => return api.fail(10004, format!("Next {n} is not a cursor of this list")),
    };
    let end = (start + limit.min(state.config.paging.group_list)).min(groups.len());
    json(
        0,
        &GroupListResponse {
            status: Status::ok(),
            total_count: Some(groups.len() as u64),
            group_id_list: Some(
                groups[start..end]
                    .iter()
                    .map(|g| GroupIdItem {
                        group_id: g.group_id.clone(),
                    })
                    .collect(),
            ),
            next: Some(if end == groups.len() {
                0
            } else {
                NEXT_BASE + end as u64
            }),
        },
    )
}

fn group_history(state: &State, r: &GroupHistoryRequest) -> Reply {
    let api = HistoryApi::GroupHistory;
    if r.group_id.is_empty() {
        return api.fail(10015, "GroupId is empty");
    }
    if r.req_msg_number == 0 {
        return api.fail(10004, "ReqMsgNumber must be at least 1");
    }
    let Some(g) = state
        .store
        .history
        .groups
        .iter()
        .find(|g| g.group_id == r.group_id)
    else {
        return api.fail(10010, "the group does not exist or was dismissed");
    };
    let calls = state.history_call(&g.group_id);
    if g.dismissed_after.is_some_and(|n| calls >= n) {
        return api.fail(10010, "the group does not exist or was dismissed");
    }
    if let Some(code) = g.always {
        return api.fail(code, format!("scripted error {code}"));
    }
    if g.group_type == "AVChatRoom" || g.group_type == "BChatRoom" {
        return api.fail(10004, "this group type keeps no history");
    }
    let with_recalled = r.with_recalled_msg == Some(1);
    let mut msgs: Vec<&GroupEvent> = g
        .messages
        .iter()
        .filter(|m| r.req_msg_seq.is_none_or(|s| m.seq <= s))
        .filter(|m| with_recalled || m.place != 2)
        .collect();
    msgs.sort_by_key(|m| std::cmp::Reverse(m.seq));
    let lowest = g.messages.iter().map(|m| m.seq).min();
    msgs.truncate(r.req_msg_number.min(h::GROUP_HISTORY_PAGE) as usize);
    let finished = msgs.last().map(|m| m.seq) == lowest || msgs.is_empty();
    json(0, &GroupHistoryResponse {
        status: Status::ok(),
        group_id: Some(g.group_id.clone()),
        is_finished: Some(i64::from(finished)),
        rsp_msg_list: msgs
            .into_iter()
            .map(|m| GroupMsg {
                from_account: m.from.clone(),
                msg_seq: m.seq,
                msg_random: m.seq.wrapping_mul(2_654_435_761) % 1_000_000_007,
                // A deleted message comes back with an empty body and time.
                msg_time_stamp: if m.place == h::PLACE_DELETED { 0 } else { m.time },
                msg_body: if m.place == h::PLACE_DELETED {
                    serde_json::Value::Array(vec![])
                } else {
                    serde_json::json!([{"MsgType": "TIMTextElem", "MsgContent": {"Text": format!("message {}", m.seq)}}])
                },
                is_place_msg: m.place,
            })
            .collect(),
    })
}

fn conversations(state: &State, r: &ConversationsRequest) -> Reply {
    let api = HistoryApi::Conversations;
    let history = &state.store.history;
    if !history.accounts.contains(&r.from_account) {
        return api.fail(
            50001,
            format!("account {} was not imported", r.from_account),
        );
    }
    let all = history.conversations(&r.from_account, state.config.paging.conversation_cap);
    let start = r.cursors.start_index as usize;
    // The cursors of a later page are those the earlier one gave: the
    // time of the first conversation, and of the last one handed out.
    let expected = |start: usize| Cursors {
        time_stamp: if start == 0 {
            0
        } else {
            all[start - 1].msg_time as u64
        },
        start_index: start as u64,
        top_time_stamp: if start == 0 {
            0
        } else {
            all[0].msg_time as u64
        },
        top_start_index: 0,
    };
    if start > all.len() || r.cursors != expected(start) {
        return api.fail(50002, "the cursors are not those of the last page");
    }
    let end = (start + state.config.paging.conversations).min(all.len());
    let complete = end == all.len();
    json(
        0,
        &ConversationsResponse {
            status: Status::ok(),
            session_item: all[start..end].to_vec(),
            complete_flag: Some(i64::from(complete)),
            cursors: (!complete).then(|| expected(end)),
        },
    )
}

fn roam(state: &State, r: &RoamRequest, now: i64) -> Reply {
    let api = HistoryApi::Roam;
    let history = &state.store.history;
    if !history.accounts.contains(&r.operator_account) {
        return api.fail(
            90008,
            format!("operator {} is not an account", r.operator_account),
        );
    }
    if !history.accounts.contains(&r.peer_account) {
        return api.fail(90003, format!("peer {} is not an account", r.peer_account));
    }
    if r.max_cnt == 0 || r.min_time > r.max_time || r.max_time > now + 86_400 {
        return api.fail(90001, "MaxCnt, MinTime or MaxTime out of range");
    }
    let all: Vec<&ChatMsg> = history
        .between(&r.operator_account, &r.peer_account)
        .into_iter()
        .filter(|m| m.time >= r.min_time && m.time <= r.max_time)
        .collect();
    let start = match &r.last_msg_key {
        None => 0,
        Some(key) => match all
            .iter()
            .position(|m| &m.key == key && m.time == r.max_time)
        {
            Some(i) => i + 1,
            None => return api.fail(90001, "LastMsgKey is not a message at MaxTime"),
        },
    };
    let mut page: Vec<RoamMsg> = Vec::new();
    let mut bytes = 0;
    for m in &all[start..] {
        if page.len() >= r.max_cnt as usize
            || (bytes >= state.config.paging.roam_bytes && !page.is_empty())
        {
            break;
        }
        let msg = roam_msg(m);
        bytes += serde_json::to_vec(&msg).map_or(0, |v| v.len());
        page.push(msg);
    }
    let complete = start + page.len() == all.len();
    let last = page.last();
    json(
        0,
        &RoamResponse {
            status: Status::ok(),
            complete: Some(i64::from(complete)),
            msg_cnt: page.len() as u64,
            last_msg_time: last.map(|m| m.msg_time_stamp),
            last_msg_key: last.map(|m| m.msg_key.clone()),
            msg_list: page,
        },
    )
}

fn roam_msg(m: &ChatMsg) -> RoamMsg {
    let text = if m.text.is_empty() {
        format!("message {}", m.key)
    } else {
        m.text.clone()
    };
    RoamMsg {
        from_account: m.from.clone(),
        to_account: m.to.clone(),
        msg_seq: m.key.len() as u64,
        msg_random: m.time as u64 % 1_000_003,
        msg_time_stamp: m.time,
        msg_flag_bits: if m.recalled { 8 } else { 0 },
        is_peer_read: 0,
        msg_key: m.key.clone(),
        msg_body: serde_json::json!([{"MsgType": "TIMTextElem", "MsgContent": {"Text": text}}]),
        cloud_custom_data: None,
    }
}

/// A small history for the demo and `msgext mock`: four groups of the app
/// (one an AVChatRoom, which discover leaves out) and a few accounts'
/// conversations over ten days, a burst of messages in one second,
/// deleted and recalled messages. Times count back from `now`.
pub(crate) fn sample(now: i64, seed: u64) -> History {
    let mut rng = super::store::SplitMix64::new(seed);
    let accounts: Vec<String> = ["alice", "bob", "carol", "dave", "erin"]
        .map(String::from)
        .to_vec();
    let mut groups = Vec::new();
    for (i, group_type) in ["Public", "Private", "ChatRoom", "AVChatRoom"]
        .iter()
        .enumerate()
    {
        let n = 20 + rng.below(40);
        let messages = (1..=n)
            .map(|seq| GroupEvent {
                seq,
                // Ten days back to now, oldest first.
                time: now - 864_000 + (seq as i64 * 864_000) / n as i64,
                from: accounts[rng.below(accounts.len() as u64) as usize].clone(),
                place: match rng.below(10) {
                    0 => h::PLACE_DELETED,
                    1 => 2,
                    _ => 0,
                },
            })
            .collect();
        groups.push(HistoryGroup {
            group_id: format!("@TGS#demo{i}"),
            group_type: (*group_type).to_owned(),
            messages,
            dismissed_after: None,
            always: None,
        });
    }
    let mut chats = Vec::new();
    for (a, b) in [(0, 1), (0, 2), (1, 3), (2, 4)] {
        let n = 10 + rng.below(30);
        for k in 0..n {
            let (from, to) = if rng.below(2) == 0 { (a, b) } else { (b, a) };
            // A burst of ten in one second in the first pair.
            let time = if (a, b) == (0, 1) && k < 10 {
                now - 3_600
            } else {
                now - 864_000 + rng.below(864_000) as i64
            };
            chats.push(ChatMsg {
                from: accounts[from].clone(),
                to: accounts[to].clone(),
                key: format!("{}_{}_{}", rng.below(1_000_000), k + 1, time),
                time,
                recalled: rng.below(20) == 0,
                text: String::new(),
            });
        }
    }
    History {
        accounts,
        groups,
        chats,
    }
}
