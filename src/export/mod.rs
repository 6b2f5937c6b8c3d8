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
//! writes, fsyncs and publishes. A bucket's uploads run on blocking threads
//! too, their requests on the runtime (`write::object`). The Delta kernel,
//! at the start and the end of a run, keeps a runtime of its own
//! (`table::delta`): the only other one.

mod writer;

pub use writer::{COMMIT_EVERY, GROUP_COMMIT};

use crate::api::client::DEFAULT_TIMEOUT;
use crate::fetch::concurrency::{Concurrency, MAX_AUTO, MIN_AUTO, target_in_flight};
use crate::fetch::limiter::Limiter;
use crate::fetch::retry::RetryPolicy;
use crate::fetch::{Calls, FetchOutcome, FetchStats, Fetcher, StopReason, StopSignal};
use crate::input::{InputError, InputItem, InputReader, InvalidRow};
use crate::model::InputMessage;
use crate::report::{
    ErrorsCsv, LiveCounts, Progress, ProgressMode, ProgressView, RunStatus, Summary,
};
use crate::write::{LakeStore, RunTables};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::sync::{Mutex, mpsc};

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

/// Messages go from the input thread to the workers in chunks of this many,
/// so that the input thread wakes once a chunk rather than once a message.
pub(crate) const WORK_CHUNK: usize = 32;

/// The workers' end of the input: chunks, taken one message at a time.
struct WorkQueue {
    rx: mpsc::Receiver<Vec<InputMessage>>,
    ready: std::collections::VecDeque<InputMessage>,
}

impl WorkQueue {
    async fn next(&mut self) -> Option<InputMessage> {
        loop {
            if let Some(m) = self.ready.pop_front() {
                return Some(m);
            }
            self.ready.extend(self.rx.recv().await?);
        }
    }
}

/// Outcomes waiting for the writer. Small on purpose: they are fetched but not
/// yet in the WAL (fetched again after a crash) and they hold their pairs.
pub const EVENT_QUEUE: usize = 48;

/// The run id derived from its start time: sortable, UTC, to the
/// millisecond, with a random suffix so that two runs never share one; the
/// leading `r` keeps readers from taking the Hive `run_id` column for a date
/// or a number.
pub(crate) fn default_run_id(t: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "r{}-{:04x}",
        t.format("%Y%m%dT%H%M%S%.3fZ"),
        rand::random::<u16>()
    )
}

/// What `run.json` records for a run of `plan` on this input.
fn run_meta(
    plan: &ExportPlan,
    scan: &crate::input::Prescan,
    started: chrono::DateTime<chrono::Utc>,
) -> crate::ledger::RunMeta {
    crate::ledger::RunMeta {
        v: crate::ledger::FORMAT_VERSION,
        run_id: String::new(),
        started_at: started.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        dt: started.format("%Y-%m-%d").to_string(),
        format: plan.format.extension().to_owned(),
        input: plan.input.display().to_string(),
        input_bytes: scan.bytes,
        input_sha256: scan.sha256.clone(),
        endpoint: plan.api.base_url.clone(),
        sdkappid: plan.api.sdkappid,
        out: lake_identity(&plan.out),
    }
}

/// The lake as `run.json` records it: a URL, or the folder as an absolute
/// path (symbolic links resolved where it exists), so that `lake`,
/// `./lake` and `/home/u/lake` are one lake.
fn lake_identity(out: &crate::write::Out) -> String {
    match out {
        crate::write::Out::Url(u) => u.clone(),
        crate::write::Out::Dir(d) => std::fs::canonicalize(d)
            .or_else(|_| std::path::absolute(d))
            .unwrap_or_else(|_| d.clone())
            .display()
            .to_string(),
    }
}

