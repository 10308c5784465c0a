//! Paged scans and the record iterator, on both backends, checked against
//! a model kept by the test (a sorted map of what it wrote): every page of
//! an ordered class comes in key order with no record twice or missing,
//! for every page size; reverse, prefix and range select exactly what the
//! model says; expired records are skipped without shortening a page below
//! its limit while more remain; a blinded class pages through each record
//! exactly once and refuses ranges; a cursor of another scope is refused;
//! the iterator yields what `scan` returns.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use shredkv::jiff::SignedDuration;
use shredkv::{Cursor, Db, Error, PutOptions, ScanOptions};
use shredkv_tests::{INVOICES, MESSAGES, for_each_backend};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn key(n: u32) -> Vec<u8> {
    format!("k{n:05}").into_bytes()
}

/// Every record of the selection, page by page of `limit`.
fn paged(db: &Db, class: &str, options: &ScanOptions, limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut after: Option<Cursor> = None;
    loop {
        let page = db
            .scan_page("acct", class, options, after.as_ref(), limit)
            .expect("page");
        assert!(page.records.len() <= limit);
        if page.next.is_some() {
            assert_eq!(
                page.records.len(),
                limit,
                "a page short of its limit must be the last"
            );
        }
        out.extend(page.records.into_iter().map(|r| (r.key, r.value)));
        match page.next {
            Some(next) => after = Some(next),
            None => return out,
        }
    }
}

fn expect(model: &Model, keep: impl Fn(&[u8]) -> bool, reverse: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<_> = model
        .iter()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if reverse {
        out.reverse();
    }
    out
}

#[test]
fn ordered_pages_match_the_model_for_every_selection_and_page_size() {
    for_each_backend(|store| {
        let db = store.open();
        db.register_account("acct").expect("register");
        db.register_account("other").expect("register");
        let mut model = Model::new();
        for n in 0..600u32 {
            let value = format!("v{n}").into_bytes();
            db.put("acct", INVOICES, &key(n), &value).expect("put");
            model.insert(key(n), value);
            db.put("other", INVOICES, &key(n), b"not acct's")
                .expect("put");
        }
        for n in (0..600u32).step_by(7) {
            db.delete("acct", INVOICES, &key(n)).expect("delete");
            model.remove(&key(n));
        }
        for limit in [1, 7, 256, 257, 1000] {
            assert_eq!(
                paged(&db, INVOICES, &ScanOptions::all(), limit),
                expect(&model, |_| true, false)
            );
            assert_eq!(
                paged(&db, INVOICES, &ScanOptions::all().reversed(), limit),
                expect(&model, |_| true, true)
            );
        }
        let prefix = ScanOptions::prefix(b"k001".to_vec());
        assert_eq!(
            paged(&db, INVOICES, &prefix, 9),
            expect(&model, |k| k.starts_with(b"k001"), false)
        );
        assert_eq!(
            paged(&db, INVOICES, &prefix.clone().reversed(), 9),
            expect(&model, |k| k.starts_with(b"k001"), true)
        );
        let range = ScanOptions::range(key(100), key(250));
        let in_range = |k: &[u8]| k >= key(100).as_slice() && k < key(250).as_slice();
        assert_eq!(
            paged(&db, INVOICES, &range, 13),
            expect(&model, in_range, false)
        );
        assert_eq!(
            paged(&db, INVOICES, &range.clone().reversed(), 13),
            expect(&model, in_range, true)
        );
        // The iterator agrees with scan, which agrees with the model.
        let iterated: Vec<_> = db
            .records("acct", INVOICES, ScanOptions::all())
            .map(|r| r.map(|r| (r.key, r.value)))
            .collect::<Result<_, _>>()
            .expect("iterate");
        let scanned: Vec<_> = db
            .scan("acct", INVOICES)
            .expect("scan")
            .into_iter()
            .map(|r| (r.key, r.value))
            .collect();
        assert_eq!(iterated, scanned);
        assert_eq!(iterated, expect(&model, |_| true, false));
        // "The latest 3": one reverse page.
        let latest = db
            .scan_page("acct", INVOICES, &ScanOptions::all().reversed(), None, 3)
            .expect("page");
        let latest: Vec<_> = latest.records.into_iter().map(|r| r.key).collect();
        assert_eq!(latest, vec![key(599), key(598), key(597)]);
    });
}

