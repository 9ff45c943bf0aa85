//! The pending writes of one partition: a bounded set of futures, each resolving to the record
//! offsets whose references it releases once its write is durable.

use std::future::Future;
use std::pin::Pin;

use futures::stream::{FuturesUnordered, StreamExt};

/// Offsets whose references a completed write releases (one reference per entry).
pub type Released = Vec<i64>;

/// A pending durable write.
pub type AckFuture = Pin<Box<dyn Future<Output = Released> + Send>>;

/// The pending writes of one partition, bounded.
pub struct Acks {
    futs: FuturesUnordered<AckFuture>,
    limit: usize,
}

impl Acks {
    /// An empty set that reports full at `limit` pending writes.
    pub fn new(limit: usize) -> Self {
        Acks {
            futs: FuturesUnordered::new(),
            limit,
        }
    }

    /// Adds a pending write.
    pub fn push(&mut self, f: AckFuture) {
        self.futs.push(f);
    }

    /// Pending writes.
    pub fn len(&self) -> usize {
        self.futs.len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.futs.is_empty()
    }

    /// True at the limit: the partition stops reading input until writes complete.
    pub fn is_full(&self) -> bool {
        self.futs.len() >= self.limit
    }

    /// The next completed write (pending forever when there is none).
    pub async fn next(&mut self) -> Released {
        match self.futs.next().await {
            Some(r) => r,
            None => std::future::pending().await,
        }
    }
}
