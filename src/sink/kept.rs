//! What the core hands to every sink: a kept trace (or the late spans of one). Pure data, apart
//! from the sinks' runtime, so the partition core can make it without reaching a sink.

use std::sync::Arc;

use crate::clock::MonoTime;
use crate::otlp::{SpanRef, TraceId};
use crate::sample::Decision;

/// Kept spans to hand to every sink. Each offset holds one reference per sink, released by
/// that sink's acknowledgement.
#[derive(Debug, Clone)]
pub struct KeptTrace {
    /// Trace id.
    pub trace_id: TraceId,
    /// The spans, already marked with the decision (OTEP 235 threshold, policy, adjusted count).
    pub spans: Vec<SpanRef>,
    /// The decision that kept them.
    pub decision: Decision,
    /// Name of the deciding policy.
    pub policy: Arc<str>,
    /// Record offsets the spans came from.
    pub offsets: Vec<i64>,
    /// When its first span came in: the fetch of its first record (process monotonic time; for
    /// late spans, their record's). For the end-to-end histogram; zero when not known.
    pub first_in: MonoTime,
}
