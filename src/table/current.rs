//! A run's commit to the current tables: the rows of every message it read
//! are replaced, the others left as they are, one Delta commit per table
//! (remove + add), exactly once (the run's `txn`, as in the history commit).
//!
//! Everything comes from the lake: what the run read is in its own history
//! files (`messages.read` says how each message was read, `key_values`
//! holds what came back), the state before it in the current tables. So a
//! run killed anywhere computes the same commit again. `current_messages`
//! is committed first, then `current_key_values`; a crash between leaves
//! the second to the same command, computed from the table it has not yet
//! changed.
//!
//! It streams: the app's files of a table are read a batch at a time and
//! written to new files of `FILE_BYTES`; what is held is 48 bytes per
//! message read and 17 per stored pair of a message read incrementally
//! (`Replaced`). Files of `current_key_values` without a pair of a message
//! read anew stay as they are.

pub(crate) mod changes;
mod reads;
mod rewrite;

use super::{app_dir, names, read, specs};
use crate::incremental::Read;
use crate::kind::Kind;
use crate::table::delta::{Changes, Committed, DeltaLake, LiveFile, RunCommit};
use crate::write::{FileInfo, LakeStore, WriteError, WriteOptions};
use arrow_array::Array;
use delta_kernel::snapshot::SnapshotRef;
use reads::{Reads, Senders, read_history, senders_from_history};
pub(super) use rewrite::Stored;
use rewrite::{PairPlan, plan_pairs, write_messages, write_pairs};
use std::sync::Arc;

/// The current tables' files are closed past this size: a bucket's file is
/// read back whole, so it bounds the memory of the next run's rewrite.
pub(crate) const FILE_BYTES: u64 = 16 << 20;

/// How a message's read ended, as its history row says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum How {
    Read(Read),
    NotFound,
}

/// What the run learned of one message it read. The fingerprint is kept
/// as two halves (`incremental::halves`): a `u128` would align the row to
/// 16 bytes, 64 a row instead of 56, a million full reads 8 MB more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadRow {
    pub(crate) fp: [u64; 2],
    pub(crate) how: How,
    pub(crate) latest_seq: i64,
    pub(crate) clear_seq: i64,
    /// Pairs the run received (at most a few hundred).
    pub(crate) kv_count: u32,
    pub(crate) at_us: i64,
    /// The hash of the sender its rows carry (`sender_hash`): the one the
    /// run's input gave, or, once `stand` has looked, the stored one when
    /// the input gave none.
    pub(crate) sender: u64,
}

impl ReadRow {
    /// The message's state fingerprint.
    pub(crate) fn fp(&self) -> u128 {
        (u128::from(self.fp[0]) << 64) | u128::from(self.fp[1])
    }
}

/// The hash of a sender (0: none), to tell whether a stored row carries
/// the sender a message's rows should, without holding the strings.
pub(crate) fn sender_hash(sender: Option<&str>) -> u64 {
    use std::hash::{Hash, Hasher};
    match sender {
        None => 0,
        Some(s) => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            s.hash(&mut h);
            h.finish() | 1
        }
    }
}

/// Whether a stored pair (`seq`) of a message stays, given how the run
/// read the message; `returned`: whether the run received a pair of its key.
fn keeps(read: Option<&ReadRow>, seq: i64, returned: impl FnOnce() -> bool) -> bool {
    match read {
        None => true,
        Some(r) => match r.how {
            How::Read(Read::Unchanged) => true,
            How::Read(Read::Full) | How::NotFound => false,
            How::Read(Read::Incremental) => seq > r.clear_seq && !returned(),
        },
    }
}

/// Whether the run's pairs of a message go into the current table.
fn adds_pairs(read: Option<&ReadRow>) -> bool {
    matches!(
        read.map(|r| r.how),
        Some(How::Read(Read::Full | Read::Incremental))
    )
}

/// What a run's commit to the current tables needs.
pub(crate) struct CurrentCommit<'a> {
    pub(crate) lake: &'a Arc<dyn LakeStore>,
    pub(crate) delta: &'a DeltaLake,
    pub(crate) kind: Kind,
    pub(crate) sdkappid: u64,
    /// Every data file of the run (its history tables).
    pub(crate) files: &'a [FileInfo],
    pub(crate) opts: WriteOptions,
    /// Replace the app's rows without reading them (`--full` over damaged
    /// tables): what the run read becomes all the tables hold of the app.
    pub(crate) rebuild: bool,
    /// A `--changed` run's position, committed with `current_messages`.
    pub(crate) position: Option<crate::table::delta::Txn>,
}

/// Commits another writer overtook (it changed the app's rows between this
/// run's read of a table and its commit) before the run gives up; each is
/// computed again from the lake.
const MAX_MOVES: usize = 8;

