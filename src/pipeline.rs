//! The stages wired together: start and stop a run, the partition queue contract, the policies
//! in force, and one partition's functional [`core`] with its async [`task`] shell.
//!
//! A partition is owned by one [`PartitionTask`] fed by the source through a bounded queue, so
//! nothing on the hot path takes a lock. The task's [`PartitionCore`] decides everything (what is
//! buffered, decided, emitted, dead-lettered, logged and committed) without I/O; the task carries
//! out its effects.

pub mod core;
pub mod decision_log;
pub mod dry_run;
pub mod outputs;
pub mod stream_time;
pub mod task;

pub use self::core::{Effect, PartitionCore};
pub use self::task::PartitionTask;
pub use crate::telemetry::run::RunStats;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::config::Config;
use crate::sample::Sampler;
use crate::source::queue::{CommitBoard, Control, Inbox, Spawner};
use crate::telemetry;

/// Policy names, shared into kept rows.
type Names = Arc<[Arc<str>]>;
/// A compiled sampler and its policy names.
type InForce = (Arc<Sampler>, Names);

/// The policies in force, replaceable while running (SIGHUP): tasks hold the current sampler and
/// look at the generation once per tick.
pub struct Policies {
    generation: AtomicU64,
    current: std::sync::RwLock<InForce>,
}

impl Policies {
    /// The policies of a configuration.
    pub fn new(sampler: Sampler, names: &[String]) -> Policies {
        Policies {
            generation: AtomicU64::new(0),
            current: std::sync::RwLock::new((Arc::new(sampler), names_of(names))),
        }
    }

    /// Generation of the policies in force (changes on every replace).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The sampler and policy names in force, with their generation.
    pub fn load(&self) -> (u64, Arc<Sampler>, Names) {
        let g = self.generation();
        match self.current.read() {
            Ok(c) => (g, Arc::clone(&c.0), Arc::clone(&c.1)),
            Err(p) => {
                let c = p.into_inner();
                (g, Arc::clone(&c.0), Arc::clone(&c.1))
            }
        }
    }

