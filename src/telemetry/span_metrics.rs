//! RED metrics from every span: the series table behind the Collector's `spanmetrics`
//! connector and Tempo's span metrics — calls and a duration histogram per (service, span
//! name, kind, status and configured dimensions), at most `aggregation_cardinality_limit`
//! series (the rest fold into one `otel_metric_overflow="true"` series, counted), series
//! unseen for `metrics_expiration` dropped, and a key already seen found from borrowed values
//! without allocating. Fed by every partition's scan (every span read, kept or not) when
//! `telemetry.span_metrics.enabled`; at each decision a kept trace's spans add their adjusted
//! counts to the sampled estimate and become the exemplars of their buckets, so an exemplar
//! always opens a trace that was kept. The service graph ([`super::service_graph`]) shares the
//! table and the recorder.

use crate::otlp::{key_hash, PassHasher};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::exposition::{Exemplar, ExemplarLabels, Kind, Writer};
use super::service_graph::{ServiceGraph, ServiceGraphConfig};
use crate::otlp::fields::{AnyRef, KvListRef, SpanRanges};
use crate::otlp::{enum_name, ScannedSpan, SpanRef, SPAN_KIND_NAMES, STATUS_CODE_NAMES};

/// Whose names the series carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// The Collector's `spanmetrics` connector: `traces_span_metrics_calls_total`,
    /// `traces_span_metrics_duration_seconds`; labels `service_name`, `span_name`,
    /// `span_kind`, `status_code`; exemplars `trace_id`, `span_id`.
    Collector,
    /// Tempo's metrics-generator: `traces_spanmetrics_calls_total`,
    /// `traces_spanmetrics_latency`; labels `service`, `span_name`, `span_kind`,
    /// `status_code`; exemplars `traceID`.
    Tempo,
}

impl Naming {
    /// The labels exemplars are written with.
    pub fn exemplar_labels(self) -> ExemplarLabels {
        match self {
            Naming::Collector => ExemplarLabels {
                trace: "trace_id",
                span: Some("span_id"),
            },
            Naming::Tempo => ExemplarLabels {
                trace: "traceID",
                span: None,
            },
        }
    }
}

/// What the table is built with.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanMetricsSettings {
    /// Names and labels.
    pub naming: Naming,
    /// The prefix of the Collector naming's metric names (`traces_span_metrics`).
    pub namespace: String,
    /// The standard labels left out (indexes 0..4: service, span name, kind, status).
    pub excluded: [bool; 4],
    /// Label names after the four standard ones (configured dimensions), in order.
    pub dimensions: Vec<String>,
    /// Histogram upper bounds, seconds, increasing.
    pub buckets: Vec<f64>,
    /// Most series; past it spans count in the overflow series.
    pub cardinality_limit: usize,
    /// A series unseen for this long (ms of stream time) is dropped; 0 = never.
    pub expiration_ms: u64,
}

/// The Collector connector's default buckets, in seconds.
pub const COLLECTOR_BUCKETS: [f64; 16] = [
    0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.4, 2.0, 5.0, 10.0, 15.0,
];

/// The name of the sampled estimate's counter.
pub const ESTIMATED_CALLS: &str = "tracesift_sampled_span_calls_estimated_total";

/// The label value of a span kind, as the Collector writes it (`SPAN_KIND_SERVER`).
pub fn kind_label(kind: i32) -> &'static str {
    enum_name(&SPAN_KIND_NAMES, kind).unwrap_or(SPAN_KIND_NAMES[0])
}

/// The label value of a status code, as the Collector writes it (`STATUS_CODE_ERROR`).
pub fn status_label(code: i32) -> &'static str {
    enum_name(&STATUS_CODE_NAMES, code).unwrap_or(STATUS_CODE_NAMES[0])
}

// ---------------------------------------------------------------------------------------------
// A histogram with exemplars, and a bounded table of labelled rows (shared with the graph)
// ---------------------------------------------------------------------------------------------

/// Counts per bucket (not cumulative, +Inf last), their sum, and per bucket the latest
/// exemplar (allocated with the first one).
#[derive(Debug, Clone, Default)]
pub(crate) struct Hist {
    counts: Box<[u64]>,
    sum: f64,
    exemplars: Option<Box<[Option<Exemplar>]>>,
}

impl Hist {
    fn bucket(bounds: &[f64], v: f64) -> usize {
        bounds.iter().position(|b| v <= *b).unwrap_or(bounds.len())
    }

    pub(crate) fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; bounds.len() + 1].into_boxed_slice();
        }
        self.counts[Self::bucket(bounds, v)] += 1;
        self.sum += v;
    }

    /// Makes `e` the exemplar of the bucket its value falls in.
    pub(crate) fn exemplar(&mut self, bounds: &[f64], e: Exemplar) {
        let slots = self
            .exemplars
            .get_or_insert_with(|| vec![None; bounds.len() + 1].into_boxed_slice());
        slots[Self::bucket(bounds, e.value)] = Some(e);
    }

    pub(crate) fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub(crate) fn write(
        &self,
        w: &mut Writer<'_>,
        name: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
        exemplar_labels: ExemplarLabels,
    ) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for i in 0..=bounds.len() {
            cumulative += self.counts.get(i).copied().unwrap_or(0);
            let le = bounds.get(i).copied().unwrap_or(f64::INFINITY);
            let e = self
                .exemplars
                .as_ref()
                .and_then(|x| x[i].as_ref())
                .map(|e| (e, exemplar_labels));
            w.sample(&bucket, labels, Some(le), cumulative as f64, e);
        }
        w.sample(&format!("{name}_sum"), labels, None, self.sum, None);
        w.sample(
            &format!("{name}_count"),
            labels,
            None,
            cumulative as f64,
            None,
        );
    }
}

