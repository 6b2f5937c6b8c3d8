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

use super::{app_dir, kv_schema, messages_schema, names, read, specs};
use crate::incremental::{Read, halves};
use crate::kind::Kind;
use crate::table::delta::{Changes, Committed, DataFile, DeltaLake, LiveFile, RunCommit};
use crate::write::{FileInfo, Format, LakeStore, TableSink, WriteError, WriteOptions};
use arrow_array::builder::{Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch, TimestampMicrosecondArray};
use delta_kernel::snapshot::SnapshotRef;
use std::collections::HashMap;
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

/// The sender every row of a message must carry, for the messages whose
/// stored or new rows carry another: the last one an input gave.
type Senders = HashMap<u128, Option<String>>;

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

/// The messages a run read, by state fingerprint: those read anew as
/// whole rows, those found unchanged (most of a nightly run) by
/// fingerprint, time and sender alone, 32 bytes rather than 56. A read
/// older than the stored one (`stand`) is stale: the table keeps what it has.
#[derive(Debug, Default)]
pub(crate) struct Reads {
    changed: Vec<ReadRow>,
    unchanged: Vec<(u128, i64, u64)>,
    stale: Vec<bool>,
}

impl Reads {
    /// Room for `n` of each: pages never written take no memory, and
    /// growing by doubling would hold both copies at the peak.
    fn with_capacity(n: usize) -> Self {
        Reads {
            changed: Vec::with_capacity(n),
            unchanged: Vec::with_capacity(n),
            stale: Vec::new(),
        }
    }

    fn push(&mut self, r: ReadRow) {
        match r.how {
            How::Read(Read::Unchanged) => self.unchanged.push((r.fp(), r.at_us, r.sender)),
            _ => self.changed.push(r),
        }
    }

    fn finish(mut self) -> Self {
        self.changed.sort_unstable_by_key(|r| r.fp);
        self.changed.dedup_by_key(|r| r.fp);
        self.unchanged.sort_unstable_by_key(|r| r.0);
        self.unchanged.dedup_by_key(|r| r.0);
        // A message read anew and found unchanged (two input rows of one
        // message, with and without its sender): the read anew counts.
        let changed = &self.changed;
        self.unchanged.retain(|u| {
            changed
                .binary_search_by_key(&halves(u.0), |r| r.fp)
                .is_err()
        });
        self.stale = vec![false; self.len()];
        self
    }

    fn len(&self) -> usize {
        self.changed.len() + self.unchanged.len()
    }

    /// Where `fp` is among the messages read: a number below `len`.
    fn slot(&self, fp: u128) -> Option<usize> {
        match self.changed.binary_search_by_key(&halves(fp), |r| r.fp) {
            Ok(i) => Some(i),
            Err(_) => self
                .unchanged
                .binary_search_by_key(&fp, |r| r.0)
                .ok()
                .map(|i| self.changed.len() + i),
        }
    }

    fn at(&self, slot: usize) -> ReadRow {
        match self.changed.get(slot) {
            Some(r) => *r,
            None => {
                let (fp, at_us, sender) = self.unchanged[slot - self.changed.len()];
                ReadRow {
                    fp: halves(fp),
                    how: How::Read(Read::Unchanged),
                    latest_seq: 0,
                    clear_seq: 0,
                    kv_count: 0,
                    at_us,
                    sender,
                }
            }
        }
    }

    fn set_sender(&mut self, slot: usize, sender: u64) {
        match self.changed.get_mut(slot) {
            Some(r) => r.sender = sender,
            None => self.unchanged[slot - self.changed.len()].2 = sender,
        }
    }

    /// The run's read of `fp`, unless the table holds a newer one.
    pub(crate) fn get(&self, fp: u128) -> Option<ReadRow> {
        self.slot(fp)
            .filter(|i| !self.stale[*i])
            .map(|i| self.at(i))
    }

