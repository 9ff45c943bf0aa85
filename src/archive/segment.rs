//! The segment encoder: kept spans into sorted, zstd-compressed Parquet files (schema v2), one
//! per hour partition.
//!
//! Rows are built from the bytes the pipeline already holds: each span is read in place
//! ([`crate::otlp::fields`]: borrowed strings, scalars parsed where they lie, no message built)
//! and appended to the Arrow builders, its strings as ids of the segment's strings (written by
//! [`super::string_columns`]); each distinct resource and scope is decoded and rendered once per
//! segment and shared by its spans. The rows are exactly those a full `prost` decode gives, and
//! the files those the Arrow writer writes (`tests/encoder_golden.rs` compares them byte for
//! byte).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BinaryBuilder, Float64Builder, Int32Builder, Int64Builder, ListBuilder,
    MapBuilder, MapFieldNames, StringBuilder, StructBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::ArrayRef;
use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use parquet::arrow::arrow_writer::{compute_leaves, ArrowRowGroupWriterFactory};
use parquet::arrow::{add_encoded_arrow_schema_to_metadata, ArrowSchemaConverter};
use parquet::file::writer::SerializedFileWriter;

use super::layout::HourPartition;
use super::schema::*;
use super::string_columns::{
    self, ChunkRows, ChunkScratch, Leaf, MapRows, Strings, WordHasher, Zstd, NULL,
};

use super::ArchiveError;
use crate::otlp::fields::{Kv, Repeated, SpanFields, Value};
use crate::otlp::threshold::Threshold;
use crate::otlp::{self, render_value, ScopeCtx, SpanKind, SpanRef, StatusCode, TraceId};

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
    pub threshold: Threshold,
}

/// The spec's names of a map's groups.
fn map_field_names() -> MapFieldNames {
    MapFieldNames {
        entry: MAP_ENTRIES.into(),
        key: "key".into(),
        value: "value".into(),
    }
}

pub(crate) fn map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::new(
        Some(map_field_names()),
        StringBuilder::new(),
        StringBuilder::new(),
    )
}

/// Microseconds of a Unix-nanosecond time (truncated; v2's timestamp columns).
pub(crate) fn micros(ns: i64) -> i64 {
    ns.div_euclid(1_000)
}

/// A Unix-nanosecond time as written (times past `i64::MAX` saturate).
fn nanos(ns: u64) -> i64 {
    i64::try_from(ns).unwrap_or(i64::MAX)
}

/// A list builder whose element field has the spec's name and v2's struct.
fn list_builder(
    fields: arrow_schema::Fields,
    builders: Vec<Box<dyn ArrayBuilder>>,
) -> ListBuilder<StructBuilder> {
    let element = arrow_schema::Field::new(
        LIST_ELEMENT,
        arrow_schema::DataType::Struct(fields.clone()),
        true,
    );
    ListBuilder::new(StructBuilder::new(fields, builders)).with_field(element)
}

fn find_str(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .map(|v| render_value(Some(v)))
}

/// A resource and scope, decoded and rendered once per segment.
struct ResourceInfo {
    /// Its index in the segment's list of resources (where its map entries are).
    index: u32,
    /// Attributes as (key, rendered value).
    attrs: Vec<(String, String)>,
    service_name: String,
    scope_name: String,
    scope_version: String,
    k8s_namespace: Option<String>,
    k8s_pod: Option<String>,
    host_name: Option<String>,
}

impl ResourceInfo {
    fn of(ctx: &ScopeCtx, index: u32) -> Option<ResourceInfo> {
        let resource = otlp::decode_resource(ctx).ok()?;
        let scope = otlp::decode_scope(ctx).ok()?;
        let a = &resource.attributes;
        Some(ResourceInfo {
            index,
            service_name: find_str(a, "service.name").unwrap_or_default(),
            k8s_namespace: find_str(a, "k8s.namespace.name"),
            k8s_pod: find_str(a, "k8s.pod.name"),
            host_name: find_str(a, "host.name"),
            attrs: a
                .iter()
                .map(|kv| (kv.key.clone(), render_value(kv.value.as_ref())))
                .collect(),
            scope_name: scope.name,
            scope_version: scope.version,
        })
    }
}

/// The span attributes with a column of their own, as slots (a key list in order of
/// preference picks the first slot that holds a value).
const HTTP_METHOD: &[usize] = &[0, 1];
const HTTP_ROUTE: &[usize] = &[2];
const HTTP_STATUS: &[usize] = &[3, 4];
const DB_SYSTEM: &[usize] = &[5, 6];
const RPC_SERVICE: &[usize] = &[7];
const RPC_METHOD: &[usize] = &[8];
const K8S_NAMESPACE: &[usize] = &[9];
const K8S_POD: &[usize] = &[10];
const HOST_NAME: &[usize] = &[11];

