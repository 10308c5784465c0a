//! Ownership of a TiKV store: one node at a time, fenced — the contract of
//! `etcd_owner`, built from what TiKV has (transactions, a cluster clock)
//! since it has no leases.
//!
//! The **owner key** `namespace ‖ "!owner"` holds `token ‖ expires ‖
//! holder`: a random token of the node that took the store, the time its
//! ownership lapses in the cluster's clock (the physical part of a PD
//! timestamp, in milliseconds, so no node's own clock decides), and a
//! description of the node for error messages. The owner renews `expires`
//! every [`RENEW_EVERY`]; opening takes the key when it is absent or has
//! lapsed, waiting up to one lease for a crashed owner's to lapse.
//!
//! **Fencing.** Every transaction of the store reads the owner key at its
//! start timestamp and goes on only if the key holds this node's token and
//! has not lapsed at that timestamp. A write transaction also locks the
//! key (`lock_keys`): a takeover committed after the write's start makes
//! the write's commit fail (a write conflict), so a write never lands under
//! a new owner. A node paused past its lease stays fenced: its renewal
//! finds the lease lapsed and gives up, as an etcd lease that lapsed is
//! gone. Closing deletes the key, so the next owner need not wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::TryRng as _;
use tikv_client::{Transaction, TransactionClient};

use super::tikv_backend::transaction_options;

/// How long ownership outlives its node's last renewal.
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often the owner renews: several renewals fit in one lease, so a
/// renewal lost to a write conflict or a slow member costs nothing.
const RENEW_EVERY: Duration = Duration::from_secs(2);
/// Bytes of the owner's random token.
const TOKEN_LEN: usize = 16;

/// `namespace ‖ "!owner"`: outside every tree's key range (tree keys are
/// `namespace ‖ tree name ‖ 0x00 ‖ key`, and no tree is named `!owner`).
pub(crate) fn owner_key(namespace: &[u8]) -> Vec<u8> {
    [namespace, b"!owner"].concat()
}

/// The owner key's value.
struct Record {
    token: [u8; TOKEN_LEN],
    /// When ownership lapses: PD physical time, milliseconds.
    expires_ms: i64,
    holder: String,
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TOKEN_LEN + 8 + self.holder.len());
        out.extend_from_slice(&self.token);
        out.extend_from_slice(&self.expires_ms.to_be_bytes());
        out.extend_from_slice(self.holder.as_bytes());
        out
    }

    /// `None` for a value this module did not write; it is treated as
    /// held by an unknown node (never taken over silently).
    fn decode(value: &[u8]) -> Option<Record> {
        let token = value.get(..TOKEN_LEN)?.try_into().ok()?;
        let expires = value.get(TOKEN_LEN..TOKEN_LEN + 8)?.try_into().ok()?;
        Some(Record {
            token,
            expires_ms: i64::from_be_bytes(expires),
            holder: String::from_utf8_lossy(value.get(TOKEN_LEN + 8..)?).into_owned(),
        })
    }
}

/// The cluster time `txn` reads at, in PD physical milliseconds.
fn read_at_ms(txn: &Transaction) -> i64 {
    txn.start_timestamp().physical
}

/// `now + LEASE_TTL`, in PD physical milliseconds.
fn lapse_after(now_ms: i64) -> i64 {
    now_ms.saturating_add(i64::try_from(LEASE_TTL.as_millis()).unwrap_or(i64::MAX))
}

/// Why ownership could not be taken.
pub(crate) enum TakeError {
    /// Another node holds the store: its description.
    Held(String),
    /// The cluster failed.
    Cluster(tikv_client::Error),
    /// The operating system's generator failed (no token can be made).
    Random(String),
}

impl From<tikv_client::Error> for TakeError {
    fn from(error: tikv_client::Error) -> Self {
        TakeError::Cluster(error)
    }
}

/// What the fence found in a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fence {
    /// This node owns the store at the transaction's timestamp.
    Owned,
    /// Another node's key, no key, or this node's key lapsed.
    Lost,
}

/// This node's ownership of a store.
pub(crate) struct Owner {
    key: Vec<u8>,
    token: [u8; TOKEN_LEN],
    /// Stops the renewals.
    stop: Arc<AtomicBool>,
}

