//! G6 across restores, without silent loss. A restore replays every key the
//! live store destroyed after the backup, including the old key version a
//! re-key replaced. That must happen (the old version also protects the
//! records deleted since: G2), so records of the backup sealed under it
//! cannot come back, among them records still live in the live store. The
//! restore must say so: it is refused unless the caller accepts the loss,
//! and an accepted loss is listed per subject and class in the report and
//! in the audit log. A restore that fails leaves nothing behind.

use std::path::Path;

use shredkv::jiff::SignedDuration;
use shredkv::{
    AuditEvent, Backend, Db, ErasureSource, Error, LossReason, LostRecords, RestoreOptions,
};
use shredkv_tests::{PROFILE, Store, for_each_backend};

const DAY: SignedDuration = SignedDuration::from_hours(24);

/// One day passes and the operator's daily compaction runs.
fn next_day(store: &Store, live: &Db) {
    store.clock().advance(DAY);
    live.compact().expect("compact");
}

/// Whether the audit log records a re-key of `subject`'s keys.
fn rekeyed(live: &Db, subject: &str) -> bool {
    let tag = live.subject_tag(subject);
    live.audit_entries(1, usize::MAX)
        .expect("audit entries")
        .iter()
        .any(|e| e.event == AuditEvent::Rekeyed && e.subject == Some(tag))
}

#[test]
fn restore_before_rekey_reports_lost_records() {
    for_each_backend(|store| {
        let elsewhere = tempfile::tempdir().expect("temp dir");
        let live = store.open();
        live.register_account("a").expect("register");
        live.register_account("b").expect("register");
        live.put("a", PROFILE, b"still-live", b"a live value")
            .expect("put");
        live.put("a", PROFILE, b"deleted", b"a deleted value")
            .expect("put");
        live.put("b", PROFILE, b"untouched", b"b value")
            .expect("put");
        // The delete owes a re-key of a's bucket; the backup is taken before
        // it runs, and holds "still-live" under the version it replaces.
        assert!(live.delete("a", PROFILE, b"deleted").expect("delete"));
        for _ in 0..5 {
            next_day(store, &live);
        }
        let backup = elsewhere.path().join("backup");
        live.backup(&backup).expect("backup");
        let mut days = 0;
        while !rekeyed(&live, "a") {
            days += 1;
            assert!(days <= 60, "no re-key of a's bucket within 60 days");
            next_day(store, &live);
        }
        assert_eq!(
            live.get("a", PROFILE, b"still-live").expect("live get"),
            Some(b"a live value".to_vec()),
            "the record is live in the live store"
        );
        // What the backup cannot bring back: a's one live record of the
        // backup ("deleted" was gone before it); nothing of b.
        let expected = vec![LostRecords {
            subject: live.subject_tag("a"),
            class: PROFILE.to_string(),
            records: 1,
            reason: LossReason::RekeyedAfterBackup,
        }];

        let refused = elsewhere.path().join("refused");
        match Db::restore(
            &backup,
            store.config_at(&refused),
            ErasureSource::Live(&live),
        ) {
            Err(Error::RestoreLosesRecords {
                backup: named,
                lost,
            }) => {
                assert_eq!(named, backup);
                assert_eq!(lost, expected);
            }
            Err(other) => panic!("the restore failed otherwise: {other}"),
            Ok((restored, report)) => panic!(
                "the restore lost a live record silently: {report:?}, get = {:?}",
                restored.get("a", PROFILE, b"still-live")
            ),
        }
        assert!(!refused.exists(), "a refused restore wrote its target");

        let accepted = elsewhere.path().join("accepted");
        let (restored, report) = Db::restore_with(
            &backup,
            store.config_at(&accepted),
            ErasureSource::Live(&live),
            RestoreOptions::default().accept_lost_records(true),
        )
        .expect("a restore that accepts the loss");
        assert_eq!(report.lost, expected);
        assert_eq!(
            restored.get("a", PROFILE, b"still-live").expect("get"),
            None,
            "the accepted loss"
        );
        assert_eq!(
            restored.get("b", PROFILE, b"untouched").expect("get"),
            Some(b"b value".to_vec())
        );
        // A lost record is absent on every read path, not tampered data.
        let export = restored
            .export("a")
            .expect("export of a subject with a lost record");
        assert!(
            !format!("{export:?}").contains("still-live"),
            "the lost record is exported"
        );
        let verified = restored.verify().expect("verify");
        assert!(
            verified.is_clean(),
            "verify reports the accepted loss as a problem: {:?}",
            verified.problems
        );
        let tag = live.subject_tag("a");
        let audited: Vec<String> = restored
            .audit_tail(10)
            .expect("audit")
            .into_iter()
            .filter(|e| e.event == AuditEvent::RestoreReplayed && e.subject == Some(tag))
            .map(|e| e.detail)
            .collect();
        assert_eq!(audited.len(), 1, "{audited:?}");
        assert!(
            audited[0].starts_with("1 records of the backup not restored"),
            "{audited:?}"
        );
        assert!(restored.verify_audit().expect("audit").breaks.is_empty());
    });
}

