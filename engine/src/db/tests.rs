//! Unit tests of the engine over the in-memory backend. The same scenarios
//! run over sled and redb in the integration tests (`tests/`).

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};

use crate::storage::{Durability, Tree, WriteBatch};

thread_local! {
    /// Makes this thread's next store creation omit its "control plane
    /// sealed" audit entry, as a format-1 build did (see
    /// `a_format_1_store_is_sealed_by_its_first_open_and_never_again`).
    pub(super) static CREATE_AS_FORMAT_1: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}
use crate::{Batch, Classes, Config, Db, Error, ManualClock, PutOptions, SubjectState};

/// A policy with one class of each shape the tests need.
const TEST_POLICY: &str = r#"
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

fn test_config(dir: &tempfile::TempDir, clock: &ManualClock) -> Config {
    let policy = crate::Policy::from_toml_str(TEST_POLICY, "test policy").expect("policy");
    Config::new(dir.path())
        .allow_key_file_in_store(true)
        .policy(policy)
        .clock(Arc::new(clock.clone()))
        .flush_every(None)
        .maintenance_every(None)
}

fn open(dir: &tempfile::TempDir) -> (Db, ManualClock) {
    let clock = ManualClock::new(Timestamp::from_second(1_800_000_000).expect("time"));
    let db = Db::open_in_memory(test_config(dir, &clock)).expect("open");
    (db, clock)
}

#[test]
fn a_receipt_states_the_erasure_time_certificates_and_subject_records_show() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    db.register_account("a").expect("register");
    db.put("a", "message_content", b"k", b"v").expect("put");
    db.put("a", "invoices", b"k", b"v").expect("put");
    // A clock between two seconds: the ledger keeps whole seconds.
    clock.advance(jiff::SignedDuration::from_millis(1_750));
    let class = db
        .shred("a", crate::Classes::Only(&["message_content"]))
        .expect("shred one class");
    let cert = db.certificate("a").expect("certificate");
    assert_eq!(class.erased_at, cert.erasures[0].erased_at);
    assert_eq!(class.erased_at.subsec_nanosecond(), 0);
    clock.advance(jiff::SignedDuration::from_millis(1_250));
    let whole = db.shred("a", crate::Classes::All).expect("shred");
    let info = db.subject("a").expect("read").expect("known");
    assert_eq!(info.erased_at, Some(whole.erased_at));
    let cert = db.certificate("a").expect("certificate");
    assert!(
        cert.erasures
            .iter()
            .any(|e| e.erased_at == whole.erased_at && e.class.is_none())
    );
}

#[test]
fn put_get_scan_delete_round_trip() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, _) = open(&dir);
    db.register_account("a").expect("register");
    db.put("a", "message_content", b"k1", b"v1").expect("put");
    db.put("a", "message_content", b"k2", b"v2").expect("put");
    db.put("a", "message_content", b"k1", b"v1b")
        .expect("overwrite");
    assert_eq!(
        db.get("a", "message_content", b"k1")
            .expect("get")
            .as_deref(),
        Some(&b"v1b"[..])
    );
    assert_eq!(db.get("a", "message_content", b"nope").expect("get"), None);
    let mut keys: Vec<_> = db
        .scan("a", "message_content")
        .expect("scan")
        .into_iter()
        .map(|r| r.key)
        .collect();
    keys.sort();
    assert_eq!(keys, vec![b"k1".to_vec(), b"k2".to_vec()]);
    assert!(db.delete("a", "message_content", b"k1").expect("delete"));
    assert!(
        !db.delete("a", "message_content", b"k1")
            .expect("delete again")
    );
    assert_eq!(db.get("a", "message_content", b"k1").expect("get"), None);
}

#[test]
fn unknown_subject_and_class_are_typed_errors() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, _) = open(&dir);
    assert!(matches!(
        db.put("ghost", "message_content", b"k", b"v"),
        Err(Error::UnknownSubject { .. })
    ));
    db.register_account("a").expect("register");
    let err = db
        .put("a", "no_such_class", b"k", b"v")
        .expect_err("unknown class");
    assert!(matches!(err, Error::UnknownClass { .. }));
    assert!(err.to_string().contains("no_such_class"));
}

#[test]
fn shred_erases_account_and_end_users_and_blocks_writes_until_re_registered() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, _) = open(&dir);
    db.register_account("acct").expect("register");
    db.register_end_user("user", "acct").expect("register");
    db.register_account("other").expect("register");
    db.put("acct", "account_profile", b"name", b"Ada")
        .expect("put");
    db.put("user", "message_content", b"m", b"hello")
        .expect("put");
    db.put("other", "message_content", b"m", b"kept")
        .expect("put");
    let receipt = db.shred("acct", Classes::All).expect("shred");
    assert_eq!(receipt.erased.len(), 2);
    assert!(receipt.keys_destroyed() >= 4, "{receipt:?}");
    for (subject, class) in [("acct", "account_profile"), ("user", "message_content")] {
        assert!(
            db.get(subject, class, b"m")
                .expect_err("erased")
                .is_erased()
        );
        assert!(db.scan(subject, class).expect_err("erased").is_erased());
        assert!(
            db.put(subject, class, b"m", b"again")
                .expect_err("erased")
                .is_erased()
        );
    }
    assert!(db.export("acct").expect_err("erased").is_erased());
    assert_eq!(
        db.get("other", "message_content", b"m")
            .expect("get")
            .as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(
        db.subject("user").expect("subject").map(|s| s.state),
        Some(SubjectState::Erased)
    );
    // Shredding again erases nothing more and answers with the same
    // receipt (a retry after a lost answer cannot be told from a repeat).
    assert_eq!(db.shred("acct", Classes::All).expect("again"), receipt);
    // Re-registration gives new keys; old data stays gone.
    db.re_register("acct").expect("re-register");
    assert_eq!(
        db.get("acct", "account_profile", b"name").expect("get"),
        None
    );
    db.put("acct", "account_profile", b"name", b"new")
        .expect("put after re-register");
    assert_eq!(
        db.get("acct", "account_profile", b"name")
            .expect("get")
            .as_deref(),
        Some(&b"new"[..])
    );
    // The end user is still erased until re-registered itself.
    assert!(
        db.put("user", "message_content", b"m", b"x")
            .expect_err("still erased")
            .is_erased()
    );
}

#[test]
fn shred_of_some_classes_keeps_the_others() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, _) = open(&dir);
    db.register_account("a").expect("register");
    db.put("a", "message_content", b"m", b"msg").expect("put");
    db.put("a", "account_profile", b"p", b"profile")
        .expect("put");
    let receipt = db
        .shred("a", Classes::Only(&["message_content"]))
        .expect("shred");
    assert_eq!(receipt.erased.len(), 1);
    assert!(
        db.get("a", "message_content", b"m")
            .expect_err("erased")
            .is_erased()
    );
    assert_eq!(
        db.get("a", "account_profile", b"p")
            .expect("get")
            .as_deref(),
        Some(&b"profile"[..])
    );
    let export = db.export("a").expect("export");
    assert_eq!(export.record_count(), 1);
}

#[test]
fn legal_hold_blocks_shred_and_is_audited() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, _) = open(&dir);
    db.register_account("a").expect("register");
    db.put("a", "invoices", b"2026-001", b"total 10")
        .expect("put");
    db.put("a", "message_content", b"m", b"msg").expect("put");
    db.place_hold("a", Some("invoices"), "case 17")
        .expect("hold");
    let receipt = db.shred("a", Classes::All).expect("shred");
    assert_eq!(receipt.retained.len(), 1);
    assert!(receipt.retained[0].reason.contains("case 17"));
    assert_eq!(
        db.get("a", "invoices", b"2026-001")
            .expect("held")
            .as_deref(),
        Some(&b"total 10"[..])
    );
    assert!(
        db.get("a", "message_content", b"m")
            .expect_err("erased")
            .is_erased()
    );
    assert_eq!(db.holds().expect("holds").len(), 1);
    assert!(db.release_hold("a", Some("invoices")).expect("release"));
    let receipt = db.shred("a", Classes::All).expect("shred");
    assert!(receipt.retained.is_empty());
    assert!(
        db.get("a", "invoices", b"2026-001")
            .expect_err("erased")
            .is_erased()
    );
    let report = db.verify_audit().expect("verify");
    assert!(report.breaks.is_empty());
    let events: Vec<_> = crate::audit::read_entries(db.inner.storage.as_ref(), 1, 100)
        .expect("entries")
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert!(events.contains(&crate::AuditEvent::ErasureBlocked));
    assert!(events.contains(&crate::AuditEvent::HoldReleased));
}

#[test]
fn restricted_subjects_export_but_do_not_read() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, _) = open(&dir);
    db.register_account("a").expect("register");
    db.put("a", "message_content", b"m", b"msg").expect("put");
    db.restrict("a").expect("restrict");
    assert!(matches!(
        db.get("a", "message_content", b"m"),
        Err(Error::Restricted { .. })
    ));
    assert!(matches!(
        db.put("a", "message_content", b"m", b"x"),
        Err(Error::Restricted { .. })
    ));
    assert_eq!(db.export("a").expect("export").record_count(), 1);
    db.lift_restriction("a").expect("lift");
    assert!(db.get("a", "message_content", b"m").expect("get").is_some());
}

#[test]
fn expiry_hides_records_and_policy_caps_customer_ttl() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    db.register_account("a").expect("register");
    let soon = db.now() + SignedDuration::from_hours(1);
    db.put_with(
        "a",
        "message_content",
        b"m",
        b"msg",
        PutOptions::expires_at(soon),
    )
    .expect("put");
    assert!(db.get("a", "message_content", b"m").expect("get").is_some());
    clock.advance(SignedDuration::from_hours(2));
    assert_eq!(db.get("a", "message_content", b"m").expect("get"), None);
    assert!(db.scan("a", "message_content").expect("scan").is_empty());
    // An expiry already past stores nothing (see
    // `a_write_whose_expiry_has_passed_expires_the_record`).
    let past = db.now() - SignedDuration::from_hours(1);
    db.put_with(
        "a",
        "message_content",
        b"m",
        b"x",
        PutOptions::expires_at(past),
    )
    .expect("expired on arrival");
    assert_eq!(db.get("a", "message_content", b"m").expect("get"), None);
    let far = db.now() + SignedDuration::from_hours(24 * 400);
    assert!(matches!(
        db.put_with(
            "a",
            "message_content",
            b"m",
            b"x",
            PutOptions::expires_at(far)
        ),
        Err(Error::PolicyViolation { .. })
    ));
    // A class whose clock starts with an event takes no customer expiry.
    let soon = db.now() + SignedDuration::from_hours(1);
    assert!(matches!(
        db.put_with(
            "a",
            "account_profile",
            b"p",
            b"x",
            PutOptions::expires_at(soon)
        ),
        Err(Error::PolicyViolation { .. })
    ));
}

