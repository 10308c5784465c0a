//! How an erasure reaches the store, and what a retry of it finds.
//!
//! **One batch** when the backend takes it whole (sled, redb and memory have
//! no limit; etcd takes up to `--max-txn-ops` ops): states, ledger entries,
//! deadlines, key tombstones and audit entries land together (G1).
//!
//! **In chunks** when it does not (an account with many end users on etcd),
//! each chunk durable before the next:
//!
//! 1. the marker `erasure_pending/‹requested tag›` (the erasure's time,
//!    reason and classes; the subjects only when it erases several
//!    families, see [`PendingErasure`]) with the requested subject's own
//!    writes: from here on the erasure is decided;
//! 2. the other subjects' writes (state, ledger, deadline and audit of one
//!    subject never split), then key tombstones, packed up to the limit;
//! 3. the marker removed, with the stored receipt.
//!
//! Nothing is served in between: the chunks run under the gate's write lock
//! over every subject of the erasure; if one fails, this process refuses
//! those subjects while the marker is in the store
//! ([`DbInner::refuse_unfinished`]), and a retry of the erasure, or the next
//! open, finishes it from the marker ([`DbInner::finish_pending_erasure`]):
//! tombstones for every live key left under a scope the ledger says is
//! erased, then the subjects not yet erased, at the marker's time and reason.
//!
//! **Retries.** A stored receipt `receipt/‹requested tag›` (the receipt, the
//! subject's generation and the classes asked for) answers a retry of an
//! erasure that landed but whose answer was lost: the same receipt, and no
//! second ledger or audit entry. It is written in the erasure's (last) batch.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use jiff::Timestamp;
use shredkv_crypto::{FormatError, SubjectTag};

use super::erase::{ErasedScope, Receipt, Retained};
use super::{DbInner, meta};
use crate::audit::{AuditHead, PendingEntry};
use crate::codec::{Reader, Writer, saturating_time};
use crate::error::{Error, Location, Result};
use crate::ledger::{ALL_CLASSES, ErasureReason};
use crate::records;
use crate::storage::{Durability, Tree, WriteBatch, scan_prefix};
use crate::subjects::SubjectState;

/// The smallest batch limit chunked erasures work with: one subject's
/// writes (state, ledger, deadline and audit for each of a few classes)
/// must fit one chunk with the marker.
const MIN_BATCH_OPS: usize = 32;

/// How [`DbInner::erase_locked_with`] runs.
#[derive(Debug, Clone, Default)]
pub(crate) struct EraseOptions {
    /// The erasure's time (a resumed erasure keeps its first one); `None`:
    /// the store clock.
    pub(crate) at: Option<i64>,
    /// Store the receipt for retries (`Db::shred` and erasure requests; not
    /// compaction, which no caller retries).
    pub(crate) keep_receipt: bool,
    /// A stored receipt to answer with when nothing is left to erase.
    pub(crate) answer_retry_with: Option<StoredReceipt>,
}

/// One subject's writes in an erasure.
pub(crate) struct SubjectErasure {
    pub(crate) tag: SubjectTag,
    /// Its state, ledger entries, deadlines, parked erasures.
    pub(crate) logical: WriteBatch,
    /// Its audit entries.
    pub(crate) audit: Vec<PendingEntry>,
    /// Its key tombstones.
    pub(crate) tombstones: WriteBatch,
}

impl SubjectErasure {
    pub(crate) fn new(tag: SubjectTag) -> Self {
        Self {
            tag,
            logical: WriteBatch::new(),
            audit: Vec::new(),
            tombstones: WriteBatch::new(),
        }
    }

    fn ops(&self) -> usize {
        self.logical.ops.len() + self.audit.len() + self.tombstones.ops.len()
    }
}

/// Everything an erasure writes, per subject, the requested one first.
pub(crate) struct ErasureWrites<'a> {
    pub(crate) requested: SubjectTag,
    pub(crate) tags: &'a [SubjectTag],
    /// The classes asked for (`None`: all).
    pub(crate) classes: Option<Vec<u16>>,
    pub(crate) reason: ErasureReason,
    pub(crate) erased_at: Timestamp,
    pub(crate) groups: Vec<SubjectErasure>,
}

