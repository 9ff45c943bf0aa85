//! `tracesift cost -c FILE`: what the archive holds and costs, from real numbers.
//!
//! Per tier: files, spans and bytes (from the manifests; hot segments not yet compacted are
//! listed and their footers and policy columns read), and the monthly storage cost at the tier's
//! `cost_per_gb_month` (GB = 2^30 bytes). Per policy: spans kept and the spans they stand for
//! (the sum of `sampling_adjusted_count`: 10 for a span kept at 10%). Then the two comparisons
//! of the seed's cost cases: everything kept in the hot tier against the tiers as configured
//! (storage tiering), and everything the kept spans stand for kept hot without sampling (tail
//! sampling), at the archive's own bytes per span.

use std::collections::BTreeMap;
use std::fmt;

use arrow_array::{Array, Float64Array, StringArray};
use futures::TryStreamExt;
use object_store::path::Path;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};

use crate::archive::tiering::{ObjectReader, Tier};
use crate::archive::ArchiveError;

const GB: f64 = (1u64 << 30) as f64;

/// One tier's holdings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TierCost {
    /// Tier name.
    pub name: String,
    /// Files.
    pub files: u64,
    /// Spans.
    pub spans: u64,
    /// Bytes.
    pub bytes: u64,
    /// Price per GB-month.
    pub cost_per_gb_month: f64,
}

impl TierCost {
    /// Monthly storage cost.
    pub fn monthly(&self) -> f64 {
        self.bytes as f64 / GB * self.cost_per_gb_month
    }
}

/// Spans kept by one policy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyCost {
    /// Spans in the archive.
    pub spans: u64,
    /// Spans they stand for (sum of adjusted counts).
    pub represented: f64,
}

/// The whole report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CostReport {
    /// Hot first, then the tiers.
    pub tiers: Vec<TierCost>,
    /// By `sampling_policy`.
    pub policies: BTreeMap<String, PolicyCost>,
}

impl CostReport {
    /// Totals: (files, spans, bytes).
    pub fn totals(&self) -> (u64, u64, u64) {
        self.tiers.iter().fold((0, 0, 0), |(f, s, b), t| {
            (f + t.files, s + t.spans, b + t.bytes)
        })
    }

    /// Monthly cost as configured.
    pub fn configured_monthly(&self) -> f64 {
        self.tiers
            .iter()
            .map(TierCost::monthly)
            .fold(0.0, |a, b| a + b)
    }

    /// Monthly cost with every byte in the hot tier.
    pub fn all_hot_monthly(&self) -> f64 {
        let hot = self.tiers.first().map_or(0.0, |t| t.cost_per_gb_month);
        self.totals().2 as f64 / GB * hot
    }

    /// Bytes the archive would hold without sampling (spans represented × bytes per span).
    pub fn unsampled_bytes(&self) -> f64 {
        let (_, spans, bytes) = self.totals();
        if spans == 0 {
            return 0.0;
        }
        let represented: f64 = self
            .policies
            .values()
            .map(|p| p.represented)
            .fold(0.0, |a, b| a + b);
        represented * bytes as f64 / spans as f64
    }
}

/// ` (N% less)`, or nothing when there is nothing to compare with.
fn pct_less(a: f64, b: f64) -> String {
    if b <= 0.0 {
        return String::new();
    }
    format!(" ({:.0}% less)", (1.0 - a / b) * 100.0)
}

impl fmt::Display for CostReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<12} {:>8} {:>14} {:>14} {:>12} {:>12}",
            "tier", "files", "spans", "bytes", "$/GB-month", "$/month"
        )?;
        for t in &self.tiers {
            writeln!(
                f,
                "{:<12} {:>8} {:>14} {:>14} {:>12.4} {:>12.4}",
                t.name,
                t.files,
                t.spans,
                t.bytes,
                t.cost_per_gb_month,
                t.monthly()
            )?;
        }
        let (files, spans, bytes) = self.totals();
        writeln!(
            f,
            "{:<12} {:>8} {:>14} {:>14} {:>12} {:>12.4}",
            "total",
            files,
            spans,
            bytes,
            "",
            self.configured_monthly()
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<24} {:>14} {:>8} {:>18} {:>10}",
            "policy", "spans kept", "share", "spans represented", "keep rate"
        )?;
        let represented: f64 = self
            .policies
            .values()
            .map(|p| p.represented)
            .fold(0.0, |a, b| a + b);
        for (name, p) in &self.policies {
            writeln!(
                f,
                "{:<24} {:>14} {:>7.1}% {:>18.0} {:>9.1}%",
                name,
                p.spans,
                if spans > 0 {
                    p.spans as f64 * 100.0 / spans as f64
                } else {
                    0.0
                },
                p.represented,
                if p.represented > 0.0 {
                    p.spans as f64 * 100.0 / p.represented
                } else {
                    100.0
                }
            )?;
        }
        writeln!(f)?;
        let per_span = if spans > 0 {
            bytes as f64 / spans as f64
        } else {
            0.0
        };
        writeln!(f, "archive: {per_span:.1} bytes per span (Parquet, zstd)")?;
        let (hot, configured) = (self.all_hot_monthly(), self.configured_monthly());
        writeln!(
            f,
            "storage tiering: everything hot ${hot:.4}/month, as configured ${configured:.4}/month{}",
            pct_less(configured, hot)
        )?;
        let hot_price = self.tiers.first().map_or(0.0, |t| t.cost_per_gb_month);
        let unsampled = self.unsampled_bytes() / GB * hot_price;
        write!(
            f,
            "tail sampling: without it {represented:.0} spans, {:.0} bytes, ${unsampled:.4}/month hot; kept {spans} spans, ${hot:.4}/month hot{}, ${configured:.4}/month tiered{}",
            self.unsampled_bytes(),
            pct_less(hot, unsampled),
            pct_less(configured, unsampled),
        )
    }
}

