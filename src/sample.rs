//! Tail-sampling decisions.
//!
//! Policies are written in the OpenTelemetry Collector `tail_sampling` syntax
//! (`{name, type, <type>: {…}}`), OR-ed at the top level with `drop` winning. They are compiled once
//! at config load into:
//! - a [`LeafSet`], the span-level predicates (attribute and tracestate matches). It is the
//!   `SpanProbe` handed to the OTLP scanner, so each span sets bits in its trace's summary as it
//!   arrives and nothing is re-read at decision time;
//! - an [`Evaluator`] tree that reads the compact [`TraceSummary`] (root, error flag, min/max times,
//!   span count, bytes, leaf bits) and returns a [`Verdict`].
//!
//! Adding a policy type is one file under `sample/` implementing [`Policy`] and one line in the
//! `policy_types!` registry (its [`PolicyKind`] and [`Evaluator`] variant and its dispatch arm).
//!
//! Probabilities follow OpenTelemetry consistent probability sampling (OTEP 235): a 56-bit
//! rejection threshold `T` is compared with the trace's 56-bit randomness `R` (the `rv` in its
//! tracestate, else the low 56 bits of the trace id); keep iff `R >= T`. A decision is therefore a
//! pure function of the trace, and a replay repeats it.
//!
//! Files: `grammar.rs` (a policy item as configured, parsed with every problem), `leaves.rs`
//! (span-level predicates, the trace summary and view), `verdict.rs` (verdicts and decisions),
//! one file per policy type, `first_match.rs` (the `tiers:` rules); this file holds the
//! `Policy` trait, the registry and the [`Sampler`].

mod always_sample;
mod and;
mod boolean_attribute;
mod bytes_limiting;
mod composite;
mod drop;
mod dynamic;
mod first_match;
mod grammar;
mod latency;
mod leaves;
mod not;
mod numeric_attribute;
pub mod ottl;
mod ottl_condition;
mod probabilistic;
mod rate_limiting;
mod span_count;
mod status_code;
mod string_attribute;
mod trace_flags;
mod trace_state;
mod verdict;

use serde::Serialize;

use crate::clock::StreamTime;
use crate::otlp::{SpanRef, TraceId};
use crate::settings::ConfigError;

pub use and::AndConfig;
pub use boolean_attribute::BooleanAttributeConfig;
pub use bytes_limiting::BytesLimitingConfig;
pub use composite::{CompositeConfig, RateAllocation};
pub use drop::DropConfig;
pub use dynamic::DynamicConfig;
pub use first_match::FirstMatchSpec;
pub use latency::LatencyConfig;
pub use not::NotConfig;
pub use numeric_attribute::NumericAttributeConfig;
pub use ottl_condition::{ErrorMode, OttlConditionConfig};
pub use probabilistic::ProbabilisticConfig;
pub use rate_limiting::RateLimitingConfig;
pub use span_count::SpanCountConfig;
pub use status_code::StatusCodeConfig;
pub use string_attribute::StringAttributeConfig;

pub use crate::otlp::threshold::Threshold;
pub use trace_state::TraceStateConfig;

pub(crate) use self::grammar::{block_fields, sub_policies, typed_block};
pub use self::grammar::{PolicySpec, EXTRA_POLICY_TYPES};
pub(crate) use self::leaves::{leaf_verdict, LeafMatch};
pub use self::leaves::{LeafSet, TraceSummary, TraceView, MAX_LEAVES};
pub use self::verdict::{Decision, PolicyId, Verdict};

/// The seed's cost tiers (errors 100%, slow > 500 ms 100%, /api/payment and /api/checkout 50%,
/// the rest 1%) as a `policies:` block in the Collector's syntax: the documented example, also
/// used by the tests and benches.
pub const SEED_POLICIES: &str = r#"policies:
  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
  - {name: slow, type: latency, latency: {threshold_ms: 500}}
  - name: important
    type: and
    and:
      and_sub_policy:
        - {name: route, type: string_attribute, string_attribute: {key: http.route, values: [/api/payment, /api/checkout]}}
        - {name: half, type: probabilistic, probabilistic: {sampling_percentage: 50}}
  - {name: default, type: probabilistic, probabilistic: {sampling_percentage: 1}}
"#;

