//! `tracesift compact -c FILE`: one pass of the archive lifecycle (retention, compaction of due
//! hot hours, moves down the tiers), then exit. Safe beside `run` and other compactors.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// Runs one pass; exit 1 when an hour could not be compacted.
pub fn main(
    config: &Path,
    memory_budget: Option<u64>,
    min_age: Option<Duration>,
    now: Option<String>,
) -> anyhow::Result<ExitCode> {
    let Some(mut cfg) = super::load(config) else {
        return Ok(ExitCode::from(2));
    };
    if let Some(m) = memory_budget {
        cfg.archive.compaction.memory_budget = crate::config::ByteSize(m);
    }
    if let Some(m) = min_age {
        cfg.archive.compaction.min_age = m;
    }
    if let Err(e) = cfg.validate() {
        eprint!("{e}");
        return Ok(ExitCode::from(2));
    }
    let mut opts = crate::archive::compact::CompactOptions::open(&cfg.archive)?;
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
