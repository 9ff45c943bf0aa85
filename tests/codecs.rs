//! Every codec Collectors' Kafka exporters use, on input: the same traffic produced by a client
//! other than ours (the Python `confluent-kafka` client, librdkafka of its own wheel) with gzip,
//! lz4 and zstd into separate topics on the real broker, and with snappy into librdkafka's mock
//! cluster (tansu 0.6.0 cannot serve snappy batches). Every ERROR trace of every topic is kept
//! whole; the pipeline writes its own topics with zstd (`kafka.compression`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use support::{create_topic, otlp_record, spread_trace_ids, test_span, Broker, Member};

const CODECS: [&str; 3] = ["gzip", "lz4", "zstd"];

/// 40 traces per topic, 3 spans each in one record; every other one has an ERROR span.
fn records(salt: u8) -> Vec<([u8; 16], bool, Vec<u8>)> {
    spread_trace_ids(40)
        .into_iter()
        .enumerate()
        .map(|(i, mut t)| {
            t[0] = salt;
            let error = i % 2 == 0;
            let spans = (1..=3).map(|n| test_span(&t, n, error && n == 2)).collect();
            (t, error, otlp_record(spans))
        })
        .collect()
}

const PRODUCE: &str = r#"
import sys
from confluent_kafka import Producer
brokers, path = sys.argv[1], sys.argv[2]
producers = {}
n = 0
for line in open(path):
    topic, codec, key, value = line.rstrip("\n").split("\t")
    p = producers.get(codec)
    if p is None:
        p = producers[codec] = Producer({"bootstrap.servers": brokers, "compression.type": codec,
                                         "linger.ms": 20, "enable.idempotence": True})
    p.produce(topic, key=key.encode(), value=bytes.fromhex(value))
    n += 1
for p in producers.values():
    assert p.flush(30) == 0, "records left unsent"
print(n)
"#;

#[test]
fn gzip_lz4_and_zstd_batches_from_another_client_are_all_read() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for c in CODECS {
        rt.block_on(create_topic(&brokers, &format!("in_{c}"), 2));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut lines = String::new();
    let mut errors = Vec::new();
    for (i, c) in CODECS.iter().enumerate() {
        for (t, error, v) in records(i as u8 + 1) {
            lines.push_str(&format!(
                "in_{c}\t{c}\t{}\t{}\n",
                hex::encode(t),
                hex::encode(&v)
            ));
            if error {
                errors.push((c, t));
            }
        }
    }
    let input = dir.path().join("records.tsv");
    std::fs::write(&input, lines).unwrap();
    let script = dir.path().join("produce.py");
    std::fs::write(&script, PRODUCE).unwrap();
    let out = std::process::Command::new(support::python())
        .arg(&script)
        .arg(&brokers)
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the confluent-kafka producer failed (is it in the test venv? deploy/local/tools.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "120");

    let cfg = format!(
        r#"
kafka:
  brokers: "{brokers}"
  group_id: codecs
  create_topics: true
  compression: zstd
  input_topics: [in_gzip, in_lz4, in_zstd]
  commit_interval: 300ms
store: {{decision_wait: 2s, decision_wait_after_root: 2s, max_trace_age: 1m, tick: 50ms}}
archive: {{hot: {{url: "file://{}", flush_interval: 1s}}}}
telemetry: {{listen: ""}}
policies: [{{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}]
"#,
        dir.path().join("hot").display()
    );
    let member = Member::start(dir.path(), "codecs", &cfg, &[]);
    let deadline = Instant::now() + Duration::from_secs(90);
    let missing = loop {
        std::thread::sleep(Duration::from_secs(2));
        let got = support::sampled_spans(&brokers, "otlp_spans_sampled");
        let missing: Vec<_> = errors
            .iter()
            .filter(|(_, t)| got.get(t).is_none_or(|v| v.len() != 3))
            .map(|(c, t)| format!("{c}:{}", hex::encode(t)))
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
    };
    let log = member.log();
    assert!(
        missing.is_empty(),
        "{} ERROR traces not kept whole: {missing:?}\n{log}",
        missing.len()
    );
    assert!(!log.contains("cannot be decompressed"), "{log}");
    member.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snappy_batches_are_read_on_the_mock_cluster() {
    let cluster = support::mock_cluster(1, 2);
    let brokers = cluster.bootstrap_servers();
    let cfg = tracesift::config::Config::parse(&format!(
        r#"
kafka: {{brokers: "{brokers}", create_topics: true, group_id: snappy, commit_interval: 100ms}}
store: {{decision_wait: 300ms, decision_wait_after_root: 300ms, tick: 20ms}}
policies: [{{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}]
sinks: {{parquet: {{enabled: false}}}}
telemetry: {{listen: ""}}
"#
    ))
    .unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("compression.type", "snappy")
        .set("linger.ms", "20")
        .create()
        .unwrap();
    let recs = records(9);
    for (t, _, v) in &recs {
        producer
            .send(
                FutureRecord::to("otlp_spans")
                    .key(&hex::encode(t))
                    .payload(v),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let running = tracesift::pipeline::start(
        cfg,
        Arc::new(tracesift::clock::tokio_clock::TokioClock::new()),
    )
    .await
    .unwrap();
    let want: Vec<[u8; 16]> = recs.iter().filter(|r| r.1).map(|r| r.0).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got: BTreeMap<[u8; 16], usize> = BTreeMap::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let b = brokers.clone();
        let spans = tokio::task::spawn_blocking(move || {
            support::read_until_idle(&b, "otlp_spans_sampled", Duration::from_secs(1))
        })
        .await
        .unwrap();
        got = support::spans_of(spans, "otlp_spans_sampled")
            .into_iter()
            .map(|(t, v)| (t, v.len()))
            .collect();
        if want.iter().all(|t| got.get(t) == Some(&3)) {
            break;
        }
    }
    running.stop().await;
    let kept_whole = want.iter().filter(|t| got.get(*t) == Some(&3)).count();
    assert_eq!(
        kept_whole,
        want.len(),
        "ERROR traces kept whole from snappy batches"
    );
    assert_eq!(got.len(), want.len(), "only the ERROR traces are kept");
    drop(producer);
    drop(cluster);
}
