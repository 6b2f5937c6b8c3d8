//! The CSV `RecordWriter`: RFC 4180 (CRLF, fields quoted when they need it),
//! a header row, nulls as empty fields, timestamps as RFC 3339 in UTC with
//! microseconds. Values are written byte for byte as the API returned them.

use super::{HashingFile, RecordWriter, WriteError};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, SchemaRef};

pub struct CsvWriter {
    inner: csv::Writer<HashingFile>,
    schema: SchemaRef,
}

impl CsvWriter {
    pub fn new(file: HashingFile, schema: SchemaRef) -> Result<Self, WriteError> {
        let mut inner = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(file);
        inner.write_record(schema.fields().iter().map(|f| f.name().as_str()))?;
        Ok(CsvWriter { inner, schema })
    }
}

/// RFC 3339 with microseconds, e.g. `2026-11-26T03:05:12.123456Z`.
pub fn format_timestamp_us(us: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(us) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        None => us.to_string(),
    }
}

impl RecordWriter for CsvWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), WriteError> {
        if batch.schema() != self.schema {
            return Err(WriteError::Format(
                "batch schema differs from the file's".into(),
            ));
        }
        let cols = batch.columns();
        let mut buf = itoa::Buffer::new();
        for row in 0..batch.num_rows() {
            for col in cols {
                if col.is_null(row) {
                    self.inner.write_field(b"")?;
                    continue;
                }
                match col.data_type() {
                    DataType::Utf8 => self.inner.write_field(col.as_string::<i32>().value(row))?,
                    DataType::Int64 => self
                        .inner
                        .write_field(buf.format(col.as_primitive::<Int64Type>().value(row)))?,
                    DataType::Timestamp(..) => self.inner.write_field(format_timestamp_us(
                        col.as_primitive::<TimestampMicrosecondType>().value(row),
                    ))?,
                    other => return Err(WriteError::Format(format!("no CSV form for {other}"))),
                }
            }
            self.inner.write_record(None::<&[u8]>)?;
        }
        // Hand the batch to the file so that bytes_written() sees it.
        self.inner.flush()?;
        Ok(())
    }

    fn bytes_written(&self) -> u64 {
        self.inner.get_ref().bytes()
    }

    fn finish(self: Box<Self>) -> Result<HashingFile, WriteError> {
        self.inner
            .into_inner()
            .map_err(|e| WriteError::Io(std::io::Error::other(e.to_string())))
    }
}
