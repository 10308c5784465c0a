//! The audit log: append-only, chained with a MAC under a key derived from
//! the store secret, written in the same atomic batch as the change it
//! records. It holds subject tags, never ids.
//!
//! ```text
//! key:   sequence number u64 big-endian (from 1)
//! value: v2 (v1: the same layout, version 1)
//!   0   1  version (2: keyed; 1: plain, written before keyed chains)
//!   1   8  time, unix seconds i64
//!   9   1  event code
//!  10  16  subject tag (zeros: none)
//!  26   2  class number u16 (0xFFFF: none / all)
//!  28   4  detail length, then that many bytes of UTF-8 (no personal data)
//!   .  32  previous entry's hash (zeros for the first)
//!   .  32  this entry's hash
//!   .   4  CRC32
//! v2: hash = HMAC-SHA256(audit key, "shredkv/v2/audit" ‖ seq ‖ time ‖ event ‖
//!                         subject ‖ class ‖ detail length ‖ detail ‖ previous hash)
//!     audit key = HKDF-SHA256(store secret, "shredkv/v1/audit-chain")
//! v1: hash = SHA-256("shredkv/v1/audit" ‖ seq ‖ time ‖ event ‖ subject ‖ class ‖
//!                    detail length ‖ detail ‖ previous hash)
//! ```
//!
//! Editing, removing, inserting or reordering entries breaks the chain at the
//! first affected entry; [`verify_chain`] names it. A v1 chain can be
//! re-linked by whoever can write the files (SHA-256 needs no key); a v2
//! chain only by whoever holds the store secret. Stores made before keyed
//! chains keep their v1 entries and continue with v2; a v1 entry after a v2
//! one is a break (a forger without the key downgrading the chain).
//!
//! **The anchor.** After every durable commit the log advances the key
//! provider's [`Anchor`] to its last entry (sequence number and hash, under
//! the store's anchor generation, meta `anchor_generation`, which every
//! restore raises). The provider keeps it outside the store's files, so a
//! store found behind it at open (rolled back, its tail cut or rewritten)
//! is refused (db/anchor.rs). Buffered commits are anchored by the next
//! durable one: a crash may legitimately lose them.

use std::ops::{Bound, ControlFlow};

use std::sync::Arc;

use jiff::Timestamp;
use sha2::{Digest, Sha256};
use shredkv_crypto::{Anchor, FormatError, KeyProvider, SubjectTag, TagKey};

use crate::codec::{Reader, Writer};
use crate::error::{Error, Location, Result};
use crate::storage::{Durability, Order, Storage, Tree, WriteBatch};

/// Entries chained with SHA-256 alone (stores made before keyed chains).
const VERSION_PLAIN: u8 = 1;
/// Entries chained with HMAC-SHA256 under the audit key.
const VERSION_KEYED: u8 = 2;
const WHAT: &str = "audit entry";
const NO_CLASS: u16 = u16::MAX;

/// What an audit entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuditEvent {
    /// The store was created.
    StoreCreated,
    /// A subject was registered.
    SubjectRegistered,
    /// A subject's keys were destroyed (shred, deletion request, expiry).
    KeysDestroyed,
    /// A subject's processing was restricted.
    Restricted,
    /// A restriction was lifted.
    RestrictionLifted,
    /// An erased subject was registered again, with new keys.
    ReRegistered,
    /// A legal hold was placed.
    HoldPlaced,
    /// A legal hold was released.
    HoldReleased,
    /// An erasure was blocked by a legal hold.
    ErasureBlocked,
    /// A retention policy was applied to the store.
    PolicyApplied,
    /// A new epoch key was created.
    EpochCreated,
    /// An epoch key was destroyed.
    EpochDestroyed,
    /// A bucket's records were re-encrypted under a new key version.
    Rekeyed,
    /// A restored backup had the erasure ledger replayed onto it.
    RestoreReplayed,
    /// An account was closed.
    AccountClosed,
    /// A subject opted out of marketing.
    MarketingOptOut,
    /// Manually retained data was released.
    Released,
    /// Dead ciphertext of erased scopes was removed by compaction.
    CiphertextRemoved,
    /// Compaction set an item aside after a failure of its own (damaged or
    /// altered data); it is retried with backoff, the pass went on.
    ItemSetAside,
    /// An event the application recorded (`Db::audit_event`).
    Application,
    /// The store's control values were sealed under MACs (at creation, or
    /// when a store of format 1 was first opened by a sealing build).
    ControlPlaneSealed,
}

const EVENTS: [(AuditEvent, u8, &str); 21] = [
    (AuditEvent::StoreCreated, 1, "store-created"),
    (AuditEvent::SubjectRegistered, 2, "subject-registered"),
    (AuditEvent::KeysDestroyed, 3, "keys-destroyed"),
    (AuditEvent::Restricted, 4, "restricted"),
    (AuditEvent::RestrictionLifted, 5, "restriction-lifted"),
    (AuditEvent::ReRegistered, 6, "re-registered"),
    (AuditEvent::HoldPlaced, 7, "hold-placed"),
    (AuditEvent::HoldReleased, 8, "hold-released"),
    (AuditEvent::ErasureBlocked, 9, "erasure-blocked"),
    (AuditEvent::PolicyApplied, 10, "policy-applied"),
    (AuditEvent::EpochCreated, 11, "epoch-created"),
    (AuditEvent::EpochDestroyed, 12, "epoch-destroyed"),
    (AuditEvent::Rekeyed, 13, "rekeyed"),
    (AuditEvent::RestoreReplayed, 14, "restore-replayed"),
    (AuditEvent::AccountClosed, 15, "account-closed"),
    (AuditEvent::MarketingOptOut, 16, "marketing-opt-out"),
    (AuditEvent::Released, 17, "released"),
    (AuditEvent::CiphertextRemoved, 18, "ciphertext-removed"),
    (AuditEvent::ItemSetAside, 19, "item-set-aside"),
    (AuditEvent::ControlPlaneSealed, 20, "control-plane-sealed"),
    (AuditEvent::Application, 21, "application"),
];