fn slot(key: &str) -> Option<usize> {
    // Most keys are none of these: the first byte rules them out without a comparison.
    if !matches!(key.as_bytes().first(), Some(b'h' | b'd' | b'r' | b'k')) {
        return None;
    }
    Some(match key {
        "http.request.method" => 0,
        "http.method" => 1,
        "http.route" => 2,
        "http.response.status_code" => 3,
        "http.status_code" => 4,
        "db.system.name" => 5,
        "db.system" => 6,
        "rpc.service" => 7,
        "rpc.method" => 8,
        "k8s.namespace.name" => 9,
        "k8s.pod.name" => 10,
        "host.name" => 11,
        _ => return None,
    })
}

/// Per slot, the first attribute with its key: `Some(None)` when that attribute has no value
/// (the key then counts as absent, and the next key of the list is tried).
type Slots<'a> = [Option<Option<Value<'a>>>; 12];

fn pick<'a>(slots: &Slots<'a>, keys: &[usize]) -> Option<Value<'a>> {
    keys.iter().find_map(|&k| slots[k].flatten())
}

/// An HTTP status code from an int or a numeric string attribute.
fn status_code(v: Value<'_>) -> Result<Option<i32>, ArchiveError> {
    Ok(match v {
        Value::Int(i) => i32::try_from(i).ok(),
        Value::Str(s) => s.parse().ok(),
        Value::Complex(kv) => {
            use prost::Message;
            let kv = KeyValue::decode(kv)?;
            match kv.value.and_then(|v: AnyValue| v.value) {
                Some(any_value::Value::IntValue(i)) => i32::try_from(i).ok(),
                Some(any_value::Value::StringValue(s)) => s.parse().ok(),
                _ => None,
            }
        }
        _ => None,
    })
}

struct Row<'a> {
    kept: &'a KeptSpan,
    span: SpanFields<'a>,
    res: Arc<ResourceInfo>,
}

fn rejected(e: otlp::DecodeError) -> ArchiveError {
    ArchiveError::Rejected(e.to_string())
}

/// The Arrow builders of one record batch: the columns that are not strings (the string
/// columns go to [`HandColumns`]).
struct Columns {
    trace_id: BinaryBuilder,
    span_id: BinaryBuilder,
    parent: BinaryBuilder,
    start: TimestampMicrosecondBuilder,
    end: TimestampMicrosecondBuilder,
    start_ns: Int64Builder,
    end_ns: Int64Builder,
    duration: Int64Builder,
    events: ListBuilder<StructBuilder>,
    links: ListBuilder<StructBuilder>,
    http_status: Int32Builder,
    adjusted: Float64Builder,
    /// Rendering buffer for attribute values.
    scratch: String,
}

/// The top-level string columns of schema v2, written by [`string_columns`] (in schema order).
const FLAT: [&str; 17] = [
    "trace_state",
    "service_name",
    "name",
    "kind",
    "status_code",
    "status_message",
    "scope_name",
    "scope_version",
    "http_method",
    "http_route",
    "db_system",
    "rpc_service",
    "rpc_method",
    "k8s_namespace",
    "k8s_pod",
    "host_name",
    "sampling_policy",
];

/// The map columns of schema v2, written by [`string_columns`].
const MAPS: [&str; 2] = ["resource_attributes", "attributes"];

/// Positions in [`FLAT`].
mod flat {
    pub const TRACE_STATE: usize = 0;
    pub const SERVICE: usize = 1;
    pub const NAME: usize = 2;
    pub const KIND: usize = 3;
    pub const STATUS: usize = 4;
    pub const STATUS_MESSAGE: usize = 5;
    pub const SCOPE_NAME: usize = 6;
    pub const SCOPE_VERSION: usize = 7;
    pub const HTTP_METHOD: usize = 8;
    pub const HTTP_ROUTE: usize = 9;
    pub const DB_SYSTEM: usize = 10;
    pub const RPC_SERVICE: usize = 11;
    pub const RPC_METHOD: usize = 12;
    pub const K8S_NAMESPACE: usize = 13;
    pub const K8S_POD: usize = 14;
    pub const HOST: usize = 15;
    pub const POLICY: usize = 16;
}

