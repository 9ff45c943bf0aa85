//! One pass of the archive lifecycle (`tracesift compact`, and the loop inside `run`):
//! retention, compaction of the hot tier, moves down the tiers.
//!
//! **Compaction.** Per hour partition of the hot tier that ended at least `min_age` ago and
//! holds any file not in the hot manifest (a segment, or the output of an interrupted pass),
//! every file of the hour — segments and earlier compacted files — is merged by the streaming
//! k-way merge of [`crate::archive::merge`] into files sorted by trace id and start time, each (trace id,
//! span id, kind) once, cut at `row_group_bytes` / `file_bytes`. Outputs are named after their
//! inputs (`c-<hash of input names>-NNNN.parquet`), uploaded, verified (size, CRC32C, footer
//! rows), published in the hot manifest, and only then are the inputs deleted. A crash at any
//! step leaves every row in at least one listed file; the next pass merges again and the
//! dedupe removes what was written twice.
//!
//! **Lease.** A pass runs only while it holds the compactor lease in the catalog store
//! ([`crate::archive::manifest::Fence`]), renewed on a timer and checked before every write;
//! every manifest change is committed under its fencing token, first to every tier at the
//! start of the pass, so that a compactor whose lease was taken can change no manifest after.
//! A compactor that finds the lease held reports it and does nothing; one that loses it
//! mid-pass stops with "lease lost".

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::ObjectStoreExt;

use super::config::ArchiveConfig;
use crate::archive::manifest::{self, Fence, Lease, Manifest};
use crate::archive::merge::{MergeLimits, MergeStats};
use crate::archive::tiering::{self, LifecycleReport, Tier};
use crate::archive::ArchiveError;

/// What one compaction pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Hour partitions compacted.
    pub hours: usize,
    /// Files read.
    pub files_in: usize,
    /// Files written.
    pub files_out: usize,
    /// Rows read.
    pub rows_in: usize,
    /// Rows written (after dedupe).
    pub rows_out: usize,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Merge rounds beyond the first (inputs that did not fit the budget at once).
    pub extra_rounds: usize,
    /// Moves and retention.
    pub lifecycle: LifecycleReport,
    /// Set when another compactor held the lease and this pass did nothing.
    pub skipped_for: Option<String>,
    /// Hours that could not be compacted, with the reason (their files are left as they were;
    /// the rest of the pass went on).
    pub failed_hours: Vec<(String, String)>,
}

impl CompactReport {
    /// Duplicate rows removed.
    pub fn duplicates_removed(&self) -> usize {
        self.rows_in - self.rows_out
    }
}

impl std::fmt::Display for CompactReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(owner) = &self.skipped_for {
            return write!(f, "skipped: the compactor lease is held by {owner}");
        }
        write!(
            f,
            "compacted {} hours: {} files ({:.1} MB, {} rows) -> {} files ({:.1} MB, {} rows), {} duplicates removed; moved {} files ({:.1} MB), finished {} interrupted moves; retention deleted {} files ({:.1} MB)",
            self.hours,
            self.files_in,
            self.bytes_in as f64 / 1e6,
            self.rows_in,
            self.files_out,
            self.bytes_out as f64 / 1e6,
            self.rows_out,
            self.duplicates_removed(),
            self.lifecycle.moved,
            self.lifecycle.moved_bytes as f64 / 1e6,
            self.lifecycle.finished,
            self.lifecycle.expired,
            self.lifecycle.expired_bytes as f64 / 1e6,
        )?;
        for (dir, why) in &self.failed_hours {
            write!(f, "\nnot compacted: {dir}: {why}")?;
        }
        Ok(())
    }
}

/// How to run a pass.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Merge limits.
    pub limits: MergeLimits,
    /// Only hours that ended at least this long before `now_ms` are compacted.
    pub min_age: Duration,
    /// Delete what ended longer ago than this (none: keep).
    pub retention: Option<Duration>,
    /// Wall-clock now, Unix ms (injected, so tests control ages).
    pub now_ms: u64,
    /// Local work directory for merge outputs and downloaded inputs.
    pub work_dir: PathBuf,
    /// Lease time-to-live.
    pub lease_ttl: Duration,
    /// Print progress lines to stderr.
    pub progress: bool,
}

