//! Writing the data-lake folder: the `RecordWriter` trait with its Parquet and
//! CSV implementations, Hive-style partition folders, part files rolled by
//! size, and the one seam that puts a finished file at its final name
//! (`LakeStore`: a local folder or an object store), so that readers never
//! see a half-written file. Knows nothing about the chat API.

pub(crate) mod csv;
pub(crate) mod local;
pub(crate) mod object;
pub(crate) mod out;
pub(crate) mod parquet;
pub mod schema;
pub mod stats;
pub(crate) mod store;

pub use local::LocalDir;
pub(crate) use object::ObjectLake;
pub use out::{Out, OutError};
pub use store::{LakeStore, Listed, TableRoot};

use crate::api::pairs::PairRef;
use crate::kind::{Kind, MessageId};
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use schema::{KvRows, MessageRow, MessageRows};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// How a Parquet table is laid out: a Delta table (its files plus the
/// `_delta_log` that commits each run), or a plain Hive-style folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    Delta,
    Plain,
}

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
    #[error(transparent)]
    Kind(#[from] crate::kind::KindMismatch),
    /// An object store refused or failed a request: the text names the
    /// URL and what to do, with every credential of the environment taken
    /// out. It is text, not the store's error kept as a source, on purpose:
    /// that error's own text (and its sources') may quote a signed URL or a
    /// key, and a kept source is printed by whatever walks the chain.
    #[error("{0}")]
    Store(String),
    /// A folder msgext must write cannot be created or written.
    #[error("cannot write {what} {}: {source}; give one msgext can write with {setting}", .path.display())]
    Unwritable {
        what: &'static str,
        path: PathBuf,
        setting: &'static str,
        source: std::io::Error,
    },
    /// A Delta table's log could not be read or committed to.
    #[error(transparent)]
    Delta(Box<DeltaError>),
    /// A file that must be created once already exists.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The current tables cannot be brought to one state (a data file or
    /// a run's history gone): exit 1, with the way out.
    #[error(
        "the current tables are damaged: {0}; `msgext export --full` with the same settings rebuilds this app's current tables from a full read of its input (messages it does not list leave them until listed again)"
    )]
    Damaged(String),
}

/// What went wrong with one of the lake's Delta tables (`table::delta`
/// reads and commits them): plain text, as the store's errors are.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// The kernel's error as text, told as the lake's own store errors
    /// are (a hint for what the store refused, credentials taken out): its
    /// store errors quote URLs and a store's answer.
    #[error("{table}: {what}: {detail}")]
    Kernel {
        table: String,
        what: &'static str,
        detail: String,
    },
    #[error(
        "{table} is a Delta table of another schema than msgext's: {differences}; export to another --out, or with --table-format plain"
    )]
    OtherSchema { table: String, differences: String },
    #[error(
        "{table} uses the Delta table feature {feature} (another engine turned it on), which msgext does not read or write; export to another --out, or turn the feature off with the engine that set it"
    )]
    Unsupported { table: String, feature: String },
    #[error("{table}: gave up after {tries} conflicting commits in a row")]
    Conflicts { table: String, tries: usize },
    #[error(
        "{table}: another run of this app changed the app's rows while this run committed; run the same command again"
    )]
    Moved { table: String },
    #[error(
        "{table} holds Parquet files of earlier runs but no Delta log (a lake written with --table-format plain or by msgext before Delta); give --table-format plain to go on writing it so, or export to a new --out"
    )]
    PlainLake { table: String },
    #[error(
        "{table} is a Delta table: Parquet files written beside it with --table-format plain would not be in its log; drop --table-format plain, or export to another --out"
    )]
    IsDelta { table: String },
    #[error(
        "{table} is a Delta table: CSV files written into it would be in no log and no reader would see them; export CSV to another --out, or drop --format csv"
    )]
    CsvIntoDelta { table: String },
}

impl DeltaError {
    /// Another writer changed the files this commit meant to replace.
    pub(crate) fn is_moved(&self) -> bool {
        matches!(self, DeltaError::Moved { .. })
    }

    /// A lake that is not the one this run should write (exit 2), rather
    /// than a failure to read or write it (exit 1).
    pub(crate) fn is_wrong_lake(&self) -> bool {
        matches!(
            self,
            DeltaError::OtherSchema { .. }
                | DeltaError::Unsupported { .. }
                | DeltaError::PlainLake { .. }
                | DeltaError::IsDelta { .. }
                | DeltaError::CsvIntoDelta { .. }
        )
    }
}

impl From<DeltaError> for WriteError {
    fn from(e: DeltaError) -> Self {
        WriteError::Delta(Box::new(e))
    }
}

