//! Span-level predicates ("leaves") matched while a record is scanned, and what policies read of
//! a trace: its summary, folded from its spans as they arrive, and the view a policy judges.

use crate::clock::StreamTime;
use crate::otlp::{AnyValueRef, RawValue, SpanInput, SpanMeta, SpanProbe, SpanRef, TraceId};

use super::ottl::Cx;
use super::ottl_condition::SpanLeaf;

use super::{Threshold, Verdict};

/// Most span-level predicates one configuration may have (one bit each in [`TraceSummary`]).
pub const MAX_LEAVES: usize = 128;

/// How a leaf matches an attribute value.
#[derive(Debug)]
pub(crate) enum LeafMatch {
    /// Exact string match against any of these values.
    Exact(Vec<String>),
    /// Any of these regexes matches.
    Regex(regex::RegexSet),
    /// An integer within `[min, max]`.
    IntRange {
        /// Smallest value that matches.
        min: i64,
        /// Largest value that matches.
        max: i64,
    },
    /// A boolean equal to this.
    Bool(bool),
}

#[derive(Debug)]
struct Leaf {
    bit: u128,
    matcher: LeafMatch,
}

/// The span-level predicates of a configuration, grouped by attribute key.
///
/// Keys are few (one per attribute a policy names), so they are found by a linear scan that
/// compares lengths first: cheaper than hashing every attribute key of every span.
#[derive(Debug, Default)]
pub struct LeafSet {
    by_key: Vec<(Box<[u8]>, Vec<Leaf>)>,
    /// Tracestate predicates: (key, values, bit).
    trace_state: Vec<(String, Vec<String>, u128)>,
    /// Whole-span predicates (`ottl_condition`), two bits each.
    span_leaves: Vec<SpanLeaf>,
    /// Error bits of the whole-span predicates.
    error_mask: u128,
    /// The name of the policy being compiled (names its whole-span leaves).
    naming: String,
    count: usize,
    /// A policy reads the spans themselves at decision ([`super::Sampler::reads_spans`]).
    pub(crate) reads_spans: bool,
}

impl LeafSet {
    fn next_bit(&mut self) -> Result<u8, String> {
        if self.count >= MAX_LEAVES {
            return Err(format!(
                "too many attribute conditions (at most {MAX_LEAVES} per configuration)"
            ));
        }
        let idx = self.count as u8;
        self.count += 1;
        Ok(idx)
    }

    /// Names the policy whose leaves are registered next.
    pub(crate) fn naming(&mut self, policy: &str) {
        self.naming.clear();
        self.naming.push_str(policy);
    }

    /// Adds a whole-span predicate built by `make(policy name, matched bit, errored bit)`;
    /// returns its two bits.
    pub(crate) fn add_span_leaf(
        &mut self,
        make: impl FnOnce(String, u128, u128) -> SpanLeaf,
    ) -> Result<(u128, u128), String> {
        let matched = 1u128 << self.next_bit()?;
        let errored = 1u128 << self.next_bit()?;
        self.error_mask |= errored;
        self.span_leaves
            .push(make(self.naming.clone(), matched, errored));
        Ok((matched, errored))
    }

    /// The names of the policies whose error bit is among `bits`.
    pub(crate) fn errored(&self, bits: u128) -> impl Iterator<Item = &str> + '_ {
        let hit = bits & self.error_mask;
        self.span_leaves
            .iter()
            .filter(move |l| hit & l.errored != 0)
            .map(|l| l.policy.as_str())
    }

    /// Per `ottl_condition` policy, each condition's truth on one span (for dry runs):
    /// (policy name, span conditions, span-event conditions).
    pub fn condition_hits(&self, input: &SpanInput<'_>) -> Vec<(&str, Vec<bool>, Vec<bool>)> {
        self.span_leaves
            .iter()
            .map(|l| {
                let (s, e) = l.each(input);
                (l.policy.as_str(), s, e)
            })
            .collect()
    }

    /// The conditions of each `ottl_condition` policy: (policy name, span texts, event texts).
    pub fn conditions(&self) -> impl Iterator<Item = (&str, Vec<&str>, Vec<&str>)> + '_ {
        self.span_leaves.iter().map(|l| {
            (
                l.policy.as_str(),
                l.span.iter().map(|c| c.text.as_str()).collect(),
                l.events.iter().map(|c| c.text.as_str()).collect(),
            )
        })
    }

    /// Adds a tracestate predicate: entry `key` has one of `values`; returns its bit index.
    pub(crate) fn add_trace_state(&mut self, key: &str, values: &[String]) -> Result<u8, String> {
        let idx = self.next_bit()?;
        self.trace_state
            .push((key.to_string(), values.to_vec(), 1u128 << idx));
        Ok(idx)
    }

    /// Adds an attribute predicate on `key`; returns its bit index.
    pub(crate) fn add(&mut self, key: &str, matcher: LeafMatch) -> Result<u8, String> {
        let idx = self.next_bit()?;
        let leaf = Leaf {
            bit: 1u128 << idx,
            matcher,
        };
        match self.by_key.iter_mut().find(|(k, _)| **k == *key.as_bytes()) {
            Some((_, leaves)) => leaves.push(leaf),
            None => self.by_key.push((key.as_bytes().into(), vec![leaf])),
        }
        Ok(idx)
    }

    #[inline]
    fn attribute(&self, key: &[u8], value: RawValue<'_>) -> u128 {
        let Some((_, leaves)) = self
            .by_key
            .iter()
            .find(|(k, _)| k.len() == key.len() && **k == *key)
        else {
            return 0;
        };
        let value = value.get();
        let mut bits = 0;
        for leaf in leaves {
            let hit = match (&leaf.matcher, value) {
                (LeafMatch::Exact(values), AnyValueRef::Str(s)) => values.iter().any(|v| v == s),
                (LeafMatch::Regex(set), AnyValueRef::Str(s)) => set.is_match(s),
                (LeafMatch::IntRange { min, max }, AnyValueRef::Int(i)) => {
                    (*min..=*max).contains(&i)
                }
                (LeafMatch::Bool(want), AnyValueRef::Bool(b)) => *want == b,
                _ => false,
            };
            if hit {
                bits |= leaf.bit;
            }
        }
        bits
    }
}

