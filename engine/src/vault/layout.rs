//! Where a vault entry lives (store format 3).
//!
//! - **Expiry-bucket keys** (bucket ≥ 2) live in tree `vault_days`, the *day
//!   lane*, under `bucket (u32 BE) ‖ subject tag (16) ‖ class (u16 BE) ‖
//!   version (u32 BE)`: the same 26 bytes as the key id, bucket first. The
//!   keys one day's compaction destroys are then neighbours, so their
//!   tombstones rewrite a few pages of the backend's tree instead of one page
//!   per key (on redb the writes a pass needs went from ~50,000 to ~120,000–
//!   170,000 keys/s; docs/benchmarks.md).
//! - **Every other key** (scope keys, open-bucket keys) lives in tree
//!   `vault` under its key id, as in format 2.
//! - **Expiry-bucket keys of a format-2 store** stay in `vault` under their
//!   key id until they are destroyed (at the latest at the end of their day):
//!   every reader here looks in the day lane first, then at the key id's
//!   place, and writes go back where the entry was found.
//!
//! A subject's (or scope's) keys are found by its prefix: in `vault`
//! directly, and in the day lane through tree `seals`, which is keyed by key
//! id and holds a record for every data key from its creation on (written in
//! the same batch as the vault entry, never removed). `seals` is thereby the
//! subject-ordered index of the day lane.

use std::collections::HashSet;
use std::ops::{Bound, ControlFlow};

use shredkv_crypto::KeyId;

use crate::storage::{Order, Storage, StorageError, Tree};

use super::FIRST_DAY_BUCKET;

/// Day-lane keys looked up per read when a prefix's keys are listed.
const LOOKUP_PAGE: usize = 512;

/// Whether `id`'s entry belongs in the day lane.
pub(crate) fn in_day_lane(id: &KeyId) -> bool {
    id.bucket >= FIRST_DAY_BUCKET
}

/// The day-lane key of `id`: bucket ‖ subject tag ‖ class ‖ version.
pub(crate) fn lane_key(id: &KeyId) -> [u8; KeyId::LEN] {
    let mut key = [0u8; KeyId::LEN];
    key[..4].copy_from_slice(&id.bucket.to_be_bytes());
    key[4..20].copy_from_slice(&id.subject.0);
    key[20..22].copy_from_slice(&id.class.to_be_bytes());
    key[22..].copy_from_slice(&id.version.to_be_bytes());
    key
}

/// The key id a day-lane key names.
pub(crate) fn id_from_lane_key(key: &[u8]) -> Option<KeyId> {
    let key: &[u8; KeyId::LEN] = key.try_into().ok()?;
    let mut id = [0u8; KeyId::LEN];
    id[..16].copy_from_slice(&key[4..20]);
    id[16..18].copy_from_slice(&key[20..22]);
    id[18..22].copy_from_slice(&key[..4]);
    id[22..].copy_from_slice(&key[22..]);
    let id = KeyId::from_bytes(&id)?;
    in_day_lane(&id).then_some(id)
}

/// The key id stored under `key` in `tree` (`vault` or `vault_days`).
pub(crate) fn id_at(tree: Tree, key: &[u8]) -> Option<KeyId> {
    match tree {
        Tree::VaultDays => id_from_lane_key(key),
        Tree::Vault => KeyId::from_bytes(key),
        _ => None,
    }
}

/// Where a new entry of `id` is written.
pub(crate) fn home(id: &KeyId) -> (Tree, Vec<u8>) {
    if in_day_lane(id) {
        (Tree::VaultDays, lane_key(id).to_vec())
    } else {
        (Tree::Vault, id.to_bytes().to_vec())
    }
}

/// A stored vault entry and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) tree: Tree,
    pub(crate) key: Vec<u8>,
    pub(crate) value: Vec<u8>,
}

/// The stored entry of `id`: in the day lane, else at its key id's place.
pub(crate) fn locate(storage: &dyn Storage, id: &KeyId) -> Result<Option<Slot>, StorageError> {
    let by_id = id.to_bytes();
    if in_day_lane(id) {
        let key = lane_key(id);
        if let Some(value) = storage.get(Tree::VaultDays, &key)? {
            return Ok(Some(Slot {
                tree: Tree::VaultDays,
                key: key.to_vec(),
                value,
            }));
        }
    }
    Ok(storage.get(Tree::Vault, &by_id)?.map(|value| Slot {
        tree: Tree::Vault,
        key: by_id.to_vec(),
        value,
    }))
}

/// [`locate`] for each of `ids`, in two reads at most (the day lane, then
/// the key id's place for what the lane does not hold).
pub(crate) fn locate_many(
    storage: &dyn Storage,
    ids: &[KeyId],
) -> Result<Vec<Option<Slot>>, StorageError> {
    let mut found: Vec<Option<Slot>> = vec![None; ids.len()];
    let lane: Vec<(usize, [u8; KeyId::LEN])> = ids
        .iter()
        .enumerate()
        .filter(|(_, id)| in_day_lane(id))
        .map(|(i, id)| (i, lane_key(id)))
        .collect();
    read_into(storage, Tree::VaultDays, &lane, &mut found)?;
    let rest: Vec<(usize, [u8; KeyId::LEN])> = found
        .iter()
        .enumerate()
        .filter(|(_, slot)| slot.is_none())
        .map(|(i, _)| (i, ids[i].to_bytes()))
        .collect();
    read_into(storage, Tree::Vault, &rest, &mut found)?;
    Ok(found)
}

