//! Incremental reads and the current tables (DESIGN §7), against a
//! simulator whose messages change between runs: after every run,
//! `current_key_values` read through its Delta log equals what a full read
//! of every listed message returns at that moment, and a run reads only
//! what changed.

use crate::common::{KvRow, export_args, run_msgext, show};
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, RecordBatch};
use msgext::mock::store::{Change, Deletes, Op, Store, StoredMessage};
use msgext::mock::{DEMO_SECRET_KEY, Faults};
use msgext::model::{MessageId, MessageRef};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// What the current tables hold of one message.
#[derive(Debug, Clone, Default)]
struct Held {
    rows: Vec<KvRow>,
    status: &'static str,
    latest_seq: Option<i64>,
}

/// A lake, an input, and a store that changes between runs.
struct Nights {
    store: Store,
    /// Every listed message (some not in the store: not found).
    listed: Vec<MessageRef>,
    dir: tempfile::TempDir,
    input: PathBuf,
    out: PathBuf,
    /// What the current tables must hold of each message: its pairs, its
    /// status and LatestSeq as the simulator has them (for a message that
    /// failed: what they held).
    held: HashMap<MessageRef, Held>,
    /// The simulator serving tonight's store (a resume needs the same one).
    server: Option<msgext::mock::MockServer>,
    /// The sender the current tables must carry for each message: the
    /// last one an input gave.
    sender: Option<String>,
}

impl Nights {
    fn new(n: usize, deletes: Deletes) -> Nights {
        let listed: Vec<MessageRef> = (0..n)
            .map(|i| MessageRef::new(Some("s"), &format!("u{i}"), &format!("{i}_1_1")))
            .collect();
        let mut store = Store::generate(&listed, 11, 25);
        store.deletes = deletes;
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.csv");
        // A message listed twice is read once.
        let mut csv = crate::common::input_csv(&listed);
        let first = crate::common::input_csv(&listed[..1]);
        csv.push_str(first.lines().nth(1).unwrap());
        csv.push('\n');
        std::fs::write(&input, csv).unwrap();
        let out = dir.path().join("lake");
        Nights {
            store,
            listed,
            dir,
            input,
            out,
            held: HashMap::new(),
            server: None,
            sender: Some("s".into()),
        }
    }

    /// List the messages `range` of `listed` from now on, with or without
    /// their sender.
    fn list(&mut self, range: std::ops::Range<usize>, with_sender: bool) {
        let msgs: Vec<MessageRef> = self.listed[range]
            .iter()
            .map(|m| MessageRef::new(m.from.as_deref().filter(|_| with_sender), &m.to, &m.msg_key))
            .collect();
        std::fs::write(&self.input, crate::common::input_csv(&msgs)).unwrap();
        if with_sender {
            self.sender = Some("s".into());
        }
    }

    /// Export tonight's store (`extra` flags), with `failing` messages
    /// answered 10002 for ever; the run's summary.
    async fn run(&mut self, run_id: &str, extra: &[&str], failing: &[usize]) -> serde_json::Value {
        let want = if failing.is_empty() { 0 } else { 3 };
        self.run_env(run_id, extra, failing, &[], Some(want))
            .await
            .expect("a summary")
    }

    /// `run`, with this environment, ending with exit code `want` (none:
    /// killed); the summary when it finished.
    async fn run_env(
        &mut self,
        run_id: &str,
        extra: &[&str],
        failing: &[usize],
        env: &[(&str, &str)],
        want: Option<i32>,
    ) -> Option<serde_json::Value> {
        let mut store = self.store.clone();
        for &i in failing {
            if let Some(m) = store
                .messages
                .iter_mut()
                .find(|m| m.id == self.listed[i].clone().into())
            {
                m.always = Some("10002".into());
            }
        }
        if self.server.is_none() || !failing.is_empty() {
            self.server = Some(crate::common::start_mock(store, Faults::default(), 1).await);
        }
        let url = self.server.as_ref().map(|s| s.url()).unwrap_or_default();
        let mut args = export_args(&url, &self.input, &self.out, "parquet", run_id, 8);
        args.extend(["--max-attempts", "2"].map(String::from));
        args.extend(extra.iter().map(|s| s.to_string()));
        let o = run_msgext(args, DEMO_SECRET_KEY, env).await;
        if !failing.is_empty() {
            self.server = None;
        }
        assert_eq!(o.status.code(), want, "{}", show(&o));
        want?;
        let text =
            std::fs::read_to_string(self.out.join(format!("_runs/{run_id}/summary.json"))).unwrap();
        let failing: Vec<MessageRef> = failing.iter().map(|&i| self.listed[i].clone()).collect();
        self.expect(&failing);
        Some(serde_json::from_str(&text).unwrap())
    }

