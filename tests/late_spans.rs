//! Late spans through the real broker: spans that arrive after their trace was decided follow
//! that decision (kept → emitted, with the same policy; dropped → dropped), even when they would
//! have changed it (a late error does not resurrect a dropped trace, as in the Collector), and
//! the decision cache counts the hits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use support::*;
use tracesift::config::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_spans_follow_the_earlier_decision() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", 2).await;
    let hot = tempfile::tempdir().unwrap();
    let cfg = Config::parse(&format!(
        r#"
kafka: {{brokers: "{brokers}", create_topics: true, group_id: late, commit_interval: 200ms}}
store: {{decision_wait: 1s, decision_wait_after_root: 1s, tick: 50ms}}
policies:
  - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}
  - {{name: default, type: probabilistic, probabilistic: {{sampling_percentage: 10}}}}
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
    let metrics_addr = running.telemetry_addr.unwrap();
    let producer: FutureProducer = client(&brokers).set("linger.ms", "5").create().unwrap();

    let traces = spread_trace_ids(200);
    let mut ends = BTreeMap::new();
    // Early part: root and one child; every fourth trace has an error in it.
    for (i, t) in traces.iter().enumerate() {
        let v = otlp_record(vec![test_span(t, 1, false), test_span(t, 2, i % 4 == 0)]);
        send_trace_record(&producer, t, &v, &mut ends).await;
    }
    // Wait until every trace is decided (decision_wait 1 s of inactivity) and committed.
    wait_committed(
        &brokers,
        "late",
        "otlp_spans",
        &ends,
        Duration::from_secs(60),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Late part: two more spans; traces i % 4 == 1 carry an error that comes too late.
    for (i, t) in traces.iter().enumerate() {
        let v = otlp_record(vec![test_span(t, 3, i % 4 == 1), test_span(t, 4, false)]);
        send_trace_record(&producer, t, &v, &mut ends).await;
    }
    wait_committed(
        &brokers,
        "late",
        "otlp_spans",
        &ends,
        Duration::from_secs(60),
    )
    .await;
    let (_, metrics) = tracesift::telemetry::server::http_get(metrics_addr, "/metrics")
        .await
        .unwrap();
    running.stop().await;

    let b = brokers.clone();
    let sampled = tokio::task::spawn_blocking(move || sampled_by_trace(&b))
        .await
        .unwrap();
    let got: HashMap<[u8; 16], Vec<(u8, String)>> = sampled
        .into_iter()
        .map(|(t, spans)| {
            let spans = spans
                .into_iter()
                .map(|s| (s.span_id[0], s.policy.expect("kept span without policy")))
                .collect();
            (t, spans)
        })
        .collect();
    let mut kept = 0;
    for (i, t) in traces.iter().enumerate() {
        let r = support::spine::randomness(t);
        // Decided on the early part alone.
        let want = if i % 4 == 0 {
            Some("errors")
        } else if r >= T10 {
            Some("default")
        } else {
            None
        };
        match (want, got.get(t)) {
            (None, None) => {}
            (Some(p), Some(spans)) => {
                kept += 1;
                let mut ids: Vec<u8> = spans.iter().map(|(id, _)| *id).collect();
                ids.sort_unstable();
                assert_eq!(
                    ids,
                    [1, 2, 3, 4],
                    "trace {i}: every span once, late ones too"
                );
                assert!(
                    spans.iter().all(|(_, q)| q == p),
                    "trace {i}: one policy {spans:?}"
                );
            }
            (want, have) => panic!("trace {i}: want {want:?}, sampled {have:?}"),
        }
    }
    assert!(kept >= 50, "errors (50) plus the 10% tier: {kept}");
    let hits: f64 = metrics
        .lines()
        .find(|l| l.starts_with("tracesift_decision_cache_lookups_total{result=\"hit\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no cache hits metric:\n{metrics}"));
    assert_eq!(
        hits as usize, 400,
        "every late span answered from the cache"
    );

    // The latency breakdown has samples for each stage and each sink, as histograms (with
    // buckets Prometheus can aggregate across members, not summaries).
    let count = |series: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{series} ")))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {series}:\n{metrics}"))
    };
    assert_eq!(
        count("tracesift_queue_wait_seconds_count"),
        400.0,
        "one per record"
    );
    assert_eq!(count("tracesift_decode_seconds_count"), 400.0);
    assert!(
        count("tracesift_decision_delay_seconds_count") >= 200.0,
        "one per decided trace"
    );
    for sink in ["kafka", "parquet"] {
        assert!(
            count(&format!(
                "tracesift_sink_write_seconds_count{{sink=\"{sink}\"}}"
            )) > 0.0
        );
        assert!(
            count(&format!(
                "tracesift_sink_batch_spans_count{{sink=\"{sink}\"}}"
            )) > 0.0
        );
        let e2e = count(&format!(
            "tracesift_end_to_end_seconds_count{{sink=\"{sink}\"}}"
        ));
        assert!(
            e2e >= kept as f64,
            "{sink}: one per kept trace at least ({e2e} < {kept})"
        );
    }
    assert!(
        metrics.contains("tracesift_end_to_end_seconds_bucket{sink=\"kafka\",le=\"0.5\"}"),
        "histogram buckets:\n{metrics}"
    );
}
