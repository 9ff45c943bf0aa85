//! Evaluating a compiled condition on one span (or one span event) read where it lies: each
//! path reads its field from the span's bytes the first time it is asked for (the span's
//! singular fields in one walk, an attribute by walking the attributes), comparisons borrow
//! what they compare, and `and` / `or` stop as soon as the answer is known.

use std::borrow::Cow;
use std::cell::OnceCell;

use crate::otlp::fields::{
    field_text, EventFields, KvListRef, ResourceFields, ScopeFields, SpanRanges,
};
use crate::otlp::{enum_name, SpanInput, SPAN_KIND_NAMES, SPAN_KIND_TITLES};

use super::compile::{Call, Case, Cond, Field, Func, Lit, Value};
use super::parse::{CmpOp, Key};
use super::value::{
    bool_like, bytes_like, compare, float_like, int, int_like, math, string, string_like,
    EvalError, ListVal, MapVal, Res, Val,
};

fn wire(e: crate::otlp::DecodeError) -> EvalError {
    EvalError::new(format!("the span's bytes do not read: {e}"))
}

/// What a condition reads: one span with its resource and scope, and for a span-event
/// condition one of its events. Fields are read on first use.
pub struct Cx<'a> {
    input: SpanInput<'a>,
    event: &'a [u8],
    span: OnceCell<Result<SpanRanges, EvalError>>,
    scope: OnceCell<Result<ScopeFields<'a>, EvalError>>,
    resource: OnceCell<Result<ResourceFields<'a>, EvalError>>,
    ev: OnceCell<Result<EventFields<'a>, EvalError>>,
}

impl<'a> Cx<'a> {
    /// The context of a span condition.
    pub fn span(input: SpanInput<'a>) -> Cx<'a> {
        Cx {
            input,
            event: &[],
            span: OnceCell::new(),
            scope: OnceCell::new(),
            resource: OnceCell::new(),
            ev: OnceCell::new(),
        }
    }

    /// The context of a span-event condition on the event whose body is `event`.
    pub fn event(input: SpanInput<'a>, event: &'a [u8]) -> Cx<'a> {
        Cx {
            event,
            ..Cx::span(input)
        }
    }

    /// The span's singular fields.
    pub fn fields(&self) -> Res<&SpanRanges> {
        self.span
            .get_or_init(|| SpanRanges::read(self.input.span).map_err(wire))
            .as_ref()
            .map_err(Clone::clone)
    }

