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
//! A receipt larger than the backend's largest value (tens of thousands of
//! subjects on etcd) is stored in pages `receipt_page/‹requested tag›‹index›`,
//! each a request of its own after the marker, and a head in the last batch
//! naming their count and digest ([`StoredReceipt`]).

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
/// erasures of several families at once (`Db::shred_each`). Version 3 is
/// version 1 too large for one value: the subjects are in pages
/// `erasure_pending_page/‹requested tag›‹index u32 BE›` (v1 ‖ count u32 ‖
/// tags ‖ CRC32), written before the marker, named by its [`Paging`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingErasure {
    pub(crate) erased_at: i64,
    pub(crate) reason: ErasureReason,
    pub(crate) classes: Option<Vec<u16>>,
    /// The subjects: as the marker lists them (version 1), or as the store
    /// lists the requested subject's family (version 2).
    pub(crate) tags: Vec<SubjectTag>,
    /// Whether the marker lists `tags` (version 1, or 3 in pages) or they
    /// are the requested subject's family (version 2).
    pub(crate) listed: bool,
    /// Version 3: where the listed subjects are (`tags` is then empty until
    /// the pages are read: [`DbInner::pending_erasure`]).
    pub(crate) paging: Option<Paging>,
}

const PENDING_WHAT: &str = "pending erasure";
const PENDING_LISTED: u8 = 1;
const PENDING_FAMILY: u8 = 2;
const PENDING_PAGED: u8 = 3;
const TAG_PAGE_WHAT: &str = "pending erasure page";
const TAG_PAGE_VERSION: u8 = 1;
const RECEIPT_WHAT: &str = "stored receipt";

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

fn write_paging(w: &mut Writer, paging: &Paging) {
    w.u32(paging.items).u32(paging.pages).bytes(&paging.digest);
}

fn read_paging(r: &mut Reader<'_>) -> Result<Paging, FormatError> {
    Ok(Paging {
        items: r.u32()?,
        pages: r.u32()?,
        digest: r.array::<32>()?,
    })
}

/// One page of a paged marker's subjects: v1 ‖ count u32 ‖ tags ‖ CRC32.
pub(crate) fn encode_tag_page(tags: &[SubjectTag]) -> Vec<u8> {
    let mut w = Writer::new(TAG_PAGE_VERSION, 8 + 16 * tags.len());
    w.u32(u32::try_from(tags.len()).unwrap_or(u32::MAX));
    for tag in tags {
        w.bytes(&tag.0);
    }
    w.finish()
}

pub(crate) fn decode_tag_page(bytes: &[u8]) -> Result<Vec<SubjectTag>, FormatError> {
    let mut r = Reader::checked(TAG_PAGE_WHAT, bytes, TAG_PAGE_VERSION)?;
    let mut tags = Vec::new();
    for _ in 0..r.u32()? {
        tags.push(SubjectTag(r.array::<16>()?));
    }
    r.end()?;
    Ok(tags)
}

impl PendingErasure {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let version = match (self.listed, &self.paging) {
            (_, Some(_)) => PENDING_PAGED,
            (true, None) => PENDING_LISTED,
            (false, None) => PENDING_FAMILY,
        };
        let mut w = Writer::new(version, 64 + 16 * self.tags.len());
        w.i64(self.erased_at).u8(self.reason.code());
        write_classes(&mut w, self.classes.as_deref());
        if let Some(paging) = &self.paging {
            write_paging(&mut w, paging);
        } else if self.listed {
            w.u32(u32::try_from(self.tags.len()).unwrap_or(u32::MAX));
            for tag in &self.tags {
                w.bytes(&tag.0);
            }
        }
        w.finish()
    }

    /// A marker as stored; the `tags` of a version 2 or 3 marker are empty
    /// until the family is listed or the pages read
    /// ([`DbInner::pending_erasure`]).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let version = match bytes.first() {
            Some(&PENDING_FAMILY) => PENDING_FAMILY,
            Some(&PENDING_PAGED) => PENDING_PAGED,
            _ => PENDING_LISTED,
        };
        let listed = version != PENDING_FAMILY;
        let mut r = Reader::checked(PENDING_WHAT, bytes, version)?;
        let erased_at = r.i64()?;
        let reason =
            ErasureReason::from_code(r.u8()?).ok_or_else(|| r.invalid("unknown erasure reason"))?;
        let classes = read_classes(&mut r)?;
        let paging = if version == PENDING_PAGED {
            Some(read_paging(&mut r)?)
        } else {
            None
        };
        let tags = if version == PENDING_LISTED {
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
            paging,
        })
    }
}

