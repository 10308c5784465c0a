//! Loom model of the erasure protocol between writers, shred and cache
//! eviction, run over the engine's own `ScopeGate` and `KeyCache` (compiled
//! against loom's primitives by the `loom` feature):
//!
//! `cargo test -p shredkv --features loom --release --test loom_protocol`
//!
//! The first two models keep the vault as a list of key versions; the
//! protocol steps are the engine's (`Db::put` → `Vault::current_for_write`,
//! `Db::shred` → `erase_locked`): a writer takes the gate's read lock, checks
//! the erased state, takes the bucket's current key from the cache or creates
//! the next version under the creation lock, and seals with it; shred takes
//! the write lock, marks the scope erased, destroys every version and evicts.
//!
//! The `engine_*` models run the engine's own `Db` (in-memory trees, an
//! in-memory key provider, no background threads): `Db::shred` racing
//! `Db::register_end_user`, `Db::verify`, `Db::put` and a `Db::records`
//! iterator holding a page, and `Db::compact` re-keying a path or removing
//! a day forest racing `Db::put`, through the real
//! gate, vault, key cache and subject records. Every lock such a path holds
//! across another protocol step is one of `crate::sync`'s (loom's here);
//! the rest (the trees', the subject cache's, the audit log's) guard short
//! sections without protocol steps inside, which loom need not interleave.
//! Loom replays schedules, so every iteration must take the same locks:
//! models of two subjects pick names whose gate stripes lie the same way in
//! every fresh store (`names_for`), and cover each arrangement.
#![cfg(feature = "loom")]

use loom::sync::{Arc, Mutex};
use loom::thread;
use shredkv::SubjectTag;
use shredkv::internal::{BucketId, KeyCache, ScopeGate};
use shredkv_crypto::KeyId;

const TAG: SubjectTag = SubjectTag([7; 16]);
const BUCKET: BucketId = BucketId {
    subject: TAG,
    class: 1,
    bucket: 1,
};

#[derive(Default)]
struct Vault {
    erased: bool,
    /// (version, destroyed)
    keys: Vec<(u32, bool)>,
}

struct Store {
    gate: ScopeGate,
    cache: KeyCache<u32>,
    vault: Mutex<Vault>,
    create: Mutex<()>,
}

impl Store {
    fn new() -> Self {
        Self {
            gate: ScopeGate::new(2),
            cache: KeyCache::new(1 << 20),
            vault: Mutex::new(Vault::default()),
            create: Mutex::new(()),
        }
    }

    /// A write: the key version it sealed with, or `None` if the scope is erased.
    fn write(&self) -> Option<u32> {
        let _shared = self.gate.read(&[TAG]);
        if self.vault.lock().expect("vault").erased {
            return None;
        }
        if let Some((_, version)) = self.cache.current(&BUCKET) {
            return Some(*version);
        }
        let _creating = self.create.lock().expect("create");
        if let Some((_, version)) = self.cache.current(&BUCKET) {
            return Some(*version);
        }
        let mut vault = self.vault.lock().expect("vault");
        let version = u32::try_from(vault.keys.len()).expect("small") + 1;
        vault.keys.push((version, false));
        drop(vault);
        let id = KeyId {
            subject: TAG,
            class: 1,
            bucket: 1,
            version,
        };
        self.cache.insert(id, std::sync::Arc::new(version), 1, true);
        Some(version)
    }

    fn shred(&self) {
        let _exclusive = self.gate.write(&[TAG]);
        let mut vault = self.vault.lock().expect("vault");
        vault.erased = true;
        for key in &mut vault.keys {
            key.1 = true;
        }
        drop(vault);
        self.cache.evict_subject(&TAG, None);
    }
}

#[test]
fn a_writer_racing_shred_never_leaves_a_live_key_for_the_erased_scope() {
    loom::model(|| {
        let store = Arc::new(Store::new());
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let store = Arc::clone(&store);
                thread::spawn(move || store.write())
            })
            .collect();
        let shredder = {
            let store = Arc::clone(&store);
            thread::spawn(move || store.shred())
        };
        let results: Vec<_> = writers
            .into_iter()
            .map(|w| w.join().expect("writer"))
            .collect();
        shredder.join().expect("shredder");

        let vault = store.vault.lock().expect("vault");
        assert!(vault.erased);
        assert!(
            vault.keys.iter().all(|(_, destroyed)| *destroyed),
            "a key outlived the shred"
        );
        assert!(
            vault.keys.len() <= 1,
            "racing writers created {} keys for one bucket",
            vault.keys.len()
        );
        for version in results.iter().flatten() {
            assert!(
                vault.keys.iter().any(|(v, d)| v == version && *d),
                "a write sealed with a key shred did not destroy"
            );
        }
        assert!(store.cache.current(&BUCKET).is_none());
    });
}

