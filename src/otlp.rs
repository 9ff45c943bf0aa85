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

pub mod fields;
mod json;
pub mod strict;
pub mod threshold;

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde::{Deserialize, Serialize};

/// Input record encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// OTLP protobuf (`ExportTraceServiceRequest`), the Collector kafkaexporter's default.
    #[default]
    OtlpProto,
    /// OTLP/JSON with hex-encoded ids.
    OtlpJson,
}

/// Renders an attribute value as an OTLP/JSON scalar: strings as-is, others as JSON.
pub fn render_value(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => serde_json::Number::from_f64(*d)
            .map(|n| n.to_string())
            .unwrap_or_else(|| format!("\"{d}\"")),
        Some(other) => {
            let v = AnyValue {
                value: Some(other.clone()),
            };
            serde_json::to_string(&v).unwrap_or_default()
        }
    }
}

/// A 128-bit trace id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TraceId(pub [u8; 16]);

/// A 64-bit span id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// Parses 32 hex digits (either case).
    pub fn from_hex(s: &str) -> Option<TraceId> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(TraceId(out))
    }

    /// The 32 lowercase hex digits, as used in Kafka keys and OTLP/JSON.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The least-significant 56 bits, the W3C "random" part used as OTEP 235 randomness.
    pub fn randomness(&self) -> u64 {
        let mut v = 0u64;
        for b in &self.0[9..16] {
            v = (v << 8) | u64::from(*b);
        }
        v
    }

    /// A 64-bit fold of the id for hashing (ids are random, so any 8 bytes spread well).
    pub fn fold64(&self) -> u64 {
        let (hi, lo) = self.0.split_at(8);
        let hi = u64::from_le_bytes(hi.try_into().unwrap_or([0; 8]));
        let lo = u64::from_le_bytes(lo.try_into().unwrap_or([0; 8]));
        hi ^ lo.rotate_left(29)
    }
}

impl SpanId {
    /// The 16 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({})", self.to_hex())
    }
}
impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({})", self.to_hex())
    }
}

/// OTLP span kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SpanKind {
    /// SPAN_KIND_UNSPECIFIED (or a value this build does not know).
    #[default]
    Unspecified,
    /// SPAN_KIND_INTERNAL.
    Internal,
    /// SPAN_KIND_SERVER.
    Server,
    /// SPAN_KIND_CLIENT.
    Client,
    /// SPAN_KIND_PRODUCER.
    Producer,
    /// SPAN_KIND_CONSUMER.
    Consumer,
}

impl SpanKind {
    /// From the protobuf enum value; unknown values are `Unspecified`.
    pub fn from_i32(v: i32) -> SpanKind {
        match v {
            1 => SpanKind::Internal,
            2 => SpanKind::Server,
            3 => SpanKind::Client,
            4 => SpanKind::Producer,
            5 => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }

    /// From the lowercase name of the Parquet `kind` column; unknown names are `Unspecified`.
    pub fn from_name(name: &str) -> SpanKind {
        match name {
            "internal" => SpanKind::Internal,
            "server" => SpanKind::Server,
            "client" => SpanKind::Client,
            "producer" => SpanKind::Producer,
            "consumer" => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }

    /// The protobuf enum value.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The lowercase name used in the Parquet `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Unspecified => "unspecified",
            SpanKind::Internal => "internal",
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
        }
    }
}

/// OTLP status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StatusCode {
    /// STATUS_CODE_UNSET.
    #[default]
    Unset,
    /// STATUS_CODE_OK.
    Ok,
    /// STATUS_CODE_ERROR.
    Error,
}

impl StatusCode {
    /// From the protobuf enum value; unknown values are `Unset`.
    pub fn from_i32(v: i32) -> StatusCode {
        match v {
            1 => StatusCode::Ok,
            2 => StatusCode::Error,
            _ => StatusCode::Unset,
        }
    }

    /// A one-bit mask, so a trace can remember which codes it has seen in one byte.
    pub fn bit(self) -> u8 {
        match self {
            StatusCode::Unset => 1,
            StatusCode::Ok => 2,
            StatusCode::Error => 4,
        }
    }

    /// From the lowercase name of the Parquet `status_code` column; unknown names are `Unset`.
    pub fn from_name(name: &str) -> StatusCode {
        match name {
            "ok" => StatusCode::Ok,
            "error" => StatusCode::Error,
            _ => StatusCode::Unset,
        }
    }

