//! The service graph from whole traces (issue 28): traces with known client/server pairs —
//! split over records, through a queue, to a database, to an uninstrumented peer, and with the
//! caller's span missing — give exactly the edges, failed counts, latencies and unpaired
//! counts the module's rules say, and exemplars only for kept traces.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::Bytes;
use opentelemetry_proto::tonic::trace::v1::{status, Span, Status};
use tracesift::otlp::{self, NoProbe, SpanRef};
use tracesift::telemetry::exposition::{Format, Writer};
use tracesift::telemetry::service_graph::{ServiceGraph, ServiceGraphConfig};
use tracesift::telemetry::span_metrics::Naming;

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;
const INTERNAL: i32 = 1;

fn span(trace: u8, id: u8, parent: u8, kind: i32, error: bool, ms: u64) -> Span {
    let start = 1_700_000_000_000_000_000;
    Span {
        trace_id: vec![0x10 + trace; 16],
        span_id: vec![id; 8],
        parent_span_id: if parent == 0 { vec![] } else { vec![parent; 8] },
        name: format!("op{id}"),
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: start + ms * 1_000_000,
        status: Some(Status {
            code: if error {
                status::StatusCode::Error as i32
            } else {
                status::StatusCode::Ok as i32
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn with(mut s: Span, k: &str, v: &str) -> Span {
    s.attributes.push(support::kv_str(k, v));
    s
}

/// The buffered spans of records `(service, spans)`, each scanned on its own as the
/// pipeline reads them.
fn buffered(records: Vec<(&str, Vec<Span>)>) -> Vec<SpanRef> {
    let mut out = Vec::new();
    for (service, spans) in records {
        let bytes = Bytes::from(support::service_record(service, spans));
        otlp::scan_request(&bytes, &NoProbe, 0, |_, _, s| out.push(s)).unwrap();
    }
    out
}

/// frontend (root SERVER 1 → CLIENT 2) → checkout (SERVER 3 → CLIENT 4 to the `orders`
/// database, INTERNAL 5): three edges. The checkout spans come in a record of their own.
fn shop(t: u8, checkout_error: bool) -> Vec<SpanRef> {
    buffered(vec![
        (
            "frontend",
            vec![
                span(t, 1, 0, SERVER, false, 50),
                span(t, 2, 1, CLIENT, false, 40),
            ],
        ),
        (
            "checkout",
            vec![
                span(t, 3, 2, SERVER, checkout_error, 30),
                with(
                    with(span(t, 4, 3, CLIENT, false, 7), "db.system", "postgresql"),
                    "db.name",
                    "orders",
                ),
                span(t, 5, 3, INTERNAL, false, 1),
            ],
        ),
    ])
}

fn graph() -> ServiceGraph {
    ServiceGraph::new(
        ServiceGraphConfig {
            enabled: true,
            ..Default::default()
        }
        .settings(Some(Naming::Collector.exemplar_labels())),
    )
}

#[test]
fn edges_of_whole_traces_are_counted_exactly() {
    let mut g = graph();
    for t in 0..10u8 {
        // Every third checkout fails; every other trace is kept.
        let kept = (t % 2 == 0).then_some(([0x10 + t; 16], 1_700_000_000_000));
        g.trace(&shop(t, t % 3 == 0), kept, 1_000);
    }
    assert_eq!(
        g.requests("user", "frontend", "virtual_node"),
        Some((10, 0))
    );
    assert_eq!(g.requests("frontend", "checkout", ""), Some((10, 4)));
    assert_eq!(g.requests("checkout", "orders", "database"), Some((10, 0)));
    assert_eq!(g.client_count("frontend", "checkout", ""), 10);
    assert_eq!(
        g.client_count("user", "frontend", "virtual_node"),
        0,
        "a virtual user has no client span"
    );
    assert_eq!(g.total_requests(), 30, "no other edge");

    // Through a queue; to a named and to an unnamed peer; the caller's span missing.
    let queue = buffered(vec![
        (
            "frontend",
            vec![
                span(20, 1, 0, INTERNAL, false, 9),
                span(20, 2, 1, PRODUCER, true, 2),
            ],
        ),
        ("mailer", vec![span(20, 3, 2, CONSUMER, false, 4)]),
    ]);
    g.trace(&queue, None, 2_000);
    assert_eq!(
        g.requests("frontend", "mailer", "messaging_system"),
        Some((1, 1))
    );
    let peers = buffered(vec![(
        "frontend",
        vec![
            span(21, 1, 0, SERVER, false, 9),
            with(span(21, 2, 1, CLIENT, false, 3), "peer.service", "payments"),
            span(21, 3, 1, CLIENT, true, 3),
        ],
    )]);
    g.trace(&peers, None, 2_000);
    assert_eq!(
        g.requests("frontend", "payments", "virtual_node"),
        Some((1, 0))
    );
    assert_eq!(
        g.requests("frontend", "unknown", "virtual_node"),
        Some((1, 1))
    );
    let orphan = buffered(vec![("checkout", vec![span(22, 3, 9, SERVER, false, 5)])]);
    g.trace(&orphan, None, 2_000);
    assert_eq!(
        g.unpaired("checkout"),
        1,
        "its caller's span is not in the trace"
    );
    assert_eq!(g.requests("user", "checkout", "virtual_node"), None);
    // A server span under an internal span is not a call either.
    let internal = buffered(vec![(
        "checkout",
        vec![
            span(23, 1, 0, INTERNAL, false, 5),
            span(23, 2, 1, SERVER, false, 5),
        ],
    )]);
    g.trace(&internal, None, 2_000);
    assert_eq!(g.unpaired("checkout"), 2);

    // Exemplars: spans of kept traces only, on the bucket of their duration.
    let mut om = String::new();
    let mut w = Writer::new(&mut om, Format::OpenMetrics);
    g.write(&mut w);
    w.finish();
    let exemplars: Vec<&str> = om.lines().filter(|l| l.contains(" # {")).collect();
    assert!(!exemplars.is_empty(), "{om}");
    for line in &exemplars {
        let trace = line.split("trace_id=\"").nth(1).unwrap();
        let first = u8::from_str_radix(&trace[..2], 16).unwrap();
        assert_eq!(first % 2, 0, "only kept traces: {line}");
    }
    let server_30ms = om
        .lines()
        .find(|l| {
            l.starts_with("traces_service_graph_request_server_seconds_bucket{client=\"frontend\",server=\"checkout\"")
                && l.contains("le=\"0.05\"")
        })
        .unwrap();
    assert!(
        server_30ms.contains(&format!("span_id=\"{}\"}} 0.03 ", "03".repeat(8))),
        "the checkout server span's 30 ms: {server_30ms}"
    );
    assert!(om.contains("traces_service_graph_request_failed_total{client=\"frontend\",server=\"checkout\",connection_type=\"\"} 4\n"), "{om}");
    assert!(
        om.contains("# TYPE traces_service_graph_request counter\n"),
        "{om}"
    );
}

#[test]
fn the_edge_limit_folds_further_edges_into_one_overflow_edge() {
    let mut g = ServiceGraph::new(
        ServiceGraphConfig {
            enabled: true,
            max_edges: 3,
            ..Default::default()
        }
        .settings(None),
    );
    for t in 0..10u8 {
        let spans = buffered(vec![(
            "frontend",
            vec![
                span(t, 1, 0, INTERNAL, false, 1),
                with(
                    span(t, 2, 1, CLIENT, false, 1),
                    "peer.service",
                    &format!("peer{t}"),
                ),
            ],
        )]);
        g.trace(&spans, None, 1);
    }
    let mut text = String::new();
    let mut w = Writer::new(&mut text, Format::Prometheus);
    g.write(&mut w);
    assert!(text.contains("tracesift_service_graph_edges 3\n"), "{text}");
    assert!(
        text.contains("traces_service_graph_request_total{otel_metric_overflow=\"true\"} 7\n"),
        "{text}"
    );
    assert!(
        !text.contains(" # {"),
        "no exemplars in the Prometheus text"
    );
}
