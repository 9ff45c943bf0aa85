//! The functional core of one partition: every decision about its records, no I/O.
//!
//! A [`PartitionCore`] owns the partition's trace store, its offset watermark, the late-span
//! buffers and the reference protocol that ties them together. It is a plain synchronous struct:
//! no Kafka client, no runtime, no clock reads. The shell ([`super::task`]) feeds it records and
//! ticks with the time they happen at, carries out the [`Effect`]s it returns (sink writes, dead
//! letters, decision-log records) and hands each completed write's offsets back through
//! [`PartitionCore::acked`]. `dry-run` drives the same core without a shell.
//!
//! The reference protocol (the invariant everything else rests on):
//! - every record read is *observed* by the watermark;
//! - a record holds one reference per buffered trace it contributed spans to;
//! - deciding a trace hands its references on: a drop without a decision log releases them; a
//!   keep turns each into one reference per sink ([`Effect::Emit`] carries the offsets, and each
//!   sink releases them once when its write is durable); with the decision log on, the log record
//!   ([`Effect::LogDecision`]) holds one more reference per offset, so a record is never resolved
//!   before its trace's decision is durable;
//! - late spans of a kept trace take one reference on their record per sink;
//! - an unreadable record holds one reference until its dead letter is written.
//!
//! The commit point ([`PartitionCore::periodic`], [`PartitionCore::commit_point`]) is the watermark's lowest unresolved
//! offset, so it never passes an offset with an effect still unacknowledged.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::clock::{MonoTime, StreamTime};
use crate::otlp::{self, ScannedSpan, SpanRef, TraceId};
use crate::sample::{Decision, PolicyId, Sampler, Threshold};
use crate::source::record::{Headers, Record};
use crate::source::watermark::Watermark;
use crate::store::{Admit, DueTrace, StoreLimits, StoreStats, TraceMap, TraceStore};
use crate::telemetry::{self, Outcome};

use super::stream_time::StreamClock;
use crate::sink::kept::KeptTrace;
use crate::telemetry::run::{DecidedKey, RunStats};

/// Something the shell must do; each effect holds watermark references that its
/// acknowledgement releases through [`PartitionCore::acked`] with [`Effect::offsets`].
#[derive(Debug, Clone)]
pub enum Effect {
    /// Write kept spans to every sink (each sink acknowledges the offsets once).
    Emit(KeptTrace),
    /// Write an unreadable record's original bytes to the dead-letter topic.
    DeadLetter {
        /// The record's offset (one reference).
        offset: i64,
        /// Its key.
        key: Option<Bytes>,
        /// Its headers.
        headers: Headers,
        /// Its original bytes.
        payload: Bytes,
        /// Why it could not be read.
        error: String,
    },
    /// Write a decision to the decision log (one reference per offset).
    LogDecision {
        /// Trace id.
        trace_id: TraceId,
        /// The decision, as the log holds it.
        decided: Decided,
        /// Record offsets the decision resolves.
        offsets: Vec<i64>,
    },
}

impl Effect {
    /// The offsets whose references one acknowledgement of this effect releases.
    pub fn offsets(&self) -> &[i64] {
        match self {
            Effect::Emit(e) => &e.offsets,
            Effect::DeadLetter { offset, .. } => std::slice::from_ref(offset),
            Effect::LogDecision { offsets, .. } => offsets,
        }
    }
}

/// A decision made for a trace, in one shape end to end: the core logs it
/// ([`Effect::LogDecision`]), the decision log writes and reads it back, the restore hands it to
/// [`PartitionCore::restore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// Keep or drop.
    pub keep: bool,
    /// The stage's rejection threshold (OTEP 235; 0 for rule keeps).
    pub threshold: Threshold,
    /// The deciding policy's name (empty when no policy matched).
    pub policy: Arc<str>,
    /// When it was made: the deciding partition's stream time, Unix ms.
    pub decided_at_ms: u64,
}

/// The static settings of a core.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    /// Store limits and timers.
    pub limits: StoreLimits,
    /// Number of hot sinks each kept span goes to.
    pub sinks: u32,
    /// Whether decisions are written to the decision log.
    pub decision_log: bool,
    /// How often a new commit point is published.
    pub commit_interval: Duration,
    /// The tick: the largest step stream time takes per tick while caught up.
    pub tick: Duration,
    /// Keep per-policy tallies ([`PartitionCore::tallies`]; dry-run's report).
    pub tally: bool,
    /// Records larger than this go to the dead-letter topic unread.
    pub max_record_bytes: usize,
    /// The span-metrics table every span read is counted in (`telemetry.span_metrics`).
    pub span_metrics: Option<Arc<crate::telemetry::span_metrics::Recorder>>,
}

/// What one top-level policy (or tier) did on a partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyTally {
    /// Traces the policy matched (see [`Sampler::decide_matching`]).
    pub matched_traces: u64,
    /// Traces kept with this policy deciding.
    pub kept_traces: u64,
    /// Spans kept with this policy deciding (late spans included).
    pub kept_spans: u64,
    /// Encoded bytes of those spans.
    pub kept_bytes: u64,
}

/// Gauges of one partition core.
#[derive(Debug, Clone, Copy, Default)]
pub struct CoreGauges {
    /// The store's gauges and counters.
    pub store: StoreStats,
    /// Offsets with unresolved references.
    pub unresolved: usize,
    /// Bytes of the resources the partition's probe has checked and remembers.
    pub resource_cache_bytes: usize,
}

/// What is due once per commit interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Periodic {
    /// A new commit point, when it moved.
    pub commit: Option<i64>,
}

