//! Which shard an account belongs to, and the record that binds a store to
//! its shard.
//!
//! **Routing.** An account and its end users live in one store, so an
//! erasure of the account is one store's erasure. The account's id, in its
//! canonical form (`subject_id`), picks the shard:
//!
//! ```text
//! key   = first 8 bytes, big-endian, of SHA-256("shredkv/shard/v1" ‖ 0x00 ‖ canonical id)
//! shard = jump(key, shards)      (Lamping & Veach, "A Fast, Minimal Memory,
//!                                 Consistent Hash Algorithm", 2014)
//! ```
//!
//! The hash is unkeyed on purpose: every node must route alike without a
//! shared secret, and each store's subject tags are keyed by that store's
//! own secret, so a tag cannot route. Going from `n` shards to `n + 1`
//! would move only the accounts that land on the new shard (about one in
//! `n + 1`); moving them is not built, so a store refuses to be opened as
//! part of another shard count (below).
//!
//! **Binding.** A store that serves a shard keeps meta `shard` =
//! v1 ‖ index u32 ‖ count u32 (big-endian; written through the sealed view,
//! so it is authenticated like the rest of the control plane). An open that
//! names a shard creates it in a store with no subjects, and refuses a
//! store bound otherwise, or one that holds subjects no routing placed; an
//! open that names none adopts it. A bound store refuses to register an
//! account that routes elsewhere.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::storage::{Durability, Storage, Tree, WriteBatch};

/// Domain separation of the routing hash.
const ROUTE_DOMAIN: &[u8] = b"shredkv/shard/v1\0";
/// The meta key of a store's shard binding.
pub(crate) const SHARD_META_KEY: &[u8] = b"shard";
const BINDING_VERSION: u8 = 1;
const BINDING_LEN: usize = 9;

/// A store's place among the shards: shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ShardBinding {
    pub(crate) index: u32,
    pub(crate) count: u32,
}

