//! The store handle: opening, subjects, and the shared state of operations.

mod anchor;
mod backup;
mod certificate;
mod class;
mod decisions;
mod erase;
pub(crate) mod erasure_commit;
mod inspect;
mod ops;
mod scan;
#[cfg(test)]
mod tests;
#[cfg(all(test, feature = "etcd"))]
mod tests_etcd;

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use jiff::Timestamp;
use shredkv_crypto::{
    DataKey, EpochId, FileKeyProvider, KeyId, KeyProvider, Label, ProviderError, StoreSecret,
    SubjectTag, TagKey, WrapContext, WrappedKey,
};

use crate::audit::{AuditEvent, AuditLog, PendingEntry};
use crate::clock::StoreClock;
use crate::config::Config;
use crate::error::{Error, Location, Result};
use crate::retention::timeline::Timeline;
use crate::retention::{ClassPolicy, Policy};
use crate::storage::sealed::SealedStorage;
use crate::storage::{self, Durability, Storage, Tree, WriteBatch, scan_prefix};
use crate::subjects::{self, SubjectInfo, SubjectKind, SubjectState};
use crate::tag_hash::TagMap;
use crate::vault::Vault;
use crate::vault::gate::{RecordLocks, ScopeGate};

pub use backup::{
    BackupReport, ErasureSource, LossReason, LostRecords, RestoreOptions, RestoreReport,
};
pub use certificate::{Certificate, CertifiedErasure, PurgeStatus};
pub use class::{AsClass, Class, ClassName};
pub use erase::{Classes, ErasedScope, Receipt, Retained};
pub use inspect::{ClassStats, IntegrityReport, MAX_AUDIT_DETAIL_LEN, Problem, ProblemKind, Stats};
pub use ops::{
    Applied, Batch, Export, ExportedSubject, MAX_RECORD_KEY_LEN, MAX_VALUE_LEN, Outcome, PutOptions,
};
pub use scan::{ClassPage, Cursor, MAX_PAGE, Page, Records, ScanOptions};

/// The on-disk format version of a store (meta key `format`). Version 4
/// wraps new data keys under the key tree (`vault::tree`); version 3 keeps
/// new expiry-bucket keys in the vault's day lane (`vault::layout`);
/// version 2 seals every control value (`storage::sealed`). A version 1
/// store is sealed by its first open, and versions 1 to 3 are marked 4
/// (their keys stay where they are and are read there, and the first
/// rotation moves them under the tree), so that a binary which does not
/// know the tree refuses the store rather than fail on its keys.
pub(crate) const STORE_FORMAT: u8 = 4;
/// The format of stores whose vault has a day lane but no key tree.
const DAY_LANE_FORMAT: u8 = 3;
/// The format of stores whose control values are sealed but whose vault
/// has no day lane.
const SEALED_FORMAT: u8 = 2;
/// The format of stores made before control values were sealed.
const UNSEALED_FORMAT: u8 = 1;

/// Whether a store (or backup) of `format` has its control values sealed.
pub(crate) fn format_is_sealed(format: u8) -> bool {
    format == STORE_FORMAT || format == DAY_LANE_FORMAT || format == SEALED_FORMAT
}

pub(crate) mod meta {
    pub(crate) const FORMAT: &[u8] = b"format";
    pub(crate) const STORE_ID: &[u8] = b"store_id";
    pub(crate) const STORE_SECRET: &[u8] = b"store_secret";
    pub(crate) const EPOCH: &[u8] = b"epoch";
    pub(crate) const CREATED_AT: &[u8] = b"created_at";
    /// The store's time floor, i64 BE whole seconds (`clock::StoreClock`).
    pub(crate) const STORE_TIME: &[u8] = crate::clock::STORE_TIME_KEY;
    pub(crate) const POLICY_DIGEST: &[u8] = b"policy_digest";
    pub(crate) const CLASS_PREFIX: &[u8] = b"class/";
    pub(crate) const NEXT_CLASS: &[u8] = b"next_class";
    /// `retired_class/` ‖ number u16 → the name of a class removed from the
    /// policy (its number is never reused).
    pub(crate) const RETIRED_CLASS_PREFIX: &[u8] = b"retired_class/";
    pub(crate) const EPOCH_STARTED: &[u8] = b"epoch_started/";
    pub(crate) const EPOCH_RETIRED: &[u8] = b"epoch_retired/";
    pub(crate) const REWRAP_PENDING: &[u8] = b"rewrap_pending";
    /// Present once no live data key is wrapped under an epoch: every one
    /// is under the key tree (`vault::tree`), so a rotation re-wraps the
    /// root alone. Written at creation (format 4), or by the first
    /// rotation of an older store once it has moved every key.
    pub(crate) const KEY_TREE_WHOLE: &[u8] = b"key_tree_whole";
    pub(crate) const RESTORE_PENDING: &[u8] = b"restore_pending";
    /// In a backup's copy only: the source store id ‖ when it was taken
    /// (i64). A store with it is refused; a restore clears it after its replay.
    pub(crate) const BACKUP_OF: &[u8] = b"backup_of";
    /// `resume_pending/` ‖ deadline key → empty: an erasure a released
    /// hold had parked, written with the release; removed once carried out.
    /// An open carries out every one left by a crash before it serves.
    pub(crate) const RESUME_PENDING_PREFIX: &[u8] = b"resume_pending/";
    /// `erasure_pending/` ‖ requested subject tag → a chunked erasure not
    /// finished yet (`db::erasure_commit`); an open finishes every one.
    pub(crate) const ERASURE_PENDING_PREFIX: &[u8] = b"erasure_pending/";
    /// `erasure_pending_page/` ‖ requested subject tag ‖ index u32 BE →
    /// one page of the subjects of a marker too large for one value.
    pub(crate) const ERASURE_PENDING_PAGE_PREFIX: &[u8] = b"erasure_pending_page/";
    /// `retiring_class/` ‖ class number u16 BE → its name: a class whose
    /// retirement has begun (written with the policy digest that removes
    /// it, removed with its name when its last scope is erased). An open
    /// whose policy keeps such a class is refused, so that a retirement once
    /// begun is finished before anything else reads the class.
    pub(crate) const RETIRING_CLASS_PREFIX: &[u8] = b"retiring_class/";
    /// `retiring/` ‖ class number u16 BE ‖ subject tag → u32 BE: the keys a
    /// class retirement has destroyed so far in a scope too large for one
    /// batch (`DbInner::retire_classes`), so that the ledger entry written
    /// when the scope is done counts them all, across an interruption.
    pub(crate) const RETIRING_PREFIX: &[u8] = b"retiring/";
    /// `receipt/` ‖ requested subject tag → the receipt of its last erasure,
    /// the answer to a retry (`db::erasure_commit`).
    pub(crate) const RECEIPT_PREFIX: &[u8] = b"receipt/";
    /// `receipt_page/` ‖ requested subject tag ‖ index u32 BE → one page of
    /// the erased scopes of a receipt too large for one value, named by
    /// the head under `receipt/` (`db::erasure_commit`).
    pub(crate) const RECEIPT_PAGE_PREFIX: &[u8] = b"receipt_page/";
    /// The meta keys read before the store secret is known, so not sealed
    /// (`storage::sealed`): each authenticates otherwise or is checked
    /// against the key provider (the wrapped secret, its epoch, the anchor).
    pub(crate) const IDENTITY_KEYS: &[&[u8]] = &[
        FORMAT,
        STORE_ID,
        STORE_SECRET,
        EPOCH,
        RESTORE_PENDING,
        BACKUP_OF,
        crate::audit::ANCHOR_GENERATION,
    ];
}