/// The default of `--store-timeout`, in seconds: long enough to ride out a
/// store's brief throttling (object_store backs off up to 15 s between
/// tries), short enough that a cron run against a store that stopped
/// answering ends within a minute, with the cause.
pub(crate) const DEFAULT_STORE_TIMEOUT_S: u64 = 60;

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
    /// A checkpoint comes when a part file is full, and also after this
    /// many messages, this many WAL bytes, or this long, so that what is
    /// pending (and what a resume replays) stays small however small the
    /// messages.
    pub checkpoint_messages: usize,
    pub checkpoint_log_bytes: u64,
    pub checkpoint_every: std::time::Duration,
    /// An object store's request, its retries included, fails past this.
    pub store_timeout: std::time::Duration,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            max_file_bytes: 128 * 1024 * 1024,
            // Measured (cargo bench --bench throughput): larger row groups
            // raise the peak resident set by about their size.
            row_group_bytes: 2 * 1024 * 1024,
            zstd_level: 1,
            batch_rows: 8192,
            checkpoint_messages: 50_000,
            checkpoint_log_bytes: 64 << 20,
            checkpoint_every: std::time::Duration::from_secs(300),
            store_timeout: std::time::Duration::from_secs(DEFAULT_STORE_TIMEOUT_S),
        }
    }
}

/// A committed file, as listed in summary.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FileInfo {
    /// Relative to the output folder, with `/` separators.
    pub(crate) path: String,
    pub rows: u64,
    pub(crate) bytes: u64,
    pub(crate) sha256: String,
    /// Its columns' statistics, for the Delta log (not in summary.json; a
    /// file listed again after a restart has none, which readers allow).
    #[serde(skip)]
    pub(crate) stats: stats::FileStats,
}

/// A buffered file that counts and hashes what goes through it.
pub struct HashingFile {
    inner: BufWriter<File>,
    hasher: Sha256,
    bytes: u64,
}

impl HashingFile {
    pub(crate) fn new(file: File) -> Self {
        HashingFile {
            inner: BufWriter::with_capacity(256 * 1024, file),
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Flush, fsync, and return (bytes, sha256 hex).
    pub(crate) fn sync(self) -> Result<(u64, String), WriteError> {
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
pub(crate) trait RecordWriter: Send {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), WriteError>;
    /// Bytes written so far (including what is buffered for the file).
    fn bytes_written(&self) -> u64;
    /// Complete the file (footer, buffers) and hand back the file to
    /// commit, with what its format knows of its columns.
    fn finish(self: Box<Self>) -> Result<(HashingFile, stats::FileStats), WriteError>;
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

/// A file being written, not yet visible at its final name.
pub struct Staged {
    /// The local file being written (beside the final one in a local lake,
    /// in the state folder for an object store).
    pub(crate) tmp: PathBuf,
    /// Where it goes, relative to the lake's root.
    pub(crate) rel: String,
}

/// Create the folder `path` goes in.
pub(crate) fn make_parent(path: &Path) -> Result<(), WriteError> {
    match path.parent() {
        Some(dir) => std::fs::create_dir_all(dir).map_err(|source| WriteError::Path {
            path: dir.to_owned(),
            source,
        }),
        None => Ok(()),
    }
}

/// Begin the local file `tmp` that will be published as `rel`.
pub(crate) fn begin_staged(tmp: PathBuf, rel: &str) -> Result<(Staged, HashingFile), WriteError> {
    make_parent(&tmp)?;
    let file = File::create(&tmp).map_err(|source| WriteError::Path {
        path: tmp.clone(),
        source,
    })?;
    Ok((
        Staged {
            tmp,
            rel: rel.to_owned(),
        },
        HashingFile::new(file),
    ))
}

/// The temporary name of a file being written.
pub(crate) fn staging_name(final_name: &str) -> String {
    format!(".{final_name}.inprogress")
}

/// The final name of a temporary one (`None` if `name` is not one).
pub(crate) fn final_name(staging: &str) -> Option<&str> {
    staging.strip_prefix('.')?.strip_suffix(".inprogress")
}

/// Where the file that will be at `final_path` is written meanwhile.
pub(crate) fn staging_path(final_path: &Path) -> PathBuf {
    let name = final_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    final_path.with_file_name(staging_name(&name))
}

/// Write a small file (a report, a marker) the same way as the data files:
/// under its temporary name, fsynced, then renamed into place.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let tmp = staging_path(path);
    let io = |source| WriteError::Path {
        path: tmp.clone(),
        source,
    };
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    publish_staged(&tmp, path)
}

/// Messages as an input CSV (the kind's header, then each one's cells),
/// written whole or not at all: a list an export takes as `--input`.
pub(crate) fn write_input_list(
    path: &Path,
    kind: Kind,
    ids: &[crate::kind::MessageId],
) -> Result<(), WriteError> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    let fail = |e: &dyn std::fmt::Display| WriteError::Store(format!("{}: {e}", path.display()));
    w.write_record(kind.spec().columns())
        .map_err(|e| fail(&e))?;
    for id in ids {
        w.write_record(id.identity().cells())
            .map_err(|e| fail(&e))?;
    }
    let bytes = w.into_inner().map_err(|e| fail(&e))?;
    make_parent(path)?;
    write_atomically(path, &bytes)
}

/// Every table of every kind of message.
pub(crate) fn all_tables() -> impl Iterator<Item = &'static str> {
    Kind::ALL.into_iter().flat_map(|k| k.spec().tables())
}

/// Rename a staged file to its final name and fsync the folder.
pub(crate) fn publish_staged(tmp: &Path, final_path: &Path) -> Result<(), WriteError> {
    std::fs::rename(tmp, final_path).map_err(|source| WriteError::Path {
        path: final_path.to_owned(),
        source,
    })?;
    match final_path.parent() {
        // A bare file name: its folder is the working one.
        Some(dir) if dir.as_os_str().is_empty() => sync_dir(Path::new(".")),
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// A complete, fsynced file under its temporary name, waiting to be published.
pub struct Sealed {
    pub(crate) staged: Staged,
    pub info: FileInfo,
}

/// fsync a folder so that a rename in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), WriteError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| WriteError::Path {
            path: dir.to_owned(),
            source,
        })
}

