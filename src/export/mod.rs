//! One export run, end to end: input reader thread → bounded channel → N fetch
//! workers sharing one rate limiter → bounded channel → one writer that owns
//! the lake files, the WAL and the ledger (`writer`). Memory stays flat however
//! long the input. A run holds the folder lock throughout; run again with the
//! same `--run-id`, it resumes from what the earlier attempt committed.
//!
//! Threads and channels. The command's runtime (one worker) runs the fetch
//! workers, the limiter, the concurrency tuner, the circuit breaker, the
//! progress line and the writer's clock (`writer::tick`). The input is read
//! on a thread of its own, which sends chunks of messages to the workers
//! (`work`, bounded, `blocking_send`) and what it settles itself (invalid,
//! duplicate, resumed rows) to the writer (`events`, bounded). The workers
//! send each finished message to the writer on `events`. The writer runs on
//! `spawn_blocking` and takes `events` with `blocking_recv`: it encodes,
//! writes, fsyncs and publishes. A bucket's uploads are tasks on the
//! runtime, their file reads on tokio's blocking pool (`write::object`). The Delta kernel,
//! at the start and the end of a run, keeps a runtime of its own
//! (`table::delta`): the only other one.

pub mod changed;
mod claim;
mod stages;
mod writer;

pub(crate) use claim::hostname;
use claim::{default_run_id, open_run, run_meta, tell_start, unfinished_run, unwritable_state};
use stages::{AbortOnDrop, Ended, interrupt_on_signal, launch, wait};

pub use writer::{COMMIT_EVERY, GROUP_COMMIT};

use crate::api::client::DEFAULT_TIMEOUT;
use crate::fetch::limiter::Limiter;
use crate::fetch::retry::RetryPolicy;
use crate::fetch::{FetchOutcome, FetchStats, StopReason, StopSignal};
use crate::input::{InputError, InputReader, InvalidRow};
use crate::model::InputMessage;
use crate::report::{ProgressMode, RunStatus, Summary};
use crate::write::LakeStore;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// A validated export.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    pub input: std::path::PathBuf,
    pub out: crate::write::Out,
    /// The run's control files: `<state_dir>/<run_id>/` and the folder lock.
    pub state_dir: std::path::PathBuf,
    pub format: crate::write::Format,
    /// Delta tables or plain folders (always plain for CSV).
    pub table_format: crate::write::TableFormat,
    /// Where the API is and how it is called.
    pub api: crate::api::Connection,
    /// Messages fetched at once; `None`: follow rate × latency (see `fetch::concurrency`).
    pub concurrency: Option<usize>,
    pub run_id: Option<String>,
    pub quiet: bool,
    /// Invalid input rows make the run partial (exit 3).
    pub strict_input: bool,
    pub write: crate::write::WriteOptions,
    /// When a message the current tables know is read in full anyway.
    pub full: crate::table::FullReads,
    /// A `--changed` run: the events table version its list was made up
    /// to, committed with the current tables as the app's position.
    pub changed: Option<u64>,
}

/// Why a run could not start or could not finish writing.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A usage problem: exit 2.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Input(#[from] InputError),
    /// The endpoint or the proxy cannot be used: exit 2.
    #[error(transparent)]
    Setup(#[from] crate::api::client::SetupError),
    /// I/O on the output folder: exit 1.
    #[error("{0}")]
    Output(String),
    /// The lake (a folder or a bucket) refused a write or a check: exit 1.
    #[error(transparent)]
    Lake(#[from] crate::write::WriteError),
    /// Another run holds the folder: exit 1.
    #[error(transparent)]
    Busy(#[from] crate::ledger::LockError),
    /// The run's control files (run.json, WAL, ledger) cannot be read or written: exit 1.
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    /// Writing the lake, the WAL or the ledger failed: exit 1.
    #[error(transparent)]
    Writer(#[from] writer::WriterError),
    /// The writer thread panicked: exit 1.
    #[error("the writer crashed: {0}")]
    WriterCrashed(String),
    /// Ctrl-C / SIGTERM, and the run could not end cleanly after it (the
    /// store did not answer within the grace): exit 130.
    #[error("interrupted: {0}")]
    Interrupted(#[source] Box<ExportError>),
    /// The run already completed: exit 2.
    #[error("run {run_id} already completed ({path} exists); give a new --run-id to export again")]
    AlreadyComplete { run_id: String, path: String },
    /// Another export (another machine, another state folder) claimed this
    /// run id in the lake: exit 2.
    #[error(
        "run {run_id} belongs to another export ({holder}; {path}). If that export still runs, let it \
         finish; if its process is gone, resume it with that state folder (--state-dir) on that host, \
         or remove the run with `msgext runs drop {run_id} --out {lake}`. Without --run-id this \
         command starts a run of its own."
    )]
    Claimed {
        run_id: String,
        holder: String,
        path: String,
        lake: String,
    },
}

impl ExportError {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            ExportError::Usage(_)
            | ExportError::Setup(_)
            | ExportError::AlreadyComplete { .. }
            | ExportError::Claimed { .. }
            | ExportError::Input(InputError::Open { .. })
            | ExportError::Input(InputError::NoHeader { .. })
            | ExportError::Input(InputError::MissingColumn { .. })
            | ExportError::Input(InputError::MixedKinds { .. }) => 2,
            ExportError::Lake(crate::write::WriteError::Delta(e)) if e.is_wrong_lake() => 2,
            ExportError::Interrupted(_) => 130,
            _ => 1,
        }
    }
}

