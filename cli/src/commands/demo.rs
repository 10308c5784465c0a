//! `shredkv demo`: the erasure lifecycle on a temporary store, checked.
//!
//! A temporary store with the default policy and a simulated clock is filled
//! with synthetic platform data (accounts, their end users, messages,
//! invoices, support tickets...). Every value carries a plaintext marker
//! (`DEMO-PLAINTEXT-…`). The steps in [`STEPS`] then erase an end user,
//! shred an account under a legal hold, release the hold, restrict a
//! subject, and verify: erased data is unreadable through the API, the
//! integrity scan and audit chain are clean, and no marker, subject id or
//! record key appears in any byte of any file of the store, erased or live.
//!
//! Each check prints PASS or FAIL; any FAIL makes the demo exit 1. The demo
//! honours `--backend` and `--json` (the story on stderr, the checks as JSON
//! on stdout); it ignores `--store`, `--key-file` and `--policy`.
//!
//! New steps slot into [`STEPS`] as the engine gains them (see the comments
//! there): account closure, marketing opt-out, deletion requests with
//! receipts per class rule, years of simulated time with compaction and
//! epoch rotation, restore of an old backup, and a certificate.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use shredkv::{Backend, Batch, Classes, Config, Db, ManualClock, PutOptions, Receipt, SubjectTag};

use crate::commands::{erasure, store};
use crate::context::Global;
use crate::exit::Code;
use crate::output::{self, Table};

/// The prefix of every value the demo writes.
const MARKER: &str = "DEMO-PLAINTEXT";

/// When the simulated clock starts.
const START: &str = "2025-01-15T09:00:00Z";

/// The synthetic platform: accounts and their end users.
const PLATFORM: [(&str, &[&str]); 3] = [
    ("acme-corp", &["alice@acme", "bob@acme", "carol@acme"]),
    ("globex-inc", &["dave@globex", "erin@globex"]),
    (
        "initech-llc",
        &["frank@initech", "grace@initech", "heidi@initech"],
    ),
];

/// The end user who asks to be forgotten (step 2).
const FORGOTTEN_USER: &str = "bob@acme";
/// The account shredded under a legal hold (steps 3 and 4).
const HELD_ACCOUNT: &str = "globex-inc";
/// The legal hold's reason.
const HOLD_REASON: &str = "case TAX-2025-117: tax audit of 2024 invoices";
/// The subject whose processing is restricted (step 5).
const RESTRICTED_USER: &str = "frank@initech";

/// One step of the demo: a title, how many simulated days pass before it,
/// and what it does.
struct Step {
    title: &'static str,
    days_later: i64,
    run: fn(&mut Demo) -> Result<()>,
}

/// The steps, in order. Slots for the retention APIs the engine is gaining
/// are marked where they go.
const STEPS: &[Step] = &[
    Step {
        title: "What is stored",
        days_later: 0,
        run: stored,
    },
    // Slot: `Db::backup` here, so a later step restores this old copy.
    Step {
        title: "An end user is erased",
        days_later: 3,
        run: erase_end_user,
    },
    // Slot: `Db::request_deletion` for an end user: the receipt shows
    // erase_now classes erased and retain_until_deadline classes kept with
    // their deadline and legal basis.
    // Slot: `Db::opt_out_of_marketing`: marketing_contacts erased 3 days later.
    Step {
        title: "An account is shredded while its invoices are under a legal hold",
        days_later: 7,
        run: shred_under_hold,
    },
    Step {
        title: "The legal hold is released and the account shredded again",
        days_later: 30,
        run: release_and_shred,
    },
    // Slot: `Db::close_account` for initech-llc, then simulated years with
    // `Db::compact` and `Db::rotate_epoch`: account_profile gone after 60
    // days, support_communications after 3 years, account_records after 7,
    // invoices after 10; stats show keys and epochs destroyed.
    // Slot: `Db::restore` of the backup taken after step 1: the ledger is
    // replayed, nothing erased comes back (or the backup is past its purge
    // window and unreadable by design).
    Step {
        title: "Processing of an end user is restricted",
        days_later: 2,
        run: restrict,
    },
    Step {
        title: "Verification",
        days_later: 1,
        run: verify,
    },
    // Slot: `Db::certificate` for the shredded account, after verification.
];