#[test]
fn batch_is_all_or_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, _) = open(&dir);
    db.register_account("a").expect("register");
    let mut batch = Batch::new();
    batch
        .put("a", "message_content", b"1", b"one")
        .put("ghost", "message_content", b"2", b"two");
    assert!(db.apply(batch).is_err());
    assert_eq!(db.get("a", "message_content", b"1").expect("get"), None);
    let mut batch = Batch::new();
    batch
        .put("a", "message_content", b"1", b"one")
        .delete("a", "message_content", b"1")
        .put("a", "message_content", b"2", b"two");
    db.apply(batch).expect("apply");
    assert_eq!(db.scan("a", "message_content").expect("scan").len(), 1);
}

/// Reads every (subject, key) of `class`, returning the values and how many
/// reads failed with an integrity error (any other error fails the test).
fn read_all(db: &Db, class: &str) -> (Vec<Option<Vec<u8>>>, usize) {
    let mut values = Vec::new();
    let mut failures = 0;
    for s in ["a", "b"] {
        for k in [&b"one"[..], b"two"] {
            match db.get(s, class, k) {
                Ok(v) => values.push(v),
                Err(err) => {
                    assert!(err.is_integrity_failure(), "{err}");
                    let text = err.to_string();
                    assert!(text.contains(class) && text.contains("subject"), "{text}");
                    values.push(None);
                    failures += 1;
                }
            }
        }
    }
    (values, failures)
}

fn data_entries(db: &Db) -> Vec<(Vec<u8>, Vec<u8>)> {
    raw_entries(db.inner.storage.as_ref(), Tree::Data)
}

fn overwrite(db: &Db, entries: &[(Vec<u8>, Vec<u8>)]) {
    let mut batch = WriteBatch::new();
    for (k, v) in entries {
        batch.put(Tree::Data, k.clone(), v.clone());
    }
    db.inner
        .storage
        .apply(&batch, Durability::Buffered)
        .expect("apply");
}

/// G5 in both key modes: a value copied over another record (same subject
/// or another) and any flipped byte give a typed error, never data.
#[test]
fn moved_or_flipped_values_are_tampered_never_data() {
    for class in ["invoices", "message_content"] {
        let dir = tempfile::tempdir().expect("dir");
        let (db, _) = open(&dir);
        for s in ["a", "b"] {
            db.register_account(s).expect("register");
            db.put(s, class, b"one", format!("{s}-first").as_bytes())
                .expect("put");
            db.put(s, class, b"two", format!("{s}-second").as_bytes())
                .expect("put");
        }
        let entries = data_entries(&db);
        assert_eq!(entries.len(), 4);
        let (original, failures) = read_all(&db, class);
        assert_eq!(failures, 0);
        for (i, (_, value)) in entries.iter().enumerate() {
            for (j, (key, _)) in entries.iter().enumerate() {
                if i == j {
                    continue;
                }
                overwrite(&db, &[(key.clone(), value.clone())]);
                let (values, failures) = read_all(&db, class);
                assert_eq!(failures, 1, "{class}: value {i} moved onto record {j}");
                for (got, want) in values.iter().zip(&original) {
                    assert!(
                        got.is_none() || got == want,
                        "{class}: a read returned another record's data"
                    );
                }
                overwrite(&db, &entries);
            }
        }
        let (key, value) = &entries[0];
        for i in 0..value.len() {
            let mut flipped = value.clone();
            flipped[i] ^= 0x01;
            overwrite(&db, &[(key.clone(), flipped)]);
            let (_, failures) = read_all(&db, class);
            assert_eq!(failures, 1, "{class}: flip at byte {i}");
        }
    }
}

#[test]
fn ordered_classes_scan_in_key_order() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, _) = open(&dir);
    db.register_account("a").expect("register");
    for k in [&b"2026-03"[..], b"2026-01", b"2026-02"] {
        db.put("a", "invoices", k, b"x").expect("put");
    }
    let keys: Vec<_> = db
        .scan("a", "invoices")
        .expect("scan")
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(
        keys,
        vec![
            b"2026-01".to_vec(),
            b"2026-02".to_vec(),
            b"2026-03".to_vec()
        ]
    );
}

#[test]
fn overwrite_and_delete_record_a_rekey_debt() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, _) = open(&dir);
    db.register_account("a").expect("register");
    db.put("a", "message_content", b"m", b"1").expect("put");
    let debts = || {
        let mut n = 0;
        db.inner
            .storage
            .scan(
                Tree::Debts,
                std::ops::Bound::Unbounded,
                std::ops::Bound::Unbounded,
                crate::storage::Order::Ascending,
                &mut |_, _| {
                    n += 1;
                    std::ops::ControlFlow::Continue(())
                },
            )
            .expect("scan");
        n
    };
    assert_eq!(debts(), 0);
    db.put("a", "message_content", b"m", b"2")
        .expect("overwrite");
    assert_eq!(debts(), 1);
    db.delete("a", "message_content", b"m").expect("delete");
    assert_eq!(debts(), 1, "one debt per key version");
}

#[test]
fn keys_rotate_after_their_seal_budget() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(Timestamp::from_second(1_800_000_000).expect("time"));
    let db =
        Db::open_in_memory(test_config(&dir, &clock).retire_keys_after_seals(3)).expect("open");
    db.register_account("a").expect("register");
    for i in 0..10u8 {
        db.put("a", "message_content", &[i], &[i]).expect("put");
    }
    for i in 0..10u8 {
        assert_eq!(
            db.get("a", "message_content", &[i])
                .expect("get")
                .as_deref(),
            Some(&[i][..])
        );
    }
    let mut versions = 0;
    crate::storage::scan_prefix(
        db.inner.storage.as_ref(),
        Tree::Vault,
        &db.subject_tag("a").0,
        &mut |k, _| {
            if shredkv_crypto::KeyId::from_bytes(k)
                .is_some_and(|id| id.bucket == crate::vault::OPEN_BUCKET)
            {
                versions += 1;
            }
            std::ops::ControlFlow::Continue(())
        },
    )
    .expect("scan");
    assert!(
        versions >= 4,
        "{versions} key versions for 10 seals at 3 per key"
    );
}

/// `stats` reports the capacity and headroom of the filesystem a local
/// store is on, as `df` (another program, reading the same kernel figures
/// its own way) reports them: the size exactly, the free space within what
/// other writers may change meanwhile. Free space for an unprivileged
/// writer (df's "avail"), not the blocks reserved for root besides.
#[test]
fn stats_report_the_filesystems_capacity_and_headroom() {
    for backend in [crate::Backend::Redb, crate::Backend::Sled] {
        let dir = tempfile::tempdir().expect("dir");
        let clock = ManualClock::new(Timestamp::from_second(1_800_000_000).expect("time"));
        let db = Db::open(test_config(&dir, &clock).backend(backend)).expect("open");
        db.register_account("a").expect("register");
        let stats = db.stats().expect("stats");
        assert_filesystem_figures(dir.path(), &stats);
    }
}

/// `stats`'s capacity and headroom against `df`'s for `dir`.
fn assert_filesystem_figures(dir: &std::path::Path, stats: &crate::Stats) {
    let df = std::process::Command::new("df")
        .args(["-B1", "--output=size,avail"])
        .arg(dir)
        .output()
        .expect("df runs");
    assert!(df.status.success(), "df: {df:?}");
    let text = String::from_utf8(df.stdout).expect("df prints text");
    let figures: Vec<u64> = text
        .lines()
        .nth(1)
        .expect("df's figures")
        .split_whitespace()
        .map(|f| f.parse().expect("a number of bytes"))
        .collect();
    let (size, avail) = (figures[0], figures[1]);
    assert_eq!(stats.capacity_bytes, Some(size), "df: {text}");
    let headroom = stats
        .headroom_bytes
        .expect("a local store reports its headroom");
    assert!(
        headroom.abs_diff(avail) < 256 << 20,
        "headroom {headroom} B, df's avail {avail} B"
    );
    assert!(headroom <= size);
}

#[test]
fn stats_and_verify_report_what_is_stored_and_what_is_damaged() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, _) = open(&dir);
    db.register_account("a").expect("register");
    db.register_end_user("u", "a").expect("register");
    for i in 0..5u8 {
        db.put("a", "message_content", &[i], b"value").expect("put");
    }
    db.put("u", "invoices", b"2026-1", b"total").expect("put");
    let stats = db.stats().expect("stats");
    assert_eq!((stats.accounts, stats.end_users, stats.active), (1, 1, 2));
    let messages = stats
        .classes
        .iter()
        .find(|c| c.name == "message_content")
        .expect("class");
    assert_eq!(messages.records, 5);
    assert!(stats.keys_live >= 3);
    let clean = db.verify().expect("verify");
    assert!(clean.is_clean(), "{clean:?}");
    assert_eq!(clean.records_checked, 6);

    // Damage one record (checksum intact = tampering) and one (checksum broken = corruption).
    let entries = data_entries(&db);
    let (k0, v0) = &entries[0];
    let mut tampered = v0.clone();
    let body = tampered.len() - 4;
    tampered[body - 1] ^= 1;
    let crc = crc32fast::hash(&tampered[..body]);
    tampered[body..].copy_from_slice(&crc.to_be_bytes());
    let (k1, v1) = &entries[1];
    let mut corrupt = v1.clone();
    corrupt[0] ^= 0xff;
    overwrite(&db, &[(k0.clone(), tampered), (k1.clone(), corrupt)]);
    let report = db.verify().expect("verify");
    assert_eq!(report.records_checked, 4);
    let kinds: Vec<_> = report.problems.iter().map(|p| p.kind).collect();
    assert_eq!(kinds.len(), 2, "{report:?}");
    assert!(kinds.contains(&crate::ProblemKind::Tampered));
    assert!(kinds.contains(&crate::ProblemKind::Corrupt));

    db.shred("a", Classes::All).expect("shred");
    let report = db.verify().expect("verify");
    assert_eq!(
        report.records_checked, 0,
        "erased records are dead, not readable"
    );
    assert!(report.audit.breaks.is_empty());
    assert!(
        db.audit_tail(2)
            .expect("tail")
            .iter()
            .any(|e| e.event == crate::AuditEvent::KeysDestroyed)
    );
}

