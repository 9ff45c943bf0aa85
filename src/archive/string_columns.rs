//! The hot segment's string columns (the attribute maps `resource_attributes` and
//! `attributes`, and the top-level strings: `name`, `service_name`, `kind`, the semantic
//! convention columns, …), written as Parquet column chunks by hand.
//!
//! Handed Arrow strings, the Parquet writer interns every string of every row again (hashing and
//! comparing each) and compares it with the page's minimum and maximum, and
//! `resource_attributes` repeats ten or so entries of its resource on every span. Here the
//! encoder gives each distinct string of a segment an id once ([`Strings`]): a row holds ids, a
//! resource's entries and columns are ids made once and repeated. A column chunk's dictionary is
//! those ids renumbered in order of first use (a slot lookup per value, no hash), and a page's
//! minimum and maximum are compared once per distinct value. The chunk written is byte for byte
//! what the Arrow writer writes with the same writer properties — dictionary page, v1 data pages
//! with RLE levels and hybrid-encoded indices, zstd per page, statistics truncated as it does,
//! column index, offset index — which `tests/encoder_golden.rs` checks against a reference
//! written by the Arrow writer. Where a chunk's strings outgrow the dictionary page limit, the
//! Arrow writer switches to plain pages part-way and this writer writes the whole chunk plain:
//! the bytes then differ, the values and every reader's view of them do not.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use bytes::Bytes;
use parquet::basic::{BoundaryOrder, Compression, Encoding, EncodingMask, PageType};
use parquet::column::page::{CompressedPage, Page, PageWriteSpec, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::data_type::ByteArray;
use parquet::file::metadata::{
    ColumnChunkMetaData, ColumnIndexBuilder, LevelHistogram, OffsetIndexBuilder, PageEncodingStats,
};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::{Statistics, ValueStatistics};
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::{ColumnDescPtr, ColumnPath};

use super::ArchiveError;

/// A word-at-a-time hash for short strings (keys and values of attributes); not used for
/// anything that must stay the same across versions.
#[derive(Default)]
pub(crate) struct WordHasher(u64);

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(w) ^ rest.len() as u64).wrapping_mul(K);
        }
        self.0 = h;
    }

    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}

/// The distinct strings of a segment's maps, each with an id.
#[derive(Default)]
pub(crate) struct Strings<'a> {
    ids: HashMap<Cow<'a, str>, u32, BuildHasherDefault<WordHasher>>,
    all: Vec<Cow<'a, str>>,
    /// The empty string's id once it has one: most spans have no trace state and no status
    /// message, and those need no hash.
    empty: Option<u32>,
}

impl<'a> Strings<'a> {
    /// The id of a string borrowed from the segment's spans.
    pub(crate) fn borrowed(&mut self, s: &'a str) -> u32 {
        if s.is_empty() {
            if let Some(id) = self.empty {
                return id;
            }
        }
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        self.insert(Cow::Borrowed(s))
    }

    /// The id of a string rendered into a scratch buffer (copied only the first time).
    pub(crate) fn rendered(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        self.insert(Cow::Owned(s.to_owned()))
    }

    fn insert(&mut self, s: Cow<'a, str>) -> u32 {
        let id = self.all.len() as u32;
        if s.is_empty() {
            self.empty = Some(id);
        }
        self.all.push(s.clone());
        self.ids.insert(s, id);
        id
    }

    pub(crate) fn get(&self, id: u32) -> &str {
        self.all.get(id as usize).map_or("", |s| s)
    }

    pub(crate) fn len(&self) -> usize {
        self.all.len()
    }
}

/// The rows of one map column of one row group: per row, its entries as (key id, value id).
#[derive(Default)]
pub(crate) struct MapRows {
    /// End of each row's entries in `entries`.
    ends: Vec<u32>,
    entries: Vec<(u32, u32)>,
}

impl MapRows {
    pub(crate) fn with_capacity(rows: usize, entries: usize) -> MapRows {
        MapRows {
            ends: Vec::with_capacity(rows),
            entries: Vec::with_capacity(entries),
        }
    }

    /// Adds one entry to the row being built.
    pub(crate) fn push(&mut self, key: u32, value: u32) {
        self.entries.push((key, value));
    }