fn builder_missing(what: &str) -> ArchiveError {
    ArchiveError::Verify(format!("{what} builder of another type"))
}

/// The string id of an attribute value as rendered (a string as it lies in the span), else
/// `fallback` (an id or [`NULL`]).
fn value_id<'a>(
    strings: &mut Strings<'a>,
    v: Option<Value<'a>>,
    fallback: u32,
    scratch: &mut String,
) -> Result<u32, ArchiveError> {
    Ok(match v {
        Some(Value::Str(s)) => strings.borrowed(s),
        Some(v) => {
            v.render(scratch).map_err(rejected)?;
            strings.rendered(scratch)
        }
        None => fallback,
    })
}

/// Appends an attribute value as rendered (a string as it is, without a copy through
/// `scratch`; no value: empty).
fn append_rendered(
    b: &mut StringBuilder,
    v: Option<Value<'_>>,
    scratch: &mut String,
) -> Result<(), ArchiveError> {
    match v {
        Some(Value::Str(s)) => b.append_value(s),
        Some(v) => {
            v.render(scratch).map_err(rejected)?;
            b.append_value(&*scratch);
        }
        None => b.append_value(""),
    }
    Ok(())
}

fn append_kvs(
    b: &mut MapBuilder<StringBuilder, StringBuilder>,
    kvs: Repeated<'_>,
    scratch: &mut String,
) -> Result<(), ArchiveError> {
    for kv in kvs {
        let kv = kv.map_err(rejected)?;
        b.keys().append_value(kv.key);
        append_rendered(b.values(), kv.value, scratch)?;
    }
    b.append(true)?;
    Ok(())
}

