//! `rate_limiting`: a token bucket of spans per second, shared by every partition of the
//! process (as the Collector shares one limiter across shards). A trace passes when the bucket
//! holds at least its span count; a trace larger than the burst never passes. What it keeps has
//! no known probability, so its keeps carry [`Threshold::UNKNOWN`].

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{Threshold, TraceView, Verdict};
use crate::clock::StreamTime;

/// The Collector's `rate_limiting` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitingConfig {
    /// Sustained spans per second.
    pub spans_per_second: u64,
    /// Bucket size; absent or 0 = twice `spans_per_second`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_capacity: Option<u64>,
}

/// A token bucket refilled continuously at `rate` per second up to `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, StreamTime)>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u64, burst: Option<u64>) -> Result<TokenBucket, String> {
        if rate == 0 {
            return Err("the rate must be greater than 0".into());
        }
        let burst = match burst {
            Some(b) if b > 0 => b,
            _ => rate.saturating_mul(2),
        };
        Ok(TokenBucket {
            rate: rate as f64,
            burst: burst as f64,
            state: Mutex::new((burst as f64, StreamTime::ZERO)),
        })
    }

    /// `Sampled` (probability unknown) when `n` tokens could be taken at `now`.
    pub fn verdict(&self, n: u64, now: StreamTime) -> Verdict {
        if self.take(n, now) {
            Verdict::Sampled {
                threshold: Threshold::UNKNOWN,
            }
        } else {
            Verdict::NotSampled
        }
    }

    /// Takes `n` tokens if the bucket has them at `now`.
    pub fn take(&self, n: u64, now: StreamTime) -> bool {
        let Ok(mut st) = self.state.lock() else {
            return false;
        };
        let (tokens, last) = &mut *st;
        let elapsed = now.saturating_since(*last).as_secs_f64();
        if now > *last {
            *last = now;
        }
        *tokens = (*tokens + elapsed * self.rate).min(self.burst);
        let n = n as f64;
        if *tokens >= n {
            *tokens -= n;
            true
        } else {
            false
        }
    }
}

/// Compiled `rate_limiting`.
#[derive(Debug)]
pub struct RateLimiting {
    bucket: TokenBucket,
}

impl RateLimiting {
    /// Builds the bucket.
    pub fn build(c: &RateLimitingConfig) -> Result<Self, String> {
        Ok(RateLimiting {
            bucket: TokenBucket::new(c.spans_per_second, c.burst_capacity)
                .map_err(|e| format!("spans_per_second: {e}"))?,
        })
    }

    /// Sampled while the bucket has room for the trace's spans.
    pub fn evaluate(&self, t: &TraceView<'_>) -> Verdict {
        self.bucket.verdict(u64::from(t.summary.span_count), t.now)
    }
}

super::policy_impl!(RateLimiting, RateLimitingConfig);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::tests::view_at;
    use crate::sample::TraceSummary;

    #[test]
    fn bucket_refills_on_paused_time() {
        let p = RateLimiting::build(&RateLimitingConfig {
            spans_per_second: 100,
            burst_capacity: Some(100),
        })
        .unwrap();
        let s = TraceSummary {
            span_count: 10,
            ..TraceSummary::new()
        };
        let t0 = StreamTime::from_millis(1_000);
        // The full burst passes at once, then nothing until time moves.
        let kept = (0..20)
            .filter(|_| view_at(&s, t0, |t| p.evaluate(t)))
            .count();
        assert_eq!(kept, 10);
        assert!(!view_at(&s, t0, |t| p.evaluate(t)));
        // 100 ms later: 10 tokens, one trace.
        let t1 = StreamTime::from_millis(1_100);
        assert!(view_at(&s, t1, |t| p.evaluate(t)));
        assert!(!view_at(&s, t1, |t| p.evaluate(t)));
        // Over 10 s at most rate × time + burst spans pass.
        let mut kept = 0;
        for ms in (1_100..11_100).step_by(10) {
            for _ in 0..3 {
                kept += usize::from(view_at(&s, StreamTime::from_millis(ms), |t| p.evaluate(t)));
            }
        }
        assert!(
            (99..=101).contains(&kept),
            "{kept} traces of 10 spans in 10 s at 100/s"
        );
    }

    #[test]
    fn a_trace_larger_than_the_burst_never_passes() {
        let p = RateLimiting::build(&RateLimitingConfig {
            spans_per_second: 10,
            burst_capacity: None,
        })
        .unwrap();
        let s = TraceSummary {
            span_count: 21,
            ..TraceSummary::new()
        };
        assert!(!view_at(&s, StreamTime::from_millis(60_000), |t| p.evaluate(t)));
        let s = TraceSummary {
            span_count: 20,
            ..TraceSummary::new()
        };
        assert!(view_at(&s, StreamTime::from_millis(60_000), |t| p.evaluate(t)));
        assert!(RateLimiting::build(&RateLimitingConfig {
            spans_per_second: 0,
            burst_capacity: None
        })
        .is_err());
    }
}
