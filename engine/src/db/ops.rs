//! Record operations: put, get, delete, scan, batches and export.

use std::collections::{BTreeMap, HashSet};
use std::ops::ControlFlow;
use std::sync::{Arc, PoisonError};

use jiff::Timestamp;
use shredkv_crypto::{Envelope, KeyId, SubjectTag, seal_into};

use super::class::{AsClass, OwnedClass};
use super::scan::{OpenedPage, RawPage};
use super::{ClassEntry, Db, DbInner};
use crate::error::{Error, Location, Result};
use crate::ledger::{self, LedgerEntry};
use crate::records::{self, Record, RecordRef};
use crate::retention::deadlines::{self, Due};
use crate::retention::{ClockStart, KeyMode};
use crate::storage::{Tree, WriteBatch};
use crate::subjects::{SubjectInfo, SubjectKind, SubjectState};
use crate::vault::cache::BucketId;
use crate::vault::gate::ScopeGate;
use crate::vault::{
    CachedKey, KeyLookup, KeyState, Material, SCOPE_BUCKET, SealReservation, Vault,
    bucket_for_expiry,
};

/// Largest record key accepted, in bytes (it may travel inside every
/// envelope).
pub const MAX_RECORD_KEY_LEN: usize = 4096;
/// Largest value accepted, in bytes: what an envelope holds
/// ([`shredkv_crypto::MAX_PLAINTEXT_LEN`], 64 MiB) less the record key and
/// its length that blinded classes seal with it.
pub const MAX_VALUE_LEN: usize = shredkv_crypto::MAX_PLAINTEXT_LEN - 4 - MAX_RECORD_KEY_LEN;

/// Refuses a value longer than [`MAX_VALUE_LEN`].
fn check_value_len(value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_LEN {
        return Err(Error::InvalidArgument {
            what: "value",
            detail: format!("{} bytes, at most {MAX_VALUE_LEN} allowed", value.len()),
        });
    }
    Ok(())
}

/// Refuses a record key longer than [`MAX_RECORD_KEY_LEN`]: on every path,
/// so a read of a key no write could store is an error, not a miss.
fn check_record_key(key: &[u8]) -> Result<()> {
    if key.len() > MAX_RECORD_KEY_LEN {
        return Err(Error::InvalidArgument {
            what: "record key",
            detail: format!("{} bytes, at most {MAX_RECORD_KEY_LEN} allowed", key.len()),
        });
    }
    Ok(())
}
/// Raw entries read per page while scanning.
const SCAN_PAGE: usize = 256;

/// What one operation of an applied [`Batch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Outcome {
    /// A put of a key that held no live record.
    Created,
    /// A put that replaced a live record (its old ciphertext is purged by
    /// the re-key its key now owes).
    Replaced,
    /// A delete that removed a live record (or a put whose expiry had
    /// already passed, which removes the live record it would replace).
    Deleted,
    /// A delete of a key that held no live record (or a put whose expiry
    /// had already passed, over no live record).
    NotFound,
}

/// What [`Db::apply`] did, one [`Outcome`] per operation, in batch order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Applied {
    /// The outcome of each operation, in the order they were added.
    pub outcomes: Vec<Outcome>,
}

/// Options of one write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// When the record expires (the customer's instruction). Capped by the
    /// class's `max_customer_ttl`; a class whose clock starts at write may
    /// expire it earlier.
    pub expires_at: Option<Timestamp>,
}

impl PutOptions {
    /// A write that expires at `at`.
    pub fn expires_at(at: Timestamp) -> Self {
        Self {
            expires_at: Some(at),
        }
    }

    /// A write that expires `ttl` after `now` (a message's time to live;
    /// pass [`Db::now`] so a test clock is honoured). Saturates at the
    /// latest time representable.
    ///
    /// ```
    /// use std::time::Duration;
    /// # let now = shredkv::jiff::Timestamp::UNIX_EPOCH;
    /// let twelve_hours = shredkv::PutOptions::expires_in(now, Duration::from_secs(12 * 3600));
    /// assert_eq!(twelve_hours.expires_at.map(|t| t.as_second()), Some(12 * 3600));
    /// ```
    pub fn expires_in(now: Timestamp, ttl: std::time::Duration) -> Self {
        let ttl = jiff::SignedDuration::try_from(ttl).unwrap_or(jiff::SignedDuration::MAX);
        Self::expires_at(now.checked_add(ttl).unwrap_or(Timestamp::MAX))
    }
}

#[derive(Clone)]
enum BatchOp {
    Put {
        subject: String,
        class: OwnedClass,
        key: Vec<u8>,
        value: Vec<u8>,
        options: PutOptions,
    },
    Delete {
        subject: String,
        class: OwnedClass,
        key: Vec<u8>,
    },
}

/// Writes applied together, atomically, by [`Db::apply`].
///
/// ```
/// # let root = tempfile::tempdir()?;
/// # let config = shredkv::Config::new(root.path().join("store")).key_file(root.path().join("keys"));
/// # let db = shredkv::Db::open(config)?;
/// db.register_account("acct-1")?;
/// let mut batch = shredkv::Batch::new();
/// batch.put("acct-1", "message_content", b"m1", b"one");
/// batch.put("acct-1", "message_content", b"m2", b"two");
/// db.apply(batch)?;
/// assert_eq!(db.scan("acct-1", "message_content")?.len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Its `Debug` names each operation's class and lengths, not the subject
/// id, record key or value (personal data does not belong in logs).
#[derive(Clone, Default)]
pub struct Batch {
    ops: Vec<BatchOp>,
}

impl std::fmt::Debug for BatchOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchOp::Put {
                class, key, value, ..
            } => write!(
                f,
                "put {class} <{} byte key> <{} byte value>",
                key.len(),
                value.len()
            ),
            BatchOp::Delete { class, key, .. } => {
                write!(f, "delete {class} <{} byte key>", key.len())
            }
        }
    }
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("ops", &self.ops).finish()
    }
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a write without expiry.
    pub fn put(
        &mut self,
        subject: &str,
        class: impl AsClass,
        key: &[u8],
        value: &[u8],
    ) -> &mut Self {
        self.put_with(subject, class, key, value, PutOptions::default())
    }

    /// Adds a write with options.
    pub fn put_with(
        &mut self,
        subject: &str,
        class: impl AsClass,
        key: &[u8],
        value: &[u8],
        options: PutOptions,
    ) -> &mut Self {
        self.ops.push(BatchOp::Put {
            subject: subject.to_string(),
            class: OwnedClass::of(&class),
            key: key.to_vec(),
            value: value.to_vec(),
            options,
        });
        self
    }

    /// Adds a deletion.
    pub fn delete(&mut self, subject: &str, class: impl AsClass, key: &[u8]) -> &mut Self {
        self.ops.push(BatchOp::Delete {
            subject: subject.to_string(),
            class: OwnedClass::of(&class),
            key: key.to_vec(),
        });
        self
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Everything a subject has, across classes (for access and portability
/// requests). For an account, its end users follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Export {
    /// The subjects exported, the requested one first.
    pub subjects: Vec<ExportedSubject>,
}

/// One subject's records by class.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ExportedSubject {
    /// The subject's tag.
    pub tag: SubjectTag,
    /// Account or end user.
    pub kind: SubjectKind,
    /// Records by class name, in policy order; classes without records are
    /// left out. In serde formats, a list of objects `{class, records}`
    /// (a list keeps the order).
    #[cfg_attr(feature = "serde", serde(with = "class_records"))]
    pub classes: Vec<(String, Vec<Record>)>,
}