    fn touches_pairs(&self) -> bool {
        !self.changed.is_empty()
    }
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
    let msg_version = match c
        .delta
        .commit_run(&msg_table, &msg_spec, changes, run, msg_snap)?
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
    let (adds, mut removes) = write_pairs(
        c,
        (&kv_table, hist_kv),
        &plan,
        (&reads, &senders),
        run.run_id,
    )?;
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

/// The senders the run's input gave the messages `fps`, from its history rows.
fn senders_from_history(
    c: &CurrentCommit<'_>,
    fps: &[u128],
    senders: &mut Senders,
) -> Result<(), WriteError> {
    if fps.is_empty() {
        return Ok(());
    }
    let wanted: std::collections::HashSet<u128> = fps.iter().copied().collect();
    let [_, hist_msgs] = c.kind.spec().tables();
    for FileInfo { path: rel, .. } in run_files(c, hist_msgs) {
        for batch in read::batches(c.lake.as_ref(), rel)? {
            let batch = batch?;
            let Some(sender) = read::sender(c.kind, &batch)? else {
                return Ok(());
            };
            for (i, fp) in read::fingerprints(c.kind, &batch)?.into_iter().enumerate() {
                if wanted.contains(&fp) {
                    let given = sender.is_valid(i).then(|| sender.value(i).to_owned());
                    senders.insert(fp, given);
                }
            }
        }
    }
    Ok(())
}

/// `batch` with the sender column of every row whose message is in
/// `senders` set to the one its rows must carry.
fn with_senders(
    kind: Kind,
    batch: RecordBatch,
    fps: &[u128],
    senders: &Senders,
) -> Result<RecordBatch, WriteError> {
    let Some(name) = kind.spec().sender_column() else {
        return Ok(batch);
    };
    if senders.is_empty() || !fps.iter().any(|fp| senders.contains_key(fp)) {
        return Ok(batch);
    }
    let old = read::strings(&batch, name)?;
    let new: arrow_array::StringArray = fps
        .iter()
        .enumerate()
        .map(|(i, fp)| match senders.get(fp) {
            Some(s) => s.as_deref(),
            None => old.is_valid(i).then(|| old.value(i)),
        })
        .collect();
    let schema = batch.schema();
    let at = schema
        .index_of(name)
        .map_err(|e| WriteError::Store(e.to_string()))?;
    let mut cols = batch.columns().to_vec();
    cols[at] = Arc::new(new);
    RecordBatch::try_new(schema, cols).map_err(|e| WriteError::Store(e.to_string()))
}

/// The run's Parquet files of history table `table`.
fn run_files<'a>(c: &'a CurrentCommit<'_>, table: &str) -> impl Iterator<Item = &'a FileInfo> {
    let prefix = format!("{table}/");
    c.files
        .iter()
        .filter(move |f| f.path.starts_with(&prefix) && f.path.ends_with(".parquet"))
}

/// The messages the run read (ok or not found), from its `messages` files.
fn read_history(c: &CurrentCommit<'_>, table: &str) -> Result<Reads, WriteError> {
    // Sized once: growing by doubling would hold both copies at the peak.
    let listed: u64 = run_files(c, table).map(|f| f.rows).sum();
    let mut rows = Reads::with_capacity(usize::try_from(listed).unwrap_or(0));
    for FileInfo { path: rel, .. } in run_files(c, table) {
        for batch in read::batches(c.lake.as_ref(), rel)? {
            let batch = batch?;
            let fps = read::fingerprints(c.kind, &batch)?;
            let status = read::strings(&batch, "status")?;
            let how = read::strings(&batch, "read")?;
            let latest = read::ints(&batch, "latest_seq")?;
            let clear = read::ints(&batch, "clear_seq")?;
            let kv_count = read::ints(&batch, "kv_count")?;
            let at = read::column::<TimestampMicrosecondArray>(&batch, "fetched_at")?;
            let sender = read::sender(c.kind, &batch)?;
            for (i, fp) in fps.into_iter().enumerate() {
                let how = match status.value(i) {
                    "not_found" => How::NotFound,
                    "ok" => How::Read(
                        Read::parse(how.value(i))
                            .ok_or_else(|| bad_row(rel, "a message row without its read"))?,
                    ),
                    _ => continue,
                };
                let int = |a: &arrow_array::Int64Array| (!a.is_null(i)).then(|| a.value(i));
                rows.push(ReadRow {
                    fp: halves(fp),
                    how,
                    latest_seq: int(latest).unwrap_or(0),
                    clear_seq: int(clear).unwrap_or(0),
                    kv_count: u32::try_from(kv_count.value(i)).unwrap_or(u32::MAX),
                    at_us: if at.is_null(i) { 0 } else { at.value(i) },
                    sender: sender_hash(sender.and_then(|s| s.is_valid(i).then(|| s.value(i)))),
                });
            }
        }
    }
    Ok(rows.finish())
}

fn bad_row(rel: &str, what: &str) -> WriteError {
    WriteError::Store(format!("{rel}: {what}"))
}

/// The stored pairs of the messages read incrementally, as hashes of
/// (message, key), each marked when the run received a pair of its key
/// (the received pair replaces it): 17 bytes a stored pair of a changed
/// message, whatever the run received.
#[derive(Debug, Default)]
struct Replaced {
    /// (the message's fingerprint's low half, the key's hash << 1 | whether
    /// the pair was alive after the new ClearSeq), sorted.
    keys: Vec<(u64, u64)>,
    returned: Vec<bool>,
}

impl Replaced {
    fn entry(fp: u128, key: &str, alive: bool) -> (u64, u64) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        (fp as u64, (h.finish() << 1) | u64::from(alive))
    }

