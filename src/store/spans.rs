//! How a buffered trace holds its spans: their bodies copied out of the records they came in,
//! laid end to end in one buffer per trace, with their resource and scope interned per partition.
//!
//! A span handed to the store is a slice of its Kafka record; keeping the slice would keep the
//! whole record alive (every other trace's spans, every resource and scope of it) until the last
//! of its traces is decided, and would cost a 32 B `Bytes` and an 8 B `Arc` per span. Copying
//! the body (a few hundred bytes, a `memcpy`) lets the record go as soon as it is read, and a
//! trace then costs what its spans' bodies are plus a length prefix each and one [`Run`] per
//! (context, arrival) it came with. Resources and scopes repeat on every record a service sends:
//! interned, each distinct one is held once however many traces refer to it.
//!
//! At its decision the trace is handed out as [`SpanRef`]s again (one `Bytes` over its buffer, no
//! copy), so the sampler, the sinks and the archive read what they read before.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::otlp::{key_hash, put_varint, varint_len, PassHasher, ScopeCtx, SpanRef};

/// The spans of one buffered trace.
#[derive(Debug, Default)]
pub(super) struct TraceSpans {
    /// Each span's body after its length (a varint), in arrival order.
    data: Vec<u8>,
    /// Consecutive spans of one context and arrival share a run.
    runs: Vec<Run>,
}

/// Spans of `data[previous run's end..end]`, sent with `ctx` in a record that arrived at
/// `arrival_ms` (filed by `filed_at_ms` when that is not [`NOT_FILED`]).
#[derive(Debug)]
struct Run {
    ctx: Arc<ScopeCtx>,
    arrival_ms: u64,
    filed_at_ms: u64,
    end: usize,
}

/// `Run::filed_at_ms` when the spans are filed by their arrival.
const NOT_FILED: u64 = u64::MAX;

impl TraceSpans {
    /// Appends one span (body and context as scanned; `ctx` its interned context). `ahead` is
    /// what this trace's following spans in the same record will add (bytes, prefixes included),
    /// so a trace sent whole in one record is allocated once.
    pub(super) fn push(&mut self, span: &SpanRef, ctx: &Arc<ScopeCtx>, ahead: usize) {
        let body = &span.bytes;
        let need = varint_len(body.len() as u64) + body.len();
        if self.data.capacity() - self.data.len() < need {
            // Growth by an eighth keeps the spare capacity small (a doubling vector carries a
            // quarter to a half of itself spare) for ~log(n)/0.12 copies over a trace's life.
            self.data
                .reserve_exact(need.max(ahead).max(self.data.len() / 8));
        }
        put_varint(&mut self.data, body.len() as u64);
        self.data.extend_from_slice(body);
        let (arrival_ms, filed_at_ms) = (
            span.ctx.arrival_ms,
            span.ctx.filed_at_ms.unwrap_or(NOT_FILED),
        );
        let end = self.data.len();
        match self.runs.last_mut() {
            Some(r)
                if Arc::ptr_eq(&r.ctx, ctx)
                    && r.arrival_ms == arrival_ms
                    && r.filed_at_ms == filed_at_ms =>
            {
                r.end = end;
            }
            _ => self.runs.push(Run {
                ctx: Arc::clone(ctx),
                arrival_ms,
                filed_at_ms,
                end,
            }),
        }
    }

    /// Heap bytes held (buffers' capacity): what the store's footprint gauge adds up.
    pub(super) fn heap_bytes(&self) -> usize {
        self.data.capacity() + self.runs.capacity() * std::mem::size_of::<Run>()
    }

    /// The spans as [`SpanRef`]s over this buffer, without copying it; `count` is a capacity
    /// hint. Room reserved for spans that never came (the trace was forced out mid-record) is
    /// given back first: the buffer may live on in a sink.
    pub(super) fn into_refs(mut self, count: usize) -> Vec<SpanRef> {
        if self.data.capacity() - self.data.len() > self.data.len() / 8 {
            self.data.shrink_to_fit();
        }
        refs(Bytes::from(self.data), &self.runs, count)
    }

    /// The spans as [`SpanRef`]s over a copy of the buffer (the trace stays buffered).
    pub(super) fn to_refs(&self, count: usize) -> Vec<SpanRef> {
        refs(Bytes::copy_from_slice(&self.data), &self.runs, count)
    }
}

