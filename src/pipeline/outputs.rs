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

/// What a restore gives a new owner.
#[derive(Debug, Default)]
pub struct RestoredDecisions {
    /// Decisions read back from the log, by trace.
    pub decisions: HashMap<TraceId, Decided>,
    /// The latest span-metrics position the log holds for the partition: every record below
    /// it was counted by an earlier owner.
    pub counted_through: Option<i64>,
}

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
    /// Writes `partition`'s span-metrics position (every record below `offset` counted) to
    /// the decision log, for the next owner; resolves to no offsets once durable.
    fn log_position(&self, partition: i32, offset: i64) -> AckFuture {
        let _ = (partition, offset);
        Box::pin(std::future::ready(Vec::new()))
    }
    /// Reads back the decisions of `topic`/`partition` that can still matter to a new owner
    /// (see [`decision_log::restore`]: by stream time, counted back `max_age` from where the
    /// group resumes; `now_ms` is the wall clock, the latest the restart point may be).
    fn restore(
        &self,
        topic: &Arc<str>,
        partition: i32,
        now_ms: u64,
        max_age: Duration,
    ) -> RestoreFuture;
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

    fn log_position(&self, partition: i32, offset: i64) -> AckFuture {
        decision_log::write_position(
            self.producer.clone(),
            Arc::from(self.config.kafka.decisions_topic.as_str()),
            partition,
            offset,
            self.health.clone(),
            Arc::clone(&self.clock),
        )
    }

    fn restore(
        &self,
        topic: &Arc<str>,
        partition: i32,
        now_ms: u64,
        max_age: Duration,
    ) -> RestoreFuture {
        let (cfg, topic) = (Arc::clone(&self.config), Arc::clone(topic));
        Box::pin(async move {
            let read = tokio::task::spawn_blocking(move || {
                decision_log::restore(&cfg, &topic, partition, now_ms, max_age)
            });
            let r = read
                .await
                .map_err(|e| RestoreError::Task(e.to_string()))
                .and_then(|r| r)?;
            tracing::info!(
                partition,
                restart_ms = r.restart_ms,
                from_offset = r.from_offset,
                records_read = r.records_read,
                decisions = r.decisions.len(),
                counted_through = r.counted_through,
                "decision log read"
            );
            Ok(RestoredDecisions {
                decisions: r.decisions,
                counted_through: r.counted_through,
            })
        })
    }
}