#[test]
fn an_operation_begun_after_shred_returned_fails() {
    loom::model(|| {
        let store = Arc::new(Store::new());
        let writer = {
            let store = Arc::clone(&store);
            thread::spawn(move || store.write())
        };
        store.shred();
        assert_eq!(store.write(), None);
        let _ = writer.join().expect("writer");
        let vault = store.vault.lock().expect("vault");
        assert!(vault.keys.iter().all(|(_, destroyed)| *destroyed));
    });
}

/// A store of the engine itself, fresh in every loom iteration: in-memory
/// trees (shared across reopenings) and keys, no flusher.
struct Engine {
    dir: tempfile::TempDir,
    trees: shredkv::internal::MemoryStore,
    keys: std::sync::Arc<shredkv::internal::MemoryKeyProvider>,
}

impl Engine {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            trees: shredkv::internal::MemoryStore::new(),
            keys: std::sync::Arc::new(shredkv::internal::MemoryKeyProvider::new()),
        }
    }

    /// Opens (or reopens, with an empty key cache) the store.
    fn open(&self) -> shredkv::Db {
        self.open_at(None)
    }

    /// [`Engine::open`] on `clock` instead of the system's.
    fn open_at(&self, clock: Option<shredkv::ManualClock>) -> shredkv::Db {
        let mut config = shredkv::Config::new(self.dir.path())
            .key_provider(self.keys.clone())
            .flush_every(None)
            .maintenance_every(None);
        if let Some(clock) = clock {
            config = config.clock(std::sync::Arc::new(clock));
        }
        shredkv::internal::open_with_faults(
            config,
            &shredkv::internal::TestStore::Memory(self.trees.clone()),
            shredkv::internal::FaultPlan::none(),
        )
        .expect("open")
        .0
    }
}

fn engine_model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    // Every interleaving of up to two preemptions: enough for a race of
    // two operations, and bounded for the engine's longer paths.
    builder.preemption_bound = Some(2);
    builder.check(f);
}

/// Where a late end user's gate stripe lies against its account's.
#[derive(Clone, Copy, Debug)]
enum Stripes {
    /// One lock covers both.
    Shared,
    /// The end user's is taken after the account's.
    EndUserAfter,
    /// The end user's is taken before the account's.
    EndUserBefore,
}

/// An account and an end-user name whose gate stripes lie as `stripes`
/// says. Subject tags are keyed by the store's secret, fresh in every
/// iteration; fixing the arrangement makes every iteration take the same
/// locks, as loom requires (otherwise its replayed schedules diverge).
fn names_for(db: &shredkv::Db, stripes: Stripes) -> (String, String) {
    use shredkv::internal::gate_stripe;
    for a in 0..64 {
        let account = format!("acct-{a}");
        let at = gate_stripe(db, &account);
        for e in 0..4096 {
            let end_user = format!("late-{e}");
            let et = gate_stripe(db, &end_user);
            let fits = match stripes {
                Stripes::Shared => et == at,
                Stripes::EndUserAfter => et > at,
                Stripes::EndUserBefore => et < at,
            };
            if fits {
                return (account, end_user);
            }
        }
    }
    panic!("no pair of names lies on the gate's stripes as {stripes:?}");
}

/// Shred of an account racing the registration of an end user under it.
fn shred_racing_register(stripes: Stripes) {
    engine_model(move || {
        let engine = Engine::new();
        let db = engine.open();
        let (account, late) = names_for(&db, stripes);
        db.register_account(&account).expect("register");
        let registrar = {
            let db = db.clone();
            let (late, account) = (late.clone(), account.clone());
            thread::spawn(move || db.register_end_user(&late, &account).is_ok())
        };
        let receipt = db.shred(&account, shredkv::Classes::All).expect("shred");
        let registered = registrar.join().expect("registrar");
        let found = db.subject(&late).expect("subject");
        assert_eq!(registered, found.is_some());
        if let Some(found) = found {
            assert_eq!(
                found.state,
                shredkv::SubjectState::Erased,
                "an end user registered during its account's shred stays live ({receipt:?})"
            );
        }
        assert!(db.put(&late, "message_content", b"m", b"v").is_err());
    });
}

#[test]
fn engine_shred_and_register_leave_no_live_end_user() {
    shred_racing_register(Stripes::Shared);
}

#[test]
fn engine_shred_and_register_on_two_stripes_leave_no_live_end_user() {
    shred_racing_register(Stripes::EndUserAfter);
    shred_racing_register(Stripes::EndUserBefore);
}

