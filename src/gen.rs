//! Realistic OTLP load: the source for demos, tests and benchmarks.
//!
//! Each trace is a request through a small shop: a `frontend` server span for a route, client
//! spans to downstream services (HTTP and gRPC), their server spans, internal work and database
//! calls, 3–25 spans across 2–6 services. Resources carry ~10 attributes (service, version,
//! instance, host, k8s namespace / pod / deployment, SDK); spans carry semantic-convention
//! attributes (http, db, rpc; some services still use the old key names). A few traces fail deep
//! in the tree (error status plus an exception event), a few have slow roots, and trace ids are
//! random 128-bit values.
//!
//! Two producer styles are planned by [`plan_records`]:
//! - **keyed**: one record per trace, key = trace id (the Collector kafkaexporter with
//!   `partition_traces_by_id`);
//! - **split**: each trace's spans over several records, shuffled within a window so traces
//!   interleave and arrive out of order, some held back to arrive seconds after the first.
//!
//! [`Manifest`] records what was generated, so tests can assert on it.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::clock::{Clock, MonoTime};
use crate::otlp::TraceId;

/// Routes the generator uses, with their relative weights.
pub const ROUTES: &[(&str, u32)] = &[
    ("/api/checkout", 10),
    ("/api/payment", 10),
    ("/api/cart", 20),
    ("/api/products", 35),
    ("/api/users/{id}", 20),
    ("/health", 5),
];

/// Generator settings.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// Traces to generate.
    pub traces: usize,
    /// Random seed (the same seed gives the same traces, ids included).
    pub seed: u64,
    /// Fraction of traces with an error span.
    pub error_rate: f64,
    /// Fraction of traces whose root is slower than 500 ms.
    pub slow_rate: f64,
    /// Split traces over several records.
    pub split: bool,
    /// In split mode: fraction of records held back.
    pub late_fraction: f64,
    /// In split mode: how long held-back records wait.
    pub late_delay: Duration,
    /// Wall-clock start of the first trace, Unix ns.
    pub start_ns: u64,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            traces: 1000,
            seed: 1,
            error_rate: 0.03,
            slow_rate: 0.05,
            split: false,
            late_fraction: 0.1,
            late_delay: Duration::from_secs(2),
            start_ns: 1_700_000_000_000_000_000,
        }
    }
}

/// What was generated for one trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceFacts {
    /// Trace id.
    pub trace_id: TraceId,
    /// Number of spans.
    pub spans: usize,
    /// Some span has status ERROR.
    pub has_error: bool,
    /// Duration of the trace (earliest start to latest end), ms.
    pub duration_ms: f64,
    /// The root's route.
    pub route: &'static str,
}

/// Ground truth of a generated load.
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    /// One entry per trace, in generation order.
    pub traces: Vec<TraceFacts>,
}

/// One planned Kafka record.
#[derive(Debug, Clone)]
pub struct PlannedRecord {
    /// Key (trace id hex).
    pub key: String,
    /// OTLP protobuf value.
    pub value: Vec<u8>,
    /// Hold this record back by this much (split mode).
    pub delay: Duration,
}

struct Service {
    name: &'static str,
    version: &'static str,
    namespace: &'static str,
    lang: &'static str,
    old_semconv: bool,
}

const SERVICES: &[Service] = &[
    Service {
        name: "frontend",
        version: "2.4.1",
        namespace: "shop",
        lang: "nodejs",
        old_semconv: false,
    },
    Service {
        name: "checkout",
        version: "1.9.0",
        namespace: "shop",
        lang: "go",
        old_semconv: false,
    },
    Service {
        name: "payment",
        version: "3.0.2",
        namespace: "payments",
        lang: "java",
        old_semconv: true,
    },
    Service {
        name: "cart",
        version: "1.2.7",
        namespace: "shop",
        lang: "python",
        old_semconv: false,
    },
    Service {
        name: "catalog",
        version: "5.1.0",
        namespace: "shop",
        lang: "go",
        old_semconv: false,
    },
    Service {
        name: "users",
        version: "0.9.3",
        namespace: "identity",
        lang: "python",
        old_semconv: true,
    },
    Service {
        name: "inventory",
        version: "2.0.0",
        namespace: "shop",
        lang: "rust",
        old_semconv: false,
    },
    Service {
        name: "fraud",
        version: "1.0.5",
        namespace: "payments",
        lang: "java",
        old_semconv: false,
    },
];