/// The newest run in the state folder that did not finish and that
/// `wanted` may resume.
fn unfinished_run(
    lake: &dyn LakeStore,
    state_dir: &Path,
    wanted: &crate::ledger::RunMeta,
) -> Result<Option<String>, ExportError> {
    let Ok(runs) = std::fs::read_dir(state_dir) else {
        return Ok(None);
    };
    let mut candidates: Vec<crate::ledger::RunMeta> = runs
        .flatten()
        .filter_map(|e| crate::ledger::RunMeta::load(&e.path()).ok().flatten())
        .filter(|m| m.differences(wanted).is_empty())
        .collect();
    candidates.sort_by(|a, b| b.started_at.cmp(&a.started_at));
    for m in candidates {
        if !lake.exists(&format!("_runs/{}/_SUCCESS", m.run_id))? {
            return Ok(Some(m.run_id));
        }
    }
    Ok(None)
}

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

/// The line a run starts with: the run it resumes, or the lake's
/// unfinished runs it does not.
fn tell_start(opened: &OpenedRun, run_id: &str, others: &[String], out: &crate::write::Out) {
    match opened.resumed {
        true => eprintln!(
            "msgext: resuming run {run_id} (started {}; {} messages already settled)",
            opened.meta.started_at,
            opened.recovered.resumed()
        ),
        false => note_unfinished_runs(others, out),
    }
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
    let settle = crate::table::settle::Settle {
        lake,
        delta,
        kind,
        opts: plan.write,
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

/// The stages of a started run, running.
struct Stages {
    input_thread: std::thread::JoinHandle<u64>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    tuner: Option<tokio::task::JoinHandle<()>>,
    breaker: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<Result<writer::Tally, writer::WriterError>>,
    writer_done: tokio::sync::oneshot::Sender<()>,
    reporter: tokio::task::JoinHandle<Progress>,
    view: ProgressFn,
}

/// A look at the run in progress, for the progress reporter and its last line.
type ProgressFn = Arc<dyn Fn() -> ProgressView + Send + Sync>;

/// Messages fetched at once: `--concurrency`, or following rate × latency.
fn concurrency(plan: &ExportPlan) -> Concurrency {
    match plan.concurrency {
        Some(n) => Concurrency::fixed(n),
        None if plan.api.rate == 0 => {
            Concurrency::fixed(crate::fetch::concurrency::DEFAULT_CONCURRENCY)
        }
        None => Concurrency::adaptive(MIN_AUTO * 2, MAX_AUTO),
    }
}

/// The run in progress as the progress line shows it.
fn progress_view(run: &Run, live: Arc<LiveCounts>) -> ProgressFn {
    let (stats, limiter) = (run.stats.clone(), run.limiter.clone());
    let (total, clock) = (run.rows, run.clock);
    Arc::new(move || ProgressView {
        settled: live.settled.load(Ordering::Relaxed),
        total,
        kv_rows: live.kv_rows.load(Ordering::Relaxed),
        requests: stats.requests.load(Ordering::Relaxed),
        errors: live.errors.load(Ordering::Relaxed),
        not_found: live.not_found.load(Ordering::Relaxed),
        rate_limit: limiter.as_ref().map(|l| l.rate()),
        elapsed: clock.elapsed(),
    })
}

/// Start the stages: the input on a thread of its own → the fetch workers
/// (sharing the limiter) → the writer on a blocking thread, with the
/// concurrency tuner, the circuit breaker and the progress reporter beside.
fn launch(
    plan: &ExportPlan,
    ui: Ui,
    tuning: &Tuning,
    stop: &StopSignal,
    run: &Run,
    begun: Begun,
) -> Result<Stages, ExportError> {
    let Begun {
        reader,
        prior,
        files: run_files,
        mut recovered,
    } = begun;
    let kind = run.kind;
    let spool_path = writer::spool_path(&run.run_dir);
    let spool = ErrorsCsv::create(&spool_path, kind).map_err(|e| io_err(&spool_path, e))?;
    let (stats, limiter) = (&run.stats, &run.limiter);
    let fetcher = build_fetcher(plan, kind, tuning, (stats, limiter, &prior), stop)?;
    let slots = Arc::new(concurrency(plan));
    let queue = slots
        .max()
        .min(crate::fetch::concurrency::DEFAULT_CONCURRENCY);
    let (work_tx, work_rx) = mpsc::channel::<Vec<InputMessage>>((queue * 2 / WORK_CHUNK).max(2));
    let (ev_tx, ev_rx) = mpsc::channel::<Event>(EVENT_QUEUE);
    tokio::spawn(writer::tick(ev_tx.downgrade()));
    let input_thread = {
        let (ev_tx, stop) = (ev_tx.clone(), stop.clone());
        let settled = std::mem::take(&mut recovered.settled);
        std::thread::spawn(move || read_input(reader, &settled, work_tx, ev_tx, stop))
    };
    // Only the workers hold the receiving end of the work queue, so that
    // when the last one ends the input thread ends too.
    let workers = spawn_workers(&slots, work_rx, ev_tx, &fetcher);
    let tuner = spawn_tuner(&slots, stats, limiter);
    let breaker = crate::fetch::spawn_breaker(stats, stop, plan.api.give_up_after);
    let live = Arc::new(LiveCounts::default());
    let writer = {
        let w = writer::Writer {
            tables: RunTables::new(
                run.lake.clone(),
                kind,
                crate::write::RunKey {
                    sdkappid: plan.api.sdkappid,
                    dt: &run.meta.dt,
                    run_id: &run.run_id,
                },
                plan.format,
                plan.write,
                recovered.next_part,
            ),
            dir: run.lake.clone(),
            run_files,
            recovered,
            spool: Some(spool),
            spool_path,
            errors_rel: format!("_runs/{}/errors.csv", run.run_id),
        };
        let (stop, live, stats) = (stop.clone(), live.clone(), stats.clone());
        tokio::task::spawn_blocking(move || writer::write_all(w, ev_rx, &stats, &live, &stop))
    };
    let view = progress_view(run, live);
    let (writer_done, reporter) = {
        let view = view.clone();
        spawn_reporter(move || view(), run.rows, ui.progress, &run.run_id)
    };
    Ok(Stages {
        input_thread,
        workers,
        tuner,
        breaker,
        writer,
        writer_done,
        reporter,
        view,
    })
}

/// How the stages ended.
struct Ended {
    tally: writer::Tally,
    /// What crashed (a worker, the input reader) or was lost, if anything.
    crashed: Option<String>,
    progress: Option<Progress>,
    view: ProgressFn,
}

/// Wait for the writer, then for every other stage. A writer that failed
/// (a full disk, a name too long, a folder turned read-only) or crashed
/// stops everything else at once; a crashed worker or input thread may have
/// lost a message, and a lost message is never a success.
async fn wait(stages: Stages, stop: &StopSignal) -> Result<Ended, ExportError> {
    let written = match stages.writer.await {
        Ok(Ok(tally)) => Ok(tally),
        Ok(Err(e)) => Err(ExportError::Writer(e)),
        Err(e) => Err(ExportError::WriterCrashed(join_error_text(e))),
    };
    if written.is_err() {
        stop.trigger(StopReason::Fatal);
    }
    let _ = stages.writer_done.send(());
    let progress = stages.reporter.await.ok();
    let mut crashed: Vec<String> = Vec::new();
    for w in stages.workers {
        if let Err(e) = w.await {
            crashed.push(format!("a fetch worker crashed: {}", join_error_text(e)));
        }
    }
    stages.breaker.abort();
    if let Some(t) = stages.tuner {
        t.abort();
    }
    let rows_read = match stages.input_thread.join() {
        Ok(n) => Some(n),
        Err(p) => {
            crashed.push(format!("the input reader crashed: {}", panic_text(&*p)));
            None
        }
    };
    let tally = written?;
    if let Some(read) = rows_read
        && read != tally.input.rows
    {
        crashed.push(format!(
            "{} input rows were read but {} settled: messages were lost",
            read, tally.input.rows
        ));
    }
    Ok(Ended {
        tally,
        crashed: (!crashed.is_empty()).then(|| crashed.join("; ")),
        progress,
        view: stages.view,
    })
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

/// On Ctrl-C / SIGTERM, tell the lake to stop waiting on a store that does
/// not answer (after a grace); the task ends with the returned guard.
fn interrupt_on_signal(stop: &StopSignal, lake: &Arc<dyn LakeStore>) -> AbortOnDrop {
    let (stop, lake) = (stop.clone(), lake.clone());
    AbortOnDrop(tokio::spawn(async move {
        stop.stopped().await;
        if stop.reason() == Some(StopReason::Interrupted) {
            lake.interrupt();
        }
    }))
}

/// A task that ends when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A state folder that cannot be written is told as such (which folder,
/// why, and the setting that chooses it), not as a lock problem.
fn unwritable_state(e: crate::ledger::LockError, state_dir: &Path) -> ExportError {
    use crate::ledger::{LedgerError, LockError};
    match e {
        LockError::Io(LedgerError::Io { source, .. }) => {
            ExportError::Lake(crate::write::WriteError::Unwritable {
                what: "the state folder (lock, run.json, write-ahead log)",
                path: state_dir.to_owned(),
                setting: "--state-dir (by default OUT/_runs for a folder)",
                source,
            })
        }
        e => ExportError::Busy(e),
    }
}

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

/// The fetcher every worker clones: the API client of the run's kind, its
/// credentials, the shared limiter and counters, and the retry policy.
fn build_fetcher(
    plan: &ExportPlan,
    kind: crate::kind::Kind,
    tuning: &Tuning,
    (stats, limiter, prior): (
        &Arc<FetchStats>,
        &Option<Arc<Limiter>>,
        &Arc<crate::incremental::Prior>,
    ),
    stop: &StopSignal,
) -> Result<Fetcher, ExportError> {
    let client = crate::fetch::client(&plan.api, kind.spec().api_path(), tuning.timeout)?;
    let calls = Calls::new(&plan.api, tuning.retry, stats, limiter, stop);
    Ok(Fetcher {
        client,
        calls,
        prior: prior.clone(),
    })
}

/// One worker per possible slot: take a message when a slot is free, fetch
/// it, hand the outcome to the writer. The workers alone hold `work_rx`.
fn spawn_workers(
    slots: &Arc<Concurrency>,
    work_rx: mpsc::Receiver<Vec<InputMessage>>,
    ev_tx: mpsc::Sender<Event>,
    fetcher: &Fetcher,
) -> Vec<tokio::task::JoinHandle<()>> {
    let work_rx = Arc::new(Mutex::new(WorkQueue {
        rx: work_rx,
        ready: std::collections::VecDeque::new(),
    }));
    (0..slots.max())
        .map(|_| {
            let (work_rx, ev_tx) = (work_rx.clone(), ev_tx.clone());
            let (fetcher, slots) = (fetcher.clone(), slots.clone());
            tokio::spawn(async move {
                loop {
                    let Some(slot) = slots.acquire().await else {
                        break;
                    };
                    let next = work_rx.lock().await.next().await;
                    let Some(m) = next else { break };
                    let outcome = fetcher.fetch(&m.msg).await;
                    crate::failpoint::panic_at("worker");
                    slots.release(slot);
                    if ev_tx.send(Event::Done(m, outcome)).await.is_err() {
                        break;
                    }
                }
            })
        })
        .collect()
}

/// Messages in flight follow rate × latency, unless --concurrency was given.
fn spawn_tuner(
    slots: &Arc<Concurrency>,
    stats: &Arc<FetchStats>,
    limiter: &Option<Arc<Limiter>>,
) -> Option<tokio::task::JoinHandle<()>> {
    slots.is_adaptive().then(|| {
        let (slots, stats, limiter) = (slots.clone(), stats.clone(), limiter.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
            loop {
                tick.tick().await;
                let rate = limiter.as_ref().map_or(f64::INFINITY, |l| l.rate());
                if stats.latency() > std::time::Duration::ZERO {
                    slots.set_target(target_in_flight(rate, stats.latency(), slots.max()));
                }
            }
        })
    })
}

/// Progress as a bar or JSON lines, a few times a second, until the writer
/// is done (send on the returned sender); the task then hands the progress
/// back for its last look, once the run's status is known.
fn spawn_reporter(
    view: impl Fn() -> ProgressView + Send + 'static,
    total: u64,
    mode: ProgressMode,
    run_id: &str,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Progress>,
) {
    let (done, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let mut progress = Progress::new(total, mode, run_id);
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = tick.tick() => progress.tick(&view()),
                _ = &mut done_rx => break,
            }
        }
        progress
    });
    (done, task)
}

