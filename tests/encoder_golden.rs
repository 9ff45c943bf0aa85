//! The Parquet encoder against an independent reference. The pipeline's encoder builds rows from
//! span bytes in place (`otlp::fields`); the reference here decodes every span, resource and
//! scope with the `opentelemetry-proto` prost types and fills the same Arrow builders the
//! obvious way (it is the encoder v2 was first written as) and writes them with `ArrowWriter`.
//! Both write with the same writer properties, so their files must be equal byte for byte —
//! including the two attribute maps, which the pipeline's encoder writes by hand
//! (`archive::map_column`) and the reference through the Arrow writer — for:
//!
//! - generated traffic (`tracesift gen`, marked as the pipeline marks kept spans);
//! - hand-made spans with every awkward but valid encoding: fields sent twice (protobuf
//!   concatenation merges them: last value wins, `status` merges field by field), an attribute
//!   `value` sent twice, values absent or empty, arrays / key-value lists / bytes, non-finite
//!   doubles, semantic-convention keys with ints, strings and no value, ids of wrong length,
//!   times past `i64::MAX`, unknown fields;
//! - random spans (proptest) built from those ingredients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BinaryBuilder, Float64Builder, Int32Builder, Int64Builder, ListBuilder,
    MapBuilder, MapFieldNames, StringBuilder, StructBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Fields};
use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, Span, Status};
use parquet::arrow::ArrowWriter;
use prost::Message;
use tracesift::archive::{encode_segment, filing_hour, span_schema, writer_properties, KeptSpan};
use tracesift::otlp::threshold::Threshold;
use tracesift::otlp::{self, render_value, ScopeCtx, SpanKind, SpanRef, StatusCode, TraceId};

fn struct_fields(column: &str) -> Fields {
    match span_schema().field_with_name(column).unwrap().data_type() {
        DataType::List(f) => match f.data_type() {
            DataType::Struct(fields) => fields.clone(),
            t => panic!("{t}"),
        },
        t => panic!("{t}"),
    }
}

fn map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    let names = MapFieldNames {
        entry: "key_value".into(),
        key: "key".into(),
        value: "value".into(),
    };
    MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new())
}

fn micros(ns: i64) -> i64 {
    ns.div_euclid(1_000)
}

fn fixed<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    b.try_into().ok()
}

