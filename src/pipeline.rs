//! The stages wired together for one owned partition.
//!
//! A [`PartitionTask`] is the single owner of a partition's state: its trace store, offset
//! watermark, sinks and pending writes. It runs as one tokio task fed by the source through a
//! bounded channel, so nothing on the hot path takes a lock. Per record it decodes (lazily), buffers
//! the spans, answers late spans from the decision cache, and sends unreadable records to the
//! dead-letter topic; per tick it decides due traces, hands kept ones to every sink, releases the
//! offsets of dropped ones, flushes segments by age, and publishes the new commit point.
//!
//! It stops on [`Control::Drain`] (revoke or shutdown): no more input, buffered segments written,
//! every pending write awaited, then the final commit point is returned. Undecided traces are not
//! decided early: their offsets are not committed, and the next owner replays them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::producer::FutureProducer;
use tokio::sync::{mpsc, oneshot};

use crate::clock::{Clock, MonoTime};
use crate::config::{Config, Encoding, OnOverflow};
use crate::otlp::{self, ScannedSpan, SpanRef, TraceId};
use crate::sample::{Decision, Sampler};
use crate::sink::{self, Acks, DeadLetter, KeptTrace, Sink};
use crate::source::watermark::Watermark;
use crate::store::{Admit, DueTrace, StoreLimits, TraceMap, TraceStore};
use crate::telemetry::{self, Outcome, PartitionGauges};

/// One input record, as the source hands it over.
#[derive(Debug, Clone)]
pub struct Record {
    /// Offset in its partition.
    pub offset: i64,
    /// Key, if any.
    pub key: Option<Bytes>,
    /// Value; `None` for a tombstone.
    pub payload: Option<Bytes>,
    /// Encoding (from the `content-type` header, else the configured one).
    pub encoding: Encoding,
}

impl Record {
    /// Bytes this record holds in a queue.
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Bytes::len) + self.payload.as_ref().map_or(0, Bytes::len)
    }
}

/// A partition's input queue, bounded in records (the channel) and in bytes (a shared counter):
/// the source sends with [`QueueTx::try_send`], the task receives from the [`Inbox`].
pub fn partition_queue(records: usize, bytes: usize) -> (QueueTx, Inbox) {
    let (tx, rx) = mpsc::channel(records.max(1));
    let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    (
        QueueTx {
            tx,
            queued: Arc::clone(&queued),
            max_bytes: bytes,
        },
        Inbox { rx, queued },
    )
}

/// The source's end of a partition queue.
#[derive(Debug)]
pub struct QueueTx {
    tx: mpsc::Sender<Record>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
    max_bytes: usize,
}

/// Why a record was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum QueueFull {
    /// Over the record or byte limit: pause the partition.
    Full,
    /// The task is gone (revoked or stopped).
    Closed,
}

impl QueueTx {
    /// Queues a record unless the queue is over either limit. A record larger than the byte
    /// limit is still queued when the queue is empty, so no record can block a partition forever.
    pub fn try_send(&self, rec: Record) -> Result<(), QueueFull> {
        let size = rec.size();
        let held = self.queued.load(Ordering::Acquire);
        if held > 0 && held + size > self.max_bytes {
            return Err(QueueFull::Full);
        }
        self.queued.fetch_add(size, Ordering::AcqRel);
        match self.tx.try_send(rec) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.queued.fetch_sub(size, Ordering::AcqRel);
                Err(match e {
                    mpsc::error::TrySendError::Full(_) => QueueFull::Full,
                    mpsc::error::TrySendError::Closed(_) => QueueFull::Closed,
                })
            }
        }
    }

    /// At most half full in records and in bytes: a paused partition may resume.
    pub fn has_room(&self) -> bool {
        self.tx.capacity() * 2 >= self.tx.max_capacity()
            && self.queued.load(Ordering::Acquire) * 2 <= self.max_bytes
    }
}

/// The task's end of a partition queue.
#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::Receiver<Record>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
}

impl Inbox {
    fn took(&self, rec: &Record) {
        self.queued.fetch_sub(rec.size(), Ordering::AcqRel);
    }

    async fn recv(&mut self) -> Option<Record> {
        let r = self.rx.recv().await;
        if let Some(rec) = &r {
            self.took(rec);
        }
        r
    }