    /// Puts new policies in force; tasks switch at their next tick.
    pub fn replace(&self, sampler: Sampler, names: &[String]) {
        let new = (Arc::new(sampler), names_of(names));
        match self.current.write() {
            Ok(mut c) => *c = new,
            Err(p) => *p.into_inner() = new,
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// Re-reads the policy block (`policies:` or `tiers:`) of the configuration file and puts it in
/// force. A file with any problem changes nothing: the old policies keep running and every
/// problem is returned. Other sections need a restart; a change there is reported, not applied.
pub fn reload_policies(
    path: &std::path::Path,
    running: &Config,
    policies: &Policies,
) -> Result<Vec<String>, crate::config::ConfigErrors> {
    let outcome = Config::load(path).and_then(|new| {
        let sampler = Sampler::from_config(&new).map_err(crate::config::ConfigErrors)?;
        Ok((new, sampler))
    });
    match outcome {
        Ok((new, sampler)) => {
            let mut ignored = Vec::new();
            let mut same = |name: &str, a: String, b: String| {
                if a != b {
                    ignored.push(name.to_string());
                }
            };
            same("kafka", yaml(&new.kafka), yaml(&running.kafka));
            same("store", yaml(&new.store), yaml(&running.store));
            same("sinks", yaml(&new.sinks), yaml(&running.sinks));
            same("archive", yaml(&new.archive), yaml(&running.archive));
            same("telemetry", yaml(&new.telemetry), yaml(&running.telemetry));
            policies.replace(sampler, &new.policy_names());
            telemetry::policy_reload(true);
            Ok(ignored)
        }
        Err(e) => {
            telemetry::policy_reload(false);
            Err(e)
        }
    }
}

fn yaml<T: serde::Serialize>(t: &T) -> String {
    serde_norway::to_string(t).unwrap_or_default()
}

fn names_of(names: &[String]) -> Arc<[Arc<str>]> {
    names.iter().map(|n| Arc::from(n.as_str())).collect()
}

/// What every partition task of a run shares (cheap to clone).
#[derive(Clone)]
pub struct Shared {
    /// The configuration.
    pub config: Arc<Config>,
    /// The policies in force.
    pub policies: Arc<Policies>,
    /// Readiness (held down while partitions restore their decisions).
    pub health: crate::telemetry::Health,
    /// Makes each partition's sinks.
    pub sinks: Arc<dyn crate::sink::MakeSinks>,
    /// Dead letters, the decision log and its restore.
    pub outputs: Arc<dyn outputs::Outputs>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Run counters.
    pub stats: Arc<RunStats>,
    /// Commit points published by partition tasks, picked up by the source's poll loop.
    pub commits: CommitBoard,
}

impl Spawner for Shared {
    fn spawn(
        &self,
        topic: Arc<str>,
        partition: i32,
        inbox: Inbox,
        control: mpsc::Receiver<Control>,
    ) -> tokio::task::JoinHandle<()> {
        let sinks = self.sinks.for_partition(&topic, partition);
        let task = PartitionTask::new(topic, partition, self.clone(), sinks);
        tokio::spawn(task.run(inbox, control))
    }
}

/// Errors that stop a run before it starts.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The policies did not compile (config validation normally catches this first).
    #[error("invalid policies: {0}")]
    Policies(crate::config::ConfigErrors),
    /// A Kafka client could not be created or the cluster refused a request.
    #[error("kafka: {0}")]
    Kafka(rdkafka::error::KafkaError),
    /// The source failed to start.
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    /// The hot tier could not be opened.
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
    /// The telemetry endpoint could not be started.
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::server::TelemetryError),
    /// A topic is missing, unusable, or could not be created.
    #[error(transparent)]
    Topics(#[from] crate::topics::TopicError),
    /// The consumer thread could not be started.
    #[error("cannot start the source: {0}")]
    Start(String),
    /// A sink could not be set up (the hot tier's store, an OTLP exporter's TLS files).
    #[error(transparent)]
    Sink(#[from] crate::sink::BuildError),
    /// The rekey stage could not be started.
    #[error("cannot start the rekey stage on `{topic}`: {reason}")]
    Rekey {
        /// Rekey topic.
        topic: String,
        /// Cause.
        reason: String,
    },
}

// Not a `#[from]`: the error's text is in the message once, not again as its source.
impl From<rdkafka::error::KafkaError> for RunError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        RunError::Kafka(e)
    }
}

/// A running pipeline, for callers that want to watch it (demo, bench, tests).
pub struct Running {
    /// Counters.
    pub stats: Arc<RunStats>,
    /// Readiness.
    pub health: crate::telemetry::Health,
    /// Bound telemetry address, when enabled.
    pub telemetry_addr: Option<std::net::SocketAddr>,
    /// The policies in force ([`Policies::replace`] reloads them).
    pub policies: Arc<Policies>,
    source: Option<crate::source::SourceHandle>,
    rekey: Option<crate::source::rekey::RekeyHandle>,
    producer: crate::sink::Producer,
    compactor: Option<crate::archive::compact::Compactor>,
    _server: Option<crate::telemetry::server::Server>,
    shutdown_timeout: Duration,
}

impl Running {
    /// Graceful stop: no more input, every partition drained (decided traces written, pending
    /// writes acknowledged) and committed, producer flushed.
    pub async fn stop(mut self) -> Arc<RunStats> {
        self.health.set_ready(false);
        if let Some(c) = self.compactor.take() {
            c.stop(self.shutdown_timeout).await;
        }
        // Upstream first: the rekey stage finishes its writes before the sampler drains.
        if let Some(rekey) = self.rekey.take() {
            rekey.stop().await;
        }
        if let Some(source) = self.source.take() {
            let _ = tokio::task::spawn_blocking(move || source.stop()).await;
        }
        let producer = self.producer.clone();
        let timeout = self.shutdown_timeout;
        let _ = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
        Arc::clone(&self.stats)
    }
}

/// What `/readyz` says while the cluster is awaited at start.
const AWAITING: &str = "waiting for the Kafka cluster and the run's topics";

/// The run's topics checked (and made, with `kafka.create_topics`), waiting for a cluster
/// that cannot be reached yet, or for input topics not created yet: tried again after 1 s,
/// doubling to 30 s, logged and shown on `/readyz` with the reason, until `startup_timeout`
/// (0 = forever). Anything else (an unsafe topology, a refused request) fails at once.
async fn await_cluster(
    config: &Config,
    health: &crate::telemetry::Health,
    clock: &dyn Clock,
) -> Result<i32, RunError> {
    let started = clock.now();
    let mut wait = Duration::from_secs(1);
    loop {
        let e = match crate::topics::ensure_run_topics(config).await {
            Ok(p) => {
                health.clear_fault(AWAITING);
                return Ok(p);
            }
            Err(e) => e,
        };
        let waited = clock.now().saturating_since(started);
        let timeout = config.startup_timeout;
        if !e.is_transient() || (!timeout.is_zero() && waited + wait > timeout) {
            return Err(e.into());
        }
        let why = format!("{AWAITING}: {e}");
        health.fault_seen(clock.now().as_duration().as_millis() as u64, why);
        tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, waited_s = waited.as_secs(), "the Kafka cluster is not ready yet; waiting (startup_timeout)");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

impl RunError {
    /// A problem of the configuration or of what it names (a restart does not help): `run`
    /// exits 2 for it, as `check` does.
    pub fn is_configuration(&self) -> bool {
        match self {
            RunError::Policies(_) | RunError::Sink(_) | RunError::Archive(_) => true,
            RunError::Kafka(e) => matches!(
                e,
                rdkafka::error::KafkaError::ClientConfig(..)
                    | rdkafka::error::KafkaError::ClientCreation(_)
            ),
            RunError::Topics(t) => matches!(
                t,
                crate::topics::TopicError::Unsafe(_) | crate::topics::TopicError::Refused(_)
            ),
            _ => false,
        }
    }
}

/// Starts the pipeline: telemetry, producer, output topics, hot tier, consumer group.
pub async fn start(config: Config, clock: Arc<dyn Clock>) -> Result<Running, RunError> {
    let handle = crate::telemetry::install();
    let health = crate::telemetry::Health::default();
    let config = Arc::new(config);
    let sampler = Sampler::from_config(config.as_ref())
        .map_err(|e| RunError::Policies(crate::config::ConfigErrors(e)))?;
    let names = config.policy_names();
    let policies = Arc::new(Policies::new(sampler, &names));
    let producer = crate::sink::Producer::new(
        crate::kafka::producer_config(&config.kafka),
        Arc::clone(&clock),
    )?;
    // The endpoint first: while the cluster is awaited, `/healthz` answers and `/readyz`
    // says what is awaited.
    let server = if config.telemetry.listen.is_empty() {
        None
    } else {
        Some(
            crate::telemetry::server::serve(&config.telemetry.listen, handle, health.clone())
                .await?,
        )
    };
    let sampled_partitions = await_cluster(&config, &health, clock.as_ref()).await?;
    let stats = Arc::new(RunStats::new());
    crate::telemetry::register_run(&stats);
    let sinks = crate::sink::build(
        crate::sink::Wiring {
            sinks: config.sinks.clone(),
            hot: config.archive.hot.clone(),
            sampled_topic: Arc::from(config.kafka.sampled_topic.as_str()),
            dead_letter_topic: Arc::from(config.kafka.dead_letter_topic.as_str()),
            partitioner: config.kafka.properties.get("partitioner").cloned(),
            sampled_partitions,
        },
        producer.clone(),
        Arc::clone(&clock),
    )?;
    let (fixed, per_partition) = config.memory_formula();
    crate::telemetry::started(
        crate::telemetry::MemoryBudget {
            fixed,
            per_partition,
            store_max_bytes: config.store.max_bytes.0,
        },
        &sinks.labels(),
    );
    let shared = Shared {
        config: Arc::clone(&config),
        policies: Arc::clone(&policies),
        health: health.clone(),
        sinks: Arc::new(sinks),
        outputs: Arc::new(outputs::KafkaOutputs {
            config: Arc::clone(&config),
            producer: producer.clone(),
            health: health.clone(),
            clock: Arc::clone(&clock),
        }),
        clock,
        stats: Arc::clone(&stats),
        commits: CommitBoard::default(),
    };
    crate::telemetry::span_metrics::install(
        &config.telemetry.span_metrics,
        &config.telemetry.service_graph,
    );
    let rt = tokio::runtime::Handle::current();
    let h2 = health.clone();
    let commits = Arc::clone(&shared.commits);
    let source_clock = Arc::clone(&shared.clock);
    let spawner: Arc<dyn Spawner> = Arc::new(shared);
    let kafka = Arc::new(config.kafka.clone());
    let drain_deadline = config.shutdown_timeout;
    let source = tokio::task::spawn_blocking(move || {
        crate::source::start(
            kafka,
            drain_deadline,
            spawner,
            commits,
            h2,
            rt,
            source_clock,
        )
    })
    .await
    .map_err(|e| RunError::Start(e.to_string()))??;
    let rekey = crate::source::rekey::start(Arc::new(config.kafka.clone()), producer.clone())
        .map_err(|e| RunError::Rekey {
            topic: config.kafka.rekey.topic.clone(),
            reason: e.to_string(),
        })?;
    let compactor = if config.archive.compaction.in_run {
        Some(crate::archive::compact::Compactor::start(
            config.archive.clone(),
        )?)
    } else {
        None
    };
    Ok(Running {
        stats,
        health,
        telemetry_addr: server.as_ref().map(|s| s.addr),
        policies,
        source: Some(source),
        rekey,
        producer,
        compactor,
        _server: server,
        shutdown_timeout: config.shutdown_timeout,
    })
}