/// What an interrupted chunked erasure left to finish (meta
/// `erasure_pending/‹requested tag›`).
///
/// Version 2 (the erasure of one subject's family: the subject and, for an
/// account, its end users) names no subject: the family is listed again
/// from the store's child index when the erasure is finished, so the first
/// chunk is the same size for an account of any size. End users are never
/// removed from that index, and none can join an account while its erasure
/// is unfinished (registration is refused), so the listing is the one the
/// erasure started with. Version 1 lists the subjects (16 bytes each): for
/// erasures of several families at once (`Db::shred_each`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingErasure {
    pub(crate) erased_at: i64,
    pub(crate) reason: ErasureReason,
    pub(crate) classes: Option<Vec<u16>>,
    /// The subjects: as the marker lists them (version 1), or as the store
    /// lists the requested subject's family (version 2).
    pub(crate) tags: Vec<SubjectTag>,
    /// Whether the marker lists `tags` (version 1) or they are the
    /// requested subject's family (version 2).
    pub(crate) listed: bool,
}

const PENDING_WHAT: &str = "pending erasure";
const PENDING_LISTED: u8 = 1;
const PENDING_FAMILY: u8 = 2;
const RECEIPT_WHAT: &str = "stored receipt";
const RECEIPT_VERSION: u8 = 1;

fn write_classes(w: &mut Writer, classes: Option<&[u16]>) {
    match classes {
        None => {
            w.u8(0);
        }
        Some(list) => {
            w.u8(1).u32(u32::try_from(list.len()).unwrap_or(u32::MAX));
            for class in list {
                w.u16(*class);
            }
        }
    }
}

fn read_classes(r: &mut Reader<'_>) -> Result<Option<Vec<u16>>, FormatError> {
    match r.u8()? {
        0 => Ok(None),
        1 => {
            let n = r.u32()?;
            // Each class takes two bytes: a count beyond the rest is damage.
            (0..n).map(|_| r.u16()).collect::<Result<_, _>>().map(Some)
        }
        _ => Err(r.invalid("unknown classes selection")),
    }
}

impl PendingErasure {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let version = if self.listed {
            PENDING_LISTED
        } else {
            PENDING_FAMILY
        };
        let mut w = Writer::new(version, 16 + 16 * self.tags.len());
        w.i64(self.erased_at).u8(self.reason.code());
        write_classes(&mut w, self.classes.as_deref());
        if self.listed {
            w.u32(u32::try_from(self.tags.len()).unwrap_or(u32::MAX));
            for tag in &self.tags {
                w.bytes(&tag.0);
            }
        }
        w.finish()
    }

    /// A marker as stored; a version 2 marker's `tags` are empty until
    /// the family is listed ([`DbInner::pending_erasure`]).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let listed = bytes.first() != Some(&PENDING_FAMILY);
        let version = if listed {
            PENDING_LISTED
        } else {
            PENDING_FAMILY
        };
        let mut r = Reader::checked(PENDING_WHAT, bytes, version)?;
        let erased_at = r.i64()?;
        let reason =
            ErasureReason::from_code(r.u8()?).ok_or_else(|| r.invalid("unknown erasure reason"))?;
        let classes = read_classes(&mut r)?;
        let tags = if listed {
            let n = r.u32()?;
            (0..n)
                .map(|_| r.array::<16>().map(SubjectTag))
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        r.end()?;
        Ok(Self {
            erased_at,
            reason,
            classes,
            tags,
            listed,
        })
    }
}

/// A receipt kept for retries (meta `receipt/‹requested tag›`). Only a
/// receipt that retains nothing is kept: a retry is answered from it only
/// when nothing is left to erase, and then nothing can be retained either
/// (a scope still held is still work). So hold reasons, which the store
/// keeps encrypted, never land here in plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredReceipt {
    /// The requested subject's generation when it was erased: a receipt of
    /// an earlier life of the subject answers nothing.
    pub(crate) generation: u32,
    /// The classes asked for (`None`: all).
    pub(crate) classes: Option<Vec<u16>>,
    pub(crate) receipt: Receipt,
}

