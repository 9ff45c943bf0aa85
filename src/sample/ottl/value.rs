//! OTTL values and the rules that combine them: comparison (never an error: a mismatch is
//! "not equal"), arithmetic (numbers, times and durations), and the conversions converters
//! apply (string-like, int-like, float-like, bool-like, bytes-like).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt::Write as _;

use crate::otlp::fields::{AnyRef, ArrayRef, KvListRef};

use super::parse::{CmpOp, MathOp};

/// Why an evaluation failed (a runtime error of a condition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalError(pub Cow<'static, str>);

impl EvalError {
    pub(crate) fn new(msg: impl Into<Cow<'static, str>>) -> EvalError {
        EvalError(msg.into())
    }
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) type Res<T> = Result<T, EvalError>;

/// A map: attributes read where they lie, or built by a literal.
#[derive(Debug, Clone)]
pub enum MapVal<'a> {
    /// `KeyValue`s in the record.
    Raw(KvListRef<'a>),
    /// A map literal.
    Owned(Vec<(Cow<'a, str>, Val<'a>)>),
}

/// A list: an array value in the record, or built (a literal, `Split`).
#[derive(Debug, Clone)]
pub enum ListVal<'a> {
    /// An `ArrayValue` in the record.
    Raw(ArrayRef<'a>),
    /// Built at evaluation.
    Owned(Vec<Val<'a>>),
    /// Strings (the result of `Split`: a list of a type of its own, compared only as such).
    Strings(Vec<Cow<'a, str>>),
}

/// One OTTL value.
#[derive(Debug, Clone)]
pub enum Val<'a> {
    /// Nothing (a missing attribute, `nil`).
    Nil,
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer (also enums).
    Int(i64),
    /// A double.
    Float(f64),
    /// A string.
    Str(Cow<'a, str>),
    /// Bytes.
    Bytes(Cow<'a, [u8]>),
    /// A map.
    Map(MapVal<'a>),
    /// A list.
    List(ListVal<'a>),
    /// A trace id (a type of its own: equal only to another trace id).
    TraceId([u8; 16]),
    /// A span id.
    SpanId([u8; 8]),
    /// A point in time, Unix ns.
    Time(i64),
    /// A duration, ns.
    Duration(i64),
    /// A span's events or links (only their number is of use).
    Items(usize),
}

impl<'a> Val<'a> {
    /// The value of an attribute as read from the record (an empty value is nil).
    pub fn from_any(v: AnyRef<'a>) -> Val<'a> {
        match v {
            AnyRef::Empty => Val::Nil,
            AnyRef::Str(s) => Val::Str(Cow::Borrowed(s)),
            AnyRef::Bool(b) => Val::Bool(b),
            AnyRef::Int(i) => Val::Int(i),
            AnyRef::Double(d) => Val::Float(d),
            AnyRef::Bytes(b) => Val::Bytes(Cow::Borrowed(b)),
            AnyRef::Array(a) => Val::List(ListVal::Raw(a)),
            AnyRef::Map(m) => Val::Map(MapVal::Raw(m)),
        }
    }

    /// The type's name, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Val::Nil => "nil",
            Val::Bool(_) => "bool",
            Val::Int(_) => "int",
            Val::Float(_) => "double",
            Val::Str(_) => "string",
            Val::Bytes(_) => "bytes",
            Val::Map(_) => "map",
            Val::List(_) => "list",
            Val::TraceId(_) => "trace id",
            Val::SpanId(_) => "span id",
            Val::Time(_) => "time",
            Val::Duration(_) => "duration",
            Val::Items(_) => "span events or links",
        }
    }

    /// A borrowed copy (cheap: strings and bytes are borrowed).
    pub fn by_ref(&self) -> Val<'_> {
        match self {
            Val::Str(s) => Val::Str(Cow::Borrowed(s)),
            Val::Bytes(b) => Val::Bytes(Cow::Borrowed(b)),
            Val::Map(MapVal::Owned(m)) => Val::Map(MapVal::Owned(
                m.iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_ref()), v.by_ref()))
                    .collect(),
            )),
            Val::Map(MapVal::Raw(m)) => Val::Map(MapVal::Raw(*m)),
            Val::List(ListVal::Owned(l)) => {
                Val::List(ListVal::Owned(l.iter().map(Val::by_ref).collect()))
            }
            Val::List(ListVal::Strings(l)) => Val::List(ListVal::Strings(
                l.iter().map(|s| Cow::Borrowed(s.as_ref())).collect(),
            )),
            Val::List(ListVal::Raw(a)) => Val::List(ListVal::Raw(*a)),
            Val::Nil => Val::Nil,
            Val::Bool(b) => Val::Bool(*b),
            Val::Int(i) => Val::Int(*i),
            Val::Float(f) => Val::Float(*f),
            Val::TraceId(t) => Val::TraceId(*t),
            Val::SpanId(s) => Val::SpanId(*s),
            Val::Time(t) => Val::Time(*t),
            Val::Duration(d) => Val::Duration(*d),
            Val::Items(n) => Val::Items(*n),
        }
    }
}

