//! A cheap hasher for the in-memory maps keyed by subject tags.
//!
//! The caches on every read and write (subject states, live scopes, cached
//! keys, each bucket's current key) are keyed by a [`SubjectTag`] with a few
//! small numbers beside it. std's SipHash-1-3 guards a map against keys an
//! adversary picked to collide; a subject tag is HMAC-SHA256 of the id under
//! the store's secret, so whoever picks the ids cannot pick their tags, and
//! their bytes are already uniform. Mixing the written words with one
//! multiply each (the FxHash construction) is enough, at a fraction of
//! SipHash's cost (SipHash was 3–4 % of a `get` in a profile).
//!
//! Use it only for keys whose variable part is a subject tag or another
//! keyed hash: a key an outsider can choose freely (a record key, an id)
//! keeps std's hasher.
//!
//! [`SubjectTag`]: shredkv_crypto::SubjectTag

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` whose keys carry a subject tag (see the module docs).
pub(crate) type TagMap<K, V> = HashMap<K, V, BuildHasherDefault<TagHasher>>;

/// FxHash's multiplier (a 64-bit odd constant with well-spread bits).
const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// Folds each written word into the state with a rotate, xor and multiply.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TagHasher {
    hash: u64,
}

impl TagHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for TagHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_be_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_be_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        // A multiply carries only upwards, so its best-mixed bits are the
        // high ones; hashbrown picks the bucket with the low ones.
        self.hash.rotate_left(26)
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use shredkv_crypto::{Label, SubjectTag, TagKey};

    use super::*;

    fn hash_of<T: std::hash::Hash>(value: &T) -> u64 {
        BuildHasherDefault::<TagHasher>::default().hash_one(value)
    }

    /// Every byte of a tag and every small number beside it moves the hash.
    #[test]
    fn every_part_of_a_key_changes_its_hash() {
        let tag = SubjectTag([7; 16]);
        let base = hash_of(&(tag, 3u16, 9u32));
        for i in 0..16 {
            let mut other = tag;
            other.0[i] ^= 1;
            assert_ne!(hash_of(&(other, 3u16, 9u32)), base, "byte {i}");
        }
        assert_ne!(hash_of(&(tag, 4u16, 9u32)), base);
        assert_ne!(hash_of(&(tag, 3u16, 10u32)), base);
    }

    /// Real tags spread evenly over a map's buckets: the low bits a
    /// `HashMap` uses of 20,000 tags fill 1,024 buckets within a few
    /// standard deviations of the mean, as a uniform hash would.
    #[test]
    fn tags_spread_over_buckets() {
        let key = TagKey::derive(&[3; 32], Label::SubjectTag);
        let mut buckets = vec![0u32; 1024];
        let n = 20_000u32;
        for i in 0..n {
            let tag = key.subject_tag(format!("user-{i}").as_bytes());
            let h = hash_of(&(tag, 1u16));
            // hashbrown takes its bucket from the low bits and a control
            // byte from the top seven.
            buckets[usize::try_from(h % 1024).unwrap_or(0)] += 1;
        }
        let mean = f64::from(n) / 1024.0;
        let worst = buckets
            .iter()
            .map(|&b| (f64::from(b) - mean).abs())
            .fold(0.0, f64::max);
        // A binomial bucket's standard deviation is about sqrt(mean) ≈ 4.4.
        assert!(
            worst < 6.0 * mean.sqrt(),
            "worst deviation {worst} from {mean}"
        );
    }
}
