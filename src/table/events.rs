//! The extension callbacks' tables (`extension_events`,
//! `group_extension_events`), written by `msgext listen`: one row per pair
//! of each callback (a clear, or a callback without pairs: one row with
//! `key` null), partitioned by `sdkappid` and the day it was received.
//!
//! Each listener commits what its journal holds with its own Delta `txn`
//! (`msgext-listen-<listener id>`), whose version is the journal offset
//! the commit reaches: a commit whose offset the log already holds is not
//! made again, so a listener killed anywhere commits each event once, and
//! listeners on other machines commit to the same table beside it.

use super::delta::{Changes, Committed, DeltaLake, RunCommit, TableSpec, Txn, has_log};
use crate::api::callback::{ExtensionEvent, Operation};
use crate::columns::{UTC, finish_int, finish_text, finish_time};
use crate::kind::{IdentityColumns, Kind};
use crate::write::{Format, LakeStore, TableSink, WriteError, WriteOptions};
use arrow_array::RecordBatch;
use arrow_array::builder::{Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use delta_kernel::engine::arrow_conversion::TryFromArrow;
use delta_kernel::schema::{DataType as KernelType, StructField, StructType};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The partition columns of the events tables.
const PARTITIONS: [&str; 2] = ["sdkappid", "dt"];

/// A callback as the listener received it: what the journal holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Received {
    #[serde(flatten)]
    pub event: ExtensionEvent,
    /// When the listener accepted it (Unix microseconds).
    pub received_us: i64,
    /// `OptPlatform` of the query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

/// The Delta application id of a listener's commits.
pub(crate) fn app_id(listener: &str) -> String {
    format!("msgext-listen-{listener}")
}

fn time(name: &str, nullable: bool) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
        nullable,
    )
}

/// The data files' columns (the partition columns are in the paths).
pub(crate) fn data_schema(kind: Kind) -> SchemaRef {
    let mut fields = kind.spec().identity_fields();
    fields.extend([
        Field::new("operate_type", DataType::Utf8, false),
        Field::new("seq", DataType::Int64, false),
        Field::new("key", DataType::Utf8, true),
        Field::new("value", DataType::Utf8, true),
        Field::new("key_seq", DataType::Int64, true),
        time("event_time", false),
        time("received_at", false),
        Field::new("platform", DataType::Utf8, true),
    ]);
    Arc::new(Schema::new(fields))
}

/// The table as the log knows it: `sdkappid` (int64), the data columns, `dt`.
pub(crate) fn spec(kind: Kind) -> Result<TableSpec, delta_kernel::KernelError> {
    let columns = StructType::try_from_arrow(data_schema(kind).as_ref())?;
    let app = StructField::not_null("sdkappid", KernelType::LONG);
    let dt = StructField::not_null("dt", KernelType::STRING);
    let fields = std::iter::once(app)
        .chain(columns.fields().cloned())
        .chain(std::iter::once(dt));
    Ok(TableSpec {
        schema: StructType::try_new(fields)?,
        partitions: &PARTITIONS,
        stats_columns: kind.identity_names(),
    })
}

/// Rows of one events table being gathered.
struct EventRows {
    identity: Box<dyn IdentityColumns>,
    operate_type: StringBuilder,
    seq: Int64Builder,
    key: StringBuilder,
    value: StringBuilder,
    key_seq: Int64Builder,
    event_time: TimestampMicrosecondBuilder,
    received_at: TimestampMicrosecondBuilder,
    platform: StringBuilder,
    schema: SchemaRef,
}

impl EventRows {
    fn new(kind: Kind) -> Self {
        let ts = || TimestampMicrosecondBuilder::new().with_timezone(UTC);
        EventRows {
            identity: kind.spec().identity_columns(),
            operate_type: StringBuilder::new(),
            seq: Int64Builder::new(),
            key: StringBuilder::new(),
            value: StringBuilder::new(),
            key_seq: Int64Builder::new(),
            event_time: ts(),
            received_at: ts(),
            platform: StringBuilder::new(),
            schema: data_schema(kind),
        }
    }