fn wire(e: crate::otlp::DecodeError) -> EvalError {
    EvalError::new(format!("the span's bytes do not read: {e}"))
}

impl<'a> MapVal<'a> {
    /// The value at `key` (nil when absent).
    pub fn get(&self, key: &str) -> Res<Option<Val<'a>>> {
        match self {
            MapVal::Raw(m) => Ok(m.get(key).map_err(wire)?.map(Val::from_any)),
            MapVal::Owned(m) => Ok(m.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())),
        }
    }

    /// Number of entries.
    pub fn len(&self) -> Res<usize> {
        match self {
            MapVal::Raw(m) => m.len().map_err(wire),
            MapVal::Owned(m) => Ok(m.len()),
        }
    }

    /// True when the map has no entries.
    pub fn is_empty(&self) -> Res<bool> {
        Ok(self.len()? == 0)
    }

    /// Entries (for equality and printing).
    pub fn entries(&self) -> Res<Vec<(Cow<'a, str>, Val<'a>)>> {
        match self {
            MapVal::Raw(m) => m
                .iter()
                .map(|kv| {
                    kv.map(|(k, v)| (Cow::Borrowed(k), Val::from_any(v)))
                        .map_err(wire)
                })
                .collect(),
            MapVal::Owned(m) => Ok(m.clone()),
        }
    }
}

