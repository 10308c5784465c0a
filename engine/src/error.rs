//! The engine's error type.
//!
//! Every message names what failed, for which subject (by tag, never by id)
//! and class, and what to do next.

use std::fmt;
use std::path::PathBuf;

use jiff::Timestamp;
use shredkv_crypto::{FormatError, ProviderError, SubjectTag};

use crate::retention::PolicyError;
use crate::storage::{StorageError, StorageErrorKind};

/// Where in the store a damaged or tampered value was found.
#[derive(Debug, Clone, PartialEq, Eq)]
// Deserialize is in db/inspect.rs: `tree` is `&'static str`.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Location {
    /// The tree holding it.
    pub tree: &'static str,
    /// The subject it belongs to, if known.
    pub subject: Option<SubjectTag>,
    /// The class it belongs to, if known.
    pub class: Option<String>,
    /// The stored key, hex-encoded (tags and blinded keys only: no personal data).
    #[cfg_attr(feature = "serde", serde(rename = "key"))]
    pub key_hex: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tree `{}`", self.tree)?;
        if let Some(subject) = &self.subject {
            write!(f, ", subject {subject}")?;
        }
        if let Some(class) = &self.class {
            write!(f, ", class `{class}`")?;
        }
        write!(f, ", key {}", self.key_hex)
    }
}

