//! The Kafka consumer group: partition lifecycle, dispatch to partition tasks, offset commits.
//!
//! One OS thread owns the consumer and polls it. librdkafka runs rebalance callbacks on that
//! thread, which may block there safely (partition tasks run on the tokio runtime):
//! - **assign** (cooperative-sticky, so only the delta): a [`PartitionTask`] is spawned per new
//!   partition, fed through a bounded channel;
//! - **revoke**: the revoked partitions' tasks are drained in parallel under one deadline
//!   (`shutdown_timeout`; no more input, buffered segments written, pending sink writes awaited),
//!   the final commit point of each one that drained is committed synchronously (unless the
//!   assignment was lost) even when another did not, and their state is dropped. Undecided traces are not forced:
//!   the new owner replays them from the committed offset.
//!
//! Backpressure: each partition's queue is bounded in records and bytes
//! (`kafka.partition_queue_records` / `_bytes`, sized to absorb a few fetch responses, because a
//! pause costs a re-fetch). When it is full the partition is paused at the first record
//! not handed over; when the task has room again the consumer seeks back to that record and
//! resumes. The poll thread hands a partition's records over strictly in offset order: after a
//! resume nothing is handed over until the first missing record itself comes back (librdkafka may
//! still deliver later records it had queued before the seek), and offsets below what was handed
//! over are dropped as duplicates. Nothing is lost or re-ordered. Commit points published by partition tasks are committed asynchronously
//! from the poll loop; on shutdown every partition is drained and committed synchronously.

pub mod flow;
pub mod queue;
pub mod record;
pub mod rekey;
pub mod watermark;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};

use self::flow::{Flow, OnRecord, PartitionKey};
use self::queue::{partition_queue, CommitBoard, Control, QueueFull, QueueTx, Spawner};
use self::record::Record;
use crate::clock::{Clock, MonoTime};
use crate::kafka::{self, config::KafkaConfig};
use crate::otlp::Encoding;
use crate::telemetry::{self, Health};

/// Errors of the source stage.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The consumer could not be created or subscribed (configuration or broker problem).
    #[error("kafka consumer: {0}")]
    Kafka(KafkaError),
    /// An input topic does not exist.
    #[error("input topic `{0}` does not exist on the cluster")]
    MissingTopic(String),
    /// The consumer thread could not be started.
    #[error("cannot start the consumer thread: {0}")]
    Thread(std::io::Error),
}

// Not a `#[from]`: the error's text is in the message once, not again as its source.
impl From<rdkafka::error::KafkaError> for SourceError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        SourceError::Kafka(e)
    }
}

struct PartitionHandle {
    generation: u64,
    tx: QueueTx,
    control: mpsc::Sender<Control>,
    /// Cancels the task when it does not drain in time (its writes would otherwise live on).
    abort: tokio::task::AbortHandle,
}

type Key = PartitionKey;

struct Ctx {
    topics: Vec<Arc<str>>,
    registry: DashMap<Key, PartitionHandle>,
    spawner: Arc<dyn Spawner>,
    commits: CommitBoard,
    rt: tokio::runtime::Handle,
    queue: usize,
    queue_bytes: usize,
    generation: AtomicU64,
    drain_deadline: Duration,
    health: Health,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The coordinator has answered a join with an assignment (possibly empty).
    joined: AtomicBool,
    /// The broker answers group descriptions (false after the first failure: not asked again).
    describable: AtomicBool,
}

impl Ctx {
    /// The key of an input topic's partition (`None` for a topic not read).
    fn key(&self, topic: &str, partition: i32) -> Option<Key> {
        let topic = self.topics.iter().find(|t| &***t == topic)?;
        Some(PartitionKey::new(topic, partition))
    }