    fn bytes(&self, r: &std::ops::Range<usize>) -> &'a [u8] {
        &self.input.span[r.clone()]
    }

    fn text(&self, r: &std::ops::Range<usize>) -> Res<&'a str> {
        SpanRanges::text(self.input.span, r).map_err(wire)
    }

    fn scope(&self) -> Res<&ScopeFields<'a>> {
        self.scope
            .get_or_init(|| ScopeFields::read(self.input.scope).map_err(wire))
            .as_ref()
            .map_err(Clone::clone)
    }

    fn resource(&self) -> Res<&ResourceFields<'a>> {
        self.resource
            .get_or_init(|| ResourceFields::read(self.input.resource).map_err(wire))
            .as_ref()
            .map_err(Clone::clone)
    }

    fn ev(&self) -> Res<&EventFields<'a>> {
        self.ev
            .get_or_init(|| EventFields::of(self.event).map_err(wire))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The span's event bodies.
    pub fn events(
        &self,
    ) -> Res<impl Iterator<Item = Result<&'a [u8], crate::otlp::DecodeError>> + 'a> {
        let n = self.fields()?.events;
        Ok(crate::otlp::fields::event_bodies(self.input.span, n > 0))
    }

    fn field(&self, f: &Field) -> Res<Val<'a>> {
        let s = |v: &'a str| Val::Str(Cow::Borrowed(v));
        Ok(match f {
            Field::Name => s(self.text(&self.fields()?.name)?),
            Field::Kind => Val::Int(i64::from(match self.input.known {
                Some(k) => k.kind,
                None => self.fields()?.kind,
            })),
            Field::KindString => s(kind_string(self.fields()?.kind)),
            Field::KindDeprecatedString => s(kind_deprecated(self.fields()?.kind)),
            Field::StatusCode => Val::Int(i64::from(match self.input.known {
                Some(k) => k.status_code,
                None => self.fields()?.status_code,
            })),
            Field::StatusMessage => s(self.text(&self.fields()?.status_message)?),
            // Without the span's ranges at hand, the lookup walks the whole span (one walk
            // either way).
            Field::Attributes => Val::Map(MapVal::Raw(match self.span.get() {
                Some(Ok(f)) => KvListRef::new(&self.input.span[f.attributes.clone()], 9),
                _ => KvListRef::new(self.input.span, 9),
            })),
            Field::TraceId => Val::TraceId(id(self.bytes(&self.fields()?.trace_id))),
            Field::TraceIdString => Val::Str(Cow::Owned(hex::encode(id::<16>(
                self.bytes(&self.fields()?.trace_id),
            )))),
            Field::SpanId => Val::SpanId(id(self.bytes(&self.fields()?.span_id))),
            Field::SpanIdString => Val::Str(Cow::Owned(hex::encode(id::<8>(
                self.bytes(&self.fields()?.span_id),
            )))),
            Field::ParentSpanId => Val::SpanId(id(self.bytes(&self.fields()?.parent_span_id))),
            Field::ParentSpanIdString => Val::Str(Cow::Owned(hex::encode(id::<8>(
                self.bytes(&self.fields()?.parent_span_id),
            )))),
            Field::TraceState => s(self.text(&self.fields()?.trace_state)?),
            Field::TraceStateKey(k) => {
                s(trace_state_get(self.text(&self.fields()?.trace_state)?, k))
            }
            Field::StartNanos => Val::Int(self.fields()?.start_ns as i64),
            Field::EndNanos => Val::Int(self.fields()?.end_ns as i64),
            Field::StartTime => Val::Time(self.fields()?.start_ns as i64),
            Field::EndTime => Val::Time(self.fields()?.end_ns as i64),
            Field::DroppedAttributes => Val::Int(i64::from(self.fields()?.dropped_attributes)),
            Field::Events => Val::Items(self.fields()?.events as usize),
            Field::DroppedEvents => Val::Int(i64::from(self.fields()?.dropped_events)),
            Field::Links => Val::Items(self.fields()?.links as usize),
            Field::DroppedLinks => Val::Int(i64::from(self.fields()?.dropped_links)),
            Field::Cache => Val::Map(MapVal::Raw(KvListRef::empty())),
            Field::ResourceAttributes => {
                Val::Map(MapVal::Raw(KvListRef::new(self.input.resource, 1)))
            }
            Field::ResourceDropped => Val::Int(i64::from(self.resource()?.dropped_attributes)),
            Field::ResourceSchemaUrl => {
                s(field_text(self.input.resource_schema_field).map_err(wire)?)
            }
            Field::ScopeName => s(self.scope()?.name),
            Field::ScopeVersion => s(self.scope()?.version),
            Field::ScopeAttributes => Val::Map(MapVal::Raw(
                self.scope()?.attributes.unwrap_or(KvListRef::empty()),
            )),
            Field::ScopeDropped => Val::Int(i64::from(self.scope()?.dropped_attributes)),
            Field::ScopeSchemaUrl => s(field_text(self.input.scope_schema_field).map_err(wire)?),
            Field::EventName => s(self.ev()?.name),
            Field::EventNanos => Val::Int(self.ev()?.time_ns as i64),
            Field::EventTime => Val::Time(self.ev()?.time_ns as i64),
            Field::EventAttributes => Val::Map(MapVal::Raw(self.ev()?.attribute_map())),
            Field::EventDropped => Val::Int(i64::from(self.ev()?.dropped_attributes)),
            Field::EventIndex => {
                return Err(EvalError::new(
                    "event_index is not set when a tail-sampling policy reads events",
                ))
            }
        })
    }
}

