//! Helpers shared by the integration tests: read a lake folder back with the
//! arrow/parquet and csv readers, independently of msgext's writers.
#![allow(dead_code)]

pub mod changed;
pub mod listener;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One key_values row, partition columns aside.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KvRow {
    pub from: Option<String>,
    pub to: String,
    pub msg_key: String,
    pub key: String,
    pub value: String,
    pub seq: i64,
    pub latest_seq: i64,
    pub clear_seq: i64,
}

/// One messages row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MsgRow {
    pub from: Option<String>,
    pub to: String,
    pub msg_key: String,
    pub status: String,
    pub kv_count: i64,
    pub attempts: i64,
    pub error_code: Option<String>,
}

/// Every data file below `dir` with this extension, skipping hidden staging files.
pub fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        // A Delta log's checkpoints are Parquet too, and no data file.
        if p.is_dir() && !p.ends_with("_delta_log") {
            out.extend(files(&p, ext));
        } else if p.extension().and_then(|e| e.to_str()) == Some(ext)
            && !p.file_name().unwrap().to_string_lossy().starts_with('.')
        {
            out.push(p);
        }
    }
    out.sort();
    out
}

pub fn parquet_batches(path: &Path) -> Vec<RecordBatch> {
    let f = std::fs::File::open(path).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

fn opt_str(b: &RecordBatch, name: &str, i: usize) -> Option<String> {
    let c = b.column_by_name(name).unwrap();
    (!c.is_null(i)).then(|| c.as_string::<i32>().value(i).to_owned())
}

fn int(b: &RecordBatch, name: &str, i: usize) -> i64 {
    b.column_by_name(name)
        .unwrap()
        .as_primitive::<Int64Type>()
        .value(i)
}

pub fn kv_from_parquet(out: &Path) -> Vec<KvRow> {
    let mut rows = Vec::new();
    for f in files(&out.join("key_values"), "parquet") {
        for b in parquet_batches(&f) {
            rows.extend(kv_rows_of(&b));
        }
    }
    rows.sort();
    rows
}

/// The `key_values` rows of a batch (of a file or of a Delta scan).
pub fn kv_rows_of(b: &RecordBatch) -> Vec<KvRow> {
    let ts = b
        .column_by_name("fetched_at")
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>();
    (0..b.num_rows())
        .map(|i| {
            assert!(
                ts.value(i) > 1_600_000_000_000_000,
                "fetched_at is µs since the epoch"
            );
            KvRow {
                from: opt_str(b, "from_account", i),
                to: opt_str(b, "to_account", i).unwrap(),
                msg_key: opt_str(b, "msg_key", i).unwrap(),
                key: opt_str(b, "key", i).unwrap(),
                value: opt_str(b, "value", i).unwrap(),
                seq: int(b, "seq", i),
                latest_seq: int(b, "latest_seq", i),
                clear_seq: int(b, "clear_seq", i),
            }
        })
        .collect()
}

/// A Delta table read through its log by the kernel's own scan (not a
/// glob of files): what Spark, DuckDB or delta-rs readers see.
pub fn delta_batches(
    store: std::sync::Arc<dyn object_store::ObjectStore>,
    table_url: &str,
) -> Vec<RecordBatch> {
    use delta_kernel::engine::arrow_data::ArrowEngineData;
    let engine: std::sync::Arc<dyn delta_kernel::Engine> =
        std::sync::Arc::new(delta_kernel_default_engine::DefaultEngineBuilder::new(store).build());
    let snapshot = delta_kernel::Snapshot::builder_for(table_url)
        .build(engine.as_ref())
        .unwrap_or_else(|e| panic!("{table_url}: {e}"));
    let scan = snapshot.scan_builder().build().unwrap();
    scan.execute(engine)
        .unwrap()
        .map(|d| {
            ArrowEngineData::try_from_engine_data(d.unwrap())
                .unwrap()
                .record_batch()
                .clone()
        })
        .collect()
}

/// A local Delta table's batches (`delta_batches` on the folder).
pub fn local_delta_batches(table: &Path) -> Vec<RecordBatch> {
    let url = reqwest::Url::from_directory_path(table).unwrap();
    delta_batches(
        std::sync::Arc::new(object_store::local::LocalFileSystem::new()),
        url.as_str(),
    )
}

/// Check a local lake's tables through their Delta logs: run `run_id` is in
/// exactly one commit of each table, which adds exactly its data files,
/// and `key_values` read through the log holds `want`.
pub fn assert_delta_exact(out: &Path, run_id: &str, want: &[KvRow]) {
    assert_eq!(kv_from_delta(out), want, "key_values through the Delta log");
    assert_run_committed_once(out, run_id);
}

/// Run `run_id` is in exactly one commit of each of the lake's one-to-one
/// tables, which adds exactly its files; the log's versions have no gaps.
pub fn assert_run_committed_once(out: &Path, run_id: &str) {
    let app_id = format!("msgext-run-{run_id}");
    for table in ["key_values", "messages"] {
        let commits = delta_commits(&out.join(table));
        let versions: Vec<u64> = commits.iter().map(|c| c.version).collect();
        assert_eq!(
            versions,
            (0..commits.len() as u64).collect::<Vec<_>>(),
            "{table}: no gaps"
        );
        let ours: Vec<&DeltaCommit> = commits
            .iter()
            .filter(|c| c.app_ids.contains(&app_id))
            .collect();
        assert_eq!(
            ours.len(),
            1,
            "{table}: run {run_id} in one commit: {commits:?}"
        );
        let mut adds = ours[0].adds.clone();
        adds.sort();
        let own = format!("/run_id={run_id}/");
        let mut files: Vec<String> = files(&out.join(table), "parquet")
            .iter()
            .map(|p| {
                p.strip_prefix(out.join(table))
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|p| p.contains(&own))
            .collect();
        files.sort();
        assert_eq!(
            adds, files,
            "{table}: the commit adds exactly the run's files"
        );
    }
}

/// The `key_values` rows of a local lake, read through the Delta log.
pub fn kv_from_delta(out: &Path) -> Vec<KvRow> {
    let mut rows: Vec<KvRow> = local_delta_batches(&out.join("key_values"))
        .iter()
        .flat_map(kv_rows_of)
        .collect();
    rows.sort();
    rows
}

/// One commit of a table's log, as written: its version, the `txn`
/// application ids and the files it adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaCommit {
    pub version: u64,
    pub app_ids: Vec<String>,
    pub adds: Vec<String>,
}

/// Every commit of a local table's log, in version order.
pub fn delta_commits(table: &Path) -> Vec<DeltaCommit> {
    let mut out = Vec::new();
    let log = std::fs::read_dir(table.join("_delta_log")).unwrap();
    let mut entries: Vec<PathBuf> = log.map(|e| e.unwrap().path()).collect();
    entries.sort();
    for f in entries
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
    {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let Some(version) = name.strip_suffix(".json").and_then(|v| v.parse().ok()) else {
            continue;
        };
        let mut commit = DeltaCommit {
            version,
            app_ids: Vec::new(),
            adds: Vec::new(),
        };
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let action: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(t) = action.get("txn") {
                commit.app_ids.push(t["appId"].as_str().unwrap().to_owned());
            }
            if let Some(a) = action.get("add") {
                commit.adds.push(a["path"].as_str().unwrap().to_owned());
            }
        }
        out.push(commit);
    }
    out.sort_by_key(|c| c.version);
    out
}