    fn find(&self, fp: u128, key: &str) -> Option<usize> {
        let (f, k) = Self::entry(fp, key, false);
        let i = self.keys.partition_point(|e| *e < (f, k));
        (self
            .keys
            .get(i)
            .is_some_and(|e| e.0 == f && e.1 >> 1 == k >> 1))
        .then_some(i)
    }

    fn was_returned(&self, fp: u128, key: &str) -> bool {
        self.find(fp, key).is_some_and(|i| self.returned[i])
    }
}

/// What the run does to `current_key_values`: the files holding a pair of
/// a message read anew (rewritten), how many stored pairs of each
/// incremental read stay, and which are replaced.
#[derive(Debug, Default)]
struct PairPlan {
    rewrite: Vec<String>,
    kept: HashMap<u128, i64>,
    replaced: Replaced,
}

/// Which stored pairs of a batch stay.
fn kept_rows(
    kind: Kind,
    batch: &RecordBatch,
    reads: &Reads,
    replaced: &Replaced,
) -> Result<(Vec<u128>, Vec<bool>), WriteError> {
    let fps = read::fingerprints(kind, batch)?;
    let key = read::strings(batch, "key")?;
    let seq = read::ints(batch, "seq")?;
    let keep = fps
        .iter()
        .enumerate()
        .map(|(i, fp)| {
            keeps(reads.get(*fp).as_ref(), seq.value(i), || {
                replaced.was_returned(*fp, key.value(i))
            })
        })
        .collect();
    Ok((fps, keep))
}

