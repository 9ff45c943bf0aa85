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
    let running = tracesift::pipeline::start(cfg, Arc::new(tracesift::clock::TokioClock::new()))
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
