//! Per-tier catalogs and the compactor lease.
//!
//! **Manifest.** Each tier keeps one small JSON object, `_tracesift/manifest-v1.json`, listing
//! its compacted files with what lookups and the lifecycle need: hour, time range, trace-id range,
//! rows, bytes, CRC32C and spans per policy. Lookups, moves, retention and `tracesift cost` read
//! it instead of listing a bucket. Only the lease holder writes manifests; a write replaces the
//! whole object (a single PUT, atomic on every object store).
//!
//! The hot tier's manifest lists only its compacted files; hot segments are found by listing the
//! hot tier, which holds recent hours only.
//!
//! **Lease.** `_tracesift/lease.json` in the hot tier names the compactor doing a pass and when
//! its claim expires. It is created with a create-if-absent PUT; an expired lease is taken over
//! by deleting it and creating it again, then reading it back; a lease whose owner was a process on this
//! host that no longer exists (a crashed compactor) is taken over at once. Two compactors that
//! race through a takeover at the same instant can both run a pass; that costs work, not data: compacted files
//! are named after their inputs, moves are copy-verify-publish-delete, and every step tolerates
//! finding its work already done.

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::archive::ArchiveError;

/// Object path of a tier's manifest.
pub const MANIFEST_PATH: &str = "_tracesift/manifest-v1.json";
/// Object path of the compactor lease (in the hot tier).
pub const LEASE_PATH: &str = "_tracesift/lease.json";

pub use super::catalog::{FileEntry, Manifest};