/// Reads the manifests (and the hot tier's uncompacted segments) into a report.
pub async fn report(tiers: &[Tier]) -> Result<CostReport, ArchiveError> {
    let mut out = CostReport::default();
    for (i, tier) in tiers.iter().enumerate() {
        let manifest = tier.manifest().await?;
        let mut t = TierCost {
            name: tier.name.clone(),
            cost_per_gb_month: tier.cost_per_gb_month,
            ..Default::default()
        };
        for e in manifest.files.values() {
            t.files += 1;
            t.spans += e.rows;
            t.bytes += e.bytes;
            for (p, n) in &e.policies {
                let pc = out.policies.entry(p.clone()).or_default();
                pc.spans += n;
                pc.represented += e.adjusted_by_policy.get(p).copied().unwrap_or(*n as f64);
            }
        }
        if i == 0 {
            for (path, size) in crate::archive::tiering::list_parquet(&tier.store).await? {
                if manifest.files.contains_key(path.as_ref()) {
                    continue;
                }
                t.files += 1;
                t.bytes += size;
                t.spans += segment_policies(tier, &path, size, &mut out.policies).await?;
            }
        }
        out.tiers.push(t);
    }
    Ok(out)
}

/// Reads a segment's policy and adjusted-count columns into `policies`; returns its rows.
async fn segment_policies(
    tier: &Tier,
    path: &Path,
    size: u64,
    policies: &mut BTreeMap<String, PolicyCost>,
) -> Result<u64, ArchiveError> {
    let reader = ObjectReader::new(tier.store.clone(), path.clone(), size);
    let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
    let mask = ProjectionMask::columns(
        builder.parquet_schema(),
        ["sampling_policy", "sampling_adjusted_count"],
    );
    let mut stream = builder.with_projection(mask).build()?;
    let mut rows = 0u64;
    while let Some(b) = stream.try_next().await? {
        let policy = crate::archive::column::<StringArray>(&b, "sampling_policy")?;
        let adjusted = crate::archive::column::<Float64Array>(&b, "sampling_adjusted_count")?;
        for i in 0..b.num_rows() {
            let pc = policies.entry(policy.value(i).to_string()).or_default();
            pc.spans += 1;
            pc.represented += if adjusted.is_null(i) {
                1.0
            } else {
                adjusted.value(i)
            };
        }
        rows += b.num_rows() as u64;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiering_and_sampling_savings_come_from_the_numbers() {
        let r = CostReport {
            tiers: vec![
                TierCost {
                    name: "hot".into(),
                    files: 1,
                    spans: 100,
                    bytes: 1 << 30,
                    cost_per_gb_month: 0.30,
                },
                TierCost {
                    name: "cold".into(),
                    files: 1,
                    spans: 900,
                    bytes: 9 << 30,
                    cost_per_gb_month: 0.01,
                },
            ],
            policies: BTreeMap::from([
                (
                    "errors".to_string(),
                    PolicyCost {
                        spans: 100,
                        represented: 100.0,
                    },
                ),
                (
                    "default".to_string(),
                    PolicyCost {
                        spans: 900,
                        represented: 9000.0,
                    },
                ),
            ]),
        };
        assert!((r.all_hot_monthly() - 3.0).abs() < 1e-9);
        assert!((r.configured_monthly() - 0.39).abs() < 1e-9);
        // 9,100 spans represented at 10 GiB / 1,000 spans.
        assert!((r.unsampled_bytes() / GB - 91.0).abs() < 1e-9);
        let text = r.to_string();
        assert!(text.contains("87% less"), "{text}");
    }
}