    /// Adds a row's worth of entries at once.
    pub(crate) fn extend(&mut self, entries: &[(u32, u32)]) {
        self.entries.extend_from_slice(entries);
    }

    /// Ends the row being built.
    pub(crate) fn end_row(&mut self) {
        self.ends.push(self.entries.len() as u32);
    }

    pub(crate) fn rows(&self) -> usize {
        self.ends.len()
    }

    fn row(&self, i: usize) -> &[(u32, u32)] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.entries[start..self.ends[i] as usize]
    }
}

/// Which leaf of a map: the keys (required) or the values (optional; ours are never null).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Leaf {
    Key,
    Value,
}

impl Leaf {
    fn pick(self, e: &(u32, u32)) -> u32 {
        match self {
            Leaf::Key => e.0,
            Leaf::Value => e.1,
        }
    }
}

/// The rows of one column chunk written by hand.
#[derive(Clone, Copy)]
pub(crate) enum ChunkRows<'r> {
    /// A string column of the top level: a string id per row, [`NULL`] for a null.
    Flat(&'r [u32]),
    /// One leaf of a map column.
    Map(&'r MapRows, Leaf),
}

/// A null in a [`ChunkRows::Flat`] column.
pub(crate) const NULL: u32 = u32::MAX;

impl ChunkRows<'_> {
    fn rows(&self) -> usize {
        match self {
            ChunkRows::Flat(ids) => ids.len(),
            ChunkRows::Map(m, _) => m.rows(),
        }
    }

    /// Calls `f` with the string id of every value, in order.
    fn each_value<E>(&self, mut f: impl FnMut(u32) -> Result<(), E>) -> Result<(), E> {
        match *self {
            ChunkRows::Flat(ids) => ids
                .iter()
                .filter(|id| **id != NULL)
                .try_for_each(|id| f(*id)),
            ChunkRows::Map(m, leaf) => m.entries.iter().try_for_each(|e| f(leaf.pick(e))),
        }
    }
}

/// What a page's values are written as.
#[derive(Clone, Copy, PartialEq)]
enum Values {
    /// Indices into the chunk's dictionary.
    Dictionary,
    /// The strings themselves.
    Plain,
}

