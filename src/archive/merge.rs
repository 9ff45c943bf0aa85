//! Streaming k-way merge of sorted span files (the engine of compaction).
//!
//! Every input is a Parquet file of the span schema sorted by (trace id, start time, span id) —
//! hot segments are written that way and so is every merge output. The merge holds one small
//! batch per input and the output row group being built, never a whole file, hour or day:
//!
//! - a heap orders the inputs' current rows by (trace id, start time, span id);
//! - rows of one trace arrive together, so duplicates of (trace id, span id, kind) are dropped
//!   with a set that lives for one trace;
//! - output rows are gathered by index from the input batches (`interleave`) in batches, written
//!   to an [`ArrowWriter`], and a row group / file is cut at the first trace boundary after the
//!   configured size, so a trace never straddles files;
//! - when the inputs' read buffers would not fit the budget together (or there are more than
//!   `fan_in`), inputs are merged in rounds through intermediate files in the work directory.
//!
//! Memory is sized from each input's footer: per input, one decompressed page per leaf column
//! (pages are capped by [`crate::archive::writer_properties`]) plus its batch; plus the output
//! row group (`row_group_bytes`).

use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};

use arrow_array::{Array, BinaryArray, Float64Array, Int64Array, RecordBatch, StringArray};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::ParquetMetaData;

use crate::archive::manifest::FileEntry;
use crate::archive::{column, id_at, span_schema, ArchiveError};
use crate::otlp::SpanKind;

/// Size limits of a merge.
#[derive(Debug, Clone, Copy)]
pub struct MergeLimits {
    /// Memory for input batches, read buffers and the output row group.
    pub memory_budget: u64,
    /// Target encoded size of an output row group.
    pub row_group_bytes: u64,
    /// Target size of an output file.
    pub file_bytes: u64,
    /// Inputs merged at once at most.
    pub fan_in: usize,
}

/// One output file (a local file in the work directory) and its catalog entry (without
/// `hour_start_ms`, which the caller knows).
#[derive(Debug, Clone)]
pub struct MergedFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its ranges, counts, size and checksum.
    pub entry: FileEntry,
}

/// Rows in and out of a merge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Rows read from the inputs.
    pub rows_in: u64,
    /// Rows written (after dedupe).
    pub rows_out: u64,
    /// Merge rounds (1 when every input fit at once).
    pub rounds: usize,
}

/// Upper bound on the decompressed size of one data page (the writer caps pages far below it;
/// foreign files may use the Parquet default of 1 MiB).
const PAGE_CAP: u64 = 1 << 20;

/// Memory one open input needs besides its batch: a decompressed page and a decompression
/// context per leaf column.
fn read_buffer_bytes(meta: &ParquetMetaData) -> u64 {
    let mut per_column: Vec<u64> = Vec::new();
    for rg in meta.row_groups() {
        for (i, c) in rg.columns().iter().enumerate() {
            let v = (c.uncompressed_size().max(0) as u64).min(PAGE_CAP);
            if per_column.len() <= i {
                per_column.push(v);
            } else {
                per_column[i] = per_column[i].max(v);
            }
        }
    }
    // Per leaf column also a decompression context and reader state (measured: ~10 KiB; 32 KiB
    // leaves room).
    per_column.iter().map(|v| v + (32 << 10)).sum::<u64>() + (64 << 10)
}

/// Decoded bytes per row, estimated from the footer: Arrow's maps, lists and strings take about
/// ten times the uncompressed Parquet size of spans (dictionary-encoded keys and names expand;
/// offsets per entry), measured on generated traffic.
fn row_bytes(meta: &ParquetMetaData) -> u64 {
    let rows: i64 = meta.row_groups().iter().map(|r| r.num_rows()).sum();
    let size: i64 = meta.row_groups().iter().map(|r| r.total_byte_size()).sum();
    if rows <= 0 {
        return 256;
    }
    (10 * size.max(0) as u64 / rows as u64).max(256)
}

