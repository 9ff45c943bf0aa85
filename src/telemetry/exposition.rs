//! The one exposition of every metric: a [`metrics::Recorder`] of our own (counters, gauges and
//! histograms in atomics, keyed by name and labels) and a [`Writer`] that renders it, the span
//! metrics and the service graph in one body, as the Prometheus text format 0.0.4 or as
//! OpenMetrics 1.0.0, chosen by the scraper's `Accept` header.
//!
//! Why not a crate: `metrics-exporter-prometheus` writes no OpenMetrics and no exemplars, and
//! `prometheus-client` attaches an exemplar only while observing a value. Our exemplars are
//! chosen later — a span is counted when it is read, its trace is kept or dropped seconds
//! after — so the exposition has to take an exemplar apart from the observation. Writing the
//! two text formats is small; keeping the `metrics` macros keeps every call site as it was.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};

/// The text format of one scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`: no exemplars.
    Prometheus,
    /// `application/openmetrics-text; version=1.0.0`: exemplars on histogram buckets.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the `Accept` header names it with a quality above the plain text's (or
    /// without qualities, first); the Prometheus text otherwise.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Prometheus;
        };
        let quality = |want: &str| -> Option<(f32, usize)> {
            accept.split(',').enumerate().find_map(|(i, part)| {
                let mut it = part.split(';').map(str::trim);
                let media = it.next()?;
                if !media.eq_ignore_ascii_case(want) {
                    return None;
                }
                let q = it
                    .find_map(|p| p.strip_prefix("q="))
                    .and_then(|q| q.parse().ok())
                    .unwrap_or(1.0);
                Some((q, i))
            })
        };
        match (
            quality("application/openmetrics-text"),
            quality("text/plain"),
        ) {
            (Some((qo, _)), _) if qo <= 0.0 => Format::Prometheus,
            (Some(_), None) => Format::OpenMetrics,
            (Some((qo, io)), Some((qt, it))) if qo > qt || (qo == qt && io < it) => {
                Format::OpenMetrics
            }
            _ => Format::Prometheus,
        }
    }

    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// What a metric family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Only goes up; its samples end in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Cumulative buckets, `_sum` and `_count`.
    Histogram,
}

/// An exemplar: the labels that lead to one observation (a kept span), its value and when it
/// was seen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exemplar {
    /// The trace.
    pub trace_id: [u8; 16],
    /// The span.
    pub span_id: [u8; 8],
    /// The observed value (seconds).
    pub value: f64,
    /// Unix time of the observation, ms.
    pub at_ms: u64,
}

/// Label names an exemplar is written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExemplarLabels {
    /// The trace id's label: `trace_id` (the Collector's), `traceID` (Tempo's).
    pub trace: &'static str,
    /// The span id's label, if any.
    pub span: Option<&'static str>,
}

/// Renders families into one body.
#[derive(Debug)]
pub struct Writer<'a> {
    out: &'a mut String,
    format: Format,
}

impl<'a> Writer<'a> {
    /// A writer appending to `out`.
    pub fn new(out: &'a mut String, format: Format) -> Writer<'a> {
        Writer { out, format }
    }

    /// The format being written.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines. `name` is the sample name of a
    /// counter (ending in `_total`) or the family name of the others.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let family = match (self.format, kind) {
            (Format::OpenMetrics, Kind::Counter) => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        if !help.is_empty() {
            let _ = write!(self.out, "# HELP {family} ");
            for c in help.chars() {
                match c {
                    '\\' => self.out.push_str("\\\\"),
                    '\n' => self.out.push_str("\\n"),
                    '"' if self.format == Format::OpenMetrics => self.out.push_str("\\\""),
                    c => self.out.push(c),
                }
            }
            self.out.push('\n');
        }
        let _ = writeln!(self.out, "# TYPE {family} {kind}");
    }

    /// One sample: `name` (with its `_total` / `_bucket` / `_sum` / `_count` suffix; a counter
    /// name without `_total` gets it in OpenMetrics), `labels`, then `le` if given, the value
    /// and, in OpenMetrics, the exemplar.
    pub fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        le: Option<f64>,
        value: f64,
        exemplar: Option<(&Exemplar, ExemplarLabels)>,
    ) {
        self.out.push_str(name);
        if labels.is_empty() && le.is_none() {
            self.out.push(' ');
        } else {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_value(self.out, v);
                self.out.push('"');
            }
            if let Some(le) = le {
                if !labels.is_empty() {
                    self.out.push(',');
                }
                self.out.push_str("le=\"");
                number(self.out, le);
                self.out.push('"');
            }
            self.out.push_str("} ");
        }
        number(self.out, value);
        if let (Format::OpenMetrics, Some((e, names))) = (self.format, exemplar) {
            let _ = write!(self.out, " # {{{}=\"", names.trace);
            hex(self.out, &e.trace_id);
            if let Some(span) = names.span {
                let _ = write!(self.out, "\",{span}=\"");
                hex(self.out, &e.span_id);
            }
            self.out.push_str("\"} ");
            number(self.out, e.value);
            let _ = write!(self.out, " {}.{:03}", e.at_ms / 1000, e.at_ms % 1000);
        }
        self.out.push('\n');
    }

    /// Ends the body (`# EOF` in OpenMetrics).
    pub fn finish(self) {
        if self.format == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
    }
}

