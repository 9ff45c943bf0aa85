//! Tiers and the lifecycle of compacted files: moves between tiers and retention.
//!
//! A tier is an object store (`file://` or `s3://`) with its manifest. Files move from tier `i`
//! to tier `i + 1` once their hour ended `after` ago. A move is:
//!
//! 1. **copy** the object, streaming (the CRC32C of what was read is checked against the
//!    manifest, so a corrupt source is never propagated);
//! 2. **verify** the copy: size, CRC32C read back from the destination, and the row count in
//!    its footer;
//! 3. **publish** it in the destination's manifest;
//! 4. **delete** the source object, then drop it from the source manifest.
//!
//! A crash after 1 or 2 leaves an unpublished copy that the next pass overwrites; after 3 the
//! file is in both manifests, and the next pass finishes steps 4 (lookups dedupe meanwhile).
//! Data is readable in at least one tier at every instant.
//!
//! Retention deletes files whose hour ended more than `retention` ago from every tier.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};

use super::config::ArchiveConfig;
use crate::archive::manifest::{self, Fence, FileEntry, Manifest};
use crate::archive::{ArchiveError, OpenedStore};

/// One tier: `hot` first, then the configured ones.
#[derive(Clone)]
pub struct Tier {
    /// `hot` or the configured name.
    pub name: String,
    /// Its URL.
    pub url: String,
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// The directory of a `file://` tier.
    pub local: Option<PathBuf>,
    /// Files move in once their hour ended this long ago (zero for hot).
    pub after: Duration,
    /// Price, for `tracesift cost`.
    pub cost_per_gb_month: f64,
    /// The catalog store: where this tier's manifest generations and the compactor lease live
    /// (`archive.compaction.lease_url`, else the hot tier).
    pub catalog: Arc<dyn ObjectStore>,
}

impl Tier {
    /// This tier's manifest, newest generation.
    pub async fn manifest(&self) -> Result<Manifest, ArchiveError> {
        manifest::load(&self.catalog, &self.store, &self.name).await
    }
}

impl std::fmt::Debug for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tier")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("after", &self.after)
            .finish()
    }
}

/// Opens every tier of the config: hot first.
pub fn open_tiers(cfg: &ArchiveConfig) -> Result<Vec<Tier>, ArchiveError> {
    let hot = crate::archive::open_store_with(&cfg.hot.url, &cfg.hot.options)?;
    let c = &cfg.compaction;
    let catalog = if c.lease_url.is_empty() {
        hot.store.clone()
    } else {
        crate::archive::open_store_with(&c.lease_url, &c.lease_options)?.store
    };
    let tier = |name: &str, url: &str, opts, after, cost| -> Result<Tier, ArchiveError> {
        let OpenedStore { store, local } = if name == "hot" {
            hot.clone()
        } else {
            crate::archive::open_store_with(url, opts)?
        };
        Ok(Tier {
            name: name.to_string(),
            url: url.to_string(),
            store,
            local,
            after,
            cost_per_gb_month: cost,
            catalog: catalog.clone(),
        })
    };
    let mut out = vec![tier(
        "hot",
        &cfg.hot.url,
        &cfg.hot.options,
        Duration::ZERO,
        cfg.hot.cost_per_gb_month,
    )?];
    for t in &cfg.tiers {
        out.push(tier(
            &t.name,
            &t.url,
            &t.options,
            t.after,
            t.cost_per_gb_month,
        )?);
    }
    Ok(out)
}

/// Every Parquet file under a tier's `spans/` (every schema version), as (path, size). Only
/// the hot tier is listed (it holds recent hours); later tiers are read through their manifests.
pub async fn list_parquet(store: &Arc<dyn ObjectStore>) -> Result<Vec<(Path, u64)>, ArchiveError> {
    use futures::TryStreamExt;
    let prefix = Path::from("spans");
    let listed: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
    Ok(listed
        .into_iter()
        .filter(|o| o.location.as_ref().ends_with(".parquet"))
        .map(|o| (o.location, o.size))
        .collect())
}