impl Columns {
    /// Builders sized for `rows` from their wire bytes, so that appending does not keep
    /// reallocating and copying.
    fn new(rows: &[Row<'_>]) -> Columns {
        let n = rows.len();
        Columns {
            trace_id: BinaryBuilder::with_capacity(n, 16 * n),
            span_id: BinaryBuilder::with_capacity(n, 8 * n),
            parent: BinaryBuilder::with_capacity(n, 8 * n),
            start: TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC"),
            end: TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC"),
            start_ns: Int64Builder::with_capacity(n),
            end_ns: Int64Builder::with_capacity(n),
            duration: Int64Builder::with_capacity(n),
            events: list_builder(
                event_fields(),
                vec![
                    Box::new(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
                        as Box<dyn ArrayBuilder>,
                    Box::new(Int64Builder::new()),
                    Box::new(StringBuilder::new()),
                    Box::new(map_builder()),
                ],
            ),
            links: list_builder(
                link_fields(),
                vec![
                    Box::new(BinaryBuilder::new()) as Box<dyn ArrayBuilder>,
                    Box::new(BinaryBuilder::new()),
                    Box::new(StringBuilder::new()),
                    Box::new(map_builder()),
                ],
            ),
            http_status: Int32Builder::with_capacity(n),
            adjusted: Float64Builder::with_capacity(n),
            scratch: String::new(),
        }
    }

    /// Appends a row; its string columns go to `hand` (as string ids).
    fn append<'a>(
        &mut self,
        r: &Row<'a>,
        hand: &mut HandColumns<'a, '_>,
    ) -> Result<(), ArchiveError> {
        let s = &r.span;
        let res = hand
            .by_resource
            .get(r.res.index as usize)
            .ok_or_else(|| ArchiveError::Verify("a row of no resource".into()))?;
        let strings = &mut *hand.strings;
        let mut row = [NULL; FLAT.len()];
        self.trace_id.append_value(r.kept.trace_id.0);
        self.span_id
            .append_value(fixed::<8>(s.span_id).unwrap_or_default());
        match fixed::<8>(s.parent_span_id) {
            Some(p) if p != [0; 8] => self.parent.append_value(p),
            _ => self.parent.append_null(),
        }
        row[flat::TRACE_STATE] = strings.borrowed(s.trace_state);
        row[flat::SERVICE] = res.service;
        row[flat::NAME] = strings.borrowed(s.name);
        row[flat::KIND] = hand.enums.kind(strings, s.kind);
        let (st, en) = (nanos(s.start_ns), nanos(s.end_ns));
        self.start.append_value(micros(st));
        self.end.append_value(micros(en));
        self.start_ns.append_value(st);
        self.end_ns.append_value(en);
        self.duration.append_value(en.saturating_sub(st).max(0));
        row[flat::STATUS] = hand.enums.status(strings, s.status_code);
        row[flat::STATUS_MESSAGE] = strings.borrowed(s.status_message);

        // Span attributes: the map, and the first value of each key with a column.
        let mut slots: Slots<'_> = [None; 12];
        for raw in s.attributes().raw() {
            let raw = raw.map_err(rejected)?;
            let kv = match hand.kvs.0.get(raw.bytes()) {
                Some(kv) => *kv,
                None => {
                    let Kv { key, value } = raw.read().map_err(rejected)?;
                    let empty = strings.borrowed("");
                    let kv = KnownKv {
                        key: strings.borrowed(key),
                        value: value_id(strings, value, empty, &mut self.scratch)?,
                        slot: slot(key).map(|i| (i, value)),
                    };
                    if hand.kvs.0.len() < KNOWN_KVS {
                        hand.kvs.0.insert(raw.bytes(), kv);
                    }
                    kv
                }
            };
            if let Some((i, value)) = kv.slot {
                slots[i].get_or_insert(value);
            }
            hand.attributes.push(kv.key, kv.value);
        }
        row[flat::SCOPE_NAME] = res.scope_name;
        row[flat::SCOPE_VERSION] = res.scope_version;

        let eb = self.events.values();
        for e in s.events() {
            let e = e.map_err(rejected)?;
            let t = nanos(e.time_ns);
            eb.field_builder::<TimestampMicrosecondBuilder>(0)
                .ok_or_else(|| builder_missing("events.time"))?
                .append_value(micros(t));
            eb.field_builder::<Int64Builder>(1)
                .ok_or_else(|| builder_missing("events.time_unix_nano"))?
                .append_value(t);
            eb.field_builder::<StringBuilder>(2)
                .ok_or_else(|| builder_missing("events.name"))?
                .append_value(e.name);
            let mb = eb
                .field_builder::<MapBuilder<StringBuilder, StringBuilder>>(3)
                .ok_or_else(|| builder_missing("events.attributes"))?;
            append_kvs(mb, e.attributes(), &mut self.scratch)?;
            eb.append(true);
        }
        self.events.append(true);
        let lb = self.links.values();
        for l in s.links() {
            let l = l.map_err(rejected)?;
            let t = lb
                .field_builder::<BinaryBuilder>(0)
                .ok_or_else(|| builder_missing("links.trace_id"))?;
            match fixed::<16>(l.trace_id) {
                Some(v) => t.append_value(v),
                None => t.append_null(),
            }
            let sp = lb
                .field_builder::<BinaryBuilder>(1)
                .ok_or_else(|| builder_missing("links.span_id"))?;
            match fixed::<8>(l.span_id) {
                Some(v) => sp.append_value(v),
                None => sp.append_null(),
            }
            lb.field_builder::<StringBuilder>(2)
                .ok_or_else(|| builder_missing("links.trace_state"))?
                .append_value(l.trace_state);
            let mb = lb
                .field_builder::<MapBuilder<StringBuilder, StringBuilder>>(3)
                .ok_or_else(|| builder_missing("links.attributes"))?;
            append_kvs(mb, l.attributes(), &mut self.scratch)?;
            lb.append(true);
        }
        self.links.append(true);

        let sc = &mut self.scratch;
        // Span attribute first, else (for the Kubernetes and host columns) the resource's.
        for (column, keys, fallback) in [
            (flat::HTTP_METHOD, HTTP_METHOD, NULL),
            (flat::HTTP_ROUTE, HTTP_ROUTE, NULL),
            (flat::DB_SYSTEM, DB_SYSTEM, NULL),
            (flat::RPC_SERVICE, RPC_SERVICE, NULL),
            (flat::RPC_METHOD, RPC_METHOD, NULL),
            (flat::K8S_NAMESPACE, K8S_NAMESPACE, res.k8s_namespace),
            (flat::K8S_POD, K8S_POD, res.k8s_pod),
            (flat::HOST, HOST_NAME, res.host_name),
        ] {
            row[column] = value_id(strings, pick(&slots, keys), fallback, sc)?;
        }
        self.http_status
            .append_option(match pick(&slots, HTTP_STATUS) {
                Some(v) => status_code(v)?,
                None => None,
            });
        row[flat::POLICY] = match hand.enums.policy {
            Some((p, id)) if std::ptr::eq(p, &*r.kept.policy) => id,
            _ => {
                let id = strings.borrowed(&r.kept.policy);
                hand.enums.policy = Some((&*r.kept.policy as *const str, id));
                id
            }
        };
        // The span's effective threshold, as the pipeline wrote it into its tracestate
        // (`otlp::mark_span`); none when the probability is unknown (after a rate limiter).
        let (_, th) = otlp::parse_ot_tracestate(s.trace_state);
        self.adjusted
            .append_option(th.map(Threshold::adjusted_count));
        // The row is complete: its string columns end with it.
        for (column, id) in hand.flat.iter_mut().zip(row) {
            column.push(id);
        }
        hand.attributes.end_row();
        hand.resource.extend(&res.entries);
        hand.resource.end_row();
        Ok(())
    }

    /// The columns written through Arrow, in schema order.
    fn finish(mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent.finish()),
            Arc::new(self.start.finish()),
            Arc::new(self.end.finish()),
            Arc::new(self.start_ns.finish()),
            Arc::new(self.end_ns.finish()),
            Arc::new(self.duration.finish()),
            Arc::new(self.events.finish()),
            Arc::new(self.links.finish()),
            Arc::new(self.http_status.finish()),
            Arc::new(self.adjusted.finish()),
        ]
    }
}

