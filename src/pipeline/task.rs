//! The imperative shell around one partition's [`PartitionCore`]: a tokio task.
//!
//! It takes records from the partition's bounded queue and ticks from a timer, passes them to
//! the core with the time from the injected [`Clock`](crate::clock::Clock), turns the core's
//! [`Effect`]s into writes (each sink's `Sink::accept`, dead letters, decision-log records)
//! pushed into the partition's bounded `Acks`, and feeds every completed write back to the
//! core. It publishes the core's commit point to the source's commit board.
//!
//! It stops on `Control::Drain` (revoke or shutdown): no more input, buffered segments
//! written, every pending write awaited, then the final commit point is returned. Undecided
//! traces are not decided early: their offsets are not committed, and the next owner replays
//! them.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::clock::MonoTime;
use crate::config::OnOverflow;
use crate::sample::Sampler;
use crate::sink::{Acks, DeadLetter, Sink};
use crate::source::record::Record;
use crate::store::StoreLimits;
use crate::telemetry::{self, PartitionGauges};

use super::core::{CoreSettings, Effect, PartitionCore};
use super::Shared;
use crate::source::queue::{Control, Inbox};

/// Pending writes per partition before input stops.
const MAX_PENDING_WRITES: usize = 20_000;

/// The first wait before a failed decision-log restore is tried again; it doubles to
/// [`RESTORE_RETRY_MAX`].
const RESTORE_RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
/// The longest wait between two restore attempts.
const RESTORE_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// What `/readyz` says while a partition's restore fails (`why` empty: the prefix, to clear it).
fn restore_fault(partition: i32, why: &str) -> String {
    format!("partition {partition}: decision log unreadable: {why}")
}

/// Answers a drain that came before the partition read anything: nothing to commit.
fn drained(cmd: Option<Control>) {
    if let Some(Control::Drain { reply }) = cmd {
        let _ = reply.send(None);
    }
}

/// How long a partition may hold its pending-write budget before readiness goes down.
const STUCK_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// The owner of one partition's state and writes.
pub struct PartitionTask {
    topic: Arc<str>,
    partition: i32,
    shared: Shared,
    core: PartitionCore,
    sinks: Vec<Box<dyn Sink>>,
    acks: Acks,
    /// Since when the pending writes have been at their budget.
    full_since: Option<MonoTime>,
    /// A required sink's circuit is open: the partition reads nothing until it closes.
    sink_open: bool,
    /// (offset, fetched) of records sampled every [`LAG_SAMPLE_EVERY`], for the commit-lag
    /// histogram; at most [`LAG_SAMPLES`].
    lag_samples: std::collections::VecDeque<(i64, MonoTime)>,
    effects: Vec<Effect>,
    /// Decision-cache (hits, misses) already published.
    published_lookups: (u64, u64),
    /// The span-metrics position last written to the decision log.
    logged_position: Option<i64>,
    policies_generation: u64,
    /// Fault injection for the shutdown tests: this partition's sink writes never complete.
    writes_hang: bool,
    /// Holds readiness down from the task's creation until its decisions are restored.
    restore_pending: Option<crate::telemetry::RestoreGuard>,
}

/// How often a record's fetch time is kept for the commit-lag histogram.
const LAG_SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// Most fetch times kept (about 7 minutes of uncommitted records at one per 100 ms; beyond
/// that, until commits catch up, records are not sampled).
const LAG_SAMPLES: usize = 4096;

