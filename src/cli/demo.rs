//! `tracesift demo`: the whole pipeline on an embedded default, needing nothing but the binary.
//!
//! An in-process Kafka cluster (librdkafka's mock cluster) holds the topics; the generator writes
//! realistic traces (split over records, out of order, some late, a few malformed records); the
//! pipeline runs with the seed's tiers and writes real Parquet under the output directory. A live
//! progress line shows what happens; the summary ends with a DuckDB query to paste.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::FutureProducer;

use crate::clock::Clock;
use crate::config::Config;
use crate::gen::{self, GenOptions};
use crate::pipeline::RunStats;

/// The embedded configuration (see `deploy/local/demo.yaml`).
pub const DEMO_CONFIG: &str = include_str!("../../deploy/local/demo.yaml");

fn progress(stats: &RunStats, names: &[String], elapsed: Duration) -> String {
    let kept: Vec<String> = names
        .iter()
        .map(|n| format!("{n} {}", stats.kept_by(n)))
        .collect();
    format!(
        "[{:>3}s] spans in {:>9} | traces decided {:>7} | kept {:>6} ({}) | dead-letter {}",
        elapsed.as_secs(),
        stats.spans.load(Ordering::Relaxed),
        stats.traces_decided(),
        stats.traces_kept(),
        kept.join(", "),
        stats.dead_letters.load(Ordering::Relaxed),
    )
}

/// Runs the demo for `duration` of traffic at `rate` traces per second.
pub async fn run(duration: Duration, dir: &Path, rate: f64) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let hot = dir.join("hot");
    let cluster = MockCluster::new(1).context("cannot start the in-process Kafka cluster")?;
    let brokers = cluster.bootstrap_servers();
    for (t, p) in [
        ("otlp_spans", 4),
        ("otlp_spans_sampled", 4),
        ("otlp_spans_dlq", 4),
        ("tracesift_decisions", 4),
    ] {
        cluster
            .create_topic(t, p, 1)
            .context("cannot create demo topics")?;
    }
    let mut cfg_yaml: serde_norway::Value = serde_norway::from_str(DEMO_CONFIG)?;
    cfg_yaml["kafka"]["brokers"] = brokers.clone().into();
    cfg_yaml["kafka"]["create_topics"] = true.into();
    cfg_yaml["archive"]["hot"]["url"] = format!("file://{}", hot.display()).into();
    cfg_yaml["telemetry"] = serde_norway::from_str("{listen: '127.0.0.1:0'}")?;
    let cfg =
        Config::parse(&serde_norway::to_string(&cfg_yaml)?).map_err(|e| anyhow::anyhow!("{e}"))?;
    let names: Vec<String> = cfg.policy_names();
    let decision_wait = cfg.store.decision_wait;
    let flush = cfg.archive.hot.flush_interval;

    println!(
        "tracesift demo: in-process Kafka at {brokers}, Parquet under {}",
        hot.display()
    );
    println!("policies: errors 100%, slow >500ms 100%, /api/payment + /api/checkout 50%, rest 1%");
    let clock = Arc::new(crate::clock::tokio_clock::TokioClock::new());
    let running = crate::pipeline::start(cfg, clock.clone()).await?;
    if let Some(a) = running.telemetry_addr {
        println!("metrics: http://{a}/metrics");
    }
    let stats = Arc::clone(&running.stats);

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "20")
        .create()?;
    let traces = (rate * duration.as_secs_f64()).max(1.0) as usize;
    let opts = GenOptions {
        traces,
        split: true,
        late_fraction: 0.05,
        late_delay: Duration::from_secs(1),
        start_ns: clock.wall_nanos(),
        seed: clock.wall_nanos(),
        ..Default::default()
    };
    let (records, manifest) = gen::plan_records(&opts);
    let record_rate = records.len() as f64 / duration.as_secs_f64();
    let gen_producer = producer.clone();
    let gen_task = tokio::spawn(async move {
        let r = gen::produce(&gen_producer, "otlp_spans", &records, Some(record_rate)).await;
        // A few records no OTLP reader could decode: they go to the dead-letter topic.
        for i in 0..3 {
            let rec = rdkafka::producer::FutureRecord::to("otlp_spans")
                .key("garbage")
                .payload(&b"\x0a\xff\xff\xff not otlp"[..]);
            let _ = gen_producer.send(rec, Duration::from_secs(5)).await;
            let _ = i;
        }
        r
    });

    let start = clock.now();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let interrupted = loop {
        tokio::select! {
            _ = ticker.tick() => {
                print!("\r{}", progress(&stats, &names, clock.now() - start));
                let _ = std::io::stdout().flush();
                if gen_task.is_finished() { break false; }
            }
            _ = crate::cli::run::shutdown_signal() => break true,
        }
    };
    if !interrupted {
        // Let the last traces reach their decision and the last segments their flush.
        let settle = decision_wait + flush + Duration::from_secs(2);
        let until = clock.now() + settle;
        while clock.now() < until {
            ticker.tick().await;
            print!("\r{}", progress(&stats, &names, clock.now() - start));
            let _ = std::io::stdout().flush();
        }
    }
    println!();
    let produced = match gen_task.is_finished() {
        true => gen_task.await.ok().and_then(|r| r.ok()),
        false => {
            gen_task.abort();
            None
        }
    };
    let stats = running.stop().await;
    let listed = crate::archive::tiering::list_parquet(&crate::archive::open_store(&format!(
        "file://{}",
        hot.display()
    ))?)
    .await?;
    let (files, bytes) = (listed.len(), listed.iter().map(|(_, b)| b).sum::<u64>());
    let spans_generated: usize = manifest.traces.iter().map(|t| t.spans).sum();
    println!();
    println!("summary");
    if let Some(gen::Produced {
        records: n,
        bytes: b,
        ..
    }) = produced
    {
        println!(
            "  generated          {} traces, {spans_generated} spans in {n} records ({:.1} MB)",
            manifest.traces.len(),
            b as f64 / 1e6
        );
    }
    let line = |label: &str, v: u64| println!("  {label:<18} {v}");
    let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
    line("spans in", n(&stats.spans));
    line("traces decided", stats.traces_decided());
    line("traces kept", stats.traces_kept());
    for name in &names {
        println!("    {name:<16} {}", stats.kept_by(name));
    }
    line("spans kept", n(&stats.spans_kept));
    line("dead-letter", n(&stats.dead_letters));
    println!(
        "  parquet            {files} files, {:.2} MB",
        bytes as f64 / 1e6
    );
    println!();
    println!("query it (pip install duckdb, or the duckdb CLI):");
    println!(
        "  duckdb -c \"SELECT sampling_policy, count(DISTINCT trace_id) AS traces, count(*) AS spans, \
         round(quantile_cont(duration_ns/1e6, 0.99), 1) AS p99_ms FROM read_parquet('{}/spans/*/**/*.parquet', \
         hive_partitioning = true, union_by_name = true) GROUP BY 1 ORDER BY 2 DESC\"",
        hot.display()
    );
    // Clients first, then the in-process cluster they talk to (clients still closing may see
    // it go: that is the demo's own doing, not a fault).
    crate::kafka::brokers_going_away();
    drop(producer);
    drop(stats);
    drop(cluster);
    Ok(())
}
