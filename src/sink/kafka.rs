//! Writes to Kafka: the sampled topic ([`KafkaSink`]),
//! and the one produce-until-acknowledged loop every Kafka write uses.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{backoff, Acks, KeptTrace, Sink};
use crate::clock::Clock;
use crate::otlp;
use crate::telemetry::{self, SinkLabel};

/// One record to write: where it goes and what it carries.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Key.
    pub key: &'a [u8],
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
            key,
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
/// no single record can be blamed for and which would otherwise turn every kept trace into a
/// dead letter.
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
/// with capped, jittered backoff; failures are counted under `label`. A record refused for good
/// ([`refuses_for_good`]) is not retried: the caller gets [`Refused`] and decides.
pub async fn produce_until_acked(
    producer: &FutureProducer,
    out: Outgoing<'_>,
    label: SinkLabel,
) -> Result<(), Refused> {
    let topic = out.topic;
    let mut attempt = 0u32;
    let mut queue_full = 0u32;
    let breaker = super::breaker::breaker(label);
    loop {
        breaker.permit().await;
        let mut rec = FutureRecord::to(topic).key(out.key).payload(out.payload);
        if let Some(h) = out.headers {
            rec = rec.headers(h.clone());
        }
        if let Some(p) = out.partition {
            rec = rec.partition(p);
        }
        if let Some(ts) = out.timestamp {
            rec = rec.timestamp(ts);
        }
        match producer.send_result(rec) {
            Ok(delivery) => match delivery.await {
                Ok(Ok(_)) => {
                    breaker.finished(true);
                    return Ok(());
                }
                Ok(Err((e, _))) if e.rdkafka_error_code().is_some_and(refuses_for_good) => {
                    // The sink answered: the record is at fault, not the sink.
                    breaker.finished(true);
                    telemetry::sink_error(label);
                    return Err(Refused(format!("{topic}: {e}")));
                }
                Ok(Err((e, _))) => {
                    breaker.finished(false);
                    telemetry::sink_error(label);
                    tracing::warn!(topic, error = %e, attempt, "delivery failed; retrying");
                }
                Err(_) => {
                    breaker.finished(false);
                    telemetry::sink_error(label);
                    tracing::warn!(topic, attempt, "delivery report lost; retrying");
                }
            },
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                // The producer's own bounded queue is full: wait for it to drain, backing off
                // (5 ms doubling to 1 s, jittered) so thousands of waiting writes do not spin.
                let cap = Duration::from_millis(5)
                    .saturating_mul(1u32 << queue_full.min(8))
                    .min(Duration::from_secs(1));
                queue_full = queue_full.saturating_add(1);
                tokio::time::sleep(super::jitter(cap)).await;
                continue;
            }
            Err((e, _)) if e.rdkafka_error_code().is_some_and(refuses_for_good) => {
                telemetry::sink_error(label);
                return Err(Refused(format!("{topic}: {e}")));
            }
            Err((e, _)) => {
                breaker.finished(false);
                telemetry::sink_error(label);
                tracing::warn!(topic, error = %e, attempt, "produce failed; retrying");
            }
        }
        tokio::time::sleep(backoff(attempt)).await;
        attempt = attempt.saturating_add(1);
    }
}

/// The sampled topic: OTLP protobuf, key = trace id hex, idempotent producer with acks=all. A
/// chunk the topic refuses for good goes to the dead-letter topic with the reason (headers
/// `tracesift.error`, `tracesift.sink: kafka`), so it never blocks the partition and is never
/// silently lost.
pub struct KafkaSink {
    producer: FutureProducer,
    topic: Arc<str>,
    dead_letter_topic: Arc<str>,
    max_record_bytes: usize,
    clock: Arc<dyn Clock>,
}

impl KafkaSink {
    /// A sink writing to `topic`, refused chunks to `dead_letter_topic`.
    pub fn new(
        producer: FutureProducer,
        topic: Arc<str>,
        dead_letter_topic: Arc<str>,
        max_record_bytes: usize,
        clock: Arc<dyn Clock>,
    ) -> Self {
        KafkaSink {
            producer,
            topic,
            dead_letter_topic,
            max_record_bytes,
            clock,
        }
    }
}

impl Sink for KafkaSink {
    fn accept(&mut self, t: &KeptTrace<'_>, acks: &mut Acks) {
        let chunks: Vec<(usize, Vec<u8>)> = otlp::chunk_spans(t.spans, self.max_record_bytes)
            .into_iter()
            .map(|c| (c.len(), otlp::encode_request(c.iter())))
            .collect();
        let producer = self.producer.clone();
        let topic = Arc::clone(&self.topic);
        let dlq = Arc::clone(&self.dead_letter_topic);
        let key = t.trace_id.to_hex();
        let offsets = t.offsets.to_vec();
        let clock = Arc::clone(&self.clock);
        let handed_over = clock.now();
        let (spans, first_in) = (t.spans.len(), t.first_in);
        let bytes: u64 = chunks.iter().map(|(_, p)| p.len() as u64).sum();
        acks.push_sized(Box::pin(async move {
            for (spans, p) in &chunks {
                let out = Outgoing::new(&topic, key.as_bytes(), p);
                match produce_until_acked(&producer, out, SinkLabel::Kafka).await {
                    Ok(()) => telemetry::spans_out(SinkLabel::Kafka, *spans),
                    Err(e) => {
                        telemetry::spans_rejected(SinkLabel::Kafka, *spans);
                        tracing::error!(trace_id = %key, bytes = p.len(), error = %e, "kept spans refused by the sampled topic for good; written to the dead-letter topic");
                        let headers = OwnedHeaders::new_with_capacity(3)
                            .insert(Header { key: "tracesift.error", value: Some(e.0.as_bytes()) })
                            .insert(Header { key: "tracesift.sink", value: Some(b"kafka".as_slice()) })
                            .insert(Header { key: "tracesift.trace_id", value: Some(key.as_bytes()) });
                        super::dead_letter::write(&producer, &dlq, key.as_bytes(), p, headers).await;
                    }
                }
            }
            let now = clock.now();
            telemetry::sink_write(SinkLabel::Kafka, now.saturating_since(handed_over), spans);
            telemetry::end_to_end(SinkLabel::Kafka, first_in, now);
            offsets
        }), bytes);
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
