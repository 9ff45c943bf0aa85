//! From syntax tree to a typed expression tree: paths resolved to the span fields they read,
//! enum symbols to their numbers, converters checked for name, arity and argument kinds, literal
//! regexes compiled and literal ids and durations folded, once at load. Every problem is
//! reported with where it was written.

use super::parse::{Arg, CmpOp, Expr, Key, MathOp, Name, Pos};
use super::value::parse_go_duration;
use crate::otlp::{SPAN_KIND_NAMES, STATUS_CODE_NAMES};
use crate::settings::lenient::suggest;

/// Which context a condition is evaluated in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// `ottlspan`: the span, its resource and scope.
    Span,
    /// `ottlspanevent`: one event, its span, resource and scope.
    SpanEvent,
}

/// A field a path reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// `name`
    Name,
    /// `kind`
    Kind,
    /// `kind.string` ("Server")
    KindString,
    /// `kind.deprecated_string` ("SPAN_KIND_SERVER")
    KindDeprecatedString,
    /// `status.code`
    StatusCode,
    /// `status.message`
    StatusMessage,
    /// `attributes`
    Attributes,
    /// `trace_id`
    TraceId,
    /// `trace_id.string`
    TraceIdString,
    /// `span_id`
    SpanId,
    /// `span_id.string`
    SpanIdString,
    /// `parent_span_id`
    ParentSpanId,
    /// `parent_span_id.string`
    ParentSpanIdString,
    /// `trace_state`
    TraceState,
    /// `trace_state["k"]`
    TraceStateKey(String),
    /// `start_time_unix_nano`
    StartNanos,
    /// `end_time_unix_nano`
    EndNanos,
    /// `start_time`
    StartTime,
    /// `end_time`
    EndTime,
    /// `dropped_attributes_count`
    DroppedAttributes,
    /// `events`
    Events,
    /// `dropped_events_count`
    DroppedEvents,
    /// `links`
    Links,
    /// `dropped_links_count`
    DroppedLinks,
    /// `cache` (always empty in a condition)
    Cache,
    /// `resource.attributes`
    ResourceAttributes,
    /// `resource.dropped_attributes_count`
    ResourceDropped,
    /// `resource.schema_url`
    ResourceSchemaUrl,
    /// `instrumentation_scope.name`
    ScopeName,
    /// `instrumentation_scope.version`
    ScopeVersion,
    /// `instrumentation_scope.attributes`
    ScopeAttributes,
    /// `instrumentation_scope.dropped_attributes_count`
    ScopeDropped,
    /// `instrumentation_scope.schema_url`
    ScopeSchemaUrl,
    /// The event's `name`
    EventName,
    /// The event's `time_unix_nano`
    EventNanos,
    /// The event's `time`
    EventTime,
    /// The event's `attributes`
    EventAttributes,
    /// The event's `dropped_attributes_count`
    EventDropped,
    /// `event_index` (never set under tail sampling: reading it is an error)
    EventIndex,
}

impl Field {
    fn indexable(&self) -> bool {
        matches!(
            self,
            Field::Attributes
                | Field::ResourceAttributes
                | Field::ScopeAttributes
                | Field::EventAttributes
                | Field::Cache
        )
    }
}

/// A literal value, owned by the tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    /// `nil`
    Nil,
    /// A boolean.
    Bool(bool),
    /// An int (also an enum symbol).
    Int(i64),
    /// A double.
    Float(f64),
    /// A string.
    Str(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// `TraceID(0x…)` folded.
    TraceId([u8; 16]),
    /// `SpanID(0x…)` folded.
    SpanId([u8; 8]),
    /// `Duration("…")` folded.
    Duration(i64),
}

/// A compiled value expression.
#[derive(Debug)]
pub enum Value {
    /// A literal.
    Lit(Lit),
    /// A path and its indexes.
    Path(Field, Vec<Key>),
    /// A converter call and indexes into its result.
    Call(Box<Call>, Vec<Key>),
    /// Arithmetic.
    Math(MathOp, Box<Value>, Box<Value>),
    /// A list literal.
    List(Vec<Value>),
    /// A map literal.
    Map(Vec<(String, Value)>),
}

