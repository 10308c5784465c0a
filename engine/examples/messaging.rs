//! A messaging service's persistence layer on shredkv: accounts with their
//! end users, profiles, contacts, messages with a time to live, invoices,
//! written by several threads; then what the privacy notice promises —
//! an export, a restriction, a deletion request with its receipt and
//! certificate, an account closure — and the maintenance that enforces it.
//!
//! ```text
//! cargo run -p shredkv --example messaging
//! ```
//!
//! It runs in a temporary directory and checks what it claims as it goes
//! (CI runs it).

use std::error::Error as StdError;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use shredkv::{Class, Classes, Config, Db, ErasureReason, PutOptions, ScanOptions};

type Result<T> = std::result::Result<T, Box<dyn StdError + Send + Sync>>;

/// The store and the classes the service writes, resolved once at start-up:
/// a misspelt class fails here, not on the first message.
struct Persistence {
    db: Db,
    profile: Class,
    contacts: Class,
    messages: Class,
    invoices: Class,
}

impl Persistence {
    fn open(config: Config) -> Result<Self> {
        let db = Db::open(config)?;
        Ok(Self {
            profile: db.class("account_profile")?,
            contacts: db.class("subscriber_records")?,
            messages: db.class("message_content")?,
            invoices: db.class("invoices")?,
            db,
        })
    }

    fn sign_up(&self, account: &str, email: &str, users: &[&str]) -> Result<()> {
        self.db.register_account(account)?;
        self.db
            .put(account, self.profile, b"email", email.as_bytes())?;
        for user in users {
            self.db.register_end_user(user, account)?;
        }
        Ok(())
    }

    /// A message kept for its time to live (the customer's instruction,
    /// capped by the policy).
    fn deliver(&self, user: &str, id: u64, body: &str, ttl: Duration) -> Result<()> {
        let options = PutOptions::expires_in(self.db.now(), ttl);
        self.db.put_with(
            user,
            self.messages,
            &id.to_be_bytes(),
            body.as_bytes(),
            options,
        )?;
        Ok(())
    }

    /// Every message of a user, a page at a time (bounded memory).
    fn inbox(&self, user: &str) -> Result<Vec<String>> {
        let mut bodies = Vec::new();
        for record in self.db.records(user, self.messages, ScanOptions::all()) {
            bodies.push(String::from_utf8(record?.value)?);
        }
        Ok(bodies)
    }
}

fn main() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // Production form: the key file apart from the data (here two
    // subdirectories of one temporary directory; in production another
    // volume, not backed up with the store).
    let config = Config::new(dir.path().join("store"))
        .key_file(dir.path().join("keys").join("store.keys"))
        .maintenance_every(Some(Duration::from_secs(3600)));
    std::fs::create_dir_all(dir.path().join("keys"))?;
    let app = Arc::new(Persistence::open(config)?);

    app.sign_up("acct-acme", "ops@acme.example", &["alice@acme", "bob@acme"])?;
    app.sign_up("acct-zeta", "it@zeta.example", &["carol@zeta"])?;
    app.db.put(
        "acct-acme",
        app.contacts,
        b"alice@acme",
        b"+41 00 000 00 00",
    )?;
    app.db
        .put("acct-acme", app.invoices, b"2026-11", b"EUR 120.00")?;

    // Four threads deliver messages concurrently; `Db` is Clone + Send + Sync.
    let writers: Vec<_> = (0..4u64)
        .map(|t| {
            let app = Arc::clone(&app);
            thread::spawn(move || -> Result<()> {
                for n in 0..50u64 {
                    let user = ["alice@acme", "bob@acme", "carol@zeta"][usize::try_from(n % 3)?];
                    let ttl = Duration::from_secs(3600 * (1 + n % 24));
                    app.deliver(user, t * 1_000 + n, &format!("message {t}/{n}"), ttl)?;
                }
                Ok(())
            })
        })
        .collect();
    for writer in writers {
        writer.join().map_err(|_| "a writer panicked")??;
    }
    let delivered: usize = ["alice@acme", "bob@acme", "carol@zeta"]
        .iter()
        .map(|u| app.inbox(u).map(|m| m.len()))
        .sum::<Result<usize>>()?;
    assert_eq!(delivered, 200);
    println!("delivered {delivered} messages from 4 threads");

    // Access request: everything of the account and its end users.
    let export = app.db.export("acct-acme")?;
    println!(
        "export of acct-acme: {} subjects, {} records",
        export.subjects.len(),
        export.record_count()
    );
    assert_eq!(export.subjects.len(), 3);

    // Objection: bob's data is kept but no longer used.
    app.db.restrict("bob@acme")?;
    assert!(app.inbox("bob@acme").is_err());
    app.db.lift_restriction("bob@acme")?;

    // Deletion request: what the policy lets go is erased now; what it must
    // keep (the receipt lists it) stays until its deadline.
    let receipt = app
        .db
        .request_deletion("alice@acme", ErasureReason::DeletionRequest)?;
    println!(
        "deletion request of alice@acme: {} keys destroyed, audit entry {}",
        receipt.keys_destroyed(),
        receipt.audit_head.seq
    );
    assert!(app.inbox("alice@acme").is_err());
    let certificate = app.db.certificate("alice@acme")?;
    println!(
        "certificate: {} erasure(s), purge {}",
        certificate.erasures.len(),
        if certificate.is_complete() {
            "complete"
        } else {
            "pending until the old epochs are destroyed"
        }
    );

    // Account closure starts the closure clocks of every class.
    let scheduled = app.db.close_account("acct-zeta")?;
    println!("closing acct-zeta scheduled {} erasures", scheduled.len());

    // An operator's erasure of a whole account: its end users go with it.
    let receipt = app.db.shred("acct-acme", Classes::All)?;
    println!(
        "shred of acct-acme: {} scopes erased, {} retained under policy",
        receipt.erased.len(),
        receipt.retained.len()
    );

    // Maintenance runs in the background; a pass can also be asked for.
    let report = app.db.compact()?;
    println!("compaction: {} keys destroyed", report.keys_destroyed);
    let integrity = app.db.verify()?;
    assert!(integrity.is_clean(), "{:?}", integrity.problems);
    println!(
        "verify: {} records authenticated, {} dead, audit chain of {} entries intact",
        integrity.records_checked, integrity.records_dead, integrity.audit.entries
    );
    Ok(())
}
