//! Start-up separates the environment from the configuration (issue 29): a member started
//! while the broker is down waits for it — `/healthz` up, `/readyz` down naming what it waits
//! for — and joins and processes once the broker is back, without a restart; a configuration
//! problem stops it at once with exit 2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::producer::FutureProducer;
use support::outage::{get, metric};
use support::{create_topic, free_port, Broker, Member};

#[test]
fn a_member_started_before_its_broker_waits_and_then_processes() {
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let listen = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
kafka: {{brokers: "{brokers}", group_id: late-broker, create_topics: true, commit_interval: 300ms}}
store: {{decision_wait: 1s, decision_wait_after_root: 500ms, tick: 100ms}}
sinks: {{parquet: {{enabled: false}}}}
telemetry: {{listen: "127.0.0.1:{listen}"}}
policies: [{{name: all, type: always_sample}}]
startup_timeout: 5m
"#
    );
    let member = Member::start(dir.path(), "m", &config, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The broker stays down for 20 s: liveness up, readiness down and saying why.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (code, body) = loop {
        let (code, body) = rt.block_on(get(listen, "/readyz"));
        if body.contains("waiting for the Kafka cluster") || Instant::now() > deadline {
            break (code, body);
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(code, 503, "{body}\n{}", member.log());
    assert!(
        body.contains("waiting for the Kafka cluster"),
        "{body}\n{}",
        member.log()
    );
    assert_eq!(rt.block_on(get(listen, "/healthz")).0, 200);
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        rt.block_on(get(listen, "/healthz")).0,
        200,
        "still alive after 20 s:\n{}",
        member.log()
    );
    let _broker = Broker::start_advertising("sqlite://tansu.db", port, port);
    rt.block_on(async {
        create_topic(&brokers, "otlp_spans", 1).await;
        let p: FutureProducer = support::client(&brokers).create().unwrap();
        let mut ends = BTreeMap::new();
        for id in support::spread_trace_ids(20) {
            let rec = support::otlp_record(vec![support::test_span(&id, 1, false)]);
            support::send_trace_record(&p, &id, &rec, &mut ends).await;
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, body) = rt.block_on(get(listen, "/metrics"));
        if metric(&body, "tracesift_spans_in_total") >= 20.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no spans read after the broker came:\n{}",
            member.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        rt.block_on(get(listen, "/readyz")).0,
        200,
        "{}",
        member.log()
    );
    member.stop();
}

#[test]
fn a_configuration_run_cannot_use_stops_it_at_once_with_exit_2() {
    let (code, err) = run_config(
        "kafka: {brokers: \"127.0.0.1:1\", properties: {sesion.timeout.ms: 30000}}\npolicies: [{name: all, type: always_sample}]\n",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("kafka.properties.sesion.timeout.ms"), "{err}");
    assert_eq!(
        err.matches("sesion.timeout.ms").count(),
        1,
        "named once: {err}"
    );
}

#[test]
fn past_startup_timeout_an_unreachable_cluster_ends_the_run_with_exit_1() {
    let (code, err) = run_config(&format!(
        "kafka: {{brokers: \"127.0.0.1:{}\"}}\npolicies: [{{name: all, type: always_sample}}]\nstartup_timeout: 2s\n",
        free_port()
    ));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("Meta data fetch error") || err.contains("BrokerTransportFailure"),
        "{err}"
    );
}

/// `tracesift run` on a configuration written to a file: its exit code and standard error.
fn run_config(yaml: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.yaml");
    std::fs::write(&f, yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tracesift"))
        .args(["run", "-c"])
        .arg(&f)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