/// What `open_run` hands back: the run's fixed identity, and what an
/// earlier attempt left.
struct OpenedRun {
    meta: crate::ledger::RunMeta,
    files: crate::ledger::RunFiles,
    recovered: crate::ledger::Recovered,
    /// An earlier attempt of this run exists.
    resumed: bool,
}

/// With the folder lock held: refuse a completed run or one started with
/// another input or settings, load or create `run.json`, claim the run id in
/// the lake, and recover what an earlier attempt of this run left.
fn open_run(
    lake: &dyn LakeStore,
    run_id: &str,
    run_dir: &Path,
    wanted: &crate::ledger::RunMeta,
) -> Result<OpenedRun, ExportError> {
    let success = format!("_runs/{run_id}/_SUCCESS");
    if lake.exists(&success)? {
        return Err(ExportError::AlreadyComplete {
            run_id: run_id.to_owned(),
            path: lake.display(&success),
        });
    }
    let (meta, resumed) = match crate::ledger::RunMeta::load(run_dir)? {
        Some(meta) => {
            let differs = meta.differences(wanted);
            if !differs.is_empty() {
                return Err(ExportError::Usage(format!(
                    "run {run_id} cannot be resumed: {}; resume it with what it was started with, or give a new --run-id",
                    differs.join("; ")
                )));
            }
            (meta, true)
        }
        None => {
            // The claim is won before anything a later run would resume is
            // written: a refused claim leaves nothing behind.
            std::fs::create_dir_all(run_dir).map_err(|e| io_err(run_dir, e))?;
            let meta = crate::ledger::RunMeta {
                run_id: run_id.to_owned(),
                ..wanted.clone()
            };
            if let Err(e) = claim_run(lake, run_id, run_dir, &meta.started_at) {
                let _ = std::fs::remove_file(run_dir.join(CLAIM_COPY));
                let _ = std::fs::remove_dir(run_dir);
                return Err(e);
            }
            meta.save(run_dir)?;
            (meta, false)
        }
    };
    if resumed {
        claim_run(lake, run_id, run_dir, &meta.started_at)?;
    }
    let (files, recovered) = crate::ledger::RunFiles::open(lake, run_dir)?;
    Ok(OpenedRun {
        meta,
        files,
        recovered,
        resumed,
    })
}