/// Plan the rewrite of `current_key_values` from its app's `files` and the
/// run's own `key_values` files (`hist_kv`).
fn plan_pairs(
    c: &CurrentCommit<'_>,
    (table, files): (&str, &[LiveFile]),
    hist_kv: &str,
    reads: &Reads,
    senders: &mut Senders,
) -> Result<PairPlan, WriteError> {
    let mut plan = PairPlan::default();
    let mut from_input = Vec::new();
    for LiveFile { path, .. } in files {
        // A file changes when it holds a pair of a message read anew, or
        // one whose sender is no longer the message's.
        let mut changes = false;
        for batch in read::batches(c.lake.as_ref(), &format!("{table}/{path}"))? {
            let batch = batch?;
            let fps = read::fingerprints(c.kind, &batch)?;
            let key = read::strings(&batch, "key")?;
            let seq = read::ints(&batch, "seq")?;
            let sender = read::sender(c.kind, &batch)?;
            for (i, fp) in fps.into_iter().enumerate() {
                let Some(r) = reads.get(fp) else { continue };
                changes |= r.how != How::Read(Read::Unchanged);
                let have = sender.and_then(|s| s.is_valid(i).then(|| s.value(i)));
                if sender_hash(have) != r.sender && !senders.contains_key(&fp) {
                    changes = true;
                    match r.sender {
                        0 => drop(senders.insert(fp, None)),
                        _ => from_input.push(fp),
                    }
                }
                if r.how == How::Read(Read::Incremental) {
                    let alive = seq.value(i) > r.clear_seq;
                    plan.replaced
                        .keys
                        .push(Replaced::entry(fp, key.value(i), alive));
                    *plan.kept.entry(fp).or_default() += i64::from(alive);
                }
            }
        }
        if changes {
            plan.rewrite.push(path.clone());
        }
    }
    from_input.sort_unstable();
    from_input.dedup();
    senders_from_history(c, &from_input, senders)?;
    plan.replaced.keys.sort_unstable();
    plan.replaced.returned = vec![false; plan.replaced.keys.len()];
    if plan.replaced.keys.is_empty() {
        return Ok(plan);
    }
    for FileInfo { path: rel, .. } in run_files(c, hist_kv) {
        for batch in read::batches(c.lake.as_ref(), rel)? {
            let batch = batch?;
            let fps = read::fingerprints(c.kind, &batch)?;
            let key = read::strings(&batch, "key")?;
            for (i, fp) in fps.into_iter().enumerate() {
                let Some(at) = plan.replaced.find(fp, key.value(i)) else {
                    continue;
                };
                if !std::mem::replace(&mut plan.replaced.returned[at], true)
                    && plan.replaced.keys[at].1 & 1 == 1
                    && let Some(k) = plan.kept.get_mut(&fp)
                {
                    *k -= 1;
                }
            }
        }
    }
    Ok(plan)
}

/// New files of one current table, in the app's folder.
struct NewFiles {
    sink: TableSink,
    table: String,
    sdkappid: u64,
    lake: Arc<dyn LakeStore>,
    done: Vec<DataFile>,
}