#[derive(Debug, Clone)]
struct Row<T> {
    /// Label values, each as a 2-byte length and its bytes (empty for the overflow row).
    key: Box<[u8]>,
    hash: u64,
    /// The next row with the same hash (`NONE` ends the chain).
    next: u32,
    last_seen_ms: u64,
    data: T,
}

const NONE: u32 = u32::MAX;

impl<T> Row<T> {
    /// The label values (the key's pieces).
    fn values(&self) -> Vec<&str> {
        let mut out = Vec::new();
        let mut k = &self.key[..];
        while k.len() >= 2 {
            let n = usize::from(u16::from_le_bytes([k[0], k[1]]));
            let v = k.get(2..2 + n).unwrap_or_default();
            out.push(std::str::from_utf8(v).unwrap_or_default());
            k = k.get(2 + n..).unwrap_or_default();
        }
        out
    }
}

/// Rows of data by label values: at most `limit` rows, the rest folded into one overflow
/// row; a row already held found from borrowed values without allocating (the values are
/// laid end to end in a reused buffer, hashed eight bytes at a time and compared once).
#[derive(Debug)]
pub(crate) struct Table<T> {
    rows: Vec<Row<T>>,
    /// Hash of the key → the first row with it (the others chained through `next`).
    index: HashMap<u64, u32, std::hash::BuildHasherDefault<PassHasher>>,
    overflow: Row<T>,
    /// Observations counted in the overflow row.
    overflowed: u64,
    limit: usize,
    scratch: Vec<u8>,
}

/// Appends one label value to a key: its length (2 bytes) and its bytes, cut at
/// [`MAX_LABEL_BYTES`] on a character boundary (the values are UTF-8 the scan checked).
pub(crate) fn push_value(key: &mut Vec<u8>, v: &[u8]) {
    let mut end = v.len().min(MAX_LABEL_BYTES);
    while end < v.len() && end > 0 && v[end] & 0xc0 == 0x80 {
        end -= 1;
    }
    key.extend_from_slice(&(end as u16).to_le_bytes());
    key.extend_from_slice(&v[..end]);
}

impl<T: Default> Table<T> {
    pub(crate) fn new(limit: usize) -> Table<T> {
        Table {
            rows: Vec::new(),
            index: HashMap::default(),
            overflow: Row {
                key: Box::new([]),
                hash: 0,
                next: NONE,
                last_seen_ms: 0,
                data: T::default(),
            },
            overflowed: 0,
            limit,
            scratch: Vec::with_capacity(256),
        }
    }

    /// The row whose key is `key`.
    fn position(&self, hash: u64, key: &[u8]) -> Option<usize> {
        let mut i = *self.index.get(&hash)?;
        loop {
            let r = &self.rows[i as usize];
            if r.hash == hash && *r.key == *key {
                return Some(i as usize);
            }
            if r.next == NONE {
                return None;
            }
            i = r.next;
        }
    }

    /// The row of `key` (made if there is room), or `None` for the overflow row (counted).
    fn slot(&mut self, key: &[u8], now_ms: u64) -> Option<usize> {
        let hash = key_hash(key);
        let i = match self.position(hash, key) {
            Some(i) => i,
            None if self.rows.len() >= self.limit => {
                self.overflowed += 1;
                self.overflow.last_seen_ms = now_ms;
                return None;
            }
            None => {
                let i = self.rows.len() as u32;
                let next = self.index.insert(hash, i).unwrap_or(NONE);
                self.rows.push(Row {
                    key: key.into(),
                    hash,
                    next,
                    last_seen_ms: now_ms,
                    data: T::default(),
                });
                i as usize
            }
        };
        let r = &mut self.rows[i];
        r.last_seen_ms = r.last_seen_ms.max(now_ms);
        Some(i)
    }

    /// The row of a key laid out by [`push_value`] (made if there is room), else the
    /// overflow row (counted).
    pub(crate) fn row_key(&mut self, key: &[u8], now_ms: u64) -> &mut T {
        match self.slot(key, now_ms) {
            Some(i) => &mut self.rows[i].data,
            None => &mut self.overflow.data,
        }
    }

    /// The row of `values` (each cut at [`MAX_LABEL_BYTES`]), made if there is room, else
    /// the overflow row (counted).
    pub(crate) fn row(&mut self, values: &[&str], now_ms: u64) -> &mut T {
        let mut key = std::mem::take(&mut self.scratch);
        key.clear();
        for v in values.iter().take(MAX_LABELS) {
            push_value(&mut key, v.as_bytes());
        }
        let slot = self.slot(&key, now_ms);
        self.scratch = key;
        match slot {
            Some(i) => &mut self.rows[i].data,
            None => &mut self.overflow.data,
        }
    }

    /// The row of a laid-out key if held (never made, never the overflow row).
    pub(crate) fn existing_key(&mut self, key: &[u8]) -> Option<&mut T> {
        let i = self.position(key_hash(key), key)?;
        Some(&mut self.rows[i].data)
    }

    /// The overflow row.
    pub(crate) fn overflow_row(&mut self) -> &mut T {
        &mut self.overflow.data
    }