impl StoredReceipt {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let receipt = &self.receipt;
        let mut w = Writer::new(RECEIPT_VERSION, 96 + 48 * receipt.erased.len());
        w.u32(self.generation);
        write_classes(&mut w, self.classes.as_deref());
        w.bytes(&receipt.subject.0)
            .i64(receipt.erased_at.as_second())
            .u8(receipt.reason.code())
            .u32(u32::try_from(receipt.erased.len()).unwrap_or(u32::MAX));
        for scope in &receipt.erased {
            w.bytes(&scope.subject.0);
            match &scope.class {
                None => w.u8(0),
                Some(name) => w.u8(1).var_bytes(name.as_bytes()),
            };
            w.u64(scope.keys_destroyed as u64);
        }
        w.u64(receipt.audit_head.seq)
            .bytes(&receipt.audit_head.hash);
        w.finish()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::checked(RECEIPT_WHAT, bytes, RECEIPT_VERSION)?;
        let text = |r: &mut Reader<'_>| -> Result<String, FormatError> {
            let raw = r.var_bytes()?;
            String::from_utf8(raw.to_vec()).map_err(|_| r.invalid("a name that is not UTF-8"))
        };
        let generation = r.u32()?;
        let classes = read_classes(&mut r)?;
        let subject = SubjectTag(r.array::<16>()?);
        let erased_at = saturating_time(r.i64()?);
        let reason =
            ErasureReason::from_code(r.u8()?).ok_or_else(|| r.invalid("unknown erasure reason"))?;
        let n = r.u32()?;
        let mut erased = Vec::new();
        for _ in 0..n {
            let subject = SubjectTag(r.array::<16>()?);
            let class = match r.u8()? {
                0 => None,
                1 => Some(text(&mut r)?),
                _ => return Err(r.invalid("unknown class presence")),
            };
            let keys_destroyed = usize::try_from(r.u64()?).unwrap_or(usize::MAX);
            erased.push(ErasedScope {
                subject,
                class,
                keys_destroyed,
            });
        }
        let audit_head = AuditHead {
            seq: r.u64()?,
            hash: r.array::<32>()?,
        };
        r.end()?;
        Ok(Self {
            generation,
            classes,
            receipt: Receipt {
                subject,
                erased_at,
                reason,
                erased,
                retained: Vec::new(),
                audit_head,
            },
        })
    }
}

fn pending_key(requested: &SubjectTag) -> Vec<u8> {
    [meta::ERASURE_PENDING_PREFIX, &requested.0].concat()
}

fn receipt_key(requested: &SubjectTag) -> Vec<u8> {
    [meta::RECEIPT_PREFIX, &requested.0].concat()
}

fn meta_location(what: &'static str, tag: &SubjectTag) -> Box<Location> {
    Box::new(Location {
        tree: "meta",
        subject: Some(*tag),
        class: None,
        key_hex: format!("{what} of {}", tag.to_hex()),
    })
}

/// The subjects of chunked erasures that failed part way in this process,
/// each with the subject its marker is under. Checked on every access only
/// while not empty (one atomic load otherwise).
#[derive(Debug, Default)]
pub(crate) struct Unfinished {
    any: AtomicBool,
    tags: Mutex<HashMap<SubjectTag, SubjectTag>>,
}

impl Unfinished {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SubjectTag, SubjectTag>> {
        self.tags
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn note(&self, requested: SubjectTag, tags: &[SubjectTag]) {
        let mut map = self.lock();
        for tag in tags {
            map.insert(*tag, requested);
        }
        self.any.store(true, Ordering::Release);
    }

    fn clear(&self, requested: &SubjectTag) {
        let mut map = self.lock();
        map.retain(|_, r| r != requested);
        self.any.store(!map.is_empty(), Ordering::Release);
    }
}

impl DbInner {
    /// Writes `plan` durably: in one batch, or in chunks under a marker when
    /// the backend's batch limit is smaller (module docs). `keep`: the
    /// receipt to store for retries, with the audit head filled in.
    /// Returns the audit chain's last entry recording the erasure.
    pub(crate) fn commit_erasure(
        &self,
        plan: ErasureWrites<'_>,
        keep: Option<&Receipt>,
    ) -> Result<AuditHead> {
        // A receipt that retains something is not kept (see
        // `StoredReceipt`), and an older one must not answer for it.
        let drop_stored = keep.is_some_and(|receipt| !receipt.retained.is_empty());
        let keep = match keep {
            Some(receipt) if receipt.retained.is_empty() => {
                Some(self.receipt_record(&plan, receipt)?)
            }
            _ => None,
        };
        let total: usize = plan.groups.iter().map(SubjectErasure::ops).sum::<usize>() + 1;
        match self.storage.max_batch_ops() {
            Some(limit) if total > limit => self.commit_in_chunks(plan, keep, drop_stored, limit),
            _ => {
                let mut batch = WriteBatch::new();
                let mut audit = Vec::new();
                for group in plan.groups {
                    batch.ops.extend(group.logical.ops);
                    batch.ops.extend(group.tombstones.ops);
                    audit.extend(group.audit);
                }
                let requested = plan.requested;
                self.audit.commit_finishing(
                    self.storage.as_ref(),
                    batch,
                    &audit,
                    plan.erased_at,
                    Durability::Durable,
                    &mut |head, batch| {
                        self.store_receipt(
                            batch,
                            &requested,
                            keep.as_ref().map(|r| r(head)),
                            drop_stored,
                        );
                    },
                )
            }
        }
    }

