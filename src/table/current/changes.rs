//! `key_value_changes` (`group_key_value_changes`): what each run changed
//! in `current_key_values`, one row per (message, key) whose stored pair
//! it changed: `insert`, `update` (another value or Seq) or `delete` (a
//! delete that hides the key, a clear, a message now not found), with the
//! old and the new value and Seq. A history table (partitioned by `dt`
//! and `run_id`, the run's `txn`), written where the current pairs are
//! rewritten: the pairs a rewrite drops are the old side, the pairs it
//! adds the new.
//!
//! It is committed before `current_key_values`, so a run killed between
//! the two computes the same difference again from the table it has not
//! yet changed, and its commit is then found in the log. A run rebuilding
//! damaged tables (`--full`) writes none: the state before it is unknown.

use super::{CurrentCommit, ReadRow};
use crate::columns::{UTC, finish_int, finish_text, finish_time};
use crate::kind::{Kind, MessageId};
use crate::table::delta::{
    Changes, DataFile, PARTITION_COLUMNS, RunCommit, TableSpec, table_schema,
};
use crate::table::read;
use crate::write::{Format, TableSink, WriteError, WriteOptions, partition_dir};
use arrow_array::builder::{Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use std::collections::HashMap;
use std::sync::Arc;

/// What a run did to one stored pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Insert,
    Update,
    Delete,
}

impl Change {
    fn name(self) -> &'static str {
        match self {
            Change::Insert => "insert",
            Change::Update => "update",
            Change::Delete => "delete",
        }
    }
}

/// A pair as (value, Seq).
type Pair<'a> = (&'a str, i64);

/// The change from the pair a rewrite dropped to the one it added (none:
/// the same pair written again, or neither).
pub(crate) fn classify(old: Option<Pair<'_>>, new: Option<Pair<'_>>) -> Option<Change> {
    match (old, new) {
        (None, None) => None,
        (None, Some(_)) => Some(Change::Insert),
        (Some(_), None) => Some(Change::Delete),
        (Some(o), Some(n)) if o == n => None,
        (Some(_), Some(_)) => Some(Change::Update),
    }
}

/// A side of a (message, key): its value, Seq, and when it was fetched.
#[derive(Debug, Clone)]
struct Side {
    value: String,
    seq: i64,
    fetched_at: i64,
}

/// Change rows gathered before a batch goes to the file.
const BATCH_ROWS: usize = 8192;

/// The run's changes as the rewrite goes: the pairs it drops are held (the
/// old side: only pairs of messages read anew), each pair it adds is
/// matched against them and its change written at once; what is left of
/// the old side at the end are deletes. Memory holds the dropped pairs and
/// one batch, never the run's new pairs.
pub(super) struct Diff {
    old: HashMap<(u128, String), Side>,
    ids: HashMap<u128, MessageId>,
    rows: Vec<ChangeRow>,
    /// The file being written (none yet); `None` for the whole Diff when
    /// the run writes no changes (`off`).
    sink: Option<TableSink>,
    target: Option<Target>,
}

/// Where a run's changes go.
struct Target {
    kind: Kind,
    sdkappid: u64,
    table: &'static str,
    dt: String,
    run_id: String,
    name: String,
    lake: Arc<dyn crate::write::LakeStore>,
}

impl Diff {
    /// The changes of `run`, or none when the table holds them already (a
    /// run resumed between its commits) or the run rebuilds damaged tables.
    pub(super) fn new(c: &CurrentCommit<'_>, run: &RunCommit<'_>) -> Result<Diff, WriteError> {
        let table = c.kind.spec().changes_table();
        let snapshot = crate::table::latest(c.lake.as_ref(), c.delta, table)?;
        let held = crate::table::holds(c.delta, table, &snapshot, run.run_id)?;
        let target = match (c.rebuild || held, run_day(c)) {
            (false, Some(dt)) => Some(Target {
                kind: c.kind,
                sdkappid: c.sdkappid,
                table,
                dt,
                run_id: run.run_id.to_owned(),
                // Each attempt names its file anew: one in no log is never written over.
                name: format!("{}-{:08x}", run.run_id, rand::random::<u32>()),
                lake: c.lake.clone(),
            }),
            _ => None,
        };
        Ok(Diff {
            old: HashMap::new(),
            ids: HashMap::new(),
            rows: Vec::new(),
            sink: None,
            target,
        })
    }