/// An id of `N` bytes (all zero when absent or of another length).
fn id<const N: usize>(b: &[u8]) -> [u8; N] {
    b.try_into().unwrap_or([0; N])
}

fn kind_string(k: i32) -> &'static str {
    enum_name(&SPAN_KIND_TITLES, k).unwrap_or("")
}

fn kind_deprecated(k: i32) -> &'static str {
    enum_name(&SPAN_KIND_NAMES, k).unwrap_or("")
}

/// The value of `key` in a W3C tracestate ("" when absent).
fn trace_state_get<'s>(ts: &'s str, key: &str) -> &'s str {
    ts.split(',')
        .filter_map(|m| m.trim().split_once('='))
        .find(|(k, _)| *k == key)
        .map_or("", |(_, v)| v)
}

impl Lit {
    fn val(&self) -> Val<'_> {
        match self {
            Lit::Nil => Val::Nil,
            Lit::Bool(b) => Val::Bool(*b),
            Lit::Int(i) => Val::Int(*i),
            Lit::Float(f) => Val::Float(*f),
            Lit::Str(s) => Val::Str(Cow::Borrowed(s)),
            Lit::Bytes(b) => Val::Bytes(Cow::Borrowed(b)),
            Lit::TraceId(t) => Val::TraceId(*t),
            Lit::SpanId(s) => Val::SpanId(*s),
            Lit::Duration(d) => Val::Duration(*d),
        }
    }
}

/// Indexes into a path's value: a missing key or a nil reads as nil.
fn index_path<'x>(mut v: Val<'x>, keys: &[Key]) -> Res<Val<'x>> {
    for k in keys {
        v = match (k, &v) {
            (_, Val::Nil) => return Ok(Val::Nil),
            (Key::Str(s), Val::Map(m)) => m.get(s)?.unwrap_or(Val::Nil),
            (Key::Int(i), Val::List(l)) => {
                let n = l.len()?;
                usize::try_from(*i)
                    .ok()
                    .filter(|i| *i < n)
                    .and_then(|i| l.get(i).transpose())
                    .transpose()?
                    .ok_or_else(|| {
                        EvalError::new(format!("index {i} out of bounds (the list has {n})"))
                    })?
            }
            (Key::Int(_), Val::Map(_)) => {
                return Err(EvalError::new("a map is indexed by a string key"))
            }
            (Key::Str(_), Val::List(_)) => {
                return Err(EvalError::new("a list is indexed by an integer"))
            }
            (_, other) => {
                return Err(EvalError::new(format!(
                    "a {} cannot be indexed",
                    other.type_name()
                )))
            }
        };
    }
    Ok(v)
}

/// Indexes into a converter's result: a missing key, or nil, is an error.
fn index_result<'x>(mut v: Val<'x>, keys: &[Key]) -> Res<Val<'x>> {
    for k in keys {
        v = match (k, &v) {
            (_, Val::Nil) => return Err(EvalError::new("nil cannot be indexed")),
            (Key::Str(s), Val::Map(m)) => m
                .get(s)?
                .ok_or_else(|| EvalError::new(format!("key {s:?} not found in map")))?,
            _ => index_path(v.clone(), std::slice::from_ref(k))?,
        };
    }
    Ok(v)
}

impl Cond {
    /// The condition's truth on `cx`.
    pub fn eval<'x>(&'x self, cx: &Cx<'x>) -> Res<bool> {
        Ok(match self {
            Cond::Const(b) => *b,
            Cond::Not(c) => !c.eval(cx)?,
            Cond::And(l, r) => l.eval(cx)? && r.eval(cx)?,
            Cond::Or(l, r) => l.eval(cx)? || r.eval(cx)?,
            Cond::Cmp(op, l, r) => cmp(*op, l, r, cx)?,
            Cond::Call(c) => match c.eval(cx)? {
                Val::Bool(b) => b,
                other => {
                    return Err(EvalError::new(format!(
                        "a converter used as a condition must return a bool, got {}",
                        other.type_name()
                    )))
                }
            },
        })
    }
}

