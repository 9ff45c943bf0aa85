//! A Collector `tail_sampling` block that uses `ottl_condition` (span and span-event lists,
//! `error_mode: ignore`, nested in `and` and `drop`), pasted as the Collector documents it, run
//! by `tracesift run` on tansu with real traffic: exactly the traces the conditions match are
//! kept, each whole (its spans may arrive in two records), and evaluation errors are counted
//! per policy on `/metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::Span;
use rdkafka::producer::FutureProducer;

use support::outage::{get, metric};
use support::{create_topic, free_port, recent_ns, spread_trace_ids, Broker, Member};

const TRACES: u32 = 240;

/// Pasted in the Collector's own style (JSON-ish flow mappings, escaped quotes).
const POLICIES: &str = r#"
policies:
  [
    {
      name: db-checkout,
      type: ottl_condition,
      ottl_condition: {
        span: [
          "resource.attributes[\"service.name\"] == \"checkout\" and attributes[\"db.system\"] == \"postgresql\"",
        ],
      },
    },
    {
      name: io-exceptions,
      type: ottl_condition,
      ottl_condition: {
        error_mode: ignore,
        spanevent: [
          "name == \"exception\" and IsMatch(attributes[\"exception.type\"], \"IOException$\")",
        ],
      },
    },
    {
      name: vip,
      type: ottl_condition,
      ottl_condition: {
        error_mode: ignore,
        span: ["Substring(attributes[\"tag\"], 0, 3) == \"vip\""],
      },
    },
    {
      name: server-5xx,
      type: and,
      and: {
        and_sub_policy: [
          { name: five-hundreds, type: ottl_condition, ottl_condition: { span: ["attributes[\"http.response.status_code\"] >= 500"] } },
          { name: server-root, type: ottl_condition, ottl_condition: { span: ["IsRootSpan() and kind == SPAN_KIND_SERVER"] } },
        ],
      },
    },
    {
      name: no-health,
      type: drop,
      drop: {
        drop_sub_policy: [
          { name: health, type: ottl_condition, ottl_condition: { error_mode: ignore, span: ["IsMatch(attributes[\"http.route\"], \"^/health\")"] } },
        ],
      },
    },
  ]
"#;

fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}
fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

/// One generated trace: its spans (root first), service, and whether the policies keep it.
struct Trace {
    id: [u8; 16],
    service: &'static str,
    spans: Vec<Span>,
    keep: bool,
    /// Sent as two records (root, then the rest).
    split: bool,
}

fn span(id: &[u8; 16], n: u8, kind: i32) -> Span {
    let start = recent_ns() + u64::from(n) * 1_000_000;
    Span {
        trace_id: id.to_vec(),
        span_id: vec![n; 8],
        parent_span_id: if n == 1 { vec![] } else { vec![1; 8] },
        name: format!("op{n}"),
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 3_000_000,
        ..Default::default()
    }
}

/// The traffic: six shapes, each matched or just missed; every seventh trace is a health check
/// (dropped whatever else it matches); every third is split over two records.
fn traffic() -> Vec<Trace> {
    spread_trace_ids(TRACES)
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let mut root = span(&id, 1, 2);
            let mut child = span(&id, 2, 3);
            let mut third = span(&id, 3, 1);
            let mut service = "checkout";
            let keep = match i % 6 {
                0 => {
                    child.attributes.push(kv("db.system", s("postgresql")));
                    true
                }
                1 => {
                    service = "cart";
                    child.attributes.push(kv("db.system", s("postgresql")));
                    false
                }
                2 => {
                    third.events.push(Event {
                        name: "exception".into(),
                        time_unix_nano: third.start_time_unix_nano,
                        attributes: vec![kv("exception.type", s("java.io.IOException"))],
                        ..Default::default()
                    });
                    true
                }
                3 => {
                    third.events.push(Event {
                        name: "exception".into(),
                        time_unix_nano: third.start_time_unix_nano,
                        attributes: vec![kv("exception.type", s("java.lang.NullPointerException"))],
                        ..Default::default()
                    });
                    false
                }
                4 => {
                    // The other spans have no `tag`: their evaluation fails, which `ignore`
                    // passes over.
                    third.attributes.push(kv(
                        "tag",
                        s(if i % 4 == 0 { "vip-gold" } else { "regular" }),
                    ));
                    i % 4 == 0
                }
                _ => {
                    child.attributes.push(kv(
                        "http.response.status_code",
                        any_value::Value::IntValue(503),
                    ));
                    if i % 4 == 1 {
                        // No server root: the `and` fails on its second condition.
                        root.kind = 1;
                        false
                    } else {
                        true
                    }
                }
            };
            let health = i % 7 == 0;
            if health {
                root.attributes.push(kv("http.route", s("/health/live")));
            }
            Trace {
                id,
                service,
                spans: vec![root, child, third],
                keep: keep && !health,
                split: i % 3 == 0,
            }
        })
        .collect()
}

