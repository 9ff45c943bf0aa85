//! A span's fields read straight from its bytes, borrowed, for the Parquet encoder: no message
//! is built, no string copied. It gives what a full `prost` decode gives (the row of a span is
//! the same either way: `tests/encoder_golden.rs`):
//!
//! - a singular field that appears twice takes its last value, and `status` occurrences merge,
//!   field by field, as protobuf merging does;
//! - repeated fields (attributes, events, links) are read in wire order by walking the span
//!   again, so nothing is collected per span;
//! - an attribute value is a scalar read in place, or — for arrays, key-value lists, bytes and
//!   the odd value sent twice — the `KeyValue` bytes, which [`Value::render`] hands to `prost`:
//!   rare, and exact by construction;
//! - a known field with another wire type, or a string that is not UTF-8, is an error, as in
//!   `prost` (the strict scan on the way in already refused both, so this is defensive).

use std::fmt::Write as _;
use std::ops::Range;

use super::{DecodeError, Reader, Wire, WT_I32, WT_I64, WT_LEN, WT_VARINT};

fn wire_type(w: &Wire) -> u8 {
    match w {
        Wire::Varint(_) => WT_VARINT,
        Wire::I64(_) => WT_I64,
        Wire::I32(_) => WT_I32,
        Wire::Len(_) => WT_LEN,
    }
}

fn mismatch(message: &'static str, field: u32, expected: u8) -> DecodeError {
    DecodeError::WireType {
        message,
        field,
        expected,
    }
}

fn len(message: &'static str, n: u32, w: Wire) -> Result<Range<usize>, DecodeError> {
    match w {
        Wire::Len(r) => Ok(r),
        _ => Err(mismatch(message, n, WT_LEN)),
    }
}

fn fixed64(message: &'static str, n: u32, w: Wire) -> Result<u64, DecodeError> {
    match w {
        Wire::I64(v) => Ok(v),
        _ => Err(mismatch(message, n, WT_I64)),
    }
}

fn varint(message: &'static str, n: u32, w: Wire) -> Result<u64, DecodeError> {
    match w {
        Wire::Varint(v) => Ok(v),
        _ => Err(mismatch(message, n, WT_VARINT)),
    }
}

fn fixed32(message: &'static str, n: u32, w: &Wire) -> Result<(), DecodeError> {
    match w {
        Wire::I32(_) => Ok(()),
        _ => Err(mismatch(message, n, WT_I32)),
    }
}

fn text<'a>(buf: &'a [u8], r: Range<usize>, field: &'static str) -> Result<&'a str, DecodeError> {
    std::str::from_utf8(&buf[r]).map_err(|_| DecodeError::Utf8 { field })
}

/// The singular fields of a `Span`, borrowed from its bytes.
#[derive(Debug, Clone)]
pub struct SpanFields<'a> {
    buf: &'a [u8],
    /// `span_id` as sent (any length).
    pub span_id: &'a [u8],
    /// `parent_span_id` as sent (empty for a root).
    pub parent_span_id: &'a [u8],
    /// W3C tracestate.
    pub trace_state: &'a str,
    /// Span name.
    pub name: &'a str,
    /// `kind` as its enum number.
    pub kind: i32,
    /// Start, Unix ns.
    pub start_ns: u64,
    /// End, Unix ns.
    pub end_ns: u64,
    /// `status.code` as its enum number (0 = unset, also when there is no status).
    pub status_code: i32,
    /// `status.message`.
    pub status_message: &'a str,
    /// How many events / links occur (their walks are skipped when 0).
    events: u32,
    links: u32,
    /// Where the attributes lie ([`SpanRanges::attributes`]): their walk starts there.
    attributes: Range<usize>,
}