/// A compiled condition.
#[derive(Debug)]
pub enum Cond {
    /// `true` / `false`
    Const(bool),
    /// `not`
    Not(Box<Cond>),
    /// `and` (short-circuit)
    And(Box<Cond>, Box<Cond>),
    /// `or` (short-circuit)
    Or(Box<Cond>, Box<Cond>),
    /// A comparison.
    Cmp(CmpOp, Value, Value),
    /// A converter whose result must be a bool.
    Call(Box<Call>),
}

/// `ConvertCase`'s target case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// lower
    Lower,
    /// upper
    Upper,
    /// snake
    Snake,
    /// camel
    Camel,
}

/// A converter.
#[derive(Debug)]
pub enum Func {
    /// `IsMatch(target, pattern)`: the pattern compiled once when it is a literal.
    IsMatch(Option<regex::Regex>),
    /// `HasPrefix(target, prefix)`
    HasPrefix,
    /// `HasSuffix(target, suffix)`
    HasSuffix,
    /// `Len(target)`
    Len,
    /// `ContainsValue(target, item)`
    ContainsValue,
    /// `IsRootSpan()`
    IsRootSpan,
    /// `Substring(target, start, length[, utf8_safe])`
    Substring,
    /// `ConvertCase(target, toCase)` and `ToLowerCase`, `ToUpperCase`, `ToSnakeCase`,
    /// `ToCamelCase`.
    ConvertCase(Case),
    /// `Concat(values, delimiter)`
    Concat,
    /// `Split(target, delimiter)`
    Split,
    /// `Int(x)`
    Int,
    /// `Double(x)`
    Double,
    /// `String(x)`
    String,
    /// `Bool(x)`
    Bool,
    /// `IsString(x)`
    IsString,
    /// `IsInt(x)`
    IsInt,
    /// `IsDouble(x)`
    IsDouble,
    /// `IsBool(x)`
    IsBool,
    /// `IsMap(x)`
    IsMap,
    /// `IsList(x)`
    IsList,
    /// `TraceID(bytes)`
    TraceId,
    /// `SpanID(bytes)`
    SpanId,
    /// `Duration(s)`
    Duration,
    /// `Coalesce(values)`
    Coalesce,
    /// `Hex(x)`
    Hex,
}

/// A converter and its arguments, in parameter order (optional ones absent are `None`).
#[derive(Debug)]
pub struct Call {
    /// The converter.
    pub func: Func,
    /// Its arguments.
    pub args: Vec<Option<Value>>,
}

/// What a converter returns, for the check that a converter used as a condition is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Returns {
    Bool,
    /// A bool or nil (`Bool`), or anything (`Coalesce`): checked when evaluated.
    MaybeBool,
    Other,
}

/// How an argument must be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Param {
    /// Any value expression.
    Any,
    /// A string literal.
    StrLit,
    /// A list literal.
    ListLit,
    /// An optional boolean literal.
    OptBoolLit,
}

struct Sig {
    name: &'static str,
    params: &'static [(&'static str, Param)],
    returns: Returns,
}

