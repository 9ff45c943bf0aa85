//! Topics as code: the one place tracesift creates, inspects or changes Kafka topics.
//!
//! - `topics/file.rs`: the topics file (`kafka.topics_file`, `topology/topics.yaml`), each
//!   topic with its role; pure parsing and the tie to the configuration.
//! - `topics/plan.rs`: the pure plan (file × cluster → create / alter / add partitions) and the
//!   safety rules, the same for `tracesift topology` and for `run` at start.
//! - here: the admin-API side: [`describe`] the cluster, [`apply`] a plan, and
//!   [`ensure_run_topics`], which `run` calls: it refuses to start on an unsafe topology and
//!   creates missing topics only with `kafka.create_topics` (broker-default replication).
//!
//! [`create`] is the load generator's and the bench's way to make their input topic.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, OwnedResourceSpecifier,
    ResourceSpecifier, TopicReplication,
};
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::Config;

pub mod file;
pub mod plan;

pub use file::{roles_of, Role, TopicsFile, Wanted};
pub use plan::{plan, unsafe_states, Action, Actual, Plan, Refusal, Rules};

/// How long one metadata or admin request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a DescribeConfigs request may take before the configs count as not described.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A topic as tracesift wants it (created with the broker's default replication).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Name.
    pub name: String,
    /// Partitions.
    pub partitions: i32,
    /// Topic configs (`cleanup.policy`, `retention.ms`, …).
    pub configs: BTreeMap<String, String>,
}

impl TopicSpec {
    /// A topic with the broker's defaults for everything but its partition count.
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        TopicSpec {
            name: name.into(),
            partitions,
            configs: BTreeMap::new(),
        }
    }

    /// The same with one more topic config.
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.configs.insert(key.into(), value.into());
        self
    }
}

/// Why topics could not be checked or created.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The cluster could not be reached or refused the request.
    #[error("kafka: {0}")]
    Kafka(KafkaError),
    /// A topic could not be created or is not usable as it is.
    #[error("topic `{topic}`: {reason}")]
    Topic {
        /// Topic.
        topic: String,
        /// What is wrong.
        reason: String,
    },
    /// The topology is unsafe to run on; every reason.
    #[error("unsafe topology, not starting:\n{}", .0.iter().map(|r| format!("  - {r}\n")).collect::<String>())]
    Unsafe(Vec<Refusal>),
    /// The cluster answered and refused this client (TLS verification, a client certificate,
    /// SASL authentication).
    #[error("the Kafka cluster refuses this client: {0} (check kafka.properties: the CA, the client certificate, the SASL mechanism, user and password)")]
    Refused(String),
    /// Topics the pipeline needs are missing and `kafka.create_topics` is off.
    #[error("missing topic(s) {}: create them with `tracesift topology apply -c FILE` (topology/topics.yaml), or set kafka.create_topics: true", .0.join(", "))]
    Missing(Vec<String>),
    /// A change of the plan failed.
    #[error("{action}: {reason}")]
    Apply {
        /// The step.
        action: String,
        /// Why.
        reason: String,
    },
}

// Not a `#[from]`: the error's text is in the message once, not again as its source.
impl From<rdkafka::error::KafkaError> for TopicError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        TopicError::Kafka(e)
    }
}

impl TopicError {
    /// The cluster cannot be reached yet, or a topic the run reads does not exist yet: worth
    /// waiting for at start.
    pub fn is_transient(&self) -> bool {
        use rdkafka::types::RDKafkaErrorCode as C;
        match self {
            TopicError::Missing(_) => true,
            TopicError::Kafka(e) => matches!(
                e.rdkafka_error_code(),
                Some(
                    C::BrokerTransportFailure
                        | C::AllBrokersDown
                        | C::Resolve
                        | C::OperationTimedOut
                        | C::RequestTimedOut
                        | C::NetworkException
                        | C::BrokerNotAvailable
                        | C::LeaderNotAvailable
                        | C::NotCoordinator
                        | C::CoordinatorNotAvailable
                        | C::UnknownTopicOrPartition
                )
            ),
            _ => false,
        }
    }
}

/// The admin client of topology work; its context notes a refusal by the cluster.
pub type Admin = AdminClient<AdminContext>;