fn cmp<'x>(op: CmpOp, l: &'x Value, r: &'x Value, cx: &Cx<'x>) -> Res<bool> {
    let a = l.eval(cx)?;
    let b = r.eval(cx)?;
    Ok(compare(&a, &b, op))
}

impl Value {
    /// The value on `cx`.
    pub fn eval<'x>(&'x self, cx: &Cx<'x>) -> Res<Val<'x>> {
        match self {
            Value::Lit(l) => Ok(l.val()),
            Value::Path(f, keys) => {
                let v = cx.field(f)?;
                if keys.is_empty() {
                    Ok(v)
                } else {
                    index_path(v, keys)
                }
            }
            Value::Call(c, keys) => {
                let v = c.eval(cx)?;
                if keys.is_empty() {
                    Ok(v)
                } else {
                    index_result(v, keys)
                }
            }
            Value::Math(op, l, r) => math(&l.eval(cx)?, *op, &r.eval(cx)?),
            Value::List(items) => Ok(Val::List(ListVal::Owned(
                items.iter().map(|i| i.eval(cx)).collect::<Res<Vec<_>>>()?,
            ))),
            Value::Map(items) => Ok(Val::Map(MapVal::Owned(
                items
                    .iter()
                    .map(|(k, v)| Ok((Cow::Borrowed(k.as_str()), v.eval(cx)?)))
                    .collect::<Res<Vec<_>>>()?,
            ))),
        }
    }
}

fn arg<'x>(args: &'x [Option<Value>], i: usize, cx: &Cx<'x>) -> Res<Val<'x>> {
    match args.get(i) {
        Some(Some(v)) => v.eval(cx),
        _ => Ok(Val::Nil),
    }
}

fn cow_str<'x>(s: Cow<'_, str>) -> Val<'x> {
    Val::Str(Cow::Owned(s.into_owned()))
}

fn snake(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == ' ' || c == '-' || c == '.' || c == '_' {
            if !out.ends_with('_') && !out.is_empty() {
                out.push('_');
            }
            continue;
        }
        if c.is_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1);
            let boundary = prev.is_some_and(|p| p.is_lowercase() || p.is_ascii_digit())
                || (prev.is_some_and(char::is_uppercase) && next.is_some_and(|n| n.is_lowercase()));
            if boundary && !out.ends_with('_') {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out.trim_end_matches('_').to_string()
}

fn camel(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut upper_next = true;
    for c in s.chars() {
        if c == '_' || c == ' ' || c == '-' || c == '.' {
            upper_next = true;
            continue;
        }
        if upper_next {
            out.extend(c.to_uppercase());
            upper_next = false;
        } else {
            out.push(c);
        }
        if c.is_ascii_digit() {
            upper_next = true;
        }
    }
    out
}

/// The typed scan `ContainsValue` does for scalars (an int and a double of the same value
/// match), else equality.
fn contains(items: &[Val<'_>], item: &Val<'_>) -> bool {
    let num = |v: &Val<'_>| match v {
        Val::Int(i) => Some(*i as f64),
        Val::Float(f) => Some(*f),
        _ => None,
    };
    items.iter().any(|v| match (num(v), num(item)) {
        (Some(a), Some(b)) => a == b,
        _ => compare(v, item, CmpOp::Eq),
    })
}

