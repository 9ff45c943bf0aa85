//! The walls of the house, checked on the source text (the same check a reviewer would do with
//! grep): `otlp` imports nothing of the crate; the pure core (watermark, store, policy
//! evaluation, the partition core and its stream clock, the lifecycle plan) reaches no Kafka
//! client, runtime or object store, not even through another module; `sample` never reaches
//! `source`, `sink` or `archive`; `archive` never reaches `sample`; only `clock` reads time.
//! Test modules (`#[cfg(test)]` to the end of a file) and comments do not count.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// A file's code without its test module and comment lines.
fn code(f: &Path) -> String {
    let s = std::fs::read_to_string(f).unwrap();
    let s = match s.find("#[cfg(test)]") {
        Some(i) => &s[..i],
        None => &s[..],
    };
    s.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The file a `crate::a::b::…` path lives in: the longest prefix that is a file.
fn resolve(path: &str) -> Option<PathBuf> {
    let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
    (1..=parts.len()).rev().find_map(|n| {
        let f = src().join(format!("{}.rs", parts[..n].join("/")));
        f.exists().then_some(f)
    })
}

/// Files `f` imports from the crate (`crate::…`, `super::…` and `self::…` paths: a
/// `pub use self::child::…` re-export makes whoever imports `f` reach `child`).
fn deps(f: &Path) -> BTreeSet<PathBuf> {
    let c = code(f);
    let mut out = BTreeSet::new();
    for (i, _) in c.match_indices("crate::") {
        let path: String = c[i + 7..]
            .chars()
            .take_while(|ch| ch.is_ascii_lowercase() || *ch == '_' || *ch == ':')
            .collect();
        if let Some(r) = resolve(path.trim_end_matches(':')) {
            out.insert(r);
        }
    }
    for (i, _) in c.match_indices("super::") {
        if i > 0 && c.as_bytes()[i - 1].is_ascii_alphanumeric() {
            continue;
        }
        let name: String = c[i + 7..]
            .chars()
            .take_while(|ch| ch.is_ascii_lowercase() || *ch == '_')
            .collect();
        let dir = f.parent().unwrap();
        let sibling = dir.join(format!("{name}.rs"));
        out.insert(if sibling.exists() {
            sibling
        } else {
            dir.with_extension("rs")
        });
    }
    for (i, _) in c.match_indices("self::") {
        if i > 0 && c.as_bytes()[i - 1].is_ascii_alphanumeric() {
            continue;
        }
        let name: String = c[i + 6..]
            .chars()
            .take_while(|ch| ch.is_ascii_lowercase() || *ch == '_')
            .collect();
        let child = f.with_extension("").join(format!("{name}.rs"));
        if child.exists() {
            out.insert(child);
        }
    }
    out.remove(f);
    out
}

/// Every file reachable from `f` through crate imports.
fn reach(f: &Path) -> BTreeSet<PathBuf> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![f.to_path_buf()];
    while let Some(x) = stack.pop() {
        if seen.insert(x.clone()) {
            stack.extend(deps(&x));
        }
    }
    seen
}

fn rel(p: &Path) -> String {
    p.strip_prefix(src()).unwrap().display().to_string()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn otlp_is_a_leaf() {
    for f in [
        "otlp.rs",
        "otlp/ids.rs",
        "otlp/wire.rs",
        "otlp/scan.rs",
        "otlp/mark.rs",
        "otlp/encode.rs",
        "otlp/threshold.rs",
    ] {
        let c = code(&src().join(f));
        assert!(!c.contains("crate::"), "{f} imports from the crate");
    }
}

#[test]
fn the_pure_core_reaches_no_kafka_client_runtime_or_object_store() {
    for f in [
        "store.rs",
        "store/config.rs",
        "source/watermark.rs",
        "sample.rs",
        "pipeline/core.rs",
        "pipeline/stream_time.rs",
        "archive/plan.rs",
    ] {
        for x in reach(&src().join(f)) {
            let c = code(&x);
            for lib in ["rdkafka", "tokio", "object_store"] {
                assert!(
                    !c.contains(&format!("{lib}::")) && !c.contains(&format!("use {lib}")),
                    "{f} reaches {} which uses {lib}",
                    rel(&x)
                );
            }
        }
    }
}

#[test]
fn sample_and_archive_keep_to_their_side() {
    let sample = reach(&src().join("sample.rs"));
    for x in &sample {
        let r = rel(x);
        for forbidden in ["source", "sink", "archive"] {
            assert!(
                !r.starts_with(forbidden),
                "sample reaches {r} ({forbidden})"
            );
        }
    }
    for x in reach(&src().join("archive.rs")) {
        assert!(
            !rel(&x).starts_with("sample"),
            "archive reaches {}",
            rel(&x)
        );
    }
}

#[test]
fn only_clock_reads_time() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    for f in files {
        let r = rel(&f);
        if r == "clock.rs" || r.starts_with("clock/") {
            continue;
        }
        let c = code(&f);
        for call in ["Instant::now", "SystemTime::now"] {
            assert!(!c.contains(call), "{r} calls {call}");
        }
    }
}

/// The room a file belongs to: its top-level module (`sink/kafka/sampled.rs` → `sink`).
fn room(f: &Path) -> String {
    let r = rel(f);
    let first = r.split('/').next().unwrap_or_default();
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn no_two_rooms_import_each_other() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut arrows = BTreeSet::new();
    for f in &files {
        for d in deps(f) {
            let (a, b) = (room(f), room(&d));
            if a != b {
                arrows.insert((a, b, rel(f), rel(&d)));
            }
        }
    }
    let mut both_ways = Vec::new();
    for (a, b, fa, fb) in &arrows {
        if a < b {
            if let Some((_, _, ga, gb)) = arrows.iter().find(|(x, y, _, _)| x == b && y == a) {
                both_ways.push(format!("{a} ↔ {b} ({fa} → {fb}; {ga} → {gb})"));
            }
        }
    }
    assert!(
        both_ways.is_empty(),
        "rooms importing each other: {both_ways:#?}"
    );
}
