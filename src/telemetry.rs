//! Every metric tracesift emits, declared once, plus the health endpoints.
//!
//! Names are constants here; labels are small enums or configured names (policy, sink, topic,
//! partition), never ids. Stages emit per record or per batch, never per span. The Prometheus
//! recorder is installed once per process ([`install`]); [`server::serve`] exposes `/metrics`, `/healthz`
//! (the process is up) and `/readyz` (consuming and not shutting down) on `telemetry.listen`.

pub mod exposition;
pub mod health;
pub mod process;
pub mod run;
pub mod server;
pub mod service_graph;
pub mod span_metrics;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};

pub use self::health::{Health, RestoreGuard, FAULT_HOLD_MS};
pub use self::process::{peak_rss_bytes, rss_bytes};

/// Declares every metric once: a constant for its name, documented by its description, and
/// (in `describe`) its kind, unit and that same description for the HELP line of `/metrics`.
macro_rules! catalog {
    ($($kind:ident $name:ident = $value:literal, $unit:ident, $desc:literal;)*) => {
        $(
            #[doc = $desc]
            pub const $name: &str = $value;
        )*
        /// Registers every metric's description and unit with the recorder.
        fn describe() {
            $(catalog!(@describe $kind $name $unit $desc);)*
        }
    };
    (@describe counter $name:ident $unit:ident $desc:literal) => {
        describe_counter!($name, Unit::$unit, $desc)
    };
    (@describe gauge $name:ident $unit:ident $desc:literal) => {
        describe_gauge!($name, Unit::$unit, $desc)
    };
    (@describe histogram $name:ident $unit:ident $desc:literal) => {
        describe_histogram!($name, Unit::$unit, $desc)
    };
}

