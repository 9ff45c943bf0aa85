//! The Parquet schema is a contract: this pins `span_schema()` (v2, written) to
//! `schemas/spans-v2.arrow.txt` and `span_schema_v1()` (read) to `schemas/spans-v1.arrow.txt`
//! (one line per field: name, Arrow type, nullability), and checks that every column is
//! documented in `schemas/spans-v2.md` / `spans-v1.md`. A deliberate change updates both files (adding columns
//! only; a rename or retype is a new schema version).
#![allow(clippy::unwrap_used, clippy::expect_used)]

fn rendered(schema: &arrow_schema::Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| {
            format!(
                "{}: {} {}\n",
                f.name(),
                f.data_type(),
                if f.is_nullable() { "null" } else { "not null" }
            )
        })
        .collect()
}

fn pinned_and_documented(schema: &arrow_schema::Schema, golden: &str, doc: &str, version: &str) {
    let golden_path = format!("{}/schemas/{golden}", env!("CARGO_MANIFEST_DIR"));
    let now = rendered(schema);
    if std::env::var_os("TRACESIFT_BLESS").is_some() {
        std::fs::write(&golden_path, &now).unwrap();
    }
    let golden = std::fs::read_to_string(&golden_path).unwrap_or_default();
    assert_eq!(
        now, golden,
        "the {version} schema differs from {golden_path}: columns may be added, never renamed or \
         retyped; update the golden file (TRACESIFT_BLESS=1) and its .md"
    );
    for f in schema.fields() {
        assert!(
            doc.contains(&format!("| `{}` |", f.name())),
            "column {} is not documented in the {version} schema doc",
            f.name()
        );
    }
}

#[test]
fn schema_v2_is_pinned_and_documented() {
    pinned_and_documented(
        &tracesift::archive::span_schema(),
        "spans-v2.arrow.txt",
        include_str!("../schemas/spans-v2.md"),
        "v2",
    );
}

/// v1 is no longer written, but it is still read (and upgraded by compaction): its description
/// must not drift either.
#[test]
fn schema_v1_is_pinned_and_documented() {
    pinned_and_documented(
        &tracesift::archive::span_schema_v1(),
        "spans-v1.arrow.txt",
        include_str!("../schemas/spans-v1.md"),
        "v1",
    );
}

/// Every v1 column has a home in v2: the same name, or (for the nanosecond timestamps) the
/// exact `*_unix_nano` column beside a microsecond timestamp of the same name.
#[test]
fn every_v1_column_has_a_v2_home() {
    let v2 = tracesift::archive::span_schema();
    for f in tracesift::archive::span_schema_v1().fields() {
        assert!(
            v2.field_with_name(f.name()).is_ok(),
            "v1 column {} is missing from v2",
            f.name()
        );
    }
    for t in ["start_time", "end_time"] {
        assert!(v2.field_with_name(&format!("{t}_unix_nano")).is_ok());
    }
}

#[test]
fn object_paths_never_come_from_span_data() {
    use tracesift::archive::{hot_segment_path, HourPartition};
    // Only the topic (validated at config load, escaped here anyway), partition, offsets, the
    // hour of a timestamp and a hash make a path.
    let hour = HourPartition::of_nanos(1_760_000_000_000_000_000);
    for topic in [
        "../../etc",
        "a/b",
        "x%2F..",
        "tab\there",
        "ünïcode",
        &"l".repeat(300),
    ] {
        let p = hot_segment_path(topic, 3, 10, 20, hour, 0xabc).to_string();
        let file = p.rsplit('/').next().unwrap();
        assert!(p.starts_with("spans/v2/date=2025-10-09/hour=08/"), "{p}");
        assert_eq!(p.matches('/').count(), 4, "no extra path segment: {p}");
        assert!(!p.contains(".."), "{p}");
        assert!(
            file.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "{file}"
        );
    }
}