impl PartitionTask {
    /// A task for `topic`/`partition` writing to `sinks`.
    pub fn new(topic: Arc<str>, partition: i32, shared: Shared, sinks: Vec<Box<dyn Sink>>) -> Self {
        let (policies_generation, sampler, policy_names) = shared.policies.load();
        let cfg = &shared.config;
        let logs_decisions = shared.outputs.logs_decisions();
        let settings = CoreSettings {
            limits: StoreLimits::from(&cfg.store),
            sinks: sinks.len() as u32,
            decision_log: logs_decisions,
            commit_interval: cfg.kafka.commit_interval,
            tick: cfg.store.tick,
            tally: false,
            max_record_bytes: cfg.kafka.max_record_bytes.0 as usize,
            span_metrics: crate::telemetry::span_metrics::installed(),
        };
        let core = PartitionCore::new(
            Arc::clone(&topic),
            partition,
            settings,
            sampler,
            policy_names,
            Arc::clone(&shared.stats),
        );
        PartitionTask {
            published_lookups: (0, 0),
            logged_position: None,
            policies_generation,
            writes_hang: crate::failpoint::sink_hangs(partition),
            restore_pending: logs_decisions.then(|| shared.health.restoring()),
            topic,
            partition,
            core,
            sinks,
            acks: Acks::new(MAX_PENDING_WRITES, cfg.sinks.max_pending_bytes.0),
            full_since: None,
            sink_open: false,
            lag_samples: std::collections::VecDeque::new(),
            effects: Vec::new(),
            shared,
        }
    }

    /// Runs until drained. `input` closing is not an end: the source sends `Drain`.
    pub async fn run(mut self, mut input: Inbox, mut control: mpsc::Receiver<Control>) {
        if !self.restore_decisions(&mut control).await {
            return;
        }
        let tick = self.shared.config.store.tick;
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut input_open = true;
        loop {
            let pause_for_budget = self.shared.config.store.on_overflow == OnOverflow::Pause
                && self.core.over_budget();
            let can_read =
                input_open && !pause_for_budget && !self.sink_open && !self.acks.is_full();
            tokio::select! {
                biased;
                cmd = control.recv() => {
                    let reply = cmd.map(|Control::Drain { reply }| reply);
                    let point = self.drain().await;
                    if let Some(reply) = reply {
                        let _ = reply.send(point);
                    }
                    return;
                }
                released = self.acks.next() => self.core.acked(&released),
                rec = input.recv(), if can_read => match rec {
                    Some(rec) => {
                        // The clocks are read once per record: the wall clock once per drained
                        // batch (the stream clock's clamp and the filing time of implausible
                        // timestamps are then early by at most the batch's few ms), and where one
                        // record's decode ends the next one's starts.
                        let wall = self.wall_ms();
                        let mut at = self.ingest(rec, wall, self.shared.clock.now());
                        // Drain whatever else is queued without yielding to the timer each time.
                        let mut budget = 64;
                        while budget > 0 && !self.acks.is_full() {
                            match input.try_recv() {
                                Some(rec) => at = self.ingest(rec, wall, at),
                                None => break,
                            }
                            budget -= 1;
                        }
                    }
                    None => input_open = false,
                },
                // Nothing more can be read while paused for the budget, so (as at the log end)
                // the wall clock moves stream time: `pause` trades completeness for memory.
                _ = ticker.tick() => self.tick(input.depth(), input.caught_up() || pause_for_budget),
            }
        }
    }

    fn wall_ms(&self) -> u64 {
        self.shared.clock.wall_nanos() / 1_000_000
    }

    /// Reads one record, taken off the queue at `taken` (wall clock `wall`, Unix ms), through
    /// the core and carries out its effects; returns when it was done (the next record's
    /// `taken`).
    pub fn ingest(&mut self, rec: Record, wall: u64, taken: MonoTime) -> MonoTime {
        if rec.fetched != MonoTime::ZERO {
            self.core
                .histograms()
                .queue_wait(taken.saturating_since(rec.fetched));
            let due = self
                .lag_samples
                .back()
                .is_none_or(|(_, t)| rec.fetched.saturating_since(*t) >= LAG_SAMPLE_EVERY);
            if due && self.lag_samples.len() < LAG_SAMPLES {
                self.lag_samples.push_back((rec.offset, rec.fetched));
            }
        }
        let mut effects = std::mem::take(&mut self.effects);
        self.core.ingest(rec, wall, &mut effects);
        let done = self.shared.clock.now();
        self.core.histograms().decoded(done.saturating_since(taken));
        let applied = !effects.is_empty();
        self.apply(&mut effects);
        self.effects = effects;
        if applied {
            self.shared.clock.now()
        } else {
            done
        }
    }