    /// The protobuf enum value.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The lowercase name used in the Parquet `status_code` column.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusCode::Unset => "unset",
            StatusCode::Ok => "ok",
            StatusCode::Error => "error",
        }
    }
}

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

/// The resource and scope a span was sent with, as encoded fields of the original record.
///
/// One is shared (by `Arc`) by every span of a `ScopeSpans`, so the per-span cost is a pointer.
#[derive(Debug, Default)]
pub struct ScopeCtx {
    /// `ResourceSpans.resource` field (tag, length and body), or empty.
    pub resource_field: Bytes,
    /// `ResourceSpans.schema_url` field (tag, length and body), or empty.
    pub resource_schema_field: Bytes,
    /// `ScopeSpans.scope` field (tag, length and body), or empty.
    pub scope_field: Bytes,
    /// `ScopeSpans.schema_url` field (tag, length and body), or empty.
    pub scope_schema_field: Bytes,
    /// The Kafka timestamp of the record it arrived in, Unix ms (0 when unknown).
    pub arrival_ms: u64,
}

impl ScopeCtx {
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
    pub th: Option<u64>,
    /// Policy leaves matched by this span's (or its resource's) attributes or tracestate.
    pub leaf_bits: u128,
    /// Encoded size of the span in bytes.
    pub size: u32,
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
    buf: &'a [u8],
    start: usize,
    end: usize,
}

impl<'a> RawValue<'a> {
    /// Parses the value (a value that does not parse reads as `Other`).
    pub fn get(&self) -> AnyValueRef<'a> {
        any_value(self.buf, self.start..self.end).unwrap_or(AnyValueRef::Other)
    }

    /// The value whose `AnyValue` body is `buf[r]`.
    fn at(buf: &'a [u8], r: Range<usize>) -> RawValue<'a> {
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

// ---------------------------------------------------------------------------------------------
// Protobuf wire reading
// ---------------------------------------------------------------------------------------------

const WT_VARINT: u8 = 0;
const WT_I64: u8 = 1;
const WT_LEN: u8 = 2;
const WT_I32: u8 = 5;

/// One field value; `Len` is a range into the whole record buffer.
#[derive(Debug, Clone)]
enum Wire {
    Varint(u64),
    I64(u64),
    I32(u32),
    Len(Range<usize>),
}

/// A cursor over `buf[pos..end]`; all positions are absolute offsets into `buf`.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], range: Range<usize>) -> Self {
        Reader {
            buf,
            pos: range.start,
            end: range.end,
        }
    }

    fn err(&self, what: &'static str) -> DecodeError {
        DecodeError::Wire { at: self.pos, what }
    }

    /// Most varints on this path (tags, lengths, enums) are one byte: that case stays inline.
    #[inline(always)]
    fn varint(&mut self) -> Result<u64, DecodeError> {
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 && self.pos < self.end {
                self.pos += 1;
                return Ok(u64::from(b));
            }
        }
        self.varint_slow()
    }

    #[inline(never)]
    fn varint_slow(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        let mut shift = 0u32;
        loop {
            if self.pos >= self.end {
                return Err(self.err("truncated varint"));
            }
            let b = self.buf[self.pos];
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(self.err("varint overflows 64 bits"));
            }
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
            if shift > 63 {
                return Err(self.err("varint too long"));
            }
        }
    }

    /// The next field: (field number, start of its tag, value), or None at the end.
    #[inline(always)]
    fn field(&mut self) -> Result<Option<(u32, usize, Wire)>, DecodeError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let tag_start = self.pos;
        let tag = self.varint()?;
        // A key is a uint32 on the wire (field numbers up to 2^29 - 1): prost refuses more.
        if tag > u64::from(u32::MAX) {
            return Err(self.err("field number too large"));
        }
        let number = (tag >> 3) as u32;
        if number == 0 {
            return Err(self.err("field number 0"));
        }
        let value = match (tag & 7) as u8 {
            WT_VARINT => Wire::Varint(self.varint()?),
            WT_I64 => {
                if self.end - self.pos < 8 {
                    return Err(self.err("truncated fixed64"));
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.buf[self.pos..self.pos + 8]);
                self.pos += 8;
                Wire::I64(u64::from_le_bytes(b))
            }
            WT_I32 => {
                if self.end - self.pos < 4 {
                    return Err(self.err("truncated fixed32"));
                }
                let mut b = [0u8; 4];
                b.copy_from_slice(&self.buf[self.pos..self.pos + 4]);
                self.pos += 4;
                Wire::I32(u32::from_le_bytes(b))
            }
            WT_LEN => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| self.err("length too large"))?;
                if self.end - self.pos < len {
                    return Err(self.err("length-delimited field runs past its message"));
                }
                let r = self.pos..self.pos + len;
                self.pos += len;
                Wire::Len(r)
            }
            _ => return Err(self.err("unsupported wire type")),
        };
        Ok(Some((number, tag_start, value)))
    }
}

