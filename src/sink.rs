//! Hot sinks behind one trait: the sampled Kafka topic, hot Parquet segments and OTLP exporters
//! (plus the dead-letter writer, which uses the same producer and ack path).
//!
//! Sinks are made in one place ([`build`]). A sink owns no channel or task of its own: it is given
//! each kept trace and pushes one future per durable write into the partition's [`Acks`]
//! (best-effort delivery is the [`BestEffort`] wrapper, which runs those futures detached, in a
//! set it owns). A future resolves to the record offsets
//! it covers once the write is acknowledged (delivery report, object-store put); the partition task
//! then releases one watermark reference per offset. Writes are retried with capped exponential
//! backoff until they succeed or the partition is revoked / shut down, in which case the offsets
//! stay uncommitted and the records are replayed: at-least-once, never a silent loss. Each sink
//! reaches its circuit breaker through what it writes with (the producer, the hot tier, the
//! exporter) and reports it as [`Sink::healthy`].

pub mod acks;
pub mod batch;
pub mod best_effort;
pub mod breaker;
pub mod build;
pub mod config;
pub mod dead_letter;
pub mod kafka;
pub mod kept;
pub mod otlp;
pub mod parquet;
pub mod producer;

use std::time::Duration;

use crate::clock::MonoTime;

pub use self::acks::{AckFuture, Acks, Released, Write};
pub use self::best_effort::BestEffort;
pub use self::build::{build, BuildError, MakeSinks, Wiring};
pub use self::dead_letter::{dead_letter, DeadLetter};
pub use self::kafka::{produce_until_acked, KafkaSink, KeyHash, Outgoing};
pub use self::kept::KeptTrace;
pub use self::otlp::{OtlpExporter, OtlpSink};
pub use self::parquet::ParquetSink;
pub use self::producer::Producer;

/// A hot sink.
pub trait Sink: Send {
    /// Takes a kept trace; pushes the futures that complete when it is durable.
    fn accept(&mut self, trace: &KeptTrace, acks: &mut Acks);
    /// Called on every tick (time-based flushing).
    fn tick(&mut self, _now: MonoTime, _acks: &mut Acks) {}
    /// Writes out anything buffered (before revoke or shutdown).
    fn flush(&mut self, _acks: &mut Acks) {}
    /// Waits for (or cancels) writes the sink runs on its own, at drain; a sink whose writes
    /// are all in [`Acks`] has none.
    fn close(&mut self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }
    /// The sink's metric label.
    fn label(&self) -> crate::telemetry::SinkLabel;
    /// Whether the commit waits for this sink (`required` delivery).
    fn required(&self) -> bool;
    /// False while the sink's circuit breaker is open or probing (its writes keep failing).
    fn healthy(&self) -> bool;
}

const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The ceiling of the `attempt`-th retry's wait: 50 ms doubling to 5 s.
pub(crate) fn backoff_cap(attempt: u32) -> Duration {
    BACKOFF_START
        .saturating_mul(1u32 << attempt.min(10))
        .min(BACKOFF_MAX)
}

/// The wait before the `attempt`-th retry: "full jitter", uniform in [0, cap], so that writers
/// that failed together (every partition behind one broker) do not retry together.
pub(crate) fn backoff(attempt: u32) -> Duration {
    jitter(backoff_cap(attempt))
}

/// Uniform in [0, `cap`].
pub(crate) fn jitter(cap: Duration) -> Duration {
    let ms = cap.as_millis() as u64;
    Duration::from_millis(rand::random_range(0..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        assert_eq!(backoff_cap(0), Duration::from_millis(50));
        assert_eq!(backoff_cap(3), Duration::from_millis(400));
        assert_eq!(backoff_cap(30), BACKOFF_MAX);
        let waits: Vec<Duration> = (0..200).map(|_| backoff(6)).collect();
        assert!(waits.iter().all(|w| *w <= backoff_cap(6)));
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(
            distinct.len() > 20,
            "spread out: {} distinct of 200",
            distinct.len()
        );
    }
}