    /// Drops the rows unseen since `now_ms - expiration_ms` (0 = never).
    pub(crate) fn expire(&mut self, now_ms: u64, expiration_ms: u64) {
        if expiration_ms == 0 {
            return;
        }
        let cutoff = now_ms.saturating_sub(expiration_ms);
        let before = self.rows.len();
        self.rows.retain(|r| r.last_seen_ms >= cutoff);
        if self.rows.len() != before {
            self.index.clear();
            for (i, r) in self.rows.iter_mut().enumerate() {
                r.next = self.index.insert(r.hash, i as u32).unwrap_or(NONE);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    pub(crate) fn overflowed(&self) -> u64 {
        self.overflowed
    }

    /// Every row with its label values, then the overflow row (no values) if it was used.
    pub(crate) fn rows(&self) -> impl Iterator<Item = (Vec<&str>, &T)> {
        self.rows
            .iter()
            .chain((self.overflowed > 0).then_some(&self.overflow))
            .map(|r| (r.values(), &r.data))
    }

    /// The row of `values` by a walk over every row (tests and tools).
    pub(crate) fn find(&self, values: &[&str]) -> Option<&T> {
        let want: Vec<&str> = values.iter().map(|v| truncate(v)).collect();
        self.rows
            .iter()
            .find(|r| r.values() == want)
            .map(|r| &r.data)
    }
}

/// The label pairs of a row: `names` zipped with its values, skipping empty values (a label
/// with an empty value is an absent label) and names marked `skip`; the overflow row has
/// only `otel_metric_overflow="true"`.
pub(crate) fn label_pairs<'a>(names: &'a [String], values: &[&'a str]) -> Vec<(&'a str, &'a str)> {
    if values.is_empty() {
        return vec![("otel_metric_overflow", "true")];
    }
    names
        .iter()
        .zip(values.iter())
        .filter(|(n, v)| !n.is_empty() && !v.is_empty())
        .map(|(n, v)| (n.as_str(), *v))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The span-metrics table
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct SpanRow {
    calls: u64,
    duration: Hist,
    /// Sum of the adjusted counts of this series' spans in kept traces.
    estimated: f64,
}

/// The series table.
#[derive(Debug)]
pub struct SpanMetrics {
    settings: SpanMetricsSettings,
    table: Table<SpanRow>,
    /// Rendered label names: the four standard ones (empty when excluded), then the
    /// dimensions sanitized.
    label_names: Vec<String>,
}

impl SpanMetrics {
    /// An empty table.
    pub fn new(settings: SpanMetricsSettings) -> SpanMetrics {
        let std = match settings.naming {
            Naming::Collector => ["service_name", "span_name", "span_kind", "status_code"],
            Naming::Tempo => ["service", "span_name", "span_kind", "status_code"],
        };
        let label_names = std
            .iter()
            .zip(settings.excluded)
            .map(|(n, x)| if x { String::new() } else { n.to_string() })
            .chain(settings.dimensions.iter().map(|d| sanitize(d)))
            .collect();
        SpanMetrics {
            table: Table::new(settings.cardinality_limit),
            settings,
            label_names,
        }
    }

    /// Counts one span: `values` are service, span name, kind, status and the dimensions (as
    /// many as configured), `duration_ns` its end minus start, `now_ms` stream time.
    pub fn observe(&mut self, values: &[&str], duration_ns: u64, now_ms: u64) {
        let row = self.table.row(values, now_ms);
        row.calls += 1;
        row.duration
            .observe(&self.settings.buckets, duration_ns as f64 / 1e9);
    }

    /// [`SpanMetrics::observe`] with the label values laid out by [`push_value`].
    fn observe_key(&mut self, key: &[u8], duration_ns: u64, now_ms: u64) {
        let row = self.table.row_key(key, now_ms);
        row.calls += 1;
        row.duration
            .observe(&self.settings.buckets, duration_ns as f64 / 1e9);
    }

    /// A span of a kept trace: its adjusted count goes to the series' estimate and, if
    /// given, `exemplar` becomes its bucket's exemplar. A series no longer held (expired, or
    /// its span folded into the overflow) puts the estimate on the overflow series.
    pub fn kept(&mut self, values: &[&str], adjusted: f64, exemplar: Option<Exemplar>) {
        let mut key = Vec::new();
        for v in values.iter().take(MAX_LABELS) {
            push_value(&mut key, v.as_bytes());
        }
        self.kept_key(&key, adjusted, exemplar);
    }

    fn kept_key(&mut self, key: &[u8], adjusted: f64, exemplar: Option<Exemplar>) {
        let buckets = &self.settings.buckets;
        match self.table.existing_key(key) {
            Some(row) => {
                row.estimated += adjusted;
                if let Some(e) = exemplar {
                    row.duration.exemplar(buckets, e);
                }
            }
            None => self.table.overflow_row().estimated += adjusted,
        }
    }

    /// Drops the series unseen since `now_ms - expiration`.
    pub fn expire(&mut self, now_ms: u64) {
        self.table.expire(now_ms, self.settings.expiration_ms);
    }

    /// Number of series (the overflow series not counted).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when no series is held.
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// Spans counted in the overflow series.
    pub fn overflowed(&self) -> u64 {
        self.table.overflowed()
    }

    /// Calls of the series with these label values (tests and tools).
    pub fn calls(&self, values: &[&str]) -> Option<u64> {
        self.table.find(values).map(|r| r.calls)
    }

    /// The sampled estimate of the series with these label values.
    pub fn estimated(&self, values: &[&str]) -> Option<f64> {
        self.table.find(values).map(|r| r.estimated)
    }

    fn names(&self) -> (String, String) {
        match self.settings.naming {
            Naming::Collector => {
                let ns = sanitize(&self.settings.namespace);
                let ns = if ns.is_empty() {
                    String::new()
                } else {
                    format!("{ns}_")
                };
                (format!("{ns}calls_total"), format!("{ns}duration_seconds"))
            }
            Naming::Tempo => (
                "traces_spanmetrics_calls_total".into(),
                "traces_spanmetrics_latency".into(),
            ),
        }
    }

    /// The table's families into `w`.
    pub fn write(&self, w: &mut Writer<'_>) {
        let (calls, duration) = self.names();
        w.family(
            "tracesift_span_metrics_series",
            Kind::Gauge,
            "Span-metrics series held (at most telemetry.span_metrics.aggregation_cardinality_limit).",
        );
        w.sample(
            "tracesift_span_metrics_series",
            &[],
            None,
            self.table.len() as f64,
            None,
        );
        w.family(
            "tracesift_span_metrics_overflow_spans_total",
            Kind::Counter,
            "Spans counted in the overflow series (their key came past the cardinality limit).",
        );
        w.sample(
            "tracesift_span_metrics_overflow_spans_total",
            &[],
            None,
            self.table.overflowed() as f64,
            None,
        );
        w.family(
            &calls,
            Kind::Counter,
            "Spans read (kept or not), by series.",
        );
        for (values, row) in self.table.rows() {
            let labels = label_pairs(&self.label_names, &values);
            w.sample(&calls, &labels, None, row.calls as f64, None);
        }
        w.family(
            &duration,
            Kind::Histogram,
            "Span durations (end - start), by series; exemplars are spans of kept traces.",
        );
        let exemplar_labels = self.settings.naming.exemplar_labels();
        for (values, row) in self.table.rows() {
            let labels = label_pairs(&self.label_names, &values);
            row.duration.write(
                w,
                &duration,
                &labels,
                &self.settings.buckets,
                exemplar_labels,
            );
        }
        w.family(
            ESTIMATED_CALLS,
            Kind::Counter,
            "Calls estimated from kept spans alone (each weighted by its adjusted count, 1/p), by the span-metrics series: compare with the calls counted from every span.",
        );
        for (values, row) in self.table.rows() {
            let labels = label_pairs(&self.label_names, &values);
            w.sample(ESTIMATED_CALLS, &labels, None, row.estimated, None);
        }
    }

    /// The table in the Prometheus text format (tests and tools).
    pub fn render(&self, out: &mut String) {
        let mut w = Writer::new(out, super::exposition::Format::Prometheus);
        self.write(&mut w);
    }
}

/// Most labels of a row (four standard ones and the dimensions).
const MAX_LABELS: usize = 4 + MAX_DIMENSIONS;

/// Longest label value kept, in bytes.
pub const MAX_LABEL_BYTES: usize = 256;

fn truncate(v: &str) -> &str {
    if v.len() <= MAX_LABEL_BYTES {
        return v;
    }
    let mut end = MAX_LABEL_BYTES;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    &v[..end]
}

/// A label name as Prometheus accepts it (`http.route` → `http_route`).
fn sanitize(name: &str) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if c.is_ascii_alphanumeric() && !(i == 0 && c.is_ascii_digit()) || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Configuration, and the process's table fed from the partitions' scans
// ---------------------------------------------------------------------------------------------

/// An extra label: a span (else resource) attribute, or `default` when neither has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dimension {
    /// The attribute key (the label is its name with `.` as `_`).
    pub name: String,
    /// The value when the attribute is missing (else the label is empty, i.e. absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// `histogram:` in the connector's words (`histogram.explicit.buckets`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistogramConfig {
    /// Explicit bucket bounds.
    pub explicit: ExplicitBuckets,
}

/// `histogram.explicit:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplicitBuckets {
    /// Upper bounds, increasing (`[2ms, 4ms, …, 15s]`, the connector's).
    pub buckets: Vec<crate::settings::duration::Dur>,
}

/// Histogram bounds as written from seconds.
pub fn durations(seconds: &[f64]) -> Vec<crate::settings::duration::Dur> {
    seconds
        .iter()
        .map(|s| std::time::Duration::from_secs_f64(*s).into())
        .collect()
}

impl Default for HistogramConfig {
    fn default() -> Self {
        HistogramConfig {
            explicit: ExplicitBuckets {
                buckets: durations(&COLLECTOR_BUCKETS),
            },
        }
    }
}

/// `exemplars:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExemplarsConfig {
    /// Attach exemplars (spans of kept traces) to duration buckets (OpenMetrics scrapes).
    pub enabled: bool,
}

impl Default for ExemplarsConfig {
    fn default() -> Self {
        ExemplarsConfig { enabled: true }
    }
}

/// `telemetry.span_metrics:` — RED metrics from every span read, before sampling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpanMetricsConfig {
    /// Count every span read (kept or not) on `/metrics`.
    pub enabled: bool,
    /// `collector` (the `spanmetrics` connector's names) or `tempo`.
    pub naming: NamingConfig,
    /// Prefix of the metric names under the collector naming (dots become `_`).
    pub namespace: String,
    /// Extra labels from span or resource attributes.
    pub dimensions: Vec<Dimension>,
    /// Standard labels left out: `service.name`, `span.name`, `span.kind`, `status.code`
    /// (or as the labels read: `service_name`, …).
    pub exclude_dimensions: Vec<String>,
    /// Duration histogram bounds.
    pub histogram: HistogramConfig,
    /// Most series held; spans of further keys count in one `otel_metric_overflow="true"`
    /// series.
    pub aggregation_cardinality_limit: usize,
    /// A series not seen for this long (stream time) is dropped; 0s = never.
    #[serde(with = "crate::settings::duration")]
    pub metrics_expiration: std::time::Duration,
    /// Exemplars on the duration buckets.
    pub exemplars: ExemplarsConfig,
}

