//! Shutdown with a stuck downstream, against a real broker: `tracesift run` gets SIGTERM while
//! the sink writes of most of its partitions never complete (fault injection:
//! `TRACESIFT_FAILPOINT=sink_hang@...`). Every partition is drained in parallel under one
//! `shutdown_timeout`, the partition that drained commits its final point although the others
//! did not, and the process exits instead of waiting partition after partition.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::producer::FutureProducer;
use support::*;

const PARTITIONS: i32 = 6;
const SHUTDOWN: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_commits_the_partitions_that_drained_and_exits_within_the_deadline() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", PARTITIONS).await;
    let producer: FutureProducer = client(&brokers).create().unwrap();
    let mut ends = BTreeMap::new();
    let mut partition_of = BTreeMap::new();
    for t in spread_trace_ids(240) {
        let before = ends.clone();
        send_trace_record(
            &producer,
            &t,
            &otlp_record(vec![test_span(&t, 1, true)]),
            &mut ends,
        )
        .await;
        let p = *ends
            .iter()
            .find(|(p, e)| before.get(*p) != Some(*e))
            .unwrap()
            .0;
        partition_of.insert(t, p);
    }
    assert_eq!(
        ends.len(),
        PARTITIONS as usize,
        "every partition has records: {ends:?}"
    );
    // Partition 5 is healthy; the other five never get an acknowledgement from their sink.
    let healthy = PARTITIONS - 1;
    let hung: Vec<String> = (0..healthy).map(|p| p.to_string()).collect();

    let dir = tempfile::tempdir().unwrap();
    // Commits only at the end (the interval is longer than the test): whatever partition 5
    // has committed afterwards came from the final drain.
    let config = format!(
        r#"
kafka: {{brokers: "{brokers}", create_topics: true, group_id: shutdown, commit_interval: 1h}}
store: {{decision_wait: 300ms, tick: 50ms}}
sinks: {{parquet: {{enabled: false}}}}
telemetry: {{listen: ""}}
shutdown_timeout: {SHUTDOWN}s
policies:
  - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}
"#
    );
    require_failpoints();
    let failpoint = format!("sink_hang@{}", hung.join(","));
    let mut m = Member::start(
        dir.path(),
        "run",
        &config,
        &[("TRACESIFT_FAILPOINT", failpoint.as_str())],
    );
    let log = dir.path().join("run.log");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    // Wait until every trace of the healthy partition is on the sampled topic.
    let want: Vec<[u8; 16]> = partition_of
        .iter()
        .filter(|(_, p)| **p == healthy)
        .map(|(t, _)| *t)
        .collect();
    assert!(!want.is_empty());
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let b = brokers.clone();
        let got = tokio::task::spawn_blocking(move || sampled_by_trace(&b))
            .await
            .unwrap();
        if want.iter().all(|t| got.contains_key(t)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the healthy partition's traces never reached the sampled topic:\n{}",
            log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let stopped = Instant::now();
    Command::new("kill")
        .args(["-TERM", &m.child.id().to_string()])
        .status()
        .unwrap();
    let status = loop {
        if let Some(s) = m.child.try_wait().unwrap() {
            break s;
        }
        // A bound far above the deadline, only to end the test if the process never exits.
        if stopped.elapsed() > Duration::from_secs(120) {
            let _ = m.child.kill();
            panic!("tracesift did not exit after SIGTERM:\n{}", log_text());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = stopped.elapsed();
    assert!(status.success(), "exit {status:?}:\n{}", log_text());
    // Drained one after another, five stuck partitions would take five deadlines; in
    // parallel they take one. Three deadlines is a bound no sequential drain can meet.
    assert!(
        took < Duration::from_secs(3 * SHUTDOWN),
        "shutdown took {took:?} with a {SHUTDOWN}s deadline:\n{}",
        log_text()
    );
    let parts: Vec<i32> = (0..PARTITIONS).collect();
    let b = brokers.clone();
    let committed =
        tokio::task::spawn_blocking(move || committed(&b, "shutdown", "otlp_spans", &parts))
            .await
            .unwrap();
    assert_eq!(
        committed.get(&healthy),
        ends.get(&healthy),
        "the healthy partition's final point is committed: {committed:?}\n{}",
        log_text()
    );
    for p in 0..healthy {
        assert!(
            committed.get(&p).is_none_or(|c| c < &ends[&p]),
            "partition {p} committed {:?} past records whose writes never completed (end {})",
            committed.get(&p),
            ends[&p]
        );
    }
    assert_eq!(
        log_text().matches("did not drain in time").count(),
        hung.len(),
        "{}",
        log_text()
    );
}
