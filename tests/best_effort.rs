//! A best-effort sink (`sinks.kafka.delivery: best_effort`) never holds the commit: with the
//! broker leading the sampled topic down (librdkafka's mock cluster, for the fault), the input's
//! committed offsets still reach the end, the writes are dropped after their attempts and
//! counted (`tracesift_sink_dropped_spans_total{sink="kafka"}`), and writes shed while the
//! sink's breaker is open; once the broker is back and a probe gets through, kept traces are
//! written again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::FutureProducer;

use support::{otlp_record, spread_trace_ids, test_span};

async fn send(producer: &FutureProducer, traces: &[[u8; 16]], ends: &mut BTreeMap<i32, i64>) {
    for t in traces {
        let spans = (1..=3u8).map(|n| test_span(t, n, false)).collect();
        support::send_trace_record(producer, t, &otlp_record(spans), ends).await;
    }
}

async fn wait_committed(brokers: &str, ends: &BTreeMap<i32, i64>) {
    support::wait_committed(
        brokers,
        "besteffort",
        "otlp_spans",
        ends,
        Duration::from_secs(60),
    )
    .await;
}

fn dropped(rendered: &str) -> f64 {
    rendered
        .lines()
        .find(|l| l.starts_with("tracesift_sink_dropped_spans_total{sink=\"kafka\"}"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_best_effort_sink_never_holds_the_commit() {
    let cluster = support::mock_cluster(3, 2);
    support::split_leaders(&cluster, 2, 1, 3);
    let brokers = cluster.bootstrap_servers();
    let cfg = tracesift::config::Config::parse(&format!(
        r#"
kafka:
  brokers: "{brokers}"
  create_topics: true
  group_id: besteffort
  commit_interval: 100ms
  decision_log: false
  properties: {{message.timeout.ms: 1500}}
store: {{decision_wait: 200ms, decision_wait_after_root: 200ms, tick: 20ms}}
policies: [{{name: all, type: always_sample}}]
sinks: {{kafka: {{delivery: best_effort, best_effort_attempts: 2}}, parquet: {{enabled: false}}}}
telemetry: {{listen: ""}}
"#
    ))
    .unwrap();
    let running = tracesift::pipeline::start(
        cfg,
        Arc::new(tracesift::clock::tokio_clock::TokioClock::new()),
    )
    .await
    .unwrap();
    let handle = tracesift::telemetry::install();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let traces = spread_trace_ids(200);
    let mut ends = BTreeMap::new();

    support::wait_ready(&running).await;
    // The sampled topic's broker is down: commits go on, the writes are dropped and counted.
    cluster.broker_down(3).unwrap();
    send(&producer, &traces[..100], &mut ends).await;
    wait_committed(&brokers, &ends).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while dropped(&handle.render()) < 300.0 {
        assert!(
            Instant::now() < deadline,
            "dropped {} of 300 spans",
            dropped(&handle.render())
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Back: once a probe write gets through and the breaker closes, kept traces are written
    // again (writes made while it was still open were shed, as best effort does).
    cluster.broker_up(3).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut wave = 0;
    loop {
        let batch: Vec<[u8; 16]> = traces[100 + wave * 10..100 + (wave + 1) * 10].to_vec();
        send(&producer, &batch, &mut ends).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let b = brokers.clone();
        let got = tokio::task::spawn_blocking(move || {
            support::spans_of(
                support::read_until_idle(&b, "otlp_spans_sampled", Duration::from_secs(1)),
                "otlp_spans_sampled",
            )
        })
        .await
        .unwrap();
        let whole = batch
            .iter()
            .filter(|t| got.get(*t).is_some_and(|v| v.len() == 3))
            .count();
        if whole == batch.len() {
            break;
        }
        wave += 1;
        assert!(
            Instant::now() < deadline && wave < 10,
            "no wave of kept traces written whole after the outage (last: {whole} of 10)"
        );
    }
    wait_committed(&brokers, &ends).await;
    running.stop().await;
    drop(producer);
    drop(cluster);
}

/// A best-effort hot tier (`sinks.parquet.delivery: best_effort`) that cannot be written (its
/// `spans` directory is a regular file) never holds the commit: the offsets reach the end, the
/// segments are dropped after their attempts and counted; once it is writable again new kept
/// traces are archived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_best_effort_hot_tier_never_holds_the_commit() {
    let broker = support::Broker::start();
    let brokers = broker.brokers.clone();
    support::create_topic(&brokers, "otlp_spans", 2).await;
    let hot = tempfile::tempdir().unwrap();
    let blocker = hot.path().join("spans");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let cfg = tracesift::config::Config::parse(&format!(
        r#"
kafka: {{brokers: "{brokers}", create_topics: true, group_id: besteffort-hot, commit_interval: 200ms}}
store: {{decision_wait: 1s, decision_wait_after_root: 1s, tick: 50ms}}
policies: [{{name: all, type: always_sample}}]
sinks: {{kafka: {{enabled: false}}, parquet: {{delivery: best_effort, best_effort_attempts: 2}}}}
archive: {{hot: {{url: "file://{}", flush_interval: 500ms}}}}
telemetry: {{listen: "127.0.0.1:0"}}
"#,
        hot.path().display()
    ))
    .unwrap();
    let running = tracesift::pipeline::start(
        cfg,
        Arc::new(tracesift::clock::tokio_clock::TokioClock::new()),
    )
    .await
    .unwrap();
    let addr = running.telemetry_addr.unwrap();
    let producer: FutureProducer = support::client(&brokers)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let mut ends = BTreeMap::new();
    let traces = spread_trace_ids(60);
    send(&producer, &traces[..40], &mut ends).await;
    support::wait_committed(
        &brokers,
        "besteffort-hot",
        "otlp_spans",
        &ends,
        Duration::from_secs(60),
    )
    .await;
    let metric = |m: &str| -> f64 {
        m.lines()
            .filter(|l| l.starts_with("tracesift_sink_dropped_spans_total{sink=\"parquet\"}"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, m) = tracesift::telemetry::server::http_get(addr, "/metrics")
            .await
            .unwrap();
        if metric(&m) == 120.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dropped {} of 120 spans",
            metric(&m)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Writable again: after the breaker lets a write through, segments are archived.
    std::fs::remove_file(&blocker).unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    send(&producer, &traces[40..], &mut ends).await;
    support::wait_committed(
        &brokers,
        "besteffort-hot",
        "otlp_spans",
        &ends,
        Duration::from_secs(60),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while support::parquet_files(hot.path()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "nothing archived after the store came back"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    running.stop().await;
}
