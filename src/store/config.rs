//! `store:` — the trace store's section: waits, budgets, overflow behaviour, decision caches.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::settings::{ByteSize, ConfigError};

/// What to do when the trace store is over its trace or byte budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnOverflow {
    /// Decide the oldest traces early (counted as forced decisions).
    #[default]
    DecideOldest,
    /// Stop fetching the partition until decisions free room.
    Pause,
}

/// `store:` — how long traces wait for their spans, and how much may be buffered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Decide a trace when no span has arrived for this long.
    #[serde(with = "crate::settings::duration")]
    pub decision_wait: Duration,
    /// Decide a trace this long after its root span arrived (0 = off).
    #[serde(with = "crate::settings::duration")]
    pub decision_wait_after_root: Duration,
    /// Decide a trace at the latest this long after its first span arrived.
    #[serde(with = "crate::settings::duration")]
    pub max_trace_age: Duration,
    /// Traces buffered per partition at most.
    pub max_traces: usize,
    /// Span bytes buffered per partition at most.
    pub max_bytes: ByteSize,
    /// Spans of one trace at most; a trace reaching it is decided at once, later spans follow.
    pub max_spans_per_trace: u32,
    /// Bytes of one trace at most; a trace reaching it is decided at once, later spans follow.
    pub max_trace_bytes: ByteSize,
    /// What happens over budget.
    pub on_overflow: OnOverflow,
    /// Decisions remembered for late spans, kept and dropped bounded apart.
    pub decision_cache: DecisionCacheConfig,
    /// Timer resolution: how often due traces are looked for.
    #[serde(with = "crate::settings::duration")]
    pub tick: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            decision_wait: Duration::from_secs(10),
            decision_wait_after_root: Duration::from_secs(2),
            max_trace_age: Duration::from_secs(300),
            max_traces: 100_000,
            max_bytes: ByteSize(1 << 30),
            max_spans_per_trace: 50_000,
            max_trace_bytes: ByteSize(64 << 20),
            on_overflow: OnOverflow::DecideOldest,
            decision_cache: DecisionCacheConfig::default(),
            tick: Duration::from_millis(100),
        }
    }
}

/// `store.decision_cache:` — per partition, how many decisions are remembered and for how long,
/// so late spans follow their trace's decision. Kept and dropped decisions are bounded apart
/// (the Collector's `sampled_cache_size` / `non_sampled_cache_size`): most traces are dropped,
/// and a flood of drops must not push out the keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionCacheConfig {
    /// Kept decisions remembered at most.
    pub sampled_cache_size: usize,
    /// How long a kept decision is remembered.
    #[serde(with = "crate::settings::duration")]
    pub sampled_ttl: Duration,
    /// Dropped decisions remembered at most.
    pub non_sampled_cache_size: usize,
    /// How long a dropped decision is remembered.
    #[serde(with = "crate::settings::duration")]
    pub non_sampled_ttl: Duration,
}

impl Default for DecisionCacheConfig {
    fn default() -> Self {
        DecisionCacheConfig {
            sampled_cache_size: 50_000,
            sampled_ttl: Duration::from_secs(600),
            non_sampled_cache_size: 200_000,
            non_sampled_ttl: Duration::from_secs(600),
        }
    }
}

impl StoreConfig {
    /// Every problem of this section.
    pub fn check(&self, e: &mut Vec<ConfigError>) {
        let s = self;
        if s.decision_wait.is_zero() {
            e.push(ConfigError::new(
                "store.decision_wait",
                "must be greater than 0",
            ));
        }
        if s.max_trace_age < s.decision_wait {
            e.push(ConfigError::new(
                "store.max_trace_age",
                format!(
                    "must be at least store.decision_wait ({})",
                    humantime::format_duration(s.decision_wait)
                ),
            ));
        }
        if s.max_traces == 0 {
            e.push(ConfigError::new("store.max_traces", "must be at least 1"));
        }
        if s.max_bytes.0 < 1 << 20 {
            e.push(ConfigError::new("store.max_bytes", "must be at least 1MiB"));
        }
        if s.max_spans_per_trace == 0 {
            e.push(ConfigError::new(
                "store.max_spans_per_trace",
                "must be at least 1",
            ));
        }
        if s.max_trace_bytes.0 == 0 || s.max_trace_bytes > s.max_bytes {
            e.push(ConfigError::new(
                "store.max_trace_bytes",
                "must be greater than 0 and at most store.max_bytes",
            ));
        }
        if s.tick.is_zero() || s.tick > Duration::from_secs(10) {
            e.push(ConfigError::new(
                "store.tick",
                "must be between 1ms and 10s",
            ));
        }
        let dc = &s.decision_cache;
        for (path, size, ttl) in [
            ("sampled", dc.sampled_cache_size, dc.sampled_ttl),
            ("non_sampled", dc.non_sampled_cache_size, dc.non_sampled_ttl),
        ] {
            if size == 0 {
                e.push(ConfigError::new(
                    format!("store.decision_cache.{path}_cache_size"),
                    "must be at least 1",
                ));
            }
            if ttl < s.decision_wait {
                e.push(ConfigError::new(
                    format!("store.decision_cache.{path}_ttl"),
                    "must be at least store.decision_wait, or late spans outlive their decision",
                ));
            }
        }
    }
}
