//! Erasures larger than one batch of the backend (etcd takes at most
//! `--max-txn-ops` ops per transaction): a local redb store behind the
//! fault layer refuses batches over a limit, as etcd does, so the chunked
//! path (`db::erasure_commit`) runs here with crashes and lost answers
//! injected. And retries: a shred whose answer was lost, retried, returns
//! the same receipt and writes no second ledger or audit entry.
//!
//! Expectations come from what the test wrote (its own list of subjects
//! and records), not from the engine's plan.

use std::path::Path;
use std::sync::Arc;

use jiff::Timestamp;
use shredkv::internal::{ApplyFailure, FaultControl, FaultPlan, FaultPoint, TestStore};
use shredkv::{AuditEvent, Backend, Classes, Clock, Config, Db, ManualClock, SubjectState};

/// The batch limit of the tests: a family of 30 end users needs about 250
/// ops (per end user: state, ledger, deadline, audit, four key tombstones),
/// and at 45 some end user's tombstones spill into the chunk after its
/// state, so a failure there leaves an erased subject with live keys.
const LIMIT: usize = 45;
const END_USERS: usize = 30;
/// Keys a scope written once holds (docs/design.md, record keys): its
/// scope key (bucket 0, for blinded record keys) and the one bucket its
/// records went to (one day, no expiry).
const KEYS_PER_SCOPE: usize = 2;
/// The family's scopes: the account's profile, two classes per end user.
const SCOPES: usize = 1 + 2 * END_USERS;

fn config(dir: &Path, clock: &ManualClock) -> Config {
    Config::new(dir.join("store"))
        .key_file(dir.join("keys"))
        .backend(Backend::Redb)
        .clock(Arc::new(clock.clone()))
        .maintenance_every(None)
}

fn open_limited(dir: &Path, clock: &ManualClock, plan: FaultPlan) -> (Db, FaultControl) {
    shredkv::internal::open_with_faults(
        config(dir, clock),
        &TestStore::Disk(Backend::Redb),
        plan.batch_limit(LIMIT),
    )
    .expect("open with a batch limit")
}

/// (subject, class, key, value) of every record the test writes.
fn family() -> Vec<(String, &'static str, Vec<u8>, Vec<u8>)> {
    let mut records = vec![(
        "acct".to_string(),
        "account_profile",
        b"email".to_vec(),
        b"acct@example.com".to_vec(),
    )];
    for i in 0..END_USERS {
        let user = format!("user-{i}");
        records.push((
            user.clone(),
            "message_content",
            b"m1".to_vec(),
            format!("{user}: hello").into_bytes(),
        ));
        records.push((
            user.clone(),
            "account_profile",
            b"name".to_vec(),
            format!("{user}'s name").into_bytes(),
        ));
    }
    records
}

fn fill(db: &Db) {
    db.register_account("acct").expect("register");
    for i in 0..END_USERS {
        db.register_end_user(&format!("user-{i}"), "acct")
            .expect("register");
    }
    for (subject, class, key, value) in family() {
        db.put(&subject, class, &key, &value).expect("put");
    }
    db.register_account("bystander").expect("register");
    db.put("bystander", "account_profile", b"email", b"b@example.com")
        .expect("put");
}

fn subjects() -> Vec<String> {
    std::iter::once("acct".to_string())
        .chain((0..END_USERS).map(|i| format!("user-{i}")))
        .collect()
}

/// Every record of the family refused as erased, every subject erased,
/// no key left live under an erased scope, the bystander untouched.
fn assert_family_erased(db: &Db, when: &str) {
    for (subject, class, key, _) in family() {
        let err = db
            .get(&subject, class, &key)
            .expect_err("an erased record is refused");
        assert!(err.is_erased(), "{when}: {subject}/{class}: {err}");
    }
    for subject in subjects() {
        assert_eq!(
            db.subject(&subject).expect("subject").expect("known").state,
            SubjectState::Erased,
            "{when}: {subject}"
        );
        let certificate = db.certificate(&subject).expect("certificate");
        assert_eq!(
            certificate.keys_live_in_erased_scopes, 0,
            "{when}: {subject} has live keys under its erasure"
        );
    }
    assert_eq!(
        db.get("bystander", "account_profile", b"email")
            .expect("get")
            .as_deref(),
        Some(&b"b@example.com"[..]),
        "{when}"
    );
}

