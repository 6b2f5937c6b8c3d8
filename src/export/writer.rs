//! The writer stage: one thread that owns the lake files, the run's WAL and
//! ledger, and the error spool. Each settled message is logged to the WAL
//! (fsynced per batch of events), then its rows go to the open part files;
//! when the key_values part is full, and at the end, a checkpoint seals the
//! parts, commits them in the ledger and publishes them (see `ledger`).
//!
//! The thread takes events from its channel as they come and groups the
//! WAL's fsyncs (by count and by time: `GROUP_COMMIT`, `COMMIT_EVERY`).
//! Measured with `cargo bench --bench throughput -- quota` against the
//! earlier scheme that slept between looks at the channel to wake less
//! often: 0.213 against 0.208 ms of CPU a call at the quota (1.3 against
//! 0.9 context switches a call), within the noise, so the plain loop stays.

use super::Event;
use crate::failpoint;
use crate::fetch::{FetchOutcome, FetchStats, StopReason, StopSignal};
use crate::ledger::LedgerError;
use crate::ledger::{
    Checkpoint, Counts, ErrorRow, Recovered, RunFiles, WalRecord, WalStatus, encode_fingerprint,
};
use crate::model::InputMessage;
use crate::report::{ErrorsCsv, InputSummary, LiveCounts, MessageSummary};
use crate::write::schema::MessageRow;
use crate::write::{FileInfo, LakeStore, RunTables, WriteError};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;

/// Events settled per WAL fsync at most.
pub const GROUP_COMMIT: usize = 32;

/// A group commit also waits this long since the last one for more events
/// before its fsync: at the API's quota messages settle ~5 ms apart, and
/// one fsync each would cost ~170 a second on a network disk. What waits is
/// at most `GROUP_COMMIT` events, so a crash re-fetches no more than before.
pub const COMMIT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// The writer's clock: a tick four times a `COMMIT_EVERY`, for as long as
/// anything else can send it events (it holds no sender between ticks, so
/// the writer still ends when the last other sender goes).
pub(crate) async fn tick(events: mpsc::WeakSender<Event>) {
    let mut every = tokio::time::interval(COMMIT_EVERY / 4);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        every.tick().await;
        let Some(tx) = events.upgrade() else { return };
        if tx.send(Event::Tick).await.is_err() {
            return;
        }
    }
}

/// What the writer leaves for the summary.
pub(crate) struct Tally {
    pub(crate) input: InputSummary,
    pub(crate) messages: MessageSummary,
    pub(crate) totals: Counts,
    pub(crate) files: Vec<FileInfo>,
    /// The answer that stopped the run, explained.
    pub(crate) fatal: Option<String>,
    pub(crate) input_error: Option<String>,
    /// fsyncs of the WAL in this attempt (group commits).
    pub(crate) wal_syncs: u64,
}

/// Everything the writer thread owns.
pub(crate) struct Writer {
    pub(crate) tables: RunTables,
    pub(crate) dir: std::sync::Arc<dyn LakeStore>,
    pub(crate) run_files: RunFiles,
    pub(crate) recovered: Recovered,
    /// Invalid input rows and unfinished messages of this attempt.
    pub(crate) spool: Option<ErrorsCsv>,
    pub(crate) spool_path: PathBuf,
    /// Where errors.csv goes in the lake (`_runs/<run_id>/errors.csv`).
    pub(crate) errors_rel: String,
}

/// The checkpoint being gathered.
#[derive(Default)]
struct Pending {
    /// Fingerprints of the messages settled since the last checkpoint.
    messages: Vec<u128>,
    errors: Vec<ErrorRow>,
    counts: Counts,
    /// Replay files whose messages this checkpoint commits.
    replayed: Vec<PathBuf>,
}

struct State<'a> {
    w: Writer,
    t: Tally,
    pending: Pending,
    seq: u32,
    stats: &'a FetchStats,
    stats_at_last_checkpoint: (u64, u64, u64),
    last_checkpoint: std::time::Instant,
    live: &'a LiveCounts,
    stop: &'a StopSignal,
}

/// A text as the run keeps it (WAL, tables, errors.csv, stderr): no UserSig.
fn redacted(info: String) -> String {
    match crate::report::redact(&info) {
        std::borrow::Cow::Borrowed(_) => info,
        std::borrow::Cow::Owned(r) => r,
    }
}

