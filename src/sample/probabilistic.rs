//! `probabilistic`: consistent probability sampling (OTEP 235) on the trace's randomness.

use serde::{Deserialize, Serialize};

use super::{threshold_for_probability, TraceView, Verdict};

/// The Collector's `probabilistic` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbabilisticConfig {
    /// Percentage of traces to keep, 0–100 (fractions allowed).
    pub sampling_percentage: f64,
}

/// Compiled `probabilistic`: a 56-bit rejection threshold.
#[derive(Debug)]
pub struct Probabilistic {
    threshold: u64,
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
            threshold: threshold_for_probability(p / 100.0),
        })
    }

    /// Sampled iff randomness >= threshold.
    pub fn evaluate(&self, t: &TraceView<'_>) -> Verdict {
        if t.randomness() >= self.threshold {
            Verdict::Sampled {
                threshold: self.threshold,
            }
        } else {
            Verdict::NotSampled
        }
    }
}
