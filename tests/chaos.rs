//! Crash, rebalance and broker-restart scenarios through `tracesift run` processes against a real
//! broker (tansu on sqlite storage). Each states its scenario; all assert the same guarantee (see
//! `support/chaos.rs`): every span of every trace that must be kept reaches the sampled topic, no
//! kept trace is partial, no other trace is kept; duplicates are reported. Then the hot Parquet
//! is compacted once and read by DuckDB: it holds every span of every trace that must be kept,
//! nothing else, and no duplicate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use rand::{Rng, SeedableRng};
use support::chaos::{check, check_archive, traffic, write_config, Instance};
use support::*;

/// Waits for the traffic and the committed end, stops the last instance, and checks the sampled
/// topic and the archive (after one compaction); prints the figures.
async fn finish(
    brokers: &str,
    dir: &std::path::Path,
    manifest: &tracesift::gen::Manifest,
    produced: tokio::task::JoinHandle<std::collections::BTreeMap<i32, i64>>,
    last: Instance,
    label: &str,
) {
    let ends = produced.await.unwrap();
    wait_committed(
        brokers,
        "chaos",
        "otlp_spans",
        &ends,
        Duration::from_secs(120),
    )
    .await;
    last.stop();
    let (b, m) = (brokers.to_string(), manifest.clone());
    let o = tokio::task::spawn_blocking(move || check(&b, &m))
        .await
        .unwrap();
    let a = check_archive(dir, manifest).await;
    eprintln!("{label}: {o:?}\n  archive: {a:?}");
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Scenario: the only instance is killed with SIGKILL at random points (seeded) while split
/// traces arrive; a new instance starts each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points() {
    let seed = 42u64;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", 3).await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &brokers);
    let (manifest, produced) = traffic(&brokers, 2500, 700.0, 21);
    let mut current = Instance::start(dir.path(), "i0");
    for n in 1..=3 {
        let at = rng.random_range(1500..4000);
        sleep_ms(at).await;
        eprintln!("kill -9 {} after {at} ms", current.name);
        current.kill_9();
        current = Instance::start(dir.path(), &format!("i{n}"));
    }
    finish(
        &brokers,
        dir.path(),
        &manifest,
        produced,
        current,
        &format!("kill -9 x3 (seed {seed})"),
    )
    .await;
}

/// Scenario: two instances share the group; a third joins, then one is killed with SIGKILL and
/// another leaves gracefully; the last one finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_die_and_leave() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", 4).await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &brokers);
    let (manifest, produced) = traffic(&brokers, 2500, 700.0, 22);
    let a = Instance::start(dir.path(), "a");
    let b = Instance::start(dir.path(), "b");
    sleep_ms(2000).await;
    let c = Instance::start(dir.path(), "c");
    sleep_ms(2500).await;
    a.kill_9();
    sleep_ms(2000).await;
    b.stop();
    finish(
        &brokers,
        dir.path(),
        &manifest,
        produced,
        c,
        "join / kill -9 / leave",
    )
    .await;
}

/// Scenario: the broker is killed and restarted (same port, sqlite storage) mid-run; the
/// pipeline waits, retries and resumes without operator action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_run() {
    let mut broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", 2).await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &brokers);
    let (manifest, produced) = traffic(&brokers, 2000, 600.0, 23);
    let one = Instance::start(dir.path(), "one");
    sleep_ms(2500).await;
    eprintln!("restarting the broker");
    broker.restart();
    finish(
        &brokers,
        dir.path(),
        &manifest,
        produced,
        one,
        "broker restart",
    )
    .await;
}
