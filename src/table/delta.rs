//! The lake's Delta tables through `delta_kernel` (delta-io's Rust kernel)
//! on msgext's own object store; nothing of the log is written by hand.
//! `history` commits a run's files to the history tables with it, the
//! current tables replace an app's rows with it.
//!
//! Exactly once: a commit carries a Delta `txn` action whose application
//! id names the run (`msgext-run-<run_id>`). Before committing, the run
//! reads the table's transaction ids; a run already there (it crashed after
//! its commit, before `_SUCCESS`) is not committed again.
//!
//! Several writers: a log entry is created only if absent (object_store's
//! `PutMode::Create`, through the kernel's file-system committer); on a
//! conflict the run reads the table again and commits at the next version.
//! Every `CHECKPOINT_EVERY` versions a checkpoint keeps reads fast.

use crate::write::stats::FileStats;
use crate::write::{DeltaError, LakeStore, TableRoot, WriteError};
use arrow_array::builder::{MapBuilder, MapFieldNames, StringBuilder};
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use delta_kernel::Engine;
use delta_kernel::FilteredEngineData;
use delta_kernel::committer::FileSystemCommitter;
use delta_kernel::engine::arrow_conversion::TryFromArrow;
use delta_kernel::engine::arrow_data::ArrowEngineData;
use delta_kernel::schema::{DataType as KernelType, StructField, StructType};
use delta_kernel::snapshot::{Snapshot, SnapshotRef};
use delta_kernel::transaction::data_layout::DataLayout;
use delta_kernel::transaction::{CommitResult, UpdateTableOperation, create_table::create_table};
use reqwest::Url;
use std::sync::Arc;

/// The partition columns of every table, in path order (`dt=…/run_id=…/`).
pub const PARTITION_COLUMNS: [&str; 2] = ["dt", "run_id"];

/// The kernel logs the errors it returns; msgext tells them once, with
/// what to do: its log target is off unless `RUST_LOG` names it.
pub(crate) const QUIET_LOG: &str = "delta_kernel";

/// A checkpoint every this many versions, as Spark and delta-rs do.
pub(crate) const CHECKPOINT_EVERY: u64 = 100;

/// Conflicting commits in a row before the run gives up (each one means
/// another writer committed in between; 50 is far beyond any real fleet).
const MAX_CONFLICTS: usize = 50;

/// One data file, as the log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// Relative to the table, `dt=…/run_id=…/part-….parquet`.
    pub path: String,
    /// The values of the table's partition columns, in their order.
    pub partition: Vec<String>,
    pub bytes: u64,
    pub rows: u64,
    /// Its columns' statistics (those of `TableSpec::stats_columns` go to the log).
    pub stats: FileStats,
}

/// A file in a table's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LiveFile {
    /// Relative to the table, decoded.
    pub(crate) path: String,
    /// From the log's stats, when it has them.
    pub(crate) rows: Option<u64>,
    /// The file's size, as the log gives it.
    pub(crate) bytes: u64,
}

/// A table as the log knows it: its schema and partition columns.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub schema: StructType,
    pub partitions: &'static [&'static str],
    /// The columns whose bounds and null counts the log carries per file
    /// (the identity columns: engines skip the files a filter on them misses).
    pub stats_columns: Vec<String>,
}

/// What one commit does to a table: files added, and files (their paths
/// as the log holds them) removed.
#[derive(Debug, Clone, Copy)]
pub struct Changes<'a> {
    pub adds: &'a [DataFile],
    pub removes: &'a [String],
}

/// A writer's `txn` action: a commit carries it, and a commit whose
/// application the log holds at this version or later is not made again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Txn {
    pub(crate) app_id: String,
    pub(crate) version: i64,
}

/// What a run's commit says of it (in `commitInfo`).
#[derive(Debug, Clone)]
pub struct RunCommit<'a> {
    pub run_id: &'a str,
    pub sdkappid: u64,
    pub status: &'a str,
    pub messages: u64,
    pub kv_rows: u64,
}

/// What committing a run to one table did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// At this version of the table's log.
    At(u64),
    /// The run was already in the table (committed before a crash).
    Already(u64),
}

/// The lake's Delta tables, through the kernel's default engine.
pub struct DeltaLake {
    engine: Arc<dyn Engine>,
    root: Url,
    display_root: String,
    _runtime: KernelRuntime,
}

/// The runtime the kernel's engine runs its I/O on: its own, with two
/// threads, since writing a checkpoint waits on tasks of its own (on the
/// kernel's one-thread background executor it never ends).
struct KernelRuntime(Option<tokio::runtime::Runtime>);