/// A record the demo wrote.
struct Written {
    subject: String,
    class: &'static str,
    key: String,
    value: String,
}

/// The demo's state between steps.
struct Demo {
    db: Db,
    clock: ManualClock,
    out: Box<dyn Write>,
    names: HashMap<SubjectTag, String>,
    written: Vec<Written>,
    /// Erased scopes: subject id and class (`None`: every class).
    erased: BTreeSet<(String, Option<String>)>,
    checks: Vec<(String, bool)>,
}

impl Demo {
    fn say(&mut self, text: &str) -> Result<()> {
        writeln!(self.out, "{text}")?;
        Ok(())
    }

    fn check(&mut self, name: &str, pass: bool) -> Result<()> {
        let verdict = if pass { "PASS" } else { "FAIL" };
        writeln!(self.out, "  {verdict}  {name}")?;
        self.checks.push((name.to_string(), pass));
        Ok(())
    }

    fn name(&self, tag: &SubjectTag) -> String {
        self.names.get(tag).cloned().unwrap_or_else(|| tag.to_hex())
    }

    fn advance_days(&mut self, days: i64) {
        self.clock.advance(SignedDuration::from_hours(days * 24));
    }

    /// Prints a receipt with subject names, and remembers what it erased.
    fn receipt(&mut self, receipt: &Receipt) -> Result<()> {
        let names = self.names.clone();
        let text = erasure::receipt_text(receipt, &|tag| {
            names.get(tag).cloned().unwrap_or_else(|| tag.to_hex())
        });
        write!(self.out, "{text}")?;
        for scope in &receipt.erased {
            self.erased
                .insert((self.name(&scope.subject), scope.class.clone()));
        }
        Ok(())
    }

    fn is_erased(&self, subject: &str, class: &str) -> bool {
        self.erased.contains(&(subject.to_string(), None))
            || self
                .erased
                .contains(&(subject.to_string(), Some(class.to_string())))
    }

    /// Shows what a read returns: the value, or the engine's error.
    fn show_read(&mut self, subject: &str, class: &str, key: &str) -> Result<()> {
        let line = match self.db.get(subject, class, key.as_bytes()) {
            Ok(Some(value)) => format!(
                "  get {subject} {class} {key} -> \"{}\"",
                String::from_utf8_lossy(&value)
            ),
            Ok(None) => format!("  get {subject} {class} {key} -> absent"),
            Err(err) => format!("  get {subject} {class} {key} -> error: {err}"),
        };
        self.say(&line)
    }
}