    /// The stored receipt of `receipt` once its audit head is known.
    fn receipt_record(
        &self,
        plan: &ErasureWrites<'_>,
        receipt: &Receipt,
    ) -> Result<impl Fn(&AuditHead) -> Vec<u8> + use<>> {
        let generation = self
            .subject_info(&plan.requested)?
            .map_or(0, |info| info.generation);
        let stored = StoredReceipt {
            generation,
            classes: plan.classes.clone(),
            receipt: receipt.clone(),
        };
        Ok(move |head: &AuditHead| {
            let mut stored = stored.clone();
            stored.receipt.audit_head = *head;
            stored.encode()
        })
    }

    fn commit_in_chunks(
        &self,
        plan: ErasureWrites<'_>,
        keep: Option<impl Fn(&AuditHead) -> Vec<u8>>,
        drop_stored: bool,
        limit: usize,
    ) -> Result<AuditHead> {
        if limit < MIN_BATCH_OPS {
            return Err(Error::InvalidArgument {
                what: "max_txn_ops",
                detail: format!(
                    "the backend takes batches of at most {limit} ops; erasures need at least \
                     {MIN_BATCH_OPS} (raise the etcd cluster's --max-txn-ops and the store's \
                     max_txn_ops); nothing was erased"
                ),
            });
        }
        let marker_key = pending_key(&plan.requested);
        // The erasure of one family names no subject: its first chunk is
        // the same size for any number of end users (`PendingErasure`).
        let family: std::collections::HashSet<SubjectTag> =
            match self.subject_info(&plan.requested)? {
                Some(info) => self
                    .with_end_users(&plan.requested, &info)?
                    .into_iter()
                    .collect(),
                None => std::collections::HashSet::new(),
            };
        let erasing: std::collections::HashSet<SubjectTag> = plan.tags.iter().copied().collect();
        let marker = PendingErasure {
            erased_at: plan.erased_at.as_second(),
            reason: plan.reason,
            classes: plan.classes.clone(),
            tags: plan.tags.to_vec(),
            listed: family != erasing,
        };
        let marker = marker.encode();
        if !self.value_fits(marker.len()) {
            return Err(Error::InvalidArgument {
                what: "max_request_bytes",
                detail: format!(
                    "an erasure of {} subjects needs a marker of {} bytes (16 a subject), more \
                     than the largest value the backend takes ({} bytes); nothing was erased. \
                     On etcd, raise the cluster's --max-request-bytes, and the store's \
                     max_request_bytes, to at least {} bytes (on TiKV, its \
                     txn-entry-size-limit)",
                    plan.tags.len(),
                    marker.len(),
                    self.storage.max_value_bytes().unwrap_or(0),
                    2 * marker.len() + 4096
                ),
            });
        }
        let mut chunks: Vec<(WriteBatch, Vec<PendingEntry>)> =
            vec![(WriteBatch::new(), Vec::new())];
        chunks[0].0.put(Tree::Meta, marker_key.clone(), marker);
        let mut groups = plan.groups;
        // The requested subject first: its state lands with the marker.
        groups.sort_by_key(|group| group.tag != plan.requested);
        let room =
            |chunk: &(WriteBatch, Vec<PendingEntry>)| limit - chunk.0.ops.len() - chunk.1.len();
        for group in groups {
            let unit = group.logical.ops.len() + group.audit.len();
            if unit + 1 > limit {
                return Err(Error::InvalidArgument {
                    what: "max_txn_ops",
                    detail: format!(
                        "one subject's erasure needs {unit} ops in one batch; the backend takes \
                         {limit} (raise the etcd cluster's --max-txn-ops); nothing was erased"
                    ),
                });
            }
            if chunks.last().is_some_and(|chunk| room(chunk) < unit) {
                chunks.push((WriteBatch::new(), Vec::new()));
            }
            if let Some(chunk) = chunks.last_mut() {
                chunk.0.ops.extend(group.logical.ops);
                chunk.1.extend(group.audit);
            }
            for op in group.tombstones.ops {
                if chunks.last().is_some_and(|chunk| room(chunk) == 0) {
                    chunks.push((WriteBatch::new(), Vec::new()));
                }
                if let Some(chunk) = chunks.last_mut() {
                    chunk.0.ops.push(op);
                }
            }
        }
        // The marker's removal and the receipt end the erasure.
        if chunks.last().is_some_and(|chunk| room(chunk) < 2) {
            chunks.push((WriteBatch::new(), Vec::new()));
        }
        let last = chunks.len() - 1;
        let mut recorded: Option<AuditHead> = None;
        for (i, (batch, entries)) in chunks.into_iter().enumerate() {
            let has_entries = !entries.is_empty();
            let result = self.audit.commit_finishing(
                self.storage.as_ref(),
                batch,
                &entries,
                plan.erased_at,
                Durability::Durable,
                &mut |head, batch| {
                    if i == last {
                        batch.remove(Tree::Meta, marker_key.clone());
                        let head = if has_entries {
                            *head
                        } else {
                            recorded.unwrap_or(*head)
                        };
                        self.store_receipt(
                            batch,
                            &plan.requested,
                            keep.as_ref().map(|r| r(&head)),
                            drop_stored,
                        );
                    }
                },
            );
            match result {
                Ok(head) => {
                    if has_entries || recorded.is_none() {
                        recorded = Some(head);
                    }
                }
                Err(err) => {
                    // The marker may be in the store (even when the first
                    // chunk failed: its outcome can be unknown): refuse the
                    // subjects until a retry or the next open finishes it.
                    self.unfinished_erasures.note(plan.requested, plan.tags);
                    return Err(err);
                }
            }
        }
        Ok(recorded.unwrap_or(AuditHead {
            seq: 0,
            hash: [0; 32],
        }))
    }

