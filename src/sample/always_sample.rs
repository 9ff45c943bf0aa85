//! `always_sample`: keeps every trace.

use super::{Threshold, TraceView, Verdict};

/// Keeps everything.
#[derive(Debug, Clone, Copy)]
pub struct AlwaysSample;

impl AlwaysSample {
    /// Always `Sampled` at threshold 0.
    pub fn evaluate(&self, _t: &TraceView<'_>) -> Verdict {
        Verdict::Sampled {
            threshold: Threshold::ALWAYS,
        }
    }
}

super::policy_impl!(AlwaysSample);
