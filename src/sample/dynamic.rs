//! `dynamic`: a Refinery-style dynamic sampler (tracesift's own policy type). Each trace gets a
//! key from chosen fields (e.g. service, route, status); every `adjustment_interval` the traces
//! seen per key are folded into an exponential moving average, and per-key sample rates are
//! recomputed so the total meets a goal: an average rate (`goal_sample_rate`, keep 1 in N
//! overall) or a throughput (`goal_throughput_per_sec` traces kept per second). Rates follow
//! the logarithm of each key's volume, so rare keys keep most or all of their traces and common
//! ones are sampled hardest. A key not seen before is kept at rate 1 until the next adjustment.
//!
//! Decisions are consistent (OTEP 235): a key's rate N becomes the threshold for probability
//! 1/N, so kept spans carry the right `th` and adjusted count. The key table is bounded by
//! `max_keys`; keys beyond it share one overflow key.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Threshold, TraceView, Verdict};
use crate::clock::StreamTime;
use crate::otlp::StatusCode;

/// The `dynamic` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicConfig {
    /// Fields whose values make a trace's key: attribute names, read from the root span (its
    /// attributes, then its resource's; the first span when the root is missing), and the
    /// pseudo-field `status_code` (the trace's worst status).
    pub key_fields: Vec<String>,
    /// Keep on average one trace in this many (give this or `goal_throughput_per_sec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal_sample_rate: Option<f64>,
    /// Keep about this many traces per second in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal_throughput_per_sec: Option<f64>,
    /// How often rates are recomputed.
    #[serde(default = "default_interval", with = "crate::settings::duration")]
    pub adjustment_interval: Duration,
    /// Weight of the newest interval in the moving average, in (0, 1].
    #[serde(default = "default_weight")]
    pub ewma_weight: f64,
    /// Keys tracked at most.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