/// The Hive-style partition of a run: `dt=YYYY-MM-DD/run_id=RUN`.
pub(crate) fn partition_dir(dt: &str, run_id: &str) -> String {
    format!("dt={dt}/run_id={run_id}")
}

struct OpenFile {
    staged: Staged,
    writer: Box<dyn RecordWriter>,
    rows: u64,
    /// `writer.bytes_written()` after the last batch: it only changes when a
    /// batch is written, and asking the Parquet writer walks its columns.
    bytes: u64,
}

/// One table of one run: part files under `TABLE/dt=…/run_id=…/`.
pub(crate) struct TableSink {
    dir: std::sync::Arc<dyn LakeStore>,
    rel_dir: String,
    run_id: String,
    format: Format,
    schema: SchemaRef,
    opts: WriteOptions,
    next_part: u32,
    open: Option<OpenFile>,
}

impl TableSink {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        dir: std::sync::Arc<dyn LakeStore>,
        table: &str,
        partition: &str,
        run_id: &str,
        format: Format,
        schema: SchemaRef,
        opts: WriteOptions,
        first_part: u32,
    ) -> Self {
        TableSink {
            dir,
            rel_dir: format!("{table}/{partition}"),
            run_id: run_id.to_owned(),
            format,
            schema,
            opts,
            next_part: first_part,
            open: None,
        }
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<(), WriteError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.open.is_none() {
            self.open = Some(self.begin()?);
        }
        if let Some(open) = self.open.as_mut() {
            open.writer.write(batch)?;
            open.rows += batch.num_rows() as u64;
            open.bytes = open.writer.bytes_written();
        }
        Ok(())
    }

    /// Bytes in the open part file so far.
    pub(crate) fn open_bytes(&self) -> u64 {
        self.open.as_ref().map_or(0, |o| o.bytes)
    }

    fn begin(&mut self) -> Result<OpenFile, WriteError> {
        let rel = part_path(&self.rel_dir, self.next_part, &self.run_id, self.format);
        self.next_part += 1;
        let (staged, file) = self.dir.stage(&rel)?;
        let writer = new_writer(self.format, file, self.schema.clone(), &self.opts)?;
        Ok(OpenFile {
            staged,
            bytes: writer.bytes_written(),
            writer,
            rows: 0,
        })
    }

    /// Complete the open part file, if one is open
    /// and make it durable under its temporary name.
    pub(crate) fn seal(&mut self) -> Result<Option<Sealed>, WriteError> {
        match self.open.take() {
            None => Ok(None),
            Some(open) => {
                let (file, stats) = open.writer.finish()?;
                Ok(Some(self.dir.seal(open.staged, file, open.rows, stats)?))
            }
        }
    }
}

/// `TABLE/dt=…/run_id=…/part-00007-RUN.parquet`
pub(crate) fn part_path(rel_dir: &str, part: u32, run_id: &str, format: Format) -> String {
    format!("{rel_dir}/part-{part:05}-{run_id}.{}", format.extension())
}

