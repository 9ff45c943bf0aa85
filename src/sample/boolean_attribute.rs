//! `boolean_attribute`: a boolean span or resource attribute equal to `value`. A leaf.

use serde::{Deserialize, Serialize};

use super::{LeafMatch, LeafSet, TraceView, Verdict};

/// The Collector's `boolean_attribute` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BooleanAttributeConfig {
    /// Attribute key, looked up on spans and on their resources.
    pub key: String,
    /// The value that matches.
    pub value: bool,
    /// Keep traces where no span matches, instead of where one does.
    #[serde(default)]
    pub invert_match: bool,
}

/// Compiled `boolean_attribute`.
#[derive(Debug)]
pub struct BooleanAttribute {
    bit: u128,
    invert: bool,
}

impl BooleanAttribute {
    /// Registers the predicate as a leaf.
    pub fn build(c: &BooleanAttributeConfig, leaves: &mut LeafSet) -> Result<Self, String> {
        if c.key.is_empty() {
            return Err("key must not be empty".into());
        }
        let idx = leaves.add(&c.key, LeafMatch::Bool(c.value))?;
        Ok(BooleanAttribute {
            bit: 1u128 << idx,
            invert: c.invert_match,
        })
    }

    /// Sampled when some span or resource matched (or, inverted, when none did).
    pub fn evaluate(&self, t: &TraceView<'_>) -> Verdict {
        super::leaf_verdict(t, self.bit, self.invert)
    }
}

super::policy_impl!(BooleanAttribute, BooleanAttributeConfig, leaves);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::AnyValueRef;
    use crate::sample::tests::probe_one;

    #[test]
    fn value_and_invert() {
        let table: &[(bool, bool, AnyValueRef<'_>, bool)] = &[
            (true, false, AnyValueRef::Bool(true), true),
            (true, false, AnyValueRef::Bool(false), false),
            (false, false, AnyValueRef::Bool(false), true),
            (true, false, AnyValueRef::Str("true"), false),
            (true, true, AnyValueRef::Bool(false), true),
            (true, true, AnyValueRef::Bool(true), false),
        ];
        for (value, invert, v, want) in table {
            for on_resource in [false, true] {
                let mut leaves = LeafSet::default();
                let c = BooleanAttributeConfig {
                    key: "app.debug".into(),
                    value: *value,
                    invert_match: *invert,
                };
                let p = BooleanAttribute::build(&c, &mut leaves).unwrap();
                let got = probe_one(&leaves, "app.debug", *v, on_resource, |t| p.evaluate(t));
                assert_eq!(got, *want, "value={value} invert={invert} {v:?}");
            }
        }
    }
}
