//! Per-tier catalogs and the compactor lease, both kept so that at most one compactor can
//! change them, and a compactor whose lease was taken cannot change anything afterwards.
//!
//! **The catalog store.** Lease and manifests live in one store that honours create-if-absent
//! writes: `archive.compaction.lease_url` when set, else the hot tier. Every change is a new
//! *generation*, an object created with a create-if-absent PUT (object_store's
//! [`PutMode::Create`]): of two writers that read generation N, exactly one creates N + 1, the
//! other finds it taken, reads again and re-applies its change. That is compare-and-swap built
//! on the one conditional write that local file systems (an exclusive hard link), AWS S3 and
//! MinIO all honour. Garage 2.5 ignores conditional headers altogether; a pass probes the
//! catalog store first and refuses to run on a store that lets a second create succeed (put
//! the catalog on a shared file system or a store that honours it with `lease_url`).
//!
//! - `_tracesift/lease/g-<generation>.json`: the lease, one record per take-over, renewal or
//!   release. Taking it creates the next generation, so two takers cannot both win; a release
//!   is a generation too, so it never deletes a lease another just took. The generation at
//!   which a holder took the lease is its **fencing token**.
//! - `_tracesift/catalog/<tier>/g-<generation>.json`: a tier's manifest, listing its compacted
//!   files with what lookups and the lifecycle need (hour, time range, trace-id range, rows,
//!   bytes, CRC32C, spans per policy). Each generation records the highest fencing token that
//!   wrote it. A change ([`Fence::commit`]) reads the newest generation, stops with
//!   [`ArchiveError::LeaseLost`] if a newer token wrote it, applies its change to that (never to
//!   a copy loaded earlier) and creates the next generation.
//!
//! Old generations are deleted behind the newest few; a reader that loses a race with that
//! deletion reads again. An archive written before generations has one manifest per tier at
//! `_tracesift/manifest-v1.json` in the tier itself; it is read as generation 0 until the
//! first change.
//!
//! **Renewal and fencing.** A holder renews on a timer (a third of the TTL) for the whole pass,
//! not only between steps; before every write of data (uploads, copies, deletes) it checks
//! that the lease has not lapsed by its own clock and, if it has, renews first. A compactor
//! paused past its TTL (a stopped container, a long GC) thus finds on waking that someone
//! else holds the lease and stops with "lease lost" before writing. The one window left, a
//! pause between that check and the write it guards, can write a data object, or one manifest
//! generation of a tier the new holder has not stamped yet (harmless: the new holder's stamp
//! reads it, and the paused one's next check fails); compacted outputs are named after their
//! inputs and moves copy-verify-publish-delete, so such a write repeats work. Two compactors
//! must then run with the same merge limits: with different ones, a repeated output of the
//! same name could differ from the listed one.
//!
//! Compactors of versions before catalog generations take `_tracesift/lease.json` and do not
//! see this lease: stop them all before starting this version.
//!
//! The hot tier's manifest lists only its compacted files; hot segments are found by listing
//! the hot tier, which holds recent hours only.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::archive::ArchiveError;

/// Object path of a tier's manifest in archives written before catalog generations (read as
/// generation 0).
pub const MANIFEST_PATH: &str = "_tracesift/manifest-v1.json";
/// Where the lease's generations live (in the catalog store).
pub const LEASE_DIR: &str = "_tracesift/lease";
/// Where each tier's manifest generations live (in the catalog store), one folder per tier.
pub const CATALOG_DIR: &str = "_tracesift/catalog";
/// Generations kept behind the newest one.
const KEEP_GENERATIONS: u64 = 3;
/// How often a change is tried again after losing a race to another writer.
const MAX_RACES: usize = 16;

pub use super::catalog::{FileEntry, Manifest};

fn generation_path(dir: &str, generation: u64) -> Path {
    Path::from(format!("{dir}/g-{generation:020}.json"))
}

