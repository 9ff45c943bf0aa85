//! The span schema (v2, one row per span; column names are a contract), the v1 schema it
//! replaced (still read: see [`crate::archive::upgrade`]) and the Parquet writer properties every
//! file is written with.
//!
//! v2 is portable by construction: every engine reads it without flags. Times are microsecond
//! `TIMESTAMP`s with UTC (Spark, Trino, Athena, BigQuery and Snowflake read nothing finer as a
//! timestamp) beside the exact `*_unix_nano` Int64; ids are plain `BYTE_ARRAY` (Spark has no
//! fixed-size binary, some Polars versions panic on it); maps and lists carry the Parquet spec's
//! group names (`key_value`, `element`), which strict readers require.

use std::sync::{Arc, OnceLock};

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

/// Name of a map's entries group, as the Parquet spec gives it.
pub(crate) const MAP_ENTRIES: &str = "key_value";
/// Name of a list's element field, as the Parquet spec gives it.
pub(crate) const LIST_ELEMENT: &str = "element";

/// `Map(Utf8 → Utf8)` with the spec's names.
pub(crate) fn map_type() -> DataType {
    DataType::Map(Arc::new(map_entries_field(MAP_ENTRIES)), false)
}

fn map_entries_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Utf8, true),
        ])),
        false,
    )
}

/// Timestamp of v2: microseconds, UTC.
pub(crate) fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Ids of v2: variable-length binary.
pub(crate) const ID_TYPE: DataType = DataType::Binary;

pub(crate) fn event_fields() -> Fields {
    Fields::from(vec![
        Field::new("time", ts_type(), true),
        Field::new("time_unix_nano", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("attributes", map_type(), true),
    ])
}

pub(crate) fn link_fields() -> Fields {
    Fields::from(vec![
        Field::new("trace_id", ID_TYPE, true),
        Field::new("span_id", ID_TYPE, true),
        Field::new("trace_state", DataType::Utf8, true),
        Field::new("attributes", map_type(), true),
    ])
}

pub(crate) fn list_of(fields: Fields) -> DataType {
    DataType::List(Arc::new(Field::new(
        LIST_ELEMENT,
        DataType::Struct(fields),
        true,
    )))
}

fn utf8(n: &str, null: bool) -> Field {
    Field::new(n, DataType::Utf8, null)
}

/// The semantic-convention columns and the sampling columns, the same in v1 and v2.
fn tail_fields() -> Vec<Field> {
    vec![
        utf8("http_method", true),
        utf8("http_route", true),
        Field::new("http_status_code", DataType::Int32, true),
        utf8("db_system", true),
        utf8("rpc_service", true),
        utf8("rpc_method", true),
        utf8("k8s_namespace", true),
        utf8("k8s_pod", true),
        utf8("host_name", true),
        utf8("sampling_policy", false),
        Field::new("sampling_adjusted_count", DataType::Float64, true),
    ]
}

/// The Arrow schema of schema v2 (what every file is written with).
pub fn span_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let mut fields = vec![
                Field::new("trace_id", ID_TYPE, false),
                Field::new("span_id", ID_TYPE, false),
                Field::new("parent_span_id", ID_TYPE, true),
                utf8("trace_state", false),
                utf8("service_name", false),
                utf8("name", false),
                utf8("kind", false),
                Field::new("start_time", ts_type(), false),
                Field::new("end_time", ts_type(), false),
                Field::new("start_time_unix_nano", DataType::Int64, false),
                Field::new("end_time_unix_nano", DataType::Int64, false),
                Field::new("duration_ns", DataType::Int64, false),
                utf8("status_code", false),
                utf8("status_message", false),
                Field::new("resource_attributes", map_type(), false),
                Field::new("attributes", map_type(), false),
                utf8("scope_name", false),
                utf8("scope_version", false),
                Field::new("events", list_of(event_fields()), false),
                Field::new("links", list_of(link_fields()), false),
            ];
            fields.extend(tail_fields());
            Arc::new(Schema::new(fields))
        })
        .clone()
}

