//! `tracesift trace <TRACE_ID>`: one trace from the archive, as a span tree.
//!
//! Every Parquet file of the tier is checked by its footer first: a row group whose `trace_id`
//! statistics (min/max; files are sorted by trace id) cannot hold the id is skipped without
//! reading its pages; only candidate row groups are read and filtered.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow_array::{Array, FixedSizeBinaryArray, Int64Array, RecordBatch, StringArray};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::statistics::Statistics;

use crate::archive::ArchiveError;
use crate::otlp::TraceId;

/// One span of a looked-up trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanRow {
    /// Span id.
    pub span_id: [u8; 8],
    /// Parent span id (`None` for a root).
    pub parent: Option<[u8; 8]>,
    /// Span name.
    pub name: String,
    /// `service.name`.
    pub service: String,
    /// Start, Unix ns.
    pub start_ns: i64,
    /// Duration, ns.
    pub duration_ns: i64,
    /// `unset`, `ok` or `error`.
    pub status: String,
    /// Span kind.
    pub kind: String,
}

/// What a lookup read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LookupStats {
    /// Files whose footer was read.
    pub files: usize,
    /// Row groups read (the rest were skipped by statistics).
    pub row_groups_read: usize,
    /// Row groups skipped.
    pub row_groups_skipped: usize,
}

fn may_hold(stats: Option<&Statistics>, id: &[u8; 16]) -> bool {
    match stats {
        Some(Statistics::FixedLenByteArray(s)) => match (s.min_opt(), s.max_opt()) {
            (Some(min), Some(max)) => min.data() <= &id[..] && &id[..] <= max.data(),
            _ => true,
        },
        _ => true,
    }
}

/// Every span of `trace_id` in the tier, each (span id, kind) once, by start time.
pub async fn find_trace(
    store: Arc<dyn ObjectStore>,
    trace_id: TraceId,
) -> Result<(Vec<SpanRow>, LookupStats), ArchiveError> {
    let prefix = Path::from(format!("spans/{}", crate::archive::SCHEMA_VERSION));
    let files: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
    let mut stats = LookupStats::default();
    let mut out: HashMap<([u8; 8], String), SpanRow> = HashMap::new();
    for f in files {
        if !f.location.as_ref().ends_with(".parquet") {
            continue;
        }
        let bytes = store.get(&f.location).await?.bytes().await?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
        stats.files += 1;
        let groups: Vec<usize> = builder
            .metadata()
            .row_groups()
            .iter()
            .enumerate()
            .filter(|(_, rg)| may_hold(rg.column(0).statistics(), &trace_id.0))
            .map(|(i, _)| i)
            .collect();
        let total = builder.metadata().num_row_groups();
        stats.row_groups_skipped += total - groups.len();
        if groups.is_empty() {
            continue;
        }
        stats.row_groups_read += groups.len();
        for batch in builder.with_row_groups(groups).build()? {
            collect(&batch?, &trace_id, &mut out)?;
        }
    }
    let mut spans: Vec<SpanRow> = out.into_values().collect();
    spans.sort_by_key(|s| (s.start_ns, s.span_id));
    Ok((spans, stats))
}

fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T, ArchiveError> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| ArchiveError::Verify(format!("column {name} missing or mistyped")))
}

/// An 8-byte id column value (the schema says FixedSizeBinary(8); anything else is corruption).
fn id8(v: &[u8]) -> Result<[u8; 8], ArchiveError> {
    v.try_into()
        .map_err(|_| ArchiveError::Verify(format!("span id of {} bytes", v.len())))
}

fn collect(
    b: &RecordBatch,
    id: &TraceId,
    out: &mut HashMap<([u8; 8], String), SpanRow>,
) -> Result<(), ArchiveError> {
    let trace = col::<FixedSizeBinaryArray>(b, "trace_id")?;
    let span = col::<FixedSizeBinaryArray>(b, "span_id")?;
    let parent = col::<FixedSizeBinaryArray>(b, "parent_span_id")?;
    let name = col::<StringArray>(b, "name")?;
    let service = col::<StringArray>(b, "service_name")?;
    let kind = col::<StringArray>(b, "kind")?;
    let status = col::<StringArray>(b, "status_code")?;
    let duration = col::<Int64Array>(b, "duration_ns")?;
    let start = b
        .column_by_name("start_time")
        .and_then(|c| {
            c.as_any()
                .downcast_ref::<arrow_array::TimestampNanosecondArray>()
        })
        .ok_or_else(|| ArchiveError::Verify("column start_time missing or mistyped".into()))?;
    for i in 0..b.num_rows() {
        if trace.value(i) != id.0 {
            continue;
        }
        let sid = id8(span.value(i))?;
        let row = SpanRow {
            span_id: sid,
            parent: if parent.is_null(i) {
                None
            } else {
                Some(id8(parent.value(i))?)
            },
            name: name.value(i).to_string(),
            service: service.value(i).to_string(),
            start_ns: start.value(i),
            duration_ns: duration.value(i),
            status: status.value(i).to_string(),
            kind: kind.value(i).to_string(),
        };
        out.insert((sid, row.kind.clone()), row);
    }
    Ok(())
}

/// The trace as an indented tree: `service: name (kind) 12.3 ms [ERROR]`, children under their
/// parent by start time; spans whose parent is missing are shown at the top level.
pub fn render_tree(spans: &[SpanRow]) -> String {
    let ids: std::collections::HashSet<[u8; 8]> = spans.iter().map(|s| s.span_id).collect();
    let mut children: HashMap<Option<[u8; 8]>, Vec<&SpanRow>> = HashMap::new();
    for s in spans {
        let parent = s.parent.filter(|p| ids.contains(p));
        children.entry(parent).or_default().push(s);
    }
    let mut out = String::new();
    fn walk(
        out: &mut String,
        children: &HashMap<Option<[u8; 8]>, Vec<&SpanRow>>,
        at: Option<[u8; 8]>,
        depth: usize,
    ) {
        let Some(list) = children.get(&at) else {
            return;
        };
        for s in list {
            let _ = writeln!(
                out,
                "{}{}: {} ({}) {:.1} ms{}",
                "  ".repeat(depth),
                s.service,
                s.name,
                s.kind,
                s.duration_ns as f64 / 1e6,
                if s.status == "error" { "  [ERROR]" } else { "" }
            );
            walk(out, children, Some(s.span_id), depth + 1);
        }
    }
    walk(&mut out, &children, None, 0);
    out
}