impl<'a> ListVal<'a> {
    /// Element `i` (None past the end).
    pub fn get(&self, i: usize) -> Res<Option<Val<'a>>> {
        match self {
            ListVal::Raw(a) => Ok(a.get(i).map_err(wire)?.map(Val::from_any)),
            ListVal::Owned(l) => Ok(l.get(i).cloned()),
            ListVal::Strings(l) => Ok(l.get(i).map(|s| Val::Str(s.clone()))),
        }
    }

    /// True when the list has no elements.
    pub fn is_empty(&self) -> Res<bool> {
        Ok(self.len()? == 0)
    }

    /// Number of elements.
    pub fn len(&self) -> Res<usize> {
        match self {
            ListVal::Raw(a) => a.len().map_err(wire),
            ListVal::Owned(l) => Ok(l.len()),
            ListVal::Strings(l) => Ok(l.len()),
        }
    }

    /// The elements.
    pub fn items(&self) -> Res<Vec<Val<'a>>> {
        match self {
            ListVal::Raw(a) => a
                .iter()
                .map(|v| v.map(Val::from_any).map_err(wire))
                .collect(),
            ListVal::Owned(l) => Ok(l.clone()),
            ListVal::Strings(l) => Ok(l.iter().map(|s| Val::Str(s.clone())).collect()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------------------------

fn ordered(o: Option<Ordering>, op: CmpOp) -> bool {
    match o {
        // Not comparable (NaN): only `!=` holds.
        None => op == CmpOp::Ne,
        Some(o) => match op {
            CmpOp::Eq => o == Ordering::Equal,
            CmpOp::Ne => o != Ordering::Equal,
            CmpOp::Lt => o == Ordering::Less,
            CmpOp::Le => o != Ordering::Greater,
            CmpOp::Gt => o == Ordering::Greater,
            CmpOp::Ge => o != Ordering::Less,
        },
    }
}

/// Values of different kinds: only `!=` holds.
fn mismatch(op: CmpOp) -> bool {
    op == CmpOp::Ne
}

/// Equality only (maps, lists, ids): ordering operators are false.
fn equality(eq: bool, op: CmpOp) -> bool {
    match op {
        CmpOp::Eq => eq,
        CmpOp::Ne => !eq,
        _ => false,
    }
}

/// `a op b` by OTTL's rules: nil equals only nil; numbers compare across int and double;
/// strings, bytes, bools, times and durations among their own kind; maps and lists only for
/// equality; any other pair is "not equal". Never an error (a map or list that does not read
/// compares as not equal).
pub fn compare(a: &Val<'_>, b: &Val<'_>, op: CmpOp) -> bool {
    use Val::*;
    match (a, b) {
        (Nil, Nil) => matches!(op, CmpOp::Eq | CmpOp::Le | CmpOp::Ge),
        (Nil, _) | (_, Nil) => op == CmpOp::Ne,
        (Bool(x), Bool(y)) => ordered(Some(x.cmp(y)), op),
        (Int(x), Int(y)) => ordered(Some(x.cmp(y)), op),
        (Int(x), Float(y)) => ordered((*x as f64).partial_cmp(y), op),
        (Float(x), Int(y)) => ordered(x.partial_cmp(&(*y as f64)), op),
        (Float(x), Float(y)) => ordered(x.partial_cmp(y), op),
        (Str(x), Str(y)) => ordered(Some(x.as_bytes().cmp(y.as_bytes())), op),
        (Bytes(x), Bytes(y)) => ordered(Some(x.as_ref().cmp(y.as_ref())), op),
        (Time(x), Time(y)) | (Duration(x), Duration(y)) => ordered(Some(x.cmp(y)), op),
        (TraceId(x), TraceId(y)) => equality(x == y, op),
        (SpanId(x), SpanId(y)) => equality(x == y, op),
        (Map(x), Map(y)) => equality(map_eq(x, y).unwrap_or(false), op),
        (List(ListVal::Strings(x)), List(ListVal::Strings(y))) => equality(x == y, op),
        (List(ListVal::Strings(_)), List(_)) | (List(_), List(ListVal::Strings(_))) => mismatch(op),
        (List(x), List(y)) => equality(list_eq(x, y).unwrap_or(false), op),
        _ => mismatch(op),
    }
}

/// Deep equality as maps and lists hold values (an int equals only an int here, as raw
/// values compare in Go).
fn deep_eq(a: &Val<'_>, b: &Val<'_>) -> Res<bool> {
    use Val::*;
    Ok(match (a, b) {
        (Nil, Nil) => true,
        (Bool(x), Bool(y)) => x == y,
        (Int(x), Int(y)) => x == y,
        (Float(x), Float(y)) => x == y,
        (Str(x), Str(y)) => x == y,
        (Bytes(x), Bytes(y)) => x == y,
        (Map(x), Map(y)) => map_eq(x, y)?,
        (List(x), List(y)) => list_eq(x, y)?,
        _ => false,
    })
}

fn map_eq(a: &MapVal<'_>, b: &MapVal<'_>) -> Res<bool> {
    let (a, b) = (a.entries()?, b.entries()?);
    if a.len() != b.len() {
        return Ok(false);
    }
    for (k, v) in &a {
        match b.iter().find(|(bk, _)| bk == k) {
            Some((_, w)) if deep_eq(v, w)? => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

fn list_eq(a: &ListVal<'_>, b: &ListVal<'_>) -> Res<bool> {
    let (a, b) = (a.items()?, b.items()?);
    if a.len() != b.len() {
        return Ok(false);
    }
    for (x, y) in a.iter().zip(&b) {
        if !deep_eq(x, y)? {
            return Ok(false);
        }
    }
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// Arithmetic
// ---------------------------------------------------------------------------------------------

fn int_op(x: i64, y: i64, op: MathOp) -> Res<i64> {
    Ok(match op {
        MathOp::Add => x.wrapping_add(y),
        MathOp::Sub => x.wrapping_sub(y),
        MathOp::Mul => x.wrapping_mul(y),
        MathOp::Div => {
            if y == 0 {
                return Err(EvalError::new("attempted to divide by 0"));
            }
            x.wrapping_div(y)
        }
    })
}

fn float_op(x: f64, y: f64, op: MathOp) -> Res<f64> {
    Ok(match op {
        MathOp::Add => x + y,
        MathOp::Sub => x - y,
        MathOp::Mul => x * y,
        MathOp::Div => {
            if y == 0.0 {
                return Err(EvalError::new("attempted to divide by 0"));
            }
            x / y
        }
    })
}

/// `a op b`: ints stay ints (wrapping), an int with a double is a double; times and durations
/// add and subtract as Go's `time` does; anything else is an error.
pub fn math<'a>(a: &Val<'a>, op: MathOp, b: &Val<'a>) -> Res<Val<'a>> {
    use Val::*;
    let bad = || {
        EvalError::new(format!(
            "cannot compute {} {} {}: arithmetic works on ints, doubles, times and durations",
            a.type_name(),
            match op {
                MathOp::Add => '+',
                MathOp::Sub => '-',
                MathOp::Mul => '*',
                MathOp::Div => '/',
            },
            b.type_name()
        ))
    };
    Ok(match (a, b) {
        (Int(x), Int(y)) => Int(int_op(*x, *y, op)?),
        (Int(x), Float(y)) => Float(float_op(*x as f64, *y, op)?),
        (Float(x), Int(y)) => Float(float_op(*x, *y as f64, op)?),
        (Float(x), Float(y)) => Float(float_op(*x, *y, op)?),
        (Time(t), Duration(d)) => match op {
            MathOp::Add => Time(t.wrapping_add(*d)),
            MathOp::Sub => Time(t.wrapping_sub(*d)),
            _ => return Err(bad()),
        },
        (Time(x), Time(y)) if op == MathOp::Sub => Duration(x.wrapping_sub(*y)),
        (Duration(x), Duration(y)) => match op {
            MathOp::Add => Duration(x.wrapping_add(*y)),
            MathOp::Sub => Duration(x.wrapping_sub(*y)),
            _ => return Err(bad()),
        },
        (Duration(d), Time(t)) if op == MathOp::Add => Time(t.wrapping_add(*d)),
        _ => return Err(bad()),
    })
}

// ---------------------------------------------------------------------------------------------
// Conversions (the converters' argument kinds)
// ---------------------------------------------------------------------------------------------

/// A double as Go's JSON encoder writes it (`55.0` → `55`, `2.7` → `2.7`, `1e-7`, `1e+21`).
pub fn float_text(f: f64, out: &mut String) {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let e = format!("{f:e}");
        match e.split_once('e') {
            Some((m, exp)) if !exp.starts_with('-') => {
                let _ = write!(out, "{m}e+{exp}");
            }
            _ => out.push_str(&e),
        }
    } else if f == f.trunc() {
        let _ = write!(out, "{}", f as i128);
    } else {
        let _ = write!(out, "{f}");
    }
}

fn json_string(s: &str, out: &mut String) {
    out.push_str(&serde_json::Value::String(s.to_string()).to_string());
}

/// A value as JSON (maps with sorted keys, bytes as base64 as Go's encoder does).
pub fn json(v: &Val<'_>, out: &mut String) -> Res<()> {
    match v {
        Val::Nil => out.push_str("null"),
        Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Val::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Val::Float(f) => {
            if !f.is_finite() {
                return Err(EvalError::new("a NaN or infinite double has no JSON form"));
            }
            float_text(*f, out)
        }
        Val::Str(s) => json_string(s, out),
        Val::Bytes(b) => {
            use base64::Engine as _;
            json_string(&base64::engine::general_purpose::STANDARD.encode(b), out)
        }
        Val::Map(m) => {
            let mut e = m.entries()?;
            e.sort_by(|a, b| a.0.cmp(&b.0));
            out.push('{');
            for (i, (k, v)) in e.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(k, out);
                out.push(':');
                json(v, out)?;
            }
            out.push('}');
        }
        Val::List(l) => {
            out.push('[');
            for (i, v) in l.items()?.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json(v, out)?;
            }
            out.push(']');
        }
        Val::TraceId(t) => json_string(&hex::encode(t), out),
        Val::SpanId(s) => json_string(&hex::encode(s), out),
        Val::Time(_) | Val::Duration(_) | Val::Items(_) => {
            return Err(EvalError::new(format!(
                "a {} cannot be made a string",
                v.type_name()
            )))
        }
    }
    Ok(())
}

/// A string-like argument: strings as they are, bytes as lower-case hex, maps and lists as
/// JSON, numbers and bools as JSON; nil stays nil.
pub fn string_like<'v>(v: &Val<'v>) -> Res<Option<Cow<'v, str>>> {
    Ok(Some(match v {
        Val::Nil => return Ok(None),
        Val::Str(s) => s.clone(),
        Val::Bytes(b) => Cow::Owned(hex::encode(b)),
        Val::Float(f) => {
            let mut s = String::new();
            float_text(*f, &mut s);
            Cow::Owned(s)
        }
        other => {
            let mut s = String::new();
            json(other, &mut s)?;
            Cow::Owned(s)
        }
    }))
}

fn type_error(want: &str, v: &Val<'_>) -> EvalError {
    EvalError::new(format!("expected {want} but got {}", v.type_name()))
}

/// A strict string argument (nil or another type is an error).
pub fn string<'v>(v: &Val<'v>) -> Res<Cow<'v, str>> {
    match v {
        Val::Str(s) => Ok(s.clone()),
        other => Err(type_error("a string", other)),
    }
}