    /// What a full read of every listed message returns now (a failed
    /// message: what the table held).
    fn expect(&mut self, failing: &[MessageRef]) {
        let by_id: HashMap<MessageId, &StoredMessage> = self
            .store
            .messages
            .iter()
            .map(|m| (m.id.clone(), m))
            .collect();
        for m in &self.listed {
            if failing.contains(m) {
                continue;
            }
            let held = match by_id.get(&m.clone().into()) {
                None => Held {
                    status: "not_found",
                    ..Held::default()
                },
                Some(s) => Held {
                    status: "ok",
                    latest_seq: Some(s.latest_seq_with(self.store.deletes)),
                    rows: s
                        .live_pairs()
                        .into_iter()
                        .map(|p| KvRow {
                            from: self.sender.clone(),
                            to: m.to.clone(),
                            msg_key: m.msg_key.clone(),
                            key: p.key,
                            value: p.value,
                            seq: p.seq,
                            latest_seq: s.latest_seq_with(self.store.deletes),
                            clear_seq: s.clear_seq,
                        })
                        .collect(),
                },
            };
            self.held.insert(m.clone(), held);
        }
    }

    fn want(&self) -> Vec<KvRow> {
        let mut rows: Vec<KvRow> = self
            .held
            .values()
            .flat_map(|h| h.rows.iter().cloned())
            .collect();
        rows.sort();
        rows
    }

    fn current(&self) -> Vec<KvRow> {
        current_rows(&self.out)
    }

    /// The current pairs equal a full read's, or the messages that differ are named.
    fn assert_current(&self, what: &str) {
        let (got, want) = (self.current(), self.want());
        if got == want {
            return;
        }
        let by = |rows: Vec<KvRow>| {
            let mut m: BTreeMap<String, Vec<KvRow>> = BTreeMap::new();
            for r in rows {
                m.entry(r.to.clone()).or_default().push(r);
            }
            m
        };
        let (got, want) = (by(got), by(want));
        let differ: Vec<&String> = got
            .keys()
            .chain(want.keys())
            .filter(|k| got.get(*k) != want.get(*k))
            .collect();
        let first = differ[0];
        let keys = |m: &BTreeMap<String, Vec<KvRow>>| -> Vec<(String, String, i64)> {
            m.get(first)
                .map(|rs| {
                    rs.iter()
                        .map(|r| (r.key.clone(), r.value.chars().take(12).collect(), r.seq))
                        .collect()
                })
                .unwrap_or_default()
        };
        panic!(
            "{what}: {} messages differ from a full read; {first}: held {:?} want {:?}",
            differ.len(),
            keys(&got),
            keys(&want)
        );
    }

    /// Pairs a full read would return now.
    fn full_read_pairs(&self) -> usize {
        self.store
            .messages
            .iter()
            .map(|m| m.live_pairs().len())
            .sum()
    }

    fn change(&mut self, seed: u64, share: f64) {
        let changes = self.store.random_changes(seed, share);
        self.store.apply(&changes);
        self.server = None;
    }
}

fn current_rows(out: &Path) -> Vec<KvRow> {
    let mut rows: Vec<KvRow> = crate::common::local_delta_batches(&out.join("current_key_values"))
        .iter()
        .flat_map(crate::common::kv_rows_of)
        .collect();
    rows.sort();
    rows
}

/// `current_messages` through its log: (to_account, status, kv_count, latest_seq).
fn current_messages(out: &Path) -> BTreeMap<String, (String, i64, Option<i64>)> {
    let batches: Vec<RecordBatch> =
        crate::common::local_delta_batches(&out.join("current_messages"));
    let mut map = BTreeMap::new();
    for b in &batches {
        let to = b.column_by_name("to_account").unwrap().as_string::<i32>();
        let status = b.column_by_name("status").unwrap().as_string::<i32>();
        let count = b
            .column_by_name("kv_count")
            .unwrap()
            .as_primitive::<Int64Type>();
        let latest = b
            .column_by_name("latest_seq")
            .unwrap()
            .as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let prev = map.insert(
                to.value(i).to_owned(),
                (
                    status.value(i).to_owned(),
                    count.value(i),
                    (!latest.is_null(i)).then(|| latest.value(i)),
                ),
            );
            assert!(prev.is_none(), "one row per message: {}", to.value(i));
        }
    }
    map
}