    /// Decides due traces, flushes sinks by age, publishes the commit point and gauges.
    pub fn tick(&mut self, (queued, queued_bytes): (usize, usize), caught_up: bool) {
        let now = self.shared.clock.now();
        if self.shared.policies.generation() != self.policies_generation {
            self.switch_policies();
        }
        let mut effects = std::mem::take(&mut self.effects);
        self.core.tick(now, caught_up, &mut effects);
        self.apply(&mut effects);
        self.effects = effects;
        for s in &mut self.sinks {
            s.tick(now, &mut self.acks);
        }
        self.watch_pending(now);
        let Some(periodic) = self.core.periodic(now) else {
            return;
        };
        self.log_position();
        if let Some(point) = periodic.commit {
            while let Some(&(offset, fetched)) = self.lag_samples.front() {
                if offset >= point {
                    break;
                }
                telemetry::commit_lag(now.saturating_since(fetched));
                self.lag_samples.pop_front();
            }
            self.shared.commits.insert(
                crate::source::flow::PartitionKey::new(&self.topic, self.partition),
                point,
            );
        }
        self.publish_gauges(queued, queued_bytes);
    }

    /// Readiness follows the sinks: a partition that has held its pending-write budget (or
    /// count) for [`STUCK_AFTER`] is not reading because a downstream does not keep up, and
    /// `/readyz` says so (liveness stays up: a restart would not help).
    fn watch_pending(&mut self, now: MonoTime) {
        // A required sink whose circuit is not closed (open, or half-open with its probe out)
        // holds the partition: nothing more is read until it has recovered (its pending writes
        // wait for the probe), and readiness says which sink.
        self.sink_open = false;
        for s in &self.sinks {
            let label = s.label();
            if !s.healthy() {
                self.sink_open |= s.required();
                self.shared.health.fault_seen(
                    now.as_duration().as_millis() as u64,
                    format!(
                        "sink {}: circuit open (writes keep failing; probing)",
                        label.as_str()
                    ),
                );
            }
        }
        if !self.acks.is_full() {
            self.full_since = None;
            return;
        }
        let since = *self.full_since.get_or_insert(now);
        if now.saturating_since(since) >= STUCK_AFTER {
            self.shared.health.fault_seen(
                now.as_duration().as_millis() as u64,
                format!(
                    "sink writes stuck: {}/{} has held its pending-write budget for {} s ({} writes, {} bytes pending); a downstream is down or too slow",
                    self.topic,
                    self.partition,
                    now.saturating_since(since).as_secs(),
                    self.acks.len(),
                    self.acks.bytes()
                ),
            );
        }
    }

    fn publish_gauges(&mut self, queued: usize, queued_bytes: usize) {
        let g = self.core.gauges();
        let st = g.store;
        telemetry::partition_gauges(
            &self.topic,
            self.partition,
            PartitionGauges {
                traces: st.traces,
                bytes: st.bytes,
                queued,
                queued_bytes,
                pending_acks: self.acks.len(),
                pending_bytes: self.acks.bytes(),
                cached_kept: st.cached_kept,
                cached_dropped: st.cached_dropped,
                heap: st.heap.parts(),
                contexts: st.contexts,
                resource_cache_bytes: g.resource_cache_bytes,
                new_hits: st.cache_hits - self.published_lookups.0,
                new_misses: st.cache_misses - self.published_lookups.1,
            },
        );
        self.published_lookups = (st.cache_hits, st.cache_misses);
    }

