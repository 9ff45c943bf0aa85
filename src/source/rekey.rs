//! Rekey: for input topics whose records are not keyed by trace id (a Collector kafkaexporter
//! without `partition_traces_by_id`, mixed batches), split every record per trace and re-produce
//! each trace's spans as one record keyed by the trace id to the repartition topic
//! (`kafka.rekey.topic`), which the sampler consumes like any trace-keyed input.
//!
//! The stage is its own consumer group member (`<group_id>-rekey`) on `kafka.rekey.input_topics`.
//! Re-produced records keep the original record's timestamp; the producer is idempotent with
//! `acks=all`. An input offset is committed only after every record it was split into is
//! acknowledged (the same offset watermark as the sampler), so a crash replays rather than loses;
//! what is re-produced twice reaches the sampler as duplicate spans, which the archive's dedupe
//! removes. Undecodable records go to the dead-letter topic, as in the sampler, and so does a
//! trace the repartition topic refuses for good (too large for its `max.message.bytes`, say),
//! with the reason: nothing is left out silently.
//!
//! Bounded: the writes waiting for their acknowledgement hold at most
//! `kafka.rekey.max_pending_bytes` (and 10,000 writes); at either bound the stage stops
//! reading. Each write carries the assignment generation of its partition ([`Marks`]): after a
//! revoke and a new assignment of the same partition, a write of the old generation completing
//! late releases nothing on the new watermark.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::kafka::config::KafkaConfig;
use crate::otlp::{self, NoProbe, ScannedSpan, SpanRef, TraceId};
use crate::sink::{self, DeadLetter};
use crate::source::watermark::Watermark;
use crate::telemetry::SinkLabel;

/// Writes pending at most before the stage stops reading.
const MAX_PENDING: usize = 10_000;

type Key = (Arc<str>, i32);

/// Per-partition watermarks, each with the assignment generation it belongs to.
#[derive(Default)]
pub struct Marks {
    marks: DashMap<Key, (u64, Watermark)>,
    generations: std::sync::atomic::AtomicU64,
}

impl Marks {
    /// A partition was assigned: a fresh watermark of a new generation.
    pub fn assign(&self, key: Key) -> u64 {
        let g = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        self.marks.insert(key, (g, Watermark::new()));
        g
    }

    /// A partition was revoked: its watermark goes.
    pub fn revoke(&self, key: &Key) {
        self.marks.remove(key);
    }

    /// A record at `offset` was read: its partition's generation (`None`: not owned, or out
    /// of order).
    pub fn observe(&self, key: &Key, offset: i64) -> Option<u64> {
        let mut m = self.marks.get_mut(key)?;
        m.1.observe(offset).ok()?;
        Some(m.0)
    }

    /// The record at `offset` waits for `n` writes of generation `g`.
    pub fn acquire(&self, key: &Key, g: u64, offset: i64, n: u32) {
        if let Some(mut m) = self.marks.get_mut(key) {
            if m.0 == g {
                let _ = m.1.acquire(offset, n);
            }
        }
    }

    /// A write of generation `g` for the record at `offset` completed. False (and nothing
    /// released) when the partition has been assigned again since: a stale write.
    pub fn release(&self, key: &Key, g: u64, offset: i64) -> bool {
        match self.marks.get_mut(key) {
            Some(mut m) if m.0 == g => m.1.release(offset, 1).is_ok(),
            _ => false,
        }
    }

    /// The partitions with a new commit point.
    fn take_commits(&self) -> Vec<(Key, i64)> {
        let mut out = Vec::new();
        for mut e in self.marks.iter_mut() {
            if let Some(p) = e.value_mut().1.take_new_commit() {
                out.push((e.key().clone(), p));
            }
        }
        out
    }

    /// The commit point of a partition (tests).
    #[cfg(test)]
    fn commit_point(&self, key: &Key) -> Option<i64> {
        self.marks.get(key).and_then(|m| m.1.commit_point())
    }
}

/// The stage's consumer context: the watermarks, kept across rebalances.
#[derive(Default)]
struct RekeyCtx {
    marks: Marks,
}

impl ClientContext for RekeyCtx {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        crate::kafka::client_error(error, reason);
    }
}