fn svc(name: &str) -> usize {
    SERVICES.iter().position(|s| s.name == name).unwrap_or(0)
}

fn kv(k: &str, v: impl Into<String>) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn kv_int(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

fn resource(s: &Service, instance: u32) -> Resource {
    Resource {
        attributes: vec![
            kv("service.name", s.name),
            kv("service.version", s.version),
            kv("service.namespace", s.namespace),
            kv("service.instance.id", format!("{}-{instance:04x}", s.name)),
            kv("deployment.environment.name", "production"),
            kv("host.name", format!("node-{}", instance % 7)),
            kv("k8s.namespace.name", s.namespace),
            kv("k8s.pod.name", format!("{}-7d9f8b{instance:04x}", s.name)),
            kv("k8s.deployment.name", s.name),
            kv("telemetry.sdk.name", "opentelemetry"),
            kv("telemetry.sdk.language", s.lang),
            kv("telemetry.sdk.version", "1.28.0"),
        ],
        dropped_attributes_count: 0,
        entity_refs: Vec::new(),
    }
}

struct Builder<'r> {
    rng: &'r mut SmallRng,
    trace_id: [u8; 16],
    spans: Vec<(usize, Span)>,
}

impl Builder<'_> {
    fn span_id(&mut self) -> [u8; 8] {
        loop {
            let id: [u8; 8] = self.rng.random();
            if id != [0; 8] {
                return id;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        service: usize,
        parent: Option<[u8; 8]>,
        name: String,
        kind: span::SpanKind,
        start: u64,
        dur_ns: u64,
        attributes: Vec<KeyValue>,
    ) -> [u8; 8] {
        let id = self.span_id();
        self.spans.push((
            service,
            Span {
                trace_id: self.trace_id.to_vec(),
                span_id: id.to_vec(),
                parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
                name,
                kind: kind as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: start + dur_ns,
                attributes,
                flags: 0x100 | 1,
                status: Some(Status::default()),
                ..Default::default()
            },
        ));
        id
    }

    fn http_server_attrs(&self, s: &Service, route: &str, code: i64) -> Vec<KeyValue> {
        if s.old_semconv {
            vec![
                kv("http.method", "POST"),
                kv("http.route", route),
                kv("http.target", route.replace("{id}", "42")),
                kv_int("http.status_code", code),
                kv("http.scheme", "http"),
                kv("net.host.name", s.name),
            ]
        } else {
            vec![
                kv(
                    "http.request.method",
                    if route.contains("products") {
                        "GET"
                    } else {
                        "POST"
                    },
                ),
                kv("http.route", route),
                kv("url.path", route.replace("{id}", "42")),
                kv_int("http.response.status_code", code),
                kv("url.scheme", "https"),
                kv("server.address", "shop.example.com"),
                kv(
                    "user_agent.original",
                    "Mozilla/5.0 (X11; Linux x86_64) Firefox/131.0",
                ),
            ]
        }
    }

    /// A call from `from` to `to`: a client span, the callee's server span, and its own work.
    fn call(
        &mut self,
        from: usize,
        parent: [u8; 8],
        to: usize,
        start: u64,
        budget_ns: u64,
        depth: u32,
    ) -> u64 {
        let grpc = self.rng.random_bool(0.4);
        let to_s = &SERVICES[to];
        let method = ["Get", "List", "Reserve", "Charge", "Validate"][self.rng.random_range(0..5)];
        let (cname, cattrs) = if grpc {
            (
                format!(
                    "{}.{}Service/{method}",
                    to_s.namespace,
                    capitalize(to_s.name)
                ),
                vec![
                    kv("rpc.system", "grpc"),
                    kv(
                        "rpc.service",
                        format!("{}.{}Service", to_s.namespace, capitalize(to_s.name)),
                    ),
                    kv("rpc.method", method),
                    kv("server.address", to_s.name),
                    kv_int("server.port", 50051),
                ],
            )
        } else {
            (
                "POST".to_string(),
                vec![
                    kv("http.request.method", "POST"),
                    kv(
                        "url.full",
                        format!("http://{}:8080/{}", to_s.name, method.to_lowercase()),
                    ),
                    kv("server.address", to_s.name),
                    kv_int("server.port", 8080),
                    kv_int("http.response.status_code", 200),
                ],
            )
        };
        let dur = budget_ns.max(200_000);
        let client = self.push(
            from,
            Some(parent),
            cname.clone(),
            span::SpanKind::Client,
            start,
            dur,
            cattrs.clone(),
        );
        let server_start = start + dur / 20;
        let server_dur = dur - dur / 10;
        let sattrs = if grpc {
            cattrs[..3].to_vec()
        } else {
            self.http_server_attrs(to_s, &format!("/{}", method.to_lowercase()), 200)
        };
        let server = self.push(
            to,
            Some(client),
            cname,
            span::SpanKind::Server,
            server_start,
            server_dur,
            sattrs,
        );
        self.work(to, server, server_start, server_dur, depth + 1);
        dur
    }

    /// What a service does inside a request: db calls, internal steps, maybe more calls.
    fn work(&mut self, service: usize, parent: [u8; 8], start: u64, dur: u64, depth: u32) {
        let mut t = start + dur / 20;
        let steps = self.rng.random_range(1..=3);
        for _ in 0..steps {
            let slot = dur / (steps as u64 + 2);
            match self.rng.random_range(0..10) {
                0..=4 => {
                    let (system, op) = if self.rng.random_bool(0.7) {
                        ("postgresql", "SELECT")
                    } else {
                        ("redis", "GET")
                    };
                    let table =
                        ["orders", "items", "accounts", "sessions"][self.rng.random_range(0..4)];
                    let attrs = if SERVICES[service].old_semconv {
                        vec![
                            kv("db.system", system),
                            kv("db.name", "shop"),
                            kv("db.statement", format!("{op} * FROM {table} WHERE id = $1")),
                            kv("db.operation", op),
                        ]
                    } else {
                        vec![
                            kv("db.system.name", system),
                            kv("db.namespace", "shop"),
                            kv(
                                "db.query.text",
                                format!("{op} * FROM {table} WHERE id = $1"),
                            ),
                            kv("db.operation.name", op),
                            kv("server.address", format!("{system}.db")),
                        ]
                    };
                    self.push(
                        service,
                        Some(parent),
                        format!("{op} shop.{table}"),
                        span::SpanKind::Client,
                        t,
                        slot / 2,
                        attrs,
                    );
                }
                5..=7 => {
                    let name = ["validate", "render", "serialize", "compute-total"]
                        [self.rng.random_range(0..4)];
                    self.push(
                        service,
                        Some(parent),
                        name.to_string(),
                        span::SpanKind::Internal,
                        t,
                        slot / 2,
                        vec![kv("code.function.name", name)],
                    );
                }
                _ if depth < 3 && self.spans.len() < 18 => {
                    let to = self.rng.random_range(1..SERVICES.len());
                    if to != service {
                        self.call(service, parent, to, t, slot, depth);
                    }
                }
                _ => {}
            }
            t += slot;
        }
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

fn pick_route(rng: &mut SmallRng) -> &'static str {
    let total: u32 = ROUTES.iter().map(|r| r.1).sum();
    let mut x = rng.random_range(0..total);
    for (r, w) in ROUTES {
        if x < *w {
            return r;
        }
        x -= w;
    }
    ROUTES[0].0
}

/// Generates one trace: its spans grouped per service, and its facts.
pub fn generate_trace(
    rng: &mut SmallRng,
    start_ns: u64,
    opts: &GenOptions,
) -> (Vec<(usize, Span)>, TraceFacts) {
    let mut trace_id: [u8; 16] = rng.random();
    trace_id[0] |= 1; // never all zero
    let route = pick_route(rng);
    let slow = rng.random_bool(opts.slow_rate.clamp(0.0, 1.0));
    let dur_ms: f64 = if slow {
        rng.random_range(650.0..3000.0)
    } else {
        rng.random_range(5.0..380.0)
    };
    let dur = (dur_ms * 1e6) as u64;
    let mut b = Builder {
        rng,
        trace_id,
        spans: Vec::new(),
    };
    let fe = svc("frontend");
    let root_attrs = b.http_server_attrs(&SERVICES[fe], route, 200);
    let root = b.push(
        fe,
        None,
        format!("POST {route}"),
        span::SpanKind::Server,
        start_ns,
        dur,
        root_attrs,
    );
    if route != "/health" {
        let callee = match route {
            "/api/checkout" => svc("checkout"),
            "/api/payment" => svc("payment"),
            "/api/cart" => svc("cart"),
            "/api/products" => svc("catalog"),
            _ => svc("users"),
        };
        let t0 = start_ns + dur / 25;
        b.call(fe, root, callee, t0, dur - dur / 10, 0);
        if route == "/api/checkout" {
            b.call(
                svc("checkout"),
                root,
                svc("payment"),
                t0 + dur / 3,
                dur / 3,
                1,
            );
            b.call(
                svc("checkout"),
                root,
                svc("inventory"),
                t0 + dur / 2,
                dur / 4,
                1,
            );
        }
        if route == "/api/payment" {
            b.call(svc("payment"), root, svc("fraud"), t0 + dur / 4, dur / 3, 1);
        }
    }
    let has_error = b.spans.len() > 1 && b.rng.random_bool(opts.error_rate.clamp(0.0, 1.0));
    if has_error {
        // Fail the deepest span (largest start among the last few) and its exception event.
        let i = b.spans.len() - 1 - b.rng.random_range(0..b.spans.len().min(3) - 1);
        let s = &mut b.spans[i].1;
        s.status = Some(Status {
            message: "upstream returned 503".into(),
            code: status::StatusCode::Error as i32,
        });
        s.events.push(span::Event {
            time_unix_nano: s.end_time_unix_nano,
            name: "exception".into(),
            attributes: vec![
                kv("exception.type", "UpstreamUnavailable"),
                kv("exception.message", "connection reset by peer"),
            ],
            dropped_attributes_count: 0,
        });
    }
    let min = b
        .spans
        .iter()
        .map(|s| s.1.start_time_unix_nano)
        .min()
        .unwrap_or(start_ns);
    let max = b
        .spans
        .iter()
        .map(|s| s.1.end_time_unix_nano)
        .max()
        .unwrap_or(start_ns);
    let facts = TraceFacts {
        trace_id: TraceId(trace_id),
        spans: b.spans.len(),
        has_error,
        duration_ms: (max - min) as f64 / 1e6,
        route,
    };
    (b.spans, facts)
}

/// Encodes spans (with their service index) as one request, one `ResourceSpans` per service.
pub fn encode_spans(spans: &[(usize, Span)], instance: u32) -> Vec<u8> {
    let mut by_service: Vec<(usize, Vec<Span>)> = Vec::new();
    for (s, span) in spans {
        match by_service.iter_mut().find(|(x, _)| x == s) {
            Some((_, v)) => v.push(span.clone()),
            None => by_service.push((*s, vec![span.clone()])),
        }
    }
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|(s, spans)| ResourceSpans {
                resource: Some(resource(&SERVICES[s], instance)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: format!("io.opentelemetry.{}", SERVICES[s].lang),
                        version: "1.28.0".into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                }],
                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
            })
            .collect(),
    }
    .encode_to_vec()
}