/// `naming:` as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NamingConfig {
    /// The Collector's connector.
    Collector,
    /// Tempo's metrics-generator.
    Tempo,
}

impl Default for SpanMetricsConfig {
    fn default() -> Self {
        SpanMetricsConfig {
            enabled: false,
            naming: NamingConfig::Collector,
            namespace: "traces.span.metrics".into(),
            dimensions: Vec::new(),
            exclude_dimensions: Vec::new(),
            histogram: HistogramConfig::default(),
            aggregation_cardinality_limit: 10_000,
            metrics_expiration: std::time::Duration::from_secs(300),
            exemplars: ExemplarsConfig::default(),
        }
    }
}

/// The standard labels by the names `exclude_dimensions` accepts.
const STANDARD: [[&str; 2]; 4] = [
    ["service.name", "service_name"],
    ["span.name", "span_name"],
    ["span.kind", "span_kind"],
    ["status.code", "status_code"],
];

/// Checks a list of histogram bounds.
pub(crate) fn check_buckets(
    path: String,
    b: &[crate::settings::duration::Dur],
    e: &mut Vec<crate::settings::ConfigError>,
) {
    if b.is_empty() || b.windows(2).any(|w| *w[0] >= *w[1]) {
        e.push(crate::settings::ConfigError::new(
            path,
            "at least one bound, increasing, e.g. [5ms, 50ms, 500ms, 5s]",
        ));
    }
}

