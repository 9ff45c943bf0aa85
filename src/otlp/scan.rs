//! The lazy span index: one pass over an `ExportTraceServiceRequest` that checks it strictly and
//! yields, per span, what the sampler reads ([`SpanMeta`]) and the span's original bytes
//! ([`SpanRef`]) with the resource and scope it came with ([`ScopeCtx`]).

#[allow(unused_imports)]
use super::*;

/// The resource and scope a span was sent with, as encoded fields of the original record.
///
/// One is shared (by `Arc`) by every span of a `ScopeSpans`, so the per-span cost is a pointer.
#[derive(Debug, Default, Clone)]
pub struct ScopeCtx {
    /// `ResourceSpans.resource` field (tag, length and body), or empty.
    pub resource_field: Bytes,
    /// `ResourceSpans.schema_url` field (tag, length and body), or empty.
    pub resource_schema_field: Bytes,
    /// `ScopeSpans.scope` field (tag, length and body), or empty.
    pub scope_field: Bytes,
    /// `ScopeSpans.schema_url` field (tag, length and body), or empty.
    pub scope_schema_field: Bytes,
    /// The Kafka timestamp of the record it arrived in, Unix ms (0 when unknown): span times are
    /// judged against it.
    pub arrival_ms: u64,
    /// The arrival the spans are filed by in the archive when it is not `arrival_ms` (the
    /// record's timestamp was implausible when it was read: the wall clock then).
    pub filed_at_ms: Option<u64>,
}

impl ScopeCtx {
    /// The four fields that make the context (resource and scope, each with its schema URL),
    /// as sent: two contexts with equal fields are the same context.
    pub fn fields(&self) -> [&[u8]; 4] {
        [
            &self.resource_field,
            &self.resource_schema_field,
            &self.scope_field,
            &self.scope_schema_field,
        ]
    }

    /// A hash of [`ScopeCtx::fields`] for tables that find contexts by content ([`key_hash`]:
    /// never stored or compared across processes).
    pub fn content_hash(&self) -> u64 {
        self.content_hash_with(key_hash(&self.resource_field))
    }

    /// [`ScopeCtx::content_hash`] given the hash of `resource_field` (a table that meets the
    /// same resource under several scopes hashes it once).
    pub fn content_hash_with(&self, resource_hash: u64) -> u64 {
        self.fields()[1..]
            .iter()
            .fold(resource_hash, |h, f| h.rotate_left(17) ^ key_hash(f))
    }

    /// The arrival time the archive files these spans by (Unix ms, 0 when unknown).
    pub fn filing_ms(&self) -> u64 {
        self.filed_at_ms.unwrap_or(self.arrival_ms)
    }

    /// Bytes this context adds to each request it is written into (resource, scope, schema
    /// URLs and the two message headers).
    pub fn framing_len(&self) -> usize {
        self.resource_field.len()
            + self.resource_schema_field.len()
            + self.scope_field.len()
            + self.scope_schema_field.len()
            + 12
    }
}

/// A buffered span: its encoded `Span` message (body only) and the context it came with.
#[derive(Debug, Clone)]
pub struct SpanRef {
    /// Resource and scope, shared with the span's siblings.
    pub ctx: Arc<ScopeCtx>,
    /// The `Span` message body, a slice of the original record.
    pub bytes: Bytes,
}

/// What the sampler reads of one span. Built during the scan, folded into a trace summary, dropped.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpanMeta {
    /// Span id.
    pub span_id: SpanId,
    /// True when the span has no parent (a root).
    pub is_root: bool,
    /// Start, Unix nanoseconds.
    pub start_ns: u64,
    /// End, Unix nanoseconds.
    pub end_ns: u64,
    /// Status code.
    pub status: StatusCode,
    /// Span kind.
    pub kind: SpanKind,
    /// W3C trace flags (the low byte of `Span.flags`); 0 when absent.
    pub flags: u32,
    /// OTEP 235 randomness (`ot=rv:`) from the span's tracestate, if any.
    pub rv: Option<u64>,
    /// OTEP 235 threshold (`ot=th:`) from the span's tracestate, if any.
    pub th: Option<super::threshold::Threshold>,
    /// Policy leaves matched by this span's (or its resource's) attributes or tracestate.
    pub leaf_bits: u128,
    /// Encoded size of the span in bytes.
    pub size: u32,
    /// Where the span's `name` is in its bytes: offset and length (0, 0 when absent).
    pub name_at: (u32, u32),
}

