//! The stages of a running export and how they are wired: the input
//! thread, the fetch workers, the concurrency tuner, the progress reporter,
//! the interrupt watcher; and the wait for all of them to end.

use super::{
    Begun, EVENT_QUEUE, Event, ExportError, ExportPlan, Run, Tuning, Ui, io_err, join_error_text,
    panic_text, writer,
};
use crate::fetch::concurrency::{Concurrency, MAX_AUTO, MIN_AUTO, target_in_flight};
use crate::fetch::limiter::Limiter;
use crate::fetch::{Calls, FetchOutcome, FetchStats, Fetcher, StopReason, StopSignal};
use crate::input::{InputItem, InputReader};
use crate::model::InputMessage;
use crate::report::{ErrorsCsv, LiveCounts, Progress, ProgressMode, ProgressView};
use crate::write::{LakeStore, RunTables};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::{Mutex, mpsc};

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

/// The stages of a started run, running.
pub(super) struct Stages {
    input_thread: std::thread::JoinHandle<u64>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    tuner: Option<tokio::task::JoinHandle<()>>,
    breaker: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<Result<writer::Tally, writer::WriterError>>,
    writer_done: tokio::sync::oneshot::Sender<()>,
    reporter: tokio::task::JoinHandle<Progress>,
    view: ProgressFn,
}

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
pub(super) fn launch(
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
pub(super) struct Ended {
    pub(super) tally: writer::Tally,
    /// What crashed (a worker, the input reader) or was lost, if anything.
    pub(super) crashed: Option<String>,
    pub(super) progress: Option<Progress>,
    pub(super) view: ProgressFn,
}

/// Wait for the writer, then for every other stage. A writer that failed
/// (a full disk, a name too long, a folder turned read-only) or crashed
/// stops everything else at once; a crashed worker or input thread may have
/// lost a message, and a lost message is never a success.
pub(super) async fn wait(stages: Stages, stop: &StopSignal) -> Result<Ended, ExportError> {
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

/// On Ctrl-C / SIGTERM, tell the lake to stop waiting on a store that does
/// not answer (after a grace); the task ends with the returned guard.
pub(super) fn interrupt_on_signal(stop: &StopSignal, lake: &Arc<dyn LakeStore>) -> AbortOnDrop {
    let (stop, lake) = (stop.clone(), lake.clone());
    AbortOnDrop(tokio::spawn(async move {
        stop.stopped().await;
        if stop.reason() == Some(StopReason::Interrupted) {
            lake.interrupt();
        }
    }))
}

/// A task that ends when this is dropped.
pub(super) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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

/// A look at the run in progress, for the progress reporter and its last line.
type ProgressFn = Arc<dyn Fn() -> ProgressView + Send + Sync>;