/// The sealed view of `storage` for a store whose secret is `secret`.
pub(crate) fn sealed_view(
    storage: &Arc<dyn Storage>,
    secret: &[u8; 32],
    path: &Path,
) -> Arc<SealedStorage> {
    Arc::new(SealedStorage::new(
        Arc::clone(storage),
        TagKey::derive(secret, Label::ControlPlane),
        meta::IDENTITY_KEYS,
        path.to_path_buf(),
    ))
}

/// A retention class of the open store: its policy and its number on disk.
#[derive(Debug, Clone)]
pub(crate) struct ClassEntry {
    pub(crate) number: u16,
    pub(crate) policy: ClassPolicy,
}

pub(crate) struct DbInner {
    pub(crate) path: PathBuf,
    /// The sealed view of the backend: every read and write goes through it.
    pub(crate) storage: Arc<dyn Storage>,
    /// The same view, typed: its raw bytes (backups) and its sweep (verify).
    pub(crate) sealed: Arc<SealedStorage>,
    pub(crate) vault: Vault,
    pub(crate) gate: ScopeGate,
    /// Serialises writers of one record (see [`RecordLocks`]).
    pub(crate) record_locks: RecordLocks,
    pub(crate) audit: AuditLog,
    pub(crate) policy: Policy,
    pub(crate) classes: Vec<ClassEntry>,
    class_index: HashMap<String, usize>,
    pub(crate) store_id: [u8; 16],
    /// The shard this store serves, if it is one (`shard_route`).
    pub(crate) shard: Option<crate::shard_route::ShardBinding>,
    subject_key: TagKey,
    /// Seals legal holds' reasons at rest (`holds`).
    pub(crate) hold_reasons: crate::holds::ReasonCipher,
    /// The store's time: the configured clock, never running back.
    pub(crate) clock: Arc<StoreClock>,
    pub(crate) durability: Durability,
    /// Subject records, each with the classes whose erasure ledger was
    /// checked and found clear (one probe per access for both). Erasure
    /// clears its classes under the gate's write lock before releasing it,
    /// so a live mark is never stale for an operation holding the read lock.
    /// (`crate::sync`'s, so the loom model sees subject state.)
    subjects: crate::sync::Mutex<TagMap<SubjectTag, CachedSubject>>,
    /// Key ids known to owe a recorded re-key debt (tree `debts`), so an
    /// overwrite of a bucket that already owes one skips reading `debts`.
    /// Filled only from what is in the backend (read there, or applied
    /// there); a debt is removed from `debts` only with its key's
    /// destruction, after which no record names the key as live, so an
    /// entry never hides a debt that is missing. Bounded: cleared when full.
    pub(crate) debts_recorded: Mutex<HashSet<KeyId>>,
    /// Subjects of chunked erasures that failed part way, refused until
    /// finished (`db::erasure_commit`).
    pub(crate) unfinished_erasures: erasure_commit::Unfinished,
    /// One compaction (or epoch rotation) at a time.
    pub(crate) compaction: Mutex<()>,
    /// When re-keys run and epoch keys die (G2).
    pub(crate) timeline: Timeline,
    flusher: Mutex<Option<(mpsc::Sender<()>, JoinHandle<()>)>>,
    /// The background maintenance thread, if running.
    pub(crate) maintenance: Mutex<Option<(mpsc::Sender<()>, JoinHandle<()>)>>,
    /// The admin endpoint `Config::admin_socket` asked for, while open.
    #[cfg(feature = "admin")]
    pub(crate) admin: Mutex<Option<crate::admin::AdminServer>>,
}

/// A cached subject record and the classes known live for it.
#[derive(Debug, Clone)]
struct CachedSubject {
    info: SubjectInfo,
    /// Bit `c` set: class number `c` (below 64) was found not erased in this
    /// generation. Classes numbered 64 and up are never marked, so their
    /// accesses always consult the ledger (slower, never wrong).
    live_classes: u64,
}

/// The live-class bit of a class number, if it has one.
fn live_class_bit(class: u16) -> Option<u64> {
    1u64.checked_shl(u32::from(class)).filter(|_| class < 64)
}

/// Subjects cached in memory at most; beyond it the cache starts over.
const SUBJECT_CACHE_ENTRIES: usize = 100_000;

/// Stripes of the record write locks: enough that unrelated writers rarely
/// share one, a few KiB in all.
const RECORD_LOCK_STRIPES: usize = 1024;

impl Drop for DbInner {
    fn drop(&mut self) {
        for thread in [&self.maintenance, &self.flusher] {
            let running = thread.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some((stop, handle)) = running {
                drop(stop);
                // The last handle may be dropped by the thread itself (a
                // pass that outlived every `Db`): it ends on its own.
                if handle.thread().id() != std::thread::current().id() {
                    let _ = handle.join();
                }
            }
        }
        // A clean close leaves nothing buffered; a failure here is what the
        // next open's recovery is for, and Drop cannot report it.
        let _ = self.clock.persist(self.storage.as_ref());
        let _ = self.storage.flush();
    }
}

/// An open shredkv store. Cheap to clone (an `Arc`); `Send + Sync`.
///
/// ```
/// use shredkv::{Classes, Config, Db};
///
/// # let root = tempfile::tempdir()?;
/// # let (store_dir, key_file) = (root.path().join("store"), root.path().join("store.keys"));
/// let db = Db::open(Config::new(&store_dir).key_file(&key_file))?;
/// db.register_account("acct-1")?;
/// db.put("acct-1", "message_content", b"msg-1", b"hello")?;
/// assert_eq!(db.get("acct-1", "message_content", b"msg-1")?.as_deref(), Some(&b"hello"[..]));
///
/// let receipt = db.shred("acct-1", Classes::All)?;
/// assert!(receipt.keys_destroyed() > 0);
/// assert!(db.get("acct-1", "message_content", b"msg-1").unwrap_err().is_erased());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Db {
    pub(crate) inner: Arc<DbInner>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.inner.path)
            .field("backend", &self.inner.storage.backend())
            .finish_non_exhaustive()
    }
}

pub(crate) fn meta_location(key: &[u8]) -> Box<Location> {
    Box::new(Location {
        tree: "meta",
        subject: None,
        class: None,
        key_hex: String::from_utf8_lossy(key).into_owned(),
    })
}

