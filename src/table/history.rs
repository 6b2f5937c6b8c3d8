//! The history tables' commit (`key_values`, `messages` and the group
//! ones): each is a Delta table at `OUT/<table>/`, partitioned by `dt` and
//! `run_id` as the files are. A run's data files are written and published
//! as it goes; at its end, after every upload and before `_SUCCESS`, they
//! are added to each table's log in one commit (`DeltaLake::commit_run`:
//! exactly once, by the run's `txn`). Before any call, `prepare` checks
//! that the lake's tables are the run's.

use super::delta::{
    Changes, Committed, DataFile, DeltaLake, PARTITION_COLUMNS, RunCommit, TableSpec, has_log,
    table_schema,
};
use crate::kind::Kind;
use crate::write::{DeltaError, FileInfo, Format, LakeStore, TableFormat, WriteError};

/// The Delta side of a run: its kind's two tables in the lake, checked
/// before any API call and committed at the end.
pub(crate) struct DeltaRun {
    delta: DeltaLake,
    tables: Vec<(&'static str, TableSpec)>,
}

/// Check the lake's tables for a run of `kind` before any API call. With
/// Delta: a table's log must hold msgext's schema, and a table without a
/// log must not hold other runs' files (a plain lake is not silently half
/// converted). Plain Parquet: no table may be a Delta table (its readers
/// would miss the files), and no more may CSV: CSV sits beside plain tables only.
pub(crate) fn prepare(
    lake: &dyn LakeStore,
    kind: Kind,
    run_id: &str,
    (format, tables): (Format, TableFormat),
) -> Result<Option<DeltaRun>, WriteError> {
    let names = kind.spec().tables();
    // Files written outside a Delta table's log (CSV, or plain Parquet)
    // would be seen by no reader of the table.
    if format == Format::Csv || tables == TableFormat::Plain {
        for t in names {
            if has_log(lake, t)? {
                let table = lake.display(t);
                return Err(match format {
                    Format::Csv => DeltaError::CsvIntoDelta { table },
                    Format::Parquet => DeltaError::IsDelta { table },
                }
                .into());
            }
        }
        return Ok(None);
    }
    let delta = DeltaLake::open(lake.table_root()?).map_err(WriteError::Io)?;
    let specs = specs(kind).map_err(delta.kernel(names[0], "msgext's schema"))?;
    let mut tables = Vec::new();
    for (t, spec) in specs {
        if has_log(lake, t)? {
            delta.check_schema(t, &*delta.snapshot(t)?, &spec.schema)?;
        } else if finished_plain_runs(lake, t, run_id)? {
            return Err(DeltaError::PlainLake {
                table: lake.display(t),
            }
            .into());
        }
        tables.push((t, spec));
    }
    Ok(Some(DeltaRun { delta, tables }))
}

/// The two history tables of a kind as the log knows them.
pub(crate) fn specs(
    kind: Kind,
) -> Result<[(&'static str, TableSpec); 2], delta_kernel::KernelError> {
    let [kv, messages] = kind.spec().tables();
    let spec = |arrow: arrow_schema::SchemaRef| -> Result<TableSpec, delta_kernel::KernelError> {
        Ok(TableSpec {
            schema: table_schema(&arrow)?,
            partitions: &PARTITION_COLUMNS,
            stats_columns: kind.identity_names(),
        })
    };
    Ok([
        (kv, spec(crate::write::schema::key_values_schema(kind))?),
        (messages, spec(crate::write::schema::messages_schema(kind))?),
    ])
}

/// Whether the table folder holds Parquet files of finished runs (their
/// `_SUCCESS` is there) other than `run_id`: a plain lake. Files of runs
/// that did not finish are in no log yet; CSV runs beside a Delta table
/// are no part of it and harm neither its readers nor theirs.
fn finished_plain_runs(
    lake: &dyn LakeStore,
    table: &str,
    run_id: &str,
) -> Result<bool, WriteError> {
    let mut runs: Vec<&str> = Vec::new();
    let files = lake.list(table)?;
    for p in files.iter().filter(|p| p.ends_with(".parquet")) {
        let run = p.split('/').find_map(|part| part.strip_prefix("run_id="));
        if let Some(run) = run.filter(|r| *r != run_id && !runs.contains(r)) {
            runs.push(run);
        }
    }
    for run in runs {
        if lake.exists(&format!("_runs/{run}/_SUCCESS"))? {
            return Ok(true);
        }
    }
    Ok(false)
}

impl DeltaRun {
    /// The lake's Delta tables.
    pub(crate) fn lake(&self) -> &DeltaLake {
        &self.delta
    }

    /// Commit the run's files (`files`: every data file of the run, paths
    /// relative to the lake) to each table, in one commit per table.
    pub(crate) fn commit(
        &self,
        lake: &dyn LakeStore,
        files: &[FileInfo],
        run: &RunCommit<'_>,
    ) -> Result<Vec<Committed>, WriteError> {
        let mut out = Vec::new();
        for (i, (table, spec)) in self.tables.iter().enumerate() {
            if i > 0 {
                crate::failpoint::hit("between_delta_commits");
            }
            let files: Vec<DataFile> = files.iter().filter_map(|f| data_file(table, f)).collect();
            if files.is_empty() {
                continue;
            }
            // Read again: another writer may have created the table since `prepare`.
            let snapshot = match has_log(lake, table)? {
                true => Some(self.delta.snapshot(table)?),
                false => None,
            };
            let changes = Changes {
                adds: &files,
                removes: &[],
            };
            out.push(self.delta.commit_run(table, spec, changes, run, snapshot)?);
        }
        Ok(out)
    }
}

/// A file of the run under `table`, as the log records it.
fn data_file(table: &str, f: &FileInfo) -> Option<DataFile> {
    let path = f.path.strip_prefix(table)?.strip_prefix('/')?;
    let mut parts = path.split('/');
    let dt = parts.next()?.strip_prefix("dt=")?;
    let run_id = parts.next()?.strip_prefix("run_id=")?;
    Some(DataFile {
        path: path.to_owned(),
        partition: vec![dt.to_owned(), run_id.to_owned()],
        bytes: f.bytes,
        rows: f.rows,
        stats: f.stats.clone(),
    })
}
