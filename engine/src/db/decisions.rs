//! The decisions a restore carries over from the live store.
//!
//! A backup holds the records as they were; the live store (or the log
//! exported from it) is the authority on what was decided since. Erasures
//! and destroyed keys are the erasure log proper (backup.rs); these are the
//! decisions that lead to erasures or forbid them, which a restore must not
//! roll back either:
//!
//! - the legal holds in force (they replace the backup's: a hold placed
//!   since stands, a hold released since does not come back, and what the
//!   backup's holds blocked is due again unless a hold still covers it);
//! - erasures a hold parked, and parked erasures whose hold was released
//!   and which wait for compaction (without them a released hold resumes
//!   nothing and the subject is never erased);
//! - each subject's recorded events: closure, marketing opt-out, manual
//!   releases (each schedules its erasure as the event did) and
//!   restriction.
//!
//! Encoded in the erasure log from version 2 on (docs/design.md):
//!
//! ```text
//! count u64 ‖ (kind u8 ‖ key length u32 ‖ key ‖ value length u32 ‖ value)*
//! kind: 1 hold, 2 parked erasure (tree blocked), 3 resumed erasure (tree
//!       deadlines), 4 subject record, 5 manual release (tree subjects)
//! ```

use std::collections::{BTreeSet, HashMap};
use std::ops::{Bound, ControlFlow};

use jiff::Timestamp;
use shredkv_crypto::{FormatError, SubjectTag};

use super::DbInner;
use crate::error::Result;
use crate::holds;
use crate::ledger::ALL_CLASSES;
use crate::retention::deadlines::{self, Due};
use crate::storage::{Order, Storage, Tree, WriteBatch, scan_prefix};
use crate::subjects::{self, SubjectInfo, SubjectState};

const WHAT: &str = "erasure log decisions";

/// What one carried entry is, and the tree it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    Hold = 1,
    Parked = 2,
    Resumed = 3,
    Subject = 4,
    Release = 5,
}

impl Kind {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Kind::Hold,
            2 => Kind::Parked,
            3 => Kind::Resumed,
            4 => Kind::Subject,
            5 => Kind::Release,
            _ => return None,
        })
    }
}

/// The live store's decisions, as tree entries (key, value) of their kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Decisions {
    pub(super) entries: Vec<(Kind, Vec<u8>, Vec<u8>)>,
}

/// What carrying the decisions changed in the restored store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Carried {
    /// Holds in force after the restore.
    pub(super) holds: u64,
    /// Parked or resumed erasures brought over.
    pub(super) parked: u64,
    /// Items the backup's holds blocked, due again (their hold is gone).
    pub(super) requeued: u64,
    /// Subjects whose closure, opt-out, releases or restriction changed.
    pub(super) subjects: u64,
    /// Scopes scheduled for erasure by those events.
    pub(super) scheduled: u64,
}

fn is_resumed_erasure(deadline_key: &[u8]) -> bool {
    matches!(
        deadlines::decode_key(deadline_key),
        Some((_, Due::ResumeErasure { .. }))
    )
}

/// The tag and class a blocked key (scope prefix ‖ deadline key) is about.
fn blocked_scope(key: &[u8]) -> Option<(SubjectTag, u16)> {
    let tag: [u8; 16] = key.get(..16)?.try_into().ok()?;
    let class: [u8; 2] = key.get(16..18)?.try_into().ok()?;
    Some((SubjectTag(tag), u16::from_be_bytes(class)))
}