/// One partition's state and logic.
pub struct PartitionCore {
    topic: Arc<str>,
    partition: i32,
    settings: CoreSettings,
    store: TraceStore,
    watermark: Watermark,
    sampler: Arc<Sampler>,
    policy_names: Arc<[Arc<str>]>,
    stats: Arc<RunStats>,
    scratch: Vec<ScannedSpan>,
    /// Per span of the record being read: what its trace's next spans in it add
    /// ([`crate::store::ahead`]).
    ahead: Vec<usize>,
    /// Resources this partition's probe has checked already.
    resources: otlp::ResourceCache,
    due: Vec<DueTrace>,
    late: Vec<(TraceId, Decision, Vec<SpanRef>)>,
    late_index: TraceMap<usize>,
    next_commit: MonoTime,
    clock: StreamClock,
    /// Per-policy tallies and the per-decision match scratch (empty unless `settings.tally`).
    tallies: Vec<PolicyTally>,
    matched: Vec<bool>,
    /// The next offset to read: every record below it was read (and its spans counted).
    read_position: Option<i64>,
    /// Records below this were counted in the span metrics by an earlier owner (restored
    /// from the decision log); they are not counted again.
    counted_through: i64,
    histograms: telemetry::PartitionHistograms,
}

impl PartitionCore {
    /// The histograms this partition records into.
    pub fn histograms(&self) -> &telemetry::PartitionHistograms {
        &self.histograms
    }

    /// An empty core for `topic`/`partition` deciding with `sampler`.
    pub fn new(
        topic: Arc<str>,
        partition: i32,
        settings: CoreSettings,
        sampler: Arc<Sampler>,
        policy_names: Arc<[Arc<str>]>,
        stats: Arc<RunStats>,
    ) -> Self {
        let clock = StreamClock::new(settings.tick);
        PartitionCore {
            topic,
            partition,
            store: TraceStore::new(settings.limits.clone()),
            settings,
            watermark: Watermark::new(),
            sampler,
            policy_names,
            stats,
            scratch: Vec::new(),
            ahead: Vec::new(),
            resources: otlp::ResourceCache::default(),
            due: Vec::new(),
            late: Vec::new(),
            late_index: TraceMap::default(),
            next_commit: MonoTime::ZERO,
            clock,
            tallies: Vec::new(),
            matched: Vec::new(),
            read_position: None,
            histograms: telemetry::PartitionHistograms::default(),
            counted_through: 0,
        }
    }

    /// Whether spans read are counted in the span metrics.
    pub fn counts_spans(&self) -> bool {
        self.settings.span_metrics.is_some()
    }

    /// The next offset to read (`None` before the first record).
    pub fn read_position(&self) -> Option<i64> {
        self.read_position
    }

    /// Records below `offset` were counted by an earlier owner: they are read as usual but
    /// not counted in the span metrics again.
    pub fn set_counted_through(&mut self, offset: i64) {
        self.counted_through = offset;
    }

    /// Per-policy tallies, in configuration order (empty unless `tally` is set).
    pub fn tallies(&self) -> &[PolicyTally] {
        &self.tallies
    }

    fn tally(&mut self, d: &Decision) -> Option<&mut PolicyTally> {
        if !self.settings.tally {
            return None;
        }
        let p = usize::from(d.policy?);
        if self.tallies.len() <= p {
            self.tallies
                .resize(self.policy_names.len().max(p + 1), PolicyTally::default());
        }
        self.tallies.get_mut(p)
    }