/// How the run read its messages: counts of the history `messages.read` values.
fn reads(out: &Path, run_id: &str) -> BTreeMap<String, usize> {
    let mut out_map = BTreeMap::new();
    for b in crate::common::local_delta_batches(&out.join("messages")) {
        let run = b.column_by_name("run_id").unwrap().as_string::<i32>();
        let read = b.column_by_name("read").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            if run.value(i) == run_id {
                let r = if read.is_null(i) { "-" } else { read.value(i) };
                *out_map.entry(r.to_owned()).or_default() += 1;
            }
        }
    }
    out_map
}

fn kv_rows(summary: &serde_json::Value) -> u64 {
    summary["kv_rows"].as_u64().unwrap()
}

fn check_messages(n: &Nights) {
    let msgs = current_messages(&n.out);
    assert_eq!(msgs.len(), n.listed.len(), "one row per listed message");
    for (m, held) in &n.held {
        let (status, count, latest) = &msgs[&m.to];
        assert_eq!(status, held.status, "status of {m}");
        assert_eq!(*latest, held.latest_seq, "latest_seq of {m}");
        assert_eq!(*count as usize, held.rows.len(), "kv_count of {m}");
    }
}

async fn nights_of_changes(deletes: Deletes) {
    let mut n = Nights::new(150, deletes);
    let first = n.run("night0", &[], &[]).await;
    assert_eq!(n.current(), n.want(), "after the first, full, run");
    assert_eq!(kv_rows(&first) as usize, n.full_read_pairs());
    check_messages(&n);
    for night in 1..=4u64 {
        n.change(night, 0.10);
        let run_id = format!("night{night}");
        // One night, two messages fail: what the table knew of them stays.
        let failing: &[usize] = if night == 2 { &[3, 4] } else { &[] };
        let full = n.full_read_pairs();
        let s = n.run(&run_id, &[], failing).await;
        assert_eq!(n.current(), n.want(), "{deletes:?}: after {run_id}");
        check_messages(&n);
        let share = kv_rows(&s) as f64 / full as f64;
        eprintln!(
            "{deletes:?} {run_id}: {} pairs read of {full} ({:.1}%), {} calls, reads {:?}",
            kv_rows(&s),
            share * 100.0,
            s["requests"],
            reads(&n.out, &run_id)
        );
        assert!(share <= 0.30, "{run_id}: {share}");
        assert!(
            reads(&n.out, &run_id)
                .get("unchanged")
                .copied()
                .unwrap_or(0)
                > 100
        );
    }
    // A night without changes: every message asked once, no pair read.
    let s = n.run("quiet", &[], &[]).await;
    assert_eq!(n.current(), n.want());
    assert!(kv_rows(&s) as f64 <= 0.05 * n.full_read_pairs() as f64);
    assert_eq!(
        s["requests"].as_u64().unwrap() as usize,
        n.listed.len(),
        "{s}"
    );
    // An empty input reads nothing and changes nothing.
    std::fs::write(&n.input, "From_Account,To_Account,MsgKey\n").unwrap();
    let s = n.run("empty", &[], &[]).await;
    assert_eq!(s["requests"], 0);
    assert_eq!(n.current(), n.want(), "after an empty input");
    check_messages(&n);
    let _ = &n.dir;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_as_tombstones_keep_the_current_table_a_full_read() {
    nights_of_changes(Deletes::Tombstone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_that_move_latest_seq_keep_the_current_table_a_full_read() {
    nights_of_changes(Deletes::Hidden).await;
}

/// A service that reports only the highest Seq still held hides the delete
/// of an older key from any incremental read: `--full` reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_delete_is_caught_by_a_full_read() {
    let mut n = Nights::new(40, Deletes::HighestHeld);
    n.run("n0", &[], &[]).await;
    // Delete the oldest live key of every message with two or more.
    let changes: Vec<Change> = n
        .store
        .messages
        .iter()
        .filter(|m| m.live_pairs().len() >= 2)
        .map(|m| Change {
            id: m.id.clone(),
            op: Op::Delete {
                key: m.live_pairs()[0].key.clone(),
            },
        })
        .collect();
    assert!(changes.len() > 10);
    n.store.apply(&changes);
    n.server = None;
    n.run("n1", &[], &[]).await;
    assert_ne!(n.current(), n.want(), "invisible to an incremental read");
    let s = n.run("n2", &["--full"], &[]).await;
    assert_eq!(n.current(), n.want(), "--full reads every message anew");
    assert_eq!(
        reads(&n.out, "n2").get("full").copied(),
        Some(s["messages"]["ok"].as_u64().unwrap() as usize)
    );
}

/// Killed as `kill -9` would be around the current tables' commits, then
/// the same command: the tables are exact and the run is in one commit of
/// each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_around_the_current_commits_then_the_same_command() {
    for failpoint in [
        "after_delta_commits",
        "between_current_commits",
        "after_current_commits",
    ] {
        let mut n = Nights::new(60, Deletes::Hidden);
        n.run("n0", &[], &[]).await;
        n.change(7, 0.3);
        let env = [("MSGEXT_FAILPOINT", failpoint)];
        n.run_env("n1", &[], &[], &env, None).await;
        n.run("n1", &[], &[]).await;
        assert_eq!(n.current(), n.want(), "{failpoint}");
        check_messages(&n);
        for table in ["current_key_values", "current_messages"] {
            let commits = crate::common::delta_commits(&n.out.join(table));
            let ours = commits
                .iter()
                .filter(|c| c.app_ids.contains(&"msgext-run-n1".to_owned()))
                .count();
            assert_eq!(ours, 1, "{failpoint}: {table}: {commits:?}");
        }
    }
}

/// A current table of another schema (here another table copied there)
/// is refused before any call, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_current_table_of_another_schema_is_refused_before_any_call() {
    let mut n = Nights::new(10, Deletes::Tombstone);
    n.run("n0", &[], &[]).await;
    let current = n.out.join("current_key_values");
    std::fs::remove_dir_all(&current).unwrap();
    copy_dir(&n.out.join("messages"), &current);
    let server = crate::common::start_mock(n.store.clone(), Faults::default(), 1).await;
    let args = export_args(&server.url(), &n.input, &n.out, "parquet", "n1", 8);
    let o = run_msgext(args, DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("current_key_values") && err.contains("schema"),
        "{err}"
    );
    assert_eq!(server.stats().calls(), 0);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Group messages keep their own current tables the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_messages_keep_current_group_tables() {
    use msgext::model::GroupMessageRef;
    let listed: Vec<GroupMessageRef> = (1..=60)
        .map(|i| GroupMessageRef::new("@TGS#g", i))
        .collect();
    let mut store = Store::generate(&listed, 3, 20);
    store.deletes = Deletes::Hidden;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    let out = dir.path().join("lake");
    let csv: String = std::iter::once("GroupId,MsgSeq\n".to_owned())
        .chain(
            listed
                .iter()
                .map(|m| format!("{},{}\n", m.group_id, m.msg_seq)),
        )
        .collect();
    std::fs::write(&input, csv).unwrap();
    for night in 0..3u64 {
        let server = crate::common::start_mock(store.clone(), Faults::default(), 1).await;
        let args = export_args(
            &server.url(),
            &input,
            &out,
            "parquet",
            &format!("g{night}"),
            8,
        );
        let o = run_msgext(args, DEMO_SECRET_KEY, &[]).await;
        assert_eq!(o.status.code(), Some(0), "{}", show(&o));
        let mut want: Vec<(i64, String, String, i64, i64)> = store
            .messages
            .iter()
            .flat_map(|m| {
                let id = crate::common::group_of(&m.id).clone();
                let latest = m.latest_seq_with(store.deletes);
                m.live_pairs()
                    .into_iter()
                    .map(move |p| (id.msg_seq, p.key, p.value, p.seq, latest))
            })
            .collect();
        want.sort();
        let mut got = Vec::new();
        for b in crate::common::local_delta_batches(&out.join("current_group_key_values")) {
            let seq = |c: &str| {
                b.column_by_name(c)
                    .unwrap()
                    .as_primitive::<Int64Type>()
                    .clone()
            };
            let text = |c: &str| b.column_by_name(c).unwrap().as_string::<i32>().clone();
            let (msg_seq, key, value, s, latest) = (
                seq("msg_seq"),
                text("key"),
                text("value"),
                seq("seq"),
                seq("latest_seq"),
            );
            for i in 0..b.num_rows() {
                got.push((
                    msg_seq.value(i),
                    key.value(i).to_owned(),
                    value.value(i).to_owned(),
                    s.value(i),
                    latest.value(i),
                ));
            }
        }
        got.sort();
        assert_eq!(got, want, "night {night}");
        let changes = store.random_changes(100 + night, 0.3);
        store.apply(&changes);
    }
}

/// A delete and then a set on one message between two reads (a reaction
/// taken back and another given): the delete leaves no pair, the set one
/// at the new LatestSeq; the tables must still drop the deleted key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_then_a_set_between_two_reads_drops_the_deleted_key() {
    for deletes in [Deletes::Hidden, Deletes::Tombstone] {
        let mut n = Nights::new(60, deletes);
        n.run("n0", &[], &[]).await;
        let mut changes = Vec::new();
        for m in n
            .store
            .messages
            .iter()
            .filter(|m| !m.live_pairs().is_empty())
        {
            let key = m.live_pairs()[0].key.clone();
            changes.push(Change {
                id: m.id.clone(),
                op: Op::Delete { key },
            });
            changes.push(Change {
                id: m.id.clone(),
                op: Op::Set {
                    key: "late".into(),
                    value: "1".into(),
                },
            });
        }
        assert!(changes.len() > 60);
        n.store.apply(&changes);
        n.server = None;
        n.run("n1", &[], &[]).await;
        n.assert_current(&format!("{deletes:?}"));
        check_messages(&n);
    }
}

