//! The generator's model of a small shop: its services and routes, and one trace through it
//! as OTLP spans with realistic resources and semantic-convention attributes.

#[allow(unused_imports)]
use super::*;

/// Routes the generator uses, with their relative weights.
pub const ROUTES: &[(&str, u32)] = &[
    ("/api/checkout", 10),
    ("/api/payment", 10),
    ("/api/cart", 20),
    ("/api/products", 35),
    ("/api/users/{id}", 20),
    ("/health", 5),
];

pub(super) struct Service {
    pub(super) name: &'static str,
    pub(super) version: &'static str,
    pub(super) namespace: &'static str,
    pub(super) lang: &'static str,
    pub(super) old_semconv: bool,
}

pub(super) const SERVICES: &[Service] = &[
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

pub(super) fn svc(name: &str) -> usize {
    SERVICES.iter().position(|s| s.name == name).unwrap_or(0)
}

pub(super) fn kv(k: &str, v: impl Into<String>) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

pub(super) fn kv_int(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

pub(super) fn resource(s: &Service, instance: u32) -> Resource {
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

pub(super) struct Builder<'r> {
    pub(super) rng: &'r mut SmallRng,
    pub(super) trace_id: [u8; 16],
    pub(super) spans: Vec<(usize, Span)>,
}

impl Builder<'_> {
    pub(super) fn span_id(&mut self) -> [u8; 8] {
        loop {
            let id: [u8; 8] = self.rng.random();
            if id != [0; 8] {
                return id;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn push(
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

    pub(super) fn http_server_attrs(&self, s: &Service, route: &str, code: i64) -> Vec<KeyValue> {
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
    pub(super) fn call(
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
    pub(super) fn work(
        &mut self,
        service: usize,
        parent: [u8; 8],
        start: u64,
        dur: u64,
        depth: u32,
    ) {
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

pub(super) fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

pub(super) fn pick_route(rng: &mut SmallRng) -> &'static str {
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