/// Generates `opts.traces` traces and plans their records in the chosen producer style.
pub fn plan_records(opts: &GenOptions) -> (Vec<PlannedRecord>, Manifest) {
    let mut rng = SmallRng::seed_from_u64(opts.seed);
    let mut manifest = Manifest::default();
    let mut records = Vec::new();
    let mut window: Vec<PlannedRecord> = Vec::new();
    for i in 0..opts.traces {
        let start = opts.start_ns + (i as u64) * 1_000_000;
        let (spans, facts) = generate_trace(&mut rng, start, opts);
        let key = facts.trace_id.to_hex();
        let instance = rng.random_range(0..64);
        if !opts.split || spans.len() < 2 {
            records.push(PlannedRecord {
                key,
                value: encode_spans(&spans, instance),
                delay: Duration::ZERO,
            });
        } else {
            let parts = rng.random_range(2..=spans.len().min(4));
            let mut shuffled = spans;
            // Out of order: the root is not necessarily first.
            for j in (1..shuffled.len()).rev() {
                let k = rng.random_range(0..=j);
                shuffled.swap(j, k);
            }
            let per = shuffled.len().div_ceil(parts);
            for chunk in shuffled.chunks(per) {
                let late = rng.random_bool(opts.late_fraction.clamp(0.0, 1.0));
                window.push(PlannedRecord {
                    key: key.clone(),
                    value: encode_spans(chunk, instance),
                    delay: if late {
                        opts.late_delay
                    } else {
                        Duration::ZERO
                    },
                });
            }
        }
        manifest.traces.push(facts);
        if window.len() >= 64 || i + 1 == opts.traces {
            // Interleave the records of neighbouring traces.
            for j in (1..window.len()).rev() {
                let k = rng.random_range(0..=j);
                window.swap(j, k);
            }
            records.append(&mut window);
        }
    }
    (records, manifest)
}