/// Overwrites one `meta` entry of a closed store or backup directory, behind
/// shredkv's back.
fn damage_meta(dir: &Path, backend: Backend, key: &[u8], value: &[u8]) {
    match backend {
        Backend::Redb => {
            let db = redb::Database::open(dir.join("store.redb")).expect("open redb");
            let txn = db.begin_write().expect("write transaction");
            {
                let table: redb::TableDefinition<'_, &[u8], &[u8]> =
                    redb::TableDefinition::new("meta");
                let mut meta = txn.open_table(table).expect("meta table");
                meta.insert(key, value).expect("insert");
            }
            txn.commit().expect("commit");
        }
        _ => {
            let db = sled::open(dir.join("sled")).expect("open sled");
            let meta = db.open_tree("meta").expect("meta tree");
            meta.insert(key, value).expect("insert");
            db.flush().expect("flush");
        }
    }
}

/// The entries of `dir`, which must exist.
fn entries_of(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .expect("the target directory is still there")
        .map(|e| e.expect("entry").path())
        .collect()
}

#[test]
fn failed_restore_leaves_no_target() {
    for_each_backend(|store| {
        let elsewhere = tempfile::tempdir().expect("temp dir");
        let live = store.open();
        live.register_account("a").expect("register");
        live.put("a", PROFILE, b"k", b"v").expect("put");
        let backup = elsewhere.path().join("backup");
        live.backup(&backup).expect("backup");
        // A damaged class counter in the backup: the restore finds it only
        // once it opens its copy, after writing the target.
        damage_meta(&backup, store.backend(), b"next_class", &[0xFF]);
        let absent = elsewhere.path().join("absent");
        let empty = elsewhere.path().join("empty");
        std::fs::create_dir(&empty).expect("create an empty target");
        for target in [&absent, &empty] {
            let err = Db::restore(&backup, store.config_at(target), ErasureSource::Live(&live))
                .map(|_| ())
                .expect_err("a damaged backup");
            assert!(err.is_integrity_failure(), "failed otherwise: {err}");
        }
        assert!(!absent.exists(), "the restore left the target it created");
        assert_eq!(entries_of(&empty), Vec::<std::path::PathBuf>::new());

        // Past the purge window: refused before anything is written.
        let old = elsewhere.path().join("old");
        live.backup(&old).expect("backup");
        for _ in 0..32 {
            next_day(store, &live);
        }
        for target in [&absent, &empty] {
            let err = Db::restore(&old, store.config_at(target), ErasureSource::Live(&live))
                .map(|_| ())
                .expect_err("a backup older than the purge window");
            assert!(
                matches!(err, Error::StoreKeysDestroyed { .. }),
                "failed otherwise: {err}"
            );
        }
        assert!(!absent.exists(), "the restore left the target it created");
        assert_eq!(entries_of(&empty), Vec::<std::path::PathBuf>::new());
    });
}
