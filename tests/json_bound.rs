//! The OTLP/JSON decoder's memory is bounded by its input: an 8 MiB record of empty spans (about
//! 2.8 million `{}`) is converted while the process's resident memory grows by at most a small
//! multiple of the record (measured with the kernel's peak-RSS counter, reset just before).
//!
//! (Through the broker this case is 4 MiB, in `tests/poison.rs`: tansu 0.6.0 does not serve
//! records of 6 MiB or more to consumers.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

#[test]
fn eight_mib_of_empty_json_spans_decode_within_a_small_multiple_of_the_record() {
    let mut json = String::from(r#"{"resourceSpans":[{"scopeSpans":[{"spans":["#);
    while json.len() < 8 << 20 {
        json.push_str("{},");
    }
    json.push_str("{}]}]}]}");
    let input = json.len() as u64;
    // Reset the peak to the current RSS ("5" to clear_refs, Linux 4.0+), then decode.
    std::fs::write("/proc/self/clear_refs", "5").expect("reset peak RSS");
    let before = status_kib("VmRSS:") * 1024;
    let proto = tracesift::otlp::json_to_proto(json.as_bytes()).unwrap();
    let growth = (status_kib("VmHWM:") * 1024).saturating_sub(before);
    println!(
        "input {input} B, protobuf {} B, peak RSS growth {growth} B ({:.2}x)",
        proto.len(),
        growth as f64 / input as f64
    );
    assert!(
        growth <= 3 * input,
        "decoding {input} bytes of JSON grew RSS by {growth} bytes at peak"
    );
    // And the record is refused (no span has a trace id), not taken as zero spans.
    let mut out = Vec::new();
    let e = tracesift::otlp::scan_request_into(&proto, &tracesift::otlp::NoProbe, 0, &mut out)
        .unwrap_err();
    assert!(e.to_string().contains("invalid trace id"), "{e}");
}