/// An attribute value as found on the wire, parsed only as far as a probe asks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AnyValueRef<'a> {
    /// string_value.
    Str(&'a str),
    /// bool_value.
    Bool(bool),
    /// int_value.
    Int(i64),
    /// double_value.
    Double(f64),
    /// array, kvlist, bytes or empty.
    Other,
}

/// An attribute value not parsed yet: probes parse it only when the key is one they look at.
#[derive(Debug, Clone, Copy)]
pub struct RawValue<'a> {
    pub(super) buf: &'a [u8],
    pub(super) start: usize,
    pub(super) end: usize,
}

impl<'a> RawValue<'a> {
    /// Parses the value (a value that does not parse reads as `Other`).
    pub fn get(&self) -> AnyValueRef<'a> {
        any_value(self.buf, self.start..self.end).unwrap_or(AnyValueRef::Other)
    }

    /// The value whose `AnyValue` body is `buf[r]`.
    pub(super) fn at(buf: &'a [u8], r: Range<usize>) -> RawValue<'a> {
        RawValue {
            buf,
            start: r.start,
            end: r.end,
        }
    }

    /// A value from an already-parsed scalar (for tests and tools).
    pub fn encode(v: AnyValueRef<'_>, scratch: &'a mut Vec<u8>) -> RawValue<'a> {
        scratch.clear();
        match v {
            AnyValueRef::Str(s) => {
                put_len_header(scratch, 1, s.len());
                scratch.extend_from_slice(s.as_bytes());
            }
            AnyValueRef::Bool(b) => {
                put_varint(scratch, 2 << 3);
                put_varint(scratch, u64::from(b));
            }
            AnyValueRef::Int(i) => {
                put_varint(scratch, 3 << 3);
                put_varint(scratch, i as u64);
            }
            AnyValueRef::Double(d) => {
                put_varint(scratch, (4 << 3) | u64::from(WT_I64));
                scratch.extend_from_slice(&d.to_bits().to_le_bytes());
            }
            AnyValueRef::Other => {}
        }
        RawValue {
            buf: scratch,
            start: 0,
            end: scratch.len(),
        }
    }
}

/// The sampler's hook into the scan: which attributes matter, and which policy leaves they match.
pub trait SpanProbe {
    /// False when no policy looks at attributes or tracestate, so the scan can skip them.
    fn wants_attributes(&self) -> bool;
    /// Leaves matched by one resource attribute.
    fn resource_attribute(&self, key: &[u8], value: RawValue<'_>) -> u128;
    /// Leaves matched by one span attribute.
    fn span_attribute(&self, key: &[u8], value: RawValue<'_>) -> u128;
    /// Leaves matched by a span's tracestate.
    fn trace_state(&self, trace_state: &str) -> u128;
    /// True when the probe judges whole spans ([`SpanProbe::span`]).
    fn wants_spans(&self) -> bool {
        false
    }
    /// Leaves matched by a whole span, read with its resource and scope (called once per span,
    /// after the span passed the strict checks).
    fn span(&self, _span: &SpanInput<'_>) -> u128 {
        0
    }
}

/// A span as a whole-span probe reads it: the message bodies of the span, its resource and its
/// instrumentation scope (each empty when absent), slices of the record.
#[derive(Debug, Clone, Copy)]
pub struct SpanInput<'a> {
    /// The `Span` body.
    pub span: &'a [u8],
    /// The `Resource` body.
    pub resource: &'a [u8],
    /// The `InstrumentationScope` body.
    pub scope: &'a [u8],
    /// `ResourceSpans.schema_url` as an encoded field (tag, length, body), or empty.
    pub resource_schema_field: &'a [u8],
    /// `ScopeSpans.schema_url` as an encoded field, or empty.
    pub scope_schema_field: &'a [u8],
    /// What the scan already read of the span (absent when the span is read again later).
    pub known: Option<Known>,
}

/// Fields of a span the scan has read on its way, as sent, so a probe need not read them again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Known {
    /// `kind` as sent.
    pub kind: i32,
    /// `status.code` as sent (0 when absent).
    pub status_code: i32,
    /// No parent (empty or all-zero `parent_span_id`).
    pub is_root: bool,
}