pub fn messages_from_parquet(out: &Path) -> Vec<MsgRow> {
    let mut rows = Vec::new();
    for f in files(&out.join("messages"), "parquet") {
        for b in parquet_batches(&f) {
            for i in 0..b.num_rows() {
                rows.push(MsgRow {
                    from: opt_str(&b, "from_account", i),
                    to: opt_str(&b, "to_account", i).unwrap(),
                    msg_key: opt_str(&b, "msg_key", i).unwrap(),
                    status: opt_str(&b, "status", i).unwrap(),
                    kv_count: int(&b, "kv_count", i),
                    attempts: int(&b, "attempts", i),
                    error_code: opt_str(&b, "error_code", i),
                });
            }
        }
    }
    rows.sort();
    rows
}

/// CSV files as maps from header to value, read with the csv crate.
pub fn csv_records(out: &Path, table: &str) -> Vec<BTreeMap<String, String>> {
    let mut rows = Vec::new();
    for f in files(&out.join(table), "csv") {
        let mut r = csv::Reader::from_path(&f).unwrap();
        let headers = r.headers().unwrap().clone();
        for rec in r.records() {
            let rec = rec.unwrap();
            assert_eq!(rec.len(), headers.len(), "{}", f.display());
            rows.push(
                headers
                    .iter()
                    .map(str::to_owned)
                    .zip(rec.iter().map(str::to_owned))
                    .collect(),
            );
        }
    }
    rows
}

