//! Kafka as every stage reaches it: the `kafka:` section ([`config`]), record headers, and the
//! client settings of every tracesift client: the group consumer, the producer of
//! the sampled, dead-letter and decision-log topics, the admin client, and the consumers of the
//! decision-log restore, the rekey stage, dry-run and the bench. What tracesift sets is here
//! once; `kafka.properties` from the configuration is passed through to every client (consumer-
//! only keys not to the producer and admin), so TLS, SASL and tuning are configured in one place.

pub mod config;
pub mod headers;

pub use self::headers::Headers;

use rdkafka::config::{ClientConfig, FromClientConfig, FromClientConfigAndContext};
use rdkafka::error::KafkaError;

use self::config::KafkaConfig;

/// Bytes one record may take on the wire: the largest accepted value plus room for its key,
/// headers and batch framing.
fn record_room(cfg: &KafkaConfig) -> u64 {
    (cfg.max_record_bytes.0 + (1 << 20)).max(1_000_000)
}

/// librdkafka settings tracesift owns for its consumer (user properties may add to them).
pub fn consumer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        // A member that dies holds its partitions until its session times out. Heartbeats
        // come from librdkafka's own thread, so a busy pipeline does not miss them: 10 s is
        // safe with dynamic membership (librdkafka's default is 45 s). A static member is
        // expected back under the same id, so it keeps the long default.
        .set(
            "session.timeout.ms",
            match cfg.group_instance_id {
                Some(_) => "45000",
                None => "10000",
            },
        )
        .set("heartbeat.interval.ms", "3000")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("queued.max.messages.kbytes", PREFETCH_KBYTES.to_string())
        // One fetch response is buffered whole: keep it well under the prefetch bound, but
        // large enough for the largest record accepted (`kafka.max_record_bytes`): a broker
        // that holds to the per-partition limit would otherwise never hand such a record over
        // and the partition would stop there.
        .set("max.partition.fetch.bytes", record_room(cfg).to_string())
        .set(
            "fetch.max.bytes",
            record_room(cfg).max(16 << 20).to_string(),
        );
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

/// librdkafka's prefetch queue for the consumer, KiB (`queued.max.messages.kbytes`; a term of
/// the memory bound, which follows an override in `kafka.properties`).
pub const PREFETCH_KBYTES: u64 = 16 << 10;

/// librdkafka settings for the producer of the sampled and dead-letter topics.
pub fn producer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", cfg.compression.as_str())
        // Bounded: writes wait (and the partitions behind them pause) beyond 64 MiB queued.
        .set("queue.buffering.max.kbytes", "65536")
        // A dead letter is as large as the largest input record accepted, plus headers.
        .set("message.max.bytes", record_room(cfg).to_string());
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

/// Creates a client from `c`; a refused setting is reported without its value when the key is
/// a secret (librdkafka's message would otherwise quote it).
pub fn create<T: FromClientConfig>(c: &ClientConfig) -> Result<T, KafkaError> {
    c.create().map_err(redact)
}

/// [`create`] with a client context.
pub fn create_with_context<C: rdkafka::ClientContext, T: FromClientConfigAndContext<C>>(
    c: &ClientConfig,
    context: C,
) -> Result<T, KafkaError> {
    c.create_with_context(context).map_err(redact)
}

/// Whether librdkafka's words say the cluster refused the client (its certificate, the CA,
/// SASL) rather than could not be reached.
pub fn is_refusal(reason: &str) -> bool {
    let lower = reason.to_ascii_lowercase();
    [
        "ssl handshake failed",
        "certificate verify failed",
        "certificate required",
        "bad certificate",
        "unknown ca",
        "handshake failure",
        "authentication failed",
        "sasl authentication error",
        "unsupported sasl mechanism",
    ]
    .iter()
    .any(|w| lower.contains(w))
}