const SIGS: &[Sig] = &[
    sig(
        "IsMatch",
        &[("target", Param::Any), ("pattern", Param::Any)],
        Returns::Bool,
    ),
    sig(
        "HasPrefix",
        &[("target", Param::Any), ("prefix", Param::Any)],
        Returns::Bool,
    ),
    sig(
        "HasSuffix",
        &[("target", Param::Any), ("suffix", Param::Any)],
        Returns::Bool,
    ),
    sig("Len", &[("target", Param::Any)], Returns::Other),
    sig(
        "ContainsValue",
        &[("target", Param::Any), ("item", Param::Any)],
        Returns::Bool,
    ),
    sig("IsRootSpan", &[], Returns::Bool),
    sig(
        "Substring",
        &[
            ("target", Param::Any),
            ("start", Param::Any),
            ("length", Param::Any),
            ("utf8_safe", Param::OptBoolLit),
        ],
        Returns::Other,
    ),
    sig(
        "ConvertCase",
        &[("target", Param::Any), ("to_case", Param::StrLit)],
        Returns::Other,
    ),
    sig("ToLowerCase", &[("target", Param::Any)], Returns::Other),
    sig("ToUpperCase", &[("target", Param::Any)], Returns::Other),
    sig("ToSnakeCase", &[("target", Param::Any)], Returns::Other),
    sig("ToCamelCase", &[("target", Param::Any)], Returns::Other),
    sig(
        "Concat",
        &[("vals", Param::ListLit), ("delimiter", Param::Any)],
        Returns::Other,
    ),
    sig(
        "Split",
        &[("target", Param::Any), ("delimiter", Param::StrLit)],
        Returns::Other,
    ),
    sig("Int", &[("target", Param::Any)], Returns::Other),
    sig("Double", &[("target", Param::Any)], Returns::Other),
    sig("String", &[("target", Param::Any)], Returns::Other),
    sig("Bool", &[("target", Param::Any)], Returns::MaybeBool),
    sig("IsString", &[("target", Param::Any)], Returns::Bool),
    sig("IsInt", &[("target", Param::Any)], Returns::Bool),
    sig("IsDouble", &[("target", Param::Any)], Returns::Bool),
    sig("IsBool", &[("target", Param::Any)], Returns::Bool),
    sig("IsMap", &[("target", Param::Any)], Returns::Bool),
    sig("IsList", &[("target", Param::Any)], Returns::Bool),
    sig("TraceID", &[("bytes", Param::Any)], Returns::Other),
    sig("SpanID", &[("bytes", Param::Any)], Returns::Other),
    sig("Duration", &[("duration", Param::Any)], Returns::Other),
    sig(
        "Coalesce",
        &[("values", Param::ListLit)],
        Returns::MaybeBool,
    ),
    sig("Hex", &[("target", Param::Any)], Returns::Other),
];

const fn sig(
    name: &'static str,
    params: &'static [(&'static str, Param)],
    returns: Returns,
) -> Sig {
    Sig {
        name,
        params,
        returns,
    }
}

/// The converters a condition may call.
pub fn converter_names() -> impl Iterator<Item = &'static str> {
    SIGS.iter().map(|s| s.name)
}

/// A compile problem: where (byte offset) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// Byte offset into the condition.
    pub at: usize,
    /// What is wrong.
    pub msg: String,
}

fn err(at: Pos, msg: impl Into<String>) -> CompileError {
    CompileError {
        at: at.0 as usize,
        msg: msg.into(),
    }
}

/// The span paths (without prefix), for suggestions.
const SPAN_PATHS: &[&str] = &[
    "name",
    "kind",
    "kind.string",
    "kind.deprecated_string",
    "status.code",
    "status.message",
    "attributes",
    "trace_id",
    "trace_id.string",
    "span_id",
    "span_id.string",
    "parent_span_id",
    "parent_span_id.string",
    "trace_state",
    "start_time_unix_nano",
    "end_time_unix_nano",
    "start_time",
    "end_time",
    "dropped_attributes_count",
    "events",
    "dropped_events_count",
    "links",
    "dropped_links_count",
    "cache",
];
const RESOURCE_PATHS: &[&str] = &["attributes", "dropped_attributes_count", "schema_url"];
const SCOPE_PATHS: &[&str] = &[
    "name",
    "version",
    "attributes",
    "dropped_attributes_count",
    "schema_url",
];
const EVENT_PATHS: &[&str] = &[
    "name",
    "time_unix_nano",
    "time",
    "attributes",
    "dropped_attributes_count",
    "event_index",
    "cache",
];

/// Resolves the rest of a path (after its context prefix) to a field.
type FieldTable = fn(&str) -> Option<Field>;