/// Logs librdkafka's errors as every client of ours does, and keeps the last one that says
/// the cluster refused this client (TLS verification, a client certificate, SASL
/// authentication): the difference between a cluster not reachable yet and a configuration
/// that will never be let in.
#[derive(Debug, Default)]
pub struct AdminContext {
    refused: std::sync::Mutex<Option<String>>,
}

impl AdminContext {
    /// The refusal seen, if any.
    pub fn refused(&self) -> Option<String> {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl AdminContext {
    /// Notes `text` if it says the cluster refused this client.
    fn note(&self, text: &str) {
        if crate::kafka::is_refusal(text) {
            *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(text.trim().to_string());
        }
    }
}

impl rdkafka::ClientContext for AdminContext {
    fn error(&self, error: KafkaError, reason: &str) {
        use rdkafka::types::RDKafkaErrorCode as C;
        if matches!(
            error.rdkafka_error_code(),
            Some(C::Authentication | C::SaslAuthenticationFailed)
        ) {
            *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_string());
        }
        self.note(reason);
        crate::kafka::client_error(error, reason);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        self.note(message);
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!(target: "librdkafka", "librdkafka: {fac} {message}")
            }
            L::Warning => tracing::warn!(target: "librdkafka", "librdkafka: {fac} {message}"),
            L::Notice | L::Info => {
                tracing::info!(target: "librdkafka", "librdkafka: {fac} {message}")
            }
            L::Debug => tracing::debug!(target: "librdkafka", "librdkafka: {fac} {message}"),
        }
    }
}

/// The partition count of `topic` in `md` (0 when it does not exist).
pub fn partitions(md: &Metadata, topic: &str) -> i32 {
    md.topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len() as i32)
}

/// Cluster metadata through `admin` (blocking: call it off the async threads or accept the wait
/// at start-up).
pub fn metadata(admin: &Admin) -> Result<Metadata, KafkaError> {
    admin.inner().fetch_metadata(None, REQUEST_TIMEOUT)
}

/// Creates those of `specs` that `md` does not list; returns the names created. A topic created
/// meanwhile by someone else counts as present.
pub async fn create_missing(
    admin: &Admin,
    md: &Metadata,
    specs: &[TopicSpec],
) -> Result<Vec<String>, TopicError> {
    let missing: Vec<&TopicSpec> = specs
        .iter()
        .filter(|s| partitions(md, &s.name) == 0)
        .collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    let new: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|s| {
            // -1: the broker's default.replication.factor.
            let replication = TopicReplication::Fixed(-1);
            s.configs.iter().fold(
                NewTopic::new(&s.name, s.partitions, replication),
                |t, (k, v)| t.set(k, v),
            )
        })
        .collect();
    let results = admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT)),
        )
        .await?;
    let mut created = Vec::new();
    for r in results {
        match r {
            Ok(t) => created.push(t),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, e)) => {
                return Err(TopicError::Topic {
                    topic,
                    reason: e.to_string(),
                })
            }
        }
    }
    Ok(created)
}

/// Creates `spec` unless it exists (the load generator's and the bench's input topic).
pub async fn create(client: &ClientConfig, spec: TopicSpec) -> Result<bool, TopicError> {
    let admin: Admin = crate::kafka::create_with_context(client, AdminContext::default())?;
    let md = metadata(&admin)?;
    Ok(!create_missing(&admin, &md, &[spec]).await?.is_empty())
}

/// The topics `tracesift run` writes to or reads besides its input, as it creates them when
/// missing: the dead-letter topic, the sampled topic (with the Kafka sink on), the decision log
/// (with `kafka.decision_log`; compacted, retained for the longest decision-cache TTL plus a day
/// of replay window) and the rekey stage's topic. Each gets the partition count of the input it
/// serves, so partition p of the input maps to partition p of each.
pub fn run_topics(cfg: &Config, input_partitions: i32, rekey_partitions: i32) -> Vec<TopicSpec> {
    let k = &cfg.kafka;
    let mut specs = vec![TopicSpec::new(&k.dead_letter_topic, input_partitions)];
    if cfg.sinks.kafka.enabled {
        specs.push(TopicSpec::new(&k.sampled_topic, input_partitions));
    }
    if k.decision_log {
        let dc = &cfg.store.decision_cache;
        let retention = dc.sampled_ttl.max(dc.non_sampled_ttl) + Duration::from_secs(86_400);
        specs.push(
            TopicSpec::new(&k.decisions_topic, input_partitions)
                .with("cleanup.policy", "compact,delete")
                .with("retention.ms", retention.as_millis().to_string()),
        );
    }
    if !k.rekey.input_topics.is_empty() && rekey_partitions > 0 {
        specs.push(
            TopicSpec::new(&k.rekey.topic, rekey_partitions).with("cleanup.policy", "delete"),
        );
    }
    specs
}