struct InputInfo {
    path: PathBuf,
    rows: u64,
    /// Compressed bytes of the row groups.
    stored: u64,
    buffers: u64,
    row_bytes: u64,
}

fn inspect(path: &Path) -> Result<InputInfo, ArchiveError> {
    let file = open(path)?;
    let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| {
        ArchiveError::Verify(format!(
            "{}: not a readable Parquet file ({e}); move it out of the tier to let the hour compact",
            path.display()
        ))
    })?;
    let meta = b.metadata();
    Ok(InputInfo {
        path: path.to_path_buf(),
        rows: meta.file_metadata().num_rows().max(0) as u64,
        stored: meta
            .row_groups()
            .iter()
            .map(|r| r.compressed_size().max(0) as u64)
            .sum(),
        buffers: read_buffer_bytes(meta),
        row_bytes: row_bytes(meta),
    })
}

fn open(path: &Path) -> Result<File, ArchiveError> {
    File::open(path).map_err(|e| ArchiveError::Verify(format!("{}: {e}", path.display())))
}

/// Rows per input batch so that all `inputs` fit in `share` bytes, or `None` if even 64-row
/// batches do not.
fn batch_rows(inputs: &[&InputInfo], share: u64) -> Option<usize> {
    let fixed: u64 = inputs.iter().map(|i| i.buffers).sum();
    // Twice the estimate: decoded arrays grow by doubling while a batch is read.
    let per_row: u64 = 2 * inputs.iter().map(|i| i.row_bytes).sum::<u64>();
    let rows = share.checked_sub(fixed)? / per_row.max(1);
    if rows < 64 {
        return None;
    }
    Some(rows.min(8192) as usize)
}

/// Distinct trace ids expected in one output row group: rows that fit `row_group_bytes` at the
/// inputs' stored bytes per row, a quarter of them (traces have several spans), capped by the
/// inputs' rows.
fn trace_ids_per_row_group(group: &[&InputInfo], limits: &MergeLimits) -> u64 {
    let rows: u64 = group.iter().map(|i| i.rows).sum();
    let stored: u64 = group.iter().map(|i| i.stored).sum();
    if rows == 0 {
        return 64;
    }
    let per_row = (stored / rows).max(8);
    // At least 64, but never more than the rows (a group of fewer than 64 rows is valid).
    (limits.row_group_bytes / per_row / 4).max(64).min(rows)
}

