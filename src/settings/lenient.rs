//! Reading a configuration section so that every problem in it is reported at once, in the
//! user's words, with its YAML path.
//!
//! serde stops a struct at its first bad field. [`read`] reads the section; on an error it
//! records the problem at its full path, takes that one value out of a copy of the tree (so the
//! field falls back to its default, or a list loses that item) and reads again, until the
//! section reads. The good fields survive, so the section's own checks still run on them, and
//! nothing per type is needed: nested structs, lists and policy blocks work the same way.

use serde::de::DeserializeOwned;
use serde_norway::Value;
use serde_path_to_error::Segment;

use super::ConfigError;

/// Most problems taken from one section before giving up on it.
const MAX_PROBLEMS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// `base` then the segments: `kafka.properties.x`, `sinks.otlp_http[0].name`.
fn path_text(base: &str, segs: &[Seg]) -> String {
    let mut out = base.to_string();
    for s in segs {
        match s {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn at<'v>(v: &'v Value, segs: &[Seg]) -> Option<&'v Value> {
    segs.iter().try_fold(v, |v, s| match (s, v) {
        (Seg::Key(k), Value::Mapping(m)) => m.get(k.as_str()),
        (Seg::Index(i), Value::Sequence(items)) => items.get(*i),
        _ => None,
    })
}

/// Takes the value at `segs` out of `v`; false when there is nothing to take.
fn take_out(v: &mut Value, segs: &[Seg]) -> bool {
    let Some((last, parent)) = segs.split_last() else {
        return false;
    };
    let mut cur = v;
    for s in parent {
        let next = match (s, cur) {
            (Seg::Key(k), Value::Mapping(m)) => m.get_mut(k.as_str()),
            (Seg::Index(i), Value::Sequence(items)) => items.get_mut(*i),
            _ => None,
        };
        let Some(next) = next else {
            return false;
        };
        cur = next;
    }
    match (last, cur) {
        (Seg::Key(k), Value::Mapping(m)) => m.remove(k.as_str()).is_some(),
        (Seg::Index(i), Value::Sequence(items)) if *i < items.len() => {
            items.remove(*i);
            true
        }
        _ => false,
    }
}

/// Reads `T` from `v` (the section at `base`), every problem into `errors`. `None` when the
/// section cannot be read at all (not a mapping, a required field of its own missing).
pub fn read<T: DeserializeOwned>(
    base: &str,
    v: &Value,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let original = v;
    let mut v = v.clone();
    // Sequence items taken out (parent path, index), in current coordinates, in order.
    let mut removed: Vec<(Vec<Seg>, usize)> = Vec::new();
    for _ in 0..MAX_PROBLEMS {
        let e = match serde_path_to_error::deserialize::<_, T>(v.clone()) {
            Ok(t) => return Some(t),
            Err(e) => e,
        };
        let mut segs = Vec::new();
        let mut known = true;
        for s in e.path().iter() {
            match s {
                Segment::Map { key } => segs.push(Seg::Key(key.clone())),
                Segment::Seq { index } => segs.push(Seg::Index(*index)),
                Segment::Enum { .. } | Segment::Unknown => known = false,
            }
        }
        // Back to the file's coordinates: items taken out before shift later ones.
        let mut original_segs = segs.clone();
        for (parent, index) in removed.iter().rev() {
            if original_segs.len() > parent.len() && original_segs[..parent.len()] == parent[..] {
                if let Seg::Index(i) = &mut original_segs[parent.len()] {
                    if *i >= *index {
                        *i += 1;
                    }
                }
            }
        }
        let inner = e.inner().to_string();
        let message = humanize(&inner, at(original, &original_segs).filter(|_| known));
        let path = path_text(base, &original_segs);
        // A field taken out for being wrong is not "missing" too.
        let already = inner
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
            .is_some_and(|f| {
                let field = path_text(&path, &[Seg::Key(f.to_string())]);
                errors.iter().any(|e| e.path == field)
            });
        if !already {
            errors.push(ConfigError::new(path, message));
        }
        if !known || !take_out(&mut v, &segs) {
            return None;
        }
        if let Some((Seg::Index(i), parent)) = segs.split_last() {
            removed.push((parent.to_vec(), *i));
        }
    }
    None
}

/// A value as the user wrote it, for a message: `5`, `"five minutes"`, `a list`.
fn shown(v: &Value) -> String {
    match v {
        Value::Null => "an empty value".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("\"{s}\""),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => shown(&t.value),
    }
}

/// The backquoted names of a serde message (`expected one of `a`, `b``).
fn quoted(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

/// serde's message rewritten in the user's words: what was found, what is expected, how to
/// write it.
pub fn humanize(msg: &str, found: Option<&Value>) -> String {
    let found_text = found.map(shown);
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (got, rest) = rest.split_once('`').unwrap_or((rest, ""));
        let names = quoted(rest);
        return match suggest(got, names.iter().copied()) {
            Some(m) => format!("unknown field `{got}`; did you mean `{m}`?"),
            None if names.is_empty() => format!("unknown field `{got}`; this block has no fields"),
            None => format!("unknown field `{got}`; the fields are {}", names.join(", ")),
        };
    }
    if let Some(rest) = msg.strip_prefix("unknown variant `") {
        let (got, rest) = rest.split_once('`').unwrap_or((rest, ""));
        let names = quoted(rest);
        let hint = suggest(got, names.iter().copied())
            .map(|m| format!("; did you mean `{m}`?"))
            .unwrap_or_default();
        return format!("`{got}` is not one of {}{hint}", names.join(", "));
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or(rest);
        return format!("`{name}` is required");
    }
    let expectation = ["invalid type: ", "invalid value: ", "invalid length "]
        .iter()
        .find_map(|p| msg.strip_prefix(p))
        .and_then(|rest| rest.rsplit_once(", expected "));
    if let Some((unexpected, expected)) = expectation {
        let what = found_text.unwrap_or_else(|| unexpected.replace('`', ""));
        let expected = expected.trim();
        return match expected {
            "usize" | "u64" | "u32" | "u16" | "u8" => {
                format!("{what} is not a whole number of 0 or more; write it like 1000")
            }
            "i64" | "i32" => format!("{what} is not a whole number; write it like 500"),
            "f64" | "f32" => format!("{what} is not a number; write it like 0.5"),
            "a boolean" => format!("{what} is not true or false"),
            "a duration" => format!("{what} is not a duration; {}", super::duration::EXAMPLE),
            "a string" => format!("{what} is not text; quote it (\"…\")"),
            "a sequence" => format!("{what} is not a list; write it like [a, b]"),
            e if e.starts_with("struct ") || e == "a map" => {
                format!("{what} is not a block of settings; write it like `key: value` lines")
            }
            e => format!("{what} is not {e}"),
        };
    }
    msg.to_string()
}

/// Edit distance with adjacent transpositions counting one (`naem` is one edit from `name`),
/// for "did you mean".
pub fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// The closest of `known` to `got`, when close enough to be a typo (one edit in three
/// characters, at least two); for configuration keys and values and for OTTL names alike.
pub fn suggest<'k>(got: &str, known: impl IntoIterator<Item = &'k str>) -> Option<&'k str> {
    known
        .into_iter()
        .map(|k| (distance(got, k), k))
        .filter(|(d, k)| *d > 0 && *d <= (k.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        size: u32,
        #[serde(with = "crate::settings::duration")]
        wait: std::time::Duration,
    }

    #[derive(Debug, Default, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Section {
        name: String,
        items: Vec<Inner>,
        flag: bool,
    }

    #[test]
    fn every_bad_field_is_reported_and_the_good_ones_kept() {
        let v: Value = serde_norway::from_str(
            "{naem: x, flag: maybe, items: [{size: -5, wait: five minutes}, {size: 3, wait: 2s}, {siz: 1}]}",
        )
        .unwrap();
        let mut e = Vec::new();
        let s: Section = read("sec", &v, &mut e).unwrap();
        let mut got: Vec<String> = e.iter().map(|e| e.to_string()).collect();
        got.sort();
        assert_eq!(
            got,
            [
                "sec.flag: \"maybe\" is not true or false",
                "sec.items[0].size: -5 is not a whole number of 0 or more; write it like 1000",
                "sec.items[0].wait: \"five minutes\" is not a duration; write it like 30s, 5m or 1h30m",
                "sec.items[2].siz: unknown field `siz`; did you mean `size`?",
                "sec.naem: unknown field `naem`; did you mean `name`?",
            ]
        );
        assert_eq!(s.items[1].size, 3, "good values are kept");
        assert_eq!(s.items.len(), 3);
    }
}
