//! OTEP 235 consistent probability sampling: rejection thresholds, their `th` hex form and the
//! adjusted counts (1/p) they stand for. A trace is kept at threshold `t` when its 56-bit
//! randomness is at least `t`; the keep probability is `(2^56 - t) / 2^56`.

/// The threshold that keeps everything (p = 1).
pub const THRESHOLD_ALWAYS: u64 = 0;
/// One past the largest threshold: keeps nothing (p = 0).
pub const THRESHOLD_NEVER: u64 = 1 << 56;
/// A keep whose probability is not known (after a rate limiter): no `th` is written, the
/// adjusted count is unknown. It loses to every known threshold when several policies keep.
pub const THRESHOLD_UNKNOWN: u64 = u64::MAX;

/// The rejection threshold for a keep probability `p` in [0, 1].
pub fn threshold_for_probability(p: f64) -> u64 {
    if p >= 1.0 {
        THRESHOLD_ALWAYS
    } else if p <= 0.0 || p.is_nan() {
        THRESHOLD_NEVER
    } else {
        let t = ((1.0 - p) * (THRESHOLD_NEVER as f64)).round() as u64;
        t.min(THRESHOLD_NEVER - 1)
    }
}

/// The adjusted count (1/p) a threshold stands for (0 for "never").
pub fn adjusted_count(threshold: u64) -> f64 {
    if threshold >= THRESHOLD_NEVER {
        return 0.0;
    }
    (THRESHOLD_NEVER as f64) / ((THRESHOLD_NEVER - threshold) as f64)
}

/// Encodes a threshold as OTEP 235 `th` hex (trailing zeros removed; `0` for always).
pub fn threshold_hex(threshold: u64) -> String {
    if threshold == 0 {
        return "0".into();
    }
    let s = format!("{:014x}", threshold.min(THRESHOLD_NEVER - 1));
    s.trim_end_matches('0').to_string()
}
