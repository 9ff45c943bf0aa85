//! The sampled topic: kept traces as OTLP protobuf records, idempotent producer, acks=all.
//!
//! Each kept trace is encoded when it is accepted (its span bytes spliced,
//! [`otlp::encode_request`]). With `records: per_trace` it is written at once as its own
//! record, keyed by its trace id hex. With `records: batched` (the default) it is appended to
//! the batch of the sampled-topic partition its trace id hashes to ([`KeyHash`], the producer's
//! partitioner applied to the hex id, so a trace goes where a keyed record of it would):
//! concatenated `ExportTraceServiceRequest` messages are one message holding both's
//! `resource_spans`, so a batch is the traces' encodings back to back. Batches are written on
//! every tick and flush, when a batch would pass `max_record_bytes`, and when all of them
//! together would (so a partition task holds at most `max_record_bytes` of unsent batches). A
//! record of one trace is keyed by its trace id; a batch has no key. A trace larger than one
//! record goes alone, in several records keyed by its trace id. Unsent batches count against
//! the partition's pending-write budget ([`Acks::hold`]) like the writes they become.
//!
//! A write's acknowledgement releases the offsets of every trace in it. A record the topic
//! refuses for good is never retried as is: a batch is split into its traces, each written
//! alone, and a trace refused alone goes to the dead-letter topic with the reason (required
//! delivery; headers `tracesift.error`, `tracesift.sink: kafka`) or is counted rejected
//! (best effort). It never blocks the partition and is never silently lost.

use std::ops::Range;
use std::sync::Arc;

use super::{produce, Failed, KeyHash, Outgoing};
use crate::clock::{Clock, MonoTime};
use crate::otlp::{self, TraceId};
use crate::sink::producer::Topic;
use crate::sink::{Acks, KeptTrace, Producer, Sink};
use crate::telemetry::{self, SinkLabel};

/// Where writes go, shared by the writes in flight.
struct Target {
    producer: Producer,
    topic: Arc<str>,
    dead_letter_topic: Arc<str>,
    clock: Arc<dyn Clock>,
}

/// One trace's spans in a record.
#[derive(Debug, Clone)]
struct Part {
    trace_id: TraceId,
    /// Its bytes in the record's payload.
    bytes: Range<usize>,
    spans: usize,
}

/// One record for the sampled topic: the encoded spans of one or more traces.
#[derive(Debug, Default)]
struct Record {
    /// An explicit partition (batched), else the producer's partitioner by key.
    partition: Option<i32>,
    payload: Vec<u8>,
    parts: Vec<Part>,
}

impl Record {
    fn spans(&self) -> usize {
        self.parts.iter().map(|p| p.spans).sum()
    }

    /// The key: the trace id hex when the record holds one trace, none for a batch.
    fn key(&self) -> Option<String> {
        match self.parts.as_slice() {
            [one] => Some(one.trace_id.to_hex()),
            _ => None,
        }
    }

    /// Appends one trace's encoded spans.
    fn push(&mut self, trace_id: TraceId, spans: usize, encoded: &[u8]) {
        let from = self.payload.len();
        self.payload.extend_from_slice(encoded);
        self.parts.push(Part {
            trace_id,
            bytes: from..self.payload.len(),
            spans,
        });
    }

    /// Its traces as records of their own.
    fn split(&self) -> Vec<Record> {
        self.parts
            .iter()
            .map(|p| {
                let mut r = Record {
                    partition: self.partition,
                    ..Record::default()
                };
                r.push(p.trace_id, p.spans, &self.payload[p.bytes.clone()]);
                r
            })
            .collect()
    }
}

/// Records written in order, whose acknowledgement releases `offsets`.
#[derive(Debug, Default)]
struct Write {
    records: Vec<Record>,
    offsets: Vec<i64>,
    /// When each trace's first span came in, for the end-to-end histogram.
    first_in: Vec<MonoTime>,
}

impl Write {
    fn bytes(&self) -> u64 {
        self.records.iter().map(|r| r.payload.len() as u64).sum()
    }
}

/// The unsent batches of `records: batched`, one per sampled-topic partition.
struct Batches {
    partitions: i32,
    hash: KeyHash,
    open: Vec<Write>,
    /// Payload bytes over all open batches.
    bytes: usize,
}

/// The sampled topic's sink for one partition task.
pub struct KafkaSink {
    target: Arc<Target>,
    max_record_bytes: usize,
    /// Attempts per write (`u32::MAX`: until acknowledged, refusals to the dead-letter topic;
    /// fewer: the sink gives up, as under [`crate::sink::BestEffort`]).
    attempts: u32,
    /// `records: batched`; none for `per_trace`.
    batches: Option<Batches>,
}

