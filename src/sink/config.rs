//! `sinks:` — where kept traces go.

use serde::{Deserialize, Serialize};

use crate::settings::{ByteSize, ConfigError};

/// `sinks.kafka:` — the sampled topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSinkConfig {
    /// Write kept traces to `kafka.sampled_topic`.
    pub enabled: bool,
    /// Largest record written; bigger traces are split into several records.
    pub max_record_bytes: ByteSize,
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
            delivery: Delivery::Required,
            best_effort_attempts: 5,
        }
    }
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
}

impl Default for ParquetSinkConfig {
    fn default() -> Self {
        ParquetSinkConfig { enabled: true }
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
    }
}