impl SpanProbe for LeafSet {
    fn wants_attributes(&self) -> bool {
        !self.by_key.is_empty() || !self.trace_state.is_empty()
    }
    fn wants_spans(&self) -> bool {
        !self.span_leaves.is_empty()
    }
    fn span(&self, input: &SpanInput<'_>) -> u128 {
        let cx = Cx::span(*input);
        let mut bits = 0;
        for leaf in &self.span_leaves {
            bits |= leaf.bits(input, &cx);
        }
        bits
    }
    fn resource_attribute(&self, key: &[u8], value: RawValue<'_>) -> u128 {
        self.attribute(key, value)
    }
    fn span_attribute(&self, key: &[u8], value: RawValue<'_>) -> u128 {
        self.attribute(key, value)
    }
    fn trace_state(&self, trace_state: &str) -> u128 {
        let mut bits = 0;
        // W3C tracestate: comma-separated `key=value` list members, optional whitespace.
        for member in trace_state.split(',') {
            let Some((k, v)) = member.trim().split_once('=') else {
                continue;
            };
            for (key, values, bit) in &self.trace_state {
                if key == k && values.iter().any(|x| x == v) {
                    bits |= bit;
                }
            }
        }
        bits
    }
}

// ---------------------------------------------------------------------------------------------
// Trace summary and verdicts
// ---------------------------------------------------------------------------------------------

/// What policies read of a trace, folded from its spans as they arrive.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TraceSummary {
    /// Spans seen.
    pub span_count: u32,
    /// Encoded span bytes seen.
    pub bytes: u64,
    /// Earliest span start (Unix ns); `u64::MAX` before the first span.
    pub min_start_ns: u64,
    /// Latest span end (Unix ns).
    pub max_end_ns: u64,
    /// Status codes seen, one bit each ([`crate::otlp::StatusCode::bit`]).
    pub status_mask: u8,
    /// A root span (no parent) was seen.
    pub has_root: bool,
    /// Some span had the W3C sampled flag.
    pub any_sampled_flag: bool,
    /// Leaves matched by some span or its resource.
    pub leaf_bits: u128,
    /// OTEP 235 randomness from the first span that carried one.
    pub rv: Option<u64>,
    /// The largest incoming OTEP 235 threshold seen.
    pub th: Option<Threshold>,
}

impl TraceSummary {
    /// An empty summary.
    pub fn new() -> Self {
        TraceSummary {
            min_start_ns: u64::MAX,
            ..Default::default()
        }
    }

    /// Folds one span in.
    #[inline]
    pub fn add(&mut self, m: &SpanMeta) {
        self.span_count = self.span_count.saturating_add(1);
        self.bytes += u64::from(m.size);
        // A span without plausible times has both at 0 (see `otlp::plausible_times`).
        if m.start_ns != 0 {
            self.min_start_ns = self.min_start_ns.min(m.start_ns);
            self.max_end_ns = self.max_end_ns.max(m.end_ns);
        }
        self.status_mask |= m.status.bit();
        self.has_root |= m.is_root;
        self.any_sampled_flag |= m.flags & 1 == 1;
        self.leaf_bits |= m.leaf_bits;
        if self.rv.is_none() {
            self.rv = m.rv;
        }
        if let Some(th) = m.th {
            self.th = Some(self.th.map_or(th, |t| t.max(th)));
        }
    }

    /// Earliest start to latest end, in nanoseconds.
    pub fn duration_ns(&self) -> u64 {
        self.max_end_ns.saturating_sub(self.min_start_ns)
    }
}

/// The trace as a policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct TraceView<'a> {
    /// Trace id.
    pub trace_id: TraceId,
    /// Its summary.
    pub summary: &'a TraceSummary,
    /// When the decision is made (rate limiters read it).
    pub now: StreamTime,
    /// The trace's spans, for the rare policy that reads more than the summary (the dynamic
    /// sampler's key); may be empty.
    pub spans: &'a [SpanRef],
}

impl TraceView<'_> {
    /// OTEP 235 randomness: the explicit `rv`, else the trace id's low 56 bits.
    pub fn randomness(&self) -> u64 {
        self.summary
            .rv
            .unwrap_or_else(|| self.trace_id.randomness())
    }
}

/// The verdict of a leaf-backed policy: sampled when the leaf matched some span or resource (or,
/// inverted, when none did); rule keeps have threshold 0.
pub(crate) fn leaf_verdict(t: &TraceView<'_>, bit: u128, invert: bool) -> Verdict {
    if (t.summary.leaf_bits & bit != 0) != invert {
        Verdict::Sampled {
            threshold: Threshold::ALWAYS,
        }
    } else {
        Verdict::NotSampled
    }
}