fn span_field(rest: &str) -> Option<Field> {
    Some(match rest {
        "name" => Field::Name,
        "kind" => Field::Kind,
        "kind.string" => Field::KindString,
        "kind.deprecated_string" => Field::KindDeprecatedString,
        "status.code" => Field::StatusCode,
        "status.message" => Field::StatusMessage,
        "attributes" => Field::Attributes,
        "trace_id" => Field::TraceId,
        "trace_id.string" => Field::TraceIdString,
        "span_id" => Field::SpanId,
        "span_id.string" => Field::SpanIdString,
        "parent_span_id" => Field::ParentSpanId,
        "parent_span_id.string" => Field::ParentSpanIdString,
        "trace_state" => Field::TraceState,
        "start_time_unix_nano" => Field::StartNanos,
        "end_time_unix_nano" => Field::EndNanos,
        "start_time" => Field::StartTime,
        "end_time" => Field::EndTime,
        "dropped_attributes_count" => Field::DroppedAttributes,
        "events" => Field::Events,
        "dropped_events_count" => Field::DroppedEvents,
        "links" => Field::Links,
        "dropped_links_count" => Field::DroppedLinks,
        "cache" => Field::Cache,
        _ => return None,
    })
}

fn resource_field(rest: &str) -> Option<Field> {
    Some(match rest {
        "attributes" => Field::ResourceAttributes,
        "dropped_attributes_count" => Field::ResourceDropped,
        "schema_url" => Field::ResourceSchemaUrl,
        _ => return None,
    })
}

fn scope_field(rest: &str) -> Option<Field> {
    Some(match rest {
        "name" => Field::ScopeName,
        "version" => Field::ScopeVersion,
        "attributes" => Field::ScopeAttributes,
        "dropped_attributes_count" => Field::ScopeDropped,
        "schema_url" => Field::ScopeSchemaUrl,
        _ => return None,
    })
}

fn event_field(rest: &str) -> Option<Field> {
    Some(match rest {
        "name" => Field::EventName,
        "time_unix_nano" => Field::EventNanos,
        "time" => Field::EventTime,
        "attributes" => Field::EventAttributes,
        "dropped_attributes_count" => Field::EventDropped,
        "event_index" => Field::EventIndex,
        "cache" => Field::Cache,
        _ => return None,
    })
}

fn enum_value(s: &str) -> Option<i64> {
    [&SPAN_KIND_NAMES[..], &STATUS_CODE_NAMES[..]]
        .iter()
        .find_map(|names| names.iter().position(|n| *n == s))
        .map(|i| i as i64)
}

fn enum_names() -> impl Iterator<Item = &'static str> {
    SPAN_KIND_NAMES
        .iter()
        .chain(STATUS_CODE_NAMES.iter())
        .copied()
}

struct Compiler {
    ctx: Context,
    errors: Vec<CompileError>,
}

/// Compiles a parsed condition for `ctx`; every problem is returned.
pub fn compile_condition(e: &Expr, ctx: Context) -> Result<Cond, Vec<CompileError>> {
    let mut c = Compiler {
        ctx,
        errors: Vec::new(),
    };
    let cond = c.cond(e);
    match cond {
        Some(cond) if c.errors.is_empty() => Ok(cond),
        _ => Err(c.errors),
    }
}

/// Compiles a value expression for `ctx` (for tests and tools).
pub fn compile_value(e: &Expr, ctx: Context) -> Result<Value, Vec<CompileError>> {
    let mut c = Compiler {
        ctx,
        errors: Vec::new(),
    };
    let v = c.value(e);
    match v {
        Some(v) if c.errors.is_empty() => Ok(v),
        _ => Err(c.errors),
    }
}

