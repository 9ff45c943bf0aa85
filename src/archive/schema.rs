//! The span schema (v1, one row per span; column names are a contract) and the Parquet writer
//! properties every file is written with.

use std::sync::{Arc, OnceLock};

use arrow_array::Array;

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::segment::map_builder;

pub(crate) fn map_type() -> DataType {
    map_builder().finish().data_type().clone()
}

pub(crate) fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

pub(crate) fn event_fields() -> Fields {
    Fields::from(vec![
        Field::new("time", ts_type(), true),
        Field::new("name", DataType::Utf8, true),
        Field::new("attributes", map_type(), true),
    ])
}

pub(crate) fn link_fields() -> Fields {
    Fields::from(vec![
        Field::new("trace_id", DataType::FixedSizeBinary(16), true),
        Field::new("span_id", DataType::FixedSizeBinary(8), true),
        Field::new("trace_state", DataType::Utf8, true),
        Field::new("attributes", map_type(), true),
    ])
}

/// The Arrow schema of schema v1.
pub fn span_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let utf8 = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
            Arc::new(Schema::new(vec![
                Field::new("trace_id", DataType::FixedSizeBinary(16), false),
                Field::new("span_id", DataType::FixedSizeBinary(8), false),
                Field::new("parent_span_id", DataType::FixedSizeBinary(8), true),
                utf8("trace_state", false),
                utf8("service_name", false),
                utf8("name", false),
                utf8("kind", false),
                Field::new("start_time", ts_type(), false),
                Field::new("end_time", ts_type(), false),
                Field::new("duration_ns", DataType::Int64, false),
                utf8("status_code", false),
                utf8("status_message", false),
                Field::new("resource_attributes", map_type(), false),
                Field::new("attributes", map_type(), false),
                utf8("scope_name", false),
                utf8("scope_version", false),
                Field::new(
                    "events",
                    DataType::List(Arc::new(Field::new(
                        "item",
                        DataType::Struct(event_fields()),
                        true,
                    ))),
                    false,
                ),
                Field::new(
                    "links",
                    DataType::List(Arc::new(Field::new(
                        "item",
                        DataType::Struct(link_fields()),
                        true,
                    ))),
                    false,
                ),
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
            ]))
        })
        .clone()
}

/// Writer settings shared by hot segments and compacted files. `trace_ids` is the expected
/// number of distinct trace ids per row group: it sizes the bloom filter (the writer holds one
/// per row group until the file is closed, so an oversized guess costs memory, not only disk).
pub fn writer_properties(max_row_group_rows: usize, trace_ids: u64) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(max_row_group_rows))
        .set_column_bloom_filter_enabled(ColumnPath::from("trace_id"), true)
        .set_column_bloom_filter_fpp(ColumnPath::from("trace_id"), 0.01)
        .set_column_bloom_filter_max_ndv(ColumnPath::from("trace_id"), trace_ids.max(64))
        // Small pages: a lookup reads few rows, and a merge holds one page per column per input.
        .set_data_page_size_limit(128 << 10)
        .set_data_page_row_count_limit(4096)
        .set_column_dictionary_enabled(ColumnPath::from("trace_id"), false)
        .set_column_dictionary_enabled(ColumnPath::from("span_id"), false)
        .set_column_dictionary_enabled(ColumnPath::from("parent_span_id"), false)
        .build()
}
