//! The source's hand-over contract with whoever processes a partition: a queue bounded in
//! records and bytes ([`partition_queue`]), the control messages ([`Control`]), the commit
//! board the processing publishes its commit points to ([`CommitBoard`]), and the [`Spawner`]
//! the pipeline implements to start a partition's processing.
//!
//! The source sends records with [`QueueTx::try_send`] and pauses the partition when the queue
//! is full; the processing takes them from its [`Inbox`]. The source marks the queue when it
//! reached the partition's end ([`QueueTx::reached_end`]); the processing reads it as
//! [`Inbox::caught_up`] (at the end, nothing queued).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::record::Record;

/// Commit points published by partitions, picked up and committed by the source's poll loop.
pub type CommitBoard = Arc<dashmap::DashMap<super::flow::PartitionKey, i64>>;

/// Starts a partition's processing (implemented by the pipeline).
pub trait Spawner: Send + Sync + 'static {
    /// Starts processing `topic`/`partition`: records arrive on `inbox`, instructions on
    /// `control`; the returned task is owned (and cancelled when needed) by the source.
    fn spawn(
        &self,
        topic: Arc<str>,
        partition: i32,
        inbox: Inbox,
        control: mpsc::Receiver<Control>,
    ) -> tokio::task::JoinHandle<()>;
}

/// A partition's input queue, bounded in records (the channel) and in bytes (a shared counter):
/// the source sends with [`QueueTx::try_send`], the task receives from the [`Inbox`].
pub fn partition_queue(records: usize, bytes: usize) -> (QueueTx, Inbox) {
    let (tx, rx) = mpsc::channel(records.max(1));
    let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let at_end = Arc::new(std::sync::atomic::AtomicBool::new(false));
    (
        QueueTx {
            tx,
            queued: Arc::clone(&queued),
            max_bytes: bytes,
            at_end: Arc::clone(&at_end),
        },
        Inbox { rx, queued, at_end },
    )
}

/// The source's end of a partition queue.
#[derive(Debug)]
pub struct QueueTx {
    tx: mpsc::Sender<Record>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
    max_bytes: usize,
    /// Set when the consumer reached the partition's end after the last record handed over.
    at_end: Arc<std::sync::atomic::AtomicBool>,
}

/// Why a record was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum QueueFull {
    /// Over the record or byte limit: pause the partition.
    Full,
    /// The task is gone (revoked or stopped).
    Closed,
}

impl QueueTx {
    /// Queues a record unless the queue is over either limit. A record larger than the byte
    /// limit is still queued when the queue is empty, so no record can block a partition forever.
    pub fn try_send(&self, rec: Record) -> Result<(), QueueFull> {
        let size = rec.size();
        let held = self.queued.load(Ordering::Acquire);
        if held > 0 && held + size > self.max_bytes {
            return Err(QueueFull::Full);
        }
        self.queued.fetch_add(size, Ordering::AcqRel);
        match self.tx.try_send(rec) {
            Ok(()) => {
                self.at_end.store(false, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                self.queued.fetch_sub(size, Ordering::AcqRel);
                Err(match e {
                    mpsc::error::TrySendError::Full(_) => QueueFull::Full,
                    mpsc::error::TrySendError::Closed(_) => QueueFull::Closed,
                })
            }
        }
    }

    /// The consumer reached the end of the partition: everything in the log was handed over.
    pub fn reached_end(&self) {
        self.at_end.store(true, Ordering::Release);
    }

    /// At most half full in records and in bytes: a paused partition may resume.
    pub fn has_room(&self) -> bool {
        self.tx.capacity() * 2 >= self.tx.max_capacity()
            && self.queued.load(Ordering::Acquire) * 2 <= self.max_bytes
    }
}

/// The task's end of a partition queue.
#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::Receiver<Record>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
    at_end: Arc<std::sync::atomic::AtomicBool>,
}

impl Inbox {
    fn took(&self, rec: &Record) {
        self.queued.fetch_sub(rec.size(), Ordering::AcqRel);
    }

    /// The next record (`None` once the source dropped its end).
    pub async fn recv(&mut self) -> Option<Record> {
        let r = self.rx.recv().await;
        if let Some(rec) = &r {
            self.took(rec);
        }
        r
    }

    /// The next record if one is queued.
    pub fn try_recv(&mut self) -> Option<Record> {
        let r = self.rx.try_recv().ok();
        if let Some(rec) = &r {
            self.took(rec);
        }
        r
    }

    /// True when the partition is at the log end and nothing is queued: there is nothing more
    /// to read, so stream time may follow the wall clock.
    pub fn caught_up(&self) -> bool {
        self.at_end.load(Ordering::Acquire) && self.rx.is_empty()
    }

    /// Records and bytes queued.
    pub fn depth(&self) -> (usize, usize) {
        (self.rx.len(), self.queued.load(Ordering::Acquire))
    }
}

/// Instructions from the source to a partition task.
#[derive(Debug)]
pub enum Control {
    /// Stop reading, finish pending writes, reply with the final commit point.
    Drain {
        /// Gets the offset to commit (`None` when nothing was read).
        reply: oneshot::Sender<Option<i64>>,
    },
}
