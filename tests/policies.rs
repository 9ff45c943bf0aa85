//! The Collector's `policies:` block, pasted unchanged (tests/fixtures/collector_policies.yaml),
//! parsed by tracesift, and each policy checked for behaviour on real OTLP records built for it
//! (through the same lazy scanner and trace summary the pipeline uses). Also: precedence (drop
//! first), and the statistical promises of the sampling math.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use tracesift::clock::StreamTime;
use tracesift::config::Config;
use tracesift::otlp::threshold::Threshold;
use tracesift::otlp::{scan_request_into, TraceId};
use tracesift::sample::{PolicySpec, Sampler, TraceSummary};

const FIXTURE: &str = include_str!("fixtures/collector_policies.yaml");

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

/// One span of a test trace.
#[derive(Clone, Default)]
struct Sp {
    attrs: Vec<KeyValue>,
    resource: Vec<KeyValue>,
    error: bool,
    ms: u64,
    trace_state: String,
    sampled_flag: bool,
}

fn sp() -> Sp {
    Sp {
        ms: 10,
        ..Default::default()
    }
}

impl Sp {
    fn attr(mut self, k: &str, v: any_value::Value) -> Sp {
        self.attrs.push(kv(k, v));
        self
    }
    fn res(mut self, k: &str, v: any_value::Value) -> Sp {
        self.resource.push(kv(k, v));
        self
    }
    fn ms(mut self, ms: u64) -> Sp {
        self.ms = ms;
        self
    }
}

