//! A real 3-member etcd cluster on loopback ports for the etcd backend's
//! tests: each member an `etcd` process of its own, in its own directory
//! under a temporary directory, stopped by process id. A watchdog shell per
//! member kills it (by the pid in its directory's `pid` file) and removes
//! its directory once the test process is gone, so a failed or interrupted
//! run leaves neither a member nor its files behind.
//!
//! The failure tests stop, pause and restart members of a cluster of their
//! own ([`Cluster::kill`], [`Cluster::pause`], [`Cluster::restart`],
//! [`Cluster::leader`]); the shared cluster is never disturbed.
//!
//! `etcd` comes from Debian's `etcd-server` (`.ci/run` installs it when
//! missing). The members allow transactions of up to [`MAX_TXN_OPS`]
//! operations; the engine's batches are larger than etcd's default 128.
//! The benches and integration tests reach it as
//! `shredkv::internal::EtcdTestCluster`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::etcd_backend::{EtcdStorage, EtcdTarget};
use super::{Storage, Tree};

/// The members' `--max-txn-ops` (but see [`Cluster::with_default_txn_limit`]).
pub const MAX_TXN_OPS: usize = 4096;
/// etcd's own default `--max-txn-ops`.
const ETCD_DEFAULT_MAX_TXN_OPS: usize = 128;
/// How long the cluster may take to elect a leader and answer.
const START_WAIT: Duration = Duration::from_secs(30);

/// One member: how to start it again, and its running process.
struct Member {
    name: String,
    client_url: String,
    peer_url: String,
    dir: PathBuf,
    /// The running `etcd`, `None` while killed.
    process: Mutex<Option<Child>>,
}

/// A running cluster.
pub struct Cluster {
    /// Client URLs of the members, in member order.
    pub endpoints: Vec<String>,
    members: Vec<Member>,
    /// `--initial-cluster`, the same for every start.
    initial_cluster: String,
    token: String,
    quota_bytes: Option<u64>,
    /// The members' `--max-txn-ops`.
    pub max_txn_ops: usize,
    /// The members' `--max-request-bytes`, when not etcd's default.
    pub max_request_bytes: Option<usize>,
    /// The members' watchdog shells.
    watchdogs: Vec<Child>,
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

/// Copies directory `from` to `to` with everything in it.
fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("`cp` runs");
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

/// Sends `signal` (`-9`, `-STOP`, `-CONT`) to `pid`.
fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("`kill` runs");
    assert!(status.success(), "kill {signal} {pid} failed");
}