impl KafkaSink {
    /// A sink writing one record per kept trace to `topic`, refused records to
    /// `dead_letter_topic`.
    pub fn new(
        producer: Producer,
        topic: Arc<str>,
        dead_letter_topic: Arc<str>,
        max_record_bytes: usize,
        clock: Arc<dyn Clock>,
    ) -> Self {
        KafkaSink {
            target: Arc::new(Target {
                producer,
                topic,
                dead_letter_topic,
                clock,
            }),
            max_record_bytes,
            attempts: u32::MAX,
            batches: None,
        }
    }

    /// Batched records: the kept traces of a step, one record per partition of the topic's
    /// `partitions`, each trace placed by `hash` of its trace id hex.
    pub fn batched(mut self, partitions: i32, hash: KeyHash) -> Self {
        let partitions = partitions.max(1);
        self.batches = Some(Batches {
            partitions,
            hash,
            open: (0..partitions).map(|_| Write::default()).collect(),
            bytes: 0,
        });
        self
    }

    /// Each write gets `attempts` tries and is then dropped and counted; a record refused for
    /// good is dropped and counted too (for best-effort delivery, behind [`crate::sink::BestEffort`]).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// Hands a write over to the acknowledgements.
    fn send(&self, w: Write, acks: &mut Acks) {
        let target = Arc::clone(&self.target);
        acks.push_write(crate::sink::Write {
            bytes: w.bytes(),
            spans: w.records.iter().map(Record::spans).sum(),
            fut: Box::pin(deliver_all(target, w, self.attempts)),
        });
    }

    /// Writes the open batch of `partition`.
    fn send_batch(&mut self, partition: usize, acks: &mut Acks) {
        let Some(b) = &mut self.batches else { return };
        let Some(open) = b.open.get_mut(partition) else {
            return;
        };
        if open.records.is_empty() {
            return;
        }
        let w = std::mem::take(open);
        b.bytes -= w.bytes() as usize;
        acks.release(w.bytes());
        self.send(w, acks);
    }

    /// Writes every open batch.
    fn send_batches(&mut self, acks: &mut Acks) {
        let n = self.batches.as_ref().map_or(0, |b| b.open.len());
        for p in 0..n {
            self.send_batch(p, acks);
        }
    }
}

impl Sink for KafkaSink {
    fn accept(&mut self, t: &KeptTrace, acks: &mut Acks) {
        let chunks = otlp::chunk_spans(&t.spans, self.max_record_bytes);
        let partition = self.batches.as_ref().map(|b| {
            // The key a keyed record would carry: the trace id hex (on the stack, per trace).
            let mut hex = [0u8; 32];
            let key: &[u8] = match hex::encode_to_slice(t.trace_id.0, &mut hex) {
                Ok(()) => &hex,
                Err(_) => &[],
            };
            b.hash.partition(key, b.partitions)
        });
        if let (Some(p), [one]) = (partition, chunks.as_slice()) {
            let encoded = otlp::encode_request(one.iter());
            let slot = p as usize;
            let full = self.batches.as_ref().is_some_and(|b| {
                b.open[slot]
                    .records
                    .first()
                    .is_some_and(|r| r.payload.len() + encoded.len() > self.max_record_bytes)
            });
            if full {
                self.send_batch(slot, acks);
            }
            let Some(b) = &mut self.batches else { return };
            let open = &mut b.open[slot];
            if open.records.is_empty() {
                open.records.push(Record {
                    partition: Some(p),
                    ..Record::default()
                });
            }
            if let Some(r) = open.records.first_mut() {
                r.push(t.trace_id, t.spans.len(), &encoded);
            }
            open.offsets.extend_from_slice(&t.offsets);
            open.first_in.push(t.first_in);
            b.bytes += encoded.len();
            acks.hold(encoded.len() as u64);
            if b.bytes > self.max_record_bytes {
                // The batches of one task stay within one record's size together.
                self.send_batches(acks);
            }
            return;
        }
        // Alone: one record per trace, or a trace too large for one record.
        let records = chunks
            .iter()
            .map(|c| {
                let mut r = Record {
                    partition,
                    ..Record::default()
                };
                r.push(t.trace_id, c.len(), &otlp::encode_request(c.iter()));
                r
            })
            .collect();
        self.send(
            Write {
                records,
                offsets: t.offsets.to_vec(),
                first_in: vec![t.first_in],
            },
            acks,
        );
    }

    fn tick(&mut self, _now: MonoTime, acks: &mut Acks) {
        self.send_batches(acks);
    }

