//! Cron-grade runs: killed at any point (a failpoint aborts the process the
//! way `kill -9` would, or a real SIGKILL), the same command again ends with
//! exactly the simulator's data, no duplicate row, every file readable at
//! every moment, and only in-flight messages fetched twice. One run at a time
//! per folder. errors.csv fed back exports just the failed messages.

mod common;

use common::{export_args, run_msgext, show};
use msgext::mock::store::Store;
use msgext::mock::{DEMO_SECRET_KEY, Faults, MockServer};
use msgext::model::MessageRef;
use std::path::Path;

const CONCURRENCY: usize = 8;
/// What can be fetched but not yet durable when the process dies: the
/// messages being fetched, the writer's queue and one group commit of the WAL.
const IN_FLIGHT: usize = CONCURRENCY + msgext::export::EVENT_QUEUE + msgext::export::GROUP_COMMIT;

fn refs(n: usize, tag: &str) -> Vec<MessageRef> {
    (0..n)
        .map(|i| {
            MessageRef::new(
                if i % 9 == 0 { None } else { Some("snd") },
                &format!("{tag}{i}"),
                &format!("{i}_7_7"),
            )
        })
        .collect()
}

async fn serve(store: Store, latency_ms: u64) -> MockServer {
    let faults = Faults {
        latency_ms,
        ..Faults::default()
    };
    common::start_mock(store, faults, 1).await
}

type Setup = common::Exporting;

async fn setup(n: usize, latency_ms: u64) -> Setup {
    let faults = Faults {
        latency_ms,
        ..Faults::default()
    };
    common::exporting(&refs(n, "to"), 11, faults).await
}

fn args(s: &Setup, format: &str) -> Vec<String> {
    let mut a = export_args(
        &s.server.url(),
        &s.input,
        &s.out,
        format,
        "nightly",
        CONCURRENCY,
    );
    // Small parts, so that a run has many files and many checkpoints.
    a.extend(["--max-file-mb".into(), "0.03".into()]);
    a
}

/// Messages the simulator answered more often than one fetch needs.
fn fetched_twice(s: &Setup, out: &Path) -> usize {
    let msgs = common::messages_from_parquet(out);
    s.store
        .messages
        .iter()
        .enumerate()
        .filter(|(i, m)| {
            let row = msgs
                .iter()
                .find(|r| r.to == common::one_to_one(&m.id).to)
                .unwrap();
            s.server.stats().calls_for(*i) as i64 > row.attempts
        })
        .count()
}

/// After the crash and the resume: the whole truth, checked against the simulator.
fn assert_exact(s: &Setup, out: &Path) {
    assert_exact_run(s, out, "nightly");
}

fn assert_exact_run(s: &Setup, out: &Path, run_id: &str) {
    common::assert_all_files_readable(out);
    let rows = common::kv_from_parquet(out);
    let mut dedup = rows.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), rows.len(), "no duplicate row");
    assert_eq!(
        rows,
        common::expected_rows(&s.store.messages),
        "exactly the simulator's data"
    );
    let msgs = common::messages_from_parquet(out);
    assert_eq!(
        msgs.len(),
        s.store.messages.len(),
        "one messages row per message"
    );
    assert!(msgs.iter().all(|m| m.status == "ok"));
    assert!(out.join("_runs").join(run_id).join("_SUCCESS").exists());
    assert_summary_matches_files(out, run_id);
    common::assert_delta_exact(out, run_id, &rows);
}