/// A message listed with its sender one night and without it the next
/// (and the other way round) is one message of the current tables, which
/// keep the last sender given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_with_and_without_its_sender_is_one_message() {
    for first_with in [true, false] {
        let mut n = Nights::new(40, Deletes::Hidden);
        n.list(0..40, first_with);
        if !first_with {
            n.sender = None;
        }
        n.run("n0", &[], &[]).await;
        n.change(3, 0.5);
        n.list(0..40, !first_with);
        n.run("n1", &[], &[]).await;
        assert_eq!(n.current(), n.want(), "first with sender: {first_with}");
        check_messages(&n);
        n.change(4, 0.5);
        n.list(0..40, first_with);
        n.run("n2", &["--full"], &[]).await;
        assert_eq!(
            n.current(),
            n.want(),
            "first with sender: {first_with}, --full"
        );
        check_messages(&n);
    }
}

/// Killed between any two of its commits, then another list: the next run
/// completes the killed one's current commits when its history is in
/// (else the tables keep what was known before it), before it reads what
/// is known; the killed run's own command later adds what is left, and
/// a full list then equals a full read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_any_two_commits_then_another_list() {
    for failpoint in [
        "between_delta_commits",
        "after_delta_commits",
        "between_current_commits",
        "after_current_commits",
    ] {
        killed_then_another_list(failpoint).await;
    }
}

