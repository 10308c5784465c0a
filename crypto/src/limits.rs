//! Seal counting: retire a data key long before AES-GCM's random-nonce limit.
//!
//! NIST SP 800-38D §8.3 caps a key used with random 96-bit nonces at 2^32
//! invocations. The engine counts seals per key version, persists the count in
//! reserved blocks (so a crash can only over-count), and rotates the key once
//! [`RETIRE_AFTER_SEALS`] is reached: a quarter of the limit.

use std::sync::atomic::{AtomicU64, Ordering};

/// The hard limit of NIST SP 800-38D for random nonces.
pub const SEAL_LIMIT: u64 = 1 << 32;
/// Seals after which a key version is retired in favour of a new one.
pub const RETIRE_AFTER_SEALS: u64 = 1 << 30;

/// What a recorded seal means for its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealBudget {
    /// The key may keep sealing.
    Available,
    /// The key reached [`RETIRE_AFTER_SEALS`]; the caller must stop using it
    /// for new seals and create the next version.
    Retire,
}

/// Counts seals made under one key version. Lock-free; shared between threads.
#[derive(Debug)]
pub struct SealCounter {
    used: AtomicU64,
    retire_at: u64,
}

impl SealCounter {
    /// A counter that already counted `used` seals (from the vault).
    pub fn new(used: u64) -> Self {
        Self::with_retire_at(used, RETIRE_AFTER_SEALS)
    }

    /// A counter with a lower retirement point, for tests and cautious deployments.
    pub fn with_retire_at(used: u64, retire_at: u64) -> Self {
        Self {
            used: AtomicU64::new(used),
            retire_at: retire_at.min(RETIRE_AFTER_SEALS),
        }
    }

    /// Records one seal and says whether the key may take another.
    /// Returns the count including this seal.
    pub fn record(&self) -> (u64, SealBudget) {
        let used = self.used.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let budget = if used >= self.retire_at {
            SealBudget::Retire
        } else {
            SealBudget::Available
        };
        (used, budget)
    }

    /// Seals counted so far.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether the key has reached its retirement point.
    pub fn exhausted(&self) -> bool {
        self.used() >= self.retire_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retires_at_the_threshold_and_never_above_the_nist_limit() {
        let counter = SealCounter::with_retire_at(0, 3);
        assert_eq!(counter.record(), (1, SealBudget::Available));
        assert_eq!(counter.record(), (2, SealBudget::Available));
        assert_eq!(counter.record(), (3, SealBudget::Retire));
        assert!(counter.exhausted());
        let capped = SealCounter::with_retire_at(0, u64::MAX);
        assert!(capped.retire_at <= RETIRE_AFTER_SEALS);
        const _: () = assert!(RETIRE_AFTER_SEALS < SEAL_LIMIT);
    }

    #[test]
    fn resumes_from_a_persisted_count() {
        let counter = SealCounter::new(RETIRE_AFTER_SEALS - 1);
        assert_eq!(counter.record().1, SealBudget::Retire);
    }
}
