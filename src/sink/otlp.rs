//! OTLP exporters as hot sinks (`sinks.otlp_http[]`, `sinks.otlp_grpc[]`): kept traces go to a
//! tracing backend (Tempo, Jaeger, an OTLP vendor, a Collector) as `ExportTraceServiceRequest`s
//! spliced from the spans' original bytes, sampling marks included.
//!
//! Each configured exporter is one [`OtlpExporter`] for the process (its client, breaker,
//! request slots and adaptive batch size); each partition has an [`OtlpSink`] that gathers its
//! kept traces into batches of whole traces, cut at the adaptive target (spans), at
//! `batch.max_bytes`, or `batch.linger` after the batch opened.
//!
//! Answers are classed as the OTLP specification says ([`transport::Outcome`]): transient
//! failures are retried with exponential backoff and full jitter, waiting at least what the
//! server asked for (`Retry-After`, gRPC RetryInfo); permanent ones send the batch's traces to
//! the dead-letter topic, one record per trace, with the reason (`required`), or drop and count
//! them (`best_effort`). A partial success counts the rejected spans and is not retried.

pub mod transport;

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use self::transport::{Outcome, Transport};
use super::batch::{AdaptiveBatch, Backlog};
use super::breaker::Breaker;
use super::config::{Delivery, OtlpSinkConfig, RetryOnFailure};
use super::{jitter, Acks, KeptTrace, Producer, Sink, Write};
use crate::clock::{Clock, MonoTime};
use crate::otlp::{self, SpanRef, TraceId};
use crate::telemetry::{self, SinkLabel};

/// One configured OTLP exporter, shared by every partition.
pub struct OtlpExporter {
    label: SinkLabel,
    transport: Transport,
    slots: Semaphore,
    batch: AdaptiveBatch,
    backlog: Backlog,
    delivery: Delivery,
    retry: RetryOnFailure,
    max_bytes: usize,
    linger: Duration,
    producer: Producer,
    dead_letter_topic: Arc<str>,
    /// No request starts before this: the backend asked every client to wait (`Retry-After`,
    /// RetryInfo), not just the request it answered.
    not_before: std::sync::Mutex<MonoTime>,
    clock: Arc<dyn Clock>,
    /// Every partition's requests to this backend share it.
    breaker: Breaker,
}

impl OtlpExporter {
    /// The exporter of `cfg`; refused chunks go to `dead_letter_topic` through `producer`.
    pub fn new(
        cfg: &OtlpSinkConfig,
        grpc: bool,
        producer: Producer,
        dead_letter_topic: Arc<str>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, String> {
        let label = SinkLabel::otlp(grpc, &cfg.name);
        let transport =
            Transport::new(cfg, grpc).map_err(|e| format!("{}: {e}", label.as_str()))?;
        tracing::info!(sink = label.as_str(), target = %transport.target(), delivery = ?cfg.delivery, "OTLP sink ready");
        Ok(OtlpExporter {
            breaker: Breaker::new(label, Arc::clone(&clock)),
            label,
            transport,
            slots: Semaphore::new(cfg.sending_queue.num_consumers),
            batch: AdaptiveBatch::new(cfg.batch.min_spans, cfg.batch.max_spans, cfg.batch.adaptive),
            backlog: Backlog::default(),
            delivery: cfg.delivery,
            retry: cfg.retry_on_failure.clone(),
            max_bytes: usize::try_from(cfg.batch.max_bytes.0).unwrap_or(usize::MAX),
            linger: cfg.batch.linger,
            producer,
            dead_letter_topic,
            not_before: std::sync::Mutex::new(MonoTime::ZERO),
            clock,
        })
    }

    /// The metric label (`otlp_http/NAME`).
    pub fn label(&self) -> SinkLabel {
        self.label
    }

    fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Delivery: whether a partition's commit waits for this exporter.
    pub fn delivery(&self) -> Delivery {
        self.delivery
    }

    /// The wait before retry `attempt` (0-based): full jitter under a ceiling doubling from
    /// `initial_interval` to `max_interval`, and never less than the server asked for.
    fn retry_wait(&self, attempt: u32, asked: Option<Duration>) -> Duration {
        let cap = self
            .retry
            .initial_interval
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.retry.max_interval);
        jitter(cap).max(asked.unwrap_or(Duration::ZERO))
    }

