//! Compaction of a tier's Parquet, with dedupe (`tracesift compact`).
//!
//! Per hour partition, every file (hot segments and earlier compacted files) is merged into
//! compacted files that are sorted by trace id (then start time) and hold each (trace id, span
//! id, kind) once — so replays and at-least-once duplicates leave no trace in the archive.
//!
//! Memory is bounded by `memory_budget`: an hour whose input would need more is split into
//! trace-id ranges (by the id's leading bytes), each read, sorted, deduplicated and written on its
//! own. The outputs of one hour therefore never overlap in trace id, which also keeps a trace
//! lookup to one file per hour.
//!
//! Crash safety: outputs are written under names derived from their content, checked (read
//! back: row count), and only then are the inputs deleted. A crash at any step leaves every row
//! in at least one file; the next run merges and deduplicates again.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, FixedSizeBinaryArray, RecordBatch, StringArray, TimestampNanosecondArray,
    UInt32Array,
};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;

use crate::archive::{span_schema, writer_properties, ArchiveError};

/// What one compaction run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Hour partitions compacted.
    pub hours: usize,
    /// Files read.
    pub files_in: usize,
    /// Files written.
    pub files_out: usize,
    /// Rows read.
    pub rows_in: usize,
    /// Rows written (after dedupe).
    pub rows_out: usize,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
}

impl CompactReport {
    /// Duplicate rows removed.
    pub fn duplicates_removed(&self) -> usize {
        self.rows_in - self.rows_out
    }
}

/// How to compact.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Decoded input held in memory at most per step (an hour above it is split by trace id).
    pub memory_budget: u64,
    /// Decoded size assumed per Parquet byte when planning (zstd Parquet inflates ~4-8×).
    pub inflation: u64,
    /// Only hours that ended at least this long before `now_ms` are compacted (the current hour
    /// still receives segments).
    pub min_age: std::time::Duration,
    /// Wall-clock now, Unix ms (injected, so tests control ages).
    pub now_ms: u64,
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            memory_budget: 512 << 20,
            inflation: 8,
            min_age: std::time::Duration::from_secs(3600),
            now_ms: crate::clock::wall_now_nanos() / 1_000_000,
        }
    }
}

const COMPACTED_PREFIX: &str = "compacted-";

/// Compacts every hour partition of `spans/v1/` in `store` that has more than one file or any
/// file that is not a compacted one.
pub async fn compact(
    store: Arc<dyn ObjectStore>,
    opts: &CompactOptions,
) -> Result<CompactReport, ArchiveError> {
    let prefix = Path::from(format!("spans/{}", crate::archive::SCHEMA_VERSION));
    let mut hours: BTreeMap<String, Vec<(Path, u64)>> = BTreeMap::new();
    let listed: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
    for o in listed {
        let p = o.location.to_string();
        if !p.ends_with(".parquet") {
            continue;
        }
        let Some((dir, _)) = p.rsplit_once('/') else {
            continue;
        };
        hours
            .entry(dir.to_string())
            .or_default()
            .push((o.location, o.size));
    }
    let mut report = CompactReport::default();
    for (dir, files) in hours {
        let done = files.len() == 1
            && files[0]
                .0
                .filename()
                .is_some_and(|f| f.starts_with(COMPACTED_PREFIX));
        if done || !old_enough(&dir, opts) {
            continue;
        }
        compact_hour(&store, &dir, &files, opts, &mut report).await?;
        report.hours += 1;
    }
    Ok(report)
}

