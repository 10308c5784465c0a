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
//! Each item is one atomic batch that also removes the item from the index,
//! so an interrupted pass resumes where it stopped. An item covered by a
//! legal hold is moved to tree `blocked` (audited once) and re-queued when
//! the hold is released. Epochs are maintained after the due items (see
//! `epochs`).

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
use crate::storage::{Durability, Order, Tree, WriteBatch, scan_prefix};
use crate::subjects::SubjectState;
use crate::vault::{KeyState, Material};

/// Due items read from the index at a time.
const DUE_PAGE: usize = 256;
/// Records removed or re-encrypted per batch.
const RECORD_PAGE: usize = 512;

/// What one compaction pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// Keys re-wrapped under the current epoch.
    pub keys_rewrapped: u64,
    /// Epoch keys destroyed.
    pub epochs_destroyed: u64,
    /// Due items left for the next pass (the budget ran out).
    pub remaining: u64,
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

impl DbInner {
    /// Moves a due item to `blocked` and audits it, if a hold covers it.
    fn blocked_by_hold(
        &self,
        tag: &SubjectTag,
        class: u16,
        deadline_key: &[u8],
        what: &str,
        now: Timestamp,
    ) -> Result<bool> {
        let holds = self.holds_of(tag)?;
        let hold = if class == ALL_CLASSES {
            holds.values().next()
        } else {
            Self::hold_on(&holds, class)
        };
        let Some(hold) = hold else { return Ok(false) };
        let mut batch = WriteBatch::new();
        batch.remove(Tree::Deadlines, deadline_key.to_vec());
        batch.put(
            Tree::Blocked,
            blocked_key(tag, class, deadline_key),
            Vec::new(),
        );
        let entry = PendingEntry::new(
            AuditEvent::ErasureBlocked,
            Some(*tag),
            (class != ALL_CLASSES).then_some(class),
            format!("{what} blocked by legal hold: {hold}"),
        );
        self.audit.commit(
            self.storage.as_ref(),
            batch,
            &[entry],
            now,
            Durability::Buffered,
        )?;
        Ok(true)
    }

    /// Puts every item a hold over (`tag`, `class`) blocked back in the
    /// index, due now. Adds to `batch`; returns how many.
    pub(crate) fn requeue_blocked(
        &self,
        tag: &SubjectTag,
        class: u16,
        now: i64,
        batch: &mut WriteBatch,
    ) -> Result<u64> {
        let prefix: Vec<u8> = if class == ALL_CLASSES {
            tag.0.to_vec()
        } else {
            records::scope_prefix(tag, class).to_vec()
        };
        let mut n = 0;
        scan_prefix(
            self.storage.as_ref(),
            Tree::Blocked,
            &prefix,
            &mut |k, _| {
                if let Some((_, due)) = k.get(18..).and_then(deadlines::decode_key) {
                    batch.remove(Tree::Blocked, k.to_vec());
                    batch.put(
                        Tree::Deadlines,
                        deadlines::key(now, &due),
                        deadlines::value(now),
                    );
                    n += 1;
                }
                ControlFlow::Continue(())
            },
        )?;
        Ok(n)
    }

