//! The columns of the two tables (DESIGN §3) and the Arrow builders that rows
//! are appended to. Both output formats are written from these batches, so
//! Parquet and CSV always hold the same values.

use crate::model::{MessageRef, PairRef};
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

/// `key_values`: one row per (message, key).
pub fn key_values_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("from_account", true),
        utf8("to_account", false),
        utf8("msg_key", false),
        utf8("key", false),
        utf8("value", false),
        int64("seq", false),
        int64("latest_seq", false),
        int64("clear_seq", false),
        Field::new(
            "fetched_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]))
}

/// `messages`: one row per distinct input message.
pub fn messages_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("from_account", true),
        utf8("to_account", false),
        utf8("msg_key", false),
        utf8("status", false),
        int64("kv_count", false),
        int64("pages", false),
        int64("attempts", false),
        int64("latest_seq", true),
        int64("clear_seq", true),
        utf8("error_code", true),
        utf8("error_info", true),
    ]))
}

/// Rows of `key_values` being gathered into a batch.
pub struct KvRows {
    schema: SchemaRef,
    from: StringBuilder,
    to: StringBuilder,
    msg_key: StringBuilder,
    key: StringBuilder,
    value: StringBuilder,
    seq: Int64Builder,
    latest_seq: Int64Builder,
    clear_seq: Int64Builder,
    fetched_at: TimestampMicrosecondBuilder,
    len: usize,
    bytes: usize,
}

impl Default for KvRows {
    fn default() -> Self {
        Self::new()
    }
}

impl KvRows {
    pub fn new() -> Self {
        KvRows {
            schema: key_values_schema(),
            from: StringBuilder::new(),
            to: StringBuilder::new(),
            msg_key: StringBuilder::new(),
            key: StringBuilder::new(),
            value: StringBuilder::new(),
            seq: Int64Builder::new(),
            latest_seq: Int64Builder::new(),
            clear_seq: Int64Builder::new(),
            fetched_at: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            len: 0,
            bytes: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn append(&mut self, msg: &MessageRef, p: PairRef<'_>, latest_seq: i64, clear_seq: i64) {
        self.from.append_option(msg.from.as_deref());
        self.to.append_value(&msg.to);
        self.msg_key.append_value(&msg.msg_key);
        self.key.append_value(p.key);
        self.value.append_value(p.value);
        self.seq.append_value(p.seq);
        self.latest_seq.append_value(latest_seq);
        self.clear_seq.append_value(clear_seq);
        self.fetched_at.append_value(p.fetched_at_us);
        self.len += 1;
        self.bytes += msg.from.as_ref().map_or(0, String::len)
            + msg.to.len()
            + msg.msg_key.len()
            + p.key.len()
            + p.value.len()
            + 32;
    }

    /// Raw bytes gathered (strings plus fixed-width columns).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The gathered rows as a batch; the builders start empty again.
    pub fn take(&mut self) -> RecordBatch {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.from.finish()),
            Arc::new(self.to.finish()),
            Arc::new(self.msg_key.finish()),
            Arc::new(self.key.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.seq.finish()),
            Arc::new(self.latest_seq.finish()),
            Arc::new(self.clear_seq.finish()),
            Arc::new(self.fetched_at.finish()),
        ];
        self.len = 0;
        self.bytes = 0;
        RecordBatch::try_new(self.schema.clone(), cols).expect("builders match the schema")
    }
}

/// The `messages` row of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow<'a> {
    pub msg: &'a MessageRef,
    pub status: &'a str,
    pub kv_count: i64,
    pub pages: i64,
    pub attempts: i64,
    pub latest_seq: Option<i64>,
    pub clear_seq: Option<i64>,
    pub error_code: Option<&'a str>,
    pub error_info: Option<&'a str>,
}

/// Rows of `messages` being gathered into a batch.
pub struct MessageRows {
    schema: SchemaRef,
    from: StringBuilder,
    to: StringBuilder,
    msg_key: StringBuilder,
    status: StringBuilder,
    kv_count: Int64Builder,
    pages: Int64Builder,
    attempts: Int64Builder,
    latest_seq: Int64Builder,
    clear_seq: Int64Builder,
    error_code: StringBuilder,
    error_info: StringBuilder,
    len: usize,
}

impl Default for MessageRows {
    fn default() -> Self {
        Self::new()
    }
}

impl MessageRows {
    pub fn new() -> Self {
        MessageRows {
            schema: messages_schema(),
            from: StringBuilder::new(),
            to: StringBuilder::new(),
            msg_key: StringBuilder::new(),
            status: StringBuilder::new(),
            kv_count: Int64Builder::new(),
            pages: Int64Builder::new(),
            attempts: Int64Builder::new(),
            latest_seq: Int64Builder::new(),
            clear_seq: Int64Builder::new(),
            error_code: StringBuilder::new(),
            error_info: StringBuilder::new(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn append(&mut self, r: &MessageRow<'_>) {
        self.from.append_option(r.msg.from.as_deref());
        self.to.append_value(&r.msg.to);
        self.msg_key.append_value(&r.msg.msg_key);
        self.status.append_value(r.status);
        self.kv_count.append_value(r.kv_count);
        self.pages.append_value(r.pages);
        self.attempts.append_value(r.attempts);
        self.latest_seq.append_option(r.latest_seq);
        self.clear_seq.append_option(r.clear_seq);
        self.error_code.append_option(r.error_code);
        self.error_info.append_option(r.error_info);
        self.len += 1;
    }

    pub fn take(&mut self) -> RecordBatch {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.from.finish()),
            Arc::new(self.to.finish()),
            Arc::new(self.msg_key.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.kv_count.finish()),
            Arc::new(self.pages.finish()),
            Arc::new(self.attempts.finish()),
            Arc::new(self.latest_seq.finish()),
            Arc::new(self.clear_seq.finish()),
            Arc::new(self.error_code.finish()),
            Arc::new(self.error_info.finish()),
        ];
        self.len = 0;
        RecordBatch::try_new(self.schema.clone(), cols).expect("builders match the schema")
    }
}
