//! Drives a whole store with an operation sequence decoded by `arbitrary`:
//! writes with and without expiry, deletes, batches, shreds, holds,
//! account closures, compaction, epoch rotation, clock advances, flushes and
//! restarts, on the in-memory backend (`shredkv::internal`) with an
//! in-memory key provider. After every operation the store must answer as
//! the model of `engine/tests/support/model.rs` says (the model test's
//! model, included by path): every record's value, erased subjects and
//! scopes, holds; at the end `verify()` must be clean.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shredkv::internal::{FaultPlan, MemoryKeyProvider, MemoryStore, TestStore};
use shredkv::{Backend, Db, KeyProvider};

#[path = "../../engine/tests/support/mod.rs"]
mod support;

use support::model::{Model, Op};

/// Operations per input at most.
const MAX_OPS: usize = 64;

/// One operation; indices are reduced modulo the model's universe.
#[derive(Arbitrary, Debug)]
enum FuzzOp {
    Put {
        s: u8,
        c: u8,
        k: u8,
        v: u16,
    },
    PutExpiring {
        s: u8,
        k: u8,
        v: u16,
        ttl_hours: u16,
    },
    Delete {
        s: u8,
        c: u8,
        k: u8,
    },
    Batch(Vec<(u8, u8, u8, Option<u16>)>),
    Shred {
        s: u8,
        class: Option<u8>,
    },
    Hold {
        s: u8,
        class: Option<u8>,
    },
    Release {
        s: u8,
        class: Option<u8>,
    },
    CloseAccount {
        a: u8,
    },
    Compact,
    RotateEpoch,
    AdvanceClock {
        step: u8,
    },
    Flush,
    Restart,
}

impl FuzzOp {
    fn to_op(&self) -> Op {
        let s = |s: &u8| s % 4;
        let c = |c: &u8| c % 3;
        let class = |c: &Option<u8>| c.map(|c| c % 3);
        match self {
            FuzzOp::Put { s: si, c: ci, k, v } => Op::Put {
                s: s(si),
                c: c(ci),
                k: k % 3,
                v: u32::from(*v),
            },
            FuzzOp::PutExpiring {
                s: si,
                k,
                v,
                ttl_hours,
            } => Op::PutExpiring {
                s: s(si),
                k: k % 3,
                v: u32::from(*v),
                // 1 hour to ~300 days: within the class's largest TTL (1 year).
                ttl_hours: 1 + u32::from(*ttl_hours) % (24 * 300),
            },
            FuzzOp::Delete { s: si, c: ci, k } => Op::Delete {
                s: s(si),
                c: c(ci),
                k: k % 3,
            },
            FuzzOp::Batch(items) => Op::Batch {
                items: items
                    .iter()
                    .take(8)
                    .map(|(si, ci, k, v)| (s(si), c(ci), k % 3, v.map(u32::from)))
                    .collect(),
            },
            FuzzOp::Shred { s: si, class: cl } => Op::Shred {
                s: s(si),
                class: class(cl),
            },
            FuzzOp::Hold { s: si, class: cl } => Op::Hold {
                s: s(si),
                class: class(cl),
            },
            FuzzOp::Release { s: si, class: cl } => Op::Release {
                s: s(si),
                class: class(cl),
            },
            FuzzOp::CloseAccount { a } => Op::CloseAccount { a: a % 2 },
            FuzzOp::Compact => Op::Compact,
            FuzzOp::RotateEpoch => Op::RotateEpoch,
            FuzzOp::AdvanceClock { step } => Op::AdvanceClock {
                hours: [1, 24, 24 * 7, 24 * 31, 24 * 61][usize::from(step % 5)],
            },
            FuzzOp::Flush => Op::Flush,
            FuzzOp::Restart => Op::Restart,
        }
    }
}

/// The store directory of this process: nothing is written there (trees and
/// keys live in memory), it only names the store.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| std::env::temp_dir().join(format!("shredkv-fuzz-{}", std::process::id())))
}

fn open(
    memory: &MemoryStore,
    provider: &Arc<MemoryKeyProvider>,
    clock: &shredkv::ManualClock,
) -> Db {
    let provider: Arc<dyn KeyProvider> = Arc::clone(provider) as Arc<dyn KeyProvider>;
    let config = support::config(dir(), clock, Backend::Sled, None).key_provider(provider);
    shredkv::internal::open_with_faults(
        config,
        &TestStore::Memory(memory.clone()),
        FaultPlan::none(),
    )
    .expect("an in-memory store opens")
    .0
}

fuzz_target!(|ops: Vec<FuzzOp>| {
    let clock = support::clock();
    let memory = MemoryStore::new();
    let provider = Arc::new(MemoryKeyProvider::new());
    let mut db = open(&memory, &provider, &clock);
    support::register_all(&db).expect("register");
    let mut model = Model::new();
    for (step, fuzz_op) in ops.iter().take(MAX_OPS).enumerate() {
        let op = fuzz_op.to_op();
        let want = model.apply(&op);
        let got = support::run_op(&db, &clock, &op)
            .unwrap_or_else(|e| panic!("step {step}, {op:?}: {e}"));
        assert!(
            want.admits(&got),
            "step {step}, {op:?}: the model expects {want:?}, the store answered {got:?}"
        );
        if op == Op::Restart {
            drop(db);
            db = open(&memory, &provider, &clock);
        }
        let snapshot = support::observe(&db).unwrap_or_else(|e| panic!("step {step}: {e}"));
        if let Err(difference) = model.check(&snapshot, true) {
            panic!("after step {step}, {op:?}: {difference}");
        }
    }
    let report = db.verify().expect("verify");
    assert!(report.is_clean(), "{report:?}");
});