/// The same seed tiers as a first-match `tiers:` block.
pub const SEED_TIERS: &str = r#"tiers:
  - {name: errors, when: {type: status_code, status_code: {status_codes: [ERROR]}}, sample_percentage: 100}
  - {name: slow, when: {type: latency, latency: {threshold_ms: 500}}, sample_percentage: 100}
  - name: important
    when: {type: string_attribute, string_attribute: {key: http.route, values: [/api/payment, /api/checkout]}}
    sample_percentage: 50
  - {name: rest, sample_percentage: 1}
"#;

/// Where a configuration keeps its policy block (the `policies:` or the `tiers:` list).
pub trait PolicyBlock {
    /// The `policies:` list (Collector syntax).
    fn policies(&self) -> &[PolicySpec];
    /// The first-match rules (the `tiers:` list).
    fn first_match(&self) -> &[FirstMatchSpec];
}

/// One policy type: its `<type>:` block, how it compiles, and its verdict on a trace.
///
/// Adding a policy type is one file under `sample/` (the type, its config block, and its
/// `impl Policy`, usually one `policy_impl!` line) and one line in `policy_types!` below,
/// which is the type's enum variant and its match arm at once.
pub trait Policy: Sized + std::fmt::Debug {
    /// The `<type>:` block as configured, with the Collector's field names.
    type Config: std::fmt::Debug + Clone + PartialEq + Serialize;
    /// Parses the block found at `path` (`None` when absent); problems go to `errors`.
    fn parse(
        path: &str,
        block: Option<&serde_norway::Value>,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Self::Config>;
    /// Compiles a configured policy (errors reported under `path`, the block's path);
    /// span-level predicates are registered in `leaves`.
    fn build(
        c: &Self::Config,
        path: &str,
        leaves: &mut LeafSet,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Self>;
    /// The verdict on a trace.
    fn evaluate(&self, t: &TraceView<'_>) -> Verdict;
}

/// The settings of a policy type without a block (`always_sample`, `trace_flags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NoSettings;

/// A block read with serde, errors reported with their paths.
fn settings<T: serde::de::DeserializeOwned>(
    path: &str,
    block: Option<&serde_norway::Value>,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    typed_block(path, block, errors)
}

/// A build result with its problem reported under `path`.
fn checked<P>(path: &str, errors: &mut Vec<ConfigError>, r: Result<P, String>) -> Option<P> {
    r.map_err(|msg| errors.push(ConfigError::new(path, msg)))
        .ok()
}

/// `impl Policy` for the usual shapes of a policy type, from its inherent `build` and
/// `evaluate`:
/// - `policy_impl!(T)`: no block; `T` is a unit struct;
/// - `policy_impl!(T, Config)`: `T::build(&Config) -> Result<T, String>`;
/// - `policy_impl!(T, Config, leaves)`: `T::build(&Config, &mut LeafSet) -> Result<T, String>`;
/// - `policy_impl!(T, Config, tree)`: a policy of sub-policies: `Config::from_yaml` parses it,
///   `T::build(&Config, path, leaves, errors) -> Option<T>` compiles it.
macro_rules! policy_impl {
    ($ty:ident) => {
        impl $crate::sample::Policy for $ty {
            type Config = $crate::sample::NoSettings;
            fn parse(
                _: &str,
                _: Option<&serde_norway::Value>,
                _: &mut Vec<$crate::settings::ConfigError>,
            ) -> Option<Self::Config> {
                Some($crate::sample::NoSettings)
            }
            fn build(
                _: &Self::Config,
                _: &str,
                _: &mut $crate::sample::LeafSet,
                _: &mut Vec<$crate::settings::ConfigError>,
            ) -> Option<Self> {
                Some($ty)
            }
            fn evaluate(&self, t: &$crate::sample::TraceView<'_>) -> $crate::sample::Verdict {
                $ty::evaluate(self, t)
            }
        }
    };
    ($ty:ident, $cfg:ty) => {
        $crate::sample::policy_impl!(@settings $ty, $cfg, |c, _leaves| $ty::build(c));
    };
    ($ty:ident, $cfg:ty, leaves) => {
        $crate::sample::policy_impl!(@settings $ty, $cfg, |c, leaves| $ty::build(c, leaves));
    };
    ($ty:ident, $cfg:ty, tree) => {
        impl $crate::sample::Policy for $ty {
            type Config = $cfg;
            fn parse(
                path: &str,
                block: Option<&serde_norway::Value>,
                errors: &mut Vec<$crate::settings::ConfigError>,
            ) -> Option<Self::Config> {
                <$cfg>::from_yaml(path, block, errors)
            }
            fn build(
                c: &Self::Config,
                path: &str,
                leaves: &mut $crate::sample::LeafSet,
                errors: &mut Vec<$crate::settings::ConfigError>,
            ) -> Option<Self> {
                $ty::build(c, path, leaves, errors)
            }
            fn evaluate(&self, t: &$crate::sample::TraceView<'_>) -> $crate::sample::Verdict {
                $ty::evaluate(self, t)
            }
        }
    };
    (@settings $ty:ident, $cfg:ty, |$c:ident, $leaves:ident| $build:expr) => {
        impl $crate::sample::Policy for $ty {
            type Config = $cfg;
            fn parse(
                path: &str,
                block: Option<&serde_norway::Value>,
                errors: &mut Vec<$crate::settings::ConfigError>,
            ) -> Option<Self::Config> {
                $crate::sample::settings(path, block, errors)
            }
            fn build(
                $c: &Self::Config,
                path: &str,
                #[allow(unused_variables)] $leaves: &mut $crate::sample::LeafSet,
                errors: &mut Vec<$crate::settings::ConfigError>,
            ) -> Option<Self> {
                $crate::sample::checked(path, errors, $build)
            }
            fn evaluate(&self, t: &$crate::sample::TraceView<'_>) -> $crate::sample::Verdict {
                $ty::evaluate(self, t)
            }
        }
    };
}
pub(crate) use policy_impl;

/// The registry of policy types: one line each, `"type" => Variant(module::Type)`. From it come
/// [`PolicyKind`] (a configured policy), [`Evaluator`] (a compiled one), the `type:` names, and
/// the parse, compile and evaluate dispatch.
macro_rules! policy_types {
    ($($name:literal => $variant:ident($($ty:ident)::+),)+) => {
        /// The policy types, with the Collector's field names (see each type's module).
        #[derive(Debug, Clone, PartialEq)]
        pub enum PolicyKind {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant(<$($ty)::+ as Policy>::Config),
            )+
        }

        /// A compiled policy.
        #[derive(Debug)]
        pub enum Evaluator {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant($($ty)::+),
            )+
        }

        /// Every policy type this build implements.
        pub const ALL_POLICY_TYPES: &[&str] = &[$($name),+];

        impl PolicyKind {
            /// The `type:` string.
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(PolicyKind::$variant(_) => $name,)+
                }
            }

            /// Parses the `<type>:` block of a policy whose type is `ty`.
            fn parse(
                ty: &str,
                path: &str,
                block: Option<&serde_norway::Value>,
                errors: &mut Vec<ConfigError>,
            ) -> Option<PolicyKind> {
                let block_path = format!("{path}.{ty}");
                match ty {
                    $($name => <$($ty)::+ as Policy>::parse(&block_path, block, errors)
                        .map(PolicyKind::$variant),)+
                    _ => None,
                }
            }

            fn block_value(&self) -> Option<serde_norway::Value> {
                let v = match self {
                    $(PolicyKind::$variant(c) => serde_norway::to_value(c),)+
                };
                v.ok().filter(|v| !v.is_null())
            }
        }

