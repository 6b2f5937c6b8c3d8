//! `export --changed`: the input comes from the lake. For each kind of
//! message, a list is made of the messages named by events committed
//! since the app's last `--changed` run (`table::changed`), the failed
//! messages of that run, the sweep's share of the known messages, and the
//! rows of `--input`; then it is exported as any list is, the events
//! version it was made up to committed with the current tables.
//!
//! The list and the run it belongs to are kept in the state folder
//! (`changed/<app>-<kind>.csv` and `.json`): until that run has its
//! `_SUCCESS`, the same command resumes it with the same list; after, the
//! next list is made.

use super::{ExportError, ExportPlan, Tuning, Ui};
use crate::fetch::StopSignal;
use crate::input::{InputItem, InputReader};
use crate::kind::{Kind, MessageId};
use crate::report::Summary;
use crate::table::changed;
use crate::table::delta::DeltaLake;
use crate::write::{LakeStore, WriteError};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `export --changed` as planned: the export's settings (its `input`
/// unused), the sweep, the kinds, and more messages to read.
#[derive(Debug, Clone)]
pub struct ChangedPlan {
    pub base: ExportPlan,
    /// Every known message is read at least once every this many runs (0: no sweep).
    pub sweep_runs: u32,
    pub kinds: Vec<Kind>,
    /// A list of more messages (`--input`), of one kind.
    pub input: Option<PathBuf>,
}

/// The list a `--changed` run of one kind reads, as the state folder keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct ListMeta {
    run_id: String,
    /// The events table version the list was made up to (none: no events table).
    events_version: Option<u64>,
    /// What the list holds, for people.
    told: String,
}

fn list_paths(plan: &ExportPlan, kind: Kind) -> (PathBuf, PathBuf) {
    let name = format!("{}-{}", plan.api.sdkappid, kind.spec().events_table());
    let dir = plan.state_dir.join("changed");
    (
        dir.join(format!("{name}.csv")),
        dir.join(format!("{name}.json")),
    )
}

/// Export every kind's list in turn; the runs' summaries (a kind with
/// nothing to read has none).
pub async fn run(
    plan: ChangedPlan,
    ui: Ui,
    tuning: Tuning,
    stop: StopSignal,
) -> Result<Vec<Summary>, ExportError> {
    let lake = plan
        .base
        .out
        .open(&plan.base.state_dir, plan.base.write.store_timeout)?;
    lake.check()?;
    let delta = DeltaLake::open(lake.table_root()?).map_err(WriteError::Io)?;
    let mut summaries = Vec::new();
    for &kind in &plan.kinds {
        if stop.reason().is_some() {
            break;
        }
        let made = tokio::task::block_in_place(|| list(&plan, kind, &lake, &delta))?;
        let Some((meta, input)) = made else { continue };
        if !plan.base.quiet {
            eprintln!("msgext: --changed, {}: {}", kind.spec().name(), meta.told);
        }
        let run_plan = ExportPlan {
            input,
            run_id: Some(meta.run_id.clone()),
            changed: meta.events_version,
            ..plan.base.clone()
        };
        summaries.push(super::run(run_plan, ui, tuning.clone(), stop.clone()).await?);
    }
    Ok(summaries)
}

/// The list of `kind` to export now: the kept one while its run has not
/// finished, else a new one (none: nothing to read).
fn list(
    plan: &ChangedPlan,
    kind: Kind,
    lake: &Arc<dyn LakeStore>,
    delta: &DeltaLake,
) -> Result<Option<(ListMeta, PathBuf)>, ExportError> {
    let (csv, json) = list_paths(&plan.base, kind);
    let kept: Option<ListMeta> = match std::fs::read(&json) {
        Ok(bytes) => serde_json::from_slice(&bytes).ok(),
        Err(_) => None,
    };
    if let Some(meta) = &kept
        && csv.exists()
        && !lake.exists(&format!("_runs/{}/_SUCCESS", meta.run_id))?
    {
        let told = format!("resuming run {} ({})", meta.run_id, meta.told);
        return Ok(Some((
            ListMeta {
                told,
                ..meta.clone()
            },
            csv,
        )));
    }
    let made = make(plan, kind, (&**lake, delta), kept.as_ref())?;
    let Some((ids, events_version, told)) = made else {
        if !plan.base.quiet {
            eprintln!("msgext: --changed, {}: nothing to read", kind.spec().name());
        }
        return Ok(None);
    };
    let meta = ListMeta {
        run_id: super::claim::default_run_id(chrono::Utc::now()),
        events_version,
        told,
    };
    crate::write::write_input_list(&csv, kind, &ids)?;
    let text = serde_json::to_vec_pretty(&meta).unwrap_or_default();
    crate::write::write_atomically(&json, &text)?;
    Ok(Some((meta, csv)))
}