    fn try_recv(&mut self) -> Option<Record> {
        let r = self.rx.try_recv().ok();
        if let Some(rec) = &r {
            self.took(rec);
        }
        r
    }

    /// Records and bytes queued.
    fn depth(&self) -> (usize, usize) {
        (self.rx.len(), self.queued.load(Ordering::Acquire))
    }
}

/// Instructions from the source to a partition task.
#[derive(Debug)]
pub enum Control {
    /// Stop reading, finish pending writes, reply with the final commit point.
    Drain {
        /// Gets the offset to commit (`None` when nothing was read).
        reply: oneshot::Sender<Option<i64>>,
    },
}

/// Counters of a whole run, shared by every partition task (read by `demo` and `bench`).
#[derive(Debug, Default)]
pub struct RunStats {
    /// Records read.
    pub records: AtomicU64,
    /// Spans read.
    pub spans: AtomicU64,
    /// Record bytes read.
    pub bytes: AtomicU64,
    /// Traces decided.
    pub traces_decided: AtomicU64,
    /// Traces kept.
    pub traces_kept: AtomicU64,
    /// Spans kept (including late ones).
    pub spans_kept: AtomicU64,
    /// Decisions forced by limits.
    pub forced: AtomicU64,
    /// Records sent to the dead-letter topic.
    pub dead_letters: AtomicU64,
    /// Traces kept, per top-level policy index.
    pub kept_by_policy: Vec<AtomicU64>,
}

impl RunStats {
    /// Counters for `policies` top-level policies.
    pub fn new(policies: usize) -> Self {
        RunStats {
            kept_by_policy: (0..policies).map(|_| AtomicU64::new(0)).collect(),
            ..Default::default()
        }
    }
}

/// Policy names, shared into kept rows.
type Names = Arc<[Arc<str>]>;
/// A compiled sampler and its policy names.
type InForce = (Arc<Sampler>, Names);

/// The policies in force, replaceable while running (SIGHUP): tasks hold the current sampler and
/// look at the generation once per tick.
pub struct Policies {
    generation: AtomicU64,
    current: std::sync::RwLock<InForce>,
}

impl Policies {
    /// The policies of a configuration.
    pub fn new(sampler: Sampler, names: &[String]) -> Policies {
        Policies {
            generation: AtomicU64::new(0),
            current: std::sync::RwLock::new((Arc::new(sampler), names_of(names))),
        }
    }

    /// Generation of the policies in force (changes on every replace).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The sampler and policy names in force, with their generation.
    pub fn load(&self) -> (u64, Arc<Sampler>, Names) {
        let g = self.generation();
        match self.current.read() {
            Ok(c) => (g, Arc::clone(&c.0), Arc::clone(&c.1)),
            Err(p) => {
                let c = p.into_inner();
                (g, Arc::clone(&c.0), Arc::clone(&c.1))
            }
        }
    }

