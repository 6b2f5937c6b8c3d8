//! Reading the lake's Parquet files back, batch by batch: a run's own
//! history files and the current tables' files. A local lake's file is
//! read in place (memory stays at a batch); a bucket's is fetched whole
//! (memory holds one file: the current tables' files are kept small,
//! `current::FILE_BYTES`).

use crate::kind::{Kind, MessageId};
use crate::write::{LakeStore, WriteError};
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Rows a batch read back holds at most.
const BATCH_ROWS: usize = 8192;

/// The batches of the Parquet file at `rel` (relative to the lake).
pub(crate) fn batches(
    lake: &dyn LakeStore,
    rel: &str,
) -> Result<Box<dyn Iterator<Item = Result<RecordBatch, WriteError>>>, WriteError> {
    let bad = |e: &dyn std::fmt::Display| WriteError::Store(format!("{}: {e}", lake.display(rel)));
    let reader = match lake.local_path(rel) {
        Some(path) => {
            let file = std::fs::File::open(&path).map_err(|source| WriteError::Path {
                path: path.clone(),
                source,
            })?;
            ParquetRecordBatchReaderBuilder::try_new(file)
                .and_then(|b| b.with_batch_size(BATCH_ROWS).build())
                .map_err(|e| bad(&e))?
        }
        None => {
            let bytes = lake
                .get(rel)?
                .ok_or_else(|| bad(&"the file is gone from the lake"))?;
            ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
                .and_then(|b| b.with_batch_size(BATCH_ROWS).build())
                .map_err(|e| bad(&e))?
        }
    };
    let display = lake.display(rel);
    Ok(Box::new(reader.map(move |b| {
        b.map_err(|e| WriteError::Store(format!("{display}: {e}")))
    })))
}

/// A column of a batch read back, by name and type.
pub(crate) fn column<'a, T: 'static>(
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a T, WriteError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| WriteError::Store(format!("a file without the column {name} of its table")))
}

pub(crate) fn strings<'a>(
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a StringArray, WriteError> {
    column::<StringArray>(batch, name)
}

pub(crate) fn ints<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Int64Array, WriteError> {
    column::<Int64Array>(batch, name)
}

/// The kind's sender column of a batch (none for a kind without one).
pub(crate) fn sender(kind: Kind, batch: &RecordBatch) -> Result<Option<&StringArray>, WriteError> {
    kind.spec()
        .sender_column()
        .map(|name| strings(batch, name))
        .transpose()
}

/// The state fingerprint of each row's message (`MessageId::state_fingerprint`:
/// a one-to-one message with or without its sender is one), from a batch's
/// identity columns (the kind's `identity_fields`), read back through the
/// kind's own input rules so that it is the fingerprint the run computes.
pub(crate) fn fingerprints(kind: Kind, batch: &RecordBatch) -> Result<Vec<u128>, WriteError> {
    let mut out: Vec<u128> = Vec::with_capacity(batch.num_rows());
    each_id(kind, batch, |id| {
        let fp = match id {
            Some(id) => id.state_fingerprint(),
            None => out.last().copied().unwrap_or_default(),
        };
        out.push(fp);
    })?;
    Ok(out)
}

/// The message of each row, from the batch's identity columns.
pub(crate) fn ids(kind: Kind, batch: &RecordBatch) -> Result<Vec<MessageId>, WriteError> {
    let mut out: Vec<MessageId> = Vec::with_capacity(batch.num_rows());
    each_id(kind, batch, |id| {
        if let Some(id) = id.or_else(|| out.last().cloned()) {
            out.push(id);
        }
    })?;
    Ok(out)
}

/// Each row's message read from its identity cells, `None` for a row like
/// the one before it (rows of one message come together: read once).
fn each_id(
    kind: Kind,
    batch: &RecordBatch,
    mut each: impl FnMut(Option<MessageId>),
) -> Result<(), WriteError> {
    let spec = kind.spec();
    let columns: Vec<&ArrayRef> = spec
        .identity_fields()
        .iter()
        .map(|f| {
            batch
                .column_by_name(f.name())
                .ok_or_else(|| WriteError::Store(format!("a file without the column {}", f.name())))
        })
        .collect::<Result<_, _>>()?;
    let mut cells: Vec<String> = vec![String::new(); columns.len()];
    for row in 0..batch.num_rows() {
        if row > 0 && columns.iter().all(|c| same_cell(c, row - 1, row)) {
            each(None);
            continue;
        }
        for (cell, c) in cells.iter_mut().zip(&columns) {
            cell.clear();
            cell_text(c, row, cell);
        }
        let refs: Vec<&str> = cells.iter().map(String::as_str).collect();
        let id: MessageId = spec.parse_cells(&refs).map_err(|e| {
            WriteError::Store(format!("a row whose identity msgext cannot read: {e}"))
        })?;
        each(Some(id));
    }
    Ok(())
}

/// A cell as the input gives it: text, a number in decimal, empty for null.
fn cell_text(c: &ArrayRef, row: usize, out: &mut String) {
    if c.is_null(row) {
        return;
    }
    if let Some(s) = c.as_any().downcast_ref::<StringArray>() {
        out.push_str(s.value(row));
    } else if let Some(i) = c.as_any().downcast_ref::<Int64Array>() {
        out.push_str(&i.value(row).to_string());
    }
}

fn same_cell(c: &ArrayRef, a: usize, b: usize) -> bool {
    if c.is_null(a) || c.is_null(b) {
        return c.is_null(a) && c.is_null(b);
    }
    if let Some(s) = c.as_any().downcast_ref::<StringArray>() {
        s.value(a) == s.value(b)
    } else if let Some(i) = c.as_any().downcast_ref::<Int64Array>() {
        i.value(a) == i.value(b)
    } else {
        false
    }
}
