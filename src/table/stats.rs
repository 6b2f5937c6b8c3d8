//! The `stats` of a commit's add actions: `numRecords`, and the null counts
//! and bounds (`nullCount`, `minValues`, `maxValues`) of the table's
//! statistics columns, from what the writer kept of each file's row groups.
//! A file without them (listed again after a restart) gets nulls, which
//! the log leaves out: readers then scan it.

use super::delta::{DataFile, TableSpec};
use crate::write::stats::{Bound, ColumnStats};
use arrow_array::{Array, ArrayRef, Int64Array, StringArray, StructArray};
use arrow_buffer::NullBuffer;
use arrow_schema::{ArrowError, DataType, Field, FieldRef};
use delta_kernel::schema::DataType as KernelType;
use std::sync::Arc;

/// The `stats` column of the add actions of `files`.
pub(crate) fn stats_array<'a>(
    files: &'a [DataFile],
    spec: &TableSpec,
) -> Result<StructArray, ArrowError> {
    let records: ArrayRef = Arc::new(Int64Array::from_iter_values(
        files.iter().map(|f| f.rows as i64),
    ));
    let mut fields = vec![(field("numRecords", DataType::Int64), records)];
    let columns = stats_columns(spec);
    if !columns.is_empty() {
        let stat = |f: &'a DataFile, c: &str| -> Option<&'a ColumnStats> {
            f.stats.iter().find(|s| s.name == c)
        };
        let nulls = columns.iter().map(|(c, _)| {
            let counts = files.iter().map(|f| stat(f, c).map(|s| s.nulls as i64));
            let array: ArrayRef = Arc::new(Int64Array::from_iter(counts));
            (field(c, DataType::Int64), array)
        });
        let bound = |upper: bool| {
            columns.iter().map(move |(c, t)| {
                let of = |f: &'a DataFile| {
                    stat(f, c)
                        .and_then(|s| s.bounds.as_ref())
                        .map(|(lo, hi)| if upper { hi } else { lo })
                };
                (field(c, t.clone()), bound_array(t, files.iter().map(of)))
            })
        };
        let known = NullBuffer::from_iter(files.iter().map(|f| !f.stats.is_empty()));
        for (name, children) in [
            ("nullCount", nulls.collect::<Vec<_>>()),
            ("minValues", bound(false).collect()),
            ("maxValues", bound(true).collect()),
        ] {
            let (child_fields, arrays): (Vec<FieldRef>, Vec<ArrayRef>) =
                children.into_iter().unzip();
            let nested = StructArray::try_new(child_fields.into(), arrays, Some(known.clone()))?;
            fields.push((field(name, nested.data_type().clone()), Arc::new(nested)));
        }
    }
    Ok(StructArray::from(fields))
}

fn field(name: &str, t: DataType) -> FieldRef {
    Arc::new(Field::new(name, t, true))
}

/// The statistics columns of `spec` with bounds msgext keeps (Int64, UTF-8).
fn stats_columns(spec: &TableSpec) -> Vec<(String, DataType)> {
    spec.stats_columns
        .iter()
        .filter_map(|c| {
            let t = match spec.schema.field(c)?.data_type() {
                t if *t == KernelType::LONG => DataType::Int64,
                t if *t == KernelType::STRING => DataType::Utf8,
                _ => return None,
            };
            Some((c.clone(), t))
        })
        .collect()
}

