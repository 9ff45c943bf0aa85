//! The service graph from whole traces, as the Collector's `servicegraph` connector and
//! Tempo's metrics-generator name it — computed once per trace at its decision (every trace,
//! kept or not), with every span of the trace in hand. Where the connector keeps half-edges in
//! a store until their other half arrives or expires, here a client span and its server child
//! are looked up in the same trace: no pairing store, no guess about how long to wait.
//!
//! The edges of one trace:
//! - a `SERVER` span whose parent is a `CLIENT` span: `client` → `server` (the two spans'
//!   services), `connection_type=""`; a `CONSUMER` span whose parent is a `PRODUCER` span:
//!   the same with `connection_type="messaging_system"`. Failed when either span's status is
//!   `ERROR`; the client span's duration goes to `..._client_seconds`, the server span's to
//!   `..._server_seconds`.
//! - a root `SERVER` (or `CONSUMER`) span: `user` → its service, `connection_type="virtual_node"`
//!   (server latency only).
//! - a `CLIENT` (or `PRODUCER`) span with no server child in the trace: to the database named by
//!   `database_name_attribute` (`connection_type="database"`, its duration on both sides), else
//!   to the first of `virtual_node_peer_attributes` it has, else to `unknown`
//!   (`connection_type="virtual_node"`, client latency only).
//! - a `SERVER` span whose parent is not a client span of the trace (the caller's span is
//!   missing, or the parent is an internal span): no edge — the caller cannot be named — but
//!   counted in `traces_service_graph_unpaired_spans_total{server}`.

use serde::{Deserialize, Serialize};

use super::exposition::{Exemplar, ExemplarLabels, Kind, Writer};
use super::span_metrics::{
    check_buckets, durations, label_pairs, service_name, Hist, Table, COLLECTOR_BUCKETS,
    MAX_LABEL_BYTES,
};
use crate::otlp::fields::{AnyRef, KvListRef, SpanRanges};
use crate::otlp::{ScopeCtx, SpanRef};

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;
const ERROR: i32 = 2;

/// `telemetry.service_graph:` — edges between services from every trace, at its decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceGraphConfig {
    /// Compute the graph.
    pub enabled: bool,
    /// Bounds of the client and server latency histograms (the connector's).
    pub latency_histogram_buckets: Vec<crate::settings::duration::Dur>,
    /// Span attributes that name the server of a client span without a server child, first
    /// found wins.
    pub virtual_node_peer_attributes: Vec<String>,
    /// The span (else resource) attribute that makes a client span a call to a database of
    /// that name.
    pub database_name_attribute: String,
    /// Most edges held; further edges count in one `otel_metric_overflow="true"` edge.
    pub max_edges: usize,
    /// An edge not seen for this long (stream time) is dropped; 0s = never.
    #[serde(with = "crate::settings::duration")]
    pub metrics_expiration: std::time::Duration,
}

impl Default for ServiceGraphConfig {
    fn default() -> Self {
        ServiceGraphConfig {
            enabled: false,
            latency_histogram_buckets: durations(&COLLECTOR_BUCKETS),
            virtual_node_peer_attributes: vec![
                "peer.service".into(),
                "db.name".into(),
                "db.system".into(),
            ],
            database_name_attribute: "db.name".into(),
            max_edges: 10_000,
            metrics_expiration: std::time::Duration::from_secs(300),
        }
    }
}

impl ServiceGraphConfig {
    /// Every problem of this block.
    pub fn check(&self, e: &mut Vec<crate::settings::ConfigError>) {
        let p = "telemetry.service_graph";
        check_buckets(
            format!("{p}.latency_histogram_buckets"),
            &self.latency_histogram_buckets,
            e,
        );
        if !(1..=1_000_000).contains(&self.max_edges) {
            e.push(crate::settings::ConfigError::new(
                format!("{p}.max_edges"),
                "between 1 and 1000000 edges",
            ));
        }
    }

    /// The most the graph can hold, in bytes (0 when disabled): per edge three label values
    /// (cut at 256 bytes), two histograms with exemplars, bookkeeping; as many unpaired-span
    /// counters.
    pub fn bound_bytes(&self) -> u64 {
        if !self.enabled {
            return 0;
        }
        let labels = 3 * (MAX_LABEL_BYTES as u64 + 16);
        let hists = 2
            * (self.latency_histogram_buckets.len() as u64 + 1)
            * (8 + std::mem::size_of::<Option<Exemplar>>() as u64);
        self.max_edges as u64 * (labels + hists + 200 + (MAX_LABEL_BYTES as u64 + 100))
    }

