//! Hot-path benchmarks on realistic records from `tracesift gen` (keyed: one record per trace).
//!
//! - `decode/full_prost`: the baseline, a full prost decode of each record;
//! - `decode/lazy_scan`: the lazy scan the pipeline uses (ids, times, status, leaf bits);
//! - `sampler_core`: scan + buffer in the trace store + decide every trace with the seed's tiers,
//!   i.e. the per-span cost of the sampler before any sink (DESIGN §6 target: ≤ 500 ns/span);
//! - `decide/*`: the policy evaluation alone, per trace, on summaries collected while scanning:
//!   the seed's tiers as a `tiers:` block, the same as Collector policies, and a 20-policy config;
//! - `decode/lazy_scan_cached`: the lazy scan with the partition's resource cache (resources
//!   seen before are not walked again);
//! - `emit/splice`: re-encoding kept traces by splicing span bytes;
//! - `emit/mark`: the OTEP 235 rewrite of each kept span (tracestate `th`, policy, adjusted count);
//! - `emit/parquet`: the hot segment encoder on kept spans (rows read from the span bytes, string
//!   columns written by hand, the rest through Arrow, zstd; issue 30's target ≤ 2.0 µs a span);
//!   `emit/parquet_files_of_1000` the same spans as segments of 1,000 (what a file costs beside
//!   its rows);
//! - `ottl/*`: one three-clause `ottl_condition` condition (an enum comparison, a regex on one
//!   attribute, a resource attribute) judged on every span, read where it lies: the lazy scan
//!   with the policy's whole-span leaf against the same scan without it (their difference is
//!   the condition's cost in the pipeline), and the condition alone on buffered spans.
//! - `red/*`: RED metrics from every span (the `spanmetrics` table, Collector defaults) per
//!   record as the partition feeds it, and per decided trace the service graph, and a kept
//!   trace's estimates and exemplars.
//!
//! Run: `cargo bench --bench hot_path`. Throughput is in spans; ns/span = 1e9 / (spans/s).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tracesift::archive::{encode_segment, KeptSpan};
use tracesift::clock::StreamTime;
use tracesift::config::{Config, StoreConfig};
use tracesift::gen::{plan_records, GenOptions};
use tracesift::otlp::{self, ScannedSpan, SpanProbe};
use tracesift::sample::{Sampler, SEED_POLICIES, SEED_TIERS};
use tracesift::store::{Admit, StoreLimits, TraceStore};
use tracesift::telemetry::service_graph::ServiceGraphConfig;
use tracesift::telemetry::span_metrics::{self, SpanMetricsConfig};

const OTTL_POLICY: &str = r#"
policies:
  - name: server-api
    type: ottl_condition
    ottl_condition:
      span:
        - 'kind == SPAN_KIND_SERVER and IsMatch(attributes["http.route"], "^/api/(pay|check)") and resource.attributes["service.name"] == "frontend"'
"#;

