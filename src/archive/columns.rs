//! Typed access to the columns of a record batch (by name, with the reason when one is
//! missing or of another type), shared by merge, lookup and cost.

use arrow_array::{Array, ArrayRef, RecordBatch};

use super::segment::fixed;
use super::ArchiveError;

/// An array as its concrete Arrow type (map entries are read by position: their field names
/// differ between writers).
pub fn as_array<'a, T: 'static>(a: &'a ArrayRef, name: &str) -> Result<&'a T, ArchiveError> {
    downcast(Some(a), name)
}

fn downcast<'a, T: 'static>(a: Option<&'a ArrayRef>, name: &str) -> Result<&'a T, ArchiveError> {
    a.and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| ArchiveError::Verify(format!("column {name} missing or mistyped")))
}

/// A column of a span batch as its concrete Arrow type (any other type is corruption).
pub fn column<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T, ArchiveError> {
    downcast(b.column_by_name(name), name)
}

/// A field of a struct column (events, links, map entries) as its concrete Arrow type.
pub fn field<'a, T: 'static>(
    s: &'a arrow_array::StructArray,
    name: &str,
) -> Result<&'a T, ArchiveError> {
    downcast(s.column_by_name(name), name)
}

/// Row `i` of an id column as `N` bytes (the schema fixes the width; anything else is
/// corruption).
pub fn id_at<const N: usize>(
    a: &arrow_array::BinaryArray,
    i: usize,
) -> Result<[u8; N], ArchiveError> {
    fixed(a.value(i)).ok_or_else(|| {
        ArchiveError::Verify(format!("id of {} bytes, expected {N}", a.value(i).len()))
    })
}