/// The latest time the store is known to have acted on, whole seconds:
/// the floor last written, the store's creation, and the audit chain's
/// last entry (for stores written before the floor was kept).
///
/// A damaged or altered floor is passed over (the other two stand in, and
/// `verify` reports it): it is a safeguard, not configuration, and the next
/// key creation or flush writes it again.
fn stored_time_floor(storage: &dyn Storage) -> Result<i64> {
    let mut floor = i64::MIN;
    let kept = match storage.get(Tree::Meta, meta::STORE_TIME) {
        Err(err) if err.is_corruption() => None,
        other => other?,
    };
    let created = meta_get(storage, meta::CREATED_AT)?;
    for at in [kept, created]
        .iter()
        .flatten()
        .filter_map(|v| StoreClock::decode(v))
    {
        floor = floor.max(at);
    }
    if let Some(at) = crate::audit::last_entry_time(storage)? {
        floor = floor.max(at);
    }
    Ok(floor)
}

pub(crate) fn meta_get(storage: &dyn Storage, key: &[u8]) -> Result<Option<Vec<u8>>> {
    Ok(storage.get(Tree::Meta, key)?)
}

pub(crate) fn meta_array<const N: usize>(storage: &dyn Storage, key: &[u8]) -> Result<[u8; N]> {
    let bytes = meta_get(storage, key)?.ok_or_else(|| Error::Corrupt {
        location: meta_location(key),
        source: shredkv_crypto::FormatError::Truncated {
            what: "store metadata",
            needed: N,
            got: 0,
        },
    })?;
    bytes.as_slice().try_into().map_err(|_| Error::Corrupt {
        location: meta_location(key),
        source: shredkv_crypto::FormatError::InvalidField {
            what: "store metadata",
            detail: "wrong length",
        },
    })
}

impl Db {
    /// Opens the store in `config.path()`, creating it if it does not exist.
    ///
    /// # Errors
    /// The backend or key provider failing, a store written by an unknown
    /// format, a store whose keys were destroyed (older than its purge
    /// window), a policy that differs from the store's without
    /// [`Config::apply_policy_change`], or a key file inside the store
    /// directory without [`Config::allow_key_file_in_store`]
    /// ([`Error::KeyFileInStore`], before any file is created).
    pub fn open(config: Config) -> Result<Db> {
        let path = config.path.clone();
        if config.key_provider.is_none() && storage::Backend::detect(&path).is_none() {
            // Before anything is created, so a refused open leaves no files;
            // a directory with a backend's files is first asked what it is
            // (a backup says so before its key file's place is questioned).
            config.placed_key_file()?;
        }
        create_private_dir(&path)?;
        let storage = match &config.remote {
            Some(remote) => storage::open_remote(remote, &path)?,
            None => storage::open(config.backend, &path)?,
        };
        let existing = meta_get(storage.as_ref(), meta::FORMAT)?.is_some();
        if existing {
            // Before the key file is needed: say what the directory is.
            backup::refuse_unservable(storage.as_ref(), &path)?;
        }
        let provider: Arc<dyn KeyProvider> = match &config.key_provider {
            Some(provider) => Arc::clone(provider),
            None => {
                let file = config.placed_key_file()?;
                let pending = pending_key_file(&file);
                if existing {
                    if !file.exists() && pending.exists() {
                        // A crash after the store's identity was committed
                        // and before its key file was published.
                        publish_key_file(&pending, &file)?;
                    }
                    // Never create a key file for a store that has data: a
                    // new, empty one could only fail later, less clearly.
                    if !file.exists() {
                        return Err(Error::KeyFileMissing {
                            path,
                            key_file: file,
                        });
                    }
                    Arc::new(FileKeyProvider::open(file)?)
                } else if file.exists() {
                    // Keys without data: the backend's files were lost or
                    // replaced. Creating a fresh store here would hide it.
                    return Err(Error::StoreDataMissing {
                        path,
                        key_file: file,
                    });
                } else {
                    return Self::create(config, storage, &file, &pending);
                }
            }
        };
        Self::open_with(config, storage, provider, false)
    }