impl Owner {
    /// Takes the store for this node: the owner key, if absent or lapsed;
    /// waits up to `wait` for a held key to lapse.
    pub(crate) async fn take(
        client: &TransactionClient,
        namespace: &[u8],
        wait: Duration,
    ) -> Result<Owner, TakeError> {
        let key = owner_key(namespace);
        let mut token = [0u8; TOKEN_LEN];
        // From the OS's generator: two nodes must never share a token.
        if let Err(error) = rand::rngs::SysRng.try_fill_bytes(&mut token) {
            return Err(TakeError::Random(error.to_string()));
        }
        let holder = format!(
            "pid {} on {}",
            std::process::id(),
            std::env::var("HOSTNAME").unwrap_or_else(|_| "this host".into())
        );
        let started = tokio::time::Instant::now();
        loop {
            let outcome = Self::claim(client, &key, token, &holder).await;
            match outcome {
                Ok(None) => {
                    let stop = Arc::new(AtomicBool::new(false));
                    tokio::spawn(renew(
                        client.clone(),
                        key.clone(),
                        token,
                        holder,
                        Arc::clone(&stop),
                    ));
                    return Ok(Owner { key, token, stop });
                }
                Ok(Some(held_by)) if started.elapsed() >= wait => {
                    return Err(TakeError::Held(held_by));
                }
                Err(error) if started.elapsed() >= wait => return Err(error.into()),
                // Held, or a conflict with another node's claim: look again.
                Ok(Some(_)) | Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// One attempt at the owner key: `None` when taken, else who holds it.
    async fn claim(
        client: &TransactionClient,
        key: &[u8],
        token: [u8; TOKEN_LEN],
        holder: &str,
    ) -> Result<Option<String>, tikv_client::Error> {
        let mut txn = client.begin_with_options(transaction_options()).await?;
        let now = read_at_ms(&txn);
        let current = match txn.get(key.to_vec()).await {
            Ok(current) => current,
            Err(error) => {
                let _ = txn.rollback().await;
                return Err(error);
            }
        };
        if let Some(value) = current {
            match Record::decode(&value) {
                Some(held) if held.expires_ms > now => {
                    let _ = txn.rollback().await;
                    return Ok(Some(held.holder));
                }
                Some(_) => {} // lapsed: free to take
                None => {
                    let _ = txn.rollback().await;
                    return Ok(Some(
                        "a node whose owner record this version cannot read".into(),
                    ));
                }
            }
        }
        let mine = Record {
            token,
            expires_ms: lapse_after(now),
            holder: holder.to_string(),
        };
        txn.put(key.to_vec(), mine.encode()).await?;
        // Two nodes claiming at once: one commit fails (a write conflict).
        txn.commit().await?;
        Ok(None)
    }

    /// The owner key, which every transaction reads (and a write locks).
    pub(crate) fn key(&self) -> &[u8] {
        &self.key
    }

    /// Whether `found` (the owner key's value in a transaction that read
    /// at `at_ms`, PD physical milliseconds) says this node owns the store.
    pub(crate) fn check(&self, found: Option<&[u8]>, at_ms: i64) -> Fence {
        match found.and_then(Record::decode) {
            Some(record) if record.token == self.token && record.expires_ms > at_ms => Fence::Owned,
            _ => Fence::Lost,
        }
    }

    /// [`Owner::check`] inside `txn`: reads the owner key at its start.
    pub(crate) async fn check_in(&self, txn: &mut Transaction) -> tikv_client::Result<Fence> {
        let found = txn.get(self.key.clone()).await?;
        Ok(self.check(found.as_deref(), read_at_ms(txn)))
    }

    /// Ends the renewals and deletes the owner key if it is still this
    /// node's, so the next owner need not wait.
    pub(crate) async fn release(&self, client: &TransactionClient) {
        self.stop.store(true, Ordering::Release);
        let Ok(mut txn) = client.begin_with_options(transaction_options()).await else {
            return;
        };
        let owned = matches!(self.check_in(&mut txn).await, Ok(Fence::Owned));
        if owned && txn.delete(self.key.clone()).await.is_ok() {
            let _ = txn.commit().await;
        } else {
            let _ = txn.rollback().await;
        }
    }
}

/// Renews the owner key every [`RENEW_EVERY`] until `stop`. Gives up for
/// good once the key is another node's or has lapsed: the fence refuses
/// everything from then on, as it does when an etcd lease lapsed.
async fn renew(
    client: TransactionClient,
    key: Vec<u8>,
    token: [u8; TOKEN_LEN],
    holder: String,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Acquire) {
        tokio::time::sleep(RENEW_EVERY).await;
        if stop.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut txn) = client.begin_with_options(transaction_options()).await else {
            continue; // the cluster did not answer: try again next time
        };
        let now = read_at_ms(&txn);
        let current = match txn.get(key.clone()).await {
            Ok(current) => current,
            Err(_) => {
                let _ = txn.rollback().await;
                continue;
            }
        };
        let still_mine = current
            .as_deref()
            .and_then(Record::decode)
            .is_some_and(|r| r.token == token && r.expires_ms > now);
        if !still_mine {
            let _ = txn.rollback().await;
            return;
        }
        let renewed = Record {
            token,
            expires_ms: lapse_after(now),
            holder: holder.clone(),
        };
        if txn.put(key.clone(), renewed.encode()).await.is_ok() {
            // A conflict with a write of the store in flight: next time.
            let _ = txn.commit().await;
        } else {
            let _ = txn.rollback().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record round-trips, and the fence accepts only this token
    /// before its lapse.
    #[test]
    fn the_fence_accepts_only_this_token_before_it_lapses() {
        let owner = Owner {
            key: owner_key(b"ns/"),
            token: [7; TOKEN_LEN],
            stop: Arc::new(AtomicBool::new(false)),
        };
        let mine = Record {
            token: [7; TOKEN_LEN],
            expires_ms: 1_000,
            holder: "pid 1 on a".into(),
        }
        .encode();
        let theirs = Record {
            token: [8; TOKEN_LEN],
            expires_ms: 5_000,
            holder: "pid 2 on b".into(),
        }
        .encode();
        assert_eq!(owner.check(Some(&mine), 999), Fence::Owned);
        assert_eq!(owner.check(Some(&mine), 1_000), Fence::Lost, "lapsed");
        assert_eq!(owner.check(Some(&theirs), 0), Fence::Lost);
        assert_eq!(owner.check(None, 0), Fence::Lost);
        assert_eq!(owner.check(Some(b"short"), 0), Fence::Lost);
        let decoded = Record::decode(&theirs).expect("decodes");
        assert_eq!(decoded.holder, "pid 2 on b");
        assert_eq!(decoded.expires_ms, 5_000);
        assert_eq!(owner.key(), b"ns/!owner");
    }
}