    /// Reads one record, read at `wall_ms` (Unix ms, for the stream clock's clamp); effects
    /// go to `out`.
    pub fn ingest(&mut self, rec: Record, wall_ms: u64, out: &mut Vec<Effect>) {
        if let Err(e) = self.watermark.observe(rec.offset) {
            // A rewind we did not ask for (should not happen with one owner): skip, never panic.
            tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "out-of-order record skipped");
            return;
        }
        self.read_position = Some(rec.offset + 1);
        self.clock.on_record(rec.timestamp_ms, wall_ms);
        let now = self.clock.now().unwrap_or(StreamTime::ZERO);
        let arrival_ms = rec.arrival_ms();
        let (filed_at_ms, replaced) = super::stream_time::filing_arrival(rec.timestamp_ms, wall_ms);
        let fetched = rec.fetched;
        self.store.set_fetched(fetched);
        let payload = rec.payload.unwrap_or_default();
        let scanned = if payload.len() > self.settings.max_record_bytes {
            Err(otlp::DecodeError::TooLarge {
                len: payload.len(),
                limit: self.settings.max_record_bytes,
            })
        } else {
            otlp::scan_record_cached(
                &payload,
                rec.encoding,
                self.sampler.probe(),
                arrival_ms,
                Some(&mut self.resources),
                &mut self.scratch,
            )
        };
        if let Err(e) = scanned {
            self.stats.record_read(false, 0, payload.len());
            tracing::warn!(topic = %self.topic, partition = self.partition, offset = rec.offset, error = %e, "record to dead-letter topic");
            self.acquire(rec.offset, 1);
            out.push(Effect::DeadLetter {
                offset: rec.offset,
                key: rec.key,
                headers: rec.headers,
                payload,
                error: e.to_string(),
            });
            return;
        }
        self.stats
            .record_read(true, self.scratch.len(), payload.len());
        if replaced {
            telemetry::arrival_replaced();
            file_by(&mut self.scratch, filed_at_ms);
        }
        if let Some(m) = &self.settings.span_metrics {
            if rec.offset >= self.counted_through {
                m.observe(&self.scratch, now.as_millis());
            }
        }
        let spans = std::mem::take(&mut self.scratch);
        let mut aheads = std::mem::take(&mut self.ahead);
        crate::store::ahead(&spans, &mut aheads);
        for (s, &ahead) in spans.iter().zip(&aheads) {
            match self
                .store
                .add(s.trace_id, &s.meta, &s.span, rec.offset, ahead, now)
            {
                Admit::Buffered { new_ref } => {
                    if new_ref {
                        self.acquire(rec.offset, 1);
                    }
                }
                Admit::Decided(d) => {
                    let i = *self.late_index.entry(s.trace_id).or_insert_with(|| {
                        self.late.push((s.trace_id, d, Vec::new()));
                        self.late.len() - 1
                    });
                    self.late[i].2.push(s.span.clone());
                }
            }
            if self.store.has_forced() {
                let forced: Vec<DueTrace> = self.store.take_forced().collect();
                for t in forced {
                    self.decide(t, out);
                }
            }
        }
        self.store.end_record();
        self.ahead = aheads;
        self.scratch = spans;
        self.scratch.clear();
        self.late_index.clear();
        let late = std::mem::take(&mut self.late);
        for (trace_id, d, spans) in &late {
            if d.keep {
                telemetry::late_spans(Outcome::Keep, spans.len());
                if let Some(t) = self.tally(d) {
                    t.kept_spans += spans.len() as u64;
                    t.kept_bytes += spans.iter().map(|s| s.bytes.len() as u64).sum::<u64>();
                }
                if let Some(m) = &self.settings.span_metrics {
                    let wall_ms = crate::clock::system_wall_nanos() / 1_000_000;
                    m.kept(*trace_id, spans, d.threshold.adjusted_count(), wall_ms);
                }
                self.acquire(rec.offset, 1);
                self.emit(*trace_id, spans, *d, vec![rec.offset], fetched, out);
            } else {
                telemetry::late_spans(Outcome::Drop, spans.len());
            }
        }
        self.late = late;
        self.late.clear();
    }

    /// A tick at `wall` (monotonic): stream time advances if the partition is `caught_up`
    /// (at the log end, nothing queued), then every trace due in stream time is decided;
    /// effects go to `out`.
    pub fn tick(&mut self, wall: MonoTime, caught_up: bool, out: &mut Vec<Effect>) {
        self.clock.on_tick(wall, caught_up);
        let Some(now) = self.clock.now() else {
            return;
        };
        let mut due = std::mem::take(&mut self.due);
        self.store.poll_due(now, &mut due);
        for t in due.drain(..) {
            self.decide(t, out);
        }
        self.due = due;
    }

    /// Stream time (Unix ms; 0 before the first record).
    pub fn stream_time_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// A write covering `offsets` was acknowledged: one reference released per entry.
    pub fn acked(&mut self, offsets: &[i64]) {
        for &o in offsets {
            if let Err(e) = self.watermark.release(o, 1) {
                tracing::error!(topic = %self.topic, partition = self.partition, error = %e, "watermark release");
            }
        }
    }

    /// Once per commit interval: `Some` with the new commit point (itself `None` when it did not
    /// move since the last one taken); `None` between intervals.
    pub fn periodic(&mut self, now: MonoTime) -> Option<Periodic> {
        if now < self.next_commit {
            return None;
        }
        self.next_commit = now + self.settings.commit_interval;
        Some(Periodic {
            commit: self.watermark.take_new_commit(),
        })
    }

    /// The offset to commit on revoke or shutdown (`None` when nothing was read).
    pub fn commit_point(&self) -> Option<i64> {
        self.watermark.commit_point()
    }

    /// Puts restored decisions in the decision cache (before any input). Each is forgotten
    /// when its TTL runs out counted from when it was made, in stream time.
    pub fn restore(&mut self, decisions: impl IntoIterator<Item = (TraceId, Decided)>) {
        for (trace_id, r) in decisions {
            let policy = self
                .policy_names
                .iter()
                .position(|p| **p == *r.policy)
                .map(|i| i as PolicyId);
            self.store.remember(
                trace_id,
                Decision {
                    keep: r.keep,
                    policy,
                    threshold: r.threshold,
                },
                StreamTime::from_millis(r.decided_at_ms),
            );
        }
    }

    /// Takes new policies. Buffered traces are summarized again from their span bytes with the
    /// new policies' probe, so they are decided on what the new policies read.
    pub fn switch_policies(&mut self, sampler: Arc<Sampler>, names: Arc<[Arc<str>]>) {
        let probe = sampler.probe();
        self.store
            .resummarize(|span| otlp::rescan_span(span, probe).ok());
        // The cached leaf bits were the old probe's.
        self.resources.clear();
        self.sampler = sampler;
        self.policy_names = names;
    }

    /// True when, with `on_overflow: pause`, the store is over budget and input should wait.
    pub fn over_budget(&self) -> bool {
        self.store.over_budget()
    }

    /// Traces buffered.
    pub fn buffered(&self) -> usize {
        self.store.len()
    }

    /// Current gauges.
    pub fn gauges(&self) -> CoreGauges {
        CoreGauges {
            store: self.store.stats(),
            unresolved: self.watermark.unresolved(),
            resource_cache_bytes: self.resources.bytes(),
        }
    }

    fn acquire(&mut self, offset: i64, n: u32) {
        if let Err(e) = self.watermark.acquire(offset, n) {
            tracing::error!(topic = %self.topic, partition = self.partition, error = %e, "watermark acquire");
        }
    }

    fn policy_name(&self, d: &Decision) -> Option<Arc<str>> {
        d.policy
            .and_then(|p| self.policy_names.get(usize::from(p)))
            .cloned()
    }

    /// Decides a trace at the time it became due (not when it was polled), so the decision
    /// and its time depend only on the records read.
    fn decide(&mut self, mut t: DueTrace, out: &mut Vec<Effect>) {
        let now = t.due_at;
        self.histograms
            .decision_delay(now.saturating_since(t.first_seen));
        // Policies decide on the summary; the spans are read out of the store's buffer only for
        // a policy that reads them, the span metrics, or a keep.
        let spans: &[SpanRef] = if self.sampler.reads_spans() {
            t.spans.get()
        } else {
            &[]
        };
        let d = if self.settings.tally {
            let mut matched = std::mem::take(&mut self.matched);
            matched.resize(self.policy_names.len(), false);
            let d = self
                .sampler
                .decide_matching(t.trace_id, &t.summary, spans, now, &mut matched);
            if self.tallies.len() < matched.len() {
                self.tallies.resize(matched.len(), PolicyTally::default());
            }
            for (row, m) in self.tallies.iter_mut().zip(&matched) {
                row.matched_traces += u64::from(*m);
            }
            self.matched = matched;
            if d.keep {
                if let Some(row) = self.tally(&d) {
                    row.kept_traces += 1;
                    row.kept_spans += u64::from(t.summary.span_count);
                    row.kept_bytes += t.summary.bytes;
                }
            }
            d
        } else {
            self.sampler
                .decide_trace(t.trace_id, &t.summary, spans, now)
        };
        self.store.remember(t.trace_id, d, now);
        if let Some(m) = &self.settings.span_metrics {
            m.decided(
                t.trace_id,
                t.spans.get(),
                d.keep,
                d.threshold.adjusted_count(),
                now.as_millis(),
            );
        }
        for p in self.sampler.evaluation_errors(&t.summary) {
            telemetry::policy_evaluation_error(p);
        }
        let policy = self.policy_name(&d);
        self.stats.trace_decided(DecidedKey {
            policy: policy.clone(),
            keep: d.keep,
            trigger: t.trigger.as_str(),
            forced: t.trigger.is_forced(),
        });
        if d.keep {
            self.emit(
                t.trace_id,
                t.spans.get(),
                d,
                t.offsets.clone(),
                t.first_fetched,
                out,
            );
        }
        // The decision log holds one reference per offset, so the records are resolved only
        // once the decision is durable and a crash never replays them without it. A drop hands
        // it the trace's own reference; a keep takes one more beside the sinks'.
        if !self.settings.decision_log {
            if !d.keep {
                self.acked(&t.offsets);
            }
            return;
        }
        if d.keep {
            for &o in &t.offsets {
                self.acquire(o, 1);
            }
        }
        out.push(Effect::LogDecision {
            trace_id: t.trace_id,
            decided: Decided {
                keep: d.keep,
                threshold: d.threshold,
                policy: policy.unwrap_or_else(|| Arc::from("")),
                decided_at_ms: now.as_duration().as_millis() as u64,
            },
            offsets: t.offsets,
        });
    }

    /// Hands kept spans to every sink. Each offset holds one reference on entry; it ends with
    /// one per sink, each released by that sink's acknowledgement.
    fn emit(
        &mut self,
        trace_id: TraceId,
        spans: &[SpanRef],
        d: Decision,
        offsets: Vec<i64>,
        first_in: MonoTime,
        out: &mut Vec<Effect>,
    ) {
        self.stats
            .spans_kept
            .fetch_add(spans.len() as u64, Ordering::Relaxed);
        let n = self.settings.sinks;
        if n == 0 {
            self.acked(&offsets);
            return;
        }
        for &o in &offsets {
            self.acquire(o, n - 1);
        }
        let policy = self.policy_name(&d).unwrap_or_else(|| Arc::from("none"));
        // OTEP 235 on the way out: tracestate th raised to this stage's threshold (or erased),
        // policy name and adjusted count as span attributes. Every sink gets the marked bytes.
        let mark = otlp::SamplingMark::new(d.threshold, &policy);
        let marked: Vec<SpanRef> = spans
            .iter()
            .map(|s| SpanRef {
                ctx: Arc::clone(&s.ctx),
                bytes: match otlp::mark_span(&s.bytes, &mark) {
                    Ok(b) => Bytes::from(b),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot mark a kept span; emitted unchanged");
                        s.bytes.clone()
                    }
                },
            })
            .collect();
        out.push(Effect::Emit(KeptTrace {
            trace_id,
            spans: marked,
            decision: d,
            policy,
            offsets,
            first_in,
        }));
    }
}

