//! `msgext listen`: the app's callback URL. It keeps the extension
//! callbacks as hints of which messages changed, for `export --changed`.
//!
//! One request's way: the server (`server.rs`) checks who sent it
//! (`api::callback::verify`) and what it is, hands the event to the
//! journal writer (`writer.rs`, one thread: group commit, one `fdatasync`
//! for everything that arrived meanwhile) and answers OK only once the
//! event is on disk. The committer (`committer.rs`) moves the journal to
//! the lake's events tables every `--commit-every`, each commit carrying
//! the journal offset it reaches as the listener's Delta `txn`, and
//! forgets the journal below what both tables hold. Killed anywhere, the
//! next start commits from the offsets the tables hold: every event
//! acknowledged is committed once.
//!
//! Threads: the runtime's (requests, the committer's timer, status
//! lines), the journal writer, and blocking tasks for the lake.

mod committer;
mod server;
mod writer;

use crate::fetch::StopSignal;
use crate::journal::{Journal, JournalError};
use crate::table::events::Received;
use crate::write::{Out, WriteError};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What `msgext listen` was told to do.
#[derive(Debug, Clone)]
pub(crate) struct ListenPlan {
    pub(crate) out: Out,
    pub(crate) sdkappid: u64,
    pub(crate) bind: SocketAddr,
    pub(crate) state_dir: PathBuf,
    pub(crate) commit_every: Duration,
    /// The webhook token; `None`: the app signs nothing (`--unsigned`).
    pub(crate) token: Option<String>,
    pub(crate) quiet: bool,
    pub(crate) store_timeout: Duration,
}

/// Why the listener could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ListenError {
    #[error(
        "{}: in use by another msgext listen (pid {pid}); each listener needs its own --state-dir",
        .dir.display()
    )]
    Busy { dir: PathBuf, pid: String },
    #[error(
        "{}: the state of a listener for {was}, not {now}; give this listener its own --state-dir",
        .dir.display()
    )]
    OtherLake {
        dir: PathBuf,
        was: String,
        now: String,
    },
    #[error(
        "{}: the journal ends at event {end}, but {table} holds this listener's events up to {committed}: the journal was removed or replaced; move the state folder away to start a new listener",
        .dir.display()
    )]
    JournalBehind {
        dir: PathBuf,
        end: u64,
        table: String,
        committed: u64,
    },
    #[error("cannot serve on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{}: {source}", .path.display())]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the journal: {0}")]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Lake(#[from] WriteError),
}

impl ListenError {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            ListenError::Busy { .. }
            | ListenError::OtherLake { .. }
            | ListenError::JournalBehind { .. }
            | ListenError::Bind { .. } => 2,
            ListenError::Lake(WriteError::Delta(d)) if d.is_wrong_lake() => 2,
            _ => 1,
        }
    }
}

/// What the listener counted (shown every 10 s, and at the end).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) accepted: AtomicU64,
    pub(crate) ignored: AtomicU64,
    /// Not a callback (400), too large (413), too slow (408).
    pub(crate) bad: AtomicU64,
    /// Answered 503: the journal could not take them.
    pub(crate) unstored: AtomicU64,
    /// Refused, by `Refused::reason` (other_app, unsigned, bad_sign, stale).
    pub(crate) refused: [AtomicU64; 4],
    /// Events committed to the lake by this process.
    pub(crate) committed: AtomicU64,
    /// Journal offsets: its end, and what both tables hold.
    pub(crate) journal_end: AtomicU64,
    pub(crate) committed_to: AtomicU64,
}

impl Counters {
    fn get(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }

    /// The status line (JSON).
    pub(crate) fn json(&self) -> serde_json::Value {
        use crate::api::callback::Refused;
        let refused: serde_json::Map<String, serde_json::Value> = REFUSALS
            .iter()
            .zip(&self.refused)
            .map(|(r, n): (&Refused, _)| (r.reason().to_owned(), Self::get(n).into()))
            .collect();
        let end = Self::get(&self.journal_end);
        serde_json::json!({
            "event": "listen",
            "accepted": Self::get(&self.accepted),
            "refused": refused,
            "ignored": Self::get(&self.ignored),
            "bad": Self::get(&self.bad),
            "unstored": Self::get(&self.unstored),
            "committed": Self::get(&self.committed),
            "backlog": end.saturating_sub(Self::get(&self.committed_to)),
        })
    }
}

/// The refusals in the order of `Counters::refused`.
pub(crate) const REFUSALS: [crate::api::callback::Refused; 4] = {
    use crate::api::callback::Refused::*;
    [OtherApp, Unsigned, BadSign, Stale]
};

/// Whether a journal line is a received event.
fn is_record(line: &[u8]) -> bool {
    serde_json::from_slice::<Received>(line).is_ok()
}

/// The listener's identity in its state folder.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Identity {
    id: String,
    lake: String,
    sdkappid: u64,
}

