//! Backups and restore (guarantee G6 across restores).
//!
//! A backup is a copy of every tree into a fresh store directory, taken
//! while writers, erasures and compaction are paused, so it is consistent.
//! It does not contain the key file: a backup is decrypted with the live key
//! provider, so destroying an epoch reaches backups too, and a backup older
//! than the purge window cannot be decrypted, by design. A backup's `meta`
//! carries a mark (`backup_of`: the source store id and the time taken),
//! written before anything is copied: [`Db::open`] refuses a directory with
//! it ([`Error::IsBackup`]), so a backup is only ever served through a
//! restore. (A plain file copy of a live store has no mark; see
//! docs/threat-model.md.)
//!
//! Restoring copies a backup into a new store directory and replays the
//! erasure log of the live store (or of a file exported from it) before the
//! restored store serves any read: every erasure, expiry and re-key that
//! destroyed a key after the backup was taken is applied again, so nothing
//! erased comes back; the decisions made since (holds, parked erasures,
//! closures, opt-outs, releases, restrictions) stand too (decisions.rs). The restored store clears the mark and its
//! restore-pending flag in the batch that completes the replay.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::ops::{Bound, ControlFlow};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};

use jiff::Timestamp;
use shredkv_crypto::{Envelope, FileKeyProvider, FormatError, KeyId, KeyProvider, SubjectTag};

use super::decisions::{Carried, Decisions};
use super::{Db, meta};
use crate::audit::{AuditEvent, PendingEntry};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::ledger::{self, ALL_CLASSES, LedgerEntry};
use crate::records;
use crate::storage::{self, Durability, Order, Storage, Tree, WriteBatch, scan_prefix};
use crate::subjects::{self, SubjectInfo, SubjectState};
use crate::vault::{KeyState, VaultEntry};

/// Entries copied per batch.
const COPY_PAGE: usize = 1024;
const LOG_MAGIC: &[u8; 8] = b"SHKVLEDG";
/// Version 2 adds the decisions (decisions.rs); version 1 logs are read,
/// and leave the backup's decisions as they were.
const LOG_VERSION: u8 = 2;
const LOG_WHAT: &str = "erasure log";

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BackupReport {
    /// Where.
    pub path: PathBuf,
    /// Entries copied, over all trees.
    pub entries: u64,
    /// When (the store clock).
    pub taken_at: Timestamp,
    /// The backup restores at least until then: while the epoch current
    /// when it was taken lives, L after that epoch started (about
    /// `taken_at + L − P` when epochs rotate on schedule: 13.5 days with
    /// 30-day windows, 3 hours with 1-day windows; docs/design.md, "The
    /// deletion timeline"). `taken_at` itself when that epoch is overdue
    /// for rotation (maintenance stopped): the next pass may destroy it.
    pub restorable_until: Timestamp,
    /// It cannot be restored after then, with maintenance running on
    /// schedule: the shortest purge window after it was taken.
    pub unrestorable_after: Timestamp,
}

/// Where a restore takes the erasures to replay from.
#[derive(Debug, Clone, Copy)]
pub enum ErasureSource<'a> {
    /// The live store the backup was taken from.
    Live(&'a Db),
    /// A file written by [`Db::export_erasure_log`].
    File(&'a Path),
}

/// What a restore replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RestoreReport {
    /// Entries copied from the backup.
    pub entries: u64,
    /// Ledger entries (subject or scope erasures) replayed.
    pub erasures_replayed: u64,
    /// Data keys destroyed by the replay.
    pub keys_destroyed: u64,
    /// Records of the backup the restore could not bring back, per subject
    /// and class (only with [`RestoreOptions::accept_lost_records`]; without
    /// it such a restore is refused with [`Error::RestoreLosesRecords`]).
    pub lost: Vec<LostRecords>,
}

/// Why a restore could not bring records of the backup back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
pub enum LossReason {
    /// After the backup was taken, the live store re-keyed the records'
    /// bucket and destroyed the key version the backup's copies are sealed
    /// under. The replay must destroy it too (it also protects the records
    /// deleted or overwritten since, G2), so these copies cannot be
    /// decrypted. They may include such deleted records; the ones still
    /// live in the live store are only in a newer backup.
    RekeyedAfterBackup,
}

impl fmt::Display for LossReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LossReason::RekeyedAfterBackup => f.write_str(
                "their key version was destroyed by a re-key after the backup (restore a newer backup to keep the records still live)",
            ),
        }
    }
}

/// Records of one subject and class that a restore could not bring back.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LostRecords {
    /// The subject, by tag.
    pub subject: SubjectTag,
    /// The class name (`#n` if the backup does not name it).
    pub class: String,
    /// How many of the backup's records.
    pub records: u64,
    /// Why.
    pub reason: LossReason,
}

impl fmt::Display for LostRecords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} records of subject {}, class `{}`: {}",
            self.records, self.subject, self.class, self.reason
        )
    }
}

/// How a restore treats records of the backup it cannot bring back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    accept_lost_records: bool,
}

impl RestoreOptions {
    /// With `true`, a restore that cannot bring back some records of the
    /// backup (see [`LossReason`]) goes ahead, lists them in
    /// [`RestoreReport::lost`] and the audit log, and leaves them out of
    /// the restored store (every read path and verify sees them as absent).
    /// By default such a restore is refused before writing anything.
    pub fn accept_lost_records(mut self, accept: bool) -> Self {
        self.accept_lost_records = accept;
        self
    }
}

/// Lost records of one scope, with the class number the audit log needs.
type LostScope = (u16, LostRecords);

/// The erasures of a store: its ledger and every destroyed key, and the
/// decisions that lead to erasures or forbid them (holds, parked erasures,
/// closures, opt-outs, releases, restrictions).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ErasureLog {
    ledger: Vec<(SubjectTag, u16, LedgerEntry)>,
    destroyed: Vec<KeyId>,
    /// `None` from a version 1 log.
    decisions: Option<Decisions>,
}

