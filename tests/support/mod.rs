//! Shared harness for integration tests: a real tansu broker on a free loopback port, Kafka
//! helpers, and the Python analytics engines. A missing component is a failure with a clear
//! message, never a skip.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

fn tool(env: &str, default: &Path, what: &str) -> PathBuf {
    let p = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| default.to_path_buf());
    assert!(
        p.exists(),
        "{what} not found at {} (set {env}, or run ./deploy/local/test.sh, which installs it)",
        p.display()
    );
    p
}

fn cache() -> PathBuf {
    std::env::var_os("TRACESIFT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/tracesift")
        })
}

/// The tansu binary.
pub fn tansu_bin() -> PathBuf {
    tool(
        "TRACESIFT_TANSU",
        &cache().join("tools/tansu-0.6.0/bin/tansu"),
        "the tansu broker",
    )
}

/// The garage binary (S3-compatible object store).
pub fn garage_bin() -> PathBuf {
    tool(
        "TRACESIFT_GARAGE",
        &cache().join("tools/garage-2.5.0/bin/garage"),
        "the garage S3 server",
    )
}

/// The Python with duckdb and pyarrow.
pub fn python() -> PathBuf {
    tool(
        "TRACESIFT_PYTHON",
        &cache().join("venv/bin/python"),
        "python with duckdb + pyarrow",
    )
}

/// Fault injection (`TRACESIFT_FAILPOINT`) exists only in builds with the `failpoints`
/// feature: a test that injects faults fails at once, saying so, in a build without it.
pub fn require_failpoints() {
    #[cfg(not(feature = "failpoints"))]
    panic!(
        "this test injects faults (TRACESIFT_FAILPOINT): run it with `cargo test --features failpoints` (./deploy/local/test.sh does)"
    );
}

/// Waits until a run reports ready: partitions assigned and their decisions restored (a fault
/// injected before that would hold the restore instead of what the test means to hold).
pub async fn wait_ready(running: &tracesift::pipeline::Running) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !running.health.is_ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tansu broker, stopped on drop.
pub struct Broker {
    pub brokers: String,
    child: Child,
    dir: tempfile::TempDir,
    storage: String,
    port: u16,
    /// The port clients are told to connect to (a TLS terminator's, when one is in front).
    advertised: u16,
    /// Clients must authenticate (SASL SCRAM).
    authentication: bool,
}

impl Broker {
    /// Starts a broker with sqlite storage in its own temporary directory.
    ///
    /// Not `memory://`: tansu 0.6.0's memory engine answers a Fetch from an offset inside a
    /// record batch with nothing (or the next batch), which silently skips records after any
    /// seek or restart from a mid-batch committed offset. The sqlite engine serves them.
    pub fn start() -> Broker {
        Self::start_with("sqlite://tansu.db")
    }

    /// Starts a broker with the given storage engine URL (run in the broker's own directory).
    pub fn start_with(storage: &str) -> Broker {
        let port = free_port();
        Self::start_advertising(storage, port, port)
    }

    /// Starts a broker on `port` that tells clients to connect to `advertised` (where a TLS
    /// terminator forwards to `port`).
    pub fn start_advertising(storage: &str, port: u16, advertised: u16) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let child = Self::spawn(dir.path(), port, advertised, storage, false);
        let b = Broker {
            brokers: format!("127.0.0.1:{port}"),
            child,
            dir,
            storage: storage.into(),
            port,
            advertised,
            authentication: false,
        };
        b.wait_ready();
        b
    }

    /// Creates a SCRAM user (`scram256` or `scram512`) with tansu's own tool; call before
    /// [`Broker::require_authentication`] (tansu asks its clients to authenticate for this too).
    pub fn create_user(&self, name: &str, password: &str, mechanism: &str) {
        let out = Command::new(tansu_bin())
            .current_dir(self.dir.path())
            .args([
                "user",
                "create",
                "--broker",
                &format!("tcp://{}", self.brokers),
            ])
            .args([name, password, "--mechanism", mechanism])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tansu user create {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Restarts the broker (same storage) with SASL authentication required.
    pub fn require_authentication(&mut self) {
        self.authentication = true;
        self.restart();
    }

    fn spawn(dir: &Path, port: u16, advertised: u16, storage: &str, auth: bool) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("tansu.log"))
            .unwrap();
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised = format!("tcp://127.0.0.1:{advertised}");
        Command::new(tansu_bin())
            .current_dir(dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
                "--storage-engine",
                storage,
            ])
            .args(auth.then_some("--authentication"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("cannot start tansu")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&self.brokers).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "tansu did not listen on {} within 20s; log:\n{}",
            self.brokers,
            self.log()
        );
    }

    /// The broker's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }

    /// Kills the broker (SIGKILL) and starts it again on the same port and storage.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(
            self.dir.path(),
            self.port,
            self.advertised,
            &self.storage,
            self.authentication,
        );
        self.wait_ready();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Client config for tests.
