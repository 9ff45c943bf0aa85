//! Hot sinks behind one trait: the sampled Kafka topic and hot Parquet segments (plus the
//! dead-letter writer, which uses the same producer and ack path).
//!
//! A sink never owns a channel or a task of its own: it is given each kept trace and pushes one
//! future per durable write into the partition's [`Acks`]. A future resolves to the record offsets
//! it covers once the write is acknowledged (delivery report, object-store put); the partition task
//! then releases one watermark reference per offset. Writes are retried with capped exponential
//! backoff until they succeed or the partition is revoked / shut down, in which case the offsets
//! stay uncommitted and the records are replayed: at-least-once, never a silent loss.

pub mod config;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use object_store::ObjectStoreExt;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::archive::{self, KeptSpan};
use crate::clock::MonoTime;
use crate::otlp::{self, SpanRef, TraceId};
use crate::sample::Decision;
use crate::telemetry::{self, SinkLabel};

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

/// A kept trace (or the late spans of one) handed to the sinks.
#[derive(Debug)]
pub struct KeptTrace<'a> {
    /// Trace id.
    pub trace_id: TraceId,
    /// Spans to write.
    pub spans: &'a [SpanRef],
    /// The decision that kept it.
    pub decision: Decision,
    /// Name of the deciding policy.
    pub policy: &'a Arc<str>,
    /// Record offsets the spans came from; each holds one reference for this sink.
    pub offsets: &'a [i64],
}

/// A hot sink.
pub trait Sink: Send {
    /// Takes a kept trace; pushes the futures that complete when it is durable.
    fn accept(&mut self, trace: &KeptTrace<'_>, acks: &mut Acks);
    /// Called on every tick (time-based flushing).
    fn tick(&mut self, _now: MonoTime, _acks: &mut Acks) {}
    /// Writes out anything buffered (before revoke or shutdown).
    fn flush(&mut self, _acks: &mut Acks) {}
}

const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

fn backoff(attempt: u32) -> Duration {
    BACKOFF_START
        .saturating_mul(1u32 << attempt.min(10))
        .min(BACKOFF_MAX)
}

/// One record to write: where it goes and what it carries.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Key.
    pub key: &'a str,
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
    pub fn new(topic: &'a str, key: &'a str, payload: &'a [u8]) -> Self {
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

/// Produces one record until it is acknowledged by the broker, retrying with capped backoff;
/// failures are counted under `label`.
pub async fn produce_until_acked(producer: &FutureProducer, out: Outgoing<'_>, label: SinkLabel) {
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
                Ok(Ok(_)) => return,
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
            Err((e, _)) => {
                telemetry::sink_error(label);
                tracing::warn!(topic, error = %e, attempt, "produce failed; retrying");
            }
        }
        tokio::time::sleep(backoff(attempt)).await;
        attempt = attempt.saturating_add(1);
    }
}

/// Splits spans into runs whose encoded request stays under `max_bytes` (a single larger span
/// still goes alone).
pub fn chunk_spans(spans: &[SpanRef], max_bytes: usize) -> Vec<&[SpanRef]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = 0;
    for (i, s) in spans.iter().enumerate() {
        // Generous per-span framing estimate: resource and scope headers are counted per span.
        let cost = s.bytes.len() + s.ctx.resource_field.len() + s.ctx.scope_field.len() + 16;
        if i > start && size + cost > max_bytes {
            out.push(&spans[start..i]);
            start = i;
            size = 0;
        }
        size += cost;
    }
    if start < spans.len() {
        out.push(&spans[start..]);
    }
    out
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
        let payloads: Vec<Vec<u8>> = chunk_spans(t.spans, self.max_record_bytes)
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
                produce_until_acked(&producer, Outgoing::new(&topic, &key, p), SinkLabel::Kafka)
                    .await;
            }
            telemetry::spans_out(SinkLabel::Kafka, spans);
            offsets
        }));
    }
}

