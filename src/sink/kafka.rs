//! Writes to Kafka: the sampled topic ([`KafkaSink`]),
//! and the one produce-until-acknowledged loop every Kafka write uses.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{backoff, Acks, KeptTrace, Sink};
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

/// Whether an error refuses this record for good (today: its size).
fn refuses_for_good(code: RDKafkaErrorCode) -> bool {
    matches!(code, RDKafkaErrorCode::MessageSizeTooLarge)
}

/// Produces one record until it is acknowledged by the broker, retrying with capped backoff;
/// failures are counted under `label`. A record refused for good (larger than the producer or
/// the topic accepts) is not retried: the caller gets [`Refused`] and decides.
pub async fn produce_until_acked(
    producer: &FutureProducer,
    out: Outgoing<'_>,
    label: SinkLabel,
) -> Result<(), Refused> {
    let topic = out.topic;
    let mut attempt = 0u32;
    loop {
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
                Ok(Ok(_)) => return Ok(()),
                Ok(Err((e, _))) if e.rdkafka_error_code().is_some_and(refuses_for_good) => {
                    telemetry::sink_error(label);
                    return Err(Refused(format!("{topic}: {e}")));
                }
                Ok(Err((e, _))) => {
                    telemetry::sink_error(label);
                    tracing::warn!(topic, error = %e, attempt, "delivery failed; retrying");
                }
                Err(_) => {
                    telemetry::sink_error(label);
                    tracing::warn!(topic, attempt, "delivery report lost; retrying");
                }
            },
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                // The producer's own bounded queue is full: wait for it to drain.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            Err((e, _)) if e.rdkafka_error_code().is_some_and(refuses_for_good) => {
                telemetry::sink_error(label);
                return Err(Refused(format!("{topic}: {e}")));
            }
            Err((e, _)) => {
                telemetry::sink_error(label);
                tracing::warn!(topic, error = %e, attempt, "produce failed; retrying");
            }
        }
        tokio::time::sleep(backoff(attempt)).await;
        attempt = attempt.saturating_add(1);
    }
}

/// The sampled topic: OTLP protobuf, key = trace id hex, idempotent producer with acks=all.
pub struct KafkaSink {
    producer: FutureProducer,
    topic: Arc<str>,
    max_record_bytes: usize,
}

impl KafkaSink {
    /// A sink writing to `topic`.
    pub fn new(producer: FutureProducer, topic: Arc<str>, max_record_bytes: usize) -> Self {
        KafkaSink {
            producer,
            topic,
            max_record_bytes,
        }
    }
}

impl Sink for KafkaSink {
    fn accept(&mut self, t: &KeptTrace<'_>, acks: &mut Acks) {
        let payloads: Vec<Vec<u8>> = otlp::chunk_spans(t.spans, self.max_record_bytes)
            .into_iter()
            .map(|c| otlp::encode_request(c.iter()))
            .collect();
        let producer = self.producer.clone();
        let topic = Arc::clone(&self.topic);
        let key = t.trace_id.to_hex();
        let offsets = t.offsets.to_vec();
        let spans = t.spans.len();
        acks.push(Box::pin(async move {
            for p in &payloads {
                let out = Outgoing::new(&topic, key.as_bytes(), p);
                if let Err(e) = produce_until_acked(&producer, out, SinkLabel::Kafka).await {
                    telemetry::spans_rejected(SinkLabel::Kafka, 1);
                    tracing::error!(trace_id = %key, bytes = p.len(), error = %e, "kept spans refused by the sampled topic for good; left out");
                }
            }
            telemetry::spans_out(SinkLabel::Kafka, spans);
            offsets
        }));
    }
}