impl ErasureLog {
    /// The latest erasure the log records, whole seconds.
    fn latest_erasure(&self) -> Option<i64> {
        self.ledger
            .iter()
            .map(|(_, _, entry)| entry.erased_at)
            .max()
    }

    fn of(storage: &dyn Storage) -> Result<Self> {
        let mut log = ErasureLog::default();
        storage.scan(
            Tree::Ledger,
            Bound::Unbounded,
            Bound::Unbounded,
            Order::Ascending,
            &mut |k, v| {
                if let (Some((tag, class)), Ok(entry)) =
                    (ledger::split_key(k), LedgerEntry::decode(v))
                {
                    log.ledger.push((tag, class, entry));
                }
                ControlFlow::Continue(())
            },
        )?;
        crate::vault::layout::scan_all(storage, &mut |tree, k, v| {
            if let (Some(id), Ok(entry)) =
                (crate::vault::layout::id_at(tree, k), VaultEntry::decode(v))
                && entry.state == KeyState::Destroyed
            {
                log.destroyed.push(id);
            }
            ControlFlow::Continue(())
        })?;
        log.decisions = Some(Decisions::of(storage)?);
        Ok(log)
    }

    /// ```text
    /// "SHKVLEDG" ‖ version u8 ‖ ledger count u64 ‖ (key 18 ‖ entry length u32 ‖ entry)*
    ///            ‖ destroyed count u64 ‖ (key id 26)* ‖ decisions (version 2)
    ///            ‖ CRC32 of everything before
    /// ```
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(LOG_MAGIC);
        out.push(LOG_VERSION);
        out.extend_from_slice(
            &u64::try_from(self.ledger.len())
                .unwrap_or(u64::MAX)
                .to_be_bytes(),
        );
        for (tag, class, entry) in &self.ledger {
            out.extend_from_slice(&ledger::key(tag, *class));
            let bytes = entry.encode();
            out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(&bytes);
        }
        out.extend_from_slice(
            &u64::try_from(self.destroyed.len())
                .unwrap_or(u64::MAX)
                .to_be_bytes(),
        );
        for id in &self.destroyed {
            out.extend_from_slice(&id.to_bytes());
        }
        self.decisions
            .as_ref()
            .unwrap_or(&Decisions::default())
            .encode(&mut out);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let truncated = FormatError::Truncated {
            what: LOG_WHAT,
            needed: 8 + 1 + 8 + 8 + 4,
            got: bytes.len(),
        };
        let (body, crc) = bytes.split_last_chunk::<4>().ok_or(truncated.clone())?;
        let got = crc32fast::hash(body);
        if u32::from_be_bytes(*crc) != got {
            return Err(FormatError::ChecksumMismatch {
                what: LOG_WHAT,
                expected: u32::from_be_bytes(*crc),
                got,
            });
        }
        let (magic, rest) = body.split_first_chunk::<8>().ok_or(truncated.clone())?;
        if magic != LOG_MAGIC {
            return Err(FormatError::InvalidField {
                what: LOG_WHAT,
                detail: "not a shredkv erasure log",
            });
        }
        let (version, mut rest) = rest.split_first().ok_or(truncated.clone())?;
        if *version != LOG_VERSION && *version != 1 {
            return Err(FormatError::UnsupportedVersion {
                what: LOG_WHAT,
                found: *version,
            });
        }
        let mut take = |n: usize| -> Result<&[u8], FormatError> {
            if rest.len() < n {
                return Err(truncated.clone());
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Ok(head)
        };
        let count = |b: &[u8]| b.try_into().map(u64::from_be_bytes).unwrap_or(0);
        let mut log = ErasureLog::default();
        let n = count(take(8)?);
        for _ in 0..n {
            let key = take(18)?;
            let len = usize::try_from(u32::from_be_bytes(take(4)?.try_into().unwrap_or([0; 4])))
                .unwrap_or(usize::MAX);
            let entry = LedgerEntry::decode(take(len)?)?;
            let (tag, class) = ledger::split_key(key).ok_or(truncated.clone())?;
            log.ledger.push((tag, class, entry));
        }
        let n = count(take(8)?);
        for _ in 0..n {
            let id = KeyId::from_bytes(take(KeyId::LEN)?).ok_or(truncated.clone())?;
            log.destroyed.push(id);
        }
        if *version >= 2 {
            log.decisions = Some(Decisions::decode(&mut take)?);
        }
        if !take(0)?.is_empty() || !rest.is_empty() {
            return Err(FormatError::InvalidField {
                what: LOG_WHAT,
                detail: "unexpected trailing bytes",
            });
        }
        Ok(log)
    }
}

/// Copies every tree of `from` into `to`, telling `progress` the entries
/// copied so far after each page. Returns the entries copied.
fn copy_trees(from: &dyn Storage, to: &dyn Storage, progress: &mut dyn FnMut(u64)) -> Result<u64> {
    // A page is one batch of the target: within its limits (etcd's
    // operations per transaction, and bytes per request: a page holds no
    // more than the largest value the target takes, or one entry).
    let page = to
        .max_batch_ops()
        .map_or(COPY_PAGE, |limit| COPY_PAGE.min(limit.max(1)));
    let page_bytes = to.max_value_bytes().unwrap_or(usize::MAX);
    let mut total = 0u64;
    for tree in Tree::ALL {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let mut batch = WriteBatch::new();
            let mut last = None;
            let mut n = 0usize;
            let mut bytes = 0usize;
            let mut full = false;
            let start = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            from.scan(
                tree,
                start,
                Bound::Unbounded,
                Order::Ascending,
                &mut |k, v| {
                    let size = k.len() + v.len();
                    if n > 0 && bytes.saturating_add(size) > page_bytes {
                        full = true;
                        return ControlFlow::Break(());
                    }
                    batch.put(tree, k, v.to_vec());
                    last = Some(k.to_vec());
                    n += 1;
                    bytes += size;
                    if n >= page {
                        full = true;
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                },
            )?;
            if n == 0 {
                break;
            }
            to.apply(&batch, Durability::Buffered)?;
            total += u64::try_from(n).unwrap_or(u64::MAX);
            progress(total);
            after = last;
            if !full {
                break;
            }
        }
    }
    to.flush()?;
    Ok(total)
}

