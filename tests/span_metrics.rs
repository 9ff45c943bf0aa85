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
use support::{
    create_topic, free_port, recent_ns, spread_trace_ids, tool_on_path, urlencode, Broker, Member,
    Proc,
};

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

// ---------------------------------------------------------------------------------------------
// Exemplars, sampled estimates, the service graph and the cardinality limit, scraped by a
// real Prometheus with exemplar storage
// ---------------------------------------------------------------------------------------------

const SHOP_TRACES: u32 = 1_000;
const NOISY_SPANS: u32 = 10_000;
const LIMIT: u32 = 1_000;

/// Trace ids of exemplars Prometheus stored for `query` since `start` (Unix s).
fn exemplar_traces(
    rt: &tokio::runtime::Runtime,
    base: &str,
    query: &str,
    start: u64,
) -> Vec<String> {
    let url = format!(
        "{base}/api/v1/query_exemplars?query={}&start={start}&end={}",
        urlencode(query),
        start + 3_600
    );
    let body = rt.block_on(async { reqwest::get(&url).await.unwrap().text().await.unwrap() });
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success", "{body}");
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["exemplars"].as_array().unwrap().iter())
        .map(|e| e["labels"]["trace_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn exemplars_lead_to_kept_traces_estimates_hold_and_the_graph_and_limit_are_exact() {
    let prometheus = tool_on_path("prometheus");
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ids = spread_trace_ids(SHOP_TRACES + NOISY_SPANS);
    let errors = (0..SHOP_TRACES).filter(|i| i % 10 == 0).count() as f64;
    let orphans = (0..SHOP_TRACES).filter(|i| i % 50 == 0).count() as f64;
    rt.block_on(async {
        // One partition: the shop's series are made before the noisy ones come.
        create_topic(&brokers, "otlp_spans", 1).await;
        let p: FutureProducer = support::client(&brokers).create().unwrap();
        let mut ends = BTreeMap::new();
        for (i, id) in ids[..SHOP_TRACES as usize].iter().enumerate() {
            let mut root = span(id, 1, "GET /", 2, 0, 50_000_000);
            root.parent_span_id.clear();
            let mut call = span(id, 2, "POST /checkout", 3, 0, 40_000_000);
            call.parent_span_id = vec![1; 8];
            let code = if i % 10 == 0 { 2 } else { 0 };
            let mut server = span(id, 3, "checkout", 2, code, 30_000_000);
            server.parent_span_id = vec![2; 8];
            let mut db = span(id, 4, "SELECT", 3, 0, 7_000_000);
            db.parent_span_id = vec![3; 8];
            db.attributes.push(kv("db.name", "orders"));
            let mut checkout = vec![server, db];
            if i % 50 == 0 {
                // A server span whose caller's span never arrives.
                let mut orphan = span(id, 6, "orphan", 2, 0, 1_000_000);
                orphan.parent_span_id = vec![9; 8];
                checkout.push(orphan);
            }
            support::send_trace_record(&p, id, &record("frontend", vec![root, call]), &mut ends)
                .await;
            support::send_trace_record(&p, id, &record("checkout", checkout), &mut ends).await;
        }
        for (i, id) in ids[SHOP_TRACES as usize..].iter().enumerate() {
            let s = span(id, 1, &format!("job {i}"), 1, 0, 1_000_000);
            support::send_trace_record(&p, id, &record("noisy", vec![s]), &mut ends).await;
        }
    });
    let spans = f64::from(SHOP_TRACES * 4 + NOISY_SPANS) + orphans;
    let traces = f64::from(SHOP_TRACES + NOISY_SPANS);

    let dir = tempfile::tempdir().unwrap();
    let hot = dir.path().join("hot");
    std::fs::create_dir_all(&hot).unwrap();
    let port = free_port();
    let config = format!(
        r#"
kafka:
  brokers: "{brokers}"
  group_id: red-exemplars
  create_topics: true
  input_topics: [otlp_spans]
  commit_interval: 300ms
store: {{decision_wait: 2s, decision_wait_after_root: 1s, max_trace_age: 1m, tick: 200ms}}
archive:
  hot: {{url: "file://{}", flush_interval: 1s}}
telemetry:
  listen: "127.0.0.1:{port}"
  span_metrics:
    enabled: true
    aggregation_cardinality_limit: {LIMIT}
  service_graph:
    enabled: true
policies:
  - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}
  - {{name: half, type: probabilistic, probabilistic: {{sampling_percentage: 50}}}}
"#,
        hot.display()
    );
    let member = Member::start(dir.path(), "red", &config, &[]);
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    std::fs::write(
        prom_dir.join("prometheus.yml"),
        format!("global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: tracesift\n    static_configs:\n      - targets: [\"127.0.0.1:{port}\"]\n"),
    )
    .unwrap();
    let prom_port = free_port();
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60;
    let mut prom = Proc(
        std::process::Command::new(&prometheus)
            .arg(format!(
                "--config.file={}",
                prom_dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .arg("--enable-feature=exemplar-storage")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(prom_dir.join("prometheus.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{prom_port}");

    // Every span read and every trace decided.
    let deadline = Instant::now() + Duration::from_secs(240);
    let body = loop {
        let (_, body) = rt.block_on(get(port, "/metrics"));
        let done = metric(&body, "tracesift_spans_in_total") >= spans
            && metric(&body, "tracesift_traces_decided_total") >= traces;
        if done || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let log = || {
        format!(
            "member log:\n{}\nprometheus log:\n{}",
            member.log(),
            std::fs::read_to_string(prom_dir.join("prometheus.log")).unwrap_or_default()
        )
    };
    assert_eq!(
        metric(&body, "tracesift_spans_in_total"),
        spans,
        "{}",
        log()
    );
    assert_eq!(
        metric(&body, "tracesift_traces_decided_total"),
        traces,
        "{}",
        log()
    );

    // The cardinality limit: exactly LIMIT series and the overflow series.
    let calls: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("traces_span_metrics_calls_total{"))
        .collect();
    assert_eq!(calls.len() as u32, LIMIT + 1, "{body}");
    let shop_series = 6;
    assert_eq!(
        metric(
            &body,
            "traces_span_metrics_calls_total{otel_metric_overflow=\"true\"}"
        ),
        f64::from(NOISY_SPANS - (LIMIT - shop_series)),
    );
    assert_eq!(
        metric(&body, "tracesift_span_metrics_series "),
        f64::from(LIMIT)
    );

    // The sampled estimate: the errors (kept always, adjusted count 1) exactly; the rest
    // (kept at 50%, adjusted count 2) within 4 standard deviations.
    let series = |service: &str, name: &str, kind: &str, status: &str| {
        format!("{{service_name=\"{service}\",span_name=\"{name}\",span_kind=\"{kind}\",status_code=\"{status}\"}}")
    };
    let estimated = |labels: &str| {
        metric(
            &body,
            &format!("tracesift_sampled_span_calls_estimated_total{labels}"),
        )
    };
    let truth = |labels: &str| metric(&body, &format!("traces_span_metrics_calls_total{labels}"));
    let err = series(
        "checkout",
        "checkout",
        "SPAN_KIND_SERVER",
        "STATUS_CODE_ERROR",
    );
    assert_eq!(truth(&err), errors);
    assert_eq!(
        estimated(&err),
        errors,
        "errors are kept with adjusted count 1"
    );
    let ok = series(
        "checkout",
        "checkout",
        "SPAN_KIND_SERVER",
        "STATUS_CODE_UNSET",
    );
    let root = series("frontend", "GET /", "SPAN_KIND_SERVER", "STATUS_CODE_UNSET");
    for labels in [&ok, &root] {
        let n = f64::from(SHOP_TRACES) - errors;
        let sigma = (n * 4.0 * 0.25).sqrt();
        let (t, e) = (truth(labels), estimated(labels));
        assert_eq!(
            t,
            if labels == &root {
                f64::from(SHOP_TRACES)
            } else {
                n
            }
        );
        let e_non_error = if labels == &root { e - errors } else { e };
        assert!(
            (e_non_error - n).abs() <= 4.0 * sigma,
            "{labels}: estimated {e} for {t} (σ {sigma:.1})"
        );
    }

    // The service graph, exact.
    let edge = |client: &str, server: &str, ct: &str| {
        format!("{{client=\"{client}\",server=\"{server}\",connection_type=\"{ct}\"}}")
    };
    let requests = |labels: &str| {
        metric(
            &body,
            &format!("traces_service_graph_request_total{labels}"),
        )
    };
    let failed = |labels: &str| {
        metric(
            &body,
            &format!("traces_service_graph_request_failed_total{labels}"),
        )
    };
    let shop = f64::from(SHOP_TRACES);
    assert_eq!(
        requests(&edge("user", "frontend", "virtual_node")),
        shop,
        "{body}"
    );
    assert_eq!(requests(&edge("frontend", "checkout", "")), shop, "{body}");
    assert_eq!(failed(&edge("frontend", "checkout", "")), errors, "{body}");
    assert_eq!(
        requests(&edge("checkout", "orders", "database")),
        shop,
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            "traces_service_graph_unpaired_spans_total{server=\"checkout\"}"
        ),
        orphans
    );
    assert_eq!(
        metric(
            &body,
            "traces_service_graph_request_server_seconds_bucket{client=\"frontend\",server=\"checkout\",connection_type=\"\",le=\"0.05\"}"
        ),
        shop,
        "30 ms server spans in the 50 ms bucket"
    );

    // Exemplars, as Prometheus stored them from the OpenMetrics scrape: every one a kept trace.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (spans_ex, graph_ex) = loop {
        let a = exemplar_traces(
            &rt,
            &base,
            "traces_span_metrics_duration_seconds_bucket",
            start,
        );
        let b = exemplar_traces(
            &rt,
            &base,
            "traces_service_graph_request_server_seconds_bucket",
            start,
        );
        if (!a.is_empty() && !b.is_empty()) || Instant::now() > deadline {
            break (a, b);
        }
        if let Some(status) = prom.0.try_wait().unwrap() {
            panic!("prometheus exited ({status}): {}", log());
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(
        !spans_ex.is_empty(),
        "no span-metrics exemplar stored; {}",
        log()
    );
    assert!(
        !graph_ex.is_empty(),
        "no service-graph exemplar stored; {}",
        log()
    );
    let sampled = support::sampled_by_trace(&brokers);
    for t in spans_ex.iter().chain(&graph_ex) {
        let id: [u8; 16] = hex::decode(t).unwrap().try_into().unwrap();
        assert!(sampled.contains_key(&id), "exemplar trace {t} was not kept");
    }
    // And `tracesift trace` opens them from the hot Parquet.
    let cfg = dir.path().join("lookup.yaml");
    std::fs::write(
        &cfg,
        format!(
            "archive: {{hot: {{url: \"file://{}\"}}}}\npolicies: [{{name: all, type: always_sample}}]\n",
            hot.display()
        ),
    )
    .unwrap();
    let mut picked: Vec<&String> = spans_ex.iter().chain(&graph_ex).collect();
    picked.sort();
    picked.dedup();
    for t in picked.into_iter().take(3) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_tracesift"))
                .args(["trace", t, "-c"])
                .arg(&cfg)
                .output()
                .unwrap();
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "`tracesift trace {t}`: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    member.stop();
}

/// Calls per series line (`labels → value`) of a scrape.
fn calls_by_series(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|l| l.starts_with("traces_span_metrics_calls_total{"))
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn a_rebalance_counts_every_span_once_across_the_members() {
    const HALF: u32 = 300;
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ids = spread_trace_ids(2 * HALF);
    let send = |ids: &[[u8; 16]]| {
        rt.block_on(async {
            let p: FutureProducer = support::client(&brokers).create().unwrap();
            let mut ends = BTreeMap::new();
            for (i, id) in ids.iter().enumerate() {
                let service = SERVICES[i % 3];
                let root = span(id, 1, "GET /", 2, (i % 4 == 0) as i32 * 2, 3_000_000);
                let child = span(id, 2, "SELECT", 3, 0, 1_000_000);
                support::send_trace_record(&p, id, &record(service, vec![root, child]), &mut ends)
                    .await;
            }
        })
    };
    rt.block_on(create_topic(&brokers, "otlp_spans", 2));
    send(&ids[..HALF as usize]);
    let config = |port: u16| {
        format!(
            r#"
kafka:
  brokers: "{brokers}"
  group_id: red-rebalance
  create_topics: true
  input_topics: [otlp_spans]
  commit_interval: 300ms
store: {{decision_wait: 8s, decision_wait_after_root: 8s, max_trace_age: 1m, tick: 200ms}}
sinks:
  parquet: {{enabled: false}}
telemetry:
  listen: "127.0.0.1:{port}"
  span_metrics: {{enabled: true}}
  service_graph: {{enabled: true}}
policies: [{{name: none, type: probabilistic, probabilistic: {{sampling_percentage: 0}}}}]
"#
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let a = Member::start(dir.path(), "a", &config(pa), &[]);
    let wait_for = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !ok() {
            assert!(Instant::now() < deadline, "{what}\na:\n{}", a.log());
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let scrape = |port| rt.block_on(get(port, "/metrics")).1;
    wait_for("a reads the first half", &|| {
        metric(&scrape(pa), "tracesift_spans_in_total") >= f64::from(HALF * 2)
    });
    // B joins while A's traces are still undecided: the partition it takes over is read again
    // from its committed offset, behind what A counted.
    let b = Member::start(dir.path(), "b", &config(pb), &[]);
    wait_for("b is given a partition", &|| {
        metric(&scrape(pb), "tracesift_partitions_assigned") >= 1.0
    });
    send(&ids[HALF as usize..]);
    let decided = || {
        metric(&scrape(pa), "tracesift_traces_decided_total")
            + metric(&scrape(pb), "tracesift_traces_decided_total")
    };
    wait_for("every trace decided", &|| decided() >= f64::from(2 * HALF));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(decided(), f64::from(2 * HALF), "each trace decided once");
    let (body_a, body_b) = (scrape(pa), scrape(pb));
    assert!(
        metric(&body_b, "tracesift_spans_in_total") > 0.0,
        "b read its partition\n{}",
        b.log()
    );
    let mut sum = calls_by_series(&body_a);
    for (k, v) in calls_by_series(&body_b) {
        *sum.entry(k).or_default() += v;
    }
    let mut truth: HashMap<String, f64> = HashMap::new();
    for i in 0..(2 * HALF) as usize {
        let service = SERVICES[i % 3];
        let status = if i % 4 == 0 { "ERROR" } else { "UNSET" };
        for (name, kind, status) in [("GET /", "SERVER", status), ("SELECT", "CLIENT", "UNSET")] {
            *truth
                .entry(format!("traces_span_metrics_calls_total{{service_name=\"{service}\",span_name=\"{name}\",span_kind=\"SPAN_KIND_{kind}\",status_code=\"STATUS_CODE_{status}\"}}"))
                .or_default() += 1.0;
        }
    }
    assert_eq!(sum, truth, "a:\n{}\nb:\n{}", a.log(), b.log());
    let users = metric(
        &body_a,
        "traces_service_graph_request_total{client=\"user\"",
    ) + metric(
        &body_b,
        "traces_service_graph_request_total{client=\"user\"",
    );
    assert_eq!(users, f64::from(2 * HALF), "every trace's root edge once");
    b.stop();
    a.stop();
}
