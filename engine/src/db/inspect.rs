//! Operator views: statistics, the full integrity scan, the audit log.

use std::collections::BTreeMap;
use std::ops::{Bound, ControlFlow};

use jiff::Timestamp;
use shredkv_crypto::{KeyId, SubjectTag};

use super::Db;
use super::ops::OpenScratch;
use crate::audit::{self, AuditEntry, AuditEvent, AuditHead, ChainReport, PendingEntry};
use crate::error::{Error, Location, Result};
use crate::retention::OverduePurge;
use crate::retention::deadlines::{self, Due};
use crate::storage::{Order, Tree};
use crate::subjects::{self, SubjectInfo, SubjectKind, SubjectState};
use crate::vault::gate::ReadGuard;
use crate::vault::{KeyState, VaultEntry};

/// Records and bytes of one class.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ClassStats {
    /// The class name (`#n` for a class no longer in the policy).
    pub name: String,
    /// Stored records, including dead ones awaiting compaction.
    pub records: u64,
    /// Of those, the dead: expired, or sealed under a key that is destroyed
    /// (erased, expired bucket, re-keyed) — unreadable, awaiting removal.
    pub dead: u64,
    /// Stored bytes of those records (keys and envelopes).
    pub bytes: u64,
}

/// A store's vital statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Stats {
    /// The backend's name.
    pub backend: String,
    /// Bytes the backend occupies on disk (on etcd: the largest member's
    /// database; on TiKV: the logical size of the store).
    pub size_on_disk: u64,
    /// The most the backend may occupy before writes are refused: the size
    /// of a local store's filesystem, an etcd cluster's quota
    /// (`--quota-backend-bytes`). `None` where the backend cannot tell
    /// (TiKV, an etcd endpoint over TLS).
    pub capacity_bytes: Option<u64>,
    /// How much more the backend may take before writes are refused
    /// ([`Error::is_full`]): what the filesystem has free, what is left of
    /// an etcd cluster's quota. Watch it: a store at 0 refuses writes and
    /// shreds until room is made (docs/operations.md).
    pub headroom_bytes: Option<u64>,
    /// The shard this store serves ([`Config::shard`](crate::Config::shard)),
    /// if it is one.
    pub shard: Option<u32>,
    /// How many shards the store's shard is one of.
    pub shards: Option<u32>,
    /// Registered accounts.
    pub accounts: u64,
    /// Registered end users.
    pub end_users: u64,
    /// Subjects by state: active, restricted, erased.
    pub active: u64,
    /// Restricted subjects.
    pub restricted: u64,
    /// Erased subjects.
    pub erased: u64,
    /// Scopes (subject × class) that have keys.
    pub scopes: u64,
    /// Live data keys (active or retired).
    pub keys_live: u64,
    /// Destroyed data keys (tombstones).
    pub keys_destroyed: u64,
    /// Records and bytes per class.
    pub classes: Vec<ClassStats>,
    /// Key versions owing a re-key (deleted or overwritten records).
    pub rekey_debts: u64,
    /// When the earliest of them is re-keyed: early enough that the old
    /// key's last epoch dies within the purge window (docs/design.md, "The
    /// deletion timeline").
    pub oldest_purge_deadline: Option<Timestamp>,
    /// Work items in the deadline index.
    pub deadlines: u64,
    /// The earliest deadline in the index.
    pub next_deadline: Option<Timestamp>,
    /// Legal holds in force.
    pub holds: u64,
    /// Audit entries.
    pub audit_entries: u64,
    /// The epoch new keys are wrapped under.
    pub current_epoch: u32,
    /// Epochs whose keys exist in the key provider.
    pub live_epochs: Vec<u32>,
    /// Unwrapped keys held in the key cache now.
    pub cached_keys: u64,
    /// Purge work past its time (empty when maintenance keeps up).
    pub overdue: OverduePurge,
    /// The store's time ([`Db::now`](crate::Db::now)): its clock, never
    /// earlier than a time the store already used.
    pub store_time: Timestamp,
    /// What the configured clock itself reads: earlier than
    /// [`Stats::store_time`] while the clock stands behind it (set back,
    /// or corrected after running ahead; docs/operations.md).
    pub clock_time: Timestamp,
}