#[test]
fn export_by_tag_matches_export_by_id() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, _clock) = open(&dir);
    db.register_account("acct").expect("account");
    db.register_end_user("user", "acct").expect("user");
    db.put("user", "message_content", b"m", b"hi").expect("put");
    let tag = db.subject_tag("acct");
    assert_eq!(
        db.export_tag(tag).expect("by tag"),
        db.export("acct").expect("by id")
    );
    db.shred("acct", Classes::All).expect("shred");
    assert!(db.export_tag(tag).expect_err("erased").is_erased());
}

#[test]
fn class_name_names_the_class_numbers_audit_entries_carry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (db, _clock) = open(&dir);
    db.register_account("acct").expect("register");
    db.place_hold("acct", Some("invoices"), "case 1")
        .expect("hold");
    let entry = db
        .audit_tail(1)
        .expect("audit")
        .pop()
        .expect("the hold's entry");
    let number = entry.class.expect("a class hold names its class");
    assert_eq!(db.class_name(number).as_deref(), Some("invoices"));
    for class in ["message_content", "invoices", "account_profile"] {
        let found = (0..=u16::MAX).find(|n| db.class_name(*n).as_deref() == Some(class));
        assert!(found.is_some(), "{class} has a number");
    }
    assert_eq!(db.class_name(0), None);
    assert_eq!(db.class_name(u16::MAX), None);
}

/// Reads hide a record from its expiry on, to the second, whether or not
/// compaction has run: `get`, `get_record` and `scan` return it one second
/// before its expiry and not at it.
#[test]
fn a_record_is_hidden_from_its_expiry_on() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    db.register_account("a").expect("register");
    let expiry = db.now() + SignedDuration::from_hours(1);
    db.put_with(
        "a",
        "message_content",
        b"m",
        b"msg",
        PutOptions::expires_at(expiry),
    )
    .expect("put");
    clock.set(expiry - SignedDuration::from_secs(1));
    assert_eq!(
        db.get("a", "message_content", b"m")
            .expect("get")
            .as_deref(),
        Some(&b"msg"[..])
    );
    assert_eq!(db.scan("a", "message_content").expect("scan").len(), 1);
    clock.set(expiry);
    assert_eq!(db.get("a", "message_content", b"m").expect("get"), None);
    assert_eq!(
        db.get_record("a", "message_content", b"m")
            .expect("get_record"),
        None
    );
    assert!(db.scan("a", "message_content").expect("scan").is_empty());
}

/// Records, batches and exports hold subject ids, record keys and values:
/// their `Debug` (what ends up in logs and panic messages) shows none.
#[test]
fn debug_output_shows_no_personal_data() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, _clock) = open(&dir);
    let (subject, key, value) = ("alice@example.com", b"dm-with-bob", b"meet at the clinic");
    db.register_account(subject).expect("register");
    db.put(subject, "message_content", key, value).expect("put");
    let mut batch = Batch::new();
    batch.put(subject, "message_content", key, value);
    batch.delete(subject, "message_content", key);
    let mut borrowed = String::new();
    db.scan_with(subject, "message_content", &mut |record| {
        borrowed = format!("{record:?}");
        std::ops::ControlFlow::Continue(())
    })
    .expect("scan_with");
    let shown = [
        format!("{batch:?}"),
        format!("{:?}", db.scan(subject, "message_content").expect("scan")),
        format!("{:?}", db.export(subject).expect("export")),
        borrowed,
    ];
    for text in &shown {
        for secret in [subject, "dm-with-bob", "meet at the clinic"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        let bytes = |s: &str| format!("{s:?}");
        assert!(!text.contains(&bytes("dm-with-bob")), "{text}");
    }
    assert!(
        shown[0].contains("put message_content <11 byte key> <18 byte value>"),
        "{}",
        shown[0]
    );
    assert!(shown[1].contains("<18 bytes>"), "{}", shown[1]);
    assert!(shown[3].starts_with("RecordRef"), "{}", shown[3]);
    assert!(shown[3].contains("<18 bytes>"), "{}", shown[3]);
}

/// A backup holds the store's ciphertext: its directory is owner-only like
/// the store's, whatever the umask.
#[cfg(unix)]
#[test]
fn a_backup_directory_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let db = Db::open(
        Config::new(dir.path().join("store"))
            .allow_key_file_in_store(true)
            .flush_every(None)
            .maintenance_every(None),
    )
    .expect("open");
    for (name, precreate) in [("new", false), ("existing-empty", true)] {
        let dest = dir.path().join(name);
        if precreate {
            std::fs::create_dir(&dest).expect("mkdir");
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        db.backup(&dest).expect("backup");
        let mode = std::fs::metadata(&dest).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{name}: {mode:o}");
    }
}

/// The anchor check at open: a cut audit tail or a rewritten anchored entry
/// is refused; a store ahead of its anchor (a crash between the store's
/// commit and the anchor's) is brought level.
#[test]
fn the_anchor_check_refuses_a_cut_or_rewritten_chain_and_levels_a_store_ahead() {
    use crate::audit::{AuditEvent, AuditLog, PendingEntry};
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    db.register_account("a").expect("register");
    db.put("a", "message_content", b"m", b"v").expect("put");
    db.shred("a", Classes::All).expect("shred");
    let storage = db.inner.storage.as_ref();
    let provider = Arc::clone(db.inner.vault.provider());
    // The open store's own (keyed) log, its head read again from the
    // edited tree each time.
    let check = || {
        db.inner.audit.reread_head();
        super::anchor::check(storage, &db.inner.audit, provider.as_ref(), dir.path())
    };
    check().expect("level with its anchor");
    let kept = provider.anchor().expect("anchor").expect("set");
    let key = kept.seq.to_be_bytes();
    let last = storage.get(Tree::Audit, &key).expect("get").expect("entry");
    let refused = |what: &str| match check() {
        Err(Error::StoreRolledBack { detail, .. }) => detail,
        other => panic!("{what}: expected StoreRolledBack, got {other:?}"),
    };

    let mut cut = WriteBatch::new();
    cut.remove(Tree::Audit, key);
    storage.apply(&cut, Durability::Durable).expect("cut");
    assert!(refused("tail cut").contains("1 durable audit entries are missing"));

    let previous = storage
        .get(Tree::Audit, &(kept.seq - 1).to_be_bytes())
        .expect("get")
        .expect("entry");
    let mut rewrite = WriteBatch::new();
    rewrite.put(Tree::Audit, key, previous);
    storage
        .apply(&rewrite, Durability::Durable)
        .expect("rewrite");
    assert!(refused("rewritten").contains("is not the one anchored"));

    let mut put_back = WriteBatch::new();
    put_back.put(Tree::Audit, key, last);
    storage
        .apply(&put_back, Durability::Durable)
        .expect("put back");
    check().expect("intact again");

    // Ahead: a durable entry the anchor did not follow (appended by an
    // unanchored log).
    AuditLog::open(storage)
        .expect("open")
        .commit(
            storage,
            WriteBatch::new(),
            &[PendingEntry::new(AuditEvent::HoldPlaced, None, None, "x")],
            crate::Clock::now(&clock),
            Durability::Durable,
        )
        .expect("commit");
    assert_eq!(
        provider.anchor().expect("anchor"),
        Some(kept),
        "not followed"
    );
    check().expect("ahead is brought level");
    let level = provider.anchor().expect("anchor").expect("set");
    assert_eq!(
        (level.generation, level.seq),
        (kept.generation, kept.seq + 1)
    );
}

/// "A crash can only over-count seals": a write whose batch carried a new
/// seal reservation fails, later writes under the same key succeed, and
/// the store stops (a crash: the trees stay as written). The reservation
/// on disk must cover every seal made, or the next process would count
/// from too low and could seal past the retirement point.
#[test]
fn a_failed_write_with_a_seal_reservation_never_leaves_seals_unreserved() {
    use crate::internal::{
        ApplyFailure, FaultPlan, FaultPoint, MemoryKeyProvider, MemoryStore, TestStore,
        open_with_faults,
    };
    let dir = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(Timestamp::from_second(1_800_000_000).expect("time"));
    let trees = MemoryStore::new();
    let config =
        || test_config(&dir, &clock).key_provider(Arc::new(MemoryKeyProvider::new()) as Arc<_>);
    let (db, control) = open_with_faults(
        config(),
        &TestStore::Memory(trees.clone()),
        FaultPlan::none(),
    )
    .expect("open");
    db.register_account("a").expect("register");
    // A new key reserves SEAL_RESERVATION (65,536) seals when it is made.
    let reserved_at_creation = 1u64 << 16;
    let mut sealed = 0u64;
    for i in 0..reserved_at_creation - 1 {
        db.put("a", "message_content", &i.to_be_bytes(), b"v")
            .expect("put");
        sealed += 1;
    }
    // The next seal reaches the reservation: its batch carries a new one,
    // and fails.
    control.fail_nth(FaultPoint::Write, 1, ApplyFailure::NothingApplied);
    db.put("a", "message_content", b"failed", b"v")
        .expect_err("the write fails");
    sealed += 1;
    for i in 0..10u64 {
        db.put("a", "message_content", &(1_000_000 + i).to_be_bytes(), b"v")
            .expect("put");
        sealed += 1;
    }
    let storage = Arc::clone(&db.inner.storage);
    drop(db);
    let mut reserved = Vec::new();
    crate::storage::scan_prefix(storage.as_ref(), Tree::Seals, &[], &mut |_, v| {
        reserved.push(
            crate::vault::SealRecord::decode(v)
                .expect("seal record")
                .reserved,
        );
        std::ops::ControlFlow::Continue(())
    })
    .expect("scan");
    assert_eq!(reserved.len(), 1, "one key sealed everything: {reserved:?}");
    assert!(
        reserved[0] >= sealed,
        "{sealed} seals made, {} reserved on disk: a crash now would under-count",
        reserved[0]
    );
}

