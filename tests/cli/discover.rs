//! `msgext discover` against the simulator's history APIs: the lists of
//! both kinds are exact (each message of the window once) across every page
//! boundary the four APIs have, a burst of one second spans roaming pages,
//! the group list keeps to its 1 call a second, what is not there is told
//! and skipped, and exporting the list is exact.

use crate::common::{export_args, run_msgext, show};
use msgext::api::client::{ApiClient, Proxies};
use msgext::api::history::{self as h, GroupListResponse, RoamRequest, RoamResponse};
use msgext::mock::history::{ChatMsg, GroupEvent, History, HistoryGroup, HistoryPaging};
use msgext::mock::store::Store;
use msgext::mock::{DEMO_SDKAPPID, DEMO_SECRET_KEY, MockConfig, MockServer};
use msgext::model::{GroupMessageRef, MessageId, MessageRef};
use std::collections::BTreeMap;
use std::path::Path;

const DAY: i64 = 86_400;

/// The window every test asks for: the last 7 days before `now`.
fn since(now: i64) -> i64 {
    now - 7 * DAY
}

fn group(id: &str, group_type: &str, messages: Vec<GroupEvent>) -> HistoryGroup {
    HistoryGroup {
        group_id: id.into(),
        group_type: group_type.into(),
        messages,
        dismissed_after: None,
        always: None,
    }
}

/// Seqs `1..=n` over the last ten days, oldest first; `place` says which
/// are deleted (1) or recalled (2).
fn events(n: u64, now: i64, place: impl Fn(u64) -> i64) -> Vec<GroupEvent> {
    (1..=n)
        .map(|seq| GroupEvent {
            seq,
            time: now - 10 * DAY + (seq as i64 * 10 * DAY) / n as i64,
            from: "a".into(),
            place: place(seq),
        })
        .collect()
}

/// Groups whose histories cross every boundary: pages of 20 (65 messages,
/// deleted seqs at both sides of a boundary, recalled ones, the oldest out
/// of the window), exactly one more than a page, an empty group, one
/// dismissed after its first page, and an AVChatRoom (no history).
fn groups(now: i64) -> Vec<HistoryGroup> {
    let mut gone = group("@TGS#gone", "Public", events(30, now, |_| 0));
    gone.dismissed_after = Some(1);
    vec![
        group(
            "@TGS#big",
            "Public",
            events(65, now, |s| match s {
                45 | 46 | 30 => 1,
                26 | 50 => 2,
                _ => 0,
            }),
        ),
        group("@TGS#small", "Public", events(3, now, |_| 0)),
        group("@TGS#empty", "Public", Vec::new()),
        gone,
        group(
            "@TGS#work",
            "Private",
            events(21, now, |s| i64::from(s == 21)),
        ),
        group("@TGS#room", "ChatRoom", events(5, now, |_| 0)),
        group("@TGS#av", "AVChatRoom", events(5, now, |_| 0)),
    ]
}

fn chat(from: &str, to: &str, key: &str, time: i64, text_len: usize) -> ChatMsg {
    ChatMsg {
        from: from.into(),
        to: to.into(),
        key: key.into(),
        time,
        recalled: false,
        text: "x".repeat(text_len),
    }
}

/// One-to-one messages: a burst of 30 in one second between a and b with
/// bodies of 1 KB (a roaming page of 13 KB holds 12 or 13 of them), more
/// of a and b before it and some out of the window, a few other pairs, a
/// recalled message, and a conversation with "ghost", who is no account.
fn chats(now: i64) -> Vec<ChatMsg> {
    let mut c = Vec::new();
    for i in 0..30 {
        let (from, to) = if i % 2 == 0 { ("a", "b") } else { ("b", "a") };
        c.push(chat(from, to, &format!("burst_{i:02}"), now - 3_600, 1_000));
    }
    for i in 0..12 {
        c.push(chat(
            "a",
            "b",
            &format!("ab_{i}"),
            now - DAY - i * 3_000,
            200,
        ));
    }
    for i in 0..5 {
        c.push(chat("b", "a", &format!("old_{i}"), now - 9 * DAY - i, 10));
    }
    for i in 0..3 {
        c.push(chat("a", "c", &format!("ac_{i}"), now - 2 * DAY + i, 10));
    }
    c.push(chat("c", "d", "cd_0", now - 5 * DAY, 10));
    c.push(chat("d", "c", "cd_1", now - 4 * DAY, 10));
    let mut recalled = chat("b", "d", "bd_0", now - 6 * DAY, 10);
    recalled.recalled = true;
    c.push(recalled);
    c.push(chat("a", "ghost", "ag_0", now - DAY, 10));
    c
}