/// The last time a cluster refused one of our clients (TLS, SASL), as librdkafka said it.
static REFUSED: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// What a cluster last said when it refused one of this process's clients (a TLS handshake
/// or SASL authentication that failed), if it did.
pub fn refused() -> Option<String> {
    REFUSED.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

static BROKERS_GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Says that the brokers are going away on purpose (`demo` stopping its own in-process
/// cluster): from now on, losing them is logged at debug, not as a warning.
pub fn brokers_going_away() {
    BROKERS_GONE.store(true, std::sync::atomic::Ordering::Release);
}

/// A client-wide error librdkafka reports (`ClientContext::error`), logged at the level it
/// deserves: reaching the end of a partition is the normal state of a caught-up consumer
/// (debug); brokers unreachable or a connection lost degrade and librdkafka retries them on its
/// own (warn); everything else is an error an operator should look at.
pub fn client_error(error: KafkaError, reason: &str) {
    use rdkafka::types::RDKafkaErrorCode as C;
    let code = match &error {
        KafkaError::PartitionEOF(_) => Some(C::PartitionEOF),
        e => e.rdkafka_error_code(),
    };
    if matches!(
        code,
        Some(C::SSL | C::Authentication | C::SaslAuthenticationFailed)
    ) || is_refusal(reason)
    {
        *REFUSED.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_string());
    }
    let gone = BROKERS_GONE.load(std::sync::atomic::Ordering::Acquire);
    match code {
        Some(C::PartitionEOF) => tracing::debug!("librdkafka: {error}: {reason}"),
        Some(C::AllBrokersDown | C::BrokerTransportFailure | C::Resolve) if gone => {
            tracing::debug!("librdkafka: {error}: {reason}")
        }
        Some(
            C::AllBrokersDown
            | C::BrokerTransportFailure
            | C::Resolve
            | C::BrokerNotAvailable
            | C::NetworkException
            | C::RequestTimedOut
            | C::OperationTimedOut,
        ) => tracing::warn!("librdkafka: {error}: {reason}"),
        _ => tracing::error!("librdkafka: {error}: {reason}"),
    }
}

/// `e` without a secret value in it.
pub fn redact(e: KafkaError) -> KafkaError {
    match e {
        KafkaError::ClientConfig(code, desc, key, value)
            if crate::settings::is_secret_key(&key) =>
        {
            let desc = match value.is_empty() {
                true => desc,
                false => desc.replace(&value, crate::settings::secrets::REDACTED),
            };
            KafkaError::ClientConfig(code, desc, key, crate::settings::secrets::REDACTED.into())
        }
        other => other,
    }
}

/// Properties whose value names a file librdkafka reads when a client is made.
const FILE_PROPERTIES: &[&str] = &[
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.keystore.location",
    "ssl.crl.location",
    "sasl.kerberos.keytab",
    "https.ca.location",
];

/// Checks `kafka.properties` the way the clients will take them, without connecting: each
/// property's name and value through librdkafka's own configuration (every bad one reported),
/// the files they name (read, and named in the message), then — when those pass — a producer
/// and a consumer made with no broker to reach, which loads TLS material and SASL settings as
/// `run` would. Every problem under `kafka.properties.<name>`.
pub fn check_properties(cfg: &KafkaConfig) -> Vec<crate::settings::ConfigError> {
    use crate::settings::ConfigError;
    let mut e = Vec::new();
    let path = |k: &str| format!("kafka.properties.{k}");
    for (k, v) in &cfg.properties {
        let mut one = ClientConfig::new();
        one.set(k, v);
        if let Err(KafkaError::ClientConfig(_, desc, _, _)) = one.create_native_config() {
            let desc = scrub_secrets(desc.trim(), cfg);
            let message = if desc.starts_with("No such configuration property") {
                "is not a librdkafka property (librdkafka's CONFIGURATION.md lists them)"
                    .to_string()
            } else {
                format!("librdkafka refuses the value: {desc}")
            };
            e.push(ConfigError::new(path(k), message));
        }
        if FILE_PROPERTIES.contains(&k.as_str()) && !(k == "ssl.ca.location" && v == "probe") {
            let p = std::path::Path::new(v);
            let readable = if p.is_dir() {
                std::fs::read_dir(p).map(|_| ())
            } else {
                std::fs::File::open(p).map(|_| ())
            };
            if let Err(x) = readable {
                e.push(ConfigError::new(path(k), format!("cannot read {v}: {x}")));
            }
        }
    }
    if !e.is_empty() {
        return e;
    }
    // The whole client, as `run` makes it, but with nowhere to connect.
    let made = [
        ("a producer", producer_config(cfg)),
        ("a consumer", consumer_config(cfg)),
    ];
    for (what, mut c) in made {
        c.remove("bootstrap.servers");
        c.set("log_level", "0");
        let r: Result<rdkafka::producer::BaseProducer, KafkaError> = if what == "a producer" {
            c.create()
        } else {
            match c.create::<rdkafka::consumer::BaseConsumer>() {
                Ok(_) => continue,
                Err(x) => Err(x),
            }
        };
        if let Err(x) = r {
            let msg = match &x {
                KafkaError::ClientCreation(m) => m.clone(),
                KafkaError::ClientConfig(_, desc, _, _) => desc.clone(),
                other => other.to_string(),
            };
            let msg = scrub_secrets(&msg, cfg);
            // "ssl.ca.location failed: …": the property (with the file it names, if one).
            let prop = cfg.properties.keys().find(|p| {
                msg.starts_with(&format!("{p} failed"))
                    || msg.contains(&format!("`{p}`"))
                    || msg.contains(&format!("\"{p}\""))
            });
            match prop {
                Some(p) if FILE_PROPERTIES.contains(&p.as_str()) => {
                    let file = cfg.properties.get(p).map(String::as_str).unwrap_or("");
                    e.push(ConfigError::new(
                        path(p),
                        format!("librdkafka cannot use {file}: {}", msg.trim()),
                    ));
                }
                Some(p) => e.push(ConfigError::new(
                    path(p),
                    format!("librdkafka cannot use it: {}", msg.trim()),
                )),
                None => e.push(ConfigError::new(
                    "kafka.properties",
                    format!(
                        "librdkafka cannot make {what} from these properties: {}",
                        msg.trim()
                    ),
                )),
            }
            break;
        }
    }
    e
}

/// `msg` with the value of every secret property replaced.
fn scrub_secrets(msg: &str, cfg: &KafkaConfig) -> String {
    let mut out = msg.to_string();
    for (k, v) in &cfg.properties {
        if crate::settings::is_secret_key(k) && v.len() >= 3 {
            out = out.replace(v.as_str(), crate::settings::secrets::REDACTED);
        }
    }
    out
}