    fn not_before(&self) -> MonoTime {
        *self.not_before.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn hold_until(&self, t: MonoTime) {
        let mut nb = self.not_before.lock().unwrap_or_else(|p| p.into_inner());
        *nb = (*nb).max(t);
    }

    /// Sends one request until it is delivered, refused for good, or (with a deadline) given up.
    async fn send(&self, req: &Request, deadline: Option<MonoTime>) -> Sent {
        let breaker = self.breaker();
        let body = match self.transport.wire_body(&req.body) {
            Ok(b) => b,
            Err(e) => {
                self.backlog.remove(req.spans);
                return Sent::Refused(format!("compressing the request: {e}"));
            }
        };
        let mut waiting = true;
        let mut attempt = 0u32;
        let sent = loop {
            if deadline.is_some() && breaker.would_wait() {
                break Sent::GaveUp("circuit open".into());
            }
            breaker.permit().await;
            let outcome = {
                let Ok(_slot) = self.slots.acquire().await else {
                    break Sent::GaveUp("exporter closed".into());
                };
                loop {
                    let wait = self.not_before().saturating_since(self.clock.now());
                    if wait.is_zero() {
                        break;
                    }
                    tokio::time::sleep(wait).await;
                }
                if std::mem::take(&mut waiting) {
                    self.backlog.remove(req.spans);
                }
                let started = self.clock.now();
                let o = self.transport.export(body.clone()).await;
                telemetry::sink_request(self.label, self.clock.now().saturating_since(started));
                o
            };
            match outcome {
                Outcome::Delivered { rejected, why } => {
                    breaker.finished(true);
                    if rejected > 0 {
                        telemetry::spans_rejected(self.label, rejected as usize);
                        tracing::warn!(sink = self.label.as_str(), rejected, reason = %why, "the backend rejected part of a batch (partial success; not retried)");
                    }
                    break Sent::Delivered(rejected);
                }
                Outcome::Permanent(why) => {
                    // The backend answered: the batch is at fault, not the sink.
                    breaker.finished(true);
                    telemetry::sink_error(self.label);
                    break Sent::Refused(why);
                }
                Outcome::Transient {
                    why,
                    throttled,
                    retry_after,
                } => {
                    // Throttling is an answer from a live backend, paced by its own delay.
                    breaker.finished(throttled);
                    telemetry::sink_error(self.label);
                    let wait = self.retry_wait(attempt, retry_after);
                    if let Some(asked) = retry_after {
                        self.hold_until(self.clock.now() + asked);
                    }
                    tracing::warn!(sink = self.label.as_str(), error = %why, attempt, retry_in_ms = wait.as_millis() as u64, "export failed; retrying");
                    if let Some(d) = deadline {
                        if self.clock.now() + wait >= d {
                            break Sent::GaveUp(why);
                        }
                    }
                    tokio::time::sleep(wait).await;
                    attempt = attempt.saturating_add(1);
                }
            }
        };
        if waiting {
            self.backlog.remove(req.spans);
        }
        sent
    }

    /// Writes the traces of a refused request to the dead-letter topic, one record each.
    async fn dead_letter(&self, req: &Request, spans: &[SpanRef], why: &str) {
        for (trace_id, range) in &req.traces {
            let key = trace_id.to_hex();
            let payload = otlp::encode_request(spans[range.clone()].iter());
            super::dead_letter::refused_kept(
                &self.producer,
                &self.dead_letter_topic,
                &key,
                &payload,
                why,
                self.label,
            )
            .await;
        }
    }
}

/// What became of one request.
enum Sent {
    /// Delivered; that many spans rejected by the backend.
    Delivered(u64),
    /// Refused for good.
    Refused(String),
    /// Best effort: out of time.
    GaveUp(String),
}

/// One request of a batch: its body and the traces (ranges of the batch's spans) it carries.
struct Request {
    body: Vec<u8>,
    spans: usize,
    traces: Vec<(TraceId, Range<usize>)>,
}

/// A cut batch on its way.
struct Batch {
    spans: Vec<SpanRef>,
    requests: Vec<Request>,
    first_in: Vec<MonoTime>,
    cut_at: MonoTime,
}

/// The OTLP sink of one partition: a batch being filled.
pub struct OtlpSink {
    exporter: Arc<OtlpExporter>,
    spans: Vec<SpanRef>,
    traces: Vec<(TraceId, Range<usize>)>,
    offsets: Vec<i64>,
    first_in: Vec<MonoTime>,
    bytes: usize,
    opened_at: Option<MonoTime>,
    now: MonoTime,
}

impl OtlpSink {
    /// A partition's batcher in front of `exporter` (best effort: each batch gives up after
    /// `retry_on_failure.max_elapsed_time`, behind [`super::BestEffort`]).
    pub fn new(exporter: Arc<OtlpExporter>) -> Self {
        OtlpSink {
            exporter,
            spans: Vec::new(),
            traces: Vec::new(),
            offsets: Vec::new(),
            first_in: Vec::new(),
            bytes: 0,
            opened_at: None,
            now: MonoTime::ZERO,
        }
    }