fn none_if_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

pub fn kv_from_csv(out: &Path) -> Vec<KvRow> {
    let mut rows: Vec<KvRow> = csv_records(out, "key_values")
        .into_iter()
        .map(|r| {
            assert!(
                r["fetched_at"].ends_with('Z') && r["fetched_at"].contains('T'),
                "{}",
                r["fetched_at"]
            );
            KvRow {
                from: none_if_empty(&r["from_account"]),
                to: r["to_account"].clone(),
                msg_key: r["msg_key"].clone(),
                key: r["key"].clone(),
                value: r["value"].clone(),
                seq: r["seq"].parse().unwrap(),
                latest_seq: r["latest_seq"].parse().unwrap(),
                clear_seq: r["clear_seq"].parse().unwrap(),
            }
        })
        .collect();
    rows.sort();
    rows
}

pub fn messages_from_csv(out: &Path) -> Vec<MsgRow> {
    let mut rows: Vec<MsgRow> = csv_records(out, "messages")
        .into_iter()
        .map(|r| MsgRow {
            from: none_if_empty(&r["from_account"]),
            to: r["to_account"].clone(),
            msg_key: r["msg_key"].clone(),
            status: r["status"].clone(),
            kv_count: r["kv_count"].parse().unwrap(),
            attempts: r["attempts"].parse().unwrap(),
            error_code: none_if_empty(&r["error_code"]),
        })
        .collect();
    rows.sort();
    rows
}

