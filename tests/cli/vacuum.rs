//! `msgext vacuum`: after nights of exports and callbacks, a vacuum at zero
//! retention (killed once, then run again) leaves only the files the
//! latest versions reference and a checkpoint with at most two commits in
//! each log, every table reads as before through the kernel, and the next
//! night works; a dry run and a refused retention delete nothing; old runs
//! go with --keep-history; vacuum beside a running export costs it no row;
//! a table it cannot read is left whole.

use crate::common::changed::Nights;
use crate::common::{
    files_on_disk, lake_rows, listener, live_files, msgext_command, run_msgext, show,
};
use msgext::mock::DEMO_SECRET_KEY;
use std::collections::BTreeMap;
use std::path::Path;

/// `msgext vacuum --out LAKE` with `extra`, in the binary users run (or,
/// with `env`, the test build); exit `want` (none: killed); (stdout, stderr).
async fn vacuum(
    out: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
    want: Option<i32>,
) -> (String, String) {
    let mut args = vec![
        "vacuum".to_owned(),
        "--out".into(),
        out.to_string_lossy().into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let o = run_msgext(args, DEMO_SECRET_KEY, env).await;
    assert_eq!(o.status.code(), want, "{}", show(&o));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (text(&o.stdout), text(&o.stderr))
}

/// Three nights: changes, their callbacks to a listener, `export --changed`.
async fn nights() -> Nights {
    let mut n = Nights::backfill().await;
    // A vanished message sends no callback: only the sweep finds it, and
    // which third a night sweeps depends on the read_at order of the runs
    // before. The last night sweeps every message, so the lake the tests
    // start from equals a full read whatever the timing.
    for night in 1..=3u64 {
        let sweep_runs = if night == 3 { "1" } else { "3" };
        night_of(&mut n, 200 + night, 0.3, sweep_runs).await;
    }
    n
}

/// One night: `share` of the messages changed (seeded), their callbacks
/// to a listener, then `export --changed --sweep-runs K`.
async fn night_of(n: &mut Nights, seed: u64, share: f64, sweep_runs: &str) {
    let events = n.change(seed, share).await;
    let state = listener::state(n.dir.path(), 0);
    let l = listener::start(&n.out, &state, &["--commit-every", "1h"], &[]);
    l.deliver(&events).await;
    l.stop().await;
    n.changed(&["--sweep-runs", sweep_runs]).await;
}

/// Every table folder of the lake (those with a log).
fn tables(out: &Path) -> Vec<std::path::PathBuf> {
    let mut t: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("_delta_log").is_dir())
        .collect();
    t.sort();
    t
}

/// Every file of the lake: path → size.
fn listing(out: &Path) -> BTreeMap<String, u64> {
    files_on_disk(out)
        .into_iter()
        .chain(tables(out).iter().flat_map(|t| {
            std::fs::read_dir(t.join("_delta_log")).unwrap().map(|e| {
                let e = e.unwrap();
                (
                    e.path().to_string_lossy().into_owned(),
                    e.metadata().unwrap().len(),
                )
            })
        }))
        .collect()
}

/// Each table's log: (commits, checkpoints).
fn log_shape(table: &Path) -> (usize, usize) {
    let names: Vec<String> = std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let commits = names
        .iter()
        .filter(|n| n.len() == 25 && n.ends_with(".json"))
        .count();
    let checkpoints = names.iter().filter(|n| n.contains(".checkpoint.")).count();
    (commits, checkpoints)
}

