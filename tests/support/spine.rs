//! The spine scenario: generated traffic through a real broker, checked end to end.
//!
//! Guarantees asserted: every trace with an error span or a trace slower than 500 ms is in the
//! sampled topic and in the Parquet with all its spans; the set of kept traces is exactly the one
//! the policies define (probabilities recomputed here from the trace ids, independently of the
//! sampler), and the probabilistic tiers' kept fractions lie within statistical bounds; no kept
//! trace is partial; no span appears twice; malformed records land in the dead-letter topic with
//! their reason and valid traffic is unaffected; committed offsets reach the end of the topic.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tracesift::config::Config;
use tracesift::gen::{self, GenOptions, TraceFacts};

use super::*;

pub const T50: u64 = 1 << 55;

/// The 1% threshold.
pub fn t1() -> u64 {
    ((1.0 - 0.01) * (1u64 << 56) as f64).round() as u64
}

/// OTEP 235 randomness of a trace id, written out independently of the library.
pub fn randomness(id: &[u8; 16]) -> u64 {
    id[9..16]
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

/// The seed's important routes.
pub fn important(route: &str) -> bool {
    route == "/api/payment" || route == "/api/checkout"
}

/// Whether the seed policies keep a trace, recomputed from its facts and id.
pub fn expected_keep(f: &TraceFacts) -> bool {
    let r = randomness(&f.trace_id.0);
    f.has_error || f.duration_ms > 500.0 || (important(f.route) && r >= T50) || r >= t1()
}

/// The seed's tiers in Collector syntax (a whole `policies:` block).
pub const POLICIES: &str = tracesift::sample::SEED_POLICIES;

/// The same tiers as first-match tiers: they keep exactly the same traces (errors and slow
/// first; important routes at 50%; the rest at 1%, which by consistent nesting is what the OR
/// of the policies keeps too), under the same names.
pub const TIERS: &str = r#"
tiers:
  - {name: errors, when: {type: status_code, status_code: {status_codes: [ERROR]}}, sample_percentage: 100}
  - {name: slow, when: {type: latency, latency: {threshold_ms: 500}}, sample_percentage: 100}
  - name: important
    when: {type: string_attribute, string_attribute: {key: http.route, values: [/api/payment, /api/checkout]}}
    sample_percentage: 50
  - {name: default, sample_percentage: 1}
"#;

/// A test configuration: short waits, hot Parquet in `hot`; the seed's tiers as Collector
/// policies, or as first-match `tiers`.
pub fn config(brokers: &str, group: &str, hot: &std::path::Path, tiers: bool) -> Config {
    let block = if tiers {
        TIERS.to_string()
    } else {
        POLICIES.to_string()
    };
    let yaml = format!(
        r#"
kafka:
  brokers: "{brokers}"
  create_topics: true
  group_id: {group}
  input_topics: [otlp_spans]
  commit_interval: 300ms
store:
  decision_wait: 3s
  decision_wait_after_root: 3s
  max_trace_age: 1m
  tick: 50ms
{block}
archive:
  hot: {{url: "file://{}", flush_interval: 1s}}
telemetry:
  listen: "127.0.0.1:0"
shutdown_timeout: 30s
"#,
        hot.display()
    );
    Config::parse(&yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn malformed() -> Vec<(String, Vec<u8>, Option<&'static str>)> {
    let bad_id = opentelemetry_proto::tonic::trace::v1::Span {
        trace_id: vec![7; 5],
        span_id: vec![1; 8],
        ..Default::default()
    };
    let req = ExportTraceServiceRequest {
        resource_spans: vec![opentelemetry_proto::tonic::trace::v1::ResourceSpans {
            scope_spans: vec![opentelemetry_proto::tonic::trace::v1::ScopeSpans {
                spans: vec![bad_id],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    vec![
        ("bad-0".into(), b"\xff\xff\xff\xff garbage".to_vec(), None),
        ("bad-1".into(), vec![0x0a, 0x80, 0x01, 0x01], None),
        ("bad-2".into(), req.encode_to_vec(), None),
        (
            "bad-3".into(),
            b"{\"resourceSpans\": [ {".to_vec(),
            Some("application/json"),
        ),
        ("bad-4".into(), b"\x0a\x05\x12\x03\x0a\x01".to_vec(), None),
    ]
}

async fn send(
    p: &FutureProducer,
    key: &str,
    value: &[u8],
    content_type: Option<&str>,
    ends: &mut BTreeMap<i32, i64>,
) {
    let mut rec = FutureRecord::to("otlp_spans").key(key).payload(value);
    if let Some(ct) = content_type {
        rec = rec.headers(OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some(ct),
        }));
    }
    let d = p
        .send(rec, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    note(ends, d.partition, d.offset + 1);
}

fn note(ends: &mut BTreeMap<i32, i64>, p: i32, end: i64) {
    let e = ends.entry(p).or_insert(0);
    *e = (*e).max(end);
}

/// Runs the scenario in one producer style (the split style with the policies as tiers).
pub async fn scenario(split: bool) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRACESIFT_LOG")
                .unwrap_or_else(|_| "warn,librdkafka=error".into()),
        )
        .with_test_writer()
        .try_init();
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", 3).await;
    let hot = tempfile::tempdir().unwrap();
    let group = format!("spine-{}", if split { "split" } else { "keyed" });
    let cfg = config(&brokers, &group, hot.path(), split);

    let running = tracesift::pipeline::start(
        cfg,
        Arc::new(tracesift::clock::tokio_clock::TokioClock::new()),
    )
    .await
    .unwrap_or_else(|e| panic!("pipeline start: {e}\nbroker log:\n{}", broker.log()));
    let metrics_addr = running.telemetry_addr.unwrap();

    let opts = GenOptions {
        traces: 3000,
        seed: if split { 11 } else { 7 },
        split,
        late_fraction: 0.1,
        late_delay: Duration::from_millis(1500),
        start_ns: super::recent_ns(),
        ..Default::default()
    };
    let (records, manifest) = gen::plan_records(&opts);
    let producer: FutureProducer = client(&brokers).set("linger.ms", "5").create().unwrap();
    // Keyed style: the first 100 records go as OTLP/JSON with a content-type header.
    let json_records = if split { 0 } else { 100 };
    let mut ends = BTreeMap::new();
    for r in &records[..json_records] {
        let req = ExportTraceServiceRequest::decode(r.value.as_slice()).unwrap();
        send(
            &producer,
            &r.key,
            &serde_json::to_vec(&req).unwrap(),
            Some("application/json"),
            &mut ends,
        )
        .await;
    }
    // The malformed records go in while valid traffic flows, from a second task, so they sit
    // between valid records of the same partitions without delaying any trace's spans.
    let bad = malformed();
    let bad_task = {
        let producer = producer.clone();
        let bad = bad.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut ends = BTreeMap::new();
            for (k, v, ct) in &bad {
                send(&producer, k, v, *ct, &mut ends).await;
            }
            ends
        })
    };
    let produced = gen::produce(&producer, "otlp_spans", &records[json_records..], None)
        .await
        .unwrap();
    produced
        .ends
        .iter()
        .for_each(|(p, e)| note(&mut ends, *p, *e));
    for (p, e) in bad_task.await.unwrap() {
        note(&mut ends, p, e);
    }
    assert_eq!(
        ends.values().sum::<i64>() as usize,
        records.len() + bad.len()
    );

    wait_committed(
        &brokers,
        &group,
        "otlp_spans",
        &ends,
        Duration::from_secs(60),
    )
    .await;
    let (_, metrics) = tracesift::telemetry::server::http_get(metrics_addr, "/metrics")
        .await
        .unwrap();
    let stats = running.stop().await;

    // Committed offsets stay at the end after a graceful stop.
    let b = brokers.clone();
    let parts: Vec<i32> = ends.keys().copied().collect();
    let comm = tokio::task::spawn_blocking(move || committed(&b, &group, "otlp_spans", &parts))
        .await
        .unwrap();
    for (p, e) in &ends {
        assert_eq!(
            comm.get(p),
            Some(e),
            "partition {p} committed {comm:?} vs end {ends:?}"
        );
    }

    let total_spans: usize = manifest.traces.iter().map(|t| t.spans).sum();
    let read = stats.records.load(std::sync::atomic::Ordering::Relaxed) as usize;
    assert_eq!(read, records.len() + bad.len(), "records read");
    assert_eq!(
        stats.spans.load(std::sync::atomic::Ordering::Relaxed) as usize,
        total_spans
    );
    let spans_metric: f64 = metrics
        .lines()
        .find(|l| l.starts_with("tracesift_spans_in_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no spans metric in:\n{metrics}"));
    assert_eq!(spans_metric as usize, total_spans);

    // --- sampled topic ---
    let b = brokers.clone();
    let sampled = tokio::task::spawn_blocking(move || read_all(&b, "otlp_spans_sampled"))
        .await
        .unwrap();
    let mut seen: HashSet<([u8; 16], [u8; 8])> = HashSet::new();
    let mut per_trace: HashMap<[u8; 16], usize> = HashMap::new();
    let mut partition_of: HashMap<[u8; 16], i32> = HashMap::new();
    // Per trace, its span ids and non-null parent ids (hex), as the archive must show them.
    let mut tree_of: HashMap<[u8; 16], (Vec<String>, Vec<String>)> = HashMap::new();
    for r in &sampled {
        let req = ExportTraceServiceRequest::decode(r.value.as_slice()).unwrap();
        // Batched records (the default): a record of one trace is keyed by its id, a batch has
        // no key, and every span of a trace is on one partition.
        let traces: HashSet<&[u8]> = req
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .map(|s| s.trace_id.as_slice())
            .collect();
        match traces.iter().next() {
            Some(one) if traces.len() == 1 => assert_eq!(
                r.key.as_deref(),
                Some(hex::encode(one).as_bytes()),
                "a record of one trace is keyed by it"
            ),
            _ => assert_eq!(r.key, None, "a batch of traces has no key"),
        }
        for rs in &req.resource_spans {
            assert!(rs.resource.is_some(), "resource kept");
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    let t: [u8; 16] = s.trace_id.as_slice().try_into().unwrap();
                    assert_eq!(
                        *partition_of.entry(t).or_insert(r.partition),
                        r.partition,
                        "trace {} on one partition",
                        hex::encode(t)
                    );
                    assert!(
                        seen.insert((t, s.span_id.as_slice().try_into().unwrap())),
                        "span twice in sampled topic"
                    );
                    *per_trace.entry(t).or_default() += 1;
                    let tree = tree_of.entry(t).or_default();
                    tree.0.push(hex::encode(&s.span_id));
                    if s.parent_span_id.len() == 8 && s.parent_span_id != [0; 8] {
                        tree.1.push(hex::encode(&s.parent_span_id));
                    }
                    // OTEP 235 on kept spans: th in tracestate, policy and adjusted count.
                    let attr = |k: &str| {
                        s.attributes
                            .iter()
                            .find(|kv| kv.key == k)
                            .and_then(|kv| kv.value.clone())
                            .and_then(|v| v.value)
                    };
                    let th = s
                        .trace_state
                        .split(',')
                        .find_map(|m| m.trim().strip_prefix("ot=th:"))
                        .unwrap_or_else(|| panic!("no ot=th in {:?}", s.trace_state));
                    let count = match attr("sampling.adjusted_count") {
                        Some(any_value::Value::DoubleValue(c)) => c,
                        other => panic!("adjusted count {other:?}"),
                    };
                    let policy = match attr("tailsampling.policy") {
                        Some(any_value::Value::StringValue(p)) => p,
                        other => panic!("policy {other:?}"),
                    };
                    let (want_th, want_count) = match policy.as_str() {
                        "errors" | "slow" => ("0", 1.0),
                        "important" => ("8", 2.0),
                        "default" => ("fd70a3d70a3d7", 100.0),
                        p => panic!("unexpected policy {p}"),
                    };
                    assert_eq!(th.split(';').next(), Some(want_th), "{policy}");
                    assert!((count - want_count).abs() < 1e-6, "{policy}: {count}");
                }
            }
        }
    }
    let expected: HashSet<[u8; 16]> = manifest
        .traces
        .iter()
        .filter(|f| expected_keep(f))
        .map(|f| f.trace_id.0)
        .collect();
    let kept: HashSet<[u8; 16]> = per_trace.keys().copied().collect();
    let facts: HashMap<[u8; 16], &TraceFacts> =
        manifest.traces.iter().map(|f| (f.trace_id.0, f)).collect();
    let missing: Vec<&TraceFacts> = expected.difference(&kept).map(|t| facts[t]).collect();
    let extra: Vec<&TraceFacts> = kept.difference(&expected).map(|t| facts[t]).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "kept set differs from the policies: {} missing {missing:?}, {} extra {extra:?}",
        missing.len(),
        extra.len()
    );
    for (t, n) in &per_trace {
        assert_eq!(
            *n,
            facts[t].spans,
            "trace {} partial in sampled topic",
            hex::encode(t)
        );
    }
    let must: Vec<&TraceFacts> = manifest
        .traces
        .iter()
        .filter(|f| f.has_error || f.duration_ms > 500.0)
        .collect();
    assert!(
        must.len() > 100,
        "the load has errors and slow traces ({})",
        must.len()
    );
    // Statistical bounds on the probabilistic tiers (5 standard deviations).
    let rule = |f: &&TraceFacts| !(f.has_error || f.duration_ms > 500.0);
    for (name, set, p) in [
        (
            "important",
            manifest
                .traces
                .iter()
                .filter(rule)
                .filter(|f| important(f.route))
                .collect::<Vec<_>>(),
            0.5,
        ),
        (
            "default",
            manifest
                .traces
                .iter()
                .filter(rule)
                .filter(|f| !important(f.route))
                .collect::<Vec<_>>(),
            0.01,
        ),
    ] {
        let n = set.len() as f64;
        let k = set.iter().filter(|f| kept.contains(&f.trace_id.0)).count() as f64;
        let sd = (n * p * (1.0 - p)).sqrt();
        assert!(
            (k - n * p).abs() <= 5.0 * sd + 1.0,
            "{name}: kept {k} of {n}, expected ~{}",
            n * p
        );
    }

    // --- dead-letter topic ---
    let b = brokers.clone();
    let dlq = tokio::task::spawn_blocking(move || read_all(&b, "otlp_spans_dlq"))
        .await
        .unwrap();
    assert_eq!(
        dlq.len(),
        bad.len(),
        "every malformed record is in the dead-letter topic once"
    );
    for d in &dlq {
        let key = String::from_utf8(d.key.clone().unwrap()).unwrap();
        let original = bad.iter().find(|b| b.0 == key).expect("known bad record");
        assert_eq!(d.value, original.1, "original bytes kept");
        assert!(!d.headers["tracesift.error"].is_empty());
        assert_eq!(d.headers["tracesift.source.topic"], "otlp_spans");
        let p: i32 = d.headers["tracesift.source.partition"].parse().unwrap();
        let o: i64 = d.headers["tracesift.source.offset"].parse().unwrap();
        assert!((0..3).contains(&p) && o >= 0);
    }

    // --- Parquet, read by DuckDB and pyarrow ---
    let glob = format!("{}/spans/v2/**/*.parquet", hot.path().display());
    let script = format!(
        r#"
import duckdb, json, glob, pyarrow.parquet as pq
g = {glob:?}
con = duckdb.connect()
src = f"read_parquet('{{g}}', hive_partitioning = true)"
cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {{src}}").fetchall()]
rows, distinct = con.execute(f"SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM {{src}}").fetchone()
per_trace = dict(con.execute(f"SELECT lower(hex(trace_id)), count(*) FROM {{src}} GROUP BY 1").fetchall())
errors = con.execute(f"SELECT count(DISTINCT trace_id) FROM {{src}} WHERE status_code = 'error'").fetchone()[0]
policies = {{p: [n, lo, hi] for p, n, lo, hi in con.execute(f"SELECT sampling_policy, count(DISTINCT trace_id), min(sampling_adjusted_count), max(sampling_adjusted_count) FROM {{src}} GROUP BY 1").fetchall()}}
roots = con.execute(f"SELECT count(*) FROM {{src}} WHERE parent_span_id IS NULL").fetchone()[0]
kinds = sorted(r[0] for r in con.execute(f"SELECT DISTINCT kind FROM {{src}}").fetchall())
semconv = con.execute(f"SELECT count(http_route), count(db_system), count(rpc_service), count(k8s_pod), count(host_name) FROM {{src}}").fetchone()
sorted_ok = True
bloom = True
for f in glob.glob(g, recursive=True):
    t = pq.read_table(f, columns=["trace_id"]).column(0).to_pylist()
    sorted_ok &= t == sorted(t)
    md = pq.ParquetFile(f).metadata
    bloom &= md.row_group(0).column(0).path_in_schema == "trace_id"
print(json.dumps(dict(cols=cols, rows=rows, distinct=distinct, per_trace=per_trace, errors=errors, policies=policies, roots=roots, kinds=kinds, semconv=semconv, sorted=sorted_ok, bloom=bloom)))
"#
    );
    let out = run_python(&script);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let cols: Vec<&str> = v["cols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for c in [
        "trace_id",
        "span_id",
        "parent_span_id",
        "trace_state",
        "service_name",
        "name",
        "kind",
        "start_time",
        "end_time",
        "duration_ns",
        "status_code",
        "status_message",
        "resource_attributes",
        "attributes",
        "scope_name",
        "scope_version",
        "events",
        "links",
        "http_method",
        "http_route",
        "http_status_code",
        "db_system",
        "rpc_service",
        "rpc_method",
        "k8s_namespace",
        "k8s_pod",
        "host_name",
        "sampling_policy",
        "sampling_adjusted_count",
    ] {
        assert!(cols.contains(&c), "column {c} missing from {cols:?}");
    }
    assert_eq!(
        v["rows"].as_u64().unwrap() as usize,
        seen.len(),
        "Parquet holds the kept spans"
    );
    assert_eq!(v["rows"], v["distinct"], "no span twice in Parquet");
    let pq_traces = v["per_trace"].as_object().unwrap();
    assert_eq!(pq_traces.len(), per_trace.len());
    for (t, n) in pq_traces {
        let id: [u8; 16] = hex::decode(t).unwrap().try_into().unwrap();
        assert_eq!(
            n.as_u64().unwrap() as usize,
            facts[&id].spans,
            "trace {t} partial in Parquet"
        );
    }
    let error_traces = manifest.traces.iter().filter(|f| f.has_error).count();
    assert_eq!(
        v["errors"].as_u64().unwrap() as usize,
        error_traces,
        "every error trace is queryable"
    );
    assert_eq!(
        v["roots"].as_u64().unwrap() as usize,
        per_trace.len(),
        "one root per kept trace"
    );
    assert_eq!(
        v["policies"]["default"][1].as_f64().unwrap().round(),
        100.0,
        "1% keeps weigh 100"
    );
    assert_eq!(
        v["policies"]["important"][1].as_f64().unwrap(),
        2.0,
        "50% keeps weigh 2"
    );
    assert_eq!(
        v["policies"]["errors"][2].as_f64().unwrap(),
        1.0,
        "rule keeps weigh 1"
    );
    let semconv: Vec<u64> = v["semconv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert!(
        semconv.iter().all(|c| *c > 0),
        "semantic-convention columns filled: {semconv:?}"
    );
    assert_eq!(
        v["kinds"],
        serde_json::json!(["client", "internal", "server"])
    );
    assert_eq!(v["sorted"], true, "files sorted by trace id");
    assert_eq!(v["bloom"], true);

    // --- analytics over the archive, checked against the generated input ---
    let mut durations: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut durations_ns: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in &records {
        let req = ExportTraceServiceRequest::decode(r.value.as_slice()).unwrap();
        for rs in &req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|res| &res.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.clone())
                .and_then(|v| v.value)
                .map(|v| match v {
                    any_value::Value::StringValue(s) => s,
                    _ => String::new(),
                })
                .unwrap_or_default();
            for sp in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                let t: [u8; 16] = sp.trace_id.as_slice().try_into().unwrap();
                if expected.contains(&t) {
                    let ns = sp
                        .end_time_unix_nano
                        .saturating_sub(sp.start_time_unix_nano);
                    durations
                        .entry(service.clone())
                        .or_default()
                        .push(ns as f64 / 1e6);
                    durations_ns
                        .entry(service.clone())
                        .or_default()
                        .push(ns as i64);
                }
            }
        }
    }
    let p99 = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let pos = 0.99 * (v.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
    };
    let mut routes: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for f in manifest
        .traces
        .iter()
        .filter(|f| expected.contains(&f.trace_id.0))
    {
        let e = routes.entry(f.route).or_default();
        e.0 += 1;
        e.1 += u64::from(f.has_error);
    }
    let one = manifest
        .traces
        .iter()
        .find(|f| f.has_error)
        .expect("an error trace");
    let script = format!(
        r#"
import duckdb, json
con = duckdb.connect()
src = "read_parquet('{glob}', hive_partitioning = true)"
p99 = dict(con.execute(f"SELECT service_name, quantile_cont(duration_ns / 1e6, 0.99) FROM {{src}} GROUP BY 1").fetchall())
routes = {{r: [n, e] for r, n, e in con.execute(f"""
  WITH t AS (SELECT trace_id, max(CASE WHEN parent_span_id IS NULL THEN http_route END) AS route,
                    bool_or(status_code = 'error') AS err FROM {{src}} GROUP BY 1)
  SELECT route, count(*), sum(CASE WHEN err THEN 1 ELSE 0 END) FROM t GROUP BY 1""").fetchall()}}
one = con.execute(f"SELECT count(*) FROM {{src}} WHERE trace_id = unhex('{id}')").fetchone()[0]
print(json.dumps(dict(p99=p99, routes=routes, one=one)))
"#,
        id = hex::encode(one.trace_id.0)
    );
    let a: serde_json::Value = serde_json::from_str(run_python(&script).trim()).unwrap();
    for (service, mut v) in durations {
        let want = p99(&mut v);
        let got = a["p99"][&service].as_f64().unwrap();
        assert!(
            (got - want).abs() <= 1e-6 * want.max(1.0),
            "p99 of {service}: DuckDB {got}, input {want}"
        );
    }
    for (route, (n, e)) in &routes {
        assert_eq!(
            a["routes"][*route],
            serde_json::json!([n, e]),
            "traces and error traces of {route}"
        );
    }
    assert_eq!(
        a["one"].as_u64().unwrap() as usize,
        one.spans,
        "one trace by id"
    );

    // --- every engine users name reads the archive the same way (once: the keyed run) ---
    if !split {
        let id = hex::encode(one.trace_id.0);
        super::engines::matrix(
            hot.path(),
            &super::engines::Expected {
                rows: seen.len(),
                trace: (&id, one.spans),
                tree: tree_of
                    .remove(&one.trace_id.0)
                    .map(|(mut spans, mut parents)| {
                        spans.sort();
                        parents.sort();
                        (spans, parents)
                    })
                    .expect("the error trace was kept"),
                p99: durations_ns
                    .into_iter()
                    .map(|(s, v)| (s, super::engines::percentile_disc(v, 0.99)))
                    .collect(),
            },
        );
    }
    drop(broker);
}