/// A receipt kept for retries (meta `receipt/‹requested tag›`). Only a
/// receipt that retains nothing is kept: a retry is answered from it only
/// when nothing is left to erase, and then nothing can be retained either
/// (a scope still held is still work). So hold reasons, which the store
/// keeps encrypted, never land here in plaintext.
///
/// Version 1 holds the whole receipt. Version 2 is the head of a receipt
/// larger than the backend takes in one value (an account with tens of
/// thousands of end users on etcd): everything but the erased scopes, which
/// are in pages `receipt_page/‹requested tag›‹index u32 BE›`, named by their
/// count and digest ([`Paging`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredReceipt {
    /// The requested subject's generation when it was erased: a receipt of
    /// an earlier life of the subject answers nothing.
    pub(crate) generation: u32,
    /// The classes asked for (`None`: all).
    pub(crate) classes: Option<Vec<u16>>,
    pub(crate) receipt: Receipt,
    /// A head whose scopes are in pages (`receipt.erased` is then empty
    /// until the pages are read: [`DbInner::stored_receipt`]).
    pub(crate) paging: Option<Paging>,
}

/// Where the items of a record too large for one value are: a paged
/// receipt's erased scopes, a paged marker's subjects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Paging {
    /// The items over all pages.
    pub(crate) items: u32,
    /// Pages `0..pages`.
    pub(crate) pages: u32,
    /// SHA-256 over the pages in order, each as length u32 BE ‖ bytes: a
    /// page missing, damaged or left by another erasure does not answer.
    pub(crate) digest: [u8; 32],
}

const RECEIPT_WHOLE: u8 = 1;
const RECEIPT_HEAD: u8 = 2;
const RECEIPT_PAGE_WHAT: &str = "stored receipt page";
const RECEIPT_PAGE_VERSION: u8 = 1;
/// What a page leaves of the backend's largest value for its key, the
/// seal and the framing.
const RECEIPT_PAGE_MARGIN: usize = 512;
/// Below this many bytes a page, a receipt is not paged (not stored).
const RECEIPT_PAGE_MIN: usize = 1024;

fn write_scope(w: &mut Writer, scope: &ErasedScope) {
    w.bytes(&scope.subject.0);
    match &scope.class {
        None => w.u8(0),
        Some(name) => w.u8(1).var_bytes(name.as_bytes()),
    };
    w.u64(scope.keys_destroyed as u64);
}

/// The bytes `write_scope` takes for `scope`.
fn scope_len(scope: &ErasedScope) -> usize {
    16 + 1 + scope.class.as_ref().map_or(0, |name| 4 + name.len()) + 8
}

fn read_scope(r: &mut Reader<'_>) -> Result<ErasedScope, FormatError> {
    let subject = SubjectTag(r.array::<16>()?);
    let class = match r.u8()? {
        0 => None,
        1 => {
            let raw = r.var_bytes()?;
            Some(
                String::from_utf8(raw.to_vec())
                    .map_err(|_| r.invalid("a name that is not UTF-8"))?,
            )
        }
        _ => return Err(r.invalid("unknown class presence")),
    };
    let keys_destroyed = usize::try_from(r.u64()?).unwrap_or(usize::MAX);
    Ok(ErasedScope {
        subject,
        class,
        keys_destroyed,
    })
}