/// How many audit entries of `event` name each of the family's subjects.
fn audit_count(db: &Db, event: AuditEvent) -> Vec<usize> {
    let entries = db.audit_entries(0, usize::MAX).expect("audit entries");
    subjects()
        .iter()
        .map(|s| {
            let tag = db.subject_tag(s);
            entries
                .iter()
                .filter(|e| e.event == event && e.subject == Some(tag))
                .count()
        })
        .collect()
}

fn clock() -> ManualClock {
    ManualClock::new(Timestamp::from_second(1_800_000_000).expect("a time"))
}

#[test]
fn a_shred_over_the_batch_limit_lands_in_chunks_and_erases_everything() {
    let dir = tempfile::tempdir().expect("a directory");
    let clock = clock();
    let (db, control) = open_limited(dir.path(), &clock, FaultPlan::none());
    fill(&db);
    let before = control.counts();
    let receipt = db.shred("acct", Classes::All).expect("a chunked shred");
    let spent = control.counts().since(before);
    // Chunked: more than one durable commit, none over the limit (the
    // fault layer refuses those).
    assert!(spent.durable_applies > 2, "{spent:?}");
    assert_eq!(receipt.erased.len(), END_USERS + 1, "{receipt:?}");
    assert_eq!(
        receipt.keys_destroyed(),
        SCOPES * KEYS_PER_SCOPE,
        "{receipt:?}"
    );
    assert_family_erased(&db, "after the shred");
    assert!(db.verify().expect("verify").is_clean());
    assert_eq!(
        audit_count(&db, AuditEvent::KeysDestroyed),
        vec![1; END_USERS + 1]
    );
    // Answered again, the same receipt, nothing written.
    let before = control.counts();
    assert_eq!(db.shred("acct", Classes::All).expect("again"), receipt);
    assert_eq!(control.counts().since(before).writes, 0);
    drop(db);
    let db = Db::open(config(dir.path(), &clock)).expect("reopen");
    assert_family_erased(&db, "reopened");
}

/// A failure after the first chunk (a crash would leave the same store):
/// the subjects not yet erased are refused at once, and the next open
/// finishes the erasure from its marker before serving anything.
#[test]
fn an_erasure_interrupted_between_chunks_serves_nothing_and_is_finished_at_open() {
    for failing_chunk in [2, 3, 5] {
        let dir = tempfile::tempdir().expect("a directory");
        let clock = clock();
        let (db, control) = open_limited(dir.path(), &clock, FaultPlan::none());
        fill(&db);
        control.fail_nth(
            FaultPoint::DurableApply,
            failing_chunk,
            ApplyFailure::NothingApplied,
        );
        let err = db.shred("acct", Classes::All).expect_err("a chunk fails");
        assert!(!control.armed(), "the fault fired");
        assert!(err.to_string().contains("injected"), "{err}");
        // Nothing served in between, end users of later chunks included.
        for (subject, class, key, _) in family() {
            let err = db
                .get(&subject, class, &key)
                .expect_err("refused while the erasure is unfinished");
            assert!(err.is_erased(), "chunk {failing_chunk}: {subject}: {err}");
        }
        drop(db);
        // The next open finishes it.
        let db = Db::open(config(dir.path(), &clock)).expect("reopen");
        assert_family_erased(&db, &format!("reopened after chunk {failing_chunk} failed"));
        assert!(db.verify().expect("verify").is_clean());
        assert_eq!(
            audit_count(&db, AuditEvent::KeysDestroyed),
            vec![1; END_USERS + 1],
            "chunk {failing_chunk}"
        );
        // A retry now answers with the finished erasure's receipt.
        let receipt = db.shred("acct", Classes::All).expect("retry");
        assert_eq!(receipt.erased.len(), END_USERS + 1, "{receipt:?}");
        assert_eq!(receipt.keys_destroyed(), SCOPES * KEYS_PER_SCOPE);
        assert_eq!(
            receipt.erased_at,
            Timestamp::from_second(1_800_000_000).expect("a time")
        );
    }
}

