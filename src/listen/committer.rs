//! From the journal to the lake: every `--commit-every`, the events past
//! what each events table holds of this listener are committed, one
//! commit a table, carrying the journal offset reached as the listener's
//! `txn` version; then the journal forgets what both tables hold. The lake
//! unreachable: the events wait in the journal, and the next tick tries
//! again (the backlog shows in the status lines).

use super::{Counters, ListenError};
use crate::journal;
use crate::kind::Kind;
use crate::table::delta::{Committed, DeltaLake};
use crate::table::events::{EventTables, Received};
use crate::write::LakeStore;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Events read from the journal for one commit at most.
const CHUNK: usize = 200_000;

pub(super) struct Committer {
    lake: Arc<dyn LakeStore>,
    sdkappid: u64,
    id: String,
    journal: PathBuf,
    counters: Arc<Counters>,
    delta: Option<DeltaLake>,
    /// The journal offset each kind's table holds (`Kind::ALL` order);
    /// `None` until the lake has been read.
    positions: Option<[u64; 2]>,
    failing: bool,
}

impl Committer {
    pub(super) fn new(
        lake: Arc<dyn LakeStore>,
        sdkappid: u64,
        id: String,
        journal: PathBuf,
        counters: Arc<Counters>,
    ) -> Self {
        Committer {
            lake,
            sdkappid,
            id,
            journal,
            counters,
            delta: None,
            positions: None,
            failing: false,
        }
    }

    /// Read where the tables stand before serving: an events table of
    /// another schema, or a journal behind them, stops the listener; a
    /// lake out of reach does not (the events wait).
    pub(super) async fn start(&mut self, end: u64) -> Result<(), ListenError> {
        match tokio::task::block_in_place(|| self.positions(end)) {
            Ok(_) => Ok(()),
            Err(e) if e.exit_code() == 2 => Err(e),
            Err(e) => {
                eprintln!(
                    "msgext: warning: the lake cannot be read now ({e}); callbacks are kept in the journal and committed once it can"
                );
                self.failing = true;
                Ok(())
            }
        }
    }

    /// Commit every `every` until `stop`.
    pub(super) async fn run_until(
        &mut self,
        every: Duration,
        stop: &crate::fetch::StopSignal,
        durable: &super::writer::Durable,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.stopped() => return,
            }
            let end = *durable.end.borrow();
            self.tick(end).await;
        }
    }

    /// The last commit, as the listener stops (tried again at once when it
    /// fails, as when another listener created a table meanwhile).
    pub(super) async fn last(&mut self, end: u64) {
        for _ in 0..3 {
            self.tick(end).await;
            if !self.failing {
                break;
            }
        }
        let left = end.saturating_sub(self.counters.committed_to.load(Ordering::Relaxed));
        if left > 0 {
            eprintln!(
                "msgext: warning: {left} events wait in the journal ({}): the next start commits them",
                self.journal.display()
            );
        }
    }

    async fn tick(&mut self, end: u64) {
        match tokio::task::block_in_place(|| self.commit_up_to(end)) {
            Ok(()) if self.failing => {
                eprintln!("msgext: the lake takes commits again");
                self.failing = false;
            }
            Ok(()) => {}
            Err(e) if !self.failing => {
                eprintln!(
                    "msgext: warning: cannot commit to the lake ({e}); callbacks are kept in the journal and committed once it can"
                );
                self.failing = true;
            }
            Err(_) => {}
        }
    }

    fn tables(&mut self) -> Result<EventTables<'_>, ListenError> {
        if self.delta.is_none() {
            let root = self.lake.table_root()?;
            self.delta = Some(DeltaLake::open(root).map_err(crate::write::WriteError::Io)?);
        }
        let delta = self.delta.as_ref().ok_or_else(|| {
            ListenError::Lake(crate::write::WriteError::Store("no Delta lake".into()))
        })?;
        Ok(EventTables {
            lake: &self.lake,
            delta,
            sdkappid: self.sdkappid,
            listener: &self.id,
        })
    }

    /// Where each table stands, read from the lake once (then kept): the
    /// offset its log holds of this listener, or the journal's floor when
    /// higher (below it, nothing of that table was left).
    fn positions(&mut self, end: u64) -> Result<[u64; 2], ListenError> {
        if let Some(p) = self.positions {
            return Ok(p);
        }
        let floor = journal::floor(&self.journal)?;
        self.lake.check()?;
        let mut out = [0; 2];
        for (i, kind) in Kind::ALL.into_iter().enumerate() {
            let tables = self.tables()?;
            tables.check(kind)?;
            let held = tables.position(kind)?;
            if held > end {
                return Err(ListenError::JournalBehind {
                    dir: self.journal.clone(),
                    end,
                    table: self.lake.display(kind.spec().events_table()),
                    committed: held,
                });
            }
            out[i] = held.max(floor);
        }
        self.positions = Some(out);
        self.counters
            .committed_to
            .store(out[0].min(out[1]), Ordering::Relaxed);
        Ok(out)
    }

    /// Commit the journal up to `end`, a chunk at a time, then forget it.
    fn commit_up_to(&mut self, end: u64) -> Result<(), ListenError> {
        let mut at = self.positions(end)?;
        loop {
            let from = at[0].min(at[1]);
            if from >= end {
                break;
            }
            let (first, lines) = journal::read(&self.journal, from, end, CHUNK)?;
            if lines.is_empty() {
                break;
            }
            let chunk_end = first + lines.len() as u64;
            let records = parse(&lines, &self.journal)?;
            for (i, kind) in Kind::ALL.into_iter().enumerate() {
                let events: Vec<&Received> = (first..)
                    .zip(&records)
                    .filter(|(o, r)| *o >= at[i] && r.event.message.kind() == kind)
                    .map(|(_, r)| r)
                    .collect();
                if !events.is_empty() {
                    crate::failpoint::hit("listen_before_commit");
                    let done = self.tables()?.commit(kind, &events, chunk_end)?;
                    crate::failpoint::hit("listen_committed");
                    if let Committed::At(_) = done {
                        let n = events.len() as u64;
                        self.counters.committed.fetch_add(n, Ordering::Relaxed);
                    }
                }
                at[i] = chunk_end;
                self.positions = Some(at);
            }
            self.counters
                .committed_to
                .store(at[0].min(at[1]), Ordering::Relaxed);
        }
        journal::forget(&self.journal, at[0].min(at[1]))?;
        Ok(())
    }
}

/// The journal's lines as events (they were checked when it was opened).
fn parse(lines: &[Vec<u8>], dir: &std::path::Path) -> Result<Vec<Received>, ListenError> {
    lines
        .iter()
        .map(|l| {
            serde_json::from_slice(l).map_err(|e| {
                ListenError::Journal(journal::JournalError::Damaged {
                    path: dir.to_owned(),
                    line: 0,
                    reason: e.to_string(),
                })
            })
        })
        .collect()
}
