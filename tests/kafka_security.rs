//! Connecting to a production-like Kafka: TLS with a CA the test makes, mutual TLS, and SASL
//! SCRAM-SHA-512 / SCRAM-SHA-256 against the real broker (tansu implements SCRAM; TLS is a
//! stunnel terminator in front of it, see `support/tls.rs`). The password comes from the
//! environment through `${env:...}` and the client key's location from the file; no secret
//! appears in any output.
//!
//! Scenario: the pipeline runs through mTLS + SASL_SSL end to end (every trace produced through
//! the same listener comes out whole on the sampled topic); then a wrong CA, a missing client
//! certificate and a wrong password each stop `tracesift run` at start with a clear message and
//! no password in it; SCRAM-SHA-256 connects too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::FutureProducer;

use support::tls::{Pki, Terminator};
use support::{free_port, otlp_record, spread_trace_ids, test_span, Broker, Member};

const PASSWORD: &str = "Kafka-S3cret-Pa55word";
const PASSWORD_256: &str = "Other-S3cret-For-Bob";

struct Secure {
    broker: Broker,
    _tls: Terminator,
    pki: Pki,
    _dir: tempfile::TempDir,
}

fn start() -> Secure {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&dir.path().join("pki"));
    let tls_port = free_port();
    let plain = free_port();
    let mut broker = Broker::start_advertising("sqlite://tansu.db", plain, tls_port);
    broker.create_user("alice", PASSWORD, "scram512");
    broker.create_user("bob", PASSWORD_256, "scram256");
    broker.require_authentication();
    let tls = Terminator::start(&pki, tls_port, plain, true);
    Secure {
        broker,
        _tls: tls,
        pki,
        _dir: dir,
    }
}

impl Secure {
    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self._tls.port)
    }

    /// librdkafka properties for mTLS + SCRAM-SHA-512, as YAML flow-map entries.
    fn properties(&self, ca: &str, with_cert: bool, password: &str) -> String {
        let cert = match with_cert {
            true => format!(
                ", ssl.certificate.location: \"{}\", ssl.key.location: \"{}\"",
                self.pki.path("client.pem"),
                self.pki.path("client.key")
            ),
            false => String::new(),
        };
        format!(
            "security.protocol: sasl_ssl, sasl.mechanisms: SCRAM-SHA-512, sasl.username: alice, sasl.password: \"{password}\", ssl.ca.location: \"{}\"{cert}",
            self.pki.path(ca)
        )
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap())
            .set("security.protocol", "sasl_ssl")
            .set("sasl.mechanisms", "SCRAM-SHA-512")
            .set("sasl.username", "alice")
            .set("sasl.password", PASSWORD)
            .set("ssl.ca.location", self.pki.path("ca.pem"))
            .set("ssl.certificate.location", self.pki.path("client.pem"))
            .set("ssl.key.location", self.pki.path("client.key"));
        c
    }

    fn config(&self, properties: &str, hot: &std::path::Path) -> String {
        format!(
            r#"
kafka:
  brokers: "{}"
  group_id: secure
  create_topics: true
  commit_interval: 300ms
  properties: {{{properties}}}
store: {{decision_wait: 2s, decision_wait_after_root: 2s, max_trace_age: 1m, tick: 50ms}}
archive: {{hot: {{url: "file://{}", flush_interval: 1s}}}}
telemetry: {{listen: ""}}
policies: [{{name: all, type: always_sample}}]
"#,
            self.bootstrap(),
            hot.display()
        )
    }
}

