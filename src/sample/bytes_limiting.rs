//! `bytes_limiting`: a token bucket of span bytes per second (the encoded OTLP size of the
//! trace's spans), shared by every partition. Keeps carry [`super::Threshold::UNKNOWN`].

use serde::{Deserialize, Serialize};

use super::rate_limiting::TokenBucket;
use super::{TraceView, Verdict};

/// The Collector's `bytes_limiting` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BytesLimitingConfig {
    /// Sustained bytes per second.
    pub bytes_per_second: u64,
    /// Bucket size in bytes; absent or 0 = twice `bytes_per_second`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_capacity: Option<u64>,
}

/// Compiled `bytes_limiting`.
#[derive(Debug)]
pub struct BytesLimiting {
    bucket: TokenBucket,
}

impl BytesLimiting {
    /// Builds the bucket.
    pub fn build(c: &BytesLimitingConfig) -> Result<Self, String> {
        Ok(BytesLimiting {
            bucket: TokenBucket::new(c.bytes_per_second, c.burst_capacity)
                .map_err(|e| format!("bytes_per_second: {e}"))?,
        })
    }

    /// Sampled while the bucket has room for the trace's bytes.
    pub fn evaluate(&self, t: &TraceView<'_>) -> Verdict {
        self.bucket.verdict(t.summary.bytes, t.now)
    }
}

super::policy_impl!(BytesLimiting, BytesLimitingConfig);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::StreamTime;
    use crate::sample::tests::view_at;
    use crate::sample::TraceSummary;

    #[test]
    fn limits_bytes_per_second() {
        let p = BytesLimiting::build(&BytesLimitingConfig {
            bytes_per_second: 10_000,
            burst_capacity: Some(10_000),
        })
        .unwrap();
        let s = TraceSummary {
            bytes: 4_000,
            ..TraceSummary::new()
        };
        let t0 = StreamTime::from_millis(5_000);
        assert!(view_at(&s, t0, |t| p.evaluate(t)));
        assert!(view_at(&s, t0, |t| p.evaluate(t)));
        assert!(!view_at(&s, t0, |t| p.evaluate(t)));
        assert!(view_at(&s, StreamTime::from_millis(5_200), |t| p.evaluate(t)));
        let big = TraceSummary {
            bytes: 10_001,
            ..TraceSummary::new()
        };
        assert!(!view_at(&big, StreamTime::from_millis(99_000), |t| p.evaluate(t)));
    }
}
