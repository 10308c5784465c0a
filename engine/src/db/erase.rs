//! Erasure (shred), re-registration, restriction and legal holds.

use std::collections::HashMap;
use std::ops::ControlFlow;

use jiff::Timestamp;
use shredkv_crypto::SubjectTag;

use super::class::AsClass;
use super::erasure_commit::{EraseOptions, ErasureWrites, PendingErasure, SubjectErasure};
use super::{ClassEntry, Db, DbInner, subject_location};
use crate::audit::{AuditEvent, AuditHead, PendingEntry};
use crate::error::{Error, Location, Result};
use crate::holds::{self, Hold};
use crate::ledger::{self, ALL_CLASSES, ErasureReason, LedgerEntry};
use crate::records;
use crate::retention::ClockStart;
use crate::retention::deadlines::{self, Due};
use crate::storage::{Durability, Tree, WriteBatch, scan_prefix};
use crate::subjects::{self, SubjectInfo, SubjectKind, SubjectState};
use crate::vault::gate::WriteGuard;
use crate::vault::{KeyState, VaultEntry};

/// Which classes an erasure covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classes<'a> {
    /// Every class, including classes no longer in the policy.
    All,
    /// Only these classes.
    Only(&'a [&'a str]),
}

/// One scope erased by a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ErasedScope {
    /// The subject erased (the requested one, or one of its end users).
    pub subject: SubjectTag,
    /// The class erased, or `None` for every class of the subject.
    pub class: Option<String>,
    /// Data keys destroyed.
    pub keys_destroyed: usize,
}

/// One scope a request did not erase, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Retained {
    /// The subject.
    pub subject: SubjectTag,
    /// The class retained.
    pub class: String,
    /// Until when it is kept, if known (a legal hold has no end date).
    pub until: Option<Timestamp>,
    /// Why: a legal hold, or the class's legal basis.
    pub reason: String,
}

/// The answer to an erasure: what was erased now, what is retained, why.
/// Per class, it names only scopes the subject held (had keys for): a class
/// it never stored anything in is neither erased nor retained.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Receipt {
    /// The subject the request named.
    pub subject: SubjectTag,
    /// When the erasure was made durable.
    pub erased_at: Timestamp,
    /// Why it was erased.
    pub reason: ErasureReason,
    /// What was erased now.
    pub erased: Vec<ErasedScope>,
    /// What was kept.
    pub retained: Vec<Retained>,
    /// The audit chain's last entry recording this erasure (for a receipt
    /// with nothing to erase: the chain's head when it was issued).
    pub audit_head: AuditHead,
}

impl Receipt {
    /// Total data keys destroyed.
    pub fn keys_destroyed(&self) -> usize {
        self.erased.iter().map(|e| e.keys_destroyed).sum()
    }
}

/// Holds of one subject: by class number, `ALL_CLASSES` for the whole subject.
type SubjectHolds = HashMap<u16, String>;

fn hold_key(tag: &SubjectTag, class: u16) -> [u8; 18] {
    ledger::key(tag, class)
}

impl DbInner {
    /// Every hold of a subject, by class.
    pub(crate) fn holds_of(&self, tag: &SubjectTag) -> Result<SubjectHolds> {
        let mut out = HashMap::new();
        let mut failure = None;
        scan_prefix(self.storage.as_ref(), Tree::Holds, &tag.0, &mut |k, v| {
            let Some((_, class)) = ledger::split_key(k) else {
                return ControlFlow::Continue(());
            };
            match self.open_hold(tag, k, v) {
                Ok(reason) => {
                    out.insert(class, reason);
                    ControlFlow::Continue(())
                }
                Err(err) => {
                    failure = Some(err);
                    ControlFlow::Break(())
                }
            }
        })?;
        match failure {
            Some(err) => Err(err),
            None => Ok(out),
        }
    }

    /// Whether a hold covers each of `scopes` (a hold on its class or on
    /// its whole subject, as [`DbInner::hold_on`] reads them), with one
    /// batched read: a compaction page would otherwise open a read per
    /// subject.
    pub(crate) fn scopes_on_hold(&self, scopes: &[(SubjectTag, u16)]) -> Result<Vec<bool>> {
        let keys: Vec<[u8; 18]> = scopes
            .iter()
            .flat_map(|(tag, class)| [hold_key(tag, *class), hold_key(tag, ALL_CLASSES)])
            .collect();
        let refs: Vec<&[u8]> = keys.iter().map(<[u8; 18]>::as_slice).collect();
        let values = self.storage.get_many(Tree::Holds, &refs)?;
        let mut held = Vec::with_capacity(scopes.len());
        for (((tag, _), keys), values) in scopes
            .iter()
            .zip(refs.chunks_exact(2))
            .zip(values.chunks_exact(2))
        {
            let mut any = false;
            for (key, value) in keys.iter().zip(values) {
                if let Some(value) = value {
                    self.open_hold(tag, key, value)?;
                    any = true;
                }
            }
            held.push(any);
        }
        Ok(held)
    }

    /// A stored hold's reason, checked: a hold that does not open is
    /// reported, never taken as absent.
    fn open_hold(&self, tag: &SubjectTag, key: &[u8], value: &[u8]) -> Result<String> {
        let location = || {
            Box::new(Location {
                tree: "holds",
                subject: Some(*tag),
                class: None,
                key_hex: shredkv_crypto::hex::encode(key),
            })
        };
        holds::decode(value)
            .map_err(holds::ReasonError::Format)
            .and_then(|(_, reason)| self.hold_reasons.open(key, reason))
            .map_err(|err| match err {
                holds::ReasonError::Tampered => Error::Tampered {
                    location: location(),
                },
                holds::ReasonError::Format(source) => Error::Corrupt {
                    location: location(),
                    source,
                },
            })
    }

