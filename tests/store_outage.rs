//! The hot tier down under steady traffic (`tracesift run` as a process, a real broker):
//!
//! - a Garage (S3) hot tier stopped for 60 s, then started again on the same data;
//! - a full local disk: the hot directory on a small tmpfs filled to the last byte, then freed.
//!
//! Each time the Parquet sink's circuit breaker opens (metric and log) and closes again, the
//! partitions stop reading and are paused, nothing undelivered is committed, `/readyz` names the
//! sink while `/healthz` stays up, the process does not spin (CPU time over the outage window)
//! and stays within the README's memory formula; after recovery every kept trace is in the
//! archive, whole and once, and the offsets reach the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use support::outage::*;
use support::*;

/// What the test does to the hot tier.
trait Outage {
    fn begin(&mut self);
    fn end(&mut self);
}

/// Runs traffic, `outage` for `length`, recovery; asserts the contract. `hot` is the
/// `archive.hot` section; `spans` lists the archived (trace id hex, span id hex) rows.
async fn outage_contract(
    name: &str,
    hot: &str,
    length: Duration,
    outage: &mut dyn Outage,
    spans: &dyn Fn() -> Vec<(String, String)>,
) {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (store, queue, prefetch, pending, segment) =
        (16 * MIB, 4 * MIB, 4 * MIB, 16 * MIB, 2 * MIB);
    let group = format!("store-outage-{name}");
    let member = Member::start(
        dir.path(),
        name,
        &format!(
            r#"
kafka:
  brokers: "{brokers}"
  create_topics: true
  group_id: {group}
  commit_interval: 200ms
  partition_queue_records: 256
  partition_queue_bytes: {queue}
  properties: {{queued.max.messages.kbytes: "{}"}}
store: {{decision_wait: 1s, decision_wait_after_root: 1s, tick: 50ms, max_bytes: {store}, max_trace_bytes: 4MiB}}
policies: [{{name: all, type: always_sample}}]
sinks: {{kafka: {{enabled: false}}, max_pending_bytes: {pending}}}
archive:
  hot:
    flush_interval: 1s
    max_segment_bytes: {segment}
{hot}
telemetry: {{listen: "127.0.0.1:{port}"}}
shutdown_timeout: 20s
"#,
            prefetch / 1024
        ),
        &[],
    );
    let pid = member.child.id();
    let peak = PeakRss::sample(pid);
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(port, "/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "not ready:\n{}", member.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let traffic = Traffic::start(&brokers);
    tokio::time::sleep(Duration::from_secs(5)).await;

    outage.begin();
    let (cpu0, _) = proc_usage(pid);
    let t0 = Instant::now();
    let (mut opened, mut readyz, mut committed_early) = (false, (0, String::new()), None);
    while t0.elapsed() < length {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let m = get(port, "/metrics").await.1;
        opened |= metric(&m, "tracesift_sink_breaker_state{sink=\"parquet\"}") == 2.0;
        let r = get(port, "/readyz").await;
        if r.0 == 503 {
            readyz = r;
        }
        if committed_early.is_none() && t0.elapsed() >= length / 3 {
            let (b, g) = (brokers.clone(), group.clone());
            committed_early = Some(
                tokio::task::spawn_blocking(move || committed(&b, &g, "otlp_spans", &[0, 1]))
                    .await
                    .unwrap(),
            );
        }
    }
    let window = t0.elapsed();
    let (cpu1, _) = proc_usage(pid);
    let m = get(port, "/metrics").await.1;
    let (b, g) = (brokers.clone(), group.clone());
    let committed_late =
        tokio::task::spawn_blocking(move || committed(&b, &g, "otlp_spans", &[0, 1]))
            .await
            .unwrap();
    assert!(opened, "{name}: the breaker opened:\n{}", member.log());
    assert!(
        readyz.1.contains("sink parquet: circuit open"),
        "{name}: readyz {readyz:?}"
    );
    assert_eq!(
        get(port, "/healthz").await.0,
        200,
        "{name}: liveness stays up"
    );
    assert_eq!(
        committed_early.as_ref(),
        Some(&committed_late),
        "{name}: nothing unwritten is committed during the outage"
    );
    assert!(
        metric(&m, "tracesift_partition_pauses_total") >= 1.0,
        "{name}: the partitions were paused"
    );
    let cpu = cpu1 - cpu0;
    assert!(
        cpu < window / 4,
        "{name}: {cpu:?} CPU over a {window:?} outage: something spins"
    );

    outage.end();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (ids, ends) = traffic.stop().await;
    wait_committed(
        &brokers,
        &group,
        "otlp_spans",
        &ends,
        Duration::from_secs(120),
    )
    .await;
    let m = get(port, "/metrics").await.1;
    assert_eq!(
        metric(&m, "tracesift_sink_breaker_state{sink=\"parquet\"}"),
        0.0,
        "{name}: closed again"
    );
    let peak = peak.stop();
    let log = member.log();
    member.stop();
    assert!(
        log.contains("circuit open") && log.contains("circuit closed"),
        "{name}: transitions logged:\n{log}"
    );
    let rows = spans();
    let mut by_trace: HashMap<String, HashSet<String>> = HashMap::new();
    for (t, s) in &rows {
        by_trace.entry(t.clone()).or_default().insert(s.clone());
    }
    let want: HashSet<&String> = ids.iter().collect();
    assert_eq!(
        by_trace.keys().collect::<HashSet<_>>(),
        want,
        "{name}: every kept trace archived"
    );
    assert!(by_trace.values().all(|s| s.len() == 3), "{name}: whole");
    assert_eq!(rows.len(), 3 * ids.len(), "{name}: each span once");
    // The README's formula (see tests/otlp_outage.rs).
    let formula = 160 * MIB + 2 * (2 * store + queue + prefetch + MIB + pending) + 64 * MIB;
    assert!(
        peak <= formula,
        "{name}: peak RSS {} MiB over the formula's {} MiB",
        peak / MIB,
        formula / MIB
    );
    eprintln!(
        "{name}: {cpu:?} CPU over a {window:?} outage, peak RSS {} MiB (formula {} MiB), {} traces",
        peak / MIB,
        formula / MIB,
        ids.len()
    );
}

struct GarageOutage(support::garage::Garage);

impl Outage for GarageOutage {
    fn begin(&mut self) {
        self.0.stop();
    }
    fn end(&mut self) {
        self.0.restart();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garage_hot_tier_down_for_a_minute_pauses_and_loses_nothing() {
    let garage = support::garage::Garage::start("tracesift-hot");
    let hot = format!(
        "    url: s3://{}/hot\n{}",
        garage.bucket,
        garage.tier_options_yaml("    ")
    );
    let read = format!(
        "import pyarrow, pyarrow.fs, pyarrow.parquet as pq\nimport pyarrow.fs as pafs\nfs = {}\nsel = pafs.FileSelector('{}/hot/spans', recursive=True)\nfor f in fs.get_file_info(sel):\n    if f.path.endswith('.parquet'):\n        t = pq.read_table(f.path, filesystem=fs, columns=['trace_id', 'span_id'])\n        for a, b in zip(t.column('trace_id').to_pylist(), t.column('span_id').to_pylist()):\n            print(bytes(a).hex(), bytes(b).hex())",
        garage.pyarrow_fs(),
        garage.bucket
    );
    let spans = move || rows(&run_python(&read));
    let mut outage = GarageOutage(garage);
    outage_contract("garage", &hot, Duration::from_secs(60), &mut outage, &spans).await;
}

/// A 32 MiB tmpfs as the hot directory, filled by a ballast file (unmounted on drop).
struct FullDisk {
    mount: std::path::PathBuf,
}

impl Outage for FullDisk {
    fn begin(&mut self) {
        // Fill it to the last byte: the writes that follow fail with ENOSPC.
        let _ = std::process::Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", self.mount.join("ballast").display()))
            .stderr(std::process::Stdio::null())
            .status();
    }
    fn end(&mut self) {
        std::fs::remove_file(self.mount.join("ballast")).unwrap();
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.mount)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_hot_tier_pauses_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("hot");
    std::fs::create_dir_all(&mount).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=32m", "tmpfs"])
        .arg(&mount)
        .status()
        .unwrap();
    assert!(
        ok.success(),
        "this test mounts a small tmpfs as the full disk and needs root (CAP_SYS_ADMIN)"
    );
    let mut outage = FullDisk {
        mount: mount.clone(),
    };
    let hot = format!("    url: file://{}", mount.display());
    let read = format!(
        "import pyarrow.parquet as pq, glob\nfor f in glob.glob('{}/spans/**/*.parquet', recursive=True):\n    t = pq.read_table(f, columns=['trace_id', 'span_id'])\n    for a, b in zip(t.column('trace_id').to_pylist(), t.column('span_id').to_pylist()):\n        print(bytes(a).hex(), bytes(b).hex())",
        mount.display()
    );
    let spans = move || rows(&run_python(&read));
    outage_contract("disk", &hot, Duration::from_secs(30), &mut outage, &spans).await;
}

fn rows(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect()
}