/// Turns a sealed store back into what a format-1 build wrote: every
/// control value without its MAC, the format byte 1. Returns the values
/// stripped.
fn unseal(raw: &dyn crate::storage::Storage, sealed: &dyn crate::storage::Storage) -> u64 {
    use std::ops::{Bound, ControlFlow};
    let mut stripped = 0u64;
    let mut batch = WriteBatch::new();
    for tree in Tree::ALL {
        raw.scan(
            tree,
            Bound::Unbounded,
            Bound::Unbounded,
            crate::storage::Order::Ascending,
            &mut |k, v| {
                let plain = sealed.get(tree, k).expect("get").expect("present");
                if plain != v {
                    assert_eq!(plain.len() + crate::storage::sealed::MAC_LEN, v.len());
                    stripped += 1;
                    batch.put(tree, k, plain);
                }
                ControlFlow::Continue(())
            },
        )
        .expect("scan");
    }
    batch.put(Tree::Meta, super::meta::FORMAT, vec![1]);
    raw.apply(&batch, Durability::Durable).expect("apply");
    stripped
}

/// A store made by a format-1 build (control values under a CRC only) is
/// sealed by its first open, in full, audited, and works on: its hold
/// still blocks, its data reads, its deadlines still destroy. Setting its
/// format byte back to 1 afterwards (to slip unsealed values in) is refused.
#[test]
fn a_format_1_store_is_sealed_by_its_first_open_and_never_again() {
    use crate::internal::MemoryKeyProvider;
    use crate::storage::Storage;
    use crate::storage::memory::MemoryStorage;
    let dir = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(Timestamp::from_second(1_800_000_000).expect("time"));
    let raw: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let provider: Arc<dyn shredkv_crypto::KeyProvider> = Arc::new(MemoryKeyProvider::new());
    let reopen = || {
        Db::open_with(
            test_config(&dir, &clock),
            Arc::clone(&raw),
            Arc::clone(&provider),
            false,
        )
    };
    CREATE_AS_FORMAT_1.set(true);
    let db = reopen().expect("create");
    CREATE_AS_FORMAT_1.set(false);
    for s in ["a", "b", "c"] {
        db.register_account(s).expect("register");
    }
    let in_a_day = crate::Clock::now(&clock) + SignedDuration::from_hours(24);
    db.put_with(
        "a",
        "message_content",
        b"expiring",
        b"v",
        PutOptions::expires_at(in_a_day),
    )
    .expect("put");
    db.put("a", "message_content", b"kept", b"v").expect("put");
    db.put("b", "message_content", b"held", b"v").expect("put");
    db.place_hold("b", None, "litigation").expect("hold");
    db.shred("c", Classes::All).expect("shred");
    let sealed = Arc::clone(&db.inner.storage);
    drop(db);
    let stripped = unseal(raw.as_ref(), sealed.as_ref());
    assert!(stripped >= 10, "{stripped} values stripped");

    // The first open seals it with the clock set back two days: the
    // sealing is dated by the store's time, not before what it sealed.
    let used_until = crate::Clock::now(&clock);
    clock.advance(SignedDuration::from_hours(-48));
    let db = reopen().expect("a format-1 store opens");
    assert_eq!(
        raw.get(Tree::Meta, super::meta::FORMAT).expect("get"),
        Some(vec![super::STORE_FORMAT])
    );
    let (failing, checked) = db.inner.sealed.sweep(10).expect("sweep");
    assert_eq!(failing, Vec::new());
    assert_eq!(checked, stripped, "every control value sealed, no other");
    let sealing: Vec<_> = db
        .audit_entries(1, 1000)
        .expect("audit")
        .into_iter()
        .filter(|e| e.event == crate::AuditEvent::ControlPlaneSealed)
        .collect();
    assert_eq!(sealing.len(), 1);
    assert_eq!(
        sealing[0].detail,
        format!("format 1 → 4: {stripped} control values sealed")
    );
    assert!(
        sealing[0].time >= used_until && db.now() >= used_until,
        "sealed at {}, the store's time {}, used until {used_until}",
        sealing[0].time,
        db.now()
    );
    clock.advance(SignedDuration::from_hours(48));
    assert_eq!(db.verify_audit().expect("chain").breaks, Vec::new());
    db.shred("b", Classes::All).expect("a held shred parks");
    assert_eq!(
        db.get("b", "message_content", b"held")
            .expect("get")
            .as_deref(),
        Some(&b"v"[..]),
        "the hold still holds"
    );
    assert_eq!(
        db.get("a", "message_content", b"kept")
            .expect("get")
            .as_deref(),
        Some(&b"v"[..])
    );
    clock.advance(SignedDuration::from_hours(72));
    let report = db.compact().expect("compact");
    assert!(report.keys_destroyed >= 1, "{report:?}");
    let sealed = Arc::clone(&db.inner.storage);
    drop(db);
    drop(reopen().expect("a sealed store reopens"));

    // Set back to format 1 with its values unsealed: refused, naming the entry.
    assert!(unseal(raw.as_ref(), sealed.as_ref()) >= 10);
    match reopen() {
        Err(Error::Tampered { location }) => {
            assert_eq!(location.tree, "meta");
            assert!(
                location
                    .key_hex
                    .contains(&format!("audit entry {}", sealing[0].seq)),
                "{location}"
            );
        }
        other => panic!("expected Tampered, got {other:?}"),
    }
}

/// `apply` says what each operation did, in batch order, counting earlier
/// operations of the same batch and expired records as the reader sees them.
#[test]
fn apply_reports_each_operations_outcome() {
    use crate::Outcome::{Created, Deleted, NotFound, Replaced};
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    db.register_account("a").expect("register");
    db.put("a", "message_content", b"old", b"v").expect("put");
    let soon = crate::Clock::now(&clock) + SignedDuration::from_hours(1);
    db.put_with(
        "a",
        "message_content",
        b"expired",
        b"v",
        PutOptions::expires_at(soon),
    )
    .expect("put");
    clock.advance(SignedDuration::from_hours(2));
    let mut batch = Batch::new();
    batch
        .put("a", "message_content", b"new", b"1")
        .put("a", "message_content", b"new", b"2")
        .put("a", "message_content", b"old", b"3")
        .put("a", "message_content", b"expired", b"4")
        .delete("a", "message_content", b"old")
        .delete("a", "message_content", b"never")
        .delete("a", "message_content", b"new");
    let applied = db.apply(batch).expect("apply");
    assert_eq!(
        applied.outcomes,
        vec![
            Created, Replaced, Replaced, Created, Deleted, NotFound, Deleted
        ]
    );
}

/// Application events join the keyed chain; a detail that could not be a
/// short, plain statement is refused, and so is an unknown subject.
#[test]
fn application_events_join_the_audit_chain() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, _) = open(&dir);
    db.register_account("a").expect("register");
    let head = db.audit_event(Some("a"), "export sent").expect("event");
    let plain = db.audit_event(None, "nightly job done").expect("event");
    assert_eq!(plain.seq, head.seq + 1);
    let entries = db.audit_entries(head.seq, 2).expect("entries");
    assert_eq!(entries[0].event, crate::AuditEvent::Application);
    assert_eq!(entries[0].detail, "export sent");
    assert!(entries[0].keyed);
    assert_eq!(entries[0].hash, head.hash);
    assert_eq!(entries[1].subject, None);
    assert_eq!(db.verify_audit().expect("chain").breaks, Vec::new());
    let too_long = "x".repeat(crate::MAX_AUDIT_DETAIL_LEN + 1);
    for bad in ["", "  ", "line\nbreak", too_long.as_str()] {
        assert!(matches!(
            db.audit_event(None, bad),
            Err(Error::InvalidArgument {
                what: "audit detail",
                ..
            })
        ));
    }
    assert!(
        db.audit_event(Some("nobody"), "x")
            .expect_err("unknown subject")
            .is_not_found()
    );
}

/// `stats` tells dead records (expired, or under a destroyed key) from the
/// live ones it counts with them.
#[test]
fn stats_count_dead_records_apart() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    db.register_account("a").expect("register");
    db.register_account("b").expect("register");
    let soon = crate::Clock::now(&clock) + SignedDuration::from_hours(1);
    for key in [&b"1"[..], b"2", b"3"] {
        db.put("a", "message_content", key, b"v").expect("put");
    }
    for key in [&b"e1"[..], b"e2"] {
        db.put_with(
            "a",
            "message_content",
            key,
            b"v",
            PutOptions::expires_at(soon),
        )
        .expect("put");
    }
    for key in [&b"x"[..], b"y"] {
        db.put("b", "message_content", key, b"v").expect("put");
    }
    let messages = |db: &Db| {
        db.stats()
            .expect("stats")
            .classes
            .into_iter()
            .find(|c| c.name == "message_content")
            .expect("class")
    };
    assert_eq!((messages(&db).records, messages(&db).dead), (7, 0));
    clock.advance(SignedDuration::from_hours(2));
    db.shred("b", Classes::All).expect("shred");
    let after = messages(&db);
    assert_eq!((after.records, after.dead), (7, 4), "2 expired, 2 erased");
}

