//! Parquet: the span schema (v1), the segment encoder, object-store URLs and the object layout.
//!
//! One row per span, flat and analytics-friendly (DESIGN §3.2; column names are a contract: add,
//! never rename). Files are zstd, sorted by trace id then start time, with page-level statistics,
//! the page index and a bloom filter on `trace_id`, so a lookup by trace id reads a few pages.
//!
//! Layout under a tier's URL: `spans/v1/date=YYYY-MM-DD/hour=HH/<file>.parquet`, partitioned by
//! the span's start time (UTC). Hot file names are deterministic from (topic, partition, first
//! offset, last offset, a hash of the rows' (trace id, span id) set), so a replay of the same
//! records rewrites the same file, and two different segments over one offset range (traces that
//! shared records but were decided at different times) never overwrite each other. Every path
//! component is built from numbers and validated topic names: span data never chooses a path.

pub mod catalog;
pub mod compact;
pub mod config;
pub mod cost;
pub mod lookup;
pub mod manifest;
pub mod merge;
pub mod plan;
pub mod tiering;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arrow_array::builder::{
    ArrayBuilder, FixedSizeBinaryBuilder, Float64Builder, Int32Builder, Int64Builder, ListBuilder,
    MapBuilder, StringBuilder, StructBuilder, TimestampNanosecondBuilder,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::otlp::threshold::adjusted_count;
use crate::otlp::{self, render_value, ScopeCtx, SpanKind, SpanRef, StatusCode, TraceId};

/// Version of the span schema; part of every object path.
pub const SCHEMA_VERSION: &str = "v1";

/// Errors of the archive stage.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A buffered span did not decode (it was validated on the way in, so this is a bug or
    /// corruption; the segment is not written and its offsets stay uncommitted).
    #[error("kept span does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    /// Arrow or Parquet encoding failed.
    #[error("parquet encoding failed: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Arrow array construction failed.
    #[error("arrow batch construction failed: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// The object store refused a read or write (retryable).
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// The store URL is not usable.
    #[error("bad store url: {0}")]
    Url(String),
    /// A file did not read back as written (compaction keeps its inputs).
    #[error("verification failed: {0}")]
    Verify(String),
}

/// A parsed object-store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// A local directory.
    File(std::path::PathBuf),
    /// An S3-compatible bucket, with an optional key prefix.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix inside the bucket (no leading or trailing `/`; may be empty).
        prefix: String,
    },
}

/// Parses `file:///abs/dir`, an absolute path, or `s3://bucket[/prefix]`.
pub fn parse_store_url(url: &str) -> Result<StoreUrl, String> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(format!(
                "`{url}`: `{bucket}` is not a bucket name (3-63 of [a-z0-9.-])"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == "." || p == "..") {
            return Err(format!(
                "`{url}`: `.` and `..` are not allowed in the prefix"
            ));
        }
        return Ok(StoreUrl::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        });
    }
    let path = if let Some(rest) = url.strip_prefix("file://") {
        rest
    } else if url.contains("://") {
        return Err(format!(
            "`{url}`: unsupported scheme (file:///abs/dir or s3://bucket/prefix)"
        ));
    } else {
        url
    };
    let p = std::path::PathBuf::from(path);
    if !p.is_absolute() {
        return Err(format!(
            "`{url}`: the path must be absolute (file:///var/lib/tracesift/hot)"
        ));
    }
    Ok(StoreUrl::File(p))
}

/// Checks a URL and its store options without any I/O.
pub fn check_store(
    url: &str,
    options: &std::collections::BTreeMap<String, String>,
) -> Result<(), String> {
    match parse_store_url(url)? {
        StoreUrl::File(_) if !options.is_empty() => Err(format!(
            "`{url}`: options are for s3:// URLs; a file:// tier takes none"
        )),
        StoreUrl::File(_) => Ok(()),
        StoreUrl::S3 { .. } => {
            let bad: Vec<&str> = options
                .keys()
                .filter(|k| k.parse::<object_store::aws::AmazonS3ConfigKey>().is_err())
                .map(|k| k.as_str())
                .collect();
            if bad.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "unknown S3 option(s) {}: use object_store's keys (endpoint, region, access_key_id, secret_access_key, session_token, allow_http, virtual_hosted_style_request, ...)",
                    bad.join(", ")
                ))
            }
        }
    }
}

