//! Stream time: the clock a partition's trace waits run on.
//!
//! `decision_wait`, `decision_wait_after_root`, `max_trace_age` and the decision cache's TTLs
//! count on this clock, not on how long the process has been waiting. It advances with what the
//! partition has *read*, so a partition that is paused, stalled, frozen or catching up does not
//! decide a trace before it has reached the records its missing spans are in:
//!
//! - **Reading:** each record moves stream time forward to its timestamp (Kafka's `CreateTime`
//!   from the producer, or `LogAppendTime` when the topic sets it). Stream time never moves
//!   backwards, so a record stamped earlier than one already read changes nothing.
//! - **Caught up:** when the partition has reached the log end (librdkafka reported the end of
//!   the partition after the last record handed over) and its queue is empty, there is nothing
//!   more to read, and stream time advances with the wall clock, by at most one `tick` per tick.
//!   The cap makes a process that was frozen (SIGSTOP, CPU starvation, a long GC-like pause) or
//!   whose end-of-partition flag is stale resume at the pace of its ticks rather than jump: the
//!   next fetch shows it is behind, and from there records drive the clock again.
//! - **Paused for the budget** (`on_overflow: pause`, store over budget): nothing more can be
//!   read until something is decided, so the wall clock moves stream time as at the log end.
//! - **Producer clocks.** A record stamped later than this process's wall clock counts as
//!   stamped *now*: a producer whose clock runs ahead cannot push stream time past the real
//!   present, so it cannot decide traces early while the partition is live. A producer whose
//!   clock runs behind never moves stream time (it is the latest timestamp that counts); its
//!   spans are read in log order like any other. While caught up the wall clock moves stream
//!   time, so no trace waits longer than its configured wait (in wall time) plus the tick.
//!   Bound while catching up on a backlog: a producer whose clock ran ahead by S when it wrote
//!   can make traces buffered at that point be decided up to S early in the producers' time;
//!   live, the wall-clock clamp bounds this to the partition's lag.
//!
//! Because it depends only on the records (and, at the log end, on waits that are over in
//! every reading), reading the same partition again decides the same traces on the same spans,
//! however fast or slow the reading: replay is deterministic for repeatable policies.
//!
//! The timeline is Unix milliseconds, carried as a [`StreamTime`] (time since the epoch), so
//! decisions logged with their stream time are comparable across processes; the wall clock's
//! ticks come in as the process's [`MonoTime`].

use std::time::Duration;

use crate::clock::{MonoTime, StreamTime};

/// The arrival time a record is filed and judged by (the archive's filing hour, span-time
/// plausibility): its Kafka timestamp when that lies within [`wall_ms` − 7 d, `wall_ms` + 1 h]
/// (the same window span times are held to), else the wall clock when it was read. The second
/// value is true when the timestamp was replaced (missing, ≤ 0, from another era or from the
/// future), so that a record stamped in 2000 is not filed where retention deletes it at once and
/// one stamped next year is not filed where compaction never reaches it.
pub fn filing_arrival(timestamp_ms: Option<i64>, wall_ms: u64) -> (u64, bool) {
    const PAST_MS: u64 = crate::otlp::TIME_PAST_NS / 1_000_000;
    const FUTURE_MS: u64 = crate::otlp::TIME_FUTURE_NS / 1_000_000;
    let ts = timestamp_ms
        .and_then(|t| u64::try_from(t).ok())
        .unwrap_or(0);
    if wall_ms == 0 {
        return (ts, false);
    }
    let plausible = ts > 0 && ts >= wall_ms.saturating_sub(PAST_MS) && ts <= wall_ms + FUTURE_MS;
    match plausible {
        true => (ts, false),
        false => (wall_ms, true),
    }
}

/// One partition's stream clock.
#[derive(Debug, Clone)]
pub struct StreamClock {
    /// Stream time, Unix ms; `None` before the first record.
    now_ms: Option<u64>,
    /// The wall clock (monotonic) at the last caught-up advance.
    last_wall: Option<MonoTime>,
    /// The largest wall-clock step one tick may add.
    max_step: Duration,
}

impl StreamClock {
    /// A clock that starts at the first record; `max_step` is the store's tick.
    pub fn new(max_step: Duration) -> Self {
        StreamClock {
            now_ms: None,
            last_wall: None,
            max_step,
        }
    }

