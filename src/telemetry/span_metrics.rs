//! RED metrics from every span (issue 28, groundwork): the series table behind the Collector's
//! `spanmetrics` connector and Tempo's span metrics, as a plain struct — calls and a duration
//! histogram per (service, span name, kind, status and configured dimensions), at most
//! `cardinality_limit` series (the rest fold into one `otel_metric_overflow="true"` series,
//! counted), series unseen for `expiration` dropped, and a key already seen found from
//! borrowed values without allocating; fed by every partition's scan (every span read, kept
//! or not) when `telemetry.span_metrics.enabled`, shown on `/metrics` (Prometheus text; the
//! OpenMetrics exposition with exemplars is still to come).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::hash::{fnv1a_more, FNV1A_START};
use crate::otlp::fields::{AnyRef, KvListRef, SpanRanges};
use crate::otlp::{enum_name, ScannedSpan, SPAN_KIND_NAMES, STATUS_CODE_NAMES};

/// Whose names the series carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// The Collector's `spanmetrics` connector: `traces_span_metrics_calls_total`,
    /// `traces_span_metrics_duration_seconds`; labels `service_name`, `span_name`,
    /// `span_kind`, `status_code`.
    Collector,
    /// Tempo's metrics-generator: `traces_spanmetrics_calls_total`,
    /// `traces_spanmetrics_latency`; labels `service`, `span_name`, `span_kind`, `status_code`.
    Tempo,
}

/// What the table is built with.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanMetricsSettings {
    /// Names and labels.
    pub naming: Naming,
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

/// The label value of a span kind, as the Collector writes it (`SPAN_KIND_SERVER`).
pub fn kind_label(kind: i32) -> &'static str {
    enum_name(&SPAN_KIND_NAMES, kind).unwrap_or(SPAN_KIND_NAMES[0])
}

/// The label value of a status code, as the Collector writes it (`STATUS_CODE_ERROR`).
pub fn status_label(code: i32) -> &'static str {
    enum_name(&STATUS_CODE_NAMES, code).unwrap_or(STATUS_CODE_NAMES[0])
}

#[derive(Debug, Clone)]
struct Series {
    /// Label values: service, span name, kind, status, then the dimensions.
    values: Box<[Box<str>]>,
    hash: u64,
    calls: u64,
    /// Per bucket (not cumulative), plus +Inf last.
    buckets: Box<[u64]>,
    sum_seconds: f64,
    last_seen_ms: u64,
}

impl Series {
    fn new(values: &[&str], hash: u64, nbuckets: usize) -> Series {
        Series {
            values: values.iter().map(|v| Box::from(*v)).collect(),
            hash,
            calls: 0,
            buckets: vec![0; nbuckets + 1].into_boxed_slice(),
            sum_seconds: 0.0,
            last_seen_ms: 0,
        }
    }

    fn observe(&mut self, bucket: usize, seconds: f64, now_ms: u64) {
        self.calls += 1;
        self.buckets[bucket] += 1;
        self.sum_seconds += seconds;
        self.last_seen_ms = self.last_seen_ms.max(now_ms);
    }

    fn matches(&self, values: &[&str]) -> bool {
        self.values.len() == values.len() && self.values.iter().zip(values).all(|(a, b)| **a == **b)
    }
}

/// The series table.
#[derive(Debug)]
pub struct SpanMetrics {
    settings: SpanMetricsSettings,
    series: Vec<Series>,
    /// Hash of the label values → indexes into `series`.
    index: HashMap<u64, Vec<u32>>,
    overflow: Series,
    /// Spans counted in the overflow series.
    overflowed: u64,
}

/// The hash of a key's label values (each ended by a byte no UTF-8 text holds), computed
/// without gathering them: a key already held is found without allocating.
fn key_hash(values: &[&str]) -> u64 {
    values.iter().fold(FNV1A_START, |h, v| {
        fnv1a_more(fnv1a_more(h, v.as_bytes()), &[0xff])
    })
}