fn default_interval() -> Duration {
    Duration::from_secs(15)
}
fn default_weight() -> f64 {
    0.5
}
fn default_max_keys() -> usize {
    10_000
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Goal {
    Rate(f64),
    Throughput(f64),
}

#[derive(Debug, Default)]
struct State {
    /// Traces seen per key in the current interval.
    counts: HashMap<u64, f64>,
    /// Moving average of traces per interval, per key.
    ema: HashMap<u64, f64>,
    /// Current sample rate (keep 1 in N) per key.
    rates: HashMap<u64, f64>,
    /// End of the current interval; `None` before the first trace.
    next_adjust: Option<StreamTime>,
}

/// Compiled `dynamic`.
#[derive(Debug)]
pub struct Dynamic {
    fields: Vec<String>,
    goal: Goal,
    interval: Duration,
    weight: f64,
    max_keys: usize,
    state: Mutex<State>,
}

/// Key of the traces beyond `max_keys`.
const OVERFLOW_KEY: u64 = 0;

impl Dynamic {
    /// Checks the settings.
    pub fn build(c: &DynamicConfig) -> Result<Dynamic, String> {
        if c.key_fields.is_empty() {
            return Err("key_fields must name at least one field".into());
        }
        let goal = match (c.goal_sample_rate, c.goal_throughput_per_sec) {
            (Some(r), None) if r >= 1.0 => Goal::Rate(r),
            (Some(r), None) => return Err(format!("goal_sample_rate must be at least 1, got {r}")),
            (None, Some(t)) if t > 0.0 => Goal::Throughput(t),
            (None, Some(t)) => {
                return Err(format!("goal_throughput_per_sec must be above 0, got {t}"))
            }
            _ => {
                return Err("give exactly one of goal_sample_rate, goal_throughput_per_sec".into())
            }
        };
        if c.adjustment_interval < Duration::from_millis(100) {
            return Err("adjustment_interval must be at least 100ms".into());
        }
        if !(c.ewma_weight > 0.0 && c.ewma_weight <= 1.0) {
            return Err(format!(
                "ewma_weight must be in (0, 1], got {}",
                c.ewma_weight
            ));
        }
        if c.max_keys < 2 {
            return Err("max_keys must be at least 2".into());
        }
        Ok(Dynamic {
            fields: c.key_fields.clone(),
            goal,
            interval: c.adjustment_interval,
            weight: c.ewma_weight,
            max_keys: c.max_keys,
            state: Mutex::new(State::default()),
        })
    }

    /// The trace's key: a hash of its key fields' values.
    fn key(&self, t: &TraceView<'_>) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let span = t
            .spans
            .iter()
            .find_map(|s| {
                let d = crate::otlp::decode_span(s).ok()?;
                d.parent_span_id.is_empty().then_some((s, d))
            })
            .or_else(|| {
                let s = t.spans.first()?;
                crate::otlp::decode_span(s).ok().map(|d| (s, d))
            });
        let resource = span
            .as_ref()
            .and_then(|(s, _)| crate::otlp::decode_resource(&s.ctx).ok());
        for f in &self.fields {
            let v = if f == "status_code" {
                let m = t.summary.status_mask;
                if m & StatusCode::Error.bit() != 0 {
                    "error".to_string()
                } else if m & StatusCode::Ok.bit() != 0 {
                    "ok".to_string()
                } else {
                    "unset".to_string()
                }
            } else {
                let attrs = span
                    .as_ref()
                    .map(|(_, d)| d.attributes.as_slice())
                    .unwrap_or_default()
                    .iter()
                    .chain(resource.iter().flat_map(|r| r.attributes.iter()));
                attrs
                    .filter(|kv| kv.key == *f)
                    .map(|kv| crate::otlp::render_value(kv.value.as_ref()))
                    .next()
                    .unwrap_or_default()
            };
            std::hash::Hash::hash(&v, &mut h);
        }
        // 0 is the overflow key.
        std::hash::Hasher::finish(&h).max(1)
    }

    /// Counts the trace under its key and keeps it at the key's current rate.
    pub fn evaluate(&self, t: &TraceView<'_>) -> Verdict {
        let key = self.key(t);
        let Ok(mut st) = self.state.lock() else {
            return Verdict::NotSampled;
        };
        match st.next_adjust {
            None => st.next_adjust = Some(t.now + self.interval),
            Some(at) if t.now >= at => {
                self.adjust(&mut st);
                st.next_adjust = Some(t.now + self.interval);
            }
            Some(_) => {}
        }
        let key = if st.counts.contains_key(&key)
            || st.ema.contains_key(&key)
            || st.counts.len() < self.max_keys - 1
        {
            key
        } else {
            OVERFLOW_KEY
        };
        *st.counts.entry(key).or_default() += 1.0;
        let rate = st.rates.get(&key).copied().unwrap_or(1.0);
        drop(st);
        let threshold = Threshold::for_probability(1.0 / rate);
        if t.randomness() >= threshold.raw() {
            Verdict::Sampled { threshold }
        } else {
            Verdict::NotSampled
        }
    }

    /// Folds the interval's counts into the moving averages and recomputes the rates.
    fn adjust(&self, st: &mut State) {
        let counts = std::mem::take(&mut st.counts);
        for v in st.ema.values_mut() {
            *v *= 1.0 - self.weight;
        }
        for (k, c) in counts {
            *st.ema.entry(k).or_default() += self.weight * c;
        }
        // Forget keys that faded; bound the table.
        st.ema.retain(|_, v| *v >= 0.05);
        if st.ema.len() > self.max_keys {
            let mut v: Vec<(u64, f64)> = st.ema.iter().map(|(k, v)| (*k, *v)).collect();
            v.sort_by(|a, b| b.1.total_cmp(&a.1));
            v.truncate(self.max_keys);
            st.ema = v.into_iter().collect();
        }
        let total: f64 = st.ema.values().sum();
        let goal_count = match self.goal {
            Goal::Rate(r) => total / r,
            Goal::Throughput(t) => t * self.interval.as_secs_f64(),
        };
        st.rates = rates_for(&st.ema, goal_count);
    }
}

/// Per-key rates whose kept counts add up to about `goal_count`, shared out in proportion to
/// the logarithm of each key's count (the average-sample-rate method of Honeycomb's dynamic
/// samplers): the smallest keys first, each getting at least one kept trace, and whatever a
/// small key cannot use handed on to the larger ones.
fn rates_for(counts: &HashMap<u64, f64>, goal_count: f64) -> HashMap<u64, f64> {
    let mut keys: Vec<(u64, f64)> = counts
        .iter()
        .filter(|(_, c)| **c > 0.0)
        .map(|(k, c)| (*k, *c))
        .collect();
    keys.sort_by(|a, b| a.1.total_cmp(&b.1));
    let weight = |c: f64| (c + 1.0).log10();
    let mut log_sum: f64 = keys.iter().map(|(_, c)| weight(*c)).sum();
    let mut goal_left = goal_count.max(0.0);
    let mut out = HashMap::with_capacity(keys.len());
    for (k, c) in keys {
        let w = weight(c);
        let share = if log_sum > 0.0 {
            goal_left * w / log_sum
        } else {
            goal_left
        };
        let keep = share.clamp(1.0_f64.min(c), c);
        let rate = (c / keep).max(1.0);
        out.insert(k, rate);
        goal_left -= c / rate;
        log_sum -= w;
    }
    out
}

super::policy_impl!(Dynamic, DynamicConfig);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::TraceId;
    use crate::sample::TraceSummary;

    #[test]
    fn rates_favour_rare_keys_and_meet_the_goal() {
        let counts: HashMap<u64, f64> = [(1, 9000.0), (2, 900.0), (3, 90.0), (4, 10.0)].into();
        let total: f64 = counts.values().sum();
        let rates = rates_for(&counts, total / 10.0);
        let kept: f64 = counts.iter().map(|(k, c)| c / rates[k]).sum();
        assert!((kept - total / 10.0).abs() < 1.0, "kept {kept}");
        assert!(rates[&1] > rates[&2] && rates[&2] > rates[&3] && rates[&3] >= rates[&4]);
        assert_eq!(rates[&4], 1.0, "the rarest key keeps everything");
    }

    #[test]
    fn settings_are_checked() {
        let ok = DynamicConfig {
            key_fields: vec!["service.name".into()],
            goal_sample_rate: Some(10.0),
            goal_throughput_per_sec: None,
            adjustment_interval: Duration::from_secs(1),
            ewma_weight: 0.5,
            max_keys: 100,
        };
        assert!(Dynamic::build(&ok).is_ok());
        for bad in [
            DynamicConfig {
                key_fields: vec![],
                ..ok.clone()
            },
            DynamicConfig {
                goal_sample_rate: None,
                ..ok.clone()
            },
            DynamicConfig {
                goal_throughput_per_sec: Some(5.0),
                ..ok.clone()
            },
            DynamicConfig {
                goal_sample_rate: Some(0.5),
                ..ok.clone()
            },
            DynamicConfig {
                ewma_weight: 0.0,
                ..ok.clone()
            },
        ] {
            assert!(Dynamic::build(&bad).is_err(), "{bad:?}");
        }
        // A trace without spans still gets a key (the empty one) and a verdict.
        let d = Dynamic::build(&ok).unwrap();
        let s = TraceSummary::new();
        let v = d.evaluate(&TraceView {
            trace_id: TraceId([5; 16]),
            summary: &s,
            now: StreamTime::ZERO,
            spans: &[],
        });
        assert!(
            matches!(
                v,
                Verdict::Sampled {
                    threshold: Threshold::ALWAYS
                }
            ),
            "new keys keep at rate 1"
        );
    }
}
