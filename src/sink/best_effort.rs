//! Best-effort delivery (`delivery: best_effort`), written once for every sink.
//!
//! [`BestEffort`] wraps a sink built to give up (a bounded number of attempts, or a deadline)
//! and detaches its writes from the commit: the offsets of an accepted trace are released at
//! once, and each write the inner sink makes runs as a task in a [`JoinSet`] the wrapper owns.
//! Those writes together hold at most the budget (`sinks.max_pending_bytes`, per partition): a
//! write that does not fit is shed (dropped and counted in `tracesift_sink_spans_dropped_total`),
//! never queued. At drain (revoke, shutdown) the wrapper gives its writes [`CLOSE_GRACE`] to
//! finish and cancels the rest, counting their spans dropped: nothing outlives the partition
//! task, nothing is lost without a count.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::{Acks, KeptTrace, Sink};
use crate::clock::MonoTime;
use crate::telemetry::{self, SinkLabel};

/// How long a drain waits for best-effort writes still out before cancelling them.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The bytes the detached writes of one best-effort sink may hold for one partition.
#[derive(Clone)]
pub struct DetachedBudget(Arc<tokio::sync::Semaphore>);

impl DetachedBudget {
    /// A budget of `bytes` (counted in KiB).
    pub fn new(bytes: u64) -> Self {
        let kib = usize::try_from(bytes >> 10)
            .unwrap_or(usize::MAX)
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        DetachedBudget(Arc::new(tokio::sync::Semaphore::new(kib)))
    }

    /// Holds `bytes` until the permit is dropped; `None` when the budget is spent.
    pub fn try_hold(&self, bytes: u64) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let kib = u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        Arc::clone(&self.0).try_acquire_many_owned(kib).ok()
    }
}

/// Counts a detached write's spans dropped unless it ran to its end (cancelled at drain).
struct InFlight {
    label: SinkLabel,
    spans: usize,
    done: bool,
}

impl InFlight {
    /// The write ran to its end: nothing to count.
    fn finished(mut self) {
        self.done = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.done {
            telemetry::spans_dropped(self.label, self.spans);
        }
    }
}

/// A sink whose writes the commit does not wait for.
pub struct BestEffort<S> {
    inner: S,
    /// Where the inner sink pushes its writes; emptied into `writes` after every call.
    staged: Acks,
    writes: JoinSet<()>,
    budget: DetachedBudget,
    /// What the inner sink holds for writes to come, as last passed on to the partition.
    held: u64,
}

impl<S: Sink> BestEffort<S> {
    /// `inner` with its writes detached, holding at most `budget_bytes` together.
    pub fn new(inner: S, budget_bytes: u64) -> Self {
        BestEffort {
            inner,
            staged: Acks::new(usize::MAX, u64::MAX),
            writes: JoinSet::new(),
            budget: DetachedBudget::new(budget_bytes),
            held: 0,
        }
    }

    /// Detached writes not finished yet.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.writes.len()
    }

    /// Runs what the inner sink staged, within the budget; passes on what it holds for writes
    /// to come (unsent batches count against the partition's budget like any write).
    fn detach(&mut self, acks: &mut Acks) {
        let held = self.staged.held();
        if held >= self.held {
            acks.hold(held - self.held);
        } else {
            acks.release(self.held - held);
        }
        self.held = held;
        let label = self.inner.label();
        for w in self.staged.take_writes() {
            let Some(permit) = self.budget.try_hold(w.bytes) else {
                telemetry::spans_dropped(label, w.spans);
                continue;
            };
            let guard = InFlight {
                label,
                spans: w.spans,
                done: false,
            };
            self.writes.spawn(async move {
                let _permit = permit;
                w.fut.await;
                guard.finished();
            });
        }
        // Reap what finished (their results are nothing: the offsets were released already).
        while self.writes.try_join_next().is_some() {}
    }
}

impl<S: Sink> Sink for BestEffort<S> {
    fn accept(&mut self, trace: &KeptTrace, acks: &mut Acks) {
        // The commit does not wait: this sink's references go at once.
        acks.push(Box::pin(std::future::ready(trace.offsets.to_vec())));
        self.inner.accept(trace, &mut self.staged);
        self.detach(acks);
    }

    fn tick(&mut self, now: MonoTime, acks: &mut Acks) {
        self.inner.tick(now, &mut self.staged);
        self.detach(acks);
    }

    fn flush(&mut self, acks: &mut Acks) {
        self.inner.flush(&mut self.staged);
        self.detach(acks);
    }

    fn close(&mut self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let all = async { while self.writes.join_next().await.is_some() {} };
            if tokio::time::timeout(CLOSE_GRACE, all).await.is_err() {
                tracing::warn!(
                    sink = self.inner.label().as_str(),
                    writes = self.writes.len(),
                    "best-effort writes still out at drain; cancelled"
                );
                self.writes.abort_all();
                while self.writes.join_next().await.is_some() {}
            }
        })
    }

    fn label(&self) -> SinkLabel {
        self.inner.label()
    }

    fn required(&self) -> bool {
        false
    }

    fn healthy(&self) -> bool {
        self.inner.healthy()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::Write;

    /// A sink whose writes finish when the test says so.
    struct Gate {
        release: Arc<tokio::sync::Notify>,
        bytes: u64,
    }

    impl Sink for Gate {
        fn accept(&mut self, t: &KeptTrace, acks: &mut Acks) {
            let release = Arc::clone(&self.release);
            let offsets = t.offsets.to_vec();
            acks.push_write(Write {
                fut: Box::pin(async move {
                    release.notified().await;
                    offsets
                }),
                bytes: self.bytes,
                spans: t.spans.len(),
            });
        }
        fn label(&self) -> SinkLabel {
            SinkLabel::Parquet
        }
        fn required(&self) -> bool {
            true
        }
        fn healthy(&self) -> bool {
            true
        }
    }

    fn kept(offsets: &[i64], policy: &Arc<str>) -> KeptTrace {
        KeptTrace {
            trace_id: crate::otlp::TraceId([1; 16]),
            spans: Vec::new(),
            decision: crate::sample::Decision {
                keep: true,
                policy: None,
                threshold: crate::otlp::threshold::Threshold::ALWAYS,
            },
            policy: Arc::clone(policy),
            offsets: offsets.to_vec(),
            first_in: MonoTime::ZERO,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn releases_at_once_sheds_past_its_budget_and_cancels_at_close() {
        let release = Arc::new(tokio::sync::Notify::new());
        let mut s = BestEffort::new(
            Gate {
                release: Arc::clone(&release),
                bytes: 600 << 10,
            },
            1 << 20,
        );
        let mut acks = Acks::new(100, u64::MAX);
        let policy: Arc<str> = Arc::from("p");
        s.accept(&kept(&[1, 2], &policy), &mut acks);
        assert_eq!(acks.next().await, vec![1, 2], "released without the write");
        assert_eq!(s.in_flight(), 1);
        // The second write does not fit the 1 MiB budget next to the first: shed.
        s.accept(&kept(&[3], &policy), &mut acks);
        assert_eq!(acks.next().await, vec![3]);
        assert_eq!(s.in_flight(), 1, "shed, not queued");
        assert!(acks.is_empty());
        // Never released: the drain cancels it after its grace.
        s.close().await;
        assert_eq!(s.in_flight(), 0);
        // With the budget back, a write goes out and finishes.
        s.accept(&kept(&[4], &policy), &mut acks);
        assert_eq!(acks.next().await, vec![4]);
        tokio::task::yield_now().await;
        release.notify_one();
        s.close().await;
        assert_eq!(s.in_flight(), 0);
    }
}