/// An opened store and, for local directories, where it is on disk (merges read local files
/// directly instead of copying them).
#[derive(Clone)]
pub struct OpenedStore {
    /// The store, rooted at the URL.
    pub store: Arc<dyn object_store::ObjectStore>,
    /// The directory of a `file://` store.
    pub local: Option<std::path::PathBuf>,
}

/// Opens (creating the directory) the object store behind a URL.
pub fn open_store(url: &str) -> Result<Arc<dyn object_store::ObjectStore>, ArchiveError> {
    Ok(open_store_with(url, &Default::default())?.store)
}

/// Opens the object store behind a URL with its options (S3 keys; the rest from `AWS_*`).
pub fn open_store_with(
    url: &str,
    options: &std::collections::BTreeMap<String, String>,
) -> Result<OpenedStore, ArchiveError> {
    check_store(url, options).map_err(ArchiveError::Url)?;
    match parse_store_url(url).map_err(ArchiveError::Url)? {
        StoreUrl::File(dir) => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| ArchiveError::Url(format!("cannot create {}: {e}", dir.display())))?;
            let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)?;
            Ok(OpenedStore {
                store: Arc::new(fs),
                local: Some(dir),
            })
        }
        StoreUrl::S3 { bucket, prefix } => {
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(&bucket);
            for (k, v) in options {
                let key = k
                    .parse::<object_store::aws::AmazonS3ConfigKey>()
                    .map_err(|e| ArchiveError::Url(format!("{k}: {e}")))?;
                b = b.with_config(key, v);
            }
            let s3: Arc<dyn object_store::ObjectStore> = Arc::new(b.build()?);
            let store: Arc<dyn object_store::ObjectStore> = if prefix.is_empty() {
                s3
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(
                    s3,
                    object_store::path::Path::from(prefix),
                ))
            };
            Ok(OpenedStore { store, local: None })
        }
    }
}

/// `date=YYYY-MM-DD/hour=HH` of a Unix-nanosecond time (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HourPartition {
    /// Days since the Unix epoch.
    pub day: i64,
    /// Hour of the day, 0–23.
    pub hour: u8,
}

impl HourPartition {
    /// The partition a span starting at `ns` belongs to.
    pub fn of_nanos(ns: u64) -> HourPartition {
        let secs = (ns / 1_000_000_000) as i64;
        HourPartition {
            day: secs.div_euclid(86_400),
            hour: (secs.rem_euclid(86_400) / 3_600) as u8,
        }
    }

    /// `date=YYYY-MM-DD/hour=HH`.
    pub fn dir(&self) -> String {
        let date = chrono::DateTime::from_timestamp(self.day * 86_400, 0)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_else(|| "1970-01-01".into());
        format!("date={date}/hour={:02}", self.hour)
    }
}

/// Object path of a hot segment file (relative to the tier URL).
pub fn hot_segment_path(
    topic: &str,
    partition: i32,
    first_offset: i64,
    last_offset: i64,
    hour: HourPartition,
    content: u64,
) -> object_store::path::Path {
    // Topic names are validated to [A-Za-z0-9._-] at config load; escape anyway.
    let topic: String = topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    object_store::path::Path::from(format!(
        "spans/{SCHEMA_VERSION}/{}/{topic}-p{partition:05}-{first_offset:020}-{last_offset:020}-{content:016x}.parquet",
        hour.dir()
    ))
}

/// A kept span waiting in a segment.
#[derive(Debug, Clone)]
pub struct KeptSpan {
    /// Trace id.
    pub trace_id: TraceId,
    /// The span's bytes and context.
    pub span: SpanRef,
    /// Name of the policy that kept the trace.
    pub policy: Arc<str>,
    /// This stage's threshold for the trace.
    pub threshold: u64,
}

fn map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::new(None, StringBuilder::new(), StringBuilder::new())
}

