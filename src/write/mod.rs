//! Writing the data-lake folder: the `RecordWriter` trait with its Parquet and
//! CSV implementations, Hive-style partition folders, part files rolled by
//! size, and the one seam that puts a finished file at its final name
//! (`LocalDir::commit`: temporary name, fsync, rename, fsync the folder), so
//! that readers never see a half-written file. Knows nothing about HTTP.

pub mod csv;
pub mod parquet;
pub mod schema;

use crate::model::{FetchedPair, MessageRef};
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use schema::{KvRows, MessageRow, MessageRows};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Output file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Parquet,
    Csv,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{path}: {source}")]
    Path {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Parquet: {0}")]
    Parquet(#[from] ::parquet::errors::ParquetError),
    #[error("CSV: {0}")]
    Csv(#[from] ::csv::Error),
    #[error("format: {0}")]
    Format(String),
}

/// Knobs of the writers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// A part file is closed and a new one begun past this size.
    pub max_file_bytes: u64,
    /// Parquet row groups are closed past this (estimated, encoded) size.
    pub row_group_bytes: usize,
    pub zstd_level: i32,
    /// Rows gathered before a batch goes to the writer.
    pub batch_rows: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            max_file_bytes: 128 * 1024 * 1024,
            row_group_bytes: 16 * 1024 * 1024,
            zstd_level: 3,
            batch_rows: 8192,
        }
    }
}

/// A committed file, as listed in summary.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileInfo {
    /// Relative to the output folder, with `/` separators.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// A buffered file that counts and hashes what goes through it.
pub struct HashingFile {
    inner: BufWriter<File>,
    hasher: Sha256,
    bytes: u64,
}

