//! `tracesift bench-cost`: what a span costs in CPU and memory. One topic is loaded once; the
//! bare consumer and then the pipeline in each configuration (everything written, no decision
//! log, hot Parquet only, nothing written) read all of it, each as its own consumer group, and
//! each run's process CPU time (user + system, every thread) from its start until its committed
//! offsets reach the end gives core-seconds per million spans. Then an idle member's CPU at the
//! log end, and the resident memory per buffered span (everything held under a long decision
//! wait) against the spans' wire bytes.
//!
//! Figures are for this process on this machine; the broker runs elsewhere (its CPU is not
//! counted), which is what "broker-independent" means here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::bench::{client, drain, load_topic, pipeline_config, BenchOptions, Loaded};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;

/// What to measure.
#[derive(Debug, Clone)]
pub struct CostOptions {
    /// Bootstrap servers of a running broker.
    pub brokers: String,
    /// Traces to load.
    pub traces: usize,
    /// Partitions of the topic.
    pub partitions: i32,
    /// `kafka.properties` for every pipeline run (`linger.ms=50`), to compare settings.
    pub properties: Vec<(String, String)>,
    /// Rounds over the configurations; each figure is the median.
    pub runs: usize,
}

/// One measured configuration.
#[derive(Debug, Clone)]
pub struct CostRow {
    /// What ran.
    pub name: &'static str,
    /// Process CPU seconds (all threads).
    pub cpu_secs: f64,
    /// Wall seconds, start to the committed end.
    pub wall_secs: f64,
    /// Core-seconds per million spans read (the median round).
    pub core_s_per_m: f64,
    /// The same, of the cheapest round: on a shared machine other load only ever adds, so the
    /// minimum is the steadier figure for comparing two builds.
    pub min_core_s_per_m: f64,
    /// Every round's CPU seconds, in round order.
    pub rounds: Vec<f64>,
}

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct CostReport {
    /// Spans in the topic.
    pub spans: usize,
    /// Value bytes in the topic.
    pub bytes: usize,
    /// One row per configuration, the bare consumer first.
    pub rows: Vec<CostRow>,
    /// An idle member at the log end: share of one core.
    pub idle_core_share: f64,
    /// Resident bytes per buffered span, and per wire byte.
    pub rss_per_span: f64,
    /// Resident bytes over wire bytes of the buffered spans.
    pub rss_over_wire: f64,
    /// The holding member's store heap per buffered span, by part (its
    /// `tracesift_store_heap_bytes` gauges).
    pub heap_per_span: Vec<(String, f64)>,
}

impl std::fmt::Display for CostReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "topic: {} spans, {:.1} MB ({:.0} B/span)",
            self.spans,
            self.bytes as f64 / 1e6,
            self.bytes as f64 / self.spans.max(1) as f64
        )?;
        if self.rows.is_empty() {
            return self.fmt_memory(f);
        }
        writeln!(
            f,
            "{:<44} {:>9} {:>9} {:>16} {:>9} {:>16}  rounds (cpu s)",
            "configuration", "cpu s", "wall s", "core-s / 1M spans", "(min)", "spans/s per core"
        )?;
        for r in &self.rows {
            let rounds: Vec<String> = r.rounds.iter().map(|c| format!("{c:.2}")).collect();
            writeln!(
                f,
                "{:<44} {:>9.2} {:>9.2} {:>16.2} {:>9.2} {:>16.0}  {}",
                r.name,
                r.cpu_secs,
                r.wall_secs,
                r.core_s_per_m,
                r.min_core_s_per_m,
                1e6 / r.core_s_per_m.max(1e-9),
                rounds.join(" ")
            )?;
        }
        let by = |n: &str| {
            self.rows
                .iter()
                .find(|r| r.name == n)
                .map(|r| r.core_s_per_m)
        };
        if let (Some(all), Some(pq)) = (by(EVERYTHING), by(PARQUET_ONLY)) {
            writeln!(
                f,
                "Kafka writes (everything - hot Parquet only): {:.2} core-s / 1M input spans",
                all - pq
            )?;
        }
        writeln!(
            f,
            "idle member at the log end: {:.2}% of a core",
            self.idle_core_share * 100.0
        )?;
        self.fmt_memory(f)
    }
}