/// A probe that matches nothing (for tools that only need ids and bytes).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProbe;

impl SpanProbe for NoProbe {
    fn wants_attributes(&self) -> bool {
        false
    }
    fn resource_attribute(&self, _: &[u8], _: RawValue<'_>) -> u128 {
        0
    }
    fn span_attribute(&self, _: &[u8], _: RawValue<'_>) -> u128 {
        0
    }
    fn trace_state(&self, _: &str) -> u128 {
        0
    }
}

/// Checks a `Resource` body at `depth` (strictly, as every accepted resource is) and, when
/// `wants_attrs`, returns the leaves its attributes match: one walk for both.
pub(super) fn resource_bits(
    buf: &[u8],
    r: Range<usize>,
    probe: &impl SpanProbe,
    wants_attrs: bool,
    depth: u32,
) -> Result<u128, DecodeError> {
    let mut rd = Reader::new(buf, r);
    let mut bits = 0u128;
    while let Some((n, _, w)) = rd.field()? {
        if let (1, Wire::Len(kv)) = (n, &w) {
            let (k, v) = strict::key_value(buf, kv.clone(), depth + 1)?;
            if wants_attrs {
                bits |= probe.resource_attribute(&buf[k], RawValue::at(buf, v));
            }
            continue;
        }
        strict::check_field(buf, strict::Msg::Resource, n, &w, depth)?;
    }
    Ok(bits)
}

/// Scans one `Span` body into its meta, checking it strictly; returns the trace id too.
/// `arrival_ns` (0 = unknown) is when its record arrived: times not plausible against it are
/// left out of the meta (both 0), so they cannot make a trace slow.
pub(super) fn scan_span(
    buf: &[u8],
    r: Range<usize>,
    probe: &impl SpanProbe,
    wants_attrs: bool,
    arrival_ns: u64,
) -> Result<(TraceId, SpanMeta, Known), DecodeError> {
    let mut rd = Reader::new(buf, r.clone());
    let mut meta = SpanMeta {
        is_root: true,
        size: u32::try_from(r.len()).unwrap_or(u32::MAX),
        ..SpanMeta::default()
    };
    let mut trace_id: Option<TraceId> = None;
    let mut have_span_id = false;
    let mut known = Known {
        is_root: true,
        ..Known::default()
    };
    while let Some((n, _, w)) = rd.field()? {
        if let (9, Wire::Len(kv)) = (n, &w) {
            // Attributes: checked and read in one walk.
            let (k, v) = strict::key_value(buf, kv.clone(), SPAN_DEPTH + 1)?;
            if wants_attrs {
                meta.leaf_bits |= probe.span_attribute(&buf[k], RawValue::at(buf, v));
            }
            continue;
        }
        strict::check_field(buf, strict::Msg::Span, n, &w, SPAN_DEPTH)?;
        match (n, w) {
            (1, Wire::Len(s)) => {
                let b = &buf[s];
                let id: [u8; 16] = b
                    .try_into()
                    .map_err(|_| DecodeError::BadTraceId { len: b.len() })?;
                if id == [0; 16] {
                    return Err(DecodeError::BadTraceId { len: 16 });
                }
                trace_id = Some(TraceId(id));
            }
            (2, Wire::Len(s)) => {
                let b = &buf[s];
                let id: [u8; 8] = b
                    .try_into()
                    .map_err(|_| DecodeError::BadSpanId { len: b.len() })?;
                if id == [0; 8] {
                    return Err(DecodeError::BadSpanId { len: 8 });
                }
                meta.span_id = SpanId(id);
                have_span_id = true;
            }
            (3, Wire::Len(s)) if !s.is_empty() => {
                let ts = utf8(buf, s, "Span.trace_state")?;
                let (rv, th) = parse_ot_tracestate(ts);
                meta.rv = rv;
                meta.th = th;
                if wants_attrs {
                    meta.leaf_bits |= probe.trace_state(ts);
                }
            }
            (4, Wire::Len(s)) => {
                if !s.is_empty() && s.len() != 8 {
                    return Err(DecodeError::BadSpanId { len: s.len() });
                }
                meta.is_root = s.is_empty() || buf[s] == [0; 8];
                known.is_root = meta.is_root;
            }
            (5, Wire::Len(s)) => {
                meta.name_at = (
                    u32::try_from(s.start - r.start).unwrap_or(0),
                    u32::try_from(s.len()).unwrap_or(0),
                );
            }
            (6, Wire::Varint(v)) => {
                known.kind = v as i32;
                meta.kind = SpanKind::from_i32(v as i32);
            }
            (7, Wire::I64(v)) => meta.start_ns = v,
            (8, Wire::I64(v)) => meta.end_ns = v,
            (15, Wire::Len(st)) => {
                let mut srd = Reader::new(buf, st);
                while let Some((sn, _, sw)) = srd.field()? {
                    if let (3, Wire::Varint(c)) = (sn, sw) {
                        known.status_code = c as i32;
                        meta.status = StatusCode::from_i32(c as i32);
                    }
                }
            }
            (16, Wire::I32(f)) => meta.flags = f,
            _ => {}
        }
    }
    let trace_id = trace_id.ok_or(DecodeError::BadTraceId { len: 0 })?;
    if !have_span_id {
        return Err(DecodeError::BadSpanId { len: 0 });
    }
    if !plausible_times(meta.start_ns, meta.end_ns, arrival_ns) {
        meta.start_ns = 0;
        meta.end_ns = 0;
    }
    Ok((trace_id, meta, known))
}