/// Writes one column chunk of string values for the rows of one row group, as the Arrow
/// writer does with the same writer properties: a dictionary page (the chunk's strings in
/// order of first use; plain pages instead when they outgrow the column's dictionary page
/// limit), v1 data pages cut at row boundaries by the column's page size and row limits, each
/// compressed with the column's codec, an offset index and, when the column has page
/// statistics, its statistics and column index. Returns the chunk's bytes and what
/// `SerializedRowGroupWriter::append_column` needs.
pub(crate) fn write_chunk(
    rows: ChunkRows<'_>,
    strings: &Strings<'_>,
    descr: &ColumnDescPtr,
    props: &WriterProperties,
    zstd: &mut Zstd,
    scratch: &mut ChunkScratch,
) -> Result<(Bytes, ColumnCloseResult), ArchiveError> {
    let path = descr.path();
    let compression = props.compression(path);
    let page_bytes = props.column_data_page_size_limit(path);
    let page_rows = props.column_data_page_row_count_limit(path).max(1);
    let dict_limit = props.column_dictionary_page_size_limit(path);
    let statistics = props.statistics_enabled(path);
    let (max_rep, max_def) = (descr.max_rep_level(), descr.max_def_level());
    let shape_ok = match rows {
        ChunkRows::Flat(_) => max_rep == 0 && max_def <= 1,
        ChunkRows::Map(_, Leaf::Key) => max_rep == 1 && max_def == 1,
        ChunkRows::Map(_, Leaf::Value) => max_rep == 1 && max_def == 2,
    };
    if !shape_ok || descr.physical_type() != parquet::basic::Type::BYTE_ARRAY {
        return Err(ArchiveError::Verify(format!(
            "{path} is not a string column of this shape in schema v2"
        )));
    }
    // Level histograms and statistics come with any statistics, the column index with page
    // statistics (as in the Arrow writer).
    let with_stats = statistics != EnabledStatistics::None;
    let with_index = statistics == EnabledStatistics::Page;
    let def_value = max_def as u32; // the level of a present value

    // The chunk's dictionary: string ids in order of first use.
    let ChunkScratch {
        local,
        dict,
        page,
        values,
        seen,
    } = scratch;
    local.clear();
    local.resize(strings.len(), NULL);
    dict.clear();
    let mut dict_bytes = 0usize;
    rows.each_value(|id| {
        let l = local.get_mut(id as usize).ok_or_else(|| bad_id(path))?;
        if *l == NULL {
            *l = dict.len() as u32;
            dict.push(id);
            dict_bytes += 4 + strings.get(id).len();
        }
        Ok::<(), ArchiveError>(())
    })?;
    // The page each dictionary entry was last seen in (its minimum and maximum are compared
    // once per page).
    seen.clear();
    seen.resize(dict.len(), 0);
    let kind = if dict_bytes <= dict_limit {
        Values::Dictionary
    } else {
        Values::Plain
    };

    let mut out = TrackedWrite::new(Vec::with_capacity(4096));
    let mut pages: Vec<PageDone> = Vec::new();
    let mut encodings = vec![Encoding::RLE];
    let mut page_stats = Vec::new();
    let mut index = ColumnIndexBuilder::new(parquet::basic::Type::BYTE_ARRAY);
    if !with_index {
        index.to_invalid();
    }
    let (mut ascending, mut descending) = (true, true);
    let mut last_min_max: Option<(&str, &str)> = None;
    let mut chunk_min: Option<&str> = None;
    let mut chunk_max: Option<&str> = None;
    let (mut chunk_nulls, mut chunk_def0, mut chunk_unencoded) = (0u64, 0i64, 0i64);
    {
        let mut w = SerializedPageWriter::new(&mut out);
        if kind == Values::Dictionary {
            page.clear();
            put_plain(dict, strings, page);
            let spec = w.write_page(compress(
                Page::DictionaryPage {
                    buf: Bytes::new(),
                    num_values: dict.len() as u32,
                    encoding: Encoding::PLAIN,
                    is_sorted: false,
                },
                page,
                compression,
                zstd,
            )?)?;
            encodings.push(Encoding::PLAIN);
            encodings.push(Encoding::RLE_DICTIONARY);
            page_stats.push(PageEncodingStats {
                page_type: PageType::DICTIONARY_PAGE,
                encoding: Encoding::PLAIN,
                count: 1,
            });
            pages.push(PageDone {
                spec,
                rows: 0,
                unencoded: 0,
            });
        } else {
            encodings.push(Encoding::PLAIN);
        }
        let value_encoding = match kind {
            Values::Dictionary => Encoding::RLE_DICTIONARY,
            Values::Plain => Encoding::PLAIN,
        };
        // Dictionary entries in use so far: a page's index width is that of the dictionary as
        // it stood when the page was cut.
        let mut dict_so_far = 0u32;
        let mut page_no = 0u32;
        let mut row = 0;
        while row < rows.rows() {
            // One page: rows until the row limit or the size estimate.
            let first = row;
            let mut n_values = 0usize;
            let mut plain_bytes = 0usize;
            let mut n_levels = 0usize;
            while row < rows.rows() && row - first < page_rows {
                match rows {
                    ChunkRows::Flat(ids) => {
                        n_levels += 1;
                        if ids[row] != NULL {
                            n_values += 1;
                            plain_bytes += 4 + strings.get(ids[row]).len();
                        }
                    }
                    ChunkRows::Map(m, leaf) => {
                        let r = m.row(row);
                        n_levels += r.len().max(1);
                        n_values += r.len();
                        if kind == Values::Plain {
                            plain_bytes += r
                                .iter()
                                .map(|e| 4 + strings.get(leaf.pick(e)).len())
                                .sum::<usize>();
                        }
                    }
                }
                row += 1;
                let estimate = match kind {
                    Values::Dictionary => {
                        1 + rle_max_size(
                            bits(u64::from(dict.len().saturating_sub(1) as u32)),
                            n_values,
                        )
                    }
                    Values::Plain => plain_bytes,
                };
                if estimate >= page_bytes {
                    break;
                }
            }
            // Levels in locals of their own: the compiler keeps a local vector's end in
            // registers through the loop below (measured: ~5% of the encoder's time against
            // vectors borrowed from the scratch).
            let mut rep: Vec<u32> = Vec::with_capacity(n_levels);
            let mut def: Vec<u32> = Vec::with_capacity(n_levels);
            values.clear();
            let (mut nulls, mut unencoded) = (0u64, 0i64);
            let mut min: Option<&str> = None;
            let mut max: Option<&str> = None;
            page_no += 1;
            let mut value = |id: u32, values: &mut Vec<u32>| {
                let s = strings.get(id);
                unencoded += s.len() as i64;
                let l = local[id as usize];
                if with_stats && seen[l as usize] != page_no {
                    seen[l as usize] = page_no;
                    if min.is_none_or(|m| m.as_bytes() > s.as_bytes()) {
                        min = Some(s);
                    }
                    if max.is_none_or(|m| s.as_bytes() > m.as_bytes()) {
                        max = Some(s);
                    }
                }
                values.push(match kind {
                    Values::Dictionary => l,
                    Values::Plain => id,
                });
            };
            for i in first..row {
                match rows {
                    ChunkRows::Flat(ids) => {
                        if ids[i] == NULL {
                            def.push(0);
                            nulls += 1;
                        } else {
                            if max_def > 0 {
                                def.push(1);
                            }
                            value(ids[i], values);
                        }
                    }
                    ChunkRows::Map(m, leaf) => {
                        let r = m.row(i);
                        // A row's levels: a new row (0) then repeats (1), each entry present.
                        rep.push(0);
                        if r.is_empty() {
                            def.push(0);
                        } else {
                            rep.resize(rep.len() + r.len() - 1, 1);
                            def.resize(def.len() + r.len(), def_value);
                        }
                        for e in r {
                            value(leaf.pick(e), values);
                        }
                    }
                }
            }
            page.clear();
            if max_rep > 0 {
                levels(&rep, 1, page);
            }
            if max_def > 0 {
                levels(&def, bits(u64::from(def_value)), page);
            }
            match kind {
                Values::Dictionary => {
                    if let Some(m) = values.iter().max() {
                        dict_so_far = dict_so_far.max(m + 1);
                    }
                    let width = bits(u64::from(dict_so_far.saturating_sub(1)));
                    page.push(width);
                    hybrid(values, width, page);
                }
                Values::Plain => put_plain(values, strings, page),
            }
            let spec = w.write_page(compress(
                Page::DataPage {
                    buf: Bytes::new(),
                    num_values: n_levels as u32,
                    encoding: value_encoding,
                    def_level_encoding: Encoding::RLE,
                    rep_level_encoding: Encoding::RLE,
                    statistics: None,
                },
                page,
                compression,
                zstd,
            )?)?;
            let page_rows_done = row - first;
            // Statistics: the column index's page entry, the boundary order, the chunk's.
            chunk_nulls += nulls;
            chunk_unencoded += unencoded;
            if with_stats && max_def > 0 && matches!(rows, ChunkRows::Flat(_)) {
                chunk_def0 += nulls as i64;
            }
            if index.valid() {
                let null_page = page_rows_done as u64 == nulls;
                match (min, max) {
                    (Some(lo), Some(hi)) if !null_page => {
                        if let Some((last_lo, last_hi)) = last_min_max {
                            if last_lo > lo || last_hi > hi {
                                ascending = false;
                            }
                            if lo > last_lo || hi > last_hi {
                                descending = false;
                            }
                        }
                        last_min_max = Some((lo, hi));
                        let limit = props.column_index_truncate_length();
                        index.append(
                            false,
                            truncate_min(lo, limit).0,
                            truncate_max(hi, limit).0,
                            nulls as i64,
                            None,
                        );
                    }
                    _ => index.append(true, vec![], vec![], nulls as i64, None),
                }
                if max_def > 0 {
                    let hist =
                        LevelHistogram::from(vec![nulls as i64, (n_levels as u64 - nulls) as i64]);
                    index.append_histograms(&None, &Some(hist));
                }
            }
            if let (Some(lo), Some(hi)) = (min, max) {
                if chunk_min.is_none_or(|m| m.as_bytes() > lo.as_bytes()) {
                    chunk_min = Some(lo);
                }
                if chunk_max.is_none_or(|m| hi.as_bytes() > m.as_bytes()) {
                    chunk_max = Some(hi);
                }
            }
            pages.push(PageDone {
                spec,
                rows: page_rows_done,
                unencoded,
            });
        }
        w.close()?;
        page_stats.push(PageEncodingStats {
            page_type: PageType::DATA_PAGE,
            encoding: value_encoding,
            count: (pages.len() - usize::from(kind == Values::Dictionary)) as i32,
        });
    }

    let (mut compressed, mut uncompressed, mut num_values) = (0i64, 0i64, 0i64);
    let mut offsets = OffsetIndexBuilder::new();
    let mut dictionary_offset = None;
    let mut data_offset = None;
    for p in &pages {
        let spec = &p.spec;
        compressed += spec.compressed_size as i64;
        uncompressed += spec.uncompressed_size as i64;
        if spec.page_type == PageType::DICTIONARY_PAGE {
            dictionary_offset = Some(spec.offset as i64);
            continue;
        }
        num_values += i64::from(spec.num_values);
        data_offset.get_or_insert(spec.offset as i64);
        offsets.append_offset_and_size(spec.offset as i64, spec.compressed_size as i32);
        offsets.append_row_count(p.rows as i64);
        offsets.append_unencoded_byte_array_data_bytes(Some(p.unencoded));
    }
    let mut metadata = ColumnChunkMetaData::builder(descr.clone())
        .set_compression(compression)
        .set_encodings_mask(EncodingMask::new_from_encodings(encodings.iter()))
        .set_page_encoding_stats(page_stats)
        .set_total_compressed_size(compressed)
        .set_total_uncompressed_size(uncompressed)
        .set_num_values(num_values)
        .set_data_page_offset(data_offset.unwrap_or(0))
        .set_dictionary_page_offset(dictionary_offset);
    if with_stats {
        let limit = props.statistics_truncate_length();
        let stats = match (chunk_min, chunk_max) {
            (Some(lo), Some(hi)) => {
                let (lo, lo_cut) = truncate_min(lo, limit);
                let (hi, hi_cut) = truncate_max(hi, limit);
                ValueStatistics::new(
                    Some(ByteArray::from(lo)),
                    Some(ByteArray::from(hi)),
                    None,
                    Some(chunk_nulls),
                    false,
                )
                .with_max_is_exact(!hi_cut)
                .with_min_is_exact(!lo_cut)
            }
            _ => ValueStatistics::<ByteArray>::new(None, None, None, Some(chunk_nulls), false)
                .with_nan_count(None)
                .with_backwards_compatible_min_max(false),
        };
        metadata = metadata
            .set_statistics(Statistics::from(stats))
            .set_unencoded_byte_array_data_bytes(Some(chunk_unencoded));
        if max_def > 0 {
            let present = num_values - chunk_def0;
            let hist = match rows {
                ChunkRows::Flat(_) => vec![chunk_def0, present],
                // Not reached: map leaves have no statistics in schema v2.
                ChunkRows::Map(..) => vec![chunk_def0, 0, present],
            };
            metadata = metadata.set_definition_level_histogram(Some(LevelHistogram::from(hist)));
        }
    }
    let metadata = metadata.build()?;
    let column_index = if index.valid() {
        index.set_boundary_order(match (ascending, descending) {
            (true, _) => BoundaryOrder::ASCENDING,
            (false, true) => BoundaryOrder::DESCENDING,
            (false, false) => BoundaryOrder::UNORDERED,
        });
        Some(index.build()?)
    } else {
        None
    };
    let bytes_written = out.bytes_written() as u64;
    let buf = out
        .into_inner()
        .map_err(|e| ArchiveError::Verify(e.to_string()))?;
    Ok((
        Bytes::from(buf),
        ColumnCloseResult {
            bytes_written,
            rows_written: rows.rows() as u64,
            metadata,
            bloom_filter: None,
            column_index,
            offset_index: Some(offsets.build()),
        },
    ))
}