/// Everything that can go wrong in shredkv.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The class is not in the store's policy.
    UnknownClass {
        /// The class name asked for.
        class: String,
    },
    /// The subject was never registered.
    UnknownSubject {
        /// The subject's tag.
        subject: SubjectTag,
    },
    /// Registration conflicts with what the store holds.
    SubjectConflict {
        /// The subject's tag.
        subject: SubjectTag,
        /// What conflicts.
        detail: String,
    },
    /// The subject (or one class of it) was erased; its data is gone.
    Erased {
        /// The subject's tag.
        subject: SubjectTag,
        /// The erased class, or `None` when the whole subject was erased.
        class: Option<String>,
        /// When it was erased.
        erased_at: Timestamp,
    },
    /// The subject's processing is restricted: its data can be exported but
    /// not read or written through normal operations.
    Restricted {
        /// The subject's tag.
        subject: SubjectTag,
    },
    /// The subject's account was closed: it and its end users lost access
    /// (reads and writes fail; an export still returns what is retained),
    /// and no end user can be registered under it.
    Closed {
        /// The subject asked for (for an end user, the end user's tag).
        subject: SubjectTag,
        /// When its account was closed.
        closed_at: Timestamp,
    },
    /// A legal hold forbids the erasure.
    OnHold {
        /// The subject's tag.
        subject: SubjectTag,
        /// The held class, or `None` for a hold over the whole subject.
        /// (Not the hold's reason: free text that may name a person, kept
        /// out of errors, which end up in logs; `Db::holds` shows it.)
        class: Option<String>,
    },
    /// The request contradicts the retention policy.
    PolicyViolation {
        /// The class concerned.
        class: String,
        /// What the policy forbids.
        detail: String,
    },
    /// An argument is invalid.
    InvalidArgument {
        /// Which argument.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// Stored bytes are damaged (checksum mismatch, truncation, unknown
    /// format): media corruption, not tampering.
    Corrupt {
        /// Where (boxed: keeps every `Result` of the crate small).
        location: Box<Location>,
        /// What is wrong with the bytes.
        source: FormatError,
    },
    /// A stored value failed authentication: altered, or moved from another
    /// record or subject.
    Tampered {
        /// Where (boxed: keeps every `Result` of the crate small).
        location: Box<Location>,
    },
    /// The key provider failed (unavailable, corrupt key file, ...).
    KeyProvider(ProviderError),
    /// The store's keys were destroyed: this store (or backup) is older than
    /// its purge window and cannot be decrypted, by design.
    StoreKeysDestroyed {
        /// The store directory.
        path: PathBuf,
        /// The destroyed epoch that wrapped the store secret.
        epoch: u32,
    },
    /// The storage backend failed.
    Storage(StorageError),
    /// The policy file is invalid, or differs from the store's.
    Policy(PolicyError),
    /// The store's policy differs from the configured one.
    PolicyChanged {
        /// The store directory.
        path: PathBuf,
    },
    /// The store was written by a format this build cannot read.
    UnsupportedFormat {
        /// The store directory.
        path: PathBuf,
        /// The format version found.
        found: u8,
    },
    /// The store's data files are missing or empty but its key file exists:
    /// the backend's files were lost or replaced.
    StoreDataMissing {
        /// The store directory.
        path: PathBuf,
        /// The key file found there.
        key_file: PathBuf,
    },
    /// The store has data but its key file does not exist: the path is
    /// wrong, or the key file was lost (then the store is unreadable).
    KeyFileMissing {
        /// The store directory.
        path: PathBuf,
        /// Where the key file was looked for.
        key_file: PathBuf,
    },
    /// The key file would be inside the store directory, where every copy
    /// of the store carries it, and [`crate::Config::allow_key_file_in_store`]
    /// was not given.
    KeyFileInStore {
        /// The store directory.
        path: PathBuf,
        /// The key file.
        key_file: PathBuf,
    },
    /// The key provider does not hold this store's keys.
    KeysDoNotMatch {
        /// The store directory.
        path: PathBuf,
        /// The key provider, described.
        provider: String,
        /// What did not match.
        detail: &'static str,
    },
    /// A restore into this directory was interrupted before the erasure log
    /// was replayed; the store must not serve reads.
    RestoreInterrupted {
        /// The store directory.
        path: PathBuf,
    },
    /// The store is behind the anchor its key provider keeps: its files were
    /// rolled back (a copy or snapshot put back, damage that made the
    /// backend drop its tail) or its audit chain was cut or rewritten.
    /// Serving it could bring back what was erased since; it is refused.
    StoreRolledBack {
        /// The store directory.
        path: PathBuf,
        /// Where the store's audit chain ends: (generation, entry).
        store: (u64, u64),
        /// The position the key provider vouches for.
        anchor: shredkv_crypto::Anchor,
        /// What was found.
        detail: String,
    },
    /// The directory is a backup written by [`Db::backup`](crate::Db::backup),
    /// not a store: serving it would bring back what was erased since it
    /// was taken. Restore it instead (which replays the erasure log).
    IsBackup {
        /// The backup directory.
        path: PathBuf,
        /// When the backup was taken (the store clock).
        taken_at: Timestamp,
    },
    /// The store serves another shard than the request belongs to: an
    /// account that routes to another shard, or an open that names another
    /// shard (or shard count) than the store was bound to. Subjects placed
    /// in the wrong store would escape their family's erasure.
    WrongShard {
        /// The store directory.
        path: PathBuf,
        /// The account, when one was being registered.
        subject: Option<SubjectTag>,
        /// The store's shard: (index, count).
        store: (u32, u32),
        /// The shard asked for, or the account's: (index, count).
        asked: (u32, u32),
    },
    /// This node does not serve the shard an account belongs to
    /// ([`Shards::for_account`](crate::Shards::for_account)): send the
    /// request to the node that serves it, or serve the shard here.
    ShardNotServed {
        /// The account's shard.
        shard: u32,
        /// How many shards there are.
        shards: u32,
    },
    /// A restore would not bring back some records of the backup (a re-key
    /// after the backup destroyed their key version); it was refused before
    /// writing anything. See [`Db::restore_with`](crate::Db::restore_with).
    RestoreLosesRecords {
        /// The backup directory.
        backup: PathBuf,
        /// The records it cannot bring back, per subject and class.
        lost: Vec<crate::LostRecords>,
    },
    /// A file-system operation outside the backend failed.
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The admin endpoint failed: the socket could not be created or
    /// reached, a peer was refused, a frame was malformed or too large, or
    /// the two sides speak different protocol versions.
    Admin {
        /// What went wrong (no personal data).
        detail: String,
    },
    /// A store operated through its admin endpoint refused the request
    /// with this error (its kind, category and message as the store's
    /// process saw them).
    Remote(RemoteError),
}