/// The part number of a file name made by `part_path`.
pub(crate) fn part_number(file_name: &str) -> Option<u32> {
    file_name.strip_prefix("part-")?.get(..5)?.parse().ok()
}

/// The two tables of a run and their row buffers: what the writer task owns.
/// What every row and file of a run shares: its app, and its partition
/// `dt=<dt>/run_id=<run_id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunKey<'a> {
    pub sdkappid: u64,
    pub dt: &'a str,
    pub run_id: &'a str,
}

pub struct RunTables {
    kind: Kind,
    kv: TableSink,
    messages: TableSink,
    kv_rows: KvRows,
    msg_rows: MessageRows,
    batch_rows: usize,
    batch_bytes: usize,
    opts: WriteOptions,
}

impl RunTables {
    /// The tables of `kind` go into the lake `dir`, in partition
    /// `dt=<dt>/run_id=<run_id>`; part numbers start at `first_part` (after
    /// those of an earlier attempt).
    pub fn new(
        dir: std::sync::Arc<dyn LakeStore>,
        kind: Kind,
        key: RunKey<'_>,
        format: Format,
        opts: WriteOptions,
        first_part: u32,
    ) -> Self {
        let RunKey {
            sdkappid,
            dt,
            run_id,
        } = key;
        let partition = partition_dir(dt, run_id);
        let sink = |table: &str, schema| {
            TableSink::new(
                dir.clone(),
                table,
                &partition,
                run_id,
                format,
                schema,
                opts,
                first_part,
            )
        };
        RunTables {
            kind,
            kv: sink(kind.spec().tables()[0], schema::key_values_schema(kind)),
            messages: sink(kind.spec().tables()[1], schema::messages_schema(kind)),
            kv_rows: KvRows::new(kind, sdkappid),
            msg_rows: MessageRows::new(kind, sdkappid),
            batch_rows: opts.batch_rows.max(1),
            // Hand rows to the file often enough that its size is known.
            batch_bytes: (opts.max_file_bytes / 8).clamp(1, 4 << 20) as usize,
            opts,
        }
    }

    pub fn add_pairs<'a>(
        &mut self,
        msg: &MessageId,
        pairs: impl IntoIterator<Item = PairRef<'a>>,
        latest_seq: i64,
        clear_seq: i64,
    ) -> Result<(), WriteError> {
        for p in pairs {
            self.kv_rows.append(msg, p, latest_seq, clear_seq)?;
            if self.kv_rows.len() >= self.batch_rows || self.kv_rows.bytes() >= self.batch_bytes {
                self.flush_kv()?;
            }
        }
        Ok(())
    }

    pub fn add_message(&mut self, row: &MessageRow<'_>) -> Result<(), WriteError> {
        self.msg_rows.append(row)?;
        if self.msg_rows.len() >= self.batch_rows {
            let batch = self.msg_rows.take();
            self.messages.write(&batch)?;
        }
        Ok(())
    }

    fn flush_kv(&mut self) -> Result<(), WriteError> {
        if !self.kv_rows.is_empty() {
            let batch = self.kv_rows.take();
            self.kv.write(&batch)?;
        }
        Ok(())
    }

    /// Whether an open part (key_values or messages) has reached the file size limit.
    pub fn part_full(&self) -> bool {
        self.kv.open_bytes() >= self.opts.max_file_bytes
            || self.messages.open_bytes() >= self.opts.max_file_bytes
    }

    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    pub(crate) fn options(&self) -> &WriteOptions {
        &self.opts
    }

    /// Write what is buffered and seal the open part of each table; a table
    /// without rows since the last seal gets no file (no data file is empty).
    pub fn seal(&mut self) -> Result<Vec<Sealed>, WriteError> {
        self.flush_kv()?;
        if !self.msg_rows.is_empty() {
            let batch = self.msg_rows.take();
            self.messages.write(&batch)?;
        }
        let mut out = Vec::new();
        out.extend(self.kv.seal()?);
        out.extend(self.messages.seal()?);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_round_trip_and_paths_map_to_tables() {
        for name in ["part-00000-r.parquet", "errors.csv", "_SUCCESS"] {
            let staged = staging_name(name);
            assert!(staged.starts_with('.') && staged.ends_with(".inprogress"));
            assert_eq!(final_name(&staged), Some(name));
        }
        assert_eq!(final_name("part-00000-r.parquet"), None);
        assert_eq!(
            staging_path(Path::new("a/b/x.csv")),
            Path::new("a/b/.x.csv.inprogress")
        );
    }
}
