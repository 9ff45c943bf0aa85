//! Every metric tracesift emits, declared once, plus the health endpoints.
//!
//! Names are constants here; labels are small enums or configured names (policy, sink, topic,
//! partition), never ids. Stages emit per record or per batch, never per span. The Prometheus
//! recorder is installed once per process ([`install`]); [`serve`] exposes `/metrics`, `/healthz`
//! (the process is up) and `/readyz` (consuming and not shutting down) on `telemetry.listen`.

pub mod server;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use self::server::{http_get, serve, Server, TelemetryError};

/// Records read, by outcome (`ok`, `malformed`).
pub const RECORDS_IN: &str = "tracesift_records_in_total";
/// Spans read.
pub const SPANS_IN: &str = "tracesift_spans_in_total";
/// Record bytes read.
pub const BYTES_IN: &str = "tracesift_bytes_in_total";
/// Traces decided, by policy, outcome (`keep`, `drop`) and trigger.
pub const TRACES_DECIDED: &str = "tracesift_traces_decided_total";
/// Decisions made before a trace was complete (overflow, trace limit), by trigger.
pub const FORCED_DECISIONS: &str = "tracesift_forced_decisions_total";
/// Spans that arrived after their trace was decided, by outcome.
pub const LATE_SPANS: &str = "tracesift_late_spans_total";
/// Records written to the dead-letter topic.
pub const DEAD_LETTER_RECORDS: &str = "tracesift_dead_letter_records_total";
/// Traces buffered, per partition.
pub const TRACES_BUFFERED: &str = "tracesift_traces_buffered";
/// Span bytes buffered, per partition.
pub const BYTES_BUFFERED: &str = "tracesift_bytes_buffered";
/// Records between the high watermark and the committed offset, per partition.
pub const COMMITTED_LAG: &str = "tracesift_committed_offset_lag";
/// Longest gap between two polls of the consumer, seconds, over the last window (~10 s).
pub const POLL_GAP_MAX: &str = "tracesift_source_poll_gap_max_seconds";
/// Records queued between the consumer and a partition task, per partition.
pub const PARTITION_QUEUE: &str = "tracesift_partition_queue_records";
/// Decisions written to the decision log.
pub const DECISIONS_LOGGED: &str = "tracesift_decisions_logged_total";
/// Decisions restored from the decision log on partition assignment.
pub const DECISIONS_RESTORED: &str = "tracesift_decisions_restored_total";
/// Policy reloads (SIGHUP) by `outcome`: `applied` or `rejected` (the old policies kept running).
pub const POLICY_RELOADS: &str = "tracesift_policy_reloads_total";
/// Decisions remembered for late spans, per partition and `kind` (`sampled`, `non_sampled`).
pub const DECISION_CACHE_ENTRIES: &str = "tracesift_decision_cache_entries";
/// Decision-cache lookups by `result`: `hit` (a late span followed its trace's decision) or
/// `miss` (a span started a trace that is neither buffered nor remembered).
pub const DECISION_CACHE_LOOKUPS: &str = "tracesift_decision_cache_lookups_total";
/// Record bytes queued between the consumer and a partition task, per partition.
pub const PARTITION_QUEUE_BYTES: &str = "tracesift_partition_queue_bytes";
/// Sink writes not yet acknowledged, per partition.
pub const PENDING_ACKS: &str = "tracesift_sink_pending_acks";
/// Kept spans a best-effort sink dropped (retry budget spent, or its pending budget full).
pub const SPANS_DROPPED: &str = "tracesift_sink_dropped_spans_total";
/// A sink's circuit breaker: 0 closed, 1 half-open, 2 open.
pub const BREAKER_STATE: &str = "tracesift_sink_breaker_state";
/// Bytes the pending writes of a partition hold (against `sinks.max_pending_bytes`).
pub const PENDING_BYTES: &str = "tracesift_sink_pending_bytes";
/// Spans written, by sink.
pub const SPANS_OUT: &str = "tracesift_spans_out_total";
/// Sink write failures (retried), by sink.
pub const SINK_ERRORS: &str = "tracesift_sink_errors_total";
/// Kept spans a sink could not write for a reason retrying does not fix, by sink.
pub const SPANS_REJECTED: &str = "tracesift_sink_rejected_spans_total";
/// Parquet files written, by tier.
pub const ARCHIVE_FILES: &str = "tracesift_archive_files_total";
/// Parquet bytes written, by tier.
pub const ARCHIVE_BYTES: &str = "tracesift_archive_bytes_total";
/// Compacted files catalogued per tier (manifests), after the last compaction pass.
pub const ARCHIVE_TIER_FILES: &str = "tracesift_archive_tier_files";
/// Compacted bytes catalogued per tier (manifests), after the last compaction pass.
pub const ARCHIVE_TIER_BYTES: &str = "tracesift_archive_tier_bytes";
/// Compaction passes by `result`: `ok`, `skipped` (another compactor held the lease), `error`.
pub const COMPACTION_RUNS: &str = "tracesift_compaction_runs_total";
/// Rows written by compaction, and duplicate rows it removed (`kind`: `written`, `duplicate`).
pub const COMPACTION_ROWS: &str = "tracesift_compaction_rows_total";
/// Files moved between tiers and deleted by retention (`action`: `moved`, `expired`).
pub const LIFECYCLE_FILES: &str = "tracesift_lifecycle_files_total";
/// Partitions this instance owns.
pub const PARTITIONS_ASSIGNED: &str = "tracesift_partitions_assigned";
/// Input record batches the client could not decompress (`reason`: `codec_not_built`,
/// `corrupt`); the partition cannot advance past such a batch.
pub const UNDECODABLE_BATCHES: &str = "tracesift_source_undecodable_batches_total";
/// Times a partition was paused for backpressure.
pub const PARTITION_PAUSES: &str = "tracesift_partition_pauses_total";
/// Connections to the telemetry endpoint closed at once because [`server::MAX_CONNECTIONS`]
/// were open.
pub const TELEMETRY_REFUSED: &str = "tracesift_telemetry_connections_refused_total";

