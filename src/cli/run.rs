//! `tracesift run -c FILE`: the service, a member of the consumer group until SIGTERM / SIGINT;
//! SIGHUP reloads the policy block.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;

/// Waits for SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs the pipeline until a stop signal, then drains it within `shutdown_timeout`.
pub async fn run(cfg: Config, path: PathBuf) -> anyhow::Result<()> {
    let timeout = cfg.shutdown_timeout;
    let running_cfg = cfg.clone();
    let running =
        crate::pipeline::start(cfg, Arc::new(crate::clock::tokio_clock::TokioClock::new())).await?;
    if let Some(addr) = running.telemetry_addr {
        tracing::info!(%addr, "metrics on /metrics, health on /healthz and /readyz");
    }
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup())?;
        let stop = shutdown_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = hup.recv() => {
                    match crate::pipeline::reload_policies(&path, &running_cfg, &running.policies) {
                        Ok(ignored) => {
                            tracing::info!(file = %path.display(), "policies reloaded");
                            if !ignored.is_empty() {
                                tracing::warn!(sections = ?ignored, "changed sections other than the policies need a restart; not applied");
                            }
                        }
                        Err(e) => tracing::error!(file = %path.display(), problems = %e, "reload rejected; the previous policies keep running"),
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = &path;
        shutdown_signal().await;
    }
    tracing::info!("shutting down: draining partitions");
    match tokio::time::timeout(timeout + Duration::from_secs(5), running.stop()).await {
        Ok(stats) => {
            tracing::info!(
                spans = stats.spans.load(std::sync::atomic::Ordering::Relaxed),
                traces_decided = stats.traces_decided(),
                "stopped"
            );
            Ok(())
        }
        Err(_) => anyhow::bail!(
            "shutdown did not finish within {}",
            humantime::format_duration(timeout)
        ),
    }
}