/// `msgext runs` names which of a killed run's commits the lake holds,
/// and who completes the rest.
async fn runs_show_the_commits_of(n: &Nights, run: &str, failpoint: &str) {
    let (committed, note) = match failpoint {
        "between_delta_commits" => ("part-history", Some("its own export command completes it")),
        "after_delta_commits" => (
            "history",
            Some("its current tables are not: the next export"),
        ),
        "between_current_commits" => ("history+part", Some("completes the other")),
        "after_current_commits" => ("all", None),
        other => panic!("no expectation for {other}"),
    };
    let args = vec![
        "runs".to_owned(),
        "--out".into(),
        n.out.to_string_lossy().into_owned(),
    ];
    let o = run_msgext(args, DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with(&format!("{run} ")))
        .unwrap_or_else(|| panic!("{failpoint}: no row for {run} in\n{text}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1], "unfinished", "{failpoint}: {row}");
    assert!(
        cells.contains(&committed),
        "{failpoint}: {committed} in {row}"
    );
    let noted = text
        .lines()
        .find(|l| l.starts_with(&format!("run {run}: ")));
    match note {
        Some(note) => assert!(
            noted.is_some_and(|l| l.contains(note)),
            "{failpoint}: a line saying {note:?} in\n{text}"
        ),
        None => assert!(noted.is_none(), "{failpoint}: no note in\n{text}"),
    }
}

async fn killed_then_another_list(failpoint: &str) {
    // Whether the next run finds the killed one's history whole.
    let history_in = failpoint != "between_delta_commits";
    let mut n = Nights::new(80, Deletes::Hidden);
    n.run("n0", &[], &[]).await;
    let held_n0 = n.held.clone();
    n.change(11, 0.5);
    let env = [("MSGEXT_FAILPOINT", failpoint)];
    n.run_env("n1", &[], &[], &env, None).await;
    runs_show_the_commits_of(&n, "n1", failpoint).await;
    let (n1_input, n1_server) = (std::fs::read(&n.input).unwrap(), n.server.take());
    // What n1 read.
    n.expect(&[]);
    let held_n1 = n.held.clone();
    // Another list: half the messages, changed again.
    n.change(12, 0.5);
    n.list(40..80, true);
    n.run("n2", &[], &[]).await;
    // The messages n2 did not list hold what the last whole run read.
    let unlisted = |n: &mut Nights, held: &HashMap<MessageRef, Held>| {
        for (m, h) in held {
            if m.to[1..].parse::<usize>().unwrap() < 40 {
                n.held.insert(m.clone(), h.clone());
            }
        }
    };
    unlisted(&mut n, if history_in { &held_n1 } else { &held_n0 });
    n.assert_current(&format!("{failpoint}: after another list"));
    check_messages(&n);
    // n1's own command (its input, its endpoint): what is left of it goes
    // in, and its reads never replace n2's newer ones.
    let before = n.current();
    std::fs::write(&n.input, n1_input).unwrap();
    n.server = n1_server;
    let url = n.server.as_ref().unwrap().url();
    let args = export_args(&url, &n.input, &n.out, "parquet", "n1", 8);
    let o = run_msgext(args, DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{failpoint}: {}", show(&o));
    if history_in {
        assert!(
            n.current() == before,
            "{failpoint}: the killed run's own command changed nothing"
        );
    }
    unlisted(&mut n, &held_n1);
    n.assert_current(&format!("{failpoint}: after the killed run's own command"));
    n.server = None;
    n.list(0..80, true);
    n.run("n3", &[], &[]).await;
    n.assert_current(&format!("{failpoint}: after a full list"));
    check_messages(&n);
}

/// A run killed before its commits and finished after a later run
/// committed: its history goes in, and its older reads never replace the
/// later run's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_resume_leaves_newer_rows_alone() {
    let mut n = Nights::new(80, Deletes::Hidden);
    n.run("n0", &[], &[]).await;
    n.change(21, 0.5);
    let env = [("MSGEXT_FAILPOINT", "before_delta_commit")];
    n.run_env("n1", &[], &[], &env, None).await;
    let n1_server = n.server.take();
    n.change(22, 0.5);
    n.run("n2", &[], &[]).await;
    n.assert_current("after the later run");
    // n1's own command, as `msgext runs` advises (its endpoint, so the
    // same simulator; it has nothing left to fetch).
    n.server = n1_server;
    let s = n.run("n1", &[], &[]).await;
    n.expect(&[]);
    assert_eq!(s["status"], "complete", "{s}");
    n.assert_current("after the late resume");
    check_messages(&n);
    assert_eq!(
        reads(&n.out, "n1").values().sum::<usize>(),
        80,
        "n1's history is in"
    );
}

/// The newest log entry of `current_key_values` lost: the next run puts
/// back what it held before reading. A data file of the current tables
/// lost: the run stops before any call, naming `--full`, which rebuilds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_current_table_is_repaired_or_rebuilt_with_full() {
    let mut n = Nights::new(60, Deletes::Hidden);
    n.run("n0", &[], &[]).await;
    n.change(31, 0.5);
    n.run("n1", &[], &[]).await;
    let log = n.out.join("current_key_values/_delta_log");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    entries.sort();
    std::fs::remove_file(entries.last().unwrap()).unwrap();
    n.change(32, 0.5);
    n.run("n2", &[], &[]).await;
    n.assert_current("a lost log entry put back");
    check_messages(&n);
    // A data file gone.
    std::fs::remove_file(a_live_file(&n.out.join("current_key_values"))).unwrap();
    n.change(33, 0.5);
    let server = crate::common::start_mock(n.store.clone(), Faults::default(), 1).await;
    let args = export_args(&server.url(), &n.input, &n.out, "parquet", "n3", 8);
    let o = run_msgext(args, DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("damaged") && err.contains("--full"), "{err}");
    assert_eq!(server.stats().calls(), 0);
    n.server = None;
    n.run("n4", &["--full"], &[]).await;
    n.assert_current("rebuilt by --full");
    check_messages(&n);
}

/// A current table another engine gave deletion vectors (as a Spark
/// `DELETE` does): msgext reads the tables' files whole, so it refuses the
/// table by the feature's name before any call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_current_table_with_deletion_vectors_is_refused_by_name() {
    let mut n = Nights::new(10, Deletes::Tombstone);
    n.run("n0", &[], &[]).await;
    let table = n.out.join("current_key_values");
    let version = crate::common::delta_commits(&table).len();
    let upgrade = serde_json::json!({"protocol": {
        "minReaderVersion": 3, "minWriterVersion": 7,
        "readerFeatures": ["deletionVectors"],
        "writerFeatures": ["deletionVectors"]}});
    std::fs::write(
        table.join(format!("_delta_log/{version:020}.json")),
        format!("{upgrade}\n"),
    )
    .unwrap();
    let server = crate::common::start_mock(n.store.clone(), Faults::default(), 1).await;
    let args = export_args(&server.url(), &n.input, &n.out, "parquet", "n1", 8);
    let o = run_msgext(args, DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("current_key_values") && err.contains("deletionVectors"),
        "{err}"
    );
    assert_eq!(server.stats().calls(), 0);
}