#[test]
fn expired_records_are_skipped_and_pages_stay_full() {
    for_each_backend(|store| {
        let db = store.open();
        db.register_account("acct").expect("register");
        let soon = db.now() + SignedDuration::from_hours(1);
        let mut live = BTreeSet::new();
        for n in 0..300u32 {
            if n % 3 == 0 {
                db.put("acct", MESSAGES, &key(n), b"v").expect("put");
                live.insert(key(n));
            } else {
                db.put_with(
                    "acct",
                    MESSAGES,
                    &key(n),
                    b"v",
                    PutOptions::expires_at(soon),
                )
                .expect("put");
            }
        }
        store.clock().advance(SignedDuration::from_hours(2));
        let records = paged(&db, MESSAGES, &ScanOptions::all(), 10);
        let keys: BTreeSet<_> = records.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys.len(), records.len(), "no record twice");
        assert_eq!(keys, live, "every live record once, no expired one");
    });
}

#[test]
fn blinded_classes_page_without_order_and_refuse_ranges() {
    for_each_backend(|store| {
        let db = store.open();
        db.register_account("acct").expect("register");
        let mut written = BTreeSet::new();
        for n in 0..500u32 {
            db.put("acct", MESSAGES, &key(n), b"v").expect("put");
            written.insert(key(n));
        }
        for limit in [1, 10, 499, 500, 501] {
            let records = paged(&db, MESSAGES, &ScanOptions::all(), limit);
            let keys: BTreeSet<_> = records.iter().map(|(k, _)| k.clone()).collect();
            assert_eq!(keys.len(), records.len(), "no record twice (limit {limit})");
            assert_eq!(keys, written, "every record (limit {limit})");
        }
        for options in [
            ScanOptions::prefix(b"k".to_vec()),
            ScanOptions::range(key(1), key(2)),
            ScanOptions::all().reversed(),
        ] {
            match db.scan_page("acct", MESSAGES, &options, None, 10) {
                Err(Error::InvalidArgument { detail, .. }) => {
                    assert!(detail.contains("keys = \"ordered\""), "{detail}");
                }
                other => panic!("{options:?}: expected a refusal, got {other:?}"),
            }
        }
        // A cursor of another scope, and page sizes out of range.
        let page = db
            .scan_page("acct", MESSAGES, &ScanOptions::all(), None, 5)
            .expect("page");
        let cursor = page.next.expect("more");
        assert!(matches!(
            db.scan_page("acct", INVOICES, &ScanOptions::all(), Some(&cursor), 5),
            Err(Error::InvalidArgument { what: "cursor", .. })
        ));
        for limit in [0, shredkv::MAX_PAGE + 1] {
            assert!(matches!(
                db.scan_page("acct", MESSAGES, &ScanOptions::all(), None, limit),
                Err(Error::InvalidArgument {
                    what: "page size",
                    ..
                })
            ));
        }
        // A cursor survives a reopen.
        let bytes = cursor.as_bytes().to_vec();
        drop(db);
        let db = store.open();
        let rest = db
            .scan_page(
                "acct",
                MESSAGES,
                &ScanOptions::all(),
                Some(&Cursor::from_bytes(bytes)),
                1000,
            )
            .expect("resume");
        assert_eq!(rest.records.len(), 495);
    });
}