fn escape_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

/// A number as both formats read it: integers without a fraction, `+Inf`, `-Inf`, `NaN`.
fn number(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

// ---------------------------------------------------------------------------------------------
// The recorder behind the `metrics` macros
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct CounterCell(AtomicU64);

impl metrics::CounterFn for CounterCell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

/// An `f64` in an `AtomicU64`.
#[derive(Debug, Default)]
struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    fn add(&self, v: f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((f64::from_bits(b) + v).to_bits())
            });
    }
}

impl metrics::GaugeFn for AtomicF64 {
    fn increment(&self, value: f64) {
        self.add(value);
    }

    fn decrement(&self, value: f64) {
        self.add(-value);
    }

    fn set(&self, value: f64) {
        AtomicF64::set(self, value);
    }
}

#[derive(Debug)]
struct HistogramCell {
    bounds: &'static [f64],
    /// Per bucket (not cumulative), +Inf last.
    counts: Box<[AtomicU64]>,
    sum: AtomicF64,
}

impl metrics::HistogramFn for HistogramCell {
    fn record(&self, value: f64) {
        self.record_many(value, 1);
    }

    fn record_many(&self, value: f64, count: usize) {
        let i = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(count as u64, Ordering::Relaxed);
        self.sum.add(value * count as f64);
    }
}

#[derive(Debug, Default)]
struct Cells {
    help: HashMap<String, String>,
    counters: HashMap<Key, Arc<CounterCell>>,
    gauges: HashMap<Key, Arc<AtomicF64>>,
    histograms: HashMap<Key, Arc<HistogramCell>>,
}

/// The process's metrics, as the `metrics` macros record them.
#[derive(Debug)]
pub struct Registry {
    cells: Mutex<Cells>,
    buckets: HashMap<&'static str, &'static [f64]>,
    default_buckets: &'static [f64],
}

impl Registry {
    /// A registry whose histograms use `buckets` by name, else `default_buckets`.
    pub fn new(
        buckets: impl IntoIterator<Item = (&'static str, &'static [f64])>,
        default_buckets: &'static [f64],
    ) -> Registry {
        Registry {
            cells: Mutex::new(Cells::default()),
            buckets: buckets.into_iter().collect(),
            default_buckets,
        }
    }

    fn cells(&self) -> std::sync::MutexGuard<'_, Cells> {
        self.cells.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut w = Writer::new(&mut out, Format::Prometheus);
        self.write(&mut w);
        out
    }

    /// Every metric into `w`, one family after another, series in label order.
    pub fn write(&self, w: &mut Writer<'_>) {
        let cells = self.cells();
        let mut names: Vec<(&str, Kind)> = cells
            .counters
            .keys()
            .map(|k| (k.name(), Kind::Counter))
            .chain(cells.gauges.keys().map(|k| (k.name(), Kind::Gauge)))
            .chain(cells.histograms.keys().map(|k| (k.name(), Kind::Histogram)))
            .collect();
        names.sort_unstable();
        names.dedup();
        let labels_of = |k: &Key| -> Vec<(String, String)> {
            k.labels()
                .map(|l| (l.key().to_string(), l.value().to_string()))
                .collect()
        };
        fn sorted<'k, T>(
            map: &'k HashMap<Key, T>,
            name: &str,
            labels_of: &dyn Fn(&Key) -> Vec<(String, String)>,
        ) -> Vec<(Vec<(String, String)>, &'k T)> {
            let mut v: Vec<_> = map
                .iter()
                .filter(|(k, _)| k.name() == name)
                .map(|(k, c)| (labels_of(k), c))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        }
        fn refs(l: &[(String, String)]) -> Vec<(&str, &str)> {
            l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
        }
        for (name, kind) in names {
            let help = cells.help.get(name).map(String::as_str).unwrap_or("");
            w.family(name, kind, help);
            match kind {
                Kind::Counter => {
                    let sample = if w.format() == Format::OpenMetrics && !name.ends_with("_total") {
                        format!("{name}_total")
                    } else {
                        name.to_string()
                    };
                    for (labels, c) in sorted(&cells.counters, name, &labels_of) {
                        let v = c.0.load(Ordering::Relaxed) as f64;
                        w.sample(&sample, &refs(&labels), None, v, None);
                    }
                }
                Kind::Gauge => {
                    for (labels, g) in sorted(&cells.gauges, name, &labels_of) {
                        w.sample(name, &refs(&labels), None, g.get(), None);
                    }
                }
                Kind::Histogram => {
                    let (bucket, sum, count) = (
                        format!("{name}_bucket"),
                        format!("{name}_sum"),
                        format!("{name}_count"),
                    );
                    for (labels, h) in sorted(&cells.histograms, name, &labels_of) {
                        let labels = refs(&labels);
                        let mut cumulative = 0;
                        for (i, n) in h.counts.iter().enumerate() {
                            cumulative += n.load(Ordering::Relaxed);
                            let le = h.bounds.get(i).copied().unwrap_or(f64::INFINITY);
                            w.sample(&bucket, &labels, Some(le), cumulative as f64, None);
                        }
                        w.sample(&sum, &labels, None, h.sum.get(), None);
                        w.sample(&count, &labels, None, cumulative as f64, None);
                    }
                }
            }
        }
    }
}

