//! `ottl_condition`: keeps a trace when any span (or any span event) satisfies any of the OTTL
//! conditions, as the Collector's policy of that name. The conditions are compiled once at load
//! and judged per span as it is scanned (a whole-span leaf): a span that matches sets the
//! policy's bit in its trace's summary, so the decision reads one bit and never rescans.
//!
//! Errors: with `error_mode: propagate` (the Collector's default) an evaluation error ends the
//! span's evaluation and makes the policy's verdict an error (not sampled, counted); with
//! `ignore` the failing condition counts as no match and a warning is logged (the first, then
//! every 10,000th); `silent` is `ignore` without the log. Unlike the Collector, which stops at
//! whichever of a match or an error it meets first in its buffer, the verdict does not depend
//! on the order spans arrived in: under `propagate` an error in any span wins over a match.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::ottl::{column, compile_condition, parse_condition, Cond, Context, Cx};
use super::{LeafSet, Threshold, TraceView, Verdict};
use crate::otlp::SpanInput;
use crate::settings::ConfigError;

/// What an evaluation error does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorMode {
    /// The policy's verdict is an error (not sampled; counted).
    #[default]
    Propagate,
    /// The condition counts as no match; logged.
    Ignore,
    /// The condition counts as no match; not logged.
    Silent,
}

/// The Collector's `ottl_condition` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OttlConditionConfig {
    /// What an evaluation error does (default `propagate`).
    #[serde(default)]
    pub error_mode: ErrorMode,
    /// Conditions on spans (`ottlspan` context), OR-ed.
    #[serde(default)]
    pub span: Vec<String>,
    /// Conditions on span events (`ottlspanevent` context), OR-ed.
    #[serde(default)]
    pub spanevent: Vec<String>,
}

/// A compiled condition with its text (for logs and dry runs).
#[derive(Debug)]
pub(crate) struct Compiled {
    pub(crate) text: String,
    pub(crate) cond: Cond,
}

/// The whole-span leaf of one `ottl_condition` policy.
#[derive(Debug)]
pub(crate) struct SpanLeaf {
    /// The policy's name (labels its error counter).
    pub(crate) policy: String,
    pub(crate) matched: u128,
    pub(crate) errored: u128,
    pub(crate) mode: ErrorMode,
    pub(crate) span: Vec<Compiled>,
    pub(crate) events: Vec<Compiled>,
    errors_seen: AtomicU64,
}

impl SpanLeaf {
    fn note(&self, c: &Compiled, e: &super::ottl::EvalError) {
        let n = self.errors_seen.fetch_add(1, Ordering::Relaxed) + 1;
        if self.mode != ErrorMode::Silent && (n == 1 || n.is_multiple_of(10_000)) {
            tracing::warn!(
                policy = %self.policy,
                condition = %c.text,
                error = %e,
                errors_so_far = n,
                "ottl_condition: a condition failed to evaluate"
            );
        }
    }

    /// Judges one list on `cx`: Some(true) matched, Some(false) errored (propagate), None
    /// neither; `erred` is set when any condition failed.
    fn judge<'x>(&'x self, list: &'x [Compiled], cx: &Cx<'x>, erred: &mut bool) -> Option<bool> {
        for c in list {
            match c.cond.eval(cx) {
                Ok(true) => return Some(true),
                Ok(false) => {}
                Err(e) => {
                    self.note(c, &e);
                    *erred = true;
                    if self.mode == ErrorMode::Propagate {
                        return Some(false);
                    }
                }
            }
        }
        None
    }

    /// The leaf's bits for one span: `matched` when a condition held, `errored` when one failed.
    pub(crate) fn bits<'x>(&'x self, input: &SpanInput<'x>, cx: &Cx<'x>) -> u128 {
        let mut erred = false;
        match self.judge(&self.span, cx, &mut erred) {
            Some(true) => return self.matched,
            Some(false) => return self.errored,
            None => {}
        }
        if !self.events.is_empty() {
            let events = match cx.events() {
                Ok(e) => e,
                Err(_) => return self.errored,
            };
            for ev in events {
                let Ok(ev) = ev else {
                    return self.errored;
                };
                let ecx = Cx::event(*input, ev);
                match self.judge(&self.events, &ecx, &mut erred) {
                    Some(true) => return self.matched,
                    Some(false) => return self.errored,
                    None => {}
                }
            }
        }
        if erred {
            self.errored
        } else {
            0
        }
    }

    /// Each condition's truth on one span, for dry runs: (span list, event list), true where
    /// the condition held on the span (or on one of its events).
    pub(crate) fn each(&self, input: &SpanInput<'_>) -> (Vec<bool>, Vec<bool>) {
        let cx = Cx::span(*input);
        let span = self
            .span
            .iter()
            .map(|c| c.cond.eval(&cx).unwrap_or(false))
            .collect();
        let mut events = vec![false; self.events.len()];
        if let Ok(evs) = cx.events() {
            for ev in evs.flatten() {
                let ecx = Cx::event(*input, ev);
                for (hit, c) in events.iter_mut().zip(&self.events) {
                    *hit |= c.cond.eval(&ecx).unwrap_or(false);
                }
            }
        }
        (span, events)
    }
}

