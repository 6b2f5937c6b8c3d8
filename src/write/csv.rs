//! The CSV `RecordWriter`: RFC 4180 (CRLF line ends, a header row, fields
//! quoted when they hold a comma, quote, CR or LF, or leading/trailing space).
//! A null is an empty field and an empty string is `""`, so readers that make
//! the distinction (DuckDB with `allow_quoted_nulls=false`, Spark) keep it.
//! Timestamps are RFC 3339 in UTC with microseconds. Values are written byte
//! for byte as the API returned them.

use super::{HashingFile, RecordWriter, WriteError};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, SchemaRef};
use std::io::Write;

pub struct CsvWriter {
    file: HashingFile,
    schema: SchemaRef,
    buf: Vec<u8>,
}

impl CsvWriter {
    pub fn new(mut file: HashingFile, schema: SchemaRef) -> Result<Self, WriteError> {
        let mut buf = Vec::new();
        for (i, f) in schema.fields().iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            push_text(&mut buf, f.name());
        }
        buf.extend_from_slice(b"\r\n");
        file.write_all(&buf)?;
        buf.clear();
        Ok(CsvWriter { file, schema, buf })
    }
}

/// RFC 3339 with microseconds, e.g. `2026-11-26T03:05:12.123456Z`.
pub fn format_timestamp_us(us: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(us) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        None => us.to_string(),
    }
}

/// A non-null text field: quoted when empty or when it needs quoting.
pub fn push_text(buf: &mut Vec<u8>, s: &str) {
    let needs_quotes = s.is_empty()
        || s.starts_with(' ')
        || s.ends_with(' ')
        || s.bytes().any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n'));
    if !needs_quotes {
        buf.extend_from_slice(s.as_bytes());
        return;
    }
    buf.push(b'"');
    for b in s.bytes() {
        if b == b'"' {
            buf.push(b'"');
        }
        buf.push(b);
    }
    buf.push(b'"');
}

impl RecordWriter for CsvWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), WriteError> {
        if batch.schema() != self.schema {
            return Err(WriteError::Format(
                "batch schema differs from the file's".into(),
            ));
        }
        let cols = batch.columns();
        let mut num = itoa::Buffer::new();
        self.buf.clear();
        for row in 0..batch.num_rows() {
            for (i, col) in cols.iter().enumerate() {
                if i > 0 {
                    self.buf.push(b',');
                }
                if col.is_null(row) {
                    continue;
                }
                match col.data_type() {
                    DataType::Utf8 => push_text(&mut self.buf, col.as_string::<i32>().value(row)),
                    DataType::Int64 => self.buf.extend_from_slice(
                        num.format(col.as_primitive::<Int64Type>().value(row))
                            .as_bytes(),
                    ),
                    DataType::Timestamp(..) => self.buf.extend_from_slice(
                        format_timestamp_us(
                            col.as_primitive::<TimestampMicrosecondType>().value(row),
                        )
                        .as_bytes(),
                    ),
                    other => return Err(WriteError::Format(format!("no CSV form for {other}"))),
                }
            }
            self.buf.extend_from_slice(b"\r\n");
        }
        self.file.write_all(&self.buf)?;
        Ok(())
    }

    fn bytes_written(&self) -> u64 {
        self.file.bytes()
    }

    fn finish(self: Box<Self>) -> Result<HashingFile, WriteError> {
        Ok(self.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_fields_are_quoted_only_when_needed_and_empty_is_not_null() {
        let table = [
            ("plain", "plain"),
            ("", "\"\""),
            ("a,b,c", "\"a,b,c\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("two\nlines", "\"two\nlines\""),
            ("cr\rhere", "\"cr\rhere\""),
            (" padded ", "\" padded \""),
            ("tab\there", "tab\there"),
            ("null", "null"),
            ("\\N", "\\N"),
            ("ünïcødé 中文 🚀", "ünïcødé 中文 🚀"),
        ];
        for (value, want) in table {
            let mut buf = Vec::new();
            push_text(&mut buf, value);
            assert_eq!(String::from_utf8(buf).unwrap(), want, "{value:?}");
        }
    }
}
