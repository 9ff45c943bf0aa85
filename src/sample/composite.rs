//! `composite`: sub-policies tried in order; the first that keeps a trace is charged against its
//! share of `max_total_spans_per_second` for the current second. Within budget the trace is kept,
//! over budget it is not (and no later sub-policy is tried), as in the Collector. Shares come from
//! `rate_allocation` (`percent` of the total; 0 = an equal share); a sub-policy without an
//! allocation has no budget. Keeps carry [`Threshold::UNKNOWN`]: a budget makes the probability
//! unknown.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{compile, Evaluator, LeafSet, PolicySpec, Threshold, TraceView, Verdict};
use crate::settings::ConfigError;

/// One entry of `rate_allocation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateAllocation {
    /// Name of a sub-policy.
    pub policy: String,
    /// Its share of `max_total_spans_per_second`, in percent (0 = an equal share).
    pub percent: u32,
}

/// The Collector's `composite` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompositeConfig {
    /// Span budget per second for the whole composite.
    pub max_total_spans_per_second: u64,
    /// Sub-policy names in evaluation order (absent = the order of `composite_sub_policy`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_order: Vec<String>,
    /// The sub-policies.
    pub composite_sub_policy: Vec<PolicySpec>,
    /// Budget shares.
    #[serde(default)]
    pub rate_allocation: Vec<RateAllocation>,
}

impl CompositeConfig {
    /// Parses the block, reporting sub-policy problems with their own paths.
    pub fn from_yaml(
        path: &str,
        block: Option<&serde_norway::Value>,
        errors: &mut Vec<ConfigError>,
    ) -> Option<CompositeConfig> {
        const FIELDS: &[&str] = &[
            "max_total_spans_per_second",
            "policy_order",
            "composite_sub_policy",
            "rate_allocation",
        ];
        let map = super::block_fields(path, block, FIELDS, errors)?;
        let before = errors.len();
        let subs = super::sub_policies(path, map, "composite_sub_policy", errors);
        let field = |name: &str, errors: &mut Vec<ConfigError>| -> Option<serde_norway::Value> {
            match map.get(name) {
                Some(v) => Some(v.clone()),
                None if name == "max_total_spans_per_second" => {
                    errors.push(ConfigError::new(format!("{path}.{name}"), "required"));
                    None
                }
                None => None,
            }
        };
        let max: Option<u64> = field("max_total_spans_per_second", errors).and_then(|v| {
            serde_norway::from_value(v)
                .map_err(|e| {
                    errors.push(ConfigError::new(
                        format!("{path}.max_total_spans_per_second"),
                        e.to_string(),
                    ))
                })
                .ok()
        });
        let order: Vec<String> = field("policy_order", errors)
            .map(|v| {
                serde_norway::from_value(v).unwrap_or_else(|e| {
                    errors.push(ConfigError::new(
                        format!("{path}.policy_order"),
                        e.to_string(),
                    ));
                    Vec::new()
                })
            })
            .unwrap_or_default();
        let alloc: Vec<RateAllocation> = field("rate_allocation", errors)
            .map(|v| {
                serde_path_to_error::deserialize(v).unwrap_or_else(
                    |e: serde_path_to_error::Error<serde_norway::Error>| {
                        errors.push(ConfigError::new(
                            format!("{path}.rate_allocation{}", bracket(e.path().to_string())),
                            e.into_inner().to_string(),
                        ));
                        Vec::new()
                    },
                )
            })
            .unwrap_or_default();
        if errors.len() != before {
            return None;
        }
        Some(CompositeConfig {
            max_total_spans_per_second: max?,
            policy_order: order,
            composite_sub_policy: subs?,
            rate_allocation: alloc,
        })
    }
}

fn bracket(inner: String) -> String {
    if inner == "." {
        String::new()
    } else if inner.starts_with('[') {
        inner
    } else {
        format!(".{inner}")
    }
}

struct Sub {
    eval: Evaluator,
    budget: u64,
}

impl std::fmt::Debug for Sub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sub").field("budget", &self.budget).finish()
    }
}

/// Compiled `composite`.
#[derive(Debug)]
pub struct Composite {
    subs: Vec<Sub>,
    max_total: u64,
    /// (current second, spans kept this second per sub-policy).
    window: Mutex<(u64, Vec<u64>)>,
}

