//! Typed configuration: one YAML file, every field documented, unknown fields rejected.
//!
//! [`Config::parse`] is pure (no I/O): it reads the YAML, deserializes each section and each policy
//! separately so that problems in several places are all reported, then runs [`Config::validate`]
//! on what parsed. Every problem carries its YAML path. `tracesift check -c FILE` prints the
//! effective config (defaults filled in) or the full list of problems.
//!
//! Each stage owns its section and its checks (`kafka::config`, `store::config`,
//! `sink::config`, `archive::config`, `telemetry`); this module only composes them and checks
//! what spans sections. The `policies:` block is the OpenTelemetry Collector `tail_sampling`
//! syntax; it is parsed by the sample stage ([`crate::sample::PolicySpec`]), which owns the
//! policy types.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::sample::PolicySpec;

pub use crate::archive::config::{ArchiveConfig, CompactionConfig, HotTierConfig, TierConfig};
pub use crate::kafka::config::{KafkaConfig, RekeyConfig};
pub use crate::settings::{validate_topic_name, ByteSize, ConfigError, ConfigErrors};
pub use crate::sink::config::{KafkaSinkConfig, ParquetSinkConfig, SinksConfig};
pub use crate::store::config::{DecisionCacheConfig, OnOverflow, StoreConfig};
pub use crate::telemetry::TelemetryConfig;

/// The whole configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Kafka.
    pub kafka: KafkaConfig,
    /// Trace store.
    pub store: StoreConfig,
    /// Sampling policies (Collector `tail_sampling` syntax, OR across policies, drop wins).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicySpec>,
    /// Ordered first-match tiers, instead of `policies`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<crate::sample::FirstMatchSpec>,
    /// Sinks.
    pub sinks: SinksConfig,
    /// Archive.
    pub archive: ArchiveConfig,
    /// Telemetry.
    pub telemetry: TelemetryConfig,
    /// Graceful shutdown deadline after SIGTERM / SIGINT.
    #[serde(with = "crate::settings::duration")]
    pub shutdown_timeout: Duration,
    /// How long `run` waits at start for a Kafka cluster and topics that cannot be reached
    /// yet (retrying with backoff, `/readyz` naming what it waits for) before it gives up
    /// with exit 1; 0s = forever. Configuration errors stop it at once, with exit 2.
    #[serde(with = "crate::settings::duration")]
    pub startup_timeout: Duration,
}

const SECTIONS: &[&str] = &[
    "kafka",
    "store",
    "policies",
    "tiers",
    "sinks",
    "archive",
    "telemetry",
    "shutdown_timeout",
    "startup_timeout",
];

fn section<T: DeserializeOwned + Default>(
    name: &str,
    v: Option<&serde_norway::Value>,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    match v {
        None | Some(serde_norway::Value::Null) => Some(T::default()),
        Some(v) => crate::settings::lenient::read(name, v, errors),
    }
}

impl crate::sample::PolicyBlock for Config {
    fn policies(&self) -> &[PolicySpec] {
        &self.policies
    }

    fn first_match(&self) -> &[crate::sample::FirstMatchSpec] {
        &self.tiers
    }
}