impl<'a> SpanFields<'a> {
    /// Reads a `Span` message body: [`SpanRanges`]' walk, then its strings checked.
    pub fn read(buf: &'a [u8]) -> Result<SpanFields<'a>, DecodeError> {
        let r = SpanRanges::read(buf)?;
        Ok(SpanFields {
            buf,
            span_id: &buf[r.span_id],
            parent_span_id: &buf[r.parent_span_id],
            trace_state: text(buf, r.trace_state, "Span.trace_state")?,
            name: text(buf, r.name, "Span.name")?,
            kind: r.kind,
            start_ns: r.start_ns,
            end_ns: r.end_ns,
            status_code: r.status_code,
            status_message: text(buf, r.status_message, "Status.message")?,
            events: r.events,
            links: r.links,
            attributes: r.attributes,
        })
    }

    /// The span's attributes, in wire order.
    pub fn attributes(&self) -> Repeated<'a> {
        Repeated::new(self.buf, self.attributes.clone(), 9, "Span")
    }

    /// The span's events, in wire order.
    pub fn events(&self) -> impl Iterator<Item = Result<EventFields<'a>, DecodeError>> + 'a {
        let buf = self.buf;
        let all = if self.events > 0 { buf.len() } else { 0 };
        Repeated::new(buf, 0..all, 11, "Span")
            .ranges()
            .map(move |r| EventFields::read(buf, r?))
    }

    /// The span's links, in wire order.
    pub fn links(&self) -> impl Iterator<Item = Result<LinkFields<'a>, DecodeError>> + 'a {
        let buf = self.buf;
        let all = if self.links > 0 { buf.len() } else { 0 };
        Repeated::new(buf, 0..all, 13, "Span")
            .ranges()
            .map(move |r| LinkFields::read(buf, r?))
    }
}

/// The occurrences of one repeated `KeyValue` (or message) field of a message.
pub struct Repeated<'a> {
    rd: Reader<'a>,
    field: u32,
    message: &'static str,
}

impl<'a> Repeated<'a> {
    fn new(buf: &'a [u8], r: Range<usize>, field: u32, message: &'static str) -> Repeated<'a> {
        Repeated {
            rd: Reader::new(buf, r),
            field,
            message,
        }
    }

    /// The occurrences as [`RawKv`]s: located, not yet read.
    pub fn raw(self) -> impl Iterator<Item = Result<RawKv<'a>, DecodeError>> + 'a {
        let buf = self.rd.buf;
        self.ranges().map(move |r| r.map(|r| RawKv { buf, r }))
    }

    fn ranges(self) -> impl Iterator<Item = Result<Range<usize>, DecodeError>> + 'a {
        let Repeated {
            mut rd,
            field,
            message,
        } = self;
        std::iter::from_fn(move || loop {
            match rd.field() {
                Err(e) => return Some(Err(e)),
                Ok(None) => return None,
                Ok(Some((n, _, w))) if n == field => return Some(len(message, n, w)),
                Ok(Some(_)) => {}
            }
        })
    }
}

impl<'a> Iterator for Repeated<'a> {
    type Item = Result<Kv<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.rd.field() {
                Err(e) => return Some(Err(e)),
                Ok(None) => return None,
                Ok(Some((n, _, w))) if n == self.field => {
                    let buf = self.rd.buf;
                    return Some(len(self.message, n, w).and_then(|r| Kv::read(buf, r)));
                }
                Ok(Some(_)) => {}
            }
        }
    }
}

/// One `KeyValue` occurrence before it is read. Equal [`RawKv::bytes`] read as equal [`Kv`]s
/// (or fail alike), so a caller meeting the same attribute on many spans can read it once.
#[derive(Debug, Clone)]
pub struct RawKv<'a> {
    buf: &'a [u8],
    r: Range<usize>,
}

impl<'a> RawKv<'a> {
    /// The `KeyValue` message body.
    pub fn bytes(&self) -> &'a [u8] {
        &self.buf[self.r.clone()]
    }

    /// Reads it, as [`Repeated`]'s iterator does.
    pub fn read(&self) -> Result<Kv<'a>, DecodeError> {
        Kv::read(self.buf, self.r.clone())
    }
}

/// One `KeyValue`.
#[derive(Debug, Clone, Copy)]
pub struct Kv<'a> {
    /// The key.
    pub key: &'a str,
    /// The value; `None` when the `value` field is absent.
    pub value: Option<Value<'a>>,
}

