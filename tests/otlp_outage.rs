//! The tracing backend down for 60 s under steady traffic (`tracesift run` as a process, a real
//! broker, the OTLP receiver on the official protos stopped and started again):
//!
//! - a required OTLP sink: its circuit breaker opens (metric and log line) and closes again,
//!   its partitions stop reading and are paused, nothing is committed that was not delivered,
//!   `/readyz` names the sink while `/healthz` stays up, the process does not spin (CPU time
//!   over the outage window) and its resident memory stays within the README's formula; after
//!   recovery every kept trace arrives whole and the offsets reach the end;
//! - a best-effort OTLP sink in the same outage: drops and counts, commits do not wait.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::outage::*;
use support::receiver::Receiver;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_down_for_a_minute_pauses_its_partitions_and_loses_nothing() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", 2).await;
    let mut rx = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (store, queue, prefetch, pending) = (16 * MIB, 4 * MIB, 4 * MIB, 16 * MIB);
    let member = Member::start(
        dir.path(),
        "outage",
        &format!(
            r#"
kafka:
  brokers: "{brokers}"
  create_topics: true
  group_id: otlp-outage
  commit_interval: 200ms
  partition_queue_records: 256
  partition_queue_bytes: {queue}
  properties: {{queued.max.messages.kbytes: "{}"}}
store: {{decision_wait: 1s, decision_wait_after_root: 1s, tick: 50ms, max_bytes: {store}, max_trace_bytes: 4MiB}}
policies: [{{name: all, type: always_sample}}]
sinks:
  kafka: {{enabled: false}}
  parquet: {{enabled: false}}
  max_pending_bytes: {pending}
  otlp_http:
    - name: backend
      endpoint: "http://127.0.0.1:{}"
      timeout: 2s
      retry_on_failure: {{initial_interval: 100ms, max_interval: 1s}}
      batch: {{linger: 100ms}}
telemetry: {{listen: "127.0.0.1:{port}"}}
shutdown_timeout: 20s
"#,
            prefetch / 1024,
            rx.http_port
        ),
        &[],
    );
    let pid = member.child.id();
    let peak = PeakRss::sample(pid);
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(port, "/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "not ready:\n{}", member.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let traffic = Traffic::start(&brokers);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !rx.traces("http").is_empty(),
        "delivering before the outage"
    );

    // The outage.
    rx.command("stop http");
    let (cpu0, _) = proc_usage(pid);
    let t0 = Instant::now();
    let mut opened = false;
    let mut readyz = (0, String::new());
    let mut committed_at_10s = None;
    while t0.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let m = get(port, "/metrics").await.1;
        opened |= metric(
            &m,
            "tracesift_sink_breaker_state{sink=\"otlp_http/backend\"}",
        ) == 2.0;
        let r = get(port, "/readyz").await;
        if r.0 == 503 {
            readyz = r;
        }
        if committed_at_10s.is_none() && t0.elapsed() >= Duration::from_secs(10) {
            let b = brokers.clone();
            committed_at_10s = Some(
                tokio::task::spawn_blocking(move || {
                    committed(&b, "otlp-outage", "otlp_spans", &[0, 1])
                })
                .await
                .unwrap(),
            );
        }
    }
    let window = t0.elapsed();
    let (cpu1, _) = proc_usage(pid);
    let m = get(port, "/metrics").await.1;
    let b = brokers.clone();
    let committed_at_60s =
        tokio::task::spawn_blocking(move || committed(&b, "otlp-outage", "otlp_spans", &[0, 1]))
            .await
            .unwrap();
    let sent_in_outage = traffic.sent.load(Ordering::Relaxed);
    assert!(opened, "the breaker opened:\n{}", member.log());
    assert!(
        readyz.1.contains("sink otlp_http/backend: circuit open"),
        "readyz: {readyz:?}"
    );
    assert_eq!(get(port, "/healthz").await.0, 200, "liveness stays up");
    assert_eq!(
        committed_at_10s.as_ref(),
        Some(&committed_at_60s),
        "nothing undelivered is committed during the outage"
    );
    assert!(
        metric(&m, "tracesift_partition_pauses_total") >= 1.0,
        "the partitions were paused"
    );
    let cpu = cpu1 - cpu0;
    assert!(
        cpu < window / 4,
        "{cpu:?} CPU over a {window:?} outage: something spins"
    );
    eprintln!("outage: {cpu:?} CPU over {window:?}, {sent_in_outage} traces sent so far");

    // Back: everything goes out, the breaker closes, the offsets reach the end.
    rx.command("start http");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (ids, ends) = traffic.stop().await;
    wait_committed(
        &brokers,
        "otlp-outage",
        "otlp_spans",
        &ends,
        Duration::from_secs(120),
    )
    .await;
    let m = get(port, "/metrics").await.1;
    assert_eq!(
        metric(
            &m,
            "tracesift_sink_breaker_state{sink=\"otlp_http/backend\"}"
        ),
        0.0,
        "closed again"
    );
    let peak = peak.stop();
    let log = member.log();
    member.stop();
    assert!(
        log.contains("circuit open") && log.contains("circuit closed"),
        "transitions logged:\n{log}"
    );
    let traces = rx.traces("http");
    let want: HashSet<&String> = ids.iter().collect();
    let got: HashSet<&String> = traces.keys().collect();
    assert_eq!(
        got.len(),
        want.len(),
        "every kept trace delivered ({} sent)",
        ids.len()
    );
    assert_eq!(got, want);
    for (t, (spans, _)) in &traces {
        let distinct: HashSet<&String> = spans.iter().collect();
        assert_eq!(distinct.len(), 3, "trace {t} whole");
    }
    // The README's formula: fixed 160 MiB + per partition 2 × store.max_bytes + queue bytes +
    // prefetch + one record + pending budget, + the producer queue (64 MiB).
    let formula = 160 * MIB + 2 * (2 * store + queue + prefetch + MIB + pending) + 64 * MIB;
    assert!(
        peak <= formula,
        "peak RSS {} MiB over the formula's {} MiB",
        peak / MIB,
        formula / MIB
    );
    eprintln!(
        "outage: peak RSS {} MiB (formula {} MiB), {} traces",
        peak / MIB,
        formula / MIB,
        ids.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_best_effort_backend_down_drops_and_counts_without_holding_commits() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", 2).await;
    let mut rx = Receiver::start();
    rx.command("stop grpc");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let member = Member::start(
        dir.path(),
        "best-effort",
        &format!(
            r#"
kafka: {{brokers: "{brokers}", create_topics: true, group_id: otlp-be, commit_interval: 200ms}}
store: {{decision_wait: 1s, decision_wait_after_root: 1s, tick: 50ms}}
policies: [{{name: all, type: always_sample}}]
sinks:
  kafka: {{enabled: false}}
  parquet: {{enabled: false}}
  otlp_grpc:
    - name: optional
      endpoint: "127.0.0.1:{}"
      tls: {{insecure: true}}
      timeout: 2s
      delivery: best_effort
      retry_on_failure: {{initial_interval: 100ms, max_interval: 500ms, max_elapsed_time: 2s}}
      batch: {{linger: 100ms}}
telemetry: {{listen: "127.0.0.1:{port}"}}
"#,
            rx.grpc_port
        ),
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(port, "/healthz").await.0 != 200 {
        assert!(Instant::now() < deadline, "not up:\n{}", member.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The backend is down the whole time: commits still reach the end.
    let traffic = Traffic::start(&brokers);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (ids, ends) = traffic.stop().await;
    wait_committed(
        &brokers,
        "otlp-be",
        "otlp_spans",
        &ends,
        Duration::from_secs(60),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = get(port, "/metrics").await.1;
        let dropped = metric(
            &m,
            "tracesift_sink_dropped_spans_total{sink=\"otlp_grpc/optional\"}",
        );
        if dropped == (3 * ids.len()) as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dropped {dropped} of {} spans",
            3 * ids.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Back: new traces flow to it again.
    rx.command("start grpc");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let traffic = Traffic::start(&brokers);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = traffic.stop().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while rx.traces("grpc").is_empty() {
        assert!(
            Instant::now() < deadline,
            "nothing delivered after the outage:\n{}",
            member.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    member.stop();
}
