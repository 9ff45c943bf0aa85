//! Hostile input through the real broker and a real `tracesift run`, beside normal traffic.
//!
//! Scenario: 2 partitions; 150 normal ERROR traces and 150 OK traces (3 spans each), and between
//! them, each once: an ERROR trace whose span name is not UTF-8; a span with a mistyped known
//! field; an empty record; an OTLP/JSON logs payload (`content-type: application/json`); random
//! bytes; a ~900 KB resource over 3,000 one-span ERROR traces; a 4 MiB OTLP/JSON record of
//! empty spans; an ERROR trace whose spans start at 0; an ERROR trace with a span that is its
//! own parent (under another kind of the same id, too).
//!
//! Guarantees checked: the committed offsets reach the end of every partition; every refused
//! record is in the dead-letter topic with its reason, its original key, headers and bytes;
//! every normal ERROR trace, the zero-start trace and the cyclic trace are in the sampled topic
//! and in the archive whole; every sampled record decodes with the strict `prost` types; the
//! zero-start trace is filed under the hour it arrived; peak RSS stays within the README's
//! memory formula; `tracesift trace` on the cyclic trace returns with every span.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureProducer;
use support::hostile::{hostile, trace_id};
use support::*;

/// Store and queue budgets of the run, MiB (the memory formula is computed from them).
const STORE_MAX_MIB: u64 = 16;
const QUEUE_MIB: u64 = 8;
const PARTITIONS: u64 = 2;

fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kb / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_record_wedges_a_partition() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", PARTITIONS as i32).await;
    let dir = tempfile::tempdir().unwrap();
    let hot = dir.path().join("hot");
    let config = format!(
        r#"
kafka: {{brokers: "{brokers}", create_topics: true, group_id: poison, commit_interval: 200ms, partition_queue_bytes: {QUEUE_MIB}MiB}}
store: {{decision_wait: 2s, decision_wait_after_root: 1s, max_bytes: {STORE_MAX_MIB}MiB, max_trace_bytes: 4MiB}}
archive: {{hot: {{url: "file://{}", flush_interval: 1s}}}}
telemetry: {{listen: ""}}
shutdown_timeout: 10s
policies:
  - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}