/// [`ExportedSubject::classes`] in serde formats: named fields rather than
/// pairs.
#[cfg(feature = "serde")]
mod class_records {
    use std::borrow::Cow;

    use serde::{Deserialize, Serialize};

    use crate::records::Record;

    #[derive(Serialize, Deserialize)]
    struct ClassRecords<'a> {
        class: Cow<'a, str>,
        records: Cow<'a, [Record]>,
    }

    pub(super) fn serialize<S: serde::Serializer>(
        classes: &[(String, Vec<Record>)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(classes.iter().map(|(class, records)| ClassRecords {
            class: Cow::Borrowed(class),
            records: Cow::Borrowed(records),
        }))
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(String, Vec<Record>)>, D::Error> {
        Ok(Vec::<ClassRecords<'static>>::deserialize(deserializer)?
            .into_iter()
            .map(|c| (c.class.into_owned(), c.records.into_owned()))
            .collect())
    }
}

impl Export {
    /// Total number of records.
    pub fn record_count(&self) -> usize {
        self.subjects
            .iter()
            .flat_map(|s| &s.classes)
            .map(|(_, r)| r.len())
            .sum()
    }
}

/// What a write found stored under its record's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Previous {
    /// Nothing.
    Absent,
    /// A readable record (its key now owes a re-key).
    Live,
    /// An expired or erased record: already gone for readers.
    Dead,
    /// Bytes that do not parse as an envelope.
    Damaged,
}

/// Scratch state of one write batch.
struct Staging {
    batch: WriteBatch,
    /// Data-tree changes by key: a later op on the same record replaces an
    /// earlier one, so a value overwritten within the batch never reaches
    /// the backend's log.
    data: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    plain: Vec<u8>,
    aad: Vec<u8>,
    sealed: Vec<u8>,
    now: i64,
    debts: HashSet<KeyId>,
    /// Seal reservations in `batch`, acknowledged once it lands.
    reservations: Vec<SealReservation>,
}

impl Staging {
    fn new(now: i64) -> Self {
        Self {
            batch: WriteBatch::new(),
            data: BTreeMap::new(),
            plain: Vec::new(),
            aad: Vec::new(),
            sealed: Vec::new(),
            now,
            debts: HashSet::new(),
            reservations: Vec::new(),
        }
    }

    /// The backend batch (key and debt changes, then the data changes) and
    /// the seal reservations it carries.
    fn finish(mut self) -> (WriteBatch, Vec<SealReservation>) {
        for (key, value) in self.data {
            match value {
                Some(value) => self.batch.put(Tree::Data, key, value),
                None => self.batch.remove(Tree::Data, key),
            }
        }
        (self.batch, self.reservations)
    }
}

impl DbInner {
    /// Applies a staged batch; its seal reservations count once it landed.
    fn apply_staged(&self, mut staging: Staging) -> Result<()> {
        let debts = std::mem::take(&mut staging.debts);
        let (batch, reservations) = staging.finish();
        if batch.is_empty() {
            return Ok(());
        }
        self.storage.apply(&batch, self.durability)?;
        for reservation in &reservations {
            Vault::reservation_landed(reservation);
        }
        // Every debt the batch needed is in the backend now.
        self.remember_debts(debts);
        Ok(())
    }

    /// Whether `id` is known to owe a recorded re-key debt.
    fn debt_recorded(&self, id: &KeyId) -> bool {
        self.debts_recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(id)
    }

    /// Notes debts that are in the backend (see `DbInner::debts_recorded`).
    fn remember_debts(&self, ids: impl IntoIterator<Item = KeyId>) {
        /// Ids remembered at most (about 2 MiB); beyond, the set starts over.
        const REMEMBERED_DEBTS: usize = 1 << 16;
        let mut known = self
            .debts_recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for id in ids {
            if known.len() >= REMEMBERED_DEBTS {
                known.clear();
            }
            known.insert(id);
        }
    }
}

fn data_location(tag: &SubjectTag, class: &ClassEntry, key: &[u8]) -> Box<Location> {
    Box::new(Location {
        tree: "data",
        subject: Some(*tag),
        class: Some(class.policy.name().to_string()),
        key_hex: shredkv_crypto::hex::encode(key),
    })
}

/// What an operation needs of the subject's state.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    Read,
    Write,
    Export,
}

/// Buffers and the last key used while opening records, kept across the
/// records of one read or scan.
#[derive(Default)]
pub(crate) struct OpenScratch {
    /// The associated data of the record being opened.
    aad: Vec<u8>,
    /// The key that opened the previous record: the records of one scope
    /// mostly share a key version, so a scan asks the vault once per version
    /// rather than once per record. Held no longer than one scan.
    last_key: Option<(KeyId, Arc<CachedKey>)>,
    /// The plaintext of the record being opened, reused across records.
    plain: Vec<u8>,
    /// The keys that opened records since last taken
    /// ([`ReadUnder::opened_with`]), if `note_keys`: a page handed out after
    /// its lock needs them, a single read does not.
    used: Vec<KeyId>,
    note_keys: bool,
}

impl OpenScratch {
    /// Scratch that notes the keys it opens records with, for a page read
    /// under a [`ReadUnder`].
    pub(crate) fn noting_keys() -> Self {
        Self {
            note_keys: true,
            ..Self::default()
        }
    }

    fn lookup(&mut self, inner: &DbInner, id: &KeyId) -> Result<KeyLookup> {
        if let Some((last, key)) = &self.last_key
            && last == id
        {
            return Ok(KeyLookup::Live(Arc::clone(key)));
        }
        let found = inner.vault.lookup(id)?;
        if let KeyLookup::Live(key) = &found {
            self.last_key = Some((*id, Arc::clone(key)));
            if self.note_keys && !self.used.contains(id) {
                self.used.push(*id);
            }
        }
        Ok(found)
    }
}

/// A scope read a page at a time ([`DbInner::read_scope_page`]): where the
/// next page starts, the page's raw entries and opened records, and the
/// buffers reused from page to page.
pub(crate) struct ScopeReader {
    /// The last key read; `None` before the first page.
    after: Option<Vec<u8>>,
    /// Whether the last page read was the scope's last.
    done: bool,
    scratch: OpenScratch,
    raw: RawPage,
    /// The live records of the last page read.
    opened: OpenedPage,
}