    /// Whether the subject holds anything in the class: a live (or
    /// undecodable) key in the vault under the scope's prefix. A receipt
    /// names only such scopes: a class the subject never held (or whose
    /// keys are all destroyed already) has nothing to erase or retain.
    pub(crate) fn scope_held(&self, tag: &SubjectTag, class: u16) -> Result<bool> {
        let mut held = false;
        crate::vault::layout::scan_prefix(
            self.storage.as_ref(),
            &records::scope_prefix(tag, class),
            &mut |_, slot| {
                if VaultEntry::decode(&slot.value).map_or(true, |e| e.state != KeyState::Destroyed)
                {
                    held = true;
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            },
        )?;
        Ok(held)
    }

    /// The hold covering a scope, if any (a whole-subject hold covers all).
    pub(crate) fn hold_on(holds: &SubjectHolds, class: u16) -> Option<&String> {
        holds.get(&class).or_else(|| holds.get(&ALL_CLASSES))
    }

    /// Erases `tags` (a subject and its end users) in `classes`, durably.
    /// The caller holds the scope gate's write lock over `tags`.
    pub(crate) fn erase_locked(
        &self,
        requested: SubjectTag,
        tags: &[SubjectTag],
        classes: Option<&[&ClassEntry]>,
        reason: ErasureReason,
    ) -> Result<Receipt> {
        self.erase_locked_with(requested, tags, classes, reason, EraseOptions::default())
    }

    /// [`DbInner::erase_locked`], at the time and with the receipt handling
    /// `options` give. The writes are grouped per subject so that a backend
    /// with a batch limit (etcd) can take them in chunks
    /// (`db::erasure_commit`).
    pub(crate) fn erase_locked_with(
        &self,
        requested: SubjectTag,
        tags: &[SubjectTag],
        classes: Option<&[&ClassEntry]>,
        reason: ErasureReason,
        options: EraseOptions,
    ) -> Result<Receipt> {
        // Whole seconds, as the ledger and the subject record keep it: the
        // receipt then states the very time certificates will show.
        let now = options.at.unwrap_or_else(|| self.clock.now().as_second());
        let now_ts = Timestamp::from_second(now).unwrap_or(Timestamp::UNIX_EPOCH);
        let mut groups: Vec<SubjectErasure> = Vec::new();
        let mut receipt = Receipt {
            subject: requested,
            erased_at: now_ts,
            reason,
            erased: Vec::new(),
            retained: Vec::new(),
            audit_head: AuditHead {
                seq: 0,
                hash: [0; 32],
            },
        };
        let mut erased_infos = Vec::new();
        let mut evictions: Vec<(SubjectTag, Option<u16>)> = Vec::new();

        for tag in tags {
            let Some(info) = self.subject_info(tag)? else {
                continue;
            };
            if info.state == SubjectState::Erased {
                continue;
            }
            let mut group = SubjectErasure::new(*tag);
            let batch = &mut group.logical;
            let audit = &mut group.audit;
            let holds = self.holds_of(tag)?;
            // A whole-subject erasure is done at once unless a hold covers a
            // scope not erased yet: holds over scopes already erased keep
            // nothing, and must not leave the subject half erased forever.
            let mut blocking = false;
            if classes.is_none() {
                for class in &self.classes {
                    if Self::hold_on(&holds, class.number).is_some()
                        && self
                            .scope_erased_at(tag, class.number, info.generation)?
                            .is_none()
                    {
                        blocking = true;
                        break;
                    }
                }
            }
            if classes.is_none() && !blocking {
                let ids = self
                    .vault
                    .destroy_prefix(&tag.0, now, &mut group.tombstones)?;
                let entry = LedgerEntry {
                    erased_at: now,
                    generation: info.generation,
                    reason,
                    keys_destroyed: u32::try_from(ids.len()).unwrap_or(u32::MAX),
                    epoch: self.vault.current_epoch().0,
                    reopened_at: None,
                };
                batch.put(Tree::Ledger, ledger::key(tag, ALL_CLASSES), entry.encode());
                batch.put(
                    Tree::Deadlines,
                    deadlines::key(now, &Due::RemoveCiphertext(*tag, ALL_CLASSES)),
                    deadlines::value(now),
                );
                let erased = SubjectInfo {
                    state: SubjectState::Erased,
                    erased_at: Some(now_ts),
                    ..info
                };
                batch.put(Tree::Subjects, subjects::record_key(tag), erased.encode());
                audit.push(PendingEntry::new(
                    AuditEvent::KeysDestroyed,
                    Some(*tag),
                    None,
                    format!(
                        "{} keys destroyed; all classes; {}",
                        ids.len(),
                        reason.name()
                    ),
                ));
                receipt.erased.push(ErasedScope {
                    subject: *tag,
                    class: None,
                    keys_destroyed: ids.len(),
                });
                erased_infos.push(erased);
                evictions.push((*tag, None));
                groups.push(group);
                continue;
            }
            let all: Vec<&ClassEntry>;
            let selected: &[&ClassEntry] = match classes {
                Some(list) => list,
                None => {
                    all = self.classes.iter().collect();
                    &all
                }
            };
            for class in selected {
                if self
                    .scope_erased_at(tag, class.number, info.generation)?
                    .is_some()
                {
                    continue;
                }
                if let Some(hold) = Self::hold_on(&holds, class.number) {
                    audit.push(PendingEntry::new(
                        AuditEvent::ErasureBlocked,
                        Some(*tag),
                        Some(class.number),
                        format!("{} blocked by a legal hold", reason.name()),
                    ));
                    if self.scope_held(tag, class.number)? {
                        receipt.retained.push(Retained {
                            subject: *tag,
                            class: class.policy.name().to_string(),
                            until: None,
                            reason: format!("legal hold: {hold}"),
                        });
                    }
                    // Parked, not dropped: releasing the hold carries it out
                    // before the release returns, with its own reason (and,
                    // for a whole subject, ends with the subject erased).
                    let due = Due::ResumeErasure {
                        tag: *tag,
                        class: class.number,
                        reason,
                        whole: classes.is_none(),
                    };
                    batch.put(
                        Tree::Blocked,
                        crate::retention::compaction::blocked_key(
                            tag,
                            class.number,
                            &deadlines::key(now, &due),
                        ),
                        Vec::new(),
                    );
                    continue;
                }
                let prefix = records::scope_prefix(tag, class.number);
                let ids = self
                    .vault
                    .destroy_prefix(&prefix, now, &mut group.tombstones)?;
                let entry = LedgerEntry {
                    erased_at: now,
                    generation: info.generation,
                    reason,
                    keys_destroyed: u32::try_from(ids.len()).unwrap_or(u32::MAX),
                    epoch: self.vault.current_epoch().0,
                    reopened_at: None,
                };
                batch.put(Tree::Ledger, ledger::key(tag, class.number), entry.encode());
                batch.put(
                    Tree::Deadlines,
                    deadlines::key(now, &Due::RemoveCiphertext(*tag, class.number)),
                    deadlines::value(now),
                );
                audit.push(PendingEntry::new(
                    AuditEvent::KeysDestroyed,
                    Some(*tag),
                    Some(class.number),
                    format!(
                        "{} keys destroyed; class {}; {}",
                        ids.len(),
                        class.policy.name(),
                        reason.name()
                    ),
                ));
                // Erased all the same (the ledger refuses the scope from now
                // on), but a receipt names only what the subject held.
                if !ids.is_empty() {
                    receipt.erased.push(ErasedScope {
                        subject: *tag,
                        class: Some(class.policy.name().to_string()),
                        keys_destroyed: ids.len(),
                    });
                }
                evictions.push((*tag, Some(class.number)));
            }
            groups.push(group);
        }
        if groups.iter().all(|g| g.audit.is_empty()) {
            // Nothing left to erase: a retry of an erasure that landed gets
            // that erasure's receipt, if the ledger still says what it says
            // (a hold released since, say, erased what it had retained).
            if let Some(stored) = options.answer_retry_with {
                let as_recorded = PendingErasure {
                    erased_at: stored.receipt.erased_at.as_second(),
                    reason: stored.receipt.reason,
                    classes: stored.classes.clone(),
                    tags: tags.to_vec(),
                    listed: true,
                    paging: None,
                };
                let now_said = self.receipt_from_ledger(requested, &as_recorded)?;
                // Every scope the receipt names is still erased as it says,
                // and nothing is retained. The ledger keeps whole seconds,
                // so it may also show scopes another erasure reached in the
                // same second (an end user's own shred): those are not this
                // request's, and do not make its receipt stale.
                let now_erased: std::collections::HashSet<&ErasedScope> =
                    now_said.erased.iter().collect();
                let confirmed = now_said.retained.is_empty()
                    && stored
                        .receipt
                        .erased
                        .iter()
                        .all(|scope| now_erased.contains(scope));
                if confirmed {
                    return Ok(stored.receipt);
                }
            }
            receipt.audit_head = self.audit.head(self.storage.as_ref())?;
            return Ok(receipt);
        }
        let plan = ErasureWrites {
            requested,
            tags,
            classes: classes.map(|list| list.iter().map(|c| c.number).collect()),
            reason,
            erased_at: now_ts,
            groups,
        };
        // Durable before returning: G1.
        receipt.audit_head = self
            .commit_erasure(plan, options.keep_receipt.then_some(&receipt))
            .inspect_err(|_| self.forget_after_failure(tags))?;
        for (tag, class) in evictions {
            self.vault.evict_subject(&tag, class);
            self.forget_live_scopes(&tag, class);
        }
        for info in erased_infos {
            self.cache_subject(info);
        }
        Ok(receipt)
    }

    /// Erases every scope of the classes the policy no longer has (and does
    /// not rename), audited with ledger reason `ClassRemoved`, then forgets
    /// their names (meta `retired_class/<number>` keeps each for reports).
    /// Subjects go in pages, each durable before the next, and a page in as
    /// many batches as the backend's batch limit needs (etcd's
    /// `--max-txn-ops`); interrupted, the next open finds the class still
    /// numbered, with live keys left, and goes on.
    pub(crate) fn retire_classes(
        &self,
        retiring: &[(String, u16)],
        now_ts: Timestamp,
    ) -> Result<()> {
        /// Subjects erased per batch.
        const RETIRE_PAGE: usize = 256;
        let now = now_ts.as_second();
        for (name, number) in retiring {
            let mut tags = std::collections::BTreeSet::new();
            crate::vault::layout::scan_all(self.storage.as_ref(), &mut |tree, k, v| {
                if let Some(id) = crate::vault::layout::id_at(tree, k)
                    && id.class == *number
                    && crate::vault::VaultEntry::decode(v)
                        .map_or(true, |e| e.state == crate::vault::KeyState::Active)
                {
                    tags.insert(id.subject);
                }
                ControlFlow::Continue(())
            })?;
            // Scopes an interrupted retirement left part-way, with the keys
            // it destroyed so far. One whose every key went before the
            // interruption has no live key left, but still its ledger entry
            // to write.
            let counts = self.retirement_counts(*number, name)?;
            tags.extend(counts.keys().copied());
            let tags: Vec<SubjectTag> = tags.into_iter().collect();
            let mut scopes = 0usize;
            for page in tags.chunks(RETIRE_PAGE) {
                let _exclusive = self.gate.write(page);
                let mut pending = RetireBatch::default();
                for tag in page {
                    let prefix = records::scope_prefix(tag, *number);
                    let mut tombstones = WriteBatch::new();
                    let ids = self.vault.destroy_prefix(&prefix, now, &mut tombstones)?;
                    // Keys of this scope destroyed before an interruption.
                    let progress_key = retiring_key(*number, tag);
                    let earlier = counts.get(tag).copied().unwrap_or(0);
                    let destroyed =
                        earlier.saturating_add(u32::try_from(ids.len()).unwrap_or(u32::MAX));
                    // A damaged subject record does not stop the erasure.
                    let generation = self
                        .subject_info(tag)
                        .ok()
                        .flatten()
                        .map_or(0, |info| info.generation);
                    let entry = LedgerEntry {
                        erased_at: now,
                        generation,
                        reason: ErasureReason::ClassRemoved,
                        keys_destroyed: destroyed,
                        epoch: self.vault.current_epoch().0,
                        reopened_at: None,
                    };
                    let mut own = WriteBatch::new();
                    own.put(Tree::Ledger, ledger::key(tag, *number), entry.encode());
                    own.put(
                        Tree::Deadlines,
                        deadlines::key(now, &Due::RemoveCiphertext(*tag, *number)),
                        deadlines::value(now),
                    );
                    let audit = PendingEntry::new(
                        AuditEvent::KeysDestroyed,
                        Some(*tag),
                        Some(*number),
                        format!("{destroyed} keys destroyed; class {name} removed from the policy"),
                    );
                    // A scope split over batches ends by removing its count.
                    let split = self
                        .retire_room()
                        .is_some_and(|room| tombstones.ops.len() + own.ops.len() + 2 > room);
                    if earlier > 0 || split {
                        own.remove(Tree::Meta, progress_key.clone());
                    }
                    // The subject's ledger entry, deadline, count and audit entry.
                    let own_cost = own.ops.len() + 1;
                    if let Some(room) = self.retire_room() {
                        if !pending.is_empty()
                            && pending.cost() + tombstones.ops.len() + own_cost > room
                        {
                            self.commit_retired(&mut pending, *number, now_ts)?;
                        }
                        // One scope with more keys than a batch holds: its
                        // tombstones go first, in batches of their own, each
                        // with the count destroyed so far; its ledger entry
                        // follows with the last of them, counting every one.
                        // The class is no longer in the policy, so nothing
                        // reads the scope meanwhile, and an open after a
                        // crash finds the scope by its count and goes on.
                        let mut so_far = earlier;
                        while tombstones.ops.len() + own_cost > room {
                            let take = room.saturating_sub(1).max(1).min(tombstones.ops.len());
                            let rest = tombstones.ops.split_off(take);
                            let mut chunk = std::mem::replace(
                                &mut tombstones,
                                WriteBatch {
                                    ops: rest,
                                    neighbour_runs: Vec::new(),
                                },
                            );
                            let keys = crate::vault::tombstones_in(&chunk.ops);
                            so_far = so_far.saturating_add(u32::try_from(keys).unwrap_or(u32::MAX));
                            chunk.put(
                                Tree::Meta,
                                progress_key.clone(),
                                so_far.to_be_bytes().to_vec(),
                            );
                            self.audit.commit(
                                self.storage.as_ref(),
                                chunk,
                                &[],
                                now_ts,
                                Durability::Durable,
                            )?;
                        }
                    }
                    pending.batch.ops.extend(tombstones.ops);
                    pending.batch.ops.extend(own.ops);
                    pending.audit.push(audit);
                    pending.tags.push(*tag);
                }
                self.commit_retired(&mut pending, *number, now_ts)?;
                scopes += page.len();
            }
            let mut class_key = crate::db::meta::CLASS_PREFIX.to_vec();
            class_key.extend_from_slice(name.as_bytes());
            let mut retired_key = crate::db::meta::RETIRED_CLASS_PREFIX.to_vec();
            retired_key.extend_from_slice(&number.to_be_bytes());
            let mut batch = WriteBatch::new();
            batch.remove(Tree::Meta, class_key);
            batch.remove(Tree::Meta, crate::db::retiring_class_key(*number));
            batch.put(Tree::Meta, retired_key, name.as_bytes().to_vec());
            let entry = PendingEntry::new(
                AuditEvent::PolicyApplied,
                None,
                None,
                format!(
                    "class {name} (#{number}) is no longer in the policy: retired, {scopes} scopes erased"
                ),
            );
            self.audit.commit(
                self.storage.as_ref(),
                batch,
                &[entry],
                now_ts,
                Durability::Durable,
            )?;
        }
        Ok(())
    }

    /// The scopes of the retiring class `number` (named `class`) that an
    /// interrupted retirement left part-way, each with the keys it
    /// destroyed there so far.
    fn retirement_counts(&self, number: u16, class: &str) -> Result<HashMap<SubjectTag, u32>> {
        let prefix = [crate::db::meta::RETIRING_PREFIX, &number.to_be_bytes()].concat();
        let mut counts = HashMap::new();
        let mut damaged = None;
        scan_prefix(self.storage.as_ref(), Tree::Meta, &prefix, &mut |k, v| {
            let Some(tag) = k
                .get(prefix.len()..)
                .and_then(|t| <[u8; shredkv_crypto::SUBJECT_TAG_LEN]>::try_from(t).ok())
                .map(SubjectTag)
            else {
                return ControlFlow::Continue(());
            };
            match <[u8; 4]>::try_from(v) {
                Ok(count) => {
                    counts.insert(tag, u32::from_be_bytes(count));
                    ControlFlow::Continue(())
                }
                Err(_) => {
                    damaged = Some((tag, v.len()));
                    ControlFlow::Break(())
                }
            }
        })?;
        if let Some((tag, got)) = damaged {
            return Err(Error::Corrupt {
                location: Box::new(Location {
                    tree: "meta",
                    subject: Some(tag),
                    class: Some(class.to_string()),
                    key_hex: format!("class retirement count of {}", tag.to_hex()),
                }),
                source: shredkv_crypto::FormatError::Truncated {
                    what: "class retirement count",
                    needed: 4,
                    got,
                },
            });
        }
        Ok(counts)
    }

    /// Ops one batch of a class retirement may hold on a backend with a
    /// batch limit, less room for the audit chain's own writes.
    fn retire_room(&self) -> Option<usize> {
        /// Room kept for writes that are not per subject (the audit head).
        const OWN_OPS: usize = 16;
        self.storage
            .max_batch_ops()
            .map(|limit| limit.saturating_sub(OWN_OPS).max(4))
    }

    /// Commits the subjects gathered in `pending` (their tombstones, ledger
    /// entries, deadlines and audit entries) durably, then forgets their
    /// cached keys of class `number`.
    fn commit_retired(
        &self,
        pending: &mut RetireBatch,
        number: u16,
        now_ts: Timestamp,
    ) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let RetireBatch { batch, audit, tags } = std::mem::take(pending);
        self.audit.commit(
            self.storage.as_ref(),
            batch,
            &audit,
            now_ts,
            Durability::Durable,
        )?;
        for tag in &tags {
            self.vault.evict_subject(tag, Some(number));
            self.forget_live_scopes(tag, Some(number));
        }
        Ok(())
    }