#[test]
fn engine_verify_never_recaches_a_destroyed_key() {
    engine_model(|| {
        let engine = Engine::new();
        {
            let db = engine.open();
            db.register_account("acct").expect("register");
            db.put("acct", "message_content", b"m1", b"erase me")
                .expect("put");
        }
        // Reopened: verify must load the key into an empty cache.
        let db = engine.open();
        let verifier = {
            let db = db.clone();
            thread::spawn(move || db.verify().expect("verify").is_clean())
        };
        db.shred("acct", shredkv::Classes::All).expect("shred");
        assert!(verifier.join().expect("verifier"));
        db.re_register("acct").expect("re-register");
        let found = db.scan("acct", "message_content").expect("scan");
        assert!(found.is_empty(), "an erased value decrypted: {found:?}");
    });
}

#[test]
fn engine_put_racing_shred_leaves_nothing_readable() {
    engine_model(|| {
        let engine = Engine::new();
        let db = engine.open();
        db.register_account("acct").expect("register");
        let writer = {
            let db = db.clone();
            thread::spawn(move || db.put("acct", "message_content", b"m", b"v").is_ok())
        };
        db.shred("acct", shredkv::Classes::All).expect("shred");
        let _wrote = writer.join().expect("writer");
        let stats = db.stats().expect("stats");
        assert_eq!(stats.keys_live, 0, "a key outlived the shred: {stats:?}");
        assert!(db.put("acct", "message_content", b"m", b"v").is_err());
    });
}

#[test]
fn engine_a_page_in_hand_yields_nothing_once_shred_returned() {
    engine_model(|| {
        let engine = Engine::new();
        let db = engine.open();
        db.register_account("acct").expect("register");
        for key in [b"m1", b"m2"] {
            db.put("acct", "message_content", key, b"erase me")
                .expect("put");
        }
        let returned = Arc::new(loom::sync::atomic::AtomicBool::new(false));
        let shredder = {
            let (db, returned) = (db.clone(), Arc::clone(&returned));
            thread::spawn(move || {
                db.shred("acct", shredkv::Classes::All).expect("shred");
                returned.store(true, std::sync::atomic::Ordering::SeqCst);
            })
        };
        // The iterator reads both records in one page, then hands them out
        // one call at a time, with no lock held in between.
        let mut records = db.records("acct", "message_content", shredkv::ScanOptions::all());
        loop {
            let shred_had_returned = returned.load(std::sync::atomic::Ordering::SeqCst);
            match records.next() {
                Some(Ok(_)) => assert!(
                    !shred_had_returned,
                    "a record handed out after the shred returned"
                ),
                Some(Err(err)) => {
                    assert!(err.is_erased(), "{err}");
                    break;
                }
                None => break,
            }
        }
        shredder.join().expect("shredder");
    });
}

/// A key created under the key tree racing compaction's re-key of a path it
/// shares (store format 4): the creation lock serialises a creation's
/// wrap-then-write with a node's read-children-then-write, so a new node or
/// key is never wrapped under a generation its parent is leaving (it would
/// never open again). Checked through a cold cache, after a reopen. Without
/// the creation lock in the re-key of the nodes above the bottom, loom finds
/// the newer subject's first node wrapped under the root generation the
/// re-key was replacing (`Tampered` at the root's child).
#[test]
fn engine_key_creation_racing_a_path_rekey_leaves_no_orphan() {
    engine_model(|| {
        let engine = Engine::new();
        let db = engine.open();
        let (older, newer) = names_apart_in_the_tree(&db);
        db.register_account(&older).expect("register");
        db.register_account(&newer).expect("register");
        db.put(&older, "account_profile", b"p", b"v").expect("put");
        db.put(&older, "message_content", b"m", b"older")
            .expect("put");
        // A debt on the older subject's path, up to the root, which the
        // newer subject's first keys hang under too.
        db.shred(&older, shredkv::Classes::Only(&["account_profile"]))
            .expect("shred");
        let writer = {
            let db = db.clone();
            let newer = newer.clone();
            thread::spawn(move || {
                db.put(&newer, "message_content", b"m", b"newer")
                    .map_err(|e| e.to_string())
            })
        };
        let rekeyed = db.compact().expect("compact").nodes_rekeyed;
        writer.join().expect("writer").expect("put");
        assert!(rekeyed >= 6);
        drop(db);
        let db = engine.open();
        for (subject, value) in [(&older, &b"older"[..]), (&newer, &b"newer"[..])] {
            assert_eq!(
                db.get(subject, "message_content", b"m")
                    .expect("no key is orphaned")
                    .as_deref(),
                Some(value)
            );
        }
    });
}

