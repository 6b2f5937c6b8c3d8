//! Delta Lake tables, read back through the kernel's own scan (the log, not
//! a glob): each run is one commit per table, exactly once; runs of several
//! days and apps add up; a lake that is not the run's (a plain lake, a
//! Delta lake for a plain run, another tool's table) is refused before any
//! API call.

use crate::common::{export_args, run_msgext, show};
use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use msgext::mock::{DEMO_SDKAPPID, DEMO_SECRET_KEY, Faults};
use msgext::model::MessageRef;
use std::path::Path;

type Setup = crate::common::Exporting;

async fn setup(n: usize) -> Setup {
    let msgs: Vec<MessageRef> = (0..n)
        .map(|i| MessageRef::new(Some("s"), &format!("u{i}"), &format!("{i}_1_1")))
        .collect();
    crate::common::exporting(&msgs, 5, Faults::default()).await
}

fn args(s: &Setup, run_id: &str, extra: &[&str]) -> Vec<String> {
    let mut a = export_args(&s.server.url(), &s.input, &s.out, "parquet", run_id, 8);
    a.extend(extra.iter().map(|x| x.to_string()));
    a
}

/// The actions of one log entry, by name.
fn actions(table: &Path, version: u64, name: &str) -> Vec<serde_json::Value> {
    let path = table.join(format!("_delta_log/{version:020}.json"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|a| a.get(name).cloned())
        .collect()
}

/// The values of a string column over a table's scan.
fn strings(out: &Path, table: &str, column: &str) -> Vec<String> {
    crate::common::local_delta_batches(&out.join(table))
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name(column).unwrap().as_string::<i32>().clone();
            (0..c.len()).map(move |i| c.value(i).to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_run_is_one_commit_per_table_read_back_through_the_log() {
    let s = setup(60).await;
    let want = crate::common::expected_rows(&s.store.messages);
    let o = run_msgext(args(&s, "first", &[]), DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    crate::common::assert_delta_exact(&s.out, "first", &want);

    // The commit says who wrote it, which run, and its counts.
    let kv = s.out.join("key_values");
    let info = &actions(&kv, 0, "commitInfo")[0];
    assert!(
        info["engineInfo"].as_str().unwrap().starts_with("msgext/"),
        "{info}"
    );
    assert_eq!(info["operationParameters"]["runId"], "first", "{info}");
    assert_eq!(
        info["operationParameters"]["sdkappid"],
        DEMO_SDKAPPID.to_string()
    );
    assert_eq!(
        info["operationMetrics"]["numOutputRows"],
        want.len().to_string(),
        "{info}"
    );
    let txn = &actions(&kv, 0, "txn")[0];
    assert_eq!(txn["appId"], "msgext-run-first");
    // Every row carries its app, day and run.
    let sdkappids: Vec<i64> = crate::common::local_delta_batches(&kv)
        .iter()
        .flat_map(|b| {
            let c = b
                .column_by_name("sdkappid")
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone();
            (0..c.len()).map(move |i| c.value(i))
        })
        .collect();
    assert_eq!(sdkappids.len(), want.len());
    assert!(sdkappids.iter().all(|&a| a == DEMO_SDKAPPID as i64));
    assert!(
        strings(&s.out, "key_values", "run_id")
            .iter()
            .all(|r| r == "first")
    );
    assert_eq!(strings(&s.out, "messages", "status").len(), 60);

    // A second run (in full: an incremental one would find nothing new)
    // is the next version of each table; the first stays as it was.
    let o = run_msgext(args(&s, "second", &["--full"]), DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    crate::common::assert_run_committed_once(&s.out, "second");
    for table in ["key_values", "messages"] {
        let commits = crate::common::delta_commits(&s.out.join(table));
        assert_eq!(commits.len(), 2, "{table}: {commits:?}");
        assert_eq!(commits[1].app_ids, ["msgext-run-second"]);
    }
    let mut both = want.clone();
    both.extend(want.iter().cloned());
    both.sort();
    assert_eq!(crate::common::kv_from_delta(&s.out), both, "each run once");

    // The same run again is refused; the log does not move.
    let o = run_msgext(args(&s, "second", &["--full"]), DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert_eq!(crate::common::delta_commits(&kv).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lake_that_is_not_the_run_s_is_refused_before_any_call() {
    let s = setup(20).await;
    // A plain lake (as an earlier msgext wrote it): a Delta run would commit
    // only its own files and hide the earlier runs from Delta readers.
    let o = run_msgext(
        args(&s, "plain", &["--table-format", "plain"]),
        DEMO_SECRET_KEY,
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(!s.out.join("key_values/_delta_log").exists());
    let calls = s.server.stats().calls();
    let o = run_msgext(args(&s, "delta", &[]), DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("key_values holds Parquet files of earlier runs but no Delta log")
            && err.contains("--table-format plain"),
        "{err}"
    );
    assert_eq!(s.server.stats().calls(), calls, "no API call");
    assert!(!s.out.join("key_values/_delta_log").exists());
    assert!(!s.out.join("_runs/delta").exists(), "nothing of the run");

    // A Delta lake: a plain run would write files its log does not list.
    let delta = s.out.with_file_name("delta-lake");
    let mut a = args(&s, "one", &[]);
    crate::common::set_arg(&mut a, "--out", &delta.to_string_lossy());
    let o = run_msgext(a.clone(), DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let calls = s.server.stats().calls();
    crate::common::set_arg(&mut a, "--run-id", "two");
    a.extend(["--table-format".into(), "plain".into()]);
    let o = run_msgext(a.clone(), DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is a Delta table"),
        "{}",
        show(&o)
    );
    assert_eq!(s.server.stats().calls(), calls, "no API call");
    // CSV files inside a Delta table's folders would be in no log: refused too.
    crate::common::set_arg(&mut a, "--run-id", "three");
    a.retain(|x| x != "--table-format" && x != "plain");
    crate::common::set_arg(&mut a, "--format", "csv");
    let o = run_msgext(a, DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        show(&o).contains("CSV files written into it"),
        "{}",
        show(&o)
    );
    assert_eq!(s.server.stats().calls(), calls, "no API call");

    // CSV has no Delta tables.
    let mut csv = args(&s, "csv", &["--table-format", "delta"]);
    crate::common::set_arg(&mut csv, "--format", "csv");
    let o = run_msgext(csv, DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--table-format delta needs --format parquet"),
        "{}",
        show(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tool_s_table_at_the_path_is_refused_naming_the_columns() {
    use delta_kernel::schema::{DataType, StructField, StructType};
    let s = setup(10).await;
    // Another tool's Delta table where msgext's key_values would be.
    let table = s.out.join("key_values");
    std::fs::create_dir_all(&table).unwrap();
    let url = reqwest::Url::from_directory_path(&table).unwrap();
    let store = std::sync::Arc::new(object_store::local::LocalFileSystem::new());
    let engine = delta_kernel_default_engine::DefaultEngineBuilder::new(store).build();
    let schema = StructType::try_new([
        StructField::nullable("msg_key", DataType::LONG),
        StructField::nullable("note", DataType::STRING),
    ])
    .unwrap();
    let created = delta_kernel::transaction::create_table::create_table(
        url.as_str(),
        std::sync::Arc::new(schema),
        "other-tool/1",
        true,
    )
    .build(
        &engine,
        Box::new(delta_kernel::committer::FileSystemCommitter::new()),
    )
    .unwrap()
    .commit(&engine)
    .unwrap();
    assert!(created.is_committed());

    let o = run_msgext(args(&s, "r", &[]), DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("key_values is a Delta table of another schema than msgext's")
            && err.contains("no column sdkappid")
            && err.contains("column msg_key is long (msgext writes string)")
            && err.contains("extra column note"),
        "{err}"
    );
    assert_eq!(s.server.stats().calls(), 0, "no API call");
    assert_eq!(
        crate::common::delta_commits(&table).len(),
        1,
        "the table untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stopped_after_its_commit_is_finished_not_dropped() {
    let s = setup(30).await;
    let want = crate::common::expected_rows(&s.store.messages);
    let o = run_msgext(
        args(&s, "nightly", &[]),
        DEMO_SECRET_KEY,
        &[("MSGEXT_FAILPOINT", "after_delta_commits")],
    )
    .await;
    assert_eq!(o.status.code(), None, "killed: {}", show(&o));
    assert!(!s.out.join("_runs/nightly/_SUCCESS").exists());
    // Readers already see the run, whole: dropping its files would break the table.
    assert_eq!(crate::common::kv_from_delta(&s.out), want);
    let drop = ["runs", "drop", "nightly", "--out", &s.out.to_string_lossy()]
        .map(String::from)
        .to_vec();
    let o = run_msgext(drop, DEMO_SECRET_KEY, &[]).await;
    assert_ne!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is committed to the Delta table"),
        "{}",
        show(&o)
    );
    assert_eq!(
        crate::common::kv_from_delta(&s.out),
        want,
        "nothing removed"
    );
    // The same command finishes it: reports and _SUCCESS, no second commit.
    let o = run_msgext(args(&s, "nightly", &[]), DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(s.out.join("_runs/nightly/_SUCCESS").exists());
    crate::common::assert_delta_exact(&s.out, "nightly", &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_entry_that_cannot_be_read_fails_the_run_naming_the_table() {
    let s = setup(10).await;
    let o = run_msgext(args(&s, "first", &[]), DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let entry = s.out.join("messages/_delta_log/00000000000000000000.json");
    std::fs::write(&entry, b"{\"commitInfo\": {\"timestamp\": 1}}\n{ not json").unwrap();
    let calls = s.server.stats().calls();
    let o = run_msgext(args(&s, "second", &[]), DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&s.out.join("messages").display().to_string())
            && err.contains("cannot read the table's log"),
        "{err}"
    );
    assert_eq!(s.server.stats().calls(), calls, "no API call");
}