/// Runs `tracesift run` on `config` expecting it to stop at start; returns its stderr.
fn run_refused(config: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(&cfg, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tracesift"))
        .args(["run", "-c"])
        .arg(&cfg)
        .envs(env.iter().copied())
        .env("TRACESIFT_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "run should have stopped at start:\n{stderr}"
    );
    stderr
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pipeline_runs_through_mutual_tls_and_sasl_and_refuses_bad_credentials_clearly() {
    let s = start();
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        s.client().create().unwrap();
    let created = admin
        .create_topics(
            &[rdkafka::admin::NewTopic::new(
                "otlp_spans",
                2,
                rdkafka::admin::TopicReplication::Fixed(1),
            )],
            &rdkafka::admin::AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    // Traffic through the TLS + SASL listener.
    let producer: FutureProducer = s.client().create().unwrap();
    let traces = spread_trace_ids(60);
    let mut ends = BTreeMap::new();
    for t in &traces {
        let spans = (1..=3).map(|n| test_span(t, n, n == 3)).collect();
        support::send_record(
            &producer,
            &hex::encode(t),
            &otlp_record(spans),
            None,
            &mut ends,
        )
        .await;
    }

    // The pipeline: password from the environment, key location from the configuration.
    let dir = tempfile::tempdir().unwrap();
    let hot = dir.path().join("hot");
    let props = s.properties("ca.pem", true, "${env:KAFKA_PASSWORD}");
    let member = Member::start(
        dir.path(),
        "secure",
        &s.config(&props, &hot),
        &[("KAFKA_PASSWORD", PASSWORD)],
    );
    let mut whole = 0;
    for _ in 0..90 {
        std::thread::sleep(Duration::from_secs(1));
        let got = support::spans_of(
            support::read_with(s.client(), "otlp_spans_sampled", Duration::from_secs(2)),
            "otlp_spans_sampled",
        );
        whole = traces
            .iter()
            .filter(|t| got.get(*t).is_some_and(|v| v.len() == 3))
            .count();
        if whole == traces.len() {
            break;
        }
    }
    let log = member.log();
    assert_eq!(
        whole,
        traces.len(),
        "every trace whole through TLS + SASL:\n{log}"
    );
    assert!(
        !log.contains(PASSWORD),
        "the password is in the log:\n{log}"
    );
    member.stop();

    // A CA that did not sign the broker's certificate.
    let err = run_refused(
        &s.config(&s.properties("other-ca.pem", true, PASSWORD), &hot),
        &[],
    );
    eprintln!("--- wrong CA, tracesift run says:\n{err}");
    assert!(
        err.contains("certificate verify failed"),
        "a wrong CA is named as such:\n{err}"
    );
    assert!(!err.contains(PASSWORD), "password in the output:\n{err}");

    // No client certificate where the listener requires one (mutual TLS).
    let err = run_refused(
        &s.config(&s.properties("ca.pem", false, PASSWORD), &hot),
        &[],
    );
    assert!(
        err.contains("SSL") || err.contains("handshake") || err.contains("Disconnected"),
        "a refused client certificate shows as a TLS failure:\n{err}"
    );

    // A wrong password, from a file: stops at start, says authentication failed, and never
    // prints the password it tried.
    let wrong = "Wrong-Pa55word-From-File";
    let secret_file = dir.path().join("kafka-password");
    std::fs::write(&secret_file, format!("{wrong}\n")).unwrap();
    let err = run_refused(
        &s.config(
            &s.properties(
                "ca.pem",
                true,
                &format!("${{file:{}}}", secret_file.display()),
            ),
            &hot,
        ),
        &[],
    );
    assert!(
        err.to_lowercase().contains("authentication"),
        "a wrong password shows as an authentication failure:\n{err}"
    );
    assert!(
        !err.contains(wrong),
        "the wrong password is in the output:\n{err}"
    );

    // SCRAM-SHA-256 (bob): `topology plan` connects with the same client settings.
    let cfg = s
        .config(&s.properties("ca.pem", true, PASSWORD_256), &hot)
        .replace("SCRAM-SHA-512", "SCRAM-SHA-256")
        .replace("sasl.username: alice", "sasl.username: bob");
    let topics = dir.path().join("topics.yaml");
    std::fs::write(
        &topics,
        "defaults: {replication_factor: 1, partitions: 2}\ntopics:\n  - {name: otlp_spans, role: input}\n  - {name: otlp_spans_sampled, role: sampled}\n  - {name: tracesift_decisions, role: decisions, configs: {cleanup.policy: 'compact,delete'}}\n  - {name: otlp_spans_dlq, role: dead_letter}\n",
    )
    .unwrap();
    let cfg_path = dir.path().join("bob.yaml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tracesift"))
        .args(["topology", "plan", "-c"])
        .arg(&cfg_path)
        .arg("--topics")
        .arg(&topics)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("= otlp_spans:"),
        "SCRAM-SHA-256 connects and describes the topics:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(s.broker);
}