impl ShardBinding {
    pub(crate) fn encode(self) -> [u8; BINDING_LEN] {
        let mut bytes = [0u8; BINDING_LEN];
        bytes[0] = BINDING_VERSION;
        bytes[1..5].copy_from_slice(&self.index.to_be_bytes());
        bytes[5..9].copy_from_slice(&self.count.to_be_bytes());
        bytes
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<ShardBinding> {
        let bytes: &[u8; BINDING_LEN] = bytes.try_into().ok()?;
        if bytes[0] != BINDING_VERSION {
            return None;
        }
        let index = u32::from_be_bytes(bytes[1..5].try_into().ok()?);
        let count = u32::from_be_bytes(bytes[5..9].try_into().ok()?);
        (count > 0 && index < count).then_some(ShardBinding { index, count })
    }
}

/// The shard of the account whose canonical id is `canonical_id`, among
/// `count` shards (`count` ≥ 1).
pub(crate) fn shard_of(canonical_id: &str, count: u32) -> u32 {
    let digest = Sha256::new()
        .chain_update(ROUTE_DOMAIN)
        .chain_update(canonical_id.as_bytes())
        .finalize();
    let mut key_bytes = [0u8; 8];
    key_bytes.copy_from_slice(&digest[..8]);
    jump(u64::from_be_bytes(key_bytes), count)
}

/// Jump consistent hash: a bucket in `0..buckets` for `key`, such that
/// growing `buckets` by one moves a key only into the new bucket.
fn jump(mut key: u64, buckets: u32) -> u32 {
    let mut bucket: i64 = -1;
    let mut next: i64 = 0;
    while next < i64::from(buckets) {
        bucket = next;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        // The paper's step: (b + 1) * 2^31 / ((key >> 33) + 1).
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            reason = "the algorithm is defined on doubles; the quotient is below `buckets` or past it"
        )]
        {
            next = ((bucket + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
        }
    }
    u32::try_from(bucket).unwrap_or(0)
}

/// Reads the store's binding, and makes it agree with `asked` (the shard
/// the open names, if any): creates it in a store without subjects,
/// refuses a store bound otherwise or holding subjects no routing placed.
/// Returns the binding the store serves under.
pub(crate) fn bind(
    storage: &dyn Storage,
    asked: Option<ShardBinding>,
    path: &Path,
) -> Result<Option<ShardBinding>> {
    let (serves, unbound) = check(storage, asked, path)?;
    if unbound && let Some(binding) = serves {
        let mut batch = WriteBatch::new();
        batch.put(Tree::Meta, SHARD_META_KEY, binding.encode().to_vec());
        storage.apply(&batch, Durability::Durable)?;
    }
    Ok(serves)
}

/// What [`bind`] would do, writing nothing: the binding the store would
/// serve under, and whether it is still to be written (a store without
/// subjects, not bound yet); or the refusal. A restore asks it of the
/// backup before anything is copied.
pub(crate) fn check(
    storage: &dyn Storage,
    asked: Option<ShardBinding>,
    path: &Path,
) -> Result<(Option<ShardBinding>, bool)> {
    let stored = match storage.get(Tree::Meta, SHARD_META_KEY)? {
        None => None,
        Some(bytes) => Some(ShardBinding::decode(&bytes).ok_or_else(|| Error::Corrupt {
            location: Box::new(crate::error::Location {
                tree: Tree::Meta.name(),
                subject: None,
                class: None,
                key_hex: String::from_utf8_lossy(SHARD_META_KEY).into_owned(),
            }),
            source: shredkv_crypto::FormatError::InvalidField {
                what: "shard binding",
                detail: "not v1 ‖ index u32 ‖ count u32 with index < count",
            },
        })?),
    };
    match (stored, asked) {
        (stored, None) => Ok((stored, false)),
        (Some(stored), Some(asked)) if stored == asked => Ok((Some(stored), false)),
        (Some(stored), Some(asked)) => Err(Error::WrongShard {
            path: path.to_path_buf(),
            subject: None,
            store: (stored.index, stored.count),
            asked: (asked.index, asked.count),
        }),
        (None, Some(asked)) => {
            let mut has_subjects = false;
            storage.scan(
                Tree::Subjects,
                std::ops::Bound::Unbounded,
                std::ops::Bound::Unbounded,
                crate::storage::Order::Ascending,
                &mut |_, _| {
                    has_subjects = true;
                    std::ops::ControlFlow::Break(())
                },
            )?;
            if has_subjects {
                return Err(Error::InvalidArgument {
                    what: "shard",
                    detail: format!(
                        "the store at {} holds subjects and serves no shard: its accounts were \
                         not routed, so it cannot become shard {} of {}. Open it without a \
                         shard, or export its subjects into the stores of their shards",
                        path.display(),
                        asked.index,
                        asked.count
                    ),
                });
            }
            Ok((Some(asked), true))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Growing the shard count moves an account only into the new shard,
    /// and about one account in `n + 1`.
    #[test]
    fn growing_the_count_moves_accounts_only_to_the_new_shard() {
        for count in [1u32, 2, 3, 7, 16] {
            let mut moved = 0;
            for i in 0..4000 {
                let id = format!("account-{i}");
                let before = shard_of(&id, count);
                let after = shard_of(&id, count + 1);
                assert!(before < count && after < count + 1);
                if before != after {
                    assert_eq!(after, count, "{id} moved between old shards");
                    moved += 1;
                }
            }
            let expected = 4000.0 / f64::from(count + 1);
            assert!(
                (f64::from(moved) - expected).abs() < expected * 0.2,
                "{moved} of 4000 moved going to {} shards",
                count + 1
            );
        }
    }

    /// Accounts spread evenly: each of 8 shards gets its share of 16,000
    /// ids within 10 %.
    #[test]
    fn accounts_spread_evenly() {
        let mut per_shard = [0u32; 8];
        for i in 0..16_000 {
            per_shard[shard_of(&format!("acct-{i}"), 8) as usize] += 1;
        }
        for (shard, n) in per_shard.iter().enumerate() {
            assert!((1800..=2200).contains(n), "shard {shard}: {n}");
        }
    }

    #[test]
    fn a_binding_decodes_only_when_well_formed() {
        let binding = ShardBinding { index: 3, count: 8 };
        assert_eq!(ShardBinding::decode(&binding.encode()), Some(binding));
        assert_eq!(ShardBinding::decode(&[1, 0, 0, 0, 8, 0, 0, 0, 8]), None);
        assert_eq!(ShardBinding::decode(&[1, 0, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(ShardBinding::decode(&[2, 0, 0, 0, 0, 0, 0, 0, 1]), None);
        assert_eq!(ShardBinding::decode(&[1, 0, 0]), None);
    }
}
