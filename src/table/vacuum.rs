//! Vacuum's rules for one Delta table (`msgext vacuum` goes over every
//! table of the lake with them): which data files no version within the
//! retention references, which log entries readers no longer need, and
//! the history runs older than `--keep-history`. The decisions are pure
//! functions with table tests; `sweep` reads the log through the kernel
//! and deletes through the lake's store.
//!
//! The rules (the Delta protocol's VACUUM and "Metadata Cleanup"):
//! - A reader may be on any version committed after the cutoff (now −
//!   retain) or on the one current at the cutoff (`version_at`). The
//!   files those versions reference are the latest version's live files
//!   and the files removed by the commits after that version; every other
//!   file in the table's folders older than the cutoff goes (removed long
//!   ago, or never committed: a killed writer's leftovers), except those
//!   of a run without `_SUCCESS`, which its resume needs (`msgext runs
//!   drop` removes them). Nothing younger than the cutoff ever goes: a
//!   running export's uploaded, not yet committed files are young.
//! - The log: a checkpoint at the latest version is written first; then
//!   the commits, checkpoints and checksums below the newest checkpoint at
//!   or before the version current at the cutoff go (readers start from
//!   that checkpoint; its `txn`s, the exactly-once marks, are in it).
//!
//! Order: history drop commit, checkpoint, data files, log entries oldest
//! first. Killed at any point, every version still readable reads exact,
//! and the same command finishes the work.

use super::catalog::LakeTable;
use super::delta::{Changes, DeltaLake, LiveFile, RunCommit, Txn};
use crate::write::{LakeStore, Listed, WriteError};
use std::collections::{BTreeMap, HashSet};

/// The application id of `--keep-history`'s commits; its version is the
/// first day kept (days since 1970-01-01), so `verify` knows which runs
/// were dropped on purpose.
pub(crate) const KEEP_HISTORY_APP: &str = "msgext-keep-history";

/// A file of a table's `_delta_log`, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogEntry {
    Commit(u64),
    Checkpoint(u64),
    /// A version's checksum file.
    Crc(u64),
    /// A writer's temporary copy of a commit (`….json#1`), left by a crash.
    Staging(u64),
    /// `_last_checkpoint`, compacted logs, anything else: never removed.
    Other,
}

impl LogEntry {
    pub(crate) fn of(name: &str) -> LogEntry {
        let (head, rest) = name.split_once('.').unwrap_or((name, ""));
        let version = match head.len() == 20 && head.bytes().all(|b| b.is_ascii_digit()) {
            true => head.parse::<u64>().ok(),
            false => None,
        };
        let Some(v) = version else {
            return LogEntry::Other;
        };
        let checkpoint = rest.starts_with("checkpoint.")
            && (rest.ends_with(".parquet") || rest.ends_with(".json"));
        match rest {
            "json" => LogEntry::Commit(v),
            "crc" => LogEntry::Crc(v),
            _ if checkpoint => LogEntry::Checkpoint(v),
            r if r.starts_with("json#") => LogEntry::Staging(v),
            _ => LogEntry::Other,
        }
    }

    fn version(self) -> Option<u64> {
        match self {
            LogEntry::Commit(v) | LogEntry::Checkpoint(v) | LogEntry::Crc(v) => Some(v),
            LogEntry::Staging(v) => Some(v),
            LogEntry::Other => None,
        }
    }
}

/// The version a reader at `cutoff_ms` sees: the newest commit made at or
/// before it, commit times taken as never going back (a later commit
/// stamped earlier counts as late as the one before it); the oldest
/// commit when none is that old. `commits` are (version, time) ascending.
pub(crate) fn version_at(commits: &[(u64, i64)], cutoff_ms: i64) -> Option<u64> {
    let mut latest_time = i64::MIN;
    let mut seen = None;
    for &(v, t) in commits {
        latest_time = latest_time.max(t);
        if latest_time > cutoff_ms {
            break;
        }
        seen = Some(v);
    }
    seen.or_else(|| commits.first().map(|c| c.0))
}