impl<'a> Kv<'a> {
    fn read(buf: &'a [u8], r: Range<usize>) -> Result<Kv<'a>, DecodeError> {
        // The shape nearly every attribute has (the strict walk's fast path) is read without
        // the general reader; anything else, and any error, takes the walk.
        if let Some((k, v)) = super::strict::key_value_common(buf, &r) {
            if let (Ok(key), Some(value)) = (text(buf, k, "KeyValue.key"), Value::common(&buf[v])) {
                return Ok(Kv {
                    key,
                    value: Some(value),
                });
            }
        }
        Kv::read_walk(buf, r)
    }

    fn read_walk(buf: &'a [u8], r: Range<usize>) -> Result<Kv<'a>, DecodeError> {
        const M: &str = "KeyValue";
        let whole = &buf[r.clone()];
        let mut key = "";
        let mut value: Option<Value<'a>> = None;
        let mut rd = Reader::new(buf, r);
        while let Some((n, _, w)) = rd.field()? {
            match n {
                1 => key = text(buf, len(M, n, w)?, "KeyValue.key")?,
                2 => {
                    let body = len(M, n, w)?;
                    value = Some(match value {
                        // A second `value` merges into the first: let prost do it.
                        Some(_) => Value::Complex(whole),
                        None => Value::read(buf, body, whole)?,
                    });
                }
                _ => {}
            }
        }
        Ok(Kv { key, value })
    }
}

/// An attribute value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// An `AnyValue` with nothing set.
    Empty,
    /// string_value.
    Str(&'a str),
    /// bool_value.
    Bool(bool),
    /// int_value.
    Int(i64),
    /// double_value.
    Double(f64),
    /// An array, key-value list or bytes (or an unusual encoding): the whole `KeyValue`.
    Complex(&'a [u8]),
}

impl<'a> Value<'a> {
    /// An `AnyValue` body of the shape [`super::strict`]'s fast path accepts (nothing, or one
    /// scalar field with a one-byte tag and length), else `None`.
    fn common(b: &'a [u8]) -> Option<Value<'a>> {
        Some(match b {
            [] => Value::Empty,
            [0x0A, sl, s @ ..] if usize::from(*sl) == s.len() => {
                Value::Str(std::str::from_utf8(s).ok()?)
            }
            [0x10, x] if *x < 0x80 => Value::Bool(*x != 0),
            [0x18, x @ ..] if !x.is_empty() && x.len() <= 9 => {
                let mut v = 0u64;
                for (i, c) in x.iter().enumerate() {
                    let last = i + 1 == x.len();
                    if (*c < 0x80) != last {
                        return None;
                    }
                    v |= u64::from(c & 0x7f) << (7 * i);
                }
                Value::Int(v as i64)
            }
            [0x21, x @ ..] => Value::Double(f64::from_le_bytes(x.try_into().ok()?)),
            _ => return None,
        })
    }

    /// Reads an `AnyValue` body (`kv`: the enclosing `KeyValue`, for complex values).
    fn read(buf: &'a [u8], r: Range<usize>, kv: &'a [u8]) -> Result<Value<'a>, DecodeError> {
        const M: &str = "AnyValue";
        let mut out = Value::Empty;
        let mut rd = Reader::new(buf, r);
        while let Some((n, _, w)) = rd.field()? {
            out = match n {
                1 => Value::Str(text(buf, len(M, n, w)?, "AnyValue.string_value")?),
                2 => Value::Bool(varint(M, n, w)? != 0),
                3 => Value::Int(varint(M, n, w)? as i64),
                4 => Value::Double(f64::from_bits(fixed64(M, n, w)?)),
                5..=7 => {
                    if wire_type(&w) != WT_LEN {
                        return Err(mismatch(M, n, WT_LEN));
                    }
                    Value::Complex(kv)
                }
                _ => continue,
            };
        }
        Ok(out)
    }

    /// The value as an OTLP/JSON scalar ([`super::render_value`]'s text), into `out`.
    pub fn render(&self, out: &mut String) -> Result<(), DecodeError> {
        out.clear();
        match *self {
            Value::Empty => {}
            Value::Str(s) => out.push_str(s),
            Value::Bool(b) => out.push_str(if b { "true" } else { "false" }),
            Value::Int(i) => out.push_str(itoa::Buffer::new().format(i)),
            Value::Double(d) => match serde_json::Number::from_f64(d) {
                Some(n) => {
                    let _ = write!(out, "{n}");
                }
                None => {
                    let _ = write!(out, "\"{d}\"");
                }
            },
            Value::Complex(kv) => {
                use prost::Message;
                let kv =
                    opentelemetry_proto::tonic::common::v1::KeyValue::decode(kv).map_err(|_| {
                        DecodeError::Wire {
                            at: 0,
                            what: "attribute value does not decode",
                        }
                    })?;
                out.push_str(&super::render_value(kv.value.as_ref()));
            }
        }
        Ok(())
    }
}

/// The fields of one `Span.Event`.
#[derive(Debug)]
pub struct EventFields<'a> {
    buf: &'a [u8],
    r: Range<usize>,
    /// Time, Unix ns.
    pub time_ns: u64,
    /// Event name.
    pub name: &'a str,
    /// `dropped_attributes_count`.
    pub dropped_attributes: u32,
}

impl<'a> EventFields<'a> {
    /// Reads a `Span.Event` body.
    pub fn of(body: &'a [u8]) -> Result<EventFields<'a>, DecodeError> {
        EventFields::read(body, 0..body.len())
    }

    fn read(buf: &'a [u8], r: Range<usize>) -> Result<EventFields<'a>, DecodeError> {
        const M: &str = "Event";
        let mut e = EventFields {
            buf,
            r: r.clone(),
            time_ns: 0,
            name: "",
            dropped_attributes: 0,
        };
        let mut rd = Reader::new(buf, r);
        while let Some((n, _, w)) = rd.field()? {
            match n {
                1 => e.time_ns = fixed64(M, n, w)?,
                2 => e.name = text(buf, len(M, n, w)?, "Event.name")?,
                3 => {
                    len(M, n, w)?;
                }
                4 => e.dropped_attributes = varint(M, n, w)? as u32,
                _ => {}
            }
        }
        Ok(e)
    }

    /// The event's attributes.
    pub fn attributes(&self) -> Repeated<'a> {
        Repeated::new(self.buf, self.r.clone(), 3, "Event")
    }

    /// The event's attributes as a map.
    pub fn attribute_map(&self) -> KvListRef<'a> {
        KvListRef::new(&self.buf[self.r.clone()], 3)
    }
}

/// The fields of one `Span.Link`.
#[derive(Debug)]
pub struct LinkFields<'a> {
    buf: &'a [u8],
    r: Range<usize>,
    /// Linked trace id as sent.
    pub trace_id: &'a [u8],
    /// Linked span id as sent.
    pub span_id: &'a [u8],
    /// Its tracestate.
    pub trace_state: &'a str,
}

impl<'a> LinkFields<'a> {
    fn read(buf: &'a [u8], r: Range<usize>) -> Result<LinkFields<'a>, DecodeError> {
        const M: &str = "Link";
        let mut l = LinkFields {
            buf,
            r: r.clone(),
            trace_id: &[],
            span_id: &[],
            trace_state: "",
        };
        let mut rd = Reader::new(buf, r);
        while let Some((n, _, w)) = rd.field()? {
            match n {
                1 => l.trace_id = &buf[len(M, n, w)?],
                2 => l.span_id = &buf[len(M, n, w)?],
                3 => l.trace_state = text(buf, len(M, n, w)?, "Link.trace_state")?,
                4 => {
                    len(M, n, w)?;
                }
                5 => {
                    varint(M, n, w)?;
                }
                6 => fixed32(M, n, &w)?,
                _ => {}
            }
        }
        Ok(l)
    }

    /// The link's attributes.
    pub fn attributes(&self) -> Repeated<'a> {
        Repeated::new(self.buf, self.r.clone(), 4, "Link")
    }
}

// ---------------------------------------------------------------------------------------------
// Any value, with its arrays and maps, read where it lies (for OTTL conditions)
// ---------------------------------------------------------------------------------------------

/// An `AnyValue` read in place; arrays and maps are views walked on demand.
#[derive(Debug, Clone, Copy)]
pub enum AnyRef<'a> {
    /// No value set.
    Empty,
    /// string_value.
    Str(&'a str),
    /// bool_value.
    Bool(bool),
    /// int_value.
    Int(i64),
    /// double_value.
    Double(f64),
    /// bytes_value.
    Bytes(&'a [u8]),
    /// array_value.
    Array(ArrayRef<'a>),
    /// kvlist_value.
    Map(KvListRef<'a>),
}

impl<'a> AnyRef<'a> {
    /// Reads an `AnyValue` body; the last value field wins, as when decoding.
    pub fn read(body: &'a [u8]) -> Result<AnyRef<'a>, DecodeError> {
        const M: &str = "AnyValue";
        let mut out = AnyRef::Empty;
        let mut rd = Reader::new(body, 0..body.len());
        while let Some((n, _, w)) = rd.field()? {
            out = match n {
                1 => AnyRef::Str(text(body, len(M, n, w)?, "AnyValue.string_value")?),
                2 => AnyRef::Bool(varint(M, n, w)? != 0),
                3 => AnyRef::Int(varint(M, n, w)? as i64),
                4 => AnyRef::Double(f64::from_bits(fixed64(M, n, w)?)),
                5 => AnyRef::Array(ArrayRef {
                    buf: &body[len(M, n, w)?],
                }),
                6 => AnyRef::Map(KvListRef::new(&body[len(M, n, w)?], 1)),
                7 => AnyRef::Bytes(&body[len(M, n, w)?]),
                _ => continue,
            };
        }
        Ok(out)
    }
}

/// The `KeyValue`s of one repeated field of a message (a span's attributes, a key-value list).
#[derive(Debug, Clone, Copy)]
pub struct KvListRef<'a> {
    buf: &'a [u8],
    field: u32,
}

impl<'a> KvListRef<'a> {
    /// The `KeyValue`s at field `field` of the message body `buf`.
    pub fn new(buf: &'a [u8], field: u32) -> KvListRef<'a> {
        KvListRef { buf, field }
    }

    /// An empty map.
    pub fn empty() -> KvListRef<'static> {
        KvListRef { buf: &[], field: 1 }
    }

    /// Each (key, value) in wire order.
    pub fn iter(&self) -> impl Iterator<Item = Result<(&'a str, AnyRef<'a>), DecodeError>> + 'a {
        let buf = self.buf;
        Repeated::new(buf, 0..buf.len(), self.field, "KeyValue list")
            .ranges()
            .map(move |r| {
                let r = r?;
                let mut key = "";
                let mut value = AnyRef::Empty;
                let mut rd = Reader::new(buf, r);
                while let Some((n, _, w)) = rd.field()? {
                    match n {
                        1 => key = text(buf, len("KeyValue", n, w)?, "KeyValue.key")?,
                        2 => value = AnyRef::read(&buf[len("KeyValue", n, w)?])?,
                        _ => {}
                    }
                }
                Ok((key, value))
            })
    }

    /// The value of the first entry with `key`.
    pub fn get(&self, key: &str) -> Result<Option<AnyRef<'a>>, DecodeError> {
        let buf = self.buf;
        let mut rd = Reader::new(buf, 0..buf.len());
        while let Some((n, _, w)) = rd.field()? {
            if n != self.field {
                continue;
            }
            let r = len("KeyValue list", n, w)?;
            // The key comes first in every encoder; read fields in order regardless.
            let mut kv = Reader::new(buf, r);
            let mut found = false;
            let mut value = None;
            while let Some((kn, _, kw)) = kv.field()? {
                match kn {
                    1 => found = buf[len("KeyValue", kn, kw)?] == *key.as_bytes(),
                    2 => value = Some(len("KeyValue", kn, kw)?),
                    _ => {}
                }
            }
            if found {
                return match value {
                    Some(v) => AnyRef::read(&buf[v]).map(Some),
                    None => Ok(Some(AnyRef::Empty)),
                };
            }
        }
        Ok(None)
    }

    /// Number of entries.
    pub fn len(&self) -> Result<usize, DecodeError> {
        count(self.buf, self.field)
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> Result<bool, DecodeError> {
        Ok(self.len()? == 0)
    }
}

/// An `ArrayValue` body.
#[derive(Debug, Clone, Copy)]
pub struct ArrayRef<'a> {
    buf: &'a [u8],
}

impl<'a> ArrayRef<'a> {
    /// Each element in order.
    pub fn iter(&self) -> impl Iterator<Item = Result<AnyRef<'a>, DecodeError>> + 'a {
        let buf = self.buf;
        Repeated::new(buf, 0..buf.len(), 1, "ArrayValue")
            .ranges()
            .map(move |r| AnyRef::read(&buf[r?]))
    }

    /// Element `i`, if there is one.
    pub fn get(&self, i: usize) -> Result<Option<AnyRef<'a>>, DecodeError> {
        self.iter().nth(i).transpose()
    }

    /// Number of elements.
    pub fn len(&self) -> Result<usize, DecodeError> {
        count(self.buf, 1)
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> Result<bool, DecodeError> {
        Ok(self.len()? == 0)
    }
}

fn count(buf: &[u8], field: u32) -> Result<usize, DecodeError> {
    let mut rd = Reader::new(buf, 0..buf.len());
    let mut n = 0;
    while let Some((f, _, _)) = rd.field()? {
        n += usize::from(f == field);
    }
    Ok(n)
}

/// The fields of an `InstrumentationScope` body.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScopeFields<'a> {
    /// Name.
    pub name: &'a str,
    /// Version.
    pub version: &'a str,
    /// `dropped_attributes_count`.
    pub dropped_attributes: u32,
    /// Attributes.
    pub attributes: Option<KvListRef<'a>>,
}

impl<'a> ScopeFields<'a> {
    /// Reads an `InstrumentationScope` body (empty: no scope).
    pub fn read(body: &'a [u8]) -> Result<ScopeFields<'a>, DecodeError> {
        const M: &str = "InstrumentationScope";
        let mut s = ScopeFields {
            attributes: Some(KvListRef::new(body, 3)),
            ..ScopeFields::default()
        };
        let mut rd = Reader::new(body, 0..body.len());
        while let Some((n, _, w)) = rd.field()? {
            match n {
                1 => s.name = text(body, len(M, n, w)?, "InstrumentationScope.name")?,
                2 => s.version = text(body, len(M, n, w)?, "InstrumentationScope.version")?,
                4 => s.dropped_attributes = varint(M, n, w)? as u32,
                _ => {}
            }
        }
        Ok(s)
    }
}

/// The fields of a `Resource` body.
#[derive(Debug, Clone, Copy)]
pub struct ResourceFields<'a> {
    /// `dropped_attributes_count`.
    pub dropped_attributes: u32,
    /// Attributes.
    pub attributes: KvListRef<'a>,
}

impl<'a> ResourceFields<'a> {
    /// Reads a `Resource` body (empty: no resource).
    pub fn read(body: &'a [u8]) -> Result<ResourceFields<'a>, DecodeError> {
        let mut r = ResourceFields {
            dropped_attributes: 0,
            attributes: KvListRef::new(body, 1),
        };
        let mut rd = Reader::new(body, 0..body.len());
        while let Some((n, _, w)) = rd.field()? {
            if n == 2 {
                r.dropped_attributes = varint("Resource", n, w)? as u32;
            }
        }
        Ok(r)
    }
}

/// The bodies of a span's events (`any`: whether it has any, else nothing is walked).
pub fn event_bodies(
    span: &[u8],
    any: bool,
) -> impl Iterator<Item = Result<&[u8], DecodeError>> + '_ {
    let all = if any { span.len() } else { 0 };
    Repeated::new(span, 0..all, 11, "Span")
        .ranges()
        .map(move |r| r.map(|r| &span[r]))
}

/// The text of one encoded string field (tag, length and body; empty: ""), e.g. a schema URL.
pub fn field_text(field: &[u8]) -> Result<&str, DecodeError> {
    let mut rd = Reader::new(field, 0..field.len());
    match rd.field()? {
        Some((n, _, w)) => text(field, len("field", n, w)?, "schema_url"),
        None => Ok(""),
    }
}

/// A span's fields as ranges into its bytes, from one walk that checks framing only (strings
/// are checked when read): what a condition reads without building anything.
#[derive(Debug, Clone, Default)]
pub struct SpanRanges {
    /// `trace_id`.
    pub trace_id: Range<usize>,
    /// `span_id`.
    pub span_id: Range<usize>,
    /// `trace_state`.
    pub trace_state: Range<usize>,
    /// `parent_span_id`.
    pub parent_span_id: Range<usize>,
    /// `name`.
    pub name: Range<usize>,
    /// `kind`.
    pub kind: i32,
    /// Start, Unix ns.
    pub start_ns: u64,
    /// End, Unix ns.
    pub end_ns: u64,
    /// `status.code` (0 when absent).
    pub status_code: i32,
    /// `status.message`.
    pub status_message: Range<usize>,
    /// `flags`.
    pub flags: u32,
    /// `dropped_attributes_count`.
    pub dropped_attributes: u32,
    /// `dropped_events_count`.
    pub dropped_events: u32,
    /// `dropped_links_count`.
    pub dropped_links: u32,
    /// Number of events.
    pub events: u32,
    /// Number of links.
    pub links: u32,
    /// From the first attribute's tag to the end of the last: the window an attribute lookup
    /// walks.
    pub attributes: Range<usize>,
}

impl SpanRanges {
    /// One walk over a `Span` body.
    pub fn read(buf: &[u8]) -> Result<SpanRanges, DecodeError> {
        const M: &str = "Span";
        let mut f = SpanRanges::default();
        let mut attrs: Option<Range<usize>> = None;
        let mut rd = Reader::new(buf, 0..buf.len());
        while let Some((n, tag, w)) = rd.field()? {
            match n {
                1 => f.trace_id = len(M, n, w)?,
                2 => f.span_id = len(M, n, w)?,
                3 => f.trace_state = len(M, n, w)?,
                4 => f.parent_span_id = len(M, n, w)?,
                5 => f.name = len(M, n, w)?,
                6 => f.kind = varint(M, n, w)? as i32,
                7 => f.start_ns = fixed64(M, n, w)?,
                8 => f.end_ns = fixed64(M, n, w)?,
                9 => {
                    let r = len(M, n, w)?;
                    attrs = Some(attrs.map_or(tag..r.end, |a| a.start..r.end));
                }
                10 => f.dropped_attributes = varint(M, n, w)? as u32,
                11 => {
                    len(M, n, w)?;
                    f.events += 1;
                }
                12 => f.dropped_events = varint(M, n, w)? as u32,
                13 => {
                    len(M, n, w)?;
                    f.links += 1;
                }
                14 => f.dropped_links = varint(M, n, w)? as u32,
                15 => {
                    let st = len(M, n, w)?;
                    let mut srd = Reader::new(buf, st);
                    while let Some((sn, _, sw)) = srd.field()? {
                        match sn {
                            2 => f.status_message = len("Status", sn, sw)?,
                            3 => f.status_code = varint("Status", sn, sw)? as i32,
                            _ => {}
                        }
                    }
                }
                16 => {
                    fixed32(M, n, &w)?;
                    if let Wire::I32(v) = w {
                        f.flags = v;
                    }
                }
                _ => {}
            }
        }
        f.attributes = attrs.unwrap_or(0..0);
        Ok(f)
    }