impl Drop for KernelRuntime {
    fn drop(&mut self) {
        // The run ends on an async thread, where a runtime may not block
        // to shut down; nothing of the kernel's is pending by then.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl DeltaLake {
    pub fn open(root: TableRoot) -> std::io::Result<Self> {
        use delta_kernel_default_engine::DefaultEngineBuilder;
        use delta_kernel_default_engine::executor::tokio::TokioMultiThreadExecutor;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("msgext-delta")
            .enable_all()
            .build()?;
        let executor = Arc::new(TokioMultiThreadExecutor::new(runtime.handle().clone()));
        let engine = DefaultEngineBuilder::new(root.store)
            .with_task_executor(executor)
            .build();
        let display_root = root.url.to_string();
        Ok(DeltaLake {
            engine: Arc::new(engine),
            root: root.url,
            display_root,
            _runtime: KernelRuntime(Some(runtime)),
        })
    }

    /// The URL of a table, `<root>/<table>/`.
    pub(crate) fn table_url(&self, table: &str) -> Url {
        // A table name is one plain path segment (`key_values`).
        let mut url = self.root.clone();
        url.set_path(&format!("{}{table}/", self.root.path()));
        url
    }

    fn name(&self, table: &str) -> String {
        format!("{}{table}", self.display_root)
    }

    pub(super) fn kernel(
        &self,
        table: &str,
        what: &'static str,
    ) -> impl Fn(delta_kernel::KernelError) -> DeltaError {
        let table = self.name(table);
        move |source| DeltaError::Kernel {
            table: table.clone(),
            what,
            detail: crate::write::object::explain(&source.to_string()),
        }
    }

    /// The table's latest snapshot (it has a log: `has_log`).
    /// The kernel's engine, for a test that scans as a reader would.
    #[cfg(test)]
    pub(crate) fn engine(&self) -> &dyn Engine {
        self.engine.as_ref()
    }

    pub fn snapshot(&self, table: &str) -> Result<SnapshotRef, DeltaError> {
        Snapshot::builder_for(self.table_url(table).as_str())
            .build(self.engine.as_ref())
            .map_err(self.kernel(table, "cannot read the table's log"))
    }

    /// The table as it stood at `version`.
    pub(crate) fn snapshot_at(&self, table: &str, version: u64) -> Result<SnapshotRef, DeltaError> {
        Snapshot::builder_for(self.table_url(table).as_str())
            .at_version(version)
            .build(self.engine.as_ref())
            .map_err(self.kernel(table, "cannot read an earlier version of the table's log"))
    }

    /// Whether the table's log holds transaction `app_id` (a run committed).
    pub(crate) fn has_transaction(
        &self,
        table: &str,
        snapshot: &Snapshot,
        app_id: &str,
    ) -> Result<bool, DeltaError> {
        Ok(self.txn_version(table, snapshot, app_id)?.is_some())
    }

    /// The version of transaction `app_id` the table's log holds, if any.
    pub(crate) fn txn_version(
        &self,
        table: &str,
        snapshot: &Snapshot,
        app_id: &str,
    ) -> Result<Option<i64>, DeltaError> {
        snapshot
            .get_app_id_version(app_id, self.engine.as_ref())
            .map_err(self.kernel(table, "cannot read the table's transactions"))
    }

    /// Refuse a table whose log holds another schema than `want`, or that
    /// uses a reader feature msgext's reads by file do not follow
    /// (deletion vectors, column mapping: its rows would be misread).
    pub(crate) fn check_schema(
        &self,
        table: &str,
        snapshot: &Snapshot,
        want: &StructType,
    ) -> Result<(), DeltaError> {
        if let Some(feature) = unsupported_feature(snapshot) {
            return Err(DeltaError::Unsupported {
                table: self.name(table),
                feature,
            });
        }
        let have = snapshot.schema();
        match schema_differences(&have, want) {
            None => Ok(()),
            Some(differences) => Err(DeltaError::OtherSchema {
                table: self.name(table),
                differences,
            }),
        }
    }

    /// Add the run's files to the table in one commit, exactly once.
    pub fn commit_run(
        &self,
        table: &str,
        spec: &TableSpec,
        changes: Changes<'_>,
        run: &RunCommit<'_>,
        snapshot: Option<SnapshotRef>,
    ) -> Result<Committed, DeltaError> {
        self.commit_run_with(table, spec, changes, (run, &[]), snapshot)
    }

    /// `commit_run`, the commit also carrying the `txn`s of `also` (each
    /// at its version, or the log's when that is higher: a position never
    /// goes back).
    pub(crate) fn commit_run_with(
        &self,
        table: &str,
        spec: &TableSpec,
        changes: Changes<'_>,
        (run, also): (&RunCommit<'_>, &[Txn]),
        snapshot: Option<SnapshotRef>,
    ) -> Result<Committed, DeltaError> {
        let mut txns = vec![Txn {
            app_id: app_id(run.run_id),
            version: 1,
        }];
        txns.extend(also.iter().cloned());
        self.commit_txns(table, spec, changes, (run, &txns), snapshot)
    }

    /// Commit `changes` with the `txns`, each at its version or the log's
    /// when that is higher; made whatever the log holds (vacuum's drop of
    /// old runs: what it removes is read again after a conflict).
    pub(crate) fn commit_moving(
        &self,
        table: &str,
        spec: &TableSpec,
        changes: Changes<'_>,
        (run, txns): (&RunCommit<'_>, &[Txn]),
        snapshot: Option<SnapshotRef>,
    ) -> Result<Committed, DeltaError> {
        let mut txns = txns.to_vec();
        if let Some(s) = &snapshot {
            self.raise(table, s, &mut txns)?;
        }
        match self.try_commit(table, spec, changes, (run, &txns), snapshot)? {
            Ok(version) => {
                self.checkpoint_if_due(table, version);
                Ok(Committed::At(version))
            }
            Err(()) => Err(DeltaError::Moved {
                table: self.name(table),
            }),
        }
    }

    /// Each `txn` at its version, or the log's when that is higher: a
    /// position never goes back.
    fn raise(&self, table: &str, snapshot: &Snapshot, txns: &mut [Txn]) -> Result<(), DeltaError> {
        for t in txns {
            let held = self.txn_version(table, snapshot, &t.app_id)?;
            t.version = t.version.max(held.unwrap_or(i64::MIN));
        }
        Ok(())
    }

    /// The paths (decoded, relative to the table) the commits `from..=to`
    /// remove, read through the kernel's commit range.
    pub(crate) fn removed_paths(
        &self,
        table: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<String>, DeltaError> {
        use delta_kernel::commit_range::{CommitRange, DeltaAction};
        let fail = self.kernel(table, "cannot read the table's commits");
        let range = CommitRange::builder_for(self.table_url(table).as_str(), from)
            .with_end_version(to)
            .build(self.engine.as_ref())
            .map_err(&fail)?;
        let mut out = Vec::new();
        let commits = range
            .commits(self.engine.clone(), None, &[DeltaAction::Remove])
            .map_err(&fail)?;
        for commit in commits {
            let commit = commit.map_err(&fail)?;
            for data in commit.get_actions(self.engine.as_ref()).map_err(&fail)? {
                let data =
                    ArrowEngineData::try_from_engine_data(data.map_err(&fail)?).map_err(&fail)?;
                out.extend(remove_paths(data.record_batch()).map_err(&fail)?);
            }
        }
        Ok(out)
    }

    /// A checkpoint at the table's latest version (none is written when
    /// one is there); the version.
    pub(crate) fn checkpoint_latest(&self, table: &str) -> Result<u64, DeltaError> {
        let snapshot = self.snapshot(table)?;
        snapshot
            .checkpoint(self.engine.as_ref(), None)
            .map_err(self.kernel(table, "cannot write a checkpoint"))?;
        Ok(snapshot.version())
    }

    /// Commit `changes` with transaction `txn`, unless the table's log
    /// already holds that application at `txn.version` or later.
    pub(crate) fn commit_txn(
        &self,
        table: &str,
        spec: &TableSpec,
        changes: Changes<'_>,
        (run, txn): (&RunCommit<'_>, &Txn),
        snapshot: Option<SnapshotRef>,
    ) -> Result<Committed, DeltaError> {
        self.commit_txns(
            table,
            spec,
            changes,
            (run, std::slice::from_ref(txn)),
            snapshot,
        )
    }

    /// Commit with the `txns` (the first decides whether the commit is
    /// already in the log; the others move to their version at least).
    fn commit_txns(
        &self,
        table: &str,
        spec: &TableSpec,
        changes: Changes<'_>,
        (run, txns): (&RunCommit<'_>, &[Txn]),
        mut snapshot: Option<SnapshotRef>,
    ) -> Result<Committed, DeltaError> {
        for _ in 0..MAX_CONFLICTS {
            let mut txns = txns.to_vec();
            if let Some(s) = &snapshot {
                if self.txn_version(table, s, &txns[0].app_id)? >= Some(txns[0].version) {
                    return Ok(Committed::Already(s.version()));
                }
                self.raise(table, s, &mut txns[1..])?;
            }
            match self.try_commit(table, spec, changes, (run, &txns), snapshot.clone())? {
                Ok(version) => {
                    self.checkpoint_if_due(table, version);
                    return Ok(Committed::At(version));
                }
                // Another writer committed (or created the table) first.
                Err(()) => {
                    snapshot = Some(self.snapshot(table)?);
                }
            }
        }
        Err(DeltaError::Conflicts {
            table: self.name(table),
            tries: MAX_CONFLICTS,
        })
    }

    /// One attempt: `Ok(Err(()))` when another writer took the version.
    fn try_commit(
        &self,
        table: &str,
        spec: &TableSpec,
        changes: Changes<'_>,
        (run, txns): (&RunCommit<'_>, &[Txn]),
        snapshot: Option<SnapshotRef>,
    ) -> Result<Result<u64, ()>, DeltaError> {
        let engine = self.engine.as_ref();
        let fail = self.kernel(table, "cannot commit the run");
        let info = engine_info();
        let committer = Box::new(FileSystemCommitter::new());
        let files = changes.adds;
        let adds = add_files_batch(files, spec).map_err(&fail)?;
        let (params, metrics) = commit_info(files, run);
        let result = match snapshot {
            None => {
                if !changes.removes.is_empty() {
                    return Err(DeltaError::Moved {
                        table: self.name(table),
                    });
                }
                return self.try_create(table, spec, adds, txns, (params, metrics));
            }
            Some(s) => {
                let removes = self.selected_files(table, &s, changes.removes)?;
                // A table written by an earlier msgext lacks the nullable
                // columns added since: this commit adds them (schema evolution).
                let have = s.schema();
                let mut builder = s.update_table(UpdateTableOperation::Write, info, true);
                let mut evolves = false;
                for f in spec
                    .schema
                    .fields()
                    .filter(|f| have.field(f.name()).is_none())
                {
                    builder = builder.add_column(f.clone());
                    evolves = true;
                }
                // A blind append adds files and nothing else.
                let builder = match removes.is_empty() && !evolves && !files.is_empty() {
                    true => builder.with_blind_append(),
                    false => builder,
                };
                let mut txn = (txns.iter())
                    .fold(builder, |b, t| {
                        b.with_transaction_id(t.app_id.clone(), t.version)
                    })
                    .with_operation_parameters(params)
                    .with_operation_metrics(metrics)
                    .build(engine, committer)
                    .map_err(&fail)?;
                txn.add_files(adds);
                for r in removes {
                    txn.remove_files(r);
                }
                committed(txn.commit(engine)).map_err(&fail)?
            }
        };
        Ok(result)
    }

    /// The first commit of a table: `Ok(Err(()))` when another writer created it first.
    fn try_create(
        &self,
        table: &str,
        spec: &TableSpec,
        adds: Box<ArrowEngineData>,
        txns: &[Txn],
        (params, metrics): (Entries<3>, Entries<5>),
    ) -> Result<Result<u64, ()>, DeltaError> {
        let engine = self.engine.as_ref();
        let fail = self.kernel(table, "cannot commit the run");
        let layout = DataLayout::partitioned(spec.partitions.iter().copied());
        let schema = Arc::new(spec.schema.clone());
        let builder = create_table(self.table_url(table).as_str(), schema, engine_info(), true)
            .with_data_layout(layout);
        let built = (txns.iter())
            .fold(builder, |b, t| {
                b.with_transaction_id(t.app_id.clone(), t.version)
            })
            .with_operation_parameters(params)
            .with_operation_metrics(metrics)
            .build(engine, Box::new(FileSystemCommitter::new()));
        let mut txn = match built {
            // Another writer created it since this one looked.
            Err(delta_kernel::KernelError::TableAlreadyExistsAtPath(_)) => return Ok(Err(())),
            other => other.map_err(&fail)?,
        };
        txn.add_files(adds);
        committed(txn.commit(engine)).map_err(&fail)
    }

    /// The live files of a table, as the kernel's scan-file visitor gives
    /// them: `each` is called with each one's path as the log holds it
    /// (percent-encoded) and its row count (from the log's stats), and says
    /// whether to keep it selected. The scan's batches with a file selected
    /// come back, for `remove_files`.
    fn scan_files(
        &self,
        table: &str,
        snapshot: &SnapshotRef,
        mut each: impl FnMut(&str, Option<u64>, u64) -> bool,
    ) -> Result<Vec<FilteredEngineData>, DeltaError> {
        let fail = self.kernel(table, "cannot list the table's files");
        let scan = snapshot.clone().scan_builder().build().map_err(&fail)?;
        let mut out = Vec::new();
        for meta in scan.scan_metadata(self.engine.as_ref()).map_err(&fail)? {
            let meta = meta.map_err(&fail)?;
            let visited: Vec<(String, Option<u64>, u64)> = meta
                .visit_scan_files(Vec::new(), |files, f| {
                    let size = u64::try_from(f.size).unwrap_or(0);
                    files.push((f.path, f.stats.map(|s| s.num_records), size))
                })
                .map_err(&fail)?;
            let (data, mut selected) = meta.scan_files.into_parts();
            selected.resize(data.len(), true);
            reselect(&mut selected, visited, &mut each)
                .map_err(|why| fail(delta_kernel::KernelError::generic(why)))?;
            if selected.contains(&true) {
                out.push(FilteredEngineData::try_new(data, selected).map_err(&fail)?);
            }
        }
        Ok(out)
    }

    /// The live files whose paths (as the log holds them) start with
    /// `prefix`: path decoded, rows (as the log's stats say).
    pub(crate) fn files_under(
        &self,
        table: &str,
        snapshot: &SnapshotRef,
        prefix: &str,
    ) -> Result<Vec<LiveFile>, DeltaError> {
        let mut out = Vec::new();
        self.scan_files(table, snapshot, |path, rows, bytes| {
            if let Some(p) = decode_path(path).filter(|p| p.starts_with(prefix)) {
                out.push(LiveFile {
                    path: p,
                    rows,
                    bytes,
                });
            }
            false
        })?;
        Ok(out)
    }

    /// The live files of run `run_id` in a history table (`dt=…/run_id=<run_id>/…`).
    pub(crate) fn run_files(
        &self,
        table: &str,
        snapshot: &SnapshotRef,
        run_id: &str,
    ) -> Result<Vec<LiveFile>, DeltaError> {
        let folder = format!("run_id={run_id}");
        let files = self.files_under(table, snapshot, "")?;
        Ok(files
            .into_iter()
            .filter(|f| f.path.split('/').nth(1) == Some(folder.as_str()))
            .collect())
    }

    /// The scan rows of `paths` (decoded), to remove them; every one must
    /// still be live, or another writer changed them meanwhile.
    fn selected_files(
        &self,
        table: &str,
        snapshot: &SnapshotRef,
        paths: &[String],
    ) -> Result<Vec<FilteredEngineData>, DeltaError> {
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: std::collections::HashSet<&str> = paths.iter().map(String::as_str).collect();
        let mut found = 0usize;
        let out = self.scan_files(table, snapshot, |path, _, _| {
            let hit = decode_path(path).is_some_and(|p| wanted.contains(p.as_str()));
            found += usize::from(hit);
            hit
        })?;
        if found != wanted.len() {
            return Err(DeltaError::Moved {
                table: self.name(table),
            });
        }
        Ok(out)
    }

    /// A checkpoint at every `CHECKPOINT_EVERY`th version. A failed one
    /// costs readers speed, not data: it is logged, not fatal.
    fn checkpoint_if_due(&self, table: &str, version: u64) {
        if version == 0 || !version.is_multiple_of(CHECKPOINT_EVERY) {
            return;
        }
        let written = Snapshot::builder_for(self.table_url(table).as_str())
            .at_version(version)
            .build(self.engine.as_ref())
            .and_then(|s| s.checkpoint(self.engine.as_ref(), None));
        if let Err(e) = written {
            tracing::warn!(table, version, error = %e, "could not write a checkpoint");
        }
    }
}

/// The decoded `remove.path`s of a batch of a commit's actions.
fn remove_paths(batch: &RecordBatch) -> Result<Vec<String>, delta_kernel::KernelError> {
    let bad = |why: &str| delta_kernel::KernelError::generic(format!("a remove action {why}"));
    let Some(removes) = batch.column_by_name("remove") else {
        return Ok(Vec::new());
    };
    let removes = (removes.as_any())
        .downcast_ref::<arrow_array::StructArray>()
        .ok_or_else(|| bad("is not a struct"))?;
    let paths = (removes.column_by_name("path"))
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| bad("has no path"))?;
    let mut out = Vec::new();
    for i in (0..removes.len()).filter(|i| removes.is_valid(*i)) {
        let path =
            decode_path(paths.value(i)).ok_or_else(|| bad("has a path msgext cannot decode"))?;
        out.push(path);
    }
    Ok(out)
}

/// Whether `table` has a Delta log.
pub(crate) fn has_log(lake: &dyn LakeStore, table: &str) -> Result<bool, WriteError> {
    // A commit or checkpoint, not a writer's staging file of its first
    // commit (`00000000000000000000.json#1` while it is put-if-absent).
    let entry = |p: &String| {
        let name = p.rsplit('/').next().unwrap_or(p);
        name.ends_with(".json") || name.ends_with(".parquet") || name == "_last_checkpoint"
    };
    Ok(lake.list(&format!("{table}/_delta_log"))?.iter().any(entry))
}

/// What a run's commit tells in `commitInfo`: its parameters and metrics.
type Entries<const N: usize> = [(&'static str, Option<String>); N];

fn commit_info(files: &[DataFile], run: &RunCommit<'_>) -> (Entries<3>, Entries<5>) {
    let sum = |f: fn(&DataFile) -> u64| Some(files.iter().map(f).sum::<u64>().to_string());
    let params = [
        ("runId", Some(run.run_id.to_owned())),
        ("sdkappid", Some(run.sdkappid.to_string())),
        ("status", Some(run.status.to_owned())),
    ];
    let metrics = [
        ("numFiles", Some(files.len().to_string())),
        ("numOutputRows", sum(|f| f.rows)),
        ("numOutputBytes", sum(|f| f.bytes)),
        ("messages", Some(run.messages.to_string())),
        ("kvRows", Some(run.kv_rows.to_string())),
    ];
    (params, metrics)
}

/// A commit's outcome: its version, or `Err(())` when another writer took
/// that version. The kernel reads a lost put-if-absent as a conflict only
/// when the store says "already exists" (local disks, GCS, Azure); S3
/// answers 412 Precondition Failed, which is the same thing.
fn committed<S>(
    result: delta_kernel::KernelResult<CommitResult<S>>,
) -> delta_kernel::KernelResult<Result<u64, ()>> {
    match result {
        Ok(CommitResult::Committed(c)) => Ok(Ok(c.commit_version())),
        Ok(CommitResult::Conflicted(_)) => Ok(Err(())),
        // The store failed the write, its own retries spent: the run fails
        // (the same command commits it later).
        Ok(CommitResult::Retryable(r)) => Err(r.error),
        Err(delta_kernel::KernelError::ObjectStore(object_store::Error::Precondition {
            ..
        })) => Ok(Err(())),
        Err(e) => Err(e),
    }
}

/// The first reader feature of the table that msgext does not handle:
/// only those that change nothing for a reader of whole Parquet files
/// by the log's paths are accepted.
fn unsupported_feature(snapshot: &Snapshot) -> Option<String> {
    use delta_kernel::table_features::TableFeature;
    let protocol = snapshot.table_configuration().protocol();
    if protocol.min_reader_version() == 2 {
        return Some("columnMapping".into());
    }
    let harmless = [
        TableFeature::TimestampWithoutTimezone,
        TableFeature::V2Checkpoint,
        TableFeature::VacuumProtocolCheck,
    ];
    protocol
        .reader_features()
        .unwrap_or_default()
        .iter()
        .find(|f| !harmless.contains(f))
        .map(|f| f.to_string())
}

/// The application id of a run's `txn` action.
pub(crate) fn app_id(run_id: &str) -> String {
    format!("msgext-run-{run_id}")
}

/// `msgext/<version>`, the log's `engineInfo`.
fn engine_info() -> String {
    format!("msgext/{}", env!("CARGO_PKG_VERSION"))
}

/// A table's Delta schema: its data files' columns, then the partition
/// columns (strings, as in the paths).
pub fn table_schema(data: &Schema) -> Result<StructType, delta_kernel::KernelError> {
    let columns = StructType::try_from_arrow(data)?;
    let partitions = PARTITION_COLUMNS
        .iter()
        .map(|c| StructField::not_null(*c, KernelType::STRING));
    StructType::try_new(columns.fields().cloned().chain(partitions))
}

/// A table partitioned by `sdkappid` (the current tables): that column
/// (int64) first, then the data files' columns.
pub(crate) fn app_table_schema(data: &Schema) -> Result<StructType, delta_kernel::KernelError> {
    let columns = StructType::try_from_arrow(data)?;
    let app = StructField::not_null("sdkappid", KernelType::LONG);
    StructType::try_new(std::iter::once(app).chain(columns.fields().cloned()))
}

/// The columns that differ between a table's schema and msgext's: missing,
/// extra, or of another type. `None` when they match.
pub(crate) fn schema_differences(have: &StructType, want: &StructType) -> Option<String> {
    let mut out = Vec::new();
    for w in want.fields() {
        match have.field(w.name()) {
            // A column a newer msgext added: the commit adds it to the table.
            None if w.is_nullable() => {}
            None => out.push(format!("no column {}", w.name())),
            Some(h) if h.data_type() != w.data_type() => out.push(format!(
                "column {} is {} (msgext writes {})",
                w.name(),
                h.data_type(),
                w.data_type()
            )),
            Some(_) => {}
        }
    }
    for h in have.fields() {
        if want.field(h.name()).is_none() {
            out.push(format!("extra column {}", h.name()));
        }
    }
    (!out.is_empty()).then(|| out.join(", "))
}

/// The scan-file visitor calls back for the selected rows, in order: each
/// selected row keeps its place if `each` says so. A count that differs
/// (a selected row the visitor skipped) is an error, never a shifted
/// selection: `remove_files` would then drop another file than the one meant.
fn reselect(
    selected: &mut [bool],
    visited: Vec<(String, Option<u64>, u64)>,
    each: &mut impl FnMut(&str, Option<u64>, u64) -> bool,
) -> Result<(), String> {
    let rows = selected.iter().filter(|s| **s).count();
    if rows != visited.len() {
        return Err(format!(
            "the scan selected {rows} rows but visited {} files",
            visited.len()
        ));
    }
    let mut visited = visited.into_iter();
    for sel in selected.iter_mut().filter(|s| **s) {
        *sel = (visited.next()).is_some_and(|(path, rows, bytes)| each(&path, rows, bytes));
    }
    Ok(())
}

/// The `add_files` batch of a run's files: path (percent-encoded),
/// partition values, size, modification time, and their stats.
fn add_files_batch(
    files: &[DataFile],
    spec: &TableSpec,
) -> Result<Box<ArrowEngineData>, delta_kernel::KernelError> {
    let now = chrono::Utc::now().timestamp_millis();
    let names = MapFieldNames {
        entry: "key_value".into(),
        key: "key".into(),
        value: "value".into(),
    };
    let mut partitions = MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new());
    for f in files {
        for (k, v) in spec.partitions.iter().zip(&f.partition) {
            partitions.keys().append_value(k);
            partitions.values().append_value(v);
        }
        partitions.append(true)?;
    }
    let partitions = Arc::new(partitions.finish());
    let stats = super::stats::stats_array(files, spec)?;
    let entry = DataType::Struct(
        vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Utf8, true),
        ]
        .into(),
    );
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new(
            "partitionValues",
            DataType::Map(Arc::new(Field::new("key_value", entry, false)), false),
            false,
        ),
        Field::new("size", DataType::Int64, false),
        Field::new("modificationTime", DataType::Int64, false),
        Field::new("stats", stats.data_type().clone(), true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            files.iter().map(|f| encode_path(&f.path)),
        )),
        partitions,
        Arc::new(Int64Array::from_iter_values(
            files.iter().map(|f| f.bytes as i64),
        )),
        Arc::new(Int64Array::from_iter_values(files.iter().map(|_| now))),
        Arc::new(stats),
    ];
    let batch = RecordBatch::try_new(schema, columns)?;
    Ok(Box::new(ArrowEngineData::new(batch)))
}

/// A path as `encode_path` wrote it, decoded (`None`: not UTF-8 or a bad escape).
pub(crate) fn decode_path(path: &str) -> Option<String> {
    let mut out = Vec::with_capacity(path.len());
    let mut bytes = path.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// A relative path as the log records it: percent-encoded but for the
/// characters that need none, `/` included.
pub(crate) fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' | b'=' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each selected row gets the verdict on its own file; a visitor that
    /// skipped a selected row is an error, not a selection one row off.
    #[test]
    fn a_scan_selection_follows_its_files_or_fails() {
        let files = |names: &[&str]| -> Vec<(String, Option<u64>, u64)> {
            names.iter().map(|n| (n.to_string(), Some(1), 10)).collect()
        };
        let mut keep_b = |path: &str, _: Option<u64>, _: u64| path == "b";
        let mut selected = vec![true, false, true, true];
        reselect(&mut selected, files(&["a", "b", "c"]), &mut keep_b).unwrap();
        assert_eq!(selected, [false, false, true, false]);
        let mut selected = vec![true, false, true, true];
        let short = reselect(&mut selected, files(&["a", "b"]), &mut keep_b);
        assert!(short.unwrap_err().contains("selected 3 rows but visited 2"));
    }
    use crate::kind::Kind;

    /// A local lake's Delta side, for a test, with its table's folder
    /// (a run's files are in it before its commit).
    fn local(dir: &std::path::Path) -> DeltaLake {
        std::fs::create_dir_all(dir.join("kv")).unwrap();
        DeltaLake::open(crate::write::LocalDir::new(dir).table_root().unwrap()).unwrap()
    }

    fn spec() -> TableSpec {
        TableSpec {
            schema: table_schema(&crate::write::schema::key_values_schema(Kind::OneToOne)).unwrap(),
            partitions: &PARTITION_COLUMNS,
            stats_columns: Kind::OneToOne.identity_names(),
        }
    }

    fn run(id: &str) -> (Vec<DataFile>, RunCommit<'_>) {
        let file = DataFile {
            path: format!("dt=2026-12-02/run_id={id}/part-00000-{id}.parquet"),
            partition: vec!["2026-12-02".into(), id.into()],
            bytes: 10,
            rows: 1,
            stats: Vec::new(),
        };
        let commit = RunCommit {
            run_id: id,
            sdkappid: 1,
            status: "complete",
            messages: 1,
            kv_rows: 1,
        };
        (vec![file], commit)
    }

    fn commit(d: &DeltaLake, id: &str, snapshot: Option<SnapshotRef>) -> Committed {
        let (files, c) = run(id);
        let changes = Changes {
            adds: &files,
            removes: &[],
        };
        d.commit_run("kv", &spec(), changes, &c, snapshot).unwrap()
    }

    #[test]
    fn a_commit_from_a_stale_view_lands_at_the_next_version_and_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = local(dir.path());
        assert_eq!(commit(&d, "a", None), Committed::At(0));
        let stale = Some(d.snapshot("kv").unwrap());
        assert_eq!(commit(&d, "b", stale.clone()), Committed::At(1));
        // Another writer took version 1: this one reads the log again.
        assert_eq!(commit(&d, "c", stale.clone()), Committed::At(2));
        // A run already committed (a crash before `_SUCCESS`) is found on the retry.
        assert_eq!(commit(&d, "b", stale), Committed::Already(2));
        // Two writers creating the table at once: the second appends.
        let other = tempfile::tempdir().unwrap();
        let d = local(other.path());
        assert_eq!(commit(&d, "x", None), Committed::At(0));
        assert_eq!(commit(&d, "y", None), Committed::At(1));
        let s = d.snapshot("kv").unwrap();
        for id in ["x", "y"] {
            assert_eq!(
                s.get_app_id_version(&app_id(id), d.engine.as_ref())
                    .unwrap(),
                Some(1)
            );
        }
    }

    #[test]
    fn a_first_commit_being_written_is_no_log_yet() {
        let dir = tempfile::tempdir().unwrap();
        let lake = crate::write::LocalDir::new(dir.path());
        let log = dir.path().join("kv/_delta_log");
        std::fs::create_dir_all(&log).unwrap();
        assert!(!has_log(&lake, "kv").unwrap());
        // Another writer's put-if-absent of version 0, under way.
        std::fs::write(log.join("00000000000000000000.json#1"), b"{").unwrap();
        assert!(!has_log(&lake, "kv").unwrap());
        std::fs::write(log.join("00000000000000000000.json"), b"{}").unwrap();
        assert!(has_log(&lake, "kv").unwrap());
    }

    #[test]
    fn writers_creating_a_table_at_the_same_moment_all_commit_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = std::sync::Arc::new(local(dir.path()));
        let start = std::sync::Arc::new(std::sync::Barrier::new(4));
        let writers: Vec<_> = ["p", "q", "r", "s"]
            .into_iter()
            .map(|id| {
                let (d, start) = (d.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let (files, c) = run(id);
                    let changes = Changes {
                        adds: &files,
                        removes: &[],
                    };
                    d.commit_run("kv", &spec(), changes, &c, None)
                })
            })
            .collect();
        for w in writers {
            let done = w.join().unwrap();
            assert!(matches!(done, Ok(Committed::At(_))), "{done:?}");
        }
        let s = d.snapshot("kv").unwrap();
        assert_eq!(s.version(), 3);
    }

