//! The columns of the two tables of each kind of message (DESIGN §3) and the
//! Arrow builders that rows are appended to. Both tables open with the
//! kind's identity columns (`kind::IdentityColumns`); the rest is the same
//! for every kind. Both output formats are written from these batches, so
//! Parquet and CSV always hold the same values.

use crate::api::pairs::PairRef;
use crate::columns::{UTC, finish_int, finish_text, finish_time};
use crate::kind::{IdentityColumns, Kind, KindMismatch, MessageId};
use arrow_array::builder::{Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use std::sync::Arc;

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn int64(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Int64, nullable)
}

/// `sdkappid` (the app, so that several apps share one table), the kind's
/// identity columns, then the table's own.
fn with_identity(kind: Kind, rest: Vec<Field>) -> SchemaRef {
    let mut fields = vec![int64("sdkappid", false)];
    fields.extend(kind.spec().identity_fields());
    fields.extend(rest);
    Arc::new(Schema::new(fields))
}

/// The `sdkappid` column of a batch: one value, `rows` times.
fn sdkappid_column(sdkappid: i64, rows: usize) -> ArrayRef {
    Arc::new(arrow_array::Int64Array::from_value(sdkappid, rows))
}

/// `key_values` (`group_key_values`): one row per (message, key).
pub fn key_values_schema(kind: Kind) -> SchemaRef {
    with_identity(
        kind,
        vec![
            utf8("key", false),
            utf8("value", false),
            int64("seq", false),
            int64("latest_seq", false),
            int64("clear_seq", false),
            Field::new(
                "fetched_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
                false,
            ),
        ],
    )
}

/// `messages` (`group_messages`): one row per distinct input message.
pub(crate) fn messages_schema(kind: Kind) -> SchemaRef {
    with_identity(
        kind,
        vec![
            utf8("status", false),
            int64("kv_count", false),
            int64("pages", false),
            int64("attempts", false),
            int64("latest_seq", true),
            int64("clear_seq", true),
            utf8("error_code", true),
            utf8("error_info", true),
            utf8("read", true),
            Field::new(
                "fetched_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
                true,
            ),
        ],
    )
}

/// Rows of `key_values` being gathered into a batch.
pub(crate) struct KvRows {
    schema: SchemaRef,
    sdkappid: i64,
    id: Box<dyn IdentityColumns>,
    key: StringBuilder,
    value: StringBuilder,
    seq: Int64Builder,
    latest_seq: Int64Builder,
    clear_seq: Int64Builder,
    fetched_at: TimestampMicrosecondBuilder,
    len: usize,
    bytes: usize,
}

