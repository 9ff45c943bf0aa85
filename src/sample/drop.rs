//! `drop`: drops a trace when *every* sub-policy keeps it, whatever the other policies say.
//! Drop policies are evaluated before all others ([`super::Sampler::decide`]).

use serde::{Deserialize, Serialize};

use super::{compile, Evaluator, LeafSet, PolicySpec, TraceView, Verdict};
use crate::settings::ConfigError;

/// The Collector's `drop` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DropConfig {
    /// Conditions, all of which must hold for the trace to be dropped.
    pub drop_sub_policy: Vec<PolicySpec>,
}

impl DropConfig {
    /// Parses the block, reporting sub-policy problems with their own paths.
    pub fn from_yaml(
        path: &str,
        block: Option<&serde_norway::Value>,
        errors: &mut Vec<ConfigError>,
    ) -> Option<DropConfig> {
        let map = super::block_fields(path, block, &["drop_sub_policy"], errors)?;
        super::sub_policies(path, map, "drop_sub_policy", errors)
            .map(|s| DropConfig { drop_sub_policy: s })
    }
}

/// Compiled `drop`.
#[derive(Debug)]
pub struct Drop {
    subs: Vec<Evaluator>,
}

impl Drop {
    /// Compiles the conditions.
    pub fn build(
        c: &DropConfig,
        path: &str,
        leaves: &mut LeafSet,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Drop> {
        if c.drop_sub_policy.is_empty() {
            errors.push(ConfigError::new(
                format!("{path}.drop_sub_policy"),
                "needs at least one sub-policy",
            ));
            return None;
        }
        let before = errors.len();
        let subs: Vec<Evaluator> = c
            .drop_sub_policy
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                compile(s, &format!("{path}.drop_sub_policy[{i}]"), leaves, errors)
            })
            .collect();
        (errors.len() == before).then_some(Drop { subs })
    }

    /// `Dropped` when every condition keeps the trace, else `NotSampled`.
    pub fn evaluate(&self, t: &TraceView<'_>) -> Verdict {
        if self
            .subs
            .iter()
            .all(|s| matches!(s.evaluate(t), Verdict::Sampled { .. }))
        {
            Verdict::Dropped
        } else {
            Verdict::NotSampled
        }
    }
}

super::policy_impl!(Drop, DropConfig, tree);
