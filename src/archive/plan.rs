//! The lifecycle plan: which hot hours to compact, which files to move down a tier, which to
//! expire. Pure functions of listings, manifests and `now` (no object store, no runtime), so the
//! rules are tested exhaustively here; `compact` and `tiering` carry the plan out.
//!
//! Times are Unix milliseconds; an hour directory is `…/date=YYYY-MM-DD/hour=HH`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::catalog::{hour_start_ms, FileEntry, Manifest};

const HOUR_MS: i64 = 3_600_000;

/// One hot hour to compact: its uncatalogued segments, plus the hour's files that already moved
/// down (late data for an old hour), so the merged hour stays deduplicated across tiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourPlan {
    /// The hour directory.
    pub dir: String,
    /// Every hot file of the hour (path, size).
    pub files: Vec<(String, u64)>,
    /// Files of the hour in later tiers (tier index, path, size).
    pub moved: Vec<(usize, String, u64)>,
}

/// The hot hours that are due: the hour ended at least `min_age` before `now_ms`, and it holds a
/// file the hot catalog does not list yet (a new segment, or late data).
pub fn due_hours(
    hours: BTreeMap<String, Vec<(String, u64)>>,
    manifests: &[Manifest],
    now_ms: i64,
    min_age: Duration,
) -> Vec<HourPlan> {
    let Some(hot) = manifests.first() else {
        return Vec::new();
    };
    hours
        .into_iter()
        .filter(|(dir, files)| {
            let old = hour_start_ms(dir)
                .is_some_and(|h| h + HOUR_MS + min_age.as_millis() as i64 <= now_ms);
            old && files.iter().any(|(p, _)| !hot.files.contains_key(p))
        })
        .map(|(dir, files)| {
            let moved = manifests
                .iter()
                .enumerate()
                .skip(1)
                .flat_map(|(ti, m)| {
                    m.files
                        .iter()
                        .filter(|(p, _)| in_hour(p, &dir))
                        .map(move |(p, e)| (ti, p.clone(), e.bytes))
                })
                .collect();
            HourPlan { dir, files, moved }
        })
        .collect()
}

/// Whether a file (of any schema version) belongs to the hour directory `dir`.
fn in_hour(path: &str, dir: &str) -> bool {
    path.rsplit_once('/')
        .and_then(|(d, _)| super::catalog::hour_dir(d))
        .is_some_and(|d| d == dir)
}

/// Files of tier `i` (`source`) due to move to the next tier, whose age threshold is `after`:
/// their hour ended at least `after` before `now_ms`.
pub fn due_moves(source: &Manifest, after: Duration, now_ms: i64) -> Vec<(String, FileEntry)> {
    source
        .files
        .iter()
        .filter(|(_, e)| e.hour_end_ms() + after.as_millis() as i64 <= now_ms)
        .map(|(p, e)| (p.clone(), e.clone()))
        .collect()
}

/// Whether an hour that started at `hour_start_ms` is past `retention` at `now_ms`: the hour
/// ended, plus one hour of grace, `retention` ago. The grace covers spans filed under their
/// start hour up to an hour before they arrived (`segment::filing_hour`), so nothing is deleted
/// before `retention` has passed since it arrived.
pub fn expired(hour_start_ms: i64, retention: Duration, now_ms: i64) -> bool {
    hour_start_ms + 2 * HOUR_MS + retention.as_millis() as i64 <= now_ms
}

/// Catalogued files of one tier past `retention` (path, size).
pub fn expired_files(m: &Manifest, retention: Duration, now_ms: i64) -> Vec<(String, u64)> {
    m.files
        .iter()
        .filter(|(_, e)| expired(e.hour_start_ms, retention, now_ms))
        .map(|(p, e)| (p.clone(), e.bytes))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-01 00:00 UTC.
    const T0: i64 = 1_767_225_600_000;

    fn dir(h: u32) -> String {
        format!("spans/v2/date=2026-01-01/hour={h:02}")
    }

    fn entry(hour: u32) -> FileEntry {
        FileEntry {
            hour_start_ms: T0 + i64::from(hour) * HOUR_MS,
            bytes: 100,
            ..FileEntry::default()
        }
    }

    fn manifest(files: &[(String, u32)]) -> Manifest {
        let mut m = Manifest::default();
        for (p, h) in files {
            m.files.insert(p.clone(), entry(*h));
        }
        m
    }

    #[test]
    fn an_hour_is_due_once_it_ended_min_age_ago_and_holds_something_new() {
        let seg = |h: u32, n: u32| (format!("{}/seg-{n}.parquet", dir(h)), 10u64);
        let hours: BTreeMap<String, Vec<(String, u64)>> = [
            (dir(0), vec![seg(0, 1)]),
            (dir(1), vec![seg(1, 1)]),
            (dir(2), vec![seg(2, 1)]),
        ]
        .into_iter()
        .collect();
        // Hour 1's only file is already compacted (catalogued); hour 2 is too young.
        let hot = manifest(&[(format!("{}/seg-1.parquet", dir(1)), 1)]);
        // A v1 file of hour 0 in the warm tier (written before the upgrade) belongs to it too.
        let warm = manifest(&[(
            "spans/v1/date=2026-01-01/hour=00/old.parquet".to_string(),
            0,
        )]);
        let now = T0 + 3 * HOUR_MS + 10 * 60_000;
        let plan = due_hours(hours, &[hot, warm], now, Duration::from_secs(3600));
        assert_eq!(plan.len(), 1, "{plan:?}");
        assert_eq!(plan[0].dir, dir(0));
        assert_eq!(
            plan[0].moved,
            vec![(
                1,
                "spans/v1/date=2026-01-01/hour=00/old.parquet".to_string(),
                100
            )],
            "the hour's file in the warm tier is merged back in"
        );
        // At min_age 0 hour 2 (ended at T0+3h) is due as well.
        let hours: BTreeMap<String, Vec<(String, u64)>> =
            [(dir(2), vec![seg(2, 1)])].into_iter().collect();
        let plan = due_hours(hours, &[Manifest::default()], now, Duration::ZERO);
        assert_eq!(plan.len(), 1);
        // A directory that is not an hour is never due.
        let odd: BTreeMap<String, Vec<(String, u64)>> =
            [("spans/v1/x".to_string(), vec![seg(0, 9)])]
                .into_iter()
                .collect();
        assert!(due_hours(odd, &[Manifest::default()], now, Duration::ZERO).is_empty());
    }

    #[test]
    fn a_file_moves_when_its_hour_ended_after_ago_and_expires_at_retention() {
        let m = manifest(&[
            (format!("{}/a.parquet", dir(0)), 0),
            (format!("{}/b.parquet", dir(5)), 5),
        ]);
        let after = Duration::from_secs(2 * 3600);
        // Hour 0 ended at T0+1h: due at T0+3h, not a millisecond earlier.
        assert!(due_moves(&m, after, T0 + 3 * HOUR_MS - 1).is_empty());
        let due = due_moves(&m, after, T0 + 3 * HOUR_MS);
        assert_eq!(due.len(), 1);
        assert!(due[0].0.ends_with("a.parquet"));
        let retention = Duration::from_secs(24 * 3600);
        assert!(!expired(T0, retention, T0 + 26 * HOUR_MS - 1));
        assert!(expired(T0, retention, T0 + 26 * HOUR_MS));
        assert_eq!(expired_files(&m, retention, T0 + 26 * HOUR_MS).len(), 1);
        assert_eq!(expired_files(&m, retention, T0 + 31 * HOUR_MS).len(), 2);
    }
}