/// Claim the run id in the lake: `_runs/<id>/_CLAIM` is created only if
/// absent (a conditional create), and this state folder keeps a copy
/// (`claim.json`, written first). A later attempt finds its own claim and
/// goes on; an export elsewhere with another claim is refused, so that two
/// machines never both write one run.
fn claim_run(
    lake: &dyn LakeStore,
    run_id: &str,
    run_dir: &Path,
    started_at: &str,
) -> Result<(), ExportError> {
    let local = run_dir.join(CLAIM_COPY);
    let mine = match std::fs::read(&local) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let state = std::path::absolute(run_dir).unwrap_or_else(|_| run_dir.to_owned());
            let claim = serde_json::json!({
                "run_id": run_id,
                "host": hostname(),
                "pid": std::process::id(),
                "state": state.display().to_string(),
                "started_at": started_at,
                "token": format!("{:032x}", rand::random::<u128>()),
            });
            let mut bytes = serde_json::to_vec_pretty(&claim).unwrap_or_default();
            bytes.push(b'\n');
            crate::write::write_atomically(&local, &bytes)?;
            bytes
        }
        Err(e) => return Err(io_err(&local, e)),
    };
    let rel = format!("_runs/{run_id}/_CLAIM");
    if lake.create(&rel, &mine)? {
        return Ok(());
    }
    match lake.get(&rel)? {
        Some(theirs) if theirs == mine => Ok(()),
        theirs => {
            let holder = theirs
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .map(|v| {
                    format!(
                        "host {}, pid {}, state folder {}, started {}",
                        v["host"].as_str().unwrap_or("?"),
                        v["pid"],
                        v["state"].as_str().unwrap_or("?"),
                        v["started_at"].as_str().unwrap_or("?")
                    )
                })
                .unwrap_or_else(|| "unreadable claim".to_owned());
            Err(ExportError::Claimed {
                run_id: run_id.to_owned(),
                holder,
                path: lake.display(&rel),
                lake: lake.display("").trim_end_matches('/').to_owned(),
            })
        }
    }
}

