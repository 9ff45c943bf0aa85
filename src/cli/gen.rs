//! `tracesift gen`: realistic OTLP traces into a topic (the load generator in `crate::gen`).

use crate::clock::Clock;

/// Produces `traces` generated traces to `topic`.
pub async fn run(
    brokers: String,
    topic: String,
    traces: usize,
    rate: Option<f64>,
    split: bool,
    seed: u64,
    partitions: Option<i32>,
) -> anyhow::Result<()> {
    use rdkafka::config::ClientConfig;
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("compression.type", "lz4");
    if let Some(p) = partitions {
        crate::topics::create(&cc, crate::topics::TopicSpec::new(&topic, p)).await?;
    }
    let producer: rdkafka::producer::FutureProducer = cc.create()?;
    let opts = crate::gen::GenOptions {
        traces,
        seed,
        split,
        start_ns: crate::clock::Clock::wall_nanos(&crate::clock::SystemClock::new()),
        ..Default::default()
    };
    let (records, manifest) = crate::gen::plan_records(&opts);
    let clock = crate::clock::SystemClock::new();
    let t0 = clock.now();
    let produced = crate::gen::produce(&producer, &topic, &records, rate).await?;
    let (n, bytes) = (produced.records, produced.bytes);
    let secs = (clock.now() - t0).as_secs_f64();
    let spans: usize = manifest.traces.iter().map(|t| t.spans).sum();
    println!(
        "produced {traces} traces, {spans} spans in {n} records ({:.1} MB) to {topic} in {secs:.1}s ({:.0} spans/s)",
        bytes as f64 / 1e6,
        spans as f64 / secs
    );
    Ok(())
}
