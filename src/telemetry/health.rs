//! Liveness and readiness as the pipeline reports them and `/readyz` reads them: ready when
//! partitions are assigned, no decision cache is being restored and no fault holds it down.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Readiness shared between the pipeline and the health endpoint.
#[derive(Debug, Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
    /// Partitions whose decision cache is being restored from the decision log.
    restoring: Arc<std::sync::atomic::AtomicUsize>,
    /// A fault that holds readiness down, with when it was last seen (monotonic ms) and why.
    fault: Arc<std::sync::Mutex<Option<(u64, String)>>>,
}

/// A fault holds readiness down until it has not been seen for this long.
pub const FAULT_HOLD_MS: u64 = 60_000;

impl Health {
    /// Marks ready or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// True when ready: partitions assigned, no decision cache being restored, no fault.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && self.restoring.load(Ordering::Acquire) == 0
            && self.fault().is_none()
    }

    /// Records a fault seen at `now_ms` (monotonic): readiness stays down until it has not been
    /// seen for [`FAULT_HOLD_MS`].
    pub fn fault_seen(&self, now_ms: u64, why: impl Into<String>) {
        if let Ok(mut f) = self.fault.lock() {
            *f = Some((now_ms, why.into()));
        }
    }

    /// Clears a fault last seen [`FAULT_HOLD_MS`] or more before `now_ms`.
    pub fn expire_fault(&self, now_ms: u64) {
        if let Ok(mut f) = self.fault.lock() {
            if f.as_ref()
                .is_some_and(|(at, _)| now_ms.saturating_sub(*at) >= FAULT_HOLD_MS)
            {
                *f = None;
            }
        }
    }

    /// Clears the fault now held if its text starts with `prefix` (what it was about is
    /// resolved); another fault stays.
    pub fn clear_fault(&self, prefix: &str) {
        if let Ok(mut f) = self.fault.lock() {
            if f.as_ref().is_some_and(|(_, why)| why.starts_with(prefix)) {
                *f = None;
            }
        }
    }

    /// The fault holding readiness down, if any.
    pub fn fault(&self) -> Option<String> {
        self.fault
            .lock()
            .ok()
            .and_then(|f| f.as_ref().map(|(_, why)| why.clone()))
    }

    /// Marks one partition's restore as running until the guard is dropped.
    pub fn restoring(&self) -> RestoreGuard {
        self.restoring.fetch_add(1, Ordering::AcqRel);
        RestoreGuard(Arc::clone(&self.restoring))
    }
}

/// Holds readiness down while a partition restores its decisions.
#[derive(Debug)]
pub struct RestoreGuard(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for RestoreGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