impl Decisions {
    /// The decisions recorded in `storage` (a live store).
    pub(super) fn of(storage: &dyn Storage) -> Result<Self> {
        let mut entries = Vec::new();
        let all = |tree, kind, keep: &dyn Fn(&[u8]) -> bool, out: &mut Vec<_>| {
            storage.scan(
                tree,
                Bound::Unbounded,
                Bound::Unbounded,
                Order::Ascending,
                &mut |k, v| {
                    if keep(k) {
                        out.push((kind, k.to_vec(), v.to_vec()));
                    }
                    ControlFlow::Continue(())
                },
            )
        };
        all(Tree::Holds, Kind::Hold, &|_| true, &mut entries)?;
        all(
            Tree::Blocked,
            Kind::Parked,
            &|k| k.get(18..).is_some_and(is_resumed_erasure),
            &mut entries,
        )?;
        all(
            Tree::Deadlines,
            Kind::Resumed,
            &is_resumed_erasure,
            &mut entries,
        )?;
        all(
            Tree::Subjects,
            Kind::Subject,
            &|k| subjects::tag_of_record_key(k).is_some(),
            &mut entries,
        )?;
        all(
            Tree::Subjects,
            Kind::Release,
            &|k| subjects::split_release_key(k).is_some(),
            &mut entries,
        )?;
        Ok(Decisions { entries })
    }

    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
        out.extend_from_slice(
            &u64::try_from(self.entries.len())
                .unwrap_or(u64::MAX)
                .to_be_bytes(),
        );
        for (kind, key, value) in &self.entries {
            out.push(*kind as u8);
            out.extend_from_slice(&len(key.len()));
            out.extend_from_slice(key);
            out.extend_from_slice(&len(value.len()));
            out.extend_from_slice(value);
        }
    }

    /// Reads what [`Decisions::encode`] wrote, with `take` handing out the
    /// next `n` bytes of the log. Each entry is checked for its kind's
    /// shape, so a damaged log is refused rather than half applied.
    pub(super) fn decode<'a>(
        take: &mut dyn FnMut(usize) -> Result<&'a [u8], FormatError>,
    ) -> Result<Self, FormatError> {
        let invalid = |detail| FormatError::InvalidField { what: WHAT, detail };
        let u32_at = |b: &[u8]| {
            usize::try_from(u32::from_be_bytes(b.try_into().unwrap_or([0xFF; 4])))
                .unwrap_or(usize::MAX)
        };
        let count = u64::from_be_bytes(take(8)?.try_into().unwrap_or([0xFF; 8]));
        let mut entries = Vec::new();
        for _ in 0..count {
            let kind = Kind::from_code(take(1)?[0]).ok_or(invalid("unknown entry kind"))?;
            let key_len = u32_at(take(4)?);
            let key = take(key_len)?.to_vec();
            let value_len = u32_at(take(4)?);
            let value = take(value_len)?.to_vec();
            let valid = match kind {
                Kind::Hold => key.len() == 18 && holds::decode(&value).is_ok(),
                Kind::Parked => key.get(18..).is_some_and(is_resumed_erasure),
                Kind::Resumed => is_resumed_erasure(&key),
                Kind::Subject => subjects::tag_of_record_key(&key)
                    .is_some_and(|tag| SubjectInfo::decode(tag, &value).is_ok()),
                Kind::Release => subjects::split_release_key(&key).is_some() && value.len() == 8,
            };
            if !valid {
                return Err(invalid("an entry does not have its kind's shape"));
            }
            entries.push((kind, key, value));
        }
        Ok(Decisions { entries })
    }

    fn of_kind(&self, kind: Kind) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.entries
            .iter()
            .filter(move |(k, _, _)| *k == kind)
            .map(|(_, key, value)| (key.as_slice(), value.as_slice()))
    }
}

