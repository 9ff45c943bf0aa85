//! An input batch the client cannot decompress never stalls a partition silently.
//!
//! The batch is real: a Kafka Produce request written by hand (RecordBatch v2 with a correct
//! CRC-32C, attributes = zstd, a body that is not zstd) to tansu's `memory://` engine, which
//! stores produced batches as they come and serves them back unchanged. librdkafka cannot move
//! past such a batch; tracesift must say so: an error in its log, the
//! `tracesift_source_undecodable_batches_total` counter, and `/readyz` down with the reason,
//! while `/healthz` stays up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{create_topic, free_port, Broker, Member};

/// One RecordBatch (magic 2) of one record whose compressed body is `body`, codec `codec`.
fn record_batch(codec: i16, body: &[u8]) -> Vec<u8> {
    let now = 1_700_000_000_000i64;
    let mut after_crc = Vec::new();
    after_crc.extend_from_slice(&codec.to_be_bytes()); // attributes
    after_crc.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    after_crc.extend_from_slice(&now.to_be_bytes()); // base timestamp
    after_crc.extend_from_slice(&now.to_be_bytes()); // max timestamp
    after_crc.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    after_crc.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    after_crc.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    after_crc.extend_from_slice(&1i32.to_be_bytes()); // records
    after_crc.extend_from_slice(body);
    let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
    digest.update(&after_crc);
    let crc = digest.finalize() as u32;
    let mut after_length = Vec::new();
    after_length.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    after_length.push(2); // magic
    after_length.extend_from_slice(&crc.to_be_bytes());
    after_length.extend_from_slice(&after_crc);
    let mut batch = Vec::new();
    batch.extend_from_slice(&0i64.to_be_bytes()); // base offset
    batch.extend_from_slice(&(after_length.len() as i32).to_be_bytes());
    batch.extend_from_slice(&after_length);
    batch
}

/// Sends a Produce v3 request with `batch` to `topic`/`partition` and returns the error code
/// of the partition's response.
fn produce_raw(brokers: &str, topic: &str, partition: i32, batch: &[u8]) -> i16 {
    let mut body = Vec::new();
    body.extend_from_slice(&0i16.to_be_bytes()); // api key: Produce
    body.extend_from_slice(&3i16.to_be_bytes()); // version
    body.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    let client = b"tracesift-test";
    body.extend_from_slice(&(client.len() as i16).to_be_bytes());
    body.extend_from_slice(client);
    body.extend_from_slice(&(-1i16).to_be_bytes()); // transactional id: null
    body.extend_from_slice(&1i16.to_be_bytes()); // acks
    body.extend_from_slice(&10_000i32.to_be_bytes()); // timeout
    body.extend_from_slice(&1i32.to_be_bytes()); // topics
    body.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&1i32.to_be_bytes()); // partitions
    body.extend_from_slice(&partition.to_be_bytes());
    body.extend_from_slice(&(batch.len() as i32).to_be_bytes());
    body.extend_from_slice(batch);
    let mut s = TcpStream::connect(brokers).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&(body.len() as i32).to_be_bytes()).unwrap();
    s.write_all(&body).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut resp).unwrap();
    // correlation id, topics count, name, partitions count, index, error code
    let name_len = i16::from_be_bytes([resp[8], resp[9]]) as usize;
    let at = 10 + name_len + 4 + 4;
    i16::from_be_bytes([resp[at], resp[at + 1]])
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

#[test]
fn a_batch_that_cannot_be_decompressed_is_logged_counted_and_takes_readiness_down() {
    let broker = Broker::start_with("memory://tansu/");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(create_topic(&broker.brokers, "otlp_spans", 1));
    // zstd (codec 4) over bytes that are no zstd frame.
    let err = produce_raw(
        &broker.brokers,
        "otlp_spans",
        0,
        &record_batch(4, b"this is not a zstd frame, whatever the attributes say"),
    );
    assert_eq!(err, 0, "the broker took the batch");

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = format!(
        r#"
kafka: {{brokers: "{}", create_topics: true, group_id: stuck, commit_interval: 300ms}}
store: {{decision_wait: 1s, decision_wait_after_root: 1s, tick: 50ms}}
sinks: {{parquet: {{enabled: false}}}}
telemetry: {{listen: "127.0.0.1:{port}"}}
policies: [{{name: all, type: always_sample}}]
"#,
        broker.brokers
    );
    let member = Member::start(dir.path(), "stuck", &cfg, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut readyz, mut metrics) = ((0, String::new()), String::new());
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            continue;
        }
        readyz = http_get(port, "/readyz");
        metrics = http_get(port, "/metrics").1;
        if readyz.0 == 503
            && readyz.1.contains("cannot be decompressed")
            && metrics.contains("tracesift_source_undecodable_batches_total")
        {
            break;
        }
    }
    let log = member.log();
    assert_eq!(readyz.0, 503, "readiness down:\n{}\n{log}", readyz.1);
    assert!(
        readyz.1.contains("cannot be decompressed (corrupt"),
        "{}",
        readyz.1
    );
    assert!(
        metrics.contains("tracesift_source_undecodable_batches_total{reason=\"corrupt\"}"),
        "{metrics}"
    );
    assert_eq!(http_get(port, "/healthz").0, 200, "liveness stays up");
    // Logged with its reason: by the source (`cannot be decompressed`) or, when the decision
    // restore reads the corrupt batch first, by the restore (librdkafka's `BadCompression`).
    let logged = |l: &str| l.contains("cannot be decompressed") || l.contains("BadCompression");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut log = log;
    while !logged(&log) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        log = member.log();
    }
    assert!(logged(&log), "{log}");
    member.stop();
}