/// Resident memory of this process (read at every scrape).
pub const PROCESS_RSS: &str = "tracesift_process_resident_memory_bytes";
/// The README's memory formula for the partitions owned now: resident memory stays under it.
pub const MEMORY_BOUND: &str = "tracesift_memory_bound_bytes";
/// `store.max_bytes`: the span-byte budget of each partition's store.
pub const STORE_MAX_BYTES: &str = "tracesift_store_max_bytes";
/// 1 when `/readyz` answers ready, else 0 (read at every scrape).
pub const READY: &str = "tracesift_ready";
/// The group's committed offset of each owned partition (from librdkafka's statistics).
pub const COMMITTED_OFFSET: &str = "tracesift_committed_offset";
/// One partition's decision-log restore on assignment, seconds (histogram).
pub const RESTORE: &str = "tracesift_decision_restore_seconds";
/// Decision-log restores that failed (the partition then runs without its earlier decisions).
pub const RESTORE_FAILURES: &str = "tracesift_decision_restore_failures_total";
/// One pass of the archive lifecycle, seconds (histogram).
pub const COMPACTION_PASS: &str = "tracesift_compaction_pass_seconds";
/// Unix time of the end of the last pass that compacted every due hour.
pub const COMPACTION_LAST_SUCCESS: &str = "tracesift_compaction_last_success_timestamp_seconds";