pub use super::catalog::hour_start_ms;

/// Streams `local` into `store` at `path` (multipart, 8 MiB parts). On any error the upload
/// is aborted, so no orphaned parts stay behind (and billed) on S3.
pub async fn upload(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    local: &std::path::Path,
) -> Result<(), ArchiveError> {
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(local)
        .await
        .map_err(|e| ArchiveError::Verify(format!("{}: {e}", local.display())))?;
    let upload = store.put_multipart(path).await?;
    let mut w = WriteMultipart::new_with_chunk_size(upload, 8 << 20);
    let mut buf = vec![0u8; 1 << 20];
    let written: Result<(), ArchiveError> = async {
        loop {
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| ArchiveError::Verify(format!("{}: {e}", local.display())))?;
            if n == 0 {
                return Ok(());
            }
            // Bounded: at most two parts in flight.
            w.wait_for_capacity(2).await?;
            w.write(&buf[..n]);
        }
    }
    .await;
    match written {
        Ok(()) => finish(w).await,
        Err(e) => {
            let _ = w.abort().await;
            Err(e)
        }
    }
}

/// Completes a multipart upload (`WriteMultipart::finish` aborts it itself when completing
/// fails).
async fn finish(w: WriteMultipart) -> Result<(), ArchiveError> {
    w.finish().await?;
    Ok(())
}

/// Streams an object into a local file.
pub async fn download(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    local: &std::path::Path,
) -> Result<(), ArchiveError> {
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::fs::File::create(local)
        .await
        .map_err(|e| ArchiveError::Verify(format!("{}: {e}", local.display())))?;
    let mut stream = store.get(path).await?.into_stream();
    while let Some(chunk) = stream.next().await {
        file.write_all(&chunk?)
            .await
            .map_err(|e| ArchiveError::Verify(format!("{}: {e}", local.display())))?;
    }
    file.flush()
        .await
        .map_err(|e| ArchiveError::Verify(format!("{}: {e}", local.display())))?;
    Ok(())
}

/// CRC32C and size of an object, streamed.
pub async fn object_crc32c(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
) -> Result<(u32, u64), ArchiveError> {
    let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
    let mut size = 0u64;
    let mut stream = store.get(path).await?.into_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        digest.update(&chunk);
    }
    Ok((digest.finalize() as u32, size))
}

/// Ranged reads of one Parquet object of known size, for the async Parquet reader: the footer,
/// page index, bloom filters and selected pages are fetched, never the whole object.
#[derive(Clone)]
pub struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

impl ObjectReader {
    /// A reader of `path` (`size` bytes) in `store`.
    pub fn new(store: Arc<dyn ObjectStore>, path: Path, size: u64) -> ObjectReader {
        ObjectReader { store, path, size }
    }
}

fn parquet_err(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl parquet::arrow::async_reader::AsyncFileReader for ObjectReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        Box::pin(async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(parquet_err)
        })
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Vec<bytes::Bytes>>> {
        Box::pin(async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(parquet_err)
        })
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a parquet::arrow::arrow_reader::ArrowReaderOptions>,
    ) -> futures::future::BoxFuture<
        'a,
        parquet::errors::Result<Arc<parquet::file::metadata::ParquetMetaData>>,
    > {
        Box::pin(async move {
            let size = self.size;
            let meta = parquet::file::metadata::ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .with_prefetch_hint(Some(64 << 10))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(meta))
        })
    }
}

/// Rows in an object's Parquet footer (ranged reads only).
pub async fn footer_rows(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    size: u64,
) -> Result<u64, ArchiveError> {
    use parquet::arrow::async_reader::AsyncFileReader;
    let mut reader = ObjectReader::new(Arc::clone(store), path.clone(), size);
    let meta = reader.get_metadata(None).await?;
    Ok(meta.file_metadata().num_rows().max(0) as u64)
}

