//! Model test (after sled's `test_tree_failpoints.rs`): proptest generates
//! operation sequences (writes with and without expiry, deletes, batches,
//! shreds, holds, account closures, compaction, epoch rotation, clock
//! advances and set-backs, flushes and restarts) and checks the store against
//! [`support::model::Model`] after every step: every record's value, which
//! subjects and scopes are erased, which holds stand; `verify()` is clean at
//! the end. Runs on sled, redb and the in-memory backend.
//!
//! `PROPTEST_CASES=N` changes the number of cases (default 32 of up to 40
//! operations). A failure prints the shrunk, minimal sequence, and proptest
//! records its seed in `engine/tests/model.proptest-regressions`, which is
//! replayed first on every later run.

mod support;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use shredkv::internal::{FaultPlan, MemoryStore, TestStore};
use shredkv::{Backend, Db};

use support::model::{BatchItem, Model, Op};

const OPS_PER_CASE: usize = 40;
const DEFAULT_CASES: u32 = 32;

fn op() -> impl Strategy<Value = Op> {
    let s = 0..4u8;
    let c = 0..3u8;
    let k = 0..3u8;
    let v = 0..1000u32;
    let class = proptest::option::of(0..3u8);
    let item = (
        s.clone(),
        c.clone(),
        k.clone(),
        proptest::option::of(v.clone()),
    );
    prop_oneof![
        6 => (s.clone(), c.clone(), k.clone(), v.clone())
            .prop_map(|(s, c, k, v)| Op::Put { s, c, k, v }),
        2 => (s.clone(), k.clone(), v, 1..24 * 40u32)
            .prop_map(|(s, k, v, ttl_hours)| Op::PutExpiring { s, k, v, ttl_hours }),
        2 => (s.clone(), c, k).prop_map(|(s, c, k)| Op::Delete { s, c, k }),
        1 => proptest::collection::vec(item, 1..4)
            .prop_map(|items: Vec<BatchItem>| Op::Batch { items }),
        1 => (s.clone(), class.clone()).prop_map(|(s, class)| Op::Shred { s, class }),
        1 => (s.clone(), class.clone()).prop_map(|(s, class)| Op::Hold { s, class }),
        1 => (s, class).prop_map(|(s, class)| Op::Release { s, class }),
        1 => (0..2u8).prop_map(|a| Op::CloseAccount { a }),
        2 => Just(Op::Compact),
        1 => Just(Op::RotateEpoch),
        2 => prop_oneof![Just(1u32), Just(24), Just(24 * 7), Just(24 * 31)]
            .prop_map(|hours| Op::AdvanceClock { hours }),
        1 => prop_oneof![Just(1u32), Just(24), Just(24 * 7)]
            .prop_map(|hours| Op::SetClockBack { hours }),
        1 => Just(Op::Flush),
        1 => Just(Op::Restart),
    ]
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// Where a case's store lives.
#[derive(Clone, Copy)]
enum Where {
    Disk(Backend),
    Memory,
}

/// One store, reopened in place by `restart`.
struct Store {
    dir: tempfile::TempDir,
    clock: shredkv::ManualClock,
    place: Where,
    memory: MemoryStore,
    db: Option<Db>,
}

impl Store {
    fn open(place: Where) -> Result<Self, TestCaseError> {
        let mut store = Self {
            dir: tempfile::tempdir().map_err(|e| fail("tempdir", &e))?,
            clock: support::clock(),
            place,
            memory: MemoryStore::new(),
            db: None,
        };
        store.reopen()?;
        support::register_all(store.db()).map_err(|e| fail("register", &e))?;
        Ok(store)
    }

    fn reopen(&mut self) -> Result<(), TestCaseError> {
        drop(self.db.take());
        let backend = match self.place {
            Where::Disk(backend) => backend,
            Where::Memory => Backend::Sled,
        };
        let config = support::config(self.dir.path(), &self.clock, backend, None);
        let db = match self.place {
            Where::Disk(_) => Db::open(config),
            Where::Memory => shredkv::internal::open_with_faults(
                config,
                &TestStore::Memory(self.memory.clone()),
                FaultPlan::none(),
            )
            .map(|(db, _)| db),
        };
        self.db = Some(db.map_err(|e| fail("open", &e))?);
        Ok(())
    }

    fn db(&self) -> &Db {
        self.db.as_ref().expect("the store is open between steps")
    }
}

fn fail(what: &str, err: &dyn std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(format!("{what}: {err}"))
}

fn run(place: Where, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut store = Store::open(place)?;
    let mut model = Model::new();
    for (step, op) in ops.iter().enumerate() {
        let want = model.apply(op);
        let got = support::run_op(store.db(), &store.clock, op)
            .map_err(|e| fail(&format!("step {step}, {op:?}"), &e))?;
        prop_assert!(
            want.admits(&got),
            "step {step}, {op:?}: the model expects {want:?}, the store answered {got:?}"
        );
        if *op == Op::Restart {
            store.reopen()?;
        }
        let snapshot = support::observe(store.db())
            .map_err(|e| fail(&format!("reading after step {step}, {op:?}"), &e))?;
        model
            .check(&snapshot, true)
            .map_err(|e| fail(&format!("after step {step}, {op:?}"), &e))?;
    }
    let report = store.db().verify().map_err(|e| fail("verify", &e))?;
    prop_assert!(report.is_clean(), "verify: {report:?}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn model_sled(ops in proptest::collection::vec(op(), 1..=OPS_PER_CASE)) {
        run(Where::Disk(Backend::Sled), &ops)?;
    }

    #[test]
    fn model_redb(ops in proptest::collection::vec(op(), 1..=OPS_PER_CASE)) {
        run(Where::Disk(Backend::Redb), &ops)?;
    }

    #[test]
    fn model_memory(ops in proptest::collection::vec(op(), 1..=OPS_PER_CASE)) {
        run(Where::Memory, &ops)?;
    }
}

/// The model itself can fail: a store that answers differently is caught.
#[test]
fn model_rejects_a_wrong_store() {
    let mut model = Model::new();
    model.apply(&Op::Put {
        s: 0,
        c: 0,
        k: 0,
        v: 1,
    });
    let dir = tempfile::tempdir().expect("dir");
    let clock = support::clock();
    let db = shredkv::internal::open_with_faults(
        support::config(dir.path(), &clock, Backend::Sled, None),
        &TestStore::Memory(MemoryStore::new()),
        FaultPlan::none(),
    )
    .expect("open")
    .0;
    support::register_all(&db).expect("register");
    let snapshot = support::observe(&db).expect("observe");
    let err = model
        .check(&snapshot, true)
        .expect_err("the store lacks the write");
    assert!(err.contains("acct-0/message_content/k0"), "{err}");
    db.put("acct-0", "message_content", b"k0", b"value-1")
        .expect("put");
    model
        .check(&support::observe(&db).expect("observe"), true)
        .expect("now they agree");
    db.shred("acct-0", shredkv::Classes::All).expect("shred");
    let err = model
        .check(&support::observe(&db).expect("observe"), true)
        .expect_err("the model did not shred");
    assert!(err.contains("acct-0"), "{err}");
}

/// A sequence the fuzzer (engine_ops) found: an account shredded after its
/// end user was shredded and the store restarted, while the other
/// account's family is held. Kept on every backend.
#[test]
fn fuzz_found_shred_after_an_end_users_shred_and_a_restart() {
    let ops = [
        Op::Compact,
        Op::Put {
            s: 0,
            c: 0,
            k: 0,
            v: 63488,
        },
        Op::Compact,
        Op::Put {
            s: 0,
            c: 0,
            k: 0,
            v: 63488,
        },
        Op::Shred { s: 2, class: None },
        Op::Restart,
        Op::Release { s: 0, class: None },
        Op::Shred {
            s: 1,
            class: Some(2),
        },
        Op::Hold { s: 1, class: None },
        Op::Shred { s: 0, class: None },
        Op::Shred { s: 0, class: None },
        Op::CloseAccount { a: 1 },
        Op::AdvanceClock { hours: 24 * 61 },
    ];
    for place in [
        Where::Memory,
        Where::Disk(Backend::Sled),
        Where::Disk(Backend::Redb),
    ] {
        if let Err(err) = run(place, &ops) {
            panic!("{err}");
        }
    }
}