fn utf8<'a>(buf: &'a [u8], r: Range<usize>, field: &'static str) -> Result<&'a str, DecodeError> {
    std::str::from_utf8(&buf[r]).map_err(|_| DecodeError::Utf8 { field })
}

/// Parses an `AnyValue` body as far as its scalar.
fn any_value(buf: &[u8], r: Range<usize>) -> Result<AnyValueRef<'_>, DecodeError> {
    let mut rd = Reader::new(buf, r);
    let mut out = AnyValueRef::Other;
    while let Some((n, _, w)) = rd.field()? {
        out = match (n, w) {
            (1, Wire::Len(s)) => AnyValueRef::Str(utf8(buf, s, "AnyValue.string_value")?),
            (2, Wire::Varint(v)) => AnyValueRef::Bool(v != 0),
            (3, Wire::Varint(v)) => AnyValueRef::Int(v as i64),
            (4, Wire::I64(v)) => AnyValueRef::Double(f64::from_bits(v)),
            _ => AnyValueRef::Other,
        };
    }
    Ok(out)
}

/// Checks a `Resource` body at `depth` (strictly, as every accepted resource is) and, when
/// `wants_attrs`, returns the leaves its attributes match: one walk for both.
fn resource_bits(
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

/// Parses the OTEP 235 `ot` entry of a W3C tracestate: `(rv, th)`.
pub fn parse_ot_tracestate(ts: &str) -> (Option<u64>, Option<u64>) {
    let mut rv = None;
    let mut th = None;
    for member in ts.split(',') {
        let member = member.trim();
        let Some(ot) = member.strip_prefix("ot=") else {
            continue;
        };
        for kv in ot.split(';') {
            if let Some(v) = kv.strip_prefix("rv:") {
                if v.len() == 14 {
                    rv = u64::from_str_radix(v, 16).ok();
                }
            } else if let Some(v) = kv.strip_prefix("th:") {
                if !v.is_empty() && v.len() <= 14 {
                    // Trailing zeros are elided: pad to 14 hex digits (56 bits).
                    th = u64::from_str_radix(v, 16)
                        .ok()
                        .map(|x| x << (4 * (14 - v.len())));
                }
            }
        }
    }
    (rv, th)
}

/// Sets (or, with `None`, removes) the `th` of the OTEP 235 `ot` entry of a W3C tracestate,
/// keeping the entry's other fields (`rv`, vendor sub-keys) and every other list member. The
/// modified `ot` entry moves to the front, as W3C requires of a modified member; an `ot` entry
/// left empty is removed.
pub fn set_ot_threshold(ts: &str, th: Option<u64>) -> String {
    let mut ot_fields: Vec<&str> = Vec::new();
    let mut others: Vec<&str> = Vec::new();
    for member in ts.split(',') {
        let member = member.trim();
        if member.is_empty() {
            continue;
        }
        match member.strip_prefix("ot=") {
            Some(ot) => ot_fields.extend(
                ot.split(';')
                    .filter(|f| !f.is_empty() && !f.starts_with("th:")),
            ),
            None => others.push(member),
        }
    }
    let th_field = th.map(|t| format!("th:{}", threshold::threshold_hex(t)));
    let mut fields: Vec<&str> = Vec::with_capacity(ot_fields.len() + 1);
    if let Some(f) = &th_field {
        fields.push(f);
    }
    fields.extend(ot_fields);
    let mut out = String::with_capacity(ts.len() + 24);
    if !fields.is_empty() {
        out.push_str("ot=");
        out.push_str(&fields.join(";"));
    }
    for m in others {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(m);
    }
    out
}

/// What a kept span carries out of this stage (built once per kept trace).
#[derive(Debug, Clone)]
pub struct SamplingMark<'a> {
    /// This stage's rejection threshold (`sample::THRESHOLD_UNKNOWN` erases `th`).
    pub threshold: u64,
    /// Name of the deciding policy.
    pub policy: &'a str,
    /// The tracestate of a span that arrived without one, rendered once per trace.
    plain_trace_state: String,
}

