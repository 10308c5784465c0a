//! G1 for the reads that hand records out after releasing the subject's
//! lock (`scan_with`, the `records` iterator, `export_with`, and
//! `scan_class_page` across subjects): once an
//! erasure returns, none of them hands out another record of what it
//! erased, not even from a page it read before; a class or a subject
//! erased and registered again does not make the old page readable; other
//! classes read on, and so does a page whose key a re-key pass replaced. And a visitor may call back into the store, erasing the very
//! subject it reads: a visitor run under the subject's lock would wait on
//! itself forever, and a slow visitor would hold up every erasure of its
//! stripe.
//!
//! Every scope holds more records than one page (256), so a scan always
//! has a page in hand when the erasure lands. Expectations are the test's
//! own counts, never the engine's.

use std::ops::ControlFlow;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use shredkv::jiff::SignedDuration;
use shredkv::{Batch, Classes, Db, Error, ScanOptions};
use shredkv_tests::{INVOICES, MESSAGES, PROFILE, for_each_backend};

/// Records per scope: more than two pages.
const RECORDS: u32 = 600;

fn key(n: u32) -> Vec<u8> {
    format!("k{n:05}").into_bytes()
}

fn fill(db: &Db, subject: &str, classes: &[&str]) {
    let mut batch = Batch::new();
    for class in classes {
        for n in 0..RECORDS {
            batch.put(
                subject,
                *class,
                &key(n),
                format!("{subject}/{class}/{n}").as_bytes(),
            );
        }
    }
    db.apply(batch).expect("apply");
}

/// Runs `scenario` on its own thread and returns what it returned; fails
/// the test if it has not returned within a minute (it waits on itself).
fn within_a_minute<T: Send + 'static>(
    what: &str,
    scenario: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (done, returned) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(scenario());
    });
    match returned.recv_timeout(Duration::from_secs(60)) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what} did not return within a minute: a lock held across a visitor")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
    }
}

fn assert_erased(result: shredkv::Result<()>, what: &str) {
    match result {
        Err(err) if err.is_erased() => {}
        other => panic!("{what}: expected an erased error, got {other:?}"),
    }
}

#[test]
fn a_visitor_may_erase_the_subject_it_scans_and_is_handed_nothing_after() {
    for_each_backend(|store| {
        // A blinded class and an ordered one.
        for class in [MESSAGES, INVOICES] {
            let db = Arc::new(store.open());
            let subject = format!("acct-{class}");
            db.register_account(&subject).expect("register");
            fill(&db, &subject, &[class]);
            let scanning = Arc::clone(&db);
            let (result, visited) = within_a_minute("scan_with shredding its subject", move || {
                let mut visited = 0u32;
                let result = scanning.scan_with(&subject, class, &mut |_| {
                    visited += 1;
                    if visited == 1 {
                        scanning
                            .shred(&subject, Classes::All)
                            .expect("shred from the visitor");
                    }
                    ControlFlow::Continue(())
                });
                (result, visited)
            });
            assert_erased(
                result,
                &format!("scan_with of {class} on {}", store.backend()),
            );
            assert_eq!(
                visited,
                1,
                "{class} on {}: records handed out after the shred returned",
                store.backend()
            );
        }
    });
}

#[test]
fn a_slow_visitor_holds_up_no_erasure_and_sees_nothing_it_erased() {
    for_each_backend(|store| {
        let db = Arc::new(store.open());
        db.register_account("acct").expect("register");
        fill(&db, "acct", &[MESSAGES]);
        let (started, visitor_started) = mpsc::channel();
        let (erased, erasure_returned) = mpsc::channel::<()>();
        let scanning = Arc::clone(&db);
        let scan = std::thread::spawn(move || {
            let mut visited = 0u32;
            let result = scanning.scan_with("acct", MESSAGES, &mut |_| {
                visited += 1;
                if visited == 1 {
                    started.send(()).expect("main thread listens");
                    // Stays inside the visitor until the other thread's
                    // shred returned (or gives up after a minute).
                    let _ = erasure_returned.recv_timeout(Duration::from_secs(60));
                }
                ControlFlow::Continue(())
            });
            (result, visited)
        });
        visitor_started
            .recv_timeout(Duration::from_secs(60))
            .expect("the visitor starts");
        let shredding = Arc::clone(&db);
        within_a_minute("a shred while a visitor runs", move || {
            shredding.shred("acct", Classes::All).expect("shred");
        });
        erased.send(()).expect("the visitor waits");
        let (result, visited) = scan.join().expect("the scan thread");
        assert_erased(result, &format!("scan_with on {}", store.backend()));
        assert_eq!(
            visited,
            1,
            "{}: records handed out after the shred returned",
            store.backend()
        );
    });
}

