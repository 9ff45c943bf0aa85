//! Scenario: producers do not key by trace id (random keys, and mixed batches holding several
//! traces), so a trace's spans land in several partitions of the raw topic. With
//! `kafka.rekey` the records are split per trace and re-produced keyed by trace id; the sampler
//! reads the repartition topic.
//!
//! Guarantees: every trace the policies must keep is in the sampled topic whole, no other trace
//! is; every re-produced record is keyed by its trace id and keeps its original timestamp; the
//! rekey stage's input offsets are committed to the end only after its writes were acknowledged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use support::*;
use tracesift::config::Config;
use tracesift::gen::{self, GenOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unkeyed_input_is_rekeyed_and_sampled_whole() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans_raw", 3).await;
    let hot = tempfile::tempdir().unwrap();
    let cfg = Config::parse(&format!(
        r#"
kafka:
  brokers: "{brokers}"
  create_topics: true
  group_id: rekeyed
  input_topics: [otlp_spans_by_trace]
  commit_interval: 200ms
  rekey: {{input_topics: [otlp_spans_raw], topic: otlp_spans_by_trace}}
store: {{decision_wait: 3s, decision_wait_after_root: 3s, tick: 50ms}}
{}
sinks: {{parquet: {{enabled: false}}}}
archive: {{hot: {{url: "file://{}"}}}}
telemetry: {{listen: ""}}
"#,
        support::spine::POLICIES,
        hot.path().display()
    ))
    .unwrap();
    let running = tracesift::pipeline::start(
        cfg,
        Arc::new(tracesift::clock::tokio_clock::TokioClock::new()),
    )
    .await
    .unwrap_or_else(|e| panic!("start: {e}\n{}", broker.log()));

    let (records, manifest) = gen::plan_records(&GenOptions {
        traces: 1500,
        seed: 31,
        split: true,
        late_fraction: 0.0,
        start_ns: 1_760_000_000_000_000_000,
        ..Default::default()
    });
    let producer: FutureProducer = client(&brokers).set("linger.ms", "5").create().unwrap();
    let mut ends = BTreeMap::new();
    let mut raw_timestamps = HashSet::new();
    // Pairs of records concatenated: one protobuf message holding both (a mixed batch), under a
    // key that has nothing to do with the traces.
    for (i, pair) in records.chunks(2).enumerate() {
        let mut value = pair[0].value.clone();
        if let Some(second) = pair.get(1) {
            value.extend_from_slice(&second.value);
        }
        let ts = 1_760_000_000_000 + i as i64;
        raw_timestamps.insert(ts);
        let key = format!("batch-{i}");
        send_stamped(&producer, "otlp_spans_raw", &key, &value, ts, &mut ends).await;
    }
    wait_committed(
        &brokers,
        "rekeyed-rekey",
        "otlp_spans_raw",
        &ends,
        Duration::from_secs(60),
    )
    .await;
    // The sampler's own offsets on the repartition topic: wait until it has decided everything.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let spans: u64 = manifest.traces.iter().map(|t| t.spans as u64).sum();
    while running
        .stats
        .spans
        .load(std::sync::atomic::Ordering::Relaxed)
        < spans
        || running.stats.traces_decided() < manifest.traces.len() as u64
    {
        assert!(
            std::time::Instant::now() < deadline,
            "sampler did not finish"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    running.stop().await;

    let b = brokers.clone();
    let m = manifest.clone();
    let o = tokio::task::spawn_blocking(move || support::chaos::check(&b, &m))
        .await
        .unwrap();
    eprintln!("rekey: {o:?}");

    let b = brokers.clone();
    let rekeyed = tokio::task::spawn_blocking(move || read_all(&b, "otlp_spans_by_trace"))
        .await
        .unwrap();
    assert!(rekeyed.len() >= manifest.traces.len());
    for r in &rekeyed {
        let req = ExportTraceServiceRequest::decode(r.value.as_slice()).unwrap();
        let ids: HashSet<String> = req
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .map(|s| hex::encode(&s.trace_id))
            .collect();
        assert_eq!(ids.len(), 1, "one trace per rekeyed record");
        let key = String::from_utf8(r.key.clone().unwrap()).unwrap();
        assert!(ids.contains(&key), "keyed by its trace id");
        assert!(
            raw_timestamps.contains(&r.timestamp),
            "original timestamp kept: {}",
            r.timestamp
        );
    }
}

/// A trace the repartition topic refuses for good (here: larger than the producer's
/// `message.max.bytes`) is a dead letter with its reason and its source coordinates, the other
/// traces of the same record are rekeyed, and the input is committed to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_the_rekey_topic_refuses_is_a_dead_letter_with_its_reason() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans_raw", 1).await;
    let cfg = Config::parse(&format!(
        r#"
kafka:
  brokers: "{brokers}"
  create_topics: true
  group_id: refused
  input_topics: [otlp_spans_by_trace]
  commit_interval: 200ms
  rekey: {{input_topics: [otlp_spans_raw], topic: otlp_spans_by_trace}}
  properties: {{message.max.bytes: "40000"}}
store: {{decision_wait: 1s, decision_wait_after_root: 1s, tick: 50ms}}
policies: [{{name: all, type: always_sample}}]
sinks: {{parquet: {{enabled: false}}}}
telemetry: {{listen: ""}}
"#
    ))
    .unwrap();
    let running = tracesift::pipeline::start(
        cfg,
        Arc::new(tracesift::clock::tokio_clock::TokioClock::new()),
    )
    .await
    .unwrap_or_else(|e| panic!("start: {e}\n{}", broker.log()));
    // One record: a small trace and a trace of 30 spans of 2 KB each (60 KB rekeyed).
    let (small, big) = ([0x51u8; 16], [0x52u8; 16]);
    let mut spans: Vec<_> = (1..=2u8).map(|n| test_span(&small, n, false)).collect();
    for n in 1..=30u8 {
        let mut s = test_span(&big, n, false);
        s.name = "x".repeat(2_000);
        spans.push(s);
    }
    let producer: FutureProducer = client(&brokers).create().unwrap();
    let d = producer
        .send(
            FutureRecord::to("otlp_spans_raw")
                .key("mixed")
                .payload(&otlp_record(spans)),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let ends = BTreeMap::from([(d.partition, d.offset + 1)]);
    wait_committed(
        &brokers,
        "refused-rekey",
        "otlp_spans_raw",
        &ends,
        Duration::from_secs(60),
    )
    .await;
    running.stop().await;

    let b = brokers.clone();
    let dead = tokio::task::spawn_blocking(move || read_all(&b, "otlp_spans_dlq"))
        .await
        .unwrap();
    let big_hex = hex::encode(big);
    let refused: Vec<_> = dead
        .iter()
        .filter(|r| {
            r.headers
                .get("tracesift.error")
                .is_some_and(|e| e.contains("rekey topic refused trace") && e.contains(&big_hex))
        })
        .collect();
    assert_eq!(
        refused.len(),
        1,
        "one dead letter for the big trace: {dead:?}"
    );
    let r = refused[0];
    assert_eq!(r.headers["tracesift.source.topic"], "otlp_spans_raw");
    assert_eq!(
        r.headers["tracesift.source.offset"],
        d.offset.to_string(),
        "{:?}",
        r.headers
    );
    let b = brokers.clone();
    let rekeyed = tokio::task::spawn_blocking(move || read_all(&b, "otlp_spans_by_trace"))
        .await
        .unwrap();
    assert!(
        rekeyed
            .iter()
            .any(|r| r.key.as_deref() == Some(hex::encode(small).as_bytes())),
        "the small trace was rekeyed"
    );
}