    /// Creates a new store whose key file is `file`. The key file is made
    /// at `pending` and renamed to `file` only once the store's identity is
    /// durable, so a crash in between never leaves keys without data (which
    /// [`Db::open`] refuses as [`Error::StoreDataMissing`]): the next open
    /// either creates the store again or finishes the rename.
    fn create(
        config: Config,
        storage: Arc<dyn Storage>,
        file: &Path,
        pending: &Path,
    ) -> Result<Db> {
        // Left by a creation that stopped before the store's identity was
        // committed: it never protected any data.
        match std::fs::remove_file(pending) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Io {
                    action: "remove an unfinished key file",
                    path: pending.to_path_buf(),
                    source,
                });
            }
        }
        let provider: Arc<dyn KeyProvider> = Arc::new(FileKeyProvider::open_or_create(pending)?);
        drop(Self::open_with(config.clone(), storage, provider, false)?);
        publish_key_file(pending, file)?;
        // Opened again so the provider names the published file.
        Self::open(config)
    }

    pub(crate) fn open_in_memory(config: Config) -> Result<Db> {
        create_private_dir(&config.path)?;
        let provider = configured_provider(&config)?;
        Self::open_with(
            config,
            Arc::new(crate::storage::memory::MemoryStorage::new()),
            provider,
            false,
        )
    }

    /// Opens with the backend and the key provider wrapped in fault
    /// injectors controlled by `control` (tests only; see `storage::faults`).
    pub(crate) fn open_with_faults(
        config: Config,
        storage: Arc<dyn Storage>,
        control: &crate::storage::faults::FaultControl,
    ) -> Result<Db> {
        use crate::storage::faults::{FaultyProvider, FaultyStorage};
        create_private_dir(&config.path)?;
        let provider = configured_provider(&config)?;
        let storage: Arc<dyn Storage> = Arc::new(FaultyStorage::new(
            storage,
            control.faults(),
            config.path.clone(),
        ));
        let provider: Arc<dyn KeyProvider> =
            Arc::new(FaultyProvider::new(provider, control.faults()));
        let db = Self::open_with(config, storage, provider, false)?;
        db.inner.gate.attach_pauses(control.faults().pauses());
        db.inner.vault.attach_pauses(control.faults().pauses());
        Ok(db)
    }

    /// Opens over an already opened storage backend (tests inject faults here).
    pub(crate) fn open_with(
        config: Config,
        storage: Arc<dyn Storage>,
        provider: Arc<dyn KeyProvider>,
        restoring: bool,
    ) -> Result<Db> {
        let path = config.path.clone();
        let policy = match &config.policy {
            Some(policy) => policy.clone(),
            None => Policy::default_policy()?,
        };
        // Checked before anything is written to the store's trees: a refused
        // open leaves no store state behind (a fresh directory keeps its
        // empty backend files and key file), so the next open starts clean.
        let min_window = policy
            .classes()
            .iter()
            .map(ClassPolicy::purge_window_duration)
            .min()
            .unwrap_or(jiff::SignedDuration::from_hours(30 * 24));
        let timeline = Timeline::new(min_window, config.epoch_rotation)?;
        // A pass at least every half rotation keeps re-keys and epoch deaths
        // inside the window's slack; a slower cadence would break G2 quietly.
        if let Some(every) = config.maintenance_every
            && every > std::time::Duration::from_secs(u64::try_from(timeline.grace()).unwrap_or(0))
        {
            return Err(Error::InvalidArgument {
                what: "maintenance interval",
                detail: format!(
                    "a pass every {} s is slower than the purge timeline allows: with a \
                     shortest purge window of {} s it needs one at least every {} s (half the \
                     epoch rotation); shorten Config::maintenance_every",
                    every.as_secs(),
                    timeline.min_window,
                    timeline.grace()
                ),
            });
        }
        let now = config.clock.now();
        // A restore anchors from its replay on (the backup's chain is behind).
        let audit = AuditLog::open_anchored(storage.as_ref(), Arc::clone(&provider), !restoring)?;

        let (store_id, secret, epoch, sealed) = match meta_get(storage.as_ref(), meta::FORMAT)? {
            None => initialize(&storage, provider.as_ref(), &audit, &policy, now, &path)?,
            Some(format) => {
                let found = format.first().copied().unwrap_or(0);
                if format.len() != 1 || !(format_is_sealed(found) || found == UNSEALED_FORMAT) {
                    return Err(Error::UnsupportedFormat { path, found });
                }
                if !restoring {
                    backup::refuse_unservable(storage.as_ref(), &path)?;
                }
                let (store_id, secret, epoch) =
                    load_identity(storage.as_ref(), provider.as_ref(), &path)?;
                audit.set_key(secret.expose_secret());
                if !restoring {
                    anchor::check(storage.as_ref(), &audit, provider.as_ref(), &path)?;
                }
                let sealed = sealed_view(&storage, secret.expose_secret(), &path);
                if found == UNSEALED_FORMAT {
                    // Dated by the store's time, as everything after it is.
                    let at = Timestamp::from_second(stored_time_floor(storage.as_ref())?)
                        .map_or(now, |floor| floor.max(now));
                    seal_control_plane(&sealed, &audit, at, &path)?;
                } else if found != STORE_FORMAT {
                    let mut batch = WriteBatch::new();
                    batch.put(Tree::Meta, meta::FORMAT, vec![STORE_FORMAT]);
                    sealed.apply(&batch, Durability::Durable)?;
                }
                (store_id, secret, epoch, sealed)
            }
        };
        let storage: Arc<dyn Storage> = Arc::clone(&sealed) as Arc<dyn Storage>;
        // From here on the store's time never runs back past what it kept.
        let clock = Arc::new(
            StoreClock::new(
                Arc::clone(&config.clock),
                stored_time_floor(storage.as_ref())?,
            )
            .at_least(config.time_floor),
        );
        let now = clock.now();

        let digest = meta_get(storage.as_ref(), meta::POLICY_DIGEST)?;
        let policy_changed = digest.as_deref() != Some(&policy.digest()[..]);
        if policy_changed && !config.apply_policy_change {
            return Err(Error::PolicyChanged { path });
        }
        let retiring = classes_to_retire(storage.as_ref(), &policy)?;
        refuse_abandoned_retirement(storage.as_ref(), &retiring)?;
        refuse_held_retirement(storage.as_ref(), &retiring)?;
        if policy_changed {
            let mut batch = WriteBatch::new();
            batch.put(Tree::Meta, meta::POLICY_DIGEST, policy.digest().to_vec());
            for (name, number) in &retiring {
                batch.put(
                    Tree::Meta,
                    retiring_class_key(*number),
                    name.as_bytes().to_vec(),
                );
            }
            let entry = PendingEntry::new(
                AuditEvent::PolicyApplied,
                None,
                None,
                format!(
                    "policy digest {}",
                    shredkv_crypto::hex::encode(&policy.digest())
                ),
            );
            audit.commit(storage.as_ref(), batch, &[entry], now, Durability::Durable)?;
        }

        if let Some(asked) = config.shard
            && (asked.count == 0 || asked.index >= asked.count)
        {
            return Err(Error::InvalidArgument {
                what: "shard",
                detail: format!(
                    "shard {} of {} does not exist: a store is shard 0 to {} of {}",
                    asked.index,
                    asked.count,
                    asked.count.saturating_sub(1),
                    asked.count
                ),
            });
        }
        let shard = crate::shard_route::bind(storage.as_ref(), config.shard, &path)?;
        let classes = number_classes(storage.as_ref(), &policy)?;
        let class_index = classes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.policy.name().to_string(), i))
            .collect();
        let subject_key = TagKey::derive(secret.expose_secret(), Label::SubjectTag);
        let hold_reasons = crate::holds::ReasonCipher::new(secret.expose_secret());
        drop(secret);

        let vault = Vault::new(
            Arc::clone(&storage),
            provider,
            epoch,
            config.key_cache_bytes,
            config.retire_after_seals,
            Arc::clone(&clock),
        );
        let inner = Arc::new(DbInner {
            path,
            storage,
            sealed,
            vault,
            gate: ScopeGate::new(config.gate_stripes),
            record_locks: RecordLocks::new(RECORD_LOCK_STRIPES),
            audit,
            policy,
            classes,
            class_index,
            store_id,
            shard,
            subject_key,
            hold_reasons,
            clock,
            durability: if config.sync_writes {
                Durability::Durable
            } else {
                Durability::Buffered
            },
            subjects: crate::sync::Mutex::new(TagMap::default()),
            debts_recorded: Mutex::new(HashSet::new()),
            unfinished_erasures: erasure_commit::Unfinished::default(),
            compaction: Mutex::new(()),
            timeline,
            flusher: Mutex::new(None),
            maintenance: Mutex::new(None),
            #[cfg(feature = "admin")]
            admin: Mutex::new(None),
        });
        if let Some(every) = config.flush_every {
            let (stop, stopped) = mpsc::channel::<()>();
            let storage = Arc::downgrade(&inner.storage);
            let clock = Arc::clone(&inner.clock);
            let handle = std::thread::Builder::new()
                .name("shredkv-flush".into())
                .spawn(move || {
                    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                        let Some(storage) = storage.upgrade() else {
                            break;
                        };
                        // A failed background flush is retried next tick; the
                        // next explicit flush reports it. The store's time
                        // goes with it, so that what reads saw expire stays
                        // expired after a restart with the clock set back.
                        let _ = clock.persist(storage.as_ref());
                        let _ = storage.flush();
                    }
                })
                .map_err(|source| Error::Io {
                    action: "start the flush thread",
                    path: inner.path.clone(),
                    source,
                })?;
            *inner.flusher.lock().unwrap_or_else(PoisonError::into_inner) = Some((stop, handle));
        }
        if !restoring {
            // A chunked erasure a crash interrupted is finished before
            // anything else runs or is served.
            inner.finish_pending_erasures()?;
        }
        if !restoring {
            // Also after a crash in the middle of a retirement: the class
            // stays numbered until its last scope is erased.
            inner.retire_classes(&retiring, now)?;
        }
        if policy_changed && !restoring {
            inner.recompute_deadlines(now)?;
        }
        if !restoring {
            // A crash between a hold's release and the erasures it parked:
            // they are carried out before anything is served.
            inner.finish_interrupted_releases(now)?;
        }
        if let Some(every) = config.maintenance_every
            && !restoring
        {
            crate::retention::start_maintenance(&inner, every)?;
        }
        #[cfg(feature = "admin")]
        if let Some(socket) = &config.admin_socket
            && !restoring
        {
            let options = crate::admin::AdminOptions {
                allowed_uid: config.admin_allowed_uid,
            };
            let server = crate::admin::AdminServer::start(&inner, socket, options)?;
            *inner.admin.lock().unwrap_or_else(PoisonError::into_inner) = Some(server);
        }
        Ok(Db { inner })
    }

    /// Makes every write so far durable.
    ///
    /// # Errors
    /// The backend failing to sync.
    pub fn flush(&self) -> Result<()> {
        Ok(self.inner.storage.flush()?)
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The storage backend in use.
    pub fn backend(&self) -> crate::Backend {
        self.inner.storage.backend()
    }

    /// The shard this store serves and how many there are, if it is one
    /// ([`Config::shard`]).
    pub fn shard(&self) -> Option<(u32, u32)> {
        self.inner.shard.map(|s| (s.index, s.count))
    }

    /// The retention policy in force.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// The store's time: its clock's reading, never earlier than a second
    /// the store already used (also before a reopen). Every deadline,
    /// expiry and erasure is dated by it, so a clock set back cannot make
    /// an erasure older than the keys it destroyed, or an expired record
    /// live again; while the clock stands behind, this stands still.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use shredkv::jiff::{SignedDuration, Timestamp};
    /// use shredkv::{Config, Db, ManualClock};
    ///
    /// # let root = tempfile::tempdir()?;
    /// let clock = ManualClock::new(Timestamp::from_second(1_800_000_000)?);
    /// # let config = Config::new(root.path().join("store"))
    /// #     .key_file(root.path().join("store.keys"));
    /// let db = Db::open(config.clock(Arc::new(clock.clone())))?;
    /// let now = db.now();
    /// clock.advance(SignedDuration::from_hours(-1));
    /// assert_eq!(db.now(), now, "set back: the store's time stands");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// The keyed tag that stands in for `subject_id` in this store: what
    /// logs, errors, audit entries and certificates show. The tag is of the
    /// id's Unicode NFC form, so canonically equal spellings share it (see
    /// [`MAX_SUBJECT_ID_LEN`](crate::MAX_SUBJECT_ID_LEN) and the rules every
    /// operation applies to ids: no empty ids, no control characters, no
    /// white space at either end).
    pub fn subject_tag(&self, subject_id: &str) -> SubjectTag {
        match crate::subject_id::canonical(subject_id) {
            Ok(canonical) => self.inner.subject_key.subject_tag(canonical.as_bytes()),
            // No operation accepts such an id; its tag names nothing.
            Err(_) => self.inner.subject_key.subject_tag(subject_id.as_bytes()),
        }
    }

    /// The tag of `subject_id`, or [`Error::InvalidArgument`] if the id
    /// breaks the subject-id rules (`subject_id.rs`).
    pub(crate) fn tag_of(&self, subject_id: &str) -> Result<SubjectTag> {
        let canonical = crate::subject_id::canonical(subject_id)?;
        Ok(self.inner.subject_key.subject_tag(canonical.as_bytes()))
    }

    /// Registers a customer account. Registering an existing account again
    /// is a no-op.
    ///
    /// # Errors
    /// [`Error::SubjectConflict`] if the id is an end user;
    /// [`Error::Erased`] if it was erased (use [`Db::re_register`]).
    pub fn register_account(&self, account_id: &str) -> Result<SubjectTag> {
        self.register(account_id, None)
    }

    /// Registers an end user of `account_id` (which must be registered,
    /// and neither erased nor closed).
    ///
    /// # Errors
    /// [`Error::UnknownSubject`] if the account is unknown,
    /// [`Error::Erased`] or [`Error::Closed`] if it was erased or closed,
    /// [`Error::SubjectConflict`] if the user exists under another account.
    pub fn register_end_user(&self, user_id: &str, account_id: &str) -> Result<SubjectTag> {
        self.register(user_id, Some(account_id))
    }

    fn register(&self, id: &str, account: Option<&str>) -> Result<SubjectTag> {
        let tag = self.tag_of(id)?;
        // An account of a shard store must route here: its end users and
        // its erasure stay in one store (an end user follows its account).
        if account.is_none()
            && let Some(shard) = self.inner.shard
        {
            let canonical = crate::subject_id::canonical(id)?;
            let routed = crate::shard_route::shard_of(&canonical, shard.count);
            if routed != shard.index {
                return Err(Error::WrongShard {
                    path: self.inner.path.clone(),
                    subject: Some(tag),
                    store: (shard.index, shard.count),
                    asked: (routed, shard.count),
                });
            }
        }
        let parent = account.map(|account| self.tag_of(account)).transpose()?;
        // An end user is registered under the write lock of its account
        // too, and the account's state is checked under it: an erasure or
        // closure of the account (which holds that lock while it lists and
        // handles the account's end users) either sees the new end user or
        // is seen by this check. Never both missed.
        let mut locked = vec![tag];
        locked.extend(parent);
        let _exclusive = self.inner.gate.write(&locked);
        // An account whose chunked erasure is unfinished takes no end user:
        // finishing it lists the family again (`erasure_commit`).
        for tag in &locked {
            self.inner.refuse_unfinished(tag)?;
        }
        if let Some(parent) = parent {
            let info = self
                .inner
                .subject_info(&parent)?
                .ok_or(Error::UnknownSubject { subject: parent })?;
            if info.kind == SubjectKind::EndUser {
                return Err(Error::SubjectConflict {
                    subject: parent,
                    detail: "is an end user, and end users cannot own end users".into(),
                });
            }
            if info.state == SubjectState::Erased {
                return Err(info.erased_error());
            }
            // D2: a closed account takes no new end users (nothing would
            // ever schedule their erasure).
            if let Some(closed_at) = info.closed_at {
                return Err(Error::Closed {
                    subject: parent,
                    closed_at,
                });
            }
        }
        if let Some(existing) = self.inner.subject_info(&tag)? {
            if existing.state == SubjectState::Erased {
                return Err(existing.erased_error());
            }
            if existing.parent != parent {
                return Err(Error::SubjectConflict {
                    subject: tag,
                    detail: "is already registered with another account (or as an account); subjects do not move".into(),
                });
            }
            return Ok(tag);
        }
        let now = self.now();
        let info = SubjectInfo {
            tag,
            kind: if parent.is_some() {
                SubjectKind::EndUser
            } else {
                SubjectKind::Account
            },
            parent,
            state: SubjectState::Active,
            generation: 1,
            created_at: now,
            closed_at: None,
            opted_out_at: None,
            released_at: None,
            erased_at: None,
        };
        let mut batch = WriteBatch::new();
        batch.put(Tree::Subjects, subjects::record_key(&tag), info.encode());
        if let Some(parent) = &parent {
            batch.put(
                Tree::Subjects,
                subjects::child_key(parent, &tag),
                Vec::new(),
            );
        }
        let entry = PendingEntry::new(
            AuditEvent::SubjectRegistered,
            Some(tag),
            None,
            match parent {
                Some(parent) => format!("end user of account {parent}"),
                None => "account".to_string(),
            },
        );
        self.inner.audit.commit(
            self.inner.storage.as_ref(),
            batch,
            &[entry],
            now,
            self.inner.durability,
        )?;
        self.inner.cache_subject(info);
        Ok(tag)
    }

    /// What the store knows about a subject, or `None` if never registered.
    ///
    /// # Errors
    /// A damaged subject record, or the backend failing.
    pub fn subject(&self, subject_id: &str) -> Result<Option<SubjectInfo>> {
        self.inner.subject_info(&self.tag_of(subject_id)?)
    }

    /// Every subject, in tag order (for operators; O(subjects)).
    ///
    /// # Errors
    /// A damaged subject record, or the backend failing.
    pub fn subjects(&self) -> Result<Vec<SubjectInfo>> {
        let mut out = Vec::new();
        let mut failure = None;
        scan_prefix(
            self.inner.storage.as_ref(),
            Tree::Subjects,
            &[0x00],
            &mut |k, v| {
                let Some(tag) = subjects::tag_of_record_key(k) else {
                    return ControlFlow::Continue(());
                };
                match SubjectInfo::decode(tag, v) {
                    Ok(info) => out.push(info),
                    Err(source) => {
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

    /// The end users of an account, by tag.
    ///
    /// # Errors
    /// The backend failing.
    pub fn end_users_of(&self, account: &SubjectTag) -> Result<Vec<SubjectTag>> {
        self.inner.children(account)
    }
}

pub(crate) fn subject_location(tag: &SubjectTag) -> Box<Location> {
    Box::new(Location {
        tree: "subjects",
        subject: Some(*tag),
        class: None,
        key_hex: tag.to_hex(),
    })
}

impl DbInner {
    pub(crate) fn now_secs(&self) -> i64 {
        self.clock.now().as_second()
    }

    pub(crate) fn class(&self, name: &str) -> Result<&ClassEntry> {
        self.class_index
            .get(name)
            .and_then(|i| self.classes.get(*i))
            .ok_or_else(|| Error::UnknownClass {
                class: name.to_string(),
            })
    }

    /// Items per batch of a page of `default` items, each writing up to
    /// `ops_per_item` ops: the default, or fewer on a backend with a batch
    /// limit (etcd's `--max-txn-ops`), keeping room for a page's own writes
    /// (its audit entry, markers).
    pub(crate) fn batch_page(&self, default: usize, ops_per_item: usize) -> usize {
        /// Room a page keeps for writes that are not per item.
        const PAGE_OWN_OPS: usize = 16;
        match self.storage.max_batch_ops() {
            Some(limit) => default
                .min(limit.saturating_sub(PAGE_OWN_OPS) / ops_per_item.max(1))
                .max(1),
            None => default,
        }
    }

    pub(crate) fn class_by_number(&self, number: u16) -> Option<&ClassEntry> {
        self.classes.iter().find(|c| c.number == number)
    }

    pub(crate) fn class_name(&self, number: u16) -> String {
        self.class_label(number).into_owned()
    }

    /// [`DbInner::class_name`] without a copy, for per-key audit details.
    pub(crate) fn class_label(&self, number: u16) -> std::borrow::Cow<'_, str> {
        self.class_by_number(number).map_or_else(
            || std::borrow::Cow::Owned(format!("#{number}")),
            |c| std::borrow::Cow::Borrowed(c.policy.name()),
        )
    }

    pub(crate) fn subject_info(&self, tag: &SubjectTag) -> Result<Option<SubjectInfo>> {
        if let Some(cached) = crate::sync::lock(&self.subjects).get(tag) {
            return Ok(Some(cached.info.clone()));
        }
        let Some(bytes) = self
            .storage
            .get(Tree::Subjects, &subjects::record_key(tag))?
        else {
            return Ok(None);
        };
        let info = SubjectInfo::decode(*tag, &bytes).map_err(|source| Error::Corrupt {
            location: subject_location(tag),
            source,
        })?;
        self.cache_subject(info.clone());
        Ok(Some(info))
    }

    /// Caches a subject's record. The classes known live stay known: only
    /// erasure (and forgetting the subject) clears them.
    pub(crate) fn cache_subject(&self, info: SubjectInfo) {
        let mut cache = crate::sync::lock(&self.subjects);
        if let Some(cached) = cache.get_mut(&info.tag) {
            cached.info = info;
            return;
        }
        if cache.len() >= SUBJECT_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(
            info.tag,
            CachedSubject {
                info,
                live_classes: 0,
            },
        );
    }

    /// When the subject's account was closed, if it was: the subject's own
    /// closure, or for an end user its account's (which also covers an end
    /// user registered under a closed account before registration refused it).
    pub(crate) fn closure_of(&self, info: &SubjectInfo) -> Result<Option<Timestamp>> {
        if info.closed_at.is_some() {
            return Ok(info.closed_at);
        }
        match &info.parent {
            Some(parent) => Ok(self
                .subject_info(parent)?
                .and_then(|account| account.closed_at)),
            None => Ok(None),
        }
    }

    /// The subject's cached record, and whether `class` is known live for
    /// it; `None` if the subject is not cached. One probe for both.
    pub(crate) fn cached_subject(
        &self,
        tag: &SubjectTag,
        class: u16,
    ) -> Option<(SubjectInfo, bool)> {
        let cache = crate::sync::lock(&self.subjects);
        let cached = cache.get(tag)?;
        let live = live_class_bit(class).is_some_and(|bit| cached.live_classes & bit != 0);
        Some((cached.info.clone(), live))
    }

    /// Remembers that `class` of a cached subject is not erased (the caller
    /// checked the ledger under the gate's read lock). A subject no longer
    /// cached is left alone: the next access checks again.
    pub(crate) fn note_scope_live(&self, tag: &SubjectTag, class: u16) {
        if let Some(bit) = live_class_bit(class)
            && let Some(cached) = crate::sync::lock(&self.subjects).get_mut(tag)
        {
            cached.live_classes |= bit;
        }
    }

    /// Forgets that a subject's scopes (all, or one class) are live: called
    /// by erasure while it holds the gate's write lock.
    pub(crate) fn forget_live_scopes(&self, tag: &SubjectTag, class: Option<u16>) {
        if let Some(cached) = crate::sync::lock(&self.subjects).get_mut(tag) {
            cached.live_classes &= match class {
                None => 0,
                Some(class) => !live_class_bit(class).unwrap_or(0),
            };
        }
    }

    /// After a write that failed: it may have landed all the same (a sync
    /// can fail after the write did, and the backend then persists it with
    /// the next flush), so forget what the caches hold about `tags`. The
    /// next access reads the truth from the store instead of serving a
    /// state the store no longer has (e.g. a subject erased on disk but
    /// still active, with its keys, in memory).
    pub(crate) fn forget_after_failure(&self, tags: &[SubjectTag]) {
        for tag in tags {
            self.forget_subject(tag);
            self.forget_live_scopes(tag, None);
            self.vault.evict_subject(tag, None);
        }
    }

    pub(crate) fn forget_subject(&self, tag: &SubjectTag) {
        crate::sync::lock(&self.subjects).remove(tag);
    }

    pub(crate) fn children(&self, account: &SubjectTag) -> Result<Vec<SubjectTag>> {
        let mut out = Vec::new();
        scan_prefix(
            self.storage.as_ref(),
            Tree::Subjects,
            &subjects::children_prefix(account),
            &mut |k, _| {
                if let Some(user) = subjects::user_of_child_key(k) {
                    out.push(user);
                }
                ControlFlow::Continue(())
            },
        )?;
        Ok(out)
    }
}

/// Where a new store's key file is made before it is published as `file`.
fn pending_key_file(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".creating");
    file.with_file_name(name)
}

/// Renames the key file made for a new store into place, durably.
fn publish_key_file(pending: &Path, file: &Path) -> Result<()> {
    let io = |action, source| Error::Io {
        action,
        path: file.to_path_buf(),
        source,
    };
    std::fs::rename(pending, file).map_err(|e| io("publish the new store's key file", e))?;
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("sync the key file's directory", e))?;
    }
    Ok(())
}

/// The configured key provider, or the file provider at the configured key
/// file (default `path/keys`, which must be allowed).
pub(crate) fn configured_provider(config: &Config) -> Result<Arc<dyn KeyProvider>> {
    Ok(match &config.key_provider {
        Some(provider) => Arc::clone(provider),
        None => Arc::new(FileKeyProvider::open_or_create(config.placed_key_file()?)?),
    })
}

pub(crate) fn create_private_dir(path: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path).map_err(|source| Error::Io {
        action: "create the store directory",
        path: path.to_path_buf(),
        source,
    })
}