/// What the integrity scan found wrong with one stored item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
pub enum ProblemKind {
    /// Damaged bytes (checksum, truncation, unknown format): media corruption.
    Corrupt,
    /// Authentication failed: altered or moved data.
    Tampered,
}

/// One problem found by [`Db::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Problem {
    /// Corrupt or tampered.
    pub kind: ProblemKind,
    /// Where.
    pub location: Location,
    /// What is wrong.
    pub detail: String,
}

/// [`Location`] from serde formats, the fields its `Serialize` writes
/// (`tree`, `subject`, `class`, `key`). By hand because `tree` is
/// `&'static str`: the name is looked up among the store's trees, which
/// are the only ones a location names.
#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Location {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        struct Fields {
            tree: String,
            subject: Option<SubjectTag>,
            class: Option<String>,
            key: String,
        }
        let fields = Fields::deserialize(deserializer)?;
        let tree = Tree::from_name(&fields.tree).ok_or_else(|| {
            serde::de::Error::invalid_value(
                serde::de::Unexpected::Str(&fields.tree),
                &"the name of one of the store's trees, such as `data`",
            )
        })?;
        Ok(Location {
            tree: tree.name(),
            subject: fields.subject,
            class: fields.class,
            key_hex: fields.key,
        })
    }
}

/// The live keys of expiry buckets that nothing will destroy: no "destroy
/// key" item for them in the deadline index, parked by a hold (`blocked`)
/// or set aside (`poisoned`). A MAC shows a value was forged or edited, not
/// that one was removed; this finds the removal that matters most, a
/// deleted destruction deadline (every live key is carried into each new
/// epoch, so nothing else would ever destroy it).
///
/// Entries in `failing` (they fail their MAC) do not count: a deadline
/// moved to another time is a removal and a forgery.
fn expiry_keys_without_a_deadline(
    storage: &dyn crate::storage::Storage,
    failing: &std::collections::HashSet<(Tree, Vec<u8>)>,
) -> Result<Vec<Problem>> {
    use crate::retention::poisoned;
    let mut scheduled: std::collections::HashSet<KeyId> = std::collections::HashSet::new();
    let mut note = |deadline_key: &[u8]| {
        if let Some((_, Due::DestroyKey(id))) = deadlines::decode_key(deadline_key) {
            scheduled.insert(id);
        }
    };
    let all = |tree, visit: &mut dyn FnMut(&[u8])| {
        storage.scan(
            tree,
            Bound::Unbounded,
            Bound::Unbounded,
            Order::Ascending,
            &mut |k, _| {
                if !failing.contains(&(tree, k.to_vec())) {
                    visit(k);
                }
                ControlFlow::Continue(())
            },
        )
    };
    all(Tree::Deadlines, &mut |k| note(k))?;
    all(Tree::Blocked, &mut |k| {
        note(k.get(18..).unwrap_or_default())
    })?;
    all(Tree::Poisoned, &mut |k| {
        if k.first() == Some(&poisoned::DUE_ITEM) {
            note(k.get(1..).unwrap_or_default());
        }
    })?;
    let mut problems = Vec::new();
    crate::vault::layout::scan_all(storage, &mut |tree, k, v| {
        let (Some(id), Ok(entry)) = (crate::vault::layout::id_at(tree, k), VaultEntry::decode(v))
        else {
            return ControlFlow::Continue(());
        };
        if entry.state == KeyState::Active
            && crate::vault::bucket_deadline(id.bucket).is_some()
            && !scheduled.contains(&id)
        {
            problems.push(Problem {
                kind: ProblemKind::Tampered,
                location: Location {
                    tree: "deadlines",
                    subject: Some(id.subject),
                    class: None,
                    key_hex: shredkv_crypto::hex::encode(k),
                },
                detail: "a live key of an expiry bucket has no destruction deadline (removed from the index): nothing would ever destroy it; shred the scope, or restore from a backup".to_string(),
            });
        }
        ControlFlow::Continue(())
    })?;
    Ok(problems)
}