    #[test]
    fn a_checkpoint_every_hundred_versions_and_the_table_reads_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let d = local(dir.path());
        let mut snapshot = None;
        for i in 0..=CHECKPOINT_EVERY {
            let id = format!("r{i}");
            let (files, c) = run(&id);
            let changes = Changes {
                adds: &files,
                removes: &[],
            };
            let done = d
                .commit_run("kv", &spec(), changes, &c, snapshot.take())
                .unwrap();
            assert_eq!(done, Committed::At(i));
            snapshot = Some(d.snapshot("kv").unwrap());
        }
        let log = dir.path().join("kv/_delta_log");
        assert!(
            log.join(format!("{CHECKPOINT_EVERY:020}.checkpoint.parquet"))
                .exists()
        );
        assert!(
            !log.join(format!("{:020}.checkpoint.parquet", CHECKPOINT_EVERY - 1))
                .exists()
        );
        // Read through the checkpoint: every run's transaction is still there.
        let s = d.snapshot("kv").unwrap();
        assert_eq!(s.version(), CHECKPOINT_EVERY);
        for i in [0, 57, CHECKPOINT_EVERY] {
            let id = app_id(&format!("r{i}"));
            assert_eq!(
                s.get_app_id_version(&id, d.engine.as_ref()).unwrap(),
                Some(1),
                "{id}"
            );
        }
    }

    /// Two apps replacing their own files of a table partitioned by app,
    /// from the same stale view: the second commits after the first, and a
    /// file already removed by another writer is not removed twice.
    #[test]
    fn apps_replace_their_own_files_at_once_and_a_moved_file_is_told() {
        let dir = tempfile::tempdir().unwrap();
        let d = local(dir.path());
        let spec = TableSpec {
            schema: app_table_schema(&crate::table::kv_schema(Kind::Group)).unwrap(),
            partitions: &crate::table::APP_PARTITION,
            stats_columns: Vec::new(),
        };
        let file = |app: &str, n: u32| DataFile {
            path: format!("sdkappid={app}/part-{n:05}-r.parquet"),
            partition: vec![app.into()],
            bytes: 10,
            rows: 1,
            stats: Vec::new(),
        };
        let run = |id: &'static str| RunCommit {
            run_id: id,
            sdkappid: 1,
            status: "complete",
            messages: 1,
            kv_rows: 1,
        };
        let commit = |id, adds: &[DataFile], removes: &[String], snapshot| {
            let changes = Changes { adds, removes };
            d.commit_run("kv", &spec, changes, &run(id), snapshot)
        };
        commit("a0", &[file("1", 0), file("2", 0)], &[], None).unwrap();
        let stale = d.snapshot("kv").unwrap();
        let gone = |app: &str| vec![file(app, 0).path];
        let one = commit("a1", &[file("1", 1)], &gone("1"), Some(stale.clone()));
        assert_eq!(one.unwrap(), Committed::At(1));
        let two = commit("b1", &[file("2", 1)], &gone("2"), Some(stale.clone()));
        assert_eq!(two.unwrap(), Committed::At(2));
        let live = d.files_under("kv", &d.snapshot("kv").unwrap(), "").unwrap();
        let mut paths: Vec<String> = live.into_iter().map(|f| f.path).collect();
        paths.sort();
        assert_eq!(paths, [file("1", 1).path, file("2", 1).path]);
        // Another run of app 1 from the stale view: its file is gone.
        let again = commit("a2", &[file("1", 2)], &gone("1"), Some(stale));
        assert!(matches!(again, Err(DeltaError::Moved { .. })), "{again:?}");
    }

    /// A table of an earlier msgext, without the nullable columns added
    /// since, passes the schema check and gains them in the next commit.
    #[test]
    fn a_table_without_newer_nullable_columns_gains_them() {
        let dir = tempfile::tempdir().unwrap();
        let d = local(dir.path());
        let now = spec();
        let fields: Vec<StructField> = now
            .schema
            .fields()
            .filter(|f| f.name() != "fetched_at")
            .cloned()
            .collect();
        let mut older = now.clone();
        // `fetched_at` is not null in key_values: make one nullable column to drop.
        let extra = StructField::nullable("note", KernelType::STRING);
        older.schema = StructType::try_new(fields.clone()).unwrap();
        let mut newer = now.clone();
        newer.schema = StructType::try_new(fields.into_iter().chain([extra])).unwrap();
        let (files, c) = run("a");
        let changes = Changes {
            adds: &files,
            removes: &[],
        };
        d.commit_run("kv", &older, changes, &c, None).unwrap();
        let s = d.snapshot("kv").unwrap();
        d.check_schema("kv", &s, &newer.schema).unwrap();
        let (files, c) = run("b");
        let changes = Changes {
            adds: &files,
            removes: &[],
        };
        assert_eq!(
            d.commit_run("kv", &newer, changes, &c, Some(s)).unwrap(),
            Committed::At(1)
        );
        let after = d.snapshot("kv").unwrap();
        assert!(after.schema().field("note").is_some());
        assert!(schema_differences(&after.schema(), &newer.schema).is_none());
        // A column msgext writes not null cannot be added to old files.
        let e = d
            .check_schema("kv", &after, &now.schema)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no column fetched_at") && e.contains("extra column note"),
            "{e}"
        );
    }

    #[test]
    fn s3_s_precondition_failed_is_a_conflict_not_a_failure() {
        use delta_kernel::transaction::UpdateTable;
        let lost = object_store::Error::Precondition {
            path: "kv/_delta_log/00000000000000000001.json".into(),
            source: "412 Precondition Failed".into(),
        };
        let got = committed::<UpdateTable>(Err(delta_kernel::KernelError::ObjectStore(lost)));
        assert!(matches!(got, Ok(Err(()))), "{got:?}");
        let denied = object_store::Error::PermissionDenied {
            path: "kv".into(),
            source: "403".into(),
        };
        let got = committed::<UpdateTable>(Err(delta_kernel::KernelError::ObjectStore(denied)));
        assert!(got.is_err(), "{got:?}");
    }

    #[test]
    fn paths_are_percent_encoded_but_for_plain_characters() {
        let table = [
            (
                "dt=2026-12-02/run_id=r1/part-00000-a.parquet",
                "dt=2026-12-02/run_id=r1/part-00000-a.parquet",
            ),
            (
                "dt=2026-12-02/run_id=a b/x.parquet",
                "dt=2026-12-02/run_id=a%20b/x.parquet",
            ),
            ("dt=x/run_id=a:b%/y", "dt=x/run_id=a%3Ab%25/y"),
        ];
        for (path, want) in table {
            assert_eq!(encode_path(path), want);
        }
    }

    #[test]
    fn schema_differences_name_each_column() {
        let s = |fields: &[(&str, KernelType)]| {
            StructType::try_new(
                fields
                    .iter()
                    .map(|(n, t)| StructField::nullable(*n, t.clone())),
            )
            .unwrap()
        };
        let want = s(&[("a", KernelType::STRING), ("d", KernelType::LONG)]);
        let want = StructType::try_new(
            want.fields()
                .cloned()
                .chain([StructField::not_null("b", KernelType::LONG)]),
        )
        .unwrap();
        assert_eq!(schema_differences(&want, &want), None);
        // `d` (nullable) is missing too: a commit adds it, it is no difference.
        let have = s(&[("a", KernelType::LONG), ("c", KernelType::STRING)]);
        assert_eq!(
            schema_differences(&have, &want).unwrap(),
            "column a is long (msgext writes string), no column b, extra column c"
        );
    }
}