/// How a run is shown: the bar on a terminal, JSON lines off one, nothing when quiet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ui {
    pub progress: ProgressMode,
}

/// Tuning that is not on the command line (tests shorten the backoff).
#[derive(Debug, Clone)]
pub struct Tuning {
    pub retry: RetryPolicy,
    pub timeout: std::time::Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            retry: RetryPolicy::default(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

enum Event {
    Done(InputMessage, FetchOutcome),
    Invalid(InvalidRow),
    Duplicate,
    Skipped,
    /// Settled by an earlier attempt of this run.
    Resumed,
    InputFailed(InputError),
    /// The writer's clock (`writer::tick`), for the WAL's group commit.
    Tick,
}

/// Outcomes waiting for the writer. Small on purpose: they are fetched but not
/// yet in the WAL (fetched again after a crash) and they hold their pairs.
pub const EVENT_QUEUE: usize = 48;

fn io_err(path: &Path, e: impl std::fmt::Display) -> ExportError {
    ExportError::Output(format!("{}: {e}", path.display()))
}

/// Run an export to the end. `Ok` carries the summary whatever the status;
/// `Err` means nothing could be started or the output could not be written.
pub async fn run(
    plan: ExportPlan,
    ui: Ui,
    tuning: Tuning,
    stop: StopSignal,
) -> Result<Summary, ExportError> {
    match run_to_end(plan, ui, tuning, stop.clone()).await {
        // Whatever failed after Ctrl-C / SIGTERM (most often a store that
        // stopped answering, given up on), the run was interrupted: 130.
        Err(e) if stop.reason() == Some(StopReason::Interrupted) => {
            Err(ExportError::Interrupted(Box::new(e)))
        }
        done => done,
    }
}

async fn run_to_end(
    plan: ExportPlan,
    ui: Ui,
    tuning: Tuning,
    stop: StopSignal,
) -> Result<Summary, ExportError> {
    let (run, begun) = start(&plan, &stop)?;
    let stages = launch(&plan, ui, &tuning, &stop, &run, begun)?;
    let ended = wait(stages, &stop).await?;
    summarize(&plan, &stop, run, ended)
}

/// A run as it stands once started: what stays fixed until its end.
struct Run {
    clock: Instant,
    lake: Arc<dyn LakeStore>,
    run_id: String,
    run_dir: std::path::PathBuf,
    meta: crate::ledger::RunMeta,
    kind: crate::kind::Kind,
    rows: u64,
    stats: Arc<FetchStats>,
    limiter: Option<Arc<Limiter>>,
    /// The lake's Delta tables the run commits to (none: plain folders).
    delta: Option<crate::table::history::DeltaRun>,
    /// `--full` over damaged current tables: the commit replaces the app's rows.
    rebuild: bool,
    /// Held to the end: one run of this input at a time.
    _lock: crate::ledger::RunLock,
    _interrupts_lake: AbortOnDrop,
}

/// What the stages take over from `start`: the input to read, and the
/// run's control files with what an earlier attempt left.
struct Begun {
    reader: InputReader<crate::input::VerifiedRead>,
    /// What the current tables know (incremental reads start from it).
    prior: Arc<crate::incremental::Prior>,
    files: crate::ledger::RunFiles,
    recovered: crate::ledger::Recovered,
}

/// The lake, checked, and what stops waiting on it after a signal.
fn open_lake(
    plan: &ExportPlan,
    stop: &StopSignal,
) -> Result<(Arc<dyn LakeStore>, AbortOnDrop), ExportError> {
    let lake = plan.out.open(&plan.state_dir, plan.write.store_timeout)?;
    lake.check()?;
    let interrupts_lake = interrupt_on_signal(stop, &lake);
    if matches!(plan.out, crate::write::Out::Url(_)) && !plan.quiet {
        eprintln!(
            "msgext: the run's state (lock, log, files waiting for upload) is in {}",
            plan.state_dir.display()
        );
    }
    Ok((lake, interrupts_lake))
}

/// Open the lake, take the state folder's lock, read the input through
/// once, choose the run (resumed or new), claim it and recover what an
/// earlier attempt left. Nothing is fetched yet.
fn start(plan: &ExportPlan, stop: &StopSignal) -> Result<(Run, Begun), ExportError> {
    let started = chrono::Utc::now();
    let clock = Instant::now();
    // A bad input (no file, no usable header) is told before anything is created.
    drop(crate::input::InputReader::open(&plan.input)?);
    // The lake, behind the one interface that knows where it lives; a bucket
    // that cannot be reached is told before anything is read or fetched.
    let (lake, interrupts_lake) = open_lake(plan, stop)?;
    // One run of an input at a time, before the input's full pass.
    let holder = |run_id: &str| crate::ledger::Holder {
        run_id: run_id.to_owned(),
        pid: std::process::id(),
        started_at: started.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    };
    let mut lock = crate::ledger::RunLock::acquire_input(
        &plan.state_dir,
        &plan.input,
        &holder(plan.run_id.as_deref().unwrap_or("(reading its input)")),
    )
    .map_err(|e| unwritable_state(e, &plan.state_dir))?;
    let (reader, scan) = crate::input::open_prescanned(&plan.input, !plan.quiet)?;
    let wanted = run_meta(plan, &scan, started);
    // The same command resumes: without --run-id, an unfinished run of the
    // same input and settings is taken up again.
    let run_id = match &plan.run_id {
        Some(id) => id.clone(),
        None => unfinished_run(&*lake, &plan.state_dir, &wanted)?
            .unwrap_or_else(|| default_run_id(started)),
    };
    lock.describe(&holder(&run_id))?;
    // The lake's tables are the ones this run may write (Delta or plain,
    // msgext's schema), before anything of the run is written.
    let delta = crate::table::history::prepare(
        &*lake,
        reader.kind(),
        &run_id,
        (plan.format, plan.table_format),
    )?;
    // The lake's unfinished runs, listed once: told to the user, and
    // completed first where their current commits are not whole.
    let others = crate::runs::unfinished_others(&*lake, &run_id)
        .map_err(|e| ExportError::Output(e.to_string()))?;
    let (prior, rebuild) = match &delta {
        Some(d) => current_state(plan, (&lake, d.lake()), reader.kind(), &run_id, &others)?,
        None => (crate::incremental::Prior::default(), false),
    };
    tracing::info!(run_id = %run_id, input = %plan.input.display(), rows = scan.rows,
        out = %plan.out.display(), state = %plan.state_dir.display(), "export started");
    // The run's control files; its reports go to the lake's _runs/<run_id>/.
    let run_dir = plan.state_dir.join(&run_id);
    let opened = open_run(&*lake, &run_id, &run_dir, &wanted)?;
    if !plan.quiet {
        tell_start(&opened, &run_id, &others, &plan.out);
    }
    let run = Run {
        clock,
        lake,
        run_id,
        run_dir,
        meta: opened.meta,
        kind: reader.kind(),
        rows: scan.rows,
        stats: Arc::new(FetchStats::default()),
        limiter: Limiter::new(plan.api.rate).map(Arc::new),
        delta,
        rebuild,
        _lock: lock,
        _interrupts_lake: interrupts_lake,
    };
    let begun = Begun {
        reader,
        prior: Arc::new(prior),
        files: opened.files,
        recovered: opened.recovered,
    };
    Ok((run, begun))
}

/// What the current tables know, once every run in them is whole (this
/// run's `others`: the lake's unfinished runs), and whether the run must
/// rebuild them (`--full` over damage); what was done is told.
fn current_state(
    plan: &ExportPlan,
    (lake, delta): (&Arc<dyn LakeStore>, &crate::table::delta::DeltaLake),
    kind: crate::kind::Kind,
    run_id: &str,
    others: &[String],
) -> Result<(crate::incremental::Prior, bool), ExportError> {
    crate::table::check(&**lake, delta, kind)?;
    // This run too, resumed after a kill between its own commits.
    let unfinished: Vec<String> = others.iter().cloned().chain([run_id.to_owned()]).collect();
    let position = plan
        .changed
        .map(|v| crate::table::changed::position_txn(plan.api.sdkappid, v));
    let settle = crate::table::settle::Settle {
        lake,
        delta,
        kind,
        opts: plan.write,
        own: position.map(|p| (run_id, p)),
    };
    let state = crate::table::state(&settle, plan.api.sdkappid, plan.full, &unfinished)?;
    if !plan.quiet {
        for c in &state.completed {
            eprintln!(
                "msgext: completed run {}'s commits to the current tables (it stopped between them)",
                c.run_id
            );
        }
        if let Some(why) = &state.rebuild {
            eprintln!("msgext: {why}; --full rebuilds this app's rows from this run");
        }
    }
    Ok((state.prior, state.rebuild.is_some()))
}

/// A finished run's Delta commits: the history tables, then the current ones.
fn commit_tables(
    plan: &ExportPlan,
    run: &Run,
    delta: &crate::table::history::DeltaRun,
    summary: &Summary,
) -> Result<(), ExportError> {
    release_free_heap();
    crate::failpoint::hit("before_delta_commit");
    let commit = crate::table::delta::RunCommit {
        run_id: &run.run_id,
        sdkappid: plan.api.sdkappid,
        status: summary.status.name(),
        messages: summary.messages.ok + summary.messages.not_found + summary.messages.failed,
        kv_rows: summary.kv_rows,
    };
    delta.commit(&*run.lake, &summary.files, &commit)?;
    crate::failpoint::hit("after_delta_commits");
    let current = crate::table::current::CurrentCommit {
        lake: &run.lake,
        delta: delta.lake(),
        kind: run.kind,
        sdkappid: plan.api.sdkappid,
        files: &summary.files,
        opts: plan.write,
        rebuild: run.rebuild,
        position: plan
            .changed
            .map(|v| crate::table::changed::position_txn(plan.api.sdkappid, v)),
    };
    crate::table::current::commit(&current, &commit)?;
    crate::failpoint::hit("after_current_commits");
    Ok(())
}

/// The run's status and summary, its reports, and `_SUCCESS` when it
/// reached the end of its input.
fn summarize(
    plan: &ExportPlan,
    stop: &StopSignal,
    run: Run,
    ended: Ended,
) -> Result<Summary, ExportError> {
    let Ended {
        tally,
        crashed,
        progress,
        view,
    } = ended;
    let status = run_status(stop.reason(), &tally, crashed.is_some(), plan.strict_input);
    // _SUCCESS means every input row is settled: not after an early stop.
    let finished =
        stop.reason().is_none() && matches!(status, RunStatus::Complete | RunStatus::Partial);
    let gave_up = (stop.reason() == Some(StopReason::GaveUp)).then(|| {
        let last = run.stats.last_failure();
        format!(
            "gave up: no call succeeded for {}{}; unfinished messages are in errors.csv as 'aborted'",
            human_duration(plan.api.give_up_after),
            last.map(|f| format!(" (last answer: {f})")).unwrap_or_default()
        )
    });
    let interrupted =
        (status == RunStatus::Interrupted).then(|| "interrupted (Ctrl-C / SIGTERM)".to_owned());
    let summary = Summary {
        run_id: run.run_id.clone(),
        kind: run.kind,
        status,
        started_at: run.meta.started_at.clone(),
        finished_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        elapsed_secs: run.clock.elapsed().as_secs_f64(),
        input_file: plan.input.display().to_string(),
        out: plan.out.display(),
        format: plan.format.extension().to_owned(),
        input: tally.input,
        messages: tally.messages,
        kv_rows: tally.totals.kv_rows,
        requests: tally.totals.requests,
        retries: tally.totals.retries,
        rate_limited: tally.totals.rate_limited,
        wal_syncs: tally.wal_syncs,
        rate_limit: run.limiter.as_ref().map(|l| l.rate()),
        stop_reason: crashed
            .or(tally.fatal)
            .or(tally.input_error)
            .or(gave_up)
            .or(interrupted),
        errors_csv: run
            .lake
            .display(&format!("_runs/{}/errors.csv", run.run_id)),
        files: tally.files,
        resumable: !finished,
    };
    if let Some(mut progress) = progress {
        progress.finish(&view(), status);
    }
    if finished && let Some(delta) = &run.delta {
        commit_tables(plan, &run, delta, &summary)?;
    }
    write_reports(&*run.lake, &run.run_id, &summary, finished)?;
    tracing::info!(run_id = %run.run_id, status = ?summary.status, requests = summary.requests,
        kv_rows = summary.kv_rows, "export ended");
    Ok(summary)
}

/// Give the heap the fetch freed back to the system before the commits
/// read the tables: glibc keeps it in its arenas otherwise. Measured at 1M
/// messages: 77 MB resident before, 39 MB after.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_heap() {
    // SAFETY: malloc_trim only returns free pages of the heap; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_heap() {}

/// How a run ended, from why it stopped (if it did), what the writer
/// tallied and whether a part of it crashed.
/// Invalid input rows make it partial only with `strict_input`: no retry
/// fixes them, and a nightly job should not fail every night over them.
fn run_status(
    stop: Option<StopReason>,
    tally: &writer::Tally,
    crashed: bool,
    strict_input: bool,
) -> RunStatus {
    match (stop, &tally.fatal) {
        _ if crashed => RunStatus::Failed,
        (_, Some(_)) | (Some(StopReason::Fatal), _) => RunStatus::Failed,
        (Some(StopReason::Interrupted), _) => RunStatus::Interrupted,
        (None, None) if tally.input_error.is_some() => RunStatus::Failed,
        (Some(StopReason::GaveUp), None) => RunStatus::Partial,
        (None, None) if tally.messages.failed > 0 => RunStatus::Partial,
        (None, None) if strict_input && tally.input.invalid > 0 => RunStatus::Partial,
        (None, None) => RunStatus::Complete,
    }
}

/// summary.json, manifest.json, and `_SUCCESS` last when the run finished.
fn write_reports(
    lake: &dyn LakeStore,
    run_id: &str,
    summary: &Summary,
    finished: bool,
) -> Result<(), ExportError> {
    let put = |name: &str, bytes: &[u8]| {
        lake.put(&format!("_runs/{run_id}/{name}"), bytes)
            .map_err(ExportError::from)
    };
    put("summary.json", &crate::report::summary_json(summary))?;
    put("manifest.json", &crate::report::manifest_json(summary))?;
    if finished {
        crate::failpoint::hit("before_success");
        // Created, never overwritten: of two exports of one run id, one completes it.
        let success = format!("_runs/{run_id}/_SUCCESS");
        if !lake.create(&success, b"")? {
            return Err(ExportError::Output(format!(
                "{}: already there; another export completed run {run_id}",
                lake.display(&success)
            )));
        }
    }
    Ok(())
}

/// A duration as a person reads it: `45 s`, `2.5 min`.
fn human_duration(d: std::time::Duration) -> String {
    let s = d.as_secs_f64();
    if s < 120.0 {
        format!("{s:.0} s")
    } else {
        format!("{:.1} min", s / 60.0)
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}

fn join_error_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => panic_text(&*p),
        Err(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn how_a_run_ended_follows_why_it_stopped_and_what_was_tallied() {
        let tally = |failed: u64, invalid: u64, fatal: bool, input_error: bool| writer::Tally {
            input: crate::report::InputSummary {
                invalid,
                ..Default::default()
            },
            messages: crate::report::MessageSummary {
                failed,
                ..Default::default()
            },
            totals: Default::default(),
            files: Vec::new(),
            fatal: fatal.then(|| "error 70003".to_owned()),
            input_error: input_error.then(|| "line 9: cannot read".to_owned()),
            wal_syncs: 0,
        };
        use RunStatus::{Complete, Failed, Partial};
        use StopReason::{Fatal, GaveUp, Interrupted};
        let table = [
            (None, tally(0, 0, false, false), false, Complete),
            (None, tally(1, 0, false, false), false, Partial),
            (None, tally(0, 1, false, false), false, Complete),
            (None, tally(0, 0, false, false), true, Failed),
            (None, tally(0, 0, false, true), false, Failed),
            (Some(Fatal), tally(0, 0, true, false), false, Failed),
            (
                Some(Interrupted),
                tally(0, 0, false, false),
                false,
                RunStatus::Interrupted,
            ),
            (Some(Interrupted), tally(0, 0, false, false), true, Failed),
            (Some(GaveUp), tally(0, 0, false, false), false, Partial),
        ];
        for (i, (stop, t, crashed, want)) in table.into_iter().enumerate() {
            assert_eq!(run_status(stop, &t, crashed, false), want, "case {i}");
        }
        // With --strict-input, invalid rows alone make it partial.
        assert_eq!(
            run_status(None, &tally(0, 1, false, false), false, true),
            Partial
        );
        assert_eq!(
            run_status(None, &tally(0, 0, false, false), false, true),
            Complete
        );
    }

    #[test]
    fn default_run_ids_are_strings_to_readers_and_never_collide() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-26T06:31:02.123Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let ids: std::collections::HashSet<String> = (0..50).map(|_| default_run_id(t)).collect();
        assert!(ids.len() > 45, "a random suffix: {}", ids.len());
        for id in &ids {
            assert!(id.starts_with("r20261126T063102.123Z-"), "{id}");
            assert_eq!(id.len(), "r20261126T063102.123Z-0000".len());
        }
    }
}