/// Two exports of one app with different inputs, started together into
/// one lake with the default state folder: both run (the lock guards an
/// input, not the lake), and the current tables hold both lists exactly,
/// whichever commits first. The same input twice is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_of_different_inputs_run_together_into_one_lake() {
    let mut n = Nights::new(80, Deletes::Hidden);
    n.run("n0", &[], &[]).await;
    for round in 0..3u64 {
        n.change(40 + round, 0.5);
        let server = crate::common::start_mock(n.store.clone(), Faults::default(), 1).await;
        let other = n.dir.path().join("other.csv");
        n.list(40..80, true);
        std::fs::copy(&n.input, &other).unwrap();
        n.list(0..40, true);
        let a = export_args(
            &server.url(),
            &n.input,
            &n.out,
            "parquet",
            &format!("a{round}"),
            8,
        );
        let b = export_args(
            &server.url(),
            &other,
            &n.out,
            "parquet",
            &format!("b{round}"),
            8,
        );
        let (oa, ob) = tokio::join!(
            run_msgext(a, DEMO_SECRET_KEY, &[]),
            run_msgext(b, DEMO_SECRET_KEY, &[])
        );
        assert_eq!(oa.status.code(), Some(0), "{}", show(&oa));
        assert_eq!(ob.status.code(), Some(0), "{}", show(&ob));
        n.expect(&[]);
        n.assert_current(&format!("round {round}"));
        check_messages(&n);
    }
}

