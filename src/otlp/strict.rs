//! What a strict OTLP decoder would reject, checked on the way in without building messages.
//!
//! The scanner reads few fields of a span, but everything it accepts is later re-emitted byte for
//! byte (sampled topic, OTLP exporters) or fully decoded (Parquet). So every message the record
//! hands on — resource, scope, span and everything nested in them — is walked once here with the
//! OTLP schema: a known field must have its declared wire type, every `string` must be UTF-8,
//! nesting stays well inside `prost`'s recursion limit. Unknown fields are skipped, as `prost`
//! does. The rule, proven by a property test against `prost`: a record this accepts decodes with
//! the strict `opentelemetry-proto` types.

use std::ops::Range;

use super::{DecodeError, Reader, Wire, WT_I32, WT_I64, WT_LEN, WT_VARINT};

/// Nesting depth (counted from the request) past which a record is rejected. `prost` stops at
/// 100; the margin leaves room for readers that wrap the request in an envelope.
pub const MAX_DEPTH: u32 = 64;

/// The OTLP messages a span carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Msg {
    Span,
    Resource,
    Scope,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
    EntityRef,
    Event,
    Link,
    Status,
}

/// A field's declared type.
#[derive(Debug, Clone, Copy)]
enum Ty {
    Str(&'static str),
    Bytes,
    Varint,
    Fixed64,
    Fixed32,
    Nested(Msg),
}

#[inline(always)]
fn field_type(m: Msg, n: u32) -> Option<Ty> {
    use Msg::*;
    use Ty::*;
    Some(match (m, n) {
        (Span, 1 | 2 | 4) => Bytes,
        (Span, 3) => Str("Span.trace_state"),
        (Span, 5) => Str("Span.name"),
        (Span, 6 | 10 | 12 | 14) => Varint,
        (Span, 7 | 8) => Fixed64,
        (Span, 9) => Nested(KeyValue),
        (Span, 11) => Nested(Event),
        (Span, 13) => Nested(Link),
        (Span, 15) => Nested(Status),
        (Span, 16) => Fixed32,
        (Resource, 1) => Nested(KeyValue),
        (Resource, 2) => Varint,
        (Resource, 3) => Nested(EntityRef),
        (Scope, 1) => Str("InstrumentationScope.name"),
        (Scope, 2) => Str("InstrumentationScope.version"),
        (Scope, 3) => Nested(KeyValue),
        (Scope, 4) => Varint,
        (KeyValue, 1) => Str("KeyValue.key"),
        (KeyValue, 2) => Nested(AnyValue),
        (KeyValue, 3) => Varint, // key_strindex (profiles)
        (AnyValue, 1) => Str("AnyValue.string_value"),
        (AnyValue, 2 | 3) => Varint,
        (AnyValue, 4) => Fixed64,
        (AnyValue, 5) => Nested(ArrayValue),
        (AnyValue, 6) => Nested(KeyValueList),
        (AnyValue, 7) => Bytes,
        (AnyValue, 8) => Varint, // string_value_strindex (profiles)
        (ArrayValue, 1) => Nested(AnyValue),
        (KeyValueList, 1) => Nested(KeyValue),
        (EntityRef, 1) => Str("EntityRef.schema_url"),
        (EntityRef, 2) => Str("EntityRef.type"),
        (EntityRef, 3) => Str("EntityRef.id_keys"),
        (EntityRef, 4) => Str("EntityRef.description_keys"),
        (Event, 1) => Fixed64,
        (Event, 2) => Str("Span.Event.name"),
        (Event, 3) => Nested(KeyValue),
        (Event, 4) => Varint,
        (Link, 1 | 2) => Bytes,
        (Link, 3) => Str("Span.Link.trace_state"),
        (Link, 4) => Nested(KeyValue),
        (Link, 5) => Varint,
        (Link, 6) => Fixed32,
        (Status, 2) => Str("Status.message"),
        (Status, 3) => Varint,
        _ => return None,
    })
}

fn msg_name(m: Msg) -> &'static str {
    match m {
        Msg::Span => "Span",
        Msg::Resource => "Resource",
        Msg::Scope => "InstrumentationScope",
        Msg::KeyValue => "KeyValue",
        Msg::AnyValue => "AnyValue",
        Msg::ArrayValue => "ArrayValue",
        Msg::KeyValueList => "KeyValueList",
        Msg::EntityRef => "EntityRef",
        Msg::Event => "Span.Event",
        Msg::Link => "Span.Link",
        Msg::Status => "Status",
    }
}