    /// The classes `classes` names (`None`: every class).
    fn selected_classes(&self, classes: Classes<'_>) -> Result<Option<Vec<&ClassEntry>>> {
        match classes {
            Classes::All => Ok(None),
            Classes::Only(names) => names
                .iter()
                .map(|n| self.class(n))
                .collect::<Result<_>>()
                .map(Some),
        }
    }

    /// A subject and, for an account, its end users.
    pub(crate) fn with_end_users(
        &self,
        tag: &SubjectTag,
        info: &SubjectInfo,
    ) -> Result<Vec<SubjectTag>> {
        let mut tags = vec![*tag];
        if info.kind == SubjectKind::Account {
            tags.extend(self.children(tag)?);
        }
        Ok(tags)
    }

    /// Takes the gate's write lock over a subject and, for an account, its
    /// end users, listed again under the lock: an end user registered
    /// between the first listing and the lock is in the returned set, and
    /// none can be registered while the guard is held (registration takes
    /// its account's write lock). If the list grew, the lock is taken again
    /// over the larger set (its stripes may differ).
    pub(crate) fn lock_with_end_users(
        &self,
        tag: &SubjectTag,
        info: &SubjectInfo,
    ) -> Result<(Vec<SubjectTag>, WriteGuard<'_>)> {
        let mut tags = self.with_end_users(tag, info)?;
        loop {
            let guard = self.gate.write(&tags);
            let listed = self.with_end_users(tag, info)?;
            let before = tags.len();
            for t in listed {
                if !tags.contains(&t) {
                    tags.push(t);
                }
            }
            if tags.len() == before {
                return Ok((tags, guard));
            }
        }
    }