/// A page written: where (its spec), how many rows, its strings' bytes.
struct PageDone {
    spec: PageWriteSpec,
    rows: usize,
    unencoded: i64,
}

fn bad_id(path: &ColumnPath) -> ArchiveError {
    ArchiveError::Verify(format!("{path}: a string id past the segment's strings"))
}

/// The parquet crate's bound on a hybrid-encoded page of `n` values (its page size estimate).
fn rle_max_size(width: u8, n: usize) -> usize {
    let runs = n.div_ceil(8);
    let packed = runs + runs * usize::from(width);
    let rle = runs * (1 + usize::from(width).div_ceil(8));
    packed.max(rle)
}

/// A minimum statistic cut to `limit` bytes at a character boundary (and whether it was cut),
/// as the parquet crate cuts it.
fn truncate_min(s: &str, limit: Option<usize>) -> (Vec<u8>, bool) {
    match limit.filter(|l| s.len() > *l) {
        Some(l) => match (1..=l).rfind(|x| s.is_char_boundary(*x)) {
            Some(cut) => (s.as_bytes()[..cut].to_vec(), true),
            None => (s.as_bytes().to_vec(), false),
        },
        None => (s.as_bytes().to_vec(), false),
    }
}

/// A maximum statistic cut to `limit` bytes at a character boundary with its last character
/// incremented so it stays an upper bound (and whether it was cut), as the parquet crate does;
/// uncut when no character can be incremented.
fn truncate_max(s: &str, limit: Option<usize>) -> (Vec<u8>, bool) {
    let cut = limit.filter(|l| s.len() > *l).and_then(|l| {
        let split = (l.saturating_sub(3)..=l).rfind(|x| s.is_char_boundary(*x))?;
        let head = s.get(..split)?;
        head.char_indices().rev().find_map(|(i, c)| {
            let next = char::from_u32(c as u32 + 1)?;
            (next.len_utf8() == c.len_utf8()).then(|| {
                let mut out = head.as_bytes()[..i + c.len_utf8()].to_vec();
                next.encode_utf8(&mut out[i..]);
                out
            })
        })
    });
    match cut {
        Some(v) => (v, true),
        None => (s.as_bytes().to_vec(), false),
    }
}

