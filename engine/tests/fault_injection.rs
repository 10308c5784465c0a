//! Faults injected through the storage seam and the key provider
//! (`shredkv::internal::open_with_faults`), on the in-memory backend, sled
//! and redb.
//!
//! - For every n over a fixed workload (puts with and without expiry, a
//!   batch, a delete, holds, shreds, an account closure, compaction with the
//!   clock advanced, epoch rotation, flushes), the n-th write, durable apply
//!   or flush fails (leaving nothing behind, or the batch applied but
//!   unsynced). The operation must return `Error::Storage`; after the fault
//!   is cleared and the store reopened (or, in a second pass, without
//!   reopening) every acknowledged write reads back, every acknowledged
//!   shred stays erased, the failed operation either happened or did not,
//!   retrying it succeeds, the rest of the workload runs to the model's end
//!   state, every erasure is in the audit log, and `verify()` is clean.
//! - A full disk fails writes with an I/O error of kind `StorageFull` and
//!   erases nothing until space is freed.
//! - An unavailable key provider is reported as
//!   `Error::KeyProvider(ProviderError::Unavailable)`, never as erased data,
//!   and does not stop a shred.
//! - An epoch rotation interrupted half-way (the provider fails a `wrap`
//!   after `create_epoch` succeeded) resumes at the next `compact()`, and no
//!   epoch is destroyed while a live key is wrapped under it.

mod support;

use std::io;

use shredkv::internal::{
    ApplyFailure, FaultControl, FaultCounts, FaultPlan, FaultPoint, MemoryStore, ProviderCall,
    TestStore,
};
use shredkv::jiff::SignedDuration;
use shredkv::{AuditEvent, Backend, Classes, Db, Error, ManualClock, ProblemKind};
use shredkv_crypto::ProviderError;

use support::model::{Model, Op, Snapshot};

/// The fixed workload. Indices: subjects acct-0, acct-1, user-0 (of acct-0),
/// user-1 (of acct-1); classes message_content, account_profile, invoices.
fn workload() -> Vec<Op> {
    vec![
        Op::Put {
            s: 0,
            c: 0,
            k: 0,
            v: 1,
        },
        Op::PutExpiring {
            s: 2,
            k: 1,
            v: 2,
            ttl_hours: 48,
        },
        Op::Batch {
            items: vec![(0, 1, 1, Some(3)), (2, 2, 2, Some(4)), (1, 0, 0, Some(5))],
        },
        Op::Put {
            s: 0,
            c: 0,
            k: 0,
            v: 6,
        },
        Op::Delete { s: 1, c: 0, k: 0 },
        Op::Put {
            s: 3,
            c: 1,
            k: 0,
            v: 7,
        },
        Op::Hold {
            s: 3,
            class: Some(1),
        },
        Op::Shred { s: 2, class: None },
        Op::Flush,
        Op::CloseAccount { a: 1 },
        Op::AdvanceClock { hours: 24 * 61 },
        Op::Compact,
        Op::RotateEpoch,
        Op::Put {
            s: 0,
            c: 2,
            k: 1,
            v: 8,
        },
        Op::Release {
            s: 3,
            class: Some(1),
        },
        Op::AdvanceClock { hours: 24 * 31 },
        Op::Compact,
        Op::Shred {
            s: 0,
            class: Some(0),
        },
        Op::Flush,
    ]
}

/// Where the stores of one test live.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Memory,
    Disk(Backend),
}

const KINDS: [Kind; 3] = [
    Kind::Memory,
    Kind::Disk(Backend::Sled),
    Kind::Disk(Backend::Redb),
];

/// One store that can be reopened in place.
struct Store {
    dir: tempfile::TempDir,
    clock: ManualClock,
    kind: Kind,
    memory: MemoryStore,
}

impl Store {
    fn new(kind: Kind) -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temporary directory"),
            clock: support::clock(),
            kind,
            memory: MemoryStore::new(),
        }
    }

    fn test_store(&self) -> TestStore {
        match self.kind {
            Kind::Memory => TestStore::Memory(self.memory.clone()),
            Kind::Disk(backend) => TestStore::Disk(backend),
        }
    }

    fn config(&self) -> shredkv::Config {
        let backend = match self.kind {
            Kind::Memory => Backend::Sled,
            Kind::Disk(backend) => backend,
        };
        support::config(self.dir.path(), &self.clock, backend, None)
    }

    /// Opens with faults (nothing armed).
    fn open(&self) -> (Db, FaultControl) {
        shredkv::internal::open_with_faults(self.config(), &self.test_store(), FaultPlan::none())
            .expect("open with faults")
    }

    /// Opens the way an application would: `Db::open` for sled and redb.
    fn reopen(&self) -> Db {
        match self.kind {
            Kind::Memory => self.open().0,
            Kind::Disk(_) => Db::open(self.config()).expect("reopen"),
        }
    }
}

