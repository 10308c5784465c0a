//! The `serde` feature: every report a `Db` hands back serializes to JSON
//! and reads back equal, built from real sessions (not hand-made values),
//! on both backends; the JSON field names of receipts and certificates are
//! pinned, so a rename is a failing test rather than a silent break of
//! every consumer; subject tags are hex; and malformed input is refused
//! with an error that says what was expected.

mod common;

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use shredkv::jiff::{SignedDuration, Timestamp};
use shredkv::{
    AuditEvent, ChainBreak, Classes, Db, ErasureReason, ErasureSource, LossReason, OverduePurge,
    ProblemKind, PurgeStatus, RestoreOptions, SubjectKind, SubjectState, SubjectTag,
};
use shredkv_tests::{INVOICES, MESSAGES, PROFILE, Store, close, for_each_backend};

const DAY: SignedDuration = SignedDuration::from_hours(24);

/// A value that is not UTF-8: its JSON is base64.
const BINARY: &[u8] = &[0xff, 0x00, 0x9f, 0x92, 0x96];

/// Serializes `value`, reads it back (from the text, and from a
/// `serde_json::Value` as the CLI builds it), checks both equal `value`,
/// and returns the JSON.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(what: &str, value: &T) -> Value {
    let text = serde_json::to_string(value).unwrap_or_else(|e| panic!("serialize {what}: {e}"));
    let back: T = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("deserialize {what} from {text}: {e}"));
    assert_eq!(&back, value, "{what} came back different from {text}");
    let doc = serde_json::to_value(value).unwrap_or_else(|e| panic!("{what} to a value: {e}"));
    let back: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("deserialize {what} from a value {doc}: {e}"));
    assert_eq!(&back, value, "{what} came back different from {doc}");
    doc
}

/// Round-trips each of `values`, naming each by its position.
fn round_trip_all<T: Serialize + DeserializeOwned + PartialEq + Debug>(what: &str, values: &[T]) {
    assert!(!values.is_empty(), "the session made no {what}");
    for (i, value) in values.iter().enumerate() {
        round_trip(&format!("{what} #{i}"), value);
    }
}

/// The field names of a JSON object, sorted.
fn fields(doc: &Value) -> Vec<&str> {
    let mut names: Vec<&str> = doc
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {doc}"))
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    names
}

fn sorted(mut names: Vec<&str>) -> Vec<&str> {
    names.sort_unstable();
    names
}