/// The same failure, finished by retrying the shred in the same process.
#[test]
fn a_retry_finishes_an_interrupted_chunked_erasure() {
    let dir = tempfile::tempdir().expect("a directory");
    let clock = clock();
    let (db, control) = open_limited(dir.path(), &clock, FaultPlan::none());
    fill(&db);
    control.fail_nth(FaultPoint::DurableApply, 3, ApplyFailure::NothingApplied);
    db.shred("acct", Classes::All).expect_err("a chunk fails");
    // Later: the retry finishes at the first erasure's time.
    clock.advance(jiff::SignedDuration::from_mins(5));
    let receipt = db
        .shred("acct", Classes::All)
        .expect("the retry finishes it");
    assert_eq!(receipt.erased.len(), END_USERS + 1, "{receipt:?}");
    assert_eq!(
        receipt.erased_at,
        Timestamp::from_second(1_800_000_000).expect("a time")
    );
    assert_family_erased(&db, "after the retry");
    assert_eq!(
        audit_count(&db, AuditEvent::KeysDestroyed),
        vec![1; END_USERS + 1]
    );
    assert_eq!(db.shred("acct", Classes::All).expect("again"), receipt);
}

/// An account whose chunked erasure failed part way takes no new end user
/// until it is finished: the finish lists the family again from the store
/// (its marker names no subject), and a newcomer listed then would be
/// erased by a request made before it existed. The erasure here is of one
/// class, so the account itself stays active.
#[test]
fn an_account_with_an_unfinished_erasure_takes_no_end_user_until_it_is_finished() {
    let dir = tempfile::tempdir().expect("a directory");
    let clock = clock();
    let (db, control) = open_limited(dir.path(), &clock, FaultPlan::none());
    fill(&db);
    control.fail_nth(FaultPoint::DurableApply, 3, ApplyFailure::NothingApplied);
    db.shred("acct", Classes::Only(&["message_content"]))
        .expect_err("a chunk fails");
    let err = db
        .register_end_user("late-user", "acct")
        .expect_err("the account's erasure is unfinished");
    assert!(err.is_erased(), "{err}");
    let receipt = db
        .shred("acct", Classes::Only(&["message_content"]))
        .expect("the retry finishes it");
    assert_eq!(receipt.erased.len(), END_USERS, "{receipt:?}");
    db.register_end_user("late-user", "acct")
        .expect("registered once the erasure is finished");
    db.put("late-user", "message_content", b"m1", b"hello")
        .expect("the newcomer's class is not erased");
    for i in 0..END_USERS {
        let user = format!("user-{i}");
        let read = db.get(&user, "message_content", b"m1");
        assert!(matches!(&read, Err(e) if e.is_erased()), "{user}: {read:?}");
        assert!(
            db.get(&user, "account_profile", b"name")
                .expect("another class")
                .is_some()
        );
    }
}

/// A shred that landed but whose answer was lost (the commit applied, the
/// call failed), retried: the same receipt as a clean shred would give,
/// one ledger entry and one audit entry. No batch limit here: the plain
/// one-batch path.
#[test]
fn a_shred_retried_after_a_lost_answer_returns_its_receipt_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("a directory");
    let clock = clock();
    let (db, control) = shredkv::internal::open_with_faults(
        config(dir.path(), &clock),
        &TestStore::Disk(Backend::Redb),
        FaultPlan::none(),
    )
    .expect("open");
    fill(&db);
    control.fail_nth(FaultPoint::DurableApply, 1, ApplyFailure::AppliedNotSynced);
    db.shred("acct", Classes::All)
        .expect_err("the answer is lost");
    clock.advance(jiff::SignedDuration::from_mins(1));
    let before = control.counts();
    let receipt = db.shred("acct", Classes::All).expect("the retry");
    assert_eq!(control.counts().since(before).writes, 0, "the retry wrote");
    assert_eq!(receipt.erased.len(), END_USERS + 1, "{receipt:?}");
    assert_eq!(receipt.keys_destroyed(), SCOPES * KEYS_PER_SCOPE);
    assert_eq!(
        receipt.erased_at,
        Timestamp::from_second(1_800_000_000).expect("a time"),
        "the first attempt's time"
    );
    // The receipt names the audit entry that recorded the erasure.
    let recorded = db
        .audit_entries(receipt.audit_head.seq, 1)
        .expect("audit entry");
    assert_eq!(recorded[0].hash, receipt.audit_head.hash);
    assert_eq!(recorded[0].event, AuditEvent::KeysDestroyed);
    assert_eq!(
        audit_count(&db, AuditEvent::KeysDestroyed),
        vec![1; END_USERS + 1]
    );
    assert_family_erased(&db, "after the retry");
    // A different request (some classes only) is not answered with it.
    let other = db
        .shred("acct", Classes::Only(&["message_content"]))
        .expect("another request");
    assert_ne!(other, receipt);
    drop(db);
    let db = Db::open(config(dir.path(), &clock)).expect("reopen");
    assert_eq!(
        db.shred("acct", Classes::All).expect("after reopening"),
        receipt
    );
}

