//! `trace_state`: some span's W3C tracestate has entry `key` with one of `values`. A leaf,
//! evaluated on each span's tracestate while spans are scanned.

use serde::{Deserialize, Serialize};

use super::{LeafSet, TraceView, Verdict};

/// The Collector's `trace_state` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceStateConfig {
    /// Tracestate key (a W3C list-member key, e.g. `vendor` or `tenant@vendor`).
    pub key: String,
    /// Values that match exactly.
    pub values: Vec<String>,
}

/// Compiled `trace_state`.
#[derive(Debug)]
pub struct TraceStatePolicy {
    bit: u128,
}

impl TraceStatePolicy {
    /// Registers the predicate.
    pub fn build(c: &TraceStateConfig, leaves: &mut LeafSet) -> Result<Self, String> {
        if c.key.is_empty() {
            return Err("key must not be empty".into());
        }
        if c.values.is_empty() {
            return Err("values must list at least one value".into());
        }
        let idx = leaves.add_trace_state(&c.key, &c.values)?;
        Ok(TraceStatePolicy { bit: 1u128 << idx })
    }

    /// Sampled when some span's tracestate matched.
    pub fn evaluate(&self, t: &TraceView<'_>) -> Verdict {
        super::leaf_verdict(t, self.bit, false)
    }
}

super::policy_impl!(TraceStatePolicy, TraceStateConfig, leaves);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::SpanProbe;
    use crate::sample::tests::view_of;
    use crate::sample::TraceSummary;

    #[test]
    fn matches_list_members() {
        let mut leaves = LeafSet::default();
        let p = TraceStatePolicy::build(
            &TraceStateConfig {
                key: "tenant".into(),
                values: vec!["gold".into(), "silver".into()],
            },
            &mut leaves,
        )
        .unwrap();
        for (ts, want) in [
            ("tenant=gold", true),
            ("ot=th:8, tenant=silver", true),
            ("congo=t61rcWkgMzE,tenant=bronze", false),
            ("tenants=gold", false),
            ("", false),
            ("tenant", false),
        ] {
            let s = TraceSummary {
                leaf_bits: leaves.trace_state(ts),
                ..TraceSummary::new()
            };
            assert_eq!(view_of(&s, |t| p.evaluate(t)), want, "{ts}");
        }
    }
}