    /// Rewrites a subject's record under the gate's write lock over the
    /// subject and `also` (e.g. its account, whose state `update` checks).
    fn set_state(
        &self,
        tag: &SubjectTag,
        also: Option<SubjectTag>,
        update: impl FnOnce(SubjectInfo) -> Result<SubjectInfo>,
        event: AuditEvent,
        detail: &str,
    ) -> Result<()> {
        let mut locked = vec![*tag];
        locked.extend(also);
        let _exclusive = self.gate.write(&locked);
        let info = self
            .subject_info(tag)?
            .ok_or(Error::UnknownSubject { subject: *tag })?;
        let updated = update(info)?;
        let mut batch = WriteBatch::new();
        batch.put(Tree::Subjects, subjects::record_key(tag), updated.encode());
        let entry = PendingEntry::new(event, Some(*tag), None, detail);
        self.audit
            .commit(
                self.storage.as_ref(),
                batch,
                &[entry],
                self.clock.now(),
                Durability::Durable,
            )
            .inspect_err(|_| self.forget_after_failure(&[*tag]))?;
        self.cache_subject(updated);
        Ok(())
    }
}

impl Db {
    /// Erases a subject (all classes, or some) by destroying its keys; for
    /// an account, its end users too. Durable before it returns. Scopes
    /// under a legal hold are retained and listed in the receipt.
    ///
    /// **Retries.** The same request again, with nothing left to erase,
    /// writes nothing and answers with the receipt of the erasure that did
    /// it: a retry after a lost answer (a failed sync, a timeout talking to
    /// etcd) gets the receipt it missed, and the erasure has one ledger and
    /// one audit entry. If that erasure's outcome changed since (a legal hold
    /// it retained was released, erasing the rest) the answer is an empty
    /// receipt.
    ///
    /// On a backend with a batch limit (etcd), an erasure larger than one
    /// batch lands in chunks, still durable before it returns.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let config = shredkv::Config::new(dir.path().join("store"))
    /// #     .key_file(dir.path().join("keys")).maintenance_every(None);
    /// # let db = shredkv::Db::open(config)?;
    /// use shredkv::Classes;
    /// db.register_account("acct-42")?;
    /// db.register_end_user("user-7", "acct-42")?;
    /// db.put("user-7", "message_content", b"m1", b"see you at noon")?;
    /// // Durable on return; the account's end users go with it.
    /// let receipt = db.shred("acct-42", Classes::All)?;
    /// assert!(receipt.keys_destroyed() > 0);
    /// assert!(db.get("user-7", "message_content", b"m1").unwrap_err().is_erased());
    /// // Retried (say, its answer was lost): the same receipt, nothing written.
    /// assert_eq!(db.shred("acct-42", Classes::All)?, receipt);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::UnknownSubject`], [`Error::UnknownClass`] (nothing was
    /// erased); storage failures: the erasure may have landed all the same
    /// (its answer lost) or, in chunks, be decided but unfinished (its
    /// subjects are then refused as erased). Retry until it succeeds: the
    /// retry finishes it (so does the next open) and returns its receipt.
    pub fn shred(&self, subject: &str, classes: Classes<'_>) -> Result<Receipt> {
        self.erase(self.tag_of(subject)?, classes, ErasureReason::Operator)
    }

