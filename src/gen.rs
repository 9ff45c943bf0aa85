//! Realistic OTLP load: the source for demos, tests and benchmarks.
//!
//! Each trace is a request through a small shop: a `frontend` server span for a route, client
//! spans to downstream services (HTTP and gRPC), their server spans, internal work and database
//! calls, 3–25 spans across 2–6 services. Resources carry ~10 attributes (service, version,
//! instance, host, k8s namespace / pod / deployment, SDK); spans carry semantic-convention
//! attributes (http, db, rpc; some services still use the old key names). A few traces fail deep
//! in the tree (error status plus an exception event), a few have slow roots, and trace ids are
//! random 128-bit values.
//!
//! Two producer styles are planned by [`plan_records`]:
//! - **keyed**: one record per trace, key = trace id (the Collector kafkaexporter with
//!   `partition_traces_by_id`);
//! - **split**: each trace's spans over several records, shuffled within a window so traces
//!   interleave and arrive out of order, some held back to arrive seconds after the first.
//!
//! [`Manifest`] records what was generated, so tests can assert on it.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::clock::{Clock, MonoTime};
use crate::otlp::TraceId;

mod model;
mod produce;

#[allow(unused_imports)]
use self::model::*;
pub use self::model::{encode_spans, generate_trace, ROUTES};
pub use self::produce::{produce, Produced};

/// Generator settings.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// Traces to generate.
    pub traces: usize,
    /// Random seed (the same seed gives the same traces, ids included).
    pub seed: u64,
    /// Fraction of traces with an error span.
    pub error_rate: f64,
    /// Fraction of traces whose root is slower than 500 ms.
    pub slow_rate: f64,
    /// Split traces over several records.
    pub split: bool,
    /// In split mode: fraction of records held back.
    pub late_fraction: f64,
    /// In split mode: how long held-back records wait.
    pub late_delay: Duration,
    /// Wall-clock start of the first trace, Unix ns.
    pub start_ns: u64,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            traces: 1000,
            seed: 1,
            error_rate: 0.03,
            slow_rate: 0.05,
            split: false,
            late_fraction: 0.1,
            late_delay: Duration::from_secs(2),
            start_ns: 1_700_000_000_000_000_000,
        }
    }
}

/// What was generated for one trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceFacts {
    /// Trace id.
    pub trace_id: TraceId,
    /// Number of spans.
    pub spans: usize,
    /// Some span has status ERROR.
    pub has_error: bool,
    /// Duration of the trace (earliest start to latest end), ms.
    pub duration_ms: f64,
    /// The root's route.
    pub route: &'static str,
}

/// Ground truth of a generated load.
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    /// One entry per trace, in generation order.
    pub traces: Vec<TraceFacts>,
}

/// One planned Kafka record.
#[derive(Debug, Clone)]
pub struct PlannedRecord {
    /// Key (trace id hex).
    pub key: String,
    /// OTLP protobuf value.
    pub value: Vec<u8>,
    /// Hold this record back by this much (split mode).
    pub delay: Duration,
}

/// Generates `opts.traces` traces and plans their records in the chosen producer style.
pub fn plan_records(opts: &GenOptions) -> (Vec<PlannedRecord>, Manifest) {
    let mut rng = SmallRng::seed_from_u64(opts.seed);
    let mut manifest = Manifest::default();
    let mut records = Vec::new();
    let mut window: Vec<PlannedRecord> = Vec::new();
    for i in 0..opts.traces {
        let start = opts.start_ns + (i as u64) * 1_000_000;
        let (spans, facts) = generate_trace(&mut rng, start, opts);
        let key = facts.trace_id.to_hex();
        let instance = rng.random_range(0..64);
        if !opts.split || spans.len() < 2 {
            records.push(PlannedRecord {
                key,
                value: encode_spans(&spans, instance),
                delay: Duration::ZERO,
            });
        } else {
            let parts = rng.random_range(2..=spans.len().min(4));
            let mut shuffled = spans;
            // Out of order: the root is not necessarily first.
            for j in (1..shuffled.len()).rev() {
                let k = rng.random_range(0..=j);
                shuffled.swap(j, k);
            }
            let per = shuffled.len().div_ceil(parts);
            for chunk in shuffled.chunks(per) {
                let late = rng.random_bool(opts.late_fraction.clamp(0.0, 1.0));
                window.push(PlannedRecord {
                    key: key.clone(),
                    value: encode_spans(chunk, instance),
                    delay: if late {
                        opts.late_delay
                    } else {
                        Duration::ZERO
                    },
                });
            }
        }
        manifest.traces.push(facts);
        if window.len() >= 64 || i + 1 == opts.traces {
            // Interleave the records of neighbouring traces.
            for j in (1..window.len()).rev() {
                let k = rng.random_range(0..=j);
                window.swap(j, k);
            }
            records.append(&mut window);
        }
    }
    (records, manifest)
}