    fn spawn(&self, key: Key) {
        let (topic, partition) = (Arc::clone(&key.topic), key.partition);
        let (tx, rx) = partition_queue(self.queue, self.queue_bytes);
        let (ctx_tx, ctx_rx) = mpsc::channel(4);
        let join = {
            // Spawned tasks land on the runtime the source was given.
            let _rt = self.rt.enter();
            self.spawner
                .spawn(Arc::clone(&topic), partition, rx, ctx_rx)
        };
        let abort = join.abort_handle();
        if let Ok(mut t) = self.tasks.lock() {
            t.retain(|j| !j.is_finished());
            t.push(join);
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        self.registry.insert(
            key,
            PartitionHandle {
                generation,
                tx,
                control: ctx_tx,
                abort,
            },
        );
        tracing::info!(%topic, partition, "partition assigned");
    }

    /// Drains the given partitions' tasks in parallel under one deadline and returns each
    /// one's final commit point (`None` for one that did not finish in time, or read nothing).
    fn drain_all(&self, keys: &[Key]) -> Vec<(Key, Option<i64>)> {
        let mut waiting = Vec::with_capacity(keys.len());
        for key in keys {
            let Some((key, h)) = self.registry.remove(key) else {
                continue;
            };
            let (reply, rx) = oneshot::channel();
            // The control channel only ever carries this one message: it has room.
            let sent = h.control.try_send(Control::Drain { reply }).is_ok();
            waiting.push((key, sent.then_some(rx), h.abort));
        }
        let deadline = self.drain_deadline;
        self.rt.block_on(async {
            let drains = waiting.into_iter().map(|(key, rx, abort)| async move {
                let Some(rx) = rx else {
                    abort.abort();
                    return (key, None);
                };
                match tokio::time::timeout(deadline, rx).await {
                    Ok(Ok(point)) => (key, point),
                    Ok(Err(_)) => (key, None),
                    Err(_) => {
                        tracing::warn!(partition = %key, "partition did not drain in time; keeping its last commit");
                        abort.abort();
                        (key, None)
                    }
                }
            });
            futures::future::join_all(drains).await
        })
    }

    /// Drains the given partitions (in parallel, one deadline for all) and commits the final
    /// point of each that drained, whether or not the others did.
    fn drain_and_commit(&self, consumer: &BaseConsumer<Ctx>, keys: &[Key], commit: bool) {
        let mut points = Vec::new();
        for (key, point) in self.drain_all(keys) {
            let published = self.commits.remove(&key).map(|(_, p)| p);
            tracing::info!(partition = %key, commit = ?point, "partition released");
            if let Some(p) = point.or(published) {
                points.push((key, p));
            }
        }
        if commit {
            if let Err(e) = self.commit(consumer, points, CommitMode::Sync) {
                tracing::warn!(error = %e, "final commit failed; the next owner replays from the previous commit");
            }
        }
        telemetry::partitions_assigned(self.registry.len());
    }

    /// The one committer: commits `points` (`Async`: the outcome comes to `commit_callback`).
    /// A commit that could not be sent at all hands its points back to the board.
    fn commit(
        &self,
        consumer: &BaseConsumer<Ctx>,
        points: Vec<(Key, i64)>,
        mode: CommitMode,
    ) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for (key, p) in &points {
            if tpl
                .add_partition_offset(&key.topic, key.partition, Offset::Offset(*p))
                .is_err()
            {
                tracing::warn!(partition = %key, "cannot build commit");
            }
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        let result = consumer.commit(&tpl, mode);
        if result.is_err() && matches!(mode, CommitMode::Async) {
            self.hand_back(&tpl);
        }
        result
    }

    /// Puts commit points that did not make it back on the board for the next round, unless a
    /// newer point was published meanwhile or the partition is no longer owned.
    fn hand_back(&self, offsets: &TopicPartitionList) {
        for el in offsets.elements() {
            let Offset::Offset(o) = el.offset() else {
                continue;
            };
            let Some(key) = self.key(el.topic(), el.partition()) else {
                continue;
            };
            if !self.registry.contains_key(&key) {
                continue;
            }
            self.commits
                .entry(key)
                .and_modify(|p| *p = (*p).max(o))
                .or_insert(o);
        }
    }
}

impl ClientContext for Ctx {
    fn error(&self, error: KafkaError, reason: &str) {
        kafka::client_error(error, reason);
    }