    fn flush(&mut self, acks: &mut Acks) {
        self.send_batches(acks);
    }

    fn label(&self) -> SinkLabel {
        SinkLabel::Kafka
    }

    fn required(&self) -> bool {
        true
    }

    fn healthy(&self) -> bool {
        self.target.producer.breaker(Topic::Sampled).is_closed()
    }
}

/// Writes the records of `w` in order (`attempts` each, `u32::MAX`: until acknowledged);
/// resolves to its offsets.
async fn deliver_all(target: Arc<Target>, w: Write, attempts: u32) -> Vec<i64> {
    let handed_over = target.clock.now();
    let spans = w.records.iter().map(Record::spans).sum();
    for r in &w.records {
        deliver(&target, r, attempts).await;
    }
    let now = target.clock.now();
    telemetry::sink_write(SinkLabel::Kafka, now.saturating_since(handed_over), spans);
    telemetry::end_to_end(SinkLabel::Kafka, &w.first_in, now);
    w.offsets
}

/// Writes one record; a batch refused for good is written again trace by trace.
async fn deliver(target: &Target, r: &Record, attempts: u32) {
    match deliver_one(target, r, attempts).await {
        Ok(()) => {}
        Err(Failed::Refused(e)) if r.parts.len() > 1 => {
            tracing::warn!(traces = r.parts.len(), bytes = r.payload.len(), error = %e, "a batch of kept traces refused by the sampled topic for good; writing its traces one by one");
            for one in r.split() {
                if let Err(f) = deliver_one(target, &one, attempts).await {
                    failed(target, &one, f, attempts).await;
                }
            }
        }
        Err(f) => failed(target, r, f, attempts).await,
    }
}

/// Produces one record (counting its spans out when it is acknowledged).
async fn deliver_one(target: &Target, r: &Record, attempts: u32) -> Result<(), Failed> {
    let key = r.key();
    let out = Outgoing {
        key: key.as_deref().map(str::as_bytes),
        partition: r.partition,
        ..Outgoing::new(&target.topic, &[], &r.payload)
    };
    produce(&target.producer, out, Topic::Sampled, attempts).await?;
    telemetry::spans_out(SinkLabel::Kafka, r.spans());
    Ok(())
}

