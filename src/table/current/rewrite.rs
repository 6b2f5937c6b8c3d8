//! The new files of the current tables: the stored rows of the messages a
//! run did not read, kept; those of the messages it read, merged with what
//! came back (`merge`) and written anew, `FILE_BYTES` a file.

use super::changes::Diff;
use super::reads::{Reads, Senders, run_files, senders_from_history, with_senders};
use super::{CurrentCommit, FILE_BYTES, How, ReadRow, adds_pairs, keeps, sender_hash};
use crate::incremental::Read;
use crate::kind::Kind;
use crate::table::delta::{DataFile, LiveFile};
use crate::table::{app_dir, kv_schema, messages_schema, read};
use crate::write::{FileInfo, Format, LakeStore, TableSink, WriteError, WriteOptions};
use arrow_array::builder::{Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch};
use std::collections::HashMap;
use std::sync::Arc;

/// The stored pairs of the messages read incrementally, as hashes of
/// (message, key), each marked when the run received a pair of its key
/// (the received pair replaces it): 17 bytes a stored pair of a changed
/// message, whatever the run received.
#[derive(Debug, Default)]
pub(super) struct Replaced {
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
pub(super) struct PairPlan {
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
pub(super) fn plan_pairs(
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
pub(super) fn write_messages(
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
            let columns = crate::table::StoredColumns::of(&batch)?;
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
pub(in crate::table) struct Stored {
    pub(in crate::table) ok: bool,
    pub(in crate::table) latest_seq: Option<i64>,
    pub(in crate::table) clear_seq: Option<i64>,
    pub(in crate::table) kv_count: i64,
    pub(in crate::table) run_id: String,
    pub(in crate::table) read_at: i64,
    pub(in crate::table) full_read_at: Option<i64>,
}

/// A message's row after the run read it (`stored`: its row before, if any).
pub(super) fn merge(stored: Option<&Stored>, r: &ReadRow, plan: &PairPlan) -> Stored {
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
pub(super) fn write_pairs(
    c: &CurrentCommit<'_>,
    (table, hist_kv): (&str, &str),
    plan: &PairPlan,
    (reads, senders): (&Reads, &Senders),
    (run_id, diff): (&str, &mut Diff),
) -> Result<(Vec<DataFile>, Vec<String>), WriteError> {
    let schema = kv_schema(c.kind);
    let mut out = NewFiles::new(c, table, schema.clone(), run_id);
    for path in &plan.rewrite {
        for batch in read::batches(c.lake.as_ref(), &format!("{table}/{path}"))? {
            let batch = batch?;
            let (fps, keep) = kept_rows(c.kind, &batch, reads, &plan.replaced)?;
            let dropped: Vec<bool> = keep.iter().map(|k| !k).collect();
            diff.note(c.kind, &batch, &dropped, false)?;
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
            let added: Vec<bool> = fps
                .iter()
                .map(|fp| adds_pairs(reads.get(*fp).as_ref()))
                .collect();
            diff.note(c.kind, &batch, &added, true)?;
            let mask = BooleanArray::from(added);
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
    use crate::incremental::halves;

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
            fp: halves(1),
            how,
            latest_seq: 9,
            clear_seq: 1,
            kv_count: 2,
            at_us: 20,
            sender: 0,
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