catalog! {
    counter RECORDS_IN = "tracesift_records_in_total", Count,
        "Records read, by outcome (`ok`, `malformed`).";
    gauge REKEY_PENDING_WRITES = "tracesift_rekey_pending_writes", Count,
        "Writes of the rekey stage waiting for their acknowledgement (at most 10,000).";
    gauge REKEY_PENDING_BYTES = "tracesift_rekey_pending_bytes", Bytes,
        "Bytes the rekey stage's pending writes hold (at most kafka.rekey.max_pending_bytes, then it stops reading).";
    counter ARRIVAL_REPLACED = "tracesift_record_timestamps_replaced_total", Count,
        "Records whose Kafka timestamp was outside [arrival - 7 d, arrival + 1 h] (or missing): filed and judged by their arrival time instead.";
    counter SPANS_IN = "tracesift_spans_in_total", Count,
        "Spans read.";
    counter BYTES_IN = "tracesift_bytes_in_total", Bytes,
        "Record bytes read.";
    counter TRACES_DECIDED = "tracesift_traces_decided_total", Count,
        "Traces decided, by policy, outcome (`keep`, `drop`) and trigger.";
    counter FORCED_DECISIONS = "tracesift_forced_decisions_total", Count,
        "Decisions made before a trace was complete (overflow, trace limit), by trigger.";
    counter LATE_SPANS = "tracesift_late_spans_total", Count,
        "Spans that arrived after their trace was decided, by outcome.";
    counter DEAD_LETTER_RECORDS = "tracesift_dead_letter_records_total", Count,
        "Records written to the dead-letter topic.";
    gauge TRACES_BUFFERED = "tracesift_traces_buffered", Count,
        "Traces buffered, per partition.";
    gauge BYTES_BUFFERED = "tracesift_bytes_buffered", Bytes,
        "Span bytes buffered, per partition (as charged against store.max_bytes: each span's share of its record).";
    gauge STORE_HEAP = "tracesift_store_heap_bytes", Bytes,
        "What the trace store holds on the heap, per partition and part (spans, traces, index, contexts, decisions): counted, without the allocator's own overhead.";
    gauge RESOURCE_CACHE_BYTES = "tracesift_resource_cache_bytes", Bytes,
        "Resources already checked that a partition remembers so they are not walked again (at most 1 MiB and 4096 per partition).";
    gauge STORE_CONTEXTS = "tracesift_store_contexts", Count,
        "Distinct resources and scopes the buffered spans refer to, per partition (each held once).";
    gauge COMMITTED_LAG = "tracesift_committed_offset_lag", Count,
        "Records between the high watermark and the committed offset, per partition.";
    gauge POLL_GAP_MAX = "tracesift_source_poll_gap_max_seconds", Seconds,
        "Longest gap between two polls of the consumer, seconds, over the last window (~10 s).";
    gauge PARTITION_QUEUE = "tracesift_partition_queue_records", Count,
        "Records queued between the consumer and a partition task, per partition.";
    counter DECISIONS_LOGGED = "tracesift_decisions_logged_total", Count,
        "Decisions written to the decision log.";
    counter DECISIONS_RESTORED = "tracesift_decisions_restored_total", Count,
        "Decisions restored from the decision log on partition assignment.";
    counter POLICY_EVALUATION_ERRORS = "tracesift_policy_evaluation_errors_total", Count,
        "Traces on which a policy could not be evaluated (an ottl_condition that failed on some span), by policy; under error_mode propagate such a policy does not vote.";
    counter POLICY_RELOADS = "tracesift_policy_reloads_total", Count,
        "Policy reloads (SIGHUP) by `outcome`: `applied` or `rejected` (the old policies kept running).";
    gauge DECISION_CACHE_ENTRIES = "tracesift_decision_cache_entries", Count,
        "Decisions remembered for late spans, per partition and `kind` (`sampled`, `non_sampled`).";
    counter DECISION_CACHE_LOOKUPS = "tracesift_decision_cache_lookups_total", Count,
        "Decision-cache lookups by `result`: `hit` (a late span followed its trace's decision) or `miss` (a span started a trace that is neither buffered nor remembered).";
    gauge PARTITION_QUEUE_BYTES = "tracesift_partition_queue_bytes", Bytes,
        "Record bytes queued between the consumer and a partition task, per partition.";
    gauge PENDING_ACKS = "tracesift_sink_pending_acks", Count,
        "Sink writes not yet acknowledged, per partition.";
    counter SPANS_DROPPED = "tracesift_sink_dropped_spans_total", Count,
        "Kept spans a best-effort sink dropped (retry budget spent, or its pending budget full).";
    gauge BREAKER_STATE = "tracesift_sink_breaker_state", Count,
        "A sink's circuit breaker: 0 closed, 1 half-open, 2 open.";
    gauge PENDING_BYTES = "tracesift_sink_pending_bytes", Bytes,
        "Bytes the pending writes of a partition hold (against `sinks.max_pending_bytes`).";
    counter SPANS_OUT = "tracesift_spans_out_total", Count,
        "Spans written, by sink.";
    counter SINK_ERRORS = "tracesift_sink_errors_total", Count,
        "Sink write failures (retried), by sink.";
    counter SPANS_REJECTED = "tracesift_sink_rejected_spans_total", Count,
        "Kept spans a sink could not write for a reason retrying does not fix, by sink.";
    counter ARCHIVE_FILES = "tracesift_archive_files_total", Count,
        "Parquet files written, by tier.";
    counter ARCHIVE_BYTES = "tracesift_archive_bytes_total", Bytes,
        "Parquet bytes written, by tier.";
    gauge ARCHIVE_TIER_FILES = "tracesift_archive_tier_files", Count,
        "Compacted files catalogued per tier (manifests), after the last compaction pass.";
    gauge ARCHIVE_TIER_BYTES = "tracesift_archive_tier_bytes", Bytes,
        "Compacted bytes catalogued per tier (manifests), after the last compaction pass.";
    counter COMPACTION_RUNS = "tracesift_compaction_runs_total", Count,
        "Compaction passes by `result`: `ok`, `skipped` (another compactor held the lease), `error`.";
    counter COMPACTION_ROWS = "tracesift_compaction_rows_total", Count,
        "Rows written by compaction, and duplicate rows it removed (`kind`: `written`, `duplicate`).";
    counter LIFECYCLE_FILES = "tracesift_lifecycle_files_total", Count,
        "Files moved between tiers and deleted by retention (`action`: `moved`, `expired`).";
    gauge PARTITIONS_ASSIGNED = "tracesift_partitions_assigned", Count,
        "Partitions this instance owns.";
    counter UNDECODABLE_BATCHES = "tracesift_source_undecodable_batches_total", Count,
        "Input record batches the client could not decompress (`reason`: `codec_not_built`, `corrupt`); the partition cannot advance past such a batch.";
    counter PARTITION_PAUSES = "tracesift_partition_pauses_total", Count,
        "Times a partition was paused for backpressure.";
    counter TELEMETRY_REFUSED = "tracesift_telemetry_connections_refused_total", Count,
        "Connections to the telemetry endpoint closed at once because [`server::MAX_CONNECTIONS`] were open.";
    gauge PROCESS_RSS = "tracesift_process_resident_memory_bytes", Bytes,
        "Resident memory of this process (read at every scrape).";
    gauge MEMORY_BOUND = "tracesift_memory_bound_bytes", Bytes,
        "The README's memory formula for the partitions owned now: resident memory stays under it.";
    gauge STORE_MAX_BYTES = "tracesift_store_max_bytes", Bytes,
        "`store.max_bytes`: the span-byte budget of each partition's store.";
    gauge READY = "tracesift_ready", Count,
        "1 when `/readyz` answers ready, else 0 (read at every scrape).";
    gauge COMMITTED_OFFSET = "tracesift_committed_offset", Count,
        "The group's committed offset of each owned partition (from librdkafka's statistics).";
    histogram RESTORE = "tracesift_decision_restore_seconds", Seconds,
        "One partition's decision-log restore on assignment, seconds (histogram).";
    counter RESTORE_FAILURES = "tracesift_decision_restore_failures_total", Count,
        "Decision-log restore attempts that failed (the partition is not consumed until one succeeds).";
    histogram COMPACTION_PASS = "tracesift_compaction_pass_seconds", Seconds,
        "One pass of the archive lifecycle, seconds (histogram).";
    gauge COMPACTION_LAST_SUCCESS = "tracesift_compaction_last_success_timestamp_seconds", Seconds,
        "Unix time of the end of the last pass that compacted every due hour.";
    histogram QUEUE_WAIT = "tracesift_queue_wait_seconds", Seconds,
        "Latency breakdown (histograms, seconds): a record's wait in its partition's queue (fetched → taken by its task).";
    histogram DECODE = "tracesift_decode_seconds", Seconds,
        "Reading one record into the store: scan (strict decode) and buffering.";
    histogram DECISION_DELAY = "tracesift_decision_delay_seconds", Seconds,
        "A trace's first span → its decision, in stream time (how long it waited to be complete).";
    histogram SINK_WRITE = "tracesift_sink_write_seconds", Seconds,
        "One write, handed to the sink → acknowledged durable, by `sink`.";
    histogram SINK_BATCH_SPANS = "tracesift_sink_batch_spans", Count,
        "Spans per write, by `sink` (histogram).";
    counter PRODUCER_REPLACED = "tracesift_producer_replaced_total", Count,
        "Times the Kafka producer was replaced after a fatal error.";
    histogram COMMIT_LAG = "tracesift_commit_lag_seconds", Seconds,
        "A record fetched → its offset committed (sampled: one record per 100 ms per partition).";
    histogram SINK_REQUEST = "tracesift_sink_request_seconds", Seconds,
        "One request to a batching sink (OTLP), sent → answered, by `sink`.";
    gauge SINK_BATCH_TARGET = "tracesift_sink_batch_target_spans", Count,
        "The adaptive batch target of a batching sink, in spans, by `sink`.";
    gauge SINK_BACKLOG = "tracesift_sink_backlog_spans", Count,
        "Spans cut into batches that wait for a request slot of a batching sink, by `sink`.";
    histogram END_TO_END = "tracesift_end_to_end_seconds", Seconds,
        "A kept trace's first span in (its record fetched) → the trace acknowledged by `sink`: the figure operators compare with their latency goal (time spent in Kafka before the fetch is the consumer lag, measured apart).";
}