#[test]
fn the_record_iterator_hands_out_nothing_after_an_erasure_of_its_class() {
    for_each_backend(|store| {
        let db = store.open();
        db.register_account("acct").expect("register");
        fill(&db, "acct", &[MESSAGES, INVOICES]);
        let mut messages = db.records("acct", MESSAGES, ScanOptions::all());
        let mut invoices = db.records("acct", INVOICES, ScanOptions::all());
        assert!(matches!(messages.next(), Some(Ok(_))));
        assert!(matches!(invoices.next(), Some(Ok(_))));
        db.shred("acct", Classes::Only(&[MESSAGES]))
            .expect("shred messages");
        match messages.next() {
            Some(Err(err)) if err.is_erased() => {}
            other => panic!(
                "{}: the iterator gave {other:?} after its class was erased",
                store.backend()
            ),
        }
        assert!(
            messages.next().is_none(),
            "the iterator ends after its error"
        );
        // The class not erased reads on, every record once.
        let rest = invoices
            .collect::<Result<Vec<_>, Error>>()
            .expect("invoices read on");
        assert_eq!(rest.len(), RECORDS as usize - 1);
    });
}

/// An iterator holds a page of `acct`'s messages while `erase_and_register`
/// erases them and registers them again, and a new record is written: the
/// page in hand must not come back to life, and (where `read_again`) a new
/// read sees only the new record.
fn page_in_hand_stays_erased(
    read_again: bool,
    erase_and_register: impl Fn(&shredkv_tests::Store, &Db),
) {
    for_each_backend(|store| {
        let db = store.open();
        db.register_account("acct").expect("register");
        fill(&db, "acct", &[MESSAGES]);
        let mut messages = db.records("acct", MESSAGES, ScanOptions::all());
        assert!(matches!(messages.next(), Some(Ok(_))));
        erase_and_register(store, &db);
        db.put("acct", MESSAGES, b"new", b"after")
            .expect("a new record");
        match messages.next() {
            Some(Err(err)) if err.is_erased() => {}
            other => panic!(
                "{}: the iterator gave {other:?} from before the erasure",
                store.backend()
            ),
        }
        if read_again {
            let now: Vec<_> = db.scan("acct", MESSAGES).expect("scan");
            assert_eq!(now.len(), 1);
            assert_eq!(now[0].value, b"after");
        }
    });
}

#[test]
fn a_class_erased_and_registered_again_does_not_revive_the_page_in_hand() {
    page_in_hand_stays_erased(true, |_, db| {
        db.shred("acct", Classes::Only(&[MESSAGES]))
            .expect("shred messages");
        db.re_register_class("acct", MESSAGES)
            .expect("register the class again");
    });
}

#[test]
fn a_clock_jumping_back_does_not_revive_the_page_in_hand() {
    // The clock runs back an hour before the erasure. The store's time
    // stands still (clock_set_back.rs), and the page in hand must end
    // without any time compared.
    page_in_hand_stays_erased(false, |store, db| {
        store.clock().advance(SignedDuration::from_hours(-1));
        db.shred("acct", Classes::Only(&[MESSAGES]))
            .expect("shred messages");
        db.re_register_class("acct", MESSAGES)
            .expect("register the class again");
    });
}

#[test]
fn a_subject_erased_and_registered_again_does_not_revive_the_page_in_hand() {
    page_in_hand_stays_erased(true, |_, db| {
        db.shred("acct", Classes::All).expect("shred");
        db.re_register("acct").expect("register the subject again");
    });
}

#[test]
fn a_streamed_export_stops_at_an_erasure_made_by_its_visitor() {
    for_each_backend(|store| {
        let db = Arc::new(store.open());
        let account = db.register_account("acct").expect("register");
        let user = db.register_end_user("user", "acct").expect("register");
        fill(&db, "acct", &[PROFILE]);
        fill(&db, "user", &[MESSAGES]);
        let exporting = Arc::clone(&db);
        let (result, of_account, of_user) = within_a_minute("export_with shredding", move || {
            let (mut of_account, mut of_user) = (0u32, 0u32);
            let result = exporting.export_with("acct", &mut |tag, _, _| {
                if tag == account {
                    of_account += 1;
                } else if tag == user {
                    of_user += 1;
                    if of_user == 1 {
                        exporting
                            .shred("user", Classes::All)
                            .expect("shred the end user");
                    }
                }
                ControlFlow::Continue(())
            });
            (result, of_account, of_user)
        });
        result.expect("the export ends normally");
        assert_eq!(
            of_account,
            RECORDS,
            "{}: the account's records",
            store.backend()
        );
        assert_eq!(
            of_user,
            1,
            "{}: end user records exported after the end user's shred returned",
            store.backend()
        );
    });
}

