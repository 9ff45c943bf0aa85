//! The Parquet schema is a contract: this pins `span_schema()` to `schemas/spans-v1.arrow.txt`
//! (one line per field: name, Arrow type, nullability), and checks that every column is
//! documented in `schemas/spans-v1.md`. A deliberate change updates both files (adding columns
//! only; a rename or retype is a new schema version).
#![allow(clippy::unwrap_used, clippy::expect_used)]

fn rendered() -> String {
    tracesift::archive::span_schema()
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

#[test]
fn schema_v1_is_pinned_and_documented() {
    let golden_path = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/spans-v1.arrow.txt");
    let now = rendered();
    if std::env::var_os("TRACESIFT_BLESS").is_some() {
        std::fs::write(golden_path, &now).unwrap();
    }
    let golden = std::fs::read_to_string(golden_path).unwrap_or_default();
    assert_eq!(
        now, golden,
        "span_schema() differs from {golden_path}: columns may be added, never renamed or \
         retyped; update the golden file (TRACESIFT_BLESS=1) and schemas/spans-v1.md"
    );
    let doc = include_str!("../schemas/spans-v1.md");
    for f in tracesift::archive::span_schema().fields() {
        assert!(
            doc.contains(&format!("| `{}` |", f.name())),
            "column {} is not documented in schemas/spans-v1.md",
            f.name()
        );
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
        assert!(p.starts_with("spans/v1/date=2025-10-09/hour=08/"), "{p}");
        assert_eq!(p.matches('/').count(), 4, "no extra path segment: {p}");
        assert!(!p.contains(".."), "{p}");
        assert!(
            file.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "{file}"
        );
    }
}
