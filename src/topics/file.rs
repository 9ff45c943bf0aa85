//! The topics file (`topology/topics.yaml`, path in `kafka.topics_file`): every topic of one
//! pipeline with its role, partitions, replication and topic configs. Parsing is pure; every
//! problem is reported at once, and [`TopicsFile::check_against`] ties the file to the pipeline's
//! configuration (each role names the topic the configuration uses).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::settings::{validate_topic_name, ConfigError, ConfigErrors, Properties};

/// What a topic is for; the safety rules depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Spans from the Collectors (`kafka.input_topics`).
    Input,
    /// The rekey stage's trace-keyed topic (`kafka.rekey.topic`).
    Rekey,
    /// Spans of a rekeyed input (`kafka.rekey.input_topics`).
    RekeyInput,
    /// Kept traces (`kafka.sampled_topic`).
    Sampled,
    /// The decision log (`kafka.decisions_topic`).
    Decisions,
    /// Dead letters (`kafka.dead_letter_topic`).
    DeadLetter,
}

impl Role {
    /// Spans are written here, many per trace id: never compacted.
    pub fn carries_spans(self) -> bool {
        !matches!(self, Role::Decisions)
    }

    /// The pipeline replays from here after a restart: retention must cover the replay.
    pub fn is_replayed(self) -> bool {
        matches!(self, Role::Input | Role::Rekey | Role::RekeyInput)
    }

    /// Adding partitions moves trace ids between owners.
    pub fn is_keyed_by_trace(self) -> bool {
        matches!(self, Role::Input | Role::Rekey | Role::Decisions)
    }
}

/// `defaults:` of the topics file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Replication factor of every topic that does not set its own.
    pub replication_factor: i32,
    /// Partition count of every topic that does not set its own.
    pub partitions: i32,
}

/// One topic of the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicEntry {
    /// Topic name.
    pub name: String,
    /// What it is for.
    pub role: Role,
    /// Partitions (default: `defaults.partitions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// Replication factor (default: `defaults.replication_factor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<i32>,
    /// Topic configs; keys not listed are left as the cluster has them.
    #[serde(default)]
    pub configs: Properties,
}

/// The whole topics file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsFile {
    /// Values every topic takes unless it sets its own.
    pub defaults: Defaults,
    /// The topics.
    pub topics: Vec<TopicEntry>,
}

/// A topic as the file wants it, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Partitions.
    pub partitions: i32,
    /// Replication factor.
    pub replication: i32,
    /// Topic configs.
    pub configs: BTreeMap<String, String>,
}

impl TopicsFile {
    /// Parses the file's text; every problem at once.
    pub fn parse(text: &str) -> Result<TopicsFile, ConfigErrors> {
        let value: serde_norway::Value = serde_norway::from_str(text).map_err(|e| {
            ConfigErrors(vec![ConfigError::new("", format!("not valid YAML: {e}"))])
        })?;
        let mut read_errors = Vec::new();
        let f: Option<TopicsFile> = crate::settings::lenient::read("", &value, &mut read_errors);
        let f = match f {
            Some(f) if read_errors.is_empty() => f,
            _ => return Err(ConfigErrors(read_errors)),
        };
        let mut errors = Vec::new();
        if f.defaults.replication_factor < 1 {
            errors.push(ConfigError::new(
                "defaults.replication_factor",
                "must be at least 1",
            ));
        }
        if f.defaults.partitions < 1 {
            errors.push(ConfigError::new(
                "defaults.partitions",
                "must be at least 1",
            ));
        }
        for (i, t) in f.topics.iter().enumerate() {
            if let Err(m) = validate_topic_name(&t.name) {
                errors.push(ConfigError::new(format!("topics[{i}].name"), m));
            }
            if f.topics[..i].iter().any(|o| o.name == t.name) {
                errors.push(ConfigError::new(
                    format!("topics[{i}].name"),
                    format!("topic `{}` is listed twice", t.name),
                ));
            }
            if t.partitions.is_some_and(|p| p < 1) {
                errors.push(ConfigError::new(
                    format!("topics[{i}].partitions"),
                    "must be at least 1",
                ));
            }
            if t.replication_factor.is_some_and(|r| r < 1) {
                errors.push(ConfigError::new(
                    format!("topics[{i}].replication_factor"),
                    "must be at least 1",
                ));
            }
        }
        match errors.is_empty() {
            true => Ok(f),
            false => Err(ConfigErrors(errors)),
        }
    }

