//! The only place that reads a clock.
//!
//! Logic never calls `Instant::now()` or `SystemTime::now()`: it takes a [`MonoTime`] (process
//! time: timers, ages, latency), a [`StreamTime`] (what the records say: trace waits, TTLs, policy
//! rates) or a wall-clock nanosecond value from a [`Clock`]. The production clock is
//! built on tokio's time, so tests that run on a paused tokio runtime (`start_paused = true`) drive
//! every timer in the pipeline deterministically; the pure cores (store, watermark, sampler) take
//! plain `MonoTime` values and need no runtime at all.

pub mod tokio_clock;

use std::ops::{Add, Sub};
use std::time::Duration;

/// A point on a timeline, as nanoseconds since its origin (8 bytes: a buffered trace holds
/// several); both timelines below share the arithmetic but never mix (a stream time cannot be
/// compared with a process time). ~584 years fit; past that, points saturate.
macro_rules! timeline {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(u64);

        impl $name {
            /// The origin of the timeline.
            pub const ZERO: $name = $name(0);

            /// A point `d` after the origin.
            pub const fn from_duration(d: Duration) -> Self {
                let n = d.as_nanos();
                $name(if n > u64::MAX as u128 { u64::MAX } else { n as u64 })
            }

            /// A point `ms` milliseconds after the origin.
            pub const fn from_millis(ms: u64) -> Self {
                $name(ms.saturating_mul(1_000_000))
            }

            /// Time since the origin.
            pub const fn as_duration(self) -> Duration {
                Duration::from_nanos(self.0)
            }

            /// Milliseconds since the origin.
            pub fn as_millis(self) -> u64 {
                self.0 / 1_000_000
            }

            /// `self - earlier`, or zero when `earlier` is later.
            pub fn saturating_since(self, earlier: $name) -> Duration {
                Duration::from_nanos(self.0.saturating_sub(earlier.0))
            }
        }

        impl Add<Duration> for $name {
            type Output = $name;
            fn add(self, rhs: Duration) -> $name {
                $name(self.0.saturating_add($name::from_duration(rhs).0))
            }
        }

        impl Sub<$name> for $name {
            type Output = Duration;
            fn sub(self, rhs: $name) -> Duration {
                self.saturating_since(rhs)
            }
        }
    };
}

timeline! {
    /// A point on the process's monotonic timeline (a [`Clock`]'s `now`): timers, ages, latency.
    MonoTime
}

timeline! {
    /// A point in a partition's stream time: Unix time as the records read so far tell it
    /// (see `pipeline/stream_time.rs`). Trace waits, decision-cache TTLs and policy rates run on
    /// it; it is never the process's clock.
    StreamTime
}

/// A source of time. Cheap to clone and share.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic time, for timers and ages.
    fn now(&self) -> MonoTime;
    /// Wall-clock time in nanoseconds since the Unix epoch, for data (file names, partitions).
    fn wall_nanos(&self) -> u64;
}

/// The clock of blocking command-line work (no tokio runtime): `std`'s monotonic clock and the
/// system wall clock.
#[derive(Debug, Clone)]
pub struct SystemClock {
    origin: std::time::Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        SystemClock {
            origin: std::time::Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> MonoTime {
        MonoTime::from_duration(self.origin.elapsed())
    }

    fn wall_nanos(&self) -> u64 {
        system_wall_nanos()
    }
}

pub(crate) fn system_wall_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let a = MonoTime::from_millis(10);
        let b = MonoTime::from_millis(30);
        assert_eq!(a - b, Duration::ZERO);
        assert_eq!(b - a, Duration::from_millis(20));
        assert_eq!(a + Duration::from_millis(5), MonoTime::from_millis(15));
    }
}