    /// Splits the batch into requests of whole traces under `max_bytes` (a larger trace alone
    /// goes in several).
    fn requests(&self, spans: &[SpanRef], traces: &[(TraceId, Range<usize>)]) -> Vec<Request> {
        let max = self.exporter.max_bytes;
        let mut out = Vec::new();
        // The request being filled: its span range, its traces, its encoded size.
        type Open = (Range<usize>, Vec<(TraceId, Range<usize>)>, usize);
        let mut open: Option<Open> = None;
        let finish = |r: Range<usize>, t: Vec<(TraceId, Range<usize>)>, out: &mut Vec<Request>| {
            out.push(Request {
                body: otlp::encode_request(spans[r.clone()].iter()),
                spans: r.len(),
                traces: t,
            });
        };
        for (id, range) in traces {
            let size = otlp::encoded_request_len(spans[range.clone()].iter());
            if size > max {
                if let Some((r, t, _)) = open.take() {
                    finish(r, t, &mut out);
                }
                let mut at = range.start;
                for chunk in otlp::chunk_spans(&spans[range.clone()], max) {
                    let r = at..at + chunk.len();
                    at = r.end;
                    finish(r.clone(), vec![(*id, r)], &mut out);
                }
                continue;
            }
            match &mut open {
                Some((r, t, total)) if *total + size <= max => {
                    r.end = range.end;
                    t.push((*id, range.clone()));
                    *total += size;
                }
                _ => {
                    if let Some((r, t, _)) = open.take() {
                        finish(r, t, &mut out);
                    }
                    open = Some((range.clone(), vec![(*id, range.clone())], size));
                }
            }
        }
        if let Some((r, t, _)) = open {
            finish(r, t, &mut out);
        }
        out
    }