impl StoredReceipt {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let receipt = &self.receipt;
        let version = if self.paging.is_some() {
            RECEIPT_HEAD
        } else {
            RECEIPT_WHOLE
        };
        let mut w = Writer::new(version, 128 + 48 * receipt.erased.len());
        w.u32(self.generation);
        write_classes(&mut w, self.classes.as_deref());
        w.bytes(&receipt.subject.0)
            .i64(receipt.erased_at.as_second())
            .u8(receipt.reason.code());
        match &self.paging {
            None => {
                w.u32(u32::try_from(receipt.erased.len()).unwrap_or(u32::MAX));
                for scope in &receipt.erased {
                    write_scope(&mut w, scope);
                }
            }
            Some(paging) => {
                write_paging(&mut w, paging);
            }
        }
        w.u64(receipt.audit_head.seq)
            .bytes(&receipt.audit_head.hash);
        w.finish()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let paged = bytes.first() == Some(&RECEIPT_HEAD);
        let version = if paged { RECEIPT_HEAD } else { RECEIPT_WHOLE };
        let mut r = Reader::checked(RECEIPT_WHAT, bytes, version)?;
        let generation = r.u32()?;
        let classes = read_classes(&mut r)?;
        let subject = SubjectTag(r.array::<16>()?);
        let erased_at = saturating_time(r.i64()?);
        let reason =
            ErasureReason::from_code(r.u8()?).ok_or_else(|| r.invalid("unknown erasure reason"))?;
        let mut erased = Vec::new();
        let mut paging = None;
        if paged {
            paging = Some(read_paging(&mut r)?);
        } else {
            // Each scope takes at least 25 bytes: a count beyond the rest
            // fails at the first scope missing, allocating nothing ahead.
            for _ in 0..r.u32()? {
                erased.push(read_scope(&mut r)?);
            }
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
            paging,
        })
    }
}

/// One page of a paged receipt: v1 ‖ count u32 ‖ scopes ‖ CRC32.
pub(crate) fn encode_receipt_page(scopes: &[ErasedScope]) -> Vec<u8> {
    let mut w = Writer::new(
        RECEIPT_PAGE_VERSION,
        8 + scopes.iter().map(scope_len).sum::<usize>(),
    );
    w.u32(u32::try_from(scopes.len()).unwrap_or(u32::MAX));
    for scope in scopes {
        write_scope(&mut w, scope);
    }
    w.finish()
}

pub(crate) fn decode_receipt_page(bytes: &[u8]) -> Result<Vec<ErasedScope>, FormatError> {
    let mut r = Reader::checked(RECEIPT_PAGE_WHAT, bytes, RECEIPT_PAGE_VERSION)?;
    let mut scopes = Vec::new();
    for _ in 0..r.u32()? {
        scopes.push(read_scope(&mut r)?);
    }
    r.end()?;
    Ok(scopes)
}

/// The digest a paged receipt's head names ([`Paging::digest`]).
fn pages_digest<'p>(pages: impl IntoIterator<Item = &'p [u8]>) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for page in pages {
        hasher.update(u32::try_from(page.len()).unwrap_or(u32::MAX).to_be_bytes());
        hasher.update(page);
    }
    hasher.finalize().into()
}

/// `scopes` in pages of at most `page_bytes` bytes each (at least one
/// scope a page).
fn paginate(scopes: &[ErasedScope], page_bytes: usize) -> Vec<Vec<u8>> {
    let mut pages = Vec::new();
    let mut start = 0;
    while start < scopes.len() {
        let mut end = start;
        let mut bytes = 16;
        while let Some(scope) = scopes.get(end) {
            if end > start && bytes + scope_len(scope) > page_bytes {
                break;
            }
            bytes += scope_len(scope);
            end += 1;
        }
        pages.push(encode_receipt_page(
            scopes.get(start..end).unwrap_or_default(),
        ));
        start = end;
    }
    pages
}

/// `tags` in pages of at most `page_bytes` bytes each.
fn paginate_tags(tags: &[SubjectTag], page_bytes: usize) -> Vec<Vec<u8>> {
    let per_page = (page_bytes.saturating_sub(16) / 16).max(1);
    tags.chunks(per_page).map(encode_tag_page).collect()
}

/// A receipt ready to store once the erasure's audit head is known.
pub(crate) struct ReceiptToStore {
    /// The receipt (its scopes emptied when they go to `pages`).
    stored: StoredReceipt,
    pages: Vec<Vec<u8>>,
}

impl ReceiptToStore {
    fn head(&self, audit_head: &AuditHead) -> Vec<u8> {
        let mut stored = self.stored.clone();
        stored.receipt.audit_head = *audit_head;
        stored.encode()
    }
}

