//! The OTLP/JSON decoder on arbitrary bytes: never panics; what it converts and the scanner
//! accepts decodes strictly.
#![no_main]

#[path = "../../tests/support/strict.rs"]
mod strict;

use libfuzzer_sys::fuzz_target;
use tracesift::otlp::{self, Encoding, NoProbe};

fuzz_target!(|data: &[u8]| {
    let record = bytes::Bytes::copy_from_slice(data);
    let mut out = Vec::new();
    if otlp::scan_record(&record, Encoding::OtlpJson, &NoProbe, 0, &mut out).is_ok() {
        let proto = otlp::json_to_proto(data).expect("converted once already");
        strict::check_accepted(&proto, &out);
    }
});