/// The backend of a backup of a store on `live`: the same for a local
/// store; redb for a store in a cluster, since a backup is local files.
fn backup_backend(live: storage::Backend) -> storage::Backend {
    match live {
        storage::Backend::Sled => storage::Backend::Sled,
        storage::Backend::Redb => storage::Backend::Redb,
        #[allow(
            unreachable_patterns,
            reason = "cluster backends exist with their features"
        )]
        _ => storage::Backend::Redb,
    }
}

/// Opens the storage a restore writes: the target's cluster if it names
/// one, else the backend in its directory (the one it names, else
/// `default`, else the one whose files are there).
fn open_restore_target(
    target: &Config,
    default: Option<storage::Backend>,
) -> Result<Arc<dyn Storage>> {
    Ok(match &target.remote {
        Some(remote) => storage::open_remote(remote, target.path())?,
        None => storage::open(target.backend.or(default), target.path())?,
    })
}

fn ensure_empty_dir(path: &Path, what: &'static str) -> Result<()> {
    match std::fs::read_dir(path) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::InvalidArgument {
                    what,
                    detail: format!(
                        "{} exists and is not empty; choose a new directory",
                        path.display()
                    ),
                });
            }
            Ok(())
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            action: "inspect the target directory",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The backup mark written into a backup's `meta`: the source store's id
/// and when the backup was taken.
///
/// ```text
/// 0 16 source store id
/// 16 8 taken at, unix seconds i64
/// ```
fn backup_mark(store_id: &[u8; 16], taken_at: Timestamp) -> Vec<u8> {
    let mut mark = store_id.to_vec();
    mark.extend_from_slice(&taken_at.as_second().to_be_bytes());
    mark
}

/// When a store started each epoch it knows (meta `epoch_started/<u32>`).
fn epoch_starts(storage: &dyn Storage) -> Result<BTreeMap<u32, i64>> {
    let mut starts = BTreeMap::new();
    scan_prefix(storage, Tree::Meta, meta::EPOCH_STARTED, &mut |k, v| {
        if let (Some(epoch), Ok(at)) = (
            k.get(meta::EPOCH_STARTED.len()..)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes),
            <[u8; 8]>::try_from(v).map(i64::from_be_bytes),
        ) {
            starts.insert(epoch, at);
        }
        ControlFlow::Continue(())
    })?;
    Ok(starts)
}

/// Refuses to serve a directory that must not be served as a store: an
/// interrupted restore, or a backup (which would serve data erased since it
/// was taken, without the replay a restore does).
pub(super) fn refuse_unservable(storage: &dyn Storage, path: &Path) -> Result<()> {
    if super::meta_get(storage, meta::RESTORE_PENDING)?.is_some() {
        return Err(Error::RestoreInterrupted {
            path: path.to_path_buf(),
        });
    }
    if let Some(mark) = super::meta_get(storage, meta::BACKUP_OF)? {
        // A damaged mark still marks a backup; its time is then unknown.
        let taken_at = mark
            .get(16..24)
            .and_then(|b| b.try_into().ok())
            .map(i64::from_be_bytes)
            .and_then(|t| Timestamp::from_second(t).ok())
            .unwrap_or(Timestamp::UNIX_EPOCH);
        return Err(Error::IsBackup {
            path: path.to_path_buf(),
            taken_at,
        });
    }
    Ok(())
}

/// The class names a store numbered (meta `class/<name>` → u16 ‖ mode).
fn class_names(storage: &dyn Storage) -> Result<HashMap<u16, String>> {
    let mut names = HashMap::new();
    scan_prefix(storage, Tree::Meta, meta::CLASS_PREFIX, &mut |k, v| {
        if let (Some(name), Some([a, b])) = (
            k.get(meta::CLASS_PREFIX.len()..)
                .and_then(|n| std::str::from_utf8(n).ok()),
            v.get(..2),
        ) {
            names.insert(u16::from_be_bytes([*a, *b]), name.to_string());
        }
        ControlFlow::Continue(())
    })?;
    Ok(names)
}

/// The records of `backup` that replaying `log` leaves undecryptable
/// although nothing erased them: live at `now` (not expired), in a scope
/// the replay does not erase, sealed under a key version the log destroys
/// and the backup still holds (a re-key after the backup). Per scope.
fn lost_records(backup: &dyn Storage, log: &ErasureLog, now: i64) -> Result<Vec<LostScope>> {
    // Scopes the replay erases: their records are erased, not lost.
    let mut erased: Vec<Vec<u8>> = Vec::new();
    for (tag, class, entry) in &log.ledger {
        let in_backup = backup
            .get(Tree::Ledger, &ledger::key(tag, *class))?
            .is_some_and(|v| LedgerEntry::decode(&v).is_ok_and(|e| e == *entry));
        if !in_backup {
            erased.push(if *class == ALL_CLASSES {
                tag.0.to_vec()
            } else {
                records::scope_prefix(tag, *class).to_vec()
            });
        }
    }
    let mut lost_keys: HashSet<KeyId> = HashSet::new();
    for id in &log.destroyed {
        let bytes = id.to_bytes();
        if erased.iter().any(|p| bytes.starts_with(p)) {
            continue;
        }
        if crate::vault::layout::locate(backup, id)?.is_some_and(|slot| {
            VaultEntry::decode(&slot.value).is_ok_and(|e| e.state == KeyState::Active)
        }) {
            lost_keys.insert(*id);
        }
    }
    if lost_keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut counts: BTreeMap<(SubjectTag, u16), u64> = BTreeMap::new();
    backup.scan(
        Tree::Data,
        Bound::Unbounded,
        Bound::Unbounded,
        Order::Ascending,
        &mut |k, v| {
            let (Some(tag), Some(class)) = (
                k.get(..16).and_then(|t| <[u8; 16]>::try_from(t).ok()),
                k.get(16..18).and_then(|c| <[u8; 2]>::try_from(c).ok()),
            ) else {
                return ControlFlow::Continue(());
            };
            // A damaged record is verify's business, not a loss of the restore.
            let Ok(envelope) = Envelope::parse(v) else {
                return ControlFlow::Continue(());
            };
            if envelope.expiry().is_some_and(|e| e <= now) {
                return ControlFlow::Continue(());
            }
            let id =
                crate::records::sealing_key(SubjectTag(tag), u16::from_be_bytes(class), &envelope);
            if lost_keys.contains(&id) {
                *counts.entry((id.subject, id.class)).or_default() += 1;
            }
            ControlFlow::Continue(())
        },
    )?;
    let names = class_names(backup)?;
    Ok(counts
        .into_iter()
        .map(|((subject, class), records)| {
            let name = names
                .get(&class)
                .cloned()
                .unwrap_or_else(|| format!("#{class}"));
            (
                class,
                LostRecords {
                    subject,
                    class: name,
                    records,
                    reason: LossReason::RekeyedAfterBackup,
                },
            )
        })
        .collect())
}