/// UTF-8 check with the all-ASCII case (nearly every OTLP string) inline.
#[inline(always)]
fn is_utf8(b: &[u8]) -> bool {
    b.is_ascii() || std::str::from_utf8(b).is_ok()
}

/// Checks one `KeyValue` body at `depth` and returns the ranges of its key and value bodies
/// (empty when absent): the strict check and the attribute read in one walk.
#[inline]
pub(super) fn key_value(
    buf: &[u8],
    r: Range<usize>,
    depth: u32,
) -> Result<(Range<usize>, Range<usize>), DecodeError> {
    match key_value_common(buf, &r) {
        Some(kv) => Ok(kv),
        None => key_value_walk(buf, r, depth),
    }
}

/// The shape nearly every attribute has on the wire — `KeyValue{key: string, value:
/// AnyValue{one scalar}}` with one-byte tags and lengths, key first — checked without the
/// general reader: the key and value ranges when `buf[r]` is exactly that shape and valid, or
/// `None` to take the general walk (which also gives any error its precise reason).
#[inline(always)]
pub(super) fn key_value_common(
    buf: &[u8],
    r: &Range<usize>,
) -> Option<(Range<usize>, Range<usize>)> {
    let b = buf.get(r.clone())?;
    let (&[0x0A, kl], rest) = b.split_first_chunk::<2>()? else {
        return None;
    };
    let kl = usize::from(kl);
    if kl >= 0x80 || rest.len() < kl + 2 || rest[kl] != 0x12 {
        return None;
    }
    let (key, vl, v) = (&rest[..kl], usize::from(rest[kl + 1]), &rest[kl + 2..]);
    if vl >= 0x80 || v.len() != vl || !key.is_ascii() {
        return None;
    }
    let scalar = match v {
        [] => true,
        // string_value: one-byte length, the whole rest, ASCII (anything else: the general walk).
        [0x0A, sl, s @ ..] => usize::from(*sl) == s.len() && s.is_ascii(),
        // bool_value: a one-byte varint.
        [0x10, x] => *x < 0x80,
        // int_value: one varint of at most nine bytes (ten-byte ones — negative ints — go the
        // general way, which checks their last byte).
        [0x18, x @ ..] => {
            matches!(x.split_last(), Some((last, init)) if *last < 0x80 && init.len() < 9 && init.iter().all(|c| *c >= 0x80))
        }
        // double_value: eight bytes.
        [0x21, x @ ..] => x.len() == 8,
        _ => false,
    };
    if !scalar {
        return None;
    }
    let k = r.start + 2;
    Some((k..k + kl, k + kl + 2..r.end))
}

/// [`key_value`] through the general reader: any field order, repeats, unknown fields, nested
/// values, and the precise error.
fn key_value_walk(
    buf: &[u8],
    r: Range<usize>,
    depth: u32,
) -> Result<(Range<usize>, Range<usize>), DecodeError> {
    let mut rd = Reader::new(buf, r);
    let (mut key, mut value) = (0..0, 0..0);
    while let Some((n, _, w)) = rd.field()? {
        match (n, w) {
            (1, Wire::Len(k)) => {
                if !is_utf8(&buf[k.clone()]) {
                    return Err(DecodeError::Utf8 {
                        field: "KeyValue.key",
                    });
                }
                key = k;
            }
            (2, Wire::Len(v)) => {
                any_value(buf, v.clone(), depth + 1)?;
                value = v;
            }
            (n, w) => check_field(buf, Msg::KeyValue, n, &w, depth)?,
        }
    }
    Ok((key, value))
}