/// The default policy without the `[[class]]` table of `class`.
fn default_policy_without(class: &str) -> shredkv::Policy {
    let marker = format!("name = \"{class}\"");
    let tables: Vec<&str> = shredkv::Policy::DEFAULT_TOML.split("[[class]]").collect();
    assert!(tables.iter().any(|t| t.contains(&marker)), "{class}");
    let text = tables
        .iter()
        .filter(|t| !t.contains(&marker))
        .copied()
        .collect::<Vec<_>>()
        .join("[[class]]");
    shredkv::Policy::from_toml_str(&text, "without").expect("policy")
}

/// Live data keys of `subject`, read from the vault directly.
fn live_keys_of(db: &Db, subject: &str) -> usize {
    let tag = db.subject_tag(subject);
    shredkv::internal::vault_key_ids(db)
        .expect("key ids")
        .iter()
        .filter(|(id, destroyed)| id.subject == tag && !destroyed)
        .count()
}

/// Retiring a class (a policy change that drops it) held by many subjects,
/// on a backend with a batch limit: 30 accounts with a message each, and
/// one whose messages expire on 60 different days, so that its one scope
/// holds more keys than a batch. The open that applies the policy lands
/// the retirement in batches: every holder's scope is erased with the
/// reason "class removed from the policy" and no live key under it, one
/// `keys destroyed` audit entry each, the bystander's other class
/// untouched. Without the batching, the open is refused whole.
#[test]
fn retiring_a_class_over_the_batch_limit_lands_in_batches() {
    use jiff::SignedDuration;
    let dir = tempfile::tempdir().expect("dir");
    let clock = clock();
    let holders: Vec<String> = (0..END_USERS).map(|i| format!("holder-{i}")).collect();
    {
        let db = Db::open(config(dir.path(), &clock)).expect("open");
        db.register_account("bystander").expect("register");
        db.put("bystander", "account_profile", b"email", b"b@example.com")
            .expect("put");
        for holder in &holders {
            db.register_account(holder).expect("register");
            db.put(holder, "message_content", b"m1", b"hello")
                .expect("put");
        }
        db.register_account("heavy").expect("register");
        for day in 1..=60u8 {
            let expires = clock.now() + SignedDuration::from_hours(24 * i64::from(day));
            db.put_with(
                "heavy",
                "message_content",
                &[day],
                b"expiring",
                shredkv::PutOptions::expires_at(expires),
            )
            .expect("put with expiry");
        }
        assert!(
            live_keys_of(&db, "heavy") > LIMIT,
            "the heavy scope holds more keys than a batch: {}",
            live_keys_of(&db, "heavy")
        );
    }
    let (db, _control) = shredkv::internal::open_with_faults(
        config(dir.path(), &clock)
            .policy(default_policy_without("message_content"))
            .apply_policy_change(true),
        &TestStore::Disk(Backend::Redb),
        FaultPlan::none().batch_limit(LIMIT),
    )
    .expect("the policy change applies in batches");
    let entries = db.audit_entries(0, usize::MAX).expect("audit entries");
    for holder in holders.iter().chain(std::iter::once(&"heavy".to_string())) {
        let certificate = db.certificate(holder).expect("certificate");
        assert_eq!(
            certificate
                .erasures
                .iter()
                .map(|e| e.reason.as_str())
                .collect::<Vec<_>>(),
            ["class removed from the policy"],
            "{holder}"
        );
        assert_eq!(certificate.keys_live_in_erased_scopes, 0, "{holder}");
        assert_eq!(live_keys_of(&db, holder), 0, "{holder}");
        let tag = db.subject_tag(holder);
        let destroyed = entries
            .iter()
            .filter(|e| e.event == AuditEvent::KeysDestroyed && e.subject == Some(tag))
            .count();
        assert_eq!(destroyed, 1, "{holder}: one audit entry");
    }
    assert_eq!(
        db.get("bystander", "account_profile", b"email")
            .expect("get")
            .as_deref(),
        Some(&b"b@example.com"[..])
    );
    assert!(db.verify().expect("verify").is_clean());
}

