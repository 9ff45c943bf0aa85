//! `tracesift trace <TRACE_ID>`: one trace from every tier, as a span tree or OTLP/JSON.
//!
//! Candidates: every Parquet file of the hot tier (listed: it holds recent hours only) and the
//! manifest entries of the other tiers whose trace-id range holds the id (no listing). Each
//! candidate is read with ranged requests only: its footer and page index, then per row group
//! the `trace_id` statistics (files are sorted by trace id), then the row group's bloom filter,
//! then only the pages whose `trace_id` min/max can hold the id. Rows are deduplicated on
//! (span id, kind) across files and tiers, so a file caught mid-move (published in the next
//! tier, not yet deleted here) shows each span once. A file deleted between reading a manifest
//! and reading the file (a move finishing) makes the lookup start over once with fresh
//! manifests.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::ops::Range;

use arrow_array::{Array, BinaryArray, Int64Array, RecordBatch, StringArray};
use futures::TryStreamExt;
use object_store::path::Path;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, RowSelection};
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::statistics::Statistics;

use crate::archive::tiering::{ObjectReader, Tier};
use crate::archive::{as_array, column, field, id_at, ArchiveError};
use crate::otlp::{SpanKind, StatusCode, TraceId};

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
    /// Tier it was read from.
    pub tier: String,
    /// Where its full row is: (index into [`Found::batches`], row).
    pub at: (usize, usize),
}

/// What a lookup read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LookupStats {
    /// Tiers searched.
    pub tiers: usize,
    /// Files whose footer was read.
    pub files: usize,
    /// Manifest entries passed over by their trace-id range (no read at all).
    pub files_skipped_by_manifest: usize,
    /// Row groups read.
    pub row_groups_read: usize,
    /// Row groups skipped by statistics.
    pub row_groups_skipped: usize,
    /// Row groups skipped by their bloom filter.
    pub row_groups_skipped_by_bloom: usize,
    /// Rows decoded (only pages whose min/max can hold the id).
    pub rows_read: usize,
    /// Files that vanished during the lookup (a concurrent move or retention).
    pub files_gone: usize,
}

/// A looked-up trace.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// Its spans, each (span id, kind) once, by start time.
    pub spans: Vec<SpanRow>,
    /// The full rows the spans point into.
    pub batches: Vec<RecordBatch>,
    /// What was read.
    pub stats: LookupStats,
}

fn may_hold(stats: Option<&Statistics>, id: &[u8; 16]) -> bool {
    match stats {
        // v2 ids are BYTE_ARRAY, v1's FIXED_LEN_BYTE_ARRAY.
        Some(Statistics::ByteArray(s)) => match (s.min_opt(), s.max_opt()) {
            (Some(min), Some(max)) => min.data() <= &id[..] && &id[..] <= max.data(),
            _ => true,
        },
        Some(Statistics::FixedLenByteArray(s)) => match (s.min_opt(), s.max_opt()) {
            (Some(min), Some(max)) => min.data() <= &id[..] && &id[..] <= max.data(),
            _ => true,
        },
        _ => true,
    }
}

/// Row ranges of row group `rg` whose `trace_id` pages can hold `id` (all rows without a page
/// index).
fn candidate_rows(meta: &ParquetMetaData, rg: usize, id: &[u8; 16]) -> Vec<Range<usize>> {
    let rows = meta.row_group(rg).num_rows().max(0) as usize;
    let all: Vec<Range<usize>> = std::iter::once(0..rows).collect();
    let Some(index) = meta.page_index() else {
        return all;
    };
    let (
        Some(ColumnIndexMetaData::BYTE_ARRAY(ci) | ColumnIndexMetaData::FIXED_LEN_BYTE_ARRAY(ci)),
        Some(oi),
    ) = (index.column_index(rg, 0), index.offset_index(rg, 0))
    else {
        return all;
    };
    let pages = oi.page_locations();
    let mut out: Vec<Range<usize>> = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        let first = page.first_row_index.max(0) as usize;
        let end = pages
            .get(i + 1)
            .map(|p| p.first_row_index.max(0) as usize)
            .unwrap_or(rows);
        let hit = match (ci.min_value(i), ci.max_value(i)) {
            (Some(min), Some(max)) => min <= &id[..] && &id[..] <= max,
            _ => false,
        };
        if hit && first < end {
            match out.last_mut() {
                Some(r) if r.end == first => r.end = end,
                _ => out.push(first..end),
            }
        }
    }
    out
}