#[test]
fn a_rekey_while_a_page_is_in_hand_is_no_erasure() {
    for_each_backend(|store| {
        let db = store.open();
        db.register_account("acct").expect("register");
        fill(&db, "acct", &[MESSAGES]);
        // An overwrite owes a re-key of the key version that sealed it: the
        // pass re-seals the scope's records under a new version and destroys
        // the old one, which opened the page in hand.
        db.put("acct", MESSAGES, &key(0), b"rewritten")
            .expect("overwrite");
        let mut messages = db.records("acct", MESSAGES, ScanOptions::all());
        assert!(matches!(messages.next(), Some(Ok(_))));
        store.clock().advance(SignedDuration::from_hours(24 * 30));
        let report = db.compact().expect("compact");
        assert!(
            report.buckets_rekeyed > 0,
            "{}: {report:?}",
            store.backend()
        );
        let rest = messages
            .collect::<Result<Vec<_>, Error>>()
            .expect("the page in hand reads on");
        assert_eq!(rest.len(), RECORDS as usize - 1, "{}", store.backend());
    });
}

/// A clock that, at its `trigger`-th reading, asks another thread to erase a
/// subject and waits up to two seconds for that erasure to return: an
/// erasure placed inside a read, between two of its steps. The engine reads
/// the clock at a few steps of every read, so the test tries each of the
/// first readings in turn.
#[derive(Debug)]
struct ErasingClock {
    at: shredkv::jiff::Timestamp,
    readings: std::sync::atomic::AtomicU64,
    trigger: std::sync::atomic::AtomicU64,
    /// Taken once the read is over, so an eraser never asked stops waiting.
    ask: std::sync::Mutex<Option<mpsc::Sender<()>>>,
    erased: std::sync::Mutex<mpsc::Receiver<()>>,
    /// Whether the erasure returned while the clock waited for it.
    returned_inside: std::sync::atomic::AtomicBool,
}

impl shredkv::Clock for ErasingClock {
    fn now(&self) -> shredkv::jiff::Timestamp {
        use std::sync::atomic::Ordering::SeqCst;
        if self.readings.fetch_add(1, SeqCst) == self.trigger.load(SeqCst) {
            if let Some(ask) = self.ask.lock().expect("ask").as_ref() {
                let _ = ask.send(());
            }
            let erased = self.erased.lock().expect("erased");
            if erased.recv_timeout(Duration::from_secs(2)).is_ok() {
                self.returned_inside.store(true, SeqCst);
            }
        }
        self.at
    }
}

#[test]
fn a_class_page_leaves_out_a_subject_erased_before_it_returned() {
    use std::sync::atomic::Ordering::SeqCst;
    for_each_backend(|store| {
        let mut exercised = 0;
        for trigger in 0..8u64 {
            let (ask, asked) = mpsc::channel();
            let (erased, erasure_returned) = mpsc::channel();
            let clock = Arc::new(ErasingClock {
                at: shredkv::jiff::Timestamp::from_second(shredkv_tests::START_SECONDS)
                    .expect("time"),
                readings: 0.into(),
                trigger: u64::MAX.into(),
                ask: std::sync::Mutex::new(Some(ask)),
                erased: std::sync::Mutex::new(erasure_returned),
                returned_inside: false.into(),
            });
            let fresh = shredkv_tests::Store::new(store.backend());
            let db = Arc::new(Db::open(fresh.config().clock(clock.clone())).expect("open"));
            // Two accounts on different gate stripes, `first` before `second`
            // in the class scan's order (by subject tag).
            let names: Vec<String> = (0..64).map(|n| format!("acct-{n}")).collect();
            let (first, second) = names
                .iter()
                .flat_map(|a| names.iter().map(move |b| (a, b)))
                .find(|(a, b)| {
                    db.subject_tag(a) < db.subject_tag(b)
                        && shredkv::internal::gate_stripe(&db, a)
                            != shredkv::internal::gate_stripe(&db, b)
                })
                .map(|(a, b)| (a.clone(), b.clone()))
                .expect("two accounts on two stripes");
            for subject in [&first, &second] {
                db.register_account(subject).expect("register");
                for n in 0..3 {
                    db.put(subject, MESSAGES, &key(n), b"v").expect("put");
                }
            }
            let eraser = {
                let (db, first) = (Arc::clone(&db), first.clone());
                std::thread::spawn(move || {
                    if asked.recv_timeout(Duration::from_secs(60)).is_ok() {
                        db.shred(&first, Classes::All).expect("shred");
                        let _ = erased.send(());
                    }
                })
            };
            clock
                .trigger
                .store(clock.readings.load(SeqCst) + trigger, SeqCst);
            let page = db.scan_class_page(MESSAGES, None, 100).expect("class page");
            clock.trigger.store(u64::MAX, SeqCst);
            drop(clock.ask.lock().expect("ask").take());
            let first_tag = db.subject_tag(&first);
            let of_first = page.records.iter().filter(|(t, _)| *t == first_tag).count();
            if clock.returned_inside.load(SeqCst) {
                exercised += 1;
                assert_eq!(
                    of_first,
                    0,
                    "{}, reading {trigger}: the page holds records of a subject whose shred returned before it",
                    store.backend()
                );
            }
            let of_second = page.records.len() - of_first;
            assert_eq!(
                of_second,
                3,
                "{}: the other subject's records",
                store.backend()
            );
            drop(db);
            eraser.join().expect("eraser");
        }
        assert!(exercised > 0, "no erasure returned inside the class scan");
    });
}