/// The fields of a `ResourceSpans` or `ScopeSpans` besides its list, as whole encoded fields:
/// the context message at field 1 (resource or scope; the caller checks it) and the schema URL
/// at field 3.
pub(super) struct Envelope {
    pub(super) ctx_field: Range<usize>,
    pub(super) ctx_body: Range<usize>,
    pub(super) schema_field: Range<usize>,
}

/// Reads the envelope of a `ResourceSpans` / `ScopeSpans` body: the schema URL must be UTF-8,
/// the three fields length-delimited.
pub(super) fn envelope(
    buf: &[u8],
    r: Range<usize>,
    message: &'static str,
    schema_url: &'static str,
) -> Result<Envelope, DecodeError> {
    let mut env = Envelope {
        ctx_field: 0..0,
        ctx_body: 0..0,
        schema_field: 0..0,
    };
    let mut rd = Reader::new(buf, r);
    while let Some((n, tag_start, w)) = rd.field()? {
        match (n, w) {
            (1, Wire::Len(body)) => {
                env.ctx_field = tag_start..body.end;
                env.ctx_body = body;
            }
            (2, Wire::Len(_)) => {}
            (3, Wire::Len(body)) => {
                utf8(buf, body.clone(), schema_url)?;
                env.schema_field = tag_start..body.end;
            }
            (1..=3, _) => {
                return Err(DecodeError::WireType {
                    message,
                    field: n,
                    expected: WT_LEN,
                })
            }
            _ => {}
        }
    }
    Ok(env)
}

/// Depth of a `Span` below the request (request, `ResourceSpans`, `ScopeSpans`, `Span`).
pub(super) const SPAN_DEPTH: u32 = 3;

/// Walks a whole `ExportTraceServiceRequest` and calls `sink(trace_id, meta, span)` per span.
/// `arrival_ms` is the record's Kafka timestamp (0 when unknown).
///
/// The record is validated as it goes, strictly (see [`strict`]); on the first error nothing
/// more is reported and the caller should treat the whole record as malformed (spans already
/// passed to `sink` must be discarded — [`scan_request_into`] does that bookkeeping).
pub fn scan_request(
    record: &Bytes,
    probe: &impl SpanProbe,
    arrival_ms: u64,
    sink: impl FnMut(TraceId, SpanMeta, SpanRef),
) -> Result<(), DecodeError> {
    scan_request_with(record, probe, arrival_ms, None, sink)
}

