//! Typed configuration: one YAML file, every field documented, unknown fields rejected.
//!
//! [`Config::parse`] is pure (no I/O): it reads the YAML, deserializes each section and each policy
//! separately so that problems in several places are all reported, then runs [`Config::validate`]
//! on what parsed. Every problem carries its YAML path. `tracesift check -c FILE` prints the
//! effective config (defaults filled in) or the full list of problems.
//!
//! The `policies:` block is the OpenTelemetry Collector `tail_sampling` syntax; it is parsed by the
//! sample stage ([`crate::sample::PolicySpec`]), which owns the policy types.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::otlp::Encoding;
use crate::sample::PolicySpec;

/// One configuration problem, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// YAML path, e.g. `store.max_traces` or `policies[2].latency.threshold_ms`.
    pub path: String,
    /// What is wrong and, where it helps, what is allowed.
    pub message: String,
}

impl ConfigError {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} problem(s) in the configuration:", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

/// A size in bytes, written as an integer or with a unit: `512KiB`, `64MiB`, `1GiB`, `10MB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `123`, `4KiB`, `1.5GiB`, `10MB` (SI and IEC units, case-insensitive `b`).
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let num: f64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a size (e.g. 512MiB, 1GiB, 1048576)"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            "kib" | "k" => 1 << 10,
            "mib" | "m" => 1 << 20,
            "gib" | "g" => 1 << 30,
            "tib" | "t" => 1 << 40,
            other => {
                return Err(format!(
                    "unknown size unit `{other}` (use B, KiB, MiB, GiB, KB, MB, GB)"
                ))
            }
        };
        Ok(ByteSize((num * mult as f64).round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// `kafka:` — where records come from and go to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port…]`.
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
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Records buffered between the consumer and a partition's task before the partition is
    /// paused. Large enough to absorb a few fetch responses: a pause costs a re-fetch.
    pub partition_queue_records: usize,
    /// Record bytes buffered between the consumer and a partition's task before the partition is
    /// paused (whichever of the two limits is reached first).
    pub partition_queue_bytes: ByteSize,
    /// Rekey stage for inputs not keyed by trace id.
    pub rekey: RekeyConfig,
    /// librdkafka properties passed through to every client (consumer and producer).
    pub properties: BTreeMap<String, String>,
}

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
}

impl Default for RekeyConfig {
    fn default() -> Self {
        RekeyConfig {
            input_topics: Vec::new(),
            topic: "otlp_spans_by_trace".into(),
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
            rekey: RekeyConfig::default(),
            properties: BTreeMap::new(),
        }
    }
}

/// What to do when the trace store is over its trace or byte budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnOverflow {
    /// Decide the oldest traces early (counted as forced decisions).
    #[default]
    DecideOldest,
    /// Stop fetching the partition until decisions free room.
    Pause,
}

/// `store:` — how long traces wait for their spans, and how much may be buffered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Decide a trace when no span has arrived for this long.
    #[serde(with = "humantime_serde")]
    pub decision_wait: Duration,
    /// Decide a trace this long after its root span arrived (0 = off).
    #[serde(with = "humantime_serde")]
    pub decision_wait_after_root: Duration,
    /// Decide a trace at the latest this long after its first span arrived.
    #[serde(with = "humantime_serde")]
    pub max_trace_age: Duration,
    /// Traces buffered per partition at most.
    pub max_traces: usize,
    /// Span bytes buffered per partition at most.
    pub max_bytes: ByteSize,
    /// Spans of one trace at most; a trace reaching it is decided at once, later spans follow.
    pub max_spans_per_trace: u32,
    /// Bytes of one trace at most; a trace reaching it is decided at once, later spans follow.
    pub max_trace_bytes: ByteSize,
    /// What happens over budget.
    pub on_overflow: OnOverflow,
    /// Decisions remembered for late spans, kept and dropped bounded apart.
    pub decision_cache: DecisionCacheConfig,
    /// Timer resolution: how often due traces are looked for.
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            decision_wait: Duration::from_secs(10),
            decision_wait_after_root: Duration::from_secs(2),
            max_trace_age: Duration::from_secs(300),
            max_traces: 100_000,
            max_bytes: ByteSize(1 << 30),
            max_spans_per_trace: 50_000,
            max_trace_bytes: ByteSize(64 << 20),
            on_overflow: OnOverflow::DecideOldest,
            decision_cache: DecisionCacheConfig::default(),
            tick: Duration::from_millis(100),
        }
    }
}