    /// [`Db::shred`] of several subjects in one durable commit: one fsync
    /// for an erasure that spans many subjects (a purpose held by hundreds
    /// of users), all or nothing. Returns one receipt per distinct subject,
    /// in the order given; each lists what was erased of that subject (and,
    /// for an account, of its end users). Every subject is checked before
    /// anything is erased. The commit holds every named subject's lock and
    /// writes every key tombstone in one batch: for thousands of subjects,
    /// call it in chunks.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let config = shredkv::Config::new(dir.path().join("store"))
    /// #     .key_file(dir.path().join("keys")).maintenance_every(None);
    /// # let db = shredkv::Db::open(config)?;
    /// use shredkv::Classes;
    /// for account in ["acct-1", "acct-2", "acct-3"] {
    ///     db.register_account(account)?;
    ///     db.put(account, "marketing_contacts", b"newsletter", b"weekly")?;
    /// }
    /// let receipts = db.shred_each(&["acct-1", "acct-3"], Classes::Only(&["marketing_contacts"]))?;
    /// assert_eq!(receipts.len(), 2);
    /// assert!(db.get("acct-1", "marketing_contacts", b"newsletter").is_err());
    /// assert!(db.get("acct-2", "marketing_contacts", b"newsletter")?.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Db::shred`] (an unknown subject or class: nothing was erased).
    pub fn shred_each(&self, subjects: &[&str], classes: Classes<'_>) -> Result<Vec<Receipt>> {
        let inner = &self.inner;
        let mut requested: Vec<(SubjectTag, SubjectInfo)> = Vec::new();
        for id in subjects {
            let tag = self.tag_of(id)?;
            let info = inner
                .subject_info(&tag)?
                .ok_or(Error::UnknownSubject { subject: tag })?;
            if !requested.iter().any(|(t, _)| *t == tag) {
                requested.push((tag, info));
            }
        }
        let Some(&(first, _)) = requested.first() else {
            return Ok(Vec::new());
        };
        let selected = inner.selected_classes(classes)?;
        // Every subject with its end users, re-listed under the lock until
        // no end user registered in between is missing (as for one subject).
        let family_of = |requested: &[(SubjectTag, SubjectInfo)]| -> Result<Vec<Vec<SubjectTag>>> {
            requested
                .iter()
                .map(|(tag, info)| inner.with_end_users(tag, info))
                .collect()
        };
        let mut families = family_of(&requested)?;
        let (tags, _exclusive) = loop {
            let mut tags: Vec<SubjectTag> = Vec::new();
            let mut seen: std::collections::HashSet<SubjectTag> = std::collections::HashSet::new();
            for t in families.iter().flatten() {
                if seen.insert(*t) {
                    tags.push(*t);
                }
            }
            let guard = inner.gate.write(&tags);
            let relisted = family_of(&requested)?;
            if relisted == families {
                break (tags, guard);
            }
            drop(guard);
            families = relisted;
        };
        let combined =
            inner.erase_locked(first, &tags, selected.as_deref(), ErasureReason::Operator)?;
        Ok(requested
            .iter()
            .zip(&families)
            .map(|((tag, _), family)| {
                (tag, family.iter().collect::<std::collections::HashSet<_>>())
            })
            .map(|(tag, family)| Receipt {
                subject: *tag,
                erased_at: combined.erased_at,
                reason: combined.reason,
                erased: combined
                    .erased
                    .iter()
                    .filter(|e| family.contains(&e.subject))
                    .cloned()
                    .collect(),
                retained: combined
                    .retained
                    .iter()
                    .filter(|r| family.contains(&r.subject))
                    .cloned()
                    .collect(),
                audit_head: combined.audit_head,
            })
            .collect())
    }