/// Latency breakdown (histograms, seconds): a record's wait in its partition's queue (fetched →
/// taken by its task).
pub const QUEUE_WAIT: &str = "tracesift_queue_wait_seconds";
/// Reading one record into the store: scan (strict decode) and buffering.
pub const DECODE: &str = "tracesift_decode_seconds";
/// A trace's first span → its decision, in stream time (how long it waited to be complete).
pub const DECISION_DELAY: &str = "tracesift_decision_delay_seconds";
/// One write, handed to the sink → acknowledged durable, by `sink`.
pub const SINK_WRITE: &str = "tracesift_sink_write_seconds";
/// Spans per write, by `sink` (histogram).
pub const SINK_BATCH_SPANS: &str = "tracesift_sink_batch_spans";
/// Times the Kafka producer was replaced after a fatal error.
pub const PRODUCER_REPLACED: &str = "tracesift_producer_replaced_total";
/// A record fetched → its offset committed (sampled: one record per 100 ms per partition).
pub const COMMIT_LAG: &str = "tracesift_commit_lag_seconds";
/// One request to a batching sink (OTLP), sent → answered, by `sink`.
pub const SINK_REQUEST: &str = "tracesift_sink_request_seconds";
/// The adaptive batch target of a batching sink, in spans, by `sink`.
pub const SINK_BATCH_TARGET: &str = "tracesift_sink_batch_target_spans";
/// Spans cut into batches that wait for a request slot of a batching sink, by `sink`.
pub const SINK_BACKLOG: &str = "tracesift_sink_backlog_spans";
/// A kept trace's first span in (its record fetched) → the trace acknowledged by `sink`: the
/// figure operators compare with their latency goal (time spent in Kafka before the fetch is
/// the consumer lag, measured apart).
pub const END_TO_END: &str = "tracesift_end_to_end_seconds";

/// Buckets of the latency histograms: 1 ms to 10 min.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// Buckets of the spans-per-write histogram.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 50000.0,
];

