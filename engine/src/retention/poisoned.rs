//! Items compaction set aside because their work failed on their own data.
//!
//! A due item whose work fails on a damaged or altered record (a hold,
//! subject or ledger record failing its checksum, a vault entry failing
//! authentication) must not stop the purge of every other subject. It is
//! recorded here, audited once, and retried with exponential backoff, while
//! the pass goes on and epoch maintenance runs.
//!
//! Tree `poisoned`:
//!
//! ```text
//! key:   kind u8 ‖ item
//!          kind 1  a due item          item = its deadline index key
//!          kind 2  a vault entry lost  item = key id (26); its epoch is
//!                  destroyed on schedule all the same (G2 wins)
//! value: v1 ‖ attempts u32 ‖ first failure i64 ‖ next retry i64
//!        ‖ deadline i64 ‖ error kind u8 ‖ CRC32
//! ```
//!
//! Error kinds: 1 corrupt, 2 tampered, 3 other. No key bytes are recorded.

use shredkv_crypto::{FormatError, KeyId};

use crate::codec::{Reader, Writer};
use crate::error::Error;

const VERSION: u8 = 1;
const WHAT: &str = "poisoned item record";

/// Kind byte of a set-aside due item.
pub(crate) const DUE_ITEM: u8 = 1;
/// Kind byte of a vault entry that could not be re-wrapped.
pub(crate) const LOST_KEY: u8 = 2;

/// First retry an hour after a failure, doubling up to a day.
const FIRST_BACKOFF_SECS: i64 = 3_600;
const MAX_BACKOFF_SECS: i64 = 86_400;

/// Why an item was set aside (never key material).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// Damaged bytes (checksum, truncation, unknown format).
    Corrupt,
    /// Authentication failed.
    Tampered,
    /// Any other failure specific to the item.
    Other,
}

impl FailureKind {
    pub(crate) fn of(err: &Error) -> Self {
        match err {
            Error::Corrupt { .. } => FailureKind::Corrupt,
            Error::Tampered { .. } => FailureKind::Tampered,
            _ => FailureKind::Other,
        }
    }

    fn code(self) -> u8 {
        match self {
            FailureKind::Corrupt => 1,
            FailureKind::Tampered => 2,
            FailureKind::Other => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => FailureKind::Corrupt,
            2 => FailureKind::Tampered,
            3 => FailureKind::Other,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            FailureKind::Corrupt => "corrupt",
            FailureKind::Tampered => "tampered",
            FailureKind::Other => "failed",
        }
    }
}

/// Whether `err` is the item's own (its data is damaged or altered), so the
/// item is set aside and the pass goes on. Failures of the environment (the
/// backend or the key provider unavailable) stop the pass instead: every
/// item would fail alike, and the next pass retries them all.
pub(crate) fn is_item_failure(err: &Error) -> bool {
    match err {
        Error::Corrupt { .. }
        | Error::Tampered { .. }
        | Error::InvalidArgument { .. }
        | Error::PolicyViolation { .. } => true,
        Error::KeyProvider(e) => matches!(e, shredkv_crypto::ProviderError::Authentication),
        _ => false,
    }
}

/// One set-aside item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Poisoned {
    pub(crate) attempts: u32,
    pub(crate) first_failure: i64,
    pub(crate) next_retry: i64,
    pub(crate) deadline: i64,
    pub(crate) kind: FailureKind,
}

impl Poisoned {
    /// The record after a (further) failure at `now`.
    pub(crate) fn failed(
        previous: Option<Poisoned>,
        deadline: i64,
        kind: FailureKind,
        now: i64,
    ) -> Self {
        let attempts = previous.map_or(1, |p| p.attempts.saturating_add(1));
        let shift = attempts.saturating_sub(1).min(16);
        let backoff = FIRST_BACKOFF_SECS
            .saturating_mul(1i64 << shift)
            .min(MAX_BACKOFF_SECS);
        Self {
            attempts,
            first_failure: previous.map_or(now, |p| p.first_failure),
            next_retry: now.saturating_add(backoff),
            deadline: previous.map_or(deadline, |p| p.deadline.min(deadline)),
            kind,
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(VERSION, 29);
        w.u32(self.attempts)
            .i64(self.first_failure)
            .i64(self.next_retry)
            .i64(self.deadline)
            .u8(self.kind.code());
        w.finish()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::checked(WHAT, bytes, VERSION)?;
        let attempts = r.u32()?;
        let first_failure = r.i64()?;
        let next_retry = r.i64()?;
        let deadline = r.i64()?;
        let kind =
            FailureKind::from_code(r.u8()?).ok_or_else(|| r.invalid("unknown failure kind"))?;
        r.end()?;
        Ok(Self {
            attempts,
            first_failure,
            next_retry,
            deadline,
            kind,
        })
    }
}

pub(crate) fn due_key(deadline_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + deadline_key.len());
    key.push(DUE_ITEM);
    key.extend_from_slice(deadline_key);
    key
}

pub(crate) fn lost_key(id: &KeyId) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + KeyId::LEN);
    key.push(LOST_KEY);
    key.extend_from_slice(&id.to_bytes());
    key
}

/// What is set aside, for stats and verify.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PoisonedSummary {
    /// Items set aside (due items and lost vault entries).
    pub(crate) count: u64,
    /// The earliest deadline among them, if any.
    pub(crate) oldest_deadline: Option<jiff::Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_back_off_to_a_day() {
        let first = Poisoned::failed(None, 100, FailureKind::Corrupt, 1_000);
        assert_eq!(first.attempts, 1);
        assert_eq!(first.next_retry, 1_000 + 3_600);
        assert_eq!(Poisoned::decode(&first.encode()).expect("decode"), first);
        let mut p = first;
        for _ in 0..10 {
            p = Poisoned::failed(Some(p), 200, FailureKind::Tampered, 5_000);
        }
        assert_eq!(p.next_retry, 5_000 + 86_400);
        assert_eq!((p.first_failure, p.deadline, p.attempts), (1_000, 100, 11));
        let bytes = p.encode();
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x20;
            assert!(Poisoned::decode(&flipped).is_err(), "flip at {i}");
        }
    }
}
