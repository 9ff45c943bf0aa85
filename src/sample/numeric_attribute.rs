//! `numeric_attribute`: an integer span or resource attribute within `[min_value, max_value]`.
//! A leaf, evaluated while spans are scanned.

use serde::{Deserialize, Serialize};

use super::{LeafMatch, LeafSet, TraceView, Verdict};

/// The Collector's `numeric_attribute` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumericAttributeConfig {
    /// Attribute key, looked up on spans and on their resources.
    pub key: String,
    /// Smallest matching value (inclusive); absent = no lower bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_value: Option<i64>,
    /// Largest matching value (inclusive); absent = no upper bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_value: Option<i64>,
    /// Keep traces where no span matches, instead of where one does.
    #[serde(default)]
    pub invert_match: bool,
}

/// Compiled `numeric_attribute`.
#[derive(Debug)]
pub struct NumericAttribute {
    bit: u128,
    invert: bool,
}

impl NumericAttribute {
    /// Registers the range as a leaf.
    pub fn build(c: &NumericAttributeConfig, leaves: &mut LeafSet) -> Result<Self, String> {
        if c.key.is_empty() {
            return Err("key must not be empty".into());
        }
        if c.min_value.is_none() && c.max_value.is_none() {
            return Err("set min_value, max_value or both".into());
        }
        let min = c.min_value.unwrap_or(i64::MIN);
        let max = c.max_value.unwrap_or(i64::MAX);
        if min > max {
            return Err(format!("min_value {min} is greater than max_value {max}"));
        }
        let idx = leaves.add(&c.key, LeafMatch::IntRange { min, max })?;
        Ok(NumericAttribute {
            bit: 1u128 << idx,
            invert: c.invert_match,
        })
    }

    /// Sampled when some span or resource matched (or, inverted, when none did).
    pub fn evaluate(&self, t: &TraceView<'_>) -> Verdict {
        super::leaf_verdict(t, self.bit, self.invert)
    }
}

super::policy_impl!(NumericAttribute, NumericAttributeConfig, leaves);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::AnyValueRef;
    use crate::sample::tests::probe_one;

    fn cfg(min: Option<i64>, max: Option<i64>, invert: bool) -> NumericAttributeConfig {
        NumericAttributeConfig {
            key: "http.status_code".into(),
            min_value: min,
            max_value: max,
            invert_match: invert,
        }
    }

    /// (min, max, invert, attribute value, kept)
    type Row = (Option<i64>, Option<i64>, bool, AnyValueRef<'static>, bool);

    #[test]
    fn ranges_are_inclusive_and_typed() {
        let table: &[Row] = &[
            (Some(500), Some(599), false, AnyValueRef::Int(500), true),
            (Some(500), Some(599), false, AnyValueRef::Int(599), true),
            (Some(500), Some(599), false, AnyValueRef::Int(600), false),
            (Some(500), None, false, AnyValueRef::Int(i64::MAX), true),
            (None, Some(0), false, AnyValueRef::Int(-5), true),
            // Strings and doubles are not integers, as in the Collector.
            (Some(500), Some(599), false, AnyValueRef::Str("503"), false),
            (
                Some(500),
                Some(599),
                false,
                AnyValueRef::Double(503.0),
                false,
            ),
            (Some(500), Some(599), true, AnyValueRef::Int(200), true),
            (Some(500), Some(599), true, AnyValueRef::Int(503), false),
        ];
        for (min, max, invert, v, want) in table {
            for on_resource in [false, true] {
                let mut leaves = LeafSet::default();
                let p = NumericAttribute::build(&cfg(*min, *max, *invert), &mut leaves).unwrap();
                let got = probe_one(&leaves, "http.status_code", *v, on_resource, |t| {
                    p.evaluate(t)
                });
                assert_eq!(got, *want, "{min:?}..{max:?} invert={invert} {v:?}");
            }
        }
        // Missing attribute: not matched (kept only when inverted).
        let mut leaves = LeafSet::default();
        let p = NumericAttribute::build(&cfg(Some(1), None, true), &mut leaves).unwrap();
        assert!(probe_one(
            &leaves,
            "other",
            AnyValueRef::Int(5),
            false,
            |t| p.evaluate(t)
        ));
    }

    #[test]
    fn bad_ranges_are_rejected() {
        let mut leaves = LeafSet::default();
        assert!(NumericAttribute::build(&cfg(None, None, false), &mut leaves).is_err());
        assert!(NumericAttribute::build(&cfg(Some(5), Some(1), false), &mut leaves).is_err());
    }
}