pub(crate) fn fixed<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    b.try_into().ok()
}

/// Builds the Arrow columns of `rows` (already sorted) and adds their strings to `hand`; on a
/// row that cannot be read, its index.
fn build_batch<'a>(
    rows: &[Row<'a>],
    hand: &mut HandColumns<'a, '_>,
) -> Result<Vec<ArrayRef>, (usize, ArchiveError)> {
    let mut c = Columns::new(rows);
    for (i, r) in rows.iter().enumerate() {
        c.append(r, hand).map_err(|e| (i, e))?;
    }
    Ok(c.finish())
}

/// The string columns of one row group, as string ids, written by [`string_columns`], and
/// what they are built from.
struct HandColumns<'a, 'r> {
    /// The segment's strings.
    strings: &'r mut Strings<'a>,
    /// Each resource's strings, by [`ResourceInfo::index`].
    by_resource: &'r [ResourceIds],
    /// The [`FLAT`] columns.
    flat: [Vec<u32>; FLAT.len()],
    resource: MapRows,
    attributes: MapRows,
    /// The segment's span attributes as ids.
    kvs: &'r mut KnownKvs<'a>,
    /// Ids of the few strings most rows repeat.
    enums: EnumIds,
}

/// Span attributes already met in the file being written, by their `KeyValue` bytes. Spans
/// repeat a few attributes over and over (method, route, status, database system): a repeat
/// costs one hash of its bytes instead of a read, a UTF-8 check and two interner lookups. Equal
/// bytes read alike ([`crate::otlp::fields::RawKv`]), so this changes no value. At most
/// [`KNOWN_KVS`] entries, first come first kept (nothing is evicted): past that, new attributes
/// are read every time, as they were before.
#[derive(Default)]
struct KnownKvs<'a>(HashMap<&'a [u8], KnownKv<'a>, BuildHasherDefault<WordHasher>>);

/// Bound of [`KnownKvs`]: about 56 B an entry, ~2 MiB with the table's slack at most, for as
/// long as one file is written.
const KNOWN_KVS: usize = 1 << 14;

/// One known attribute: its key's and value's string ids, and its semantic-convention column
/// with the value, if its key has one.
#[derive(Clone, Copy)]
struct KnownKv<'a> {
    key: u32,
    value: u32,
    slot: Option<(usize, Option<Value<'a>>)>,
}

/// Ids of span kinds and status codes by their number, and of the last row's policy (spans
/// of a trace share theirs), so most rows find them without hashing.
#[derive(Default)]
struct EnumIds {
    kinds: [Option<u32>; 8],
    statuses: [Option<u32>; 4],
    policy: Option<(*const str, u32)>,
}

impl EnumIds {
    fn kind(&mut self, strings: &mut Strings<'_>, kind: i32) -> u32 {
        enum_id(
            &mut self.kinds,
            kind,
            SpanKind::from_i32(kind).as_str(),
            strings,
        )
    }

    fn status(&mut self, strings: &mut Strings<'_>, code: i32) -> u32 {
        enum_id(
            &mut self.statuses,
            code,
            StatusCode::from_i32(code).as_str(),
            strings,
        )
    }
}

/// The id of enum value `n` named `name`, from its slot in `ids` once it has one (numbers past
/// the slots are looked up every time).
fn enum_id(ids: &mut [Option<u32>], n: i32, name: &'static str, strings: &mut Strings<'_>) -> u32 {
    match usize::try_from(n).ok().and_then(|k| ids.get_mut(k)) {
        Some(slot) => *slot.get_or_insert_with(|| strings.borrowed(name)),
        None => strings.borrowed(name),
    }
}

