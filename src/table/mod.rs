//! Every Delta table of the lake, and nothing of Delta outside this folder:
//! `delta` opens the tables through the kernel (snapshots, transactions,
//! commits, checkpoints), `history` commits a run to the history tables,
//! and the rest keeps the current tables.
//!
//! The current-state tables (DESIGN §3, §7): `current_key_values` holds
//! the live pairs of every message exported, `current_messages` one row
//! per message with its Seqs and when it was last read; the group kind has
//! its own pair (`current_group_…`). Delta tables, partitioned by
//! `sdkappid`, so that apps never touch each other's rows.
//!
//! They are the state incremental reads start from (`prior`): a run reads
//! its app's rows of `current_messages` before its first call, and at its
//! end replaces the rows of the messages it read (`current::commit`), in
//! the same run as the history tables' commit. Nothing of the state lives
//! on the machine.

pub(crate) mod audit;
pub(crate) mod catalog;
pub(crate) mod changed;
pub(crate) mod current;
pub mod delta;
pub(crate) mod events;
pub(crate) mod history;
pub(crate) mod read;
pub(crate) mod settle;
pub(crate) mod stats;
pub(crate) mod vacuum;

use crate::incremental::{Known, Prior};
use crate::kind::Kind;
use crate::write::{LakeStore, WriteError};
use arrow_array::{Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use delta::{DeltaLake, TableSpec, app_table_schema, has_log};
use delta_kernel::snapshot::SnapshotRef;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// The partition column of the current tables.
pub(crate) const APP_PARTITION: [&str; 1] = ["sdkappid"];

/// The current tables of a kind: (pairs, messages).
pub(crate) fn names(kind: Kind) -> [String; 2] {
    kind.spec().tables().map(|t| format!("current_{t}"))
}

/// The folder of an app's rows in a current table: `sdkappid=<app>`.
pub(crate) fn app_dir(sdkappid: u64) -> String {
    format!("sdkappid={sdkappid}")
}

fn time(name: &str, nullable: bool) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some(crate::columns::UTC.into())),
        nullable,
    )
}