impl Config {
    /// Reads a config file and parses it (the only I/O here).
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError::new(
                "",
                format!("cannot read {}: {e}", path.display()),
            )])
        })?;
        Config::parse(&text)
    }

    /// Parses and validates YAML text; reports every problem found.
    ///
    /// `${env:NAME}` and `${file:/path}` references are resolved from the process environment
    /// and the file system first (see [`crate::settings::secrets`]).
    pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse_with(text, &crate::settings::secrets::System)
    }

    /// [`Config::parse`] with references resolved through `lookup`.
    pub fn parse_with(
        text: &str,
        lookup: &dyn crate::settings::secrets::Lookup,
    ) -> Result<Config, ConfigErrors> {
        let mut value: serde_norway::Value = serde_norway::from_str(text).map_err(|e| {
            ConfigErrors(vec![ConfigError::new("", format!("not valid YAML: {e}"))])
        })?;
        let mut errors = Vec::new();
        let substituted = crate::settings::secrets::expand(&mut value, lookup, &mut errors);
        Config::from_value(&value, errors).map_err(|ConfigErrors(errors)| {
            ConfigErrors(
                errors
                    .into_iter()
                    .map(|e| ConfigError::new(e.path, substituted.scrub(&e.message)))
                    .collect(),
            )
        })
    }

    fn from_value(
        value: &serde_norway::Value,
        mut errors: Vec<ConfigError>,
    ) -> Result<Config, ConfigErrors> {
        let empty = serde_norway::Mapping::new();
        let map = match value {
            serde_norway::Value::Mapping(m) => m,
            serde_norway::Value::Null => &empty,
            _ => {
                return Err(ConfigErrors(vec![ConfigError::new(
                    "",
                    "the configuration must be a YAML mapping",
                )]))
            }
        };
        for key in map.keys() {
            let k = key.as_str().unwrap_or("");
            if !SECTIONS.contains(&k) {
                let hint = match crate::settings::lenient::suggest(k, SECTIONS.iter().copied()) {
                    Some(m) => format!("did you mean `{m}`?"),
                    None => format!("the sections are {}", SECTIONS.join(", ")),
                };
                errors.push(ConfigError::new(k, format!("unknown section; {hint}")));
            }
        }
        // Policies and tiers are two ways to say the same thing: one of them, never both,
        // whether or not each reads.
        let present = |k: &str| {
            map.get(k)
                .is_some_and(|v| v.as_sequence().is_some_and(|s| !s.is_empty()))
        };
        if present("policies") && present("tiers") {
            errors.push(ConfigError::new(
                "tiers",
                "give either `policies:` (OR of Collector policies) or `tiers:` (first match), not both",
            ));
        }
        let get = |k: &str| map.get(k);
        let kafka = section::<KafkaConfig>("kafka", get("kafka"), &mut errors);
        let store = section::<StoreConfig>("store", get("store"), &mut errors);
        let sinks = section::<SinksConfig>("sinks", get("sinks"), &mut errors);
        let archive = section::<ArchiveConfig>("archive", get("archive"), &mut errors);
        let telemetry = section::<TelemetryConfig>("telemetry", get("telemetry"), &mut errors);
        let shutdown_timeout = match get("shutdown_timeout") {
            None | Some(serde_norway::Value::Null) => Some(Duration::from_secs(30)),
            Some(v) => {
                let read: Option<crate::settings::duration::Dur> =
                    crate::settings::lenient::read("shutdown_timeout", v, &mut errors);
                read.map(|d| d.0)
            }
        };
        let startup_timeout = match get("startup_timeout") {
            None | Some(serde_norway::Value::Null) => Duration::from_secs(300),
            Some(v) => {
                let read: Option<crate::settings::duration::Dur> =
                    crate::settings::lenient::read("startup_timeout", v, &mut errors);
                read.map_or(Duration::from_secs(300), |d| d.0)
            }
        };
        let policies = match get("policies") {
            None | Some(serde_norway::Value::Null) => Some(Vec::new()),
            Some(serde_norway::Value::Sequence(items)) => {
                let before = errors.len();
                let mut parsed: Vec<PolicySpec> = Vec::new();
                let mut compiled_alone = Vec::new();
                for (i, v) in items.iter().enumerate() {
                    let n = errors.len();
                    if let Some(p) =
                        PolicySpec::from_yaml(&format!("policies[{i}]"), v, &mut errors)
                    {
                        if errors.len() == n {
                            compiled_alone.push((i, p.clone()));
                        }
                        parsed.push(p);
                    }
                }
                if errors.len() == before {
                    Some(parsed)
                } else {
                    // Some policies did not parse: still compile the others, each on its own
                    // under its own index, so every problem is reported in one go.
                    for (i, p) in compiled_alone {
                        errors.extend(crate::sample::Sampler::check_policy(
                            &p,
                            &format!("policies[{i}]"),
                        ));
                    }
                    None
                }
            }
            Some(_) => {
                errors.push(ConfigError::new("policies", "expected a list of policies"));
                None
            }
        };
        let tiers = match get("tiers") {
            None | Some(serde_norway::Value::Null) => Some(Vec::new()),
            Some(serde_norway::Value::Sequence(items)) => {
                let before = errors.len();
                let parsed: Vec<(usize, crate::sample::FirstMatchSpec)> = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| {
                        crate::sample::FirstMatchSpec::from_yaml(
                            &format!("tiers[{i}]"),
                            v,
                            &mut errors,
                        )
                        .map(|t| (i, t))
                    })
                    .collect();
                if errors.len() == before {
                    Some(parsed.into_iter().map(|(_, t)| t).collect())
                } else {
                    // Compile the tiers that parsed, each under its own index.
                    for (i, t) in parsed {
                        errors.extend(crate::sample::Sampler::check_first_match(
                            &t,
                            &format!("tiers[{i}]"),
                        ));
                    }
                    None
                }
            }
            Some(_) => {
                errors.push(ConfigError::new("tiers", "expected a list of tiers"));
                None
            }
        };
        let tiers = tiers.unwrap_or_default();
        match (
            kafka,
            store,
            policies,
            sinks,
            archive,
            telemetry,
            shutdown_timeout,
        ) {
            (
                Some(kafka),
                Some(store),
                Some(policies),
                Some(sinks),
                Some(archive),
                Some(telemetry),
                Some(shutdown_timeout),
            ) if errors.is_empty() => {
                let cfg = Config {
                    kafka,
                    store,
                    policies,
                    tiers,
                    sinks,
                    archive,
                    telemetry,
                    shutdown_timeout,
                    startup_timeout,
                };
                cfg.validate()?;
                Ok(cfg)
            }
            (kafka, store, policies, sinks, archive, telemetry, _) => {
                // Still check the sections that did parse, so the user sees everything at once.
                let partial = Config {
                    kafka: kafka.unwrap_or_default(),
                    store: store.unwrap_or_default(),
                    policies: policies.unwrap_or_default(),
                    tiers,
                    sinks: sinks.unwrap_or_default(),
                    archive: archive.unwrap_or_default(),
                    telemetry: telemetry.unwrap_or_default(),
                    shutdown_timeout: Duration::from_secs(30),
                    startup_timeout,
                };
                // A check is not repeated on a value already reported (read or reference
                // problems); the checks' own problems are all kept.
                let read_errors = errors.clone();
                if let Err(ConfigErrors(more)) = partial.validate() {
                    for e in more {
                        let covered = read_errors.iter().any(|x| {
                            !x.path.is_empty()
                                && (e.path.starts_with(&x.path)
                                    || (e.path == "policies"
                                        && (x.path.starts_with("policies")
                                            || x.path.starts_with("tiers"))))
                        });
                        if !covered {
                            errors.push(e);
                        }
                    }
                }
                Err(ConfigErrors(errors))
            }
        }
    }

    /// What only the machine can tell: `kafka.properties` through librdkafka (names, values,
    /// the files they name, a client made without connecting). `check` and `run` both call it
    /// before anything starts, so a configuration `run` would refuse is refused by `check`
    /// first, with exit 2.
    pub fn check_local(&self) -> Result<(), ConfigErrors> {
        let e = crate::kafka::check_properties(&self.kafka);
        if e.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(e))
        }
    }

    /// Checks cross-field rules without I/O. Reports every problem.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut e = Vec::new();
        self.kafka.check(self.sinks.kafka.enabled, &mut e);
        self.store.check(&mut e);
        match (self.policies.is_empty(), self.tiers.is_empty()) {
            (true, true) => e.push(ConfigError::new(
                "policies",
                "at least one policy (or a `tiers:` list) is needed, e.g. {name: all, type: always_sample}",
            )),
            (false, false) => e.push(ConfigError::new(
                "tiers",
                "give either `policies:` (OR of Collector policies) or `tiers:` (first match), not both",
            )),
            _ => {}
        }
        let mut seen = std::collections::HashSet::new();
        let names = self
            .policies
            .iter()
            .map(|p| ("policies", p.name.as_str()))
            .chain(self.tiers.iter().map(|t| ("tiers", t.name.as_str())));
        for (i, (section, name)) in names.enumerate() {
            if !seen.insert(name) {
                let i = if section == "tiers" {
                    i - self.policies.len()
                } else {
                    i
                };
                e.push(ConfigError::new(
                    format!("{section}[{i}].name"),
                    format!("name `{name}` is used twice"),
                ));
            }
        }
        if self.tiers.is_empty() || self.policies.is_empty() {
            if let Err(more) = crate::sample::Sampler::from_config(self) {
                e.extend(more);
            }
        }
        self.archive.check(self.sinks.parquet.enabled, &mut e);
        self.sinks.check(&mut e);
        if self.sinks.parquet.enabled
            && self.sinks.max_pending_bytes.0 < 2 * self.archive.hot.max_segment_bytes.0
        {
            e.push(ConfigError::new(
                "sinks.max_pending_bytes",
                format!(
                    "must be at least twice archive.hot.max_segment_bytes ({} B): one segment in flight would otherwise hold most of the budget and stop reading during every segment write",
                    self.archive.hot.max_segment_bytes.0
                ),
            ));
        }
        self.telemetry.check(&mut e);
        if self.shutdown_timeout.is_zero() {
            e.push(ConfigError::new(
                "shutdown_timeout",
                "must be greater than 0",
            ));
        }
        if e.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(e))
        }
    }

    /// The resident-memory bound of a member owning `partitions` partitions: the formula of
    /// README's "Bounded memory" (exported as `tracesift_memory_bound_bytes`, used to size the
    /// Kubernetes limits). A fixed part (runtime, librdkafka, buffers; the producer queue; the
    /// compressed copy of each OTLP request in flight) plus, per partition, twice the store budget,
    /// the input queue, librdkafka's prefetch and one record in flight, the decision caches and
    /// the pending-write budget (once more per best-effort sink).
    pub fn memory_bound(&self, partitions: usize) -> u64 {
        let (fixed, per_partition) = self.memory_formula();
        fixed + per_partition * partitions as u64
    }

    /// The terms of [`Config::memory_bound`]: (fixed bytes, bytes per partition owned).
    pub fn memory_formula(&self) -> (u64, u64) {
        self.memory_terms()
            .iter()
            .fold((0, 0), |(f, p), t| match t.per_partition {
                true => (f, p + t.bytes),
                false => (f + t.bytes, p),
            })
    }

    /// Each term of [`Config::memory_bound`] with what it is (`check` prints them).
    pub fn memory_terms(&self) -> Vec<MemoryTerm> {
        const MIB: u64 = 1 << 20;
        const CACHE_ENTRY: u64 = 150;
        let s = &self.sinks;
        let otlp_in_flight: u64 = s
            .otlp()
            .map(|(c, _)| c.sending_queue.num_consumers as u64 * c.batch.max_bytes.0)
            .sum();
        let best_effort = [s.kafka.delivery, s.parquet.delivery]
            .into_iter()
            .chain(s.otlp().map(|(c, _)| c.delivery))
            .filter(|d| *d == crate::sink::config::Delivery::BestEffort)
            .count() as u64;
        let dc = &self.store.decision_cache;
        // The sampled topic's unsent batches of one step (`records: batched`).
        let kafka_batches = match s.kafka.enabled
            && s.kafka.records == crate::sink::config::KafkaRecords::Batched
        {
            true => s.kafka.max_record_bytes.0,
            false => 0,
        };
        // librdkafka's prefetch queue as the consumer is configured (its default, or what
        // `kafka.properties` sets).
        let prefetch = self
            .kafka
            .properties
            .get("queued.max.messages.kbytes")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(crate::kafka::PREFETCH_KBYTES * 1024, |kb| {
                kb.saturating_mul(1024)
            });
        // The rekey stage's writes in flight, for the whole process.
        let rekey = match self.kafka.rekey.input_topics.is_empty() {
            true => 0,
            false => self.kafka.rekey.max_pending_bytes.0,
        };
        let fixed = |what: &'static str, bytes: u64| MemoryTerm {
            what,
            bytes,
            per_partition: false,
        };
        let per = |what: &'static str, bytes: u64| MemoryTerm {
            what,
            bytes,
            per_partition: true,
        };
        vec![
            fixed("runtime, librdkafka, buffers", 160 * MIB),
            fixed("producer queue", 64 * MIB),
            fixed(
                "OTLP requests in flight (compressed copies)",
                otlp_in_flight,
            ),
            fixed("rekey writes in flight", rekey),
            fixed(
                "span-metrics table",
                self.telemetry.span_metrics.bound_bytes(),
            ),
            fixed("service graph", self.telemetry.service_graph.bound_bytes()),
            per(
                "trace store (2 × store.max_bytes)",
                2 * self.store.max_bytes.0,
            ),
            per("sampled-topic batches of one step", kafka_batches),
            per(
                "input queue (kafka.partition_queue_bytes)",
                self.kafka.partition_queue_bytes.0,
            ),
            per("librdkafka prefetch (queued.max.messages.kbytes)", prefetch),
            per(
                "one record in flight (kafka.max_record_bytes)",
                self.kafka.max_record_bytes.0,
            ),
            per(
                "resources already checked",
                crate::otlp::ResourceCache::BOUND_BYTES,
            ),
            per(
                "decision caches",
                CACHE_ENTRY * (dc.sampled_cache_size + dc.non_sampled_cache_size) as u64,
            ),
            per(
                "pending writes (sinks.max_pending_bytes, again per best-effort sink)",
                s.max_pending_bytes.0 * (1 + best_effort),
            ),
        ]
    }

    /// Names of the top-level policies (or tiers), in order: they label decisions.
    pub fn policy_names(&self) -> Vec<String> {
        if self.tiers.is_empty() {
            self.policies.iter().map(|p| p.name.clone()).collect()
        } else {
            self.tiers.iter().map(|t| t.name.clone()).collect()
        }
    }

    /// The effective configuration as YAML (defaults filled in).
    pub fn to_yaml(&self) -> String {
        serde_norway::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// One term of the resident-memory bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryTerm {
    /// What it holds.
    pub what: &'static str,
    /// Bytes at most.
    pub bytes: u64,
    /// Counted once per partition owned (else once per process).
    pub per_partition: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_bound_follows_the_readme_formula() {
        const MIB: u64 = 1 << 20;
        let c = Config::parse("policies: [{name: all, type: always_sample}]\n").unwrap();
        let fixed = 160 * MIB + 64 * MIB;
        let per = 2 * 1024 * MIB
            + (900 << 10)
            + 32 * MIB
            + 16 * MIB
            + 16 * MIB
            + 150 * 250_000
            + crate::otlp::ResourceCache::BOUND_BYTES
            + 128 * MIB;
        assert_eq!(c.memory_bound(0), fixed);
        assert_eq!(c.memory_bound(3), fixed + 3 * per);
        let c = Config::parse(
            "policies: [{name: all, type: always_sample}]\nsinks:\n  kafka: {delivery: best_effort}\n  max_pending_bytes: 256MiB\n  otlp_http: [{name: t, endpoint: 'http://127.0.0.1:1', sending_queue: {num_consumers: 2}, batch: {max_bytes: 1MiB}}]\n",
        )
        .unwrap();
        assert_eq!(
            c.memory_bound(1) - c.memory_bound(0),
            per - 128 * MIB + 2 * 256 * MIB,
            "a best-effort sink holds its own pending budget"
        );
        assert_eq!(
            c.memory_bound(0),
            fixed + 2 * MIB,
            "OTLP requests in flight"
        );
        let c = Config::parse(
            "policies: [{name: all, type: always_sample}]\nkafka: {properties: {queued.max.messages.kbytes: '4096'}}\n",
        )
        .unwrap();
        assert_eq!(
            c.memory_bound(1) - c.memory_bound(0),
            per - 16 * MIB + 4 * MIB,
            "librdkafka's prefetch as kafka.properties sets it"
        );
        let terms = c.memory_terms();
        assert_eq!(
            terms.iter().map(|t| t.bytes).sum::<u64>(),
            c.memory_bound(1),
            "check prints every term"
        );
        let c = Config::parse(
            "policies: [{name: all, type: always_sample}]\ntelemetry: {span_metrics: {enabled: true, dimensions: [{name: http.route}]}}\n",
        )
        .unwrap();
        assert_eq!(
            c.memory_bound(0),
            fixed + 10_000 * ((4 + 1) * 272 + 17 * (8 + 48) + 200),
            "the span-metrics table (a bucket: its count and an exemplar)"
        );
        let c = Config::parse(
            "policies: [{name: all, type: always_sample}]\ntelemetry: {service_graph: {enabled: true, max_edges: 100}}\n",
        )
        .unwrap();
        assert_eq!(
            c.memory_bound(0),
            fixed + 100 * (3 * 272 + 2 * 17 * (8 + 48) + 200 + 356),
            "the service graph (an edge: three labels, two histograms; an unpaired counter)"
        );
    }

    const SEED: &str = r#"
kafka:
  brokers: 127.0.0.1:9092
  group_id: tracesift
  input_topics: [otlp_spans]
  encoding: otlp_proto
store:
  decision_wait: 10s
  decision_wait_after_root: 2s
  max_trace_age: 5m
  max_traces: 100000
  max_bytes: 1GiB
  on_overflow: decide_oldest
policies:
  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
  - {name: slow, type: latency, latency: {threshold_ms: 500}}
  - name: important
    type: and
    and:
      and_sub_policy:
        - {name: route, type: string_attribute, string_attribute: {key: http.route, values: [/api/payment, /api/checkout]}}
        - {name: half, type: probabilistic, probabilistic: {sampling_percentage: 50}}
  - {name: default, type: probabilistic, probabilistic: {sampling_percentage: 1}}
sinks:
  kafka: {enabled: true}
archive:
  hot: {url: "file:///tmp/tracesift-hot", flush_interval: 10s, cost_per_gb_month: 0.30}
telemetry:
  listen: 127.0.0.1:9464
"#;

    #[test]
    fn the_design_example_parses() {
        let c = Config::parse(SEED).unwrap();
        assert_eq!(c.store.max_bytes, ByteSize(1 << 30));
        assert_eq!(c.store.max_trace_age, Duration::from_secs(300));
        assert_eq!(c.policies.len(), 4);
        // The effective config round-trips.
        let again = Config::parse(&c.to_yaml()).unwrap();
        assert_eq!(again.policies.len(), 4);
        assert_eq!(again.to_yaml(), c.to_yaml());
    }

    #[test]
    fn the_pending_write_budget_must_hold_two_segments() {
        let e = Config::parse(
            "sinks: {max_pending_bytes: 64MiB}\narchive: {hot: {max_segment_bytes: 64MiB}}\npolicies: [{name: all, type: always_sample}]\n",
        )
        .unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].path, "sinks.max_pending_bytes");
        Config::parse(
            "sinks: {max_pending_bytes: 64MiB, parquet: {enabled: false}}\npolicies: [{name: all, type: always_sample}]\n",
        )
        .unwrap();
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let bad = r#"
kafka:
  brokers: ""
  input_topics: ["bad topic"]
  bogus: 1