/// A current-table file msgext cannot read (here its bytes overwritten) is
/// no licence to rebuild: even with `--full` the run fails with the cause,
/// before any call, and the tables keep every message they held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_current_file_fails_the_run_even_with_full() {
    let mut n = Nights::new(40, Deletes::Hidden);
    n.run("n0", &[], &[]).await;
    let before = n.current();
    let file = a_live_file(&n.out.join("current_messages"));
    let len = std::fs::metadata(&file).unwrap().len() as usize;
    std::fs::write(&file, vec![b'x'; len]).unwrap();
    // Tonight's list is a part of the messages: a rebuild would drop the rest.
    n.list(0..10, true);
    let server = crate::common::start_mock(n.store.clone(), Faults::default(), 1).await;
    let mut args = export_args(&server.url(), &n.input, &n.out, "parquet", "n1", 8);
    args.push("--full".into());
    let o = run_msgext(args, DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(show(&o).contains("current_messages"), "{}", show(&o));
    assert_eq!(server.stats().calls(), 0);
    assert!(n.current() == before, "the pairs of every message stay");
}

/// A data file the table's newest commit that adds any added.
fn a_live_file(table: &Path) -> PathBuf {
    let commits = crate::common::delta_commits(table);
    let live = commits.iter().rev().find(|c| !c.adds.is_empty()).unwrap();
    table.join(&live.adds[0])
}