const TWENTY_POLICIES: &str = r#"
policies:
  - name: drop-health
    type: drop
    drop: {drop_sub_policy: [{name: h, type: string_attribute, string_attribute: {key: http.route, values: [/healthz, /readyz, /metrics]}}]}
  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
  - {name: slow, type: latency, latency: {threshold_ms: 500}}
  - {name: very-slow-band, type: latency, latency: {threshold_ms: 2000, upper_threshold_ms: 60000}}
  - {name: http-5xx, type: numeric_attribute, numeric_attribute: {key: http.response.status_code, min_value: 500, max_value: 599}}
  - {name: http-4xx-old, type: numeric_attribute, numeric_attribute: {key: http.status_code, min_value: 400, max_value: 499}}
  - {name: payment-routes, type: string_attribute, string_attribute: {key: http.route, values: [/api/payment, /api/checkout]}}
  - {name: admin-regex, type: string_attribute, string_attribute: {key: http.route, values: ["^/admin/.*", "^/internal/(debug|pprof)"], enabled_regex_matching: true}}
  - {name: debug-flag, type: boolean_attribute, boolean_attribute: {key: app.debug, value: true}}
  - {name: vip-tenant, type: trace_state, trace_state: {key: tenant, values: [gold, platinum]}}
  - {name: big-traces, type: span_count, span_count: {min_spans: 200}}
  - {name: head-sampled, type: trace_flags}
  - name: db-heavy
    type: and
    and: {and_sub_policy: [{name: db, type: string_attribute, string_attribute: {key: db.system, values: [postgresql, redis]}}, {name: s, type: span_count, span_count: {min_spans: 10}}, {name: p, type: probabilistic, probabilistic: {sampling_percentage: 20}}]}
  - name: not-frontend
    type: and
    and: {and_sub_policy: [{name: nf, type: not, not: {not_sub_policy: {name: f, type: string_attribute, string_attribute: {key: service.name, values: [frontend]}}}}, {name: p, type: probabilistic, probabilistic: {sampling_percentage: 2}}]}
  - name: checkout-5pct
    type: and
    and: {and_sub_policy: [{name: svc, type: string_attribute, string_attribute: {key: service.name, values: [checkout]}}, {name: p, type: probabilistic, probabilistic: {sampling_percentage: 5}}]}
  - name: k8s-canary
    type: and
    and: {and_sub_policy: [{name: ns, type: string_attribute, string_attribute: {key: k8s.namespace.name, values: [canary]}}, {name: p, type: probabilistic, probabilistic: {sampling_percentage: 50}}]}
  - name: budgeted
    type: composite
    composite:
      max_total_spans_per_second: 100000
      composite_sub_policy:
        - {name: rpc, type: string_attribute, string_attribute: {key: rpc.system, values: [grpc]}}
        - {name: rest, type: always_sample}
      rate_allocation: [{policy: rpc, percent: 40}, {policy: rest, percent: 10}]
  - {name: capped, type: rate_limiting, rate_limiting: {spans_per_second: 1000000}}
  - {name: salted-1pct, type: probabilistic, probabilistic: {sampling_percentage: 1, hash_salt: bench}}
  - {name: default, type: probabilistic, probabilistic: {sampling_percentage: 1}}
"#;

/// Scans every record into `out` and hands each record's spans to `then`; the spans read.
fn scan_each(
    recs: &[Bytes],
    probe: &impl otlp::SpanProbe,
    out: &mut Vec<ScannedSpan>,
    mut then: impl FnMut(&[ScannedSpan]),
) -> usize {
    let mut n = 0;
    for r in recs {
        otlp::scan_request_into(r, probe, 0, out).unwrap();
        then(out);
        n += out.len();
    }
    n
}

fn records(n: usize) -> (Vec<Bytes>, usize) {
    let (recs, manifest) = plan_records(&GenOptions {
        traces: n,
        ..Default::default()
    });
    let spans = manifest.traces.iter().map(|t| t.spans).sum();
    (
        recs.into_iter().map(|r| Bytes::from(r.value)).collect(),
        spans,
    )
}