/// Buckets of the latency histograms: 1 ms to 10 min.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// Buckets of the spans-per-write histogram.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 50000.0,
];

/// Installs the process's recorder once and returns it (its metrics render with
/// [`exposition::Registry::write`]).
pub fn install() -> &'static exposition::Registry {
    static REGISTRY: OnceLock<&'static exposition::Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let registry: &'static exposition::Registry =
            Box::leak(Box::new(exposition::Registry::new(
                [
                    (QUEUE_WAIT, LATENCY_BUCKETS),
                    (DECODE, LATENCY_BUCKETS),
                    (DECISION_DELAY, LATENCY_BUCKETS),
                    (SINK_WRITE, LATENCY_BUCKETS),
                    (SINK_REQUEST, LATENCY_BUCKETS),
                    (COMMIT_LAG, LATENCY_BUCKETS),
                    (END_TO_END, LATENCY_BUCKETS),
                    (RESTORE, LATENCY_BUCKETS),
                    (COMPACTION_PASS, LATENCY_BUCKETS),
                    (SINK_BATCH_SPANS, BATCH_BUCKETS),
                ],
                LATENCY_BUCKETS,
            )));
        // Another recorder may already be installed (a host program); ours still renders.
        let _ = metrics::set_global_recorder(registry);
        describe();
        registry
    })
}