/// Reads the stored keys of `wanted` from `tree` in one read and puts what
/// is there into `found` at each one's index.
fn read_into(
    storage: &dyn Storage,
    tree: Tree,
    wanted: &[(usize, [u8; KeyId::LEN])],
    found: &mut [Option<Slot>],
) -> Result<(), StorageError> {
    if wanted.is_empty() {
        return Ok(());
    }
    let keys: Vec<&[u8]> = wanted.iter().map(|(_, k)| k.as_slice()).collect();
    for ((i, key), value) in wanted.iter().zip(storage.get_many(tree, &keys)?) {
        if let (Some(value), Some(slot)) = (value, found.get_mut(*i)) {
            *slot = Some(Slot {
                tree,
                key: key.to_vec(),
                value,
            });
        }
    }
    Ok(())
}

/// A visitor of stored vault entries: `(tree, stored key, value)`.
pub(crate) type VisitStored<'a> = dyn FnMut(Tree, &[u8], &[u8]) -> ControlFlow<()> + 'a;

/// The vault's trees, in the order [`scan_all`] visits them.
pub(crate) const TREES: [Tree; 2] = [Tree::Vault, Tree::VaultDays];

/// Visits every stored vault entry, both trees: `(tree, stored key, value)`
/// ([`id_at`] names the key id).
pub(crate) fn scan_all(
    storage: &dyn Storage,
    visit: &mut VisitStored<'_>,
) -> Result<(), StorageError> {
    for tree in TREES {
        let mut stopped = false;
        storage.scan(
            tree,
            Bound::Unbounded,
            Bound::Unbounded,
            Order::Ascending,
            &mut |k, v| {
                let flow = visit(tree, k, v);
                stopped = flow.is_break();
                flow
            },
        )?;
        if stopped {
            break;
        }
    }
    Ok(())
}

/// Visits the stored entries of every key id beginning with `prefix` (a
/// subject tag, or tag ‖ class): `(id, where it was found)`. Keys in `vault`
/// whose bytes are not a key id are skipped.
pub(crate) fn scan_prefix(
    storage: &dyn Storage,
    prefix: &[u8],
    visit: &mut dyn FnMut(KeyId, Slot) -> ControlFlow<()>,
) -> Result<(), StorageError> {
    let take = prefix.len().min(KeyId::LEN);
    let mut first = [0u8; KeyId::LEN];
    let mut last = [0xFFu8; KeyId::LEN];
    first[..take].copy_from_slice(&prefix[..take]);
    last[..take].copy_from_slice(&prefix[..take]);
    scan_ids_between(storage, &first, &last, visit)
}

/// Visits the entries in `vault` (scope and open-bucket keys; the day lane
/// is not read) of every subject whose tag lies in `first..=last`.
pub(crate) fn scan_vault_subjects(
    storage: &dyn Storage,
    first: &[u8; 16],
    last: &[u8; 16],
    visit: &mut dyn FnMut(KeyId, Slot) -> ControlFlow<()>,
) -> Result<(), StorageError> {
    let (low, high) = tag_bounds(&[], first, last);
    scan_slots(storage, Tree::Vault, &low, &high, visit)
}

/// Visits the day-lane entries of expiry bucket `bucket` whose subject's
/// tag lies in `first..=last` (one range of the lane, which is keyed by
/// bucket, then tag).
pub(crate) fn scan_day_subjects(
    storage: &dyn Storage,
    bucket: u32,
    first: &[u8; 16],
    last: &[u8; 16],
    visit: &mut dyn FnMut(KeyId, Slot) -> ControlFlow<()>,
) -> Result<(), StorageError> {
    let (low, high) = tag_bounds(&bucket.to_be_bytes(), first, last);
    scan_slots(storage, Tree::VaultDays, &low, &high, visit)
}

/// As [`scan_day_subjects`], lending each entry's stored value instead of
/// copying it: for a scan that only looks (is any key of the day live?).
pub(crate) fn scan_day_values(
    storage: &dyn Storage,
    bucket: u32,
    first: &[u8; 16],
    last: &[u8; 16],
    visit: &mut dyn FnMut(KeyId, &[u8]) -> ControlFlow<()>,
) -> Result<(), StorageError> {
    let (low, high) = tag_bounds(&bucket.to_be_bytes(), first, last);
    storage.scan(
        Tree::VaultDays,
        Bound::Included(&low),
        Bound::Included(&high),
        Order::Ascending,
        &mut |k, v| match id_at(Tree::VaultDays, k) {
            Some(id) => visit(id, v),
            None => ControlFlow::Continue(()),
        },
    )
}