impl AuditEvent {
    fn code(self) -> u8 {
        EVENTS
            .iter()
            .find(|(e, _, _)| *e == self)
            .map_or(0, |(_, c, _)| *c)
    }

    fn from_code(code: u8) -> Option<Self> {
        EVENTS
            .iter()
            .find(|(_, c, _)| *c == code)
            .map(|(e, _, _)| *e)
    }

    /// The event's name in reports and JSON.
    pub fn name(self) -> &'static str {
        EVENTS
            .iter()
            .find(|(e, _, _)| *e == self)
            .map_or("unknown", |(_, _, n)| n)
    }
}

/// An event serializes as its [`AuditEvent::name`] (`"hold-placed"`), the
/// name reports print.
#[cfg(feature = "serde")]
impl serde::Serialize for AuditEvent {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for AuditEvent {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let name = <String as serde::Deserialize>::deserialize(deserializer)?;
        EVENTS
            .iter()
            .find(|(_, _, n)| *n == name)
            .map(|(e, _, _)| *e)
            .ok_or_else(|| {
                serde::de::Error::invalid_value(
                    serde::de::Unexpected::Str(&name),
                    &"an audit event name, such as `hold-placed`",
                )
            })
    }
}

/// Audit hashes in serde formats: lower-case hex, as reports print them.
#[cfg(feature = "serde")]
mod hash_hex {
    use serde::de::{Error as _, Unexpected};

    pub(super) fn serialize<S: serde::Serializer>(
        hash: &[u8; 32],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&shredkv_crypto::hex::encode(hash))
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<[u8; 32], D::Error> {
        let text = <String as serde::Deserialize>::deserialize(deserializer)?;
        shredkv_crypto::hex::decode(&text)
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| {
                D::Error::invalid_value(Unexpected::Str(&text), &"a hash: 64 hex digits")
            })
    }
}

/// One audit entry to be appended: what happened, to whom, in which class.
#[derive(Debug, Clone)]
pub(crate) struct PendingEntry {
    pub(crate) event: AuditEvent,
    pub(crate) subject: Option<SubjectTag>,
    pub(crate) class: Option<u16>,
    pub(crate) detail: String,
}

impl PendingEntry {
    pub(crate) fn new(
        event: AuditEvent,
        subject: Option<SubjectTag>,
        class: Option<u16>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            event,
            subject,
            class,
            detail: detail.into(),
        }
    }
}

/// A decoded audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AuditEntry {
    /// Position in the log, from 1.
    pub seq: u64,
    /// When it was written.
    pub time: Timestamp,
    /// What happened.
    pub event: AuditEvent,
    /// The subject concerned, if any.
    pub subject: Option<SubjectTag>,
    /// The class number concerned, if any.
    pub class: Option<u16>,
    /// Free text without personal data (class names, key counts, reasons).
    pub detail: String,
    /// The previous entry's hash.
    #[cfg_attr(feature = "serde", serde(with = "hash_hex"))]
    pub prev_hash: [u8; 32],
    /// This entry's hash: a MAC under the store's audit key if
    /// [`AuditEntry::keyed`], else a plain SHA-256.
    #[cfg_attr(feature = "serde", serde(with = "hash_hex"))]
    pub hash: [u8; 32],
    /// Whether the chain is keyed at this entry (format v2): only the
    /// holder of the store secret could have computed its hash.
    pub keyed: bool,
}

/// A position in the audit chain: an entry's sequence number and hash.
/// Receipts and certificates name one, so the chain they were issued
/// against can be checked later (`shredkv audit verify` prints the head; a
/// later chain must still hold this entry with this hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AuditHead {
    /// The entry's sequence number (0: the chain was empty).
    pub seq: u64,
    /// The entry's hash (a MAC under the store's audit key for keyed entries).
    #[cfg_attr(feature = "serde", serde(with = "hash_hex"))]
    pub hash: [u8; 32],
}

impl AuditHead {
    /// The hash, lower-case hex.
    pub fn hash_hex(&self) -> String {
        shredkv_crypto::hex::encode(&self.hash)
    }
}

impl std::fmt::Display for AuditHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "entry {}, hash {}", self.seq, self.hash_hex())
    }
}

