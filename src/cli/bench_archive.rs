//! `tracesift bench-archive`: archive size and trace-lookup time on generated traffic.
//!
//! Generates `tracesift gen` traces in chunks, writes them as hot segments (the encoder the
//! pipeline's Parquet sink uses), compacts them with the configured limits, and times lookups of
//! sampled trace ids through the same path as `tracesift trace`. Reports OTLP bytes per span
//! against hot-segment and compacted Parquet bytes per span, the compaction's time and peak RSS,
//! and lookup latencies. Nothing talks to Kafka: this measures the archive alone.

use crate::clock::{Clock, SystemClock};
use std::fmt;
use std::path::PathBuf;

use object_store::{ObjectStoreExt, PutPayload};

use crate::archive::ArchiveError;
use crate::gen::GenOptions;
use crate::otlp::TraceId;

/// What to measure.
#[derive(Debug, Clone)]
pub struct ArchiveBenchOptions {
    /// Directory of the archive (its `hot/` is replaced).
    pub dir: PathBuf,
    /// Traces to generate (about 7.5 spans each).
    pub traces: usize,
    /// Lookups to time.
    pub lookups: usize,
    /// Compaction memory budget.
    pub memory_budget: u64,
}

/// The figures.
#[derive(Debug, Clone, Default)]
pub struct ArchiveBenchReport {
    /// Spans generated.
    pub spans: u64,
    /// OTLP protobuf bytes of the generated records.
    pub otlp_bytes: u64,
    /// Hot segment files and bytes.
    pub hot_files: u64,
    /// Hot segment bytes.
    pub hot_bytes: u64,
    /// Seconds spent generating and encoding segments.
    pub write_secs: f64,
    /// `tracesift compact`'s report line.
    pub compact_summary: String,
    /// Its wall time.
    pub compact_secs: f64,
    /// Its peak resident memory.
    pub compact_peak_rss: Option<u64>,
    /// Compacted files.
    pub compacted_files: u64,
    /// Compacted bytes.
    pub compacted_bytes: u64,
    /// Compacted rows.
    pub compacted_rows: u64,
    /// Lookup wall times, ms, sorted.
    pub lookup_ms: Vec<f64>,
    /// Rows decoded per lookup, mean.
    pub rows_decoded: f64,
    /// Row groups skipped by bloom filter, total.
    pub bloom_skips: usize,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl fmt::Display for ArchiveBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = |b: u64| b as f64 / self.spans.max(1) as f64;
        writeln!(
            f,
            "spans: {} ({:.1} MB OTLP protobuf, {:.1} B/span)",
            self.spans,
            self.otlp_bytes as f64 / 1e6,
            per(self.otlp_bytes)
        )?;
        writeln!(
            f,
            "hot segments: {} files, {:.1} MB, {:.1} B/span ({:.1}x smaller than OTLP); written in {:.1} s",
            self.hot_files,
            self.hot_bytes as f64 / 1e6,
            per(self.hot_bytes),
            self.otlp_bytes as f64 / self.hot_bytes.max(1) as f64,
            self.write_secs
        )?;
        writeln!(
            f,
            "compacted: {} files, {:.1} MB, {:.1} B/span ({:.1}x smaller than OTLP); `tracesift compact` {:.1} s ({:.0} spans/s), peak RSS {}",
            self.compacted_files,
            self.compacted_bytes as f64 / 1e6,
            per(self.compacted_bytes),
            self.otlp_bytes as f64 / self.compacted_bytes.max(1) as f64,
            self.compact_secs,
            self.compacted_rows as f64 / self.compact_secs.max(1e-9),
            self.compact_peak_rss
                .map(|b| format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64))
                .unwrap_or_else(|| "unknown".into())
        )?;
        writeln!(f, "  {}", self.compact_summary)?;
        write!(
            f,
            "lookups: {} traces, p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms; {:.0} rows decoded per lookup; {} row groups skipped by bloom filter",
            self.lookup_ms.len(),
            pct(&self.lookup_ms, 0.5),
            pct(&self.lookup_ms, 0.9),
            self.lookup_ms.last().copied().unwrap_or(0.0),
            self.rows_decoded,
            self.bloom_skips
        )
    }
}

