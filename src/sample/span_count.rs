//! `span_count`: the trace's span count within `[min_spans, max_spans]`.

use serde::{Deserialize, Serialize};

use super::{Threshold, TraceView, Verdict};

/// The Collector's `span_count` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanCountConfig {
    /// Fewest spans (inclusive).
    #[serde(default)]
    pub min_spans: u32,
    /// Most spans (inclusive); 0 or absent = no upper bound, as in the Collector.
    #[serde(default)]
    pub max_spans: u32,
}

/// Compiled `span_count`.
#[derive(Debug)]
pub struct SpanCount {
    min: u32,
    max: u32,
}

impl SpanCount {
    /// Checks the range.
    pub fn build(c: &SpanCountConfig) -> Result<Self, String> {
        let max = if c.max_spans == 0 {
            u32::MAX
        } else {
            c.max_spans
        };
        if c.min_spans > max {
            return Err(format!(
                "min_spans {} is greater than max_spans {}",
                c.min_spans, c.max_spans
            ));
        }
        Ok(SpanCount {
            min: c.min_spans,
            max,
        })
    }

    /// Sampled when the span count is within the range.
    pub fn evaluate(&self, t: &TraceView<'_>) -> Verdict {
        if (self.min..=self.max).contains(&t.summary.span_count) {
            Verdict::Sampled {
                threshold: Threshold::ALWAYS,
            }
        } else {
            Verdict::NotSampled
        }
    }
}

super::policy_impl!(SpanCount, SpanCountConfig);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::tests::view_of;
    use crate::sample::TraceSummary;

    #[test]
    fn inclusive_range_and_open_top() {
        let table = [
            (2, 0, 1, false),
            (2, 0, 2, true),
            (2, 0, 100_000, true),
            (2, 5, 5, true),
            (2, 5, 6, false),
            (0, 1, 0, true),
        ];
        for (min, max, n, want) in table {
            let p = SpanCount::build(&SpanCountConfig {
                min_spans: min,
                max_spans: max,
            })
            .unwrap();
            let s = TraceSummary {
                span_count: n,
                ..TraceSummary::new()
            };
            let got = view_of(&s, |t| p.evaluate(t));
            assert_eq!(got, want, "[{min}, {max}] n={n}");
        }
        assert!(SpanCount::build(&SpanCountConfig {
            min_spans: 5,
            max_spans: 2
        })
        .is_err());
    }
}