store:
  decision_wait: 0s
  max_traces: 0
  on_overflow: explode
policies:
  - {name: a, type: latency, latency: {threshold_ms: 500, extra: 1}}
  - {name: b, type: no_such_policy}
  - {name: c, type: ottl_condition, ottl_condition: {span: ['nme == "x"']}}
telemetry:
  listen: nowhere
extra_section: {}
"#;
        let errs = Config::parse(bad).unwrap_err().0;
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "extra_section",
            "kafka",
            "store.on_overflow",
            "policies[0].latency",
            "policies[1].type",
            "policies[2].ottl_condition.span[0], column 1",
            "telemetry.listen",
        ] {
            assert!(
                paths.iter().any(|p| p.starts_with(want)),
                "missing {want} in {errs:#?}"
            );
        }
        let text = ConfigErrors(errs.clone()).to_string();
        assert!(text.contains("did you mean \"name\"?"), "{text}");
        assert!(text.contains("always_sample"), "valid names listed: {text}");
    }

    #[test]
    fn semantic_errors_are_all_listed() {
        let bad = r#"
kafka: {brokers: "", input_topics: [], commit_interval: 0s}
store: {decision_wait: 0s, max_traces: 0, max_bytes: 10, tick: 0s}
policies: []
"#;
        let errs = Config::parse(bad).unwrap_err().0;
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "kafka.brokers",
            "kafka.input_topics",
            "kafka.commit_interval",
            "store.decision_wait",
            "store.max_traces",
            "store.max_bytes",
            "store.tick",
            "policies",
        ] {
            assert!(paths.contains(&want), "missing {want} in {paths:?}");
        }
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(ByteSize::parse("1GiB"), Ok(ByteSize(1 << 30)));
        assert_eq!(ByteSize::parse("10MB"), Ok(ByteSize(10_000_000)));
        assert_eq!(ByteSize::parse("512"), Ok(ByteSize(512)));
        assert_eq!(ByteSize::parse("1.5KiB"), Ok(ByteSize(1536)));
        assert!(ByteSize::parse("lots").is_err());
        assert!(ByteSize::parse("5 parsecs").is_err());
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
    }

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("otlp_spans").is_ok());
        assert!(validate_topic_name("a/b").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("").is_err());
    }
}
