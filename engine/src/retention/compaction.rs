//! Compaction: does what the deadline index says is due.
//!
//! A pass reads the index range `..=now` (so its cost follows what is due,
//! not what is stored) and, for each item:
//!
//! - **destroy key**: an expiry bucket's day has passed: destroy its key;
//! - **erase scope**: a retention clock ran out: erase the scope as shred does;
//! - **re-key**: a bucket owes a re-key (records deleted or overwritten under
//!   it): re-encrypt its live records under the next key version and destroy
//!   the old one, so the dead ciphertext left in the backend's files dies;
//! - **remove ciphertext**: drop records whose keys are destroyed.
//!
//! Each item ends with one atomic batch that also removes the item from the
//! index, so an interrupted pass resumes where it stopped (a re-key writes
//! its re-encrypted records page by page before that). An item covered by a
//! legal hold is moved to tree `blocked` (audited once) and re-queued when
//! the hold is released. An item whose work fails on its own data is set
//! aside (tree `poisoned`, see `poisoned`) and the pass goes on. Epochs are
//! maintained after the due items (see `epochs`), whatever was set aside.

use std::collections::HashMap;
use std::ops::{Bound, ControlFlow};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use jiff::Timestamp;
use shredkv_crypto::{Envelope, KeyId, KeyRef, SubjectTag, seal_into};

use crate::audit::{AuditEvent, PendingEntry};
use crate::db::{Db, DbInner};
use crate::error::{Error, Result};
use crate::ledger::{ALL_CLASSES, ErasureReason};
use crate::records;
use crate::retention::deadlines::{self, Due};
use crate::retention::poisoned::{self, FailureKind, Poisoned, PoisonedSummary};
use crate::storage::{Durability, Order, Tree, WriteBatch, scan_prefix};
use crate::subjects::SubjectState;
use crate::vault::{KeyState, Material, SCOPE_BUCKET, VaultEntry, bucket_deadline, bucket_holds};

/// Due items read from the index at a time.
const DUE_PAGE: usize = 256;
/// Writes one due item may add to its page's batch (tombstone, its removal
/// from the index, audit entry, sweep item, parked hold), bounding pages on
/// backends with a batch limit.
const OPS_PER_DUE_ITEM: usize = 6;
/// Records removed or re-encrypted per batch.
const RECORD_PAGE: usize = 512;
/// Writes one re-encrypted record adds (the record, a seal reservation).
const OPS_PER_REKEYED_RECORD: usize = 2;

/// What one compaction pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CompactionReport {
    /// When the pass ran (the store clock).
    pub ran_at: Option<Timestamp>,
    /// Due items processed.
    pub items: u64,
    /// Data keys destroyed (expired buckets, erased scopes, re-keyed versions).
    pub keys_destroyed: u64,
    /// Scopes erased because their retention ran out.
    pub scopes_erased: u64,
    /// Dead records removed.
    pub records_removed: u64,
    /// Buckets re-keyed.
    pub buckets_rekeyed: u64,
    /// Records re-encrypted by re-keying.
    pub records_rekeyed: u64,
    /// Items a legal hold blocked (audited, kept until release).
    pub blocked_by_hold: u64,
    /// Epochs created by rotation.
    pub epochs_created: u64,
    /// Keys re-wrapped under the current epoch: the key tree's root, and
    /// in a store older than the tree, data keys moved under it.
    pub keys_rewrapped: u64,
    /// Nodes of the key tree re-keyed because a key under them was
    /// destroyed (each re-wraps its live children).
    pub nodes_rekeyed: u64,
    /// Day forests of the key tree removed whole: every key of their
    /// expiry bucket was destroyed, so nothing under them needed re-wrapping.
    pub forests_removed: u64,
    /// Nodes those forests held, deleted.
    pub nodes_removed: u64,
    /// Epoch keys destroyed.
    pub epochs_destroyed: u64,
    /// Due items left for the next pass (the budget ran out).
    pub remaining: u64,
    /// Due items set aside because their work failed on their own data
    /// (damaged or altered records): audited once, retried with backoff
    /// (an hour, doubling to a day); the rest of the pass went on.
    pub set_aside: u64,
    /// Records kept although their key is not live, because nothing
    /// explains why they would be dead (neither an erased scope nor a
    /// passed expiry bucket): altered headers, reported by `verify`.
    pub records_suspect: u64,
}

/// How often the dead records of expired buckets are swept, per scope.
const REMOVAL_SWEEP_SECS: i64 = 7 * 86_400;

/// The next weekly sweep at or after `now` (a multiple of a week, UTC).
fn removal_sweep_time(now: i64) -> i64 {
    now.div_euclid(REMOVAL_SWEEP_SECS)
        .saturating_add(1)
        .saturating_mul(REMOVAL_SWEEP_SECS)
}

pub(crate) fn blocked_key(tag: &SubjectTag, class: u16, deadline_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(18 + deadline_key.len());
    key.extend_from_slice(&records::scope_prefix(tag, class));
    key.extend_from_slice(deadline_key);
    key
}