    /// A record stamped `timestamp_ms` (`None` when it carries none) was read at `wall_ms`.
    pub fn on_record(&mut self, timestamp_ms: Option<i64>, wall_ms: u64) {
        let ts = timestamp_ms
            .and_then(|t| u64::try_from(t).ok())
            .filter(|t| *t > 0)
            .map_or(wall_ms, |t| t.min(wall_ms));
        self.now_ms = Some(self.now_ms.map_or(ts, |n| n.max(ts)));
        // The wall-clock advance restarts from here: reading is not idling.
        self.last_wall = None;
    }

    /// A tick at `wall` (monotonic); `caught_up` when the partition is at the log end with an
    /// empty queue.
    pub fn on_tick(&mut self, wall: MonoTime, caught_up: bool) {
        if !caught_up {
            self.last_wall = None;
            return;
        }
        let Some(now) = self.now_ms else {
            return;
        };
        if let Some(last) = self.last_wall {
            let step = wall.saturating_since(last).min(self.max_step);
            self.now_ms = Some(now.saturating_add(step.as_millis() as u64));
        }
        self.last_wall = Some(wall);
    }

    /// Stream time, or `None` before the first record.
    pub fn now(&self) -> Option<StreamTime> {
        self.now_ms.map(StreamTime::from_millis)
    }

    /// Stream time in Unix ms (0 before the first record).
    pub fn now_ms(&self) -> u64 {
        self.now_ms.unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_760_000_000_000;

    fn wall(ms: u64) -> MonoTime {
        MonoTime::from_millis(ms)
    }

    #[test]
    fn filing_uses_the_stamp_only_within_the_plausible_window() {
        const DAY: i64 = 86_400_000;
        let now = T as i64;
        assert_eq!(
            filing_arrival(Some(now - DAY), T),
            ((now - DAY) as u64, false)
        );
        assert_eq!(
            filing_arrival(Some(now + 3_000_000), T),
            (T + 3_000_000, false)
        );
        for implausible in [
            Some(946_684_800_000), // 2000-01-01
            Some(0),
            Some(-5),
            None,
            Some(now - 8 * DAY),
            Some(now + 365 * DAY), // next year
            Some(now + 3_600_001),
        ] {
            assert_eq!(filing_arrival(implausible, T), (T, true), "{implausible:?}");
        }
        assert_eq!(
            filing_arrival(Some(5), 0),
            (5, false),
            "no wall clock: kept"
        );
    }

    #[test]
    fn records_drive_it_and_it_never_goes_back() {
        let mut c = StreamClock::new(Duration::from_millis(100));
        assert_eq!(c.now(), None);
        c.on_record(Some(T as i64), T + 50);
        assert_eq!(c.now_ms(), T);
        c.on_record(Some(T as i64 - 5_000), T + 60);
        assert_eq!(c.now_ms(), T, "an earlier stamp changes nothing");
        c.on_record(Some(T as i64 + 40), T + 70);
        assert_eq!(c.now_ms(), T + 40);
    }

    #[test]
    fn a_stamp_from_the_future_counts_as_now() {
        let mut c = StreamClock::new(Duration::from_millis(100));
        c.on_record(Some(T as i64 + 10_000), T);
        assert_eq!(c.now_ms(), T);
        c.on_record(None, T + 5);
        assert_eq!(c.now_ms(), T + 5, "no timestamp: read time");
        c.on_record(Some(-1), T + 6);
        assert_eq!(c.now_ms(), T + 6);
    }

    #[test]
    fn it_stands_still_while_behind_and_follows_the_wall_clock_when_caught_up() {
        let mut c = StreamClock::new(Duration::from_millis(100));
        c.on_record(Some(T as i64), T);
        for i in 1..=50 {
            c.on_tick(wall(i * 100), false);
        }
        assert_eq!(
            c.now_ms(),
            T,
            "behind the log end: no wall-clock time counts"
        );
        for i in 51..=60 {
            c.on_tick(wall(i * 100), true);
        }
        // The first caught-up tick only marks the start.
        assert_eq!(c.now_ms(), T + 900);
    }

    #[test]
    fn a_frozen_process_resumes_one_step_at_a_time() {
        let mut c = StreamClock::new(Duration::from_millis(100));
        c.on_record(Some(T as i64), T);
        c.on_tick(wall(0), true);
        c.on_tick(wall(100), true);
        assert_eq!(c.now_ms(), T + 100);
        // Six seconds frozen: the next tick adds one step, not six seconds.
        c.on_tick(wall(6_100), true);
        assert_eq!(c.now_ms(), T + 200);
        // A record resets the idle advance.
        c.on_record(Some(T as i64 + 150), T + 6_200);
        c.on_tick(wall(6_300), true);
        assert_eq!(c.now_ms(), T + 200);
        c.on_tick(wall(6_400), true);
        assert_eq!(c.now_ms(), T + 300);
    }
}