/// A strict int argument.
pub fn int(v: &Val<'_>) -> Res<i64> {
    match v {
        Val::Int(i) => Ok(*i),
        other => Err(type_error("an int", other)),
    }
}

/// `Int(x)`: ints, doubles (truncated), bools (1/0), decimal strings (else nil); nil is nil.
pub fn int_like(v: &Val<'_>) -> Res<Option<i64>> {
    Ok(match v {
        Val::Nil => None,
        Val::Int(i) => Some(*i),
        Val::Float(f) => Some(*f as i64),
        Val::Bool(b) => Some(i64::from(*b)),
        Val::Str(s) => s.parse::<i64>().ok(),
        other => return Err(type_error("an int-like value", other)),
    })
}

/// `Double(x)`: doubles, ints, bools (1/0), strings that parse (else an error); nil is nil.
pub fn float_like(v: &Val<'_>) -> Res<Option<f64>> {
    Ok(match v {
        Val::Nil => None,
        Val::Float(f) => Some(*f),
        Val::Int(i) => Some(*i as f64),
        Val::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Val::Str(s) => {
            let bad = || EvalError::new(format!("{s:?} is not a number"));
            let f = s.parse::<f64>().map_err(|_| bad())?;
            // Go's ParseFloat refuses what overflows; it reads "Inf" and "NaN" as Rust does.
            if f.is_infinite() && !s.to_ascii_lowercase().contains("inf") {
                return Err(bad());
            }
            Some(f)
        }
        other => return Err(type_error("a double-like value", other)),
    })
}