/// The log entries no reader needs once every version from `keep_from`
/// on stays readable: those below the newest checkpoint at or before
/// `keep_from`, oldest first (none without such a checkpoint).
pub(crate) fn expired_log(entries: &[(String, LogEntry)], keep_from: u64) -> Vec<String> {
    let start = entries
        .iter()
        .filter_map(|(_, e)| match e {
            LogEntry::Checkpoint(v) if *v <= keep_from => Some(*v),
            _ => None,
        })
        .max();
    let Some(start) = start else {
        return Vec::new();
    };
    let mut out: Vec<(u64, &String)> = entries
        .iter()
        .filter_map(|(p, e)| e.version().filter(|v| *v < start).map(|v| (v, p)))
        .collect();
    out.sort();
    out.into_iter().map(|(_, p)| p.clone()).collect()
}

/// What becomes of a file of a table's folders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fate {
    /// A version within the retention references it.
    Referenced,
    /// Written after the cutoff: never touched.
    Young,
    /// A run without `_SUCCESS` wrote it: its resume needs it.
    Unfinished(String),
    Delete,
}

/// What decides a file's fate: the files referenced, the cutoff, the runs
/// that finished.
pub(crate) struct Keep<'a> {
    pub(crate) referenced: &'a HashSet<String>,
    pub(crate) cutoff_ms: i64,
    pub(crate) finished: &'a HashSet<String>,
}

/// The fate of the file at `path` (relative to its table).
pub(crate) fn fate(path: &str, modified_ms: i64, keep: &Keep<'_>) -> Fate {
    if keep.referenced.contains(path) {
        return Fate::Referenced;
    }
    if modified_ms >= keep.cutoff_ms {
        return Fate::Young;
    }
    match path.split('/').find_map(|p| p.strip_prefix("run_id=")) {
        Some(run) if !keep.finished.contains(run) => Fate::Unfinished(run.to_owned()),
        _ => Fate::Delete,
    }
}

/// The live files of runs whose day (`dt=YYYY-MM-DD/…`) is before `first_kept`.
pub(crate) fn expired_runs<'a>(live: &'a [LiveFile], first_kept: &str) -> Vec<&'a LiveFile> {
    live.iter()
        .filter(|f| {
            let day = f.path.split('/').next().and_then(|d| d.strip_prefix("dt="));
            day.is_some_and(|d| d < first_kept)
        })
        .collect()
}

/// How vacuum goes over the lake.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub(crate) retain_ms: i64,
    /// `--keep-history`: runs of days before this one are dropped.
    pub(crate) first_day_kept: Option<chrono::NaiveDate>,
    pub(crate) dry_run: bool,
    /// The runs with `_SUCCESS` in the lake.
    pub(crate) finished: HashSet<String>,
}

/// What vacuum did (or, dry, would do) to one table.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Swept {
    pub(crate) table: String,
    /// Data files removed, and their bytes.
    pub(crate) files: u64,
    pub(crate) bytes: u64,
    pub(crate) log_entries: u64,
    /// Run partitions dropped from the table by `--keep-history`.
    pub(crate) runs_dropped: u64,
    /// The data files and bytes that stay.
    pub(crate) kept_files: u64,
    pub(crate) kept_bytes: u64,
    /// Files kept for runs without `_SUCCESS`, by run.
    pub(crate) unfinished: BTreeMap<String, u64>,
}