impl Default for ScopeReader {
    fn default() -> Self {
        Self {
            after: None,
            done: false,
            scratch: OpenScratch::noting_keys(),
            raw: RawPage::default(),
            opened: OpenedPage::default(),
        }
    }
}

impl ScopeReader {
    /// Starts again from a scope's first record, keeping the buffers.
    fn restart(&mut self) {
        self.after = None;
        self.done = false;
        self.opened.clear();
    }
}

/// What a page of records was read under, noted under the subject's shared
/// lock: the count of exclusive holds of the subject's stripe, the subject's
/// generation, and the keys that opened the records. While the count has not
/// moved, no erasure or state change of the subject has run since.
#[derive(Debug, Clone)]
pub(crate) struct ReadUnder {
    changes: u64,
    generation: u32,
    keys: Vec<KeyId>,
}

impl ReadUnder {
    /// Whether nothing took `tag`'s stripe exclusively since the page was
    /// read (one atomic load); if not, [`DbInner::recheck_read`] decides.
    pub(crate) fn is_current(&self, gate: &ScopeGate, tag: &SubjectTag) -> bool {
        gate.changes(tag) == self.changes
    }

    /// Notes the keys that opened the page's records (taken from `scratch`).
    pub(crate) fn opened_with(&mut self, scratch: &mut OpenScratch) {
        self.keys = std::mem::take(&mut scratch.used);
    }
}

impl DbInner {
    /// Checks that `tag` may be read in `class` and notes what a page read
    /// now is read under. Called holding the subject's shared lock.
    pub(crate) fn check_read(&self, tag: &SubjectTag, class: &ClassEntry) -> Result<ReadUnder> {
        let info = self.check_access(tag, class, Access::Read)?;
        Ok(self.read_under(tag, &info))
    }

    /// What a page of `tag`'s records read now is read under (its keys noted
    /// after it is read). Called holding the subject's shared lock.
    fn read_under(&self, tag: &SubjectTag, info: &SubjectInfo) -> ReadUnder {
        ReadUnder {
            changes: self.gate.changes(tag),
            generation: info.generation,
            keys: Vec::new(),
        }
    }

    /// Before a record read under `under` is handed out after the lock was
    /// released: fails as a new read would if an erasure (or a restriction,
    /// a closure) of the subject ran since, so that once an erasure returns
    /// no call returns what it erased (G1). One atomic load unless the
    /// subject's stripe was taken exclusively since; then the access is
    /// checked again under the lock, and [`DbInner::page_erased`] looks for
    /// an erasure the access check no longer shows.
    pub(crate) fn recheck_read(
        &self,
        tag: &SubjectTag,
        class: &ClassEntry,
        under: &mut ReadUnder,
    ) -> Result<()> {
        if under.is_current(&self.gate, tag) {
            return Ok(());
        }
        let _shared = self.gate.read(&[*tag]);
        let info = self.check_access(tag, class, Access::Read)?;
        if let Some(erased_at) = self.page_erased(tag, class, &info, under)? {
            return Err(Error::Erased {
                subject: *tag,
                class: Some(class.policy.name().to_string()),
                erased_at: Timestamp::from_second(erased_at).unwrap_or(Timestamp::MAX),
            });
        }
        under.changes = self.gate.changes(tag);
        Ok(())
    }

    /// When the page read under `under` was erased, for a subject the access
    /// check lets through again: registered again (a new generation), or a
    /// class erased and registered again (a key of the page destroyed, and
    /// an erasure of the scope in this generation in the ledger). A key
    /// destroyed in a scope never erased was re-keyed or expired: the page's
    /// records stand. In a scope erased and registered again, a re-key is
    /// taken for the erasure too: the ledger's seconds against the page's
    /// would tell them apart only on a clock that never jumps back. Called
    /// holding the subject's shared lock.
    fn page_erased(
        &self,
        tag: &SubjectTag,
        class: &ClassEntry,
        info: &SubjectInfo,
        under: &ReadUnder,
    ) -> Result<Option<i64>> {
        if info.generation != under.generation {
            let whole = self.ledger_entry(tag, ledger::ALL_CLASSES)?;
            return Ok(Some(
                whole.map_or_else(|| self.now_secs(), |entry| entry.erased_at),
            ));
        }
        if self.keys_live(&under.keys)? {
            return Ok(None);
        }
        Ok(self
            .ledger_entry(tag, class.number)?
            .filter(|entry| entry.generation == under.generation)
            .map(|entry| entry.erased_at))
    }

