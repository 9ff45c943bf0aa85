//! The commands: `run`, `demo`, `check`, `dry-run`, `compact`, `gen`, `bench`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Config;

/// Kafka-native tail sampling and tiered Parquet archive for OpenTelemetry traces.
#[derive(Debug, Parser)]
#[command(name = "tracesift", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipeline as a member of the consumer group until SIGTERM / SIGINT.
    Run {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Run everything on an embedded default: in-process Kafka, generated traffic, real Parquet.
    Demo {
        /// How long to generate traffic.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Output directory.
        #[arg(long, default_value = "tracesift-demo")]
        dir: PathBuf,
        /// Traces per second to generate.
        #[arg(long, default_value_t = 1500.0)]
        rate: f64,
    },
    /// Measure end-to-end throughput against a running broker: a bare consumer drain, then the
    /// whole pipeline on the same freshly loaded topic.
    Bench {
        /// Bootstrap servers.
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Traces to load.
        #[arg(long, default_value_t = 100_000)]
        traces: usize,
        /// Partitions of the bench topic.
        #[arg(long, default_value_t = 2)]
        partitions: i32,
        /// Split each trace over several out-of-order records instead of one keyed record.
        #[arg(long)]
        split: bool,
        /// Skip the hot Parquet sink (sampled topic only).
        #[arg(long)]
        no_parquet: bool,
    },
    /// Measure the archive on generated traffic: OTLP vs Parquet bytes per span (hot segments
    /// and compacted), the compaction pass, and trace-lookup latency. No broker needed.
    BenchArchive {
        /// Directory for the archive (its `hot/` is replaced).
        #[arg(long, default_value = "./tracesift-bench-archive")]
        dir: PathBuf,
        /// Traces to generate (about 7.5 spans each).
        #[arg(long, default_value_t = 100_000)]
        traces: usize,
        /// Lookups to time.
        #[arg(long, default_value_t = 200)]
        lookups: usize,
        /// Compaction memory budget.
        #[arg(long, default_value = "512MiB", value_parser = parse_bytes)]
        memory_budget: u64,
    },
    /// Run the configured policies on a bounded sample of the input topics and report, per
    /// policy, traces matched and kept, keep rate, bytes and projected daily volume. Writes
    /// nothing: no commits, no sampled topic, no Parquet.
    DryRun {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Records to read at most.
        #[arg(long, default_value_t = 200_000)]
        max_records: usize,
        /// Read for at most this long.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        max_duration: Duration,
        /// Stop when no record arrived for this long.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        idle: Duration,
    },
    /// One pass of the archive lifecycle, then exit: retention, compaction of hot hours (merge
    /// into sorted files holding each (trace id, span id, kind) once), moves down the tiers.
    /// Safe beside `run` and other compactors (a lease in the hot tier).
    Compact {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Override `archive.compaction.memory_budget`.
        #[arg(long, value_parser = parse_bytes)]
        memory_budget: Option<u64>,
        /// Override `archive.compaction.min_age`.
        #[arg(long, value_parser = humantime::parse_duration)]
        min_age: Option<Duration>,
        /// Pretend the time is this (RFC 3339); for tests and dry runs of the lifecycle.
        #[arg(long, hide = true)]
        now: Option<String>,
    },
    /// Find one trace in the archive (hot and every tier) and print it as a span tree with
    /// durations, errors highlighted; `--json` prints OTLP/JSON instead.
    Trace {
        /// Trace id, 32 hex digits.
        trace_id: String,
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Print the trace as OTLP/JSON (`{"resourceSpans": …}`).
        #[arg(long)]
        json: bool,
    },
    /// What the archive holds and costs: bytes and files per tier, spans kept per policy,
    /// monthly cost per tier, everything-hot against as-configured, and the unsampled volume.
    Cost {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a configuration: print the effective config, or every problem.
    Check {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Produce realistic OTLP traces into a topic.
    Gen {
        /// Bootstrap servers.
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Target topic.
        #[arg(long, default_value = "otlp_spans")]
        topic: String,
        /// Traces to produce.
        #[arg(long, default_value_t = 10_000)]
        traces: usize,
        /// Records per second at most (unpaced when absent).
        #[arg(long)]
        rate: Option<f64>,
        /// Split each trace over several out-of-order, interleaved records.
        #[arg(long)]
        split: bool,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Create the topic with this many partitions if it does not exist.
        #[arg(long)]
        partitions: Option<i32>,
    },
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    crate::config::ByteSize::parse(s).map(|b| b.0)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn init_logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRACESIFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs a command; the exit code reflects its outcome.
pub fn main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                print!("{}", c.to_yaml());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprint!("{e}");
                Ok(ExitCode::from(2))
            }
        },
        Command::Run { config } => {
            init_logs("info");
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return Ok(ExitCode::from(2));
                }
            };
            runtime()?.block_on(run(cfg, config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            duration,
            dir,
            rate,
        } => {
            init_logs("warn,librdkafka=off");
            runtime()?.block_on(crate::demo::run(duration, &dir, rate))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Trace {
            trace_id,
            config,
            json,
        } => {
            init_logs("warn");
            let Some(id) = crate::otlp::TraceId::from_hex(&trace_id) else {
                eprintln!("`{trace_id}` is not a trace id (32 hex digits)");
                return Ok(ExitCode::from(2));
            };
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let t0 = std::time::Instant::now();
            let found = runtime()?.block_on(async {
                let tiers = crate::archive::tiering::open_tiers(&cfg.archive)?;
                crate::archive::lookup::find_trace(&tiers, id).await
            })?;
            let st = &found.stats;
            if found.spans.is_empty() {
                eprintln!(
                    "trace {trace_id} not found ({} tiers, {} files read, {} passed over by manifest)",
                    st.tiers, st.files, st.files_skipped_by_manifest
                );
                return Ok(ExitCode::from(1));
            }
            {
                use std::io::{IsTerminal, Write};
                let mut out = std::io::stdout().lock();
                if json {
                    let doc = crate::archive::lookup::render_otlp_json(&found)?;
                    serde_json::to_writer_pretty(&mut out, &doc)?;
                    out.write_all(b"\n")?;
                } else {
                    let color = std::io::stdout().is_terminal();
                    out.write_all(
                        crate::archive::lookup::render_tree_styled(&found.spans, color).as_bytes(),
                    )?;
                }
                out.flush()?;
            }
            eprintln!(
                "{} spans; {} tiers, {} files read ({} passed over by manifest), {} row groups read, {} skipped by statistics, {} by bloom filter, {} rows decoded, {:.1} ms",
                found.spans.len(),
                st.tiers,
                st.files,
                st.files_skipped_by_manifest,
                st.row_groups_read,
                st.row_groups_skipped,
                st.row_groups_skipped_by_bloom,
                st.rows_read,
                t0.elapsed().as_secs_f64() * 1e3
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Cost { config } => {
            init_logs("warn");
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let report = runtime()?.block_on(async {
                let tiers = crate::archive::tiering::open_tiers(&cfg.archive)?;
                crate::archive::cost::report(&tiers).await
            })?;
            println!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Compact {
            config,
            memory_budget,
            min_age,
            now,
        } => {
            init_logs("warn");
            let mut cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return Ok(ExitCode::from(2));
                }
            };
            if let Some(m) = memory_budget {
                cfg.archive.compaction.memory_budget = crate::config::ByteSize(m);
            }
            if let Some(m) = min_age {
                cfg.archive.compaction.min_age = m;
            }
            if let Err(e) = cfg.validate() {
                eprint!("{e}");
                return Ok(ExitCode::from(2));
            }
            let mut opts = crate::archive::compact::CompactOptions::open(&cfg.archive)?;
            opts.progress = true;
            if let Some(now) = now {
                match chrono::DateTime::parse_from_rfc3339(&now) {
                    Ok(t) => opts.now_ms = t.timestamp_millis().max(0) as u64,
                    Err(e) => {
                        eprintln!("--now `{now}`: {e}");
                        return Ok(ExitCode::from(2));
                    }
                }
            }
            let r = runtime()?.block_on(async {
                let tiers = crate::archive::tiering::open_tiers(&cfg.archive)?;
                crate::archive::compact::pass(&tiers, &opts).await
            })?;
            println!("{r}");
            if let Some(peak) = crate::telemetry::peak_rss_bytes() {
                eprintln!("compact: peak RSS {peak} bytes");
            }
            Ok(if r.failed_hours.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::DryRun {
            config,
            max_records,
            max_duration,
            idle,
        } => {
            init_logs("warn,librdkafka=off");
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let opts = crate::dryrun::DryRunOptions {
                max_records,
                max_duration,
                idle,
            };
            let report = crate::dryrun::run(&cfg, &opts, &crate::clock::SystemClock::new())?;
            println!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchArchive {
            dir,
            traces,
            lookups,
            memory_budget,
        } => {
            init_logs("warn");
            let dir = if dir.is_absolute() {
                dir
            } else {
                std::env::current_dir()?.join(dir)
            };
            let opts = crate::archive_bench::ArchiveBenchOptions {
                dir,
                traces,
                lookups,
                memory_budget,
            };
            let report = runtime()?.block_on(crate::archive_bench::run(&opts))?;
            println!("{report}");
            if let Some(peak) = crate::telemetry::peak_rss_bytes() {
                println!(
                    "peak RSS of the whole run: {:.0} MiB",
                    peak as f64 / (1 << 20) as f64
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            brokers,
            traces,
            partitions,
            split,
            no_parquet,
        } => {
            init_logs("warn,librdkafka=off");
            let opts = crate::bench::BenchOptions {
                brokers,
                traces,
                partitions,
                split,
                parquet: !no_parquet,
            };
            let report = runtime()?.block_on(crate::bench::run(&opts))?;
            println!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Gen {
            brokers,
            topic,
            traces,
            rate,
            split,
            seed,
            partitions,
        } => {
            init_logs("warn");
            runtime()?.block_on(gen(brokers, topic, traces, rate, split, seed, partitions))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Waits for SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run(cfg: Config, path: PathBuf) -> anyhow::Result<()> {
    let timeout = cfg.shutdown_timeout;
    let running_cfg = cfg.clone();
    let running = crate::pipeline::start(cfg, Arc::new(crate::clock::TokioClock::new())).await?;
    if let Some(addr) = running.telemetry_addr {
        tracing::info!(%addr, "metrics on /metrics, health on /healthz and /readyz");
    }
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup())?;
        let stop = shutdown_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = hup.recv() => {
                    match crate::pipeline::reload_policies(&path, &running_cfg, &running.policies) {
                        Ok(ignored) => {
                            tracing::info!(file = %path.display(), "policies reloaded");
                            if !ignored.is_empty() {
                                tracing::warn!(sections = ?ignored, "changed sections other than the policies need a restart; not applied");
                            }
                        }
                        Err(e) => tracing::error!(file = %path.display(), problems = %e, "reload rejected; the previous policies keep running"),
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = &path;
        shutdown_signal().await;
    }
    tracing::info!("shutting down: draining partitions");
    match tokio::time::timeout(timeout + Duration::from_secs(5), running.stop()).await {
        Ok(stats) => {
            tracing::info!(
                spans = stats.spans.load(std::sync::atomic::Ordering::Relaxed),
                traces_decided = stats
                    .traces_decided
                    .load(std::sync::atomic::Ordering::Relaxed),
                "stopped"
            );
            Ok(())
        }
        Err(_) => anyhow::bail!(
            "shutdown did not finish within {}",
            humantime::format_duration(timeout)
        ),
    }
}

async fn gen(
    brokers: String,
    topic: String,
    traces: usize,
    rate: Option<f64>,
    split: bool,
    seed: u64,
    partitions: Option<i32>,
) -> anyhow::Result<()> {
    use rdkafka::config::ClientConfig;
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("compression.type", "lz4");
    if let Some(p) = partitions {
        crate::topics::create(&cc, crate::topics::TopicSpec::new(&topic, p)).await?;
    }
    let producer: rdkafka::producer::FutureProducer = cc.create()?;
    let opts = crate::gen::GenOptions {
        traces,
        seed,
        split,
        start_ns: crate::clock::Clock::wall_nanos(&crate::clock::SystemClock::new()),
        ..Default::default()
    };
    let (records, manifest) = crate::gen::plan_records(&opts);
    let t0 = std::time::Instant::now();
    let produced = crate::gen::produce(&producer, &topic, &records, rate).await?;
    let (n, bytes) = (produced.records, produced.bytes);
    let secs = t0.elapsed().as_secs_f64();
    let spans: usize = manifest.traces.iter().map(|t| t.spans).sum();
    println!(
        "produced {traces} traces, {spans} spans in {n} records ({:.1} MB) to {topic} in {secs:.1}s ({:.0} spans/s)",
        bytes as f64 / 1e6,
        spans as f64 / secs
    );
    Ok(())
}
