//! The strictness check shared by the decoder property test and the fuzz targets (which
//! include this file by path): everything written from an accepted record decodes strictly.
//! Depends on nothing else in `support`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tracesift::archive::{self, KeptSpan};
use tracesift::otlp::{self, SamplingMark, ScannedSpan, SpanRef, TraceId};

/// Everything downstream of an accepted scan, asserted strict.
pub fn check_accepted(record: &Bytes, scanned: &[ScannedSpan]) {
    let whole = ExportTraceServiceRequest::decode(record.as_ref());
    assert!(
        whole.is_ok(),
        "scanner accepted what prost rejects: {whole:?}"
    );
    let mut by_trace: HashMap<TraceId, Vec<SpanRef>> = HashMap::new();
    let mark = SamplingMark::new(
        tracesift::otlp::threshold::Threshold::from_raw(1 << 55),
        "p",
    );
    for s in scanned {
        otlp::decode_span(&s.span).unwrap();
        otlp::decode_resource(&s.span.ctx).unwrap();
        otlp::decode_scope(&s.span.ctx).unwrap();
        let marked = otlp::mark_span(&s.span.bytes, &mark).unwrap();
        Span::decode(marked.as_slice()).unwrap();
        by_trace.entry(s.trace_id).or_default().push(s.span.clone());
    }
    let mut written = 0usize;
    for spans in by_trace.values() {
        let out = otlp::encode_request(spans.iter());
        written += out.len();
        let req = ExportTraceServiceRequest::decode(out.as_slice()).unwrap();
        let n: usize = req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        assert_eq!(n, spans.len());
        for chunk in otlp::chunk_spans(spans, 1024) {
            let out = otlp::encode_request(chunk.iter());
            ExportTraceServiceRequest::decode(out.as_slice()).unwrap();
        }
    }
    assert!(
        written <= (record.len() * otlp::AMPLIFICATION).max(64 << 10),
        "{written} bytes written for a record of {}",
        record.len()
    );
    let kept: Vec<KeptSpan> = scanned
        .iter()
        .map(|s| KeptSpan {
            trace_id: s.trace_id,
            span: s.span.clone(),
            policy: Arc::from("p"),
            threshold: tracesift::otlp::threshold::Threshold::ALWAYS,
        })
        .collect();
    archive::encode_segment(&kept, 1000).unwrap();
}