/// Live keys of the day lane that `seals`, the lane's index by subject,
/// does not list: a shred or a class deadline of their scope would not
/// find them (`vault::layout`).
fn lane_keys_without_a_seal_record(
    storage: &dyn crate::storage::Storage,
    live: &[KeyId],
) -> Result<Vec<Problem>> {
    let mut problems = Vec::new();
    for page in live.chunks(512) {
        let keys: Vec<[u8; KeyId::LEN]> = page.iter().map(KeyId::to_bytes).collect();
        let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
        for (id, seals) in page.iter().zip(storage.get_many(Tree::Seals, &refs)?) {
            if seals.is_none() {
                problems.push(Problem {
                    kind: ProblemKind::Tampered,
                    location: Location {
                        tree: "seals",
                        subject: Some(id.subject),
                        class: None,
                        key_hex: shredkv_crypto::hex::encode(&id.to_bytes()),
                    },
                    detail: "a live key of the vault's day lane has no seal record, which is how an erasure of its scope finds it: the erasure would leave it live; shred the scope again after restoring the record, or restore from a backup".to_string(),
                });
            }
        }
    }
    Ok(problems)
}

/// A stored record as `stats` sees it: its data key, its expiry and key
/// (bucket, version) from the envelope header (`None`: unparseable), and
/// its size in bytes.
type StoredRecord = (Vec<u8>, Option<i64>, Option<(u32, u32)>, u64);

/// The longest detail [`Db::audit_event`] accepts, in bytes.
pub const MAX_AUDIT_DETAIL_LEN: usize = 1024;

/// Control values failing their MAC that one [`Db::verify`] lists at most.
const MAX_UNAUTHENTICATED_REPORTED: usize = 10_000;

/// The outcome of [`Db::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct IntegrityReport {
    /// Records decrypted and authenticated.
    pub records_checked: u64,
    /// Records whose keys are destroyed (dead ciphertext awaiting compaction).
    pub records_dead: u64,
    /// Vault entries checked.
    pub keys_checked: u64,
    /// Subject records checked.
    pub subjects_checked: u64,
    /// Every problem found.
    pub problems: Vec<Problem>,
    /// The audit chain's check.
    pub audit: ChainReport,
    /// Purge work past its time (not damage, but the purge window or a
    /// retention deadline is at risk).
    pub overdue: OverduePurge,
}

impl IntegrityReport {
    /// Whether nothing is damaged: no corrupt or tampered item and an
    /// intact audit chain. Late purge work is reported apart, in
    /// [`IntegrityReport::overdue`].
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty() && self.audit.breaks.is_empty()
    }
}

fn count(db: &Db, tree: Tree) -> Result<u64> {
    let mut n = 0u64;
    db.inner.storage.scan(
        tree,
        Bound::Unbounded,
        Bound::Unbounded,
        Order::Ascending,
        &mut |_, _| {
            n += 1;
            ControlFlow::Continue(())
        },
    )?;
    Ok(n)
}

fn problem(err: Error) -> Option<Problem> {
    match err {
        Error::Corrupt { location, source } => Some(Problem {
            kind: ProblemKind::Corrupt,
            location: *location,
            detail: source.to_string(),
        }),
        Error::Tampered { location } => Some(Problem {
            kind: ProblemKind::Tampered,
            location: *location,
            detail: "authentication failed".into(),
        }),
        _ => None,
    }
}