    /// The `name` range and `kind` of a `Span` body, walking only as far as they are (encoders
    /// write fields in order, so past the first six at most): the cheap read of span metrics
    /// and the service graph's first look.
    pub fn name_and_kind(buf: &[u8]) -> Result<(Range<usize>, i32), DecodeError> {
        const M: &str = "Span";
        let (mut name, mut kind) = (None, None);
        let mut rd = Reader::new(buf, 0..buf.len());
        while let Some((n, _, w)) = rd.field()? {
            match n {
                5 => name = Some(len(M, n, w)?),
                6 => kind = Some(varint(M, n, w)? as i32),
                _ => {}
            }
            if let (Some(name), Some(kind)) = (&name, kind) {
                return Ok((name.clone(), kind));
            }
        }
        Ok((name.unwrap_or(0..0), kind.unwrap_or(0)))
    }

    /// The text of a string field's range.
    pub fn text<'a>(buf: &'a [u8], r: &Range<usize>) -> Result<&'a str, DecodeError> {
        text(buf, r.clone(), "Span string field")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::put_varint;

    /// `KeyValue{key, value: AnyValue{field}}` with `field` raw.
    fn kv(key: &[u8], value: Option<&[u8]>) -> Vec<u8> {
        let mut b = vec![0x0A];
        push_len(&mut b, key);
        if let Some(v) = value {
            b.push(0x12);
            push_len(&mut b, v);
        }
        b
    }