    /// Whether a value of `len` bytes may be written
    /// ([`Storage::max_value_bytes`](crate::storage::Storage::max_value_bytes)).
    fn value_fits(&self, len: usize) -> bool {
        self.storage
            .max_value_bytes()
            .is_none_or(|limit| len <= limit)
    }

    /// Adds the stored receipt `record` of an erasure of `requested` to
    /// `batch`; or, when there is none (or `drop_stored`), removes the one
    /// stored before, which must not answer for this erasure. A receipt too
    /// large for a request (an account with tens of thousands of end users
    /// on etcd) is not stored: a retry then finds nothing to erase and
    /// answers with an empty receipt, as after a damaged one.
    fn store_receipt(
        &self,
        batch: &mut WriteBatch,
        requested: &SubjectTag,
        record: Option<Vec<u8>>,
        drop_stored: bool,
    ) {
        match record {
            Some(record) if self.value_fits(record.len()) => {
                batch.put(Tree::Meta, receipt_key(requested), record);
            }
            Some(_) => batch.remove(Tree::Meta, receipt_key(requested)),
            None if drop_stored => batch.remove(Tree::Meta, receipt_key(requested)),
            None => {}
        }
    }

    /// The marker of an unfinished chunked erasure requested for
    /// `requested`, if any.
    pub(crate) fn pending_erasure(&self, requested: &SubjectTag) -> Result<Option<PendingErasure>> {
        let Some(bytes) = self.storage.get(Tree::Meta, &pending_key(requested))? else {
            return Ok(None);
        };
        let mut marker = PendingErasure::decode(&bytes).map_err(|source| Error::Corrupt {
            location: meta_location("pending erasure", requested),
            source,
        })?;
        if !marker.listed {
            marker.tags = match self.subject_info(requested)? {
                Some(info) => self.with_end_users(requested, &info)?,
                None => vec![*requested],
            };
        }
        Ok(Some(marker))
    }

    /// The receipt stored for a retry of an erasure of `requested`.
    pub(crate) fn stored_receipt(&self, requested: &SubjectTag) -> Result<Option<StoredReceipt>> {
        let Some(bytes) = self.storage.get(Tree::Meta, &receipt_key(requested))? else {
            return Ok(None);
        };
        // A damaged receipt only costs the retry its answer: the retry then
        // finds nothing to erase and answers with an empty receipt.
        Ok(StoredReceipt::decode(&bytes).ok())
    }

