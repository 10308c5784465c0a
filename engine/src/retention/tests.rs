//! Retention over the default policy: events, deadlines, compaction, holds,
//! re-keying and epochs, with an injected clock.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::storage::{Order, Tree};
use crate::{Clock, Config, Db, ErasureReason, ManualClock, PutOptions};

const DAY: i64 = 24;

fn start() -> Timestamp {
    Timestamp::from_second(1_800_000_000).expect("time")
}

fn config(dir: &tempfile::TempDir, clock: &ManualClock) -> Config {
    Config::new(dir.path())
        .allow_key_file_in_store(true)
        .clock(Arc::new(clock.clone()))
        .flush_every(None)
        .maintenance_every(None)
}

fn open(dir: &tempfile::TempDir) -> (Db, ManualClock) {
    let clock = ManualClock::new(start());
    (
        Db::open_in_memory(config(dir, &clock)).expect("open"),
        clock,
    )
}

fn days(n: i64) -> SignedDuration {
    SignedDuration::from_hours(DAY * n)
}

fn readable(db: &Db, subject: &str, class: &str, key: &[u8]) -> bool {
    match db.get(subject, class, key) {
        Ok(value) => value.is_some(),
        Err(err) if err.is_erased() => false,
        // A closed subject's retained data is read through export (D2).
        Err(err) if err.is_closed() => exported(db, subject, class, key),
        Err(err) => panic!("unexpected error: {err}"),
    }
}

/// Whether `export` of a (closed) subject still returns the record.
fn exported(db: &Db, subject: &str, class: &str, key: &[u8]) -> bool {
    exported_value(db, subject, class, key).is_some()
}

/// The value `export` of a (closed) subject returns for the record.
fn exported_value(db: &Db, subject: &str, class: &str, key: &[u8]) -> Option<Vec<u8>> {
    let tag = db.subject_tag(subject);
    match db.export(subject) {
        Ok(export) => export
            .subjects
            .into_iter()
            .filter(|s| s.tag == tag)
            .flat_map(|s| s.classes)
            .filter(|(c, _)| c == class)
            .flat_map(|(_, records)| records)
            .find(|r| r.key == key)
            .map(|r| r.value),
        Err(err) if err.is_erased() => None,
        Err(err) => panic!("unexpected error: {err}"),
    }
}

fn data_records(db: &Db) -> usize {
    let mut n = 0;
    db.inner
        .storage
        .scan(
            Tree::Data,
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            Order::Ascending,
            &mut |_, _| {
                n += 1;
                ControlFlow::Continue(())
            },
        )
        .expect("scan");
    n
}

/// Account "a" with a `message_content` record `m` expiring at `expiry` and
/// a record `keep` without expiry.
fn short_lived_and_kept(db: &Db, expiry: Timestamp) {
    db.register_account("a").expect("register");
    db.put_with(
        "a",
        "message_content",
        b"m",
        b"short-lived",
        PutOptions::expires_at(expiry),
    )
    .expect("put");
    db.put("a", "message_content", b"keep", b"kept")
        .expect("put");
}

#[test]
fn expired_bucket_keys_are_destroyed_and_their_ciphertext_removed() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    short_lived_and_kept(&db, db.now() + SignedDuration::from_hours(2));
    // Nothing is due before the bucket's day ends.
    assert_eq!(db.compact().expect("compact").keys_destroyed, 0);
    clock.advance(days(1));
    let report = db.compact().expect("compact");
    assert_eq!(report.keys_destroyed, 1, "{report:?}");
    assert!(!readable(&db, "a", "message_content", b"m"));
    // The dead record goes at the scope's weekly sweep, within the purge window.
    clock.advance(days(7));
    let report = db.compact().expect("compact");
    assert_eq!(report.records_removed, 1, "{report:?}");
    assert_eq!(data_records(&db), 1);
    assert!(readable(&db, "a", "message_content", b"keep"));
    // Idempotent: nothing left to do.
    assert_eq!(db.compact().expect("compact").items, 0);
}

/// The default policy's customer-instructed classes (`usage_records`,
/// `message_content`: "for as long as you instruct"): a per-record expiry of
/// any length is taken and hides the record from its expiry on; a past one
/// is refused; classes whose clock starts with an event take none.
#[test]
fn default_customer_classes_take_an_expiry_of_any_length_and_hide_expired_records() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    db.register_account("a").expect("register");
    for class in ["usage_records", "message_content"] {
        let soon = db.now() + SignedDuration::from_hours(1);
        db.put_with("a", class, b"soon", b"v", PutOptions::expires_at(soon))
            .expect("put with an expiry in an hour");
        // Ten years: the notice sets no upper bound on the customer's choice.
        let far = db.now() + days(3653);
        db.put_with("a", class, b"far", b"v", PutOptions::expires_at(far))
            .unwrap_or_else(|e| panic!("{class}: a ten-year expiry was refused: {e}"));
        // A past expiry is accepted and stores nothing.
        let past = db.now() - SignedDuration::from_hours(1);
        db.put_with("a", class, b"x", b"v", PutOptions::expires_at(past))
            .unwrap_or_else(|e| panic!("{class}: a past expiry was refused: {e}"));
        assert!(!readable(&db, "a", class, b"x"), "{class}: a past expiry");
        assert!(readable(&db, "a", class, b"soon"), "{class}");
    }
    clock.advance(SignedDuration::from_hours(2));
    for class in ["usage_records", "message_content"] {
        assert!(!readable(&db, "a", class, b"soon"), "{class}: expired");
        assert!(readable(&db, "a", class, b"far"), "{class}");
    }
    let soon = db.now() + SignedDuration::from_hours(1);
    for class in ["account_profile", "invoices", "marketing_contacts"] {
        assert!(
            matches!(
                db.put_with("a", class, b"x", b"v", PutOptions::expires_at(soon)),
                Err(crate::Error::PolicyViolation { .. })
            ),
            "{class}: its clock starts with an event"
        );
    }
}

#[test]
fn account_closure_erases_each_class_at_its_deadline_never_earlier() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    db.register_account("acct").expect("register");
    db.register_end_user("user", "acct").expect("register");
    let classes = [
        "account_profile",
        "support_communications",
        "account_records",
        "invoices",
        "message_content",
    ];
    for class in classes {
        db.put("acct", class, b"k", b"v").expect("put");
    }
    db.put("user", "message_content", b"k", b"v").expect("put");
    let scheduled = db.close_account("acct").expect("close");
    assert!(scheduled.iter().any(|s| s.class == "account_profile"));
    // Content lives "up until termination": erased at the first compaction.
    db.compact().expect("compact");
    assert!(!readable(&db, "acct", "message_content", b"k"));
    assert!(!readable(&db, "user", "message_content", b"k"));
    // (class, its deadline after closure in days)
    let deadlines = [
        ("account_profile", 60),
        ("support_communications", 3 * 365 + 1),
        ("account_records", 7 * 365 + 2),
        ("invoices", 10 * 365 + 3),
    ];
    let closed = db.now();
    for (class, after_days) in deadlines {
        let deadline = scheduled
            .iter()
            .find(|s| s.class == class && s.subject == db.subject_tag("acct"))
            .expect("scheduled")
            .erase_at;
        assert!(
            deadline.duration_since(closed) >= days(after_days - 1)
                && deadline.duration_since(closed) <= days(after_days + 1)
        );
        clock.set(deadline - SignedDuration::from_secs(1));
        db.compact().expect("compact");
        assert!(
            readable(&db, "acct", class, b"k"),
            "{class} erased before its deadline"
        );
        clock.set(deadline);
        db.compact().expect("compact");
        assert!(
            !readable(&db, "acct", class, b"k"),
            "{class} not erased at its deadline"
        );
    }
    assert!(db.verify_audit().expect("audit").breaks.is_empty());
}

#[test]
fn deletion_request_erases_now_and_keeps_invoices_until_their_deadline() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, _) = open(&dir);
    db.register_account("acct").expect("register");
    db.register_end_user("user", "acct").expect("register");
    db.put("acct", "invoices", b"2026-001", b"total")
        .expect("put");
    db.put("acct", "account_profile", b"name", b"Ada")
        .expect("put");
    db.put("user", "message_content", b"m", b"hi").expect("put");
    let receipt = db
        .request_deletion("acct", ErasureReason::DeletionRequest)
        .expect("request");
    assert!(
        receipt
            .erased
            .iter()
            .any(|e| e.class.as_deref() == Some("account_profile"))
    );
    assert!(
        receipt
            .erased
            .iter()
            .any(|e| e.subject == db.subject_tag("user"))
    );
    let invoices = receipt
        .retained
        .iter()
        .find(|r| r.class == "invoices" && r.subject == db.subject_tag("acct"))
        .expect("retained");
    let until = invoices.until.expect("deadline");
    assert!(until.duration_since(db.now()) >= days(10 * 365));
    assert!(invoices.reason.contains("invoice"), "{}", invoices.reason);
    assert!(!readable(&db, "acct", "account_profile", b"name"));
    assert!(!readable(&db, "user", "message_content", b"m"));
    assert!(readable(&db, "acct", "invoices", b"2026-001"));
    // Underage: everything not under a hold goes, obligations notwithstanding.
    let receipt = db
        .request_deletion("acct", ErasureReason::Underage)
        .expect("underage");
    assert!(receipt.retained.is_empty());
    assert!(!readable(&db, "acct", "invoices", b"2026-001"));
}

#[test]
fn a_hold_blocks_expiry_and_release_makes_it_due_at_once() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    db.register_account("a").expect("register");
    let expiry = db.now() + SignedDuration::from_hours(1);
    db.put_with(
        "a",
        "message_content",
        b"m",
        b"evidence",
        PutOptions::expires_at(expiry),
    )
    .expect("put");
    db.place_hold("a", Some("message_content"), "case 42")
        .expect("hold");
    clock.advance(days(2));
    let report = db.compact().expect("compact");
    assert_eq!(report.blocked_by_hold, 1);
    assert_eq!(report.keys_destroyed, 0);
    assert_eq!(
        db.compact().expect("compact").blocked_by_hold,
        0,
        "blocked once, audited once"
    );
    assert_eq!(data_records(&db), 1);
    db.release_hold("a", Some("message_content"))
        .expect("release");
    let report = db.compact().expect("compact");
    assert_eq!(report.keys_destroyed, 1, "{report:?}");
    clock.advance(days(7));
    db.compact().expect("sweep");
    assert_eq!(data_records(&db), 0);
}

#[test]
fn a_hold_blocks_retention_erasure_of_a_closed_account() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    db.register_account("a").expect("register");
    db.put("a", "account_profile", b"p", b"profile")
        .expect("put");
    db.close_account("a").expect("close");
    db.place_hold("a", None, "regulator request 7")
        .expect("hold");
    clock.advance(days(61));
    // Four scopes were due: account_profile, marketing_contacts (closure
    // ends marketing consent), and the two classes kept "until
    // termination"; the whole-subject hold blocks all of them.
    assert_eq!(db.compact().expect("compact").blocked_by_hold, 4);
    assert!(readable(&db, "a", "account_profile", b"p"));
    db.release_hold("a", None).expect("release");
    db.compact().expect("compact");
    assert!(!readable(&db, "a", "account_profile", b"p"));
}

/// `retain` of a class in the default policy file, in days, read from the
/// policy text (not from the engine's parser).
fn policy_days(class: &str, field: &str) -> i64 {
    let text = include_str!("../../../policy/default.toml");
    let at = text
        .find(&format!("name = \"{class}\""))
        .expect("class in policy");
    let line = text[at..]
        .lines()
        .find(|l| l.starts_with(&format!("{field} ")))
        .expect("the field");
    line.split('"')
        .nth(1)
        .and_then(|v| v.strip_suffix(" days"))
        .expect("N days")
        .parse()
        .expect("a number")
}

/// G3 on the read path: a scope past its class deadline is erased for
/// readers at the deadline, whether or not compaction has run since.
#[test]
fn reads_end_at_the_class_deadline_without_compaction() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    db.register_account("a").expect("register");
    db.put("a", "marketing_contacts", b"m", b"newsletter")
        .expect("put");
    db.put("a", "account_profile", b"p", b"profile")
        .expect("put");
    clock.advance(SignedDuration::from_hours(5));
    db.opt_out_of_marketing("a").expect("opt out");
    let opted_out = clock.now();
    let marketing = days(policy_days("marketing_contacts", "retain"));
    clock.set(opted_out + marketing - SignedDuration::from_secs(1));
    assert!(readable(&db, "a", "marketing_contacts", b"m"));
    clock.set(opted_out + marketing);
    let err = db
        .get("a", "marketing_contacts", b"m")
        .expect_err("past the deadline");
    assert!(err.is_erased(), "{err}");
    assert!(
        db.put("a", "marketing_contacts", b"m2", b"x")
            .expect_err("no writes past the deadline")
            .is_erased()
    );
    assert!(readable(&db, "a", "account_profile", b"p"));

    // Closure: account_profile leaves every read path (export included)
    // at closure + its retention, with no compaction in between.
    db.close_account("a").expect("close");
    let closed = clock.now();
    let profile = days(policy_days("account_profile", "retain"));
    let classes = |db: &Db| -> Vec<String> {
        db.export("a").expect("export").subjects[0]
            .classes
            .iter()
            .map(|(name, _)| name.clone())
            .collect()
    };
    clock.set(closed + profile - SignedDuration::from_secs(1));
    assert!(classes(&db).contains(&"account_profile".to_string()));
    clock.set(closed + profile);
    assert!(!classes(&db).contains(&"account_profile".to_string()));
}

/// G2 counted from the overwrite, not from the key's destruction: the purge
/// window is read from the policy text, and compaction runs every 6 hours from
/// an overwrite made at an odd hour.
#[test]
fn overwrite_is_purged_within_the_window_counted_from_the_overwrite() {
    let window_days = policy_days("account_profile", "purge_window");
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    db.register_account("a").expect("register");
    db.put("a", "account_profile", b"p", b"old secret")
        .expect("put");
    db.put("a", "account_profile", b"q", b"untouched")
        .expect("put");
    // Epochs rotate for a few days before the overwrite.
    clock.advance(SignedDuration::from_hours(3 * DAY + 7));
    db.compact().expect("compact");
    db.put("a", "account_profile", b"p", b"new")
        .expect("overwrite");
    let overwritten_at = clock.now();
    let before = db.stats().expect("stats");
    assert_eq!(before.rekey_debts, 1);
    // Every epoch live from the overwrite until the old key dies may hold a
    // wrapped copy of it (old pages, backups): all must die by the deadline.
    let mut wrapping: std::collections::BTreeSet<u32> =
        before.live_epochs.iter().copied().collect();
    let purge_deadline = overwritten_at + days(window_days);
    let mut rekeyed = 0;
    while clock.now() < purge_deadline {
        clock.advance(SignedDuration::from_hours(6));
        let report = db.compact().expect("compact");
        rekeyed += report.buckets_rekeyed;
        let stats = db.stats().expect("stats");
        if rekeyed == 0 {
            wrapping.extend(stats.live_epochs.iter().copied());
        }
        assert!(!stats.overdue.is_overdue(), "{}", stats.overdue);
    }
    assert_eq!(rekeyed, 1, "the old version was re-keyed away");
    let stats = db.stats().expect("stats");
    let alive: Vec<u32> = stats
        .live_epochs
        .iter()
        .copied()
        .filter(|e| wrapping.contains(e))
        .collect();
    assert!(
        alive.is_empty(),
        "epochs {alive:?} could still unwrap the overwritten value's key {window_days} days after the overwrite"
    );
    assert_eq!(stats.rekey_debts, 0);
    assert_eq!(stats.keys_destroyed, before.keys_destroyed + 1);
    assert_eq!(
        db.get("a", "account_profile", b"p")
            .expect("get")
            .as_deref(),
        Some(&b"new"[..])
    );
    assert_eq!(
        db.get("a", "account_profile", b"q")
            .expect("get")
            .as_deref(),
        Some(&b"untouched"[..])
    );
}