/// Whether the hour of `dir` (`…/date=YYYY-MM-DD/hour=HH`) ended at least `min_age` ago.
fn old_enough(dir: &str, opts: &CompactOptions) -> bool {
    let mut date = None;
    let mut hour = None;
    for part in dir.split('/') {
        if let Some(d) = part.strip_prefix("date=") {
            date = chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok();
        } else if let Some(h) = part.strip_prefix("hour=") {
            hour = h.parse::<u32>().ok();
        }
    }
    let (Some(date), Some(hour)) = (date, hour) else {
        return false;
    };
    let Some(start) = date.and_hms_opt(hour, 0, 0) else {
        return false;
    };
    let end_ms = (start.and_utc().timestamp() + 3600) * 1000;
    end_ms + opts.min_age.as_millis() as i64 <= opts.now_ms as i64
}

/// Leading-byte ranges of the trace id: range `i` of `n` holds ids whose first two bytes `b`
/// satisfy `i * 65536 / n <= b < (i + 1) * 65536 / n`.
fn range_of(id: &[u8], n: usize) -> usize {
    let b = (usize::from(id[0]) << 8) | usize::from(id[1]);
    b * n / 65_536
}

async fn compact_hour(
    store: &Arc<dyn ObjectStore>,
    dir: &str,
    files: &[(Path, u64)],
    opts: &CompactOptions,
    report: &mut CompactReport,
) -> Result<(), ArchiveError> {
    let total: u64 = files.iter().map(|f| f.1).sum();
    let ranges = (total.saturating_mul(opts.inflation) / opts.memory_budget.max(1) + 1)
        .clamp(1, 4096) as usize;
    report.files_in += files.len();
    report.bytes_in += total;
    let mut written: Vec<(Path, usize)> = Vec::new();
    for range in 0..ranges {
        // Read this range of every file (one file in memory at a time, plus the range's rows).
        let mut batches: Vec<RecordBatch> = Vec::new();
        for (path, _) in files {
            let bytes = store.get(path).await?.bytes().await?;
            let (rows, file_rows) = read_range(bytes, range, ranges)?;
            if range == 0 {
                // Count every input row once.
                report.rows_in += file_rows;
            }
            batches.extend(rows);
        }
        if batches.iter().all(|b| b.num_rows() == 0) {
            continue;
        }
        let merged = arrow_select::concat::concat_batches(&span_schema(), &batches)?;
        drop(batches);
        let deduped = sort_dedupe(&merged)?;
        drop(merged);
        let rows = deduped.num_rows();
        let mut buf = Vec::with_capacity(1 << 20);
        let mut w = ArrowWriter::try_new(&mut buf, span_schema(), Some(writer_properties(64_000)))?;
        w.write(&deduped)?;
        w.close()?;
        let hash = crate::hash::fnv1a(&[&buf]);
        let path = Path::from(format!(
            "{dir}/{COMPACTED_PREFIX}{range:04}-of-{ranges:04}-{hash:016x}.parquet"
        ));
        let size = buf.len() as u64;
        store.put(&path, PutPayload::from(buf)).await?;
        report.files_out += 1;
        report.rows_out += rows;
        report.bytes_out += size;
        written.push((path, rows));
    }
    // Verify what was written before removing anything.
    for (path, rows) in &written {
        let got = count_rows(store, path).await?;
        if got != *rows {
            return Err(ArchiveError::Verify(format!(
                "{path}: {got} rows read back, {rows} written; inputs kept"
            )));
        }
    }
    let outputs: Vec<&Path> = written.iter().map(|(p, _)| p).collect();
    for (path, _) in files {
        if !outputs.contains(&path) {
            store.delete(path).await?;
        }
    }
    Ok(())
}

async fn count_rows(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<usize, ArchiveError> {
    let bytes = store.get(path).await?.bytes().await?;
    let meta = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    Ok(meta.metadata().file_metadata().num_rows() as usize)
}

/// The rows of one trace-id range of a file, and the file's row count.
fn read_range(
    bytes: Bytes,
    range: usize,
    ranges: usize,
) -> Result<(Vec<RecordBatch>, usize), ArchiveError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    let file_rows = builder.metadata().file_metadata().num_rows() as usize;
    let reader = builder.build()?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch?;
        let batch = conform(batch)?;
        if ranges == 1 {
            out.push(batch);
            continue;
        }
        let ids = fixed(&batch, "trace_id")?;
        let keep: arrow_array::BooleanArray = (0..batch.num_rows())
            .map(|i| Some(range_of(ids.value(i), ranges) == range))
            .collect();
        out.push(arrow_select::filter::filter_record_batch(&batch, &keep)?);
    }
    Ok((out, file_rows))
}

