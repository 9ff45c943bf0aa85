//! The process's Kafka producer, replaceable after a fatal error.
//!
//! An idempotent producer that loses its sequence state (the broker lost acknowledged data, a
//! sequence desynchronization) raises a *fatal* error: librdkafka fails every queued and future
//! record of that instance, and its documented remedy is a new producer instance. Every writer
//! asks [`Producer::current`] for the instance to use on each attempt; the first writer that
//! sees the instance it used turn fatal replaces it ([`Producer::recover`]), once per
//! generation, and every write then retries on the new instance (at least once: records the old
//! instance may have written are written again, as after any retry).
//!
//! An [`Instance`] is a librdkafka producer whose delivery reports complete a oneshot channel
//! per record, served by a thread of its own. (rust-rdkafka's `FutureProducer` polls every
//! 100 ms and its poll loop spins through the last millisecond of each wait, reading the clock:
//! about 1% of a core on an idle member. This thread waits a second per poll, woken at once by
//! every report, so an idle member's producer costs a tenth of that.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::ClientContext;
use tokio::sync::oneshot;

use super::breaker::Breaker;
use crate::clock::Clock;
use crate::telemetry::SinkLabel;

/// How long the reports thread waits per poll (it is woken by every report before that).
const POLL_WAIT: Duration = Duration::from_secs(1);

/// The outcome of one record: acknowledged, or why not.
pub type Delivery = oneshot::Receiver<Result<(), KafkaError>>;

/// Where a record's delivery report goes.
type ReportTo = Box<oneshot::Sender<Result<(), KafkaError>>>;

/// A record for [`Instance::send`].
pub type Record<'a> = BaseRecord<'a, [u8], [u8], ReportTo>;

/// Hands each record's delivery report to the writer waiting for it.
pub struct Reports;

impl ClientContext for Reports {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        crate::kafka::client_error(error, reason);
    }
}

impl ProducerContext for Reports {
    type DeliveryOpaque = ReportTo;

    fn delivery(&self, result: &DeliveryResult<'_>, tx: Self::DeliveryOpaque) {
        // The writer may have stopped waiting (shutdown): nothing to tell then.
        let _ = tx.send(result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone()));
    }
}

/// One producer instance and its reports thread (stopped when the last handle is dropped).
#[derive(Clone)]
pub struct Instance {
    inner: Arc<InstanceInner>,
}

struct InstanceInner {
    producer: Arc<BaseProducer<Reports>>,
    stop: Arc<AtomicBool>,
}

impl Drop for InstanceInner {
    fn drop(&mut self) {
        // The thread sees it within one poll and drops its handle (the last one) itself.
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Instance {
    fn new(config: &ClientConfig) -> Result<Self, KafkaError> {
        let producer: Arc<BaseProducer<Reports>> =
            Arc::new(crate::kafka::create_with_context(config, Reports)?);
        let stop = Arc::new(AtomicBool::new(false));
        let (p, halt) = (Arc::clone(&producer), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("tracesift-produce".into())
            .spawn(move || {
                while !halt.load(Ordering::Relaxed) {
                    p.poll(POLL_WAIT);
                }
            })
            .map_err(|e| {
                KafkaError::ClientCreation(format!("cannot start the producer's thread: {e}"))
            })?;
        Ok(Instance {
            inner: Arc::new(InstanceInner { producer, stop }),
        })
    }

    /// Hands a record to librdkafka; the receiver gets its delivery report. On refusal (queue
    /// full, too large, …) the error, at once.
    pub fn send(&self, record: Record<'_>) -> Result<(), KafkaError> {
        self.inner.producer.send(record).map_err(|(e, _)| e)
    }

    /// A record to `topic` and the receiver of its delivery report.
    pub fn record(topic: &str) -> (Record<'_>, Delivery) {
        let (tx, rx) = oneshot::channel();
        (BaseRecord::with_opaque_to(topic, Box::new(tx)), rx)
    }

    /// The fatal error of this instance, if it has one.
    pub fn fatal_error(&self) -> Option<(rdkafka::types::RDKafkaErrorCode, String)> {
        self.inner.producer.client().fatal_error()
    }

    fn flush(&self, timeout: Duration) {
        let _ = self.inner.producer.flush(timeout);
    }
}

/// The topics the process's producer writes, each behind a circuit breaker of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// The sampled topic.
    Sampled,
    /// The dead-letter topic.
    DeadLetter,
    /// The decision log.
    DecisionLog,
    /// The rekey stage's repartition topic.
    Rekey,
}

impl Topic {
    const ALL: [Topic; 4] = [
        Topic::Sampled,
        Topic::DeadLetter,
        Topic::DecisionLog,
        Topic::Rekey,
    ];

    /// Its metric label.
    pub fn label(self) -> SinkLabel {
        match self {
            Topic::Sampled => SinkLabel::Kafka,
            Topic::DeadLetter => SinkLabel::DeadLetter,
            Topic::DecisionLog => SinkLabel::DecisionLog,
            Topic::Rekey => SinkLabel::Rekey,
        }
    }
}

/// A shared handle on the current producer instance.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    current: RwLock<(u64, Instance)>,
    /// One breaker per [`Topic`], in [`Topic::ALL`]'s order.
    breakers: [Breaker; 4],
}

impl Producer {
    /// A handle on a new producer made from `config` (kept to make replacements); its
    /// breakers read `clock`.
    pub fn new(
        config: ClientConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let p = Instance::new(&config)?;
        Ok(Producer {
            inner: Arc::new(Inner {
                config,
                current: RwLock::new((0, p)),
                breakers: Topic::ALL.map(|t| Breaker::new(t.label(), Arc::clone(&clock))),
            }),
        })
    }

    /// The breaker of writes to `topic` (every writer of the process shares it).
    pub fn breaker(&self, topic: Topic) -> &Breaker {
        &self.inner.breakers[topic as usize]
    }

    /// The instance to write with, and its generation (for [`Producer::recover`]).
    pub fn current(&self) -> (u64, Instance) {
        let g = self.inner.current.read().unwrap_or_else(|p| p.into_inner());
        (g.0, g.1.clone())
    }

    /// The instance without its generation.
    pub fn get(&self) -> Instance {
        self.current().1
    }

    /// After a failed write on generation `used`: if that instance has a fatal error, replaces
    /// it (once per generation). Returns true when the instance was or is being replaced.
    pub fn recover(&self, used: u64, failed: &Instance) -> bool {
        let Some((code, reason)) = failed.fatal_error() else {
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
        match Instance::new(&self.inner.config) {
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
        self.get().flush(timeout);
    }
}