/// The trace's OTLP record: one resource per span, the first span the root.
fn record_of(id: TraceId, spans: &[Sp]) -> Bytes {
    let resource_spans = spans
        .iter()
        .enumerate()
        .map(|(i, x)| ResourceSpans {
            resource: Some(Resource {
                attributes: x.resource.clone(),
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: id.0.to_vec(),
                    span_id: vec![i as u8 + 1; 8],
                    parent_span_id: if i == 0 { vec![] } else { vec![1; 8] },
                    name: "op".into(),
                    start_time_unix_nano: 1_000_000_000,
                    end_time_unix_nano: 1_000_000_000 + x.ms * 1_000_000,
                    attributes: x.attrs.clone(),
                    trace_state: x.trace_state.clone(),
                    flags: if x.sampled_flag { 0x101 } else { 0x100 },
                    status: Some(Status {
                        code: if x.error {
                            status::StatusCode::Error as i32
                        } else {
                            status::StatusCode::Ok as i32
                        },
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    Bytes::from(ExportTraceServiceRequest { resource_spans }.encode_to_vec())
}

/// Builds the trace's OTLP record, scans it as the pipeline does, and folds the summary.
fn summarize(sampler: &Sampler, id: TraceId, spans: &[Sp]) -> TraceSummary {
    let rec = record_of(id, spans);
    let mut out = Vec::new();
    scan_request_into(&rec, sampler.probe(), 0, &mut out).unwrap();
    let mut sum = TraceSummary::new();
    for x in &out {
        sum.add(&x.meta);
    }
    sum
}

fn fixture() -> Vec<PolicySpec> {
    Config::parse(FIXTURE)
        .unwrap_or_else(|e| panic!("the Collector's policies must parse unchanged:\n{e}"))
        .policies
}

fn only(name: &str) -> Sampler {
    let spec = fixture()
        .into_iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("{name} not in fixture"));
    Sampler::build(&[spec]).unwrap()
}

fn keeps(sampler: &Sampler, spans: &[Sp]) -> bool {
    let id = TraceId([0x42; 16]);
    sampler
        .decide(id, &summarize(sampler, id, spans), StreamTime::ZERO)
        .keep
}

#[test]
fn every_collector_policy_type_parses_unchanged() {
    let specs = fixture();
    let types: std::collections::BTreeSet<&str> =
        specs.iter().map(|p| p.kind.type_name()).collect();
    for t in tracesift::sample::collector_policy_types() {
        assert!(types.contains(t), "fixture lacks {t}");
    }
    Sampler::build(&specs).unwrap();
    // The effective config prints them back in the same syntax, and that parses again.
    let cfg = Config::parse(FIXTURE).unwrap();
    let again = Config::parse(&cfg.to_yaml()).unwrap();
    assert_eq!(again.policies, cfg.policies);
}

#[test]
fn attribute_policies_on_spans_and_resources() {
    let num = only("test-policy-3");
    assert!(keeps(
        &num,
        &[sp().attr("key1", any_value::Value::IntValue(50))]
    ));
    assert!(keeps(
        &num,
        &[sp(), sp().res("key1", any_value::Value::IntValue(100))]
    ));
    assert!(!keeps(
        &num,
        &[sp().attr("key1", any_value::Value::IntValue(101))]
    ));
    assert!(
        !keeps(&num, &[sp().attr("key1", s("75"))]),
        "strings are not numbers"
    );
    assert!(!keeps(&num, &[sp()]), "missing attribute");
    // The Collector README's ottl_condition: a missing attribute is nil, and nil is "not equal"
    // to any value, so its second condition holds on any span without `test_attr_key_2`.
    let ottl = only("test-policy-16");
    assert!(keeps(&ottl, &[sp()]));
    assert!(keeps(
        &ottl,
        &[sp()
            .attr("test_attr_key_1", s("test_attr_val_1"))
            .attr("test_attr_key_2", s("test_attr_val_1"))]
    ));
    assert!(
        !keeps(&ottl, &[sp().attr("test_attr_key_2", s("test_attr_val_1"))]),
        "neither span condition holds and the span has no events"
    );
    let inv = only("test-policy-14");
    assert!(
        inv.decide(
            TraceId([1; 16]),
            &summarize(&inv, TraceId([1; 16]), &[sp()]),
            StreamTime::ZERO
        )
        .keep
    );
    assert!(!keeps(
        &inv,
        &[sp().attr("key1", any_value::Value::IntValue(60))]
    ));

    let exact = only("test-policy-6");
    assert!(keeps(&exact, &[sp().attr("key2", s("value2"))]));
    assert!(keeps(&exact, &[sp().res("key2", s("value1"))]));
    assert!(!keeps(&exact, &[sp().attr("key2", s("value3"))]));
    let regex = only("test-policy-7");
    assert!(keeps(&regex, &[sp().attr("key2", s("valid"))]));
    assert!(
        keeps(&regex, &[sp().attr("key2", s("an interval"))]),
        "unanchored"
    );
    assert!(!keeps(&regex, &[sp().attr("key2", s("other"))]));
    let inverted = only("test-policy-9");
    assert!(keeps(&inverted, &[sp().attr("http.url", s("/api/cart"))]));
    assert!(!keeps(
        &inverted,
        &[sp(), sp().attr("http.url", s("/health"))]
    ));

    let boolean = only("test-policy-13");
    assert!(keeps(
        &boolean,
        &[sp().attr("key4", any_value::Value::BoolValue(true))]
    ));
    assert!(!keeps(
        &boolean,
        &[sp().attr("key4", any_value::Value::BoolValue(false))]
    ));
    assert!(!keeps(&boolean, &[sp().attr("key4", s("true"))]));

    let and = only("and-policy-1");
    let both = sp()
        .attr("key1", any_value::Value::IntValue(70))
        .attr("key2", s("value1"));
    assert!(keeps(&and, &[both]));
    // The two conditions may be met by different spans of the trace (trace-level AND).
    assert!(keeps(
        &and,
        &[
            sp().attr("key1", any_value::Value::IntValue(70)),
            sp().res("key2", s("value2"))
        ]
    ));
    assert!(!keeps(
        &and,
        &[sp().attr("key1", any_value::Value::IntValue(70))]
    ));

    let not = only("not-policy-1");
    assert!(!keeps(&not, &[sp().attr("key2", s("value1"))]));
    assert!(keeps(&not, &[sp().attr("key2", s("value2"))]));
}

#[test]
fn trace_level_policies() {
    let lat = only("test-policy-2");
    assert!(!keeps(&lat, &[sp().ms(5000)]), "threshold is exclusive");
    assert!(keeps(&lat, &[sp().ms(5001)]));
    assert!(keeps(&lat, &[sp().ms(10000)]), "upper bound is inclusive");
    assert!(!keeps(&lat, &[sp().ms(10001)]));

    let status = only("test-policy-5");
    assert!(keeps(
        &status,
        &[
            sp(),
            Sp {
                error: true,
                ..sp()
            }
        ]
    ));
    assert!(!keeps(&status, &[sp()]), "OK is not listed");

    let count = only("test-policy-10");
    assert!(!keeps(&count, &[sp()]));
    assert!(keeps(&count, &vec![sp(); 2]));
    assert!(keeps(&count, &vec![sp(); 20]));
    assert!(!keeps(&count, &vec![sp(); 21]));

    let ts = only("test-policy-11");
    let with_ts = |v: &str| Sp {
        trace_state: v.into(),
        ..sp()
    };
    assert!(keeps(&ts, &[sp(), with_ts("ot=th:8,key3=value2")]));
    assert!(!keeps(&ts, &[with_ts("key3=value9")]));

    let flags = only("test-policy-15");
    assert!(keeps(
        &flags,
        &[
            sp(),
            Sp {
                sampled_flag: true,
                ..sp()
            }
        ]
    ));
    assert!(!keeps(&flags, &[sp()]));

    assert!(keeps(&only("test-policy-1"), &[sp()]));
}

#[test]
fn limiters_and_composite_budget_per_second() {
    let rate = only("test-policy-8"); // 35 spans/s, burst 70
    let id = TraceId([9; 16]);
    let ten = summarize(&rate, id, &vec![sp(); 10]);
    let at = |ms| StreamTime::from_millis(ms);
    let kept = (0..10)
        .filter(|_| rate.decide(id, &ten, at(1_000)).keep)
        .count();
    assert_eq!(kept, 7, "burst of 70 spans = 7 traces of 10");
    let d = rate.decide(id, &ten, at(2_000));
    assert!(d.keep, "35 tokens back after a second");
    assert_eq!(
        d.threshold,
        Threshold::UNKNOWN,
        "rate-limited keeps have no known probability"
    );

    let bytes = only("test-policy-12"); // 10 KiB/s, burst 20 KiB
    let big = summarize(
        &bytes,
        id,
        &vec![sp().attr("pad", s(&"x".repeat(4_000))); 6],
    );
    assert!(big.bytes > 20_480, "{}", big.bytes);
    assert!(
        !bytes.decide(id, &big, at(60_000)).keep,
        "larger than the burst"
    );
    let small = summarize(&bytes, id, &[sp().attr("pad", s(&"x".repeat(4_000)))]);
    let kept = (0..10)
        .filter(|_| bytes.decide(id, &small, at(60_000)).keep)
        .count();
    assert_eq!(kept, (20_480 / small.bytes) as usize);

    // composite: policy-1 has 500 spans/s, policy-2 250, policy-3 (always) an equal third.
    let comp = only("composite-policy-1");
    let k1 = summarize(
        &comp,
        id,
        &vec![sp().attr("key1", any_value::Value::IntValue(60)); 100],
    );
    let k2 = summarize(&comp, id, &vec![sp().attr("key2", s("value1")); 100]);
    let other = summarize(&comp, id, &vec![sp(); 100]);
    let count = |s: &TraceSummary, ms| (0..20).filter(|_| comp.decide(id, s, at(ms)).keep).count();
    assert_eq!(count(&k1, 10_000), 5, "500 spans/s for policy-1");
    assert_eq!(count(&k2, 10_000), 2, "250 spans/s for policy-2");
    assert_eq!(
        count(&other, 10_000),
        3,
        "1000/3 spans/s for the always_sample"
    );
    assert_eq!(count(&k1, 10_999), 0, "same second: budget spent");
    assert_eq!(count(&k1, 11_000), 5, "next second: budget back");
}

#[test]
fn drop_wins_and_is_evaluated_first() {
    let specs = fixture();
    let sampler = Sampler::build(&specs).unwrap();
    let id = TraceId([3; 16]);
    // always_sample, errors etc. would keep it: the drop policy still wins.
    let health = summarize(
        &sampler,
        id,
        &[Sp {
            error: true,
            ..sp().attr("url.path", s("/health"))
        }],
    );
    let d = sampler.decide(id, &health, StreamTime::ZERO);
    assert!(!d.keep);
    assert_eq!(sampler.policy_name(d.policy.unwrap()), "drop-policy-1");
    // Without the dropped path the same trace is kept, by the rule with the smallest threshold.
    let fine = summarize(
        &sampler,
        id,
        &[Sp {
            error: true,
            ..sp()
        }],
    );
    let d = sampler.decide(id, &fine, StreamTime::ZERO);
    assert!(d.keep);
    assert_eq!(d.threshold.adjusted_count(), 1.0);
}

#[test]
fn unknown_types_fields_and_bad_conditions_are_rejected_with_paths() {
    let bad = r#"
policies:
  - {name: a, type: numeric_attribute, numeric_attribute: {key: k, minimum: 1}}
  - {name: b, type: rate_limit, rate_limit: {}}
  - {name: c, type: ottl_condition, ottl_condition: {span: ['atributes["x"] == 1']}}
  - {name: d, type: composite, composite: {max_total_spans_per_second: 10, policy_order: [nope], composite_sub_policy: [{name: x, type: always_sample}], rate_allocation: [{policy: y, percent: 10}]}}
  - {name: e, type: not, not: {not_sub_policy: {name: f, type: span_count, span_count: {min_spans: 3, max_spans: 1}}}}
"#;
    let err = Config::parse(bad).unwrap_err().to_string();
    for want in [
        "policies[0].numeric_attribute.minimum",
        "policies[1].type",
        "valid types: always_sample",
        "policies[2].ottl_condition.span[0], column 1: unknown path \"atributes\"",
        "policies[3].composite.policy_order[0]",
        "policies[3].composite.rate_allocation[0].policy",
        "policies[4].not.not_sub_policy.span_count",
    ] {
        assert!(err.contains(want), "{want} missing from:\n{err}");
    }
}

#[test]
fn salted_probabilistic_is_deterministic_and_near_its_rate() {
    let p = only("test-policy-4"); // 10%, salted
    let mut kept = 0;
    let n = 20_000u32;
    for i in 1..=n {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&i.to_le_bytes());
        let id = TraceId(id);
        let sum = summarize(&p, id, &[sp()]);
        let a = p.decide(id, &sum, StreamTime::ZERO).keep;
        assert_eq!(a, p.decide(id, &sum, StreamTime::ZERO).keep);
        kept += u32::from(a);
    }
    // Ids differing only in their high bytes would all share one OTEP 235 randomness (the low
    // 56 bits): the salt hashes the whole id, so they spread.
    let sd = (f64::from(n) * 0.1 * 0.9).sqrt();
    assert!(
        (f64::from(kept) - f64::from(n) * 0.1).abs() < 5.0 * sd,
        "{kept}"
    );
}

use tracesift::sample::SEED_TIERS;

fn random_id(rng: &mut impl rand::Rng) -> TraceId {
    loop {
        let id: [u8; 16] = rng.random();
        if id != [0; 16] {
            return TraceId(id);
        }
    }
}

#[test]
fn first_match_tiers_decide_in_order() {
    let cfg = Config::parse(SEED_TIERS).unwrap();
    assert_eq!(cfg.policy_names(), ["errors", "slow", "important", "rest"]);
    let again = Config::parse(&cfg.to_yaml()).unwrap();
    assert_eq!(again.tiers, cfg.tiers, "check prints tiers back as tiers");
    let sampler = Sampler::from_config(&cfg).unwrap();
    let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(3);
    let n = 20_000;
    // (trace, tier that must decide it, its keep probability)
    let cases: Vec<(Vec<Sp>, &str, f64)> = vec![
        (
            vec![Sp {
                error: true,
                ..sp().attr("http.route", s("/api/payment")).ms(900)
            }],
            "errors",
            1.0,
        ),
        (
            vec![sp().attr("http.route", s("/api/checkout")).ms(900)],
            "slow",
            1.0,
        ),
        (
            vec![sp().attr("http.route", s("/api/checkout"))],
            "important",
            0.5,
        ),
        (vec![sp().attr("http.route", s("/api/cart"))], "rest", 0.01),
    ];
    for (spans, tier, p) in cases {
        let (mut kept, mut weight) = (0usize, 0.0f64);
        for _ in 0..n {
            let id = random_id(&mut rng);
            let d = sampler.decide(id, &summarize(&sampler, id, &spans), StreamTime::ZERO);
            assert_eq!(sampler.policy_name(d.policy.unwrap()), tier);
            if d.keep {
                kept += 1;
                weight += d.threshold.adjusted_count();
            }
        }
        let want = p * n as f64;
        let sd = (n as f64 * p * (1.0 - p)).sqrt().max(1.0);
        assert!(
            (kept as f64 - want).abs() < 5.0 * sd,
            "{tier}: kept {kept}, want ~{want}"
        );
        // The adjusted counts of what was kept estimate the number of traces seen, unbiased:
        // sum(1/p) over keeps has mean n and standard deviation sqrt(n (1-p) / p).
        let sd_w = (n as f64 * (1.0 - p) / p).sqrt().max(1e-9);
        assert!(
            (weight - n as f64).abs() <= 5.0 * sd_w,
            "{tier}: adjusted counts sum to {weight}, want ~{n}"
        );
    }

    let both = format!("{SEED_TIERS}policies: [{{name: all, type: always_sample}}]\n");
    let err = Config::parse(&both).unwrap_err().to_string();
    assert!(err.contains("not both"), "{err}");
    let bad = "tiers:\n  - {name: a, when: {type: drop, drop: {drop_sub_policy: [{name: x, type: always_sample}]}}, sample_percentage: 5}\n  - {name: b, sample_percentage: 101}\n  - {name: c, when: {type: latency}, sample_percentage: 1}\n";
    let err = Config::parse(bad).unwrap_err().to_string();
    for want in [
        "tiers[0].when.type",
        "tiers[1].sample_percentage",
        "tiers[2].when.latency",
    ] {
        assert!(err.contains(want), "{want} missing from:\n{err}");
    }
}

#[test]
fn adjusted_counts_are_unbiased_and_nested_across_percentages() {
    // Consistent nesting: kept at p => kept at every p' > p; and per percentage the adjusted
    // counts of the kept traces sum to about the number of traces.
    let ps = [0.1, 1.0, 12.5, 33.0, 50.0, 99.0];
    let samplers: Vec<Sampler> = ps
        .iter()
        .map(|p| {
            Sampler::from_config(
                &Config::parse(&format!(
                    "policies: [{{name: p, type: probabilistic, probabilistic: {{sampling_percentage: {p}}}}}]"
                ))
                .unwrap(),
            )
            .unwrap()
        })
        .collect();
    let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(11);
    let n = 50_000;
    let mut weights = vec![0.0f64; ps.len()];
    let sum = TraceSummary::new();
    for _ in 0..n {
        let id = random_id(&mut rng);
        let ds: Vec<_> = samplers
            .iter()
            .map(|s| s.decide(id, &sum, StreamTime::ZERO))
            .collect();
        for w in ds.windows(2) {
            assert!(!w[0].keep || w[1].keep, "nesting violated");
        }
        for (acc, d) in weights.iter_mut().zip(&ds) {
            if d.keep {
                *acc += d.threshold.adjusted_count();
            }
        }
    }
    for (p, w) in ps.iter().zip(weights) {
        let p = p / 100.0;
        let sd = (n as f64 * (1.0 - p) / p).sqrt();
        assert!((w - n as f64).abs() <= 5.0 * sd, "p={p}: {w} vs {n}");
    }
}

#[test]
fn buffered_traces_are_summarized_again_after_a_reload() {
    use tracesift::config::StoreConfig;
    use tracesift::store::{StoreLimits, TraceStore};
    // Buffered under policies that read no attribute; decided under ones that do.
    let old = Sampler::build(&fixture()[..1]).unwrap(); // always_sample: no leaves
    let new = Sampler::from_config(
        &Config::parse(
            "policies: [{name: pay, type: string_attribute, string_attribute: {key: http.route, values: [/api/pay]}}]",
        )
        .unwrap(),
    )
    .unwrap();
    let id = TraceId([0x77; 16]);
    let spans = [sp(), sp().res("http.route", s("/api/pay"))];
    assert_eq!(
        summarize(&old, id, &spans).leaf_bits,
        0,
        "old policies read nothing"
    );
    let mut store = TraceStore::new(StoreLimits::from(&StoreConfig::default()));
    let bytes = record_of(id, &spans);
    let mut out = Vec::new();
    scan_request_into(&bytes, old.probe(), 0, &mut out).unwrap();
    for x in out {
        store.add(x.trace_id, &x.meta, &x.span, 0, 0, StreamTime::ZERO);
    }
    store.resummarize(|span| tracesift::otlp::rescan_span(span, new.probe()).ok());
    let mut due = Vec::new();
    store.poll_due(StreamTime::from_millis(3_600_000), &mut due);
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].summary.span_count, 2);
    let d = new.decide(id, &due[0].summary, StreamTime::ZERO);
    assert!(d.keep, "the resource attribute is seen by the new policies");
}

/// One root span of `service`, scanned as the pipeline does: its summary and span references.
fn keyed_trace(sampler: &Sampler, service: &str) -> (TraceSummary, Vec<tracesift::otlp::SpanRef>) {
    let id = TraceId([0x31; 16]);
    let rec = Bytes::from(
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s(service))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: id.0.to_vec(),
                        span_id: vec![1; 8],
                        start_time_unix_nano: 1,
                        end_time_unix_nano: 2,
                        attributes: vec![kv("http.route", s("/x"))],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec(),
    );
    let mut out = Vec::new();
    scan_request_into(&rec, sampler.probe(), 0, &mut out).unwrap();
    let mut sum = TraceSummary::new();
    for x in &out {
        sum.add(&x.meta);
    }
    (sum, out.into_iter().map(|x| x.span).collect())
}

/// Runs a skewed mix (per second: 900 `big`, 90 `mid`, 10 `rare`) through a dynamic policy for
/// `secs` seconds of paused time; returns, per key, (seen, kept) over the last 10 seconds.
fn skewed_mix(goal: &str, secs: u64) -> HashMap<&'static str, (u64, u64)> {
    let cfg = Config::parse(&format!(
        "policies: [{{name: dyn, type: dynamic, dynamic: {{key_fields: [service.name, status_code], {goal}, adjustment_interval: 1s, ewma_weight: 0.5, max_keys: 100}}}}]"
    ))
    .unwrap();
    let sampler = Sampler::from_config(&cfg).unwrap();
    let mix = [("big", 900u64), ("mid", 90), ("rare", 10)];
    let traces: Vec<_> = mix
        .iter()
        .map(|(k, n)| (*k, *n, keyed_trace(&sampler, k)))
        .collect();
    let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(17);
    let mut tally: HashMap<&'static str, (u64, u64)> = HashMap::new();
    for sec in 0..secs {
        for ms in 0..1000u64 {
            for (k, n, (sum, spans)) in &traces {
                // Spread each key's traces evenly over the second.
                if ms * n / 1000 == (ms + 1) * n / 1000 {
                    continue;
                }
                let id = random_id(&mut rng);
                let now = StreamTime::from_millis(sec * 1000 + ms);
                let d = sampler.decide_trace(id, sum, spans, now);
                if sec >= secs - 10 {
                    let e = tally.entry(*k).or_default();
                    e.0 += 1;
                    e.1 += u64::from(d.keep);
                    if d.keep {
                        assert!(d.threshold.adjusted_count() >= 1.0, "known probability");
                    }
                }
            }
        }
    }
    tally
}

#[test]
fn dynamic_sampler_converges_on_a_skewed_mix() {
    // Goal: keep 1 in 10 overall.
    let t = skewed_mix("goal_sample_rate: 10", 30);
    let frac = |k: &str| t[k].1 as f64 / t[k].0 as f64;
    let kept: u64 = t.values().map(|v| v.1).sum();
    let seen: u64 = t.values().map(|v| v.0).sum();
    assert_eq!(seen, 10_000);
    assert!(
        (800..=1200).contains(&kept),
        "kept {kept} of {seen}, want ~1000: {t:?}"
    );
    assert!(frac("rare") > 0.9, "rare keys keep almost all: {t:?}");
    assert!(frac("mid") > frac("big"), "{t:?}");
    assert!(frac("big") < 0.1, "the common key pays: {t:?}");

    // Goal: 50 traces per second in all.
    let t = skewed_mix("goal_throughput_per_sec: 50", 30);
    let kept: u64 = t.values().map(|v| v.1).sum();
    assert!(
        (400..=600).contains(&kept),
        "kept {kept} in 10 s, want ~500: {t:?}"
    );
    assert!(t["rare"].1 as f64 / t["rare"].0 as f64 > 0.9, "{t:?}");
}
