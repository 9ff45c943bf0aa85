//! The topology plan, a pure function: what the file wants, what the cluster has, the safety
//! rules → the actions that reconcile them, and the refusals that stop an unsafe state.
//!
//! The same rules ([`unsafe_states`]) are checked on the state a plan would leave behind
//! (`tracesift topology plan|apply`) and on the cluster as it is (`tracesift run` at start).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::file::{Role, Wanted};

/// Kafka's default `retention.ms` (7 days), assumed when the cluster does not say.
const BROKER_DEFAULT_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;

/// A topic as the cluster has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actual {
    /// Partitions.
    pub partitions: i32,
    /// Replicas of partition 0.
    pub replication: i32,
    /// Topic configs as described by the broker (`None`: the broker did not describe them).
    pub configs: Option<BTreeMap<String, String>>,
}

/// What the safety rules need beyond the topics.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// `store.max_trace_age`.
    pub max_trace_age: Duration,
    /// `kafka.replay_window`.
    pub replay_window: Duration,
    /// The decision cache's longest TTL (`store.decision_cache.*_ttl`).
    pub decision_ttl: Duration,
    /// Partitions may be added to topics keyed by trace id (`--allow-repartition`).
    pub allow_repartition: bool,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create a topic.
    Create(Wanted),
    /// Set topic configs: (key, value now if known, value wanted).
    AlterConfigs {
        /// Topic.
        topic: String,
        /// Every config of the topic as the file wants it (Kafka's AlterConfigs takes the whole
        /// set).
        all: BTreeMap<String, String>,
        /// The ones that change.
        changes: Vec<(String, Option<String>, String)>,
    },
    /// Add partitions.
    AddPartitions {
        /// Topic.
        topic: String,
        /// Now.
        from: i32,
        /// Wanted.
        to: i32,
    },
}

/// A state the pipeline must not run on, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Topic.
    pub topic: String,
    /// Why.
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "topic `{}`: {}", self.topic, self.reason)
    }
}

/// The plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Steps, in order.
    pub actions: Vec<Action>,
    /// Topics already as wanted.
    pub unchanged: Vec<String>,
    /// Why the plan (or the state it leads to) is unsafe; a plan with refusals is not applied.
    pub refused: Vec<Refusal>,
    /// Things to know that do not stop it.
    pub warnings: Vec<String>,
}

impl Plan {
    /// Nothing to create, alter or add, and nothing refused.
    pub fn is_noop(&self) -> bool {
        self.actions.is_empty() && self.refused.is_empty()
    }
}

/// Compares `wanted` with `actual` (name → topic as the cluster has it) under `rules`.
pub fn plan(wanted: &[Wanted], actual: &BTreeMap<String, Actual>, rules: Rules) -> Plan {
    let mut p = Plan::default();
    let mut after: Vec<(Role, String, Actual)> = Vec::new();
    for w in wanted {
        let Some(a) = actual.get(&w.name) else {
            p.actions.push(Action::Create(w.clone()));
            after.push((
                w.role,
                w.name.clone(),
                Actual {
                    partitions: w.partitions,
                    replication: w.replication,
                    configs: Some(w.configs.clone()),
                },
            ));
            continue;
        };
        let mut changed = false;
        if w.partitions < a.partitions {
            p.refused.push(Refusal {
                topic: w.name.clone(),
                reason: format!(
                    "has {} partitions, the file wants {}: Kafka cannot remove partitions",
                    a.partitions, w.partitions
                ),
            });
        } else if w.partitions > a.partitions {
            if w.role.is_keyed_by_trace() && !rules.allow_repartition {
                p.refused.push(Refusal {
                    topic: w.name.clone(),
                    reason: format!(
                        "adding partitions ({} → {}) to a {:?} topic moves trace ids between owners and splits traces in flight; drain the pipeline and pass --allow-repartition",
                        a.partitions, w.partitions, w.role
                    ),
                });
            } else {
                if w.role.is_keyed_by_trace() {
                    p.warnings.push(format!(
                        "`{}`: {} → {} partitions moves trace ids between owners: traces in flight while it happens may be decided in two parts",
                        w.name, a.partitions, w.partitions
                    ));
                }
                p.actions.push(Action::AddPartitions {
                    topic: w.name.clone(),
                    from: a.partitions,
                    to: w.partitions,
                });
                changed = true;
            }
        }
        if w.replication != a.replication {
            p.warnings.push(format!(
                "`{}`: replication factor is {}, the file wants {} (reassign replicas with your cluster's tools; not changed here)",
                w.name, a.replication, w.replication
            ));
        }
        let mut now_configs = a.configs.clone();
        match &a.configs {
            None => p.warnings.push(format!(
                "`{}`: the broker did not describe its configs; they are not compared",
                w.name
            )),
            Some(have) => {
                let changes: Vec<(String, Option<String>, String)> = w
                    .configs
                    .iter()
                    .filter(|(k, v)| have.get(*k) != Some(*v))
                    .map(|(k, v)| (k.clone(), have.get(k).cloned(), v.clone()))
                    .collect();
                if !changes.is_empty() {
                    let mut merged = have.clone();
                    merged.extend(w.configs.clone());
                    now_configs = Some(merged);
                    p.actions.push(Action::AlterConfigs {
                        topic: w.name.clone(),
                        all: w.configs.clone(),
                        changes,
                    });
                    changed = true;
                }
            }
        }
        if !changed {
            p.unchanged.push(w.name.clone());
        }
        after.push((
            w.role,
            w.name.clone(),
            Actual {
                partitions: w.partitions.max(a.partitions),
                replication: a.replication,
                configs: now_configs,
            },
        ));
    }
    p.refused.extend(unsafe_states(&after, rules));
    p
}