/// The spans of generated records as the archive would hold them if the traces were kept: error
/// traces under policy `errors` (threshold 0, adjusted count 1), the rest under `default` at
/// 10% (adjusted count 10), each span marked as the pipeline marks it. For archive tests and the archive benchmark, which need realistic
/// Parquet without running the pipeline.
pub fn kept_spans(
    records: &[PlannedRecord],
    manifest: &Manifest,
) -> Result<Vec<crate::archive::KeptSpan>, crate::otlp::DecodeError> {
    let errors: std::collections::HashSet<TraceId> = manifest
        .traces
        .iter()
        .filter(|t| t.has_error)
        .map(|t| t.trace_id)
        .collect();
    let (err, default): (Arc<str>, Arc<str>) = (Arc::from("errors"), Arc::from("default"));
    let ten_percent = crate::otlp::threshold::Threshold::from_raw((1u64 << 56) / 10 * 9);
    let mut out = Vec::new();
    let mut scanned = Vec::new();
    for r in records {
        crate::otlp::scan_request_into(
            &bytes::Bytes::from(r.value.clone()),
            &crate::otlp::NoProbe,
            0,
            &mut scanned,
        )?;
        for s in scanned.drain(..) {
            let is_err = errors.contains(&s.trace_id);
            let (policy, threshold) = if is_err {
                (&err, crate::otlp::threshold::Threshold::ALWAYS)
            } else {
                (&default, ten_percent)
            };
            // Marked as the pipeline marks kept spans (tracestate `ot=th`, policy and adjusted
            // count attributes), so the archive holds what a real run writes.
            let mark = crate::otlp::SamplingMark::new(threshold, policy);
            let mut span = s.span;
            span.bytes = bytes::Bytes::from(crate::otlp::mark_span(&span.bytes, &mark)?);
            out.push(crate::archive::KeptSpan {
                trace_id: s.trace_id,
                span,
                policy: Arc::clone(policy),
                threshold,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{scan_request_into, NoProbe};

    #[test]
    fn traces_are_realistic_and_reproducible() {
        let opts = GenOptions {
            traces: 2000,
            ..Default::default()
        };
        let (records, manifest) = plan_records(&opts);
        assert_eq!(records.len(), 2000);
        let (again, _) = plan_records(&opts);
        assert_eq!(records[7].value, again[7].value, "same seed, same bytes");
        let spans: usize = manifest.traces.iter().map(|t| t.spans).sum();
        let bytes: usize = records.iter().map(|r| r.value.len()).sum();
        let per_span = bytes as f64 / spans as f64;
        assert!((250.0..900.0).contains(&per_span), "bytes/span {per_span}");
        assert!(manifest.traces.iter().all(|t| (1..=30).contains(&t.spans)));
        let errors = manifest.traces.iter().filter(|t| t.has_error).count();
        let slow = manifest
            .traces
            .iter()
            .filter(|t| t.duration_ms > 500.0)
            .count();
        assert!((20..120).contains(&errors), "errors {errors}");
        assert!((50..180).contains(&slow), "slow {slow}");
        for r in ROUTES {
            assert!(
                manifest.traces.iter().any(|t| t.route == r.0),
                "route {} missing",
                r.0
            );
        }
        // Every record scans, and every span of a record belongs to its keyed trace.
        let mut out = Vec::new();
        for r in &records {
            scan_request_into(&bytes::Bytes::from(r.value.clone()), &NoProbe, 0, &mut out).unwrap();
            assert!(out.iter().all(|s| s.trace_id.to_hex() == r.key));
            assert_eq!(out.iter().filter(|s| s.meta.is_root).count(), 1);
        }
    }

    #[test]
    fn split_mode_spreads_and_interleaves() {
        let opts = GenOptions {
            traces: 300,
            split: true,
            late_fraction: 0.2,
            ..Default::default()
        };
        let (records, manifest) = plan_records(&opts);
        assert!(records.len() > 300 * 3 / 2, "{} records", records.len());
        assert!(records.iter().any(|r| r.delay > Duration::ZERO));
        // Not in generation order.
        let order: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
        let first = manifest.traces[0].trace_id.to_hex();
        let pos = order.iter().position(|k| *k == first).unwrap();
        assert!(order.iter().skip(pos + 1).take(64).any(|k| *k != first));
        let mut total = 0;
        let mut out = Vec::new();
        for r in &records {
            scan_request_into(&bytes::Bytes::from(r.value.clone()), &NoProbe, 0, &mut out).unwrap();
            total += out.len();
        }
        assert_eq!(
            total,
            manifest.traces.iter().map(|t| t.spans).sum::<usize>()
        );
    }
}