/// Every overwrite round owes a re-key, also after an earlier round's debt
/// was paid: the engine remembers which keys owe one (to skip reading
/// `debts` on every overwrite), and a memory that outlived the payment, or
/// that named a bucket instead of a key version, would let the second
/// round's dead ciphertext outlive the purge window.
#[test]
fn each_round_of_overwrites_owes_its_own_rekey() {
    let window_days = policy_days("account_profile", "purge_window");
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    db.register_account("a").expect("register");
    db.put("a", "account_profile", b"p", b"v0").expect("put");
    for round in 1..=3u8 {
        let destroyed_before = db.stats().expect("stats").keys_destroyed;
        for n in 0..3u8 {
            db.put("a", "account_profile", b"p", &[b'v', round, n])
                .expect("overwrite");
        }
        assert_eq!(
            db.stats().expect("stats").rekey_debts,
            1,
            "round {round}: the overwrites owe one re-key of the key they replaced"
        );
        let purge_deadline = clock.now() + days(window_days);
        let mut rekeyed = 0;
        while clock.now() < purge_deadline {
            clock.advance(SignedDuration::from_hours(12));
            rekeyed += db.compact().expect("compact").buckets_rekeyed;
        }
        let stats = db.stats().expect("stats");
        assert_eq!(rekeyed, 1, "round {round}: re-keyed within the window");
        assert_eq!(stats.rekey_debts, 0, "round {round}");
        assert_eq!(
            stats.keys_destroyed,
            destroyed_before + 1,
            "round {round}: the overwritten values' key version was destroyed"
        );
        assert_eq!(
            db.get("a", "account_profile", b"p")
                .expect("get")
                .as_deref(),
            Some(&[b'v', round, 2][..])
        );
    }
}

#[test]
fn epochs_rotate_rewrap_and_old_epochs_are_destroyed_after_the_wait() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(start());
    let db = Db::open(config(&dir, &clock)).expect("open");
    db.register_account("a").expect("register");
    db.put("a", "invoices", b"i", b"invoice").expect("put");
    let first = db.stats().expect("stats").current_epoch;
    clock.advance(days(1));
    let report = db.compact().expect("compact");
    assert_eq!(report.epochs_created, 1);
    assert_eq!(report.keys_rewrapped, 1, "the key tree's root: {report:?}");
    let stats = db.stats().expect("stats");
    assert!(stats.current_epoch > first);
    assert!(
        stats.live_epochs.contains(&first),
        "kept while backups may need it"
    );
    clock.advance(days(29));
    let report = db.compact().expect("compact");
    assert!(report.epochs_destroyed >= 1, "{report:?}");
    let stats = db.stats().expect("stats");
    assert!(!stats.live_epochs.contains(&first));
    assert_eq!(
        db.get("a", "invoices", b"i").expect("get").as_deref(),
        Some(&b"invoice"[..])
    );
    drop(db);
    let db = Db::open(config(&dir, &clock)).expect("reopen after epoch destruction");
    assert_eq!(
        db.get("a", "invoices", b"i").expect("get").as_deref(),
        Some(&b"invoice"[..])
    );
    let rotated = db.rotate_epoch().expect("rotate");
    assert_eq!(rotated.keys_rewrapped, 1, "the key tree's root");
}

#[test]
fn the_background_compactor_runs_and_stops() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    db.register_account("a").expect("register");
    let expiry = db.now() + SignedDuration::from_hours(1);
    db.put_with(
        "a",
        "message_content",
        b"m",
        b"x",
        PutOptions::expires_at(expiry),
    )
    .expect("put");
    clock.advance(days(2));
    let compactor = db
        .start_compactor(Duration::from_millis(10), 100)
        .expect("start");
    // Wait for the outcome of the first pass, however long it takes (the
    // clock is manual: the key is due before the compactor starts, so that
    // pass destroys it). A compactor that never completes a pass hangs here
    // rather than failing by a guessed deadline.
    let outcome = loop {
        if let Some(outcome) = compactor.last_outcome() {
            break outcome;
        }
        std::thread::yield_now();
    };
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(
        db.stats().expect("stats").keys_destroyed,
        1,
        "the first pass did not destroy the due key"
    );
    compactor.stop();
}

/// A background compactor holds the store only during a pass: once the
/// application drops its last `Db`, the store closes and opens again.
#[test]
fn a_compactor_does_not_keep_the_store_open() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(start());
    let db = Db::open(config(&dir, &clock)).expect("open");
    let compactor = db
        .start_compactor(Duration::from_millis(5), 100)
        .expect("start");
    while compactor.last_outcome().is_none() {
        std::thread::yield_now();
    }
    drop(db);
    let again = Db::open(config(&dir, &clock)).expect("the store closed with its last Db");
    drop(again);
    compactor.stop();
}

/// Purge does not wait for anyone to call `compact`: a store opened with
/// background maintenance destroys a due key by itself, and dropping the
/// store stops the thread (the directory opens again at once).
#[test]
fn background_maintenance_purges_without_a_compact_call() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(start());
    let with_maintenance =
        || config(&dir, &clock).maintenance_every(Some(Duration::from_millis(20)));
    let db = Db::open(with_maintenance()).expect("open");
    db.register_account("a").expect("register");
    let expiry = db.now() + SignedDuration::from_hours(1);
    db.put_with(
        "a",
        "message_content",
        b"m",
        b"x",
        PutOptions::expires_at(expiry),
    )
    .expect("put");
    clock.advance(days(2));
    // Wait for the outcome; the bound only keeps a broken build from hanging.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while db.stats().expect("stats").keys_destroyed == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no background pass destroyed the due key"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(db);
    let db = Db::open(config(&dir, &clock)).expect("reopen right after the drop");
    assert_eq!(db.stats().expect("stats").keys_destroyed, 1);
}

/// Accounts `s0`, `s1`, … with one `message_content` record (`m`) each,
/// expiring an hour from now.
fn accounts_with_a_record_expiring_in_an_hour(db: &Db, count: usize) {
    for i in 0..count {
        let subject = format!("s{i}");
        db.register_account(&subject).expect("register");
        let expiry = db.now() + SignedDuration::from_hours(1);
        db.put_with(
            &subject,
            "message_content",
            b"m",
            b"x",
            PutOptions::expires_at(expiry),
        )
        .expect("put");
    }
}

#[test]
fn a_compaction_budget_leaves_the_rest_for_the_next_pass() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    accounts_with_a_record_expiring_in_an_hour(&db, 5);
    clock.advance(days(2));
    let first = db.compact_with(2, &mut |_| {}).expect("compact");
    assert_eq!(first.items, 2);
    assert!(first.remaining > 0);
    assert_eq!(first.keys_destroyed, 2);
    let second = db.compact().expect("compact");
    assert_eq!(second.keys_destroyed, 3);
    clock.advance(days(7));
    db.compact().expect("sweep");
    assert_eq!(data_records(&db), 0);
}

/// A pass reads the deadline index in pages and resumes each page after the
/// last item of the one before. Items that stay in the index (set aside, their
/// retry not due) fill the first pages here, so a resume that went back would
/// count them again and one that went too far would miss them or the keys
/// after them. Each must be counted once and every due key destroyed.
#[test]
fn a_pass_visits_each_due_item_once_across_pages() {
    use super::deadlines::{self, Due};
    use super::poisoned::{self, FailureKind, Poisoned};
    const SUBJECTS: usize = 300; // more than a page of due keys (256)
    const SET_ASIDE: usize = 600; // more than two pages, all before the keys
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    accounts_with_a_record_expiring_in_an_hour(&db, SUBJECTS);
    clock.advance(days(2));
    let now = clock.now().as_second();
    for i in 0..SET_ASIDE {
        let n = u16::try_from(i).expect("small");
        let mut tag = [0u8; 16];
        tag[..2].copy_from_slice(&n.to_be_bytes());
        // Deadlines in 1970: before every due key of the subjects.
        let key = deadlines::key(
            i64::from(n) + 1,
            &Due::EraseScope(shredkv_crypto::SubjectTag(tag), 8),
        );
        raw_put(&db, Tree::Deadlines, &key, &deadlines::value(now));
        let record = Poisoned {
            attempts: 1,
            first_failure: now,
            next_retry: now + 86_400,
            deadline: i64::from(n) + 1,
            kind: FailureKind::Other,
        };
        raw_put(
            &db,
            Tree::Poisoned,
            &poisoned::due_key(&key),
            &record.encode(),
        );
    }
    let report = db.compact().expect("compact");
    assert_eq!(report.set_aside, SET_ASIDE as u64, "{report:?}");
    assert_eq!(report.keys_destroyed, SUBJECTS as u64, "{report:?}");
    assert_eq!(report.items, SUBJECTS as u64, "{report:?}");
    for i in 0..SUBJECTS {
        assert!(
            !readable(&db, &format!("s{i}"), "message_content", b"m"),
            "s{i}"
        );
    }
    let again = db.compact().expect("compact");
    assert_eq!(
        (again.keys_destroyed, again.set_aside),
        (0, SET_ASIDE as u64),
        "{again:?}"
    );
}

fn sled_config(dir: &std::path::Path, clock: &ManualClock) -> Config {
    Config::new(dir)
        .allow_key_file_in_store(true)
        .clock(Arc::new(clock.clone()))
        .flush_every(None)
        .maintenance_every(None)
}

