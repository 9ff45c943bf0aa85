//! Counters of a whole run, shared by every partition (read by `demo`, `bench` and dry-run).

use std::sync::atomic::AtomicU64;

/// Counters of a whole run, shared by every partition task (read by `demo` and `bench`).
#[derive(Debug, Default)]
pub struct RunStats {
    /// Records read.
    pub records: AtomicU64,
    /// Spans read.
    pub spans: AtomicU64,
    /// Record bytes read.
    pub bytes: AtomicU64,
    /// Traces decided.
    pub traces_decided: AtomicU64,
    /// Traces kept.
    pub traces_kept: AtomicU64,
    /// Spans kept (including late ones).
    pub spans_kept: AtomicU64,
    /// Decisions forced by limits.
    pub forced: AtomicU64,
    /// Records sent to the dead-letter topic.
    pub dead_letters: AtomicU64,
    /// Traces kept, per top-level policy index.
    pub kept_by_policy: Vec<AtomicU64>,
}

impl RunStats {
    /// Counters for `policies` top-level policies.
    pub fn new(policies: usize) -> Self {
        RunStats {
            kept_by_policy: (0..policies).map(|_| AtomicU64::new(0)).collect(),
            ..Default::default()
        }
    }
}
