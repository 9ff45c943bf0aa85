//! The policy grammar: a policy item as configured (`{name, type, <type>: {…}}`, the Collector's
//! syntax), parsed with every problem reported under its YAML path.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::{PolicyKind, ALL_POLICY_TYPES};
use crate::settings::ConfigError;

/// One policy as configured: a name and a typed body.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySpec {
    /// Unique name; it labels metrics and fills the `sampling_policy` column.
    pub name: String,
    /// The policy type and its settings.
    pub kind: PolicyKind,
}

/// Policy types of tracesift's own, beyond the Collector's.
pub const EXTRA_POLICY_TYPES: &[&str] = &["dynamic"];

pub(crate) fn valid_types() -> String {
    ALL_POLICY_TYPES.join(", ")
}

/// Checks that `block` is a mapping with only `allowed` keys; unknown keys are reported.
pub(crate) fn block_fields<'a>(
    path: &str,
    block: Option<&'a serde_norway::Value>,
    allowed: &[&str],
    errors: &mut Vec<ConfigError>,
) -> Option<&'a serde_norway::Mapping> {
    let Some(map) = block.and_then(|b| b.as_mapping()) else {
        errors.push(ConfigError::new(
            path,
            format!("expected a mapping with {}", allowed.join(", ")),
        ));
        return None;
    };
    for k in map.keys() {
        let k = k.as_str().unwrap_or("?");
        if !allowed.contains(&k) {
            errors.push(ConfigError::new(
                format!("{path}.{k}"),
                format!("unknown field; valid fields: {}", allowed.join(", ")),
            ));
        }
    }
    Some(map)
}

/// Parses the list of sub-policies under `field`, each reported with its own path.
pub(crate) fn sub_policies(
    path: &str,
    map: &serde_norway::Mapping,
    field: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<Vec<PolicySpec>> {
    let Some(items) = map.get(field).and_then(|v| v.as_sequence()) else {
        errors.push(ConfigError::new(
            format!("{path}.{field}"),
            "expected a list of policies",
        ));
        return None;
    };
    let before = errors.len();
    let subs: Vec<PolicySpec> = items
        .iter()
        .enumerate()
        .filter_map(|(i, v)| PolicySpec::from_yaml(&format!("{path}.{field}[{i}]"), v, errors))
        .collect();
    (errors.len() == before).then_some(subs)
}

pub(crate) fn typed_block<T: serde::de::DeserializeOwned>(
    path: &str,
    block: Option<&serde_norway::Value>,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let Some(block) = block else {
        errors.push(ConfigError::new(
            path,
            "this policy type needs its settings block",
        ));
        return None;
    };
    crate::settings::lenient::read(path, block, errors)
}

impl PolicySpec {
    /// Parses one policy item; problems go to `errors` with paths under `path`.
    pub fn from_yaml(
        path: &str,
        v: &serde_norway::Value,
        errors: &mut Vec<ConfigError>,
    ) -> Option<PolicySpec> {
        let Some(map) = v.as_mapping() else {
            errors.push(ConfigError::new(
                path,
                "a policy is a mapping with `name` and `type`",
            ));
            return None;
        };
        let before = errors.len();
        let name = match map.get("name").and_then(|n| n.as_str()) {
            Some(n) if !n.trim().is_empty() => Some(n.to_string()),
            _ => {
                errors.push(ConfigError::new(
                    format!("{path}.name"),
                    "a non-empty name is required",
                ));
                None
            }
        };
        let ty = match map.get("type").and_then(|t| t.as_str()) {
            Some(t) if ALL_POLICY_TYPES.contains(&t) => Some(t),
            Some(t) => {
                errors.push(ConfigError::new(
                    format!("{path}.type"),
                    format!("unknown policy type `{t}`; valid types: {}", valid_types()),
                ));
                None
            }
            None => {
                errors.push(ConfigError::new(
                    format!("{path}.type"),
                    format!("`type` is required; valid types: {}", valid_types()),
                ));
                None
            }
        };
        if let Some(ty) = ty {
            for key in map.keys() {
                let k = key.as_str().unwrap_or("");
                if k != "name" && k != "type" && k != ty {
                    errors.push(ConfigError::new(
                        format!("{path}.{k}"),
                        format!("unknown field for a `{ty}` policy; expected name, type, {ty}"),
                    ));
                }
            }
        }
        let kind = ty.and_then(|ty| PolicyKind::parse(ty, path, map.get(ty), errors));
        match (name, kind) {
            (Some(name), Some(kind)) if errors.len() == before => Some(PolicySpec { name, kind }),
            _ => None,
        }
    }
}

impl Serialize for PolicySpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let block = self.kind.block_value();
        let mut m = s.serialize_map(Some(2 + usize::from(block.is_some())))?;
        m.serialize_entry("name", &self.name)?;
        m.serialize_entry("type", self.kind.type_name())?;
        if let Some(b) = block {
            m.serialize_entry(self.kind.type_name(), &b)?;
        }
        m.end()
    }
}

// ---------------------------------------------------------------------------------------------