fn describe() {
    describe_histogram!(
        QUEUE_WAIT,
        Unit::Seconds,
        "Record fetched → taken by its partition's task."
    );
    describe_histogram!(DECODE, Unit::Seconds, "Scan and buffer of one record.");
    describe_histogram!(
        DECISION_DELAY,
        Unit::Seconds,
        "A trace's first span → its decision (stream time)."
    );
    describe_histogram!(
        SINK_WRITE,
        Unit::Seconds,
        "One write handed to a sink → acknowledged, by sink."
    );
    describe_counter!(
        PRODUCER_REPLACED,
        Unit::Count,
        "Times the Kafka producer was replaced after a fatal error (idempotence state lost)."
    );
    describe_histogram!(
        COMMIT_LAG,
        Unit::Seconds,
        "A record fetched → its offset committed (sampled every 100 ms per partition)."
    );
    describe_histogram!(
        SINK_REQUEST,
        Unit::Seconds,
        "One request to a batching sink (OTLP), sent → answered, by sink."
    );
    describe_gauge!(
        SINK_BATCH_TARGET,
        Unit::Count,
        "Adaptive batch target of a batching sink (spans), by sink."
    );
    describe_gauge!(
        SINK_BACKLOG,
        Unit::Count,
        "Spans in cut batches waiting for a request slot, by sink."
    );
    describe_histogram!(
        SINK_BATCH_SPANS,
        Unit::Count,
        "Spans per sink write, by sink."
    );
    describe_histogram!(
        END_TO_END,
        Unit::Seconds,
        "A kept trace's first span fetched → acknowledged by the sink, by sink."
    );
    describe_counter!(
        RECORDS_IN,
        Unit::Count,
        "Records read, by outcome (ok, malformed)."
    );
    describe_counter!(SPANS_IN, Unit::Count, "Spans read.");
    describe_counter!(BYTES_IN, Unit::Bytes, "Record bytes read.");
    describe_counter!(
        TRACES_DECIDED,
        Unit::Count,
        "Traces decided, by policy, outcome and trigger."
    );
    describe_counter!(
        FORCED_DECISIONS,
        Unit::Count,
        "Traces decided early by a limit, by trigger."
    );
    describe_counter!(
        LATE_SPANS,
        Unit::Count,
        "Spans that followed an earlier decision, by outcome."
    );
    describe_counter!(
        DEAD_LETTER_RECORDS,
        Unit::Count,
        "Records sent to the dead-letter topic."
    );
    describe_gauge!(
        TRACES_BUFFERED,
        Unit::Count,
        "Traces buffered, per partition."
    );
    describe_gauge!(
        BYTES_BUFFERED,
        Unit::Bytes,
        "Span bytes buffered, per partition."
    );
    describe_gauge!(
        COMMITTED_LAG,
        Unit::Count,
        "High watermark minus committed offset, per partition."
    );
    describe_gauge!(
        POLL_GAP_MAX,
        Unit::Seconds,
        "Longest gap between two consumer polls over the last ~10 s window."
    );
    describe_gauge!(
        PARTITION_QUEUE,
        Unit::Count,
        "Records queued for a partition task."
    );
    describe_counter!(
        DECISIONS_LOGGED,
        Unit::Count,
        "Decisions written to the decision log."
    );
    describe_counter!(
        DECISIONS_RESTORED,
        Unit::Count,
        "Decisions restored from the decision log on partition assignment."
    );
    describe_counter!(
        POLICY_RELOADS,
        Unit::Count,
        "Policy reloads by outcome (applied, rejected)."
    );
    describe_gauge!(
        DECISION_CACHE_ENTRIES,
        Unit::Count,
        "Decisions remembered for late spans, by kind."
    );
    describe_counter!(
        DECISION_CACHE_LOOKUPS,
        Unit::Count,
        "Decision-cache lookups by result (hit: late span followed its decision; miss: new trace)."
    );
    describe_gauge!(
        PARTITION_QUEUE_BYTES,
        Unit::Bytes,
        "Record bytes queued for a partition task."
    );
    describe_gauge!(
        PENDING_ACKS,
        Unit::Count,
        "Sink writes awaiting acknowledgement, per partition."
    );
    describe_counter!(
        SPANS_DROPPED,
        Unit::Count,
        "Kept spans a best-effort sink dropped, by sink."
    );
    describe_gauge!(
        BREAKER_STATE,
        Unit::Count,
        "Circuit breaker of a sink: 0 closed, 1 half-open, 2 open."
    );
    describe_gauge!(
        PENDING_BYTES,
        Unit::Bytes,
        "Bytes held by sink writes awaiting acknowledgement, per partition."
    );
    describe_counter!(SPANS_OUT, Unit::Count, "Spans written, by sink.");
    describe_counter!(
        SINK_ERRORS,
        Unit::Count,
        "Sink write failures (retried), by sink."
    );
    describe_counter!(
        SPANS_REJECTED,
        Unit::Count,
        "Kept spans a sink left out for a reason retrying does not fix (logged with the reason), by sink."
    );
    describe_counter!(
        ARCHIVE_FILES,
        Unit::Count,
        "Parquet files written, by tier."
    );
    describe_counter!(
        ARCHIVE_BYTES,
        Unit::Bytes,
        "Parquet bytes written, by tier."
    );
    describe_gauge!(
        ARCHIVE_TIER_FILES,
        Unit::Count,
        "Compacted files per tier (from its manifest)."
    );
    describe_gauge!(
        ARCHIVE_TIER_BYTES,
        Unit::Bytes,
        "Compacted bytes per tier (from its manifest)."
    );
    describe_counter!(
        COMPACTION_RUNS,
        Unit::Count,
        "Compaction passes, by result (ok, skipped, error)."
    );
    describe_counter!(
        COMPACTION_ROWS,
        Unit::Count,
        "Rows written by compaction and duplicates removed, by kind."
    );
    describe_counter!(
        LIFECYCLE_FILES,
        Unit::Count,
        "Files moved between tiers or deleted by retention, by action."
    );
    describe_gauge!(
        PARTITIONS_ASSIGNED,
        Unit::Count,
        "Partitions owned by this instance."
    );
    describe_counter!(
        UNDECODABLE_BATCHES,
        Unit::Count,
        "Input record batches that could not be decompressed, by reason (the partition is stuck there)."
    );
    describe_counter!(
        PARTITION_PAUSES,
        Unit::Count,
        "Partition pauses for backpressure."
    );
    describe_counter!(
        TELEMETRY_REFUSED,
        Unit::Count,
        "Telemetry connections closed at once because the endpoint's connection limit was reached."
    );
    describe_gauge!(PROCESS_RSS, Unit::Bytes, "Resident memory of this process.");
    describe_gauge!(
        MEMORY_BOUND,
        Unit::Bytes,
        "The memory formula for the partitions owned now: resident memory stays under it."
    );
    describe_gauge!(
        STORE_MAX_BYTES,
        Unit::Bytes,
        "Span-byte budget of each partition's store (store.max_bytes)."
    );
    describe_gauge!(READY, Unit::Count, "1 when /readyz answers ready.");
    describe_gauge!(
        COMMITTED_OFFSET,
        Unit::Count,
        "The group's committed offset of each owned partition."
    );
    describe_histogram!(
        RESTORE,
        Unit::Seconds,
        "One partition's decision-log restore on assignment."
    );
    describe_counter!(
        RESTORE_FAILURES,
        Unit::Count,
        "Decision-log restores that failed (earlier decisions are not remembered)."
    );
    describe_histogram!(
        COMPACTION_PASS,
        Unit::Seconds,
        "One pass of the archive lifecycle."
    );
    describe_gauge!(
        COMPACTION_LAST_SUCCESS,
        Unit::Seconds,
        "Unix time of the last lifecycle pass that compacted every due hour."
    );
}

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for (m, buckets) in [
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
            ] {
                builder = match builder.set_buckets_for_metric(Matcher::Full(m.into()), buckets) {
                    Ok(b) => b,
                    // Only an empty bucket list is refused; ours are not empty.
                    Err(_) => PrometheusBuilder::new(),
                };
            }
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (a host program); ours still renders.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
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

