//! OTTL conditions (`ottl_condition`), as the Collector's `pkg/ottl` defines them: a conformance
//! table of expression × span → expected outcome, run through the public path a record takes
//! (the lazy scan with the policy's whole-span leaf, the trace summary, the decision). Every
//! path, enum, operator, precedence rule, type-mismatch rule, nil, nested index, converter and
//! error mode is covered; the generated part checks each path against its own value, another
//! value of its kind, another kind, and nil. Rows are from the Collector's documentation and
//! tests (paraphrased) and from its `compare.go` / `math.go` rules.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use tracesift::clock::StreamTime;
use tracesift::otlp::{scan_request_into, TraceId};
use tracesift::sample::{
    ErrorMode, OttlConditionConfig, PolicyKind, PolicySpec, Sampler, TraceSummary,
};

const START: u64 = 1_700_000_000_000_000_000;
const TRACE: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
const SPAN_A: [u8; 8] = [0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18];

fn v(x: any_value::Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(x) })
}
fn kv(k: &str, x: any_value::Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: v(x),
        ..Default::default()
    }
}
fn s(x: &str) -> any_value::Value {
    any_value::Value::StringValue(x.into())
}
fn i(x: i64) -> any_value::Value {
    any_value::Value::IntValue(x)
}

/// The root span every row reads unless it says `B`.
fn span_a() -> Span {
    Span {
        trace_id: TRACE.to_vec(),
        span_id: SPAN_A.to_vec(),
        trace_state: "vendor=abc,congo=t61rcWkgMzE".into(),
        name: "GET /api/payment".into(),
        kind: 2,
        start_time_unix_nano: START,
        end_time_unix_nano: START + 1_500_000_000,
        attributes: vec![
            kv("int", i(500)),
            kv("s", s("abc")),
            kv("f", any_value::Value::DoubleValue(1.5)),
            kv("b", any_value::Value::BoolValue(true)),
            kv(
                "m",
                any_value::Value::KvlistValue(KeyValueList {
                    values: vec![
                        kv("k", s("v")),
                        kv(
                            "n",
                            any_value::Value::KvlistValue(KeyValueList {
                                values: vec![kv("x", i(1))],
                            }),
                        ),
                    ],
                }),
            ),
            kv(
                "l",
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![v(s("a")).unwrap(), v(s("b")).unwrap()],
                }),
            ),
            kv("by", any_value::Value::BytesValue(vec![1, 2])),
            KeyValue {
                key: "empty".into(),
                value: Some(AnyValue { value: None }),
                ..Default::default()
            },
            kv("http.route", s("/api/payment/42")),
            kv("db.system", s("postgresql")),
            kv("num_str", s("42")),
            kv("csv", s("a,b,c")),
        ],
        dropped_attributes_count: 3,
        events: vec![
            Event {
                time_unix_nano: START + 1_000_000,
                name: "exception".into(),
                attributes: vec![
                    kv("exception.type", s("java.lang.NullPointerException")),
                    kv("exception.message", s("npe")),
                ],
                dropped_attributes_count: 0,
            },
            Event {
                time_unix_nano: START + 2_000_000,
                name: "retry".into(),
                attributes: vec![kv("attempt", i(2))],
                dropped_attributes_count: 1,
            },
        ],
        dropped_events_count: 2,
        links: vec![Link {
            trace_id: [9; 16].to_vec(),
            span_id: [9; 8].to_vec(),
            ..Default::default()
        }],
        dropped_links_count: 1,
        status: Some(Status {
            message: "boom".into(),
            code: status::StatusCode::Error as i32,
        }),
        ..Default::default()
    }
}

/// A child client span without attributes or events.
fn span_b() -> Span {
    Span {
        trace_id: TRACE.to_vec(),
        span_id: vec![0x21; 8],
        parent_span_id: SPAN_A.to_vec(),
        name: "SELECT".into(),
        kind: 3,
        start_time_unix_nano: START + 10_000_000,
        end_time_unix_nano: START + 20_000_000,
        ..Default::default()
    }
}

fn record(spans: Vec<Span>) -> Bytes {
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s("checkout")),
                    kv("deployment.environment", s("prod")),
                ],
                dropped_attributes_count: 4,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "io.opentelemetry.http".into(),
                    version: "1.2.3".into(),
                    attributes: vec![kv("lib.lang", s("rust"))],
                    dropped_attributes_count: 0,
                }),
                spans,
                schema_url: "https://example.com/scope".into(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
        }],
    };
    Bytes::from(req.encode_to_vec())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// The condition holds: the trace is kept.
    T,
    /// It does not hold: not kept, no error.
    F,
    /// Evaluation fails (under `propagate`: not kept, the policy's error counted).
    Err,
    /// A configuration error at load.
    Cfg,
}
use Want::*;

fn policy(mode: ErrorMode, span: &[&str], events: &[&str]) -> PolicySpec {
    PolicySpec {
        name: "p".into(),
        kind: PolicyKind::OttlCondition(OttlConditionConfig {
            error_mode: mode,
            span: span.iter().map(|s| s.to_string()).collect(),
            spanevent: events.iter().map(|s| s.to_string()).collect(),
        }),
    }
}

/// The decision on a record's trace (kept, an evaluation error counted), as the scan judges
/// it; the same spans judged again from the buffer (as after a reload, where the span is read
/// without what the scan knew of it) must agree.
fn decide(sampler: &Sampler, rec: &Bytes) -> (bool, bool) {
    let mut out = Vec::new();
    scan_request_into(rec, sampler.probe(), 0, &mut out).unwrap();
    let mut sum = TraceSummary::new();
    let mut again = TraceSummary::new();
    for x in &out {
        sum.add(&x.meta);
        again.add(&tracesift::otlp::rescan_span(&x.span, sampler.probe()).unwrap());
    }
    let d = sampler.decide(TraceId(TRACE), &sum, StreamTime::ZERO);
    let got = (d.keep, sampler.evaluation_errors(&sum).next().is_some());
    let d2 = sampler.decide(TraceId(TRACE), &again, StreamTime::ZERO);
    let got2 = (d2.keep, sampler.evaluation_errors(&again).next().is_some());
    assert_eq!(got, got2, "scanned and buffered spans judged alike");
    got
}

