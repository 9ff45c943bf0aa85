//! Scenario: the only instance is killed with SIGKILL after deciding a set of traces; a new
//! instance takes over; then the traces' late spans arrive.
//!
//! Guarantee: the new instance restores the decision log before consuming (readiness stays down
//! until it has), so every late span follows the decision made before the crash: a kept trace
//! gets its late spans (no kept trace is partial), a dropped trace stays dropped even when a late
//! span carries an error (without the log that span would start a new, partial, kept trace).
//! Nothing kept is lost; duplicates (at-least-once) are allowed and counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::producer::FutureProducer;
use support::*;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(cfg: &Path, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tracesift"))
        .args(["run", "-c"])
        .arg(cfg)
        .env("TRACESIFT_LOG", "info,librdkafka=warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    tracesift::telemetry::server::http_get(addr, path)
        .await
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_then_late_spans_follow_the_logged_decisions() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("tracesift.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"
kafka: {{brokers: "{brokers}", create_topics: true, group_id: crash, commit_interval: 200ms, properties: {{session.timeout.ms: "6000", heartbeat.interval.ms: "1000"}}}}
store: {{decision_wait: 1s, decision_wait_after_root: 1s, tick: 50ms}}
policies:
  - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}
  - {{name: default, type: probabilistic, probabilistic: {{sampling_percentage: 10}}}}
sinks: {{parquet: {{enabled: false}}}}
telemetry: {{listen: "127.0.0.1:{port}"}}
shutdown_timeout: 20s
"#
        ),
    )
    .unwrap();
    let producer: FutureProducer = client(&brokers).set("linger.ms", "5").create().unwrap();
    let traces = spread_trace_ids(200);

    // Instance 1 decides the early parts, then dies without any chance to clean up.
    let log1 = dir.path().join("one.log");
    let mut one = start(&cfg, &log1);
    let mut ends = BTreeMap::new();
    for (i, t) in traces.iter().enumerate() {
        let v = otlp_record(vec![test_span(t, 1, false), test_span(t, 2, i % 4 == 0)]);
        send_trace_record(&producer, t, &v, &mut ends).await;
    }
    wait_committed(
        &brokers,
        "crash",
        "otlp_spans",
        &ends,
        Duration::from_secs(60),
    )
    .await;
    one.kill().unwrap(); // SIGKILL
    one.wait().unwrap();

    // Instance 2 restores the decision log before it reads; not ready until then.
    let log2 = dir.path().join("two.log");
    let mut two = start(&cfg, &log2);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((200, _)) = get(port, "/readyz").await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "instance 2 never ready:\n{}",
            std::fs::read_to_string(&log2).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, metrics) = get(port, "/metrics").await.unwrap();
    let restored: f64 = metrics
        .lines()
        .find(|l| l.starts_with("tracesift_decisions_restored_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no restore metric:\n{metrics}"));
    assert_eq!(restored as usize, traces.len(), "every decision restored");

    // The late parts: traces i % 4 == 1 carry an error that comes too late.
    for (i, t) in traces.iter().enumerate() {
        let v = otlp_record(vec![test_span(t, 3, i % 4 == 1), test_span(t, 4, false)]);
        send_trace_record(&producer, t, &v, &mut ends).await;
    }
    wait_committed(
        &brokers,
        "crash",
        "otlp_spans",
        &ends,
        Duration::from_secs(60),
    )
    .await;
    Command::new("kill")
        .args(["-TERM", &two.id().to_string()])
        .status()
        .unwrap();
    assert!(two.wait().unwrap().success());

    let b = brokers.clone();
    let got: HashMap<[u8; 16], Vec<u8>> = tokio::task::spawn_blocking(move || sampled_by_trace(&b))
        .await
        .unwrap()
        .into_iter()
        .map(|(t, spans)| (t, spans.iter().map(|s| s.span_id[0]).collect()))
        .collect();
    let (mut kept, mut duplicates) = (0, 0);
    for (i, t) in traces.iter().enumerate() {
        let r = support::spine::randomness(t);
        let want = i % 4 == 0 || r >= T10;
        match (want, got.get(t)) {
            (false, None) => {}
            (true, Some(ids)) => {
                kept += 1;
                let distinct: HashSet<u8> = ids.iter().copied().collect();
                assert_eq!(
                    distinct,
                    HashSet::from([1, 2, 3, 4]),
                    "trace {i}: whole, late spans included"
                );
                duplicates += ids.len() - distinct.len();
            }
            (want, have) => panic!("trace {i}: want kept={want}, sampled {have:?}"),
        }
    }
    assert!(kept >= 50, "{kept}");
    eprintln!("kept {kept} traces whole, {duplicates} duplicate spans (at-least-once)");
}
