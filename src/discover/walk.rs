//! The paging decisions of the history APIs, as pure functions: what a page
//! adds to the list, and the next request or the end. A server that does
//! not move its cursor is told (`Stuck`), never asked again for ever.

use crate::api::history::{
    ConversationsResponse, Cursors, GroupHistoryResponse, PLACE_DELETED, RoamMsg, RoamResponse,
    SESSION_C2C,
};

/// The server answered the same cursor again: the walk cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stuck(pub String);

/// The cursors a walk has been given: one given again means the server is
/// going round in circles (OK answers, so the breaker never trips), and the
/// walk ends as stuck instead of for ever.
#[derive(Debug)]
pub(crate) struct Seen<T>(std::collections::HashSet<T>);

impl<T> Default for Seen<T> {
    fn default() -> Self {
        Seen(std::collections::HashSet::new())
    }
}

impl<T: std::hash::Hash + Eq + std::fmt::Debug> Seen<T> {
    pub(crate) fn fresh(&mut self, cursor: T) -> Result<(), Stuck> {
        let text = format!("{cursor:?}");
        match self.0.insert(cursor) {
            true => Ok(()),
            false => Err(Stuck(format!("the server gave cursor {text} again"))),
        }
    }
}

/// One page of a group's history: the seqs to list, and the `ReqMsgSeq` of
/// the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupStep {
    pub(crate) keep: Vec<u64>,
    pub(crate) next: Option<u64>,
}

/// `IsFinished` 2: the rest of the range has expired.
const ALL_EXPIRED: i64 = 2;

/// A page of `group_msg_get_simple` asked with `ReqMsgSeq` `asked`: keep
/// messages sent at or after `since` that are not deleted; go on below the
/// smallest seq unless the page is empty, reached seq 1, holds a message
/// older than the window or says the rest expired. A deleted message's time
/// says nothing (its body and time may be empty), so it never ends the walk.
pub(crate) fn group_page(
    page: &GroupHistoryResponse,
    asked: Option<u64>,
    since: i64,
) -> Result<GroupStep, Stuck> {
    let msgs = &page.rsp_msg_list;
    let real = || msgs.iter().filter(|m| m.is_place_msg != PLACE_DELETED);
    let keep = real()
        .filter(|m| m.msg_time_stamp >= since)
        .map(|m| m.msg_seq)
        .collect();
    let older = real().any(|m| m.msg_time_stamp < since);
    let Some(lowest) = msgs.iter().map(|m| m.msg_seq).min() else {
        return Ok(GroupStep { keep, next: None });
    };
    if asked.is_some_and(|a| lowest > a) {
        return Err(Stuck(format!(
            "asked for seqs up to {asked:?}, the answer starts at {lowest}"
        )));
    }
    let done = older || lowest <= 1 || page.is_finished == Some(ALL_EXPIRED);
    let next = (!done).then(|| lowest - 1);
    Ok(GroupStep { keep, next })
}

/// One page of an account's conversations: the one-to-one peers whose last
/// message is in the window (a conversation without a time is kept), and
/// the cursors of the next page.
pub(crate) fn conversations_page(
    page: &ConversationsResponse,
    asked: &Cursors,
    since: i64,
) -> Result<(Vec<String>, Option<Cursors>), Stuck> {
    let peers = page
        .session_item
        .iter()
        .filter(|s| s.kind == SESSION_C2C && (s.msg_time == 0 || s.msg_time >= since))
        .filter_map(|s| s.to_account.clone())
        .collect();
    let next = match (page.complete_flag, page.cursors) {
        (Some(1), _) | (_, None) => None,
        (_, Some(c)) if c == *asked => {
            return Err(Stuck(format!("the conversation list answered {c:?} again")));
        }
        (_, Some(c)) => Some(c),
    };
    Ok((peers, next))
}

/// Where the next roaming page starts: `MaxTime` = `LastMsgTime` with
/// `LastMsgKey` (a page may end inside a second's burst: one second less
/// would drop the rest of it, the same second without the key repeat it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RoamCursor {
    pub(crate) max_time: i64,
    pub(crate) last_msg_key: Option<String>,
}

