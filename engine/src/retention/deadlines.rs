//! The deadline (TTL) index: what must be destroyed when.
//!
//! ```text
//! key:   deadline (8, sortable unix seconds) ‖ kind u8 ‖ target
//!          kind 1  destroy a data key      target = key id (26)
//!          kind 2  erase a scope (retention clock ran out)
//!                                          target = subject tag (16) ‖ class u16
//!          kind 3  re-key a bucket before its purge deadline
//!                                          target = key id (26)
//!          kind 4  remove dead ciphertext of an erased scope
//!                                          target = subject tag (16) ‖ class u16
//!          kind 5  resume an erasure a legal hold blocked
//!                                          target = subject tag (16) ‖ class u16
//!                                          ‖ reason u8 ‖ whole subject u8 (0/1)
//!          kind 6  re-key the key tree node a destroyed data key was
//!                  under, and its path to the root (due at the destruction)
//!                                          target = the destroyed key's id (26)
//! value: v1 ‖ created at i64 ‖ CRC32
//! ```
//!
//! Compaction reads the range `..=now`, so a pass costs what is due, not
//! what is stored.

use shredkv_crypto::{KeyId, SubjectTag};

use crate::codec::{Writer, sortable_time, time_from_sortable};
use crate::ledger::ErasureReason;

const VERSION: u8 = 1;

/// Work the deadline index schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Destroy one data key (its bucket's records all expired).
    DestroyKey(KeyId),
    /// Erase a scope whose retention ran out.
    EraseScope(SubjectTag, u16),
    /// Re-key a bucket that owes one (deleted or overwritten records).
    Rekey(KeyId),
    /// Remove the dead ciphertext of an erased scope.
    RemoveCiphertext(SubjectTag, u16),
    /// Resume an erasure (shred, deletion request) a legal hold blocked,
    /// with its own reason; `whole` for an erasure of the whole subject,
    /// which ends with the subject erased as a direct one would.
    ResumeErasure {
        tag: SubjectTag,
        class: u16,
        reason: ErasureReason,
        whole: bool,
    },
    /// Re-key the bottom node of the key tree that the destroyed data key
    /// was under, and every node above it: the key's copies must stop
    /// opening through the node's current generation (`vault::tree`). One
    /// item per destroyed key, so a pass removes only the debts it read.
    RekeyNode(KeyId),
    /// Re-key every node of forest `forest`, or, for a day forest that
    /// holds no live key, remove it whole (`retention/node_debts.rs`).
    /// Written by a day's expiry in place of a `RekeyNode` per key (one
    /// item per forest and batch), and by a restore for every forest (the
    /// backup's node keys must not stay live: the live store wrapped keys
    /// under them after the backup).
    RetireForest(u32),
}

pub(crate) fn key(deadline: i64, due: &Due) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 1 + KeyId::LEN);
    out.extend_from_slice(&sortable_time(deadline));
    match due {
        Due::DestroyKey(id) => {
            out.push(1);
            out.extend_from_slice(&id.to_bytes());
        }
        Due::EraseScope(tag, class) => {
            out.push(2);
            out.extend_from_slice(&tag.0);
            out.extend_from_slice(&class.to_be_bytes());
        }
        Due::Rekey(id) => {
            out.push(3);
            out.extend_from_slice(&id.to_bytes());
        }
        Due::RemoveCiphertext(tag, class) => {
            out.push(4);
            out.extend_from_slice(&tag.0);
            out.extend_from_slice(&class.to_be_bytes());
        }
        Due::ResumeErasure {
            tag,
            class,
            reason,
            whole,
        } => {
            out.push(5);
            out.extend_from_slice(&tag.0);
            out.extend_from_slice(&class.to_be_bytes());
            out.push(reason.code());
            out.push(u8::from(*whole));
        }
        Due::RekeyNode(id) => {
            out.push(6);
            out.extend_from_slice(&id.to_bytes());
        }
        Due::RetireForest(forest) => {
            out.push(7);
            out.extend_from_slice(&forest.to_be_bytes());
        }
    }
    out
}

/// The first key after every item due at or before `now`.
pub(crate) fn upper_bound(now: i64) -> [u8; 8] {
    sortable_time(now.saturating_add(1))
}

pub(crate) fn value(created_at: i64) -> Vec<u8> {
    let mut w = Writer::new(VERSION, 8);
    w.i64(created_at);
    w.finish()
}

/// Decodes a deadline key; `None` if malformed.
pub(crate) fn decode_key(key: &[u8]) -> Option<(i64, Due)> {
    let time: [u8; 8] = key.get(..8)?.try_into().ok()?;
    let kind = *key.get(8)?;
    let target = key.get(9..)?;
    let scope = |t: &[u8]| -> Option<(SubjectTag, u16)> {
        let tag: [u8; 16] = t.get(..16)?.try_into().ok()?;
        let class: [u8; 2] = t.get(16..18)?.try_into().ok()?;
        (t.len() == 18).then_some((SubjectTag(tag), u16::from_be_bytes(class)))
    };
    let due = match kind {
        1 => Due::DestroyKey(KeyId::from_bytes(target)?),
        2 => scope(target).map(|(t, c)| Due::EraseScope(t, c))?,
        3 => Due::Rekey(KeyId::from_bytes(target)?),
        4 => scope(target).map(|(t, c)| Due::RemoveCiphertext(t, c))?,
        5 => {
            let (tag, class) = scope(target.get(..18)?)?;
            let reason = ErasureReason::from_code(*target.get(18)?)?;
            let whole = match target.get(19..)? {
                [0] => false,
                [1] => true,
                _ => return None,
            };
            Due::ResumeErasure {
                tag,
                class,
                reason,
                whole,
            }
        }
        6 => Due::RekeyNode(KeyId::from_bytes(target)?),
        7 => Due::RetireForest(u32::from_be_bytes(target.try_into().ok()?)),
        _ => return None,
    };
    Some((time_from_sortable(time), due))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sort_by_time() {
        let id = KeyId {
            subject: SubjectTag([1; 16]),
            class: 2,
            bucket: 3,
            version: 4,
        };
        let dues = [
            Due::DestroyKey(id),
            Due::EraseScope(SubjectTag([5; 16]), 6),
            Due::Rekey(id),
            Due::RemoveCiphertext(SubjectTag([5; 16]), 6),
            Due::ResumeErasure {
                tag: SubjectTag([7; 16]),
                class: 8,
                reason: ErasureReason::Operator,
                whole: true,
            },
            Due::RekeyNode(id),
            Due::RetireForest(20_002),
        ];
        for due in dues {
            assert_eq!(decode_key(&key(77, &due)), Some((77, due)));
        }
        assert!(key(-5, &dues[1]) < key(3, &dues[0]));
        assert_eq!(decode_key(&[1, 2, 3]), None);
    }
}