/// Buffers reused from one chunk to the next.
#[derive(Default)]
pub(crate) struct ChunkScratch {
    /// Segment string id → dictionary index in this chunk.
    local: Vec<u32>,
    /// Dictionary index → segment string id.
    dict: Vec<u32>,
    /// The page being built.
    page: Vec<u8>,
    /// This page's values (dictionary indices or string ids).
    values: Vec<u32>,
    /// Dictionary index → the last page it was seen in.
    seen: Vec<u32>,
}

/// A zstd compressor kept for a whole segment (the Parquet writer makes one per column chunk).
pub(crate) struct Zstd {
    level: i32,
    compressor: Option<zstd::bulk::Compressor<'static>>,
}

impl Zstd {
    pub(crate) fn new() -> Zstd {
        Zstd {
            level: 0,
            compressor: None,
        }
    }
}

/// `page`'s header fields with `buf` the page body, compressed with `codec`.
fn compress(
    header: Page,
    body: &[u8],
    codec: Compression,
    zstd: &mut Zstd,
) -> Result<CompressedPage, ArchiveError> {
    let buf = match codec {
        Compression::UNCOMPRESSED => Bytes::copy_from_slice(body),
        Compression::ZSTD(level) => {
            let level = level.compression_level();
            if zstd.compressor.is_none() || zstd.level != level {
                zstd.compressor = Some(
                    zstd::bulk::Compressor::new(level)
                        .map_err(|e| ArchiveError::Verify(format!("zstd: {e}")))?,
                );
                zstd.level = level;
            }
            let c = zstd
                .compressor
                .as_mut()
                .ok_or_else(|| ArchiveError::Verify("zstd compressor missing".into()))?;
            let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(body.len()));
            c.compress_to_buffer(body, &mut out)
                .map_err(|e| ArchiveError::Verify(format!("zstd: {e}")))?;
            Bytes::from(out)
        }
        other => {
            return Err(ArchiveError::Verify(format!(
                "map columns are written with zstd or uncompressed, not {other}"
            )))
        }
    };
    let page = match header {
        Page::DataPage {
            num_values,
            encoding,
            def_level_encoding,
            rep_level_encoding,
            statistics,
            ..
        } => Page::DataPage {
            buf,
            num_values,
            encoding,
            def_level_encoding,
            rep_level_encoding,
            statistics,
        },
        Page::DictionaryPage {
            num_values,
            encoding,
            is_sorted,
            ..
        } => Page::DictionaryPage {
            buf,
            num_values,
            encoding,
            is_sorted,
        },
        other => other,
    };
    Ok(CompressedPage::new(page, body.len()))
}

