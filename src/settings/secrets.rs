//! Values from outside the file, and secrets kept out of every output.
//!
//! **References.** Any string in the configuration may name a value kept elsewhere, with the
//! OpenTelemetry Collector's syntax: `${env:NAME}` (an environment variable), `${file:/path}`
//! (a file's contents, one trailing newline removed, as Kubernetes mounts a Secret) and the
//! short `${NAME}` (= `${env:NAME}`); `$$` is a literal `$`. A string that is one reference as a
//! whole takes the type the value reads as in YAML (`${env:MAX_TRACES}` can fill a number), as
//! in the Collector. [`expand`] runs before the sections are deserialized; every reference that
//! cannot be resolved is a configuration error, all of them reported at once.
//!
//! **Secrets.** [`is_secret_key`] names the keys whose values are secrets (librdkafka's
//! `*.password`, `sasl.oauthbearer.client.secret`, `ssl.key.pem`, `sasl.jaas.config`, object
//! store `secret_access_key`, `session_token`, …). [`Properties`], the string map used for
//! `kafka.properties` and the object store options, prints such values as [`REDACTED`] in
//! `tracesift check`, in `Debug` and therefore in every log line, while still showing that the
//! key is set. [`Substituted`] keeps what was substituted so that a configuration error never
//! quotes a value that came from the environment or a file.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;
use std::path::Path;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;

use super::ConfigError;

/// What a secret's value is printed as.
pub const REDACTED: &str = "<redacted: set>";

/// Whether the value of configuration key `key` is a secret (case-insensitive; the last path
/// segment of a dotted key counts, so `kafka.properties.sasl.password` is one).
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password")
        || k.contains("secret")
        || k.contains("token")
        || k.contains("credential")
        || k.contains("private")
        || k.contains("jaas")
        || k == "sasl.oauthbearer.config"
        // HTTP headers of the OTLP sinks.
        || k.contains("authorization")
        || k.contains("api-key")
        || k.contains("apikey")
        || k.contains("api_key")
        || k.contains("cookie")
        || k.ends_with("-team")
        || k.ends_with("key")
        || k.ends_with("-auth")
        || k.contains("dsn")
        || (k.contains("key") && k.ends_with(".pem"))
}

/// Which values of a [`Properties`] map are secrets.
pub trait Redaction {
    /// Whether the value under `key` is printed as [`REDACTED`].
    fn is_secret(key: &str) -> bool;
}

/// Secrets by key name ([`is_secret_key`]): `kafka.properties`, topic configs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByKey;

impl Redaction for ByKey {
    fn is_secret(key: &str) -> bool {
        is_secret_key(key)
    }
}

/// Every value is a secret: the HTTP headers of an OTLP sink (vendors name their credential
/// headers freely: `x-insert-key`, `x-sentry-auth`, `dd-api-key`, …).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllValues;

impl Redaction for AllValues {
    fn is_secret(_: &str) -> bool {
        true
    }
}

/// Object-store options: every value is a secret except those of [`STORE_OPTIONS_SHOWN`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreOptionRule;

/// The object-store options whose values print in the clear (where and how to connect; never
/// who connects). Every other option prints as [`REDACTED`].
pub const STORE_OPTIONS_SHOWN: &[&str] = &[
    "endpoint",
    "region",
    "bucket",
    "allow_http",
    "virtual_hosted_style_request",
    "conditional_put",
    "skip_signature",
    "imdsv1_fallback",
    "unsigned_payload",
    "checksum_algorithm",
    "s3_express",
    "request_payer",
    "disable_tagging",
    "default_region",
];

impl Redaction for StoreOptionRule {
    fn is_secret(key: &str) -> bool {
        let k = key.to_ascii_lowercase();
        let k = k
            .strip_prefix("aws_")
            .or_else(|| k.strip_prefix("amazon_s3_"))
            .unwrap_or(&k);
        !STORE_OPTIONS_SHOWN.contains(&k)
    }
}

/// Where references are looked up: the process environment and the file system, or a fixed
/// table in tests.
pub trait Lookup {
    /// An environment variable.
    fn env(&self, name: &str) -> Option<String>;
    /// A file's contents.
    fn file(&self, path: &Path) -> Result<String, String>;
}

/// The process environment and the file system.
pub struct System;

impl Lookup for System {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn file(&self, path: &Path) -> Result<String, String> {
        std::fs::read_to_string(path).map_err(|e| e.to_string())
    }
}

/// The values [`expand`] put into the configuration, each with the reference it came from, so
/// that messages can name the reference instead of quoting the value.
#[derive(Debug, Default)]
pub struct Substituted(Vec<(String, String)>);