/// What an erasure does with its requested subject's stored receipt.
pub(crate) struct ReceiptWrites {
    /// The receipt to store; `None`: remove the stored one (a receipt that
    /// retains something, or one the backend cannot take even in pages).
    keep: Option<ReceiptToStore>,
    /// Pages of an earlier receipt that the new one leaves behind.
    stale_pages: Vec<Vec<u8>>,
}

impl ReceiptWrites {
    fn pages(&self) -> &[Vec<u8>] {
        self.keep.as_ref().map_or(&[], |keep| &keep.pages)
    }
}

fn pending_key(requested: &SubjectTag) -> Vec<u8> {
    [meta::ERASURE_PENDING_PREFIX, &requested.0].concat()
}

fn receipt_key(requested: &SubjectTag) -> Vec<u8> {
    [meta::RECEIPT_PREFIX, &requested.0].concat()
}

/// The pages of a record too large for one value: a marker's listing
/// (`erasure_pending_page/`) or a receipt's scopes (`receipt_page/`), each
/// page under `prefix ‖ requested tag ‖ index u32 BE`.
#[derive(Debug, Clone, Copy)]
struct Pages {
    prefix: &'static [u8],
}

const MARKER_PAGES: Pages = Pages {
    prefix: meta::ERASURE_PENDING_PAGE_PREFIX,
};
const RECEIPT_PAGES: Pages = Pages {
    prefix: meta::RECEIPT_PAGE_PREFIX,
};

impl Pages {
    fn of(self, requested: &SubjectTag) -> Vec<u8> {
        [self.prefix, &requested.0].concat()
    }

    fn key(self, requested: &SubjectTag, index: usize) -> Vec<u8> {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        [self.prefix, &requested.0, &index.to_be_bytes()].concat()
    }
}