    /// Refuses access to `tag` while a chunked erasure covering it is
    /// unfinished (its marker in the store). Cheap unless one failed.
    pub(crate) fn refuse_unfinished(&self, tag: &SubjectTag) -> Result<()> {
        if !self.unfinished_erasures.any.load(Ordering::Acquire) {
            return Ok(());
        }
        let Some(requested) = self.unfinished_erasures.lock().get(tag).copied() else {
            return Ok(());
        };
        match self.pending_erasure(&requested)? {
            Some(marker) => Err(Error::Erased {
                subject: *tag,
                class: None,
                erased_at: saturating_time(marker.erased_at),
            }),
            None => {
                // Finished (or its first chunk never landed).
                self.unfinished_erasures.clear(&requested);
                Ok(())
            }
        }
    }

    /// Finishes the chunked erasure `marker` describes (module docs). The
    /// caller holds the gate's write lock over `marker.tags`. Returns the
    /// receipt it stores.
    pub(crate) fn finish_pending_erasure(
        &self,
        requested: SubjectTag,
        marker: PendingErasure,
    ) -> Result<Receipt> {
        let at = marker.erased_at;
        // Tombstones for keys still live under scopes already erased.
        let mut sweep = WriteBatch::new();
        for tag in &marker.tags {
            let Some(info) = self.subject_info(tag)? else {
                continue;
            };
            match &marker.classes {
                None if info.state == SubjectState::Erased => {
                    self.vault.destroy_prefix(&tag.0, at, &mut sweep)?;
                }
                None => {}
                Some(list) => {
                    for class in list {
                        if self
                            .scope_erased_at(tag, *class, info.generation)?
                            .is_some()
                        {
                            let prefix = records::scope_prefix(tag, *class);
                            self.vault.destroy_prefix(&prefix, at, &mut sweep)?;
                        }
                    }
                }
            }
        }
        let limit = self.storage.max_batch_ops().unwrap_or(usize::MAX).max(1);
        for chunk in sweep.ops.chunks(limit) {
            let mut batch = WriteBatch::new();
            batch.ops.extend_from_slice(chunk);
            self.storage.apply(&batch, Durability::Durable)?;
        }
        self.forget_after_failure(&marker.tags);
        // Then the subjects not erased yet, at the erasure's own time.
        let classes: Option<Vec<&super::ClassEntry>> = marker.classes.as_ref().map(|list| {
            list.iter()
                .filter_map(|n| self.class_by_number(*n))
                .collect()
        });
        self.erase_locked_with(
            requested,
            &marker.tags,
            classes.as_deref(),
            marker.reason,
            EraseOptions {
                at: Some(at),
                ..EraseOptions::default()
            },
        )?;
        // The receipt, from what the ledger now says.
        let receipt = self.receipt_from_ledger(requested, &marker)?;
        let generation = self
            .subject_info(&requested)?
            .map_or(0, |info| info.generation);
        let mut done = WriteBatch::new();
        done.remove(Tree::Meta, pending_key(&requested));
        let record = receipt.retained.is_empty().then(|| {
            StoredReceipt {
                generation,
                classes: marker.classes.clone(),
                receipt: receipt.clone(),
            }
            .encode()
        });
        self.store_receipt(&mut done, &requested, record, true);
        self.storage.apply(&done, Durability::Durable)?;
        self.unfinished_erasures.clear(&requested);
        Ok(receipt)
    }