/// Creates a new store's identity: store id, first epoch, store secret.
fn initialize(
    storage: &Arc<dyn Storage>,
    provider: &dyn KeyProvider,
    audit: &AuditLog,
    policy: &Policy,
    now: Timestamp,
    path: &Path,
) -> Result<([u8; 16], StoreSecret, EpochId, Arc<SealedStorage>)> {
    let epoch = match provider.live_epochs()?.last() {
        Some(epoch) => *epoch,
        None => provider.create_epoch()?,
    };
    let mut store_id = [0u8; 16];
    store_id.copy_from_slice(&DataKey::generate().expose_secret()[..16]);
    let secret = DataKey::generate();
    let wrapped = provider.wrap(epoch, &WrapContext::StoreSecret, &secret)?;
    // Keyed from the first entry on.
    audit.set_key(secret.expose_secret());
    let mut batch = WriteBatch::new();
    batch.put(Tree::Meta, meta::STORE_ID, store_id.to_vec());
    batch.put(Tree::Meta, meta::STORE_SECRET, wrapped.as_bytes().to_vec());
    batch.put(Tree::Meta, meta::EPOCH, epoch.0.to_be_bytes().to_vec());
    let mut started = meta::EPOCH_STARTED.to_vec();
    started.extend_from_slice(&epoch.0.to_be_bytes());
    batch.put(Tree::Meta, started, now.as_second().to_be_bytes().to_vec());
    batch.put(
        Tree::Meta,
        meta::CREATED_AT,
        now.as_second().to_be_bytes().to_vec(),
    );
    batch.put(Tree::Meta, meta::POLICY_DIGEST, policy.digest().to_vec());
    // Every key it ever makes is under the tree.
    batch.put(Tree::Meta, meta::KEY_TREE_WHOLE, Vec::new());
    // Written last in the same batch: a store either has all of its identity or none.
    batch.put(Tree::Meta, meta::FORMAT, vec![STORE_FORMAT]);
    let entry = PendingEntry::new(
        AuditEvent::StoreCreated,
        None,
        None,
        format!("format {STORE_FORMAT}, {epoch}"),
    );
    let sealed_from_start = PendingEntry::new(
        AuditEvent::ControlPlaneSealed,
        None,
        None,
        "control values sealed from the start",
    );
    let entries = [entry, sealed_from_start];
    let kept = entries.len();
    // What a format-1 build wrote (the test strips the MACs after).
    #[cfg(test)]
    let kept = if tests::CREATE_AS_FORMAT_1.get() {
        1
    } else {
        kept
    };
    // Through the sealed view: every control value carries its MAC from
    // the first write.
    let sealed = sealed_view(storage, secret.expose_secret(), path);
    audit.commit(
        sealed.as_ref(),
        batch,
        entries.get(..kept).unwrap_or_default(),
        now,
        Durability::Durable,
    )?;
    Ok((store_id, StoreSecret::from_unwrapped(secret), epoch, sealed))
}

