//! The dry-run engine: the configured policies on a sample of real traffic, through the
//! service's own [`PartitionCore`] per partition, writing nothing (`tracesift dry-run` in
//! `cli/dry_run.rs` reads the sample).
//!
//! Reads each input partition from its beginning (or the last `--records` per partition) with
//! a consumer of its own that never commits, groups spans into traces with the same store and
//! timers as the service (in record time, so split and late traces behave as in production),
//! decides them, and reports per policy: traces and spans matched and kept, effective keep rate,
//! bytes kept, and the daily volume projected from the rate observed in the sample. This is the
//! seed's case-4 cost table, from the user's own traffic, before deploying.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::clock::MonoTime;
use crate::config::Config;
use crate::otlp::Encoding;
use crate::otlp::{self, ScannedSpan};
use crate::pipeline::core::{CoreSettings, Effect, PartitionCore};
use crate::pipeline::RunStats;
use crate::sample::Sampler;
use crate::source::record::Record;
use crate::store::StoreLimits;

/// Per-policy figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyRow {
    /// Policy (or tier) name.
    pub name: String,
    /// Traces the policy (or tier condition) matched.
    pub matched_traces: u64,
    /// Traces kept with this policy as the deciding one.
    pub kept_traces: u64,
    /// Spans of those traces (late spans included).
    pub kept_spans: u64,
    /// Encoded span bytes of those traces.
    pub kept_bytes: u64,
}

/// How often one `ottl_condition` condition held in the sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConditionRow {
    /// The policy's name.
    pub policy: String,
    /// `span[i]` or `spanevent[i]`.
    pub which: String,
    /// The condition as written.
    pub text: String,
    /// Spans it held on (for a span-event condition: spans with an event it held on).
    pub spans: u64,
    /// Distinct traces with such a span.
    pub traces: u64,
}

/// The dry-run report.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Records read.
    pub records: u64,
    /// Records that were not OTLP.
    pub malformed: u64,
    /// Spans read.
    pub spans: u64,
    /// Span bytes read.
    pub bytes: u64,
    /// Traces decided.
    pub traces: u64,
    /// Traces kept.
    pub kept_traces: u64,
    /// One row per policy, in configuration order.
    pub policies: Vec<PolicyRow>,
    /// One row per `ottl_condition` condition, in configuration order.
    pub conditions: Vec<ConditionRow>,
    /// Time covered by the sample's spans (earliest start to latest end), seconds.
    pub window_secs: f64,
}

impl Report {
    fn per_day(&self, bytes: u64) -> f64 {
        bytes as f64 / self.window_secs.max(1.0) * 86_400.0
    }
}

fn gb(b: f64) -> String {
    format!("{:.3}", b / 1e9)
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept_bytes: u64 = self.policies.iter().map(|p| p.kept_bytes).sum();
        writeln!(
            f,
            "sample: {} records ({} malformed), {} spans, {} traces, {:.1} MB, spanning {:.0} s of span time",
            self.records,
            self.malformed,
            self.spans,
            self.traces,
            self.bytes as f64 / 1e6,
            self.window_secs
        )?;
        writeln!(
            f,
            "{:<24} {:>9} {:>9} {:>10} {:>9} {:>10} {:>12}",
            "policy", "matched", "kept", "kept spans", "keep %", "kept MB", "GB/day proj."
        )?;
        for p in &self.policies {
            let rate = if p.matched_traces == 0 {
                0.0
            } else {
                100.0 * p.kept_traces as f64 / p.matched_traces as f64
            };
            writeln!(
                f,
                "{:<24} {:>9} {:>9} {:>10} {:>8.1}% {:>10.2} {:>12}",
                p.name,
                p.matched_traces,
                p.kept_traces,
                p.kept_spans,
                rate,
                p.kept_bytes as f64 / 1e6,
                gb(self.per_day(p.kept_bytes))
            )?;
        }
        let keep = if self.traces == 0 {
            0.0
        } else {
            100.0 * self.kept_traces as f64 / self.traces as f64
        };
        writeln!(
            f,
            "{:<24} {:>9} {:>9} {:>10} {:>8.1}% {:>10.2} {:>12}",
            "total",
            self.traces,
            self.kept_traces,
            self.policies.iter().map(|p| p.kept_spans).sum::<u64>(),
            keep,
            kept_bytes as f64 / 1e6,
            gb(self.per_day(kept_bytes))
        )?;
        if !self.conditions.is_empty() {
            writeln!(f, "ottl_condition matches (each condition on its own):")?;
            for c in &self.conditions {
                writeln!(
                    f,
                    "  {:<20} {:<13} {:>9} spans {:>9} traces  {}",
                    c.policy, c.which, c.spans, c.traces, c.text
                )?;
            }
        }
        write!(
            f,
            "input {} GB/day, kept {} GB/day: {:.1}% of the bytes",
            gb(self.per_day(self.bytes)),
            gb(self.per_day(kept_bytes)),
            100.0 * kept_bytes as f64 / self.bytes.max(1) as f64
        )
    }
}

