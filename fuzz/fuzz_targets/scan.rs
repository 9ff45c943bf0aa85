//! The protobuf scanner on arbitrary bytes: never panics, and what it accepts the strict
//! decoder accepts, with everything written from it (marked, spliced, chunked, Parquet).
#![no_main]

#[path = "../../tests/support/strict.rs"]
mod strict;

use libfuzzer_sys::fuzz_target;
use tracesift::otlp::{self, Encoding, NoProbe};

fuzz_target!(|data: &[u8]| {
    let record = bytes::Bytes::copy_from_slice(data);
    let mut out = Vec::new();
    if otlp::scan_record(&record, Encoding::OtlpProto, &NoProbe, 0, &mut out).is_ok() {
        strict::check_accepted(&record, &out);
    }
});
