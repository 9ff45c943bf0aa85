//! Writing kept spans out again by splicing their original bytes into new requests, and the
//! entry points that fully decode a span (only kept spans bound for Parquet) or convert OTLP/JSON.

#[allow(unused_imports)]
use super::*;

/// Encoded size of [`encode_request`] for these spans.
pub fn encoded_request_len<'a>(spans: impl IntoIterator<Item = &'a SpanRef>) -> usize {
    let mut total = 0;
    for_each_group(spans, |ctx, group| {
        total += len_field_size(resource_spans_len(ctx, group));
    });
    total
}

/// Splits spans into runs whose encoded request stays under `max_bytes` (a single larger span
/// still goes alone). A context (resource and scope) is counted once per run of spans that
/// share it, as [`otlp::encode_request`] writes it, so the output stays within the input's size
/// plus one context per chunk.
pub fn chunk_spans(spans: &[SpanRef], max_bytes: usize) -> Vec<&[SpanRef]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = 0;
    // A span costs its field; the first span of a chunk, and one whose context differs from
    // the previous span's, also opens a group.
    let cost = |s: &SpanRef, opens_group: bool| {
        s.bytes.len() + 6 + if opens_group { s.ctx.framing_len() } else { 0 }
    };
    for (i, s) in spans.iter().enumerate() {
        let opens_group = i == start || !Arc::ptr_eq(&spans[i - 1].ctx, &s.ctx);
        if i > start && size + cost(s, opens_group) > max_bytes {
            out.push(&spans[start..i]);
            start = i;
            size = 0;
        }
        size += cost(s, i == start || opens_group);
    }
    if start < spans.len() {
        out.push(&spans[start..]);
    }
    out
}

/// Splices spans into one `ExportTraceServiceRequest`. Consecutive spans with the same context
/// share one `ResourceSpans`/`ScopeSpans`; the output decodes to exactly those spans.
pub fn encode_request<'a>(spans: impl IntoIterator<Item = &'a SpanRef> + Clone) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_request_len(spans.clone()));
    for_each_group(spans, |ctx, group| {
        let rs_len = resource_spans_len(ctx, group);
        put_len_header(&mut out, 1, rs_len);
        out.extend_from_slice(&ctx.resource_field);
        let ss_len = scope_spans_len(ctx, group);
        put_len_header(&mut out, 2, ss_len);
        out.extend_from_slice(&ctx.scope_field);
        for s in group {
            put_len_header(&mut out, 2, s.bytes.len());
            out.extend_from_slice(&s.bytes);
        }
        out.extend_from_slice(&ctx.scope_schema_field);
        out.extend_from_slice(&ctx.resource_schema_field);
    });
    out
}

pub(super) fn scope_spans_len(ctx: &ScopeCtx, group: &[&SpanRef]) -> usize {
    ctx.scope_field.len()
        + ctx.scope_schema_field.len()
        + group
            .iter()
            .map(|s| len_field_size(s.bytes.len()))
            .sum::<usize>()
}

pub(super) fn resource_spans_len(ctx: &ScopeCtx, group: &[&SpanRef]) -> usize {
    ctx.resource_field.len()
        + ctx.resource_schema_field.len()
        + len_field_size(scope_spans_len(ctx, group))
}

pub(super) fn for_each_group<'a>(
    spans: impl IntoIterator<Item = &'a SpanRef>,
    mut f: impl FnMut(&ScopeCtx, &[&SpanRef]),
) {
    let mut group: Vec<&SpanRef> = Vec::new();
    for s in spans {
        if let Some(first) = group.first() {
            if !Arc::ptr_eq(&first.ctx, &s.ctx) {
                f(&first.ctx, &group);
                group.clear();
            }
        }
        group.push(s);
    }
    if let Some(first) = group.first() {
        f(&first.ctx, &group);
    }
}

/// Converts an OTLP/JSON `ExportTraceServiceRequest` into its protobuf encoding.
///
/// Spans are converted one at a time as the JSON is read, so what this holds beyond the input is
/// the protobuf output (about the size of the input or less) and one span: never the whole
/// request as objects. Payloads of other signals (`resourceLogs`, `resourceMetrics`,
/// `resourceProfiles`) are named as such.
pub fn json_to_proto(json: &[u8]) -> Result<Bytes, DecodeError> {
    let req: json::Request =
        serde_json::from_slice(json).map_err(|e| DecodeError::Json(e.to_string()))?;
    if req.resource_spans.is_empty() {
        if let Some(signal) = req.other_signal() {
            return Err(DecodeError::OtherSignal(signal));
        }
    }
    Ok(Bytes::from(req.encode()))
}

/// Fully decodes a buffered span (only kept spans bound for Parquet take this path).
pub fn decode_span(span: &SpanRef) -> Result<Span, prost::DecodeError> {
    Span::decode(span.bytes.clone())
}

/// Decodes the resource of a context (empty resource when absent).
pub fn decode_resource(ctx: &ScopeCtx) -> Result<Resource, prost::DecodeError> {
    field_body(&ctx.resource_field)
        .map(Resource::decode)
        .unwrap_or_else(|| Ok(Resource::default()))
}

/// Decodes the instrumentation scope of a context (empty scope when absent).
pub fn decode_scope(ctx: &ScopeCtx) -> Result<InstrumentationScope, prost::DecodeError> {
    field_body(&ctx.scope_field)
        .map(InstrumentationScope::decode)
        .unwrap_or_else(|| Ok(InstrumentationScope::default()))
}