/// The chain's link for one entry: a MAC under `key` (v2), or SHA-256 with
/// no key (v1).
#[allow(clippy::too_many_arguments)] // the entry's fields, in format order
fn chain_hash(
    key: Option<&TagKey>,
    seq: u64,
    time: i64,
    code: u8,
    subject: &[u8; 16],
    class: u16,
    detail: &[u8],
    prev: &[u8; 32],
) -> [u8; 32] {
    let detail_len = u32::try_from(detail.len())
        .unwrap_or(u32::MAX)
        .to_be_bytes();
    let (seq, time, class) = (seq.to_be_bytes(), time.to_be_bytes(), class.to_be_bytes());
    match key {
        Some(key) => key.mac(&[
            b"shredkv/v2/audit",
            &seq,
            &time,
            &[code],
            subject,
            &class,
            &detail_len,
            detail,
            prev,
        ]),
        None => {
            let mut h = Sha256::new();
            h.update(b"shredkv/v1/audit");
            h.update(seq);
            h.update(time);
            h.update([code]);
            h.update(subject);
            h.update(class);
            h.update(detail_len);
            h.update(detail);
            h.update(prev);
            h.finalize().into()
        }
    }
}

/// An audit entry's fields as encoded, borrowed: a commit encodes its
/// pending entries without copying their details into [`AuditEntry`]s.
struct EntryFields<'a> {
    time: Timestamp,
    event: AuditEvent,
    subject: Option<SubjectTag>,
    class: Option<u16>,
    detail: &'a str,
    prev_hash: &'a [u8; 32],
    hash: &'a [u8; 32],
    keyed: bool,
}

impl EntryFields<'_> {
    fn encode(&self) -> Vec<u8> {
        let version = if self.keyed {
            VERSION_KEYED
        } else {
            VERSION_PLAIN
        };
        let mut w = Writer::new(version, 120 + self.detail.len());
        w.i64(self.time.as_second())
            .u8(self.event.code())
            .bytes(&self.subject.map_or([0; 16], |t| t.0))
            .u16(self.class.unwrap_or(NO_CLASS))
            .var_bytes(self.detail.as_bytes())
            .bytes(self.prev_hash)
            .bytes(self.hash);
        w.finish()
    }
}

impl AuditEntry {
    pub(crate) fn encode(&self) -> Vec<u8> {
        EntryFields {
            time: self.time,
            event: self.event,
            subject: self.subject,
            class: self.class,
            detail: &self.detail,
            prev_hash: &self.prev_hash,
            hash: &self.hash,
            keyed: self.keyed,
        }
        .encode()
    }

    pub(crate) fn decode(seq: u64, bytes: &[u8]) -> Result<Self, FormatError> {
        let keyed = bytes.first() == Some(&VERSION_KEYED);
        let version = if keyed { VERSION_KEYED } else { VERSION_PLAIN };
        let mut r = Reader::checked(WHAT, bytes, version)?;
        let time = r.i64()?;
        let event =
            AuditEvent::from_code(r.u8()?).ok_or_else(|| r.invalid("unknown event code"))?;
        let subject = r.array::<16>()?;
        let class = r.u16()?;
        let detail = String::from_utf8(r.var_bytes()?.to_vec())
            .map_err(|_| r.invalid("detail is not UTF-8"))?;
        let prev_hash = r.array::<32>()?;
        let hash = r.array::<32>()?;
        r.end()?;
        Ok(Self {
            seq,
            time: crate::codec::saturating_time(time),
            event,
            subject: (subject != [0; 16]).then_some(SubjectTag(subject)),
            class: (class != NO_CLASS).then_some(class),
            detail,
            prev_hash,
            hash,
            keyed,
        })
    }

    /// Recomputes the hash from the entry's fields: `None` for a keyed
    /// entry without the key (it cannot be checked).
    pub(crate) fn computed_hash(&self, key: Option<&TagKey>) -> Option<[u8; 32]> {
        let key = match (self.keyed, key) {
            (true, None) => return None,
            (true, Some(key)) => Some(key),
            (false, _) => None,
        };
        Some(chain_hash(
            key,
            self.seq,
            self.time.as_second(),
            self.event.code(),
            &self.subject.map_or([0; 16], |t| t.0),
            self.class.unwrap_or(NO_CLASS),
            self.detail.as_bytes(),
            &self.prev_hash,
        ))
    }
}

/// The hash an anchor holds for the stored entry `bytes` at `seq`: the
/// entry's hash if it is intact (its stored hash is the one its fields
/// give under `key`), else a hash of the raw bytes, which no anchor holds.
pub(crate) fn entry_hash(key: Option<&TagKey>, seq: u64, bytes: &[u8]) -> [u8; 32] {
    match AuditEntry::decode(seq, bytes) {
        Ok(entry) if entry.computed_hash(key) == Some(entry.hash) => entry.hash,
        _ => Sha256::digest(bytes).into(),
    }
}

/// Meta key of the store's anchor generation (u64 big-endian; absent: 0).
pub(crate) const ANCHOR_GENERATION: &[u8] = b"anchor_generation";

#[derive(Debug)]
struct Head {
    next_seq: u64,
    last_hash: [u8; 32],
    generation: u64,
    /// A commit failed: its batch may have landed all the same (a sync can
    /// fail after the write did), so the head is read again from the store
    /// before the next append, which would otherwise overwrite that entry.
    stale: bool,
}

/// Adds writes that name a commit's last entry to its batch.
type FinishCommit<'a> = dyn FnMut(&AuditHead, &mut WriteBatch) + 'a;