/// A resource's (and scope's) strings as ids of the segment's [`Strings`].
struct ResourceIds {
    /// Its `resource_attributes` entries.
    entries: Vec<(u32, u32)>,
    service: u32,
    scope_name: u32,
    scope_version: u32,
    /// The resource's value of the Kubernetes and host columns, or [`NULL`].
    k8s_namespace: u32,
    k8s_pod: u32,
    host_name: u32,
}

/// The strings of each distinct resource of a segment, by [`ResourceInfo::index`]: a row
/// repeats its resource's ids instead of the strings.
fn resource_ids(resources: &[Arc<ResourceInfo>], strings: &mut Strings<'_>) -> Vec<ResourceIds> {
    resources
        .iter()
        .map(|r| {
            let mut opt = |v: &Option<String>| v.as_deref().map_or(NULL, |v| strings.rendered(v));
            let (k8s_namespace, k8s_pod, host_name) =
                (opt(&r.k8s_namespace), opt(&r.k8s_pod), opt(&r.host_name));
            ResourceIds {
                entries: r
                    .attrs
                    .iter()
                    .map(|(k, v)| (strings.rendered(k), strings.rendered(v)))
                    .collect(),
                service: strings.rendered(&r.service_name),
                scope_name: strings.rendered(&r.scope_name),
                scope_version: strings.rendered(&r.scope_version),
                k8s_namespace,
                k8s_pod,
                host_name,
            }
        })
        .collect()
}

