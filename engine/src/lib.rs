//! shredkv: an embedded key-value store with per-subject cryptographic erasure.
//!
//! Every record belongs to a subject (a customer account, or an end user of
//! one) and a retention class. Each subject's records in each class are
//! encrypted under keys of their own, so erasing a subject is destroying its
//! keys: O(keys), immediate, and it reaches every copy the engine ever wrote.
//!
//! ```
//! use shredkv::{Classes, Config, Db};
//!
//! # let root = tempfile::tempdir()?;
//! # let (store_dir, key_file) = (root.path().join("store"), root.path().join("store.keys"));
//! // The key file lives outside the store directory (in production, on a
//! // volume that is not backed up with the store).
//! let db = Db::open(Config::new(&store_dir).key_file(&key_file))?;
//! db.register_account("acct-42")?;
//! db.register_end_user("user-7", "acct-42")?;
//! db.put("user-7", "message_content", b"msg-1", b"see you at noon")?;
//!
//! let receipt = db.shred("acct-42", Classes::All)?; // erases user-7 too
//! assert_eq!(receipt.erased.len(), 2);
//! assert!(db.get("user-7", "message_content", b"msg-1").unwrap_err().is_erased());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//!
//! - **`serde`** (off by default): `Serialize` and `Deserialize` for the
//!   reports a [`Db`] returns, so they can be kept and exchanged as JSON (or
//!   any serde format): [`Receipt`], [`Certificate`], [`Export`] and
//!   [`Record`], [`Stats`], [`IntegrityReport`], [`ChainReport`],
//!   [`AuditEntry`], [`Hold`], [`Scheduled`], [`SubjectInfo`],
//!   [`CompactionReport`], [`EpochReport`], [`BackupReport`],
//!   [`RestoreReport`], every type they are made of, and [`SubjectTag`].
//!   Key material never serializes. The JSON, which the `shredkv` CLI
//!   prints with `--json`:
//!   - fields are named as in Rust, except [`Location::key_hex`] (`key`) and
//!     [`Certificate::subject`] (`subject_tag`); a certificate's
//!     [`PurgeStatus`] is inlined as `purge_status` (`"complete"` or
//!     `"pending"`), with `pending` (the steps) and `purge_due_by` when
//!     pending;
//!   - subject tags and hashes are lower-case hex strings;
//!   - times are RFC 3339 strings in UTC (`"2025-01-15T09:00:00Z"`, with
//!     fractional seconds when the time has them);
//!   - record keys and values are text when they are valid UTF-8, else
//!     base64, named by `key_encoding` and `value_encoding` (`"utf-8"` or
//!     `"base64"`);
//!   - what has a name in reports is written by that name: audit events
//!     (`"hold-placed"`), erasure reasons (`"deletion request"`); other enums
//!     in lower case (`"end_user"`, `"rekeyed-after-backup"`), and chain
//!     breaks as `{"kind": "edited", "seq": 4}`;
//!   - pairs are objects: [`OverduePurge::epochs`] as `{epoch, due}`,
//!     [`ExportedSubject::classes`] as `{class, records}`, in order.
//!
//! ```
//! # #[cfg(feature = "serde")] {
//! # use shredkv::{Classes, Config, Db, Receipt};
//! # let root = tempfile::tempdir()?;
//! # let (store_dir, key_file) = (root.path().join("store"), root.path().join("store.keys"));
//! # let db = Db::open(Config::new(&store_dir).key_file(&key_file))?;
//! # db.register_account("acct-42")?;
//! # db.put("acct-42", "message_content", b"msg-1", b"see you at noon")?;
//! let receipt = db.shred("acct-42", Classes::All)?;
//! let json = serde_json::to_value(&receipt)?;
//! assert_eq!(json["subject"], db.subject_tag("acct-42").to_hex());
//! assert_eq!(json["reason"], "operator");
//! assert_eq!(serde_json::from_value::<Receipt>(json)?, receipt);
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]

