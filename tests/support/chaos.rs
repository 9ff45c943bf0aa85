//! Chaos scenarios: generated traffic split over records (out of order, interleaved, some late)
//! flows through `tracesift run` processes while they are killed (SIGKILL), added, stopped, or
//! the broker restarts. Afterwards the sampled topic is checked against the generator's ground
//! truth: every trace the policies must keep (errors, slow roots, exactly the probabilistic
//! keeps) is there with every one of its spans, no other trace is, and duplicates (at-least-once
//! after a crash) are counted, not hidden.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use rdkafka::producer::FutureProducer;
use tracesift::gen::{self, GenOptions, Manifest};

use super::spine::{expected_keep, POLICIES};
use super::*;

/// One `tracesift run` process.
pub struct Instance {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Instance {
    /// Starts an instance of the scenario's configuration.
    pub fn start(dir: &Path, name: &str) -> Instance {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_tracesift"))
            .args(["run", "-c"])
            .arg(dir.join("tracesift.yaml"))
            .env("TRACESIFT_LOG", "info,librdkafka=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Instance {
            name: name.into(),
            child,
            log,
        }
    }

    /// SIGKILL: no drain, no commit, no goodbye to the group.
    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "{} exited {status:?}:\n{}",
            self.name,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes the scenario's configuration into `dir` (hot Parquet under `dir/hot`).
pub fn write_config(dir: &Path, brokers: &str) {
    let hot = dir.join("hot");
    std::fs::create_dir_all(&hot).unwrap();
    let hot = hot.display();
    std::fs::write(
        dir.join("tracesift.yaml"),
        format!(
            r#"
kafka:
  brokers: "{brokers}"
  create_topics: true
  group_id: chaos
  commit_interval: 200ms
  properties: {{session.timeout.ms: "6000", heartbeat.interval.ms: "1000"}}
store: {{decision_wait: 3s, decision_wait_after_root: 3s, max_trace_age: 1m, tick: 50ms}}
archive: {{hot: {{url: "file://{hot}", flush_interval: 1s}}}}
telemetry: {{listen: ""}}
shutdown_timeout: 20s
{POLICIES}
"#
        ),
    )
    .unwrap();
}

/// The traffic: `traces` split traces at about `rate` records per second, in the background.
pub fn traffic(
    brokers: &str,
    traces: usize,
    rate: f64,
    seed: u64,
) -> (Manifest, tokio::task::JoinHandle<BTreeMap<i32, i64>>) {
    let (records, manifest) = gen::plan_records(&GenOptions {
        traces,
        seed,
        split: true,
        late_fraction: 0.1,
        late_delay: Duration::from_millis(1500),
        start_ns: super::recent_ns(),
        ..Default::default()
    });
    let producer: FutureProducer = client(brokers)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "120000")
        .create()
        .unwrap();
    let task = tokio::spawn(async move {
        gen::produce(&producer, "otlp_spans", &records, Some(rate))
            .await
            .unwrap()
            .ends
    });
    (manifest, task)
}

/// What one scenario produced, kept, lost and duplicated.
#[derive(Debug, Default)]
pub struct Outcome {
    pub traces: usize,
    pub spans: usize,
    pub must_keep: usize,
    pub kept_traces: usize,
    pub kept_spans: usize,
    pub lost_spans: usize,
    pub duplicate_spans: usize,
}

/// Checks the sampled topic against the ground truth; panics on any loss, partial or extra
/// trace; returns the figures.
pub fn check(brokers: &str, manifest: &Manifest) -> Outcome {
    let sampled = read_all(brokers, "otlp_spans_sampled");
    let mut got: HashMap<[u8; 16], Vec<[u8; 8]>> = HashMap::new();
    for r in &sampled {
        let req = ExportTraceServiceRequest::decode(r.value.as_slice()).unwrap();
        for s in req
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
        {
            got.entry(s.trace_id.as_slice().try_into().unwrap())
                .or_default()
                .push(s.span_id.as_slice().try_into().unwrap());
        }
    }
    let mut o = Outcome {
        traces: manifest.traces.len(),
        spans: manifest.traces.iter().map(|t| t.spans).sum(),
        ..Default::default()
    };
    let mut problems = Vec::new();
    for f in &manifest.traces {
        let want = expected_keep(f);
        o.must_keep += usize::from(want);
        match (want, got.get(&f.trace_id.0)) {
            (false, None) => {}
            (true, None) => {
                o.lost_spans += f.spans;
                problems.push(format!("lost {f:?}"));
            }
            (false, Some(ids)) => {
                problems.push(format!("kept but must not be: {f:?} ({} spans)", ids.len()))
            }
            (true, Some(ids)) => {
                let distinct: HashSet<&[u8; 8]> = ids.iter().collect();
                o.kept_traces += 1;
                o.kept_spans += distinct.len();
                o.duplicate_spans += ids.len() - distinct.len();
                if distinct.len() != f.spans {
                    o.lost_spans += f.spans.saturating_sub(distinct.len());
                    problems.push(format!(
                        "partial: {} of {} spans of {f:?}",
                        distinct.len(),
                        f.spans
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems, first 10:\n{}\n{o:?}",
        problems.len(),
        problems[..problems.len().min(10)].join("\n")
    );
    o
}

/// The archive side: what the hot Parquet holds before and after one compaction, read by DuckDB.
#[derive(Debug, Default)]
pub struct ArchiveOutcome {
    pub rows_before: u64,
    pub duplicates_before: u64,
    pub rows_after: u64,
    pub duplicates_after: u64,
    pub files_before: usize,
    pub files_after: usize,
}

fn archive_rows(hot: &Path) -> (u64, u64, HashMap<String, u64>) {
    let script = format!(
        r#"
import duckdb, json
con = duckdb.connect()
src = "read_parquet('{}/spans/v2/**/*.parquet', hive_partitioning = true)"
rows, distinct = con.execute(f"SELECT count(*), count(DISTINCT (trace_id, span_id, kind)) FROM {{src}}").fetchone()
per = dict(con.execute(f"SELECT lower(hex(trace_id)), count(DISTINCT span_id) FROM {{src}} GROUP BY 1").fetchall())
print(json.dumps({{"rows": rows, "distinct": distinct, "per": per}}))
"#,
        hot.display()
    );
    let v: serde_json::Value = serde_json::from_str(run_python(&script).trim()).unwrap();
    let per = v["per"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
        .collect();
    (
        v["rows"].as_u64().unwrap(),
        v["distinct"].as_u64().unwrap(),
        per,
    )
}

/// Compacts the hot tier once (small memory budget, so hours are split by trace id) and checks
/// that the archive holds every span of every trace that must be kept, nothing else, and no
/// duplicate; returns the figures before and after.
pub async fn check_archive(dir: &Path, manifest: &Manifest) -> ArchiveOutcome {
    let hot = dir.join("hot");
    let (rows_before, distinct_before, _) = archive_rows(&hot);
    let files_before = super::parquet_files(&hot).len();
    let tiers = hot_only_tiers(&hot);
    let report = tracesift::archive::compact::pass(&tiers, &small_compaction())
        .await
        .unwrap();
    assert_eq!(report.rows_in as u64, rows_before, "{report:?}");
    let (rows_after, distinct_after, per) = archive_rows(&hot);
    assert_eq!(rows_after, distinct_after, "no duplicate after compaction");
    assert_eq!(distinct_after, distinct_before, "compaction lost nothing");
    let mut problems = Vec::new();
    for f in &manifest.traces {
        let id = hex::encode(f.trace_id.0);
        match (expected_keep(f), per.get(&id)) {
            (true, Some(n)) if *n as usize == f.spans => {}
            (false, None) => {}
            (want, got) => problems.push(format!(
                "{id}: keep={want}, archive has {got:?} of {} spans",
                f.spans
            )),
        }
    }
    assert!(
        problems.is_empty(),
        "{} archive problems, first 5:\n{}",
        problems.len(),
        problems[..problems.len().min(5)].join("\n")
    );
    // Trace lookup over the multi-file archive returns exactly each trace's spans.
    for f in manifest.traces.iter().filter(|f| expected_keep(f)).take(20) {
        let found = tracesift::archive::lookup::find_trace(&tiers, f.trace_id)
            .await
            .unwrap();
        assert_eq!(
            found.spans.len(),
            f.spans,
            "lookup of {f:?}: {:?}",
            found.stats
        );
        let tree = tracesift::archive::lookup::render_tree(&found.spans);
        assert_eq!(tree.lines().count(), f.spans, "{tree}");
    }
    let missing = manifest.traces.iter().find(|f| !expected_keep(f)).unwrap();
    let none = tracesift::archive::lookup::find_trace(&tiers, missing.trace_id)
        .await
        .unwrap();
    assert!(
        none.spans.is_empty(),
        "a dropped trace is not in the archive"
    );
    ArchiveOutcome {
        rows_before,
        duplicates_before: rows_before - distinct_before,
        rows_after,
        duplicates_after: rows_after - distinct_after,
        files_before,
        files_after: super::parquet_files(&hot).len(),
    }
}

/// The tiers of an archive with only a hot tier at `hot`.
pub fn hot_only_tiers(hot: &Path) -> Vec<tracesift::archive::tiering::Tier> {
    let mut cfg = tracesift::config::ArchiveConfig::default();
    cfg.hot.url = format!("file://{}", hot.display());
    tracesift::archive::tiering::open_tiers(&cfg).unwrap()
}

/// A compaction pass over every hour (no minimum age) with a small memory budget, so merges
/// run in rounds and cut small row groups.
pub fn small_compaction() -> tracesift::archive::compact::CompactOptions {
    let mut opts = tracesift::archive::compact::CompactOptions::from_config(
        &tracesift::config::ArchiveConfig::default(),
    );
    opts.limits.memory_budget = 24 << 20;
    opts.limits.row_group_bytes = 1 << 20;
    opts.limits.file_bytes = 4 << 20;
    opts.min_age = std::time::Duration::ZERO;
    // The traffic is stamped now and filed under the current hour: compact as if it had ended.
    opts.now_ms += 2 * 3_600_000;
    opts
}