pub fn client(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

/// Creates a topic.
pub async fn create_topic(brokers: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = client(brokers).create().unwrap();
    let r = admin
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    for x in r {
        x.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
}

/// One record read back.
#[derive(Debug, Clone)]
pub struct Read {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: HashMap<String, String>,
    /// Record timestamp (ms), -1 when none.
    pub timestamp: i64,
}

/// Reads every record of a topic from the beginning until nothing new arrives for `idle`.
///
/// (tansu 0.6.0 answers ListOffsets with a wrong high watermark for multi-record batches, so
/// readers cannot ask where the end is; callers stop producers and sinks first.)
pub fn read_all(brokers: &str, topic: &str) -> Vec<Read> {
    read_until_idle(brokers, topic, Duration::from_secs(3))
}

/// [`read_all`] with an explicit idle time.
pub fn read_until_idle(brokers: &str, topic: &str, idle: Duration) -> Vec<Read> {
    read_with(client(brokers), topic, idle)
}

/// Reads every record of `topic` through a client made from `base` (TLS, SASL, ...) until
/// nothing new arrives for `idle`.
pub fn read_with(mut base: ClientConfig, topic: &str, idle: Duration) -> Vec<Read> {
    let c: BaseConsumer = base
        .set("group.id", "tracesift-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .expect("topic exists");
    let mut tpl = TopicPartitionList::new();
    for p in t.partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < idle {
        let Some(m) = c.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.unwrap();
        last = Instant::now();
        let mut headers = HashMap::new();
        if let Some(h) = m.headers() {
            for x in h.iter() {
                headers.insert(
                    x.key.to_string(),
                    String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                );
            }
        }
        out.push(Read {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(|k| k.to_vec()),
            value: m.payload().unwrap_or_default().to_vec(),
            headers,
            timestamp: m.timestamp().to_millis().unwrap_or(-1),
        });
    }
    out
}

/// Committed offsets of a group for a topic's partitions.
pub fn committed(brokers: &str, group: &str, topic: &str, partitions: &[i32]) -> HashMap<i32, i64> {
    let c: BaseConsumer = client(brokers).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, *p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    got.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// Waits until the group's committed offsets reach `ends` (partition → one past the last
/// produced offset, from delivery reports).
pub async fn wait_committed(
    brokers: &str,
    group: &str,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let (b, g, t) = (brokers.to_string(), group.to_string(), topic.to_string());
        let parts: Vec<i32> = ends.keys().copied().collect();
        let comm = tokio::task::spawn_blocking(move || committed(&b, &g, &t, &parts))
            .await
            .unwrap();
        if ends.iter().all(|(p, e)| comm.get(p) == Some(e)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "committed offsets {comm:?} did not reach the end {ends:?} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Every Parquet file under a local tier, recursively.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Runs a Python snippet with duckdb/pyarrow available; returns stdout (fails on error).
pub fn run_python(script: &str) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .output()
        .expect("cannot run python");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One `tracesift run` child process.
pub struct Member {
    pub child: Child,
    log: PathBuf,
}

impl Member {
    /// Starts `tracesift run` on `config` (written to `dir/name.yaml`), with `env` set; its
    /// log goes to `dir/name.log`.
    pub fn start(dir: &Path, name: &str, config: &str, env: &[(&str, &str)]) -> Member {
        let cfg = dir.join(format!("{name}.yaml"));
        std::fs::write(&cfg, config).unwrap();
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tracesift"));
        cmd.args(["run", "-c"])
            .arg(&cfg)
            .env("TRACESIFT_LOG", "info,librdkafka=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Member {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    /// The member's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal (`-STOP`, `-CONT`, `-TERM`, …).
    pub fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
    }

    /// SIGCONT then SIGTERM, and a clean exit.
    pub fn stop(mut self) {
        self.signal("-CONT");
        self.signal("-TERM");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "exit {status:?}:\n{}", self.log());
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Span ids per trace id on a sampled topic.
pub fn sampled(
    brokers: &str,
    topic: &str,
) -> HashMap<[u8; 16], std::collections::HashSet<Vec<u8>>> {
    sampled_spans(brokers, topic)
        .into_iter()
        .map(|(t, spans)| (t, spans.into_iter().map(|s| s.span_id).collect()))
        .collect()
}

/// Every span of a sampled topic by trace id, each record decoded with the strict `prost`
/// types (a record that does not decode fails the test).
pub fn sampled_spans(
    brokers: &str,
    topic: &str,
) -> HashMap<[u8; 16], Vec<opentelemetry_proto::tonic::trace::v1::Span>> {
    spans_of(read_all(brokers, topic), topic)
}

/// Every span of `records` (read from `topic`) by trace id, decoded strictly.
pub fn spans_of(
    records: Vec<Read>,
    topic: &str,
) -> HashMap<[u8; 16], Vec<opentelemetry_proto::tonic::trace::v1::Span>> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    let mut out: HashMap<[u8; 16], Vec<_>> = HashMap::new();
    for r in records {
        let req = ExportTraceServiceRequest::decode(r.value.as_slice()).unwrap_or_else(|e| {
            panic!(
                "record {}@{} of {topic} does not decode strictly: {e}",
                r.offset, r.partition
            )
        });
        for s in req
            .resource_spans
            .into_iter()
            .flat_map(|rs| rs.scope_spans)
            .flat_map(|ss| ss.spans)
        {
            out.entry(s.trace_id.as_slice().try_into().unwrap())
                .or_default()
                .push(s);
        }
    }
    out
}

/// librdkafka's in-process mock cluster of `brokers` brokers with the topics a pipeline uses
/// (input, sampled, dead-letter, decision log), `partitions` each: the mock answers no
/// CreateTopics, so they are made up front.
pub fn mock_cluster(
    brokers: i32,
    partitions: i32,
) -> rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = rdkafka::mocking::MockCluster::new(brokers).unwrap();
    for t in [
        "otlp_spans",
        "otlp_spans_sampled",
        "otlp_spans_dlq",
        "tracesift_decisions",
    ] {
        cluster.create_topic(t, partitions, 1).unwrap();
    }
    cluster
}

/// On a mock cluster from [`mock_cluster`]: the input led by broker `input`, everything
/// tracesift writes (sampled, dead-letter, decision log) by broker `writes`, so a fault on one
/// side leaves the other alone.
pub fn split_leaders(
    cluster: &rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    partitions: i32,
    input: i32,
    writes: i32,
) {
    for p in 0..partitions {
        cluster
            .partition_leader("otlp_spans", p, Some(input))
            .unwrap();
        for t in [
            "otlp_spans_sampled",
            "otlp_spans_dlq",
            "tracesift_decisions",
        ] {
            cluster.partition_leader(t, p, Some(writes)).unwrap();
        }
    }
}

/// [`test_span`] with a string attribute `pad` of `pad_bytes` bytes (to make records of a size).
pub fn padded_span(
    trace: &[u8; 16],
    n: u8,
    error: bool,
    pad_bytes: usize,
) -> opentelemetry_proto::tonic::trace::v1::Span {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    let mut s = test_span(trace, n, error);
    s.attributes.push(KeyValue {
        key: "pad".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue("p".repeat(pad_bytes))),
        }),
        ..Default::default()
    });
    s
}

pub mod backend;
pub mod chaos;
pub mod engines;
pub mod garage;
pub mod hostile;
pub mod outage;
pub mod receiver;
pub mod strict;
pub mod tls;
/// The OTEP 235 rejection threshold of a 10% probabilistic policy.
pub const T10: u64 = ((1.0 - 0.10) * (1u64 << 56) as f64) as u64;

/// `n` distinct trace ids whose randomness (the low 56 bits) is spread evenly, so about p of
/// them pass a p-probabilistic policy.
pub fn spread_trace_ids(n: u32) -> Vec<[u8; 16]> {
    (0..n)
        .map(|i| {
            let mut t = [0u8; 16];
            t[..4].copy_from_slice(&(i + 1).to_be_bytes());
            let r = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 8;
            t[9..].copy_from_slice(&r.to_be_bytes()[1..]);
            t
        })
        .collect()
}

/// A span of a test trace: span id `[n; 8]`, a root when `n == 1` (else a child of span 1),
/// status ERROR or OK.
pub fn test_span(
    trace: &[u8; 16],
    n: u8,
    error: bool,
) -> opentelemetry_proto::tonic::trace::v1::Span {
    use opentelemetry_proto::tonic::trace::v1::{status, Span, Status};
    Span {
        trace_id: trace.to_vec(),
        span_id: vec![n; 8],
        parent_span_id: if n == 1 { vec![] } else { vec![1; 8] },
        name: format!("op{n}"),
        start_time_unix_nano: recent_ns() + u64::from(n) * 1_000_000,
        end_time_unix_nano: recent_ns() + u64::from(n) * 1_000_000 + 5_000_000,
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

/// One OTLP protobuf record holding `spans` under one empty resource and scope.
pub fn otlp_record(spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    use prost::Message;
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource::default()),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// A string attribute.
pub fn kv_str(k: &str, v: &str) -> opentelemetry_proto::tonic::common::v1::KeyValue {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// One OTLP protobuf record holding `spans` under a resource with `service.name` = `service`.
pub fn service_record(
    service: &str,
    spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>,
) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    use prost::Message;
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// Sends one record keyed by the trace id to `otlp_spans`; notes its partition's end.
pub async fn send_trace_record(
    p: &rdkafka::producer::FutureProducer,
    trace: &[u8; 16],
    value: &[u8],
    ends: &mut BTreeMap<i32, i64>,
) {
    send_record(p, &hex::encode(trace), value, None, ends).await;
}

/// Sends one record with `key`, stamped `timestamp` (Unix ms), to `topic`; notes its
/// partition's end.
pub async fn send_stamped(
    p: &rdkafka::producer::FutureProducer,
    topic: &str,
    key: &str,
    value: &[u8],
    timestamp: i64,
    ends: &mut BTreeMap<i32, i64>,
) {
    let rec = rdkafka::producer::FutureRecord::to(topic)
        .key(key)
        .payload(value)
        .timestamp(timestamp);
    let d = p
        .send(rec, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let e = ends.entry(d.partition).or_insert(0);
    *e = (*e).max(d.offset + 1);
}

/// Sends one record with `key` (and `headers`) to `otlp_spans`; notes its partition's end.
pub async fn send_record(
    p: &rdkafka::producer::FutureProducer,
    key: &str,
    value: &[u8],
    headers: Option<rdkafka::message::OwnedHeaders>,
    ends: &mut BTreeMap<i32, i64>,
) {
    let mut rec = rdkafka::producer::FutureRecord::to("otlp_spans")
        .key(key)
        .payload(value);
    if let Some(h) = headers {
        rec = rec.headers(h);
    }
    let d = p
        .send(rec, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let e = ends.entry(d.partition).or_insert(0);
    *e = (*e).max(d.offset + 1);
}

/// One span read back from the sampled topic.
#[derive(Debug, Clone)]
pub struct SampledSpan {
    pub span_id: Vec<u8>,
    /// `tailsampling.policy`.
    pub policy: Option<String>,
    /// `sampling.adjusted_count`.
    pub adjusted_count: Option<f64>,
}

/// Every span of the sampled topic, by trace id (duplicates included, in read order).
pub fn sampled_by_trace(brokers: &str) -> HashMap<[u8; 16], Vec<SampledSpan>> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use prost::Message;
    let mut out: HashMap<[u8; 16], Vec<SampledSpan>> = HashMap::new();
    for r in read_all(brokers, "otlp_spans_sampled") {
        let req = ExportTraceServiceRequest::decode(r.value.as_slice()).unwrap();
        for s in req
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
        {
            let attr = |k: &str| {
                s.attributes
                    .iter()
                    .find(|kv| kv.key == k)
                    .and_then(|kv| kv.value.clone())
                    .and_then(|v| v.value)
            };
            out.entry(s.trace_id.as_slice().try_into().unwrap())
                .or_default()
                .push(SampledSpan {
                    span_id: s.span_id.clone(),
                    policy: match attr("tailsampling.policy") {
                        Some(Value::StringValue(p)) => Some(p),
                        _ => None,
                    },
                    adjusted_count: match attr("sampling.adjusted_count") {
                        Some(Value::DoubleValue(c)) => Some(c),
                        _ => None,
                    },
                });
        }
    }
    out
}

pub mod spine;

/// A span start time a minute before this test process started (Unix ns, whole ms), the same
/// for the whole process. Span times count only when plausible against their record's Kafka
/// timestamp (at most 7 days before it, 1 hour after), and the producers here stamp records
/// with the time they send them.
pub fn recent_ns() -> u64 {
    static T: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *T.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis() as u64;
        (now - 60_000) * 1_000_000
    })
}

/// A tool on PATH, or a failure that says how to get it.
pub fn tool_on_path(name: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed: ./deploy/local/test.sh installs it (deploy/local/tools.sh)")
        })
}

/// A child process killed and reaped when dropped.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `s` percent-encoded for a URL query.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