/// Runs the demo; exit 1 if any check fails.
pub(crate) fn run(global: &Global) -> Result<Code> {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("shredkv-demo-")
        .tempdir()
        .context("create the demo's temporary directory")?;
    let backend = global.backend.map_or(Backend::Sled, Backend::from);
    let start: Timestamp = START.parse().context("the demo's start time")?;
    let clock = ManualClock::new(start);
    let db = Db::open(
        Config::new(dir.path())
            .backend(backend)
            .clock(Arc::new(clock.clone())),
    )?;
    // With --json the story goes to stderr and the checks to stdout.
    let out: Box<dyn Write> = if global.json {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let mut demo = Demo {
        db,
        clock,
        out,
        names: HashMap::new(),
        written: Vec::new(),
        erased: BTreeSet::new(),
        checks: Vec::new(),
    };
    demo.say(&format!(
        "shredkv demo: a temporary {backend} store at {}, the default policy, a simulated clock from {START}",
        dir.path().display()
    ))?;
    populate(&mut demo)?;

    for (i, step) in STEPS.iter().enumerate() {
        demo.advance_days(step.days_later);
        demo.say(&format!(
            "\n== Step {}/{}: {} ({}) ==",
            i + 1,
            STEPS.len(),
            step.title,
            output::time(demo.db.now())
        ))?;
        (step.run)(&mut demo)?;
    }

    let failed: Vec<String> = demo
        .checks
        .iter()
        .filter(|(_, pass)| !pass)
        .map(|(name, _)| name.clone())
        .collect();
    let elapsed = started.elapsed();
    let summary = if failed.is_empty() {
        format!(
            "\nAll {} checks passed in {:.2} s.",
            demo.checks.len(),
            elapsed.as_secs_f64()
        )
    } else {
        format!(
            "\n{} of {} checks FAILED: {}",
            failed.len(),
            demo.checks.len(),
            failed.join("; ")
        )
    };
    demo.say(&summary)?;
    if global.json {
        output::print_json(&json!({
            "ok": failed.is_empty(),
            "seconds": elapsed.as_secs_f64(),
            "checks": demo.checks.iter().map(|(name, pass)| json!({"check": name, "pass": pass})).collect::<Vec<_>>(),
        }))?;
    }
    demo.out.flush()?;
    drop(demo);
    dir.close()
        .context("remove the demo's temporary directory")?;
    Ok(if failed.is_empty() {
        Code::Ok
    } else {
        Code::Failure
    })
}

/// Registers the platform's subjects and writes their records.
fn populate(demo: &mut Demo) -> Result<()> {
    let now = demo.db.now();
    let message_expiry = now
        .checked_add(SignedDuration::from_hours(90 * 24))
        .context("the messages' expiry")?;
    for (account, users) in PLATFORM {
        let tag = demo.db.register_account(account)?;
        demo.names.insert(tag, account.to_string());
        let mut writes: Vec<(String, &'static str, String, String, PutOptions)> = vec![
            (
                account.into(),
                "account_profile",
                "billing-contact".into(),
                format!(
                    "{MARKER}-PROFILE {account}: billing contact ops@{account}.example, +1 555 0100"
                ),
                PutOptions::default(),
            ),
            (
                account.into(),
                "marketing_contacts",
                "newsletter".into(),
                format!("{MARKER}-MARKETING {account}: newsletter@{account}.example"),
                PutOptions::default(),
            ),
            (
                account.into(),
                "usage_records",
                "usage-2024-12".into(),
                format!("{MARKER}-USAGE {account}: 18204 messages sent in December"),
                PutOptions::default(),
            ),
        ];
        for n in 1..=3 {
            writes.push((
                account.into(),
                "invoices",
                format!("invoice-2024-{n:02}"),
                format!(
                    "{MARKER}-INVOICE {account} 2024-{n:02}: 1200.00 EUR, billed to 1 Demo Street"
                ),
                PutOptions::default(),
            ));
        }
        for n in 1..=2 {
            writes.push((
                account.into(),
                "support_communications",
                format!("ticket-{n}"),
                format!(
                    "{MARKER}-SUPPORT {account} ticket {n}: our webhooks time out since Tuesday"
                ),
                PutOptions::default(),
            ));
        }
        for user in users.iter().copied() {
            let tag = demo.db.register_end_user(user, account)?;
            demo.names.insert(tag, user.to_string());
            for n in 1..=3 {
                writes.push((
                    user.into(),
                    "message_content",
                    format!("message-{n:04}"),
                    format!("{MARKER}-MESSAGE {user} #{n}: see you at noon by the fountain"),
                    PutOptions::expires_at(message_expiry),
                ));
            }
            writes.push((
                user.into(),
                "usage_records",
                "delivery-0001".into(),
                format!("{MARKER}-USAGE {user}: delivered to +1 555 0199 at 09:14"),
                PutOptions::default(),
            ));
        }
        let mut batch = Batch::new();
        for (subject, class, key, value, options) in &writes {
            batch.put_with(subject, class, key.as_bytes(), value.as_bytes(), *options);
        }
        demo.db.apply(batch)?;
        demo.written.extend(
            writes
                .into_iter()
                .map(|(subject, class, key, value, _)| Written {
                    subject,
                    class,
                    key,
                    value,
                }),
        );
    }
    demo.db.flush()?;
    Ok(())
}

fn stored(demo: &mut Demo) -> Result<()> {
    let stats = demo.db.stats()?;
    let text = store::stats_text(&demo.db, &stats);
    demo.say(&format!(
        "{} records of {} accounts and {} end users, every value marked `{MARKER}-…`:\n",
        demo.written.len(),
        stats.accounts,
        stats.end_users
    ))?;
    write!(demo.out, "{text}")?;
    demo.say("\nThe store knows subjects only by keyed tags:")?;
    let mut table = Table::new(&["subject id", "kind", "tag on disk"]);
    let mut subjects: Vec<_> = demo.db.subjects()?;
    subjects.sort_by_key(|s| demo.name(&s.tag));
    for info in &subjects {
        table.row([
            demo.name(&info.tag),
            output::kind(info.kind).to_string(),
            info.tag.to_hex(),
        ]);
    }
    write!(demo.out, "{}", table.render())?;
    demo.say("\nReading through the API decrypts:")?;
    demo.show_read("alice@acme", "message_content", "message-0001")?;
    let readable = demo.written.iter().all(|w| {
        demo.db
            .get(&w.subject, w.class, w.key.as_bytes())
            .ok()
            .flatten()
            .is_some_and(|v| v == w.value.as_bytes())
    });
    demo.check("every record reads back as written", readable)
}

fn erase_end_user(demo: &mut Demo) -> Result<()> {
    demo.say(&format!(
        "{FORGOTTEN_USER} asks to be forgotten; the operator shreds the subject:\n  shredkv shred {FORGOTTEN_USER}\n"
    ))?;
    let receipt = demo.db.shred(FORGOTTEN_USER, Classes::All)?;
    demo.receipt(&receipt)?;
    demo.say("\nIts keys are gone, so its data is gone:")?;
    demo.show_read(FORGOTTEN_USER, "message_content", "message-0001")?;
    let erased = demo
        .db
        .get(FORGOTTEN_USER, "message_content", b"message-0001")
        .is_err_and(|e| e.is_erased());
    demo.check(
        &format!("{FORGOTTEN_USER}'s messages read as erased"),
        erased,
    )?;
    demo.show_read("alice@acme", "message_content", "message-0001")?;
    let neighbour = demo
        .db
        .get("alice@acme", "message_content", b"message-0001")
        .is_ok_and(|v| v.is_some());
    demo.check("the rest of acme-corp is untouched", neighbour)
}

fn shred_under_hold(demo: &mut Demo) -> Result<()> {
    demo.say(&format!(
        "A tax audit needs {HELD_ACCOUNT}'s invoices; the operator places a legal hold, then shreds the account:\n  shredkv hold {HELD_ACCOUNT} --class invoices --reason '{HOLD_REASON}'\n  shredkv shred {HELD_ACCOUNT}\n"
    ))?;
    demo.db
        .place_hold(HELD_ACCOUNT, Some("invoices"), HOLD_REASON)?;
    let receipt = demo.db.shred(HELD_ACCOUNT, Classes::All)?;
    demo.receipt(&receipt)?;
    let tag = demo.db.subject_tag(HELD_ACCOUNT);
    let retained = receipt
        .retained
        .iter()
        .any(|r| r.subject == tag && r.class == "invoices" && r.reason.contains(HOLD_REASON));
    demo.check(
        "the receipt lists the invoices as retained, with the hold's reason",
        retained,
    )?;
    let users = demo.db.end_users_of(&tag)?;
    let cascaded = users.iter().all(|u| {
        receipt
            .erased
            .iter()
            .any(|e| e.subject == *u && e.class.is_none())
    });
    demo.check(
        &format!("every end user of {HELD_ACCOUNT} is erased with it"),
        cascaded && !users.is_empty(),
    )?;
    demo.say("\nThe invoices stay readable for the audit; the rest is gone:")?;
    demo.show_read(HELD_ACCOUNT, "invoices", "invoice-2024-01")?;
    demo.show_read(HELD_ACCOUNT, "account_profile", "billing-contact")?;
    let invoice = demo
        .db
        .get(HELD_ACCOUNT, "invoices", b"invoice-2024-01")
        .is_ok_and(|v| v.is_some());
    demo.check("held invoices are still readable", invoice)
}

fn release_and_shred(demo: &mut Demo) -> Result<()> {
    demo.say(&format!(
        "The audit is closed; the hold is released and the account shredded again:\n  shredkv release {HELD_ACCOUNT} --class invoices\n  shredkv shred {HELD_ACCOUNT}\n"
    ))?;
    let released = demo.db.release_hold(HELD_ACCOUNT, Some("invoices"))?;
    demo.check("the hold existed and is released", released)?;
    let receipt = demo.db.shred(HELD_ACCOUNT, Classes::All)?;
    demo.receipt(&receipt)?;
    demo.show_read(HELD_ACCOUNT, "invoices", "invoice-2024-01")?;
    let gone = demo
        .db
        .get(HELD_ACCOUNT, "invoices", b"invoice-2024-01")
        .is_err_and(|e| e.is_erased());
    demo.check("the invoices are erased now", gone)?;
    let audited = demo
        .db
        .audit_tail(50)?
        .iter()
        .filter(|e| e.subject == Some(demo.db.subject_tag(HELD_ACCOUNT)))
        .map(|e| e.event.name())
        .collect::<Vec<_>>();
    let trail = [
        "hold-placed",
        "erasure-blocked",
        "hold-released",
        "keys-destroyed",
    ]
    .iter()
    .all(|event| audited.contains(event));
    demo.check(
        "the audit log records the hold, the blocked erasure, the release and the key destruction",
        trail,
    )
}

fn restrict(demo: &mut Demo) -> Result<()> {
    demo.say(&format!(
        "{RESTRICTED_USER} contests the accuracy of their data; processing is restricted:\n  shredkv restrict {RESTRICTED_USER}\n"
    ))?;
    demo.db.restrict(RESTRICTED_USER)?;
    demo.show_read(RESTRICTED_USER, "message_content", "message-0001")?;
    let blocked = demo
        .db
        .get(RESTRICTED_USER, "message_content", b"message-0001")
        .is_err();
    demo.check("reads of a restricted subject fail", blocked)?;
    let export = demo.db.export(RESTRICTED_USER)?;
    let expected = demo
        .written
        .iter()
        .filter(|w| w.subject == RESTRICTED_USER)
        .count();
    demo.say(&format!(
        "  export {RESTRICTED_USER} -> {} records (an access request is still answered)",
        export.record_count()
    ))?;
    demo.check(
        "a restricted subject can still be exported, completely",
        export.record_count() == expected,
    )?;
    demo.db.lift_restriction(RESTRICTED_USER)?;
    demo.say(&format!(
        "The matter is settled:\n  shredkv unrestrict {RESTRICTED_USER}"
    ))?;
    demo.show_read(RESTRICTED_USER, "message_content", "message-0001")
}

fn verify(demo: &mut Demo) -> Result<()> {
    // 1. Every erased record is unreadable through the API.
    let mut erased_records = 0usize;
    let mut erased_ok = true;
    let mut live_records = 0usize;
    let mut live_ok = true;
    for w in &demo.written {
        let read = demo.db.get(&w.subject, w.class, w.key.as_bytes());
        if demo.is_erased(&w.subject, w.class) {
            erased_records += 1;
            erased_ok &= read.is_err_and(|e| e.is_erased());
        } else {
            live_records += 1;
            live_ok &= read.ok().flatten().is_some_and(|v| v == w.value.as_bytes());
        }
    }
    demo.check(
        &format!("all {erased_records} erased records fail with an `erased` error"),
        erased_ok && erased_records > 0,
    )?;
    let classes: Vec<String> = demo
        .db
        .policy()
        .classes()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let mut scopes = 0usize;
    let mut scopes_ok = true;
    for (subject, class) in &demo.erased {
        let targets: Vec<&str> = match class {
            Some(class) => vec![class.as_str()],
            None => classes.iter().map(String::as_str).collect(),
        };
        for class in targets {
            scopes += 1;
            scopes_ok &= demo.db.scan(subject, class).is_err_and(|e| e.is_erased());
        }
    }
    demo.check(
        &format!("all {scopes} erased scopes (subject x class) fail to scan with `erased`"),
        scopes_ok,
    )?;
    demo.check(
        &format!("all {live_records} live records read back as written"),
        live_ok && live_records > 0,
    )?;

    // 2. The integrity scan and the audit chain.
    let report = demo.db.verify()?;
    demo.check(
        &format!(
            "integrity scan clean: {} records authenticated, {} dead (keys destroyed), 0 problems",
            report.records_checked, report.records_dead
        ),
        report.problems.is_empty(),
    )?;
    let chain = demo.db.verify_audit()?;
    demo.check(
        &format!("audit chain intact: {} entries", chain.entries),
        chain.breaks.is_empty(),
    )?;

    // 3. No plaintext on disk, erased or live.
    demo.db.flush()?;
    let mut needles: BTreeSet<String> = BTreeSet::new();
    needles.insert(MARKER.to_string());
    for w in &demo.written {
        needles.insert(w.subject.clone());
        needles.insert(w.key.clone());
    }
    let scan = scan_dir(demo.db.path(), &needles)?;
    let found: Vec<String> = scan
        .found
        .iter()
        .map(|(needle, file)| format!("`{needle}` in {file}"))
        .collect();
    demo.check(
        &format!(
            "no value marker, subject id or record key in any byte of the store's {} files ({}; {} needles)",
            scan.files,
            output::bytes(scan.bytes),
            needles.len()
        ),
        found.is_empty() && scan.files > 0,
    )?;
    for hit in &found {
        demo.say(&format!("        found {hit}"))?;
    }
    // A control: the class names are kept in plain text (store metadata),
    // so the same scan must find one, or it is not looking at the data.
    let control = scan_dir(
        demo.db.path(),
        &BTreeSet::from(["account_profile".to_string()]),
    )?;
    demo.check(
        "control: the same scan does find the plain-text class name `account_profile` in the store's metadata",
        !control.found.is_empty(),
    )
}

/// What a scan of the store's files found.
struct DirScan {
    files: u64,
    bytes: u64,
    /// Needle and file (relative to the store directory) of every hit.
    found: Vec<(String, String)>,
}

/// Reads every file under `root` and searches it for each needle.
fn scan_dir(root: &Path, needles: &BTreeSet<String>) -> Result<DirScan> {
    let mut scan = DirScan {
        files: 0,
        bytes: 0,
        found: Vec::new(),
    };
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let data = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
            scan.files += 1;
            scan.bytes += u64::try_from(data.len()).unwrap_or(u64::MAX);
            for needle in needles {
                if contains(&data, needle.as_bytes()) {
                    let file = path.strip_prefix(root).unwrap_or(&path);
                    scan.found
                        .push((needle.clone(), file.display().to_string()));
                }
            }
        }
    }
    Ok(scan)
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, _)) = needle.split_first() else {
        return true;
    };
    haystack
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == first)
        .any(|(i, _)| haystack.get(i..i + needle.len()) == Some(needle))
}

#[cfg(test)]
mod tests {
    use super::contains;

    #[test]
    fn contains_finds_needles_anywhere_and_only_whole() {
        assert!(contains(b"xxDEMO-PLAINTEXTyy", b"DEMO-PLAINTEXT"));
        assert!(contains(b"DEMO", b"DEMO"));
        assert!(!contains(b"DEMO-PLAIN", b"DEMO-PLAINTEXT"));
        assert!(!contains(b"", b"x"));
    }
}