    /// Whether none of `keys` is destroyed (read from the vault, not the
    /// cache). Called holding the shared lock of the subjects they belong to.
    fn keys_live(&self, keys: &[KeyId]) -> Result<bool> {
        for id in keys {
            match self.vault.read_entry(id)? {
                Some(entry) if entry.state != KeyState::Destroyed => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }
}

impl DbInner {
    /// Checks that `tag` may be accessed in `class`, returning its record.
    pub(super) fn check_access(
        &self,
        tag: &SubjectTag,
        class: &ClassEntry,
        access: Access,
    ) -> Result<SubjectInfo> {
        self.refuse_unfinished(tag)?;
        let (info, known_live) = match self.cached_subject(tag, class.number) {
            Some(cached) => cached,
            None => (
                self.subject_info(tag)?
                    .ok_or(Error::UnknownSubject { subject: *tag })?,
                false,
            ),
        };
        match info.state {
            SubjectState::Erased => {
                return Err(info.erased_error());
            }
            SubjectState::Restricted if access != Access::Export => {
                return Err(Error::Restricted { subject: *tag });
            }
            _ => {}
        }
        // A closed account and its end users lose access; export stays.
        if access != Access::Export
            && let Some(closed_at) = self.closure_of(&info)?
        {
            return Err(Error::Closed {
                subject: *tag,
                closed_at,
            });
        }
        if let Some(deadline) = self.scope_past_deadline(&info, class)? {
            return Err(Error::Erased {
                subject: *tag,
                class: Some(class.policy.name().to_string()),
                erased_at: deadline,
            });
        }
        if known_live {
            return Ok(info);
        }
        if let Some(erased_at) = self.scope_erased_at(tag, class.number, info.generation)? {
            return Err(Error::Erased {
                subject: *tag,
                class: Some(class.policy.name().to_string()),
                erased_at: Timestamp::from_second(erased_at).unwrap_or(Timestamp::MAX),
            });
        }
        self.note_scope_live(tag, class.number);
        Ok(info)
    }

    /// The class deadline of a scope, if it has passed and no legal hold
    /// keeps the scope: from then on the scope is erased for every read and
    /// write, whether or not compaction has destroyed its keys yet (G3).
    /// Costs nothing for subjects without a closure, opt-out or release.
    pub(crate) fn scope_past_deadline(
        &self,
        info: &SubjectInfo,
        class: &ClassEntry,
    ) -> Result<Option<Timestamp>> {
        let policy = &class.policy;
        let start = match policy.clock() {
            ClockStart::AccountClosure => info.closed_at,
            // Closing the account ends marketing consent too.
            ClockStart::MarketingOptOut => match (info.opted_out_at, info.closed_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            ClockStart::Write if policy.until_account_closure() => {
                return self.unless_held(info, class, info.closed_at);
            }
            ClockStart::Write => None,
            ClockStart::ManualRelease if info.released_at.is_some() => {
                self.released_at(&info.tag, class.number)?
            }
            ClockStart::ManualRelease => None,
        };
        let deadline = start.and_then(|at| policy.deadline(at));
        self.unless_held(info, class, deadline)
    }

    /// `deadline` if it has passed and no hold covers the scope.
    fn unless_held(
        &self,
        info: &SubjectInfo,
        class: &ClassEntry,
        deadline: Option<Timestamp>,
    ) -> Result<Option<Timestamp>> {
        let Some(deadline) = deadline.filter(|d| *d <= self.clock.now()) else {
            return Ok(None);
        };
        if Self::hold_on(&self.holds_of(&info.tag)?, class.number).is_some() {
            return Ok(None);
        }
        Ok(Some(deadline))
    }

    /// When the scope was erased in the subject's current generation, if it
    /// was and has not been re-opened since ([`Db::re_register_class`]).
    pub(crate) fn scope_erased_at(
        &self,
        tag: &SubjectTag,
        class: u16,
        generation: u32,
    ) -> Result<Option<i64>> {
        Ok(self
            .ledger_entry(tag, class)?
            .filter(|entry| entry.erases(generation))
            .map(|entry| entry.erased_at))
    }

    /// The ledger entry of a scope (`class` [`ledger::ALL_CLASSES`]: the
    /// whole subject), if it was ever erased; damage is an error naming it.
    pub(crate) fn ledger_entry(&self, tag: &SubjectTag, class: u16) -> Result<Option<LedgerEntry>> {
        let Some(bytes) = self.storage.get(Tree::Ledger, &ledger::key(tag, class))? else {
            return Ok(None);
        };
        LedgerEntry::decode(&bytes)
            .map(Some)
            .map_err(|source| Error::Corrupt {
                location: Box::new(Location {
                    tree: "ledger",
                    subject: Some(*tag),
                    class: Some(self.class_name(class)),
                    key_hex: tag.to_hex(),
                }),
                source,
            })
    }

    /// Whether a write asks for an expiry that has already passed: then the
    /// record is expired as asked — nothing is stored and a live record under
    /// its key is removed, as a delete (a rewrite that keeps a past expiry).
    /// A class that takes no customer expiry refuses it as any expiry.
    fn expired_on_arrival(
        &self,
        class: &ClassEntry,
        options: PutOptions,
        now: i64,
    ) -> Result<bool> {
        let Some(at) = options.expires_at else {
            return Ok(false);
        };
        if at.as_second() > now {
            return Ok(false);
        }
        if !class.policy.accepts_customer_ttl() {
            return Err(Error::PolicyViolation {
                class: class.policy.name().to_string(),
                detail: "its retention starts with an event, not at write, so records cannot carry a customer expiry".into(),
            });
        }
        Ok(true)
    }

    fn effective_expiry(
        &self,
        class: &ClassEntry,
        requested: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<Option<i64>> {
        let mut expiry = None;
        if let Some(at) = requested {
            if !class.policy.accepts_customer_ttl() {
                return Err(Error::PolicyViolation {
                    class: class.policy.name().to_string(),
                    detail: "its retention starts with an event, not at write, so records cannot carry a customer expiry".into(),
                });
            }
            if at <= now {
                return Err(Error::InvalidArgument {
                    what: "expiry",
                    detail: format!("{at} is not in the future (now {now})"),
                });
            }
            if let Some(max) = class.policy.max_customer_ttl() {
                let limit = max.add_to(now).unwrap_or(Timestamp::MAX);
                if at > limit {
                    return Err(Error::PolicyViolation {
                        class: class.policy.name().to_string(),
                        detail: format!(
                            "expiry {at} is beyond the largest customer TTL ({max}, until {limit})"
                        ),
                    });
                }
            }
            expiry = Some(at.as_second());
        }
        if class.policy.clock() == ClockStart::Write
            && let Some(retain) = class.policy.retain()
        {
            let deadline = retain.add_to(now).unwrap_or(Timestamp::MAX).as_second();
            expiry = Some(expiry.map_or(deadline, |e| e.min(deadline)));
        }
        Ok(expiry)
    }

    /// The tree-key part of a record key: blinded under the scope key, or
    /// the key itself for ordered classes. `None` when reading a scope that
    /// never had a key (so it has no records).
    fn record_part(
        &self,
        tag: &SubjectTag,
        class: &ClassEntry,
        key: &[u8],
        create: bool,
        now: i64,
    ) -> Result<Option<Vec<u8>>> {
        if class.policy.keys() == KeyMode::Ordered {
            return Ok(Some(key.to_vec()));
        }
        let bucket = BucketId {
            subject: *tag,
            class: class.number,
            bucket: SCOPE_BUCKET,
        };
        let scope_key = if create {
            Some(self.vault.current_for_write(bucket, now)?)
        } else {
            self.vault.current_for_read(bucket)?
        };
        Ok(scope_key.and_then(|k| match &k.material {
            Material::Scope { blind } => Some(blind.blind(key).to_vec()),
            Material::Data { .. } => None,
        }))
    }

    /// Records that `id` protects ciphertext that is now dead (deleted or
    /// overwritten), so compaction re-keys its bucket in time for the purge
    /// window (see [`crate::retention::timeline`]).
    fn stage_debt(&self, staging: &mut Staging, class: &ClassEntry, id: KeyId) -> Result<()> {
        if !staging.debts.insert(id) {
            return Ok(());
        }
        if self.debt_recorded(&id) {
            return Ok(());
        }
        let key = id.to_bytes();
        if self.storage.get(Tree::Debts, &key)?.is_some() {
            self.remember_debts(std::iter::once(id));
            return Ok(());
        }
        // Early enough that the epochs wrapping the old key die within the
        // purge window counted from now (see the timeline).
        let deadline = staging.now.saturating_add(
            self.timeline
                .rekey_delay(class.policy.purge_window_duration()),
        );
        staging
            .batch
            .put(Tree::Debts, key, deadlines::value(staging.now));
        staging.batch.put(
            Tree::Deadlines,
            deadlines::key(deadline, &Due::Rekey(id)),
            deadlines::value(staging.now),
        );
        Ok(())
    }

    /// If a record exists under `data_key`, owes a re-key for its key.
    /// Returns whether it existed.
    fn retire_previous(
        &self,
        staging: &mut Staging,
        tag: &SubjectTag,
        class: &ClassEntry,
        data_key: &[u8],
    ) -> Result<Previous> {
        // Staged earlier in this batch: the stored value's debt (if any) was
        // recorded then.
        if let Some(staged) = staging.data.get(data_key) {
            return Ok(if staged.is_some() {
                Previous::Live
            } else {
                Previous::Absent
            });
        }
        let Some(previous) = self.storage.get(Tree::Data, data_key)? else {
            return Ok(Previous::Absent);
        };
        // A damaged previous value is replaced or removed all the same; its
        // key cannot be named, so it cannot owe a re-key.
        let Ok(envelope) = Envelope::parse(&previous) else {
            return Ok(Previous::Damaged);
        };
        let id = crate::records::sealing_key(*tag, class.number, &envelope);
        if envelope.expiry().is_some_and(|e| e <= staging.now) {
            // Expired: its bucket key is destroyed at the end of its day.
            return Ok(Previous::Dead);
        }
        match self.vault.lookup(&id)? {
            KeyLookup::Live(_) => {
                self.stage_debt(staging, class, id)?;
                Ok(Previous::Live)
            }
            KeyLookup::Destroyed | KeyLookup::Missing => Ok(Previous::Dead),
        }
    }

    /// Seals a record into `staging` and returns its tree key. With
    /// `read_previous`, also finds the value it replaces (see
    /// [`DbInner::retire_previous`]); without, the caller must, unless it
    /// writes the record with `insert_new`.
    #[allow(
        clippy::too_many_arguments,
        reason = "one write's inputs; a struct would only rename them"
    )]
    fn stage_put(
        &self,
        staging: &mut Staging,
        tag: &SubjectTag,
        class: &ClassEntry,
        key: &[u8],
        value: &[u8],
        options: PutOptions,
        read_previous: bool,
    ) -> Result<(Vec<u8>, Option<Previous>)> {
        check_record_key(key)?;
        check_value_len(value)?;
        self.check_access(tag, class, Access::Write)?;
        let now = Timestamp::from_second(staging.now).unwrap_or(Timestamp::MAX);
        let expiry = self.effective_expiry(class, options.expires_at, now)?;
        let part = self
            .record_part(tag, class, key, true, staging.now)?
            .ok_or_else(|| Error::InvalidArgument {
                what: "scope key",
                detail: "the scope key could not be created".into(),
            })?;
        let data_key = records::data_key(tag, class.number, &part);
        let previous = if read_previous {
            Some(self.retire_previous(staging, tag, class, &data_key)?)
        } else {
            None
        };
        let bucket = BucketId {
            subject: *tag,
            class: class.number,
            bucket: bucket_for_expiry(
                expiry,
                self.timeline
                    .bucket_width(class.policy.purge_window_duration()),
            ),
        };
        let dek = self.vault.current_for_write(bucket, staging.now)?;
        let Material::Data { cipher, .. } = &dek.material else {
            return Err(Error::InvalidArgument {
                what: "bucket",
                detail: "a scope key cannot seal values".into(),
            });
        };
        records::associated_data(&self.store_id, &data_key, &mut staging.aad);
        let plaintext: &[u8] = match class.policy.keys() {
            KeyMode::Blinded => {
                records::blinded_payload(key, value, &mut staging.plain);
                &staging.plain
            }
            KeyMode::Ordered => value,
        };
        let key_ref = shredkv_crypto::KeyRef {
            bucket: dek.id.bucket,
            version: dek.id.version,
        };
        seal_into(
            cipher,
            key_ref,
            expiry,
            &staging.aad,
            plaintext,
            &mut staging.sealed,
        )
        .map_err(|err| Error::InvalidArgument {
            what: "value",
            detail: err.to_string(),
        })?;
        staging
            .data
            .insert(data_key.clone(), Some(staging.sealed.clone()));
        if let Some(reservation) = self.vault.note_seal(&dek, &mut staging.batch) {
            staging.reservations.push(reservation);
        }
        Ok((data_key, previous))
    }

    fn stage_delete(
        &self,
        staging: &mut Staging,
        tag: &SubjectTag,
        class: &ClassEntry,
        key: &[u8],
    ) -> Result<bool> {
        check_record_key(key)?;
        self.check_access(tag, class, Access::Write)?;
        let Some(part) = self.record_part(tag, class, key, false, staging.now)? else {
            return Ok(false);
        };
        let data_key = records::data_key(tag, class.number, &part);
        let previous = self.retire_previous(staging, tag, class, &data_key)?;
        if previous != Previous::Absent {
            // Dead and damaged entries go too; only a readable one "existed".
            staging.data.insert(data_key, None);
        }
        Ok(matches!(previous, Previous::Live | Previous::Damaged))
    }

    /// Decrypts one stored record. `None` if it expired or its key is gone.
    pub(crate) fn open_record(
        &self,
        tag: &SubjectTag,
        class: &ClassEntry,
        data_key: &[u8],
        stored: &[u8],
        now: i64,
        scratch: &mut OpenScratch,
    ) -> Result<Option<Record>> {
        let Some(record) = self.open_record_ref(tag, class, data_key, stored, now, scratch)? else {
            return Ok(None);
        };
        let (key, expires_at, value_len) =
            (record.key.to_vec(), record.expires_at, record.value.len());
        // The value is the plaintext's tail: keep the buffer, drop the head.
        let mut value = std::mem::take(&mut scratch.plain);
        value.drain(..value.len().saturating_sub(value_len));
        Ok(Some(Record {
            key,
            value,
            expires_at,
        }))
    }

    /// [`DbInner::open_record`] without copies: the plaintext goes to
    /// `scratch`'s buffer, and the record borrows it (and `data_key`, an
    /// ordered class's key) until the next record is opened.
    pub(crate) fn open_record_ref<'a>(
        &self,
        tag: &SubjectTag,
        class: &ClassEntry,
        data_key: &'a [u8],
        stored: &[u8],
        now: i64,
        scratch: &'a mut OpenScratch,
    ) -> Result<Option<RecordRef<'a>>> {
        let envelope = Envelope::parse(stored).map_err(|source| Error::Corrupt {
            location: data_location(tag, class, data_key),
            source,
        })?;
        let id = crate::records::sealing_key(*tag, class.number, &envelope);
        // Authenticate before believing anything the header says (its key
        // reference, its expiry): a forged header must fail, not hide data.
        let key = match scratch.lookup(self, &id)? {
            KeyLookup::Live(key) => key,
            // Dead only where something explains it (an erased scope, a
            // passed expiry day); a header edited to name a destroyed key
            // is tampering, not a deletion.
            KeyLookup::Destroyed => {
                let entry = self.vault.read_entry(&id)?;
                if self.dead_is_legitimate(&id, entry.as_ref(), envelope.expiry(), now)? {
                    return Ok(None);
                }
                return Err(Error::Tampered {
                    location: data_location(tag, class, data_key),
                });
            }
            KeyLookup::Missing => {
                return Err(Error::Tampered {
                    location: data_location(tag, class, data_key),
                });
            }
        };
        let Material::Data { cipher, .. } = &key.material else {
            return Err(Error::Tampered {
                location: data_location(tag, class, data_key),
            });
        };
        records::associated_data(&self.store_id, data_key, &mut scratch.aad);
        envelope
            .open_into(cipher, &scratch.aad, &mut scratch.plain)
            .map_err(|_| Error::Tampered {
                location: data_location(tag, class, data_key),
            })?;
        let plain = scratch.plain.as_slice();
        if envelope.expiry().is_some_and(|e| e <= now)
            && Self::hold_on(&self.holds_of(tag)?, class.number).is_none()
        {
            // Expired; a legal hold would keep it readable (G3).
            return Ok(None);
        }
        let expires_at = envelope
            .expiry()
            .map(|e| Timestamp::from_second(e).unwrap_or(Timestamp::MAX));
        let record = match class.policy.keys() {
            KeyMode::Ordered => RecordRef {
                key: data_key.get(18..).unwrap_or_default(),
                value: plain,
                expires_at,
            },
            KeyMode::Blinded => {
                let (key, value) =
                    records::split_blinded_payload(plain).ok_or_else(|| Error::Tampered {
                        location: data_location(tag, class, data_key),
                    })?;
                RecordRef {
                    key,
                    value,
                    expires_at,
                }
            }
        };
        Ok(Some(record))
    }