impl NewFiles {
    fn new(
        c: &CurrentCommit<'_>,
        table: &str,
        schema: arrow_schema::SchemaRef,
        run_id: &str,
    ) -> Self {
        let opts = WriteOptions {
            max_file_bytes: FILE_BYTES,
            ..c.opts
        };
        let dir = app_dir(c.sdkappid);
        // Each attempt names its files anew: a run completed by another
        // (`complete`) while it commits never writes over files in a log.
        let name = format!("{run_id}-{:08x}", rand::random::<u32>());
        NewFiles {
            sink: TableSink::new(
                c.lake.clone(),
                table,
                &dir,
                &name,
                Format::Parquet,
                schema,
                opts,
                0,
            ),
            table: table.to_owned(),
            sdkappid: c.sdkappid,
            lake: c.lake.clone(),
            done: Vec::new(),
        }
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), WriteError> {
        self.sink.write(batch)?;
        if self.sink.open_bytes() >= FILE_BYTES {
            self.close()?;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), WriteError> {
        if let Some(sealed) = self.sink.seal()? {
            self.lake.publish(&sealed)?;
            let path = sealed.info.path.strip_prefix(&format!("{}/", self.table));
            self.done.push(DataFile {
                path: path.unwrap_or(&sealed.info.path).to_owned(),
                partition: vec![self.sdkappid.to_string()],
                bytes: sealed.info.bytes,
                rows: sealed.info.rows,
                stats: sealed.info.stats.clone(),
            });
        }
        Ok(())
    }

    /// Every file written, at its final name.
    fn finish(mut self) -> Result<Vec<DataFile>, WriteError> {
        self.close()?;
        self.lake.flush()?;
        Ok(self.done)
    }
}

/// Rewrite the app's rows of `current_messages`: the rows of the messages
/// read replaced (one row a message, with the sender its rows carry), the
/// others and those the run read before another run did copied, then the
/// messages new to the table.
fn write_messages(
    c: &CurrentCommit<'_>,
    table: &str,
    old: &[LiveFile],
    (reads, senders): (&Reads, &Senders),
    plan: &PairPlan,
    run_id: &str,
) -> Result<(Vec<DataFile>, Vec<String>), WriteError> {
    let schema = messages_schema(c.kind);
    let mut out = NewFiles::new(c, table, schema.clone(), run_id);
    let mut seen = vec![false; reads.len()];
    let mut removes = Vec::new();
    for LiveFile { path, .. } in old {
        removes.push(path.clone());
        for batch in read::batches(c.lake.as_ref(), &format!("{table}/{path}"))? {
            let batch = batch?;
            let fps = read::fingerprints(c.kind, &batch)?;
            let columns = super::StoredColumns::of(&batch)?;
            let mut rows = MessageColumns::default();
            let mut mask = Vec::with_capacity(fps.len());
            let mut kept_fps = Vec::with_capacity(fps.len());
            for (i, fp) in fps.iter().enumerate() {
                let stored = columns.row(i);
                let slot = reads.slot(*fp);
                let keep = match slot {
                    Some(j) if reads.stale[j] => {
                        seen[j] = true;
                        rows.push(&stored, &stored.run_id);
                        true
                    }
                    // A second row of one message (an earlier msgext kept
                    // it with and without its sender): one stays.
                    Some(j) if seen[j] => false,
                    Some(j) => {
                        seen[j] = true;
                        rows.push(&merge(Some(&stored), &reads.at(j), plan), run_id);
                        true
                    }
                    None => {
                        rows.push(&stored, &stored.run_id);
                        true
                    }
                };
                mask.push(keep);
                if keep {
                    kept_fps.push(*fp);
                }
            }
            let mask = BooleanArray::from(mask);
            let batch = rows.finish(&schema, c.kind, &batch, Some(&mask))?;
            out.write(&with_senders(c.kind, batch, &kept_fps, senders)?)?;
        }
    }
    let [_, hist_msgs] = c.kind.spec().tables();
    for FileInfo { path: rel, .. } in run_files(c, hist_msgs) {
        for batch in read::batches(c.lake.as_ref(), rel)? {
            let batch = batch?;
            let fps = read::fingerprints(c.kind, &batch)?;
            let mut rows = MessageColumns::default();
            let mut mask = Vec::with_capacity(fps.len());
            for fp in fps {
                let new = reads.slot(fp).filter(|j| !seen[*j]);
                if let Some(j) = new {
                    seen[j] = true;
                    rows.push(&merge(None, &reads.at(j), plan), run_id);
                }
                mask.push(new.is_some());
            }
            let mask = BooleanArray::from(mask);
            out.write(&rows.finish(&schema, c.kind, &batch, Some(&mask))?)?;
        }
    }
    Ok((out.finish()?, removes))
}

/// A `current_messages` row, as stored or as it becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stored {
    pub(super) ok: bool,
    pub(super) latest_seq: Option<i64>,
    pub(super) clear_seq: Option<i64>,
    pub(super) kv_count: i64,
    pub(super) run_id: String,
    pub(super) read_at: i64,
    pub(super) full_read_at: Option<i64>,
}

/// A message's row after the run read it (`stored`: its row before, if any).
fn merge(stored: Option<&Stored>, r: &ReadRow, plan: &PairPlan) -> Stored {
    let old_count = stored.map_or(0, |s| s.kv_count);
    let old_full = stored.and_then(|s| s.full_read_at);
    if r.how == How::Read(Read::Unchanged) {
        // Reads keep no Seqs of an unchanged message: they are the stored ones.
        if let Some(s) = stored {
            return Stored {
                run_id: String::new(),
                read_at: r.at_us,
                ..s.clone()
            };
        }
    }
    let (ok, kv_count, full_read_at) = match r.how {
        How::NotFound => (false, 0, None),
        How::Read(Read::Full) => (true, i64::from(r.kv_count), Some(r.at_us)),
        How::Read(Read::Unchanged) => (true, old_count, old_full),
        How::Read(Read::Incremental) => (
            true,
            plan.kept.get(&r.fp()).copied().unwrap_or(0) + i64::from(r.kv_count),
            old_full,
        ),
    };
    Stored {
        ok,
        latest_seq: ok.then_some(r.latest_seq),
        clear_seq: ok.then_some(r.clear_seq),
        kv_count,
        run_id: String::new(),
        read_at: r.at_us,
        full_read_at,
    }
}

