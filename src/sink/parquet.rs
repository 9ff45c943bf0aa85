//! Hot Parquet segments: a partition's kept spans, written as sorted segments by size or age.

use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStoreExt;

use super::breaker::Breaker;
use super::{backoff, Acks, KeptTrace, Released, Sink, Write};
use crate::archive::{self, KeptSpan};
use crate::clock::{Clock, MonoTime};
use crate::telemetry::{self, SinkLabel};

/// Encoding attempts before a segment that keeps failing to encode is given up.
const MAX_ENCODE_ATTEMPTS: u32 = 3;

/// Hot Parquet segments of one partition, flushed by size or age.
pub struct ParquetSink {
    store: Arc<dyn object_store::ObjectStore>,
    topic: Arc<str>,
    partition: i32,
    flush_interval: Duration,
    max_bytes: u64,
    encode_slots: Arc<tokio::sync::Semaphore>,
    rows: Vec<KeptSpan>,
    offsets: Released,
    bytes: u64,
    first_offset: i64,
    last_offset: i64,
    opened_at: Option<MonoTime>,
    now: MonoTime,
    /// When each trace of the open segment came in, for the end-to-end histogram.
    first_in: Vec<MonoTime>,
    clock: Arc<dyn Clock>,
    /// The hot tier's breaker (every partition's segments share it).
    breaker: Arc<Breaker>,
    /// Puts per segment (`u32::MAX`: until it succeeds).
    attempts: u32,
}

/// The hot tier as every partition's segment writer shares it.
#[derive(Clone)]
pub struct HotTier {
    /// Where segments go.
    pub store: Arc<dyn object_store::ObjectStore>,
    /// The breaker every partition's puts share.
    pub breaker: Arc<Breaker>,
    /// Bounds concurrent segment encodes process-wide.
    pub encode_slots: Arc<tokio::sync::Semaphore>,
}

impl ParquetSink {
    /// A segment writer for one partition, cutting a segment at `max_bytes` or after
    /// `flush_interval`.
    pub fn new(
        hot: &HotTier,
        topic: Arc<str>,
        partition: i32,
        flush_interval: Duration,
        max_bytes: u64,
        clock: Arc<dyn Clock>,
    ) -> Self {
        ParquetSink {
            store: Arc::clone(&hot.store),
            topic,
            partition,
            flush_interval,
            max_bytes,
            encode_slots: Arc::clone(&hot.encode_slots),
            rows: Vec::new(),
            offsets: Vec::new(),
            bytes: 0,
            first_offset: i64::MAX,
            last_offset: i64::MIN,
            opened_at: None,
            now: MonoTime::ZERO,
            first_in: Vec::new(),
            clock,
            breaker: Arc::clone(&hot.breaker),
            attempts: u32::MAX,
        }
    }

    /// A segment gets `attempts` puts, then its spans are dropped and counted; while the
    /// breaker is open it is dropped at once (for best-effort delivery, behind
    /// [`super::BestEffort`]).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    fn write_out(&mut self, acks: &mut Acks) {
        if self.rows.is_empty() && self.offsets.is_empty() {
            return;
        }
        let segment = Segment {
            rows: std::mem::take(&mut self.rows),
            first_in: std::mem::take(&mut self.first_in),
            first: self.first_offset,
            last: self.last_offset,
            store: Arc::clone(&self.store),
            topic: Arc::clone(&self.topic),
            partition: self.partition,
            slots: Arc::clone(&self.encode_slots),
            clock: Arc::clone(&self.clock),
            breaker: Arc::clone(&self.breaker),
        };
        let offsets = std::mem::take(&mut self.offsets);
        let held = self.bytes;
        self.bytes = 0;
        self.first_offset = i64::MAX;
        self.last_offset = i64::MIN;
        self.opened_at = None;
        let attempts = self.attempts;
        acks.push_write(Write {
            spans: segment.rows.len(),
            bytes: held,
            fut: Box::pin(async move {
                segment.write(attempts).await;
                offsets
            }),
        });
    }
}

/// One segment on its way to the store.
struct Segment {
    rows: Vec<KeptSpan>,
    first_in: Vec<MonoTime>,
    first: i64,
    last: i64,
    store: Arc<dyn object_store::ObjectStore>,
    topic: Arc<str>,
    partition: i32,
    slots: Arc<tokio::sync::Semaphore>,
    clock: Arc<dyn Clock>,
    breaker: Arc<Breaker>,
}