/// Every span of `trace_id` in every tier.
pub async fn find_trace(tiers: &[Tier], trace_id: TraceId) -> Result<Found, ArchiveError> {
    let first = find_once(tiers, &trace_id).await?;
    if first.stats.files_gone == 0 {
        return Ok(first);
    }
    // A move or retention ran meanwhile: once more, with fresh manifests.
    find_once(tiers, &trace_id).await
}

async fn find_once(tiers: &[Tier], id: &TraceId) -> Result<Found, ArchiveError> {
    let mut found = Found::default();
    let mut seen: HashSet<([u8; 8], SpanKind)> = HashSet::new();
    for (ti, tier) in tiers.iter().enumerate() {
        found.stats.tiers += 1;
        let manifest = tier.manifest().await?;
        let mut candidates: Vec<(Path, u64)> = Vec::new();
        if ti == 0 {
            for (path, size) in crate::archive::tiering::list_parquet(&tier.store).await? {
                match manifest.files.get(path.as_ref()) {
                    Some(e) if !e.may_hold(&id.0) => found.stats.files_skipped_by_manifest += 1,
                    _ => candidates.push((path, size)),
                }
            }
        } else {
            for (p, e) in &manifest.files {
                if e.may_hold(&id.0) {
                    candidates.push((Path::from(p.as_str()), e.bytes));
                } else {
                    found.stats.files_skipped_by_manifest += 1;
                }
            }
        }
        for (path, size) in candidates {
            match read_file(tier, &path, size, id, &mut found, &mut seen).await {
                Ok(()) => {}
                Err(ArchiveError::Store(object_store::Error::NotFound { .. })) => {
                    found.stats.files_gone += 1;
                }
                Err(ArchiveError::Parquet(parquet::errors::ParquetError::External(e)))
                    if matches!(
                        e.downcast_ref::<object_store::Error>(),
                        Some(object_store::Error::NotFound { .. })
                    ) =>
                {
                    found.stats.files_gone += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
    found.spans.sort_by_key(|s| (s.start_ns, s.span_id));
    Ok(found)
}

async fn read_file(
    tier: &Tier,
    path: &Path,
    size: u64,
    id: &TraceId,
    found: &mut Found,
    seen: &mut HashSet<([u8; 8], SpanKind)>,
) -> Result<(), ArchiveError> {
    let reader = ObjectReader::new(tier.store.clone(), path.clone(), size);
    let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
    let mut builder = ParquetRecordBatchStreamBuilder::new_with_options(reader, options).await?;
    found.stats.files += 1;
    let meta = builder.metadata().clone();
    let mut groups: Vec<usize> = Vec::new();
    for (rg, g) in meta.row_groups().iter().enumerate() {
        if !may_hold(g.column(0).statistics(), &id.0) {
            found.stats.row_groups_skipped += 1;
            continue;
        }
        if let Some(bloom) = builder.get_row_group_column_bloom_filter(rg, 0).await? {
            if !bloom.check(&id.0[..]) {
                found.stats.row_groups_skipped_by_bloom += 1;
                continue;
            }
        }
        groups.push(rg);
    }
    if groups.is_empty() {
        return Ok(());
    }
    found.stats.row_groups_read += groups.len();
    // Select only the pages that can hold the id, row groups concatenated.
    let mut ranges: Vec<Range<usize>> = Vec::new();
    let mut offset = 0usize;
    for &rg in &groups {
        for r in candidate_rows(&meta, rg, &id.0) {
            ranges.push(offset + r.start..offset + r.end);
        }
        offset += meta.row_group(rg).num_rows().max(0) as usize;
    }
    if ranges.is_empty() {
        return Ok(());
    }
    let selection = RowSelection::from_consecutive_ranges(ranges.into_iter(), offset);
    let mut stream = builder
        .with_row_groups(groups)
        .with_row_selection(selection)
        .build()?;
    while let Some(batch) = stream.try_next().await? {
        found.stats.rows_read += batch.num_rows();
        collect(&batch, id, &tier.name, found, seen)?;
    }
    Ok(())
}

fn collect(
    b: &RecordBatch,
    id: &TraceId,
    tier: &str,
    found: &mut Found,
    seen: &mut HashSet<([u8; 8], SpanKind)>,
) -> Result<(), ArchiveError> {
    let b = crate::archive::upgrade::conform(b.clone())?;
    let trace = column::<BinaryArray>(&b, "trace_id")?;
    let keep: arrow_array::BooleanArray = (0..b.num_rows())
        .map(|i| Some(trace.value(i) == id.0))
        .collect();
    let b = arrow_select::filter::filter_record_batch(&b, &keep)?;
    if b.num_rows() == 0 {
        return Ok(());
    }
    let span = column::<BinaryArray>(&b, "span_id")?;
    let parent = column::<BinaryArray>(&b, "parent_span_id")?;
    let name = column::<StringArray>(&b, "name")?;
    let service = column::<StringArray>(&b, "service_name")?;
    let kind = column::<StringArray>(&b, "kind")?;
    let status = column::<StringArray>(&b, "status_code")?;
    let duration = column::<Int64Array>(&b, "duration_ns")?;
    let start = column::<Int64Array>(&b, "start_time_unix_nano")?;
    let bi = found.batches.len();
    for i in 0..b.num_rows() {
        let sid = id_at(span, i)?;
        if !seen.insert((sid, SpanKind::from_name(kind.value(i)))) {
            continue;
        }
        found.spans.push(SpanRow {
            span_id: sid,
            parent: if parent.is_null(i) {
                None
            } else {
                Some(id_at(parent, i)?)
            },
            name: name.value(i).to_string(),
            service: service.value(i).to_string(),
            start_ns: start.value(i),
            duration_ns: duration.value(i),
            status: status.value(i).to_string(),
            kind: kind.value(i).to_string(),
            tier: tier.to_string(),
            at: (bi, i),
        });
    }
    found.batches.push(b);
    Ok(())
}

/// The trace as an indented tree: `service: name (kind) 12.3 ms [ERROR]`, children under their
/// parent by start time; spans whose parent is missing are shown at the top level.
pub fn render_tree(spans: &[SpanRow]) -> String {
    render_tree_styled(spans, false)
}

/// Indentation for a depth; past 32 levels the depth is written out instead.
fn indent(depth: usize) -> String {
    if depth <= 32 {
        "  ".repeat(depth)
    } else {
        format!("{}[{depth}] ", "  ".repeat(32))
    }
}

/// Span data as it may reach a terminal: control characters (escape sequences that would
/// move the cursor, retitle the window or hide text, C1 controls, bidi overrides) written as
/// `\u{1b}`-style escapes; everything else as it is.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    };
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// [`render_tree`], with error spans in bold red when `color` (a terminal).
///
/// Span data cannot make this loop or overflow the stack: the walk is iterative, each span is
/// printed once, and spans only reachable through a cycle of parents (a span that is its own
/// parent, under another kind or not) are printed at the top level after the rest.
pub fn render_tree_styled(spans: &[SpanRow], color: bool) -> String {
    let ids: std::collections::HashSet<[u8; 8]> = spans.iter().map(|s| s.span_id).collect();
    let mut children: HashMap<Option<[u8; 8]>, Vec<usize>> = HashMap::new();
    for (i, s) in spans.iter().enumerate() {
        let parent = s.parent.filter(|p| ids.contains(p));
        children.entry(parent).or_default().push(i);
    }
    let mut out = String::new();
    let mut printed = vec![false; spans.len()];
    let line = |out: &mut String, s: &SpanRow, depth: usize| {
        let err = s.status == "error";
        let (on, off) = if err && color {
            ("\x1b[1;31m", "\x1b[0m")
        } else {
            ("", "")
        };
        let _ = writeln!(
            out,
            "{on}{}{}: {} ({}) {:.1} ms{}{off}",
            indent(depth),
            printable(&s.service),
            printable(&s.name),
            printable(&s.kind),
            s.duration_ns as f64 / 1e6,
            if err { "  [ERROR]" } else { "" }
        );
    };
    let walk = |out: &mut String, top: Vec<usize>, printed: &mut Vec<bool>| {
        // (span, depth), children pushed in reverse so they print in order.
        let mut stack: Vec<(usize, usize)> = top.into_iter().rev().map(|i| (i, 0)).collect();
        while let Some((i, depth)) = stack.pop() {
            if printed[i] {
                continue;
            }
            printed[i] = true;
            line(out, &spans[i], depth);
            if let Some(kids) = children.get(&Some(spans[i].span_id)) {
                stack.extend(
                    kids.iter()
                        .rev()
                        .filter(|&&k| !printed[k])
                        .map(|&k| (k, depth + 1)),
                );
            }
        }
    };
    let roots = children.get(&None).cloned().unwrap_or_default();
    walk(&mut out, roots, &mut printed);
    for i in 0..spans.len() {
        if !printed[i] {
            walk(&mut out, vec![i], &mut printed);
        }
    }
    out
}

fn map_pairs(m: &arrow_array::MapArray, i: usize) -> Result<Vec<(String, String)>, ArchiveError> {
    if m.is_null(i) {
        return Ok(Vec::new());
    }
    let entries = m.value(i);
    let keys = as_array::<StringArray>(entries.column(0), "map keys")?;
    let values = as_array::<StringArray>(entries.column(1), "map values")?;
    Ok((0..entries.len())
        .map(|j| (keys.value(j).to_string(), values.value(j).to_string()))
        .collect())
}

/// OTLP/JSON attributes. The archive keeps values as rendered text, so every value comes back
/// as a `stringValue` (numbers, booleans and arrays as their JSON text).
fn json_attrs(pairs: &[(String, String)]) -> serde_json::Value {
    serde_json::Value::Array(
        pairs
            .iter()
            .map(|(k, v)| serde_json::json!({"key": k, "value": {"stringValue": v}}))
            .collect(),
    )
}

/// The trace as an OTLP/JSON `TracesData` document (`resourceSpans` grouped by resource and
/// scope; ids as hex, times as decimal strings, enums as numbers, as the OTLP/JSON mapping
/// specifies).
pub fn render_otlp_json(found: &Found) -> Result<serde_json::Value, ArchiveError> {
    use serde_json::{json, Map, Value};
    type ScopeKey = (String, String);
    type Scopes = Vec<(ScopeKey, Vec<Value>)>;
    // resource attributes (as JSON text, for grouping) -> scope -> spans
    let mut groups: Vec<(String, Value, Scopes)> = Vec::new();
    for s in &found.spans {
        let b = &found.batches[s.at.0];
        let i = s.at.1;
        let res = map_pairs(
            column::<arrow_array::MapArray>(b, "resource_attributes")?,
            i,
        )?;
        let attrs = map_pairs(column::<arrow_array::MapArray>(b, "attributes")?, i)?;
        let scope: ScopeKey = (
            column::<StringArray>(b, "scope_name")?.value(i).to_string(),
            column::<StringArray>(b, "scope_version")?
                .value(i)
                .to_string(),
        );
        let end = column::<Int64Array>(b, "end_time_unix_nano")?.value(i);
        let mut span = Map::new();
        span.insert(
            "traceId".into(),
            json!(hex::encode(column::<BinaryArray>(b, "trace_id")?.value(i))),
        );
        span.insert("spanId".into(), json!(hex::encode(s.span_id)));
        if let Some(p) = s.parent {
            span.insert("parentSpanId".into(), json!(hex::encode(p)));
        }
        let ts = column::<StringArray>(b, "trace_state")?.value(i);
        if !ts.is_empty() {
            span.insert("traceState".into(), json!(ts));
        }
        span.insert("name".into(), json!(s.name));
        span.insert("kind".into(), json!(SpanKind::from_name(&s.kind).as_i32()));
        span.insert("startTimeUnixNano".into(), json!(s.start_ns.to_string()));
        span.insert("endTimeUnixNano".into(), json!(end.to_string()));
        span.insert("attributes".into(), json_attrs(&attrs));
        // Events.
        let events = column::<arrow_array::ListArray>(b, "events")?;
        let mut ev = Vec::new();
        if !events.is_null(i) {
            let list = events.value(i);
            let st = list
                .as_any()
                .downcast_ref::<arrow_array::StructArray>()
                .ok_or_else(|| ArchiveError::Verify("events are not structs".into()))?;
            let time = field::<Int64Array>(st, "time_unix_nano")?;
            let name = field::<StringArray>(st, "name")?;
            let ea = field::<arrow_array::MapArray>(st, "attributes")?;
            for j in 0..st.len() {
                ev.push(json!({
                    "timeUnixNano": time.value(j).to_string(),
                    "name": name.value(j),
                    "attributes": json_attrs(&map_pairs(ea, j)?),
                }));
            }
        }
        if !ev.is_empty() {
            span.insert("events".into(), Value::Array(ev));
        }
        // Links.
        let links = column::<arrow_array::ListArray>(b, "links")?;
        let mut lk = Vec::new();
        if !links.is_null(i) {
            let list = links.value(i);
            let st = list
                .as_any()
                .downcast_ref::<arrow_array::StructArray>()
                .ok_or_else(|| ArchiveError::Verify("links are not structs".into()))?;
            let tid = field::<BinaryArray>(st, "trace_id")?;
            let sid = field::<BinaryArray>(st, "span_id")?;
            let lts = field::<StringArray>(st, "trace_state")?;
            let la = field::<arrow_array::MapArray>(st, "attributes")?;
            for j in 0..st.len() {
                let mut l = Map::new();
                l.insert("traceId".into(), json!(hex::encode(tid.value(j))));
                l.insert("spanId".into(), json!(hex::encode(sid.value(j))));
                if !lts.is_null(j) && !lts.value(j).is_empty() {
                    l.insert("traceState".into(), json!(lts.value(j)));
                }
                l.insert("attributes".into(), json_attrs(&map_pairs(la, j)?));
                lk.push(Value::Object(l));
            }
        }
        if !lk.is_empty() {
            span.insert("links".into(), Value::Array(lk));
        }
        let mut status = Map::new();
        let code = StatusCode::from_name(&s.status).as_i32();
        if code != 0 {
            status.insert("code".into(), json!(code));
        }
        let msg = column::<StringArray>(b, "status_message")?.value(i);
        if !msg.is_empty() {
            status.insert("message".into(), json!(msg));
        }
        span.insert("status".into(), Value::Object(status));
        let res_key = serde_json::to_string(&res).unwrap_or_default();
        let gi = match groups.iter().position(|g| g.0 == res_key) {
            Some(g) => g,
            None => {
                groups.push((res_key, json_attrs(&res), Vec::new()));
                groups.len() - 1
            }
        };
        let scopes = &mut groups[gi].2;
        match scopes.iter_mut().find(|(k, _)| *k == scope) {
            Some((_, spans)) => spans.push(Value::Object(span)),
            None => scopes.push((scope, vec![Value::Object(span)])),
        }
    }
    let resource_spans: Vec<Value> = groups
        .into_iter()
        .map(|(_, attrs, scopes)| {
            json!({
                "resource": {"attributes": attrs},
                "scopeSpans": scopes.into_iter().map(|((name, version), spans)| json!({
                    "scope": {"name": name, "version": version},
                    "spans": spans,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({ "resourceSpans": resource_spans }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u8, parent: Option<u8>, kind: &str) -> SpanRow {
        SpanRow {
            span_id: [id; 8],
            parent: parent.map(|p| [p; 8]),
            name: format!("op{id}"),
            service: "svc".into(),
            start_ns: i64::from(id),
            duration_ns: 1_000_000,
            status: "unset".into(),
            kind: kind.into(),
            tier: "hot".into(),
            at: (0, 0),
        }
    }

    #[test]
    fn cycles_and_self_parents_render_once_each() {
        // 1 is the root; 2 is its own parent under another kind of the same id; 3 and 4 are
        // each other's parent (unreachable from a root).
        let spans = vec![
            row(1, None, "server"),
            row(2, Some(1), "client"),
            row(2, Some(2), "server"),
            row(3, Some(4), "internal"),
            row(4, Some(3), "internal"),
        ];
        let out = render_tree(&spans);
        assert_eq!(out.lines().count(), spans.len(), "{out}");
        for id in 1..=4 {
            assert!(out.contains(&format!("op{id} ")), "{out}");
        }
        // A long chain does not recurse.
        let chain: Vec<SpanRow> = (0..200_000u32)
            .map(|i| {
                let mut r = row(0, None, "internal");
                r.span_id = u64::from(i + 1).to_be_bytes();
                r.parent = (i > 0).then(|| u64::from(i).to_be_bytes());
                r
            })
            .collect();
        assert_eq!(render_tree(&chain).lines().count(), chain.len());
    }

    #[test]
    fn escape_sequences_in_span_data_are_printed_escaped() {
        let mut r = row(1, None, "server");
        r.name = "GET /\x1b]0;owned\x07\x1b[2J\u{202e}cba".into();
        r.service = "svc\nfake: line".into();
        let out = render_tree_styled(&[r], true);
        assert!(
            !out.contains('\x1b') && !out.contains('\x07') && !out.contains('\u{202e}'),
            "{out:?}"
        );
        assert_eq!(out.lines().count(), 1, "{out:?}");
        assert!(
            out.contains("svc\\u{a}fake: line: GET /\\u{1b}]0;owned\\u{7}\\u{1b}[2J\\u{202e}cba"),
            "{out}"
        );
        assert_eq!(printable("plain: ünïcode ✓"), "plain: ünïcode ✓");
    }
}
