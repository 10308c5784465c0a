//! The data set and the loaded stores the workloads run against.
//!
//! Every peer gets the same records: 100-byte values under 16-byte record
//! keys, spread round-robin over the subjects (record `r` belongs to subject
//! `r mod subjects`), so writes of consecutive records touch different
//! subjects, as messages arriving for many users do. Loads write batches of
//! [`BATCH`] records, one transaction each, on every peer.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::{Peer, Record, Result, Store};

/// Length of a value, bytes.
pub const VALUE_LEN: usize = 100;
/// Length of a record key, bytes.
pub const KEY_LEN: usize = 16;
/// Records per write batch (one transaction) while loading.
pub const BATCH: usize = 1_000;
/// Numbers of subjects created for erasure start here, far above the loaded ones.
const FRESH_SUBJECTS_FROM: u64 = 90_000_000;

/// How big the data set and the erased subjects are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Records loaded.
    pub records: u64,
    /// Subjects they are spread over.
    pub subjects: u64,
    /// Records of the subjects the erase workload erases.
    pub erase: [u64; 3],
    /// Whether these are the shrunk sizes for CI.
    pub quick: bool,
}

impl Sizes {
    /// The full run: 1M records of 100 B in 10k subjects; erasing subjects
    /// of 100, 10k and 100k records.
    pub const FULL: Sizes = Sizes {
        records: 1_000_000,
        subjects: 10_000,
        erase: [100, 10_000, 100_000],
        quick: false,
    };

    /// CI: 20k records in 100 subjects; erasing 100, 1k and 5k records.
    pub const QUICK: Sizes = Sizes {
        records: 20_000,
        subjects: 100,
        erase: [100, 1_000, 5_000],
        quick: true,
    };

    /// Whether `SHREDKV_BENCH_QUICK` asks for quick sizes (set, not `0`).
    pub fn quick_from_env() -> bool {
        std::env::var_os("SHREDKV_BENCH_QUICK").is_some_and(|v| !v.is_empty() && v != "0")
    }

    /// The sizes for a criterion bench binary: quick when
    /// `SHREDKV_BENCH_QUICK=1`, when criterion runs with `--quick`, and when
    /// it runs benches as tests (`cargo test --benches`, no `--bench`).
    pub fn for_criterion() -> Sizes {
        let args: Vec<String> = std::env::args().collect();
        let has = |flag: &str| args.iter().any(|a| a == flag);
        if Self::quick_from_env() || has("--quick") || has("--test") || !has("--bench") {
            Sizes::QUICK
        } else {
            Sizes::FULL
        }
    }

    /// Records of each loaded subject.
    pub fn per_subject(&self) -> u64 {
        self.records / self.subjects.max(1)
    }
}

/// The id of subject number `n`: fixed width, so no id is a prefix of another.
pub fn subject_id(n: u64) -> String {
    format!("subj{n:08}")
}

/// The record key number `n` of a subject: `msg-` and 12 decimal digits.
pub fn record_key(n: u64) -> [u8; KEY_LEN] {
    let mut key = *b"msg-000000000000";
    let mut rest = n;
    for byte in key.iter_mut().skip(4).rev() {
        *byte = b'0' + u8::try_from(rest % 10).unwrap_or(0);
        rest /= 10;
    }
    key
}

/// A value: 100 pseudo-random bytes (incompressible), one per seed.
pub fn value(seed: u64) -> [u8; VALUE_LEN] {
    let mut rng = SplitMix64::new(seed);
    let mut out = [0u8; VALUE_LEN];
    for chunk in out.chunks_mut(8) {
        let bytes = rng.next_u64().to_be_bytes();
        chunk.copy_from_slice(bytes.get(..chunk.len()).unwrap_or_default());
    }
    out
}

/// SplitMix64: a small, fast, reproducible generator for picks and values.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting at `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`; the modulo bias is negligible here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Writes `count` records numbered `first..` for the subjects chosen by
/// `subject_of` (record number → subject number; key number = record number
/// / `stride`), in batches of [`BATCH`]. `round` varies the values.
fn write_records(
    store: &dyn Store,
    count: u64,
    round: u64,
    subject_of: &dyn Fn(u64) -> (u64, u64),
) -> Result<()> {
    let mut start = 0;
    while start < count {
        let end = (start + BATCH as u64).min(count);
        let owned: Vec<(String, [u8; KEY_LEN], [u8; VALUE_LEN])> = (start..end)
            .map(|r| {
                let (subject, key) = subject_of(r);
                (
                    subject_id(subject),
                    record_key(key),
                    value(r ^ (round << 40)),
                )
            })
            .collect();
        let batch: Vec<Record<'_>> = owned
            .iter()
            .map(|(subject, key, value)| Record {
                subject,
                key,
                value,
            })
            .collect();
        store.write_batch(&batch)?;
        start = end;
    }
    Ok(())
}

/// Loads the data set of `sizes` into `store` (registering every subject
/// first) and flushes it. `round` 0 is the first load; later rounds
/// overwrite every record with new values.
///
/// # Errors
/// The store failing.
pub fn load(store: &dyn Store, sizes: &Sizes, round: u64) -> Result<()> {
    if round == 0 {
        for s in 0..sizes.subjects {
            store.register(&subject_id(s))?;
        }
    }
    let subjects = sizes.subjects.max(1);
    write_records(store, sizes.records, round, &|r| {
        (r % subjects, r / subjects)
    })?;
    store.flush()
}

