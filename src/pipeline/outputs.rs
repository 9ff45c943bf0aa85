//! What a partition task writes besides its sinks (dead letters, decision-log records) and
//! where its decisions come back from (the restore), behind one trait: [`KafkaOutputs`] in a
//! run, a recording fake in the task's unit tests.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::core::Decided;
use super::decision_log::{self, RestoreError};
use crate::clock::Clock;
use crate::config::Config;
use crate::otlp::TraceId;
use crate::sink::{AckFuture, DeadLetter, Producer};
use crate::telemetry::Health;

/// Decisions read back from the log, by trace.
pub type RestoredDecisions = HashMap<TraceId, Decided>;

/// A restore in progress.
pub type RestoreFuture =
    Pin<Box<dyn Future<Output = Result<RestoredDecisions, RestoreError>> + Send>>;

/// A partition's writes other than its sinks', and its restore.
pub trait Outputs: Send + Sync {
    /// Writes an unreadable record to the dead-letter topic; resolves to its offset.
    fn dead_letter(&self, payload: Bytes, from: DeadLetter) -> AckFuture;
    /// Whether decisions are logged (and restored).
    fn logs_decisions(&self) -> bool;
    /// Writes one record of `partition`'s decisions; resolves to `offsets` once durable.
    fn log_decisions(
        &self,
        partition: i32,
        decisions: &[(TraceId, Decided)],
        offsets: Vec<i64>,
    ) -> AckFuture;
    /// Reads back `partition`'s decisions made after `now_ms - max_age`.
    fn restore(&self, partition: i32, now_ms: u64, max_age: Duration) -> RestoreFuture;
}

/// The outputs of a run: the producer's topics, the decision log read with a consumer.
pub struct KafkaOutputs {
    /// The run's configuration (topics, client settings).
    pub config: Arc<Config>,
    /// The process's producer.
    pub producer: Producer,
    /// Readiness (a refused decision-log write holds it down).
    pub health: Health,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

impl Outputs for KafkaOutputs {
    fn dead_letter(&self, payload: Bytes, from: DeadLetter) -> AckFuture {
        crate::sink::dead_letter(
            self.producer.clone(),
            Arc::from(self.config.kafka.dead_letter_topic.as_str()),
            payload,
            from,
        )
    }

    fn logs_decisions(&self) -> bool {
        self.config.kafka.decision_log
    }

    fn log_decisions(
        &self,
        partition: i32,
        decisions: &[(TraceId, Decided)],
        offsets: Vec<i64>,
    ) -> AckFuture {
        decision_log::write(
            self.producer.clone(),
            Arc::from(self.config.kafka.decisions_topic.as_str()),
            partition,
            decisions,
            offsets,
            self.health.clone(),
            Arc::clone(&self.clock),
        )
    }

    fn restore(&self, partition: i32, now_ms: u64, max_age: Duration) -> RestoreFuture {
        let cfg = Arc::clone(&self.config);
        Box::pin(async move {
            let read = tokio::task::spawn_blocking(move || {
                decision_log::restore(&cfg, partition, now_ms, max_age)
            });
            read.await
                .map_err(|e| RestoreError::Task(e.to_string()))
                .and_then(|r| r)
        })
    }
}