#[test]
fn restore_replays_erasures_made_after_the_backup() {
    let root = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(start());
    let live = Db::open(sled_config(&root.path().join("live"), &clock)).expect("open");
    for s in ["gone", "kept"] {
        live.register_account(s).expect("register");
        live.put(s, "account_profile", b"p", s.as_bytes())
            .expect("put");
    }
    let expiry = live.now() + SignedDuration::from_hours(1);
    live.put_with(
        "kept",
        "message_content",
        b"m",
        b"expires",
        PutOptions::expires_at(expiry),
    )
    .expect("put");
    live.backup(root.path().join("backup")).expect("backup");
    // After the backup: an erasure, and an expiry destroyed by compaction.
    live.shred("gone", crate::Classes::All).expect("shred");
    clock.advance(SignedDuration::from_hours(25));
    live.compact().expect("compact");

    let (restored, report) = Db::restore(
        root.path().join("backup"),
        sled_config(&root.path().join("restored"), &clock),
        crate::ErasureSource::Live(&live),
    )
    .expect("restore");
    assert_eq!(report.erasures_replayed, 1);
    assert!(report.keys_destroyed >= 2, "{report:?}");
    assert!(
        restored
            .get("gone", "account_profile", b"p")
            .expect_err("erased")
            .is_erased()
    );
    assert_eq!(
        restored
            .get("kept", "account_profile", b"p")
            .expect("get")
            .as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(
        restored.get("kept", "message_content", b"m").expect("get"),
        None
    );
    assert!(restored.verify().expect("verify").is_clean());

    // The same through an exported erasure log, and a damaged log is refused.
    let log = root.path().join("erasures.log");
    live.export_erasure_log(&log).expect("export");
    let key_file = root.path().join("live").join("keys");
    drop(restored);
    drop(live);
    let (restored, _) = Db::restore(
        root.path().join("backup"),
        sled_config(&root.path().join("restored-from-file"), &clock).key_file(&key_file),
        crate::ErasureSource::File(&log),
    )
    .expect("restore from file");
    assert!(
        restored
            .get("gone", "account_profile", b"p")
            .expect_err("erased")
            .is_erased()
    );
    drop(restored);
    let mut damaged = std::fs::read(&log).expect("read");
    damaged[12] ^= 1;
    std::fs::write(&log, damaged).expect("write");
    let err = Db::restore(
        root.path().join("backup"),
        sled_config(&root.path().join("restored-bad-log"), &clock).key_file(&key_file),
        crate::ErasureSource::File(&log),
    )
    .expect_err("damaged log");
    assert!(err.is_integrity_failure(), "{err}");
}

#[test]
fn a_backup_older_than_the_purge_window_cannot_be_decrypted() {
    let root = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(start());
    let live = Db::open(sled_config(&root.path().join("live"), &clock)).expect("open");
    live.register_account("a").expect("register");
    live.put("a", "account_profile", b"p", b"x").expect("put");
    live.backup(root.path().join("old")).expect("backup");
    // Still restorable within the window.
    clock.advance(days(1));
    live.compact().expect("rotate");
    live.backup(root.path().join("recent")).expect("backup");
    clock.advance(days(30));
    live.compact().expect("destroy old epochs");
    let err = Db::restore(
        root.path().join("old"),
        sled_config(&root.path().join("r1"), &clock),
        crate::ErasureSource::Live(&live),
    )
    .expect_err("too old");
    assert!(
        matches!(err, crate::Error::StoreKeysDestroyed { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("older than its purge window"),
        "{err}"
    );
}

/// Restores `root/backup` as a trial beside the store `live` in
/// `root/live`, and checks it serves subject "a"'s profile "x". A restore
/// takes over the key file it is given (the store it came from would be
/// refused from then on), so it gets a copy, and the live store's erasure
/// log as a file.
fn trial_restore(root: &std::path::Path, live: &Db, config: Config) -> crate::Result<Db> {
    let copy = root.join("keys-copy");
    std::fs::copy(root.join("live").join("keys"), &copy).expect("copy the key file");
    let log = root.join("erasures.log");
    live.export_erasure_log(&log).expect("export");
    let (restored, _) = Db::restore(
        root.join("backup"),
        config.key_file(&copy),
        crate::ErasureSource::File(&log),
    )?;
    assert_eq!(
        restored
            .get("a", "account_profile", b"p")
            .expect("get")
            .as_deref(),
        Some(&b"x"[..])
    );
    Ok(restored)
}

/// The backup window the timeline promises (docs/operations.md): a backup
/// restores for at least 13.5 days after it was taken (the epoch's life
/// `(30 − 1) / 2` days, less a rotation period), and no backup outlives the
/// notice's 30 days ("removed from all systems"), with compaction every
/// 6 hours from an odd hour.
#[test]
fn backups_restore_for_thirteen_days_and_never_past_thirty() {
    let root = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(start() + SignedDuration::from_hours(5));
    let live = Db::open(sled_config(&root.path().join("live"), &clock)).expect("open");
    live.register_account("a").expect("register");
    live.put("a", "account_profile", b"p", b"x").expect("put");
    // Epochs already rotating when the backup is taken.
    clock.advance(SignedDuration::from_hours(2 * DAY + 3));
    live.compact().expect("compact");
    let taken = clock.now();
    let report = live.backup(root.path().join("backup")).expect("backup");
    // Taken just after the pass that rotated: its epoch's whole life, L.
    assert_eq!(
        report.restorable_until,
        taken + SignedDuration::from_hours(14 * DAY + 12)
    );
    assert_eq!(report.unrestorable_after, taken + days(30));
    let restore = |name: &str| {
        Db::restore(
            root.path().join("backup"),
            sled_config(&root.path().join(name), &clock),
            crate::ErasureSource::Live(&live),
        )
    };
    let restorable_until = taken + SignedDuration::from_hours(13 * DAY + 12);
    while clock.now() + SignedDuration::from_hours(6) <= restorable_until {
        clock.advance(SignedDuration::from_hours(6));
        live.compact().expect("compact");
    }
    let restored = trial_restore(
        root.path(),
        &live,
        sled_config(&root.path().join("r1"), &clock),
    )
    .expect("still within the backup window");
    drop(restored);
    while clock.now() < taken + days(30) {
        clock.advance(SignedDuration::from_hours(6));
        live.compact().expect("compact");
    }
    let err = restore("r2").expect_err("30 days after the backup, its keys are gone");
    assert!(
        matches!(err, crate::Error::StoreKeysDestroyed { .. }),
        "{err}"
    );
}

/// The same with 1-day purge windows, worked by hand: P = 6 h, L = 9 h, so
/// a backup taken just as its epoch is due for rotation restores for
/// L − P = 3 h, and none a day after it was taken, with a pass every
/// 3 hours. A store restored from a backup keeps the backup's epoch until its
/// first pass, and a backup of it taken before then says so.
#[test]
fn with_one_day_windows_a_backup_restores_for_three_hours_and_never_past_a_day() {
    let hours = SignedDuration::from_hours;
    let root = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(start() + hours(1));
    let config = |name: &str| sled_config(&root.path().join(name), &clock).policy(one_day_policy());
    let live = Db::open(config("live")).expect("open");
    live.register_account("a").expect("register");
    live.put("a", "account_profile", b"p", b"x").expect("put");
    // A rotation at +10 h (the first epoch is 10 h old), a pass at +13 h;
    // the backup at +16 h, its epoch 6 h old and due.
    clock.advance(hours(10));
    let first_rotation = live.compact().expect("compact");
    assert_eq!(first_rotation.epochs_created, 1);
    let rotated_at = clock.now();
    clock.advance(hours(3));
    live.compact().expect("compact");
    clock.advance(hours(3));
    let taken = clock.now();
    let backup_epoch = live.stats().expect("stats").current_epoch;
    let report = live.backup(root.path().join("backup")).expect("backup");
    assert_eq!(report.restorable_until, rotated_at + hours(9));
    assert_eq!(report.restorable_until, taken + hours(3));
    assert_eq!(report.unrestorable_after, taken + hours(24));
    for _ in 0..3 {
        clock.advance(SignedDuration::from_mins(59));
        live.compact().expect("compact");
    }
    let restored = trial_restore(root.path(), &live, config("r1"))
        .expect("2 h 57 min after the backup, still within its window");
    // The restored store serves under the backup's epoch (8 h 57 min old)
    // until its first pass: a backup of it now restores only until that
    // epoch's end, 3 minutes away, and says so.
    assert_eq!(restored.stats().expect("stats").current_epoch, backup_epoch);
    let again = restored
        .backup(root.path().join("backup-of-restored"))
        .expect("backup");
    assert_eq!(again.restorable_until, rotated_at + hours(9));
    assert_eq!(
        again.restorable_until,
        clock.now() + SignedDuration::from_mins(3)
    );
    drop(restored);
    while clock.now() < taken + hours(24) {
        clock.advance(hours(3));
        live.compact().expect("compact");
    }
    let err = Db::restore(
        root.path().join("backup"),
        config("r2"),
        crate::ErasureSource::Live(&live),
    )
    .expect_err("a day after the backup, its keys are gone");
    assert!(
        matches!(err, crate::Error::StoreKeysDestroyed { .. }),
        "{err}"
    );
}

#[test]
fn an_interrupted_restore_refuses_to_open() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(start());
    let db = Db::open(sled_config(dir.path(), &clock)).expect("open");
    let mut batch = crate::storage::WriteBatch::new();
    batch.put(Tree::Meta, crate::db::meta::RESTORE_PENDING, vec![1]);
    db.inner
        .storage
        .apply(&batch, crate::storage::Durability::Durable)
        .expect("mark");
    drop(db);
    let err = Db::open(sled_config(dir.path(), &clock)).expect_err("pending restore");
    assert!(
        matches!(err, crate::Error::RestoreInterrupted { .. }),
        "{err}"
    );
}

/// A certificate names a pending re-key of a whole forest (an expiry's, or
/// a restore's of the whole tree) only when the forest holds one of the
/// subject's keys; forest 0 holds every subject's scope keys.
#[test]
fn a_forest_debt_is_pending_for_the_subjects_whose_keys_it_holds() {
    use crate::retention::deadlines::{self, Due};
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    for subject in ["a", "b"] {
        db.register_account(subject).expect("register");
    }
    let soon = db.now() + SignedDuration::from_hours(2);
    db.put_with(
        "a",
        "message_content",
        b"m",
        b"x",
        PutOptions::expires_at(soon),
    )
    .expect("put");
    let later = db.now() + days(3);
    db.put_with(
        "b",
        "message_content",
        b"m",
        b"y",
        PutOptions::expires_at(later),
    )
    .expect("put");
    db.shred("a", crate::Classes::All).expect("shred");
    db.compact().expect("compact");
    let tag = db.subject_tag("a");
    assert!(
        !db.inner.node_debt_pending_for(&tag).expect("read"),
        "the shred's debts are paid"
    );
    // The expiry buckets as the design numbers them: 2 + the UTC day.
    let bucket = |t: Timestamp| 2 + u32::try_from(t.as_second() / 86_400).expect("day");
    let now = clock.now().as_second();
    let owe = |forest: u32| {
        let key = deadlines::key(now, &Due::RetireForest(forest));
        raw_put(&db, Tree::Deadlines, &key, &deadlines::value(now));
        key
    };
    let forget = |key: Vec<u8>| {
        let mut batch = crate::storage::WriteBatch::new();
        batch.remove(Tree::Deadlines, key);
        db.inner
            .storage
            .apply(&batch, crate::storage::Durability::Durable)
            .expect("remove");
    };
    let others = owe(bucket(later));
    assert!(
        !db.inner.node_debt_pending_for(&tag).expect("read"),
        "b's forest only"
    );
    forget(others);
    let own = owe(bucket(soon));
    assert!(
        db.inner.node_debt_pending_for(&tag).expect("read"),
        "a's day forest"
    );
    forget(own);
    owe(0);
    assert!(
        db.inner.node_debt_pending_for(&tag).expect("read"),
        "forest 0"
    );
}

#[test]
fn a_certificate_is_pending_until_the_purge_completes() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(start());
    let db = Db::open(sled_config(dir.path(), &clock)).expect("open");
    db.register_account("a").expect("register");
    db.put("a", "account_profile", b"p", b"x").expect("put");
    db.put("a", "message_content", b"m", b"y").expect("put");
    assert!(db.certificate("a").is_err(), "nothing erased yet");
    db.shred("a", crate::Classes::All).expect("shred");
    let pending = db.certificate("a").expect("certificate");
    assert!(!pending.is_complete());
    let crate::PurgeStatus::Pending { steps, due_by } = &pending.status else {
        panic!("pending")
    };
    assert!(steps.iter().any(|s| s.contains("epoch")), "{steps:?}");
    assert!(steps.iter().any(|s| s.contains("dead record")), "{steps:?}");
    assert!(
        steps.iter().any(|s| s.contains("key tree")),
        "the shred's node debt is named: {steps:?}"
    );
    assert!(due_by.duration_since(db.now()) <= days(30));
    assert_eq!(pending.keys_live_in_erased_scopes, 0);
    // The next pass re-keys the path: that step is done, the epoch is not.
    db.compact().expect("compact");
    let crate::PurgeStatus::Pending { steps, .. } = &db.certificate("a").expect("c").status else {
        panic!("still pending: the epoch lives")
    };
    assert!(!steps.iter().any(|s| s.contains("key tree")), "{steps:?}");
    assert!(steps.iter().any(|s| s.contains("epoch")), "{steps:?}");
    // A day later the epoch rotates; after the wait it is destroyed.
    clock.advance(days(1));
    db.compact().expect("compact");
    clock.advance(days(29));
    db.compact().expect("compact");
    let done = db.certificate("a").expect("certificate");
    assert!(done.is_complete(), "{done}");
    assert!(done.keys_destroyed >= 3);
    #[cfg(feature = "serde")]
    {
        let json = serde_json::to_value(&done).expect("serialize");
        assert_eq!(json["purge_status"], "complete");
        assert_eq!(json["subject_tag"], db.subject_tag("a").to_hex());
    }
    assert!(done.to_string().contains("COMPLETE"));
}

#[test]
fn applying_a_changed_policy_is_audited_and_recomputes_deadlines() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(start());
    let db = Db::open(sled_config(dir.path(), &clock)).expect("open");
    db.register_account("a").expect("register");
    db.put("a", "account_profile", b"p", b"x").expect("put");
    db.close_account("a").expect("close");
    drop(db);
    // The same policy with account_profile kept 10 days instead of 60.
    let text = crate::Policy::DEFAULT_TOML.replace("retain = \"60 days\"", "retain = \"10 days\"");
    assert_ne!(text, crate::Policy::DEFAULT_TOML);
    let shorter = crate::Policy::from_toml_str(&text, "shorter").expect("policy");
    let err =
        Db::open(sled_config(dir.path(), &clock).policy(shorter.clone())).expect_err("refused");
    assert!(matches!(err, crate::Error::PolicyChanged { .. }), "{err}");
    let db = Db::open(
        sled_config(dir.path(), &clock)
            .policy(shorter)
            .apply_policy_change(true),
    )
    .expect("applied");
    assert!(
        db.audit_tail(3)
            .expect("tail")
            .iter()
            .any(|e| e.event == crate::AuditEvent::PolicyApplied)
    );
    clock.advance(days(11));
    db.compact().expect("compact");
    assert!(
        !readable(&db, "a", "account_profile", b"p"),
        "the new, shorter deadline applies"
    );
}

#[test]
fn a_shred_blocked_by_a_hold_resumes_when_the_hold_is_released() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, _) = open(&dir);
    db.register_account("a").expect("register");
    db.put("a", "marketing_contacts", b"c", b"contact")
        .expect("put");
    db.place_hold("a", Some("marketing_contacts"), "case 9")
        .expect("hold");
    let receipt = db
        .request_deletion("a", ErasureReason::DeletionRequest)
        .expect("request");
    assert!(
        receipt
            .retained
            .iter()
            .any(|r| r.class == "marketing_contacts" && r.reason.contains("case 9"))
    );
    db.compact().expect("compact");
    assert!(readable(&db, "a", "marketing_contacts", b"c"), "held");
    db.release_hold("a", Some("marketing_contacts"))
        .expect("release");
    db.compact().expect("compact");
    assert!(
        !readable(&db, "a", "marketing_contacts", b"c"),
        "the blocked erasure resumed"
    );
}

#[test]
fn a_held_record_stays_readable_past_its_expiry() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    db.register_account("a").expect("register");
    let expiry = db.now() + SignedDuration::from_hours(1);
    db.put_with(
        "a",
        "usage_records",
        b"u",
        b"evidence",
        PutOptions::expires_at(expiry),
    )
    .expect("put");
    db.place_hold("a", None, "litigation 3").expect("hold");
    clock.advance(SignedDuration::from_hours(2));
    assert_eq!(
        db.get("a", "usage_records", b"u").expect("get").as_deref(),
        Some(&b"evidence"[..])
    );
    assert_eq!(db.export("a").expect("export").record_count(), 1);
    db.release_hold("a", None).expect("release");
    assert_eq!(db.get("a", "usage_records", b"u").expect("get"), None);
}

#[test]
fn receipts_keep_unreleased_manual_classes_until_released() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, _) = open(&dir);
    db.register_account("a").expect("register");
    db.put("a", "subscriber_records", b"s", b"sub")
        .expect("put");
    db.put("a", "retained_usage_copy", b"r", b"copy")
        .expect("put");
    db.release("a", "subscriber_records").expect("release");
    let receipt = db
        .request_deletion("a", ErasureReason::DeletionRequest)
        .expect("request");
    let copy = receipt
        .retained
        .iter()
        .find(|r| r.class == "retained_usage_copy")
        .expect("retained");
    assert_eq!(copy.until, None);
    assert!(
        copy.reason.contains("kept until released"),
        "{}",
        copy.reason
    );
}

#[test]
fn compaction_never_rewraps_a_key_it_destroys() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    db.register_account("a").expect("register");
    let expiry = db.now() + SignedDuration::from_hours(1);
    db.put_with(
        "a",
        "message_content",
        b"m",
        b"x",
        PutOptions::expires_at(expiry),
    )
    .expect("put");
    // One compaction both destroys the expired key and rotates the epoch.
    let root_before = root_generation(&db);
    clock.advance(days(2));
    let report = db.compact().expect("compact");
    assert_eq!(report.epochs_created, 1);
    assert_eq!(report.keys_destroyed, 1);
    let destroyed: Vec<_> = crate::internal::vault_key_ids(&db)
        .expect("ids")
        .into_iter()
        .filter(|(_, d)| *d)
        .collect();
    assert_eq!(destroyed.len(), 1);
    // The destroyed key was its day's only one: its day forest (the root
    // and three levels down to its bottom node) was removed whole before
    // the rotation, which re-wrapped forest 0's root alone, untouched by
    // the expiry.
    assert_eq!(report.forests_removed, 1, "{report:?}");
    assert_eq!(report.nodes_removed, 4, "{report:?}");
    assert_eq!(report.nodes_rekeyed, 0, "{report:?}");
    assert_eq!(report.keys_rewrapped, 1, "{report:?}");
    assert_eq!(root_generation(&db), root_before);
    assert_eq!(day_forest_nodes(&db), 0);
    assert_eq!(pending_node_debts(&db), 0);
}

/// Every node of the key tree with its generation, read raw: a node id is
/// depth (1) ‖ forest (u32 BE) ‖ prefix (u32 BE); a node entry is version
/// (1) ‖ generation (u32 BE) ‖ ….
fn node_generations(db: &Db) -> std::collections::BTreeMap<Vec<u8>, u32> {
    let mut nodes = std::collections::BTreeMap::new();
    db.inner
        .storage
        .scan(
            Tree::KeyNodes,
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            crate::storage::Order::Ascending,
            &mut |k, v| {
                if let Some(generation) = v.get(1..5) {
                    let generation = u32::from_be_bytes(generation.try_into().expect("4"));
                    nodes.insert(k.to_vec(), generation);
                }
                ControlFlow::Continue(())
            },
        )
        .expect("scan");
    nodes
}

/// Whether a `key_nodes` key (depth ‖ forest ‖ prefix) is a day forest's.
fn in_day_forest(node: &[u8]) -> bool {
    node.len() == 9 && node[1..5] != [0, 0, 0, 0]
}

/// Nodes of day forests the key tree holds (every forest but 0).
fn day_forest_nodes(db: &Db) -> usize {
    node_generations(db)
        .keys()
        .filter(|k| in_day_forest(k))
        .count()
}

/// Each day forest's root: (forest, generation).
fn day_forest_roots(db: &Db) -> Vec<(u32, u32)> {
    node_generations(db)
        .into_iter()
        .filter(|(k, _)| in_day_forest(k) && k[0] == 0)
        .map(|(k, generation)| {
            (
                u32::from_be_bytes(k[1..5].try_into().expect("4")),
                generation,
            )
        })
        .collect()
}