/// A peer's store loaded with the data set, kept for every workload of a
/// process, and the state the workloads draw from.
pub struct Fixture {
    store: Box<dyn Store>,
    /// The loaded data set.
    pub sizes: Sizes,
    /// How long loading (and flushing) took.
    pub load_time: Duration,
    subjects: Vec<String>,
    rng: SplitMix64,
    /// The next key number for fresh records (put), above the loaded ones.
    next_key: u64,
    /// The next number for a fresh subject (erase).
    next_subject: u64,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("peer", &self.store.peer())
            .field("sizes", &self.sizes)
            .finish_non_exhaustive()
    }
}

impl Fixture {
    /// Opens `peer` in a new temporary directory under `parent` (the
    /// system's temporary directory if `None`) and loads the data set.
    ///
    /// # Errors
    /// The store failing.
    pub fn load(peer: Peer, sizes: Sizes, parent: Option<&Path>) -> Result<Fixture> {
        let dir = match parent {
            Some(parent) => tempfile::Builder::new()
                .prefix(peer.name())
                .tempdir_in(parent)?,
            None => tempfile::Builder::new().prefix(peer.name()).tempdir()?,
        };
        let store = peer.open(dir.path())?;
        let started = Instant::now();
        load(store.as_ref(), &sizes, 0)?;
        let load_time = started.elapsed();
        eprintln!(
            "loaded {peer}: {} records in {} subjects in {:.1} s",
            sizes.records,
            sizes.subjects,
            load_time.as_secs_f64()
        );
        Ok(Fixture {
            store,
            sizes,
            load_time,
            subjects: (0..sizes.subjects).map(subject_id).collect(),
            rng: SplitMix64::new(0x5eed ^ sizes.records),
            next_key: sizes.per_subject() + 1,
            next_subject: FRESH_SUBJECTS_FROM,
            dir,
        })
    }

    /// The directory holding the store (removed with the fixture).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The loaded store.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The id of loaded subject `index`.
    pub fn subject(&self, index: usize) -> &str {
        self.subjects.get(index).map_or("", String::as_str)
    }

    /// `n` random loaded subjects, by index.
    pub fn random_subjects(&mut self, n: u64) -> Vec<usize> {
        let subjects = self.sizes.subjects;
        (0..n)
            .map(|_| usize::try_from(self.rng.below(subjects)).unwrap_or(0))
            .collect()
    }

    /// `n` random loaded records: subject index and record key.
    pub fn random_records(&mut self, n: u64) -> Vec<(usize, [u8; KEY_LEN])> {
        let subjects = self.sizes.subjects;
        let per_subject = self.sizes.per_subject();
        (0..n)
            .map(|_| {
                let s = usize::try_from(self.rng.below(subjects)).unwrap_or(0);
                (s, record_key(self.rng.below(per_subject)))
            })
            .collect()
    }

    /// `n` records that do not exist yet, on random loaded subjects.
    pub fn fresh_records(&mut self, n: u64) -> Vec<(usize, [u8; KEY_LEN])> {
        let subjects = self.sizes.subjects;
        let out = (0..n)
            .map(|i| {
                let s = usize::try_from(self.rng.below(subjects)).unwrap_or(0);
                (s, record_key(self.next_key + i))
            })
            .collect();
        self.next_key += n;
        out
    }

    /// `n` random booleans, each true with probability 1/2.
    pub fn coin_flips(&mut self, n: u64) -> Vec<bool> {
        (0..n).map(|_| self.rng.next_u64() & 1 == 1).collect()
    }

    /// A new subject holding `records` records (registered, written in
    /// batches of [`BATCH`], flushed), for an erasure to remove.
    ///
    /// # Errors
    /// The store failing.
    pub fn fresh_subject(&mut self, records: u64) -> Result<String> {
        let n = self.next_subject;
        self.next_subject += 1;
        let id = subject_id(n);
        self.store.register(&id)?;
        write_records(self.store.as_ref(), records, n, &|r| (n, r))?;
        self.store.flush()?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_keys_have_fixed_widths() {
        assert_eq!(subject_id(42), "subj00000042");
        assert_eq!(subject_id(FRESH_SUBJECTS_FROM).len(), subject_id(0).len());
        assert_eq!(&record_key(1234), b"msg-000000001234");
        assert_ne!(value(1), value(2));
    }

    #[test]
    fn fixture_serves_loaded_and_fresh_records() {
        let sizes = Sizes {
            records: 300,
            subjects: 10,
            erase: [5, 10, 20],
            quick: true,
        };
        let mut fixture = Fixture::load(Peer::Sled, sizes, None).expect("load");
        let mut out = Vec::new();
        for (s, key) in fixture.random_records(20) {
            let subject = fixture.subject(s).to_string();
            assert!(fixture.store().get(&subject, &key, &mut out).expect("get"));
        }
        for (s, key) in fixture.fresh_records(5) {
            let subject = fixture.subject(s).to_string();
            assert!(!fixture.store().get(&subject, &key, &mut out).expect("get"));
        }
        let victim = fixture.fresh_subject(20).expect("fresh subject");
        assert_eq!(
            fixture.store().scan(&victim, &mut |_, _| {}).expect("scan"),
            20
        );
        assert_eq!(
            fixture
                .store()
                .scan(fixture.subject(3), &mut |_, _| {})
                .expect("scan"),
            30
        );
    }
}