/// A run's errors.csv, after checking its header, as (identity, identity,
/// error_code, line) tuples, sorted; `first` is where the two identity
/// columns shown start.
fn error_tuples(
    out: &Path,
    run_id: &str,
    header: &[&str],
    first: usize,
) -> Vec<(String, String, String, u64)> {
    let path = out.join("_runs").join(run_id).join("errors.csv");
    let mut r = csv::Reader::from_path(&path).unwrap();
    assert_eq!(r.headers().unwrap().iter().collect::<Vec<_>>(), header);
    let mut rows: Vec<_> = r
        .records()
        .map(|rec| {
            let rec = rec.unwrap();
            (
                rec[first].to_owned(),
                rec[first + 1].to_owned(),
                rec[first + 2].to_owned(),
                rec[first + 5].parse().unwrap(),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// errors.csv of a run as (To_Account, MsgKey, error_code, line) tuples, sorted.
pub fn errors(out: &Path, run_id: &str) -> Vec<(String, String, String, u64)> {
    let header = [
        "From_Account",
        "To_Account",
        "MsgKey",
        "error_code",
        "error_info",
        "attempts",
        "line",
    ];
    error_tuples(out, run_id, &header, 1)
}

/// The one-to-one identity of a stored message (a test's fixture is of that kind).
pub fn one_to_one(id: &msgext::kind::MessageId) -> &msgext::model::MessageRef {
    match id {
        msgext::kind::MessageId::OneToOne(m) => m,
        other => panic!("{other} is not a one-to-one message"),
    }
}

/// The group identity of a stored message.
pub fn group_of(id: &msgext::kind::MessageId) -> &msgext::model::GroupMessageRef {
    match id {
        msgext::kind::MessageId::Group(g) => g,
        other => panic!("{other} is not a group message"),
    }
}

/// The rows a correct export of these stored messages holds.
pub fn expected_rows<'a>(
    messages: impl IntoIterator<Item = &'a msgext::mock::store::StoredMessage>,
) -> Vec<KvRow> {
    let mut rows = Vec::new();
    for m in messages {
        let id = one_to_one(&m.id);
        for p in m.live_pairs() {
            rows.push(KvRow {
                from: id.from.clone(),
                to: id.to.clone(),
                msg_key: id.msg_key.clone(),
                key: p.key,
                value: p.value,
                seq: p.seq,
                latest_seq: m.latest_seq(),
                clear_seq: m.clear_seq,
            });
        }
    }
    rows.sort();
    rows
}

/// A CSV field, quoted when it must be (written independently of msgext's writer).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// An input CSV listing these messages, one per line from line 2.
pub fn input_csv(messages: &[msgext::model::MessageRef]) -> String {
    let field = |s: &str| csv_field(s);
    let mut out = String::from("From_Account,To_Account,MsgKey\n");
    for m in messages {
        out.push_str(&format!(
            "{},{},{}\n",
            field(m.from.as_deref().unwrap_or("")),
            field(&m.to),
            field(&m.msg_key)
        ));
    }
    out
}

/// A simulator serving the store generated for `msgs` (seed `seed`, every
/// message there) with `faults`, the input listing them and a lake folder
/// to export into.
pub struct Exporting {
    pub store: msgext::mock::store::Store,
    pub server: msgext::mock::MockServer,
    pub dir: tempfile::TempDir,
    pub input: PathBuf,
    pub out: PathBuf,
}

pub async fn exporting(
    msgs: &[msgext::model::MessageRef],
    seed: u64,
    faults: msgext::mock::Faults,
) -> Exporting {
    let store = msgext::mock::store::Store::generate(msgs, seed, 0);
    let server = start_mock(store.clone(), faults, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(&input, input_csv(msgs)).unwrap();
    let out = dir.path().join("lake");
    Exporting {
        store,
        server,
        dir,
        input,
        out,
    }
}

/// The arguments of `msgext export` against a simulator.
pub fn export_args(
    url: &str,
    input: &Path,
    out: &Path,
    format: &str,
    run_id: &str,
    concurrency: usize,
) -> Vec<String> {
    [
        "export",
        "--input",
        &input.to_string_lossy(),
        "--out",
        &out.to_string_lossy(),
        "--format",
        format,
        "--endpoint",
        url,
        "--sdkappid",
        &msgext::mock::DEMO_SDKAPPID.to_string(),
        "--rate",
        "0",
        "--concurrency",
        &concurrency.to_string(),
        "--run-id",
        run_id,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Give `flag` another value in `args` (it must be there).
pub fn set_arg(args: &mut [String], flag: &str, value: &str) {
    let at = args
        .iter()
        .position(|x| x == flag)
        .unwrap_or_else(|| panic!("{flag} in {args:?}"));
    args[at + 1] = value.to_owned();
}

/// The real binary with these arguments, the secret key, and extra environment.
pub fn msgext_command(
    args: &[String],
    secret: &str,
    env: &[(&str, &str)],
) -> std::process::Command {
    // Crash points and test sizes exist only in the tests' own build of
    // the binary; every other test runs the binary users run.
    let test_hooks = env
        .iter()
        .any(|(k, _)| *k == "MSGEXT_FAILPOINT" || k.starts_with("MSGEXT_TEST_"));
    let bin = if test_hooks {
        env!("CARGO_BIN_EXE_msgext-crashtest")
    } else {
        env!("CARGO_BIN_EXE_msgext")
    };
    let mut c = std::process::Command::new(bin);
    c.args(args)
        .env("MSGEXT_SECRET_KEY", secret)
        .env_remove("MSGEXT_USERSIG")
        .env_remove("MSGEXT_FAILPOINT")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// How long any one run of the binary in a test may take before the test
/// fails (and kills it): a guard against hangs, not a timing assertion.
pub const RUN_GUARD: std::time::Duration = std::time::Duration::from_secs(120);

/// Run the binary to the end (off the async runtime, which serves the
/// simulator). A run still going after `RUN_GUARD` is killed and the test fails.
pub async fn run_msgext(
    args: Vec<String>,
    secret: &str,
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut c = msgext_command(&args, secret, env);
    let child = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let waited = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap());
    match tokio::time::timeout(RUN_GUARD, waited).await {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("msgext {args:?} was still running after {RUN_GUARD:?}: it hangs");
        }
    }
}

pub fn show(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every final-named data file below `out` opens and reads to the end.
pub fn assert_all_files_readable(out: &Path) {
    for f in files(&out.join("key_values"), "parquet")
        .into_iter()
        .chain(files(&out.join("messages"), "parquet"))
    {
        parquet_batches(&f);
    }
    for table in ["key_values", "messages"] {
        csv_records(out, table);
    }
}

/// Start the binary, wait until the simulator has answered `answers` calls,
/// send `signal` (e.g. "-INT", "-KILL"), and return how the process ended.
pub async fn signal_midway(
    mut cmd: std::process::Command,
    stats: &msgext::mock::MockStats,
    answers: u64,
    signal: &str,
) -> std::process::ExitStatus {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_answers(stats, answers).await;
    let sent = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap()
}

/// The simulator on a free port of 127.0.0.1, with these faults (seeded).
pub async fn start_mock(
    store: msgext::mock::store::Store,
    faults: msgext::mock::Faults,
    seed: u64,
) -> msgext::mock::MockServer {
    let config = msgext::mock::MockConfig {
        faults,
        seed,
        ..msgext::mock::MockConfig::default()
    };
    msgext::mock::MockServer::start(store, config, ([127, 0, 0, 1], 0).into())
        .await
        .unwrap()
}

/// Wait until the simulator has answered `n` calls. Guarded: if the export
/// died early, the test fails instead of waiting forever.
pub async fn wait_for_answers(stats: &msgext::mock::MockStats, n: u64) {
    tokio::time::timeout(
        std::time::Duration::from_secs(120),
        stats.wait_for_answers(n),
    )
    .await
    .unwrap_or_else(|_| panic!("the export never got {n} answers"));
}

/// One group_key_values row, partition columns aside.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupKvRow {
    pub group_id: String,
    pub msg_seq: i64,
    pub key: String,
    pub value: String,
    pub seq: i64,
    pub latest_seq: i64,
    pub clear_seq: i64,
}

/// One group_messages row: (group_id, msg_seq, status, error_code).
pub type GroupMsgRow = (String, i64, String, Option<String>);

/// The group_key_values rows of one batch.
pub fn group_kv_rows_of(b: &RecordBatch) -> Vec<GroupKvRow> {
    (0..b.num_rows())
        .map(|i| GroupKvRow {
            group_id: opt_str(b, "group_id", i).unwrap(),
            msg_seq: int(b, "msg_seq", i),
            key: opt_str(b, "key", i).unwrap(),
            value: opt_str(b, "value", i).unwrap(),
            seq: int(b, "seq", i),
            latest_seq: int(b, "latest_seq", i),
            clear_seq: int(b, "clear_seq", i),
        })
        .collect()
}

/// The `group_key_values` rows of a local lake, read through the Delta log.
pub fn group_kv_from_delta(out: &Path) -> Vec<GroupKvRow> {
    let mut rows: Vec<GroupKvRow> = local_delta_batches(&out.join("group_key_values"))
        .iter()
        .flat_map(group_kv_rows_of)
        .collect();
    rows.sort();
    rows
}

/// group_key_values read back with the parquet (`ext` "parquet") or csv reader.
pub fn group_kv(out: &Path, ext: &str) -> Vec<GroupKvRow> {
    let mut rows = Vec::new();
    if ext == "parquet" {
        for f in files(&out.join("group_key_values"), "parquet") {
            for b in parquet_batches(&f) {
                rows.extend(group_kv_rows_of(&b));
            }
        }
    } else {
        for r in csv_records(out, "group_key_values") {
            rows.push(GroupKvRow {
                group_id: r["group_id"].clone(),
                msg_seq: r["msg_seq"].parse().unwrap(),
                key: r["key"].clone(),
                value: r["value"].clone(),
                seq: r["seq"].parse().unwrap(),
                latest_seq: r["latest_seq"].parse().unwrap(),
                clear_seq: r["clear_seq"].parse().unwrap(),
            });
        }
    }
    rows.sort();
    rows
}

/// group_messages read back with the parquet or csv reader.
pub fn group_messages(out: &Path, ext: &str) -> Vec<GroupMsgRow> {
    let mut rows = Vec::new();
    if ext == "parquet" {
        for f in files(&out.join("group_messages"), "parquet") {
            for b in parquet_batches(&f) {
                for i in 0..b.num_rows() {
                    rows.push((
                        opt_str(&b, "group_id", i).unwrap(),
                        int(&b, "msg_seq", i),
                        opt_str(&b, "status", i).unwrap(),
                        opt_str(&b, "error_code", i),
                    ));
                }
            }
        }
    } else {
        for r in csv_records(out, "group_messages") {
            rows.push((
                r["group_id"].clone(),
                r["msg_seq"].parse().unwrap(),
                r["status"].clone(),
                none_if_empty(&r["error_code"]),
            ));
        }
    }
    rows.sort();
    rows
}

/// The group rows a correct export of these stored messages holds.
pub fn expected_group_rows<'a>(
    messages: impl IntoIterator<Item = &'a msgext::mock::store::StoredMessage>,
) -> Vec<GroupKvRow> {
    let mut rows = Vec::new();
    for m in messages {
        let g = group_of(&m.id);
        for p in m.live_pairs() {
            rows.push(GroupKvRow {
                group_id: g.group_id.clone(),
                msg_seq: g.msg_seq,
                key: p.key,
                value: p.value,
                seq: p.seq,
                latest_seq: m.latest_seq(),
                clear_seq: m.clear_seq,
            });
        }
    }
    rows.sort();
    rows
}

/// A group run's errors.csv as (GroupId, MsgSeq, error_code, line), sorted; checks its header.
pub fn group_errors(out: &Path, run_id: &str) -> Vec<(String, String, String, u64)> {
    let header = [
        "GroupId",
        "MsgSeq",
        "error_code",
        "error_info",
        "attempts",
        "line",
    ];
    error_tuples(out, run_id, &header, 0)
}

/// Every row of a local Delta table read through its log, each as text
/// (columns joined by `|`, null `∅`), sorted: two reads compare whole.
pub fn delta_rows(table: &Path) -> Vec<String> {
    delta_rows_at(table, None)
}

/// `delta_rows` of the table as it stood at `version` (none: the latest).
pub fn delta_rows_at(table: &Path, version: Option<u64>) -> Vec<String> {
    use delta_kernel::arrow::util::display::{ArrayFormatter, FormatOptions};
    use delta_kernel::engine::arrow_data::ArrowEngineData;
    let opts = FormatOptions::default().with_null("∅");
    let url = reqwest::Url::from_directory_path(table).unwrap();
    let store = std::sync::Arc::new(object_store::local::LocalFileSystem::new());
    let engine: std::sync::Arc<dyn delta_kernel::Engine> =
        std::sync::Arc::new(delta_kernel_default_engine::DefaultEngineBuilder::new(store).build());
    let mut builder = delta_kernel::Snapshot::builder_for(url.as_str());
    if let Some(v) = version {
        builder = builder.at_version(v);
    }
    let snapshot = builder
        .build(engine.as_ref())
        .unwrap_or_else(|e| panic!("{} at {version:?}: {e}", table.display()));
    let batches = snapshot
        .scan_builder()
        .build()
        .unwrap()
        .execute(engine)
        .unwrap();
    let mut out = Vec::new();
    for b in batches {
        let b = ArrowEngineData::try_from_engine_data(b.unwrap()).unwrap();
        let b = b.record_batch();
        let columns: Vec<ArrayFormatter> = (b.columns().iter())
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
            .collect();
        for i in 0..b.num_rows() {
            let row: Vec<String> = columns.iter().map(|c| c.value(i).to_string()).collect();
            out.push(row.join("|"));
        }
    }
    out.sort();
    out
}

/// Every Delta table of a local lake (a folder with `_delta_log`), read
/// through its log: table name → `delta_rows`.
pub fn lake_rows(out: &Path) -> BTreeMap<String, Vec<String>> {
    let mut tables = BTreeMap::new();
    for e in std::fs::read_dir(out).unwrap() {
        let path = e.unwrap().path();
        if path.join("_delta_log").is_dir() {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            tables.insert(name, delta_rows(&path));
        }
    }
    tables
}

/// The data files a local table's latest version references, read by the
/// kernel: path (relative to the table, as the log encodes it) → size.
pub fn live_files(table: &Path) -> BTreeMap<String, u64> {
    let url = reqwest::Url::from_directory_path(table).unwrap();
    let store = std::sync::Arc::new(object_store::local::LocalFileSystem::new());
    let engine = delta_kernel_default_engine::DefaultEngineBuilder::new(store).build();
    let snapshot = delta_kernel::Snapshot::builder_for(url.as_str())
        .build(&engine)
        .unwrap_or_else(|e| panic!("{}: {e}", table.display()));
    let scan = snapshot.scan_builder().build().unwrap();
    let mut out = BTreeMap::new();
    for meta in scan.scan_metadata(&engine).unwrap() {
        let files = meta
            .unwrap()
            .visit_scan_files(Vec::new(), |v: &mut Vec<(String, i64)>, f| {
                v.push((f.path, f.size))
            })
            .unwrap();
        out.extend(files.into_iter().map(|(p, s)| (p, s as u64)));
    }
    out
}

/// The data files in a local table's folders (not its log): path → size.
pub fn files_on_disk(table: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![table.to_owned()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(table)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel.starts_with("_delta_log") {
                continue;
            }
            match e.file_type().unwrap().is_dir() {
                true => dirs.push(e.path()),
                false => {
                    out.insert(rel, e.metadata().unwrap().len());
                }
            }
        }
    }
    out
}