/// The data files' columns of `current_key_values`: the history table's
/// (but `sdkappid`, a partition column here) and the run that fetched the pair.
pub(crate) fn kv_schema(kind: Kind) -> SchemaRef {
    let history = crate::write::schema::key_values_schema(kind);
    let mut fields: Vec<Field> = history
        .fields()
        .iter()
        .filter(|f| f.name() != "sdkappid")
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("run_id", DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// The data files' columns of `current_messages`.
pub(crate) fn messages_schema(kind: Kind) -> SchemaRef {
    let mut fields = kind.spec().identity_fields();
    fields.extend([
        Field::new("status", DataType::Utf8, false),
        Field::new("latest_seq", DataType::Int64, true),
        Field::new("clear_seq", DataType::Int64, true),
        Field::new("kv_count", DataType::Int64, false),
        // The last good read (ok or not found): its run and time.
        Field::new("run_id", DataType::Utf8, false),
        time("read_at", false),
        // The last full read (null once not found).
        time("full_read_at", true),
    ]);
    Arc::new(Schema::new(fields))
}

/// The two current tables of a kind as the log knows them.
pub(crate) fn specs(kind: Kind) -> Result<[TableSpec; 2], delta_kernel::KernelError> {
    let spec = |data: SchemaRef| -> Result<TableSpec, delta_kernel::KernelError> {
        Ok(TableSpec {
            schema: app_table_schema(&data)?,
            partitions: &APP_PARTITION,
            stats_columns: kind.identity_names(),
        })
    };
    Ok([spec(kv_schema(kind))?, spec(messages_schema(kind))?])
}

/// Refuse current tables of another schema (another kind's, another
/// version's) before any call: exit 2, naming the table.
pub(crate) fn check(lake: &dyn LakeStore, delta: &DeltaLake, kind: Kind) -> Result<(), WriteError> {
    let specs = specs(kind).map_err(|e| WriteError::Store(e.to_string()))?;
    for (name, spec) in names(kind).iter().zip(&specs) {
        if has_log(lake, name)? {
            delta.check_schema(name, &*delta.snapshot(name)?, &spec.schema)?;
        }
    }
    Ok(())
}

/// Which of a run's Delta commits the lake holds: the history tables and
/// the current tables whose log has its `txn` (a run writes one kind, so
/// at most two of each), as people find them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RunCommits {
    pub(crate) history: Vec<String>,
    pub(crate) current: Vec<String>,
}

/// The lake's Delta tables read once (a snapshot of each one with a log),
/// to tell the commits of any number of runs.
pub(crate) struct LakeCommits {
    delta: Option<DeltaLake>,
    /// (table, whether it is a current table, its name for people, snapshot).
    tables: Vec<(String, bool, String, SnapshotRef)>,
}

impl LakeCommits {
    pub(crate) fn open(lake: &dyn LakeStore) -> Result<LakeCommits, WriteError> {
        let mut delta = None;
        let mut tables = Vec::new();
        for kind in Kind::ALL {
            let history = kind.spec().tables().map(|t| (t.to_owned(), false));
            for (table, current) in history.into_iter().chain(names(kind).map(|t| (t, true))) {
                if !has_log(lake, &table)? {
                    continue;
                }
                let d = match &mut delta {
                    Some(d) => d,
                    None => {
                        delta.insert(DeltaLake::open(lake.table_root()?).map_err(WriteError::Io)?)
                    }
                };
                let snapshot = d.snapshot(&table)?;
                tables.push((lake.display(&table), current, table, snapshot));
            }
        }
        Ok(LakeCommits { delta, tables })
    }

    /// The tables whose log holds the run's txn.
    pub(crate) fn of(&self, run_id: &str) -> Result<RunCommits, WriteError> {
        let mut out = RunCommits::default();
        let Some(delta) = &self.delta else {
            return Ok(out);
        };
        let app = delta::app_id(run_id);
        for (name, current, table, snapshot) in &self.tables {
            if delta.has_transaction(table, snapshot, &app)? {
                let tables = if *current {
                    &mut out.current
                } else {
                    &mut out.history
                };
                tables.push(name.clone());
            }
        }
        Ok(out)
    }
}

impl RunCommits {
    /// One run's commits (`LakeCommits` for several).
    pub(crate) fn of(lake: &dyn LakeStore, run_id: &str) -> Result<RunCommits, WriteError> {
        LakeCommits::open(lake)?.of(run_id)
    }

    /// Whether any table holds the run: its files are part of the lake.
    pub(crate) fn any(&self) -> bool {
        !(self.history.is_empty() && self.current.is_empty())
    }

    /// For `msgext runs`: what is committed, and what a person should know.
    pub(crate) fn describe(&self) -> (&'static str, Option<&'static str>) {
        match (self.history.len(), self.current.len()) {
            (0, 0) => ("none", None),
            (2, 2) => ("all", None),
            (2, 0) => (
                "history",
                Some(
                    "its history is committed, its current tables are not: the next export of this app into this lake completes them",
                ),
            ),
            (2, _) => (
                "history+part",
                Some(
                    "its history is committed and one of its two current tables: the next export of this app into this lake completes the other",
                ),
            ),
            (_, 0) => (
                "part-history",
                Some(
                    "one of its two history tables is committed: its own export command completes it",
                ),
            ),
            _ => (
                "partly",
                Some(
                    "its commits are not whole: the next export of this app into this lake completes them",
                ),
            ),
        }
    }
}

/// How a run chooses full reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FullReads {
    /// `--full`: every message.
    pub always: bool,
    /// `full_every`: a message whose last full read is older.
    pub every: Option<Duration>,
}

/// What a run starts from: what the current tables know, once every run
/// in them is whole (`settle`).
pub(crate) struct State {
    pub(crate) prior: Prior,
    /// `--full` over damaged current tables: the run's commit replaces the
    /// app's rows without reading them.
    pub(crate) rebuild: Option<String>,
    /// Earlier runs whose current commits this run completed first.
    pub(crate) completed: Vec<settle::Completed>,
}