/// Seals the control values of a store made before they were sealed
/// (format 1) and moves it to format 2, audited. Refuses a store whose audit
/// chain says it was sealed already: its format byte was set back to let
/// unsealed (forged) values in.
fn seal_control_plane(
    sealed: &SealedStorage,
    audit: &AuditLog,
    now: Timestamp,
    path: &Path,
) -> Result<()> {
    if let Some(seq) = crate::audit::first_of(sealed, AuditEvent::ControlPlaneSealed)? {
        return Err(Error::Tampered {
            location: Box::new(Location {
                tree: "meta",
                subject: None,
                class: None,
                key_hex: format!(
                    "`format` of {} (format 1, but audit entry {seq} sealed its control values: set back to let unsealed values in)",
                    path.display()
                ),
            }),
        });
    }
    let count = sealed.seal_existing()?;
    let mut batch = WriteBatch::new();
    batch.put(Tree::Meta, meta::FORMAT, vec![STORE_FORMAT]);
    let entry = PendingEntry::new(
        AuditEvent::ControlPlaneSealed,
        None,
        None,
        format!("format {UNSEALED_FORMAT} → {STORE_FORMAT}: {count} control values sealed"),
    );
    audit.commit(sealed, batch, &[entry], now, Durability::Durable)?;
    Ok(())
}