/// Merges sorted `inputs` into sorted, deduplicated files in `work`, named
/// `<name>-NNNN.parquet`. `progress` is called with rows read so far.
pub fn merge(
    inputs: &[PathBuf],
    work: &Path,
    name: &str,
    limits: &MergeLimits,
    progress: &mut dyn FnMut(u64),
) -> Result<(Vec<MergedFile>, MergeStats), ArchiveError> {
    std::fs::create_dir_all(work)
        .map_err(|e| ArchiveError::Verify(format!("{}: {e}", work.display())))?;
    let avail = limits.memory_budget.saturating_sub(limits.row_group_bytes);
    // Three quarters of what is left for the inputs, an eighth for output batches in flight,
    // the rest for the writer's page buffers.
    let input_share = avail / 4 * 3;
    let mut infos: Vec<InputInfo> = inputs
        .iter()
        .map(|p| inspect(p))
        .collect::<Result<_, _>>()?;
    let mut stats = MergeStats {
        rows_in: infos.iter().map(|i| i.rows).sum(),
        ..Default::default()
    };
    let mut intermediates: Vec<PathBuf> = Vec::new();
    let mut round = 0usize;
    loop {
        round += 1;
        // Greedy groups of inputs that fit the share together (and fan_in).
        let mut groups: Vec<Vec<&InputInfo>> = vec![Vec::new()];
        for info in &infos {
            let g = groups
                .last_mut()
                .ok_or_else(|| ArchiveError::Verify("no group".into()))?;
            let mut trial = g.clone();
            trial.push(info);
            if !g.is_empty()
                && (trial.len() > limits.fan_in || batch_rows(&trial, input_share).is_none())
            {
                groups.push(vec![info]);
            } else {
                g.push(info);
            }
        }
        if let Some(lone) = groups
            .iter()
            .flatten()
            .find(|i| batch_rows(&[i], input_share).is_none())
        {
            return Err(ArchiveError::Verify(format!(
                "{}: needs more than the memory budget to read ({} of read buffers); raise archive.compaction.memory_budget",
                lone.path.display(),
                crate::settings::ByteSize(lone.buffers)
            )));
        }
        tracing::debug!(
            round,
            groups = groups.len(),
            inputs = infos.len(),
            buffers = infos.iter().map(|i| i.buffers).max().unwrap_or(0),
            row_bytes = infos.iter().map(|i| i.row_bytes).max().unwrap_or(0),
            input_share,
            "merge round"
        );
        if groups.len() > 1 && groups.iter().all(|g| g.len() < 2) {
            return Err(ArchiveError::Verify(format!(
                "the memory budget ({}) cannot hold two inputs at once (each needs {} of read buffers); raise archive.compaction.memory_budget",
                crate::settings::ByteSize(limits.memory_budget),
                crate::settings::ByteSize(infos.iter().map(|i| i.buffers).max().unwrap_or(0))
            )));
        }
        // Merges one group of inputs into files in `work`.
        let run = |group: &[&InputInfo],
                   tag: &str,
                   limits: &MergeLimits,
                   progress: &mut dyn FnMut(u64)|
         -> Result<Vec<MergedFile>, ArchiveError> {
            let rows = batch_rows(group, input_share).unwrap_or(64);
            let widest = group.iter().map(|i| i.row_bytes).max().unwrap_or(256);
            let out_rows = ((avail / 8) / widest).clamp(64, 8192) as usize;
            let paths: Vec<&Path> = group.iter().map(|i| i.path.as_path()).collect();
            let trace_ids = trace_ids_per_row_group(group, limits);
            merge_group(
                &paths, trace_ids, work, tag, limits, rows, out_rows, progress,
            )
        };
        if groups.len() == 1 {
            // The final round: cut into files of `file_bytes`.
            let files = run(&groups[0], name, limits, progress)?;
            stats.rows_out = files.iter().map(|f| f.entry.rows).sum();
            stats.rounds = round;
            for p in &intermediates {
                let _ = std::fs::remove_file(p);
            }
            return Ok((files, stats));
        }
        // An intermediate round: each group into one file, no size cut.
        let mut next: Vec<PathBuf> = Vec::new();
        let unbounded = MergeLimits {
            file_bytes: u64::MAX,
            ..*limits
        };
        for (gi, group) in groups.iter().enumerate() {
            let tag = format!("{name}-r{round}-g{gi:05}");
            let mut quiet = |_: u64| {};
            let p: &mut dyn FnMut(u64) = if round == 1 {
                &mut *progress
            } else {
                &mut quiet
            };
            let out = run(group, &tag, &unbounded, p)?;
            next.extend(out.into_iter().map(|f| f.path));
        }
        for p in intermediates.drain(..) {
            let _ = std::fs::remove_file(p);
        }
        intermediates = next.clone();
        infos = next.iter().map(|p| inspect(p)).collect::<Result<_, _>>()?;
    }
}

/// The sort key of a row.
type Key = ([u8; 16], i64, [u8; 8]);

struct Cursor {
    reader: ParquetRecordBatchReader,
    slot: usize,
    row: usize,
    len: usize,
    trace: BinaryArray,
    span: BinaryArray,
    kind: StringArray,
    start: Int64Array,
    name: String,
}

fn typed<T: Clone + 'static>(b: &RecordBatch, name: &str) -> Result<T, ArchiveError> {
    crate::archive::column::<T>(b, name).cloned()
}

