//! The journal's one writer: a thread that takes every event waiting,
//! appends them with one `fdatasync` (group commit: a thousand requests in
//! flight cost one sync, not a thousand), then answers each request's
//! oneshot. A request is acknowledged only after its answer says durable.

use super::Counters;
use crate::journal::Journal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{mpsc, oneshot, watch};

/// Events taken into one append at most.
const MAX_BATCH: usize = 8192;
/// Events waiting for the writer at most; a request beyond waits for room.
const QUEUE: usize = 16_384;

struct Append {
    line: Vec<u8>,
    done: oneshot::Sender<bool>,
}

/// Hands lines to the writer (one per request handler, cloned).
#[derive(Clone)]
pub(super) struct Appender {
    tx: mpsc::Sender<Append>,
}

impl Appender {
    /// Append `line`; `true` once it is on disk, `false` if it could not be.
    pub(super) async fn append(&self, line: Vec<u8>) -> bool {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Append { line, done }).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }
}

/// What the writer publishes: the journal's durable end, and whether its
/// last append succeeded (`/healthz`).
#[derive(Clone)]
pub(super) struct Durable {
    pub(super) end: watch::Receiver<u64>,
    pub(super) healthy: Arc<AtomicBool>,
}

/// The writer thread.
pub(super) struct Writer {
    thread: std::thread::JoinHandle<u64>,
}

impl Writer {
    /// Wait until every `Appender` is gone and what they gave is written;
    /// the journal's end.
    pub(super) async fn finish(self) -> u64 {
        let joined = tokio::task::spawn_blocking(move || self.thread.join()).await;
        match joined {
            Ok(Ok(end)) => end,
            _ => 0,
        }
    }
}

pub(super) fn spawn(journal: Journal, counters: Arc<Counters>) -> (Appender, Durable, Writer) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let (end_tx, end) = watch::channel(journal.end());
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = healthy.clone();
    let thread = std::thread::Builder::new()
        .name("msgext-journal".into())
        .spawn(move || write_loop(journal, rx, end_tx, &flag, &counters));
    let thread = match thread {
        Ok(t) => t,
        // No thread: nothing is ever acknowledged (every request gets 503).
        Err(e) => {
            eprintln!("msgext: error: cannot start the journal writer: {e}");
            healthy.store(false, Ordering::Relaxed);
            std::thread::spawn(|| 0)
        }
    };
    (Appender { tx }, Durable { end, healthy }, Writer { thread })
}

fn write_loop(
    mut journal: Journal,
    mut rx: mpsc::Receiver<Append>,
    end: watch::Sender<u64>,
    healthy: &AtomicBool,
    counters: &Counters,
) -> u64 {
    let mut failing = false;
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(a) => batch.push(a),
                Err(_) => break,
            }
        }
        let (lines, dones): (Vec<_>, Vec<_>) = batch.into_iter().map(|a| (a.line, a.done)).unzip();
        let ok = match journal.append(&lines) {
            Ok(e) => {
                if failing {
                    eprintln!("msgext: the journal takes events again");
                }
                end.send_replace(e);
                counters.journal_end.store(e, Ordering::Relaxed);
                true
            }
            Err(e) => {
                if !failing {
                    eprintln!(
                        "msgext: error: cannot write the journal ({e}); callbacks are answered 503 until it can"
                    );
                }
                false
            }
        };
        failing = !ok;
        healthy.store(ok, Ordering::Relaxed);
        for d in dones {
            let _ = d.send(ok);
        }
    }
    journal.end()
}
