//! Scenario: a flood of unique, never-completing traces far beyond the store's byte budget, with
//! one giant trace (five times the per-trace span limit) at its head, through `tracesift run`
//! against a real broker.
//!
//! Guarantees: the process's resident memory stays under the configured budget plus a stated
//! overhead (asserted below: 2 × `store.max_bytes` for span bytes and the records they keep
//! alive, plus the input queue and librdkafka's prefetch, plus 150 MiB for the process itself);
//! the oldest traces are decided early and counted as forced; the giant trace is decided at its
//! limit, all its later spans follow that decision, and it does not stall the traces behind it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{status, Span, Status};
use rdkafka::producer::{FutureProducer, FutureRecord};
use support::*;
use tracesift::config::Config;

const MIB: u64 = 1 << 20;

fn span(trace: [u8; 16], n: u32, error: bool) -> Span {
    Span {
        trace_id: trace.to_vec(),
        span_id: (u64::from(n) + 1).to_be_bytes().to_vec(),
        // Never a root, so only the budget (or max age) decides these traces.
        parent_span_id: vec![0xee; 8],
        name: "flood".into(),
        start_time_unix_nano: support::recent_ns(),
        end_time_unix_nano: support::recent_ns() + 1_000_000,
        attributes: vec![KeyValue {
            key: "pad".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("x".repeat(300))),
            }),
            ..Default::default()
        }],
        status: Some(Status {
            code: if error {
                status::StatusCode::Error as i32
            } else {
                status::StatusCode::Unset as i32
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_stays_in_budget_and_giant_trace_does_not_stall() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let max_bytes = 16 * MIB;
    let queue_bytes = 4 * MIB;
    let prefetch = 4 * MIB;
    let pending_budget = 16 * MIB;
    let cfg = dir.path().join("tracesift.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"
kafka:
  brokers: "{brokers}"
  create_topics: true
  group_id: flood
  commit_interval: 200ms
  partition_queue_records: 512
  partition_queue_bytes: {queue_bytes}
  properties: {{queued.max.messages.kbytes: "{}"}}
store:
  decision_wait: 60s
  decision_wait_after_root: 60s
  max_trace_age: 10m
  max_bytes: {max_bytes}
  max_spans_per_trace: 2000
  max_trace_bytes: 4MiB
  on_overflow: decide_oldest
  decision_cache: {{sampled_cache_size: 10000, non_sampled_cache_size: 10000}}
policies:
  - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}
sinks: {{parquet: {{enabled: false}}, max_pending_bytes: {pending_budget}}}
telemetry: {{listen: "127.0.0.1:{port}"}}
shutdown_timeout: 20s
"#,
            prefetch / 1024
        ),
    )
    .unwrap();
    let log = dir.path().join("run.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracesift"))
        .args(["run", "-c"])
        .arg(&cfg)
        .env("TRACESIFT_LOG", "warn,librdkafka=warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();

    // Sample the resident set size all along.
    let stop_sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = std::sync::Arc::clone(&stop_sampling);
    let sampler = std::thread::spawn(move || {
        let mut samples = Vec::new();
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            samples.push((Instant::now(), rss_bytes(pid)));
            std::thread::sleep(Duration::from_millis(50));
        }
        samples
    });

    let producer: FutureProducer = client(&brokers)
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "120000")
        .create()
        .unwrap();
    let giant = [0x6a; 16];
    let mut produced_bytes = 0u64;
    let mut spans_total = 0u64;
    let mut pending = Vec::new();
    let mut error_traces: Vec<[u8; 16]> = Vec::new();
    // The giant trace: 10 000 spans in 50 records, an error in the first; then the flood:
    // 8 000 records of 50 one-span traces each (~150 MB of spans), 1 in 50 an error.
    let mut records: Vec<(String, Vec<u8>)> = Vec::new();
    for r in 0..50u32 {
        let spans = (0..200u32)
            .map(|i| span(giant, r * 200 + i, r == 0 && i == 0))
            .collect();
        records.push((hex::encode(giant), otlp_record(spans)));
    }
    for r in 0..8_000u32 {
        let spans = (0..50u32)
            .map(|i| {
                let mut t = [0u8; 16];
                t[..4].copy_from_slice(&r.to_be_bytes());
                t[4..8].copy_from_slice(&i.to_be_bytes());
                t[15] = 1;
                let error = (r * 50 + i) % 50 == 7;
                if error {
                    error_traces.push(t);
                }
                span(t, 0, error)
            })
            .collect();
        records.push((format!("flood-{r}"), otlp_record(spans)));
    }
    let total_spans: u64 = 10_000 + 8_000 * 50;
    // When ingestion passes 25% and 50% of the spans (from the process's own counter).
    let progress = tokio::spawn(async move {
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let (mut q1, mut q2) = (None, None);
        while q2.is_none() {
            if let Ok((_, m)) = tracesift::telemetry::server::http_get(addr, "/metrics").await {
                let read = metric(&m, "tracesift_spans_in_total") as u64;
                if q1.is_none() && read >= total_spans / 4 {
                    q1 = Some(Instant::now());
                }
                if read >= total_spans / 2 {
                    q2 = Some(Instant::now());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (q1.unwrap(), q2.unwrap())
    });
    for (k, v) in &records {
        produced_bytes += v.len() as u64;
        spans_total += if k.starts_with("flood") { 50 } else { 200 };
        loop {
            match producer.send_result(FutureRecord::to("otlp_spans").key(k).payload(v)) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        if pending.len() >= 200 {
            for f in pending.drain(..) {
                f.await.unwrap().map_err(|(e, _)| e).unwrap();
            }
        }
    }
    for f in pending.drain(..) {
        f.await.unwrap().map_err(|(e, _)| e).unwrap();
    }

    // Wait until every span has been read.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut read = 0.0;
    let metrics = loop {
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        if let Ok((_, m)) = tracesift::telemetry::server::http_get(addr, "/metrics").await {
            read = metric(&m, "tracesift_spans_in_total");
            if read as u64 >= spans_total {
                break m;
            }
        }
        let exited = child.try_wait().unwrap();
        assert!(
            Instant::now() < deadline && exited.is_none(),
            "{read} of {spans_total} spans read (exit {exited:?}):\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_sampling.store(true, std::sync::atomic::Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    let max_rss = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let max_in = |from: Instant, to: Instant| {
        samples
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|s| s.1)
            .max()
            .unwrap_or(0)
    };
    let (q1, q2) = progress.await.unwrap();
    let first_half = max_in(q1, q2);
    let second_half = max_in(q2, Instant::now());
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());

    let forced = metric(&metrics, "tracesift_forced_decisions_total");
    // The stated model (README, Guarantees): a fixed 160 MiB for the process, per partition
    // 2 × store.max_bytes + the input queue + librdkafka's prefetch + ~150 B per decision-cache
    // entry + the pending-write budget, and the producer's queue (at most 64 MiB).
    let cache_entries = 20_000;
    let bound = 160 * MIB
        + 2 * max_bytes
        + queue_bytes
        + prefetch
        + 150 * cache_entries
        + pending_budget
        + 64 * MIB;
    eprintln!(
        "flood: {:.0} MB in {} spans; max RSS {:.0} MiB (25-50% {:.0}, 50-100% {:.0}; bound {:.0} MiB); forced decisions {forced}",
        produced_bytes as f64 / 1e6,
        spans_total,
        max_rss as f64 / MIB as f64,
        first_half as f64 / MIB as f64,
        second_half as f64 / MIB as f64,
        bound as f64 / MIB as f64
    );
    assert!(max_rss > 0, "RSS was sampled");
    assert!(max_rss < bound, "RSS {max_rss} over the bound {bound}");
    // Bounded, not merely big: reading the second half of the flood does not grow memory
    // beyond what the second quarter needed.
    assert!(
        second_half <= first_half + first_half / 4 + 24 * MIB,
        "memory grew with the flood: {first_half} then {second_half}"
    );
    assert!(forced > 1000.0, "forced decisions reported: {forced}");

    // The giant trace: decided at its limit, every later span followed (kept, error in front).
    let b = brokers.clone();
    let per_trace: HashMap<[u8; 16], std::collections::HashSet<Vec<u8>>> =
        tokio::task::spawn_blocking(move || sampled_by_trace(&b))
            .await
            .unwrap()
            .into_iter()
            .map(|(t, spans)| (t, spans.into_iter().map(|s| s.span_id).collect()))
            .collect();
    assert_eq!(
        per_trace.get(&giant).map(|s| s.len()),
        Some(10_000),
        "every span of the giant trace, late ones through the decision"
    );
    // The traces behind it were not stalled: the flood's first half has been decided (forced,
    // oldest first) and every error trace in it kept.
    let first_half: Vec<_> = error_traces[..error_traces.len() / 2].to_vec();
    let missing = first_half
        .iter()
        .filter(|t| !per_trace.contains_key(*t))
        .count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} early error traces not kept",
        first_half.len()
    );
}