/// What a commit of the chain does besides appending entries.
struct CommitExtra<'a> {
    /// The anchor generation the commit starts.
    new_generation: Option<u64>,
    /// Adds writes naming the commit's last entry to its batch.
    finish: Option<&'a mut FinishCommit<'a>>,
}

impl CommitExtra<'_> {
    fn none() -> CommitExtra<'static> {
        CommitExtra {
            new_generation: None,
            finish: None,
        }
    }
}

/// Appends entries; serialises appends so the chain has no forks.
#[derive(Debug)]
pub(crate) struct AuditLog {
    /// Held across the commit's storage write: one of `crate::sync`'s, so
    /// the loom model can interleave committers without blocking itself.
    head: crate::sync::Mutex<Head>,
    /// The key provider whose anchor durable commits advance, if any.
    anchor: Option<Arc<dyn KeyProvider>>,
    /// Off while a restore replays (the backup's chain is behind the
    /// anchor until the replay raises the generation).
    anchoring: std::sync::atomic::AtomicBool,
    /// The audit key, once the store secret is known: from then on every
    /// entry is keyed (v2). Set before the store's first commit.
    key: std::sync::OnceLock<TagKey>,
}

impl AuditLog {
    /// Reads the last entry to continue the chain; nothing is anchored.
    #[cfg(test)]
    pub(crate) fn open(storage: &dyn Storage) -> Result<Self> {
        Ok(Self {
            head: crate::sync::Mutex::new(read_head(storage)?),
            anchor: None,
            anchoring: std::sync::atomic::AtomicBool::new(false),
            key: std::sync::OnceLock::new(),
        })
    }

    /// [`AuditLog::open`], advancing `provider`'s anchor after every
    /// durable commit (if it keeps one), from the start or (`anchoring`
    /// false: a restore) from the replay on.
    pub(crate) fn open_anchored(
        storage: &dyn Storage,
        provider: Arc<dyn KeyProvider>,
        anchoring: bool,
    ) -> Result<Self> {
        Ok(Self {
            head: crate::sync::Mutex::new(read_head(storage)?),
            anchor: provider.keeps_anchor().then_some(provider),
            anchoring: std::sync::atomic::AtomicBool::new(anchoring),
            key: std::sync::OnceLock::new(),
        })
    }

    /// Keys the chain under the audit key derived from `store_secret`:
    /// every entry appended from now on is a v2 entry. Called once the
    /// secret is known, before the store's first commit.
    pub(crate) fn set_key(&self, store_secret: &[u8; 32]) {
        let _ = self.key.set(TagKey::derive(
            store_secret,
            shredkv_crypto::Label::AuditChain,
        ));
    }

    /// Reads the head from the store again at the next use (tests that
    /// edit the audit tree under an open log).
    #[cfg(test)]
    pub(crate) fn reread_head(&self) {
        crate::sync::lock(&self.head).stale = true;
    }

    /// The audit key, if set.
    pub(crate) fn key(&self) -> Option<&TagKey> {
        self.key.get()
    }

    /// The hash an anchor holds for the stored entry `bytes` at `seq`.
    pub(crate) fn entry_hash(&self, seq: u64, bytes: &[u8]) -> [u8; 32] {
        entry_hash(self.key(), seq, bytes)
    }

    /// Walks the chain from the start and checks every link, keyed entries
    /// under this store's audit key.
    pub(crate) fn verify(&self, storage: &dyn Storage) -> Result<ChainReport> {
        verify_chain(storage, self.key())
    }

    /// Where the chain ends: (anchor generation, last entry's sequence
    /// number, its hash); entry 0 and zeros for an empty chain.
    pub(crate) fn position(&self, storage: &dyn Storage) -> Result<Anchor> {
        let mut head = crate::sync::lock(&self.head);
        if head.stale {
            *head = read_head(storage)?;
        }
        Ok(Anchor {
            generation: head.generation,
            seq: head.next_seq.saturating_sub(1),
            head: head.last_hash,
        })
    }

    /// [`AuditLog::commit`] of a restore's replay: the batch also raises the
    /// store's anchor generation to `generation`, and the anchor follows.
    pub(crate) fn commit_new_generation(
        &self,
        storage: &dyn Storage,
        mut batch: WriteBatch,
        entries: &[PendingEntry],
        now: Timestamp,
        generation: u64,
    ) -> Result<()> {
        batch.put(
            Tree::Meta,
            ANCHOR_GENERATION,
            generation.to_be_bytes().to_vec(),
        );
        self.anchoring
            .store(true, std::sync::atomic::Ordering::Release);
        self.commit_inner(
            storage,
            batch,
            entries,
            now,
            Durability::Durable,
            CommitExtra {
                new_generation: Some(generation),
                finish: None,
            },
        )
        .map(|_| ())
    }

    /// Adds `entries` to `batch` and applies it, holding the chain's head so
    /// no other append interleaves. The head advances only if the batch lands.
    pub(crate) fn commit(
        &self,
        storage: &dyn Storage,
        batch: WriteBatch,
        entries: &[PendingEntry],
        now: Timestamp,
        durability: Durability,
    ) -> Result<()> {
        self.commit_inner(
            storage,
            batch,
            entries,
            now,
            durability,
            CommitExtra::none(),
        )
        .map(|_| ())
    }