fn is_hex(doc: &Value, digits: usize) -> bool {
    doc.as_str().is_some_and(|s| {
        s.len() == digits
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn is_time(doc: &Value) -> bool {
    doc.as_str()
        .is_some_and(|s| s.ends_with('Z') && s.parse::<Timestamp>().is_ok())
}

/// An account with an end user, records in three classes (one not UTF-8,
/// one with an expiry), and a legal hold on the account's invoices.
fn populate(db: &Db) {
    db.register_account("acct").expect("register");
    db.register_end_user("user", "acct").expect("register");
    db.put("acct", PROFILE, b"email", b"ops@example.com")
        .expect("put");
    db.put("acct", INVOICES, b"inv-1", b"1200 EUR")
        .expect("put");
    db.put_with(
        "user",
        MESSAGES,
        BINARY,
        BINARY,
        shredkv::PutOptions::expires_at(db.now() + DAY * 7),
    )
    .expect("put");
    db.place_hold("acct", Some(INVOICES), "case TAX-7")
        .expect("hold");
}

#[test]
fn every_report_of_a_session_round_trips_through_json() {
    for_each_backend(|store| {
        let db = store.open();
        populate(&db);
        db.register_account("other").expect("register");
        db.put("other", PROFILE, b"k", b"v").expect("put");
        db.register_account("restricted").expect("register");
        db.restrict("restricted").expect("restrict");

        let text = db
            .get_record("acct", PROFILE, b"email")
            .expect("get")
            .expect("a record");
        let binary = db
            .get_record("user", MESSAGES, BINARY)
            .expect("get")
            .expect("a record");
        assert!(binary.expires_at.is_some());
        round_trip("a text record", &text);
        let doc = round_trip("a binary record", &binary);
        assert_eq!(doc["value_encoding"], "base64", "{doc}");

        let export = db.export("acct").expect("export");
        assert_eq!(export.subjects.len(), 2, "the account and its end user");
        let doc = round_trip("an export", &export);
        assert_eq!(doc["subjects"][1]["kind"], "end_user", "{doc}");
        // Classes stay in policy order: a list, not a map.
        let classes: Vec<&Value> = doc["subjects"][0]["classes"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|c| &c["class"])
            .collect();
        assert_eq!(classes, [INVOICES, PROFILE], "{doc}");

        let subjects = db.subjects().expect("subjects");
        round_trip_all("subject info", &subjects);
        for state in [
            SubjectState::Active,
            SubjectState::Restricted,
            SubjectState::Erased,
        ] {
            round_trip("a subject state", &state);
        }
        for kind in [SubjectKind::Account, SubjectKind::EndUser] {
            round_trip("a subject kind", &kind);
        }
        round_trip_all("hold", &db.holds().expect("holds"));
        round_trip_all(
            "scheduled erasure",
            &db.close_account("other").expect("close"),
        );

        // Erasure: everything of the account but its held invoices.
        let receipt = db.shred("acct", Classes::All).expect("shred");
        assert!(!receipt.erased.is_empty() && !receipt.retained.is_empty());
        round_trip("a receipt", &receipt);
        round_trip("an audit head", &receipt.audit_head);
        round_trip("an erasure reason", &receipt.reason);
        let pending = db.certificate("user").expect("certificate");
        assert!(matches!(pending.status, PurgeStatus::Pending { .. }));
        round_trip("a pending certificate", &pending);

        round_trip("statistics", &db.stats().expect("stats"));
        round_trip("an integrity report", &db.verify().expect("verify"));
        round_trip("an audit chain report", &db.verify_audit().expect("verify"));
        let entries = db.audit_entries(1, usize::MAX).expect("audit");
        round_trip_all("audit entry", &entries);

        // A day later the epoch rotates; after the purge window the epoch
        // that wrapped the destroyed keys is gone: the purge is complete.
        store.clock().advance(DAY);
        round_trip("a compaction report", &db.compact().expect("compact"));
        round_trip("an epoch report", &db.rotate_epoch().expect("rotate"));
        store.clock().advance(DAY * 30);
        db.compact().expect("compact");
        let complete = db.certificate("user").expect("certificate");
        assert!(complete.is_complete(), "{complete}");
        round_trip("a complete certificate", &complete);

        let elsewhere = tempfile::tempdir().expect("temp dir");
        let backup = elsewhere.path().join("backup");
        round_trip("a backup report", &db.backup(&backup).expect("backup"));
        let (_restored, report) = Db::restore(
            &backup,
            store.config_at(&elsewhere.path().join("restored")),
            ErasureSource::Live(&db),
        )
        .expect("restore");
        round_trip("a restore report", &report);
    });
}

/// A damaged record: the integrity report names it (problem, kind,
/// location with its tree), and all of it reads back.
#[test]
fn an_integrity_report_with_problems_round_trips() {
    for_each_backend(|store| {
        let db = store.open();
        db.register_account("a").expect("register");
        db.put("a", INVOICES, b"inv-1", b"a value long enough to damage")
            .expect("put");
        close(db);
        let mut data = common::raw_read(store, "data");
        for value in data.values_mut() {
            let last = value.len() - 1;
            value[last] ^= 0x01; // the CRC: corrupt
        }
        common::raw_write(store, "data", &data);

        let report = store.open().verify().expect("verify");
        assert!(!report.is_clean());
        let doc = round_trip("a damaged store's report", &report);
        let problem = &doc["problems"][0];
        assert_eq!(problem["kind"], "corrupt", "{doc}");
        assert_eq!(problem["location"]["tree"], "data", "{doc}");
        assert!(is_hex(&problem["location"]["subject"], 32), "{doc}");
        assert!(problem["location"]["key"].is_string(), "{doc}");
        round_trip("a problem kind", &ProblemKind::Tampered);
    });
}

/// A restore that loses records (a re-key after the backup destroyed their
/// key version) lists them; the list reads back.
#[test]
fn a_restore_report_with_lost_records_round_trips() {
    let store = Store::new(shredkv::Backend::Redb);
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let live = store.open();
    live.register_account("a").expect("register");
    live.put("a", PROFILE, b"still-live", b"kept").expect("put");
    live.put("a", PROFILE, b"deleted", b"gone").expect("put");
    assert!(live.delete("a", PROFILE, b"deleted").expect("delete"));
    let next_day = || {
        store.clock().advance(DAY);
        live.compact().expect("compact");
    };
    for _ in 0..5 {
        next_day();
    }
    let backup = elsewhere.path().join("backup");
    live.backup(&backup).expect("backup");
    let tag = live.subject_tag("a");
    let mut days = 0;
    while !live
        .audit_entries(1, usize::MAX)
        .expect("audit")
        .iter()
        .any(|e| e.event == AuditEvent::Rekeyed && e.subject == Some(tag))
    {
        days += 1;
        assert!(days <= 60, "no re-key within 60 days");
        next_day();
    }
    let (_restored, report) = Db::restore_with(
        &backup,
        store.config_at(&elsewhere.path().join("restored")),
        ErasureSource::Live(&live),
        RestoreOptions::default().accept_lost_records(true),
    )
    .expect("restore accepting the loss");
    assert_eq!(report.lost.len(), 1, "{report:?}");
    let doc = round_trip("a restore report with losses", &report);
    assert_eq!(
        doc["lost"][0],
        json!({
            "subject": tag.to_hex(),
            "class": PROFILE,
            "records": 1,
            "reason": "rekeyed-after-backup",
        })
    );
    round_trip("a loss reason", &LossReason::RekeyedAfterBackup);
}

/// What a session cannot easily produce: every shape of chain break, every
/// erasure reason, and overdue purge work with epochs (a store whose
/// maintenance stopped).
#[test]
fn chain_breaks_reasons_and_overdue_epochs_round_trip() {
    let reasons = [
        ErasureReason::DeletionRequest,
        ErasureReason::Operator,
        ErasureReason::RetentionExpired,
        ErasureReason::Underage,
        ErasureReason::ClassRemoved,
    ];
    for reason in reasons {
        assert_eq!(
            round_trip("an erasure reason", &reason),
            json!(reason.name())
        );
    }

    let breaks = [
        ChainBreak::Corrupt {
            seq: 3,
            detail: "bad CRC".into(),
        },
        ChainBreak::Edited { seq: 4 },
        ChainBreak::Downgraded { seq: 5 },
        ChainBreak::Unverifiable { seq: 6 },
        ChainBreak::Broken {
            seq: 8,
            expected_seq: 7,
        },
    ];
    round_trip_all("chain break", &breaks);
    assert_eq!(
        serde_json::to_value(&breaks[4]).expect("serialize"),
        json!({"kind": "broken", "seq": 8, "expected_seq": 7})
    );

    let due = Timestamp::from_second(1_800_000_000).expect("time");
    let mut overdue = OverduePurge::default();
    overdue.items = 2;
    overdue.oldest_item = Some(due);
    overdue.epochs = vec![(1, due), (2, due + DAY)];
    let doc = round_trip("overdue purge work", &overdue);
    assert_eq!(
        doc["epochs"][0],
        json!({"epoch": 1, "due": "2027-01-15T08:00:00Z"})
    );
}

/// The JSON field names of a receipt and a certificate are part of the API
/// (the CLI prints them, scripts read them): a rename must fail here.
#[test]
fn receipt_and_certificate_field_names_are_pinned() {
    let store = Store::new(shredkv::Backend::Redb);
    let db = store.open();
    populate(&db);
    let receipt = db.shred("acct", Classes::All).expect("shred");
    let doc = serde_json::to_value(&receipt).expect("serialize");
    assert_eq!(
        fields(&doc),
        sorted(vec![
            "subject",
            "erased_at",
            "reason",
            "erased",
            "retained",
            "audit_head"
        ])
    );
    assert!(is_hex(&doc["subject"], 32), "{doc}");
    assert!(is_time(&doc["erased_at"]), "{doc}");
    assert_eq!(doc["reason"], "operator");
    assert_eq!(fields(&doc["audit_head"]), ["hash", "seq"]);
    assert!(is_hex(&doc["audit_head"]["hash"], 64), "{doc}");
    let erased = &doc["erased"][0];
    assert_eq!(fields(erased), ["class", "keys_destroyed", "subject"]);
    assert_eq!(
        fields(&doc["retained"][0]),
        ["class", "reason", "subject", "until"]
    );
    assert_eq!(doc["retained"][0]["class"], INVOICES, "{doc}");
    assert_eq!(
        doc["retained"][0]["until"],
        Value::Null,
        "a hold has no end"
    );

    let certificate = db.certificate("acct").expect("certificate");
    let doc = serde_json::to_value(&certificate).expect("serialize");
    assert_eq!(
        fields(&doc),
        sorted(vec![
            "subject_tag",
            "store_id",
            "tool",
            "issued_at",
            "method",
            "key_provider",
            "erasures",
            "keys_destroyed",
            "keys_live_in_erased_scopes",
            "dead_records_remaining",
            "epochs_still_live",
            "requested_at",
            "audit_head",
            "verification",
            "purge_status",
            "pending",
            "purge_due_by",
        ])
    );
    assert_eq!(doc["subject_tag"], db.subject_tag("acct").to_hex());
    assert_eq!(doc["purge_status"], "pending");
    assert!(is_time(&doc["purge_due_by"]), "{doc}");
    assert_eq!(
        fields(&doc["erasures"][0]),
        ["class", "epoch", "erased_at", "keys_destroyed", "reason"]
    );
    // A complete purge has no pending steps nor a due date.
    let complete = serde_json::to_value(PurgeStatus::Complete).expect("serialize");
    assert_eq!(complete, json!({"purge_status": "complete"}));
}

/// A record's key and value: text when UTF-8, else base64, named.
#[test]
fn record_bytes_are_text_or_base64() {
    let store = Store::new(shredkv::Backend::Redb);
    let db = store.open();
    db.register_account("a").expect("register");
    db.put("a", INVOICES, b"k", &[0xff, 0x00]).expect("put");
    let record = db
        .get_record("a", INVOICES, b"k")
        .expect("get")
        .expect("a record");
    assert_eq!(
        serde_json::to_value(&record).expect("serialize"),
        json!({
            "key": "k",
            "key_encoding": "utf-8",
            "value": "/wA=",
            "value_encoding": "base64",
            "expires_at": null,
        })
    );
}

#[test]
fn a_subject_tag_serializes_as_lower_case_hex() {
    let tag = SubjectTag([0xab; 16]);
    assert_eq!(
        serde_json::to_string(&tag).expect("serialize"),
        format!("\"{}\"", "ab".repeat(16))
    );
    let store = Store::new(shredkv::Backend::Redb);
    let db = store.open();
    let real = db.subject_tag("someone");
    assert_eq!(
        serde_json::to_value(real).expect("serialize"),
        json!(real.to_hex())
    );
    let upper: SubjectTag =
        serde_json::from_value(json!(real.to_hex().to_uppercase())).expect("either case reads");
    assert_eq!(upper, real);

    for bad in [json!("abab"), json!("zz".repeat(16)), json!(42)] {
        let err = serde_json::from_value::<SubjectTag>(bad.clone())
            .expect_err("not a tag")
            .to_string();
        assert!(err.contains("subject tag"), "{bad}: {err}");
    }
}

/// Malformed reports are refused, saying what was expected.
#[test]
fn malformed_reports_are_refused_with_a_clear_error() {
    let refused = |result: Result<(), serde_json::Error>, expected: &str| {
        let err = result.expect_err("refused").to_string();
        assert!(
            err.contains(expected),
            "`{err}` does not mention `{expected}`"
        );
    };
    refused(
        serde_json::from_value::<AuditEvent>(json!("hold-plated")).map(drop),
        "audit event",
    );
    refused(
        serde_json::from_value::<ErasureReason>(json!("on a whim")).map(drop),
        "erasure reason",
    );
    refused(
        serde_json::from_value::<shredkv::Location>(json!({
            "tree": "elsewhere", "subject": null, "class": null, "key": "00",
        }))
        .map(drop),
        "tree",
    );
    refused(
        serde_json::from_value::<shredkv::Record>(json!({
            "key": "k", "key_encoding": "utf-8",
            "value": "not base64!", "value_encoding": "base64",
            "expires_at": null,
        }))
        .map(drop),
        "base64",
    );
    refused(
        serde_json::from_value::<shredkv::AuditHead>(json!({"seq": 1, "hash": "00"})).map(drop),
        "64 hex digits",
    );
}