    /// Puts new policies in force; tasks switch at their next tick.
    pub fn replace(&self, sampler: Sampler, names: &[String]) {
        let new = (Arc::new(sampler), names_of(names));
        match self.current.write() {
            Ok(mut c) => *c = new,
            Err(p) => *p.into_inner() = new,
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// Re-reads the policy block (`policies:` or `tiers:`) of the configuration file and puts it in
/// force. A file with any problem changes nothing: the old policies keep running and every
/// problem is returned. Other sections need a restart; a change there is reported, not applied.
pub fn reload_policies(
    path: &std::path::Path,
    running: &Config,
    policies: &Policies,
) -> Result<Vec<String>, crate::config::ConfigErrors> {
    let outcome = Config::load(path).and_then(|new| {
        let sampler = Sampler::from_config(&new).map_err(crate::config::ConfigErrors)?;
        Ok((new, sampler))
    });
    match outcome {
        Ok((new, sampler)) => {
            let mut ignored = Vec::new();
            let mut same = |name: &str, a: String, b: String| {
                if a != b {
                    ignored.push(name.to_string());
                }
            };
            same("kafka", yaml(&new.kafka), yaml(&running.kafka));
            same("store", yaml(&new.store), yaml(&running.store));
            same("sinks", yaml(&new.sinks), yaml(&running.sinks));
            same("archive", yaml(&new.archive), yaml(&running.archive));
            same("telemetry", yaml(&new.telemetry), yaml(&running.telemetry));
            policies.replace(sampler, &new.policy_names());
            telemetry::policy_reload(true);
            Ok(ignored)
        }
        Err(e) => {
            telemetry::policy_reload(false);
            Err(e)
        }
    }
}

fn yaml<T: serde::Serialize>(t: &T) -> String {
    serde_yaml::to_string(t).unwrap_or_default()
}

fn names_of(names: &[String]) -> Arc<[Arc<str>]> {
    names.iter().map(|n| Arc::from(n.as_str())).collect()
}

/// What every partition task of a run shares (cheap to clone).
#[derive(Clone)]
pub struct Shared {
    /// The configuration.
    pub config: Arc<Config>,
    /// The policies in force.
    pub policies: Arc<Policies>,
    /// Readiness (held down while partitions restore their decisions).
    pub health: crate::telemetry::Health,
    /// The producer for the sampled and dead-letter topics.
    pub producer: FutureProducer,
    /// Hot tier store (when the Parquet sink is on).
    pub hot_store: Option<Arc<dyn object_store::ObjectStore>>,
    /// Bounds concurrent Parquet encodes.
    pub encode_slots: Arc<tokio::sync::Semaphore>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Run counters.
    pub stats: Arc<RunStats>,
    /// Commit points published by partition tasks, picked up by the source's poll loop.
    pub commits: Arc<dashmap::DashMap<(Arc<str>, i32), i64>>,
}

/// Pending writes per partition before input stops.
const MAX_PENDING_WRITES: usize = 20_000;

/// The owner of one partition's state.
pub struct PartitionTask {
    topic: Arc<str>,
    partition: i32,
    shared: Shared,
    store: TraceStore,
    watermark: Watermark,
    sinks: Vec<Box<dyn Sink>>,
    acks: Acks,
    scratch: Vec<ScannedSpan>,
    due: Vec<DueTrace>,
    late: Vec<(TraceId, Decision, Vec<SpanRef>)>,
    late_index: TraceMap<usize>,
    next_commit: MonoTime,
    dlq_topic: Arc<str>,
    /// Decision-cache (hits, misses) already published.
    published_lookups: (u64, u64),
    /// The decision log topic, when enabled.
    decisions_topic: Option<Arc<str>>,
    /// The policies this task uses, and their generation.
    sampler: Arc<Sampler>,
    policy_names: Arc<[Arc<str>]>,
    policies_generation: u64,
}

impl PartitionTask {
    /// A task for `topic`/`partition` with the configured sinks.
    pub fn new(topic: Arc<str>, partition: i32, shared: Shared) -> Self {
        let (policies_generation, sampler, policy_names) = shared.policies.load();
        let cfg = &shared.config;
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        if cfg.sinks.kafka.enabled {
            sinks.push(Box::new(sink::KafkaSink::new(
                shared.producer.clone(),
                Arc::from(cfg.kafka.sampled_topic.as_str()),
                usize::try_from(cfg.sinks.kafka.max_record_bytes.0).unwrap_or(usize::MAX),
            )));
        }
        if let (true, Some(store)) = (cfg.sinks.parquet.enabled, &shared.hot_store) {
            sinks.push(Box::new(sink::ParquetSink::new(
                Arc::clone(store),
                Arc::clone(&topic),
                partition,
                cfg.archive.hot.flush_interval,
                cfg.archive.hot.max_segment_bytes.0,
                Arc::clone(&shared.encode_slots),
            )));
        }
        PartitionTask {
            store: TraceStore::new(StoreLimits::from(&cfg.store)),
            dlq_topic: Arc::from(cfg.kafka.dead_letter_topic.as_str()),
            published_lookups: (0, 0),
            decisions_topic: cfg
                .kafka
                .decision_log
                .then(|| Arc::from(cfg.kafka.decisions_topic.as_str())),
            sampler,
            policy_names,
            policies_generation,
            topic,
            partition,
            watermark: Watermark::new(),
            sinks,
            acks: Acks::new(MAX_PENDING_WRITES),
            scratch: Vec::new(),
            due: Vec::new(),
            late: Vec::new(),
            late_index: TraceMap::default(),
            next_commit: MonoTime::ZERO,
            shared,
        }
    }

    /// Runs until drained. `input` closing is not an end: the source sends `Drain`.
    pub async fn run(mut self, mut input: Inbox, mut control: mpsc::Receiver<Control>) {
        self.restore_decisions().await;
        let tick = self.shared.config.store.tick;
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut input_open = true;
        loop {
            let pause_for_budget = self.shared.config.store.on_overflow == OnOverflow::Pause
                && self.store.over_budget();
            let can_read = input_open && !pause_for_budget && !self.acks.is_full();
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
                released = self.acks.next() => self.release(&released),
                rec = input.recv(), if can_read => match rec {
                    Some(rec) => {
                        self.ingest(rec);
                        // Drain whatever else is queued without yielding to the timer each time.
                        let mut budget = 64;
                        while budget > 0 && !self.acks.is_full() {
                            match input.try_recv() {
                                Some(rec) => self.ingest(rec),
                                None => break,
                            }
                            budget -= 1;
                        }
                    }
                    None => input_open = false,
                },
                _ = ticker.tick() => self.tick(input.depth()),
            }
        }
    }

    fn release(&mut self, offsets: &[i64]) {
        for &o in offsets {
            if let Err(e) = self.watermark.release(o, 1) {
                tracing::error!(topic = %self.topic, partition = self.partition, error = %e, "watermark release");
            }
        }
    }

    fn acquire(&mut self, offset: i64, n: u32) {
        if let Err(e) = self.watermark.acquire(offset, n) {
            tracing::error!(topic = %self.topic, partition = self.partition, error = %e, "watermark acquire");
        }
    }

    /// Reads one record into the store.
    pub fn ingest(&mut self, rec: Record) {
        let now = self.shared.clock.now();
        if let Err(e) = self.watermark.observe(rec.offset) {
            // A rewind we did not ask for (should not happen with one owner): skip, never panic.
            tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "out-of-order record skipped");
            return;
        }
        let Some(payload) = rec.payload else { return };
        let stats = &self.shared.stats;
        stats.records.fetch_add(1, Ordering::Relaxed);
        stats
            .bytes
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        let scanned = otlp::scan_record(
            &payload,
            rec.encoding,
            self.sampler.probe(),
            &mut self.scratch,
        );
        if let Err(e) = scanned {
            telemetry::record_in(false, 0, payload.len());
            stats.dead_letters.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(topic = %self.topic, partition = self.partition, offset = rec.offset, error = %e, "record to dead-letter topic");
            self.acquire(rec.offset, 1);
            self.acks.push(sink::dead_letter(
                self.shared.producer.clone(),
                Arc::clone(&self.dlq_topic),
                payload,
                DeadLetter {
                    topic: self.topic.to_string(),
                    partition: self.partition,
                    offset: rec.offset,
                    error: e.to_string(),
                    key: rec.key,
                },
            ));
            return;
        }
        telemetry::record_in(true, self.scratch.len(), payload.len());
        stats
            .spans
            .fetch_add(self.scratch.len() as u64, Ordering::Relaxed);
        let spans = std::mem::take(&mut self.scratch);
        for s in spans.iter() {
            match self
                .store
                .add(s.trace_id, &s.meta, s.span.clone(), rec.offset, now)
            {
                Admit::Buffered { new_ref } => {
                    if new_ref {
                        self.acquire(rec.offset, 1);
                    }
                }
                Admit::Decided(d) => {
                    let i = *self.late_index.entry(s.trace_id).or_insert_with(|| {
                        self.late.push((s.trace_id, d, Vec::new()));
                        self.late.len() - 1
                    });
                    self.late[i].2.push(s.span.clone());
                }
            }
            if self.store.has_forced() {
                let forced: Vec<DueTrace> = self.store.take_forced().collect();
                for t in forced {
                    self.decide(t, now);
                }
            }
        }
        self.scratch = spans;
        self.scratch.clear();
        self.late_index.clear();
        let late = std::mem::take(&mut self.late);
        for (trace_id, d, spans) in &late {
            if d.keep {
                telemetry::late_spans(Outcome::Keep, spans.len());
                self.acquire(rec.offset, 1);
                self.emit(*trace_id, spans, *d, &[rec.offset]);
            } else {
                telemetry::late_spans(Outcome::Drop, spans.len());
            }
        }
        self.late = late;
        self.late.clear();
    }

    fn decide(&mut self, t: DueTrace, now: MonoTime) {
        let d = self
            .sampler
            .decide_trace(t.trace_id, &t.summary, &t.spans, now);
        self.store.remember(t.trace_id, d, now);
        let stats = &self.shared.stats;
        stats.traces_decided.fetch_add(1, Ordering::Relaxed);
        let forced = t.trigger.is_forced();
        if forced {
            stats.forced.fetch_add(1, Ordering::Relaxed);
        }
        let policy: Option<Arc<str>> = d
            .policy
            .and_then(|p| self.policy_names.get(usize::from(p)))
            .cloned();
        let name = policy.as_deref().unwrap_or("none");
        if d.keep {
            telemetry::trace_decided(name, Outcome::Keep, t.trigger.as_str(), forced);
            stats.traces_kept.fetch_add(1, Ordering::Relaxed);
            if let Some(c) = d
                .policy
                .and_then(|p| stats.kept_by_policy.get(usize::from(p)))
            {
                c.fetch_add(1, Ordering::Relaxed);
            }
            self.emit(t.trace_id, &t.spans, d, &t.offsets);
        } else {
            telemetry::trace_decided(name, Outcome::Drop, t.trigger.as_str(), forced);
        }
        // The decision log holds one reference per offset, so the records are resolved only
        // once the decision is durable and a crash never replays them without it. A drop hands
        // it the trace's own reference; a keep takes one more beside the sinks'.
        let Some(topic) = self.decisions_topic.clone() else {
            if !d.keep {
                self.release(&t.offsets);
            }
            return;
        };
        if d.keep {
            for &o in &t.offsets {
                self.acquire(o, 1);
            }
        }
        let logged = crate::decision_log::LoggedDecision {
            keep: d.keep,
            threshold: d.threshold,
            decided_at_ms: crate::clock::wall_now_nanos() / 1_000_000,
            policy: policy.as_deref().unwrap_or_default().to_string(),
        };
        self.acks.push(sink::decision_record(
            self.shared.producer.clone(),
            topic,
            self.partition,
            crate::decision_log::key(&t.trace_id),
            logged.encode(),
            t.offsets,
        ));
    }

    /// Restores this partition's decision cache from the decision log (before any input).
    async fn restore_decisions(&mut self) {
        let Some(topic) = self.decisions_topic.clone() else {
            return;
        };
        let _not_ready = self.shared.health.restoring();
        let cfg = Arc::clone(&self.shared.config);
        let partition = self.partition;
        let dc = &cfg.store.decision_cache;
        let max_age = dc.sampled_ttl.max(dc.non_sampled_ttl);
        let now_ms = crate::clock::wall_now_nanos() / 1_000_000;
        let started = std::time::Instant::now();
        let read = tokio::task::spawn_blocking(move || {
            crate::decision_log::restore(&cfg, partition, now_ms, max_age)
        })
        .await;
        let decisions = match read {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                tracing::error!(%topic, partition, error = %e, "cannot read the decision log; late spans of earlier traces will be decided again");
                return;
            }
            Err(e) => {
                tracing::error!(%topic, partition, error = %e, "decision log restore failed");
                return;
            }
        };
        let now = self.shared.clock.now();
        let n = decisions.len();
        for (id, d) in decisions {
            let policy = self
                .policy_names
                .iter()
                .position(|p| **p == *d.policy)
                .map(|i| i as crate::sample::PolicyId);
            let age = Duration::from_millis(now_ms.saturating_sub(d.decided_at_ms));
            let at = MonoTime::from_duration(now.as_duration().saturating_sub(age));
            self.store.remember(
                id,
                Decision {
                    keep: d.keep,
                    policy,
                    threshold: d.threshold,
                },
                at,
            );
        }
        telemetry::decisions_restored(n as u64);
        tracing::info!(topic = %self.topic, partition, decisions = n, elapsed_ms = started.elapsed().as_millis() as u64, "decision cache restored");
    }

