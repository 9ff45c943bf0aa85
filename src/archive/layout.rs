//! The object layout: `spans/<version>/date=YYYY-MM-DD/hour=HH/<file>.parquet`, and the
//! deterministic names of hot segments (span data never chooses a path). Files are written under
//! the current version (`v2`); files of an older version stay where they are until compaction
//! merges their hour into the current version's directory.

use super::SCHEMA_VERSION;

/// `date=YYYY-MM-DD/hour=HH` of a Unix-nanosecond time (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HourPartition {
    /// Days since the Unix epoch.
    pub day: i64,
    /// Hour of the day, 0–23.
    pub hour: u8,
}

impl HourPartition {
    /// The partition a span starting at `ns` belongs to.
    pub fn of_nanos(ns: u64) -> HourPartition {
        let secs = (ns / 1_000_000_000) as i64;
        HourPartition {
            day: secs.div_euclid(86_400),
            hour: (secs.rem_euclid(86_400) / 3_600) as u8,
        }
    }

    /// `date=YYYY-MM-DD/hour=HH`.
    pub fn dir(&self) -> String {
        let date = chrono::DateTime::from_timestamp(self.day * 86_400, 0)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_else(|| "1970-01-01".into());
        format!("date={date}/hour={:02}", self.hour)
    }
}

/// Object path of a hot segment file (relative to the tier URL).
pub fn hot_segment_path(
    topic: &str,
    partition: i32,
    first_offset: i64,
    last_offset: i64,
    hour: HourPartition,
    content: u64,
) -> object_store::path::Path {
    // Topic names are validated to [A-Za-z0-9._-] at config load; escape anyway.
    let topic: String = topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    object_store::path::Path::from(format!(
        "spans/{SCHEMA_VERSION}/{}/{topic}-p{partition:05}-{first_offset:020}-{last_offset:020}-{content:016x}.parquet",
        hour.dir()
    ))
}