    /// The rows of a batch of pairs where `pick` holds: dropped (`new`
    /// false: held as the old side), or added (matched and written).
    pub(super) fn note(
        &mut self,
        kind: Kind,
        batch: &RecordBatch,
        pick: &[bool],
        new: bool,
    ) -> Result<(), WriteError> {
        if self.target.is_none() || !pick.contains(&true) {
            return Ok(());
        }
        let ids = read::ids(kind, batch)?;
        let key = read::strings(batch, "key")?;
        let value = read::strings(batch, "value")?;
        let seq = read::ints(batch, "seq")?;
        let at: &arrow_array::TimestampMicrosecondArray = read::column(batch, "fetched_at")?;
        for (i, id) in ids.into_iter().enumerate().filter(|(i, _)| pick[*i]) {
            let fp = id.state_fingerprint();
            let side = Side {
                value: value.value(i).to_owned(),
                seq: seq.value(i),
                fetched_at: if at.is_null(i) { 0 } else { at.value(i) },
            };
            let k = (fp, key.value(i).to_owned());
            if !new {
                self.ids.entry(fp).or_insert(id);
                self.old.insert(k, side);
                continue;
            }
            let old = self.old.remove(&k);
            if let Some(change) = classify(pair(old.as_ref()), pair(Some(&side))) {
                let fetched_at = side.fetched_at;
                self.push(ChangeRow {
                    id,
                    key: k.1,
                    change,
                    old,
                    new: Some(side),
                    fetched_at,
                })?;
            }
        }
        Ok(())
    }

    fn push(&mut self, row: ChangeRow) -> Result<(), WriteError> {
        self.rows.push(row);
        if self.rows.len() >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    /// Write the gathered rows to the file (begun on the first).
    fn flush(&mut self) -> Result<(), WriteError> {
        let Some(t) = &self.target else {
            return Ok(());
        };
        if self.rows.is_empty() {
            return Ok(());
        }
        let batch = batch(t.kind, t.sdkappid, &std::mem::take(&mut self.rows))?;
        let sink = self.sink.get_or_insert_with(|| {
            TableSink::new(
                t.lake.clone(),
                t.table,
                &partition_dir(&t.dt, &t.run_id),
                &t.name,
                Format::Parquet,
                data_schema(t.kind),
                WriteOptions::default(),
                0,
            )
        });
        sink.write(&batch)
    }

    /// The deletes (the old side no added pair matched; dated by the
    /// run's read of the message), then the file, published.
    fn finish(
        mut self,
        read_at: impl Fn(u128) -> Option<ReadRow>,
    ) -> Result<Option<(Target, crate::write::Sealed)>, WriteError> {
        let mut left: Vec<((u128, String), Side)> =
            std::mem::take(&mut self.old).into_iter().collect();
        left.sort_by(|a, b| a.0.cmp(&b.0));
        for ((fp, key), side) in left {
            let Some(id) = self.ids.get(&fp).cloned() else {
                continue;
            };
            self.push(ChangeRow {
                id,
                key,
                change: Change::Delete,
                old: Some(side),
                new: None,
                fetched_at: read_at(fp).map_or(0, |r| r.at_us),
            })?;
        }
        self.flush()?;
        let (Some(t), Some(mut sink)) = (self.target, self.sink) else {
            return Ok(None);
        };
        Ok(sink.seal()?.map(|sealed| (t, sealed)))
    }
}

fn pair(s: Option<&Side>) -> Option<Pair<'_>> {
    s.map(|s| (s.value.as_str(), s.seq))
}

/// One row of the changes table.
struct ChangeRow {
    id: MessageId,
    key: String,
    change: Change,
    old: Option<Side>,
    new: Option<Side>,
    fetched_at: i64,
}

/// The table as the log knows it.
pub(crate) fn spec(kind: Kind) -> Result<TableSpec, delta_kernel::KernelError> {
    Ok(TableSpec {
        schema: table_schema(&data_schema(kind))?,
        partitions: &PARTITION_COLUMNS,
        stats_columns: kind.identity_names(),
    })
}