    /// [`AuditLog::commit`], returning the position of the last entry it
    /// appended (for a receipt).
    pub(crate) fn commit_returning_head(
        &self,
        storage: &dyn Storage,
        batch: WriteBatch,
        entries: &[PendingEntry],
        now: Timestamp,
        durability: Durability,
    ) -> Result<AuditHead> {
        self.commit_inner(
            storage,
            batch,
            entries,
            now,
            durability,
            CommitExtra::none(),
        )
    }

    /// [`AuditLog::commit_returning_head`], letting `finish` add writes that
    /// name the commit's last entry (a stored receipt) to the same batch.
    pub(crate) fn commit_finishing(
        &self,
        storage: &dyn Storage,
        batch: WriteBatch,
        entries: &[PendingEntry],
        now: Timestamp,
        durability: Durability,
        finish: &mut dyn FnMut(&AuditHead, &mut WriteBatch),
    ) -> Result<AuditHead> {
        self.commit_inner(
            storage,
            batch,
            entries,
            now,
            durability,
            CommitExtra {
                new_generation: None,
                finish: Some(finish),
            },
        )
    }

    /// The chain's current head.
    pub(crate) fn head(&self, storage: &dyn Storage) -> Result<AuditHead> {
        let position = self.position(storage)?;
        Ok(AuditHead {
            seq: position.seq,
            hash: position.head,
        })
    }

    fn commit_inner(
        &self,
        storage: &dyn Storage,
        mut batch: WriteBatch,
        entries: &[PendingEntry],
        now: Timestamp,
        durability: Durability,
        extra: CommitExtra<'_>,
    ) -> Result<AuditHead> {
        let CommitExtra {
            new_generation,
            finish,
        } = extra;
        let mut head = crate::sync::lock(&self.head);
        if head.stale {
            *head = read_head(storage)?;
        }
        let mut seq = head.next_seq;
        let mut prev = head.last_hash;
        batch.ops.reserve(entries.len());
        for pending in entries {
            let subject = pending.subject.map_or([0; 16], |t| t.0);
            let class = pending.class.unwrap_or(NO_CLASS);
            let key = self.key.get();
            let hash = chain_hash(
                key,
                seq,
                now.as_second(),
                pending.event.code(),
                &subject,
                class,
                pending.detail.as_bytes(),
                &prev,
            );
            let entry = EntryFields {
                time: now,
                event: pending.event,
                subject: pending.subject,
                class: pending.class,
                detail: &pending.detail,
                prev_hash: &prev,
                hash: &hash,
                keyed: key.is_some(),
            };
            batch.put(Tree::Audit, seq.to_be_bytes(), entry.encode());
            prev = hash;
            seq += 1;
        }
        if let Some(finish) = finish {
            finish(
                &AuditHead {
                    seq: seq.saturating_sub(1),
                    hash: prev,
                },
                &mut batch,
            );
        }
        if let Err(err) = storage.apply_owned(batch, durability) {
            head.stale = true;
            return Err(err.into());
        }
        head.next_seq = seq;
        head.last_hash = prev;
        if let Some(generation) = new_generation {
            head.generation = generation;
        }
        // Durable, so the anchor may vouch for it. Still under the head's
        // lock: anchors advance in chain order. An unreachable provider
        // must not fail an erasure that has landed (G1): the store is then
        // ahead of its anchor until the next durable commit or open brings
        // it level. An anchor ahead of this store is reported: another
        // store (a restore) took over the key file.
        if durability == Durability::Durable
            && !entries.is_empty()
            && self.anchoring.load(std::sync::atomic::Ordering::Acquire)
            && let Some(provider) = &self.anchor
        {
            match provider.advance_anchor(&Anchor {
                generation: head.generation,
                seq: seq - 1,
                head: prev,
            }) {
                Ok(()) | Err(shredkv_crypto::ProviderError::Unavailable { .. }) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(AuditHead {
            seq: head.next_seq.saturating_sub(1),
            hash: head.last_hash,
        })
    }
}

/// `read` of the chain's last entry (its sequence number and stored
/// bytes), if the chain has one.
fn with_last_entry<T>(
    storage: &dyn Storage,
    read: impl FnOnce(u64, &[u8]) -> T,
) -> Result<Option<T>> {
    let mut read = Some(read);
    let mut out = None;
    storage.scan(
        Tree::Audit,
        Bound::Unbounded,
        Bound::Unbounded,
        Order::Descending,
        &mut |k, v| {
            let seq = k.try_into().map(u64::from_be_bytes).unwrap_or(0);
            out = read.take().map(|read| read(seq, v));
            ControlFlow::Break(())
        },
    )?;
    Ok(out)
}

/// The time of the chain's last entry, whole seconds, if it has one that
/// decodes.
pub(crate) fn last_entry_time(storage: &dyn Storage) -> Result<Option<i64>> {
    Ok(with_last_entry(storage, |seq, v| {
        AuditEntry::decode(seq, v).ok().map(|e| e.time.as_second())
    })?
    .flatten())
}

/// The head of the chain as stored: the entry after the last one.
fn read_head(storage: &dyn Storage) -> Result<Head> {
    let generation = storage
        .get(Tree::Meta, ANCHOR_GENERATION)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map_or(0, u64::from_be_bytes);
    let last = with_last_entry(storage, |seq, v| {
        // A damaged last entry must not stop the store: the chain
        // continues from a hash of its raw bytes, and `verify`
        // reports the damaged entry and the break after it.
        let last_hash = match AuditEntry::decode(seq, v) {
            Ok(entry) => entry.hash,
            Err(_) => Sha256::digest(v).into(),
        };
        (seq, last_hash)
    })?;
    let (next_seq, last_hash) =
        last.map_or((1, [0; 32]), |(seq, hash)| (seq.saturating_add(1), hash));
    Ok(Head {
        next_seq,
        last_hash,
        generation,
        stale: false,
    })
}

fn location(key: &[u8]) -> Box<Location> {
    Box::new(Location {
        tree: "audit",
        subject: None,
        class: None,
        key_hex: shredkv_crypto::hex::encode(key),
    })
}

/// A break in the audit chain. In serde formats, an object whose `kind`
/// names the variant in kebab case (`"edited"`, `"broken"`...) next to its
/// fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "kind", rename_all = "kebab-case"))]
pub enum ChainBreak {
    /// An entry's bytes are damaged.
    Corrupt {
        /// The stored sequence number.
        seq: u64,
        /// What is wrong.
        detail: String,
    },
    /// An entry's content does not match its hash: it was edited.
    Edited {
        /// The edited entry.
        seq: u64,
    },
    /// A plain (v1) entry after keyed ones: the chain was rewritten from
    /// here by someone without the store's audit key.
    Downgraded {
        /// The first plain entry after a keyed one.
        seq: u64,
    },
    /// A keyed entry checked without the store's audit key.
    Unverifiable {
        /// The entry.
        seq: u64,
    },
    /// An entry does not follow its predecessor: one was removed, inserted
    /// or moved before this point.
    Broken {
        /// The first entry whose link is wrong.
        seq: u64,
        /// The sequence number expected there.
        expected_seq: u64,
    },
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainBreak::Corrupt { seq, detail } => {
                write!(f, "audit entry {seq} is corrupt: {detail}")
            }
            ChainBreak::Edited { seq } => write!(
                f,
                "audit entry {seq} was edited: its hash does not match its content"
            ),
            ChainBreak::Downgraded { seq } => write!(
                f,
                "audit entry {seq} is a plain-hash entry after keyed ones: the chain was rewritten from here without the store's key"
            ),
            ChainBreak::Unverifiable { seq } => write!(
                f,
                "audit entry {seq} is keyed and cannot be checked without the store's secret"
            ),
            ChainBreak::Broken { seq, expected_seq } => write!(
                f,
                "audit chain broken at entry {seq} (expected entry {expected_seq} there): an entry was removed, inserted or reordered"
            ),
        }
    }
}