/// Bits needed for values up to `max`.
fn bits(max: u64) -> u8 {
    (64 - max.leading_zeros()) as u8
}

/// Appends strings PLAIN-encoded (each its length, then its bytes), as a dictionary page and a
/// plain data page hold them.
fn put_plain(ids: &[u32], strings: &Strings<'_>, page: &mut Vec<u8>) {
    for &id in ids {
        let s = strings.get(id);
        page.extend_from_slice(&(s.len() as u32).to_le_bytes());
        page.extend_from_slice(s.as_bytes());
    }
}

/// Appends levels as a data page holds them: their length, then their hybrid encoding.
fn levels(v: &[u32], width: u8, page: &mut Vec<u8>) {
    let at = page.len();
    page.extend_from_slice(&[0; 4]);
    hybrid(v, width, page);
    let n = (page.len() - at - 4) as u32;
    page[at..at + 4].copy_from_slice(&n.to_le_bytes());
}

/// Appends `v` in Parquet's RLE / bit-packed hybrid at `width` bits, making the choices the
/// parquet crate's encoder makes (so the pages are byte for byte those of the Arrow writer):
/// values are taken in groups of eight from where the last run ended; a group of one repeated
/// value starts a run that goes on as long as the value does, other groups are bit-packed, at
/// most 63 groups per bit-packed run; a last partial group is a run when it is all the values
/// left and all equal, else bit-packed padded with zeros (a reader stops at the value count).
fn hybrid(v: &[u32], width: u8, buf: &mut Vec<u8>) {
    buf.reserve(v.len() * usize::from(width) / 8 + 16);
    let n = v.len();
    let mut p = 0; // start of the groups waiting to be bit-packed
    let mut i = 0;
    while n - i >= 8 {
        let g = &v[i..i + 8];
        if g.iter().all(|x| *x == g[0]) {
            bit_pack(&v[p..i], width, buf);
            let mut j = i + 8;
            while j < n && v[j] == g[0] {
                j += 1;
            }
            rle_run(buf, j - i, g[0], width);
            i = j;
            p = j;
        } else {
            i += 8;
            if (i - p) / 8 >= 63 {
                bit_pack(&v[p..i], width, buf);
                p = i;
            }
        }
    }
    let tail = &v[i..];
    if p == i && !tail.is_empty() && tail.iter().all(|x| *x == tail[0]) {
        rle_run(buf, tail.len(), tail[0], width);
    } else if p < n {
        bit_pack(&v[p..], width, buf);
    }
}