/// The app: its history, and extensions on every other message of it.
fn app(now: i64) -> Store {
    let history = History {
        accounts: ["a", "b", "c", "d", "x"].map(String::from).to_vec(),
        groups: groups(now),
        chats: chats(now),
    };
    let ids: Vec<MessageId> = history.message_ids().step_by(2).collect();
    Store::generate(&ids, 23, 0).with_history(history)
}

/// The group messages a correct discovery lists: of the extension-bearing
/// types, in the window, not deleted, groups still there.
fn want_groups(store: &Store, since: i64) -> Vec<(String, u64)> {
    let mut rows: Vec<(String, u64)> = store
        .history
        .groups
        .iter()
        .filter(|g| g.group_type != "AVChatRoom" && g.dismissed_after.is_none())
        .flat_map(|g| {
            g.messages
                .iter()
                .filter(|m| m.place != 1 && m.time >= since)
                .map(|m| (g.group_id.clone(), m.seq))
        })
        .collect();
    rows.sort();
    rows
}

/// The one-to-one messages a correct discovery of these accounts lists:
/// those between two accounts of the app, one of them listed, in the window.
fn want_chats(store: &Store, listed: &[&str], since: i64) -> Vec<(String, String, String)> {
    let h = &store.history;
    let account = |a: &String| h.accounts.contains(a);
    let mut rows: Vec<_> = h
        .chats
        .iter()
        .filter(|c| account(&c.from) && account(&c.to) && c.time >= since)
        .filter(|c| listed.contains(&c.from.as_str()) || listed.contains(&c.to.as_str()))
        .map(|c| (c.from.clone(), c.to.clone(), c.key.clone()))
        .collect();
    rows.sort();
    rows
}

async fn serve(store: Store, paging: HistoryPaging) -> MockServer {
    let config = MockConfig {
        paging,
        ..MockConfig::default()
    };
    MockServer::start(store, config, ([127, 0, 0, 1], 0).into())
        .await
        .unwrap()
}

/// Small pages, so that every list crosses page boundaries.
fn small_pages() -> HistoryPaging {
    HistoryPaging {
        group_list: 2,
        conversations: 1,
        ..HistoryPaging::default()
    }
}

fn discover_args(url: &str, source: &[&str], since: i64, out: &Path) -> Vec<String> {
    let since = chrono::DateTime::from_timestamp(since, 0)
        .unwrap()
        .to_rfc3339();
    let mut args: Vec<String> = ["discover"].iter().map(|s| s.to_string()).collect();
    args.extend(source.iter().map(|s| s.to_string()));
    for (flag, value) in [
        ("--since", since.as_str()),
        ("--out", &out.to_string_lossy()),
        ("--endpoint", url),
        ("--sdkappid", &DEMO_SDKAPPID.to_string()),
    ] {
        args.push(flag.into());
        args.push(value.into());
    }
    args
}

/// The rows of a list CSV, its header checked.
fn list_rows(path: &Path, header: &[&str]) -> Vec<Vec<String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    assert_eq!(r.headers().unwrap().iter().collect::<Vec<_>>(), header);
    r.records()
        .map(|rec| rec.unwrap().iter().map(String::from).collect())
        .collect()
}

