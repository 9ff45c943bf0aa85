//! The byte budget on pending writes (`sinks.max_pending_bytes`), with librdkafka's mock
//! cluster for the fault (in addition to the real-broker tests): the broker leading the sampled
//! topic and the decision log goes down under a steady backlog. The partitions stop reading once
//! their pending writes hold the budget — the pipeline reads a bounded part of the backlog, the
//! pending-bytes gauge stays at the budget plus one write, `/readyz` goes down naming the stuck
//! writes after 30 s (liveness stays up) — and when the broker comes back every trace is written
//! and committed to the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use support::{otlp_record, spread_trace_ids};

const TRACES: usize = 4000;
/// The trace store's byte budget: what a partition may still decide (and so write) after its
/// pending writes reached theirs.
const STORE: u64 = 1 << 20;
const BUDGET: u64 = 1 << 20;

fn gauges(rendered: &str, name: &str) -> Vec<f64> {
    rendered
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.split_whitespace().last()?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_holds_at_most_the_pending_byte_budget_and_loses_nothing() {
    let cluster = support::mock_cluster(3, 2);
    let brokers = cluster.bootstrap_servers();
    support::split_leaders(&cluster, 2, 1, 3);
    let cfg = tracesift::config::Config::parse(&format!(
        r#"
kafka: {{brokers: "{brokers}", create_topics: true, group_id: budget, commit_interval: 100ms}}
store: {{decision_wait: 200ms, decision_wait_after_root: 200ms, tick: 20ms, max_bytes: {STORE}, max_trace_bytes: 64KiB}}
policies: [{{name: all, type: always_sample}}]
sinks: {{parquet: {{enabled: false}}, max_pending_bytes: {BUDGET}}}
telemetry: {{listen: "127.0.0.1:0"}}
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
    support::wait_ready(&running).await;

    // The writes' broker goes down, then a backlog of ~6 MB (2 KB per trace) arrives.
    cluster.broker_down(3).unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let traces = spread_trace_ids(TRACES as u32);
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    let mut pending = Vec::new();
    let mut record_bytes = 0u64;
    for t in &traces {
        let spans = (1..=3u8)
            .map(|n| support::padded_span(t, n, false, 600))
            .collect();
        let key = hex::encode(t);
        let value = otlp_record(spans);
        record_bytes = value.len() as u64;
        pending.push(
            producer
                .send_result(FutureRecord::to("otlp_spans").key(&key).payload(&value))
                .map_err(|(e, _)| e)
                .unwrap(),
        );
    }
    for d in pending {
        let d = d.await.unwrap().map_err(|(e, _)| e).unwrap();
        let e = ends.entry(d.partition).or_insert(0);
        *e = (*e).max(d.offset + 1);
    }

    // During the outage: reading stops at the budget; after 30 s of it, readiness goes down
    // and names the stuck writes, while liveness stays up.
    let addr = running.telemetry_addr.unwrap();
    let mut peak_pending = 0.0f64;
    let until = Instant::now() + Duration::from_secs(34);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for v in gauges(&handle.render(), "tracesift_sink_pending_bytes") {
            peak_pending = peak_pending.max(v);
        }
    }
    let read = running.stats.records.load(Ordering::Relaxed) as usize;
    // Per partition: the budget in ~2 KB writes, plus the traces the store still held when
    // the partition stopped reading (decided and written meanwhile, so also pending), plus a
    // little slack (the write that crossed the budget, a tick's decisions). The backlog is kept
    // under 5 MB a partition: the mock cluster keeps only that much.
    let bound = 2 * (BUDGET + STORE + (128 << 10));
    assert!(
        (read as u64) * record_bytes <= bound,
        "{read} of {TRACES} records ({record_bytes} B each) read while nothing could be written: more than 2 partitions × (pending budget {BUDGET} + store {STORE} + slack) = {bound} B"
    );
    assert!(read > 0, "the backlog was read up to the budget");
    let (code, body) = tracesift::telemetry::server::http_get(addr, "/readyz")
        .await
        .unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("sink writes stuck: otlp_spans/"), "{body}");
    assert_eq!(
        tracesift::telemetry::server::http_get(addr, "/healthz")
            .await
            .unwrap()
            .0,
        200
    );
    assert!(
        peak_pending <= (BUDGET + 2 * STORE + (64 << 10)) as f64,
        "pending bytes {peak_pending} past the budget {BUDGET} plus what the store held"
    );
    eprintln!(
        "outage: {read} of {TRACES} records read, peak pending {peak_pending} B per partition"
    );

    // The broker comes back: everything is written and committed.
    cluster.broker_up(3).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let b = brokers.clone();
        let c = tokio::task::spawn_blocking(move || {
            support::committed(&b, "budget", "otlp_spans", &[0, 1])
        })
        .await
        .unwrap();
        if ends.iter().all(|(p, e)| c.get(p) == Some(e)) {
            break;
        }
        assert!(Instant::now() < deadline, "committed {c:?}, end {ends:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    running.stop().await;
    let b = brokers.clone();
    let sampled = tokio::task::spawn_blocking(move || {
        support::spans_of(
            support::read_until_idle(&b, "otlp_spans_sampled", Duration::from_secs(6)),
            "otlp_spans_sampled",
        )
    })
    .await
    .unwrap();
    let b = brokers.clone();
    let dlq = tokio::task::spawn_blocking(move || {
        support::read_until_idle(&b, "otlp_spans_dlq", Duration::from_secs(2))
    })
    .await
    .unwrap();
    assert!(
        dlq.is_empty(),
        "{} dead letters, first: {:?}",
        dlq.len(),
        dlq.first().map(|r| &r.headers)
    );
    let whole = traces
        .iter()
        .filter(|t| sampled.get(*t).is_some_and(|v| v.len() == 3))
        .count();
    let partial = traces
        .iter()
        .filter(|t| sampled.get(*t).is_some_and(|v| v.len() != 3))
        .count();
    assert_eq!(
        whole,
        TRACES,
        "every trace whole after the outage ({partial} partial, {} seen)",
        sampled.len()
    );
    drop(producer);
    drop(cluster);
}

/// The rekey stage's own bound (`kafka.rekey.max_pending_bytes`): with the repartition topic's
/// broker down under a flood of unkeyed input, its pending writes never hold more than the
/// bound plus the record that crossed it, and it stops reading; when the broker is back,
/// everything is rekeyed and its input committed to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rekey_stage_holds_at_most_its_pending_byte_bound() {
    const REKEY_BUDGET: u64 = 1 << 20;
    let cluster = support::mock_cluster(3, 2);
    let brokers = cluster.bootstrap_servers();
    for t in ["otlp_spans_raw", "otlp_spans_by_trace"] {
        cluster.create_topic(t, 2, 1).unwrap();
    }
    for p in 0..2 {
        cluster
            .partition_leader("otlp_spans_raw", p, Some(1))
            .unwrap();
        cluster
            .partition_leader("otlp_spans_by_trace", p, Some(3))
            .unwrap();
    }
    let cfg = tracesift::config::Config::parse(&format!(
        r#"
kafka:
  brokers: "{brokers}"
  create_topics: true
  group_id: rekeybudget
  input_topics: [otlp_spans_by_trace]
  commit_interval: 100ms
  rekey: {{input_topics: [otlp_spans_raw], topic: otlp_spans_by_trace, max_pending_bytes: {REKEY_BUDGET}}}
store: {{decision_wait: 200ms, decision_wait_after_root: 200ms, tick: 20ms}}
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
    .unwrap();
    let handle = tracesift::telemetry::install();
    support::wait_ready(&running).await;
    cluster.broker_down(3).unwrap();

    // ~6 MB of unkeyed records (two traces each) while the repartition topic is down.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let traces = spread_trace_ids(2 * 1500);
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    let mut pending = Vec::new();
    let mut record_bytes = 0u64;
    for (i, pair) in traces.chunks(2).enumerate() {
        let spans = pair
            .iter()
            .flat_map(|t| (1..=2u8).map(move |n| support::padded_span(t, n, false, 900)))
            .collect();
        let value = otlp_record(spans);
        record_bytes = record_bytes.max(value.len() as u64);
        let key = format!("mixed-{i}");
        pending.push(
            producer
                .send_result(FutureRecord::to("otlp_spans_raw").key(&key).payload(&value))
                .map_err(|(e, _)| e)
                .unwrap(),
        );
    }
    for d in pending {
        let d = d.await.unwrap().map_err(|(e, _)| e).unwrap();
        let e = ends.entry(d.partition).or_insert(0);
        *e = (*e).max(d.offset + 1);
    }
    let value = |name: &str| -> f64 {
        handle
            .render()
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .and_then(|l| l.split_whitespace().last()?.parse().ok())
            .unwrap_or(0.0)
    };
    let mut peak = 0.0f64;
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        peak = peak.max(value("tracesift_rekey_pending_bytes"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(peak > 0.0, "the stage's writes were pending");
    assert!(
        peak <= (REKEY_BUDGET + record_bytes) as f64,
        "rekey pending bytes peaked at {peak}: more than the bound {REKEY_BUDGET} + one record {record_bytes}"
    );

    // Back: every record is rekeyed and the stage's input committed to the end.
    cluster.broker_up(3).unwrap();
    support::wait_committed(
        &brokers,
        "rekeybudget-rekey",
        "otlp_spans_raw",
        &ends,
        Duration::from_secs(120),
    )
    .await;
    running.stop().await;
    drop(producer);
    drop(cluster);
}
