//! Writers racing for one record key leave no overwritten ciphertext
//! without a re-key debt (G2: an overwritten value is purged within the
//! purge window). For each of many subjects, four threads released together
//! write the same new record key; one value survives, the other three are
//! dead ciphertext under the subject's first data key, so every subject's
//! key must owe a re-key. On sled and redb.

use std::sync::Barrier;
use std::thread;

use shredkv::Db;
use shredkv_tests::{MESSAGES, for_each_backend};

const SUBJECTS: usize = 60;
const WRITERS: u8 = 4;

/// Four writers put the same new key of `subject` at once; returns the
/// values they wrote.
fn race(db: &Db, subject: &str) -> Vec<Vec<u8>> {
    let barrier = Barrier::new(usize::from(WRITERS));
    let values: Vec<Vec<u8>> = (0..WRITERS).map(|w| vec![w; 32]).collect();
    thread::scope(|scope| {
        for value in &values {
            let barrier = &barrier;
            scope.spawn(move || {
                barrier.wait();
                db.put(subject, MESSAGES, b"raced", value).expect("put");
            });
        }
    });
    values
}

#[test]
fn racing_writers_of_one_key_leave_a_rekey_debt() {
    for_each_backend(|store| {
        let db = store.open();
        for s in 0..SUBJECTS {
            let subject = format!("acct-{s:03}");
            db.register_account(&subject).expect("register");
            let written = race(&db, &subject);
            let stored = db
                .get(&subject, MESSAGES, b"raced")
                .expect("get")
                .expect("one writer's value survives");
            assert!(written.contains(&stored), "{subject}: a written value");
        }
        let debts = db.stats().expect("stats").rekey_debts;
        assert_eq!(
            debts,
            u64::try_from(SUBJECTS).expect("small"),
            "{}: every subject's key holds overwritten ciphertext and must owe a re-key",
            store.backend()
        );
    });
}
