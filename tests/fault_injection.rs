//! Fault injection with librdkafka's mock cluster (in addition to the real-broker tests, never
//! instead): the broker leading the sampled topic and the decision log goes down, the group
//! coordinator moves, offset commits fail. Guarantee asserted: no offset is committed past
//! unresolved work — while kept traces cannot be written, the committed offsets stay where the
//! resolved work ends — and once the faults clear everything is written and committed to the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::mocking::MockCoordinator;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};
use tracesift::config::Config;

const GROUP: &str = "faults";

fn trace_record(i: u32) -> (String, Vec<u8>) {
    let mut t = [0u8; 16];
    t[..4].copy_from_slice(&(i + 1).to_be_bytes());
    let spans = (1..=3u8)
        .map(|n| Span {
            trace_id: t.to_vec(),
            span_id: vec![n; 8],
            parent_span_id: if n == 1 { vec![] } else { vec![1; 8] },
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            ..Default::default()
        })
        .collect();
    let v = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource::default()),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    (hex::encode(t), v)
}

async fn wave(p: &FutureProducer, from: u32, n: u32, ends: &mut BTreeMap<i32, i64>) {
    for i in from..from + n {
        let (k, v) = trace_record(i);
        let d = p
            .send(
                FutureRecord::to("otlp_spans").key(&k).payload(&v),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        let e = ends.entry(d.partition).or_insert(0);
        *e = (*e).max(d.offset + 1);
    }
}

fn committed(brokers: &str, group: &str) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition("otlp_spans", p);
    }
    match c.committed_offsets(tpl, Duration::from_secs(5)) {
        Ok(got) => got
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect(),
        Err(_) => BTreeMap::new(),
    }
}

async fn wait_committed(brokers: &str, ends: &BTreeMap<i32, i64>, what: &str) {
    wait_committed_group(brokers, GROUP, ends, what).await
}