impl Substituted {
    /// `message` with every substituted value (of 3 bytes or more) replaced by its reference.
    pub fn scrub(&self, message: &str) -> String {
        let mut out = message.to_string();
        for (reference, value) in &self.0 {
            if value.len() >= 3 && out.contains(value.as_str()) {
                out = out.replace(value.as_str(), reference);
            }
        }
        out
    }
}

/// Resolves every reference in the strings of `value` (keys are left alone), recording problems
/// under their YAML paths.
pub fn expand(
    value: &mut serde_norway::Value,
    lookup: &dyn Lookup,
    errors: &mut Vec<ConfigError>,
) -> Substituted {
    let mut done = Substituted::default();
    walk(value, "", false, lookup, errors, &mut done);
    done
}

/// `secret`: the value is under a key that holds a secret (an empty one is a mistake).
fn walk(
    value: &mut serde_norway::Value,
    path: &str,
    secret: bool,
    lookup: &dyn Lookup,
    errors: &mut Vec<ConfigError>,
    done: &mut Substituted,
) {
    match value {
        serde_norway::Value::Mapping(m) => {
            for (k, v) in m.iter_mut() {
                let key = match k {
                    serde_norway::Value::String(s) => s.clone(),
                    other => serde_norway::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                let secret = is_secret_key(&key);
                let p = if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                };
                walk(v, &p, secret, lookup, errors, done);
            }
        }
        serde_norway::Value::Sequence(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                walk(v, &format!("{path}[{i}]"), secret, lookup, errors, done);
            }
        }
        serde_norway::Value::Tagged(t) => walk(&mut t.value, path, secret, lookup, errors, done),
        serde_norway::Value::String(s) if s.contains('$') => match resolve(s, lookup) {
            Ok(Resolved { text, whole, refs }) => {
                if secret && text.is_empty() {
                    let names: Vec<&str> = refs.iter().map(|(r, _)| r.as_str()).collect();
                    errors.push(ConfigError::new(
                        path,
                        format!(
                            "{} is set but empty; a secret cannot be empty (set it, or remove this setting)",
                            names.join(", ")
                        ),
                    ));
                }
                for (reference, v) in refs {
                    done.0.push((reference, v));
                }
                *value = match whole {
                    true => typed(text),
                    false => serde_norway::Value::String(text),
                };
            }
            Err(msg) => errors.push(ConfigError::new(path, msg)),
        },
        _ => {}
    }
}

/// A value that was one reference as a whole reads as YAML would read it, but only as a
/// scalar: a number, a boolean, or else the string itself.
fn typed(text: String) -> serde_norway::Value {
    match serde_norway::from_str::<serde_norway::Value>(&text) {
        Ok(v @ (serde_norway::Value::Number(_) | serde_norway::Value::Bool(_))) => v,
        _ => serde_norway::Value::String(text),
    }
}

struct Resolved {
    text: String,
    /// The string was exactly one reference.
    whole: bool,
    /// (reference, value) for each reference resolved.
    refs: Vec<(String, String)>,
}

fn resolve(s: &str, lookup: &dyn Lookup) -> Result<Resolved, String> {
    let mut text = String::with_capacity(s.len());
    let mut refs = Vec::new();
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        text.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$$") {
            text.push('$');
            rest = after;
        } else if let Some(body) = tail.strip_prefix("${") {
            let end = body
                .find('}')
                .ok_or_else(|| format!("`{}` has no closing `}}`", short(tail)))?;
            let inner = &body[..end];
            let reference = format!("${{{inner}}}");
            let value = lookup_one(inner, lookup)?;
            text.push_str(&value);
            refs.push((reference, value));
            rest = &body[end + 1..];
        } else {
            text.push('$');
            rest = &tail[1..];
        }
    }
    text.push_str(rest);
    let whole =
        refs.len() == 1 && s.starts_with("${") && s.ends_with('}') && s.matches("${").count() == 1;
    Ok(Resolved { text, whole, refs })
}

fn lookup_one(inner: &str, lookup: &dyn Lookup) -> Result<String, String> {
    let (scheme, name) = inner.split_once(':').unwrap_or(("env", inner));
    match scheme {
        "env" => {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "`${{{inner}}}`: `{name}` is not an environment variable name"
                ));
            }
            lookup.env(name).ok_or_else(|| {
                format!("`${{{inner}}}`: the environment variable {name} is not set")
            })
        }
        "file" => {
            let mut v = lookup
                .file(Path::new(name))
                .map_err(|e| format!("`${{{inner}}}`: cannot read the file: {e}"))?;
            if v.ends_with('\n') {
                v.pop();
                if v.ends_with('\r') {
                    v.pop();
                }
            }
            Ok(v)
        }
        other => Err(format!(
            "`${{{inner}}}`: unknown source `{other}` (use ${{env:NAME}} or ${{file:/path}})"
        )),
    }
}

