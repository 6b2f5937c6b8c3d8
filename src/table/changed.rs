//! What `export --changed` reads, from the lake: the messages named by
//! events committed since the app's last `--changed` run, and a rolling
//! sweep of the messages the current tables know.
//!
//! The position: the events table's Delta version a `--changed` run
//! consumed is recorded as a `txn` (`msgext-changed-<sdkappid>`) in the
//! same commit that replaces the rows of `current_messages` the run read,
//! so it moves exactly with the current tables: a run killed before that
//! commit leaves it where it was (the next run reads those events again),
//! and one killed after has consumed them. The events since a version are
//! the files the latest snapshot holds that the one at that version did
//! not (an events table only ever gains files).
//!
//! The sweep: each run reads the `ceil(N / K)` known messages (status ok)
//! whose last good read is the oldest, N counting every message of the
//! app's `current_messages` (those not found too). Every run's reads make
//! their messages the newest, so a message moves up by at least that many
//! places a run it is not read, and is read within K runs: N never
//! shrinks (a message found gone stays, as not found), so K runs move a
//! message up at least N places. No counter is kept, and a run that reads
//! nothing costs nothing.

use super::delta::{DeltaLake, LiveFile, Txn};
use super::{app_dir, latest, names, read};
use crate::kind::{Kind, MessageId};
use crate::write::{LakeStore, WriteError};
use arrow_array::{Array, TimestampMicrosecondArray};
use std::collections::HashSet;

/// The `txn` application id of an app's `--changed` position.
pub(crate) fn position_app_id(sdkappid: u64) -> String {
    format!("msgext-changed-{sdkappid}")
}

/// The position a `--changed` run commits with the current tables.
pub(crate) fn position_txn(sdkappid: u64, events_version: u64) -> Txn {
    Txn {
        app_id: position_app_id(sdkappid),
        version: events_version as i64,
    }
}

/// The events table version the app's `--changed` runs of `kind` consumed (none yet: `None`).
pub(crate) fn consumed(
    lake: &dyn LakeStore,
    delta: &DeltaLake,
    kind: Kind,
    sdkappid: u64,
) -> Result<Option<u64>, WriteError> {
    let [_, table] = names(kind);
    let Some(snapshot) = latest(lake, delta, &table)? else {
        return Ok(None);
    };
    let v = delta.txn_version(&table, &snapshot, &position_app_id(sdkappid))?;
    Ok(v.map(|v| v.max(0) as u64))
}

/// The events committed since a position.
#[derive(Debug, Default)]
pub(crate) struct NewEvents {
    /// The events table's version now (none: no events table).
    pub(crate) version: Option<u64>,
    /// The messages they name, each once.
    pub(crate) messages: Vec<MessageId>,
    /// Event rows read.
    pub(crate) rows: u64,
    /// The version consumed could not be read any more (its log entries
    /// were cleaned up): every event the table holds was taken.
    pub(crate) whole: bool,
}

/// The messages of `kind` named by the app's events committed after
/// version `since` (none: every event).
pub(crate) fn new_events(
    lake: &dyn LakeStore,
    delta: &DeltaLake,
    kind: Kind,
    sdkappid: u64,
    since: Option<u64>,
) -> Result<NewEvents, WriteError> {
    let table = kind.spec().events_table();
    let Some(now) = latest(lake, delta, table)? else {
        return Ok(NewEvents::default());
    };
    let prefix = format!("{}/", app_dir(sdkappid));
    let mut out = NewEvents {
        version: Some(now.version()),
        ..NewEvents::default()
    };
    let before: HashSet<String> = match since {
        Some(v) if v >= now.version() => return Ok(out),
        Some(v) => match delta.snapshot_at(table, v) {
            Ok(then) => files(delta, table, &then, &prefix)?,
            Err(e) => {
                tracing::warn!(error = %e, "the events consumed last cannot be told apart: taking every event");
                out.whole = true;
                HashSet::new()
            }
        },
        None => HashSet::new(),
    };
    let mut seen = HashSet::new();
    for f in delta.files_under(table, &now, &prefix)? {
        if before.contains(&f.path) {
            continue;
        }
        for batch in read::batches(lake, &format!("{table}/{}", f.path))? {
            let batch = batch?;
            out.rows += batch.num_rows() as u64;
            for id in read::ids(kind, &batch)? {
                if seen.insert(id.fingerprint()) {
                    out.messages.push(id);
                }
            }
        }
    }
    Ok(out)
}