/// What kind of failure an error is, for callers that sort errors into a
/// few outcomes (the CLI's exit codes; the admin protocol's error frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum ErrorCategory {
    /// Any other failure (storage, I/O, a conflict, a restricted subject).
    Failure,
    /// A bad argument: an unknown class, an invalid value.
    Usage,
    /// An unknown subject, a missing store or store data.
    NotFound,
    /// The data asked for was erased (or its keys destroyed).
    Erased,
    /// Corrupt or tampered stored data.
    Integrity,
    /// An invalid policy, or the policy (or a legal hold) forbids it.
    Policy,
    /// The key provider: missing, misplaced, corrupt or mismatched keys.
    KeyProvider,
}

/// An error a store reported through its admin endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RemoteError {
    /// The error's kind ([`Error::kind`], e.g. `unknown_subject`).
    pub kind: String,
    /// Its category ([`Error::category`]).
    pub category: ErrorCategory,
    /// Its message, as the store's process displays it (subjects by tag).
    pub message: String,
    /// The `detail` of an error that has one (invalid argument, subject
    /// conflict, policy violation), for callers that print it alone.
    pub detail: Option<String>,
}

impl RemoteError {
    /// The remote form of `err`.
    pub fn from_error(err: &Error) -> Self {
        if let Error::Remote(remote) = err {
            return remote.clone();
        }
        let detail = match err {
            Error::InvalidArgument { detail, .. }
            | Error::SubjectConflict { detail, .. }
            | Error::PolicyViolation { detail, .. } => Some(detail.clone()),
            _ => None,
        };
        RemoteError {
            kind: err.kind().to_string(),
            category: err.category(),
            message: err.to_string(),
            detail,
        }
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

// The `is_*` predicates compare kinds, so they answer alike for an error
// raised here and for the same error from a live store's admin socket.
impl Error {
    /// A stable snake_case name of the error's variant (`unknown_subject`,
    /// `erased`...); a remote error's own kind.
    pub fn kind(&self) -> &str {
        match self {
            Error::UnknownClass { .. } => "unknown_class",
            Error::UnknownSubject { .. } => "unknown_subject",
            Error::SubjectConflict { .. } => "subject_conflict",
            Error::Erased { .. } => "erased",
            Error::Restricted { .. } => "restricted",
            Error::Closed { .. } => "closed",
            Error::OnHold { .. } => "on_hold",
            Error::PolicyViolation { .. } => "policy_violation",
            Error::InvalidArgument { .. } => "invalid_argument",
            Error::Corrupt { .. } => "corrupt",
            Error::Tampered { .. } => "tampered",
            Error::KeyProvider(_) => "key_provider",
            Error::StoreKeysDestroyed { .. } => "store_keys_destroyed",
            Error::Storage(_) => "storage",
            Error::Policy(_) => "policy",
            Error::PolicyChanged { .. } => "policy_changed",
            Error::UnsupportedFormat { .. } => "unsupported_format",
            Error::StoreDataMissing { .. } => "store_data_missing",
            Error::KeyFileMissing { .. } => "key_file_missing",
            Error::KeyFileInStore { .. } => "key_file_in_store",
            Error::KeysDoNotMatch { .. } => "keys_do_not_match",
            Error::RestoreInterrupted { .. } => "restore_interrupted",
            Error::StoreRolledBack { .. } => "store_rolled_back",
            Error::IsBackup { .. } => "is_backup",
            Error::WrongShard { .. } => "wrong_shard",
            Error::ShardNotServed { .. } => "shard_not_served",
            Error::RestoreLosesRecords { .. } => "restore_loses_records",
            Error::Io { .. } => "io",
            Error::Admin { .. } => "admin",
            Error::Remote(remote) => &remote.kind,
        }
    }

    /// What kind of failure this is; the CLI's exit code follows from it.
    pub fn category(&self) -> ErrorCategory {
        match self {
            Error::UnknownSubject { .. } | Error::StoreDataMissing { .. } => {
                ErrorCategory::NotFound
            }
            Error::UnknownClass { .. }
            | Error::InvalidArgument { .. }
            | Error::IsBackup { .. }
            | Error::WrongShard { .. } => ErrorCategory::Usage,
            Error::Erased { .. }
            | Error::RestoreLosesRecords { .. }
            | Error::StoreKeysDestroyed { .. } => ErrorCategory::Erased,
            Error::OnHold { .. }
            | Error::PolicyViolation { .. }
            | Error::Policy(_)
            | Error::PolicyChanged { .. } => ErrorCategory::Policy,
            Error::Corrupt { .. } | Error::Tampered { .. } | Error::StoreRolledBack { .. } => {
                ErrorCategory::Integrity
            }
            Error::Storage(storage) if storage.is_corruption() => ErrorCategory::Integrity,
            Error::KeyProvider(_)
            | Error::KeysDoNotMatch { .. }
            | Error::KeyFileMissing { .. }
            | Error::KeyFileInStore { .. } => ErrorCategory::KeyProvider,
            Error::Remote(remote) => remote.category,
            _ => ErrorCategory::Failure,
        }
    }

    /// Whether the error means the data asked for was erased (not an
    /// operational failure).
    pub fn is_erased(&self) -> bool {
        self.kind() == "erased"
    }

    /// Whether the error means the subject's account was closed (access
    /// ended; what is retained can still be exported).
    pub fn is_closed(&self) -> bool {
        self.kind() == "closed"
    }

    /// Whether the subject named is not known to the store (never
    /// registered). A missing record is not an error: `get` returns `None`.
    pub fn is_not_found(&self) -> bool {
        self.kind() == "unknown_subject"
    }

    /// Whether another process (or another open in this one) holds the
    /// store; retry later, or operate it through the process that holds it.
    pub fn is_locked(&self) -> bool {
        matches!(self, Error::Storage(err) if err.is_locked())
    }

    /// Whether the operation failed because the store is full (see
    /// [`StorageError::is_full`]); nothing of it was applied.
    pub fn is_full(&self) -> bool {
        matches!(self, Error::Storage(err) if err.is_full())
    }

    /// Whether this node no longer owns the etcd store (see
    /// [`StorageError::is_fenced`]); nothing was read or written.
    pub fn is_fenced(&self) -> bool {
        matches!(self, Error::Storage(err) if err.is_fenced())
    }

    /// Whether the store serves another shard than the request belongs to
    /// ([`Error::WrongShard`]).
    pub fn is_wrong_shard(&self) -> bool {
        self.kind() == "wrong_shard"
    }

    /// Whether this node does not serve the account's shard
    /// ([`Error::ShardNotServed`]).
    pub fn is_shard_not_served(&self) -> bool {
        self.kind() == "shard_not_served"
    }

    /// Whether a legal hold stopped the operation.
    pub fn is_on_hold(&self) -> bool {
        self.kind() == "on_hold"
    }

    /// Whether the subject is restricted (its records can be exported or
    /// erased, not read or written).
    pub fn is_restricted(&self) -> bool {
        self.kind() == "restricted"
    }

    /// Whether the error reports damaged or tampered stored data.
    pub fn is_integrity_failure(&self) -> bool {
        match self {
            Error::Corrupt { .. } | Error::Tampered { .. } | Error::StoreRolledBack { .. } => true,
            Error::Storage(err) => err.kind == StorageErrorKind::Tampered,
            Error::Remote(remote) => {
                matches!(
                    remote.kind.as_str(),
                    "corrupt" | "tampered" | "store_rolled_back"
                )
            }
            _ => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownClass { class } => write!(
                f,
                "unknown retention class `{class}`: it is not in the store's policy; add it to the policy file or use a defined class"
            ),
            Error::UnknownSubject { subject } => write!(
                f,
                "unknown subject {subject}: register it first (register_account or register_end_user)"
            ),
            Error::SubjectConflict { subject, detail } => write!(f, "subject {subject}: {detail}"),
            Error::Erased {
                subject,
                class: Some(class),
                erased_at,
            } => write!(
                f,
                "class `{class}` of subject {subject} was erased at {erased_at}; its data is gone. Unless its retention deadline erased it, re-register the class (`re_register_class`) to store new data in it"
            ),
            Error::Erased {
                subject,
                class: None,
                erased_at,
            } => write!(
                f,
                "subject {subject} was erased at {erased_at}; its data is gone. Re-register the subject to store new data"
            ),
            Error::Restricted { subject } => write!(
                f,
                "subject {subject} is restricted: its data can be exported but not read or written; lift the restriction first"
            ),
            Error::Closed { subject, closed_at } => write!(
                f,
                "subject {subject} belongs to an account closed at {closed_at}: it can no longer be read, written or given end users; export it for what is still retained"
            ),
            Error::OnHold { subject, class } => {
                write!(f, "subject {subject}")?;
                if let Some(class) = class {
                    write!(f, ", class `{class}`,")?;
                }
                write!(
                    f,
                    " is under a legal hold (its reason: `Db::holds`, CLI `shredkv holds`); release the hold before erasing"
                )
            }
            Error::PolicyViolation { class, detail } => {
                write!(
                    f,
                    "the retention policy of class `{class}` forbids this: {detail}"
                )
            }
            Error::InvalidArgument { what, detail } => write!(f, "invalid {what}: {detail}"),
            Error::Corrupt { location, source } => write!(
                f,
                "corrupt data at {location}: {source}; run `shredkv verify` and restore from a backup if it persists"
            ),
            Error::Tampered { location } => write!(
                f,
                "tampered data at {location}: the value failed authentication (altered, or moved from another record); it was not returned"
            ),
            Error::KeyProvider(err) => write!(f, "{err}"),
            Error::StoreKeysDestroyed { path, epoch } => write!(
                f,
                "store {} cannot be decrypted: epoch {epoch}, which wrapped its keys, has been destroyed. A store or backup older than its purge window is unreadable by design",
                path.display()
            ),
            Error::Storage(err) => write!(f, "{err}"),
            Error::Policy(err) => write!(f, "{err}"),
            Error::PolicyChanged { path } => write!(
                f,
                "store {} was created with a different retention policy; apply the new policy explicitly to change it (Config::apply_policy_change(true); CLI `shredkv policy apply FILE`), which is audited and erases the scopes of classes it removes",
                path.display()
            ),
            Error::UnsupportedFormat { path, found } => write!(
                f,
                "store {} has format version {found}, which this build cannot read; upgrade shredkv",
                path.display()
            ),
            Error::StoreDataMissing { path, key_file } => write!(
                f,
                "store {} has a key file ({}) but no data: its backend files are missing, empty or replaced; restore them from a backup (shredkv will not start a new store over existing keys)",
                path.display(),
                key_file.display()
            ),
            Error::KeyFileMissing { path, key_file } => write!(
                f,
                "key file {} is missing: the store at {} cannot be decrypted without it; point Config::key_file (CLI --key-file, SHREDKV_KEY_FILE) at its real location. A store whose key file is lost is unreadable by design",
                key_file.display(),
                path.display()
            ),
            Error::KeyFileInStore { path, key_file } => write!(
                f,
                "the key file {} is inside store {}: every copy of the store (a snapshot, `cp -a`, a backup of the volume) would carry the keys that decrypt it; keep the key file outside the store directory, on a volume not backed up with it (Config::key_file, CLI --key-file; move an existing one there first), or allow it for tests and demos (Config::allow_key_file_in_store)",
                key_file.display(),
                path.display()
            ),
            Error::KeysDoNotMatch {
                path,
                provider,
                detail,
            } => write!(
                f,
                "store {} cannot be opened with {provider}: {detail}; use the store's own key file",
                path.display()
            ),
            Error::RestoreInterrupted { path } => write!(
                f,
                "store {} is an interrupted restore: the erasure log was not replayed, so it could serve erased data; delete it and run the restore again",
                path.display()
            ),
            Error::StoreRolledBack {
                path,
                store,
                anchor,
                detail,
            } => write!(
                f,
                "the store at {} is behind the anchor its key provider keeps ({detail}): its audit \
                 chain ends at generation {} entry {}, the anchor is at {anchor}. Its files were \
                 rolled back or damaged, and serving it could bring back what was erased since; \
                 put the latest files back, or restore the latest backup (Db::restore, \
                 `shredkv restore`), which replays the erasures made since",
                path.display(),
                store.0,
                store.1
            ),
            Error::IsBackup { path, taken_at } => write!(
                f,
                "{} is a backup taken at {taken_at}, not a store: opening it would serve data erased since then. Restore it into a new directory with Db::restore (`shredkv --store LIVE_STORE restore {} --into NEW_DIR`), which replays the erasure log first",
                path.display(),
                path.display()
            ),
            Error::WrongShard {
                path,
                subject: Some(subject),
                store,
                asked,
            } => write!(
                f,
                "account {subject} belongs to shard {} of {}, and the store at {} is shard {} of {}: nothing was written. Register it through the store of its shard (Shards::for_account)",
                asked.0,
                asked.1,
                path.display(),
                store.0,
                store.1
            ),
            Error::WrongShard {
                path,
                subject: None,
                store,
                asked,
            } => write!(
                f,
                "the store at {} is shard {} of {}, and was opened as shard {} of {}: a node with another shard count or another shard's configuration would route accounts away from their stores. Open it as shard {} of {} (changing the shard count is not supported)",
                path.display(),
                store.0,
                store.1,
                asked.0,
                asked.1,
                store.0,
                store.1
            ),
            Error::ShardNotServed { shard, shards } => write!(
                f,
                "the account belongs to shard {shard} of {shards}, which this node does not serve: send the request to the node that serves it, or serve the shard here (Shards::serve, which waits for its owner to let go)"
            ),
            Error::RestoreLosesRecords { backup, lost } => {
                let records: u64 = lost.iter().map(|l| l.records).sum();
                write!(
                    f,
                    "restoring {} would not bring back {records} of its records in {} subject classes; nothing was written. ",
                    backup.display(),
                    lost.len()
                )?;
                for (i, scope) in lost.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{scope}")?;
                }
                f.write_str(". Restore a newer backup, or accept the loss (RestoreOptions::accept_lost_records, `shredkv restore --accept-loss`)")
            }
            Error::Io {
                action,
                path,
                source,
            } => {
                write!(f, "failed to {action} at {}: {source}", path.display())
            }
            Error::Admin { detail } => write!(f, "admin endpoint: {detail}"),
            Error::Remote(remote) => write!(f, "{remote}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Corrupt { source, .. } => Some(source),
            Error::KeyProvider(err) => Some(err),
            Error::Storage(err) => Some(err),
            Error::Policy(err) => Some(err),
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<StorageError> for Error {
    fn from(err: StorageError) -> Self {
        Error::Storage(err)
    }
}

impl From<ProviderError> for Error {
    fn from(err: ProviderError) -> Self {
        Error::KeyProvider(err)
    }
}

impl From<PolicyError> for Error {
    fn from(err: PolicyError) -> Self {
        Error::Policy(err)
    }
}

impl StorageError {
    /// Which backend failed.
    pub fn backend(&self) -> crate::Backend {
        self.backend
    }

    /// Whether the backend's files are damaged, or hold a control value
    /// that fails its MAC (tampered).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self.kind,
            StorageErrorKind::Corrupt | StorageErrorKind::Tampered
        )
    }

    /// Whether another process holds the store.
    pub fn is_locked(&self) -> bool {
        self.kind == StorageErrorKind::Locked
    }

    /// Whether the write failed because the store is full: a local disk
    /// with no space left, or an etcd cluster past its quota. Nothing of
    /// the failed write was applied; reads go on working. Free space (or
    /// compact, defragment and disarm the cluster's alarm) and retry.
    pub fn is_full(&self) -> bool {
        self.kind == StorageErrorKind::Full
    }

    /// Whether the store directory was made by another backend than the
    /// one asked for (nothing was opened or created).
    pub fn is_wrong_backend(&self) -> bool {
        self.kind == StorageErrorKind::WrongBackend
    }

    /// Whether this node no longer owns the etcd store it was serving (it
    /// was paused or cut off past its lease, or another node took the store
    /// over): nothing was read or written. Close the store and open it
    /// again.
    pub fn is_fenced(&self) -> bool {
        self.kind == StorageErrorKind::Fenced
    }
}

/// The result type of shredkv.
pub type Result<T, E = Error> = std::result::Result<T, E>;