    /// The graph's settings, exemplars written with `exemplar_labels` (none: no exemplars).
    pub fn settings(&self, exemplar_labels: Option<ExemplarLabels>) -> GraphSettings {
        GraphSettings {
            buckets: self
                .latency_histogram_buckets
                .iter()
                .map(|b| b.as_secs_f64())
                .collect(),
            peer_attributes: self.virtual_node_peer_attributes.clone(),
            database_attribute: self.database_name_attribute.clone(),
            max_edges: self.max_edges,
            expiration_ms: self.metrics_expiration.as_millis() as u64,
            exemplar_labels,
        }
    }
}

/// What the graph is built with.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphSettings {
    /// Latency bounds, seconds.
    pub buckets: Vec<f64>,
    /// `virtual_node_peer_attributes`.
    pub peer_attributes: Vec<String>,
    /// `database_name_attribute`.
    pub database_attribute: String,
    /// Most edges.
    pub max_edges: usize,
    /// Expiry, ms of stream time (0 = never).
    pub expiration_ms: u64,
    /// Exemplar label names, or none for no exemplars.
    pub exemplar_labels: Option<ExemplarLabels>,
}

/// One edge seen in a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeObs {
    /// The calling service (`user` for a root server span).
    pub client: String,
    /// The called service, database or peer (`unknown` when nothing names it).
    pub server: String,
    /// `""`, `messaging_system`, `database` or `virtual_node`.
    pub connection_type: &'static str,
    /// Either side's status is `ERROR`.
    pub failed: bool,
    /// The client span's duration and id, if there is a client span.
    pub client_side: Option<(f64, [u8; 8])>,
    /// The server span's duration and id (a database call: the client span's).
    pub server_side: Option<(f64, [u8; 8])>,
}

#[derive(Debug, Clone)]
struct Side {
    span_id: [u8; 8],
    parent: [u8; 8],
    kind: i32,
    failed: bool,
    seconds: f64,
    service: usize,
    span: usize,
    /// The span's attribute window (for a client span without a server child).
    attributes: std::ops::Range<usize>,
}

fn id8(buf: &[u8], r: &std::ops::Range<usize>) -> [u8; 8] {
    buf.get(r.clone())
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .unwrap_or([0; 8])
}

