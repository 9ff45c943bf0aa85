//! Scenario (a): one record per trace, keyed by trace id — the Collector kafkaexporter with
//! `partition_traces_by_id` — with some records as OTLP/JSON and a few malformed ones, through a
//! real tansu broker. Guarantees: see `support/spine.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_end_to_end() {
    support::spine::scenario(false).await;
}
