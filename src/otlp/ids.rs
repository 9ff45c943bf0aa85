//! The domain types of OTLP on the wire: trace and span ids, span kind and status code, the
//! input encoding, and attribute values rendered as OTLP/JSON scalars.

#[allow(unused_imports)]
use super::*;

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

/// The protobuf enum names of the span kinds, indexed by value (`SPAN_KIND_SERVER` is 2).
pub const SPAN_KIND_NAMES: [&str; 6] = [
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
];

/// The span kinds' short names (`Server`), indexed by value, as the Collector's pdata prints them.
pub const SPAN_KIND_TITLES: [&str; 6] = [
    "Unspecified",
    "Internal",
    "Server",
    "Client",
    "Producer",
    "Consumer",
];

/// The protobuf enum names of the status codes, indexed by value.
pub const STATUS_CODE_NAMES: [&str; 3] =
    ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];

/// `names[value]`, or `None` for a value out of range.
pub fn enum_name(names: &[&'static str], value: i32) -> Option<&'static str> {
    usize::try_from(value)
        .ok()
        .and_then(|i| names.get(i))
        .copied()
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
