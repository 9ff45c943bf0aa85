//! The envelope of an OTLP/JSON trace request, with spans encoded as they are read
//! (see `otlp::json_to_proto`).

use std::fmt;

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::{len_field_size, put_len_header};

#[derive(Deserialize)]
pub(super) struct Request {
    #[serde(default, rename = "resourceSpans", alias = "resource_spans")]
    pub resource_spans: Vec<ResourceSpans>,
    #[serde(default, rename = "resourceLogs", alias = "resource_logs")]
    logs: Option<IgnoredAny>,
    #[serde(default, rename = "resourceMetrics", alias = "resource_metrics")]
    metrics: Option<IgnoredAny>,
    #[serde(default, rename = "resourceProfiles", alias = "resource_profiles")]
    profiles: Option<IgnoredAny>,
}

#[derive(Deserialize)]
pub(super) struct ResourceSpans {
    #[serde(default)]
    resource: Option<Resource>,
    #[serde(default, rename = "scopeSpans", alias = "scope_spans")]
    scope_spans: Vec<ScopeSpans>,
    #[serde(default, rename = "schemaUrl", alias = "schema_url")]
    schema_url: String,
}

#[derive(Deserialize)]
struct ScopeSpans {
    #[serde(default)]
    scope: Option<InstrumentationScope>,
    /// The `spans` as encoded `ScopeSpans.spans` fields, in order.
    #[serde(default, deserialize_with = "encoded_spans")]
    spans: Vec<u8>,
    #[serde(default, rename = "schemaUrl", alias = "schema_url")]
    schema_url: String,
}

fn encoded_spans<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct Spans;
    impl<'de> Visitor<'de> for Spans {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of spans")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(span) = seq.next_element::<Span>()? {
                put_len_header(&mut out, 2, span.encoded_len());
                span.encode_raw(&mut out);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Spans)
}

fn message_field(out: &mut Vec<u8>, field: u32, m: &impl Message) {
    put_len_header(out, field, m.encoded_len());
    m.encode_raw(out);
}

fn string_field(out: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        put_len_header(out, field, s.len());
        out.extend_from_slice(s.as_bytes());
    }
}

fn string_len(s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        len_field_size(s.len())
    }
}

impl ScopeSpans {
    fn len(&self) -> usize {
        self.scope
            .as_ref()
            .map_or(0, |m| len_field_size(m.encoded_len()))
            + self.spans.len()
            + string_len(&self.schema_url)
    }
}

impl ResourceSpans {
    fn len(&self) -> usize {
        self.resource
            .as_ref()
            .map_or(0, |m| len_field_size(m.encoded_len()))
            + self
                .scope_spans
                .iter()
                .map(|s| len_field_size(s.len()))
                .sum::<usize>()
            + string_len(&self.schema_url)
    }
}

impl Request {
    pub(super) fn other_signal(&self) -> Option<&'static str> {
        if self.logs.is_some() {
            Some("logs")
        } else if self.metrics.is_some() {
            Some("metrics")
        } else if self.profiles.is_some() {
            Some("profiles")
        } else {
            None
        }
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let total: usize = self
            .resource_spans
            .iter()
            .map(|r| len_field_size(r.len()))
            .sum();
        let mut out = Vec::with_capacity(total);
        for rs in &self.resource_spans {
            put_len_header(&mut out, 1, rs.len());
            if let Some(r) = &rs.resource {
                message_field(&mut out, 1, r);
            }
            for ss in &rs.scope_spans {
                put_len_header(&mut out, 2, ss.len());
                if let Some(s) = &ss.scope {
                    message_field(&mut out, 1, s);
                }
                out.extend_from_slice(&ss.spans);
                string_field(&mut out, 3, &ss.schema_url);
            }
            string_field(&mut out, 3, &rs.schema_url);
        }
        out
    }
}