/// `Bool(x)`: bools, non-zero numbers, and Go's boolean spellings; nil is nil.
pub fn bool_like(v: &Val<'_>) -> Res<Option<bool>> {
    Ok(match v {
        Val::Nil => None,
        Val::Bool(b) => Some(*b),
        Val::Int(i) => Some(*i != 0),
        Val::Float(f) => Some(*f != 0.0),
        Val::Str(s) => Some(match s.as_ref() {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
            "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
            other => return Err(EvalError::new(format!("{other:?} is not a boolean"))),
        }),
        other => return Err(type_error("a bool-like value", other)),
    })
}

/// Bytes-like: bytes, strings (UTF-8), ints and doubles (8 bytes big-endian), bools (1 byte).
pub fn bytes_like<'v>(v: &Val<'v>) -> Res<Option<Cow<'v, [u8]>>> {
    Ok(Some(match v {
        Val::Nil => return Ok(None),
        Val::Bytes(b) => b.clone(),
        Val::Str(Cow::Borrowed(s)) => Cow::Borrowed(s.as_bytes()),
        Val::Str(Cow::Owned(s)) => Cow::Owned(s.clone().into_bytes()),
        Val::Int(i) => Cow::Owned(i.to_be_bytes().to_vec()),
        Val::Float(f) => Cow::Owned(f.to_bits().to_be_bytes().to_vec()),
        Val::Bool(b) => Cow::Owned(vec![u8::from(*b)]),
        Val::TraceId(t) => Cow::Owned(t.to_vec()),
        Val::SpanId(s) => Cow::Owned(s.to_vec()),
        other => return Err(type_error("bytes", other)),
    }))
}

/// Parses a Go duration (`300ms`, `1.5h`, `-2m`, `1h2m3s`; units ns, us, µs, ms, s, m, h).
pub fn parse_go_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += num * scale;
    }
    if total > i64::MAX as f64 {
        return None;
    }
    let ns = total.round() as i64;
    Some(if neg { -ns } else { ns })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1s"), Some(1_000_000_000));
        assert_eq!(parse_go_duration("1.5h"), Some(5_400_000_000_000));
        assert_eq!(parse_go_duration("-2m"), Some(-120_000_000_000));
        assert_eq!(parse_go_duration("1h2m3s"), Some(3_723_000_000_000));
        assert_eq!(parse_go_duration("300ms"), Some(300_000_000));
        assert_eq!(parse_go_duration("0"), Some(0));
        assert_eq!(parse_go_duration("1d"), None);
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn floats_as_go_json() {
        let f = |x| {
            let mut s = String::new();
            float_text(x, &mut s);
            s
        };
        assert_eq!(f(55.0), "55");
        assert_eq!(f(2.7), "2.7");
        assert_eq!(f(-0.5), "-0.5");
        assert_eq!(f(1e-7), "1e-7");
        assert_eq!(f(1e21), "1e+21");
        assert_eq!(f(1.5e300), "1.5e+300");
        assert_eq!(f(123456.0), "123456");
    }
}
