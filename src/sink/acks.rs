//! The pending writes of one partition: a bounded set of futures, each resolving to the record
//! offsets whose references it releases once its write is durable.
//!
//! Bounded twice: by count and by bytes (what the writes hold in memory: encoded chunks,
//! segment rows, dead-letter payloads). At either limit the partition stops reading its input,
//! its queue fills and the source pauses the partition, so a sink outage of any length holds at
//! most the byte budget (plus what the trace store may still decide meanwhile, itself bounded
//! by `store.max_bytes`).

use std::future::Future;
use std::pin::Pin;

use futures::stream::{FuturesUnordered, StreamExt};

/// Offsets whose references a completed write releases (one reference per entry).
pub type Released = Vec<i64>;

/// A pending durable write.
pub type AckFuture = Pin<Box<dyn Future<Output = Released> + Send>>;

/// One pending write: the future, the bytes it holds until it completes, the spans it carries
/// (what is lost if it is shed).
pub struct Write {
    /// Resolves to the offsets it releases once durable.
    pub fut: AckFuture,
    /// Bytes it holds in memory.
    pub bytes: u64,
    /// Kept spans it writes (zero for writes of something else).
    pub spans: usize,
}

impl Future for Write {
    type Output = (Released, u64);

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let bytes = self.bytes;
        self.fut.as_mut().poll(cx).map(|r| (r, bytes))
    }
}

/// The pending writes of one partition, bounded by count and bytes.
pub struct Acks {
    futs: FuturesUnordered<Write>,
    limit: usize,
    bytes: u64,
    /// Bytes sinks buffer for writes not made yet (a batch open until the step ends).
    held: u64,
    byte_limit: u64,
}

impl Acks {
    /// An empty set that reports full at `limit` pending writes or `byte_limit` pending bytes.
    pub fn new(limit: usize, byte_limit: u64) -> Self {
        Acks {
            futs: FuturesUnordered::new(),
            limit,
            bytes: 0,
            held: 0,
            byte_limit,
        }
    }

    /// Adds a pending write holding no bytes worth counting.
    pub fn push(&mut self, f: AckFuture) {
        self.push_sized(f, 0);
    }

    /// Adds a pending write that holds `bytes` until it completes.
    pub fn push_sized(&mut self, f: AckFuture, bytes: u64) {
        self.push_write(Write {
            fut: f,
            bytes,
            spans: 0,
        });
    }

    /// Adds a pending write.
    pub fn push_write(&mut self, w: Write) {
        self.bytes += w.bytes;
        self.futs.push(w);
    }

    /// Takes every pending write out, unpolled or part-way (for a wrapper that runs them
    /// elsewhere: [`super::BestEffort`]); what sinks hold for writes to come stays.
    pub fn take_writes(&mut self) -> Vec<Write> {
        self.bytes = 0;
        std::mem::take(&mut self.futs).into_iter().collect()
    }

    /// Bytes sinks hold for writes not made yet ([`Acks::hold`]).
    pub fn held(&self) -> u64 {
        self.held
    }

    /// Pending writes.
    pub fn len(&self) -> usize {
        self.futs.len()
    }

    /// Counts `bytes` a sink buffers for a write it has not made yet against the budget, as
    /// if they were pending (until [`Acks::release`]).
    pub fn hold(&mut self, bytes: u64) {
        self.held += bytes;
    }

    /// Returns bytes of [`Acks::hold`] (the write was made, or given up).
    pub fn release(&mut self, bytes: u64) {
        self.held = self.held.saturating_sub(bytes);
    }

    /// Bytes the pending writes hold, with those sinks hold for writes to come.
    pub fn bytes(&self) -> u64 {
        self.bytes + self.held
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.futs.is_empty()
    }

    /// True at either limit: the partition stops reading input until writes complete.
    pub fn is_full(&self) -> bool {
        self.futs.len() >= self.limit || self.bytes() >= self.byte_limit
    }

    /// The next completed write (pending forever when there is none).
    pub async fn next(&mut self) -> Released {
        match self.futs.next().await {
            Some((r, bytes)) => {
                self.bytes -= bytes;
                r
            }
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_by_bytes_until_the_writes_complete() {
        let mut acks = Acks::new(100, 1000);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        acks.push_sized(
            Box::pin(async move {
                let _ = rx.await;
                vec![1, 2]
            }),
            600,
        );
        assert!(!acks.is_full());
        acks.push_sized(Box::pin(async { vec![3] }), 500);
        assert!(acks.is_full(), "1100 bytes pending against 1000");
        assert_eq!(acks.next().await, vec![3]);
        assert_eq!(acks.bytes(), 600);
        assert!(!acks.is_full());
        let _ = tx.send(());
        assert_eq!(acks.next().await, vec![1, 2]);
        assert_eq!((acks.bytes(), acks.len()), (0, 0));
        acks.hold(1000);
        assert!(acks.is_full(), "held bytes count against the budget");
        acks.release(400);
        assert_eq!(acks.bytes(), 600);
        assert!(!acks.is_full());
        let mut by_count = Acks::new(2, u64::MAX);
        by_count.push(Box::pin(std::future::pending()));
        by_count.push(Box::pin(std::future::pending()));
        assert!(by_count.is_full());
    }
}