/// The generation of forest 0's root.
fn root_generation(db: &Db) -> u32 {
    db.inner
        .vault
        .tree()
        .read_node(shredkv_crypto::NodeId::ROOT)
        .expect("read")
        .expect("a root")
        .generation
}

/// The generation of the bottom node a subject's keys are under.
fn bottom_generation(db: &Db, subject: &str) -> u32 {
    let node = shredkv_crypto::NodeId::of_tag(
        0,
        &db.subject_tag(subject),
        crate::vault::tree::BOTTOM_DEPTH,
    );
    db.inner
        .vault
        .tree()
        .read_node(node)
        .expect("read")
        .expect("the subject's bottom node")
        .generation
}

/// Node debts in the deadline index (kind 6, written by docs/design.md's
/// rule: one per destroyed key under the tree, due at its destruction).
fn pending_node_debts(db: &Db) -> usize {
    let mut n = 0;
    crate::storage::scan_prefix(
        db.inner.storage.as_ref(),
        Tree::Deadlines,
        &[],
        &mut |k, _| {
            if k.get(8) == Some(&6) {
                n += 1;
            }
            ControlFlow::Continue(())
        },
    )
    .expect("scan");
    n
}

/// Every way a key dies leaves a debt on its bottom node, and compaction
/// pays it by re-keying the node (and its path) before anything else
/// touches epochs: a shred (debt left for the next pass), an expiry, a
/// bucket's re-key (paid in the pass that destroyed the key).
#[test]
fn every_destruction_owes_its_node_a_rekey_and_compaction_pays_it() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    for s in ["a", "b"] {
        db.register_account(s).expect("register");
        db.put(s, "account_profile", b"p", b"v1").expect("put");
    }
    let expiry = db.now() + SignedDuration::from_hours(1);
    db.put_with(
        "b",
        "message_content",
        b"m",
        b"x",
        PutOptions::expires_at(expiry),
    )
    .expect("put");
    assert_eq!(pending_node_debts(&db), 0);

    // A shred: its keys' debts wait for the next pass.
    let (a_node, root) = (bottom_generation(&db, "a"), root_generation(&db));
    db.shred("a", crate::Classes::All).expect("shred");
    assert!(pending_node_debts(&db) >= 1, "the shred owes a re-key");
    assert_eq!(bottom_generation(&db, "a"), a_node, "not paid yet");
    let report = db.compact().expect("compact");
    assert!(report.nodes_rekeyed >= 6, "{report:?}");
    assert_eq!(pending_node_debts(&db), 0);
    assert!(bottom_generation(&db, "a") > a_node);
    assert!(root_generation(&db) > root);

    // An expiry, in the pass that destroys the key: its day's forest holds
    // no live key after it, so the forest is removed whole (nothing to
    // re-wrap), and b's keys in forest 0 are left alone.
    let b_node = bottom_generation(&db, "b");
    assert_eq!(day_forest_nodes(&db), 4, "the day's root and three levels");
    clock.advance(days(2));
    let report = db.compact().expect("compact");
    assert_eq!(report.keys_destroyed, 1, "{report:?}");
    assert_eq!(pending_node_debts(&db), 0);
    assert_eq!(report.forests_removed, 1, "expiry: {report:?}");
    assert_eq!(day_forest_nodes(&db), 0, "expiry: {report:?}");
    assert_eq!(bottom_generation(&db, "b"), b_node, "expiry: {report:?}");

    // A bucket's re-key (an overwrite's debt falls due) destroys the old
    // version, in the pass that pays the debt.
    db.put("b", "account_profile", b"p", b"v2")
        .expect("overwrite");
    let b_node = bottom_generation(&db, "b");
    clock.advance(days(20));
    let report = db.compact().expect("compact");
    assert_eq!(report.buckets_rekeyed, 1, "{report:?}");
    assert_eq!(pending_node_debts(&db), 0);
    assert!(bottom_generation(&db, "b") > b_node, "re-key: {report:?}");
    assert_eq!(
        db.get("b", "account_profile", b"p")
            .expect("get")
            .as_deref(),
        Some(&b"v2"[..])
    );
}

/// A rotation never re-wraps a root generation that opens a destroyed key:
/// reached with a debt still unpaid (an erasure that landed after the
/// pass paid the others), it pays it first, so the root it re-wraps is a
/// fresh generation.
#[test]
fn a_rotation_pays_the_node_debts_before_it_rewraps_the_root() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, _clock) = open(&dir);
    for s in ["a", "b"] {
        db.register_account(s).expect("register");
        db.put(s, "account_profile", b"p", b"v").expect("put");
    }
    db.shred("a", crate::Classes::All).expect("shred");
    assert!(pending_node_debts(&db) >= 1);
    let root = root_generation(&db);
    // Straight to the rotation, past `Db::rotate_epoch`'s own payment.
    let _single = db.inner.compaction.lock().expect("compaction lock");
    let mut report = super::compaction::CompactionReport::default();
    let created = db
        .inner
        .rotate_locked(db.now(), &mut report)
        .expect("rotate");
    assert_eq!(pending_node_debts(&db), 0, "paid before the root's re-wrap");
    assert_eq!(root_generation(&db), root + 1);
    assert_eq!(
        db.inner.vault.tree().root_epochs().expect("roots"),
        std::collections::BTreeSet::from([created])
    );
    assert_eq!(
        db.get("b", "account_profile", b"p")
            .expect("get")
            .as_deref(),
        Some(&b"v"[..])
    );
}

/// Every stored record of a subject's class, raw: (tree key, envelope).
fn raw_records(db: &Db, subject: &str, class: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let number = db.inner.class(class).expect("class").number;
    let prefix = crate::records::scope_prefix(&db.subject_tag(subject), number);
    let mut out = Vec::new();
    crate::storage::scan_prefix(
        db.inner.storage.as_ref(),
        Tree::Data,
        &prefix,
        &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            ControlFlow::Continue(())
        },
    )
    .expect("scan");
    out
}

fn raw_put(db: &Db, tree: Tree, key: &[u8], value: &[u8]) {
    let mut batch = crate::storage::WriteBatch::new();
    batch.put(tree, key, value.to_vec());
    db.inner
        .storage
        .apply(&batch, crate::storage::Durability::Durable)
        .expect("raw write");
}

/// An envelope with a consistent checksum over `body` (what an attacker
/// with write access to the files can always produce).
fn with_crc(mut body: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&crc.to_be_bytes());
    body
}

/// Envelope bytes 6..10 name the key version (see the envelope format).
fn forge_key_version(envelope: &[u8], version: u32) -> Vec<u8> {
    let mut body = envelope[..envelope.len() - 4].to_vec();
    body[6..10].copy_from_slice(&version.to_be_bytes());
    with_crc(body)
}

/// Adds an expiry to an envelope that has none: flag bit 0 of byte 1, the
/// expiry after the 10-byte key reference.
fn forge_expiry(envelope: &[u8], expiry: i64) -> Vec<u8> {
    assert_eq!(envelope[1], 0, "the record had no expiry");
    let mut body = envelope[..10].to_vec();
    body[1] = 1;
    body.extend_from_slice(&expiry.to_be_bytes());
    body.extend_from_slice(&envelope[10..envelope.len() - 4]);
    with_crc(body)
}

fn audit_count(db: &Db, event: crate::AuditEvent, subject: &str) -> usize {
    let tag = db.subject_tag(subject);
    db.audit_entries(1, usize::MAX)
        .expect("audit")
        .iter()
        .filter(|e| e.event == event && e.subject == Some(tag))
        .count()
}

fn tampered(outcome: crate::Result<Option<Vec<u8>>>) -> bool {
    matches!(outcome, Err(crate::Error::Tampered { .. }))
}

#[test]
fn purge_progresses_past_a_poisoned_item() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    for subject in ["a", "b", "c"] {
        db.register_account(subject).expect("register");
        db.put(subject, "message_content", b"m", b"content")
            .expect("put");
    }
    db.put("b", "account_profile", b"p", b"old profile")
        .expect("put");
    db.put("b", "account_profile", b"p", b"new profile")
        .expect("overwrite");
    // a's hold record is damaged (its checksum fails): whether a hold
    // covers a's scopes cannot be known, so a's erasures cannot be done.
    let a = db.subject_tag("a");
    raw_put(
        &db,
        Tree::Holds,
        &crate::ledger::key(&a, crate::ledger::ALL_CLASSES),
        b"\x01not a hold record",
    );
    // c's data key no longer authenticates under its node (a wrapped key
    // altered with a consistent checksum): it cannot be re-wrapped when
    // its node is re-keyed.
    let c = db.subject_tag("c");
    let mut vault = Vec::new();
    crate::storage::scan_prefix(db.inner.storage.as_ref(), Tree::Vault, &c.0, &mut |k, v| {
        vault.push((k.to_vec(), v.to_vec()));
        ControlFlow::Continue(())
    })
    .expect("scan");
    let (data_key_id, entry) = vault
        .iter()
        .find(|(k, _)| shredkv_crypto::KeyId::from_bytes(k).is_some_and(|id| id.bucket == 1))
        .expect("c's data key");
    let mut entry = crate::vault::VaultEntry::decode(entry).expect("entry");
    // Node-wrapped key format: bytes 26..58 the sealed key, a CRC over 0..74
    // last.
    let Some(crate::vault::Wrapped::Node(wrapped)) = entry.wrapped else {
        panic!("c's key is under the tree");
    };
    let mut bytes = wrapped.as_bytes()[..74].to_vec();
    bytes[29] ^= 0x01;
    let bytes = with_crc(bytes);
    entry.wrapped = Some(crate::vault::Wrapped::Node(
        shredkv_crypto::NodeWrapped::from_bytes(&bytes).expect("wrapped"),
    ));
    raw_put(&db, Tree::Vault, data_key_id, &entry.encode());
    // A neighbour's key under c's bottom node died: the node owes a re-key.
    let c_key = shredkv_crypto::KeyId::from_bytes(data_key_id).expect("key id");
    let now_secs = db.now().as_second();
    raw_put(
        &db,
        Tree::Deadlines,
        &crate::retention::deadlines::key(
            now_secs,
            // Another key of the same bottom node (c's own subject).
            &crate::retention::deadlines::Due::RekeyNode(shredkv_crypto::KeyId {
                version: c_key.version + 1_000,
                ..c_key
            }),
        ),
        &crate::retention::deadlines::value(now_secs),
    );
    let first_epoch = db.stats().expect("stats").current_epoch;

    db.close_account("a").expect("close a");
    db.close_account("b").expect("close b");
    // message_content lives "up until termination": due at closure.
    let report = db
        .compact()
        .expect("a poisoned item does not fail the pass");
    assert!(report.set_aside >= 1, "{report:?}");
    assert!(
        !readable(&db, "b", "message_content", b"m"),
        "b's erasure was done although a's failed"
    );
    let set_aside = audit_count(&db, crate::AuditEvent::ItemSetAside, "a");
    assert!(set_aside >= 1, "a's failure is audited");
    let summary = db.inner.poisoned_summary().expect("summary");
    assert!(summary.count >= 1, "{summary:?}");
    let overdue = db.stats().expect("stats").overdue;
    assert!(
        overdue.set_aside >= 1 && overdue.is_overdue(),
        "{overdue:?}"
    );
    assert!(
        summary.oldest_deadline.is_some_and(|d| d <= db.now()),
        "{summary:?}"
    );

    // A day later: the epoch rotates although c's key cannot be re-wrapped,
    // and a's items are retried (not audited again).
    clock.advance(days(1));
    let report = db.compact().expect("compact");
    assert_eq!(report.epochs_created, 1, "{report:?}");
    assert_eq!(
        audit_count(&db, crate::AuditEvent::ItemSetAside, "a"),
        set_aside,
        "audited once, not at every retry"
    );
    assert_eq!(audit_count(&db, crate::AuditEvent::ItemSetAside, "c"), 1);

    // Forty days on: b's overwritten profile was re-keyed, and the first
    // epoch was destroyed although c's entry still names it.
    clock.advance(days(40));
    let report = db.compact().expect("compact");
    assert_eq!(report.buckets_rekeyed, 1, "{report:?}");
    assert_eq!(
        exported_value(&db, "b", "account_profile", b"p").as_deref(),
        Some(&b"new profile"[..])
    );
    let live = db.stats().expect("stats").live_epochs;
    assert!(
        !live.contains(&first_epoch),
        "epoch {first_epoch} outlived its deadline: {live:?}"
    );
    assert!(db.inner.poisoned_summary().expect("summary").count >= 2);
}

/// A storage seam that remembers the largest batch written through it.
struct LargestBatch {
    inner: Arc<dyn crate::storage::Storage>,
    largest: std::sync::atomic::AtomicUsize,
}

impl crate::storage::Storage for LargestBatch {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, crate::StorageError> {
        self.inner.get(tree, key)
    }

    fn scan(
        &self,
        tree: Tree,
        start: std::ops::Bound<&[u8]>,
        end: std::ops::Bound<&[u8]>,
        order: Order,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> ControlFlow<()>,
    ) -> Result<(), crate::StorageError> {
        self.inner.scan(tree, start, end, order, visit)
    }

    fn apply(
        &self,
        batch: &crate::storage::WriteBatch,
        durability: crate::storage::Durability,
    ) -> Result<(), crate::StorageError> {
        self.largest
            .fetch_max(batch.ops.len(), std::sync::atomic::Ordering::Relaxed);
        self.inner.apply(batch, durability)
    }

    fn flush(&self) -> Result<(), crate::StorageError> {
        self.inner.flush()
    }

    fn space(&self) -> Result<crate::storage::Space, crate::StorageError> {
        self.inner.space()
    }

    fn backend(&self) -> crate::Backend {
        self.inner.backend()
    }
}

#[test]
fn rekey_of_a_large_bucket_works_in_pages() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(start());
    let config = config(&dir, &clock);
    let storage = Arc::new(LargestBatch {
        inner: Arc::new(crate::storage::memory::MemoryStorage::new()),
        largest: std::sync::atomic::AtomicUsize::new(0),
    });
    let provider = crate::db::configured_provider(&config).expect("provider");
    let db = Db::open_with(config, Arc::clone(&storage) as _, provider, false).expect("open");
    db.register_account("a").expect("register");
    const RECORDS: usize = 3_000;
    let mut batch = crate::Batch::new();
    for i in 0..RECORDS {
        batch.put(
            "a",
            "account_profile",
            format!("r{i}").as_bytes(),
            format!("v{i}").as_bytes(),
        );
        if batch.len() >= 100 {
            db.apply(std::mem::take(&mut batch)).expect("apply");
        }
    }
    db.apply(batch).expect("apply");
    db.put("a", "account_profile", b"r0", b"overwritten")
        .expect("overwrite");
    let before = storage.largest.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        before < RECORDS / 2,
        "the load itself wrote {before} ops at once"
    );
    clock.advance(days(40));
    let report = db.compact().expect("compact");
    assert_eq!(report.buckets_rekeyed, 1, "{report:?}");
    assert_eq!(report.records_rekeyed, RECORDS as u64);
    let largest = storage.largest.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        largest < RECORDS / 2,
        "one batch held {largest} changes for a bucket of {RECORDS} records"
    );
    for i in [0, 1, RECORDS / 2, RECORDS - 1] {
        let expected = if i == 0 {
            b"overwritten".to_vec()
        } else {
            format!("v{i}").into_bytes()
        };
        assert_eq!(
            db.get("a", "account_profile", format!("r{i}").as_bytes())
                .expect("get"),
            Some(expected)
        );
    }
    assert!(db.verify().expect("verify").is_clean());
}

