//! Property test of every decoder entry on mutated real records (no broker needed).
//!
//! Seeds: generated traffic (`tracesift gen`'s records, protobuf and OTLP/JSON), the hostile
//! records of `tests/support/hostile.rs` under 64 KiB, and the corpus files in
//! `tests/fixtures/hostile/`. Each case applies a few random edits (bit flips, byte sets,
//! inserts, deletes, truncation, duplicated ranges) and asserts:
//! - nothing panics (scan with and without attribute probing, JSON conversion, splicing,
//!   marking, chunking, the Parquet encoder, the span-tree renderer);
//! - when the scanner accepts a record, the strict `prost` decoder accepts the whole record and
//!   every resource, scope and span kept from it;
//! - every request written from accepted spans (per trace, per chunk, marked) decodes strictly
//!   with exactly those spans, and stays within the documented amplification bound;
//! - the Parquet encoder takes every accepted span.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use proptest::prelude::*;
use prost::Message;
use tracesift::gen::{self, GenOptions};
use tracesift::otlp::{self, Encoding, NoProbe, RawValue, SpanProbe};

/// A probe that reads every attribute value and tracestate, so those paths run too.
struct ReadAll;

impl SpanProbe for ReadAll {
    fn wants_attributes(&self) -> bool {
        true
    }
    fn resource_attribute(&self, key: &[u8], value: RawValue<'_>) -> u128 {
        u128::from(!key.is_empty() && matches!(value.get(), otlp::AnyValueRef::Str(_)))
    }
    fn span_attribute(&self, key: &[u8], value: RawValue<'_>) -> u128 {
        u128::from(!key.is_empty() && matches!(value.get(), otlp::AnyValueRef::Int(_))) << 1
    }
    fn trace_state(&self, ts: &str) -> u128 {
        u128::from(!ts.is_empty()) << 2
    }
}

fn seeds() -> &'static [(Vec<u8>, Encoding)] {
    static SEEDS: std::sync::OnceLock<Vec<(Vec<u8>, Encoding)>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(build_seeds)
}

fn build_seeds() -> Vec<(Vec<u8>, Encoding)> {
    let (records, _) = gen::plan_records(&GenOptions {
        traces: 12,
        seed: 3,
        start_ns: support::recent_ns(),
        ..Default::default()
    });
    let mut out: Vec<(Vec<u8>, Encoding)> = Vec::new();
    for r in records.iter().take(8) {
        out.push((r.value.clone(), Encoding::OtlpProto));
        let req = ExportTraceServiceRequest::decode(r.value.as_slice()).unwrap();
        out.push((serde_json::to_vec(&req).unwrap(), Encoding::OtlpJson));
    }
    for (_, value, content_type, _) in support::hostile::hostile() {
        if value.len() <= 64 << 10 {
            let enc = if content_type.is_some() {
                Encoding::OtlpJson
            } else {
                Encoding::OtlpProto
            };
            out.push((value, enc));
        }
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile");
    let files =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {} missing: {e}", dir.display()));
    for f in files {
        let p = f.unwrap().path();
        let enc = if p.extension().is_some_and(|e| e == "json") {
            Encoding::OtlpJson
        } else {
            Encoding::OtlpProto
        };
        out.push((std::fs::read(&p).unwrap(), enc));
    }
    out
}

#[derive(Debug, Clone)]
enum Edit {
    Flip(prop::sample::Index, u8),
    Set(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
    Delete(prop::sample::Index, usize),
    Truncate(prop::sample::Index),
    Duplicate(prop::sample::Index, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<prop::sample::Index>(), 0u8..8).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 1..6)
        )
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<prop::sample::Index>(), 1usize..16).prop_map(|(i, n)| Edit::Delete(i, n)),
        any::<prop::sample::Index>().prop_map(Edit::Truncate),
        (any::<prop::sample::Index>(), 1usize..64).prop_map(|(i, n)| Edit::Duplicate(i, n)),
    ]
}

fn apply(mut v: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        if v.is_empty() {
            break;
        }
        match e {
            Edit::Flip(i, b) => {
                let i = i.index(v.len());
                v[i] ^= 1 << b;
            }
            Edit::Set(i, b) => {
                let i = i.index(v.len());
                v[i] = *b;
            }
            Edit::Insert(i, b) => {
                let i = i.index(v.len() + 1);
                v.splice(i..i, b.iter().copied());
            }
            Edit::Delete(i, n) => {
                let i = i.index(v.len());
                let end = (i + n).min(v.len());
                v.drain(i..end);
            }
            Edit::Truncate(i) => {
                let i = i.index(v.len());
                v.truncate(i);
            }
            Edit::Duplicate(i, n) => {
                let i = i.index(v.len());
                let end = (i + n).min(v.len());
                let copy = v[i..end].to_vec();
                v.splice(end..end, copy);
            }
        }
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_records_never_panic_and_accepted_means_strict(
        seed in any::<prop::sample::Index>(),
        edits in prop::collection::vec(edit(), 0..5),
        arrival_ms in prop_oneof![Just(0u64), Just(support::recent_ns() / 1_000_000)],
    ) {
        let seeds = seeds();
        let (base, enc) = &seeds[seed.index(seeds.len())];
        let record = Bytes::from(apply(base.clone(), &edits));
        let mut out = Vec::new();
        let plain = otlp::scan_record(&record, *enc, &NoProbe, arrival_ms, &mut out);
        let plain_spans = out.len();
        let probed = otlp::scan_record(&record, *enc, &ReadAll, arrival_ms, &mut out);
        prop_assert_eq!(plain.is_ok(), probed.is_ok(), "{:?} / {:?}", plain, probed);
        prop_assert_eq!(plain_spans, out.len());
        if probed.is_ok() {
            let proto = match enc {
                Encoding::OtlpProto => record.clone(),
                Encoding::OtlpJson => otlp::json_to_proto(&record).unwrap(),
            };
            support::strict::check_accepted(&proto, &out);
        }
    }
}

/// The corpus verdicts stay what they are: each refused file is refused with a reason.
#[test]
fn corpus_files_are_refused_or_accepted_as_named() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile");
    let mut n = 0;
    for f in std::fs::read_dir(&dir).unwrap() {
        let p = f.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let enc = if name.ends_with(".json") {
            Encoding::OtlpJson
        } else {
            Encoding::OtlpProto
        };
        let record = Bytes::from(std::fs::read(&p).unwrap());
        let mut out = Vec::new();
        let r = otlp::scan_record(
            &record,
            enc,
            &ReadAll,
            support::recent_ns() / 1_000_000,
            &mut out,
        );
        if name.starts_with("refused-") {
            let e = r.expect_err(&name);
            assert!(!e.to_string().is_empty(), "{name}");
        } else if name.starts_with("accepted-") {
            r.unwrap_or_else(|e| panic!("{name}: {e}"));
            let proto = match enc {
                Encoding::OtlpProto => record.clone(),
                Encoding::OtlpJson => otlp::json_to_proto(&record).unwrap(),
            };
            support::strict::check_accepted(&proto, &out);
        } else {
            panic!("corpus file {name} must start with refused- or accepted-");
        }
        n += 1;
    }
    assert!(n >= 7, "corpus has {n} files");
}