/// Reads a tier's manifest (an absent manifest is an empty one).
pub async fn load(store: &Arc<dyn ObjectStore>, tier: &str) -> Result<Manifest, ArchiveError> {
    match store.get(&Path::from(MANIFEST_PATH)).await {
        Ok(r) => {
            let bytes = r.bytes().await?;
            let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
                ArchiveError::Verify(format!("tier {tier}: {MANIFEST_PATH} does not parse: {e}"))
            })?;
            Ok(m)
        }
        Err(object_store::Error::NotFound { .. }) => Ok(Manifest {
            version: 1,
            tier: tier.to_string(),
            files: BTreeMap::new(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Writes a tier's manifest.
pub async fn save(store: &Arc<dyn ObjectStore>, m: &Manifest) -> Result<(), ArchiveError> {
    let body = serde_json::to_vec_pretty(m)
        .map_err(|e| ArchiveError::Verify(format!("manifest does not serialize: {e}")))?;
    store
        .put(&Path::from(MANIFEST_PATH), PutPayload::from(body))
        .await?;
    Ok(())
}

/// The lease object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Who holds it (host, pid and a random suffix).
    pub owner: String,
    /// When it lapses without renewal, Unix ms.
    pub expires_ms: u64,
}

/// Outcome of trying to take the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// We hold it.
    Acquired,
    /// Someone else does, until the given Unix ms.
    HeldBy(LeaseRecord),
}

/// A compactor's claim on the archive.
#[derive(Debug, Clone)]
pub struct Lease {
    store: Arc<dyn ObjectStore>,
    owner: String,
    ttl_ms: u64,
}

fn wall_ms() -> u64 {
    use crate::clock::Clock;
    crate::clock::SystemClock::new().wall_nanos() / 1_000_000
}

impl Lease {
    /// A lease handle for `owner` in the hot tier's `store`.
    pub fn new(store: Arc<dyn ObjectStore>, owner: String, ttl: std::time::Duration) -> Lease {
        Lease {
            store,
            owner,
            ttl_ms: ttl.as_millis() as u64,
        }
    }

    /// A fresh owner name: host, pid and a random suffix.
    pub fn owner_name() -> String {
        format!(
            "{}-{}-{:08x}",
            hostname(),
            std::process::id(),
            rand::random::<u32>()
        )
    }

    fn record(&self) -> Result<PutPayload, ArchiveError> {
        let r = LeaseRecord {
            owner: self.owner.clone(),
            expires_ms: wall_ms() + self.ttl_ms,
        };
        serde_json::to_vec(&r)
            .map(PutPayload::from)
            .map_err(|e| ArchiveError::Verify(format!("lease does not serialize: {e}")))
    }

    async fn read(&self) -> Result<Option<LeaseRecord>, ArchiveError> {
        match self.store.get(&Path::from(LEASE_PATH)).await {
            Ok(r) => {
                let bytes = r.bytes().await?;
                // A torn or foreign lease object counts as expired.
                Ok(Some(serde_json::from_slice(&bytes).unwrap_or(
                    LeaseRecord {
                        owner: String::new(),
                        expires_ms: 0,
                    },
                )))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn create(&self) -> Result<bool, ArchiveError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&Path::from(LEASE_PATH), self.record()?, opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the store refuses a second create-if-absent write of one object (without that,
    /// a lease cannot exclude anyone). Probes with an object of its own.
    pub async fn store_is_exclusive(&self) -> Result<bool, ArchiveError> {
        let probe = Path::from(format!("_tracesift/probe-{}", self.owner));
        let opts = || PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let body = || PutPayload::from_static(b"probe");
        self.store.delete(&probe).await.or_else(not_found_ok)?;
        self.store.put_opts(&probe, body(), opts()).await?;
        let second = self.store.put_opts(&probe, body(), opts()).await;
        self.store.delete(&probe).await.or_else(not_found_ok)?;
        match second {
            Ok(_) => Ok(false),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(true),
            Err(object_store::Error::NotImplemented { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Takes the lease if it is free, expired or already ours (renewing it).
    pub async fn acquire(&self) -> Result<LeaseOutcome, ArchiveError> {
        if self.create().await? {
            return self.confirm().await;
        }
        match self.read().await? {
            None => {
                if self.create().await? {
                    self.confirm().await
                } else {
                    self.held().await
                }
            }
            Some(r)
                if r.owner == self.owner
                    || r.expires_ms <= wall_ms()
                    || owner_is_dead(&r.owner) =>
            {
                self.store
                    .delete(&Path::from(LEASE_PATH))
                    .await
                    .or_else(not_found_ok)?;
                if self.create().await? {
                    self.confirm().await
                } else {
                    self.held().await
                }
            }
            Some(r) => Ok(LeaseOutcome::HeldBy(r)),
        }
    }

    async fn held(&self) -> Result<LeaseOutcome, ArchiveError> {
        Ok(LeaseOutcome::HeldBy(self.read().await?.unwrap_or(
            LeaseRecord {
                owner: String::new(),
                expires_ms: 0,
            },
        )))
    }

    async fn confirm(&self) -> Result<LeaseOutcome, ArchiveError> {
        match self.read().await? {
            Some(r) if r.owner == self.owner => Ok(LeaseOutcome::Acquired),
            Some(r) => Ok(LeaseOutcome::HeldBy(r)),
            None => Ok(LeaseOutcome::HeldBy(LeaseRecord {
                owner: String::new(),
                expires_ms: 0,
            })),
        }
    }

    /// Extends our lease; an error if someone else took it meanwhile (the pass must stop).
    pub async fn renew(&self) -> Result<(), ArchiveError> {
        match self.acquire().await? {
            LeaseOutcome::Acquired => Ok(()),
            LeaseOutcome::HeldBy(r) => Err(ArchiveError::Verify(format!(
                "lease lost to {} during the pass; stopping",
                r.owner
            ))),
        }
    }

    /// Gives the lease up (if it is still ours).
    pub async fn release(&self) -> Result<(), ArchiveError> {
        if let Some(r) = self.read().await? {
            if r.owner == self.owner {
                self.store
                    .delete(&Path::from(LEASE_PATH))
                    .await
                    .or_else(not_found_ok)?;
            }
        }
        Ok(())
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into())
}

/// Whether `owner` names a process on this host that no longer runs (a compactor that crashed
/// here: its lease need not be waited out).
fn owner_is_dead(owner: &str) -> bool {
    let mut parts = owner.rsplitn(3, '-');
    let (Some(_), Some(pid), Some(host)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    host == hostname()
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

    #[tokio::test]
    async fn one_holder_at_a_time_and_expired_leases_are_taken_over() {
        let store = mem();
        let a = Lease::new(
            store.clone(),
            "a".into(),
            std::time::Duration::from_secs(60),
        );
        let b = Lease::new(
            store.clone(),
            "b".into(),
            std::time::Duration::from_secs(60),
        );
        assert!(a.store_is_exclusive().await.unwrap());
        assert_eq!(a.acquire().await.unwrap(), LeaseOutcome::Acquired);
        assert!(matches!(b.acquire().await.unwrap(), LeaseOutcome::HeldBy(r) if r.owner == "a"));
        a.renew().await.unwrap();
        a.release().await.unwrap();
        assert_eq!(b.acquire().await.unwrap(), LeaseOutcome::Acquired);
        // b crashes; its lease lapses; a takes over.
        let lapsed = LeaseRecord {
            owner: "b".into(),
            expires_ms: wall_ms() - 1,
        };
        store
            .put(
                &Path::from(LEASE_PATH),
                PutPayload::from(serde_json::to_vec(&lapsed).unwrap()),
            )
            .await
            .unwrap();
        assert_eq!(a.acquire().await.unwrap(), LeaseOutcome::Acquired);
        assert!(b.renew().await.is_err(), "b lost its lease and must stop");
        // A lease of a process of this host that is gone is taken over before it expires.
        let dead = LeaseRecord {
            owner: format!("{}-{}-00000000", hostname(), u32::MAX - 1),
            expires_ms: wall_ms() + 60_000,
        };
        store
            .put(
                &Path::from(LEASE_PATH),
                PutPayload::from(serde_json::to_vec(&dead).unwrap()),
            )
            .await
            .unwrap();
        assert_eq!(b.acquire().await.unwrap(), LeaseOutcome::Acquired);
        // A live one on another host is not.
        let other = LeaseRecord {
            owner: "elsewhere-1-00000000".into(),
            expires_ms: wall_ms() + 60_000,
        };
        store
            .put(
                &Path::from(LEASE_PATH),
                PutPayload::from(serde_json::to_vec(&other).unwrap()),
            )
            .await
            .unwrap();
        assert!(matches!(
            a.acquire().await.unwrap(),
            LeaseOutcome::HeldBy(_)
        ));
    }

    #[tokio::test]
    async fn manifests_round_trip_and_start_empty() {
        let store = mem();
        let mut m = load(&store, "warm").await.unwrap();
        assert!(m.files.is_empty());
        m.files.insert(
            "spans/v1/date=2026-01-01/hour=00/c.parquet".into(),
            FileEntry {
                hour_start_ms: 0,
                min_start_ns: 1,
                max_start_ns: 2,
                min_trace_id: "00".repeat(16),
                max_trace_id: "7f".repeat(16),
                rows: 10,
                bytes: 100,
                crc32c: 7,
                policies: BTreeMap::from([("errors".to_string(), 10)]),
                adjusted_spans: 10.0,
                adjusted_by_policy: BTreeMap::from([("errors".to_string(), 10.0)]),
                replaces: vec![("warm".into(), "spans/v1/x.parquet".into())],
            },
        );
        save(&store, &m).await.unwrap();
        let again = load(&store, "warm").await.unwrap();
        assert_eq!(again, m);
        let e = again.files.values().next().unwrap();
        assert!(e.may_hold(&[0x10; 16]));
        assert!(!e.may_hold(&[0x80; 16]));
        assert_eq!(again.totals(), (100, 10));
    }
}