impl Cluster {
    /// The cluster of this test process, started on first use.
    pub fn shared() -> &'static Cluster {
        static CLUSTER: OnceLock<Cluster> = OnceLock::new();
        CLUSTER.get_or_init(|| Cluster::start(None, MAX_TXN_OPS, None))
    }

    /// A cluster of its own, stopped when dropped: for tests that stop or
    /// pause its members.
    pub fn own() -> Cluster {
        Cluster::start(None, MAX_TXN_OPS, None)
    }

    /// A cluster of its own with etcd's own default of 128 operations per
    /// transaction, stopped when dropped.
    pub fn with_default_txn_limit() -> Cluster {
        Cluster::start(None, ETCD_DEFAULT_MAX_TXN_OPS, None)
    }

    /// A cluster of its own with etcd's default of 128 operations per
    /// transaction whose members refuse requests larger than
    /// `max_request_bytes` (`--max-request-bytes`), stopped when dropped.
    pub fn with_request_limit(max_request_bytes: usize) -> Cluster {
        Cluster::start(None, ETCD_DEFAULT_MAX_TXN_OPS, Some(max_request_bytes))
    }

    /// A cluster of its own whose members refuse writes past
    /// `quota_bytes` of database (`--quota-backend-bytes`), stopped when
    /// dropped.
    pub fn with_quota(quota_bytes: u64) -> Cluster {
        Cluster::start(Some(quota_bytes), MAX_TXN_OPS, None)
    }

    fn start(
        quota_bytes: Option<u64>,
        max_txn_ops: usize,
        max_request_bytes: Option<usize>,
    ) -> Cluster {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "shredkv-etcd-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a directory for the cluster");
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let me = std::process::id().to_string();
        let members: Vec<Member> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| Member {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{client}"),
                peer_url: format!("http://127.0.0.1:{peer}"),
                dir: dir.join(format!("m{i}")),
                process: Mutex::new(None),
            })
            .collect();
        let mut cluster = Cluster {
            endpoints: members.iter().map(|m| m.client_url.clone()).collect(),
            members,
            initial_cluster,
            token: format!("shredkv-test-{me}-{}", dir.display()),
            quota_bytes,
            max_txn_ops,
            max_request_bytes,
            watchdogs: Vec::new(),
            dir,
        };
        for i in 0..cluster.members.len() {
            let member_dir = &cluster.members[i].dir;
            std::fs::create_dir_all(member_dir).expect("a member directory");
            cluster.spawn(i);
            // Once the test process (`$1`) is gone: kill the member by the
            // pid it last ran under and remove its directory (`$2`; etcd
            // preallocates 64 MiB of log per member, and the shared
            // cluster is never dropped).
            let watchdog = r#"parent=$1; dir=$2; while kill -0 "$parent" 2>/dev/null; do sleep 0.5; done; kill -9 "$(cat "$dir/pid")" 2>/dev/null; sleep 0.2; rm -rf "$dir"; rmdir "$(dirname "$dir")" 2>/dev/null; true"#;
            let child = Command::new("sh")
                .arg("-c")
                .arg(watchdog)
                .arg("sh")
                .arg(&me)
                .arg(member_dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("a watchdog shell");
            cluster.watchdogs.push(child);
        }
        cluster.wait_until_serving();
        cluster
    }

    /// Starts member `i` (again: a restarted member rejoins from its data
    /// directory) and records its pid for the watchdog.
    fn spawn(&self, i: usize) {
        let member = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(member.dir.join("etcd.log"))
            .expect("a member log");
        let child = Command::new("etcd")
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(member.dir.join("data"))
            .args(["--listen-client-urls", &member.client_url])
            .args(["--advertise-client-urls", &member.client_url])
            .args(["--listen-peer-urls", &member.peer_url])
            .args(["--initial-advertise-peer-urls", &member.peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .args(["--max-txn-ops", &self.max_txn_ops.to_string()])
            .args(
                self.max_request_bytes
                    .map(|b| vec!["--max-request-bytes".to_string(), b.to_string()])
                    .unwrap_or_default(),
            )
            .args(
                self.quota_bytes
                    .map(|q| vec!["--quota-backend-bytes".to_string(), q.to_string()])
                    .unwrap_or_default(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `etcd` ({e}): install Debian's etcd-server (.ci/run does)")
            });
        std::fs::write(member.dir.join("pid"), child.id().to_string()).expect("a pid file");
        *member.process.lock().expect("member lock") = Some(child);
    }

    /// Kills member `i` with SIGKILL (no shutdown, no flush).
    pub fn kill(&self, i: usize) {
        if let Some(mut child) = self.members[i].process.lock().expect("member lock").take() {
            signal(child.id(), "-9");
            let _ = child.wait();
        }
    }

    /// Starts a killed member `i` again from its data directory.
    pub fn restart(&self, i: usize) {
        assert!(
            self.members[i]
                .process
                .lock()
                .expect("member lock")
                .is_none(),
            "member {i} is running"
        );
        self.spawn(i);
    }

    /// Stops member `i` with SIGSTOP: it neither answers nor times out.
    pub fn pause(&self, i: usize) {
        signal(self.pid(i), "-STOP");
    }

    /// Resumes a paused member `i` (SIGCONT).
    pub fn resume(&self, i: usize) {
        signal(self.pid(i), "-CONT");
    }

    /// Kills every member (SIGKILL).
    pub fn kill_all(&self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }

    /// Starts every killed member again and waits until the cluster serves.
    pub fn restart_all(&self) {
        for i in 0..self.members.len() {
            self.restart(i);
        }
        self.wait_until_serving();
    }

    /// Copies every member's data directory under `dest` (the members must
    /// be stopped): the whole cluster as of now, as a snapshot is.
    pub fn copy_data(&self, dest: &Path) {
        std::fs::create_dir_all(dest).expect("a directory for the copy");
        for member in &self.members {
            copy_dir(&member.dir.join("data"), &dest.join(&member.name));
        }
    }

    /// Puts back every member's data directory from a [`Cluster::copy_data`]
    /// copy (the members must be stopped): the cluster restored to then.
    pub fn put_back_data(&self, from: &Path) {
        for member in &self.members {
            let data = member.dir.join("data");
            std::fs::remove_dir_all(&data).expect("remove a member's data");
            copy_dir(&from.join(&member.name), &data);
        }
    }

    fn pid(&self, i: usize) -> u32 {
        self.members[i]
            .process
            .lock()
            .expect("member lock")
            .as_ref()
            .map(Child::id)
            .unwrap_or_else(|| panic!("member {i} is not running"))
    }

    /// The index of the member the running members agree leads, waiting up
    /// to `wait` for an election to settle.
    pub fn leader(&self, wait: Duration) -> usize {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let started = Instant::now();
        loop {
            let found = runtime.block_on(async {
                let mut ids = Vec::new();
                let mut leaders = Vec::new();
                for endpoint in &self.endpoints {
                    let options = etcd_client::ConnectOptions::new()
                        .with_connect_timeout(Duration::from_millis(500))
                        .with_timeout(Duration::from_millis(500));
                    let status = match etcd_client::Client::connect([endpoint], Some(options)).await
                    {
                        Ok(mut client) => client.status().await.ok(),
                        Err(_) => None,
                    };
                    ids.push(
                        status
                            .as_ref()
                            .and_then(|s| s.header())
                            .map(|h| h.member_id()),
                    );
                    if let Some(status) = status {
                        leaders.push(status.leader());
                    }
                }
                let leader = *leaders.first()?;
                if leader == 0 || leaders.iter().any(|l| *l != leader) {
                    return None;
                }
                ids.iter().position(|id| *id == Some(leader))
            });
            match found {
                Some(i) => return i,
                None if started.elapsed() > wait => {
                    panic!("no leader agreed on within {wait:?}")
                }
                None => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Waits until the cluster commits a write.
    pub fn wait_until_serving(&self) {
        static PROBES: AtomicU32 = AtomicU32::new(0);
        let started = Instant::now();
        loop {
            // A store of its own each time: a probe that failed half way may
            // still own its store until its lease lapses.
            let n = PROBES.fetch_add(1, Ordering::Relaxed);
            let probe = self.open(Path::new(&format!("cluster-probe-{n}")));
            let ready = probe.and_then(|store| {
                let mut batch = super::WriteBatch::new();
                batch.put(Tree::Meta, b"probe", b"1".to_vec());
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

    /// Every key of the cluster that starts with `prefix`, read directly
    /// (as `etcdctl get --prefix --keys-only` would), whoever serves it.
    pub fn keys_with_prefix(&self, prefix: &[u8]) -> Vec<Vec<u8>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let mut client = etcd_client::Client::connect(self.endpoints.clone(), None)
                .await
                .expect("a client of the test cluster");
            let options = etcd_client::GetOptions::new()
                .with_prefix()
                .with_keys_only();
            let answer = client
                .get(prefix.to_vec(), Some(options))
                .await
                .expect("a read of the test cluster");
            answer.kvs().iter().map(|kv| kv.key().to_vec()).collect()
        })
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
            max_txn_ops: self.max_txn_ops,
            max_request_bytes: self
                .max_request_bytes
                .unwrap_or(super::etcd_backend::DEFAULT_MAX_REQUEST_BYTES),
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        for watchdog in &mut self.watchdogs {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
