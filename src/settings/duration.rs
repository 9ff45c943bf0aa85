//! Durations in configuration: read as humans write them (`30s`, `5m`, `1h30m`, `365d`, and a
//! bare `0` where a wait can be off) and printed back the same way — the largest units that
//! are exact, no months or years (`365d`, not `11months 30days 3h 50m 24s`). Used with
//! `#[serde(with = "crate::settings::duration")]`, [`option`] for an optional one and [`Dur`]
//! in lists.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How a duration is written, for messages: `30s, 5m or 1h30m`.
pub const EXAMPLE: &str = "write it like 30s, 5m or 1h30m";

/// Parses `30s`, `1h30m`, `250ms`, `365d` or `0`.
pub fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(format!("an empty value is not a duration; {EXAMPLE}"));
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return if t.bytes().all(|b| b == b'0') {
            Ok(Duration::ZERO)
        } else {
            Err(format!("`{t}` has no unit; write it like {t}s or {t}ms"))
        };
    }
    humantime::parse_duration(t).map_err(|_| format!("\"{t}\" is not a duration; {EXAMPLE}"))
}

/// A duration in the largest units that are exact: `365d`, `1h30m`, `1s400ms`, `0s`.
pub fn format(d: Duration) -> String {
    const UNITS: [(&str, u128); 7] = [
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ];
    let mut ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in UNITS {
        if ns >= size {
            out.push_str(&(ns / size).to_string());
            out.push_str(unit);
            ns %= size;
        }
    }
    out
}

struct Visitor;

impl serde::de::Visitor<'_> for Visitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
        parse(&v.to_string()).map_err(E::custom)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
        if v < 0 {
            return Err(E::custom(format!(
                "`{v}` is negative; a duration is 0 or more, {EXAMPLE}"
            )));
        }
        self.visit_u64(v as u64)
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Duration, E> {
        Err(E::custom(format!("`{v}` has no unit; {EXAMPLE}")))
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Duration, E> {
        Err(E::custom(format!("`{v}` is not a duration; {EXAMPLE}")))
    }
}

/// Serializes as [`format`] writes it.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

/// Reads a duration (see [`parse`]).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(Visitor)
}

/// An optional duration (`null` or absent is none).
pub mod option {
    use super::*;

    /// Serializes a present duration as [`format`] writes it, an absent one as null.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&format(*d)),
            None => s.serialize_none(),
        }
    }

    /// Reads null as none, else a duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<Dur>::deserialize(d).map(|o| o.map(|d| d.0))
    }
}

/// A duration in a list (`[5ms, 50ms, 1s]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl std::ops::Deref for Dur {
    type Target = Duration;

    fn deref(&self) -> &Duration {
        &self.0
    }
}

impl From<Duration> for Dur {
    fn from(d: Duration) -> Dur {
        Dur(d)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        deserialize(d).map(Dur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_back_as_written_and_read_back() {
        for (text, secs) in [
            ("365d", 365.0 * 86_400.0),
            ("1h30m", 5_400.0),
            ("1s400ms", 1.4),
            ("5m", 300.0),
            ("0s", 0.0),
            ("250us", 0.000_25),
        ] {
            let d = Duration::from_secs_f64(secs);
            assert_eq!(format(d), text);
            assert_eq!(parse(text), Ok(d), "{text}");
        }
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("000"), Ok(Duration::ZERO));
        assert!(parse("30").unwrap_err().contains("30s"));
        assert_eq!(
            parse("five minutes").unwrap_err(),
            "\"five minutes\" is not a duration; write it like 30s, 5m or 1h30m"
        );
    }
}