fn refs(data: Bytes, runs: &[Run], count: usize) -> Vec<SpanRef> {
    let mut out = Vec::with_capacity(count);
    let mut at = 0;
    for run in runs {
        let ctx = Arc::new(ScopeCtx {
            arrival_ms: run.arrival_ms,
            filed_at_ms: (run.filed_at_ms != NOT_FILED).then_some(run.filed_at_ms),
            ..(*run.ctx).clone()
        });
        while at < run.end {
            let Some((len, body_at)) = read_len(&data, at) else {
                // Written by `push` just above: cannot happen; stop rather than misread.
                return out;
            };
            let end = body_at.saturating_add(len).min(run.end);
            out.push(SpanRef {
                ctx: Arc::clone(&ctx),
                bytes: data.slice(body_at..end),
            });
            at = end;
        }
    }
    out
}

/// The varint at `data[at..]` and where what follows it starts.
fn read_len(data: &[u8], mut at: usize) -> Option<(usize, usize)> {
    let mut v = 0usize;
    let mut shift = 0;
    loop {
        let b = *data.get(at)?;
        at += 1;
        v |= usize::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some((v, at));
        }
        shift += 7;
    }
}

/// One partition's resources and scopes, each distinct one held once, owned (not a slice of a
/// record). Entries no buffered trace refers to any more are swept when the table has doubled
/// in count or in bytes since the last sweep, so it holds at most twice what buffered traces
/// refer to (plus [`Contexts::MIN_SWEEP`] entries or [`Contexts::MIN_SWEEP_BYTES`]). The hash
/// is not keyed: a bucket holds at most [`Contexts::MAX_BUCKET`] contexts, past which a context
/// is held by its runs only (not shared), so crafted collisions cost a bounded compare.
#[derive(Debug, Default)]
pub(super) struct Contexts {
    by_hash: HashMap<u64, Vec<Arc<ScopeCtx>>, std::hash::BuildHasherDefault<PassHasher>>,
    len: usize,
    sweep_at: usize,
    /// Bytes of the contexts' fields held by the table.
    bytes: usize,
    sweep_bytes_at: usize,
    /// The last context interned, as scanned and as interned, with the hash of its resource:
    /// the spans of one scope of a record share their scanned context, so a record interns
    /// each of its scopes once; and its scopes under one resource share that resource's
    /// scanned bytes (which `last` keeps alive), so the resource is hashed once per record and
    /// its interned copy is shared by the scopes' contexts, not compared again or copied.
    last: Option<(Arc<ScopeCtx>, Arc<ScopeCtx>, u64)>,
}

impl Contexts {
    const MIN_SWEEP: usize = 256;
    const MIN_SWEEP_BYTES: usize = 1 << 20;
    const MAX_BUCKET: usize = 8;

    /// The interned context with the resource and scope of `scanned` (its arrival left out:
    /// runs carry that).
    pub(super) fn intern(&mut self, scanned: &Arc<ScopeCtx>) -> Arc<ScopeCtx> {
        if let Some((s, i, _)) = &self.last {
            if Arc::ptr_eq(s, scanned) {
                return Arc::clone(i);
            }
        }
        let fields = scanned.fields();
        let known = self
            .last
            .as_ref()
            .filter(|(s, _, _)| same_slice(&s.resource_field, &scanned.resource_field));
        let (resource_hash, shared) = match known {
            Some((_, i, h)) => (*h, Some(&i.resource_field)),
            None => (key_hash(&scanned.resource_field), None),
        };
        let bucket = self
            .by_hash
            .entry(scanned.content_hash_with(resource_hash))
            .or_default();
        let found = bucket
            .iter()
            .find(|c| {
                let f = c.fields();
                let resource =
                    shared.is_some_and(|i| same_slice(i, &c.resource_field)) || f[0] == fields[0];
                resource && f[1..] == fields[1..]
            })
            .cloned();
        let interned = match found {
            Some(c) => c,
            None => {
                let c = Arc::new(owned(&fields, shared.cloned()));
                if bucket.len() < Self::MAX_BUCKET {
                    bucket.push(Arc::clone(&c));
                    self.len += 1;
                    self.bytes += size(&c);
                }
                c
            }
        };
        self.last = Some((Arc::clone(scanned), Arc::clone(&interned), resource_hash));
        if self.len > self.sweep_at.max(Self::MIN_SWEEP)
            || self.bytes > self.sweep_bytes_at.max(Self::MIN_SWEEP_BYTES)
        {
            self.sweep();
        }
        interned
    }

    /// Forgets the record last interned from (so it is not kept alive until the next one).
    pub(super) fn end_record(&mut self) {
        self.last = None;
    }

    /// Drops the contexts only this table holds.
    pub(super) fn sweep(&mut self) {
        self.by_hash.retain(|_, b| {
            b.retain(|c| Arc::strong_count(c) > 1);
            !b.is_empty()
        });
        self.len = self.by_hash.values().map(Vec::len).sum();
        self.bytes = self.by_hash.values().flatten().map(|c| size(c)).sum();
        self.sweep_at = 2 * self.len;
        self.sweep_bytes_at = 2 * self.bytes;
    }

