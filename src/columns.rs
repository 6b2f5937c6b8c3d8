//! Arrow column builders that start again sized like their last batch: the
//! kinds' identity columns (`kind/`) and the tables' other columns (`write/`)
//! are both built with these.

use arrow_array::ArrayRef;
use arrow_array::builder::{
    ArrayBuilder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use std::sync::Arc;

/// Finish a text column's builder into its array, and start it again with
/// room for as much as it held: a run's batches are alike in size, so the
/// next one is appended without the builder growing (and copying) itself
/// ten times over.
pub(crate) fn finish_text(b: &mut StringBuilder) -> ArrayRef {
    let (rows, bytes) = (b.len(), b.values_slice().len());
    let array = b.finish();
    *b = StringBuilder::with_capacity(rows, bytes);
    Arc::new(array)
}

/// `finish_text` for an integer column.
pub(crate) fn finish_int(b: &mut Int64Builder) -> ArrayRef {
    let rows = b.len();
    let array = b.finish();
    *b = Int64Builder::with_capacity(rows);
    Arc::new(array)
}

/// `finish_text` for a UTC timestamp column.
pub(crate) fn finish_time(b: &mut TimestampMicrosecondBuilder) -> ArrayRef {
    let rows = b.len();
    let array = b.finish();
    *b = TimestampMicrosecondBuilder::with_capacity(rows).with_timezone(UTC);
    Arc::new(array)
}

/// The zone of every timestamp column.
pub(crate) const UTC: &str = "UTC";
