//! `msgext runs`: the runs in a lake (a folder or a bucket), read from what
//! each run leaves under `_runs/<run id>/` (`_CLAIM`, `summary.json`,
//! `_SUCCESS`) and its data partitions, and `msgext runs drop`, which
//! removes an unfinished run's files so that a plain `SELECT *` over the
//! folder no longer counts them. What a run's state is follows from those
//! files by one pure function (`RunState::of`).

use crate::ledger::{Holder, RunLock};
use crate::table::{LakeCommits, RunCommits};
use crate::write::{LakeStore, WriteError, all_tables};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// Where a run stands, as its files in the lake (and its lock) show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunState {
    /// `_SUCCESS`, every message exported or not found.
    Complete,
    /// `_SUCCESS`, some messages failed or input rows were invalid.
    Partial,
    /// No `_SUCCESS`, and an export holds its state folder now.
    Running,
    /// No `_SUCCESS`: interrupted, killed, or never reported.
    Unfinished,
    /// No `_SUCCESS`, and its last attempt failed (auth, I/O, a changed input).
    Failed,
}

impl RunState {
    /// From whether `_SUCCESS` is there, the status `summary.json` gives
    /// (if any) and whether an export holds the run's lock now.
    pub(crate) fn of(success: bool, summary_status: Option<&str>, running: bool) -> RunState {
        match (success, summary_status) {
            (true, Some("partial")) => RunState::Partial,
            (true, _) => RunState::Complete,
            (false, _) if running => RunState::Running,
            (false, Some("failed")) => RunState::Failed,
            (false, _) => RunState::Unfinished,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            RunState::Complete => "complete",
            RunState::Partial => "partial",
            RunState::Running => "running",
            RunState::Unfinished => "unfinished",
            RunState::Failed => "failed",
        }
    }

    /// Whether the run reached the end of its input.
    pub(crate) fn finished(self) -> bool {
        matches!(self, RunState::Complete | RunState::Partial)
    }
}

/// `_runs/<run id>/_CLAIM`: which export owns the run (`export::claim_run`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub(crate) struct Claim {
    #[serde(default)]
    pub(crate) host: String,
    #[serde(default)]
    pub(crate) pid: u32,
    /// The run's folder in its state folder (absolute).
    #[serde(default)]
    pub(crate) state: String,
    #[serde(default)]
    pub(crate) started_at: String,
}

impl Claim {
    /// The state folder that holds the run's folder and lock.
    pub(crate) fn state_dir(&self) -> Option<PathBuf> {
        Path::new(&self.state).parent().map(Path::to_owned)
    }
}

/// One run in a lake.
#[derive(Debug, Clone)]
pub(crate) struct RunInfo {
    pub(crate) run_id: String,
    pub(crate) state: RunState,
    pub(crate) started_at: Option<String>,
    /// Pairs exported (`summary.json`'s `kv_rows`), when a summary was written.
    pub(crate) kv_rows: Option<u64>,
    /// Data files in the lake's tables.
    pub(crate) data_files: Vec<String>,
    /// Files under `_runs/<run id>/` in the lake.
    pub(crate) report_files: Vec<String>,
    pub(crate) claim: Option<Claim>,
    /// Which of its Delta commits the lake holds; looked up for runs that
    /// did not finish (a finished run committed all of them).
    pub(crate) commits: Option<RunCommits>,
}