    /// Hands kept spans to every sink. Each offset holds one reference on entry; it ends with one
    /// per sink, each released by that sink's acknowledgement.
    fn emit(&mut self, trace_id: TraceId, spans: &[SpanRef], d: Decision, offsets: &[i64]) {
        self.shared
            .stats
            .spans_kept
            .fetch_add(spans.len() as u64, Ordering::Relaxed);
        let n = self.sinks.len() as u32;
        if n == 0 {
            self.release(offsets);
            return;
        }
        for &o in offsets {
            self.acquire(o, n - 1);
        }
        let policy = d
            .policy
            .and_then(|p| self.policy_names.get(usize::from(p)))
            .cloned()
            .unwrap_or_else(|| Arc::from("none"));
        // OTEP 235 on the way out: tracestate th raised to this stage's threshold (or erased),
        // policy name and adjusted count as span attributes. Both sinks get the marked bytes.
        let mark = otlp::SamplingMark::new(d.threshold, &policy);
        let marked: Vec<SpanRef> = spans
            .iter()
            .map(|s| SpanRef {
                ctx: Arc::clone(&s.ctx),
                bytes: match otlp::mark_span(&s.bytes, &mark) {
                    Ok(b) => Bytes::from(b),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot mark a kept span; emitted unchanged");
                        s.bytes.clone()
                    }
                },
            })
            .collect();
        let kept = KeptTrace {
            trace_id,
            spans: &marked,
            decision: d,
            policy: &policy,
            offsets,
        };
        for s in &mut self.sinks {
            s.accept(&kept, &mut self.acks);
        }
    }

    /// Decides due traces, flushes sinks by age, publishes the commit point and gauges.
    pub fn tick(&mut self, (queued, queued_bytes): (usize, usize)) {
        let now = self.shared.clock.now();
        if self.shared.policies.generation() != self.policies_generation {
            self.switch_policies();
        }
        let mut due = std::mem::take(&mut self.due);
        self.store.poll_due(now, &mut due);
        for t in due.drain(..) {
            self.decide(t, now);
        }
        self.due = due;
        for s in &mut self.sinks {
            s.tick(now, &mut self.acks);
        }
        if now >= self.next_commit {
            self.next_commit = now + self.shared.config.kafka.commit_interval;
            if let Some(p) = self.watermark.take_new_commit() {
                self.shared
                    .commits
                    .insert((Arc::clone(&self.topic), self.partition), p);
            }
            let st = self.store.stats();
            telemetry::partition_gauges(
                &self.topic,
                self.partition,
                PartitionGauges {
                    traces: st.traces,
                    bytes: st.bytes,
                    queued,
                    queued_bytes,
                    pending_acks: self.acks.len(),
                    lag: None,
                    cached_kept: st.cached_kept,
                    cached_dropped: st.cached_dropped,
                    new_hits: st.cache_hits - self.published_lookups.0,
                    new_misses: st.cache_misses - self.published_lookups.1,
                },
            );
            self.published_lookups = (st.cache_hits, st.cache_misses);
        }
    }

    /// Takes the policies now in force. Buffered traces are summarized again from their span
    /// bytes with the new policies' probe, so they are decided on what the new policies read.
    fn switch_policies(&mut self) {
        let (generation, sampler, names) = self.shared.policies.load();
        let probe = sampler.probe();
        self.store
            .resummarize(|span| otlp::rescan_span(span, probe).ok());
        tracing::info!(topic = %self.topic, partition = self.partition, generation, traces = self.store.len(), "policies switched");
        self.sampler = sampler;
        self.policy_names = names;
        self.policies_generation = generation;
    }

    /// Writes out buffered segments and waits for every pending write; returns the commit point.
    async fn drain(&mut self) -> Option<i64> {
        for s in &mut self.sinks {
            s.flush(&mut self.acks);
        }
        while !self.acks.is_empty() {
            let released = self.acks.next().await;
            self.release(&released);
        }
        self.watermark.commit_point()
    }
}