impl SpanMetrics {
    /// An empty table.
    pub fn new(settings: SpanMetricsSettings) -> SpanMetrics {
        let n = settings.buckets.len();
        SpanMetrics {
            overflow: Series::new(&[], 0, n),
            settings,
            series: Vec::new(),
            index: HashMap::new(),
            overflowed: 0,
        }
    }

    /// Counts one span: `values` are service, span name, kind, status and the dimensions (as
    /// many as configured), `duration_ns` its end minus start, `now_ms` stream time.
    pub fn observe(&mut self, values: &[&str], duration_ns: u64, now_ms: u64) {
        // Label values are cut at MAX_LABEL_BYTES (on a character boundary), so a series
        // holds at most that much per label however long a span name is.
        let mut cut: [&str; 4 + MAX_DIMENSIONS] = [""; 4 + MAX_DIMENSIONS];
        let n = values.len().min(cut.len());
        for (c, v) in cut.iter_mut().zip(values) {
            *c = truncate(v);
        }
        let values = &cut[..n];
        let seconds = duration_ns as f64 / 1e9;
        let bucket = self
            .settings
            .buckets
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(self.settings.buckets.len());
        let hash = key_hash(values);
        if let Some(ids) = self.index.get(&hash) {
            for &i in ids {
                let s = &mut self.series[i as usize];
                if s.matches(values) {
                    s.observe(bucket, seconds, now_ms);
                    return;
                }
            }
        }
        if self.series.len() >= self.settings.cardinality_limit {
            self.overflow.observe(bucket, seconds, now_ms);
            self.overflowed += 1;
            return;
        }
        let mut s = Series::new(values, hash, self.settings.buckets.len());
        s.observe(bucket, seconds, now_ms);
        self.index
            .entry(hash)
            .or_default()
            .push(self.series.len() as u32);
        self.series.push(s);
    }

    /// Drops the series unseen since `now_ms - expiration`.
    pub fn expire(&mut self, now_ms: u64) {
        if self.settings.expiration_ms == 0 {
            return;
        }
        let cutoff = now_ms.saturating_sub(self.settings.expiration_ms);
        let before = self.series.len();
        self.series.retain(|s| s.last_seen_ms >= cutoff);
        if self.series.len() != before {
            self.index.clear();
            for (i, s) in self.series.iter().enumerate() {
                self.index.entry(s.hash).or_default().push(i as u32);
            }
        }
    }

    /// Number of series (the overflow series not counted).
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// True when no series is held.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Spans counted in the overflow series.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }

    /// Calls of the series with these label values (tests and tools).
    pub fn calls(&self, values: &[&str]) -> Option<u64> {
        self.series
            .iter()
            .find(|s| s.matches(values))
            .map(|s| s.calls)
    }

    fn names(&self) -> (&'static str, &'static str, [&'static str; 4]) {
        match self.settings.naming {
            Naming::Collector => (
                "traces_span_metrics_calls_total",
                "traces_span_metrics_duration_seconds",
                ["service_name", "span_name", "span_kind", "status_code"],
            ),
            Naming::Tempo => (
                "traces_spanmetrics_calls_total",
                "traces_spanmetrics_latency",
                ["service", "span_name", "span_kind", "status_code"],
            ),
        }
    }

    fn labels(&self, s: &Series, out: &mut String) {
        let (_, _, std) = self.names();
        if s.values.is_empty() {
            out.push_str("otel_metric_overflow=\"true\"");
            return;
        }
        let names = std
            .iter()
            .copied()
            .chain(self.settings.dimensions.iter().map(String::as_str));
        for (i, (name, value)) in names.zip(s.values.iter()).enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{}=\"", sanitize(name));
            for c in value.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
    }