    /// One row per pair; a callback without pairs (a clear) one row with
    /// `key` null; a delete's `value` is null (the callback's is empty).
    fn push(&mut self, r: &Received) -> Result<(), WriteError> {
        let e = &r.event;
        let pairs: Vec<Option<_>> = match e.pairs.is_empty() {
            true => vec![None],
            false => e.pairs.iter().map(Some).collect(),
        };
        for p in pairs {
            self.identity
                .append(&e.message)
                .map_err(|m| WriteError::Store(m.to_string()))?;
            self.operate_type.append_value(e.operation.name());
            self.seq.append_value(e.seq);
            self.key.append_option(p.map(|p| &p.key));
            let value = p.filter(|_| e.operation != Operation::Delete);
            self.value.append_option(value.map(|p| &p.value));
            self.key_seq.append_option(p.map(|p| p.seq));
            self.event_time
                .append_value(e.event_time_ms.saturating_mul(1000));
            self.received_at.append_value(r.received_us);
            self.platform.append_option(r.platform.as_deref());
        }
        Ok(())
    }

    fn finish(mut self) -> Result<RecordBatch, WriteError> {
        let mut columns = self.identity.finish();
        columns.extend([
            finish_text(&mut self.operate_type),
            finish_int(&mut self.seq),
            finish_text(&mut self.key),
            finish_text(&mut self.value),
            finish_int(&mut self.key_seq),
            finish_time(&mut self.event_time),
            finish_time(&mut self.received_at),
            finish_text(&mut self.platform),
        ]);
        RecordBatch::try_new(self.schema, columns).map_err(|e| WriteError::Store(e.to_string()))
    }
}

/// The UTC day of a time in Unix microseconds, `YYYY-MM-DD`.
fn day(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string()
}

/// One listener's view of the lake's events tables.
pub(crate) struct EventTables<'a> {
    pub(crate) lake: &'a Arc<dyn LakeStore>,
    pub(crate) delta: &'a DeltaLake,
    pub(crate) sdkappid: u64,
    pub(crate) listener: &'a str,
}