/// summary.json and manifest.json list exactly the files on disk, with their rows, bytes and sha256.
fn assert_summary_matches_files(out: &Path, run_id: &str) {
    use sha2::Digest;
    let run = out.join("_runs").join(run_id);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("summary.json")).unwrap()).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(summary["files"], manifest["files"]);
    let listed: Vec<String> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_owned())
        .collect();
    let mut on_disk: Vec<String> = ["key_values", "messages"]
        .iter()
        .flat_map(|t| common::files(&out.join(t), "parquet"))
        .map(|p| p.strip_prefix(out).unwrap().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(
        sorted, on_disk,
        "the manifest lists every file and only them"
    );
    let mut kv_rows = 0;
    for f in manifest["files"].as_array().unwrap() {
        let path = out.join(f["path"].as_str().unwrap());
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(f["bytes"], bytes.len() as u64, "{}", path.display());
        let sha: String = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(f["sha256"], sha, "{}", path.display());
        let rows: usize = common::parquet_batches(&path)
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(f["rows"], rows as u64, "{}", path.display());
        if f["path"].as_str().unwrap().starts_with("key_values/") {
            kv_rows += rows as u64;
        }
    }
    assert_eq!(summary["kv_rows"], kv_rows);
    assert_eq!(
        summary["messages"]["ok"].as_u64().unwrap()
            + summary["messages"]["not_found"].as_u64().unwrap()
            + summary["messages"]["failed"].as_u64().unwrap(),
        common::messages_from_parquet(out).len() as u64
    );
}

/// Run the export until the failpoint aborts it, as `kill -9` would.
async fn killed_at(s: &Setup, format: &str, failpoint: &str) {
    let o = run_msgext(
        args(s, format),
        DEMO_SECRET_KEY,
        &[("MSGEXT_FAILPOINT", failpoint)],
    )
    .await;
    assert_eq!(
        o.status.code(),
        None,
        "{failpoint}: killed by the failpoint: {}",
        show(&o)
    );
}

