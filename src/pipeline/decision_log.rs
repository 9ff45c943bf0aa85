//! The decision log: every decision, written to a compacted topic co-partitioned with the input
//! (`kafka.decisions_topic`, partition p of the log for partition p of the input), before the
//! records it covers count as resolved. On assignment a partition restores its decision cache
//! from the log before it consumes, so replayed and late spans of a trace decided before a crash,
//! deploy or rebalance follow the recorded decision, whatever the policies (rate limits and
//! dynamic rates are not repeatable, and a late span alone cannot be decided correctly).
//!
//! Record: key = trace id as 32 lowercase hex (the compaction key), value (version 1):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version = 1 |
//! | 1 | flags: bit 0 = keep |
//! | 8 | threshold, u64 little-endian (OTEP 235, 56 bits; `u64::MAX` = unknown probability) |
//! | 8 | decided at, Unix milliseconds, u64 little-endian |
//! | rest | deciding policy name, UTF-8 (empty when no policy matched) |
//!
//! The format ([`LoggedDecision`]), the writer ([`write()`]) and the restore ([`restore`]) live here
//! together; "decided at" is the deciding partition's stream time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::otlp::TraceId;
use crate::sink::{produce_until_acked, AckFuture, Outgoing};
use crate::telemetry::{self, SinkLabel};

/// One logged decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedDecision {
    /// Keep or drop.
    pub keep: bool,
    /// The stage's threshold for the trace.
    pub threshold: u64,
    /// When it was decided (Unix ms).
    pub decided_at_ms: u64,
    /// The deciding policy's name (empty for "no policy matched").
    pub policy: String,
}

/// Why a log record could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogError {
    /// Too short or an unknown version.
    #[error("decision record: {0}")]
    Format(&'static str),
}

impl LoggedDecision {
    /// The record value.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(18 + self.policy.len());
        v.push(1);
        v.push(u8::from(self.keep));
        v.extend_from_slice(&self.threshold.to_le_bytes());
        v.extend_from_slice(&self.decided_at_ms.to_le_bytes());
        v.extend_from_slice(self.policy.as_bytes());
        v
    }

    /// Reads a record value.
    pub fn decode(v: &[u8]) -> Result<LoggedDecision, LogError> {
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
        Ok(LoggedDecision {
            keep: v[1] & 1 == 1,
            threshold: u64_at(2),
            decided_at_ms: u64_at(10),
            policy: std::str::from_utf8(&v[18..])
                .map_err(|_| LogError::Format("policy name is not UTF-8"))?
                .to_string(),
        })
    }
}

/// The record key of a trace.
pub fn key(trace_id: &TraceId) -> String {
    hex::encode(trace_id.0)
}

/// Reads partition `partition` of the decision log from its start to its end and returns the
/// latest decision per trace made within `max_age` of `now_ms` (older ones can no longer be
/// needed: the decision cache would have forgotten them). Blocking: call from a blocking thread.
pub fn restore(
    cfg: &Config,
    partition: i32,
    now_ms: u64,
    max_age: Duration,
) -> Result<HashMap<TraceId, LoggedDecision>, rdkafka::error::KafkaError> {
    let topic = &cfg.kafka.decisions_topic;
    let mut cc = crate::source::kafka::consumer_config(&cfg.kafka);
    cc.set("group.id", format!("{}-restore", cfg.kafka.group_id))
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer = crate::source::kafka::create(&cc)?;
    let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
    let mut out = HashMap::new();
    if high <= low {
        return Ok(out);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let oldest = now_ms.saturating_sub(max_age.as_millis() as u64);
    let mut reached_high = false;
    let mut idle = 0;
    // Read to the high watermark, then until the partition reports its end (a broker may report
    // the watermark of a multi-record batch short; the end-of-partition event is authoritative).
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                idle = 0;
                if m.offset() + 1 >= high {
                    reached_high = true;
                }
                let (Some(k), Some(v)) = (m.key(), m.payload()) else {
                    continue;
                };
                let Some(id) = std::str::from_utf8(k).ok().and_then(TraceId::from_hex) else {
                    tracing::warn!(
                        topic,
                        partition,
                        offset = m.offset(),
                        "decision with a bad key skipped"
                    );
                    continue;
                };
                match LoggedDecision::decode(v) {
                    Ok(d) if d.decided_at_ms >= oldest => {
                        out.insert(id, d);
                    }
                    Ok(_) => {
                        out.remove(&id);
                    }
                    Err(e) => {
                        tracing::warn!(topic, partition, offset = m.offset(), error = %e, "decision skipped")
                    }
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) if reached_high => break,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => return Err(e),
            None => {
                idle += 1;
                // Nothing for 2 s after the watermark: the end, even without an EOF event.
                if reached_high && idle >= 10 {
                    break;
                }
                if idle >= 150 {
                    tracing::warn!(
                        topic,
                        partition,
                        "decision log read stalled for 30 s; using what was read"
                    );
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// Writes one decision to the decision log (partition `partition`, the input's own) until it is
/// acknowledged; then releases one reference on each of `offsets`.
pub fn write(
    producer: crate::sink::Producer,
    topic: Arc<str>,
    partition: i32,
    key: String,
    value: Vec<u8>,
    offsets: Vec<i64>,
) -> AckFuture {
    Box::pin(async move {
        let out = Outgoing {
            partition: Some(partition),
            ..Outgoing::new(&topic, key.as_ref(), &value)
        };
        if let Err(e) = produce_until_acked(&producer, out, SinkLabel::DecisionLog).await {
            tracing::error!(error = %e, "decision refused by the decision log for good");
        }
        telemetry::decisions_logged(1);
        offsets
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_ones_are_errors() {
        for d in [
            LoggedDecision {
                keep: true,
                threshold: 1 << 55,
                decided_at_ms: 1_760_000_000_123,
                policy: "important".into(),
            },
            LoggedDecision {
                keep: false,
                threshold: u64::MAX,
                decided_at_ms: 0,
                policy: String::new(),
            },
        ] {
            assert_eq!(LoggedDecision::decode(&d.encode()), Ok(d));
        }
        assert!(LoggedDecision::decode(&[1, 0, 0]).is_err());
        let mut v = LoggedDecision {
            keep: true,
            threshold: 0,
            decided_at_ms: 0,
            policy: "x".into(),
        }
        .encode();
        v[0] = 9;
        assert!(LoggedDecision::decode(&v).is_err());
        v[0] = 1;
        v[18] = 0xff;
        assert!(LoggedDecision::decode(&v).is_err());
        assert_eq!(key(&TraceId([0xab; 16])), "ab".repeat(16));
    }
}
