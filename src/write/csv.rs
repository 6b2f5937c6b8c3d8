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

pub(crate) struct CsvWriter {
    file: HashingFile,
    schema: SchemaRef,
    buf: Vec<u8>,
    /// The last timestamp written, and its text.
    last_time: (Option<i64>, String),
}

impl CsvWriter {
    pub(crate) fn new(mut file: HashingFile, schema: SchemaRef) -> Result<Self, WriteError> {
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
        Ok(CsvWriter {
            file,
            schema,
            buf,
            last_time: (None, String::new()),
        })
    }
}

/// RFC 3339 with microseconds, e.g. `2026-11-26T03:05:12.123456Z`.
pub(crate) fn format_timestamp_us(us: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(us) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        None => us.to_string(),
    }
}

/// A non-null text field: quoted when empty or when it needs quoting.
pub(crate) fn push_text(buf: &mut Vec<u8>, s: &str) {
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

/// A column of a batch, its type looked up once per batch rather than once
/// per field.
enum Column<'a> {
    Text(&'a arrow_array::StringArray),
    Int(&'a arrow_array::Int64Array),
    Micros(&'a arrow_array::TimestampMicrosecondArray),
}

impl<'a> Column<'a> {
    fn of(col: &'a arrow_array::ArrayRef) -> Result<Self, WriteError> {
        Ok(match col.data_type() {
            DataType::Utf8 => Column::Text(col.as_string::<i32>()),
            DataType::Int64 => Column::Int(col.as_primitive::<Int64Type>()),
            DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, _) => {
                Column::Micros(col.as_primitive::<TimestampMicrosecondType>())
            }
            other => return Err(WriteError::Format(format!("no CSV form for {other}"))),
        })
    }
}

impl RecordWriter for CsvWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), WriteError> {
        if batch.schema() != self.schema {
            return Err(WriteError::Format(
                "batch schema differs from the file's".into(),
            ));
        }
        let cols = batch
            .columns()
            .iter()
            .map(Column::of)
            .collect::<Result<Vec<_>, _>>()?;
        let mut num = itoa::Buffer::new();
        self.buf.clear();
        for row in 0..batch.num_rows() {
            for (i, col) in cols.iter().enumerate() {
                if i > 0 {
                    self.buf.push(b',');
                }
                if batch.column(i).is_null(row) {
                    continue;
                }
                match col {
                    Column::Text(a) => push_text(&mut self.buf, a.value(row)),
                    Column::Int(a) => self
                        .buf
                        .extend_from_slice(num.format(a.value(row)).as_bytes()),
                    Column::Micros(a) => {
                        // A message's rows share one fetch time: format it once.
                        let us = a.value(row);
                        if self.last_time.0 != Some(us) {
                            self.last_time = (Some(us), format_timestamp_us(us));
                        }
                        self.buf.extend_from_slice(self.last_time.1.as_bytes());
                    }
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

    fn finish(self: Box<Self>) -> Result<(HashingFile, super::stats::FileStats), WriteError> {
        Ok((self.file, Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow_schema::{Field, Schema, TimeUnit};
    use std::sync::Arc;

    /// Two batches through one writer: nulls, empty text, and fetch times
    /// that repeat, change, come back and go null (each row's own time is
    /// written, whatever the row before it held). Expected text by hand:
    /// 1_764_126_312_123_456 µs is 2025-11-26T03:05:12.123456Z; 0 is the epoch.
    #[test]
    fn rows_are_written_field_by_field_with_each_rows_own_time() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new(
                "t",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]));
        let batch = |k: Vec<Option<&str>>, n: Vec<Option<i64>>, t: Vec<Option<i64>>| {
            let cols: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from(k)),
                Arc::new(Int64Array::from(n)),
                Arc::new(TimestampMicrosecondArray::from(t).with_timezone("UTC")),
            ];
            RecordBatch::try_new(schema.clone(), cols).unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        let file = HashingFile::new(std::fs::File::create(&path).unwrap());
        let mut w = Box::new(CsvWriter::new(file, schema.clone()).unwrap());
        let t1 = 1_764_126_312_123_456;
        w.write(&batch(
            vec![Some("a"), Some(""), None, Some("x,y")],
            vec![Some(1), None, Some(-3), Some(0)],
            vec![Some(t1), Some(t1), Some(0), Some(t1)],
        ))
        .unwrap();
        w.write(&batch(
            vec![Some("b"), Some("c")],
            vec![Some(2), Some(3)],
            vec![None, Some(t1 + 1)],
        ))
        .unwrap();
        w.finish().unwrap().0.sync().unwrap();
        let want = "k,n,t\r\n\
                    a,1,2025-11-26T03:05:12.123456Z\r\n\
                    \"\",,2025-11-26T03:05:12.123456Z\r\n\
                    ,-3,1970-01-01T00:00:00.000000Z\r\n\
                    \"x,y\",0,2025-11-26T03:05:12.123456Z\r\n\
                    b,2,\r\n\
                    c,3,2025-11-26T03:05:12.123457Z\r\n";
        assert_eq!(std::fs::read_to_string(&path).unwrap(), want);
    }

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
