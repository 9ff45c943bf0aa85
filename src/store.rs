//! Per-partition trace store: buffers every span of a trace until the trace is due, then hands it
//! over whole for a decision; remembers decisions so late spans follow them.
//!
//! Lifecycle of a trace: the first span creates an entry; each span extends it; the entry is *due*
//! when no span arrived for `decision_wait`, or `decision_wait_after_root` after its root arrived,
//! or `max_trace_age` after its first span. A trace that reaches the per-trace span / byte limit is
//! due at once ([`Trigger::TraceLimit`]); with `on_overflow: decide_oldest`, a store over its trace
//! or byte budget makes its oldest traces due ([`Trigger::Overflow`]). Due traces are taken out with
//! [`TraceStore::take_forced`] and [`TraceStore::poll_due`]; the caller decides them and records the
//! decision with [`TraceStore::remember`], after which later spans of the trace are answered from
//! the decision cache by [`TraceStore::add`].
//!
//! The store is a plain synchronous struct owned by one partition task: no locks, no clock reads
//! (every call takes `now`), no I/O. Budgets: `max_traces` and `max_bytes` bound what is buffered;
//! the decision cache is bounded by count and TTL.

pub mod config;
mod spans;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use self::config::{OnOverflow, StoreConfig};
use self::spans::{Contexts, TraceSpans};
use crate::clock::{MonoTime, StreamTime};
use crate::otlp::{SpanMeta, SpanRef, TraceId};
use crate::sample::{Decision, TraceSummary};

/// Hashes a trace id by folding its (random) bytes; ids are already uniformly distributed.
#[derive(Default, Clone, Copy)]
pub struct TraceIdHasher(u64);

impl Hasher for TraceIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(23) ^ u64::from_le_bytes(b))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
}

/// A map keyed by trace id.
pub type TraceMap<V> = HashMap<TraceId, V, BuildHasherDefault<TraceIdHasher>>;

/// Why a trace became due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// No span for `decision_wait`.
    Inactivity,
    /// `decision_wait_after_root` after the root span.
    AfterRoot,
    /// `max_trace_age` after the first span.
    MaxAge,
    /// The store was over budget and this was the oldest trace (a forced decision).
    Overflow,
    /// The trace reached its span or byte limit (a forced decision).
    TraceLimit,
}

impl Trigger {
    /// Label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Inactivity => "inactivity",
            Trigger::AfterRoot => "after_root",
            Trigger::MaxAge => "max_age",
            Trigger::Overflow => "overflow",
            Trigger::TraceLimit => "trace_limit",
        }
    }

    /// True for decisions made before the trace was complete by the timers' standard.
    pub fn is_forced(self) -> bool {
        matches!(self, Trigger::Overflow | Trigger::TraceLimit)
    }
}

/// The limits of one partition's store.
#[derive(Debug, Clone)]
pub struct StoreLimits {
    /// Inactivity wait.
    pub decision_wait: Duration,
    /// Wait after the root span (`None` = off).
    pub after_root: Option<Duration>,
    /// Longest a trace is buffered.
    pub max_trace_age: Duration,
    /// Traces buffered at most.
    pub max_traces: usize,
    /// Span bytes buffered at most.
    pub max_bytes: u64,
    /// Spans per trace at most.
    pub max_spans_per_trace: u32,
    /// Bytes per trace at most.
    pub max_trace_bytes: u64,
    /// Over-budget behaviour.
    pub on_overflow: OnOverflow,
    /// Kept decisions remembered: at most this many, for this long.
    pub kept_cache: (usize, Duration),
    /// Dropped decisions remembered: at most this many, for this long.
    pub dropped_cache: (usize, Duration),
}

impl From<&StoreConfig> for StoreLimits {
    fn from(c: &StoreConfig) -> Self {
        StoreLimits {
            decision_wait: c.decision_wait,
            after_root: (!c.decision_wait_after_root.is_zero())
                .then_some(c.decision_wait_after_root),
            max_trace_age: c.max_trace_age,
            max_traces: c.max_traces,
            max_bytes: c.max_bytes.0,
            max_spans_per_trace: c.max_spans_per_trace,
            max_trace_bytes: c.max_trace_bytes.0,
            on_overflow: c.on_overflow,
            kept_cache: (
                c.decision_cache.sampled_cache_size,
                c.decision_cache.sampled_ttl,
            ),
            dropped_cache: (
                c.decision_cache.non_sampled_cache_size,
                c.decision_cache.non_sampled_ttl,
            ),
        }
    }
}