/// Folds record-time traffic into one [`PartitionCore`] per partition (the service's own
/// logic, without sinks) and decides it in record time.
pub struct DryRun {
    sampler: Arc<Sampler>,
    names: Arc<[Arc<str>]>,
    settings: CoreSettings,
    cores: BTreeMap<(String, i32), (PartitionCore, i64)>,
    stats: Arc<RunStats>,
    effects: Vec<Effect>,
    report: Report,
    scratch: Vec<ScannedSpan>,
    /// Per condition row, the traces it held on.
    condition_traces: Vec<std::collections::HashSet<otlp::TraceId>>,
    min_start: u64,
    max_end: u64,
}

impl DryRun {
    /// A dry run of `cfg`'s policies.
    pub fn new(cfg: &Config) -> Result<DryRun, crate::config::ConfigErrors> {
        let sampler = Sampler::from_config(cfg).map_err(crate::config::ConfigErrors)?;
        let names = cfg.policy_names();
        let mut conditions = Vec::new();
        for (policy, span, events) in sampler.probe().conditions() {
            for (list, texts) in [("span", span), ("spanevent", events)] {
                for (i, text) in texts.into_iter().enumerate() {
                    conditions.push(ConditionRow {
                        policy: policy.to_string(),
                        which: format!("{list}[{i}]"),
                        text: text.to_string(),
                        ..Default::default()
                    });
                }
            }
        }
        Ok(DryRun {
            condition_traces: vec![Default::default(); conditions.len()],
            sampler: Arc::new(sampler),
            names: names.iter().map(|n| Arc::from(n.as_str())).collect(),
            settings: CoreSettings {
                limits: StoreLimits::from(&cfg.store),
                sinks: 0,
                decision_log: false,
                commit_interval: Duration::MAX,
                tick: cfg.store.tick,
                tally: true,
                max_record_bytes: cfg.kafka.max_record_bytes.0 as usize,
                span_metrics: None,
            },
            cores: BTreeMap::new(),
            stats: Arc::new(RunStats::new()),
            effects: Vec::new(),
            report: Report {
                policies: names
                    .into_iter()
                    .map(|name| PolicyRow {
                        name,
                        ..Default::default()
                    })
                    .collect(),
                conditions,
                ..Default::default()
            },
            scratch: Vec::new(),
            min_start: u64::MAX,
            max_end: 0,
        })
    }