/// `store.decision_cache:` — per partition, how many decisions are remembered and for how long,
/// so late spans follow their trace's decision. Kept and dropped decisions are bounded apart
/// (the Collector's `sampled_cache_size` / `non_sampled_cache_size`): most traces are dropped,
/// and a flood of drops must not push out the keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionCacheConfig {
    /// Kept decisions remembered at most.
    pub sampled_cache_size: usize,
    /// How long a kept decision is remembered.
    #[serde(with = "humantime_serde")]
    pub sampled_ttl: Duration,
    /// Dropped decisions remembered at most.
    pub non_sampled_cache_size: usize,
    /// How long a dropped decision is remembered.
    #[serde(with = "humantime_serde")]
    pub non_sampled_ttl: Duration,
}

impl Default for DecisionCacheConfig {
    fn default() -> Self {
        DecisionCacheConfig {
            sampled_cache_size: 50_000,
            sampled_ttl: Duration::from_secs(600),
            non_sampled_cache_size: 200_000,
            non_sampled_ttl: Duration::from_secs(600),
        }
    }
}

/// `sinks.kafka:` — the sampled topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSinkConfig {
    /// Write kept traces to `kafka.sampled_topic`.
    pub enabled: bool,
    /// Largest record written; bigger traces are split into several records.
    pub max_record_bytes: ByteSize,
}

impl Default for KafkaSinkConfig {
    fn default() -> Self {
        KafkaSinkConfig {
            enabled: true,
            max_record_bytes: ByteSize(900 << 10),
        }
    }
}

/// `sinks.parquet:` — hot Parquet segments under `archive.hot.url`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParquetSinkConfig {
    /// Write kept spans to hot Parquet segments.
    pub enabled: bool,
}

impl Default for ParquetSinkConfig {
    fn default() -> Self {
        ParquetSinkConfig { enabled: true }
    }
}

/// `sinks:` — where kept traces go. An offset is committed only after every enabled sink acked.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinksConfig {
    /// The sampled Kafka topic.
    pub kafka: KafkaSinkConfig,
    /// Hot Parquet segments.
    pub parquet: ParquetSinkConfig,
}

/// `archive.hot:` — the hot tier, where segments are written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HotTierConfig {
    /// Object store URL: `file:///abs/path` (or a plain absolute path).
    pub url: String,
    /// A partition's open segment is written out at least this often.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// A segment is written out when its buffered spans reach this size.
    pub max_segment_bytes: ByteSize,
    /// Storage price of this tier, for `tracesift cost`.
    pub cost_per_gb_month: f64,
    /// Store options for `s3://` URLs (object_store's S3 keys: `endpoint`, `region`,
    /// `access_key_id`, `secret_access_key`, `allow_http`, …); unset keys come from the standard
    /// `AWS_*` environment.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

impl Default for HotTierConfig {
    fn default() -> Self {
        HotTierConfig {
            url: "file:///var/lib/tracesift/hot".into(),
            flush_interval: Duration::from_secs(10),
            max_segment_bytes: ByteSize(64 << 20),
            cost_per_gb_month: 0.30,
            options: BTreeMap::new(),
        }
    }
}