impl CostReport {
    fn fmt_memory(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "buffered: {:.0} B of RSS per span ({:.2}x the wire bytes, {:.0} B/span)",
            self.rss_per_span,
            self.rss_over_wire,
            self.bytes as f64 / self.spans.max(1) as f64
        )?;
        let counted: f64 = self.heap_per_span.iter().map(|p| p.1).sum();
        let parts: Vec<String> = self
            .heap_per_span
            .iter()
            .map(|(p, b)| format!("{p} {b:.0}"))
            .collect();
        writeln!(
            f,
            "  of which the store's heap, B per span: {} (sum {:.0}); the rest (allocator overhead, librdkafka, runtime) {:.0}",
            parts.join(", "),
            counted,
            self.rss_per_span - counted
        )
    }
}

const BARE: &str = "bare consumer (librdkafka only)";
const NOTHING: &str = "pipeline, nothing written";
const PARQUET_ONLY: &str = "pipeline, hot Parquet only";
const NO_DECISION_LOG: &str = "pipeline, sampled topic + Parquet, no log";
const EVERYTHING: &str = "pipeline, everything (sampled, Parquet, log)";

/// (user + system CPU seconds, resident bytes) of this process.
pub fn process_usage() -> (f64, u64) {
    process_usage_of("self")
}

/// [`process_usage`] of `pid` (`self` for this process).
fn process_usage_of(pid: &str) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let cpu = stat.rfind(')').map_or(0.0, |i| {
        let f: Vec<&str> = stat[i + 2..].split_whitespace().collect();
        let ticks = |k: usize| f.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // utime and stime, in clock ticks (100 per second on Linux).
        (ticks(11) + ticks(12)) as f64 / 100.0
    });
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    (cpu, rss)
}

/// Loads a topic and measures every configuration on it.
pub async fn run(opts: &CostOptions) -> anyhow::Result<CostReport> {
    let Loaded {
        topic,
        spans,
        produced,
    } = load_topic(&opts.brokers, "cost", opts.traces, opts.partitions, false).await?;
    let ends = produced.ends.clone();
    let hot = std::env::temp_dir().join(format!("{topic}-hot"));
    let bench_opts = BenchOptions {
        brokers: opts.brokers.clone(),
        traces: opts.traces,
        partitions: opts.partitions,
        split: false,
        parquet: true,
        otlp_http: None,
        otlp_grpc: None,
    };
    let plain = Config::parse(&pipeline_config(&opts.brokers, &topic, &hot, &bench_opts))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut base = plain.clone();
    // (Not checked: `--property` may also override reserved settings, for comparison.)
    for (k, v) in &opts.properties {
        base.kafka.properties.insert(k.clone(), v.clone());
    }
    let mut rows = Vec::new();

    let mut idle_core_share = 0.0;
    if opts.runs > 0 {
        idle_core_share = cpu_rounds(opts, &topic, spans, &ends, &base, &mut rows).await?;
    }
    memory(
        opts,
        &topic,
        spans,
        &produced,
        plain,
        &hot,
        rows,
        idle_core_share,
    )
    .await
}

