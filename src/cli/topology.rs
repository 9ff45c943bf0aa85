//! `tracesift topology plan | apply | check -c FILE`: the topics file against the cluster.
//!
//! `check` needs no cluster: the file parses, ties to the configuration (each topic the
//! configuration uses is listed under its role) and is safe on its own. `plan` describes the
//! cluster and prints what `apply` would change and what it refuses; `apply` makes the changes
//! (nothing at all when anything is refused). Exit codes: 0 fine, 1 unsafe / failed, 2 bad input.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;
use crate::topics::{self, Rules, TopicsFile};

/// Which of the three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Verb {
    /// Validate the file against the configuration, offline.
    Check,
    /// Compare with the cluster and print the plan.
    Plan,
    /// Make the plan's changes.
    Apply,
}

/// Runs `verb`; `topics_file` overrides `kafka.topics_file`.
pub async fn main(
    verb: Verb,
    cfg: &Config,
    topics_file: Option<&Path>,
    allow_repartition: bool,
) -> anyhow::Result<ExitCode> {
    let path = topics_file.unwrap_or_else(|| Path::new(&cfg.kafka.topics_file));
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read the topics file {}: {e}", path.display());
            return Ok(ExitCode::from(2));
        }
    };
    let file = match TopicsFile::parse(&text) {
        Ok(f) => f,
        Err(e) => {
            eprint!("{}: {e}", path.display());
            return Ok(ExitCode::from(2));
        }
    };
    let tie = file.check_against(cfg);
    if !tie.is_empty() {
        eprint!("{}: {}", path.display(), crate::settings::ConfigErrors(tie));
        return Ok(ExitCode::from(2));
    }
    let rules = Rules {
        max_trace_age: cfg.store.max_trace_age,
        replay_window: cfg.kafka.replay_window,
        decision_ttl: cfg
            .store
            .decision_cache
            .sampled_ttl
            .max(cfg.store.decision_cache.non_sampled_ttl),
        allow_repartition,
    };
    let wanted = file.wanted();
    if verb == Verb::Check {
        let alone = topics::plan(&wanted, &BTreeMap::new(), rules);
        for r in &alone.refused {
            println!("✗ refused: {r}");
        }
        return Ok(match alone.refused.is_empty() {
            true => {
                println!("{}: {} topic(s), safe", path.display(), wanted.len());
                ExitCode::SUCCESS
            }
            false => ExitCode::FAILURE,
        });
    }
    let admin: crate::topics::Admin = crate::kafka::create_with_context(
        &crate::kafka::admin_config(&cfg.kafka),
        crate::topics::AdminContext::default(),
    )?;
    let names: Vec<&str> = wanted.iter().map(|w| w.name.as_str()).collect();
    let actual = topics::describe(&admin, &names).await?;
    let plan = topics::plan(&wanted, &actual, rules);
    print!("{plan}");
    if !plan.refused.is_empty() {
        return Ok(ExitCode::FAILURE);
    }
    if verb == Verb::Apply && !plan.actions.is_empty() {
        match topics::apply(&admin, &plan).await {
            Ok(n) => println!("applied {n} change(s)"),
            Err(e) => {
                eprintln!("apply failed: {e}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
