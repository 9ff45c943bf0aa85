//! The OTLP exporters against a receiver built on the official OpenTelemetry proto types and
//! grpcio (`tests/support/otlp_receiver.py`; no real tracing backend installs here), with a real
//! broker: kept traces arrive whole, gzip on the wire, decoded strictly by an independent
//! decoder, with the configured (secret) header; a backend's 400 / INVALID_ARGUMENT sends the
//! traces to the dead-letter topic with the reason while the partition flows on; 429 with
//! `Retry-After` and RESOURCE_EXHAUSTED with RetryInfo are waited out, then everything arrives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::producer::FutureProducer;
use support::outage::metric;
use support::receiver::Receiver;
use support::*;
use tracesift::config::Config;

async fn start(cfg: &str) -> tracesift::pipeline::Running {
    let cfg = Config::parse(cfg).unwrap();
    tracesift::pipeline::start(
        cfg,
        Arc::new(tracesift::clock::tokio_clock::TokioClock::new()),
    )
    .await
    .unwrap()
}

/// Sends `n` traces of 3 spans each; returns their ids (hex) and the partitions' ends.
async fn send_traces(brokers: &str, ids: &[[u8; 16]]) -> (Vec<String>, BTreeMap<i32, i64>) {
    let producer: FutureProducer = client(brokers).set("linger.ms", "5").create().unwrap();
    let mut ends = BTreeMap::new();
    for t in ids {
        let spans = (1..=3).map(|n| test_span(t, n, false)).collect();
        send_trace_record(&producer, t, &otlp_record(spans), &mut ends).await;
    }
    (ids.iter().map(hex::encode).collect(), ends)
}