    /// Turns effects into writes; each write resolves to the offsets the core gave it.
    fn apply(&mut self, effects: &mut Vec<Effect>) {
        // The decisions of this step, and the offsets each one releases.
        let (mut log, mut log_offsets) = (Vec::new(), Vec::new());
        for effect in effects.drain(..) {
            match effect {
                Effect::Emit(_) if self.writes_hang => {
                    for _ in &self.sinks {
                        self.acks.push(Box::pin(std::future::pending()));
                    }
                }
                Effect::Emit(kept) => {
                    for s in &mut self.sinks {
                        s.accept(&kept, &mut self.acks);
                    }
                }
                Effect::DeadLetter {
                    offset,
                    key,
                    headers,
                    payload,
                    error,
                } => {
                    let held = payload.len() as u64;
                    self.acks.push_sized(
                        self.shared.outputs.dead_letter(
                            payload,
                            DeadLetter {
                                topic: self.topic.to_string(),
                                partition: self.partition,
                                offset,
                                error,
                                key,
                                headers,
                            },
                        ),
                        held,
                    )
                }
                Effect::LogDecision {
                    trace_id,
                    decided,
                    offsets,
                } => {
                    if !self.shared.outputs.logs_decisions() {
                        // The core only logs when the log is on; resolve rather than wedge.
                        self.core.acked(&offsets);
                        continue;
                    }
                    log.push((trace_id, decided));
                    log_offsets.push(offsets);
                }
            }
        }
        // Every decision of this step in one record (a flood decided at once: a few), each
        // record releasing the offsets of its own decisions: one produce, one report.
        let per = crate::pipeline::decision_log::MAX_DECISIONS_PER_RECORD;
        for (chunk, offsets) in log.chunks(per).zip(log_offsets.chunks(per)) {
            self.acks.push(self.shared.outputs.log_decisions(
                self.partition,
                chunk,
                offsets.concat(),
            ));
        }
    }

    /// Restores the decision cache from the decision log before the partition is consumed,
    /// and fails closed: an attempt that errors or stalls is never taken as a (partial)
    /// success. Until one succeeds the partition reads nothing (its queue fills and the source
    /// pauses it), `/readyz` names it (`partition P: decision log unreadable: …`), each failed
    /// attempt counts in `tracesift_decision_restore_failures_total`, and the read is tried
    /// again after 1 s, doubling to 30 s. A drain (revoke, shutdown) ends the wait: the
    /// partition read nothing, so it has nothing to commit. Returns false then.
    async fn restore_decisions(&mut self, control: &mut mpsc::Receiver<Control>) -> bool {
        if !self.shared.outputs.logs_decisions() {
            return true;
        }
        let topic = Arc::clone(&self.topic);
        // Taken when the task was made (in the assignment callback, before the group reports
        // ready), so readiness never shows up between assignment and restore.
        let _not_ready = self.restore_pending.take();
        let partition = self.partition;
        let mut wait = RESTORE_RETRY_FIRST;
        loop {
            let dc = &self.shared.config.store.decision_cache;
            let max_age = dc.sampled_ttl.max(dc.non_sampled_ttl);
            let now_ms = self.wall_ms();
            let started = self.shared.clock.now();
            let read = self
                .shared
                .outputs
                .restore(&self.topic, partition, now_ms, max_age);
            let result = tokio::select! {
                r = read => r,
                cmd = control.recv() => {
                    drained(cmd);
                    return false;
                }
            };
            let why = match result {
                Ok(restored) => {
                    let n = restored.decisions.len();
                    self.core.restore(restored.decisions);
                    if let Some(p) = restored.counted_through {
                        self.core.set_counted_through(p);
                    }
                    telemetry::decisions_restored(n as u64);
                    let elapsed = self.shared.clock.now() - started;
                    telemetry::restore_finished(elapsed, true);
                    self.shared
                        .health
                        .clear_fault(&restore_fault(partition, ""));
                    let elapsed_ms = elapsed.as_millis() as u64;
                    tracing::info!(topic = %self.topic, partition, decisions = n, elapsed_ms, "decision cache restored");
                    return true;
                }
                Err(e) => e.to_string(),
            };
            telemetry::restore_finished(self.shared.clock.now() - started, false);
            let fault = restore_fault(partition, &why);
            self.shared.health.fault_seen(
                self.shared.clock.now().as_duration().as_millis() as u64,
                fault.clone(),
            );
            tracing::error!(%topic, partition, error = %why, retry_in_ms = wait.as_millis() as u64, "cannot restore the partition's decisions; it is not consumed until they are restored");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                cmd = control.recv() => {
                    drained(cmd);
                    return false;
                }
            }
            wait = (wait * 2).min(RESTORE_RETRY_MAX);
        }
    }

    /// Takes the policies now in force.
    fn switch_policies(&mut self) {
        let (generation, sampler, names): (u64, Arc<Sampler>, _) = self.shared.policies.load();
        self.core.switch_policies(sampler, names);
        tracing::info!(topic = %self.topic, partition = self.partition, generation, traces = self.core.buffered(), "policies switched");
        self.policies_generation = generation;
    }

    /// With span metrics on, tells the decision log how far this owner has counted (when it
    /// moved), so the next owner of the partition counts only what no one counted.
    fn log_position(&mut self) {
        let Some(p) = self.core.read_position() else {
            return;
        };
        if !self.core.counts_spans()
            || !self.shared.outputs.logs_decisions()
            || self.logged_position >= Some(p)
        {
            return;
        }
        self.logged_position = Some(p);
        self.acks
            .push(self.shared.outputs.log_position(self.partition, p));
    }

    /// Writes out buffered segments and waits for every pending write; returns the commit point.
    async fn drain(&mut self) -> Option<i64> {
        self.log_position();
        for s in &mut self.sinks {
            s.flush(&mut self.acks);
        }
        while !self.acks.is_empty() {
            let released = self.acks.next().await;
            self.core.acked(&released);
        }
        for s in &mut self.sinks {
            s.close().await;
        }
        self.core.commit_point()
    }
}

