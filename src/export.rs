//! One export run, end to end: input reader thread → bounded channel → N fetch
//! workers sharing one rate limiter → bounded channel → one writer that owns
//! the lake files and the report. Memory stays flat however long the input.

use crate::api::client::{ApiClient, Credentials, DEFAULT_TIMEOUT};
use crate::api::sign::DEFAULT_EXPIRE_SECS;
use crate::fetch::limiter::Limiter;
use crate::fetch::retry::RetryPolicy;
use crate::fetch::{FetchOutcome, FetchStats, Fetcher, ProbeGate, StopReason, StopSignal};
use crate::input::{InputError, InputItem, InputReader, InvalidRow};
use crate::job::{ExportPlan, Secret};
use crate::model::InputMessage;
use crate::report::{
    ErrorsCsv, InputSummary, LiveCounts, MessageSummary, Progress, ProgressMode, ProgressView,
    RunStatus, Summary,
};
use crate::write::schema::MessageRow;
use crate::write::{Lake, WriteError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::sync::{Mutex, mpsc};

/// Why a run could not start or could not finish writing.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A usage problem: exit 2.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Input(#[from] InputError),
    /// I/O on the output folder: exit 1.
    #[error("{0}")]
    Output(String),
}

impl ExportError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ExportError::Usage(_)
            | ExportError::Input(InputError::Open { .. })
            | ExportError::Input(InputError::NoHeader { .. })
            | ExportError::Input(InputError::MissingColumn { .. }) => 2,
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
#[derive(Debug, Clone, Copy)]
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
    InputFailed(InputError),
}

