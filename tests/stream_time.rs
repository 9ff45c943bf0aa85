//! Trace waits in stream time, against a real broker and real `tracesift run` processes.
//!
//! Scenarios and what they guarantee:
//! - a partition held (paused) for ten times `decision_wait_after_root` between the roots of
//!   ERROR traces and their error spans: every ERROR trace is kept whole;
//! - the whole member frozen with SIGSTOP for 6 s, four times, while split ERROR traces flow:
//!   every trace kept whole;
//! - a backlog of 20,000 split traces read by a throttled member (stopped 2.2 s of every
//!   2.5 s): every ERROR and slow trace kept whole, and the kept set equals that of a second,
//!   unthrottled run over the same topic with a new group (deterministic replay);
//! - two producers whose timestamps differ from the true time by more than `decision_wait`
//!   (one behind, one ahead): every ERROR trace kept whole, and every record resolved (so no
//!   trace waits for ever);
//! - the poll loop never blocks: its longest gap stays small while the lag gauge is exported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use support::*;
use tracesift::gen::{self, GenOptions};

fn config(brokers: &str, group: &str, sampled: &str, store: &str, policies: &str) -> String {
    format!(
        r#"
kafka: {{brokers: "{brokers}", create_topics: true, group_id: {group}, sampled_topic: {sampled}, commit_interval: 200ms}}
store: {{{store}}}
sinks: {{parquet: {{enabled: false}}}}
telemetry: {{listen: ""}}
shutdown_timeout: 10s
{policies}
"#
    )
}

const ERRORS_ONLY: &str =
    "policies:\n  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}\n";