fn map_type() -> DataType {
    map_builder().finish().data_type().clone()
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn event_fields() -> Fields {
    Fields::from(vec![
        Field::new("time", ts_type(), true),
        Field::new("name", DataType::Utf8, true),
        Field::new("attributes", map_type(), true),
    ])
}

fn link_fields() -> Fields {
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

fn find<'a>(attrs: &'a [KeyValue], keys: &[&str]) -> Option<&'a AnyValue> {
    keys.iter().find_map(|k| {
        attrs
            .iter()
            .find(|kv| kv.key == *k)
            .and_then(|kv| kv.value.as_ref())
    })
}

fn find_str(attrs: &[KeyValue], keys: &[&str]) -> Option<String> {
    find(attrs, keys).map(|v| render_value(Some(v)))
}

fn find_int(attrs: &[KeyValue], keys: &[&str]) -> Option<i32> {
    match find(attrs, keys)?.value.as_ref()? {
        any_value::Value::IntValue(i) => i32::try_from(*i).ok(),
        any_value::Value::StringValue(s) => s.parse().ok(),
        _ => None,
    }
}

struct ResourceInfo {
    attrs: Vec<KeyValue>,
    service_name: String,
    scope_name: String,
    scope_version: String,
}

struct Row<'a> {
    kept: &'a KeptSpan,
    span: Span,
    res: Arc<ResourceInfo>,
}

fn append_map(
    b: &mut MapBuilder<StringBuilder, StringBuilder>,
    attrs: &[KeyValue],
) -> Result<(), ArchiveError> {
    for kv in attrs {
        b.keys().append_value(&kv.key);
        b.values().append_value(render_value(kv.value.as_ref()));
    }
    b.append(true)?;
    Ok(())
}

fn fixed<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    b.try_into().ok()
}

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
    a: &arrow_array::FixedSizeBinaryArray,
    i: usize,
) -> Result<[u8; N], ArchiveError> {
    fixed(a.value(i)).ok_or_else(|| {
        ArchiveError::Verify(format!("id of {} bytes, expected {N}", a.value(i).len()))
    })
}

