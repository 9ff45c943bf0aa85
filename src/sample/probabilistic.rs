//! `probabilistic`: consistent probability sampling (OTEP 235) on the trace's randomness.
//!
//! With a `hash_salt` the randomness is instead 56 bits of FNV-1a over the salt and the trace
//! id, as the Collector hashes: still a pure function of the trace (replays repeat it, the
//! adjusted count is right), but independent of upstream samplers rather than consistent with
//! them.

use serde::{Deserialize, Serialize};

use super::{Threshold, TraceView, Verdict};

/// The Collector's `probabilistic` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbabilisticConfig {
    /// Percentage of traces to keep, 0–100 (fractions allowed).
    pub sampling_percentage: f64,
    /// Salt for an independent hash of the trace id (empty = OTEP 235 randomness).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash_salt: String,
}

/// Compiled `probabilistic`: a 56-bit rejection threshold.
#[derive(Debug)]
pub struct Probabilistic {
    threshold: Threshold,
    salt: Option<Box<[u8]>>,
}

impl Probabilistic {
    /// Checks the percentage.
    pub fn build(c: &ProbabilisticConfig) -> Result<Probabilistic, String> {
        let p = c.sampling_percentage;
        if !(0.0..=100.0).contains(&p) {
            return Err(format!(
                "sampling_percentage must be between 0 and 100, got {p}"
            ));
        }
        Ok(Probabilistic {
            threshold: Threshold::for_probability(p / 100.0),
            salt: (!c.hash_salt.is_empty()).then(|| c.hash_salt.as_bytes().into()),
        })
    }

    /// Sampled iff randomness >= threshold.
    pub fn evaluate(&self, t: &TraceView<'_>) -> Verdict {
        let r = match &self.salt {
            None => t.randomness(),
            Some(salt) => crate::hash::fnv1a(&[salt, &t.trace_id.0]) >> 8,
        };
        if r >= self.threshold.raw() {
            Verdict::Sampled {
                threshold: self.threshold,
            }
        } else {
            Verdict::NotSampled
        }
    }
}

super::policy_impl!(Probabilistic, ProbabilisticConfig);
