//! The counters of one run, counted once: what was read and what was decided. The run's summary
//! (`demo`, `run`'s last line, `bench`, dry-run) reads them, and `/metrics` shows them
//! (`tracesift_records_in_total`, `tracesift_spans_in_total`, `tracesift_bytes_in_total`,
//! `tracesift_traces_decided_total`, `tracesift_forced_decisions_total`): before every scrape
//! [`super::publish_runs`] sets those counters to the sums over the runs of the process (one,
//! outside tests), so the two views cannot disagree.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One cell of the decided-traces counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DecidedKey {
    /// The deciding policy's name (`None`: no policy matched).
    pub policy: Option<Arc<str>>,
    /// Kept or dropped.
    pub keep: bool,
    /// Why it was decided then (`inactivity`, `after_root`, `max_age`, `overflow`, …).
    pub trigger: &'static str,
    /// Decided early by a limit.
    pub forced: bool,
}

/// Counters of a whole run, shared by every partition task.
#[derive(Debug, Default)]
pub struct RunStats {
    /// Records read (readable or not).
    pub records: AtomicU64,
    /// Spans read.
    pub spans: AtomicU64,
    /// Record bytes read.
    pub bytes: AtomicU64,
    /// Records that could not be read (each goes to the dead-letter topic).
    pub dead_letters: AtomicU64,
    /// Spans kept (late ones included).
    pub spans_kept: AtomicU64,
    decided: Mutex<HashMap<DecidedKey, u64>>,
}

impl RunStats {
    /// Zeroed counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// A record was read: readable with `spans`, or not (`ok` false).
    pub fn record_read(&self, ok: bool, spans: usize, bytes: usize) {
        self.records.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        if ok {
            self.spans.fetch_add(spans as u64, Ordering::Relaxed);
        } else {
            self.dead_letters.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A trace was decided.
    pub fn trace_decided(&self, key: DecidedKey) {
        let mut d = self.decided.lock().unwrap_or_else(|p| p.into_inner());
        *d.entry(key).or_default() += 1;
    }

    /// Every cell of the decided-traces counter.
    pub fn decided(&self) -> Vec<(DecidedKey, u64)> {
        let d = self.decided.lock().unwrap_or_else(|p| p.into_inner());
        d.iter().map(|(k, n)| (k.clone(), *n)).collect()
    }

    fn sum(&self, f: impl Fn(&DecidedKey) -> bool) -> u64 {
        let d = self.decided.lock().unwrap_or_else(|p| p.into_inner());
        d.iter().filter(|(k, _)| f(k)).map(|(_, n)| n).sum()
    }

    /// Traces decided.
    pub fn traces_decided(&self) -> u64 {
        self.sum(|_| true)
    }

    /// Traces kept.
    pub fn traces_kept(&self) -> u64 {
        self.sum(|k| k.keep)
    }

    /// Traces decided early by a limit.
    pub fn forced(&self) -> u64 {
        self.sum(|k| k.forced)
    }

    /// Traces kept by `policy`.
    pub fn kept_by(&self, policy: &str) -> u64 {
        self.sum(|k| k.keep && k.policy.as_deref() == Some(policy))
    }

    /// Adds `other`'s counts to these (the process's sums over runs).
    pub(super) fn add(&self, other: &RunStats) {
        for (a, b) in [
            (&self.records, &other.records),
            (&self.spans, &other.spans),
            (&self.bytes, &other.bytes),
            (&self.dead_letters, &other.dead_letters),
            (&self.spans_kept, &other.spans_kept),
        ] {
            a.fetch_add(b.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        let mut d = self.decided.lock().unwrap_or_else(|p| p.into_inner());
        for (k, n) in other.decided() {
            *d.entry(k).or_default() += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_count_serves_every_view() {
        let s = RunStats::new();
        s.record_read(true, 3, 100);
        s.record_read(false, 0, 7);
        let key = |policy: Option<&str>, keep, forced| DecidedKey {
            policy: policy.map(Arc::from),
            keep,
            trigger: if forced { "overflow" } else { "inactivity" },
            forced,
        };
        s.trace_decided(key(Some("errors"), true, false));
        s.trace_decided(key(Some("errors"), true, true));
        s.trace_decided(key(None, false, false));
        assert_eq!(s.records.load(Ordering::Relaxed), 2);
        assert_eq!(s.spans.load(Ordering::Relaxed), 3);
        assert_eq!(s.dead_letters.load(Ordering::Relaxed), 1);
        assert_eq!(s.bytes.load(Ordering::Relaxed), 107);
        assert_eq!((s.traces_decided(), s.traces_kept(), s.forced()), (3, 2, 1));
        assert_eq!((s.kept_by("errors"), s.kept_by("slow")), (2, 0));
        let total = RunStats::new();
        total.add(&s);
        total.add(&s);
        assert_eq!(
            (total.traces_kept(), total.records.load(Ordering::Relaxed)),
            (4, 4)
        );
    }
}