impl<'a> SamplingMark<'a> {
    /// The mark of a trace kept at `threshold` by `policy`.
    pub fn new(threshold: u64, policy: &'a str) -> Self {
        let th = (threshold != threshold::THRESHOLD_UNKNOWN).then_some(threshold);
        SamplingMark {
            threshold,
            policy,
            plain_trace_state: set_ot_threshold("", th),
        }
    }
}

/// Span attribute naming the policy that kept the trace (the Collector's name for it).
pub const ATTR_POLICY: &str = "tailsampling.policy";
/// Span attribute with the adjusted count (1/p) of the span's effective sampling probability.
pub const ATTR_ADJUSTED_COUNT: &str = "sampling.adjusted_count";

/// Rewrites one `Span` body for emission: the tracestate's `th` raised to the stage's threshold
/// (never lowered; erased when the stage's probability is unknown), and the policy name and
/// adjusted count attributes set (replacing any earlier ones of the same keys). Every other
/// field is copied byte for byte.
pub fn mark_span(span: &[u8], mark: &SamplingMark<'_>) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(span.len() + 96);
    let mut rd = Reader::new(span, 0..span.len());
    let mut trace_state = "";
    while let Some((n, tag_start, w)) = rd.field()? {
        match (n, &w) {
            (3, Wire::Len(r)) => {
                trace_state = utf8(span, r.clone(), "Span.trace_state")?;
                continue;
            }
            (9, Wire::Len(r)) => {
                let (k, _) = strict::key_value(span, r.clone(), SPAN_DEPTH + 1)?;
                let k = &span[k];
                if k == ATTR_POLICY.as_bytes() || k == ATTR_ADJUSTED_COUNT.as_bytes() {
                    continue;
                }
            }
            _ => {}
        }
        out.extend_from_slice(&span[tag_start..rd.pos]);
    }
    let (_, th_in) = parse_ot_tracestate(trace_state);
    let th = (mark.threshold != threshold::THRESHOLD_UNKNOWN)
        .then(|| mark.threshold.max(th_in.unwrap_or(0)));
    let ts: std::borrow::Cow<'_, str> = if trace_state.is_empty() {
        std::borrow::Cow::Borrowed(&mark.plain_trace_state)
    } else {
        std::borrow::Cow::Owned(set_ot_threshold(trace_state, th))
    };
    if !ts.is_empty() {
        put_len_header(&mut out, 3, ts.len());
        out.extend_from_slice(ts.as_bytes());
    }
    put_string_attribute(&mut out, ATTR_POLICY, mark.policy);
    if let Some(t) = th {
        put_double_attribute(&mut out, ATTR_ADJUSTED_COUNT, threshold::adjusted_count(t));
    }
    Ok(out)
}

fn put_string_attribute(out: &mut Vec<u8>, key: &str, value: &str) {
    let any = len_field_size(value.len());
    let kv = len_field_size(key.len()) + len_field_size(any);
    put_len_header(out, 9, kv);
    put_len_header(out, 1, key.len());
    out.extend_from_slice(key.as_bytes());
    put_len_header(out, 2, any);
    put_len_header(out, 1, value.len());
    out.extend_from_slice(value.as_bytes());
}

fn put_double_attribute(out: &mut Vec<u8>, key: &str, value: f64) {
    let any = 1 + 8;
    let kv = len_field_size(key.len()) + len_field_size(any);
    put_len_header(out, 9, kv);
    put_len_header(out, 1, key.len());
    out.extend_from_slice(key.as_bytes());
    put_len_header(out, 2, any);
    put_varint(out, (4 << 3) | u64::from(WT_I64));
    out.extend_from_slice(&value.to_le_bytes());
}