fn rle_run(buf: &mut Vec<u8>, count: usize, value: u32, width: u8) {
    uleb(buf, (count as u64) << 1);
    buf.extend_from_slice(&value.to_le_bytes()[..usize::from(width).div_ceil(8)]);
}

/// Bit-packs `v` as one run (at most 63 groups; the last group padded with zeros).
fn bit_pack(v: &[u32], width: u8, buf: &mut Vec<u8>) {
    if v.is_empty() {
        return;
    }
    let groups = v.len().div_ceil(8);
    uleb(buf, ((groups as u64) << 1) | 1);
    let (w, bytes) = (u32::from(width), usize::from(width));
    // Eight values of `width` bits are exactly `width` bytes. Each group is written as whole
    // words into room with 16 bytes of slack (the bits past a group are zeros, and the next
    // group overwrites them), then the run is cut to its size.
    let start = buf.len();
    buf.resize(start + groups * bytes + 16, 0);
    let out = &mut buf[start..];
    let mut pack = |g: &[u32], at: usize| {
        if w <= 8 {
            let mut acc = 0u64;
            for (k, &x) in g.iter().enumerate() {
                acc |= u64::from(x) << (k as u32 * w);
            }
            out[at..at + 8].copy_from_slice(&acc.to_le_bytes());
            return;
        }
        let (mut acc, mut filled, mut o) = (0u128, 0u32, at);
        for &x in g {
            acc |= u128::from(x) << filled;
            filled += w;
            if filled >= 64 {
                out[o..o + 8].copy_from_slice(&(acc as u64).to_le_bytes());
                o += 8;
                acc >>= 64;
                filled -= 64;
            }
        }
        out[o..o + 16].copy_from_slice(&acc.to_le_bytes());
    };
    let mut chunks = v.chunks_exact(8);
    let mut at = 0;
    for g in &mut chunks {
        pack(g, at);
        at += bytes;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut g = [0u32; 8];
        g[..rest.len()].copy_from_slice(rest);
        pack(&g, at);
    }
    buf.truncate(start + groups * bytes);
}

