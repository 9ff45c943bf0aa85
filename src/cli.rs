//! The commands, one file each under `cli/`: `run`, `demo`, `check`, `dry-run`, `compact`,
//! `trace`, `cost`, `gen`, `bench`, `bench-archive`, `topology`. `anyhow` is used here and nowhere else.

pub mod bench;
pub mod bench_archive;
pub mod bench_cost;
pub mod compact;
pub mod cost;
pub mod demo;
pub mod dry_run;
pub mod gen;
pub mod run;
pub mod topology;
pub mod trace;

use std::path::PathBuf;
use std::process::ExitCode;
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
        /// Also export kept traces over OTLP/HTTP to this base URL (`http://127.0.0.1:4318`).
        #[arg(long)]
        otlp_http: Option<String>,
        /// Also export kept traces over OTLP/gRPC to this `host:port` (plaintext).
        #[arg(long)]
        otlp_grpc: Option<String>,
    },
    /// Measure what a span costs: process CPU per million spans for the bare consumer and the
    /// pipeline in each configuration (everything written, no decision log, hot Parquet only,
    /// nothing written) on one loaded topic, an idle member's CPU, and RSS per buffered span.
    BenchCost {
        /// Bootstrap servers.
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Traces to load.
        #[arg(long, default_value_t = 30_000)]
        traces: usize,
        /// Partitions of the topic.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// A `kafka.properties` entry for the pipeline runs, `KEY=VALUE` (repeatable), to
        /// compare client settings.
        #[arg(long = "property", value_name = "KEY=VALUE")]
        properties: Vec<String>,
        /// Rounds over the configurations (each figure is the median of its rounds); 0 measures
        /// the buffered memory only.
        #[arg(long, default_value_t = 3)]
        runs: usize,
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
    /// One pass of the archive lifecycle, then exit (or with `--every`, a pass every interval
    /// as a service): retention, compaction of hot hours (merge into sorted files holding each
    /// (trace id, span id, kind) once), moves down the tiers. Safe beside `run` and other
    /// compactors (a lease in the hot tier).
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
        /// Keep running: a pass every DURATION (e.g. `5m`) until SIGTERM / SIGINT, serving
        /// `/metrics`, `/healthz` and `/readyz` on `telemetry.listen` (the compactor
        /// Deployment). Without it: one pass, then exit.
        #[arg(long, value_parser = humantime::parse_duration)]
        every: Option<Duration>,
        /// With `--every`: serve metrics and health here instead of `telemetry.listen` (a
        /// compactor beside a member on one host).
        #[arg(long, requires = "every")]
        listen: Option<String>,
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
    /// Topics as code: `check` the topics file against the configuration (offline), `plan`
    /// what reconciling the cluster with it would change, `apply` it. Unsafe states are refused
    /// with their reason.
    Topology {
        /// check | plan | apply.
        #[arg(value_enum)]
        verb: topology::Verb,
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Topics file (default: `kafka.topics_file` of the configuration).
        #[arg(long)]
        topics: Option<PathBuf>,
        /// Allow adding partitions to topics keyed by trace id (moves traces between owners:
        /// drain the pipeline first).
        #[arg(long)]
        allow_repartition: bool,
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

/// Loads and validates a configuration file; prints every problem and returns `None` when it
/// has any.
fn load(path: &std::path::Path) -> Option<Config> {
    match Config::load(path).and_then(|c| c.check_local().map(|()| c)) {
        Ok(c) => Some(c),
        Err(e) => {
            eprint!("{e}");
            None
        }
    }
}

fn init_logs(default: &str) {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRACESIFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // Colour only on a terminal: logs written to files or collected by an orchestrator
        // stay plain text.
        .with_ansi(terminal)
        .with_writer(if terminal {
            BoxMakeWriter::new(|| LineClearing { fresh: true })
        } else {
            BoxMakeWriter::new(std::io::stderr)
        })
        .try_init();
}

/// A log line on a terminal first clears the line it lands on, so a progress line drawn in
/// place with `\r` (the demo's) is never broken by a log line: the log line takes its place
/// and the progress line is drawn again below it at its next tick.
struct LineClearing {
    fresh: bool,
}

impl std::io::Write for LineClearing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut err = std::io::stderr().lock();
        if std::mem::take(&mut self.fresh) {
            err.write_all(b"\r\x1b[2K")?;
        }
        err.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Runs a command; the exit code reflects its outcome.
pub fn main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { config } => Ok(match load(&config) {
            Some(c) => {
                print!("{}", c.to_yaml());
                let (fixed, per) = c.memory_formula();
                println!(
                    "# memory bound: fixed {fixed} B + {per} B per partition owned ({} MiB + {} MiB; README, Bounded memory)",
                    fixed >> 20,
                    per >> 20
                );
                for t in c.memory_terms().iter().filter(|t| t.bytes > 0) {
                    let unit = if t.per_partition {
                        " per partition"
                    } else {
                        ""
                    };
                    println!(
                        "#   {:>6} MiB{unit:<14} {}",
                        t.bytes.div_ceil(1 << 20),
                        t.what
                    );
                }
                ExitCode::SUCCESS
            }
            None => ExitCode::from(2),
        }),
        Command::Topology {
            verb,
            config,
            topics,
            allow_repartition,
        } => {
            init_logs("warn,librdkafka=error");
            let Some(cfg) = load(&config) else {
                return Ok(ExitCode::from(2));
            };
            runtime()?.block_on(topology::main(
                verb,
                &cfg,
                topics.as_deref(),
                allow_repartition,
            ))
        }
        Command::Run { config } => {
            init_logs("info");
            let Some(cfg) = load(&config) else {
                return Ok(ExitCode::from(2));
            };
            match runtime()?.block_on(run::run(cfg, config)) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                // What a restart cannot fix stops the member (exit 2, as `check`).
                Err(e)
                    if e.downcast_ref::<crate::pipeline::RunError>()
                        .is_some_and(crate::pipeline::RunError::is_configuration) =>
                {
                    eprintln!("error: {e:#}");
                    Ok(ExitCode::from(2))
                }
                Err(e) => Err(e),
            }
        }
        Command::Demo {
            duration,
            dir,
            rate,
        } => {
            init_logs("warn,librdkafka=off");
            runtime()?.block_on(demo::run(duration, &dir, rate))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Trace {
            trace_id,
            config,
            json,
        } => {
            init_logs("warn");
            trace::main(&trace_id, &config, json)
        }
        Command::Cost { config } => {
            init_logs("warn");
            cost::main(&config)
        }
        Command::Compact {
            config,
            memory_budget,
            min_age,
            now,
            every,
            listen,
        } => match every {
            Some(every) => {
                init_logs("info");
                compact::service(&config, memory_budget, min_age, every, listen)
            }
            None => {
                init_logs("warn");
                compact::main(&config, memory_budget, min_age, now)
            }
        },
        Command::DryRun {
            config,
            max_records,
            max_duration,
            idle,
        } => {
            init_logs("warn,librdkafka=off");
            dry_run::main(&config, max_records, max_duration, idle)
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
            let opts = bench_archive::ArchiveBenchOptions {
                dir,
                traces,
                lookups,
                memory_budget,
            };
            let report = runtime()?.block_on(bench_archive::run(&opts))?;
            println!("{report}");
            if let Some(peak) = crate::telemetry::peak_rss_bytes() {
                println!(
                    "peak RSS of the whole run: {:.0} MiB",
                    peak as f64 / (1 << 20) as f64
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchCost {
            brokers,
            traces,
            partitions,
            properties,
            runs,
        } => {
            init_logs("warn,librdkafka=off");
            let mut props = Vec::new();
            for p in properties {
                let Some((k, v)) = p.split_once('=') else {
                    eprintln!("--property {p}: expected KEY=VALUE");
                    return Ok(ExitCode::from(2));
                };
                props.push((k.to_string(), v.to_string()));
            }
            let opts = bench_cost::CostOptions {
                brokers,
                traces,
                partitions,
                properties: props,
                runs,
            };
            let report = runtime()?.block_on(bench_cost::run(&opts))?;
            println!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            brokers,
            traces,
            partitions,
            split,
            no_parquet,
            otlp_http,
            otlp_grpc,
        } => {
            init_logs("warn,librdkafka=off");
            let opts = bench::BenchOptions {
                brokers,
                traces,
                partitions,
                split,
                parquet: !no_parquet,
                otlp_http,
                otlp_grpc,
            };
            let report = runtime()?.block_on(bench::run(&opts))?;
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
            runtime()?.block_on(gen::run(
                brokers, topic, traces, rate, split, seed, partitions,
            ))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