fn load_identity(
    storage: &dyn Storage,
    provider: &dyn KeyProvider,
    path: &Path,
) -> Result<([u8; 16], StoreSecret, EpochId)> {
    let store_id = meta_array::<16>(storage, meta::STORE_ID)?;
    let epoch = EpochId(u32::from_be_bytes(meta_array::<4>(storage, meta::EPOCH)?));
    let wrapped_bytes = meta_get(storage, meta::STORE_SECRET)?.unwrap_or_default();
    let wrapped = WrappedKey::from_bytes(&wrapped_bytes).map_err(|source| Error::Corrupt {
        location: meta_location(meta::STORE_SECRET),
        source,
    })?;
    let secret = match provider.unwrap(&WrapContext::StoreSecret, &wrapped) {
        Ok(secret) => secret,
        Err(ProviderError::EpochDestroyed { epoch }) => {
            return Err(Error::StoreKeysDestroyed {
                path: path.to_path_buf(),
                epoch: epoch.0,
            });
        }
        Err(ProviderError::UnknownEpoch { .. }) => {
            return Err(Error::KeysDoNotMatch {
                path: path.to_path_buf(),
                provider: provider.describe(),
                detail: "it has never held the epoch that wrapped this store's secret",
            });
        }
        Err(ProviderError::Authentication) => {
            return Err(Error::KeysDoNotMatch {
                path: path.to_path_buf(),
                provider: provider.describe(),
                detail: "the store secret does not authenticate under its epoch key (the key file belongs to another store, or the secret was altered)",
            });
        }
        Err(other) => return Err(other.into()),
    };
    Ok((store_id, StoreSecret::from_unwrapped(secret), epoch))
}

