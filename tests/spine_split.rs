//! Scenario (b): each trace's spans split over several records, out of order, interleaved with
//! other traces, some arriving 1.5 s after the first, through a real tansu broker. Guarantees:
//! see `support/spine.rs` (no kept trace is partial, no span twice, exact kept set). The
//! policies are given as first-match `tiers`, which must keep exactly the same traces.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_records_end_to_end() {
    support::spine::scenario(true).await;
}