/// The state of `names` in the cluster: partitions and replication from the metadata, topic
/// configs from DescribeConfigs (`None` where the broker does not answer it; the in-process
/// mock cluster does not). Topics that do not exist are absent from the map.
pub async fn describe(
    admin: &Admin,
    names: &[&str],
) -> Result<BTreeMap<String, Actual>, TopicError> {
    let md = metadata(admin)?;
    let mut out = BTreeMap::new();
    for t in md.topics() {
        if !names.contains(&t.name()) || t.partitions().is_empty() {
            continue;
        }
        let replication = t
            .partitions()
            .first()
            .map_or(0, |p| p.replicas().len() as i32);
        out.insert(
            t.name().to_string(),
            Actual {
                partitions: t.partitions().len() as i32,
                replication,
                configs: None,
            },
        );
    }
    let existing: Vec<String> = out.keys().cloned().collect();
    let specs: Vec<ResourceSpecifier<'_>> = existing
        .iter()
        .map(|n| ResourceSpecifier::Topic(n.as_str()))
        .collect();
    if specs.is_empty() {
        return Ok(out);
    }
    // Short: a broker answers in milliseconds, and one that does not implement the request
    // (librdkafka's mock cluster) should not hold the start up for long.
    let opts = AdminOptions::new().request_timeout(Some(DESCRIBE_TIMEOUT));
    match admin.describe_configs(&specs, &opts).await {
        Ok(results) => {
            for r in results.into_iter().flatten() {
                let OwnedResourceSpecifier::Topic(name) = &r.specifier else {
                    continue;
                };
                if r.entries.is_empty() {
                    continue;
                }
                let configs: BTreeMap<String, String> = r
                    .entries
                    .iter()
                    .filter_map(|e| e.value.clone().map(|v| (e.name.clone(), v)))
                    .collect();
                if let Some(a) = out.get_mut(name) {
                    a.configs = Some(configs);
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "the broker does not describe topic configs; only partitions are checked")
        }
    }
    Ok(out)
}

/// Makes the plan's changes, in order; stops at the first that fails. A plan with refusals is
/// not applied. Configs are altered with Kafka's AlterConfigs, which sets a topic's whole set of
/// overrides: configs the file does not list return to the broker's defaults.
pub async fn apply(admin: &Admin, plan: &Plan) -> Result<usize, TopicError> {
    if !plan.refused.is_empty() {
        return Err(TopicError::Unsafe(plan.refused.clone()));
    }
    let opts = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
    for a in &plan.actions {
        // One request per step; the step fails on the request's error or its result's.
        let (step, results) = match a {
            Action::Create(w) => {
                let t = w.configs.iter().fold(
                    NewTopic::new(
                        &w.name,
                        w.partitions,
                        TopicReplication::Fixed(w.replication),
                    ),
                    |t, (k, v)| t.set(k, v),
                );
                let step = format!("create {}", w.name);
                let r = admin.create_topics([&t], &opts).await;
                (
                    step,
                    r.map(|rs| rs.into_iter().map(|r| r.map(drop)).collect::<Vec<_>>()),
                )
            }
            Action::AlterConfigs { topic, all, .. } => {
                let c = all.iter().fold(
                    AlterConfig::new(ResourceSpecifier::Topic(topic)),
                    |c, (k, v)| c.set(k, v),
                );
                let r = admin.alter_configs([&c], &opts).await;
                let r = r.map(|rs| {
                    rs.into_iter()
                        .map(|r| r.map(drop).map_err(|(_, e)| (String::new(), e)))
                        .collect::<Vec<_>>()
                });
                (format!("alter {topic}"), r)
            }
            Action::AddPartitions { topic, to, .. } => {
                let np = NewPartitions::new(topic, *to as usize);
                let r = admin.create_partitions([&np], &opts).await;
                (
                    format!("add partitions to {topic}"),
                    r.map(|rs| rs.into_iter().map(|r| r.map(drop)).collect::<Vec<_>>()),
                )
            }
        };
        let failed = |reason: String| TopicError::Apply {
            action: step.clone(),
            reason,
        };
        for r in results.map_err(|e| failed(unsupported(e)))? {
            r.map_err(|(_, e)| failed(e.to_string()))?;
        }
    }
    Ok(plan.actions.len())
}

fn unsupported(e: KafkaError) -> String {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::UnsupportedVersion | RDKafkaErrorCode::UnsupportedFeature) => {
            format!("the broker does not implement this admin request; make the change with the cluster's own tools ({e})")
        }
        _ => e.to_string(),
    }
}