fn uleb(buf: &mut Vec<u8>, mut x: u64) {
    loop {
        let b = (x & 0x7f) as u8;
        x >>= 7;
        if x == 0 {
            buf.push(b);
            return;
        }
        buf.push(b | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes the hybrid encoding (the reader side, written from the format spec).
    fn decode(mut b: &[u8], width: u8, n: usize) -> Vec<u32> {
        let mut out = Vec::new();
        while out.len() < n {
            let mut header = 0u64;
            let mut shift = 0;
            loop {
                let byte = b[0];
                b = &b[1..];
                header |= u64::from(byte & 0x7f) << shift;
                shift += 7;
                if byte & 0x80 == 0 {
                    break;
                }
            }
            if header & 1 == 1 {
                let count = (header >> 1) as usize * 8;
                let bytes = count * usize::from(width) / 8;
                let (packed, rest) = b.split_at(bytes);
                b = rest;
                for k in 0..count {
                    let mut x = 0u32;
                    for bit in 0..usize::from(width) {
                        let pos = k * usize::from(width) + bit;
                        if packed[pos / 8] >> (pos % 8) & 1 == 1 {
                            x |= 1 << bit;
                        }
                    }
                    out.push(x);
                }
            } else {
                let count = (header >> 1) as usize;
                let w = usize::from(width).div_ceil(8);
                let mut x = [0u8; 4];
                x[..w].copy_from_slice(&b[..w]);
                b = &b[w..];
                out.extend(std::iter::repeat_n(u32::from_le_bytes(x), count));
            }
        }
        assert!(b.is_empty(), "{} bytes after the values", b.len());
        out.truncate(n);
        out
    }

    fn roundtrip(v: &[u32], width: u8) {
        // Appended after what a page already holds, as a page's values are.
        let mut enc = vec![7u8; 3];
        hybrid(v, width, &mut enc);
        assert_eq!(enc[..3], [7, 7, 7], "what was there before is kept");
        let enc = enc.split_off(3);
        assert_eq!(decode(&enc, width, v.len()), v, "width {width}: {v:?}");
    }

    #[test]
    fn the_hybrid_encoding_reads_back() {
        roundtrip(&[], 1);
        roundtrip(&[0], 0);
        roundtrip(&[0; 100], 0);
        roundtrip(&[1, 0, 1, 1, 0], 1);
        roundtrip(&[1; 8], 1);
        roundtrip(&[1; 7], 1);
        roundtrip(&[3, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 5], 3);
        roundtrip(&[0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1], 1);
        // Longer than one bit-packed run (63 groups) of distinct values.
        roundtrip(&(0..2_000).map(|i| i % 1_000).collect::<Vec<_>>(), 10);
        let mut x = 0x2545_f491u32;
        for width in [1u8, 2, 5, 7, 8, 9, 13, 16, 17, 24, 31, 32] {
            let max = if width == 32 {
                u32::MAX
            } else {
                (1 << width) - 1
            };
            for _ in 0..50 {
                let len = (x % 300) as usize;
                let v: Vec<u32> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        // Runs of every length: repeat the last value often.
                        if x.is_multiple_of(3) {
                            0
                        } else {
                            x & max
                        }
                    })
                    .scan(0u32, |last, y| {
                        if y % 4 != 0 {
                            *last = y & max;
                        }
                        Some(*last)
                    })
                    .collect();
                roundtrip(&v, width);
            }
        }
    }

    #[test]
    fn strings_get_one_id_each() {
        let mut s = Strings::default();
        let a = s.borrowed("service.name");
        let b = s.rendered("42");
        assert_eq!(s.borrowed("service.name"), a);
        assert_eq!(s.borrowed("42"), b);
        assert_ne!(a, b);
        assert_eq!(s.get(a), "service.name");
        assert_eq!(s.get(b), "42");
        assert_eq!(s.len(), 2);
    }
}