/// What [`produce`] wrote.
#[derive(Debug, Clone, Default)]
pub struct Produced {
    /// Records acknowledged.
    pub records: usize,
    /// Value bytes acknowledged.
    pub bytes: usize,
    /// Per partition, one past the highest acknowledged offset (from delivery reports, which
    /// every broker gets right).
    pub ends: std::collections::BTreeMap<i32, i64>,
}

impl Produced {
    fn note(&mut self, partition: i32, offset: i64) {
        let e = self.ends.entry(partition).or_insert(0);
        *e = (*e).max(offset + 1);
    }
}

type DeliveryOutcome = Result<
    rdkafka::producer::future_producer::OwnedDeliveryResult,
    futures::channel::oneshot::Canceled,
>;

async fn tracked(f: rdkafka::producer::DeliveryFuture, len: usize) -> (DeliveryOutcome, usize) {
    (f.await, len)
}

/// Produces planned records to `topic` (held-back records after their delay), paced to at most
/// `rate` records per second when given.
pub async fn produce(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    records: &[PlannedRecord],
    rate: Option<f64>,
) -> Result<Produced, rdkafka::error::KafkaError> {
    use futures::StreamExt;
    use rdkafka::producer::FutureRecord;
    let clock = crate::clock::TokioClock::new();
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut out = Produced::default();
    let mut late: Vec<(MonoTime, &PlannedRecord)> = Vec::new();
    let send = |r: &PlannedRecord| -> Result<rdkafka::producer::DeliveryFuture, rdkafka::error::KafkaError> {
        loop {
            match producer.send_result(FutureRecord::to(topic).key(&r.key).payload(&r.value)) {
                Ok(f) => return Ok(f),
                Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(e),
            }
        }
    };
    let settle = |res: Option<DeliveryOutcome>, out: &mut Produced, len: usize| match res {
        Some(Ok(Ok(d))) => {
            out.note(d.partition, d.offset);
            out.records += 1;
            out.bytes += len;
            Ok(())
        }
        Some(Ok(Err((e, _)))) => Err(e),
        Some(Err(_)) => Err(rdkafka::error::KafkaError::Canceled),
        None => Ok(()),
    };
    let mut pushed = 0usize;
    for (i, r) in records.iter().enumerate() {
        if let Some(rate) = rate {
            let due = MonoTime::from_duration(Duration::from_secs_f64(i as f64 / rate));
            tokio::time::sleep(due - clock.now()).await;
        }
        if r.delay > Duration::ZERO {
            late.push((clock.now() + r.delay, r));
        } else {
            let len = r.value.len();
            let f = send(r)?;
            pending.push(tracked(f, len));
            pushed += 1;
        }
        let now = clock.now();
        while let Some(pos) = late.iter().position(|(t, _)| *t <= now) {
            let (_, r) = late.swap_remove(pos);
            let len = r.value.len();
            let f = send(r)?;
            pending.push(tracked(f, len));
            pushed += 1;
        }
        while pending.len() > 10_000 {
            if let Some((res, len)) = pending.next().await {
                settle(Some(res), &mut out, len)?;
            }
        }
    }
    late.sort_by_key(|(t, _)| *t);
    for (t, r) in late {
        tokio::time::sleep(t - clock.now()).await;
        let len = r.value.len();
        let f = send(r)?;
        pending.push(tracked(f, len));
        pushed += 1;
    }
    while let Some((res, len)) = pending.next().await {
        settle(Some(res), &mut out, len)?;
    }
    debug_assert_eq!(out.records, pushed);
    Ok(out)
}

