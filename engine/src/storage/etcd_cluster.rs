//! A real 3-member etcd cluster on loopback ports for the etcd backend's
//! tests: each member an `etcd` process of its own, in its own directory
//! under a temporary directory, started once per test process and stopped
//! by process id when that process ends (a watchdog shell per member kills
//! it and removes its directory once the test process is gone, so a failed
//! or interrupted run leaves neither a member nor its files behind).
//!
//! `etcd` comes from Debian's `etcd-server` (`.ci/run` installs it when
//! missing). The members allow transactions of up to [`MAX_TXN_OPS`]
//! operations; the engine's batches are larger than etcd's default 128.
//! The benches reach it as `shredkv::internal::EtcdTestCluster`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::etcd_backend::{EtcdStorage, EtcdTarget};
use super::{Storage, Tree};

/// The members' `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 4096;
/// How long the cluster may take to elect a leader and answer.
const START_WAIT: Duration = Duration::from_secs(30);

/// A running cluster.
pub struct Cluster {
    /// Client URLs of the members.
    pub endpoints: Vec<String>,
    /// The members' process ids.
    pub(crate) pids: Vec<u32>,
    /// The members' watchdog shells.
    watchdogs: Vec<std::process::Child>,
    /// The members' directories (data and logs), removed with the cluster
    /// (the shared cluster's by the members' watchdogs).
    dir: PathBuf,
}

/// A free loopback port (bound, then released for the member to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

impl Cluster {
    /// The cluster of this test process, started on first use.
    pub fn shared() -> &'static Cluster {
        static CLUSTER: OnceLock<Cluster> = OnceLock::new();
        CLUSTER.get_or_init(|| Cluster::start(None))
    }

    /// A cluster of its own whose members refuse writes past
    /// `quota_bytes` of database (`--quota-backend-bytes`), stopped when
    /// dropped.
    pub fn with_quota(quota_bytes: u64) -> Cluster {
        Cluster::start(Some(quota_bytes))
    }

    fn start(quota_bytes: Option<u64>) -> Cluster {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "shredkv-etcd-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a directory for the cluster");
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let initial = initial.join(",");
        let me = std::process::id().to_string();
        let mut endpoints = Vec::new();
        let mut pids = Vec::new();
        let mut watchdogs = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let member_dir = dir.join(format!("m{i}"));
            std::fs::create_dir_all(&member_dir).expect("a member directory");
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let log = std::fs::File::create(member_dir.join("etcd.log")).expect("a member log");
            // The shell starts the member, prints its pid, and once the test
            // process (`$1`) is gone kills it and removes its directory
            // (`$2`; etcd preallocates 64 MiB of log per member, and the
            // shared cluster's directory is never dropped).
            let watchdog = r#"parent=$1; dir=$2; shift 2; "$@" & member=$!; echo $member; while kill -0 "$parent" 2>/dev/null && kill -0 "$member" 2>/dev/null; do sleep 0.5; done; kill -9 "$member" 2>/dev/null; wait "$member" 2>/dev/null; rm -rf "$dir"; rmdir "$(dirname "$dir")" 2>/dev/null; true"#;
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(watchdog)
                .arg("sh")
                .arg(&me)
                .arg(&member_dir)
                .arg("etcd")
                .args(["--name", &format!("m{i}")])
                .arg("--data-dir")
                .arg(member_dir.join("data"))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &format!("shredkv-test-{me}")])
                .args(["--max-txn-ops", &MAX_TXN_OPS.to_string()])
                .args(
                    quota_bytes
                        .map(|q| vec!["--quota-backend-bytes".to_string(), q.to_string()])
                        .unwrap_or_default(),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start `etcd` ({e}): install Debian's etcd-server (.ci/run does)")
                });
            let mut line = String::new();
            if let Some(stdout) = child.stdout.take() {
                use std::io::BufRead;
                std::io::BufReader::new(stdout)
                    .read_line(&mut line)
                    .expect("the watchdog prints the member's pid");
            }
            pids.push(line.trim().parse().expect("a member pid"));
            watchdogs.push(child);
            endpoints.push(client_url);
        }
        let cluster = Cluster {
            endpoints,
            pids,
            watchdogs,
            dir,
        };
        cluster.wait_until_serving();
        cluster
    }

    /// Waits until the cluster commits a write.
    fn wait_until_serving(&self) {
        let started = Instant::now();
        loop {
            let probe = self.open(Path::new("cluster-probe"));
            let ready = probe.and_then(|store| {
                let mut batch = super::WriteBatch::new();
                batch.put(Tree::Meta, b"probe".to_vec(), b"1".to_vec());
                store.apply(&batch, super::Durability::Durable)
            });
            match ready {
                Ok(()) => return,
                Err(err) if started.elapsed() > START_WAIT => {
                    panic!("the etcd cluster did not serve within {START_WAIT:?}: {err}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// A store of this cluster in the namespace named by `dir` (the same
    /// `dir` reopens the same store).
    pub(crate) fn open(&self, dir: &Path) -> Result<EtcdStorage, super::StorageError> {
        let mut namespace = b"shredkv-test/".to_vec();
        namespace.extend_from_slice(dir.as_os_str().as_encoded_bytes());
        namespace.push(b'/');
        EtcdStorage::connect(EtcdTarget {
            endpoints: self.endpoints.clone(),
            namespace,
            max_txn_ops: MAX_TXN_OPS,
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for pid in &self.pids {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        for watchdog in &mut self.watchdogs {
            let _ = watchdog.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