/// A rewrite that keeps an expiry already past expires the record at once:
/// nothing is stored, the live record under the key is removed (as a
/// delete), and `apply` says so; a class without customer expiries refuses
/// it as any expiry.
#[test]
fn a_write_whose_expiry_has_passed_expires_the_record() {
    use crate::Outcome::{Created, Deleted, NotFound};
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    db.register_account("a").expect("register");
    let now = crate::Clock::now(&clock);
    let past = now - SignedDuration::from_hours(1);
    db.put("a", "message_content", b"m", b"v1").expect("put");
    db.put_with(
        "a",
        "message_content",
        b"m",
        b"v2",
        PutOptions::expires_at(past),
    )
    .expect("a past expiry is accepted");
    assert_eq!(db.get("a", "message_content", b"m").expect("get"), None);
    db.put_with(
        "a",
        "message_content",
        b"never",
        b"v",
        PutOptions::expires_at(past),
    )
    .expect("over nothing");
    assert_eq!(db.get("a", "message_content", b"never").expect("get"), None);
    let mut batch = Batch::new();
    batch
        .put("a", "message_content", b"b", b"v")
        .put_with(
            "a",
            "message_content",
            b"b",
            b"v",
            PutOptions::expires_at(past),
        )
        .put_with(
            "a",
            "message_content",
            b"c",
            b"v",
            PutOptions::expires_at(past),
        );
    assert_eq!(
        db.apply(batch).expect("apply").outcomes,
        vec![Created, Deleted, NotFound]
    );
    assert!(matches!(
        db.put_with("a", "invoices", b"i", b"v", PutOptions::expires_at(past)),
        Err(Error::PolicyViolation { .. })
    ));
    // An expiry exactly now has passed too (reads hide a record from its expiry on).
    db.put("a", "message_content", b"n", b"v").expect("put");
    db.put_with(
        "a",
        "message_content",
        b"n",
        b"v",
        PutOptions::expires_at(now),
    )
    .expect("now");
    assert_eq!(db.get("a", "message_content", b"n").expect("get"), None);
}

/// A class has a live mark only below 64; above, every access consults the
/// ledger (a mark there would alias another class's bit, or overflow).
#[test]
fn live_class_marks_cover_only_the_first_64_class_numbers() {
    assert_eq!(super::live_class_bit(0), Some(1));
    assert_eq!(super::live_class_bit(63), Some(1 << 63));
    assert_eq!(super::live_class_bit(64), None);
    assert_eq!(super::live_class_bit(u16::MAX), None);
}

/// Reads mark a class live in the subject cache; erasing it clears the mark
/// at once, so the very next read is refused, while the other classes stay
/// readable; refreshing the cached record (a restriction lifted) keeps the
/// marks of classes nothing erased.
#[test]
fn an_erasure_clears_the_live_mark_its_reads_left() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (db, _clock) = open(&dir);
    db.register_account("acct").expect("register");
    db.put("acct", "message_content", b"k", b"v").expect("put");
    db.put("acct", "invoices", b"k", b"v").expect("put");
    for class in ["message_content", "invoices"] {
        assert!(db.get("acct", class, b"k").expect("get").is_some());
    }
    let tag = db.tag_of("acct").expect("tag");
    let number = |name: &str| db.inner.resolve(&name).expect("class").number;
    let live = |class: u16| db.inner.cached_subject(&tag, class).map(|(_, live)| live);
    assert_eq!(live(number("message_content")), Some(true));
    db.restrict("acct").expect("restrict");
    db.lift_restriction("acct").expect("unrestrict");
    assert_eq!(
        live(number("invoices")),
        Some(true),
        "a state change keeps the marks"
    );
    db.shred("acct", Classes::Only(&["message_content"]))
        .expect("shred");
    assert_eq!(live(number("message_content")), Some(false));
    assert!(matches!(
        db.get("acct", "message_content", b"k"),
        Err(Error::Erased { .. })
    ));
    assert_eq!(
        db.get("acct", "invoices", b"k").expect("get").as_deref(),
        Some(&b"v"[..])
    );
}

/// The keys of tree `meta` under `prefix`, as stored.
fn meta_keys_under(storage: &dyn crate::storage::Storage, prefix: &[u8]) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    crate::storage::scan_prefix(storage, Tree::Meta, prefix, &mut |k, _| {
        keys.push(k.to_vec());
        std::ops::ControlFlow::Continue(())
    })
    .expect("scan");
    keys
}

/// A paged receipt (a store whose backend takes values of at most 8 KiB
/// and 45 ops a batch, as etcd with `--max-request-bytes 16384` and
/// `--max-txn-ops 45`) answers a repeat only while
/// every page it names is there as written: with a page removed, or
/// replaced by a page of another receipt or by another of its own pages,
/// the repeat answers with an empty
/// receipt, as after a damaged one. A later, smaller receipt of the same
/// subject removes the pages it leaves behind.
#[test]
fn a_paged_receipt_answers_only_with_its_own_pages_and_a_smaller_one_removes_them() {
    use crate::internal::{FaultPlan, MemoryKeyProvider, MemoryStore, TestStore, open_with_faults};
    const USERS: usize = 400;
    let page_keys = |db: &Db, tag: &crate::SubjectTag| {
        let prefix = [super::meta::RECEIPT_PAGE_PREFIX, &tag.0].concat();
        meta_keys_under(db.inner.storage.as_ref(), &prefix)
    };
    let dir = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(Timestamp::from_second(1_800_000_000).expect("time"));
    let (db, _control) = open_with_faults(
        test_config(&dir, &clock).key_provider(Arc::new(MemoryKeyProvider::new()) as Arc<_>),
        &TestStore::Memory(MemoryStore::new()),
        FaultPlan::none().batch_limit(45).request_limit(16 << 10),
    )
    .expect("open");
    for account in ["big", "other"] {
        db.register_account(account).expect("register");
        db.put(account, "account_profile", b"email", b"x@example.com")
            .expect("put");
        for i in 0..USERS {
            let user = format!("{account}-user-{i}");
            db.register_end_user(&user, account).expect("register");
            db.put(&user, "message_content", b"m1", b"hello")
                .expect("put");
        }
    }
    let messages = Classes::Only(&["message_content"]);
    let big = db.subject_tag("big");
    let other = db.subject_tag("other");
    // 400 scopes of 44 bytes (the class named): three pages of < 8 KiB.
    let receipt = db.shred("big", messages).expect("shred");
    assert_eq!(receipt.erased.len(), USERS);
    let pages = page_keys(&db, &big);
    assert_eq!(pages.len(), 3, "pages of a {}-scope receipt", USERS);
    assert_eq!(db.shred("big", messages).expect("repeat"), receipt);

    // A page of another account's receipt in place of one of its own.
    db.shred("other", messages).expect("shred");
    let foreign = db
        .inner
        .storage
        .get(Tree::Meta, &page_keys(&db, &other)[1])
        .expect("read")
        .expect("a page");
    let own = db.inner.storage.get(Tree::Meta, &pages[1]).expect("read");
    let mut swap = WriteBatch::new();
    swap.put(Tree::Meta, pages[1].clone(), foreign);
    db.inner
        .storage
        .apply(&swap, Durability::Durable)
        .expect("swap");
    let answer = db.shred("big", messages).expect("repeat");
    assert!(answer.erased.is_empty(), "answered from a foreign page");
    // Its own first page in place of its second: every scope real and
    // erased, the count right, but the receipt would not be the one given.
    let first = db.inner.storage.get(Tree::Meta, &pages[0]).expect("read");
    let mut shuffle = WriteBatch::new();
    shuffle.put(Tree::Meta, pages[1].clone(), first.expect("first page"));
    db.inner
        .storage
        .apply(&shuffle, Durability::Durable)
        .expect("shuffle");
    let answer = db.shred("big", messages).expect("repeat");
    assert!(
        answer.erased.is_empty(),
        "answered from a page out of place"
    );
    let mut restore = WriteBatch::new();
    restore.put(Tree::Meta, pages[1].clone(), own.expect("own page"));
    db.inner
        .storage
        .apply(&restore, Durability::Durable)
        .expect("restore");
    assert_eq!(db.shred("big", messages).expect("repeat"), receipt);

    // A page missing.
    let mut cut = WriteBatch::new();
    cut.remove(Tree::Meta, pages[2].clone());
    db.inner
        .storage
        .apply(&cut, Durability::Durable)
        .expect("cut");
    let answer = db.shred("big", messages).expect("repeat");
    assert!(answer.erased.is_empty(), "answered with a page missing");

    // A smaller receipt of the same subject: one value, no pages left.
    let profile = db
        .shred("big", Classes::Only(&["account_profile"]))
        .expect("shred the profile");
    assert_eq!(profile.erased.len(), 1, "{profile:?}");
    assert!(page_keys(&db, &big).is_empty(), "stale pages stayed");
    assert_eq!(
        db.shred("big", Classes::Only(&["account_profile"]))
            .expect("repeat"),
        profile
    );
}