/// The key provider a restore into `target` uses: the configured one, else
/// the live store's (one provider per key file: restoring next to a live
/// store shares it rather than opening the same file twice), else the key
/// file.
fn restore_provider(target: &Config, source: ErasureSource<'_>) -> Result<Arc<dyn KeyProvider>> {
    Ok(match (&target.key_provider, source) {
        (Some(provider), _) => Arc::clone(provider),
        (None, ErasureSource::Live(db)) => Arc::clone(db.inner.vault.provider()),
        (None, ErasureSource::File(_)) => {
            Arc::new(FileKeyProvider::open(target.placed_key_file()?)?)
        }
    })
}

/// Removes what a failed restore wrote into `target`: the directory itself
/// if the restore created it, else everything in it (it was empty).
/// Refuses a restore target whose storage holds a store or a failed
/// restore (a cluster namespace in use).
fn ensure_empty_storage(to: &dyn Storage, target: &Config) -> Result<()> {
    if super::meta_get(to, meta::FORMAT)?.is_some()
        || super::meta_get(to, meta::RESTORE_PENDING)?.is_some()
    {
        return Err(Error::InvalidArgument {
            what: "restore target",
            detail: format!(
                "the {} store at {} already holds a store (or a failed restore); restore \
                 into an empty namespace",
                to.backend(),
                target.path().display()
            ),
        });
    }
    Ok(())
}

/// Removes every key a failed restore wrote into `storage` (a cluster
/// namespace), in batches the backend takes, the restore-pending mark
/// last: interrupted, the namespace still refuses to open as a store. A
/// full cluster (etcd's NOSPACE) still takes removals.
fn clear_failed_restore(storage: &dyn Storage) -> Result<()> {
    let limit = storage.max_batch_ops().unwrap_or(1024).max(1);
    let trees = Tree::ALL.iter().filter(|t| **t != Tree::Meta);
    for tree in trees.chain(std::iter::once(&Tree::Meta)) {
        loop {
            let mut keys = Vec::new();
            storage.scan(
                *tree,
                std::ops::Bound::Unbounded,
                std::ops::Bound::Unbounded,
                crate::storage::Order::Ascending,
                &mut |k, _| {
                    if !(*tree == Tree::Meta && k == meta::RESTORE_PENDING) {
                        keys.push(k.to_vec());
                    }
                    if keys.len() >= limit {
                        std::ops::ControlFlow::Break(())
                    } else {
                        std::ops::ControlFlow::Continue(())
                    }
                },
            )?;
            if keys.is_empty() {
                break;
            }
            let mut batch = WriteBatch::new();
            for key in keys {
                batch.remove(*tree, key);
            }
            storage.apply(&batch, Durability::Durable)?;
        }
    }
    let mut pending = WriteBatch::new();
    pending.remove(Tree::Meta, meta::RESTORE_PENDING);
    storage.apply(&pending, Durability::Durable)?;
    Ok(())
}

fn remove_failed_restore(target: &Path, existed: bool) -> std::io::Result<()> {
    if !existed {
        return match std::fs::remove_dir_all(target) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        };
    }
    for entry in std::fs::read_dir(target)? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

impl Db {
    /// Writes a consistent copy of the store into `dest` (a new or empty
    /// directory), pausing writers, erasures and compaction meanwhile. The
    /// key file is not copied: see the module docs.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let config = shredkv::Config::new(dir.path().join("store"))
    /// #     .key_file(dir.path().join("keys")).maintenance_every(None);
    /// # let db = shredkv::Db::open(config)?;
    /// use shredkv::{Config, Db, ErasureSource};
    /// db.register_account("acct-42")?;
    /// db.put("acct-42", "message_content", b"m1", b"hello")?;
    /// let report = db.backup(dir.path().join("backup"))?; // the key file is not copied
    /// assert!(report.entries > 0);
    /// // A restore replays the erasures made since the backup, from the live store
    /// // (or from an exported erasure log), with the live store's key file.
    /// let target = Config::new(dir.path().join("restored")).key_file(dir.path().join("keys"));
    /// let (restored, _) = Db::restore(dir.path().join("backup"), target, ErasureSource::Live(&db))?;
    /// assert!(restored.get("acct-42", "message_content", b"m1")?.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// `dest` not empty; storage failures.
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<BackupReport> {
        self.backup_with(dest, &mut |_| {})
    }