fn record(service: &str, spans: Vec<Span>) -> Vec<u8> {
    support::service_record(service, spans)
}

#[test]
fn pasted_ottl_policies_keep_exactly_the_matching_traces_whole() {
    let traces = traffic();
    let want: HashSet<[u8; 16]> = traces.iter().filter(|t| t.keep).map(|t| t.id).collect();
    assert!(
        want.len() > 40 && want.len() < traces.len() / 2,
        "{} of {} traces to keep",
        want.len(),
        traces.len()
    );
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        create_topic(&brokers, "otlp_spans", 2).await;
        let p: FutureProducer = support::client(&brokers).create().unwrap();
        let mut ends = BTreeMap::new();
        for t in &traces {
            let mut spans = t.spans.clone();
            if t.split {
                let rest = spans.split_off(1);
                support::send_trace_record(&p, &t.id, &record(t.service, spans), &mut ends).await;
                support::send_trace_record(&p, &t.id, &record(t.service, rest), &mut ends).await;
            } else {
                support::send_trace_record(&p, &t.id, &record(t.service, spans), &mut ends).await;
            }
        }
    });
    let port = free_port();
    let config = format!(
        r#"
kafka:
  brokers: "{brokers}"
  group_id: ottl
  create_topics: true
  input_topics: [otlp_spans]
  commit_interval: 300ms
store: {{decision_wait: 1s, decision_wait_after_root: 1s, max_trace_age: 1m, tick: 200ms}}
sinks:
  parquet: {{enabled: false}}
telemetry: {{listen: "127.0.0.1:{port}"}}
{POLICIES}
"#
    );
    let dir = tempfile::tempdir().unwrap();
    let member = Member::start(dir.path(), "ottl", &config, &[]);

    // Every trace is decided (kept or not) before the outcome is read.
    let deadline = Instant::now() + Duration::from_secs(120);
    let decided = loop {
        let (_, body) = rt.block_on(get(port, "/metrics"));
        let decided = metric(&body, "tracesift_traces_decided_total");
        if decided >= f64::from(TRACES) || Instant::now() > deadline {
            break (decided, body);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let (n, body) = decided;
    assert_eq!(
        n,
        f64::from(TRACES),
        "every trace decided\n{}",
        member.log()
    );
    // `vip` fails on every span without `tag` (ignored, counted once per trace).
    let vip_errors = metric(
        &body,
        "tracesift_policy_evaluation_errors_total{policy=\"vip\"}",
    );
    assert_eq!(vip_errors, f64::from(TRACES), "{body}");

    let deadline = Instant::now() + Duration::from_secs(60);
    let kept = loop {
        let kept = support::sampled_spans(&brokers, "otlp_spans_sampled");
        let spans: usize = kept.values().map(Vec::len).sum();
        if spans >= want.len() * 3 || Instant::now() > deadline {
            break kept;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let got: HashSet<[u8; 16]> = kept.keys().copied().collect();
    let by_id: HashMap<[u8; 16], &Trace> = traces.iter().map(|t| (t.id, t)).collect();
    let missing: Vec<String> = want.difference(&got).map(hex::encode).collect();
    let extra: Vec<String> = got.difference(&want).map(hex::encode).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}\nextra {extra:?}\n{}",
        member.log()
    );
    for (id, spans) in &kept {
        let ids: HashSet<&[u8]> = spans.iter().map(|s| s.span_id.as_slice()).collect();
        assert_eq!(
            (spans.len(), ids.len()),
            (3, 3),
            "trace {} kept whole, once (split: {})",
            hex::encode(id),
            by_id[id].split
        );
    }
    member.stop();
}
