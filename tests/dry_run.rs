//! `tracesift dry-run` against a real broker: on generated traffic split over records, the
//! per-policy table matches what the policies must do (recomputed independently from the
//! generator's ground truth), and nothing is written: no commits, no sampled topic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::process::Command;

use rdkafka::producer::FutureProducer;
use support::spine::{expected_keep, important, randomness, T50};
use support::*;
use tracesift::gen::{self, GenOptions, TraceFacts};

fn deciding_policy(f: &TraceFacts) -> Option<&'static str> {
    if !expected_keep(f) {
        return None;
    }
    let r = randomness(&f.trace_id.0);
    Some(if f.has_error {
        "errors"
    } else if f.duration_ms > 500.0 {
        "slow"
    } else if important(f.route) && r >= T50 {
        "important"
    } else {
        "default"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_reports_what_the_policies_do_and_writes_nothing() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", 2).await;
    let (records, manifest) = gen::plan_records(&GenOptions {
        traces: 3000,
        seed: 5,
        split: true,
        late_fraction: 0.0,
        start_ns: support::recent_ns(),
        ..Default::default()
    });
    let producer: FutureProducer = client(&brokers).set("linger.ms", "5").create().unwrap();
    let produced = gen::produce(&producer, "otlp_spans", &records, None)
        .await
        .unwrap();
    assert_eq!(produced.records, records.len());

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tracesift.yaml");
    std::fs::write(
        &cfg,
        format!(
            "kafka: {{brokers: \"{brokers}\", create_topics: true, group_id: dry}}\nstore: {{decision_wait: 3s}}\n{}",
            support::spine::POLICIES
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tracesift"))
        .args(["dry-run", "--idle", "5s", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    eprintln!("{stdout}");
    // Ground truth from the generator.
    let mut matched: HashMap<&str, u64> = HashMap::new();
    let mut kept: HashMap<&str, (u64, u64)> = HashMap::new();
    for f in &manifest.traces {
        if f.has_error {
            *matched.entry("errors").or_default() += 1;
        }
        if f.duration_ms > 500.0 {
            *matched.entry("slow").or_default() += 1;
        }
        if let Some(p) = deciding_policy(f) {
            let e = kept.entry(p).or_default();
            e.0 += 1;
            e.1 += f.spans as u64;
        }
    }
    let row = |name: &str| -> Vec<String> {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row {name} in:\n{stdout}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    for p in ["errors", "slow", "important", "default"] {
        let r = row(p);
        let (traces, spans) = kept.get(p).copied().unwrap_or_default();
        assert_eq!(r[2], traces.to_string(), "{p} kept traces:\n{stdout}");
        assert_eq!(r[3], spans.to_string(), "{p} kept spans:\n{stdout}");
        if let Some(m) = matched.get(p) {
            assert_eq!(r[1], m.to_string(), "{p} matched:\n{stdout}");
        }
    }
    let total = row("total");
    assert_eq!(total[1], manifest.traces.len().to_string(), "{stdout}");
    assert!(stdout.contains("GB/day"), "{stdout}");

    // Nothing written: no offsets committed for the configured group or the dry run's own.
    let b = brokers.clone();
    let committed =
        tokio::task::spawn_blocking(move || committed(&b, "dry", "otlp_spans", &[0, 1]))
            .await
            .unwrap();
    assert!(committed.is_empty(), "dry-run committed {committed:?}");

    // `ottl_condition`: each condition's matches, against the records decoded here with prost.
    let ottl = dir.path().join("ottl.yaml");
    std::fs::write(
        &ottl,
        format!(
            r#"kafka: {{brokers: "{brokers}", create_topics: true, group_id: dry}}
store: {{decision_wait: 3s}}
policies:
  - name: ottl
    type: ottl_condition
    ottl_condition:
      span:
        - 'resource.attributes["service.name"] == "checkout"'
        - 'kind == SPAN_KIND_SERVER and IsMatch(attributes["http.route"], "^/api/pay")'
      spanevent:
        - 'name == "exception"'
"#
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tracesift"))
        .args(["dry-run", "--idle", "5s", "-c"])
        .arg(&ottl)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let mut want = [
        (0u64, std::collections::HashSet::new()),
        (0, Default::default()),
        (0, Default::default()),
    ];
    for r in &records {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        use prost::Message;
        let req = ExportTraceServiceRequest::decode(r.value.as_slice()).unwrap();
        for rs in &req.resource_spans {
            let checkout = rs.resource.as_ref().is_some_and(|res| {
                res.attributes.iter().any(|kv| {
                    kv.key == "service.name"
                        && matches!(kv.value.as_ref().and_then(|v| v.value.as_ref()), Some(Value::StringValue(s)) if s == "checkout")
                })
            });
            for sp in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                let route = sp.attributes.iter().any(|kv| {
                    kv.key == "http.route"
                        && matches!(kv.value.as_ref().and_then(|v| v.value.as_ref()), Some(Value::StringValue(s)) if s.starts_with("/api/pay"))
                });
                let hits = [
                    checkout,
                    sp.kind == 2 && route,
                    sp.events.iter().any(|e| e.name == "exception"),
                ];
                for (w, hit) in want.iter_mut().zip(hits) {
                    if hit {
                        w.0 += 1;
                        w.1.insert(sp.trace_id.clone());
                    }
                }
            }
        }
    }
    for (which, (spans, traces)) in ["span[0]", "span[1]", "spanevent[0]"].iter().zip(&want) {
        assert!(*spans > 0, "{which}: the traffic has matches");
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(which))
            .unwrap_or_else(|| panic!("no {which} row in:\n{stdout}"));
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            (f[2], f[4]),
            (
                spans.to_string().as_str(),
                traces.len().to_string().as_str()
            ),
            "{which}: spans and traces matched\n{stdout}"
        );
    }
}

/// Scenario: one partition of 300 two-span traces stamped 10 ms apart (3 s of stream time),
/// then a record stamped a minute later; a `rate_limiting` policy at 50 spans/s (burst 100)
/// keeps only part of them, and which part depends on when each trace is decided.
/// Guarantee: `dry-run` evaluates each policy once per trace, at the same stream time as `run`,
/// so its kept count for the stateful limiter is exactly what `run` writes to the sampled topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_figures_for_a_rate_limiter_equal_what_run_keeps() {
    use rdkafka::producer::FutureRecord;
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", 1).await;
    let producer: FutureProducer = client(&brokers).set("linger.ms", "5").create().unwrap();
    let t0 = (support::recent_ns() / 1_000_000) as i64;
    let traces = spread_trace_ids(301);
    let mut ends = std::collections::BTreeMap::new();
    for (i, t) in traces.iter().enumerate() {
        let value = otlp_record(vec![test_span(t, 1, false), test_span(t, 2, false)]);
        let stamp = if i == 300 {
            t0 + 60_000
        } else {
            t0 + 10 * i as i64
        };
        let key = hex::encode(t);
        let d = producer
            .send(
                FutureRecord::to("otlp_spans")
                    .key(&key)
                    .payload(&value)
                    .timestamp(stamp),
                std::time::Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        ends.insert(d.partition, d.offset + 1);
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tracesift.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"
kafka: {{brokers: "{brokers}", create_topics: true, group_id: limited, commit_interval: 200ms}}
store: {{decision_wait: 500ms, decision_wait_after_root: 0s, tick: 50ms}}
sinks: {{parquet: {{enabled: false}}}}
telemetry: {{listen: ""}}
policies:
  - {{name: limited, type: rate_limiting, rate_limiting: {{spans_per_second: 50, burst_capacity: 100}}}}
"#
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tracesift"))
        .args(["dry-run", "--idle", "5s", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}");
    let row: Vec<String> = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some("limited"))
        .unwrap_or_else(|| panic!("no row in:\n{stdout}"))
        .split_whitespace()
        .map(String::from)
        .collect();
    let dry_kept: usize = row[2].parse().unwrap();
    let dry_matched: usize = row[1].parse().unwrap();

    let log = dir.path().join("run.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracesift"))
        .args(["run", "-c"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_committed(
        &brokers,
        "limited",
        "otlp_spans",
        &ends,
        std::time::Duration::from_secs(90),
    )
    .await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let run_kept = sampled_by_trace(&brokers).len();
    eprintln!("{stdout}\nrun kept {run_kept}");
    // The limiter really limited (both ways of being wrong are visible).
    assert!(dry_kept > 20 && dry_kept < 290, "{stdout}");
    assert_eq!(
        dry_matched, dry_kept,
        "a limiter matches what it keeps:\n{stdout}"
    );
    assert_eq!(
        dry_kept,
        run_kept,
        "dry-run and run disagree:\n{stdout}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