/// The state folder's copy of the run's claim in the lake.
const CLAIM_COPY: &str = "claim.json";

/// One line when the lake holds unfinished runs that this new run does not
/// resume (another input, another state folder): their rows are in the
/// folder, and a plain `SELECT *` counts them.
fn note_unfinished_runs(others: &[String], out: &crate::write::Out) {
    if let Some(first) = others.first() {
        let lake = crate::report::shell_quote(&out.display());
        eprintln!(
            "msgext: note: {lake} holds {} unfinished run(s) that this run does not resume ({}{}); \
             `msgext runs --out {lake}` lists them, `msgext runs drop {first} --out {lake}` removes one",
            others.len(),
            others
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            if others.len() > 3 { ", …" } else { "" }
        );
    }
}

/// This machine's name, for the claim.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
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

/// Feed the input to the workers (messages) and the writer (everything
/// else); returns how many rows were handed on, for the writer's count to be
/// checked against.
fn read_input<R: std::io::Read>(
    reader: InputReader<R>,
    settled: &crate::model::FingerprintSet,
    work_tx: mpsc::Sender<Vec<InputMessage>>,
    ev_tx: mpsc::Sender<Event>,
    stop: StopSignal,
) -> u64 {
    let mut handed_on = 0u64;
    let mut chunk: Vec<InputMessage> = Vec::with_capacity(WORK_CHUNK);
    let aborted = || FetchOutcome::Cancelled {
        attempts: 0,
        pages: 0,
    };
    for item in reader {
        crate::failpoint::panic_at("input");
        let draining = match stop.reason() {
            None => false,
            // Every remaining message goes to errors.csv as 'aborted', so
            // that errors.csv fed back as --input finishes the job.
            Some(StopReason::GaveUp) => true,
            Some(_) => return handed_on,
        };
        if draining {
            // The chunk not yet handed to the workers is aborted too.
            for m in std::mem::take(&mut chunk) {
                if ev_tx.blocking_send(Event::Done(m, aborted())).is_err() {
                    return handed_on;
                }
                handed_on += 1;
            }
        }
        let sent = match item {
            Ok(InputItem::Message(m)) if draining => {
                ev_tx.blocking_send(Event::Done(m, aborted())).is_ok()
            }
            Ok(InputItem::Message(m)) if settled.contains(m.msg.fingerprint()) => {
                ev_tx.blocking_send(Event::Resumed).is_ok()
            }
            Ok(InputItem::Message(m)) => {
                chunk.push(m);
                if chunk.len() < WORK_CHUNK {
                    continue;
                }
                let n = chunk.len() as u64;
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(WORK_CHUNK));
                if work_tx.blocking_send(full).is_err() {
                    return handed_on;
                }
                handed_on += n;
                continue;
            }
            Ok(InputItem::Duplicate { .. }) => ev_tx.blocking_send(Event::Duplicate).is_ok(),
            Ok(InputItem::Skipped { .. }) => ev_tx.blocking_send(Event::Skipped).is_ok(),
            Ok(InputItem::Invalid(r)) => ev_tx.blocking_send(Event::Invalid(r)).is_ok(),
            Err(e) => {
                stop.trigger(StopReason::Fatal);
                let _ = ev_tx.blocking_send(Event::InputFailed(e));
                return handed_on;
            }
        };
        if !sent {
            return handed_on;
        }
        handed_on += 1;
    }
    let n = chunk.len() as u64;
    if n > 0 && work_tx.blocking_send(chunk).is_ok() {
        handed_on += n;
    }
    handed_on
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