async fn metrics(addr: std::net::SocketAddr) -> String {
    tracesift::telemetry::server::http_get(addr, "/metrics")
        .await
        .unwrap()
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_traces_arrive_whole_over_http_and_grpc_gzip_with_headers() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", 2).await;
    let rx = Receiver::start();
    // The token comes from the environment, as in production.
    std::env::set_var("OTLP_TEST_TOKEN", "s3cr3t-t0ken");
    let running = start(&format!(
        r#"
kafka: {{brokers: "{brokers}", create_topics: true, group_id: otlp-ok, commit_interval: 200ms}}
store: {{decision_wait: 1s, decision_wait_after_root: 1s, tick: 50ms}}
policies: [{{name: all, type: always_sample}}]
sinks:
  kafka: {{enabled: false}}
  parquet: {{enabled: false}}
  otlp_http:
    - name: backend
      endpoint: http://127.0.0.1:{}
      headers: {{authorization: "Bearer ${{env:OTLP_TEST_TOKEN}}"}}
      batch: {{min_spans: 16, max_spans: 256, linger: 100ms}}
  otlp_grpc:
    - name: collector
      endpoint: 127.0.0.1:{}
      tls: {{insecure: true}}
      headers: {{authorization: "Bearer ${{env:OTLP_TEST_TOKEN}}"}}
      batch: {{min_spans: 16, max_spans: 256, linger: 100ms}}
    - name: plain
      endpoint: 127.0.0.1:{}
      tls: {{insecure: true}}
      compression: none
telemetry: {{listen: "127.0.0.1:0"}}
"#,
        rx.http_port, rx.grpc_port, rx.grpc_identity_port
    ))
    .await;
    let addr = running.telemetry_addr.unwrap();
    let (ids, ends) = send_traces(&brokers, &spread_trace_ids(200)).await;
    wait_committed(
        &brokers,
        "otlp-ok",
        "otlp_spans",
        &ends,
        Duration::from_secs(60),
    )
    .await;
    let m = metrics(addr).await;
    running.stop().await;

    let seen = rx.seen();
    assert!(
        seen.iter().all(|s| s.bad.is_none()),
        "strict decode: {seen:?}"
    );
    assert!(seen.iter().all(|s| s.status == 0 || s.status == 200));
    assert!(
        seen.iter()
            .filter(|s| s.proto == "http")
            .all(|s| s.gzip == Some(true)),
        "http: gzip on the wire"
    );
    // (gRPC's gzip is proven where a server that takes no compression refuses it, below.)
    for proto in ["http", "grpc", "grpc_identity"] {
        let mine: Vec<_> = seen.iter().filter(|s| s.proto == proto).collect();
        assert!(!mine.is_empty(), "{proto}: no request");
        if proto != "grpc_identity" {
            assert!(
                mine.iter().all(|s| s.auth == "Bearer s3cr3t-t0ken"),
                "{proto}: the header"
            );
        }
        // Batched: fewer requests than traces.
        assert!(mine.len() < ids.len(), "{proto}: {} requests", mine.len());
        let traces = rx.traces(proto);
        let want: HashSet<&String> = ids.iter().collect();
        let got: HashSet<&String> = traces.keys().collect();
        assert_eq!(got, want, "{proto}: every kept trace");
        for (t, (spans, requests)) in &traces {
            let distinct: HashSet<&String> = spans.iter().collect();
            assert_eq!(distinct.len(), 3, "{proto}: trace {t} whole");
            assert_eq!(*requests, 1, "{proto}: trace {t} in one request");
        }
    }
    // The latency breakdown has samples for both sinks.
    for sink in [
        "otlp_http/backend",
        "otlp_grpc/collector",
        "otlp_grpc/plain",
    ] {
        for h in [
            "tracesift_sink_request_seconds_count",
            "tracesift_sink_write_seconds_count",
            "tracesift_end_to_end_seconds_count",
        ] {
            let n = metric(&m, &format!("{h}{{sink=\"{sink}\"}}"));
            assert!(n > 0.0, "{h} for {sink}: {n}");
        }
        assert_eq!(
            metric(&m, &format!("tracesift_spans_out_total{{sink=\"{sink}\"}}")),
            600.0,
            "{sink}: spans out"
        );
    }
    for h in [
        "tracesift_commit_lag_seconds_count",
        "tracesift_queue_wait_seconds_count",
        "tracesift_decision_delay_seconds_count",
    ] {
        assert!(metric(&m, h) > 0.0, "{h}: no samples");
    }
    assert!(
        metric(
            &m,
            "tracesift_sink_batch_target_spans{sink=\"otlp_http/backend\"}"
        ) >= 16.0
    );
    assert!(!m.contains("s3cr3t"), "no secret in the metrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_batches_go_to_the_dead_letter_topic_and_the_partition_flows() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", 1).await;
    let mut rx = Receiver::start();
    rx.command("http 400");
    rx.command("grpc 3");
    let running = start(&format!(
        r#"
kafka: {{brokers: "{brokers}", create_topics: true, group_id: otlp-400, commit_interval: 200ms}}
store: {{decision_wait: 1s, decision_wait_after_root: 1s, tick: 50ms}}
policies: [{{name: all, type: always_sample}}]
sinks:
  parquet: {{enabled: false}}
  otlp_http: [{{name: strict, endpoint: "http://127.0.0.1:{}", batch: {{linger: 100ms}}}}]
  otlp_grpc:
    - {{name: strict, endpoint: "127.0.0.1:{}", tls: {{insecure: true}}, batch: {{linger: 100ms}}}}
    # gzip (the default) to a server that takes no compression: refused, which proves the
    # requests are gzip on the wire.
    - {{name: gzip, endpoint: "http://127.0.0.1:{}", batch: {{linger: 100ms}}}}
telemetry: {{listen: ""}}
"#,
        rx.http_port, rx.grpc_port, rx.grpc_identity_port
    ))
    .await;
    let (ids, ends) = send_traces(&brokers, &spread_trace_ids(20)).await;
    wait_committed(
        &brokers,
        "otlp-400",
        "otlp_spans",
        &ends,
        Duration::from_secs(60),
    )
    .await;
    running.stop().await;
    let dlq = read_all(&brokers, "otlp_spans_dlq");
    for (sink, reason) in [
        ("otlp_http/strict", "HTTP 400"),
        ("otlp_grpc/strict", "gRPC INVALID_ARGUMENT"),
        (
            "otlp_grpc/gzip",
            "gRPC UNIMPLEMENTED: Compression algorithm 'gzip' is disabled",
        ),
    ] {
        let mine: Vec<_> = dlq
            .iter()
            .filter(|r| r.headers.get("tracesift.sink").map(String::as_str) == Some(sink))
            .collect();
        let keys: HashSet<String> = mine
            .iter()
            .map(|r| String::from_utf8(r.key.clone().unwrap()).unwrap())
            .collect();
        assert_eq!(
            keys,
            ids.iter().cloned().collect::<HashSet<_>>(),
            "{sink}: one dead letter per trace"
        );
        for r in &mine {
            assert!(
                r.headers["tracesift.error"].starts_with(reason),
                "{sink}: {:?}",
                r.headers
            );
            assert_eq!(
                r.headers["tracesift.trace_id"],
                String::from_utf8(r.key.clone().unwrap()).unwrap()
            );
            let spans = spans_of(vec![(*r).clone()], "otlp_spans_dlq");
            let spans: usize = spans.values().map(Vec::len).sum();
            assert_eq!(spans, 3, "{sink}: the trace's spans are in the dead letter");
        }
    }
    // A refusal is not retried: one request per batch.
    let refused = rx.seen().len();
    assert!(
        refused <= 2 * ids.len(),
        "{refused} requests for {} traces",
        ids.len()
    );
    assert_eq!(
        rx.seen()
            .iter()
            .filter(|s| s.proto == "grpc_identity")
            .count(),
        0,
        "the gzip requests never reached the handler"
    );
    // The sampled topic (a healthy sink in the same run) has every trace.
    assert_eq!(sampled_by_trace(&brokers).len(), ids.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_waited_out_as_the_backend_asks() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", 1).await;
    let mut rx = Receiver::start();
    rx.command("http 429 2");
    rx.command("grpc 8 2");
    let running = start(&format!(
        r#"
kafka: {{brokers: "{brokers}", create_topics: true, group_id: otlp-429, commit_interval: 200ms}}
store: {{decision_wait: 1s, decision_wait_after_root: 1s, tick: 50ms}}
policies: [{{name: all, type: always_sample}}]
sinks:
  kafka: {{enabled: false}}
  parquet: {{enabled: false}}
  otlp_http:
    - name: throttled
      endpoint: "http://127.0.0.1:{}"
      sending_queue: {{num_consumers: 1}}
      retry_on_failure: {{initial_interval: 10ms, max_interval: 100ms}}
      batch: {{linger: 100ms}}
  otlp_grpc:
    - name: throttled
      endpoint: "127.0.0.1:{}"
      tls: {{insecure: true}}
      sending_queue: {{num_consumers: 1}}
      retry_on_failure: {{initial_interval: 10ms, max_interval: 100ms}}
      batch: {{linger: 100ms}}
telemetry: {{listen: ""}}
"#,
        rx.http_port, rx.grpc_port
    ))
    .await;
    let (ids, ends) = send_traces(&brokers, &spread_trace_ids(30)).await;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(9)).await;
    let window = t0.elapsed();
    // Then unavailable for a while (503 / UNAVAILABLE, no delay asked): retried with backoff.
    rx.command("http 503");
    rx.command("grpc 14");
    tokio::time::sleep(Duration::from_secs(3)).await;
    rx.command("http 200");
    rx.command("grpc 0");
    wait_committed(
        &brokers,
        "otlp-429",
        "otlp_spans",
        &ends,
        Duration::from_secs(60),
    )
    .await;
    running.stop().await;
    let seen = rx.seen();
    for (proto, code) in [("http", 429), ("grpc", 8)] {
        let throttled = seen
            .iter()
            .filter(|s| s.proto == proto && s.status == code)
            .count();
        // Own backoff alone (10-100 ms) would retry ~100 times in the window; waiting the 2 s
        // asked for allows at most one request per 2 s per slot (one slot), plus the first.
        let most = (window.as_secs_f64() / 2.0).ceil() as usize + 2;
        assert!(
            (1..=most).contains(&throttled),
            "{proto}: {throttled} throttled requests in {window:?} (at most {most})"
        );
        let unavailable = if proto == "http" { 503 } else { 14 };
        assert!(
            seen.iter()
                .any(|s| s.proto == proto && s.status == unavailable),
            "{proto}: retried through the unavailable phase"
        );
        let traces = rx.traces(proto);
        assert_eq!(
            traces.len(),
            ids.len(),
            "{proto}: all delivered after the throttling"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_private_ca_over_http_and_grpc() {
    use support::tls::{Pki, Terminator};
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", 1).await;
    let rx = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    // A real TLS terminator (stunnel) requiring client certificates, in front of each port.
    let https = Terminator::start(&pki, Terminator::free(), rx.http_port, true);
    let grpcs = Terminator::start(&pki, Terminator::free(), rx.grpc_port, true);
    let tls = format!(
        "{{ca_file: {}, cert_file: {}, key_file: {}}}",
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key")
    );
    let running = start(&format!(
        r#"
kafka: {{brokers: "{brokers}", create_topics: true, group_id: otlp-tls, commit_interval: 200ms}}
store: {{decision_wait: 1s, decision_wait_after_root: 1s, tick: 50ms}}
policies: [{{name: all, type: always_sample}}]
sinks:
  kafka: {{enabled: false}}
  parquet: {{enabled: false}}
  otlp_http:
    - {{name: tls, endpoint: "https://127.0.0.1:{}", tls: {tls}, batch: {{linger: 100ms}}}}
    # No client certificate: the terminator refuses the handshake; best effort, so it drops.
    - name: nocert
      endpoint: "https://127.0.0.1:{}"
      tls: {{ca_file: {}}}
      delivery: best_effort
      retry_on_failure: {{initial_interval: 100ms, max_interval: 200ms, max_elapsed_time: 1s}}
      batch: {{linger: 100ms}}
  otlp_grpc:
    - {{name: tls, endpoint: "127.0.0.1:{}", tls: {tls}, batch: {{linger: 100ms}}}}
telemetry: {{listen: "127.0.0.1:0"}}
"#,
        https.port,
        https.port,
        pki.path("ca.pem"),
        grpcs.port
    ))
    .await;
    let addr = running.telemetry_addr.unwrap();
    let (ids, ends) = send_traces(&brokers, &spread_trace_ids(20)).await;
    wait_committed(
        &brokers,
        "otlp-tls",
        "otlp_spans",
        &ends,
        Duration::from_secs(60),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = metrics(addr).await;
        let dropped = metric(
            &m,
            "tracesift_sink_dropped_spans_total{sink=\"otlp_http/nocert\"}",
        );
        if dropped == 60.0 {
            break;
        }
        assert!(Instant::now() < deadline, "nocert dropped {dropped} of 60");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    running.stop().await;
    for proto in ["http", "grpc"] {
        let traces = rx.traces(proto);
        assert_eq!(traces.len(), ids.len(), "{proto} over mutual TLS");
        // Only the sink with the client certificate got through (each trace once).
        assert!(
            traces.values().all(|(spans, _)| spans.len() == 3),
            "{proto}"
        );
    }
}