impl Composite {
    /// Compiles the sub-policies in evaluation order and computes their budgets.
    pub fn build(
        c: &CompositeConfig,
        path: &str,
        leaves: &mut LeafSet,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Composite> {
        let before = errors.len();
        if c.max_total_spans_per_second == 0 {
            errors.push(ConfigError::new(
                format!("{path}.max_total_spans_per_second"),
                "must be greater than 0",
            ));
        }
        if c.composite_sub_policy.is_empty() {
            errors.push(ConfigError::new(
                format!("{path}.composite_sub_policy"),
                "needs at least one sub-policy",
            ));
        }
        let names: Vec<&str> = c
            .composite_sub_policy
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        let order: Vec<usize> = if c.policy_order.is_empty() {
            (0..names.len()).collect()
        } else {
            let mut order = Vec::new();
            for (i, n) in c.policy_order.iter().enumerate() {
                match names.iter().position(|x| x == n) {
                    Some(j) if !order.contains(&j) => order.push(j),
                    Some(_) => errors.push(ConfigError::new(
                        format!("{path}.policy_order[{i}]"),
                        format!("`{n}` is listed twice"),
                    )),
                    None => errors.push(ConfigError::new(
                        format!("{path}.policy_order[{i}]"),
                        format!(
                            "no sub-policy named `{n}`; sub-policies: {}",
                            names.join(", ")
                        ),
                    )),
                }
            }
            if order.len() == names.len() {
                order
            } else {
                let missing: Vec<&str> = (0..names.len())
                    .filter(|j| !order.contains(j))
                    .map(|j| names[j])
                    .collect();
                if !missing.is_empty() {
                    errors.push(ConfigError::new(
                        format!("{path}.policy_order"),
                        format!("must list every sub-policy; missing {}", missing.join(", ")),
                    ));
                }
                order
            }
        };
        let total = c.max_total_spans_per_second;
        let equal = total / (names.len().max(1) as u64);
        let mut percent_sum = 0u64;
        for (i, a) in c.rate_allocation.iter().enumerate() {
            if !names.contains(&a.policy.as_str()) {
                errors.push(ConfigError::new(
                    format!("{path}.rate_allocation[{i}].policy"),
                    format!(
                        "no sub-policy named `{}`; sub-policies: {}",
                        a.policy,
                        names.join(", ")
                    ),
                ));
            }
            percent_sum += u64::from(a.percent);
        }
        if percent_sum > 100 {
            errors.push(ConfigError::new(
                format!("{path}.rate_allocation"),
                format!("percentages add up to {percent_sum}, more than 100"),
            ));
        }
        let mut subs = Vec::with_capacity(order.len());
        for j in order {
            let spec = &c.composite_sub_policy[j];
            let budget = c
                .rate_allocation
                .iter()
                .find(|a| a.policy == spec.name)
                .map_or(0, |a| match a.percent {
                    0 => equal,
                    p => total * u64::from(p) / 100,
                });
            if let Some(eval) = compile(
                spec,
                &format!("{path}.composite_sub_policy[{j}]"),
                leaves,
                errors,
            ) {
                subs.push(Sub { eval, budget });
            }
        }
        (errors.len() == before).then(|| Composite {
            window: Mutex::new((u64::MAX, vec![0; subs.len()])),
            subs,
            max_total: total,
        })
    }

    /// The first sub-policy that keeps the trace decides, within its budget for this second.
    pub fn evaluate(&self, t: &TraceView<'_>) -> Verdict {
        let Some(i) = self
            .subs
            .iter()
            .position(|s| matches!(s.eval.evaluate(t), Verdict::Sampled { .. }))
        else {
            return Verdict::NotSampled;
        };
        let Ok(mut w) = self.window.lock() else {
            return Verdict::NotSampled;
        };
        let second = t.now.as_duration().as_secs();
        if w.0 != second {
            w.0 = second;
            w.1.iter_mut().for_each(|c| *c = 0);
        }
        let spans = u64::from(t.summary.span_count);
        let after = w.1[i] + spans;
        let total_after = w.1.iter().sum::<u64>() + spans;
        if after <= self.subs[i].budget && total_after <= self.max_total {
            w.1[i] = after;
            Verdict::Sampled {
                threshold: Threshold::UNKNOWN,
            }
        } else {
            Verdict::NotSampled
        }
    }
}

super::policy_impl!(Composite, CompositeConfig, tree);