/// A class read across subjects, page by page, against the model: every
/// readable subject's records once, none of an erased or restricted
/// subject, none of another class; for every page size.
#[test]
fn a_class_pages_across_subjects() {
    for_each_backend(|store| {
        let db = store.open();
        let mut model: BTreeSet<(shredkv::SubjectTag, Vec<u8>)> = BTreeSet::new();
        for s in 0..40u32 {
            let subject = format!("subject-{s}");
            db.register_account(&subject).expect("register");
            for n in 0..(s % 7) {
                db.put(&subject, MESSAGES, &key(n), b"v").expect("put");
                db.put(&subject, INVOICES, &key(n), b"other class")
                    .expect("put");
                model.insert((db.subject_tag(&subject), key(n)));
            }
        }
        for (s, how) in [(3u32, "restrict"), (12, "shred"), (13, "shred")] {
            let subject = format!("subject-{s}");
            match how {
                "restrict" => db.restrict(&subject).expect("restrict"),
                _ => drop(db.shred(&subject, shredkv::Classes::All).expect("shred")),
            }
            let tag = db.subject_tag(&subject);
            model.retain(|(t, _)| *t != tag);
        }
        for limit in [1, 2, 5, 6, 7, 100, 1000] {
            let mut seen = Vec::new();
            let mut after: Option<Cursor> = None;
            loop {
                let page = db
                    .scan_class_page(MESSAGES, after.as_ref(), limit)
                    .expect("page");
                assert!(page.records.len() <= limit);
                seen.extend(page.records.into_iter().map(|(tag, r)| (tag, r.key)));
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            let unique: BTreeSet<_> = seen.iter().cloned().collect();
            assert_eq!(unique.len(), seen.len(), "no record twice (limit {limit})");
            assert_eq!(unique, model, "limit {limit}");
        }
        let page = db
            .scan_page("subject-6", MESSAGES, &ScanOptions::all(), None, 1)
            .expect("page");
        assert!(matches!(
            db.scan_class_page(MESSAGES, page.next.as_ref(), 5),
            Err(Error::InvalidArgument { what: "cursor", .. })
        ));
    });
}

/// The streamed export yields exactly what `export` returns (subject by
/// subject, class by class; within a class in any order), and stops when
/// told to.
#[test]
fn the_streamed_export_matches_the_export() {
    for_each_backend(|store| {
        let db = store.open();
        db.register_account("acct").expect("register");
        db.register_end_user("user", "acct").expect("register");
        for n in 0..30u32 {
            db.put("acct", INVOICES, &key(n), b"invoice").expect("put");
            db.put("user", MESSAGES, &key(n), b"message").expect("put");
        }
        let mut streamed = BTreeSet::new();
        db.export_with("acct", &mut |tag, class, record| {
            streamed.insert((
                tag,
                class.to_string(),
                record.key.to_vec(),
                record.value.to_vec(),
            ));
            std::ops::ControlFlow::Continue(())
        })
        .expect("export");
        let mut whole = BTreeSet::new();
        for subject in db.export("acct").expect("export").subjects {
            for (class, records) in subject.classes {
                for record in records {
                    whole.insert((subject.tag, class.clone(), record.key, record.value));
                }
            }
        }
        assert_eq!(streamed.len(), 60);
        assert_eq!(streamed, whole);
        let mut taken = 0;
        db.export_with("acct", &mut |_, _, _| {
            taken += 1;
            if taken == 5 {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
        .expect("export");
        assert_eq!(taken, 5);
    });
}

/// Skipping applies to subjects a read would refuse, never to damage: a
/// class scan over a subject whose record is damaged fails, naming it.
#[test]
fn a_class_scan_reports_a_damaged_subject_instead_of_skipping_it() {
    for_each_backend(|store| {
        let db = store.open();
        for s in ["s1", "s2"] {
            db.register_account(s).expect("register");
            db.put(s, MESSAGES, b"k", b"v").expect("put");
        }
        let tag = db.subject_tag("s2").0;
        shredkv_tests::close(db);
        let subjects = common::raw_read(store, "subjects");
        let (k, mut v) = subjects
            .into_iter()
            .find(|(k, _)| k.len() == 17 && k[1..] == tag)
            .expect("s2's record");
        v[1] ^= 0x01;
        common::raw_write(store, "subjects", &common::Raw::from([(k, v)]));
        let db = store.open();
        let err = db
            .scan_class_page(MESSAGES, None, 100)
            .expect_err("damage is reported");
        assert!(err.is_integrity_failure(), "{err}");
    });
}
