//! `tracesift bench`: end-to-end throughput against a real broker.
//!
//! Loads a fresh topic with generated traces (untimed), then measures in the same run:
//!
//! 1. **bare drain**: a plain librdkafka consumer reading every record of the topic and doing
//!    nothing with it: the ceiling that broker, client and machine allow;
//! 2. **pipeline**: the whole `tracesift run` path on the same topic (consume, lazy decode,
//!    buffer, decide with the seed's tiers, emit kept traces to the sampled topic and to hot
//!    Parquet, commit): time until every span has been ingested, and until the committed offsets
//!    reach the end (which includes the last traces' decision wait).
//!
//! The ratio of the two is the figure DESIGN §6 sets a target for (≥ 90%).

use crate::clock::{Clock, MonoTime, SystemClock};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::gen::{self, GenOptions};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Bootstrap servers of a running broker.
    pub brokers: String,
    /// Traces to load.
    pub traces: usize,
    /// Partitions of the bench topic.
    pub partitions: i32,
    /// Split each trace over several records (otherwise one record per trace, keyed).
    pub split: bool,
    /// Write hot Parquet too.
    pub parquet: bool,
    /// Export over OTLP/HTTP to this base URL too.
    pub otlp_http: Option<String>,
    /// Export over OTLP/gRPC to this `host:port` too.
    pub otlp_grpc: Option<String>,
}

/// One measured phase.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    /// Wall time.
    pub secs: f64,
    /// Spans per second.
    pub spans_per_sec: f64,
    /// Value megabytes per second.
    pub mb_per_sec: f64,
}

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Records in the topic.
    pub records: usize,
    /// Spans in the topic.
    pub spans: usize,
    /// Value bytes in the topic.
    pub bytes: usize,
    /// The bare consumer drain.
    pub bare: Phase,
    /// The group join: pipeline start until the first span was ingested.
    pub join_secs: f64,
    /// The pipeline from the first span in until every span was ingested.
    pub ingest: Phase,
    /// The pipeline from start until committed offsets reached the end.
    pub committed_secs: f64,
    /// Traces the pipeline kept.
    pub traces_kept: u64,
    /// Traces decided.
    pub traces_decided: u64,
    /// Span in → kept trace acknowledged, p50 and p99 seconds, per sink.
    pub end_to_end: Vec<(&'static str, f64, f64)>,
}

impl BenchReport {
    /// Pipeline ingest rate as a fraction of the bare drain rate.
    pub fn ratio(&self) -> f64 {
        self.ingest.spans_per_sec / self.bare.spans_per_sec
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "topic: {} records, {} spans, {:.1} MB ({:.0} B/span)",
            self.records,
            self.spans,
            self.bytes as f64 / 1e6,
            self.bytes as f64 / self.spans.max(1) as f64
        )?;
        writeln!(
            f,
            "bare consumer drain   {:>7.2} s  {:>9.0} spans/s  {:>6.1} MB/s",
            self.bare.secs, self.bare.spans_per_sec, self.bare.mb_per_sec
        )?;
        writeln!(
            f,
            "pipeline ingest       {:>7.2} s  {:>9.0} spans/s  {:>6.1} MB/s  ({:.0}% of bare)",
            self.ingest.secs,
            self.ingest.spans_per_sec,
            self.ingest.mb_per_sec,
            self.ratio() * 100.0
        )?;
        writeln!(
            f,
            "pipeline group join   {:>7.2} s  (start until the first span in; not in the rate)",
            self.join_secs
        )?;
        writeln!(
            f,
            "pipeline committed    {:>7.2} s  (includes the last traces' decision wait)",
            self.committed_secs
        )?;
        for (sink, p50, p99) in &self.end_to_end {
            writeln!(
                f,
                "span in → kept trace acknowledged by {sink:<16}  p50 {p50:>6.2} s  p99 {p99:>6.2} s  (includes the decision wait)"
            )?;
        }
        write!(
            f,
            "traces decided {}, kept {}",
            self.traces_decided, self.traces_kept
        )
    }
}

pub(crate) fn phase(secs: f64, spans: usize, bytes: usize) -> Phase {
    Phase {
        secs,
        spans_per_sec: spans as f64 / secs,
        mb_per_sec: bytes as f64 / 1e6 / secs,
    }
}