    /// librdkafka's own statistics (every `statistics.interval.ms`, on the poll thread, no
    /// network wait): the committed-offset lag of each owned partition, as the broker's high
    /// watermark minus the group's committed offset.
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (name, topic) in &statistics.topics {
            for (&partition, p) in &topic.partitions {
                let owned = self
                    .key(name, partition)
                    .is_some_and(|k| self.registry.contains_key(&k));
                if partition < 0 || !owned {
                    continue;
                }
                // Before the first commit the group's offset is unknown (-1001): lag from the
                // log start then, as the broker would count it.
                let committed = if p.committed_offset >= 0 {
                    p.committed_offset
                } else {
                    p.lo_offset.max(0)
                };
                if p.committed_offset >= 0 {
                    telemetry::committed_offset(name, partition, p.committed_offset);
                }
                if p.hi_offset >= 0 {
                    telemetry::committed_lag(name, partition, (p.hi_offset - committed).max(0));
                }
            }
        }
    }
}

impl ConsumerContext for Ctx {
    /// An asynchronous commit that failed is handed back for the next round, unless a newer
    /// point was published meanwhile: an idle partition publishes no new point, so without
    /// this a lost commit would leave its offsets behind for good.
    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        let Err(e) = result else {
            return;
        };
        tracing::warn!(error = %e, "offset commit failed; retrying");
        self.hand_back(offsets);
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let lost = consumer.assignment_lost();
            let keys: Vec<Key> = tpl
                .elements()
                .iter()
                .filter_map(|e| self.key(e.topic(), e.partition()))
                .collect();
            tracing::info!(partitions = keys.len(), lost, "revoking partitions");
            self.drain_and_commit(consumer, &keys, !lost);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                for e in tpl.elements() {
                    if let Some(key) = self.key(e.topic(), e.partition()) {
                        if !self.registry.contains_key(&key) {
                            self.spawn(key);
                        }
                    }
                }
                telemetry::partitions_assigned(self.registry.len());
                self.joined.store(true, Ordering::Release);
                tracing::info!(
                    assigned = tpl.count(),
                    owned = self.registry.len(),
                    "joined the group"
                );
                self.health.set_ready(true);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

/// The encoding of a record: its `content-type` header, else the configured default.
pub fn record_encoding(msg: &BorrowedMessage<'_>, default: Encoding) -> Encoding {
    let Some(headers) = msg.headers() else {
        return default;
    };
    for h in headers.iter() {
        if h.key.eq_ignore_ascii_case("content-type") {
            let v = h
                .value
                .map(|v| String::from_utf8_lossy(v).to_ascii_lowercase())
                .unwrap_or_default();
            if v.contains("json") {
                return Encoding::OtlpJson;
            }
            if v.contains("protobuf") || v.contains("proto") {
                return Encoding::OtlpProto;
            }
        }
    }
    default
}

/// The running source; [`SourceHandle::stop`] drains every partition and closes the consumer.
pub struct SourceHandle {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SourceHandle {
    /// Signals the poll thread to drain and close, and waits for it (blocking: call it from a
    /// blocking context).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SourceHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Creates the consumer, checks the input topics, subscribes and starts the poll thread.
/// Partitions are processed by what `spawner` starts, on `rt`; their commit points arrive on
/// `commits`.
pub fn start(
    cfg: Arc<KafkaConfig>,
    drain_deadline: Duration,
    spawner: Arc<dyn Spawner>,
    commits: CommitBoard,
    health: Health,
    rt: tokio::runtime::Handle,
    clock: Arc<dyn Clock>,
) -> Result<SourceHandle, SourceError> {
    let topics: Vec<Arc<str>> = cfg
        .input_topics
        .iter()
        .map(|t| Arc::from(t.as_str()))
        .collect();
    let ctx = Ctx {
        topics: topics.clone(),
        registry: DashMap::new(),
        spawner,
        commits,
        rt,
        queue: cfg.partition_queue_records,
        queue_bytes: cfg.partition_queue_bytes.0 as usize,
        generation: AtomicU64::new(0),
        // One deadline for all partitions drained together (revoke or shutdown); a partition
        // that misses it keeps its last periodic commit, which is always safe.
        drain_deadline,
        health,
        tasks: Mutex::new(Vec::new()),
        joined: AtomicBool::new(false),
        describable: AtomicBool::new(true),
    };
    let mut cc = kafka::consumer_config(&cfg);
    // The end of each partition is reported (stream time follows the wall clock only at the
    // end), and the lag gauge comes from librdkafka's statistics, never a blocking call.
    cc.set("enable.partition.eof", "true");
    if let Some(id) = &cfg.group_instance_id {
        cc.set("group.instance.id", id);
    }
    if !cfg.properties.contains_key("statistics.interval.ms") {
        cc.set("statistics.interval.ms", "5000");
    }
    let consumer: BaseConsumer<Ctx> = kafka::create_with_context(&cc, ctx)?;
    let md = consumer.fetch_metadata(None, Duration::from_secs(10))?;
    for t in &topics {
        let found = md
            .topics()
            .iter()
            .any(|m| m.name() == &**t && !m.partitions().is_empty());
        if !found {
            return Err(SourceError::MissingTopic(t.to_string()));
        }
    }
    let names: Vec<&str> = topics.iter().map(|t| &**t).collect();
    consumer.subscribe(&names)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("tracesift-source".into())
        .spawn(move || poll_loop(consumer, stop2, cfg, clock))
        .map_err(SourceError::Thread)?;
    Ok(SourceHandle {
        stop,
        thread: Some(thread),
    })
}

/// Whether a consumer error means a batch that cannot be decompressed, and why.
fn undecodable(code: rdkafka::types::RDKafkaErrorCode) -> Option<&'static str> {
    use rdkafka::types::RDKafkaErrorCode as C;
    match code {
        C::NotImplemented => Some("codec_not_built"),
        C::BadCompression => Some("corrupt"),
        _ => None,
    }
}

/// What the poll thread says about the group: that it is joining, and, while it owns nothing,
/// every so often how long it has waited and why that can be (so an idle member explains
/// itself); it also lets a fault on readiness expire.
struct Membership {
    session_ms: String,
    poll_ms: String,
    next_report: Duration,
    last_expiry: MonoTime,
    started: MonoTime,
    /// Since when the member has owned nothing (`None`: it owns partitions).
    empty_since: Option<MonoTime>,
    /// The last time it rejoined to get orphaned partitions assigned.
    last_rejoin: Option<MonoTime>,
    /// `session.timeout.ms` as a duration.
    session: Duration,
}

impl Membership {
    fn new(cfg: &KafkaConfig, started: MonoTime) -> Self {
        let get = |k: &str, d: &str| cfg.properties.get(k).cloned().unwrap_or_else(|| d.into());
        let m = Membership {
            session_ms: get(
                "session.timeout.ms",
                match cfg.group_instance_id {
                    Some(_) => "45000",
                    None => "10000",
                },
            ),
            poll_ms: get("max.poll.interval.ms", "300000"),
            next_report: Duration::from_secs(5),
            last_expiry: started,
            started,
            empty_since: Some(started),
            last_rejoin: None,
            session: Duration::ZERO,
        };
        let m = Membership {
            session: Duration::from_millis(m.session_ms.parse().unwrap_or(10_000)),
            ..m
        };
        tracing::info!(
            group = %cfg.group_id,
            instance = cfg.group_instance_id.as_deref().unwrap_or("(dynamic membership)"),
            session_timeout_ms = %m.session_ms,
            "joining the group"
        );
        m
    }

