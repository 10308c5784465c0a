//! The key vault: every data key, wrapped under a node of the key tree
//! ([`tree`]), or, in entries written before the tree, under an epoch key.
//!
//! Tree `vault` (key id, 26 bytes, see [`KeyId`]) and tree `vault_days`
//! (expiry-bucket keys in day order; [`layout`] says which key goes where)
//! → vault entry v2:
//!
//! ```text
//!  0  1  version (2)
//!  1  1  state: 1 active, 3 destroyed
//!  2  8  created at, unix seconds i64
//! 10  9  destroyed at (presence byte + i64)
//! 19  1  wrap: 0 none (destroyed), 1 under an epoch, 2 under a tree node
//! 20  .  the wrapped key: 69 bytes under an epoch (shredkv-crypto's
//!        `WrappedKey`), 74 under a node (`NodeWrapped`)
//!  .  4  CRC32
//! ```
//!
//! Vault entry v1 (stores of format 3 and before) is the same with version
//! 1 and byte 19 a presence byte (1: 69 bytes under an epoch follow); it is
//! read as such, and the first rotation moves its key under the tree.
//!
//! A vault entry is written only when its key is created, re-wrapped (under
//! a new epoch, or under its node's next generation), or destroyed; never
//! by the write path. Seal accounting lives
//! apart, in tree `seals`: key id → v1 ‖ seals reserved u64 ‖ retired u8 ‖
//! CRC32. The reservation is an upper bound of the seals made under the key
//! (persisted ahead of use, so a crash can only over-count); a retired key
//! still decrypts but seals no more.
//!
//! Buckets: 0 is the scope key (it blinds record keys, never seals values),
//! 1 the open bucket (records without expiry), `2 + day` the bucket of
//! records expiring on that UTC day (days since 1970-01-01).
//!
//! A destroyed key keeps a tombstone (state, times, no key material) so
//! versions are never reused and certificates can count what was destroyed.
//! A tombstone of a key under the tree owes its bottom node a re-key
//! (`Due::RekeyNode`, in the same batch): see [`tree`].

pub(crate) mod cache;
pub(crate) mod gate;
pub(crate) mod layout;
pub(crate) mod memory_provider;
pub(crate) mod tree;

use std::collections::BTreeSet;
use std::ops::{Bound, ControlFlow};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use shredkv_crypto::{
    DataKey, EpochId, FormatError, KeyId, KeyProvider, Label, NodeWrapped, ProviderError,
    SealBudget, SealCounter, SubjectTag, TagKey, ValueCipher, WrapContext, WrappedKey,
};

use crate::clock::StoreClock;
use crate::codec::{Reader, Writer};
use crate::error::{Error, Location, Result};
use crate::retention::deadlines::{self, Due};
use crate::storage::pauses::{PausePoint, Pauses};
use crate::storage::{Durability, Order, Storage, Tree, WriteBatch};
use cache::{BucketId, KeyCache};
use layout::Slot;
use tree::KeyTree;

/// The version vault entries are written in.
const VERSION: u8 = 2;
/// Vault entries of format-3 stores (every key under an epoch).
const VERSION_EPOCH_ONLY: u8 = 1;
/// The version of seal records.
const SEALS_VERSION: u8 = 1;
const WHAT: &str = "vault entry";
const SEALS_WHAT: &str = "seal record";

/// The bucket of a scope's blinding key.
pub(crate) const SCOPE_BUCKET: u32 = 0;
/// The bucket of records without an expiry.
pub(crate) const OPEN_BUCKET: u32 = 1;
const FIRST_DAY_BUCKET: u32 = 2;
/// Expiry buckets shorter than a day (for purge windows of a day or two):
/// this bit set, the width in hours in the next four bits, the bucket's
/// first hour since the Unix epoch in the low 27 (to past the year 9999).
const SHORT_BUCKET: u32 = 1 << 31;
const SHORT_WIDTH_SHIFT: u32 = 27;
const SHORT_HOUR_MASK: u32 = (1 << SHORT_WIDTH_SHIFT) - 1;
const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;
/// The last second an expiry can name (the end of the year 9999).
const LAST_EXPIRY: i64 = 253_402_300_799;
/// Seals reserved (and persisted) at a time per key: a crash loses at most
/// this many from the count, always by over-counting.
const SEAL_RESERVATION: u64 = 1 << 16;
/// Approximate memory of one cached key (AES-256 schedule, GHASH state, Arcs).
pub(crate) const CACHED_KEY_BYTES: usize = 1024;

/// The bucket of a record with this expiry, for buckets `width` seconds
/// long: a UTC day (`width` of a day or more), or a whole number of hours
/// that divides a day (shorter windows need shorter buckets: see the
/// retention timeline). Buckets never straddle a UTC day.
pub(crate) fn bucket_for_expiry(expiry: Option<i64>, width: i64) -> u32 {
    let Some(t) = expiry else {
        return OPEN_BUCKET;
    };
    let t = t.clamp(0, LAST_EXPIRY);
    let hours = width / HOUR;
    if width >= DAY || hours < 1 || 24 % hours != 0 {
        debug_assert!(width >= DAY, "bucket width {width} s does not divide a day");
        // In range: LAST_EXPIRY / DAY is below 2^22.
        return FIRST_DAY_BUCKET + u32::try_from(t / DAY).unwrap_or(0);
    }
    let first_hour = t / HOUR / hours * hours;
    // In range: LAST_EXPIRY / HOUR is below 2^27, and hours below 16.
    SHORT_BUCKET
        | (u32::try_from(hours).unwrap_or(1) << SHORT_WIDTH_SHIFT)
        | (u32::try_from(first_hour).unwrap_or(0) & SHORT_HOUR_MASK)
}

