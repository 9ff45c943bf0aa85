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
//! removes. Undecodable records go to the dead-letter topic, as in the sampler.

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

/// Per-partition watermarks, reset when a partition is (re)assigned.
#[derive(Default)]
struct RekeyCtx {
    marks: DashMap<Key, Watermark>,
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
                self.marks
                    .insert((Arc::from(e.topic()), e.partition()), Watermark::new());
            }
        }
    }
    fn pre_rebalance(&self, _c: &rdkafka::consumer::BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = r {
            for e in tpl.elements() {
                self.marks.remove(&(Arc::from(e.topic()), e.partition()));
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

type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = (Key, i64)> + Send>>;

async fn run(
    cfg: Arc<KafkaConfig>,
    consumer: StreamConsumer<RekeyCtx>,
    producer: crate::sink::Producer,
    stop: Arc<AtomicBool>,
) {
    let target: Arc<str> = Arc::from(cfg.rekey.topic.as_str());
    let dlq: Arc<str> = Arc::from(cfg.dead_letter_topic.as_str());
    let mut pending: FuturesUnordered<Pending> = FuturesUnordered::new();
    let mut scratch: Vec<ScannedSpan> = Vec::new();
    let mut commit = tokio::time::interval(cfg.commit_interval);
    loop {
        if stop.load(Ordering::Acquire) {
            break;
        }
        tokio::select! {
            Some((key, offset)) = pending.next(), if !pending.is_empty() => {
                if let Some(mut m) = consumer.context().marks.get_mut(&key) {
                    let _ = m.release(offset, 1);
                }
            }
            msg = consumer.recv(), if pending.len() < MAX_PENDING => {
                let m = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "rekey consumer error");
                        continue;
                    }
                };
                let key: Key = (Arc::from(m.topic()), m.partition());
                let offset = m.offset();
                {
                    let Some(mut mark) = consumer.context().marks.get_mut(&key) else {
                        continue;
                    };
                    if mark.observe(offset).is_err() {
                        continue;
                    }
                }
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
                match scanned {
                    Err(e) => {
                        tracing::warn!(topic = m.topic(), partition = m.partition(), offset, error = %e, "record to dead-letter topic");
                        let k = key.clone();
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
                            (k, offset)
                        }));
                    }
                    Ok(()) => {
                        for (trace, value) in split_per_trace(&scratch) {
                            let (p, t, k) = (producer.clone(), Arc::clone(&target), key.clone());
                            futs.push(Box::pin(async move {
                                let key = hex::encode(trace.0);
                                let out = sink::Outgoing {
                                    timestamp: ts,
                                    ..sink::Outgoing::new(&t, key.as_bytes(), &value)
                                };
                                if let Err(e) = sink::produce_until_acked(&p, out, sink::producer::Topic::Rekey).await {
                                    crate::telemetry::spans_rejected(SinkLabel::Rekey, 1);
                                    tracing::error!(trace_id = %key, error = %e, "rekeyed trace refused for good; left out");
                                }
                                (k, offset)
                            }));
                        }
                        scratch.clear();
                    }
                }
                if let Some(mut mark) = consumer.context().marks.get_mut(&key) {
                    let _ = mark.acquire(offset, futs.len() as u32);
                }
                pending.extend(futs);
            }
            _ = commit.tick() => commit_resolved(&consumer, CommitMode::Async),
        }
    }
    // Stop: finish pending writes, commit, leave.
    while let Some((key, offset)) = pending.next().await {
        if let Some(mut m) = consumer.context().marks.get_mut(&key) {
            let _ = m.release(offset, 1);
        }
    }
    commit_resolved(&consumer, CommitMode::Sync);
    consumer.unsubscribe();
}

fn commit_resolved(consumer: &StreamConsumer<RekeyCtx>, mode: CommitMode) {
    let mut tpl = TopicPartitionList::new();
    for mut e in consumer.context().marks.iter_mut() {
        if let Some(p) = e.value_mut().take_new_commit() {
            let (topic, partition) = e.key();
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(p));
        }
    }
    if tpl.count() > 0 {
        if let Err(e) = consumer.commit(&tpl, mode) {
            tracing::warn!(error = %e, "rekey commit failed; retried with the next one");
        }
    }
}