/// The columns of `current_messages` after the identity, being gathered.
#[derive(Default)]
struct MessageColumns {
    status: StringBuilder,
    latest: Int64Builder,
    clear: Int64Builder,
    kv_count: Int64Builder,
    run_id: StringBuilder,
    read_at: TimestampMicrosecondBuilder,
    full_read_at: TimestampMicrosecondBuilder,
}

impl MessageColumns {
    fn push(&mut self, s: &Stored, run_id: &str) {
        self.status
            .append_value(if s.ok { "ok" } else { "not_found" });
        self.latest.append_option(s.latest_seq);
        self.clear.append_option(s.clear_seq);
        self.kv_count.append_value(s.kv_count);
        self.run_id.append_value(run_id);
        self.read_at.append_value(s.read_at);
        self.full_read_at.append_option(s.full_read_at);
    }

    /// The batch: the identity columns of `from` (its rows where `mask`
    /// holds), then the gathered ones.
    fn finish(
        mut self,
        schema: &arrow_schema::SchemaRef,
        kind: Kind,
        from: &RecordBatch,
        mask: Option<&BooleanArray>,
    ) -> Result<RecordBatch, WriteError> {
        let mut cols = identity(kind, from, mask)?;
        let utc = crate::columns::UTC;
        cols.extend([
            Arc::new(self.status.finish()) as ArrayRef,
            Arc::new(self.latest.finish()),
            Arc::new(self.clear.finish()),
            Arc::new(self.kv_count.finish()),
            Arc::new(self.run_id.finish()),
            Arc::new(self.read_at.finish().with_timezone(utc)),
            Arc::new(self.full_read_at.finish().with_timezone(utc)),
        ]);
        RecordBatch::try_new(schema.clone(), cols).map_err(|e| WriteError::Store(e.to_string()))
    }
}

/// The identity columns of a batch (its rows where `mask` holds).
fn identity(
    kind: Kind,
    from: &RecordBatch,
    mask: Option<&BooleanArray>,
) -> Result<Vec<ArrayRef>, WriteError> {
    kind.spec()
        .identity_fields()
        .iter()
        .map(|f| {
            let col = from.column_by_name(f.name()).ok_or_else(|| {
                WriteError::Store(format!("a file without the column {}", f.name()))
            })?;
            match mask {
                None => Ok(col.clone()),
                Some(m) => arrow_select::filter::filter(col, m)
                    .map_err(|e| WriteError::Store(e.to_string())),
            }
        })
        .collect()
}

/// Rewrite the files of `current_key_values` with pairs to drop, and add
/// the pairs the run's full and incremental reads received.
fn write_pairs(
    c: &CurrentCommit<'_>,
    (table, hist_kv): (&str, &str),
    plan: &PairPlan,
    (reads, senders): (&Reads, &Senders),
    run_id: &str,
) -> Result<(Vec<DataFile>, Vec<String>), WriteError> {
    let schema = kv_schema(c.kind);
    let mut out = NewFiles::new(c, table, schema.clone(), run_id);
    for path in &plan.rewrite {
        for batch in read::batches(c.lake.as_ref(), &format!("{table}/{path}"))? {
            let batch = batch?;
            let (fps, keep) = kept_rows(c.kind, &batch, reads, &plan.replaced)?;
            let batch = with_new_seqs(&batch, &fps, reads)?;
            let batch = with_senders(c.kind, batch, &fps, senders)?;
            let kept = arrow_select::filter::filter_record_batch(&batch, &BooleanArray::from(keep))
                .map_err(|e| WriteError::Store(e.to_string()))?;
            out.write(&kept)?;
        }
    }
    for FileInfo { path: rel, .. } in run_files(c, hist_kv) {
        for batch in read::batches(c.lake.as_ref(), rel)? {
            let batch = batch?;
            let fps = read::fingerprints(c.kind, &batch)?;
            let mask: BooleanArray = fps
                .iter()
                .map(|fp| Some(adds_pairs(reads.get(*fp).as_ref())))
                .collect();
            let batch = with_senders(c.kind, batch, &fps, senders)?;
            let rows = arrow_select::filter::filter_record_batch(&batch, &mask)
                .map_err(|e| WriteError::Store(e.to_string()))?;
            out.write(&as_current(&schema, &rows, run_id)?)?;
        }
    }
    Ok((out.finish()?, plan.rewrite.clone()))
}

