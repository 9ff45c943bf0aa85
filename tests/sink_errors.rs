//! Writes refused for good never block a partition (real broker, tansu): a kept trace larger
//! than the producer may send goes to the dead-letter topic with the reason (`tracesift.error`,
//! `tracesift.sink: kafka`, the trace id; without its payload, too large there as well), every
//! other kept trace stays whole, and committed offsets reach the end. The oversized trace is
//! decided in one step with others and batched with those of its partition: the refused batch is
//! written again trace by trace, so only the oversized trace is a dead letter.
//!
//! A sampled topic deleted under the running pipeline is not tested here: tansu 0.6.0's
//! DeleteTopics deletes every topic of the cluster, not the one named. `run` refuses to start
//! without its sampled topic (`tests/topology.rs`), and an unknown topic is classed permanent
//! (`sink::kafka` unit test), so its kept traces take the same dead-letter path.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::producer::FutureProducer;

use support::{
    committed, create_topic, otlp_record, read_all, spread_trace_ids, test_span, Broker, Member,
};

fn wait_committed(brokers: &str, ends: &BTreeMap<i32, i64>, what: &str, member: &Member) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let c = committed(brokers, "refused", "otlp_spans", &[0, 1]);
        if ends.iter().all(|(p, e)| c.get(p) == Some(e)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: committed {c:?}, end {ends:?}\n{}",
            member.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn refused_kept_traces_go_to_the_dead_letter_topic_and_partitions_keep_flowing() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(create_topic(&brokers, "otlp_spans", 2));
    let dir = tempfile::tempdir().unwrap();
    // The producer may send records of 1 MB at most; kept traces are chunked at 4 MiB, so a
    // 2 MB trace is refused locally (MSG_SIZE_TOO_LARGE), and so is its dead letter's payload.
    let cfg = format!(
        r#"
kafka:
  brokers: "{brokers}"
  group_id: refused
  create_topics: true
  commit_interval: 300ms
  properties: {{message.max.bytes: 1000000, topic.metadata.refresh.interval.ms: 1000}}
store: {{decision_wait: 1s, decision_wait_after_root: 1s, max_trace_age: 1m, tick: 2s}}
sinks: {{kafka: {{max_record_bytes: 4MiB}}, parquet: {{enabled: false}}}}
telemetry: {{listen: ""}}
policies: [{{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}]
"#
    );
    let member = Member::start(dir.path(), "refused", &cfg, &[]);
    let producer: FutureProducer = support::client(&brokers)
        .set("message.max.bytes", "10000000")
        .create()
        .unwrap();
    let traces = spread_trace_ids(21);
    let (big, normal) = traces.split_first().unwrap();
    let mut ends = BTreeMap::new();
    rt.block_on(async {
        let fat: Vec<_> = (1..=20u8)
            .map(|n| support::padded_span(big, n, n == 1, 100_000))
            .collect();
        support::send_trace_record(&producer, big, &otlp_record(fat), &mut ends).await;
        for t in normal {
            let spans = (1..=3).map(|n| test_span(t, n, n == 2)).collect();
            support::send_trace_record(&producer, t, &otlp_record(spans), &mut ends).await;
        }
    });
    wait_committed(&brokers, &ends, "after the oversized trace", &member);
    let dlq = read_all(&brokers, "otlp_spans_dlq");
    let big_hex = hex::encode(big);
    let too_large: Vec<_> = dlq
        .iter()
        .filter(|r| r.headers.get("tracesift.trace_id") == Some(&big_hex))
        .collect();
    assert!(
        !too_large.is_empty(),
        "the oversized trace is a dead letter: {dlq:?}"
    );
    for r in &too_large {
        assert_eq!(
            r.headers.get("tracesift.sink").map(String::as_str),
            Some("kafka")
        );
        let why = &r.headers["tracesift.error"];
        assert!(
            why.contains("otlp_spans_sampled") && why.contains("too large"),
            "{why}"
        );
        assert!(
            r.headers.contains_key("tracesift.payload_omitted"),
            "{:?}",
            r.headers
        );
    }
    let sampled = support::sampled_spans(&brokers, "otlp_spans_sampled");
    for t in normal {
        assert_eq!(sampled.get(t).map(Vec::len), Some(3), "{}", hex::encode(t));
    }
    assert!(!sampled.contains_key(big));
    let log = member.log();
    assert!(
        log.contains("writing its traces one by one"),
        "the oversized trace was not batched with others: {log}"
    );

    member.stop();
}