#[cfg(feature = "admin")]
pub mod admin;
mod audit;
mod clock;
mod codec;
mod config;
mod db;
mod error;
mod formats;
mod holds;
mod ledger;
mod records;
mod retention;
mod shard_route;
mod shards;
mod storage;
mod subject_id;
mod subjects;
mod sync;
mod tag_hash;
mod vault;

pub use audit::{AuditEntry, AuditEvent, AuditHead, ChainBreak, ChainReport};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Config;
pub use db::{
    Applied, AsClass, BackupReport, Batch, Certificate, CertifiedErasure, Class, ClassName,
    ClassPage, ClassStats, Classes, Cursor, Db, ErasedScope, ErasureSource, Export,
    ExportedSubject, IntegrityReport, LossReason, LostRecords, MAX_AUDIT_DETAIL_LEN, MAX_PAGE,
    MAX_RECORD_KEY_LEN, MAX_VALUE_LEN, Outcome, Page, Problem, ProblemKind, PurgeStatus,
    PutOptions, Receipt, Records, RestoreOptions, RestoreReport, Retained, ScanOptions, Stats,
};
pub use error::{Error, ErrorCategory, Location, RemoteError, Result};
pub use holds::Hold;
pub use jiff;
pub use ledger::ErasureReason;
pub use records::{Record, RecordRef};
pub use retention::{
    ClassPolicy, ClockStart, DataRole, DeletionRule, KeyMode, ParseRetentionError, Policy,
    PolicyError, Retention, RetentionUnit, Scheduled,
};
pub use retention::{CompactionOutcome, CompactionReport, Compactor, EpochReport, OverduePurge};
// What a caller must name to match an error (`Error::KeyProvider`,
// `Error::Corrupt`) or to write a key provider, without a second dependency.
pub use shards::{Shards, shard_of};
pub use shredkv_crypto::{
    Anchor, DataKey, EpochId, FormatError, KeyId, KeyProvider, ProviderError, SubjectTag,
    WrapContext, WrappedKey,
};
pub use storage::{Backend, StorageError};
pub use subject_id::MAX_SUBJECT_ID_LEN;
pub use subjects::{SubjectInfo, SubjectKind, SubjectState};

/// Test and tooling hooks: the concurrency protocol's parts for the loom
/// model, the in-memory backend, fault injection through the storage seam
/// and the key provider (with pause points that force one interleaving of
/// concurrent operations), a tape of every byte written through the seam (for
/// the forensic oracle), and decoders of every persisted record format for
/// fuzzing. Not a stable API.
#[doc(hidden)]
pub mod internal {
    use std::sync::Arc;

    pub use crate::formats::{Decoded, RecordKind, Undecodable, decode_any};
    #[cfg(feature = "etcd")]
    pub use crate::storage::etcd_cluster::{
        Cluster as EtcdTestCluster, MAX_TXN_OPS as ETCD_TEST_MAX_TXN_OPS,
    };
    /// Everything an etcd cluster's history holds under a key prefix (the
    /// demo's forensic check on etcd), and a prefix's removal.
    #[cfg(feature = "etcd")]
    pub use crate::storage::etcd_history::{
        EtcdHistory, delete_prefix as delete_etcd_prefix, read as read_etcd_history,
    };
    /// How long an etcd store's owner key outlives its node's last
    /// keep-alive (fencing tests wait it out).
    #[cfg(feature = "etcd")]
    pub const ETCD_OWNER_LEASE_TTL: std::time::Duration = crate::storage::etcd_owner::LEASE_TTL;
    pub use crate::storage::faults::{
        ApplyFailure, FaultControl, FaultCounts, FaultPlan, FaultPoint, ProviderCall,
    };
    pub use crate::storage::pauses::{Pause, PausePoint};
    pub use crate::storage::tape::{Tape, TapeEntry};
    pub use crate::vault::cache::{BucketId, KeyCache};
    pub use crate::vault::gate::ScopeGate;
    pub use crate::vault::memory_provider::MemoryKeyProvider;

    /// Trees held in memory that outlive the [`crate::Db`] opened over them,
    /// so a test can "restart" an in-memory store. Clones share the trees.
    #[derive(Debug, Clone, Default)]
    pub struct MemoryStore(Arc<crate::storage::memory::MemoryStorage>);