/// Outcome label of a decision.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// Kept.
    Keep,
    /// Dropped.
    Drop,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Keep => "keep",
            Outcome::Drop => "drop",
        }
    }
}

/// Sink label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkLabel {
    /// The sampled topic.
    Kafka,
    /// Hot Parquet.
    Parquet,
    /// The dead-letter topic.
    DeadLetter,
    /// The decision log.
    DecisionLog,
    /// The rekey stage's repartition topic.
    Rekey,
    /// A configured OTLP exporter: `otlp_http/NAME` or `otlp_grpc/NAME`.
    Otlp(&'static str),
}

impl SinkLabel {
    /// The label of a configured OTLP sink (interned: the same name gives the same label).
    pub fn otlp(grpc: bool, name: &str) -> SinkLabel {
        static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
        let full = format!("{}/{name}", if grpc { "otlp_grpc" } else { "otlp_http" });
        let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = names.iter().find(|n| **n == full) {
            return SinkLabel::Otlp(n);
        }
        // Leaked once per configured sink name: a handful of bytes for the process's life.
        let n: &'static str = Box::leak(full.into_boxed_str());
        names.push(n);
        SinkLabel::Otlp(n)
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkLabel::Kafka => "kafka",
            SinkLabel::Parquet => "parquet",
            SinkLabel::DeadLetter => "dead_letter",
            SinkLabel::DecisionLog => "decision_log",
            SinkLabel::Rekey => "rekey",
            SinkLabel::Otlp(name) => name,
        }
    }
}

/// A sink's breaker is now in state `value` (0 closed, 1 half-open, 2 open).
pub fn breaker_state(sink: SinkLabel, value: f64) {
    gauge!(BREAKER_STATE, "sink" => sink.as_str()).set(value);
}

/// The histograms a partition records per record and per trace, looked up once: `histogram!`
/// at each record would find its series in the registry (a lock and a hash) every time.
#[derive(Clone)]
pub struct PartitionHistograms {
    queue_wait: metrics::Histogram,
    decode: metrics::Histogram,
    decision_delay: metrics::Histogram,
}

impl Default for PartitionHistograms {
    fn default() -> Self {
        PartitionHistograms {
            queue_wait: histogram!(QUEUE_WAIT),
            decode: histogram!(DECODE),
            decision_delay: histogram!(DECISION_DELAY),
        }
    }
}

impl std::fmt::Debug for PartitionHistograms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PartitionHistograms")
    }
}

impl PartitionHistograms {
    /// A record waited `d` in its partition's queue.
    pub fn queue_wait(&self, d: std::time::Duration) {
        self.queue_wait.record(d.as_secs_f64());
    }

    /// A record took `d` to scan and buffer.
    pub fn decoded(&self, d: std::time::Duration) {
        self.decode.record(d.as_secs_f64());
    }

