//! The decision log: every decision, written to a compacted topic co-partitioned with the input
//! (`kafka.decisions_topic`, partition p of the log for partition p of the input), before the
//! records it covers count as resolved. On assignment a partition restores its decision cache
//! from the log before it consumes, so replayed and late spans of a trace decided before a crash,
//! deploy or rebalance follow the recorded decision, whatever the policies (rate limits and
//! dynamic rates are not repeatable, and a late span alone cannot be decided correctly).
//!
//! **Version 2** (written): one record carries every decision a partition made in one step (a
//! tick, or a record that forced decisions), up to [`MAX_DECISIONS_PER_RECORD`]: one produce and
//! one delivery report per step instead of per trace. Key = `b-` + 32 random hex digits (unique,
//! so compaction never merges two batches; each trace is decided once, so there is nothing to
//! merge). Value, integers little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version = 2 |
//! | 2 | policy names n |
//! | n × (2 + len) | each: name length, UTF-8 name |
//! | 4 | decisions m |
//! | m × 35 | each: trace id (16), flags (1, bit 0 = keep), threshold (8; OTEP 235, 56 bits, `u64::MAX` = unknown probability), decided at (8, Unix ms), policy index (2; `0xffff` = no policy matched) |
//!
//! **Version 3** (a position, not a decision): key = `p-` + the partition, value = version 3 (1),
//! then an offset (8): every input record below it had its spans counted in the span metrics
//! by the member that wrote it. Written at each commit and at a drain while span metrics are
//! on, so the next owner counts only what no one counted; the compacted topic keeps the latest
//! per partition. Readers before it skip it as an unknown version.
//!
//! **Version 1** (read, for logs written before): key = trace id as 32 lowercase hex, value =
//! version 1 (1), flags (1), threshold (8), decided at (8), policy name (rest).
//!
//! A restore reads both; the latest record wins for a trace. The format ([`Decided`],
//! [`encode_batch`], [`decode_record`]), the writer ([`write()`]) and the restore ([`restore`])
//! live here together; "decided at" is the deciding partition's stream time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

pub use super::core::Decided;
use crate::config::Config;
use crate::otlp::threshold::Threshold;
use crate::otlp::TraceId;
use crate::sink::{produce_until_acked, AckFuture, Outgoing};
use crate::telemetry;

/// Why a log record could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogError {
    /// Too short or an unknown version.
    #[error("decision record: {0}")]
    Format(&'static str),
}

impl Decided {
    /// The record value.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(18 + self.policy.len());
        v.push(1);
        v.push(u8::from(self.keep));
        v.extend_from_slice(&self.threshold.raw().to_le_bytes());
        v.extend_from_slice(&self.decided_at_ms.to_le_bytes());
        v.extend_from_slice(self.policy.as_bytes());
        v
    }

    /// Reads a record value.
    pub fn decode(v: &[u8]) -> Result<Decided, LogError> {
        if v.len() < 18 {
            return Err(LogError::Format("shorter than 18 bytes"));
        }
        if v[0] != 1 {
            return Err(LogError::Format("unknown version"));
        }
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&v[i..i + 8]);
            u64::from_le_bytes(b)
        };
        Ok(Decided {
            keep: v[1] & 1 == 1,
            threshold: Threshold::from_raw(u64_at(2)),
            decided_at_ms: u64_at(10),
            policy: std::str::from_utf8(&v[18..])
                .map_err(|_| LogError::Format("policy name is not UTF-8"))?
                .into(),
        })
    }
}

/// The version-1 record key of a trace.
pub fn key(trace_id: &TraceId) -> String {
    hex::encode(trace_id.0)
}

/// Decisions per version-2 record at most (35 B each: 280 KiB, within the decision topic's
/// `max.message.bytes`).
pub const MAX_DECISIONS_PER_RECORD: usize = 8192;

const NO_POLICY: u16 = u16::MAX;
const ENTRY: usize = 16 + 1 + 8 + 8 + 2;

/// A version-2 record key: unique per batch.
pub fn batch_key() -> String {
    format!("b-{}", hex::encode(rand::random::<[u8; 16]>()))
}