fn list_builder(
    fields: Fields,
    builders: Vec<Box<dyn ArrayBuilder>>,
) -> ListBuilder<StructBuilder> {
    let element = Field::new("element", DataType::Struct(fields.clone()), true);
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

struct Row {
    trace_id: TraceId,
    policy: Arc<str>,
    arrival_ms: u64,
    span: Span,
    res: Arc<ResourceInfo>,
}

fn append_map(b: &mut MapBuilder<StringBuilder, StringBuilder>, attrs: &[KeyValue]) {
    for kv in attrs {
        b.keys().append_value(&kv.key);
        b.values().append_value(render_value(kv.value.as_ref()));
    }
    b.append(true).unwrap();
}

/// Builds one record batch (rows already sorted).
fn reference_batch(rows: &[Row]) -> RecordBatch {
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
        struct_fields("events"),
        vec![
            Box::new(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
                as Box<dyn ArrayBuilder>,
            Box::new(Int64Builder::new()),
            Box::new(StringBuilder::new()),
            Box::new(map_builder()),
        ],
    );
    let mut links = list_builder(
        struct_fields("links"),
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
        trace_id.append_value(r.trace_id.0);
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
        append_map(&mut res_attrs, &r.res.attrs);
        append_map(&mut attrs, &s.attributes);
        scope_name.append_value(&r.res.scope_name);
        scope_version.append_value(&r.res.scope_version);

        let eb = events.values();
        for ev in &s.events {
            let t = i64::try_from(ev.time_unix_nano).unwrap_or(i64::MAX);
            eb.field_builder::<TimestampMicrosecondBuilder>(0)
                .unwrap()
                .append_value(micros(t));
            eb.field_builder::<Int64Builder>(1).unwrap().append_value(t);
            eb.field_builder::<StringBuilder>(2)
                .unwrap()
                .append_value(&ev.name);
            let mb = eb
                .field_builder::<MapBuilder<StringBuilder, StringBuilder>>(3)
                .unwrap();
            append_map(mb, &ev.attributes);
            eb.append(true);
        }
        events.append(true);
        let lb = links.values();
        for l in &s.links {
            let t = lb.field_builder::<BinaryBuilder>(0).unwrap();
            match fixed::<16>(&l.trace_id) {
                Some(v) => t.append_value(v),
                None => t.append_null(),
            }
            let sp = lb.field_builder::<BinaryBuilder>(1).unwrap();
            match fixed::<8>(&l.span_id) {
                Some(v) => sp.append_value(v),
                None => sp.append_null(),
            }
            lb.field_builder::<StringBuilder>(2)
                .unwrap()
                .append_value(&l.trace_state);
            let mb = lb
                .field_builder::<MapBuilder<StringBuilder, StringBuilder>>(3)
                .unwrap();
            append_map(mb, &l.attributes);
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
        policy.append_value(&*r.policy);
        // The span's effective threshold, as the pipeline wrote it into its tracestate
        // (`otlp::mark_span`); none when the probability is unknown (after a rate limiter).
        let (_, th) = otlp::parse_ot_tracestate(&s.trace_state);
        adjusted.append_option(th.map(Threshold::adjusted_count));
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
    RecordBatch::try_new(span_schema(), columns).unwrap()
}

/// The reference encoder: one file per hour, (hour, rows, bytes); spans that do not decode are
/// counted.
fn reference(spans: &[KeptSpan], max_rows: usize) -> (Vec<(String, usize, Bytes)>, usize) {
    let mut rows = Vec::new();
    let mut rejected = 0;
    for k in spans {
        let res = otlp::decode_resource(&k.span.ctx);
        let scope = otlp::decode_scope(&k.span.ctx);
        let span = otlp::decode_span(&k.span);
        let (Ok(res), Ok(scope), Ok(span)) = (res, scope, span) else {
            rejected += 1;
            continue;
        };
        rows.push(Row {
            trace_id: k.trace_id,
            policy: k.policy.clone(),
            arrival_ms: k.span.ctx.arrival_ms,
            span,
            res: Arc::new(ResourceInfo {
                service_name: find_str(&res.attributes, &["service.name"]).unwrap_or_default(),
                attrs: res.attributes,
                scope_name: scope.name,
                scope_version: scope.version,
            }),
        });
    }
    rows.sort_by(|a, b| {
        (a.trace_id, a.span.start_time_unix_nano, &a.span.span_id).cmp(&(
            b.trace_id,
            b.span.start_time_unix_nano,
            &b.span.span_id,
        ))
    });
    let mut by_hour: std::collections::BTreeMap<_, Vec<Row>> = Default::default();
    for r in rows {
        by_hour
            .entry(filing_hour(r.span.start_time_unix_nano, r.arrival_ms))
            .or_default()
            .push(r);
    }
    let mut out = Vec::new();
    for (hour, rows) in by_hour {
        let traces = 1 + rows
            .windows(2)
            .filter(|w| w[0].trace_id != w[1].trace_id)
            .count() as u64;
        let props = writer_properties(
            max_rows,
            traces.min(max_rows as u64),
            tracesift::archive::schema::HOT_ZSTD_LEVEL,
        );
        let mut buf = Vec::new();
        let mut w = ArrowWriter::try_new(&mut buf, span_schema(), Some(props)).unwrap();
        w.write(&reference_batch(&rows)).unwrap();
        w.close().unwrap();
        out.push((hour.dir(), rows.len(), Bytes::from(buf)));
    }
    (out, rejected)
}

/// Both encoders on `spans`: equal files.
fn assert_same(spans: &[KeptSpan], what: &str) {
    assert_same_in_row_groups(spans, what, 1 << 20)
}

/// Both encoders on `spans` with row groups of at most `max_rows`: equal files.
fn assert_same_in_row_groups(spans: &[KeptSpan], what: &str, max_rows: usize) {
    let (want, rejected) = reference(spans, max_rows);
    assert_eq!(rejected, 0, "{what}: every input span decodes with prost");
    let got = encode_segment(spans, max_rows).unwrap();
    assert_eq!(got.len(), want.len(), "{what}: files (hours)");
    for (g, (hour, rows, bytes)) in got.iter().zip(&want) {
        assert_eq!(&g.hour.dir(), hour, "{what}");
        assert_eq!(g.rows, *rows, "{what}: rows of {hour}");
        if g.bytes != *bytes {
            // Name the first column that differs.
            let read = |b: &Bytes| {
                parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(b.clone(), 1 << 20)
                    .unwrap()
                    .next()
                    .unwrap()
                    .unwrap()
            };
            let (a, b) = (read(&g.bytes), read(bytes));
            for (i, f) in span_schema().fields().iter().enumerate() {
                assert_eq!(
                    a.column(i).to_data(),
                    b.column(i).to_data(),
                    "{what}: column {} of {hour} differs",
                    f.name()
                );
            }
            panic!("{what}: files of {hour} differ in bytes, not in content");
        }
    }
}

fn kv(key: &str, v: Option<any_value::Value>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: v }),
        ..Default::default()
    }
}