        impl Evaluator {
            /// The verdict of this policy on a trace.
            #[inline]
            pub fn evaluate(&self, t: &TraceView<'_>) -> Verdict {
                match self {
                    $(Evaluator::$variant(p) => p.evaluate(t),)+
                }
            }
        }

        /// Compiles one policy; span-level predicates are registered in `leaves`.
        fn compile(
            spec: &PolicySpec,
            path: &str,
            leaves: &mut LeafSet,
            errors: &mut Vec<ConfigError>,
        ) -> Option<Evaluator> {
            let block = format!("{path}.{}", spec.kind.type_name());
            leaves.naming(&spec.name);
            if matches!(spec.kind, PolicyKind::Dynamic(_)) {
                // Its key is read from the trace's spans, not from leaves.
                leaves.reads_spans = true;
            }
            match &spec.kind {
                $(PolicyKind::$variant(c) => {
                    <$($ty)::+ as Policy>::build(c, &block, leaves, errors).map(Evaluator::$variant)
                })+
            }
        }
    };
}

policy_types! {
    "always_sample" => AlwaysSample(always_sample::AlwaysSample),
    "latency" => Latency(latency::Latency),
    "numeric_attribute" => NumericAttribute(numeric_attribute::NumericAttribute),
    "probabilistic" => Probabilistic(probabilistic::Probabilistic),
    "status_code" => StatusCode(status_code::StatusCodePolicy),
    "string_attribute" => StringAttribute(string_attribute::StringAttribute),
    "boolean_attribute" => BooleanAttribute(boolean_attribute::BooleanAttribute),
    "span_count" => SpanCount(span_count::SpanCount),
    "trace_state" => TraceState(trace_state::TraceStatePolicy),
    "trace_flags" => TraceFlags(trace_flags::TraceFlags),
    "rate_limiting" => RateLimiting(rate_limiting::RateLimiting),
    "bytes_limiting" => BytesLimiting(bytes_limiting::BytesLimiting),
    "ottl_condition" => OttlCondition(ottl_condition::OttlCondition),
    "and" => And(and::And),
    "not" => Not(not::Not),
    "drop" => Drop(drop::Drop),
    "composite" => Composite(composite::Composite),
    "dynamic" => Dynamic(dynamic::Dynamic),
}