/// Sends one record, optionally with an explicit timestamp; notes its partition's end.
async fn send(
    p: &FutureProducer,
    trace: &[u8; 16],
    value: &[u8],
    timestamp_ms: Option<i64>,
    ends: &mut BTreeMap<i32, i64>,
) {
    let key = hex::encode(trace);
    let mut rec = FutureRecord::to("otlp_spans").key(&key).payload(value);
    if let Some(ts) = timestamp_ms {
        rec = rec.timestamp(ts);
    }
    let d = p
        .send(rec, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let e = ends.entry(d.partition).or_insert(0);
    *e = (*e).max(d.offset + 1);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Waits until `group` committed every record (`secs` at most), stops the member, returns its log.
async fn settle(
    m: Member,
    brokers: &str,
    group: &str,
    ends: &BTreeMap<i32, i64>,
    secs: u64,
) -> String {
    wait_committed(
        brokers,
        group,
        "otlp_spans",
        ends,
        Duration::from_secs(secs),
    )
    .await;
    let log = m.log();
    m.stop();
    log
}

/// Asserts that each trace has exactly spans 1..=n on the sampled topic.
fn assert_whole(got: &HashMap<[u8; 16], HashSet<Vec<u8>>>, traces: &[[u8; 16]], n: u8, log: &str) {
    let mut problems = Vec::new();
    for t in traces {
        let want: HashSet<Vec<u8>> = (1..=n).map(|i| vec![i; 8]).collect();
        match got.get(t) {
            None => problems.push(format!("{} dropped", hex::encode(t))),
            Some(s) if *s != want => {
                problems.push(format!("{} kept {} of {n} spans", hex::encode(t), s.len()))
            }
            Some(_) => {}
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} ERROR traces not kept whole, first 10: {:?}\n{}",
        problems.len(),
        traces.len(),
        &problems[..problems.len().min(10)],
        log.lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_partition_decides_nothing_until_it_has_read_on() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", 1).await;
    let producer: FutureProducer = client(&brokers).set("linger.ms", "0").create().unwrap();
    let traces = spread_trace_ids(20);
    let mut ends = BTreeMap::new();
    // Roots first (offsets 0..20), then the error spans (20..40), a few ms apart.
    for t in &traces {
        send(
            &producer,
            t,
            &otlp_record(vec![test_span(t, 1, false)]),
            None,
            &mut ends,
        )
        .await;
    }
    for t in &traces {
        send(
            &producer,
            t,
            &otlp_record(vec![test_span(t, 2, true)]),
            None,
            &mut ends,
        )
        .await;
    }
    assert_eq!(ends[&0], 40);
    let dir = tempfile::tempdir().unwrap();
    // Held before offset 20 for 5 s: ten times decision_wait_after_root.
    require_failpoints();
    let m = Member::start(
        dir.path(),
        "held",
        &config(
            &brokers,
            "held",
            "otlp_spans_sampled",
            "decision_wait: 1s, decision_wait_after_root: 500ms, tick: 50ms",
            ERRORS_ONLY,
        ),
        &[("TRACESIFT_FAILPOINT", "hold@0:20:5000")],
    );
    let log = settle(m, &brokers, "held", &ends, 90).await;
    assert!(log.contains("failpoint: partition held"), "{log}");
    assert_whole(&sampled(&brokers, "otlp_spans_sampled"), &traces, 2, &log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_freezes_do_not_decide_traces_early() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let m = Member::start(
        dir.path(),
        "frozen",
        &config(
            &brokers,
            "frozen",
            "otlp_spans_sampled",
            "decision_wait: 3s, decision_wait_after_root: 2s, tick: 100ms",
            ERRORS_ONLY,
        ),
        &[],
    );
    let producer: FutureProducer = client(&brokers).set("linger.ms", "5").create().unwrap();
    // Split ERROR traces: the root, then the error span, then a third span, each its own
    // record, 300 ms apart, for about 32 s.
    let traces = spread_trace_ids(1224);
    let pid = m.child.id();
    let freezer = {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(3));
            for _ in 0..4 {
                let kill = |s: &str| {
                    Command::new("kill")
                        .args([s, &pid.to_string()])
                        .status()
                        .unwrap()
                };
                kill("-STOP");
                std::thread::sleep(Duration::from_secs(6));
                kill("-CONT");
                std::thread::sleep(Duration::from_secs(2));
            }
        })
    };
    // Pipelined: every 300 ms the roots of one chunk of 12 traces, the error spans of the
    // chunk before and the third spans of the one before that, so at any moment (a freeze
    // included) two dozen traces have some of their spans in the log and some still to come.
    let chunks: Vec<&[[u8; 16]]> = traces.chunks(12).collect();
    let mut ends = BTreeMap::new();
    for step in 0..chunks.len() + 2 {
        for (lag, n, error) in [(0usize, 1u8, false), (1, 2, true), (2, 3, false)] {
            let Some(chunk) = step.checked_sub(lag).and_then(|i| chunks.get(i)) else {
                continue;
            };
            for t in chunk.iter() {
                send(
                    &producer,
                    t,
                    &otlp_record(vec![test_span(t, n, error)]),
                    None,
                    &mut ends,
                )
                .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    freezer.join().unwrap();
    let log = settle(m, &brokers, "frozen", &ends, 120).await;
    assert_whole(&sampled(&brokers, "otlp_spans_sampled"), &traces, 3, &log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_catch_up_keeps_what_an_unthrottled_replay_keeps() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", 2).await;
    let (records, manifest) = gen::plan_records(&GenOptions {
        traces: 20_000,
        seed: 16,
        split: true,
        late_fraction: 0.0,
        start_ns: support::recent_ns(),
        ..Default::default()
    });
    let producer: FutureProducer = client(&brokers).set("linger.ms", "5").create().unwrap();
    let produced = gen::produce(&producer, "otlp_spans", &records, None)
        .await
        .unwrap();
    let ends = produced.ends;
    let policies = support::spine::POLICIES;
    let store = "decision_wait: 3s, decision_wait_after_root: 2s, tick: 100ms";
    let dir = tempfile::tempdir().unwrap();

    // Run 1: stopped 2.2 s of every 2.5 s while it catches up. Each time it resumes, seconds
    // of wall time have passed that it spent reading nothing.
    let slow = Member::start(
        dir.path(),
        "slow",
        &config(&brokers, "slow", "sampled_slow", store, policies),
        &[],
    );
    let done = Arc::new(AtomicBool::new(false));
    let throttle = {
        let done = Arc::clone(&done);
        let pid = slow.child.id().to_string();
        std::thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                let _ = Command::new("kill").args(["-STOP", &pid]).status();
                std::thread::sleep(Duration::from_millis(2_200));
                let _ = Command::new("kill").args(["-CONT", &pid]).status();
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    wait_committed(
        &brokers,
        "slow",
        "otlp_spans",
        &ends,
        Duration::from_secs(600),
    )
    .await;
    done.store(true, Ordering::Release);
    throttle.join().unwrap();
    let slow_log = slow.log();
    slow.stop();

    // Run 2: a new group over the same topic, at full speed.
    let fast = Member::start(
        dir.path(),
        "fast",
        &config(&brokers, "fast", "sampled_fast", store, policies),
        &[],
    );
    wait_committed(
        &brokers,
        "fast",
        "otlp_spans",
        &ends,
        Duration::from_secs(300),
    )
    .await;
    fast.stop();

    let slow_kept = sampled(&brokers, "sampled_slow");
    let fast_kept = sampled(&brokers, "sampled_fast");
    let mut must = 0;
    let mut problems = Vec::new();
    for f in &manifest.traces {
        if f.has_error || f.duration_ms > 500.0 {
            must += 1;
            match slow_kept.get(&f.trace_id.0) {
                Some(s) if s.len() == f.spans => {}
                Some(s) => problems.push(format!("partial {} of {}: {f:?}", s.len(), f.spans)),
                None => problems.push(format!("dropped {f:?}")),
            }
        }
    }
    assert!(must > 1000, "the load has errors and slow traces: {must}");
    assert!(
        problems.is_empty(),
        "{} of {must} error/slow traces not kept whole by the throttled run: {:?}\n{}",
        problems.len(),
        &problems[..problems.len().min(10)],
        slow_log
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let a: BTreeSet<[u8; 16]> = slow_kept.keys().copied().collect();
    let b: BTreeSet<[u8; 16]> = fast_kept.keys().copied().collect();
    assert_eq!(
        a.symmetric_difference(&b).count(),
        0,
        "throttled and unthrottled runs kept different traces: {} vs {}",
        a.len(),
        b.len()
    );
    let spans =
        |m: &HashMap<[u8; 16], HashSet<Vec<u8>>>| m.values().map(HashSet::len).sum::<usize>();
    assert_eq!(spans(&slow_kept), spans(&fast_kept));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_with_skewed_clocks_neither_decide_early_nor_hold_for_ever() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let m = Member::start(
        dir.path(),
        "skew",
        &config(
            &brokers,
            "skew",
            "otlp_spans_sampled",
            "decision_wait: 3s, decision_wait_after_root: 2s, max_trace_age: 10s, tick: 100ms",
            ERRORS_ONLY,
        ),
        &[],
    );
    let producer: FutureProducer = client(&brokers).set("linger.ms", "0").create().unwrap();
    // Root from a producer with the true time; the error span from one 10 s behind (first
    // half) or 10 s ahead (second half); the third span from the true producer again.
    let traces = spread_trace_ids(200);
    let mut ends = BTreeMap::new();
    for (i, t) in traces.iter().enumerate() {
        let skew = if i < 100 { -10_000 } else { 10_000 };
        send(
            &producer,
            t,
            &otlp_record(vec![test_span(t, 1, false)]),
            Some(now_ms()),
            &mut ends,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        send(
            &producer,
            t,
            &otlp_record(vec![test_span(t, 2, true)]),
            Some(now_ms() + skew),
            &mut ends,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        send(
            &producer,
            t,
            &otlp_record(vec![test_span(t, 3, false)]),
            Some(now_ms()),
            &mut ends,
        )
        .await;
    }
    // Every record resolved: no trace waits for ever (at most max_trace_age + one tick after
    // its first span while the partition is live).
    let log = settle(m, &brokers, "skew", &ends, 60).await;
    assert_whole(&sampled(&brokers, "otlp_spans_sampled"), &traces, 3, &log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poll_loop_never_waits_on_the_network() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", 6).await;
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &brokers,
        "gap",
        "otlp_spans_sampled",
        "decision_wait: 1s, tick: 100ms",
        ERRORS_ONLY,
    )
    .replace(
        "telemetry: {listen: \"\"}",
        &format!("telemetry: {{listen: \"127.0.0.1:{port}\"}}"),
    );
    let m = Member::start(dir.path(), "gap", &cfg, &[]);
    let producer: FutureProducer = client(&brokers).set("linger.ms", "5").create().unwrap();
    let traces = spread_trace_ids(600);
    let mut ends = BTreeMap::new();
    let started = Instant::now();
    // Light traffic for 25 s, so fetches long-poll between records (the case where a
    // blocking offsets request waits behind them).
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(25) {
        let t = &traces[i % traces.len()];
        send(
            &producer,
            t,
            &otlp_record(vec![test_span(t, 1, i % 7 == 0)]),
            None,
            &mut ends,
        )
        .await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = reqwest_metrics(port);
    let gauge = |name: &str| -> Vec<f64> {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect()
    };
    let gap = gauge("tracesift_source_poll_gap_max_seconds");
    let lag = gauge("tracesift_committed_offset_lag");
    let log = m.log();
    m.stop();
    assert_eq!(gap.len(), 1, "poll-gap gauge exported:\n{metrics}");
    eprintln!("longest poll gap over the last window: {:.3} s", gap[0]);
    assert_eq!(lag.len(), 6, "a lag gauge per partition:\n{metrics}\n{log}");
    // The longest gap between polls over the last window. A blocking watermark query per
    // partition (500 ms timeout each, six partitions) made it seconds.
    assert!(gap[0] < 0.5, "poll gap {} s:\n{log}", gap[0]);
}

/// `GET /metrics` on the member's telemetry port.
fn reqwest_metrics(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