    fn cut(&mut self, acks: &mut Acks) {
        if self.spans.is_empty() && self.offsets.is_empty() {
            return;
        }
        let spans = std::mem::take(&mut self.spans);
        let traces = std::mem::take(&mut self.traces);
        let offsets = std::mem::take(&mut self.offsets);
        let first_in = std::mem::take(&mut self.first_in);
        self.bytes = 0;
        self.opened_at = None;
        let requests = self.requests(&spans, &traces);
        let ex = Arc::clone(&self.exporter);
        let n = spans.len();
        ex.backlog.add(n);
        let target = ex.batch.adjust(ex.backlog.get());
        telemetry::sink_batching(ex.label, target, ex.backlog.get());
        let held: u64 = requests.iter().map(|r| r.body.len() as u64).sum::<u64>()
            + spans.iter().map(|s| s.bytes.len() as u64).sum::<u64>();
        let batch = Batch {
            spans,
            requests,
            first_in,
            cut_at: ex.clock.now(),
        };
        // Counted out of the backlog if it is dropped before it is sent (shed, cancelled).
        let backlog = InBacklog {
            ex: Arc::clone(&ex),
            spans: n,
        };
        acks.push_write(Write {
            bytes: held,
            spans: n,
            fut: Box::pin(async move {
                let deadline = (ex.delivery == Delivery::BestEffort)
                    .then(|| ex.clock.now() + ex.retry.max_elapsed_time);
                deliver(&ex, batch, deadline, backlog).await;
                offsets
            }),
        });
    }
}

/// A batch's spans in its exporter's backlog until its requests are sent (`send` takes each
/// request's out); what is left when it is dropped (shed, cancelled) is taken out then.
struct InBacklog {
    ex: Arc<OtlpExporter>,
    spans: usize,
}

impl Drop for InBacklog {
    fn drop(&mut self) {
        self.ex.backlog.remove(self.spans);
    }
}

/// Sends every request of a batch; records what happened.
async fn deliver(
    ex: &OtlpExporter,
    batch: Batch,
    deadline: Option<MonoTime>,
    mut backlog: InBacklog,
) {
    let label = ex.label;
    let mut delivered = 0usize;
    for req in &batch.requests {
        let sent = ex.send(req, deadline).await;
        // `send` took the request's spans out of the backlog.
        backlog.spans = backlog.spans.saturating_sub(req.spans);
        match sent {
            Sent::Delivered(rejected) => {
                delivered += req.spans;
                telemetry::spans_out(label, req.spans.saturating_sub(rejected as usize));
            }
            Sent::Refused(why) => {
                telemetry::spans_rejected(label, req.spans);
                if deadline.is_some() {
                    tracing::warn!(sink = label.as_str(), spans = req.spans, error = %why, "best-effort sink refused kept spans; dropped");
                } else {
                    tracing::error!(sink = label.as_str(), spans = req.spans, traces = req.traces.len(), error = %why, "kept traces refused by the backend for good; written to the dead-letter topic");
                    ex.dead_letter(req, &batch.spans, &why).await;
                }
            }
            Sent::GaveUp(why) => {
                telemetry::spans_dropped(label, req.spans);
                tracing::warn!(sink = label.as_str(), spans = req.spans, error = %why, "best-effort sink gave up on kept spans; dropped");
            }
        }
    }
    let now = ex.clock.now();
    telemetry::sink_write(label, now.saturating_since(batch.cut_at), batch.spans.len());
    if delivered > 0 {
        telemetry::end_to_end(label, &batch.first_in, now);
    }
}

impl Sink for OtlpSink {
    fn accept(&mut self, t: &KeptTrace, acks: &mut Acks) {
        let size: usize = t.spans.iter().map(|s| s.bytes.len() + 8).sum::<usize>()
            + t.spans
                .first()
                .map_or(0, |s| s.ctx.resource_field.len() + s.ctx.scope_field.len());
        if !self.spans.is_empty() && self.bytes + size > self.exporter.max_bytes {
            self.cut(acks);
        }
        if self.opened_at.is_none() {
            self.opened_at = Some(self.now);
        }
        let start = self.spans.len();
        self.spans.extend(t.spans.iter().cloned());
        self.traces.push((t.trace_id, start..self.spans.len()));
        self.offsets.extend_from_slice(&t.offsets);
        self.first_in.push(t.first_in);
        self.bytes += size;
        if self.spans.len() >= self.exporter.batch.target() || self.bytes >= self.exporter.max_bytes
        {
            self.cut(acks);
        }
    }

    fn tick(&mut self, now: MonoTime, acks: &mut Acks) {
        self.now = now;
        if self
            .opened_at
            .is_some_and(|t| now.saturating_since(t) >= self.exporter.linger)
        {
            self.cut(acks);
        }
    }

    fn flush(&mut self, acks: &mut Acks) {
        self.cut(acks);
    }

    fn label(&self) -> SinkLabel {
        self.exporter.label
    }

    fn required(&self) -> bool {
        true
    }

    fn healthy(&self) -> bool {
        self.exporter.breaker.is_closed()
    }
}