/// Vacuum one table; `now_ms` is read after the table's own commits.
pub(crate) fn sweep(
    lake: &dyn LakeStore,
    delta: &DeltaLake,
    table: &LakeTable,
    rules: &Rules,
    now_ms: &dyn Fn() -> i64,
) -> Result<Swept, WriteError> {
    let name = table.name.as_str();
    let mut swept = Swept {
        table: name.to_owned(),
        ..Swept::default()
    };
    if let Some(day) = rules.first_day_kept.filter(|_| table.role.per_run()) {
        swept.runs_dropped = drop_runs(delta, table, day, rules.dry_run)?;
        crate::failpoint::hit("vacuum_history_dropped");
    }
    if !rules.dry_run {
        delta.checkpoint_latest(name)?;
        crate::failpoint::hit("vacuum_checkpointed");
    }
    let cutoff_ms = now_ms().saturating_sub(rules.retain_ms);
    let snapshot = delta.snapshot(name)?;
    let latest = snapshot.version();
    let log = log_entries(lake, name)?;
    let mut commits: Vec<(u64, i64)> = log
        .iter()
        .filter_map(|(e, f)| match e {
            LogEntry::Commit(v) if *v <= latest => Some((*v, f.modified_ms)),
            _ => None,
        })
        .collect();
    commits.sort_unstable();
    let keep_from = version_at(&commits, cutoff_ms)
        .unwrap_or(latest)
        .min(latest);
    let mut referenced: HashSet<String> = (delta.files_under(name, &snapshot, "")?)
        .into_iter()
        .map(|f| f.path)
        .collect();
    if keep_from < latest {
        referenced.extend(delta.removed_paths(name, keep_from + 1, latest)?);
    }
    let keep = Keep {
        referenced: &referenced,
        cutoff_ms,
        finished: &rules.finished,
    };
    let doomed = data_files(lake, name, &keep, &mut swept)?;
    let mut named: Vec<(String, LogEntry)> =
        log.iter().map(|(e, f)| (f.path.clone(), *e)).collect();
    if rules.dry_run {
        // The checkpoint a real run writes first.
        named.push((String::new(), LogEntry::Checkpoint(latest)));
    }
    let expired = expired_log(&named, keep_from);
    swept.log_entries = expired.len() as u64;
    if !rules.dry_run {
        for f in doomed.iter().chain(&expired) {
            lake.delete(f)?;
            crate::failpoint::hit("vacuum_deleted");
        }
    }
    Ok(swept)
}

/// The table's log entries, each with what its name says.
fn log_entries(lake: &dyn LakeStore, table: &str) -> Result<Vec<(LogEntry, Listed)>, WriteError> {
    let listed = lake.list_meta(&format!("{table}/_delta_log"))?;
    Ok(listed
        .into_iter()
        .map(|f| {
            let name = f.path.rsplit('/').next().unwrap_or(&f.path);
            (LogEntry::of(name), f)
        })
        .collect())
}

/// The data files of the table's folders to delete (paths in the lake);
/// counts what goes and what stays in `swept`.
fn data_files(
    lake: &dyn LakeStore,
    table: &str,
    keep: &Keep<'_>,
    swept: &mut Swept,
) -> Result<Vec<String>, WriteError> {
    let prefix = format!("{table}/");
    let mut doomed = Vec::new();
    for f in lake.list_meta(table)? {
        let Some(rel) = f.path.strip_prefix(&prefix) else {
            continue;
        };
        // The log, and any folder of Delta's own (`_change_data`…).
        if rel.starts_with('_') {
            continue;
        }
        match fate(rel, f.modified_ms, keep) {
            Fate::Delete => {
                swept.files += 1;
                swept.bytes += f.bytes;
                doomed.push(f.path);
            }
            other => {
                swept.kept_files += 1;
                swept.kept_bytes += f.bytes;
                if let Fate::Unfinished(run) = other {
                    *swept.unfinished.entry(run).or_default() += 1;
                }
            }
        }
    }
    Ok(doomed)
}