/// Checks an `AnyValue` body: a scalar (nearly every attribute) inline, arrays and lists
/// through the general walk.
#[inline(always)]
fn any_value(buf: &[u8], r: Range<usize>, depth: u32) -> Result<(), DecodeError> {
    let mut rd = Reader::new(buf, r.clone());
    let Some((n, _, w)) = rd.field()? else {
        return Ok(());
    };
    if rd.pos == rd.end {
        match (n, &w) {
            (1, Wire::Len(s)) => {
                return if is_utf8(&buf[s.clone()]) {
                    Ok(())
                } else {
                    Err(DecodeError::Utf8 {
                        field: "AnyValue.string_value",
                    })
                };
            }
            (2 | 3, Wire::Varint(_)) | (4, Wire::I64(_)) => return Ok(()),
            _ => {}
        }
    }
    check_message(buf, r, Msg::AnyValue, depth)
}

/// Checks one field of message `m` (`depth` is the message's own depth from the request).
#[inline(always)]
pub(super) fn check_field(
    buf: &[u8],
    m: Msg,
    n: u32,
    w: &Wire,
    depth: u32,
) -> Result<(), DecodeError> {
    let Some(ty) = field_type(m, n) else {
        return Ok(());
    };
    let wire_ok = matches!(
        (ty, w),
        (Ty::Str(_) | Ty::Bytes | Ty::Nested(_), Wire::Len(_))
            | (Ty::Varint, Wire::Varint(_))
            | (Ty::Fixed64, Wire::I64(_))
            | (Ty::Fixed32, Wire::I32(_))
    );
    if !wire_ok {
        return Err(DecodeError::WireType {
            message: msg_name(m),
            field: n,
            expected: match ty {
                Ty::Str(_) | Ty::Bytes | Ty::Nested(_) => WT_LEN,
                Ty::Varint => WT_VARINT,
                Ty::Fixed64 => WT_I64,
                Ty::Fixed32 => WT_I32,
            },
        });
    }
    match (ty, w) {
        (Ty::Str(field), Wire::Len(r)) if !is_utf8(&buf[r.clone()]) => {
            return Err(DecodeError::Utf8 { field });
        }
        (Ty::Nested(inner), Wire::Len(r)) => check_message(buf, r.clone(), inner, depth + 1)?,
        _ => {}
    }
    Ok(())
}

