//! OTEP 235 consistent probability sampling: rejection thresholds, their `th` hex form and the
//! adjusted counts (1/p) they stand for. A trace is kept at threshold `t` when its 56-bit
//! randomness is at least `t`; the keep probability is `(2^56 - t) / 2^56`.

/// A rejection threshold: 0 (keep everything) to 2^56 (keep nothing), or [`Threshold::UNKNOWN`]
/// for a keep whose probability is not known. Ordered by how much it rejects, so the smallest
/// of several keeps is the one that stands for the most spans; an unknown one loses to every
/// known one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Threshold(u64);

impl Threshold {
    /// Keeps everything (p = 1): rule-based keeps.
    pub const ALWAYS: Threshold = Threshold(0);
    /// One past the largest threshold: keeps nothing (p = 0).
    pub const NEVER: Threshold = Threshold(1 << 56);
    /// A keep whose probability is not known (after a rate limiter or a budget): no `th` is
    /// written, the adjusted count is unknown.
    pub const UNKNOWN: Threshold = Threshold(u64::MAX);

    /// The threshold of its 64-bit wire form (the decision log, tracestate parsing).
    pub const fn from_raw(raw: u64) -> Self {
        Threshold(raw)
    }

    /// Its 64-bit wire form.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The rejection threshold for a keep probability `p` in [0, 1].
    pub fn for_probability(p: f64) -> Self {
        if p >= 1.0 {
            Threshold::ALWAYS
        } else if p <= 0.0 || p.is_nan() {
            Threshold::NEVER
        } else {
            let t = ((1.0 - p) * (Threshold::NEVER.0 as f64)).round() as u64;
            Threshold(t.min(Threshold::NEVER.0 - 1))
        }
    }

    /// True for a threshold that keeps something with a known probability.
    pub fn is_known_keep(self) -> bool {
        self < Threshold::NEVER
    }

    /// Whether a trace with 56-bit `randomness` passes it.
    pub fn keeps(self, randomness: u64) -> bool {
        self.is_known_keep() && randomness >= self.0
    }

    /// The adjusted count (1/p) it stands for (0 for "never" and unknown).
    pub fn adjusted_count(self) -> f64 {
        if self >= Threshold::NEVER {
            return 0.0;
        }
        (Threshold::NEVER.0 as f64) / ((Threshold::NEVER.0 - self.0) as f64)
    }

    /// Its OTEP 235 `th` hex (trailing zeros removed; `0` for always).
    pub fn hex(self) -> String {
        if self.0 == 0 {
            return "0".into();
        }
        let s = format!("{:014x}", self.0.min(Threshold::NEVER.0 - 1));
        s.trim_end_matches('0').to_string()
    }
}