impl Db {
    /// Counts subjects, keys, records and bytes per class, debts and
    /// deadlines. O(stored items): for operators, not hot paths.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let config = shredkv::Config::new(dir.path().join("store"))
    /// #     .key_file(dir.path().join("keys")).maintenance_every(None);
    /// # let db = shredkv::Db::open(config)?;
    /// db.register_account("acct-42")?;
    /// db.register_end_user("user-7", "acct-42")?;
    /// let stats = db.stats()?;
    /// assert_eq!((stats.accounts, stats.end_users), (1, 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// Damaged subject records, storage and key provider failures.
    pub fn stats(&self) -> Result<Stats> {
        let inner = &self.inner;
        let space = inner.storage.space()?;
        let mut stats = Stats {
            backend: inner.storage.backend().name().to_string(),
            size_on_disk: space.size_on_disk,
            capacity_bytes: space.capacity,
            headroom_bytes: space.headroom,
            current_epoch: inner.vault.current_epoch().0,
            live_epochs: inner
                .vault
                .provider()
                .live_epochs()?
                .into_iter()
                .map(|e| e.0)
                .collect(),
            cached_keys: u64::try_from(inner.vault.cached_keys()).unwrap_or(u64::MAX),
            shard: inner.shard.map(|s| s.index),
            shards: inner.shard.map(|s| s.count),
            store_time: inner.clock.now(),
            clock_time: inner.clock.configured_now(),
            ..Stats::default()
        };
        for info in self.subjects()? {
            match info.kind {
                SubjectKind::Account => stats.accounts += 1,
                SubjectKind::EndUser => stats.end_users += 1,
            }
            match info.state {
                SubjectState::Active => stats.active += 1,
                SubjectState::Restricted => stats.restricted += 1,
                SubjectState::Erased => stats.erased += 1,
            }
        }
        let mut scopes = std::collections::BTreeSet::new();
        crate::vault::layout::scan_all(inner.storage.as_ref(), &mut |tree, k, v| {
            if let Some(id) = crate::vault::layout::id_at(tree, k) {
                match VaultEntry::decode(v) {
                    Ok(entry) if entry.state == KeyState::Destroyed => stats.keys_destroyed += 1,
                    Ok(_) => {
                        stats.keys_live += 1;
                        scopes.insert((id.subject, id.class));
                    }
                    Err(_) => {}
                }
            }
            ControlFlow::Continue(())
        })?;
        stats.scopes = u64::try_from(scopes.len()).unwrap_or(u64::MAX);
        let mut per_class: BTreeMap<u16, ClassStats> = BTreeMap::new();
        let live_epochs: std::collections::HashSet<u32> =
            stats.live_epochs.iter().copied().collect();
        let now = inner.now_secs();
        // Keys under the tree live while its roots' epochs do (one epoch,
        // but part way through a rotation).
        let root_epochs = inner.vault.tree().root_epochs()?;
        let tree_live = !root_epochs.is_empty()
            && root_epochs
                .iter()
                .all(|epoch| live_epochs.contains(&epoch.0));
        // Records in pages (no backend read lock held while the vault is
        // read); the live keys of one scope at a time (records come scope
        // by scope), so memory stays bounded by a page and a scope's keys.
        let mut scope: Option<[u8; 18]> = None;
        let mut live_keys: std::collections::HashSet<(u32, u32)> = Default::default();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let mut page: Vec<StoredRecord> = Vec::new();
            let start = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            inner.storage.scan(
                Tree::Data,
                start,
                Bound::Unbounded,
                Order::Ascending,
                &mut |k, v| {
                    let header = shredkv_crypto::Envelope::parse(v)
                        .ok()
                        .map(|e| (e.expiry(), e.key_ref()));
                    page.push((
                        k.to_vec(),
                        header.and_then(|(expiry, _)| expiry),
                        header.map(|(_, r)| (r.bucket, r.version)),
                        u64::try_from(k.len() + v.len()).unwrap_or(u64::MAX),
                    ));
                    if page.len() >= 1024 {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                },
            )?;
            let Some((last, ..)) = page.last() else { break };
            after = Some(last.clone());
            let full = page.len() >= 1024;
            for (k, expiry, key_ref, bytes) in page {
                let Some(this_scope) = k.get(..18).and_then(|p| <[u8; 18]>::try_from(p).ok())
                else {
                    continue;
                };
                if scope != Some(this_scope) {
                    scope = Some(this_scope);
                    live_keys.clear();
                    crate::vault::layout::scan_prefix(
                        inner.storage.as_ref(),
                        &this_scope,
                        &mut |id, slot| {
                            if let Ok(entry) = VaultEntry::decode(&slot.value)
                                && entry.state == KeyState::Active
                                && entry.wrapped.as_ref().is_some_and(|w| {
                                    w.epoch().map_or(tree_live, |e| live_epochs.contains(&e.0))
                                })
                            {
                                live_keys.insert((id.bucket, id.version));
                            }
                            ControlFlow::Continue(())
                        },
                    )?;
                }
                let class = u16::from_be_bytes([this_scope[16], this_scope[17]]);
                let entry = per_class.entry(class).or_default();
                entry.records += 1;
                entry.bytes += bytes;
                // A damaged envelope is verify's business, not counted dead.
                let dead = key_ref.is_some_and(|r| !live_keys.contains(&r))
                    || expiry.is_some_and(|e| e <= now);
                if dead {
                    entry.dead += 1;
                }
            }
            if !full {
                break;
            }
        }
        for class in &inner.classes {
            let mut entry = per_class.remove(&class.number).unwrap_or_default();
            entry.name = class.policy.name().to_string();
            stats.classes.push(entry);
        }
        for (number, mut entry) in per_class {
            entry.name = format!("#{number}");
            stats.classes.push(entry);
        }
        stats.rekey_debts = count(self, Tree::Debts)?;
        inner.storage.scan(
            Tree::Deadlines,
            Bound::Unbounded,
            Bound::Unbounded,
            Order::Ascending,
            &mut |k, _| {
                stats.deadlines += 1;
                if let Some((at, due)) = deadlines::decode_key(k) {
                    let at = Timestamp::from_second(at).unwrap_or(Timestamp::MAX);
                    stats.next_deadline.get_or_insert(at);
                    if matches!(due, Due::Rekey(_)) {
                        stats.oldest_purge_deadline.get_or_insert(at);
                    }
                }
                ControlFlow::Continue(())
            },
        )?;
        stats.holds = count(self, Tree::Holds)?;
        stats.audit_entries = count(self, Tree::Audit)?;
        stats.overdue = inner.overdue_purge()?;
        Ok(stats)
    }