/// The outcome of checking the whole chain.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ChainReport {
    /// Entries checked.
    pub entries: u64,
    /// The hash of the last entry (the chain's head), hex.
    pub head_hex: String,
    /// The last entry (sequence number 0: an empty chain).
    pub head: AuditHead,
    /// The first keyed (v2) entry, if any: entries before it are chained
    /// with plain SHA-256 (a store made before keyed chains).
    pub keyed_from: Option<u64>,
    /// Every break found, in order.
    pub breaks: Vec<ChainBreak>,
}

/// Walks the audit log from the start and checks every link, keyed entries
/// under `key`.
pub(crate) fn verify_chain(storage: &dyn Storage, key: Option<&TagKey>) -> Result<ChainReport> {
    let mut expected_seq = 1u64;
    let mut prev = [0u8; 32];
    let mut keyed_from: Option<u64> = None;
    let mut last_seq = 0u64;
    let mut breaks = Vec::new();
    let mut entries = 0u64;
    storage.scan(
        Tree::Audit,
        Bound::Unbounded,
        Bound::Unbounded,
        Order::Ascending,
        &mut |k, v| {
            entries += 1;
            let seq = k.try_into().map(u64::from_be_bytes).unwrap_or(0);
            match AuditEntry::decode(seq, v) {
                Err(err) => {
                    breaks.push(ChainBreak::Corrupt {
                        seq,
                        detail: err.to_string(),
                    });
                }
                Ok(entry) => {
                    let computed = entry.computed_hash(key);
                    if keyed_from.is_some() && !entry.keyed {
                        breaks.push(ChainBreak::Downgraded { seq });
                    } else if computed.is_none() {
                        breaks.push(ChainBreak::Unverifiable { seq });
                    } else if computed != Some(entry.hash) {
                        breaks.push(ChainBreak::Edited { seq });
                    } else if seq != expected_seq || entry.prev_hash != prev {
                        breaks.push(ChainBreak::Broken { seq, expected_seq });
                    }
                    if entry.keyed && keyed_from.is_none() {
                        keyed_from = Some(seq);
                    }
                    prev = entry.hash;
                }
            }
            expected_seq = seq.saturating_add(1);
            last_seq = seq;
            ControlFlow::Continue(())
        },
    )?;
    Ok(ChainReport {
        entries,
        head_hex: shredkv_crypto::hex::encode(&prev),
        head: AuditHead {
            seq: last_seq,
            hash: prev,
        },
        keyed_from,
        breaks,
    })
}

