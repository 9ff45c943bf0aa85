//! Schema v1 → v2 across an upgrade: an archive written by the v1 encoder
//! (`tests/fixtures/archive-v1`, hot segments of two hours) meets v2 segments of the same
//! traces (a replay after the upgrade) and a v1 file that had already moved to the warm tier.
//!
//! Guarantees: lookups, `cost` and the documented DuckDB union view read both versions;
//! compaction files an hour's v1 and v2 files together, writes the hour as v2 only (the v1
//! inputs, in the hot and the warm tier, are deleted once the output is published), and the
//! result holds every span exactly once with exactly the values the v2 encoder writes for it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use support::parquet_files;
use tracesift::archive::manifest::{self, FileEntry, Manifest};
use tracesift::gen::{GenOptions, TraceFacts};

/// 2023-11-14 00:00 UTC, the fixture's day.
const DAY0_S: u64 = 1_699_920_000;
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/archive-v1");

/// The fixture's traces of hour `h` (see its README) and their kept spans.
fn hour(h: u64) -> (Vec<TraceFacts>, Vec<tracesift::archive::KeptSpan>) {
    let (records, manifest) = tracesift::gen::plan_records(&GenOptions {
        traces: 40,
        seed: 7 + h,
        start_ns: (DAY0_S + h * 3600 + 60) * 1_000_000_000,
        ..Default::default()
    });
    let kept = tracesift::gen::kept_spans(&records, &manifest).unwrap();
    (manifest.traces, kept)
}

fn tracesift() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tracesift"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap();
}

async fn put_segments(store: &Arc<dyn ObjectStore>, spans: &[tracesift::archive::KeptSpan]) {
    for f in tracesift::archive::encode_segment(spans, 2_000).unwrap() {
        let path =
            tracesift::archive::hot_segment_path("otlp_spans", 0, 1_000, 2_000, f.hour, f.content);
        assert!(path.as_ref().starts_with("spans/v2/"), "{path}");
        store.put(&path, PutPayload::from(f.bytes)).await.unwrap();
    }
}

