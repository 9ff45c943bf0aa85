//! Parquet: the span schema (v2; v1 is still read), the segment encoder, object-store URLs and
//! the object layout.
//!
//! One row per span, flat and analytics-friendly (DESIGN §3.2; column names are a contract: add,
//! never rename). Files are zstd, sorted by trace id then start time, with page-level statistics,
//! the page index and a bloom filter on `trace_id`, so a lookup by trace id reads a few pages.
//!
//! Layout under a tier's URL: `spans/v2/date=YYYY-MM-DD/hour=HH/<file>.parquet`, partitioned by
//! the span's start time (UTC). Hot file names are deterministic from (topic, partition, first
//! offset, last offset, a hash of the rows' (trace id, span id) set), so a replay of the same
//! records rewrites the same file, and two different segments over one offset range (traces that
//! shared records but were decided at different times) never overwrite each other. Every path
//! component is built from numbers and validated topic names: span data never chooses a path.
//!
//! Files: `schema.rs` (the span schema, writer properties), `segment.rs` (the encoder),
//! `columns.rs` (typed column access), `upgrade.rs` (v1 read as v2), `store_url.rs` (tier URLs), `layout.rs` (paths),
//! `catalog.rs` + `manifest.rs` (what a tier holds, the lease), `plan.rs` (the pure lifecycle
//! plan), `compact.rs`, `merge.rs`, `tiering.rs` (carrying it out), `lookup.rs`, `cost.rs`,
//! `config.rs` (`archive:`).

pub mod catalog;
pub mod columns;
pub mod compact;
pub mod config;
pub mod cost;
pub mod layout;
pub mod lookup;
pub mod manifest;
pub mod merge;
pub mod plan;
pub mod schema;
pub mod segment;
pub mod store_url;
mod string_columns;
pub mod tiering;
pub mod upgrade;

pub use self::catalog::SCHEMA_VERSION;

/// Errors of the archive stage.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A buffered span did not decode (it was validated on the way in, so this is a bug or
    /// corruption).
    #[error("kept span does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    /// A kept span the strict encoder refused (see `encode_segment_skipping`).
    #[error("kept span does not decode: {0}")]
    Rejected(String),
    /// Arrow or Parquet encoding failed.
    #[error("parquet encoding failed: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Arrow array construction failed.
    #[error("arrow batch construction failed: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// The object store refused a read or write (retryable).
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// The store URL is not usable.
    #[error("bad store url: {0}")]
    Url(String),
    /// A file did not read back as written (compaction keeps its inputs).
    #[error("verification failed: {0}")]
    Verify(String),

    /// The compactor lease was taken by another compactor: this one stops without writing.
    #[error("lease lost: {0}; stopping without writing")]
    LeaseLost(String),
}

pub use self::columns::{as_array, column, field, id_at};
pub use self::layout::{hot_segment_path, HourPartition};
pub use self::schema::{span_schema, span_schema_v1, writer_properties};
pub use self::segment::{
    encode_segment, encode_segment_skipping, filing_hour, EncodedFile, KeptSpan, Rejected,
};
pub use self::store_url::{
    check_store, open_sink_store, open_store, open_store_with, parse_store_url, OpenedStore,
    StoreUrl,
};

#[cfg(test)]
mod tests {
    use super::segment::content_hash;
    use super::*;
    use crate::otlp::{render_value, TraceId};
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};

    #[test]
    fn hour_partitions_and_paths() {
        // 2024-03-05T07:59:59Z
        let ns = 1_709_625_599u64 * 1_000_000_000;
        let h = HourPartition::of_nanos(ns);
        assert_eq!(h.dir(), "date=2024-03-05/hour=07");
        let p = hot_segment_path("otlp_spans", 3, 10, 42, h, 0xabc);
        assert_eq!(
            p.as_ref(),
            "spans/v2/date=2024-03-05/hour=07/otlp_spans-p00003-00000000000000000010-00000000000000000042-0000000000000abc.parquet"
        );
        // A hostile topic name cannot escape the directory.
        let p = hot_segment_path("../../etc/x", 0, 0, 0, h, 0);
        assert!(!p.as_ref().contains(".."), "{p}");
        assert_eq!(p.as_ref().matches('/').count(), 4);
    }

    #[test]
    fn content_hash_ignores_order_but_not_content() {
        let a = (TraceId([1; 16]), [1u8; 8]);
        let b = (TraceId([2; 16]), [2u8; 8]);
        let h = |v: &[(TraceId, [u8; 8])]| content_hash(v.iter().map(|(t, s)| (t, s.as_slice())));
        assert_eq!(h(&[a, b]), h(&[b, a]));
        assert_ne!(h(&[a, b]), h(&[a]));
        assert_ne!(h(&[a, a]), h(&[b, b]));
    }

    #[test]
    fn store_urls() {
        assert!(parse_store_url("file:///var/x").is_ok());
        assert!(parse_store_url("/var/x").is_ok());
        assert!(parse_store_url("relative/x").is_err());
        assert!(parse_store_url("gopher://x").is_err());
        assert_eq!(
            parse_store_url("s3://traces-cold/a/b/").unwrap(),
            StoreUrl::S3 {
                bucket: "traces-cold".into(),
                prefix: "a/b".into()
            }
        );
        assert!(parse_store_url("s3://Bad_Bucket/x").is_err());
        assert!(parse_store_url("s3://bucket/../x").is_err());
        let mut opts = std::collections::BTreeMap::new();
        opts.insert("endpoint".to_string(), "http://127.0.0.1:3900".to_string());
        assert!(check_store("s3://bucket/x", &opts).is_ok());
        assert!(check_store("file:///x", &opts).is_err());
        opts.insert("endpoitn".to_string(), "x".to_string());
        assert!(check_store("s3://bucket/x", &opts)
            .unwrap_err()
            .contains("endpoitn"));
    }

    #[test]
    fn values_render_as_otlp_json_scalars() {
        let v = |x| Some(AnyValue { value: Some(x) });
        assert_eq!(
            render_value(v(any_value::Value::StringValue("a b".into())).as_ref()),
            "a b"
        );
        assert_eq!(
            render_value(v(any_value::Value::IntValue(42)).as_ref()),
            "42"
        );
        assert_eq!(
            render_value(v(any_value::Value::BoolValue(true)).as_ref()),
            "true"
        );
        assert_eq!(
            render_value(v(any_value::Value::DoubleValue(1.5)).as_ref()),
            "1.5"
        );
        assert_eq!(render_value(None), "");
    }
}