fn files(
    delta: &DeltaLake,
    table: &str,
    snapshot: &delta_kernel::snapshot::SnapshotRef,
    prefix: &str,
) -> Result<HashSet<String>, WriteError> {
    let live = delta.files_under(table, snapshot, prefix)?;
    Ok(live.into_iter().map(|LiveFile { path, .. }| path).collect())
}

/// A known message's place in the sweep: its last good read, then its
/// fingerprint's high half (ties in a fixed order).
type Age = (i64, u64);

/// The sweep's pick of `ages` (the known messages found, of `all` the
/// app's messages): how many of the oldest a run reads (`ceil(all / K)`,
/// none with `K` = 0), as the age at or below which a message is picked.
pub(crate) fn sweep_cut(ages: &mut [Age], all: usize, runs: u32) -> Option<Age> {
    if runs == 0 || ages.is_empty() {
        return None;
    }
    let n = all.max(ages.len()).div_ceil(runs as usize).min(ages.len());
    let (_, cut, _) = ages.select_nth_unstable(n - 1);
    Some(*cut)
}

/// The sweep of a run: the known messages (status ok) of the app's
/// `current_messages` whose age is at or below the cut, given to `each`;
/// how many are known.
pub(crate) fn sweep(
    lake: &dyn LakeStore,
    delta: &DeltaLake,
    kind: Kind,
    sdkappid: u64,
    runs: u32,
    mut each: impl FnMut(MessageId) -> Result<(), WriteError>,
) -> Result<usize, WriteError> {
    let [_, table] = names(kind);
    let Some(snapshot) = latest(lake, delta, &table)? else {
        return Ok(0);
    };
    let files = delta.files_under(&table, &snapshot, &format!("{}/", app_dir(sdkappid)))?;
    // Two passes: the ages alone (16 bytes a message), then the picked messages.
    let mut ages = Vec::new();
    let all = known_ages(lake, kind, &table, &files, |_, age| {
        ages.push(age);
        Ok(())
    })?;
    let known = ages.len();
    let Some(cut) = sweep_cut(&mut ages, all, runs) else {
        return Ok(known);
    };
    drop(ages);
    known_ages(lake, kind, &table, &files, |id, age| match age <= cut {
        true => each(id),
        false => Ok(()),
    })?;
    Ok(known)
}

