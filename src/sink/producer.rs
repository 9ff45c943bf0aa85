//! The process's Kafka producer, replaceable after a fatal error.
//!
//! An idempotent producer that loses its sequence state (the broker lost acknowledged data, a
//! sequence desynchronization) raises a *fatal* error: librdkafka fails every queued and future
//! record of that instance, and its documented remedy is a new producer instance. Every writer
//! asks [`Producer::current`] for the instance to use on each attempt; the first writer that
//! sees the instance it used turn fatal replaces it ([`Producer::recover`]), once per
//! generation, and every write then retries on the new instance (at least once: records the old
//! instance may have written are written again, as after any retry).

use std::sync::{Arc, RwLock};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, Producer as _};

/// A shared handle on the current producer instance.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    current: RwLock<(u64, FutureProducer)>,
}

impl Producer {
    /// A handle on a new producer made from `config` (kept to make replacements).
    pub fn new(config: ClientConfig) -> Result<Self, rdkafka::error::KafkaError> {
        let p: FutureProducer = crate::source::kafka::create(&config)?;
        Ok(Producer {
            inner: Arc::new(Inner {
                config,
                current: RwLock::new((0, p)),
            }),
        })
    }

    /// The instance to write with, and its generation (for [`Producer::recover`]).
    pub fn current(&self) -> (u64, FutureProducer) {
        let g = self.inner.current.read().unwrap_or_else(|p| p.into_inner());
        (g.0, g.1.clone())
    }

    /// The instance without its generation.
    pub fn get(&self) -> FutureProducer {
        self.current().1
    }

    /// After a failed write on generation `used`: if that instance has a fatal error, replaces
    /// it (once per generation). Returns true when the instance was or is being replaced.
    pub fn recover(&self, used: u64, failed: &FutureProducer) -> bool {
        let Some((code, reason)) = failed.client().fatal_error() else {
            return false;
        };
        let mut g = self
            .inner
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if g.0 != used {
            return true;
        }
        match crate::source::kafka::create::<FutureProducer>(&self.inner.config) {
            Ok(p) => {
                tracing::error!(error = ?code, reason = %reason, generation = used + 1, "the Kafka producer hit a fatal error; replaced it with a new instance (pending writes are retried on it)");
                *g = (used + 1, p);
                crate::telemetry::producer_replaced();
            }
            Err(e) => {
                tracing::error!(error = %e, "the Kafka producer hit a fatal error and a new one cannot be created yet; retrying");
            }
        }
        true
    }

    /// Waits up to `timeout` for queued records to be delivered.
    pub fn flush(&self, timeout: std::time::Duration) {
        let _ = self.get().flush(timeout);
    }
}