impl Evaluator {
    /// True for `drop` policies, which are evaluated before all others.
    pub fn is_drop(&self) -> bool {
        matches!(self, Evaluator::Drop(_))
    }
}

/// The Collector's policy types (every type but tracesift's own [`EXTRA_POLICY_TYPES`]).
pub fn collector_policy_types() -> impl Iterator<Item = &'static str> {
    ALL_POLICY_TYPES
        .iter()
        .copied()
        .filter(|t| !EXTRA_POLICY_TYPES.contains(t))
}

/// The compiled policy set of a configuration.
#[derive(Debug)]
pub struct Sampler {
    policies: Vec<(String, Evaluator)>,
    /// First-match rules instead of OR-ed policies (then `policies` is empty).
    first_match: Vec<(String, first_match::FirstMatchRule)>,
    /// Indexes of the `drop` policies, evaluated first.
    drops: Vec<PolicyId>,
    leaves: LeafSet,
}

impl Sampler {
    /// Compiles the policies (regexes once, leaves registered); every problem is reported.
    pub fn build(specs: &[PolicySpec]) -> Result<Sampler, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut leaves = LeafSet::default();
        let mut policies = Vec::with_capacity(specs.len());
        if specs.len() > usize::from(PolicyId::MAX) {
            errors.push(ConfigError::new("policies", "too many policies"));
        }
        for (i, spec) in specs.iter().enumerate() {
            if let Some(e) = compile(spec, &format!("policies[{i}]"), &mut leaves, &mut errors) {
                policies.push((spec.name.clone(), e));
            }
        }
        let drops = policies
            .iter()
            .enumerate()
            .filter(|(_, (_, e))| e.is_drop())
            .map(|(i, _)| i as PolicyId)
            .collect();
        if errors.is_empty() {
            Ok(Sampler {
                policies,
                first_match: Vec::new(),
                drops,
                leaves,
            })
        } else {
            Err(errors)
        }
    }

    /// Compiles first-match tiers; every problem is reported.
    pub fn build_first_match(specs: &[FirstMatchSpec]) -> Result<Sampler, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut leaves = LeafSet::default();
        if specs.len() > usize::from(PolicyId::MAX) {
            errors.push(ConfigError::new("tiers", "too many tiers"));
        }
        let mut rules = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            if let Some(t) = first_match::FirstMatchRule::build(
                spec,
                &format!("tiers[{i}]"),
                &mut leaves,
                &mut errors,
            ) {
                rules.push((spec.name.clone(), t));
            }
        }
        if errors.is_empty() {
            Ok(Sampler {
                policies: Vec::new(),
                first_match: rules,
                drops: Vec::new(),
                leaves,
            })
        } else {
            Err(errors)
        }
    }

    /// Compiles one policy on its own and returns its problems, reported under `path` (for
    /// configurations where other policies did not even parse).
    pub fn check_policy(spec: &PolicySpec, path: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        compile(spec, path, &mut LeafSet::default(), &mut errors);
        errors
    }

    /// [`Sampler::check_policy`] for one tier.
    pub fn check_first_match(spec: &FirstMatchSpec, path: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        first_match::FirstMatchRule::build(spec, path, &mut LeafSet::default(), &mut errors);
        errors
    }

    /// The sampler a configuration describes (its tiers, else its policies).
    pub fn from_config(cfg: &impl PolicyBlock) -> Result<Sampler, Vec<ConfigError>> {
        if cfg.first_match().is_empty() {
            Sampler::build(cfg.policies())
        } else {
            Sampler::build_first_match(cfg.first_match())
        }
    }

    /// The policies (by name) whose evaluation failed on this trace (`ottl_condition`
    /// conditions that erred on some span), in configuration order.
    pub fn evaluation_errors<'s>(
        &'s self,
        summary: &TraceSummary,
    ) -> impl Iterator<Item = &'s str> + 's {
        self.leaves.errored(summary.leaf_bits)
    }

    /// The probe the OTLP scanner uses to fill leaf bits.
    pub fn probe(&self) -> &LeafSet {
        &self.leaves
    }

    /// Name of a top-level policy.
    pub fn policy_name(&self, id: PolicyId) -> &str {
        let i = usize::from(id);
        self.policies
            .get(i)
            .map(|(n, _)| n.as_str())
            .or_else(|| self.first_match.get(i).map(|(n, _)| n.as_str()))
            .unwrap_or("unknown")
    }

    /// Number of top-level policies (or tiers).
    pub fn len(&self) -> usize {
        self.policies.len() + self.first_match.len()
    }

    /// True when there are no policies.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decides a trace at `now`: `drop` policies first (a drop wins), then OR across the others,
    /// the smallest threshold among the keepers naming the decision. Every non-drop policy is
    /// evaluated, so rate limiters account for every trace they see, as in the Collector.
    pub fn decide(&self, trace_id: TraceId, summary: &TraceSummary, now: StreamTime) -> Decision {
        self.decide_trace(trace_id, summary, &[], now)
    }

    /// True when a policy reads the trace's spans themselves when deciding (`dynamic`'s key);
    /// every other policy decides on the summary's leaves alone, so `decide_trace` may then be
    /// given no spans.
    pub fn reads_spans(&self) -> bool {
        self.leaves.reads_spans
    }

    /// [`Sampler::decide`] with the trace's spans at hand (the pipeline's path).
    pub fn decide_trace(
        &self,
        trace_id: TraceId,
        summary: &TraceSummary,
        spans: &[SpanRef],
        now: StreamTime,
    ) -> Decision {
        let view = TraceView {
            trace_id,
            summary,
            now,
            spans,
        };
        self.decide_view::<false>(&view, &mut [])
    }

    /// [`Sampler::decide_trace`] that also reports, per top-level policy (or tier), whether it
    /// matched: a policy whose verdict was not "not sampled", or the tier whose condition took
    /// the trace. Every policy is evaluated exactly as often as when deciding (once, or not at
    /// all after a drop or an earlier tier), so stateful policies (rate limiters, composite
    /// budgets, the dynamic sampler) account for each trace once. `matched` has one entry per
    /// policy (or tier); entries of policies not evaluated are left false.
    pub fn decide_matching(
        &self,
        trace_id: TraceId,
        summary: &TraceSummary,
        spans: &[SpanRef],
        now: StreamTime,
        matched: &mut [bool],
    ) -> Decision {
        matched.iter_mut().for_each(|m| *m = false);
        let view = TraceView {
            trace_id,
            summary,
            now,
            spans,
        };
        self.decide_view::<true>(&view, matched)
    }

    /// The decision; with `RECORD`, which policies matched goes to `matched` (compiled out of
    /// the service's path).
    fn decide_view<const RECORD: bool>(
        &self,
        view: &TraceView<'_>,
        matched: &mut [bool],
    ) -> Decision {
        if !self.first_match.is_empty() {
            return self.decide_first_match(view, matched);
        }
        let mut mark = |i: usize, v: Verdict| {
            if !RECORD {
                return;
            }
            if let Some(m) = matched.get_mut(i) {
                *m = matches!(v, Verdict::Sampled { .. } | Verdict::Dropped);
            }
        };
        for &i in &self.drops {
            let v = self.policies[usize::from(i)].1.evaluate(view);
            mark(usize::from(i), v);
            if v == Verdict::Dropped {
                return Decision {
                    keep: false,
                    policy: Some(i),
                    threshold: Threshold::NEVER,
                };
            }
        }
        let mut best: Option<(PolicyId, Threshold)> = None;
        for (i, (_, p)) in self.policies.iter().enumerate() {
            if p.is_drop() {
                continue;
            }
            let id = i as PolicyId;
            let v = p.evaluate(view);
            mark(i, v);
            match v {
                Verdict::Error => {}
                Verdict::Dropped => {
                    return Decision {
                        keep: false,
                        policy: Some(id),
                        threshold: Threshold::NEVER,
                    }
                }
                Verdict::Sampled { threshold } => {
                    if best.is_none_or(|(_, t)| threshold < t) {
                        best = Some((id, threshold));
                    }
                }
                Verdict::NotSampled => {}
            }
        }
        match best {
            Some((policy, threshold)) => Decision {
                keep: true,
                policy: Some(policy),
                threshold,
            },
            None => Decision::NOT_SAMPLED,
        }
    }

    /// First-match tiers: the first tier whose condition holds decides, at its probability.
    fn decide_first_match(&self, view: &TraceView<'_>, matched: &mut [bool]) -> Decision {
        for (i, (_, tier)) in self.first_match.iter().enumerate() {
            if let Some(threshold) = tier.matches(view) {
                if let Some(m) = matched.get_mut(i) {
                    *m = true;
                }
                let keep = threshold.keeps(view.randomness());
                return Decision {
                    keep,
                    policy: Some(i as PolicyId),
                    threshold: if keep { threshold } else { Threshold::NEVER },
                };
            }
        }
        Decision::NOT_SAMPLED
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::otlp::StatusCode;
    use crate::otlp::{AnyValueRef, RawValue, SpanMeta, SpanProbe};

    #[test]
    fn only_a_dynamic_policy_at_any_depth_reads_the_spans() {
        let dynamic = "type: dynamic, dynamic: {key_fields: [service.name], goal_sample_rate: 5}";
        let prob = "{name: p, type: probabilistic, probabilistic: {sampling_percentage: 5}}";
        let cases = [
            (format!("policies: [{{name: d, {dynamic}}}]"), true),
            (
                format!("policies: [{{name: a, type: and, and: {{and_sub_policy: [{prob}, {{name: d, {dynamic}}}]}}}}]"),
                true,
            ),
            (
                format!("policies: [{{name: n, type: not, not: {{not_sub_policy: {{name: d, {dynamic}}}}}}}]"),
                true,
            ),
            (
                format!("tiers: [{{name: t, when: {{{dynamic}}}, sample_percentage: 100}}]"),
                true,
            ),
            (
                format!("policies: [{prob}, {{name: e, type: status_code, status_code: {{status_codes: [ERROR]}}}}]"),
                false,
            ),
            (
                "tiers: [{name: t, when: {type: latency, latency: {threshold_ms: 5}}, sample_percentage: 100}]".to_string(),
                false,
            ),
        ];
        for (yaml, reads) in cases {
            let cfg = crate::config::Config::parse(&yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
            let sampler = Sampler::from_config(&cfg).unwrap_or_else(|e| panic!("{yaml}: {e:?}"));
            assert_eq!(sampler.reads_spans(), reads, "{yaml}");
        }
    }

    pub(crate) fn policies(yaml: &str) -> Vec<PolicySpec> {
        let v: serde_norway::Value = serde_norway::from_str(yaml).unwrap();
        let mut errors = Vec::new();
        let out: Vec<PolicySpec> = v
            .as_sequence()
            .unwrap()
            .iter()
            .enumerate()
            .filter_map(|(i, p)| PolicySpec::from_yaml(&format!("policies[{i}]"), p, &mut errors))
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        out
    }

    /// Runs `f` on a view of `s` at time zero; true when it keeps the trace.
    pub(crate) fn view_of(s: &TraceSummary, f: impl FnOnce(&TraceView<'_>) -> Verdict) -> bool {
        view_at(s, StreamTime::ZERO, f)
    }

    /// Runs `f` on a view of `s` at `now`; true when it keeps the trace.
    pub(crate) fn view_at(
        s: &TraceSummary,
        now: StreamTime,
        f: impl FnOnce(&TraceView<'_>) -> Verdict,
    ) -> bool {
        matches!(
            f(&TraceView {
                trace_id: TraceId([7; 16]),
                summary: s,
                now,
                spans: &[],
            }),
            Verdict::Sampled { .. }
        )
    }

    /// One span with one attribute (on the span or on its resource) through the leaves, then `f`.
    pub(crate) fn probe_one(
        leaves: &LeafSet,
        key: &str,
        value: AnyValueRef<'_>,
        on_resource: bool,
        f: impl FnOnce(&TraceView<'_>) -> Verdict,
    ) -> bool {
        let mut scratch = Vec::new();
        let raw = RawValue::encode(value, &mut scratch);
        let mut m = meta(0, 1, StatusCode::Unset, true);
        m.leaf_bits = if on_resource {
            leaves.resource_attribute(key.as_bytes(), raw)
        } else {
            leaves.span_attribute(key.as_bytes(), raw)
        };
        view_of(&summary(&[m]), f)
    }

    pub(crate) fn summary(spans: &[SpanMeta]) -> TraceSummary {
        let mut s = TraceSummary::new();
        for m in spans {
            s.add(m);
        }
        s
    }

    pub(crate) fn meta(start_ms: u64, end_ms: u64, status: StatusCode, root: bool) -> SpanMeta {
        SpanMeta {
            is_root: root,
            // Times are offset from the epoch: a start of 0 means "no usable times".
            start_ns: (start_ms + 1_000) * 1_000_000,
            end_ns: (end_ms + 1_000) * 1_000_000,
            status,
            size: 100,
            ..Default::default()
        }
    }

    /// A trace id whose randomness is `r` (56 bits).
    pub(crate) fn tid_with_randomness(r: u64) -> TraceId {
        let mut id = [0xabu8; 16];
        id[8] = 0x11;
        for i in 0..7 {
            id[15 - i] = (r >> (8 * i)) as u8;
        }
        TraceId(id)
    }

    fn seed() -> Vec<PolicySpec> {
        crate::config::Config::parse(SEED_POLICIES)
            .unwrap()
            .policies
    }

    #[test]
    fn threshold_math() {
        assert_eq!(Threshold::for_probability(1.0), Threshold::ALWAYS);
        assert_eq!(
            Threshold::for_probability(0.5),
            Threshold::from_raw(1 << 55)
        );
        assert_eq!(Threshold::for_probability(0.0), Threshold::NEVER);
        assert!((Threshold::for_probability(0.01).adjusted_count() - 100.0).abs() < 1e-6);
        assert_eq!(Threshold::ALWAYS.adjusted_count(), 1.0);
        assert_eq!(Threshold::from_raw(1 << 55).hex(), "8");
        assert_eq!(Threshold::ALWAYS.hex(), "0");
        // 1% at the spec's example precision.
        assert!(Threshold::for_probability(0.01)
            .hex()
            .starts_with("fd70a3d70a3d"));
    }

    #[test]
    fn seed_policies_decide_as_documented() {
        let sampler = Sampler::build(&seed()).unwrap();
        let low = tid_with_randomness(0x10); // below every threshold but 0
        let high = tid_with_randomness(Threshold::NEVER.raw() - 1); // passes any probability
        let mid = tid_with_randomness(3 << 54); // passes 50%, not 1%

        let err = summary(&[
            meta(0, 10, StatusCode::Ok, true),
            meta(1, 2, StatusCode::Error, false),
        ]);
        let d = sampler.decide(low, &err, StreamTime::ZERO);
        assert!(d.keep);
        assert_eq!(sampler.policy_name(d.policy.unwrap()), "errors");
        assert_eq!(d.threshold, Threshold::ALWAYS);

        let slow = summary(&[meta(0, 501, StatusCode::Unset, true)]);
        assert!(sampler.decide(low, &slow, StreamTime::ZERO).keep);
        let not_slow = summary(&[meta(0, 500, StatusCode::Unset, true)]);
        assert!(!sampler.decide(low, &not_slow, StreamTime::ZERO).keep);

        // The 1% default keeps only high-randomness traces, with threshold and adjusted count 100.
        let d = sampler.decide(high, &not_slow, StreamTime::ZERO);
        assert!(d.keep);
        assert_eq!(sampler.policy_name(d.policy.unwrap()), "default");
        assert!((d.threshold.adjusted_count() - 100.0).abs() < 1e-6);
        assert!(!sampler.decide(mid, &not_slow, StreamTime::ZERO).keep);
    }

    #[test]
    fn and_with_route_and_probability() {
        let sampler = Sampler::build(&seed()).unwrap();
        let probe = sampler.probe();
        let mut b = Vec::new();
        let mut probe_value = |v| probe.span_attribute(b"http.route", RawValue::encode(v, &mut b));
        let bits = probe_value(AnyValueRef::Str("/api/payment"));
        assert_ne!(bits, 0);
        assert_eq!(probe_value(AnyValueRef::Str("/api/cart")), 0);
        assert_eq!(probe_value(AnyValueRef::Int(3)), 0);
        let mut m = meta(0, 10, StatusCode::Unset, true);
        m.leaf_bits = bits;
        let s = summary(&[m]);
        let mid = tid_with_randomness(3 << 54);
        let d = sampler.decide(mid, &s, StreamTime::ZERO);
        assert!(d.keep);
        assert_eq!(sampler.policy_name(d.policy.unwrap()), "important");
        assert!((d.threshold.adjusted_count() - 2.0).abs() < 1e-9);
        assert!(
            !sampler
                .decide(tid_with_randomness(1 << 54), &s, StreamTime::ZERO)
                .keep
        );
    }

    #[test]
    fn smallest_threshold_wins_when_several_keep() {
        let sampler = Sampler::build(&policies(
            r#"
- {name: p10, type: probabilistic, probabilistic: {sampling_percentage: 10}}
- {name: p90, type: probabilistic, probabilistic: {sampling_percentage: 90}}
"#,
        ))
        .unwrap();
        let d = sampler.decide(
            tid_with_randomness(Threshold::NEVER.raw() - 1),
            &summary(&[]),
            StreamTime::ZERO,
        );
        assert_eq!(sampler.policy_name(d.policy.unwrap()), "p90");
    }

    #[test]
    fn rv_in_tracestate_is_the_randomness() {
        let sampler = Sampler::build(&policies(
            "- {name: p50, type: probabilistic, probabilistic: {sampling_percentage: 50}}",
        ))
        .unwrap();
        let id = tid_with_randomness(0); // would be dropped on trace-id randomness
        let mut m = meta(0, 1, StatusCode::Unset, true);
        m.rv = Some(Threshold::NEVER.raw() - 1);
        assert!(sampler.decide(id, &summary(&[m]), StreamTime::ZERO).keep);
        assert!(
            !sampler
                .decide(
                    id,
                    &summary(&[meta(0, 1, StatusCode::Unset, true)]),
                    StreamTime::ZERO
                )
                .keep
        );
    }

    #[test]
    fn decisions_are_deterministic_and_nested() {
        // kept at p => kept at every p' > p, for the same trace.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let ps = [1.0, 5.0, 25.0, 50.0, 90.0, 100.0];
        let samplers: Vec<Sampler> = ps
            .iter()
            .map(|p| {
                Sampler::build(&policies(&format!(
                    "- {{name: p, type: probabilistic, probabilistic: {{sampling_percentage: {p}}}}}"
                )))
                .unwrap()
            })
            .collect();
        let s = summary(&[]);
        let mut kept = vec![0usize; ps.len()];
        let n = 20_000;
        for _ in 0..n {
            let id = TraceId(rng.random());
            let ds: Vec<bool> = samplers
                .iter()
                .map(|x| x.decide(id, &s, StreamTime::ZERO).keep)
                .collect();
            assert_eq!(
                ds,
                samplers
                    .iter()
                    .map(|x| x.decide(id, &s, StreamTime::ZERO).keep)
                    .collect::<Vec<_>>()
            );
            for w in ds.windows(2) {
                assert!(!w[0] || w[1], "nesting violated: {ds:?}");
            }
            for (k, d) in kept.iter_mut().zip(&ds) {
                *k += usize::from(*d);
            }
        }
        for (p, k) in ps.iter().zip(kept) {
            let want = p / 100.0 * n as f64;
            let sd = (n as f64 * p / 100.0 * (1.0 - p / 100.0)).sqrt().max(1.0);
            assert!(
                (k as f64 - want).abs() < 5.0 * sd,
                "p={p}: kept {k}, want ~{want}"
            );
        }
    }
}
