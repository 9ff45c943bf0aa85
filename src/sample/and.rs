//! `and`: keeps a trace only when every sub-policy keeps it; the effective threshold is the
//! largest of the sub-policies' (the combined probability is the smallest).

use serde::{Deserialize, Serialize};

use super::{compile, Evaluator, LeafSet, PolicySpec, Threshold, TraceView, Verdict};
use crate::settings::ConfigError;

/// The Collector's `and` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AndConfig {
    /// Sub-policies, all of which must keep the trace.
    pub and_sub_policy: Vec<PolicySpec>,
}

impl<'de> Deserialize<'de> for PolicySpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_norway::Value::deserialize(d)?;
        let mut errors = Vec::new();
        PolicySpec::from_yaml("", &v, &mut errors).ok_or_else(|| {
            serde::de::Error::custom(
                errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })
    }
}

impl AndConfig {
    /// Parses the block, reporting sub-policy problems with their own paths.
    pub fn from_yaml(
        path: &str,
        block: Option<&serde_norway::Value>,
        errors: &mut Vec<ConfigError>,
    ) -> Option<AndConfig> {
        let map = super::block_fields(path, block, &["and_sub_policy"], errors)?;
        let subs = super::sub_policies(path, map, "and_sub_policy", errors)?;
        Some(AndConfig {
            and_sub_policy: subs,
        })
    }
}

/// Compiled `and`.
#[derive(Debug)]
pub struct And {
    subs: Vec<Evaluator>,
}

impl And {
    /// Compiles the sub-policies.
    pub fn build(
        c: &AndConfig,
        path: &str,
        leaves: &mut LeafSet,
        errors: &mut Vec<ConfigError>,
    ) -> Option<And> {
        if c.and_sub_policy.is_empty() {
            errors.push(ConfigError::new(
                format!("{path}.and_sub_policy"),
                "needs at least one sub-policy",
            ));
            return None;
        }
        let before = errors.len();
        let subs: Vec<Evaluator> = c
            .and_sub_policy
            .iter()
            .enumerate()
            .filter_map(|(i, s)| compile(s, &format!("{path}.and_sub_policy[{i}]"), leaves, errors))
            .collect();
        (errors.len() == before).then_some(And { subs })
    }

    /// Sampled when every sub-policy is, at the largest of their thresholds.
    pub fn evaluate(&self, t: &TraceView<'_>) -> Verdict {
        let mut threshold = Threshold::ALWAYS;
        for s in &self.subs {
            match s.evaluate(t) {
                Verdict::Sampled { threshold: th } => threshold = threshold.max(th),
                Verdict::Error => return Verdict::Error,
                _ => return Verdict::NotSampled,
            }
        }
        Verdict::Sampled { threshold }
    }
}

super::policy_impl!(And, AndConfig, tree);