/// One hour's file: row groups of at most `max_row_group_rows` rows, each built in record
/// batches of bounded decoded size (so no column reaches Arrow's offset limits); the string
/// columns are written by [`string_columns`], the others by the Arrow writer. On a row that
/// cannot be read, its index.
fn write_file<'a>(
    rows: &[Row<'a>],
    strings: &mut Strings<'a>,
    by_resource: &[ResourceIds],
    max_row_group_rows: usize,
) -> Result<Result<Vec<u8>, (usize, ArchiveError)>, ArchiveError> {
    let traces = 1 + rows
        .windows(2)
        .filter(|w| w[0].kept.trace_id != w[1].kept.trace_id)
        .count() as u64;
    let mut props = writer_properties(
        max_row_group_rows,
        traces.min(max_row_group_rows as u64),
        crate::archive::schema::HOT_ZSTD_LEVEL,
    );
    // What the Arrow writer does: the Arrow schema in the footer, the same Parquet schema.
    let schema = span_schema();
    add_encoded_arrow_schema_to_metadata(&schema, &mut props);
    let parquet_schema = ArrowSchemaConverter::new()
        .with_coerce_types(props.coerce_types())
        .convert(&schema)?;
    let props = Arc::new(props);
    let mut buf = Vec::with_capacity(64 << 10);
    let mut w =
        SerializedFileWriter::new(&mut buf, parquet_schema.root_schema_ptr(), props.clone())?;
    let factory = ArrowRowGroupWriterFactory::new(&w, schema.clone());
    let mut zstd = Zstd::new();
    let mut scratch = ChunkScratch::default();
    let mut kvs = KnownKvs::default();
    let mut group_start = 0;
    for (index, group) in rows.chunks(max_row_group_rows.max(1)).enumerate() {
        let mut writers = factory.create_column_writers(index)?;
        let resource_entries = group
            .iter()
            .map(|r| {
                by_resource
                    .get(r.res.index as usize)
                    .map_or(0, |e| e.entries.len())
            })
            .sum();
        let mut hand = HandColumns {
            strings: &mut *strings,
            by_resource,
            flat: std::array::from_fn(|_| Vec::with_capacity(group.len())),
            resource: MapRows::with_capacity(group.len(), resource_entries),
            attributes: MapRows::with_capacity(group.len(), group.len() * 8),
            kvs: &mut kvs,
            enums: EnumIds::default(),
        };
        let mut from = 0;
        let mut size = 0usize;
        for i in 0..=group.len() {
            let row_bytes = group.get(i).map_or(0, |r| {
                let ctx = &r.kept.span.ctx;
                r.kept.span.bytes.len() + ctx.resource_field.len() + ctx.scope_field.len()
            });
            if i == group.len() || (i > from && size + row_bytes > BATCH_BYTES) {
                let columns = match build_batch(&group[from..i], &mut hand) {
                    Ok(c) => c,
                    Err((j, e)) => return Ok(Err((group_start + from + j, e))),
                };
                // Leaves in schema order; those of the string columns are skipped here.
                let mut leaf = 0;
                let mut columns = columns.iter();
                for f in schema.fields() {
                    if MAPS.contains(&f.name().as_str()) {
                        leaf += 2;
                        continue;
                    }
                    if FLAT.contains(&f.name().as_str()) {
                        leaf += 1;
                        continue;
                    }
                    let array = columns.next().ok_or_else(|| {
                        ArchiveError::Verify(format!("no column for {}", f.name()))
                    })?;
                    for l in compute_leaves(f, array)? {
                        writers
                            .get_mut(leaf)
                            .ok_or_else(|| ArchiveError::Verify("leaves past the schema".into()))?
                            .write(&l)?;
                        leaf += 1;
                    }
                }
                from = i;
                size = 0;
            }
            size += row_bytes;
        }
        let mut rg = w.next_row_group()?;
        for (leaf, writer) in writers.into_iter().enumerate() {
            let descr = parquet_schema.column(leaf);
            let parts = descr.path().parts();
            let top = parts.first().map_or("", String::as_str);
            let map_leaf = || match parts.last().map(String::as_str) {
                Some("key") => Leaf::Key,
                _ => Leaf::Value,
            };
            let chunk = match top {
                "resource_attributes" => ChunkRows::Map(&hand.resource, map_leaf()),
                "attributes" => ChunkRows::Map(&hand.attributes, map_leaf()),
                _ => match FLAT.iter().position(|c| *c == top) {
                    Some(k) => ChunkRows::Flat(&hand.flat[k]),
                    None => {
                        writer.close()?.append_to_row_group(&mut rg)?;
                        continue;
                    }
                },
            };
            let (bytes, close) = string_columns::write_chunk(
                chunk,
                hand.strings,
                &descr,
                &props,
                &mut zstd,
                &mut scratch,
            )?;
            rg.append_column(&bytes, close)?;
        }
        rg.close()?;
        group_start += group.len();
    }
    w.close()?;
    Ok(Ok(buf))
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
pub(crate) fn content_hash<'a>(keys: impl Iterator<Item = (&'a TraceId, &'a [u8])>) -> u64 {
    keys.fold(0u64, |acc, (t, s)| {
        let mut h = t.fold64() ^ 0x51_7c_c1_b7_27_22_0a_95;
        for b in s {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
        h ^= h >> 33;
        acc.wrapping_add(h.wrapping_mul(0xff51_afd7_ed55_8ccd))
    })
}

/// Encodes kept spans as Parquet, one file per hour partition, rows sorted by (trace id, start
/// time, span id). CPU-bound: run it on a blocking thread.
///
/// Strict: a span that does not decode fails the segment. The hot sink uses
/// [`encode_segment_skipping`].
pub fn encode_segment(
    spans: &[KeptSpan],
    max_row_group_rows: usize,
) -> Result<Vec<EncodedFile>, ArchiveError> {
    let mut rejected = Vec::new();
    let files = encode_segment_skipping(spans, max_row_group_rows, &mut rejected)?;
    match rejected.into_iter().next() {
        Some(r) => Err(ArchiveError::Rejected(format!(
            "span of trace {}: {}",
            r.trace_id, r.reason
        ))),
        None => Ok(files),
    }
}

/// A kept span the encoder could not read, left out of its segment.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// Its trace.
    pub trace_id: TraceId,
    /// Why.
    pub reason: String,
}

/// Decoded bytes per record batch: Arrow's 32-bit offsets of one string column must stay
/// far below 2 GiB however large the resources repeated on each row are.
const BATCH_BYTES: usize = 128 << 20;

/// The hour a span is filed under: its start hour when the start lies within an hour of its
/// record's arrival (the Kafka timestamp), else the arrival hour, so a zero, far-past or
/// far-future start cannot put a span where retention deletes it early or never. Spans
/// without a known arrival go by their start.
pub fn filing_hour(start_ns: u64, arrival_ms: u64) -> HourPartition {
    const HOUR_NS: u64 = 3_600 * 1_000_000_000;
    if arrival_ms == 0 {
        return HourPartition::of_nanos(start_ns);
    }
    let arrival_ns = arrival_ms.saturating_mul(1_000_000);
    if start_ns >= arrival_ns.saturating_sub(HOUR_NS) && start_ns <= arrival_ns + HOUR_NS {
        HourPartition::of_nanos(start_ns)
    } else {
        HourPartition::of_nanos(arrival_ns)
    }
}

/// A context by its content ([`ScopeCtx::content_hash`], then its fields): the same service
/// sends the same resource in every record, each record with a context of its own.
struct ContentKey {
    hash: u64,
    ctx: Arc<ScopeCtx>,
}