impl SpanMetricsConfig {
    /// Every problem of this block.
    pub fn check(&self, e: &mut Vec<crate::settings::ConfigError>) {
        let p = "telemetry.span_metrics";
        check_buckets(
            format!("{p}.histogram.explicit.buckets"),
            &self.histogram.explicit.buckets,
            e,
        );
        if !(1..=1_000_000).contains(&self.aggregation_cardinality_limit) {
            e.push(crate::settings::ConfigError::new(
                format!("{p}.aggregation_cardinality_limit"),
                "between 1 and 1000000 series",
            ));
        }
        if self.dimensions.len() > MAX_DIMENSIONS {
            e.push(crate::settings::ConfigError::new(
                format!("{p}.dimensions"),
                format!("at most {MAX_DIMENSIONS} dimensions"),
            ));
        }
        for (i, d) in self.dimensions.iter().enumerate() {
            if d.name.is_empty() {
                e.push(crate::settings::ConfigError::new(
                    format!("{p}.dimensions[{i}].name"),
                    "an attribute key is required",
                ));
            }
        }
        for (i, x) in self.exclude_dimensions.iter().enumerate() {
            if !STANDARD.iter().any(|s| s.contains(&x.as_str())) {
                e.push(crate::settings::ConfigError::new(
                    format!("{p}.exclude_dimensions[{i}]"),
                    format!(
                        "`{x}` is not a standard label; write one of service.name, span.name, span.kind, status.code"
                    ),
                ));
            }
        }
        let ns = sanitize(&self.namespace);
        if ns.starts_with(|c: char| c.is_ascii_digit())
            || self.namespace.contains(char::is_whitespace)
        {
            e.push(crate::settings::ConfigError::new(
                format!("{p}.namespace"),
                "a metric name prefix of letters, digits, `.` and `_`, e.g. traces.span.metrics",
            ));
        }
    }

    /// The most the table can hold, in bytes (0 when disabled): per series its label values
    /// (each cut at [`MAX_LABEL_BYTES`], plus a pointer), its buckets with their exemplars and
    /// its bookkeeping.
    pub fn bound_bytes(&self) -> u64 {
        if !self.enabled {
            return 0;
        }
        let labels = (4 + self.dimensions.len() as u64) * (MAX_LABEL_BYTES as u64 + 16);
        let buckets = (self.histogram.explicit.buckets.len() as u64 + 1)
            * (8 + std::mem::size_of::<Option<Exemplar>>() as u64);
        self.aggregation_cardinality_limit as u64 * (labels + buckets + 200)
    }

    /// The table's settings.
    pub fn settings(&self) -> SpanMetricsSettings {
        let mut excluded = [false; 4];
        for (x, s) in excluded.iter_mut().zip(STANDARD) {
            *x = self
                .exclude_dimensions
                .iter()
                .any(|e| s.contains(&e.as_str()));
        }
        SpanMetricsSettings {
            naming: match self.naming {
                NamingConfig::Collector => Naming::Collector,
                NamingConfig::Tempo => Naming::Tempo,
            },
            namespace: self.namespace.clone(),
            excluded,
            dimensions: self.dimensions.iter().map(|d| d.name.clone()).collect(),
            buckets: self
                .histogram
                .explicit
                .buckets
                .iter()
                .map(|b| b.as_secs_f64())
                .collect(),
            cardinality_limit: self.aggregation_cardinality_limit,
            expiration_ms: self.metrics_expiration.as_millis() as u64,
        }
    }
}

/// Builds the label values of spans, one record or trace after another: the service name read
/// once per resource, dimensions into reused strings.
struct Keys<'r> {
    dimensions: &'r [Dimension],
    excluded: [bool; 4],
    last_ctx: *const crate::otlp::ScopeCtx,
    resource: bytes::Bytes,
    service: String,
    dims: Vec<String>,
}