#[cfg(test)]
mod tests {
    //! The task on tokio's paused clock with fake sinks and outputs: no broker, no store.

    use crate::pipeline::outputs::RestoredDecisions;
    use std::collections::{HashMap, VecDeque};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    use tokio::sync::{oneshot, Semaphore};

    use super::*;
    use crate::clock::tokio_clock::TokioClock;
    use crate::clock::Clock;
    use crate::config::Config;
    use crate::otlp::TraceId;
    use crate::pipeline::core::tests::{record, span};
    use crate::pipeline::core::Decided;
    use crate::pipeline::decision_log::RestoreError;
    use crate::pipeline::outputs::{Outputs, RestoreFuture};
    use crate::pipeline::{Policies, RunStats};
    use crate::sink::{AckFuture, BestEffort, KeptTrace, MakeSinks, Write};
    use crate::source::queue::{partition_queue, CommitBoard, QueueTx};
    use crate::telemetry::{Health, SinkLabel};

    const CONFIG: &str = "
policies: [{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}]
store: {decision_wait: 1s, tick: 100ms}
kafka: {commit_interval: 100ms}
sinks: {max_pending_bytes: 4MiB, parquet: {enabled: false}}
archive: {hot: {max_segment_bytes: 1MiB}}
";

    /// A sink whose writes finish when the test gives `gate` permits (closing it finishes them
    /// all), and whose circuit the test opens and closes.
    struct FakeSink {
        seen: Arc<Mutex<Vec<TraceId>>>,
        gate: Arc<Semaphore>,
        healthy: Arc<AtomicBool>,
    }