/// Resources already checked (and probed) by one probe: a service sends the same resource in
/// every record, and its attributes are a third of what the strict walk reads. Keyed by the
/// resource's bytes (hashed eight at a time, compared whole on a hit), so only a resource
/// identical to one that passed is let through unwalked. Bounded by [`ResourceCache::MAX_BYTES`]
/// and [`ResourceCache::MAX_ENTRIES`] (then emptied); emptied by its owner when the probe
/// changes (a policy reload).
#[derive(Debug, Default)]
pub struct ResourceCache {
    by_hash: std::collections::HashMap<
        u64,
        (Box<[u8]>, u128),
        std::hash::BuildHasherDefault<super::PassHasher>,
    >,
    bytes: usize,
    hits: u64,
}

impl ResourceCache {
    /// Resource bytes held at most (then the cache starts over).
    pub const MAX_BYTES: usize = 1 << 20;
    /// Resources held at most (then the cache starts over).
    pub const MAX_ENTRIES: usize = 4096;
    /// What the cache holds at most, its table included (a term of the memory bound).
    pub const BOUND_BYTES: u64 = (Self::MAX_BYTES + Self::MAX_ENTRIES * 128) as u64;

    /// Resource bytes held now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Forgets everything (the probe changed).
    pub fn clear(&mut self) {
        self.by_hash.clear();
        self.bytes = 0;
    }

    /// Resources answered without a walk so far.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    fn bits(
        &mut self,
        body: &[u8],
        walk: impl FnOnce() -> Result<u128, DecodeError>,
    ) -> Result<u128, DecodeError> {
        let hash = super::key_hash(body);
        if let Some((bytes, bits)) = self.by_hash.get(&hash) {
            if **bytes == *body {
                self.hits += 1;
                return Ok(*bits);
            }
        }
        let bits = walk()?;
        if body.len() <= Self::MAX_BYTES / 16 {
            if self.bytes + body.len() > Self::MAX_BYTES || self.by_hash.len() >= Self::MAX_ENTRIES
            {
                self.clear();
            }
            self.bytes += body.len();
            if let Some((old, _)) = self.by_hash.insert(hash, (body.into(), bits)) {
                self.bytes -= old.len();
            }
        }
        Ok(bits)
    }
}

/// [`scan_request`] remembering checked resources in `cache` (the partition's, for its probe).
fn scan_request_with(
    record: &Bytes,
    probe: &impl SpanProbe,
    arrival_ms: u64,
    mut cache: Option<&mut ResourceCache>,
    mut sink: impl FnMut(TraceId, SpanMeta, SpanRef),
) -> Result<(), DecodeError> {
    let buf: &[u8] = record;
    let wants_attrs = probe.wants_attributes();
    let wants_spans = probe.wants_spans();
    let arrival_ns = arrival_ms.saturating_mul(1_000_000);
    let mut top = Reader::new(buf, 0..buf.len());
    while let Some((n, _, w)) = top.field()? {
        let rs = match (n, w) {
            (1, Wire::Len(rs)) => rs,
            (1, _) => {
                return Err(DecodeError::WireType {
                    message: "ExportTraceServiceRequest",
                    field: 1,
                    expected: WT_LEN,
                })
            }
            _ => continue,
        };
        // First pass over ResourceSpans: its resource and schema_url.
        let rs_env = envelope(buf, rs.clone(), "ResourceSpans", "ResourceSpans.schema_url")?;
        let (resource_field, resource_body, schema_field) =
            (rs_env.ctx_field, rs_env.ctx_body, rs_env.schema_field);
        let walk = || resource_bits(buf, resource_body.clone(), probe, wants_attrs, 2);
        let res_bits = match cache.as_deref_mut() {
            Some(c) => c.bits(&buf[resource_body.clone()], walk)?,
            None => walk()?,
        };
        // Second pass: each ScopeSpans.
        let mut rd = Reader::new(buf, rs);
        while let Some((fnum, _, fw)) = rd.field()? {
            let (2, Wire::Len(ss)) = (fnum, fw) else {
                continue;
            };
            let ss_env = envelope(buf, ss.clone(), "ScopeSpans", "ScopeSpans.schema_url")?;
            strict::check_message(buf, ss_env.ctx_body.clone(), strict::Msg::Scope, 3)?;
            let (scope_field, scope_schema) = (ss_env.ctx_field, ss_env.schema_field);
            let scope_body = ss_env.ctx_body;
            let ctx = Arc::new(ScopeCtx {
                resource_field: record.slice(resource_field.clone()),
                resource_schema_field: record.slice(schema_field.clone()),
                scope_field: record.slice(scope_field),
                scope_schema_field: record.slice(scope_schema.clone()),
                arrival_ms,
                filed_at_ms: None,
            });
            let mut srd = Reader::new(buf, ss);
            while let Some((sn, _, sw)) = srd.field()? {
                let (2, Wire::Len(sp)) = (sn, sw) else {
                    continue;
                };
                let (trace_id, mut meta, known) =
                    scan_span(buf, sp.clone(), probe, wants_attrs, arrival_ns)?;
                meta.leaf_bits |= res_bits;
                if wants_spans {
                    meta.leaf_bits |= probe.span(&SpanInput {
                        span: &buf[sp.clone()],
                        resource: &buf[resource_body.clone()],
                        scope: &buf[scope_body.clone()],
                        resource_schema_field: &buf[schema_field.clone()],
                        scope_schema_field: &buf[scope_schema.clone()],
                        known: Some(known),
                    });
                }
                sink(
                    trace_id,
                    meta,
                    SpanRef {
                        ctx: Arc::clone(&ctx),
                        bytes: record.slice(sp),
                    },
                );
            }
        }
    }
    Ok(())
}