async fn crash_then_resume(failpoint: &str) {
    let s = setup(240, 0).await;
    killed_at(&s, "parquet", failpoint).await;
    // Every file at a final name is complete, even now.
    common::assert_all_files_readable(&s.out);
    let before = common::kv_from_parquet(&s.out).len();
    let calls_before: Vec<u32> = (0..s.store.messages.len())
        .map(|i| s.server.stats().calls_for(i))
        .collect();
    let o = run_msgext(args(&s, "parquet"), DEMO_SECRET_KEY, &[]).await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "{failpoint}: resumed: {}",
        show(&o)
    );
    assert_exact(&s, &s.out);
    let twice = fetched_twice(&s, &s.out);
    eprintln!("{failpoint}: {twice} of 240 messages fetched twice");
    assert!(
        twice <= IN_FLIGHT,
        "{failpoint}: {twice} messages fetched twice (rows before: {before})"
    );
    let summary = std::fs::read_to_string(s.out.join("_runs/nightly/summary.json")).unwrap();
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    // The summary's "resumed" is exactly the messages the second attempt did not fetch.
    let fetched_by_resume = calls_before
        .iter()
        .enumerate()
        .filter(|(i, before)| s.server.stats().calls_for(*i) > **before)
        .count() as u64;
    assert_eq!(
        summary["messages"]["resumed"].as_u64().unwrap(),
        240 - fetched_by_resume,
        "{failpoint}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_before_the_first_file() {
    crash_then_resume("settled:1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_file() {
    crash_then_resume("settled:25").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_sealing_before_the_ledger() {
    crash_then_resume("sealed:2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_the_ledger_and_the_rename() {
    crash_then_resume("committed:2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_files() {
    crash_then_resume("published:3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_the_final_commit() {
    crash_then_resume("before_success").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_before_the_delta_commits() {
    crash_then_resume("before_delta_commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_the_two_tables_commits() {
    crash_then_resume("between_delta_commits").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_delta_commits_before_the_reports() {
    crash_then_resume("after_delta_commits").await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_kill_9_midway_then_the_same_command() {
    let s = setup(240, 40).await;
    let cmd = common::msgext_command(&args(&s, "parquet"), DEMO_SECRET_KEY, &[]);
    let status = common::signal_midway(cmd, s.server.stats(), 120, "-KILL").await;
    assert_eq!(status.code(), None, "killed");
    common::assert_all_files_readable(&s.out);
    let o = run_msgext(args(&s, "parquet"), DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_exact(&s, &s.out);
    assert!(fetched_twice(&s, &s.out) <= IN_FLIGHT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_output_resumes_the_same_way() {
    let s = setup(120, 0).await;
    killed_at(&s, "csv", "committed:2").await;
    let o = run_msgext(args(&s, "csv"), DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(
        common::kv_from_csv(&s.out),
        common::expected_rows(&s.store.messages)
    );
    assert_eq!(common::messages_from_csv(&s.out).len(), 120);
    // Resuming with another format would mix formats in one run: refused.
    let o = run_msgext(
        export_args(
            &s.server.url(),
            &s.input,
            &s.out,
            "parquet",
            "other",
            CONCURRENCY,
        ),
        DEMO_SECRET_KEY,
        &[("MSGEXT_FAILPOINT", "settled:1")],
    )
    .await;
    assert_eq!(o.status.code(), None);
    let o = run_msgext(
        export_args(
            &s.server.url(),
            &s.input,
            &s.out,
            "csv",
            "other",
            CONCURRENCY,
        ),
        DEMO_SECRET_KEY,
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("the format differs (then parquet, now csv)"),
        "{}",
        show(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_on_the_same_folder_is_refused_and_disturbs_nothing() {
    let s = setup(200, 50).await;
    let first = common::msgext_command(&args(&s, "parquet"), DEMO_SECRET_KEY, &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_for_answers(s.server.stats(), 20).await;
    let mut second = export_args(
        &s.server.url(),
        &s.input,
        &s.out,
        "parquet",
        "intruder",
        CONCURRENCY,
    );
    second.extend(["--quiet".into()]);
    let o = run_msgext(second, DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("in use by run nightly"), "{stderr}");
    assert!(
        !s.out.join("_runs/intruder").exists(),
        "the second run touched nothing"
    );
    let o = tokio::task::spawn_blocking(move || first.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_exact(&s, &s.out);
    assert_eq!(fetched_twice(&s, &s.out), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_csv_fed_back_exports_exactly_the_failed_messages() {
    let msgs = refs(60, "re");
    let mut store = Store::generate(&msgs, 3, 0);
    // Ten messages fail the first run (8 attempts of 10002), then work.
    for m in store.messages.iter_mut().take(10) {
        m.script = vec!["10002".into(); 8];
    }
    let server = serve(store.clone(), 0).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    let mut csv = common::input_csv(&msgs);
    // An invalid row, and a message the API does not know (23004).
    csv.push_str("x,,broken\nx,nobody,404_4_4\n");
    std::fs::write(&input, csv).unwrap();
    let out = dir.path().join("lake");
    let o = run_msgext(
        export_args(&server.url(), &input, &out, "parquet", "first", CONCURRENCY),
        DEMO_SECRET_KEY,
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    let errors = common::errors(&out, "first");
    assert_eq!(
        errors.len(),
        12,
        "10 failed + 1 invalid + 1 not found: {errors:?}"
    );
    let calls_before = server.stats().calls();

    let refeed = out.join("_runs/first/errors.csv");
    let o = run_msgext(
        export_args(
            &server.url(),
            &refeed,
            &out,
            "parquet",
            "second",
            CONCURRENCY,
        ),
        DEMO_SECRET_KEY,
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("2 rows of an earlier errors.csv skipped (invalid or not found)"),
        "{stdout}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_runs/second/summary.json")).unwrap())
            .unwrap();
    assert_eq!(
        (
            &summary["messages"]["ok"],
            &summary["messages"]["not_found"],
            &summary["input"]["skipped"]
        ),
        (&10.into(), &0.into(), &2.into()),
        "the failed ten are asked again, the message not found is not: {summary}"
    );
    assert!(server.stats().calls() > calls_before);
    // The second run's partition holds exactly the ten messages' data.
    let second: Vec<_> = common::kv_from_parquet(&out)
        .into_iter()
        .filter(|r| {
            store.messages[..10]
                .iter()
                .any(|m| common::one_to_one(&m.id).to == r.to)
        })
        .collect();
    assert_eq!(
        second,
        common::expected_rows(&store.messages[..10]),
        "the failed ten, once"
    );
    let second_part = common::files(&out.join("key_values"), "parquet")
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("run_id=second"))
        .flat_map(|p| common::parquet_batches(&p))
        .map(|b| b.num_rows())
        .sum::<usize>();
    assert_eq!(
        second_part,
        second.len(),
        "the second run wrote just those rows"
    );
    let all = common::kv_from_parquet(&out);
    assert_eq!(
        all,
        common::expected_rows(&store.messages),
        "both runs together: everything once"
    );
    let second_msgs = common::messages_from_parquet(&out)
        .into_iter()
        .filter(|m| m.status == "ok")
        .count();
    assert_eq!(second_msgs, 60);
}

/// The run's summary.json.
fn summary_of(out: &Path, run_id: &str) -> serde_json::Value {
    let text =
        std::fs::read_to_string(out.join("_runs").join(run_id).join("summary.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_failure_ends_the_run_at_once_with_its_cause_and_frees_the_folder() {
    let s = setup(240, 0).await;
    // The messages table cannot be created: a file stands where its folder goes
    // (as a full disk or a folder turned read-only would fail it), while most
    // of the input is still to be read.
    std::fs::create_dir_all(&s.out).unwrap();
    let blocker = s.out.join("messages");
    std::fs::write(&blocker, "not a folder").unwrap();
    let o = run_msgext(args(&s, "parquet"), DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&*blocker.to_string_lossy()) && stderr.contains("os error"),
        "the cause, with the path and the OS error: {stderr}"
    );
    assert!(!s.out.join("_runs/nightly/_SUCCESS").exists());
    // The lock went with the process, and the same command finishes the job.
    std::fs::remove_file(&blocker).unwrap();
    let o = run_msgext(args(&s, "parquet"), DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_exact(&s, &s.out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_worker_or_input_reader_fails_the_run_and_the_same_command_completes_it() {
    for failpoint in ["panic-worker:5", "panic-input:7"] {
        let s = setup(240, 0).await;
        let o = run_msgext(
            args(&s, "parquet"),
            DEMO_SECRET_KEY,
            &[("MSGEXT_FAILPOINT", failpoint)],
        )
        .await;
        assert_eq!(o.status.code(), Some(1), "{failpoint}: {}", show(&o));
        assert!(
            !s.out.join("_runs/nightly/_SUCCESS").exists(),
            "{failpoint}: a lost message is never a success"
        );
        let summary = summary_of(&s.out, "nightly");
        assert_eq!(summary["status"], "failed", "{failpoint}: {summary}");
        assert!(
            summary["stop_reason"].as_str().unwrap().contains("crashed"),
            "{failpoint}: {summary}"
        );
        let o = run_msgext(args(&s, "parquet"), DEMO_SECRET_KEY, &[]).await;
        assert_eq!(o.status.code(), Some(0), "{failpoint}: {}", show(&o));
        assert_exact(&s, &s.out);
    }
}

/// The `run_id=` partitions of the key_values table.
fn run_partitions(out: &Path) -> Vec<String> {
    let mut ids = Vec::new();
    let days = std::fs::read_dir(out.join("key_values")).unwrap().flatten();
    for day in days.filter(|d| d.file_name().to_string_lossy().starts_with("dt=")) {
        for run in std::fs::read_dir(day.path()).unwrap().flatten() {
            ids.push(run.file_name().to_string_lossy().into_owned());
        }
    }
    ids
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_command_resumes_without_a_run_id_and_ctrl_c_says_how() {
    let s = setup(240, 40).await;
    // Some messages are listed a second time without their sender, before
    // the row with it: one message each, exported once.
    let mut input = std::fs::read_to_string(&s.input).unwrap();
    let extra: String = s.store.messages[1..6]
        .iter()
        .map(|m| common::one_to_one(&m.id))
        .map(|m| format!(",{},{}\n", m.to, m.msg_key))
        .collect();
    input.insert_str(input.find('\n').unwrap() + 1, &extra);
    std::fs::write(&s.input, input).unwrap();
    let mut a = args(&s, "parquet");
    let i = a.iter().position(|x| x == "--run-id").unwrap();
    a.drain(i..i + 2);

    let child = common::msgext_command(&a, DEMO_SECRET_KEY, &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_for_answers(s.server.stats(), 60).await;
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let o = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let hint = stderr
        .lines()
        .find_map(|l| l.strip_prefix("msgext: to resume: "))
        .unwrap_or_else(|| panic!("Ctrl-C prints the command that resumes: {stderr}"));
    let first = run_partitions(&s.out);
    assert_eq!(first.len(), 1, "{first:?}");
    let run_id = first[0].strip_prefix("run_id=").unwrap().to_owned();
    assert!(
        hint.ends_with(&format!("--run-id {run_id}")),
        "{hint} names run {run_id}"
    );

    // The same command, no --run-id: the unfinished run is taken up again.
    let o = run_msgext(a.clone(), DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!("resuming run {run_id}")),
        "{}",
        show(&o)
    );
    assert_eq!(run_partitions(&s.out), first, "one run, not two");
    assert_exact_run(&s, &s.out, &run_id);
    let summary = summary_of(&s.out, &run_id);
    assert_eq!(summary["input"]["duplicates"], 5, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_with_another_input_or_endpoint_is_refused_and_says_what_differs() {
    let s = setup(240, 0).await;
    killed_at(&s, "parquet", "committed:1").await;
    let original = std::fs::read_to_string(&s.input).unwrap();
    std::fs::write(&s.input, format!("{original}snd,late,9_9_9\n")).unwrap();
    let o = run_msgext(args(&s, "parquet"), DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("the input differs"),
        "{}",
        show(&o)
    );
    std::fs::write(&s.input, &original).unwrap();

    let elsewhere = serve(s.store.clone(), 0).await;
    let mut a = args(&s, "parquet");
    let e = a.iter().position(|x| x == "--endpoint").unwrap();
    a[e + 1] = elsewhere.url();
    let o = run_msgext(a, DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("the endpoint differs"),
        "{}",
        show(&o)
    );
    assert_eq!(elsewhere.stats().calls(), 0);

    // With what it was started with, it resumes and completes.
    let o = run_msgext(args(&s, "parquet"), DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_exact(&s, &s.out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_state_dir_the_control_files_stay_there_and_the_reports_go_to_the_lake() {
    let s = setup(240, 0).await;
    let state = s.out.with_file_name("state");
    let mut a = args(&s, "parquet");
    a.extend(["--state-dir".into(), state.to_string_lossy().into_owned()]);
    let o = run_msgext(
        a.clone(),
        DEMO_SECRET_KEY,
        &[("MSGEXT_FAILPOINT", "committed:2")],
    )
    .await;
    assert_eq!(o.status.code(), None, "killed: {}", show(&o));
    let o = run_msgext(a, DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_exact(&s, &s.out);
    for control in ["run.json", "ledger.jsonl"] {
        assert!(state.join("nightly").join(control).exists(), "{control}");
        assert!(
            !s.out.join("_runs/nightly").join(control).exists(),
            "{control}"
        );
    }
    assert!(state.join(".lock").exists());
    assert!(s.out.join("_runs/nightly/errors.csv").exists());
}

/// A night of callbacks of both kinds (sets, deletes, clears, growth).
fn callbacks() -> Vec<msgext::api::callback::ExtensionEvent> {
    use msgext::kind::{GroupMessageRef, MessageId};
    let mut ids: Vec<MessageId> = refs(30, "cb").into_iter().map(Into::into).collect();
    ids.extend((1..=30).map(|i| MessageId::from(GroupMessageRef::new("@TGS#crash", i))));
    let mut store = Store::generate(&ids, 5, 0);
    let changes = store.random_changes(9, 1.0);
    let events = store.apply_with_events(&changes, 1);
    assert!(events.len() > 100, "{}", events.len());
    events
}

/// Killed at `failpoint` while committing on SIGTERM, started again on the
/// same state folder: every acknowledged callback is in the tables once.
async fn listener_killed_at(failpoint: &str) {
    use common::listener::{self, event_rows, rows_of};
    let events = callbacks();
    // Both halves hold both kinds.
    let half = |from: usize| -> Vec<_> { events.iter().skip(from).step_by(2).cloned().collect() };
    let (first, second) = (&half(0)[..], &half(1)[..]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lake");
    let state = listener::state(dir.path(), 0);
    let l = listener::start(
        &out,
        &state,
        &["--commit-every", "1h"],
        &[("MSGEXT_FAILPOINT", failpoint)],
    );
    let d = l.deliver(first).await;
    assert_eq!(d.ok, first.len() as u64);
    let (code, err) = l.signal("-TERM").await;
    assert_eq!(code, None, "killed at {failpoint}: {err}");
    let l = listener::start(&out, &state, &[], &[]);
    let d = l.deliver(second).await;
    assert_eq!(d.ok, second.len() as u64);
    l.stop().await;
    let of = |group: bool| -> Vec<_> {
        let v: Vec<_> = events
            .iter()
            .filter(|e| matches!(e.message, msgext::kind::MessageId::Group(_)) == group)
            .collect();
        rows_of(&v)
    };
    assert_eq!(event_rows(&out, false), of(false), "killed at {failpoint}");
    assert_eq!(event_rows(&out, true), of(true), "killed at {failpoint}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_killed_before_its_commit_commits_each_event_once() {
    listener_killed_at("listen_before_commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_killed_between_its_two_tables_commits_each_event_once() {
    listener_killed_at("listen_committed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_killed_after_its_commits_before_forgetting_commits_each_event_once() {
    listener_killed_at("listen_committed:2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_killed_with_sigkill_keeps_every_acknowledged_event() {
    use common::listener::{self, event_rows, rows_of};
    let events = callbacks();
    let (first, second) = events.split_at(events.len() / 3);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lake");
    let state = listener::state(dir.path(), 0);
    let l = listener::start(&out, &state, &["--commit-every", "1h"], &[]);
    assert_eq!(l.deliver(first).await.ok, first.len() as u64);
    let (code, _) = l.signal("-KILL").await;
    assert_eq!(code, None);
    let l = listener::start(&out, &state, &[], &[]);
    assert_eq!(l.deliver(second).await.ok, second.len() as u64);
    l.stop().await;
    let all: Vec<_> = events
        .iter()
        .filter(|e| matches!(e.message, msgext::kind::MessageId::OneToOne(_)))
        .collect();
    assert_eq!(event_rows(&out, false), rows_of(&all));
    let all: Vec<_> = events
        .iter()
        .filter(|e| matches!(e.message, msgext::kind::MessageId::Group(_)))
        .collect();
    assert_eq!(event_rows(&out, true), rows_of(&all));
}

/// `export --changed` killed at `failpoint` of its first kind's run, then
/// the same command: it resumes that run with the same list, the events
/// are consumed once (a third run finds nothing), and what they named
/// equals a full read.
async fn changed_killed_at(failpoint: &str) {
    use common::listener;
    let mut n = common::changed::Nights::backfill().await;
    let events = n.change(7, 0.5).await;
    let l = listener::start(&n.out, &listener::state(n.dir.path(), 0), &[], &[]);
    assert_eq!(l.deliver(&events).await.failed, 0);
    l.stop().await;
    let quiet = ["--sweep-runs", "0"];
    n.changed_env(&quiet, &[("MSGEXT_FAILPOINT", failpoint)], None)
        .await;
    let err = n.changed(&quiet).await;
    assert!(err.contains("resuming run"), "killed at {failpoint}: {err}");
    let named = events.iter().map(|e| e.message.clone()).collect();
    n.assert_full_read(Some(&named), failpoint);
    let err = n.changed(&quiet).await;
    assert_eq!(
        err.matches("nothing to read").count(),
        2,
        "killed at {failpoint}: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_killed_before_its_current_commits_resumes_its_list() {
    changed_killed_at("after_delta_commits").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_killed_between_its_current_commits_consumes_its_events_once() {
    changed_killed_at("between_current_commits").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_killed_after_its_current_commits_consumes_its_events_once() {
    changed_killed_at("after_current_commits").await;
}