/// Scenario: the same kind of flood with `on_overflow: pause` and traces that do complete
/// (a short decision wait). Guarantee: the partition pauses instead of deciding early — no
/// forced decision — and resumes without loss: every error trace is kept with all its spans and
/// the committed offsets reach the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_mode_pauses_and_resumes_without_loss() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", 1).await;
    let cfg = Config::parse(&format!(
        r#"
kafka: {{brokers: "{brokers}", create_topics: true, group_id: paused, commit_interval: 200ms, partition_queue_records: 64}}
store:
  decision_wait: 500ms
  decision_wait_after_root: 500ms
  max_bytes: 1MiB
  max_trace_bytes: 512KiB
  on_overflow: pause
  tick: 20ms
policies: [{{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}]
sinks: {{parquet: {{enabled: false}}}}
telemetry: {{listen: "127.0.0.1:0"}}
"#
    ))
    .unwrap();
    let producer: FutureProducer = client(&brokers).set("linger.ms", "5").create().unwrap();
    let mut ends = std::collections::BTreeMap::new();
    let mut errors = Vec::new();
    let mut pending = Vec::new();
    // 1 500 records of 20 one-span traces (~12 MB), twelve times the store's budget.
    for r in 0..1_500u32 {
        let spans: Vec<Span> = (0..20u32)
            .map(|i| {
                let mut t = [0u8; 16];
                t[..4].copy_from_slice(&r.to_be_bytes());
                t[4..8].copy_from_slice(&i.to_be_bytes());
                t[15] = 2;
                let error = i == 3;
                if error {
                    errors.push(t);
                }
                span(t, 0, error)
            })
            .collect();
        let key = format!("p{r}");
        let value = otlp_record(spans);
        loop {
            match producer.send_result(FutureRecord::to("otlp_spans").key(&key).payload(&value)) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }
    for f in pending {
        let d = f.await.unwrap().map_err(|(e, _)| e).unwrap();
        let e = ends.entry(d.partition).or_insert(0);
        *e = (*e).max(d.offset + 1);
    }
    // Everything is in the topic before the pipeline starts: it reads far faster than it may
    // buffer, so the store fills and the partition must pause.
    let running = tracesift::pipeline::start(
        cfg,
        Arc::new(tracesift::clock::tokio_clock::TokioClock::new()),
    )
    .await
    .unwrap();
    let metrics_addr = running.telemetry_addr.unwrap();

    wait_committed(
        &brokers,
        "paused",
        "otlp_spans",
        &ends,
        Duration::from_secs(120),
    )
    .await;
    let (_, m) = tracesift::telemetry::server::http_get(metrics_addr, "/metrics")
        .await
        .unwrap();
    assert!(
        metric(&m, "tracesift_partition_pauses_total") > 0.0,
        "the partition paused:\n{m}"
    );
    let stats = running.stop().await;
    assert_eq!(stats.forced(), 0, "no forced decision");
    assert_eq!(stats.traces_decided(), 30_000);
    let b = brokers.clone();
    let kept = tokio::task::spawn_blocking(move || sampled_by_trace(&b))
        .await
        .unwrap();
    let missing = errors.iter().filter(|t| !kept.contains_key(*t)).count();
    assert_eq!(missing, 0, "every error trace kept");
    assert_eq!(kept.len(), errors.len(), "and nothing else");
}
