//! Group messages (`group_get_key_values`) end to end, as the one-to-one
//! ones are: the real binary against the simulator on port 0, both formats
//! read back with the arrow/parquet and csv readers and compared with what
//! the simulator holds; scripted faults; a crash and the same command again.

use crate::common::{run_msgext, show};
use msgext::mock::store::{Store, StoredMessage, StoredPair};
use msgext::mock::{DEMO_SECRET_KEY, Faults, MockServer};
use msgext::model::GroupMessageRef;
use std::path::{Path, PathBuf};

/// Groups `@TGS#g0`..: 40 messages each, seq 1..=40; one in 15 missing.
fn refs(groups: usize) -> Vec<GroupMessageRef> {
    (0..groups)
        .flat_map(|g| (1..=40).map(move |s| GroupMessageRef::new(&format!("@TGS#g{g}"), s)))
        .collect()
}

/// A group message of 300 pairs whose Seq runs straddle every page boundary.
fn big(group: &str, seq: i64) -> StoredMessage {
    let pairs = (0..300)
        .map(|i| StoredPair {
            key: format!("poll-{i:03}"),
            value: format!("vote, \"{i}\"\n"),
            seq: if i < 7 { 1 } else { 2 + (i as i64 - 7) / 20 },
        })
        .collect();
    StoredMessage::new(GroupMessageRef::new(group, seq), 0, pairs)
}

struct Setup {
    store: Store,
    server: MockServer,
    _dir: tempfile::TempDir,
    input: PathBuf,
    out: PathBuf,
}