/// The messages of a new list, each once: events, the last run's
/// failures, `--input`, the sweep; the events version; what it holds.
type Made = (Vec<MessageId>, Option<u64>, String);

fn make(
    plan: &ChangedPlan,
    kind: Kind,
    (lake, delta): (&dyn LakeStore, &DeltaLake),
    last: Option<&ListMeta>,
) -> Result<Option<Made>, ExportError> {
    let app = plan.base.api.sdkappid;
    let since = changed::consumed(lake, delta, kind, app)?;
    let events = changed::new_events(lake, delta, kind, app, since)?;
    let mut list = Unique::default();
    for id in events.messages {
        list.push(id);
    }
    let from_events = list.ids.len();
    let failed = match last {
        Some(m) => last_failures(lake, &m.run_id, kind)?,
        None => Vec::new(),
    };
    let retried = failed.len();
    failed.into_iter().for_each(|id| list.push(id));
    let listed = match &plan.input {
        Some(path) => input_messages(path, kind)?,
        None => Vec::new(),
    };
    let given = listed.len();
    listed.into_iter().for_each(|id| list.push(id));
    let mut swept = 0;
    let known = changed::sweep(lake, delta, kind, app, plan.sweep_runs, |id| {
        swept += 1;
        list.push(id);
        Ok(())
    })?;
    if list.ids.is_empty() {
        return Ok(None);
    }
    let whole = if events.whole {
        " (the last position was cleaned from the log: every event)"
    } else {
        ""
    };
    let told = format!(
        "{} messages: {from_events} named by {} new event rows{whole}, {retried} failed last time, {given} from --input, {swept} of {known} known swept (K = {})",
        list.ids.len(),
        events.rows,
        plan.sweep_runs
    );
    Ok(Some((list.ids, events.version, told)))
}

/// Messages in order, each once (by identity).
#[derive(Default)]
struct Unique {
    seen: HashSet<u128>,
    ids: Vec<MessageId>,
}

impl Unique {
    fn push(&mut self, id: MessageId) {
        if self.seen.insert(id.fingerprint()) {
            self.ids.push(id);
        }
    }
}

/// The failed messages of run `run_id` (its errors.csv in the lake), of `kind`.
fn last_failures(
    lake: &dyn LakeStore,
    run_id: &str,
    kind: Kind,
) -> Result<Vec<MessageId>, ExportError> {
    let rel = format!("_runs/{run_id}/errors.csv");
    let Some(bytes) = lake.get(&rel)? else {
        return Ok(Vec::new());
    };
    let reader = InputReader::new(Path::new(&lake.display(&rel)), std::io::Cursor::new(bytes))?;
    messages(reader, kind)
}

/// The messages of `--input` (of `kind`; a list of the other kind adds none).
fn input_messages(path: &Path, kind: Kind) -> Result<Vec<MessageId>, ExportError> {
    messages(InputReader::open(path)?, kind)
}

fn messages<R: std::io::Read>(
    reader: InputReader<R>,
    kind: Kind,
) -> Result<Vec<MessageId>, ExportError> {
    if reader.kind() != kind {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for item in reader {
        match item? {
            InputItem::Message(m) => out.push(m.msg),
            InputItem::Invalid(r) => {
                eprintln!("msgext: warning: line {}: {} (not read)", r.line, r.reason)
            }
            InputItem::Duplicate { .. } | InputItem::Skipped { .. } => {}
        }
    }
    Ok(out)
}