/// Casts a batch read back to the writer's schema (readers may differ in map field names).
fn conform(batch: RecordBatch) -> Result<RecordBatch, ArchiveError> {
    let schema = span_schema();
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let cols: Vec<ArrayRef> = batch.columns().to_vec();
    Ok(RecordBatch::try_new(schema, cols)?)
}

fn fixed<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a FixedSizeBinaryArray, ArchiveError> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<FixedSizeBinaryArray>())
        .ok_or_else(|| ArchiveError::Verify(format!("column {name} missing or mistyped")))
}

/// Rows sorted by (trace id, start time, span id, kind), each (trace id, span id, kind) once.
fn sort_dedupe(b: &RecordBatch) -> Result<RecordBatch, ArchiveError> {
    let trace = fixed(b, "trace_id")?;
    let span = fixed(b, "span_id")?;
    let kind = b
        .column_by_name("kind")
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| ArchiveError::Verify("column kind missing or mistyped".into()))?;
    let start = b
        .column_by_name("start_time")
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        .ok_or_else(|| ArchiveError::Verify("column start_time missing or mistyped".into()))?;
    let mut idx: Vec<u32> = (0..b.num_rows() as u32).collect();
    idx.sort_by(|&x, &y| {
        let (x, y) = (x as usize, y as usize);
        (trace.value(x), span.value(x), kind.value(x)).cmp(&(
            trace.value(y),
            span.value(y),
            kind.value(y),
        ))
    });
    idx.dedup_by(|y, x| {
        let (x, y) = (*x as usize, *y as usize);
        trace.value(x) == trace.value(y)
            && span.value(x) == span.value(y)
            && kind.value(x) == kind.value(y)
    });
    // Final order: trace id, then start time (as the hot segments and the lookups expect).
    idx.sort_by(|&x, &y| {
        let (x, y) = (x as usize, y as usize);
        (trace.value(x), start.value(x), span.value(x)).cmp(&(
            trace.value(y),
            start.value(y),
            span.value(y),
        ))
    });
    let indices = UInt32Array::from(idx);
    Ok(arrow_select::take::take_record_batch(b, &indices)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hours_old_enough_are_compacted() {
        let opts = |now_ms: u64| CompactOptions {
            min_age: std::time::Duration::from_secs(3600),
            now_ms,
            ..Default::default()
        };
        let dir = "spans/v1/date=2025-10-09/hour=08";
        // The hour ends at 09:00; with a one-hour minimum age it is due from 10:00.
        let t = |h: u32, m: u32| {
            chrono::NaiveDate::from_ymd_opt(2025, 10, 9)
                .unwrap()
                .and_hms_opt(h, m, 0)
                .unwrap()
                .and_utc()
                .timestamp_millis() as u64
        };
        assert!(!old_enough(dir, &opts(t(9, 30))));
        assert!(old_enough(dir, &opts(t(10, 0))));
        assert!(!old_enough("spans/v1/nonsense", &opts(t(23, 0))));
    }

    #[test]
    fn trace_id_ranges_are_ordered_and_cover_everything() {
        for n in [1usize, 2, 3, 7, 100, 4096] {
            let mut last = 0;
            for b in 0..=65_535u32 {
                let id = [(b >> 8) as u8, b as u8, 0, 0];
                let r = range_of(&id, n);
                assert!(r < n && r >= last, "n={n} b={b}");
                last = r;
            }
            assert_eq!(last, n - 1);
        }
    }
}
