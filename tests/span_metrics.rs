//! RED metrics from every span (issue 28, first part): `tracesift run` on tansu with
//! `telemetry.span_metrics` on, traffic whose per-(service, span name, kind, status, route)
//! counts and durations are known, every trace dropped by the policy: the scraped
//! `traces_span_metrics_calls_total` equal the truth exactly, and the duration histogram puts
//! known durations in their buckets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{status, Span, Status};
use rdkafka::producer::FutureProducer;

use support::outage::{get, metric};
use support::{create_topic, free_port, recent_ns, spread_trace_ids, Broker, Member};

const TRACES: u32 = 300;
const SERVICES: [&str; 3] = ["checkout", "cart", "frontend"];

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn span(id: &[u8; 16], n: u8, name: &str, kind: i32, code: i32, dur_ns: u64) -> Span {
    let start = recent_ns() + u64::from(n) * 1_000_000;
    Span {
        trace_id: id.to_vec(),
        span_id: vec![n; 8],
        parent_span_id: if n == 1 { vec![] } else { vec![1; 8] },
        name: name.into(),
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: start + dur_ns,
        status: Some(Status {
            code,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn record(service: &str, spans: Vec<Span>) -> Vec<u8> {
    support::service_record(service, spans)
}

use tracesift::otlp::{SPAN_KIND_NAMES as KIND, STATUS_CODE_NAMES as STATUS};

/// Label values of a series: service, span name, kind, status, route.
type Key = (String, String, String, String, String);

#[test]
fn every_span_read_is_counted_exactly_by_service_operation_kind_and_status() {
    // The truth: per series, calls and durations.
    let mut want: HashMap<Key, Vec<u64>> = HashMap::new();
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ids = spread_trace_ids(TRACES);
    rt.block_on(async {
        create_topic(&brokers, "otlp_spans", 2).await;
        let p: FutureProducer = support::client(&brokers).create().unwrap();
        let mut ends = BTreeMap::new();
        for (i, id) in ids.iter().enumerate() {
            let service = SERVICES[i % 3];
            let route = format!("/a{}", i % 2);
            let code = if i % 5 == 0 {
                status::StatusCode::Error
            } else {
                status::StatusCode::Ok
            } as i32;
            let mut root = span(id, 1, &format!("GET {route}"), 2, code, 3_000_000);
            root.attributes.push(kv("http.route", &route));
            let child_dur = [1_000_000, 30_000_000, 700_000_000, 3_000_000_000][i % 4];
            let child = span(id, 2, "SELECT", 3, 0, child_dur);
            for (s, r) in [(&root, route.as_str()), (&child, "none")] {
                want.entry((
                    service.to_string(),
                    s.name.clone(),
                    KIND[s.kind as usize].to_string(),
                    STATUS[s.status.as_ref().unwrap().code as usize].to_string(),
                    r.to_string(),
                ))
                .or_default()
                .push(s.end_time_unix_nano - s.start_time_unix_nano);
            }
            if i % 3 == 0 {
                // Split over two records.
                support::send_trace_record(&p, id, &record(service, vec![root]), &mut ends).await;
                support::send_trace_record(&p, id, &record(service, vec![child]), &mut ends).await;
            } else {
                support::send_trace_record(&p, id, &record(service, vec![root, child]), &mut ends)
                    .await;
            }
        }
    });
    let port = free_port();
    let config = format!(
        r#"
kafka:
  brokers: "{brokers}"
  group_id: red
  create_topics: true
  input_topics: [otlp_spans]
  commit_interval: 300ms
store: {{decision_wait: 1s, decision_wait_after_root: 1s, max_trace_age: 1m, tick: 200ms}}
sinks:
  parquet: {{enabled: false}}
telemetry:
  listen: "127.0.0.1:{port}"
  span_metrics:
    enabled: true
    dimensions: [{{name: http.route, default: none}}]
policies: [{{name: none, type: probabilistic, probabilistic: {{sampling_percentage: 0}}}}]
"#
    );
    let dir = tempfile::tempdir().unwrap();
    let member = Member::start(dir.path(), "red", &config, &[]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let body = loop {
        let (_, body) = rt.block_on(get(port, "/metrics"));
        if metric(&body, "tracesift_spans_in_total") >= f64::from(TRACES * 2)
            || Instant::now() > deadline
        {
            break body;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        metric(&body, "tracesift_spans_in_total"),
        f64::from(TRACES * 2),
        "{}",
        member.log()
    );
    let labels = |line: &str| -> (Key, String) {
        let (head, value) = line.rsplit_once(' ').unwrap();
        let inner = head.split_once('{').unwrap().1.trim_end_matches('}');
        let mut m: HashMap<&str, &str> = HashMap::new();
        for pair in inner.split("\",") {
            let (k, v) = pair.split_once("=\"").unwrap();
            m.insert(k, v.trim_end_matches('"'));
        }
        (
            (
                m["service_name"].to_string(),
                m["span_name"].to_string(),
                m["span_kind"].to_string(),
                m["status_code"].to_string(),
                m["http_route"].to_string(),
            ),
            m.get("le")
                .map(|s| s.to_string())
                .unwrap_or(value.to_string()),
        )
    };
    let mut got: HashMap<Key, u64> = HashMap::new();
    for line in body
        .lines()
        .filter(|l| l.starts_with("traces_span_metrics_calls_total{"))
    {
        let (k, _) = labels(line);
        let v: u64 = line.rsplit_once(' ').unwrap().1.parse().unwrap();
        got.insert(k, v);
    }
    let truth: HashMap<Key, u64> = want
        .iter()
        .map(|(k, v)| (k.clone(), v.len() as u64))
        .collect();
    assert_eq!(got, truth, "calls per series\n{body}");
    // Buckets: cumulative counts at each bound equal the truth's.
    let mut checked = 0;
    for (k, durs) in &want {
        for line in body
            .lines()
            .filter(|l| l.starts_with("traces_span_metrics_duration_seconds_bucket{"))
        {
            let (lk, le) = labels(line);
            if lk != *k {
                continue;
            }
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse::<f64>().unwrap()
            };
            let n = durs.iter().filter(|d| **d as f64 / 1e9 <= bound).count() as u64;
            let v: u64 = line.rsplit_once(' ').unwrap().1.parse().unwrap();
            assert_eq!(v, n, "{k:?} le={le}: {line}");
            checked += 1;
        }
    }
    assert_eq!(checked, want.len() * 17, "16 bounds and +Inf per series");
    assert!(body.contains("le=\"0.002\""), "{body}");
    member.stop();
}