    /// Once a second: readiness faults expire, and a member that owns nothing says why. Returns
    /// true when it should rejoin the group: it has owned nothing for longer than the session
    /// timeout (so every dead member the coordinator knew has expired) and has not rejoined
    /// within one session timeout. The caller rejoins only when the group then has fewer
    /// members than partitions (see [`orphans_suspected`]).
    fn check(&mut self, ctx: &Ctx, now: MonoTime) -> bool {
        // Called on every poll, so once a second at most: the registry's emptiness check
        // visits every shard.
        if now.saturating_since(self.last_expiry) < Duration::from_secs(1) {
            return false;
        }
        self.last_expiry = now;
        ctx.health
            .expire_fault(now.as_duration().as_millis() as u64);
        let since_start = now.saturating_since(self.started);
        if !ctx.registry.is_empty() {
            self.next_report = since_start + Duration::from_secs(5);
            self.empty_since = None;
            return false;
        }
        let empty_since = *self.empty_since.get_or_insert(now);
        // Only after a join answered with nothing: a member still waiting for its first
        // assignment is not stuck, it is joining.
        let due = ctx.joined.load(Ordering::Acquire)
            && now.saturating_since(empty_since) > self.session + Duration::from_secs(1)
            && self
                .last_rejoin
                .is_none_or(|t| now.saturating_since(t) > self.session);
        if since_start >= self.next_report {
            self.next_report = since_start + Duration::from_secs(5);
            tracing::info!(
                waited_s = since_start.as_secs(),
                "no partition assigned yet: the coordinator waits for every member it knows to rejoin before it assigns; a member that died without leaving is dropped after session.timeout.ms={} (a rebalance waits up to max.poll.interval.ms={}); more members than partitions also leaves some idle",
                self.session_ms,
                self.poll_ms
            );
        }
        if due {
            self.last_rejoin = Some(now);
        }
        due
    }
}

/// Whether partitions of the input topics may have no live owner while this member owns none:
/// the group has fewer members than the topics have partitions, so a balanced assignment would
/// give this member some. (More members than partitions: owning nothing is normal.) Some
/// Kafka-protocol brokers (tansu 0.6.0) do not assign again after the dead members of a
/// cooperative-sticky group expire; a rejoin makes them.
fn orphans_suspected(consumer: &BaseConsumer<Ctx>, group: &str) -> bool {
    let wait = Duration::from_secs(2);
    let ctx = consumer.context();
    if !ctx.describable.load(Ordering::Acquire) {
        return true;
    }
    let groups = match consumer.fetch_group_list(Some(group), wait) {
        Ok(g) => g,
        // A broker that cannot describe groups (tansu 0.6.0): nothing says this member's
        // emptiness is normal, so it rejoins (at most once per session timeout).
        Err(e) => {
            tracing::info!(error = %e, "the broker cannot describe the group; rejoining when this member owns nothing for a session timeout");
            ctx.describable.store(false, Ordering::Release);
            return true;
        }
    };
    let members = groups
        .groups()
        .iter()
        .find(|g| g.name() == group)
        .map_or(0, |g| g.members().len());
    let partitions: usize = ctx
        .topics
        .iter()
        .filter_map(|t| consumer.fetch_metadata(Some(t), wait).ok())
        .map(|m| {
            m.topics()
                .iter()
                .map(|t| t.partitions().len())
                .sum::<usize>()
        })
        .sum();
    members < partitions
}

fn poll_loop(
    consumer: BaseConsumer<Ctx>,
    stop: Arc<AtomicBool>,
    cfg: Arc<KafkaConfig>,
    clock: Arc<dyn Clock>,
) {
    let ctx = consumer.context();
    let default_encoding = cfg.encoding;
    let mut flows: HashMap<Key, Flow> = HashMap::new();
    let mut poll_gap = telemetry::PollGap::default();
    let mut hold = crate::failpoint::hold();
    let mut held_until: Option<(Key, MonoTime)> = None;
    let mut last_poll = clock.now();
    let started = clock.now();
    let mut membership = Membership::new(&cfg, started);
    while !stop.load(Ordering::Acquire) {
        if membership.check(ctx, clock.now()) && orphans_suspected(&consumer, &cfg.group_id) {
            let topics: Vec<&str> = ctx.topics.iter().map(|t| &**t).collect();
            tracing::warn!(
                owned = 0,
                "this member has owned nothing for longer than session.timeout.ms while the group has fewer members than partitions; rejoining so the coordinator assigns again"
            );
            consumer.unsubscribe();
            if let Err(e) = consumer.subscribe(&topics) {
                tracing::warn!(error = %e, "rejoin failed; tried again after the next session timeout");
            }
        }
        match consumer.poll(Duration::from_millis(50)) {
            None => {}
            Some(Ok(msg)) => {
                let Some(key) = ctx.key(msg.topic(), msg.partition()) else {
                    continue;
                };
                let Some(h) = ctx.registry.get(&key) else {
                    tracing::warn!(
                        topic = msg.topic(),
                        partition = msg.partition(),
                        "record for a partition not owned"
                    );
                    continue;
                };
                let flow = flows
                    .entry(key.clone())
                    .or_insert_with(|| Flow::new(h.generation));
                if flow.generation != h.generation {
                    *flow = Flow::new(h.generation);
                }
                let offset = msg.offset();
                if flow.on_record(offset) == OnRecord::Skip {
                    continue;
                }
                if hold.is_some_and(|(p, o, _)| p == key.partition && o == offset) {
                    if let Some((_, _, ms)) = hold.take() {
                        // Fault injection: hold this partition before this record.
                        let mut tpl = TopicPartitionList::new();
                        tpl.add_partition(msg.topic(), msg.partition());
                        if consumer.pause(&tpl).is_ok() {
                            tracing::warn!(
                                partition = key.partition,
                                offset,
                                ms,
                                "failpoint: partition held"
                            );
                            flow.queue_full(offset);
                            held_until = Some((key, clock.now() + Duration::from_millis(ms)));
                            continue;
                        }
                    }
                }
                let rec = Record {
                    offset,
                    key: msg.key().map(Bytes::copy_from_slice),
                    payload: msg.payload().map(Bytes::copy_from_slice),
                    encoding: record_encoding(&msg, default_encoding),
                    timestamp_ms: msg.timestamp().to_millis(),
                    headers: headers_of(&msg),
                    fetched: clock.now(),
                };
                match h.tx.try_send(rec) {
                    Ok(()) => flow.handed_over(offset),
                    Err(QueueFull::Full) => {
                        let mut tpl = TopicPartitionList::new();
                        tpl.add_partition(msg.topic(), msg.partition());
                        if let Err(e) = consumer.pause(&tpl) {
                            tracing::warn!(error = %e, "pause failed");
                        }
                        telemetry::partition_paused();
                        tracing::debug!(partition = %key, offset, "paused");
                        flow.queue_full(offset);
                    }
                    Err(QueueFull::Closed) => {}
                }
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                // Everything in the log was fetched; it counts as handed over unless records
                // were held back (paused or resuming). The event names no topic: with several
                // input topics, partition p of each is marked.
                for topic in &ctx.topics {
                    let key = PartitionKey::new(topic, partition);
                    let Some(h) = ctx.registry.get(&key) else {
                        continue;
                    };
                    let flowing = flows
                        .get(&key)
                        .is_none_or(|f| f.generation != h.generation || f.end_counts());
                    if flowing {
                        h.tx.reached_end();
                    }
                }
            }
            Some(Err(KafkaError::MessageConsumption(code))) => match undecodable(code) {
                Some(reason) => {
                    telemetry::undecodable_batch(reason);
                    let at = clock.now().as_duration().as_millis() as u64;
                    let why = format!(
                        "an input record batch cannot be decompressed ({reason}: {code}); its partition cannot advance past it"
                    );
                    if ctx.health.fault().is_none() {
                        tracing::error!(
                            %code,
                            reason,
                            "an input record batch cannot be decompressed: gzip, snappy, lz4 and zstd are built in, so the batch uses another codec or is corrupt; the partition stays at it (librdkafka's log names the codec and offset)"
                        );
                    }
                    ctx.health.fault_seen(at, why);
                }
                None => tracing::warn!(%code, "consumer error"),
            },
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
        }
        // Resume paused partitions whose task has room again; forget revoked ones.
        flows.retain(|key, flow| {
            let Some(h) = ctx.registry.get(key) else {
                return false;
            };
            if h.generation != flow.generation {
                return false;
            }
            let held = held_until
                .as_ref()
                .is_some_and(|(k, until)| k == key && clock.now() < *until);
            let Some(resume_at) = flow.resume_at(h.tx.has_room(), held) else {
                return true;
            };
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&key.topic, key.partition);
            if let Err(e) = consumer.resume(&tpl) {
                tracing::warn!(error = %e, "resume failed; retrying");
                return true;
            }
            tracing::debug!(partition = %key, resume_at, "resuming");
            let mut seek = TopicPartitionList::new();
            let seeked = seek
                .add_partition_offset(&key.topic, key.partition, Offset::Offset(resume_at))
                .and_then(|_| consumer.seek_partitions(seek, Duration::from_secs(10)))
                .and_then(|r| r.elements().first().map(|e| e.error()).unwrap_or(Ok(())));
            match seeked {
                Ok(()) => flow.resumed(),
                Err(e) => {
                    tracing::warn!(error = %e, "seek after resume failed; pausing again");
                    let _ = consumer.pause(&tpl);
                }
            }
            true
        });
        commit_published(&consumer, ctx);
        let now = clock.now();
        poll_gap.observe(now - last_poll);
        last_poll = now;
    }
    // Shutdown: drain and commit every partition, then leave the group.
    let keys: Vec<Key> = ctx.registry.iter().map(|e| e.key().clone()).collect();
    ctx.health.set_ready(false);
    ctx.drain_and_commit(&consumer, &keys, true);
    consumer.unsubscribe();
    if let Ok(mut tasks) = ctx.tasks.lock() {
        for t in tasks.drain(..) {
            t.abort();
        }
    }
    drop(consumer);
}

/// Commits the points partition tasks published (asynchronously; see `Ctx::commit`).
fn commit_published(consumer: &BaseConsumer<Ctx>, ctx: &Ctx) {
    if ctx.commits.is_empty() {
        return;
    }
    let keys: Vec<Key> = ctx.commits.iter().map(|e| e.key().clone()).collect();
    let points = keys
        .into_iter()
        .filter_map(|k| ctx.commits.remove(&k))
        .filter(|(k, _)| ctx.registry.contains_key(k))
        .collect();
    if let Err(e) = ctx.commit(consumer, points, CommitMode::Async) {
        tracing::warn!(error = %e, "commit failed; retried on the next poll");
    }
}

/// Copies the headers of a consumed message.
pub fn headers_of<M: rdkafka::Message>(msg: &M) -> record::Headers {
    use rdkafka::message::Headers as _;
    msg.headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_string(), h.value.map(Bytes::copy_from_slice)))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use rdkafka::types::RDKafkaErrorCode as C;

    #[test]
    fn a_batch_that_cannot_be_decompressed_is_told_apart() {
        assert_eq!(
            super::undecodable(C::NotImplemented),
            Some("codec_not_built")
        );
        assert_eq!(super::undecodable(C::BadCompression), Some("corrupt"));
        assert_eq!(super::undecodable(C::BrokerTransportFailure), None);
        assert_eq!(super::undecodable(C::UnknownTopicOrPartition), None);
    }
}
