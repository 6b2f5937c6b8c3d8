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
use std::collections::{BTreeMap, HashMap};
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

/// The pairs a rewrite drops and adds, by (message, key).
#[derive(Default)]
pub(super) struct Diff {
    old: HashMap<(u128, String), Side>,
    new: HashMap<(u128, String), Side>,
    ids: HashMap<u128, MessageId>,
}

impl Diff {
    /// The rows of a batch of pairs where `pick` holds: to the old side
    /// (`new` false: dropped) or the new (added).
    pub(super) fn note(
        &mut self,
        kind: Kind,
        batch: &RecordBatch,
        pick: &[bool],
        new: bool,
    ) -> Result<(), WriteError> {
        if !pick.contains(&true) {
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
            let sides = if new { &mut self.new } else { &mut self.old };
            sides.insert((fp, key.value(i).to_owned()), side);
            self.ids.entry(fp).or_insert(id);
        }
        Ok(())
    }

    /// The changes, by message and key; a delete is dated by the run's
    /// read of its message.
    fn rows(self, read_at: impl Fn(u128) -> Option<ReadRow>) -> Vec<ChangeRow> {
        let mut keys: BTreeMap<(u128, &str), ()> = BTreeMap::new();
        for (fp, key) in self.old.keys().chain(self.new.keys()) {
            keys.insert((*fp, key.as_str()), ());
        }
        let mut out = Vec::new();
        for (fp, key) in keys.into_keys() {
            let k = (fp, key.to_owned());
            let (old, new) = (self.old.get(&k), self.new.get(&k));
            let Some(change) = classify(pair(old), pair(new)) else {
                continue;
            };
            let Some(id) = self.ids.get(&fp) else {
                continue;
            };
            let fetched_at = match new {
                Some(n) => n.fetched_at,
                None => read_at(fp).map_or(0, |r| r.at_us),
            };
            out.push(ChangeRow {
                id: id.clone(),
                key: key.to_owned(),
                change,
                old: old.cloned(),
                new: new.cloned(),
                fetched_at,
            });
        }
        out
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

/// Commit the run's changes to the kind's changes table (none: no commit),
/// unless the table holds the run already.
pub(super) fn commit(
    c: &CurrentCommit<'_>,
    run: &RunCommit<'_>,
    diff: Diff,
    reads: &super::Reads,
) -> Result<(), WriteError> {
    let table = c.kind.spec().changes_table();
    let snapshot = crate::table::latest(c.lake.as_ref(), c.delta, table)?;
    if c.rebuild || crate::table::holds(c.delta, table, &snapshot, run.run_id)? {
        return Ok(());
    }
    let rows = diff.rows(|fp| reads.get(fp));
    let Some(dt) = run_day(c).filter(|_| !rows.is_empty()) else {
        return Ok(());
    };
    let batch = batch(c.kind, c.sdkappid, &rows)?;
    // Each attempt names its file anew: one in no log is never written over.
    let name = format!("{}-{:08x}", run.run_id, rand::random::<u32>());
    let mut sink = TableSink::new(
        c.lake.clone(),
        table,
        &partition_dir(&dt, run.run_id),
        &name,
        Format::Parquet,
        batch.schema(),
        WriteOptions::default(),
        0,
    );
    sink.write(&batch)?;
    let Some(sealed) = sink.seal()? else {
        return Ok(());
    };
    c.lake.publish(&sealed)?;
    c.lake.flush()?;
    let file = DataFile {
        path: sealed
            .info
            .path
            .strip_prefix(&format!("{table}/"))
            .unwrap_or(&sealed.info.path)
            .to_owned(),
        partition: vec![dt, run.run_id.to_owned()],
        bytes: sealed.info.bytes,
        rows: sealed.info.rows,
        stats: sealed.info.stats.clone(),
    };
    let spec = TableSpec {
        schema: table_schema(&data_schema(c.kind)).map_err(|e| WriteError::Store(e.to_string()))?,
        partitions: &PARTITION_COLUMNS,
        stats_columns: c.kind.identity_names(),
    };
    let changes = Changes {
        adds: std::slice::from_ref(&file),
        removes: &[],
    };
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