/// A paged listing whose marker never landed (the first chunk failed)
/// decides nothing; its pages, named by no marker, are removed by the next
/// open. A marker whose pages are damaged cannot be finished: the open
/// refuses the store as corrupt, naming the pages, rather than finish an
/// erasure of the wrong subjects.
#[test]
fn listing_pages_without_a_marker_are_removed_at_open_and_damaged_ones_refuse_it() {
    use crate::internal::{
        ApplyFailure, FaultPlan, FaultPoint, MemoryKeyProvider, MemoryStore, TestStore,
        open_with_faults,
    };
    let page_keys = |storage: &dyn crate::storage::Storage| {
        meta_keys_under(storage, super::meta::ERASURE_PENDING_PAGE_PREFIX)
    };
    let dir = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(Timestamp::from_second(1_800_000_000).expect("time"));
    let provider = Arc::new(MemoryKeyProvider::new());
    let trees = MemoryStore::new();
    let open = || {
        open_with_faults(
            test_config(&dir, &clock).key_provider(Arc::clone(&provider) as Arc<_>),
            &TestStore::Memory(trees.clone()),
            FaultPlan::none().batch_limit(45).request_limit(16 << 10),
        )
        .expect("open")
    };
    let (db, control) = open();
    let accounts = ["pair-a", "pair-b"];
    for account in accounts {
        db.register_account(account).expect("register");
        for i in 0..300 {
            let user = format!("{account}-user-{i}");
            db.register_end_user(&user, account).expect("register");
            db.put(&user, "message_content", b"m1", b"hello")
                .expect("put");
        }
    }
    // Two pages, then the first chunk (the marker) fails.
    control.fail_nth(FaultPoint::DurableApply, 3, ApplyFailure::NothingApplied);
    db.shred_each(&accounts, Classes::All)
        .expect_err("the marker's write fails");
    assert_eq!(page_keys(db.inner.storage.as_ref()).len(), 2, "the pages");
    drop(db);
    let (db, control) = open();
    assert!(
        page_keys(db.inner.storage.as_ref()).is_empty(),
        "pages without a marker stayed"
    );
    assert_eq!(
        db.get("pair-b-user-9", "message_content", b"m1")
            .expect("nothing was erased")
            .as_deref(),
        Some(&b"hello"[..])
    );

    // Decided (the marker and a chunk landed), then a page is damaged.
    control.fail_nth(FaultPoint::DurableApply, 5, ApplyFailure::NothingApplied);
    db.shred_each(&accounts, Classes::All)
        .expect_err("a later chunk fails");
    let storage = Arc::clone(&db.inner.storage);
    drop(db);
    let pages = page_keys(storage.as_ref());
    assert_eq!(pages.len(), 2, "the pages of the decided erasure");
    let mut damage = WriteBatch::new();
    damage.remove(Tree::Meta, pages[1].clone());
    storage.apply(&damage, Durability::Durable).expect("damage");
    drop(storage);
    let err = open_with_faults(
        test_config(&dir, &clock).key_provider(Arc::clone(&provider) as Arc<_>),
        &TestStore::Memory(trees.clone()),
        FaultPlan::none().batch_limit(45).request_limit(16 << 10),
    )
    .expect_err("a marker whose pages are missing");
    assert!(
        matches!(&err, Error::Corrupt { .. }) && err.to_string().contains("pending erasure pages"),
        "{err}"
    );
}

/// Every entry of `tree` in `raw`, key → value.
fn raw_entries(raw: &dyn crate::storage::Storage, tree: Tree) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    raw.scan(
        tree,
        std::ops::Bound::Unbounded,
        std::ops::Bound::Unbounded,
        crate::storage::Order::Ascending,
        &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            std::ops::ControlFlow::Continue(())
        },
    )
    .expect("scan");
    out
}

/// The key id a day-lane key names, decoded here from the layout in
/// docs/design.md (bucket ‖ subject tag ‖ class ‖ version), not with the
/// engine's own code.
fn lane_key_id(lane: &[u8]) -> shredkv_crypto::KeyId {
    assert_eq!(lane.len(), 26, "a day-lane key is 26 bytes");
    let mut tag = [0u8; 16];
    tag.copy_from_slice(&lane[4..20]);
    shredkv_crypto::KeyId {
        subject: shredkv_crypto::SubjectTag(tag),
        class: u16::from_be_bytes([lane[20], lane[21]]),
        bucket: u32::from_be_bytes([lane[0], lane[1], lane[2], lane[3]]),
        version: u32::from_be_bytes([lane[22], lane[23], lane[24], lane[25]]),
    }
}

/// Whether a stored vault entry v1 is live: its state byte (after the
/// version byte) is 1 (docs/design.md, vault entry v1).
fn entry_is_live(value: &[u8]) -> bool {
    value.get(1) == Some(&1)
}

/// The expiry bucket of a record expiring at `t`: 2 + its UTC day.
fn expiry_bucket(t: Timestamp) -> u32 {
    2 + u32::try_from(t.as_second() / 86_400).expect("a day after 1970")
}

/// A store on a memory backend the test also reads and writes directly
/// (`raw`, under the sealed view), with its key provider for reopening.
struct RawStore {
    raw: Arc<dyn crate::storage::Storage>,
    provider: Arc<dyn shredkv_crypto::KeyProvider>,
}

impl RawStore {
    fn new() -> Self {
        Self {
            raw: Arc::new(crate::storage::memory::MemoryStorage::new()),
            provider: Arc::new(crate::internal::MemoryKeyProvider::new()),
        }
    }

    fn open(&self, dir: &tempfile::TempDir, clock: &ManualClock) -> crate::Result<Db> {
        Db::open_with(
            test_config(dir, clock),
            Arc::clone(&self.raw),
            Arc::clone(&self.provider),
            false,
        )
    }
}

/// A new store on a [`RawStore`], its directory and its clock.
fn raw_store() -> (tempfile::TempDir, ManualClock, RawStore, Db) {
    let dir = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(Timestamp::from_second(1_800_000_000).expect("time"));
    let store = RawStore::new();
    let db = store.open(&dir, &clock).expect("open");
    (dir, clock, store, db)
}

