//! Writes to Kafka: the sampled topic ([`KafkaSink`], in `kafka/sampled.rs`), the partition a
//! keyed record goes to (`kafka/partitioner.rs`), and the one produce-until-acknowledged loop
//! every Kafka write uses.

mod partitioner;
mod sampled;

pub use partitioner::KeyHash;
pub use sampled::KafkaSink;

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;

use super::producer::Topic;
use super::{backoff, Producer};
use crate::telemetry;

/// One record to write: where it goes and what it carries.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Key (none: the record has no key).
    pub key: Option<&'a [u8]>,
    /// Value.
    pub payload: &'a [u8],
    /// Headers, if any.
    pub headers: Option<&'a OwnedHeaders>,
    /// An explicit partition (else the producer's partitioner, by key).
    pub partition: Option<i32>,
    /// An explicit timestamp, Unix ms (else the produce time).
    pub timestamp: Option<i64>,
}

impl<'a> Outgoing<'a> {
    /// A keyed record with the producer's defaults.
    pub fn new(topic: &'a str, key: &'a [u8], payload: &'a [u8]) -> Self {
        Outgoing {
            topic,
            key: Some(key),
            payload,
            headers: None,
            partition: None,
            timestamp: None,
        }
    }
}

/// A write the broker or the producer refuses for good: retrying the same record cannot help.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Whether an error refuses this record for good. Permanent: the record is too large
/// (locally or for the topic), the topic does not exist or is invalid (librdkafka retries
/// leader changes itself and reports an unknown topic or partition only when the cluster's
/// metadata lacks it), the client is not authorized to write it, the broker
/// calls the record invalid. Everything else is transient and retried: timeouts, a broker down,
/// a CRC mismatch (corruption on the way, as Kafka's own clients treat it),
/// leader elections, a full queue, and also a fatal producer error (idempotence broken), which
/// no single record can be blamed for: the write retries on a new producer instance
/// ([`Producer::recover`]).
pub fn refuses_for_good(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::MessageSizeTooLarge
            | C::UnknownTopic
            | C::UnknownTopicOrPartition
            | C::InvalidTopic
            | C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::MessageBatchTooLarge
            | C::InvalidRecord
            | C::InvalidMessageSize
    )
}

/// Produces one record until it is acknowledged by the broker, retrying transient failures
/// with capped, jittered backoff, behind `topic`'s breaker; failures are counted under its
/// label. A record refused for good
/// ([`refuses_for_good`]) is not retried: the caller gets [`Refused`] and decides.
pub async fn produce_until_acked(
    producer: &Producer,
    out: Outgoing<'_>,
    topic: Topic,
) -> Result<(), Refused> {
    match produce(producer, out, topic, u32::MAX).await {
        Ok(()) => Ok(()),
        Err(Failed::Refused(r)) => Err(r),
        // Not reached: an unlimited budget is never spent (attempts saturate).
        Err(Failed::GaveUp(why)) => Err(Refused(why)),
    }
}

/// Why a write with an attempt budget did not happen.
#[derive(Debug, Clone)]
pub enum Failed {
    /// Refused for good.
    Refused(Refused),
    /// Its attempts were spent on transient failures (the last one given).
    GaveUp(String),
}

/// [`produce_until_acked`] with at most `attempts` tries of transient failures (a full
/// producer queue does not count as a try). `u32::MAX` = until it succeeds.
pub async fn produce(
    producer: &Producer,
    out: Outgoing<'_>,
    to: Topic,
    attempts: u32,
) -> Result<(), Failed> {
    let topic = out.topic;
    let label = to.label();
    let mut last: String;
    let mut attempt = 0u32;
    let mut queue_full = 0u32;
    let breaker = producer.breaker(to);
    loop {
        if attempts != u32::MAX && breaker.would_wait() {
            // A budgeted (best-effort) write does not queue behind an open breaker: shed.
            return Err(Failed::GaveUp(format!("{topic}: circuit open")));
        }
        breaker.permit().await;
        let (generation, instance) = producer.current();
        // Hand the record to librdkafka. Its own bounded queue being full is local
        // backpressure, neither a success nor a failure of the sink: wait for room without
        // giving the permit back (this write may be the breaker's probe).
        let sent = loop {
            let (mut rec, delivery) = super::producer::Instance::record(topic);
            rec = rec.payload(out.payload);
            rec.key = out.key;
            if let Some(h) = out.headers {
                rec = rec.headers(h.clone());
            }
            if let Some(p) = out.partition {
                rec = rec.partition(p);
            }
            if let Some(ts) = out.timestamp {
                rec = rec.timestamp(ts);
            }
            match instance.send(rec) {
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                    // Backing off (5 ms doubling to 1 s, jittered) so thousands of waiting
                    // writes do not spin.
                    let cap = Duration::from_millis(5)
                        .saturating_mul(1u32 << queue_full.min(8))
                        .min(Duration::from_secs(1));
                    queue_full = queue_full.saturating_add(1);
                    tokio::time::sleep(super::jitter(cap)).await;
                }
                other => break other.map(|()| delivery),
            }
        };
        match sent {
            Ok(delivery) => match delivery.await {
                Ok(Ok(_)) => {
                    breaker.finished(true);
                    return Ok(());
                }
                Ok(Err(e)) if e.rdkafka_error_code().is_some_and(refuses_for_good) => {
                    // The sink answered: the record is at fault, not the sink.
                    breaker.finished(true);
                    telemetry::sink_error(label);
                    return Err(Failed::Refused(Refused(format!("{topic}: {e}"))));
                }
                Ok(Err(e)) => {
                    breaker.finished(false);
                    telemetry::sink_error(label);
                    producer.recover(generation, &instance);
                    tracing::warn!(topic, error = %e, attempt, "delivery failed; retrying");
                    last = e.to_string();
                }
                Err(_) => {
                    breaker.finished(false);
                    telemetry::sink_error(label);
                    tracing::warn!(topic, attempt, "delivery report lost; retrying");
                    last = "delivery report lost".into();
                }
            },
            Err(e) if e.rdkafka_error_code().is_some_and(refuses_for_good) => {
                // Refused locally (too large for the producer): the sink is not at fault.
                breaker.finished(true);
                telemetry::sink_error(label);
                return Err(Failed::Refused(Refused(format!("{topic}: {e}"))));
            }
            Err(e) => {
                breaker.finished(false);
                telemetry::sink_error(label);
                producer.recover(generation, &instance);
                tracing::warn!(topic, error = %e, attempt, "produce failed; retrying");
                last = e.to_string();
            }
        }
        attempt = attempt.saturating_add(1);
        if attempt >= attempts {
            return Err(Failed::GaveUp(format!(
                "{topic}: {attempt} attempts, last: {last}"
            )));
        }
        tokio::time::sleep(backoff(attempt - 1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classed_permanent_or_transient() {
        use RDKafkaErrorCode as C;
        for permanent in [
            C::MessageSizeTooLarge,
            C::UnknownTopic,
            C::UnknownTopicOrPartition,
            C::TopicAuthorizationFailed,
            C::InvalidRecord,
        ] {
            assert!(refuses_for_good(permanent), "{permanent:?}");
        }
        for transient in [
            C::QueueFull,
            C::MessageTimedOut,
            C::BrokerTransportFailure,
            C::NotLeaderForPartition,
            C::NotEnoughReplicas,
            C::Fatal,
        ] {
            assert!(!refuses_for_good(transient), "{transient:?}");
        }
    }
}