/// Adds to `batch` the move of a due item a hold covers from the deadline
/// index to `blocked` (re-queued when the hold is released), and its audit
/// entry to `audit`.
fn park_for_hold(
    tag: &SubjectTag,
    class: u16,
    deadline_key: &[u8],
    what: &str,
    batch: &mut WriteBatch,
    audit: &mut Vec<PendingEntry>,
) {
    batch.remove(Tree::Deadlines, deadline_key);
    batch.put(
        Tree::Blocked,
        blocked_key(tag, class, deadline_key),
        Vec::new(),
    );
    audit.push(PendingEntry::new(
        AuditEvent::ErasureBlocked,
        Some(*tag),
        (class != ALL_CLASSES).then_some(class),
        format!("{what} blocked by a legal hold"),
    ));
}

impl DbInner {
    /// Moves a due item to `blocked` and audits it, if a hold covers it.
    /// The caller holds the scope gate's write lock over `tag`, so a hold
    /// placed before this returns is seen (`place_hold` takes it too).
    fn blocked_by_hold(
        &self,
        tag: &SubjectTag,
        class: u16,
        deadline_key: &[u8],
        what: &str,
        now: Timestamp,
    ) -> Result<bool> {
        let holds = self.holds_of(tag)?;
        let held = if class == ALL_CLASSES {
            !holds.is_empty()
        } else {
            Self::hold_on(&holds, class).is_some()
        };
        if !held {
            return Ok(false);
        }
        let mut batch = WriteBatch::new();
        let mut audit = Vec::new();
        park_for_hold(tag, class, deadline_key, what, &mut batch, &mut audit);
        self.audit.commit(
            self.storage.as_ref(),
            batch,
            &audit,
            now,
            Durability::Buffered,
        )?;
        Ok(true)
    }

    /// Puts every item a hold over (`tag`, `class`) blocked back in the
    /// index, due now. Adds to `batch`; returns how many, and the erasures
    /// among them (their deadline keys), which the release carries out at
    /// once ([`DbInner::resume_erasures`]).
    pub(crate) fn requeue_blocked(
        &self,
        tag: &SubjectTag,
        class: u16,
        now: i64,
        batch: &mut WriteBatch,
    ) -> Result<(u64, Vec<Vec<u8>>)> {
        let prefix: Vec<u8> = if class == ALL_CLASSES {
            tag.0.to_vec()
        } else {
            records::scope_prefix(tag, class).to_vec()
        };
        let mut n = 0;
        let mut erasures = Vec::new();
        scan_prefix(
            self.storage.as_ref(),
            Tree::Blocked,
            &prefix,
            &mut |k, _| {
                if let Some((_, due)) = k.get(18..).and_then(deadlines::decode_key) {
                    batch.remove(Tree::Blocked, k);
                    let key = deadlines::key(now, &due);
                    if matches!(due, Due::ResumeErasure { .. }) {
                        // With the release: a crash before the erasure is
                        // carried out leaves this for the next open.
                        batch.put(Tree::Meta, resume_marker(&key), Vec::new());
                        erasures.push(key.clone());
                    }
                    batch.put(Tree::Deadlines, key, deadlines::value(now));
                    n += 1;
                }
                ControlFlow::Continue(())
            },
        )?;
        Ok((n, erasures))
    }

    /// Carries out now the erasures a released hold had parked (their
    /// deadline keys, already in the index): the subject asked for them
    /// long ago, and a read between the release and the next compaction
    /// must not find the data. One still blocked (another hold covers it)
    /// is parked again; one that fails stays due for compaction.
    pub(crate) fn resume_erasures(&self, keys: &[Vec<u8>], now: Timestamp) -> Result<()> {
        let mut report = CompactionReport::default();
        for key in keys {
            if let Some((
                _,
                Due::ResumeErasure {
                    tag,
                    class,
                    reason,
                    whole,
                },
            )) = deadlines::decode_key(key)
            {
                self.erase_due_scope(tag, class, reason, whole, key, now, &mut report)?;
            }
            // Carried out (or parked again under another hold, which has its
            // own release): no longer pending.
            let mut done = WriteBatch::new();
            done.remove(Tree::Meta, resume_marker(key));
            self.storage.apply(&done, Durability::Buffered)?;
        }
        Ok(())
    }

    /// Carries out the erasures of releases a crash interrupted (markers
    /// left in meta): at open, before the store serves anything.
    pub(crate) fn finish_interrupted_releases(&self, now: Timestamp) -> Result<()> {
        let mut pending = Vec::new();
        let mut stale = WriteBatch::new();
        scan_prefix(
            self.storage.as_ref(),
            Tree::Meta,
            crate::db::meta::RESUME_PENDING_PREFIX,
            &mut |k, _| {
                let key = k
                    .get(crate::db::meta::RESUME_PENDING_PREFIX.len()..)
                    .unwrap_or_default()
                    .to_vec();
                pending.push((k.to_vec(), key));
                ControlFlow::Continue(())
            },
        )?;
        let mut due = Vec::new();
        for (marker, key) in pending {
            if self.storage.get(Tree::Deadlines, &key)?.is_some() {
                due.push(key);
            } else {
                // Carried out (or retried by compaction) before the crash.
                stale.remove(Tree::Meta, marker);
            }
        }
        if !stale.is_empty() {
            self.storage.apply(&stale, Durability::Buffered)?;
        }
        if due.is_empty() {
            return Ok(());
        }
        self.resume_erasures(&due, now)?;
        Ok(self.storage.flush()?)
    }