/// Reads entries with sequence numbers in `from..`, at most `limit`.
pub(crate) fn read_entries(
    storage: &dyn Storage,
    from: u64,
    limit: usize,
) -> Result<Vec<AuditEntry>> {
    let mut out = Vec::new();
    let mut failure = None;
    let start = from.to_be_bytes();
    storage.scan(
        Tree::Audit,
        Bound::Included(&start),
        Bound::Unbounded,
        Order::Ascending,
        &mut |k, v| {
            let seq = k.try_into().map(u64::from_be_bytes).unwrap_or(0);
            match AuditEntry::decode(seq, v) {
                Ok(entry) => out.push(entry),
                Err(source) => {
                    failure = Some(Error::Corrupt {
                        location: location(k),
                        source,
                    });
                    return ControlFlow::Break(());
                }
            }
            if out.len() >= limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    )?;
    match failure {
        Some(err) => Err(err),
        None => Ok(out),
    }
}

/// The sequence number of the first entry recording `event`, if any
/// (damaged entries are skipped: `verify_chain` reports them).
pub(crate) fn first_of(storage: &dyn Storage, event: AuditEvent) -> Result<Option<u64>> {
    let mut found = None;
    storage.scan(
        Tree::Audit,
        Bound::Unbounded,
        Bound::Unbounded,
        Order::Ascending,
        &mut |k, v| {
            let seq = k.try_into().map(u64::from_be_bytes).unwrap_or(0);
            if AuditEntry::decode(seq, v).is_ok_and(|entry| entry.event == event) {
                found = Some(seq);
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        },
    )?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStorage;

    fn log_with(n: u64) -> (MemoryStorage, AuditLog) {
        let storage = MemoryStorage::new();
        let log = AuditLog::open(&storage).expect("open");
        for i in 0..n {
            let entry = PendingEntry::new(
                AuditEvent::KeysDestroyed,
                Some(SubjectTag([1; 16])),
                Some(2),
                format!("{i} keys"),
            );
            log.commit(
                &storage,
                WriteBatch::new(),
                &[entry],
                Timestamp::UNIX_EPOCH,
                Durability::Buffered,
            )
            .expect("commit");
        }
        (storage, log)
    }

    fn raw(storage: &MemoryStorage, seq: u64) -> Vec<u8> {
        storage
            .get(Tree::Audit, &seq.to_be_bytes())
            .expect("get")
            .expect("present")
    }

    #[test]
    fn intact_chain_verifies_and_continues_after_reopen() {
        let (storage, _) = log_with(3);
        let log = AuditLog::open(&storage).expect("reopen");
        log.commit(
            &storage,
            WriteBatch::new(),
            &[PendingEntry::new(AuditEvent::HoldPlaced, None, None, "x")],
            Timestamp::UNIX_EPOCH,
            Durability::Buffered,
        )
        .expect("commit");
        let report = verify_chain(&storage, None).expect("verify");
        assert_eq!(report.entries, 4);
        assert!(report.breaks.is_empty(), "{:?}", report.breaks);
    }

    #[test]
    fn edit_removal_insertion_and_reorder_are_detected() {
        // Edited: change the detail and fix the CRC (a careful forger).
        let (storage, _) = log_with(4);
        let mut entry = AuditEntry::decode(2, &raw(&storage, 2)).expect("decode");
        entry.detail = "0 keys".into();
        let mut b = WriteBatch::new();
        b.put(Tree::Audit, 2u64.to_be_bytes(), entry.encode());
        storage.apply(&b, Durability::Buffered).expect("apply");
        assert_eq!(
            verify_chain(&storage, None).expect("verify").breaks,
            vec![ChainBreak::Edited { seq: 2 }]
        );

        // Removed.
        let (storage, _) = log_with(4);
        let mut b = WriteBatch::new();
        b.remove(Tree::Audit, 3u64.to_be_bytes());
        storage.apply(&b, Durability::Buffered).expect("apply");
        assert_eq!(
            verify_chain(&storage, None).expect("verify").breaks,
            vec![ChainBreak::Broken {
                seq: 4,
                expected_seq: 3
            }]
        );

        // Reordered: swap entries 2 and 3 under each other's keys.
        let (storage, _) = log_with(4);
        let (two, three) = (raw(&storage, 2), raw(&storage, 3));
        let mut b = WriteBatch::new();
        b.put(Tree::Audit, 2u64.to_be_bytes(), three);
        b.put(Tree::Audit, 3u64.to_be_bytes(), two);
        storage.apply(&b, Durability::Buffered).expect("apply");
        let breaks = verify_chain(&storage, None).expect("verify").breaks;
        assert_eq!(
            breaks.first(),
            Some(&ChainBreak::Edited { seq: 2 }),
            "{breaks:?}"
        );

        // Inserted: a copy of entry 2 appended as entry 5.
        let (storage, _) = log_with(4);
        let mut b = WriteBatch::new();
        b.put(Tree::Audit, 5u64.to_be_bytes(), raw(&storage, 2));
        storage.apply(&b, Durability::Buffered).expect("apply");
        assert_eq!(
            verify_chain(&storage, None).expect("verify").breaks,
            vec![ChainBreak::Edited { seq: 5 }]
        );

        // Corrupted bytes.
        let (storage, _) = log_with(2);
        let mut bytes = raw(&storage, 1);
        bytes[3] ^= 1;
        let mut b = WriteBatch::new();
        b.put(Tree::Audit, 1u64.to_be_bytes(), bytes);
        storage.apply(&b, Durability::Buffered).expect("apply");
        assert!(matches!(
            verify_chain(&storage, None).expect("verify").breaks.first(),
            Some(ChainBreak::Corrupt { seq: 1, .. })
        ));
    }

    /// G5: a forger who rewrites an entry's link and recomputes its hash
    /// (so the entry is self-consistent, its sequence number right) is
    /// caught by the link check alone.
    #[test]
    fn audit_chain_detects_a_relinked_entry() {
        // Entry 3 names another predecessor and its own hash is recomputed
        // over that; only its link to entry 2 (and entry 4's link to it)
        // shows the break.
        let (storage, _) = log_with(4);
        let mut entry = AuditEntry::decode(3, &raw(&storage, 3)).expect("decode");
        entry.prev_hash = [0x5a; 32];
        entry.hash = entry.computed_hash(None).expect("a plain entry");
        let mut b = WriteBatch::new();
        b.put(Tree::Audit, 3u64.to_be_bytes(), entry.encode());
        storage.apply(&b, Durability::Buffered).expect("apply");
        assert_eq!(
            verify_chain(&storage, None).expect("verify").breaks,
            vec![
                ChainBreak::Broken {
                    seq: 3,
                    expected_seq: 3
                },
                ChainBreak::Broken {
                    seq: 4,
                    expected_seq: 4
                }
            ]
        );
    }

    fn append(log: &AuditLog, storage: &MemoryStorage, detail: &str) {
        log.commit(
            storage,
            WriteBatch::new(),
            &[PendingEntry::new(
                AuditEvent::HoldPlaced,
                Some(SubjectTag([2; 16])),
                None,
                detail,
            )],
            Timestamp::UNIX_EPOCH,
            Durability::Buffered,
        )
        .expect("commit");
    }

    const SECRET: [u8; 32] = [0x42; 32];

    fn audit_key() -> TagKey {
        TagKey::derive(&SECRET, shredkv_crypto::Label::AuditChain)
    }

    /// A store made before keyed chains (plain entries 1..=3) continues
    /// with keyed entries once its log has the key; the mixed chain
    /// verifies under the key, and its keyed part cannot be checked
    /// without it.
    #[test]
    fn a_keyed_chain_continues_a_plain_one_and_needs_the_key_to_verify() {
        let (storage, _) = log_with(3);
        let log = AuditLog::open(&storage).expect("reopen");
        log.set_key(&SECRET);
        append(&log, &storage, "one");
        append(&log, &storage, "two");
        let entries = read_entries(&storage, 1, 10).expect("entries");
        let keyed: Vec<bool> = entries.iter().map(|e| e.keyed).collect();
        assert_eq!(keyed, [false, false, false, true, true]);
        assert_eq!(raw(&storage, 4).first(), Some(&VERSION_KEYED));
        assert!(log.verify(&storage).expect("verify").breaks.is_empty());
        assert!(
            verify_chain(&storage, Some(&audit_key()))
                .expect("verify")
                .breaks
                .is_empty()
        );
        assert_eq!(
            verify_chain(&storage, None).expect("verify").breaks,
            vec![
                ChainBreak::Unverifiable { seq: 4 },
                ChainBreak::Unverifiable { seq: 5 }
            ]
        );
        let other = TagKey::derive(&[0x43; 32], shredkv_crypto::Label::AuditChain);
        assert_eq!(
            verify_chain(&storage, Some(&other))
                .expect("verify")
                .breaks
                .first(),
            Some(&ChainBreak::Edited { seq: 4 }),
            "a MAC under another store's key does not verify"
        );
    }

    /// A forger who can write the files but lacks the store secret edits a
    /// keyed entry: re-linked as a plain entry (SHA-256 needs no key) it is
    /// a downgrade; kept keyed, its MAC cannot be recomputed. Either way
    /// the chain check names the entry.
    #[test]
    fn a_keyed_entry_rewritten_without_the_key_is_detected() {
        let storage = MemoryStorage::new();
        let log = AuditLog::open(&storage).expect("open");
        log.set_key(&SECRET);
        for detail in ["a", "b", "c", "d"] {
            append(&log, &storage, detail);
        }
        let mut entry = AuditEntry::decode(3, &raw(&storage, 3)).expect("decode");
        entry.detail = "hold released by nobody".into();

        // Downgraded: a self-consistent plain entry that links to entry 2.
        let mut plain = AuditEntry {
            keyed: false,
            ..entry.clone()
        };
        plain.hash = plain.computed_hash(None).expect("plain");
        let mut b = WriteBatch::new();
        b.put(Tree::Audit, 3u64.to_be_bytes(), plain.encode());
        storage.apply(&b, Durability::Buffered).expect("apply");
        let breaks = log.verify(&storage).expect("verify").breaks;
        assert_eq!(breaks.first(), Some(&ChainBreak::Downgraded { seq: 3 }));

        // Kept keyed, with the old MAC: edited.
        let mut b = WriteBatch::new();
        b.put(Tree::Audit, 3u64.to_be_bytes(), entry.encode());
        storage.apply(&b, Durability::Buffered).expect("apply");
        let breaks = log.verify(&storage).expect("verify").breaks;
        assert_eq!(breaks.first(), Some(&ChainBreak::Edited { seq: 3 }));
        for b in &breaks {
            assert!(!b.to_string().is_empty());
        }
    }
}
