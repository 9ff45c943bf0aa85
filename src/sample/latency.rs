//! `latency`: the trace's duration, from its earliest span start to its latest span end.

use serde::{Deserialize, Serialize};

use super::{Threshold, TraceView, Verdict};

/// The Collector's `latency` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyConfig {
    /// Keep traces longer than this many milliseconds.
    pub threshold_ms: i64,
    /// When non-zero, keep only traces of at most this many milliseconds.
    #[serde(default)]
    pub upper_threshold_ms: i64,
}

/// Compiled `latency`.
#[derive(Debug)]
pub struct Latency {
    lower_ns: u64,
    upper_ns: Option<u64>,
}

impl Latency {
    /// Checks the bounds.
    pub fn build(c: &LatencyConfig) -> Result<Latency, String> {
        if c.threshold_ms < 0 || c.upper_threshold_ms < 0 {
            return Err("threshold_ms and upper_threshold_ms must not be negative".into());
        }
        if c.upper_threshold_ms != 0 && c.upper_threshold_ms <= c.threshold_ms {
            return Err(
                "upper_threshold_ms must be greater than threshold_ms (or 0 for no upper bound)"
                    .into(),
            );
        }
        Ok(Latency {
            lower_ns: (c.threshold_ms as u64).saturating_mul(1_000_000),
            upper_ns: (c.upper_threshold_ms != 0)
                .then(|| (c.upper_threshold_ms as u64).saturating_mul(1_000_000)),
        })
    }

    /// Sampled when the duration is in `(threshold, upper]`.
    pub fn evaluate(&self, t: &TraceView<'_>) -> Verdict {
        if t.summary.span_count == 0 {
            return Verdict::NotSampled;
        }
        let d = t.summary.duration_ns();
        let hit = d > self.lower_ns && self.upper_ns.is_none_or(|u| d <= u);
        if hit {
            Verdict::Sampled {
                threshold: Threshold::ALWAYS,
            }
        } else {
            Verdict::NotSampled
        }
    }
}

super::policy_impl!(Latency, LatencyConfig);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{StatusCode, TraceId};
    use crate::sample::tests::{meta, summary};

    fn verdict(c: LatencyConfig, spans: &[crate::otlp::SpanMeta]) -> bool {
        let s = summary(spans);
        let p = Latency::build(&c).unwrap();
        matches!(
            p.evaluate(&TraceView {
                trace_id: TraceId([1; 16]),
                summary: &s,
                now: crate::clock::StreamTime::ZERO,
                spans: &[],
            }),
            Verdict::Sampled { .. }
        )
    }

    #[test]
    fn duration_spans_all_spans() {
        let c = || LatencyConfig {
            threshold_ms: 500,
            upper_threshold_ms: 0,
        };
        // Root is short, but a child ends late: earliest start to latest end counts.
        let spans = [
            meta(1000, 1100, StatusCode::Unset, true),
            meta(1050, 1600, StatusCode::Unset, false),
        ];
        assert!(verdict(c(), &spans));
        assert!(!verdict(c(), &[meta(0, 500, StatusCode::Unset, true)]));
        assert!(!verdict(c(), &[]));
    }

    #[test]
    fn upper_bound_is_inclusive() {
        let c = || LatencyConfig {
            threshold_ms: 100,
            upper_threshold_ms: 200,
        };
        assert!(verdict(c(), &[meta(0, 200, StatusCode::Unset, true)]));
        assert!(!verdict(c(), &[meta(0, 201, StatusCode::Unset, true)]));
        assert!(!verdict(c(), &[meta(0, 100, StatusCode::Unset, true)]));
        assert!(Latency::build(&LatencyConfig {
            threshold_ms: 5,
            upper_threshold_ms: 5
        })
        .is_err());
        assert!(Latency::build(&LatencyConfig {
            threshold_ms: -1,
            upper_threshold_ms: 0
        })
        .is_err());
    }
}
