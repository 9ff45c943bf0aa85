//! The partition a keyed record goes to, computed the way the producer's partitioner would.
//!
//! Batched writes to the sampled topic put several kept traces in one record, so librdkafka
//! cannot pick the partition from a key: the sink picks it per trace instead, with the same
//! hash the configured `partitioner` applies to the trace id hex. A trace therefore lands on the
//! same partition whether it is written alone (keyed) or in a batch, and a consumer that relies
//! on trace-id partitioning (a second sampling tier, a trace-aware exporter) sees whole traces.

/// librdkafka's `partitioner` setting, as far as the partition of a key is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyHash {
    /// `consistent` and `consistent_random` (librdkafka's default): CRC-32 of the key.
    Crc32,
    /// `murmur2` and `murmur2_random`: the Java client's murmur2.
    Murmur2,
    /// `fnv1a` and `fnv1a_random`: FNV-1a, 32 bits.
    Fnv1a,
}

impl KeyHash {
    /// The hash of a `partitioner` setting (`None`: librdkafka's default). `random` ignores
    /// keys altogether; a batch still needs one partition per trace, so it hashes like the
    /// default. An unknown name is librdkafka's to refuse when the producer is created.
    pub fn of_setting(partitioner: Option<&str>) -> KeyHash {
        match partitioner {
            Some("murmur2" | "murmur2_random") => KeyHash::Murmur2,
            Some("fnv1a" | "fnv1a_random") => KeyHash::Fnv1a,
            _ => KeyHash::Crc32,
        }
    }

    /// The partition of `key` among `partitions` (at least 1).
    pub fn partition(self, key: &[u8], partitions: i32) -> i32 {
        let n = partitions.max(1) as u32;
        let p = match self {
            KeyHash::Crc32 => crc32(key) % n,
            KeyHash::Murmur2 => (murmur2(key) & 0x7fff_ffff) % n,
            KeyHash::Fnv1a => fnv1a(key) % n,
        };
        p as i32
    }
}

/// CRC-32 (IEEE 802.3, the zlib one), as librdkafka's `rd_crc32`.
fn crc32(data: &[u8]) -> u32 {
    let mut d = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32IsoHdlc);
    d.update(data);
    d.finalize() as u32
}

/// Kafka's murmur2 (seed `0x9747b28c`), as the Java client and librdkafka compute it.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        let mut k = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        for (i, b) in tail.iter().enumerate().rev() {
            h ^= u32::from(*b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// FNV-1a, 32 bits.
fn fnv1a(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_published_values() {
        // Kafka's `UtilsTest.testMurmur2` (as signed 32-bit values).
        for (key, want) in [
            ("21", -973932308i32),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            ("abc", 479470107),
        ] {
            assert_eq!(murmur2(key.as_bytes()) as i32, want, "{key}");
        }
    }

    #[test]
    fn crc32_and_fnv1a_match_their_check_values() {
        // The catalogue check value of CRC-32/ISO-HDLC and FNV-1a's published test vectors.
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn partitions_stay_in_range_and_settings_map() {
        for h in [KeyHash::Crc32, KeyHash::Murmur2, KeyHash::Fnv1a] {
            for n in [1, 2, 3, 7, 64] {
                for k in 0..200u32 {
                    let p = h.partition(format!("{k:032x}").as_bytes(), n);
                    assert!((0..n).contains(&p), "{h:?} {n} {p}");
                }
            }
        }
        assert_eq!(KeyHash::of_setting(None), KeyHash::Crc32);
        assert_eq!(KeyHash::of_setting(Some("random")), KeyHash::Crc32);
        assert_eq!(
            KeyHash::of_setting(Some("murmur2_random")),
            KeyHash::Murmur2
        );
        assert_eq!(KeyHash::of_setting(Some("fnv1a")), KeyHash::Fnv1a);
    }
}