fn generation_of(path: &Path) -> Option<u64> {
    path.filename()?
        .strip_prefix("g-")?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

/// The generations under `dir`, oldest first.
async fn generations(store: &Arc<dyn ObjectStore>, dir: &str) -> Result<Vec<u64>, ArchiveError> {
    let prefix = Path::from(dir);
    let listed: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
    let mut out: Vec<u64> = listed
        .iter()
        .filter_map(|o| generation_of(&o.location))
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// The newest generation under `dir` and its bytes (`None`: there is none).
async fn newest(
    store: &Arc<dyn ObjectStore>,
    dir: &str,
) -> Result<Option<(u64, bytes::Bytes)>, ArchiveError> {
    for _ in 0..MAX_RACES {
        let Some(&g) = generations(store, dir).await?.last() else {
            return Ok(None);
        };
        match store.get(&generation_path(dir, g)).await {
            Ok(r) => return Ok(Some((g, r.bytes().await?))),
            // Deleted behind a newer one meanwhile: list again.
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ArchiveError::Verify(format!(
        "{dir}: generations kept changing while being read"
    )))
}

/// Creates generation `g` under `dir` as the newest one; `false` when it did not become the
/// newest: another writer created `g` first, or `g` was a gap left by pruning below newer
/// generations (a writer paused since it read `g - 1`). A write that landed in such a gap is
/// deleted again at once (readers only ever take the newest generation, so it was never seen),
/// so a stale writer leaves nothing behind and can never believe its change took.
async fn create(
    store: &Arc<dyn ObjectStore>,
    dir: &str,
    g: u64,
    body: Vec<u8>,
) -> Result<bool, ArchiveError> {
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    let path = generation_path(dir, g);
    match store.put_opts(&path, PutPayload::from(body), opts).await {
        Ok(_) => {}
        Err(object_store::Error::AlreadyExists { .. })
        | Err(object_store::Error::Precondition { .. }) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    if generations(store, dir).await?.last() == Some(&g) {
        return Ok(true);
    }
    store.delete(&path).await.or_else(not_found_ok)?;
    Ok(false)
}

/// Deletes generations more than [`KEEP_GENERATIONS`] behind `newest` (best effort).
async fn prune(store: &Arc<dyn ObjectStore>, dir: &str, newest: u64) {
    let Ok(all) = generations(store, dir).await else {
        return;
    };
    for g in all.into_iter().filter(|g| *g + KEEP_GENERATIONS < newest) {
        let _ = store.delete(&generation_path(dir, g)).await;
    }
}

fn catalog_dir(tier: &str) -> String {
    format!("{CATALOG_DIR}/{tier}")
}

/// Reads a tier's manifest: the newest generation in the catalog store, else the manifest an
/// older version kept in the tier itself, else an empty one.
pub async fn load(
    catalog: &Arc<dyn ObjectStore>,
    tier_store: &Arc<dyn ObjectStore>,
    tier: &str,
) -> Result<Manifest, ArchiveError> {
    Ok(read(catalog, tier_store, tier).await?.1)
}

/// The newest generation of a tier's manifest and the manifest.
async fn read(
    catalog: &Arc<dyn ObjectStore>,
    tier_store: &Arc<dyn ObjectStore>,
    tier: &str,
) -> Result<(u64, Manifest), ArchiveError> {
    let parse = |bytes: &[u8], what: &str| {
        serde_json::from_slice::<Manifest>(bytes)
            .map_err(|e| ArchiveError::Verify(format!("tier {tier}: {what} does not parse: {e}")))
    };
    if let Some((g, bytes)) = newest(catalog, &catalog_dir(tier)).await? {
        return Ok((g, parse(&bytes, &format!("manifest generation {g}"))?));
    }
    match tier_store.get(&Path::from(MANIFEST_PATH)).await {
        Ok(r) => Ok((0, parse(&r.bytes().await?, MANIFEST_PATH)?)),
        Err(object_store::Error::NotFound { .. }) => Ok((
            0,
            Manifest {
                version: 1,
                tier: tier.to_string(),
                files: BTreeMap::new(),
                fence: 0,
            },
        )),
        Err(e) => Err(e.into()),
    }
}

/// Writes a manifest in the layout of archives written before catalog generations (for tests
/// that build such an archive; nothing else writes it).
pub async fn save_legacy(store: &Arc<dyn ObjectStore>, m: &Manifest) -> Result<(), ArchiveError> {
    let body = serde_json::to_vec_pretty(m)
        .map_err(|e| ArchiveError::Verify(format!("manifest does not serialize: {e}")))?;
    store
        .put(&Path::from(MANIFEST_PATH), PutPayload::from(body))
        .await?;
    Ok(())
}

/// Whether `store` refuses a second create-if-absent write of one object (without that, no
/// lease or manifest change can exclude another writer). Probes with an object of its own.
pub async fn store_is_exclusive(store: &Arc<dyn ObjectStore>) -> Result<bool, ArchiveError> {
    let probe = Path::from(format!("_tracesift/probe-{}", Lease::owner_name()));
    let opts = || PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    let body = || PutPayload::from_static(b"probe");
    store.delete(&probe).await.or_else(not_found_ok)?;
    store.put_opts(&probe, body(), opts()).await?;
    let second = store.put_opts(&probe, body(), opts()).await;
    store.delete(&probe).await.or_else(not_found_ok)?;
    match second {
        Ok(_) => Ok(false),
        Err(object_store::Error::AlreadyExists { .. })
        | Err(object_store::Error::Precondition { .. }) => Ok(true),
        Err(object_store::Error::NotImplemented { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// One generation of the lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Who holds it ([`Lease::owner_name`]).
    pub owner: String,
    /// When it lapses without renewal, Unix ms.
    pub expires_ms: u64,
    /// The fencing token: the generation at which `owner` took the lease.
    #[serde(default)]
    pub token: u64,
    /// Given up: anyone may take it.
    #[serde(default)]
    pub released: bool,
}

impl LeaseRecord {
    fn nobody() -> LeaseRecord {
        LeaseRecord {
            owner: String::new(),
            expires_ms: 0,
            token: 0,
            released: true,
        }
    }
}

/// Outcome of trying to take the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// We hold it, with this fencing token.
    Acquired(u64),
    /// Someone else does.
    HeldBy(LeaseRecord),
}

fn wall_ms() -> u64 {
    use crate::clock::Clock;
    crate::clock::SystemClock::new().wall_nanos() / 1_000_000
}

/// A compactor's claim on the archive, kept in the catalog store.
#[derive(Debug)]
pub struct Lease {
    store: Arc<dyn ObjectStore>,
    owner: String,
    ttl_ms: u64,
    /// Our token while we hold it (0: not held).
    token: AtomicU64,
    /// When our lease lapses by our own clock, Unix ms.
    expires_ms: AtomicU64,
}

impl Lease {
    /// A lease handle for `owner` in the catalog store `store`.
    pub fn new(store: Arc<dyn ObjectStore>, owner: String, ttl: Duration) -> Lease {
        Lease {
            store,
            owner,
            ttl_ms: ttl.as_millis() as u64,
            token: AtomicU64::new(0),
            expires_ms: AtomicU64::new(0),
        }
    }

    /// A fresh owner name, unique per process: host, PID namespace, PID and a random suffix
    /// (two pods that share a host name, or a PID, still differ).
    pub fn owner_name() -> String {
        format!(
            "{}-{}-{}-{:08x}",
            hostname(),
            pid_namespace(),
            std::process::id(),
            rand::random::<u32>()
        )
    }

    /// Who we are.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The newest generation and its record (generation 0 and nobody when there is none).
    pub async fn current(&self) -> Result<(u64, LeaseRecord), ArchiveError> {
        match newest(&self.store, LEASE_DIR).await? {
            // A torn or foreign record counts as a lapsed one.
            Some((g, bytes)) => Ok((
                g,
                serde_json::from_slice(&bytes).unwrap_or_else(|_| LeaseRecord {
                    released: false,
                    ..LeaseRecord::nobody()
                }),
            )),
            None => Ok((0, LeaseRecord::nobody())),
        }
    }

    fn is_ours(&self, r: &LeaseRecord) -> bool {
        !r.released && r.owner == self.owner
    }

    /// Writes generation `g` saying we hold the lease with `token`; `false` if another writer
    /// created `g` first.
    async fn claim(&self, g: u64, token: u64, released: bool) -> Result<bool, ArchiveError> {
        let expires_ms = wall_ms() + self.ttl_ms;
        let r = LeaseRecord {
            owner: self.owner.clone(),
            expires_ms,
            token,
            released,
        };
        let body = serde_json::to_vec(&r)
            .map_err(|e| ArchiveError::Verify(format!("lease does not serialize: {e}")))?;
        if !create(&self.store, LEASE_DIR, g, body).await? {
            return Ok(false);
        }
        if !released {
            self.token.store(token, Ordering::Release);
            self.expires_ms.store(expires_ms, Ordering::Release);
        }
        prune(&self.store, LEASE_DIR, g).await;
        Ok(true)
    }

    /// Takes the lease if it is free, lapsed, released, or its owner was a process on this
    /// host (and PID namespace) that is gone; renews it if it is ours.
    pub async fn acquire(&self) -> Result<LeaseOutcome, ArchiveError> {
        for _ in 0..MAX_RACES {
            let (g, r) = self.current().await?;
            let token = if self.is_ours(&r) {
                r.token
            } else if r.released || r.expires_ms <= wall_ms() || owner_is_dead(&r.owner) {
                g + 1
            } else {
                return Ok(LeaseOutcome::HeldBy(r));
            };
            if self.claim(g + 1, token, false).await? {
                return Ok(LeaseOutcome::Acquired(token));
            }
        }
        Ok(LeaseOutcome::HeldBy(self.current().await?.1))
    }

    /// Extends our lease; [`ArchiveError::LeaseLost`] if someone else took it meanwhile.
    pub async fn renew(&self) -> Result<(), ArchiveError> {
        let mine = self.token.load(Ordering::Acquire);
        for _ in 0..MAX_RACES {
            let (g, r) = self.current().await?;
            if !self.is_ours(&r) || r.token != mine || mine == 0 {
                self.token.store(0, Ordering::Release);
                return Err(ArchiveError::LeaseLost(if r.released {
                    "it was released".into()
                } else {
                    format!("{} holds it now", r.owner)
                }));
            }
            if self.claim(g + 1, mine, false).await? {
                return Ok(());
            }
        }
        Err(ArchiveError::LeaseLost(
            "the lease kept changing while being renewed".into(),
        ))
    }

    /// Gives the lease up, if it is still ours (a new generation: never a delete that could
    /// remove a lease someone else just took).
    pub async fn release(&self) -> Result<(), ArchiveError> {
        let mine = self.token.swap(0, Ordering::AcqRel);
        if mine == 0 {
            return Ok(());
        }
        for _ in 0..MAX_RACES {
            let (g, r) = self.current().await?;
            if !self.is_ours(&r) || r.token != mine {
                // Someone else holds it now: not ours to free.
                return Ok(());
            }
            // Losing this race to a renewal of our own (still ours) means: read and try again.
            if self.claim(g + 1, mine, true).await? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Our fencing token while we hold the lease.
    pub fn token(&self) -> Option<u64> {
        match self.token.load(Ordering::Acquire) {
            0 => None,
            t => Some(t),
        }
    }

    /// Before writing data: the lease must still be ours. Renews first when it lapsed (or is
    /// about to) by our clock, which is what a process paused past its TTL finds on waking.
    pub async fn ensure_held(&self) -> Result<(), ArchiveError> {
        if self.token().is_none() {
            return Err(ArchiveError::LeaseLost("it is not held".into()));
        }
        let margin = self.ttl_ms / 4;
        if wall_ms() + margin >= self.expires_ms.load(Ordering::Acquire) {
            self.renew().await?;
        }
        Ok(())
    }
}

/// What a pass holds while it runs: the lease, renewed on a timer, and the catalog store its
/// manifest changes go to under the lease's token.
pub struct Fence {
    lease: Arc<Lease>,
    lost: Arc<AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
}

impl Drop for Fence {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence")
            .field("owner", &self.lease.owner)
            .field("token", &self.lease.token())
            .finish()
    }
}

impl Fence {
    /// Takes the lease (or says who holds it) and starts renewing it every third of its TTL
    /// until the fence is released or dropped.
    pub async fn acquire(lease: Lease) -> Result<Result<Fence, LeaseRecord>, ArchiveError> {
        if let LeaseOutcome::HeldBy(r) = lease.acquire().await? {
            return Ok(Err(r));
        }
        let lease = Arc::new(lease);
        let lost = Arc::new(AtomicBool::new(false));
        let every = Duration::from_millis((lease.ttl_ms / 3).max(100));
        let renewer = tokio::spawn({
            let lease = Arc::clone(&lease);
            let lost = Arc::clone(&lost);
            async move {
                loop {
                    tokio::time::sleep(every).await;
                    match lease.renew().await {
                        Ok(()) => {}
                        Err(ArchiveError::LeaseLost(why)) => {
                            tracing::warn!(reason = %why, "compactor lease lost; the pass stops before its next write");
                            lost.store(true, Ordering::Release);
                            return;
                        }
                        // A store hiccup: the next tick tries again; writes check the lapse.
                        Err(e) => tracing::warn!(error = %e, "compactor lease not renewed"),
                    }
                }
            }
        });
        Ok(Ok(Fence {
            lease,
            lost,
            renewer,
        }))
    }

    /// The lease.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Before a write of data: [`ArchiveError::LeaseLost`] unless the lease is still ours.
    pub async fn check(&self) -> Result<u64, ArchiveError> {
        if self.lost.load(Ordering::Acquire) {
            return Err(ArchiveError::LeaseLost("the renewal found it taken".into()));
        }
        self.lease.ensure_held().await?;
        self.lease
            .token()
            .ok_or_else(|| ArchiveError::LeaseLost("it is not held".into()))
    }

    /// Applies `change` to the newest manifest of `tier` and writes it as the next generation,
    /// under our token; re-reads and re-applies when another writer got there first. Returns
    /// the manifest as written (or as found, when `change` says it changed nothing).
    pub async fn commit(
        &self,
        tier_store: &Arc<dyn ObjectStore>,
        tier: &str,
        mut change: impl FnMut(&mut Manifest) -> bool,
    ) -> Result<Manifest, ArchiveError> {
        let dir = catalog_dir(tier);
        for _ in 0..MAX_RACES {
            let token = self.check().await?;
            let (g, mut m) = read(&self.lease.store, tier_store, tier).await?;
            if m.fence > token {
                return Err(ArchiveError::LeaseLost(format!(
                    "the {tier} manifest was written under a newer lease (token {} > ours, {token})",
                    m.fence
                )));
            }
            if !change(&mut m) {
                return Ok(m);
            }
            m.fence = token;
            m.tier = tier.to_string();
            let body = serde_json::to_vec_pretty(&m)
                .map_err(|e| ArchiveError::Verify(format!("manifest does not serialize: {e}")))?;
            crate::failpoint::step("manifest-before-write", tier);
            if create(&self.lease.store, &dir, g + 1, body).await? {
                prune(&self.lease.store, &dir, g + 1).await;
                return Ok(m);
            }
        }
        Err(ArchiveError::Verify(format!(
            "the {tier} manifest kept changing while being written"
        )))
    }

    /// Stops renewing and gives the lease up.
    pub async fn release(mut self) -> Result<(), ArchiveError> {
        self.renewer.abort();
        // Stopped before the release is written, so no renewal lands after it.
        let _ = (&mut self.renewer).await;
        self.lease.release().await
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into())
}

/// The inode of this process's PID namespace (`/proc/self/ns/pid`), or 0 where unknown.
fn pid_namespace() -> u64 {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
        })
        .unwrap_or(0)
}

/// Whether `owner` names a process of this host and PID namespace that no longer runs (a
/// compactor that crashed here: its lease need not be waited out). Owners of other hosts or
/// PID namespaces (another pod, even with the same host name) are never judged dead.
fn owner_is_dead(owner: &str) -> bool {
    let mut parts = owner.rsplitn(4, '-');
    let (Some(_), Some(pid), Some(ns), Some(host)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Ok(pid), Ok(ns)) = (pid.parse::<u32>(), ns.parse::<u64>()) else {
        return false;
    };
    ns != 0
        && ns == pid_namespace()
        && host == hostname()
        && pid != std::process::id()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// `Ok(())` for a delete of something already gone.
pub fn not_found_ok(e: object_store::Error) -> Result<(), object_store::Error> {
    match e {
        object_store::Error::NotFound { .. } => Ok(()),
        e => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> Arc<dyn ObjectStore> {
        Arc::new(object_store::memory::InMemory::new())
    }

    fn lease(store: &Arc<dyn ObjectStore>, owner: &str) -> Lease {
        Lease::new(store.clone(), owner.into(), Duration::from_secs(60))
    }

    async fn force(store: &Arc<dyn ObjectStore>, r: &LeaseRecord) {
        let (g, _) = lease(store, "x").current().await.unwrap();
        assert!(
            create(store, LEASE_DIR, g + 1, serde_json::to_vec(r).unwrap())
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_expired_leases_are_taken_over() {
        let store = mem();
        let a = lease(&store, "a");
        let b = lease(&store, "b");
        assert!(store_is_exclusive(&store).await.unwrap());
        let LeaseOutcome::Acquired(ta) = a.acquire().await.unwrap() else {
            panic!("a must get the free lease")
        };
        assert!(matches!(b.acquire().await.unwrap(), LeaseOutcome::HeldBy(r) if r.owner == "a"));
        a.renew().await.unwrap();
        assert_eq!(a.token(), Some(ta), "renewal keeps the token");
        a.release().await.unwrap();
        let LeaseOutcome::Acquired(tb) = b.acquire().await.unwrap() else {
            panic!("b must get the released lease")
        };
        assert!(tb > ta, "a take-over raises the token");
        // b's lease lapses (a record as a paused b would have left it); a takes over.
        force(
            &store,
            &LeaseRecord {
                owner: "b".into(),
                expires_ms: wall_ms() - 1,
                token: tb,
                released: false,
            },
        )
        .await;
        assert!(matches!(a.acquire().await.unwrap(), LeaseOutcome::Acquired(t) if t > tb));
        assert!(
            matches!(b.renew().await, Err(ArchiveError::LeaseLost(_))),
            "b lost its lease and must stop"
        );
        // b's release does not free a's lease.
        b.release().await.unwrap();
        assert!(matches!(b.acquire().await.unwrap(), LeaseOutcome::HeldBy(r) if r.owner == "a"));
        // A lease of a process of this host and PID namespace that is gone is taken over.
        let dead = format!(
            "{}-{}-{}-00000000",
            hostname(),
            pid_namespace(),
            u32::MAX - 1
        );
        force(
            &store,
            &LeaseRecord {
                owner: dead,
                expires_ms: wall_ms() + 60_000,
                token: 99,
                released: false,
            },
        )
        .await;
        assert!(matches!(
            b.acquire().await.unwrap(),
            LeaseOutcome::Acquired(_)
        ));
        // The same host name in another PID namespace (another pod) is not judged dead.
        let other_pod = format!("{}-1-{}-00000000", hostname(), u32::MAX - 1);
        assert!(!owner_is_dead(&other_pod));
        force(
            &store,
            &LeaseRecord {
                owner: other_pod,
                expires_ms: wall_ms() + 60_000,
                token: 100,
                released: false,
            },
        )
        .await;
        assert!(matches!(
            a.acquire().await.unwrap(),
            LeaseOutcome::HeldBy(_)
        ));
        // Old generations are pruned behind each claim.
        let kept = generations(&store, LEASE_DIR).await.unwrap();
        assert!(kept.len() as u64 <= KEEP_GENERATIONS + 2, "{kept:?}");
        assert!(kept[0] > 1, "{kept:?}");
    }

    #[tokio::test]
    async fn two_takers_that_read_the_same_lapsed_lease_cannot_both_win() {
        // Interleaved by hand: both read generation g, then both try to write g + 1.
        let store = mem();
        let a = lease(&store, "a");
        let b = lease(&store, "b");
        let (g, _) = a.current().await.unwrap();
        let (g2, _) = b.current().await.unwrap();
        assert_eq!(g, g2);
        assert!(a.claim(g + 1, g + 1, false).await.unwrap());
        assert!(!b.claim(g + 1, g + 1, false).await.unwrap());
        assert_eq!(b.token(), None);
        assert_eq!(a.current().await.unwrap().1.owner, "a");
    }

    fn entry(rows: u64) -> FileEntry {
        FileEntry {
            hour_start_ms: 0,
            min_start_ns: 1,
            max_start_ns: 2,
            min_trace_id: "00".repeat(16),
            max_trace_id: "7f".repeat(16),
            rows,
            bytes: 100,
            crc32c: 7,
            policies: BTreeMap::from([("errors".to_string(), rows)]),
            adjusted_spans: rows as f64,
            adjusted_by_policy: BTreeMap::from([("errors".to_string(), rows as f64)]),
            replaces: vec![("warm".into(), "spans/v1/x.parquet".into())],
        }
    }

    #[tokio::test]
    async fn manifests_round_trip_start_empty_and_read_the_old_layout() {
        let catalog = mem();
        let tier = mem();
        let m = load(&catalog, &tier, "warm").await.unwrap();
        assert!(m.files.is_empty());
        // An archive of an older version: its manifest in the tier is generation 0.
        let mut old = m.clone();
        old.files.insert("spans/v1/old.parquet".into(), entry(5));
        save_legacy(&tier, &old).await.unwrap();
        assert_eq!(load(&catalog, &tier, "warm").await.unwrap(), old);
        let fence = Fence::acquire(lease(&catalog, "a")).await.unwrap().unwrap();
        let written = fence
            .commit(&tier, "warm", |m| {
                m.files.insert("spans/v2/c.parquet".into(), entry(10));
                true
            })
            .await
            .unwrap();
        let again = load(&catalog, &tier, "warm").await.unwrap();
        assert_eq!(again, written);
        assert_eq!(
            again.files.len(),
            2,
            "the change applies to the old manifest"
        );
        assert_eq!(again.totals(), (200, 15));
        let e = &again.files["spans/v2/c.parquet"];
        assert!(e.may_hold(&[0x10; 16]));
        assert!(!e.may_hold(&[0x80; 16]));
        fence.release().await.unwrap();
    }

    #[tokio::test]
    async fn a_holder_whose_lease_was_taken_cannot_write_a_manifest() {
        // Deterministic interleaving: a reads the manifest, is paused past its lease, b takes
        // the lease and changes the manifest, a wakes and tries to write.
        let catalog = mem();
        let tier = mem();
        let fa = Fence::acquire(Lease::new(
            catalog.clone(),
            "a".into(),
            Duration::from_millis(300),
        ))
        .await
        .unwrap()
        .unwrap();
        fa.commit(&tier, "hot", |m| {
            m.files.insert("spans/v2/one.parquet".into(), entry(1));
            true
        })
        .await
        .unwrap();
        // a is "paused": its renewals stop and its lease lapses.
        fa.renewer.abort();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let fb = Fence::acquire(lease(&catalog, "b")).await.unwrap().unwrap();
        fb.commit(&tier, "hot", |m| {
            m.files.insert("spans/v2/two.parquet".into(), entry(2));
            true
        })
        .await
        .unwrap();
        // a wakes: its write must not happen, and it says why.
        let err = fa
            .commit(&tier, "hot", |m| {
                m.files.clear();
                true
            })
            .await
            .unwrap_err();
        assert!(matches!(err, ArchiveError::LeaseLost(_)), "{err}");
        let m = load(&catalog, &tier, "hot").await.unwrap();
        assert_eq!(m.files.len(), 2, "b's change stands: {m:?}");
        // A commit racing another writer re-reads and re-applies instead of overwriting.
        let (g, _) = read(&catalog, &tier, "hot").await.unwrap();
        let mut stale = load(&catalog, &tier, "hot").await.unwrap();
        stale.files.clear();
        stale.fence = fb.check().await.unwrap();
        assert!(create(
            &catalog,
            &catalog_dir("hot"),
            g + 1,
            serde_json::to_vec(&stale).unwrap()
        )
        .await
        .unwrap());
        let m = fb
            .commit(&tier, "hot", |m| {
                m.files.insert("spans/v2/three.parquet".into(), entry(3));
                true
            })
            .await
            .unwrap();
        assert_eq!(
            m.files.keys().collect::<Vec<_>>(),
            vec!["spans/v2/three.parquet"],
            "the change applied to the newest generation"
        );
        fb.release().await.unwrap();
    }

    #[tokio::test]
    async fn a_release_racing_its_own_renewal_still_frees_the_lease() {
        let store = mem();
        let a = lease(&store, "a");
        let LeaseOutcome::Acquired(t) = a.acquire().await.unwrap() else {
            panic!("free lease")
        };
        // A renewal lands between the release's read and its write: generation g+1 is ours.
        let (g, _) = a.current().await.unwrap();
        assert!(a.claim(g + 1, t, false).await.unwrap());
        a.release().await.unwrap();
        assert!(a.current().await.unwrap().1.released, "the lease is free");
        assert!(matches!(
            lease(&store, "b").acquire().await.unwrap(),
            LeaseOutcome::Acquired(_)
        ));
    }

    #[tokio::test]
    async fn a_write_into_a_pruned_gap_is_not_taken_and_leaves_nothing() {
        // A writer read generation 1, paused; others wrote 2..=6 and pruned 1 and 2. Its create
        // of 2 succeeds on the store, but 2 is not the newest: it must not count, and must go.
        let store = mem();
        for g in 1..=6 {
            assert!(create(&store, LEASE_DIR, g, b"{}".to_vec()).await.unwrap());
        }
        prune(&store, LEASE_DIR, 6).await;
        assert_eq!(
            generations(&store, LEASE_DIR).await.unwrap(),
            vec![3, 4, 5, 6]
        );
        assert!(!create(&store, LEASE_DIR, 2, b"{}".to_vec()).await.unwrap());
        assert_eq!(
            generations(&store, LEASE_DIR).await.unwrap(),
            vec![3, 4, 5, 6]
        );
        // The same for a lease claim: a paused taker does not get the lease.
        let late = lease(&store, "late");
        assert!(!late.claim(2, 2, false).await.unwrap());
        assert_eq!(late.token(), None);
    }

    #[tokio::test]
    async fn a_manifest_written_under_a_newer_token_stops_an_older_holder() {
        // a's clock says its lease is good (clock skew, or a pause between its check and its
        // write), but b took it over and wrote the manifest: the token in the manifest stops a.
        let catalog = mem();
        let tier = mem();
        let fa = Fence::acquire(lease(&catalog, "a")).await.unwrap().unwrap();
        let ta = fa.check().await.unwrap();
        let b = lease(&catalog, "b");
        let (g, _) = b.current().await.unwrap();
        assert!(b.claim(g + 1, g + 1, false).await.unwrap());
        let mut m = load(&catalog, &tier, "warm").await.unwrap();
        m.files.insert("spans/v2/b.parquet".into(), entry(1));
        m.fence = g + 1;
        assert!(ta < m.fence);
        assert!(create(
            &catalog,
            &catalog_dir("warm"),
            1,
            serde_json::to_vec(&m).unwrap()
        )
        .await
        .unwrap());
        let err = fa
            .commit(&tier, "warm", |m| {
                m.files.clear();
                true
            })
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("lease lost") && err.to_string().contains("newer lease"),
            "{err}"
        );
        assert_eq!(load(&catalog, &tier, "warm").await.unwrap(), m);
    }
}