    pub(crate) fn erase(
        &self,
        tag: SubjectTag,
        classes: Classes<'_>,
        reason: ErasureReason,
    ) -> Result<Receipt> {
        let inner = &self.inner;
        let info = inner
            .subject_info(&tag)?
            .ok_or(Error::UnknownSubject { subject: tag })?;
        let selected = inner.selected_classes(classes)?;
        let (tags, _exclusive) = inner.lock_with_end_users(&tag, &info)?;
        // A chunked erasure of this subject that did not finish: finish it.
        if let Some(marker) = inner.pending_erasure(&tag)? {
            return inner.finish_pending_erasure(tag, marker);
        }
        // A retry of an erasure that landed (its answer lost) is answered
        // with that erasure's receipt, writing nothing.
        let asked: Option<Vec<u16>> = selected
            .as_deref()
            .map(|list| list.iter().map(|c| c.number).collect());
        let answer_retry_with = inner.stored_receipt(&tag)?.filter(|stored| {
            stored.generation == info.generation
                && stored.classes == asked
                && stored.receipt.reason == reason
        });
        inner.erase_locked_with(
            tag,
            &tags,
            selected.as_deref(),
            reason,
            EraseOptions {
                at: None,
                keep_receipt: true,
                answer_retry_with,
            },
        )
    }

    /// Registers an erased subject again, with new keys: writes succeed
    /// again, and nothing erased comes back.
    ///
    /// # Errors
    /// [`Error::UnknownSubject`]; [`Error::SubjectConflict`] if nothing of
    /// the subject was erased, or its account is erased; [`Error::Closed`]
    /// for an end user whose account is closed.
    pub fn re_register(&self, subject: &str) -> Result<()> {
        let inner = &self.inner;
        let tag = self.tag_of(subject)?;
        let info = inner
            .subject_info(&tag)?
            .ok_or(Error::UnknownSubject { subject: tag })?;
        let mut erased_scopes = 0usize;
        scan_prefix(inner.storage.as_ref(), Tree::Ledger, &tag.0, &mut |_, v| {
            if LedgerEntry::decode(v).is_ok_and(|e| e.erases(info.generation)) {
                erased_scopes += 1;
            }
            ControlFlow::Continue(())
        })?;
        if info.state != SubjectState::Erased && erased_scopes == 0 {
            return Err(Error::SubjectConflict {
                subject: tag,
                detail: "is not erased; there is nothing to re-register".into(),
            });
        }
        // Releases of the erased generation do not carry over to the new one.
        let release_prefix = subjects::release_key(&tag, 0);
        let mut stale = WriteBatch::new();
        scan_prefix(
            inner.storage.as_ref(),
            Tree::Subjects,
            release_prefix.get(..17).unwrap_or_default(),
            &mut |k, _| {
                stale.remove(Tree::Subjects, k);
                ControlFlow::Continue(())
            },
        )?;
        if !stale.is_empty() {
            inner.storage.apply(&stale, Durability::Durable)?;
        }
        // The account is checked under its write lock, as at registration:
        // an end user cannot come back under an account being erased or
        // closed (nothing would schedule its erasure).
        inner.set_state(
            &tag,
            info.parent,
            |info| {
                if let Some(parent) = &info.parent
                    && let Some(parent_info) = inner.subject_info(parent)?
                {
                    if parent_info.state == SubjectState::Erased {
                        return Err(Error::SubjectConflict {
                            subject: tag,
                            detail: format!(
                                "its account {parent} is erased; re-register the account first"
                            ),
                        });
                    }
                    if let Some(closed_at) = parent_info.closed_at {
                        return Err(Error::Closed {
                            subject: *parent,
                            closed_at,
                        });
                    }
                }
                Ok(SubjectInfo {
                    state: SubjectState::Active,
                    generation: info.generation.saturating_add(1),
                    erased_at: None,
                    closed_at: None,
                    opted_out_at: None,
                    released_at: None,
                    ..info
                })
            },
            AuditEvent::ReRegistered,
            "re-registered with new keys",
        )
    }

