//! OTLP on the wire: ids, a lazy span index over record bytes, and re-encoding by splicing.
//!
//! The sampler needs a handful of fields per span (ids, times, status, kind, a few attributes), not a
//! full object tree. [`scan_request`] walks an `ExportTraceServiceRequest` (the same wire form as
//! `TracesData`) in one pass, without allocating per span, and yields for every span:
//! - a [`SpanMeta`] with the fields policies look at, plus the bits of the policy leaves the span's
//!   attributes matched (computed by a [`SpanProbe`] the sampler supplies), and
//! - a [`SpanRef`]: the span's original encoded bytes as a `Bytes` slice of the record, plus a shared
//!   [`ScopeCtx`] holding the encoded resource and scope it came with.
//!
//! Kept traces are written out again by [`encode_request`], which splices those byte slices into a new
//! request: no span is decoded or re-serialized on the way through. Only spans bound for Parquet are
//! fully decoded ([`decode_span`], [`decode_resource`], [`decode_scope`]) with the
//! `opentelemetry-proto` prost types.
//!
//! OTLP/JSON input is converted once to protobuf ([`json_to_proto`]) and then takes the same path.

mod encode;
pub mod fields;
mod ids;
mod json;
mod mark;
mod scan;
pub mod strict;
pub mod threshold;
mod wire;

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

pub use self::encode::*;
pub use self::ids::*;
pub use self::mark::*;
pub use self::scan::*;
#[allow(unused_imports)]
use self::wire::*;
pub use self::wire::{key_hash, put_varint, varint_len, PassHasher};
use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde::{Deserialize, Serialize};

/// Why a record could not be read. The text goes into the dead-letter header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The protobuf framing is broken (truncated, bad varint, bad wire type).
    #[error("malformed protobuf at byte {at}: {what}")]
    Wire {
        /// Byte offset in the record where it went wrong.
        at: usize,
        /// What was wrong.
        what: &'static str,
    },
    /// A span's trace id is not 16 bytes, or is all zero.
    #[error("span has an invalid trace id ({len} bytes)")]
    BadTraceId {
        /// Length found.
        len: usize,
    },
    /// A span's span id is not 8 bytes, or is all zero.
    #[error("span has an invalid span id ({len} bytes)")]
    BadSpanId {
        /// Length found.
        len: usize,
    },
    /// OTLP/JSON that does not parse.
    #[error("malformed OTLP/JSON: {0}")]
    Json(String),
    /// A string field that is not UTF-8.
    #[error("field {field} is not valid UTF-8")]
    Utf8 {
        /// Which field.
        field: &'static str,
    },
    /// A known field with another wire type than the OTLP schema declares.
    #[error(
        "{message} field {field} has wire type other than {expected} (not OTLP traces, or corrupt)"
    )]
    WireType {
        /// The message holding it.
        message: &'static str,
        /// Field number.
        field: u32,
        /// The wire type the schema declares.
        expected: u8,
    },
    /// Messages nested deeper than [`strict::MAX_DEPTH`].
    #[error("messages nested deeper than {limit} levels")]
    TooDeep {
        /// The limit.
        limit: u32,
    },
    /// A record with no span in it: empty, a tombstone, or a request without spans.
    #[error("record holds no spans (empty, a tombstone, or not an ExportTraceServiceRequest)")]
    NoSpans,
    /// OTLP of another signal.
    #[error("record is OTLP {0}, not traces")]
    OtherSignal(&'static str),
    /// A record over the configured size limit.
    #[error("record of {len} bytes is over the {limit}-byte limit (source.max_record_bytes)")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Writing the record's traces apart would repeat its resources past the amplification bound.
    #[error("record of {len} bytes would be written as {fanout} bytes once split per trace (resource repeated per trace; limit {AMPLIFICATION}x)")]
    Amplification {
        /// Its size.
        len: usize,
        /// Bytes its traces take once written apart.
        fanout: usize,
    },
}

/// How many times its own size a record may take once its traces are written apart (each with
/// the resource and scope it came with): the bound on what the rekey split, the sampled topic
/// and the OTLP exporters write for one input record.
pub const AMPLIFICATION: usize = 16;

/// Span times further than this before their record's arrival do not count (ns): 7 days.
pub const TIME_PAST_NS: u64 = 7 * 86_400 * 1_000_000_000;
/// Span times further than this after their record's arrival do not count (ns): 1 hour.
pub const TIME_FUTURE_NS: u64 = 3_600 * 1_000_000_000;