#[test]
fn forged_key_version_is_reported_not_deleted() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    db.register_account("a").expect("register");
    db.put("a", "message_content", b"victim", b"evidence")
        .expect("put");
    db.put("a", "message_content", b"other", b"first")
        .expect("put");
    db.put("a", "message_content", b"other", b"second")
        .expect("overwrite");
    // The re-key moves both records to version 2 and destroys version 1.
    clock.advance(days(40));
    assert_eq!(db.compact().expect("compact").buckets_rekeyed, 1);
    // An expiring record in the same scope: its bucket's destruction
    // schedules a sweep of the scope's dead records.
    let expiry = db.now() + SignedDuration::from_hours(1);
    db.put_with(
        "a",
        "message_content",
        b"short",
        b"brief",
        PutOptions::expires_at(expiry),
    )
    .expect("put");
    let (victim_key, victim) = raw_records(&db, "a", "message_content")
        .into_iter()
        .find(|(_, v)| v[6..10] == 2u32.to_be_bytes() && v[1] == 0)
        .expect("a record under version 2");
    let forged = forge_key_version(&victim, 1);
    raw_put(&db, Tree::Data, &victim_key, &forged);

    let reads: Vec<bool> = [&b"victim"[..], &b"other"[..]]
        .iter()
        .map(|k| tampered(db.get("a", "message_content", k)))
        .collect();
    assert_eq!(
        reads.iter().filter(|t| **t).count(),
        1,
        "the forged record reads as tampered, the other as itself"
    );
    let report = db.verify().expect("verify");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == crate::ProblemKind::Tampered),
        "{report:?}"
    );
    assert_eq!(report.records_dead, 0, "{report:?}");
    // The expiring bucket dies at the end of its day; its sweep comes
    // within the week after.
    clock.advance(days(2));
    assert_eq!(db.compact().expect("compact").keys_destroyed, 1);
    clock.advance(days(8));
    let report = db.compact().expect("compact");
    assert_eq!(
        report.records_removed, 1,
        "only the expired record: {report:?}"
    );
    assert_eq!(report.records_suspect, 1, "{report:?}");
    let stored: Vec<_> = raw_records(&db, "a", "message_content")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(
        stored.contains(&victim_key),
        "the forged record was deleted"
    );
}

#[test]
fn forged_expiry_does_not_drop_a_record_at_rekey() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    db.register_account("a").expect("register");
    db.put("a", "account_profile", b"victim", b"evidence")
        .expect("put");
    db.put("a", "account_profile", b"other", b"first")
        .expect("put");
    db.put("a", "account_profile", b"other", b"second")
        .expect("overwrite");
    let records = raw_records(&db, "a", "account_profile");
    assert_eq!(records.len(), 2);
    // Forge a past expiry on the record the overwrite did not touch: find
    // it as the one that still reads back as "evidence" once forged.
    let past = db.now().as_second() - 3_600;
    let mut forged_key = None;
    for (key, envelope) in &records {
        raw_put(&db, Tree::Data, key, &forge_expiry(envelope, past));
        let still_other = db
            .get("a", "account_profile", b"other")
            .is_ok_and(|v| v.as_deref() == Some(&b"second"[..]));
        if still_other {
            forged_key = Some(key.clone());
            break;
        }
        raw_put(&db, Tree::Data, key, envelope);
    }
    let forged_key = forged_key.expect("the victim's record");
    assert!(tampered(db.get("a", "account_profile", b"victim")));
    clock.advance(days(40));
    let report = db.compact().expect("compact");
    assert_eq!(report.buckets_rekeyed, 1, "{report:?}");
    assert_eq!(report.records_rekeyed, 1, "{report:?}");
    assert_eq!(report.records_suspect, 1, "{report:?}");
    // Still stored, and still reported: not silently gone.
    assert!(
        raw_records(&db, "a", "account_profile")
            .iter()
            .any(|(k, _)| *k == forged_key)
    );
    assert!(tampered(db.get("a", "account_profile", b"victim")));
    let report = db.verify().expect("verify");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == crate::ProblemKind::Tampered),
        "{report:?}"
    );
    assert_eq!(
        db.get("a", "account_profile", b"other")
            .expect("get")
            .as_deref(),
        Some(&b"second"[..])
    );
}

#[test]
fn release_is_reflected_in_receipts() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    db.register_account("a").expect("register");
    db.put("a", "subscriber_records", b"s", b"sub")
        .expect("put");
    db.put("a", "retained_usage_copy", b"r", b"copy")
        .expect("put");
    let released_at = db.now();
    db.release("a", "subscriber_records").expect("release");
    // policy/default.toml gives subscriber_records no retain after its
    // release: it is due at the release itself. No compaction ran yet.
    clock.advance(SignedDuration::from_hours(1));
    let receipt = db
        .request_deletion("a", ErasureReason::DeletionRequest)
        .expect("request");
    let released = receipt
        .retained
        .iter()
        .find(|r| r.class == "subscriber_records")
        .expect("retained until compaction erases it");
    assert_eq!(released.until, Some(released_at), "{released:?}");
    assert!(
        !released.reason.contains("kept until released"),
        "{}",
        released.reason
    );
    let copy = receipt
        .retained
        .iter()
        .find(|r| r.class == "retained_usage_copy")
        .expect("retained");
    assert_eq!(copy.until, None, "never released: {copy:?}");
    assert!(
        copy.reason.contains("kept until released"),
        "{}",
        copy.reason
    );
}

#[test]
fn resumed_erasure_keeps_its_reason() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, _) = open(&dir);
    db.register_account("a").expect("register");
    db.put("a", "marketing_contacts", b"c", b"contact")
        .expect("put");
    db.place_hold("a", Some("marketing_contacts"), "case 12")
        .expect("hold");
    let receipt = db
        .shred("a", crate::Classes::Only(&["marketing_contacts"]))
        .expect("shred");
    assert!(receipt.erased.is_empty(), "held: {receipt:?}");
    db.release_hold("a", Some("marketing_contacts"))
        .expect("release");
    db.compact().expect("compact");
    assert!(!readable(&db, "a", "marketing_contacts", b"c"));
    let certificate = db.certificate("a").expect("certificate");
    let reasons: Vec<&str> = certificate
        .erasures
        .iter()
        .map(|e| e.reason.as_str())
        .collect();
    assert_eq!(reasons, ["operator"], "{certificate:?}");
}

#[test]
fn resumed_subject_shred_marks_subject_erased() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, _) = open(&dir);
    for subject in ["a", "direct"] {
        db.register_account(subject).expect("register");
        db.put(subject, "invoices", b"i", b"invoice").expect("put");
        db.put(subject, "account_profile", b"p", b"profile")
            .expect("put");
    }
    db.place_hold("a", Some("invoices"), "audit 7")
        .expect("hold");
    let receipt = db.shred("a", crate::Classes::All).expect("shred");
    assert_eq!(receipt.retained.len(), 1, "{receipt:?}");
    db.release_hold("a", Some("invoices")).expect("release");
    db.compact().expect("compact");
    // The resumed shred ends where a direct one does.
    db.shred("direct", crate::Classes::All).expect("shred");
    for subject in ["a", "direct"] {
        let info = db.subject(subject).expect("subject").expect("known");
        assert_eq!(
            info.state,
            crate::SubjectState::Erased,
            "{subject}: {info:?}"
        );
        assert!(info.erased_at.is_some(), "{subject}: {info:?}");
        assert!(
            db.get(subject, "invoices", b"i")
                .expect_err("erased")
                .is_erased()
        );
        let certificate = db.certificate(subject).expect("certificate");
        assert!(
            certificate.erasures.iter().all(|e| e.reason == "operator"),
            "{subject}: {certificate:?}"
        );
    }
    let stats = db.stats().expect("stats");
    assert_eq!((stats.erased, stats.active), (2, 0), "{stats:?}");
}

/// A hold over a scope that is already erased keeps nothing: a whole-subject
/// shred then erases the subject at once, instead of leaving it closed,
/// every class erased, but never erased itself (found by the crash test).
#[test]
fn a_hold_over_an_erased_scope_does_not_stop_a_subject_shred() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    db.register_account("a").expect("register");
    db.put("a", "message_content", b"m", b"message")
        .expect("put");
    db.put("a", "invoices", b"i", b"invoice").expect("put");
    db.close_account("a").expect("close");
    // message_content is kept "up until termination": erased at closure.
    clock.advance(SignedDuration::from_hours(1));
    db.compact().expect("compact");
    db.place_hold("a", Some("message_content"), "case 2")
        .expect("hold");
    let receipt = db.shred("a", crate::Classes::All).expect("shred");
    assert!(receipt.retained.is_empty(), "{receipt:?}");
    let info = db.subject("a").expect("subject").expect("known");
    assert_eq!(info.state, crate::SubjectState::Erased, "{info:?}");
}

/// The default policy without the `[[class]]` table of `class`.
fn default_policy_without(class: &str) -> crate::Policy {
    let marker = format!("name = \"{class}\"");
    let tables: Vec<&str> = crate::Policy::DEFAULT_TOML.split("[[class]]").collect();
    assert!(
        tables.iter().any(|t| t.contains(&marker)),
        "{class} is in the policy"
    );
    let text = tables
        .iter()
        .filter(|t| !t.contains(&marker))
        .copied()
        .collect::<Vec<_>>()
        .join("[[class]]");
    crate::Policy::from_toml_str(&text, "without").expect("policy")
}

fn class_keys(db: &Db, number: u16) -> (usize, usize) {
    let ids = crate::internal::vault_key_ids(db).expect("ids");
    let of_class = ids.iter().filter(|(id, _)| id.class == number);
    let live = of_class.clone().filter(|(_, destroyed)| !destroyed).count();
    (live, of_class.count())
}

/// Live keys of class `number` by subject, read from the files under the
/// store (`storage` below any view of a `Db`).
fn live_keys_in_files(
    storage: &dyn crate::storage::Storage,
    number: u16,
) -> std::collections::HashMap<shredkv_crypto::SubjectTag, usize> {
    let mut live = std::collections::HashMap::new();
    crate::vault::layout::scan_all(storage, &mut |tree, k, v| {
        if let Some(id) = crate::vault::layout::id_at(tree, k)
            && id.class == number
            && crate::vault::VaultEntry::decode(v)
                .is_ok_and(|e| e.state == crate::vault::KeyState::Active)
        {
            *live.entry(id.subject).or_default() += 1;
        }
        ControlFlow::Continue(())
    })
    .expect("scan the vault");
    live
}

#[test]
fn removed_class_keys_are_destroyed() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(start());
    let db = Db::open(sled_config(dir.path(), &clock)).expect("open");
    for subject in ["a", "b"] {
        db.register_account(subject).expect("register");
        db.put(subject, "marketing_contacts", b"c", b"contact")
            .expect("put");
        db.put(subject, "account_profile", b"p", b"profile")
            .expect("put");
    }
    let number = db.inner.class("marketing_contacts").expect("class").number;
    let (live, all) = class_keys(&db, number);
    assert!(live >= 2 && live == all, "({live}, {all})");
    drop(db);

    let without = default_policy_without("marketing_contacts");
    let db = Db::open(
        sled_config(dir.path(), &clock)
            .policy(without.clone())
            .apply_policy_change(true),
    )
    .expect("applied");
    assert_eq!(
        class_keys(&db, number),
        (0, all),
        "every key of the removed class is destroyed"
    );
    for subject in ["a", "b"] {
        let certificate = db.certificate(subject).expect("certificate");
        assert_eq!(certificate.erasures.len(), 1, "{certificate:?}");
        assert_eq!(
            certificate.erasures[0].reason,
            "class removed from the policy"
        );
        assert_eq!(
            db.get(subject, "account_profile", b"p")
                .expect("get")
                .as_deref(),
            Some(&b"profile"[..]),
            "other classes are untouched"
        );
    }
    let report = db.verify().expect("verify");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(
        report.records_dead, 2,
        "the retired class's records are dead"
    );
    db.compact().expect("compact");
    let tag = db.subject_tag("a");
    let mut left = 0;
    crate::storage::scan_prefix(
        db.inner.storage.as_ref(),
        Tree::Data,
        &crate::records::scope_prefix(&tag, number),
        &mut |_, _| {
            left += 1;
            ControlFlow::Continue(())
        },
    )
    .expect("scan");
    assert_eq!(left, 0, "the dead records are swept");
    drop(db);
    // Bringing the class back starts it afresh: nothing erased returns.
    let db = Db::open(sled_config(dir.path(), &clock).apply_policy_change(true)).expect("open");
    assert_eq!(db.get("a", "marketing_contacts", b"c").expect("get"), None);
    db.put("a", "marketing_contacts", b"c", b"new contact")
        .expect("put");
    assert_eq!(
        db.get("a", "marketing_contacts", b"c")
            .expect("get")
            .as_deref(),
        Some(&b"new contact"[..])
    );
}