/// The bare consumer, then `opts.runs` interleaved rounds over the pipeline's configurations;
/// the idle member's share of a core.
async fn cpu_rounds(
    opts: &CostOptions,
    topic: &str,
    spans: usize,
    ends: &BTreeMap<i32, i64>,
    base: &Config,
    rows: &mut Vec<CostRow>,
) -> anyhow::Result<f64> {
    let clock = SystemClock::new();
    let per_m = |cpu: f64| cpu / spans as f64 * 1e6;
    eprintln!("{BARE} ...");
    let (c, t, e) = (
        crate::kafka::consumer_config(&base.kafka),
        topic.to_string(),
        ends.clone(),
    );
    let (cpu0, _) = process_usage();
    let t0 = clock.now();
    tokio::task::spawn_blocking(move || drain(c, &t, &e)).await??;
    let cpu = process_usage().0 - cpu0;
    rows.push(CostRow {
        name: BARE,
        cpu_secs: cpu,
        wall_secs: (clock.now() - t0).as_secs_f64(),
        core_s_per_m: per_m(cpu),
        min_core_s_per_m: per_m(cpu),
        rounds: vec![cpu],
    });

    // Rounds over the configurations, interleaved so a busy moment of a shared machine does
    // not land on one configuration; each figure is the median of its rounds.
    let names = [NOTHING, PARQUET_ONLY, NO_DECISION_LOG, EVERYTHING];
    let mut samples: Vec<Vec<(f64, f64)>> = vec![Vec::new(); names.len()];
    let mut idle_core_share = 0.0;
    for round in 0..opts.runs.max(1) {
        for (i, name) in names.into_iter().enumerate() {
            eprintln!("{name} (round {}) ...", round + 1);
            let mut cfg = base.clone();
            cfg.kafka.group_id = format!("{topic}-cost-{i}-{round}");
            cfg.kafka.decision_log = name == EVERYTHING;
            // A decision log of its own per run: a member restores its partitions' log on
            // assignment, and a shared one would make each round restore the rounds before it.
            cfg.kafka.decisions_topic = format!("{topic}-decisions-{round}");
            cfg.sinks.kafka.enabled = name == NO_DECISION_LOG || name == EVERYTHING;
            cfg.sinks.parquet.enabled = name != NOTHING;
            let group = cfg.kafka.group_id.clone();
            let (cpu0, _) = process_usage();
            let t0 = clock.now();
            let running =
                crate::pipeline::start(cfg, Arc::new(crate::clock::tokio_clock::TokioClock::new()))
                    .await?;
            wait_committed(&opts.brokers, &group, topic, ends).await?;
            samples[i].push((process_usage().0 - cpu0, (clock.now() - t0).as_secs_f64()));
            if name == EVERYTHING && round + 1 == opts.runs.max(1) {
                let idle = Duration::from_secs(10);
                let (c0, _) = process_usage();
                tokio::time::sleep(idle).await;
                idle_core_share = (process_usage().0 - c0) / idle.as_secs_f64();
            }
            running.stop().await;
        }
    }
    for (name, s) in names.into_iter().zip(samples) {
        let rounds: Vec<f64> = s.iter().map(|x| x.0).collect();
        let mut sorted = s;
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (cpu, wall) = sorted[sorted.len() / 2];
        rows.push(CostRow {
            name,
            cpu_secs: cpu,
            wall_secs: wall,
            core_s_per_m: per_m(cpu),
            min_core_s_per_m: per_m(sorted[0].0),
            rounds,
        });
    }
    Ok(idle_core_share)
}

/// Resident bytes per buffered span, in `tracesift run` children, into the report.
#[allow(clippy::too_many_arguments)]
async fn memory(
    opts: &CostOptions,
    topic: &str,
    spans: usize,
    produced: &crate::gen::Produced,
    plain: Config,
    hot: &std::path::Path,
    rows: Vec<CostRow>,
    idle_core_share: f64,
) -> anyhow::Result<CostReport> {
    eprintln!("buffered memory ...");
    // In a `tracesift run` of its own (this process's allocator keeps what the runs above
    // freed, which would hide growth): an idle member on an empty topic, then one holding the
    // whole topic under a decision wait of an hour; the difference is the buffered spans.
    let empty = format!("{topic}-empty");
    crate::topics::create(
        &client(&opts.brokers),
        crate::topics::TopicSpec::new(&empty, opts.partitions),
    )
    .await?;
    let mut cfg = plain;
    cfg.kafka.decision_log = false;
    cfg.sinks.kafka.enabled = false;
    cfg.sinks.parquet.enabled = false;
    cfg.store.decision_wait = Duration::from_secs(3600);
    cfg.store.decision_wait_after_root = Duration::from_secs(3600);
    cfg.store.max_trace_age = Duration::from_secs(7200);
    cfg.store.decision_cache.sampled_ttl = Duration::from_secs(7200);
    cfg.store.decision_cache.non_sampled_ttl = Duration::from_secs(7200);
    let mut idle_cfg = cfg.clone();
    idle_cfg.kafka.group_id = format!("{topic}-cost-idle");
    idle_cfg.kafka.input_topics = vec![empty];
    let (idle_rss, _) = member_rss(&idle_cfg, 0).await?;
    cfg.kafka.group_id = format!("{topic}-cost-hold");
    let (hold_rss, heap) = member_rss(&cfg, spans).await?;
    let _ = std::fs::remove_dir_all(hot);
    let grown = hold_rss.saturating_sub(idle_rss) as f64;
    Ok(CostReport {
        spans,
        bytes: produced.bytes,
        rows,
        idle_core_share,
        rss_per_span: grown / spans as f64,
        rss_over_wire: grown / produced.bytes.max(1) as f64,
        heap_per_span: heap
            .into_iter()
            .map(|(p, b)| (p, b / spans.max(1) as f64))
            .collect(),
    })
}