/// A record waited `d` in its partition's queue.
pub fn queue_wait(d: std::time::Duration) {
    histogram!(QUEUE_WAIT).record(d.as_secs_f64());
}

/// A record took `d` to scan and buffer.
pub fn decoded(d: std::time::Duration) {
    histogram!(DECODE).record(d.as_secs_f64());
}

/// A trace was decided `d` (stream time) after its first span.
pub fn decision_delay(d: std::time::Duration) {
    histogram!(DECISION_DELAY).record(d.as_secs_f64());
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

/// A kept trace whose first span came in (was fetched) at `first_in` was acknowledged by
/// `sink` at `now` (both process monotonic time; a zero `first_in` is not known).
pub fn end_to_end(sink: SinkLabel, first_in: crate::clock::MonoTime, now: crate::clock::MonoTime) {
    if first_in != crate::clock::MonoTime::ZERO {
        histogram!(END_TO_END, "sink" => sink.as_str())
            .record(now.saturating_since(first_in).as_secs_f64());
    }
}

/// Quantiles `qs` (0..1) of histogram `metric` with label set `labels` (e.g. `sink="kafka"`)
/// read from a Prometheus text rendering, by linear interpolation inside the bucket that holds
/// each rank (as PromQL's `histogram_quantile`). `None` when it has no samples.
pub fn histogram_quantiles(
    rendered: &str,
    metric: &str,
    labels: &str,
    qs: &[f64],
) -> Option<Vec<f64>> {
    let prefix = match labels.is_empty() {
        true => format!("{metric}_bucket{{le=\""),
        false => format!("{metric}_bucket{{{labels},le=\""),
    };
    let mut buckets: Vec<(f64, f64)> = rendered
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    Some(
        qs.iter()
            .map(|q| {
                let rank = q * total;
                let mut lower = (0.0, 0.0);
                for &(le, count) in &buckets {
                    if count >= rank {
                        if le.is_infinite() {
                            return lower.0;
                        }
                        let width = count - lower.1;
                        let frac = if width > 0.0 {
                            (rank - lower.1) / width
                        } else {
                            1.0
                        };
                        return lower.0 + (le - lower.0) * frac;
                    }
                    lower = (le, count);
                }
                lower.0
            })
            .collect(),
    )
}

/// A record was read.
pub fn record_in(ok: bool, spans: usize, bytes: usize) {
    counter!(RECORDS_IN, "outcome" => if ok { "ok" } else { "malformed" }).increment(1);
    counter!(SPANS_IN).increment(spans as u64);
    counter!(BYTES_IN).increment(bytes as u64);
}

/// A trace was decided.
pub fn trace_decided(policy: &str, outcome: Outcome, trigger: &'static str, forced: bool) {
    counter!(TRACES_DECIDED, "policy" => policy.to_string(), "outcome" => outcome.as_str(), "trigger" => trigger)
        .increment(1);
    if forced {
        counter!(FORCED_DECISIONS, "trigger" => trigger).increment(1);
    }
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
    for outcome in ["ok", "malformed"] {
        counter!(RECORDS_IN, "outcome" => outcome).absolute(0);
    }
    for c in [SPANS_IN, BYTES_IN, DEAD_LETTER_RECORDS, RESTORE_FAILURES] {
        counter!(c).absolute(0);
    }
    for trigger in [
        crate::store::Trigger::Overflow,
        crate::store::Trigger::TraceLimit,
    ] {
        counter!(FORCED_DECISIONS, "trigger" => trigger.as_str()).absolute(0);
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

/// Before each scrape: the gauges read from the process itself.
pub fn scraped(health: &Health) {
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

/// Readiness shared between the pipeline and the health endpoint.
#[derive(Debug, Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
    /// Partitions whose decision cache is being restored from the decision log.
    restoring: Arc<std::sync::atomic::AtomicUsize>,
    /// A fault that holds readiness down, with when it was last seen (monotonic ms) and why.
    fault: Arc<std::sync::Mutex<Option<(u64, String)>>>,
}

/// A fault holds readiness down until it has not been seen for this long.
pub const FAULT_HOLD_MS: u64 = 60_000;

impl Health {
    /// Marks ready or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// True when ready: partitions assigned, no decision cache being restored, no fault.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && self.restoring.load(Ordering::Acquire) == 0
            && self.fault().is_none()
    }

    /// Records a fault seen at `now_ms` (monotonic): readiness stays down until it has not been
    /// seen for [`FAULT_HOLD_MS`].
    pub fn fault_seen(&self, now_ms: u64, why: impl Into<String>) {
        if let Ok(mut f) = self.fault.lock() {
            *f = Some((now_ms, why.into()));
        }
    }

    /// Clears a fault last seen [`FAULT_HOLD_MS`] or more before `now_ms`.
    pub fn expire_fault(&self, now_ms: u64) {
        if let Ok(mut f) = self.fault.lock() {
            if f.as_ref()
                .is_some_and(|(at, _)| now_ms.saturating_sub(*at) >= FAULT_HOLD_MS)
            {
                *f = None;
            }
        }
    }

    /// The fault holding readiness down, if any.
    pub fn fault(&self) -> Option<String> {
        self.fault
            .lock()
            .ok()
            .and_then(|f| f.as_ref().map(|(_, why)| why.clone()))
    }

    /// Marks one partition's restore as running until the guard is dropped.
    pub fn restoring(&self) -> RestoreGuard {
        self.restoring.fetch_add(1, Ordering::AcqRel);
        RestoreGuard(Arc::clone(&self.restoring))
    }
}

/// Holds readiness down while a partition restores its decisions.
#[derive(Debug)]
pub struct RestoreGuard(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for RestoreGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// This process's peak resident set size (`VmHWM`), where the platform reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_bytes("VmHWM:")
}

/// This process's resident set size now (`VmRSS`), where the platform reports it.
pub fn rss_bytes() -> Option<u64> {
    proc_status_bytes("VmRSS:")
}

fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `telemetry:` — metrics and health.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Address of the `/metrics`, `/healthz` and `/readyz` endpoint; empty = off.
    pub listen: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            listen: "127.0.0.1:9464".into(),
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
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantiles_come_from_the_buckets() {
        let text = "x_bucket{sink=\"kafka\",le=\"0.1\"} 0\nx_bucket{sink=\"kafka\",le=\"1\"} 50\nx_bucket{sink=\"kafka\",le=\"2\"} 99\nx_bucket{sink=\"kafka\",le=\"+Inf\"} 100\nx_bucket{sink=\"parquet\",le=\"1\"} 7\n";
        let q = super::histogram_quantiles(text, "x", "sink=\"kafka\"", &[0.5, 0.99, 1.0]).unwrap();
        assert!((q[0] - 1.0).abs() < 1e-9, "{q:?}");
        assert!((q[1] - 2.0).abs() < 1e-9, "{q:?}");
        assert!(
            (q[2] - 2.0).abs() < 1e-9,
            "past the last finite bucket: {q:?}"
        );
        assert!(super::histogram_quantiles(text, "x", "sink=\"none\"", &[0.5]).is_none());
    }
}