/// Checks a whole message body of type `m` at `depth`.
pub(super) fn check_message(
    buf: &[u8],
    r: Range<usize>,
    m: Msg,
    depth: u32,
) -> Result<(), DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep { limit: MAX_DEPTH });
    }
    let mut rd = Reader::new(buf, r);
    while let Some((n, _, w)) = rd.field()? {
        check_field(buf, m, n, &w, depth)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::put_varint;

    fn len_field(out: &mut Vec<u8>, n: u64, body: &[u8]) {
        put_varint(out, (n << 3) | 2);
        put_varint(out, body.len() as u64);
        out.extend_from_slice(body);
    }

    #[test]
    fn strings_must_be_utf8_and_types_must_match() {
        let mut span = Vec::new();
        len_field(&mut span, 5, b"ok");
        assert!(check_message(&span, 0..span.len(), Msg::Span, 3).is_ok());
        let mut bad = Vec::new();
        len_field(&mut bad, 5, &[0xff, 0xfe]);
        assert_eq!(
            check_message(&bad, 0..bad.len(), Msg::Span, 3),
            Err(DecodeError::Utf8 { field: "Span.name" })
        );
        // start_time_unix_nano (fixed64) sent as a varint.
        let mut mistyped = Vec::new();
        put_varint(&mut mistyped, 7 << 3);
        put_varint(&mut mistyped, 5);
        assert!(matches!(
            check_message(&mistyped, 0..mistyped.len(), Msg::Span, 3),
            Err(DecodeError::WireType { field: 7, .. })
        ));
        // Unknown fields pass, as in prost.
        let mut unknown = Vec::new();
        put_varint(&mut unknown, 99 << 3);
        put_varint(&mut unknown, 1);
        assert!(check_message(&unknown, 0..unknown.len(), Msg::Span, 3).is_ok());
    }

    /// Every shape the fast path takes, the general walk accepts with the same ranges: the
    /// edges of each scalar (lengths 0/127/128, one- to ten-byte varints, non-ASCII strings,
    /// a truncated double, value before key, a repeated key) and random bytes.
    #[test]
    fn the_common_shape_agrees_with_the_general_walk() {
        let varint = |v: u64| {
            let mut o = Vec::new();
            put_varint(&mut o, v);
            o
        };
        let mut values: Vec<Vec<u8>> = vec![Vec::new()];
        for s in [
            &b""[..],
            b"GET",
            &[b'x'; 125],
            &[b'x'; 126],
            "caf\u{e9}".as_bytes(),
            &[0xff],
        ] {
            let mut any = Vec::new();
            len_field(&mut any, 1, s);
            values.push(any);
        }
        for v in [
            0u64,
            1,
            127,
            128,
            1 << 35,
            1 << 62,
            u64::MAX,
            (-5i64) as u64,
        ] {
            for tag in [0x10u8, 0x18] {
                let mut any = vec![tag];
                any.extend(varint(v));
                values.push(any);
            }
        }
        values.push([&[0x21u8][..], &1.5f64.to_le_bytes()].concat());
        values.push([&[0x21u8][..], &[0u8; 7]].concat());
        // A bytes_value, then a truncated varint.
        values.push(vec![0x3A, 1, 0xff]);
        values.push(vec![0x18, 0x80, 0x80]);
        // Ten-byte varints: a last byte past 1 overflows 64 bits; eleven bytes are too long.
        values.push([&[0x18u8][..], &[0xff; 9], &[0x02]].concat());
        values.push([&[0x18u8][..], &[0xff; 10], &[0x01]].concat());
        let mut cases = Vec::new();
        for key in [
            &b""[..],
            b"http.route",
            &[b'k'; 127],
            &[b'k'; 128],
            &[0xc3, 0xa9],
            &[0xff],
        ] {
            for v in &values {
                let mut kv = Vec::new();
                len_field(&mut kv, 1, key);
                len_field(&mut kv, 2, v);
                cases.push(kv.clone());
                let mut swapped = Vec::new();
                len_field(&mut swapped, 2, v);
                len_field(&mut swapped, 1, key);
                cases.push(swapped);
                kv.extend_from_slice(&kv.clone());
                cases.push(kv);
            }
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut c = vec![0x0A, 3, b'a', b'b', b'c', 0x12, 0];
            let n = (seed % 12) as usize;
            for _ in 0..n {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                c.push((seed >> 24) as u8);
            }
            c[6] = n as u8;
            cases.push(c);
        }
        let mut fast = 0;
        for c in &cases {
            // Inside a larger buffer, so positions are absolute.
            let buf = [&[0xEEu8; 3][..], c, &[0xEE; 2]].concat();
            let r = 3..3 + c.len();
            if let Some(kv) = key_value_common(&buf, &r) {
                fast += 1;
                assert_eq!(key_value_walk(&buf, r.clone(), 5), Ok(kv), "{c:02x?}");
            }
            assert_eq!(
                key_value(&buf, r.clone(), 5),
                key_value_walk(&buf, r, 5),
                "{c:02x?}"
            );
        }
        assert!(fast > 100, "the fast path took only {fast} cases");
    }

    #[test]
    fn nesting_is_bounded() {
        // AnyValue{array{AnyValue{array{...}}}} 200 levels deep.
        let mut v: Vec<u8> = Vec::new();
        for _ in 0..100 {
            let mut arr = Vec::new();
            len_field(&mut arr, 1, &v);
            let mut any = Vec::new();
            len_field(&mut any, 5, &arr);
            v = any;
        }
        assert_eq!(
            check_message(&v, 0..v.len(), Msg::AnyValue, 5),
            Err(DecodeError::TooDeep { limit: MAX_DEPTH })
        );
    }
}
