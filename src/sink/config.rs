//! `sinks:` — where kept traces go.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::settings::{ByteSize, ConfigError, Headers};

/// `sinks.kafka:` — the sampled topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSinkConfig {
    /// Write kept traces to `kafka.sampled_topic`.
    pub enabled: bool,
    /// Largest record written; bigger traces are split into several records.
    pub max_record_bytes: ByteSize,
    /// How kept traces become records. `batched` (default): the traces a partition keeps in
    /// one step (a tick, or a record that forced decisions) are grouped by the sampled topic's
    /// partition their trace id hashes to (with the producer's `partitioner`, on the trace id
    /// hex, as a keyed record would go), one record per partition per step up to
    /// `max_record_bytes`; a record holding one trace is keyed by its trace id, a record holding
    /// several has no key. `per_trace`: one record per kept trace, key = trace id hex, for
    /// consumers that read the key.
    pub records: KafkaRecords,
    /// `required`: a record is committed only once this sink has its kept spans (at-least-once).
    /// `best_effort`: commits do not wait for this sink; a write is tried
    /// `best_effort_attempts` times, then dropped and counted
    /// (`tracesift_sink_dropped_spans_total`), and dropped at once while this sink's
    /// writes already hold the partition's `sinks.max_pending_bytes`.
    pub delivery: Delivery,
    /// Attempts of a best-effort write before it is dropped.
    pub best_effort_attempts: u32,
}

impl Default for KafkaSinkConfig {
    fn default() -> Self {
        KafkaSinkConfig {
            enabled: true,
            max_record_bytes: ByteSize(900 << 10),
            records: KafkaRecords::Batched,
            delivery: Delivery::Required,
            best_effort_attempts: 5,
        }
    }
}

/// How kept traces become records on the sampled topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaRecords {
    /// One record per sampled-topic partition per step.
    Batched,
    /// One record per kept trace, keyed by its trace id.
    PerTrace,
}

/// Whether a sink's acknowledgement holds the commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// The commit waits for this sink: nothing kept is lost.
    Required,
    /// The commit does not wait; after its retry budget a write is dropped and counted.
    BestEffort,
}

/// `sinks.parquet:` — hot Parquet segments under `archive.hot.url`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParquetSinkConfig {
    /// Write kept spans to hot Parquet segments.
    pub enabled: bool,
    /// `required` (default): a record is committed only once its kept spans are in a written
    /// segment. `best_effort`: commits do not wait; a segment's put is tried
    /// `best_effort_attempts` times, then its spans are dropped and counted.
    pub delivery: Delivery,
    /// Put attempts of a best-effort segment before it is dropped.
    pub best_effort_attempts: u32,
}

impl Default for ParquetSinkConfig {
    fn default() -> Self {
        ParquetSinkConfig {
            enabled: true,
            delivery: Delivery::Required,
            best_effort_attempts: 5,
        }
    }
}

/// `sinks:` — where kept traces go. An offset is committed only after every enabled sink acked.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinksConfig {
    /// The sampled Kafka topic.
    pub kafka: KafkaSinkConfig,
    /// Hot Parquet segments.
    pub parquet: ParquetSinkConfig,
    /// OTLP/HTTP exporters (the Collector's `otlphttp`), each with its own name.
    pub otlp_http: Vec<OtlpSinkConfig>,
    /// OTLP/gRPC exporters (the Collector's `otlp`), each with its own name.
    pub otlp_grpc: Vec<OtlpSinkConfig>,
    /// Bytes the pending writes of one partition may hold (encoded chunks, segment rows, dead
    /// letters) before the partition stops reading: while a downstream is slow or down, memory
    /// stops here instead of growing with the outage. At least twice
    /// `archive.hot.max_segment_bytes` with the Parquet sink on.
    pub max_pending_bytes: ByteSize,
}

impl Default for SinksConfig {
    fn default() -> Self {
        SinksConfig {
            kafka: KafkaSinkConfig::default(),
            parquet: ParquetSinkConfig::default(),
            otlp_http: Vec::new(),
            otlp_grpc: Vec::new(),
            max_pending_bytes: ByteSize(128 << 20),
        }
    }
}

