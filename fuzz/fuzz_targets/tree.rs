//! The span-tree renderer on arbitrary parent links: never loops, never overflows the stack,
//! prints every span once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracesift::archive::lookup::{render_tree, SpanRow};

fuzz_target!(|data: &[u8]| {
    // Two bytes per span: its id and its parent (0 = none); ids may repeat.
    let spans: Vec<SpanRow> = data
        .chunks_exact(2)
        .map(|c| SpanRow {
            span_id: [c[0]; 8],
            parent: (c[1] != 0).then_some([c[1]; 8]),
            name: format!("s{}", c[0]),
            service: "svc".into(),
            start_ns: i64::from(c[0]),
            duration_ns: 1,
            status: if c[1] & 1 == 1 {
                "error".into()
            } else {
                "unset".into()
            },
            kind: "internal".into(),
            tier: "hot".into(),
            at: (0, 0),
        })
        .collect();
    let out = render_tree(&spans);
    assert_eq!(out.lines().count(), spans.len());
});