fn s(v: &str) -> Option<any_value::Value> {
    Some(any_value::Value::StringValue(v.into()))
}

fn i(v: i64) -> Option<any_value::Value> {
    Some(any_value::Value::IntValue(v))
}

/// `ResourceSpans.resource` / `ScopeSpans.scope` as the scan keeps them: tag, length, body.
fn field1(msg: &impl Message) -> Bytes {
    let body = msg.encode_to_vec();
    let mut out = vec![0x0a];
    prost::encoding::encode_varint(body.len() as u64, &mut out);
    out.extend(body);
    Bytes::from(out)
}

fn ctx(resource: &[KeyValue], arrival_ms: u64) -> Arc<ScopeCtx> {
    Arc::new(ScopeCtx {
        resource_field: field1(&Resource {
            attributes: resource.to_vec(),
            ..Default::default()
        }),
        scope_field: field1(&InstrumentationScope {
            name: "scope".into(),
            version: "1.2".into(),
            ..Default::default()
        }),
        arrival_ms,
        ..Default::default()
    })
}

fn kept(trace: u8, ctx: &Arc<ScopeCtx>, bytes: Vec<u8>) -> KeptSpan {
    KeptSpan {
        trace_id: TraceId([trace; 16]),
        span: SpanRef {
            ctx: ctx.clone(),
            bytes: Bytes::from(bytes),
        },
        policy: Arc::from("p"),
        threshold: Threshold::ALWAYS,
    }
}

const T: u64 = 1_764_460_800_000_000_000;

fn base(n: u8) -> Span {
    Span {
        trace_id: vec![n; 16],
        span_id: vec![n, 1, 2, 3, 4, 5, 6, 7],
        name: format!("op-{n}"),
        kind: 2,
        start_time_unix_nano: T + u64::from(n) * 1_000_123,
        end_time_unix_nano: T + u64::from(n) * 2_000_457,
        ..Default::default()
    }
}

/// `n` spans, one trace each (trace ids in row order), whose string columns span several
/// pages (4,096 rows each): `name` ascending from page to page, `status.message` descending,
/// `http.route` only on the first rows (later pages of it all null), strings longer than the
/// statistics' 64-byte cut with multi-byte characters around it, and a last character that
/// cannot be incremented.
fn paged_spans(n: u32, name: impl Fn(u32) -> String) -> Vec<KeptSpan> {
    let res = ctx(&[kv("service.name", s("paged"))], T / 1_000_000);
    let tails = ["", "é", "€", "𝄞", "\u{10FFFF}", "a\u{7FF}"];
    (0..n)
        .map(|i| {
            let mut span = base(1);
            span.trace_id = [i.to_be_bytes().as_slice(), &[7; 12]].concat();
            span.name = name(i);
            span.status = Some(Status {
                message: format!(
                    "{}{}{}",
                    "m".repeat(60 + (i % 7) as usize),
                    (n - i) / 100,
                    tails[(i % 6) as usize]
                ),
                code: 2,
            });
            if i < 500 {
                span.attributes
                    .push(kv("http.route", s(&format!("/r/{}", i % 9))));
            }
            KeptSpan {
                trace_id: TraceId(span.trace_id.clone().try_into().unwrap()),
                span: SpanRef {
                    ctx: res.clone(),
                    bytes: Bytes::from(span.encode_to_vec()),
                },
                policy: Arc::from("p"),
                threshold: Threshold::ALWAYS,
            }
        })
        .collect()
}