/// One scanned span, owned.
#[derive(Debug, Clone)]
pub struct ScannedSpan {
    /// Trace id.
    pub trace_id: TraceId,
    /// What the sampler reads.
    pub meta: SpanMeta,
    /// The bytes to re-emit.
    pub span: SpanRef,
}

/// [`scan_request`] into a reusable vector; on error the vector is left empty.
///
/// Beyond the scan, a record is refused when it holds no span, or when writing its traces
/// apart would take more than [`AMPLIFICATION`] times its size. Each span's `meta.size` is
/// what it keeps alive: its own bytes plus its share of the rest of the record (so the spans
/// of a record are charged the record's size together).
pub fn scan_request_into(
    record: &Bytes,
    probe: &impl SpanProbe,
    arrival_ms: u64,
    out: &mut Vec<ScannedSpan>,
) -> Result<(), DecodeError> {
    scan_into(record, probe, arrival_ms, None, out)
}

fn scan_into(
    record: &Bytes,
    probe: &impl SpanProbe,
    arrival_ms: u64,
    cache: Option<&mut ResourceCache>,
    out: &mut Vec<ScannedSpan>,
) -> Result<(), DecodeError> {
    out.clear();
    let r = scan_request_with(record, probe, arrival_ms, cache, |trace_id, meta, span| {
        out.push(ScannedSpan {
            trace_id,
            meta,
            span,
        })
    })
    .and_then(|()| admit(record.len(), out));
    if r.is_err() {
        out.clear();
    }
    r
}

/// Bytes the spans take written apart, counting a context wherever `opens` says a (trace,
/// context) pair opens a group; and the span bodies' bytes.
pub(super) fn fanout(
    spans: &[ScannedSpan],
    mut opens: impl FnMut((TraceId, *const ScopeCtx)) -> bool,
) -> (usize, usize) {
    let (mut out, mut bodies) = (0, 0);
    for s in spans {
        bodies += s.span.bytes.len();
        out += len_field_size(s.span.bytes.len());
        if opens((s.trace_id, Arc::as_ptr(&s.span.ctx))) {
            out += s.span.ctx.framing_len();
        }
    }
    (out, bodies)
}