/// The request limit of the paged-receipt tests: half of it is the largest
/// value the engine may write (8 KiB), and a receipt names 25 bytes a
/// subject, so the receipt of an account of `PAGED_END_USERS` end users
/// (about 10 KB) needs two pages, while every chunk of `LIMIT` ops fits.
const REQUEST_LIMIT: usize = 16 << 10;
const PAGED_END_USERS: usize = 400;

fn open_request_limited(dir: &Path, clock: &ManualClock, plan: FaultPlan) -> (Db, FaultControl) {
    shredkv::internal::open_with_faults(
        config(dir, clock),
        &TestStore::Disk(Backend::Redb),
        plan.batch_limit(LIMIT).request_limit(REQUEST_LIMIT),
    )
    .expect("open with batch and request limits")
}

/// An account of `PAGED_END_USERS` end users, each with one message; the
/// account with its profile.
fn fill_large(db: &Db) -> Vec<String> {
    db.register_account("big").expect("register");
    db.put("big", "account_profile", b"email", b"big@example.com")
        .expect("put");
    let mut subjects = vec!["big".to_string()];
    for i in 0..PAGED_END_USERS {
        let user = format!("big-user-{i}");
        db.register_end_user(&user, "big").expect("register");
        db.put(&user, "message_content", b"m1", b"hello")
            .expect("put");
        subjects.push(user);
    }
    subjects
}

/// What the receipt of `Db::shred(.., Classes::All)` of the large account
/// must name: each subject erased whole, with the two keys its one scope
/// held (its scope key and its one bucket's key).
fn expected_scopes(db: &Db, subjects: &[String]) -> Vec<shredkv::ErasedScope> {
    let mut scopes: Vec<shredkv::ErasedScope> = subjects
        .iter()
        .map(|s| shredkv::ErasedScope {
            subject: db.subject_tag(s),
            class: None,
            keys_destroyed: KEYS_PER_SCOPE,
        })
        .collect();
    scopes.sort_by_key(|scope| scope.subject.0);
    scopes
}

/// `got == want`, reported by counts: these receipts name 400 subjects.
fn assert_same_receipt(got: &shredkv::Receipt, want: &shredkv::Receipt, what: &str) {
    assert!(
        got == want,
        "{what}: {} scopes erased at {} (audit entry {}), expected {} at {} (audit entry {})",
        got.erased.len(),
        got.erased_at,
        got.audit_head.seq,
        want.erased.len(),
        want.erased_at,
        want.audit_head.seq
    );
}

fn sorted(mut scopes: Vec<shredkv::ErasedScope>) -> Vec<shredkv::ErasedScope> {
    scopes.sort_by_key(|scope| scope.subject.0);
    scopes
}

/// A receipt larger than the largest value the backend takes (etcd's
/// `--max-request-bytes`, here the fault layer's request limit) is kept in
/// pages: a repeat of the shred, in this process or after a reopen, is
/// answered with the whole receipt and writes nothing. Before pages, such
/// a receipt was not stored and the retry answered with an empty one.
#[test]
fn a_receipt_larger_than_one_value_is_kept_in_pages_and_answers_its_retry() {
    let dir = tempfile::tempdir().expect("a directory");
    let clock = clock();
    let (db, control) = open_request_limited(dir.path(), &clock, FaultPlan::none());
    let subjects = fill_large(&db);
    let receipt = db.shred("big", Classes::All).expect("the shred");
    assert!(
        sorted(receipt.erased.clone()) == expected_scopes(&db, &subjects),
        "the receipt names {} scopes, not each subject's",
        receipt.erased.len()
    );
    let receipt_bytes = 25 * subjects.len();
    assert!(
        receipt_bytes > REQUEST_LIMIT / 2,
        "the test's receipt ({receipt_bytes} B) must be larger than a value"
    );
    clock.advance(jiff::SignedDuration::from_mins(1));
    let before = control.counts();
    let retry = db.shred("big", Classes::All).expect("the retry");
    assert_eq!(control.counts().since(before).writes, 0, "the retry wrote");
    assert_same_receipt(&retry, &receipt, "the retry");
    drop(db);
    let db = Db::open(config(dir.path(), &clock)).expect("reopen");
    let reopened = db.shred("big", Classes::All).expect("after reopening");
    assert_same_receipt(&reopened, &receipt, "after reopening");
}