async fn setup(faults: Faults, extra_input: &str) -> Setup {
    let mut store = Store::generate(&refs(3), 17, 15);
    store.messages.push(big("@TGS#big", 158));
    let server = crate::common::start_mock(store.clone(), faults, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("groups.csv");
    // The input lists every message of the generated groups (some missing
    // from the store), the big one, and a group that does not exist.
    let mut csv = String::from("MsgSeq,Note,GroupId\r\n");
    for r in refs(3) {
        csv.push_str(&format!("{},x,{}\r\n", r.msg_seq, r.group_id));
    }
    csv.push_str("158,big,@TGS#big\r\n7,gone,@TGS#nosuchgroup\r\n");
    csv.push_str(extra_input);
    std::fs::write(&input, csv).unwrap();
    let out = dir.path().join("lake");
    Setup {
        store,
        server,
        _dir: dir,
        input,
        out,
    }
}

fn args(s: &Setup, format: &str, run_id: &str) -> Vec<String> {
    let mut a = crate::common::export_args(&s.server.url(), &s.input, &s.out, format, run_id, 8);
    a.extend(["--max-file-mb".into(), "0.02".into()]);
    a
}

/// The messages of the input that the store does not hold.
fn missing(s: &Setup) -> Vec<(String, i64)> {
    let held: std::collections::HashSet<_> = s
        .store
        .messages
        .iter()
        .map(|m| crate::common::group_of(&m.id).clone())
        .collect();
    let mut out: Vec<_> = refs(3)
        .into_iter()
        .filter(|r| !held.contains(r))
        .map(|r| (r.group_id, r.msg_seq))
        .collect();
    out.push(("@TGS#nosuchgroup".into(), 7));
    out.sort();
    out
}

fn assert_exact(s: &Setup, out: &Path, ext: &str) {
    assert_eq!(
        crate::common::group_kv(out, ext),
        crate::common::expected_group_rows(&s.store.messages),
        "{ext}: exactly the simulator's pairs"
    );
    let msgs = crate::common::group_messages(out, ext);
    assert_eq!(msgs.len(), s.store.messages.len() + missing(s).len());
    let not_found: Vec<(String, i64)> = msgs
        .iter()
        .filter(|m| m.2 == "not_found")
        .map(|m| (m.0.clone(), m.1))
        .collect();
    assert_eq!(not_found, missing(s));
    for (g, seq, status, code) in &msgs {
        let want = match (g.as_str(), status.as_str()) {
            ("@TGS#nosuchgroup", _) => Some("10010"),
            (_, "not_found") => Some("23004"),
            _ => None,
        };
        assert_eq!(code.as_deref(), want, "{g} {seq} {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_messages_export_exactly_in_both_formats_with_an_errors_csv_to_feed_back() {
    let faults = Faults {
        p_10002: 0.05,
        ..Faults::default()
    };
    let s = setup(faults, "0,zero,@TGS#g0\r\nabc,nan,@TGS#g0\r\n5,empty,\r\n").await;
    // CSV into a lake of Delta tables is refused: its own folder.
    let csv_lake = s.out.with_file_name("csv-lake");
    for format in ["parquet", "csv"] {
        // Invalid rows alone: exit 0, with a warning.
        let mut a = args(&s, format, format);
        if format == "csv" {
            crate::common::set_arg(&mut a, "--out", &csv_lake.to_string_lossy());
        }
        let o = run_msgext(a, DEMO_SECRET_KEY, &[]).await;
        assert_eq!(o.status.code(), Some(0), "{format}: {}", show(&o));
        assert!(
            show(&o).contains("warning: 3 input rows were invalid"),
            "{format}: {}",
            show(&o)
        );
    }
    assert_exact(&s, &s.out, "parquet");
    assert_exact(&s, &csv_lake, "csv");
    assert!(
        !s.out.join("key_values").exists() && !s.out.join("messages").exists(),
        "a group run writes only the group tables"
    );
    let errors = crate::common::group_errors(&s.out, "parquet");
    let lines = refs(3).len() as u64;
    let mut invalid: Vec<_> = errors
        .iter()
        .filter(|e| e.2 == "invalid_input")
        .map(|e| e.3)
        .collect();
    invalid.sort();
    assert_eq!(invalid, [lines + 4, lines + 5, lines + 6], "{errors:?}");
    let not_found: Vec<_> = errors
        .iter()
        .filter(|e| e.2 != "invalid_input")
        .map(|e| (e.0.clone(), e.1.parse::<i64>().unwrap()))
        .collect();
    let mut want = missing(&s);
    want.sort();
    let mut got = not_found.clone();
    got.sort();
    assert_eq!(got, want);

    // errors.csv is a valid group --input whose final answers (the missing
    // messages, the invalid lines) are skipped, not asked again.
    let o = run_msgext(
        crate::common::export_args(
            &s.server.url(),
            &s.out.join("_runs/parquet/errors.csv"),
            &s.out,
            "parquet",
            "again",
            8,
        ),
        DEMO_SECRET_KEY,
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.out.join("_runs/again/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["messages"]["not_found"], 0);
    assert_eq!(summary["input"]["skipped"], 3 + want.len() as u64);
    assert_eq!(summary["requests"], 0, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_run_killed_midway_resumes_to_exactly_the_simulators_data() {
    let s = setup(Faults::default(), "").await;
    let o = run_msgext(
        args(&s, "parquet", "nightly"),
        DEMO_SECRET_KEY,
        &[("MSGEXT_FAILPOINT", "committed:2")],
    )
    .await;
    assert_eq!(o.status.code(), None, "killed: {}", show(&o));
    crate::common::assert_all_files_readable(&s.out);
    let o = run_msgext(args(&s, "parquet", "nightly"), DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_exact(&s, &s.out, "parquet");
    let rows = crate::common::group_kv(&s.out, "parquet");
    let mut dedup = rows.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), rows.len(), "no row twice");
    assert!(s.out.join("_runs/nightly/_SUCCESS").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_faults_are_retried_and_a_bad_request_fails_only_its_message() {
    let msgs = [
        GroupMessageRef::new("@TGS#f", 1),
        GroupMessageRef::new("@TGS#f", 2),
        GroupMessageRef::new("@TGS#f", 3),
    ];
    let pair = || {
        vec![StoredPair {
            key: "k".into(),
            value: "v".into(),
            seq: 1,
        }]
    };
    let mut flaky = StoredMessage::new(msgs[0].clone(), 0, pair());
    flaky.script = ["10002", "http_502", "drop", "60008"]
        .map(String::from)
        .to_vec();
    let mut bad = StoredMessage::new(msgs[1].clone(), 0, pair());
    bad.always = Some("10004".into());
    let plain = StoredMessage::new(msgs[2].clone(), 0, pair());
    let store = Store::new(vec![flaky, bad, plain]);
    let server = crate::common::start_mock(store.clone(), Faults::default(), 5).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("g.csv");
    std::fs::write(&input, store.input_csv(msgext::kind::Kind::Group)).unwrap();
    let out = dir.path().join("lake");
    let o = run_msgext(
        crate::common::export_args(&server.url(), &input, &out, "parquet", "f", 4),
        DEMO_SECRET_KEY,
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert_eq!(server.stats().calls_for(0), 5, "four faults, then the page");
    assert_eq!(server.stats().calls_for(1), 1, "10004 is not retried");
    let expected: Vec<_> = [&store.messages[0], &store.messages[2]]
        .into_iter()
        .collect();
    assert_eq!(
        crate::common::group_kv(&out, "parquet"),
        crate::common::expected_group_rows(expected)
    );
    let errors = crate::common::group_errors(&out, "f");
    assert_eq!(
        errors,
        [("@TGS#f".to_owned(), "2".to_owned(), "10004".to_owned(), 3)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_reads_group_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("g.csv");
    std::fs::write(
        &input,
        "\u{feff}groupid,msgseq\r\n@TGS#1,1\r\n@TGS#1,1\r\n@TGS#1,x\r\n,2\r\n@TGS#1, 3 \r\n",
    )
    .unwrap();
    let o = run_msgext(
        vec![
            "validate".into(),
            "--input".into(),
            input.to_string_lossy().into(),
        ],
        "",
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(
            "5 rows, 2 distinct messages, 1 duplicates, 2 invalid, 1 with spaces trimmed"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("line 4: MsgSeq must be a positive integer"),
        "{stdout}"
    );
    assert!(stdout.contains("line 5: GroupId is empty"), "{stdout}");
}