/// A day forest's removal racing a write whose key lands in that forest
/// (store format 4). The write reads the store's time two seconds before
/// its expiry day ends and asks for an expiry in that day; compaction runs
/// one second after the day's end, destroys the day's keys and removes the
/// day's forest if no key in it is live. Loom reaches three orders: the late
/// key made before the pass reads its due items (both keys destroyed, the
/// forest removed in one pass), made before the forest's check (the forest
/// kept, both die in the next pass), or made after the forest is gone (its
/// path made anew, and removed again by the next pass). In each, the day's
/// keys are destroyed once each, the forest dies in the pass that destroys
/// its last key, `verify` is clean (also after a reopen) and a later day's
/// keys still open.
///
/// What it cannot see: the forest's check and its deletion run inside the
/// storage's own locks, which are not loom's, so loom never interleaves a
/// creation between them; that the creation lock keeps them together is
/// argued in `vault::tree` ("Locks") and forced with pause points in
/// `tests/key_tree_races.rs`, not checked here (without it, this model
/// still passes).
#[test]
fn engine_forest_removal_racing_a_key_creation_in_its_day() {
    use shredkv::jiff::Timestamp;
    const DAY: i64 = 86_400;
    // Expiry buckets are UTC days with 30-day windows: the day's keys are
    // due when it ends. One minute into the day, so that no epoch rotation
    // (every 24 h from the open) falls inside the model.
    let midnight = 1_800_000_000 / DAY * DAY;
    let at = |second: i64| Timestamp::from_second(second).expect("a valid time");
    let day_ends = midnight + DAY;
    engine_model(move || {
        let engine = Engine::new();
        let clock = shredkv::ManualClock::new(at(midnight + 60));
        let db = engine.open_at(Some(clock.clone()));
        let (older, newer) = names_apart_in_the_tree(&db);
        db.register_account(&older).expect("register");
        db.register_account(&newer).expect("register");
        // Keys that are not the day's, live throughout: each subject's
        // blinding key of the class and a key of a later day.
        for subject in [&older, &newer] {
            db.put_with(
                subject,
                "message_content",
                b"later",
                b"kept",
                shredkv::PutOptions::expires_at(at(midnight + 10 * DAY)),
            )
            .expect("put");
        }
        let before_the_day = db.stats().expect("stats").keys_live;
        db.put_with(
            &older,
            "message_content",
            b"m",
            b"older",
            shredkv::PutOptions::expires_at(at(midnight + 3_600)),
        )
        .expect("put");
        clock.set(at(day_ends - 2));
        let writer = {
            let db = db.clone();
            let newer = newer.clone();
            thread::spawn(move || {
                db.put_with(
                    &newer,
                    "message_content",
                    b"m",
                    b"newer",
                    shredkv::PutOptions::expires_at(at(day_ends - 1)),
                )
                .map_err(|e| e.to_string())
            })
        };
        // A scheduling point: the write may read the time before it moves.
        thread::yield_now();
        clock.set(at(day_ends + 1));
        let first = db.compact().expect("compact");
        writer.join().expect("writer").expect("put");
        assert!(first.keys_destroyed >= 1, "{first:?}");
        let second = db.compact().expect("compact");
        let verified = db.verify().expect("verify");
        assert!(verified.is_clean(), "{verified:?}");
        // Nothing of the day is live after the second pass, and its forest
        // is gone: the day's keys destroyed once each, its forest removed at
        // least once.
        assert_eq!(
            db.stats().expect("stats").keys_live,
            before_the_day,
            "{first:?} {second:?}"
        );
        // With no hold, a day's forest dies whole in the pass that destroys
        // the day's last key.
        let last = if second.keys_destroyed > 0 {
            &second
        } else {
            &first
        };
        assert_eq!(last.forests_removed, 1, "{first:?} {second:?}");
        assert_eq!(
            first.keys_destroyed + second.keys_destroyed,
            2,
            "{first:?} {second:?}"
        );
        drop(db);
        let db = engine.open_at(Some(clock.clone()));
        let verified = db.verify().expect("verify");
        assert!(verified.is_clean(), "{verified:?}");
        for subject in [&older, &newer] {
            assert_eq!(
                db.get(subject, "message_content", b"later")
                    .expect("a later day's key is untouched")
                    .as_deref(),
                Some(&b"kept"[..])
            );
            assert_eq!(
                db.get(subject, "message_content", b"m")
                    .expect("no key is orphaned"),
                None
            );
        }
    });
}

/// Two names on different gate stripes (the second's after the first's)
/// whose subjects share no key tree node but the root, so the same nodes
/// are made and re-keyed in every iteration.
fn names_apart_in_the_tree(db: &shredkv::Db) -> (String, String) {
    use shredkv::internal::gate_stripe;
    let first_nibble = |name: &str| db.subject_tag(name).0[0] >> 4;
    for a in 0..64 {
        let older = format!("acct-{a}");
        for e in 0..4096 {
            let newer = format!("late-{e}");
            if gate_stripe(db, &newer) > gate_stripe(db, &older)
                && first_nibble(&newer) != first_nibble(&older)
            {
                return (older, newer);
            }
        }
    }
    panic!("no two names lie apart on the gate and in the key tree");
}
