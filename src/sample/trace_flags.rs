//! `trace_flags`: some span has the W3C sampled flag set.

use super::{Threshold, TraceView, Verdict};

/// Keeps traces with a span whose W3C trace flags have the sampled bit.
#[derive(Debug, Clone, Copy)]
pub struct TraceFlags;

impl TraceFlags {
    /// Sampled when any span had the sampled flag.
    pub fn evaluate(&self, t: &TraceView<'_>) -> Verdict {
        if t.summary.any_sampled_flag {
            Verdict::Sampled {
                threshold: Threshold::ALWAYS,
            }
        } else {
            Verdict::NotSampled
        }
    }
}

super::policy_impl!(TraceFlags);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::tests::view_of;
    use crate::sample::TraceSummary;

    #[test]
    fn sampled_flag() {
        for (flag, want) in [(true, true), (false, false)] {
            let s = TraceSummary {
                any_sampled_flag: flag,
                ..TraceSummary::new()
            };
            assert_eq!(view_of(&s, |t| TraceFlags.evaluate(t)), want);
        }
    }
}
