//! The sampled topic's records on the real broker (tansu): batched by default, one record per
//! partition per step, each trace on the partition a keyed record of it would go to (with the
//! producer's `partitioner`: librdkafka's default CRC-32, and `murmur2_random`, the Java
//! client's); `records: per_trace` writes one record per trace keyed by its trace id.
//!
//! Where a keyed record goes is learnt from librdkafka itself: the test produces a record keyed
//! by each trace id to a scratch topic with the same partition count and reads back where it
//! landed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

use support::{create_topic, otlp_record, spread_trace_ids, test_span, Broker, Member, Read};

const TRACES: u32 = 60;
const PARTITIONS: i32 = 3;

/// The traces of a sampled record in order of first appearance, with their span counts.
fn traces_of(r: &Read) -> Vec<([u8; 16], usize)> {
    let req = ExportTraceServiceRequest::decode(r.value.as_slice()).expect("strict decode");
    let mut out: Vec<([u8; 16], usize)> = Vec::new();
    for s in req
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
    {
        let t: [u8; 16] = s.trace_id.as_slice().try_into().unwrap();
        match out.iter_mut().find(|(id, _)| *id == t) {
            Some((_, n)) => *n += 1,
            None => out.push((t, 1)),
        }
    }
    out
}

/// Where librdkafka's `partitioner` puts a record keyed by each trace id hex.
async fn keyed_partitions(
    brokers: &str,
    topic: &str,
    partitioner: &str,
    ids: &[[u8; 16]],
) -> HashMap<[u8; 16], i32> {
    create_topic(brokers, topic, PARTITIONS).await;
    let p: FutureProducer = support::client(brokers)
        .set("partitioner", partitioner)
        .create()
        .unwrap();
    let mut out = HashMap::new();
    for t in ids {
        let key = hex::encode(t);
        let d = p
            .send(
                FutureRecord::to(topic).key(&key).payload("x"),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        out.insert(*t, d.partition);
    }
    out
}

fn member_config(brokers: &str, group: &str, sampled: &str, extra: &str) -> String {
    format!(
        r#"
kafka:
  brokers: "{brokers}"
  group_id: {group}
  create_topics: true
  input_topics: [otlp_spans]
  sampled_topic: {sampled}
  decisions_topic: decisions_{group}
  commit_interval: 300ms
{extra}
store: {{decision_wait: 1s, decision_wait_after_root: 1s, max_trace_age: 1m, tick: 500ms}}
sinks:
  parquet: {{enabled: false}}
{records}
telemetry: {{listen: ""}}
policies: [{{name: all, type: always_sample}}]
"#,
        records = if group == "per_trace" {
            "  kafka: {records: per_trace}"
        } else {
            ""
        }
    )
}

#[test]
fn kept_traces_are_batched_per_partition_where_their_key_would_go() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ids = spread_trace_ids(TRACES);
    let (crc, murmur) = rt.block_on(async {
        create_topic(&brokers, "otlp_spans", 2).await;
        for t in ["sampled_crc", "sampled_murmur", "sampled_per_trace"] {
            create_topic(&brokers, t, PARTITIONS).await;
        }
        let crc = keyed_partitions(&brokers, "scratch_crc", "consistent_random", &ids).await;
        let murmur = keyed_partitions(&brokers, "scratch_murmur", "murmur2_random", &ids).await;
        let p: FutureProducer = support::client(&brokers).create().unwrap();
        let mut ends = BTreeMap::new();
        for t in &ids {
            let spans = (1..=3).map(|n| test_span(t, n, false)).collect();
            support::send_trace_record(&p, t, &otlp_record(spans), &mut ends).await;
        }
        (crc, murmur)
    });
    let placements: HashSet<i32> = crc.values().copied().collect();
    assert_eq!(
        placements.len(),
        PARTITIONS as usize,
        "the traces spread over every partition"
    );

    let dir = tempfile::tempdir().unwrap();
    let murmur_props = "  properties: {partitioner: murmur2_random}";
    let members = [
        ("crc", "sampled_crc", "", Some(&crc)),
        ("murmur", "sampled_murmur", murmur_props, Some(&murmur)),
        ("per_trace", "sampled_per_trace", "", None),
    ]
    .map(|(group, topic, extra, want)| {
        let m = Member::start(
            dir.path(),
            group,
            &member_config(&brokers, group, topic, extra),
            &[],
        );
        (group, topic, want, m)
    });

    for (group, topic, want, member) in members {
        let deadline = Instant::now() + Duration::from_secs(90);
        let records = loop {
            let records = support::read_all(&brokers, topic);
            let spans: usize = records.iter().flat_map(traces_of).map(|(_, n)| n).sum();
            if spans >= 3 * TRACES as usize || Instant::now() > deadline {
                break records;
            }
            std::thread::sleep(Duration::from_secs(1));
        };
        let log = member.log();
        let mut spans_of: HashMap<[u8; 16], usize> = HashMap::new();
        let mut partition_of: HashMap<[u8; 16], HashSet<i32>> = HashMap::new();
        for r in &records {
            let traces = traces_of(r);
            let key = r
                .key
                .as_ref()
                .map(|k| String::from_utf8(k.clone()).unwrap());
            match traces.as_slice() {
                [(one, _)] => assert_eq!(
                    key,
                    Some(hex::encode(one)),
                    "{group}: a record of one trace is keyed by it"
                ),
                _ => assert_eq!(key, None, "{group}: a batch has no key"),
            }
            for (t, n) in traces {
                partition_of.entry(t).or_default().insert(r.partition);
                *spans_of.entry(t).or_default() += n;
            }
        }
        for t in &ids {
            assert_eq!(
                spans_of.get(t),
                Some(&3),
                "{group}: trace {} whole, once\n{log}",
                hex::encode(t)
            );
        }
        match want {
            Some(want) => {
                for t in &ids {
                    let got = &partition_of[t];
                    assert_eq!(
                        got,
                        &HashSet::from([want[t]]),
                        "{group}: trace {} where its keyed record goes",
                        hex::encode(t)
                    );
                }
                assert!(
                    records.len() < TRACES as usize / 2,
                    "{group}: {} records for {TRACES} traces: not batched",
                    records.len()
                );
                assert!(
                    records.iter().any(|r| traces_of(r).len() > 1),
                    "{group}: no record holds several traces"
                );
            }
            None => {
                assert_eq!(
                    records.len(),
                    TRACES as usize,
                    "{group}: one record per trace"
                );
                for r in &records {
                    assert_eq!(traces_of(r).len(), 1);
                }
            }
        }
        member.stop();
    }
}