/// For each span of a record, what the spans of its trace right after it (the run of adjacent
/// spans of one trace it starts or continues) add to the trace's buffer: [`TraceStore::add`]'s
/// `ahead`. Written into `out`, one per span.
pub fn ahead(spans: &[crate::otlp::ScannedSpan], out: &mut Vec<usize>) {
    out.clear();
    out.resize(spans.len(), 0);
    let mut next: Option<(&TraceId, usize)> = None;
    for (i, s) in spans.iter().enumerate().rev() {
        let own = crate::otlp::varint_len(s.span.bytes.len() as u64) + s.span.bytes.len();
        let after = match next {
            Some((t, a)) if *t == s.trace_id => a,
            _ => 0,
        };
        out[i] = own + after;
        next = Some((&s.trace_id, own + after));
    }
}

/// A due trace's spans, packed as the store held them until something reads them: a trace
/// dropped on its summary alone is freed without a reference ever being made to its spans.
#[derive(Debug)]
pub struct DueSpans {
    packed: Option<TraceSpans>,
    count: usize,
    refs: Vec<SpanRef>,
}

impl DueSpans {
    fn packed(spans: TraceSpans, count: usize) -> Self {
        DueSpans {
            packed: Some(spans),
            count,
            refs: Vec::new(),
        }
    }

    /// The spans, in arrival order (read out of the packed buffer on the first call, which
    /// gives back its spare room).
    pub fn get(&mut self) -> &[SpanRef] {
        if let Some(p) = self.packed.take() {
            self.refs = p.into_refs(self.count);
        }
        &self.refs
    }

    /// The spans, in arrival order, as a vector.
    pub fn into_vec(mut self) -> Vec<SpanRef> {
        self.get();
        self.refs
    }

    /// Number of spans.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// A trace taken out of the store for a decision.
#[derive(Debug)]
pub struct DueTrace {
    /// Trace id.
    pub trace_id: TraceId,
    /// What policies read.
    pub summary: TraceSummary,
    /// Its spans, in arrival order (packed until read: most traces are dropped unread).
    pub spans: DueSpans,
    /// The record offsets holding its spans, each once (each holds one watermark reference).
    pub offsets: Vec<i64>,
    /// Why it is due.
    pub trigger: Trigger,
    /// When its first span arrived (stream time).
    pub first_seen: StreamTime,
    /// When the record with its first span was fetched (process monotonic time; zero when not
    /// known).
    pub first_fetched: MonoTime,
    /// When it became due: its deadline for a timer, the moment of the force for a limit. The
    /// trace is decided at this time, so decisions do not depend on when the store was polled.
    pub due_at: StreamTime,
}

struct Entry {
    seq: u64,
    first_seen: StreamTime,
    fetched: MonoTime,
    last_seen: StreamTime,
    root_seen: Option<StreamTime>,
    summary: TraceSummary,
    spans: TraceSpans,
    offsets: Vec<i64>,
}

impl Entry {
    /// Heap bytes of the trace's own buffers (the entry itself apart).
    fn heap_bytes(&self) -> usize {
        self.spans.heap_bytes() + self.offsets.capacity() * std::mem::size_of::<i64>()
    }
}

/// What happened to a span handed to [`TraceStore::add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Buffered. `new_ref` is true when this is the trace's first span from this record: the
    /// caller takes one watermark reference on the record for it.
    Buffered {
        /// First span of this trace in this record.
        new_ref: bool,
    },
    /// The trace was already decided; the span follows the decision.
    Decided(Decision),
}

/// Bounded memory of recent decisions of one kind (kept or dropped), for late spans. Entries
/// carry their expiry.
struct DecisionCache {
    map: TraceMap<(Decision, StreamTime)>,
    fifo: VecDeque<(TraceId, StreamTime)>,
    cap: usize,
    ttl: Duration,
}

impl DecisionCache {
    fn new((cap, ttl): (usize, Duration)) -> Self {
        DecisionCache {
            map: TraceMap::default(),
            fifo: VecDeque::new(),
            cap,
            ttl,
        }
    }

    fn get(&self, id: &TraceId, now: StreamTime) -> Option<Decision> {
        match self.map.get(id) {
            Some((d, expires)) if now < *expires => Some(*d),
            _ => None,
        }
    }

    /// Remembers a decision made at `now`, until `now + ttl`.
    fn insert(&mut self, id: TraceId, d: Decision, now: StreamTime) {
        let expires = now + self.ttl;
        self.map.insert(id, (d, expires));
        self.fifo.push_back((id, expires));
        self.expire(now);
    }

    fn remove(&mut self, id: &TraceId) {
        self.map.remove(id);
    }

    fn expire(&mut self, now: StreamTime) {
        while let Some(&(id, expires)) = self.fifo.front() {
            let expired = now >= expires;
            if !(expired
                || self.map.len() > self.cap
                || self.fifo.len() > self.cap.saturating_mul(2))
            {
                break;
            }
            self.fifo.pop_front();
            // Only remove when this queue item is the entry's latest insertion.
            if self.map.get(&id).is_some_and(|(_, t)| *t == expires) {
                self.map.remove(&id);
            }
        }
    }
}