/// How long a revoke or shutdown waits for a partition to drain before giving up on it (its
/// offsets then stay at the last periodic commit, which is always safe).
pub fn drain_deadline(cfg: &Config) -> Duration {
    cfg.shutdown_timeout
}

/// Errors that stop a run before it starts.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The policies did not compile (config validation normally catches this first).
    #[error("invalid policies: {0}")]
    Policies(crate::config::ConfigErrors),
    /// A Kafka client could not be created or the cluster refused a request.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The source failed to start.
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    /// The hot tier could not be opened.
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
    /// The telemetry endpoint could not be started.
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::TelemetryError),
    /// A topic could not be created.
    #[error("cannot create topic `{topic}`: {reason}")]
    Topic {
        /// Topic.
        topic: String,
        /// Cause.
        reason: String,
    },
}

/// A running pipeline, for callers that want to watch it (demo, bench, tests).
pub struct Running {
    /// Counters.
    pub stats: Arc<RunStats>,
    /// Readiness.
    pub health: crate::telemetry::Health,
    /// Bound telemetry address, when enabled.
    pub telemetry_addr: Option<std::net::SocketAddr>,
    /// The policies in force ([`Policies::replace`] reloads them).
    pub policies: Arc<Policies>,
    source: Option<crate::source::SourceHandle>,
    rekey: Option<crate::rekey::RekeyHandle>,
    producer: FutureProducer,
    compactor: Option<crate::compact::Compactor>,
    _server: Option<crate::telemetry::Server>,
    shutdown_timeout: Duration,
}