/// Whether a span's times are usable for latency: a start, an end not before it, and both
/// within [arrival − 7 d, arrival + 1 h] when the arrival (`arrival_ns`, 0 = unknown) is known.
pub fn plausible_times(start_ns: u64, end_ns: u64, arrival_ns: u64) -> bool {
    if start_ns == 0 || end_ns < start_ns {
        return false;
    }
    arrival_ns == 0
        || (start_ns >= arrival_ns.saturating_sub(TIME_PAST_NS)
            && end_ns <= arrival_ns.saturating_add(TIME_FUTURE_NS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Status};

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    fn span(tid: u8, sid: u8, parent: Option<u8>, err: bool) -> Span {
        Span {
            trace_id: vec![tid; 16],
            span_id: vec![sid; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: format!("op{sid}"),
            kind: 2,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 5_000,
            attributes: vec![kv("http.route", "/api/payment")],
            status: err.then(|| Status {
                message: "boom".into(),
                code: status::StatusCode::Error as i32,
            }),
            trace_state: "ot=th:8;rv:abcdef01234567".into(),
            ..Default::default()
        }
    }

    fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", "checkout")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "lib".into(),
                        version: "1.0".into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
                }],
                schema_url: "rs-schema".into(),
            }],
        }
    }

    struct RouteProbe;
    impl SpanProbe for RouteProbe {
        fn wants_attributes(&self) -> bool {
            true
        }
        fn resource_attribute(&self, k: &[u8], v: RawValue<'_>) -> u128 {
            u128::from(k == b"service.name" && v.get() == AnyValueRef::Str("checkout")) << 1
        }
        fn span_attribute(&self, k: &[u8], v: RawValue<'_>) -> u128 {
            u128::from(k == b"http.route" && v.get() == AnyValueRef::Str("/api/payment"))
        }
        fn trace_state(&self, _: &str) -> u128 {
            1 << 2
        }
    }

    #[test]
    fn scan_reads_the_fields_policies_need() {
        let req = request(vec![span(1, 1, None, false), span(1, 2, Some(1), true)]);
        let bytes = Bytes::from(req.encode_to_vec());
        let mut out = Vec::new();
        scan_request_into(&bytes, &RouteProbe, 0, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].trace_id, TraceId([1; 16]));
        assert!(out[0].meta.is_root);
        assert!(!out[1].meta.is_root);
        assert_eq!(out[1].meta.status, StatusCode::Error);
        assert_eq!(out[0].meta.status, StatusCode::Unset);
        assert_eq!(out[0].meta.kind, SpanKind::Server);
        assert_eq!(out[0].meta.start_ns, 1_000);
        assert_eq!(out[0].meta.end_ns, 5_000);
        assert_eq!(out[0].meta.leaf_bits, 0b111);
        assert_eq!(out[0].meta.rv, Some(0xabcdef01234567));
        assert_eq!(
            out[0].meta.th,
            Some(super::threshold::Threshold::from_raw(0x8 << 52))
        );
    }

    #[test]
    fn splice_round_trips_through_prost() {
        let req = request(vec![
            span(1, 1, None, false),
            span(2, 2, None, true),
            span(1, 3, Some(1), false),
        ]);
        let bytes = Bytes::from(req.encode_to_vec());
        let mut out = Vec::new();
        scan_request_into(&bytes, &NoProbe, 0, &mut out).unwrap();
        // Keep trace 1 only.
        let kept: Vec<&SpanRef> = out
            .iter()
            .filter(|s| s.trace_id == TraceId([1; 16]))
            .map(|s| &s.span)
            .collect();
        let encoded = encode_request(kept.iter().copied());
        assert_eq!(encoded.len(), encoded_request_len(kept.iter().copied()));
        let decoded = ExportTraceServiceRequest::decode(encoded.as_slice()).unwrap();
        assert_eq!(decoded.resource_spans.len(), 1);
        let rs = &decoded.resource_spans[0];
        assert_eq!(rs.resource, req.resource_spans[0].resource);
        assert_eq!(rs.schema_url, "rs-schema");
        let ss = &rs.scope_spans[0];
        assert_eq!(ss.scope, req.resource_spans[0].scope_spans[0].scope);
        assert_eq!(
            ss.schema_url,
            req.resource_spans[0].scope_spans[0].schema_url
        );
        let want: Vec<Span> = vec![span(1, 1, None, false), span(1, 3, Some(1), false)];
        assert_eq!(ss.spans, want);
    }

    #[test]
    fn ot_threshold_is_set_kept_or_erased() {
        use super::threshold::Threshold;
        let t1 = Threshold::for_probability(0.01);
        let t50 = Threshold::from_raw(1u64 << 55);
        // Set where absent; other members kept after it.
        assert_eq!(set_ot_threshold("", Some(t50)), "ot=th:8");
        assert_eq!(
            set_ot_threshold("congo=t61rcWkgMzE", Some(t50)),
            "ot=th:8,congo=t61rcWkgMzE"
        );
        // Replaced, with rv and vendor sub-keys kept, moved to the front.
        assert_eq!(
            set_ot_threshold("a=1, ot=rv:abcdef01234567;th:4;x:y", Some(t50)),
            "ot=th:8;rv:abcdef01234567;x:y,a=1"
        );
        // Erased; an ot entry with nothing else left goes away.
        assert_eq!(set_ot_threshold("ot=th:8,a=1", None), "a=1");
        assert_eq!(
            set_ot_threshold("ot=th:8;rv:abcdef01234567", None),
            "ot=rv:abcdef01234567"
        );
        let (_, th) = parse_ot_tracestate(&set_ot_threshold("", Some(t1)));
        assert_eq!(
            th.map(|t| t.raw() >> 8),
            Some(t1.raw() >> 8),
            "round trip at 48 bits or better"
        );
    }

    #[test]
    fn marked_spans_carry_threshold_policy_and_adjusted_count() {
        use super::threshold::Threshold;
        let attr = |s: &Span, k: &str| {
            s.attributes
                .iter()
                .filter(|kv| kv.key == k)
                .map(|kv| kv.value.clone().and_then(|v| v.value))
                .collect::<Vec<_>>()
        };
        let mut base = span(1, 1, None, true);
        base.attributes.push(kv(ATTR_POLICY, "upstream"));
        // (incoming tracestate, stage threshold, expected th, expected adjusted count)
        let t25 = Threshold::from_raw(3u64 << 54); // p = 0.25
        let t50 = Threshold::from_raw(1u64 << 55); // p = 0.5
        let always = Threshold::ALWAYS;
        let table: &[(&str, Threshold, Option<Threshold>)] = &[
            ("", always, Some(always)),
            ("", t50, Some(t50)),
            ("ot=th:c", t50, Some(t25)), // incoming stricter: kept, never lowered
            ("ot=th:4", t50, Some(t50)), // raised to ours
            ("ot=th:8;rv:00000000000001", Threshold::UNKNOWN, None), // erased after a limiter
        ];
        for (ts, stage, want_th) in table {
            let mut s = base.clone();
            s.trace_state = ts.to_string();
            let bytes = s.encode_to_vec();
            let out = mark_span(&bytes, &SamplingMark::new(*stage, "slow")).unwrap();
            let got = Span::decode(out.as_slice()).unwrap();
            let (_, th) = parse_ot_tracestate(&got.trace_state);
            assert_eq!(th, *want_th, "{ts} at {stage:?}: {}", got.trace_state);
            if ts.contains("rv:") {
                assert!(got.trace_state.contains("rv:00000000000001"), "rv kept");
            }
            assert_eq!(
                attr(&got, ATTR_POLICY),
                vec![Some(any_value::Value::StringValue("slow".into()))],
                "one policy attribute, ours"
            );
            let want_count: Vec<_> = want_th
                .map(|t| Some(any_value::Value::DoubleValue(t.adjusted_count())))
                .into_iter()
                .collect();
            assert_eq!(attr(&got, ATTR_ADJUSTED_COUNT), want_count);
            // Everything else is unchanged.
            let mut back = got.clone();
            back.trace_state = s.trace_state.clone();
            back.attributes
                .retain(|kv| kv.key != ATTR_POLICY && kv.key != ATTR_ADJUSTED_COUNT);
            let mut orig = s.clone();
            orig.attributes.retain(|kv| kv.key != ATTR_POLICY);
            assert_eq!(back, orig);
        }
    }

    #[test]
    fn json_input_matches_proto_input() {
        let req = request(vec![span(7, 1, None, true)]);
        let json = serde_json::to_vec(&req).unwrap();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains("07070707070707070707070707070707"), "{text}");
        let proto = json_to_proto(&json).unwrap();
        let decoded = ExportTraceServiceRequest::decode(proto).unwrap();
        assert_eq!(decoded, req);
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        let good = request(vec![span(1, 1, None, false)]).encode_to_vec();
        for cut in 1..good.len() {
            let b = Bytes::copy_from_slice(&good[..cut]);
            let mut out = Vec::new();
            // Any prefix either fails cleanly or (if it ends on a field boundary) yields no span.
            if scan_request_into(&b, &RouteProbe, 0, &mut out).is_ok() {
                assert!(out.is_empty(), "prefix {cut} produced spans");
            }
        }
        let mut out = Vec::new();
        assert!(
            scan_request_into(&Bytes::from_static(b"\xff\xff\xff"), &NoProbe, 0, &mut out).is_err()
        );
        assert!(json_to_proto(b"{not json").is_err());
    }

    #[test]
    fn invalid_ids_are_rejected() {
        let mut s = span(1, 1, None, false);
        s.trace_id = vec![1; 5];
        let b = Bytes::from(request(vec![s]).encode_to_vec());
        let mut out = Vec::new();
        assert_eq!(
            scan_request_into(&b, &NoProbe, 0, &mut out),
            Err(DecodeError::BadTraceId { len: 5 })
        );
        let mut s = span(1, 1, None, false);
        s.span_id = vec![0; 8];
        let b = Bytes::from(request(vec![s]).encode_to_vec());
        assert!(scan_request_into(&b, &NoProbe, 0, &mut out).is_err());
    }

    #[test]
    fn ot_tracestate_parsing() {
        assert_eq!(
            parse_ot_tracestate("ot=th:0"),
            (None, Some(super::threshold::Threshold::ALWAYS))
        );
        assert_eq!(
            parse_ot_tracestate("vendor=x,ot=rv:0123456789abcd;th:fd70a4"),
            (
                Some(0x0123456789abcd),
                Some(super::threshold::Threshold::from_raw(0xfd70a4 << 32))
            )
        );
        assert_eq!(parse_ot_tracestate("ot=rv:short"), (None, None));
    }

    #[test]
    fn varint_len_matches_encoding() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
        }
    }

    #[test]
    fn chunks_respect_the_size_limit() {
        let ctx = Arc::new(ScopeCtx::default());
        let spans: Vec<SpanRef> = (0..10)
            .map(|_| SpanRef {
                ctx: Arc::clone(&ctx),
                bytes: Bytes::from(vec![0u8; 84]),
            })
            .collect();
        let chunks = chunk_spans(&spans, 300);
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 10);
        assert!(
            chunks.iter().all(|c| c.len() == 3 || c.len() == 1),
            "{:?}",
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>()
        );
        for c in &chunks {
            assert!(encoded_request_len(c.iter()) <= 300);
        }
        // One oversized span still goes out, alone.
        let big = vec![SpanRef {
            ctx,
            bytes: Bytes::from(vec![0u8; 1000]),
        }];
        assert_eq!(chunk_spans(&big, 300).len(), 1);
    }

    #[test]
    fn spans_are_charged_their_share_of_the_record() {
        let spans: Vec<Span> = (1..=3u8)
            .map(|i| Span {
                trace_id: vec![i; 16],
                span_id: vec![i; 8],
                name: "x".repeat(usize::from(i) * 10),
                ..Default::default()
            })
            .collect();
        let bytes = Bytes::from(request(spans).encode_to_vec());
        let mut out = Vec::new();
        scan_request_into(&bytes, &NoProbe, 0, &mut out).unwrap();
        let charged: usize = out.iter().map(|s| s.meta.size as usize).sum();
        assert_eq!(
            charged,
            bytes.len(),
            "the spans of a record pay for all of it"
        );
        for s in &out {
            assert!(s.meta.size as usize >= s.span.bytes.len());
        }
    }

    #[test]
    fn a_big_resource_over_many_traces_is_refused_a_shared_one_is_not() {
        let big = Resource {
            attributes: vec![kv("blob", &"r".repeat(100_000))],
            ..Default::default()
        };
        let spans = |traces: u32| -> Vec<Span> {
            (0..40u32)
                .map(|i| Span {
                    trace_id: {
                        let mut t = [7u8; 16];
                        t[..4].copy_from_slice(&(i % traces + 1).to_be_bytes());
                        t.to_vec()
                    },
                    span_id: (u64::from(i) + 1).to_be_bytes().to_vec(),
                    ..Default::default()
                })
                .collect()
        };
        let record = |traces: u32| {
            let mut r = request(spans(traces));
            r.resource_spans[0].resource = Some(big.clone());
            Bytes::from(r.encode_to_vec())
        };
        let mut out = Vec::new();
        // 40 spans of 2 traces: the resource is written twice.
        scan_request_into(&record(2), &NoProbe, 0, &mut out).unwrap();
        // 40 one-span traces: 40 copies of 100 KB from a 100 KB record.
        let e = scan_request_into(&record(40), &NoProbe, 0, &mut out).unwrap_err();
        assert!(matches!(e, DecodeError::Amplification { .. }), "{e}");
        assert!(out.is_empty());
    }

    #[test]
    fn implausible_times_do_not_count() {
        let arrival_ms = 1_760_000_000_000u64;
        let at = arrival_ms * 1_000_000;
        let span = |start: u64, end: u64| Span {
            trace_id: vec![1; 16],
            span_id: vec![1; 8],
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            ..Default::default()
        };
        let times = |s: Span| {
            let bytes = Bytes::from(request(vec![s]).encode_to_vec());
            let mut out = Vec::new();
            scan_request_into(&bytes, &NoProbe, arrival_ms, &mut out).unwrap();
            (out[0].meta.start_ns, out[0].meta.end_ns)
        };
        let ms = 1_000_000;
        assert_eq!(times(span(at - 500 * ms, at)), (at - 500 * ms, at));
        assert_eq!(times(span(0, at)), (0, 0), "zero start");
        assert_eq!(
            times(span(at - 8 * 86_400_000 * ms, at)),
            (0, 0),
            "far past"
        );
        assert_eq!(
            times(span(at, at + 2 * 3_600_000 * ms)),
            (0, 0),
            "far future"
        );
        assert_eq!(times(span(at, at - ms)), (0, 0), "end before start");
    }

    /// Records scanned through a partition's resource cache give exactly what the walk gives
    /// (leaf bits of resource attributes included), and a resource differing from a cached one
    /// is still walked and refused when it is bad.
    #[test]
    fn the_resource_cache_changes_nothing_but_the_work() {
        use crate::gen::{plan_records, GenOptions};
        let cfg = crate::config::Config::parse(
            "policies: [{name: fe, type: string_attribute, string_attribute: {key: service.name, values: [frontend]}}, {name: ns, type: string_attribute, string_attribute: {key: k8s.namespace.name, values: [shop]}}]\n",
        )
        .unwrap();
        let sampler = crate::sample::Sampler::from_config(&cfg).unwrap();
        let probe = sampler.probe();
        let (recs, _) = plan_records(&GenOptions {
            traces: 500,
            ..GenOptions::default()
        });
        let mut cache = ResourceCache::default();
        let (mut plain, mut cached) = (Vec::new(), Vec::new());
        let mut matched = 0;
        for r in &recs {
            let rec = Bytes::from(r.value.clone());
            scan_record(&rec, Encoding::OtlpProto, probe, 7, &mut plain).unwrap();
            scan_record_cached(
                &rec,
                Encoding::OtlpProto,
                probe,
                7,
                Some(&mut cache),
                &mut cached,
            )
            .unwrap();
            assert_eq!(plain.len(), cached.len());
            for (a, b) in plain.iter().zip(&cached) {
                assert_eq!((a.trace_id, &a.span.bytes), (b.trace_id, &b.span.bytes));
                assert_eq!(format!("{:?}", a.meta), format!("{:?}", b.meta));
                matched += usize::from(a.meta.leaf_bits != 0);
            }
        }
        assert!(matched > 0, "the policies match resource attributes");
        assert!(cache.hits() > recs.len() as u64, "{} hits", cache.hits());

        // A resource one byte away from a cached one, with that byte breaking its UTF-8.
        let good = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", "frontend")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![span(1, 1, None, false)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        let at = good.windows(8).position(|w| w == b"frontend").unwrap();
        let mut bad = good.clone();
        bad[at] = 0xff;
        let mut out = Vec::new();
        let good = Bytes::from(good);
        let bad = Bytes::from(bad);
        scan_record_cached(
            &good,
            Encoding::OtlpProto,
            probe,
            7,
            Some(&mut cache),
            &mut out,
        )
        .unwrap();
        assert!(matches!(
            scan_record_cached(
                &bad,
                Encoding::OtlpProto,
                probe,
                7,
                Some(&mut cache),
                &mut out
            ),
            Err(DecodeError::Utf8 { .. })
        ));
    }
}