    impl Sink for FakeSink {
        fn accept(&mut self, t: &KeptTrace, acks: &mut Acks) {
            self.seen.lock().unwrap().push(t.trace_id);
            let (offsets, gate) = (t.offsets.to_vec(), Arc::clone(&self.gate));
            acks.push_write(Write {
                bytes: 1 << 20,
                spans: t.spans.len(),
                fut: Box::pin(async move {
                    if let Ok(p) = gate.acquire().await {
                        p.forget();
                    }
                    offsets
                }),
            });
        }
        fn label(&self) -> SinkLabel {
            SinkLabel::Kafka
        }
        fn required(&self) -> bool {
            true
        }
        fn healthy(&self) -> bool {
            self.healthy.load(Ordering::Relaxed)
        }
    }

    /// The test's handles on a [`FakeSink`].
    #[derive(Clone)]
    struct SinkHandles {
        seen: Arc<Mutex<Vec<TraceId>>>,
        gate: Arc<Semaphore>,
        healthy: Arc<AtomicBool>,
    }

    impl SinkHandles {
        fn new() -> Self {
            SinkHandles {
                seen: Arc::default(),
                gate: Arc::new(Semaphore::new(0)),
                healthy: Arc::new(AtomicBool::new(true)),
            }
        }
        fn sink(&self) -> FakeSink {
            FakeSink {
                seen: Arc::clone(&self.seen),
                gate: Arc::clone(&self.gate),
                healthy: Arc::clone(&self.healthy),
            }
        }
        /// Every write finishes at once from now on.
        fn ack_all(&self) {
            self.gate.close();
        }
        fn seen(&self) -> Vec<u8> {
            self.seen.lock().unwrap().iter().map(|t| t.0[0]).collect()
        }
    }

    /// Dead letters and log records resolve at once; restores answer from a script.
    #[derive(Default)]
    struct FakeOutputs {
        logs: bool,
        restores: Mutex<VecDeque<Result<RestoredDecisions, RestoreError>>>,
        logged: Mutex<Vec<(TraceId, Decided)>>,
    }

    impl Outputs for FakeOutputs {
        fn dead_letter(&self, _payload: bytes::Bytes, from: DeadLetter) -> AckFuture {
            Box::pin(std::future::ready(vec![from.offset]))
        }
        fn logs_decisions(&self) -> bool {
            self.logs
        }
        fn log_decisions(
            &self,
            _partition: i32,
            decisions: &[(TraceId, Decided)],
            offsets: Vec<i64>,
        ) -> AckFuture {
            self.logged.lock().unwrap().extend_from_slice(decisions);
            Box::pin(std::future::ready(offsets))
        }
        fn restore(
            &self,
            _topic: &Arc<str>,
            _partition: i32,
            _now_ms: u64,
            _max_age: Duration,
        ) -> RestoreFuture {
            let next = self.restores.lock().unwrap().pop_front();
            Box::pin(std::future::ready(
                next.unwrap_or_else(|| Ok(RestoredDecisions::default())),
            ))
        }
    }

    struct NoSinks;

    impl MakeSinks for NoSinks {
        fn for_partition(&self, _topic: &Arc<str>, _partition: i32) -> Vec<Box<dyn Sink>> {
            Vec::new()
        }
    }

    /// A running task and the test's ends of its queue, control and commit board.
    struct Run {
        tx: QueueTx,
        control: mpsc::Sender<Control>,
        task: tokio::task::JoinHandle<()>,
        health: Health,
        commits: CommitBoard,
        clock: TokioClock,
    }

    fn start(outputs: FakeOutputs, sinks: Vec<Box<dyn Sink>>) -> Run {
        let config = Config::parse(CONFIG).unwrap();
        let sampler = Sampler::from_config(&config).unwrap();
        let names = config.policy_names();
        let health = Health::default();
        health.set_ready(true);
        let clock = TokioClock::new();
        let shared = Shared {
            config: Arc::new(config),
            policies: Arc::new(Policies::new(sampler, &names)),
            health: health.clone(),
            sinks: Arc::new(NoSinks),
            outputs: Arc::new(outputs),
            clock: Arc::new(clock.clone()),
            stats: Arc::new(RunStats::new()),
            commits: CommitBoard::default(),
        };
        let (tx, inbox) = partition_queue(10_000, 64 << 20);
        let (control, rx) = mpsc::channel(1);
        let commits = Arc::clone(&shared.commits);
        let task = PartitionTask::new(Arc::from("in"), 0, shared, sinks);
        Run {
            tx,
            control,
            task: tokio::spawn(task.run(inbox, rx)),
            health,
            commits,
            clock,
        }
    }

