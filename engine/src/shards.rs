//! Accounts spread over several stores: [`Shards`].
//!
//! Each shard is a store of its own (a directory, or a namespace of an etcd
//! cluster with its own owner key), bound to its place by
//! [`Config::shard`]. An account and all its end users live in the store
//! its id routes to (`shard_route`), so every erasure stays inside one
//! store: one transaction, one audit chain, one anchor. A node serves the
//! shards it opened; on a cluster, each shard's owner key keeps a second
//! node out of it until the first lets go or its lease lapses, and fences
//! the first if it comes back late.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError, RwLock};

use crate::config::Config;
use crate::db::Db;
use crate::error::{Error, Result};

/// The shard the account `account_id` (and so each of its end users)
/// belongs to among `count` shards: what [`Shards::shard_of`] answers, for
/// tools that open no shard (the CLI's `shard-of`).
///
/// # Errors
/// [`Error::InvalidArgument`] if the id breaks the subject-id rules or
/// `count` is 0.
pub fn shard_of(account_id: &str, count: u32) -> Result<u32> {
    if count == 0 {
        return Err(Error::InvalidArgument {
            what: "shard count",
            detail: "a store split into shards needs at least one shard".into(),
        });
    }
    let canonical = crate::subject_id::canonical(account_id)?;
    Ok(crate::shard_route::shard_of(&canonical, count))
}

/// A node's view of a store split into shards: routes each account to its
/// shard and serves the shards this node opened. `Send + Sync`; share it
/// behind an `Arc`.
///
/// ```
/// use shredkv::{Classes, Config, Shards};
///
/// # let root = tempfile::tempdir()?;
/// # let dir = root.path().to_path_buf();
/// // Four shards; each is a store with its own directory and key file.
/// let shards = Shards::new(4, move |shard| {
///     Config::new(dir.join(format!("shard-{shard}")))
///         .key_file(dir.join(format!("shard-{shard}.keys")))
/// })?;
/// shards.serve_all()?;
///
/// let db = shards.for_account("acct-1")?;
/// db.register_account("acct-1")?;
/// db.register_end_user("user-1", "acct-1")?;
/// db.put("user-1", "message_content", b"m1", b"hello")?;
///
/// // The account's erasure is one store's erasure, end users included.
/// let receipt = shards.for_account("acct-1")?.shred("acct-1", Classes::All)?;
/// assert_eq!(receipt.erased.len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Shards {
    count: u32,
    config_of: Box<dyn Fn(u32) -> Config + Send + Sync>,
    served: RwLock<BTreeMap<u32, Db>>,
    /// Held while a shard is opened (which may wait for another node's
    /// lease), so two calls never open one shard twice; reads of `served`
    /// go on meanwhile.
    opening: Mutex<()>,
}

impl std::fmt::Debug for Shards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shards")
            .field("count", &self.count)
            .field("served", &self.served())
            .finish_non_exhaustive()
    }
}

impl Shards {
    /// `count` shards, shard `i`'s store configured by `config_of(i)` (its
    /// own directory, key provider and, on a cluster, namespace; the
    /// binding to shard `i` of `count` is added). Serves none yet.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `count` is 0.
    pub fn new(
        count: u32,
        config_of: impl Fn(u32) -> Config + Send + Sync + 'static,
    ) -> Result<Shards> {
        if count == 0 {
            return Err(Error::InvalidArgument {
                what: "shard count",
                detail: "a store split into shards needs at least one shard".into(),
            });
        }
        Ok(Shards {
            count,
            config_of: Box::new(config_of),
            served: RwLock::new(BTreeMap::new()),
            opening: Mutex::new(()),
        })
    }

    /// How many shards there are.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The shard the account `account_id` (and so each of its end users)
    /// belongs to.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the id breaks the subject-id rules.
    pub fn shard_of(&self, account_id: &str) -> Result<u32> {
        shard_of(account_id, self.count)
    }

    /// The store of the account's shard, for any operation on the account
    /// or its end users (route an end user by its account).
    ///
    /// # Errors
    /// [`Error::ShardNotServed`] if this node does not serve that shard;
    /// [`Error::InvalidArgument`] for an invalid id.
    pub fn for_account(&self, account_id: &str) -> Result<Db> {
        let shard = self.shard_of(account_id)?;
        self.get(shard).ok_or(Error::ShardNotServed {
            shard,
            shards: self.count,
        })
    }

    /// Opens shard `shard` here, unless it is served already, and returns
    /// its store. On a cluster this waits (up to the owner lease) for a
    /// node that stopped without letting go.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a shard past the count; what
    /// [`Db::open`] reports, notably another node serving it
    /// ([`Error::is_locked`]) and [`Error::WrongShard`] for a store bound
    /// to another shard.
    pub fn serve(&self, shard: u32) -> Result<Db> {
        if shard >= self.count {
            return Err(Error::InvalidArgument {
                what: "shard",
                detail: format!(
                    "there is no shard {shard}: the shards are 0 to {}",
                    self.count - 1
                ),
            });
        }
        let _opening = self.opening.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(db) = self.get(shard) {
            return Ok(db);
        }
        let db = Db::open((self.config_of)(shard).shard(shard, self.count))?;
        self.served
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(shard, db.clone());
        Ok(db)
    }

    /// Opens every shard here (a single node serving them all).
    ///
    /// # Errors
    /// As [`Shards::serve`], for the first shard that fails; the shards
    /// opened before it stay served.
    pub fn serve_all(&self) -> Result<()> {
        for shard in 0..self.count {
            self.serve(shard)?;
        }
        Ok(())
    }

    /// Stops serving `shard`: its store closes (and on a cluster its owner
    /// key is let go) once the last handle returned for it is dropped.
    /// Whether it was served.
    pub fn release(&self, shard: u32) -> bool {
        self.served
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&shard)
            .is_some()
    }

    /// The store of `shard`, if this node serves it.
    pub fn get(&self, shard: u32) -> Option<Db> {
        self.served
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&shard)
            .cloned()
    }

    /// The shards this node serves, in order.
    pub fn served(&self) -> Vec<u32> {
        self.served
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect()
    }
}
