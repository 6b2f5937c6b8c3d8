//! What a Parquet file's row groups say of its columns (null counts, lower
//! and upper bounds), kept for the Delta log's per-file statistics so that
//! engines skip the files a filter on an identity column cannot match.

use parquet::file::metadata::RowGroupMetaData;
use parquet::file::statistics::Statistics;

/// A lower or upper bound of a column in a file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bound {
    Int(i64),
    Text(String),
}

/// One column of a file: its nulls, and bounds of its other values (`None`:
/// not known, e.g. a row group kept none, or every value is null).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnStats {
    pub name: String,
    pub nulls: u64,
    pub bounds: Option<(Bound, Bound)>,
}

/// The statistics of a file's top-level Int64 and UTF-8 columns; a column
/// some row group kept no statistics for is left out.
pub type FileStats = Vec<ColumnStats>;

/// The statistics of a file from its row groups' metadata.
pub(crate) fn file_stats(row_groups: &[RowGroupMetaData]) -> FileStats {
    let Some(first) = row_groups.first() else {
        return Vec::new();
    };
    let schema = first.schema_descr();
    (0..schema.num_columns())
        .filter(|&i| schema.column(i).path().parts().len() == 1)
        .filter_map(|i| column_stats(schema.column(i).name(), row_groups, i))
        .collect()
}

fn column_stats(name: &str, row_groups: &[RowGroupMetaData], i: usize) -> Option<ColumnStats> {
    let mut nulls = 0;
    let mut bounds: Option<(Bound, Bound)> = None;
    let mut unknown = false;
    for rg in row_groups {
        let chunk = rg.column(i);
        let s = chunk.statistics()?;
        let group_nulls = s.null_count_opt()?;
        nulls += group_nulls;
        match (chunk_bounds(s)?, bounds.take()) {
            (Some(b), None) => bounds = Some(b),
            (Some((lo, hi)), Some((l, h))) => bounds = Some((l.min(lo), h.max(hi))),
            // A row group of nulls alone has no bounds and needs none.
            (None, b) if group_nulls == rg.num_rows() as u64 => bounds = b,
            (None, b) => {
                unknown = true;
                bounds = b;
            }
        }
    }
    Some(ColumnStats {
        name: name.to_owned(),
        nulls,
        bounds: bounds.filter(|_| !unknown),
    })
}

/// A chunk's bounds; `None` outside: a column type msgext keeps no bounds of.
fn chunk_bounds(s: &Statistics) -> Option<Option<(Bound, Bound)>> {
    let text = |b: &parquet::data_type::ByteArray| {
        std::str::from_utf8(b.data())
            .ok()
            .map(|t| Bound::Text(t.to_owned()))
    };
    match s {
        Statistics::Int64(v) => Some(
            v.min_opt()
                .zip(v.max_opt())
                .map(|(lo, hi)| (Bound::Int(*lo), Bound::Int(*hi))),
        ),
        Statistics::ByteArray(v) => {
            Some(v.min_opt().and_then(text).zip(v.max_opt().and_then(text)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;
    use std::sync::Arc;

    /// Row groups of two rows each, read back from a written file: bounds
    /// span every row group, nulls add up, a row group of nulls alone
    /// leaves the bounds alone, a column of nulls alone has none.
    #[test]
    fn a_files_statistics_span_its_row_groups() {
        let seq: ArrayRef = Arc::new(Int64Array::from(vec![5, 3, 9, 7, 1, 4]));
        let from: ArrayRef = Arc::new(StringArray::from(vec![
            Some("m"),
            Some("b"),
            None,
            None,
            Some("x"),
            None,
        ]));
        let none: ArrayRef = Arc::new(StringArray::from(vec![None::<&str>; 6]));
        let batch =
            RecordBatch::try_from_iter([("msg_seq", seq), ("from", from), ("none", none)]).unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(2))
            .build();
        let mut w = ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.flush().unwrap();
        assert_eq!(w.flushed_row_groups().len(), 3);
        let got = file_stats(w.flushed_row_groups());
        let text = |s: &str| Bound::Text(s.into());
        let want = vec![
            ColumnStats {
                name: "msg_seq".into(),
                nulls: 0,
                bounds: Some((Bound::Int(1), Bound::Int(9))),
            },
            ColumnStats {
                name: "from".into(),
                nulls: 3,
                bounds: Some((text("b"), text("x"))),
            },
            ColumnStats {
                name: "none".into(),
                nulls: 6,
                bounds: None,
            },
        ];
        assert_eq!(got, want);
        assert_eq!(file_stats(&[]), Vec::new());
    }

    /// Values longer than the writer keeps in statistics: the bounds still
    /// hold every value (a lower bound at or below the least, an upper at
    /// or above the greatest), so a reader never skips a file it needs.
    #[test]
    fn long_values_keep_bounds_that_hold_them() {
        let long = |c: char, last: char| format!("{}{last}", c.to_string().repeat(99));
        let values = [long('m', 'a'), long('m', 'z'), long('b', 'q')];
        let array: ArrayRef = Arc::new(StringArray::from_iter_values(values.iter()));
        let batch = RecordBatch::try_from_iter([("msg_key", array)]).unwrap();
        let mut w = ArrowWriter::try_new(Vec::new(), batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.flush().unwrap();
        let got = file_stats(w.flushed_row_groups());
        let Some((Bound::Text(lo), Bound::Text(hi))) = &got[0].bounds else {
            panic!("{got:?}");
        };
        let (least, greatest) = (values.iter().min().unwrap(), values.iter().max().unwrap());
        assert!(lo.as_str() <= least.as_str(), "{lo} > {least}");
        assert!(hi.as_str() >= greatest.as_str(), "{hi} < {greatest}");
    }
}