/// A record of one trace that was not written: refused for good (to the dead-letter topic when
/// delivery is required), or given up on (best effort).
async fn failed(target: &Target, r: &Record, f: Failed, attempts: u32) {
    let spans = r.spans();
    let key = r.key().unwrap_or_default();
    match f {
        Failed::Refused(e) if attempts == u32::MAX => {
            telemetry::spans_rejected(SinkLabel::Kafka, spans);
            tracing::error!(trace_id = %key, bytes = r.payload.len(), error = %e, "kept spans refused by the sampled topic for good; written to the dead-letter topic");
            crate::sink::dead_letter::refused_kept(
                &target.producer,
                &target.dead_letter_topic,
                &key,
                &r.payload,
                &e.0,
                SinkLabel::Kafka,
            )
            .await;
        }
        Failed::Refused(e) => {
            telemetry::spans_rejected(SinkLabel::Kafka, spans);
            tracing::warn!(trace_id = %key, error = %e, "best-effort sink refused kept spans; dropped");
        }
        Failed::GaveUp(why) => {
            telemetry::spans_dropped(SinkLabel::Kafka, spans);
            tracing::warn!(trace_id = %key, error = %why, "best-effort sink gave up on kept spans; dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::SpanRef;

    /// Kept traces of `tracesift gen`: (trace id, spans).
    fn traces(n: usize) -> Vec<(TraceId, Vec<SpanRef>)> {
        let (records, _) = crate::gen::plan_records(&crate::gen::GenOptions {
            traces: n,
            ..Default::default()
        });
        let mut out: Vec<(TraceId, Vec<SpanRef>)> = Vec::new();
        let mut scanned = Vec::new();
        for r in records {
            let bytes = bytes::Bytes::from(r.value);
            otlp::scan_request_into(&bytes, &otlp::NoProbe, 0, &mut scanned).unwrap();
            for s in scanned.drain(..) {
                match out.iter_mut().find(|(t, _)| *t == s.trace_id) {
                    Some((_, spans)) => spans.push(s.span),
                    None => out.push((s.trace_id, vec![s.span])),
                }
            }
        }
        out
    }

    fn sink(max_record_bytes: usize) -> KafkaSink {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", "127.0.0.1:9");
        let producer = Producer::new(c, Arc::new(crate::clock::SystemClock::new())).unwrap();
        KafkaSink::new(
            producer,
            "sampled".into(),
            "dlq".into(),
            max_record_bytes,
            Arc::new(crate::clock::SystemClock::new()),
        )
        .batched(3, KeyHash::Crc32)
    }

    fn accept(s: &mut KafkaSink, t: TraceId, spans: &[SpanRef], offset: i64, acks: &mut Acks) {
        let policy: Arc<str> = "p".into();
        let kept = KeptTrace {
            trace_id: t,
            spans: spans.to_vec(),
            decision: crate::sample::Decision {
                keep: true,
                policy: Some(0),
                threshold: crate::otlp::threshold::Threshold::ALWAYS,
            },
            policy,
            offsets: vec![offset],
            first_in: MonoTime::ZERO,
        };
        s.accept(&kept, acks);
    }

    #[tokio::test]
    async fn a_step_writes_one_record_per_partition_of_traces_placed_by_their_key() {
        let traces = traces(40);
        let mut s = sink(900 << 10);
        let mut acks = Acks::new(1000, u64::MAX);
        for (i, (t, spans)) in traces.iter().enumerate() {
            accept(&mut s, *t, spans, i as i64, &mut acks);
        }
        assert_eq!(acks.len(), 0, "nothing is written before the step ends");
        let held = acks.bytes();
        assert_eq!(
            held,
            s.batches.as_ref().unwrap().bytes as u64,
            "unsent batches count against the budget"
        );
        let b = s.batches.as_ref().unwrap();
        let mut seen = 0;
        for (p, w) in b.open.iter().enumerate() {
            let [r] = w.records.as_slice() else {
                panic!("partition {p}: {} records", w.records.len())
            };
            assert_eq!(r.partition, Some(p as i32));
            for part in &r.parts {
                let want = KeyHash::Crc32.partition(part.trace_id.to_hex().as_bytes(), 3);
                assert_eq!(want, p as i32, "trace {} placed by its key", part.trace_id);
                // Each part decodes alone to exactly its trace's spans.
                let request = <opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest as prost::Message>::decode(&r.payload[part.bytes.clone()]).unwrap();
                let spans: Vec<_> = request
                    .resource_spans
                    .iter()
                    .flat_map(|rs| &rs.scope_spans)
                    .flat_map(|ss| &ss.spans)
                    .collect();
                assert_eq!(spans.len(), part.spans);
                assert!(spans.iter().all(|sp| sp.trace_id == part.trace_id.0));
            }
            assert_eq!(w.offsets.len(), r.parts.len());
            seen += r.parts.len();
        }
        assert_eq!(seen, traces.len());
        s.tick(MonoTime::ZERO, &mut acks);
        assert_eq!(acks.len(), 3, "one record per partition");
        assert_eq!(acks.bytes(), held, "the same bytes, now pending writes");
        assert!(s
            .batches
            .as_ref()
            .unwrap()
            .open
            .iter()
            .all(|w| w.records.is_empty()));
        assert_eq!(s.batches.as_ref().unwrap().bytes, 0);
    }

    #[tokio::test]
    async fn unsent_batches_stay_within_one_record() {
        let traces = traces(60);
        let max = 8 << 10;
        let mut s = sink(max);
        let mut acks = Acks::new(1000, u64::MAX);
        for (t, spans) in &traces {
            accept(&mut s, *t, spans, 0, &mut acks);
            let b = s.batches.as_ref().unwrap();
            assert!(b.bytes <= max, "{} unsent bytes", b.bytes);
            let sum: usize = b.open.iter().map(|w| w.bytes() as usize).sum();
            assert_eq!(sum, b.bytes);
        }
        assert!(acks.len() > 3, "batches were written as they filled");
        s.flush(&mut acks);
        assert_eq!(s.batches.as_ref().unwrap().bytes, 0);
        let written: u64 = acks.bytes();
        assert!(written > 0);
    }

    #[test]
    fn a_split_batch_gives_each_trace_its_bytes_and_key() {
        let mut r = Record {
            partition: Some(3),
            ..Record::default()
        };
        let (a, b) = (TraceId([1; 16]), TraceId([2; 16]));
        r.push(a, 2, b"first");
        r.push(b, 1, b"second!");
        assert_eq!(r.key(), None);
        assert_eq!(r.spans(), 3);
        assert_eq!(r.payload, b"firstsecond!");
        let parts = r.split();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].payload, b"first");
        assert_eq!(parts[0].key(), Some(a.to_hex()));
        assert_eq!(parts[0].spans(), 2);
        assert_eq!(parts[1].payload, b"second!");
        assert_eq!(parts[1].key(), Some(b.to_hex()));
        assert!(parts.iter().all(|p| p.partition == Some(3)));
    }
}