/// The data files' columns (the run's `dt` and `run_id` are in the paths).
pub(crate) fn data_schema(kind: Kind) -> SchemaRef {
    let mut fields = vec![Field::new("sdkappid", DataType::Int64, false)];
    fields.extend(kind.spec().identity_fields());
    fields.extend([
        Field::new("key", DataType::Utf8, false),
        Field::new("change", DataType::Utf8, false),
        Field::new("old_value", DataType::Utf8, true),
        Field::new("old_seq", DataType::Int64, true),
        Field::new("new_value", DataType::Utf8, true),
        Field::new("new_seq", DataType::Int64, true),
        Field::new(
            "fetched_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
            false,
        ),
    ]);
    Arc::new(Schema::new(fields))
}

fn batch(kind: Kind, sdkappid: u64, rows: &[ChangeRow]) -> Result<RecordBatch, WriteError> {
    let mut identity = kind.spec().identity_columns();
    let (mut key, mut change) = (StringBuilder::new(), StringBuilder::new());
    let (mut old_value, mut new_value) = (StringBuilder::new(), StringBuilder::new());
    let (mut old_seq, mut new_seq) = (Int64Builder::new(), Int64Builder::new());
    let mut at = TimestampMicrosecondBuilder::new().with_timezone(UTC);
    for r in rows {
        identity.append(&r.id)?;
        key.append_value(&r.key);
        change.append_value(r.change.name());
        old_value.append_option(r.old.as_ref().map(|s| &s.value));
        old_seq.append_option(r.old.as_ref().map(|s| s.seq));
        new_value.append_option(r.new.as_ref().map(|s| &s.value));
        new_seq.append_option(r.new.as_ref().map(|s| s.seq));
        at.append_value(r.fetched_at);
    }
    let mut columns = vec![Arc::new(arrow_array::Int64Array::from_value(
        sdkappid as i64,
        rows.len(),
    )) as _];
    columns.extend(identity.finish());
    columns.extend([
        finish_text(&mut key),
        finish_text(&mut change),
        finish_text(&mut old_value),
        finish_int(&mut old_seq),
        finish_text(&mut new_value),
        finish_int(&mut new_seq),
        finish_time(&mut at),
    ]);
    RecordBatch::try_new(data_schema(kind), columns).map_err(|e| WriteError::Store(e.to_string()))
}

/// The run's day: the `dt` of its history files.
fn run_day(c: &CurrentCommit<'_>) -> Option<String> {
    c.files.iter().find_map(|f| {
        f.path
            .split('/')
            .find_map(|p| p.strip_prefix("dt="))
            .map(str::to_owned)
    })
}

/// Commit the run's changes to the kind's changes table (none: no commit).
pub(super) fn commit(
    c: &CurrentCommit<'_>,
    run: &RunCommit<'_>,
    diff: Diff,
    reads: &super::Reads,
) -> Result<(), WriteError> {
    let Some((t, sealed)) = diff.finish(|fp| reads.get(fp))? else {
        return Ok(());
    };
    c.lake.publish(&sealed)?;
    c.lake.flush()?;
    let table = t.table;
    let file = DataFile {
        path: sealed
            .info
            .path
            .strip_prefix(&format!("{table}/"))
            .unwrap_or(&sealed.info.path)
            .to_owned(),
        partition: vec![t.dt, run.run_id.to_owned()],
        bytes: sealed.info.bytes,
        rows: sealed.info.rows,
        stats: sealed.info.stats.clone(),
    };
    let spec = spec(c.kind).map_err(|e| WriteError::Store(e.to_string()))?;
    let changes = Changes {
        adds: std::slice::from_ref(&file),
        removes: &[],
    };
    let snapshot = crate::table::latest(c.lake.as_ref(), c.delta, table)?;
    c.delta.commit_run(table, &spec, changes, run, snapshot)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_dropped_and_added_is_classified_by_its_value_and_seq() {
        let cases = [
            (None, None, None),
            (None, Some(("v", 3)), Some(Change::Insert)),
            (Some(("v", 3)), None, Some(Change::Delete)),
            // The same pair written again: no change.
            (Some(("v", 3)), Some(("v", 3)), None),
            (Some(("v", 3)), Some(("w", 4)), Some(Change::Update)),
            // Set again to the same value: a new Seq.
            (Some(("v", 3)), Some(("v", 5)), Some(Change::Update)),
            // A tombstone (empty value at a new Seq) is an update to "".
            (Some(("v", 3)), Some(("", 6)), Some(Change::Update)),
        ];
        for (old, new, want) in cases {
            assert_eq!(classify(old, new), want, "{old:?} -> {new:?}");
        }
    }
}