/// Adds to `batch` the head of `receipt` (the whole receipt when it has no
/// pages), or the removal of the stored one, and with `stale_pages` the
/// removal of pages an earlier receipt leaves behind.
fn store_receipt(
    batch: &mut WriteBatch,
    requested: &SubjectTag,
    receipt: &ReceiptWrites,
    audit_head: &AuditHead,
    stale_pages: bool,
) {
    match &receipt.keep {
        Some(keep) => batch.put(Tree::Meta, receipt_key(requested), keep.head(audit_head)),
        None => batch.remove(Tree::Meta, receipt_key(requested)),
    }
    if stale_pages {
        for key in &receipt.stale_pages {
            batch.remove(Tree::Meta, key.clone());
        }
    }
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
    /// the backend's batch limit is smaller, or the receipt to keep needs
    /// pages (module docs). `keep`: the receipt to store for retries, with
    /// the audit head filled in (`None`: the stored one is left alone).
    /// Returns the audit chain's last entry recording the erasure.
    pub(crate) fn commit_erasure(
        &self,
        plan: ErasureWrites<'_>,
        keep: Option<&Receipt>,
    ) -> Result<AuditHead> {
        let receipt = match keep {
            None => None,
            // A receipt that retains something is not kept (see
            // `StoredReceipt`), and an older one must not answer for it.
            Some(receipt) if !receipt.retained.is_empty() => {
                Some(self.prepare_receipt(&plan.requested, None)?)
            }
            Some(receipt) => {
                let generation = self
                    .subject_info(&plan.requested)?
                    .map_or(0, |info| info.generation);
                let stored = StoredReceipt {
                    generation,
                    classes: plan.classes.clone(),
                    receipt: receipt.clone(),
                    paging: None,
                };
                Some(self.prepare_receipt(&plan.requested, Some(stored))?)
            }
        };
        let receipt_ops = receipt.as_ref().map_or(0, |r| 1 + r.stale_pages.len());
        let total: usize = plan.groups.iter().map(SubjectErasure::ops).sum::<usize>() + receipt_ops;
        let paged = receipt.as_ref().is_some_and(|r| !r.pages().is_empty());
        match self.storage.max_batch_ops() {
            Some(limit) if total > limit || paged => self.commit_in_chunks(plan, receipt, limit),
            // Pages need requests of their own, after a marker.
            None if paged => self.commit_in_chunks(plan, receipt, usize::MAX),
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
                        if let Some(receipt) = &receipt {
                            store_receipt(batch, &requested, receipt, head, true);
                        }
                    },
                )
            }
        }
    }

    /// How `stored` (`None`: no receipt) replaces the receipt stored for
    /// `requested`: one value, or pages and a head when it is larger than
    /// the backend's largest value (`Storage::max_value_bytes`).
    fn prepare_receipt(
        &self,
        requested: &SubjectTag,
        stored: Option<StoredReceipt>,
    ) -> Result<ReceiptWrites> {
        let existing = self.page_keys(RECEIPT_PAGES, requested)?;
        let keep = match stored {
            None => None,
            Some(stored) if self.value_fits(stored.encode().len()) => Some(ReceiptToStore {
                stored,
                pages: Vec::new(),
            }),
            Some(mut stored) => {
                let page_bytes = self
                    .storage
                    .max_value_bytes()
                    .unwrap_or(0)
                    .saturating_sub(RECEIPT_PAGE_MARGIN);
                (page_bytes >= RECEIPT_PAGE_MIN).then(|| {
                    let pages = paginate(&stored.receipt.erased, page_bytes);
                    stored.paging = Some(Paging {
                        items: u32::try_from(stored.receipt.erased.len()).unwrap_or(u32::MAX),
                        pages: u32::try_from(pages.len()).unwrap_or(u32::MAX),
                        digest: pages_digest(pages.iter().map(Vec::as_slice)),
                    });
                    stored.receipt.erased = Vec::new();
                    ReceiptToStore { stored, pages }
                })
            }
        };
        let kept_pages = keep.as_ref().map_or(0, |keep| keep.pages.len());
        let page_key_len = RECEIPT_PAGES.key(requested, 0).len();
        let stale_pages = existing
            .into_iter()
            .filter(|key| {
                let index = key
                    .get(page_key_len - 4..)
                    .and_then(|tail| <[u8; 4]>::try_from(tail).ok())
                    .map(u32::from_be_bytes);
                // A key of another shape under the prefix is stale too.
                key.len() != page_key_len
                    || index.is_none_or(|index| {
                        usize::try_from(index).unwrap_or(usize::MAX) >= kept_pages
                    })
            })
            .collect();
        Ok(ReceiptWrites { keep, stale_pages })
    }

    /// Writes a receipt's pages, and removes an earlier receipt's pages it
    /// leaves behind, each page a request of its own, before the batch
    /// with its head. In the meantime a head stored earlier no longer
    /// matches its pages' digest, so it answers nothing.
    fn write_receipt_pages(
        &self,
        requested: &SubjectTag,
        receipt: &ReceiptWrites,
        limit: usize,
    ) -> Result<()> {
        self.write_pages(RECEIPT_PAGES, requested, receipt.pages())?;
        self.remove_keys(&receipt.stale_pages, limit)
    }

    /// Writes `pages` under `kind`'s keys for `requested`, each durable and
    /// a request of its own (a page may take a whole value's room).
    fn write_pages(&self, kind: Pages, requested: &SubjectTag, pages: &[Vec<u8>]) -> Result<()> {
        for (index, page) in pages.iter().enumerate() {
            let mut batch = WriteBatch::new();
            batch.put(Tree::Meta, kind.key(requested, index), page.clone());
            self.storage.apply(&batch, Durability::Durable)?;
        }
        Ok(())
    }

    /// The pages `paging` names, if every one is there and together they
    /// match its digest.
    fn read_pages(
        &self,
        kind: Pages,
        requested: &SubjectTag,
        paging: &Paging,
    ) -> Result<Option<Vec<Vec<u8>>>> {
        let mut pages = Vec::new();
        for index in 0..usize::try_from(paging.pages).unwrap_or(usize::MAX) {
            match self.storage.get(Tree::Meta, &kind.key(requested, index))? {
                Some(page) => pages.push(page),
                None => return Ok(None),
            }
        }
        Ok((pages_digest(pages.iter().map(Vec::as_slice)) == paging.digest).then_some(pages))
    }

    /// The keys of `kind`'s pages stored for `requested`.
    fn page_keys(&self, kind: Pages, requested: &SubjectTag) -> Result<Vec<Vec<u8>>> {
        let mut keys = Vec::new();
        scan_prefix(
            self.storage.as_ref(),
            Tree::Meta,
            &kind.of(requested),
            &mut |k, _| {
                keys.push(k.to_vec());
                std::ops::ControlFlow::Continue(())
            },
        )?;
        Ok(keys)
    }

    /// Removes meta `keys`, durably, in batches of at most `limit`.
    fn remove_keys(&self, keys: &[Vec<u8>], limit: usize) -> Result<()> {
        for chunk in keys.chunks(limit.max(1)) {
            let mut batch = WriteBatch::new();
            for key in chunk {
                batch.remove(Tree::Meta, key.clone());
            }
            self.storage.apply(&batch, Durability::Durable)?;
        }
        Ok(())
    }

    fn commit_in_chunks(
        &self,
        plan: ErasureWrites<'_>,
        receipt: Option<ReceiptWrites>,
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
        let mut marker = PendingErasure {
            erased_at: plan.erased_at.as_second(),
            reason: plan.reason,
            classes: plan.classes.clone(),
            tags: plan.tags.to_vec(),
            listed: family != erasing,
            paging: None,
        };
        let mut encoded = marker.encode();
        // A listing too large for one value goes to pages, each a request
        // of its own before the marker: until the marker lands, nothing is
        // decided, and pages without a marker are removed at the next open.
        let mut marker_pages = Vec::new();
        if !self.value_fits(encoded.len()) {
            let page_bytes = self
                .storage
                .max_value_bytes()
                .unwrap_or(0)
                .saturating_sub(RECEIPT_PAGE_MARGIN);
            marker_pages = paginate_tags(plan.tags, page_bytes);
            if page_bytes < RECEIPT_PAGE_MIN || marker_pages.len() + 3 > limit {
                return Err(Error::InvalidArgument {
                    what: "max_request_bytes",
                    detail: format!(
                        "an erasure of {} subjects needs a listing of {} bytes (16 a subject), \
                         more than the backend takes in pages of its largest value ({} bytes); \
                         nothing was erased. Erase fewer subjects at once, or raise the etcd \
                         cluster's --max-request-bytes and the store's max_request_bytes (on \
                         TiKV, its txn-entry-size-limit)",
                        plan.tags.len(),
                        encoded.len(),
                        self.storage.max_value_bytes().unwrap_or(0),
                    ),
                });
            }
            marker.paging = Some(Paging {
                items: u32::try_from(plan.tags.len()).unwrap_or(u32::MAX),
                pages: u32::try_from(marker_pages.len()).unwrap_or(u32::MAX),
                digest: pages_digest(marker_pages.iter().map(Vec::as_slice)),
            });
            marker.tags = Vec::new();
            encoded = marker.encode();
            self.write_pages(MARKER_PAGES, &plan.requested, &marker_pages)?;
        }
        let marker = encoded;
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
            // The receipt's pages land after the marker, before its head.
            if i == last
                && let Some(receipt) = &receipt
                && let Err(err) = self.write_receipt_pages(&plan.requested, receipt, limit)
            {
                self.unfinished_erasures.note(plan.requested, plan.tags);
                return Err(err);
            }
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
                        if let Some(receipt) = &receipt {
                            store_receipt(batch, &plan.requested, receipt, &head, false);
                        }
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
        if !marker_pages.is_empty() {
            // The erasure is done: pages left by a failure here are removed
            // at the next open, with no marker to name them.
            let _ = self.remove_marker_pages(&plan.requested, limit);
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
        if let Some(paging) = &marker.paging {
            marker.tags = self.read_marker_pages(requested, paging)?;
        } else if !marker.listed {
            marker.tags = match self.subject_info(requested)? {
                Some(info) => self.with_end_users(requested, &info)?,
                None => vec![*requested],
            };
        }
        Ok(Some(marker))
    }

    /// The subjects a paged marker lists. Pages missing or not the ones it
    /// names are damage: the erasure cannot be finished without them.
    fn read_marker_pages(
        &self,
        requested: &SubjectTag,
        paging: &Paging,
    ) -> Result<Vec<SubjectTag>> {
        let damaged = |source| Error::Corrupt {
            location: meta_location("pending erasure pages", requested),
            source,
        };
        let pages = self
            .read_pages(MARKER_PAGES, requested, paging)?
            .ok_or_else(|| {
                damaged(FormatError::InvalidField {
                    what: TAG_PAGE_WHAT,
                    detail: "pages the marker names are missing or not the ones it names",
                })
            })?;
        let mut tags = Vec::new();
        for page in &pages {
            tags.extend(decode_tag_page(page).map_err(damaged)?);
        }
        if tags.len() != usize::try_from(paging.items).unwrap_or(usize::MAX) {
            return Err(damaged(FormatError::InvalidField {
                what: TAG_PAGE_WHAT,
                detail: "the pages list another number of subjects",
            }));
        }
        Ok(tags)
    }

    /// Removes the listing pages of `requested`'s marker (once the marker
    /// is gone, or never landed), in batches of at most `limit`.
    fn remove_marker_pages(&self, requested: &SubjectTag, limit: usize) -> Result<()> {
        let keys = self.page_keys(MARKER_PAGES, requested)?;
        self.remove_keys(&keys, limit)
    }

    /// The receipt stored for a retry of an erasure of `requested`.
    pub(crate) fn stored_receipt(&self, requested: &SubjectTag) -> Result<Option<StoredReceipt>> {
        let Some(bytes) = self.storage.get(Tree::Meta, &receipt_key(requested))? else {
            return Ok(None);
        };
        // A damaged receipt only costs the retry its answer: the retry then
        // finds nothing to erase and answers with an empty receipt.
        let Ok(mut stored) = StoredReceipt::decode(&bytes) else {
            return Ok(None);
        };
        if let Some(paging) = stored.paging.take() {
            match self.read_receipt_pages(requested, &paging)? {
                Some(scopes) => stored.receipt.erased = scopes,
                None => return Ok(None),
            }
        }
        Ok(Some(stored))
    }

    /// The erased scopes of a paged receipt, if every page is there and
    /// they match the head's digest and count.
    fn read_receipt_pages(
        &self,
        requested: &SubjectTag,
        paging: &Paging,
    ) -> Result<Option<Vec<ErasedScope>>> {
        let Some(pages) = self.read_pages(RECEIPT_PAGES, requested, paging)? else {
            return Ok(None);
        };
        let mut scopes = Vec::new();
        for page in &pages {
            match decode_receipt_page(page) {
                Ok(more) => scopes.extend(more),
                Err(_) => return Ok(None),
            }
        }
        Ok((scopes.len() == usize::try_from(paging.items).unwrap_or(usize::MAX)).then_some(scopes))
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
        let stored = receipt.retained.is_empty().then(|| StoredReceipt {
            generation,
            classes: marker.classes.clone(),
            receipt: receipt.clone(),
            paging: None,
        });
        let writes = self.prepare_receipt(&requested, stored)?;
        self.write_receipt_pages(&requested, &writes, limit)?;
        let mut done = WriteBatch::new();
        done.remove(Tree::Meta, pending_key(&requested));
        store_receipt(&mut done, &requested, &writes, &receipt.audit_head, false);
        self.storage.apply(&done, Durability::Durable)?;
        if marker.paging.is_some() {
            self.remove_marker_pages(&requested, limit)?;
        }
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
        // Listing pages with no marker: an erasure that failed before its
        // marker landed (nothing was decided), or one finished whose pages
        // were not removed yet.
        let mut orphans: Vec<SubjectTag> = Vec::new();
        scan_prefix(
            self.storage.as_ref(),
            Tree::Meta,
            meta::ERASURE_PENDING_PAGE_PREFIX,
            &mut |k, _| {
                if let Some(tag) = k
                    .get(meta::ERASURE_PENDING_PAGE_PREFIX.len()..)
                    .and_then(|rest| rest.get(..16))
                    .and_then(|tag| <[u8; 16]>::try_from(tag).ok())
                    .map(SubjectTag)
                    && !orphans.contains(&tag)
                {
                    orphans.push(tag);
                }
                std::ops::ControlFlow::Continue(())
            },
        )?;
        let limit = self.storage.max_batch_ops().unwrap_or(usize::MAX);
        for tag in orphans {
            if self.storage.get(Tree::Meta, &pending_key(&tag))?.is_none() {
                self.remove_marker_pages(&tag, limit)?;
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
            paging: None,
        };
        let bytes = marker.encode();
        assert_eq!(PendingErasure::decode(&bytes).expect("decodes"), marker);
        // A family's marker names no subject, whatever the family's size.
        let family = PendingErasure {
            listed: false,
            paging: None,
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
            paging: None,
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
