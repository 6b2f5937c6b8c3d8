//! `msgext listen`: the callback URL keeps every signed extension callback
//! of the app once, refuses the rest with nothing stored, answers other
//! callbacks OK unstored, and commits to the events tables (read back
//! through the Delta kernel). The simulator's callbacks (`msgext mock
//! --callback-url`) are what the service would send.

use crate::common::listener::{self, APP, EventRow, Listener, TOKEN, event_rows, rows_of};
use msgext::api::callback::{ExtensionEvent, sign};
use msgext::kind::{GroupMessageRef, MessageId, MessageRef};
use msgext::mock::store::{Change, Op, Store, StoredMessage};

/// Messages of both kinds, and the callbacks of a night of changes to them:
/// sets (new keys and new values), deletes, clears, a delete of a key not
/// held (no callback), a vanished message (no callback).
fn night() -> (Store, Vec<ExtensionEvent>) {
    let ids: Vec<MessageId> = vec![
        MessageRef::new(Some("alice"), "bob", "1_1_1").into(),
        MessageRef::new(None, "carol", "2_2_2").into(),
        GroupMessageRef::new("@TGS#poll", 7).into(),
        GroupMessageRef::new("@TGS#poll", 8).into(),
    ];
    let mut store = Store::new(
        ids.iter()
            .map(|id| StoredMessage::new(id.clone(), 0, vec![]))
            .collect(),
    );
    let set = |i: usize, k: &str, v: &str| Change {
        id: ids[i].clone(),
        op: Op::Set {
            key: k.into(),
            value: v.into(),
        },
    };
    let op = |i: usize, op: Op| Change {
        id: ids[i].clone(),
        op,
    };
    let changes = vec![
        set(0, "vote", "yes"),
        set(0, "emoji", "👍 \"quoted\"\n"),
        set(0, "vote", "no"),
        op(
            0,
            Op::Delete {
                key: "emoji".into(),
            },
        ),
        op(
            0,
            Op::Delete {
                key: "never-set".into(),
            },
        ),
        set(1, "k", ""),
        set(2, "option_a", "u1,u2"),
        op(2, Op::Clear),
        set(2, "option_b", "u3"),
        set(3, "x", "1"),
        op(3, Op::Vanish),
        set(3, "after-vanish", "ignored"),
    ];
    let events = store.apply_with_events(&changes, 1_764_688_415_123);
    (store, events)
}

fn refs(events: &[ExtensionEvent]) -> Vec<&ExtensionEvent> {
    events.iter().collect()
}

fn rows(events: &[ExtensionEvent], group: bool) -> Vec<EventRow> {
    let of: Vec<&ExtensionEvent> = events
        .iter()
        .filter(|e| matches!(e.message, MessageId::Group(_)) == group)
        .collect();
    rows_of(&of)
}

/// The last JSON status line of a listener's stderr.
fn status(stderr: &str) -> serde_json::Value {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no status line in:\n{stderr}"));
    serde_json::from_str(line).unwrap()
}

/// POST `body` to the listener with this query; (status, ActionStatus).
async fn post(l: &Listener, query: &str, body: Vec<u8>) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("{}/cb?{query}", l.url))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    (status, v["ActionStatus"].as_str().unwrap_or("").to_owned())
}