    /// Every topic with the defaults filled in.
    pub fn wanted(&self) -> Vec<Wanted> {
        self.topics
            .iter()
            .map(|t| Wanted {
                name: t.name.clone(),
                role: t.role,
                partitions: t.partitions.unwrap_or(self.defaults.partitions),
                replication: t
                    .replication_factor
                    .unwrap_or(self.defaults.replication_factor),
                configs: t
                    .configs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            })
            .collect()
    }

    /// Problems between the file and the pipeline's configuration: a topic the configuration
    /// uses that the file does not list (or lists under another role), and roles listed that
    /// the configuration does not use.
    pub fn check_against(&self, cfg: &Config) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let used = roles_of(cfg);
        for (name, role) in &used {
            match self.topics.iter().find(|t| &t.name == name) {
                None => errors.push(ConfigError::new(
                    "topics",
                    format!("`{name}` ({role:?}) is used by the configuration but not listed"),
                )),
                Some(t) if t.role != *role => errors.push(ConfigError::new(
                    "topics",
                    format!(
                        "`{name}` is listed as {:?} but the configuration uses it as {role:?}",
                        t.role
                    ),
                )),
                Some(_) => {}
            }
        }
        for (i, t) in self.topics.iter().enumerate() {
            if !used.iter().any(|(n, _)| *n == t.name) {
                errors.push(ConfigError::new(
                    format!("topics[{i}]"),
                    format!(
                        "`{}` ({:?}) is not used by the configuration (rename it to the configured topic, or remove it)",
                        t.name, t.role
                    ),
                ));
            }
        }
        errors
    }
}

/// The topics the pipeline configured by `cfg` uses, each with its role.
pub fn roles_of(cfg: &Config) -> Vec<(String, Role)> {
    let k = &cfg.kafka;
    let rekeying = !k.rekey.input_topics.is_empty();
    let mut out: Vec<(String, Role)> = k
        .input_topics
        .iter()
        .map(|t| {
            let role = match rekeying && *t == k.rekey.topic {
                true => Role::Rekey,
                false => Role::Input,
            };
            (t.clone(), role)
        })
        .collect();
    out.extend(
        k.rekey
            .input_topics
            .iter()
            .map(|t| (t.clone(), Role::RekeyInput)),
    );
    if cfg.sinks.kafka.enabled {
        out.push((k.sampled_topic.clone(), Role::Sampled));
    }
    if k.decision_log {
        out.push((k.decisions_topic.clone(), Role::Decisions));
    }
    out.push((k.dead_letter_topic.clone(), Role::DeadLetter));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_parses_and_matches_the_default_configuration() {
        let text = include_str!("../../topology/topics.yaml");
        let f = TopicsFile::parse(text).unwrap();
        let cfg = Config::parse("policies: [{name: all, type: always_sample}]").unwrap();
        let problems = f.check_against(&cfg);
        assert!(problems.is_empty(), "{problems:?}");
        let alone = crate::topics::plan(
            &f.wanted(),
            &BTreeMap::new(),
            crate::topics::Rules {
                max_trace_age: cfg.store.max_trace_age,
                replay_window: cfg.kafka.replay_window,
                decision_ttl: cfg
                    .store
                    .decision_cache
                    .sampled_ttl
                    .max(cfg.store.decision_cache.non_sampled_ttl),
                allow_repartition: false,
            },
        );
        assert!(alone.refused.is_empty(), "{alone}");
        let w = f.wanted();
        assert!(w.iter().all(|t| t.replication == 3 && t.partitions == 24));
    }

    #[test]
    fn every_problem_of_a_file_is_reported() {
        let e = TopicsFile::parse(
            "defaults: {replication_factor: 0, partitions: 0}\ntopics:\n  - {name: a, role: input}\n  - {name: a, role: sampled, partitions: 0}\n  - {name: 'b c', role: dead_letter}\n",
        )
        .unwrap_err();
        assert_eq!(e.0.len(), 5, "{e}");
    }
}