/// `--keep-history`: remove the runs before `first_kept` from a per-run
/// table in one commit; how many runs that was (or would be, dry).
fn drop_runs(
    delta: &DeltaLake,
    table: &LakeTable,
    first_kept: chrono::NaiveDate,
    dry_run: bool,
) -> Result<u64, WriteError> {
    let name = table.name.as_str();
    let snapshot = delta.snapshot(name)?;
    let live = delta.files_under(name, &snapshot, "")?;
    let day = first_kept.format("%Y-%m-%d").to_string();
    let expired = expired_runs(&live, &day);
    let runs: HashSet<&str> = expired
        .iter()
        .filter_map(|f| f.path.split('/').find_map(|p| p.strip_prefix("run_id=")))
        .collect();
    if dry_run || expired.is_empty() {
        return Ok(runs.len() as u64);
    }
    let removes: Vec<String> = expired.iter().map(|f| f.path.clone()).collect();
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    let run = RunCommit {
        run_id: "vacuum",
        sdkappid: 0,
        status: "keep-history",
        messages: 0,
        kv_rows: 0,
    };
    let txn = Txn {
        app_id: KEEP_HISTORY_APP.to_owned(),
        version: (first_kept - epoch).num_days(),
    };
    let changes = Changes {
        adds: &[],
        removes: &removes,
    };
    delta.commit_moving(name, &table.spec, changes, (&run, &[txn]), Some(snapshot))?;
    Ok(runs.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_entries_by_name() {
        let cases = [
            ("00000000000000000007.json", LogEntry::Commit(7)),
            (
                "00000000000000000100.checkpoint.parquet",
                LogEntry::Checkpoint(100),
            ),
            (
                "00000000000000000100.checkpoint.0000000001.0000000002.parquet",
                LogEntry::Checkpoint(100),
            ),
            (
                "00000000000000000100.checkpoint.80a083e8-7026-4e79-81be-64bd76c43a11.json",
                LogEntry::Checkpoint(100),
            ),
            ("00000000000000000007.crc", LogEntry::Crc(7)),
            ("00000000000000000000.json#1", LogEntry::Staging(0)),
            ("_last_checkpoint", LogEntry::Other),
            (
                "00000000000000000004.00000000000000000009.compacted.json",
                LogEntry::Other,
            ),
            ("0007.json", LogEntry::Other),
            ("0000000000000000000x.json", LogEntry::Other),
            (".00000000000000000007.json.tmp", LogEntry::Other),
        ];
        for (name, want) in cases {
            assert_eq!(LogEntry::of(name), want, "{name}");
        }
    }

    #[test]
    fn the_version_a_reader_at_the_cutoff_sees() {
        let log = [(0, 100), (1, 200), (2, 300), (3, 400)];
        type Log<'a> = &'a [(u64, i64)];
        let cases: [(Log, i64, Option<u64>); 7] = [
            (&log, 50, Some(0)),
            (&log, 100, Some(0)),
            (&log, 250, Some(1)),
            (&log, 400, Some(3)),
            (&log, 10_000, Some(3)),
            // A commit stamped before its predecessor is as late as it.
            (&[(0, 100), (1, 500), (2, 300)], 400, Some(0)),
            (&[], 400, None),
        ];
        for (i, (commits, cutoff, want)) in cases.into_iter().enumerate() {
            assert_eq!(version_at(commits, cutoff), want, "case {i}");
        }
    }

    fn entries(names: &[&str]) -> Vec<(String, LogEntry)> {
        names
            .iter()
            .map(|n| (n.to_string(), LogEntry::of(n)))
            .collect()
    }

    #[test]
    fn the_log_below_the_newest_checkpoint_a_kept_version_needs_goes() {
        let log = entries(&[
            "00000000000000000000.json",
            "00000000000000000001.json",
            "00000000000000000001.crc",
            "00000000000000000002.json",
            "00000000000000000002.checkpoint.parquet",
            "00000000000000000003.json",
            "00000000000000000004.json",
            "00000000000000000004.checkpoint.parquet",
            "00000000000000000005.json",
            "00000000000000000003.json#1",
            "_last_checkpoint",
        ]);
        let cases: [(u64, &[&str]); 5] = [
            // No checkpoint at or before version 1: nothing goes.
            (1, &[]),
            (
                2,
                &[
                    "00000000000000000000.json",
                    "00000000000000000001.json",
                    "00000000000000000001.crc",
                ],
            ),
            (
                3,
                &[
                    "00000000000000000000.json",
                    "00000000000000000001.json",
                    "00000000000000000001.crc",
                ],
            ),
            (
                4,
                &[
                    "00000000000000000000.json",
                    "00000000000000000001.json",
                    "00000000000000000001.crc",
                    "00000000000000000002.json",
                    "00000000000000000002.checkpoint.parquet",
                    "00000000000000000003.json",
                    "00000000000000000003.json#1",
                ],
            ),
            (5, &[]),
        ];
        for (keep_from, want) in cases {
            let got = expired_log(&log, keep_from);
            let mut got_sorted = got.clone();
            got_sorted.sort();
            let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            want.sort();
            if keep_from == 5 {
                // The newest checkpoint at or before 5 is 4's.
                assert_eq!(got.len(), 7, "{got:?}");
                continue;
            }
            assert_eq!(got_sorted, want, "keep from {keep_from}");
        }
        // Oldest first: a kill midway leaves a log that still starts somewhere.
        let got = expired_log(&log, 4);
        assert_eq!(
            got.first().map(String::as_str),
            Some("00000000000000000000.json")
        );
        assert!(got.last().unwrap().starts_with("00000000000000000003"));
    }

    #[test]
    fn the_fate_of_a_tables_files() {
        let referenced: HashSet<String> =
            ["dt=2026-12-01/run_id=a/part-0.parquet".to_owned()].into();
        let finished: HashSet<String> = ["a".to_owned(), "b".to_owned()].into();
        let keep = Keep {
            referenced: &referenced,
            cutoff_ms: 1_000,
            finished: &finished,
        };
        let cases = [
            (
                "dt=2026-12-01/run_id=a/part-0.parquet",
                10,
                Fate::Referenced,
            ),
            ("dt=2026-12-01/run_id=a/part-1.parquet", 10, Fate::Delete),
            ("dt=2026-12-01/run_id=b/part-0.parquet", 999, Fate::Delete),
            ("dt=2026-12-01/run_id=b/part-0.parquet", 1_000, Fate::Young),
            (
                "dt=2026-12-01/run_id=b/.part-2.parquet.inprogress",
                10,
                Fate::Delete,
            ),
            (
                "dt=2026-12-01/run_id=c/part-0.parquet",
                10,
                Fate::Unfinished("c".into()),
            ),
            ("dt=2026-12-01/run_id=c/part-0.parquet", 5_000, Fate::Young),
            // Current and events tables: no run in the path.
            ("sdkappid=1400000000/part-9.parquet", 10, Fate::Delete),
            ("sdkappid=1/dt=2026-12-01/ev-1.parquet", 2_000, Fate::Young),
        ];
        for (path, modified, want) in cases {
            assert_eq!(fate(path, modified, &keep), want, "{path} at {modified}");
        }
    }

    #[test]
    fn runs_before_the_first_day_kept_expire() {
        let live = |p: &str| LiveFile {
            path: p.to_owned(),
            rows: None,
            bytes: 0,
        };
        let files = [
            live("dt=2026-08-31/run_id=a/part-0.parquet"),
            live("dt=2026-09-01/run_id=b/part-0.parquet"),
            live("dt=2026-09-02/run_id=c/part-0.parquet"),
            live("sdkappid=1/part-0.parquet"),
        ];
        let got: Vec<&str> = expired_runs(&files, "2026-09-01")
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        assert_eq!(got, ["dt=2026-08-31/run_id=a/part-0.parquet"]);
        assert!(expired_runs(&files, "2026-08-31").is_empty());
    }
}