    /// Reads the next page of a scope's live records into `reader.opened`
    /// (emptied first), notes the keys that opened them in `under`, and sets
    /// `reader.done` once the scope is exhausted. The caller holds the
    /// subject's shared lock and has checked that the scope may be read; the
    /// page may be visited after the lock is released, each record after
    /// [`DbInner::recheck_read`].
    pub(crate) fn read_scope_page(
        &self,
        tag: &SubjectTag,
        class: &ClassEntry,
        now: i64,
        reader: &mut ScopeReader,
        under: &mut ReadUnder,
    ) -> Result<()> {
        let prefix = records::scope_prefix(tag, class.number);
        let more =
            reader
                .raw
                .read_scope(self.storage.as_ref(), &prefix, &mut reader.after, SCAN_PAGE)?;
        reader.opened.clear();
        for (k, v) in reader.raw.entries() {
            if let Some(record) =
                self.open_record_ref(tag, class, k, v, now, &mut reader.scratch)?
            {
                reader.opened.push(record);
            }
        }
        // A key is used only under the lock that checked its scope: the page
        // is visited without it, an erasure meanwhile destroys the key, and
        // the next page must not open anything with a copy kept from before.
        reader.scratch.last_key = None;
        under.opened_with(&mut reader.scratch);
        reader.done = !more;
        Ok(())
    }

