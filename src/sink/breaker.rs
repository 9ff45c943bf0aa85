//! A circuit breaker per sink: after `FAILURES` consecutive failed writes, or half or more of the
//! writes of the last `RATE_WINDOW` failed (at least `RATE_MIN_WRITES` of them), the sink is *open* and
//! no writer tries it until `OPEN_FOR` has passed; then one write probes (*half-open*): its
//! success closes the breaker, its failure opens it again. Writers that find it open wait
//! instead of retrying on their own, so a downstream that is down sees one probe every few
//! seconds, not thousands of retries (the seed's avalanche case). Nothing is dropped: the writes
//! wait, their partitions stop reading at the pending-write budget, and they all go out once the
//! probe succeeds. Each transition is logged and the state is a metric
//! (`tracesift_sink_breaker_state{sink}`: 0 closed, 1 half-open, 2 open).
//!
//! [`BreakerCore`] is the state machine (plain values, tested without time); [`Breaker`] wraps
//! it with a clock and the waiting.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::{Clock, MonoTime};
use crate::telemetry::{self, SinkLabel};

/// Consecutive failures that open a breaker.
pub const FAILURES: u32 = 5;
/// How long a breaker stays open before a probe.
pub const OPEN_FOR: Duration = Duration::from_secs(5);
/// How often writers waiting on a half-open breaker look again.
const PROBE_POLL: Duration = Duration::from_millis(100);
/// The error-rate rule: over the writes finished in the last `RATE_WINDOW` (at least
/// `RATE_MIN_WRITES` of them), a failed share of `RATE_OPEN` or more opens the breaker even
/// without `FAILURES` in a row (a downstream failing every other write).
pub const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Writes the error-rate rule needs in its window before it judges.
pub const RATE_MIN_WRITES: usize = 20;
/// The failed share that opens the breaker.
pub const RATE_OPEN: f64 = 0.5;
/// Outcomes kept for the rule (the oldest go first beyond this).
const RATE_KEEP: usize = 256;
/// A probe that has not finished by then (its writer was cancelled, or the write hangs) no
/// longer holds the others back: the next writer probes too.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// The state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Writes go through.
    Closed,
    /// One probe write is out, since then.
    HalfOpen(MonoTime),
    /// No writes until the time given.
    Open(MonoTime),
}

impl State {
    /// The metric's value.
    pub fn gauge(self) -> f64 {
        match self {
            State::Closed => 0.0,
            State::HalfOpen(_) => 1.0,
            State::Open(_) => 2.0,
        }
    }
}

/// What a writer may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Write (as the probe, when the breaker was open).
    Go,
    /// Wait until then and ask again.
    WaitUntil(MonoTime),
}

/// The breaker's state machine.
#[derive(Debug, Clone)]
pub struct BreakerCore {
    state: State,
    failures: u32,
    /// (finished at, ok) of recent writes, for the error-rate rule.
    recent: std::collections::VecDeque<(MonoTime, bool)>,
}

impl Default for BreakerCore {
    fn default() -> Self {
        BreakerCore {
            state: State::Closed,
            failures: 0,
            recent: std::collections::VecDeque::new(),
        }
    }
}

impl BreakerCore {
    /// The state now.
    pub fn state(&self) -> State {
        self.state
    }

    /// May a write start at `now`? An open breaker past its time turns half-open and this
    /// caller is its probe.
    pub fn admit(&mut self, now: MonoTime) -> (Admit, Option<State>) {
        match self.state {
            State::Closed => (Admit::Go, None),
            State::Open(until) if now >= until => {
                self.state = State::HalfOpen(now);
                (Admit::Go, Some(self.state))
            }
            State::Open(until) => (Admit::WaitUntil(until), None),
            State::HalfOpen(since) if now.saturating_since(since) >= PROBE_TIMEOUT => {
                self.state = State::HalfOpen(now);
                (Admit::Go, None)
            }
            State::HalfOpen(_) => (Admit::WaitUntil(now + PROBE_POLL), None),
        }
    }