/// Stored pairs with their message's `latest_seq` and `clear_seq` as the
/// run's incremental read found them (a full read gives every pair those).
fn with_new_seqs(
    batch: &RecordBatch,
    fps: &[u128],
    reads: &Reads,
) -> Result<RecordBatch, WriteError> {
    let latest = read::ints(batch, "latest_seq")?;
    let clear = read::ints(batch, "clear_seq")?;
    let new = |old: &arrow_array::Int64Array, pick: fn(&ReadRow) -> i64| -> ArrayRef {
        Arc::new(arrow_array::Int64Array::from_iter_values(
            fps.iter().enumerate().map(|(i, fp)| match reads.get(*fp) {
                Some(r) if r.how == How::Read(Read::Incremental) => pick(&r),
                _ => old.value(i),
            }),
        ))
    };
    let (latest, clear) = (new(latest, |r| r.latest_seq), new(clear, |r| r.clear_seq));
    let schema = batch.schema();
    let cols = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| match f.name().as_str() {
            "latest_seq" => latest.clone(),
            "clear_seq" => clear.clone(),
            _ => c.clone(),
        })
        .collect();
    RecordBatch::try_new(schema, cols).map_err(|e| WriteError::Store(e.to_string()))
}

/// History rows of `key_values` as rows of `current_key_values`: the same
/// columns but `sdkappid`, and the run that fetched them.
fn as_current(
    schema: &arrow_schema::SchemaRef,
    rows: &RecordBatch,
    run_id: &str,
) -> Result<RecordBatch, WriteError> {
    let mut cols = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        if f.name() == "run_id" {
            cols.push(Arc::new(arrow_array::StringArray::from_iter_values(
                std::iter::repeat_n(run_id, rows.num_rows()),
            )) as ArrayRef);
        } else {
            cols.push(rows.column_by_name(f.name()).cloned().ok_or_else(|| {
                WriteError::Store(format!("a file without the column {}", f.name()))
            })?);
        }
    }
    RecordBatch::try_new(schema.clone(), cols).map_err(|e| WriteError::Store(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_row_after_a_read_follows_how_the_message_was_read() {
        let stored = Stored {
            ok: true,
            latest_seq: Some(5),
            clear_seq: Some(0),
            kv_count: 4,
            run_id: "r0".into(),
            read_at: 10,
            full_read_at: Some(10),
        };
        let mut plan = PairPlan::default();
        plan.kept.insert(1, 3);
        let at = |how| ReadRow {
            kv_count: 2,
            at_us: 20,
            ..row(how, 1)
        };
        let cases = [
            (How::Read(Read::Full), (true, 2, Some(20))),
            (How::Read(Read::Unchanged), (true, 4, Some(10))),
            (How::Read(Read::Incremental), (true, 5, Some(10))),
            (How::NotFound, (false, 0, None)),
        ];
        for (how, (ok, count, full)) in cases {
            let m = merge(Some(&stored), &at(how), &plan);
            assert_eq!(
                (m.ok, m.kv_count, m.full_read_at, m.read_at),
                (ok, count, full, 20),
                "{how:?}"
            );
            assert_eq!(m.latest_seq.is_some(), ok);
        }
        let new = merge(None, &at(How::Read(Read::Full)), &plan);
        assert_eq!((new.kv_count, new.full_read_at), (2, Some(20)));
    }
}