    /// Visits every live record of a scope, page by page, while the caller
    /// holds the subject's shared lock throughout (a scan or an export
    /// returned whole): records go to `visit` as they are opened, with no
    /// copy into a page.
    fn scan_scope_locked(
        &self,
        tag: &SubjectTag,
        class: &ClassEntry,
        now: i64,
        visit: &mut dyn FnMut(RecordRef<'_>),
    ) -> Result<()> {
        let prefix = records::scope_prefix(tag, class.number);
        let mut scratch = OpenScratch::default();
        let mut raw = RawPage::default();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let more = raw.read_scope(self.storage.as_ref(), &prefix, &mut after, SCAN_PAGE)?;
            for (k, v) in raw.entries() {
                if let Some(record) = self.open_record_ref(tag, class, k, v, now, &mut scratch)? {
                    visit(record);
                }
            }
            if !more {
                return Ok(());
            }
        }
    }

    /// Under the subject's shared lock, the next page of `tag`'s scope of
    /// `class` for an export, and what it was read under; `None` when the
    /// subject or the scope is not exported (any more).
    fn export_page(
        &self,
        tag: &SubjectTag,
        class: &ClassEntry,
        now: i64,
        reader: &mut ScopeReader,
    ) -> Result<Option<ReadUnder>> {
        let _shared = self.gate.read(&[*tag]);
        let Some(info) = self.subject_info(tag)? else {
            return Ok(None);
        };
        if !self.scope_exported(tag, &info, class)? {
            return Ok(None);
        }
        let mut under = self.read_under(tag, &info);
        self.read_scope_page(tag, class, now, reader, &mut under)?;
        Ok(Some(under))
    }

    /// Whether the export of `tag` includes its scope of `class`: not when
    /// the subject or the scope is erased, nor past the class's deadline.
    fn scope_exported(
        &self,
        tag: &SubjectTag,
        info: &SubjectInfo,
        class: &ClassEntry,
    ) -> Result<bool> {
        Ok(info.state != SubjectState::Erased
            && self
                .scope_erased_at(tag, class.number, info.generation)?
                .is_none()
            && self.scope_past_deadline(info, class)?.is_none())
    }

    fn export_subject(&self, tag: &SubjectTag, now: i64) -> Result<Option<ExportedSubject>> {
        let Some(info) = self.subject_info(tag)? else {
            return Ok(None);
        };
        if info.state == SubjectState::Erased {
            return Ok(None);
        }
        let mut classes: Vec<(String, Vec<Record>)> = Vec::new();
        for class in &self.classes {
            if !self.scope_exported(tag, &info, class)? {
                continue;
            }
            let mut records = Vec::new();
            self.scan_scope_locked(tag, class, now, &mut |record| {
                records.push(record.to_record());
            })?;
            if !records.is_empty() {
                classes.push((class.policy.name().to_string(), records));
            }
        }
        for (_, records) in &mut classes {
            records.sort_by(|a, b| a.key.cmp(&b.key));
        }
        Ok(Some(ExportedSubject {
            tag: *tag,
            kind: info.kind,
            classes,
        }))
    }

    /// The subjects an export of `tag` covers: it, then an account's end
    /// users. An unknown or erased subject is an error.
    fn exported_subjects(&self, tag: SubjectTag) -> Result<Vec<SubjectTag>> {
        let info = self
            .subject_info(&tag)?
            .ok_or(Error::UnknownSubject { subject: tag })?;
        if info.state == SubjectState::Erased {
            return Err(info.erased_error());
        }
        let mut tags = vec![tag];
        if info.kind == SubjectKind::Account {
            tags.extend(self.children(&tag)?);
        }
        Ok(tags)
    }
}

