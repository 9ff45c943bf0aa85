//! `tracesift trace ID -c FILE [--json]`: one trace from every tier of the archive, as a span
//! tree (errors highlighted on a terminal) or as OTLP/JSON.

use std::path::Path;

use crate::clock::Clock;
use std::process::ExitCode;

/// Finds and prints the trace.
pub fn main(trace_id: &str, config: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let Some(id) = crate::otlp::TraceId::from_hex(trace_id) else {
        eprintln!("`{trace_id}` is not a trace id (32 hex digits)");
        return Ok(ExitCode::from(2));
    };
    let Some(cfg) = super::load(config) else {
        return Ok(ExitCode::from(2));
    };
    let clock = crate::clock::SystemClock::new();
    let t0 = clock.now();
    let found = super::runtime()?.block_on(async {
        let tiers = crate::archive::tiering::open_tiers(&cfg.archive)?;
        crate::archive::lookup::find_trace(&tiers, id).await
    })?;
    let st = &found.stats;
    if found.spans.is_empty() {
        eprintln!(
            "trace {trace_id} not found ({} tiers, {} files read, {} passed over by manifest)",
            st.tiers, st.files, st.files_skipped_by_manifest
        );
        return Ok(ExitCode::from(1));
    }
    {
        use std::io::{IsTerminal, Write};
        let mut out = std::io::stdout().lock();
        if json {
            let doc = crate::archive::lookup::render_otlp_json(&found)?;
            serde_json::to_writer_pretty(&mut out, &doc)?;
            out.write_all(b"\n")?;
        } else {
            let color = std::io::stdout().is_terminal();
            out.write_all(
                crate::archive::lookup::render_tree_styled(&found.spans, color).as_bytes(),
            )?;
        }
        out.flush()?;
    }
    eprintln!(
        "{} spans; {} tiers, {} files read ({} passed over by manifest), {} row groups read, {} skipped by statistics, {} by bloom filter, {} rows decoded, {:.1} ms",
        found.spans.len(),
        st.tiers,
        st.files,
        st.files_skipped_by_manifest,
        st.row_groups_read,
        st.row_groups_skipped,
        st.row_groups_skipped_by_bloom,
        st.rows_read,
        (clock.now() - t0).as_secs_f64() * 1e3
    );
    Ok(ExitCode::SUCCESS)
}