/// Export a discovered list into `dir`/lake (exit 0); the lake.
async fn export(server: &MockServer, list: &Path, dir: &Path) -> std::path::PathBuf {
    let out = dir.join("lake");
    let args = export_args(&server.url(), list, &out, "parquet", "r1", 8);
    let o = run_msgext(args, DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    out
}

/// Each row once: no row counted twice.
fn assert_once<T: Ord + std::fmt::Debug + Clone>(rows: &[T]) {
    let mut counts: BTreeMap<T, usize> = BTreeMap::new();
    for r in rows {
        *counts.entry(r.clone()).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "listed more than once: {twice:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_group_message_of_the_window_is_listed_once_and_exports_exactly() {
    let now = chrono::Utc::now().timestamp();
    let store = app(now);
    let server = serve(store.clone(), small_pages()).await;
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("group-messages.csv");
    let args = discover_args(&server.url(), &["--groups"], since(now), &list);
    let o = run_msgext(args, DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("group @TGS#gone") && stderr.contains("10010"),
        "the dismissed group is told: {stderr}"
    );
    let rows: Vec<(String, u64)> = list_rows(&list, &["GroupId", "MsgSeq"])
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect();
    assert_once(&rows);
    let mut sorted = rows.clone();
    sorted.sort();
    let want = want_groups(&store, since(now));
    assert_eq!(sorted, want);
    assert!(want.len() > 60, "{} messages", want.len());
    // Off a terminal, the last line is JSON for the scheduler's log.
    let done: serde_json::Value = stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|v: &serde_json::Value| v["event"] == "discover_done")
        .unwrap_or_else(|| panic!("no discover_done line: {stderr}"));
    assert_eq!(done["messages"], want.len());
    assert_eq!(
        (done["gone"].as_u64(), done["failed"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(done["status"], "complete");
    // Five list calls (Public in 2 pages, the other types in one), at 1 a
    // second: never a quota answer.
    assert_eq!(
        server.stats().answered("10006"),
        0,
        "{:?}",
        server.stats().answers()
    );
    assert!(
        !dir.path()
            .read_dir()
            .unwrap()
            .any(|e| { e.unwrap().file_name().to_string_lossy().contains(".tmp-") })
    );

    // The list is a valid input, and its export is exact.
    let out = export(&server, &list, dir.path()).await;
    let listed: std::collections::HashSet<MessageId> = want
        .iter()
        .map(|(g, s)| GroupMessageRef::new(g, *s as i64).into())
        .collect();
    let stored = store.messages.iter().filter(|m| listed.contains(&m.id));
    let want_rows = crate::common::expected_group_rows(stored);
    assert!(!want_rows.is_empty());
    assert_eq!(crate::common::group_kv_from_delta(&out), want_rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_one_to_one_message_of_the_listed_accounts_is_listed_once_and_exports_exactly() {
    let now = chrono::Utc::now().timestamp();
    let store = app(now);
    let server = serve(store.clone(), small_pages()).await;
    let dir = tempfile::tempdir().unwrap();
    let accounts = dir.path().join("accounts.csv");
    // zed was never imported; a is listed twice; x has no conversation.
    std::fs::write(&accounts, "UserID\na\nb\nzed\nc\nd\na\nx\n").unwrap();
    let list = dir.path().join("messages.csv");
    let source = ["--accounts", accounts.to_str().unwrap()];
    let o = run_msgext(
        discover_args(&server.url(), &source, since(now), &list),
        DEMO_SECRET_KEY,
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("account zed") && stderr.contains("50001"),
        "{stderr}"
    );
    assert!(
        stderr.contains("a/ghost") && stderr.contains("90003"),
        "{stderr}"
    );
    let rows: Vec<(String, String, String)> =
        list_rows(&list, &["From_Account", "To_Account", "MsgKey"])
            .into_iter()
            .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
            .collect();
    assert_once(&rows);
    let mut sorted = rows.clone();
    sorted.sort();
    let want = want_chats(&store, &["a", "b", "c", "d"], since(now));
    assert_eq!(sorted, want);
    let burst = rows.iter().filter(|r| r.2.starts_with("burst_")).count();
    assert_eq!(burst, 30, "the whole burst, across roaming pages");

    let out = export(&server, &list, dir.path()).await;
    let listed: std::collections::HashSet<MessageId> = want
        .iter()
        .map(|(f, t, k)| MessageRef::new(Some(f), t, k).into())
        .collect();
    let want_rows =
        crate::common::expected_rows(store.messages.iter().filter(|m| listed.contains(&m.id)));
    assert!(!want_rows.is_empty());
    assert_eq!(crate::common::kv_from_delta(&out), want_rows);
}

fn client(url: &str, path: &str) -> ApiClient {
    ApiClient::new(
        url,
        path,
        DEMO_SDKAPPID,
        "administrator",
        std::time::Duration::from_secs(10),
        &Proxies::Environment,
    )
    .unwrap()
}

fn sig() -> String {
    msgext::api::sign::user_sig(
        DEMO_SECRET_KEY,
        DEMO_SDKAPPID,
        "administrator",
        chrono::Utc::now().timestamp(),
        3_600,
    )
}

/// The simulator is as strict as the service: a second group-list call in
/// one second is refused (10006), and a roaming page cut inside a burst
/// continues only with `MaxTime = LastMsgTime` and `LastMsgKey` (one second
/// less drops the rest of the burst, the same second without the key
/// repeats it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_paces_the_group_list_and_cuts_roaming_pages_inside_a_burst() {
    let now = chrono::Utc::now().timestamp();
    let server = serve(app(now), HistoryPaging::default()).await;
    let list = client(&server.url(), h::GROUP_LIST_PATH);
    let body = bytes::Bytes::from_static(b"{}");
    let mut codes = Vec::new();
    for _ in 0..3 {
        let r: GroupListResponse = list.post(&sig(), body.clone()).await.unwrap();
        codes.push(r.status.error_code);
    }
    assert!(codes.contains(&10006), "three calls at once: {codes:?}");
    assert_eq!(codes[0], 0, "{codes:?}");

    let roam = client(&server.url(), h::ROAM_PATH);
    let ask = |max_time: i64, key: Option<&str>| {
        let req = RoamRequest {
            operator_account: "a".into(),
            peer_account: "b".into(),
            max_cnt: 100,
            min_time: since(now),
            max_time,
            last_msg_key: key.map(String::from),
        };
        let roam = roam.clone();
        async move {
            let body = bytes::Bytes::from(serde_json::to_vec(&req).unwrap());
            let r: RoamResponse = roam.post(&sig(), body).await.unwrap();
            assert_eq!(r.status.error_code, 0, "{:?}", r.status);
            r
        }
    };
    let first = ask(now, None).await;
    assert_eq!(first.complete, Some(0));
    let n = first.msg_list.len();
    assert!(
        (10..30).contains(&n),
        "a 13 KB page holds part of the burst: {n}"
    );
    let burst_second = now - 3_600;
    assert_eq!(first.last_msg_time, Some(burst_second));
    let keys = |r: &RoamResponse| {
        r.msg_list
            .iter()
            .map(|m| m.msg_key.clone())
            .collect::<Vec<_>>()
    };
    let key = first.last_msg_key.clone().unwrap();
    let next = ask(burst_second, Some(&key)).await;
    assert!(
        keys(&next).iter().all(|k| !keys(&first).contains(k)),
        "no repeat with the key"
    );
    assert!(keys(&next)[0].starts_with("burst_"), "the burst goes on");
    let without_key = ask(burst_second, None).await;
    assert_eq!(
        keys(&without_key)[0],
        keys(&first)[0],
        "the same second without the key repeats"
    );
    let second_less = ask(burst_second - 1, None).await;
    assert!(
        keys(&second_less).iter().all(|k| !k.starts_with("burst_")),
        "one second less skips the rest of the burst"
    );
}

/// Usage errors name what to fix, before any call; a run that cannot
/// finish leaves no list, not even half of one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_before_any_call_and_a_failed_run_writes_nothing() {
    let now = chrono::Utc::now().timestamp();
    let server = serve(app(now), HistoryPaging::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list.csv");
    let no_user_id = dir.path().join("accounts.csv");
    std::fs::write(&no_user_id, "Account\na\n").unwrap();
    let base = discover_args(&server.url(), &["--groups"], since(now), &list);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            {
                let mut a = base.clone();
                crate::common::set_arg(&mut a, "--since", "yesterday");
                a
            },
            "24h, 3d, 90m, or an RFC 3339 time",
        ),
        (
            [base.clone(), vec!["--accounts".into(), "a.csv".into()]].concat(),
            "cannot be used with",
        ),
        (
            [
                base.clone(),
                vec!["--group-type".into(), "AVChatRoom".into()],
            ]
            .concat(),
            "keep no history",
        ),
        (
            discover_args(
                &server.url(),
                &["--accounts", no_user_id.to_str().unwrap()],
                since(now),
                &list,
            ),
            "no UserID column",
        ),
    ];
    for (args, want) in cases {
        let o = run_msgext(args.clone(), DEMO_SECRET_KEY, &[]).await;
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", show(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(want),
            "{}",
            show(&o)
        );
    }
    assert_eq!(
        server.stats().calls(),
        0,
        "no call before the settings are right"
    );

    let o = run_msgext(base, "not-the-secret-key", &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("secret key"),
        "{}",
        show(&o)
    );
    let left: Vec<_> = dir
        .path()
        .read_dir()
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["accounts.csv"], "no list, no temporary file");
}

/// A group whose every call fails is told and the rest is written (exit
/// 3); Ctrl-C / SIGTERM mid-walk exits 130 and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_group_is_told_and_an_interrupted_run_writes_nothing() {
    let now = chrono::Utc::now().timestamp();
    let mut failing = group("@TGS#flaky", "Public", events(5, now, |_| 0));
    failing.always = Some(10002);
    let mut groups = vec![group("@TGS#ok", "Public", events(5, now, |_| 0)), failing];
    groups.extend((0..200).map(|i| {
        group(
            &format!("@TGS#many{i:03}"),
            "Private",
            events(60, now, |_| 0),
        )
    }));
    let history = History {
        accounts: Vec::new(),
        groups,
        chats: Vec::new(),
    };
    let server = serve(
        Store::default().with_history(history),
        HistoryPaging::default(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list.csv");

    let mut args = discover_args(
        &server.url(),
        &["--groups", "--group-type", "Public"],
        since(now),
        &list,
    );
    args.extend(["--max-attempts", "2"].map(String::from));
    let o = run_msgext(args, DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("warning: group @TGS#flaky: failed (10002"),
        "{stderr}"
    );
    let rows = list_rows(&list, &["GroupId", "MsgSeq"]);
    let want: Vec<Vec<String>> = events(5, now, |_| 0)
        .iter()
        .filter(|m| m.time >= since(now))
        .map(|m| vec!["@TGS#ok".into(), m.seq.to_string()])
        .collect();
    assert_eq!(want.len(), 4, "seq 1 is older than the window");
    assert_eq!(rows, want, "the rest is written");
    std::fs::remove_file(&list).unwrap();

    // 200 groups of 3 pages at 20 calls a second: still walking when the signal comes.
    let mut args = discover_args(
        &server.url(),
        &["--groups", "--group-type", "Private"],
        since(now),
        &list,
    );
    args.extend(["--rate", "20"].map(String::from));
    let before = server.stats().calls();
    let cmd = crate::common::msgext_command(&args, DEMO_SECRET_KEY, &[]);
    let status = crate::common::signal_midway(cmd, server.stats(), before + 20, "-TERM").await;
    assert_eq!(status.code(), Some(130));
    let left: Vec<_> = dir
        .path()
        .read_dir()
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "no list, no temporary file: {left:?}");
}