/// The 26-byte bounds of the keys `lead ‖ tag ‖ …` with a tag in
/// `first..=last` (`lead` empty in `vault`, the bucket in the lane).
fn tag_bounds(
    lead: &[u8],
    first: &[u8; 16],
    last: &[u8; 16],
) -> ([u8; KeyId::LEN], [u8; KeyId::LEN]) {
    let mut low = [0u8; KeyId::LEN];
    let mut high = [0xFFu8; KeyId::LEN];
    low[..lead.len()].copy_from_slice(lead);
    high[..lead.len()].copy_from_slice(lead);
    low[lead.len()..lead.len() + 16].copy_from_slice(first);
    high[lead.len()..lead.len() + 16].copy_from_slice(last);
    (low, high)
}

/// Visits the entries of `tree` in `low..=high` that name a key id.
fn scan_slots(
    storage: &dyn Storage,
    tree: Tree,
    low: &[u8; KeyId::LEN],
    high: &[u8; KeyId::LEN],
    visit: &mut dyn FnMut(KeyId, Slot) -> ControlFlow<()>,
) -> Result<(), StorageError> {
    storage.scan(
        tree,
        Bound::Included(low),
        Bound::Included(high),
        Order::Ascending,
        &mut |k, v| match id_at(tree, k) {
            Some(id) => visit(
                id,
                Slot {
                    tree,
                    key: k.to_vec(),
                    value: v.to_vec(),
                },
            ),
            None => ControlFlow::Continue(()),
        },
    )
}

/// Visits the stored entries of every key id in `first..=last` (key-id
/// bytes): in `vault` directly, in the day lane through `seals`.
fn scan_ids_between(
    storage: &dyn Storage,
    first: &[u8; KeyId::LEN],
    last: &[u8; KeyId::LEN],
    visit: &mut dyn FnMut(KeyId, Slot) -> ControlFlow<()>,
) -> Result<(), StorageError> {
    let mut stopped = false;
    let mut seen_in_vault: HashSet<KeyId> = HashSet::new();
    storage.scan(
        Tree::Vault,
        Bound::Included(first),
        Bound::Included(last),
        Order::Ascending,
        &mut |k, v| {
            let Some(id) = KeyId::from_bytes(k) else {
                return ControlFlow::Continue(());
            };
            if in_day_lane(&id) {
                seen_in_vault.insert(id);
            }
            let flow = visit(
                id,
                Slot {
                    tree: Tree::Vault,
                    key: k.to_vec(),
                    value: v.to_vec(),
                },
            );
            stopped = flow.is_break();
            flow
        },
    )?;
    if stopped {
        return Ok(());
    }
    // The day lane's keys in the range, named by their seal records.
    let mut lane_ids: Vec<KeyId> = Vec::new();
    storage.scan(
        Tree::Seals,
        Bound::Included(first),
        Bound::Included(last),
        Order::Ascending,
        &mut |k, _| {
            if let Some(id) = KeyId::from_bytes(k)
                && in_day_lane(&id)
                && !seen_in_vault.contains(&id)
            {
                lane_ids.push(id);
            }
            ControlFlow::Continue(())
        },
    )?;
    for page in lane_ids.chunks(LOOKUP_PAGE) {
        let wanted: Vec<(usize, [u8; KeyId::LEN])> =
            page.iter().map(lane_key).enumerate().collect();
        let mut found: Vec<Option<Slot>> = vec![None; page.len()];
        read_into(storage, Tree::VaultDays, &wanted, &mut found)?;
        for (id, slot) in page.iter().zip(found) {
            if let Some(slot) = slot
                && visit(*id, slot).is_break()
            {
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shredkv_crypto::SubjectTag;

    fn id(bucket: u32, version: u32) -> KeyId {
        KeyId {
            subject: SubjectTag([7; 16]),
            class: 3,
            bucket,
            version,
        }
    }

    #[test]
    fn lane_keys_order_by_day_first_and_name_their_key_id() {
        let early = lane_key(&KeyId {
            subject: SubjectTag([0xFF; 16]),
            ..id(FIRST_DAY_BUCKET, 9)
        });
        let late = lane_key(&KeyId {
            subject: SubjectTag([0; 16]),
            ..id(FIRST_DAY_BUCKET + 1, 1)
        });
        assert!(
            early < late,
            "a later day sorts after every subject of an earlier one"
        );
        for bucket in [FIRST_DAY_BUCKET, 400, u32::MAX] {
            let key = id(bucket, 5);
            assert_eq!(id_from_lane_key(&lane_key(&key)), Some(key));
            assert_eq!(id_at(Tree::VaultDays, &lane_key(&key)), Some(key));
            assert_eq!(home(&key).0, Tree::VaultDays);
        }
        // Scope and open-bucket keys stay under their key id.
        for bucket in [0, 1] {
            let key = id(bucket, 5);
            assert!(!in_day_lane(&key));
            assert_eq!(home(&key), (Tree::Vault, key.to_bytes().to_vec()));
            assert_eq!(id_from_lane_key(&lane_key(&key)), None);
        }
        assert_eq!(id_from_lane_key(&[0; 25]), None);
    }
}