impl Db {
    /// Writes a record without expiry.
    ///
    /// # Errors
    /// Unknown subject or class, an erased, restricted or closed subject
    /// ([`Error::Closed`]), or storage and key provider failures.
    pub fn put(&self, subject: &str, class: impl AsClass, key: &[u8], value: &[u8]) -> Result<()> {
        self.put_with(subject, class, key, value, PutOptions::default())
    }

    /// Writes a record with options (an expiry). An expiry that has already
    /// passed (a rewrite keeping a record's original expiry) expires the
    /// record at once: nothing is stored, and a live record under the key is
    /// removed as by [`Db::delete`].
    ///
    /// # Errors
    /// As [`Db::put`], and [`Error::PolicyViolation`] for an expiry beyond
    /// the class's largest customer TTL.
    pub fn put_with(
        &self,
        subject: &str,
        class: impl AsClass,
        key: &[u8],
        value: &[u8],
        options: PutOptions,
    ) -> Result<()> {
        let inner = &self.inner;
        let class = inner.resolve(&class)?;
        let tag = self.tag_of(subject)?;
        let _shared = inner.gate.read(&[tag]);
        let _writing = inner.record_locks.lock([(&tag, class.number, key)]);
        let mut staging = Staging::new(inner.now_secs());
        if inner.expired_on_arrival(class, options, staging.now)? {
            check_value_len(value)?;
            inner.stage_delete(&mut staging, &tag, class, key)?;
            return inner.apply_staged(staging);
        }
        // Most writes create a key. Where the backend can insert a key only
        // if it is absent, try that first and read what is being replaced
        // only when something is: a new record then costs one tree
        // operation instead of a read and a write.
        let insert_new = inner.storage.has_insert_new();
        let (data_key, _) =
            inner.stage_put(&mut staging, &tag, class, key, value, options, !insert_new)?;
        if insert_new {
            if staging.batch.is_empty()
                && let Some(Some(sealed)) = staging.data.get(&data_key)
                && inner
                    .storage
                    .insert_new(Tree::Data, &data_key, sealed, inner.durability)?
            {
                return Ok(());
            }
            // An overwrite, or a seal reservation that must land with the
            // record: find and retire the replaced value in the same batch.
            let sealed = staging.data.remove(&data_key);
            inner.retire_previous(&mut staging, &tag, class, &data_key)?;
            if let Some(sealed) = sealed {
                staging.data.insert(data_key, sealed);
            }
        }
        inner.apply_staged(staging)
    }

    /// Applies a batch atomically: every write lands, or none does.
    ///
    /// # Errors
    /// As [`Db::put`] for any operation; then nothing is written.
    pub fn apply(&self, batch: Batch) -> Result<Applied> {
        let inner = &self.inner;
        let mut resolved = Vec::with_capacity(batch.ops.len());
        let mut tags = Vec::new();
        for op in &batch.ops {
            let (subject, class) = match op {
                BatchOp::Put { subject, class, .. } | BatchOp::Delete { subject, class, .. } => {
                    (subject, class)
                }
            };
            let tag = self.tag_of(subject)?;
            tags.push(tag);
            resolved.push((tag, inner.resolve(class)?));
        }
        let _shared = inner.gate.read(&tags);
        let _writing =
            inner
                .record_locks
                .lock(batch.ops.iter().zip(&resolved).map(|(op, (tag, class))| {
                    let (BatchOp::Put { key, .. } | BatchOp::Delete { key, .. }) = op;
                    (tag, class.number, key.as_slice())
                }));
        let mut staging = Staging::new(inner.now_secs());
        let mut outcomes = Vec::with_capacity(batch.ops.len());
        for (op, (tag, class)) in batch.ops.iter().zip(&resolved) {
            outcomes.push(match op {
                BatchOp::Put {
                    key,
                    value,
                    options,
                    ..
                } => {
                    if inner.expired_on_arrival(class, *options, staging.now)? {
                        check_value_len(value)?;
                        if inner.stage_delete(&mut staging, tag, class, key)? {
                            Outcome::Deleted
                        } else {
                            Outcome::NotFound
                        }
                    } else {
                        let (_, previous) = inner.stage_put(
                            &mut staging,
                            tag,
                            class,
                            key,
                            value,
                            *options,
                            true,
                        )?;
                        match previous {
                            Some(Previous::Live | Previous::Damaged) => Outcome::Replaced,
                            _ => Outcome::Created,
                        }
                    }
                }
                BatchOp::Delete { key, .. } => {
                    if inner.stage_delete(&mut staging, tag, class, key)? {
                        Outcome::Deleted
                    } else {
                        Outcome::NotFound
                    }
                }
            });
        }
        inner.apply_staged(staging)?;
        Ok(Applied { outcomes })
    }