impl Call {
    /// The converter's result on `cx`.
    pub fn eval<'x>(&'x self, cx: &Cx<'x>) -> Res<Val<'x>> {
        let a = |i| arg(&self.args, i, cx);
        Ok(match &self.func {
            Func::IsMatch(re) => {
                let target = a(0)?;
                let Some(text) = string_like(&target)? else {
                    return Ok(Val::Bool(false));
                };
                match re {
                    Some(re) => Val::Bool(re.is_match(&text)),
                    None => {
                        let pattern = a(1)?;
                        let p = string(&pattern)?;
                        // A pattern from span data: bounded, so a sender cannot make us compile
                        // an enormous automaton per span.
                        let re = regex::RegexBuilder::new(&p)
                            .size_limit(1 << 16)
                            .dfa_size_limit(1 << 16)
                            .build()
                            .map_err(|e| {
                                EvalError::new(format!("IsMatch: invalid pattern {p:?}: {e}"))
                            })?;
                        Val::Bool(re.is_match(&text))
                    }
                }
            }
            Func::HasPrefix | Func::HasSuffix => {
                let (t, p) = (a(0)?, a(1)?);
                let (t, p) = (string(&t)?, string(&p)?);
                Val::Bool(if matches!(self.func, Func::HasPrefix) {
                    t.starts_with(p.as_ref())
                } else {
                    t.ends_with(p.as_ref())
                })
            }
            Func::Len => Val::Int(match a(0)? {
                Val::Str(s) => s.len(),
                Val::Bytes(b) => b.len(),
                Val::Map(m) => m.len()?,
                Val::List(l) => l.len()?,
                Val::Items(n) => n,
                other => {
                    return Err(EvalError::new(format!(
                        "Len: expected a string, map or list but got {}",
                        other.type_name()
                    )))
                }
            } as i64),
            Func::ContainsValue => {
                let target = a(0)?;
                let Val::List(l) = &target else {
                    return Err(EvalError::new(format!(
                        "ContainsValue: expected a list but got {}",
                        target.type_name()
                    )));
                };
                let item = a(1)?;
                Val::Bool(contains(&l.items()?, &item))
            }
            Func::IsRootSpan => Val::Bool(match cx.input.known {
                Some(k) => k.is_root,
                None => {
                    let p = &cx.fields()?.parent_span_id;
                    cx.input.span[p.clone()].iter().all(|b| *b == 0)
                }
            }),
            Func::Substring => {
                let (t, start, length) = (a(0)?, a(1)?, a(2)?);
                let (t, start, length) = (string(&t)?, int(&start)?, int(&length)?);
                let utf8 = matches!(a(3)?, Val::Bool(true));
                let bad = || {
                    EvalError::new(format!(
                        "Substring: invalid range start {start}, length {length} for a string of {}",
                        t.len()
                    ))
                };
                if start < 0 || length <= 0 {
                    return Err(bad());
                }
                let (Ok(start), Ok(length)) = (usize::try_from(start), usize::try_from(length))
                else {
                    return Err(bad());
                };
                let end = start.checked_add(length).ok_or_else(bad)?;
                let out = if utf8 {
                    let chars: Vec<char> = t.chars().collect();
                    if end > chars.len() {
                        return Err(bad());
                    }
                    chars[start..end].iter().collect::<String>()
                } else {
                    if end > t.len() {
                        return Err(bad());
                    }
                    // A cut inside a character keeps what is valid (Go would keep the bytes).
                    String::from_utf8_lossy(&t.as_bytes()[start..end]).into_owned()
                };
                Val::Str(Cow::Owned(out))
            }
            Func::ConvertCase(case) => {
                let t = a(0)?;
                let t = string(&t)?;
                Val::Str(Cow::Owned(match case {
                    Case::Lower => t.to_lowercase(),
                    Case::Upper => t.to_uppercase(),
                    Case::Snake => snake(&t),
                    Case::Camel => camel(&t),
                }))
            }
            Func::Concat => {
                let Some(Some(Value::List(items))) = self.args.first() else {
                    return Ok(Val::Nil);
                };
                let d = a(1)?;
                let d = string(&d)?;
                let mut out = String::new();
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&d);
                    }
                    match string_like(&item.eval(cx)?)? {
                        Some(s) => out.push_str(&s),
                        None => out.push_str("<nil>"),
                    }
                }
                Val::Str(Cow::Owned(out))
            }
            Func::Split => {
                let (t, d) = (a(0)?, a(1)?);
                let (t, d) = (string(&t)?, string(&d)?);
                let parts: Vec<Cow<'x, str>> = if d.is_empty() {
                    t.chars().map(|c| Cow::Owned(c.to_string())).collect()
                } else {
                    t.split(d.as_ref())
                        .map(|p| Cow::Owned(p.to_string()))
                        .collect()
                };
                Val::List(ListVal::Strings(parts))
            }
            Func::Int => int_like(&a(0)?)?.map_or(Val::Nil, Val::Int),
            Func::Double => float_like(&a(0)?)?.map_or(Val::Nil, Val::Float),
            Func::Bool => bool_like(&a(0)?)?.map_or(Val::Nil, Val::Bool),
            Func::String => match string_like(&a(0)?)? {
                Some(s) => cow_str(s),
                None => Val::Nil,
            },
            Func::IsString => Val::Bool(matches!(a(0)?, Val::Str(_))),
            Func::IsInt => Val::Bool(matches!(a(0)?, Val::Int(_))),
            Func::IsDouble => Val::Bool(matches!(a(0)?, Val::Float(_))),
            Func::IsBool => Val::Bool(matches!(a(0)?, Val::Bool(_))),
            Func::IsMap => Val::Bool(matches!(a(0)?, Val::Map(_))),
            Func::IsList => Val::Bool(matches!(a(0)?, Val::List(_) | Val::Items(_))),
            Func::TraceId | Func::SpanId => {
                let v = a(0)?;
                let want = if matches!(self.func, Func::TraceId) {
                    16
                } else {
                    8
                };
                let raw: Vec<u8> = match &v {
                    Val::Str(s) if s.len() == want * 2 => {
                        hex::decode(s.as_bytes()).map_err(|_| {
                            EvalError::new(format!("{s:?} is not {} hex digits", want * 2))
                        })?
                    }
                    other => bytes_like(other)?
                        .map(Cow::into_owned)
                        .ok_or_else(|| EvalError::new("an id needs bytes, got nil"))?,
                };
                if raw.len() != want {
                    return Err(EvalError::new(format!(
                        "an id of {want} bytes was expected, got {}",
                        raw.len()
                    )));
                }
                if want == 16 {
                    Val::TraceId(id(&raw))
                } else {
                    Val::SpanId(id(&raw))
                }
            }
            Func::Duration => {
                let v = a(0)?;
                let s = string(&v)?;
                Val::Duration(
                    super::value::parse_go_duration(&s)
                        .ok_or_else(|| EvalError::new(format!("{s:?} is not a duration")))?,
                )
            }
            Func::Coalesce => {
                // The compiler admits only a list literal: its items are evaluated in order,
                // up to the first that is not nil.
                if let Some(Some(Value::List(items))) = self.args.first() {
                    for item in items {
                        let v = item.eval(cx)?;
                        if !matches!(v, Val::Nil) {
                            return Ok(v);
                        }
                    }
                }
                Val::Nil
            }
            Func::Hex => match bytes_like(&a(0)?)? {
                Some(b) => Val::Str(Cow::Owned(hex::encode(b))),
                None => Val::Str(Cow::Borrowed("")),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases() {
        assert_eq!(snake("someName"), "some_name");
        assert_eq!(snake("HTTPServer"), "http_server");
        assert_eq!(camel("some_name"), "SomeName");
        assert_eq!(trace_state_get("ot=th:8,vendor=x", "vendor"), "x");
        assert_eq!(trace_state_get("ot=th:8", "vendor"), "");
    }
}