/// `archive.tiers[]` — a tier after hot: compacted files move here once their hour ended
/// `after` ago.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// Tier name (`[a-z0-9_-]`, not `hot`), used in metrics, manifests and `tracesift cost`.
    pub name: String,
    /// Object store URL: `file:///abs/dir` or `s3://bucket/prefix`.
    pub url: String,
    /// Age (since the end of a file's hour) at which files move into this tier.
    #[serde(with = "humantime_serde")]
    pub after: Duration,
    /// Storage price of this tier, for `tracesift cost`.
    #[serde(default)]
    pub cost_per_gb_month: f64,
    /// Store options, as for `archive.hot.options`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// `archive.compaction:` — how hot segments become large sorted files, and the tier loop.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompactionConfig {
    /// Also run the compaction / tiering / retention loop inside `tracesift run` (a lease in the
    /// hot tier lets one member at a time do it); `tracesift compact` runs one pass regardless.
    pub in_run: bool,
    /// Pause between passes of the loop inside `run`.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// An hour is compacted once it ended this long ago (later segments are merged next pass).
    #[serde(with = "humantime_serde")]
    pub min_age: Duration,
    /// Memory a merge may use: input batches plus the output row group being built.
    pub memory_budget: ByteSize,
    /// Target encoded size of an output row group.
    pub row_group_bytes: ByteSize,
    /// Target size of an output file (a file is closed at the first trace boundary past it).
    pub file_bytes: ByteSize,
    /// Inputs merged at once; more inputs are merged in rounds through intermediate files.
    pub fan_in: usize,
    /// Local directory for intermediate and output files before upload (empty: system temp).
    pub work_dir: String,
    /// How long a compactor's lease lasts without renewal (a crashed compactor's work is taken
    /// over after this).
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Where the lease lives (empty: the hot tier). The store must honour create-if-absent
    /// writes (local and shared filesystems, AWS S3, MinIO); a pass refuses to run on one that
    /// does not (Garage 2.5, for one) and names this setting.
    pub lease_url: String,
    /// Store options of `lease_url` (as `archive.hot.options`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub lease_options: BTreeMap<String, String>,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            in_run: false,
            interval: Duration::from_secs(300),
            min_age: Duration::from_secs(3600),
            memory_budget: ByteSize(512 << 20),
            row_group_bytes: ByteSize(128 << 20),
            file_bytes: ByteSize(1 << 30),
            fan_in: 64,
            work_dir: String::new(),
            lease_ttl: Duration::from_secs(600),
            lease_url: String::new(),
            lease_options: BTreeMap::new(),
        }
    }
}

/// `archive:` — Parquet storage: the hot tier, the tiers after it, retention, compaction.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// The hot tier.
    pub hot: HotTierConfig,
    /// Tiers after hot, in order of increasing `after`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<TierConfig>,
    /// Files whose hour ended longer ago than this are deleted from every tier (absent: kept
    /// forever).
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub retention: Option<Duration>,
    /// Compaction and the tier loop.
    pub compaction: CompactionConfig,
}