/// Why the writer stopped: what it was doing, and the typed cause. Every
/// one of them ends the run at once (exit 1); what was committed stays.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// The WAL, the ledger or the replay of an earlier attempt.
    #[error("{0}: {1}")]
    Ledger(&'static str, #[source] LedgerError),
    /// A part file of the lake.
    #[error("{0}: {1}")]
    Lake(&'static str, #[source] WriteError),
    /// errors.csv and its spool.
    #[error("{0}: {1}")]
    Io(&'static str, #[source] std::io::Error),
    /// A bug: something used after it was closed.
    #[error("{0}")]
    Closed(&'static str),
}

impl From<LedgerError> for WriterError {
    fn from(e: LedgerError) -> Self {
        WriterError::Ledger("ledger", e)
    }
}

/// Name what the writer was doing when an error came.
trait Doing<T> {
    fn doing(self, what: &'static str) -> Result<T, WriterError>;
}

impl<T> Doing<T> for Result<T, LedgerError> {
    fn doing(self, what: &'static str) -> Result<T, WriterError> {
        self.map_err(|e| WriterError::Ledger(what, e))
    }
}

impl<T> Doing<T> for Result<T, WriteError> {
    fn doing(self, what: &'static str) -> Result<T, WriterError> {
        self.map_err(|e| WriterError::Lake(what, e))
    }
}

impl<T> Doing<T> for Result<T, std::io::Error> {
    fn doing(self, what: &'static str) -> Result<T, WriterError> {
        self.map_err(|e| WriterError::Io(what, e))
    }
}

/// The writer loop: until every sender is gone; then a last checkpoint and errors.csv.
pub(crate) fn write_all(
    mut w: Writer,
    mut rx: mpsc::Receiver<Event>,
    stats: &FetchStats,
    live: &LiveCounts,
    stop: &StopSignal,
) -> Result<Tally, WriterError> {
    let resumed = w.recovered.resumed();
    let replay = std::mem::take(&mut w.recovered.replay);
    let mut st = State {
        t: Tally {
            input: InputSummary::default(),
            messages: MessageSummary {
                resumed,
                ..MessageSummary::default()
            },
            totals: w.recovered.counts,
            files: std::mem::take(&mut w.recovered.files),
            fatal: None,
            input_error: None,
            wal_syncs: 0,
        },
        seq: w.recovered.checkpoints,
        w,
        pending: Pending::default(),
        stats,
        stats_at_last_checkpoint: (0, 0, 0),
        last_checkpoint: std::time::Instant::now(),
        live,
        stop,
    };
    // Messages settled before a crash but not yet committed: write them
    // again, streamed from their files, which go once the next checkpoint
    // has committed them (no checkpoint comes before: see `handle`).
    for path in &replay {
        crate::ledger::read_wal(path, |r| st.write_rows(&r))?;
    }
    st.pending.replayed = replay;
    // Take events as they come; make them durable in one fsync once
    // GROUP_COMMIT wait or COMMIT_EVERY has passed since the last fsync
    // (group commit by count and by time: `tick` is the writer's clock).
    // Until then these messages count as in flight: a crash re-fetches them.
    let mut last_sync = std::time::Instant::now();
    let mut unsynced = 0usize;
    while let Some(ev) = rx.blocking_recv() {
        if let Event::Tick = ev {
            if unsynced > 0 && last_sync.elapsed() >= COMMIT_EVERY {
                st.sync_wal(&mut unsynced, &mut last_sync)?;
            }
            continue;
        }
        st.handle(ev)?;
        unsynced += 1;
        if unsynced >= GROUP_COMMIT {
            st.sync_wal(&mut unsynced, &mut last_sync)?;
        }
    }
    st.show_live();
    st.checkpoint()?;
    // Every committed file is at its final name before the reports say so.
    st.w.dir.flush().doing("publishing part files")?;
    // Replay files that held no complete record were committed by nothing: they go too.
    for p in std::mem::take(&mut st.pending.replayed) {
        std::fs::remove_file(&p).doing("removing a replay file")?;
    }
    st.finish_errors_csv()?;
    let syncs = st.w.run_files.syncs();
    st.w.run_files.close().doing("WAL")?;
    let mut t = st.t;
    t.wal_syncs = syncs;
    t.messages.ok = t.totals.ok;
    t.messages.not_found = t.totals.not_found;
    t.messages.failed = t.totals.failed;
    Ok(t)
}

/// What a message's row of `messages` says, from its WAL record.
struct Facts<'a> {
    status: &'static str,
    kv_count: usize,
    latest: Option<i64>,
    clear: Option<i64>,
    /// The code and text of a message not found or failed.
    error: Option<(&'a str, &'a str)>,
    read: Option<&'a str>,
}

impl<'a> Facts<'a> {
    fn of(status: &'a WalStatus) -> Self {
        let (status, error) = match status {
            WalStatus::Ok {
                latest_seq,
                clear_seq,
                pairs,
                read,
            } => {
                return Facts {
                    status: "ok",
                    kv_count: pairs.len(),
                    latest: Some(*latest_seq),
                    clear: Some(*clear_seq),
                    error: None,
                    read: Some(read.as_str()),
                };
            }
            WalStatus::NotFound { code, info } => ("not_found", (code.as_str(), info.as_str())),
            WalStatus::Failed { code, info } => ("failed", (code.as_str(), info.as_str())),
        };
        Facts {
            status,
            kv_count: 0,
            latest: None,
            clear: None,
            error: Some(error),
            read: None,
        }
    }
}

impl State<'_> {
    /// The group commit: one fsync for the events that waited.
    fn sync_wal(
        &mut self,
        unsynced: &mut usize,
        last_sync: &mut std::time::Instant,
    ) -> Result<(), WriterError> {
        self.w.run_files.sync().doing("WAL")?;
        *last_sync = std::time::Instant::now();
        *unsynced = 0;
        self.show_live();
        Ok(())
    }

    fn spool(&mut self) -> Result<&mut ErrorsCsv, WriterError> {
        self.w
            .spool
            .as_mut()
            .ok_or(WriterError::Closed("errors spool already closed"))
    }

    fn handle(&mut self, ev: Event) -> Result<(), WriterError> {
        match ev {
            Event::InputFailed(e) => {
                self.t.input_error = Some(e.to_string());
                return Ok(());
            }
            // The clock is no input row (`write_all` syncs on it).
            Event::Tick => return Ok(()),
            _ => {}
        }
        self.t.input.rows += 1;
        match ev {
            Event::Duplicate => self.t.input.duplicates += 1,
            Event::Skipped => self.t.input.skipped += 1,
            Event::Resumed => {}
            Event::Invalid(r) => {
                self.t.input.invalid += 1;
                self.spool()?.invalid_row(&r).doing("errors spool")?;
            }
            Event::InputFailed(_) | Event::Tick => {}
            Event::Done(m, outcome) => {
                self.t.input.trimmed += u64::from(m.trimmed);
                self.settle(m, outcome)?;
                if self.checkpoint_due() {
                    self.checkpoint()?;
                }
            }
        }
        self.live
            .settled
            .store(self.t.input.rows, Ordering::Relaxed);
        Ok(())
    }

    /// Whether to checkpoint now: a part file is full, or enough messages,
    /// WAL bytes or time have gone by since the last checkpoint.
    fn checkpoint_due(&self) -> bool {
        let o = self.w.tables.options();
        self.w.tables.part_full()
            || self.pending.messages.len() >= o.checkpoint_messages
            || self.w.run_files.wal_bytes() >= o.checkpoint_log_bytes
            || self.last_checkpoint.elapsed() >= o.checkpoint_every
    }

    /// Record a message's outcome: settled ones go to the WAL and the lake;
    /// unfinished ones only to errors.csv (a resume fetches them).
    fn settle(&mut self, m: InputMessage, outcome: FetchOutcome) -> Result<(), WriterError> {
        let (status, attempts, pages) = match outcome {
            FetchOutcome::Exported {
                paged,
                attempts,
                read,
            } => (
                WalStatus::Ok {
                    latest_seq: paged.latest_seq,
                    clear_seq: paged.clear_seq,
                    pairs: paged.pairs,
                    read,
                },
                attempts,
                paged.pages,
            ),
            FetchOutcome::NotFound {
                code,
                attempts,
                pages,
                info,
            } => (
                WalStatus::NotFound {
                    code,
                    info: redacted(info),
                },
                attempts,
                pages,
            ),
            FetchOutcome::Failed {
                code,
                info,
                attempts,
                pages,
            } => (
                WalStatus::Failed {
                    code,
                    info: redacted(info),
                },
                attempts,
                pages,
            ),
            FetchOutcome::Fatal {
                code,
                info,
                attempts,
            } => {
                let info = redacted(info);
                self.t.fatal.get_or_insert_with(|| info.clone());
                return self.unfinished(&m, &code, &info, attempts);
            }
            FetchOutcome::Cancelled { attempts, .. } => {
                let (code, info) = match self.stop.reason() {
                    Some(StopReason::Interrupted) => (
                        "interrupted",
                        "the run was interrupted before this message finished",
                    ),
                    Some(StopReason::GaveUp) => (
                        "aborted",
                        "the run gave up: no call succeeded for a long stretch",
                    ),
                    _ => ("aborted", "the run stopped before this message finished"),
                };
                return self.unfinished(&m, code, info, attempts);
            }
        };
        let r = WalRecord {
            v: crate::ledger::FORMAT_VERSION,
            msg: m.msg,
            line: m.line,
            status,
            attempts,
            pages,
            at_us: chrono::Utc::now().timestamp_micros(),
        };
        self.w.run_files.append(&r).doing("WAL")?;
        failpoint::hit("settled");
        self.write_rows(&r)
    }

    /// A message the run stopped before finishing: only in errors.csv.
    fn unfinished(
        &mut self,
        m: &InputMessage,
        code: &str,
        info: &str,
        attempts: u32,
    ) -> Result<(), WriterError> {
        self.t.messages.unfinished += 1;
        self.spool()?
            .message(&m.msg, code, info, attempts, m.line)
            .doing("errors spool")
    }

    /// Rows of a settled message into the open part files and the pending checkpoint.
    fn write_rows(&mut self, r: &WalRecord) -> Result<(), WriterError> {
        let msg = &r.msg;
        let Facts {
            status,
            kv_count,
            latest,
            clear,
            error,
            read,
        } = Facts::of(&r.status);
        let c = &mut self.pending.counts;
        match status {
            "ok" => c.ok += 1,
            "not_found" => c.not_found += 1,
            _ => c.failed += 1,
        }
        c.kv_rows += kv_count as u64;
        let (code, info) = (error.map(|e| e.0), error.map(|e| e.1));
        if let (Some(latest), Some(clear)) = (latest, clear) {
            self.w
                .tables
                .add_pairs(msg, r.pairs(), latest, clear)
                .doing("writing key_values")?;
        }
        self.w
            .tables
            .add_message(&MessageRow {
                msg,
                status,
                kv_count: kv_count as i64,
                pages: i64::from(r.pages),
                attempts: i64::from(r.attempts),
                latest_seq: latest,
                clear_seq: clear,
                error_code: code,
                error_info: info,
                read,
                fetched_at_us: (status != "failed").then_some(r.at_us),
            })
            .doing("writing messages")?;
        if let (Some(code), Some(info)) = (code, info) {
            self.pending.errors.push(ErrorRow {
                msg: msg.clone(),
                code: code.to_owned(),
                info: info.to_owned(),
                attempts: r.attempts,
                line: r.line,
            });
        }
        self.pending.messages.push(msg.fingerprint());
        Ok(())
    }

    /// Publish the rows and errors so far for the progress display.
    fn show_live(&self) {
        self.live.kv_rows.store(
            self.t.totals.kv_rows + self.pending.counts.kv_rows,
            Ordering::Relaxed,
        );
        // Messages not exported (failed, or left by an early stop) alone:
        // not found is a final answer, invalid input rows the summary's own count.
        let (done, now) = (&self.t.totals, &self.pending.counts);
        let failed = done.failed + now.failed + self.t.messages.unfinished;
        self.live.errors.store(failed, Ordering::Relaxed);
        self.live
            .not_found
            .store(done.not_found + now.not_found, Ordering::Relaxed);
    }

    /// Seal the open parts, commit them in the ledger, publish them.
    fn checkpoint(&mut self) -> Result<(), WriterError> {
        let sealed = self.w.tables.seal().doing("sealing part files")?;
        let now = (
            self.stats.requests.load(Ordering::Relaxed),
            self.stats.retries.load(Ordering::Relaxed),
            self.stats.rate_limited.load(Ordering::Relaxed),
        );
        // Nothing to commit: no file, no message, not even a call to count.
        if sealed.is_empty()
            && self.pending.messages.is_empty()
            && now == self.stats_at_last_checkpoint
        {
            return Ok(());
        }
        failpoint::hit("sealed");
        self.w.run_files.sync().doing("WAL")?;
        let mut counts = std::mem::take(&mut self.pending.counts);
        counts.requests = now.0 - self.stats_at_last_checkpoint.0;
        counts.retries = now.1 - self.stats_at_last_checkpoint.1;
        counts.rate_limited = now.2 - self.stats_at_last_checkpoint.2;
        let cp = Checkpoint {
            v: crate::ledger::FORMAT_VERSION,
            seq: self.seq,
            files: sealed.iter().map(|s| s.info.clone()).collect(),
            messages: std::mem::take(&mut self.pending.messages)
                .into_iter()
                .map(encode_fingerprint)
                .collect(),
            errors: std::mem::take(&mut self.pending.errors),
            counts,
        };
        self.w.run_files.commit(&cp).doing("ledger")?;
        failpoint::hit("committed");
        for s in &sealed {
            self.w.dir.publish(s).doing("publishing part files")?;
        }
        failpoint::hit("published");
        tracing::info!(
            seq = self.seq,
            files = cp.files.len(),
            messages = cp.messages.len(),
            "checkpoint committed"
        );
        let replayed = std::mem::take(&mut self.pending.replayed);
        self.w.run_files.next_segment(&replayed).doing("WAL")?;
        self.stats_at_last_checkpoint = now;
        self.last_checkpoint = std::time::Instant::now();
        self.seq += 1;
        self.t.totals.add(&cp.counts);
        self.t.files.extend(cp.files);
        Ok(())
    }

    /// errors.csv: the committed message errors of every attempt, then this
    /// attempt's invalid rows and unfinished messages; written atomically.
    fn finish_errors_csv(&mut self) -> Result<(), WriterError> {
        let Some(spool) = self.w.spool.take() else {
            return Ok(());
        };
        let spool_path = self.w.spool_path.clone();
        spool.finish().doing("errors spool")?;
        // Staged in the lake, whole or not at all, like the data files.
        let (staged, file) = self.w.dir.stage(&self.w.errors_rel).doing("errors.csv")?;
        let mut out = ErrorsCsv::to_writer(file, self.w.tables.kind()).doing("errors.csv")?;
        self.w
            .run_files
            .committed_errors(|r| out.row(r).doing("errors.csv"))?;
        out.append_file(&spool_path).doing("errors.csv")?;
        let rows = out.rows();
        let file = out.into_inner().doing("errors.csv")?;
        let sealed = self
            .w
            .dir
            .seal(staged, file, rows, Vec::new())
            .doing("errors.csv")?;
        self.w.dir.publish(&sealed).doing("errors.csv")?;
        self.w.dir.flush().doing("errors.csv")?;
        let _ = std::fs::remove_file(&spool_path);
        Ok(())
    }
}

/// The spool of this attempt's invalid rows and unfinished messages.
pub(crate) fn spool_path(run_dir: &Path) -> PathBuf {
    run_dir.join(".errors-spool.csv")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer ends when the last other sender goes: the clock holds no
    /// sender between its ticks, so a run never waits on it.
    #[tokio::test(start_paused = true)]
    async fn the_clock_ticks_while_others_can_send_and_stops_with_them() {
        let (tx, mut rx) = mpsc::channel::<Event>(4);
        let clock = tokio::spawn(tick(tx.downgrade()));
        for _ in 0..3 {
            assert!(matches!(rx.recv().await, Some(Event::Tick)));
        }
        drop(tx);
        let drained = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while let Some(ev) = rx.recv().await {
                assert!(matches!(ev, Event::Tick));
            }
        });
        assert!(drained.await.is_ok(), "the writer's events never ended");
        clock.await.unwrap();
    }
}