/// One page of `admin_getroammsg` asked at `asked`: the messages in the
/// window, and where the next page starts.
pub(crate) fn roam_page<'a>(
    page: &'a RoamResponse,
    asked: &RoamCursor,
    since: i64,
) -> Result<(Vec<&'a RoamMsg>, Option<RoamCursor>), Stuck> {
    let keep = page
        .msg_list
        .iter()
        .filter(|m| m.msg_time_stamp >= since)
        .collect();
    let next = match (page.complete, page.last_msg_time) {
        (Some(1), _) | (_, None) => None,
        (_, Some(max_time)) => Some(RoamCursor {
            max_time,
            last_msg_key: page.last_msg_key.clone(),
        }),
    };
    if next.as_ref() == Some(asked) {
        return Err(Stuck(format!(
            "the roaming history answered LastMsgTime {} and the same LastMsgKey again",
            asked.max_time
        )));
    }
    Ok((keep, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::history::{GroupMsg, Session};

    fn msg(seq: u64, time: i64, place: i64) -> GroupMsg {
        GroupMsg {
            msg_seq: seq,
            msg_time_stamp: time,
            is_place_msg: place,
            ..GroupMsg::default()
        }
    }

    fn group(msgs: Vec<GroupMsg>, finished: i64) -> GroupHistoryResponse {
        GroupHistoryResponse {
            is_finished: Some(finished),
            rsp_msg_list: msgs,
            ..GroupHistoryResponse::default()
        }
    }

    #[test]
    fn a_cursor_given_again_is_stuck_even_after_another() {
        let mut seen = Seen::default();
        assert!(seen.fresh(7u64).is_ok());
        assert!(seen.fresh(9u64).is_ok());
        assert!(seen.fresh(7u64).is_err(), "7, 9, 7: a cycle");
    }

    #[test]
    fn a_group_page_keeps_the_window_and_goes_on_below_it() {
        let since = 100;
        type Row = (
            Vec<GroupMsg>,
            i64,
            Option<u64>,
            Result<(Vec<u64>, Option<u64>), ()>,
        );
        let table: Vec<Row> = vec![
            // A full page inside the window: go on below its smallest seq.
            (
                vec![msg(40, 150, 0), msg(39, 149, 2), msg(38, 148, 0)],
                0,
                None,
                Ok((vec![40, 39, 38], Some(37))),
            ),
            // A deleted message is left out, and its empty time ends nothing.
            (
                vec![msg(12, 150, 0), msg(11, 0, 1), msg(10, 140, 0)],
                0,
                Some(12),
                Ok((vec![12, 10], Some(9))),
            ),
            // A message older than the window: keep the newer ones, stop.
            (
                vec![msg(5, 120, 0), msg(4, 99, 0), msg(3, 98, 0)],
                0,
                Some(5),
                Ok((vec![5], None)),
            ),
            // Seq 1 reached.
            (
                vec![msg(2, 150, 0), msg(1, 150, 0)],
                0,
                Some(2),
                Ok((vec![2, 1], None)),
            ),
            // Empty: done.
            (vec![], 1, Some(9), Ok((vec![], None))),
            // The rest expired.
            (vec![msg(30, 150, 0)], 2, Some(30), Ok((vec![30], None))),
            // IsFinished 1 alone does not end the walk: the notes' rule is seqs and times.
            (vec![msg(30, 150, 0)], 1, Some(30), Ok((vec![30], Some(29)))),
            // Seqs above the one asked for: the server is not paging.
            (vec![msg(30, 150, 0)], 0, Some(20), Err(())),
        ];
        for (msgs, finished, asked, want) in table {
            let got = group_page(&group(msgs.clone(), finished), asked, since)
                .map(|s| (s.keep, s.next))
                .map_err(|_| ());
            assert_eq!(got, want, "{msgs:?}");
        }
    }

    fn sessions(
        items: &[(i64, &str, i64)],
        complete: i64,
        cursors: Option<Cursors>,
    ) -> ConversationsResponse {
        ConversationsResponse {
            session_item: items
                .iter()
                .map(|&(kind, to, time)| Session {
                    kind,
                    to_account: (kind == 1).then(|| to.to_owned()),
                    group_id: (kind == 2).then(|| to.to_owned()),
                    msg_time: time,
                    top_flag: 0,
                })
                .collect(),
            complete_flag: Some(complete),
            cursors,
            ..ConversationsResponse::default()
        }
    }

    #[test]
    fn conversations_keep_one_to_one_peers_in_the_window_and_copy_the_cursors() {
        let c = |n: u64| Cursors {
            time_stamp: n,
            start_index: n,
            top_time_stamp: 7,
            top_start_index: 0,
        };
        let items = [(1, "b", 150), (2, "@g", 150), (1, "c", 50), (1, "d", 0)];
        let (peers, next) =
            conversations_page(&sessions(&items, 0, Some(c(2))), &c(0), 100).unwrap();
        assert_eq!(peers, ["b", "d"]);
        assert_eq!(next, Some(c(2)));
        let (_, next) = conversations_page(&sessions(&items, 1, Some(c(4))), &c(2), 100).unwrap();
        assert_eq!(next, None);
        assert!(conversations_page(&sessions(&items, 0, Some(c(2))), &c(2), 100).is_err());
    }

    fn roam(keys: &[(&str, i64)], complete: i64, last: Option<(i64, &str)>) -> RoamResponse {
        RoamResponse {
            complete: Some(complete),
            last_msg_time: last.map(|l| l.0),
            last_msg_key: last.map(|l| l.1.to_owned()),
            msg_list: keys
                .iter()
                .map(|&(k, t)| RoamMsg {
                    msg_key: k.into(),
                    msg_time_stamp: t,
                    ..RoamMsg::default()
                })
                .collect(),
            ..RoamResponse::default()
        }
    }

    #[test]
    fn a_roaming_page_goes_on_at_the_same_second_with_the_key() {
        let first = RoamCursor {
            max_time: 200,
            last_msg_key: None,
        };
        let page = roam(&[("k3", 150), ("k2", 150)], 0, Some((150, "k2")));
        let (keep, next) = roam_page(&page, &first, 100).unwrap();
        assert_eq!(keep.len(), 2);
        let next = next.unwrap();
        assert_eq!(
            next,
            RoamCursor {
                max_time: 150,
                last_msg_key: Some("k2".into())
            }
        );
        // The same cursor again: stuck, not a loop.
        assert!(roam_page(&page, &next, 100).is_err());
        let last = roam(&[("k1", 150), ("k0", 90)], 1, Some((90, "k0")));
        let (keep, next) = roam_page(&last, &next, 100).unwrap();
        assert_eq!(
            keep.iter().map(|m| m.msg_key.as_str()).collect::<Vec<_>>(),
            ["k1"]
        );
        assert_eq!(next, None);
    }
}