    impl Run {
        /// Queues one span of trace `trace` at `offset` (an error keeps the trace) and marks
        /// the log's end reached.
        fn send(&self, offset: i64, trace: u8, error: bool) {
            let mut r = record(offset, vec![span(trace, offset as u64 + 1, error)]);
            r.timestamp_ms = Some((self.clock.wall_nanos() / 1_000_000) as i64);
            self.tx.try_send(r).unwrap();
            self.tx.reached_end();
        }

        fn committed(&self) -> Option<i64> {
            let key = crate::source::flow::PartitionKey::new(&Arc::from("in"), 0);
            self.commits.get(&key).map(|p| *p)
        }

        /// Asks for a drain; the reply comes once pending writes are done.
        async fn drain(&self) -> oneshot::Receiver<Option<i64>> {
            let (reply, rx) = oneshot::channel();
            self.control.send(Control::Drain { reply }).await.unwrap();
            rx
        }
    }

    async fn sleep_s(s: u64) {
        tokio::time::sleep(Duration::from_secs(s)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_sink_that_never_acks_stops_input_at_the_budget_and_readiness_says_so() {
        let h = SinkHandles::new();
        let run = start(FakeOutputs::default(), vec![Box::new(h.sink())]);
        for t in 0..6u8 {
            run.send(t.into(), t + 1, true);
        }
        sleep_s(5).await;
        assert_eq!(h.seen(), vec![1, 2, 3, 4, 5, 6], "decided and handed over");
        // 6 MiB pending against a 4 MiB budget: nothing more is read.
        for t in 6..10u8 {
            run.send(t.into(), t + 1, true);
        }
        sleep_s(10).await;
        assert_eq!(
            h.seen().len(),
            6,
            "no record read while the writes hold the budget"
        );
        assert_eq!(
            run.committed().unwrap_or(0),
            0,
            "nothing committed past an unacked write"
        );
        assert!(
            run.health.fault().is_none(),
            "not stuck yet: {:?}",
            run.health.fault()
        );
        sleep_s(30).await;
        let fault = run.health.fault().unwrap_or_default();
        assert!(fault.contains("sink writes stuck: in/0"), "{fault}");
        assert!(!run.health.is_ready());
        h.ack_all();
        sleep_s(5).await;
        assert_eq!(h.seen(), (1..=10).collect::<Vec<_>>(), "reading resumed");
        assert_eq!(run.committed(), Some(10));
        assert_eq!(run.drain().await.await.unwrap(), Some(10));
        run.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_required_sink_with_its_circuit_open_holds_input_and_is_named() {
        let h = SinkHandles::new();
        h.ack_all();
        h.healthy.store(false, Ordering::Relaxed);
        let run = start(FakeOutputs::default(), vec![Box::new(h.sink())]);
        sleep_s(1).await;
        for t in 0..3u8 {
            run.send(t.into(), t + 1, true);
        }
        sleep_s(10).await;
        assert!(
            h.seen().is_empty(),
            "nothing read while the circuit is open"
        );
        let fault = run.health.fault().unwrap_or_default();
        assert!(fault.contains("sink kafka: circuit open"), "{fault}");
        h.healthy.store(true, Ordering::Relaxed);
        sleep_s(5).await;
        assert_eq!(h.seen(), vec![1, 2, 3]);
        assert_eq!(run.committed(), Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_best_effort_sink_that_never_acks_does_not_hold_the_commit() {
        let h = SinkHandles::new();
        let sink = BestEffort::new(h.sink(), 64 << 20);
        let run = start(FakeOutputs::default(), vec![Box::new(sink)]);
        for t in 0..3u8 {
            run.send(t.into(), t + 1, true);
        }
        sleep_s(5).await;
        assert_eq!(h.seen(), vec![1, 2, 3]);
        assert_eq!(run.committed(), Some(3), "committed without the writes");
        // The drain gives the detached writes their grace, then cancels them.
        assert_eq!(run.drain().await.await.unwrap(), Some(3));
        run.task.await.unwrap();
        assert_eq!(h.gate.available_permits(), 0, "the writes never finished");
    }

    #[tokio::test(start_paused = true)]
    async fn a_revoke_mid_write_waits_for_the_write_and_commits_what_it_covered() {
        let h = SinkHandles::new();
        let run = start(FakeOutputs::default(), vec![Box::new(h.sink())]);
        run.send(0, 1, true);
        run.send(1, 2, false);
        run.send(2, 3, true);
        sleep_s(5).await;
        assert_eq!(h.seen(), vec![1, 3]);
        let mut reply = run.drain().await;
        sleep_s(10).await;
        assert!(
            reply.try_recv().is_err(),
            "the drain waits for the pending writes"
        );
        assert!(!run.task.is_finished());
        h.gate.add_permits(1);
        sleep_s(1).await;
        assert!(reply.try_recv().is_err(), "one write of two done");
        h.gate.add_permits(1);
        assert_eq!(reply.await.unwrap(), Some(3));
        run.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_restore_fails_closed_then_its_decisions_hold_for_late_spans() {
        let h = SinkHandles::new();
        h.ack_all();
        let kept = TraceId([7; 16]);
        let decided_at_ms = TokioClock::new().wall_nanos() / 1_000_000;
        let outputs = FakeOutputs {
            logs: true,
            restores: Mutex::new(VecDeque::from([
                Err(RestoreError::Task("the log is unreachable".into())),
                Ok(RestoredDecisions {
                    decisions: HashMap::from([(
                        kept,
                        Decided {
                            keep: true,
                            threshold: crate::otlp::threshold::Threshold::ALWAYS,
                            decided_at_ms,
                            policy: "errors".into(),
                        },
                    )]),
                    counted_through: None,
                }),
            ])),
            ..Default::default()
        };
        let run = start(outputs, vec![Box::new(h.sink())]);
        run.send(0, 7, false);
        run.send(1, 8, false);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !run.health.is_ready(),
            "not ready before a restore succeeded"
        );
        let fault = run.health.fault().unwrap_or_default();
        assert!(
            fault.contains("partition 0: decision log unreadable: the restore task failed"),
            "{fault}"
        );
        assert!(h.seen().is_empty(), "nothing consumed before the restore");
        sleep_s(5).await;
        assert!(run.health.is_ready(), "{:?}", run.health.fault());
        // Trace 7's span has no error, yet the restored keep holds; trace 8 is decided afresh.
        assert_eq!(h.seen(), vec![7]);
        assert_eq!(run.committed(), Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_tick_storm_after_a_stall_decides_once_and_commits() {
        let h = SinkHandles::new();
        h.ack_all();
        let run = start(FakeOutputs::default(), vec![Box::new(h.sink())]);
        sleep_s(1).await;
        run.send(0, 1, true);
        // An hour of ticks missed at once (a stalled process, a suspended VM).
        tokio::time::advance(Duration::from_secs(3_600)).await;
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        sleep_s(2).await;
        assert_eq!(h.seen(), vec![1], "decided once");
        assert_eq!(run.committed(), Some(1));
        // An hour of idle ticks changes nothing.
        sleep_s(3_600).await;
        assert_eq!(h.seen(), vec![1]);
        assert_eq!(run.committed(), Some(1));
        assert!(run.health.fault().is_none());
    }
}
