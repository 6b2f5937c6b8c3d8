//! One state, whatever crashed (DESIGN §7): before a run reads what the
//! current tables know, it brings them to the state of whole runs. A run
//! is in the current tables when both of its commits are in (its `txn` in
//! `current_messages` and in `current_key_values`). A run that is not
//! whole, killed between its commits, or after its history commit and
//! before its current ones, whatever list it read, is completed here from
//! the lake: its history files say what it read, the tables what was
//! known (`current::commit`, the same computation its own command makes).
//! So a later run never starts from a `current_messages` row whose pairs
//! are not in `current_key_values`.
//!
//! The same repairs a `current_key_values` that lost its newest log
//! entry: the run that entry held is completed again. What cannot be
//! completed (a run whose history is gone, a data file deleted) is told as
//! damage, with the way out: `--full` rebuilds the app's current tables.

use super::current::{self, CurrentCommit};
use super::{names, read};
use crate::kind::Kind;
use crate::table::delta::{DeltaLake, RunCommit, app_id, has_log};
use crate::write::{FileInfo, LakeStore, WriteError, WriteOptions};
use delta_kernel::snapshot::SnapshotRef;
use std::collections::BTreeSet;
use std::sync::Arc;

/// The lake and the kind whose current tables are settled.
pub(crate) struct Settle<'a> {
    pub(crate) lake: &'a Arc<dyn LakeStore>,
    pub(crate) delta: &'a DeltaLake,
    pub(crate) kind: Kind,
    pub(crate) opts: WriteOptions,
    /// The run settling, and the `--changed` position its commit carries
    /// when it completes its own commits. Another run completing a killed
    /// `--changed` run does not know that run's position: the position
    /// then stays, and the next `--changed` run reads those events again.
    pub(crate) own: Option<(&'a str, crate::table::delta::Txn)>,
}

/// A run the current tables hold in part, completed (or found whole by then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Completed {
    pub(crate) run_id: String,
    pub(crate) sdkappid: u64,
}

impl Settle<'_> {
    /// Complete every run that is not whole: `named` (runs the app's
    /// `current_messages` rows name that may lack their pairs' commit)
    /// and the unfinished runs of the lake (`unfinished`, no `_SUCCESS`)
    /// whose history is committed.
    pub(crate) fn complete(
        &self,
        named: &BTreeSet<String>,
        unfinished: &[String],
    ) -> Result<Vec<Completed>, WriteError> {
        if named.is_empty() && unfinished.is_empty() {
            return Ok(Vec::new());
        }
        let [kv_table, msg_table] = names(self.kind);
        let [hist_kv, hist_msgs] = self.kind.spec().tables();
        let (lake, delta) = (self.lake.as_ref(), self.delta);
        let snap = |t: &str| super::latest(lake, delta, t);
        let holds = |t: &str, s: &Option<SnapshotRef>, run: &str| super::holds(delta, t, s, run);
        let (kv, msgs) = (snap(&kv_table)?, snap(&msg_table)?);
        let (hkv, hmsgs) = (snap(hist_kv)?, snap(hist_msgs)?);
        let mut todo = Vec::new();
        for run in named {
            if !holds(&kv_table, &kv, run)? {
                todo.push(run.clone());
            }
        }
        for run in unfinished {
            if named.contains(run) {
                continue;
            }
            let history = holds(hist_msgs, &hmsgs, run)? && holds(hist_kv, &hkv, run)?;
            if history && !(holds(&msg_table, &msgs, run)? && holds(&kv_table, &kv, run)?) {
                todo.push(run.clone());
            }
        }
        let mut done = Vec::new();
        for run in todo {
            done.push(self.complete_run(&run, (&hkv, &hmsgs))?);
        }
        Ok(done)
    }

    /// Every data file the app's rows of the current tables are in is
    /// there (one listing a table): a file another tool removed is damage
    /// found before any call, not halfway through the commit.
    pub(crate) fn check_files(&self, sdkappid: u64) -> Result<(), WriteError> {
        let lake = self.lake.as_ref();
        let folder = super::app_dir(sdkappid);
        for table in names(self.kind) {
            if !has_log(lake, &table)? {
                continue;
            }
            let snapshot = self.delta.snapshot(&table)?;
            let live = self
                .delta
                .files_under(&table, &snapshot, &format!("{folder}/"))?;
            let there: std::collections::HashSet<String> = lake
                .list(&format!("{table}/{folder}"))?
                .into_iter()
                .collect();
            if let Some(gone) = live
                .iter()
                .map(|f| format!("{table}/{}", f.path))
                .find(|p| !there.contains(p))
            {
                return Err(damaged(format!(
                    "{} is in the table's log but not in the lake",
                    lake.display(&gone)
                )));
            }
        }
        Ok(())
    }

    /// Complete `run`'s commits to the current tables from its history.
    fn complete_run(
        &self,
        run: &str,
        (hkv, hmsgs): (&Option<SnapshotRef>, &Option<SnapshotRef>),
    ) -> Result<Completed, WriteError> {
        let [hist_kv, hist_msgs] = self.kind.spec().tables();
        let mut files = Vec::new();
        for (table, snap) in [(hist_kv, hkv), (hist_msgs, hmsgs)] {
            let Some(s) = snap else { continue };
            if !self.delta.has_transaction(table, s, &app_id(run))? {
                return Err(damaged(format!(
                    "run {run} is in the current tables but not in {}",
                    self.lake.display(table)
                )));
            }
            for f in self.delta.run_files(table, s, run)? {
                files.push(FileInfo {
                    path: format!("{table}/{}", f.path),
                    rows: f.rows.unwrap_or(0),
                    bytes: 0,
                    sha256: String::new(),
                    stats: Vec::new(),
                });
            }
        }
        let sdkappid = self.sdkappid_of(&files, hist_msgs, run)?;
        let count = |table: &str| -> u64 {
            files
                .iter()
                .filter(|f| f.path.starts_with(&format!("{table}/")))
                .map(|f| f.rows)
                .sum()
        };
        let commit = RunCommit {
            run_id: run,
            sdkappid,
            status: "completed",
            messages: count(hist_msgs),
            kv_rows: count(hist_kv),
        };
        let current = CurrentCommit {
            lake: self.lake,
            delta: self.delta,
            kind: self.kind,
            sdkappid,
            files: &files,
            opts: self.opts,
            rebuild: false,
            position: self
                .own
                .as_ref()
                .filter(|(own, _)| *own == run)
                .map(|(_, txn)| txn.clone()),
        };
        current::commit(&current, &commit)?;
        tracing::info!(
            run_id = run,
            sdkappid,
            "completed an earlier run's commits to the current tables"
        );
        Ok(Completed {
            run_id: run.to_owned(),
            sdkappid,
        })
    }

    /// The app a run exported, from its first history row.
    fn sdkappid_of(&self, files: &[FileInfo], table: &str, run: &str) -> Result<u64, WriteError> {
        let prefix = format!("{table}/");
        for f in files.iter().filter(|f| f.path.starts_with(&prefix)) {
            for batch in read::batches(self.lake.as_ref(), &f.path)? {
                let batch = batch?;
                let apps = read::ints(&batch, "sdkappid")?;
                if apps.is_empty() {
                    continue;
                }
                return u64::try_from(apps.value(0))
                    .map_err(|_| damaged(format!("run {run}: an sdkappid below zero")));
            }
        }
        Err(damaged(format!("run {run}: no history rows in {table}")))
    }
}

/// The current tables cannot be brought to one state: exit 1, saying how
/// `--full` rebuilds them.
pub(crate) fn damaged(what: String) -> WriteError {
    WriteError::Damaged(what)
}