/// Runs the workload clean and returns what it sent through the seam.
fn clean_run(kind: Kind) -> FaultCounts {
    let store = Store::new(kind);
    let (db, control) = store.open();
    support::register_all(&db).expect("register");
    db.flush().expect("flush");
    let start = control.counts();
    let mut model = Model::new();
    for op in workload() {
        let want = model.apply(&op);
        let got = support::run_op(&db, &store.clock, &op).expect("the clean run succeeds");
        assert!(want.admits(&got), "{op:?}: want {want:?}, got {got:?}");
    }
    check(&model, &db, "the clean run");
    control.counts().since(start)
}

fn check(model: &Model, db: &Db, when: &str) {
    let snapshot = support::observe(db).unwrap_or_else(|e| panic!("{when}: reading failed: {e}"));
    model
        .check(&snapshot, true)
        .unwrap_or_else(|e| panic!("{when}: {e}"));
}

/// Whether `snapshot` is what `before` or `after` shows: as a whole for an
/// operation that is one atomic batch, record by record for compaction and
/// epoch rotation (many batches, each atomic).
fn either(before: &Model, after: &Model, snapshot: &Snapshot, op: &Op) -> Result<(), String> {
    let whole = |m: &Model| m.check(snapshot, true);
    if whole(before).is_ok() || whole(after).is_ok() {
        return Ok(());
    }
    if !matches!(op, Op::Compact | Op::RotateEpoch) {
        return Err(format!(
            "neither the state before nor after: before: {}; after: {}",
            whole(before).err().unwrap_or_default(),
            whole(after).err().unwrap_or_default()
        ));
    }
    for (key, observed) in &snapshot.records {
        let one = Snapshot {
            records: [(*key, observed.clone())].into(),
            ..snapshot.clone()
        };
        if let (Err(b), Err(a)) = (before.check(&one, true), after.check(&one, true)) {
            return Err(format!("before: {b}; after: {a}"));
        }
    }
    Ok(())
}

/// Every erased subject or scope of the model has a `KeysDestroyed` entry
/// for its subject in the audit log.
fn erasures_are_audited(model: &Model, db: &Db, when: &str) {
    let entries = db.audit_entries(1, usize::MAX).expect("audit entries");
    let snapshot = support::observe(db).expect("observe");
    for (s, name) in support::model::SUBJECTS.iter().enumerate() {
        let erased_somewhere = snapshot.subject_erased[s]
            || snapshot.records.iter().any(|((rs, _, _), o)| {
                usize::from(*rs) == s && *o == support::model::Observed::Erased
            });
        if !erased_somewhere {
            continue;
        }
        let tag = db.subject_tag(name);
        assert!(
            entries
                .iter()
                .any(|e| e.event == AuditEvent::KeysDestroyed && e.subject == Some(tag)),
            "{when}: {name} is erased but the audit log has no keys-destroyed entry for it \
             (model: {model:?})"
        );
    }
}