/// Runs the benchmark.
pub async fn run(opts: &ArchiveBenchOptions) -> Result<ArchiveBenchReport, ArchiveError> {
    let clock = SystemClock::new();
    let hot_dir = opts.dir.join("hot");
    let _ = std::fs::remove_dir_all(&hot_dir);
    let mut cfg = crate::config::ArchiveConfig::default();
    cfg.hot.url = format!("file://{}", hot_dir.display());
    cfg.compaction.memory_budget = crate::config::ByteSize(opts.memory_budget);
    let tiers = crate::archive::tiering::open_tiers(&cfg)?;
    let hot = tiers[0].store.clone();
    let mut report = ArchiveBenchReport::default();
    let chunk = 20_000usize;
    let sample_every = (opts.traces / opts.lookups.max(1)).max(1);
    let mut sample: Vec<(TraceId, usize)> = Vec::new();
    let t0 = clock.now();
    let mut done = 0usize;
    let mut n = 0u64;
    // 2023-11-14 00:00 UTC, traces 1 ms apart.
    let base = 1_699_920_000u64 * 1_000_000_000;
    while done < opts.traces {
        let k = chunk.min(opts.traces - done);
        let (records, manifest) = crate::gen::plan_records(&GenOptions {
            traces: k,
            seed: 1 + n,
            start_ns: base + done as u64 * 1_000_000,
            ..Default::default()
        });
        report.otlp_bytes += records.iter().map(|r| r.value.len() as u64).sum::<u64>();
        for (i, t) in manifest.traces.iter().enumerate() {
            report.spans += t.spans as u64;
            if (done + i).is_multiple_of(sample_every) {
                sample.push((t.trace_id, t.spans));
            }
        }
        let kept = crate::gen::kept_spans(&records, &manifest)
            .map_err(|e| ArchiveError::Verify(format!("generated record: {e}")))?;
        let files =
            tokio::task::spawn_blocking(move || crate::archive::encode_segment(&kept, 1 << 20))
                .await
                .map_err(|e| ArchiveError::Verify(e.to_string()))??;
        for f in files {
            let path = crate::archive::hot_segment_path(
                "gen",
                0,
                done as i64,
                (done + k) as i64,
                f.hour,
                f.content,
            );
            report.hot_files += 1;
            report.hot_bytes += f.bytes.len() as u64;
            hot.put(&path, PutPayload::from(f.bytes)).await?;
        }
        done += k;
        n += 1;
        eprintln!("bench-archive: {done}/{} traces written", opts.traces);
    }
    report.write_secs = (clock.now() - t0).as_secs_f64();
    // Compaction in a child process (`tracesift compact`), so its memory is its own.
    let cfg_path = opts.dir.join("bench-archive.yaml");
    std::fs::write(
        &cfg_path,
        format!(
            "policies: [{{name: all, type: always_sample}}]\narchive:\n  hot: {{url: \"{}\"}}\n  compaction: {{memory_budget: {}}}\n",
            cfg.hot.url, opts.memory_budget
        ),
    )
    .map_err(|e| ArchiveError::Verify(format!("{}: {e}", cfg_path.display())))?;
    let exe = std::env::current_exe()
        .map_err(|e| ArchiveError::Verify(format!("cannot find the tracesift binary: {e}")))?;
    let t1 = clock.now();
    let child_cfg = cfg_path.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .args(["compact", "--min-age", "0s", "-c"])
            .arg(&child_cfg)
            .output()
    })
    .await
    .map_err(|e| ArchiveError::Verify(e.to_string()))?
    .map_err(|e| ArchiveError::Verify(format!("cannot run tracesift compact: {e}")))?;
    report.compact_secs = (clock.now() - t1).as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(ArchiveError::Verify(format!(
            "tracesift compact failed:\n{stderr}"
        )));
    }
    report.compact_summary = String::from_utf8_lossy(&out.stdout).trim().to_string();
    report.compact_peak_rss = stderr
        .lines()
        .find_map(|l| l.strip_prefix("compact: peak RSS "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    let manifest = tiers[0].manifest().await?;
    let (bytes, rows) = manifest.totals();
    report.compacted_files = manifest.files.len() as u64;
    report.compacted_bytes = bytes;
    report.compacted_rows = rows;
    let mut rows = 0usize;
    for (id, spans) in sample.iter().take(opts.lookups) {
        let t = clock.now();
        let found = crate::archive::lookup::find_trace(&tiers, *id).await?;
        report.lookup_ms.push((clock.now() - t).as_secs_f64() * 1e3);
        if found.spans.len() != *spans {
            return Err(ArchiveError::Verify(format!(
                "lookup of {} returned {} spans, {spans} were written",
                id.to_hex(),
                found.spans.len()
            )));
        }
        rows += found.stats.rows_read;
        report.bloom_skips += found.stats.row_groups_skipped_by_bloom;
    }
    report.rows_decoded = rows as f64 / report.lookup_ms.len().max(1) as f64;
    report.lookup_ms.sort_by(|a, b| a.total_cmp(b));
    Ok(report)
}