#[test]
fn string_columns_of_several_pages_encode_the_same_both_ways() {
    let spans = paged_spans(9_000, |i| {
        format!(
            "{}{}{}",
            "n".repeat(58),
            100_000 + i / 50,
            ["", "é", "€"][(i % 3) as usize]
        )
    });
    assert_same(&spans, "several pages");
    assert_same_in_row_groups(&spans, "several pages, row groups of 5,000", 5_000);
    // What the comparison covered: three data pages per string column, statistics cut.
    let file = &encode_segment(&spans, 1 << 20).unwrap()[0].bytes;
    let meta = parquet::file::metadata::ParquetMetaDataReader::new()
        .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required)
        .parse_and_finish(file)
        .unwrap();
    let names = meta.file_metadata().schema_descr().columns().iter();
    let name = names
        .into_iter()
        .position(|c| c.path().string() == "name")
        .unwrap();
    let index = meta.page_index_for_row_group(0);
    let pages = index.offset_index(name).unwrap().page_locations();
    assert_eq!(pages.len(), 3, "pages of name");
    assert!(index.column_index(name).is_some(), "column index of name");
    let stats = meta.row_group(0).column(name).statistics().unwrap();
    assert!(!stats.max_is_exact() && stats.max_bytes_opt().unwrap().len() <= 64);
}

/// A chunk whose distinct strings outgrow the dictionary page limit (1 MiB): the Arrow writer
/// switches to plain pages part-way, the segment encoder writes the chunk plain. The bytes
/// differ; the rows must not.
#[test]
fn a_column_past_the_dictionary_limit_keeps_its_rows() {
    let spans = paged_spans(14_000, |i| format!("{}-{i}", "distinct-name".repeat(7)));
    let (want, rejected) = reference(&spans, 1 << 20);
    assert_eq!(rejected, 0);
    let got = encode_segment(&spans, 1 << 20).unwrap();
    assert_eq!(got.len(), 1);
    let read = |b: &Bytes| {
        let r = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(b.clone(), 1 << 20)
            .unwrap();
        let batches: Vec<_> = r.map(|b| b.unwrap()).collect();
        arrow_select::concat::concat_batches(&span_schema(), &batches).unwrap()
    };
    let (a, b) = (read(&got[0].bytes), read(&want[0].2));
    assert_eq!(a.num_rows(), 14_000);
    for (i, f) in span_schema().fields().iter().enumerate() {
        assert_eq!(
            a.column(i).to_data(),
            b.column(i).to_data(),
            "column {}",
            f.name()
        );
    }
    // `name` went plain (no dictionary page), every other string column kept its dictionary.
    let meta = parquet::file::reader::SerializedFileReader::new(got[0].bytes.clone()).unwrap();
    let rg = parquet::file::reader::FileReader::metadata(&meta)
        .row_group(0)
        .clone();
    for c in rg.columns() {
        let path = c.column_path().string();
        if path == "name" {
            assert_eq!(c.dictionary_page_offset(), None, "{path}");
        } else if ["service_name", "status_message", "kind"].contains(&path.as_str()) {
            assert!(c.dictionary_page_offset().is_some(), "{path}");
        }
    }
}

#[test]
fn generated_traffic_encodes_the_same_both_ways() {
    let (records, manifest) = tracesift::gen::plan_records(&tracesift::gen::GenOptions {
        traces: 600,
        seed: 5,
        ..Default::default()
    });
    let spans = tracesift::gen::kept_spans(&records, &manifest).unwrap();
    assert!(spans.len() > 3_000);
    assert_same(&spans, "generated");
    // Several row groups per file (the attribute maps are written per row group, by hand).
    assert_same_in_row_groups(&spans, "generated, row groups of 1,000", 1_000);
}