/// Checks an object against its catalog entry: size, CRC32C read back, rows in the footer.
pub async fn verify(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    entry: &FileEntry,
) -> Result<(), ArchiveError> {
    let head = store.head(path).await?;
    if head.size != entry.bytes {
        return Err(ArchiveError::Verify(format!(
            "{path}: {} bytes, expected {}",
            head.size, entry.bytes
        )));
    }
    let (crc, _) = object_crc32c(store, path).await?;
    if crc != entry.crc32c {
        return Err(ArchiveError::Verify(format!(
            "{path}: CRC32C {crc:08x}, expected {:08x}",
            entry.crc32c
        )));
    }
    let rows = footer_rows(store, path, head.size).await?;
    if rows != entry.rows {
        return Err(ArchiveError::Verify(format!(
            "{path}: {rows} rows in the footer, expected {}",
            entry.rows
        )));
    }
    Ok(())
}

/// Copies an object between stores, streaming, and checks the CRC32C of what was read.
async fn copy(
    from: &Arc<dyn ObjectStore>,
    to: &Arc<dyn ObjectStore>,
    path: &Path,
    entry: &FileEntry,
) -> Result<(), ArchiveError> {
    let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
    let mut stream = from.get(path).await?.into_stream();
    let upload = to.put_multipart(path).await?;
    let mut w = WriteMultipart::new_with_chunk_size(upload, 8 << 20);
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = w.abort().await;
                return Err(e.into());
            }
        };
        digest.update(&chunk);
        if let Err(e) = w.wait_for_capacity(2).await {
            let _ = w.abort().await;
            return Err(e.into());
        }
        w.write(&chunk);
    }
    let crc = digest.finalize() as u32;
    if crc != entry.crc32c {
        let _ = w.abort().await;
        return Err(ArchiveError::Verify(format!(
            "{path}: source reads with CRC32C {crc:08x}, manifest says {:08x}; not moved",
            entry.crc32c
        )));
    }
    finish(w).await
}

/// What the lifecycle did in one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LifecycleReport {
    /// Files moved (tier → tier).
    pub moved: usize,
    /// Bytes moved.
    pub moved_bytes: u64,
    /// Interrupted moves finished (file was in both manifests).
    pub finished: usize,
    /// Files deleted by retention.
    pub expired: usize,
    /// Bytes deleted by retention.
    pub expired_bytes: u64,
}

/// Loads every tier's manifest (index-aligned with `tiers`).
pub async fn load_manifests(tiers: &[Tier]) -> Result<Vec<Manifest>, ArchiveError> {
    let mut out = Vec::with_capacity(tiers.len());
    for t in tiers {
        out.push(t.manifest().await?);
    }
    Ok(out)
}

/// Applies `change` to `local` (the pass's copy of a tier's manifest, which it plans from) and
/// commits it to the newest generation of that manifest under the pass's lease; `local`
/// becomes what was written, other writers' changes included.
pub async fn commit(
    fence: &Fence,
    tier: &Tier,
    local: &mut Manifest,
    change: impl Fn(&mut Manifest),
) -> Result<(), ArchiveError> {
    change(local);
    *local = fence
        .commit(&tier.store, &tier.name, |m| {
            change(m);
            true
        })
        .await?;
    Ok(())
}