impl ArchiveConfig {
    /// Adds every problem of the tiers, retention and compaction settings to `e`.
    fn check(&self, e: &mut Vec<ConfigError>) {
        let store =
            |e: &mut Vec<ConfigError>, path: &str, url: &str, opts: &BTreeMap<String, String>| {
                if let Err(msg) = crate::archive::check_store(url, opts) {
                    e.push(ConfigError::new(path, msg));
                }
            };
        if !self.hot.options.is_empty() {
            store(e, "archive.hot.options", &self.hot.url, &self.hot.options);
        }
        let mut names: Vec<&str> = vec!["hot"];
        let mut last_after = self.compaction.min_age;
        for (i, t) in self.tiers.iter().enumerate() {
            let p = format!("archive.tiers[{i}]");
            let ok = !t.name.is_empty()
                && t.name.len() <= 32
                && t.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !ok {
                e.push(ConfigError::new(
                    format!("{p}.name"),
                    format!("`{}`: 1-32 characters of [a-z0-9_-]", t.name),
                ));
            } else if names.contains(&t.name.as_str()) {
                e.push(ConfigError::new(
                    format!("{p}.name"),
                    format!("`{}` is used twice (`hot` is the hot tier)", t.name),
                ));
            }
            names.push(&t.name);
            if let Err(msg) = crate::archive::check_store(&t.url, &t.options) {
                e.push(ConfigError::new(format!("{p}.url"), msg));
            }
            if t.after <= last_after {
                e.push(ConfigError::new(
                    format!("{p}.after"),
                    format!(
                        "{} must be later than the previous tier's `after` (or compaction.min_age for the first tier): {}",
                        humantime::format_duration(t.after),
                        humantime::format_duration(last_after)
                    ),
                ));
            }
            last_after = last_after.max(t.after);
            if t.cost_per_gb_month.is_nan() || t.cost_per_gb_month < 0.0 {
                e.push(ConfigError::new(
                    format!("{p}.cost_per_gb_month"),
                    "must be 0 or more",
                ));
            }
        }
        if let Some(r) = self.retention {
            if r <= last_after {
                e.push(ConfigError::new(
                    "archive.retention",
                    format!(
                        "{} must be later than the last tier's `after` (or compaction.min_age): {}",
                        humantime::format_duration(r),
                        humantime::format_duration(last_after)
                    ),
                ));
            }
        }
        let c = &self.compaction;
        if c.interval.is_zero() {
            e.push(ConfigError::new(
                "archive.compaction.interval",
                "must be greater than 0",
            ));
        }
        if c.row_group_bytes.0 < 64 << 10 {
            e.push(ConfigError::new(
                "archive.compaction.row_group_bytes",
                "must be at least 64KiB",
            ));
        }
        if c.file_bytes.0 < c.row_group_bytes.0 {
            e.push(ConfigError::new(
                "archive.compaction.file_bytes",
                format!("must be at least row_group_bytes ({})", c.row_group_bytes),
            ));
        }
        if c.memory_budget.0 < c.row_group_bytes.0.saturating_add(16 << 20) {
            e.push(ConfigError::new(
                "archive.compaction.memory_budget",
                format!(
                    "must be at least row_group_bytes ({}) + 16MiB for the input batches",
                    c.row_group_bytes
                ),
            ));
        }
        if c.fan_in < 2 {
            e.push(ConfigError::new(
                "archive.compaction.fan_in",
                "must be at least 2",
            ));
        }
        if c.lease_ttl < Duration::from_secs(10) {
            e.push(ConfigError::new(
                "archive.compaction.lease_ttl",
                "must be at least 10s",
            ));
        }
        if !c.lease_url.is_empty() {
            if let Err(msg) = crate::archive::check_store(&c.lease_url, &c.lease_options) {
                e.push(ConfigError::new("archive.compaction.lease_url", msg));
            }
        }
        if !c.work_dir.is_empty() && !std::path::Path::new(&c.work_dir).is_absolute() {
            e.push(ConfigError::new(
                "archive.compaction.work_dir",
                "must be an absolute path",
            ));
        }
    }
}

/// `telemetry:` — metrics and health.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Address of the `/metrics`, `/healthz` and `/readyz` endpoint; empty = off.
    pub listen: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Kafka.
    pub kafka: KafkaConfig,
    /// Trace store.
    pub store: StoreConfig,
    /// Sampling policies (Collector `tail_sampling` syntax, OR across policies, drop wins).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicySpec>,
    /// Ordered first-match tiers, instead of `policies`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<crate::sample::TierSpec>,
    /// Sinks.
    pub sinks: SinksConfig,
    /// Archive.
    pub archive: ArchiveConfig,
    /// Telemetry.
    pub telemetry: TelemetryConfig,
    /// Graceful shutdown deadline after SIGTERM / SIGINT.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

const SECTIONS: &[&str] = &[
    "kafka",
    "store",
    "policies",
    "tiers",
    "sinks",
    "archive",
    "telemetry",
    "shutdown_timeout",
];