/// Injects one fault and checks everything the module docs promise.
fn fault_run(kind: Kind, point: FaultPoint, n: u64, failure: ApplyFailure, reopen: bool) {
    let what = format!("{kind:?}, {point:?} #{n}, {failure:?}, reopen {reopen}");
    let store = Store::new(kind);
    let (db, control) = store.open();
    support::register_all(&db).expect("register");
    db.flush().expect("flush");
    let mut model = Model::new();
    let ops = workload();
    control.fail_nth(point, n, failure);
    let mut failed = None;
    for (i, op) in ops.iter().enumerate() {
        let before = model.clone();
        let want = model.apply(op);
        match support::run_op(&db, &store.clock, op) {
            Ok(got) => assert!(
                want.admits(&got),
                "{what}: {op:?}: want {want:?}, got {got:?}"
            ),
            Err(err) => {
                assert!(
                    matches!(err, Error::Storage(_)),
                    "{what}: {op:?} failed with {err:?}, not Error::Storage"
                );
                assert!(!err.is_erased(), "{what}");
                failed = Some((i, before));
                break;
            }
        }
    }
    let (i, before) = failed.unwrap_or_else(|| panic!("{what}: no operation failed"));
    let op = &ops[i];
    assert_eq!(control.counts().injected, 1, "{what}: one fault fired");
    control.clear();
    let seen = support::observe(&db).unwrap_or_else(|e| panic!("{what}: reading: {e}"));
    let db = if reopen {
        drop(db);
        let db = store.reopen();
        // What the process showed after the failure is what the store
        // holds: no cache may tell a different story than the disk.
        let reopened = support::observe(&db).unwrap_or_else(|e| panic!("{what}: reading: {e}"));
        assert_eq!(
            seen, reopened,
            "{what}: after {op:?} failed, the process showed one outcome and the reopened store another"
        );
        db
    } else {
        db
    };
    let snapshot = seen;
    either(&before, &model, &snapshot, op)
        .unwrap_or_else(|e| panic!("{what}: after {op:?} failed: {e}"));
    support::run_op(&db, &store.clock, op)
        .unwrap_or_else(|e| panic!("{what}: retrying {op:?}: {e}"));
    check(&model, &db, &format!("{what}: after retrying {op:?}"));
    for op in &ops[i + 1..] {
        let want = model.apply(op);
        let got = support::run_op(&db, &store.clock, op)
            .unwrap_or_else(|e| panic!("{what}: {op:?} after the fault: {e}"));
        assert!(
            want.admits(&got),
            "{what}: {op:?} after the fault: want {want:?}, got {got:?}"
        );
    }
    check(&model, &db, &format!("{what}: at the end"));
    erasures_are_audited(&model, &db, &what);
    let report = db.verify().expect("verify");
    assert!(report.is_clean(), "{what}: {report:?}");
    drop(db);
    let db = store.reopen();
    check(&model, &db, &format!("{what}: after a final reopen"));
}

/// Every n of every fault point, on one kind of store.
fn every_fault(kind: Kind, reopen: bool) -> u64 {
    let total = clean_run(kind);
    assert!(
        total.writes > 20 && total.durable_applies > 5 && total.flushes >= 4,
        "{kind:?}: the workload reaches the seam: {total:?}"
    );
    let mut runs = 0;
    for (point, count) in [
        (FaultPoint::Write, total.writes),
        (FaultPoint::DurableApply, total.durable_applies),
        (FaultPoint::Flush, total.flushes),
    ] {
        let failures: &[ApplyFailure] = match point {
            FaultPoint::Flush => &[ApplyFailure::NothingApplied],
            _ => &[ApplyFailure::NothingApplied, ApplyFailure::AppliedNotSynced],
        };
        for &failure in failures {
            for n in 1..=count {
                fault_run(kind, point, n, failure, reopen);
                runs += 1;
            }
        }
    }
    eprintln!("{kind:?} (reopen {reopen}): {runs} faults injected over {total:?}");
    runs
}

#[test]
fn every_write_and_flush_failure_memory() {
    every_fault(Kind::Memory, true);
    every_fault(Kind::Memory, false);
}

#[test]
fn every_write_and_flush_failure_sled() {
    every_fault(Kind::Disk(Backend::Sled), true);
    every_fault(Kind::Disk(Backend::Sled), false);
}

#[test]
fn every_write_and_flush_failure_redb() {
    every_fault(Kind::Disk(Backend::Redb), true);
    every_fault(Kind::Disk(Backend::Redb), false);
}

/// The I/O error kind at the bottom of an engine error, if any.
fn io_kind(err: &Error) -> Option<io::ErrorKind> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        source = e.source();
    }
    None
}

#[test]
fn a_full_disk_fails_writes_and_erases_nothing_until_freed() {
    for kind in KINDS {
        let store = Store::new(kind);
        let (db, control) = store.open();
        support::register_all(&db).expect("register");
        db.put("acct-0", "message_content", b"k", b"kept")
            .expect("put");
        db.flush().expect("flush");
        control.set_disk_full(true);
        let err = db
            .put("acct-0", "message_content", b"k2", b"lost")
            .expect_err("a full disk fails a put");
        assert!(matches!(err, Error::Storage(_)), "{kind:?}: {err:?}");
        assert_eq!(io_kind(&err), Some(io::ErrorKind::StorageFull), "{err:?}");
        assert!(err.is_full(), "{kind:?}: {err:?}");
        let err = db
            .shred("acct-0", Classes::All)
            .expect_err("a full disk fails a shred");
        assert_eq!(io_kind(&err), Some(io::ErrorKind::StorageFull), "{err:?}");
        assert!(err.is_full(), "{kind:?}: {err:?}");
        let err = db.flush().expect_err("and a flush");
        assert_eq!(io_kind(&err), Some(io::ErrorKind::StorageFull), "{err:?}");
        assert_eq!(
            db.get("acct-0", "message_content", b"k")
                .expect("reads work on a full disk")
                .as_deref(),
            Some(&b"kept"[..]),
            "{kind:?}: a failed shred erased nothing"
        );
        assert!(control.counts().injected >= 3);
        control.set_disk_full(false);
        let receipt = db.shred("acct-0", Classes::All).expect("space freed");
        assert_eq!(receipt.erased.len(), 2, "{kind:?}: acct-0 and user-0");
        drop(db);
        let db = store.reopen();
        assert!(
            db.get("acct-0", "message_content", b"k")
                .expect_err("erased")
                .is_erased()
        );
        assert_eq!(db.get("acct-0", "message_content", b"k2").ok(), None);
        assert!(db.verify().expect("verify").is_clean());
    }
}