/// Runs `tracesift run` on `cfg` as a child process until it has read `spans` spans (and 3 s
/// more, for allocations to settle); its resident bytes then, and its store heap by part (summed
/// over partitions).
async fn member_rss(cfg: &Config, spans: usize) -> anyhow::Result<(u64, Vec<(String, f64)>)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut cfg = cfg.clone();
    cfg.telemetry.listen = format!("127.0.0.1:{port}");
    let yaml = serde_norway::to_string(&cfg)?;
    Config::parse(&yaml).map_err(|e| anyhow::anyhow!("bench config round trip: {e}"))?;
    let file = std::env::temp_dir().join(format!("{}.yaml", cfg.kafka.group_id));
    std::fs::write(&file, yaml)?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["run", "-c"])
        .arg(&file)
        .env("TRACESIFT_LOG", "error,librdkafka=off")
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let pid = child.id();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let clock = SystemClock::new();
    let deadline = clock.now() + Duration::from_secs(900);
    let result = async {
        loop {
            if clock.now() > deadline {
                bail!("the member did not read {spans} spans within 900 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let Ok((200, m)) = crate::telemetry::server::http_get(addr, "/metrics").await else {
                continue;
            };
            let read: f64 = m
                .lines()
                .filter(|l| l.starts_with(crate::telemetry::SPANS_IN))
                .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
                .sum();
            if read as usize >= spans && m.contains(crate::telemetry::PARTITIONS_ASSIGNED) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss = process_usage_of(&pid.to_string()).1;
        let mut heap: BTreeMap<String, f64> = BTreeMap::new();
        if let Ok((200, m)) = crate::telemetry::server::http_get(addr, "/metrics").await {
            for l in m
                .lines()
                .filter(|l| l.starts_with("tracesift_store_heap_bytes{"))
            {
                let part = l
                    .split("part=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or("?");
                let v = l
                    .split_whitespace()
                    .last()
                    .and_then(|v| v.parse::<f64>().ok());
                *heap.entry(part.to_string()).or_default() += v.unwrap_or(0.0);
            }
        }
        Ok((rss, heap.into_iter().collect()))
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&file);
    result
}

/// Waits until `group`'s committed offsets reach `ends`, asking through one client every
/// 250 ms (its own CPU is small and counted, as it would be for any monitor).
async fn wait_committed(
    brokers: &str,
    group: &str,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
) -> anyhow::Result<()> {
    let (b, g, t, e) = (
        brokers.to_string(),
        group.to_string(),
        topic.to_string(),
        ends.clone(),
    );
    tokio::task::spawn_blocking(move || {
        let clock = SystemClock::new();
        let deadline = clock.now() + Duration::from_secs(900);
        let consumer: BaseConsumer = client(&b)
            .set("group.id", &g)
            .set("enable.auto.commit", "false")
            .create()?;
        loop {
            let mut tpl = TopicPartitionList::new();
            for p in e.keys() {
                tpl.add_partition(&t, *p);
            }
            if let Ok(c) = consumer.committed_offsets(tpl, Duration::from_secs(10)) {
                let done = e.iter().all(|(p, end)| {
                    matches!(c.find_partition(&t, *p).map(|x| x.offset()), Some(Offset::Offset(o)) if o >= *end)
                });
                if done {
                    return Ok(());
                }
            }
            if clock.now() > deadline {
                bail!("committed offsets did not reach the end within 900 s");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    })
    .await?
}