fn bound_array<'a>(t: &DataType, bounds: impl Iterator<Item = Option<&'a Bound>>) -> ArrayRef {
    match t {
        DataType::Int64 => Arc::new(Int64Array::from_iter(bounds.map(|b| match b {
            Some(Bound::Int(i)) => Some(*i),
            _ => None,
        }))),
        _ => Arc::new(StringArray::from_iter(bounds.map(|b| match b {
            Some(Bound::Text(s)) => Some(s),
            _ => None,
        }))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::Kind;
    use crate::table::delta::{
        Changes, DeltaLake, PARTITION_COLUMNS, RunCommit, decode_path, table_schema,
    };
    use delta_kernel::expressions::{Expression, Predicate};

    fn text(lo: &str, hi: &str) -> Option<(Bound, Bound)> {
        Some((Bound::Text(lo.into()), Bound::Text(hi.into())))
    }

    fn column(name: &str, nulls: u64, bounds: Option<(Bound, Bound)>) -> ColumnStats {
        ColumnStats {
            name: name.into(),
            nulls,
            bounds,
        }
    }

    fn file(name: &str, stats: Vec<ColumnStats>) -> DataFile {
        DataFile {
            path: format!("dt=2026-12-06/run_id=r/{name}.parquet"),
            partition: vec!["2026-12-06".into(), "r".into()],
            bytes: 10,
            rows: 3,
            stats,
        }
    }

    /// The identity columns' bounds reach the log through the kernel's add
    /// actions, and a reader's scan with a filter on them skips the files
    /// whose bounds miss it; a file without statistics is always read.
    #[test]
    fn a_filtered_scan_skips_the_files_whose_bounds_miss() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("kv")).unwrap();
        let lake = crate::write::LocalDir::new(dir.path());
        let d = DeltaLake::open(crate::write::LakeStore::table_root(&lake).unwrap()).unwrap();
        let kind = Kind::OneToOne;
        let spec = TableSpec {
            schema: table_schema(&crate::write::schema::key_values_schema(kind)).unwrap(),
            partitions: &PARTITION_COLUMNS,
            stats_columns: kind.identity_names(),
        };
        let a = vec![
            column("from_account", 3, None),
            column("to_account", 0, text("u1", "u1")),
            column("msg_key", 0, text("a", "m")),
        ];
        let b = vec![
            column("from_account", 0, text("s1", "s2")),
            column("to_account", 0, text("u1", "u2")),
            column("msg_key", 0, text("n", "z")),
        ];
        let files = [file("a", a), file("b", b), file("c", Vec::new())];
        let run = RunCommit {
            run_id: "r",
            sdkappid: 1,
            status: "complete",
            messages: 3,
            kv_rows: 9,
        };
        let changes = Changes {
            adds: &files,
            removes: &[],
        };
        d.commit_run("kv", &spec, changes, &run, None).unwrap();
        let snapshot = d.snapshot("kv").unwrap();
        let read = |col: &str, value: &str| -> Vec<String> {
            let name = delta_kernel::expressions::ColumnName::new([col]);
            let predicate = Predicate::eq(Expression::column(name), Expression::literal(value));
            let scan = snapshot.clone().scan_builder();
            let scan = scan.with_predicate(Arc::new(predicate)).build().unwrap();
            let mut names = Vec::new();
            for meta in scan.scan_metadata(d.engine()).unwrap() {
                let meta = meta.unwrap();
                let paths = meta.visit_scan_files(Vec::new(), |v, f| v.push(f.path));
                for p in paths.unwrap() {
                    let p = decode_path(&p).unwrap();
                    names.push(p.rsplit('/').next().unwrap().replace(".parquet", ""));
                }
            }
            names.sort();
            names
        };
        let table = [
            ("msg_key", "c", vec!["a", "c"]),
            ("msg_key", "p", vec!["b", "c"]),
            ("to_account", "u2", vec!["b", "c"]),
            ("to_account", "u9", vec!["c"]),
            // a's senders are all null (nullCount = numRecords): none is s9.
            ("from_account", "s9", vec!["c"]),
            ("from_account", "s2", vec!["b", "c"]),
        ];
        for (col, value, want) in table {
            assert_eq!(read(col, value), want, "{col} = {value}");
        }
        let rows: Vec<Option<u64>> = d
            .files_under("kv", &snapshot, "")
            .unwrap()
            .into_iter()
            .map(|f| f.rows)
            .collect();
        assert_eq!(
            rows,
            [Some(3); 3],
            "numRecords through the scan-file visitor"
        );
    }
}