fn short(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A string map (`kafka.properties`, object store options, headers) whose secret values, as
/// its [`Redaction`] names them, never print. Values may be written as strings, numbers or
/// booleans (`session.timeout.ms: 6000`).
pub struct Properties<R = ByKey>(BTreeMap<String, String>, PhantomData<R>);

/// HTTP headers: every value redacted.
pub type Headers = Properties<AllValues>;
/// Object-store options: every value redacted but [`STORE_OPTIONS_SHOWN`].
pub type StoreOptions = Properties<StoreOptionRule>;

impl<R> Clone for Properties<R> {
    fn clone(&self) -> Self {
        Properties(self.0.clone(), PhantomData)
    }
}

impl<R> Default for Properties<R> {
    fn default() -> Self {
        Properties(BTreeMap::new(), PhantomData)
    }
}

impl<R> PartialEq for Properties<R> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<R> Eq for Properties<R> {}

impl<R: Redaction> Properties<R> {
    /// A map of these pairs.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Properties(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            PhantomData,
        )
    }

    /// Sets `key` (for code that builds a configuration).
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }

    /// The values as they will be printed: secrets replaced by [`REDACTED`].
    pub fn redacted(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| {
            let shown = if R::is_secret(k) && !v.is_empty() {
                REDACTED
            } else {
                v.as_str()
            };
            (k.as_str(), shown)
        })
    }
}

impl<'a, R> IntoIterator for &'a Properties<R> {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<R> Properties<R> {
    /// No entries (for `skip_serializing_if`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<R> Deref for Properties<R> {
    type Target = BTreeMap<String, String>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<R: Redaction> fmt::Debug for Properties<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.redacted()).finish()
    }
}

impl<R: Redaction> Serialize for Properties<R> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.redacted() {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de, R> Deserialize<'de> for Properties<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(PropertiesVisitor(PhantomData))
    }
}

struct PropertiesVisitor<R>(PhantomData<R>);

impl<'de, R> Visitor<'de> for PropertiesVisitor<R> {
    type Value = Properties<R>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of keys to strings, numbers or booleans")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Properties<R>, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(k) = map.next_key::<String>()? {
            let v: Scalar = map.next_value()?;
            out.insert(k, v.0);
        }
        Ok(Properties(out, PhantomData))
    }
}

