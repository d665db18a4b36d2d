//! Where a key lives: hashing keys onto a ring of fixed partitions.
//!
//! A key's position is xxh3-64 of its bytes with [`KEY_HASH_SEED`]; its
//! partition is the top log2(Q) bits of that position, so partitions are
//! contiguous arcs of the ring and Q stays fixed for the cluster's life.
//! Both the seed and the bit selection are part of the on-disk format (the
//! data column family is keyed by partition), so they never change.
//!
//! Nodes hash with [`partition_of`]. Clients and tests route with
//! [`partition_of_seeded`] and the seed a node reports in its layout, so a
//! client never assumes a seed the cluster does not use.
//!
//! Pure: no I/O, no clocks.

use twox_hash::XxHash3_64;

/// Seed of the key hash. Part of the on-disk format: changing it would
/// strand every stored key in the wrong partition.
pub const KEY_HASH_SEED: u64 = 0x7269_6e67_6b76_0001;

/// The key's position on the ring.
pub fn key_position(key: &[u8]) -> u64 {
    XxHash3_64::oneshot_with_seed(KEY_HASH_SEED, key)
}

/// The partition holding `key` in a ring of `partitions` partitions (a power
/// of two, checked by configuration validation).
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    partition_of_seeded(key, partitions, KEY_HASH_SEED)
}

/// [`partition_of`] with the seed a node reported (`LayoutResponse.hash_seed`).
/// `partitions` must be a power of two; a layout with any other count is
/// ignored by its readers.
pub fn partition_of_seeded(key: &[u8], partitions: u32, seed: u64) -> u32 {
    debug_assert!(partitions.is_power_of_two());
    let bits = partitions.trailing_zeros();
    if bits == 0 {
        return 0;
    }
    (XxHash3_64::oneshot_with_seed(seed, key) >> (64 - bits)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hashing_is_stable_across_releases() {
        // Pinned values: if these change, stored data lands in the wrong partition.
        assert_eq!(key_position(b"ringkv"), 0xba2e_677c_d108_b27a_u64);
        let p = key_position(b"ringkv");
        assert_eq!(p, XxHash3_64::oneshot_with_seed(KEY_HASH_SEED, b"ringkv"));
        assert_eq!(partition_of(b"ringkv", 256) as u64, p >> 56);
        assert_eq!(partition_of(b"ringkv", 1), 0);
    }

    #[test]
    fn the_seeded_form_with_the_key_seed_is_partition_of() {
        for i in 0..1000u32 {
            let key = format!("key-{i}");
            assert_eq!(
                partition_of_seeded(key.as_bytes(), 64, KEY_HASH_SEED),
                partition_of(key.as_bytes(), 64)
            );
        }
        assert_ne!(
            (0..64u32)
                .map(|i| partition_of_seeded(&i.to_le_bytes(), 1024, 1))
                .collect::<Vec<_>>(),
            (0..64u32)
                .map(|i| partition_of(&i.to_le_bytes(), 1024))
                .collect::<Vec<_>>(),
            "another seed places keys elsewhere"
        );
    }

    #[test]
    fn keys_spread_over_all_partitions() {
        let mut counts = vec![0u32; 256];
        for i in 0..100_000u32 {
            counts[partition_of(format!("key-{i}").as_bytes(), 256) as usize] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        // 390 expected per partition; a skewed hash would leave some far off.
        assert!(*min > 250 && *max < 550, "min {min} max {max}");
    }

    proptest! {
        #[test]
        fn partition_is_in_range(key in proptest::collection::vec(any::<u8>(), 0..64), bits in 0u32..16) {
            let q = 1u32 << bits;
            prop_assert!(partition_of(&key, q) < q);
        }

        #[test]
        fn doubling_q_splits_partitions(key in proptest::collection::vec(any::<u8>(), 0..64), bits in 0u32..15) {
            let q = 1u32 << bits;
            prop_assert_eq!(partition_of(&key, q * 2) / 2, partition_of(&key, q));
        }
    }
}