impl SinksConfig {
    /// Every problem of this section.
    pub fn check(&self, e: &mut Vec<ConfigError>) {
        if self.kafka.best_effort_attempts == 0 {
            e.push(ConfigError::new(
                "sinks.kafka.best_effort_attempts",
                "must be at least 1",
            ));
        }
        if self.parquet.best_effort_attempts == 0 {
            e.push(ConfigError::new(
                "sinks.parquet.best_effort_attempts",
                "must be at least 1",
            ));
        }
        if self.max_pending_bytes.0 < 1 << 20 {
            e.push(ConfigError::new(
                "sinks.max_pending_bytes",
                "must be at least 1MiB (a single write larger than the budget still goes alone)",
            ));
        }
        if self.kafka.max_record_bytes.0 < 1024 {
            e.push(ConfigError::new(
                "sinks.kafka.max_record_bytes",
                "must be at least 1KiB",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (kind, list) in [
            ("otlp_http", &self.otlp_http),
            ("otlp_grpc", &self.otlp_grpc),
        ] {
            for (i, o) in list.iter().enumerate() {
                let at = format!("sinks.{kind}[{i}]");
                if !names.insert((kind, o.name.as_str())) {
                    e.push(ConfigError::new(
                        format!("{at}.name"),
                        format!("`{}` is used by another {kind} sink; names label metrics and dead letters (`{kind}/NAME`) and must be unique", o.name),
                    ));
                }
                o.check(&at, kind == "otlp_grpc", e);
            }
        }
    }

    /// Every OTLP sink, gRPC ones flagged.
    pub fn otlp(&self) -> impl Iterator<Item = (&OtlpSinkConfig, bool)> {
        self.otlp_http
            .iter()
            .map(|c| (c, false))
            .chain(self.otlp_grpc.iter().map(|c| (c, true)))
    }
}

/// One OTLP exporter (`sinks.otlp_http[]` / `sinks.otlp_grpc[]`), with the Collector's
/// `otlphttp` / `otlp` exporter field names where they map.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpSinkConfig {
    /// Names the sink in metrics (`sink="otlp_http/NAME"`), logs and dead letters.
    pub name: String,
    /// HTTP: a base URL, `/v1/traces` is appended (`https://tempo:4318`). gRPC: `host:port`
    /// (TLS unless `tls.insecure`) or a URL with `http://` / `https://`.
    pub endpoint: String,
    /// HTTP only: the full URL to post to, instead of `endpoint` + `/v1/traces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traces_endpoint: Option<String>,
    /// Headers (gRPC metadata) on every request, e.g. `authorization: "Bearer ${env:TOKEN}"`.
    /// Printed redacted.
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    pub headers: Headers,
    /// `gzip` (default) or `none`.
    #[serde(default)]
    pub compression: OtlpCompression,
    /// Per request.
    #[serde(default = "default_otlp_timeout", with = "crate::settings::duration")]
    pub timeout: Duration,
    /// TLS.
    #[serde(default)]
    pub tls: OtlpTls,
    /// `required` (default: the commit waits for this sink) or `best_effort`.
    #[serde(default = "required")]
    pub delivery: Delivery,
    /// Retries of transient failures.
    #[serde(default)]
    pub retry_on_failure: RetryOnFailure,
    /// Concurrent requests.
    #[serde(default)]
    pub sending_queue: SendingQueue,
    /// Batching.
    #[serde(default)]
    pub batch: BatchConfig,
}

fn default_otlp_timeout() -> Duration {
    Duration::from_secs(10)
}

fn required() -> Delivery {
    Delivery::Required
}

/// Request body compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OtlpCompression {
    /// gzip (the Collector's default).
    #[default]
    Gzip,
    /// Uncompressed.
    None,
}

/// `tls:` of an OTLP sink (the Collector's `configtls` names).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpTls {
    /// gRPC with a bare `host:port` endpoint: plaintext instead of TLS.
    pub insecure: bool,
    /// Trust only this CA bundle (PEM) instead of the system roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM), with `key_file`, for mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate (testing only).
    pub insecure_skip_verify: bool,
}

