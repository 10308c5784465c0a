//! Everything an etcd cluster's history holds under a key prefix: every
//! value put there since revision 1 (or since the cluster's last
//! compaction). It is what a reader of the cluster through its API can see
//! of a store, old revisions included; the forensic check of the demo on
//! etcd searches it for plaintext. It reads through the API, not the
//! members' files (which may keep compacted pages until a defragment).
//! And the removal of a prefix, for the demo's store when it is done.

use std::time::Duration;

use etcd_client::{Client, DeleteOptions, EventType, WatchOptions};

/// What [`read`] found.
#[derive(Debug, Default)]
pub struct EtcdHistory {
    /// Every key and value put under the prefix, oldest first.
    pub puts: Vec<(Vec<u8>, Vec<u8>)>,
    /// The first revision the history still held, if the cluster was
    /// compacted (the revisions before it were not read).
    pub compacted_before: Option<i64>,
}

/// How long the whole read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the watch is asked whether it has caught up.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Reads every put under `prefix` still in the history of the cluster at
/// `endpoints`, by watching from revision 1 until the watch says it has
/// caught up (a progress notification).
///
/// # Errors
/// A sentence naming what failed: the connection, the watch, or the time.
pub fn read(endpoints: &[String], prefix: &[u8]) -> Result<EtcdHistory, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("start a runtime: {e}"))?;
    runtime.block_on(async {
        tokio::time::timeout(READ_TIMEOUT, watch_all(endpoints, prefix))
            .await
            .map_err(|_| format!("reading the cluster's history took over {READ_TIMEOUT:?}"))?
    })
}

/// Deletes every key under `prefix` in the cluster at `endpoints` (what is
/// left of a store that is not needed any more) and returns how many.
///
/// # Errors
/// A sentence naming what failed.
pub fn delete_prefix(endpoints: &[String], prefix: &[u8]) -> Result<i64, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("start a runtime: {e}"))?;
    runtime.block_on(async {
        let mut client = Client::connect(endpoints, None)
            .await
            .map_err(|e| format!("connect to {}: {e}", endpoints.join(",")))?;
        let deleted = tokio::time::timeout(
            READ_TIMEOUT,
            client.delete(prefix.to_vec(), Some(DeleteOptions::new().with_prefix())),
        )
        .await
        .map_err(|_| format!("the deletion took over {READ_TIMEOUT:?}"))?
        .map_err(|e| format!("delete the prefix: {e}"))?;
        Ok(deleted.deleted())
    })
}

async fn watch_all(endpoints: &[String], prefix: &[u8]) -> Result<EtcdHistory, String> {
    let mut client = Client::connect(endpoints, None)
        .await
        .map_err(|e| format!("connect to {}: {e}", endpoints.join(",")))?;
    let mut history = EtcdHistory::default();
    let mut start = 1;
    'watch: loop {
        let options = WatchOptions::new().with_prefix().with_start_revision(start);
        let mut stream = client
            .watch(prefix.to_vec(), Some(options))
            .await
            .map_err(|e| format!("watch the history: {e}"))?;
        loop {
            let answer = match tokio::time::timeout(PROGRESS_EVERY, stream.message()).await {
                Ok(answer) => answer
                    .map_err(|e| format!("read the history: {e}"))?
                    .ok_or("the cluster ended the watch")?,
                // Nothing came: ask whether the watch has caught up.
                Err(_) => {
                    stream
                        .request_progress()
                        .await
                        .map_err(|e| format!("ask the watch's progress: {e}"))?;
                    continue;
                }
            };
            if answer.canceled() {
                if answer.compact_revision() > start {
                    // Compacted: what is left starts there.
                    start = answer.compact_revision();
                    history.compacted_before = Some(start);
                    history.puts.clear();
                    continue 'watch;
                }
                return Err(format!(
                    "the watch was cancelled: {}",
                    answer.cancel_reason()
                ));
            }
            if answer.created() {
                continue;
            }
            if answer.events().is_empty() {
                // A progress notification: sent once the watch is synced.
                return Ok(history);
            }
            for event in answer.events() {
                if event.event_type() == EventType::Put
                    && let Some(kv) = event.kv()
                {
                    history.puts.push((kv.key().to_vec(), kv.value().to_vec()));
                }
            }
        }
    }
}