/// Classes the store numbered that the policy no longer names (and does not
/// rename): `(name, number)`. Their scopes are erased when the change is
/// applied, so no key is left that no rule would ever destroy.
fn classes_to_retire(storage: &dyn Storage, policy: &Policy) -> Result<Vec<(String, u16)>> {
    let kept: HashSet<&str> = policy
        .classes()
        .iter()
        .flat_map(|c| std::iter::once(c.name()).chain(c.renamed_from()))
        .collect();
    let mut out = Vec::new();
    scan_prefix(storage, Tree::Meta, meta::CLASS_PREFIX, &mut |k, v| {
        let name = String::from_utf8_lossy(k.get(meta::CLASS_PREFIX.len()..).unwrap_or_default());
        if !kept.contains(name.as_ref())
            && let Some(number) = v.get(..2).and_then(|n| n.try_into().ok())
        {
            out.push((name.into_owned(), u16::from_be_bytes(number)));
        }
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

/// Meta key marking class `number`'s retirement as begun
/// (`meta::RETIRING_CLASS_PREFIX`).
pub(crate) fn retiring_class_key(number: u16) -> Vec<u8> {
    [meta::RETIRING_CLASS_PREFIX, &number.to_be_bytes()].concat()
}

/// Refuses a policy that keeps (or renames) a class whose retirement began
/// and was interrupted: some of its scopes may have lost keys already, and
/// only the retirement's end records their erasure. The error names the
/// class and the way out.
fn refuse_abandoned_retirement(storage: &dyn Storage, retiring: &[(String, u16)]) -> Result<()> {
    let mut begun = Vec::new();
    scan_prefix(
        storage,
        Tree::Meta,
        meta::RETIRING_CLASS_PREFIX,
        &mut |k, v| {
            if let Some(number) = k
                .get(meta::RETIRING_CLASS_PREFIX.len()..)
                .and_then(|n| <[u8; 2]>::try_from(n).ok())
            {
                begun.push((
                    u16::from_be_bytes(number),
                    String::from_utf8_lossy(v).into_owned(),
                ));
            }
            ControlFlow::Continue(())
        },
    )?;
    for (number, name) in begun {
        if !retiring.iter().any(|(_, n)| *n == number) {
            return Err(Error::PolicyViolation {
                class: name.clone(),
                detail: format!(
                    "the removal of this class from the policy began and was interrupted (some of its data may be erased already); open the store once with a policy without class {name} (and no class renamed from it) to finish the removal, then add the class again: it starts empty"
                ),
            });
        }
    }
    Ok(())
}

/// Refuses to retire a class whose data a legal hold covers (G3 before G2):
/// the error names the class and the way out.
fn refuse_held_retirement(storage: &dyn Storage, retiring: &[(String, u16)]) -> Result<()> {
    if retiring.is_empty() {
        return Ok(());
    }
    let mut holds = Vec::new();
    storage.scan(
        Tree::Holds,
        std::ops::Bound::Unbounded,
        std::ops::Bound::Unbounded,
        storage::Order::Ascending,
        &mut |k, _| {
            if let Some(scope) = crate::ledger::split_key(k) {
                holds.push(scope);
            }
            ControlFlow::Continue(())
        },
    )?;
    for (name, number) in retiring {
        for (tag, class) in &holds {
            let covered = if *class == *number {
                true
            } else if *class == crate::ledger::ALL_CLASSES {
                let mut any = false;
                crate::vault::layout::scan_prefix(
                    storage,
                    &crate::records::scope_prefix(tag, *number),
                    &mut |_, slot| {
                        // A live key, or one that cannot be read: data to keep.
                        if crate::vault::VaultEntry::decode(&slot.value)
                            .map_or(true, |e| e.state == crate::vault::KeyState::Active)
                        {
                            any = true;
                            return ControlFlow::Break(());
                        }
                        ControlFlow::Continue(())
                    },
                )?;
                any
            } else {
                false
            };
            if covered {
                return Err(Error::PolicyViolation {
                    class: name.clone(),
                    detail: format!(
                        "the policy no longer has this class, which would erase its data, but a legal hold covers it (subject {tag}); keep the class until the hold is released, or keep its data under a new name with renamed_from = \"{name}\""
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Gives every class of the policy a stable number (never reused).
fn number_classes(storage: &dyn Storage, policy: &Policy) -> Result<Vec<ClassEntry>> {
    let mut next = match meta_get(storage, meta::NEXT_CLASS)? {
        Some(bytes) => {
            u16::from_be_bytes(bytes.as_slice().try_into().map_err(|_| Error::Corrupt {
                location: meta_location(meta::NEXT_CLASS),
                source: shredkv_crypto::FormatError::InvalidField {
                    what: "store metadata",
                    detail: "wrong length",
                },
            })?)
        }
        None => 1,
    };
    let mut batch = WriteBatch::new();
    let mut out = Vec::new();
    for class in policy.classes() {
        let mut key = meta::CLASS_PREFIX.to_vec();
        key.extend_from_slice(class.name().as_bytes());
        let mode = match class.keys() {
            crate::retention::KeyMode::Blinded => 1u8,
            crate::retention::KeyMode::Ordered => 2u8,
        };
        let mut stored = meta_get(storage, &key)?;
        if stored.is_none()
            && let Some(old) = class.renamed_from()
        {
            // An explicit rename: the class keeps its number, so its keys,
            // records, ledger and deadlines carry over.
            let mut old_key = meta::CLASS_PREFIX.to_vec();
            old_key.extend_from_slice(old.as_bytes());
            if let Some(bytes) = meta_get(storage, &old_key)? {
                batch.remove(Tree::Meta, old_key);
                batch.put(Tree::Meta, key.clone(), bytes.clone());
                stored = Some(bytes);
            }
        }
        let number = match stored {
            Some(bytes) => {
                let (number, stored_mode) = match bytes.as_slice() {
                    [a, b] => (u16::from_be_bytes([*a, *b]), None),
                    [a, b, m] => (u16::from_be_bytes([*a, *b]), Some(*m)),
                    _ => {
                        return Err(Error::Corrupt {
                            location: meta_location(&key),
                            source: shredkv_crypto::FormatError::InvalidField {
                                what: "class number",
                                detail: "wrong length",
                            },
                        });
                    }
                };
                if stored_mode.is_some_and(|m| m != mode) {
                    return Err(Error::PolicyViolation {
                        class: class.name().to_string(),
                        detail: "the policy changes its key mode (blinded/ordered), which would make its stored records unreadable or misread; keep the mode, or move the data to a new class".into(),
                    });
                }
                number
            }
            None => {
                let number = next;
                next = next
                    .checked_add(1)
                    .filter(|n| *n < crate::ledger::ALL_CLASSES)
                    .ok_or_else(|| Error::InvalidArgument {
                        what: "policy",
                        detail: "the store ran out of class numbers".into(),
                    })?;
                let mut value = number.to_be_bytes().to_vec();
                value.push(mode);
                batch.put(Tree::Meta, key, value);
                number
            }
        };
        out.push(ClassEntry {
            number,
            policy: class.clone(),
        });
    }
    if !batch.is_empty() {
        batch.put(Tree::Meta, meta::NEXT_CLASS, next.to_be_bytes().to_vec());
        storage.apply(&batch, Durability::Durable)?;
    }
    Ok(out)
}