impl CompactOptions {
    /// Options from the config's `archive` section, at the current time.
    pub fn from_config(cfg: &ArchiveConfig) -> CompactOptions {
        let c = &cfg.compaction;
        CompactOptions {
            limits: MergeLimits {
                memory_budget: c.memory_budget.0,
                row_group_bytes: c.row_group_bytes.0,
                file_bytes: c.file_bytes.0,
                fan_in: c.fan_in,
            },
            min_age: c.min_age,
            retention: cfg.retention,
            now_ms: crate::clock::Clock::wall_nanos(&crate::clock::SystemClock::new()) / 1_000_000,
            work_dir: if c.work_dir.is_empty() {
                std::env::temp_dir()
            } else {
                PathBuf::from(&c.work_dir)
            },
            lease_ttl: c.lease_ttl,
            progress: false,
        }
    }
}

/// Lists the hot tier's Parquet files (every schema version) by the hour directory they
/// compact into.
async fn list_hot(hot: &Tier) -> Result<BTreeMap<String, Vec<(Path, u64)>>, ArchiveError> {
    let mut hours: BTreeMap<String, Vec<(Path, u64)>> = BTreeMap::new();
    for (path, size) in tiering::list_parquet(&hot.store).await? {
        // Files of every schema version, under the current version's hour directory.
        let Some(dir) = path
            .as_ref()
            .rsplit_once('/')
            .and_then(|(d, _)| super::catalog::hour_dir(d))
        else {
            continue;
        };
        hours.entry(dir).or_default().push((path, size));
    }
    Ok(hours)
}

/// One pass: retention, compaction of due hot hours, tier moves. Holds the lease throughout.
pub async fn pass(tiers: &[Tier], opts: &CompactOptions) -> Result<CompactReport, ArchiveError> {
    let hot = tiers
        .first()
        .ok_or_else(|| ArchiveError::Url("no hot tier".into()))?;
    let catalog = hot.catalog.clone();
    if !manifest::store_is_exclusive(&catalog).await? {
        return Err(ArchiveError::Url(format!(
            "the catalog store ({}) does not honour create-if-absent writes (Garage 2.5 ignores them), so two compactors could both run and overwrite each other's manifests; set archive.compaction.lease_url to one that does (a local or shared filesystem, AWS S3, MinIO)",
            if Arc::ptr_eq(&catalog, &hot.store) { "the hot tier" } else { "archive.compaction.lease_url" }
        )));
    }
    let lease = Lease::new(catalog, Lease::owner_name(), opts.lease_ttl);
    let fence = match Fence::acquire(lease).await? {
        Ok(f) => f,
        Err(holder) => {
            return Ok(CompactReport {
                skipped_for: Some(holder.owner),
                ..Default::default()
            })
        }
    };
    let result = pass_locked(tiers, opts, &fence).await;
    let released = fence.release().await;
    let report = result?;
    released?;
    Ok(report)
}

