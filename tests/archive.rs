//! The archive: compaction (k-way merge, dedupe, sort, bloom filter and page index, bounded
//! memory), tiers on local directories and a real S3 server (Garage) with moves, crashes
//! between copy and delete, retention, the lease, lookups across tiers (tree and OTLP/JSON),
//! `tracesift cost`, and DuckDB / pyarrow reading the result.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use std::process::Command;
use std::sync::Arc;
use support::parquet_files;

use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tracesift::gen::{GenOptions, TraceFacts};

/// 2023-11-14 00:00 UTC.
const DAY0_S: u64 = 1_699_920_000;

fn hour_ns(h: u64) -> u64 {
    (DAY0_S + h * 3600) * 1_000_000_000
}

/// RFC 3339 of `h` hours (plus `m` minutes) after day 0.
fn at(h: u64, m: u64) -> String {
    chrono::DateTime::from_timestamp((DAY0_S + h * 3600 + m * 60) as i64, 0)
        .unwrap()
        .to_rfc3339()
}

/// What was written for one hour: its traces and the distinct (trace, span) count.
struct HourInput {
    traces: Vec<TraceFacts>,
    spans: usize,
}

/// Writes `traces` generated traces starting at hour `h` into the hot tier as `segments`
/// overlapping segments (each span lands in one or two segments: replays / at-least-once).
async fn write_hour(
    store: &Arc<dyn ObjectStore>,
    h: u64,
    traces: usize,
    segments: usize,
    seed: u64,
) -> HourInput {
    let (records, manifest) = tracesift::gen::plan_records(&GenOptions {
        traces,
        seed,
        start_ns: hour_ns(h) + 60_000_000_000,
        ..Default::default()
    });
    let kept = tracesift::gen::kept_spans(&records, &manifest).unwrap();
    let step = kept.len() / segments;
    for s in 0..segments {
        // Every segment overlaps the next by a fifth of a step.
        let from = s * step;
        let to = if s + 1 == segments {
            kept.len()
        } else {
            (from + step + step / 5).min(kept.len())
        };
        for f in tracesift::archive::encode_segment(&kept[from..to], 2_000).unwrap() {
            let path = tracesift::archive::hot_segment_path(
                "otlp_spans",
                s as i32,
                from as i64,
                to as i64,
                f.hour,
                f.content,
            );
            store.put(&path, PutPayload::from(f.bytes)).await.unwrap();
        }
    }
    HourInput {
        spans: manifest.traces.iter().map(|t| t.spans).sum(),
        traces: manifest.traces,
    }
}

fn tracesift() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tracesift"))
}