fn section<T: DeserializeOwned + Default>(
    name: &str,
    v: Option<&serde_yaml::Value>,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let Some(v) = v else {
        return Some(T::default());
    };
    if v.is_null() {
        return Some(T::default());
    }
    match serde_path_to_error::deserialize::<_, T>(v.clone()) {
        Ok(t) => Some(t),
        Err(e) => {
            let inner = e.path().to_string();
            let path = if inner == "." || inner.is_empty() {
                name.to_string()
            } else {
                format!("{name}.{inner}")
            };
            errors.push(ConfigError::new(path, e.into_inner().to_string()));
            None
        }
    }
}

impl Config {
    /// Reads a config file and parses it (the only I/O here).
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError::new(
                "",
                format!("cannot read {}: {e}", path.display()),
            )])
        })?;
        Config::parse(&text)
    }

    /// Parses and validates YAML text; reports every problem found.
    pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
        let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
            ConfigErrors(vec![ConfigError::new("", format!("not valid YAML: {e}"))])
        })?;
        let mut errors = Vec::new();
        let empty = serde_yaml::Mapping::new();
        let map = match &value {
            serde_yaml::Value::Mapping(m) => m,
            serde_yaml::Value::Null => &empty,
            _ => {
                return Err(ConfigErrors(vec![ConfigError::new(
                    "",
                    "the configuration must be a YAML mapping",
                )]))
            }
        };
        for key in map.keys() {
            let k = key.as_str().unwrap_or("");
            if !SECTIONS.contains(&k) {
                errors.push(ConfigError::new(
                    k,
                    format!("unknown section; expected one of: {}", SECTIONS.join(", ")),
                ));
            }
        }
        let get = |k: &str| map.get(k);
        let kafka = section::<KafkaConfig>("kafka", get("kafka"), &mut errors);
        let store = section::<StoreConfig>("store", get("store"), &mut errors);
        let sinks = section::<SinksConfig>("sinks", get("sinks"), &mut errors);
        let archive = section::<ArchiveConfig>("archive", get("archive"), &mut errors);
        let telemetry = section::<TelemetryConfig>("telemetry", get("telemetry"), &mut errors);
        let shutdown_timeout = match get("shutdown_timeout") {
            None => Some(Duration::from_secs(30)),
            Some(v) => match v.as_str().map(humantime::parse_duration) {
                Some(Ok(d)) => Some(d),
                _ => {
                    errors.push(ConfigError::new(
                        "shutdown_timeout",
                        "expected a duration such as 30s",
                    ));
                    None
                }
            },
        };
        let policies = match get("policies") {
            None | Some(serde_yaml::Value::Null) => Some(Vec::new()),
            Some(serde_yaml::Value::Sequence(items)) => {
                let before = errors.len();
                let mut parsed: Vec<PolicySpec> = Vec::new();
                let mut compiled_alone = Vec::new();
                for (i, v) in items.iter().enumerate() {
                    let n = errors.len();
                    if let Some(p) =
                        PolicySpec::from_yaml(&format!("policies[{i}]"), v, &mut errors)
                    {
                        if errors.len() == n {
                            compiled_alone.push((i, p.clone()));
                        }
                        parsed.push(p);
                    }
                }
                if errors.len() == before {
                    Some(parsed)
                } else {
                    // Some policies did not parse: still compile the others, each on its own
                    // under its own index, so every problem is reported in one go.
                    for (i, p) in compiled_alone {
                        errors.extend(crate::sample::Sampler::check_policy(
                            &p,
                            &format!("policies[{i}]"),
                        ));
                    }
                    None
                }
            }
            Some(_) => {
                errors.push(ConfigError::new("policies", "expected a list of policies"));
                None
            }
        };
        let tiers = match get("tiers") {
            None | Some(serde_yaml::Value::Null) => Some(Vec::new()),
            Some(serde_yaml::Value::Sequence(items)) => {
                let before = errors.len();
                let parsed: Vec<(usize, crate::sample::TierSpec)> = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| {
                        crate::sample::TierSpec::from_yaml(&format!("tiers[{i}]"), v, &mut errors)
                            .map(|t| (i, t))
                    })
                    .collect();
                if errors.len() == before {
                    Some(parsed.into_iter().map(|(_, t)| t).collect())
                } else {
                    // Compile the tiers that parsed, each under its own index.
                    for (i, t) in parsed {
                        errors.extend(crate::sample::Sampler::check_tier(
                            &t,
                            &format!("tiers[{i}]"),
                        ));
                    }
                    None
                }
            }
            Some(_) => {
                errors.push(ConfigError::new("tiers", "expected a list of tiers"));
                None
            }
        };
        let tiers = tiers.unwrap_or_default();
        match (
            kafka,
            store,
            policies,
            sinks,
            archive,
            telemetry,
            shutdown_timeout,
        ) {
            (
                Some(kafka),
                Some(store),
                Some(policies),
                Some(sinks),
                Some(archive),
                Some(telemetry),
                Some(shutdown_timeout),
            ) if errors.is_empty() => {
                let cfg = Config {
                    kafka,
                    store,
                    policies,
                    tiers,
                    sinks,
                    archive,
                    telemetry,
                    shutdown_timeout,
                };
                cfg.validate()?;
                Ok(cfg)
            }
            (kafka, store, policies, sinks, archive, telemetry, _) => {
                // Still check the sections that did parse, so the user sees everything at once.
                let partial = Config {
                    kafka: kafka.unwrap_or_default(),
                    store: store.unwrap_or_default(),
                    policies: policies.unwrap_or_default(),
                    tiers,
                    sinks: sinks.unwrap_or_default(),
                    archive: archive.unwrap_or_default(),
                    telemetry: telemetry.unwrap_or_default(),
                    shutdown_timeout: Duration::from_secs(30),
                };
                if let Err(ConfigErrors(more)) = partial.validate() {
                    for e in more {
                        let covered = errors.iter().any(|x| {
                            !x.path.is_empty()
                                && (e.path.starts_with(&x.path)
                                    || (e.path == "policies"
                                        && (x.path.starts_with("policies")
                                            || x.path.starts_with("tiers"))))
                        });
                        if !covered {
                            errors.push(e);
                        }
                    }
                }
                Err(ConfigErrors(errors))
            }
        }
    }

    /// Checks cross-field rules without I/O. Reports every problem.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut e = Vec::new();
        let k = &self.kafka;
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
        if self.sinks.kafka.enabled {
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
        for reserved in [
            "group.id",
            "bootstrap.servers",
            "enable.auto.commit",
            "enable.auto.offset.store",
        ] {
            if k.properties.contains_key(reserved) {
                e.push(ConfigError::new(
                    format!("kafka.properties.{reserved}"),
                    "is set by tracesift itself (use kafka.brokers / kafka.group_id)",
                ));
            }
        }
        let s = &self.store;
        if s.decision_wait.is_zero() {
            e.push(ConfigError::new(
                "store.decision_wait",
                "must be greater than 0",
            ));
        }
        if s.max_trace_age < s.decision_wait {
            e.push(ConfigError::new(
                "store.max_trace_age",
                format!(
                    "must be at least store.decision_wait ({})",
                    humantime::format_duration(s.decision_wait)
                ),
            ));
        }
        if s.max_traces == 0 {
            e.push(ConfigError::new("store.max_traces", "must be at least 1"));
        }
        if s.max_bytes.0 < 1 << 20 {
            e.push(ConfigError::new("store.max_bytes", "must be at least 1MiB"));
        }
        if s.max_spans_per_trace == 0 {
            e.push(ConfigError::new(
                "store.max_spans_per_trace",
                "must be at least 1",
            ));
        }
        if s.max_trace_bytes.0 == 0 || s.max_trace_bytes > s.max_bytes {
            e.push(ConfigError::new(
                "store.max_trace_bytes",
                "must be greater than 0 and at most store.max_bytes",
            ));
        }
        if s.tick.is_zero() || s.tick > Duration::from_secs(10) {
            e.push(ConfigError::new(
                "store.tick",
                "must be between 1ms and 10s",
            ));
        }
        let dc = &s.decision_cache;
        for (path, size, ttl) in [
            ("sampled", dc.sampled_cache_size, dc.sampled_ttl),
            ("non_sampled", dc.non_sampled_cache_size, dc.non_sampled_ttl),
        ] {
            if size == 0 {
                e.push(ConfigError::new(
                    format!("store.decision_cache.{path}_cache_size"),
                    "must be at least 1",
                ));
            }
            if ttl < s.decision_wait {
                e.push(ConfigError::new(
                    format!("store.decision_cache.{path}_ttl"),
                    "must be at least store.decision_wait, or late spans outlive their decision",
                ));
            }
        }
        match (self.policies.is_empty(), self.tiers.is_empty()) {
            (true, true) => e.push(ConfigError::new(
                "policies",
                "at least one policy (or a `tiers:` list) is needed, e.g. {name: all, type: always_sample}",
            )),
            (false, false) => e.push(ConfigError::new(
                "tiers",
                "give either `policies:` (OR of Collector policies) or `tiers:` (first match), not both",
            )),
            _ => {}
        }
        let mut seen = std::collections::HashSet::new();
        let names = self
            .policies
            .iter()
            .map(|p| ("policies", p.name.as_str()))
            .chain(self.tiers.iter().map(|t| ("tiers", t.name.as_str())));
        for (i, (section, name)) in names.enumerate() {
            if !seen.insert(name) {
                let i = if section == "tiers" {
                    i - self.policies.len()
                } else {
                    i
                };
                e.push(ConfigError::new(
                    format!("{section}[{i}].name"),
                    format!("name `{name}` is used twice"),
                ));
            }
        }
        if self.tiers.is_empty() || self.policies.is_empty() {
            if let Err(more) = crate::sample::Sampler::from_config(self) {
                e.extend(more);
            }
        }
        let h = &self.archive.hot;
        if self.sinks.parquet.enabled {
            if let Err(msg) = crate::archive::parse_store_url(&h.url) {
                e.push(ConfigError::new("archive.hot.url", msg));
            }
        }
        if h.flush_interval.is_zero() {
            e.push(ConfigError::new(
                "archive.hot.flush_interval",
                "must be greater than 0",
            ));
        }
        if h.max_segment_bytes.0 < 64 << 10 {
            e.push(ConfigError::new(
                "archive.hot.max_segment_bytes",
                "must be at least 64KiB",
            ));
        }
        if h.cost_per_gb_month.is_nan() || h.cost_per_gb_month < 0.0 {
            e.push(ConfigError::new(
                "archive.hot.cost_per_gb_month",
                "must be 0 or more",
            ));
        }
        self.archive.check(&mut e);
        if self.sinks.kafka.max_record_bytes.0 < 1024 {
            e.push(ConfigError::new(
                "sinks.kafka.max_record_bytes",
                "must be at least 1KiB",
            ));
        }
        if !self.telemetry.listen.is_empty() && self.telemetry.listen.parse::<SocketAddr>().is_err()
        {
            e.push(ConfigError::new(
                "telemetry.listen",
                format!(
                    "`{}` is not an address such as 127.0.0.1:9464",
                    self.telemetry.listen
                ),
            ));
        }
        if self.shutdown_timeout.is_zero() {
            e.push(ConfigError::new(
                "shutdown_timeout",
                "must be greater than 0",
            ));
        }
        if e.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(e))
        }
    }

    /// Names of the top-level policies (or tiers), in order: they label decisions.
    pub fn policy_names(&self) -> Vec<String> {
        if self.tiers.is_empty() {
            self.policies.iter().map(|p| p.name.clone()).collect()
        } else {
            self.tiers.iter().map(|t| t.name.clone()).collect()
        }
    }

    /// The effective configuration as YAML (defaults filled in).
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Kafka's topic name rule: 1–249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(t: &str) -> Result<(), String> {
    if t.is_empty() || t.len() > 249 || t == "." || t == ".." {
        return Err(format!(
            "`{t}` is not a valid topic name (1-249 characters)"
        ));
    }
    if let Some(c) = t
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "`{t}` is not a valid topic name (character {c:?}; use a-z A-Z 0-9 . _ -)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"
kafka:
  brokers: 127.0.0.1:9092
  group_id: tracesift
  input_topics: [otlp_spans]
  encoding: otlp_proto
