//! Shared helpers for shredkv integration tests.
//!
//! Every scenario under `tests/tests/` runs against both storage backends
//! through [`for_each_backend`], with [`TEST_POLICY`] (one class of each key
//! mode) and a manual clock, so runs are deterministic and fast.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use shredkv::jiff::Timestamp;
use shredkv::{Backend, Config, Db, ManualClock, Policy};

/// Every backend shredkv can run on; each scenario runs against all of them.
pub const BACKENDS: [Backend; 2] = [Backend::Sled, Backend::Redb];

/// A blinded class whose retention starts at write and that accepts
/// customer TTLs.
pub const MESSAGES: &str = "message_content";
/// An ordered class (`keys = "ordered"`): record keys are stored in the clear.
pub const INVOICES: &str = "invoices";
/// A blinded class whose retention starts at account closure.
pub const PROFILE: &str = "account_profile";
/// Every class of [`TEST_POLICY`].
pub const CLASSES: [&str; 3] = [MESSAGES, INVOICES, PROFILE];

/// A policy with one class of each shape the scenarios need (the same as the
/// engine's unit tests use).
pub const TEST_POLICY: &str = r#"
version = 1

[[class]]
name = "message_content"
role = "processor"
clock = "write"
max_customer_ttl = "1 year"
purge_window = "30 days"
on_deletion_request = "erase_now"
keys = "blinded"
legal_basis = "test"
clause = "test"

[[class]]
name = "invoices"
role = "controller"
clock = "account_closure"
retain = "10 years"
purge_window = "30 days"
on_deletion_request = "retain_until_deadline"
keys = "ordered"
legal_basis = "test"
clause = "test"

[[class]]
name = "account_profile"
role = "controller"
clock = "account_closure"
retain = "60 days"
purge_window = "30 days"
on_deletion_request = "erase_now"
keys = "blinded"
legal_basis = "test"
clause = "test"
"#;

/// The start time of every scenario's manual clock.
pub const START_SECONDS: i64 = 1_800_000_000;

/// [`TEST_POLICY`], parsed.
///
/// # Panics
/// If the policy text does not parse (a bug in this crate).
pub fn test_policy() -> Policy {
    Policy::from_toml_str(TEST_POLICY, "test policy").expect("the test policy parses")
}

/// A manual clock at [`START_SECONDS`].
///
/// # Panics
/// Never: the start time is a valid timestamp.
pub fn test_clock() -> ManualClock {
    ManualClock::new(Timestamp::from_second(START_SECONDS).expect("a valid start time"))
}

/// One scenario's store: a fresh directory, a backend and a clock, reopened
/// as often as the scenario needs.
#[derive(Debug)]
pub struct Store {
    dir: tempfile::TempDir,
    backend: Backend,
    clock: ManualClock,
}

impl Store {
    /// A fresh, empty store directory for `backend`.
    ///
    /// # Panics
    /// If no temporary directory can be created.
    pub fn new(backend: Backend) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("shredkv-itest-{}-", backend.name()))
            .tempdir()
            .expect("create a temporary store directory");
        Self {
            dir,
            backend,
            clock: test_clock(),
        }
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The backend under test.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The store's manual clock (shared by every [`Db`] opened from here).
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// The configuration every scenario opens with: this backend,
    /// [`TEST_POLICY`], the manual clock, no background flushing.
    pub fn config(&self) -> Config {
        self.config_at(self.dir.path())
    }

    /// [`Store::config`] for another directory (a restore's target, a
    /// backup opened as a store), on this store's key file.
    pub fn config_at(&self, dir: &Path) -> Config {
        Config::new(dir)
            .allow_key_file_in_store(true)
            .backend(self.backend)
            .policy(test_policy())
            .clock(Arc::new(self.clock.clone()))
            .flush_every(None)
            .maintenance_every(None)
            .key_file(self.key_file())
    }

    /// Opens the store with [`Store::config`].
    ///
    /// # Panics
    /// If the store does not open.
    pub fn open(&self) -> Db {
        Db::open(self.config()).unwrap_or_else(|err| {
            panic!(
                "open the {} store at {:?}: {err}",
                self.backend,
                self.path()
            )
        })
    }

    /// The key file of the default file key provider.
    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("keys")
    }

    /// The backend's own files: the sled directory or the redb file.
    pub fn backend_path(&self) -> PathBuf {
        match self.backend {
            Backend::Redb => self.dir.path().join("store.redb"),
            _ => self.dir.path().join("sled"),
        }
    }
}

/// Runs `scenario` once per backend, each time on a fresh store, naming the
/// backend in any failure.
pub fn for_each_backend(mut scenario: impl FnMut(&Store)) {
    for backend in BACKENDS {
        let store = Store::new(backend);
        eprintln!("-- backend {backend}");
        scenario(&store);
    }
}

/// Flushes and closes `db` (the caller must hold no clone: a clone left
/// alive keeps the backend open and its lock taken).
///
/// # Panics
/// If the flush fails.
pub fn close(db: Db) {
    db.flush().expect("flush before close");
    drop(db);
}

/// A small deterministic pseudo-random generator (xorshift64*), so that
/// threaded scenarios are reproducible from their seed without extra
/// dependencies.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; zero is remapped).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        let n = u64::try_from(n).unwrap_or(u64::MAX).max(1);
        usize::try_from(self.next_u64() % n).unwrap_or(0)
    }
}