    /// Contexts held.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Heap bytes held: the table and the contexts' bytes.
    pub(super) fn heap_bytes(&self) -> usize {
        let per = std::mem::size_of::<ScopeCtx>() + 16 + std::mem::size_of::<Arc<ScopeCtx>>();
        self.by_hash.capacity() * (8 + std::mem::size_of::<Vec<Arc<ScopeCtx>>>() + 1)
            + self
                .by_hash
                .values()
                .flatten()
                .map(|c| per + c.fields().iter().map(|f| f.len()).sum::<usize>())
                .sum::<usize>()
    }
}

/// Bytes of a context's fields.
fn size(c: &ScopeCtx) -> usize {
    c.fields().iter().map(|f| f.len()).sum()
}

/// Whether two byte views are the same bytes in memory (so equal without comparing).
fn same_slice(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

/// A context owning a copy of the four fields: the resource in an allocation of its own (so a
/// context that shares it later pins only the resource, not this context's scope), or
/// `resource` itself when given (an interned copy equal to `f[0]`); the other three together.
fn owned(f: &[&[u8]; 4], resource: Option<Bytes>) -> ScopeCtx {
    let mut buf = Vec::with_capacity(f[1..].iter().map(|x| x.len()).sum());
    let mut ends = [0; 4];
    for (i, x) in f.iter().enumerate().skip(1) {
        buf.extend_from_slice(x);
        ends[i] = buf.len();
    }
    let buf = Bytes::from(buf);
    ScopeCtx {
        resource_field: resource.unwrap_or_else(|| Bytes::copy_from_slice(f[0])),
        resource_schema_field: buf.slice(..ends[1]),
        scope_field: buf.slice(ends[1]..ends[2]),
        scope_schema_field: buf.slice(ends[2]..ends[3]),
        arrival_ms: 0,
        filed_at_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(resource: &'static [u8], arrival_ms: u64) -> Arc<ScopeCtx> {
        Arc::new(ScopeCtx {
            resource_field: Bytes::from_static(resource),
            scope_field: Bytes::from_static(b"\x12\x03abc"),
            arrival_ms,
            ..ScopeCtx::default()
        })
    }

    fn span(ctx: &Arc<ScopeCtx>, body: Vec<u8>) -> SpanRef {
        SpanRef {
            ctx: Arc::clone(ctx),
            bytes: Bytes::from(body),
        }
    }

    #[test]
    fn spans_come_back_with_their_bytes_contexts_and_arrivals() {
        let mut contexts = Contexts::default();
        let a = ctx(b"\x0a\x02r1", 10);
        let b = ctx(b"\x0a\x02r2", 10);
        let a_later = ctx(b"\x0a\x02r1", 20);
        let mut t = TraceSpans::default();
        let bodies: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 100 + 100 * i as usize]).collect();
        let sent = [
            (&a, 0),
            (&a, 1),
            (&b, 2),
            (&a_later, 3),
            (&a_later, 4),
            (&a, 5),
        ];
        for (c, i) in sent {
            let s = span(c, bodies[i].clone());
            let interned = contexts.intern(c);
            t.push(&s, &interned, 0);
        }
        contexts.end_record();
        assert_eq!(
            contexts.len(),
            2,
            "r1 is held once for three scanned contexts"
        );
        assert_eq!(
            t.runs.len(),
            4,
            "a new run where context or arrival changes"
        );
        let back = t.to_refs(6);
        let back2 = t.into_refs(6);
        for refs in [back, back2] {
            assert_eq!(refs.len(), 6);
            for (r, (c, i)) in refs.iter().zip(sent) {
                assert_eq!(&r.bytes[..], &bodies[i][..]);
                assert_eq!(r.ctx.resource_field, c.resource_field);
                assert_eq!(r.ctx.scope_field, c.scope_field);
                assert_eq!(r.ctx.arrival_ms, c.arrival_ms);
                assert_eq!(r.ctx.filed_at_ms, None);
            }
            assert!(
                Arc::ptr_eq(&refs[0].ctx, &refs[1].ctx),
                "one run, one context"
            );
            assert!(!Arc::ptr_eq(&refs[1].ctx, &refs[2].ctx));
        }
    }

    /// The scopes of one record under one resource share that resource's interned bytes, and
    /// a later record with the same resource and scope (other bytes in memory) finds its
    /// context; the same scope under another resource does not.
    #[test]
    fn a_records_scopes_share_their_interned_resource() {
        let record = Bytes::from_static(b"\x0a\x02r1\x12\x03abc\x12\x03xyz");
        let scanned = |scope: std::ops::Range<usize>| {
            Arc::new(ScopeCtx {
                resource_field: record.slice(0..4),
                scope_field: record.slice(scope),
                ..ScopeCtx::default()
            })
        };
        let mut contexts = Contexts::default();
        let (a, b) = (scanned(4..9), scanned(9..14));
        let (ia, ib) = (contexts.intern(&a), contexts.intern(&b));
        contexts.end_record();
        assert_eq!(contexts.len(), 2);
        assert!(
            same_slice(&ia.resource_field, &ib.resource_field),
            "one copy of r1"
        );
        assert_eq!(ib.scope_field, b"\x12\x03xyz"[..]);
        assert_eq!(ia.content_hash(), a.content_hash());
        assert_eq!(ib.content_hash(), b.content_hash());

        let again = Arc::new(ScopeCtx {
            resource_field: Bytes::from(b"\x0a\x02r1".to_vec()),
            scope_field: Bytes::from(b"\x12\x03xyz".to_vec()),
            ..ScopeCtx::default()
        });
        assert!(Arc::ptr_eq(&contexts.intern(&again), &ib));
        let other = Arc::new(ScopeCtx {
            resource_field: Bytes::from(b"\x0a\x02r2".to_vec()),
            scope_field: Bytes::from(b"\x12\x03xyz".to_vec()),
            ..ScopeCtx::default()
        });
        let io = contexts.intern(&other);
        assert_eq!(io.resource_field, b"\x0a\x02r2"[..]);
        assert_eq!(io.scope_field, b"\x12\x03xyz"[..]);
        contexts.end_record();
        assert_eq!(contexts.len(), 3);
    }

    /// A context that shares another's resource holds only the resource: the first one's scope
    /// is freed with it (so the table's byte count stays an upper bound).
    #[test]
    fn a_shared_resource_pins_only_the_resource() {
        let a = owned(&[b"\x0a\x02r1", b"", &[7; 1000], b""], None);
        let b = owned(
            &[b"\x0a\x02r1", b"", b"s2", b""],
            Some(a.resource_field.clone()),
        );
        let scope = a.scope_field.clone();
        drop(a);
        assert!(
            scope.is_unique(),
            "the first context's scope is held by nothing else"
        );
        assert_eq!(b.resource_field, b"\x0a\x02r1"[..]);
        assert_eq!(b.scope_field, b"s2"[..]);
    }

    #[test]
    fn a_trace_sent_whole_is_allocated_once_and_exactly() {
        let c = ctx(b"\x0a\x02r1", 1);
        let mut contexts = Contexts::default();
        let interned = contexts.intern(&c);
        let spans: Vec<SpanRef> = (0..7).map(|_| span(&c, vec![7; 300])).collect();
        let mut ahead: usize = spans.iter().map(|s| 2 + s.bytes.len()).sum();
        let mut t = TraceSpans::default();
        for s in &spans {
            t.push(s, &interned, ahead);
            ahead -= 2 + s.bytes.len();
        }
        assert_eq!(t.data.len(), 7 * 302);
        assert_eq!(t.data.capacity(), 7 * 302);
    }

    #[test]
    fn large_unreferenced_contexts_are_swept_by_bytes() {
        let mut contexts = Contexts::default();
        for i in 0..100u32 {
            let mut big = vec![0u8; 256 << 10];
            big[..4].copy_from_slice(&i.to_le_bytes());
            let c = Arc::new(ScopeCtx {
                resource_field: Bytes::from(big),
                ..ScopeCtx::default()
            });
            drop(contexts.intern(&c));
            contexts.end_record();
            assert!(
                contexts.bytes <= Contexts::MIN_SWEEP_BYTES + (256 << 10),
                "{} B held after {i}",
                contexts.bytes
            );
        }
    }

    #[test]
    fn unreferenced_contexts_are_swept_and_the_table_stays_bounded() {
        let mut contexts = Contexts::default();
        let mut held = Vec::new();
        for i in 0..10_000u32 {
            let c = Arc::new(ScopeCtx {
                resource_field: Bytes::from(i.to_le_bytes().to_vec()),
                ..ScopeCtx::default()
            });
            let interned = contexts.intern(&c);
            if i % 100 == 0 {
                held.push(interned);
            }
            assert!(contexts.len() <= 2 * (held.len() + 1) + Contexts::MIN_SWEEP + 1);
        }
        contexts.end_record();
        contexts.sweep();
        assert_eq!(contexts.len(), held.len());
    }
}
