//! Closed subjects and the races around a subject's life (issue 11, holes
//! 3, 4, 5, 6, 7 and 11).
//!
//! - G1 (an erasure is final): `verify()` cannot put a destroyed key back in
//!   the key cache, and an end user registered while its account is shredded
//!   is erased with it or refused. Both races are forced with pause points of
//!   the fault layer (`FaultControl::pause_at`), never with sleeps: the test
//!   waits for the racing operation to either finish or block on the scope
//!   gate, whichever the code under test does.
//! - Closure ends access (the notice: closing means "permanently losing
//!   access"): reads and writes of a closed account and of its end users fail
//!   with `Error::Closed`; an export still returns what is retained; no end
//!   user can be registered under a closed account.
//! - Closure ends marketing consent: `marketing_contacts` is scheduled at
//!   closure + its `retain`, read here from `policy/default.toml`'s text.
//! - A receipt names only the classes the subject held.

use std::ops::ControlFlow;
use std::sync::mpsc;

use shredkv::internal::PausePoint;
use shredkv::jiff::{SignedDuration, Timestamp};
use shredkv::{Batch, Classes, Clock, Db, ErasureReason, SubjectState};

#[path = "support/pausable.rs"]
mod pausable;
use pausable::PausableStore as Store;

const POLICY: &str = include_str!("../../policy/default.toml");

/// What a racing thread reports to the test.
#[derive(Debug)]
enum Event {
    /// It stopped at the pause point it was given.
    Paused,
    /// Its operation returned.
    Returned,
}

/// Waits until the racing operation either returned or stopped because
/// the scope gate's write lock it needs is held (the fixed protocol makes it
/// wait for the paused thread). Returns which.
fn returned_or_blocked(events: &mpsc::Receiver<Event>) -> &'static str {
    match events.recv().expect("the racing thread reports") {
        Event::Paused => "blocked on the gate",
        Event::Returned => "returned",
    }
}