    /// A trace was decided `d` (stream time) after its first span.
    pub fn decision_delay(&self, d: std::time::Duration) {
        self.decision_delay.record(d.as_secs_f64());
    }
}

/// A write of `spans` spans to `sink` was acknowledged `d` after it was handed over.
pub fn sink_write(sink: SinkLabel, d: std::time::Duration, spans: usize) {
    histogram!(SINK_WRITE, "sink" => sink.as_str()).record(d.as_secs_f64());
    histogram!(SINK_BATCH_SPANS, "sink" => sink.as_str()).record(spans as f64);
}

/// The Kafka producer was replaced after a fatal error.
pub fn producer_replaced() {
    counter!(PRODUCER_REPLACED).increment(1);
}

/// A record's offset was committed `d` after it was fetched.
pub fn commit_lag(d: std::time::Duration) {
    histogram!(COMMIT_LAG).record(d.as_secs_f64());
}

/// One request to `sink` was answered `d` after it was sent.
pub fn sink_request(sink: SinkLabel, d: std::time::Duration) {
    histogram!(SINK_REQUEST, "sink" => sink.as_str()).record(d.as_secs_f64());
}

/// A batching sink's adaptive target and backlog (spans).
pub fn sink_batching(sink: SinkLabel, target: usize, backlog: u64) {
    gauge!(SINK_BATCH_TARGET, "sink" => sink.as_str()).set(target as f64);
    gauge!(SINK_BACKLOG, "sink" => sink.as_str()).set(backlog as f64);
}

/// Kept traces whose first spans came in (were fetched) at `first_in` were acknowledged by
/// `sink` at `now` (all process monotonic time; a zero `first_in` is not known). The series is
/// looked up once for the batch.
pub fn end_to_end<'a>(
    sink: SinkLabel,
    first_in: impl IntoIterator<Item = &'a crate::clock::MonoTime>,
    now: crate::clock::MonoTime,
) {
    let mut h = None;
    for t in first_in {
        if *t != crate::clock::MonoTime::ZERO {
            h.get_or_insert_with(|| histogram!(END_TO_END, "sink" => sink.as_str()))
                .record(now.saturating_since(*t).as_secs_f64());
        }
    }
}

/// The runs of this process, whose counters `/metrics` shows (one outside tests; kept for the
/// process's life so the sums never go down).
static RUNS: std::sync::Mutex<Vec<std::sync::Arc<run::RunStats>>> =
    std::sync::Mutex::new(Vec::new());

/// Shows `stats` (a run's own counters) in `/metrics` from now on.
pub fn register_run(stats: &std::sync::Arc<run::RunStats>) {
    RUNS.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(std::sync::Arc::clone(stats));
    publish_runs();
}

/// Sets the counters the runs count (records, spans, bytes, decided and forced traces) to
/// their sums over the process's runs: each event is counted once, in its run's
/// [`run::RunStats`], and `/metrics` reads the same numbers the run's summary does.
pub fn publish_runs() {
    let total = run::RunStats::new();
    for r in RUNS.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        total.add(r);
    }
    let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let dead = n(&total.dead_letters);
    counter!(RECORDS_IN, "outcome" => "ok").absolute(n(&total.records).saturating_sub(dead));
    counter!(RECORDS_IN, "outcome" => "malformed").absolute(dead);
    counter!(SPANS_IN).absolute(n(&total.spans));
    counter!(BYTES_IN).absolute(n(&total.bytes));
    let mut forced: std::collections::BTreeMap<&'static str, u64> = [
        crate::store::Trigger::Overflow,
        crate::store::Trigger::TraceLimit,
    ]
    .into_iter()
    .map(|t| (t.as_str(), 0))
    .collect();
    for (k, count) in total.decided() {
        let outcome = if k.keep { Outcome::Keep } else { Outcome::Drop };
        let policy = k.policy.as_deref().unwrap_or("none").to_string();
        counter!(TRACES_DECIDED, "policy" => policy, "outcome" => outcome.as_str(), "trigger" => k.trigger)
            .absolute(count);
        if k.forced {
            *forced.entry(k.trigger).or_default() += count;
        }
    }
    for (trigger, count) in forced {
        counter!(FORCED_DECISIONS, "trigger" => trigger).absolute(count);
    }
}