/// Moves due files down the tiers, finishing interrupted moves first. Every write checks the
/// lease first; every manifest change is committed under it.
pub async fn move_due(
    tiers: &[Tier],
    manifests: &mut [Manifest],
    now_ms: i64,
    fence: &Fence,
    progress: bool,
    report: &mut LifecycleReport,
) -> Result<(), ArchiveError> {
    for i in 0..tiers.len().saturating_sub(1) {
        let (src, dst) = (&tiers[i], &tiers[i + 1]);
        // Finish moves that were published but whose source was not deleted.
        let both: Vec<String> = manifests[i]
            .files
            .keys()
            .filter(|p| manifests[i + 1].files.contains_key(*p))
            .cloned()
            .collect();
        for p in both {
            fence.check().await?;
            src.store
                .delete(&Path::from(p.as_str()))
                .await
                .or_else(manifest::not_found_ok)?;
            commit(fence, src, &mut manifests[i], |m| {
                m.files.remove(&p);
            })
            .await?;
            report.finished += 1;
        }
        let due = super::plan::due_moves(&manifests[i], dst.after, now_ms);
        let count = due.len();
        for (n, (p, entry)) in due.into_iter().enumerate() {
            if progress {
                eprintln!(
                    "move: {}/{count} {p} ({:.1} MB) {} -> {}",
                    n + 1,
                    entry.bytes as f64 / 1e6,
                    src.name,
                    dst.name
                );
            }
            let path = Path::from(p.as_str());
            fence.check().await?;
            copy(&src.store, &dst.store, &path, &entry).await?;
            crate::failpoint::step("move-after-copy", &dst.name);
            verify(&dst.store, &path, &entry).await?;
            commit(fence, dst, &mut manifests[i + 1], |m| {
                m.files.insert(p.clone(), entry.clone());
            })
            .await?;
            crate::failpoint::step("move-after-publish", &dst.name);
            fence.check().await?;
            src.store
                .delete(&path)
                .await
                .or_else(manifest::not_found_ok)?;
            crate::failpoint::step("move-after-delete", &dst.name);
            commit(fence, src, &mut manifests[i], |m| {
                m.files.remove(&p);
            })
            .await?;
            report.moved += 1;
            report.moved_bytes += entry.bytes;
            tracing::info!(file = %p, from = %src.name, to = %dst.name, bytes = entry.bytes, "moved");
        }
    }
    Ok(())
}

/// Deletes, from every tier, the files whose hour ended more than `retention` before `now_ms`.
/// Hot segments not yet compacted are found by `hot_listing` (path, size).
pub async fn expire(
    tiers: &[Tier],
    manifests: &mut [Manifest],
    hot_listing: &[(Path, u64)],
    retention: Duration,
    now_ms: i64,
    fence: &Fence,
    report: &mut LifecycleReport,
) -> Result<(), ArchiveError> {
    let due = |hour_start: i64| super::plan::expired(hour_start, retention, now_ms);
    for (t, m) in tiers.iter().zip(manifests.iter_mut()) {
        let expired = super::plan::expired_files(m, retention, now_ms);
        if expired.is_empty() {
            continue;
        }
        // Objects first: a crash in between leaves catalog entries of deleted objects, which
        // lookups skip and the next pass removes; never unlisted objects that nothing cleans up.
        fence.check().await?;
        for (p, bytes) in &expired {
            t.store
                .delete(&Path::from(p.as_str()))
                .await
                .or_else(manifest::not_found_ok)?;
            report.expired += 1;
            report.expired_bytes += bytes;
        }
        commit(fence, t, m, |m| {
            for (p, _) in &expired {
                m.files.remove(p);
            }
        })
        .await?;
    }
    if let Some(hot) = tiers.first() {
        fence.check().await?;
        for (p, size) in hot_listing {
            if hour_start_ms(p.as_ref()).is_some_and(due) {
                hot.store.delete(p).await.or_else(manifest::not_found_ok)?;
                report.expired += 1;
                report.expired_bytes += size;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_parse_from_paths() {
        assert_eq!(
            hour_start_ms("spans/v1/date=1970-01-02/hour=01/x.parquet"),
            Some((86_400 + 3_600) * 1000)
        );
        assert_eq!(hour_start_ms("spans/v1/date=1970-01-02/hour=24/x"), None);
        assert_eq!(hour_start_ms("spans/v1/x.parquet"), None);
    }
}