impl Compiler {
    fn cond(&mut self, e: &Expr) -> Option<Cond> {
        Some(match e {
            Expr::Bool(b) => Cond::Const(*b),
            Expr::Not(x) => Cond::Not(Box::new(self.cond(x)?)),
            Expr::And(l, r) => {
                let (l, r) = (self.cond(l), self.cond(r));
                Cond::And(Box::new(l?), Box::new(r?))
            }
            Expr::Or(l, r) => {
                let (l, r) = (self.cond(l), self.cond(r));
                Cond::Or(Box::new(l?), Box::new(r?))
            }
            Expr::Cmp(op, l, r, _) => {
                let (l, r) = (self.value(l), self.value(r));
                Cond::Cmp(*op, l?, r?)
            }
            Expr::Call { name, args, keys } => {
                let (call, returns) = self.call(name, args)?;
                if !keys.is_empty() {
                    self.errors.push(err(
                        name.at,
                        format!("an indexed `{}(…)[…]` is a value; compare it", name.text),
                    ));
                    return None;
                }
                if returns == Returns::Other {
                    self.errors.push(err(
                        name.at,
                        format!(
                            "`{}` does not return a boolean, so it is not a condition on its \
                             own; compare its result, e.g. `{}(…) == …`",
                            name.text, name.text
                        ),
                    ));
                    return None;
                }
                Cond::Call(Box::new(call))
            }
            // The parser admits only conditions here; a value is reported, never guessed.
            other => {
                self.errors.push(err(
                    Pos(0),
                    format!("`{other}` is a value, not a condition"),
                ));
                return None;
            }
        })
    }

    fn value(&mut self, e: &Expr) -> Option<Value> {
        Some(match e {
            Expr::Nil => Value::Lit(Lit::Nil),
            Expr::Bool(b) => Value::Lit(Lit::Bool(*b)),
            Expr::Int(i) => Value::Lit(Lit::Int(*i)),
            Expr::Float(f) => Value::Lit(Lit::Float(*f)),
            Expr::Str(s) => Value::Lit(Lit::Str(s.clone())),
            Expr::Bytes(b) => Value::Lit(Lit::Bytes(b.clone())),
            Expr::Enum(n) => match enum_value(&n.text) {
                Some(v) => Value::Lit(Lit::Int(v)),
                None => {
                    let hint = suggest(&n.text, enum_names())
                        .map(|s| format!("; did you mean {s}?"))
                        .unwrap_or_else(|| {
                            "; known: SPAN_KIND_* (UNSPECIFIED, INTERNAL, SERVER, CLIENT, \
                             PRODUCER, CONSUMER) and STATUS_CODE_* (UNSET, OK, ERROR)"
                                .into()
                        });
                    self.errors
                        .push(err(n.at, format!("unknown enum symbol {}{hint}", n.text)));
                    return None;
                }
            },
            Expr::Path { parts, keys } => {
                let field = self.path(parts, keys)?;
                let keys = match field {
                    Field::TraceStateKey(_) => Vec::new(),
                    _ => keys.clone(),
                };
                Value::Path(field, keys)
            }
            Expr::Call { name, args, keys } => {
                let (call, _) = self.call(name, args)?;
                if keys.is_empty() {
                    if let Some(lit) = fold(&call) {
                        return Some(Value::Lit(lit));
                    }
                }
                Value::Call(Box::new(call), keys.clone())
            }
            Expr::List(items) => {
                let items: Vec<Option<Value>> = items.iter().map(|i| self.value(i)).collect();
                Value::List(items.into_iter().collect::<Option<Vec<_>>>()?)
            }
            Expr::Map(items) => {
                let items: Vec<Option<(String, Value)>> = items
                    .iter()
                    .map(|(k, v)| self.value(v).map(|v| (k.clone(), v)))
                    .collect();
                Value::Map(items.into_iter().collect::<Option<Vec<_>>>()?)
            }
            Expr::Math(op, l, r, _) => {
                let (l, r) = (self.value(l), self.value(r));
                Value::Math(*op, Box::new(l?), Box::new(r?))
            }
            // The parser admits only values here.
            Expr::Cmp(..) | Expr::And(..) | Expr::Or(..) | Expr::Not(_) => Value::Lit(Lit::Nil),
        })
    }

    fn unknown_path(&mut self, at: Pos, got: &str, known: &[&str], prefix: &str) {
        let hint = suggest(got, known.iter().copied())
            .map(|s| format!("; did you mean \"{prefix}{s}\"?"))
            .unwrap_or_else(|| {
                format!(
                    "; {} paths: {}",
                    if prefix.is_empty() {
                        "known"
                    } else {
                        prefix.trim_end_matches('.')
                    },
                    known.join(", ")
                )
            });
        self.errors
            .push(err(at, format!("unknown path \"{prefix}{got}\"{hint}")));
    }

