//! Ownership of an etcd store: one node at a time, fenced.
//!
//! The in-process scope gate keeps one process's threads apart; it cannot
//! keep two nodes apart. So a store (one namespace: one shard) is served by
//! the node that holds its **owner key** `namespace ‖ "!owner"`, attached to
//! an etcd lease of [`LEASE_TTL`] that the node keeps alive. Opening takes
//! the key if it is free, waiting up to one lease for a crashed owner's
//! lease to lapse; a store still owned is refused (`is_locked`).
//!
//! **Fencing.** Every read and write of the store is a transaction guarded
//! on the owner key's `mod_revision` being the one this node wrote. A node
//! paused (or partitioned) past its lease finds, when it runs again, that
//! the key is gone or another node's: the guard fails, nothing is written
//! and nothing is read (`is_fenced`). Keep-alives that fail for a while
//! (no quorum, a member down) change nothing by themselves: the cluster,
//! not this node's clock, decides whether the lease lapsed.
//!
//! Closing revokes the lease, so the next owner need not wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};

/// How long the owner key outlives its node's last keep-alive.
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often the lease is kept alive.
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(1);
/// How long one keep-alive may go unanswered before the stream is opened
/// again (a paused member accepts the request and never answers; a new
/// stream may reach another member).
const KEEP_ALIVE_ANSWER: Duration = Duration::from_secs(1);

/// This node's ownership of a store.
pub(crate) struct Owner {
    /// The owner key.
    key: Vec<u8>,
    /// The owner key's `mod_revision` when this node took it: the fence.
    revision: i64,
    lease: i64,
    /// Stops the keep-alive task.
    stop: Arc<AtomicBool>,
}

/// What one attempt at the owner key found.
enum Claim {
    /// Taken: the lease and the owner key's revision.
    Taken(i64, i64),
    /// Held by another node: its description.
    Held(String),
}

/// Why ownership could not be taken.
pub(crate) enum TakeError {
    /// Another node holds the store: its description.
    Held(String),
    /// The cluster failed.
    Cluster(etcd_client::Error),
}

impl From<etcd_client::Error> for TakeError {
    fn from(error: etcd_client::Error) -> Self {
        TakeError::Cluster(error)
    }
}

/// `namespace ‖ "!owner"`: outside every tree's key range (tree keys are
/// `namespace ‖ tree name ‖ 0x00 ‖ key`, and no tree is named `!owner`).
pub(crate) fn owner_key(namespace: &[u8]) -> Vec<u8> {
    [namespace, b"!owner"].concat()
}

impl Owner {
    /// Takes the store for this node: the owner key, if free, under a new
    /// lease; waits up to `wait` for a lapsed owner's key to expire.
    pub(crate) async fn take(
        clients: &[Client],
        namespace: &[u8],
        wait: Duration,
    ) -> Result<Owner, TakeError> {
        let key = owner_key(namespace);
        let me = format!(
            "pid {} on {}",
            std::process::id(),
            std::env::var("HOSTNAME").unwrap_or_else(|_| "this host".into())
        );
        let started = tokio::time::Instant::now();
        let mut attempt = 0usize;
        loop {
            // Each attempt through the next member: one may be down.
            let client = &clients[attempt % clients.len()];
            attempt += 1;
            match Self::claim(client, &key, &me).await {
                Ok(Claim::Taken(lease, revision)) => {
                    let stop = Arc::new(AtomicBool::new(false));
                    tokio::spawn(keep_alive(clients.to_vec(), lease, Arc::clone(&stop)));
                    return Ok(Owner {
                        key,
                        revision,
                        lease,
                        stop,
                    });
                }
                Ok(Claim::Held(holder)) if started.elapsed() >= wait => {
                    return Err(TakeError::Held(holder));
                }
                Err(error) if started.elapsed() >= wait => return Err(error.into()),
                Ok(Claim::Held(_)) | Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// One attempt at the owner key through `client`.
    async fn claim(client: &Client, key: &[u8], me: &str) -> Result<Claim, etcd_client::Error> {
        let mut leases = client.lease_client();
        let ttl = i64::try_from(LEASE_TTL.as_secs()).unwrap_or(10);
        let lease = leases.grant(ttl, None).await?.id();
        let claim = Txn::new()
            .when([Compare::create_revision(key.to_vec(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.to_vec(),
                me.to_string(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.to_vec(), None)]);
        let answer = match client.kv_client().txn(claim).await {
            Ok(answer) => answer,
            Err(error) => {
                let _ = leases.revoke(lease).await;
                return Err(error);
            }
        };
        if answer.succeeded() {
            let revision = answer.header().map_or(0, |h| h.revision());
            return Ok(Claim::Taken(lease, revision));
        }
        let _ = leases.revoke(lease).await;
        let holder = answer
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                etcd_client::TxnOpResponse::Get(get) => get
                    .kvs()
                    .first()
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                _ => None,
            })
            .unwrap_or_else(|| "another node".into());
        Ok(Claim::Held(holder))
    }

    /// The guard every transaction of the store carries.
    pub(crate) fn fence(&self) -> Compare {
        Compare::mod_revision(self.key.clone(), CompareOp::Equal, self.revision)
    }

    /// A read of the owner key, to tell afterwards which guard of a
    /// transaction failed ([`Owner::still_held`]).
    pub(crate) fn read(&self) -> TxnOp {
        TxnOp::get(self.key.clone(), None)
    }

    /// Whether `found` (the answer of [`Owner::read`]) is this node's key.
    pub(crate) fn still_held(&self, found: &etcd_client::GetResponse) -> bool {
        found
            .kvs()
            .first()
            .is_some_and(|kv| kv.mod_revision() == self.revision)
    }

    /// Ends the keep-alives and revokes the lease (the owner key goes with
    /// it), so the next owner need not wait.
    pub(crate) async fn release(&self, client: &Client) {
        self.stop.store(true, Ordering::Release);
        let _ = client.lease_client().revoke(self.lease).await;
    }
}

/// Keeps `lease` alive until `stop`, opening a new keep-alive stream
/// through the next member when one breaks or goes unanswered (a member
/// down or paused). Ends when the cluster says the lease is gone.
async fn keep_alive(clients: Vec<Client>, lease: i64, stop: Arc<AtomicBool>) {
    use tokio::time::timeout;
    let mut attempt = 0usize;
    while !stop.load(Ordering::Acquire) {
        let client = &clients[attempt % clients.len()];
        attempt += 1;
        let opened = timeout(KEEP_ALIVE_ANSWER, client.lease_client().keep_alive(lease)).await;
        let Ok(Ok((mut keeper, mut answers))) = opened else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        while !stop.load(Ordering::Acquire) {
            if keeper.keep_alive().await.is_err() {
                break;
            }
            match timeout(KEEP_ALIVE_ANSWER, answers.message()).await {
                // The lease has lapsed: the fence refuses everything now.
                Ok(Ok(Some(answer))) if answer.ttl() <= 0 => return,
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None) | Err(_)) | Err(_) => break,
            }
            tokio::time::sleep(KEEP_ALIVE_EVERY).await;
        }
    }
}
