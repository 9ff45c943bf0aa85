//! The writers on accepted records: the first byte picks a chunk size for the request chunker,
//! the rest is the record; every chunk, marked span and Parquet segment must decode strictly.
#![no_main]

#[path = "../../tests/support/strict.rs"]
mod strict;

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tracesift::otlp::{self, Encoding, NoProbe};

fuzz_target!(|data: &[u8]| {
    let Some((&limit, rest)) = data.split_first() else {
        return;
    };
    let record = bytes::Bytes::copy_from_slice(rest);
    let mut out = Vec::new();
    if otlp::scan_record(&record, Encoding::OtlpProto, &NoProbe, 0, &mut out).is_err() {
        return;
    }
    strict::check_accepted(&record, &out);
    let spans: Vec<otlp::SpanRef> = out.iter().map(|s| s.span.clone()).collect();
    let chunks = otlp::chunk_spans(&spans, 64 + usize::from(limit) * 16);
    assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), spans.len());
    for c in chunks {
        let bytes = otlp::encode_request(c.iter());
        ExportTraceServiceRequest::decode(bytes.as_slice()).expect("chunk decodes");
    }
});