/// The rekey stage's writes in flight.
pub fn rekey_pending(writes: usize, bytes: u64) {
    gauge!(REKEY_PENDING_WRITES).set(writes as f64);
    gauge!(REKEY_PENDING_BYTES).set(bytes as f64);
}

/// A record's timestamp was implausible (or missing): its arrival time stands in.
pub fn arrival_replaced() {
    counter!(ARRIVAL_REPLACED).increment(1);
}

/// Spans followed an earlier decision.
pub fn late_spans(outcome: Outcome, n: usize) {
    counter!(LATE_SPANS, "outcome" => outcome.as_str()).increment(n as u64);
}

/// A record went to the dead-letter topic.
pub fn dead_letter() {
    counter!(DEAD_LETTER_RECORDS).increment(1);
}

/// Spans written by a sink.
pub fn spans_out(sink: SinkLabel, n: usize) {
    counter!(SPANS_OUT, "sink" => sink.as_str()).increment(n as u64);
}

/// A sink write failed (and will be retried).
pub fn sink_error(sink: SinkLabel) {
    counter!(SINK_ERRORS, "sink" => sink.as_str()).increment(1);
}

/// Kept spans a best-effort sink dropped.
pub fn spans_dropped(sink: SinkLabel, n: usize) {
    counter!(SPANS_DROPPED, "sink" => sink.as_str()).increment(n as u64);
}

/// Kept spans a sink left out for good (the reason is logged).
pub fn spans_rejected(sink: SinkLabel, n: usize) {
    counter!(SPANS_REJECTED, "sink" => sink.as_str()).increment(n as u64);
}

/// A Parquet file was written to a tier.
pub fn archive_file(tier: &'static str, bytes: usize) {
    counter!(ARCHIVE_FILES, "tier" => tier).increment(1);
    counter!(ARCHIVE_BYTES, "tier" => tier).increment(bytes as u64);
}

/// The committed-offset lag of one partition (from librdkafka's statistics).
pub fn committed_lag(topic: &str, partition: i32, lag: i64) {
    let labels = [
        ("topic", topic.to_string()),
        ("partition", partition.to_string()),
    ];
    gauge!(COMMITTED_LAG, &labels).set(lag as f64);
}

/// The committed offset of one partition (from librdkafka's statistics).
pub fn committed_offset(topic: &str, partition: i32, offset: i64) {
    let labels = [
        ("topic", topic.to_string()),
        ("partition", partition.to_string()),
    ];
    gauge!(COMMITTED_OFFSET, &labels).set(offset as f64);
}

/// The longest gap between consumer polls per window: a poll thread that waits on anything
/// shows here (and in the rebalance protocol, as `max.poll.interval.ms` overruns).
#[derive(Debug, Default)]
pub struct PollGap {
    window: std::time::Duration,
    max: std::time::Duration,
    published: std::time::Duration,
}

impl PollGap {
    const WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

    /// One gap between two polls.
    pub fn observe(&mut self, gap: std::time::Duration) {
        self.window += gap;
        if gap > self.max {
            self.max = gap;
            if gap > self.published {
                self.published = gap;
                gauge!(POLL_GAP_MAX).set(gap.as_secs_f64());
            }
        }
        if self.window >= Self::WINDOW {
            gauge!(POLL_GAP_MAX).set(self.max.as_secs_f64());
            self.published = self.max;
            self.window = std::time::Duration::ZERO;
            self.max = std::time::Duration::ZERO;
        }
    }
}

/// A partition was paused for backpressure.
pub fn partition_paused() {
    counter!(PARTITION_PAUSES).increment(1);
}

/// A telemetry connection was closed at once (too many open).
pub fn telemetry_connection_refused() {
    counter!(TELEMETRY_REFUSED).increment(1);
}