/// The kept and dropped decision caches, bounded apart, with lookup counters.
struct Decisions {
    kept: DecisionCache,
    dropped: DecisionCache,
    hits: u64,
    misses: u64,
}

impl Decisions {
    fn get(&self, id: &TraceId, now: StreamTime) -> Option<Decision> {
        self.kept.get(id, now).or_else(|| self.dropped.get(id, now))
    }

    fn insert(&mut self, id: TraceId, d: Decision, now: StreamTime) {
        if d.keep {
            self.dropped.remove(&id);
            self.kept.insert(id, d, now);
        } else {
            self.kept.remove(&id);
            self.dropped.insert(id, d, now);
        }
    }

    fn expire(&mut self, now: StreamTime) {
        self.kept.expire(now);
        self.dropped.expire(now);
    }
}

/// What one store holds on the heap, by part (bytes counted from sizes and capacities; the
/// allocator's own overhead comes on top).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreHeap {
    /// The spans' bodies and length prefixes, with their buffers' spare room, and their runs.
    pub spans: usize,
    /// The per-trace entries (timestamps, summary, record offsets).
    pub traces: usize,
    /// The trace table, the timers and the age index.
    pub index: usize,
    /// The interned resources and scopes, and their table.
    pub contexts: usize,
    /// The kept and dropped decision caches.
    pub decisions: usize,
}

impl StoreHeap {
    /// Each part with its label value.
    pub fn parts(&self) -> [(&'static str, usize); 5] {
        [
            ("spans", self.spans),
            ("traces", self.traces),
            ("index", self.index),
            ("contexts", self.contexts),
            ("decisions", self.decisions),
        ]
    }

    /// All parts.
    pub fn total(&self) -> usize {
        self.parts().iter().map(|p| p.1).sum()
    }
}

/// Gauges and counters of one store, read by the partition task for telemetry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Traces buffered.
    pub traces: usize,
    /// Span bytes buffered.
    pub bytes: u64,
    /// Kept decisions held for late spans.
    pub cached_kept: usize,
    /// Dropped decisions held for late spans.
    pub cached_dropped: usize,
    /// Spans answered from the decision cache (late spans of decided traces).
    pub cache_hits: u64,
    /// Spans of traces neither buffered nor remembered: new traces, or late spans whose
    /// decision was already forgotten (then decided again on their own).
    pub cache_misses: u64,
    /// The store's heap, by part.
    pub heap: StoreHeap,
    /// Distinct resources and scopes held.
    pub contexts: usize,
}

/// One partition's buffered traces and recent decisions.
pub struct TraceStore {
    limits: StoreLimits,
    /// Entries boxed: the table keeps a quarter to half of its buckets empty, and an empty
    /// bucket then costs a pointer instead of a whole entry (~330 B; measured with massif: the
    /// table was a third of the store's own memory per buffered span).
    traces: TraceMap<Box<Entry>>,
    timers: BinaryHeap<Reverse<(StreamTime, u64, TraceId)>>,
    by_age: BTreeMap<u64, TraceId>,
    forced: Vec<DueTrace>,
    seq: u64,
    bytes: u64,
    cache: Decisions,
    /// The resources and scopes of buffered spans, each held once.
    contexts: Contexts,
    /// Heap bytes of the buffered traces' span buffers and offset lists.
    span_heap: usize,
    /// When the record now being added was fetched (process monotonic time): a trace opened by
    /// it came in then (the end-to-end histogram's start).
    fetched: MonoTime,
}

impl TraceStore {
    /// An empty store.
    pub fn new(limits: StoreLimits) -> Self {
        let cache = Decisions {
            kept: DecisionCache::new(limits.kept_cache),
            dropped: DecisionCache::new(limits.dropped_cache),
            hits: 0,
            misses: 0,
        };
        TraceStore {
            limits,
            traces: TraceMap::default(),
            timers: BinaryHeap::new(),
            by_age: BTreeMap::new(),
            forced: Vec::new(),
            seq: 0,
            bytes: 0,
            cache,
            contexts: Contexts::default(),
            span_heap: 0,
            fetched: MonoTime::ZERO,
        }
    }

    /// Notes when the record whose spans are added next was fetched (process monotonic time).
    pub fn set_fetched(&mut self, fetched: MonoTime) {
        self.fetched = fetched;
    }

