//! `kafka:` — the source's section: brokers, group, topics, queues, passthrough properties.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::otlp::Encoding;
use crate::settings::{validate_topic_name, ByteSize, ConfigError, Properties};

/// Reads `brokers` as a comma-separated string or a list of `host:port`.
fn brokers<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Brokers {
        One(String),
        Many(Vec<String>),
    }
    match Brokers::deserialize(d) {
        Ok(Brokers::One(s)) => Ok(s),
        Ok(Brokers::Many(v)) => Ok(v.join(",")),
        Err(_) => Err(serde::de::Error::custom(
            "brokers are `host:port`, several separated by commas (\"a:9092,b:9092\") or as a list ([a:9092, b:9092])",
        )),
    }
}

/// `kafka:` — where records come from and go to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port…]` or a list of `host:port`.
    #[serde(deserialize_with = "brokers")]
    pub brokers: String,
    /// Consumer group id; every instance of one pipeline uses the same.
    pub group_id: String,
    /// Topics with OTLP records, keyed by trace id.
    pub input_topics: Vec<String>,
    /// Encoding of input records; a `content-type` header on a record wins.
    pub encoding: Encoding,
    /// Topic that receives kept traces (OTLP protobuf, key = trace id hex).
    pub sampled_topic: String,
    /// Topic for the decision log: every decision, co-partitioned with the input, restored on
    /// assignment so replayed and late spans follow decisions made before a crash or rebalance.
    pub decisions_topic: String,
    /// Write and restore the decision log (turn off only for benchmarks of the rest).
    pub decision_log: bool,
    /// Topic for records that could not be decoded (original bytes, reason in headers).
    pub dead_letter_topic: String,
    /// How often each partition commits its offset watermark.
    #[serde(with = "crate::settings::duration")]
    pub commit_interval: Duration,
    /// Records buffered between the consumer and a partition's task before the partition is
    /// paused. Large enough to absorb a few fetch responses: a pause costs a re-fetch.
    pub partition_queue_records: usize,
    /// Record bytes buffered between the consumer and a partition's task before the partition is
    /// paused (whichever of the two limits is reached first).
    pub partition_queue_bytes: ByteSize,
    /// Input records larger than this go to the dead-letter topic unread (they would take a
    /// multiple of their size to decode and write).
    pub max_record_bytes: ByteSize,
    /// Rekey stage for inputs not keyed by trace id.
    pub rekey: RekeyConfig,
    /// Static membership: this member's `group.instance.id`, stable across restarts (a pod
    /// name: `${env:POD_NAME}`). A restarted member with the same id takes its partitions back
    /// at once, without a rebalance; a member that dies is noticed only after
    /// `session.timeout.ms`, so keep that short (it is the longest its partitions stand still).
    /// Unset: dynamic membership.
    pub group_instance_id: Option<String>,
    /// Compression of the records tracesift writes (sampled, dead-letter, decision-log topics):
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd` (default: 8.4× on kept traces against lz4's
    /// 6.1×, for 0.4 ms more CPU per MB; README → Performance). Input batches may use any.
    pub compression: Compression,
    /// Create missing topics at start, with the partition count of the input and the broker's
    /// default replication (on in the demo). Off: a missing topic stops the start with a
    /// pointer to `tracesift topology apply`.
    pub create_topics: bool,
    /// The topics as code (`tracesift topology plan|apply|check`).
    pub topics_file: String,
    /// How far back a restarted pipeline must be able to replay beyond `store.max_trace_age`:
    /// the input's (and rekey topic's) retention must cover both, or spans are deleted before
    /// they are read again after an outage. Checked by `run` and `topology`.
    #[serde(with = "crate::settings::duration")]
    pub replay_window: Duration,
    /// librdkafka properties passed through to every client (consumer and producer): TLS,
    /// SASL, timeouts, tuning. Values may be `${env:NAME}` / `${file:/path}` references;
    /// secret ones are never printed. The settings the guarantees rely on are refused here.
    pub properties: Properties,
}

/// Compression codec of the records tracesift writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// snappy.
    Snappy,
    /// lz4.
    Lz4,
    /// zstd.
    Zstd,
}

impl Compression {
    /// librdkafka's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// `kafka.properties` keys tracesift sets itself because a guarantee depends on them, each with
/// what to use instead.
pub const RESERVED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "use kafka.brokers"),
    ("metadata.broker.list", "use kafka.brokers"),
    ("group.id", "use kafka.group_id"),
    ("group.instance.id", "use kafka.group_instance_id"),
    ("compression.type", "use kafka.compression"),
    ("compression.codec", "use kafka.compression"),
    (
        "enable.auto.commit",
        "offsets are committed only once every sink has acknowledged",
    ),
    (
        "enable.auto.offset.store",
        "offsets are stored only once every sink has acknowledged",
    ),
    (
        "auto.offset.reset",
        "a new group must start from the earliest record, or spans are skipped",
    ),
    (
        "enable.idempotence",
        "the idempotent producer keeps kept traces and decisions free of duplicates and reordering",
    ),
    (
        "acks",
        "every write waits for all in-sync replicas (acks=all)",
    ),
    (
        "request.required.acks",
        "every write waits for all in-sync replicas (acks=all)",
    ),
    (
        "isolation.level",
        "the decision log and the input are read committed",
    ),
    (
        "enable.partition.eof",
        "the end of a partition drives stream time",
    ),
    (
        "partition.assignment.strategy",
        "revocation is incremental (cooperative-sticky)",
    ),
    (
        "transactional.id",
        "tracesift does not use transactions: its exactly-once comes from committing after every write is acknowledged and from idempotent writes",
    ),
];

/// Producer clocks may disagree this much: a decision-log restore's window reaches this far
/// further back than the decision cache's TTL (and the decision log's retention floor with it).
pub const RESTORE_SLACK: Duration = Duration::from_secs(300);

/// `kafka.rekey:` — topics whose records are not keyed by trace id are split per trace and
/// re-produced, keyed by trace id, to `topic`, which must be one of `kafka.input_topics`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RekeyConfig {
    /// Topics to rekey (empty = no rekey stage).
    pub input_topics: Vec<String>,
    /// The trace-keyed repartition topic (created with the first rekeyed topic's partition
    /// count when missing).
    pub topic: String,
    /// Bytes the stage's writes waiting for their acknowledgement may hold; at this bound it
    /// stops reading until writes complete (part of the memory formula when rekey is on).
    pub max_pending_bytes: ByteSize,
}

impl Default for RekeyConfig {
    fn default() -> Self {
        RekeyConfig {
            input_topics: Vec::new(),
            topic: "otlp_spans_by_trace".into(),
            max_pending_bytes: ByteSize(64 << 20),
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: "tracesift".into(),
            input_topics: vec!["otlp_spans".into()],
            encoding: Encoding::OtlpProto,
            sampled_topic: "otlp_spans_sampled".into(),
            decisions_topic: "tracesift_decisions".into(),
            decision_log: true,
            dead_letter_topic: "otlp_spans_dlq".into(),
            commit_interval: Duration::from_secs(1),
            partition_queue_records: 4096,
            partition_queue_bytes: ByteSize(32 << 20),
            max_record_bytes: ByteSize(16 << 20),
            rekey: RekeyConfig::default(),
            group_instance_id: None,
            compression: Compression::Zstd,
            create_topics: false,
            topics_file: "topology/topics.yaml".into(),
            replay_window: Duration::from_secs(3600),
            properties: Properties::default(),
        }
    }
}

impl KafkaConfig {
    /// Every problem of this section (`sampled_topic`: the Kafka sink is on, so its topic counts).
    pub fn check(&self, sampled_topic: bool, e: &mut Vec<ConfigError>) {
        let k = self;
        if k.brokers.trim().is_empty() {
            e.push(ConfigError::new(
                "kafka.brokers",
                "must name at least one broker",
            ));
        }
        if k.group_id.trim().is_empty() {
            e.push(ConfigError::new("kafka.group_id", "must not be empty"));
        }
        if k.input_topics.is_empty() {
            e.push(ConfigError::new(
                "kafka.input_topics",
                "must name at least one topic",
            ));
        }
        let mut names: Vec<(&str, String)> = k
            .input_topics
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), format!("kafka.input_topics[{i}]")))
            .collect();
        names.push((&k.dead_letter_topic, "kafka.dead_letter_topic".into()));
        if sampled_topic {
            names.push((&k.sampled_topic, "kafka.sampled_topic".into()));
        }
        for (i, (t, path)) in names.iter().enumerate() {
            if let Err(msg) = validate_topic_name(t) {
                e.push(ConfigError::new(path.clone(), msg));
            }
            if names[..i].iter().any(|(o, _)| o == t) {
                e.push(ConfigError::new(
                    path.clone(),
                    format!("topic `{t}` is used twice"),
                ));
            }
        }
        if k.commit_interval.is_zero() {
            e.push(ConfigError::new(
                "kafka.commit_interval",
                "must be greater than 0",
            ));
        }
        if !k.rekey.input_topics.is_empty() {
            if !k.input_topics.contains(&k.rekey.topic) {
                e.push(ConfigError::new(
                    "kafka.rekey.topic",
                    format!(
                        "`{}` must also be in kafka.input_topics: the sampler consumes the rekeyed traces from it",
                        k.rekey.topic
                    ),
                ));
            }
            for (i, t) in k.rekey.input_topics.iter().enumerate() {
                if k.input_topics.contains(t) || *t == k.rekey.topic {
                    e.push(ConfigError::new(
                        format!("kafka.rekey.input_topics[{i}]"),
                        format!("`{t}` is rekeyed, so the sampler must not read it directly"),
                    ));
                }
            }
        }
        if k.rekey.max_pending_bytes.0 < 1 << 20 {
            e.push(ConfigError::new(
                "kafka.rekey.max_pending_bytes",
                "must be at least 1MiB (a write larger than the bound still goes alone)",
            ));
        }
        if k.partition_queue_records == 0 {
            e.push(ConfigError::new(
                "kafka.partition_queue_records",
                "must be at least 1",
            ));
        }
        if k.partition_queue_bytes.0 < 1 << 20 {
            e.push(ConfigError::new(
                "kafka.partition_queue_bytes",
                "must be at least 1MiB (a record larger than the limit still passes alone)",
            ));
        }
        if k.max_record_bytes.0 < 1024 {
            e.push(ConfigError::new(
                "kafka.max_record_bytes",
                "must be at least 1KiB",
            ));
        }
        for (key, instead) in RESERVED_PROPERTIES {
            if k.properties.contains_key(*key) {
                e.push(ConfigError::new(
                    format!("kafka.properties.{key}"),
                    format!("is set by tracesift itself: {instead}"),
                ));
            }
        }
        if let Some(id) = &k.group_instance_id {
            if id.trim().is_empty() || id.len() > 249 {
                e.push(ConfigError::new(
                    "kafka.group_instance_id",
                    "must be 1 to 249 characters (unset it for dynamic membership)",
                ));
            }
        }
        if k.topics_file.trim().is_empty() {
            e.push(ConfigError::new("kafka.topics_file", "must not be empty"));
        }
    }
}