fn outcome(spec: PolicySpec, rec: &Bytes) -> Want {
    let Ok(sampler) = Sampler::build(&[spec]) else {
        return Cfg;
    };
    match decide(&sampler, rec) {
        (true, _) => T,
        (false, true) => Err,
        (false, false) => F,
    }
}

/// Paths of span A with their value, another value of their kind, and a value of another kind.
/// `ord`: the kind is ordered (else only `==` / `!=` hold).
const PATHS: &[(&str, &str, &str, &str, bool)] = &[
    ("name", r#""GET /api/payment""#, r#""GET""#, "1", true),
    ("span.name", r#""GET /api/payment""#, r#""x""#, "1", true),
    (
        "kind",
        "SPAN_KIND_SERVER",
        "SPAN_KIND_CLIENT",
        r#""2""#,
        true,
    ),
    ("kind", "2", "3", r#""Server""#, true),
    ("kind.string", r#""Server""#, r#""Client""#, "2", true),
    (
        "kind.deprecated_string",
        r#""SPAN_KIND_SERVER""#,
        r#""SPAN_KIND_CLIENT""#,
        "2",
        true,
    ),
    (
        "status.code",
        "STATUS_CODE_ERROR",
        "STATUS_CODE_OK",
        r#""ERROR""#,
        true,
    ),
    ("status.message", r#""boom""#, r#""bang""#, "0", true),
    (
        "trace_id",
        "TraceID(0x0102030405060708090a0b0c0d0e0f10)",
        "TraceID(0x0102030405060708090a0b0c0d0e0f11)",
        "0x0102030405060708090a0b0c0d0e0f10",
        false,
    ),
    (
        "trace_id.string",
        r#""0102030405060708090a0b0c0d0e0f10""#,
        r#""0102030405060708090a0b0c0d0e0f11""#,
        "0x0102030405060708090a0b0c0d0e0f10",
        true,
    ),
    (
        "span_id",
        "SpanID(0x1112131415161718)",
        "SpanID(0x1112131415161719)",
        "0x1112131415161718",
        false,
    ),
    (
        "span_id.string",
        r#""1112131415161718""#,
        r#""1112131415161719""#,
        "1",
        true,
    ),
    (
        "parent_span_id",
        "SpanID(0x0000000000000000)",
        "SpanID(0x1112131415161718)",
        "0x0000000000000000",
        false,
    ),
    (
        "parent_span_id.string",
        r#""0000000000000000""#,
        r#""1112131415161718""#,
        "0",
        true,
    ),
    (
        "trace_state",
        r#""vendor=abc,congo=t61rcWkgMzE""#,
        r#""vendor=abc""#,
        "1",
        true,
    ),
    (
        r#"trace_state["vendor"]"#,
        r#""abc""#,
        r#""abd""#,
        "1",
        true,
    ),
    (r#"trace_state["absent"]"#, r#""""#, r#""x""#, "0", true),
    (
        "start_time_unix_nano",
        "1700000000000000000",
        "1700000000000000001",
        r#""1700000000000000000""#,
        true,
    ),
    (
        "end_time_unix_nano",
        "1700000001500000000",
        "1700000001500000001",
        "true",
        true,
    ),
    ("dropped_attributes_count", "3", "4", r#""3""#, true),
    ("dropped_events_count", "2", "3", r#""2""#, true),
    ("dropped_links_count", "1", "2", "true", true),
    (r#"attributes["int"]"#, "500", "501", r#""500""#, true),
    (r#"attributes["int"]"#, "500.0", "500.5", "true", true),
    (
        r#"attributes["s"]"#,
        r#""abc""#,
        r#""abd""#,
        "0x616263",
        true,
    ),
    (r#"attributes["f"]"#, "1.5", "1.25", r#""1.5""#, true),
    (r#"attributes["b"]"#, "true", "false", "1", true),
    (r#"attributes["by"]"#, "0x0102", "0x0103", r#""0102""#, true),
    (r#"attributes["m"]["k"]"#, r#""v""#, r#""w""#, "1", true),
    (r#"attributes["m"]["n"]["x"]"#, "1", "2", r#""1""#, true),
    (r#"attributes["l"][0]"#, r#""a""#, r#""b""#, "0", true),
    (r#"attributes["l"][1]"#, r#""b""#, r#""a""#, "1", true),
    (
        r#"attributes["http.route"]"#,
        r#""/api/payment/42""#,
        r#""/api/payment""#,
        "42",
        true,
    ),
    (
        r#"attributes["db.system"]"#,
        r#""postgresql""#,
        r#""mysql""#,
        "1",
        true,
    ),
    (
        r#"resource.attributes["service.name"]"#,
        r#""checkout""#,
        r#""cart""#,
        "1",
        true,
    ),
    (
        r#"resource.attributes["deployment.environment"]"#,
        r#""prod""#,
        r#""dev""#,
        "1",
        true,
    ),
    (
        "resource.dropped_attributes_count",
        "4",
        "5",
        r#""4""#,
        true,
    ),
    (
        "resource.schema_url",
        r#""https://opentelemetry.io/schemas/1.21.0""#,
        r#""x""#,
        "1",
        true,
    ),
    (
        "instrumentation_scope.name",
        r#""io.opentelemetry.http""#,
        r#""x""#,
        "1",
        true,
    ),
    (
        "instrumentation_scope.version",
        r#""1.2.3""#,
        r#""1.2.4""#,
        "123",
        true,
    ),
    (
        r#"instrumentation_scope.attributes["lib.lang"]"#,
        r#""rust""#,
        r#""go""#,
        "1",
        true,
    ),
    (
        "instrumentation_scope.dropped_attributes_count",
        "0",
        "1",
        r#""0""#,
        true,
    ),
    (
        "scope.name",
        r#""io.opentelemetry.http""#,
        r#""x""#,
        "1",
        true,
    ),
    ("scope.version", r#""1.2.3""#, r#""1.2.2""#, "1", true),
    (
        "scope.schema_url",
        r#""https://example.com/scope""#,
        r#""x""#,
        "1",
        true,
    ),
    (
        "start_time",
        "end_time - Duration(\"1.5s\")",
        "end_time",
        "1700000000000000000",
        true,
    ),
    (
        "end_time - start_time",
        "Duration(\"1500ms\")",
        "Duration(\"1s\")",
        "1500000000",
        true,
    ),
    ("Len(events)", "2", "1", r#""2""#, true),
    ("Len(links)", "1", "0", r#""1""#, true),
];

/// The generated rows: each path against its value, another value, another kind and nil, with
/// every operator, both ways round.
fn generated() -> Vec<(String, Want)> {
    let mut rows = Vec::new();
    for &(p, val, other, cross, ord) in PATHS {
        let mut r = |c: String, w: Want| rows.push((c, w));
        r(format!("{p} == {val}"), T);
        r(format!("{val} == {p}"), T);
        r(format!("{p} != {val}"), F);
        r(format!("{p} == {other}"), F);
        r(format!("{p} != {other}"), T);
        r(format!("{p} == {cross}"), F);
        r(format!("{p} != {cross}"), T);
        r(format!("{cross} != {p}"), T);
        r(format!("{p} < {cross}"), F);
        r(format!("{p} >= {cross}"), F);
        r(format!("{p} == nil"), F);
        r(format!("{p} != nil"), T);
        r(format!("nil == {p}"), F);
        r(format!("{p} <= nil"), F);
        r(format!("not {p} == {val}"), F);
        r(format!("not ({p} != {val})"), T);
        let o = |b: bool| if ord && b { T } else { F };
        r(format!("{p} < {val}"), F);
        r(format!("{p} <= {val}"), o(true));
        r(format!("{p} >= {val}"), o(true));
        r(format!("{p} > {val}"), F);
        r(format!("{p} == {val} and {p} != {other}"), T);
        r(format!("{p} == {other} or {p} == {val}"), T);
    }
    rows
}

/// Hand-written rows: (condition, outcome) on span A.
const ROWS: &[(&str, Want)] = &[
    // Literals, logic, precedence (`not` > `and` > `or`), short-circuits.
    ("true", T),
    ("false", F),
    ("not false", T),
    ("not (false or false)", T),
    ("not (not true)", T),
    ("not (not false)", F),
    ("true and false", F),
    ("false or true", T),
    ("true or false and false", T),
    ("(true or false) and false", F),
    ("not true or true", T),
    ("not (true or true)", F),
    ("not true and false or true", T),
    ("false and Substring(attributes[\"missing\"], 0, 1) == \"x\"", F),
    ("true or HasPrefix(attributes[\"missing\"], \"x\")", T),
    ("HasPrefix(attributes[\"missing\"], \"x\") or true", Err),
    // Arithmetic: `* /` before `+ -`, left to right; ints stay ints; int with double is double.
    ("1 + 2 * 3 == 7", T),
    ("(1 + 2) * 3 == 9", T),
    ("10 - 2 - 3 == 5", T),
    ("10 - (2 - 3) == 11", T),
    ("7 / 2 == 3", T),
    ("7 / 2.0 == 3.5", T),
    ("-7 / 2 == -3", T),
    ("1 / 0 == 0", Err),
    ("1.0 / 0 == 0", Err),
    ("attributes[\"int\"] + 1 == 501", T),
    ("attributes[\"int\"] - -1 == 501", T),
    ("2 * attributes[\"f\"] == 3.0", T),
    ("2 * attributes[\"f\"] == 3", T),
    ("attributes[\"s\"] + 1 > 0", Err),
    ("attributes[\"missing\"] * 2 > 0", Err),
    ("attributes[\"b\"] + 1 == 2", Err),
    ("9223372036854775807 + 1 < 0", T),
    ("-1 < 0", T),
    ("3. == 3", T),
    (".5 == 0.5", T),
    ("1.5e3 == 1500", T),
    // Times and durations.
    ("end_time - start_time == Duration(\"1.5s\")", T),
    ("end_time - start_time > Duration(\"1s\")", T),
    ("end_time_unix_nano - start_time_unix_nano == 1500000000", T),
    ("start_time + Duration(\"1500ms\") == end_time", T),
    ("end_time > start_time", T),
    ("Duration(\"1s\") == 1000000000", F),
    ("Duration(\"1s\") < Duration(\"2s\")", T),
    ("Duration(\"1h30m\") == Duration(\"90m\")", T),
    ("Duration(\"-2m\") < Duration(\"0s\")", T),
    ("start_time == 1700000000000000000", F),
    ("end_time - start_time < 2000000000", F),
    ("start_time * 2 > start_time", Err),
    ("start_time + start_time > start_time", Err),
    ("Duration(attributes[\"s\"]) == nil", Err),
    ("Duration(\"1d\") == nil", Cfg),
    // nil: equals only nil; a missing attribute, an empty value, a missing nested key are nil.
    ("nil == nil", T),
    ("nil != nil", F),
    ("nil <= nil", T),
    ("nil >= nil", T),
    ("nil < nil", F),
    ("attributes[\"missing\"] == nil", T),
    ("attributes[\"missing\"] != nil", F),
    ("attributes[\"missing\"] != \"x\"", T),
    ("attributes[\"missing\"] == \"x\"", F),
    ("attributes[\"missing\"] < 5", F),
    ("attributes[\"missing\"] >= nil", T),
    ("attributes[\"empty\"] == nil", T),
    ("attributes[\"m\"][\"zz\"] == nil", T),
    ("attributes[\"missing\"][\"x\"] == nil", T),
    ("attributes[\"missing\"][0] == nil", T),
    ("cache[\"x\"] == nil", T),
    ("resource.attributes[\"missing\"] == nil", T),
    // Go's string escapes.
    (r#""\x41\u00e9\101\t" == "Aé\x41\u0009""#, T),
    (r#""\a\b\f\v" == "\x07\x08\x0c\x0b""#, T),
    (r#""\xff" == "x""#, Cfg),
    (r#""\q" == "x""#, Cfg),
    // Different kinds are "not equal", never an error; orderings hold within a kind.
    ("1 == \"1\"", F),
    ("1 != \"1\"", T),
    ("true > false", T),
    ("true > 0", F),
    ("\"true\" == true", F),
    ("6 > 3.14", T),
    ("6 == 3.14", F),
    ("2 > SPAN_KIND_UNSPECIFIED", T),
    ("0x61 < 0x62", T),
    ("0x61 == \"a\"", F),
    ("\"b\" > \"a\"", T),
    ("\"B\" < \"a\"", T),
    ("\"ab\" < \"b\"", T),
    ("trace_id == 0x0102030405060708090a0b0c0d0e0f10", F),
    ("trace_id != 0x0102030405060708090a0b0c0d0e0f10", T),
    ("trace_id == TraceID(\"0102030405060708090a0b0c0d0e0f10\")", T),
    ("SpanID(0x1112131415161718) == span_id", T),
    ("span_id < SpanID(0x1112131415161719)", F),
    // Maps and lists: equality only, deep.
    ("attributes[\"m\"] == {\"k\": \"v\", \"n\": {\"x\": 1}}", T),
    ("attributes[\"m\"] == {\"n\": {\"x\": 1}, \"k\": \"v\"}", T),
    ("attributes[\"m\"] != {\"k\": \"v\"}", T),
    ("attributes[\"m\"] < {\"k\": \"v\"}", F),
    ("attributes[\"l\"] == [\"a\", \"b\"]", T),
    ("attributes[\"l\"] == [\"b\", \"a\"]", F),
    ("attributes[\"l\"] < [\"a\", \"b\"]", F),
    ("[1, 2] == [1, 2]", T),
    ("[1, 2] == [1, 2.0]", F),
    // Indexing: errors on the wrong kind or out of range.
    ("attributes[\"s\"][\"k\"] == nil", Err),
    ("attributes[\"l\"][9] == nil", Err),
    ("attributes[\"l\"][-1] == nil", Err),
    ("attributes[\"l\"][\"x\"] == nil", Err),
    ("attributes[\"m\"][0] == nil", Err),
    ("attributes[\"int\"][0] == nil", Err),
    // Converters.
    ("IsMatch(name, \"^GET\")", T),
    ("IsMatch(name, \"^POST\")", F),
    ("IsMatch(name, \"payment$\")", T),
    ("IsMatch(attributes[\"missing\"], \".*\")", F),
    (r#"IsMatch(attributes["int"], "^5\\d\\d$")"#, T),
    (r#"IsMatch(attributes["m"], "\"k\":\"v\"")"#, T),
    ("IsMatch(attributes[\"by\"], \"^0102$\")", T),
    ("IsMatch(attributes[\"s\"], attributes[\"s\"])", T),
    ("IsMatch(name, attributes[\"s\"])", F),
    ("IsMatch(name, attributes[\"missing\"])", Err),
    ("IsMatch(name, \"[\")", Cfg),
    (r#"IsMatch(name, "\d")"#, Cfg),
    ("HasPrefix(name, \"GET\")", T),
    ("HasPrefix(name, \"POST\")", F),
    ("HasSuffix(name, \"payment\")", T),
    ("HasPrefix(attributes[\"missing\"], \"x\")", Err),
    ("HasPrefix(attributes[\"int\"], \"5\")", Err),
    ("Len(name) == 16", T),
    ("Len(\"héllo\") == 6", T),
    ("Len(attributes[\"l\"]) == 2", T),
    ("Len(attributes[\"m\"]) == 2", T),
    ("Len(attributes[\"by\"]) == 2", T),
    ("Len(attributes) == 12", T),
    ("Len(resource.attributes) == 2", T),
    ("Len(attributes[\"missing\"]) == 0", Err),
    ("Len(attributes[\"int\"]) > 0", Err),
    ("ContainsValue(attributes[\"l\"], \"a\")", T),
    ("ContainsValue(attributes[\"l\"], \"z\")", F),
    ("ContainsValue([1, 2.0], 2)", T),
    ("ContainsValue([1, 2], 2.0)", T),
    ("ContainsValue(Split(attributes[\"csv\"], \",\"), \"b\")", T),
    ("ContainsValue(attributes[\"missing\"], \"a\")", Err),
    ("ContainsValue(attributes[\"s\"], \"a\")", Err),
    ("IsRootSpan()", T),
    ("not IsRootSpan()", F),
    ("IsRootSpan() and kind == SPAN_KIND_SERVER", T),
    ("Substring(name, 0, 3) == \"GET\"", T),
    ("Substring(name, 4, 4) == \"/api\"", T),
    ("Substring(name, 4, 100) == \"x\"", Err),
    ("Substring(name, -1, 2) == \"x\"", Err),
    ("Substring(name, 0, 0) == \"\"", Err),
    ("Substring(attributes[\"missing\"], 0, 4) == \"keep\"", Err),
    ("Substring(name, 0, 1.5) == \"G\"", Err),
    ("Substring(\"héllo\", 1, 2, true) == \"él\"", T),
    ("Substring(\"héllo\", 1, 2, utf8_safe = true) == \"él\"", T),
    ("ConvertCase(name, \"lower\") == \"get /api/payment\"", T),
    ("ConvertCase(name, \"upper\") == \"GET /API/PAYMENT\"", T),
    ("ConvertCase(\"someName\", \"snake\") == \"some_name\"", T),
    ("ConvertCase(\"some_name\", \"camel\") == \"SomeName\"", T),
    ("ConvertCase(target = name, to_case = \"lower\") == \"get /api/payment\"", T),
    ("ConvertCase(name, \"kebab\") == \"x\"", Cfg),
    ("ToLowerCase(name) == \"get /api/payment\"", T),
    ("ToUpperCase(attributes[\"s\"]) == \"ABC\"", T),
    ("ToLowerCase(attributes[\"missing\"]) == nil", Err),
    ("Concat([\"a\", attributes[\"missing\"], 1], \"-\") == \"a-<nil>-1\"", T),
    ("Concat([name], \"\") == name", T),
    ("Concat([attributes[\"s\"], resource.attributes[\"service.name\"]], \"@\") == \"abc@checkout\"", T),
    ("Concat(attributes[\"l\"], \"-\") == \"a-b\"", Cfg),
    ("Split(attributes[\"csv\"], \",\")[1] == \"b\"", T),
    ("Split(attributes[\"csv\"], \",\")[3] == \"x\"", Err),
    ("Len(Split(attributes[\"csv\"], \",\")) == 3", T),
    ("Split(attributes[\"missing\"], \",\")[0] == \"\"", Err),
    ("Split(attributes[\"csv\"], \",\") == [\"a\", \"b\", \"c\"]", F),
    ("Split(name, \" \")[0] == \"GET\"", T),
    ("Int(\"12\") == 12", T),
    ("Int(\"abc\") == nil", T),
    ("Int(2.7) == 2", T),
    ("Int(true) == 1", T),
    ("Int(attributes[\"num_str\"]) == 42", T),
    ("Int(attributes[\"missing\"]) == nil", T),
    ("Int(attributes[\"m\"]) == nil", Err),
    ("Double(\"abc\") == nil", Err),
    ("Double(\"1.5\") == 1.5", T),
    ("Double(1) == 1.0", T),
    ("Double(nil) == nil", T),
    ("Double(\" 1.5\") == 1.5", Err),
    ("Double(\"1e400\") > 0", Err),
    ("Double(attributes[\"int\"]) == 500.0", T),
    ("String(2.0) == \"2\"", T),
    ("String(2.7) == \"2.7\"", T),
    ("String(0x7b) == \"7b\"", T),
    ("String(attributes[\"missing\"]) == nil", T),
    (r#"String(attributes["l"]) == "[\"a\",\"b\"]""#, T),
    (r#"String(attributes["m"]) == "{\"k\":\"v\",\"n\":{\"x\":1}}""#, T),
    ("String(attributes[\"int\"]) == \"500\"", T),
    ("String(true) == \"true\"", T),
    ("String(0.0000001) == \"1e-7\"", T),
    ("String(1000000000000000000000.0) == \"1e+21\"", T),
    ("Bool(\"t\")", T),
    ("Bool(\"false\")", F),
    ("Bool(\"TrUe\")", Err),
    ("Bool(attributes[\"missing\"])", Err),
    ("Bool(1)", T),
    ("Bool(0.0)", F),
    ("Bool(attributes[\"b\"]) and true", T),
    ("IsString(attributes[\"s\"])", T),
    ("IsString(attributes[\"missing\"])", F),
    ("IsString(attributes[\"int\"])", F),
    ("IsInt(attributes[\"int\"])", T),
    ("IsInt(attributes[\"f\"])", F),
    ("IsDouble(attributes[\"f\"])", T),
    ("IsDouble(1)", F),
    ("IsBool(attributes[\"b\"])", T),
    ("IsBool(\"true\")", F),
    ("IsMap(attributes[\"m\"])", T),
    ("IsMap(attributes[\"l\"])", F),
    ("IsMap(attributes)", T),
    ("IsList(attributes[\"l\"])", T),
    ("IsList(attributes[\"missing\"])", F),
    ("IsList(Split(name, \" \"))", T),
    ("TraceID(0x0102) == trace_id", Cfg),
    ("TraceID(attributes[\"by\"]) == trace_id", Err),
    ("SpanID(0x0102) == span_id", Cfg),
    ("Coalesce([attributes[\"missing\"], attributes[\"s\"]]) == \"abc\"", T),
    ("Coalesce([attributes[\"missing\"]]) == nil", T),
    ("Coalesce(attributes[\"l\"]) == \"a\"", Cfg),
    ("Coalesce([attributes[\"missing\"]])[\"k\"] == nil", Err),
    ("Coalesce([]) == nil", Cfg),
    ("Hex(attributes[\"by\"]) == \"0102\"", T),
    ("Hex(\"abc\") == \"616263\"", T),
    ("Hex(1) == \"0000000000000001\"", T),
    ("Hex(28) == \"000000000000001c\"", T),
    ("Hex(true) == \"01\"", T),
    ("Hex(attributes[\"missing\"]) == \"\"", T),
    // What does not compile: syntax, unknown names, converters that are not conditions.
    ("attributes[\"b\"]", Cfg),
    ("name", Cfg),
    ("Int(\"1\")", Cfg),
    ("nil", Cfg),
    ("1 < 2 < 3", Cfg),
    ("name == \"op\" AND true", Cfg),
    ("name == \"op\" && true", Cfg),
    ("True", Cfg),
    ("not not true", Cfg),
    ("nme == \"x\"", Cfg),
    ("atributes[\"x\"] == 1", Cfg),
    ("kind == SPAN_KIND_SERVR", Cfg),
    ("set(name, \"x\")", Cfg),
    ("Foo(name) == 1", Cfg),
    ("IsMatch(name)", Cfg),
    ("IsMatch(name, \"a\", \"b\")", Cfg),
    ("flags == 1", Cfg),
    ("status == 1", Cfg),
    ("name[\"x\"] == 1", Cfg),
    ("spanevent.name == \"x\"", Cfg),
    ("trace_state[\"a\"][\"b\"] == \"\"", Cfg),
    ("\"unterminated == 1", Cfg),
    ("0x1 == nil", Cfg),
    ("1e3 == 1000", Cfg),
    ("'single' == name", Cfg),
    ("name == \"x\" where true", Cfg),
    ("\"a\" + \"b\" == \"ab\"", Cfg),
    ("true + 1 == 2", Cfg),
    ("nil + 1 == 1", Cfg),
    ("SPAN_KIND_SERVER + 1 == 3", Cfg),
    ("[1] + 1 == 2", Cfg),
    ("{\"k\": (name == \"x\")} == nil", Cfg),
    ("IsMatch(name == \"x\", \"a\")", Cfg),
    ("1 + (name == \"x\") == 1", Cfg),
    ("(name == \"x\") == true", Cfg),
    ("", Cfg),
    ("event_index == 0", Cfg),
];

/// Rows on span B (a child client span without attributes or events).
const ROWS_B: &[(&str, Want)] = &[
    ("IsRootSpan()", F),
    ("kind == SPAN_KIND_CLIENT", T),
    ("kind.string == \"Client\"", T),
    ("parent_span_id == SpanID(0x1112131415161718)", T),
    ("parent_span_id.string == \"1112131415161718\"", T),
    ("status.code == STATUS_CODE_UNSET", T),
    ("status.message == \"\"", T),
    ("attributes[\"int\"] == nil", T),
    ("Len(attributes) == 0", T),
    ("Len(events) == 0", T),
    ("trace_state == \"\"", T),
    ("trace_state[\"vendor\"] == \"\"", T),
    ("end_time - start_time == Duration(\"10ms\")", T),
];

/// Span-event rows on span A's two events (`exception` at +1 ms, `retry` at +2 ms): true when
/// the condition holds on one of them.
const EVENT_ROWS: &[(&str, Want)] = &[
    ("name == \"exception\"", T),
    ("name == \"retry\"", T),
    ("name == \"nope\"", F),
    ("name != \"exception\"", T),
    ("spanevent.name == \"retry\"", T),
    (
        "attributes[\"exception.type\"] == \"java.lang.NullPointerException\"",
        T,
    ),
    (
        "IsMatch(attributes[\"exception.type\"], \"NullPointer\")",
        T,
    ),
    ("attributes[\"exception.type\"] == nil", T),
    ("attributes[\"attempt\"] == 2", T),
    ("attributes[\"attempt\"] > 2", F),
    ("name == \"exception\" and attributes[\"attempt\"] == 2", F),
    ("time_unix_nano == 1700000000001000000", T),
    ("time - span.start_time == Duration(\"2ms\")", T),
    ("time > span.end_time", F),
    ("dropped_attributes_count == 1", T),
    ("span.name == \"GET /api/payment\"", T),
    ("span.kind == SPAN_KIND_SERVER", T),
    ("span.attributes[\"int\"] == 500", T),
    ("span.parent_span_id.string == \"0000000000000000\"", T),
    ("resource.attributes[\"service.name\"] == \"checkout\"", T),
    ("instrumentation_scope.name == \"io.opentelemetry.http\"", T),
    ("scope.version == \"1.2.3\"", T),
    ("Len(attributes) == 2", T),
    (
        "Substring(attributes[\"exception.type\"], 0, 4) == \"java\"",
        T,
    ),
    ("Substring(attributes[\"attempt\"], 0, 1) == \"2\"", Err),
    ("event_index == 0", Err),
    ("IsRootSpan()", Cfg),
    ("kind == 2", Cfg),
    ("spanevent.nme == \"x\"", Cfg),
];

/// A chain of operators past the limit is refused at load (the tree is walked recursively).
#[test]
fn operator_chains_are_bounded() {
    let a = record(vec![span_a()]);
    let ok = vec!["true"; 120].join(" and ");
    assert_eq!(outcome(policy(ErrorMode::Propagate, &[&ok], &[]), &a), T);
    let long = vec!["true"; 140].join(" and ");
    assert_eq!(
        outcome(policy(ErrorMode::Propagate, &[&long], &[]), &a),
        Cfg
    );
    let sum = format!("1{} == 0", " + 1".repeat(20_000));
    assert_eq!(outcome(policy(ErrorMode::Propagate, &[&sum], &[]), &a), Cfg);
}

#[test]
fn conformance_table() {
    let a = record(vec![span_a()]);
    let b = record(vec![span_b()]);
    let mut rows: Vec<(String, Want, &Bytes, bool)> = generated()
        .into_iter()
        .map(|(c, w)| (c, w, &a, false))
        .collect();
    rows.extend(ROWS.iter().map(|(c, w)| (c.to_string(), *w, &a, false)));
    rows.extend(ROWS_B.iter().map(|(c, w)| (c.to_string(), *w, &b, false)));
    rows.extend(
        EVENT_ROWS
            .iter()
            .map(|(c, w)| (c.to_string(), *w, &a, true)),
    );
    assert!(rows.len() >= 1200, "{} rows", rows.len());
    let mut wrong = Vec::new();
    for (cond, want, rec, event) in &rows {
        let spec = if *event {
            policy(ErrorMode::Propagate, &[], &[cond])
        } else {
            policy(ErrorMode::Propagate, &[cond], &[])
        };
        let got = outcome(spec, rec);
        if got != *want {
            let ctx = if *event { "spanevent" } else { "span" };
            wrong.push(format!("{ctx} `{cond}`: want {want:?}, got {got:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} rows wrong:\n{}",
        wrong.len(),
        rows.len(),
        wrong.join("\n")
    );
}

/// A record of one named span with optional attributes.
fn named(name: &str, span_id: u8, attrs: Vec<KeyValue>) -> Span {
    Span {
        trace_id: TRACE.to_vec(),
        span_id: vec![span_id; 8],
        parent_span_id: if span_id == 1 { vec![] } else { vec![1; 8] },
        name: name.into(),
        start_time_unix_nano: START,
        end_time_unix_nano: START + 1_000,
        attributes: attrs,
        ..Default::default()
    }
}

/// The Collector's default-error-mode test, in tracesift: a condition that fails before one
/// that matches.
#[test]
fn error_modes() {
    let conds = [
        r#"Substring(attributes["value"], 0, 4) == "keep""#,
        r#"name == "keep""#,
    ];
    let keep = record(vec![named("keep", 1, vec![])]);
    for (mode, want) in [
        (ErrorMode::Ignore, T),
        (ErrorMode::Silent, T),
        (ErrorMode::Propagate, Err),
    ] {
        assert_eq!(outcome(policy(mode, &conds, &[]), &keep), want, "{mode:?}");
    }
    // The default is `propagate`, as in the Collector.
    let cfg = tracesift::config::Config::parse(
        r#"
policies:
  - name: p
    type: ottl_condition
    ottl_condition:
      span: ['Substring(attributes["value"], 0, 4) == "keep"', 'name == "keep"']
"#,
    )
    .unwrap();
    let sampler = Sampler::build(&cfg.policies).unwrap();
    assert_eq!(decide(&sampler, &keep), (false, true));

    // A failing condition on one span, a match on another: `ignore` keeps; `propagate` makes
    // the policy's verdict an error whatever the order (documented: tracesift does not depend
    // on arrival order).
    let cond = [r#"Substring(attributes["value"], 0, 4) == "keep""#];
    for spans in [
        vec![
            named("a", 1, vec![]),
            named("b", 2, vec![kv("value", s("keeper"))]),
        ],
        vec![
            named("b", 2, vec![kv("value", s("keeper"))]),
            named("a", 1, vec![]),
        ],
    ] {
        let rec = record(spans);
        assert_eq!(outcome(policy(ErrorMode::Ignore, &cond, &[]), &rec), T);
        assert_eq!(outcome(policy(ErrorMode::Propagate, &cond, &[]), &rec), Err);
    }
    // Nothing fails, nothing matches: not kept, no error counted.
    let rec = record(vec![named("a", 1, vec![kv("value", s("drop"))])]);
    assert_eq!(outcome(policy(ErrorMode::Propagate, &cond, &[]), &rec), F);
    // Span conditions and event conditions are OR-ed.
    let with_event = record(vec![span_a()]);
    assert_eq!(
        outcome(
            policy(
                ErrorMode::Propagate,
                &["name == \"x\""],
                &["name == \"retry\""]
            ),
            &with_event
        ),
        T
    );
}

fn spec_yaml(yaml: &str) -> Vec<PolicySpec> {
    tracesift::config::Config::parse(yaml)
        .unwrap_or_else(|e| panic!("{e}"))
        .policies
}

/// `ottl_condition` inside `and`, `not`, `drop`, `composite` and the `tiers:` rules, and an
/// evaluation error passed up through `and` and `not`.
#[test]
fn nested_in_every_combinator() {
    let a = record(vec![span_a()]);
    let b = record(vec![span_b()]);
    let keeps =
        |policies: &[PolicySpec], rec: &Bytes| decide(&Sampler::build(policies).unwrap(), rec).0;
    let and = spec_yaml(
        r#"
policies:
  - name: db-and-server
    type: and
    and:
      and_sub_policy:
        - {name: o, type: ottl_condition, ottl_condition: {span: ['attributes["db.system"] == "postgresql"']}}
        - {name: k, type: ottl_condition, ottl_condition: {span: ['kind == SPAN_KIND_SERVER']}}
"#,
    );
    assert!(keeps(&and, &a));
    assert!(!keeps(&and, &b));
    let not = spec_yaml(
        r#"
policies:
  - name: not-root
    type: not
    not:
      not_sub_policy: {name: o, type: ottl_condition, ottl_condition: {span: ['IsRootSpan()']}}
"#,
    );
    assert!(!keeps(&not, &a));
    assert!(keeps(&not, &b));
    // An error is not a "no": `not` over a failing condition does not keep.
    let not_err = spec_yaml(
        r#"
policies:
  - name: not-err
    type: not
    not:
      not_sub_policy: {name: o, type: ottl_condition, ottl_condition: {span: ['HasPrefix(attributes["missing"], "x")']}}
"#,
    );
    assert_eq!(
        decide(&Sampler::build(&not_err).unwrap(), &a),
        (false, true)
    );
    let drop = spec_yaml(
        r#"
policies:
  - {name: all, type: always_sample}
  - name: no-health
    type: drop
    drop:
      drop_sub_policy:
        - {name: o, type: ottl_condition, ottl_condition: {error_mode: ignore, span: ['IsMatch(attributes["http.route"], "^/api/payment")']}}
"#,
    );
    assert!(!keeps(&drop, &a), "dropped by the ottl condition");
    assert!(keeps(&drop, &b));
    let composite = spec_yaml(
        r#"
policies:
  - name: c
    type: composite
    composite:
      max_total_spans_per_second: 1000
      policy_order: [db]
      composite_sub_policy:
        - {name: db, type: ottl_condition, ottl_condition: {span: ['attributes["db.system"] != nil']}}
      rate_allocation: [{policy: db, percent: 100}]
"#,
    );
    assert!(keeps(&composite, &a));
    assert!(!keeps(&composite, &b));
    let tiers = tracesift::config::Config::parse(
        r#"
tiers:
  - {name: exceptions, when: {type: ottl_condition, ottl_condition: {spanevent: ['name == "exception"']}}, sample_percentage: 100}
  - {name: rest, sample_percentage: 0}
"#,
    )
    .unwrap();
    let sampler = Sampler::from_config(&tiers).unwrap();
    assert!(decide(&sampler, &a).0);
    assert!(!decide(&sampler, &b).0);
}

/// A configuration whose conditions were added by a reload judges the spans already buffered:
/// they are scanned again with the new leaves (`rescan_span`).
#[test]
fn buffered_spans_are_judged_again_after_a_reload() {
    let a = record(vec![span_a()]);
    let before = Sampler::build(&[policy(ErrorMode::Propagate, &["name == \"x\""], &[])]).unwrap();
    let after = Sampler::build(&[policy(
        ErrorMode::Propagate,
        &["resource.attributes[\"service.name\"] == \"checkout\" and scope.version == \"1.2.3\""],
        &["attributes[\"attempt\"] == 2"],
    )])
    .unwrap();
    let mut out = Vec::new();
    scan_request_into(&a, before.probe(), 0, &mut out).unwrap();
    let mut sum = TraceSummary::new();
    for x in &out {
        sum.add(&x.meta);
    }
    assert!(!before.decide(TraceId(TRACE), &sum, StreamTime::ZERO).keep);
    let mut again = TraceSummary::new();
    for x in &out {
        again.add(&tracesift::otlp::rescan_span(&x.span, after.probe()).unwrap());
    }
    assert!(after.decide(TraceId(TRACE), &again, StreamTime::ZERO).keep);
}

/// `check`'s message shape: the YAML path, the condition's index, the column, what is wrong and
/// what was meant; every problem of every policy at once.
#[test]
fn bad_conditions_are_reported_with_path_index_and_column() {
    let yaml = r#"
policies:
  - {name: a, type: always_sample}
  - {name: b, type: latency, latency: {threshold_ms: 10}}
  - {name: c, type: status_code, status_code: {status_codes: [ERROR]}}
  - name: d
    type: ottl_condition
    ottl_condition:
      error_mode: ignore
      span:
        - 'name == "ok"'
        - '1 == 10 or atributes["k"] == 1'
        - 'IsMatc(name, "x") and kind == SPAN_KIND_SERVR'
      spanevent:
        - 'name == '
  - {name: e, type: ottl_condition, ottl_condition: {error_mode: loud, span: ['true']}}
  - {name: f, type: ottl_condition, ottl_condition: {}}
  - name: g
    type: and
    and:
      and_sub_policy:
        - {name: h, type: ottl_condition, ottl_condition: {span: ['Int(name)']}}
"#;
    let err = tracesift::config::Config::parse(yaml)
        .unwrap_err()
        .to_string();
    for want in [
        r#"policies[3].ottl_condition.span[1], column 12: unknown path "atributes"; did you mean "attributes"?"#,
        "policies[3].ottl_condition.span[2], column 1: unknown converter IsMatc; did you mean IsMatch?",
        "policies[3].ottl_condition.span[2], column 31: unknown enum symbol SPAN_KIND_SERVR; did you mean SPAN_KIND_SERVER?",
        "policies[3].ottl_condition.spanevent[0], column 9: expected a value",
        "policies[4].ottl_condition.error_mode",
        "policies[5].ottl_condition: needs at least one condition in `span` or `spanevent`",
        "policies[6].and.and_sub_policy[0].ottl_condition.span[0], column 1: `Int` does not return a boolean",
    ] {
        assert!(err.contains(want), "missing:\n  {want}\nin:\n{err}");
    }
    assert!(
        !err.contains("policies[3].ottl_condition.span[0]"),
        "a good condition is not reported:\n{err}"
    );
}

mod round_trip {
    use proptest::prelude::*;
    use tracesift::sample::ottl::parse::{
        parse_condition, Arg, CmpOp, Expr, Key, MathOp, Name, Pos,
    };

    fn name(text: String) -> Name {
        Name { text, at: Pos(0) }
    }

    fn lower() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9_]{0,6}".prop_filter("not a keyword", |s| {
            !matches!(s.as_str(), "and" | "or" | "not" | "true" | "false" | "nil")
        })
    }

    fn key() -> impl Strategy<Value = Key> {
        prop_oneof![
            any::<String>().prop_map(Key::Str),
            any::<i64>().prop_map(Key::Int)
        ]
    }

    fn leaf_value() -> impl Strategy<Value = Expr> {
        prop_oneof![
            Just(Expr::Nil),
            any::<bool>().prop_map(Expr::Bool),
            any::<i64>().prop_map(Expr::Int),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Expr::Float),
            any::<String>().prop_map(Expr::Str),
            prop::collection::vec(any::<u8>(), 1..6).prop_map(Expr::Bytes),
            "[A-Z][A-Z0-9_]{0,12}".prop_map(|s| Expr::Enum(name(s))),
            (
                prop::collection::vec(lower(), 1..4),
                prop::collection::vec(key(), 0..3)
            )
                .prop_map(|(parts, keys)| Expr::Path {
                    parts: parts.into_iter().map(name).collect(),
                    keys,
                }),
        ]
    }

    fn arith(e: &Expr) -> bool {
        matches!(
            e,
            Expr::Int(_) | Expr::Float(_) | Expr::Path { .. } | Expr::Call { .. } | Expr::Math(..)
        )
    }

    fn value() -> impl Strategy<Value = Expr> {
        leaf_value().prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                (
                    "[A-Z][a-zA-Z]{0,8}",
                    prop::collection::vec((proptest::option::of(lower()), inner.clone()), 0..3),
                    prop::collection::vec(key(), 0..2)
                )
                    .prop_map(|(n, args, keys)| Expr::Call {
                        name: name(n),
                        args: args
                            .into_iter()
                            .map(|(name, value)| Arg { name, value })
                            .collect(),
                        keys,
                    }),
                prop::collection::vec(inner.clone(), 0..3).prop_map(Expr::List),
                prop::collection::vec((any::<String>(), inner.clone()), 0..3).prop_map(Expr::Map),
                (
                    prop_oneof![
                        Just(MathOp::Add),
                        Just(MathOp::Sub),
                        Just(MathOp::Mul),
                        Just(MathOp::Div)
                    ],
                    inner.clone(),
                    inner
                )
                    .prop_filter("arithmetic takes numbers, paths, calls", |(_, l, r)| {
                        arith(l) && arith(r)
                    })
                    .prop_map(|(op, l, r)| Expr::Math(
                        op,
                        Box::new(l),
                        Box::new(r),
                        Pos(0)
                    )),
            ]
        })
    }

    fn condition() -> impl Strategy<Value = Expr> {
        let cmp = (
            prop_oneof![
                Just(CmpOp::Eq),
                Just(CmpOp::Ne),
                Just(CmpOp::Lt),
                Just(CmpOp::Le),
                Just(CmpOp::Gt),
                Just(CmpOp::Ge)
            ],
            value(),
            value(),
        )
            .prop_map(|(op, l, r)| Expr::Cmp(op, Box::new(l), Box::new(r), Pos(0)));
        let leaf = prop_oneof![
            any::<bool>().prop_map(Expr::Bool),
            cmp,
            ("[A-Z][a-zA-Z]{0,8}", prop::collection::vec(value(), 0..3)).prop_map(|(n, args)| {
                Expr::Call {
                    name: name(n),
                    args: args
                        .into_iter()
                        .map(|value| Arg { name: None, value })
                        .collect(),
                    keys: vec![],
                }
            }),
        ];
        leaf.prop_recursive(5, 32, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
                (inner.clone(), inner.clone())
                    .prop_map(|(l, r)| Expr::And(Box::new(l), Box::new(r))),
                (inner.clone(), inner).prop_map(|(l, r)| Expr::Or(Box::new(l), Box::new(r))),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// A printed condition parses back to the same tree.
        #[test]
        fn printed_conditions_parse_back_to_themselves(e in condition()) {
            let text = e.to_string();
            let back = parse_condition(&text)
                .map_err(|err| TestCaseError::fail(format!("{text}: {err:?}")))?;
            prop_assert_eq!(&back, &e, "{}", text);
            prop_assert_eq!(back.to_string(), text);
        }

        /// Any text: parsing never panics; what parses prints back to text that parses to it.
        #[test]
        fn any_text_parses_or_is_refused(text in "\\PC{0,64}") {
            if let Ok(e) = parse_condition(&text) {
                let again = parse_condition(&e.to_string()).unwrap();
                prop_assert_eq!(again, e);
            }
        }
    }
}
