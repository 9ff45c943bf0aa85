//! RED metrics from every span (issue 28, groundwork): the series table behind the Collector's
//! `spanmetrics` connector and Tempo's span metrics, as a plain struct — calls and a duration
//! histogram per (service, span name, kind, status and configured dimensions), at most
//! `cardinality_limit` series (the rest fold into one `otel_metric_overflow="true"` series,
//! counted), series unseen for `expiration` dropped, and a key already seen found from
//! borrowed values without allocating. Not wired into the pipeline yet.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::hash::{fnv1a_more, FNV1A_START};

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

/// The label value of a span kind, as the Collector writes it.
pub fn kind_label(kind: i32) -> &'static str {
    match kind {
        1 => "SPAN_KIND_INTERNAL",
        2 => "SPAN_KIND_SERVER",
        3 => "SPAN_KIND_CLIENT",
        4 => "SPAN_KIND_PRODUCER",
        5 => "SPAN_KIND_CONSUMER",
        _ => "SPAN_KIND_UNSPECIFIED",
    }
}

/// The label value of a status code, as the Collector writes it.
pub fn status_label(code: i32) -> &'static str {
    match code {
        1 => "STATUS_CODE_OK",
        2 => "STATUS_CODE_ERROR",
        _ => "STATUS_CODE_UNSET",
    }
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