/// The record-level rules of [`scan_request_into`] over its scanned spans.
pub(super) fn admit(len: usize, spans: &mut [ScannedSpan]) -> Result<(), DecodeError> {
    if spans.is_empty() {
        return Err(DecodeError::NoSpans);
    }
    let limit = len.saturating_mul(AMPLIFICATION).max(64 << 10);
    // What writing each trace apart costs: its spans, plus each context once per trace (a
    // trace's spans of one context are adjacent in its output). Counting a context at every
    // change of (trace, context) along the record bounds that from above; the exact count is
    // taken only when the bound is over the limit.
    let mut prev = None;
    let (bound, bodies) = fanout(spans, |key| prev.replace(key) != Some(key));
    if bound > limit {
        let mut seen = std::collections::HashSet::new();
        let (exact, _) = fanout(spans, |key| seen.insert(key));
        if exact > limit {
            return Err(DecodeError::Amplification { len, fanout: exact });
        }
    }
    let n = spans.len();
    let rest = len.saturating_sub(bodies);
    for (i, s) in spans.iter_mut().enumerate() {
        // The remainder goes to the first spans, so the shares add up to the record exactly.
        let share = rest / n + usize::from(i < rest % n);
        s.meta.size = u32::try_from(s.span.bytes.len() + share).unwrap_or(u32::MAX);
    }
    Ok(())
}

/// Scans one input record in its encoding (OTLP/JSON is converted to protobuf first) into
/// `out`; the one entry point for the sampler, the rekey stage and dry runs. `arrival_ms` is
/// the record's Kafka timestamp (0 when unknown).
pub fn scan_record(
    payload: &Bytes,
    encoding: Encoding,
    probe: &impl SpanProbe,
    arrival_ms: u64,
    out: &mut Vec<ScannedSpan>,
) -> Result<(), DecodeError> {
    scan_record_cached(payload, encoding, probe, arrival_ms, None, out)
}

/// [`scan_record`] with the caller's [`ResourceCache`] for `probe` (the sampler's partitions
/// keep one each).
pub fn scan_record_cached(
    payload: &Bytes,
    encoding: Encoding,
    probe: &impl SpanProbe,
    arrival_ms: u64,
    cache: Option<&mut ResourceCache>,
    out: &mut Vec<ScannedSpan>,
) -> Result<(), DecodeError> {
    out.clear();
    if payload.is_empty() {
        return Err(DecodeError::NoSpans);
    }
    match encoding {
        Encoding::OtlpProto => scan_into(payload, probe, arrival_ms, cache, out),
        Encoding::OtlpJson => scan_into(&json_to_proto(payload)?, probe, arrival_ms, cache, out),
    }
}

/// The body of an encoded message field (a `ScopeCtx` field), empty when absent.
pub fn field_body_of(field: &Bytes) -> Bytes {
    field_body(field).unwrap_or_default()
}

/// Calls `f` with a buffered span as a whole-span probe reads it.
pub fn with_span_input<R>(span: &SpanRef, f: impl FnOnce(&SpanInput<'_>) -> R) -> R {
    let resource = field_body(&span.ctx.resource_field).unwrap_or_default();
    let scope = field_body(&span.ctx.scope_field).unwrap_or_default();
    f(&SpanInput {
        span: &span.bytes,
        resource: &resource,
        scope: &scope,
        resource_schema_field: &span.ctx.resource_schema_field,
        scope_schema_field: &span.ctx.scope_schema_field,
        known: None,
    })
}

/// Scans one buffered span again with another probe (after a policy reload): its meta with the
/// new probe's leaf bits, its resource's attributes included.
pub fn rescan_span(span: &SpanRef, probe: &impl SpanProbe) -> Result<SpanMeta, DecodeError> {
    let wants_attrs = probe.wants_attributes();
    let arrival_ns = span.ctx.arrival_ms.saturating_mul(1_000_000);
    let (_, mut meta, _) = scan_span(
        &span.bytes,
        0..span.bytes.len(),
        probe,
        wants_attrs,
        arrival_ns,
    )?;
    let resource = field_body(&span.ctx.resource_field).unwrap_or_default();
    if wants_attrs {
        meta.leaf_bits |= resource_bits(&resource, 0..resource.len(), probe, true, 2)?;
    }
    if probe.wants_spans() {
        meta.leaf_bits |= with_span_input(span, |input| probe.span(input));
    }
    Ok(meta)
}