fn attr_text(v: AnyRef<'_>) -> Option<String> {
    match v {
        AnyRef::Str(s) if !s.is_empty() => Some(s.to_string()),
        AnyRef::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// The edges of one whole trace (see the module's rules), appended to `out`; returns the
/// services of its server spans that have no client span to pair with.
pub fn edges(spans: &[SpanRef], s: &GraphSettings, out: &mut Vec<EdgeObs>) -> Vec<String> {
    let mut services: Vec<String> = Vec::new();
    let mut last_ctx: *const ScopeCtx = std::ptr::null();
    let mut service = 0;
    let mut sides: Vec<Side> = Vec::new();
    for (i, sp) in spans.iter().enumerate() {
        // A short walk tells the kind; only the spans that can be one side of a call are
        // read whole.
        match SpanRanges::name_and_kind(&sp.bytes) {
            Ok((_, kind)) if (SERVER..=CONSUMER).contains(&kind) => {}
            _ => continue,
        }
        let Ok(f) = SpanRanges::read(&sp.bytes) else {
            continue;
        };
        let ctx = std::sync::Arc::as_ptr(&sp.ctx);
        if ctx != last_ctx {
            last_ctx = ctx;
            let resource = crate::otlp::field_body_of(&sp.ctx.resource_field);
            let name = service_name(&resource);
            service = match services.iter().position(|s| s == name) {
                Some(p) => p,
                None => {
                    services.push(name.to_string());
                    services.len() - 1
                }
            };
        }
        sides.push(Side {
            span_id: id8(&sp.bytes, &f.span_id),
            parent: id8(&sp.bytes, &f.parent_span_id),
            kind: f.kind,
            failed: f.status_code == ERROR,
            seconds: f.end_ns.saturating_sub(f.start_ns) as f64 / 1e9,
            service,
            span: i,
            attributes: f.attributes,
        });
    }
    let mut callers: Vec<usize> = (0..sides.len())
        .filter(|&i| matches!(sides[i].kind, CLIENT | PRODUCER))
        .collect();
    callers.sort_by_key(|&i| sides[i].span_id);
    let mut paired = vec![false; sides.len()];
    let mut unpaired = Vec::new();
    for server in sides.iter().filter(|x| matches!(x.kind, SERVER | CONSUMER)) {
        let want = if server.kind == SERVER {
            CLIENT
        } else {
            PRODUCER
        };
        let server_side = Some((server.seconds, server.span_id));
        if server.parent == [0; 8] {
            out.push(EdgeObs {
                client: "user".into(),
                server: services[server.service].clone(),
                connection_type: "virtual_node",
                failed: server.failed,
                client_side: None,
                server_side,
            });
            continue;
        }
        let found = callers
            .binary_search_by_key(&server.parent, |&i| sides[i].span_id)
            .ok()
            .map(|p| callers[p])
            .filter(|&c| sides[c].kind == want);
        let Some(c) = found else {
            unpaired.push(services[server.service].clone());
            continue;
        };
        paired[c] = true;
        let client = &sides[c];
        out.push(EdgeObs {
            client: services[client.service].clone(),
            server: services[server.service].clone(),
            connection_type: if want == CLIENT {
                ""
            } else {
                "messaging_system"
            },
            failed: client.failed || server.failed,
            client_side: Some((client.seconds, client.span_id)),
            server_side,
        });
    }
    for c in callers.into_iter().filter(|&c| !paired[c]) {
        let client = &sides[c];
        let sp = &spans[client.span];
        let attrs = sp
            .bytes
            .get(client.attributes.clone())
            .map(|a| KvListRef::new(a, 9));
        let lookup = |key: &str| -> Option<String> {
            attrs
                .as_ref()
                .and_then(|a| a.get(key).ok().flatten())
                .and_then(attr_text)
        };
        let database = lookup(&s.database_attribute).or_else(|| {
            let resource = crate::otlp::field_body_of(&sp.ctx.resource_field);
            KvListRef::new(&resource, 1)
                .get(&s.database_attribute)
                .ok()
                .flatten()
                .and_then(attr_text)
        });
        let side = Some((client.seconds, client.span_id));
        let (server, connection_type, server_side) = match database {
            Some(db) => (db, "database", side),
            None => (
                s.peer_attributes
                    .iter()
                    .find_map(|k| lookup(k))
                    .unwrap_or_else(|| "unknown".into()),
                "virtual_node",
                None,
            ),
        };
        out.push(EdgeObs {
            client: services[client.service].clone(),
            server,
            connection_type,
            failed: client.failed,
            client_side: side,
            server_side,
        });
    }
    unpaired
}

#[derive(Debug, Clone, Default)]
struct EdgeRow {
    requests: u64,
    failed: u64,
    client: Hist,
    server: Hist,
}

/// The graph's edges and unpaired-span counts.
#[derive(Debug)]
pub struct ServiceGraph {
    settings: GraphSettings,
    edges: Table<EdgeRow>,
    unpaired: Table<u64>,
    scratch: Vec<EdgeObs>,
}

impl ServiceGraph {
    /// An empty graph.
    pub fn new(settings: GraphSettings) -> ServiceGraph {
        ServiceGraph {
            edges: Table::new(settings.max_edges),
            unpaired: Table::new(settings.max_edges),
            settings,
            scratch: Vec::new(),
        }
    }

    /// Counts the edges of one decided trace; a kept trace's spans become exemplars
    /// (`trace_id`, at `wall_ms`).
    pub fn trace(&mut self, spans: &[SpanRef], kept: Option<([u8; 16], u64)>, now_ms: u64) {
        let mut found = std::mem::take(&mut self.scratch);
        found.clear();
        let unpaired = edges(spans, &self.settings, &mut found);
        for e in &found {
            self.observe(e, kept, now_ms);
        }
        for server in unpaired {
            *self.unpaired.row(&[&server], now_ms) += 1;
        }
        self.scratch = found;
    }

    /// Counts one edge.
    pub fn observe(&mut self, e: &EdgeObs, kept: Option<([u8; 16], u64)>, now_ms: u64) {
        let buckets = &self.settings.buckets;
        let exemplars = self.settings.exemplar_labels.is_some();
        let row = self
            .edges
            .row(&[&e.client, &e.server, e.connection_type], now_ms);
        row.requests += 1;
        row.failed += u64::from(e.failed);
        for (hist, side) in [
            (&mut row.client, e.client_side),
            (&mut row.server, e.server_side),
        ] {
            let Some((seconds, span_id)) = side else {
                continue;
            };
            hist.observe(buckets, seconds);
            if let (true, Some((trace_id, at_ms))) = (exemplars, kept) {
                hist.exemplar(
                    buckets,
                    Exemplar {
                        trace_id,
                        span_id,
                        value: seconds,
                        at_ms,
                    },
                );
            }
        }
    }

    /// The expiration, ms of stream time (0 = never).
    pub fn expiration_ms(&self) -> u64 {
        self.settings.expiration_ms
    }

    /// Drops edges unseen for the expiration.
    pub fn expire(&mut self, now_ms: u64) {
        self.edges.expire(now_ms, self.settings.expiration_ms);
        self.unpaired.expire(now_ms, self.settings.expiration_ms);
    }

    /// Requests and failed requests of an edge (tests and tools).
    pub fn requests(
        &self,
        client: &str,
        server: &str,
        connection_type: &str,
    ) -> Option<(u64, u64)> {
        self.edges
            .find(&[client, server, connection_type])
            .map(|r| (r.requests, r.failed))
    }

    /// Unpaired server spans of a service.
    pub fn unpaired(&self, server: &str) -> u64 {
        self.unpaired.find(&[server]).map_or(0, |n| *n)
    }

    /// The graph's families into `w`.
    pub fn write(&self, w: &mut Writer<'_>) {
        let names = [
            "client".to_string(),
            "server".into(),
            "connection_type".into(),
        ];
        fn pairs<'a>(names: &'a [String], v: &[&'a str]) -> Vec<(&'a str, &'a str)> {
            let mut p = label_pairs(names, v);
            // The connection type is written even when empty, as the connector does.
            if v.len() == 3 && v[2].is_empty() {
                p.push(("connection_type", ""));
            }
            p
        }
        let exemplar_labels = self.settings.exemplar_labels.unwrap_or(ExemplarLabels {
            trace: "trace_id",
            span: Some("span_id"),
        });
        type Pick = fn(&EdgeRow) -> u64;
        let counters: [(&str, &str, Pick); 2] = [
            (
                "traces_service_graph_request_total",
                "Requests between two services (client → server), from every trace.",
                |r| r.requests,
            ),
            (
                "traces_service_graph_request_failed_total",
                "Requests between two services where either span's status is ERROR.",
                |r| r.failed,
            ),
        ];
        for (name, help, pick) in counters {
            w.family(name, Kind::Counter, help);
            for (v, r) in self.edges.rows() {
                w.sample(name, &pairs(&names, &v), None, pick(r) as f64, None);
            }
        }
        type Side = fn(&EdgeRow) -> &Hist;
        let hists: [(&str, &str, Side); 2] = [
            (
                "traces_service_graph_request_client_seconds",
                "Client span durations of each edge; exemplars are spans of kept traces.",
                |r| &r.client,
            ),
            (
                "traces_service_graph_request_server_seconds",
                "Server span durations of each edge; exemplars are spans of kept traces.",
                |r| &r.server,
            ),
        ];
        for (name, help, side) in hists {
            w.family(name, Kind::Histogram, help);
            for (v, r) in self.edges.rows() {
                side(r).write(
                    w,
                    name,
                    &pairs(&names, &v),
                    &self.settings.buckets,
                    exemplar_labels,
                );
            }
        }
        let name = "traces_service_graph_unpaired_spans_total";
        w.family(
            name,
            Kind::Counter,
            "Server spans whose caller's span is not in the trace (no edge can name the client).",
        );
        for (v, n) in self.unpaired.rows() {
            let server = ["server".to_string()];
            w.sample(name, &label_pairs(&server, &v), None, *n as f64, None);
        }
        w.family(
            "tracesift_service_graph_edges",
            Kind::Gauge,
            "Service-graph edges held (at most telemetry.service_graph.max_edges).",
        );
        w.sample(
            "tracesift_service_graph_edges",
            &[],
            None,
            self.edges.len() as f64,
            None,
        );
    }

    /// Total requests counted, overflow included (tests).
    pub fn total_requests(&self) -> u64 {
        self.edges.rows().map(|(_, r)| r.requests).sum()
    }

    /// Client histogram count of an edge (tests).
    pub fn client_count(&self, client: &str, server: &str, connection_type: &str) -> u64 {
        self.edges
            .find(&[client, server, connection_type])
            .map_or(0, |r| r.client.count())
    }
}