impl metrics::Recorder for Registry {
    fn describe_counter(&self, key: KeyName, _: Option<Unit>, description: SharedString) {
        self.cells()
            .help
            .insert(key.as_str().to_string(), description.to_string());
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe_counter(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe_counter(key, unit, description);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let cell = Arc::clone(self.cells().counters.entry(key.clone()).or_default());
        Counter::from_arc(cell)
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let cell = Arc::clone(self.cells().gauges.entry(key.clone()).or_default());
        Gauge::from_arc(cell)
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let bounds = self
            .buckets
            .get(key.name())
            .copied()
            .unwrap_or(self.default_buckets);
        let cell = Arc::clone(
            self.cells()
                .histograms
                .entry(key.clone())
                .or_insert_with(|| {
                    Arc::new(HistogramCell {
                        bounds,
                        counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                        sum: AtomicF64::default(),
                    })
                }),
        );
        Histogram::from_arc(cell)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::Recorder as _;

    #[test]
    fn accept_headers_choose_the_format() {
        let om = Some("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1");
        assert_eq!(Format::negotiate(om), Format::OpenMetrics);
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(
            Format::negotiate(Some("text/plain;q=0.9, application/openmetrics-text;q=0.5")),
            Format::Prometheus
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; version=1.0.0")),
            Format::OpenMetrics
        );
    }

    #[test]
    fn both_formats_render_every_kind() {
        static B: &[f64] = &[0.1, 1.0];
        let r = Registry::new([("h_seconds", B)], B);
        let meta = Metadata::new("t", metrics::Level::INFO, None);
        r.describe_counter("c_total".into(), None, "A \"count\".\nSecond line.".into());
        let c = r.register_counter(
            &Key::from_parts("c_total", vec![metrics::Label::new("k", "v\"x")]),
            &meta,
        );
        c.increment(3);
        r.register_gauge(&Key::from_name("g"), &meta).set(1.5);
        let h = r.register_histogram(&Key::from_name("h_seconds"), &meta);
        h.record(0.05);
        h.record(5.0);
        let prom = r.render();
        assert!(
            prom.contains("# HELP c_total A \"count\".\\nSecond line.\n"),
            "{prom}"
        );
        assert!(
            prom.contains("# TYPE c_total counter\nc_total{k=\"v\\\"x\"} 3\n"),
            "{prom}"
        );
        assert!(prom.contains("g 1.5\n"), "{prom}");
        assert!(prom.contains("h_seconds_bucket{le=\"0.1\"} 1\n"), "{prom}");
        assert!(prom.contains("h_seconds_bucket{le=\"1\"} 1\n"), "{prom}");
        assert!(prom.contains("h_seconds_bucket{le=\"+Inf\"} 2\n"), "{prom}");
        assert!(
            prom.contains("h_seconds_sum 5.05\nh_seconds_count 2\n"),
            "{prom}"
        );
        let mut om = String::new();
        let mut w = Writer::new(&mut om, Format::OpenMetrics);
        r.write(&mut w);
        w.family("x_seconds", Kind::Histogram, "");
        let e = Exemplar {
            trace_id: [0xab; 16],
            span_id: [1; 8],
            value: 0.25,
            at_ms: 1_700_000_000_123,
        };
        let names = ExemplarLabels {
            trace: "trace_id",
            span: Some("span_id"),
        };
        w.sample("x_seconds_bucket", &[], Some(0.5), 1.0, Some((&e, names)));
        w.finish();
        assert!(
            om.contains("# HELP c A \\\"count\\\".\\nSecond line.\n# TYPE c counter\nc_total{"),
            "{om}"
        );
        assert!(om.contains(&format!(
            "x_seconds_bucket{{le=\"0.5\"}} 1 # {{trace_id=\"{}\",span_id=\"0101010101010101\"}} 0.25 1700000000.123\n",
            "ab".repeat(16)
        )), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
    }
}