/// A class retirement on a backend with a batch limit (etcd's
/// `--max-txn-ops`), over scopes with more keys than one batch holds, cut
/// at each of its durable writes in turn (before, between and after each
/// scope's batches; the write lost, or landed but reported failed), then
/// finished by the next open: each scope's ledger
/// entry counts every key the scope had, whatever the cut, a scope whose
/// every key went before the cut is finished too, and nothing of the
/// retirement's bookkeeping is left behind. The scopes hold 30 to 60 keys,
/// so that, whatever a batch holds up to 31 keys, one of them is cut after
/// its last key and before its ledger entry.
#[test]
fn an_interrupted_retirement_of_scopes_larger_than_a_batch_counts_all_their_keys() {
    use crate::storage::faults::{ApplyFailure, FaultControl, FaultPlan, FaultPoint};
    /// Ops a batch may hold: a few dozen keys a batch, so several batches
    /// a scope.
    const LIMIT: usize = 45;
    /// Subject `s<n>` has n expiring records, one per UTC day: n
    /// expiry-bucket keys.
    const SIZES: std::ops::RangeInclusive<i64> = 30..=60;
    let without = default_policy_without("message_content");
    let (mut cut_inside_a_scope, mut cut_after_a_scopes_keys) = (0, 0);
    // One store, made once and copied into every cut's run: every run then
    // has the same subject tags, so its writes come in the same order and
    // cut k is the same write in each. (A fresh store per cut drew fresh
    // tags, so which write a cut hit was left to chance, and so was whether
    // any cut fell just after a scope's last key.)
    let clock = ManualClock::new(start());
    let made = tempfile::tempdir().expect("dir");
    let made_storage: Arc<dyn crate::storage::Storage> =
        Arc::new(crate::storage::memory::MemoryStorage::new());
    let control = FaultControl::new(FaultPlan::none().batch_limit(LIMIT));
    let db = Db::open_with_faults(config(&made, &clock), Arc::clone(&made_storage), &control)
        .expect("open");
    let mut subjects = Vec::new();
    for n in SIZES {
        let subject = format!("s{n}");
        db.register_account(&subject).expect("register");
        for day in 1..=n {
            let expires = start() + days(day) + SignedDuration::from_hours(1);
            db.put_with(
                &subject,
                "message_content",
                format!("m{day}").as_bytes(),
                b"message",
                PutOptions::expires_at(expires),
            )
            .expect("put");
        }
        subjects.push((subject.clone(), db.subject_tag(&subject)));
    }
    let number = db.inner.class("message_content").expect("class").number;
    drop(db);
    let before = live_keys_in_files(made_storage.as_ref(), number);
    for ((subject, tag), n) in subjects.iter().zip(SIZES) {
        let keys = before.get(tag).copied().unwrap_or(0);
        assert!(
            keys >= usize::try_from(n).expect("n"),
            "{subject}: one key per expiry day at least, {keys}"
        );
    }
    let mut copy = crate::storage::WriteBatch::new();
    for tree in Tree::ALL {
        crate::storage::scan_prefix(made_storage.as_ref(), tree, &[], &mut |k, v| {
            copy.put(tree, k, v.to_vec());
            ControlFlow::Continue(())
        })
        .expect("scan the store");
    }
    let files: Vec<(std::ffi::OsString, Vec<u8>)> = std::fs::read_dir(made.path())
        .expect("the store's directory")
        .map(|entry| {
            let entry = entry.expect("an entry");
            (
                entry.file_name(),
                std::fs::read(entry.path()).expect("a file"),
            )
        })
        .collect();
    // A write that never lands, and one that lands but reports a failure.
    let failures = [ApplyFailure::NothingApplied, ApplyFailure::AppliedNotSynced];
    for failure in failures {
        for cut in 1u64.. {
            assert!(cut < 1_000, "the retirement never ran out of writes to cut");
            let dir = tempfile::tempdir().expect("dir");
            for (name, bytes) in &files {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(dir.path().join(name))
                    .and_then(|mut file| file.write_all(bytes))
                    .expect("copy the key file, owner-only as it was");
            }
            let storage: Arc<dyn crate::storage::Storage> =
                Arc::new(crate::storage::memory::MemoryStorage::new());
            storage
                .apply(&copy, crate::storage::Durability::Durable)
                .expect("copy the store");
            let open = |retire: bool, plan: FaultPlan| {
                let control = FaultControl::new(plan.batch_limit(LIMIT));
                let mut config = config(&dir, &clock);
                if retire {
                    config = config.policy(without.clone()).apply_policy_change(true);
                }
                let db = Db::open_with_faults(config, Arc::clone(&storage), &control);
                (db, control)
            };
            let live_by_subject = |number: u16| live_keys_in_files(storage.as_ref(), number);

            let (cut_open, control) = open(
                true,
                FaultPlan::none().fail_nth(FaultPoint::DurableApply, cut, failure),
            );
            let fired = !control.armed();
            match cut_open {
                Ok(db) => {
                    assert!(
                        !fired,
                        "{failure:?} at cut {cut}: a failed write went unreported"
                    );
                    drop(db);
                }
                Err(err) => assert!(
                    fired,
                    "{failure:?} at cut {cut}: the open failed with no cut: {err}"
                ),
            }
            // What the cut left, read from the files: a scope with some of its
            // keys destroyed; a scope with all of them destroyed and its count
            // still there (so its ledger entry not yet written).
            let after = live_by_subject(number);
            let mut counted = Vec::new();
            let mut prefix = crate::db::meta::RETIRING_PREFIX.to_vec();
            prefix.extend_from_slice(&number.to_be_bytes());
            crate::storage::scan_prefix(storage.as_ref(), Tree::Meta, &prefix, &mut |k, _| {
                counted.push(k.get(prefix.len()..).unwrap_or_default().to_vec());
                ControlFlow::Continue(())
            })
            .expect("scan the counts");
            for (_, tag) in &subjects {
                let (had, left) = (before[tag], after.get(tag).copied().unwrap_or(0));
                if left > 0 && left < had {
                    cut_inside_a_scope += 1;
                }
                if left == 0 && counted.iter().any(|t| t.as_slice() == tag.0.as_slice()) {
                    cut_after_a_scopes_keys += 1;
                }
            }

            let (db, _) = open(true, FaultPlan::none());
            let db = db.expect("the next open finishes the retirement");
            for (subject, tag) in &subjects {
                let certificate = db.certificate(subject).expect("certificate");
                let removed: Vec<_> = certificate
                    .erasures
                    .iter()
                    .filter(|e| e.reason == "class removed from the policy")
                    .collect();
                assert_eq!(
                    removed.len(),
                    1,
                    "{failure:?} at cut {cut}, {subject}: {certificate:?}"
                );
                assert_eq!(
                    usize::try_from(removed[0].keys_destroyed).expect("count"),
                    before[tag],
                    "{failure:?} at cut {cut}, {subject}: the ledger counts every key of the scope"
                );
            }
            assert!(
                live_by_subject(number).is_empty(),
                "{failure:?} at cut {cut}: a key of the class left"
            );
            let mut counts_left = 0;
            crate::storage::scan_prefix(
                db.inner.storage.as_ref(),
                Tree::Meta,
                crate::db::meta::RETIRING_PREFIX,
                &mut |_, _| {
                    counts_left += 1;
                    ControlFlow::Continue(())
                },
            )
            .expect("scan");
            assert_eq!(
                counts_left, 0,
                "{failure:?} at cut {cut}: a retirement count left behind"
            );
            if !fired {
                break;
            }
        }
    }
    assert!(
        cut_inside_a_scope >= 2 && cut_after_a_scopes_keys >= 1,
        "cuts inside a scope: {cut_inside_a_scope}, after a scope's last key: {cut_after_a_scopes_keys}"
    );
}

/// A class retirement cut part-way (some scopes' keys destroyed, the rest
/// not) is not abandoned by a policy that has the class again: that open is
/// refused, naming the class and the way out; the policy without the class
/// finishes the retirement, every scope with its erasure on record; the
/// class added afterwards starts empty.
#[test]
fn an_interrupted_retirement_is_finished_before_the_class_can_come_back() {
    use crate::storage::faults::{ApplyFailure, FaultControl, FaultPlan, FaultPoint};
    let without = default_policy_without("message_content");
    let subjects: Vec<String> = (0..6).map(|i| format!("s{i}")).collect();
    for cut in 1u64..200 {
        let dir = tempfile::tempdir().expect("dir");
        let clock = ManualClock::new(start());
        let storage: Arc<dyn crate::storage::Storage> =
            Arc::new(crate::storage::memory::MemoryStorage::new());
        let open = |policy: Option<&crate::Policy>, plan: FaultPlan| {
            let control = FaultControl::new(plan.batch_limit(45));
            let mut config = config(&dir, &clock);
            if let Some(policy) = policy {
                config = config.policy(policy.clone()).apply_policy_change(true);
            }
            (
                Db::open_with_faults(config, Arc::clone(&storage), &control),
                control,
            )
        };
        let db = open(None, FaultPlan::none()).0.expect("open");
        for subject in &subjects {
            db.register_account(subject).expect("register");
            for day in 1..=30 {
                db.put_with(
                    subject,
                    "message_content",
                    format!("m{day}").as_bytes(),
                    b"message",
                    PutOptions::expires_at(start() + days(day)),
                )
                .expect("put");
            }
        }
        let number = db.inner.class("message_content").expect("class").number;
        let (all, _) = class_keys(&db, number);
        drop(db);
        let plan =
            FaultPlan::none().fail_nth(FaultPoint::DurableApply, cut, ApplyFailure::NothingApplied);
        let (cut_open, control) = open(Some(&without), plan);
        if control.armed() {
            drop(cut_open);
            break;
        }
        assert!(
            cut_open.is_err(),
            "cut {cut}: the failed write was reported"
        );
        // Only a cut that left the class part-way retired is this test's case.
        let live: usize = live_keys_in_files(storage.as_ref(), number).values().sum();
        if live == 0 || live == all {
            continue;
        }

        let default = crate::Policy::default_policy().expect("the default policy");
        let Err(refused) = open(Some(&default), FaultPlan::none()).0 else {
            panic!("cut {cut}: a policy with the class abandoned its retirement");
        };
        assert!(
            matches!(&refused, crate::Error::PolicyViolation { class, .. } if class == "message_content"),
            "{refused}"
        );
        assert!(
            refused
                .to_string()
                .contains("without class message_content"),
            "{refused}"
        );
        let db = open(Some(&without), FaultPlan::none())
            .0
            .expect("the policy without the class finishes the retirement");
        assert_eq!(
            class_keys(&db, number).0,
            0,
            "every key of the class destroyed"
        );
        for subject in &subjects {
            let certificate = db.certificate(subject).expect("certificate");
            assert!(
                certificate
                    .erasures
                    .iter()
                    .any(|e| e.reason == "class removed from the policy"),
                "{subject}: {certificate:?}"
            );
        }
        drop(db);
        let db = open(Some(&default), FaultPlan::none())
            .0
            .expect("the class may come back once retired");
        assert_eq!(db.get("s0", "message_content", b"m1").expect("get"), None);
        db.put("s0", "message_content", b"m1", b"new").expect("put");
        assert_eq!(
            db.get("s0", "message_content", b"m1")
                .expect("get")
                .as_deref(),
            Some(&b"new"[..])
        );
        return;
    }
    panic!("no cut left the class part-way retired");
}

#[test]
fn removing_a_held_class_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(start());
    let db = Db::open(sled_config(dir.path(), &clock)).expect("open");
    db.register_account("a").expect("register");
    db.put("a", "marketing_contacts", b"c", b"contact")
        .expect("put");
    db.place_hold("a", None, "case 8").expect("hold");
    drop(db);
    let err = Db::open(
        sled_config(dir.path(), &clock)
            .policy(default_policy_without("marketing_contacts"))
            .apply_policy_change(true),
    )
    .expect_err("a hold covers the class");
    assert!(
        matches!(&err, crate::Error::PolicyViolation { class, .. } if class == "marketing_contacts"),
        "{err}"
    );
    assert!(err.to_string().contains("renamed_from"), "{err}");
    // Nothing changed: the store opens with its policy, the data is there.
    let db = Db::open(sled_config(dir.path(), &clock)).expect("unchanged");
    assert_eq!(
        db.get("a", "marketing_contacts", b"c")
            .expect("get")
            .as_deref(),
        Some(&b"contact"[..])
    );
}

#[test]
fn renamed_class_keeps_its_data() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(start());
    let db = Db::open(sled_config(dir.path(), &clock)).expect("open");
    db.register_account("a").expect("register");
    db.put("a", "account_profile", b"p", b"profile")
        .expect("put");
    db.close_account("a").expect("close");
    drop(db);
    let text = crate::Policy::DEFAULT_TOML.replace(
        "name = \"account_profile\"",
        "name = \"customer_profile\"\nrenamed_from = \"account_profile\"",
    );
    let renamed = crate::Policy::from_toml_str(&text, "renamed").expect("policy");
    let db = Db::open(
        sled_config(dir.path(), &clock)
            .policy(renamed)
            .apply_policy_change(true),
    )
    .expect("applied");
    assert_eq!(
        exported_value(&db, "a", "customer_profile", b"p").as_deref(),
        Some(&b"profile"[..])
    );
    // policy/default.toml keeps account_profile 60 days after closure; the
    // renamed class keeps that clock.
    clock.advance(days(59));
    db.compact().expect("compact");
    assert!(readable(&db, "a", "customer_profile", b"p"));
    clock.advance(days(2));
    db.compact().expect("compact");
    assert!(!readable(&db, "a", "customer_profile", b"p"));
}

/// G2 with the timeline's slack intact: a record overwritten (or deleted) at
/// t has its old key version destroyed by the first compaction at t + R,
/// R = W − L − P, computed here from the policy text and the documented
/// default rotation (P = 1 day, L = (W − P) / 2): 14.5 days at W = 30 days.
/// A later re-key still meets W when maintenance is punctual, but spends
/// the period P the timeline keeps for maintenance running late.
#[test]
fn an_overwritten_key_version_dies_at_the_rekey_time_the_timeline_promises() {
    let window_hours = policy_days("account_profile", "purge_window") * DAY;
    let rotation_hours = DAY;
    let lifetime_hours = (window_hours - rotation_hours) / 2;
    let rekey_hours = window_hours - lifetime_hours - rotation_hours;
    assert_eq!(rekey_hours, 14 * DAY + 12, "the default timeline");
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    db.register_account("a").expect("register");
    db.put("a", "account_profile", b"p", b"old").expect("put");
    clock.advance(SignedDuration::from_hours(5));
    db.put("a", "account_profile", b"p", b"new")
        .expect("overwrite");
    let overwritten_at = clock.now();
    assert_eq!(db.stats().expect("stats").rekey_debts, 1);
    // Daily maintenance in between, at an hour that is not the overwrite's.
    let rekey_at = overwritten_at + SignedDuration::from_hours(rekey_hours);
    let mut rekeyed = 0;
    while clock.now() + SignedDuration::from_hours(DAY) < rekey_at {
        clock.advance(SignedDuration::from_hours(DAY));
        rekeyed += db.compact().expect("compact").buckets_rekeyed;
    }
    clock.set(rekey_at);
    rekeyed += db.compact().expect("compact").buckets_rekeyed;
    assert_eq!(rekeyed, 1, "the old version re-keyed away by t + R");
    assert_eq!(db.stats().expect("stats").rekey_debts, 0);
    assert_eq!(
        db.get("a", "account_profile", b"p")
            .expect("get")
            .as_deref(),
        Some(&b"new"[..])
    );
}

