//! Ordered first-match rules (the `tiers:` block; named so in code to keep them apart from the
//! archive's storage tiers), an alternative to the Collector's OR of policies: the first rule
//! whose condition (`when`, any policy item; absent = every trace) holds decides the trace, at
//! that rule's consistent probability. The seed's cost tiers read:
//!
//! ```yaml
//! tiers:
//!   - {name: errors, when: {type: status_code, status_code: {status_codes: [ERROR]}}, sample_percentage: 100}
//!   - {name: slow, when: {type: latency, latency: {threshold_ms: 500}}, sample_percentage: 100}
//!   - name: important
//!     when: {type: string_attribute, string_attribute: {key: http.route, values: [/api/payment, /api/checkout]}}
//!     sample_percentage: 50
//!   - {name: rest, sample_percentage: 1}
//! ```

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::{compile, Evaluator, LeafSet, PolicySpec, Threshold, TraceView, Verdict};
use crate::settings::ConfigError;

/// One tier as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct FirstMatchSpec {
    /// Unique name; labels metrics and fills `sampling_policy`.
    pub name: String,
    /// The condition; `None` matches every trace.
    pub when: Option<PolicySpec>,
    /// Percentage of the matching traces to keep, 0–100.
    pub sample_percentage: f64,
}

impl Serialize for FirstMatchSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("name", &self.name)?;
        if let Some(w) = &self.when {
            m.serialize_entry("when", w)?;
        }
        m.serialize_entry("sample_percentage", &self.sample_percentage)?;
        m.end()
    }
}

impl FirstMatchSpec {
    /// Parses one tier; problems go to `errors` with paths under `path`.
    pub fn from_yaml(
        path: &str,
        v: &serde_norway::Value,
        errors: &mut Vec<ConfigError>,
    ) -> Option<FirstMatchSpec> {
        let map = super::block_fields(
            path,
            Some(v),
            &["name", "when", "sample_percentage"],
            errors,
        )?;
        let before = errors.len();
        let name = match map.get("name").and_then(|n| n.as_str()) {
            Some(n) if !n.trim().is_empty() => n.to_string(),
            _ => {
                errors.push(ConfigError::new(
                    format!("{path}.name"),
                    "a non-empty name is required",
                ));
                String::new()
            }
        };
        let pct = match map.get("sample_percentage") {
            Some(v) => match v.as_f64() {
                Some(p) if (0.0..=100.0).contains(&p) => p,
                _ => {
                    errors.push(ConfigError::new(
                        format!("{path}.sample_percentage"),
                        "a number between 0 and 100",
                    ));
                    0.0
                }
            },
            None => {
                errors.push(ConfigError::new(
                    format!("{path}.sample_percentage"),
                    "required (a number between 0 and 100)",
                ));
                0.0
            }
        };
        let when = match map.get("when") {
            None => None,
            Some(w) => {
                // The condition's name is optional: it defaults to the tier's.
                let mut w = w.clone();
                if let Some(m) = w.as_mapping_mut() {
                    if !m.contains_key("name") {
                        m.insert("name".into(), format!("{name}.when").into());
                    }
                }
                PolicySpec::from_yaml(&format!("{path}.when"), &w, errors)
            }
        };
        (errors.len() == before).then_some(FirstMatchSpec {
            name,
            when,
            sample_percentage: pct,
        })
    }
}

/// A compiled tier.
#[derive(Debug)]
pub struct FirstMatchRule {
    when: Option<Evaluator>,
    threshold: Threshold,
}

impl FirstMatchRule {
    /// Compiles the condition.
    pub fn build(
        spec: &FirstMatchSpec,
        path: &str,
        leaves: &mut LeafSet,
        errors: &mut Vec<ConfigError>,
    ) -> Option<FirstMatchRule> {
        let when = match &spec.when {
            None => None,
            Some(w) if w.kind.type_name() == "drop" => {
                errors.push(ConfigError::new(
                    format!("{path}.when.type"),
                    "a tier condition cannot be `drop`; put dropped traces in a 0% tier",
                ));
                return None;
            }
            Some(w) => Some(compile(w, &format!("{path}.when"), leaves, errors)?),
        };
        Some(FirstMatchRule {
            when,
            threshold: Threshold::for_probability(spec.sample_percentage / 100.0),
        })
    }

    /// `Some(threshold)` when the tier's condition holds for the trace.
    pub fn matches(&self, t: &TraceView<'_>) -> Option<Threshold> {
        match &self.when {
            None => Some(self.threshold),
            Some(w) => matches!(w.evaluate(t), Verdict::Sampled { .. }).then_some(self.threshold),
        }
    }
}