fn signed(app: u64, time: i64, token: &str) -> String {
    format!(
        "SdkAppid={app}&CallbackCommand=C2C.CallbackAfterC2CMsgExtension&RequestTime={time}&Sign={}",
        sign(token, &time.to_string())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_callbacks_are_stored_once_and_the_rest_refused_with_nothing_stored() {
    let (_, events) = night();
    // The simulator's Seqs: a delete has its own Seq and an empty value;
    // the delete of a key never set and the vanished message sent nothing.
    assert_eq!(events.len(), 9, "{events:#?}");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lake");
    let l = listener::start(
        &out,
        &listener::state(dir.path(), 0),
        &["--commit-every", "1h"],
        &[],
    );
    let d = l.deliver(&events).await;
    assert_eq!((d.ok, d.failed), (9, 0));

    let now = chrono::Utc::now().timestamp();
    let body = events[0].body();
    let refused = [
        (signed(APP, now, "another-token"), 401),
        (signed(APP, now - 301, TOKEN), 401),
        (signed(APP, now + 301, TOKEN), 401),
        (signed(APP + 1, now, TOKEN), 403),
        (
            format!("SdkAppid={APP}&CallbackCommand=C2C.CallbackAfterC2CMsgExtension"),
            401,
        ),
    ];
    for (query, want) in &refused {
        assert_eq!(
            post(&l, query, body.clone()).await,
            (*want, "FAIL".into()),
            "{query}"
        );
    }
    // Within the window, both sides.
    assert_eq!(
        post(&l, &signed(APP, now - 290, TOKEN), body.clone())
            .await
            .0,
        200
    );
    let ok = signed(APP, now, TOKEN);
    // Another callback of the app: OK, not stored.
    let other = br#"{"CallbackCommand": "State.StateChange", "Info": {"To_Account": "a", "Action": "Login"}}"#;
    assert_eq!(post(&l, &ok, other.to_vec()).await, (200, "OK".into()));
    assert_eq!(
        post(&l, &ok, b"{not json".to_vec()).await,
        (400, "FAIL".into())
    );
    let mut huge =
        b"{\"CallbackCommand\": \"C2C.CallbackAfterC2CMsgExtension\", \"x\": \"".to_vec();
    huge.resize((1 << 20) + 10, b'a');
    assert_eq!(post(&l, &ok, huge).await, (413, "FAIL".into()));
    let client = reqwest::Client::new();
    let health = client
        .get(format!("{}/healthz", l.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let get = client.get(format!("{}/cb", l.url)).send().await.unwrap();
    assert_eq!(get.status().as_u16(), 405);

    let err = l.stop().await;
    let s = status(&err);
    assert_eq!(s["accepted"], 10, "{err}");
    assert_eq!(s["ignored"], 1, "{err}");
    assert_eq!(s["bad"], 2, "{err}");
    assert_eq!(s["refused"]["bad_sign"], 1, "{err}");
    assert_eq!(s["refused"]["stale"], 2, "{err}");
    assert_eq!(s["refused"]["other_app"], 1, "{err}");
    assert_eq!(s["refused"]["unsigned"], 1, "{err}");
    assert_eq!(s["backlog"], 0, "{err}");
    assert!(!err.contains(TOKEN), "the token is never shown:\n{err}");
    // The event accepted twice (its second delivery inside the window) is twice a hint.
    let mut want_c2c = rows(&events, false);
    want_c2c.extend(rows_of(&[&events[0]]));
    want_c2c.sort();
    assert_eq!(event_rows(&out, false), want_c2c);
    assert_eq!(event_rows(&out, true), rows(&events, true));
    let group = event_rows(&out, true);
    assert!(
        group.iter().any(|r| r.1 == "clear" && r.3.is_none()),
        "{group:#?}"
    );

    // Started again on its state: nothing is committed twice.
    let l = listener::start(&out, &listener::state(dir.path(), 0), &[], &[]);
    l.stop().await;
    assert_eq!(event_rows(&out, false), want_c2c);
    assert_eq!(event_rows(&out, true), rows(&events, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_it_refuses_to_start_unless_told_the_app_signs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lake");
    let args: Vec<String> = ["listen", "--out", &out.to_string_lossy(), "--sdkappid", "1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let o = crate::common::run_msgext(args, "unused", &[("MSGEXT_CALLBACK_TOKEN", "")]).await;
    assert_eq!(o.status.code(), Some(2), "{}", crate::common::show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("MSGEXT_CALLBACK_TOKEN") && err.contains("--unsigned"),
        "{err}"
    );
    assert!(!out.exists(), "nothing is created");

    let (_, events) = night();
    let state = listener::state(dir.path(), 0);
    let l = listener::start(
        &out,
        &state,
        &["--unsigned"],
        &[("MSGEXT_CALLBACK_TOKEN", "")],
    );
    let mut unsigned = l.delivery();
    unsigned.token = None;
    let d = msgext::mock::callbacks::deliver(&unsigned, &events[..2]).await;
    assert_eq!((d.ok, d.failed), (2, 0));
    unsigned.sdkappid = APP + 1;
    let d = msgext::mock::callbacks::deliver(&unsigned, &events[2..]).await;
    assert_eq!(
        (d.ok, d.failed),
        (0, 7),
        "another app's callbacks are refused"
    );
    let err = l.stop().await;
    assert!(err.contains("warning: --unsigned"), "{err}");
    assert_eq!(event_rows(&out, false), rows_of(&refs(&events[..2])));

    // A second listener on the same state folder is refused; so is another app on it.
    let first = listener::start(&out, &state, &[], &[]);
    let o = crate::common::run_msgext(
        listen_args(&out, &state, APP),
        "unused",
        &[("MSGEXT_CALLBACK_TOKEN", TOKEN)],
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", crate::common::show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("in use by another msgext listen"));
    first.stop().await;
    let o = crate::common::run_msgext(
        listen_args(&out, &state, APP + 1),
        "unused",
        &[("MSGEXT_CALLBACK_TOKEN", TOKEN)],
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", crate::common::show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("the state of a listener for app"));
}

fn listen_args(out: &std::path::Path, state: &std::path::Path, app: u64) -> Vec<String> {
    listener::args(out, state, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_events_table_of_another_schema_stops_it_at_start_by_name() {
    let (_, events) = night();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lake");
    let l = listener::start(&out, &listener::state(dir.path(), 0), &[], &[]);
    l.deliver(&events).await;
    l.stop().await;
    // The group table's columns where the one-to-one table should be.
    std::fs::rename(out.join("extension_events"), dir.path().join("moved")).unwrap();
    std::fs::rename(
        out.join("group_extension_events"),
        out.join("extension_events"),
    )
    .unwrap();
    let o = crate::common::run_msgext(
        listen_args(&out, &listener::state(dir.path(), 1), APP),
        "unused",
        &[("MSGEXT_CALLBACK_TOKEN", TOKEN)],
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", crate::common::show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("extension_events") && err.contains("another schema"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_on_two_machines_commit_to_one_lake_at_once() {
    let (_, events) = night();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lake");
    let a = listener::start(
        &out,
        &listener::state(dir.path(), 0),
        &["--commit-every", "1h"],
        &[],
    );
    let b = listener::start(
        &out,
        &listener::state(dir.path(), 1),
        &["--commit-every", "1h"],
        &[],
    );
    // A load balancer's way: alternate.
    let (even, odd): (Vec<_>, Vec<_>) = events
        .iter()
        .cloned()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    let strip = |v: Vec<(usize, ExtensionEvent)>| v.into_iter().map(|(_, e)| e).collect::<Vec<_>>();
    let (even, odd) = (strip(even), strip(odd));
    let (da, db) = tokio::join!(a.deliver(&even), b.deliver(&odd));
    assert_eq!(da.ok + db.ok, events.len() as u64);
    // Both commit as they stop, at the same moment.
    tokio::join!(a.stop(), b.stop());
    assert_eq!(event_rows(&out, false), rows(&events, false));
    assert_eq!(event_rows(&out, true), rows(&events, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_posts_the_callbacks_of_the_round_it_serves() {
    let (store, _) = night();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lake");
    // A store file with two rounds: the simulator at round 2 sends round 2's callbacks.
    let round = |i: usize, k: &str| Change {
        id: store.messages[i].id.clone(),
        op: Op::Set {
            key: k.into(),
            value: "v".into(),
        },
    };
    let rounds = vec![vec![round(0, "r1")], vec![round(1, "r2"), round(2, "r2")]];
    let mut json = serde_json::to_value(&store).unwrap();
    json["rounds"] = serde_json::to_value(&rounds).unwrap();
    let path = dir.path().join("store.json");
    std::fs::write(&path, json.to_string()).unwrap();
    let mut want = store.clone();
    want.apply(&rounds[0]);
    let events = want.apply_with_events(&rounds[1], 0);

    let l = listener::start(&out, &listener::state(dir.path(), 0), &[], &[]);
    let args: Vec<String> = [
        "mock",
        "--store",
        &path.to_string_lossy(),
        "--round",
        "2",
        "--callback-url",
        &l.url,
        "--callback-token",
        TOKEN,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut mock = crate::common::msgext_command(&args, "unused", &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let err = mock.stderr.take().unwrap();
    let told = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(err)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("callbacks to"))
    });
    let told = tokio::time::timeout(crate::common::RUN_GUARD, told)
        .await
        .unwrap()
        .unwrap();
    let _ = mock.kill();
    let _ = mock.wait();
    assert!(
        told.as_deref().unwrap_or("").contains("2 answered OK"),
        "{told:?}"
    );
    l.stop().await;
    assert_eq!(event_rows(&out, false), rows(&events, false));
    assert_eq!(event_rows(&out, true), rows(&events, true));
}

/// Lines of a child's stderr, each sent on as it comes.
fn stderr_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Wait (on the lines themselves, within RUN_GUARD) for a line holding `what`.
fn wait_for(lines: &std::sync::mpsc::Receiver<String>, what: &str) {
    let deadline = std::time::Instant::now() + crate::common::RUN_GUARD;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) if l.contains(what) => return,
            Ok(_) => {}
            Err(e) => panic!("no line with {what:?}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_wait_in_the_journal_while_the_lake_cannot_take_them() {
    use std::io::BufRead;
    let (_, events) = night();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lake");
    std::fs::create_dir_all(&out).unwrap();
    // A file where the one-to-one events table's folder must go: no commit can land.
    let blocker = out.join("extension_events");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let mut args = listen_args(&out, &listener::state(dir.path(), 0), APP);
    args.extend(["--commit-every", "1s"].map(String::from));
    let mut child =
        crate::common::msgext_command(&args, "unused", &[("MSGEXT_CALLBACK_TOKEN", TOKEN)])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    let lines = stderr_lines(&mut child);
    let mut url = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    let delivery = msgext::mock::callbacks::Delivery {
        url: url.trim().to_owned(),
        token: Some(TOKEN.into()),
        sdkappid: APP,
        loss: 0.0,
        twice: 0.0,
        seed: 1,
    };
    // The listener keeps answering: every callback is acknowledged.
    let d = msgext::mock::callbacks::deliver(&delivery, &events).await;
    assert_eq!((d.ok, d.failed), (events.len() as u64, 0));
    wait_for(&lines, "callbacks are kept in the journal");
    std::fs::remove_file(&blocker).unwrap();
    wait_for(&lines, "the lake takes commits again");
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(event_rows(&out, false), rows(&events, false));
    assert_eq!(event_rows(&out, true), rows(&events, true));
}