    /// [`Db::backup`], telling `progress` the entries copied so far as the
    /// copy goes (every few thousand entries).
    ///
    /// # Errors
    /// As [`Db::backup`].
    pub fn backup_with(
        &self,
        dest: impl AsRef<Path>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<BackupReport> {
        let dest = dest.as_ref();
        ensure_empty_dir(dest, "backup directory")?;
        // Owner-only, like the store: a backup holds the same ciphertext.
        super::create_private_dir(dest)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o700)).map_err(
                |source| Error::Io {
                    action: "make the backup directory owner-only",
                    path: dest.to_path_buf(),
                    source,
                },
            )?;
        }
        let inner = &self.inner;
        let _single = inner
            .compaction
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let _paused = inner.gate.write_all();
        inner.storage.flush()?;
        let taken_at = inner.clock.now();
        let copy = storage::open(backup_backend(inner.storage.backend()), dest)?;
        // Marked before anything is copied, so even a partial copy is never
        // opened as a store (see [`refuse_unservable`]).
        let mut mark = WriteBatch::new();
        mark.put(
            Tree::Meta,
            meta::BACKUP_OF,
            backup_mark(&inner.store_id, taken_at),
        );
        copy.apply(&mark, Durability::Durable)?;
        // The bytes as stored: control values keep their MACs (the backup
        // has the same store secret).
        let entries = copy_trees(inner.sealed.raw().as_ref(), copy.as_ref(), progress)?;
        let after = |secs: i64| {
            taken_at
                .checked_add(jiff::SignedDuration::from_secs(secs))
                .unwrap_or(Timestamp::MAX)
        };
        let timeline = inner.timeline;
        let epoch_age = inner
            .epoch_time(meta::EPOCH_STARTED, inner.vault.current_epoch())?
            .map_or(0, |started| taken_at.as_second().saturating_sub(started));
        Ok(BackupReport {
            path: dest.to_path_buf(),
            entries,
            taken_at,
            restorable_until: after((timeline.epoch_lifetime - epoch_age).max(0)),
            unrestorable_after: after(timeline.min_window),
        })
    }

    /// Writes the store's erasure log (its ledger, every destroyed key id,
    /// and its decisions: legal holds, parked erasures, subject records and
    /// releases; no personal data) to `path`, for restoring a backup when
    /// this store is not available. Returns the number of erasures and
    /// destroyed keys written.
    ///
    /// # Errors
    /// Storage failures, or `path` not writable.
    pub fn export_erasure_log(&self, path: impl AsRef<Path>) -> Result<u64> {
        let log = ErasureLog::of(self.inner.storage.as_ref())?;
        let path = path.as_ref();
        std::fs::write(path, log.encode()).map_err(|source| Error::Io {
            action: "write the erasure log",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(u64::try_from(log.ledger.len() + log.destroyed.len()).unwrap_or(u64::MAX))
    }

    /// Restores the backup in `backup` into `target.path()` (a new or empty
    /// directory) and replays `source`'s erasures onto it, with its
    /// decisions (holds in force, parked erasures, closures, opt-outs,
    /// releases, restrictions), before returning the open store. `target`
    /// must name the live key provider (the same key file); the restored
    /// store uses `target`'s backend if it names one, else the backup's.
    /// Refuses a backup that cannot bring back some of its records (see
    /// [`Db::restore_with`] to accept that).
    ///
    /// # Errors
    /// As [`Db::restore_with`] with the default [`RestoreOptions`].
    pub fn restore(
        backup: impl AsRef<Path>,
        target: Config,
        source: ErasureSource<'_>,
    ) -> Result<(Db, RestoreReport)> {
        Self::restore_with(backup, target, source, RestoreOptions::default())
    }

    /// [`Db::restore`], with `options`.
    ///
    /// Records of the backup sealed under a key version that the live store
    /// destroyed by a re-key after the backup cannot be decrypted after the
    /// replay (which must destroy that version: it also protects records
    /// deleted since, G2). Unless `options` accepts that loss, the restore
    /// is then refused before anything is written, with
    /// [`Error::RestoreLosesRecords`] listing them per subject and class;
    /// accepted, they are listed in [`RestoreReport::lost`] and in the
    /// audit log, and left out of the restored store (absent on every read
    /// path and to verify).
    ///
    /// A restore that fails removes what it wrote into the target (and the
    /// target directory, if it created it).
    ///
    /// # Errors
    /// [`Error::RestoreLosesRecords`] (see above); [`Error::StoreKeysDestroyed`]
    /// if the backup is older than its purge window (its epoch was
    /// destroyed); a non-empty target; storage and key provider failures;
    /// [`Error::Io`] naming the target if a failed restore's files cannot
    /// be removed (the directory then refuses to open: delete it). A
    /// restore killed half-way leaves a store that refuses to open until it
    /// is deleted and the restore run again.
    pub fn restore_with(
        backup: impl AsRef<Path>,
        target: Config,
        source: ErasureSource<'_>,
        options: RestoreOptions,
    ) -> Result<(Db, RestoreReport)> {
        let backup = backup.as_ref();
        if !backup.exists() {
            return Err(Error::Io {
                action: "open the backup",
                path: backup.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such backup directory",
                ),
            });
        }
        ensure_empty_dir(target.path(), "restore target")?;
        let log = match source {
            ErasureSource::Live(db) => ErasureLog::of(db.inner.storage.as_ref())?,
            ErasureSource::File(path) => {
                let bytes = std::fs::read(path).map_err(|source| Error::Io {
                    action: "read the erasure log",
                    path: path.to_path_buf(),
                    source,
                })?;
                ErasureLog::decode(&bytes).map_err(|source| Error::Corrupt {
                    location: Box::new(crate::error::Location {
                        tree: "erasure log",
                        subject: None,
                        class: None,
                        key_hex: path.display().to_string(),
                    }),
                    source,
                })?
            }
        };
        // The restored store's time starts no earlier than the live store's,
        // nor than any erasure it replays: a clock set back where the
        // restore runs must not date new keys before replayed erasures.
        let time_floor = match source {
            ErasureSource::Live(db) => Some(db.now().as_second()),
            ErasureSource::File(_) => None,
        }
        .into_iter()
        .chain(log.latest_erasure())
        .max();
        // When the live store started each of its epochs: the restored store
        // takes over and must destroy them on the same schedule (G2).
        let epoch_starts = match source {
            ErasureSource::Live(db) => epoch_starts(db.inner.storage.as_ref())?,
            ErasureSource::File(_) => BTreeMap::new(),
        };
        // The backup is read with the backend that made it.
        let from = storage::open(None, backup)?;
        let provider = restore_provider(&target, source)?;
        // Before anything is written: a backup older than its purge window
        // (its epoch destroyed), or one the key provider does not hold.
        let (_, backup_secret, _) = super::load_identity(from.as_ref(), provider.as_ref(), backup)?;
        // Read through its sealed view if its control values are sealed
        // (a backup of format 1 is sealed by the restored store's open).
        let sealed_backup = super::meta_get(from.as_ref(), meta::FORMAT)?
            .as_deref()
            .is_some_and(|f| matches!(f, [format] if super::format_is_sealed(*format)));
        let view: Arc<dyn Storage> = if sealed_backup {
            super::sealed_view(&from, backup_secret.expose_secret(), backup)
        } else {
            Arc::clone(&from)
        };
        drop(backup_secret);
        // A shard's backup restores only as that shard: refused here, before
        // the target holds anything (a cluster namespace would keep it).
        crate::shard_route::check(view.as_ref(), target.shard, backup)?;
        let now = time_floor
            .unwrap_or(i64::MIN)
            .max(target.clock.now().as_second());
        let lost = lost_records(view.as_ref(), &log, now)?;
        drop(view);
        if !lost.is_empty() && !options.accept_lost_records {
            return Err(Error::RestoreLosesRecords {
                backup: backup.to_path_buf(),
                lost: lost.into_iter().map(|(_, l)| l).collect(),
            });
        }
        let path = target.path().to_path_buf();
        let existed = path.exists();
        super::create_private_dir(target.path())?;
        // The backup's backend, unless the target names one (a restore can
        // move a store to another backend: it copies trees). One handle for
        // the copy, the restored store and, if the restore fails, removing
        // what it wrote (a full cluster takes removals, not a new owner).
        let to = match open_restore_target(&target, Some(from.backend())) {
            Ok(to) => to,
            Err(err) => {
                let _ = remove_failed_restore(&path, existed);
                return Err(err);
            }
        };
        // A cluster namespace is not a directory ensure_empty_dir saw; one
        // that holds anything is refused, and left as it is.
        if let Err(err) = ensure_empty_storage(to.as_ref(), &target) {
            drop(to);
            let _ = remove_failed_restore(&path, existed);
            return Err(err);
        }
        let remote = target.remote.is_some();
        let mut target = target;
        target.time_floor = time_floor;
        let restored = Self::restore_into(
            from,
            Arc::clone(&to),
            target,
            provider,
            &log,
            lost,
            &epoch_starts,
        );
        match restored {
            Ok(restored) => Ok(restored),
            Err(err) => {
                // A cluster namespace keeps what was copied into it.
                if remote && let Err(cleanup) = clear_failed_restore(to.as_ref()) {
                    return Err(Error::Io {
                        action: "remove the keys of a failed restore from its cluster namespace (the namespace refuses to open as an interrupted restore; delete its keys by hand, e.g. etcdctl del --prefix)",
                        path,
                        source: std::io::Error::other(format!(
                            "the restore failed: {err}; removing what it wrote failed: {cleanup}"
                        )),
                    });
                }
                drop(to);
                if let Err(source) = remove_failed_restore(&path, existed) {
                    return Err(Error::Io {
                        action: "remove the files of a failed restore (the directory refuses to open as an interrupted restore; delete it by hand)",
                        path,
                        source,
                    });
                }
                Err(err)
            }
        }
    }

    /// Copies the backup in `from` into `to` (the storage of `target`) and
    /// replays `log`.
    fn restore_into(
        from: Arc<dyn Storage>,
        to: Arc<dyn Storage>,
        target: Config,
        provider: Arc<dyn KeyProvider>,
        log: &ErasureLog,
        lost: Vec<LostScope>,
        epoch_starts: &BTreeMap<u32, i64>,
    ) -> Result<(Db, RestoreReport)> {
        let entries = {
            let mut pending = WriteBatch::new();
            pending.put(Tree::Meta, meta::RESTORE_PENDING, vec![1]);
            to.apply(&pending, Durability::Durable)?;
            let entries = copy_trees(from.as_ref(), to.as_ref(), &mut |_| {})?;
            drop(from);
            entries
        };
        let maintenance = target.maintenance_every;
        let db = Db::open_with(target.apply_policy_change(true), to, provider, true)?;
        let report = db.replay(log, entries, lost, epoch_starts)?;
        // The replay's node debts, the whole tree's among them, paid before
        // the store serves anything.
        {
            let inner = &db.inner;
            let _single = inner
                .compaction
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            inner.pay_node_debts(
                inner.clock.now(),
                &mut crate::retention::CompactionReport::default(),
            )?;
        }
        // No rotation here, although the backup's epoch may be due: an epoch
        // made now would be this store's alone, and a trial restore that is
        // dropped would leave it live in a shared key provider, its data
        // decryptable, with no store to destroy it. The first pass rotates;
        // a backup taken before then reports its shorter window.
        // Only a replayed store maintains itself (a half-restored one must
        // not compact or rotate).
        if let Some(every) = maintenance {
            crate::retention::start_maintenance(&db.inner, every)?;
        }
        Ok((db, report))
    }

    /// Applies an erasure log to this (restored) store and clears its
    /// restore-pending mark, durably.
    fn replay(
        &self,
        log: &ErasureLog,
        entries: u64,
        lost: Vec<LostScope>,
        epoch_starts: &BTreeMap<u32, i64>,
    ) -> Result<RestoreReport> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let mut report = RestoreReport {
            entries,
            erasures_replayed: 0,
            keys_destroyed: 0,
            lost: Vec::new(),
        };
        let mut batch = WriteBatch::new();
        let mut touched: BTreeSet<SubjectTag> = BTreeSet::new();
        let mut replay_destroyed: HashSet<KeyId> = HashSet::new();
        let mut owed: Vec<KeyId> = Vec::new();
        // Subject records the replay rewrites, written once at the end.
        let mut updated: HashMap<SubjectTag, SubjectInfo> = HashMap::new();
        for (tag, class, entry) in &log.ledger {
            let key = ledger::key(tag, *class);
            if inner
                .storage
                .get(Tree::Ledger, &key)?
                .is_some_and(|v| LedgerEntry::decode(&v).is_ok_and(|e| e == *entry))
            {
                continue;
            }
            let prefix: Vec<u8> = if *class == ALL_CLASSES {
                tag.0.to_vec()
            } else {
                records::scope_prefix(tag, *class).to_vec()
            };
            let ids = inner
                .vault
                .destroy_prefix(&prefix, now.as_second(), &mut batch)?;
            report.keys_destroyed += u64::try_from(ids.len()).unwrap_or(u64::MAX);
            replay_destroyed.extend(ids.iter().copied());
            batch.put(Tree::Ledger, key, entry.encode());
            if *class == ALL_CLASSES
                && let Some(info) = inner.subject_info(tag)?
            {
                let erased_at = Timestamp::from_second(entry.erased_at).unwrap_or(now);
                let erased = SubjectInfo {
                    state: SubjectState::Erased,
                    erased_at: Some(erased_at),
                    generation: entry.generation,
                    ..info
                };
                updated.insert(*tag, erased);
            }
            touched.insert(*tag);
            report.erasures_replayed += 1;
        }
        // The decisions made since the backup stand too (decisions.rs).
        let carried = match &log.decisions {
            Some(decisions) => inner.carry_decisions(decisions, &mut batch, &mut updated, now)?,
            None => Carried::default(),
        };
        for (tag, info) in &updated {
            batch.put(Tree::Subjects, subjects::record_key(tag), info.encode());
            touched.insert(*tag);
        }
        let mut gone: HashSet<KeyId> = HashSet::new();
        for id in &log.destroyed {
            replay_destroyed.insert(*id);
            if inner.vault.destroy_one(id, now.as_second(), &mut batch)? {
                report.keys_destroyed += 1;
                touched.insert(id.subject);
                gone.insert(*id);
            }
        }
        // Records of the backup under a key the replay just destroyed (a
        // version the live store re-keyed after the backup, or an expiry
        // bucket's) cannot come back: they are the reported losses. They are
        // not restored, so that every read path and verify sees them as
        // absent rather than as data naming a destroyed key (tampering).
        let scopes: BTreeSet<(SubjectTag, u16)> =
            gone.iter().map(|id| (id.subject, id.class)).collect();
        for (tag, class) in scopes {
            scan_prefix(
                inner.storage.as_ref(),
                Tree::Data,
                &records::scope_prefix(&tag, class),
                &mut |k, v| {
                    if let Ok(envelope) = Envelope::parse(v) {
                        let id = crate::records::sealing_key(tag, class, &envelope);
                        if gone.contains(&id) {
                            batch.remove(Tree::Data, k);
                        }
                    }
                    ControlFlow::Continue(())
                },
            )?;
        }
        // The live store may have sealed records under these keys after the
        // backup; the restore drops those records, but their ciphertext
        // stays in the live store's files under keys the restored store
        // keeps. Every live data key therefore owes a re-key, so the dropped
        // records die within the purge window counted from the restore.
        crate::vault::layout::scan_all(inner.storage.as_ref(), &mut |tree, k, v| {
            if let (Some(id), Ok(entry)) =
                (crate::vault::layout::id_at(tree, k), VaultEntry::decode(v))
                && entry.state == KeyState::Active
                && id.bucket != crate::vault::SCOPE_BUCKET
                && !replay_destroyed.contains(&id)
            {
                owed.push(id);
            }
            ControlFlow::Continue(())
        })?;
        for id in owed {
            if inner.storage.get(Tree::Debts, &id.to_bytes())?.is_some() {
                continue;
            }
            let window = inner
                .class_by_number(id.class)
                .map_or(inner.timeline.min_window, |c| {
                    c.policy.purge_window_duration().as_secs()
                });
            let due = now.as_second().saturating_add(
                inner
                    .timeline
                    .rekey_delay(jiff::SignedDuration::from_secs(window)),
            );
            batch.put(
                Tree::Debts,
                id.to_bytes(),
                crate::retention::deadlines::value(now.as_second()),
            );
            batch.put(
                Tree::Deadlines,
                crate::retention::deadlines::key(due, &crate::retention::deadlines::Due::Rekey(id)),
                crate::retention::deadlines::value(now.as_second()),
            );
        }
        // Epochs the key provider holds that the backup never knew were
        // started by the live store after the backup: the restored store
        // takes over, so it inherits them and destroys each on its schedule.
        // Their start is the live store's record, or (restoring from an
        // exported log) the backup's time, which can only be earlier.
        let taken = super::meta_get(inner.storage.as_ref(), meta::BACKUP_OF)?
            .and_then(|mark| mark.get(16..24).and_then(|b| b.try_into().ok()))
            .map_or(now.as_second(), i64::from_be_bytes);
        for epoch in inner.vault.provider().live_epochs()? {
            let key = [meta::EPOCH_STARTED, &epoch.0.to_be_bytes()[..]].concat();
            if super::meta_get(inner.storage.as_ref(), &key)?.is_none() {
                let started = epoch_starts.get(&epoch.0).copied().unwrap_or(taken);
                batch.put(Tree::Meta, key, started.to_be_bytes().to_vec());
            }
        }
        // The live store kept making keys after the backup, wrapped under
        // node keys the backup holds too (any node it had not re-keyed
        // since): kept live here, they would open those keys' copies in the
        // live store's files for as long as this store keeps them. Every
        // forest is therefore re-keyed whole (a debt on each, paid before
        // the restore returns, or by the first pass after a crash), so the
        // backup's node keys die with the epochs they are under.
        for forest in inner.vault.tree().forests()? {
            batch.put(
                Tree::Deadlines,
                crate::retention::deadlines::key(
                    now.as_second(),
                    &crate::retention::deadlines::Due::RetireForest(forest),
                ),
                crate::retention::deadlines::value(now.as_second()),
            );
        }
        batch.remove(Tree::Meta, meta::RESTORE_PENDING);
        // Only now, with the replay in the same batch, is it a store.
        batch.remove(Tree::Meta, meta::BACKUP_OF);
        let mut entries = vec![PendingEntry::new(
            AuditEvent::RestoreReplayed,
            None,
            None,
            format!(
                "{} erasures replayed, {} keys destroyed; decisions carried: {} holds in force, \
                 {} parked erasures, {} blocked items due again, {} subjects' events \
                 ({} scopes scheduled)",
                report.erasures_replayed,
                report.keys_destroyed,
                carried.holds,
                carried.parked,
                carried.requeued,
                carried.subjects,
                carried.scheduled
            ),
        )];
        for (class, scope) in lost {
            entries.push(PendingEntry::new(
                AuditEvent::RestoreReplayed,
                Some(scope.subject),
                Some(class),
                format!(
                    "{} records of the backup not restored: {}",
                    scope.records, scope.reason
                ),
            ));
            report.lost.push(scope);
        }
        // The restored store takes over the key file: a generation above
        // both the backup's and the anchor's, so the old store (and any
        // older copy) is behind the anchor from now on.
        let generation = inner
            .audit
            .position(inner.storage.as_ref())?
            .generation
            .max(inner.vault.provider().anchor()?.map_or(0, |a| a.generation))
            .saturating_add(1);
        inner.audit.commit_new_generation(
            inner.storage.as_ref(),
            batch,
            &entries,
            now,
            generation,
        )?;
        for tag in touched {
            inner.vault.evict_subject(&tag, None);
            inner.forget_subject(&tag);
            inner.forget_live_scopes(&tag, None);
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erasure_log_round_trips_and_rejects_damage() {
        let log = ErasureLog {
            ledger: vec![(
                SubjectTag([1; 16]),
                3,
                LedgerEntry {
                    erased_at: 5,
                    generation: 1,
                    reason: crate::ErasureReason::Operator,
                    keys_destroyed: 2,
                    epoch: 1,
                    reopened_at: Some(9),
                },
            )],
            destroyed: vec![KeyId {
                subject: SubjectTag([2; 16]),
                class: 1,
                bucket: 1,
                version: 1,
            }],
            decisions: Some(one_of_each_decision()),
        };
        let bytes = log.encode();
        assert_eq!(ErasureLog::decode(&bytes).expect("decode"), log);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(ErasureLog::decode(&bad).is_err(), "flip at {i}");
        }
        for len in 0..bytes.len() {
            assert!(ErasureLog::decode(&bytes[..len]).is_err());
        }
    }

    fn one_of_each_decision() -> Decisions {
        use super::super::decisions::Kind;
        use crate::retention::deadlines::{self, Due};
        let tag = SubjectTag([4; 16]);
        let resumed = deadlines::key(
            9,
            &Due::ResumeErasure {
                tag,
                class: 2,
                reason: crate::ErasureReason::Operator,
                whole: true,
            },
        );
        let mut parked = records::scope_prefix(&tag, 2).to_vec();
        parked.extend_from_slice(&resumed);
        let info = SubjectInfo {
            tag,
            kind: subjects::SubjectKind::Account,
            parent: None,
            state: SubjectState::Restricted,
            generation: 1,
            created_at: Timestamp::from_second(1).expect("time"),
            closed_at: Timestamp::from_second(2).ok(),
            opted_out_at: None,
            released_at: None,
            erased_at: None,
        };
        let mut hold_key = tag.0.to_vec();
        hold_key.extend_from_slice(&2u16.to_be_bytes());
        Decisions {
            entries: vec![
                (
                    Kind::Hold,
                    hold_key,
                    crate::holds::encode(3, &crate::holds::StoredReason::Plain("case 1".into())),
                ),
                (Kind::Parked, parked, Vec::new()),
                (Kind::Resumed, resumed, deadlines::value(9)),
                (
                    Kind::Subject,
                    subjects::record_key(&tag).to_vec(),
                    info.encode(),
                ),
                (
                    Kind::Release,
                    subjects::release_key(&tag, 3).to_vec(),
                    7i64.to_be_bytes().to_vec(),
                ),
            ],
        }
    }

    /// A log exported before decisions were carried (version 1) still
    /// restores: its erasures replay, the backup's decisions stand.
    #[test]
    fn a_version_1_erasure_log_is_read_without_decisions() {
        let log = ErasureLog {
            ledger: Vec::new(),
            destroyed: vec![KeyId {
                subject: SubjectTag([2; 16]),
                class: 1,
                bucket: 1,
                version: 1,
            }],
            decisions: None,
        };
        let v2 = log.encode();
        // Version 1: no decisions section (an empty one is 8 zero bytes).
        let mut v1 = v2[..v2.len() - 4 - 8].to_vec();
        v1[8] = 1;
        let crc = crc32fast::hash(&v1);
        v1.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(ErasureLog::decode(&v1).expect("decode v1"), log);
        let mut v2_read = log.clone();
        v2_read.decisions = Some(Decisions::default());
        assert_eq!(ErasureLog::decode(&v2).expect("decode v2"), v2_read);
    }
}