impl DbInner {
    /// Applies the live store's `decisions` to this restored store, in
    /// `batch`. `updated` holds the subject records the replay has already
    /// rewritten (erased ones); the merged records go there too, for the
    /// caller to write. Everything is due at `now` at the latest.
    pub(super) fn carry_decisions(
        &self,
        decisions: &Decisions,
        batch: &mut WriteBatch,
        updated: &mut HashMap<SubjectTag, SubjectInfo>,
        now: Timestamp,
    ) -> Result<Carried> {
        let mut carried = Carried::default();
        let storage = self.storage.as_ref();

        // Holds: the live store's replace the backup's.
        let mut held: BTreeSet<(SubjectTag, u16)> = BTreeSet::new();
        scan_prefix(storage, Tree::Holds, &[], &mut |k, _| {
            batch.remove(Tree::Holds, k);
            ControlFlow::Continue(())
        })?;
        for (key, value) in decisions.of_kind(Kind::Hold) {
            if let Some(scope) = blocked_scope(key) {
                held.insert(scope);
            }
            batch.put(Tree::Holds, key, value.to_vec());
            carried.holds += 1;
        }
        let covered = |tag: SubjectTag, class: u16| {
            held.contains(&(tag, class)) || held.contains(&(tag, ALL_CLASSES))
        };

        // Parked and resumed erasures: as the live store has them.
        for (key, value) in decisions.of_kind(Kind::Parked) {
            batch.put(Tree::Blocked, key, value.to_vec());
            carried.parked += 1;
        }
        for (key, value) in decisions.of_kind(Kind::Resumed) {
            batch.put(Tree::Deadlines, key, value.to_vec());
            carried.parked += 1;
        }
        // What the backup's holds blocked is due now where no hold remains
        // (the live store released it; the item itself may be long done,
        // which compaction finds and drops).
        let mut requeue = Vec::new();
        scan_prefix(storage, Tree::Blocked, &[], &mut |k, _| {
            if let Some((tag, class)) = blocked_scope(k)
                && !covered(tag, class)
                && let Some((_, due)) = k.get(18..).and_then(deadlines::decode_key)
            {
                requeue.push((k.to_vec(), due));
            }
            ControlFlow::Continue(())
        })?;
        for (key, due) in requeue {
            batch.remove(Tree::Blocked, key);
            batch.put(
                Tree::Deadlines,
                deadlines::key(now.as_second(), &due),
                deadlines::value(now.as_second()),
            );
            carried.requeued += 1;
        }

        // Subjects: the events recorded since the backup.
        for (key, value) in decisions.of_kind(Kind::Subject) {
            let Some(tag) = subjects::tag_of_record_key(key) else {
                continue;
            };
            let Ok(live) = SubjectInfo::decode(tag, value) else {
                continue;
            };
            let Some(base) = updated
                .get(&tag)
                .cloned()
                .map_or_else(|| self.subject_info(&tag), |info| Ok(Some(info)))?
            else {
                // Registered after the backup: its records are not in the
                // restored store, and it registers again if it comes back.
                continue;
            };
            // Another registration (erased and registered again since), or
            // erased here: the ledger's replay decides.
            if base.state == SubjectState::Erased || live.generation != base.generation {
                continue;
            }
            let merged = SubjectInfo {
                closed_at: base.closed_at.or(live.closed_at),
                opted_out_at: base.opted_out_at.or(live.opted_out_at),
                released_at: base.released_at.max(live.released_at),
                state: match live.state {
                    SubjectState::Erased => base.state,
                    state => state,
                },
                ..base.clone()
            };
            if merged != base {
                carried.scheduled += u64::try_from(self.schedule_new_clocks(batch, &base, &merged))
                    .unwrap_or(u64::MAX);
                updated.insert(tag, merged);
                carried.subjects += 1;
            }
        }
        for (key, value) in decisions.of_kind(Kind::Release) {
            let (Some((tag, class)), Ok(at)) =
                (subjects::split_release_key(key), <[u8; 8]>::try_from(value))
            else {
                continue;
            };
            if storage.get(Tree::Subjects, key)?.is_some() {
                continue;
            }
            let known = updated.get(&tag).map_or_else(
                || self.subject_info(&tag).map(|s| s.is_some()),
                |_| Ok(true),
            )?;
            if !known {
                continue;
            }
            batch.put(Tree::Subjects, key, value.to_vec());
            let at = crate::codec::saturating_time(i64::from_be_bytes(at));
            if self.schedule_release(batch, &tag, class, at) {
                carried.scheduled += 1;
            }
        }
        Ok(carried)
    }
}