/// The Arrow schema of schema v1 (`spans/v1/`, written until v2 replaced it): nanosecond
/// timestamps, fixed-size binary ids, arrow-rs's map group name `entries`. Only read now.
pub fn span_schema_v1() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let ts = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
            let map = DataType::Map(Arc::new(map_entries_field("entries")), false);
            let list = |fields: Vec<Field>| {
                DataType::List(Arc::new(Field::new(
                    "item",
                    DataType::Struct(Fields::from(fields)),
                    true,
                )))
            };
            let mut fields = vec![
                Field::new("trace_id", DataType::FixedSizeBinary(16), false),
                Field::new("span_id", DataType::FixedSizeBinary(8), false),
                Field::new("parent_span_id", DataType::FixedSizeBinary(8), true),
                utf8("trace_state", false),
                utf8("service_name", false),
                utf8("name", false),
                utf8("kind", false),
                Field::new("start_time", ts.clone(), false),
                Field::new("end_time", ts.clone(), false),
                Field::new("duration_ns", DataType::Int64, false),
                utf8("status_code", false),
                utf8("status_message", false),
                Field::new("resource_attributes", map.clone(), false),
                Field::new("attributes", map.clone(), false),
                utf8("scope_name", false),
                utf8("scope_version", false),
                Field::new(
                    "events",
                    list(vec![
                        Field::new("time", ts, true),
                        Field::new("name", DataType::Utf8, true),
                        Field::new("attributes", map.clone(), true),
                    ]),
                    false,
                ),
                Field::new(
                    "links",
                    list(vec![
                        Field::new("trace_id", DataType::FixedSizeBinary(16), true),
                        Field::new("span_id", DataType::FixedSizeBinary(8), true),
                        Field::new("trace_state", DataType::Utf8, true),
                        Field::new("attributes", map, true),
                    ]),
                    false,
                ),
            ];
            fields.extend(tail_fields());
            Arc::new(Schema::new(fields))
        })
        .clone()
}

/// zstd level of hot segments: written on the hot path, within seconds of the decision.
pub const HOT_ZSTD_LEVEL: i32 = 3;

/// zstd level of compacted files: written once in the background and kept for months in the
/// colder tiers. Measured on `bench-archive --traces 100000` (compacted B/span, compaction peak
/// RSS): level 3 43.8 / 207 MiB, level 6 42.2 / 216 MiB, level 9 41.7 / 250 MiB. Level 6 takes
/// most of the gain without growing the compactor's memory much past its budget's accounting.
pub const COMPACTED_ZSTD_LEVEL: i32 = 6;

