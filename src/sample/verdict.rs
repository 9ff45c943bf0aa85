//! What a policy says about a trace ([`Verdict`]) and what the sampler decides ([`Decision`]).

use crate::otlp::threshold::Threshold;

/// What one policy says about a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep, at this threshold (0 for rule-based keeps).
    Sampled {
        /// The policy's effective rejection threshold.
        threshold: Threshold,
    },
    /// This policy does not keep the trace.
    NotSampled,
    /// Drop the trace whatever the other policies say.
    Dropped,
    /// The policy could not judge the trace (an `ottl_condition` evaluation error under
    /// `error_mode: propagate`): it does not vote, and `and` / `not` above it pass it on.
    Error,
}

/// Index of a top-level policy in the configuration.
pub type PolicyId = u16;

/// The outcome for a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Keep or drop.
    pub keep: bool,
    /// The deciding policy (for a keep, the one with the smallest threshold; for a drop by a
    /// drop policy, that policy); `None` when no policy matched.
    pub policy: Option<PolicyId>,
    /// This stage's rejection threshold (0 for rule keeps).
    pub threshold: Threshold,
}

impl Decision {
    /// The drop that follows when no policy keeps the trace.
    pub const NOT_SAMPLED: Decision = Decision {
        keep: false,
        policy: None,
        threshold: Threshold::NEVER,
    };
}
