//! `tracesift compact -c FILE`: one pass of the archive lifecycle (retention, compaction of due
//! hot hours, moves down the tiers), then exit; with `--every D`, a pass every D as a service
//! with metrics and health (the compactor Deployment). Safe beside `run` and other compactors.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// The configuration with the command line's overrides, validated once, or every problem
/// printed.
fn configure(
    config: &Path,
    memory_budget: Option<u64>,
    min_age: Option<Duration>,
    listen: Option<String>,
) -> Option<crate::config::Config> {
    let mut cfg = super::load(config)?;
    if let Some(listen) = listen {
        cfg.telemetry.listen = listen;
    }
    if let Some(m) = memory_budget {
        cfg.archive.compaction.memory_budget = crate::config::ByteSize(m);
    }
    if let Some(m) = min_age {
        cfg.archive.compaction.min_age = m;
    }
    if let Err(e) = cfg.validate() {
        eprint!("{e}");
        return None;
    }
    Some(cfg)
}

/// A pass every `every` until SIGTERM / SIGINT, with `/metrics`, `/healthz` and `/readyz` on
/// `telemetry.listen` (ready while the loop runs). A failed pass is counted and retried at the
/// next interval; the process stays up.
pub fn service(
    config: &Path,
    memory_budget: Option<u64>,
    min_age: Option<Duration>,
    every: Duration,
    listen: Option<String>,
) -> anyhow::Result<ExitCode> {
    let Some(mut cfg) = configure(config, memory_budget, min_age, listen) else {
        return Ok(ExitCode::from(2));
    };
    if every.is_zero() {
        eprintln!("--every must be longer than 0");
        return Ok(ExitCode::from(2));
    }
    cfg.archive.compaction.interval = every;
    super::runtime()?.block_on(async {
        let handle = crate::telemetry::install();
        let health = crate::telemetry::Health::default();
        let _server = if cfg.telemetry.listen.is_empty() {
            None
        } else {
            Some(
                crate::telemetry::server::serve(&cfg.telemetry.listen, handle, health.clone())
                    .await?,
            )
        };
        let compactor = crate::archive::compact::Compactor::start(cfg.archive.clone())?;
        health.set_ready(true);
        tracing::info!(every = ?every, "compactor running");
        super::run::shutdown_signal().await;
        health.set_ready(false);
        compactor.stop(cfg.shutdown_timeout).await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Runs one pass; exit 1 when an hour could not be compacted.
pub fn main(
    config: &Path,
    memory_budget: Option<u64>,
    min_age: Option<Duration>,
    now: Option<String>,
) -> anyhow::Result<ExitCode> {
    let Some(cfg) = configure(config, memory_budget, min_age, None) else {
        return Ok(ExitCode::from(2));
    };
    let mut opts = crate::archive::compact::CompactOptions::from_config(&cfg.archive);
    opts.progress = true;
    if let Some(now) = now {
        match chrono::DateTime::parse_from_rfc3339(&now) {
            Ok(t) => opts.now_ms = t.timestamp_millis().max(0) as u64,
            Err(e) => {
                eprintln!("--now `{now}`: {e}");
                return Ok(ExitCode::from(2));
            }
        }
    }
    let r = super::runtime()?.block_on(async {
        let tiers = crate::archive::tiering::open_tiers(&cfg.archive)?;
        crate::archive::compact::pass(&tiers, &opts).await
    })?;
    println!("{r}");
    if let Some(peak) = crate::telemetry::peak_rss_bytes() {
        eprintln!("compact: peak RSS {peak} bytes");
    }
    Ok(if r.failed_hours.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