    /// The table in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let (calls, duration, _) = self.names();
        let _ = writeln!(
            out,
            "# HELP tracesift_span_metrics_series Span-metrics series held (at most telemetry.span_metrics.aggregation_cardinality_limit).\n# TYPE tracesift_span_metrics_series gauge\ntracesift_span_metrics_series {}",
            self.series.len()
        );
        let _ = writeln!(
            out,
            "# HELP tracesift_span_metrics_overflow_spans_total Spans counted in the overflow series (their key came past the cardinality limit).\n# TYPE tracesift_span_metrics_overflow_spans_total counter\ntracesift_span_metrics_overflow_spans_total {}",
            self.overflowed
        );
        let with_overflow = || {
            self.series
                .iter()
                .chain((self.overflowed > 0).then_some(&self.overflow))
        };
        let _ = writeln!(out, "# TYPE {calls} counter");
        for s in with_overflow() {
            let _ = write!(out, "{calls}{{");
            self.labels(s, out);
            let _ = writeln!(out, "}} {}", s.calls);
        }
        let _ = writeln!(out, "# TYPE {duration} histogram");
        for s in with_overflow() {
            let mut cumulative = 0;
            let bounds = self
                .settings
                .buckets
                .iter()
                .map(|b| b.to_string())
                .chain(std::iter::once("+Inf".to_string()));
            for (le, n) in bounds.zip(s.buckets.iter()) {
                cumulative += n;
                let _ = write!(out, "{duration}_bucket{{");
                self.labels(s, out);
                let _ = writeln!(out, ",le=\"{le}\"}} {cumulative}");
            }
            for (suffix, v) in [
                ("sum", s.sum_seconds.to_string()),
                ("count", s.calls.to_string()),
            ] {
                let _ = write!(out, "{duration}_{suffix}{{");
                self.labels(s, out);
                let _ = writeln!(out, "}} {v}");
            }
        }
    }
}

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

/// `telemetry.span_metrics:` — RED metrics from every span read, before sampling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpanMetricsConfig {
    /// Count every span read (kept or not) on `/metrics`.
    pub enabled: bool,
    /// `collector` (the `spanmetrics` connector's names) or `tempo`.
    pub naming: NamingConfig,
    /// Extra labels from span or resource attributes.
    pub dimensions: Vec<Dimension>,
    /// Histogram upper bounds (`[2ms, 4ms, …, 15s]`, the connector's).
    pub buckets: Vec<humantime_serde::Serde<std::time::Duration>>,
    /// Most series held; spans of further keys count in one `otel_metric_overflow="true"`
    /// series.
    pub aggregation_cardinality_limit: usize,
    /// A series not seen for this long (stream time) is dropped; 0s = never.
    #[serde(with = "humantime_serde")]
    pub metrics_expiration: std::time::Duration,
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
            dimensions: Vec::new(),
            buckets: COLLECTOR_BUCKETS
                .iter()
                .map(|s| std::time::Duration::from_secs_f64(*s).into())
                .collect(),
            aggregation_cardinality_limit: 10_000,
            metrics_expiration: std::time::Duration::from_secs(300),
        }
    }
}

impl SpanMetricsConfig {
    /// Every problem of this block.
    pub fn check(&self, e: &mut Vec<crate::settings::ConfigError>) {
        let p = "telemetry.span_metrics";
        if self.buckets.is_empty() || self.buckets.windows(2).any(|w| *w[0] >= *w[1]) {
            e.push(crate::settings::ConfigError::new(
                format!("{p}.buckets"),
                "at least one bound, increasing, e.g. [5ms, 50ms, 500ms, 5s]",
            ));
        }
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
    }

    /// The most the table can hold, in bytes (0 when disabled): per series its label values
    /// (each cut at [`MAX_LABEL_BYTES`], plus a pointer), its buckets and its bookkeeping.
    pub fn bound_bytes(&self) -> u64 {
        if !self.enabled {
            return 0;
        }
        let labels = (4 + self.dimensions.len() as u64) * (MAX_LABEL_BYTES as u64 + 16);
        let buckets = (self.buckets.len() as u64 + 1) * 8;
        self.aggregation_cardinality_limit as u64 * (labels + buckets + 160)
    }

