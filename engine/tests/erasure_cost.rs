//! Erasure costs what the subject's keys cost, not what it stores (G1):
//! shredding a subject that holds 2,000 records per class sends the storage
//! seam the work that shredding one with 10 per class does: the same reads,
//! written changes, applies and flushes, and the same scanned entries up to
//! the boundary entries of prefix scans, as counted by the fault layer with
//! nothing armed. On the in-memory backend, sled and
//! redb. The engine benchmark's erase workload measures the time; this pins
//! the work, which the time's fsync noise cannot show.

mod support;

use shredkv::internal::{FaultCounts, FaultPlan, MemoryStore, TestStore};
use shredkv::{Backend, Batch, Classes, Db};

use support::model::CLASSES;

/// Records written per class for the small and the large subject.
const SMALL: usize = 10;
const LARGE: usize = 2_000;

/// Writes `per_class` records into every class of the model policy for a
/// new account `subject`, a page at a time.
fn fill(db: &Db, subject: &str, per_class: usize) {
    db.register_account(subject).expect("register");
    for class in CLASSES {
        for page in (0..per_class).collect::<Vec<_>>().chunks(500) {
            let mut batch = Batch::new();
            for i in page {
                batch.put(subject, class, format!("r{i:06}").as_bytes(), b"value");
            }
            db.apply(batch).expect("write a page");
        }
    }
}

/// What `shred(subject, All)` sent through the seam.
fn shred_work(db: &Db, control: &shredkv::internal::FaultControl, subject: &str) -> FaultCounts {
    let before = control.counts();
    db.shred(subject, Classes::All).expect("shred");
    control.counts().since(before)
}

fn erasure_work_ignores_record_count(store: TestStore, backend: Backend) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let clock = support::clock();
    let config = support::config(dir.path(), &clock, backend, None);
    let (db, control) =
        shredkv::internal::open_with_faults(config, &store, FaultPlan::none()).expect("open");
    fill(&db, "small", SMALL);
    fill(&db, "large", LARGE);
    db.flush().expect("flush");
    let small = shred_work(&db, &control, "small");
    let large = shred_work(&db, &control, "large");
    assert!(
        small.ops_written > 0 && small.durable_applies > 0,
        "the shred wrote durably: {small:?}"
    );
    // A prefix scan also visits the first entry past the prefix when there
    // is one, which depends on where the subject's tag sorts among the
    // others, not on what it holds: scanned entries may differ by those.
    let same_but_scans = |c: FaultCounts| FaultCounts {
        entries_scanned: 0,
        ..c
    };
    assert_eq!(
        same_but_scans(small),
        same_but_scans(large),
        "{backend}: shredding {} records did other work than shredding {}",
        LARGE * CLASSES.len(),
        SMALL * CLASSES.len()
    );
    assert!(
        large.entries_scanned.abs_diff(small.entries_scanned) <= 2 && large.entries_scanned < 50,
        "{backend}: scanned {} entries for the large subject, {} for the small one",
        large.entries_scanned,
        small.entries_scanned
    );
    // Erased, not failing for another reason: every class reads as erased.
    for subject in ["small", "large"] {
        for class in CLASSES {
            match db.get(subject, class, b"r000000") {
                Err(err) if err.is_erased() => {}
                other => panic!("{backend}: {subject}/{class} after the shred: {other:?}"),
            }
        }
    }
}

#[test]
fn erasure_work_ignores_record_count_memory() {
    erasure_work_ignores_record_count(TestStore::Memory(MemoryStore::new()), Backend::Sled);
}

#[test]
fn erasure_work_ignores_record_count_sled() {
    erasure_work_ignores_record_count(TestStore::Disk(Backend::Sled), Backend::Sled);
}

#[test]
fn erasure_work_ignores_record_count_redb() {
    erasure_work_ignores_record_count(TestStore::Disk(Backend::Redb), Backend::Redb);
}