store:
  decision_wait: 10s
  decision_wait_after_root: 2s
  max_trace_age: 5m
  max_traces: 100000
  max_bytes: 1GiB
  on_overflow: decide_oldest
policies:
  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
  - {name: slow, type: latency, latency: {threshold_ms: 500}}
  - name: important
    type: and
    and:
      and_sub_policy:
        - {name: route, type: string_attribute, string_attribute: {key: http.route, values: [/api/payment, /api/checkout]}}
        - {name: half, type: probabilistic, probabilistic: {sampling_percentage: 50}}
  - {name: default, type: probabilistic, probabilistic: {sampling_percentage: 1}}
sinks:
  kafka: {enabled: true}
archive:
  hot: {url: "file:///tmp/tracesift-hot", flush_interval: 10s, cost_per_gb_month: 0.30}
telemetry:
  listen: 127.0.0.1:9464
"#;

    #[test]
    fn the_design_example_parses() {
        let c = Config::parse(SEED).unwrap();
        assert_eq!(c.store.max_bytes, ByteSize(1 << 30));
        assert_eq!(c.store.max_trace_age, Duration::from_secs(300));
        assert_eq!(c.policies.len(), 4);
        // The effective config round-trips.
        let again = Config::parse(&c.to_yaml()).unwrap();
        assert_eq!(again.policies.len(), 4);
        assert_eq!(again.to_yaml(), c.to_yaml());
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let bad = r#"
kafka:
  brokers: ""
  input_topics: ["bad topic"]
  bogus: 1
store:
  decision_wait: 0s
  max_traces: 0
  on_overflow: explode
policies:
  - {name: a, type: latency, latency: {threshold_ms: 500, extra: 1}}
  - {name: b, type: no_such_policy}
  - {name: c, type: ottl_condition, ottl_condition: {}}
telemetry:
  listen: nowhere
extra_section: {}
"#;
        let errs = Config::parse(bad).unwrap_err().0;
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "extra_section",
            "kafka",
            "store.on_overflow",
            "policies[0].latency",
            "policies[1].type",
            "policies[2].type",
            "telemetry.listen",
        ] {
            assert!(
                paths.iter().any(|p| p.starts_with(want)),
                "missing {want} in {errs:#?}"
            );
        }
        let text = ConfigErrors(errs.clone()).to_string();
        assert!(text.contains("not supported"), "{text}");
        assert!(text.contains("always_sample"), "valid names listed: {text}");
    }

    #[test]
    fn semantic_errors_are_all_listed() {
        let bad = r#"
kafka: {brokers: "", input_topics: [], commit_interval: 0s}
store: {decision_wait: 0s, max_traces: 0, max_bytes: 10, tick: 0s}
policies: []
"#;
        let errs = Config::parse(bad).unwrap_err().0;
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "kafka.brokers",
            "kafka.input_topics",
            "kafka.commit_interval",
            "store.decision_wait",
            "store.max_traces",
            "store.max_bytes",
            "store.tick",
            "policies",
        ] {
            assert!(paths.contains(&want), "missing {want} in {paths:?}");
        }
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(ByteSize::parse("1GiB"), Ok(ByteSize(1 << 30)));
        assert_eq!(ByteSize::parse("10MB"), Ok(ByteSize(10_000_000)));
        assert_eq!(ByteSize::parse("512"), Ok(ByteSize(512)));
        assert_eq!(ByteSize::parse("1.5KiB"), Ok(ByteSize(1536)));
        assert!(ByteSize::parse("lots").is_err());
        assert!(ByteSize::parse("5 parsecs").is_err());
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
    }

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("otlp_spans").is_ok());
        assert!(validate_topic_name("a/b").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("").is_err());
    }
}