/// Builds one record batch (rows already sorted).
fn build_batch(rows: &[Row<'_>]) -> Result<RecordBatch, ArchiveError> {
    let n = rows.len();
    let mut trace_id = FixedSizeBinaryBuilder::with_capacity(n, 16);
    let mut span_id = FixedSizeBinaryBuilder::with_capacity(n, 8);
    let mut parent = FixedSizeBinaryBuilder::with_capacity(n, 8);
    let mut trace_state = StringBuilder::new();
    let mut service = StringBuilder::new();
    let mut name = StringBuilder::new();
    let mut kind = StringBuilder::new();
    let mut start = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut end = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut duration = Int64Builder::with_capacity(n);
    let mut status = StringBuilder::new();
    let mut status_msg = StringBuilder::new();
    let mut res_attrs = map_builder();
    let mut attrs = map_builder();
    let mut scope_name = StringBuilder::new();
    let mut scope_version = StringBuilder::new();
    let mut events = ListBuilder::new(StructBuilder::new(
        event_fields(),
        vec![
            Box::new(TimestampNanosecondBuilder::new().with_timezone("UTC"))
                as Box<dyn ArrayBuilder>,
            Box::new(StringBuilder::new()),
            Box::new(map_builder()),
        ],
    ));
    let mut links = ListBuilder::new(StructBuilder::new(
        link_fields(),
        vec![
            Box::new(FixedSizeBinaryBuilder::new(16)) as Box<dyn ArrayBuilder>,
            Box::new(FixedSizeBinaryBuilder::new(8)),
            Box::new(StringBuilder::new()),
            Box::new(map_builder()),
        ],
    ));
    let mut http_method = StringBuilder::new();
    let mut http_route = StringBuilder::new();
    let mut http_status = Int32Builder::with_capacity(n);
    let mut db_system = StringBuilder::new();
    let mut rpc_service = StringBuilder::new();
    let mut rpc_method = StringBuilder::new();
    let mut k8s_ns = StringBuilder::new();
    let mut k8s_pod = StringBuilder::new();
    let mut host = StringBuilder::new();
    let mut policy = StringBuilder::new();
    let mut adjusted = Float64Builder::with_capacity(n);

    for r in rows {
        let s = &r.span;
        trace_id.append_value(r.kept.trace_id.0)?;
        span_id.append_value(fixed::<8>(&s.span_id).unwrap_or_default())?;
        match fixed::<8>(&s.parent_span_id) {
            Some(p) if p != [0; 8] => parent.append_value(p)?,
            _ => parent.append_null(),
        }
        trace_state.append_value(&s.trace_state);
        service.append_value(&r.res.service_name);
        name.append_value(&s.name);
        kind.append_value(SpanKind::from_i32(s.kind).as_str());
        let st = i64::try_from(s.start_time_unix_nano).unwrap_or(i64::MAX);
        let en = i64::try_from(s.end_time_unix_nano).unwrap_or(i64::MAX);
        start.append_value(st);
        end.append_value(en);
        duration.append_value(en.saturating_sub(st).max(0));
        let (code, msg) = s
            .status
            .as_ref()
            .map(|x| (StatusCode::from_i32(x.code), x.message.as_str()))
            .unwrap_or((StatusCode::Unset, ""));
        status.append_value(code.as_str());
        status_msg.append_value(msg);
        append_map(&mut res_attrs, &r.res.attrs)?;
        append_map(&mut attrs, &s.attributes)?;
        scope_name.append_value(&r.res.scope_name);
        scope_version.append_value(&r.res.scope_version);

        let eb = events.values();
        for ev in &s.events {
            eb.field_builder::<TimestampNanosecondBuilder>(0)
                .ok_or_else(|| ArchiveError::Url("events builder".into()))?
                .append_value(i64::try_from(ev.time_unix_nano).unwrap_or(i64::MAX));
            eb.field_builder::<StringBuilder>(1)
                .ok_or_else(|| ArchiveError::Url("events builder".into()))?
                .append_value(&ev.name);
            let mb = eb
                .field_builder::<MapBuilder<StringBuilder, StringBuilder>>(2)
                .ok_or_else(|| ArchiveError::Url("events builder".into()))?;
            append_map(mb, &ev.attributes)?;
            eb.append(true);
        }
        events.append(true);
        let lb = links.values();
        for l in &s.links {
            let t = lb
                .field_builder::<FixedSizeBinaryBuilder>(0)
                .ok_or_else(|| ArchiveError::Url("links builder".into()))?;
            match fixed::<16>(&l.trace_id) {
                Some(v) => t.append_value(v)?,
                None => t.append_null(),
            }
            let sp = lb
                .field_builder::<FixedSizeBinaryBuilder>(1)
                .ok_or_else(|| ArchiveError::Url("links builder".into()))?;
            match fixed::<8>(&l.span_id) {
                Some(v) => sp.append_value(v)?,
                None => sp.append_null(),
            }
            lb.field_builder::<StringBuilder>(2)
                .ok_or_else(|| ArchiveError::Url("links builder".into()))?
                .append_value(&l.trace_state);
            let mb = lb
                .field_builder::<MapBuilder<StringBuilder, StringBuilder>>(3)
                .ok_or_else(|| ArchiveError::Url("links builder".into()))?;
            append_map(mb, &l.attributes)?;
            lb.append(true);
        }
        links.append(true);

        let a = &s.attributes;
        let ra = &r.res.attrs;
        let both = |keys: &[&str]| find_str(a, keys).or_else(|| find_str(ra, keys));
        http_method.append_option(find_str(a, &["http.request.method", "http.method"]));
        http_route.append_option(find_str(a, &["http.route"]));
        http_status.append_option(find_int(
            a,
            &["http.response.status_code", "http.status_code"],
        ));
        db_system.append_option(find_str(a, &["db.system.name", "db.system"]));
        rpc_service.append_option(find_str(a, &["rpc.service"]));
        rpc_method.append_option(find_str(a, &["rpc.method"]));
        k8s_ns.append_option(both(&["k8s.namespace.name"]));
        k8s_pod.append_option(both(&["k8s.pod.name"]));
        host.append_option(both(&["host.name"]));
        policy.append_value(&*r.kept.policy);
        // The span's effective threshold, as the pipeline wrote it into its tracestate
        // (`otlp::mark_span`); none when the probability is unknown (after a rate limiter).
        let (_, th) = otlp::parse_ot_tracestate(&s.trace_state);
        adjusted.append_option(th.map(adjusted_count));
    }

    let columns: Vec<ArrayRef> = vec![
        Arc::new(trace_id.finish()),
        Arc::new(span_id.finish()),
        Arc::new(parent.finish()),
        Arc::new(trace_state.finish()),
        Arc::new(service.finish()),
        Arc::new(name.finish()),
        Arc::new(kind.finish()),
        Arc::new(start.finish()),
        Arc::new(end.finish()),
        Arc::new(duration.finish()),
        Arc::new(status.finish()),
        Arc::new(status_msg.finish()),
        Arc::new(res_attrs.finish()),
        Arc::new(attrs.finish()),
        Arc::new(scope_name.finish()),
        Arc::new(scope_version.finish()),
        Arc::new(events.finish()),
        Arc::new(links.finish()),
        Arc::new(http_method.finish()),
        Arc::new(http_route.finish()),
        Arc::new(http_status.finish()),
        Arc::new(db_system.finish()),
        Arc::new(rpc_service.finish()),
        Arc::new(rpc_method.finish()),
        Arc::new(k8s_ns.finish()),
        Arc::new(k8s_pod.finish()),
        Arc::new(host.finish()),
        Arc::new(policy.finish()),
        Arc::new(adjusted.finish()),
    ];
    Ok(RecordBatch::try_new(span_schema(), columns)?)
}

/// One encoded Parquet file of a segment.
#[derive(Debug)]
pub struct EncodedFile {
    /// Hour partition of its rows.
    pub hour: HourPartition,
    /// The file.
    pub bytes: Bytes,
    /// Rows in it.
    pub rows: usize,
    /// Order-independent hash of the rows' (trace id, span id), for the file name.
    pub content: u64,
}

/// Order-independent hash of a set of (trace id, span id).
fn content_hash<'a>(keys: impl Iterator<Item = (&'a TraceId, &'a [u8])>) -> u64 {
    keys.fold(0u64, |acc, (t, s)| {
        let mut h = t.fold64() ^ 0x51_7c_c1_b7_27_22_0a_95;
        for b in s {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
        h ^= h >> 33;
        acc.wrapping_add(h.wrapping_mul(0xff51_afd7_ed55_8ccd))
    })
}

/// Fully decodes kept spans and encodes them as Parquet, one file per hour partition, rows sorted
/// by (trace id, start time). CPU-bound: run it on a blocking thread.
pub fn encode_segment(
    spans: &[KeptSpan],
    max_row_group_rows: usize,
) -> Result<Vec<EncodedFile>, ArchiveError> {
    let mut resources: HashMap<*const ScopeCtx, Arc<ResourceInfo>> = HashMap::new();
    let mut rows: Vec<Row<'_>> = Vec::with_capacity(spans.len());
    for k in spans {
        let key = Arc::as_ptr(&k.span.ctx);
        let res = match resources.get(&key) {
            Some(r) => Arc::clone(r),
            None => {
                let resource = otlp::decode_resource(&k.span.ctx)?;
                let scope = otlp::decode_scope(&k.span.ctx)?;
                let info = Arc::new(ResourceInfo {
                    service_name: find_str(&resource.attributes, &["service.name"])
                        .unwrap_or_default(),
                    attrs: resource.attributes,
                    scope_name: scope.name,
                    scope_version: scope.version,
                });
                resources.insert(key, Arc::clone(&info));
                info
            }
        };
        rows.push(Row {
            kept: k,
            span: otlp::decode_span(&k.span)?,
            res,
        });
    }
    rows.sort_by(|a, b| {
        (
            a.kept.trace_id,
            a.span.start_time_unix_nano,
            &a.span.span_id,
        )
            .cmp(&(
                b.kept.trace_id,
                b.span.start_time_unix_nano,
                &b.span.span_id,
            ))
    });
    let mut by_hour: std::collections::BTreeMap<HourPartition, Vec<Row<'_>>> = Default::default();
    for r in rows {
        by_hour
            .entry(HourPartition::of_nanos(r.span.start_time_unix_nano))
            .or_default()
            .push(r);
    }
    let mut out = Vec::with_capacity(by_hour.len());
    for (hour, rows) in by_hour {
        let content = content_hash(
            rows.iter()
                .map(|r| (&r.kept.trace_id, r.span.span_id.as_slice())),
        );
        let batch = build_batch(&rows)?;
        let traces = 1 + rows
            .windows(2)
            .filter(|w| w[0].kept.trace_id != w[1].kept.trace_id)
            .count() as u64;
        let props = writer_properties(max_row_group_rows, traces.min(max_row_group_rows as u64));
        let mut buf = Vec::with_capacity(64 << 10);
        let mut w = ArrowWriter::try_new(&mut buf, span_schema(), Some(props.clone()))?;
        w.write(&batch)?;
        w.close()?;
        out.push(EncodedFile {
            hour,
            bytes: Bytes::from(buf),
            rows: rows.len(),
            content,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hour_partitions_and_paths() {
        // 2024-03-05T07:59:59Z
        let ns = 1_709_625_599u64 * 1_000_000_000;
        let h = HourPartition::of_nanos(ns);
        assert_eq!(h.dir(), "date=2024-03-05/hour=07");
        let p = hot_segment_path("otlp_spans", 3, 10, 42, h, 0xabc);
        assert_eq!(
            p.as_ref(),
            "spans/v1/date=2024-03-05/hour=07/otlp_spans-p00003-00000000000000000010-00000000000000000042-0000000000000abc.parquet"
        );
        // A hostile topic name cannot escape the directory.
        let p = hot_segment_path("../../etc/x", 0, 0, 0, h, 0);
        assert!(!p.as_ref().contains(".."), "{p}");
        assert_eq!(p.as_ref().matches('/').count(), 4);
    }

    #[test]
    fn content_hash_ignores_order_but_not_content() {
        let a = (TraceId([1; 16]), [1u8; 8]);
        let b = (TraceId([2; 16]), [2u8; 8]);
        let h = |v: &[(TraceId, [u8; 8])]| content_hash(v.iter().map(|(t, s)| (t, s.as_slice())));
        assert_eq!(h(&[a, b]), h(&[b, a]));
        assert_ne!(h(&[a, b]), h(&[a]));
        assert_ne!(h(&[a, a]), h(&[b, b]));
    }

    #[test]
    fn store_urls() {
        assert!(parse_store_url("file:///var/x").is_ok());
        assert!(parse_store_url("/var/x").is_ok());
        assert!(parse_store_url("relative/x").is_err());
        assert!(parse_store_url("gopher://x").is_err());
        assert_eq!(
            parse_store_url("s3://traces-cold/a/b/").unwrap(),
            StoreUrl::S3 {
                bucket: "traces-cold".into(),
                prefix: "a/b".into()
            }
        );
        assert!(parse_store_url("s3://Bad_Bucket/x").is_err());
        assert!(parse_store_url("s3://bucket/../x").is_err());
        let mut opts = std::collections::BTreeMap::new();
        opts.insert("endpoint".to_string(), "http://127.0.0.1:3900".to_string());
        assert!(check_store("s3://bucket/x", &opts).is_ok());
        assert!(check_store("file:///x", &opts).is_err());
        opts.insert("endpoitn".to_string(), "x".to_string());
        assert!(check_store("s3://bucket/x", &opts)
            .unwrap_err()
            .contains("endpoitn"));
    }

    #[test]
    fn values_render_as_otlp_json_scalars() {
        let v = |x| Some(AnyValue { value: Some(x) });
        assert_eq!(
            render_value(v(any_value::Value::StringValue("a b".into())).as_ref()),
            "a b"
        );
        assert_eq!(
            render_value(v(any_value::Value::IntValue(42)).as_ref()),
            "42"
        );
        assert_eq!(
            render_value(v(any_value::Value::BoolValue(true)).as_ref()),
            "true"
        );
        assert_eq!(
            render_value(v(any_value::Value::DoubleValue(1.5)).as_ref()),
            "1.5"
        );
        assert_eq!(render_value(None), "");
    }
}