    /// Registers one erased class of a subject again, with new keys: writes
    /// to that class succeed again, the rest of the subject is untouched,
    /// and nothing erased comes back (the erased keys stay destroyed, the
    /// erasure stays in the ledger and on certificates, marked re-opened).
    /// For an account, only the account's own scope comes back, as with
    /// [`Db::re_register`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let config = shredkv::Config::new(dir.path().join("store"))
    /// #     .key_file(dir.path().join("keys")).maintenance_every(None);
    /// # let db = shredkv::Db::open(config)?;
    /// use shredkv::Classes;
    /// db.register_account("acct-42")?;
    /// db.put("acct-42", "usage_records", b"u1", b"3 calls")?;
    /// db.put("acct-42", "account_profile", b"email", b"a@example.com")?;
    /// db.shred("acct-42", Classes::Only(&["usage_records"]))?;
    /// assert!(db.put("acct-42", "usage_records", b"u2", b"1 call").unwrap_err().is_erased());
    /// db.re_register_class("acct-42", "usage_records")?;
    /// db.put("acct-42", "usage_records", b"u2", b"1 call")?;
    /// assert!(db.get("acct-42", "usage_records", b"u1")?.is_none()); // erased stays erased
    /// assert!(db.get("acct-42", "account_profile", b"email")?.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::UnknownSubject`], [`Error::UnknownClass`];
    /// [`Error::SubjectConflict`] if the class is not erased, the whole
    /// subject is (use [`Db::re_register`]), its account is erased, the
    /// class's retention clock has started (an opt-out, a release), or an
    /// erasure of the subject waits on a legal hold; [`Error::Closed`] if
    /// the subject or its account is closed.
    pub fn re_register_class(&self, subject: &str, class: impl AsClass) -> Result<()> {
        let inner = &self.inner;
        let tag = self.tag_of(subject)?;
        let class = inner.resolve(&class)?;
        let first = inner
            .subject_info(&tag)?
            .ok_or(Error::UnknownSubject { subject: tag })?;
        let mut locked = vec![tag];
        locked.extend(first.parent);
        // Under the subject's write lock: no erasure of the class runs
        // meanwhile, and no write sees the scope half re-opened.
        let _exclusive = inner.gate.write(&locked);
        let info = inner
            .subject_info(&tag)?
            .ok_or(Error::UnknownSubject { subject: tag })?;
        let name = class.policy.name();
        let conflict = |detail: String| Error::SubjectConflict {
            subject: tag,
            detail,
        };
        if info.state == SubjectState::Erased {
            return Err(conflict(format!(
                "is erased as a whole; re-register the subject (`Db::re_register`), not class {name}"
            )));
        }
        if let Some(closed_at) = inner.closure_of(&info)? {
            return Err(Error::Closed {
                subject: info
                    .parent
                    .filter(|_| info.closed_at.is_none())
                    .unwrap_or(tag),
                closed_at,
            });
        }
        if let Some(parent) = &info.parent
            && inner
                .subject_info(parent)?
                .is_some_and(|p| p.state == SubjectState::Erased)
        {
            return Err(conflict(format!(
                "its account {parent} is erased; re-register the account first"
            )));
        }
        // A class whose retention clock runs (an opt-out, a release; a
        // closure was refused above) is being erased on schedule: new data
        // in it would only wait for the same deadline.
        let clock_started = match class.policy.clock() {
            ClockStart::MarketingOptOut => info.opted_out_at,
            ClockStart::ManualRelease if info.released_at.is_some() => {
                inner.released_at(&tag, class.number)?
            }
            _ => None,
        };
        if let Some(at) = clock_started {
            return Err(conflict(format!(
                "the retention clock of class {name} started at {at} (an opt-out or a release); it cannot hold data again"
            )));
        }
        // An erasure parked behind a legal hold ends, for a whole subject,
        // with every class erased: it would take the new data with it.
        let mut parked = false;
        scan_prefix(
            inner.storage.as_ref(),
            Tree::Blocked,
            &tag.0,
            &mut |_, _| {
                parked = true;
                ControlFlow::Break(())
            },
        )?;
        if parked {
            return Err(conflict(
                "an erasure of the subject waits on a legal hold; re-register the class after the hold's release has carried it out".into(),
            ));
        }
        let Some(entry) = inner
            .ledger_entry(&tag, class.number)?
            .filter(|entry| entry.erases(info.generation))
        else {
            return Err(conflict(format!(
                "class {name} is not erased; there is nothing to re-register"
            )));
        };
        let now = inner.clock.now();
        let reopened = LedgerEntry {
            reopened_at: Some(now.as_second()),
            ..entry
        };
        let mut batch = WriteBatch::new();
        batch.put(
            Tree::Ledger,
            ledger::key(&tag, class.number),
            reopened.encode(),
        );
        let audit = PendingEntry::new(
            AuditEvent::ReRegistered,
            Some(tag),
            Some(class.number),
            format!("class {name} re-registered with new keys"),
        );
        inner
            .audit
            .commit(
                inner.storage.as_ref(),
                batch,
                &[audit],
                now,
                Durability::Durable,
            )
            .inspect_err(|_| inner.forget_after_failure(&[tag]))?;
        Ok(())
    }

    /// Restricts a subject's processing: its data can be exported, not read
    /// or written, until [`Db::lift_restriction`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let config = shredkv::Config::new(dir.path().join("store"))
    /// #     .key_file(dir.path().join("keys")).maintenance_every(None);
    /// # let db = shredkv::Db::open(config)?;
    /// db.register_account("acct-42")?;
    /// db.put("acct-42", "account_profile", b"email", b"a@example.com")?;
    /// db.restrict("acct-42")?; // a subject's objection: kept, exportable, not used
    /// assert!(db.get("acct-42", "account_profile", b"email").unwrap_err().is_restricted());
    /// assert_eq!(db.export("acct-42")?.record_count(), 1);
    /// db.lift_restriction("acct-42")?;
    /// assert!(db.get("acct-42", "account_profile", b"email")?.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::UnknownSubject`], [`Error::Erased`], storage failures.
    pub fn restrict(&self, subject: &str) -> Result<()> {
        let tag = self.tag_of(subject)?;
        self.inner.set_state(
            &tag,
            None,
            |info| match info.state {
                SubjectState::Erased => Err(info.erased_error()),
                _ => Ok(SubjectInfo {
                    state: SubjectState::Restricted,
                    ..info
                }),
            },
            AuditEvent::Restricted,
            "processing restricted",
        )
    }

    /// Lifts a restriction.
    ///
    /// # Errors
    /// [`Error::UnknownSubject`], [`Error::Erased`], storage failures.
    pub fn lift_restriction(&self, subject: &str) -> Result<()> {
        let tag = self.tag_of(subject)?;
        self.inner.set_state(
            &tag,
            None,
            |info| match info.state {
                SubjectState::Erased => Err(info.erased_error()),
                _ => Ok(SubjectInfo {
                    state: SubjectState::Active,
                    ..info
                }),
            },
            AuditEvent::RestrictionLifted,
            "restriction lifted",
        )
    }

