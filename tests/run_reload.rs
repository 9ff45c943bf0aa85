//! `tracesift run` as deployed, against a real broker: SIGHUP reloads the policy block (traffic
//! after the reload is decided by the new policies), a bad file is rejected with every problem
//! logged while the previous policies keep running, and SIGTERM stops it gracefully (exit 0,
//! offsets committed to the end).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use support::*;
use tracesift::gen::{self, GenOptions, Manifest};

fn write_config(path: &Path, brokers: &str, policies: &str) {
    std::fs::write(
        path,
        format!(
            r#"
kafka: {{brokers: "{brokers}", create_topics: true, group_id: reload, commit_interval: 200ms}}
store: {{decision_wait: 1s, decision_wait_after_root: 500ms, tick: 50ms}}
sinks: {{parquet: {{enabled: false}}}}
telemetry: {{listen: ""}}
shutdown_timeout: 20s
{policies}
"#
        ),
    )
    .unwrap();
}

async fn batch(producer: &FutureProducer, seed: u64, ends: &mut BTreeMap<i32, i64>) -> Manifest {
    paced_batch(producer, seed, 300, None, ends).await
}

async fn paced_batch(
    producer: &FutureProducer,
    seed: u64,
    traces: usize,
    rate: Option<f64>,
    ends: &mut BTreeMap<i32, i64>,
) -> Manifest {
    let (records, manifest) = gen::plan_records(&GenOptions {
        traces,
        seed,
        late_fraction: 0.0,
        start_ns: support::recent_ns(),
        ..Default::default()
    });
    let p = gen::produce(producer, "otlp_spans", &records, rate)
        .await
        .unwrap();
    for (k, v) in p.ends {
        let e = ends.entry(k).or_insert(0);
        *e = (*e).max(v);
    }
    manifest
}

/// Waits until the instance committed everything produced so far.
async fn settle(brokers: &str, ends: &BTreeMap<i32, i64>) {
    wait_committed(
        brokers,
        "reload",
        "otlp_spans",
        ends,
        Duration::from_secs(60),
    )
    .await;
}

/// Waits until `needle` appears `count` times in the log.
async fn wait_log(log: &Path, needle: &str, count: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.matches(needle).count() >= count {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no `{needle}` x{count} in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_policies_and_sigterm_stops_gracefully() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tracesift.yaml");
    write_config(
        &cfg,
        &brokers,
        "policies: [{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}]",
    );
    let log = dir.path().join("tracesift.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracesift"))
        .args(["run", "-c"])
        .arg(&cfg)
        .env("TRACESIFT_LOG", "info,librdkafka=warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let producer: FutureProducer = client(&brokers).set("linger.ms", "5").create().unwrap();
    let mut ends = BTreeMap::new();
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();

    // Phase 1: errors only.
    let a = batch(&producer, 101, &mut ends).await;
    settle(&brokers, &ends).await;

    // Phase 2: reload to keep everything.
    write_config(
        &cfg,
        &brokers,
        "policies: [{name: all, type: always_sample}]",
    );
    signal(pid, "-HUP");
    wait_log(&log, "policies switched", 2).await;
    let b = batch(&producer, 202, &mut ends).await;
    settle(&brokers, &ends).await;

    // Phase 3: a broken file is rejected, every problem logged; `all` keeps running.
    std::fs::write(
        &cfg,
        "kafka: {brokers: nowhere}\npolicies: [{name: x, type: latency, latency: {threshold_ms: 5, bogus: 1}}, {name: y, type: nope}]\n",
    )
    .unwrap();
    signal(pid, "-HUP");
    wait_log(&log, "reload rejected", 1).await;
    let text = logs();
    assert!(text.contains("policies[0].latency.bogus"), "{text}");
    assert!(text.contains("policies[1].type"), "{text}");
    let c = batch(&producer, 303, &mut ends).await;
    settle(&brokers, &ends).await;

    // Phase 4: reload to a dynamic sampler; paced traffic lets it adjust its rates.
    write_config(
        &cfg,
        &brokers,
        "policies: [{name: dyn, type: dynamic, dynamic: {key_fields: [http.route, status_code], goal_sample_rate: 5, adjustment_interval: 500ms}}]",
    );
    signal(pid, "-HUP");
    wait_log(&log, "policies switched", 4).await;
    let d = paced_batch(&producer, 404, 800, Some(250.0), &mut ends).await;
    settle(&brokers, &ends).await;

    // SIGTERM: graceful stop, exit 0, offsets at the end.
    signal(pid, "-TERM");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit {status:?}:\n{}", logs());
    let b2 = brokers.clone();
    let parts: Vec<i32> = ends.keys().copied().collect();
    let comm = tokio::task::spawn_blocking(move || committed(&b2, "reload", "otlp_spans", &parts))
        .await
        .unwrap();
    for (p, e) in &ends {
        assert_eq!(comm.get(p), Some(e), "partition {p} after SIGTERM");
    }

    // What was kept, and by which policy.
    let b3 = brokers.clone();
    let sampled = tokio::task::spawn_blocking(move || sampled_by_trace(&b3))
        .await
        .unwrap();
    let by_trace: HashMap<[u8; 16], String> = sampled
        .iter()
        .map(|(t, spans)| (*t, spans[0].policy.clone().expect("no policy attribute")))
        .collect();
    let weights: HashMap<[u8; 16], f64> = sampled
        .iter()
        .filter_map(|(t, spans)| spans[0].adjusted_count.map(|w| (*t, w)))
        .collect();
    let ids = |m: &Manifest, f: &dyn Fn(&gen::TraceFacts) -> bool| -> HashSet<[u8; 16]> {
        m.traces
            .iter()
            .filter(|t| f(t))
            .map(|t| t.trace_id.0)
            .collect()
    };
    let kept_in = |set: &HashSet<[u8; 16]>| -> HashSet<[u8; 16]> {
        set.iter()
            .filter(|t| by_trace.contains_key(*t))
            .copied()
            .collect()
    };
    let a_all = ids(&a, &|_| true);
    let a_err = ids(&a, &|t| t.has_error);
    assert!(!a_err.is_empty());
    assert_eq!(kept_in(&a_all), a_err, "before the reload: errors only");
    assert!(a_err.iter().all(|t| by_trace[t] == "errors"));
    for (name, m) in [("after the reload", &b), ("after the rejected reload", &c)] {
        let all = ids(m, &|_| true);
        assert_eq!(kept_in(&all), all, "{name}: everything");
        assert!(all.iter().all(|t| by_trace[t] == "all"), "{name}");
    }
    // The dynamic sampler ran in the pipeline: it kept some of batch d, not all, with known
    // probabilities (adjusted counts above 1 once rates were set).
    let d_all = ids(&d, &|_| true);
    let d_kept = kept_in(&d_all);
    assert!(
        !d_kept.is_empty() && d_kept.len() < d_all.len(),
        "dynamic kept {} of {}",
        d_kept.len(),
        d_all.len()
    );
    assert!(d_kept.iter().all(|t| by_trace[t] == "dyn"));
    assert!(
        d_kept
            .iter()
            .any(|t| weights.get(t).is_some_and(|w| *w > 1.0)),
        "some keeps at a rate above 1"
    );
}
