//! tracesift: Kafka-native tail sampling and a tiered Parquet archive for OpenTelemetry traces.
//!
//! Data flow for one owned partition (see `README.md` for the codemap): `source` (consumer
//! group, partition lifecycle, hand-over queue, offset watermark) → [`pipeline`] (a
//! [`pipeline::PartitionCore`] per partition: [`otlp`] lazy span index → [`store`] trace store
//! → [`sample`] policy engine, waits in stream time) → `sink` (sampled topic, decision log, dead
//! letters, hot Parquet via [`archive`]). [`config`] composes every stage's section,
//! [`telemetry`] declares every metric, [`clock`] is the only place time is read, [`gen`] the
//! load generator, [`cli`] the commands.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod archive;
pub mod cli;
pub mod clock;
pub mod config;
pub(crate) mod failpoint;
pub mod gen;
pub(crate) mod hash;
pub mod kafka;
pub mod otlp;
pub mod pipeline;
pub mod sample;
pub(crate) mod settings;
pub(crate) mod sink;
pub(crate) mod source;
pub mod store;
pub mod telemetry;
pub mod topics;