    /// Places a legal hold over a subject (every class, or one). While it
    /// stands, nothing it covers is erased: not by shred, deletion request,
    /// retention expiry or compaction.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let config = shredkv::Config::new(dir.path().join("store"))
    /// #     .key_file(dir.path().join("keys")).maintenance_every(None);
    /// # let db = shredkv::Db::open(config)?;
    /// use shredkv::Classes;
    /// db.register_account("acct-42")?;
    /// db.put("acct-42", "invoices", b"inv-1", b"EUR 12.00")?;
    /// db.place_hold("acct-42", Some("invoices"), "case 2026-117")?;
    /// let receipt = db.shred("acct-42", Classes::All)?; // the held class is retained
    /// assert_eq!(receipt.retained.len(), 1);
    /// assert!(db.get("acct-42", "invoices", b"inv-1")?.is_some());
    /// assert_eq!(db.holds()?.len(), 1);
    /// // The release carries out the erasure the hold blocked before it returns.
    /// assert!(db.release_hold("acct-42", Some("invoices"))?);
    /// assert!(db.get("acct-42", "invoices", b"inv-1").is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::UnknownSubject`], [`Error::UnknownClass`], an empty reason,
    /// storage failures.
    pub fn place_hold(&self, subject: &str, class: Option<&str>, reason: &str) -> Result<()> {
        let inner = &self.inner;
        if reason.trim().is_empty() {
            return Err(Error::InvalidArgument {
                what: "hold reason",
                detail: "a legal hold needs a reason (a case or request reference)".into(),
            });
        }
        let tag = self.tag_of(subject)?;
        let class_number = match class {
            Some(name) => inner.class(name)?.number,
            None => ALL_CLASSES,
        };
        let _exclusive = inner.gate.write(&[tag]);
        let info = inner
            .subject_info(&tag)?
            .ok_or(Error::UnknownSubject { subject: tag })?;
        if info.state == SubjectState::Erased {
            return Err(info.erased_error());
        }
        let now = inner.clock.now();
        let mut batch = WriteBatch::new();
        let key = hold_key(&tag, class_number);
        let sealed = inner
            .hold_reasons
            .seal(&key, reason)
            .map_err(|_| Error::InvalidArgument {
                what: "hold reason",
                detail: "too long".into(),
            })?;
        batch.put(Tree::Holds, key, holds::encode(now.as_second(), &sealed));
        let entry = PendingEntry::new(
            AuditEvent::HoldPlaced,
            Some(tag),
            (class_number != ALL_CLASSES).then_some(class_number),
            // The reason is free text: it stays in `holds` (gone with the
            // release), never in the permanent audit log.
            "hold placed",
        );
        inner.audit.commit(
            inner.storage.as_ref(),
            batch,
            &[entry],
            now,
            Durability::Durable,
        )
    }

    /// Releases a legal hold. Returns whether one existed. The erasures it
    /// parked (shreds, deletion requests) are carried out before this
    /// returns; what else it blocked (expiries, re-keys) becomes due at the
    /// next compaction (reads already end at those deadlines).
    ///
    /// # Errors
    /// [`Error::UnknownClass`], storage failures (a resumed erasure that
    /// fails stays due, and compaction retries it; the hold is released).
    pub fn release_hold(&self, subject: &str, class: Option<&str>) -> Result<bool> {
        let inner = &self.inner;
        let tag = self.tag_of(subject)?;
        let class_number = match class {
            Some(name) => inner.class(name)?.number,
            None => ALL_CLASSES,
        };
        let now = inner.clock.now();
        let erasures = {
            let _exclusive = inner.gate.write(&[tag]);
            let key = hold_key(&tag, class_number);
            if inner.storage.get(Tree::Holds, &key)?.is_none() {
                return Ok(false);
            }
            let mut batch = WriteBatch::new();
            batch.remove(Tree::Holds, key);
            // What the hold blocked is due again at once; its erasures
            // are carried out below, once the gate is free.
            let (requeued, erasures) =
                inner.requeue_blocked(&tag, class_number, now.as_second(), &mut batch)?;
            let entry = PendingEntry::new(
                AuditEvent::HoldReleased,
                Some(tag),
                (class_number != ALL_CLASSES).then_some(class_number),
                format!("hold released; {requeued} blocked erasures due again"),
            );
            inner.audit.commit(
                inner.storage.as_ref(),
                batch,
                &[entry],
                now,
                Durability::Durable,
            )?;
            erasures
        };
        // The erasures it parked are carried out now, not at the next
        // compaction: from the release on, nothing they cover may be read.
        inner.resume_erasures(&erasures, now)?;
        Ok(true)
    }

    /// Every legal hold in force.
    ///
    /// # Errors
    /// Damaged hold records, storage failures.
    pub fn holds(&self) -> Result<Vec<Hold>> {
        let inner = &self.inner;
        let mut out = Vec::new();
        let mut failure = None;
        inner.storage.scan(
            Tree::Holds,
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            crate::storage::Order::Ascending,
            &mut |k, v| {
                let Some((tag, class)) = ledger::split_key(k) else {
                    return ControlFlow::Continue(());
                };
                let decoded = holds::decode(v)
                    .map_err(holds::ReasonError::Format)
                    .and_then(|(at, reason)| Ok((at, inner.hold_reasons.open(k, reason)?)));
                match decoded {
                    Ok((placed_at, reason)) => out.push(Hold {
                        subject: tag,
                        class: (class != ALL_CLASSES).then(|| inner.class_name(class)),
                        placed_at: Timestamp::from_second(placed_at).unwrap_or(Timestamp::MAX),
                        reason,
                    }),
                    Err(holds::ReasonError::Tampered) => {
                        failure = Some(Error::Tampered {
                            location: subject_location(&tag),
                        });
                        return ControlFlow::Break(());
                    }
                    Err(holds::ReasonError::Format(source)) => {
                        failure = Some(Error::Corrupt {
                            location: subject_location(&tag),
                            source,
                        });
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            },
        )?;
        match failure {
            Some(err) => Err(err),
            None => Ok(out),
        }
    }
}

/// Subjects of a class retirement gathered for one batch.
#[derive(Default)]
struct RetireBatch {
    batch: WriteBatch,
    audit: Vec<PendingEntry>,
    tags: Vec<SubjectTag>,
}

impl RetireBatch {
    fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// The ops the batch will hold: its own, and one per audit entry.
    fn cost(&self) -> usize {
        self.batch.ops.len() + self.audit.len()
    }
}

/// Meta key of the count of a scope's keys an interrupted class retirement
/// destroyed (`meta::RETIRING_PREFIX`).
fn retiring_key(number: u16, tag: &SubjectTag) -> Vec<u8> {
    [
        crate::db::meta::RETIRING_PREFIX,
        &number.to_be_bytes(),
        &tag.0,
    ]
    .concat()
}
