//! `tracesift dry-run -c FILE`: the configured policies on a bounded sample of the input topics,
//! through the service's own partition logic ([`crate::pipeline::dry_run`]), writing nothing.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::clock::Clock;
use crate::config::Config;
use crate::pipeline::dry_run::{DryRun, Report};

/// How much to read.
#[derive(Debug, Clone)]
pub struct DryRunOptions {
    /// Records to read at most (over all partitions).
    pub max_records: usize,
    /// Read for at most this long.
    pub max_duration: Duration,
    /// Stop when no record arrived for this long (the sample reached the end).
    pub idle: Duration,
}

/// Reads a bounded sample of the configured input topics and reports what the policies do.
pub fn sample_topics(
    cfg: &Config,
    opts: &DryRunOptions,
    clock: &dyn Clock,
) -> anyhow::Result<Report> {
    let mut cc = crate::kafka::consumer_config(&cfg.kafka);
    cc.set(
        "group.id",
        format!("{}-dry-run-{}", cfg.kafka.group_id, std::process::id()),
    );
    let consumer: BaseConsumer = crate::kafka::create(&cc).context("cannot create the consumer")?;
    let mut tpl = TopicPartitionList::new();
    for t in &cfg.kafka.input_topics {
        let md = consumer
            .fetch_metadata(Some(t), Duration::from_secs(10))
            .with_context(|| format!("cannot read metadata of {t}"))?;
        let parts = md
            .topics()
            .first()
            .map(|m| m.partitions().len())
            .unwrap_or(0);
        anyhow::ensure!(parts > 0, "input topic `{t}` does not exist");
        for p in 0..parts {
            tpl.add_partition_offset(t, p as i32, Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let mut dry = DryRun::new(cfg)?;
    let start = clock.now();
    let mut last = start;
    let mut n = 0usize;
    while n < opts.max_records
        && clock.now() - start < opts.max_duration
        && clock.now() - last < opts.idle
    {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last = clock.now();
                n += 1;
                let Some(payload) = m.payload() else { continue };
                let ts = m.timestamp().to_millis().unwrap_or(0).max(0) as u64;
                let enc = crate::source::record_encoding(&m, cfg.kafka.encoding);
                dry.record(
                    m.topic(),
                    m.partition(),
                    ts,
                    clock.wall_nanos() / 1_000_000,
                    &Bytes::copy_from_slice(payload),
                    enc,
                );
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            None => {}
        }
    }
    Ok(dry.finish())
}

/// Reads the sample and prints the report.
pub fn main(
    config: &Path,
    max_records: usize,
    max_duration: Duration,
    idle: Duration,
) -> anyhow::Result<ExitCode> {
    let Some(cfg) = super::load(config) else {
        return Ok(ExitCode::from(2));
    };
    let opts = DryRunOptions {
        max_records,
        max_duration,
        idle,
    };
    let report = sample_topics(&cfg, &opts, &crate::clock::SystemClock::new())?;
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}