/// The default policy with every purge window set to one day.
fn one_day_policy() -> crate::Policy {
    let text = include_str!("../../../policy/default.toml");
    let classes = text.lines().filter(|l| l.trim() == "[[class]]").count();
    assert_eq!(text.matches(r#"purge_window = "30 days""#).count(), classes);
    let text = text.replace(r#"purge_window = "30 days""#, r#"purge_window = "1 day""#);
    crate::Policy::from_toml_str(&text, "default.toml with 1-day purge windows")
        .expect("a valid policy")
}

/// G2 with a 1-day purge window. Worked by hand from the timeline's rules
/// (docs/design.md): P = W / 4 = 6 h, L = (W − P) / 2 = 9 h, and expiry
/// buckets of the longest width B in {24, 12, 8, 6, 4, 3, 2, 1} h with
/// B + L + P ≤ W: 8 h. A record expiring at 09:00 UTC lies in the bucket
/// 08:00–16:00; its key dies at the first pass from 16:00 on, and every epoch
/// live then dies within the day after the expiry (with day buckets the key
/// would wait for midnight and its last epoch would outlive the day).
#[test]
fn a_one_day_window_destroys_an_expired_key_and_its_epochs_within_the_day() {
    const HOUR: i64 = 3_600;
    let (rotation, lifetime) = (6 * HOUR, 9 * HOUR);
    let width = [24, 12, 8, 6, 4, 3, 2, 1]
        .into_iter()
        .map(|h| h * HOUR)
        .find(|b| b + lifetime + rotation <= 24 * HOUR)
        .expect("a width");
    assert_eq!(width, 8 * HOUR);
    let dir = tempfile::tempdir().expect("dir");
    // start() is 08:00 UTC.
    let clock = ManualClock::new(start());
    assert_eq!(start().as_second() % (24 * HOUR), 8 * HOUR);
    let db = Db::open_in_memory(config(&dir, &clock).policy(one_day_policy())).expect("open");
    let expiry = start() + SignedDuration::from_hours(1);
    short_lived_and_kept(&db, expiry);
    let bucket_end = start().as_second() / width * width + width;
    assert_eq!(bucket_end, start().as_second() + 8 * HOUR);
    // A pass every 3 h (P / 2), the cadence the timeline needs, up to the
    // window's end.
    let mut destroyed_at = None;
    let mut epochs_at_destruction = Vec::new();
    while clock.now() + SignedDuration::from_hours(3) <= expiry + SignedDuration::from_hours(24) {
        clock.advance(SignedDuration::from_hours(3));
        let report = db.compact().expect("compact");
        if report.keys_destroyed > 0 && destroyed_at.is_none() {
            destroyed_at = Some(clock.now().as_second());
            epochs_at_destruction = db.stats().expect("stats").live_epochs;
            assert_eq!(
                report.forests_removed, 1,
                "the bucket's forest goes whole: {report:?}"
            );
            assert_eq!(day_forest_nodes(&db), 0, "{report:?}");
        }
    }
    let destroyed_at = destroyed_at.expect("the expired key was destroyed");
    assert!(
        destroyed_at >= bucket_end && destroyed_at < bucket_end + 3 * HOUR,
        "destroyed {} s after the bucket's end",
        destroyed_at - bucket_end
    );
    let stats = db.stats().expect("stats");
    for epoch in &epochs_at_destruction {
        assert!(
            !stats.live_epochs.contains(epoch),
            "epoch {epoch}, live when the key died, outlives the 1-day window"
        );
    }
    assert!(!readable(&db, "a", "message_content", b"m"));
    assert!(readable(&db, "a", "message_content", b"keep"));
}

/// The timeline needs a pass at least every half rotation period (3 h with
/// a 1-day window); a slower background cadence is refused at open.
#[test]
fn a_maintenance_interval_too_slow_for_the_window_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(start());
    let slow = config(&dir, &clock)
        .policy(one_day_policy())
        .maintenance_every(Some(Duration::from_secs(4 * 3_600)));
    // On disk: the refused open must leave nothing that the next open,
    // with a cadence that fits, would take for a store.
    let err = Db::open(slow).expect_err("a pass every 4 h is too slow");
    assert!(
        matches!(
            err,
            crate::Error::InvalidArgument {
                what: "maintenance interval",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("10800 s"),
        "names the cadence needed: {err}"
    );
    let punctual = config(&dir, &clock)
        .policy(one_day_policy())
        .maintenance_every(Some(Duration::from_secs(3 * 3_600)));
    let db = Db::open(punctual).expect("a pass every 3 h is enough");
    db.register_account("a").expect("register");
    db.put("a", "account_profile", b"p", b"v").expect("put");
    assert!(db.verify().expect("verify").is_clean());
}

/// G3: a legal hold blocks key destruction, the re-key of an overwritten
/// record included (it destroys the old key version): while the hold stands
/// the re-key is parked and audited once, the old version stays; once the
/// hold is released the next compaction re-keys.
#[test]
fn a_hold_blocks_the_rekey_of_an_overwritten_record_until_released() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    db.register_account("a").expect("register");
    db.put("a", "account_profile", b"p", b"before the case")
        .expect("put");
    db.place_hold("a", Some("account_profile"), "case 7")
        .expect("hold");
    db.put("a", "account_profile", b"p", b"during the case")
        .expect("overwrite");
    let destroyed_before = db.stats().expect("stats").keys_destroyed;
    let mut blocked = 0;
    let mut rekeyed = 0;
    // Well past any re-key time the timeline may set (W = 30 days).
    for _ in 0..40 {
        clock.advance(days(1));
        let report = db.compact().expect("compact");
        blocked += report.blocked_by_hold;
        rekeyed += report.buckets_rekeyed;
    }
    assert_eq!(blocked, 1, "the re-key is blocked, and audited, once");
    assert_eq!(rekeyed, 0, "no re-key under a hold");
    let stats = db.stats().expect("stats");
    assert_eq!(stats.rekey_debts, 1, "the debt stays owed");
    assert_eq!(stats.keys_destroyed, destroyed_before);
    let blocked_audited = crate::audit::read_entries(db.inner.storage.as_ref(), 1, 10_000)
        .expect("audit")
        .into_iter()
        .filter(|e| e.event == crate::AuditEvent::ErasureBlocked)
        .count();
    assert_eq!(blocked_audited, 1);
    assert!(
        db.release_hold("a", Some("account_profile"))
            .expect("release")
    );
    let report = db.compact().expect("compact");
    assert_eq!(report.buckets_rekeyed, 1, "{report:?}");
    assert_eq!(db.stats().expect("stats").rekey_debts, 0);
    assert_eq!(
        db.get("a", "account_profile", b"p")
            .expect("get")
            .as_deref(),
        Some(&b"during the case"[..])
    );
}

/// G6 with G1: a restore destroys the keys of the erasures it replays, not
/// only refuses their scopes: every vault entry of a subject shredded after
/// the backup is a tombstone in the restored store, and another subject's
/// keys are live. This holds from the ledger alone: here one of the live
/// store's tombstones is damaged, so the live vault no longer lists that
/// key as destroyed.
#[test]
fn a_restore_destroys_the_keys_of_the_erasures_it_replays() {
    use crate::vault::{KeyState, VaultEntry};

    let root = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(start());
    let live = Db::open(sled_config(&root.path().join("live"), &clock)).expect("open");
    for s in ["gone", "kept"] {
        live.register_account(s).expect("register");
        for class in ["account_profile", "message_content"] {
            live.put(s, class, b"k", s.as_bytes()).expect("put");
        }
    }
    live.backup(root.path().join("backup")).expect("backup");
    live.shred("gone", crate::Classes::All).expect("shred");
    let mut tombstone = None;
    crate::storage::scan_prefix(
        live.inner.storage.as_ref(),
        Tree::Vault,
        &live.subject_tag("gone").0,
        &mut |k, _| {
            tombstone = Some(k.to_vec());
            ControlFlow::Break(())
        },
    )
    .expect("scan the live vault");
    let mut damage = crate::storage::WriteBatch::new();
    damage.put(
        Tree::Vault,
        tombstone.expect("a tombstone"),
        b"damaged".to_vec(),
    );
    live.inner
        .storage
        .apply(&damage, crate::storage::Durability::Durable)
        .expect("damage a tombstone");
    let (restored, _) = Db::restore(
        root.path().join("backup"),
        sled_config(&root.path().join("restored"), &clock),
        crate::ErasureSource::Live(&live),
    )
    .expect("restore");
    let states = |subject: &str| {
        let mut states = Vec::new();
        crate::storage::scan_prefix(
            restored.inner.storage.as_ref(),
            Tree::Vault,
            &restored.subject_tag(subject).0,
            &mut |_, v| {
                states.push(VaultEntry::decode(v).map(|e| e.state).ok());
                ControlFlow::Continue(())
            },
        )
        .expect("scan the vault");
        states
    };
    let gone = states("gone");
    assert!(gone.len() >= 2, "{gone:?}");
    assert!(
        gone.iter().all(|s| *s == Some(KeyState::Destroyed)),
        "keys of the replayed erasure still live in the restored store: {gone:?}"
    );
    let kept = states("kept");
    assert!(
        kept.len() >= 2 && kept.iter().all(|s| *s == Some(KeyState::Active)),
        "{kept:?}"
    );
}

/// A restore keeps every decision the live store made after the backup, not
/// only its erasures: an erasure a hold parked (found by the forensic
/// oracle: the released hold resumed nothing, the account stayed active),
/// one parked and resumed but not yet compacted, a hold placed or released
/// (and what the released one blocked), a closure, an opt-out, a manual
/// release, a restriction. Restored from the live store and from a log.
#[test]
fn a_restore_keeps_the_decisions_made_after_the_backup() {
    for from_file in [false, true] {
        let root = tempfile::tempdir().expect("dir");
        let clock = ManualClock::new(start());
        let live = Db::open(sled_config(&root.path().join("live"), &clock)).expect("open");
        for s in [
            "parked",
            "resumed",
            "late-hold",
            "unheld",
            "closed",
            "opted",
            "released",
            "restricted",
        ] {
            live.register_account(s).expect("register");
            for class in [
                "account_profile",
                "marketing_contacts",
                "subscriber_records",
            ] {
                live.put(s, class, b"k", s.as_bytes()).expect("put");
            }
        }
        for s in ["parked", "resumed"] {
            live.place_hold(s, Some("subscriber_records"), "case 1")
                .expect("hold");
        }
        // Blocked in the backup: an opt-out's erasure under a hold the live
        // store releases after it (and does not compact since).
        live.place_hold("unheld", None, "case 2").expect("hold");
        live.opt_out_of_marketing("unheld").expect("opt out");
        clock.advance(days(4));
        assert_eq!(live.compact().expect("compact").blocked_by_hold, 1);
        live.backup(root.path().join("backup")).expect("backup");

        clock.advance(SignedDuration::from_hours(1));
        for s in ["parked", "resumed"] {
            let receipt = live.shred(s, crate::Classes::All).expect("shred");
            assert_eq!(receipt.retained.len(), 1, "{receipt:?}");
        }
        assert!(
            live.release_hold("resumed", Some("subscriber_records"))
                .expect("release")
        );
        live.place_hold("late-hold", None, "case 3").expect("hold");
        assert!(live.release_hold("unheld", None).expect("release"));
        live.close_account("closed").expect("close");
        live.opt_out_of_marketing("opted").expect("opt out");
        live.release("released", "subscriber_records")
            .expect("release");
        live.restrict("restricted").expect("restrict");
        clock.advance(SignedDuration::from_hours(1));

        let target = root.path().join("restored");
        let key_file = root.path().join("live").join("keys");
        let restored = if from_file {
            let log = root.path().join("decisions.log");
            live.export_erasure_log(&log).expect("export");
            drop(live);
            Db::restore(
                root.path().join("backup"),
                sled_config(&target, &clock).key_file(&key_file),
                crate::ErasureSource::File(&log),
            )
        } else {
            let restored = Db::restore(
                root.path().join("backup"),
                sled_config(&target, &clock),
                crate::ErasureSource::Live(&live),
            );
            drop(live);
            restored
        }
        .expect("restore")
        .0;

        let mut held: Vec<(String, Option<String>)> = restored
            .holds()
            .expect("holds")
            .into_iter()
            .map(|h| (hex_tag(&h.subject), h.class))
            .collect();
        held.sort();
        let mut want = vec![
            (
                hex_tag(&restored.subject_tag("parked")),
                Some("subscriber_records".to_string()),
            ),
            (hex_tag(&restored.subject_tag("late-hold")), None),
        ];
        want.sort();
        assert_eq!(held, want, "the live store's holds, from_file {from_file}");

        let state = |s: &str| restored.subject(s).expect("subject").expect("known").state;
        assert_eq!(state("restricted"), crate::SubjectState::Restricted);
        assert!(
            restored
                .get("closed", "account_profile", b"k")
                .expect_err("closed")
                .is_closed(),
            "the closure stands"
        );

        // The next compaction runs what the live store had made due: the
        // resumed erasure, and the opt-out erasure its released hold blocked.
        restored.compact().expect("compact");
        assert_eq!(
            state("resumed"),
            crate::SubjectState::Erased,
            "from_file {from_file}"
        );
        let erased_classes = |s: &str| -> Vec<Option<String>> {
            restored
                .certificate(s)
                .map(|c| c.erasures.into_iter().map(|e| e.class).collect())
                .unwrap_or_default()
        };
        assert_eq!(
            erased_classes("unheld"),
            vec![Some("marketing_contacts".to_string())],
            "from_file {from_file}"
        );
        // The erasure parked after the backup resumes when its hold goes.
        assert_eq!(state("parked"), crate::SubjectState::Active);
        assert!(
            restored
                .release_hold("parked", Some("subscriber_records"))
                .expect("release")
        );
        restored.compact().expect("compact");
        assert_eq!(
            state("parked"),
            crate::SubjectState::Erased,
            "from_file {from_file}"
        );

        // Each event's erasure runs within the time the notice gives it.
        clock.advance(days(4));
        restored.compact().expect("compact");
        assert_eq!(
            erased_classes("opted"),
            vec![Some("marketing_contacts".to_string())],
            "opt-out + 3 days"
        );
        clock.advance(days(57));
        restored.compact().expect("compact");
        assert!(
            erased_classes("closed").contains(&Some("account_profile".to_string())),
            "closure + 60 days"
        );
        assert!(
            erased_classes("released").contains(&Some("subscriber_records".to_string())),
            "release"
        );
        assert!(restored.verify().expect("verify").is_clean());
    }
}

fn hex_tag(tag: &crate::SubjectTag) -> String {
    tag.0.iter().map(|b| format!("{b:02x}")).collect()
}

/// Releasing a hold carries out the erasures it parked at once: a read
/// between the release and the next compaction finds nothing (found by the
/// forensic oracle's 10-year run: an export in that gap returned a record
/// whose operator erasure a hold had parked).
#[test]
fn releasing_a_hold_carries_out_its_parked_erasures_at_once() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, _clock) = open(&dir);
    for s in ["whole", "one-class"] {
        db.register_account(s).expect("register");
        db.put(s, "account_profile", b"p", b"x").expect("put");
        db.put(s, "message_content", b"m", b"y").expect("put");
        db.place_hold(s, None, "case 1").expect("hold");
    }
    let parked = db.shred("whole", crate::Classes::All).expect("shred");
    assert!(parked.erased.is_empty(), "{parked:?}");
    let parked = db
        .shred("one-class", crate::Classes::Only(&["message_content"]))
        .expect("shred");
    assert!(parked.erased.is_empty(), "{parked:?}");
    assert!(readable(&db, "whole", "account_profile", b"p"), "held");

    assert!(db.release_hold("whole", None).expect("release"));
    assert!(db.release_hold("one-class", None).expect("release"));
    // No compaction in between.
    assert_eq!(
        db.subject("whole").expect("subject").expect("known").state,
        crate::SubjectState::Erased
    );
    assert!(!readable(&db, "whole", "account_profile", b"p"));
    assert!(!exported(&db, "one-class", "message_content", b"m"));
    assert!(
        readable(&db, "one-class", "account_profile", b"p"),
        "not asked"
    );
    let certificate = db.certificate("one-class").expect("certificate");
    assert_eq!(certificate.erasures.len(), 1, "{certificate:?}");
    assert_eq!(certificate.erasures[0].reason, "operator");
}

/// A crash between a hold's release and the erasures it parked (here the
/// erasure's commit fails once the release has landed) leaves them
/// pending; the next open carries them out before it serves anything, so
/// no read after the release finds the data.
#[test]
fn an_interrupted_release_is_finished_by_the_next_open() {
    use crate::storage::faults::{ApplyFailure, FaultControl, FaultPlan, FaultPoint};
    let dir = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(start());
    let config = || config(&dir, &clock).backend(crate::Backend::Redb);
    {
        let control = FaultControl::new(FaultPlan::none());
        let storage = crate::storage::open(crate::Backend::Redb, dir.path()).expect("storage");
        let db = Db::open_with_faults(config(), storage, &control).expect("open");
        db.register_account("whole").expect("register");
        db.put("whole", "account_profile", b"p", b"x").expect("put");
        db.place_hold("whole", None, "case 1").expect("hold");
        let parked = db.shred("whole", crate::Classes::All).expect("shred");
        assert!(parked.erased.is_empty(), "{parked:?}");
        // The release's commit lands; the parked erasure's does not.
        control.fail_nth(FaultPoint::DurableApply, 2, ApplyFailure::NothingApplied);
        db.release_hold("whole", None)
            .expect_err("the erasure's commit failed");
        assert!(db.holds().expect("holds").is_empty(), "the release landed");
        assert!(
            readable(&db, "whole", "account_profile", b"p"),
            "the window a crash here would leave open"
        );
    }
    let db = Db::open(config()).expect("reopen");
    assert_eq!(
        db.subject("whole").expect("subject").expect("known").state,
        crate::SubjectState::Erased,
        "the open carried out the parked erasure"
    );
    assert!(!readable(&db, "whole", "account_profile", b"p"));
    let certificate = db.certificate("whole").expect("certificate");
    assert_eq!(certificate.erasures.len(), 1, "{certificate:?}");
    assert_eq!(certificate.erasures[0].reason, "operator");
    let mut markers = 0;
    crate::storage::scan_prefix(
        db.inner.storage.as_ref(),
        Tree::Meta,
        crate::db::meta::RESUME_PENDING_PREFIX,
        &mut |_, _| {
            markers += 1;
            ControlFlow::Continue(())
        },
    )
    .expect("scan");
    assert_eq!(markers, 0, "nothing left pending");
}

/// A hold's reason is free text (a case name may name a person): it stays
/// in the holds tree, gone with the release, and never enters the
/// permanent audit log, whatever the hold blocks on the way.
#[test]
fn a_hold_reason_never_enters_the_audit_log() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    let reason = "lawsuit Jane Roe v. Example Corp";
    db.register_account("a").expect("register");
    db.put_with(
        "a",
        "message_content",
        b"m",
        b"v",
        PutOptions::expires_at(clock.now() + SignedDuration::from_hours(1)),
    )
    .expect("put");
    db.place_hold("a", None, reason).expect("hold");
    db.shred("a", crate::Classes::All).expect("parked");
    clock.advance(days(2));
    db.compact().expect("compact: the expiry is blocked");
    assert_eq!(
        db.holds().expect("holds")[0].reason,
        reason,
        "kept for operators"
    );
    db.release_hold("a", None).expect("release");
    let entries = db.audit_entries(1, usize::MAX).expect("audit");
    assert!(
        entries
            .iter()
            .any(|e| e.event == crate::AuditEvent::ErasureBlocked),
        "the blocked erasure is audited"
    );
    for entry in &entries {
        assert!(
            !entry.detail.contains("Jane") && !entry.detail.contains("lawsuit"),
            "audit entry {} holds the hold's reason: {}",
            entry.seq,
            entry.detail
        );
    }
}