/// Per-partition gauges, set once per tick.
#[derive(Debug, Clone, Copy, Default)]
pub struct PartitionGauges {
    /// Traces buffered.
    pub traces: usize,
    /// Bytes buffered.
    pub bytes: u64,
    /// Records queued for the task.
    pub queued: usize,
    /// Record bytes queued for the task.
    pub queued_bytes: usize,
    /// Pending sink acks.
    pub pending_acks: usize,
    /// Bytes those writes hold.
    pub pending_bytes: u64,
    /// Kept decisions remembered.
    pub cached_kept: usize,
    /// Dropped decisions remembered.
    pub cached_dropped: usize,
    /// The store's heap, by part (label value, bytes).
    pub heap: [(&'static str, usize); 5],
    /// Contexts the store holds.
    pub contexts: usize,
    /// Bytes of the partition's resource cache.
    pub resource_cache_bytes: usize,
    /// Decision-cache hits since the last publication.
    pub new_hits: u64,
    /// Decision-cache misses since the last publication.
    pub new_misses: u64,
}

/// Publishes one partition's gauges.
pub fn partition_gauges(topic: &str, partition: i32, g: PartitionGauges) {
    let labels = [
        ("topic", topic.to_string()),
        ("partition", partition.to_string()),
    ];
    gauge!(TRACES_BUFFERED, &labels).set(g.traces as f64);
    gauge!(BYTES_BUFFERED, &labels).set(g.bytes as f64);
    gauge!(PARTITION_QUEUE, &labels).set(g.queued as f64);
    gauge!(PARTITION_QUEUE_BYTES, &labels).set(g.queued_bytes as f64);
    gauge!(PENDING_ACKS, &labels).set(g.pending_acks as f64);
    gauge!(PENDING_BYTES, &labels).set(g.pending_bytes as f64);
    gauge!(STORE_CONTEXTS, &labels).set(g.contexts as f64);
    gauge!(RESOURCE_CACHE_BYTES, &labels).set(g.resource_cache_bytes as f64);
    for (part, n) in g.heap {
        gauge!(
            STORE_HEAP,
            "topic" => topic.to_string(),
            "partition" => partition.to_string(),
            "part" => part
        )
        .set(n as f64);
    }
    for (kind, n) in [
        ("sampled", g.cached_kept),
        ("non_sampled", g.cached_dropped),
    ] {
        gauge!(
            DECISION_CACHE_ENTRIES,
            "topic" => topic.to_string(),
            "partition" => partition.to_string(),
            "kind" => kind
        )
        .set(n as f64);
    }
    counter!(DECISION_CACHE_LOOKUPS, "result" => "hit").increment(g.new_hits);
    counter!(DECISION_CACHE_LOOKUPS, "result" => "miss").increment(g.new_misses);
}

/// Counts decisions written to the decision log.
pub fn decisions_logged(n: u64) {
    counter!(DECISIONS_LOGGED).increment(n);
}

/// Counts decisions restored from the decision log.
pub fn decisions_restored(n: u64) {
    counter!(DECISIONS_RESTORED).increment(n);
}

/// A policy's evaluation failed on one trace.
pub fn policy_evaluation_error(policy: &str) {
    counter!(POLICY_EVALUATION_ERRORS, "policy" => policy.to_string()).increment(1);
}

/// Counts one policy reload.
pub fn policy_reload(applied: bool) {
    counter!(POLICY_RELOADS, "outcome" => if applied { "applied" } else { "rejected" })
        .increment(1);
}

/// Counts one input batch that could not be decompressed.
pub fn undecodable_batch(reason: &'static str) {
    counter!(UNDECODABLE_BATCHES, "reason" => reason).increment(1);
}

/// The memory formula of this process, linear in the partitions owned: (fixed, per partition).
static MEMORY_FORMULA: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// Partitions owned now (and the memory bound that follows from them).
pub fn partitions_assigned(n: usize) {
    gauge!(PARTITIONS_ASSIGNED).set(n as f64);
    let fixed = MEMORY_FORMULA[0].load(Ordering::Relaxed);
    if fixed > 0 {
        let per = MEMORY_FORMULA[1].load(Ordering::Relaxed);
        gauge!(MEMORY_BOUND).set((fixed + per * n as u64) as f64);
    }
}

/// What the configuration says of memory: the formula's fixed part and its part per partition
/// owned (`Config::memory_bound`), and `store.max_bytes`.
#[derive(Debug, Clone, Copy)]
pub struct MemoryBudget {
    /// Bytes whatever the partitions.
    pub fixed: u64,
    /// Bytes per partition owned.
    pub per_partition: u64,
    /// `store.max_bytes`.
    pub store_max_bytes: u64,
}

/// At start: the gauges that follow from the configuration, and every counter an alert or a
/// dashboard rate reads, at zero, so that "none yet" is a 0 and not a missing series.
pub fn started(memory: MemoryBudget, sinks: &[SinkLabel]) {
    MEMORY_FORMULA[0].store(memory.fixed, Ordering::Relaxed);
    MEMORY_FORMULA[1].store(memory.per_partition, Ordering::Relaxed);
    gauge!(MEMORY_BOUND).set(memory.fixed as f64);
    gauge!(STORE_MAX_BYTES).set(memory.store_max_bytes as f64);
    publish_runs();
    for c in [DEAD_LETTER_RECORDS, RESTORE_FAILURES] {
        counter!(c).absolute(0);
    }
    for outcome in [Outcome::Keep, Outcome::Drop] {
        counter!(LATE_SPANS, "outcome" => outcome.as_str()).absolute(0);
    }
    for &sink in sinks {
        for c in [SPANS_OUT, SINK_ERRORS, SPANS_DROPPED, SPANS_REJECTED] {
            counter!(c, "sink" => sink.as_str()).absolute(0);
        }
    }
}

/// Before each scrape: the runs' counters, and the gauges read from the process itself.
pub fn scraped(health: &Health) {
    publish_runs();
    if let Some(rss) = rss_bytes() {
        gauge!(PROCESS_RSS).set(rss as f64);
    }
    gauge!(READY).set(if health.is_ready() { 1.0 } else { 0.0 });
}

/// A partition's decision log was restored (`ok`) or could not be read.
pub fn restore_finished(d: std::time::Duration, ok: bool) {
    histogram!(RESTORE).record(d.as_secs_f64());
    if !ok {
        counter!(RESTORE_FAILURES).increment(1);
    }
}

/// One lifecycle pass ended with `result` (`ok`, `skipped`, `error`) after `d`.
pub fn compaction_pass(d: std::time::Duration, result: &'static str) {
    counter!(COMPACTION_RUNS, "result" => result).increment(1);
    histogram!(COMPACTION_PASS).record(d.as_secs_f64());
    if result == "ok" {
        let now = crate::clock::system_wall_nanos() as f64 / 1e9;
        gauge!(COMPACTION_LAST_SUCCESS).set(now);
    }
}

/// At start of a compactor: its counters at zero.
pub fn compactor_started() {
    for result in ["ok", "skipped", "error"] {
        counter!(COMPACTION_RUNS, "result" => result).absolute(0);
    }
}

/// `telemetry:` — metrics and health.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Address of the `/metrics`, `/healthz` and `/readyz` endpoint; empty = off.
    pub listen: String,
    /// RED metrics from every span read.
    pub span_metrics: span_metrics::SpanMetricsConfig,
    /// Edges between services from every trace, at its decision.
    pub service_graph: service_graph::ServiceGraphConfig,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            listen: "127.0.0.1:9464".into(),
            span_metrics: span_metrics::SpanMetricsConfig::default(),
            service_graph: service_graph::ServiceGraphConfig::default(),
        }
    }
}

impl TelemetryConfig {
    /// Every problem of this section.
    pub fn check(&self, e: &mut Vec<crate::settings::ConfigError>) {
        if !self.listen.is_empty() && self.listen.parse::<std::net::SocketAddr>().is_err() {
            e.push(crate::settings::ConfigError::new(
                "telemetry.listen",
                format!("`{}` is not an address such as 127.0.0.1:9464", self.listen),
            ));
        }
        self.span_metrics.check(e);
        self.service_graph.check(e);
    }
}