impl EventTables<'_> {
    /// Refuse an events table of another schema (exit 2, naming it).
    pub(crate) fn check(&self, kind: Kind) -> Result<(), WriteError> {
        let table = kind.spec().events_table();
        if !has_log(&**self.lake, table)? {
            return Ok(());
        }
        let want = spec(kind).map_err(|e| WriteError::Store(e.to_string()))?;
        let snapshot = self.delta.snapshot(table)?;
        Ok(self.delta.check_schema(table, &snapshot, &want.schema)?)
    }

    /// The journal offset this listener's commits to the table reach (0: none).
    pub(crate) fn position(&self, kind: Kind) -> Result<u64, WriteError> {
        let table = kind.spec().events_table();
        if !has_log(&**self.lake, table)? {
            return Ok(0);
        }
        let snapshot = self.delta.snapshot(table)?;
        let v = self
            .delta
            .txn_version(table, &snapshot, &app_id(self.listener))?;
        Ok(v.map_or(0, |v| v.max(0) as u64))
    }

    /// Commit `events` (all of `kind`) as reaching journal offset `offset`,
    /// in one commit, unless the log holds this listener at that offset.
    pub(crate) fn commit(
        &self,
        kind: Kind,
        events: &[&Received],
        offset: u64,
    ) -> Result<Committed, WriteError> {
        let table = kind.spec().events_table();
        let mut by_day: BTreeMap<String, EventRows> = BTreeMap::new();
        for r in events {
            let rows = by_day
                .entry(day(r.received_us))
                .or_insert_with(|| EventRows::new(kind));
            rows.push(r)?;
        }
        let mut files = Vec::new();
        let mut rows_total = 0;
        for (dt, rows) in by_day {
            let batch = rows.finish()?;
            let file = self.write_file(table, &dt, &batch, offset)?;
            rows_total += file.rows;
            files.push(file);
        }
        self.lake.flush()?;
        let spec = spec(kind).map_err(|e| WriteError::Store(e.to_string()))?;
        let snapshot = match has_log(&**self.lake, table)? {
            true => Some(self.delta.snapshot(table)?),
            false => None,
        };
        let run = RunCommit {
            run_id: self.listener,
            sdkappid: self.sdkappid,
            status: "listen",
            messages: events.len() as u64,
            kv_rows: rows_total,
        };
        let txn = Txn {
            app_id: app_id(self.listener),
            version: offset as i64,
        };
        let changes = Changes {
            adds: &files,
            removes: &[],
        };
        Ok(self
            .delta
            .commit_txn(table, &spec, changes, (&run, &txn), snapshot)?)
    }

    /// Write one day's rows as a file of the table, published.
    fn write_file(
        &self,
        table: &str,
        dt: &str,
        batch: &RecordBatch,
        offset: u64,
    ) -> Result<super::delta::DataFile, WriteError> {
        let partition = format!("sdkappid={}/dt={dt}", self.sdkappid);
        // Each attempt names its file anew: a file of an attempt that died
        // before its commit is in no log, and never written over.
        let name = format!("{}-{offset}-{:08x}", self.listener, rand::random::<u32>());
        let mut sink = TableSink::new(
            self.lake.clone(),
            table,
            &partition,
            &name,
            Format::Parquet,
            batch.schema(),
            WriteOptions::default(),
            0,
        );
        sink.write(batch)?;
        let sealed = sink
            .seal()?
            .ok_or_else(|| WriteError::Store("an events commit without rows".into()))?;
        self.lake.publish(&sealed)?;
        let path = sealed.info.path.strip_prefix(&format!("{table}/"));
        Ok(super::delta::DataFile {
            path: path.unwrap_or(&sealed.info.path).to_owned(),
            partition: vec![self.sdkappid.to_string(), dt.to_owned()],
            bytes: sealed.info.bytes,
            rows: sealed.info.rows,
            stats: sealed.info.stats.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::callback::CallbackPair;
    use crate::kind::{GroupMessageRef, MessageRef};

    fn received(kind: Kind, op: Operation, pairs: &[(&str, &str, i64)], at: i64) -> Received {
        let message = match kind {
            Kind::OneToOne => MessageRef::new(Some("a"), "b", "1_2_3").into(),
            Kind::Group => GroupMessageRef::new("@TGS#1", 7).into(),
        };
        Received {
            event: ExtensionEvent {
                message,
                operation: op,
                pairs: pairs
                    .iter()
                    .map(|(k, v, s)| CallbackPair {
                        key: k.to_string(),
                        value: v.to_string(),
                        seq: *s,
                    })
                    .collect(),
                seq: 9,
                event_time_ms: 1_764_688_415_123,
            },
            received_us: at,
            platform: Some("Web".into()),
        }
    }

    #[test]
    fn rows_are_one_per_pair_a_clear_one_with_key_null_a_delete_without_value() {
        use arrow_array::{Array, Int64Array, StringArray};
        let mut rows = EventRows::new(Kind::OneToOne);
        for r in [
            received(
                Kind::OneToOne,
                Operation::Set,
                &[("k1", "v1", 1), ("k2", "", 1)],
                5,
            ),
            received(Kind::OneToOne, Operation::Delete, &[("k1", "", 2)], 5),
            received(Kind::OneToOne, Operation::Clear, &[], 5),
        ] {
            rows.push(&r).unwrap();
        }
        let b = rows.finish().unwrap();
        assert_eq!(b.num_rows(), 4);
        let text = |name: &str| {
            let a = b.column_by_name(name).unwrap();
            let a = a.as_any().downcast_ref::<StringArray>().unwrap();
            (0..a.len())
                .map(|i| a.is_valid(i).then(|| a.value(i).to_owned()))
                .collect::<Vec<_>>()
        };
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            text("operate_type"),
            [s("set"), s("set"), s("delete"), s("clear")]
        );
        assert_eq!(text("key"), [s("k1"), s("k2"), s("k1"), None]);
        // An empty value set is kept; a delete's is null.
        assert_eq!(text("value"), [s("v1"), s(""), None, None]);
        assert_eq!(text("from_account"), [s("a"), s("a"), s("a"), s("a")]);
        let key_seq = b.column_by_name("key_seq").unwrap();
        let key_seq = key_seq.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(
            key_seq.iter().collect::<Vec<_>>(),
            [Some(1), Some(1), Some(2), None]
        );
        // The group kind has its own identity columns.
        let mut rows = EventRows::new(Kind::Group);
        rows.push(&received(Kind::Group, Operation::Set, &[("k", "v", 1)], 5))
            .unwrap();
        let b = rows.finish().unwrap();
        assert!(b.column_by_name("group_id").is_some() && b.column_by_name("msg_seq").is_some());
        // A message of the other kind is a bug, not a row.
        let mut rows = EventRows::new(Kind::Group);
        assert!(
            rows.push(&received(Kind::OneToOne, Operation::Clear, &[], 5))
                .is_err()
        );
    }

    #[test]
    fn a_received_event_reads_back_from_its_journal_line() {
        let r = received(
            Kind::Group,
            Operation::Delete,
            &[("k", "", 4)],
            1_700_000_000_000_000,
        );
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.contains(r#""kind":"group""#), "{line}");
        assert_eq!(serde_json::from_str::<Received>(&line).unwrap(), r);
        assert_eq!(day(r.received_us), "2023-11-14");
    }
}