/// Replace the rows of the messages the run read, in each current table:
/// `current_messages` first, then `current_key_values` (always a commit,
/// so that its log names every run the first one does). A message's row
/// is replaced only by a read at least as new as the one it holds.
pub(crate) fn commit(c: &CurrentCommit<'_>, run: &RunCommit<'_>) -> Result<(), WriteError> {
    let mut tries = 0;
    loop {
        match commit_once(c, run) {
            Err(WriteError::Delta(e)) if e.is_moved() && tries < MAX_MOVES => {
                tries += 1;
                tracing::info!(
                    run_id = run.run_id,
                    "another run changed the current tables first; computing the commit again"
                );
            }
            done => return done,
        }
    }
}

fn latest(c: &CurrentCommit<'_>, table: &str) -> Result<Option<SnapshotRef>, WriteError> {
    super::latest(c.lake.as_ref(), c.delta, table)
}

fn holds(
    c: &CurrentCommit<'_>,
    table: &str,
    snapshot: &Option<SnapshotRef>,
    run_id: &str,
) -> Result<bool, WriteError> {
    super::holds(c.delta, table, snapshot, run_id)
}

/// The app's live files of a table.
fn app_files(
    c: &CurrentCommit<'_>,
    table: &str,
    snapshot: &Option<SnapshotRef>,
) -> Result<Vec<LiveFile>, WriteError> {
    match snapshot {
        Some(s) => Ok(c
            .delta
            .files_under(table, s, &format!("{}/", app_dir(c.sdkappid)))?),
        None => Ok(Vec::new()),
    }
}

/// What the `current_messages` commit decided, reused by the pairs' commit
/// when no other writer came between.
struct Planned {
    msg_version: u64,
    kv_version: Option<u64>,
    reads: Reads,
    senders: Senders,
    plan: PairPlan,
}

fn commit_once(c: &CurrentCommit<'_>, run: &RunCommit<'_>) -> Result<(), WriteError> {
    let [kv_table, msg_table] = names(c.kind);
    let (msg_snap, kv_snap) = (latest(c, &msg_table)?, latest(c, &kv_table)?);
    let msg_done = holds(c, &msg_table, &msg_snap, run.run_id)?;
    if msg_done && holds(c, &kv_table, &kv_snap, run.run_id)? {
        return Ok(());
    }
    let planned = match msg_done {
        true => None,
        false => match commit_messages(c, run, msg_snap, kv_snap.as_ref())? {
            Some(planned) => Some(planned),
            // The run read nothing.
            None => return Ok(()),
        },
    };
    crate::failpoint::hit("between_current_commits");
    commit_pairs(c, run, planned)
}

/// The `current_messages` commit, and what it decided (`None`: no reads).
fn commit_messages(
    c: &CurrentCommit<'_>,
    run: &RunCommit<'_>,
    msg_snap: Option<SnapshotRef>,
    kv_snap: Option<&SnapshotRef>,
) -> Result<Option<Planned>, WriteError> {
    let [kv_table, msg_table] = names(c.kind);
    let [_, msg_spec] = specs(c.kind).map_err(|e| WriteError::Store(e.to_string()))?;
    let [hist_kv, hist_msgs] = c.kind.spec().tables();
    let mut reads = read_history(c, hist_msgs)?;
    if reads.len() == 0 {
        return Ok(None);
    }
    let mut old = app_files(c, &msg_table, &msg_snap)?;
    let dropped = match c.rebuild {
        true => std::mem::take(&mut old),
        false => Vec::new(),
    };
    let mut senders = stand(c, (&msg_table, &old), &mut reads, run.run_id, false)?;
    let old_kv = match (reads.touches_pairs() || !senders.is_empty()) && !c.rebuild {
        true => app_files(c, &kv_table, &kv_snap.cloned())?,
        false => Vec::new(),
    };
    let plan = plan_pairs(c, (&kv_table, &old_kv), hist_kv, &reads, &mut senders)?;
    let (adds, mut removes) =
        write_messages(c, &msg_table, &old, (&reads, &senders), &plan, run.run_id)?;
    removes.extend(dropped.into_iter().map(|f| f.path));
    let changes = Changes {
        adds: &adds,
        removes: &removes,
    };
    let also = c.position.as_slice();
    let msg_version =
        match c
            .delta
            .commit_run_with(&msg_table, &msg_spec, changes, (run, also), msg_snap)?
        {
            Committed::At(v) | Committed::Already(v) => v,
        };
    Ok(Some(Planned {
        msg_version,
        kv_version: kv_snap.map(|s| s.version()),
        reads,
        senders,
        plan,
    }))
}