    /// One record stamped `ts_ms` (Unix ms), read at `wall_ms`.
    pub fn record(
        &mut self,
        topic: &str,
        partition: i32,
        ts_ms: u64,
        wall_ms: u64,
        payload: &Bytes,
        enc: Encoding,
    ) {
        // Span bytes and the sample's time window, from the spans themselves (the core reads
        // them again).
        let mut scratch = std::mem::take(&mut self.scratch);
        if otlp::scan_record(payload, enc, self.sampler.probe(), ts_ms, &mut scratch).is_ok() {
            for s in scratch.drain(..) {
                self.report.bytes += u64::from(s.meta.size);
                self.count_conditions(&s);
                if s.meta.start_ns == 0 {
                    continue;
                }
                self.min_start = self.min_start.min(s.meta.start_ns);
                self.max_end = self.max_end.max(s.meta.end_ns);
            }
        }
        self.scratch = scratch;
        let key = (topic.to_string(), partition);
        let (core, next_offset) = self.cores.entry(key).or_insert_with(|| {
            (
                PartitionCore::new(
                    Arc::from(topic),
                    partition,
                    self.settings.clone(),
                    Arc::clone(&self.sampler),
                    Arc::clone(&self.names),
                    Arc::clone(&self.stats),
                ),
                0,
            )
        });
        // Records drive stream time, as in the service while it reads.
        let rec = Record {
            offset: *next_offset,
            key: None,
            payload: Some(payload.clone()),
            encoding: enc,
            timestamp_ms: i64::try_from(ts_ms).ok(),
            headers: Vec::new(),
            fetched: MonoTime::ZERO,
        };
        *next_offset += 1;
        core.ingest(rec, wall_ms, &mut self.effects);
        core.tick(MonoTime::ZERO, false, &mut self.effects);
        // Nothing is written: every write is acknowledged at once.
        for e in self.effects.drain(..) {
            core.acked(e.offsets());
        }
    }

    /// Counts, for each `ottl_condition` condition on its own, whether it holds on this span.
    fn count_conditions(&mut self, s: &ScannedSpan) {
        if self.report.conditions.is_empty() {
            return;
        }
        let hits =
            otlp::with_span_input(&s.span, |input| self.sampler.probe().condition_hits(input));
        let flat = hits
            .into_iter()
            .flat_map(|(_, span, events)| span.into_iter().chain(events));
        for ((row, traces), hit) in self
            .report
            .conditions
            .iter_mut()
            .zip(&mut self.condition_traces)
            .zip(flat)
        {
            if hit {
                row.spans += 1;
                if traces.insert(s.trace_id) {
                    row.traces += 1;
                }
            }
        }
    }

    /// Decides every trace still buffered and returns the report. The end of the sample is
    /// the end of the log: stream time follows (simulated) ticks from there, as in the
    /// service, so traces are decided when and as `run` would decide them.
    pub fn finish(mut self) -> Report {
        let limits = &self.settings.limits;
        let tick = self.settings.tick.max(Duration::from_millis(1));
        let longest = limits.max_trace_age + limits.decision_wait + tick * 2;
        let steps = (longest.as_millis() / tick.as_millis()).max(1) as u64 + 1;
        for (core, _) in self.cores.values_mut() {
            let mut wall = MonoTime::ZERO;
            for _ in 0..=steps {
                if core.buffered() == 0 {
                    break;
                }
                core.tick(wall, true, &mut self.effects);
                wall = wall + tick;
            }
            for e in self.effects.drain(..) {
                core.acked(e.offsets());
            }
            for (row, t) in self.report.policies.iter_mut().zip(core.tallies()) {
                row.matched_traces += t.matched_traces;
                row.kept_traces += t.kept_traces;
                row.kept_spans += t.kept_spans;
                row.kept_bytes += t.kept_bytes;
            }
        }
        let st = &self.stats;
        let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        self.report.records = n(&st.records);
        self.report.malformed = n(&st.dead_letters);
        self.report.spans = n(&st.spans);
        self.report.traces = st.traces_decided();
        self.report.kept_traces = st.traces_kept();
        if self.max_end > self.min_start {
            self.report.window_secs = (self.max_end - self.min_start) as f64 / 1e9;
        }
        self.report
    }
}