    impl MemoryStore {
        /// Empty trees.
        pub fn new() -> Self {
            Self::default()
        }
    }

    /// Where a fault-injected store keeps its trees.
    #[derive(Debug, Clone)]
    pub enum TestStore {
        /// In memory (survives reopening, not the process).
        Memory(MemoryStore),
        /// A real backend in `config.path()`.
        Disk(crate::Backend),
        /// The store the config names: its cluster (`Config::etcd`), or
        /// the backend in `config.path()` (detected, or the default).
        Configured,
    }

    /// The storage `store` names for `config`.
    fn test_storage(
        config: &crate::Config,
        store: &TestStore,
    ) -> crate::Result<Arc<dyn crate::storage::Storage>> {
        Ok(match store {
            TestStore::Memory(memory) => Arc::clone(&memory.0) as Arc<dyn crate::storage::Storage>,
            TestStore::Disk(backend) => {
                crate::db::create_private_dir(config.path())?;
                crate::storage::open(*backend, config.path())?
            }
            TestStore::Configured => {
                crate::db::create_private_dir(config.path())?;
                match &config.remote {
                    Some(remote) => crate::storage::open_remote(remote, config.path())?,
                    None => crate::storage::open(config.backend, config.path())?,
                }
            }
        })
    }

    /// Opens a store whose backend and key provider fail as `plan` says, and
    /// as the returned [`FaultControl`] says from then on. The key provider
    /// is the configured one or the key file, wrapped.
    ///
    /// # Errors
    /// As [`crate::Db::open`], including the faults injected into the open.
    pub fn open_with_faults(
        config: crate::Config,
        store: &TestStore,
        plan: FaultPlan,
    ) -> crate::Result<(crate::Db, FaultControl)> {
        let control = FaultControl::new(plan);
        let storage = test_storage(&config, store)?;
        let db = crate::Db::open_with_faults(config, storage, &control)?;
        Ok((db, control))
    }

    /// Opens a store whose backend records every key and value written to
    /// it on `tape` (see [`Tape`]), for forensic tests of G2: what an
    /// attacker holding every byte the store ever wrote could decrypt. No
    /// faults are armed; the returned control counts what went through.
    ///
    /// # Errors
    /// As [`crate::Db::open`].
    pub fn open_with_tape(
        config: crate::Config,
        store: &TestStore,
        tape: &Tape,
    ) -> crate::Result<(crate::Db, FaultControl)> {
        let control = FaultControl::new(FaultPlan::none());
        let storage = test_storage(&config, store)?;
        let storage: Arc<dyn crate::storage::Storage> = Arc::new(
            crate::storage::tape::TapeStorage::new(storage, tape.clone()),
        );
        let db = crate::Db::open_with_faults(config, storage, &control)?;
        Ok((db, control))
    }

    /// Opens a store whose trees live in memory (the key provider is still
    /// the configured one, or a key file in `config.path()`). For fuzzing and
    /// fast tests; nothing is durable.
    ///
    /// # Errors
    /// As [`crate::Db::open`].
    pub fn open_in_memory(config: crate::Config) -> crate::Result<crate::Db> {
        crate::Db::open_in_memory(config)
    }

    /// The gate stripe `subject` hashes onto in `db`, for models that need
    /// one arrangement of locks in every run (the loom model: subject tags
    /// are keyed by the store's random secret, so a fresh store arranges
    /// them afresh, and loom needs every iteration to take the same locks).
    pub fn gate_stripe(db: &crate::Db, subject: &str) -> usize {
        db.inner.gate.stripe_of(&db.subject_tag(subject))
    }

    /// Every key id in the vault with whether it is destroyed, for forensic
    /// tests that look for surviving wrapped copies in the raw files (G2).
    ///
    /// # Errors
    /// Storage failures.
    pub fn vault_key_ids(db: &crate::Db) -> crate::Result<Vec<(shredkv_crypto::KeyId, bool)>> {
        db.vault_key_ids()
    }
}
