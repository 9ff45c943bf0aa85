//! Topics as code against the real broker (tansu): `tracesift topology plan | apply | check`,
//! and `run` refusing a missing or unsafe topology.
//!
//! tansu 0.6.0 describes topic configs (DescribeConfigs) but implements only
//! IncrementalAlterConfigs, not the AlterConfigs request the Rust client sends, and no
//! CreatePartitions: a changed retention shows in the plan as an alter, and `apply` then fails
//! naming the missing broker feature (checked here); the alter itself is unit-tested in
//! `topics::plan`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

use support::Broker;

const TOPICS: &str = r#"
defaults: {replication_factor: 1, partitions: 2}
topics:
  - name: otlp_spans
    role: input
    configs: {cleanup.policy: delete, retention.ms: "172800000", min.insync.replicas: "1"}
  - name: otlp_spans_sampled
    role: sampled
    configs: {cleanup.policy: delete, retention.ms: "259200000"}
  - name: tracesift_decisions
    role: decisions
    configs: {cleanup.policy: "compact,delete", retention.ms: "86400000"}
  - name: otlp_spans_dlq
    role: dead_letter
    configs: {cleanup.policy: delete}
"#;

fn config(brokers: &str, topics: &Path, extra: &str) -> String {
    format!(
        r#"
kafka: {{brokers: "{brokers}", group_id: topo, topics_file: "{}"{extra}}}
store: {{max_trace_age: 5m}}
archive: {{hot: {{url: "file:///tmp/tracesift-topology-unused"}}}}
telemetry: {{listen: ""}}
policies: [{{name: all, type: always_sample}}]
"#,
        topics.display()
    )
}

fn tracesift(args: &[&str], cfg: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tracesift"))
        .args(args)
        .arg("-c")
        .arg(cfg)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn plan_apply_plan_then_alter_and_every_unsafe_state_refused() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = dir.path().join("topics.yaml");
    std::fs::write(&topics, TOPICS).unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(&cfg, config(&broker.brokers, &topics, "")).unwrap();

    // Offline check of the file against the configuration.
    let o = tracesift(&["topology", "check"], &cfg);
    assert!(o.status.success(), "{}", text(&o));

    // `run` refuses to start while topics are missing (no kafka.create_topics).
    let o = tracesift(&["run"], &cfg);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("missing topic(s) otlp_spans") && text(&o).contains("topology apply"),
        "{}",
        text(&o)
    );

    // Empty broker: every topic is a create.
    let o = tracesift(&["topology", "plan"], &cfg);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for t in [
        "otlp_spans",
        "otlp_spans_sampled",
        "tracesift_decisions",
        "otlp_spans_dlq",
    ] {
        assert!(out.contains(&format!("+ create {t} (")), "{t}: {out}");
    }
    assert!(out.contains("4 change(s)"), "{out}");

    let o = tracesift(&["topology", "apply"], &cfg);
    assert!(
        o.status.success() && text(&o).contains("applied 4 change(s)"),
        "{}",
        text(&o)
    );

    let o = tracesift(&["topology", "plan"], &cfg);
    assert!(
        o.status.success() && text(&o).contains("nothing to do"),
        "{}",
        text(&o)
    );

    // A changed retention is an alter; tansu cannot apply it (no AlterConfigs) and says so.
    std::fs::write(&topics, TOPICS.replace("\"172800000\"", "\"259200000\"")).unwrap();
    let o = tracesift(&["topology", "plan"], &cfg);
    assert!(
        o.status.success()
            && text(&o).contains("~ alter otlp_spans:\n    retention.ms: 172800000 → 259200000"),
        "{}",
        text(&o)
    );
    let o = tracesift(&["topology", "apply"], &cfg);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("alter otlp_spans") && text(&o).contains("not supported by broker"),
        "{}",
        text(&o)
    );
    std::fs::write(&topics, TOPICS).unwrap();

    // Each unsafe state, refused with its reason (exit 1), nothing applied.
    let unsafe_files = [
        (
            TOPICS.replace("\"172800000\"", "\"60000\""),
            "shorter than store.max_trace_age + kafka.replay_window",
        ),
        (
            TOPICS.replace(
                "{cleanup.policy: delete, retention.ms: \"259200000\"}",
                "{cleanup.policy: compact}",
            ),
            "cleanup.policy=compact on a Sampled topic",
        ),
        (
            TOPICS.replace("\"compact,delete\"", "delete"),
            "the decision log needs cleanup.policy=compact",
        ),
        (
            TOPICS.replace("role: decisions\n", "role: decisions\n    partitions: 1\n"),
            "Kafka cannot remove partitions",
        ),
        (
            TOPICS.replace("min.insync.replicas: \"1\"", "min.insync.replicas: \"2\""),
            "above the replication factor 1",
        ),
        (
            TOPICS.replace("role: input\n", "role: input\n    partitions: 4\n"),
            "--allow-repartition",
        ),
    ];
    for (file, reason) in unsafe_files {
        std::fs::write(&topics, &file).unwrap();
        let o = tracesift(&["topology", "plan"], &cfg);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(1), "{reason}: {out}");
        assert!(
            out.contains("✗ refused") && out.contains(reason),
            "{reason}: {out}"
        );
        assert!(out.contains("nothing will be applied"), "{out}");
        let o = tracesift(&["topology", "apply"], &cfg);
        assert_eq!(o.status.code(), Some(1), "{reason}: apply must refuse too");
    }
    std::fs::write(&topics, TOPICS).unwrap();

    // `run` refuses a cluster whose input is compacted (made behind tracesift's back).
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin: AdminClient<DefaultClientContext> =
            support::client(&broker.brokers).create().unwrap();
        let t = NewTopic::new("compacted_in", 2, TopicReplication::Fixed(1))
            .set("cleanup.policy", "compact");
        for r in admin
            .create_topics([&t], &AdminOptions::new())
            .await
            .unwrap()
        {
            r.unwrap();
        }
    });
    let cfg2 = dir.path().join("c2.yaml");
    std::fs::write(
        &cfg2,
        config(&broker.brokers, &topics, ", input_topics: [compacted_in]"),
    )
    .unwrap();
    let o = tracesift(&["run"], &cfg2);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("unsafe topology")
            && text(&o).contains("topic `compacted_in`: cleanup.policy=compact on a Input topic"),
        "{}",
        text(&o)
    );
}
