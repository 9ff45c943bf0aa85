//! Archive filing time is sane: records whose producer stamped them (and their spans) in 2000 or
//! next year go through tansu and the pipeline into the hot tier, are filed under the hour they
//! arrived (not under 2000, where retention would delete them at once, nor next year, where
//! compaction would never reach them), are counted in
//! `tracesift_record_timestamps_replaced_total`, and survive a compaction + retention pass.
//! (A timestamp of 0 cannot be produced through librdkafka, which reads 0 as "now"; the core's
//! unit test covers it.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::trace::v1::Span;
use rdkafka::producer::FutureProducer;
use support::*;

const YEAR_MS: i64 = 365 * 86_400_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Two spans of trace `t`, starting at `start_ms` (the producer's clock).
fn spans_at(t: &[u8; 16], start_ms: i64) -> Vec<Span> {
    (1..=2u8)
        .map(|n| {
            let mut s = test_span(t, n, false);
            let start = (start_ms as u64) * 1_000_000 + u64::from(n) * 1_000_000;
            s.start_time_unix_nano = start;
            s.end_time_unix_nano = start + 5_000_000;
            s
        })
        .collect()
}

/// The `(date, hour)` partitions of the Parquet files under `dir`.
fn partitions(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = parquet_files(dir)
        .iter()
        .map(|f| {
            let s = f.display().to_string();
            let part = |k: &str| {
                s.split('/')
                    .find_map(|c| c.strip_prefix(k))
                    .unwrap_or_default()
                    .to_string()
            };
            (part("date="), part("hour="))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn hour_of(ms: i64) -> (String, String) {
    let t = chrono::DateTime::from_timestamp_millis(ms).unwrap();
    (t.format("%Y-%m-%d").to_string(), t.format("%H").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_stamped_in_another_era_are_filed_by_arrival_and_survive_retention() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let hot = dir.path().join("hot");
    let cfg = tracesift::config::Config::parse(&format!(
        r#"
kafka:
  brokers: "{brokers}"
  create_topics: true
  group_id: filing
  commit_interval: 100ms
store: {{decision_wait: 500ms, decision_wait_after_root: 500ms, tick: 50ms}}
policies: [{{name: all, type: always_sample}}]
sinks: {{kafka: {{enabled: false}}}}
archive: {{hot: {{url: "file://{}", flush_interval: 1s}}}}
telemetry: {{listen: ""}}
"#,
        hot.display()
    ))
    .unwrap();
    let running = tracesift::pipeline::start(
        cfg,
        Arc::new(tracesift::clock::tokio_clock::TokioClock::new()),
    )
    .await
    .unwrap_or_else(|e| panic!("start: {e}\n{}", broker.log()));
    let metrics = tracesift::telemetry::install();
    wait_ready(&running).await;
    let before = now_ms();
    let producer: FutureProducer = client(&brokers).create().unwrap();
    let mut ends = BTreeMap::new();
    let stamps = [
        ([0x20; 16], 946_684_800_000i64), // 2000-01-01
        ([0x21; 16], before + YEAR_MS),   // next year
    ];
    for (t, stamp) in &stamps {
        let value = otlp_record(spans_at(t, *stamp));
        send_stamped(
            &producer,
            "otlp_spans",
            &hex::encode(t),
            &value,
            *stamp,
            &mut ends,
        )
        .await;
    }
    wait_committed(
        &brokers,
        "filing",
        "otlp_spans",
        &ends,
        Duration::from_secs(60),
    )
    .await;
    running.stop().await;
    let after = now_ms();

    let replaced = metrics
        .render()
        .lines()
        .find(|l| l.starts_with("tracesift_record_timestamps_replaced_total"))
        .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(replaced >= 2.0, "replaced timestamps counted: {replaced}");
    let arrival_hours = [hour_of(before), hour_of(after)];
    let filed = partitions(&hot);
    assert!(!filed.is_empty(), "nothing in the hot tier");
    for p in &filed {
        assert!(
            arrival_hours.contains(p),
            "filed under {p:?}, not the arrival hour {arrival_hours:?}"
        );
    }

    // A lifecycle pass an hour later with a week's retention keeps every row.
    let compact = dir.path().join("compact.yaml");
    std::fs::write(
        &compact,
        format!(
            "policies: [{{name: all, type: always_sample}}]\narchive:\n  hot: {{url: \"file://{}\"}}\n  retention: 7d\n  compaction: {{min_age: 30m}}\n",
            hot.display()
        ),
    )
    .unwrap();
    let at = chrono::DateTime::from_timestamp_millis(after + 3_600_000)
        .unwrap()
        .to_rfc3339();
    let out = Command::new(env!("CARGO_BIN_EXE_tracesift"))
        .args(["compact", "-c"])
        .arg(&compact)
        .args(["--now", &at])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "compact: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = run_python(&format!(
        "import duckdb\nprint(duckdb.sql(\"SELECT count(DISTINCT (trace_id, span_id)) FROM read_parquet('{}/spans/v2/**/*.parquet', hive_partitioning = true)\").fetchall()[0][0])",
        hot.display()
    ));
    assert_eq!(
        rows.trim(),
        "4",
        "every span survived compaction and retention"
    );
    for p in partitions(&hot) {
        assert!(arrival_hours.contains(&p), "after compaction: {p:?}");
    }
}