/// (rows, distinct (trace, span, kind)) through the union view of `schemas/spans-v2.md`.
fn union_view_counts(root: &Path) -> (u64, u64) {
    let doc = include_str!("../schemas/spans-v2.md");
    let marker = "<!-- tested: duckdb/union -->\n```sql\n";
    let start = doc.find(marker).expect("the union view in spans-v2.md") + marker.len();
    let sql = &doc[start..start + doc[start..].find("```").unwrap()];
    let sql = sql.replace("/var/lib/tracesift/hot", &root.display().to_string());
    let out = support::run_python(&format!(
        "import duckdb\ncon = duckdb.connect()\ncon.execute({sql:?})\nprint(*con.execute('SELECT count(*), count(DISTINCT (trace_id, span_id, kind)) FROM spans').fetchone())\nassert con.execute(\"SELECT typeof(start_time) FROM spans LIMIT 1\").fetchone()[0] == 'TIMESTAMP WITH TIME ZONE'"
    ));
    let mut it = out.split_whitespace().map(|x| x.parse().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_and_v2_files_compact_into_v2_with_nothing_lost_or_duplicated() {
    let dir = tempfile::tempdir().unwrap();
    let (hot_dir, warm_dir, direct_dir) = (
        dir.path().join("hot"),
        dir.path().join("warm"),
        dir.path().join("direct"),
    );
    let (h0_traces, h0) = hour(0);
    let (h1_traces, h1) = hour(1);

    // The v1 archive: both hours' segments hot, except hour 1's second segment, which had
    // already been compacted and moved to the warm tier before the upgrade.
    let mut warm_v1 = None;
    for f in parquet_files(Path::new(FIXTURE)) {
        let rel = f.strip_prefix(FIXTURE).unwrap().to_path_buf();
        assert!(rel.starts_with("spans/v1"), "{rel:?}");
        if rel.to_string_lossy().contains("hour=01") && rel.to_string_lossy().contains("-p00001-") {
            copy(&f, &warm_dir.join(&rel));
            warm_v1 = Some(rel);
        } else {
            copy(&f, &hot_dir.join(&rel));
        }
    }
    let warm_v1: PathBuf = warm_v1.expect("the fixture's hour-1 second segment");
    let warm: Arc<dyn ObjectStore> =
        tracesift::archive::open_store(&format!("file://{}", warm_dir.display())).unwrap();
    let (crc32c, bytes) = tracesift::archive::merge::file_crc32c(&warm_dir.join(&warm_v1)).unwrap();
    let rows = {
        use parquet::file::reader::FileReader;
        parquet::file::reader::SerializedFileReader::new(
            std::fs::File::open(warm_dir.join(&warm_v1)).unwrap(),
        )
        .unwrap()
        .metadata()
        .file_metadata()
        .num_rows() as u64
    };
    let mut m = Manifest {
        version: 1,
        tier: "warm".into(),
        ..Default::default()
    };
    m.files.insert(
        warm_v1.to_string_lossy().to_string(),
        FileEntry {
            hour_start_ms: ((DAY0_S + 3600) * 1000) as i64,
            min_start_ns: 0,
            max_start_ns: i64::MAX,
            min_trace_id: "0".repeat(32),
            max_trace_id: "f".repeat(32),
            rows,
            bytes,
            crc32c,
            ..Default::default()
        },
    );
    // The layout of archives written before catalog generations: the manifest in the tier.
    manifest::save_legacy(&warm, &m).await.unwrap();

    // After the upgrade: a replay writes the second half of hour 0 again, as v2.
    let hot: Arc<dyn ObjectStore> =
        tracesift::archive::open_store(&format!("file://{}", hot_dir.display())).unwrap();
    put_segments(&hot, &h0[h0.len() / 2 - 20..]).await;
    let distinct = (h0.len() + h1.len()) as u64;

    let cfg = dir.path().join("tracesift.yaml");
    std::fs::write(
        &cfg,
        format!(
            "policies: [{{name: all, type: always_sample}}]\narchive:\n  hot: {{url: \"file://{}\"}}\n  tiers:\n    - {{name: warm, url: \"file://{}\", after: 24h}}\n  compaction:\n    min_age: 0s\n",
            hot_dir.display(),
            warm_dir.display()
        ),
    )
    .unwrap();
    let tiers = tracesift::archive::tiering::open_tiers(
        &tracesift::config::Config::load(&cfg).unwrap().archive,
    )
    .unwrap();
    let lookups = |label: &str, tiers: Vec<tracesift::archive::tiering::Tier>| {
        let traces: Vec<TraceFacts> = h0_traces.iter().chain(&h1_traces).cloned().collect();
        let label = label.to_string();
        async move {
            for t in traces.iter().step_by(3) {
                let found = tracesift::archive::lookup::find_trace(&tiers, t.trace_id)
                    .await
                    .unwrap();
                assert_eq!(found.spans.len(), t.spans, "{label}: {t:?}");
            }
        }
    };

    // Before compaction: both versions read (lookups across hot v1 + v2 and warm v1, the
    // union view, cost).
    lookups("v1 + v2", tiers.clone()).await;
    let (rows_before, distinct_before) = union_view_counts(&hot_dir);
    // Hot: all of hour 0, and hour 1's first segment (its first half and five more spans).
    assert_eq!(
        distinct_before,
        (h0.len() + h1.len() / 2 + 5) as u64,
        "the hot part of the archive, through the union view"
    );
    assert!(rows_before > distinct_before, "the replay left duplicates");
    let cost = run_ok(tracesift().args(["cost", "-c"]).arg(&cfg));
    assert!(cost.contains("warm"), "{cost}");

    // Compaction, once every hour ended.
    let now = chrono::DateTime::from_timestamp((DAY0_S + 3 * 3600) as i64, 0).unwrap();
    let out = run_ok(
        tracesift()
            .args(["compact", "-c"])
            .arg(&cfg)
            .args(["--now", &now.to_rfc3339()]),
    );
    assert!(out.contains("compacted 2 hours"), "{out}");
    let left: Vec<PathBuf> = parquet_files(&hot_dir)
        .into_iter()
        .chain(parquet_files(&warm_dir))
        .collect();
    assert!(
        left.iter()
            .all(|f| f.to_string_lossy().contains("/spans/v2/")
                && f.file_name().unwrap().to_string_lossy().starts_with("c-")),
        "only compacted v2 files remain: {left:?}"
    );
    assert!(
        parquet_files(&warm_dir).is_empty(),
        "the warm v1 file was merged and deleted"
    );
    let warm_manifest = tiers[1].manifest().await.unwrap();
    assert!(warm_manifest.files.is_empty(), "{warm_manifest:?}");
    lookups("after compaction", tiers.clone()).await;

    // Exactly once, with exactly the values the v2 encoder writes for these spans.
    let direct: Arc<dyn ObjectStore> =
        tracesift::archive::open_store(&format!("file://{}", direct_dir.display())).unwrap();
    let all: Vec<_> = h0.iter().chain(&h1).cloned().collect();
    put_segments(&direct, &all).await;
    let out = support::run_python(&format!(
        r#"
import pyarrow.parquet as pq, pyarrow.compute as pc, pyarrow as pa, glob
def read(root):
    t = pa.concat_tables([pq.read_table(f) for f in sorted(glob.glob(root + '/spans/v2/**/*.parquet', recursive=True))])
    return t.sort_by([('trace_id', 'ascending'), ('span_id', 'ascending'), ('kind', 'ascending')])
a, b = read({hot:?}), read({direct:?})
assert a.schema.equals(b.schema), (a.schema, b.schema)
diff = [c for c in a.column_names if not a.column(c).equals(b.column(c))]
print(a.num_rows, b.num_rows, ','.join(diff) or '-')
"#,
        hot = hot_dir.display().to_string(),
        direct = direct_dir.display().to_string()
    ));
    let parts: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        parts[0].parse::<u64>().unwrap(),
        distinct,
        "every span once"
    );
    assert_eq!(parts[1].parse::<u64>().unwrap(), distinct);
    assert_eq!(parts[2], "-", "columns that differ from a direct v2 encode");
}