/// A YAML scalar as a string (never quoted in an error: it may be a secret).
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Table;

    impl Lookup for Table {
        fn env(&self, name: &str) -> Option<String> {
            match name {
                "SASL_PASSWORD" => Some("hunter2-secret".into()),
                "MAX" => Some("5000".into()),
                "POD" => Some("tracesift-1".into()),
                _ => None,
            }
        }
        fn file(&self, path: &Path) -> Result<String, String> {
            match path.to_str() {
                Some("/run/secrets/s3") => Ok("s3-secret-value\n".into()),
                _ => Err("No such file or directory (os error 2)".into()),
            }
        }
    }

    fn expand_str(yaml: &str) -> (serde_norway::Value, Vec<ConfigError>, Substituted) {
        let mut v: serde_norway::Value = serde_norway::from_str(yaml).unwrap();
        let mut errors = Vec::new();
        let s = expand(&mut v, &Table, &mut errors);
        (v, errors, s)
    }

    #[test]
    fn references_resolve_from_env_and_files() {
        let (v, errors, _) = expand_str(
            "a: ${env:SASL_PASSWORD}\nb: ${file:/run/secrets/s3}\nc: ${POD}-x\nd: ${env:MAX}\ne: cost $$5 or $3\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(v["a"].as_str(), Some("hunter2-secret"));
        assert_eq!(
            v["b"].as_str(),
            Some("s3-secret-value"),
            "one trailing newline removed"
        );
        assert_eq!(v["c"].as_str(), Some("tracesift-1-x"));
        assert_eq!(
            v["d"].as_u64(),
            Some(5000),
            "a whole reference reads as YAML"
        );
        assert_eq!(v["e"].as_str(), Some("cost $5 or $3"));
    }

    #[test]
    fn every_unresolved_reference_is_reported_with_its_path() {
        let (_, errors, _) = expand_str(
            "kafka:\n  properties:\n    sasl.password: ${env:NOPE}\narchive:\n  tiers:\n    - {url: '${file:/missing}'}\nx: ${vault:y}\ny: ${env:BAD NAME}\nz: ${env:OPEN\n",
        );
        let got: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(got.len(), 5, "{got:#?}");
        assert!(got[0].starts_with("kafka.properties.sasl.password: `${env:NOPE}`: the environment variable NOPE is not set"), "{got:#?}");
        assert!(
            got[1].starts_with("archive.tiers[0].url: `${file:/missing}`: cannot read the file"),
            "{got:#?}"
        );
        assert!(got[2].contains("unknown source `vault`"), "{got:#?}");
        assert!(
            got[3].contains("not an environment variable name"),
            "{got:#?}"
        );
        assert!(got[4].contains("no closing"), "{got:#?}");
    }

    #[test]
    fn secrets_print_redacted_but_set() {
        let p = Properties::<ByKey>::from_pairs([
            ("sasl.password", "hunter2"),
            ("sasl.username", "alice"),
            ("ssl.key.pem", "-----BEGIN PRIVATE KEY-----"),
            ("ssl.key.password", "keypass-xyz"),
            ("sasl.oauthbearer.client.secret", "clientsecret-xyz"),
            ("sasl.oauthbearer.client.id", "cid"),
            ("secret_access_key", "sak-xyz"),
            ("session_token", "tok-xyz"),
            ("access_key_id", "AKIA"),
        ]);
        let yaml = serde_norway::to_string(&p).unwrap();
        let debug = format!("{p:?}");
        for secret in [
            "hunter2",
            "BEGIN PRIVATE",
            "keypass-xyz",
            "clientsecret-xyz",
            "sak-xyz",
            "tok-xyz",
        ] {
            assert!(!yaml.contains(secret), "{secret} in {yaml}");
        }
        for shown in ["alice", "cid", "AKIA"] {
            assert!(
                yaml.contains(shown) && debug.contains(shown),
                "{shown} hidden in {yaml}"
            );
        }
        assert_eq!(yaml.matches(REDACTED).count(), 6, "{yaml}");
        assert!(
            !debug.contains("hunter2") && debug.contains(REDACTED),
            "{debug}"
        );
    }

    #[test]
    fn every_header_and_every_store_option_but_the_shown_ones_is_redacted() {
        let headers = Headers::from_pairs([
            ("x-insert-key", "nr-insert-xyz"),
            ("x-license-key", "lic-xyz"),
            ("x-sentry-auth", "sentry-xyz"),
            ("x-honeycomb-dataset", "dataset-xyz"),
            ("x-scope-orgid", "tenant-xyz"),
        ]);
        let options = StoreOptions::from_pairs([
            ("endpoint", "http://127.0.0.1:3900"),
            ("region", "garage"),
            ("allow_http", "true"),
            ("access_key_id", "GKxyz"),
            ("secret_access_key", "sak-xyz"),
            ("proxy_url", "http://user:pw@proxy"),
            ("dsn", "https://key@sentry"),
        ]);
        let shown = format!(
            "{}{headers:?}{}{options:?}",
            serde_norway::to_string(&headers).unwrap(),
            serde_norway::to_string(&options).unwrap()
        );
        for secret in [
            "nr-insert-xyz",
            "lic-xyz",
            "sentry-xyz",
            "dataset-xyz",
            "tenant-xyz",
            "GKxyz",
            "sak-xyz",
            "user:pw",
            "key@sentry",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        for kept in ["http://127.0.0.1:3900", "garage", "true", "x-insert-key"] {
            assert!(shown.contains(kept), "{kept} hidden in {shown}");
        }
        // Kafka properties by key name: the suffixes the README lists.
        for key in [
            "sasl.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "my.token",
            "ssl.key",
            "some.credentials",
            "sasl.kerberos.keytab.key",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "ssl.ca.location",
            "bootstrap.servers",
            "sasl.username",
            "session.timeout.ms",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn properties_take_numbers_and_booleans() {
        let p: Properties = serde_norway::from_str(
            "session.timeout.ms: 6000\nenable.ssl.certificate.verification: false\n",
        )
        .unwrap();
        assert_eq!(
            p.get("session.timeout.ms").map(String::as_str),
            Some("6000")
        );
        assert_eq!(
            p.get("enable.ssl.certificate.verification")
                .map(String::as_str),
            Some("false")
        );
    }

    #[test]
    fn scrub_names_the_reference_instead_of_the_value() {
        let (_, _, s) = expand_str("a: ${env:SASL_PASSWORD}\n");
        assert_eq!(
            s.scrub("invalid type: string \"hunter2-secret\", expected u64"),
            "invalid type: string \"${env:SASL_PASSWORD}\", expected u64"
        );
    }
}