    /// Reads a record's value. `None` if absent or expired.
    ///
    /// # Errors
    /// Unknown subject or class, [`Error::Erased`], [`Error::Restricted`],
    /// [`Error::Closed`] (its account was closed), [`Error::Corrupt`] or
    /// [`Error::Tampered`] stored bytes (never returned as data), storage and key provider failures.
    pub fn get(&self, subject: &str, class: impl AsClass, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get_record(subject, class, key)?.map(|r| r.value))
    }

    /// Reads a record with its expiry. See [`Db::get`].
    ///
    /// # Errors
    /// As [`Db::get`].
    pub fn get_record(
        &self,
        subject: &str,
        class: impl AsClass,
        key: &[u8],
    ) -> Result<Option<Record>> {
        check_record_key(key)?;
        let inner = &self.inner;
        let class = inner.resolve(&class)?;
        let tag = self.tag_of(subject)?;
        let _shared = inner.gate.read(&[tag]);
        inner.check_access(&tag, class, Access::Read)?;
        let now = inner.now_secs();
        let Some(part) = inner.record_part(&tag, class, key, false, now)? else {
            return Ok(None);
        };
        let data_key = records::data_key(&tag, class.number, &part);
        let Some(stored) = inner.storage.get(Tree::Data, &data_key)? else {
            return Ok(None);
        };
        let record = inner.open_record(
            &tag,
            class,
            &data_key,
            &stored,
            now,
            &mut OpenScratch::default(),
        )?;
        if let Some(record) = &record
            && record.key != key
        {
            return Err(Error::Tampered {
                location: data_location(&tag, class, &data_key),
            });
        }
        Ok(record)
    }

    /// Deletes a record. Returns whether it existed. Its old ciphertext is
    /// purged by re-keying within the class's purge window.
    ///
    /// # Errors
    /// As [`Db::put`].
    pub fn delete(&self, subject: &str, class: impl AsClass, key: &[u8]) -> Result<bool> {
        check_record_key(key)?;
        let inner = &self.inner;
        let class = inner.resolve(&class)?;
        let tag = self.tag_of(subject)?;
        let _shared = inner.gate.read(&[tag]);
        let _writing = inner.record_locks.lock([(&tag, class.number, key)]);
        let mut staging = Staging::new(inner.now_secs());
        let existed = inner.stage_delete(&mut staging, &tag, class, key)?;
        inner.apply_staged(staging)?;
        Ok(existed)
    }

    /// Every live record of a subject in a class. Ordered classes come in
    /// record-key order; blinded classes in no meaningful order.
    ///
    /// # Errors
    /// As [`Db::get`].
    pub fn scan(&self, subject: &str, class: impl AsClass) -> Result<Vec<Record>> {
        let inner = &self.inner;
        let class = inner.resolve(&class)?;
        let tag = self.tag_of(subject)?;
        // No visitor of the caller's runs here: the lock is held throughout,
        // and the records are one state of the scope.
        let _shared = inner.gate.read(&[tag]);
        inner.check_access(&tag, class, Access::Read)?;
        let mut out = Vec::new();
        inner.scan_scope_locked(&tag, class, inner.now_secs(), &mut |record| {
            out.push(record.to_record());
        })?;
        Ok(out)
    }

    /// Visits every live record of a subject in a class until `visit` breaks,
    /// in the order of [`Db::scan`]. Each record is borrowed from the scan's
    /// buffers for the call, so a scan that only reads its records (sums,
    /// filters, writes them out) allocates nothing per record;
    /// [`RecordRef::to_record`] keeps one.
    ///
    /// Records are read and opened a page at a time under the subject's
    /// shared lock, and visited after it is released: `visit` may call back
    /// into the store (even erase this subject), and a slow visitor never
    /// holds up an erasure. Like [`Db::records`], the pages are not a
    /// snapshot: a page read after an erasure of the subject fails with
    /// [`Error::Erased`], and a record written meanwhile may or may not be
    /// visited.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let config = shredkv::Config::new(dir.path().join("store"))
    /// #     .key_file(dir.path().join("keys")).maintenance_every(None);
    /// # let db = shredkv::Db::open(config)?;
    /// use std::ops::ControlFlow;
    /// db.register_account("acct-1")?;
    /// db.put("acct-1", "message_content", b"m1", b"hello")?;
    /// db.put("acct-1", "message_content", b"m2", b"shredkv")?;
    /// let mut bytes = 0;
    /// db.scan_with("acct-1", "message_content", &mut |record| {
    ///     bytes += record.value.len();
    ///     ControlFlow::Continue(())
    /// })?;
    /// assert_eq!(bytes, 12);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Db::get`].
    pub fn scan_with(
        &self,
        subject: &str,
        class: impl AsClass,
        visit: &mut dyn FnMut(RecordRef<'_>) -> ControlFlow<()>,
    ) -> Result<()> {
        let inner = &self.inner;
        let class = inner.resolve(&class)?;
        let tag = self.tag_of(subject)?;
        let now = inner.now_secs();
        let mut reader = ScopeReader::default();
        loop {
            let mut under = {
                let _shared = inner.gate.read(&[tag]);
                let mut under = inner.check_read(&tag, class)?;
                inner.read_scope_page(&tag, class, now, &mut reader, &mut under)?;
                under
            };
            for record in reader.opened.records() {
                inner.recheck_read(&tag, class, &mut under)?;
                if visit(record).is_break() {
                    return Ok(());
                }
            }
            if reader.done {
                return Ok(());
            }
        }
    }

    /// Everything a subject has across classes; for an account, its end
    /// users too. Restricted subjects can be exported.
    ///
    /// # Errors
    /// [`Error::UnknownSubject`], [`Error::Erased`], integrity and storage failures.
    pub fn export(&self, subject: &str) -> Result<Export> {
        self.export_tag(self.tag_of(subject)?)
    }

    /// [`Db::export`] streamed: calls `visit` with each record (its subject's
    /// tag, its class's name, the record), subject by subject (the requested
    /// one first, then an account's end users), class by class, without
    /// holding the export in memory; stops early when `visit` breaks.
    /// Records within a class come in the class's scan order (key order for
    /// ordered classes; [`Db::export`] sorts them). As with [`Db::scan_with`],
    /// records are borrowed for the call ([`RecordRef::to_record`] keeps
    /// one), each page is read under its subject's shared lock and visited
    /// after it is released, so `visit` may call back into the store, and a
    /// scope erased part-way is not exported further.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let config = shredkv::Config::new(dir.path().join("store"))
    /// #     .key_file(dir.path().join("keys")).maintenance_every(None);
    /// # let db = shredkv::Db::open(config)?;
    /// use std::ops::ControlFlow;
    /// db.register_account("acct-42")?;
    /// db.register_end_user("user-7", "acct-42")?;
    /// db.put("acct-42", "account_profile", b"email", b"a@example.com")?;
    /// db.put("user-7", "message_content", b"m1", b"hello")?;
    /// let mut lines = Vec::new();
    /// db.export_with("acct-42", &mut |tag, class, record| {
    ///     lines.push(format!("{tag} {class} {} bytes", record.value.len()));
    ///     ControlFlow::Continue(())
    /// })?;
    /// assert_eq!(lines.len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Db::export`].
    pub fn export_with(
        &self,
        subject: &str,
        visit: &mut dyn FnMut(SubjectTag, &str, RecordRef<'_>) -> ControlFlow<()>,
    ) -> Result<()> {
        let inner = &self.inner;
        let tags = inner.exported_subjects(self.tag_of(subject)?)?;
        let now = inner.now_secs();
        let mut reader = ScopeReader::default();
        for t in tags {
            for class in &inner.classes {
                reader.restart();
                'scope: while !reader.done {
                    let Some(mut under) = inner.export_page(&t, class, now, &mut reader)? else {
                        break;
                    };
                    for record in reader.opened.records() {
                        // An erasure or state change since the page was read:
                        // export no more of the scope than a new read would.
                        if !under.is_current(&inner.gate, &t) {
                            let _shared = inner.gate.read(&[t]);
                            match inner.subject_info(&t)? {
                                Some(info)
                                    if inner.scope_exported(&t, &info, class)?
                                        && inner
                                            .page_erased(&t, class, &info, &under)?
                                            .is_none() =>
                                {
                                    under.changes = inner.gate.changes(&t);
                                }
                                _ => break 'scope,
                            }
                        }
                        if visit(t, class.policy.name(), record).is_break() {
                            return Ok(());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// [`Db::export`] of the subject with this tag: for operators, who see
    /// only tags (an export of every subject walks [`Db::subjects`]).
    ///
    /// # Errors
    /// As [`Db::export`].
    pub fn export_tag(&self, tag: SubjectTag) -> Result<Export> {
        let inner = &self.inner;
        let tags = inner.exported_subjects(tag)?;
        let _shared = inner.gate.read(&tags);
        let now = inner.now_secs();
        let mut subjects = Vec::new();
        for t in &tags {
            if let Some(exported) = inner.export_subject(t, now)? {
                subjects.push(exported);
            }
        }
        Ok(Export { subjects })
    }
}