/// Writer settings shared by hot segments and compacted files (`zstd_level`: one of
/// [`HOT_ZSTD_LEVEL`], [`COMPACTED_ZSTD_LEVEL`]). `trace_ids` is the expected number of distinct
/// trace ids per row group: it sizes the bloom filter (the writer holds one per row group until
/// the file is closed, so an oversized guess costs memory, not only disk).
pub fn writer_properties(
    max_row_group_rows: usize,
    trace_ids: u64,
    zstd_level: i32,
) -> WriterProperties {
    let level = ZstdLevel::try_new(zstd_level).unwrap_or_default();
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(max_row_group_rows))
        // Spec names for list and map groups even where an input batch carried others.
        .set_coerce_types(true)
        .set_column_bloom_filter_enabled(ColumnPath::from("trace_id"), true)
        .set_column_bloom_filter_fpp(ColumnPath::from("trace_id"), 0.01)
        .set_column_bloom_filter_max_ndv(ColumnPath::from("trace_id"), trace_ids.max(64))
        // Small pages: a lookup reads few rows, and a merge holds one page per column per input.
        .set_data_page_size_limit(128 << 10)
        .set_data_page_row_count_limit(4096);
    // Statistics of map and list leaves prune nothing (no engine filters row groups by an
    // attribute's min / max) and cost a comparison per value.
    for c in [
        "resource_attributes.key_value.key",
        "resource_attributes.key_value.value",
        "attributes.key_value.key",
        "attributes.key_value.value",
        "events.list.element.time",
        "events.list.element.time_unix_nano",
        "events.list.element.name",
        "events.list.element.attributes.key_value.key",
        "events.list.element.attributes.key_value.value",
        "links.list.element.trace_id",
        "links.list.element.span_id",
        "links.list.element.trace_state",
        "links.list.element.attributes.key_value.key",
        "links.list.element.attributes.key_value.value",
        // Random ids: a page's min and max span nearly the whole range, so they prune nothing
        // (a lookup by id goes through the trace id's bloom filter and sort order).
        "span_id",
        "parent_span_id",
    ] {
        let path = ColumnPath::new(c.split('.').map(String::from).collect());
        b = b.set_column_statistics_enabled(path, EnabledStatistics::None);
    }
    // Columns with a distinct value per row: a dictionary only costs a fallback (and in small hot
    // segments the abandoned dictionary page is written too: 8 B per span on the time columns).
    for c in [
        "trace_id",
        "span_id",
        "parent_span_id",
        "start_time",
        "end_time",
        "start_time_unix_nano",
        "end_time_unix_nano",
        "duration_ns",
    ] {
        b = b.set_column_dictionary_enabled(ColumnPath::from(c), false);
    }
    // Times and durations as deltas: spans of a trace lie close together, so the deltas need
    // far fewer bits than the values and zstd has less to do (issue 30, measured with
    // callgrind on `emit/parquet`: 3.9% fewer instructions, files 1.9% smaller). Every engine
    // of the matrix reads DELTA_BINARY_PACKED.
    for c in [
        "start_time",
        "end_time",
        "start_time_unix_nano",
        "end_time_unix_nano",
        "duration_ns",
    ] {
        b = b.set_column_encoding(ColumnPath::from(c), Encoding::DELTA_BINARY_PACKED);
    }
    // Span ids as DELTA_LENGTH_BYTE_ARRAY: their lengths (all eight) pack into a few bytes, and
    // the ids themselves are random, so zstd has nothing to take from `span_id` (without the
    // PLAIN length prefixes) and only skips over it; `parent_span_id` keeps zstd (siblings share
    // theirs). The time columns' deltas do not compress either (0–5%). Measured with callgrind
    // on `emit/parquet` (issue 30): 8% fewer encoder instructions, files 0.7% larger. Every
    // engine of the matrix reads DELTA_LENGTH_BYTE_ARRAY.
    for c in ["span_id", "parent_span_id"] {
        b = b.set_column_encoding(ColumnPath::from(c), Encoding::DELTA_LENGTH_BYTE_ARRAY);
    }
    for c in [
        "span_id",
        "start_time",
        "end_time",
        "start_time_unix_nano",
        "end_time_unix_nano",
        "duration_ns",
    ] {
        b = b.set_column_compression(ColumnPath::from(c), Compression::UNCOMPRESSED);
    }
    // Attribute maps hold ten or more entries per span: at 128 KiB their pages hold a few
    // hundred spans and compress worse (about 3 B per span); 1 MiB pages keep a lookup's decode
    // to about one page of a few thousand spans, like the other columns.
    for c in [
        "resource_attributes.key_value.key",
        "resource_attributes.key_value.value",
        "attributes.key_value.key",
        "attributes.key_value.value",
    ] {
        let path = ColumnPath::new(c.split('.').map(String::from).collect());
        b = b
            .set_column_data_page_size_limit(path.clone(), 1 << 20)
            .set_column_data_page_row_count_limit(path, 1 << 20);
    }
    b.build()
}