impl Cursor {
    /// Loads the next batch into `pool`; false at the end of the input.
    fn load(&mut self, pool: &mut Vec<RecordBatch>) -> Result<bool, ArchiveError> {
        loop {
            let Some(batch) = self.reader.next() else {
                return Ok(false);
            };
            let batch = crate::archive::upgrade::conform(batch?)?;
            if batch.num_rows() == 0 {
                continue;
            }
            self.trace = typed(&batch, "trace_id")?;
            self.span = typed(&batch, "span_id")?;
            self.kind = typed(&batch, "kind")?;
            self.start = typed(&batch, "start_time_unix_nano")?;
            self.len = batch.num_rows();
            self.row = 0;
            self.slot = pool.len();
            pool.push(batch);
            return Ok(true);
        }
    }

    fn key(&self) -> Result<Key, ArchiveError> {
        Ok((
            id_at(&self.trace, self.row)?,
            self.start.value(self.row),
            id_at(&self.span, self.row)?,
        ))
    }
}

/// Accumulates an output file's catalog entry.
#[derive(Default)]
struct EntryAcc {
    rows: u64,
    min_trace: Option<[u8; 16]>,
    max_trace: [u8; 16],
    min_start: i64,
    max_start: i64,
    policies: BTreeMap<String, (u64, f64)>,
    adjusted: f64,
}

impl EntryAcc {
    fn add(&mut self, b: &RecordBatch) -> Result<(), ArchiveError> {
        let n = b.num_rows();
        if n == 0 {
            return Ok(());
        }
        let trace = column::<BinaryArray>(b, "trace_id")?;
        let start = column::<Int64Array>(b, "start_time_unix_nano")?;
        let policy = column::<StringArray>(b, "sampling_policy")?;
        let adjusted = column::<Float64Array>(b, "sampling_adjusted_count")?;
        if self.min_trace.is_none() {
            self.min_trace = Some(id_at(trace, 0)?);
            self.min_start = i64::MAX;
            self.max_start = i64::MIN;
        }
        self.max_trace = id_at(trace, n - 1)?;
        // Policies come in runs (the spans of a trace share one): one map update per run.
        let mut run: Option<(&str, u64, f64)> = None;
        for i in 0..n {
            let s = start.value(i);
            self.min_start = self.min_start.min(s);
            self.max_start = self.max_start.max(s);
            let a = if adjusted.is_null(i) {
                1.0
            } else {
                adjusted.value(i)
            };
            self.adjusted += a;
            let p = policy.value(i);
            match &mut run {
                Some((name, count, sum)) if *name == p => {
                    *count += 1;
                    *sum += a;
                }
                _ => {
                    if let Some(done) = run.replace((p, 1, a)) {
                        self.add_run(done);
                    }
                }
            }
        }
        if let Some(done) = run {
            self.add_run(done);
        }
        self.rows += n as u64;
        Ok(())
    }

    fn add_run(&mut self, (name, count, sum): (&str, u64, f64)) {
        let e = self.policies.entry(name.to_string()).or_default();
        e.0 += count;
        e.1 += sum;
    }

    fn finish(self, bytes: u64, crc32c: u32) -> FileEntry {
        FileEntry {
            hour_start_ms: 0,
            min_start_ns: self.min_start,
            max_start_ns: self.max_start,
            min_trace_id: hex::encode(self.min_trace.unwrap_or_default()),
            max_trace_id: hex::encode(self.max_trace),
            rows: self.rows,
            bytes,
            crc32c,
            policies: self
                .policies
                .iter()
                .map(|(k, v)| (k.clone(), v.0))
                .collect(),
            adjusted_by_policy: self.policies.into_iter().map(|(k, v)| (k, v.1)).collect(),
            adjusted_spans: self.adjusted,
            replaces: Vec::new(),
        }
    }
}

/// CRC32C and size of a local file, read in 1 MiB chunks.
pub fn file_crc32c(path: &Path) -> Result<(u32, u64), ArchiveError> {
    let mut f = open(path)?;
    let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| ArchiveError::Verify(format!("{}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        digest.update(&buf[..n]);
    }
    Ok((digest.finalize() as u32, size))
}

struct Output<'a> {
    /// Expected distinct trace ids per row group (sizes the bloom filter).
    trace_ids: u64,
    work: &'a Path,
    name: &'a str,
    limits: &'a MergeLimits,
    writer: Option<(PathBuf, ArrowWriter<BufWriter<File>>, EntryAcc)>,
    files: Vec<MergedFile>,
}

