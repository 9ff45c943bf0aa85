//! Reading schema v1 as v2. Every reader of the archive (merge, lookup, cost) sees v2 batches
//! only: [`conform`] upgrades a v1 batch (nanosecond timestamps, fixed-size binary ids, map
//! groups named `entries`) column by column, losing nothing (`*_unix_nano` carry v1's exact
//! nanoseconds, the microsecond timestamps are derived from them as the v2 encoder derives
//! them). Compaction writes what it reads, so a v1 hour that is merged comes out as v2.

use std::sync::Arc;

use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{
    Array, ArrayRef, BinaryArray, FixedSizeBinaryArray, Int64Array, ListArray, MapArray,
    RecordBatch, StructArray, TimestampNanosecondArray,
};
use arrow_schema::{DataType, Field, Fields};

use super::schema::{event_fields, link_fields, map_type, span_schema, LIST_ELEMENT};
use super::segment::micros;
use super::ArchiveError;

/// A batch read from any version's file, as schema v2.
pub fn conform(batch: RecordBatch) -> Result<RecordBatch, ArchiveError> {
    let schema = span_schema();
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    if matches!(
        batch
            .schema()
            .field_with_name("trace_id")
            .map(|f| f.data_type()),
        Ok(DataType::FixedSizeBinary(_))
    ) {
        return upgrade_v1(&batch);
    }
    // A v2 file read with other nested names.
    Ok(RecordBatch::try_new(schema, batch.columns().to_vec())?)
}

fn col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, ArchiveError> {
    b.column_by_name(name)
        .ok_or_else(|| ArchiveError::Verify(format!("v1 column {name} missing")))
}

fn typed<'a, T: 'static>(a: &'a ArrayRef, name: &str) -> Result<&'a T, ArchiveError> {
    crate::archive::as_array::<T>(a, name)
}

fn ids(a: &ArrayRef, name: &str) -> Result<ArrayRef, ArchiveError> {
    let a = typed::<FixedSizeBinaryArray>(a, name)?;
    Ok(Arc::new(a.iter().collect::<BinaryArray>()))
}

fn nanos<'a>(a: &'a ArrayRef, name: &str) -> Result<&'a TimestampNanosecondArray, ArchiveError> {
    typed::<TimestampNanosecondArray>(a, name)
}

fn to_micros(a: &TimestampNanosecondArray) -> ArrayRef {
    Arc::new(
        a.unary::<_, TimestampMicrosecondType>(micros)
            .with_timezone("UTC"),
    )
}

fn to_int64(a: &TimestampNanosecondArray) -> ArrayRef {
    Arc::new(Int64Array::new(a.values().clone(), a.nulls().cloned()))
}

fn map(a: &ArrayRef, name: &str) -> Result<ArrayRef, ArchiveError> {
    let m = typed::<MapArray>(a, name)?;
    let DataType::Map(entries, _) = map_type() else {
        return Err(ArchiveError::Verify("map type".into()));
    };
    Ok(Arc::new(MapArray::try_new(
        entries,
        m.offsets().clone(),
        m.entries().clone(),
        m.nulls().cloned(),
        false,
    )?))
}

/// A v1 list of structs rebuilt with v2's element struct, whose children `children` derives
/// from the v1 struct.
fn list(
    a: &ArrayRef,
    name: &str,
    fields: Fields,
    children: impl FnOnce(&StructArray) -> Result<Vec<ArrayRef>, ArchiveError>,
) -> Result<ArrayRef, ArchiveError> {
    let l = typed::<ListArray>(a, name)?;
    let values = l
        .values()
        .as_any()
        .downcast_ref::<StructArray>()
        .ok_or_else(|| {
            ArchiveError::Verify(format!("v1 column {name} is not a list of structs"))
        })?;
    let values = StructArray::try_new(fields.clone(), children(values)?, values.nulls().cloned())?;
    let element = Field::new(LIST_ELEMENT, DataType::Struct(fields), true);
    Ok(Arc::new(ListArray::try_new(
        Arc::new(element),
        l.offsets().clone(),
        Arc::new(values),
        l.nulls().cloned(),
    )?))
}

fn child<'a>(s: &'a StructArray, name: &str) -> Result<&'a ArrayRef, ArchiveError> {
    s.column_by_name(name)
        .ok_or_else(|| ArchiveError::Verify(format!("v1 field {name} missing")))
}

fn upgrade_v1(b: &RecordBatch) -> Result<RecordBatch, ArchiveError> {
    let start = nanos(col(b, "start_time")?, "start_time")?;
    let end = nanos(col(b, "end_time")?, "end_time")?;
    let same = |name: &str| col(b, name).cloned();
    let events = list(col(b, "events")?, "events", event_fields(), |s| {
        let time = nanos(child(s, "time")?, "events.time")?;
        Ok(vec![
            to_micros(time),
            to_int64(time),
            child(s, "name")?.clone(),
            map(child(s, "attributes")?, "events.attributes")?,
        ])
    })?;
    let links = list(col(b, "links")?, "links", link_fields(), |s| {
        Ok(vec![
            ids(child(s, "trace_id")?, "links.trace_id")?,
            ids(child(s, "span_id")?, "links.span_id")?,
            child(s, "trace_state")?.clone(),
            map(child(s, "attributes")?, "links.attributes")?,
        ])
    })?;
    let mut columns: Vec<ArrayRef> = vec![
        ids(col(b, "trace_id")?, "trace_id")?,
        ids(col(b, "span_id")?, "span_id")?,
        ids(col(b, "parent_span_id")?, "parent_span_id")?,
        same("trace_state")?,
        same("service_name")?,
        same("name")?,
        same("kind")?,
        to_micros(start),
        to_micros(end),
        to_int64(start),
        to_int64(end),
        same("duration_ns")?,
        same("status_code")?,
        same("status_message")?,
        map(col(b, "resource_attributes")?, "resource_attributes")?,
        map(col(b, "attributes")?, "attributes")?,
        same("scope_name")?,
        same("scope_version")?,
        events,
        links,
    ];
    for f in span_schema().fields().iter().skip(columns.len()) {
        columns.push(same(f.name())?);
    }
    Ok(RecordBatch::try_new(span_schema(), columns)?)
}
