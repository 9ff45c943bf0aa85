//! Hostile input records: what real exporters and mistakes put on a topic. Used by the broker
//! test (`tests/poison.rs`) and the decoder property test (`tests/decode_props.rs`); the small
//! ones are also kept as files in `tests/fixtures/hostile/` (the fuzzers' seed corpus).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use super::{otlp_record, test_span};

/// A trace id: its first bytes are `tag`, its leading four the number `i + 1`.
pub fn trace_id(tag: u8, i: u32) -> [u8; 16] {
    let mut t = [tag; 16];
    t[..4].copy_from_slice(&(i + 1).to_be_bytes());
    t
}

fn request(resource: Resource, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The records tracesift must refuse: (name, value, content type, a fragment of the reason).
pub fn hostile() -> Vec<(&'static str, Vec<u8>, Option<&'static str>, &'static str)> {
    let mut out = Vec::new();
    // A non-UTF-8 span name in an ERROR trace: encode a placeholder, patch the bytes.
    let t = trace_id(0xa1, 0);
    let mut s = test_span(&t, 1, true);
    s.name = "NAMEXXXX".into();
    let mut v = otlp_record(vec![s, test_span(&t, 2, true)]);
    let at = v.windows(8).position(|w| w == b"NAMEXXXX").unwrap();
    v[at..at + 8].copy_from_slice(&[0xff, 0xfe, 0xc3, 0x28, 0xa0, 0xa1, 0xe2, 0x28]);
    out.push(("non-utf8-name", v, None, "Span.name is not valid UTF-8"));
    // A mistyped known field: start_time_unix_nano (fixed64) sent as a varint.
    let t = trace_id(0xa2, 0);
    let mut s = test_span(&t, 1, true);
    s.start_time_unix_nano = 0;
    s.name = "mistyped".into();
    let mut body = s.encode_to_vec();
    body.extend_from_slice(&[7 << 3, 0x05]);
    let mut ss = Vec::new();
    ss.push(0x12);
    prost::encoding::encode_varint(body.len() as u64, &mut ss);
    ss.extend_from_slice(&body);
    let mut rs = Vec::new();
    rs.push(0x12);
    prost::encoding::encode_varint(ss.len() as u64, &mut rs);
    rs.extend_from_slice(&ss);
    let mut v = vec![0x0a];
    prost::encoding::encode_varint(rs.len() as u64, &mut v);
    v.extend_from_slice(&rs);
    out.push(("mistyped-field", v, None, "Span field 7 has wire type"));
    out.push(("empty", Vec::new(), None, "record holds no spans"));
    let logs = br#"{"resourceLogs":[{"resource":{},"scopeLogs":[{"logRecords":[{"timeUnixNano":"1","body":{"stringValue":"hello"}}]}]}]}"#;
    out.push((
        "json-logs",
        logs.to_vec(),
        Some("application/json"),
        "OTLP logs, not traces",
    ));
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    // Whatever the bytes happen to look like first is the reason.
    out.push(("random", random, None, ""));
    // ~900 KB of resource over 3,000 one-span ERROR traces.
    let big = Resource {
        attributes: vec![KeyValue {
            key: "big".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("r".repeat(900_000))),
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let spans = (0..3000u32)
        .map(|i| {
            let mut s = test_span(&trace_id(0xa3, i), 1, true);
            s.name = String::new();
            s
        })
        .collect();
    out.push((
        "big-resource",
        request(big, spans).encode_to_vec(),
        None,
        "resource repeated per trace",
    ));
    // 4 MiB of OTLP/JSON empty spans (tansu 0.6.0 never serves a record of 6 MiB or more to a
    // consumer, so the 8 MiB case is `tests/json_bound.rs`, which measures the decoder's
    // allocations directly).
    let mut json = String::from(r#"{"resourceSpans":[{"scopeSpans":[{"spans":["#);
    while json.len() < 4 << 20 {
        json.push_str("{},");
    }
    json.push_str("{}]}]}]}");
    out.push((
        "json-empty-spans",
        json.into_bytes(),
        Some("application/json"),
        "invalid trace id",
    ));
    out
}