impl HashingFile {
    pub fn new(file: File) -> Self {
        HashingFile {
            inner: BufWriter::with_capacity(256 * 1024, file),
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Flush, fsync, and return (bytes, sha256 hex).
    fn sync(self) -> Result<(u64, String), WriteError> {
        let file = self
            .inner
            .into_inner()
            .map_err(|e| WriteError::Io(e.into_error()))?;
        file.sync_all()?;
        let digest = self.hasher.finalize();
        let hex = digest.iter().map(|b| format!("{b:02x}")).collect();
        Ok((self.bytes, hex))
    }
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes batches of one schema into one file.
pub trait RecordWriter: Send {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), WriteError>;
    /// Bytes written so far (including what is buffered for the file).
    fn bytes_written(&self) -> u64;
    /// Complete the file (footer, buffers) and hand back the file to commit.
    fn finish(self: Box<Self>) -> Result<HashingFile, WriteError>;
}

fn new_writer(
    format: Format,
    file: HashingFile,
    schema: SchemaRef,
    opts: &WriteOptions,
) -> Result<Box<dyn RecordWriter>, WriteError> {
    Ok(match format {
        Format::Parquet => Box::new(parquet::ParquetWriter::new(file, schema, opts)?),
        Format::Csv => Box::new(csv::CsvWriter::new(file, schema)?),
    })
}

/// The seam between "a file is being written" and "a file is at its final
/// name". Local folders stage under a hidden temporary name beside the final
/// one (`.name.inprogress`: ignored by DuckDB, Spark and pyarrow globs) and
/// rename; an object store would complete a multipart upload instead.
#[derive(Debug, Clone)]
pub struct LocalDir {
    root: PathBuf,
}

/// A file being written, not yet visible at its final name.
pub struct Staged {
    tmp: PathBuf,
    final_path: PathBuf,
    rel: String,
}

/// The temporary name of a file being written.
pub fn staging_name(final_name: &str) -> String {
    format!(".{final_name}.inprogress")
}

impl LocalDir {
    pub fn new(root: &Path) -> Self {
        LocalDir {
            root: root.to_owned(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Begin the file that will be at `rel` (a `/`-separated path below the root).
    pub fn stage(&self, rel: &str) -> Result<(Staged, HashingFile), WriteError> {
        let final_path = self.root.join(rel);
        let dir = final_path.parent().unwrap_or(&self.root).to_owned();
        std::fs::create_dir_all(&dir).map_err(|source| WriteError::Path {
            path: dir.clone(),
            source,
        })?;
        let name = final_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(staging_name(&name));
        let file = File::create(&tmp).map_err(|source| WriteError::Path {
            path: tmp.clone(),
            source,
        })?;
        Ok((
            Staged {
                tmp,
                final_path,
                rel: rel.to_owned(),
            },
            HashingFile::new(file),
        ))
    }

    /// Make a staged file durable and visible at its final name.
    pub fn commit(
        &self,
        staged: Staged,
        file: HashingFile,
        rows: u64,
    ) -> Result<FileInfo, WriteError> {
        let (bytes, sha256) = file.sync()?;
        std::fs::rename(&staged.tmp, &staged.final_path).map_err(|source| WriteError::Path {
            path: staged.final_path.clone(),
            source,
        })?;
        if let Some(dir) = staged.final_path.parent() {
            sync_dir(dir)?;
        }
        Ok(FileInfo {
            path: staged.rel,
            rows,
            bytes,
            sha256,
        })
    }
}

/// fsync a folder so that a rename in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<(), WriteError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| WriteError::Path {
            path: dir.to_owned(),
            source,
        })
}

/// The Hive-style partition of a run: `dt=YYYY-MM-DD/run_id=RUN`.
pub fn partition_dir(dt: &str, run_id: &str) -> String {
    format!("dt={dt}/run_id={run_id}")
}

struct OpenFile {
    staged: Staged,
    writer: Box<dyn RecordWriter>,
    rows: u64,
}

/// One table of one run: part files under `TABLE/dt=…/run_id=…/`, rolled by size.
pub struct TableSink {
    dir: LocalDir,
    rel_dir: String,
    run_id: String,
    format: Format,
    schema: SchemaRef,
    opts: WriteOptions,
    next_part: u32,
    open: Option<OpenFile>,
    files: Vec<FileInfo>,
}

impl TableSink {
    pub fn new(
        dir: LocalDir,
        table: &str,
        partition: &str,
        run_id: &str,
        format: Format,
        schema: SchemaRef,
        opts: WriteOptions,
    ) -> Self {
        TableSink {
            dir,
            rel_dir: format!("{table}/{partition}"),
            run_id: run_id.to_owned(),
            format,
            schema,
            opts,
            next_part: 0,
            open: None,
            files: Vec::new(),
        }
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), WriteError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.open.is_none() {
            self.open = Some(self.begin()?);
        }
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        open.writer.write(batch)?;
        open.rows += batch.num_rows() as u64;
        if open.writer.bytes_written() >= self.opts.max_file_bytes {
            self.close_file()?;
        }
        Ok(())
    }

    fn begin(&mut self) -> Result<OpenFile, WriteError> {
        let rel = format!(
            "{}/part-{:05}-{}.{}",
            self.rel_dir,
            self.next_part,
            self.run_id,
            self.format.extension()
        );
        self.next_part += 1;
        let (staged, file) = self.dir.stage(&rel)?;
        let writer = new_writer(self.format, file, self.schema.clone(), &self.opts)?;
        Ok(OpenFile {
            staged,
            writer,
            rows: 0,
        })
    }

    /// Complete and commit the open part file, if any.
    pub fn close_file(&mut self) -> Result<(), WriteError> {
        if let Some(open) = self.open.take() {
            let file = open.writer.finish()?;
            let info = self.dir.commit(open.staged, file, open.rows)?;
            self.files.push(info);
        }
        Ok(())
    }

    /// Commit what is open. A table that got no rows at all still gets one
    /// empty file, so that readers find its columns.
    pub fn finish(mut self) -> Result<Vec<FileInfo>, WriteError> {
        if self.open.is_none() && self.files.is_empty() {
            self.open = Some(self.begin()?);
        }
        self.close_file()?;
        Ok(self.files)
    }
}

/// The two tables of a run and their row buffers: what the writer task owns.
pub struct Lake {
    kv: TableSink,
    messages: TableSink,
    kv_rows: KvRows,
    msg_rows: MessageRows,
    batch_rows: usize,
    kv_written: u64,
}

impl Lake {
    /// Tables go below `out`, in partition `dt=<dt>/run_id=<run_id>`.
    pub fn new(out: &Path, dt: &str, run_id: &str, format: Format, opts: WriteOptions) -> Self {
        let partition = partition_dir(dt, run_id);
        let dir = LocalDir::new(out);
        Lake {
            kv: TableSink::new(
                dir.clone(),
                "key_values",
                &partition,
                run_id,
                format,
                schema::key_values_schema(),
                opts,
            ),
            messages: TableSink::new(
                dir,
                "messages",
                &partition,
                run_id,
                format,
                schema::messages_schema(),
                opts,
            ),
            kv_rows: KvRows::new(),
            msg_rows: MessageRows::new(),
            batch_rows: opts.batch_rows.max(1),
            kv_written: 0,
        }
    }

    pub fn add_pairs(
        &mut self,
        msg: &MessageRef,
        pairs: &[FetchedPair],
        latest_seq: i64,
        clear_seq: i64,
    ) -> Result<(), WriteError> {
        for p in pairs {
            self.kv_rows.append(msg, p, latest_seq, clear_seq);
            if self.kv_rows.len() >= self.batch_rows {
                self.flush_kv()?;
            }
        }
        Ok(())
    }

    pub fn add_message(&mut self, row: &MessageRow<'_>) -> Result<(), WriteError> {
        self.msg_rows.append(row);
        if self.msg_rows.len() >= self.batch_rows {
            let batch = self.msg_rows.take();
            self.messages.write(&batch)?;
        }
        Ok(())
    }

    fn flush_kv(&mut self) -> Result<(), WriteError> {
        if !self.kv_rows.is_empty() {
            let batch = self.kv_rows.take();
            self.kv_written += batch.num_rows() as u64;
            self.kv.write(&batch)?;
        }
        Ok(())
    }

    /// key_values rows handed to the writer so far.
    pub fn kv_rows(&self) -> u64 {
        self.kv_written + self.kv_rows.len() as u64
    }

    /// Write what is buffered and commit every open file.
    pub fn finish(mut self) -> Result<Vec<FileInfo>, WriteError> {
        self.flush_kv()?;
        if !self.msg_rows.is_empty() {
            let batch = self.msg_rows.take();
            self.messages.write(&batch)?;
        }
        let mut files = self.kv.finish()?;
        files.extend(self.messages.finish()?);
        Ok(files)
    }
}