/// The version-2 value of a batch of decisions (at most [`MAX_DECISIONS_PER_RECORD`]; policy
/// names are interned per record, at most 65,535 distinct).
pub fn encode_batch(batch: &[(TraceId, Decided)]) -> Vec<u8> {
    let mut names: Vec<&str> = Vec::new();
    let mut index = Vec::with_capacity(batch.len());
    for (_, d) in batch {
        let i = if d.policy.is_empty() {
            NO_POLICY
        } else if let Some(i) = names.iter().position(|n| *n == &*d.policy) {
            i as u16
        } else {
            names.push(&d.policy);
            (names.len() - 1) as u16
        };
        index.push(i);
    }
    let table: usize = names.iter().map(|n| 2 + n.len()).sum();
    let mut v = Vec::with_capacity(1 + 2 + table + 4 + batch.len() * ENTRY);
    v.push(2);
    v.extend_from_slice(&(names.len() as u16).to_le_bytes());
    for n in &names {
        v.extend_from_slice(&(n.len() as u16).to_le_bytes());
        v.extend_from_slice(n.as_bytes());
    }
    v.extend_from_slice(&(batch.len() as u32).to_le_bytes());
    for ((id, d), i) in batch.iter().zip(index) {
        v.extend_from_slice(&id.0);
        v.push(u8::from(d.keep));
        v.extend_from_slice(&d.threshold.raw().to_le_bytes());
        v.extend_from_slice(&d.decided_at_ms.to_le_bytes());
        v.extend_from_slice(&i.to_le_bytes());
    }
    v
}

/// The decisions of one log record, either version, in the order they were made.
pub fn decode_record(key: &[u8], value: &[u8]) -> Result<Vec<(TraceId, Decided)>, LogError> {
    match value.first() {
        Some(1) => {
            let id = std::str::from_utf8(key)
                .ok()
                .and_then(TraceId::from_hex)
                .ok_or(LogError::Format("version 1 key is not a trace id"))?;
            Ok(vec![(id, Decided::decode(value)?)])
        }
        Some(2) => decode_batch(value),
        Some(3) => position_of(value).map(|_| Vec::new()),
        Some(_) => Err(LogError::Format("unknown version")),
        None => Err(LogError::Format("empty")),
    }
}

/// The key of a partition's position record.
pub fn position_key(partition: i32) -> String {
    format!("p-{partition}")
}

/// The value of a position record.
pub fn encode_position(offset: i64) -> Vec<u8> {
    let mut v = Vec::with_capacity(9);
    v.push(3);
    v.extend_from_slice(&offset.to_le_bytes());
    v
}

/// The offset of a position record (a version-3 value).
pub fn position_of(value: &[u8]) -> Result<i64, LogError> {
    match value {
        [3, rest @ ..] => <[u8; 8]>::try_from(rest)
            .map(i64::from_le_bytes)
            .map_err(|_| LogError::Format("a position record is 9 bytes")),
        _ => Err(LogError::Format("not a position record")),
    }
}

fn decode_batch(v: &[u8]) -> Result<Vec<(TraceId, Decided)>, LogError> {
    let mut at = 1;
    let mut take = |n: usize| -> Result<&[u8], LogError> {
        let b = v
            .get(at..at + n)
            .ok_or(LogError::Format("truncated batch"))?;
        at += n;
        Ok(b)
    };
    let u16_of = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]);
    let u64_of = |b: &[u8]| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        u64::from_le_bytes(a)
    };
    let n = u16_of(take(2)?) as usize;
    let mut names = Vec::with_capacity(n);
    for _ in 0..n {
        let len = u16_of(take(2)?) as usize;
        let name = std::str::from_utf8(take(len)?)
            .map_err(|_| LogError::Format("policy name is not UTF-8"))?;
        names.push(std::sync::Arc::<str>::from(name));
    }
    let b = take(4)?;
    let m = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let entries = take(
        m.checked_mul(ENTRY)
            .ok_or(LogError::Format("batch count overflows"))?,
    )?;
    if take(1).is_ok() {
        return Err(LogError::Format("batch longer than its count"));
    }
    let mut out = Vec::with_capacity(m);
    for e in entries.chunks_exact(ENTRY) {
        let mut id = [0u8; 16];
        id.copy_from_slice(&e[..16]);
        let policy = match u16_of(&e[33..35]) {
            NO_POLICY => std::sync::Arc::from(""),
            i => names
                .get(i as usize)
                .ok_or(LogError::Format("policy index out of the table"))?
                .clone(),
        };
        out.push((
            TraceId(id),
            Decided {
                keep: e[16] & 1 == 1,
                threshold: Threshold::from_raw(u64_of(&e[17..25])),
                decided_at_ms: u64_of(&e[25..33]),
                policy,
            },
        ));
    }
    Ok(out)
}

/// Why a decision-log restore did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The client failed: broker unreachable, topic unreadable, not authorized.
    #[error("{0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The blocking read's task failed (panicked or was cancelled).
    #[error("the restore task failed: {0}")]
    Task(String),
    /// Reading stopped making progress before the end of the log.
    #[error(
        "the read stalled for 30 s after {read} records, before the log's end (offset {high})"
    )]
    Stalled {
        /// Records read before it stalled.
        read: u64,
        /// The end it did not reach.
        high: i64,
    },
}

