//! What a run read, from its own history files: how each message was read
//! (`messages.read`), its senders, and the pairs that came back.

use super::{CurrentCommit, How, ReadRow, sender_hash};
use crate::incremental::{Read, halves};
use crate::kind::Kind;
use crate::table::read;
use crate::write::{FileInfo, WriteError};
use arrow_array::{Array, RecordBatch, TimestampMicrosecondArray};
use std::collections::HashMap;
use std::sync::Arc;

/// The sender every row of a message must carry, for the messages whose
/// stored or new rows carry another: the last one an input gave.
pub(super) type Senders = HashMap<u128, Option<String>>;

/// The messages a run read, by state fingerprint: those read anew as
/// whole rows, those found unchanged (most of a nightly run) by
/// fingerprint, time and sender alone, 32 bytes rather than 56. A read
/// older than the stored one (`stand`) is stale: the table keeps what it has.
#[derive(Debug, Default)]
pub(crate) struct Reads {
    pub(super) changed: Vec<ReadRow>,
    pub(super) unchanged: Vec<(u128, i64, u64)>,
    pub(super) stale: Vec<bool>,
}

impl Reads {
    /// Room for `n` of each: pages never written take no memory, and
    /// growing by doubling would hold both copies at the peak.
    pub(super) fn with_capacity(n: usize) -> Self {
        Reads {
            changed: Vec::with_capacity(n),
            unchanged: Vec::with_capacity(n),
            stale: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, r: ReadRow) {
        match r.how {
            How::Read(Read::Unchanged) => self.unchanged.push((r.fp(), r.at_us, r.sender)),
            _ => self.changed.push(r),
        }
    }

    pub(super) fn finish(mut self) -> Self {
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

    pub(super) fn len(&self) -> usize {
        self.changed.len() + self.unchanged.len()
    }

    /// Where `fp` is among the messages read: a number below `len`.
    pub(super) fn slot(&self, fp: u128) -> Option<usize> {
        match self.changed.binary_search_by_key(&halves(fp), |r| r.fp) {
            Ok(i) => Some(i),
            Err(_) => self
                .unchanged
                .binary_search_by_key(&fp, |r| r.0)
                .ok()
                .map(|i| self.changed.len() + i),
        }
    }

    pub(super) fn at(&self, slot: usize) -> ReadRow {
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

    pub(super) fn set_sender(&mut self, slot: usize, sender: u64) {
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

    pub(super) fn touches_pairs(&self) -> bool {
        !self.changed.is_empty()
    }
}

/// The senders the run's input gave the messages `fps`, from its history rows.
pub(super) fn senders_from_history(
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
pub(super) fn with_senders(
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
pub(super) fn run_files<'a>(
    c: &'a CurrentCommit<'_>,
    table: &str,
) -> impl Iterator<Item = &'a FileInfo> {
    let prefix = format!("{table}/");
    c.files
        .iter()
        .filter(move |f| f.path.starts_with(&prefix) && f.path.ends_with(".parquet"))
}

/// The messages the run read (ok or not found), from its `messages` files.
pub(super) fn read_history(c: &CurrentCommit<'_>, table: &str) -> Result<Reads, WriteError> {
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