/// The `current_key_values` commit: with what the messages' commit
/// planned when no other writer came between, else as the tables now say.
fn commit_pairs(
    c: &CurrentCommit<'_>,
    run: &RunCommit<'_>,
    planned: Option<Planned>,
) -> Result<(), WriteError> {
    let [kv_table, msg_table] = names(c.kind);
    let [kv_spec, _] = specs(c.kind).map_err(|e| WriteError::Store(e.to_string()))?;
    let [hist_kv, hist_msgs] = c.kind.spec().tables();
    let (msg_snap, kv_snap) = (latest(c, &msg_table)?, latest(c, &kv_table)?);
    if holds(c, &kv_table, &kv_snap, run.run_id)? {
        return Ok(());
    }
    let kv_version = kv_snap.as_ref().map(|s| s.version());
    let (reads, senders, plan) = match planned {
        Some(p)
            if Some(p.msg_version) == msg_snap.as_ref().map(|s| s.version())
                && p.kv_version == kv_version =>
        {
            (p.reads, p.senders, p.plan)
        }
        // Resumed between the two commits, or another writer came between:
        // what the table now holds decides, as its rows say.
        _ => {
            let mut reads = read_history(c, hist_msgs)?;
            let old = app_files(c, &msg_table, &msg_snap)?;
            let mut senders = stand(c, (&msg_table, &old), &mut reads, run.run_id, true)?;
            let old_kv = match c.rebuild {
                true => Vec::new(),
                false => app_files(c, &kv_table, &kv_snap)?,
            };
            let plan = plan_pairs(c, (&kv_table, &old_kv), hist_kv, &reads, &mut senders)?;
            (reads, senders, plan)
        }
    };
    let mut diff = changes::Diff::new(c, run)?;
    let (adds, mut removes) = write_pairs(
        c,
        (&kv_table, hist_kv),
        &plan,
        (&reads, &senders),
        (run.run_id, &mut diff),
    )?;
    changes::commit(c, run, diff, &reads)?;
    if c.rebuild {
        removes = app_files(c, &kv_table, &kv_snap)?
            .into_iter()
            .map(|f| f.path)
            .collect();
    }
    let changes = Changes {
        adds: &adds,
        removes: &removes,
    };
    c.delta
        .commit_run(&kv_table, &kv_spec, changes, run, kv_snap)?;
    Ok(())
}

/// Which of the run's reads the tables take, from the app's rows of
/// `current_messages` (`files`): a read older than the row's (another run
/// read the message later and committed first) is stale, and the row and
/// its pairs stay; once the run's own commit of that table is in
/// (`committed`), the rows that name the run are the ones it took. Also
/// which messages' rows must change sender (`Senders`): a read without a
/// sender keeps the stored one, a read with another one replaces it.
fn stand(
    c: &CurrentCommit<'_>,
    (table, files): (&str, &[LiveFile]),
    reads: &mut Reads,
    run_id: &str,
    committed: bool,
) -> Result<Senders, WriteError> {
    let mut senders = Senders::new();
    let mut from_input = Vec::new();
    for LiveFile { path, .. } in files {
        for batch in read::batches(c.lake.as_ref(), &format!("{table}/{path}"))? {
            let batch = batch?;
            let fps = read::fingerprints(c.kind, &batch)?;
            let columns = super::StoredColumns::of(&batch)?;
            let sender = read::sender(c.kind, &batch)?;
            for (i, fp) in fps.into_iter().enumerate() {
                let Some(j) = reads.slot(fp) else { continue };
                let r = reads.at(j);
                let ours = columns.run_id.value(i) == run_id;
                let older = columns.read_at.is_valid(i) && columns.read_at.value(i) > r.at_us;
                if !ours && (committed || older) {
                    reads.stale[j] = true;
                    continue;
                }
                let have = sender.and_then(|s| s.is_valid(i).then(|| s.value(i)));
                if r.sender == 0 {
                    if let Some(h) = have {
                        senders.insert(fp, Some(h.to_owned()));
                        reads.set_sender(j, sender_hash(Some(h)));
                    }
                } else if sender_hash(have) != r.sender {
                    from_input.push(fp);
                }
            }
        }
    }
    senders_from_history(c, &from_input, &mut senders)?;
    Ok(senders)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incremental::halves;

    fn row(how: How, clear: i64) -> ReadRow {
        ReadRow {
            fp: halves(1),
            how,
            latest_seq: 9,
            clear_seq: clear,
            kv_count: 0,
            at_us: 0,
            sender: 0,
        }
    }

    #[test]
    fn a_read_is_56_bytes_and_keeps_its_fingerprint() {
        // A million full reads are held at once at the commit.
        assert_eq!(std::mem::size_of::<ReadRow>(), 56);
        let fp = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210_u128;
        assert_eq!(
            ReadRow {
                fp: halves(fp),
                ..row(How::NotFound, 0)
            }
            .fp(),
            fp
        );
    }

    #[test]
    fn a_stored_pair_stays_unless_the_run_read_its_message_anew() {
        let inc = How::Read(Read::Incremental);
        // (how the message was read, its new ClearSeq, the stored pair's Seq,
        //  whether the run received its key, whether it stays)
        let table = [
            (None, 0, 3, false, true),
            (Some(How::Read(Read::Unchanged)), 0, 3, false, true),
            (Some(How::Read(Read::Full)), 0, 3, false, false),
            (Some(How::NotFound), 0, 3, false, false),
            (Some(inc), 0, 3, false, true),
            (Some(inc), 0, 3, true, false),
            (Some(inc), 3, 3, false, false),
            (Some(inc), 2, 3, false, true),
        ];
        for (how, clear, seq, returned, want) in table {
            let r = how.map(|h| row(h, clear));
            assert_eq!(
                keeps(r.as_ref(), seq, || returned),
                want,
                "{how:?} clear {clear} seq {seq} returned {returned}"
            );
        }
    }
}