impl Segment {
    /// Encodes and puts the segment, retrying failed puts with backoff behind the breaker;
    /// `attempts` puts at most (`u32::MAX`: until it succeeds). A best-effort write sheds while
    /// the breaker is open. Everything is counted: out, rejected, dropped.
    async fn write(self, attempts: u32) {
        let (partition, first, last) = (self.partition, self.first, self.last);
        let handed_over = self.clock.now();
        let n = self.rows.len();
        let rows = Arc::new(self.rows);
        let mut attempt = 0u32;
        let mut encode_failures = 0u32;
        let files = loop {
            let encoded = {
                let _slot = self.slots.acquire().await;
                let rows = Arc::clone(&rows);
                tokio::task::spawn_blocking(move || {
                    let mut rejected = Vec::new();
                    archive::encode_segment_skipping(&rows, 1 << 20, &mut rejected)
                        .map(|files| (files, rejected))
                })
                .await
                .map_err(|e| format!("encoder task: {e}"))
                .and_then(|r| r.map_err(|e| e.to_string()))
            };
            match encoded {
                Ok((files, rejected)) => {
                    if let Some(r) = rejected.first() {
                        // Validated on the way in, so this is corruption or a bug: the
                        // rest of the segment goes on, the spans are counted and named.
                        telemetry::spans_rejected(SinkLabel::Parquet, rejected.len());
                        tracing::error!(partition, spans = rejected.len(), trace_id = %r.trace_id, reason = %r.reason, "kept spans left out of their segment");
                    }
                    break files;
                }
                Err(e) => {
                    // Encoding is a pure function of the rows (and a panicking encoder task
                    // panics again): after a few tries the same input fails the same way, so
                    // the segment is given up, loudly.
                    telemetry::sink_error(SinkLabel::Parquet);
                    encode_failures += 1;
                    if encode_failures >= MAX_ENCODE_ATTEMPTS {
                        telemetry::spans_rejected(SinkLabel::Parquet, n);
                        tracing::error!(partition, spans = n, first, last, error = %e, "segment cannot be encoded; its spans are left out of the archive");
                        return;
                    }
                    tracing::error!(partition, error = %e, "segment encoding failed; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt = attempt.saturating_add(1);
                }
            }
        };
        let breaker = &self.breaker;
        let mut attempt = 0u32;
        loop {
            if attempts != u32::MAX && breaker.would_wait() {
                telemetry::spans_dropped(SinkLabel::Parquet, n);
                tracing::warn!(
                    partition,
                    spans = n,
                    "best-effort hot segment shed: circuit open"
                );
                return;
            }
            breaker.permit().await;
            let mut failed = None;
            for f in &files {
                let path = archive::hot_segment_path(
                    &self.topic,
                    partition,
                    first,
                    last,
                    f.hour,
                    f.content,
                );
                match self.store.put(&path, f.bytes.clone().into()).await {
                    Ok(_) => telemetry::archive_file("hot", f.bytes.len()),
                    Err(e) => {
                        telemetry::sink_error(SinkLabel::Parquet);
                        tracing::warn!(%path, error = %e, "segment write failed; retrying");
                        failed = Some(e.to_string());
                        break;
                    }
                }
            }
            breaker.finished(failed.is_none());
            let Some(why) = failed else {
                telemetry::spans_out(SinkLabel::Parquet, n);
                let now = self.clock.now();
                telemetry::sink_write(SinkLabel::Parquet, now.saturating_since(handed_over), n);
                telemetry::end_to_end(SinkLabel::Parquet, &self.first_in, now);
                return;
            };
            attempt = attempt.saturating_add(1);
            if attempt >= attempts {
                telemetry::spans_dropped(SinkLabel::Parquet, n);
                tracing::warn!(partition, spans = n, attempts, error = %why, "best-effort hot segment given up; dropped");
                return;
            }
            tokio::time::sleep(backoff(attempt - 1)).await;
        }
    }
}

impl Sink for ParquetSink {
    fn accept(&mut self, t: &KeptTrace, acks: &mut Acks) {
        if self.opened_at.is_none() {
            self.opened_at = Some(self.now);
        }
        for s in &t.spans {
            // What the span takes once decoded: its resource and scope repeat on every row.
            self.bytes +=
                (s.bytes.len() + s.ctx.resource_field.len() + s.ctx.scope_field.len()) as u64;
            self.rows.push(KeptSpan {
                trace_id: t.trace_id,
                span: s.clone(),
                policy: Arc::clone(&t.policy),
                threshold: t.decision.threshold,
            });
        }
        for &o in &t.offsets {
            self.first_offset = self.first_offset.min(o);
            self.last_offset = self.last_offset.max(o);
        }
        self.offsets.extend_from_slice(&t.offsets);
        self.first_in.push(t.first_in);
        if self.bytes >= self.max_bytes {
            self.write_out(acks);
        }
    }

    fn tick(&mut self, now: MonoTime, acks: &mut Acks) {
        self.now = now;
        if self
            .opened_at
            .is_some_and(|t| now.saturating_since(t) >= self.flush_interval)
        {
            self.write_out(acks);
        }
    }

    fn flush(&mut self, acks: &mut Acks) {
        self.write_out(acks);
    }

    fn label(&self) -> SinkLabel {
        SinkLabel::Parquet
    }

    fn required(&self) -> bool {
        true
    }

    fn healthy(&self) -> bool {
        self.breaker.is_closed()
    }
}