async fn pass_locked(
    tiers: &[Tier],
    opts: &CompactOptions,
    fence: &Fence,
) -> Result<CompactReport, ArchiveError> {
    let hot = &tiers[0];
    let now = opts.now_ms as i64;
    let mut report = CompactReport::default();
    // Every manifest is stamped with our token first: a compactor that held the lease before
    // us can change none of them from here on.
    let mut manifests = Vec::with_capacity(tiers.len());
    for t in tiers {
        manifests.push(fence.commit(&t.store, &t.name, |_| true).await?);
    }
    let mut hours = list_hot(hot).await?;
    // Repair: hot catalog entries whose object is gone (a crash after deleting inputs that were
    // earlier outputs) are dropped.
    let listed: std::collections::HashSet<String> = hours
        .values()
        .flatten()
        .map(|(p, _)| p.to_string())
        .collect();
    if manifests[0].files.keys().any(|p| !listed.contains(p)) {
        tiering::commit(fence, hot, &mut manifests[0], |m| {
            m.files.retain(|p, _| listed.contains(p))
        })
        .await?;
    }
    finish_replacements(tiers, &mut manifests, fence).await?;
    if let Some(retention) = opts.retention {
        let segments: Vec<(Path, u64)> = hours
            .values()
            .flatten()
            .filter(|(p, _)| !manifests[0].files.contains_key(p.as_ref()))
            .cloned()
            .collect();
        tiering::expire(
            tiers,
            &mut manifests,
            &segments,
            retention,
            now,
            fence,
            &mut report.lifecycle,
        )
        .await?;
        hours = list_hot(hot).await?;
    }
    let listing = hours
        .into_iter()
        .map(|(dir, files)| {
            let files = files.into_iter().map(|(p, s)| (p.to_string(), s)).collect();
            (dir, files)
        })
        .collect();
    let due = super::plan::due_hours(listing, &manifests, now, opts.min_age);
    for (n, super::plan::HourPlan { dir, files, moved }) in due.iter().enumerate() {
        let files: Vec<(Path, u64)> = files
            .iter()
            .map(|(p, s)| (Path::from(p.as_str()), *s))
            .collect();
        let moved: Vec<(usize, Path, u64)> = moved
            .iter()
            .map(|(t, p, s)| (*t, Path::from(p.as_str()), *s))
            .collect();
        if opts.progress {
            let bytes: u64 = files.iter().map(|f| f.1).sum();
            eprintln!(
                "compact: hour {}/{} {dir}: {} files, {:.1} MB",
                n + 1,
                due.len(),
                files.len(),
                bytes as f64 / 1e6
            );
        }
        match compact_hour(
            tiers,
            &mut manifests,
            dir,
            &files,
            &moved,
            opts,
            fence,
            &mut report,
        )
        .await
        {
            Ok(()) => report.hours += 1,
            // Not an hour's problem: the pass stops.
            Err(e @ ArchiveError::LeaseLost(_)) => return Err(e),
            Err(e) => {
                tracing::warn!(hour = %dir, error = %e, "hour not compacted; its files are kept");
                report.failed_hours.push((dir.clone(), e.to_string()));
            }
        }
    }
    tiering::move_due(
        tiers,
        &mut manifests,
        now,
        fence,
        opts.progress,
        &mut report.lifecycle,
    )
    .await?;
    Ok(report)
}

/// Deletes, from their tiers, the files that hot entries were merged from (and forgets them).
async fn finish_replacements(
    tiers: &[Tier],
    manifests: &mut [Manifest],
    fence: &Fence,
) -> Result<(), ArchiveError> {
    let pending: Vec<(String, Vec<(String, String)>)> = manifests[0]
        .files
        .iter()
        .filter(|(_, e)| !e.replaces.is_empty())
        .map(|(p, e)| (p.clone(), e.replaces.clone()))
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    for (_, replaced) in &pending {
        for (tier, path) in replaced {
            let Some(ti) = tiers.iter().position(|t| &t.name == tier) else {
                continue;
            };
            fence.check().await?;
            tiers[ti]
                .store
                .delete(&Path::from(path.as_str()))
                .await
                .or_else(manifest::not_found_ok)?;
            if manifests[ti].files.contains_key(path) {
                tiering::commit(fence, &tiers[ti], &mut manifests[ti], |m| {
                    m.files.remove(path);
                })
                .await?;
            }
        }
    }
    tiering::commit(fence, &tiers[0], &mut manifests[0], |m| {
        for (p, _) in &pending {
            if let Some(e) = m.files.get_mut(p) {
                e.replaces.clear();
            }
        }
    })
    .await
}