/// The expiries an expiry bucket holds, `[start, end)` in seconds; `None`
/// for the scope and open buckets.
pub(crate) fn bucket_span(bucket: u32) -> Option<(i64, i64)> {
    if bucket & SHORT_BUCKET != 0 {
        let hours = i64::from((bucket & !SHORT_BUCKET) >> SHORT_WIDTH_SHIFT).max(1);
        let start = i64::from(bucket & SHORT_HOUR_MASK) * HOUR;
        return Some((start, start + hours * HOUR));
    }
    let day = i64::from(bucket.checked_sub(FIRST_DAY_BUCKET)?);
    Some((day * DAY, (day + 1) * DAY))
}

/// When an expiry bucket's key is due for destruction: the end of its span.
pub(crate) fn bucket_deadline(bucket: u32) -> Option<i64> {
    bucket_span(bucket).map(|(_, end)| end)
}

/// Whether a record with this expiry belongs in `bucket` (as
/// [`bucket_for_expiry`] placed it, whatever width was in force then).
pub(crate) fn bucket_holds(bucket: u32, expiry: i64) -> bool {
    bucket_span(bucket)
        .is_some_and(|(start, end)| (start..end).contains(&expiry.clamp(0, LAST_EXPIRY)))
}

/// A key's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyState {
    Active,
    Destroyed,
}

/// What a live data key is wrapped under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Wrapped {
    /// An epoch key of the provider (vault entry v1, and entries not yet
    /// moved under the tree).
    Epoch(WrappedKey),
    /// A node of the key tree, at one of its generations.
    Node(NodeWrapped),
}

impl Wrapped {
    /// The epoch it is wrapped under, if it is wrapped under one.
    pub(crate) fn epoch(&self) -> Option<EpochId> {
        match self {
            Self::Epoch(wrapped) => Some(wrapped.epoch()),
            Self::Node(_) => None,
        }
    }
}

/// A decoded vault entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VaultEntry {
    pub(crate) state: KeyState,
    pub(crate) created_at: i64,
    pub(crate) destroyed_at: Option<i64>,
    pub(crate) wrapped: Option<Wrapped>,
}

impl VaultEntry {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(VERSION, 100);
        w.u8(match self.state {
            KeyState::Active => 1,
            KeyState::Destroyed => 3,
        })
        .i64(self.created_at)
        .opt_i64(self.destroyed_at);
        match &self.wrapped {
            Some(Wrapped::Epoch(wrapped)) => w.u8(1).bytes(wrapped.as_bytes()),
            Some(Wrapped::Node(wrapped)) => w.u8(2).bytes(wrapped.as_bytes()),
            None => w.u8(0),
        };
        w.finish()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let version = match bytes.first() {
            Some(&VERSION_EPOCH_ONLY) => VERSION_EPOCH_ONLY,
            _ => VERSION,
        };
        let mut r = Reader::checked(WHAT, bytes, version)?;
        let state = match r.u8()? {
            1 => KeyState::Active,
            3 => KeyState::Destroyed,
            _ => return Err(r.invalid("unknown key state")),
        };
        let created_at = r.i64()?;
        let destroyed_at = r.opt_i64()?;
        let wrapped = match r.u8()? {
            0 => None,
            1 => Some(Wrapped::Epoch(WrappedKey::from_bytes(
                &r.array::<{ WrappedKey::LEN }>()?,
            )?)),
            2 if version == VERSION => Some(Wrapped::Node(NodeWrapped::from_bytes(
                &r.array::<{ NodeWrapped::LEN }>()?,
            )?)),
            _ => return Err(r.invalid("unknown kind of wrap")),
        };
        r.end()?;
        match (state, &wrapped) {
            (KeyState::Destroyed, Some(_)) => {
                Err(invalid("a destroyed key still holds key material"))
            }
            (KeyState::Active, None) => Err(invalid("a live key has no key material")),
            _ => Ok(Self {
                state,
                created_at,
                destroyed_at,
                wrapped,
            }),
        }
    }

    /// The tombstone that replaces this entry when its key is destroyed.
    pub(crate) fn tombstone(&self, now: i64) -> Self {
        Self {
            state: KeyState::Destroyed,
            destroyed_at: Some(now),
            wrapped: None,
            created_at: self.created_at,
        }
    }
}

/// The decoded vault entry of `id` in `storage` (a store's, or a backup's),
/// wherever [`layout`] keeps it.
pub(crate) fn read_entry_in(storage: &dyn Storage, id: &KeyId) -> Result<Option<VaultEntry>> {
    match layout::locate(storage, id)? {
        None => Ok(None),
        Some(slot) => VaultEntry::decode(&slot.value)
            .map(Some)
            .map_err(|source| Error::Corrupt {
                location: slot_location(id, slot.tree, &slot.key),
                source,
            }),
    }
}

fn invalid(detail: &'static str) -> FormatError {
    FormatError::InvalidField { what: WHAT, detail }
}