/// Compiled `ottl_condition`: reads its two bits.
#[derive(Debug)]
pub struct OttlCondition {
    matched: u128,
    errored: u128,
    propagate: bool,
}

/// Compiles one list; problems are reported as `<path>[i], column c: …`.
fn compile_list(
    path: &str,
    list: &[String],
    ctx: Context,
    errors: &mut Vec<ConfigError>,
) -> Vec<Compiled> {
    let mut out = Vec::new();
    for (i, text) in list.iter().enumerate() {
        let at = |offset: usize| format!("{path}[{i}], column {}", column(text, offset));
        let expr = match parse_condition(text) {
            Ok(e) => e,
            Err(e) => {
                errors.push(ConfigError::new(at(e.at), e.msg));
                continue;
            }
        };
        match compile_condition(&expr, ctx) {
            Ok(cond) => out.push(Compiled {
                text: text.clone(),
                cond,
            }),
            Err(errs) => {
                for e in errs {
                    errors.push(ConfigError::new(at(e.at), e.msg));
                }
            }
        }
    }
    out
}

impl OttlCondition {
    /// Compiles the conditions (all problems reported) and registers the whole-span leaf.
    pub fn build(
        c: &OttlConditionConfig,
        path: &str,
        leaves: &mut LeafSet,
        errors: &mut Vec<ConfigError>,
    ) -> Option<OttlCondition> {
        if c.span.is_empty() && c.spanevent.is_empty() {
            errors.push(ConfigError::new(
                path,
                "needs at least one condition in `span` or `spanevent`",
            ));
            return None;
        }
        let before = errors.len();
        let span = compile_list(&format!("{path}.span"), &c.span, Context::Span, errors);
        let events = compile_list(
            &format!("{path}.spanevent"),
            &c.spanevent,
            Context::SpanEvent,
            errors,
        );
        if errors.len() != before {
            return None;
        }
        let bits = leaves.add_span_leaf(|policy, matched, errored| SpanLeaf {
            policy,
            matched,
            errored,
            mode: c.error_mode,
            span,
            events,
            errors_seen: AtomicU64::new(0),
        });
        match bits {
            Ok((matched, errored)) => Some(OttlCondition {
                matched,
                errored,
                propagate: c.error_mode == ErrorMode::Propagate,
            }),
            Err(msg) => {
                errors.push(ConfigError::new(path, msg));
                None
            }
        }
    }

    /// Sampled when a span or event matched; an error under `propagate` when one failed.
    pub fn evaluate(&self, t: &TraceView<'_>) -> Verdict {
        let bits = t.summary.leaf_bits;
        if self.propagate && bits & self.errored != 0 {
            Verdict::Error
        } else if bits & self.matched != 0 {
            Verdict::Sampled {
                threshold: Threshold::ALWAYS,
            }
        } else {
            Verdict::NotSampled
        }
    }
}

impl OttlConditionConfig {
    /// Parses the block; unknown fields and a bad `error_mode` are reported with their paths.
    pub fn from_yaml(
        path: &str,
        block: Option<&serde_norway::Value>,
        errors: &mut Vec<ConfigError>,
    ) -> Option<OttlConditionConfig> {
        super::typed_block(path, block, errors)
    }
}

super::policy_impl!(OttlCondition, OttlConditionConfig, tree);