/// `service.name` of a resource body (empty when it has none).
pub(crate) fn service_name(resource: &[u8]) -> &str {
    match KvListRef::new(resource, 1).get("service.name") {
        Ok(Some(AnyRef::Str(v))) => v,
        _ => "",
    }
}

fn text_of(v: AnyRef<'_>, scratch: &mut String) -> bool {
    use std::fmt::Write as _;
    scratch.clear();
    match v {
        AnyRef::Str(s) => scratch.push_str(s),
        AnyRef::Int(i) => {
            let _ = write!(scratch, "{i}");
        }
        AnyRef::Double(d) => {
            let _ = write!(scratch, "{d}");
        }
        AnyRef::Bool(b) => scratch.push_str(if b { "true" } else { "false" }),
        _ => return false,
    }
    true
}

impl<'r> Keys<'r> {
    fn new(dimensions: &'r [Dimension], excluded: [bool; 4]) -> Keys<'r> {
        Keys {
            dimensions,
            excluded,
            last_ctx: std::ptr::null(),
            resource: bytes::Bytes::new(),
            service: String::new(),
            dims: vec![String::new(); dimensions.len().min(MAX_DIMENSIONS)],
        }
    }

    /// Lays out the label values of `span` — its `name`, `kind` and `status`; its attributes
    /// (the window of a full read) only when dimensions are configured — into `key`.
    fn key(
        &mut self,
        span: &SpanRef,
        name: &[u8],
        kind: i32,
        status: i32,
        attributes: Option<std::ops::Range<usize>>,
        key: &mut Vec<u8>,
    ) {
        let ctx = Arc::as_ptr(&span.ctx);
        if ctx != self.last_ctx {
            self.last_ctx = ctx;
            self.resource = crate::otlp::field_body_of(&span.ctx.resource_field);
            self.service.clear();
            self.service.push_str(service_name(&self.resource));
        }
        key.clear();
        let std: [&[u8]; 4] = [
            self.service.as_bytes(),
            name,
            kind_label(kind).as_bytes(),
            status_label(status).as_bytes(),
        ];
        for (v, x) in std.into_iter().zip(self.excluded) {
            push_value(key, if x { b"" } else { v });
        }
        if self.dimensions.is_empty() {
            return;
        }
        let attrs = KvListRef::new(&span.bytes[attributes.unwrap_or(0..0)], 9);
        for (d, out) in self.dimensions.iter().zip(self.dims.iter_mut()) {
            let found = [attrs, KvListRef::new(&self.resource, 1)]
                .iter()
                .find_map(|m| m.get(&d.name).ok().flatten())
                .is_some_and(|v| text_of(v, out));
            if !found {
                out.clear();
                out.push_str(d.default.as_deref().unwrap_or(""));
            }
            push_value(key, out.as_bytes());
        }
    }

    /// Lays out the label values of a buffered span (a full read) into `key`; its duration
    /// (ns) and id.
    fn of_buffered(&mut self, span: &SpanRef, key: &mut Vec<u8>) -> Option<(u64, [u8; 8])> {
        let f = SpanRanges::read(&span.bytes).ok()?;
        let id = span
            .bytes
            .get(f.span_id.clone())
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .unwrap_or([0; 8]);
        let name = span.bytes.get(f.name.clone()).unwrap_or_default();
        let duration = f.end_ns.saturating_sub(f.start_ns);
        self.key(span, name, f.kind, f.status_code, Some(f.attributes), key);
        Some((duration, id))
    }
}

#[derive(Debug)]
struct SpanPart {
    table: Mutex<SpanMetrics>,
    dimensions: Vec<Dimension>,
    excluded: [bool; 4],
    exemplars: bool,
}

/// The process's span metrics and service graph: fed by every partition's scan (one lock per
/// record) and by every decision (one lock per trace).
#[derive(Debug)]
pub struct Recorder {
    spans: Option<SpanPart>,
    graph: Option<Mutex<ServiceGraph>>,
    next_expiry_ms: AtomicU64,
}

static INSTALLED: Mutex<Option<Arc<Recorder>>> = Mutex::new(None);

/// Installs the process's tables for these blocks (none when both are off); `/metrics` shows
/// them from now on.
pub fn install(spans: &SpanMetricsConfig, graph: &ServiceGraphConfig) -> Option<Arc<Recorder>> {
    let settings = spans.settings();
    let exemplar_labels = spans
        .exemplars
        .enabled
        .then(|| settings.naming.exemplar_labels());
    let r = (spans.enabled || graph.enabled).then(|| {
        Arc::new(Recorder {
            spans: spans.enabled.then(|| SpanPart {
                excluded: settings.excluded,
                table: Mutex::new(SpanMetrics::new(settings.clone())),
                dimensions: spans.dimensions.clone(),
                exemplars: spans.exemplars.enabled,
            }),
            graph: graph
                .enabled
                .then(|| Mutex::new(ServiceGraph::new(graph.settings(exemplar_labels)))),
            next_expiry_ms: AtomicU64::new(0),
        })
    });
    *INSTALLED.lock().unwrap_or_else(|p| p.into_inner()) = r.clone();
    r
}

/// The installed tables, if any.
pub fn installed() -> Option<Arc<Recorder>> {
    INSTALLED.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Writes the installed tables' families.
pub fn write_installed(w: &mut Writer<'_>) {
    if let Some(r) = installed() {
        r.write(w);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Recorder {
    /// Counts the spans of one record (`now_ms`: its stream time).
    pub fn observe(&self, spans: &[ScannedSpan], now_ms: u64) {
        if let Some(part) = &self.spans {
            let mut keys = Keys::new(&part.dimensions, part.excluded);
            let mut table = lock(&part.table);
            let full = !part.dimensions.is_empty();
            let mut key = Vec::with_capacity(128);
            for s in spans {
                let bytes = &s.span.bytes;
                // Kind, status, times and where the name is come from the scan; the
                // attributes (a full walk) only for dimensions.
                let (at, n) = s.meta.name_at;
                let name = bytes
                    .get(at as usize..at as usize + n as usize)
                    .unwrap_or_default();
                let attributes = if full {
                    match SpanRanges::read(bytes) {
                        Ok(f) => Some(f.attributes),
                        Err(_) => continue,
                    }
                } else {
                    None
                };
                let m = &s.meta;
                keys.key(
                    &s.span,
                    name,
                    m.kind.as_i32(),
                    m.status.as_i32(),
                    attributes,
                    &mut key,
                );
                table.observe_key(&key, m.end_ns.saturating_sub(m.start_ns), now_ms);
            }
        }
        self.maybe_expire(now_ms);
    }

    /// A trace decided at `now_ms` (stream time): its edges go to the service graph; if kept,
    /// each span adds `adjusted` (its adjusted count, 1/p; 0 when unknown counts 1) to its
    /// series' estimate and becomes the exemplar of its buckets.
    pub fn decided(
        &self,
        trace_id: crate::otlp::TraceId,
        spans: &[SpanRef],
        keep: bool,
        adjusted: f64,
        now_ms: u64,
    ) {
        let wall_ms = crate::clock::system_wall_nanos() / 1_000_000;
        if let Some(g) = &self.graph {
            lock(g).trace(spans, keep.then_some((trace_id.0, wall_ms)), now_ms);
        }
        if keep {
            self.kept(trace_id, spans, adjusted, wall_ms);
        }
    }

    /// Spans of a kept trace (late ones included): estimates and exemplars.
    pub fn kept(
        &self,
        trace_id: crate::otlp::TraceId,
        spans: &[SpanRef],
        adjusted: f64,
        wall_ms: u64,
    ) {
        let Some(part) = &self.spans else {
            return;
        };
        let adjusted = if adjusted > 0.0 { adjusted } else { 1.0 };
        let mut keys = Keys::new(&part.dimensions, part.excluded);
        let mut table = lock(&part.table);
        let mut key = Vec::with_capacity(128);
        for s in spans {
            let Some((duration, span_id)) = keys.of_buffered(s, &mut key) else {
                continue;
            };
            let exemplar = part.exemplars.then_some(Exemplar {
                trace_id: trace_id.0,
                span_id,
                value: duration as f64 / 1e9,
                at_ms: wall_ms,
            });
            table.kept_key(&key, adjusted, exemplar);
        }
    }

    fn maybe_expire(&self, now_ms: u64) {
        if now_ms < self.next_expiry_ms.load(Ordering::Relaxed) {
            return;
        }
        let mut every = u64::MAX;
        if let Some(p) = &self.spans {
            let mut t = lock(&p.table);
            t.expire(now_ms);
            every = every.min(t.settings.expiration_ms);
        }
        if let Some(g) = &self.graph {
            let mut g = lock(g);
            g.expire(now_ms);
            every = every.min(g.expiration_ms());
        }
        let every = (every / 4).clamp(1_000, 60_000);
        self.next_expiry_ms.store(now_ms + every, Ordering::Relaxed);
    }

    /// The span-metrics table, if on (tests and tools).
    pub fn with_spans<R>(&self, f: impl FnOnce(&SpanMetrics) -> R) -> Option<R> {
        self.spans.as_ref().map(|p| f(&lock(&p.table)))
    }

    /// The service graph, if on (tests and tools).
    pub fn with_graph<R>(&self, f: impl FnOnce(&ServiceGraph) -> R) -> Option<R> {
        self.graph.as_ref().map(|g| f(&lock(g)))
    }

    /// Every family of both tables.
    pub fn write(&self, w: &mut Writer<'_>) {
        if let Some(p) = &self.spans {
            lock(&p.table).write(w);
        }
        if let Some(g) = &self.graph {
            lock(g).write(w);
        }
    }
}

/// Most configured dimensions.
pub const MAX_DIMENSIONS: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(limit: usize) -> SpanMetricsSettings {
        SpanMetricsSettings {
            naming: Naming::Collector,
            namespace: "traces.span.metrics".into(),
            excluded: [false; 4],
            dimensions: vec!["http.route".into()],
            buckets: COLLECTOR_BUCKETS.to_vec(),
            cardinality_limit: limit,
            expiration_ms: 60_000,
        }
    }

    #[test]
    fn counts_per_series_with_buckets() {
        let mut m = SpanMetrics::new(settings(100));
        let k = ["checkout", "GET /x", kind_label(2), status_label(2), "/x"];
        m.observe(&k, 3_000_000, 1); // 3 ms: the 4 ms bucket
        m.observe(&k, 3_000_000_000, 2); // 3 s: the 5 s bucket
        m.observe(&k, 20_000_000_000, 3); // 20 s: +Inf
        assert_eq!(m.calls(&k), Some(3));
        let mut text = String::new();
        m.render(&mut text);
        assert!(text.contains(
            "traces_span_metrics_calls_total{service_name=\"checkout\",span_name=\"GET /x\",span_kind=\"SPAN_KIND_SERVER\",status_code=\"STATUS_CODE_ERROR\",http_route=\"/x\"} 3"
        ), "{text}");
        assert!(text.contains("le=\"0.002\"} 0"), "{text}");
        assert!(text.contains("le=\"0.004\"} 1"), "{text}");
        assert!(text.contains("le=\"5\"} 2"), "{text}");
        assert!(text.contains("le=\"15\"} 2"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 3"), "{text}");
        assert!(text.contains("_count{"), "{text}");
    }

    #[test]
    fn cardinality_limit_folds_into_one_overflow_series() {
        let mut m = SpanMetrics::new(settings(1_000));
        for i in 0..10_000 {
            let name = format!("op{i}");
            m.observe(
                &["svc", &name, "SPAN_KIND_SERVER", "STATUS_CODE_UNSET", "/"],
                1,
                1,
            );
        }
        assert_eq!(m.len(), 1_000);
        assert_eq!(m.overflowed(), 9_000);
        let mut text = String::new();
        m.render(&mut text);
        let calls = text
            .lines()
            .filter(|l| l.starts_with("traces_span_metrics_calls_total{"))
            .count();
        assert_eq!(calls, 1_001);
        assert!(
            text.contains("traces_span_metrics_calls_total{otel_metric_overflow=\"true\"} 9000")
        );
        // A series already held still counts after the limit.
        m.observe(
            &["svc", "op0", "SPAN_KIND_SERVER", "STATUS_CODE_UNSET", "/"],
            1,
            2,
        );
        assert_eq!(
            m.calls(&["svc", "op0", "SPAN_KIND_SERVER", "STATUS_CODE_UNSET", "/"]),
            Some(2)
        );
    }

    #[test]
    fn long_label_values_are_cut() {
        let mut m = SpanMetrics::new(settings(10));
        let long = "é".repeat(300);
        m.observe(&["svc", &long, "k", "s", "/"], 1, 1);
        m.observe(&["svc", &format!("{long}x"), "k", "s", "/"], 1, 1);
        assert_eq!(m.len(), 1, "the same series once cut");
        let cut = &long[..256];
        assert_eq!(m.calls(&["svc", cut, "k", "s", "/"]), Some(2));
        let mut text = String::new();
        m.render(&mut text);
        assert!(text.contains("tracesift_span_metrics_series 1"), "{text}");
    }

    #[test]
    fn unseen_series_expire() {
        let mut m = SpanMetrics::new(settings(10));
        m.observe(&["a", "x", "k", "s", "/"], 1, 1_000);
        m.observe(&["b", "x", "k", "s", "/"], 1, 50_000);
        m.expire(70_000);
        assert_eq!(m.calls(&["a", "x", "k", "s", "/"]), None);
        assert_eq!(m.calls(&["b", "x", "k", "s", "/"]), Some(1));
        m.observe(&["b", "x", "k", "s", "/"], 1, 70_000);
        assert_eq!(
            m.calls(&["b", "x", "k", "s", "/"]),
            Some(2),
            "found again after a rebuild"
        );
    }

    #[test]
    fn tempo_naming() {
        let mut m = SpanMetrics::new(SpanMetricsSettings {
            naming: Naming::Tempo,
            dimensions: vec![],
            ..settings(10)
        });
        m.observe(&["a", "x", "SPAN_KIND_CLIENT", "STATUS_CODE_OK"], 1, 1);
        let mut text = String::new();
        m.render(&mut text);
        assert!(
            text.contains("traces_spanmetrics_calls_total{service=\"a\",span_name=\"x\""),
            "{text}"
        );
        assert!(
            text.contains("traces_spanmetrics_latency_bucket{"),
            "{text}"
        );
    }

    #[test]
    fn namespace_and_excluded_labels_shape_the_names() {
        let mut m = SpanMetrics::new(SpanMetricsSettings {
            namespace: "shop.red".into(),
            excluded: [false, false, true, false],
            dimensions: vec![],
            ..settings(10)
        });
        m.observe(&["a", "x", "", "STATUS_CODE_OK"], 1, 1);
        let mut text = String::new();
        m.render(&mut text);
        assert!(
            text.contains("shop_red_calls_total{service_name=\"a\",span_name=\"x\",status_code=\"STATUS_CODE_OK\"} 1"),
            "{text}"
        );
        assert!(text.contains("shop_red_duration_seconds_bucket{"), "{text}");
        assert!(!text.contains("span_kind"), "{text}");
    }

    #[test]
    fn the_config_names_every_problem_in_the_connectors_words() {
        let cfg = SpanMetricsConfig {
            enabled: true,
            exclude_dimensions: vec![
                "span.kind".into(),
                "status_code".into(),
                "span.colour".into(),
            ],
            aggregation_cardinality_limit: 0,
            namespace: "9 lives".into(),
            histogram: HistogramConfig {
                explicit: ExplicitBuckets {
                    buckets: durations(&[0.5, 0.1]),
                },
            },
            ..Default::default()
        };
        let mut e = Vec::new();
        cfg.check(&mut e);
        let paths: Vec<String> = e.iter().map(|e| e.to_string()).collect();
        let joined = paths.join("\n");
        for p in [
            "telemetry.span_metrics.histogram.explicit.buckets",
            "telemetry.span_metrics.aggregation_cardinality_limit",
            "telemetry.span_metrics.exclude_dimensions[2]",
            "telemetry.span_metrics.namespace",
        ] {
            assert!(joined.contains(p), "{p} missing from\n{joined}");
        }
        assert_eq!(e.len(), 4, "{joined}");
        assert_eq!(cfg.settings().excluded, [false, false, true, true]);
    }
}
