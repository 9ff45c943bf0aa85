//! `not`: inverts one sub-policy. A trace the sub-policy does not keep is kept as a rule keep
//! (threshold 0); one it keeps is not kept. `not` of a probabilistic policy keeps a fraction
//! whose randomness is *below* the threshold, which OTEP 235 cannot express: such keeps are
//! reported as rule keeps, so prefer probabilities outside `not`.

use serde::{Deserialize, Serialize};

use super::{compile, Evaluator, LeafSet, PolicySpec, Threshold, TraceView, Verdict};
use crate::settings::ConfigError;

/// The Collector's `not` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotConfig {
    /// The policy to invert.
    pub not_sub_policy: Box<PolicySpec>,
}

impl NotConfig {
    /// Parses the block, reporting sub-policy problems with their own paths.
    pub fn from_yaml(
        path: &str,
        block: Option<&serde_norway::Value>,
        errors: &mut Vec<ConfigError>,
    ) -> Option<NotConfig> {
        let map = super::block_fields(path, block, &["not_sub_policy"], errors)?;
        let Some(v) = map.get("not_sub_policy") else {
            errors.push(ConfigError::new(
                format!("{path}.not_sub_policy"),
                "expected one policy",
            ));
            return None;
        };
        PolicySpec::from_yaml(&format!("{path}.not_sub_policy"), v, errors).map(|p| NotConfig {
            not_sub_policy: Box::new(p),
        })
    }
}

/// Compiled `not`.
#[derive(Debug)]
pub struct Not {
    sub: Box<Evaluator>,
}

impl Not {
    /// Compiles the sub-policy.
    pub fn build(
        c: &NotConfig,
        path: &str,
        leaves: &mut LeafSet,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Not> {
        if c.not_sub_policy.kind.type_name() == "drop" {
            errors.push(ConfigError::new(
                format!("{path}.not_sub_policy.type"),
                "`drop` cannot be inverted",
            ));
            return None;
        }
        compile(
            &c.not_sub_policy,
            &format!("{path}.not_sub_policy"),
            leaves,
            errors,
        )
        .map(|e| Not { sub: Box::new(e) })
    }

    /// The inverse of the sub-policy's verdict.
    pub fn evaluate(&self, t: &TraceView<'_>) -> Verdict {
        match self.sub.evaluate(t) {
            Verdict::Sampled { .. } => Verdict::NotSampled,
            Verdict::NotSampled => Verdict::Sampled {
                threshold: Threshold::ALWAYS,
            },
            Verdict::Dropped => Verdict::Dropped,
            Verdict::Error => Verdict::Error,
        }
    }
}

super::policy_impl!(Not, NotConfig, tree);