impl PartialEq for ContentKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.ctx.fields() == other.ctx.fields()
    }
}

impl Eq for ContentKey {}

impl std::hash::Hash for ContentKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_u64(self.hash);
    }
}

type PassBuild = std::hash::BuildHasherDefault<otlp::PassHasher>;

/// [`encode_segment`], leaving out the spans that do not decode (listed in `rejected`) instead
/// of failing: one bad span must not hold back its segment. Files are written in record
/// batches of bounded decoded size, so no column reaches Arrow's offset limits.
pub fn encode_segment_skipping(
    spans: &[KeptSpan],
    max_row_group_rows: usize,
    rejected: &mut Vec<Rejected>,
) -> Result<Vec<EncodedFile>, ArchiveError> {
    // Resources by context (most spans share theirs with siblings), then by content (the same
    // service sends the same resource in every record).
    let mut by_ctx: HashMap<*const ScopeCtx, Option<Arc<ResourceInfo>>> = HashMap::new();
    let mut by_content: HashMap<ContentKey, Option<Arc<ResourceInfo>>, PassBuild> =
        HashMap::default();
    let mut resources: Vec<Arc<ResourceInfo>> = Vec::new();
    let mut rows: Vec<Row<'_>> = Vec::with_capacity(spans.len());
    // Spans of one record share their context and come in a row: the last one is looked up
    // without hashing.
    let mut last: Option<(*const ScopeCtx, Option<Arc<ResourceInfo>>)> = None;
    for k in spans {
        let ctx = &k.span.ctx;
        let res = match &last {
            Some((p, res)) if *p == Arc::as_ptr(ctx) => res.clone(),
            _ => by_ctx
                .entry(Arc::as_ptr(ctx))
                .or_insert_with(|| {
                    by_content
                        .entry(ContentKey {
                            hash: ctx.content_hash(),
                            ctx: Arc::clone(ctx),
                        })
                        .or_insert_with(|| {
                            let r = Arc::new(ResourceInfo::of(ctx, resources.len() as u32)?);
                            resources.push(Arc::clone(&r));
                            Some(r)
                        })
                        .clone()
                })
                .clone(),
        };
        last = Some((Arc::as_ptr(ctx), res.clone()));
        let Some(res) = res else {
            rejected.push(Rejected {
                trace_id: k.trace_id,
                reason: "its resource or scope does not decode".into(),
            });
            continue;
        };
        match SpanFields::read(&k.span.bytes) {
            Ok(span) => rows.push(Row { kept: k, span, res }),
            Err(e) => rejected.push(Rejected {
                trace_id: k.trace_id,
                reason: e.to_string(),
            }),
        }
    }
    // Sorted through small keys (a row is ~150 B to move); the index breaks ties, so the order
    // is that of a stable sort.
    let mut order: Vec<(TraceId, u64, &[u8], u32)> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (r.kept.trace_id, r.span.start_ns, r.span.span_id, i as u32))
        .collect();
    order.sort_unstable();
    let mut slots: Vec<Option<Row<'_>>> = rows.into_iter().map(Some).collect();
    let mut by_hour: std::collections::BTreeMap<HourPartition, Vec<Row<'_>>> = Default::default();
    for r in order.iter().filter_map(|(.., i)| slots[*i as usize].take()) {
        by_hour
            .entry(filing_hour(r.span.start_ns, r.kept.span.ctx.filing_ms()))
            .or_default()
            .push(r);
    }
    let mut strings = Strings::default();
    let by_resource = resource_ids(&resources, &mut strings);
    let mut out = Vec::with_capacity(by_hour.len());
    for (hour, mut rows) in by_hour {
        // A span the row builder cannot read (the strict scan on the way in makes this
        // impossible for pipeline input) is left out and the hour's file built again.
        let buf = loop {
            match write_file(&rows, &mut strings, &by_resource, max_row_group_rows)? {
                Ok(buf) => break buf,
                Err((i, e)) => {
                    let r = rows.remove(i);
                    rejected.push(Rejected {
                        trace_id: r.kept.trace_id,
                        reason: e.to_string(),
                    });
                }
            }
        };
        if rows.is_empty() {
            continue;
        }
        out.push(EncodedFile {
            hour,
            bytes: Bytes::from(buf),
            rows: rows.len(),
            content: content_hash(rows.iter().map(|r| (&r.kept.trace_id, r.span.span_id))),
        });
    }
    Ok(out)
}