async fn wait_committed_group(brokers: &str, group: &str, ends: &BTreeMap<i32, i64>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (b, g) = (brokers.to_string(), group.to_string());
        let c = tokio::task::spawn_blocking(move || committed(&b, &g))
            .await
            .unwrap();
        if ends.iter().all(|(p, e)| c.get(p) == Some(e)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: committed {c:?}, end {ends:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn sampled_traces(brokers: &str) -> HashSet<Vec<u8>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "reader")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition_offset("otlp_spans_sampled", p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = HashSet::new();
    let mut eof = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while eof < 2 && Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let req = ExportTraceServiceRequest::decode(m.payload().unwrap()).unwrap();
                for s in req
                    .resource_spans
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .flat_map(|s| &s.spans)
                {
                    out.insert(s.trace_id.clone());
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => eof += 1,
            _ => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_commit_past_unresolved_work_under_faults() {
    let cluster = support::mock_cluster(3, 2);
    let brokers = cluster.bootstrap_servers();
    // Input led by broker 1; everything tracesift writes led by broker 3; coordinator on 2.
    support::split_leaders(&cluster, 2, 1, 3);
    cluster
        .coordinator(MockCoordinator::Group(GROUP.into()), 2)
        .unwrap();
    let cfg = Config::parse(&format!(
        r#"
kafka: {{brokers: "{brokers}", create_topics: true, group_id: {GROUP}, commit_interval: 100ms}}
store: {{decision_wait: 300ms, decision_wait_after_root: 300ms, tick: 20ms}}
policies: [{{name: all, type: always_sample}}]
sinks: {{parquet: {{enabled: false}}}}
telemetry: {{listen: ""}}
"#
    ))
    .unwrap();
    let running = start(cfg).await;
    let producer = input_producer(&brokers);
    let mut ends = BTreeMap::new();

    // A: no faults.
    wave(&producer, 0, 200, &mut ends).await;
    wait_committed(&brokers, &ends, "wave A").await;
    let resolved = ends.clone();

    // B: the broker leading the sampled topic and the decision log is down. Wave B is read and
    // decided but cannot be written: the committed offsets must not move past wave A.
    cluster.broker_down(3).unwrap();
    wave(&producer, 200, 200, &mut ends).await;
    // Watched for at least 4 s and until wave B has been read or reading has stopped: the
    // sampled sink's circuit opens once its writes keep failing, and an open required sink holds
    // the partition, so on a slow machine part of wave B waits in the topic. The deadline only
    // bounds a hang.
    let read = || {
        running
            .stats
            .records
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let (at_least, deadline) = (
        Instant::now() + Duration::from_secs(4),
        Instant::now() + Duration::from_secs(60),
    );
    let (mut last, mut moved) = (read(), Instant::now());
    loop {
        let now = Instant::now();
        let n = read();
        if n != last {
            (last, moved) = (n, now);
        }
        let stalled = n > 200 && now.duration_since(moved) >= Duration::from_secs(5);
        if now >= at_least && (n >= 400 || stalled || now >= deadline) {
            break;
        }
        let b = brokers.clone();
        let c = tokio::task::spawn_blocking(move || committed(&b, GROUP))
            .await
            .unwrap();
        for (p, o) in &c {
            assert!(
                *o <= resolved[p],
                "partition {p} committed {o} past the resolved end {} while its writes are down",
                resolved[p]
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        read() > 200,
        "no record of wave B was read while the writes were down ({} read)",
        read()
    );
    cluster.broker_up(3).unwrap();
    wait_committed(&brokers, &ends, "wave B after the broker came back").await;

    // C: the group coordinator moves.
    cluster
        .coordinator(MockCoordinator::Group(GROUP.into()), 1)
        .unwrap();
    wave(&producer, 400, 200, &mut ends).await;
    wait_committed(&brokers, &ends, "wave C after a coordinator move").await;

    // D: offset commits fail for a while.
    cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS; 8],
    );
    wave(&producer, 600, 200, &mut ends).await;
    wait_committed(&brokers, &ends, "wave D after failing commits").await;

    running.stop().await;
    assert_all_sampled(&brokers, 800).await;
    drop(producer);
    drop(cluster);
}

/// A fatal producer error (the idempotent producer's sequence desynchronized: the mock broker
/// answers a Produce with OUT_OF_ORDER_SEQUENCE_NUMBER on the head-of-line request) makes
/// librdkafka fail everything on that producer instance for good. tracesift replaces the
/// instance (counted in `tracesift_producer_replaced_total`) and every kept trace still reaches
/// the sampled topic, with the offsets committed to the end; without the replacement every
/// partition would retry on the dead instance for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_producer_error_replaces_the_producer_and_loses_nothing() {
    let cluster = support::mock_cluster(1, 2);
    let brokers = cluster.bootstrap_servers();
    let cfg = Config::parse(&format!(
        r#"
kafka: {{brokers: "{brokers}", create_topics: true, group_id: {GROUP}, commit_interval: 100ms}}
store: {{decision_wait: 300ms, decision_wait_after_root: 300ms, tick: 20ms}}
policies: [{{name: all, type: always_sample}}]
sinks: {{parquet: {{enabled: false}}}}
telemetry: {{listen: "127.0.0.1:0"}}
"#
    ))
    .unwrap();
    let running = start(cfg).await;
    let addr = running.telemetry_addr.unwrap();
    let producer = input_producer(&brokers);
    let mut ends = BTreeMap::new();
    wave(&producer, 0, 100, &mut ends).await;
    wait_committed(&brokers, &ends, "before the fault").await;
    // The input of the next wave is in; the next Produce request is tracesift's.
    wave(&producer, 100, 100, &mut ends).await;
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
    );
    wait_committed(&brokers, &ends, "after a fatal producer error").await;
    let (_, m) = tracesift::telemetry::server::http_get(addr, "/metrics")
        .await
        .unwrap();
    let replaced: f64 = m
        .lines()
        .filter(|l| l.starts_with("tracesift_producer_replaced_total"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum();
    assert!(replaced >= 1.0, "the producer was replaced: {replaced}");
    running.stop().await;
    assert_all_sampled(&brokers, 200).await;
    drop(producer);
    drop(cluster);
}

/// A partition whose decisions cannot be restored is not consumed (fail closed): a member
/// starting while the broker leading the decision log is down reads nothing, `/readyz` names
/// the partition, and every failed attempt is counted; once the log is readable the restore
/// is retried, succeeds, and every trace is written and committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_decision_log_holds_its_partitions_until_it_is_back() {
    let cluster = support::mock_cluster(3, 2);
    let brokers = cluster.bootstrap_servers();
    support::split_leaders(&cluster, 2, 1, 3);
    cluster
        .coordinator(MockCoordinator::Group("restore-fails".into()), 2)
        .unwrap();
    let cfg = || {
        Config::parse(&format!(
            r#"
kafka: {{brokers: "{brokers}", create_topics: true, group_id: restore-fails, commit_interval: 100ms}}
store: {{decision_wait: 300ms, decision_wait_after_root: 300ms, tick: 20ms}}
policies: [{{name: all, type: always_sample}}]
sinks: {{parquet: {{enabled: false}}}}
telemetry: {{listen: "127.0.0.1:0"}}
"#
        ))
        .unwrap()
    };
    let producer = input_producer(&brokers);
    let mut ends = BTreeMap::new();
    // A first member decides wave A and stops.
    let first = start(cfg()).await;
    wave(&producer, 0, 100, &mut ends).await;
    wait_committed_group(&brokers, "restore-fails", &ends, "wave A").await;
    first.stop().await;

    // The decision log's broker goes down; a new member starts and wave B arrives.
    cluster.broker_down(3).unwrap();
    let failures_before = restore_failures();
    let second = start(cfg()).await;
    let addr = second.telemetry_addr.unwrap();
    wave(&producer, 100, 100, &mut ends).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let readyz = loop {
        let (code, body) = tracesift::telemetry::server::http_get(addr, "/readyz")
            .await
            .unwrap();
        if code == 503
            && body.contains("decision log unreadable")
            && restore_failures() > failures_before
        {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no failed restore reported: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(readyz.contains("partition "), "{readyz}");
    let read = |r: &tracesift::pipeline::Running| {
        r.stats.records.load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(
        read(&second),
        0,
        "a partition without its decisions was consumed"
    );

    // The log is back: the restore succeeds on a retry, everything is written and committed.
    cluster.broker_up(3).unwrap();
    wait_committed_group(
        &brokers,
        "restore-fails",
        &ends,
        "wave B after the log came back",
    )
    .await;
    let (code, _) = tracesift::telemetry::server::http_get(addr, "/readyz")
        .await
        .unwrap();
    assert_eq!(code, 200);
    second.stop().await;
    assert_all_sampled(&brokers, 200).await;
    drop(producer);
    drop(cluster);
}

/// A decision log that refuses writes for good (here: every produce answered "message too
/// large" for a while) holds the partitions' commits instead of releasing them: nothing is
/// committed past decisions that are in no log, `/readyz` names the partition and the reason,
/// and once the log takes the writes again everything resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_the_log_refuses_hold_the_commits_until_it_takes_them() {
    const G: &str = "log-refuses";
    let cluster = support::mock_cluster(3, 2);
    let brokers = cluster.bootstrap_servers();
    support::split_leaders(&cluster, 2, 1, 3);
    cluster
        .coordinator(MockCoordinator::Group(G.into()), 2)
        .unwrap();
    // Only the decision log writes: no sampled topic, no Parquet.
    let cfg = Config::parse(&format!(
        r#"
kafka: {{brokers: "{brokers}", create_topics: true, group_id: {G}, commit_interval: 100ms}}
store: {{decision_wait: 3s, decision_wait_after_root: 3s, tick: 20ms}}
policies: [{{name: all, type: always_sample}}]
sinks: {{kafka: {{enabled: false}}, parquet: {{enabled: false}}}}
telemetry: {{listen: "127.0.0.1:0"}}
"#
    ))
    .unwrap();
    let running = start(cfg).await;
    let addr = running.telemetry_addr.unwrap();
    let producer = input_producer(&brokers);
    let mut ends = BTreeMap::new();
    wave(&producer, 0, 50, &mut ends).await;
    wait_committed_group(&brokers, G, &ends, "wave A").await;
    let before = ends.clone();

    // Wave B is written first (the mock's errors hit every Produce, ours too); its traces are
    // decided 3 s later, when every decision-log write is refused for a while.
    wave(&producer, 50, 50, &mut ends).await;
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; 6],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = tracesift::telemetry::server::http_get(addr, "/readyz")
            .await
            .unwrap();
        let b = brokers.clone();
        let c = tokio::task::spawn_blocking(move || committed(&b, G))
            .await
            .unwrap();
        for (p, o) in &c {
            assert!(
                *o <= before[p],
                "partition {p} committed {o} past {} while the log refused its decisions",
                before[p]
            );
        }
        if code == 503 && body.contains("the decision log refuses its writes") {
            assert!(body.contains("partition "), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no refusal reported: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The log takes writes again (the errors ran out): everything resolves.
    wait_committed_group(&brokers, G, &ends, "wave B after the log took its writes").await;
    running.stop().await;
    drop(producer);
    drop(cluster);
}

/// Traces 0..n of [`wave`] are all in the sampled topic.
async fn assert_all_sampled(brokers: &str, n: u32) {
    let b = brokers.to_string();
    let got = tokio::task::spawn_blocking(move || sampled_traces(&b))
        .await
        .unwrap();
    for i in 0..n {
        let mut t = vec![0u8; 16];
        t[..4].copy_from_slice(&(i + 1).to_be_bytes());
        assert!(
            got.contains(&t),
            "trace {i} never reached the sampled topic"
        );
    }
}

/// A run of `cfg` on the tokio clock.
async fn start(cfg: Config) -> tracesift::pipeline::Running {
    tracesift::pipeline::start(
        cfg,
        Arc::new(tracesift::clock::tokio_clock::TokioClock::new()),
    )
    .await
    .unwrap()
}

/// The test's producer of input records.
fn input_producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

fn restore_failures() -> f64 {
    let handle = tracesift::telemetry::install();
    support::outage::metric(
        &handle.render(),
        "tracesift_decision_restore_failures_total",
    )
}
