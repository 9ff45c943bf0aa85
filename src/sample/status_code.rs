//! `status_code`: some span of the trace has one of the listed status codes.

use serde::{Deserialize, Serialize};

use super::{Threshold, TraceView, Verdict};
use crate::otlp::StatusCode;

/// The Collector's `status_code` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusCodeConfig {
    /// Any of `ERROR`, `OK`, `UNSET`.
    pub status_codes: Vec<StatusCode>,
}

/// Compiled `status_code`: a bit mask over the codes.
#[derive(Debug)]
pub struct StatusCodePolicy {
    mask: u8,
}

impl StatusCodePolicy {
    /// At least one code is required.
    pub fn build(c: &StatusCodeConfig) -> Result<StatusCodePolicy, String> {
        if c.status_codes.is_empty() {
            return Err("status_codes must list at least one of ERROR, OK, UNSET".into());
        }
        Ok(StatusCodePolicy {
            mask: c.status_codes.iter().fold(0, |m, s| m | s.bit()),
        })
    }

    /// Sampled when a span with a listed code was seen.
    pub fn evaluate(&self, t: &TraceView<'_>) -> Verdict {
        if t.summary.status_mask & self.mask != 0 {
            Verdict::Sampled {
                threshold: Threshold::ALWAYS,
            }
        } else {
            Verdict::NotSampled
        }
    }
}

super::policy_impl!(StatusCodePolicy, StatusCodeConfig);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::TraceId;
    use crate::sample::tests::{meta, summary};

    #[test]
    fn any_span_with_the_code() {
        let p = StatusCodePolicy::build(&StatusCodeConfig {
            status_codes: vec![StatusCode::Error],
        })
        .unwrap();
        let hit = summary(&[
            meta(0, 1, StatusCode::Ok, true),
            meta(0, 1, StatusCode::Error, false),
        ]);
        let miss = summary(&[
            meta(0, 1, StatusCode::Ok, true),
            meta(0, 1, StatusCode::Unset, false),
        ]);
        let v = |s| {
            p.evaluate(&TraceView {
                trace_id: TraceId([1; 16]),
                summary: s,
                now: crate::clock::StreamTime::ZERO,
                spans: &[],
            })
        };
        assert_eq!(
            v(&hit),
            Verdict::Sampled {
                threshold: Threshold::ALWAYS
            }
        );
        assert_eq!(v(&miss), Verdict::NotSampled);
        assert!(StatusCodePolicy::build(&StatusCodeConfig {
            status_codes: vec![]
        })
        .is_err());
    }

    #[test]
    fn parses_collector_spelling() {
        let c: StatusCodeConfig =
            serde_norway::from_str("status_codes: [ERROR, OK, UNSET]").unwrap();
        assert_eq!(
            c.status_codes,
            vec![StatusCode::Error, StatusCode::Ok, StatusCode::Unset]
        );
        assert!(serde_norway::from_str::<StatusCodeConfig>("status_codes: [FAIL]").is_err());
    }
}