impl KvRows {
    pub(crate) fn new(kind: Kind, sdkappid: u64) -> Self {
        KvRows {
            schema: key_values_schema(kind),
            sdkappid: sdkappid as i64,
            id: kind.spec().identity_columns(),
            key: StringBuilder::new(),
            value: StringBuilder::new(),
            seq: Int64Builder::new(),
            latest_seq: Int64Builder::new(),
            clear_seq: Int64Builder::new(),
            fetched_at: TimestampMicrosecondBuilder::new().with_timezone(UTC),
            len: 0,
            bytes: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn append(
        &mut self,
        msg: &MessageId,
        p: PairRef<'_>,
        latest_seq: i64,
        clear_seq: i64,
    ) -> Result<(), KindMismatch> {
        self.id.append(msg)?;
        self.key.append_value(p.key);
        self.value.append_value(p.value);
        self.seq.append_value(p.seq);
        self.latest_seq.append_value(latest_seq);
        self.clear_seq.append_value(clear_seq);
        self.fetched_at.append_value(p.fetched_at_us);
        self.len += 1;
        self.bytes += msg.identity().text_len() + p.key.len() + p.value.len() + 32;
        Ok(())
    }

    /// Raw bytes gathered (strings plus fixed-width columns).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The gathered rows as a batch; the builders start empty again.
    pub(crate) fn take(&mut self) -> RecordBatch {
        let mut cols: Vec<ArrayRef> = vec![sdkappid_column(self.sdkappid, self.len)];
        cols.extend(self.id.finish());
        cols.extend([
            finish_text(&mut self.key),
            finish_text(&mut self.value),
            finish_int(&mut self.seq),
            finish_int(&mut self.latest_seq),
            finish_int(&mut self.clear_seq),
            finish_time(&mut self.fetched_at),
        ]);
        self.len = 0;
        self.bytes = 0;
        RecordBatch::try_new(self.schema.clone(), cols).expect("builders match the schema")
    }
}

/// The `messages` row of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow<'a> {
    pub msg: &'a MessageId,
    pub status: &'a str,
    pub kv_count: i64,
    pub pages: i64,
    pub attempts: i64,
    pub latest_seq: Option<i64>,
    pub clear_seq: Option<i64>,
    pub error_code: Option<&'a str>,
    pub error_info: Option<&'a str>,
    /// How it was read (`full`, `incremental`, `unchanged`), when it was.
    pub read: Option<&'a str>,
    /// When the API answered for it (ok, not found), µs since the epoch.
    pub fetched_at_us: Option<i64>,
}

/// Rows of `messages` being gathered into a batch.
pub(crate) struct MessageRows {
    schema: SchemaRef,
    sdkappid: i64,
    id: Box<dyn IdentityColumns>,
    status: StringBuilder,
    kv_count: Int64Builder,
    pages: Int64Builder,
    attempts: Int64Builder,
    latest_seq: Int64Builder,
    clear_seq: Int64Builder,
    error_code: StringBuilder,
    error_info: StringBuilder,
    read: StringBuilder,
    fetched_at: TimestampMicrosecondBuilder,
    len: usize,
}

impl MessageRows {
    pub(crate) fn new(kind: Kind, sdkappid: u64) -> Self {
        MessageRows {
            schema: messages_schema(kind),
            sdkappid: sdkappid as i64,
            id: kind.spec().identity_columns(),
            status: StringBuilder::new(),
            kv_count: Int64Builder::new(),
            pages: Int64Builder::new(),
            attempts: Int64Builder::new(),
            latest_seq: Int64Builder::new(),
            clear_seq: Int64Builder::new(),
            error_code: StringBuilder::new(),
            error_info: StringBuilder::new(),
            read: StringBuilder::new(),
            fetched_at: TimestampMicrosecondBuilder::new().with_timezone(UTC),
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn append(&mut self, r: &MessageRow<'_>) -> Result<(), KindMismatch> {
        self.id.append(r.msg)?;
        self.status.append_value(r.status);
        self.kv_count.append_value(r.kv_count);
        self.pages.append_value(r.pages);
        self.attempts.append_value(r.attempts);
        self.latest_seq.append_option(r.latest_seq);
        self.clear_seq.append_option(r.clear_seq);
        self.error_code.append_option(r.error_code);
        self.error_info.append_option(r.error_info);
        self.read.append_option(r.read);
        self.fetched_at.append_option(r.fetched_at_us);
        self.len += 1;
        Ok(())
    }

    pub(crate) fn take(&mut self) -> RecordBatch {
        let mut cols: Vec<ArrayRef> = vec![sdkappid_column(self.sdkappid, self.len)];
        cols.extend(self.id.finish());
        cols.extend([
            Arc::new(self.status.finish()) as ArrayRef,
            Arc::new(self.kv_count.finish()),
            Arc::new(self.pages.finish()),
            Arc::new(self.attempts.finish()),
            Arc::new(self.latest_seq.finish()),
            Arc::new(self.clear_seq.finish()),
            Arc::new(self.error_code.finish()),
            Arc::new(self.error_info.finish()),
            Arc::new(self.read.finish()),
            finish_time(&mut self.fetched_at),
        ]);
        self.len = 0;
        RecordBatch::try_new(self.schema.clone(), cols).expect("builders match the schema")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::{GroupMessageRef, MessageRef};

    #[test]
    fn each_kind_opens_its_tables_with_its_identity_columns() {
        let names = |s: SchemaRef| {
            s.fields()
                .iter()
                .map(|f| f.name().clone())
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(
            names(key_values_schema(Kind::OneToOne)),
            "sdkappid,from_account,to_account,msg_key,key,value,seq,latest_seq,clear_seq,fetched_at"
        );
        assert_eq!(
            names(messages_schema(Kind::Group)),
            "sdkappid,group_id,msg_seq,status,kv_count,pages,attempts,latest_seq,clear_seq,error_code,error_info,read,fetched_at"
        );
        let pair = PairRef {
            key: "k",
            value: "v",
            seq: 1,
            fetched_at_us: 0,
        };
        let mut rows = KvRows::new(Kind::Group, 1400000000);
        rows.append(&GroupMessageRef::new("@TGS#1", 9).into(), pair, 1, 0)
            .unwrap();
        assert!(
            rows.append(&MessageRef::new(None, "b", "k").into(), pair, 1, 0)
                .is_err(),
            "a one-to-one message never lands in a group table"
        );
        let batch = rows.take();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.schema().field(2).data_type(), &DataType::Int64);
        assert_eq!(
            batch.column(0).as_ref(),
            &arrow_array::Int64Array::from(vec![1400000000]) as &dyn arrow_array::Array
        );
    }
}
