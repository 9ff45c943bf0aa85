//! The engine matrix (issue "an archive every engine reads"): the archive of an end-to-end run,
//! hot segments plus a compacted warm tier, read by DuckDB, DataFusion, Polars, ClickHouse
//! (chDB) and Spark through the snippets of `schemas/spans-v2.md`, run as written with no
//! engine-specific settings (`engines.py`). Every engine must see every kept span, type
//! `start_time` / `end_time` as timestamps, find a trace by id with its span and parent ids
//! (the id columns' encodings), and give the exact p99 duration
//! per service the input implies.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use super::{parquet_files, python};

/// What the archive must show.
pub struct Expected<'a> {
    /// Kept spans.
    pub rows: usize,
    /// A trace id (32 hex) and its span count.
    pub trace: (&'a str, usize),
    /// That trace's span ids and non-null parent ids, hex, sorted.
    pub tree: (Vec<String>, Vec<String>),
    /// Exact p99 (nearest rank) of `duration_ns` per service over the kept spans.
    pub p99: BTreeMap<String, i64>,
}

/// Nearest-rank percentile (`percentile_disc`): the smallest value whose cumulative share
/// reaches `q`.
pub fn percentile_disc(mut v: Vec<i64>, q: f64) -> i64 {
    v.sort_unstable();
    let rank = ((q * v.len() as f64).ceil() as usize).max(1);
    v[rank - 1]
}

fn copy_tree(from: &Path, to: &Path, pick: &dyn Fn(&Path) -> bool) -> usize {
    let mut n = 0;
    for f in parquet_files(from) {
        if !pick(&f) {
            continue;
        }
        let dest = to.join(f.strip_prefix(from).unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dest).unwrap();
        n += 1;
    }
    n
}

/// Builds the two-tier archive from a run's hot directory and runs the matrix on it.
pub fn matrix(run_hot: &Path, expected: &Expected<'_>) {
    let root = tempfile::tempdir().unwrap();
    let (hot, stage, warm) = (
        root.path().join("hot"),
        root.path().join("stage"),
        root.path().join("warm"),
    );
    // Partition 0's segments go through compaction into the warm tier; the rest stay hot
    // segments, as written by the run.
    let p0 = |f: &Path| {
        f.file_name()
            .unwrap()
            .to_string_lossy()
            .contains("-p00000-")
    };
    let staged = copy_tree(run_hot, &stage, &p0);
    let kept_hot = copy_tree(run_hot, &hot, &|f| !p0(f));
    assert!(
        staged > 0 && kept_hot > 0,
        "the run wrote segments on partition 0 ({staged}) and elsewhere ({kept_hot})"
    );
    let cfg = root.path().join("compact.yaml");
    std::fs::write(
        &cfg,
        format!(
            "policies: [{{name: all, type: always_sample}}]\narchive:\n  hot: {{url: \"file://{}\"}}\n  tiers:\n    - {{name: warm, url: \"file://{}\", after: 1m}}\n  compaction:\n    min_age: 0s\n",
            stage.display(),
            warm.display()
        ),
    )
    .unwrap();
    // An hour later every hour of the run has ended: it is compacted, then moved down.
    let later = chrono::Utc::now() + chrono::Duration::hours(2);
    let out = Command::new(env!("CARGO_BIN_EXE_tracesift"))
        .args(["compact", "-c"])
        .arg(&cfg)
        .args(["--now", &later.to_rfc3339()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "compact: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let compacted = parquet_files(&warm);
    assert!(
        !compacted.is_empty()
            && compacted
                .iter()
                .all(|f| f.file_name().unwrap().to_string_lossy().starts_with("c-")),
        "the warm tier holds compacted files: {compacted:?}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(parquet_files(&stage).is_empty(), "everything moved down");

    let doc = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/spans-v2.md");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/engines.py");
    let out = Command::new(python())
        .arg(script)
        .arg(doc)
        .arg(root.path())
        .arg(expected.trace.0)
        .output()
        .expect("cannot run python");
    assert!(
        out.status.success(),
        "engine matrix failed (every engine must be installed: deploy/local/tools.sh):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    let engines = ["duckdb", "datafusion", "polars", "chdb", "spark"];
    for e in engines {
        let r = &v[e];
        assert_eq!(
            r["rows"].as_u64(),
            Some(expected.rows as u64),
            "{e}: every kept span, once"
        );
        assert_eq!(
            r["timestamps"], true,
            "{e}: start_time / end_time typed as timestamps, got {}",
            r["types"]
        );
        assert_eq!(
            r["trace"].as_u64(),
            Some(expected.trace.1 as u64),
            "{e}: trace {} by id",
            expected.trace.0
        );
        assert_eq!(
            r["tree"],
            serde_json::json!({"spans": expected.tree.0, "parents": expected.tree.1}),
            "{e}: the span and parent ids of trace {}",
            expected.trace.0
        );
        let p99: BTreeMap<String, i64> = r["p99"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_i64().unwrap()))
            .collect();
        assert_eq!(
            p99, expected.p99,
            "{e}: exact p99 of duration_ns by service"
        );
    }
}