    /// Destroys a page of expired bucket keys in one atomic batch (one gate
    /// acquisition, one commit). Keys a hold covers are parked instead.
    fn destroy_due_keys(
        &self,
        items: &[(Vec<u8>, KeyId)],
        now: Timestamp,
        report: &mut CompactionReport,
    ) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let mut holds: HashMap<SubjectTag, _> = HashMap::new();
        let mut free = Vec::with_capacity(items.len());
        for (key, id) in items {
            let subject_holds = match holds.entry(id.subject) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(self.holds_of(&id.subject)?)
                }
            };
            let held = Self::hold_on(subject_holds, id.class).is_some();
            if held && self.blocked_by_hold(&id.subject, id.class, key, "expiry", now)? {
                report.blocked_by_hold += 1;
            } else {
                free.push((key, *id));
            }
        }
        let tags: Vec<SubjectTag> = free
            .iter()
            .map(|(_, id)| id.subject)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let _exclusive = self.gate.write(&tags);
        let mut batch = WriteBatch::new();
        let mut audit = Vec::new();
        let mut scopes = std::collections::BTreeSet::new();
        for (key, id) in &free {
            batch.remove(Tree::Deadlines, (*key).clone());
            if self.vault.destroy_one(id, now.as_second(), &mut batch)? {
                scopes.insert((id.subject, id.class));
                audit.push(PendingEntry::new(
                    AuditEvent::KeysDestroyed,
                    Some(id.subject),
                    Some(id.class),
                    format!(
                        "1 key destroyed; expiry bucket {} v{}; class {}",
                        id.bucket,
                        id.version,
                        self.class_name(id.class)
                    ),
                ));
                report.keys_destroyed += 1;
            }
        }
        // Removing an expired bucket's records means scanning its scope, so
        // the removals of a scope's buckets are gathered into one scan a
        // week: every removal of the week shares one index key. Physical
        // removal stays within the purge window; the key is already gone.
        let sweep = removal_sweep_time(now.as_second());
        for (tag, class) in scopes {
            let due = Due::RemoveCiphertext(tag, class);
            batch.put(
                Tree::Deadlines,
                deadlines::key(sweep, &due),
                deadlines::value(now.as_second()),
            );
        }
        self.audit.commit(
            self.storage.as_ref(),
            batch,
            &audit,
            now,
            Durability::Buffered,
        )?;
        for (_, id) in &free {
            self.vault.evict(id);
        }
        Ok(())
    }

    fn erase_due_scope(
        &self,
        tag: SubjectTag,
        class: u16,
        deadline_key: &[u8],
        now: Timestamp,
        report: &mut CompactionReport,
    ) -> Result<()> {
        let remove = |inner: &DbInner| -> Result<()> {
            let mut batch = WriteBatch::new();
            batch.remove(Tree::Deadlines, deadline_key.to_vec());
            Ok(inner.storage.apply(&batch, Durability::Buffered)?)
        };
        let Some(info) = self.subject_info(&tag)? else {
            return remove(self);
        };
        let Some(entry) = self.class_by_number(class) else {
            return remove(self);
        };
        if info.state == SubjectState::Erased
            || self
                .scope_erased_at(&tag, class, info.generation)?
                .is_some()
        {
            return remove(self);
        }
        if self.blocked_by_hold(&tag, class, deadline_key, "retention erasure", now)? {
            report.blocked_by_hold += 1;
            return Ok(());
        }
        let _exclusive = self.gate.write(&[tag]);
        let receipt =
            self.erase_locked(tag, &[tag], Some(&[entry]), ErasureReason::RetentionExpired)?;
        report.keys_destroyed += u64::try_from(receipt.keys_destroyed()).unwrap_or(u64::MAX);
        report.scopes_erased += u64::try_from(receipt.erased.len()).unwrap_or(u64::MAX);
        remove(self)
    }

    /// Re-encrypts the live records sealed under `old` with the bucket's
    /// next key version, and destroys `old`, in one batch.
    fn rekey(
        &self,
        old: KeyId,
        deadline_key: &[u8],
        now: Timestamp,
        report: &mut CompactionReport,
    ) -> Result<()> {
        let mut done = WriteBatch::new();
        done.remove(Tree::Deadlines, deadline_key.to_vec());
        done.remove(Tree::Debts, old.to_bytes().to_vec());
        let live = matches!(self.vault.read_entry(&old)?, Some(e) if e.state == KeyState::Active);
        let Some(class) = self.class_by_number(old.class).filter(|_| live) else {
            self.storage.apply(&done, Durability::Buffered)?;
            return Ok(());
        };
        if self.blocked_by_hold(&old.subject, old.class, deadline_key, "re-key", now)? {
            report.blocked_by_hold += 1;
            return Ok(());
        }
        let _exclusive = self.gate.write(&[old.subject]);
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
        let prefix = records::scope_prefix(&old.subject, old.class);
        let mut entries = Vec::new();
        scan_prefix(self.storage.as_ref(), Tree::Data, &prefix, &mut |k, v| {
            if Envelope::parse(v).is_ok_and(|e| {
                e.key_ref()
                    == KeyRef {
                        bucket: old.bucket,
                        version: old.version,
                    }
            }) {
                entries.push((k.to_vec(), v.to_vec()));
            }
            ControlFlow::Continue(())
        })?;
        let mut aad = Vec::new();
        let mut sealed = Vec::new();
        let mut batch = done;
        let new_ref = KeyRef {
            bucket: new_key.id.bucket,
            version: new_key.id.version,
        };
        let mut rekeyed = 0u64;
        for (k, v) in &entries {
            let Ok(envelope) = Envelope::parse(v) else {
                continue;
            };
            if envelope.expiry().is_some_and(|e| e <= now.as_second()) {
                continue;
            }
            records::associated_data(&self.store_id, k, &mut aad);
            // A record that no longer authenticates is not re-sealed: it was
            // unreadable already, and sealing it anew would launder it.
            let Ok(plain) = envelope.open(old_cipher, &aad) else {
                continue;
            };
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
            self.vault.note_seal(&new_key, &mut batch);
            rekeyed += 1;
        }
        self.vault.destroy_one(&old, now.as_second(), &mut batch)?;
        let entry = PendingEntry::new(
            AuditEvent::Rekeyed,
            Some(old.subject),
            Some(old.class),
            format!(
                "class {}; bucket {} v{} -> v{}; {rekeyed} records re-encrypted; old key destroyed",
                class.policy.name(),
                old.bucket,
                old.version,
                new_key.id.version
            ),
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
        report.keys_destroyed += 1;
        Ok(())
    }

    /// Removes the records whose keys are destroyed, for a page of scopes
    /// (or whole subjects), in as few batches as the records allow.
    fn remove_dead(
        &self,
        items: &[(Vec<u8>, SubjectTag, u16)],
        now: Timestamp,
        report: &mut CompactionReport,
    ) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let mut key_alive: HashMap<KeyId, bool> = HashMap::new();
        let mut removals = WriteBatch::new();
        let mut pending = 0usize;
        let mut done = WriteBatch::new();
        let mut audit = Vec::new();
        for (deadline_key, tag, class) in items {
            let prefix: Vec<u8> = if *class == ALL_CLASSES {
                tag.0.to_vec()
            } else {
                records::scope_prefix(tag, *class).to_vec()
            };
            let mut removed = 0u64;
            let mut after: Option<Vec<u8>> = None;
            loop {
                let mut page = Vec::new();
                let start = match &after {
                    Some(k) => Bound::Excluded(k.as_slice()),
                    None => Bound::Included(prefix.as_slice()),
                };
                self.storage.scan(
                    Tree::Data,
                    start,
                    Bound::Unbounded,
                    Order::Ascending,
                    &mut |k, v| {
                        if !k.starts_with(&prefix) {
                            return ControlFlow::Break(());
                        }
                        page.push((k.to_vec(), v.to_vec()));
                        if page.len() >= RECORD_PAGE {
                            ControlFlow::Break(())
                        } else {
                            ControlFlow::Continue(())
                        }
                    },
                )?;
                let full = page.len() >= RECORD_PAGE;
                after = page.last().map(|(k, _)| k.clone());
                for (k, v) in &page {
                    let Some(record_class) = k
                        .get(16..18)
                        .and_then(|c| c.try_into().ok())
                        .map(u16::from_be_bytes)
                    else {
                        continue;
                    };
                    let Ok(envelope) = Envelope::parse(v) else {
                        continue;
                    };
                    let r = envelope.key_ref();
                    let id = KeyId {
                        subject: *tag,
                        class: record_class,
                        bucket: r.bucket,
                        version: r.version,
                    };
                    let alive = match key_alive.get(&id) {
                        Some(alive) => *alive,
                        None => {
                            let alive = matches!(self.vault.read_entry(&id), Ok(Some(e)) if e.state == KeyState::Active);
                            key_alive.insert(id, alive);
                            alive
                        }
                    };
                    if !alive {
                        removals.remove(Tree::Data, k.clone());
                        pending += 1;
                        removed += 1;
                    }
                }
                if pending >= RECORD_PAGE * 8 {
                    self.storage
                        .apply(&std::mem::take(&mut removals), Durability::Buffered)?;
                    pending = 0;
                }
                if !full {
                    break;
                }
            }
            done.remove(Tree::Deadlines, deadline_key.clone());
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

impl Db {
    /// Runs one compaction pass at the store clock's current time, with no
    /// budget: everything due is done. See the module docs.
    ///
    /// # Errors
    /// Storage and key provider failures; work done before the failure is
    /// kept, and the rest is done by the next pass.
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
        let end = deadlines::upper_bound(now.as_second());
        let mut left = budget;
        // Pages continue after the last key seen, so an entry this build
        // cannot read is passed over instead of read again forever.
        let mut after: Option<Vec<u8>> = None;
        loop {
            let mut due = Vec::new();
            let start = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            inner.storage.scan(
                Tree::Deadlines,
                start,
                Bound::Excluded(&end),
                Order::Ascending,
                &mut |k, _| {
                    due.push(k.to_vec());
                    if due.len() >= DUE_PAGE {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                },
            )?;
            let Some(last) = due.last().cloned() else {
                break;
            };
            after = Some(last);
            let mut expired_keys = Vec::new();
            let mut others = Vec::new();
            for key in due {
                if left == 0 {
                    break;
                }
                match deadlines::decode_key(&key) {
                    Some((_, Due::DestroyKey(id))) => expired_keys.push((key, id)),
                    Some((_, due)) => others.push((key, due)),
                    // An entry this build cannot read is kept for a newer
                    // build, never guessed at.
                    None => continue,
                }
                left -= 1;
                report.items += 1;
            }
            inner.destroy_due_keys(&expired_keys, now, &mut report)?;
            let mut dead = Vec::new();
            for (key, due) in others {
                match due {
                    Due::EraseScope(tag, class) => {
                        inner.erase_due_scope(tag, class, &key, now, &mut report)?
                    }
                    Due::Rekey(id) => inner.rekey(id, &key, now, &mut report)?,
                    Due::RemoveCiphertext(tag, class) => dead.push((key, tag, class)),
                    Due::DestroyKey(_) => {}
                }
            }
            inner.remove_dead(&dead, now, &mut report)?;
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
        // After the due erasures: a key destroyed by this pass must not be
        // re-wrapped under a new epoch first (that copy would outlive W).
        inner.maintain_epochs(now, &mut report)?;
        inner.storage.flush()?;
        Ok(report)
    }

    /// Starts a background compactor: a pass every `every`, at most `budget`
    /// items each. Stopped (after its current pass) by [`Compactor::stop`]
    /// or by dropping it; restarting later resumes from the deadline index.
    ///
    /// # Errors
    /// The thread could not be started.
    pub fn start_compactor(&self, every: Duration, budget: usize) -> Result<Compactor> {
        let (stop, stopped) = mpsc::channel::<()>();
        let db = self.clone();
        let last = Arc::new(Mutex::new(None));
        let last_in_thread = Arc::clone(&last);
        let handle = std::thread::Builder::new()
            .name("shredkv-compact".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    let outcome = db
                        .compact_with(budget, &mut |_| {})
                        .map_err(|e| e.to_string());
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

/// A running background compactor. Dropping it stops it.
#[derive(Debug)]
pub struct Compactor {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
    last: Arc<Mutex<Option<std::result::Result<CompactionReport, String>>>>,
}

impl Compactor {
    /// The outcome of the last pass, if one ran (an error as its message).
    pub fn last_outcome(&self) -> Option<std::result::Result<CompactionReport, String>> {
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
            let _ = handle.join();
        }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.shutdown();
    }
}