    fn path(&mut self, parts: &[Name], keys: &[Key]) -> Option<Field> {
        let head = parts.first()?;
        let (prefix, rest_parts, table): (&str, &[Name], FieldTable) =
            match (head.text.as_str(), self.ctx) {
                ("resource", _) if parts.len() > 1 => ("resource.", &parts[1..], resource_field),
                ("instrumentation_scope", _) if parts.len() > 1 => {
                    ("instrumentation_scope.", &parts[1..], scope_field)
                }
                ("scope", _) if parts.len() > 1 => ("scope.", &parts[1..], scope_field),
                ("span", _) if parts.len() > 1 => ("span.", &parts[1..], span_field),
                ("spanevent", Context::SpanEvent) if parts.len() > 1 => {
                    ("spanevent.", &parts[1..], event_field)
                }
                ("spanevent", Context::Span) => {
                    self.errors.push(err(
                        head.at,
                        "`spanevent.` paths belong in the policy's `spanevent:` conditions",
                    ));
                    return None;
                }
                (_, Context::Span) => ("", parts, span_field),
                (_, Context::SpanEvent) => ("", parts, event_field),
            };
        let rest = rest_parts
            .iter()
            .map(|p| p.text.as_str())
            .collect::<Vec<_>>()
            .join(".");
        let known: &[&str] = match prefix {
            "resource." => RESOURCE_PATHS,
            "instrumentation_scope." | "scope." => SCOPE_PATHS,
            "span." => SPAN_PATHS,
            "spanevent." => EVENT_PATHS,
            _ if self.ctx == Context::Span => SPAN_PATHS,
            _ => EVENT_PATHS,
        };
        let at = rest_parts.first().map_or(head.at, |p| p.at);
        let Some(field) = table(&rest) else {
            if rest == "status" {
                self.errors.push(err(
                    at,
                    format!("\"{prefix}status\" is a message; read {prefix}status.code or {prefix}status.message"),
                ));
            } else {
                self.unknown_path(at, &rest, known, prefix);
            }
            return None;
        };
        if field == Field::TraceState && !keys.is_empty() {
            return match keys {
                [Key::Str(k)] => Some(Field::TraceStateKey(k.clone())),
                _ => {
                    self.errors.push(err(
                        at,
                        "trace_state takes one string key, like trace_state[\"ot\"]",
                    ));
                    None
                }
            };
        }
        if !keys.is_empty() && !field.indexable() {
            self.errors
                .push(err(at, format!("\"{prefix}{rest}\" cannot be indexed")));
            return None;
        }
        Some(field)
    }

