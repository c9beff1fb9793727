//! Partition-key routing by jump consistent hash (Lamping & Veach): when the instance count
//! changes from n to n+1, only about 1/(n+1) of the keys move.

use crate::retry::hash_str;

/// The bucket in `0..buckets` for `key`.
pub fn jump_hash(key: &str, buckets: u32) -> u32 {
    let buckets = i64::from(buckets.max(1));
    let mut k = hash_str(key);
    let (mut b, mut j) = (-1i64, 0i64);
    while j < buckets {
        b = j;
        k = k.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = (((b + 1) as f64) * ((1u64 << 31) as f64 / (((k >> 33) + 1) as f64))) as i64;
    }
    b as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_in_range() {
        for n in 1..20 {
            for i in 0..200 {
                let key = format!("tenant-{i}");
                let b = jump_hash(&key, n);
                assert!(b < n);
                assert_eq!(b, jump_hash(&key, n));
            }
        }
    }

    #[test]
    fn growing_moves_few_keys() {
        let keys: Vec<String> = (0..10_000).map(|i| format!("k{i}")).collect();
        let moved = keys
            .iter()
            .filter(|k| jump_hash(k, 8) != jump_hash(k, 9))
            .count();
        // Ideal is 1/9 ≈ 1111; `hash % n` would move about 8/9 of them.
        assert!(moved < 1_500, "moved {moved}");
        let spread: Vec<usize> = (0..8)
            .map(|b| keys.iter().filter(|k| jump_hash(k, 8) == b).count())
            .collect();
        assert!(
            spread.iter().all(|c| (1_000..1_500).contains(c)),
            "{spread:?}"
        );
    }
}