    /// Buffers one span that arrived in the record at `offset`, or answers it from the decision
    /// cache. May make traces due at once (see [`TraceStore::has_forced`]). The span's body is
    /// copied (the record is not kept); `ahead` is what the spans of this trace right after it
    /// in the record add ([`ahead`]), so a trace sent in one record is allocated once.
    pub fn add(
        &mut self,
        trace_id: TraceId,
        meta: &SpanMeta,
        span: &SpanRef,
        offset: i64,
        ahead: usize,
        now: StreamTime,
    ) -> Admit {
        if let Some(d) = self.cache.get(&trace_id, now) {
            self.cache.hits += 1;
            return Admit::Decided(d);
        }
        let size = u64::from(meta.size);
        if !self.traces.contains_key(&trace_id) {
            self.cache.misses += 1;
            if self.limits.on_overflow == OnOverflow::DecideOldest {
                while !self.traces.is_empty()
                    && (self.traces.len() >= self.limits.max_traces
                        || self.bytes + size > self.limits.max_bytes)
                {
                    self.force_oldest(now);
                }
            }
            self.seq += 1;
            let seq = self.seq;
            self.traces.insert(
                trace_id,
                Box::new(Entry {
                    seq,
                    first_seen: now,
                    fetched: self.fetched,
                    last_seen: now,
                    root_seen: None,
                    summary: TraceSummary::new(),
                    spans: TraceSpans::default(),
                    offsets: Vec::new(),
                }),
            );
            self.by_age.insert(seq, trace_id);
            self.timers
                .push(Reverse((now + self.limits.decision_wait, seq, trace_id)));
        }
        let Some(e) = self.traces.get_mut(&trace_id) else {
            return Admit::Buffered { new_ref: false };
        };
        e.last_seen = now;
        e.summary.add(meta);
        let ctx = self.contexts.intern(&span.ctx);
        let held = e.heap_bytes();
        e.spans.push(span, &ctx, ahead);
        self.bytes += size;
        let new_ref = e.offsets.last() != Some(&offset);
        if new_ref {
            e.offsets.push(offset);
        }
        self.span_heap += e.heap_bytes() - held;
        if meta.is_root && e.root_seen.is_none() {
            e.root_seen = Some(now);
            if let Some(w) = self.limits.after_root {
                self.timers.push(Reverse((now + w, e.seq, trace_id)));
            }
        }
        if e.summary.span_count >= self.limits.max_spans_per_trace
            || e.summary.bytes >= self.limits.max_trace_bytes
        {
            self.force(trace_id, Trigger::TraceLimit, now);
        }
        // Existing traces grow too: the byte budget holds after every span, not only when a
        // trace is opened (the oldest go first, possibly this one).
        if self.limits.on_overflow == OnOverflow::DecideOldest {
            while self.bytes > self.limits.max_bytes && !self.traces.is_empty() {
                self.force_oldest(now);
            }
        }
        Admit::Buffered { new_ref }
    }

    fn force_oldest(&mut self, now: StreamTime) {
        if let Some((_, id)) = self.by_age.pop_first() {
            // by_age and traces are kept in step; the entry is there.
            self.force(id, Trigger::Overflow, now);
        }
    }

    fn force(&mut self, id: TraceId, trigger: Trigger, now: StreamTime) {
        if let Some(due) = self.remove(&id, trigger, now) {
            self.forced.push(due);
        }
    }

    fn remove(&mut self, id: &TraceId, trigger: Trigger, due_at: StreamTime) -> Option<DueTrace> {
        let e = self.traces.remove(id)?;
        self.by_age.remove(&e.seq);
        self.bytes -= e.summary.bytes;
        self.span_heap -= e.heap_bytes();
        // Timers of removed traces are dropped lazily when they come due; under a flood of
        // early (forced) decisions they would pile up for a whole decision wait, so the heap is
        // rebuilt from the live traces once it holds far more timers than traces.
        if self.timers.len() > 2 * self.traces.len() + 1024 {
            let traces = &self.traces;
            self.timers
                .retain(|Reverse((_, seq, t))| traces.get(t).is_some_and(|e| e.seq == *seq));
        }
        let e = *e;
        Some(DueTrace {
            trace_id: *id,
            spans: DueSpans::packed(e.spans, e.summary.span_count as usize),
            summary: e.summary,
            offsets: e.offsets,
            trigger,
            first_seen: e.first_seen,
            first_fetched: e.fetched,
            due_at,
        })
    }

    /// The record whose spans were added last is done: nothing of it is held any more.
    pub fn end_record(&mut self) {
        self.contexts.end_record();
    }

    /// True when traces were made due by limits and wait in [`TraceStore::take_forced`].
    pub fn has_forced(&self) -> bool {
        !self.forced.is_empty()
    }

