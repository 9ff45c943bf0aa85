//! OTLP backends that answer badly cannot lose kept traces or take the member's memory. One
//! `tracesift run` (the release binary, as a user runs it) exports every kept trace to eight
//! backends at once (`tests/support/backend.rs`, built on hyper, h2 and the official OTLP proto
//! types): four that redirect (301, 302, 307, 308) to a witness on another port, one that
//! streams an endless 200 body, one that answers 200 with an HTML page, one gRPC server whose
//! answer is a gzip bomb (1 MiB inflating to 1 GiB), and one that reports partial success.
//! Each ends as the README's sink-error table says, and the sampled topic and the commits are
//! unaffected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use support::backend::{Answer, Backend};
use support::outage::{get, metric};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_streams_bombs_html_and_partial_success_end_as_documented() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", 2).await;
    let witness = Backend::http(Answer::Accept).await;
    let to_witness = format!("http://127.0.0.1:{}/v1/traces", witness.port);
    let mut redirects = Vec::new();
    for status in [301u16, 302, 307, 308] {
        redirects.push((
            status,
            Backend::http(Answer::Redirect(status, to_witness.clone())).await,
        ));
    }
    let endless = Backend::http(Answer::Endless).await;
    let html = Backend::http(Answer::Html).await;
    let partial = Backend::http(Answer::Partial(1, "span too old for this tenant".into())).await;
    let bomb = Backend::grpc_gzip_bomb(1 << 30).await;
    let mut http_sinks = String::new();
    for (status, b) in &redirects {
        http_sinks.push_str(&format!(
            "    - {{name: redirect{status}, endpoint: \"http://127.0.0.1:{}\", headers: {{x-honeycomb-team: HDR-SECRET}}, batch: {{linger: 100ms}}}}\n",
            b.port
        ));
    }
    for (name, b) in [
        ("endless", &endless),
        ("html", &html),
        ("partial", &partial),
    ] {
        http_sinks.push_str(&format!(
            "    - {{name: {name}, endpoint: \"http://127.0.0.1:{}\", batch: {{linger: 100ms}}}}\n",
            b.port
        ));
    }
    let telemetry = free_port();
    let dir = tempfile::tempdir().unwrap();
    let member = Member::start(
        dir.path(),
        "member",
        &format!(
            r#"
kafka: {{brokers: "{brokers}", create_topics: true, group_id: otlp-hostile, commit_interval: 200ms}}
store: {{decision_wait: 1s, decision_wait_after_root: 1s, tick: 50ms}}
policies: [{{name: all, type: always_sample}}]
sinks:
  parquet: {{enabled: false}}
  otlp_http:
{http_sinks}  otlp_grpc:
    - {{name: bomb, endpoint: "127.0.0.1:{}", tls: {{insecure: true}}, batch: {{linger: 100ms}}}}
telemetry: {{listen: "127.0.0.1:{telemetry}"}}
"#,
            bomb.port
        ),
        &[],
    );
    // 60 traces of 3 spans.
    let ids = spread_trace_ids(60);
    let producer: FutureProducer = client(&brokers).set("linger.ms", "5").create().unwrap();
    let mut ends = BTreeMap::new();
    for t in &ids {
        let spans = (1..=3).map(|n| test_span(t, n, false)).collect();
        send_trace_record(&producer, t, &otlp_record(spans), &mut ends).await;
    }
    wait_committed(
        &brokers,
        "otlp-hostile",
        "otlp_spans",
        &ends,
        Duration::from_secs(120),
    )
    .await;
    let (_, m) = get(telemetry, "/metrics").await;
    let rss = metric(&m, "tracesift_process_resident_memory_bytes");
    let bound = metric(&m, "tracesift_memory_bound_bytes");
    member.stop();

    let hex: HashSet<String> = ids.iter().map(hex::encode).collect();
    let dlq = read_all(&brokers, "otlp_spans_dlq");
    let dead = |sink: &str| -> Vec<&Read> {
        dlq.iter()
            .filter(|r| r.headers.get("tracesift.sink").map(String::as_str) == Some(sink))
            .collect()
    };
    let mut expect: Vec<(String, String)> = redirects
        .iter()
        .map(|(status, _)| {
            (
                format!("otlp_http/redirect{status}"),
                format!("HTTP {status}: the endpoint redirects to {to_witness}"),
            )
        })
        .collect();
    expect.push((
        "otlp_http/endless".into(),
        "HTTP 200 with an answer longer than 64 KiB".into(),
    ));
    expect.push((
        "otlp_http/html".into(),
        "a 2xx whose body (text/html, 82 bytes) is not an ExportTraceServiceResponse".into(),
    ));
    expect.push((
        "otlp_grpc/bomb".into(),
        "HTTP 200 with an answer longer than 64 KiB".into(),
    ));
    for (sink, reason) in &expect {
        let mine = dead(sink);
        let keys: HashSet<String> = mine
            .iter()
            .map(|r| String::from_utf8(r.key.clone().unwrap()).unwrap())
            .collect();
        assert_eq!(
            keys, hex,
            "{sink}: every trace is a dead letter, nothing lost"
        );
        for r in &mine {
            assert!(
                r.headers["tracesift.error"].starts_with(reason.as_str()),
                "{sink}: {:?}",
                r.headers
            );
        }
        assert_eq!(
            metric(&m, &format!("tracesift_spans_out_total{{sink=\"{sink}\"}}")),
            0.0,
            "{sink}: nothing counted delivered"
        );
    }
    // A redirect is not followed: the other host sees nothing, credentials never travel.
    assert_eq!(witness.requests(), 0, "a redirect was followed");
    for (status, b) in &redirects {
        assert!(b.requests() > 0, "{status}: the backend was asked");
    }
    // Partial success: delivered, the rejected spans counted with the backend's reason.
    assert!(dead("otlp_http/partial").is_empty());
    let requests = partial.requests() as f64;
    assert!(requests > 0.0);
    assert_eq!(
        metric(
            &m,
            "tracesift_sink_rejected_spans_total{sink=\"otlp_http/partial\"}"
        ),
        requests,
        "one rejected span per request"
    );
    assert_eq!(
        metric(&m, "tracesift_spans_out_total{sink=\"otlp_http/partial\"}"),
        (3 * ids.len()) as f64 - requests
    );
    assert!(member_log(&dir).contains("span too old for this tenant"));
    // The endless answer and the bomb were not read into memory.
    eprintln!(
        "member RSS {:.0} MiB, memory bound {:.0} MiB",
        rss / 1048576.0,
        bound / 1048576.0
    );
    assert!(
        rss > 0.0 && bound > 0.0 && rss < bound,
        "RSS {rss} over the bound {bound}"
    );
    // The sampled topic, a healthy sink in the same run, has every trace whole.
    let sampled = sampled_by_trace(&brokers);
    assert_eq!(sampled.len(), ids.len());
    assert!(sampled.values().all(|s| s.len() == 3));
    // No secret in the log.
    assert!(!member_log(&dir).contains("HDR-SECRET"));
}

fn member_log(dir: &tempfile::TempDir) -> String {
    std::fs::read_to_string(dir.path().join("member.log")).unwrap_or_default()
}