    /// Destroys a page of expired bucket keys in one atomic batch (one gate
    /// acquisition, one commit). Keys a hold covers are parked instead, in
    /// the same batch. Holds are read under the gate's write lock: a hold
    /// placed while the page waited for the lock stops its keys'
    /// destruction.
    fn destroy_due_keys(
        &self,
        items: &[(&[u8], KeyId)],
        now: Timestamp,
        report: &mut CompactionReport,
    ) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let tags: Vec<SubjectTag> = items
            .iter()
            .map(|(_, id)| id.subject)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let _exclusive = self.gate.write(&tags);
        // Per key: its tombstone, its due item's removal, an audit entry,
        // and at most a sweep item.
        let mut batch = WriteBatch::with_capacity(4 * items.len());
        let mut audit = Vec::with_capacity(items.len());
        let mut scopes = std::collections::BTreeSet::new();
        let (mut destroyed, mut parked) = (0u64, 0u64);
        let mut free = Vec::with_capacity(items.len());
        let scopes_of_items: Vec<(SubjectTag, u16)> =
            items.iter().map(|(_, id)| (id.subject, id.class)).collect();
        let on_hold = self.scopes_on_hold(&scopes_of_items)?;
        for ((key, id), held) in items.iter().zip(on_hold) {
            if held {
                park_for_hold(&id.subject, id.class, key, "expiry", &mut batch, &mut audit);
                parked += 1;
                continue;
            }
            free.push((key, *id));
        }
        let ids: Vec<KeyId> = free.iter().map(|(_, id)| *id).collect();
        let live = self
            .vault
            .destroy_expired(&ids, now.as_second(), &mut batch)?;
        // The page's due items lie together in the index, in this order.
        batch.remove_neighbours(Tree::Deadlines, free.iter().map(|(key, _)| *key));
        for ((_, id), was_live) in free.iter().zip(live) {
            if was_live {
                scopes.insert((id.subject, id.class));
                audit.push(PendingEntry::new(
                    AuditEvent::KeysDestroyed,
                    Some(id.subject),
                    Some(id.class),
                    format!(
                        "1 key destroyed; expiry bucket {} v{}; class {}",
                        id.bucket,
                        id.version,
                        self.class_label(id.class)
                    ),
                ));
                destroyed += 1;
            }
        }
        // Removing an expired bucket's records means scanning its scope, so
        // the removals of a scope's buckets are gathered into one scan a
        // week: every removal of the week shares one index key. Physical
        // removal stays within the purge window; the key is already gone.
        // A scope whose sweep is already scheduled (another of its buckets
        // expired earlier in the week) keeps its item: rewriting it would
        // cost a write in a random place of the index for nothing.
        let sweep = removal_sweep_time(now.as_second());
        let sweep_keys: Vec<Vec<u8>> = scopes
            .into_iter()
            .map(|(tag, class)| deadlines::key(sweep, &Due::RemoveCiphertext(tag, class)))
            .collect();
        let sweep_refs: Vec<&[u8]> = sweep_keys.iter().map(Vec::as_slice).collect();
        let scheduled = self.storage.get_many(Tree::Deadlines, &sweep_refs)?;
        for (key, scheduled) in sweep_keys.into_iter().zip(scheduled) {
            if scheduled.is_none() {
                batch.put(Tree::Deadlines, key, deadlines::value(now.as_second()));
            }
        }
        self.audit.commit(
            self.storage.as_ref(),
            batch,
            &audit,
            now,
            Durability::Buffered,
        )?;
        report.keys_destroyed += destroyed;
        report.blocked_by_hold += parked;
        self.vault.evict_many(&ids);
        Ok(())
    }

    /// Erases a scope whose time has come: a retention deadline
    /// (`RetentionExpired`), or an erasure a legal hold blocked, resumed
    /// with its own reason. A resumed erasure of a whole subject (`whole`)
    /// erases what is not held now and, once nothing is, the subject: the
    /// same end state as a direct erasure of it.
    #[allow(clippy::too_many_arguments, reason = "one due item's fields")]
    fn erase_due_scope(
        &self,
        tag: SubjectTag,
        class: u16,
        reason: ErasureReason,
        whole: bool,
        deadline_key: &[u8],
        now: Timestamp,
        report: &mut CompactionReport,
    ) -> Result<()> {
        let remove = |inner: &DbInner| -> Result<()> {
            let mut batch = WriteBatch::new();
            batch.remove(Tree::Deadlines, deadline_key);
            Ok(inner.storage.apply(&batch, Durability::Buffered)?)
        };
        let Some(info) = self.subject_info(&tag)? else {
            return remove(self);
        };
        if info.state == SubjectState::Erased {
            return remove(self);
        }
        if !whole
            && self
                .scope_erased_at(&tag, class, info.generation)?
                .is_some()
        {
            return remove(self);
        }
        let what = match reason {
            ErasureReason::RetentionExpired => "retention erasure".to_string(),
            other => format!("{} erasure", other.name()),
        };
        let _exclusive = self.gate.write(&[tag]);
        if self.blocked_by_hold(&tag, class, deadline_key, &what, now)? {
            report.blocked_by_hold += 1;
            return Ok(());
        }
        let receipt = if whole {
            self.erase_locked(tag, &[tag], None, reason)?
        } else {
            let Some(entry) = self.class_by_number(class) else {
                // A class retired from the policy: its scopes were erased
                // when the change was applied.
                return remove(self);
            };
            self.erase_locked(tag, &[tag], Some(&[entry]), reason)?
        };
        report.keys_destroyed += u64::try_from(receipt.keys_destroyed()).unwrap_or(u64::MAX);
        report.scopes_erased += u64::try_from(receipt.erased.len()).unwrap_or(u64::MAX);
        remove(self)
    }

    /// Re-encrypts the live records sealed under `old` with the bucket's
    /// next key version, page by page (memory does not grow with the
    /// bucket), then destroys `old` with the item's removal and its audit.
    /// Interrupted, the next pass re-keys what is still under `old`.
    fn rekey(
        &self,
        old: KeyId,
        deadline_key: &[u8],
        now: Timestamp,
        report: &mut CompactionReport,
    ) -> Result<()> {
        let mut done = WriteBatch::new();
        done.remove(Tree::Deadlines, deadline_key);
        done.remove(Tree::Debts, old.to_bytes());
        let live = matches!(self.vault.read_entry(&old)?, Some(e) if e.state == KeyState::Active);
        if !live {
            self.storage.apply(&done, Durability::Buffered)?;
            return Ok(());
        }
        let _exclusive = self.gate.write(&[old.subject]);
        if self.blocked_by_hold(&old.subject, old.class, deadline_key, "re-key", now)? {
            report.blocked_by_hold += 1;
            return Ok(());
        }
        let Some(old_key) = self.vault.load(&old)? else {
            self.storage.apply(&done, Durability::Buffered)?;
            return Ok(());
        };
        let new_key = self.vault.create_next_version(old, now.as_second())?;
        let (
            Material::Data {
                cipher: old_cipher, ..
            },
            Material::Data {
                cipher: new_cipher, ..
            },
        ) = (&old_key.material, &new_key.material)
        else {
            return Err(Error::InvalidArgument {
                what: "re-key",
                detail: "scope keys are never re-keyed".into(),
            });
        };
        let old_ref = KeyRef {
            bucket: old.bucket,
            version: old.version,
        };
        let new_ref = KeyRef {
            bucket: new_key.id.bucket,
            version: new_key.id.version,
        };
        let prefix = records::scope_prefix(&old.subject, old.class);
        let mut aad = Vec::new();
        let mut sealed = Vec::new();
        let mut rekeyed = 0u64;
        let mut expired = 0u64;
        let mut unauthentic = 0u64;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.data_page(&prefix, after.as_deref())?;
            let full = page.len() >= self.record_page();
            after = page.last().map(|(k, _)| k.clone());
            let mut batch = WriteBatch::new();
            let mut reservations = Vec::new();
            for (k, v) in &page {
                let Ok(envelope) = Envelope::parse(v) else {
                    continue;
                };
                if envelope.key_ref() != old_ref {
                    continue;
                }
                records::associated_data(&self.store_id, k, &mut aad);
                // Authenticate before deciding anything from the header:
                // a forged expiry must not make the record look dead. A
                // record that does not authenticate is not re-sealed (that
                // would launder it); left under the destroyed key, it reads
                // (and verifies) as tampered.
                let Ok(plain) = envelope.open(old_cipher, &aad) else {
                    unauthentic += 1;
                    continue;
                };
                if envelope.expiry().is_some_and(|e| e <= now.as_second()) {
                    // Expired (no hold covers the scope: checked above).
                    batch.remove(Tree::Data, k.clone());
                    expired += 1;
                    continue;
                }
                seal_into(
                    new_cipher,
                    new_ref,
                    envelope.expiry(),
                    &aad,
                    &plain,
                    &mut sealed,
                )
                .map_err(|err| Error::InvalidArgument {
                    what: "value",
                    detail: err.to_string(),
                })?;
                batch.put(Tree::Data, k.clone(), sealed.clone());
                reservations.extend(self.vault.note_seal(&new_key, &mut batch));
                rekeyed += 1;
            }
            if !batch.is_empty() {
                self.storage.apply(&batch, Durability::Buffered)?;
                for reservation in reservations.drain(..) {
                    crate::vault::Vault::reservation_landed(&reservation);
                }
            }
            if !full {
                break;
            }
        }
        let mut batch = done;
        self.vault.destroy_one(&old, now.as_second(), &mut batch)?;
        let mut detail = format!(
            "class {}; bucket {} v{} -> v{}; {rekeyed} records re-encrypted; {expired} expired records removed; old key destroyed",
            self.class_name(old.class),
            old.bucket,
            old.version,
            new_key.id.version
        );
        if unauthentic > 0 {
            detail.push_str(&format!(
                "; {unauthentic} records failed authentication and were left as they were (verify reports them)"
            ));
        }
        let entry = PendingEntry::new(
            AuditEvent::Rekeyed,
            Some(old.subject),
            Some(old.class),
            detail,
        );
        self.audit.commit(
            self.storage.as_ref(),
            batch,
            &[entry],
            now,
            Durability::Buffered,
        )?;
        self.vault.evict(&old);
        report.buckets_rekeyed += 1;
        report.records_rekeyed += rekeyed;
        report.records_suspect += unauthentic;
        report.keys_destroyed += 1;
        Ok(())
    }

    /// Records per page of a re-key or a ciphertext removal: [`RECORD_PAGE`],
    /// or fewer to fit the backend's batch limit.
    fn record_page(&self) -> usize {
        self.batch_page(RECORD_PAGE, OPS_PER_REKEYED_RECORD)
    }

    /// Up to [`DbInner::record_page`] records under `prefix`, after `after`.
    fn data_page(&self, prefix: &[u8], after: Option<&[u8]>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let limit = self.record_page();
        let mut page = Vec::new();
        let start = match after {
            Some(k) => Bound::Excluded(k),
            None => Bound::Included(prefix),
        };
        self.storage.scan(
            Tree::Data,
            start,
            Bound::Unbounded,
            Order::Ascending,
            &mut |k, v| {
                if !k.starts_with(prefix) {
                    return ControlFlow::Break(());
                }
                page.push((k.to_vec(), v.to_vec()));
                if page.len() >= limit {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )?;
        Ok(page)
    }

    /// Whether a record naming key `id`, which is not live (destroyed,
    /// its epoch gone, or never held: `entry` is `None`), may legitimately
    /// sit there dead: its scope (or subject) was erased since the key was
    /// made, or it is in an expiry bucket whose span has passed with an
    /// expiry that belongs to that bucket. Anything else is an altered
    /// header naming a dead key, and must be reported, not taken as dead.
    pub(crate) fn dead_is_legitimate(
        &self,
        id: &KeyId,
        entry: Option<&VaultEntry>,
        expiry: Option<i64>,
        now: i64,
    ) -> Result<bool> {
        if id.bucket != SCOPE_BUCKET
            && bucket_deadline(id.bucket).is_some_and(|end| end <= now)
            && expiry.is_some_and(|e| bucket_holds(id.bucket, e))
        {
            return Ok(true);
        }
        let made = entry.map_or(i64::MIN, |e| e.created_at);
        for class in [id.class, ALL_CLASSES] {
            let Some(bytes) = self
                .storage
                .get(Tree::Ledger, &crate::ledger::key(&id.subject, class))?
            else {
                continue;
            };
            // A damaged ledger entry still says the scope was erased.
            let erased_at =
                crate::ledger::LedgerEntry::decode(&bytes).map_or(i64::MAX, |e| e.erased_at);
            if erased_at >= made {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Removes the records whose keys are destroyed, for a page of scopes
    /// (or whole subjects), in as few batches as the records allow.
    fn remove_dead(
        &self,
        items: &[(&[u8], SubjectTag, u16)],
        now: Timestamp,
        report: &mut CompactionReport,
    ) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let mut removals = WriteBatch::new();
        let mut pending = 0usize;
        // Removals per batch: a backend's batch limit (etcd's --max-txn-ops)
        // must hold however the scopes' records fall into pages.
        let removals_page = self.batch_page(RECORD_PAGE * 8, 1);
        let mut done = WriteBatch::new();
        let mut audit = Vec::new();
        for (deadline_key, tag, class) in items {
            let prefix: Vec<u8> = if *class == ALL_CLASSES {
                tag.0.to_vec()
            } else {
                records::scope_prefix(tag, *class).to_vec()
            };
            let mut removed = 0u64;
            let mut suspect = 0u64;
            let mut after: Option<Vec<u8>> = None;
            // Per key: its vault entry (`None` if never held), or `Err` if
            // damaged. Key ids begin with the subject tag, so no other item
            // shares them.
            let mut key_entries: HashMap<KeyId, std::result::Result<Option<VaultEntry>, ()>> =
                HashMap::new();
            loop {
                let page = self.data_page(&prefix, after.as_deref())?;
                let full = page.len() >= self.record_page();
                after = page.last().map(|(k, _)| k.clone());
                let parsed: Vec<(&Vec<u8>, Envelope<'_>, KeyId)> = page
                    .iter()
                    .filter_map(|(k, v)| {
                        let record_class = k
                            .get(16..18)
                            .and_then(|c| c.try_into().ok())
                            .map(u16::from_be_bytes)?;
                        let envelope = Envelope::parse(v).ok()?;
                        let id = crate::records::sealing_key(*tag, record_class, &envelope);
                        Some((k, envelope, id))
                    })
                    .collect();
                // The page's keys not seen yet, read together (a scope's
                // records name a key per expiry day).
                let unseen: Vec<KeyId> = parsed
                    .iter()
                    .map(|(_, _, id)| *id)
                    .filter(|id| !key_entries.contains_key(id))
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                for (id, entry) in unseen.iter().zip(self.vault.read_entries(&unseen)?) {
                    key_entries.insert(*id, entry);
                }
                for (k, envelope, id) in &parsed {
                    let (k, id) = (*k, *id);
                    let entry = key_entries.get(&id).cloned().unwrap_or(Ok(None));
                    let dead = match &entry {
                        Ok(Some(e)) if e.state == KeyState::Active => false,
                        Ok(entry) => self.dead_is_legitimate(
                            &id,
                            entry.as_ref(),
                            envelope.expiry(),
                            now.as_second(),
                        )?,
                        // A damaged vault entry: verify reports it.
                        Err(_) => false,
                    };
                    if dead {
                        removals.remove(Tree::Data, k.clone());
                        pending += 1;
                        removed += 1;
                        if pending >= removals_page {
                            self.storage
                                .apply(&std::mem::take(&mut removals), Durability::Buffered)?;
                            pending = 0;
                        }
                    } else if !matches!(&entry, Ok(Some(e)) if e.state == KeyState::Active) {
                        suspect += 1;
                    }
                }
                if !full {
                    break;
                }
            }
            done.remove(Tree::Deadlines, deadline_key);
            if suspect > 0 {
                audit.push(PendingEntry::new(
                    AuditEvent::ItemSetAside,
                    Some(*tag),
                    (*class != ALL_CLASSES).then_some(*class),
                    format!(
                        "{suspect} records kept: their key is not live, yet they are neither in an erased scope nor past their expiry day (altered headers?); verify reports them"
                    ),
                ));
                report.records_suspect += suspect;
            }
            if removed > 0 {
                audit.push(PendingEntry::new(
                    AuditEvent::CiphertextRemoved,
                    Some(*tag),
                    (*class != ALL_CLASSES).then_some(*class),
                    format!("{removed} dead records removed"),
                ));
            }
            report.records_removed += removed;
        }
        // Removals first; the index entries go with the audit, so a crash in
        // between only repeats a (now cheaper) removal.
        if !removals.is_empty() {
            self.storage.apply(&removals, Durability::Buffered)?;
        }
        self.audit.commit(
            self.storage.as_ref(),
            done,
            &audit,
            now,
            Durability::Buffered,
        )
    }
}

impl DbInner {
    /// The due items set aside by earlier passes, by deadline key. Records
    /// of items no longer in the index (done since, or parked by a hold)
    /// are dropped here.
    fn load_poisoned(&self) -> Result<HashMap<Vec<u8>, Poisoned>> {
        let mut found = Vec::new();
        scan_prefix(
            self.storage.as_ref(),
            Tree::Poisoned,
            &[poisoned::DUE_ITEM],
            &mut |k, v| {
                found.push((k.to_vec(), Poisoned::decode(v).ok()));
                ControlFlow::Continue(())
            },
        )?;
        let mut out = HashMap::new();
        let mut stale = WriteBatch::new();
        for (k, record) in found {
            let deadline_key = k.get(1..).unwrap_or_default().to_vec();
            match record {
                Some(record) if self.storage.get(Tree::Deadlines, &deadline_key)?.is_some() => {
                    out.insert(deadline_key, record);
                }
                _ => stale.remove(Tree::Poisoned, k),
            }
        }
        if !stale.is_empty() {
            self.storage.apply(&stale, Durability::Buffered)?;
        }
        Ok(out)
    }

    /// Records that a due item failed on its own data: set aside (audited
    /// the first time), retried with backoff.
    fn set_aside(
        &self,
        deadline_key: &[u8],
        previous: Option<Poisoned>,
        err: &Error,
        now: Timestamp,
    ) -> Result<()> {
        let Some((deadline, due)) = deadlines::decode_key(deadline_key) else {
            return Ok(());
        };
        let record = Poisoned::failed(previous, deadline, FailureKind::of(err), now.as_second());
        let mut batch = WriteBatch::new();
        batch.put(
            Tree::Poisoned,
            poisoned::due_key(deadline_key),
            record.encode(),
        );
        let (subject, class, what) = match due {
            Due::DestroyKey(id) => (id.subject, id.class, "expiry key destruction"),
            Due::EraseScope(tag, class) => (tag, class, "retention erasure"),
            Due::Rekey(id) => (id.subject, id.class, "re-key"),
            Due::RemoveCiphertext(tag, class) => (tag, class, "dead record removal"),
            Due::ResumeErasure { tag, class, .. } => (tag, class, "resumed erasure"),
            // Paid apart (`node_debts`), never set aside one by one.
            Due::RekeyNode(_) | Due::RetireForest(_) => {
                (SubjectTag([0; 16]), ALL_CLASSES, "node re-key")
            }
        };
        let audit = if previous.is_none() {
            vec![PendingEntry::new(
                AuditEvent::ItemSetAside,
                Some(subject),
                (class != ALL_CLASSES).then_some(class),
                format!(
                    "{what} due {} set aside ({}): {err}; retried with backoff, the purge of everything else goes on",
                    crate::codec::saturating_time(deadline),
                    record.kind.name()
                ),
            )]
        } else {
            Vec::new()
        };
        self.audit.commit(
            self.storage.as_ref(),
            batch,
            &audit,
            now,
            Durability::Buffered,
        )
    }

    /// Runs `work` over `items` as one unit; if it fails on some item's own
    /// data, runs it item by item so only the failing ones are set aside.
    /// Environment failures (backend, key provider) stop the pass.
    fn isolated<T: Clone>(
        &self,
        items: &[T],
        key_of: impl Fn(&T) -> &[u8],
        poisoned: &HashMap<Vec<u8>, Poisoned>,
        now: Timestamp,
        report: &mut CompactionReport,
        mut work: impl FnMut(&DbInner, &[T], &mut CompactionReport) -> Result<()>,
    ) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let failure = match work(self, items, report) {
            Ok(()) => {
                self.clear_poisoned(items.iter().map(&key_of), poisoned)?;
                return Ok(());
            }
            Err(err) if poisoned::is_item_failure(&err) => err,
            Err(err) => return Err(err),
        };
        let mut failures = Vec::new();
        if let [only] = items {
            failures.push((key_of(only), failure));
        } else {
            for item in items {
                match work(self, std::slice::from_ref(item), report) {
                    Ok(()) => self.clear_poisoned(std::iter::once(key_of(item)), poisoned)?,
                    Err(err) if poisoned::is_item_failure(&err) => {
                        failures.push((key_of(item), err));
                    }
                    Err(err) => return Err(err),
                }
            }
        }
        for (key, err) in failures {
            report.set_aside += 1;
            self.set_aside(key, poisoned.get(key).copied(), &err, now)?;
        }
        Ok(())
    }

    /// Drops the set-aside records of items that have now been done.
    fn clear_poisoned<'a>(
        &self,
        keys: impl Iterator<Item = &'a [u8]>,
        poisoned: &HashMap<Vec<u8>, Poisoned>,
    ) -> Result<()> {
        let mut batch = WriteBatch::new();
        for key in keys.filter(|k| poisoned.contains_key(*k)) {
            batch.remove(Tree::Poisoned, poisoned::due_key(key));
        }
        if !batch.is_empty() {
            self.storage.apply(&batch, Durability::Buffered)?;
        }
        Ok(())
    }

    /// How many items compaction has set aside, and the earliest deadline
    /// among them, for stats and verify to report an overdue purge.
    ///
    /// # Errors
    /// Storage failures.
    pub(crate) fn poisoned_summary(&self) -> Result<PoisonedSummary> {
        let mut summary = PoisonedSummary::default();
        self.storage.scan(
            Tree::Poisoned,
            Bound::Unbounded,
            Bound::Unbounded,
            Order::Ascending,
            &mut |_, v| {
                summary.count += 1;
                // A damaged record still counts; its deadline is unknown.
                if let Ok(record) = Poisoned::decode(v) {
                    let at = crate::codec::saturating_time(record.deadline);
                    summary.oldest_deadline =
                        Some(summary.oldest_deadline.map_or(at, |o: Timestamp| o.min(at)));
                }
                ControlFlow::Continue(())
            },
        )?;
        Ok(summary)
    }
}

impl Db {
    /// Runs one compaction pass at the store clock's current time, with no
    /// budget: everything due is done. See the module docs.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let config = shredkv::Config::new(dir.path().join("store"))
    /// #     .key_file(dir.path().join("keys")).maintenance_every(None);
    /// # let db = shredkv::Db::open(config)?;
    /// use shredkv::PutOptions;
    /// db.register_account("acct-42")?;
    /// let in_an_hour = db.now() + shredkv::jiff::SignedDuration::from_hours(1);
    /// db.put_with("acct-42", "message_content", b"m1", b"hello", PutOptions::expires_at(in_an_hour))?;
    /// // One pass over what is due now (a store opened with the default config also
    /// // runs this in the background, hourly).
    /// let report = db.compact()?;
    /// assert_eq!(report.keys_destroyed, 0, "nothing is due yet");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// Storage and key provider failures; work done before the failure is
    /// kept, and the rest is done by the next pass. An item that fails on
    /// its own data (damaged or altered) is set aside instead, and the pass
    /// goes on (see [`CompactionReport::set_aside`]).
    pub fn compact(&self) -> Result<CompactionReport> {
        self.compact_with(usize::MAX, &mut |_| {})
    }

    /// One compaction pass doing at most `budget` due items, calling
    /// `progress` with the items done so far.
    ///
    /// # Errors
    /// As [`Db::compact`].
    pub fn compact_with(
        &self,
        budget: usize,
        progress: &mut dyn FnMut(u64),
    ) -> Result<CompactionReport> {
        let inner = &self.inner;
        let _single = inner
            .compaction
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = inner.clock.now();
        let mut report = CompactionReport {
            ran_at: Some(now),
            ..CompactionReport::default()
        };
        let poisoned = inner.load_poisoned()?;
        let end = deadlines::upper_bound(now.as_second());
        let due_page = inner.batch_page(DUE_PAGE, OPS_PER_DUE_ITEM);
        let mut left = budget;
        // Pages continue after the last key seen, so an entry this build
        // cannot read (or one set aside) is passed over instead of read
        // again forever.
        let mut after: Option<Vec<u8>> = None;
        // A page's keys, end to end in one buffer reused by every page: a
        // page costs no allocation per due item.
        let mut page_bytes = Vec::new();
        let mut page_ends = Vec::with_capacity(due_page);
        loop {
            page_bytes.clear();
            page_ends.clear();
            let start = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            inner.storage.scan(
                Tree::Deadlines,
                start,
                Bound::Excluded(&end),
                Order::Ascending,
                &mut |k, _| {
                    page_bytes.extend_from_slice(k);
                    page_ends.push(page_bytes.len());
                    if page_ends.len() >= due_page {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                },
            )?;
            let due = std::iter::once(0)
                .chain(page_ends.iter().copied())
                .zip(page_ends.iter().copied())
                .map(|(from, to)| &page_bytes[from..to]);
            let Some(last) = due.clone().last() else {
                break;
            };
            after = Some(last.to_vec());
            // Sized once: grown item by item, a page's list is copied at
            // every doubling.
            let mut expired_keys = Vec::with_capacity(page_ends.len());
            let mut others = Vec::new();
            for key in due {
                if left == 0 {
                    break;
                }
                if poisoned
                    .get(key)
                    .is_some_and(|p| p.next_retry > now.as_second())
                {
                    // Set aside earlier; its retry is not due yet.
                    report.set_aside += 1;
                    continue;
                }
                match deadlines::decode_key(key) {
                    // Paid after the loop, once every key due is destroyed.
                    Some((_, Due::RekeyNode(_) | Due::RetireForest(_))) => continue,
                    Some((_, Due::DestroyKey(id))) => expired_keys.push((key, id)),
                    Some((_, due)) => others.push((key, due)),
                    // An entry this build cannot read is kept for a newer
                    // build, never guessed at.
                    None => continue,
                }
                left -= 1;
                report.items += 1;
            }
            inner.isolated(
                &expired_keys,
                |(k, _)| *k,
                &poisoned,
                now,
                &mut report,
                |inner, items, report| inner.destroy_due_keys(items, now, report),
            )?;
            let mut dead = Vec::new();
            for (key, due) in others {
                let item = [(key, due)];
                match due {
                    Due::EraseScope(tag, class) => inner.isolated(
                        &item,
                        |(k, _)| *k,
                        &poisoned,
                        now,
                        &mut report,
                        |inner, _, report| {
                            let reason = ErasureReason::RetentionExpired;
                            inner.erase_due_scope(tag, class, reason, false, item[0].0, now, report)
                        },
                    )?,
                    Due::ResumeErasure {
                        tag,
                        class,
                        reason,
                        whole,
                    } => inner.isolated(
                        &item,
                        |(k, _)| *k,
                        &poisoned,
                        now,
                        &mut report,
                        |inner, _, report| {
                            inner.erase_due_scope(tag, class, reason, whole, item[0].0, now, report)
                        },
                    )?,
                    Due::Rekey(id) => inner.isolated(
                        &item,
                        |(k, _)| *k,
                        &poisoned,
                        now,
                        &mut report,
                        |inner, _, report| inner.rekey(id, item[0].0, now, report),
                    )?,
                    Due::RemoveCiphertext(tag, class) => {
                        let [(key, _)] = item;
                        dead.push((key, tag, class));
                    }
                    Due::DestroyKey(_) | Due::RekeyNode(_) | Due::RetireForest(_) => {}
                }
            }
            inner.isolated(
                &dead,
                |(k, _, _)| *k,
                &poisoned,
                now,
                &mut report,
                |inner, items, report| inner.remove_dead(items, now, report),
            )?;
            progress(report.items);
            if left == 0 {
                let mut more = 0u64;
                inner.storage.scan(
                    Tree::Deadlines,
                    Bound::Unbounded,
                    Bound::Excluded(&end),
                    Order::Ascending,
                    &mut |k, _| {
                        if deadlines::decode_key(k).is_some() {
                            more += 1;
                        }
                        ControlFlow::Continue(())
                    },
                )?;
                report.remaining = more;
                break;
            }
        }
        // After the due erasures: the paths of the keys destroyed (by this
        // pass, or since the last) are re-keyed before any epoch is touched,
        // so no root generation that opens one is re-wrapped under a new
        // epoch (that copy would outlive W). Items set aside above do not
        // stop it.
        inner.pay_node_debts(now, &mut report)?;
        inner.maintain_epochs(now, &mut report)?;
        inner.storage.flush()?;
        Ok(report)
    }

    /// Starts a background compactor: a pass every `every`, at most `budget`
    /// items each. Stopped (after its current pass) by [`Compactor::stop`]
    /// or by dropping it; restarting later resumes from the deadline index.
    /// It does not keep the store open: once every [`Db`] handle is dropped
    /// the store closes and the compactor ends at its next wake-up.
    ///
    /// # Errors
    /// The thread could not be started.
    pub fn start_compactor(&self, every: Duration, budget: usize) -> Result<Compactor> {
        let (stop, stopped) = mpsc::channel::<()>();
        let store = Arc::downgrade(&self.inner);
        let last = Arc::new(Mutex::new(None));
        let last_in_thread = Arc::clone(&last);
        let handle = std::thread::Builder::new()
            .name("shredkv-compact".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    // A strong handle for one pass only.
                    let Some(inner) = store.upgrade() else { break };
                    let db = Db { inner };
                    let outcome = db.compact_with(budget, &mut |_| {}).map_err(Arc::new);
                    drop(db);
                    *last_in_thread
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(outcome);
                }
            })
            .map_err(|source| Error::Io {
                action: "start the compactor thread",
                path: self.path().to_path_buf(),
                source,
            })?;
        Ok(Compactor {
            stop: Some(stop),
            handle: Some(handle),
            last,
        })
    }
}

/// The outcome of a background compaction pass.
pub type CompactionOutcome = std::result::Result<CompactionReport, Arc<Error>>;

/// A running background compactor. Dropping it stops it.
#[derive(Debug)]
pub struct Compactor {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
    last: Arc<Mutex<Option<CompactionOutcome>>>,
}

impl Compactor {
    /// The outcome of the last pass, if one ran: its report, or its error
    /// (shared: the same error stays readable until the next pass).
    pub fn last_outcome(&self) -> Option<CompactionOutcome> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops the compactor after its current pass and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(handle) = self.handle.take() {
            // The last store handle may be dropped by the thread itself.
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The meta key marking the resumed erasure `deadline_key` as pending.
fn resume_marker(deadline_key: &[u8]) -> Vec<u8> {
    let mut marker = crate::db::meta::RESUME_PENDING_PREFIX.to_vec();
    marker.extend_from_slice(deadline_key);
    marker
}