/// The run id derived from its start time: sortable, UTC.
pub fn default_run_id(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
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
    let started = chrono::Utc::now();
    let clock = Instant::now();
    let run_id = plan
        .run_id
        .clone()
        .unwrap_or_else(|| default_run_id(started));
    let run_dir = plan.out.join("_runs").join(&run_id);
    if run_dir.exists() {
        return Err(ExportError::Usage(format!(
            "{}: run {run_id} already exists in this folder; give another --run-id",
            run_dir.display()
        )));
    }
    let reader = InputReader::open(&plan.input)?;
    std::fs::create_dir_all(&run_dir).map_err(|e| io_err(&run_dir, e))?;
    let errors_path = run_dir.join("errors.csv");
    let errors = ErrorsCsv::create(&errors_path).map_err(|e| io_err(&errors_path, e))?;
    let total = if ui.progress != ProgressMode::Off {
        crate::input::count_rows(&plan.input)?
    } else {
        0
    };

    let client = ApiClient::new(
        &plan.base_url,
        plan.sdkappid,
        &plan.identifier,
        tuning.timeout,
    )
    .map_err(ExportError::Usage)?;
    let credentials = Arc::new(match &plan.secret {
        Secret::Key(k) => Credentials::from_secret(
            k.clone(),
            plan.sdkappid,
            &plan.identifier,
            DEFAULT_EXPIRE_SECS,
        ),
        Secret::UserSig(s) => Credentials::ready(s),
    });
    let stats = Arc::new(FetchStats::default());
    let limiter = Limiter::new(plan.rate).map(Arc::new);
    let fetcher = Fetcher {
        client,
        credentials,
        limiter: limiter.clone(),
        gate: Arc::new(ProbeGate::default()),
        policy: RetryPolicy {
            max_attempts: plan.max_attempts,
            ..tuning.retry
        },
        stats: stats.clone(),
        stop: stop.clone(),
        sdkappid: plan.sdkappid,
    };

    let (work_tx, work_rx) = mpsc::channel::<InputMessage>(plan.concurrency * 2);
    let (ev_tx, ev_rx) = mpsc::channel::<Event>(plan.concurrency * 4 + 64);

    // Stage 1: the input, on a thread of its own (blocking file reads).
    let input_thread = {
        let ev_tx = ev_tx.clone();
        let stop = stop.clone();
        std::thread::spawn(move || read_input(reader, work_tx, ev_tx, stop))
    };

    // Stage 2: the fetch workers.
    let work_rx = Arc::new(Mutex::new(work_rx));
    let mut workers = Vec::with_capacity(plan.concurrency);
    for _ in 0..plan.concurrency {
        let work_rx = work_rx.clone();
        let ev_tx = ev_tx.clone();
        let fetcher = fetcher.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let next = work_rx.lock().await.recv().await;
                let Some(m) = next else { break };
                let outcome = fetcher.fetch(&m.msg).await;
                if matches!(outcome, FetchOutcome::Fatal { .. }) {
                    fetcher.stop.trigger(StopReason::Fatal);
                }
                if ev_tx.send(Event::Done(m, outcome)).await.is_err() {
                    break;
                }
            }
        }));
    }
    drop(ev_tx);

    // The circuit breaker: stop when no call has had a definitive answer for
    // `give_up_after` while calls were being made.
    let breaker = {
        let stats = stats.clone();
        let stop = stop.clone();
        let give_up_after = plan.give_up_after;
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(std::time::Duration::from_millis(200).min(give_up_after));
            loop {
                tick.tick().await;
                if stop.reason().is_some() {
                    return;
                }
                if stats.since_progress() >= give_up_after && FetchStats::get(&stats.requests) > 0 {
                    stop.trigger(StopReason::GaveUp);
                    return;
                }
            }
        })
    };

    // Stage 3: the writer, on a blocking thread (encoding and file I/O).
    let out = plan.out.clone();
    let dt = started.format("%Y-%m-%d").to_string();
    let live = Arc::new(LiveCounts::default());
    let writer = {
        let run_id = run_id.clone();
        let stop = stop.clone();
        let live = live.clone();
        let format = plan.format;
        let opts = plan.write;
        tokio::task::spawn_blocking(move || {
            let lake = Lake::new(&out, &dt, &run_id, format, opts);
            write_all(ev_rx, lake, errors, &live, &stop)
        })
    };

    // Progress: a bar or JSON lines, from the live counts, a few times a second.
    let view = {
        let (live, stats, limiter) = (live.clone(), stats.clone(), limiter.clone());
        move || ProgressView {
            settled: FetchStats::get(&live.settled),
            total,
            kv_rows: FetchStats::get(&live.kv_rows),
            requests: FetchStats::get(&stats.requests),
            errors: FetchStats::get(&live.errors),
            rate_limit: limiter.as_ref().map(|l| l.rate()),
            elapsed: clock.elapsed(),
        }
    };
    let (writer_done, mut writer_done_rx) = tokio::sync::oneshot::channel::<()>();
    let reporter = {
        let view = view.clone();
        let mut progress = Progress::new(total, ui.progress);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
            loop {
                tokio::select! {
                    _ = tick.tick() => progress.tick(&view()),
                    _ = &mut writer_done_rx => break,
                }
            }
            progress.finish(&view());
        })
    };

    let written = writer.await;
    let _ = writer_done.send(());
    let _ = reporter.await;
    let written = written.map_err(|e| ExportError::Output(format!("writer task: {e}")))?;
    for w in workers {
        let _ = w.await;
    }
    breaker.abort();
    let _ = input_thread.join();
    let tally = written?;

    let status = match (stop.reason(), &tally.fatal) {
        (_, Some(_)) | (Some(StopReason::Fatal), _) => RunStatus::Failed,
        (Some(StopReason::Interrupted), _) => RunStatus::Interrupted,
        (None, None) if tally.input_error.is_some() => RunStatus::Failed,
        (Some(StopReason::GaveUp), None) => RunStatus::Partial,
        (None, None) if tally.messages.failed > 0 || tally.input.invalid > 0 => RunStatus::Partial,
        (None, None) => RunStatus::Complete,
    };
    let gave_up = (stop.reason() == Some(StopReason::GaveUp)).then(|| {
        format!(
            "gave up: no call succeeded for {:.1} min; unfinished messages are in errors.csv as 'aborted'",
            plan.give_up_after.as_secs_f64() / 60.0
        )
    });
    let summary = Summary {
        run_id: run_id.clone(),
        status,
        started_at: started.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        finished_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        elapsed_secs: clock.elapsed().as_secs_f64(),
        input_file: plan.input.display().to_string(),
        out: plan.out.display().to_string(),
        format: plan.format.extension().to_owned(),
        input: tally.input,
        messages: tally.messages,
        kv_rows: tally.kv_rows,
        requests: FetchStats::get(&stats.requests),
        retries: FetchStats::get(&stats.retries),
        rate_limited: FetchStats::get(&stats.rate_limited),
        rate_limit: limiter.as_ref().map(|l| l.rate()),
        stop_reason: tally.fatal.or(tally.input_error).or(gave_up).or_else(|| {
            (status == RunStatus::Interrupted).then(|| "interrupted (Ctrl-C / SIGTERM)".to_owned())
        }),
        errors_csv: errors_path.display().to_string(),
        files: tally.files,
    };
    crate::report::write_summary(&run_dir, &summary).map_err(|e| io_err(&run_dir, e))?;
    if matches!(status, RunStatus::Complete | RunStatus::Partial) {
        let success = run_dir.join("_SUCCESS");
        crate::report::write_atomically(&success, b"").map_err(|e| io_err(&success, e))?;
    }
    Ok(summary)
}

fn read_input<R: std::io::Read>(
    reader: InputReader<R>,
    work_tx: mpsc::Sender<InputMessage>,
    ev_tx: mpsc::Sender<Event>,
    stop: StopSignal,
) {
    for item in reader {
        let draining = match stop.reason() {
            None => false,
            // Every remaining message goes to errors.csv as 'aborted', so
            // that errors.csv fed back as --input finishes the job.
            Some(StopReason::GaveUp) => true,
            Some(_) => return,
        };
        let sent = match item {
            Ok(InputItem::Message(m)) if draining => {
                let aborted = FetchOutcome::Cancelled {
                    attempts: 0,
                    pages: 0,
                };
                ev_tx.blocking_send(Event::Done(m, aborted)).is_ok()
            }
            Ok(InputItem::Message(m)) => work_tx.blocking_send(m).is_ok(),
            Ok(InputItem::Duplicate { .. }) => ev_tx.blocking_send(Event::Duplicate).is_ok(),
            Ok(InputItem::Skipped { .. }) => ev_tx.blocking_send(Event::Skipped).is_ok(),
            Ok(InputItem::Invalid(r)) => ev_tx.blocking_send(Event::Invalid(r)).is_ok(),
            Err(e) => {
                stop.trigger(StopReason::Fatal);
                let _ = ev_tx.blocking_send(Event::InputFailed(e));
                return;
            }
        };
        if !sent {
            return;
        }
    }
}