/// `retry_on_failure:` — backoff of transient failures (exponential with full jitter).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryOnFailure {
    /// First backoff ceiling.
    #[serde(with = "crate::settings::duration")]
    pub initial_interval: Duration,
    /// Largest backoff ceiling (a server's `Retry-After` / RetryInfo is honoured up to 5 min).
    #[serde(with = "crate::settings::duration")]
    pub max_interval: Duration,
    /// Best-effort sinks: a batch still failing after this long is dropped and counted. Required
    /// sinks retry until the write succeeds (their partitions pause meanwhile).
    #[serde(with = "crate::settings::duration")]
    pub max_elapsed_time: Duration,
}

impl Default for RetryOnFailure {
    fn default() -> Self {
        RetryOnFailure {
            initial_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_secs(300),
        }
    }
}

/// `sending_queue:` — how many requests may be in flight at once (all partitions together).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SendingQueue {
    /// Concurrent requests.
    pub num_consumers: usize,
}

impl Default for SendingQueue {
    fn default() -> Self {
        SendingQueue { num_consumers: 4 }
    }
}

/// `batch:` — kept traces are gathered per partition into requests of whole traces.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Smallest target (spans) the adaptive size shrinks to.
    pub min_spans: usize,
    /// Largest target (spans); the Collector's `send_batch_max_size`.
    pub max_spans: usize,
    /// Largest request (encoded, before compression); a trace larger than this goes in several.
    pub max_bytes: ByteSize,
    /// A batch is sent at the latest this long after its first trace.
    #[serde(with = "crate::settings::duration")]
    pub linger: Duration,
    /// Adapt the target between `min_spans` and `max_spans` to the backlog: spans waiting for a
    /// request slot above twice the target double it (fewer, larger requests), below half of it
    /// halve it (less latency). Off: the target is `max_spans`.
    pub adaptive: bool,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            min_spans: 512,
            max_spans: 8192,
            max_bytes: ByteSize(4 << 20),
            linger: Duration::from_millis(200),
            adaptive: true,
        }
    }
}

impl OtlpSinkConfig {
    fn check(&self, at: &str, grpc: bool, e: &mut Vec<ConfigError>) {
        let mut err =
            |field: &str, why: String| e.push(ConfigError::new(format!("{at}.{field}"), why));
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            err("name", "must be letters, digits, `-` or `_`".into());
        }
        if grpc {
            if self.traces_endpoint.is_some() {
                err("traces_endpoint", "is for otlp_http only".into());
            }
        } else if !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://")) {
            err(
                "endpoint",
                "must be a URL starting with http:// or https://".into(),
            );
        }
        if self.endpoint.is_empty() {
            err("endpoint", "must be set".into());
        }
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(_), None) => err(
                "tls.key_file",
                "is needed with tls.cert_file (the client certificate's private key)".into(),
            ),
            (None, Some(_)) => err(
                "tls.cert_file",
                "is needed with tls.key_file (the client certificate)".into(),
            ),
            _ => {}
        }
        for (field, f) in [
            ("tls.ca_file", &self.tls.ca_file),
            ("tls.cert_file", &self.tls.cert_file),
            ("tls.key_file", &self.tls.key_file),
        ] {
            if let Some(f) = f {
                if let Err(x) = std::fs::File::open(f) {
                    err(field, format!("cannot read {}: {x}", f.display()));
                }
            }
        }
        for k in self.headers.keys() {
            if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                err("headers", format!("`{k}` is not a valid header name"));
            }
        }
        if self.timeout.is_zero() {
            err("timeout", "must be more than 0".into());
        }
        if self.sending_queue.num_consumers == 0 {
            err("sending_queue.num_consumers", "must be at least 1".into());
        }
        if self.retry_on_failure.initial_interval.is_zero()
            || self.retry_on_failure.max_interval < self.retry_on_failure.initial_interval
        {
            err(
                "retry_on_failure",
                "initial_interval must be more than 0 and at most max_interval".into(),
            );
        }
        if self.delivery == Delivery::BestEffort && self.retry_on_failure.max_elapsed_time.is_zero()
        {
            err(
                "retry_on_failure.max_elapsed_time",
                "must be more than 0 for a best_effort sink".into(),
            );
        }
        let b = &self.batch;
        if b.min_spans == 0 || b.max_spans < b.min_spans {
            err(
                "batch",
                "min_spans must be at least 1 and at most max_spans".into(),
            );
        }
        if b.max_bytes.0 < 1024 {
            err("batch.max_bytes", "must be at least 1KiB".into());
        }
    }
}