/// Lock the state folder (held for the process's life) and read or make
/// the listener's identity.
fn claim_state(plan: &ListenPlan) -> Result<(std::fs::File, Identity), ListenError> {
    let dir = &plan.state_dir;
    let state = |path: &Path| {
        let path = path.to_owned();
        move |source| ListenError::State { path, source }
    };
    std::fs::create_dir_all(dir).map_err(state(dir))?;
    let lock_path = dir.join(".lock");
    let mut lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .map_err(state(&lock_path))?;
    if lock.try_lock().is_err() {
        let pid = std::fs::read_to_string(&lock_path).unwrap_or_default();
        return Err(ListenError::Busy {
            dir: dir.clone(),
            pid: pid.trim().to_owned(),
        });
    }
    use std::io::Write;
    let _ = lock.set_len(0);
    let _ = writeln!(lock, "{}", std::process::id());
    let path = dir.join("listener.json");
    let now = Identity {
        id: new_id(),
        lake: plan.out.display(),
        sdkappid: plan.sdkappid,
    };
    let identity = match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice::<Identity>(&bytes).map_err(|e| ListenError::State {
                path: path.clone(),
                source: std::io::Error::other(e),
            })?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = serde_json::to_vec_pretty(&now).unwrap_or_default();
            crate::write::write_atomically(&path, &text)?;
            now.clone()
        }
        Err(e) => return Err(state(&path)(e)),
    };
    if (identity.lake.as_str(), identity.sdkappid) != (now.lake.as_str(), now.sdkappid) {
        return Err(ListenError::OtherLake {
            dir: dir.clone(),
            was: format!("app {} in {}", identity.sdkappid, identity.lake),
            now: format!("app {} in {}", now.sdkappid, now.lake),
        });
    }
    Ok((lock, identity))
}

/// `<host>-<8 hex>`: which machine, and unique.
fn new_id() -> String {
    let host: String = crate::export::hostname()
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() || c == '-' {
            true => c,
            false => '-',
        })
        .take(40)
        .collect();
    format!("{host}-{:08x}", rand::random::<u32>())
}

/// Serve until `stop`, then commit what the journal holds and return the
/// counters. `ready` is told the address served on.
pub(crate) async fn run(
    plan: ListenPlan,
    stop: StopSignal,
    ready: impl FnOnce(SocketAddr),
) -> Result<Arc<Counters>, ListenError> {
    let (_lock, identity) = claim_state(&plan)?;
    let journal_dir = plan.state_dir.join("journal");
    let journal = Journal::open(&journal_dir, &is_record)?;
    let counters = Arc::new(Counters::default());
    counters.journal_end.store(journal.end(), Ordering::Relaxed);
    let lake = plan.out.open(&plan.state_dir, plan.store_timeout)?;
    let mut committer = committer::Committer::new(
        lake,
        plan.sdkappid,
        identity.id.clone(),
        journal_dir,
        counters.clone(),
    );
    committer.start(journal.end()).await?;
    let listener = tokio::net::TcpListener::bind(plan.bind)
        .await
        .map_err(|source| ListenError::Bind {
            addr: plan.bind,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ListenError::Bind {
        addr: plan.bind,
        source,
    })?;
    let (appender, durable, writer) = writer::spawn(journal, counters.clone());
    ready(addr);
    let server = server::Server {
        sdkappid: plan.sdkappid,
        token: plan.token.clone(),
        appender,
        counters: counters.clone(),
        healthy: durable.clone(),
        last_log: std::sync::Mutex::new(None),
    };
    let serving = tokio::spawn(server::serve(listener, Arc::new(server), stop.clone()));
    let status = tokio::spawn(status_lines(counters.clone(), plan.quiet));
    committer
        .run_until(plan.commit_every, &stop, &durable)
        .await;
    // Stopped: no more requests; the writer ends once the last is written.
    let _ = serving.await;
    let end = writer.finish().await;
    status.abort();
    committer.last(end).await;
    Ok(counters)
}

/// A status line on stderr every 10 s: JSON off a terminal, a short line on one.
async fn status_lines(counters: Arc<Counters>, quiet: bool) {
    use std::io::IsTerminal;
    if quiet {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    loop {
        tick.tick().await;
        let line = counters.json();
        match std::io::stderr().is_terminal() {
            false => eprintln!("{line}"),
            true => eprintln!(
                "msgext: {} accepted, {} ignored, {} committed, backlog {}",
                line["accepted"], line["ignored"], line["committed"], line["backlog"]
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::callback::{ExtensionEvent, Operation};
    use crate::kind::MessageRef;

    /// The server and the writer on a journal whose disk is full.
    async fn serving_on_a_full_disk(dir: &Path) -> (String, StopSignal, Arc<Counters>) {
        let mut journal = Journal::open(dir, &is_record).unwrap();
        journal.fill_disk();
        let counters = Arc::new(Counters::default());
        let (appender, durable, _writer) = writer::spawn(journal, counters.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = server::Server {
            sdkappid: 7,
            token: None,
            appender,
            counters: counters.clone(),
            healthy: durable,
            last_log: std::sync::Mutex::new(None),
        };
        let stop = StopSignal::default();
        tokio::spawn(server::serve(listener, Arc::new(server), stop.clone()));
        (url, stop, counters)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_disk_is_answered_503_and_nothing_is_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let (url, stop, counters) = serving_on_a_full_disk(dir.path()).await;
        let event = ExtensionEvent {
            message: MessageRef::new(None, "b", "1_1_1").into(),
            operation: Operation::Clear,
            pairs: vec![],
            seq: 1,
            event_time_ms: 1,
        };
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let post = client
            .post(format!("{url}/?SdkAppid=7"))
            .body(event.body())
            .send()
            .await
            .unwrap();
        assert_eq!(post.status().as_u16(), 503);
        let body = post.text().await.unwrap();
        assert!(body.contains("FAIL"), "{body}");
        let health = client.get(format!("{url}/healthz")).send().await.unwrap();
        assert_eq!(health.status().as_u16(), 503);
        assert_eq!(counters.accepted.load(Ordering::Relaxed), 0);
        assert_eq!(counters.unstored.load(Ordering::Relaxed), 1);
        stop.trigger(crate::fetch::StopReason::Interrupted);
        // Nothing reached the journal.
        let (_, lines) = crate::journal::read(dir.path(), 0, u64::MAX, 10).unwrap();
        assert!(lines.is_empty());
    }
}