/// Files the spans of one record by `filed_at_ms` (their record's timestamp was implausible);
/// spans of one scope keep sharing one context.
fn file_by(spans: &mut [otlp::ScannedSpan], filed_at_ms: u64) {
    // (a scope's context as scanned, the same with the filing time)
    let mut last: Option<(Arc<otlp::ScopeCtx>, Arc<otlp::ScopeCtx>)> = None;
    for s in spans {
        let filed = match &last {
            Some((scanned, filed)) if Arc::ptr_eq(scanned, &s.span.ctx) => Arc::clone(filed),
            _ => {
                let filed = Arc::new(otlp::ScopeCtx {
                    filed_at_ms: Some(filed_at_ms),
                    ..(*s.span.ctx).clone()
                });
                last = Some((Arc::clone(&s.span.ctx), Arc::clone(&filed)));
                filed
            }
        };
        s.span.ctx = filed;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! The core on its own: each behaviour the end-to-end tests rely on, then random
    //! interleavings of ingest / tick / ack / revoke+restore checked against the reference
    //! protocol's invariants.

    use std::collections::{BTreeMap, HashMap, HashSet};

    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
    use proptest::prelude::*;
    use prost::Message;

    use super::*;
    use crate::config::OnOverflow;
    use crate::otlp::Encoding;

    const ERRORS: &str =
        "[{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}]";

    fn limits(max_traces: usize) -> StoreLimits {
        StoreLimits {
            decision_wait: Duration::from_secs(1),
            after_root: None,
            max_trace_age: Duration::from_secs(30),
            max_traces,
            max_bytes: 1 << 30,
            max_spans_per_trace: 10_000,
            max_trace_bytes: 1 << 30,
            on_overflow: OnOverflow::DecideOldest,
            kept_cache: (100_000, Duration::from_secs(3_600)),
            dropped_cache: (100_000, Duration::from_secs(3_600)),
        }
    }

    fn core_with(sinks: u32, decision_log: bool, max_traces: usize) -> PartitionCore {
        core_ttl(sinks, decision_log, max_traces, Duration::from_secs(3_600))
    }

    fn core_ttl(sinks: u32, decision_log: bool, max_traces: usize, ttl: Duration) -> PartitionCore {
        let mut limits = limits(max_traces);
        limits.kept_cache.1 = ttl;
        limits.dropped_cache.1 = ttl;
        let specs = crate::sample::tests::policies(ERRORS);
        let sampler = Sampler::build(&specs).unwrap();
        PartitionCore::new(
            Arc::from("in"),
            0,
            CoreSettings {
                limits,
                sinks,
                decision_log,
                commit_interval: Duration::ZERO,
                // One caught-up tick may move stream time any distance (see `idle_until`).
                tick: Duration::from_secs(1 << 30),
                tally: false,
                max_record_bytes: 1 << 20,
                span_metrics: None,
            },
            Arc::new(sampler),
            Arc::from(vec![Arc::<str>::from("errors")]),
            Arc::new(RunStats::new()),
        )
    }

    /// A span of trace `t` with span id `sid`; `error` sets ERROR status.
    pub(crate) fn span(t: u8, sid: u64, error: bool) -> Span {
        Span {
            trace_id: vec![t; 16],
            span_id: sid.to_be_bytes().to_vec(),
            parent_span_id: if sid.is_multiple_of(7) {
                vec![]
            } else {
                vec![9; 8]
            },
            name: "op".into(),
            kind: 2,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 2_000,
            status: error.then(|| Status {
                message: String::new(),
                code: status::StatusCode::Error as i32,
            }),
            ..Default::default()
        }
    }

    pub(crate) fn record(offset: i64, spans: Vec<Span>) -> Record {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource::default()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope::default()),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        Record {
            offset,
            key: None,
            payload: Some(Bytes::from(req.encode_to_vec())),
            encoding: Encoding::OtlpProto,
            timestamp_ms: None,
            headers: Vec::new(),
            fetched: MonoTime::ZERO,
        }
    }

    fn garbage(offset: i64) -> Record {
        Record {
            offset,
            key: None,
            payload: Some(Bytes::from_static(&[0xff, 0xff, 0xff, 0x01])),
            encoding: Encoding::OtlpProto,
            timestamp_ms: None,
            headers: Vec::new(),
            fetched: MonoTime::ZERO,
        }
    }

    /// Stream time of the tests' first record (Unix ms), and a wall clock far past every
    /// stamp (so no stamp is clamped).
    const T0: u64 = 1_700_000_000_000;
    const WALL: u64 = T0 + 1_000_000_000;

    /// `ms` after T0.
    fn at(ms: u64) -> MonoTime {
        MonoTime::from_millis(ms)
    }

    trait Drive {
        /// Reads `rec` stamped `at` after T0.
        fn feed(&mut self, rec: Record, at: MonoTime, fx: &mut Vec<Effect>);
        /// Caught up at the log end: wall-clock ticks move stream time to `at` after T0.
        fn idle_until(&mut self, at: MonoTime, fx: &mut Vec<Effect>);
    }

    impl Drive for PartitionCore {
        fn feed(&mut self, mut rec: Record, at: MonoTime, fx: &mut Vec<Effect>) {
            rec.timestamp_ms = Some((T0 + at.as_duration().as_millis() as u64) as i64);
            self.ingest(rec, WALL, fx);
        }

        fn idle_until(&mut self, at: MonoTime, fx: &mut Vec<Effect>) {
            let target = T0 + at.as_duration().as_millis() as u64;
            let step = target.saturating_sub(self.stream_time_ms());
            self.tick(MonoTime::ZERO, true, fx);
            self.tick(MonoTime::from_millis(step), true, fx);
        }
    }

    fn span_ids(e: &KeptTrace) -> Vec<u64> {
        e.spans
            .iter()
            .map(|s| {
                let sp = otlp::decode_span(s).unwrap();
                u64::from_be_bytes(sp.span_id.try_into().unwrap())
            })
            .collect()
    }

    fn emits(fx: &[Effect]) -> Vec<&KeptTrace> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Emit(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_kept_trace_is_emitted_whole_and_committed_after_every_sink_acked() {
        let mut core = core_with(2, false, 100);
        let mut fx = Vec::new();
        core.feed(record(10, vec![span(1, 1, false)]), at(0), &mut fx);
        core.feed(
            record(11, vec![span(1, 2, true), span(2, 3, false)]),
            at(100),
            &mut fx,
        );
        assert!(fx.is_empty());
        assert_eq!(core.commit_point(), Some(10));
        core.idle_until(at(1_200), &mut fx);
        let e = emits(&fx);
        assert_eq!(e.len(), 1, "only the error trace is kept");
        assert_eq!(span_ids(e[0]), vec![1, 2]);
        assert_eq!(e[0].offsets, vec![10, 11]);
        // Trace 2 was dropped, but record 11 also holds trace 1, written to two sinks.
        assert_eq!(core.commit_point(), Some(10));
        core.acked(&[10, 11]);
        assert_eq!(core.commit_point(), Some(10), "one sink is not enough");
        core.acked(&[10, 11]);
        assert_eq!(core.commit_point(), Some(12));
    }

    #[test]
    fn records_stamped_in_another_era_are_filed_by_their_arrival() {
        use crate::archive::layout::HourPartition;
        use crate::archive::segment::filing_hour;
        // Today, by the test's wall clock; stamps from 2000, 0 and next year.
        let wall: u64 = 1_780_000_000_000;
        let mut core = core_with(1, false, 100);
        let mut fx = Vec::new();
        for (offset, stamp) in [
            (0i64, 946_684_800_000i64),
            (1, 0),
            (2, (wall + 365 * 86_400_000) as i64),
        ] {
            let mut rec = record(offset, vec![span(offset as u8 + 1, 1, true)]);
            rec.timestamp_ms = Some(stamp);
            core.ingest(rec, wall, &mut fx);
        }
        core.tick(MonoTime::ZERO, true, &mut fx);
        core.tick(MonoTime::from_millis(60_000), true, &mut fx);
        let kept = emits(&fx);
        assert_eq!(kept.len(), 3, "{fx:?}");
        for k in kept {
            for s in &k.spans {
                assert_eq!(s.ctx.filing_ms(), wall, "trace {:?}", k.trace_id);
                let start = otlp::decode_span(s).unwrap().start_time_unix_nano;
                assert_eq!(
                    filing_hour(start, s.ctx.filing_ms()),
                    HourPartition::of_nanos(wall * 1_000_000),
                    "filed under the hour it arrived"
                );
            }
        }
    }

    #[test]
    fn a_dropped_trace_resolves_its_records_without_a_write() {
        let mut core = core_with(1, false, 100);
        let mut fx = Vec::new();
        core.feed(record(0, vec![span(2, 1, false)]), at(0), &mut fx);
        core.idle_until(at(1_000), &mut fx);
        assert!(fx.is_empty());
        assert_eq!(core.commit_point(), Some(1));
    }

    #[test]
    fn late_spans_follow_the_decision_of_their_trace() {
        let mut core = core_with(1, false, 100);
        let mut fx = Vec::new();
        core.feed(
            record(0, vec![span(1, 1, true), span(2, 2, false)]),
            at(0),
            &mut fx,
        );
        core.idle_until(at(1_000), &mut fx);
        assert_eq!(emits(&fx).len(), 1);
        core.acked(&[0]);
        fx.clear();
        // Late spans without an error: decided alone they would be dropped; they follow.
        core.feed(
            record(1, vec![span(1, 5, false), span(2, 6, false)]),
            at(5_000),
            &mut fx,
        );
        let e = emits(&fx);
        assert_eq!(e.len(), 1);
        assert_eq!(span_ids(e[0]), vec![5]);
        assert_eq!(e[0].offsets, vec![1]);
        assert_eq!(core.commit_point(), Some(1));
        core.acked(&[1]);
        assert_eq!(core.commit_point(), Some(2));
    }

    #[test]
    fn with_the_decision_log_a_record_waits_for_its_decision_to_be_durable() {
        let mut core = core_with(1, true, 100);
        let mut fx = Vec::new();
        core.feed(record(0, vec![span(2, 1, false)]), at(0), &mut fx);
        core.idle_until(at(1_000), &mut fx);
        assert_eq!(fx.len(), 1);
        let Effect::LogDecision {
            decided, offsets, ..
        } = &fx[0]
        else {
            panic!("{fx:?}")
        };
        assert!(!decided.keep);
        assert_eq!(
            (decided.decided_at_ms, offsets.as_slice()),
            (T0 + 1_000, &[0][..])
        );
        assert_eq!(core.commit_point(), Some(0));
        core.acked(&[0]);
        assert_eq!(core.commit_point(), Some(1));
    }

    #[test]
    fn an_unreadable_record_is_dead_lettered_and_holds_its_offset_until_written() {
        let mut core = core_with(1, false, 100);
        let mut fx = Vec::new();
        core.feed(garbage(4), at(0), &mut fx);
        assert!(
            matches!(&fx[..], [Effect::DeadLetter { offset: 4, error, .. }] if !error.is_empty())
        );
        assert_eq!(core.commit_point(), Some(4));
        core.acked(&[4]);
        assert_eq!(core.commit_point(), Some(5));
    }

    #[test]
    fn the_trace_budget_forces_the_oldest_trace_out() {
        let mut core = core_with(1, false, 2);
        let mut fx = Vec::new();
        core.feed(record(0, vec![span(1, 1, true)]), at(0), &mut fx);
        core.feed(record(1, vec![span(2, 2, false)]), at(1), &mut fx);
        assert!(fx.is_empty());
        core.feed(record(2, vec![span(3, 3, false)]), at(2), &mut fx);
        let e = emits(&fx);
        assert_eq!(e.len(), 1, "trace 1 was forced out and kept");
        assert_eq!(e[0].trace_id, TraceId([1; 16]));
        assert!(core.gauges().store.traces <= 2);
    }

    #[test]
    fn a_restored_decision_expires_at_its_original_time() {
        // TTL 60 s; the decision was made 50 s before the first record (stream time T0).
        let ttl = Duration::from_secs(60);
        let mut core = core_ttl(1, false, 100, ttl);
        core.restore([kept_by_errors(TraceId([2; 16]), T0 - 50_000)]);
        let mut fx = Vec::new();
        core.feed(record(0, vec![span(2, 1, false)]), at(9_000), &mut fx);
        assert_eq!(emits(&fx).len(), 1, "9 s later it still holds");
        assert_eq!(emits(&fx)[0].policy.as_ref(), "errors");
        fx.clear();
        core.feed(record(1, vec![span(2, 2, false)]), at(10_500), &mut fx);
        assert!(
            fx.is_empty(),
            "10.5 s later it has expired; the span is a new trace"
        );
        assert_eq!(core.buffered(), 1);
        // A decision older than its TTL is not restored at all.
        let mut core = core_ttl(1, false, 100, ttl);
        core.restore([kept_by_errors(TraceId([2; 16]), T0 - 61_000)]);
        core.feed(record(0, vec![span(2, 1, false)]), at(0), &mut fx);
        assert!(fx.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_restored_decision_expires_at_its_original_time_on_the_tokio_clock() {
        use crate::clock::{tokio_clock::TokioClock, Clock};
        let clock = TokioClock::new();
        let wall_ms = || clock.wall_nanos() / 1_000_000;
        // Decided 55 s before a new process (and its new clock) restores it.
        let mut core = core_ttl(1, false, 100, Duration::from_secs(60));
        core.restore([kept_by_errors(TraceId([2; 16]), wall_ms() - 55_000)]);
        let stamped = |offset, sid| {
            let mut r = record(offset, vec![span(2, sid, false)]);
            r.timestamp_ms = Some(wall_ms() as i64);
            r
        };
        let mut fx = Vec::new();
        tokio::time::advance(Duration::from_secs(4)).await;
        core.ingest(stamped(0, 1), wall_ms(), &mut fx);
        assert_eq!(emits(&fx).len(), 1);
        fx.clear();
        tokio::time::advance(Duration::from_secs(2)).await;
        core.ingest(stamped(1, 2), wall_ms(), &mut fx);
        assert!(fx.is_empty(), "60 s after the decision it is forgotten");
    }

    /// A keep by `errors` read back from the decision log, made at `decided_at_ms`.
    fn kept_by_errors(trace_id: TraceId, decided_at_ms: u64) -> (TraceId, Decided) {
        (
            trace_id,
            Decided {
                keep: true,
                threshold: crate::otlp::threshold::Threshold::ALWAYS,
                policy: "errors".into(),
                decided_at_ms,
            },
        )
    }

    /// One step of a random schedule.
    #[derive(Debug, Clone)]
    enum Op {
        /// A record with spans of these traces (1..=6); `bad` makes it unreadable.
        Ingest { traces: Vec<u8>, bad: bool },
        /// Time passes (ms) and the core ticks.
        Tick(u64),
        /// The pending write at this index (modulo) is acknowledged.
        Ack(usize),
        /// Wall-clock time passes (ms) while the partition is behind the log end (paused,
        /// stalled, frozen): nothing may be decided.
        Stall(u64),
        /// The partition moves to a new owner: in-flight writes finish, the commit point is
        /// taken, a new core restores the logged decisions and replays from the commit point.
        Revoke,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (proptest::collection::vec(1u8..=6, 1..4), proptest::bool::weighted(0.05))
                .prop_map(|(traces, bad)| Op::Ingest { traces, bad }),
            2 => (0u64..1_500).prop_map(Op::Tick),
            3 => any::<usize>().prop_map(Op::Ack),
            1 => (1u64..60_000).prop_map(Op::Stall),
            1 => Just(Op::Revoke),
        ]
    }

    /// The model: the log of records (the topic), writes in flight, what each sink received.
    struct Model {
        sinks: u32,
        log: bool,
        max_traces: usize,
        topic: Vec<Vec<Span>>,
        stamps: Vec<u64>,
        bad: HashSet<i64>,
        pending: Vec<Effect>,
        decisions: Vec<(TraceId, bool, u64)>,
        emitted: HashMap<u64, u32>,
        emitted_ever: HashSet<u64>,
        now_ms: u64,
        core: PartitionCore,
        next_span: u64,
        errored: HashSet<u8>,
        trace_of: HashMap<u64, u8>,
        /// Where the current incarnation started reading (the last committed point).
        base: i64,
    }

    impl Model {
        fn new(sinks: u32, log: bool, max_traces: usize) -> Self {
            Model {
                sinks,
                log,
                max_traces,
                topic: Vec::new(),
                stamps: Vec::new(),
                bad: HashSet::new(),
                pending: Vec::new(),
                decisions: Vec::new(),
                emitted: HashMap::new(),
                emitted_ever: HashSet::new(),
                now_ms: 0,
                core: core_with(sinks, log, max_traces),
                next_span: 1,
                errored: HashSet::new(),
                trace_of: HashMap::new(),
                base: 0,
            }
        }

        fn rec(&self, offset: i64) -> Record {
            let mut r = if self.bad.contains(&offset) {
                garbage(offset)
            } else {
                record(offset, self.topic[offset as usize].clone())
            };
            r.timestamp_ms = Some((T0 + self.stamps[offset as usize]) as i64);
            r
        }

        fn absorb(&mut self, fx: Vec<Effect>) {
            for e in fx {
                match &e {
                    Effect::Emit(em) => {
                        for id in span_ids(em) {
                            *self.emitted.entry(id).or_default() += 1;
                            self.emitted_ever.insert(id);
                        }
                        for _ in 0..self.sinks {
                            self.pending.push(e.clone());
                        }
                    }
                    Effect::LogDecision {
                        trace_id, decided, ..
                    } => {
                        self.decisions
                            .push((*trace_id, decided.keep, decided.decided_at_ms));
                        self.pending.push(e.clone());
                    }
                    Effect::DeadLetter { .. } => self.pending.push(e.clone()),
                }
            }
        }

        fn step(&mut self, op: &Op) {
            let mut fx = Vec::new();
            match op {
                Op::Ingest { traces, bad } => {
                    let offset = self.topic.len() as i64;
                    let mut spans = Vec::new();
                    for &t in traces {
                        let sid = self.next_span;
                        self.next_span += 1;
                        // Only the first span of an odd trace carries the error: later spans
                        // decided on their own would be dropped, so they must follow.
                        let error = !*bad && t % 2 == 1 && self.errored.insert(t);
                        self.trace_of.insert(sid, t);
                        spans.push(span(t, sid, error));
                    }
                    if *bad {
                        self.bad.insert(offset);
                        for s in &spans {
                            self.trace_of
                                .remove(&u64::from_be_bytes(s.span_id.clone().try_into().unwrap()));
                        }
                    }
                    self.topic.push(spans);
                    self.stamps.push(self.now_ms);
                    let rec = self.rec(offset);
                    self.core.ingest(rec, WALL, &mut fx);
                }
                Op::Tick(ms) => {
                    self.now_ms += ms;
                    self.core.idle_until(at(self.now_ms), &mut fx);
                }
                Op::Stall(ms) => {
                    // What the records read so far made due is decided at the first tick;
                    // after that, wall-clock time alone decides nothing.
                    self.core.tick(at(0), false, &mut fx);
                    let mut stalled = Vec::new();
                    for i in 1..=10u64 {
                        self.core.tick(at(i * ms / 10), false, &mut stalled);
                    }
                    assert!(stalled.is_empty(), "decided while stalled: {stalled:?}");
                }
                Op::Ack(i) => {
                    if !self.pending.is_empty() {
                        let e = self.pending.swap_remove(i % self.pending.len());
                        self.core.acked(e.offsets());
                    }
                }
                Op::Revoke => {
                    for e in std::mem::take(&mut self.pending) {
                        self.core.acked(e.offsets());
                    }
                    let from = self.core.commit_point().unwrap_or(self.base);
                    self.base = from;
                    let mut latest: BTreeMap<TraceId, (bool, u64)> = BTreeMap::new();
                    for (t, keep, ms) in &self.decisions {
                        latest.insert(*t, (*keep, *ms));
                    }
                    self.core = core_with(self.sinks, self.log, self.max_traces);
                    self.emitted.clear();
                    if self.log {
                        self.core
                            .restore(latest.into_iter().map(|(trace_id, (keep, ms))| {
                                let policy = if keep { "errors" } else { "" };
                                (
                                    trace_id,
                                    Decided {
                                        keep,
                                        threshold: crate::otlp::threshold::Threshold::ALWAYS,
                                        policy: policy.into(),
                                        decided_at_ms: ms,
                                    },
                                )
                            }));
                    }
                    for o in from..self.topic.len() as i64 {
                        let rec = self.rec(o);
                        self.core.ingest(rec, WALL, &mut fx);
                    }
                }
            }
            self.absorb(fx);
        }

        /// The invariants that hold after every step.
        fn check(&self) -> Result<(), TestCaseError> {
            let point = self.core.commit_point();
            if let Some(p) = point {
                for e in &self.pending {
                    for &o in e.offsets() {
                        prop_assert!(p <= o, "commit point {p} passed unacknowledged offset {o}");
                    }
                }
            }
            for (id, n) in &self.emitted {
                prop_assert!(*n == 1, "span {id} emitted {n} times in one incarnation");
            }
            for id in &self.emitted_ever {
                let t = self.trace_of.get(id).copied();
                prop_assert!(
                    t.is_some_and(|t| t % 2 == 1),
                    "span {id} of trace {t:?} kept"
                );
            }
            let g = self.core.gauges().store;
            prop_assert!(g.traces <= self.max_traces, "{} traces buffered", g.traces);
            Ok(())
        }

        /// Runs the schedule out: everything decided and acknowledged.
        fn finish(&mut self) -> Result<(), TestCaseError> {
            self.step(&Op::Tick(60_000));
            for e in std::mem::take(&mut self.pending) {
                self.core.acked(e.offsets());
            }
            self.check()?;
            // With the log, a new owner never decides a trace again. Without it (a documented
            // limitation, why the log exists) a late span reaching a new owner is decided
            // on its own; with a single owner every span of a kept trace goes out.
            for (id, t) in &self.trace_of {
                if t % 2 == 1 && (self.log || self.base == 0) {
                    prop_assert!(
                        self.emitted_ever.contains(id),
                        "span {id} of kept trace {t} lost"
                    );
                }
            }
            let end = self.topic.len() as i64;
            let point = self.core.commit_point().unwrap_or(self.base);
            prop_assert!(
                point == end,
                "everything resolved, yet the commit point is {point}, not {end}"
            );
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::with_cases(200)
        })]

        #[test]
        fn the_reference_protocol_holds_under_any_interleaving(
            ops in proptest::collection::vec(op(), 1..80),
            sinks in 1u32..3,
            log in any::<bool>(),
            max_traces in 2usize..8,
        ) {
            let mut m = Model::new(sinks, log, max_traces);
            for o in &ops {
                m.step(o);
                m.check()?;
            }
            m.finish()?;
        }
    }
}
