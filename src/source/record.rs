//! The record the source hands to a partition's processing: offset, key, value, encoding and
//! timestamp. Plain data, no I/O.

use bytes::Bytes;

use crate::otlp::Encoding;

/// One input record, as the source hands it over.
#[derive(Debug, Clone)]
pub struct Record {
    /// Offset in its partition.
    pub offset: i64,
    /// Key, if any.
    pub key: Option<Bytes>,
    /// Value; `None` for a tombstone.
    pub payload: Option<Bytes>,
    /// Encoding (from the `content-type` header, else the configured one).
    pub encoding: Encoding,
    /// The record's timestamp, Unix ms (`None` when the broker gave none).
    pub timestamp_ms: Option<i64>,
    /// Its headers (kept for a dead letter; empty for most records, so no allocation).
    pub headers: Headers,
    /// When the source fetched it (for the queue-wait histogram; zero when not fetched).
    pub fetched: crate::clock::MonoTime,
}

pub use crate::kafka::headers::Headers;

impl Record {
    /// The record's Kafka timestamp as Unix ms, 0 when it has none.
    pub fn arrival_ms(&self) -> u64 {
        self.timestamp_ms
            .and_then(|t| u64::try_from(t).ok())
            .unwrap_or(0)
    }

    /// Bytes this record holds in a queue.
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Bytes::len) + self.payload.as_ref().map_or(0, Bytes::len)
    }
}