/// Where a dead-letter record came from.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Why it could not be read.
    pub error: String,
    /// The record's key, if any.
    pub key: Option<Bytes>,
}

/// Writes one decision to the decision log (partition `partition`, the input's own) until it is
/// acknowledged; then releases one reference on each of `offsets`.
pub fn decision_record(
    producer: FutureProducer,
    topic: Arc<str>,
    partition: i32,
    key: String,
    value: Vec<u8>,
    offsets: Vec<i64>,
) -> AckFuture {
    Box::pin(async move {
        let out = Outgoing {
            partition: Some(partition),
            ..Outgoing::new(&topic, &key, &value)
        };
        produce_until_acked(&producer, out, SinkLabel::DecisionLog).await;
        telemetry::decisions_logged(1);
        offsets
    })
}

/// Writes the original bytes of an unreadable record to the dead-letter topic, with headers
/// `tracesift.error`, `tracesift.source.topic`, `tracesift.source.partition`,
/// `tracesift.source.offset`. Resolves to the record's offset once acknowledged.
pub fn dead_letter(
    producer: FutureProducer,
    dlq_topic: Arc<str>,
    payload: Bytes,
    from: DeadLetter,
) -> AckFuture {
    Box::pin(async move {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "tracesift.error",
                value: Some(from.error.as_bytes()),
            })
            .insert(Header {
                key: "tracesift.source.topic",
                value: Some(from.topic.as_bytes()),
            })
            .insert(Header {
                key: "tracesift.source.partition",
                value: Some(from.partition.to_string().as_bytes()),
            })
            .insert(Header {
                key: "tracesift.source.offset",
                value: Some(from.offset.to_string().as_bytes()),
            });
        let key = from
            .key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        let out = Outgoing {
            headers: Some(&headers),
            ..Outgoing::new(&dlq_topic, &key, &payload)
        };
        produce_until_acked(&producer, out, SinkLabel::DeadLetter).await;
        telemetry::dead_letter();
        vec![from.offset]
    })
}

/// Hot Parquet segments of one partition, flushed by size or age.
pub struct ParquetSink {
    store: Arc<dyn object_store::ObjectStore>,
    topic: Arc<str>,
    partition: i32,
    flush_interval: Duration,
    max_bytes: u64,
    encode_slots: Arc<tokio::sync::Semaphore>,
    rows: Vec<KeptSpan>,
    offsets: Released,
    bytes: u64,
    first_offset: i64,
    last_offset: i64,
    opened_at: Option<MonoTime>,
    now: MonoTime,
}

impl ParquetSink {
    /// A segment writer for one partition. `encode_slots` bounds concurrent encodes process-wide.
    pub fn new(
        store: Arc<dyn object_store::ObjectStore>,
        topic: Arc<str>,
        partition: i32,
        flush_interval: Duration,
        max_bytes: u64,
        encode_slots: Arc<tokio::sync::Semaphore>,
    ) -> Self {
        ParquetSink {
            store,
            topic,
            partition,
            flush_interval,
            max_bytes,
            encode_slots,
            rows: Vec::new(),
            offsets: Vec::new(),
            bytes: 0,
            first_offset: i64::MAX,
            last_offset: i64::MIN,
            opened_at: None,
            now: MonoTime::ZERO,
        }
    }

