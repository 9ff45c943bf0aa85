//! OTTL conditions on arbitrary text: parsing never panics; what parses prints back to text
//! that parses to the same tree; what compiles (in both contexts) evaluates on a real span
//! without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tracesift::otlp::SpanInput;
use tracesift::sample::ottl::{compile_condition, parse_condition, Context, Cx};

fn span() -> Vec<u8> {
    let kv = |k: &str, v: any_value::Value| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    };
    Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: "GET /x".into(),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_001_000_000_000,
        attributes: vec![
            kv("s", any_value::Value::StringValue("abc".into())),
            kv("i", any_value::Value::IntValue(7)),
        ],
        events: vec![Event {
            name: "exception".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
    .encode_to_vec()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(e) = parse_condition(text) else {
        return;
    };
    let printed = e.to_string();
    let again = parse_condition(&printed).expect("printed condition parses");
    assert_eq!(again, e, "{printed}");
    let bytes = span();
    for ctx in [Context::Span, Context::SpanEvent] {
        if let Ok(c) = compile_condition(&e, ctx) {
            let input = SpanInput {
                span: &bytes,
                resource: &[],
                scope: &[],
                resource_schema_field: &[],
                scope_schema_field: &[],
                known: None,
            };
            let cx = Cx::span(input);
            let _ = c.eval(&cx);
        }
    }
});