    fn settings(&self) -> SpanMetricsSettings {
        SpanMetricsSettings {
            naming: match self.naming {
                NamingConfig::Collector => Naming::Collector,
                NamingConfig::Tempo => Naming::Tempo,
            },
            dimensions: self.dimensions.iter().map(|d| d.name.clone()).collect(),
            buckets: self.buckets.iter().map(|b| b.as_secs_f64()).collect(),
            cardinality_limit: self.aggregation_cardinality_limit,
            expiration_ms: self.metrics_expiration.as_millis() as u64,
        }
    }
}

/// The process's table, fed by every partition's scan (one lock per record).
#[derive(Debug)]
pub struct Recorder {
    table: Mutex<SpanMetrics>,
    dimensions: Vec<Dimension>,
    next_expiry_ms: AtomicU64,
}

static INSTALLED: Mutex<Option<Arc<Recorder>>> = Mutex::new(None);

/// Installs the process's table for `cfg` (none when disabled); `/metrics` shows it from now on.
pub fn install(cfg: &SpanMetricsConfig) -> Option<Arc<Recorder>> {
    let r = cfg.enabled.then(|| {
        Arc::new(Recorder {
            table: Mutex::new(SpanMetrics::new(cfg.settings())),
            dimensions: cfg.dimensions.clone(),
            next_expiry_ms: AtomicU64::new(0),
        })
    });
    *INSTALLED.lock().unwrap_or_else(|p| p.into_inner()) = r.clone();
    r
}

/// The installed table, if any.
pub fn installed() -> Option<Arc<Recorder>> {
    INSTALLED.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Appends the installed table to a `/metrics` body.
pub fn render_installed(out: &mut String) {
    if let Some(r) = installed() {
        r.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .render(out);
    }
}

fn text_of(v: AnyRef<'_>, scratch: &mut String) -> bool {
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

impl Recorder {
    /// Counts the spans of one record (`now_ms`: its stream time).
    pub fn observe(&self, spans: &[ScannedSpan], now_ms: u64) {
        let mut dims: Vec<String> = vec![String::new(); self.dimensions.len()];
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let mut last_ctx: *const crate::otlp::ScopeCtx = std::ptr::null();
        let mut resource = bytes::Bytes::new();
        let mut service = String::new();
        for s in spans {
            let Ok(f) = SpanRanges::read(&s.span.bytes) else {
                continue;
            };
            let ctx = Arc::as_ptr(&s.span.ctx);
            if ctx != last_ctx {
                last_ctx = ctx;
                resource = crate::otlp::field_body_of(&s.span.ctx.resource_field);
                service.clear();
                if let Ok(Some(AnyRef::Str(v))) = KvListRef::new(&resource, 1).get("service.name") {
                    service.push_str(v);
                }
            }
            let name = SpanRanges::text(&s.span.bytes, &f.name).unwrap_or("");
            let attrs = KvListRef::new(&s.span.bytes[f.attributes.clone()], 9);
            for (d, out) in self.dimensions.iter().zip(dims.iter_mut()) {
                let found = [attrs, KvListRef::new(&resource, 1)]
                    .iter()
                    .find_map(|m| m.get(&d.name).ok().flatten())
                    .is_some_and(|v| text_of(v, out));
                if !found {
                    out.clear();
                    out.push_str(d.default.as_deref().unwrap_or(""));
                }
            }
            let mut values: [&str; 4 + MAX_DIMENSIONS] = [""; 4 + MAX_DIMENSIONS];
            values[0] = &service;
            values[1] = name;
            values[2] = kind_label(f.kind);
            values[3] = status_label(f.status_code);
            let n = 4 + dims.len().min(MAX_DIMENSIONS);
            for (slot, d) in values[4..n].iter_mut().zip(&dims) {
                *slot = d;
            }
            table.observe(&values[..n], f.end_ns.saturating_sub(f.start_ns), now_ms);
        }
        if now_ms >= self.next_expiry_ms.load(Ordering::Relaxed) {
            table.expire(now_ms);
            let every = (table.settings.expiration_ms / 4).max(1_000);
            self.next_expiry_ms.store(now_ms + every, Ordering::Relaxed);
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
}