impl Output<'_> {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), ArchiveError> {
        if self.writer.is_none() {
            let path = self
                .work
                .join(format!("{}-{:04}.parquet", self.name, self.files.len()));
            let file = File::create(&path)
                .map_err(|e| ArchiveError::Verify(format!("{}: {e}", path.display())))?;
            let props = crate::archive::writer_properties(
                usize::MAX,
                self.trace_ids,
                crate::archive::schema::COMPACTED_ZSTD_LEVEL,
            );
            let w = ArrowWriter::try_new(BufWriter::new(file), span_schema(), Some(props))?;
            self.writer = Some((path, w, EntryAcc::default()));
        }
        if let Some((_, w, acc)) = self.writer.as_mut() {
            w.write(batch)?;
            acc.add(batch)?;
        }
        Ok(())
    }

    /// Whether the open row group or file passed its target.
    fn over_target(&self) -> bool {
        self.writer.as_ref().is_some_and(|(_, w, _)| {
            w.in_progress_size() as u64 >= self.limits.row_group_bytes
                || (w.bytes_written() + w.in_progress_size()) as u64 >= self.limits.file_bytes
        })
    }

    /// At a trace boundary: ends the row group and, past the file target, the file.
    fn cut(&mut self) -> Result<(), ArchiveError> {
        let file_full = self.writer.as_ref().is_some_and(|(_, w, _)| {
            (w.bytes_written() + w.in_progress_size()) as u64 >= self.limits.file_bytes
        });
        if file_full {
            self.close()
        } else {
            if let Some((_, w, _)) = self.writer.as_mut() {
                w.flush()?;
            }
            Ok(())
        }
    }

    fn close(&mut self) -> Result<(), ArchiveError> {
        if let Some((path, w, acc)) = self.writer.take() {
            let inner = w.into_inner()?;
            let file = inner
                .into_inner()
                .map_err(|e| ArchiveError::Verify(format!("{}: {e}", path.display())))?;
            file.sync_all()
                .map_err(|e| ArchiveError::Verify(format!("{}: {e}", path.display())))?;
            let (crc, bytes) = file_crc32c(&path)?;
            self.files.push(MergedFile {
                path,
                entry: acc.finish(bytes, crc),
            });
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn merge_group(
    inputs: &[&Path],
    trace_ids: u64,
    work: &Path,
    name: &str,
    limits: &MergeLimits,
    batch_rows: usize,
    out_rows: usize,
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<MergedFile>, ArchiveError> {
    let mut pool: Vec<RecordBatch> = Vec::new();
    let mut cursors: Vec<Cursor> = Vec::with_capacity(inputs.len());
    let mut heap: BinaryHeap<std::cmp::Reverse<(Key, usize)>> = BinaryHeap::new();
    for p in inputs {
        let reader = ParquetRecordBatchReaderBuilder::try_new(open(p)?)?
            .with_batch_size(batch_rows)
            .build()?;
        let mut c = Cursor {
            reader,
            slot: 0,
            row: 0,
            len: 0,
            trace: BinaryArray::from(Vec::<&[u8]>::new()),
            span: BinaryArray::from(Vec::<&[u8]>::new()),
            kind: StringArray::from(Vec::<&str>::new()),
            start: Int64Array::from(Vec::<i64>::new()),
            name: p.display().to_string(),
        };
        if c.load(&mut pool)? {
            heap.push(std::cmp::Reverse((c.key()?, cursors.len())));
            cursors.push(c);
        }
    }
    let mut out = Output {
        trace_ids,
        work,
        name,
        limits,
        writer: None,
        files: Vec::new(),
    };
    let mut picks: Vec<(usize, usize)> = Vec::with_capacity(out_rows);
    let mut seen: HashSet<([u8; 8], SpanKind)> = HashSet::new();
    let mut current: Option<[u8; 16]> = None;
    let mut cut_pending = false;
    let mut read = 0u64;
    let flush = |picks: &mut Vec<(usize, usize)>,
                 pool: &mut Vec<RecordBatch>,
                 cursors: &mut [Cursor],
                 out: &mut Output<'_>|
     -> Result<(), ArchiveError> {
        if !picks.is_empty() {
            let refs: Vec<&RecordBatch> = pool.iter().collect();
            let batch = arrow_select::interleave::interleave_record_batch(&refs, picks)?;
            out.write(&batch)?;
            picks.clear();
        }
        // Keep only the batches the cursors still read from.
        let mut kept: Vec<RecordBatch> = Vec::with_capacity(cursors.len());
        for c in cursors.iter_mut() {
            if c.row < c.len {
                let b = pool[c.slot].clone();
                c.slot = kept.len();
                kept.push(b);
            }
        }
        *pool = kept;
        Ok(())
    };
    while let Some(std::cmp::Reverse((key, ci))) = heap.pop() {
        if current != Some(key.0) {
            if cut_pending {
                flush(&mut picks, &mut pool, &mut cursors, &mut out)?;
                out.cut()?;
                cut_pending = false;
            }
            current = Some(key.0);
            seen.clear();
        }
        let c = &mut cursors[ci];
        if seen.insert((key.2, SpanKind::from_name(c.kind.value(c.row)))) {
            picks.push((c.slot, c.row));
        }
        read += 1;
        if read.is_multiple_of(65_536) {
            progress(read);
        }
        c.row += 1;
        let more = if c.row < c.len {
            true
        } else {
            // Write what was picked first, so the finished batch is released before the next
            // one is read: one batch per input at a time.
            flush(&mut picks, &mut pool, &mut cursors, &mut out)?;
            if out.over_target() {
                cut_pending = true;
            }
            cursors[ci].load(&mut pool)?
        };
        let c = &mut cursors[ci];
        if more {
            let next = c.key()?;
            if next < key {
                return Err(ArchiveError::Verify(format!(
                    "{} is not sorted by (trace id, start time, span id) at row {}; it cannot be merged",
                    c.name, c.row
                )));
            }
            heap.push(std::cmp::Reverse((next, ci)));
        }
        if picks.len() >= out_rows {
            flush(&mut picks, &mut pool, &mut cursors, &mut out)?;
            if out.over_target() {
                cut_pending = true;
            }
        }
    }
    flush(&mut picks, &mut pool, &mut cursors, &mut out)?;
    out.close()?;
    progress(read);
    Ok(out.files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_per_row_group_handles_small_groups() {
        let info = |rows, stored| InputInfo {
            path: PathBuf::new(),
            rows,
            stored,
            buffers: 0,
            row_bytes: 0,
        };
        let limits = MergeLimits {
            memory_budget: 1 << 30,
            row_group_bytes: 1 << 20,
            file_bytes: 1 << 30,
            fan_in: 8,
        };
        let (small, big) = (info(36, 36 * 100), info(1_000_000, 100_000_000));
        assert_eq!(trace_ids_per_row_group(&[&small], &limits), 36);
        assert_eq!(trace_ids_per_row_group(&[&big], &limits), 2621);
        assert_eq!(
            trace_ids_per_row_group(&[&info(100, 100 * 1_000_000)], &limits),
            64
        );
    }

    #[test]
    fn batch_rows_fit_the_share_or_refuse() {
        let info = |buffers, row_bytes| InputInfo {
            path: PathBuf::new(),
            rows: 0,
            stored: 0,
            buffers,
            row_bytes,
        };
        let a = info(1 << 20, 500);
        let b = info(1 << 20, 500);
        assert_eq!(batch_rows(&[&a, &b], 64 << 20), Some(8192));
        let rows = batch_rows(&[&a, &b], 3 << 20).unwrap();
        assert!(rows * 2000 + (2 << 20) <= 3 << 20 && rows >= 64);
        assert_eq!(batch_rows(&[&a, &b], 2 << 20), None);
    }
}