/// Every unsafe state among `topics` (role, name, state):
/// - a replayed topic (input, rekey) whose retention is shorter than `max_trace_age` plus the
///   replay window: a restart after an outage would find its spans deleted;
/// - `compact` on a topic that carries spans: compaction keeps one record per key, and a trace
///   has many spans under one key;
/// - a decision log without `compact` (restore would read every decision ever made), with
///   fewer partitions than an input (it is co-partitioned: partition p's decisions are on p), or
///   whose retention is shorter than what a restore reads when the group is as far behind as
///   the replay window allows: decision TTL + restore slack + `max_trace_age` + replay window;
/// - `min.insync.replicas` above the replication factor: every write with acks=all fails.
pub fn unsafe_states(topics: &[(Role, String, Actual)], rules: Rules) -> Vec<Refusal> {
    let mut out = Vec::new();
    let input_partitions = topics
        .iter()
        .filter(|(r, _, _)| matches!(r, Role::Input | Role::Rekey))
        .map(|(_, _, a)| a.partitions)
        .max()
        .unwrap_or(0);
    let need = rules.max_trace_age + rules.replay_window;
    for (role, name, a) in topics {
        let refuse = |reason: String| Refusal {
            topic: name.clone(),
            reason,
        };
        let cfg = |k: &str| {
            a.configs
                .as_ref()
                .and_then(|c| c.get(k))
                .map(String::as_str)
        };
        let policy = cfg("cleanup.policy");
        let compacts = policy.is_some_and(|p| p.split(',').any(|x| x.trim() == "compact"));
        if role.carries_spans() && compacts {
            out.push(refuse(format!(
                "cleanup.policy={} on a {role:?} topic: compaction keeps one record per key and a trace has many spans under one key; use delete",
                policy.unwrap_or_default()
            )));
        }
        if role.is_replayed() {
            let retention = match cfg("retention.ms").map(str::parse::<i64>) {
                Some(Ok(ms)) => Some(ms),
                Some(Err(_)) => None,
                None if a.configs.is_some() => Some(BROKER_DEFAULT_RETENTION_MS),
                None => None,
            };
            if let Some(ms) = retention.filter(|ms| *ms >= 0 && (*ms as u128) < need.as_millis()) {
                out.push(refuse(format!(
                    "retention.ms={ms} ({}) is shorter than store.max_trace_age + kafka.replay_window ({}): after an outage the pipeline would find the spans it must replay deleted",
                    humantime::format_duration(Duration::from_millis(ms as u64)),
                    humantime::format_duration(need)
                )));
            }
        }
        if *role == Role::Decisions {
            if a.configs.is_some() && !compacts {
                out.push(refuse(format!(
                    "the decision log needs cleanup.policy=compact,delete (it has {}): without compaction a restore reads every decision ever made",
                    policy.unwrap_or("the broker default, delete")
                )));
            }
            if a.partitions < input_partitions {
                out.push(refuse(format!(
                    "the decision log has {} partitions but the input has {input_partitions}: it must be co-partitioned (at least as many)",
                    a.partitions
                )));
            }
            let floor = rules.decision_ttl
                + crate::kafka::config::RESTORE_SLACK
                + rules.max_trace_age
                + rules.replay_window;
            if let Some(Ok(ms)) = cfg("retention.ms").map(str::parse::<i64>) {
                if ms >= 0 && (ms as u128) < floor.as_millis() {
                    out.push(refuse(format!(
                        "retention.ms={ms} ({}) on the decision log is shorter than the restore window of a group as far behind as kafka.replay_window: decision TTL + 5 min + store.max_trace_age + kafka.replay_window = {}",
                        humantime::format_duration(Duration::from_millis(ms as u64)),
                        humantime::format_duration(floor)
                    )));
                }
            }
        }
        if let Some(Ok(min)) = cfg("min.insync.replicas").map(str::parse::<i32>) {
            if a.replication > 0 && min > a.replication {
                out.push(refuse(format!(
                    "min.insync.replicas={min} is above the replication factor {}: every write with acks=all would fail",
                    a.replication
                )));
            }
        }
    }
    out
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for a in &self.actions {
            match a {
                Action::Create(w) => {
                    writeln!(
                        f,
                        "+ create {} ({:?}): {} partitions, replication {}",
                        w.name, w.role, w.partitions, w.replication
                    )?;
                    for (k, v) in &w.configs {
                        writeln!(f, "    {k} = {v}")?;
                    }
                }
                Action::AlterConfigs { topic, changes, .. } => {
                    writeln!(f, "~ alter {topic}:")?;
                    for (k, from, to) in changes {
                        writeln!(
                            f,
                            "    {k}: {} → {to}",
                            from.as_deref().unwrap_or("(default)")
                        )?;
                    }
                }
                Action::AddPartitions { topic, from, to } => {
                    writeln!(f, "~ add partitions to {topic}: {from} → {to}")?;
                }
            }
        }
        for t in &self.unchanged {
            writeln!(f, "= {t}: as wanted")?;
        }
        for w in &self.warnings {
            writeln!(f, "! warning: {w}")?;
        }
        for r in &self.refused {
            writeln!(f, "✗ refused: {r}")?;
        }
        if self.is_noop() {
            writeln!(f, "nothing to do")?;
        } else if self.refused.is_empty() {
            writeln!(
                f,
                "{} change(s); `tracesift topology apply` makes them",
                self.actions.len()
            )?;
        } else {
            writeln!(
                f,
                "{} unsafe state(s): nothing will be applied",
                self.refused.len()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            max_trace_age: Duration::from_secs(300),
            replay_window: Duration::from_secs(3600),
            decision_ttl: Duration::from_secs(600),
            allow_repartition: false,
        }
    }

    fn w(name: &str, role: Role, partitions: i32, configs: &[(&str, &str)]) -> Wanted {
        Wanted {
            name: name.into(),
            role,
            partitions,
            replication: 1,
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn have(partitions: i32, configs: &[(&str, &str)]) -> Actual {
        Actual {
            partitions,
            replication: 1,
            configs: Some(
                configs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
        }
    }

    fn good() -> Vec<Wanted> {
        vec![
            w(
                "in",
                Role::Input,
                4,
                &[("cleanup.policy", "delete"), ("retention.ms", "172800000")],
            ),
            w(
                "dec",
                Role::Decisions,
                4,
                &[("cleanup.policy", "compact,delete")],
            ),
            w("out", Role::Sampled, 4, &[("cleanup.policy", "delete")]),
        ]
    }

    #[test]
    fn an_empty_cluster_gets_every_create_then_nothing_to_do() {
        let p = plan(&good(), &BTreeMap::new(), rules());
        assert_eq!(p.actions.len(), 3);
        assert!(p.refused.is_empty(), "{p}");
        let after: BTreeMap<String, Actual> = good()
            .into_iter()
            .map(|w| {
                (
                    w.name.clone(),
                    have(
                        w.partitions,
                        &w.configs
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.as_str()))
                            .collect::<Vec<_>>(),
                    ),
                )
            })
            .collect();
        let again = plan(&good(), &after, rules());
        assert!(again.is_noop(), "{again}");
        assert!(again.to_string().contains("nothing to do"));
    }

    #[test]
    fn a_changed_config_is_an_alter() {
        let mut cluster = BTreeMap::new();
        cluster.insert(
            "in".into(),
            have(
                4,
                &[("cleanup.policy", "delete"), ("retention.ms", "86400000")],
            ),
        );
        let p = plan(&good()[..1], &cluster, rules());
        assert_eq!(
            p.actions,
            vec![Action::AlterConfigs {
                topic: "in".into(),
                all: good()[0].configs.clone(),
                changes: vec![(
                    "retention.ms".into(),
                    Some("86400000".into()),
                    "172800000".into()
                )],
            }]
        );
        assert!(
            p.to_string().contains("retention.ms: 86400000 → 172800000"),
            "{p}"
        );
    }

    #[test]
    fn each_unsafe_state_is_refused_with_its_reason() {
        let cases: Vec<(Vec<Wanted>, &str)> = vec![
            (
                vec![w("in", Role::Input, 4, &[("retention.ms", "600000")])],
                "shorter than store.max_trace_age",
            ),
            (
                vec![w("in", Role::Input, 4, &[("cleanup.policy", "compact")])],
                "compaction keeps one record per key",
            ),
            (
                vec![w(
                    "out",
                    Role::Sampled,
                    4,
                    &[("cleanup.policy", "compact,delete")],
                )],
                "compaction keeps one record per key",
            ),
            (
                vec![w(
                    "dec",
                    Role::Decisions,
                    4,
                    &[("cleanup.policy", "delete")],
                )],
                "needs cleanup.policy=compact",
            ),
            (
                vec![
                    w("in", Role::Input, 8, &[]),
                    w("dec", Role::Decisions, 4, &[("cleanup.policy", "compact")]),
                ],
                "must be co-partitioned",
            ),
            (
                vec![w("in", Role::Input, 4, &[("min.insync.replicas", "2")])],
                "above the replication factor",
            ),
        ];
        for (wanted, reason) in cases {
            let p = plan(&wanted, &BTreeMap::new(), rules());
            assert_eq!(p.refused.len(), 1, "{reason}: {p}");
            assert!(p.refused[0].reason.contains(reason), "{reason}: {p}");
            assert!(p.to_string().contains("nothing will be applied"));
        }
    }

    #[test]
    fn partitions_added_to_an_input_need_the_explicit_flag() {
        let mut cluster = BTreeMap::new();
        cluster.insert(
            "in".into(),
            have(
                2,
                &[("cleanup.policy", "delete"), ("retention.ms", "172800000")],
            ),
        );
        let p = plan(&good()[..1], &cluster, rules());
        assert!(p.refused[0].reason.contains("--allow-repartition"), "{p}");
        let p = plan(
            &good()[..1],
            &cluster,
            Rules {
                allow_repartition: true,
                ..rules()
            },
        );
        assert!(p.refused.is_empty(), "{p}");
        assert_eq!(
            p.actions,
            vec![Action::AddPartitions {
                topic: "in".into(),
                from: 2,
                to: 4
            }]
        );
        assert!(
            p.warnings[0].contains("moves trace ids between owners"),
            "{p:?}"
        );
        // A sampled topic may grow freely; none may shrink.
        cluster.insert("out".into(), have(8, &[("cleanup.policy", "delete")]));
        let p = plan(&good()[2..], &cluster, rules());
        assert!(
            p.refused[0].reason.contains("cannot remove partitions"),
            "{p}"
        );
    }

    #[test]
    fn the_decision_log_keeps_at_least_what_a_restore_behind_by_the_replay_window_reads() {
        // 10 min TTL + 5 min slack + 5 min max trace age + 1 h replay window = 80 min.
        let log = |retention: &str| {
            vec![(
                Role::Decisions,
                "d".to_string(),
                have(
                    1,
                    &[
                        ("cleanup.policy", "compact,delete"),
                        ("retention.ms", retention),
                    ],
                ),
            )]
        };
        let short = unsafe_states(&log("4700000"), rules());
        assert_eq!(short.len(), 1, "{short:?}");
        assert!(short[0].reason.contains("1h 20m"), "{}", short[0].reason);
        assert!(unsafe_states(&log("4800000"), rules()).is_empty());
        assert!(
            unsafe_states(&log("-1"), rules()).is_empty(),
            "kept forever"
        );
    }

    #[test]
    fn an_input_without_retention_set_is_held_to_the_broker_default() {
        let rules = Rules {
            replay_window: Duration::from_secs(8 * 86_400),
            ..rules()
        };
        let topics = vec![(Role::Input, "in".to_string(), have(1, &[]))];
        assert_eq!(unsafe_states(&topics, rules).len(), 1);
        let undescribed = vec![(
            Role::Input,
            "in".to_string(),
            Actual {
                partitions: 1,
                replication: 1,
                configs: None,
            },
        )];
        assert!(
            unsafe_states(&undescribed, rules).is_empty(),
            "unknown configs are not refused"
        );
        let infinite = vec![(
            Role::Input,
            "in".to_string(),
            have(1, &[("retention.ms", "-1")]),
        )];
        assert!(unsafe_states(&infinite, rules).is_empty());
    }
}