impl ConsumerContext for RekeyCtx {
    fn post_rebalance(&self, _c: &rdkafka::consumer::BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = r {
            for e in tpl.elements() {
                self.marks.assign((Arc::from(e.topic()), e.partition()));
            }
        }
    }
    fn pre_rebalance(&self, _c: &rdkafka::consumer::BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = r {
            for e in tpl.elements() {
                self.marks.revoke(&(Arc::from(e.topic()), e.partition()));
            }
        }
    }
}

/// The running rekey stage.
pub struct RekeyHandle {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RekeyHandle {
    /// Stops reading, waits for pending writes, commits, leaves the group.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.task.await;
    }
}

/// Splits one record's spans per trace into trace-keyed OTLP records.
pub fn split_per_trace(spans: &[ScannedSpan]) -> Vec<(TraceId, Vec<u8>)> {
    let mut order: Vec<TraceId> = Vec::new();
    let mut by_trace: HashMap<TraceId, Vec<&SpanRef>> = HashMap::new();
    for s in spans {
        by_trace
            .entry(s.trace_id)
            .or_insert_with(|| {
                order.push(s.trace_id);
                Vec::new()
            })
            .push(&s.span);
    }
    order
        .into_iter()
        .map(|t| {
            let spans = by_trace.remove(&t).unwrap_or_default();
            (t, otlp::encode_request(spans.iter().copied()))
        })
        .collect()
}

/// Starts the stage when `kafka.rekey` names input topics.
pub fn start(
    cfg: Arc<KafkaConfig>,
    producer: crate::sink::Producer,
) -> Result<Option<RekeyHandle>, rdkafka::error::KafkaError> {
    let rk = &cfg.rekey;
    if rk.input_topics.is_empty() {
        return Ok(None);
    }
    let mut cc = crate::kafka::consumer_config(&cfg);
    cc.set("group.id", format!("{}-rekey", cfg.group_id));
    if let Some(id) = &cfg.group_instance_id {
        cc.set("group.instance.id", format!("{id}-rekey"));
    }
    let consumer: StreamConsumer<RekeyCtx> =
        crate::kafka::create_with_context(&cc, RekeyCtx::default())?;
    let topics: Vec<&str> = rk.input_topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(run(cfg, consumer, producer, Arc::clone(&stop)));
    Ok(Some(RekeyHandle { stop, task }))
}

/// A write in flight: resolves to its partition, generation, record offset and the bytes it
/// held.
type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = (Key, u64, i64, u64)> + Send>>;