/// Scans one `Span` body into its meta, checking it strictly; returns the trace id too.
/// `arrival_ns` (0 = unknown) is when its record arrived: times not plausible against it are
/// left out of the meta (both 0), so they cannot make a trace slow.
fn scan_span(
    buf: &[u8],
    r: Range<usize>,
    probe: &impl SpanProbe,
    wants_attrs: bool,
    arrival_ns: u64,
) -> Result<(TraceId, SpanMeta), DecodeError> {
    let mut rd = Reader::new(buf, r.clone());
    let mut meta = SpanMeta {
        is_root: true,
        size: u32::try_from(r.len()).unwrap_or(u32::MAX),
        ..SpanMeta::default()
    };
    let mut trace_id: Option<TraceId> = None;
    let mut have_span_id = false;
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
            }
            (6, Wire::Varint(v)) => meta.kind = SpanKind::from_i32(v as i32),
            (7, Wire::I64(v)) => meta.start_ns = v,
            (8, Wire::I64(v)) => meta.end_ns = v,
            (15, Wire::Len(st)) => {
                let mut srd = Reader::new(buf, st);
                while let Some((sn, _, sw)) = srd.field()? {
                    if let (3, Wire::Varint(c)) = (sn, sw) {
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
    Ok((trace_id, meta))
}

/// The fields of a `ResourceSpans` or `ScopeSpans` besides its list, as whole encoded fields:
/// the context message at field 1 (resource or scope; the caller checks it) and the schema URL
/// at field 3.
struct Envelope {
    ctx_field: Range<usize>,
    ctx_body: Range<usize>,
    schema_field: Range<usize>,
}

/// Reads the envelope of a `ResourceSpans` / `ScopeSpans` body: the schema URL must be UTF-8,
/// the three fields length-delimited.
fn envelope(
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
const SPAN_DEPTH: u32 = 3;

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
    mut sink: impl FnMut(TraceId, SpanMeta, SpanRef),
) -> Result<(), DecodeError> {
    let buf: &[u8] = record;
    let wants_attrs = probe.wants_attributes();
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
        let res_bits = resource_bits(buf, resource_body, probe, wants_attrs, 2)?;
        // Second pass: each ScopeSpans.
        let mut rd = Reader::new(buf, rs);
        while let Some((fnum, _, fw)) = rd.field()? {
            let (2, Wire::Len(ss)) = (fnum, fw) else {
                continue;
            };
            let ss_env = envelope(buf, ss.clone(), "ScopeSpans", "ScopeSpans.schema_url")?;
            strict::check_message(buf, ss_env.ctx_body.clone(), strict::Msg::Scope, 3)?;
            let (scope_field, scope_schema) = (ss_env.ctx_field, ss_env.schema_field);
            let ctx = Arc::new(ScopeCtx {
                resource_field: record.slice(resource_field.clone()),
                resource_schema_field: record.slice(schema_field.clone()),
                scope_field: record.slice(scope_field),
                scope_schema_field: record.slice(scope_schema),
                arrival_ms,
            });
            let mut srd = Reader::new(buf, ss);
            while let Some((sn, _, sw)) = srd.field()? {
                let (2, Wire::Len(sp)) = (sn, sw) else {
                    continue;
                };
                let (trace_id, mut meta) =
                    scan_span(buf, sp.clone(), probe, wants_attrs, arrival_ns)?;
                meta.leaf_bits |= res_bits;
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
    out.clear();
    let r = scan_request(record, probe, arrival_ms, |trace_id, meta, span| {
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
fn fanout(
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
fn admit(len: usize, spans: &mut [ScannedSpan]) -> Result<(), DecodeError> {
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

// ---------------------------------------------------------------------------------------------
// Encoding by splicing
// ---------------------------------------------------------------------------------------------

/// Appends a protobuf varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes a varint of `v` takes.
pub fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn len_field_size(body: usize) -> usize {
    1 + varint_len(body as u64) + body
}

fn put_len_header(out: &mut Vec<u8>, field: u32, body: usize) {
    put_varint(out, (u64::from(field) << 3) | u64::from(WT_LEN));
    put_varint(out, body as u64);
}

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

fn scope_spans_len(ctx: &ScopeCtx, group: &[&SpanRef]) -> usize {
    ctx.scope_field.len()
        + ctx.scope_schema_field.len()
        + group
            .iter()
            .map(|s| len_field_size(s.bytes.len()))
            .sum::<usize>()
}

fn resource_spans_len(ctx: &ScopeCtx, group: &[&SpanRef]) -> usize {
    ctx.resource_field.len()
        + ctx.resource_schema_field.len()
        + len_field_size(scope_spans_len(ctx, group))
}

fn for_each_group<'a>(
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

// ---------------------------------------------------------------------------------------------
// JSON input and full decode
// ---------------------------------------------------------------------------------------------

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
    out.clear();
    if payload.is_empty() {
        return Err(DecodeError::NoSpans);
    }
    match encoding {
        Encoding::OtlpProto => scan_request_into(payload, probe, arrival_ms, out),
        Encoding::OtlpJson => scan_request_into(&json_to_proto(payload)?, probe, arrival_ms, out),
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

/// The body of a single encoded length-delimited field.
/// Scans one buffered span again with another probe (after a policy reload): its meta with the
/// new probe's leaf bits, its resource's attributes included.
pub fn rescan_span(span: &SpanRef, probe: &impl SpanProbe) -> Result<SpanMeta, DecodeError> {
    let wants_attrs = probe.wants_attributes();
    let arrival_ns = span.ctx.arrival_ms.saturating_mul(1_000_000);
    let (_, mut meta) = scan_span(
        &span.bytes,
        0..span.bytes.len(),
        probe,
        wants_attrs,
        arrival_ns,
    )?;
    if wants_attrs {
        if let Some(body) = field_body(&span.ctx.resource_field) {
            meta.leaf_bits |= resource_bits(&body, 0..body.len(), probe, true, 2)?;
        }
    }
    Ok(meta)
}

fn field_body(field: &Bytes) -> Option<Bytes> {
    if field.is_empty() {
        return None;
    }
    let mut rd = Reader::new(field, 0..field.len());
    match rd.field() {
        Ok(Some((_, _, Wire::Len(body)))) => Some(field.slice(body)),
        _ => None,
    }
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
        assert_eq!(out[0].meta.th, Some(0x8 << 52));
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
        use super::threshold::threshold_for_probability;
        let t1 = threshold_for_probability(0.01);
        let t50 = 1u64 << 55;
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
            th.map(|t| t >> 8),
            Some(t1 >> 8),
            "round trip at 48 bits or better"
        );
    }

    #[test]
    fn marked_spans_carry_threshold_policy_and_adjusted_count() {
        use super::threshold::{adjusted_count, THRESHOLD_UNKNOWN};
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
        let t25 = 3u64 << 54; // p = 0.25
        let t50 = 1u64 << 55; // p = 0.5
        let table: &[(&str, u64, Option<u64>)] = &[
            ("", 0, Some(0)),
            ("", t50, Some(t50)),
            ("ot=th:c", t50, Some(t25)), // incoming stricter: kept, never lowered
            ("ot=th:4", t50, Some(t50)), // raised to ours
            ("ot=th:8;rv:00000000000001", THRESHOLD_UNKNOWN, None), // erased after a limiter
        ];
        for (ts, stage, want_th) in table {
            let mut s = base.clone();
            s.trace_state = ts.to_string();
            let bytes = s.encode_to_vec();
            let out = mark_span(&bytes, &SamplingMark::new(*stage, "slow")).unwrap();
            let got = Span::decode(out.as_slice()).unwrap();
            let (_, th) = parse_ot_tracestate(&got.trace_state);
            assert_eq!(th, *want_th, "{ts} at {stage:x}: {}", got.trace_state);
            if ts.contains("rv:") {
                assert!(got.trace_state.contains("rv:00000000000001"), "rv kept");
            }
            assert_eq!(
                attr(&got, ATTR_POLICY),
                vec![Some(any_value::Value::StringValue("slow".into()))],
                "one policy attribute, ours"
            );
            let want_count: Vec<_> = want_th
                .map(|t| Some(any_value::Value::DoubleValue(adjusted_count(t))))
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
        assert_eq!(parse_ot_tracestate("ot=th:0"), (None, Some(0)));
        assert_eq!(
            parse_ot_tracestate("vendor=x,ot=rv:0123456789abcd;th:fd70a4"),
            (Some(0x0123456789abcd), Some(0xfd70a4 << 32))
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
}
