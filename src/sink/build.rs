//! The one place sinks are made and labelled.
//!
//! [`build`] makes the process-wide part of every configured sink once (the hot tier's store
//! and breaker, each OTLP exporter with its client and breaker; the sampled topic's breaker is
//! the producer's); [`SinkSet::for_partition`] makes a partition's sinks from them, each
//! wrapped in [`BestEffort`] when its delivery is `best_effort`. [`SinkSet::labels`] names the
//! same sinks, in the same order, for the metrics.

use std::sync::Arc;

use super::breaker::Breaker;
use super::config::{Delivery, KafkaRecords, SinksConfig};
use super::parquet::HotTier;
use super::{BestEffort, KafkaSink, KeyHash, OtlpExporter, OtlpSink, ParquetSink, Producer, Sink};
use crate::archive::config::HotTierConfig;
use crate::clock::Clock;
use crate::telemetry::SinkLabel;

/// A sink that could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The hot tier's store could not be opened.
    #[error(transparent)]
    HotTier(#[from] crate::archive::ArchiveError),
    /// An OTLP exporter could not be made (its TLS files, its endpoint).
    #[error("sink {0}")]
    Otlp(String),
}

/// What the sinks are made from: their configuration and where their records go.
pub struct Wiring {
    /// `sinks:`.
    pub sinks: SinksConfig,
    /// `archive.hot` (the Parquet sink's store and segment limits).
    pub hot: HotTierConfig,
    /// The sampled topic.
    pub sampled_topic: Arc<str>,
    /// The dead-letter topic (records sinks refuse for good).
    pub dead_letter_topic: Arc<str>,
    /// The producer's `partitioner` setting (batched records go where keyed ones would).
    pub partitioner: Option<String>,
    /// Partitions of the sampled topic at start (batched records are placed among them).
    pub sampled_partitions: i32,
}

/// The configured sinks' process-wide parts.
pub struct SinkSet {
    wiring: Wiring,
    producer: Producer,
    hot: Option<HotTier>,
    otlp: Vec<Arc<OtlpExporter>>,
    clock: Arc<dyn Clock>,
}

/// Makes the configured sinks' process-wide parts: the hot tier's store, the OTLP exporters.
pub fn build(
    wiring: Wiring,
    producer: Producer,
    clock: Arc<dyn Clock>,
) -> Result<SinkSet, BuildError> {
    let hot = match wiring.sinks.parquet.enabled {
        false => None,
        true => Some(HotTier {
            store: crate::archive::open_sink_store(&wiring.hot.url, &wiring.hot.options)?,
            breaker: Arc::new(Breaker::new(SinkLabel::Parquet, Arc::clone(&clock))),
            encode_slots: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2),
            )),
        }),
    };
    let otlp = wiring
        .sinks
        .otlp()
        .map(|(c, grpc)| {
            OtlpExporter::new(
                c,
                grpc,
                producer.clone(),
                Arc::clone(&wiring.dead_letter_topic),
                Arc::clone(&clock),
            )
            .map(Arc::new)
            .map_err(BuildError::Otlp)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SinkSet {
        wiring,
        producer,
        hot,
        otlp,
        clock,
    })
}

/// Makes a partition's sinks (a [`SinkSet`] in a run; fakes in the partition task's tests).
pub trait MakeSinks: Send + Sync {
    /// The sinks of one partition.
    fn for_partition(&self, topic: &Arc<str>, partition: i32) -> Vec<Box<dyn Sink>>;
}

impl MakeSinks for SinkSet {
    fn for_partition(&self, topic: &Arc<str>, partition: i32) -> Vec<Box<dyn Sink>> {
        SinkSet::for_partition(self, topic, partition)
    }
}

impl SinkSet {
    /// The sinks' labels, in the order [`SinkSet::for_partition`] makes them.
    pub fn labels(&self) -> Vec<SinkLabel> {
        let mut out = Vec::new();
        if self.wiring.sinks.kafka.enabled {
            out.push(SinkLabel::Kafka);
        }
        if self.hot.is_some() {
            out.push(SinkLabel::Parquet);
        }
        out.extend(self.otlp.iter().map(|e| e.label()));
        out
    }

    /// The sinks of one partition.
    pub fn for_partition(&self, topic: &Arc<str>, partition: i32) -> Vec<Box<dyn Sink>> {
        let w = &self.wiring;
        let budget = w.sinks.max_pending_bytes.0;
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        if w.sinks.kafka.enabled {
            let k = &w.sinks.kafka;
            let kafka = KafkaSink::new(
                self.producer.clone(),
                Arc::clone(&w.sampled_topic),
                Arc::clone(&w.dead_letter_topic),
                usize::try_from(k.max_record_bytes.0).unwrap_or(usize::MAX),
                Arc::clone(&self.clock),
            );
            let kafka = match k.records {
                KafkaRecords::PerTrace => kafka,
                KafkaRecords::Batched => kafka.batched(
                    w.sampled_partitions,
                    KeyHash::of_setting(w.partitioner.as_deref()),
                ),
            };
            sinks.push(match k.delivery {
                Delivery::Required => Box::new(kafka),
                Delivery::BestEffort => Box::new(BestEffort::new(
                    kafka.attempts(k.best_effort_attempts),
                    budget,
                )),
            });
        }
        if let Some(hot) = &self.hot {
            let p = &w.sinks.parquet;
            let parquet = ParquetSink::new(
                hot,
                Arc::clone(topic),
                partition,
                w.hot.flush_interval,
                w.hot.max_segment_bytes.0,
                Arc::clone(&self.clock),
            );
            sinks.push(match p.delivery {
                Delivery::Required => Box::new(parquet),
                Delivery::BestEffort => Box::new(BestEffort::new(
                    parquet.attempts(p.best_effort_attempts),
                    budget,
                )),
            });
        }
        for ex in &self.otlp {
            let otlp = OtlpSink::new(Arc::clone(ex));
            sinks.push(match ex.delivery() {
                Delivery::Required => Box::new(otlp),
                Delivery::BestEffort => Box::new(BestEffort::new(otlp, budget)),
            });
        }
        sinks
    }
}