pub(crate) fn client(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

/// Reads every record of `topic` up to `ends` with a bare consumer, configured as the
/// pipeline's own consumer; returns the value bytes read and the seconds from the first record
/// to the last (connection setup is not counted, as for the pipeline).
pub(crate) fn drain(
    mut client: ClientConfig,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
) -> anyhow::Result<(usize, f64)> {
    let clock = SystemClock::new();
    let consumer: BaseConsumer = client.set("group.id", format!("{topic}-bare")).create()?;
    let mut tpl = TopicPartitionList::new();
    for p in ends.keys() {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut left: BTreeMap<i32, i64> = ends.clone();
    left.retain(|_, e| *e > 0);
    let mut bytes = 0usize;
    let mut first: Option<MonoTime> = None;
    let deadline = clock.now() + Duration::from_secs(600);
    while !left.is_empty() {
        if clock.now() > deadline {
            bail!("bare drain did not reach the end within 600 s: {left:?} left");
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(|| clock.now());
                bytes += m.payload_len();
                if let Some(end) = left.get(&m.partition()) {
                    if m.offset() + 1 >= *end {
                        left.remove(&m.partition());
                    }
                }
            }
            Some(Err(e)) => bail!("bare drain: {e}"),
            None => {}
        }
    }
    let secs = first.map_or(0.0, |f| (clock.now() - f).as_secs_f64());
    Ok((bytes, secs))
}

pub(crate) fn committed(
    brokers: &str,
    group: &str,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
) -> anyhow::Result<bool> {
    let consumer: BaseConsumer = client(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in ends.keys() {
        tpl.add_partition(topic, *p);
    }
    let c = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(ends.iter().all(|(p, e)| {
        matches!(c.find_partition(topic, *p).map(|x| x.offset()), Some(Offset::Offset(o)) if o >= *e)
    }))
}

pub(crate) fn pipeline_config(
    brokers: &str,
    topic: &str,
    hot: &std::path::Path,
    opts: &BenchOptions,
) -> String {
    let parquet = opts.parquet;
    let mut otlp = String::new();
    if let Some(url) = &opts.otlp_http {
        otlp.push_str(&format!(
            "  otlp_http: [{{name: bench, endpoint: \"{url}\"}}]\n"
        ));
    }
    if let Some(ep) = &opts.otlp_grpc {
        otlp.push_str(&format!(
            "  otlp_grpc: [{{name: bench, endpoint: \"{ep}\", tls: {{insecure: true}}}}]\n"
        ));
    }
    format!(
        r#"
kafka:
  brokers: "{brokers}"
  group_id: {topic}-pipeline
  create_topics: true
  input_topics: [{topic}]
  sampled_topic: {topic}-sampled
  dead_letter_topic: {topic}-dlq
  commit_interval: 500ms
store:
  decision_wait: 2s
  decision_wait_after_root: 1s
  max_trace_age: 1m
  max_traces: 1000000
  max_bytes: 4GiB
policies:
  - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}
  - {{name: slow, type: latency, latency: {{threshold_ms: 500}}}}
  - name: important
    type: and
    and:
      and_sub_policy:
        - {{name: route, type: string_attribute, string_attribute: {{key: http.route, values: [/api/payment, /api/checkout]}}}}
        - {{name: half, type: probabilistic, probabilistic: {{sampling_percentage: 50}}}}
  - {{name: default, type: probabilistic, probabilistic: {{sampling_percentage: 1}}}}
sinks:
  parquet: {{enabled: {parquet}}}
{otlp}archive:
  hot: {{url: "file://{}", flush_interval: 5s}}
telemetry:
  listen: ""
shutdown_timeout: 30s
"#,
        hot.display()
    )
}

/// A freshly loaded bench topic.
pub(crate) struct Loaded {
    /// Its name.
    pub topic: String,
    /// Spans in it.
    pub spans: usize,
    /// What was written.
    pub produced: gen::Produced,
}

/// Creates `tracesift-<prefix>-<n>` with `partitions` and loads `traces` generated traces
/// (one keyed record per trace, or split over several records).
pub(crate) async fn load_topic(
    brokers: &str,
    prefix: &str,
    traces: usize,
    partitions: i32,
    split: bool,
) -> anyhow::Result<Loaded> {
    let clock = SystemClock::new();
    let topic = format!(
        "tracesift-{prefix}-{}",
        crate::clock::Clock::wall_nanos(&clock) % 1_000_000_007
    );
    crate::topics::create(
        &client(brokers),
        crate::topics::TopicSpec::new(&topic, partitions),
    )
    .await
    .context("is a broker running at --brokers?")?;
    let gen_opts = GenOptions {
        traces,
        split,
        late_fraction: 0.0,
        start_ns: crate::clock::Clock::wall_nanos(&clock),
        ..Default::default()
    };
    let (records, manifest) = gen::plan_records(&gen_opts);
    let spans: usize = manifest.traces.iter().map(|t| t.spans).sum();
    let producer: FutureProducer = client(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .create()?;
    eprintln!(
        "loading {topic}: {traces} traces, {spans} spans in {} records",
        records.len()
    );
    let produced = gen::produce(&producer, &topic, &records, None).await?;
    Ok(Loaded {
        topic,
        spans,
        produced,
    })
}

/// Loads a topic and measures the bare drain and the pipeline on it.
pub async fn run(opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    let clock = SystemClock::new();
    let Loaded {
        topic,
        spans,
        produced,
    } = load_topic(
        &opts.brokers,
        "bench",
        opts.traces,
        opts.partitions,
        opts.split,
    )
    .await?;
    let ends = produced.ends.clone();

    let hot = std::env::temp_dir().join(format!("{topic}-hot"));
    let cfg = Config::parse(&pipeline_config(&opts.brokers, &topic, &hot, opts))
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    eprintln!("bare consumer drain ...");
    let (c, t, e) = (
        crate::kafka::consumer_config(&cfg.kafka),
        topic.clone(),
        ends.clone(),
    );
    let (read, secs) = tokio::task::spawn_blocking(move || drain(c, &t, &e)).await??;
    let bare = phase(secs, spans, read);

    eprintln!("pipeline ...");
    let t0 = clock.now();
    let running =
        crate::pipeline::start(cfg, Arc::new(crate::clock::tokio_clock::TokioClock::new())).await?;
    let stats = Arc::clone(&running.stats);
    let deadline = t0 + Duration::from_secs(900);
    // The clock starts at the first span in, so the group join (a few seconds of protocol that
    // the bare consumer, which assigns partitions itself, does not pay) is reported apart.
    let mut first: Option<MonoTime> = None;
    while (stats.spans.load(Ordering::Relaxed) as usize) < spans {
        if clock.now() > deadline {
            bail!("pipeline did not ingest every span within 900 s");
        }
        if first.is_none() && stats.spans.load(Ordering::Relaxed) > 0 {
            first = Some(clock.now());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let first = first.unwrap_or(t0);
    let join_secs = (first - t0).as_secs_f64();
    let ingest = phase((clock.now() - first).as_secs_f64(), spans, produced.bytes);
    let group = format!("{topic}-pipeline");
    loop {
        let (b, g, t, e) = (
            opts.brokers.clone(),
            group.clone(),
            topic.clone(),
            ends.clone(),
        );
        if tokio::task::spawn_blocking(move || committed(&b, &g, &t, &e)).await?? {
            break;
        }
        if clock.now() > deadline {
            bail!("committed offsets did not reach the end within 900 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let committed_secs = (clock.now() - t0).as_secs_f64();
    let rendered = crate::telemetry::install().render();
    let end_to_end = ["kafka", "parquet", "otlp_http/bench", "otlp_grpc/bench"]
        .into_iter()
        .filter_map(|sink| {
            let labels = format!("sink=\"{sink}\"");
            histogram_quantiles(
                &rendered,
                crate::telemetry::END_TO_END,
                &labels,
                &[0.5, 0.99],
            )
            .map(|q| (sink, q[0], q[1]))
        })
        .collect();
    let stats = running.stop().await;
    let _ = std::fs::remove_dir_all(&hot);
    Ok(BenchReport {
        records: produced.records,
        spans,
        bytes: produced.bytes,
        bare,
        ingest,
        join_secs,
        committed_secs,
        traces_kept: stats.traces_kept(),
        traces_decided: stats.traces_decided(),
        end_to_end,
    })
}

/// Quantiles `qs` (0..1) of histogram `metric` with label set `labels` (e.g. `sink="kafka"`)
/// read from a Prometheus text rendering, by linear interpolation inside the bucket that holds
/// each rank (as PromQL's `histogram_quantile`). `None` when it has no samples.
fn histogram_quantiles(rendered: &str, metric: &str, labels: &str, qs: &[f64]) -> Option<Vec<f64>> {
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