fn values(db: &Db, subject: &str, class: &str) -> shredkv::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    db.scan_with(subject, class, &mut |r| {
        out.push(r.value.to_vec());
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

#[test]
fn verify_never_recaches_a_destroyed_key() {
    let store = Store::new();
    {
        let (db, _) = store.open();
        db.register_account("acct").expect("register");
        db.put("acct", "message_content", b"m1", b"erase me")
            .expect("put");
    }
    // Reopened: the key cache is empty, so verify must load the data key.
    let (db, control) = store.open();
    let (arrived, arrivals) = mpsc::channel();
    let verify_pause = control.pause_at(PausePoint::ProviderUnwrap, move || {
        arrived.send(()).unwrap_or_default()
    });
    let verifier = {
        let db = db.clone();
        std::thread::spawn(move || db.verify())
    };
    // verify has read the vault entry and is unwrapping the key: the shred
    // must not fall between this and verify's cache insert.
    arrivals.recv().expect("verify loads the data key");

    let (events, racing) = mpsc::channel();
    let blocked = events.clone();
    let gate_pause = control.pause_at(PausePoint::GateWriteContended, move || {
        blocked.send(Event::Paused).unwrap_or_default()
    });
    let shredder = {
        let db = db.clone();
        std::thread::spawn(move || {
            let outcome = db.shred("acct", Classes::All);
            events.send(Event::Returned).unwrap_or_default();
            outcome
        })
    };
    let order = returned_or_blocked(&racing);
    verify_pause.resume();
    gate_pause.resume();
    let report = verifier.join().expect("verify thread").expect("verify");
    let receipt = shredder.join().expect("shred thread").expect("shred");
    assert!(receipt.keys_destroyed() > 0, "the shred destroyed the key");
    assert!(report.is_clean(), "{report:?}");

    // A new generation: its reads must not reach the old ciphertext (still
    // stored until compaction) through a key the shred destroyed.
    db.re_register("acct").expect("re-register");
    let found = values(&db, "acct", "message_content").expect("scan after re-register");
    assert!(
        found.is_empty(),
        "the shred {order} while verify was loading the key, and a scan after \
         re-registering still decrypted the erased value: {found:?}"
    );
    assert_eq!(db.get("acct", "message_content", b"m1").expect("get"), None);
}

#[test]
fn shred_and_register_race_leaves_no_live_end_user() {
    let store = Store::new();
    let (db, control) = store.open();
    db.register_account("acct").expect("register");
    db.register_end_user("early", "acct").expect("register");
    // The shred has listed the account's end users and is about to lock.
    let (arrived, arrivals) = mpsc::channel();
    let pause = control.pause_at(PausePoint::GateWrite, move || {
        arrived.send(()).unwrap_or_default()
    });
    let shredder = {
        let db = db.clone();
        std::thread::spawn(move || db.shred("acct", Classes::All))
    };
    arrivals.recv().expect("the shred reaches the gate");
    // An end user registered now, between the listing and the lock.
    let registered = db.register_end_user("late", "acct");
    pause.resume();
    let receipt = shredder.join().expect("shred thread").expect("shred");

    let account = db.subject("acct").expect("subject").expect("known");
    assert_eq!(account.state, SubjectState::Erased);
    assert!(
        registered.is_ok(),
        "registered before the shred locked: {registered:?}"
    );
    let late = db.subject("late").expect("subject").expect("registered");
    assert_eq!(
        late.state,
        SubjectState::Erased,
        "the account was erased but its end user registered during the shred is not"
    );
    assert!(
        receipt.erased.iter().any(|e| e.subject == late.tag),
        "the receipt names the late end user: {receipt:?}"
    );
    let write = db.put("late", "message_content", b"m", b"v");
    assert!(
        write.as_ref().is_err_and(shredkv::Error::is_erased),
        "a write under the erased account: {write:?}"
    );
}

#[test]
fn register_racing_shred_sees_the_erased_account() {
    let store = Store::new();
    let (db, control) = store.open();
    db.register_account("acct").expect("register");
    // Registration has checked the account and is about to write the user.
    let (arrived, arrivals) = mpsc::channel();
    let register_pause = control.pause_at(PausePoint::StorageApply, move || {
        arrived.send(()).unwrap_or_default()
    });
    let registrar = {
        let db = db.clone();
        std::thread::spawn(move || db.register_end_user("late", "acct"))
    };
    arrivals.recv().expect("registration writes");

    let (events, racing) = mpsc::channel();
    let blocked = events.clone();
    let gate_pause = control.pause_at(PausePoint::GateWriteContended, move || {
        blocked.send(Event::Paused).unwrap_or_default()
    });
    let shredder = {
        let db = db.clone();
        std::thread::spawn(move || {
            let outcome = db.shred("acct", Classes::All);
            events.send(Event::Returned).unwrap_or_default();
            outcome
        })
    };
    let order = returned_or_blocked(&racing);
    register_pause.resume();
    gate_pause.resume();
    let registered = registrar.join().expect("register thread");
    shredder.join().expect("shred thread").expect("shred");

    let account = db.subject("acct").expect("subject").expect("known");
    assert_eq!(account.state, SubjectState::Erased);
    match registered {
        // Registered first: the shred must have found and erased it.
        Ok(_) => {
            let late = db.subject("late").expect("subject").expect("registered");
            assert_eq!(
                late.state,
                SubjectState::Erased,
                "the shred {order} during the registration and left its end user live"
            );
        }
        // Refused: the account was erased first.
        Err(err) => {
            assert!(err.is_erased(), "{err}");
            assert!(db.subject("late").expect("subject").is_none());
        }
    }
    let write = db.put("late", "message_content", b"m", b"v");
    assert!(write.is_err(), "a write under the erased account succeeded");
}

#[test]
fn end_user_cannot_register_under_closed_account() {
    let store = Store::new();
    let (db, _) = store.open();
    db.register_account("acct").expect("register");
    let closed_at = store.clock.now();
    db.close_account("acct").expect("close");
    store.clock.advance(SignedDuration::from_hours(5));
    let err = db
        .register_end_user("after", "acct")
        .expect_err("registration under a closed account");
    assert!(err.is_closed(), "{err}");
    assert!(
        matches!(err, shredkv::Error::Closed { closed_at: at, .. } if at == closed_at),
        "{err:?}"
    );
    assert!(db.subject("after").expect("subject").is_none());

    // Nor can an erased end user come back under it.
    db.register_account("acct-3").expect("register");
    db.register_end_user("gone", "acct-3").expect("register");
    db.shred("gone", Classes::All).expect("shred");
    db.close_account("acct-3").expect("close");
    let err = db
        .re_register("gone")
        .expect_err("re-registration under a closed account");
    assert!(err.is_closed(), "{err}");
    assert_eq!(
        db.subject("gone").expect("subject").map(|i| i.state),
        Some(SubjectState::Erased)
    );

    // The same after a deletion request, which closes what it retains.
    db.register_account("acct-2").expect("register");
    db.request_deletion("acct-2", ErasureReason::DeletionRequest)
        .expect("deletion request");
    let err = db
        .register_end_user("after-2", "acct-2")
        .expect_err("registration under a closed account");
    assert!(err.is_closed(), "{err}");
}

#[test]
fn closed_account_loses_access() {
    let store = Store::new();
    let (db, _) = store.open();
    db.register_account("acct").expect("register");
    db.register_end_user("user", "acct").expect("register");
    db.put("acct", "account_records", b"r1", b"ledger line")
        .expect("put");
    db.put("user", "message_content", b"m1", b"hello")
        .expect("put");
    let closed_at = store.clock.now();
    db.close_account("acct").expect("close");
    store.clock.advance(SignedDuration::from_hours(1));

    for (subject, class) in [("acct", "account_records"), ("user", "message_content")] {
        let tag = db.subject_tag(subject);
        let closed = |what: &str, outcome: Result<(), shredkv::Error>| match outcome {
            Err(shredkv::Error::Closed {
                subject,
                closed_at: at,
            }) => {
                assert_eq!(subject, tag, "{what}");
                assert_eq!(at, closed_at, "{what}");
            }
            other => panic!("{what} of {subject}/{class} after closure: {other:?}"),
        };
        closed("get", db.get(subject, class, b"r1").map(|_| ()));
        closed(
            "get_record",
            db.get_record(subject, class, b"m1").map(|_| ()),
        );
        closed("scan", db.scan(subject, class).map(|_| ()));
        closed("scan_with", values(&db, subject, class).map(|_| ()));
        closed("put", db.put(subject, class, b"new", b"v"));
        closed("delete", db.delete(subject, class, b"r1").map(|_| ()));
        let mut batch = Batch::new();
        batch.put(subject, class, b"new", b"v");
        closed("apply", db.apply(batch).map(drop));
    }
    // The legal and portability path still works for what is retained.
    let export = db.export("acct").expect("export after closure");
    let retained: Vec<&[u8]> = export
        .subjects
        .iter()
        .flat_map(|s| &s.classes)
        .filter(|(class, _)| class == "account_records")
        .flat_map(|(_, records)| records.iter().map(|r| r.value.as_slice()))
        .collect();
    assert_eq!(retained, vec![&b"ledger line"[..]]);
}

/// `retain` of `class` in the policy text, in seconds, for "N days" (the
/// only unit this test needs; anything else fails the test).
fn retain_days_in_policy(class: &str) -> i64 {
    let block = POLICY
        .split("[[class]]")
        .find(|block| {
            block
                .lines()
                .any(|line| line.trim() == format!("name = \"{class}\""))
        })
        .unwrap_or_else(|| panic!("class {class} in policy/default.toml"));
    let retain = block
        .lines()
        .find_map(|line| line.trim().strip_prefix("retain = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or_else(|| panic!("retain of {class}"));
    let days = retain
        .strip_suffix(" days")
        .and_then(|n| n.parse::<i64>().ok())
        .unwrap_or_else(|| panic!("retain of {class} in days: {retain}"));
    days * 86_400
}

#[test]
fn account_closure_schedules_marketing_erasure() {
    let store = Store::new();
    let (db, _) = store.open();
    db.register_account("acct").expect("register");
    db.register_end_user("user", "acct").expect("register");
    db.register_account("opted").expect("register");
    for subject in ["acct", "user", "opted"] {
        db.put(subject, "marketing_contacts", b"newsletter", b"a@b.example")
            .expect("put");
    }
    // Opted out two days before its account closes: that clock stands.
    let opted_out = store.clock.now();
    db.opt_out_of_marketing("opted").expect("opt out");
    store.clock.advance(SignedDuration::from_hours(48));

    let retain = retain_days_in_policy("marketing_contacts");
    let closed = store.clock.now();
    let due = Timestamp::from_second(closed.as_second() + retain).expect("due");
    let mut scheduled = db.close_account("acct").expect("close");
    scheduled.extend(db.close_account("opted").expect("close"));
    for (subject, expected) in [
        ("acct", due),
        ("user", due),
        (
            "opted",
            Timestamp::from_second(opted_out.as_second() + retain).expect("due"),
        ),
    ] {
        let tag = db.subject_tag(subject);
        let marketing: Vec<Timestamp> = scheduled
            .iter()
            .filter(|s| s.subject == tag && s.class == "marketing_contacts")
            .map(|s| s.erase_at)
            .collect();
        let expected_here = if subject == "opted" {
            // Scheduled at the opt-out, not again at closure.
            vec![]
        } else {
            vec![expected]
        };
        assert_eq!(marketing, expected_here, "{subject}");
    }

    let marketing_exported = |db: &Db, subject: &str| {
        db.export(subject)
            .expect("export")
            .subjects
            .iter()
            .filter(|s| s.tag == db.subject_tag(subject))
            .flat_map(|s| &s.classes)
            .any(|(class, _)| class == "marketing_contacts")
    };
    store
        .clock
        .set(Timestamp::from_second(due.as_second() - 1).expect("time"));
    db.compact().expect("compact");
    assert!(marketing_exported(&db, "acct"), "kept until its date");
    store.clock.set(due);
    db.compact().expect("compact");
    assert!(
        !marketing_exported(&db, "acct"),
        "erased at closure + retain"
    );
    assert!(
        !marketing_exported(&db, "user"),
        "erased at closure + retain"
    );
    assert!(
        !marketing_exported(&db, "opted"),
        "erased at opt-out + retain"
    );
}

#[test]
fn receipt_names_only_classes_held() {
    let store = Store::new();
    let (db, _) = store.open();
    db.register_account("acct").expect("register");
    db.register_end_user("user", "acct").expect("register");
    db.put("acct", "invoices", b"inv-1", b"100 EUR")
        .expect("put");
    db.put("acct", "account_profile", b"email", b"a@b.example")
        .expect("put");
    db.put("user", "message_content", b"m1", b"hello")
        .expect("put");
    let (acct, user) = (db.subject_tag("acct"), db.subject_tag("user"));

    let receipt = db
        .request_deletion("acct", ErasureReason::DeletionRequest)
        .expect("deletion request");
    let mut erased: Vec<(bool, String)> = receipt
        .erased
        .iter()
        .map(|e| (e.subject == acct, e.class.clone().unwrap_or_default()))
        .collect();
    erased.sort();
    assert_eq!(
        erased,
        vec![
            (false, "message_content".to_string()),
            (true, "account_profile".to_string()),
        ],
        "erased: only what each subject held ({receipt:?})"
    );
    let retained: Vec<(bool, &str)> = receipt
        .retained
        .iter()
        .map(|r| (r.subject == acct, r.class.as_str()))
        .collect();
    assert_eq!(
        retained,
        vec![(true, "invoices")],
        "retained: only what each subject held; the end user never had invoices"
    );
    assert!(!receipt.retained.iter().any(|r| r.subject == user));

    // A shred naming a class the subject never held leaves it out too.
    db.register_account("other").expect("register");
    db.put("other", "usage_records", b"u", b"1").expect("put");
    let receipt = db
        .shred("other", Classes::Only(&["usage_records", "invoices"]))
        .expect("shred");
    let classes: Vec<Option<String>> = receipt.erased.iter().map(|e| e.class.clone()).collect();
    assert_eq!(classes, vec![Some("usage_records".to_string())]);
}