/// The stored entry of a key tree node, raw.
fn raw_node(db: &Db, node: shredkv_crypto::NodeId) -> Option<Vec<u8>> {
    db.inner
        .storage
        .get(Tree::KeyNodes, &node.to_bytes())
        .expect("read")
}

fn raw_remove(db: &Db, tree: Tree, key: &[u8]) {
    let mut batch = crate::storage::WriteBatch::new();
    batch.remove(tree, key);
    db.inner
        .storage
        .apply(&batch, crate::storage::Durability::Durable)
        .expect("raw remove");
}

/// Damage to the key tree is reported, never read as an erasure, and never
/// stops the purge. A node entry whose generation was changed (a consistent
/// checksum: what a writer of the files can do) no longer opens: the keys
/// beneath it read as tampered, not missing, and `verify` names the node. A
/// node removed orphans its subtree, reported the same way. A live key whose
/// wrap names a generation its node no longer has is reported as such. And
/// a debt on the damaged node, or on a node the tree lacks, is paid by
/// compaction without failing it, so epochs still rotate and die.
#[test]
fn damage_to_the_key_tree_is_reported_and_does_not_stop_the_purge() {
    use shredkv_crypto::NodeId;
    let root = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(start());
    let path = root.path().join("store");
    let db = Db::open(sled_config(&path, &clock)).expect("open");
    // Subjects whose paths share no node below the root's children: one
    // each for the damaged node, the orphan, the stale wrap, a bystander.
    let mut names = Vec::new();
    let mut seen_level_1 = std::collections::BTreeSet::new();
    for i in 0..200 {
        let name = format!("s{i}");
        if seen_level_1.insert(NodeId::of_tag(0, &db.subject_tag(&name), 1)) {
            names.push(name);
        }
        if names.len() == 4 {
            break;
        }
    }
    let [damaged, orphan, stale, bystander] = [0, 1, 2, 3].map(|i| names[i].clone());
    for s in &names {
        db.register_account(s).expect("register");
        db.put(s, "account_profile", b"p", s.as_bytes())
            .expect("put");
    }
    let tags: std::collections::HashMap<String, shredkv_crypto::SubjectTag> = names
        .iter()
        .map(|s| (s.clone(), db.subject_tag(s)))
        .collect();
    let bottom = |s: &str| NodeId::of_tag(0, &tags[s], crate::vault::tree::BOTTOM_DEPTH);
    // 1. The damaged subject's bottom node: its generation changed.
    let node = bottom(&damaged);
    let entry = raw_node(&db, node).expect("node");
    let mut body = entry[..entry.len() - 4].to_vec();
    body[4] ^= 0x01;
    raw_put(&db, Tree::KeyNodes, &node.to_bytes(), &with_crc(body));
    // 2. The orphan's depth-4 node removed.
    let parent = bottom(&orphan).parent().expect("a parent");
    raw_remove(&db, Tree::KeyNodes, &parent.to_bytes());
    // 3. The stale subject's open-bucket key re-labelled to the next
    //    generation of its node (both checksums made consistent).
    let tag = db.subject_tag(&stale);
    let mut open_key = None;
    crate::storage::scan_prefix(
        db.inner.storage.as_ref(),
        Tree::Vault,
        &tag.0,
        &mut |k, v| {
            if shredkv_crypto::KeyId::from_bytes(k).is_some_and(|id| id.bucket == 1) {
                open_key = Some((k.to_vec(), v.to_vec()));
            }
            ControlFlow::Continue(())
        },
    )
    .expect("scan");
    let (key, value) = open_key.expect("the open bucket's key");
    // Vault entry v2: the wrap (78 bytes) at 20..98, its generation at 10..14.
    let mut wrap = value[20..94].to_vec();
    let generation = u32::from_be_bytes(wrap[10..14].try_into().expect("4")) + 1;
    wrap[10..14].copy_from_slice(&generation.to_be_bytes());
    let mut entry = value[..20].to_vec();
    entry.extend_from_slice(&with_crc(wrap));
    raw_put(&db, Tree::Vault, &key, &with_crc(entry));
    drop(db);

    let db = Db::open(sled_config(&path, &clock)).expect("reopen");
    for s in [&damaged, &orphan, &stale] {
        assert!(
            matches!(
                db.get(s, "account_profile", b"p"),
                Err(crate::Error::Tampered { .. })
            ),
            "{s}: reads as tampered, not as erased or missing"
        );
    }
    assert_eq!(
        db.get(&bystander, "account_profile", b"p")
            .expect("get")
            .as_deref(),
        Some(bystander.as_bytes())
    );
    let problems = db.verify().expect("verify").problems;
    let at = |tree: &str, key: &[u8]| {
        problems.iter().find(|p| {
            p.location.tree == tree && p.location.key_hex == shredkv_crypto::hex::encode(key)
        })
    };
    let damaged_node = at("key_nodes", &node.to_bytes()).expect("the damaged node is reported");
    assert_eq!(damaged_node.kind, crate::ProblemKind::Tampered);
    assert!(
        damaged_node.detail.contains("does not open"),
        "{}",
        damaged_node.detail
    );
    let orphaned =
        at("key_nodes", &bottom(&orphan).to_bytes()).expect("the orphaned bottom node is reported");
    assert_eq!(orphaned.kind, crate::ProblemKind::Tampered);
    let stale_key = at("vault", &key).expect("the stale wrap is reported");
    assert!(
        stale_key.detail.contains("generation"),
        "{}",
        stale_key.detail
    );

    // The purge goes on: the damaged subject is shredded (a debt on the
    // damaged node), a debt names a node the tree lacks, and compaction
    // pays both, rotates, and later destroys the first epoch.
    let first_epoch = db.stats().expect("stats").current_epoch;
    db.shred(&damaged, crate::Classes::All).expect("shred");
    let now = db.now().as_second();
    // A key of a subject no node covers (the tag's first 20 bits all ones;
    // checked absent below).
    let unheard_of = shredkv_crypto::KeyId {
        subject: shredkv_crypto::SubjectTag([0xFF; 16]),
        class: 1,
        bucket: 1,
        version: 1,
    };
    let missing = crate::vault::tree::bottom_of(&unheard_of);
    assert!(raw_node(&db, missing).is_none());
    raw_put(
        &db,
        Tree::Deadlines,
        &crate::retention::deadlines::key(
            now,
            &crate::retention::deadlines::Due::RekeyNode(unheard_of),
        ),
        &crate::retention::deadlines::value(now),
    );
    clock.advance(days(1));
    let report = db.compact().expect("damage does not fail the pass");
    assert_eq!(report.epochs_created, 1, "{report:?}");
    assert_eq!(pending_node_debts(&db), 0);
    assert!(raw_node(&db, missing).is_none(), "a debt makes no node");
    clock.advance(days(40));
    db.compact().expect("compact");
    assert!(
        !db.stats()
            .expect("stats")
            .live_epochs
            .contains(&first_epoch)
    );
    assert_eq!(
        db.get(&bystander, "account_profile", b"p")
            .expect("get")
            .as_deref(),
        Some(bystander.as_bytes())
    );
}

/// The keys expiring on one day hang in that day's forest of the key tree.
/// An early death among them (a shred) re-keys the forest's path; the
/// day's end destroys them and removes the forest whole, re-wrapping
/// nothing, unless a hold keeps one of its keys: then the dead keys' paths
/// are re-keyed and the forest lives until the held key dies too. Forest
/// 0 (the scope keys) is never touched by the day's expiry.
#[test]
fn a_day_forest_dies_whole_unless_a_hold_keeps_one_of_its_keys() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, clock) = open(&dir);
    // start() is 08:00 UTC: an hour later is the same day for everyone.
    let expiry = db.now() + SignedDuration::from_hours(1);
    for s in ["a", "b", "c"] {
        db.register_account(s).expect("register");
        db.put_with(
            s,
            "message_content",
            b"m",
            s.as_bytes(),
            PutOptions::expires_at(expiry),
        )
        .expect("put");
    }
    let roots = day_forest_roots(&db);
    assert_eq!(roots.len(), 1, "one expiry day, one forest: {roots:?}");
    let (forest, first_generation) = roots[0];
    assert!(
        day_forest_nodes(&db) >= 4,
        "a root and three levels at least"
    );

    // An early death: b's shred re-keys b's path in the day forest, which
    // lives on for a and c.
    db.shred("b", crate::Classes::All).expect("shred");
    let report = db.compact().expect("compact");
    assert_eq!(report.forests_removed, 0, "{report:?}");
    assert!(report.nodes_rekeyed >= 4, "{report:?}");
    assert_eq!(day_forest_roots(&db), vec![(forest, first_generation + 1)]);
    assert!(readable(&db, "a", "message_content", b"m"));
    assert!(readable(&db, "c", "message_content", b"m"));

    // The day ends with c's messages on hold: a's key dies, c's is kept,
    // so the forest stays and a's path is re-keyed under it.
    db.place_hold("c", Some("message_content"), "case 12")
        .expect("hold");
    let scope_root = root_generation(&db);
    clock.advance(days(1));
    let report = db.compact().expect("compact");
    assert_eq!(report.keys_destroyed, 1, "{report:?}");
    assert_eq!(report.blocked_by_hold, 1, "{report:?}");
    assert_eq!(report.forests_removed, 0, "{report:?}");
    assert_eq!(day_forest_roots(&db), vec![(forest, first_generation + 2)]);
    assert_eq!(root_generation(&db), scope_root, "forest 0 untouched");
    assert!(!readable(&db, "a", "message_content", b"m"));
    assert_eq!(
        db.get("c", "message_content", b"m").expect("held"),
        Some(b"c".to_vec())
    );
    assert_eq!(pending_node_debts(&db), 0);

    // The hold released, c's key dies at the next pass and the forest with
    // it: every node removed, none re-keyed.
    db.release_hold("c", Some("message_content"))
        .expect("release");
    let report = db.compact().expect("compact");
    assert_eq!(report.keys_destroyed, 1, "{report:?}");
    assert_eq!(report.forests_removed, 1, "{report:?}");
    assert_eq!(report.nodes_rekeyed, 0, "{report:?}");
    assert_eq!(day_forest_nodes(&db), 0);
    assert_eq!(root_generation(&db), scope_root, "forest 0 untouched");
    assert_eq!(pending_node_debts(&db), 0);
    // No key of that day can be made after its forest went: an expiry
    // already passed is expired on arrival, nothing stored, no forest made.
    db.put_with(
        "a",
        "message_content",
        b"late",
        b"l",
        PutOptions::expires_at(expiry),
    )
    .expect("put");
    assert!(!readable(&db, "a", "message_content", b"late"));
    assert_eq!(day_forest_nodes(&db), 0);
}

/// The live store goes on making keys after a backup, wrapped under node
/// keys the backup holds too. A restore that kept those node keys live
/// would keep the live store's later keys (and the records the restore
/// drops) decryptable from its files for as long as the restored store
/// runs: the restore re-keys every node it brings back, in every forest,
/// before it returns, and every record still reads.
#[test]
fn a_restore_rekeys_every_node_the_backup_holds() {
    let root = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(start());
    let live = Db::open(sled_config(&root.path().join("live"), &clock)).expect("open");
    let expiry = live.now() + SignedDuration::from_hours(24 * 5);
    for s in ["a", "b", "c"] {
        live.register_account(s).expect("register");
        live.put(s, "account_profile", b"p", s.as_bytes())
            .expect("put");
        live.put_with(
            s,
            "message_content",
            b"m",
            s.as_bytes(),
            PutOptions::expires_at(expiry),
        )
        .expect("put");
    }
    let at_backup = node_generations(&live);
    assert!(
        at_backup.len() > 8,
        "forest 0 and a day forest: {at_backup:?}"
    );
    live.backup(root.path().join("backup")).expect("backup");
    // After the backup the live store makes keys under the same nodes.
    live.register_account("d").expect("register");
    live.put("d", "account_profile", b"p", b"d").expect("put");
    live.put("a", "message_content", b"open", b"after")
        .expect("put");

    let (restored, _) = Db::restore(
        root.path().join("backup"),
        sled_config(&root.path().join("restored"), &clock),
        crate::ErasureSource::Live(&live),
    )
    .expect("restore");
    let after = node_generations(&restored);
    for (node, generation) in &at_backup {
        let now = after.get(node).copied();
        assert!(
            now.is_some_and(|g| g > *generation),
            "node {node:02x?}: generation {generation} at the backup, {now:?} after the restore"
        );
    }
    assert_eq!(pending_node_debts(&restored), 0, "paid before it returned");
    for s in ["a", "b", "c"] {
        assert_eq!(
            restored.get(s, "account_profile", b"p").expect("get"),
            Some(s.as_bytes().to_vec())
        );
        assert_eq!(
            restored.get(s, "message_content", b"m").expect("get"),
            Some(s.as_bytes().to_vec())
        );
    }
    assert!(restored.verify().expect("verify").is_clean());
}
