//! The decision-log restore by stream time, against tansu: a group three hours behind (its
//! input records stamped three hours ago, its committed offset among them) restores the
//! decisions made within the cache TTL of where it resumes, although by the wall clock they are
//! hours old; and the read starts at the offset found by time, so ten hours of older decisions
//! before the window are not read at all (asserted on records read, not on time).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use support::*;
use tracesift::otlp::threshold::Threshold;
use tracesift::otlp::TraceId;
use tracesift::pipeline::decision_log::{self, Decided, RESTORE_SLACK};

const MIN: u64 = 60_000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_hours_behind_restores_its_window_and_reads_only_it() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", 1).await;
    create_topic(&brokers, "tracesift_decisions", 1).await;
    let now = now_ms();
    let behind = now - 180 * MIN;
    let ttl = Duration::from_secs(30 * 60);

    let producer: BaseProducer = client(&brokers).create().unwrap();
    // The input: ten records a minute apart, three hours ago.
    for i in 0..10u64 {
        let ts = (behind + i * MIN) as i64;
        producer
            .send(
                BaseRecord::to("otlp_spans")
                    .key("k")
                    .payload("v")
                    .timestamp(ts),
            )
            .unwrap();
    }
    // The decision log: one record every ten minutes over the ten hours before now, each
    // carrying one decision made a second before it was written.
    let mut decided = Vec::new();
    for i in 0..60u64 {
        let ts = now - 600 * MIN + i * 10 * MIN;
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&i.to_be_bytes());
        let d = Decided {
            keep: true,
            threshold: Threshold::ALWAYS,
            policy: "errors".into(),
            decided_at_ms: ts - 1_000,
        };
        decided.push((TraceId(id), d.decided_at_ms));
        let value = decision_log::encode_batch(&[(TraceId(id), d)]);
        let key = decision_log::batch_key();
        producer
            .send(
                BaseRecord::to("tracesift_decisions")
                    .key(&key)
                    .payload(&value)
                    .timestamp(ts as i64),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    // The group resumes at input offset 5.
    let group: BaseConsumer = client(&brokers).set("group.id", "behind").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("otlp_spans", 0, Offset::Offset(5))
        .unwrap();
    group.commit(&tpl, CommitMode::Sync).unwrap();
    drop(group);

    let cfg = tracesift::config::Config::parse(&format!(
        "kafka: {{brokers: \"{brokers}\", group_id: behind}}\npolicies: [{{name: errors, type: always_sample}}]\n"
    ))
    .unwrap();
    let restored =
        tokio::task::spawn_blocking(move || decision_log::restore(&cfg, "otlp_spans", 0, now, ttl))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("restore: {e}\n{}", broker.log()));

    let restart = behind + 5 * MIN;
    assert_eq!(
        restored.restart_ms, restart,
        "R: the committed record's timestamp"
    );
    let oldest = restart - ttl.as_millis() as u64 - RESTORE_SLACK.as_millis() as u64;
    let want: Vec<TraceId> = decided
        .iter()
        .filter(|(_, at)| *at >= oldest)
        .map(|(id, _)| *id)
        .collect();
    assert!(!want.is_empty());
    let mut got: Vec<TraceId> = restored.decisions.keys().copied().collect();
    got.sort();
    assert_eq!(
        got, want,
        "exactly the decisions within TTL + slack of where the group resumes"
    );
    // Only the window (and what follows it) is read: the 40-odd records of the hours before it
    // are skipped by the offset found by time.
    let in_window_or_after = decided
        .iter()
        .filter(|(_, at)| *at + 1_000 >= oldest)
        .count() as u64;
    assert!(
        restored.records_read <= in_window_or_after,
        "read {} records from offset {}; the window and after hold {in_window_or_after}",
        restored.records_read,
        restored.from_offset
    );
    assert!(
        restored.from_offset > 30,
        "from offset {}",
        restored.from_offset
    );
}
