//! The Kafka client settings of every tracesift client: the group consumer, the producer of
//! the sampled, dead-letter and decision-log topics, the admin client, and the consumers of the
//! decision-log restore, the rekey stage, dry-run and the bench. What tracesift sets is here
//! once; `kafka.properties` from the configuration is passed through to every client (consumer-
//! only keys not to the producer and admin), so TLS, SASL and tuning are configured in one place.

use rdkafka::config::ClientConfig;

use super::config::KafkaConfig;

/// librdkafka settings tracesift owns for its consumer (user properties may add to them).
pub fn consumer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("queued.max.messages.kbytes", "16384")
        // One fetch response is buffered whole: keep it well under the prefetch bound.
        .set("fetch.max.bytes", "16777216");
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

/// librdkafka settings for the producer of the sampled and dead-letter topics.
pub fn producer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        // Bounded: writes wait (and the partitions behind them pause) beyond 64 MiB queued.
        .set("queue.buffering.max.kbytes", "65536");
    for (k, v) in &cfg.properties {
        if !is_consumer_only(k) {
            c.set(k, v);
        }
    }
    c
}

fn is_consumer_only(k: &str) -> bool {
    k.starts_with("fetch.")
        || k.starts_with("session.")
        || k.starts_with("heartbeat.")
        || k.starts_with("max.poll.")
        || k.starts_with("auto.offset")
        || k.starts_with("queued.")
        || k.starts_with("partition.assignment")
        || k.starts_with("group.")
        || k == "isolation.level"
}

/// librdkafka settings for an admin client (topic checks and creation).
pub fn admin_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    for (k, v) in &cfg.properties {
        if !is_consumer_only(k) && !is_producer_only(k) {
            c.set(k, v);
        }
    }
    c
}

fn is_producer_only(k: &str) -> bool {
    k.starts_with("queue.buffering.")
        || k.starts_with("linger.")
        || k.starts_with("batch.")
        || k.starts_with("compression.")
        || k == "acks"
        || k == "enable.idempotence"
}
