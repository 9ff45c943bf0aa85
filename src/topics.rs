//! Topics as code: the one place tracesift creates or inspects Kafka topics.
//!
//! A [`TopicSpec`] is a topic's name, partition count, replication and topic configs. The
//! pipeline creates the topics it writes to when they are missing ([`ensure_run_topics`]), the
//! load generator and the bench create their input topic ([`create`]); each goes through
//! [`create_missing`], which creates what is missing in one admin request, leaves what exists
//! alone and reports what it created. Created topics take the broker's default replication
//! factor (`default.replication.factor`); `topology/topics.yaml` holds the
//! production settings with their reasons.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::Config;

/// How long one metadata or admin request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

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
    Kafka(#[from] KafkaError),
    /// A topic could not be created or is not usable as it is.
    #[error("topic `{topic}`: {reason}")]
    Topic {
        /// Topic.
        topic: String,
        /// What is wrong.
        reason: String,
    },
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
pub fn metadata(admin: &AdminClient<DefaultClientContext>) -> Result<Metadata, KafkaError> {
    admin.inner().fetch_metadata(None, REQUEST_TIMEOUT)
}

/// Creates those of `specs` that `md` does not list; returns the names created. A topic created
/// meanwhile by someone else counts as present.
pub async fn create_missing(
    admin: &AdminClient<DefaultClientContext>,
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
    let admin: AdminClient<DefaultClientContext> = client.create()?;
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

/// Checks and creates what `tracesift run` needs: the rekeyed input must exist, the decision
/// log must have at least as many partitions as the input (co-partitioning), and missing output
/// topics are created.
pub async fn ensure_run_topics(cfg: &Config) -> Result<(), TopicError> {
    let admin: AdminClient<DefaultClientContext> =
        crate::source::kafka::admin_config(&cfg.kafka).create()?;
    let md = metadata(&admin)?;
    let input = cfg
        .kafka
        .input_topics
        .first()
        .map(|t| partitions(&md, t))
        .filter(|n| *n > 0)
        .unwrap_or(1);
    let rekey = match cfg.kafka.rekey.input_topics.first() {
        None => 0,
        Some(first) => match partitions(&md, first) {
            0 if partitions(&md, &cfg.kafka.rekey.topic) == 0 => {
                return Err(TopicError::Topic {
                    topic: first.clone(),
                    reason: "the rekeyed input topic does not exist".into(),
                })
            }
            n => n,
        },
    };
    if cfg.kafka.decision_log {
        let log = &cfg.kafka.decisions_topic;
        let n = partitions(&md, log);
        if n > 0 && n < input {
            return Err(TopicError::Topic {
                topic: log.clone(),
                reason: format!(
                    "the decision log has {n} partitions but the input has {input}; \
                     it must be co-partitioned (at least as many partitions)"
                ),
            });
        }
    }
    for t in create_missing(&admin, &md, &run_topics(cfg, input, rekey)).await? {
        tracing::warn!(topic = %t, "created a missing topic with the broker's default replication; manage production topics explicitly (topology/topics.yaml)");
    }
    Ok(())
}