#[allow(clippy::too_many_arguments)]
async fn compact_hour(
    tiers: &[Tier],
    manifests: &mut [Manifest],
    dir: &str,
    files: &[(Path, u64)],
    moved: &[(usize, Path, u64)],
    opts: &CompactOptions,
    fence: &Fence,
    report: &mut CompactReport,
) -> Result<(), ArchiveError> {
    let hour_start = tiering::hour_start_ms(dir)
        .ok_or_else(|| ArchiveError::Verify(format!("{dir}: not an hour partition")))?;
    let mut names: Vec<String> = files.iter().map(|(p, _)| p.to_string()).collect();
    names.extend(
        moved
            .iter()
            .map(|(ti, p, _)| format!("{}:{p}", tiers[*ti].name)),
    );
    names.sort();
    let refs: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
    let tag = format!("c-{:016x}", crate::hash::fnv1a(&refs));
    let work = opts
        .work_dir
        .join(format!("tracesift-compact-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&work)
        .map_err(|e| ArchiveError::Verify(format!("{}: {e}", work.display())))?;
    let result = compact_hour_in(
        tiers, manifests, dir, hour_start, files, moved, &tag, &work, opts, fence, report,
    )
    .await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

#[allow(clippy::too_many_arguments)]
async fn compact_hour_in(
    tiers: &[Tier],
    manifests: &mut [Manifest],
    dir: &str,
    hour_start: i64,
    files: &[(Path, u64)],
    moved: &[(usize, Path, u64)],
    tag: &str,
    work: &FsPath,
    opts: &CompactOptions,
    fence: &Fence,
    report: &mut CompactReport,
) -> Result<(), ArchiveError> {
    let hot = &tiers[0];
    // Local paths of the inputs: a file:// tier is read in place; others are downloaded.
    let all: Vec<(usize, &Path)> = files
        .iter()
        .map(|(p, _)| (0, p))
        .chain(moved.iter().map(|(ti, p, _)| (*ti, p)))
        .collect();
    let mut inputs: Vec<PathBuf> = Vec::with_capacity(all.len());
    for (i, (ti, p)) in all.iter().enumerate() {
        let tier = &tiers[*ti];
        match &tier.local {
            Some(root) => inputs.push(root.join(p.as_ref())),
            None => {
                let local = work.join(format!("in-{i:06}.parquet"));
                tiering::download(&tier.store, p, &local).await?;
                inputs.push(local);
            }
        }
    }
    let limits = opts.limits;
    let out_dir = work.join("out");
    let tag_owned = tag.to_string();
    let progress = opts.progress;
    let (outputs, stats): (Vec<crate::archive::merge::MergedFile>, MergeStats) =
        tokio::task::spawn_blocking(move || {
            // Progress every million rows (by count: no clock read inside the merge).
            let mut next = 1_000_000u64;
            let mut cb = |rows: u64| {
                if progress && rows >= next {
                    next = rows + 1_000_000;
                    eprintln!("compact:   {rows} rows merged");
                }
            };
            crate::archive::merge::merge(&inputs, &out_dir, &tag_owned, &limits, &mut cb)
        })
        .await
        .map_err(|e| ArchiveError::Verify(format!("merge task failed: {e}")))??;
    // Upload and verify every output before touching the catalog or the inputs.
    let mut published: Vec<(String, manifest::FileEntry)> = Vec::with_capacity(outputs.len());
    for (i, out) in outputs.iter().enumerate() {
        let path = Path::from(format!("{dir}/{tag}-{i:04}.parquet"));
        fence.check().await?;
        tiering::upload(&hot.store, &path, &out.path).await?;
        let mut entry = out.entry.clone();
        entry.hour_start_ms = hour_start;
        entry.replaces = moved
            .iter()
            .map(|(ti, p, _)| (tiers[*ti].name.clone(), p.to_string()))
            .collect();
        tiering::verify(&hot.store, &path, &entry).await?;
        report.bytes_out += entry.bytes;
        published.push((path.to_string(), entry));
    }
    crate::failpoint::step("compact-after-upload", &hot.name);
    let outputs_set: std::collections::HashSet<&str> =
        published.iter().map(|(p, _)| p.as_str()).collect();
    tiering::commit(fence, hot, &mut manifests[0], |m| {
        for (p, _) in files {
            if !outputs_set.contains(p.as_ref()) {
                m.files.remove(p.as_ref());
            }
        }
        for (p, e) in &published {
            m.files.insert(p.clone(), e.clone());
        }
    })
    .await?;
    crate::failpoint::step("compact-after-publish", &hot.name);
    fence.check().await?;
    for (p, _) in files {
        if !outputs_set.contains(p.as_ref()) {
            hot.store.delete(p).await.or_else(manifest::not_found_ok)?;
        }
    }
    // The moved files this hour was merged with: deleted from their tiers now (or, after a
    // crash, at the start of the next pass).
    finish_replacements(tiers, manifests, fence).await?;
    report.files_in += files.len() + moved.len();
    report.bytes_in +=
        files.iter().map(|f| f.1).sum::<u64>() + moved.iter().map(|f| f.2).sum::<u64>();
    report.files_out += published.len();
    report.rows_in += stats.rows_in as usize;
    report.rows_out += stats.rows_out as usize;
    report.extra_rounds += stats.rounds.saturating_sub(1);
    Ok(())
}

/// The compaction loop running inside `tracesift run` (`archive.compaction.in_run`).
pub struct Compactor {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Compactor {
    /// Starts a pass every `archive.compaction.interval` (the first at once).
    pub fn start(cfg: ArchiveConfig) -> Result<Compactor, ArchiveError> {
        let tiers = tiering::open_tiers(&cfg)?;
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        crate::telemetry::compactor_started();
        let task = tokio::spawn(async move {
            use crate::clock::Clock as _;
            let clock = crate::clock::SystemClock::new();
            loop {
                let began = clock.now();
                let result = match async {
                    let opts = CompactOptions::from_config(&cfg);
                    pass(&tiers, &opts).await
                }
                .await
                {
                    Ok(r) if r.skipped_for.is_some() => {
                        tracing::debug!(report = %r, "compaction pass skipped");
                        "skipped"
                    }
                    Ok(r) => {
                        if r.failed_hours.is_empty() {
                            tracing::info!(report = %r, "compaction pass");
                        } else {
                            tracing::warn!(report = %r, "compaction pass left hours uncompacted");
                        }
                        metrics::counter!(crate::telemetry::COMPACTION_ROWS, "kind" => "written")
                            .increment(r.rows_out as u64);
                        metrics::counter!(crate::telemetry::COMPACTION_ROWS, "kind" => "duplicate")
                            .increment(r.duplicates_removed() as u64);
                        metrics::counter!(crate::telemetry::LIFECYCLE_FILES, "action" => "moved")
                            .increment(r.lifecycle.moved as u64);
                        metrics::counter!(crate::telemetry::LIFECYCLE_FILES, "action" => "expired")
                            .increment(r.lifecycle.expired as u64);
                        if r.failed_hours.is_empty() {
                            "ok"
                        } else {
                            "error"
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "compaction pass failed; retrying next interval");
                        "error"
                    }
                };
                crate::telemetry::compaction_pass(clock.now() - began, result);
                if let Ok(ms) = tiering::load_manifests(&tiers).await {
                    for (t, m) in tiers.iter().zip(ms) {
                        let (bytes, _) = m.totals();
                        metrics::gauge!(crate::telemetry::ARCHIVE_TIER_FILES, "tier" => t.name.clone())
                            .set(m.files.len() as f64);
                        metrics::gauge!(crate::telemetry::ARCHIVE_TIER_BYTES, "tier" => t.name.clone())
                            .set(bytes as f64);
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(cfg.compaction.interval) => {}
                    _ = stopped.changed() => return,
                }
            }
        });
        Ok(Compactor { stop, task })
    }

    /// Stops the loop: waits for a running pass up to `deadline`, then abandons it (every
    /// step of a pass is crash-safe; the next pass finishes its work).
    pub async fn stop(self, deadline: Duration) {
        let _ = self.stop.send(true);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(deadline, self.task).await.is_err() {
            abort.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_read_as_one_line() {
        let r = CompactReport {
            hours: 1,
            files_in: 3,
            rows_in: 10,
            rows_out: 8,
            ..Default::default()
        };
        let s = r.to_string();
        assert!(
            s.contains("compacted 1 hours") && s.contains("2 duplicates removed"),
            "{s}"
        );
        let skipped = CompactReport {
            skipped_for: Some("other".into()),
            ..Default::default()
        };
        assert!(skipped.to_string().contains("held by other"));
    }
}