/// One `tracesift compact` pass at the given time (RFC 3339); its stdout.
fn compact_at(cfg: &Path, now: &str) -> String {
    run_ok(
        tracesift()
            .args(["compact", "-c"])
            .arg(cfg)
            .args(["--now", now]),
    )
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({:?}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// (rows, distinct (trace id, span id, kind)) over local tiers and, if given, a Garage prefix,
/// read by pyarrow (local globs through DuckDB as well, which must agree).
fn count_rows(local: &[&Path], s3: Option<(&support::garage::Garage, &str)>) -> (u64, u64) {
    let mut script = String::from(
        "import duckdb, pyarrow, pyarrow.fs, pyarrow.dataset as ds, pyarrow.compute as pc\ntables = []\n",
    );
    for d in local {
        if parquet_files(d).is_empty() {
            continue;
        }
        script.push_str(&format!(
            "tables.append(ds.dataset('{}/spans/v2', format='parquet', partitioning='hive').to_table(columns=['trace_id','span_id','kind']))\n",
            d.display()
        ));
        script.push_str(&format!(
            "con = duckdb.connect()\nn = con.execute(\"SELECT count(*) FROM read_parquet('{}/spans/v2/**/*.parquet', hive_partitioning = true)\").fetchone()[0]\nassert n == tables[-1].num_rows, (n, tables[-1].num_rows)\n",
            d.display()
        ));
    }
    if let Some((g, prefix)) = s3 {
        script.push_str(&format!(
            "fs = {}\nsel = pyarrow.fs.FileSelector('{}/{}/spans/v2', recursive=True, allow_not_found=True)\nfiles = [f.path for f in fs.get_file_info(sel) if f.path.endswith('.parquet')]\nif files:\n    tables.append(ds.dataset(files, format='parquet', filesystem=fs).to_table(columns=['trace_id','span_id','kind']))\n",
            g.pyarrow_fs(),
            g.bucket,
            prefix
        ));
    }
    script.push_str(
        "rows = sum(t.num_rows for t in tables)\nkeys = set()\nfor t in tables:\n    for a, b, c in zip(t.column('trace_id').to_pylist(), t.column('span_id').to_pylist(), t.column('kind').to_pylist()):\n        keys.add((a, b, c))\nprint(rows, len(keys))\n",
    );
    let out = support::run_python(&script);
    let mut it = out.split_whitespace().map(|x| x.parse::<u64>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

fn write_config(dir: &Path, extra_tiers: &str, compaction: &str) -> PathBuf {
    let cfg = dir.join("tracesift.yaml");
    std::fs::write(
        &cfg,
        format!(
            "policies: [{{name: all, type: always_sample}}]\narchive:\n  hot: {{url: \"file://{}/hot\", cost_per_gb_month: 0.30}}\n{extra_tiers}  compaction:\n{compaction}",
            dir.display()
        ),
    )
    .unwrap();
    run_ok(tracesift().args(["check", "-c"]).arg(&cfg));
    cfg
}

const SMALL: &str = "    min_age: 30m\n    memory_budget: 24MiB\n    row_group_bytes: 128KiB\n    file_bytes: 384KiB\n    fan_in: 3\n";

/// Reads a tier's manifest (its newest generation) from a catalog store on a local directory.
fn manifest_of(catalog: &Path, tier: &str) -> tracesift::archive::manifest::Manifest {
    let dir = catalog
        .join(tracesift::archive::manifest::CATALOG_DIR)
        .join(tier);
    let newest = std::fs::read_dir(&dir).ok().and_then(|d| {
        d.filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .max()
    });
    match newest {
        Some(p) => serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap(),
        None => Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_overlapping_segments_into_sorted_deduplicated_files() {
    let dir = tempfile::tempdir().unwrap();
    let hot_dir = dir.path().join("hot");
    let hot: Arc<dyn ObjectStore> =
        tracesift::archive::open_store(&format!("file://{}", hot_dir.display())).unwrap();
    let h0 = write_hour(&hot, 0, 3_000, 7, 11).await;
    let h1 = write_hour(&hot, 1, 2_000, 5, 12).await;
    let (rows_before, distinct_before) = count_rows(&[&hot_dir], None);
    assert_eq!(distinct_before as usize, h0.spans + h1.spans);
    assert!(rows_before > distinct_before, "the input holds duplicates");
    let cfg = write_config(dir.path(), "", SMALL);

    // An hour still inside min_age is left alone.
    let out = compact_at(&cfg, &at(2, 0));
    assert!(out.contains("compacted 1 hours"), "{out}");
    let out = compact_at(&cfg, &at(3, 0));
    assert!(out.contains("compacted 1 hours"), "{out}");

    let files = parquet_files(&hot_dir);
    let manifest = manifest_of(&hot_dir, "hot");
    assert_eq!(
        files.len(),
        manifest.files.len(),
        "only compacted, catalogued files remain: {files:?}"
    );
    assert!(
        files.len() > 2,
        "384 KiB files: hours are cut into several files"
    );
    let (rows, distinct) = count_rows(&[&hot_dir], None);
    assert_eq!((rows, distinct), (distinct_before, distinct_before));

    // Each file: sorted by (trace id, start time), bloom filter and page index on trace_id,
    // several row groups, and its catalog entry right.
    for f in &files {
        let rel = f
            .strip_prefix(&hot_dir)
            .unwrap()
            .to_string_lossy()
            .to_string();
        let entry = &manifest.files[&rel];
        let reader =
            parquet::file::reader::SerializedFileReader::new(std::fs::File::open(f).unwrap())
                .unwrap();
        use parquet::file::reader::FileReader;
        let meta = reader.metadata();
        assert_eq!(meta.file_metadata().num_rows() as u64, entry.rows);
        assert_eq!(std::fs::metadata(f).unwrap().len(), entry.bytes);
        for rg in meta.row_groups() {
            let c = rg.column(0);
            assert_eq!(c.column_path().string(), "trace_id");
            assert!(c.bloom_filter_offset().is_some(), "{rel}: bloom filter");
            assert!(c.column_index_offset().is_some(), "{rel}: column index");
            assert!(c.offset_index_offset().is_some(), "{rel}: offset index");
        }
        let policies: u64 = entry.policies.values().sum();
        assert_eq!(policies, entry.rows);
    }
    let script = format!(
        r#"
import pyarrow.parquet as pq, glob
bad = 0
for f in sorted(glob.glob('{}/spans/v2/**/*.parquet', recursive=True)):
    t = pq.read_table(f, columns=['trace_id', 'start_time_unix_nano'])
    keys = list(zip(t.column('trace_id').to_pylist(), t.column('start_time_unix_nano').to_pylist()))
    bad += sum(1 for a, b in zip(keys, keys[1:]) if a > b)
print(bad)
"#,
        hot_dir.display()
    );
    assert_eq!(
        support::run_python(&script).trim(),
        "0",
        "every file sorted"
    );

    // Lookups: exactly each trace's spans.
    let tiers = support::chaos::hot_only_tiers(&hot_dir);
    for t in h0.traces.iter().chain(&h1.traces).step_by(250) {
        let found = tracesift::archive::lookup::find_trace(&tiers, t.trace_id)
            .await
            .unwrap();
        assert_eq!(found.spans.len(), t.spans, "{t:?}: {:?}", found.stats);
    }

    // Late segments for a compacted hour are merged with it on the next pass, still once each.
    let again = write_hour(&hot, 0, 3_000, 2, 11).await;
    assert_eq!(again.spans, h0.spans);
    let out = compact_at(&cfg, &at(3, 0));
    assert!(out.contains("compacted 1 hours"), "{out}");
    assert_eq!(
        count_rows(&[&hot_dir], None),
        (distinct_before, distinct_before)
    );
}

/// Runs a `compact` command; returns its self-reported peak RSS and its stdout.
fn max_rss_of(mut cmd: Command) -> (u64, String) {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let peak = stderr
        .lines()
        .find_map(|l| l.strip_prefix("compact: peak RSS "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no peak RSS line:\n{stderr}"));
    (peak, String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_memory_stays_bounded_on_an_input_many_times_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let hot_dir = dir.path().join("hot");
    let hot = tracesift::archive::open_store(&format!("file://{}", hot_dir.display())).unwrap();
    let mut spans = 0;
    for (i, seed) in [21u64, 22, 23, 24].into_iter().enumerate() {
        // Four writers' segments in the same hour, starting at different minutes.
        let input = write_hour(&hot, 0, 5_000, 12, seed).await;
        spans += input.spans;
        let _ = i;
    }
    // Decoded size of the input, as Arrow holds it.
    let decoded: u64 = {
        let mut total = 0u64;
        for f in parquet_files(&hot_dir) {
            let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                std::fs::File::open(&f).unwrap(),
            )
            .unwrap()
            .build()
            .unwrap();
            for b in r {
                total += b.unwrap().get_array_memory_size() as u64;
            }
        }
        total
    };
    let budget: u64 = 24 << 20;
    assert!(
        decoded > 4 * budget,
        "the input ({decoded} bytes decoded) must be several times the budget"
    );
    let cfg = write_config(dir.path(), "", SMALL);
    let mut cmd = tracesift();
    cmd.args(["compact", "-c"])
        .arg(&cfg)
        .args(["--now", &at(3, 0)]);
    if std::env::var_os("TRACESIFT_KEEP_TEST_DIR").is_some() {
        eprintln!("kept {}", dir.path().display());
        std::mem::forget(dir.path().to_path_buf());
        let _ = dir.keep();
        return;
    }
    // The same binary on an empty archive: the process's own footprint.
    let empty = tempfile::tempdir().unwrap();
    let empty_cfg = write_config(empty.path(), "", SMALL);
    let mut idle = tracesift();
    idle.args(["compact", "-c"])
        .arg(&empty_cfg)
        .args(["--now", &at(3, 0)]);
    let (baseline, _) = max_rss_of(idle);
    let (rss, out) = max_rss_of(cmd);
    let used = rss.saturating_sub(baseline);
    eprintln!(
        "compaction of {spans} spans ({decoded} bytes decoded, {} files) with a {budget}-byte budget: max RSS {} MiB, {} MiB above the idle process; {out}",
        parquet_files(&hot_dir).len(),
        rss >> 20,
        used >> 20
    );
    assert!(out.contains("compacted 1 hours"), "{out}");
    // Bounded by the budget, not the input: the budget plus writer page buffers, allocator
    // slack (measured ~1.6x at this tiny budget) and the merge path's code pages, far below the
    // decoded input.
    assert!(
        used < 2 * budget + (16 << 20),
        "{} MiB above the idle process for a 24 MiB budget",
        used >> 20
    );
    assert!(
        used * 3 < decoded,
        "{used} bytes for {decoded} decoded: memory is not proportional to the input"
    );
    let (rows, distinct) = count_rows(&[&hot_dir], None);
    assert_eq!(rows, distinct);
    assert_eq!(rows as usize, spans);
}

fn tier_yaml(dir: &Path, garage: &support::garage::Garage) -> String {
    format!(
        "  tiers:\n    - {{name: warm, url: \"file://{}/warm\", after: 2h, cost_per_gb_month: 0.10}}\n    - name: cold\n      url: s3://{}/archive/cold\n      after: 4h\n      cost_per_gb_month: 0.004\n{}  retention: 7h\n",
        dir.display(),
        garage.bucket,
        garage.tier_options_yaml("      ")
    )
}

/// Runs a pass that must abort at `failpoint`.
fn crash_at(cfg: &Path, now: &str, failpoint: &str) {
    support::require_failpoints();
    let out = tracesift()
        .args(["compact", "-c"])
        .arg(cfg)
        .args(["--now", now])
        .env("TRACESIFT_FAILPOINT", failpoint)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the pass was meant to crash at {failpoint}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("failpoint {failpoint}")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn lookups_exact(cfg: &Path, traces: &[&TraceFacts]) {
    for t in traces {
        let out = tracesift()
            .args(["trace", &t.trace_id.to_hex(), "-c"])
            .arg(cfg)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tree = String::from_utf8_lossy(&out.stdout);
        assert_eq!(tree.lines().count(), t.spans, "{t:?}\n{tree}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_on_disk_and_garage_move_verify_survive_crashes_and_expire() {
    let garage = support::garage::Garage::start("tracesift-tiers");
    let dir = tempfile::tempdir().unwrap();
    let (hot_dir, warm_dir) = (dir.path().join("hot"), dir.path().join("warm"));
    let hot = tracesift::archive::open_store(&format!("file://{}", hot_dir.display())).unwrap();
    // Hours 0..4, 600 traces each.
    let mut inputs: Vec<HourInput> = Vec::new();
    for h in 0..4u64 {
        inputs.push(write_hour(&hot, h, 600, 3, 100 + h).await);
    }
    let total: u64 = inputs.iter().map(|i| i.spans as u64).sum();
    let cfg = write_config(dir.path(), &tier_yaml(dir.path(), &garage), SMALL);
    let all =
        |g: &support::garage::Garage| count_rows(&[&hot_dir, &warm_dir], Some((g, "archive/cold")));
    let sample: Vec<&TraceFacts> = inputs
        .iter()
        .flat_map(|i| i.traces.iter().step_by(150))
        .collect();

    // 04:30: every hour compacted (hour 3 ended 30 min ago, the minimum age); hours 0 and 1
    // (ended >= 2h ago) move to warm.
    let out = compact_at(&cfg, &at(4, 30));
    assert!(out.contains("compacted 4 hours"), "{out}");
    let warm = manifest_of(&hot_dir, "warm");
    let hours_in = |m: &tracesift::archive::manifest::Manifest| -> HashSet<i64> {
        m.files
            .values()
            .map(|e| (e.hour_start_ms / 1000 - DAY0_S as i64) / 3600)
            .collect()
    };
    assert_eq!(hours_in(&warm), HashSet::from([0, 1]), "{out}");
    assert_eq!(
        hours_in(&manifest_of(&hot_dir, "hot")),
        HashSet::from([2, 3])
    );
    assert_eq!(all(&garage), (total, total));
    lookups_exact(&cfg, &sample);

    // Analytics over the compacted tiers (hot + warm) with DuckDB: traces and error traces by
    // root route, against the generator's ground truth.
    let script = format!(
        r#"
import duckdb
con = duckdb.connect()
con.execute("CREATE VIEW spans AS SELECT * FROM read_parquet(['{hot}/spans/v2/**/*.parquet', '{warm}/spans/v2/**/*.parquet'], hive_partitioning = true)")
rows = con.execute("""
  WITH t AS (
    SELECT trace_id, max(CASE WHEN parent_span_id IS NULL THEN http_route END) AS route,
           bool_or(status_code = 'error') AS err
    FROM spans GROUP BY trace_id)
  SELECT route, count(*), count(*) FILTER (WHERE err) FROM t GROUP BY route ORDER BY route""").fetchall()
for r in rows:
    print(r[0], r[1], r[2])
"#,
        hot = hot_dir.display(),
        warm = warm_dir.display()
    );
    let out = support::run_python(&script);
    let mut want: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for t in inputs.iter().flat_map(|i| i.traces.iter()) {
        let e = want.entry(t.route.to_string()).or_default();
        e.0 += 1;
        e.1 += u64::from(t.has_error);
    }
    let got: BTreeMap<String, (u64, u64)> = out
        .lines()
        .map(|l| {
            let v: Vec<&str> = l.split_whitespace().collect();
            (
                v[0].to_string(),
                (v[1].parse().unwrap(), v[2].parse().unwrap()),
            )
        })
        .collect();
    assert_eq!(got, want, "traces and error traces by route");

    // 05:15: hour 0 is due in cold (s3, after 4h), hour 2 in warm. Crash after the copy to
    // Garage, before it is verified and published.
    crash_at(&cfg, &at(5, 15), "move-after-copy@cold");
    let (rows, distinct) = all(&garage);
    assert_eq!(
        distinct, total,
        "nothing lost after a crash between copy and publish"
    );
    assert!(rows >= total);
    lookups_exact(&cfg, &sample);
    // Crash after publishing in Garage's manifest: the file is in two manifests; lookups
    // dedupe.
    crash_at(&cfg, &at(5, 15), "move-after-publish@cold");
    assert_eq!(
        all(&garage).1,
        total,
        "nothing lost after a crash between publish and delete"
    );
    lookups_exact(&cfg, &sample);
    // The next pass finishes the moves: each span exactly once.
    let out = compact_at(&cfg, &at(5, 15));
    assert_eq!(all(&garage), (total, total), "{out}");
    let cold = tracesift::archive::tiering::open_tiers(
        &tracesift::config::Config::load(&cfg).unwrap().archive,
    )
    .unwrap();
    let cold_manifest = cold[2].manifest().await.unwrap();
    assert_eq!(hours_in(&cold_manifest), HashSet::from([0]), "{out}");
    assert_eq!(
        hours_in(&manifest_of(&hot_dir, "warm")),
        HashSet::from([1, 2])
    );
    assert_eq!(hours_in(&manifest_of(&hot_dir, "hot")), HashSet::from([3]));
    assert!(out.contains("finished 1 interrupted moves"), "{out}");
    lookups_exact(&cfg, &sample);

    // Late data for hour 0, which is already in cold: a replay of its spans arrives in hot. The
    // next pass merges it with the cold file (crash injected after publishing the merged file in
    // hot, before the cold copy is deleted), and the hour ends up in cold once, deduplicated.
    write_hour(&hot, 0, 600, 2, 100).await;
    crash_at(&cfg, &at(5, 15), "compact-after-publish");
    assert_eq!(all(&garage).1, total, "nothing lost");
    lookups_exact(&cfg, &sample);
    let out = compact_at(&cfg, &at(5, 15));
    assert_eq!(all(&garage), (total, total), "{out}");
    let cold_manifest = cold[2].manifest().await.unwrap();
    assert_eq!(hours_in(&cold_manifest), HashSet::from([0]), "{out}");
    assert!(cold_manifest.files.values().all(|e| e.replaces.is_empty()));
    assert_eq!(hours_in(&manifest_of(&hot_dir, "hot")), HashSet::from([3]));
    lookups_exact(&cfg, &sample);

    // A crash in the middle of a local move, then the pass that finishes it.
    // 06:15: hour 1 is due in cold, hour 3 in warm.
    crash_at(&cfg, &at(6, 15), "move-after-delete");
    assert_eq!(all(&garage).1, total);
    lookups_exact(&cfg, &sample);
    compact_at(&cfg, &at(6, 15));
    assert_eq!(all(&garage), (total, total));

    // OTLP/JSON from the cold tier parses back as OTLP with the same spans.
    let t = &inputs[0].traces[7];
    let json = run_ok(
        tracesift()
            .args(["trace", &t.trace_id.to_hex(), "--json", "-c"])
            .arg(&cfg),
    );
    let proto = tracesift::otlp::json_to_proto(json.as_bytes()).expect("valid OTLP/JSON");
    let req = <opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest as prost::Message>::decode(proto).unwrap();
    let spans: Vec<_> = req
        .resource_spans
        .iter()
        .flat_map(|r| r.scope_spans.iter().flat_map(|s| s.spans.iter()))
        .collect();
    assert_eq!(spans.len(), t.spans);
    assert!(spans.iter().all(|s| s.trace_id == t.trace_id.0));
    assert!(req.resource_spans.iter().all(|r| r
        .resource
        .as_ref()
        .is_some_and(|res| res.attributes.iter().any(|kv| kv.key == "service.name"))));

    // Cost: per tier from the manifests, spans per policy add up to the archive.
    let cost = run_ok(tracesift().args(["cost", "-c"]).arg(&cfg));
    let line = |name: &str| -> Vec<String> {
        cost.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} row:\n{cost}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(line("total")[2], total.to_string(), "{cost}");
    let cold_manifest = cold[2].manifest().await.unwrap();
    assert_eq!(hours_in(&cold_manifest), HashSet::from([0, 1]));
    let (cold_bytes, cold_rows) = cold_manifest.totals();
    assert_eq!(line("cold")[3], cold_bytes.to_string(), "{cost}");
    assert_eq!(line("cold")[2], cold_rows.to_string(), "{cost}");
    let errors: u64 = line("errors")[1].parse().unwrap();
    let default: u64 = line("default")[1].parse().unwrap();
    assert_eq!(errors + default, total, "{cost}");
    // `default` kept 10% (adjusted count 10 per span), `errors` everything.
    let represented: f64 = line("default")[3].parse().unwrap();
    assert!(
        (represented / (default as f64 * 10.0) - 1.0).abs() < 1e-3,
        "{cost}"
    );
    assert_eq!(line("errors")[3], errors.to_string(), "{cost}");
    assert!(cost.contains("storage tiering: everything hot"), "{cost}");

    // Retention (7h, plus the hour of filing grace): at 09:30 hour 0 (ended 01:00) is due,
    // hour 1 (ended 02:00) is not.
    let out = compact_at(&cfg, &at(9, 30));
    let left = total - inputs[0].spans as u64;
    assert_eq!(
        all(&garage),
        (left, left),
        "{out}\n{}",
        garage.bucket_info()
    );
    assert!(!out.contains("retention deleted 0 files"), "{out}");
    let gone = &inputs[0].traces[0];
    let out = tracesift()
        .args(["trace", &gone.trace_id.to_hex(), "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "an expired trace is not found");
    lookups_exact(
        &cfg,
        &inputs[1].traces.iter().step_by(100).collect::<Vec<_>>(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_keeps_a_second_compactor_out() {
    let dir = tempfile::tempdir().unwrap();
    let hot_dir = dir.path().join("hot");
    let hot = tracesift::archive::open_store(&format!("file://{}", hot_dir.display())).unwrap();
    let mut total = 0u64;
    for h in 0..3u64 {
        total += write_hour(&hot, h, 800, 4, 300 + h).await.spans as u64;
    }
    let cfg = write_config(dir.path(), "", SMALL);
    // Another compactor holds the lease: this one does nothing.
    let other = tracesift::archive::manifest::Lease::new(
        hot.clone(),
        "other-compactor".into(),
        std::time::Duration::from_secs(60),
    );
    assert!(matches!(
        other.acquire().await.unwrap(),
        tracesift::archive::manifest::LeaseOutcome::Acquired(_)
    ));
    let files = parquet_files(&hot_dir);
    let out = compact_at(&cfg, &at(5, 0));
    assert!(out.contains("held by other-compactor"), "{out}");
    assert_eq!(parquet_files(&hot_dir), files, "nothing touched");
    other.release().await.unwrap();

    // Two compactors started together: one pass does the work, the other skips or finds it
    // done; every span once.
    let spawn = || {
        tracesift()
            .args(["compact", "-c"])
            .arg(&cfg)
            .args(["--now", &at(5, 0)])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let outs: Vec<String> = [a, b]
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            String::from_utf8_lossy(&o.stdout).into_owned()
        })
        .collect();
    let compacted: usize = outs
        .iter()
        .map(|o| {
            o.split("compacted ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(compacted, 3, "each hour compacted once: {outs:?}");
    assert_eq!(count_rows(&[&hot_dir], None), (total, total));
    let m = manifest_of(&hot_dir, "hot");
    let by_hour: BTreeMap<i64, usize> = m.files.values().fold(BTreeMap::new(), |mut acc, e| {
        *acc.entry(e.hour_start_ms).or_default() += 1;
        acc
    });
    assert_eq!(by_hour.len(), 3);
    let _ = HashMap::<u8, u8>::new();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_inside_run_compacts_on_its_interval_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let hot_dir = dir.path().join("hot");
    let hot = tracesift::archive::open_store(&format!("file://{}", hot_dir.display())).unwrap();
    let input = write_hour(&hot, 0, 500, 4, 77).await;
    let mut cfg = tracesift::config::ArchiveConfig::default();
    cfg.hot.url = format!("file://{}", hot_dir.display());
    cfg.compaction.in_run = true;
    cfg.compaction.interval = std::time::Duration::from_millis(300);
    let compactor = tracesift::archive::compact::Compactor::start(cfg).unwrap();
    // The hour is years old: the first pass compacts it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while manifest_of(&hot_dir, "hot").files.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no pass compacted the hour"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Segments keep arriving while passes run (as `run` writes them beside the loop): late
    // spans of the compacted hour, and replays of spans already compacted.
    let mut expected = input.spans as u64;
    for seed in 78..84u64 {
        expected += write_hour(&hot, 0, 200, 2, seed).await.spans as u64;
        write_hour(&hot, 0, 500, 3, 77).await; // a replay: nothing new
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let files = parquet_files(&hot_dir);
        let m = manifest_of(&hot_dir, "hot");
        if files.len() == m.files.len() && m.totals().1 == expected {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the late segment was not merged"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    compactor.stop(std::time::Duration::from_secs(30)).await;
    assert_eq!(count_rows(&[&hot_dir], None), (expected, expected));
    let lease = tracesift::archive::manifest::Lease::new(
        hot.clone(),
        "reader".into(),
        std::time::Duration::from_secs(60),
    );
    assert!(
        lease.current().await.unwrap().1.released,
        "the lease is released between passes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_store_without_conditional_writes_is_refused_and_lease_url_fixes_it() {
    let garage = support::garage::Garage::start("tracesift-lease");
    let dir = tempfile::tempdir().unwrap();
    // Hot tier on Garage; Garage 2.5 ignores If-None-Match, so the lease cannot live there.
    let cfg = dir.path().join("tracesift.yaml");
    let write = |lease: &str| {
        std::fs::write(
            &cfg,
            format!(
                "policies: [{{name: all, type: always_sample}}]\narchive:\n  hot:\n    url: s3://{}/hot\n{}  compaction:\n{SMALL}{lease}",
                garage.bucket,
                garage.tier_options_yaml("    ")
            ),
        )
        .unwrap();
    };
    write("");
    let hot = tracesift::archive::tiering::open_tiers(
        &tracesift::config::Config::load(&cfg).unwrap().archive,
    )
    .unwrap();
    let exclusive = tracesift::archive::manifest::store_is_exclusive(&hot[0].store)
        .await
        .unwrap();
    let h0 = write_hour(&hot[0].store, 0, 400, 2, 501).await;
    let out = tracesift()
        .args(["compact", "-c"])
        .arg(&cfg)
        .args(["--now", &at(3, 0)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if exclusive {
        // A store that honours conditional writes: the pass runs.
        assert!(out.status.success(), "{stderr}");
    } else {
        assert!(
            !out.status.success(),
            "a pass must not run without a working lease"
        );
        assert!(stderr.contains("archive.compaction.lease_url"), "{stderr}");
    }
    // With the lease on a local directory, the S3 hot tier is compacted.
    write(&format!(
        "    lease_url: \"file://{}/lease\"\n",
        dir.path().display()
    ));
    let out = compact_at(&cfg, &at(3, 0));
    assert!(out.contains("compacted 1 hours"), "{out}");
    let hot = tracesift::archive::tiering::open_tiers(
        &tracesift::config::Config::load(&cfg).unwrap().archive,
    )
    .unwrap();
    let m = hot[0].manifest().await.unwrap();
    assert_eq!(m.totals().1 as usize, h0.spans, "{out}");
    let t = &h0.traces[3];
    let found = tracesift::archive::lookup::find_trace(&hot, t.trace_id)
        .await
        .unwrap();
    assert_eq!(found.spans.len(), t.spans);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_file_stops_its_hour_with_its_name_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hot_dir = dir.path().join("hot");
    let hot = tracesift::archive::open_store(&format!("file://{}", hot_dir.display())).unwrap();
    let input = write_hour(&hot, 0, 300, 2, 901).await;
    let other = write_hour(&hot, 1, 300, 2, 902).await;
    let bad = "spans/v2/date=2023-11-14/hour=00/torn.parquet";
    hot.put(
        &object_store::path::Path::from(bad),
        PutPayload::from_static(b"PAR1 not really"),
    )
    .await
    .unwrap();
    let before = parquet_files(&hot_dir);
    let cfg = write_config(dir.path(), "", SMALL);
    let out = tracesift()
        .args(["compact", "-c"])
        .arg(&cfg)
        .args(["--now", &at(3, 0)])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("not compacted: spans/v2/date=2023-11-14/hour=00")
            && stdout.contains("torn.parquet"),
        "{stdout}"
    );
    // The other hour went on; the bad hour's files are untouched.
    assert!(stdout.contains("compacted 1 hours"), "{stdout}");
    let hour0: Vec<_> = parquet_files(&hot_dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("hour=00"))
        .collect();
    let before0: Vec<_> = before
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("hour=00"))
        .collect();
    assert_eq!(hour0, before0, "nothing of the bad hour deleted");
    // Once the torn file is moved away, the hour compacts with every span.
    std::fs::remove_file(hot_dir.join(bad)).unwrap();
    compact_at(&cfg, &at(3, 0));
    let n = (input.spans + other.spans) as u64;
    assert_eq!(count_rows(&[&hot_dir], None), (n, n));
}

/// Every object of a store: (path, size, last modified, e-tag).
async fn objects_of(store: &Arc<dyn ObjectStore>) -> Vec<(String, u64, String, String)> {
    use futures::TryStreamExt;
    let mut all: Vec<_> = store
        .list(None)
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .map(|o| {
            (
                o.location.to_string(),
                o.size,
                o.last_modified.to_rfc3339(),
                o.e_tag.unwrap_or_default(),
            )
        })
        .collect();
    all.sort();
    all
}

fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// A compactor frozen (SIGSTOP, as a stopped container or a long pause) in the middle of a move,
/// past its lease's TTL, while a second compactor takes the lease over and completes a pass;
/// then resumed. It must stop with "lease lost" without writing anything; afterwards every
/// object of every tier is in exactly one manifest and every span is there once.
async fn a_frozen_compactor_stops_without_writing(
    garage: Option<&support::garage::Garage>,
    failpoint: &str,
) {
    support::require_failpoints();
    let dir = tempfile::tempdir().unwrap();
    let hot_dir = dir.path().join("hot");
    let warm_dir = dir.path().join("warm");
    let hot = tracesift::archive::open_store(&format!("file://{}", hot_dir.display())).unwrap();
    let mut total = 0u64;
    for h in 0..4u64 {
        total += write_hour(&hot, h, 300, 2, 700 + h).await.spans as u64;
    }
    let warm = match garage {
        Some(g) => format!(
            "  tiers:\n    - name: warm\n      url: s3://{}/warm\n      after: 24h\n{}",
            g.bucket,
            g.tier_options_yaml("      ")
        ),
        None => format!(
            "  tiers:\n    - {{name: warm, url: \"file://{}\", after: 24h}}\n",
            warm_dir.display()
        ),
    };
    let cfg = write_config(dir.path(), &warm, &format!("{SMALL}    lease_ttl: 10s\n"));
    // Hours 0-2 compacted in hot; nothing due to move yet.
    let out = compact_at(&cfg, &at(4, 0));
    assert!(out.contains("compacted 3 hours"), "{out}");
    // A: a pass where every hour is due to move, frozen right after copying its first file.
    let a_log = dir.path().join("a.log");
    let mut a = tracesift()
        .args(["compact", "-c"])
        .arg(&cfg)
        .args(["--now", &at(30, 0)])
        .env("TRACESIFT_FAILPOINT", failpoint)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&a_log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while process_state(a.id()) != Some('T') {
        assert!(
            std::time::Instant::now() < deadline && a.try_wait().unwrap().is_none(),
            "A never reached its failpoint:\n{}",
            std::fs::read_to_string(&a_log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Past A's lease, B takes it over and completes a pass: everything moves to warm.
    std::thread::sleep(std::time::Duration::from_secs(11));
    let out = compact_at(&cfg, &at(30, 0));
    assert!(
        out.contains("moved 4 files") || out.contains("moved"),
        "{out}"
    );
    let tiers = tracesift::archive::tiering::open_tiers(
        &tracesift::config::Config::load(&cfg).unwrap().archive,
    )
    .unwrap();
    let before: Vec<_> = {
        let mut v = Vec::new();
        for t in &tiers {
            v.push(objects_of(&t.store).await);
        }
        v
    };
    // A wakes.
    std::process::Command::new("kill")
        .args(["-CONT", &a.id().to_string()])
        .status()
        .unwrap();
    let status = a.wait().unwrap();
    let a_err = std::fs::read_to_string(&a_log).unwrap();
    assert!(!status.success(), "A must fail:\n{a_err}");
    assert!(a_err.contains("lease lost"), "{a_err}");
    let mut after = Vec::new();
    for t in &tiers {
        after.push(objects_of(&t.store).await);
    }
    assert_eq!(before, after, "A wrote after losing its lease:\n{a_err}");
    // Every object in exactly one manifest.
    let mut catalogued: HashMap<(usize, String), usize> = HashMap::new();
    for (i, t) in tiers.iter().enumerate() {
        for p in t.manifest().await.unwrap().files.keys() {
            *catalogued.entry((i, p.clone())).or_default() += 1;
        }
    }
    let mut listed = HashSet::new();
    for (i, objects) in after.iter().enumerate() {
        for (p, ..) in objects.iter().filter(|(p, ..)| p.ends_with(".parquet")) {
            listed.insert((i, p.clone()));
            assert_eq!(
                catalogued.get(&(i, p.clone())),
                Some(&1),
                "{} {p} is in no manifest",
                tiers[i].name
            );
        }
    }
    let in_manifests: HashSet<(usize, String)> = catalogued.keys().cloned().collect();
    assert_eq!(
        in_manifests, listed,
        "manifests name objects that do not exist"
    );
    let names: HashSet<&String> = catalogued.keys().map(|(_, p)| p).collect();
    assert_eq!(
        names.len(),
        catalogued.len(),
        "an object is in two tiers' manifests"
    );
    assert!(
        listed.iter().all(|(i, _)| *i == 1),
        "everything moved to warm: {listed:?}"
    );
    // Every span once (DuckDB and pyarrow).
    let rows = match garage {
        Some(g) => count_rows(&[&hot_dir], Some((g, "warm"))),
        None => count_rows(&[&hot_dir, &warm_dir], None),
    };
    assert_eq!(rows, (total, total));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_compactor_stops_without_writing_on_local_tiers() {
    a_frozen_compactor_stops_without_writing(None, "move-after-copy@warm=stop").await;
}

/// Frozen between reading a manifest and writing its next generation (the first manifest write
/// of its pass): the other compactor's writes take that generation, so the frozen one's write
/// cannot land on a manifest it no longer owns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compactor_frozen_between_reading_and_writing_a_manifest_writes_nothing() {
    a_frozen_compactor_stops_without_writing(None, "manifest-before-write@hot=stop").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_compactor_stops_without_writing_with_a_garage_tier() {
    let garage = support::garage::Garage::start("tracesift-fence");
    a_frozen_compactor_stops_without_writing(Some(&garage), "move-after-copy@warm=stop").await;
}

/// Span data cannot reach the operator's terminal as control sequences: `tracesift trace`
/// prints a span name holding escape sequences (a window-title change, a screen clear, a
/// bidi override) escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_prints_escape_sequences_in_span_data_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let hot_dir = dir.path().join("hot");
    let hot = tracesift::archive::open_store(&format!("file://{}", hot_dir.display())).unwrap();
    let trace = [0x42u8; 16];
    let mut root = support::test_span(&trace, 1, false);
    root.name = "GET /\x1b]0;owned\x07\x1b[2J\u{202e}cba".into();
    let child = support::test_span(&trace, 2, false);
    let record = bytes::Bytes::from(support::otlp_record(vec![root, child]));
    let mut scanned = Vec::new();
    tracesift::otlp::scan_request_into(&record, &tracesift::otlp::NoProbe, 0, &mut scanned)
        .unwrap();
    let kept: Vec<tracesift::archive::KeptSpan> = scanned
        .into_iter()
        .map(|s| tracesift::archive::KeptSpan {
            trace_id: s.trace_id,
            span: s.span,
            policy: Arc::from("all"),
            threshold: tracesift::otlp::threshold::Threshold::ALWAYS,
        })
        .collect();
    for f in tracesift::archive::encode_segment(&kept, 2_000).unwrap() {
        let path = tracesift::archive::hot_segment_path("otlp_spans", 0, 0, 1, f.hour, f.content);
        hot.put(&path, PutPayload::from(f.bytes)).await.unwrap();
    }
    let cfg = write_config(dir.path(), "", SMALL);
    let out = tracesift()
        .args(["trace", &hex::encode(trace), "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 2, "{stdout:?}");
    assert!(
        !stdout.contains('\x1b') && !stdout.contains('\x07') && !stdout.contains('\u{202e}'),
        "{stdout:?}"
    );
    assert!(
        stdout.contains("GET /\\u{1b}]0;owned\\u{7}\\u{1b}[2J\\u{202e}cba"),
        "{stdout}"
    );
}