    /// What the ledger records of the erasure `marker` describes: every
    /// scope of its subjects erased at its time, and what holds keep.
    pub(crate) fn receipt_from_ledger(
        &self,
        requested: SubjectTag,
        marker: &PendingErasure,
    ) -> Result<Receipt> {
        let mut receipt = Receipt {
            subject: requested,
            erased_at: saturating_time(marker.erased_at),
            reason: marker.reason,
            erased: Vec::new(),
            retained: Vec::new(),
            audit_head: self.audit.head(self.storage.as_ref())?,
        };
        let all: Vec<u16> = self.classes.iter().map(|c| c.number).collect();
        for tag in &marker.tags {
            let Some(info) = self.subject_info(tag)? else {
                continue;
            };
            if marker.classes.is_none()
                && let Some(entry) = self.ledger_entry(tag, ALL_CLASSES)?
                && entry.erases(info.generation)
                && entry.erased_at == marker.erased_at
            {
                receipt.erased.push(ErasedScope {
                    subject: *tag,
                    class: None,
                    keys_destroyed: entry.keys_destroyed as usize,
                });
                continue;
            }
            let holds = self.holds_of(tag)?;
            for class in marker.classes.as_deref().unwrap_or(&all) {
                let name = self.class_name(*class);
                match self.ledger_entry(tag, *class)? {
                    Some(entry) if entry.erases(info.generation) => {
                        if entry.erased_at == marker.erased_at && entry.keys_destroyed > 0 {
                            receipt.erased.push(ErasedScope {
                                subject: *tag,
                                class: Some(name),
                                keys_destroyed: entry.keys_destroyed as usize,
                            });
                        }
                    }
                    _ => {
                        if let Some(hold) = Self::hold_on(&holds, *class)
                            && self.scope_held(tag, *class)?
                        {
                            receipt.retained.push(Retained {
                                subject: *tag,
                                class: name,
                                until: None,
                                reason: format!("legal hold: {hold}"),
                            });
                        }
                    }
                }
            }
        }
        Ok(receipt)
    }

    /// Finishes, at open and before anything is served, every chunked
    /// erasure a crash or a failure interrupted.
    pub(crate) fn finish_pending_erasures(&self) -> Result<()> {
        let mut pending = Vec::new();
        scan_prefix(
            self.storage.as_ref(),
            Tree::Meta,
            meta::ERASURE_PENDING_PREFIX,
            &mut |k, _| {
                if let Some(tag) = k
                    .get(meta::ERASURE_PENDING_PREFIX.len()..)
                    .and_then(|rest| <[u8; 16]>::try_from(rest).ok())
                {
                    pending.push(SubjectTag(tag));
                }
                std::ops::ControlFlow::Continue(())
            },
        )?;
        for requested in pending {
            if let Some(marker) = self.pending_erasure(&requested)? {
                let _exclusive = self.gate.write(&marker.tags);
                self.finish_pending_erasure(requested, marker)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_and_stored_receipts_round_trip_and_refuse_damage() {
        let marker = PendingErasure {
            erased_at: 1_800_000_000,
            reason: ErasureReason::Operator,
            classes: Some(vec![3, 7]),
            tags: vec![SubjectTag([1; 16]), SubjectTag([2; 16])],
            listed: true,
        };
        let bytes = marker.encode();
        assert_eq!(PendingErasure::decode(&bytes).expect("decodes"), marker);
        // A family's marker names no subject, whatever the family's size.
        let family = PendingErasure {
            listed: false,
            ..marker.clone()
        };
        let family_bytes = family.encode();
        let many = PendingErasure {
            tags: vec![SubjectTag([3; 16]); 10_000],
            ..family.clone()
        };
        assert_eq!(many.encode(), family_bytes);
        assert_eq!(
            PendingErasure::decode(&family_bytes).expect("decodes"),
            PendingErasure {
                tags: Vec::new(),
                ..family
            }
        );
        for (i, _) in family_bytes.iter().enumerate() {
            let mut damaged = family_bytes.clone();
            damaged[i] ^= 0x40;
            assert!(PendingErasure::decode(&damaged).is_err(), "byte {i}");
        }
        let stored = StoredReceipt {
            generation: 2,
            classes: None,
            receipt: Receipt {
                subject: SubjectTag([1; 16]),
                erased_at: Timestamp::from_second(1_800_000_000).expect("a time"),
                reason: ErasureReason::Operator,
                erased: vec![ErasedScope {
                    subject: SubjectTag([2; 16]),
                    class: Some("message_content".into()),
                    keys_destroyed: 4,
                }],
                retained: Vec::new(),
                audit_head: AuditHead {
                    seq: 41,
                    hash: [9; 32],
                },
            },
        };
        let encoded = stored.encode();
        assert_eq!(StoredReceipt::decode(&encoded).expect("decodes"), stored);
        for (i, _) in encoded.iter().enumerate() {
            let mut damaged = encoded.clone();
            damaged[i] ^= 0x40;
            assert!(StoredReceipt::decode(&damaged).is_err(), "byte {i}");
        }
        assert!(PendingErasure::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
