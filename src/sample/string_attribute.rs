//! `string_attribute`: a span or resource attribute equal to one of the values (or matching one of
//! the regexes). The match is a leaf, evaluated while spans are scanned; the decision reads its bit.

use serde::{Deserialize, Serialize};

use super::{LeafMatch, LeafSet, Threshold, TraceView, Verdict};

/// The Collector's `string_attribute` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StringAttributeConfig {
    /// Attribute key, looked up on spans and on their resources.
    pub key: String,
    /// Values (or regexes, with `enabled_regex_matching`).
    pub values: Vec<String>,
    /// Treat `values` as regular expressions (unanchored, as the Collector does).
    #[serde(default)]
    pub enabled_regex_matching: bool,
    /// Accepted for compatibility; regexes are compiled once and need no result cache here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_max_size: Option<u64>,
    /// Keep traces where no span matches, instead of where one does.
    #[serde(default)]
    pub invert_match: bool,
}

/// Compiled `string_attribute`.
#[derive(Debug)]
pub struct StringAttribute {
    bit: u128,
    invert: bool,
}

impl StringAttribute {
    /// Registers the predicate as a leaf (regexes compiled here, once).
    pub fn build(
        c: &StringAttributeConfig,
        leaves: &mut LeafSet,
    ) -> Result<StringAttribute, String> {
        if c.key.is_empty() {
            return Err("key must not be empty".into());
        }
        if c.values.is_empty() {
            return Err("values must list at least one value".into());
        }
        let matcher = if c.enabled_regex_matching {
            LeafMatch::Regex(
                regex::RegexSet::new(&c.values)
                    .map_err(|e| format!("invalid regex in values: {e}"))?,
            )
        } else {
            LeafMatch::Exact(c.values.clone())
        };
        let idx = leaves.add(&c.key, matcher)?;
        Ok(StringAttribute {
            bit: 1u128 << idx,
            invert: c.invert_match,
        })
    }

    /// Sampled when some span matched (or, inverted, when none did).
    pub fn evaluate(&self, t: &TraceView<'_>) -> Verdict {
        let matched = t.summary.leaf_bits & self.bit != 0;
        if matched != self.invert {
            Verdict::Sampled {
                threshold: Threshold::ALWAYS,
            }
        } else {
            Verdict::NotSampled
        }
    }
}

super::policy_impl!(StringAttribute, StringAttributeConfig, leaves);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{AnyValueRef, RawValue, SpanProbe, StatusCode, TraceId};
    use crate::sample::tests::{meta, summary};

    fn run(c: StringAttributeConfig, attrs: &[(&str, AnyValueRef<'_>)], on_resource: bool) -> bool {
        let mut leaves = LeafSet::default();
        let p = StringAttribute::build(&c, &mut leaves).unwrap();
        let mut m = meta(0, 1, StatusCode::Unset, true);
        let mut scratch = Vec::new();
        for (k, v) in attrs {
            let raw = RawValue::encode(*v, &mut scratch);
            m.leaf_bits |= if on_resource {
                leaves.resource_attribute(k.as_bytes(), raw)
            } else {
                leaves.span_attribute(k.as_bytes(), raw)
            };
        }
        let s = summary(&[m]);
        matches!(
            p.evaluate(&TraceView {
                trace_id: TraceId([1; 16]),
                summary: &s,
                now: crate::clock::StreamTime::ZERO,
                spans: &[],
            }),
            Verdict::Sampled { .. }
        )
    }

    fn cfg(values: &[&str], regex: bool, invert: bool) -> StringAttributeConfig {
        StringAttributeConfig {
            key: "http.route".into(),
            values: values.iter().map(|s| s.to_string()).collect(),
            enabled_regex_matching: regex,
            cache_max_size: None,
            invert_match: invert,
        }
    }

    #[test]
    fn exact_on_span_and_resource() {
        let c = || cfg(&["/api/payment", "/api/checkout"], false, false);
        assert!(run(
            c(),
            &[("http.route", AnyValueRef::Str("/api/checkout"))],
            false
        ));
        assert!(run(
            c(),
            &[("http.route", AnyValueRef::Str("/api/checkout"))],
            true
        ));
        assert!(!run(
            c(),
            &[("http.route", AnyValueRef::Str("/api/checkout/x"))],
            false
        ));
        assert!(!run(
            c(),
            &[("other", AnyValueRef::Str("/api/checkout"))],
            false
        ));
        assert!(!run(c(), &[("http.route", AnyValueRef::Int(1))], false));
        assert!(!run(c(), &[], false), "missing attribute does not match");
    }

    #[test]
    fn regex_and_invert() {
        assert!(run(
            cfg(&["^/api/(pay|check)"], true, false),
            &[("http.route", AnyValueRef::Str("/api/payment/42"))],
            false
        ));
        assert!(!run(
            cfg(&["^/api/(pay|check)"], true, false),
            &[("http.route", AnyValueRef::Str("/health"))],
            false
        ));
        assert!(run(
            cfg(&["/health"], false, true),
            &[("http.route", AnyValueRef::Str("/api/x"))],
            false
        ));
        assert!(!run(
            cfg(&["/health"], false, true),
            &[("http.route", AnyValueRef::Str("/health"))],
            false
        ));
        assert!(
            run(cfg(&["/health"], false, true), &[], false),
            "inverted: no attribute keeps"
        );
        let mut leaves = LeafSet::default();
        assert!(StringAttribute::build(&cfg(&["(unclosed"], true, false), &mut leaves).is_err());
        assert!(StringAttribute::build(&cfg(&[], false, false), &mut leaves).is_err());
    }
}
