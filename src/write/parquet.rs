//! The Parquet `RecordWriter`: zstd, microsecond timestamps, data page v1 and
//! plain/dictionary encodings only (what Spark 3, DuckDB and pyarrow all read),
//! row groups closed by size.

use super::stats::{FileStats, file_stats};
use super::{HashingFile, RecordWriter, WriteError, WriteOptions};
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;

pub(crate) struct ParquetWriter {
    inner: ArrowWriter<HashingFile>,
}

impl ParquetWriter {
    pub(crate) fn new(
        file: HashingFile,
        schema: SchemaRef,
        opts: &WriteOptions,
    ) -> Result<Self, WriteError> {
        let level =
            ZstdLevel::try_new(opts.zstd_level).map_err(|e| WriteError::Format(e.to_string()))?;
        let props = WriterProperties::builder()
            .set_writer_version(WriterVersion::PARQUET_1_0)
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_bytes(Some(opts.row_group_bytes.max(1)))
            .set_max_row_group_row_count(Some(1 << 20))
            .set_created_by(concat!("msgext ", env!("CARGO_PKG_VERSION")).to_owned())
            // Values are mostly distinct: a dictionary costs CPU and memory and
            // then falls back to plain anyway.
            .set_column_dictionary_enabled(ColumnPath::from("value"), false)
            .build();
        let inner = ArrowWriter::try_new(file, schema, Some(props))?;
        Ok(ParquetWriter { inner })
    }
}

impl RecordWriter for ParquetWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), WriteError> {
        Ok(self.inner.write(batch)?)
    }

    fn bytes_written(&self) -> u64 {
        (self.inner.bytes_written() + self.inner.in_progress_size()) as u64
    }

    fn finish(mut self: Box<Self>) -> Result<(HashingFile, FileStats), WriteError> {
        self.inner.flush()?;
        let stats = file_stats(self.inner.flushed_row_groups());
        Ok((self.inner.into_inner()?, stats))
    }
}