/// What the writer counted.
struct Tally {
    input: InputSummary,
    messages: MessageSummary,
    kv_rows: u64,
    files: Vec<crate::write::FileInfo>,
    fatal: Option<String>,
    input_error: Option<String>,
}

fn write_all(
    mut ev_rx: mpsc::Receiver<Event>,
    mut lake: Lake,
    mut errors: ErrorsCsv,
    live: &LiveCounts,
    stop: &StopSignal,
) -> Result<Tally, ExportError> {
    let mut t = Tally {
        input: InputSummary::default(),
        messages: MessageSummary::default(),
        kv_rows: 0,
        files: Vec::new(),
        fatal: None,
        input_error: None,
    };
    let errors_path: PathBuf = errors.path().to_owned();
    let err_io = |e: std::io::Error| io_err(&errors_path, e);
    let out_err = |e: WriteError| ExportError::Output(e.to_string());
    while let Some(ev) = ev_rx.blocking_recv() {
        t.input.rows += 1;
        match ev {
            Event::Duplicate => t.input.duplicates += 1,
            Event::Skipped => t.input.skipped += 1,
            Event::Invalid(r) => {
                t.input.invalid += 1;
                errors.invalid_row(&r).map_err(err_io)?;
            }
            Event::InputFailed(e) => {
                t.input.rows -= 1;
                t.input_error = Some(e.to_string());
            }
            Event::Done(m, outcome) => {
                record_outcome(&mut t, &mut lake, &mut errors, &m, outcome, stop).map_err(|e| {
                    match e {
                        Recorded::Io(e) => err_io(e),
                        Recorded::Write(e) => out_err(e),
                    }
                })?;
            }
        }
        live.settled.store(t.input.rows, Ordering::Relaxed);
        live.kv_rows.store(lake.kv_rows(), Ordering::Relaxed);
        live.errors.store(errors.rows(), Ordering::Relaxed);
    }
    t.kv_rows = lake.kv_rows();
    t.files = lake.finish().map_err(out_err)?;
    errors.finish().map_err(err_io)?;
    Ok(t)
}

enum Recorded {
    Io(std::io::Error),
    Write(WriteError),
}

fn record_outcome(
    t: &mut Tally,
    lake: &mut Lake,
    errors: &mut ErrorsCsv,
    m: &InputMessage,
    outcome: FetchOutcome,
    stop: &StopSignal,
) -> Result<(), Recorded> {
    let (status, attempts, pages, code, info) = match &outcome {
        FetchOutcome::Exported { paged, attempts } => {
            lake.add_pairs(&m.msg, &paged.pairs, paged.latest_seq, paged.clear_seq)
                .map_err(Recorded::Write)?;
            t.messages.ok += 1;
            lake.add_message(&MessageRow {
                msg: &m.msg,
                status: "ok",
                kv_count: paged.pairs.len() as i64,
                pages: i64::from(paged.pages),
                attempts: i64::from(*attempts),
                latest_seq: Some(paged.latest_seq),
                clear_seq: Some(paged.clear_seq),
                error_code: None,
                error_info: None,
            })
            .map_err(Recorded::Write)?;
            return Ok(());
        }
        FetchOutcome::NotFound {
            attempts,
            pages,
            info,
        } => {
            t.messages.not_found += 1;
            ("not_found", *attempts, *pages, "23004", info.as_str())
        }
        FetchOutcome::Failed {
            code,
            info,
            attempts,
            pages,
        } => {
            t.messages.failed += 1;
            ("failed", *attempts, *pages, code.as_str(), info.as_str())
        }
        FetchOutcome::Fatal {
            code,
            info,
            attempts,
        } => {
            t.messages.failed += 1;
            t.fatal.get_or_insert_with(|| info.clone());
            ("failed", *attempts, 0, code.as_str(), info.as_str())
        }
        FetchOutcome::Cancelled { attempts, pages } => {
            t.messages.failed += 1;
            let (code, info) = match stop.reason() {
                Some(StopReason::Interrupted) => (
                    "interrupted",
                    "the run was interrupted before this message finished",
                ),
                _ => ("aborted", "the run stopped before this message finished"),
            };
            ("failed", *attempts, *pages, code, info)
        }
    };
    lake.add_message(&MessageRow {
        msg: &m.msg,
        status,
        kv_count: 0,
        pages: i64::from(pages),
        attempts: i64::from(attempts),
        latest_seq: None,
        clear_seq: None,
        error_code: Some(code),
        error_info: Some(info),
    })
    .map_err(Recorded::Write)?;
    errors
        .message(&m.msg, code, info, attempts, m.line)
        .map_err(Recorded::Io)?;
    Ok(())
}