/// Each known message (status ok) of the files, with its age; how many
/// messages the files hold (any status).
fn known_ages(
    lake: &dyn LakeStore,
    kind: Kind,
    table: &str,
    files: &[LiveFile],
    mut each: impl FnMut(MessageId, Age) -> Result<(), WriteError>,
) -> Result<usize, WriteError> {
    let mut all = 0;
    for f in files {
        for batch in read::batches(lake, &format!("{table}/{}", f.path))? {
            let batch = batch?;
            all += batch.num_rows();
            let status = read::strings(&batch, "status")?;
            let read_at: &TimestampMicrosecondArray = read::column(&batch, "read_at")?;
            for (i, id) in read::ids(kind, &batch)?.into_iter().enumerate() {
                if status.value(i) != "ok" {
                    continue;
                }
                let at = if read_at.is_null(i) {
                    0
                } else {
                    read_at.value(i)
                };
                let fp = (id.state_fingerprint() >> 64) as u64;
                each(id, (at, fp))?;
            }
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_cuts_at_the_oldest_share() {
        // (read_at, fingerprint) ages of the messages found; all messages; K runs.
        let cases: [(&[Age], usize, u32, Option<Age>); 7] = [
            (&[], 0, 7, None),
            (&[(5, 1), (1, 1)], 2, 0, None),
            // One message: read every run.
            (&[(5, 1)], 1, 7, Some((5, 1))),
            // 10 known, K = 3: the 4 oldest.
            (
                &[
                    (9, 0),
                    (1, 0),
                    (8, 0),
                    (2, 0),
                    (7, 0),
                    (3, 0),
                    (6, 0),
                    (4, 0),
                    (5, 0),
                    (10, 0),
                ],
                10,
                3,
                Some((4, 0)),
            ),
            // Ties of read_at are cut by fingerprint.
            (&[(1, 9), (1, 3), (1, 7), (2, 0)], 4, 2, Some((1, 7))),
            // K above N: one a run.
            (&[(3, 0), (2, 0)], 2, 7, Some((2, 0))),
            // Messages not found count: 3 found of 9, K = 3: 3 a run (all of them).
            (&[(3, 0), (2, 0), (1, 0)], 9, 3, Some((3, 0))),
        ];
        for (ages, all, runs, want) in cases {
            let mut ages = ages.to_vec();
            assert_eq!(
                sweep_cut(&mut ages, all, runs),
                want,
                "{ages:?} of {all}, K={runs}"
            );
        }
    }

    /// Runs of the sweep over `n0` messages, K = `k`: each run reads the
    /// oldest share, `events` messages by their events (they become
    /// newest), finds one read in `gone_one_in` gone for good, and learns
    /// `new` messages. Every message found is read within K runs, at most
    /// ceil(N / K) a run by the sweep.
    fn simulate(k: u32, n0: usize, events: usize, new: usize, gone_one_in: u64) {
        let mut read_at: Vec<i64> = (0..n0).map(|i| (i % 13) as i64).collect();
        let mut gone: Vec<bool> = vec![false; n0];
        let mut last_read: Vec<i64> = vec![0; n0];
        let mut rng = crate::mock::store::SplitMix64::new(3);
        for run in 1..=60i64 {
            let n = read_at.len();
            let found: Vec<usize> = (0..n).filter(|&i| !gone[i]).collect();
            let mut ages: Vec<Age> = found.iter().map(|&i| (read_at[i], i as u64)).collect();
            let Some(cut) = sweep_cut(&mut ages, n, k) else {
                return;
            };
            let picked: Vec<usize> = found
                .into_iter()
                .filter(|&i| (read_at[i], i as u64) <= cut)
                .collect();
            assert!(
                picked.len() <= n.div_ceil(k as usize),
                "run {run}: {}",
                picked.len()
            );
            let changed: Vec<usize> = (0..events)
                .map(|_| rng.below(n as u64) as usize)
                .filter(|&i| !gone[i])
                .collect();
            for i in picked.into_iter().chain(changed) {
                read_at[i] = 100 + run;
                last_read[i] = run;
                gone[i] = rng.below(gone_one_in) == 0;
            }
            read_at.extend(std::iter::repeat_n(100 + run, new));
            last_read.extend(std::iter::repeat_n(run, new));
            gone.extend(std::iter::repeat_n(false, new));
            let stale = (0..read_at.len())
                .filter(|&i| !gone[i] && run - last_read[i] >= k as i64)
                .count();
            assert_eq!(
                stale, 0,
                "run {run} (K={k}, N={n0}): found but not read for K runs"
            );
        }
    }

    #[test]
    fn every_known_message_is_swept_within_k_runs() {
        // (K, N, events a run, new a run, one read in _ finds its message gone)
        for (k, n, events, new, gone) in [
            (7, 1000, 10, 5, 20),
            (3, 20, 0, 0, 4),
            (3, 20, 2, 0, 3),
            (5, 7, 0, 1, 2),
            (1, 50, 0, 0, 10),
        ] {
            simulate(k, n, events, new, gone);
        }
    }
}