fn bench(c: &mut Criterion) {
    let (recs, spans) = records(2000);
    let bytes: usize = recs.iter().map(|r| r.len()).sum();
    eprintln!(
        "corpus: {} records, {spans} spans, {:.0} B/span",
        recs.len(),
        bytes as f64 / spans as f64
    );
    let cfg = Config::parse(SEED_POLICIES).unwrap();
    let sampler = Sampler::build(&cfg.policies).unwrap();

    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(spans as u64));
    g.bench_function("full_prost", |b| {
        b.iter(|| {
            let mut n = 0;
            for r in &recs {
                let req = ExportTraceServiceRequest::decode(r.clone()).unwrap();
                n += req.resource_spans.len();
            }
            n
        })
    });
    g.bench_function("lazy_scan", |b| {
        let mut out: Vec<ScannedSpan> = Vec::with_capacity(64);
        b.iter(|| {
            let mut n = 0;
            for r in &recs {
                otlp::scan_request_into(r, sampler.probe(), 0, &mut out).unwrap();
                n += out.len();
            }
            n
        })
    });
    // As a partition reads: checked resources remembered (`otlp::ResourceCache`).
    g.bench_function("lazy_scan_cached", |b| {
        let mut out: Vec<ScannedSpan> = Vec::with_capacity(64);
        let mut cache = otlp::ResourceCache::default();
        b.iter(|| {
            let mut n = 0;
            for r in &recs {
                otlp::scan_record_cached(
                    r,
                    otlp::Encoding::OtlpProto,
                    sampler.probe(),
                    0,
                    Some(&mut cache),
                    &mut out,
                )
                .unwrap();
                n += out.len();
            }
            n
        })
    });
    g.finish();

    let mut g = c.benchmark_group("sampler_core");
    g.throughput(Throughput::Elements(spans as u64));
    g.bench_function("scan_buffer_decide", |b| {
        let limits = StoreLimits::from(&StoreConfig::default());
        b.iter_batched(
            || TraceStore::new(limits.clone()),
            |mut store| {
                let mut out: Vec<ScannedSpan> = Vec::with_capacity(64);
                let mut ahead = Vec::with_capacity(64);
                let now = StreamTime::ZERO;
                for (offset, r) in recs.iter().enumerate() {
                    otlp::scan_request_into(r, sampler.probe(), 0, &mut out).unwrap();
                    tracesift::store::ahead(&out, &mut ahead);
                    for (s, &a) in out.iter().zip(&ahead) {
                        let a = store.add(s.trace_id, &s.meta, &s.span, offset as i64, a, now);
                        debug_assert!(matches!(a, Admit::Buffered { .. }));
                    }
                    store.end_record();
                }
                let mut due = Vec::new();
                store.poll_due(now + Duration::from_secs(3600), &mut due);
                let mut kept = 0;
                for t in &due {
                    let d =
                        sampler.decide(t.trace_id, &t.summary, tracesift::clock::StreamTime::ZERO);
                    store.remember(t.trace_id, d, now);
                    kept += usize::from(d.keep);
                }
                kept
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();

    // Policy evaluation alone, per trace: summaries collected once per configuration (each
    // configuration has its own leaves), then every trace decided.
    let mut g = c.benchmark_group("decide");
    g.throughput(Throughput::Elements(recs.len() as u64));
    for (name, yaml) in [
        ("seed_tiers", SEED_TIERS),
        ("seed_policies", SEED_POLICIES),
        ("twenty_policies", TWENTY_POLICIES),
    ] {
        let cfg = Config::parse(yaml).unwrap();
        let sampler = Sampler::from_config(&cfg).unwrap();
        let mut store = TraceStore::new(StoreLimits::from(&StoreConfig::default()));
        let mut out: Vec<ScannedSpan> = Vec::new();
        for (offset, r) in recs.iter().enumerate() {
            otlp::scan_request_into(r, sampler.probe(), 0, &mut out).unwrap();
            for s in out.drain(..) {
                store.add(
                    s.trace_id,
                    &s.meta,
                    &s.span,
                    offset as i64,
                    0,
                    StreamTime::ZERO,
                );
            }
        }
        let mut due = Vec::new();
        store.poll_due(StreamTime::ZERO + Duration::from_secs(3600), &mut due);
        let traces: Vec<_> = due.iter().map(|t| (t.trace_id, t.summary)).collect();
        let mut tick = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                tick += 1;
                let now = StreamTime::from_millis(tick * 1000);
                traces
                    .iter()
                    .filter(|(id, s)| sampler.decide(*id, s, now).keep)
                    .count()
            })
        });
    }
    g.finish();

    // Kept traces for the emit benchmarks: everything, so the cost is per emitted span.
    let mut all = Vec::new();
    let mut out = Vec::new();
    for r in &recs {
        otlp::scan_request_into(r, sampler.probe(), 0, &mut out).unwrap();
        all.append(&mut out);
    }
    let mut g = c.benchmark_group("emit");
    g.throughput(Throughput::Elements(spans as u64));
    g.bench_function("splice", |b| {
        b.iter(|| {
            let mut total = 0;
            for chunk in all.chunk_by(|a, b| a.trace_id == b.trace_id) {
                total += otlp::encode_request(chunk.iter().map(|s| &s.span)).len();
            }
            total
        })
    });
    g.bench_function("mark", |b| {
        let mark =
            otlp::SamplingMark::new(otlp::threshold::Threshold::from_raw(1 << 55), "default");
        b.iter(|| {
            all.iter()
                .map(|s| otlp::mark_span(&s.span.bytes, &mark).unwrap().len())
                .sum::<usize>()
        })
    });
    g.finish();

    // An OTTL condition on every span (issue target: <= 100 ns per span per condition).
    let ottl = Config::parse(OTTL_POLICY).unwrap();
    let ottl = Sampler::build(&ottl.policies).unwrap();
    let mut g = c.benchmark_group("ottl");
    g.throughput(Throughput::Elements(spans as u64));
    let matched = all
        .iter()
        .filter(|s| otlp::with_span_input(&s.span, |i| ottl.probe().span(i)) & 1 != 0)
        .count();
    eprintln!("ottl: the condition holds on {matched} of {spans} spans");
    // The cost in the pipeline's path: the scan with the condition's whole-span leaf against
    // the same scan without it, back to back (the spans are in cache, as when scanned).
    g.bench_function("lazy_scan_baseline", |b| {
        let mut out: Vec<ScannedSpan> = Vec::with_capacity(64);
        b.iter(|| scan_each(&recs, &otlp::NoProbe, &mut out, |_| {}))
    });
    g.bench_function("lazy_scan_with_condition", |b| {
        let mut out: Vec<ScannedSpan> = Vec::with_capacity(64);
        b.iter(|| scan_each(&recs, ottl.probe(), &mut out, |_| {}))
    });
    // The condition alone on buffered spans (cold: the corpus is larger than the caches).
    g.bench_function("condition_buffered", |b| {
        b.iter(|| {
            all.iter()
                .map(|s| otlp::with_span_input(&s.span, |i| ottl.probe().span(i)))
                .fold(0u128, |a, b| a | b)
        })
    });
    g.finish();

    // RED metrics (issue target: <= 60 ns per span for the span metrics).
    let by_record: Vec<Vec<ScannedSpan>> = recs
        .iter()
        .map(|r| {
            let mut out = Vec::new();
            otlp::scan_request_into(r, &otlp::NoProbe, 0, &mut out).unwrap();
            out
        })
        .collect();
    let by_trace: Vec<(otlp::TraceId, Vec<otlp::SpanRef>)> = all
        .chunk_by(|a, b| a.trace_id == b.trace_id)
        .map(|t| (t[0].trace_id, t.iter().map(|s| s.span.clone()).collect()))
        .collect();
    let on = SpanMetricsConfig {
        enabled: true,
        ..Default::default()
    };
    let graph_on = ServiceGraphConfig {
        enabled: true,
        ..Default::default()
    };
    let mut g = c.benchmark_group("red");
    g.throughput(Throughput::Elements(spans as u64));
    let spans_only = span_metrics::install(&on, &ServiceGraphConfig::default()).unwrap();
    // The cost in the pipeline's path: each record scanned and then counted, against the
    // scan alone, back to back (the record's bytes in cache, as after the scan).
    g.bench_function("lazy_scan_baseline", |b| {
        let mut out: Vec<ScannedSpan> = Vec::with_capacity(64);
        b.iter(|| scan_each(&recs, &otlp::NoProbe, &mut out, |_| {}))
    });
    g.bench_function("lazy_scan_then_span_metrics", |b| {
        let mut out: Vec<ScannedSpan> = Vec::with_capacity(64);
        b.iter(|| {
            scan_each(&recs, &otlp::NoProbe, &mut out, |s| {
                spans_only.observe(s, 1)
            })
        })
    });
    // The table alone on spans scanned before (cold: the corpus is larger than the caches).
    g.bench_function("span_metrics_cold", |b| {
        b.iter(|| {
            for r in &by_record {
                spans_only.observe(r, 1);
            }
        })
    });
    g.bench_function("kept_estimates_and_exemplars", |b| {
        b.iter(|| {
            for (id, t) in &by_trace {
                spans_only.kept(*id, t, 2.0, 1);
            }
        })
    });
    let graph_only = span_metrics::install(&SpanMetricsConfig::default(), &graph_on).unwrap();
    g.bench_function("service_graph_per_trace", |b| {
        b.iter(|| {
            for (id, t) in &by_trace {
                graph_only.decided(*id, t, false, 0.0, 1);
            }
        })
    });
    span_metrics::install(
        &SpanMetricsConfig::default(),
        &ServiceGraphConfig::default(),
    );
    g.finish();

    let mut g = c.benchmark_group("emit");
    g.throughput(Throughput::Elements(spans as u64));
    let policy: Arc<str> = Arc::from("default");
    let kept: Vec<KeptSpan> = all
        .iter()
        .map(|s| KeptSpan {
            trace_id: s.trace_id,
            span: s.span.clone(),
            policy: Arc::clone(&policy),
            threshold: otlp::threshold::Threshold::ALWAYS,
        })
        .collect();
    g.sample_size(10);
    g.bench_function("parquet", |b| {
        b.iter(|| encode_segment(&kept, 1 << 20).unwrap().len())
    });
    // The same spans in segments of 1,000 (hot segments are cut per partition and flush
    // interval): the difference is what each file costs beside its rows.
    g.bench_function("parquet_files_of_1000", |b| {
        b.iter(|| {
            kept.chunks(1000)
                .map(|c| encode_segment(c, 1 << 20).unwrap().len())
                .sum::<usize>()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