/// Expiry-bucket keys are written to the day lane, in day order, and live
/// nowhere else; a shred finds them there (through their seal records), and
/// so does compaction at the end of their day.
#[test]
fn expiry_keys_live_in_the_day_lane_and_die_there() {
    let (_dir, clock, store, db) = raw_store();
    let raw = Arc::clone(&store.raw);
    let now = crate::Clock::now(&clock);
    let soon = now + SignedDuration::from_hours(30);
    let later = now + SignedDuration::from_hours(24 * 20);
    for s in ["a", "b"] {
        db.register_account(s).expect("register");
        for (i, at) in [soon, later].into_iter().enumerate() {
            db.put_with(
                s,
                "message_content",
                &[u8::try_from(i).expect("small")],
                b"v",
                PutOptions::expires_at(at),
            )
            .expect("put");
        }
        db.put(s, "message_content", b"open", b"v").expect("put");
    }
    let lane = raw_entries(raw.as_ref(), Tree::VaultDays);
    let ids: Vec<_> = lane.iter().map(|(k, _)| lane_key_id(k)).collect();
    assert_eq!(ids.len(), 4, "one key per subject and day: {ids:?}");
    let (a, b) = (db.subject_tag("a"), db.subject_tag("b"));
    for day in [expiry_bucket(soon), expiry_bucket(later)] {
        for tag in [a, b] {
            assert!(
                ids.iter()
                    .any(|id| id.bucket == day && id.subject == tag && id.version == 1),
                "no lane key for day {day}: {ids:?}"
            );
        }
    }
    assert!(
        ids.windows(2).all(|w| w[0].bucket <= w[1].bucket),
        "the lane is ordered by day first"
    );
    // Nothing of a day bucket under its key id in `vault`.
    for (k, _) in raw_entries(raw.as_ref(), Tree::Vault) {
        let id = shredkv_crypto::KeyId::from_bytes(&k).expect("a key id");
        assert!(id.bucket < 2, "an expiry key in `vault`: {id:?}");
    }

    db.shred("a", Classes::All).expect("shred");
    for (k, v) in raw_entries(raw.as_ref(), Tree::VaultDays) {
        let id = lane_key_id(&k);
        assert_eq!(
            entry_is_live(&v),
            id.subject == b,
            "after a's shred: {id:?}"
        );
    }
    clock.set(Timestamp::from_second((i64::from(expiry_bucket(soon)) - 1) * 86_400).expect("time"));
    db.compact().expect("compact");
    for (k, v) in raw_entries(raw.as_ref(), Tree::VaultDays) {
        let id = lane_key_id(&k);
        let live = id.subject == b && id.bucket == expiry_bucket(later);
        assert_eq!(entry_is_live(&v), live, "after the first day's end: {id:?}");
    }
    assert_eq!(
        db.get("b", "message_content", &[1])
            .expect("get")
            .as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(db.get("b", "message_content", &[0]).expect("get"), None);
    assert_eq!(db.verify().expect("verify").problems, Vec::new());
}

/// The end of the UTC day of `t`, when its expiry bucket is due.
fn end_of_day(t: Timestamp) -> Timestamp {
    Timestamp::from_second((t.as_second() / 86_400 + 1) * 86_400).expect("time")
}

/// The deadline-index entries that schedule a sweep of dead records.
fn scheduled_sweeps(raw: &dyn crate::storage::Storage) -> Vec<(Vec<u8>, Vec<u8>)> {
    raw_entries(raw, Tree::Deadlines)
        .into_iter()
        .filter(|(k, _)| {
            matches!(
                crate::retention::deadlines::decode_key(k),
                Some((_, crate::retention::deadlines::Due::RemoveCiphertext(..)))
            )
        })
        .collect()
}

/// Two of a scope's buckets expiring in one week schedule one sweep of
/// their records: the second day finds the item written by the first and
/// leaves it as it is, and the sweep at the week's end removes both days'
/// records.
#[test]
fn expiry_days_of_one_week_share_one_sweep_item() {
    let (_dir, clock, store, db) = raw_store();
    let raw = Arc::clone(&store.raw);
    let now = crate::Clock::now(&clock);
    let week = 7 * 86_400;
    let sweep_at = (now.as_second() / week + 1) * week;
    let (first, second) = (
        now + SignedDuration::from_hours(1),
        now + SignedDuration::from_hours(25),
    );
    assert!(
        end_of_day(second).as_second() < sweep_at,
        "the test needs both days in one week"
    );
    db.register_account("a").expect("register");
    for (key, at) in [(b"1", first), (b"2", second)] {
        db.put_with(
            "a",
            "message_content",
            key,
            b"v",
            PutOptions::expires_at(at),
        )
        .expect("put");
    }
    clock.set(end_of_day(first));
    assert_eq!(db.compact().expect("compact").keys_destroyed, 1);
    let scheduled = scheduled_sweeps(raw.as_ref());
    assert_eq!(scheduled.len(), 1, "one sweep for the scope");
    clock.set(end_of_day(second));
    assert_eq!(db.compact().expect("compact").keys_destroyed, 1);
    assert_eq!(
        scheduled_sweeps(raw.as_ref()),
        scheduled,
        "the week's second day leaves the scheduled sweep untouched"
    );
    assert_eq!(raw_entries(raw.as_ref(), Tree::Data).len(), 2);
    clock.set(Timestamp::from_second(sweep_at).expect("time"));
    assert_eq!(db.compact().expect("sweep").records_removed, 2);
    assert!(scheduled_sweeps(raw.as_ref()).is_empty());
    assert!(raw_entries(raw.as_ref(), Tree::Data).is_empty());
}

/// A compaction page looks up the holds of all its keys together: a hold
/// on a key's class or on its whole subject keeps the key, a hold on
/// another class does not, and a hold whose stored record was altered keeps
/// it too (the item is set aside, never taken as unheld).
#[test]
fn expiry_keys_are_kept_by_a_hold_on_their_class_or_subject_even_a_damaged_one() {
    let (_dir, clock, store, db) = raw_store();
    let raw = Arc::clone(&store.raw);
    let expiry = crate::Clock::now(&clock) + SignedDuration::from_hours(1);
    let subjects = [
        "class-hold",
        "subject-hold",
        "other-class-hold",
        "damaged-hold",
    ];
    for s in subjects {
        db.register_account(s).expect("register");
        db.put_with(
            s,
            "message_content",
            b"m",
            b"v",
            PutOptions::expires_at(expiry),
        )
        .expect("put");
    }
    db.place_hold("class-hold", Some("message_content"), "case 1")
        .expect("hold");
    db.place_hold("subject-hold", None, "case 2").expect("hold");
    db.place_hold("other-class-hold", Some("invoices"), "case 3")
        .expect("hold");
    db.place_hold("damaged-hold", Some("message_content"), "case 4")
        .expect("hold");
    let damaged = db.subject_tag("damaged-hold");
    let mut batch = WriteBatch::new();
    for (k, mut v) in raw_entries(raw.as_ref(), Tree::Holds) {
        if k.starts_with(&damaged.0) {
            *v.last_mut().expect("a value") ^= 1;
            batch.put(Tree::Holds, k, v);
        }
    }
    assert_eq!(batch.ops.len(), 1, "the damaged subject's one hold");
    raw.apply(&batch, Durability::Durable).expect("damage");

    clock.set(end_of_day(expiry));
    let report = db.compact().expect("compact");
    assert_eq!(report.keys_destroyed, 1, "{report:?}");
    assert_eq!(report.blocked_by_hold, 2, "{report:?}");
    assert_eq!(report.set_aside, 1, "{report:?}");
    let live: Vec<_> = raw_entries(raw.as_ref(), Tree::VaultDays)
        .into_iter()
        .filter(|(_, v)| entry_is_live(v))
        .map(|(k, _)| lane_key_id(&k).subject)
        .collect();
    for s in subjects {
        assert_eq!(
            live.contains(&db.subject_tag(s)),
            s != "other-class-hold",
            "{s}'s expiry key"
        );
    }
}

/// Moves every entry of the day lane back under its key id in `vault` and
/// sets the format byte to 2: what a format-2 build wrote. Returns the
/// entries moved.
fn without_day_lane(raw: &dyn crate::storage::Storage) -> usize {
    let lane = raw_entries(raw, Tree::VaultDays);
    let mut batch = WriteBatch::new();
    for (k, v) in &lane {
        batch.remove(Tree::VaultDays, k.clone());
        batch.put(Tree::Vault, lane_key_id(k).to_bytes(), v.clone());
    }
    batch.put(Tree::Meta, super::meta::FORMAT, vec![2]);
    raw.apply(&batch, Durability::Durable).expect("apply");
    lane.len()
}

/// A store made by a format-2 build keeps its expiry keys under their key
/// ids in `vault`: its first open marks it format 4 (so an older build
/// refuses it), and those keys are read, re-keyed into the lane, destroyed
/// at the end of their day and shredded where they are.
#[test]
fn a_format_2_store_keeps_its_expiry_keys_where_they_are_and_works_on() {
    let (dir, clock, store, db) = raw_store();
    let raw = Arc::clone(&store.raw);
    let reopen = || store.open(&dir, &clock);
    let now = crate::Clock::now(&clock);
    let soon = now + SignedDuration::from_hours(30);
    let later = now + SignedDuration::from_hours(24 * 40);
    for s in ["a", "b"] {
        db.register_account(s).expect("register");
        db.put_with(
            s,
            "message_content",
            b"soon",
            b"v",
            PutOptions::expires_at(soon),
        )
        .expect("put");
        db.put_with(
            s,
            "message_content",
            b"later",
            b"v1",
            PutOptions::expires_at(later),
        )
        .expect("put");
    }
    let (a, b) = (db.subject_tag("a"), db.subject_tag("b"));
    drop(db);
    assert_eq!(without_day_lane(raw.as_ref()), 4);

    let db = reopen().expect("a format-2 store opens");
    assert_eq!(
        raw.get(Tree::Meta, super::meta::FORMAT).expect("get"),
        Some(vec![4]),
        "marked format 4 by its first open"
    );
    for s in ["a", "b"] {
        assert_eq!(
            db.get(s, "message_content", b"soon")
                .expect("get")
                .as_deref(),
            Some(&b"v"[..])
        );
    }
    // An overwrite owes the old key a re-key: the next version goes to the
    // lane, the old one dies under its key id.
    db.put_with(
        "a",
        "message_content",
        b"later",
        b"v2",
        PutOptions::expires_at(later),
    )
    .expect("overwrite");
    clock.set(now + SignedDuration::from_hours(24 * 16));
    db.compact().expect("compact");
    let later_bucket = expiry_bucket(later);
    let legacy: Vec<_> = raw_entries(raw.as_ref(), Tree::Vault)
        .into_iter()
        .map(|(k, v)| {
            (
                shredkv_crypto::KeyId::from_bytes(&k).expect("key id"),
                entry_is_live(&v),
            )
        })
        .filter(|(id, _)| id.bucket >= 2)
        .collect();
    for (id, live) in &legacy {
        // a's re-keyed v1 and both first-day keys are dead; b's later key lives.
        let expect_live = id.subject == b && id.bucket == later_bucket;
        assert_eq!(*live, expect_live, "legacy {id:?}");
    }
    assert_eq!(
        legacy.len(),
        4,
        "legacy entries stay where they were: {legacy:?}"
    );
    let lane: Vec<_> = raw_entries(raw.as_ref(), Tree::VaultDays)
        .into_iter()
        .map(|(k, v)| (lane_key_id(&k), entry_is_live(&v)))
        .collect();
    assert_eq!(lane.len(), 1, "{lane:?}");
    assert_eq!(
        (
            lane[0].0.subject,
            lane[0].0.bucket,
            lane[0].0.version,
            lane[0].1
        ),
        (a, later_bucket, 2, true),
        "a's re-key made version 2, in the lane"
    );
    assert_eq!(
        db.get("a", "message_content", b"later")
            .expect("get")
            .as_deref(),
        Some(&b"v2"[..])
    );
    assert_eq!(db.verify().expect("verify").problems, Vec::new());

    // A shred finds both kinds of place.
    db.shred("a", Classes::All).expect("shred");
    db.shred("b", Classes::All).expect("shred");
    for tree in [Tree::Vault, Tree::VaultDays] {
        for (k, v) in raw_entries(raw.as_ref(), tree) {
            assert!(
                !entry_is_live(&v),
                "{tree:?} {k:02x?} still live after both shreds"
            );
        }
    }
    assert_eq!(db.verify().expect("verify").problems, Vec::new());
}

/// `seals` is how an erasure finds a scope's keys in the day lane: a live
/// lane key without its seal record is reported by verify.
#[test]
fn verify_reports_a_lane_key_without_its_seal_record() {
    let (_dir, clock, store, db) = raw_store();
    let raw = Arc::clone(&store.raw);
    db.register_account("a").expect("register");
    let soon = crate::Clock::now(&clock) + SignedDuration::from_hours(30);
    db.put_with(
        "a",
        "message_content",
        b"k",
        b"v",
        PutOptions::expires_at(soon),
    )
    .expect("put");
    assert_eq!(db.verify().expect("verify").problems, Vec::new());
    let lane = raw_entries(raw.as_ref(), Tree::VaultDays);
    assert_eq!(lane.len(), 1);
    let id = lane_key_id(&lane[0].0);
    let mut batch = WriteBatch::new();
    batch.remove(Tree::Seals, id.to_bytes());
    raw.apply(&batch, Durability::Durable).expect("apply");
    let problems = db.verify().expect("verify").problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].kind, crate::ProblemKind::Tampered);
    assert_eq!(problems[0].location.tree, "seals");
    assert!(
        problems[0].detail.contains("day lane"),
        "{}",
        problems[0].detail
    );
}

/// Under the key tree a rotation re-wraps the roots alone (forest 0's and
/// one per expiry day): the keys of both of the vault's trees stay under
/// their nodes, untouched, and nothing but the roots (and the store secret)
/// names the new epoch.
#[test]
fn a_rotation_rewraps_the_roots_alone() {
    let (_dir, clock, store, db) = raw_store();
    let raw = Arc::clone(&store.raw);
    let now = crate::Clock::now(&clock);
    for s in ["a", "b"] {
        db.register_account(s).expect("register");
        for days in [2, 9] {
            let at = now + SignedDuration::from_hours(24 * days);
            db.put_with(
                s,
                "message_content",
                &[u8::try_from(days).expect("small")],
                b"v",
                PutOptions::expires_at(at),
            )
            .expect("put");
        }
    }
    let live = |tree| {
        raw_entries(raw.as_ref(), tree)
            .into_iter()
            .filter(|(_, v)| entry_is_live(v))
            .map(|(_, v)| crate::vault::VaultEntry::decode(&v).expect("entry"))
            .collect::<Vec<_>>()
    };
    let lane_keys = live(Tree::VaultDays).len();
    assert_eq!(lane_keys, 4);
    let before = (live(Tree::Vault), live(Tree::VaultDays));
    assert!(
        before
            .0
            .iter()
            .chain(&before.1)
            .all(|e| matches!(e.wrapped, Some(crate::vault::Wrapped::Node(_)))),
        "every key is under the tree"
    );
    let report = db.rotate_epoch().expect("rotate");
    let new = report.created.expect("an epoch was created");
    // Two expiry days (2 and 9 days ahead), each a forest, and forest 0
    // for the scope keys.
    assert_eq!(report.keys_rewrapped, 3, "the three roots alone");
    assert_eq!((live(Tree::Vault), live(Tree::VaultDays)), before);
    assert_eq!(
        db.inner.vault.tree().root_epochs().expect("roots"),
        std::collections::BTreeSet::from([shredkv_crypto::EpochId(new)])
    );
    // Every record still reads through the re-wrapped root.
    for s in ["a", "b"] {
        for days in [2u8, 9] {
            assert!(
                db.get(s, "message_content", &[days])
                    .expect("get")
                    .is_some()
            );
        }
    }
}