fn assert_unavailable(result: Result<impl std::fmt::Debug, Error>, what: &str) {
    let err = result.expect_err(what);
    assert!(!err.is_erased(), "{what}: {err:?} must not read as erased");
    assert!(
        matches!(err, Error::KeyProvider(ProviderError::Unavailable { .. })),
        "{what}: {err:?}"
    );
}

#[test]
fn an_unavailable_key_provider_is_never_reported_as_erased() {
    for kind in KINDS {
        let store = Store::new(kind);
        {
            let (db, _) = store.open();
            support::register_all(&db).expect("register");
            db.put("acct-0", "message_content", b"k", b"v")
                .expect("put");
            db.put("acct-1", "invoices", b"i", b"inv").expect("put");
            db.flush().expect("flush");
        }
        let refused = shredkv::internal::open_with_faults(
            store.config(),
            &store.test_store(),
            FaultPlan::none().provider_unavailable(),
        );
        assert_unavailable(refused.map(drop), "open needs the store secret");
        // A fresh open: no key is cached, every read needs the provider.
        let (db, control) = store.open();
        control.set_provider_unavailable(true);
        assert_unavailable(db.get("acct-0", "message_content", b"k"), "get");
        assert_unavailable(db.scan("acct-1", "invoices"), "scan");
        assert_unavailable(db.put("acct-0", "account_profile", b"p", b"v"), "put");
        assert_unavailable(db.compact(), "compact");
        assert_unavailable(db.rotate_epoch(), "rotate");
        let receipt = db
            .shred("acct-1", Classes::All)
            .expect("erasure needs no key provider: destroying keys is a vault write");
        assert_eq!(receipt.erased.len(), 2);
        control.set_provider_unavailable(false);
        assert_eq!(
            db.get("acct-0", "message_content", b"k")
                .expect("reachable again")
                .as_deref(),
            Some(&b"v"[..])
        );
        assert!(
            db.get("acct-1", "invoices", b"i")
                .expect_err("shredded")
                .is_erased()
        );
        assert!(control.counts().injected >= 5, "{:?}", control.counts());
        assert!(db.verify().expect("verify").is_clean());
    }
}

/// Writes a record into each of a few scopes, so a rotation re-wraps several keys.
fn fill(db: &Db) -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut written = Vec::new();
    for subject in support::model::SUBJECTS {
        for class in support::model::CLASSES {
            let value = format!("{subject}/{class}").into_bytes();
            db.put(subject, class, b"r", &value).expect("put");
            written.push((subject, class, value));
        }
    }
    db.flush().expect("flush");
    written
}

fn all_readable(db: &Db, written: &[(&str, &str, Vec<u8>)], when: &str) {
    for (subject, class, value) in written {
        let got = db
            .get(subject, class, b"r")
            .unwrap_or_else(|e| panic!("{when}: {subject}/{class}: {e}"));
        assert_eq!(got.as_ref(), Some(value), "{when}: {subject}/{class}");
    }
}

fn live_epochs(db: &Db) -> Vec<u32> {
    db.stats().expect("stats").live_epochs
}

