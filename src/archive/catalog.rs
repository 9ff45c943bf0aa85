//! What a tier's manifest says about its files, and the hour rule of the object layout: plain
//! data (serde), no I/O. `manifest` reads and writes it; `plan` decides on it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version of the span schema files are written with; part of every object path.
pub const SCHEMA_VERSION: &str = "v2";

/// One compacted file of a tier.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Start of the file's hour partition, Unix ms.
    pub hour_start_ms: i64,
    /// Earliest span start in the file, Unix ns.
    pub min_start_ns: i64,
    /// Latest span start in the file, Unix ns.
    pub max_start_ns: i64,
    /// Smallest trace id, 32 hex digits.
    pub min_trace_id: String,
    /// Largest trace id, 32 hex digits.
    pub max_trace_id: String,
    /// Rows (spans).
    pub rows: u64,
    /// Object size.
    pub bytes: u64,
    /// CRC32C of the whole object.
    pub crc32c: u32,
    /// Spans per `sampling_policy`.
    #[serde(default)]
    pub policies: BTreeMap<String, u64>,
    /// Sum of `sampling_adjusted_count` (the spans these rows stand for; null counts as 1).
    #[serde(default)]
    pub adjusted_spans: f64,
    /// The same sum per `sampling_policy`.
    #[serde(default)]
    pub adjusted_by_policy: BTreeMap<String, f64>,
    /// Files of other tiers this one was merged from, as (tier, path), still to be deleted
    /// there (a crash between publishing this file and deleting them is finished next pass).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaces: Vec<(String, String)>,
}

impl FileEntry {
    /// End of the file's hour, Unix ms.
    pub fn hour_end_ms(&self) -> i64 {
        self.hour_start_ms + 3_600_000
    }

    /// Whether `id` (16 bytes) can be in this file by its trace-id range.
    pub fn may_hold(&self, id: &[u8; 16]) -> bool {
        let hex = hex::encode(id);
        self.min_trace_id.as_str() <= hex.as_str() && hex.as_str() <= self.max_trace_id.as_str()
    }
}

/// A tier's catalog: object path → entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version (1).
    pub version: u32,
    /// The tier it describes.
    pub tier: String,
    /// Files by object path (relative to the tier URL).
    pub files: BTreeMap<String, FileEntry>,
    /// The highest compactor-lease token that wrote this manifest: a holder with a lower one
    /// lost its lease and may not write it.
    #[serde(default)]
    pub fence: u64,
}

impl Manifest {
    /// Total bytes and rows.
    pub fn totals(&self) -> (u64, u64) {
        self.files
            .values()
            .fold((0, 0), |(b, r), f| (b + f.bytes, r + f.rows))
    }
}

/// Start of the hour of `…/date=YYYY-MM-DD/hour=HH[/…]`, Unix ms.
pub fn hour_start_ms(path: &str) -> Option<i64> {
    let mut date = None;
    let mut hour = None;
    for part in path.split('/') {
        if let Some(d) = part.strip_prefix("date=") {
            date = chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok();
        } else if let Some(h) = part.strip_prefix("hour=") {
            hour = h.parse::<u32>().ok().filter(|h| *h < 24);
        }
    }
    let start = date?.and_hms_opt(hour?, 0, 0)?;
    Some(start.and_utc().timestamp_millis())
}

/// The directory an hour's files compact into, from the directory of a file of any schema
/// version: `spans/<any>/date=…/hour=…` → `spans/<current>/date=…/hour=…`.
pub fn hour_dir(file_dir: &str) -> Option<String> {
    let rest = file_dir.strip_prefix("spans/")?;
    let (_, hour) = rest.split_once('/')?;
    Some(format!("spans/{SCHEMA_VERSION}/{hour}"))
}