    /// A write finished at `now`; returns the new state when it changed.
    pub fn finished(&mut self, ok: bool, now: MonoTime) -> Option<State> {
        let before = self.state;
        if self.recent.len() >= RATE_KEEP {
            self.recent.pop_front();
        }
        self.recent.push_back((now, ok));
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.saturating_since(*t) > RATE_WINDOW)
        {
            self.recent.pop_front();
        }
        if ok {
            self.failures = 0;
            if matches!(self.state, State::HalfOpen(_)) {
                // Recovered: judge the rate afresh.
                self.recent.clear();
            }
            self.state = State::Closed;
        } else {
            self.failures = self.failures.saturating_add(1);
            if matches!(self.state, State::HalfOpen(_))
                || self.failures >= FAILURES
                || self.rate_exceeded()
            {
                if !matches!(self.state, State::Open(_)) {
                    self.recent.clear();
                }
                self.state = State::Open(now + OPEN_FOR);
            }
        }
        let changed = match (before, self.state) {
            (State::Open(_), State::Open(_)) | (State::HalfOpen(_), State::HalfOpen(_)) => false,
            (a, b) => a != b,
        };
        changed.then_some(self.state)
    }
}

impl BreakerCore {
    fn rate_exceeded(&self) -> bool {
        let n = self.recent.len();
        let failed = self.recent.iter().filter(|(_, ok)| !ok).count();
        n >= RATE_MIN_WRITES && failed as f64 >= RATE_OPEN * n as f64
    }
}

/// A sink's breaker, shared by every writer of that sink in the process: made once, by whoever
/// owns the sink's process-wide part (the producer for Kafka topics, [`super::SinkSet`] for hot
/// Parquet, the exporter for OTLP), and reached through it.
pub struct Breaker {
    label: SinkLabel,
    core: Mutex<BreakerCore>,
    clock: Arc<dyn Clock>,
}

impl Breaker {
    /// A closed breaker for `label`.
    pub fn new(label: SinkLabel, clock: Arc<dyn Clock>) -> Self {
        telemetry::breaker_state(label, State::Closed.gauge());
        Breaker {
            label,
            core: Mutex::new(BreakerCore::default()),
            clock,
        }
    }

    /// The state now.
    pub fn state(&self) -> State {
        self.core.lock().map_or(State::Closed, |c| c.state())
    }

    /// The sink it guards.
    pub fn label(&self) -> SinkLabel {
        self.label
    }

    /// True while writes go through (closed); open or probing: false.
    pub fn is_closed(&self) -> bool {
        self.state() == State::Closed
    }

    /// True when a write would have to wait (open, or half-open with its probe out): a
    /// best-effort writer gives up instead.
    pub fn would_wait(&self) -> bool {
        let now = self.clock.now();
        match self.state() {
            State::Closed => false,
            State::Open(until) => now < until,
            State::HalfOpen(since) => now.saturating_since(since) < PROBE_TIMEOUT,
        }
    }

    /// Waits until a write may start.
    pub async fn permit(&self) {
        loop {
            let now = self.clock.now();
            let (admit, changed) = match self.core.lock() {
                Ok(mut c) => c.admit(now),
                Err(_) => return,
            };
            if let Some(s) = changed {
                self.transition(s);
            }
            match admit {
                Admit::Go => return,
                Admit::WaitUntil(t) => tokio::time::sleep(t.saturating_since(now)).await,
            }
        }
    }

    /// A write finished (a refusal for good is the record's fault, not the sink's: not counted).
    pub fn finished(&self, ok: bool) {
        let now = self.clock.now();
        let changed = match self.core.lock() {
            Ok(mut c) => c.finished(ok, now),
            Err(_) => None,
        };
        if let Some(s) = changed {
            self.transition(s);
        }
    }