/// Adds to `batch` the tombstone of the key `id` whose vault entry is
/// `stored`, where it was found; false if there is nothing to destroy
/// (never held, or destroyed). A damaged entry is destroyed all the same:
/// erasure must not depend on being able to read what it erases.
///
/// A key that was under the key tree (or may have been: a damaged entry)
/// leaves a debt on its bottom node in the same batch, due at once: its
/// copies open through the node's current generation until the node is
/// re-keyed ([`tree`]). With `forest_debts` (a day's expiry), a key under a
/// day forest leaves instead one debt on its whole forest per batch
/// (`Due::RetireForest`), the forests owed so far noted there: the day's
/// keys die together, and the forest is removed whole once none lives.
fn tombstone_into(
    id: &KeyId,
    stored: Option<Slot>,
    now: i64,
    batch: &mut WriteBatch,
    forest_debts: Option<&mut BTreeSet<u32>>,
) -> bool {
    let Some(slot) = stored else {
        return false;
    };
    let (tombstone, under_tree, day_forest) = match VaultEntry::decode(&slot.value) {
        Ok(entry) if entry.state == KeyState::Destroyed => return false,
        Ok(entry) => (
            entry.tombstone(now),
            !matches!(entry.wrapped, Some(Wrapped::Epoch(_))),
            match &entry.wrapped {
                Some(Wrapped::Node(wrapped)) if wrapped.node().forest != tree::SUBJECTS_FOREST => {
                    Some(wrapped.node().forest)
                }
                _ => None,
            },
        ),
        Err(_) => (
            VaultEntry {
                state: KeyState::Destroyed,
                created_at: 0,
                destroyed_at: Some(now),
                wrapped: None,
            },
            true,
            None,
        ),
    };
    // The debt goes first: a caller that splits a batch of tombstones
    // (a backend's op limit) may land it in an earlier batch than its
    // tombstone, never in a later one. A debt without its tombstone costs
    // one re-key too many; a tombstone without its debt would leave the
    // key's copies opening through its node for as long as the tree lives.
    match (forest_debts, day_forest) {
        (Some(owed), Some(forest)) => {
            // One debt per forest and batch; the rest of its keys share it.
            let first_of_its_forest = owed.insert(forest);
            if first_of_its_forest {
                batch.put(
                    Tree::Deadlines,
                    deadlines::key(now, &Due::RetireForest(forest)),
                    deadlines::value(now),
                );
            }
        }
        _ if under_tree => batch.put(
            Tree::Deadlines,
            deadlines::key(now, &Due::RekeyNode(*id)),
            deadlines::value(now),
        ),
        _ => {}
    }
    batch.put(slot.tree, slot.key, tombstone.encode());
    true
}

/// How many of `ops` are vault entries written (tombstones, in a batch
/// [`Vault::destroy_prefix`] filled), not the node debts beside them.
pub(crate) fn tombstones_in(ops: &[crate::storage::Op]) -> usize {
    ops.iter()
        .filter(|op| {
            matches!(
                op,
                crate::storage::Op::Put {
                    tree: Tree::Vault | Tree::VaultDays,
                    ..
                }
            )
        })
        .count()
}

/// Seal accounting of one data key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct SealRecord {
    pub(crate) reserved: u64,
    pub(crate) retired: bool,
}

impl SealRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(SEALS_VERSION, 10);
        w.u64(self.reserved).u8(u8::from(self.retired));
        w.finish()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::checked(SEALS_WHAT, bytes, SEALS_VERSION)?;
        let reserved = r.u64()?;
        let retired = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(r.invalid("retired flag is neither 0 nor 1")),
        };
        r.end()?;
        Ok(Self { reserved, retired })
    }
}

/// Unwrapped key material, ready to use.
#[allow(
    clippy::large_enum_variant,
    reason = "lives behind an Arc in a byte-bounded cache; boxing the cipher would add a pointer chase to every seal and open"
)]
pub(crate) enum Material {
    /// A data key: seals and opens values.
    Data {
        cipher: ValueCipher,
        seals: SealCounter,
    },
    /// A scope key: blinds record keys.
    Scope { blind: TagKey },
}

/// A seal reservation written into a batch, to be acknowledged once the
/// batch lands ([`Vault::reservation_landed`]).
#[derive(Debug)]
pub(crate) struct SealReservation {
    key: Arc<CachedKey>,
    reserved: u64,
}

/// A key in the cache.
pub(crate) struct CachedKey {
    pub(crate) id: KeyId,
    pub(crate) material: Material,
    reserved: AtomicU64,
    retired: AtomicBool,
}

impl std::fmt::Debug for CachedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl CachedKey {
    fn exhausted(&self, retire_after: u64) -> bool {
        match &self.material {
            Material::Data { seals, .. } => {
                self.retired.load(Ordering::Relaxed)
                    || seals.exhausted()
                    || seals.used() >= retire_after
            }
            Material::Scope { .. } => false,
        }
    }
}

/// What the vault holds for a key id.
pub(crate) enum KeyLookup {
    /// Usable.
    Live(Arc<CachedKey>),
    /// Destroyed (or its epoch is): whatever it sealed is erased.
    Destroyed,
    /// Never held: a reference to it is forged or damaged.
    Missing,
}

/// The vault: loads, creates, counts, re-wraps and destroys data keys.
pub(crate) struct Vault {
    storage: Arc<dyn Storage>,
    provider: Arc<dyn KeyProvider>,
    cache: KeyCache<CachedKey>,
    /// One key creator at a time. Held across storage writes and cache
    /// inserts, so it is one of the protocol's primitives (loom's under the
    /// `loom` feature, like the gate's and the cache's).
    create_lock: crate::sync::Mutex<()>,
    epoch: RwLock<EpochId>,
    retire_after: u64,
    /// Stamped into each key creation's batch.
    clock: Arc<StoreClock>,
    /// The node keys new data keys are wrapped under.
    tree: KeyTree,
    /// The pause points of a fault-injected store (tests only).
    pauses: std::sync::OnceLock<Arc<Pauses>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("epoch", &self.current_epoch())
            .field("cached_keys", &self.cache.len())
            .finish_non_exhaustive()
    }
}

/// Where the entry of `id` is written ([`layout::home`]).
pub(crate) fn vault_location(id: &KeyId) -> Box<Location> {
    let (tree, key) = layout::home(id);
    slot_location(id, tree, &key)
}