impl RunInfo {
    /// Where the run's state lives, as a person finds it.
    pub(crate) fn state_at(&self) -> String {
        match &self.claim {
            Some(c) if !c.state.is_empty() => format!("{}:{}", c.host, c.state),
            Some(c) => format!("{} (pid {})", c.host, c.pid),
            None => "-".to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RunsError {
    #[error(transparent)]
    Lake(#[from] WriteError),
    /// What was asked cannot be done (exit 2).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Lock(#[from] crate::ledger::LockError),
}

impl RunsError {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            RunsError::Refused(_) | RunsError::Lock(_) => 2,
            RunsError::Lake(_) => 1,
        }
    }
}

/// `_runs/<run id>/<name>` → (run id, name).
fn report_path(rel: &str) -> Option<(&str, &str)> {
    let rest = rel.strip_prefix("_runs/")?;
    let (run_id, name) = rest.split_once('/')?;
    Some((run_id, name))
}

/// `<table>/dt=<day>/run_id=<run id>/<final name>` → run id; temporary
/// (hidden) names are no data.
fn data_run_id(rel: &str) -> Option<&str> {
    let mut parts = rel.split('/');
    let (_table, _day, run, name) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || name.starts_with('.') {
        return None;
    }
    run.strip_prefix("run_id=")
}

/// The names under `_runs/<run id>/` that make a run a run; a state folder
/// kept in the lake (`OUT/_runs` by default) holds others beside them.
const RUN_MARKERS: [&str; 4] = ["_CLAIM", "summary.json", "_SUCCESS", "run.json"];

/// The lake's files by run: those under `_runs/<run id>/` (for the runs
/// that have a marker there) and the data files of each run's partitions.
type FilesByRun = BTreeMap<String, Vec<String>>;

fn files_by_run(lake: &dyn LakeStore) -> Result<(FilesByRun, FilesByRun), RunsError> {
    let mut reports = FilesByRun::new();
    for rel in lake.list("_runs")? {
        if let Some((run_id, _)) = report_path(&rel) {
            reports.entry(run_id.to_owned()).or_default().push(rel);
        }
    }
    reports.retain(|_, files| {
        files
            .iter()
            .any(|f| report_path(f).is_some_and(|(_, n)| RUN_MARKERS.contains(&n)))
    });
    let mut data = FilesByRun::new();
    for table in all_tables() {
        for rel in lake.list(table)? {
            if let Some(run_id) = data_run_id(&rel) {
                data.entry(run_id.to_owned()).or_default().push(rel);
            }
        }
    }
    Ok((reports, data))
}

/// Every run in the lake, oldest first.
pub(crate) fn list(lake: &dyn LakeStore) -> Result<Vec<RunInfo>, RunsError> {
    let (reports, data) = files_by_run(lake)?;
    let ids: HashSet<&String> = reports.keys().chain(data.keys()).collect();
    let mut runs = Vec::with_capacity(ids.len());
    // The tables' logs, read once for every unfinished run.
    let mut commits: Option<LakeCommits> = None;
    for run_id in ids {
        let report_files = reports.get(run_id).cloned().unwrap_or_default();
        let data_files = data.get(run_id).cloned().unwrap_or_default();
        let mut run = describe(lake, run_id, report_files, data_files)?;
        if !run.state.finished() {
            let commits = match &mut commits {
                Some(c) => c,
                None => commits.insert(LakeCommits::open(lake)?),
            };
            run.commits = Some(commits.of(run_id)?);
        }
        runs.push(run);
    }
    runs.sort_by(|a, b| (&a.started_at, &a.run_id).cmp(&(&b.started_at, &b.run_id)));
    Ok(runs)
}

/// One run of the lake, if it has any file there.
fn find(lake: &dyn LakeStore, run_id: &str) -> Result<Option<RunInfo>, RunsError> {
    let (mut reports, mut data) = files_by_run(lake)?;
    let (report_files, data_files) = (reports.remove(run_id), data.remove(run_id));
    if report_files.is_none() && data_files.is_none() {
        return Ok(None);
    }
    let (r, d) = (
        report_files.unwrap_or_default(),
        data_files.unwrap_or_default(),
    );
    describe(lake, run_id, r, d).map(Some)
}

/// Read one run's claim and summary and tell where it stands.
fn describe(
    lake: &dyn LakeStore,
    run_id: &str,
    report_files: Vec<String>,
    data_files: Vec<String>,
) -> Result<RunInfo, RunsError> {
    let has = |name: &str| {
        report_files
            .iter()
            .any(|f| report_path(f).is_some_and(|(_, n)| n == name))
    };
    let read_json = |name: &str| -> Result<Option<serde_json::Value>, RunsError> {
        if !has(name) {
            return Ok(None);
        }
        let bytes = lake.get(&format!("_runs/{run_id}/{name}"))?;
        Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
    };
    let summary = read_json("summary.json")?;
    let claim: Option<Claim> = read_json("_CLAIM")?.and_then(|v| serde_json::from_value(v).ok());
    let running = claim
        .as_ref()
        .and_then(|c| c.state_dir())
        .is_some_and(|d| RunLock::holders(&d).iter().any(|h| h.run_id == run_id));
    let status = summary.as_ref().and_then(|s| s["status"].as_str());
    let started_at = summary
        .as_ref()
        .and_then(|s| s["started_at"].as_str().map(str::to_owned))
        .or_else(|| claim.as_ref().map(|c| c.started_at.clone()))
        .filter(|s| !s.is_empty());
    Ok(RunInfo {
        run_id: run_id.to_owned(),
        state: RunState::of(has("_SUCCESS"), status, running),
        started_at,
        kv_rows: summary.as_ref().and_then(|s| s["kv_rows"].as_u64()),
        data_files,
        report_files,
        claim,
        commits: None,
    })
}

/// The runs as a table for people, then a line for each run whose Delta
/// commits are not whole (COMMITTED: which of them the lake holds).
pub(crate) fn render(runs: &[RunInfo]) -> String {
    let line = |cells: [&str; 7]| {
        let [run, status, started, rows, files, committed, state] = cells;
        format!(
            "{run:<28} {status:<10} {started:<27} {rows:>12} {files:>6}  {committed:<11}  {state}\n"
        )
    };
    let mut out = line([
        "RUN",
        "STATUS",
        "STARTED",
        "ROWS",
        "FILES",
        "COMMITTED",
        "STATE",
    ]);
    let mut notes = String::new();
    for r in runs {
        let (committed, note) = r.commits.as_ref().map_or(("-", None), RunCommits::describe);
        out.push_str(&line([
            &r.run_id,
            r.state.name(),
            r.started_at.as_deref().unwrap_or("-"),
            &r.kv_rows.map_or("-".to_owned(), |n| n.to_string()),
            &r.data_files.len().to_string(),
            committed,
            &r.state_at(),
        ]));
        if let Some(note) = note {
            notes.push_str(&format!("run {}: {note}\n", r.run_id));
        }
    }
    out + &notes
}

/// The unfinished runs in the lake other than `this_run`, for the one line
/// a new run says about them.
pub(crate) fn unfinished_others(
    lake: &dyn LakeStore,
    this_run: &str,
) -> Result<Vec<String>, RunsError> {
    let mut seen: BTreeMap<String, bool> = BTreeMap::new();
    for rel in lake.list("_runs")? {
        if let Some((run_id, name)) = report_path(&rel)
            && run_id != this_run
            && RUN_MARKERS.contains(&name)
        {
            *seen.entry(run_id.to_owned()).or_default() |= name == "_SUCCESS";
        }
    }
    Ok(seen
        .into_iter()
        .filter(|(_, done)| !done)
        .map(|(id, _)| id)
        .collect())
}

/// What `drop` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Dropped {
    pub(crate) data_files: usize,
    pub(crate) report_files: usize,
    /// The run's folder in a state folder on this machine, removed too.
    pub(crate) state: Option<PathBuf>,
}

/// Remove an unfinished run: its state on this machine first (so that no
/// export resumes it meanwhile), its files waiting for upload, its data
/// files, then its reports with the claim last (so that a drop cut short
/// still lists the run and can be run again). Refused for a finished run,
/// one whose export holds its lock, and one whose state is on another
/// machine unless `force`.
pub(crate) fn drop_run(
    lake: &dyn LakeStore,
    run_id: &str,
    force: bool,
    this_host: &str,
) -> Result<Dropped, RunsError> {
    let Some(run) = find(lake, run_id)? else {
        return Err(RunsError::Refused(format!(
            "no run {run_id} in {}",
            lake.display("").trim_end_matches('/')
        )));
    };
    if run.state.finished() {
        return Err(RunsError::Refused(format!(
            "run {run_id} is {} (it has _SUCCESS); only unfinished runs are dropped",
            run.state.name()
        )));
    }
    let commits = RunCommits::of(lake, run_id)?;
    if commits.any() {
        let committed = [commits.history, commits.current].concat();
        return Err(RunsError::Refused(format!(
            "run {run_id} is committed to the Delta table(s) {} (it stopped after its commit, \
             before _SUCCESS); its files are part of them: finish it with the same export \
             command instead",
            committed.join(", ")
        )));
    }
    let claim = run.claim.clone().unwrap_or_default();
    let elsewhere = !claim.host.is_empty() && claim.host != this_host;
    if elsewhere && !force {
        return Err(RunsError::Refused(format!(
            "run {run_id}'s state is on host {} ({}); drop it there, or give --force if that \
             machine and its export are gone",
            claim.host, claim.state
        )));
    }
    let run_dir = (!elsewhere && !claim.state.is_empty())
        .then(|| PathBuf::from(&claim.state))
        .filter(|d| d.is_dir());
    // Held while the run is removed: no export of this state folder starts meanwhile.
    let _lock = match run_dir.as_ref().and_then(|d| d.parent()) {
        Some(state_dir) => Some(RunLock::acquire(state_dir, &dropper(run_id))?),
        None => None,
    };
    if let Some(d) = &run_dir {
        remove_if_there(&d.join("run.json"))?;
    }
    lake.remove_strays(run_id, &HashSet::new())?;
    for f in &run.data_files {
        lake.delete(f)?;
    }
    let claim_rel = format!("_runs/{run_id}/_CLAIM");
    for f in run.report_files.iter().filter(|f| **f != claim_rel) {
        lake.delete(f)?;
    }
    lake.delete(&claim_rel)?;
    if let Some(d) = &run_dir
        && d.exists()
    {
        std::fs::remove_dir_all(d).map_err(|source| WriteError::Path {
            path: d.clone(),
            source,
        })?;
    }
    Ok(Dropped {
        data_files: run.data_files.len(),
        report_files: run.report_files.len(),
        state: run_dir,
    })
}

/// Who holds a state folder's lock while a run is dropped.
fn dropper(run_id: &str) -> Holder {
    Holder {
        run_id: format!("(dropping {run_id})"),
        pid: std::process::id(),
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    }
}

fn remove_if_there(path: &Path) -> Result<(), WriteError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(WriteError::Path {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_s_state_follows_its_files_and_its_lock() {
        use RunState::*;
        let table = [
            (true, Some("complete"), false, Complete),
            (true, Some("partial"), false, Partial),
            (true, None, false, Complete),
            (false, Some("interrupted"), false, Unfinished),
            (false, None, false, Unfinished),
            (false, Some("failed"), false, Failed),
            (false, Some("failed"), true, Running),
            (false, None, true, Running),
            // _SUCCESS decides, whatever holds the lock.
            (true, Some("complete"), true, Complete),
        ];
        for (success, status, running, want) in table {
            assert_eq!(
                RunState::of(success, status, running),
                want,
                "{success} {status:?} {running}"
            );
        }
    }

    #[test]
    fn paths_name_their_runs() {
        assert_eq!(report_path("_runs/r1/_CLAIM"), Some(("r1", "_CLAIM")));
        assert_eq!(report_path("_runs/.lock"), None);
        assert_eq!(
            data_run_id("key_values/dt=2026-11-26/run_id=r1/part-00000-r1.parquet"),
            Some("r1")
        );
        assert_eq!(
            data_run_id("key_values/dt=2026-11-26/run_id=r1/.part-00000-r1.parquet.inprogress"),
            None
        );
        assert_eq!(data_run_id("key_values/dt=2026-11-26/x"), None);
    }
}
