//! The production clock on tokio's time (pausable in tests), kept apart so the pure modules that
//! use [`MonoTime`](super::MonoTime) never reach the runtime.

use super::{system_wall_nanos, Clock, MonoTime};

/// The production clock: tokio's monotonic time (pausable in tests) plus the system wall clock
/// offset taken once at construction, so wall time advances with tokio time too.
#[derive(Debug, Clone)]
pub struct TokioClock {
    origin: tokio::time::Instant,
    wall_origin_nanos: u64,
}

impl TokioClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        let wall_origin_nanos = system_wall_nanos();
        TokioClock {
            origin: tokio::time::Instant::now(),
            wall_origin_nanos,
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> MonoTime {
        MonoTime::from_duration(self.origin.elapsed())
    }

    fn wall_nanos(&self) -> u64 {
        let since = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.wall_origin_nanos.saturating_add(since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = TokioClock::new();
        let t0 = clock.now();
        let w0 = clock.wall_nanos();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(clock.now() - t0, Duration::from_secs(5));
        assert_eq!(clock.wall_nanos() - w0, 5_000_000_000);
    }
}