impl Running {
    /// Graceful stop: no more input, every partition drained (decided traces written, pending
    /// writes acknowledged) and committed, producer flushed.
    pub async fn stop(mut self) -> Arc<RunStats> {
        self.health.set_ready(false);
        if let Some(c) = self.compactor.take() {
            c.stop(self.shutdown_timeout).await;
        }
        // Upstream first: the rekey stage finishes its writes before the sampler drains.
        if let Some(rekey) = self.rekey.take() {
            rekey.stop().await;
        }
        if let Some(source) = self.source.take() {
            let _ = tokio::task::spawn_blocking(move || source.stop()).await;
        }
        let producer = self.producer.clone();
        let timeout = self.shutdown_timeout;
        let _ = tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer;
            producer.flush(timeout)
        })
        .await;
        Arc::clone(&self.stats)
    }
}

/// Creates the rekey stage's repartition topic when missing, with the partition count of the
/// first rekeyed topic.
async fn ensure_rekey_topic(cfg: &Config) -> Result<(), RunError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let rk = &cfg.kafka.rekey;
    let Some(first) = rk.input_topics.first() else {
        return Ok(());
    };
    let admin: AdminClient<DefaultClientContext> = crate::source::producer_config(cfg).create()?;
    let md = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))?;
    let count = |name: &str| {
        md.topics()
            .iter()
            .find(|t| t.name() == name)
            .map_or(0, |t| t.partitions().len() as i32)
    };
    if count(&rk.topic) > 0 {
        return Ok(());
    }
    let partitions = count(first);
    if partitions == 0 {
        return Err(RunError::Topic {
            topic: first.clone(),
            reason: "the rekeyed input topic does not exist".into(),
        });
    }
    let r = admin
        .create_topics(
            &[
                NewTopic::new(&rk.topic, partitions, TopicReplication::Fixed(1))
                    .set("cleanup.policy", "delete"),
            ],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for x in r {
        match x {
            Ok(t) => {
                tracing::warn!(topic = %t, partitions, "created the rekey topic with replication 1; manage production topics explicitly")
            }
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => {
                return Err(RunError::Topic {
                    topic: t,
                    reason: e.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// Creates the sampled and dead-letter topics when missing, with as many partitions as the first
/// input topic (so partition p of the input maps to partition p of the outputs).
async fn ensure_output_topics(cfg: &Config) -> Result<(), RunError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = crate::source::producer_config(cfg).create()?;
    let md = {
        let client = admin.inner();
        client.fetch_metadata(None, Duration::from_secs(10))?
    };
    let partitions = md
        .topics()
        .iter()
        .find(|t| {
            cfg.kafka
                .input_topics
                .first()
                .is_some_and(|i| i == t.name())
        })
        .map(|t| t.partitions().len() as i32)
        .filter(|n| *n > 0)
        .unwrap_or(1);
    if cfg.kafka.decision_log {
        let log = &cfg.kafka.decisions_topic;
        if let Some(t) = md.topics().iter().find(|t| t.name() == log) {
            let n = t.partitions().len() as i32;
            if n > 0 && n < partitions {
                return Err(RunError::Topic {
                    topic: log.clone(),
                    reason: format!(
                        "the decision log has {n} partitions but the input has {partitions}; \
                         it must be co-partitioned (at least as many partitions)"
                    ),
                });
            }
        }
    }
    let mut wanted = vec![cfg.kafka.dead_letter_topic.clone()];
    if cfg.sinks.kafka.enabled {
        wanted.push(cfg.kafka.sampled_topic.clone());
    }
    if cfg.kafka.decision_log {
        wanted.push(cfg.kafka.decisions_topic.clone());
    }
    let missing: Vec<String> = wanted
        .into_iter()
        .filter(|w| {
            !md.topics()
                .iter()
                .any(|t| t.name() == w && !t.partitions().is_empty())
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    // The decision log is compacted (latest decision per trace) and ages out after the longest
    // decision-cache TTL plus a day of replay window.
    let dc = &cfg.store.decision_cache;
    let log_retention = (dc.sampled_ttl.max(dc.non_sampled_ttl) + Duration::from_secs(86_400))
        .as_millis()
        .to_string();
    let new: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|t| {
            let n = NewTopic::new(t, partitions, TopicReplication::Fixed(1));
            if *t == cfg.kafka.decisions_topic {
                n.set("cleanup.policy", "compact,delete")
                    .set("retention.ms", &log_retention)
            } else {
                n
            }
        })
        .collect();
    let results = admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for r in results {
        match r {
            Ok(t) => {
                tracing::warn!(topic = %t, partitions, "created missing topic with replication 1; manage production topics explicitly")
            }
            Err((t, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic = %t, "exists")
            }
            Err((t, e)) => {
                return Err(RunError::Topic {
                    topic: t,
                    reason: e.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// Starts the pipeline: telemetry, producer, output topics, hot tier, consumer group.
pub async fn start(config: Config, clock: Arc<dyn Clock>) -> Result<Running, RunError> {
    let handle = crate::telemetry::install();
    let health = crate::telemetry::Health::default();
    let config = Arc::new(config);
    let sampler = Sampler::from_config(&config)
        .map_err(|e| RunError::Policies(crate::config::ConfigErrors(e)))?;
    let names = config.policy_names();
    let policies = Arc::new(Policies::new(sampler, &names));
    let producer: FutureProducer = crate::source::producer_config(&config).create()?;
    ensure_rekey_topic(&config).await?;
    ensure_output_topics(&config).await?;
    let hot_store = if config.sinks.parquet.enabled {
        Some(crate::archive::open_store(&config.archive.hot.url)?)
    } else {
        None
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let stats = Arc::new(RunStats::new(names.len()));
    let shared = Shared {
        config: Arc::clone(&config),
        policies: Arc::clone(&policies),
        health: health.clone(),
        producer: producer.clone(),
        hot_store,
        encode_slots: Arc::new(tokio::sync::Semaphore::new(cores)),
        clock,
        stats: Arc::clone(&stats),
        commits: Arc::new(dashmap::DashMap::new()),
    };
    let server = if config.telemetry.listen.is_empty() {
        None
    } else {
        Some(crate::telemetry::serve(&config.telemetry.listen, handle, health.clone()).await?)
    };
    let rt = tokio::runtime::Handle::current();
    let h2 = health.clone();
    let source = tokio::task::spawn_blocking(move || crate::source::start(shared, h2, rt))
        .await
        .map_err(|e| RunError::Topic {
            topic: String::new(),
            reason: e.to_string(),
        })??;
    let rekey = crate::rekey::start(Arc::clone(&config), producer.clone()).map_err(|e| {
        RunError::Topic {
            topic: config.kafka.rekey.topic.clone(),
            reason: e.to_string(),
        }
    })?;
    let compactor = if config.archive.compaction.in_run {
        Some(crate::compact::Compactor::start(config.archive.clone())?)
    } else {
        None
    };
    Ok(Running {
        stats,
        health,
        telemetry_addr: server.as_ref().map(|s| s.addr),
        policies,
        source: Some(source),
        rekey,
        producer,
        compactor,
        _server: server,
        shutdown_timeout: config.shutdown_timeout,
    })
}