pub use crate::kafka::config::RESTORE_SLACK;

/// How long the restore waits for one read (a record of the input, a watermark) before it
/// counts as failed.
const READ_WAIT: Duration = Duration::from_secs(10);

/// What a restore read, for the caller and its tests.
#[derive(Debug, Default)]
pub struct Restored {
    /// The latest decision per trace within the window.
    pub decisions: HashMap<TraceId, Decided>,
    /// The restart point R (Unix ms) the window is counted back from.
    pub restart_ms: u64,
    /// The decision-log offset the read started at.
    pub from_offset: i64,
    /// Decision-log records read.
    pub records_read: u64,
    /// The latest span-metrics position read (see version 3).
    pub counted_through: Option<i64>,
}

/// Restores partition `partition`'s decisions for input `input_topic`, by stream time and from
/// where it matters. Blocking: call from a blocking thread.
///
/// **The restart point R** is the stream time the new owner starts at: the Kafka timestamp of
/// the input record at the group's committed offset (where consuming resumes; the last record
/// when everything was consumed, the first when nothing was committed; `now_ms` for an empty
/// input), never later than `now_ms`. A decision can matter to the new owner only while its
/// stream-time age is under its TTL, and stream time starts at about R and only grows, so the
/// window is every decision made at or after `R - max_age - RESTORE_SLACK` (the slack covers
/// producers' clocks disagreeing with each other). This holds however far behind the group is:
/// it is counted in the records' time, not the wall clock's.
///
/// **Where the read starts.** A decision is made at a stream time no later than the deciding
/// member's wall clock (stream time is clamped to it) and logged after, so the log record that
/// carries it has a Kafka timestamp at or after its "decided at". The read therefore starts at
/// the first log offset whose timestamp is at or after the window's start (`offsets_for_times`),
/// and its cost grows with TTL × decision rate, not with the log's retention. A broker that
/// cannot answer by time (or answers with an offset past the data) costs a longer read, never a
/// lost decision: the read then starts at the log's beginning.
pub fn restore(
    cfg: &Config,
    input_topic: &str,
    partition: i32,
    now_ms: u64,
    max_age: Duration,
) -> Result<Restored, RestoreError> {
    let topic = &cfg.kafka.decisions_topic;
    let restart_ms = restart_point(cfg, input_topic, partition, now_ms)?;
    let oldest = restart_ms
        .saturating_sub(max_age.as_millis() as u64)
        .saturating_sub(RESTORE_SLACK.as_millis() as u64);
    let mut cc = crate::kafka::consumer_config(&cfg.kafka);
    cc.set("group.id", format!("{}-restore", cfg.kafka.group_id))
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer = crate::kafka::create(&cc)?;
    let (low, high) = consumer.fetch_watermarks(topic, partition, READ_WAIT)?;
    let mut out = Restored {
        restart_ms,
        from_offset: low,
        ..Restored::default()
    };
    if high <= low {
        return Ok(out);
    }
    let mut by_time = TopicPartitionList::new();
    by_time.add_partition_offset(topic, partition, Offset::Offset(oldest as i64))?;
    let from = consumer
        .offsets_for_times(by_time, READ_WAIT)
        .ok()
        .and_then(|t| t.elements().first().map(|e| e.offset()));
    out.from_offset = match from {
        Some(Offset::Offset(o)) if (low..high).contains(&o) => o,
        // Nothing that recent: every record is older than the window.
        Some(Offset::End) => return Ok(out),
        _ => low,
    };
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(out.from_offset))?;
    consumer.assign(&tpl)?;
    let mut reached_high = false;
    let mut idle = 0;
    // Read to the high watermark, then until the partition reports its end (a broker may report
    // the watermark of a multi-record batch short; the end-of-partition event is authoritative).
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                idle = 0;
                out.records_read += 1;
                if m.offset() + 1 >= high {
                    reached_high = true;
                }
                let (Some(k), Some(v)) = (m.key(), m.payload()) else {
                    continue;
                };
                if let Ok(p) = position_of(v) {
                    out.counted_through = Some(p);
                }
                match decode_record(k, v) {
                    Ok(decisions) => {
                        for (id, d) in decisions {
                            if d.decided_at_ms >= oldest {
                                out.decisions.insert(id, d);
                            } else {
                                out.decisions.remove(&id);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(topic, partition, offset = m.offset(), error = %e, "decision record skipped")
                    }
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) if reached_high => break,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => return Err(e.into()),
            None => {
                idle += 1;
                // Nothing for 2 s after the watermark: the end, even without an EOF event.
                if reached_high && idle >= 10 {
                    break;
                }
                if idle >= 150 {
                    // A partial read is never a success: the restore fails and is retried.
                    return Err(RestoreError::Stalled {
                        read: out.records_read,
                        high,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// The restart point R of `input_topic`/`partition` (see [`restore`]): the timestamp of the
/// input record the group resumes at, at most `now_ms`; `now_ms` when the input holds nothing.
fn restart_point(
    cfg: &Config,
    input_topic: &str,
    partition: i32,
    now_ms: u64,
) -> Result<u64, RestoreError> {
    // The group's own id, to read its committed offset (OffsetFetch only: it joins nothing).
    let mut cc = crate::kafka::consumer_config(&cfg.kafka);
    cc.set("enable.partition.eof", "true")
        .remove("group.instance.id");
    let consumer: BaseConsumer = crate::kafka::create(&cc)?;
    let (low, high) = consumer.fetch_watermarks(input_topic, partition, READ_WAIT)?;
    if high <= low {
        return Ok(now_ms);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(input_topic, partition);
    let committed = consumer
        .committed_offsets(tpl, READ_WAIT)?
        .elements()
        .first()
        .and_then(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
        .unwrap_or(low);
    let at = committed.clamp(low, high - 1);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(input_topic, partition, Offset::Offset(at))?;
    consumer.assign(&tpl)?;
    // At most 150 polls of 200 ms (30 s) for the one record.
    for _ in 0..150 {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) if m.offset() >= at => {
                let ts = m.timestamp().to_millis().unwrap_or(0);
                return Ok(match u64::try_from(ts) {
                    Ok(t) if t > 0 => t.min(now_ms),
                    // A record without a usable timestamp: the window counts from now.
                    _ => now_ms,
                });
            }
            Some(Ok(_)) | None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => return Err(e.into()),
        }
    }
    Err(RestoreError::Stalled { read: 0, high })
}

/// The wait before a refused decision-log write is tried again; it doubles to
/// [`REFUSED_RETRY_MAX`].
const REFUSED_RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two tries of a refused decision-log write.
const REFUSED_RETRY_MAX: Duration = Duration::from_secs(30);

/// Writes one batch of decisions (a version-2 record) to the decision log (partition
/// `partition`, the input's own) until it is acknowledged; then releases one reference on each of
/// `offsets`. A write the log refuses for good (topic deleted, not authorized, record too large
/// for it) is never given up: releasing its offsets would commit past traces whose decision is in
/// no log. It is tried again (1 s doubling to 30 s) while `/readyz` names the partition and the
/// reason; its offsets hold the commit, and the partition stops reading at its pending-write
/// budget. Once the log takes it (the operator fixed the topic), everything resolves.
pub fn write(
    producer: crate::sink::Producer,
    topic: Arc<str>,
    partition: i32,
    batch: &[(TraceId, Decided)],
    offsets: Vec<i64>,
    health: crate::telemetry::Health,
    clock: Arc<dyn crate::clock::Clock>,
) -> AckFuture {
    let (key, value, n) = (batch_key(), encode_batch(batch), batch.len() as u64);
    let record = Record {
        producer,
        topic,
        partition,
        key,
        value,
        health,
        clock,
    };
    Box::pin(async move {
        record.write().await;
        telemetry::decisions_logged(n);
        offsets
    })
}

/// Writes a partition's span-metrics position (a version-3 record) until it is acknowledged,
/// as [`write()`] writes decisions.
pub fn write_position(
    producer: crate::sink::Producer,
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    health: crate::telemetry::Health,
    clock: Arc<dyn crate::clock::Clock>,
) -> AckFuture {
    let record = Record {
        producer,
        topic,
        partition,
        key: position_key(partition),
        value: encode_position(offset),
        health,
        clock,
    };
    Box::pin(async move {
        record.write().await;
        Vec::new()
    })
}

/// One decision-log record to write.
struct Record {
    producer: crate::sink::Producer,
    topic: Arc<str>,
    partition: i32,
    key: String,
    value: Vec<u8>,
    health: crate::telemetry::Health,
    clock: Arc<dyn crate::clock::Clock>,
}

impl Record {
    /// Writes until the log takes it (see [`write()`]).
    async fn write(self) {
        let Record {
            producer,
            topic,
            partition,
            key,
            value,
            health,
            clock,
        } = self;
        let mut wait = REFUSED_RETRY_FIRST;
        let held = format!("partition {partition}: the decision log refuses its writes");
        let mut refused = false;
        loop {
            let out = Outgoing {
                partition: Some(partition),
                ..Outgoing::new(&topic, key.as_ref(), &value)
            };
            match produce_until_acked(&producer, out, crate::sink::producer::Topic::DecisionLog)
                .await
            {
                Ok(()) => {
                    if refused {
                        health.clear_fault(&held);
                    }
                    return;
                }
                Err(e) => {
                    refused = true;
                    let why = format!("{held} ({e}); commits hold until it takes them");
                    health.fault_seen(clock.now().as_duration().as_millis() as u64, why);
                    tracing::error!(%topic, partition, error = %e, retry_in_ms = wait.as_millis() as u64, "decisions refused by the decision log; holding the partition's commits and trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(REFUSED_RETRY_MAX);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_ones_are_errors() {
        for d in [
            Decided {
                keep: true,
                threshold: Threshold::from_raw(1 << 55),
                decided_at_ms: 1_760_000_000_123,
                policy: "important".into(),
            },
            Decided {
                keep: false,
                threshold: Threshold::UNKNOWN,
                decided_at_ms: 0,
                policy: "".into(),
            },
        ] {
            assert_eq!(Decided::decode(&d.encode()), Ok(d));
        }
        assert!(Decided::decode(&[1, 0, 0]).is_err());
        let mut v = Decided {
            keep: true,
            threshold: crate::otlp::threshold::Threshold::ALWAYS,
            decided_at_ms: 0,
            policy: "x".into(),
        }
        .encode();
        v[0] = 9;
        assert!(Decided::decode(&v).is_err());
        v[0] = 1;
        v[18] = 0xff;
        assert!(Decided::decode(&v).is_err());
        assert_eq!(key(&TraceId([0xab; 16])), "ab".repeat(16));
    }

    #[test]
    fn batches_round_trip_and_version_1_records_still_read() {
        let d = |keep, policy: &str, at| Decided {
            keep,
            threshold: if keep {
                Threshold::from_raw(1 << 54)
            } else {
                Threshold::UNKNOWN
            },
            decided_at_ms: at,
            policy: policy.into(),
        };
        let batch: Vec<(TraceId, Decided)> = (0..300u16)
            .map(|i| {
                let mut id = [0u8; 16];
                id[..2].copy_from_slice(&i.to_be_bytes());
                let policy = ["errors", "", "slow", "errors"][i as usize % 4];
                (
                    TraceId(id),
                    d(i % 3 == 0, policy, 1_760_000_000_000 + u64::from(i)),
                )
            })
            .collect();
        let v = encode_batch(&batch);
        assert_eq!(
            v.len(),
            1 + 2 + (2 + 6) + (2 + 4) + 4 + 300 * ENTRY,
            "names once"
        );
        let key = batch_key();
        assert!(key.starts_with("b-") && key.len() == 34 && key != batch_key());
        assert_eq!(decode_record(key.as_bytes(), &v), Ok(batch.clone()));
        assert_eq!(decode_record(b"b-x", &encode_batch(&[])), Ok(vec![]));
        let one = d(true, "errors", 7);
        let id = TraceId([0xcd; 16]);
        assert_eq!(
            decode_record(self::key(&id).as_bytes(), &one.encode()),
            Ok(vec![(id, one.clone())])
        );
        assert!(decode_record(b"not hex", &one.encode()).is_err());
        // Truncated, padded, a bad policy index, an unknown version: errors, never a panic.
        for cut in [1, 3, 10, v.len() - 1] {
            assert!(decode_record(b"b", &v[..cut]).is_err(), "cut at {cut}");
        }
        let mut padded = v.clone();
        padded.push(0);
        assert!(decode_record(b"b", &padded).is_err());
        let mut bad = encode_batch(&batch[..1]);
        let n = bad.len();
        bad[n - 2..].copy_from_slice(&7u16.to_le_bytes());
        assert!(decode_record(b"b", &bad).is_err());
        assert!(decode_record(b"b", &[3, 0]).is_err());
        assert!(decode_record(b"b", &[]).is_err());
    }

    #[test]
    fn position_records_round_trip_and_carry_no_decision() {
        let v = encode_position(1_234_567);
        assert_eq!(position_of(&v), Ok(1_234_567));
        assert_eq!(
            decode_record(position_key(3).as_bytes(), &v),
            Ok(Vec::new())
        );
        assert!(
            position_of(&encode_batch(&[])).is_err(),
            "a batch is not a position"
        );
        assert!(position_of(&[3, 1, 2]).is_err());
    }
}