#[test]
fn an_interrupted_epoch_rotation_resumes_and_destroys_no_epoch_in_use() {
    for kind in KINDS {
        // How many provider calls a rotation makes: under the key tree, the
        // store secret's and the root's unwrap and wrap, and the epoch's
        // creation, whatever the number of live keys.
        let wraps = {
            let store = Store::new(kind);
            let (db, control) = store.open();
            support::register_all(&db).expect("register");
            fill(&db);
            let before = control.counts().provider_calls;
            db.rotate_epoch().expect("rotate");
            control.counts().provider_calls - before
        };
        assert!(wraps >= 5, "{kind:?}: {wraps} provider calls per rotation");
        for n in 1..=2u64 {
            let what = format!("{kind:?}, wrap #{n} fails");
            let store = Store::new(kind);
            let (db, control) = store.open();
            support::register_all(&db).expect("register");
            let written = fill(&db);
            let first = live_epochs(&db);
            assert_eq!(first.len(), 1, "{what}");
            // Call 1 wraps the store secret: failing it leaves an orphan
            // epoch; call 2 fails the re-wrap of the key tree's root.
            control.fail_provider_nth(ProviderCall::Wrap, n);
            assert_unavailable(db.rotate_epoch(), &what);
            assert!(
                live_epochs(&db).len() >= 2,
                "{what}: create_epoch succeeded"
            );
            all_readable(&db, &written, &format!("{what}: after the failure"));
            // Past the wait after which a retired epoch may be destroyed,
            // the resumed re-wrap fails again: nothing may be destroyed.
            store.clock.advance(SignedDuration::from_hours(24 * 40));
            control.fail_provider_nth(ProviderCall::Wrap, 2);
            let injected = control.counts().injected;
            let outcome = db.compact();
            assert!(
                control.counts().injected > injected,
                "{what}: the resumed re-wrap never reached its failing wrap: {outcome:?}"
            );
            // The resume stopped at its second wrap, the root's, so the
            // root is still wrapped under the first epoch: it must survive,
            // however the pass reports the failure.
            assert!(
                live_epochs(&db).contains(&first[0]),
                "{what}: an epoch in use was destroyed ({outcome:?})"
            );
            all_readable(&db, &written, &format!("{what}: after a failed resume"));
            control.clear();
            let db = {
                drop(db);
                store.reopen()
            };
            db.compact().expect("the rotation resumes");
            all_readable(&db, &written, &format!("{what}: after the resume"));
            store.clock.advance(SignedDuration::from_hours(24 * 40));
            db.compact().expect("compact");
            db.compact().expect("compact");
            let live = live_epochs(&db);
            assert!(
                !live.contains(&first[0]),
                "{what}: the first epoch is destroyed in the end: {live:?}"
            );
            all_readable(&db, &written, &format!("{what}: after the old epochs died"));
            let report = db.verify().expect("verify");
            assert!(
                report.is_clean()
                    && !report
                        .problems
                        .iter()
                        .any(|p| p.kind == ProblemKind::Tampered),
                "{what}: {report:?}"
            );
        }
    }
}

/// Regression: a shred whose batch landed although the call failed (the
/// sync failed after the write; sled persists such a batch with its next
/// flush) left the process serving the erased subject from its caches,
/// accepting writes to it, and the next audit append overwrote the
/// erasure's audit entry. Found by `every_write_and_flush_failure_*`.
#[test]
fn a_shred_that_landed_although_it_failed_is_not_served_from_caches() {
    for kind in KINDS {
        let store = Store::new(kind);
        let (db, control) = store.open();
        support::register_all(&db).expect("register");
        db.put("user-0", "message_content", b"k", b"secret")
            .expect("put");
        db.flush().expect("flush");
        assert!(
            db.get("user-0", "message_content", b"k")
                .expect("get")
                .is_some(),
            "the subject and its keys are cached now"
        );
        control.fail_nth(FaultPoint::DurableApply, 1, ApplyFailure::AppliedNotSynced);
        let err = db
            .shred("user-0", Classes::All)
            .expect_err("the sync fails");
        assert!(matches!(err, Error::Storage(_)), "{err:?}");
        control.clear();
        let tag = db.subject_tag("user-0");
        let check = |db: &Db, when: &str| {
            let read = db.get("user-0", "message_content", b"k");
            assert!(
                read.as_ref().is_err_and(Error::is_erased),
                "{kind:?} {when}: the store holds the erasure, but a read gave {read:?}"
            );
            let write = db.put("user-0", "message_content", b"k2", b"late");
            assert!(
                write.as_ref().is_err_and(Error::is_erased),
                "{kind:?} {when}: a write to the erased subject gave {write:?}"
            );
            let entries = db.audit_entries(1, usize::MAX).expect("audit");
            assert!(
                entries
                    .iter()
                    .any(|e| e.event == AuditEvent::KeysDestroyed && e.subject == Some(tag)),
                "{kind:?} {when}: the erasure's audit entry is gone: {entries:#?}"
            );
            assert!(db.verify_audit().expect("chain").breaks.is_empty());
        };
        check(&db, "in the process that saw the failure");
        db.place_hold("acct-1", None, "case 7").expect("hold");
        check(&db, "after the next audit append");
        drop(db);
        check(&store.reopen(), "after reopening");
    }
}