#[test]
fn awkward_but_valid_spans_encode_the_same_both_ways() {
    let res = ctx(
        &[
            kv("service.name", s("svc")),
            kv("k8s.pod.name", s("pod-from-resource")),
            kv("host.name", i(7)),
            KeyValue {
                key: "no.value".into(),
                value: None,
                ..Default::default()
            },
        ],
        T / 1_000_000,
    );
    let mut spans = Vec::new();
    // Every scalar kind, complex values, absent and empty values, semantic-convention keys.
    let mut a = base(1);
    a.attributes = vec![
        kv("http.method", s("GET")),
        kv("http.request.method", s("POST")),
        kv("http.route", None),
        kv("http.status_code", s("503")),
        kv(
            "http.response.status_code",
            Some(any_value::Value::DoubleValue(200.0)),
        ),
        kv("db.system", i(3)),
        KeyValue {
            key: "db.system.name".into(),
            value: None,
            ..Default::default()
        },
        kv("rpc.service", Some(any_value::Value::BoolValue(true))),
        kv("rpc.method", Some(any_value::Value::DoubleValue(f64::NAN))),
        kv("k8s.namespace.name", s("ns")),
        kv("k8s.namespace.name", s("second")),
        kv("neg", i(-42)),
        kv("inf", Some(any_value::Value::DoubleValue(f64::INFINITY))),
        kv("tiny", Some(any_value::Value::DoubleValue(1e-300))),
        kv(
            "bytes",
            Some(any_value::Value::BytesValue(vec![0, 159, 255])),
        ),
        kv(
            "array",
            Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![AnyValue { value: s("x") }, AnyValue { value: i(1) }],
            })),
        ),
        kv(
            "kvlist",
            Some(any_value::Value::KvlistValue(KeyValueList {
                values: vec![kv("inner", s("v"))],
            })),
        ),
        kv("unicode", s("grüße ✓")),
    ];
    a.events = vec![
        span::Event {
            time_unix_nano: T + 5,
            name: "exception".into(),
            attributes: vec![kv("exception.type", s("E")), kv("n", i(1))],
            dropped_attributes_count: 2,
        },
        span::Event::default(),
    ];
    a.links = vec![
        span::Link {
            trace_id: vec![9; 16],
            span_id: vec![8; 8],
            trace_state: "a=b".into(),
            attributes: vec![kv("l", s("1"))],
            ..Default::default()
        },
        span::Link {
            trace_id: vec![9; 3],
            span_id: vec![],
            ..Default::default()
        },
    ];
    a.status = Some(Status {
        code: 2,
        message: "boom".into(),
    });
    a.trace_state = "ot=th:8;rv:0123456789abcd,x=y".into();
    spans.push(kept(1, &res, a.encode_to_vec()));
    // The same attributes again, reversed, then twice over: the encoder now knows them by their
    // bytes, and they must land in the map and the columns as if read afresh (first one wins).
    let mut again = base(8);
    again.attributes = a.attributes.iter().rev().cloned().collect();
    spans.push(kept(8, &res, again.encode_to_vec()));
    let mut twice = base(9);
    twice.attributes = [a.attributes.clone(), a.attributes.clone()].concat();
    spans.push(kept(9, &res, twice.encode_to_vec()));

    // Fields sent twice: the concatenation of two encodings is one merged message.
    let mut first = base(2);
    first.status = Some(Status {
        code: 1,
        message: "first".into(),
    });
    first.attributes = vec![kv("http.route", s("/a"))];
    let mut second = Span {
        name: "renamed".into(),
        kind: 3,
        status: Some(Status {
            code: 0,
            message: "second".into(),
        }),
        attributes: vec![kv("http.route", s("/b"))],
        parent_span_id: vec![0; 8],
        ..Default::default()
    };
    second.start_time_unix_nano = T + 77;
    let mut bytes = first.encode_to_vec();
    bytes.extend(second.encode_to_vec());
    spans.push(kept(2, &res, bytes));

    // An attribute whose value is sent twice (merged by prost), and one with an unknown field.
    let mut c = base(3);
    c.parent_span_id = vec![3; 8];
    let mut bytes = c.encode_to_vec();
    let mut twice = kv("http.status_code", i(404)).encode_to_vec();
    twice.extend(
        KeyValue {
            key: String::new(),
            value: Some(AnyValue { value: s("418") }),
            ..Default::default()
        }
        .encode_to_vec()
        .iter()
        .skip(2), // drop the empty key's tag + length: only the value field again
    );
    // Field 9 (attributes), length-delimited.
    bytes.push(0x4a);
    prost::encoding::encode_varint(twice.len() as u64, &mut bytes);
    bytes.extend(twice);
    // An unknown field (number 100, varint).
    prost::encoding::encode_key(100, prost::encoding::WireType::Varint, &mut bytes);
    prost::encoding::encode_varint(5, &mut bytes);
    spans.push(kept(3, &res, bytes));

    // Ids of the wrong length, times past i64::MAX, a zero start filed by arrival.
    let mut d = base(4);
    d.span_id = vec![1, 2, 3];
    d.parent_span_id = vec![1; 5];
    d.start_time_unix_nano = u64::MAX - 5;
    d.end_time_unix_nano = u64::MAX;
    spans.push(kept(4, &res, d.encode_to_vec()));
    let mut e = base(5);
    e.start_time_unix_nano = 0;
    e.end_time_unix_nano = 10;
    spans.push(kept(5, &res, e.encode_to_vec()));
    // An empty span and one with another resource.
    spans.push(kept(6, &res, Vec::new()));
    let other = ctx(&[kv("k8s.pod.name", s("p2"))], 0);
    spans.push(kept(7, &other, base(7).encode_to_vec()));
    assert_same(&spans, "awkward spans");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Option<any_value::Value>> {
        prop_oneof![
            Just(None),
            "[a-z0-9./ ü]{0,12}".prop_map(|v| Some(any_value::Value::StringValue(v))),
            any::<i64>().prop_map(|v| Some(any_value::Value::IntValue(v))),
            any::<bool>().prop_map(|v| Some(any_value::Value::BoolValue(v))),
            any::<f64>().prop_map(|v| Some(any_value::Value::DoubleValue(v))),
            proptest::collection::vec(any::<u8>(), 0..4)
                .prop_map(|v| Some(any_value::Value::BytesValue(v))),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("http.method".to_string()),
            Just("http.request.method".to_string()),
            Just("http.route".to_string()),
            Just("http.status_code".to_string()),
            Just("http.response.status_code".to_string()),
            Just("db.system".to_string()),
            Just("k8s.pod.name".to_string()),
            Just("host.name".to_string()),
            "[a-z.]{1,10}",
        ]
    }

    fn attrs() -> impl Strategy<Value = Vec<KeyValue>> {
        proptest::collection::vec(
            (key(), value(), any::<bool>()).prop_map(|(k, v, present)| KeyValue {
                key: k,
                value: present.then_some(AnyValue { value: v }),
                ..Default::default()
            }),
            0..8,
        )
    }

    fn one_span() -> impl Strategy<Value = Span> {
        (
            (
                any::<u8>(),
                0u64..10_000_000_000,
                0u64..10_000_000_000,
                -1i32..7,
            ),
            (
                attrs(),
                proptest::collection::vec((any::<u64>(), attrs()), 0..3),
            ),
            (
                -1i32..4,
                "[a-z]{0,6}",
                proptest::option::of(Just(vec![7u8; 8])),
            ),
        )
            .prop_map(
                |((n, start, dur, kind), (attributes, events), (code, msg, parent))| {
                    let mut sp = base(n);
                    sp.start_time_unix_nano = T + start;
                    sp.end_time_unix_nano = T + start + dur;
                    sp.kind = kind;
                    sp.attributes = attributes;
                    sp.events = events
                        .into_iter()
                        .map(|(t, attributes)| span::Event {
                            time_unix_nano: t,
                            name: "e".into(),
                            attributes,
                            dropped_attributes_count: 0,
                        })
                        .collect();
                    sp.status = (code >= 0).then_some(Status { code, message: msg });
                    sp.parent_span_id = parent.unwrap_or_default();
                    sp
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn random_spans_encode_the_same_both_ways(
            parts in proptest::collection::vec((one_span(), proptest::option::of(one_span()), 0u8..4), 1..20),
        ) {
            let res = ctx(&[kv("service.name", s("svc")), kv("host.name", s("h"))], T / 1_000_000);
            let spans: Vec<KeptSpan> = parts
                .into_iter()
                .map(|(a, b, trace)| {
                    // Sometimes a second encoding appended: a merged span.
                    let mut bytes = a.encode_to_vec();
                    if let Some(b) = b {
                        bytes.extend(b.encode_to_vec());
                    }
                    kept(trace, &res, bytes)
                })
                .collect();
            assert_same(&spans, "random spans");
        }
    }
}