/// Durable writes of a clean shred of the large account on a fresh store:
/// the count locates the receipt's pages (written just before the last
/// chunk) for the interrupted runs below.
fn durable_applies_of_a_clean_shred(clock: &ManualClock) -> u64 {
    let dir = tempfile::tempdir().expect("a directory");
    let (db, control) = open_request_limited(dir.path(), clock, FaultPlan::none());
    fill_large(&db);
    let before = control.counts();
    db.shred("big", Classes::All).expect("the shred");
    control.counts().since(before).durable_applies
}

/// A paged receipt's writes interrupted: the last page's write fails (the
/// erasure's marker is still there, the head not written), and the retry
/// finishes the erasure and answers with the whole receipt; the last
/// chunk (the head) lands with its answer lost, and the retry answers
/// from the pages, writing nothing.
#[test]
fn a_paged_receipt_interrupted_or_lost_answers_the_retry_whole() {
    let clock = clock();
    let applies = durable_applies_of_a_clean_shred(&clock);
    // `applies - 1` is the last page (no earlier pages to remove here),
    // `applies` the last chunk with the head.
    for (n, failure) in [
        (applies - 1, ApplyFailure::NothingApplied),
        (applies, ApplyFailure::AppliedNotSynced),
    ] {
        let dir = tempfile::tempdir().expect("a directory");
        let (db, control) = open_request_limited(dir.path(), &clock, FaultPlan::none());
        let subjects = fill_large(&db);
        let expected = expected_scopes(&db, &subjects);
        control.fail_nth(FaultPoint::DurableApply, n, failure);
        db.shred("big", Classes::All)
            .expect_err("the injected failure");
        assert!(!control.armed(), "write {n} of {applies} was not reached");
        clock.advance(jiff::SignedDuration::from_mins(1));
        let retry = db.shred("big", Classes::All).expect("the retry");
        assert!(
            sorted(retry.erased.clone()) == expected,
            "{failure:?}: the retry names {} scopes, not each subject's",
            retry.erased.len()
        );
        assert_eq!(
            retry.erased_at,
            Timestamp::from_second(1_800_000_000).expect("a time"),
            "the first attempt's time ({failure:?})"
        );
        let before = control.counts();
        let again = db.shred("big", Classes::All).expect("a repeat");
        assert_eq!(control.counts().since(before).writes, 0, "{failure:?}");
        assert_same_receipt(&again, &retry, &format!("{failure:?}: a repeat"));
        drop(db);
        let db = Db::open(config(dir.path(), &clock)).expect("reopen");
        let reopened = db.shred("big", Classes::All).expect("after reopening");
        assert_same_receipt(&reopened, &retry, &format!("{failure:?}: after reopening"));
        for subject in &subjects {
            let read = db.get(subject, "message_content", b"m1");
            assert!(
                subject == "big" || matches!(&read, Err(e) if e.is_erased()),
                "{subject}: {read:?}"
            );
        }
        clock.advance(jiff::SignedDuration::from_mins(-1));
    }
}

/// Two accounts of `PAIR_END_USERS` end users each, every end user with
/// one message: erased together (`Db::shred_each`), their marker lists
/// 602 subjects (9.6 KB, more than the 8 KiB a value may take here).
const PAIR_END_USERS: usize = 300;

