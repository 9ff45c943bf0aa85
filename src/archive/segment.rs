//! The segment encoder: kept spans (their original bytes, fully decoded only here) into
//! sorted, zstd-compressed Parquet files, one per hour partition.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BinaryBuilder, Float64Builder, Int32Builder, Int64Builder, ListBuilder,
    MapBuilder, MapFieldNames, StringBuilder, StructBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use parquet::arrow::ArrowWriter;

use super::layout::HourPartition;
use super::schema::*;

use super::ArchiveError;
use crate::otlp::threshold::adjusted_count;
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
    pub threshold: u64,
}

pub(crate) fn map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    let names = MapFieldNames {
        entry: MAP_ENTRIES.into(),
        key: "key".into(),
        value: "value".into(),
    };
    MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new())
}

/// Microseconds of a Unix-nanosecond time (truncated; v2's timestamp columns).
pub(crate) fn micros(ns: i64) -> i64 {
    ns.div_euclid(1_000)
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

pub(crate) fn fixed<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    b.try_into().ok()
}

/// Builds one record batch (rows already sorted).
fn build_batch(rows: &[Row<'_>]) -> Result<RecordBatch, ArchiveError> {
    let n = rows.len();
    let mut trace_id = BinaryBuilder::with_capacity(n, 16 * n);
    let mut span_id = BinaryBuilder::with_capacity(n, 8 * n);
    let mut parent = BinaryBuilder::with_capacity(n, 8 * n);
    let mut trace_state = StringBuilder::new();
    let mut service = StringBuilder::new();
    let mut name = StringBuilder::new();
    let mut kind = StringBuilder::new();
    let mut start = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut end = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut start_ns = Int64Builder::with_capacity(n);
    let mut end_ns = Int64Builder::with_capacity(n);
    let mut duration = Int64Builder::with_capacity(n);
    let mut status = StringBuilder::new();
    let mut status_msg = StringBuilder::new();
    let mut res_attrs = map_builder();
    let mut attrs = map_builder();
    let mut scope_name = StringBuilder::new();
    let mut scope_version = StringBuilder::new();
    let mut events = list_builder(
        event_fields(),
        vec![
            Box::new(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
                as Box<dyn ArrayBuilder>,
            Box::new(Int64Builder::new()),
            Box::new(StringBuilder::new()),
            Box::new(map_builder()),
        ],
    );
    let mut links = list_builder(
        link_fields(),
        vec![
            Box::new(BinaryBuilder::new()) as Box<dyn ArrayBuilder>,
            Box::new(BinaryBuilder::new()),
            Box::new(StringBuilder::new()),
            Box::new(map_builder()),
        ],
    );
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
        trace_id.append_value(r.kept.trace_id.0);
        span_id.append_value(fixed::<8>(&s.span_id).unwrap_or_default());
        match fixed::<8>(&s.parent_span_id) {
            Some(p) if p != [0; 8] => parent.append_value(p),
            _ => parent.append_null(),
        }
        trace_state.append_value(&s.trace_state);
        service.append_value(&r.res.service_name);
        name.append_value(&s.name);
        kind.append_value(SpanKind::from_i32(s.kind).as_str());
        let st = i64::try_from(s.start_time_unix_nano).unwrap_or(i64::MAX);
        let en = i64::try_from(s.end_time_unix_nano).unwrap_or(i64::MAX);
        start.append_value(micros(st));
        end.append_value(micros(en));
        start_ns.append_value(st);
        end_ns.append_value(en);
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
            let t = i64::try_from(ev.time_unix_nano).unwrap_or(i64::MAX);
            eb.field_builder::<TimestampMicrosecondBuilder>(0)
                .ok_or_else(|| ArchiveError::Url("events builder".into()))?
                .append_value(micros(t));
            eb.field_builder::<Int64Builder>(1)
                .ok_or_else(|| ArchiveError::Url("events builder".into()))?
                .append_value(t);
            eb.field_builder::<StringBuilder>(2)
                .ok_or_else(|| ArchiveError::Url("events builder".into()))?
                .append_value(&ev.name);
            let mb = eb
                .field_builder::<MapBuilder<StringBuilder, StringBuilder>>(3)
                .ok_or_else(|| ArchiveError::Url("events builder".into()))?;
            append_map(mb, &ev.attributes)?;
            eb.append(true);
        }
        events.append(true);
        let lb = links.values();
        for l in &s.links {
            let t = lb
                .field_builder::<BinaryBuilder>(0)
                .ok_or_else(|| ArchiveError::Url("links builder".into()))?;
            match fixed::<16>(&l.trace_id) {
                Some(v) => t.append_value(v),
                None => t.append_null(),
            }
            let sp = lb
                .field_builder::<BinaryBuilder>(1)
                .ok_or_else(|| ArchiveError::Url("links builder".into()))?;
            match fixed::<8>(&l.span_id) {
                Some(v) => sp.append_value(v),
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
        Arc::new(start_ns.finish()),
        Arc::new(end_ns.finish()),
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

/// Fully decodes kept spans and encodes them as Parquet, one file per hour partition, rows sorted
/// by (trace id, start time). CPU-bound: run it on a blocking thread.
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

/// [`encode_segment`], leaving out the spans that do not decode (listed in `rejected`) instead
/// of failing: one bad span must not hold back its segment. Files are written in record
/// batches of bounded decoded size, so no column reaches Arrow's offset limits.
pub fn encode_segment_skipping(
    spans: &[KeptSpan],
    max_row_group_rows: usize,
    rejected: &mut Vec<Rejected>,
) -> Result<Vec<EncodedFile>, ArchiveError> {
    let mut resources: HashMap<*const ScopeCtx, Option<Arc<ResourceInfo>>> = HashMap::new();
    let mut rows: Vec<Row<'_>> = Vec::with_capacity(spans.len());
    for k in spans {
        let key = Arc::as_ptr(&k.span.ctx);
        let res = resources.entry(key).or_insert_with(|| {
            let resource = otlp::decode_resource(&k.span.ctx).ok()?;
            let scope = otlp::decode_scope(&k.span.ctx).ok()?;
            Some(Arc::new(ResourceInfo {
                service_name: find_str(&resource.attributes, &["service.name"]).unwrap_or_default(),
                attrs: resource.attributes,
                scope_name: scope.name,
                scope_version: scope.version,
            }))
        });
        let Some(res) = res.clone() else {
            rejected.push(Rejected {
                trace_id: k.trace_id,
                reason: "its resource or scope does not decode".into(),
            });
            continue;
        };
        match otlp::decode_span(&k.span) {
            Ok(span) => rows.push(Row { kept: k, span, res }),
            Err(e) => rejected.push(Rejected {
                trace_id: k.trace_id,
                reason: e.to_string(),
            }),
        }
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
            .entry(filing_hour(
                r.span.start_time_unix_nano,
                r.kept.span.ctx.arrival_ms,
            ))
            .or_default()
            .push(r);
    }
    let mut out = Vec::with_capacity(by_hour.len());
    for (hour, rows) in by_hour {
        let content = content_hash(
            rows.iter()
                .map(|r| (&r.kept.trace_id, r.span.span_id.as_slice())),
        );
        let traces = 1 + rows
            .windows(2)
            .filter(|w| w[0].kept.trace_id != w[1].kept.trace_id)
            .count() as u64;
        let props = writer_properties(max_row_group_rows, traces.min(max_row_group_rows as u64));
        let mut buf = Vec::with_capacity(64 << 10);
        let mut w = ArrowWriter::try_new(&mut buf, span_schema(), Some(props.clone()))?;
        let mut from = 0;
        let mut size = 0usize;
        for (i, r) in rows.iter().enumerate() {
            let ctx = &r.kept.span.ctx;
            let row_bytes =
                r.kept.span.bytes.len() + ctx.resource_field.len() + ctx.scope_field.len();
            if i > from && size + row_bytes > BATCH_BYTES {
                w.write(&build_batch(&rows[from..i])?)?;
                from = i;
                size = 0;
            }
            size += row_bytes;
        }
        w.write(&build_batch(&rows[from..])?)?;
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