    fn call(&mut self, name: &Name, args: &[Arg]) -> Option<(Call, Returns)> {
        let Some(sig) = SIGS.iter().find(|s| s.name == name.text) else {
            let hint = suggest(&name.text, converter_names())
                .map(|s| format!("; did you mean {s}?"))
                .unwrap_or_else(|| {
                    format!(
                        "; converters: {}",
                        converter_names().collect::<Vec<_>>().join(", ")
                    )
                });
            self.errors.push(err(
                name.at,
                format!("unknown converter {}{hint}", name.text),
            ));
            return None;
        };
        if sig.name == "IsRootSpan" && self.ctx == Context::SpanEvent {
            self.errors.push(err(
                name.at,
                "IsRootSpan is for span conditions; in a spanevent condition write \
                 span.parent_span_id.string == \"0000000000000000\"",
            ));
            return None;
        }
        // Place arguments: positional first, then named.
        let mut placed: Vec<Option<&Expr>> = vec![None; sig.params.len()];
        let mut seen_named = false;
        let mut ok = true;
        for (i, a) in args.iter().enumerate() {
            let slot = match &a.name {
                None => {
                    if seen_named {
                        self.errors.push(err(
                            name.at,
                            format!("{}: a positional argument after a named one", sig.name),
                        ));
                        ok = false;
                        continue;
                    }
                    i
                }
                Some(n) => {
                    seen_named = true;
                    match sig.params.iter().position(|(p, _)| p == n) {
                        Some(j) => j,
                        None => {
                            self.errors.push(err(
                                name.at,
                                format!(
                                    "{} has no parameter `{n}`; its parameters: {}",
                                    sig.name,
                                    sig.params
                                        .iter()
                                        .map(|(p, _)| *p)
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            ));
                            ok = false;
                            continue;
                        }
                    }
                }
            };
            if slot >= sig.params.len() {
                self.errors.push(err(
                    name.at,
                    format!(
                        "{} takes {} argument(s), got {}",
                        sig.name,
                        sig.params.len(),
                        args.len()
                    ),
                ));
                return None;
            }
            if placed[slot].is_some() {
                self.errors.push(err(
                    name.at,
                    format!("{}: `{}` given twice", sig.name, sig.params[slot].0),
                ));
                ok = false;
            }
            placed[slot] = Some(&a.value);
        }
        let mut out = Vec::with_capacity(sig.params.len());
        for ((pname, kind), arg) in sig.params.iter().zip(&placed) {
            let Some(arg) = arg else {
                if *kind != Param::OptBoolLit {
                    self.errors.push(err(
                        name.at,
                        format!("{} needs its `{pname}` argument", sig.name),
                    ));
                    ok = false;
                }
                out.push(None);
                continue;
            };
            let fits = match kind {
                Param::Any => true,
                Param::StrLit => matches!(arg, Expr::Str(_)),
                Param::ListLit => matches!(arg, Expr::List(_)),
                Param::OptBoolLit => matches!(arg, Expr::Bool(_)),
            };
            if !fits {
                let want = match kind {
                    Param::StrLit => "a string literal",
                    Param::ListLit => "a list literal like [a, b]",
                    _ => "true or false",
                };
                self.errors.push(err(
                    name.at,
                    format!("{}: `{pname}` must be {want}", sig.name),
                ));
                ok = false;
                continue;
            }
            match self.value(arg) {
                Some(v) => out.push(Some(v)),
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        let func = match sig.name {
            "IsMatch" => {
                match out.get(1) {
                    Some(Some(Value::Lit(Lit::Str(p)))) => match regex::Regex::new(p) {
                        Ok(r) => Func::IsMatch(Some(r)),
                        Err(e) => {
                            self.errors.push(err(
                            name.at,
                            format!("IsMatch: the pattern {p:?} is not a valid regular expression: {e}"),
                        ));
                            return None;
                        }
                    },
                    _ => Func::IsMatch(None),
                }
            }
            "HasPrefix" => Func::HasPrefix,
            "HasSuffix" => Func::HasSuffix,
            "Len" => Func::Len,
            "ContainsValue" => Func::ContainsValue,
            "IsRootSpan" => Func::IsRootSpan,
            "Substring" => Func::Substring,
            "ConvertCase" => {
                let case = match out.get(1) {
                    Some(Some(Value::Lit(Lit::Str(c)))) => match c.as_str() {
                        "lower" => Case::Lower,
                        "upper" => Case::Upper,
                        "snake" => Case::Snake,
                        "camel" => Case::Camel,
                        other => {
                            self.errors.push(err(
                                name.at,
                                format!(
                                    "ConvertCase: unknown case {other:?}; write lower, upper, \
                                     snake or camel"
                                ),
                            ));
                            return None;
                        }
                    },
                    _ => Case::Lower,
                };
                Func::ConvertCase(case)
            }
            "ToLowerCase" => Func::ConvertCase(Case::Lower),
            "ToUpperCase" => Func::ConvertCase(Case::Upper),
            "ToSnakeCase" => Func::ConvertCase(Case::Snake),
            "ToCamelCase" => Func::ConvertCase(Case::Camel),
            "Concat" => Func::Concat,
            "Split" => Func::Split,
            "Int" => Func::Int,
            "Double" => Func::Double,
            "String" => Func::String,
            "Bool" => Func::Bool,
            "IsString" => Func::IsString,
            "IsInt" => Func::IsInt,
            "IsDouble" => Func::IsDouble,
            "IsBool" => Func::IsBool,
            "IsMap" => Func::IsMap,
            "IsList" => Func::IsList,
            "TraceID" | "SpanID" => {
                let want = if sig.name == "TraceID" { 16 } else { 8 };
                if let Some(Some(Value::Lit(Lit::Bytes(b)))) = out.first() {
                    if b.len() != want {
                        self.errors.push(err(
                            name.at,
                            format!("{}: expects {want} bytes, got {}", sig.name, b.len()),
                        ));
                        return None;
                    }
                }
                if sig.name == "TraceID" {
                    Func::TraceId
                } else {
                    Func::SpanId
                }
            }
            "Duration" => {
                if let Some(Some(Value::Lit(Lit::Str(s)))) = out.first() {
                    if parse_go_duration(s).is_none() {
                        self.errors.push(err(
                            name.at,
                            format!(
                                "Duration: {s:?} is not a duration; write it like 300ms, 1.5s, \
                                 2m or 1h30m (units ns, us, ms, s, m, h)"
                            ),
                        ));
                        return None;
                    }
                }
                Func::Duration
            }
            "Coalesce" => {
                if let Some(Some(Value::List(items))) = out.first() {
                    if items.is_empty() {
                        self.errors
                            .push(err(name.at, "Coalesce needs at least one value"));
                        return None;
                    }
                }
                Func::Coalesce
            }
            _ => Func::Hex,
        };
        Some((Call { func, args: out }, sig.returns))
    }
}

/// Folds a call on literals whose result is known at load: ids and durations.
fn fold(call: &Call) -> Option<Lit> {
    match (&call.func, call.args.first()) {
        (Func::TraceId, Some(Some(Value::Lit(Lit::Bytes(b))))) => {
            b.as_slice().try_into().ok().map(Lit::TraceId)
        }
        (Func::SpanId, Some(Some(Value::Lit(Lit::Bytes(b))))) => {
            b.as_slice().try_into().ok().map(Lit::SpanId)
        }
        (Func::Duration, Some(Some(Value::Lit(Lit::Str(s))))) => {
            parse_go_duration(s).map(Lit::Duration)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::ottl::parse::parse_condition;

    fn errs(s: &str, ctx: Context) -> Vec<String> {
        let e = parse_condition(s).unwrap();
        compile_condition(&e, ctx)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.msg)
            .collect()
    }

    #[test]
    fn suggestions() {
        let e = errs(r#"atributes["x"] == 1"#, Context::Span);
        assert_eq!(
            e,
            vec![r#"unknown path "atributes"; did you mean "attributes"?"#]
        );
        let e = errs(r#"resource.atributes["x"] == 1"#, Context::Span);
        assert!(
            e[0].contains(r#"did you mean "resource.attributes"?"#),
            "{e:?}"
        );
        let e = errs("IsMatc(name, \"x\")", Context::Span);
        assert!(e[0].contains("did you mean IsMatch?"), "{e:?}");
        let e = errs("kind == SPAN_KIND_SERVR", Context::Span);
        assert!(e[0].contains("did you mean SPAN_KIND_SERVER?"), "{e:?}");
        // Every problem at once.
        let e = errs("nme == 1 and IsMatc(x, \"y\")", Context::Span);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(!errs("IsRootSpan()", Context::SpanEvent).is_empty());
        assert!(errs("IsRootSpan()", Context::Span).is_empty());
        assert!(!errs("Int(name)", Context::Span).is_empty());
        assert!(!errs("IsMatch(name, \"(\")", Context::Span).is_empty());
        assert!(!errs("TraceID(0x01) == trace_id", Context::Span).is_empty());
        assert!(!errs("Duration(\"1d\") == 1", Context::Span).is_empty());
        assert!(!errs("ConvertCase(name, \"kebab\") == 1", Context::Span).is_empty());
        assert!(!errs("name[\"x\"] == 1", Context::Span).is_empty());
        assert!(!errs("spanevent.name == \"x\"", Context::Span).is_empty());
        assert!(errs("spanevent.name == \"x\"", Context::SpanEvent).is_empty());
        assert!(errs(
            "span.name == \"x\" and scope.name == \"y\"",
            Context::SpanEvent
        )
        .is_empty());
    }
}
