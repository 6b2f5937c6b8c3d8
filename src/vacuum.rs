//! `msgext vacuum`: keeps a lake that lives for years bounded. Over every
//! msgext table of the lake (history, current, changes, events; both
//! kinds; every app) it deletes the data files no version within
//! `--retain` references, cleans each log down to a checkpoint and what
//! came after it, and with `--keep-history` drops old runs from the
//! history tables first. The rules are `table::vacuum`'s; this module owns
//! the plan, the order over the tables and what is told.
//!
//! Before anything is deleted every table is checked to be msgext's (a
//! table of another schema: exit 2, nothing deleted). A table whose log
//! cannot be read is left whole and told (exit 1); the others go on.

use crate::table::catalog;
use crate::table::delta::DeltaLake;
use crate::table::vacuum::{Rules, Swept, sweep};
use crate::write::{LakeStore, WriteError};
use std::collections::HashSet;
use std::time::Duration;

/// Below this retention a running export's uploaded, not yet committed
/// files, and readers on a version of the last day, could lose theirs.
pub(crate) const MIN_RETAIN: Duration = Duration::from_secs(24 * 3600);
/// The default retention, as Spark's and delta-rs's VACUUM.
pub(crate) const DEFAULT_RETAIN: Duration = Duration::from_secs(7 * 24 * 3600);

/// What `msgext vacuum` was asked to do.
#[derive(Debug, Clone)]
pub(crate) struct VacuumPlan {
    pub(crate) retain: Duration,
    /// `--keep-history`: runs older than this are dropped (`None`: all kept).
    pub(crate) keep_history: Option<Duration>,
    pub(crate) dry_run: bool,
    pub(crate) quiet: bool,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum VacuumError {
    #[error(
        "{0}: no msgext table and no runs here; give the lake as msgext export wrote it (--out)"
    )]
    NotALake(String),
    #[error("{0}; nothing deleted")]
    WrongLake(WriteError),
    #[error("{0}")]
    Lake(#[from] WriteError),
}

impl VacuumError {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            VacuumError::NotALake(_) | VacuumError::WrongLake(_) => 2,
            VacuumError::Lake(_) => 1,
        }
    }
}

/// What vacuum did over the lake: each table's, and the tables it had to
/// leave whole (their log could not be read, or a delete was refused).
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) tables: Vec<Swept>,
    pub(crate) failed: Vec<(String, WriteError)>,
}

impl Outcome {
    /// The JSON summary line.
    pub(crate) fn json(&self, dry_run: bool) -> String {
        let sum = |f: fn(&Swept) -> u64| self.tables.iter().map(f).sum::<u64>();
        serde_json::json!({
            "command": "vacuum",
            "dry_run": dry_run,
            "files": sum(|t| t.files),
            "bytes": sum(|t| t.bytes),
            "log_entries": sum(|t| t.log_entries),
            "runs_dropped": sum(|t| t.runs_dropped),
            "kept_bytes": sum(|t| t.kept_bytes),
            "tables": self.tables,
            "failed": self.failed.iter().map(|(t, e)| {
                serde_json::json!({"table": t, "error": e.to_string()})
            }).collect::<Vec<_>>(),
        })
        .to_string()
    }
}

/// Vacuum every msgext table of the lake; `tell` gets a line per table.
pub(crate) fn run(
    lake: &dyn LakeStore,
    plan: &VacuumPlan,
    tell: &dyn Fn(String),
) -> Result<Outcome, VacuumError> {
    let delta = DeltaLake::open(lake.table_root()?).map_err(WriteError::Io)?;
    let present = catalog::present(lake, &delta).map_err(|e| match e {
        WriteError::Delta(d) if d.is_wrong_lake() => VacuumError::WrongLake(WriteError::Delta(d)),
        other => VacuumError::Lake(other),
    })?;
    let (tables, mut failed) = (present.tables, present.unreadable);
    if tables.is_empty() && failed.is_empty() && lake.list("_runs")?.is_empty() {
        return Err(VacuumError::NotALake(lake.display("")));
    }
    let today = now();
    let rules = Rules {
        retain_ms: i64::try_from(plan.retain.as_millis()).unwrap_or(i64::MAX),
        first_day_kept: plan.keep_history.map(|keep| {
            let back = chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
            (today - back).date_naive()
        }),
        dry_run: plan.dry_run,
        finished: finished_runs(lake)?,
    };
    let clock = || now().timestamp_millis();
    let mut outcome = Outcome::default();
    for t in &tables {
        tell(format!("{}: listing…", t.name));
        match sweep(lake, &delta, t, &rules, &clock) {
            Ok(s) => {
                tell(describe(&s, plan.dry_run));
                outcome.tables.push(s);
            }
            Err(e) => {
                tell(format!("{}: {e}", t.name));
                failed.push((t.name.clone(), e));
            }
        }
    }
    outcome.failed = failed;
    Ok(outcome)
}

/// The clock vacuum goes by (the tests' build can move it on by
/// `VACUUM_DAYS_AHEAD` days, to find the runs of months ago in today's lake).
fn now() -> chrono::DateTime<chrono::Utc> {
    let ahead = crate::failpoint::size("VACUUM_DAYS_AHEAD", 0);
    chrono::Utc::now() + chrono::Duration::days(i64::try_from(ahead).unwrap_or(0))
}

/// The runs with `_SUCCESS`: the others' files wait for their resume.
fn finished_runs(lake: &dyn LakeStore) -> Result<HashSet<String>, WriteError> {
    Ok(lake
        .list("_runs")?
        .iter()
        .filter_map(|p| p.strip_prefix("_runs/")?.strip_suffix("/_SUCCESS"))
        .map(str::to_owned)
        .collect())
}

/// One table's line.
fn describe(s: &Swept, dry_run: bool) -> String {
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut line = format!(
        "{}: {verb} {} files ({}), {} log entries",
        s.table,
        s.files,
        human_bytes(s.bytes),
        s.log_entries
    );
    if s.runs_dropped > 0 {
        let verb = if dry_run { "would drop" } else { "dropped" };
        line.push_str(&format!(", {verb} {} old runs", s.runs_dropped));
    }
    line.push_str(&format!(
        "; {} files ({}) stay",
        s.kept_files,
        human_bytes(s.kept_bytes)
    ));
    for (run, n) in &s.unfinished {
        line.push_str(&format!(
            "; {n} files of unfinished run {run} kept (resume it, or `msgext runs drop {run}`)"
        ));
    }
    line
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}