    fn push_len(b: &mut Vec<u8>, x: &[u8]) {
        put_varint(b, x.len() as u64);
        b.extend_from_slice(x);
    }

    fn same(b: &[u8]) {
        let fast = Kv::read(b, 0..b.len());
        let walk = Kv::read_walk(b, 0..b.len());
        match (&fast, &walk) {
            (Ok(f), Ok(w)) => {
                assert_eq!(f.key, w.key, "{b:02x?}");
                // NaN is not equal to itself: compare the bits.
                match (f.value, w.value) {
                    (Some(Value::Double(x)), Some(Value::Double(y))) => {
                        assert_eq!(x.to_bits(), y.to_bits(), "{b:02x?}")
                    }
                    (x, y) => assert_eq!(x, y, "{b:02x?}"),
                }
            }
            (Err(f), Err(w)) => assert_eq!(f.to_string(), w.to_string(), "{b:02x?}"),
            _ => panic!("fast {fast:?}, walk {walk:?} on {b:02x?}"),
        }
    }

    #[test]
    fn the_common_shape_reads_as_the_general_walk_does() {
        let mut values: Vec<Option<Vec<u8>>> = vec![None, Some(vec![])];
        for s in [
            &b""[..],
            b"a",
            b"GET",
            &[b'x'; 127],
            &[b'y'; 128],
            "é".as_bytes(),
            b"\xff\xfe",
        ] {
            let mut v = vec![0x0A];
            push_len(&mut v, s);
            values.push(Some(v));
        }
        for x in [0u8, 1, 2, 0x7f, 0x80] {
            values.push(Some(vec![0x10, x]));
        }
        for n in [
            0u64,
            1,
            127,
            128,
            300,
            1 << 40,
            u64::MAX >> 1,
            u64::MAX,
            (-5i64) as u64,
        ] {
            let mut v = vec![0x18];
            put_varint(&mut v, n);
            values.push(Some(v));
        }
        values.push(Some(vec![0x18, 0x80])); // truncated varint
        values.push(Some(vec![0x18, 0x81, 0x80, 0x00])); // over-long but valid
        for d in [0.0f64, -1.5, f64::NAN, f64::INFINITY] {
            let mut v = vec![0x21];
            v.extend(d.to_le_bytes());
            values.push(Some(v));
        }
        values.push(Some(vec![0x21, 1, 2, 3])); // short double
        values.push(Some(vec![0x0A, 0x01, b'a', 0x10, 0x01])); // two fields: last wins
        for key in [
            &b""[..],
            b"http.method",
            &[b'k'; 127],
            &[b'k'; 200],
            "ключ".as_bytes(),
            b"\xc3",
        ] {
            for v in &values {
                same(&kv(key, v.as_deref()));
            }
        }
        // Bytes that are not a KeyValue at all, and truncations of valid ones.
        for b in [&[0x0Au8, 0x05, b'a'][..], &[0x12, 0x00], &[0xff], &[]] {
            same(b);
        }
        let whole = kv(b"service.name", Some(&[0x0A, 0x03, b'a', b'p', b'i']));
        for end in 0..whole.len() {
            same(&whole[..end]);
        }
    }
}
