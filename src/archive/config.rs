//! `archive:` — the archive's section: the hot tier, the tiers after it, retention, compaction.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::settings::{ByteSize, ConfigError, StoreOptions};

/// `archive.hot:` — the hot tier, where segments are written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HotTierConfig {
    /// Object store URL: `file:///abs/path` (or a plain absolute path).
    pub url: String,
    /// A partition's open segment is written out at least this often.
    #[serde(with = "crate::settings::duration")]
    pub flush_interval: Duration,
    /// A segment is written out when its buffered spans reach this size.
    pub max_segment_bytes: ByteSize,
    /// Storage price of this tier, for `tracesift cost`.
    pub cost_per_gb_month: f64,
    /// Store options for `s3://` URLs (object_store's S3 keys: `endpoint`, `region`,
    /// `access_key_id`, `secret_access_key`, `allow_http`, …); unset keys come from the standard
    /// `AWS_*` environment.
    pub options: StoreOptions,
}

impl Default for HotTierConfig {
    fn default() -> Self {
        HotTierConfig {
            url: "file:///var/lib/tracesift/hot".into(),
            flush_interval: Duration::from_secs(10),
            max_segment_bytes: ByteSize(64 << 20),
            cost_per_gb_month: 0.30,
            options: StoreOptions::default(),
        }
    }
}

/// `archive.tiers[]` — a tier after hot: compacted files move here once their hour ended
/// `after` ago.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// Tier name (`[a-z0-9_-]`, not `hot`), used in metrics, manifests and `tracesift cost`.
    pub name: String,
    /// Object store URL: `file:///abs/dir` or `s3://bucket/prefix`.
    pub url: String,
    /// Age (since the end of a file's hour) at which files move into this tier.
    #[serde(with = "crate::settings::duration")]
    pub after: Duration,
    /// Storage price of this tier, for `tracesift cost`.
    #[serde(default)]
    pub cost_per_gb_month: f64,
    /// Store options, as for `archive.hot.options`.
    #[serde(default, skip_serializing_if = "StoreOptions::is_empty")]
    pub options: StoreOptions,
}

/// `archive.compaction:` — how hot segments become large sorted files, and the tier loop.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompactionConfig {
    /// Also run the compaction / tiering / retention loop inside `tracesift run` (a lease in the
    /// hot tier lets one member at a time do it); `tracesift compact` runs one pass regardless.
    pub in_run: bool,
    /// Pause between passes of the loop inside `run`.
    #[serde(with = "crate::settings::duration")]
    pub interval: Duration,
    /// An hour is compacted once it ended this long ago (later segments are merged next pass).
    #[serde(with = "crate::settings::duration")]
    pub min_age: Duration,
    /// Memory a merge may use: input batches plus the output row group being built.
    pub memory_budget: ByteSize,
    /// Target encoded size of an output row group.
    pub row_group_bytes: ByteSize,
    /// Target size of an output file (a file is closed at the first trace boundary past it).
    pub file_bytes: ByteSize,
    /// Inputs merged at once; more inputs are merged in rounds through intermediate files.
    pub fan_in: usize,
    /// Local directory for intermediate and output files before upload (empty: system temp).
    pub work_dir: String,
    /// How long a compactor's lease lasts without renewal (a crashed compactor's work is taken
    /// over after this).
    #[serde(with = "crate::settings::duration")]
    pub lease_ttl: Duration,
    /// The catalog store, where the lease and every tier's manifest live (empty: the hot
    /// tier). The store must honour create-if-absent
    /// writes (local and shared filesystems, AWS S3, MinIO); a pass refuses to run on one that
    /// does not (Garage 2.5, for one) and names this setting.
    pub lease_url: String,
    /// Store options of `lease_url` (as `archive.hot.options`).
    pub lease_options: StoreOptions,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            in_run: false,
            interval: Duration::from_secs(300),
            min_age: Duration::from_secs(3600),
            memory_budget: ByteSize(512 << 20),
            row_group_bytes: ByteSize(128 << 20),
            file_bytes: ByteSize(1 << 30),
            fan_in: 64,
            work_dir: String::new(),
            lease_ttl: Duration::from_secs(600),
            lease_url: String::new(),
            lease_options: StoreOptions::default(),
        }
    }
}

/// `archive:` — Parquet storage: the hot tier, the tiers after it, retention, compaction.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// The hot tier.
    pub hot: HotTierConfig,
    /// Tiers after hot, in order of increasing `after`.
    pub tiers: Vec<TierConfig>,
    /// Files whose hour ended longer ago than this are deleted from every tier (absent: kept
    /// forever).
    #[serde(with = "crate::settings::duration::option")]
    pub retention: Option<Duration>,
    /// Compaction and the tier loop.
    pub compaction: CompactionConfig,
}

