//! The adaptive batch size of a batching sink (the seed's case 6): the target number of spans per
//! request follows the backlog, the spans already waiting for a request slot. A backlog of more
//! than two targets means requests do not keep up: the target doubles (fewer, larger requests
//! carry more per round trip). A backlog under half a target means the sink keeps up: the target
//! halves (a batch fills sooner, so spans wait less). Always within `[min, max]`.
//!
//! A sink shares one [`AdaptiveBatch`] across its partitions (the backlog is the sink's, not a
//! partition's); [`Backlog`] counts spans from the moment a batch is cut until its request starts.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The target batch size of one sink, read by every partition's batcher.
#[derive(Debug)]
pub struct AdaptiveBatch {
    min: usize,
    max: usize,
    target: AtomicUsize,
    adaptive: bool,
}

impl AdaptiveBatch {
    /// A target starting at `min` (adaptive) or fixed at `max`.
    pub fn new(min: usize, max: usize, adaptive: bool) -> Self {
        let min = min.max(1);
        let max = max.max(min);
        AdaptiveBatch {
            min,
            max,
            target: AtomicUsize::new(if adaptive { min } else { max }),
            adaptive,
        }
    }

    /// Spans a batch is cut at now.
    pub fn target(&self) -> usize {
        self.target.load(Ordering::Relaxed)
    }

    /// Adjusts the target to `backlog` spans waiting for a request slot; returns the new target.
    pub fn adjust(&self, backlog: u64) -> usize {
        if !self.adaptive {
            return self.max;
        }
        let t = self.target();
        let next = if backlog > 2 * t as u64 {
            (t * 2).min(self.max)
        } else if backlog < (t / 2) as u64 {
            (t / 2).max(self.min)
        } else {
            t
        };
        if next != t {
            self.target.store(next, Ordering::Relaxed);
        }
        next
    }
}

/// Spans cut into batches whose requests have not started yet (waiting for a slot).
#[derive(Debug, Default)]
pub struct Backlog(AtomicU64);

impl Backlog {
    /// `n` spans start waiting.
    pub fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// `n` spans stop waiting (their request starts, or their write ends).
    pub fn remove(&self, n: usize) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n as u64))
            });
    }

    /// Spans waiting now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_under_backlog_and_shrinks_when_idle_within_bounds() {
        let b = AdaptiveBatch::new(100, 1000, true);
        assert_eq!(b.target(), 100);
        // A steady backlog doubles it up to the ceiling.
        assert_eq!(b.adjust(5000), 200);
        assert_eq!(b.adjust(5000), 400);
        assert_eq!(b.adjust(5000), 800);
        assert_eq!(b.adjust(5000), 1000);
        assert_eq!(b.adjust(5000), 1000);
        // Between half a target and two targets: it holds.
        assert_eq!(b.adjust(1500), 1000);
        assert_eq!(b.adjust(600), 1000);
        // Idle: halves down to the floor.
        assert_eq!(b.adjust(0), 500);
        assert_eq!(b.adjust(0), 250);
        assert_eq!(b.adjust(0), 125);
        assert_eq!(b.adjust(0), 100);
        assert_eq!(b.adjust(0), 100);
    }

    #[test]
    fn fixed_when_not_adaptive() {
        let b = AdaptiveBatch::new(100, 1000, false);
        assert_eq!(b.target(), 1000);
        assert_eq!(b.adjust(0), 1000);
        assert_eq!(b.adjust(1 << 30), 1000);
    }

    #[test]
    fn backlog_never_goes_below_zero() {
        let b = Backlog::default();
        b.add(10);
        b.remove(4);
        assert_eq!(b.get(), 6);
        b.remove(100);
        assert_eq!(b.get(), 0);
    }
}
