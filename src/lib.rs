//! tracesift: Kafka-native tail sampling and a tiered Parquet archive for OpenTelemetry traces.
//!
//! Data flow for one owned partition (see `README.md` for the codemap):
//! [`source`] (consumer group, partition lifecycle, offset watermark) → [`otlp`] (lazy span index
//! over the record bytes) → [`store`] (per-partition TTL trace store, budgets, decision cache) →
//! [`sample`] (policy engine) → [`sink`] (sampled topic, hot Parquet via [`archive`]); wired by
//! [`pipeline`]. [`config`] is the typed configuration, [`telemetry`] every metric, [`clock`] the
//! only place time is read, [`gen`] the load generator, [`bench`] the end-to-end throughput run, [`cli`] the commands.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod archive;
pub mod cli;
pub mod clock;
pub mod config;
pub mod gen;
pub(crate) mod hash;
pub mod otlp;
pub mod pipeline;
pub mod sample;
pub(crate) mod settings;
pub(crate) mod sink;
pub(crate) mod source;
pub mod store;
pub mod telemetry;
pub(crate) mod topics;
