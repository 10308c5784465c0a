//! The audit chain is keyed (issue 12): every entry's hash is a MAC under a
//! key derived from the store secret, so whoever can write the store's
//! files but lacks the secret cannot re-link an edited chain; receipts and
//! certificates name the chain's head, so the chain they were issued
//! against can be checked later.
//!
//! The forger here works on the raw `audit` tree with the store closed and
//! knows the entry format (docs/design.md), not the secret: re-linking with
//! plain SHA-256 (the v1 format, which needs no key) or keeping the old MAC
//! over changed content are both reported by `verify_audit`, and a
//! re-linked tail is refused at open by the anchor.

mod common;

use common::{Raw, crc32, raw_read, raw_write};
use sha2::{Digest, Sha256};
use shredkv::{AuditEvent, ChainBreak, Classes, Error};
use shredkv_tests::{INVOICES, MESSAGES, Store, close, for_each_backend};

/// A stored audit entry's fields (docs/design.md, "Audit log"), decoded
/// here independently of the engine.
struct RawEntry {
    version: u8,
    time: [u8; 8],
    event: u8,
    subject: [u8; 16],
    class: [u8; 2],
    detail: Vec<u8>,
    prev: [u8; 32],
    hash: [u8; 32],
}

impl RawEntry {
    fn parse(bytes: &[u8]) -> Self {
        let take = |at: usize, n: usize| bytes[at..at + n].to_vec();
        let len = u32::from_be_bytes(bytes[28..32].try_into().expect("4")) as usize;
        let after = 32 + len;
        Self {
            version: bytes[0],
            time: take(1, 8).try_into().expect("8"),
            event: bytes[9],
            subject: take(10, 16).try_into().expect("16"),
            class: take(26, 2).try_into().expect("2"),
            detail: take(32, len),
            prev: take(after, 32).try_into().expect("32"),
            hash: take(after + 32, 32).try_into().expect("32"),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.version];
        out.extend_from_slice(&self.time);
        out.push(self.event);
        out.extend_from_slice(&self.subject);
        out.extend_from_slice(&self.class);
        out.extend_from_slice(
            &u32::try_from(self.detail.len())
                .expect("small")
                .to_be_bytes(),
        );
        out.extend_from_slice(&self.detail);
        out.extend_from_slice(&self.prev);
        out.extend_from_slice(&self.hash);
        let crc = crc32(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Re-links the entry as a plain (v1) one: SHA-256, no key.
    fn relink_plain(&mut self, seq: u64, prev: [u8; 32]) {
        self.version = 1;
        self.prev = prev;
        let mut h = Sha256::new();
        h.update(b"shredkv/v1/audit");
        h.update(seq.to_be_bytes());
        h.update(self.time);
        h.update([self.event]);
        h.update(self.subject);
        h.update(self.class);
        h.update(
            u32::try_from(self.detail.len())
                .expect("small")
                .to_be_bytes(),
        );
        h.update(&self.detail);
        h.update(prev);
        self.hash = h.finalize().into();
    }
}

fn history(store: &Store) -> shredkv::Receipt {
    let db = store.open();
    for subject in ["alice", "bob", "carol", "dan"] {
        db.register_account(subject).expect("register");
        db.put(subject, MESSAGES, b"m", subject.as_bytes())
            .expect("put");
        db.put(subject, INVOICES, b"i", b"42 EUR").expect("put");
        db.place_hold(subject, None, "case 7").expect("hold");
        db.release_hold(subject, None).expect("release");
    }
    let receipt = db.shred("alice", Classes::All).expect("shred");
    db.place_hold("bob", None, "case 8").expect("hold");
    close(db);
    receipt
}

#[test]
fn receipts_and_certificates_name_the_keyed_chain_they_were_issued_against() {
    for_each_backend(|store| {
        let receipt = history(store);
        let db = store.open();
        let head = receipt.audit_head;
        let entry = db
            .audit_entries(head.seq, 1)
            .expect("entries")
            .pop()
            .expect("the receipt's entry is in the chain");
        assert_eq!(entry.seq, head.seq);
        assert_eq!(entry.hash, head.hash, "the receipt names its own entry");
        assert_eq!(entry.event, AuditEvent::KeysDestroyed);
        assert_eq!(entry.subject, Some(db.subject_tag("alice")));
        assert!(entry.keyed);

        let report = db.verify_audit().expect("verify");
        assert!(report.breaks.is_empty(), "{:?}", report.breaks);
        assert_eq!(
            report.keyed_from,
            Some(1),
            "a new store is keyed from its first entry"
        );
        assert!(
            report.head.seq > head.seq,
            "the hold came after the receipt"
        );
        let certificate = db.certificate("alice").expect("certificate");
        assert_eq!(certificate.audit_head, report.head);
        let text = certificate.to_string();
        assert!(
            text.contains(&report.head.hash_hex()) && text.contains("every entry keyed"),
            "{text}"
        );
        assert!(
            certificate.verification.iter().any(|l| l.contains(&format!(
                "anchored by the key provider at entry {}",
                report.head.seq
            ))),
            "{:?}",
            certificate.verification
        );
        // A repeated shred has nothing to erase and answers, after
        // reopening too, with the receipt it was issued: its own entry, not
        // the head as it is now.
        let again = db.shred("alice", Classes::All).expect("again");
        assert_eq!(again, receipt);
        assert_ne!(again.audit_head, report.head);
    });
}

#[test]
fn a_chain_edited_without_the_store_secret_is_reported() {
    for_each_backend(|store| {
        history(store);
        let original = raw_read(store, "audit");
        let keys: Vec<Vec<u8>> = original.keys().cloned().collect();
        let seq_of = |k: &[u8]| u64::from_be_bytes(k.try_into().expect("8 bytes"));
        let middle = keys[keys.len() / 2].clone();
        let k = seq_of(&middle);
        let entry = |key: &[u8]| RawEntry::parse(original.get(key).expect("entry"));
        assert_eq!(entry(&middle).version, 2, "stored keyed");

        // Content changed, the MAC kept (the forger cannot recompute it).
        let mut edited = entry(&middle);
        edited.detail = b"hold placed by nobody".to_vec();
        raw_write(
            store,
            "audit",
            &Raw::from([(middle.clone(), edited.encode())]),
        );
        let breaks = store.open().verify_audit().expect("verify").breaks;
        assert_eq!(
            breaks.first(),
            Some(&ChainBreak::Edited { seq: k }),
            "{breaks:?}"
        );
        raw_write(store, "audit", &original);

        // Re-linked with plain SHA-256 from entry k to the end, every link
        // consistent: a downgrade, and the anchored head no longer matches.
        let mut prev = entry(&keys[keys.iter().position(|x| *x == middle).expect("in") - 1]).hash;
        let mut forged = Raw::new();
        for key in keys.iter().skip_while(|x| **x != middle) {
            let mut e = entry(key);
            if *key == middle {
                e.detail = b"hold placed by nobody".to_vec();
            }
            e.relink_plain(seq_of(key), prev);
            prev = e.hash;
            forged.insert(key.clone(), e.encode());
        }
        raw_write(store, "audit", &forged);
        match shredkv::Db::open(store.config()) {
            Err(err @ Error::StoreRolledBack { .. }) => {
                assert!(err.to_string().contains("not the one anchored"), "{err}");
            }
            Err(other) => panic!("expected StoreRolledBack, got {other}"),
            Ok(_) => panic!("a store whose chain was re-linked from entry {k} opened"),
        }
        // Every entry but the last re-linked: the store opens (its anchored
        // head stands), and the chain check reports the downgrade.
        let last = keys.last().expect("entries").clone();
        raw_write(
            store,
            "audit",
            &Raw::from([(last.clone(), original[&last].clone())]),
        );
        let breaks = store.open().verify_audit().expect("verify").breaks;
        assert_eq!(
            breaks.first(),
            Some(&ChainBreak::Downgraded { seq: k }),
            "{breaks:?}"
        );
        raw_write(store, "audit", &original);
        assert!(
            store
                .open()
                .verify_audit()
                .expect("verify")
                .breaks
                .is_empty()
        );
    });
}
