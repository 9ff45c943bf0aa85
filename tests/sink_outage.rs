//! The hot store unwritable under traffic (real broker, real file system): the Parquet sink's
//! circuit breaker opens (metric), `/readyz` names it while `/healthz` stays up, the partitions
//! commit nothing they have not written, the process does not spin (CPU time over the outage
//! window stays low), and once the store is writable again a probe closes the breaker and every
//! kept span reaches the archive with the offsets committed to the end.
//!
//! "Unwritable" without root-proof permissions: the segment directory's first component
//! (`spans`) is made a regular file, so every write fails with "not a directory", even as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::producer::FutureProducer;
use support::*;
use tracesift::config::Config;

/// This process's CPU time (user + system), from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) of stat(5), counted from the state field (3).
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn breaker(metrics: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with("tracesift_sink_breaker_state{sink=\"parquet\"}"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_hot_store_opens_the_breaker_and_loses_nothing() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", 2).await;
    let hot = tempfile::tempdir().unwrap();
    let blocker = hot.path().join("spans");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let cfg = Config::parse(&format!(
        r#"
kafka: {{brokers: "{brokers}", create_topics: true, group_id: outage, commit_interval: 200ms}}
store: {{decision_wait: 1s, decision_wait_after_root: 1s, tick: 50ms}}
policies: [{{name: all, type: always_sample}}]
archive: {{hot: {{url: "file://{}", flush_interval: 1s}}}}
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
    let producer: FutureProducer = client(&brokers).set("linger.ms", "5").create().unwrap();
    let traces = spread_trace_ids(100);
    let mut ends = BTreeMap::new();
    for t in &traces {
        let spans = (1..=3).map(|n| test_span(t, n, false)).collect();
        send_trace_record(&producer, t, &otlp_record(spans), &mut ends).await;
    }

    // The outage: 20 s of failing segment writes.
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let mut opened = false;
    let mut readyz = (0, String::new());
    while t0.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, m) = tracesift::telemetry::server::http_get(addr, "/metrics")
            .await
            .unwrap();
        opened |= breaker(&m) == Some(2.0);
        readyz = tracesift::telemetry::server::http_get(addr, "/readyz")
            .await
            .unwrap();
    }
    let cpu = cpu_time() - cpu0;
    let window = t0.elapsed();
    assert!(opened, "the parquet breaker opened");
    assert_eq!(readyz.0, 503, "{}", readyz.1);
    assert!(
        readyz.1.contains("sink parquet: circuit open"),
        "{}",
        readyz.1
    );
    assert_eq!(
        tracesift::telemetry::server::http_get(addr, "/healthz")
            .await
            .unwrap()
            .0,
        200
    );
    let b = brokers.clone();
    let c = tokio::task::spawn_blocking(move || committed(&b, "outage", "otlp_spans", &[0, 1]))
        .await
        .unwrap();
    assert!(
        ends.iter().any(|(p, e)| c.get(p).is_none_or(|o| o < e)),
        "nothing unwritten is committed: committed {c:?}, end {ends:?}"
    );
    // Generous: a spinning retry loop burns a core; waiting writers burn almost nothing.
    assert!(
        cpu < window / 4,
        "{cpu:?} of CPU over a {window:?} outage: something spins"
    );
    eprintln!("outage: {cpu:?} CPU over {window:?}");

    // The store is writable again: a probe closes the breaker and everything is archived.
    std::fs::remove_file(&blocker).unwrap();
    wait_committed(
        &brokers,
        "outage",
        "otlp_spans",
        &ends,
        Duration::from_secs(60),
    )
    .await;
    let (_, m) = tracesift::telemetry::server::http_get(addr, "/metrics")
        .await
        .unwrap();
    assert_eq!(breaker(&m), Some(0.0), "closed again");
    running.stop().await;
    let files = parquet_files(hot.path());
    assert!(!files.is_empty());
    let out = run_python(&format!(
        "import pyarrow.parquet as pq, glob\nn = 0\nids = set()\nfor f in glob.glob('{}/spans/**/*.parquet', recursive=True):\n    t = pq.read_table(f, columns=['trace_id'])\n    n += t.num_rows\n    ids.update(bytes(x) for x in t.column('trace_id').to_pylist())\nprint(n, len(ids))",
        hot.path().display()
    ));
    assert_eq!(out.trim(), "300 100", "every kept span archived once");
}