    /// The full integrity scan: decrypts and authenticates every record,
    /// decodes every vault entry and subject record, and checks the audit
    /// chain. Damage is reported by location, corrupt apart from tampered;
    /// nothing is changed.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let config = shredkv::Config::new(dir.path().join("store"))
    /// #     .key_file(dir.path().join("keys")).maintenance_every(None);
    /// # let db = shredkv::Db::open(config)?;
    /// db.register_account("acct-42")?;
    /// db.put("acct-42", "message_content", b"m1", b"hello")?;
    /// let report = db.verify()?; // decrypts and authenticates everything; changes nothing
    /// assert!(report.is_clean(), "{:?}", report.problems);
    /// assert_eq!(report.records_checked, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// Storage and key provider failures (damage is reported, not an error).
    pub fn verify(&self) -> Result<IntegrityReport> {
        self.verify_with(&mut |_| {})
    }

    /// [`Db::verify`], calling `progress` with the number of records
    /// checked so far (every 1,000 records and at the end).
    ///
    /// # Errors
    /// As [`Db::verify`].
    pub fn verify_with(&self, progress: &mut dyn FnMut(u64)) -> Result<IntegrityReport> {
        let inner = &self.inner;
        let now = inner.now_secs();
        let mut report = IntegrityReport {
            records_checked: 0,
            records_dead: 0,
            keys_checked: 0,
            subjects_checked: 0,
            problems: Vec::new(),
            audit: inner.audit.verify(inner.storage.as_ref())?,
            overdue: inner.overdue_purge()?,
        };
        // Every other control value against its MAC (subjects are decoded
        // above, which reports theirs).
        let (unauthenticated, _) = inner.sealed.sweep(MAX_UNAUTHENTICATED_REPORTED)?;
        let failing: std::collections::HashSet<(Tree, Vec<u8>)> = unauthenticated
            .iter()
            .map(|u| (u.tree, u.key.clone()))
            .collect();
        for found in unauthenticated {
            if found.tree == Tree::Subjects {
                continue;
            }
            report.problems.push(Problem {
                kind: ProblemKind::Tampered,
                location: Location {
                    tree: found.tree.name(),
                    subject: None,
                    class: None,
                    key_hex: shredkv_crypto::hex::encode(&found.key),
                },
                detail: format!(
                    "{} value fails its MAC under the store secret: written, edited or moved without the store's keys",
                    found.tree.name()
                ),
            });
        }
        inner.storage.scan(
            Tree::Subjects,
            Bound::Unbounded,
            Bound::Unbounded,
            Order::Ascending,
            &mut |k, v| {
                if let Some(tag) = subjects::tag_of_record_key(k) {
                    report.subjects_checked += 1;
                    if let Err(source) = SubjectInfo::decode(tag, v) {
                        report.problems.push(Problem {
                            kind: ProblemKind::Corrupt,
                            location: *super::subject_location(&tag),
                            detail: source.to_string(),
                        });
                    }
                }
                ControlFlow::Continue(())
            },
        )?;
        let mut live_in_lane = Vec::new();
        // Live keys under the tree: (id, where, the wrap's node and generation).
        let mut under_nodes = Vec::new();
        crate::vault::layout::scan_all(inner.storage.as_ref(), &mut |tree, k, v| {
            report.keys_checked += 1;
            let id = crate::vault::layout::id_at(tree, k);
            if let (Some(id), Ok(entry)) = (id, VaultEntry::decode(v))
                && entry.state == KeyState::Active
                && let Some(crate::vault::Wrapped::Node(wrapped)) = &entry.wrapped
            {
                under_nodes.push((id, tree, k.to_vec(), wrapped.node(), wrapped.generation()));
            }
            match VaultEntry::decode(v) {
                Err(source) => report.problems.push(Problem {
                    kind: ProblemKind::Corrupt,
                    location: Location {
                        tree: tree.name(),
                        subject: id.map(|id| id.subject),
                        class: None,
                        key_hex: shredkv_crypto::hex::encode(k),
                    },
                    detail: source.to_string(),
                }),
                Ok(entry) if entry.state == KeyState::Active && tree == Tree::VaultDays => {
                    live_in_lane.extend(id);
                }
                Ok(_) => {}
            }
            ControlFlow::Continue(())
        })?;
        report.problems.extend(lane_keys_without_a_seal_record(
            inner.storage.as_ref(),
            &live_in_lane,
        )?);
        for (err, detail) in inner.vault.tree().problems()? {
            if let Some(found) = problem(err) {
                report.problems.push(Problem { detail, ..found });
            }
        }
        let mut generations: std::collections::HashMap<shredkv_crypto::NodeId, Option<u32>> =
            std::collections::HashMap::new();
        for (id, tree, key, node, generation) in under_nodes {
            let current = match generations.get(&node) {
                Some(current) => *current,
                None => {
                    let current = inner
                        .vault
                        .tree()
                        .read_node(node)
                        .ok()
                        .flatten()
                        .map(|entry| entry.generation);
                    generations.insert(node, current);
                    current
                }
            };
            // A re-key may have run since the scan: the entry as it is now.
            let still = || match inner.vault.read_entry(&id) {
                Ok(Some(VaultEntry {
                    state: KeyState::Active,
                    wrapped: Some(crate::vault::Wrapped::Node(now)),
                    ..
                })) => now.node() == node && now.generation() == generation,
                _ => false,
            };
            let rekeyed_since = || {
                inner
                    .vault
                    .tree()
                    .read_node(node)
                    .ok()
                    .flatten()
                    .map(|entry| entry.generation)
                    != current
            };
            if current != Some(generation) && still() && !rekeyed_since() {
                report.problems.push(Problem {
                    kind: ProblemKind::Tampered,
                    location: Location {
                        tree: tree.name(),
                        subject: Some(id.subject),
                        class: None,
                        key_hex: shredkv_crypto::hex::encode(&key),
                    },
                    detail: match current {
                        Some(current) => format!(
                            "a live key wrapped under generation {generation} of its key tree node, which is at generation {current}: it no longer opens, and its records read as tampered"
                        ),
                        None => "a live key wrapped under a key tree node the store does not hold: it does not open, and its records read as tampered".to_string(),
                    },
                });
            }
        }
        report.problems.extend(expiry_keys_without_a_deadline(
            inner.storage.as_ref(),
            &failing,
        )?);
        // Records in pages, so no backend read lock is held while decrypting.
        let mut after: Option<Vec<u8>> = None;
        let mut scratch = OpenScratch::default();
        loop {
            let mut page = Vec::with_capacity(512);
            let start = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            inner.storage.scan(
                Tree::Data,
                start,
                Bound::Unbounded,
                Order::Ascending,
                &mut |k, v| {
                    page.push((k.to_vec(), v.to_vec()));
                    if page.len() >= 512 {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                },
            )?;
            let full = page.len() >= 512;
            after = page.last().map(|(k, _)| k.clone());
            // Records are opened under their subject's gate read lock, like
            // any read: the vault lookup may unwrap a key and cache it, and
            // an erasure of the subject (which evicts its keys under the
            // write lock) must not fall between the vault read and the cache
            // insert, or a destroyed key would stay cached. The lock is held
            // over a run of one subject's records, and the scratch key (which
            // outlives a single lookup) is dropped whenever it is released.
            let mut shared: Option<(SubjectTag, ReadGuard<'_>)> = None;
            for (k, v) in &page {
                let location = |class: Option<String>| Location {
                    tree: "data",
                    subject: k.get(..16).and_then(|t| t.try_into().ok()).map(SubjectTag),
                    class,
                    key_hex: shredkv_crypto::hex::encode(k),
                };
                let (Some(tag), Some(number)) = (
                    k.get(..16).and_then(|t| t.try_into().ok()).map(SubjectTag),
                    k.get(16..18)
                        .and_then(|c| c.try_into().ok())
                        .map(u16::from_be_bytes),
                ) else {
                    report.problems.push(Problem {
                        kind: ProblemKind::Corrupt,
                        location: location(None),
                        detail: "record key shorter than subject tag and class".into(),
                    });
                    continue;
                };
                let Some(class) = inner.class_by_number(number) else {
                    // A class the policy no longer has: its scopes were
                    // erased when it was retired. Anything else is a record
                    // moved under a class number it never had.
                    let problem = match shredkv_crypto::Envelope::parse(v) {
                        Ok(envelope) => {
                            let id = crate::records::sealing_key(tag, number, &envelope);
                            let entry = inner.vault.read_entry(&id).ok().flatten();
                            let dead = entry
                                .as_ref()
                                .is_none_or(|e| e.state == KeyState::Destroyed)
                                && inner.dead_is_legitimate(
                                    &id,
                                    entry.as_ref(),
                                    envelope.expiry(),
                                    now,
                                )?;
                            (!dead).then_some((
                                ProblemKind::Tampered,
                                "a record of a class the store does not have, not explained by an erasure".to_string(),
                            ))
                        }
                        Err(source) => Some((ProblemKind::Corrupt, source.to_string())),
                    };
                    match problem {
                        None => report.records_dead += 1,
                        Some((kind, detail)) => report.problems.push(Problem {
                            kind,
                            location: location(Some(format!("#{number}"))),
                            detail,
                        }),
                    }
                    continue;
                };
                if shared.as_ref().is_none_or(|(held, _)| *held != tag) {
                    // Released before the next is taken: one stripe at a time.
                    drop(shared.take());
                    scratch = OpenScratch::default();
                    shared = Some((tag, inner.gate.read(&[tag])));
                }
                match inner.open_record(&tag, class, k, v, now, &mut scratch) {
                    Ok(Some(_)) => report.records_checked += 1,
                    Ok(None) => report.records_dead += 1,
                    Err(err) => match problem(err) {
                        Some(p) => report.problems.push(p),
                        None => {
                            return Err(Error::InvalidArgument {
                                what: "verify",
                                detail: "unexpected failure".into(),
                            });
                        }
                    },
                }
                let done = report.records_checked + report.records_dead;
                if done.is_multiple_of(1000) {
                    // The caller's callback runs without the lock.
                    shared = None;
                    scratch = OpenScratch::default();
                    progress(done);
                }
            }
            drop(shared);
            scratch = OpenScratch::default();
            if !full {
                break;
            }
        }
        progress(report.records_checked + report.records_dead);
        Ok(report)
    }

    /// Every key id in the vault, and whether it is destroyed.
    pub(crate) fn vault_key_ids(&self) -> Result<Vec<(KeyId, bool)>> {
        let mut out = Vec::new();
        crate::vault::layout::scan_all(self.inner.storage.as_ref(), &mut |tree, k, v| {
            if let (Some(id), Ok(entry)) =
                (crate::vault::layout::id_at(tree, k), VaultEntry::decode(v))
            {
                out.push((id, entry.state == KeyState::Destroyed));
            }
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    /// The name of the class the store numbers `number` (audit entries and
    /// the erasure ledger carry class numbers, stable for the store's life),
    /// or `None` for a number no class of the policy in force has (a class
    /// since removed from the policy, or never assigned).
    pub fn class_name(&self, number: u16) -> Option<String> {
        self.inner
            .class_by_number(number)
            .map(|c| c.policy.name().to_string())
    }

    /// Checks the audit chain from its first entry.
    ///
    /// # Errors
    /// Storage failures.
    pub fn verify_audit(&self) -> Result<ChainReport> {
        self.inner.audit.verify(self.inner.storage.as_ref())
    }

    /// Appends an event of the application's own to the audit chain (keyed
    /// and anchored like the engine's entries), about `subject` if given, and
    /// returns its position. `detail` is permanent — it outlives every
    /// erasure — so it must carry no personal data: name what happened and
    /// refer to the subject by the tag the entry records (at most
    /// [`MAX_AUDIT_DETAIL_LEN`] bytes, no control characters).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let config = shredkv::Config::new(dir.path().join("store"))
    /// #     .key_file(dir.path().join("keys")).maintenance_every(None);
    /// # let db = shredkv::Db::open(config)?;
    /// db.register_account("acct-42")?;
    /// let at = db.audit_event(Some("acct-42"), "data export sent to the account owner")?;
    /// let entry = &db.audit_entries(at.seq, 1)?[0];
    /// assert_eq!(entry.event, shredkv::AuditEvent::Application);
    /// assert_eq!(entry.subject, Some(db.subject_tag("acct-42")));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// An invalid subject id or detail ([`Error::InvalidArgument`]), an
    /// unknown subject, storage failures.
    pub fn audit_event(&self, subject: Option<&str>, detail: &str) -> Result<AuditHead> {
        if detail.trim().is_empty()
            || detail.len() > MAX_AUDIT_DETAIL_LEN
            || detail.chars().any(char::is_control)
        {
            return Err(Error::InvalidArgument {
                what: "audit detail",
                detail: format!(
                    "{} bytes; it must be 1 to {MAX_AUDIT_DETAIL_LEN} bytes of text without control characters",
                    detail.len()
                ),
            });
        }
        let inner = &self.inner;
        let tag = match subject {
            Some(id) => {
                let tag = self.tag_of(id)?;
                if inner.subject_info(&tag)?.is_none() {
                    return Err(Error::UnknownSubject { subject: tag });
                }
                Some(tag)
            }
            None => None,
        };
        let entry = PendingEntry::new(AuditEvent::Application, tag, None, detail);
        inner.audit.commit_returning_head(
            inner.storage.as_ref(),
            crate::storage::WriteBatch::new(),
            &[entry],
            inner.clock.now(),
            inner.durability,
        )
    }

    /// Audit entries from sequence number `from` (1 is the first), at most `limit`.
    ///
    /// # Errors
    /// A damaged entry, storage failures.
    pub fn audit_entries(&self, from: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        audit::read_entries(self.inner.storage.as_ref(), from, limit)
    }

    /// The last `n` audit entries, oldest first.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let config = shredkv::Config::new(dir.path().join("store"))
    /// #     .key_file(dir.path().join("keys")).maintenance_every(None);
    /// # let db = shredkv::Db::open(config)?;
    /// use shredkv::AuditEvent;
    /// db.register_account("acct-42")?;
    /// let last = db.audit_tail(1)?;
    /// assert_eq!(last[0].event, AuditEvent::SubjectRegistered);
    /// assert_eq!(last[0].subject, Some(db.subject_tag("acct-42")));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// A damaged entry, storage failures.
    pub fn audit_tail(&self, n: usize) -> Result<Vec<AuditEntry>> {
        let mut last = 0u64;
        self.inner.storage.scan(
            Tree::Audit,
            Bound::Unbounded,
            Bound::Unbounded,
            Order::Descending,
            &mut |k, _| {
                last = k.try_into().map(u64::from_be_bytes).unwrap_or(0);
                ControlFlow::Break(())
            },
        )?;
        let from = last
            .saturating_sub(u64::try_from(n).unwrap_or(u64::MAX))
            .saturating_add(1)
            .max(1);
        self.audit_entries(from, n)
    }
}