fn summary(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nights_then_vacuum_at_zero_retention_killed_once_leave_what_the_tables_need() {
    let mut n = nights().await;
    let before = lake_rows(&n.out);
    assert_eq!(before.len(), 12, "every table: {:?}", before.keys());
    let on_disk: u64 = tables(&n.out)
        .iter()
        .flat_map(|t| files_on_disk(t).into_values())
        .sum();
    let live: u64 = tables(&n.out)
        .iter()
        .flat_map(|t| live_files(t).into_values())
        .sum();
    assert!(
        on_disk > live * 5 / 4,
        "the nights replaced files: {on_disk} on disk, {live} live"
    );

    // Killed after its fifth delete: the lake still reads as before.
    let kill = [("MSGEXT_FAILPOINT", "vacuum_deleted:5")];
    vacuum(&n.out, &["--retain", "0h", "--force"], &kill, None).await;
    assert_eq!(lake_rows(&n.out), before, "killed midway");
    n.assert_full_read(None, "killed midway");

    let (stdout, _) = vacuum(&n.out, &["--retain", "0h", "--force"], &[], Some(0)).await;
    let s = summary(&stdout);
    assert!(
        s["files"].as_u64().unwrap() > 0 && s["log_entries"].as_u64().unwrap() > 0,
        "{s}"
    );
    assert_eq!(lake_rows(&n.out), before, "after vacuum");
    n.assert_full_read(None, "after vacuum");
    let mut kept = 0;
    for t in tables(&n.out) {
        let (live, disk) = (live_files(&t), files_on_disk(&t));
        let live: BTreeMap<String, u64> = live.into_iter().map(|(p, s)| (decode(&p), s)).collect();
        assert_eq!(
            disk,
            live,
            "{}: only the files the latest version references",
            t.display()
        );
        kept += disk.values().sum::<u64>();
        let (commits, checkpoints) = log_shape(&t);
        assert!(
            commits <= 2 && checkpoints == 1,
            "{}: {commits} commits, {checkpoints} checkpoints",
            t.display()
        );
    }
    assert!(kept * 4 <= live * 5, "{kept} bytes kept, {live} live");

    // The next night: exports and callbacks go on, exact.
    night_of(&mut n, 300, 0.3, "1").await;
    n.assert_full_read(None, "the night after");
}

/// Every file below `dir` made `days` old.
fn age(dir: &Path, days: u64) {
    let then = std::time::SystemTime::now() - std::time::Duration::from_secs(days * 86_400);
    let mut dirs = vec![dir.to_owned()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            match path.is_dir() {
                true => dirs.push(path),
                false => std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_modified(then)
                    .unwrap(),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_on_the_version_at_the_cutoff_keeps_its_files() {
    let mut n = nights().await;
    // Three nights 10 days ago, then one tonight.
    age(&n.out, 10);
    let table = n.out.join("current_key_values");
    let then_version = live_version(&table);
    let then = crate::common::delta_rows_at(&table, Some(then_version));
    night_of(&mut n, 400, 0.5, "1").await;
    let now = lake_rows(&n.out);
    let disk_before = files_on_disk(&table);
    let (stdout, _) = vacuum(&n.out, &["--retain", "7d"], &[], Some(0)).await;
    assert!(summary(&stdout)["files"].as_u64().unwrap() > 0, "{stdout}");
    // The version current 7 days ago still reads, and so does the latest.
    assert_eq!(
        crate::common::delta_rows_at(&table, Some(then_version)),
        then
    );
    assert_eq!(lake_rows(&n.out), now);
    // What went: files no version since then references.
    let disk = files_on_disk(&table);
    assert!(disk.len() < disk_before.len(), "{disk:?}");
    n.assert_full_read(None, "after a 7-day vacuum");
}

/// The latest version of a local table (its newest commit file).
fn live_version(table: &Path) -> u64 {
    std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".json")?.parse().ok()
        })
        .max()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_runs_files_wait_for_its_resume() {
    let n = nights().await;
    let input = n.dir.path().join("all.csv");
    std::fs::write(&input, n.store.input_csv(msgext::kind::Kind::OneToOne)).unwrap();
    let mut args =
        crate::common::export_args(&n.server.url(), &input, &n.out, "parquet", "killed", 4);
    args.push("--full".into());
    let kill = [("MSGEXT_FAILPOINT", "before_delta_commit")];
    let o = run_msgext(args.clone(), DEMO_SECRET_KEY, &kill).await;
    assert_eq!(o.status.code(), None, "{}", show(&o));
    let (_, stderr) = vacuum(&n.out, &["--retain", "0h", "--force"], &[], Some(0)).await;
    assert!(stderr.contains("unfinished run killed kept"), "{stderr}");
    let o = run_msgext(args, DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(0), "the resume: {}", show(&o));
    let rows = crate::common::delta_rows(&n.out.join("messages"));
    let ours = rows.iter().filter(|r| r.ends_with("|killed")).count();
    let listed = std::fs::read_to_string(&input).unwrap().lines().count() - 1;
    assert_eq!(ours, listed, "every message of the run once");
    n.assert_full_read(None, "after the resume");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_and_a_refused_retention_delete_nothing() {
    let n = nights().await;
    let before = listing(&n.out);
    let (stdout, stderr) = vacuum(
        &n.out,
        &["--retain", "0h", "--force", "--dry-run"],
        &[],
        Some(0),
    )
    .await;
    let s = summary(&stdout);
    assert_eq!(s["dry_run"], true);
    assert!(s["files"].as_u64().unwrap() > 0, "{s}");
    assert!(s["bytes"].as_u64().unwrap() > 0, "{s}");
    assert!(s["log_entries"].as_u64().unwrap() > 0, "{s}");
    assert!(
        stderr.contains("current_key_values: would remove"),
        "{stderr}"
    );
    assert_eq!(listing(&n.out), before, "a dry run deletes nothing");

    for retain in ["0h", "23h"] {
        let (_, stderr) = vacuum(&n.out, &["--retain", retain], &[], Some(2)).await;
        assert!(
            stderr.contains("--force") && stderr.contains("nothing deleted"),
            "{stderr}"
        );
        assert_eq!(listing(&n.out), before, "--retain {retain} refused");
    }
    for bad in [["--retain", "soon"], ["--keep-history", "0d"]] {
        let (_, stderr) = vacuum(&n.out, &bad, &[], Some(2)).await;
        assert!(stderr.contains(bad[0]), "{stderr}");
    }
    // The default retention: every file is younger than 7 days.
    let (stdout, _) = vacuum(&n.out, &[], &[], Some(0)).await;
    assert_eq!(summary(&stdout)["files"], 0, "{stdout}");
    let after = listing(&n.out);
    for (path, size) in &before {
        assert_eq!(after.get(path), Some(size), "{path} is still there");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_runs_go_with_keep_history() {
    let n = nights().await;
    let current = ["current_key_values", "current_messages", "extension_events"]
        .map(|t| crate::common::delta_rows(&n.out.join(t)));
    // Vacuum as it would run 100 days from now.
    let later = [("MSGEXT_TEST_VACUUM_DAYS_AHEAD", "100")];
    let (stdout, _) = vacuum(
        &n.out,
        &["--keep-history", "90d", "--retain", "7d"],
        &later,
        Some(0),
    )
    .await;
    let s = summary(&stdout);
    assert!(s["runs_dropped"].as_u64().unwrap() >= 4, "{s}");
    for t in [
        "key_values",
        "messages",
        "group_key_values",
        "key_value_changes",
    ] {
        assert!(
            crate::common::delta_rows(&n.out.join(t)).is_empty(),
            "{t} holds no old run"
        );
    }
    let after = ["current_key_values", "current_messages", "extension_events"]
        .map(|t| crate::common::delta_rows(&n.out.join(t)));
    assert_eq!(
        after, current,
        "the current and events tables are no history"
    );
    // The history files went too (older than 7 days, 100 days on).
    assert!(files_on_disk(&n.out.join("key_values")).is_empty());
    // The next export writes the history again (a row per message read).
    n.changed(&["--sweep-runs", "1"]).await;
    assert!(!crate::common::delta_rows(&n.out.join("messages")).is_empty());
    n.assert_full_read(None, "after keep-history");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_a_lake_or_a_table_of_another_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, stderr) = vacuum(dir.path(), &[], &[], Some(2)).await;
    assert!(stderr.contains("no msgext table"), "{stderr}");
    let (_, stderr) = vacuum(&dir.path().join("nope"), &[], &[], Some(2)).await;
    assert!(stderr.contains("no such folder"), "{stderr}");

    let n = Nights::backfill().await;
    // current_messages' log replaced by key_values': another schema.
    let victim = n.out.join("current_messages");
    std::fs::remove_dir_all(victim.join("_delta_log")).unwrap();
    copy_dir(
        &n.out.join("key_values/_delta_log"),
        &victim.join("_delta_log"),
    );
    let before = listing(&n.out);
    let (_, stderr) = vacuum(&n.out, &["--retain", "0h", "--force"], &[], Some(2)).await;
    assert!(
        stderr.contains("current_messages") && stderr.contains("another schema"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing deleted"), "{stderr}");
    assert_eq!(listing(&n.out), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_entry_that_cannot_be_read_leaves_its_table_whole() {
    let n = nights().await;
    let victim = n.out.join("current_key_values");
    let entry = victim.join("_delta_log/00000000000000000002.json");
    std::fs::write(&entry, "{not json\n").unwrap();
    let before = files_on_disk(&victim);
    let log_before = log_shape(&victim);
    let (stdout, stderr) = vacuum(&n.out, &["--retain", "0h", "--force"], &[], Some(1)).await;
    assert!(stderr.contains("current_key_values"), "{stderr}");
    let s = summary(&stdout);
    assert_eq!(s["failed"][0]["table"], "current_key_values", "{s}");
    assert_eq!(
        files_on_disk(&victim),
        before,
        "nothing deleted in that table"
    );
    assert_eq!(log_shape(&victim), log_before);
    // The others were cleaned.
    assert_eq!(log_shape(&n.out.join("current_messages")).1, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_beside_a_running_export_costs_it_no_row() {
    let n = nights().await;
    // A slow export of every one-to-one message (20 calls a second).
    let input = n.dir.path().join("all.csv");
    std::fs::write(&input, n.store.input_csv(msgext::kind::Kind::OneToOne)).unwrap();
    let mut args =
        crate::common::export_args(&n.server.url(), &input, &n.out, "parquet", "beside", 2);
    crate::common::set_arg(&mut args, "--rate", "20");
    args.push("--full".into());
    let mut export = msgext_command(&args, DEMO_SECRET_KEY, &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once it is reading (its first answers), vacuum at the default retention.
    let base: u64 = n.server.stats().answers().values().sum();
    crate::common::wait_for_answers(n.server.stats(), base + 5).await;
    vacuum(&n.out, &[], &[], Some(0)).await;
    let out = tokio::task::spawn_blocking(move || {
        let status = export.wait().unwrap();
        (
            status,
            std::io::read_to_string(export.stderr.take().unwrap()).unwrap(),
        )
    })
    .await
    .unwrap();
    assert_eq!(out.0.code(), Some(0), "{}", out.1);
    n.assert_full_read(None, "an export beside a vacuum");
    crate::common::assert_run_committed_once(&n.out, "beside");
}

/// A log's percent-encoded path, decoded.
fn decode(path: &str) -> String {
    let b = path.as_bytes();
    let (mut out, mut i) = (Vec::new(), 0);
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&path[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}
