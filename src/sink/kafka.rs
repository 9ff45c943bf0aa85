//! Writes to Kafka: the sampled topic ([`KafkaSink`]),
//! and the one produce-until-acknowledged loop every Kafka write uses.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::FutureRecord;

use super::{backoff, Acks, DetachedBudget, KeptTrace, Producer, Sink};
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
/// with capped, jittered backoff; failures are counted under `label`. A record refused for good
/// ([`refuses_for_good`]) is not retried: the caller gets [`Refused`] and decides.
pub async fn produce_until_acked(
    producer: &Producer,
    out: Outgoing<'_>,
    label: SinkLabel,
) -> Result<(), Refused> {
    match produce(producer, out, label, u32::MAX).await {
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
    label: SinkLabel,
    attempts: u32,
) -> Result<(), Failed> {
    let topic = out.topic;
    let mut last: String;
    let mut attempt = 0u32;
    let mut queue_full = 0u32;
    let breaker = super::breaker::breaker(label);
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
            match instance.send_result(rec) {
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // Backing off (5 ms doubling to 1 s, jittered) so thousands of waiting
                    // writes do not spin.
                    let cap = Duration::from_millis(5)
                        .saturating_mul(1u32 << queue_full.min(8))
                        .min(Duration::from_secs(1));
                    queue_full = queue_full.saturating_add(1);
                    tokio::time::sleep(super::jitter(cap)).await;
                }
                other => break other,
            }
        };
        match sent {
            Ok(delivery) => match delivery.await {
                Ok(Ok(_)) => {
                    breaker.finished(true);
                    return Ok(());
                }
                Ok(Err((e, _))) if e.rdkafka_error_code().is_some_and(refuses_for_good) => {
                    // The sink answered: the record is at fault, not the sink.
                    breaker.finished(true);
                    telemetry::sink_error(label);
                    return Err(Failed::Refused(Refused(format!("{topic}: {e}"))));
                }
                Ok(Err((e, _))) => {
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
            Err((e, _)) if e.rdkafka_error_code().is_some_and(refuses_for_good) => {
                // Refused locally (too large for the producer): the sink is not at fault.
                breaker.finished(true);
                telemetry::sink_error(label);
                return Err(Failed::Refused(Refused(format!("{topic}: {e}"))));
            }
            Err((e, _)) => {
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

/// The sampled topic: OTLP protobuf, key = trace id hex, idempotent producer with acks=all. A
/// chunk the topic refuses for good goes to the dead-letter topic with the reason (headers
/// `tracesift.error`, `tracesift.sink: kafka`), so it never blocks the partition and is never
/// silently lost.
pub struct KafkaSink {
    producer: Producer,
    topic: Arc<str>,
    dead_letter_topic: Arc<str>,
    max_record_bytes: usize,
    clock: Arc<dyn Clock>,
    /// With best-effort delivery: the attempts per write, and the KiB its detached writes may
    /// hold (one permit per KiB).
    best_effort: Option<(u32, DetachedBudget)>,
}

impl KafkaSink {
    /// A sink writing to `topic`, refused chunks to `dead_letter_topic`.
    pub fn new(
        producer: Producer,
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
            best_effort: None,
        }
    }

    /// Best-effort delivery: commits do not wait for this sink; each write gets `attempts`
    /// tries and is then dropped and counted; while its writes hold `budget_bytes` already, new
    /// ones are dropped at once (shed, never queued without bound).
    pub fn best_effort(mut self, attempts: u32, budget_bytes: u64) -> Self {
        self.best_effort = Some((attempts, DetachedBudget::new(budget_bytes)));
        self
    }

    /// Writes one kept trace detached from the commit: offsets are released at once.
    fn accept_best_effort(
        &self,
        t: &KeptTrace<'_>,
        chunks: Vec<(usize, Vec<u8>)>,
        attempts: u32,
        budget: &DetachedBudget,
        acks: &mut Acks,
    ) {
        let offsets = t.offsets.to_vec();
        acks.push(Box::pin(async move { offsets }));
        let spans = t.spans.len();
        let bytes: u64 = chunks.iter().map(|(_, p)| p.len() as u64).sum();
        let Some(permit) = budget.try_hold(bytes) else {
            telemetry::spans_dropped(SinkLabel::Kafka, spans);
            return;
        };
        let producer = self.producer.clone();
        let topic = Arc::clone(&self.topic);
        let key = t.trace_id.to_hex();
        let clock = Arc::clone(&self.clock);
        let handed_over = clock.now();
        let first_in = t.first_in;
        // Detached on purpose: nothing waits for it. It ends after its attempts, and dies with
        // the runtime at shutdown (best effort).
        tokio::spawn(async move {
            let _permit = permit;
            for (n, p) in &chunks {
                let out = Outgoing::new(&topic, key.as_bytes(), p);
                match produce(&producer, out, SinkLabel::Kafka, attempts).await {
                    Ok(()) => telemetry::spans_out(SinkLabel::Kafka, *n),
                    Err(Failed::Refused(e)) => {
                        telemetry::spans_rejected(SinkLabel::Kafka, *n);
                        tracing::warn!(trace_id = %key, error = %e, "best-effort sink refused kept spans; dropped");
                    }
                    Err(Failed::GaveUp(why)) => {
                        telemetry::spans_dropped(SinkLabel::Kafka, *n);
                        tracing::warn!(trace_id = %key, error = %why, "best-effort sink gave up on kept spans; dropped");
                    }
                }
            }
            let now = clock.now();
            telemetry::sink_write(SinkLabel::Kafka, now.saturating_since(handed_over), spans);
            telemetry::end_to_end(SinkLabel::Kafka, first_in, now);
        });
    }
}

impl Sink for KafkaSink {
    fn accept(&mut self, t: &KeptTrace<'_>, acks: &mut Acks) {
        let chunks: Vec<(usize, Vec<u8>)> = otlp::chunk_spans(t.spans, self.max_record_bytes)
            .into_iter()
            .map(|c| (c.len(), otlp::encode_request(c.iter())))
            .collect();
        if let Some((attempts, budget)) = &self.best_effort {
            let budget = budget.clone();
            self.accept_best_effort(t, chunks, *attempts, &budget, acks);
            return;
        }
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
                        super::dead_letter::refused_kept(&producer, &dlq, &key, p, &e.0, SinkLabel::Kafka).await;
                    }
                }
            }
            let now = clock.now();
            telemetry::sink_write(SinkLabel::Kafka, now.saturating_since(handed_over), spans);
            telemetry::end_to_end(SinkLabel::Kafka, first_in, now);
            offsets
        }), bytes);
    }

    fn label(&self) -> SinkLabel {
        SinkLabel::Kafka
    }

    fn required(&self) -> bool {
        self.best_effort.is_none()
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
