//! FNV-1a, 64 bit: a small, stable, dependency-free hash for the places that need the same value
//! on every machine and in every version (salted sampling decisions, content-derived file names).

/// The FNV-1a offset basis: the hash of nothing.
pub const FNV1A_START: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over the concatenation of `parts`.
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    parts.iter().fold(FNV1A_START, |h, p| fnv1a_more(h, p))
}

/// Continues an FNV-1a hash `h` over `bytes` (hashing in pieces without gathering them).
pub fn fnv1a_more(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    #[test]
    fn reference_values() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(super::fnv1a(&[]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::fnv1a(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(super::fnv1a(&[b"foo", b"bar"]), super::fnv1a(&[b"foobar"]));
    }
}