impl ArchiveConfig {
    /// Adds every problem of the tiers, retention and compaction settings to `e`.
    fn check_tiers(&self, e: &mut Vec<ConfigError>) {
        let store =
            |e: &mut Vec<ConfigError>, path: &str, url: &str, opts: &BTreeMap<String, String>| {
                if let Err(msg) = super::check_store(url, opts) {
                    e.push(ConfigError::new(path, msg));
                }
            };
        // The hot URL itself is checked where the sink is built (`archive.hot.url`); here
        // only its options, under their own path.
        if !self.hot.options.is_empty()
            && super::check_store(&self.hot.url, &Default::default()).is_ok()
        {
            store(e, "archive.hot.options", &self.hot.url, &self.hot.options);
        }
        let mut names: Vec<&str> = vec!["hot"];
        let mut last_after = self.compaction.min_age;
        for (i, t) in self.tiers.iter().enumerate() {
            let p = format!("archive.tiers[{i}]");
            let ok = !t.name.is_empty()
                && t.name.len() <= 32
                && t.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !ok {
                e.push(ConfigError::new(
                    format!("{p}.name"),
                    format!("`{}`: 1-32 characters of [a-z0-9_-]", t.name),
                ));
            } else if names.contains(&t.name.as_str()) {
                e.push(ConfigError::new(
                    format!("{p}.name"),
                    format!("`{}` is used twice (`hot` is the hot tier)", t.name),
                ));
            }
            names.push(&t.name);
            if let Err(msg) = super::check_store(&t.url, &t.options) {
                e.push(ConfigError::new(format!("{p}.url"), msg));
            }
            if t.after <= last_after {
                e.push(ConfigError::new(
                    format!("{p}.after"),
                    format!(
                        "{} must be later than the previous tier's `after` (or compaction.min_age for the first tier): {}",
                        humantime::format_duration(t.after),
                        humantime::format_duration(last_after)
                    ),
                ));
            }
            last_after = last_after.max(t.after);
            if t.cost_per_gb_month.is_nan() || t.cost_per_gb_month < 0.0 {
                e.push(ConfigError::new(
                    format!("{p}.cost_per_gb_month"),
                    "must be 0 or more",
                ));
            }
        }
        if let Some(r) = self.retention {
            if r <= last_after {
                e.push(ConfigError::new(
                    "archive.retention",
                    format!(
                        "{} must be later than the last tier's `after` (or compaction.min_age): {}",
                        humantime::format_duration(r),
                        humantime::format_duration(last_after)
                    ),
                ));
            }
        }
        let c = &self.compaction;
        if c.interval.is_zero() {
            e.push(ConfigError::new(
                "archive.compaction.interval",
                "must be greater than 0",
            ));
        }
        if c.row_group_bytes.0 < 64 << 10 {
            e.push(ConfigError::new(
                "archive.compaction.row_group_bytes",
                "must be at least 64KiB",
            ));
        }
        if c.file_bytes.0 < c.row_group_bytes.0 {
            e.push(ConfigError::new(
                "archive.compaction.file_bytes",
                format!("must be at least row_group_bytes ({})", c.row_group_bytes),
            ));
        }
        if c.memory_budget.0 < c.row_group_bytes.0.saturating_add(16 << 20) {
            e.push(ConfigError::new(
                "archive.compaction.memory_budget",
                format!(
                    "must be at least row_group_bytes ({}) + 16MiB for the input batches",
                    c.row_group_bytes
                ),
            ));
        }
        if c.fan_in < 2 {
            e.push(ConfigError::new(
                "archive.compaction.fan_in",
                "must be at least 2",
            ));
        }
        if c.lease_ttl < Duration::from_secs(10) {
            e.push(ConfigError::new(
                "archive.compaction.lease_ttl",
                "must be at least 10s",
            ));
        }
        if !c.lease_url.is_empty() {
            if let Err(msg) = super::check_store(&c.lease_url, &c.lease_options) {
                e.push(ConfigError::new("archive.compaction.lease_url", msg));
            }
        }
        if !c.work_dir.is_empty() && !std::path::Path::new(&c.work_dir).is_absolute() {
            e.push(ConfigError::new(
                "archive.compaction.work_dir",
                "must be an absolute path",
            ));
        }
    }
}

impl ArchiveConfig {
    /// Every problem of this section (`parquet_sink`: the hot tier is written, so its URL must
    /// be usable).
    pub fn check(&self, parquet_sink: bool, e: &mut Vec<ConfigError>) {
        let h = &self.hot;
        if parquet_sink {
            if let Err(msg) = super::parse_store_url(&h.url) {
                e.push(ConfigError::new("archive.hot.url", msg));
            }
        }
        if h.flush_interval.is_zero() {
            e.push(ConfigError::new(
                "archive.hot.flush_interval",
                "must be greater than 0",
            ));
        }
        if h.max_segment_bytes.0 < 64 << 10 {
            e.push(ConfigError::new(
                "archive.hot.max_segment_bytes",
                "must be at least 64KiB",
            ));
        }
        if h.cost_per_gb_month.is_nan() || h.cost_per_gb_month < 0.0 {
            e.push(ConfigError::new(
                "archive.hot.cost_per_gb_month",
                "must be 0 or more",
            ));
        }
        self.check_tiers(e);
    }
}