fn fill_pair(db: &Db) -> Vec<String> {
    let mut subjects = Vec::new();
    for account in ["pair-a", "pair-b"] {
        db.register_account(account).expect("register");
        subjects.push(account.to_string());
        for i in 0..PAIR_END_USERS {
            let user = format!("{account}-user-{i}");
            db.register_end_user(&user, account).expect("register");
            db.put(&user, "message_content", b"m1", b"hello")
                .expect("put");
            subjects.push(user);
        }
    }
    db.register_account("bystander").expect("register");
    db.put("bystander", "account_profile", b"email", b"b@example.com")
        .expect("put");
    subjects
}

/// How many of `subjects` are erased, and how many still read their
/// message; the bystander always reads.
fn erased_and_readable(db: &Db, subjects: &[String]) -> (usize, usize) {
    assert_eq!(
        db.get("bystander", "account_profile", b"email")
            .expect("the bystander reads")
            .as_deref(),
        Some(&b"b@example.com"[..])
    );
    let mut erased = 0;
    let mut readable = 0;
    for subject in subjects {
        if db.subject(subject).expect("subject").expect("known").state == SubjectState::Erased {
            erased += 1;
        }
        if !subject.starts_with("pair-") || subject.contains("-user-") {
            match db.get(subject, "message_content", b"m1") {
                Ok(Some(_)) => readable += 1,
                Ok(None) => panic!("{subject}: its message is gone but not erased"),
                Err(err) => assert!(err.is_erased(), "{subject}: {err}"),
            }
        }
    }
    (erased, readable)
}

/// An erasure of several families whose listing is larger than one value
/// (etcd's request size; here the fault layer's) lists its subjects in
/// pages written before its marker. Before pages it was refused. With the
/// writes cut at each step:
///
/// - a page's write fails: nothing is decided, nothing erased, and the
///   same request then erases everything;
/// - the first chunk (the marker) fails: the same;
/// - a later chunk fails: the erasure is decided, the families are refused
///   at once, and the next open finishes it from the paged marker.
#[test]
fn an_erasure_listing_more_than_one_value_lists_in_pages_and_survives_each_cut() {
    let clock = clock();
    let users = 2 * PAIR_END_USERS;
    // Pages of 8 KiB less the margin hold 479 tags: 602 subjects, 2 pages.
    const PAGES: u64 = 2;
    for (cut, decided) in [
        (None, true),
        (Some(1), false),
        (Some(PAGES + 1), false),
        (Some(PAGES + 3), true),
    ] {
        let dir = tempfile::tempdir().expect("a directory");
        let (db, control) = open_request_limited(dir.path(), &clock, FaultPlan::none());
        let subjects = fill_pair(&db);
        let Some(n) = cut else {
            let receipts = db
                .shred_each(&["pair-a", "pair-b"], Classes::All)
                .expect("the erasure");
            assert_eq!(
                receipts.iter().map(|r| r.erased.len()).sum::<usize>(),
                subjects.len()
            );
            assert_eq!(erased_and_readable(&db, &subjects), (subjects.len(), 0));
            continue;
        };
        control.fail_nth(FaultPoint::DurableApply, n, ApplyFailure::NothingApplied);
        db.shred_each(&["pair-a", "pair-b"], Classes::All)
            .expect_err("the cut");
        assert!(!control.armed(), "write {n} was not reached");
        if decided {
            // Refused in this process until it is finished.
            let read = db.get("pair-a-user-7", "message_content", b"m1");
            assert!(
                matches!(&read, Err(e) if e.is_erased()),
                "cut {n}: {read:?}"
            );
            drop(db);
            let db = Db::open(config(dir.path(), &clock)).expect("reopen");
            assert_eq!(
                erased_and_readable(&db, &subjects),
                (subjects.len(), 0),
                "cut {n}: finished at open"
            );
        } else {
            assert_eq!(
                erased_and_readable(&db, &subjects),
                (0, users),
                "cut {n}: nothing decided"
            );
            db.shred_each(&["pair-a", "pair-b"], Classes::All)
                .expect("the same request again");
            assert_eq!(
                erased_and_readable(&db, &subjects),
                (subjects.len(), 0),
                "cut {n}"
            );
            drop(db);
            let db = Db::open(config(dir.path(), &clock)).expect("reopen");
            assert_eq!(
                erased_and_readable(&db, &subjects),
                (subjects.len(), 0),
                "cut {n}"
            );
        }
    }
}