/// The spans of generated records as the archive would hold them if the traces were kept: error
/// traces under policy `errors` (threshold 0, adjusted count 1), the rest under `default` at
/// 10% (adjusted count 10), each span marked as the pipeline marks it. For archive tests and the archive benchmark, which need realistic
/// Parquet without running the pipeline.
pub fn kept_spans(
    records: &[PlannedRecord],
    manifest: &Manifest,
) -> Result<Vec<crate::archive::KeptSpan>, crate::otlp::DecodeError> {
    let errors: std::collections::HashSet<TraceId> = manifest
        .traces
        .iter()
        .filter(|t| t.has_error)
        .map(|t| t.trace_id)
        .collect();
    let (err, default): (Arc<str>, Arc<str>) = (Arc::from("errors"), Arc::from("default"));
    let ten_percent = (1u64 << 56) / 10 * 9;
    let mut out = Vec::new();
    let mut scanned = Vec::new();
    for r in records {
        crate::otlp::scan_request_into(
            &bytes::Bytes::from(r.value.clone()),
            &crate::otlp::NoProbe,
            0,
            &mut scanned,
        )?;
        for s in scanned.drain(..) {
            let is_err = errors.contains(&s.trace_id);
            let (policy, threshold) = if is_err {
                (&err, 0)
            } else {
                (&default, ten_percent)
            };
            // Marked as the pipeline marks kept spans (tracestate `ot=th`, policy and adjusted
            // count attributes), so the archive holds what a real run writes.
            let mark = crate::otlp::SamplingMark::new(threshold, policy);
            let mut span = s.span;
            span.bytes = bytes::Bytes::from(crate::otlp::mark_span(&span.bytes, &mark)?);
            out.push(crate::archive::KeptSpan {
                trace_id: s.trace_id,
                span,
                policy: Arc::clone(policy),
                threshold,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{scan_request_into, NoProbe};

    #[test]
    fn traces_are_realistic_and_reproducible() {
        let opts = GenOptions {
            traces: 2000,
            ..Default::default()
        };
        let (records, manifest) = plan_records(&opts);
        assert_eq!(records.len(), 2000);
        let (again, _) = plan_records(&opts);
        assert_eq!(records[7].value, again[7].value, "same seed, same bytes");
        let spans: usize = manifest.traces.iter().map(|t| t.spans).sum();
        let bytes: usize = records.iter().map(|r| r.value.len()).sum();
        let per_span = bytes as f64 / spans as f64;
        assert!((250.0..900.0).contains(&per_span), "bytes/span {per_span}");
        assert!(manifest.traces.iter().all(|t| (1..=30).contains(&t.spans)));
        let errors = manifest.traces.iter().filter(|t| t.has_error).count();
        let slow = manifest
            .traces
            .iter()
            .filter(|t| t.duration_ms > 500.0)
            .count();
        assert!((20..120).contains(&errors), "errors {errors}");
        assert!((50..180).contains(&slow), "slow {slow}");
        for r in ROUTES {
            assert!(
                manifest.traces.iter().any(|t| t.route == r.0),
                "route {} missing",
                r.0
            );
        }
        // Every record scans, and every span of a record belongs to its keyed trace.
        let mut out = Vec::new();
        for r in &records {
            scan_request_into(&bytes::Bytes::from(r.value.clone()), &NoProbe, 0, &mut out).unwrap();
            assert!(out.iter().all(|s| s.trace_id.to_hex() == r.key));
            assert_eq!(out.iter().filter(|s| s.meta.is_root).count(), 1);
        }
    }

    #[test]
    fn split_mode_spreads_and_interleaves() {
        let opts = GenOptions {
            traces: 300,
            split: true,
            late_fraction: 0.2,
            ..Default::default()
        };
        let (records, manifest) = plan_records(&opts);
        assert!(records.len() > 300 * 3 / 2, "{} records", records.len());
        assert!(records.iter().any(|r| r.delay > Duration::ZERO));
        // Not in generation order.
        let order: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
        let first = manifest.traces[0].trace_id.to_hex();
        let pos = order.iter().position(|k| *k == first).unwrap();
        assert!(order.iter().skip(pos + 1).take(64).any(|k| *k != first));
        let mut total = 0;
        let mut out = Vec::new();
        for r in &records {
            scan_request_into(&bytes::Bytes::from(r.value.clone()), &NoProbe, 0, &mut out).unwrap();
            total += out.len();
        }
        assert_eq!(
            total,
            manifest.traces.iter().map(|t| t.spans).sum::<usize>()
        );
    }
}