    fn write_out(&mut self, acks: &mut Acks) {
        if self.rows.is_empty() && self.offsets.is_empty() {
            return;
        }
        let rows = std::mem::take(&mut self.rows);
        let offsets = std::mem::take(&mut self.offsets);
        let (first, last) = (self.first_offset, self.last_offset);
        self.bytes = 0;
        self.first_offset = i64::MAX;
        self.last_offset = i64::MIN;
        self.opened_at = None;
        let store = Arc::clone(&self.store);
        let topic = Arc::clone(&self.topic);
        let partition = self.partition;
        let slots = Arc::clone(&self.encode_slots);
        acks.push(Box::pin(async move {
            let n = rows.len();
            let rows = Arc::new(rows);
            let mut attempt = 0u32;
            loop {
                let encoded = {
                    let _slot = slots.acquire().await;
                    let rows = Arc::clone(&rows);
                    tokio::task::spawn_blocking(move || archive::encode_segment(&rows, 1 << 20)).await
                };
                let files = match encoded {
                    Ok(Ok(files)) => files,
                    Ok(Err(e)) => {
                        telemetry::sink_error(SinkLabel::Parquet);
                        tracing::error!(partition, error = %e, "segment encoding failed; retrying");
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt = attempt.saturating_add(1);
                        continue;
                    }
                    Err(e) => {
                        telemetry::sink_error(SinkLabel::Parquet);
                        tracing::error!(partition, error = %e, "segment encoder task failed; retrying");
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt = attempt.saturating_add(1);
                        continue;
                    }
                };
                let mut ok = true;
                for f in &files {
                    let path = archive::hot_segment_path(&topic, partition, first, last, f.hour, f.content);
                    match store.put(&path, f.bytes.clone().into()).await {
                        Ok(_) => telemetry::archive_file("hot", f.bytes.len()),
                        Err(e) => {
                            ok = false;
                            telemetry::sink_error(SinkLabel::Parquet);
                            tracing::warn!(%path, error = %e, "segment write failed; retrying");
                            break;
                        }
                    }
                }
                if ok {
                    telemetry::spans_out(SinkLabel::Parquet, n);
                    return offsets;
                }
                tokio::time::sleep(backoff(attempt)).await;
                attempt = attempt.saturating_add(1);
            }
        }));
    }
}

impl Sink for ParquetSink {
    fn accept(&mut self, t: &KeptTrace<'_>, acks: &mut Acks) {
        if self.opened_at.is_none() {
            self.opened_at = Some(self.now);
        }
        for s in t.spans {
            self.bytes += s.bytes.len() as u64;
            self.rows.push(KeptSpan {
                trace_id: t.trace_id,
                span: s.clone(),
                policy: Arc::clone(t.policy),
                threshold: t.decision.threshold,
            });
        }
        for &o in t.offsets {
            self.first_offset = self.first_offset.min(o);
            self.last_offset = self.last_offset.max(o);
        }
        self.offsets.extend_from_slice(t.offsets);
        if self.bytes >= self.max_bytes {
            self.write_out(acks);
        }
    }

    fn tick(&mut self, now: MonoTime, acks: &mut Acks) {
        self.now = now;
        if self
            .opened_at
            .is_some_and(|t| now.saturating_since(t) >= self.flush_interval)
        {
            self.write_out(acks);
        }
    }

    fn flush(&mut self, acks: &mut Acks) {
        self.write_out(acks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::ScopeCtx;

    #[test]
    fn chunks_respect_the_size_limit() {
        let ctx = Arc::new(ScopeCtx::default());
        let spans: Vec<SpanRef> = (0..10)
            .map(|_| SpanRef {
                ctx: Arc::clone(&ctx),
                bytes: Bytes::from(vec![0u8; 84]),
            })
            .collect();
        let chunks = chunk_spans(&spans, 300);
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 10);
        assert!(
            chunks.iter().all(|c| c.len() == 3 || c.len() == 1),
            "{:?}",
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>()
        );
        for c in &chunks {
            assert!(otlp::encoded_request_len(c.iter()) <= 300);
        }
        // One oversized span still goes out, alone.
        let big = vec![SpanRef {
            ctx,
            bytes: Bytes::from(vec![0u8; 1000]),
        }];
        assert_eq!(chunk_spans(&big, 300).len(), 1);
    }

    #[test]
    fn backoff_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(50));
        assert_eq!(backoff(3), Duration::from_millis(400));
        assert_eq!(backoff(30), BACKOFF_MAX);
    }
}