    fn transition(&self, s: State) {
        telemetry::breaker_state(self.label, s.gauge());
        let sink = self.label.as_str();
        match s {
            State::Closed => tracing::info!(sink, "circuit closed: the sink accepts writes again"),
            State::HalfOpen(_) => {
                tracing::info!(sink, "circuit half-open: probing the sink with one write")
            }
            State::Open(_) => tracing::warn!(
                sink,
                failures = FAILURES,
                open_for_s = OPEN_FOR.as_secs(),
                "circuit open: the sink keeps failing; writes wait for a probe instead of retrying"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> MonoTime {
        MonoTime::from_millis(ms)
    }

    #[test]
    fn opens_after_consecutive_failures_probes_and_closes() {
        let mut b = BreakerCore::default();
        for i in 0..FAILURES - 1 {
            assert_eq!(b.finished(false, at(i as u64)), None);
            assert_eq!(b.admit(at(i as u64)).0, Admit::Go);
        }
        // A success in between resets the count.
        assert_eq!(b.finished(true, at(10)), None);
        for _ in 0..FAILURES - 1 {
            b.finished(false, at(20));
        }
        let opened = b.finished(false, at(20));
        let until = at(20) + OPEN_FOR;
        assert_eq!(opened, Some(State::Open(until)));
        assert_eq!(b.admit(at(21)), (Admit::WaitUntil(until), None));
        // Past the open time: one probe goes, the others wait for it.
        assert_eq!(b.admit(until), (Admit::Go, Some(State::HalfOpen(until))));
        assert!(matches!(b.admit(until).0, Admit::WaitUntil(_)));
        // A probe that never reports (its writer was cancelled) stops holding the others back.
        assert_eq!(b.admit(until + PROBE_TIMEOUT).0, Admit::Go);
        // The probe fails: open again at once (not after FAILURES more).
        let t = until + PROBE_TIMEOUT;
        let again = b.finished(false, t);
        assert_eq!(again, Some(State::Open(t + OPEN_FOR)));
        assert_eq!(
            b.admit(t + OPEN_FOR),
            (Admit::Go, Some(State::HalfOpen(t + OPEN_FOR)))
        );
        assert_eq!(b.finished(true, t + OPEN_FOR), Some(State::Closed));
        assert_eq!(b.admit(t + OPEN_FOR).0, Admit::Go);
    }

    #[test]
    fn a_high_error_rate_opens_it_without_consecutive_failures() {
        let mut b = BreakerCore::default();
        // Every other write fails: never FAILURES in a row.
        let mut opened = None;
        for i in 0..RATE_MIN_WRITES as u64 {
            let t = at(i * 100);
            if let Some(s) = b.finished(i % 2 == 0, t) {
                opened = Some((i, s));
                break;
            }
        }
        assert!(opened.is_some(), "opened by the error rate");
        let (i, s) = opened.unwrap_or((u64::MAX, State::Closed));
        assert_eq!(
            i,
            RATE_MIN_WRITES as u64 - 1,
            "judged once the window has enough writes"
        );
        assert!(matches!(s, State::Open(_)));
        // A healthy mix (1 in 5 failing) does not open it.
        let mut b = BreakerCore::default();
        for i in 0..200u64 {
            assert_eq!(b.finished(i % 5 != 0, at(i * 100)), None, "write {i}");
        }
        // Old outcomes leave the window: failures spread thinly over time do not add up.
        let mut b = BreakerCore::default();
        for i in 0..100u64 {
            let t = at(i * 2_000);
            assert_eq!(b.finished(i % 2 == 0, t), None, "write {i}");
        }
    }

    #[test]
    fn late_failures_keep_it_open_without_a_new_transition() {
        let mut b = BreakerCore::default();
        for _ in 0..FAILURES {
            b.finished(false, at(0));
        }
        // Failures of writes that were in flight when it opened: still open, nothing logged.
        assert_eq!(b.finished(false, at(100)), None);
        assert!(matches!(b.state(), State::Open(_)));
    }
}