"#,
        hot.display()
    );
    let member = Member::start(dir.path(), "poison", &config, &[]);
    let producer: FutureProducer = client(&brokers)
        .set("linger.ms", "5")
        .set("message.max.bytes", "20000000")
        .create()
        .unwrap();
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    let mut errors: Vec<[u8; 16]> = Vec::new();
    let send_normal = |i: u32| {
        let t = trace_id(0x10, i);
        let error = i.is_multiple_of(2);
        (
            t,
            error,
            otlp_record((1..=3).map(|n| test_span(&t, n, error)).collect()),
        )
    };
    let bad = hostile();
    let mut sent_bad: HashMap<String, (&str, Vec<u8>)> = HashMap::new();
    for i in 0..300u32 {
        let (t, error, v) = send_normal(i);
        send_trace_record(&producer, &t, &v, &mut ends).await;
        if error {
            errors.push(t);
        }
        if i % 30 == 15 {
            if let Some((name, value, content_type, reason)) = bad.get((i / 30) as usize) {
                let key = format!("bad-{name}");
                let mut headers = OwnedHeaders::new().insert(Header {
                    key: "origin",
                    value: Some("poison-test"),
                });
                if let Some(ct) = content_type {
                    headers = headers.insert(Header {
                        key: "content-type",
                        value: Some(*ct),
                    });
                }
                send_record(&producer, &key, value, Some(headers), &mut ends).await;
                sent_bad.insert(key, (reason, value.clone()));
            }
        }
    }
    assert_eq!(sent_bad.len(), bad.len());
    // Valid but odd: spans starting at 0, and a span that is its own parent.
    let zero = trace_id(0xb1, 0);
    let zero_spans = (1..=3)
        .map(|n| {
            let mut s = test_span(&zero, n, true);
            s.start_time_unix_nano = 0;
            s
        })
        .collect();
    send_trace_record(&producer, &zero, &otlp_record(zero_spans), &mut ends).await;
    let cyclic = trace_id(0xb2, 0);
    let mut own = test_span(&cyclic, 2, true);
    own.parent_span_id = vec![2; 8];
    own.kind = 2;
    let mut other_kind = test_span(&cyclic, 2, true);
    other_kind.kind = 3;
    let cyc_spans = vec![test_span(&cyclic, 1, true), own, other_kind];
    send_trace_record(&producer, &cyclic, &otlp_record(cyc_spans), &mut ends).await;
    errors.push(zero);

    let waited = tokio::spawn({
        let (brokers, ends) = (brokers.clone(), ends.clone());
        async move {
            wait_committed(
                &brokers,
                "poison",
                "otlp_spans",
                &ends,
                Duration::from_secs(120),
            )
            .await
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "offsets not committed to the end:\n{}",
        member.log()
    );
    // Let the last segments flush, then take the peak before stopping.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let peak = peak_rss_mib(member.child.id());
    let log = member.log();
    member.stop();

    // Dead letters: each refused record with its reason, key, headers and bytes.
    let dlq = read_all(&brokers, "otlp_spans_dlq");
    let by_key: HashMap<String, &Read> = dlq
        .iter()
        .filter_map(|r| Some((String::from_utf8(r.key.clone()?).ok()?, r)))
        .collect();
    for (key, (reason, value)) in &sent_bad {
        let r = by_key.get(key).unwrap_or_else(|| {
            panic!(
                "{key} not dead-lettered; dlq keys {:?}\n{log}",
                by_key.keys()
            )
        });
        let got = r
            .headers
            .get("tracesift.error")
            .cloned()
            .unwrap_or_default();
        assert!(
            !got.is_empty() && got.contains(reason),
            "{key}: reason {got:?}, want {reason:?}"
        );
        assert_eq!(
            r.headers.get("origin").map(String::as_str),
            Some("poison-test"),
            "{key}"
        );
        assert!(r.headers.contains_key("tracesift.source.offset"), "{key}");
        assert!(
            r.value == *value,
            "{key}: dead letter bytes differ from the original"
        );
    }
    assert_eq!(
        dlq.len(),
        sent_bad.len(),
        "only the refused records are dead letters"
    );

    // Sampled: strict decode of every record; every ERROR trace whole.
    let kept: HashMap<[u8; 16], HashSet<(Vec<u8>, i32)>> =
        sampled_spans(&brokers, "otlp_spans_sampled")
            .into_iter()
            .map(|(t, spans)| (t, spans.into_iter().map(|s| (s.span_id, s.kind)).collect()))
            .collect();
    for t in &errors {
        assert_eq!(
            kept.get(t).map(HashSet::len),
            Some(3),
            "ERROR trace {} not kept whole",
            hex::encode(t)
        );
    }
    assert_eq!(kept.get(&cyclic).map(HashSet::len), Some(3), "cyclic trace");
    for t in kept.keys() {
        assert!(
            t[0] != 0xa1 && t[0] != 0xa2 && t[0] != 0xa3,
            "a refused record's span was kept"
        );
    }

    // Archive: the same traces whole, the zero-start trace filed under today's hour.
    let files = parquet_files(&hot);
    assert!(!files.is_empty(), "no Parquet written");
    let now = chrono::Utc::now();
    let days: Vec<String> = [now, now - chrono::Duration::hours(1)]
        .iter()
        .map(|d| format!("date={}", d.format("%Y-%m-%d")))
        .collect();
    let out = run_python(&format!(
        "import duckdb\n\
         rows = duckdb.sql(\"select hex(trace_id), count(distinct (span_id, kind)), min(filename) from read_parquet('{}/**/*.parquet', filename=true) group by 1\").fetchall()\n\
         for r in rows: print(r[0].lower(), r[1], r[2])",
        hot.display()
    ));
    let archived: HashMap<String, (usize, String)> = out
        .lines()
        .map(|l| {
            let mut p = l.split_whitespace();
            let t = p.next().unwrap().to_string();
            let n = p.next().unwrap().parse().unwrap();
            (t, (n, p.next().unwrap().to_string()))
        })
        .collect();
    for t in errors.iter().chain([&cyclic]) {
        let (n, _) = archived
            .get(&hex::encode(t))
            .unwrap_or_else(|| panic!("{} not archived", hex::encode(t)));
        assert_eq!(*n, 3, "{} archived with {n} spans", hex::encode(t));
    }
    let (_, file) = &archived[&hex::encode(zero)];
    assert!(
        days.iter().any(|d| file.contains(d.as_str())),
        "zero-start trace not filed under the hour it arrived: {file}"
    );

    // Memory: fixed ~160 MiB + per partition 2 × max_bytes + queue bytes + 16 MiB prefetch,
    // plus the 64 MiB producer queue (README, Guarantees).
    let bound = 160 + PARTITIONS * (2 * STORE_MAX_MIB + QUEUE_MIB + 16) + 64;
    assert!(
        peak <= bound,
        "peak RSS {peak} MiB over the documented {bound} MiB"
    );
    println!("peak RSS {peak} MiB (bound {bound} MiB)");

    // `tracesift trace` on the cyclic trace returns, with every span.
    let cfg = dir.path().join("poison.yaml");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tracesift"))
        .args(["trace", &hex::encode(cyclic), "-c"])
        .arg(&cfg)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`tracesift trace` on a cyclic trace did not return within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.matches("op").count() >= 3, "{text}");
}