/// The entry of `id` as found under `key` in `tree`.
fn slot_location(id: &KeyId, tree: Tree, key: &[u8]) -> Box<Location> {
    Box::new(Location {
        tree: tree.name(),
        subject: Some(id.subject),
        class: None,
        key_hex: shredkv_crypto::hex::encode(key),
    })
}

impl Vault {
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        provider: Arc<dyn KeyProvider>,
        epoch: EpochId,
        cache_bytes: usize,
        retire_after: u64,
        clock: Arc<StoreClock>,
    ) -> Self {
        Self {
            tree: KeyTree::new(Arc::clone(&storage), Arc::clone(&provider)),
            storage,
            clock,
            provider,
            cache: KeyCache::new(cache_bytes),
            create_lock: crate::sync::Mutex::new(()),
            epoch: RwLock::new(epoch),
            retire_after: retire_after.clamp(1, shredkv_crypto::RETIRE_AFTER_SEALS),
            pauses: std::sync::OnceLock::new(),
        }
    }

    /// Stops at the pause points of a fault-injected store from now on.
    pub(crate) fn attach_pauses(&self, pauses: Arc<Pauses>) {
        let _ = self.pauses.set(pauses);
    }

    /// Stops here if a test armed `point` (a fault-injected store only).
    pub(crate) fn pause_point(&self, point: PausePoint) {
        if let Some(pauses) = self.pauses.get() {
            pauses.reached(point);
        }
    }

    /// The epoch new keys are wrapped under.
    pub(crate) fn current_epoch(&self) -> EpochId {
        *self.epoch.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Switches the epoch new keys are wrapped under.
    pub(crate) fn set_current_epoch(&self, epoch: EpochId) {
        *self.epoch.write().unwrap_or_else(PoisonError::into_inner) = epoch;
    }

    pub(crate) fn provider(&self) -> &Arc<dyn KeyProvider> {
        &self.provider
    }

    pub(crate) fn read_entry(&self, id: &KeyId) -> Result<Option<VaultEntry>> {
        read_entry_in(self.storage.as_ref(), id)
    }

    /// [`Vault::read_entry`] for each of `ids`, in two reads at most; an
    /// entry that does not decode is `Err(())` (verify reports it).
    pub(crate) fn read_entries(
        &self,
        ids: &[KeyId],
    ) -> Result<Vec<std::result::Result<Option<VaultEntry>, ()>>> {
        Ok(layout::locate_many(self.storage.as_ref(), ids)?
            .into_iter()
            .map(|slot| match slot {
                None => Ok(None),
                Some(slot) => VaultEntry::decode(&slot.value).map(Some).map_err(|_| ()),
            })
            .collect())
    }

    fn read_seals(&self, id: &KeyId) -> Result<SealRecord> {
        match self.storage.get(Tree::Seals, &id.to_bytes())? {
            None => Ok(SealRecord::default()),
            Some(bytes) => SealRecord::decode(&bytes).map_err(|source| Error::Corrupt {
                location: slot_location(id, Tree::Seals, &id.to_bytes()),
                source,
            }),
        }
    }

    /// Unwraps a live entry's key. `None` if its epoch (or, under the
    /// tree, the root's) was destroyed.
    pub(crate) fn unwrap_key(&self, id: &KeyId, entry: &VaultEntry) -> Result<Option<DataKey>> {
        match self.unwrap_key_as_read(id, entry) {
            // A reader that holds no gate lock (verify, a backup) may have
            // read the entry just before its node was re-keyed: the entry
            // as it is now decides.
            Err(Error::Tampered { .. }) if matches!(&entry.wrapped, Some(Wrapped::Node(w)) if self.rewrapped_since(id, w)?) => {
                match self.read_entry(id)? {
                    Some(now) if now.state == KeyState::Active => self.unwrap_key_as_read(id, &now),
                    _ => Ok(None),
                }
            }
            other => other,
        }
    }

    /// [`Vault::unwrap_key`] of the entry as it was read.
    fn unwrap_key_as_read(&self, id: &KeyId, entry: &VaultEntry) -> Result<Option<DataKey>> {
        match &entry.wrapped {
            None => Ok(None),
            Some(Wrapped::Epoch(wrapped)) => {
                match self.provider.unwrap(&WrapContext::DataKey(*id), wrapped) {
                    Ok(key) => Ok(Some(key)),
                    // The epoch that wrapped it is gone: so is the key, by design.
                    Err(ProviderError::EpochDestroyed { .. }) => Ok(None),
                    Err(ProviderError::Authentication) => Err(Error::Tampered {
                        location: vault_location(id),
                    }),
                    Err(other) => Err(other.into()),
                }
            }
            Some(Wrapped::Node(wrapped)) => self.tree.unwrap_data(id, wrapped),
        }
    }

    /// Whether the stored entry of `id` no longer holds `wrapped`.
    fn rewrapped_since(&self, id: &KeyId, wrapped: &NodeWrapped) -> Result<bool> {
        Ok(match self.read_entry(id)? {
            Some(VaultEntry {
                wrapped: Some(Wrapped::Node(now)),
                ..
            }) => now != *wrapped,
            _ => true,
        })
    }

    /// Makes a cipher of `key`. `used` is where its seal count starts: the
    /// persisted reservation for a loaded key (it may have been used up to
    /// there before a crash), zero for a new one.
    fn ready(&self, id: KeyId, key: &DataKey, used: u64, seals: SealRecord) -> Arc<CachedKey> {
        let material = if id.bucket == SCOPE_BUCKET {
            Material::Scope {
                blind: TagKey::derive(key.expose_secret(), Label::RecordKeyBlinding),
            }
        } else {
            Material::Data {
                cipher: ValueCipher::new(key),
                seals: SealCounter::with_retire_at(used, self.retire_after),
            }
        };
        Arc::new(CachedKey {
            id,
            material,
            reserved: AtomicU64::new(seals.reserved),
            retired: AtomicBool::new(seals.retired),
        })
    }

    fn unwrap_entry(&self, id: KeyId, entry: &VaultEntry) -> Result<Option<Arc<CachedKey>>> {
        let Some(key) = self.unwrap_key(&id, entry)? else {
            return Ok(None);
        };
        let seals = if id.bucket == SCOPE_BUCKET {
            SealRecord::default()
        } else {
            self.read_seals(&id)?
        };
        Ok(Some(self.ready(id, &key, seals.reserved, seals)))
    }

    /// The key `id`, telling a destroyed key (its data is erased) from one
    /// the vault never held (the reference is forged or damaged).
    pub(crate) fn lookup(&self, id: &KeyId) -> Result<KeyLookup> {
        if let Some(key) = self.cache.get(id) {
            return Ok(KeyLookup::Live(key));
        }
        let Some(entry) = self.read_entry(id)? else {
            return Ok(KeyLookup::Missing);
        };
        if entry.state == KeyState::Destroyed {
            return Ok(KeyLookup::Destroyed);
        }
        match self.unwrap_entry(*id, &entry)? {
            Some(key) => {
                self.cache
                    .insert(*id, Arc::clone(&key), CACHED_KEY_BYTES, false);
                Ok(KeyLookup::Live(key))
            }
            None => Ok(KeyLookup::Destroyed),
        }
    }

    /// The key `id`, for reading. `None` if it never existed or was destroyed.
    pub(crate) fn load(&self, id: &KeyId) -> Result<Option<Arc<CachedKey>>> {
        if let Some(key) = self.cache.get(id) {
            return Ok(Some(key));
        }
        let Some(entry) = self.read_entry(id)? else {
            return Ok(None);
        };
        if entry.state == KeyState::Destroyed {
            return Ok(None);
        }
        let key = self.unwrap_entry(*id, &entry)?;
        if let Some(key) = &key {
            self.cache
                .insert(*id, Arc::clone(key), CACHED_KEY_BYTES, false);
        }
        Ok(key)
    }

    /// The newest entry of a bucket, if any. An expiry bucket's versions
    /// are in the day lane, and, for a store of format 2, older ones may be
    /// under their key id: the newest of both.
    fn newest(&self, bucket: &BucketId) -> Result<Option<(KeyId, VaultEntry)>> {
        let probe = KeyId {
            subject: bucket.subject,
            class: bucket.class,
            bucket: bucket.bucket,
            version: 0,
        };
        let mut trees = vec![(Tree::Vault, probe.to_bytes())];
        if layout::in_day_lane(&probe) {
            trees.push((Tree::VaultDays, layout::lane_key(&probe)));
        }
        let mut newest: Option<(KeyId, Vec<u8>)> = None;
        for (tree, first) in trees {
            let mut end = first;
            end[KeyId::LEN - 4..].copy_from_slice(&[0xFF; 4]);
            let mut found = None;
            self.storage.scan(
                tree,
                Bound::Included(&first),
                Bound::Included(&end),
                Order::Descending,
                &mut |k, v| {
                    found = Some((k.to_vec(), v.to_vec()));
                    ControlFlow::Break(())
                },
            )?;
            let Some((k, v)) = found else { continue };
            let id = layout::id_at(tree, &k).ok_or_else(|| Error::Corrupt {
                location: Box::new(Location {
                    tree: tree.name(),
                    subject: Some(bucket.subject),
                    class: None,
                    key_hex: shredkv_crypto::hex::encode(&k),
                }),
                source: invalid("vault key is not a key id"),
            })?;
            if newest.as_ref().is_none_or(|(n, _)| id.version > n.version) {
                newest = Some((id, v));
            }
        }
        let Some((id, v)) = newest else {
            return Ok(None);
        };
        let entry = VaultEntry::decode(&v).map_err(|source| Error::Corrupt {
            location: vault_location(&id),
            source,
        })?;
        Ok(Some((id, entry)))
    }

    /// The current key of a bucket for reading (scope keys). Never creates one.
    pub(crate) fn current_for_read(&self, bucket: BucketId) -> Result<Option<Arc<CachedKey>>> {
        if let Some((_, key)) = self.cache.current(&bucket) {
            return Ok(Some(key));
        }
        let Some((id, entry)) = self.newest(&bucket)? else {
            return Ok(None);
        };
        if entry.state == KeyState::Destroyed {
            return Ok(None);
        }
        let key = self.unwrap_entry(id, &entry)?;
        if let Some(key) = &key {
            self.cache
                .insert(id, Arc::clone(key), CACHED_KEY_BYTES, true);
        }
        Ok(key)
    }

    /// The key new values of a bucket are sealed (or record keys blinded)
    /// with, creating the bucket's next version if it has none usable.
    ///
    /// The caller holds the scope gate's read lock and has checked that the
    /// scope is not erased, so no erasure can run concurrently.
    pub(crate) fn current_for_write(&self, bucket: BucketId, now: i64) -> Result<Arc<CachedKey>> {
        if let Some((_, key)) = self.cache.current(&bucket)
            && !key.exhausted(self.retire_after)
        {
            return Ok(key);
        }
        // One creator at a time, so two writers never create the same version.
        let _creating = self.creation_lock();
        if let Some((_, key)) = self.cache.current(&bucket)
            && !key.exhausted(self.retire_after)
        {
            return Ok(key);
        }
        let newest = self.newest(&bucket)?;
        if let Some((id, entry)) = &newest
            && entry.state == KeyState::Active
            && let Some(key) = self.unwrap_entry(*id, entry)?
            && !key.exhausted(self.retire_after)
        {
            self.cache
                .insert(*id, Arc::clone(&key), CACHED_KEY_BYTES, true);
            return Ok(key);
        }
        self.create_version(bucket, newest.map(|(id, _)| id), now)
    }

    /// Creates the bucket's next key version, retiring `previous` (re-key).
    /// The caller holds the scope gate's write lock for the subject.
    pub(crate) fn create_next_version(&self, previous: KeyId, now: i64) -> Result<Arc<CachedKey>> {
        let _creating = self.creation_lock();
        let bucket = BucketId::of(&previous);
        let newest = self.newest(&bucket)?.map(|(id, _)| id);
        self.create_version(bucket, newest, now)
    }

    /// Creates a version after `newest` (the creation lock is held).
    fn create_version(
        &self,
        bucket: BucketId,
        newest: Option<KeyId>,
        now: i64,
    ) -> Result<Arc<CachedKey>> {
        let version = match newest {
            Some(id) => id
                .version
                .checked_add(1)
                .ok_or_else(|| Error::InvalidArgument {
                    what: "key version",
                    detail: "a bucket exhausted 2^32 key versions".into(),
                })?,
            None => 1,
        };
        let mut batch = WriteBatch::new();
        if let Some(previous) = newest {
            let retired = SealRecord {
                reserved: self.read_seals(&previous)?.reserved,
                retired: true,
            };
            batch.put(Tree::Seals, previous.to_bytes(), retired.encode());
            self.cache.retire(&previous);
        }
        let id = KeyId {
            subject: bucket.subject,
            class: bucket.class,
            bucket: bucket.bucket,
            version,
        };
        let key = DataKey::generate();
        let mut new_nodes = tree::NewNodes::default();
        let wrapped = self.tree.wrap_under_tree(
            &id,
            &key,
            self.current_epoch(),
            &mut batch,
            &mut new_nodes,
        )?;
        let entry = VaultEntry {
            state: KeyState::Active,
            created_at: now,
            destroyed_at: None,
            wrapped: Some(Wrapped::Node(wrapped)),
        };
        let (tree, stored_under) = layout::home(&id);
        batch.put(tree, stored_under, entry.encode());
        // Written for every data key: it is also the day lane's index by
        // subject (see `layout`).
        let seals = SealRecord {
            reserved: SEAL_RESERVATION.min(self.retire_after),
            retired: false,
        };
        if bucket.bucket != SCOPE_BUCKET {
            batch.put(Tree::Seals, id.to_bytes(), seals.encode());
        }
        if let Some(deadline) = bucket_deadline(bucket.bucket) {
            batch.put(
                Tree::Deadlines,
                deadlines::key(deadline, &Due::DestroyKey(id)),
                deadlines::value(now),
            );
        }
        // The store's time lands with the key: an erasure stamped after a
        // reopen is never earlier than the key's creation.
        let stamped = self.clock.stamp(&mut batch);
        // Applied before any value is sealed under it, so a sealed value
        // never names a key the vault does not hold.
        if let Err(err) = self.storage.apply(&batch, Durability::Buffered) {
            self.tree.failed(new_nodes);
            return Err(err.into());
        }
        self.clock.landed(stamped);
        self.tree.landed(new_nodes);
        let cached = self.ready(id, &key, 0, seals);
        self.cache
            .insert(id, Arc::clone(&cached), CACHED_KEY_BYTES, true);
        Ok(cached)
    }

    /// Counts one seal under `key`; adds to `batch` whatever must be
    /// persisted (a new seal reservation, or retirement). A new reservation
    /// is returned: the caller hands it to [`Vault::reservation_landed`]
    /// once `batch` has landed, and only then does the key stop writing
    /// reservations. Raising it before (the batch may fail) would let later
    /// seals go unreserved on disk, and a crash would then under-count.
    pub(crate) fn note_seal(
        &self,
        key: &Arc<CachedKey>,
        batch: &mut WriteBatch,
    ) -> Option<SealReservation> {
        let Material::Data { seals, .. } = &key.material else {
            return None;
        };
        let (used, budget) = seals.record();
        let retire = budget == SealBudget::Retire || used >= self.retire_after;
        let reserved = key.reserved.load(Ordering::Relaxed);
        if used < reserved && !retire {
            return None;
        }
        let new_reserved = used
            .saturating_add(SEAL_RESERVATION)
            .min(self.retire_after.max(used))
            .max(reserved);
        if retire {
            // Sealing stops at once: retiring early is always safe.
            key.retired.store(true, Ordering::Relaxed);
        }
        let record = SealRecord {
            reserved: new_reserved,
            retired: key.retired.load(Ordering::Relaxed),
        };
        batch.put(Tree::Seals, key.id.to_bytes(), record.encode());
        if retire {
            self.cache.retire(&key.id);
        }
        Some(SealReservation {
            key: Arc::clone(key),
            reserved: new_reserved,
        })
    }

    /// The batch carrying `reservation` landed: the key seals without
    /// writing another reservation until it reaches this one.
    pub(crate) fn reservation_landed(reservation: &SealReservation) {
        reservation
            .key
            .reserved
            .fetch_max(reservation.reserved, Ordering::Relaxed);
    }

    /// Adds tombstones for every live key under `prefix` (a subject tag, or
    /// tag ‖ class) to `batch`. Returns the ids. O(keys), not O(records).
    pub(crate) fn destroy_prefix(
        &self,
        prefix: &[u8],
        now: i64,
        batch: &mut WriteBatch,
    ) -> Result<Vec<KeyId>> {
        let mut destroyed = Vec::new();
        layout::scan_prefix(self.storage.as_ref(), prefix, &mut |id, slot| {
            if tombstone_into(&id, Some(slot), now, batch, None) {
                destroyed.push(id);
            }
            ControlFlow::Continue(())
        })?;
        Ok(destroyed)
    }

    /// Destroys one key: its tombstone is added to `batch`. Returns false if
    /// it was already destroyed or never existed.
    pub(crate) fn destroy_one(&self, id: &KeyId, now: i64, batch: &mut WriteBatch) -> Result<bool> {
        let stored = layout::locate(self.storage.as_ref(), id)?;
        Ok(tombstone_into(id, stored, now, batch, None))
    }

    /// [`Vault::destroy_one`] for each of a day's expired keys, reading
    /// their entries in one read (a page of due keys lies all over the
    /// vault). A key under a day forest owes its forest one debt a batch
    /// (`Due::RetireForest`), not one of its own, so the day's death costs
    /// its tombstones and the forest's removal.
    pub(crate) fn destroy_expired(
        &self,
        ids: &[KeyId],
        now: i64,
        batch: &mut WriteBatch,
    ) -> Result<Vec<bool>> {
        let stored = layout::locate_many(self.storage.as_ref(), ids)?;
        let mut owed = BTreeSet::new();
        Ok(ids
            .iter()
            .zip(stored)
            .map(|(id, stored)| tombstone_into(id, stored, now, batch, Some(&mut owed)))
            .collect())
    }

    /// Moves a live entry wrapped under an epoch (vault entry v1) under its
    /// bottom node of the key tree, adding it (and any node its path lacks)
    /// to `batch`; `made` as [`KeyTree::wrap_under_tree`] says. Returns
    /// false if the entry is destroyed, under the tree already, or its
    /// epoch is gone. The caller holds the gate's write lock for the
    /// subject and [`Vault::creation_lock`].
    pub(crate) fn move_under_tree(
        &self,
        id: &KeyId,
        epoch: EpochId,
        batch: &mut WriteBatch,
        made: &mut tree::NewNodes,
    ) -> Result<bool> {
        let Some(slot) = layout::locate(self.storage.as_ref(), id)? else {
            return Ok(false);
        };
        let entry = VaultEntry::decode(&slot.value).map_err(|source| Error::Corrupt {
            location: slot_location(id, slot.tree, &slot.key),
            source,
        })?;
        if entry.state == KeyState::Destroyed || !matches!(entry.wrapped, Some(Wrapped::Epoch(_))) {
            return Ok(false);
        }
        let Some(key) = self.unwrap_key(id, &entry)? else {
            return Ok(false);
        };
        let wrapped = self.tree.wrap_under_tree(id, &key, epoch, batch, made)?;
        let entry = VaultEntry {
            wrapped: Some(Wrapped::Node(wrapped)),
            ..entry
        };
        // An expiry-bucket entry a format-2 store left in `vault` moves to
        // the day lane with it: its day forest's re-keys and removal read
        // the lane alone.
        let (home_tree, home_key) = layout::home(id);
        if slot.tree != home_tree {
            batch.remove(slot.tree, slot.key);
        }
        batch.put(home_tree, home_key, entry.encode());
        Ok(true)
    }

    /// Held by whoever creates keys or nodes, or re-keys nodes: one at a
    /// time (see [`tree`], "Locks").
    pub(crate) fn creation_lock(&self) -> crate::sync::MutexGuard<'_, ()> {
        let Some(pauses) = self.pauses.get() else {
            return crate::sync::lock(&self.create_lock);
        };
        pauses.reached(PausePoint::CreationLock);
        Self::lock_observed(&self.create_lock, pauses)
    }

    /// The creation lock, stopping at [`PausePoint::CreationLockContended`]
    /// first if another thread holds it.
    #[cfg(not(feature = "loom"))]
    fn lock_observed<'a>(
        lock: &'a crate::sync::Mutex<()>,
        pauses: &Pauses,
    ) -> crate::sync::MutexGuard<'a, ()> {
        if pauses.is_armed(PausePoint::CreationLockContended) {
            match lock.try_lock() {
                Ok(guard) => return guard,
                Err(std::sync::TryLockError::Poisoned(poisoned)) => return poisoned.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    pauses.reached(PausePoint::CreationLockContended);
                }
            }
        }
        crate::sync::lock(lock)
    }

    #[cfg(feature = "loom")]
    fn lock_observed<'a>(
        lock: &'a crate::sync::Mutex<()>,
        _: &Pauses,
    ) -> crate::sync::MutexGuard<'a, ()> {
        crate::sync::lock(lock)
    }

    /// The key tree.
    pub(crate) fn tree(&self) -> &KeyTree {
        &self.tree
    }

    /// Forgets cached keys of a subject (after its keys were destroyed).
    pub(crate) fn evict_subject(&self, subject: &SubjectTag, class: Option<u16>) {
        self.cache.evict_subject(subject, class);
    }

    /// Forgets one cached key.
    pub(crate) fn evict(&self, id: &KeyId) {
        self.cache.remove(id);
    }

    /// Drops the cached keys of `ids` (a compaction page's), in one
    /// acquisition of the cache's lock.
    pub(crate) fn evict_many(&self, ids: &[KeyId]) {
        self.cache.remove_many(ids);
    }

    /// Number of cached keys.
    pub(crate) fn cached_keys(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trips_and_rejects_inconsistent_states() {
        let cipher = shredkv_crypto::EpochCipher::new(
            EpochId(1),
            &shredkv_crypto::EpochKey::from_bytes([1; 32]),
        );
        let wrapped = cipher.wrap(&WrapContext::StoreSecret, &DataKey::from_bytes([2; 32]));
        let live = VaultEntry {
            state: KeyState::Active,
            created_at: 5,
            destroyed_at: None,
            wrapped: Some(Wrapped::Epoch(wrapped.clone())),
        };
        // A format-3 store's entry (v1: a presence byte, then the epoch wrap)
        // reads as the same entry.
        let mut v1 = vec![VERSION_EPOCH_ONLY, 1];
        v1.extend_from_slice(&5i64.to_be_bytes());
        v1.extend_from_slice(&[0; 9]);
        v1.push(1);
        v1.extend_from_slice(wrapped.as_bytes());
        v1.extend_from_slice(&crc32fast::hash(&v1).to_be_bytes());
        assert_eq!(VaultEntry::decode(&v1).expect("v1 decodes"), live);
        // A v1 entry cannot claim a node wrap (kind 2 is v2's).
        let mut forged = v1[..19].to_vec();
        forged.push(2);
        forged.extend_from_slice(&[0; NodeWrapped::LEN]);
        forged.extend_from_slice(&crc32fast::hash(&forged).to_be_bytes());
        assert!(VaultEntry::decode(&forged).is_err());
        let node = shredkv_crypto::NodeId::of_tag(0, &SubjectTag([3; 16]), tree::BOTTOM_DEPTH);
        let under_node = VaultEntry {
            wrapped: Some(Wrapped::Node(
                shredkv_crypto::NodeCipher::new(
                    node,
                    2,
                    &shredkv_crypto::NodeKey::from_bytes([4; 32]),
                )
                .wrap_data(
                    &KeyId {
                        subject: SubjectTag([3; 16]),
                        class: 1,
                        bucket: 1,
                        version: 1,
                    },
                    &DataKey::from_bytes([2; 32]),
                ),
            )),
            ..live.clone()
        };
        assert_eq!(
            VaultEntry::decode(&under_node.encode()).expect("decode"),
            under_node
        );
        assert_eq!(VaultEntry::decode(&live.encode()).expect("decode"), live);
        let dead = live.tombstone(7);
        assert_eq!(VaultEntry::decode(&dead.encode()).expect("decode"), dead);
        assert!(dead.encode().len() < live.encode().len());
        let bad = VaultEntry {
            wrapped: None,
            ..live.clone()
        };
        assert!(VaultEntry::decode(&bad.encode()).is_err());
        let bytes = live.encode();
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x40;
            assert!(VaultEntry::decode(&flipped).is_err(), "flip at {i}");
        }
        let seals = SealRecord {
            reserved: 9,
            retired: true,
        };
        assert_eq!(SealRecord::decode(&seals.encode()).expect("decode"), seals);
    }

    #[test]
    fn buckets_follow_expiry_days() {
        assert_eq!(bucket_for_expiry(None, DAY), OPEN_BUCKET);
        assert_eq!(bucket_for_expiry(Some(0), DAY), 2);
        assert_eq!(bucket_for_expiry(Some(DAY - 1), DAY), 2);
        assert_eq!(bucket_for_expiry(Some(DAY), DAY), 3);
        assert_eq!(bucket_for_expiry(Some(-5), DAY), 2);
        assert_eq!(bucket_deadline(2), Some(DAY));
        assert_eq!(bucket_deadline(OPEN_BUCKET), None);
        assert_eq!(bucket_deadline(SCOPE_BUCKET), None);
        let t = 1_700_000_123;
        let deadline = bucket_deadline(bucket_for_expiry(Some(t), DAY)).expect("deadline");
        assert!(deadline > t && deadline - t <= DAY);
        // The last expiry a timestamp can name still has a day bucket.
        let last = bucket_for_expiry(Some(i64::MAX), DAY);
        assert!(last < SHORT_BUCKET);
        assert!(bucket_holds(last, LAST_EXPIRY));
    }

    #[test]
    fn short_buckets_split_the_day_and_never_straddle_it() {
        // 2026-12-07T10:30:00Z, in the 8-hour bucket 08:00-16:00.
        let t = 1_796_639_400;
        let day_start = t / DAY * DAY;
        for hours in [1, 2, 3, 4, 6, 8, 12] {
            let width = hours * HOUR;
            let bucket = bucket_for_expiry(Some(t), width);
            let (start, end) = bucket_span(bucket).expect("an expiry bucket");
            assert_eq!(end - start, width, "{hours} h");
            assert!(start <= t && t < end, "{hours} h");
            assert_eq!(
                (start - day_start) % width,
                0,
                "{hours} h: aligned to the UTC day"
            );
            assert!(end <= day_start + DAY, "{hours} h: within the UTC day");
            assert!(bucket_holds(bucket, t) && bucket_holds(bucket, start));
            assert!(!bucket_holds(bucket, end) && !bucket_holds(bucket, start - 1));
            assert!(layout::in_day_lane(&KeyId {
                subject: SubjectTag([0; 16]),
                class: 1,
                bucket,
                version: 1,
            }));
            // The next bucket starts where this one ends.
            assert_eq!(
                bucket_span(bucket_for_expiry(Some(end), width)).map(|s| s.0),
                Some(end)
            );
        }
        assert_eq!(
            bucket_span(bucket_for_expiry(Some(t), 8 * HOUR)),
            Some((day_start + 8 * HOUR, day_start + 16 * HOUR))
        );
        // Short and day buckets never share an id.
        assert_ne!(
            bucket_for_expiry(Some(t), 8 * HOUR),
            bucket_for_expiry(Some(t), DAY)
        );
        let last = bucket_for_expiry(Some(i64::MAX), HOUR);
        assert_eq!(bucket_deadline(last), Some(LAST_EXPIRY + 1));
    }
}