    /// Takes the traces made due by limits (decide them before adding more spans).
    pub fn take_forced(&mut self) -> std::vec::Drain<'_, DueTrace> {
        self.forced.drain(..)
    }

    fn deadline(&self, e: &Entry) -> (StreamTime, Trigger) {
        let mut best = (e.last_seen + self.limits.decision_wait, Trigger::Inactivity);
        if let (Some(r), Some(w)) = (e.root_seen, self.limits.after_root) {
            if r + w < best.0 {
                best = (r + w, Trigger::AfterRoot);
            }
        }
        let age = e.first_seen + self.limits.max_trace_age;
        if age < best.0 {
            best = (age, Trigger::MaxAge);
        }
        best
    }

    /// Moves every trace due at `now` into `out`.
    pub fn poll_due(&mut self, now: StreamTime, out: &mut Vec<DueTrace>) {
        while let Some(&Reverse((at, seq, id))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(e) = self.traces.get(&id) else {
                continue;
            };
            if e.seq != seq {
                continue;
            }
            let (deadline, trigger) = self.deadline(e);
            if deadline > now {
                self.timers.push(Reverse((deadline, seq, id)));
                continue;
            }
            if let Some(due) = self.remove(&id, trigger, deadline) {
                out.push(due);
            }
        }
        self.cache.expire(now);
    }

    /// Rebuilds every buffered trace's summary from its spans with `meta` (after a policy
    /// reload, the new policies' leaves differ). A span `meta` cannot read keeps its old
    /// contribution out of the new summary, which is what its trace is then decided on.
    pub fn resummarize(&mut self, mut meta: impl FnMut(&SpanRef) -> Option<SpanMeta>) {
        for e in self.traces.values_mut() {
            let mut s = crate::sample::TraceSummary::new();
            for span in &e.spans.to_refs(e.summary.span_count as usize) {
                if let Some(m) = meta(span) {
                    s.add(&m);
                }
            }
            // Sizes and counts stay what the budgets were charged with.
            s.span_count = e.summary.span_count;
            s.bytes = e.summary.bytes;
            e.summary = s;
        }
    }

    /// Records a decision made at `now`; later spans of the trace follow it until its TTL,
    /// counted from `now`, runs out (a decision restored from the log passes when it was made).
    pub fn remember(&mut self, trace_id: TraceId, d: Decision, now: StreamTime) {
        self.cache.insert(trace_id, d, now);
    }

    /// The decision remembered for a trace, if any.
    #[cfg(test)]
    pub fn decision(&mut self, trace_id: &TraceId, now: StreamTime) -> Option<Decision> {
        self.cache.get(trace_id, now)
    }

    /// True when over the trace or byte budget (with `on_overflow: pause`, stop reading input).
    pub fn over_budget(&self) -> bool {
        self.traces.len() >= self.limits.max_traces || self.bytes >= self.limits.max_bytes
    }

    /// What the store holds on the heap now, by part.
    pub fn heap(&self) -> StoreHeap {
        use std::mem::size_of;
        let traces = self.traces.len();
        let caches = [&self.cache.kept, &self.cache.dropped];
        StoreHeap {
            spans: self.span_heap,
            traces: traces * size_of::<Entry>(),
            // A table bucket is the key, the box and a control byte; a B-tree entry is the
            // key and value plus ~half again of node room.
            index: self.traces.capacity() * (size_of::<(TraceId, Box<Entry>)>() + 1)
                + self.timers.capacity() * size_of::<Reverse<(StreamTime, u64, TraceId)>>()
                + self.by_age.len() * size_of::<(u64, TraceId)>() * 3 / 2,
            contexts: self.contexts.heap_bytes(),
            decisions: caches
                .iter()
                .map(|c| {
                    c.map.capacity() * (size_of::<(TraceId, (Decision, StreamTime))>() + 1)
                        + c.fifo.capacity() * size_of::<(TraceId, StreamTime)>()
                })
                .sum(),
        }
    }

    /// Current gauges.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            heap: self.heap(),
            contexts: self.contexts.len(),
            traces: self.traces.len(),
            bytes: self.bytes,
            cached_kept: self.cache.kept.map.len(),
            cached_dropped: self.cache.dropped.map.len(),
            cache_hits: self.cache.hits,
            cache_misses: self.cache.misses,
        }
    }

    /// Number of buffered traces.
    pub fn len(&self) -> usize {
        self.traces.len()
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.traces.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::threshold::Threshold;
    use crate::otlp::{ScopeCtx, SpanId, StatusCode};
    use crate::settings::ByteSize;
    use std::sync::Arc;

    fn limits() -> StoreLimits {
        StoreLimits::from(&StoreConfig {
            decision_wait: Duration::from_secs(10),
            decision_wait_after_root: Duration::from_secs(2),
            max_trace_age: Duration::from_secs(60),
            max_traces: 1000,
            max_bytes: ByteSize(1 << 30),
            max_spans_per_trace: 100,
            max_trace_bytes: ByteSize(1 << 20),
            decision_cache: config::DecisionCacheConfig {
                sampled_cache_size: 100,
                sampled_ttl: Duration::from_secs(30),
                non_sampled_cache_size: 50,
                non_sampled_ttl: Duration::from_secs(20),
            },
            ..StoreConfig::default()
        })
    }

    fn tid(n: u8) -> TraceId {
        TraceId([n; 16])
    }

    fn span(root: bool) -> (SpanMeta, SpanRef) {
        let meta = SpanMeta {
            span_id: SpanId([1; 8]),
            is_root: root,
            start_ns: 1,
            end_ns: 2,
            status: StatusCode::Unset,
            size: 100,
            ..Default::default()
        };
        (
            meta,
            SpanRef {
                ctx: Arc::new(ScopeCtx::default()),
                bytes: bytes::Bytes::from_static(&[0; 100]),
            },
        )
    }

    fn add(s: &mut TraceStore, id: u8, root: bool, offset: i64, at_ms: u64) -> Admit {
        let (m, r) = span(root);
        s.add(tid(id), &m, &r, offset, 0, StreamTime::from_millis(at_ms))
    }

    fn due(s: &mut TraceStore, at_ms: u64) -> Vec<(u8, Trigger)> {
        let mut out = Vec::new();
        s.poll_due(StreamTime::from_millis(at_ms), &mut out);
        out.iter().map(|d| (d.trace_id.0[0], d.trigger)).collect()
    }

    #[test]
    fn inactivity_extends_with_each_span() {
        let mut s = TraceStore::new(limits());
        assert_eq!(
            add(&mut s, 1, false, 0, 0),
            Admit::Buffered { new_ref: true }
        );
        assert_eq!(
            add(&mut s, 1, false, 0, 5_000),
            Admit::Buffered { new_ref: false }
        );
        assert_eq!(
            add(&mut s, 1, false, 1, 8_000),
            Admit::Buffered { new_ref: true }
        );
        assert!(
            due(&mut s, 10_000).is_empty(),
            "activity at 8s pushes the deadline to 18s"
        );
        assert!(due(&mut s, 17_999).is_empty());
        assert_eq!(due(&mut s, 18_000), vec![(1, Trigger::Inactivity)]);
        assert!(s.is_empty());
        assert_eq!(s.stats().bytes, 0);
    }

    #[test]
    fn root_shortens_the_wait_and_age_caps_it() {
        let mut s = TraceStore::new(limits());
        add(&mut s, 1, false, 0, 0);
        add(&mut s, 1, true, 0, 1_000);
        assert!(due(&mut s, 2_999).is_empty());
        assert_eq!(due(&mut s, 3_000), vec![(1, Trigger::AfterRoot)]);

        // A trace that keeps receiving spans is decided at max_trace_age.
        for t in (0..=60_000).step_by(5_000) {
            add(&mut s, 2, false, t as i64, t);
            if t < 60_000 {
                assert!(due(&mut s, t).is_empty(), "at {t}");
            }
        }
        assert_eq!(due(&mut s, 60_000), vec![(2, Trigger::MaxAge)]);
    }

    #[test]
    fn offsets_are_listed_once_each() {
        let mut s = TraceStore::new(limits());
        for (off, at) in [(3, 0), (3, 1), (7, 2), (9, 3), (9, 4)] {
            add(&mut s, 1, false, off, at);
        }
        let mut out = Vec::new();
        s.poll_due(StreamTime::from_millis(60_000), &mut out);
        assert_eq!(out[0].offsets, vec![3, 7, 9]);
        assert_eq!(out[0].summary.span_count, 5);
        let t = out.remove(0);
        assert_eq!(t.spans.len(), 5);
        assert_eq!(t.spans.into_vec().len(), 5, "every span read back out");
    }

    #[test]
    fn late_spans_follow_the_remembered_decision() {
        let mut s = TraceStore::new(limits());
        add(&mut s, 1, true, 0, 0);
        let out = due(&mut s, 2_000);
        assert_eq!(out.len(), 1);
        let keep = Decision {
            keep: true,
            policy: Some(0),
            threshold: crate::otlp::threshold::Threshold::ALWAYS,
        };
        s.remember(tid(1), keep, StreamTime::from_millis(2_000));
        assert_eq!(add(&mut s, 1, false, 5, 3_000), Admit::Decided(keep));
        assert!(s.is_empty(), "late span is not buffered");
        // After the TTL it is forgotten and would start a new trace.
        assert_eq!(
            add(&mut s, 1, false, 6, 32_001),
            Admit::Buffered { new_ref: true }
        );
        let drop = Decision {
            keep: false,
            policy: None,
            threshold: Threshold::NEVER,
        };
        s.remember(tid(2), drop, StreamTime::from_millis(40_000));
        assert_eq!(add(&mut s, 2, false, 7, 40_001), Admit::Decided(drop));
    }

    #[test]
    fn decision_cache_is_bounded_apart_for_keeps_and_drops() {
        let mut s = TraceStore::new(limits());
        let keep = Decision {
            keep: true,
            policy: Some(0),
            threshold: crate::otlp::threshold::Threshold::ALWAYS,
        };
        let drop = Decision {
            keep: false,
            policy: None,
            threshold: Threshold::NEVER,
        };
        let at = StreamTime::from_millis;
        // 100 keeps, then a flood of 200 drops: the drops do not push out the keeps.
        for i in 0..100u8 {
            s.remember(tid(i), keep, at(u64::from(i)));
        }
        for i in 0..200u8 {
            let mut id = [0xdd; 16];
            id[0] = i;
            s.remember(TraceId(id), drop, at(200 + u64::from(i)));
        }
        let st = s.stats();
        assert_eq!((st.cached_kept, st.cached_dropped), (100, 50));
        assert_eq!(s.decision(&tid(0), at(500)), Some(keep));
        // Count bound on keeps: 10 more push out the 10 oldest.
        for i in 100..110u8 {
            s.remember(tid(i), keep, at(600));
        }
        assert_eq!(s.stats().cached_kept, 100);
        assert_eq!(s.decision(&tid(9), at(600)), None);
        assert_eq!(s.decision(&tid(10), at(600)), Some(keep));
        // TTLs apart: drops (20 s) are forgotten before keeps (30 s).
        let mut id = [0xdd; 16];
        id[0] = 199;
        assert_eq!(s.decision(&TraceId(id), at(20_100)), Some(drop));
        assert_eq!(s.decision(&TraceId(id), at(20_500)), None);
        assert_eq!(s.decision(&tid(109), at(29_000)), Some(keep));
        assert_eq!(s.decision(&tid(109), at(30_700)), None);
        // Hits and misses: a late span of a remembered trace hits; a new trace misses.
        s.remember(tid(200), keep, at(31_000));
        let (m, r) = span(false);
        assert_eq!(
            s.add(tid(200), &m, &r, 1, 0, at(31_001)),
            Admit::Decided(keep)
        );
        assert!(matches!(
            s.add(tid(201), &m, &r, 2, 0, at(31_002)),
            Admit::Buffered { .. }
        ));
        s.add(tid(201), &m, &r, 3, 0, at(31_003));
        let st = s.stats();
        assert_eq!(
            (st.cache_hits, st.cache_misses),
            (1, 1),
            "a trace's later spans are not misses"
        );
    }

    #[test]
    fn overflow_decides_the_oldest() {
        let mut l = limits();
        l.max_traces = 3;
        let mut s = TraceStore::new(l);
        for i in 1..=3 {
            add(&mut s, i, false, i64::from(i), u64::from(i));
        }
        assert!(!s.has_forced());
        add(&mut s, 4, false, 4, 4);
        assert!(s.has_forced());
        let forced: Vec<(u8, Trigger)> = s
            .take_forced()
            .map(|d| (d.trace_id.0[0], d.trigger))
            .collect();
        assert_eq!(forced, vec![(1, Trigger::Overflow)]);
        assert_eq!(s.len(), 3);
        // The forced trace's stale timer does not fire again.
        assert_eq!(due(&mut s, 100_000).len(), 3);
    }

    #[test]
    fn byte_budget_and_pause_mode() {
        let mut l = limits();
        l.max_bytes = 250;
        let mut s = TraceStore::new(l.clone());
        add(&mut s, 1, false, 0, 0);
        add(&mut s, 2, false, 0, 0);
        add(&mut s, 3, false, 0, 0);
        assert_eq!(s.take_forced().count(), 1);
        assert!(s.stats().bytes <= 250);

        l.on_overflow = OnOverflow::Pause;
        let mut s = TraceStore::new(l);
        add(&mut s, 1, false, 0, 0);
        add(&mut s, 2, false, 0, 0);
        assert!(!s.over_budget());
        add(&mut s, 3, false, 0, 0);
        assert!(
            s.over_budget(),
            "pause mode reports over budget instead of forcing"
        );
        assert!(!s.has_forced());
    }

    #[test]
    fn byte_budget_holds_while_existing_traces_grow() {
        // Spans are 100 bytes; two traces open, then only they grow: the oldest is decided as
        // soon as the total passes the budget, not when a new trace arrives.
        let mut l = limits();
        l.max_bytes = 450;
        let mut s = TraceStore::new(l);
        add(&mut s, 1, false, 0, 0);
        add(&mut s, 2, false, 0, 0);
        for i in 1..=10 {
            add(&mut s, 2, false, i, 0);
            add(&mut s, 1, false, i, 0);
            assert!(s.stats().bytes <= 450, "{} bytes buffered", s.stats().bytes);
        }
        assert!(s.take_forced().all(|d| d.trigger == Trigger::Overflow));
    }

    #[test]
    fn giant_trace_is_decided_at_its_limit() {
        let mut l = limits();
        l.max_spans_per_trace = 5;
        let mut s = TraceStore::new(l);
        for i in 0..4 {
            add(&mut s, 9, false, i, 0);
            add(&mut s, 1, false, i, 0);
        }
        assert!(!s.has_forced());
        add(&mut s, 9, false, 4, 0);
        let mut forced: Vec<DueTrace> = s.take_forced().collect();
        assert_eq!(forced.len(), 1);
        assert_eq!(forced[0].trigger, Trigger::TraceLimit);
        assert_eq!(forced[0].spans.get().len(), 5);
        assert_eq!(s.len(), 1, "other traces are untouched");
    }

    #[test]
    fn timers_run_on_stream_time_to_the_millisecond() {
        let t0 = StreamTime::from_millis(1_700_000_000_000);
        let mut s = TraceStore::new(limits());
        let (m, r) = span(true);
        s.add(tid(1), &m, &r, 0, 0, t0);
        let mut out = Vec::new();
        s.poll_due(t0 + Duration::from_millis(1_999), &mut out);
        assert!(out.is_empty());
        s.poll_due(t0 + Duration::from_millis(2_000), &mut out);
        assert_eq!(out.len(), 1);
        assert!(s.is_empty());
    }

    /// Generated traffic (the bench's mix), keyed and split: what the store holds on the heap
    /// for buffered spans stays under their wire bytes (bodies copied without their records'
    /// resources, contexts held once), and every span comes back byte for byte.
    #[test]
    fn buffered_traffic_costs_less_heap_than_its_wire_bytes() {
        use crate::gen::{plan_records, GenOptions};
        use crate::otlp::{scan_request_into, NoProbe, ScannedSpan};
        for split in [false, true] {
            let (recs, _) = plan_records(&GenOptions {
                traces: 3000,
                split,
                ..GenOptions::default()
            });
            let mut s = TraceStore::new(StoreLimits::from(&StoreConfig::default()));
            let (mut out, mut aheads): (Vec<ScannedSpan>, Vec<usize>) = (Vec::new(), Vec::new());
            let (mut wire, mut spans, mut sent) = (0, 0, HashMap::new());
            for (offset, r) in recs.iter().enumerate() {
                let rec = bytes::Bytes::from(r.value.clone());
                scan_request_into(&rec, &NoProbe, 0, &mut out).unwrap();
                ahead(&out, &mut aheads);
                for (x, &a) in out.iter().zip(&aheads) {
                    s.add(
                        x.trace_id,
                        &x.meta,
                        &x.span,
                        offset as i64,
                        a,
                        StreamTime::ZERO,
                    );
                    sent.entry(x.trace_id)
                        .or_insert_with(Vec::new)
                        .push((x.span.bytes.clone(), x.span.ctx.resource_field.clone()));
                }
                s.end_record();
                wire += rec.len();
                spans += out.len();
            }
            let heap = s.stats().heap;
            let per_span = |b: usize| b as f64 / spans as f64;
            let wire_per_span = per_span(wire);
            eprintln!(
                "split {split}: {spans} spans, {wire_per_span:.0} B/span on the wire; store heap per span: {:?}",
                heap.parts().map(|(p, b)| (p, per_span(b).round()))
            );
            assert!(
                per_span(heap.total()) < wire_per_span,
                "split {split}: {heap:?} for {spans} spans of {wire_per_span:.0} B on the wire"
            );
            assert!(
                per_span(heap.spans) < 0.85 * wire_per_span,
                "split {split}: span buffers {:.0} B per span",
                per_span(heap.spans)
            );
            assert!(s.stats().contexts < 2000, "{} contexts", s.stats().contexts);
            let mut due = Vec::new();
            s.poll_due(StreamTime::ZERO + Duration::from_secs(3600), &mut due);
            assert_eq!(due.len(), 3000);
            for t in due {
                let back: Vec<_> = t
                    .spans
                    .into_vec()
                    .iter()
                    .map(|x| (x.bytes.clone(), x.ctx.resource_field.clone()))
                    .collect();
                assert_eq!(back, sent[&t.trace_id], "split {split}");
            }
            assert_eq!(s.stats().heap.spans, 0);
        }
    }
}