/// Bring the app's current tables of `kind` to whole runs (completing
/// those that are not; `unfinished`: the lake's runs without `_SUCCESS`),
/// then read what they know. Damage (a data file or a run's history gone)
/// is an error that names `--full`; with `--full` the run rebuilds the
/// app's rows instead. Any other failure (a store that does not answer, a
/// file it cannot read) fails the run with its cause: it is no licence to
/// replace what the tables hold.
pub(crate) fn state(
    s: &settle::Settle<'_>,
    sdkappid: u64,
    full: FullReads,
    unfinished: &[String],
) -> Result<State, WriteError> {
    let load = || prior(s.lake.as_ref(), s.delta, s.kind, sdkappid, full);
    let settled = s.check_files(sdkappid).and_then(|()| {
        let (prior, runs) = load()?;
        // A run is whole once it has _SUCCESS; the newest one is looked at
        // too (its log entry may have been lost by hand).
        let candidates: BTreeSet<String> = unfinished
            .iter()
            .filter(|r| runs.named.contains(*r))
            .chain(&runs.newest)
            .cloned()
            .collect();
        Ok((prior, s.complete(&candidates, unfinished)?))
    });
    match settled {
        Ok((prior, completed)) if completed.is_empty() => Ok(State {
            prior,
            rebuild: None,
            completed,
        }),
        // What was completed changed the tables: read them again.
        Ok((_, completed)) => Ok(State {
            prior: load()?.0,
            rebuild: None,
            completed,
        }),
        Err(WriteError::Damaged(why)) if full.always => {
            tracing::warn!(error = %why, "the current tables are damaged: --full rebuilds this app's rows");
            Ok(State {
                prior: Prior::new(Vec::new(), 0, full.every, true),
                rebuild: Some(why),
                completed: Vec::new(),
            })
        }
        Err(e) => Err(e),
    }
}

/// The runs the app's rows of `current_messages` name.
#[derive(Debug, Default)]
pub(crate) struct RowRuns {
    pub(crate) named: BTreeSet<String>,
    /// The run of the newest read.
    pub(crate) newest: Option<String>,
}

/// What the current tables know of the app's messages of `kind`: its rows
/// of `current_messages` with status ok (a message not found is read in
/// full if it is listed again), and the runs those rows name.
pub(crate) fn prior(
    lake: &dyn LakeStore,
    delta: &DeltaLake,
    kind: Kind,
    sdkappid: u64,
    full: FullReads,
) -> Result<(Prior, RowRuns), WriteError> {
    let now = chrono::Utc::now().timestamp_micros();
    let [_, table] = names(kind);
    let mut known = Vec::new();
    let mut runs = RowRuns::default();
    let mut newest_at = i64::MIN;
    if let Some(snapshot) = latest(lake, delta, &table)? {
        let files = delta.files_under(&table, &snapshot, &format!("{}/", app_dir(sdkappid)))?;
        // Sized once from the log's row counts: growing by doubling would
        // hold both copies at the peak (40 bytes a message).
        known.reserve_exact(files.iter().filter_map(|f| f.rows).sum::<u64>() as usize);
        for delta::LiveFile { path, .. } in files {
            for batch in read::batches(lake, &format!("{table}/{path}"))? {
                let batch = batch?;
                let fps = read::fingerprints(kind, &batch)?;
                let columns = StoredColumns::of(&batch)?;
                for i in 0..batch.num_rows() {
                    let run = columns.run_id.value(i);
                    if (i == 0 || columns.run_id.value(i - 1) != run) && !runs.named.contains(run) {
                        runs.named.insert(run.to_owned());
                    }
                    let at = opt(columns.read_at, i).unwrap_or(i64::MIN);
                    if at > newest_at {
                        newest_at = at;
                        runs.newest = Some(run.to_owned());
                    }
                }
                let found = fps.into_iter().enumerate();
                known.extend(found.filter_map(|(i, fp)| {
                    Some((crate::incremental::halves(fp), columns.known(i)?))
                }));
            }
        }
    }
    Ok((Prior::new(known, now, full.every, full.always), runs))
}