/// The weekly sweep removes dead records in batches a backend's op limit
/// holds (etcd's default `--max-txn-ops` 128), however the scopes' records
/// fall into pages: three scopes of 50 dead records once made one batch of
/// 150 removals (the limit was checked only between pages).
#[test]
fn the_sweep_of_dead_records_fits_the_batch_limit() {
    use crate::internal::{FaultPlan, MemoryKeyProvider, MemoryStore, TestStore, open_with_faults};
    const LIMIT: usize = 128;
    let dir = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(Timestamp::from_second(1_800_000_000).expect("time"));
    let (db, _control) = open_with_faults(
        test_config(&dir, &clock).key_provider(Arc::new(MemoryKeyProvider::new()) as Arc<_>),
        &TestStore::Memory(MemoryStore::new()),
        FaultPlan::none().batch_limit(LIMIT),
    )
    .expect("open");
    let expires = crate::Clock::now(&clock) + SignedDuration::from_hours(30);
    let subjects = ["a", "b", "c"];
    for s in subjects {
        db.register_account(s).expect("register");
        for i in 0..50u8 {
            db.put_with(
                s,
                "message_content",
                &[i],
                b"gone",
                PutOptions::expires_at(expires),
            )
            .expect("put");
        }
    }
    clock.set(expires + SignedDuration::from_hours(24));
    let report = db.compact().expect("the expired keys are destroyed");
    assert_eq!(report.keys_destroyed, 3, "{report:?}");
    // The removal sweep runs once a week.
    clock.set(expires + SignedDuration::from_hours(24 * 9));
    let report = db.compact().expect("the sweep within the batch limit");
    assert_eq!(report.records_removed, 150, "{report:?}");
    for s in subjects {
        let prefix = db.subject_tag(s).0;
        let left = raw_entries(db.inner.storage.as_ref(), Tree::Data)
            .into_iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .count();
        assert_eq!(left, 0, "{s}: dead records left");
    }
}

/// Rewrites a store of this build as a format-3 build left it: every live
/// data key wrapped under the current epoch in a vault entry v1 (`version
/// 1 ‖ state ‖ created ‖ destroyed (9) ‖ present 1 ‖ wrapped key (69) ‖
/// CRC32`, docs/design.md), no key tree, format byte 3. Returns how many
/// live keys it rewrote.
fn as_format_3(db: &Db, raw: &dyn crate::storage::Storage) -> usize {
    let epoch = db.inner.vault.current_epoch();
    let mut batch = WriteBatch::new();
    let mut live = 0;
    for tree in [Tree::Vault, Tree::VaultDays] {
        for (k, v) in raw_entries(raw, tree) {
            let entry = crate::vault::VaultEntry::decode(&v).expect("entry");
            let id = crate::vault::layout::id_at(tree, &k).expect("key id");
            let mut v1 = vec![1u8, v[1]];
            v1.extend_from_slice(&entry.created_at.to_be_bytes());
            match entry.destroyed_at {
                Some(at) => {
                    v1.push(1);
                    v1.extend_from_slice(&at.to_be_bytes());
                }
                None => v1.extend_from_slice(&[0; 9]),
            }
            if entry.state == crate::vault::KeyState::Active {
                let key = db
                    .inner
                    .vault
                    .unwrap_key(&id, &entry)
                    .expect("unwrap")
                    .expect("live");
                let wrapped = db
                    .inner
                    .vault
                    .provider()
                    .wrap(epoch, &shredkv_crypto::WrapContext::DataKey(id), &key)
                    .expect("wrap");
                v1.push(1);
                v1.extend_from_slice(wrapped.as_bytes());
                live += 1;
            } else {
                v1.push(0);
            }
            v1.extend_from_slice(&crc32fast::hash(&v1).to_be_bytes());
            batch.put(tree, k, v1);
        }
    }
    for (k, _) in raw_entries(raw, Tree::KeyNodes) {
        batch.remove(Tree::KeyNodes, k);
    }
    // Node debts (deadline kind 6) did not exist either.
    for (k, _) in raw_entries(raw, Tree::Deadlines) {
        if k.get(8) == Some(&6) {
            batch.remove(Tree::Deadlines, k);
        }
    }
    batch.remove(Tree::Meta, super::meta::KEY_TREE_WHOLE);
    batch.put(Tree::Meta, super::meta::FORMAT, vec![3]);
    raw.apply(&batch, Durability::Durable).expect("apply");
    live
}

/// A store made before the key tree (format 3: every data key wrapped under
/// an epoch, vault entry v1) opens, is marked format 4, reads its keys where
/// they are, and its first rotation moves every one of them under the tree:
/// afterwards only the root names an epoch, no rotation reads the vault
/// again, and the old epoch dies on schedule with every record readable.
#[test]
fn a_store_older_than_the_tree_moves_its_keys_under_it_at_its_first_rotation() {
    let (dir, clock, store, db) = raw_store();
    let raw = Arc::clone(&store.raw);
    let now = crate::Clock::now(&clock);
    for s in ["a", "b", "c"] {
        db.register_account(s).expect("register");
        db.put(s, "message_content", b"open", s.as_bytes())
            .expect("put");
        db.put_with(
            s,
            "message_content",
            b"expiring",
            s.as_bytes(),
            PutOptions::expires_at(now + SignedDuration::from_hours(24 * 60)),
        )
        .expect("put");
    }
    db.shred("c", Classes::All).expect("shred");
    let first_epoch = db.inner.vault.current_epoch();
    let moved = as_format_3(&db, raw.as_ref());
    // a and b: a scope key, an open-bucket key and a day key each.
    assert_eq!(moved, 6);
    // a's day key as a format-2 build left it: under its key id in `vault`.
    let a_tag = db.subject_tag("a");
    let mut leftover = WriteBatch::new();
    let mut moved_back = 0;
    for (k, v) in raw_entries(raw.as_ref(), Tree::VaultDays) {
        if lane_key_id(&k).subject == a_tag {
            leftover.remove(Tree::VaultDays, k.clone());
            leftover.put(Tree::Vault, lane_key_id(&k).to_bytes(), v);
            moved_back += 1;
        }
    }
    assert_eq!(moved_back, 1, "a's one day key");
    raw.apply(&leftover, Durability::Durable).expect("apply");
    drop(db);

    let db = store.open(&dir, &clock).expect("a format-3 store opens");
    assert_eq!(
        raw.get(Tree::Meta, super::meta::FORMAT).expect("get"),
        Some(vec![4]),
        "marked format 4 by its first open"
    );
    assert!(raw_entries(raw.as_ref(), Tree::KeyNodes).is_empty());
    let read_all = |db: &Db| {
        for s in ["a", "b"] {
            for key in [&b"open"[..], b"expiring"] {
                assert_eq!(
                    db.get(s, "message_content", key).expect("get").as_deref(),
                    Some(s.as_bytes()),
                    "{s}/{key:?}"
                );
            }
        }
    };
    read_all(&db);
    // A new subject's keys go under the tree at once.
    db.register_account("d").expect("register");
    db.put("d", "message_content", b"open", b"d").expect("put");

    let report = db.rotate_epoch().expect("rotate");
    assert_eq!(
        report.keys_rewrapped,
        1 + 6,
        "the root and the six moved keys"
    );
    let entries: Vec<_> = [Tree::Vault, Tree::VaultDays]
        .into_iter()
        .flat_map(|tree| raw_entries(raw.as_ref(), tree))
        .filter(|(_, v)| entry_is_live(v))
        .map(|(_, v)| crate::vault::VaultEntry::decode(&v).expect("entry"))
        .collect();
    assert_eq!(entries.len(), 6 + 2);
    assert!(
        entries
            .iter()
            .all(|e| matches!(e.wrapped, Some(crate::vault::Wrapped::Node(_)))),
        "every live key is under the tree"
    );
    assert!(
        raw.get(Tree::Meta, super::meta::KEY_TREE_WHOLE)
            .expect("get")
            .is_some()
    );
    // Every expiry key, a's format-2 leftover too, is in the day lane under
    // a node of its day's forest (forest = its bucket), not in `vault`.
    assert!(
        raw_entries(raw.as_ref(), Tree::Vault)
            .iter()
            .all(|(k, _)| shredkv_crypto::KeyId::from_bytes(k).is_some_and(|id| id.bucket < 2)),
        "no expiry key left in vault"
    );
    let lane = raw_entries(raw.as_ref(), Tree::VaultDays);
    assert_eq!(lane.len(), 3, "a's, b's and c's (destroyed) day keys");
    for (k, v) in &lane {
        let id = lane_key_id(k);
        let entry = crate::vault::VaultEntry::decode(v).expect("entry");
        if let Some(crate::vault::Wrapped::Node(wrapped)) = &entry.wrapped {
            assert_eq!(wrapped.node().forest, id.bucket, "{id:?}");
        }
    }
    read_all(&db);
    // The old epoch is destroyed once its wait is over; nothing needs it.
    clock.advance(SignedDuration::from_hours(24 * 40));
    db.compact().expect("compact");
    let live = db.stats().expect("stats").live_epochs;
    assert!(!live.contains(&first_epoch.0), "{live:?}");
    read_all(&db);
    assert_eq!(
        db.get("d", "message_content", b"open")
            .expect("get")
            .as_deref(),
        Some(&b"d"[..])
    );
    assert!(db.verify().expect("verify").is_clean());
    drop(db);
    let db = store.open(&dir, &clock).expect("reopen");
    read_all(&db);
}
