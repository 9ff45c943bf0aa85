//! `tracesift cost -c FILE`: what the archive holds and costs, per tier and per policy.

use std::path::Path;
use std::process::ExitCode;

/// Prints the cost report.
pub fn main(config: &Path) -> anyhow::Result<ExitCode> {
    let Some(cfg) = super::load(config) else {
        return Ok(ExitCode::from(2));
    };
    let report = super::runtime()?.block_on(async {
        let tiers = crate::archive::tiering::open_tiers(&cfg.archive)?;
        crate::archive::cost::report(&tiers).await
    })?;
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}