/// Checks what `tracesift run` needs before it starts: every topic it uses exists (or is
/// created, with `kafka.create_topics`), and the topology is safe ([`unsafe_states`]: retention
/// of the replayed topics, no compaction of span topics, a compacted and co-partitioned decision
/// log, `min.insync.replicas` within the replication factor). Every problem is reported at once.
pub async fn ensure_run_topics(cfg: &Config) -> Result<i32, TopicError> {
    let admin: Admin = crate::kafka::create_with_context(
        &crate::kafka::admin_config(&cfg.kafka),
        AdminContext::default(),
    )?;
    match ensure_with(&admin, cfg).await {
        // The cluster answered and refused this client (credentials, certificates): waiting
        // will not change that.
        Err(e) if e.is_transient() => match admin
            .inner()
            .context()
            .refused()
            .or_else(crate::kafka::refused)
        {
            Some(reason) => Err(TopicError::Refused(reason)),
            None => Err(e),
        },
        other => other,
    }
}

async fn ensure_with(admin: &Admin, cfg: &Config) -> Result<i32, TopicError> {
    let roles = roles_of(cfg);
    let names: Vec<&str> = roles.iter().map(|(n, _)| n.as_str()).collect();
    let mut state = describe(admin, &names).await?;
    let sources_missing: Vec<String> = roles
        .iter()
        .filter(|(n, r)| matches!(r, Role::Input | Role::RekeyInput) && !state.contains_key(n))
        .map(|(n, _)| n.clone())
        .collect();
    if !sources_missing.is_empty() {
        // The inputs are the Collectors' topics: never created here.
        return Err(TopicError::Missing(sources_missing));
    }
    let missing: Vec<String> = roles
        .iter()
        .filter(|(n, _)| !state.contains_key(n))
        .map(|(n, _)| n.clone())
        .collect();
    if !missing.is_empty() {
        if !cfg.kafka.create_topics {
            return Err(TopicError::Missing(missing));
        }
        let md = metadata(admin)?;
        let rekey = cfg
            .kafka
            .rekey
            .input_topics
            .first()
            .map_or(0, |t| partitions(&md, t));
        // The rekey topic is an input too, created here with the rekeyed topic's partition
        // count: the decision log must cover it as well.
        let rekey_input = match partitions(&md, &cfg.kafka.rekey.topic) {
            0 => rekey,
            n => n,
        };
        let input = cfg
            .kafka
            .input_topics
            .iter()
            .map(|t| match t == &cfg.kafka.rekey.topic {
                true => rekey_input,
                false => partitions(&md, t),
            })
            .max()
            .filter(|n| *n > 0)
            .unwrap_or(1);
        for t in create_missing(admin, &md, &run_topics(cfg, input, rekey)).await? {
            tracing::info!(topic = %t, "created a missing topic (kafka.create_topics; broker-default replication)");
        }
        state = describe(admin, &names).await?;
    }
    let topics: Vec<(Role, String, Actual)> = roles
        .into_iter()
        .filter_map(|(n, r)| state.remove(&n).map(|a| (r, n, a)))
        .collect();
    let rules = Rules {
        max_trace_age: cfg.store.max_trace_age,
        replay_window: cfg.kafka.replay_window,
        decision_ttl: cfg
            .store
            .decision_cache
            .sampled_ttl
            .max(cfg.store.decision_cache.non_sampled_ttl),
        allow_repartition: false,
    };
    let refused = unsafe_states(&topics, rules);
    if !refused.is_empty() {
        return Err(TopicError::Unsafe(refused));
    }
    Ok(topics
        .iter()
        .find(|(r, _, _)| *r == Role::Sampled)
        .map_or(0, |(_, _, a)| a.partitions))
}