async fn run(
    cfg: Arc<KafkaConfig>,
    consumer: StreamConsumer<RekeyCtx>,
    producer: crate::sink::Producer,
    stop: Arc<AtomicBool>,
) {
    let target: Arc<str> = Arc::from(cfg.rekey.topic.as_str());
    let dlq: Arc<str> = Arc::from(cfg.dead_letter_topic.as_str());
    let mut pending: FuturesUnordered<Pending> = FuturesUnordered::new();
    let mut pending_bytes = 0u64;
    let max_bytes = cfg.rekey.max_pending_bytes.0;
    let mut scratch: Vec<ScannedSpan> = Vec::new();
    let mut commit = tokio::time::interval(cfg.commit_interval);
    loop {
        if stop.load(Ordering::Acquire) {
            break;
        }
        tokio::select! {
            Some((key, g, offset, bytes)) = pending.next(), if !pending.is_empty() => {
                pending_bytes -= bytes;
                consumer.context().marks.release(&key, g, offset);
                crate::telemetry::rekey_pending(pending.len(), pending_bytes);
            }
            msg = consumer.recv(), if pending.len() < MAX_PENDING && pending_bytes < max_bytes => {
                let m = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "rekey consumer error");
                        continue;
                    }
                };
                let key: Key = (Arc::from(m.topic()), m.partition());
                let offset = m.offset();
                let Some(generation) = consumer.context().marks.observe(&key, offset) else {
                    continue;
                };
                let payload = m.payload().map(Bytes::copy_from_slice).unwrap_or_default();
                let ts = m.timestamp().to_millis();
                let enc = crate::source::record_encoding(&m, cfg.encoding);
                let arrival = ts.map_or(0, |t| u64::try_from(t).unwrap_or(0));
                let scanned = if payload.len() > cfg.max_record_bytes.0 as usize {
                    Err(otlp::DecodeError::TooLarge {
                        len: payload.len(),
                        limit: cfg.max_record_bytes.0 as usize,
                    })
                } else {
                    otlp::scan_record(&payload, enc, &NoProbe, arrival, &mut scratch)
                };
                let mut futs: Vec<Pending> = Vec::new();
                let mut added = 0u64;
                match scanned {
                    Err(e) => {
                        tracing::warn!(topic = m.topic(), partition = m.partition(), offset, error = %e, "record to dead-letter topic");
                        let (k, held) = (key.clone(), payload.len() as u64);
                        added += held;
                        let f = sink::dead_letter(
                            producer.clone(),
                            Arc::clone(&dlq),
                            payload,
                            DeadLetter {
                                topic: m.topic().to_string(),
                                partition: m.partition(),
                                offset,
                                error: e.to_string(),
                                key: m.key().map(Bytes::copy_from_slice),
                                headers: crate::source::headers_of(&m),
                            },
                        );
                        futs.push(Box::pin(async move {
                            f.await;
                            (k, generation, offset, held)
                        }));
                    }
                    Ok(()) => {
                        let from = DeadLetter {
                            topic: m.topic().to_string(),
                            partition: m.partition(),
                            offset,
                            error: String::new(),
                            key: m.key().map(Bytes::copy_from_slice),
                            headers: crate::source::headers_of(&m),
                        };
                        for (trace, value) in split_per_trace(&scratch) {
                            let (p, t, k) = (producer.clone(), Arc::clone(&target), key.clone());
                            let (dlq, from) = (Arc::clone(&dlq), from.clone());
                            let held = value.len() as u64;
                            added += held;
                            futs.push(Box::pin(async move {
                                let key = hex::encode(trace.0);
                                let out = sink::Outgoing {
                                    timestamp: ts,
                                    ..sink::Outgoing::new(&t, key.as_bytes(), &value)
                                };
                                if let Err(e) = sink::produce_until_acked(&p, out, sink::producer::Topic::Rekey).await {
                                    crate::telemetry::spans_rejected(SinkLabel::Rekey, 1);
                                    tracing::error!(trace_id = %key, error = %e, "rekeyed trace refused for good; written to the dead-letter topic");
                                    let error = format!("the rekey topic refused trace {key}: {e}");
                                    sink::dead_letter(p, dlq, Bytes::from(value), DeadLetter { error, ..from }).await;
                                }
                                (k, generation, offset, held)
                            }));
                        }
                        scratch.clear();
                    }
                }
                consumer
                    .context()
                    .marks
                    .acquire(&key, generation, offset, futs.len() as u32);
                pending.extend(futs);
                pending_bytes += added;
                crate::telemetry::rekey_pending(pending.len(), pending_bytes);
            }
            _ = commit.tick() => commit_resolved(&consumer, CommitMode::Async),
        }
    }
    // Stop: finish pending writes, commit, leave.
    while let Some((key, g, offset, _)) = pending.next().await {
        consumer.context().marks.release(&key, g, offset);
    }
    commit_resolved(&consumer, CommitMode::Sync);
    consumer.unsubscribe();
}

fn commit_resolved(consumer: &StreamConsumer<RekeyCtx>, mode: CommitMode) {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), p) in consumer.context().marks.take_commits() {
        let _ = tpl.add_partition_offset(&topic, partition, Offset::Offset(p));
    }
    if tpl.count() > 0 {
        if let Err(e) = consumer.commit(&tpl, mode) {
            tracing::warn!(error = %e, "rekey commit failed; retried with the next one");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_write_after_revoke_and_reassign_releases_nothing() {
        let marks = Marks::default();
        let key: Key = (Arc::from("raw"), 0);
        let old = marks.assign(key.clone());
        for offset in 0..3 {
            assert_eq!(marks.observe(&key, offset), Some(old));
            marks.acquire(&key, old, offset, 1);
        }
        // Revoked with all three writes in flight, then assigned again: the new owner of the
        // partition replays from offset 0.
        marks.revoke(&key);
        assert!(
            !marks.release(&key, old, 0),
            "not owned: nothing to release"
        );
        let new = marks.assign(key.clone());
        assert_ne!(new, old);
        assert_eq!(marks.observe(&key, 0), Some(new));
        marks.acquire(&key, new, 0, 1);
        // The old generation's writes complete late: they must not resolve offset 0 again.
        for offset in 0..3 {
            assert!(!marks.release(&key, old, offset), "stale write {offset}");
        }
        assert_eq!(
            marks.commit_point(&key),
            Some(0),
            "nothing committed past the unwritten record"
        );
        assert!(marks.release(&key, new, 0));
        assert_eq!(marks.commit_point(&key), Some(1));
    }
}