/// A table's latest snapshot, none before its first commit.
pub(crate) fn latest(
    lake: &dyn LakeStore,
    delta: &DeltaLake,
    table: &str,
) -> Result<Option<SnapshotRef>, WriteError> {
    Ok(match has_log(lake, table)? {
        true => Some(delta.snapshot(table)?),
        false => None,
    })
}

/// Whether `snapshot` (none: no table yet) holds run `run_id`'s transaction.
pub(crate) fn holds(
    delta: &DeltaLake,
    table: &str,
    snapshot: &Option<SnapshotRef>,
    run_id: &str,
) -> Result<bool, WriteError> {
    Ok(match snapshot {
        Some(s) => delta.has_transaction(table, s, &delta::app_id(run_id))?,
        None => false,
    })
}

/// Every batch of the app's rows of `current_key_values` (of `kind`), as
/// its latest version holds them.
pub(crate) fn current_pairs(
    lake: &dyn LakeStore,
    delta: &DeltaLake,
    kind: Kind,
    sdkappid: u64,
    mut each: impl FnMut(&RecordBatch) -> Result<(), WriteError>,
) -> Result<(), WriteError> {
    let [table, _] = names(kind);
    if !has_log(lake, &table)? {
        return Ok(());
    }
    let snapshot = delta.snapshot(&table)?;
    for f in delta.files_under(&table, &snapshot, &format!("{}/", app_dir(sdkappid)))? {
        for batch in read::batches(lake, &format!("{table}/{}", f.path))? {
            each(&batch?)?;
        }
    }
    Ok(())
}

/// The columns of a `current_messages` batch, looked up once a batch.
pub(crate) struct StoredColumns<'a> {
    status: &'a arrow_array::StringArray,
    latest: &'a arrow_array::Int64Array,
    clear: &'a arrow_array::Int64Array,
    kv_count: &'a arrow_array::Int64Array,
    run_id: &'a arrow_array::StringArray,
    read_at: &'a TimestampMicrosecondArray,
    full_read_at: &'a TimestampMicrosecondArray,
}

impl<'a> StoredColumns<'a> {
    pub(crate) fn of(batch: &'a RecordBatch) -> Result<Self, WriteError> {
        Ok(StoredColumns {
            status: read::strings(batch, "status")?,
            latest: read::ints(batch, "latest_seq")?,
            clear: read::ints(batch, "clear_seq")?,
            kv_count: read::ints(batch, "kv_count")?,
            run_id: read::strings(batch, "run_id")?,
            read_at: read::column(batch, "read_at")?,
            full_read_at: read::column(batch, "full_read_at")?,
        })
    }

    /// What incremental reads start from: a message found, with its Seqs.
    fn known(&self, i: usize) -> Option<Known> {
        if self.status.value(i) != "ok" {
            return None;
        }
        Some(Known {
            latest_seq: opt(self.latest, i)?,
            clear_seq: opt(self.clear, i)?,
            last_full_read_us: opt(self.full_read_at, i).unwrap_or(0),
        })
    }

    fn row(&self, i: usize) -> current::Stored {
        current::Stored {
            ok: self.status.value(i) == "ok",
            latest_seq: opt(self.latest, i),
            clear_seq: opt(self.clear, i),
            kv_count: opt(self.kv_count, i).unwrap_or(0),
            run_id: self.run_id.value(i).to_owned(),
            read_at: opt(self.read_at, i).unwrap_or(0),
            full_read_at: opt(self.full_read_at, i),
        }
    }
}

fn opt<T: arrow_array::types::ArrowPrimitiveType>(
    a: &arrow_array::PrimitiveArray<T>,
    i: usize,
) -> Option<T::Native> {
    a.is_valid(i).then(|| a.value(i))
}
