//! `shredkv demo`: the erasure lifecycle on a temporary store, checked.
//!
//! A temporary store with the default policy and a simulated clock is filled
//! with synthetic platform data (accounts, their end users, messages,
//! invoices, support tickets...). Every value carries a plaintext marker
//! (`DEMO-PLAINTEXT-…`). The steps in [`STEPS`] then take a backup, erase an
//! end user, answer a deletion request with a receipt, record a marketing
//! opt-out, shred an account under a legal hold and release it, restrict a
//! subject, close an account and let ten simulated years pass with
//! compaction (retention deadlines, epoch rotation and destruction), restore
//! the early backup (refused: older than the purge window) and a recent one
//! (the erasure ledger is replayed), verify, and print a certificate of
//! erasure. Verification: erased data is unreadable through the API, the
//! integrity scan and audit chain are clean, and no marker, subject id or
//! record key appears in any byte of any file of the store, its backups or
//! its restored copies.
//!
//! Each check prints PASS or FAIL; any FAIL makes the demo exit 1. The demo
//! honours `--backend` and `--json` (the story on stderr, the checks as JSON
//! on stdout); it ignores `--store`, `--key-file` and `--policy`.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use shredkv::{
    Backend, Batch, ClassPolicy, Classes, ClockStart, Config, Db, ErasureReason, ErasureSource,
    Error, ManualClock, PutOptions, Receipt, SubjectTag,
};

use crate::commands::{erasure, retention, store};
use crate::context::Global;
use crate::exit::Code;
use crate::output::{self, Table};

/// The prefix of every value the demo writes.
const MARKER: &str = "DEMO-PLAINTEXT";

/// When the simulated clock starts.
const START: &str = "2025-01-15T09:00:00Z";

/// The synthetic platform: accounts and their end users.
const PLATFORM: [(&str, &[&str]); 4] = [
    ("acme-corp", &["alice@acme", "bob@acme", "carol@acme"]),
    ("globex-inc", &["dave@globex", "erin@globex"]),
    (
        "initech-llc",
        &["frank@initech", "grace@initech", "heidi@initech"],
    ),
    ("hooli-io", &["gavin@hooli", "jared@hooli"]),
];

/// The end user who asks to be forgotten (shredded by the operator).
const FORGOTTEN_USER: &str = "bob@acme";
/// The end user who files a deletion request.
const REQUESTING_USER: &str = "carol@acme";
/// The account that opts out of marketing.
const OPTED_OUT_ACCOUNT: &str = "acme-corp";
/// The account shredded under a legal hold.
const HELD_ACCOUNT: &str = "globex-inc";
/// The legal hold's reason.
const HOLD_REASON: &str = "case TAX-2025-117: tax audit of 2024 invoices";
/// The subject whose processing is restricted.
const RESTRICTED_USER: &str = "frank@initech";
/// The account that closes and is kept for years.
const CLOSED_ACCOUNT: &str = "initech-llc";
/// The account erased after the recent backup.
const LATE_ACCOUNT: &str = "hooli-io";

/// One step of the demo: a title, how many simulated days pass before it,
/// and what it does.
struct Step {
    title: &'static str,
    days_later: i64,
    run: fn(&mut Demo) -> Result<()>,
}

/// The steps, in order.
const STEPS: &[Step] = &[
    Step {
        title: "What is stored",
        days_later: 0,
        run: stored,
    },
    Step {
        title: "A backup is taken",
        days_later: 0,
        run: backup_early,
    },
    Step {
        title: "An end user is erased",
        days_later: 3,
        run: erase_end_user,
    },
    Step {
        title: "An end user asks for deletion",
        days_later: 1,
        run: deletion_request,
    },
    Step {
        title: "A customer opts out of marketing",
        days_later: 1,
        run: marketing_opt_out,
    },
    Step {
        title: "An account is shredded while its invoices are under a legal hold",
        days_later: 7,
        run: shred_under_hold,
    },
    Step {
        title: "The legal hold is released, and the parked shred is carried out",
        days_later: 30,
        run: release_and_shred,
    },
    Step {
        title: "Processing of an end user is restricted",
        days_later: 2,
        run: restrict,
    },
    Step {
        title: "An account closes, and ten years pass",
        days_later: 1,
        run: close_and_wait,
    },
    Step {
        title: "The early backup is restored",
        days_later: 0,
        run: restore_early,
    },
    Step {
        title: "A recent backup is restored",
        days_later: 0,
        run: restore_recent,
    },
    Step {
        title: "Verification",
        days_later: 1,
        run: verify,
    },
    Step {
        title: "A certificate of erasure",
        days_later: 0,
        run: certificate,
    },
];

/// A record the demo wrote.
struct Written {
    subject: String,
    class: &'static str,
    key: String,
    value: String,
    expires_at: Option<Timestamp>,
}

/// Where the demo's store is in an etcd cluster (`--backend etcd`).
#[cfg(feature = "etcd")]
struct ClusterPlace {
    endpoints: Vec<String>,
    namespace: String,
    /// Whether the demo named the namespace (and so removes it at the end).
    own: bool,
}

/// The cluster and namespace of the demo's store on etcd: `--endpoints`,
/// and `--namespace` or a new one named after the demo's directory.
#[cfg(feature = "etcd")]
fn cluster_place(global: &Global, root: &Path) -> Result<ClusterPlace> {
    if global.endpoints.is_empty() {
        return Err(crate::exit::CliError::new(
            Code::Usage,
            "demo --backend etcd needs --endpoints",
        )
        .hint("give the cluster's client URLs, e.g. --endpoints http://127.0.0.1:2379")
        .into());
    }
    let (namespace, own) = match global.namespace.as_deref().filter(|n| !n.is_empty()) {
        Some(namespace) => (namespace.to_string(), false),
        None => (
            format!(
                "shredkv-demo/{}/",
                root.file_name()
                    .map_or_else(|| "store".into(), |n| n.to_string_lossy())
            ),
            true,
        ),
    };
    Ok(ClusterPlace {
        endpoints: global.endpoints.clone(),
        namespace,
        own,
    })
}

/// The demo's state between steps.
struct Demo {
    db: Db,
    clock: ManualClock,
    backend: Backend,
    /// Where the store is, on etcd.
    #[cfg(feature = "etcd")]
    cluster: Option<ClusterPlace>,
    /// The temporary directory: the store, its backups and restored copies.
    root: PathBuf,
    early_backup: PathBuf,
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

    /// The backend of the demo's backups' restored copies: the store's
    /// own, or redb for a store in a cluster (a restore into a directory
    /// moves it off the cluster).
    fn local_backend(&self) -> Backend {
        match self.backend {
            Backend::Sled => Backend::Sled,
            _ => Backend::Redb,
        }
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

    /// Remembers a scope erased by retention (compaction has no receipt).
    fn expect_erased(&mut self, subject: &str, class: &str) {
        self.erased
            .insert((subject.to_string(), Some(class.to_string())));
    }

    /// A compaction pass, as `shredkv compact` would run it.
    fn compact(&mut self) -> Result<shredkv::CompactionReport> {
        Ok(self.db.compact()?)
    }

    /// What a read returns, in one word.
    fn read_word(&self, subject: &str, class: &str, key: &str) -> &'static str {
        match self.read(subject, class, key) {
            Read::Value(_) => "readable",
            Read::Absent => "absent",
            Read::Erased => "erased",
            Read::Failed => "error",
        }
    }

    /// Reads a record. A closed subject can no longer be read; what it
    /// retains is read through its export (`shredkv export`), where an
    /// erased scope is left out: a written record missing there is erased.
    fn read(&self, subject: &str, class: &str, key: &str) -> Read {
        match self.db.get(subject, class, key.as_bytes()) {
            Ok(Some(value)) => Read::Value(value),
            Ok(None) => Read::Absent,
            Err(e) if e.is_erased() => Read::Erased,
            Err(e) if e.is_closed() => {
                let tag = self.db.subject_tag(subject);
                match self.db.export(subject) {
                    Ok(export) => export
                        .subjects
                        .into_iter()
                        .filter(|s| s.tag == tag)
                        .flat_map(|s| s.classes)
                        .filter(|(name, _)| name == class)
                        .flat_map(|(_, records)| records)
                        .find(|r| r.key == key.as_bytes())
                        .map_or(Read::Erased, |r| Read::Value(r.value)),
                    Err(e) if e.is_erased() => Read::Erased,
                    Err(_) => Read::Failed,
                }
            }
            Err(_) => Read::Failed,
        }
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
    if let Some(socket) = &global.admin_socket {
        return Err(crate::exit::CliError::new(
            Code::Usage,
            format!(
                "demo cannot run against a live store ({}): it runs on a temporary store of its own",
                socket.display()
            ),
        )
        .hint("run `shredkv demo` without --admin-socket (and without SHREDKV_ADMIN_SOCKET)")
        .into());
    }
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("shredkv-demo-")
        .tempdir()
        .context("create the demo's temporary directory")?;
    let backend = global.backend.map_or(Backend::Redb, Backend::from);
    let start: Timestamp = START.parse().context("the demo's start time")?;
    let clock = ManualClock::new(start);
    let root = dir.path().to_path_buf();
    // The production layout: the key file outside the store directory.
    let config = Config::new(root.join("store"))
        .key_file(root.join("keys"))
        .backend(backend)
        .clock(Arc::new(clock.clone()))
        .maintenance_every(None);
    #[cfg(feature = "etcd")]
    let (config, cluster) = if backend == Backend::Etcd {
        let place = cluster_place(global, &root)?;
        let config = config
            .etcd(
                place.endpoints.clone(),
                &place.namespace,
                global.max_txn_ops,
            )
            .max_request_bytes(global.max_request_bytes);
        (config, Some(place))
    } else {
        (config, None)
    };
    let db = Db::open(config)?;
    // With --json the story goes to stderr and the checks to stdout.
    let out: Box<dyn Write> = if global.json {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let mut demo = Demo {
        db,
        clock,
        backend,
        #[cfg(feature = "etcd")]
        cluster,
        early_backup: root.join("backup-early"),
        root,
        out,
        names: HashMap::new(),
        written: Vec::new(),
        erased: BTreeSet::new(),
        checks: Vec::new(),
    };
    demo.say(&format!(
        "shredkv demo: a temporary {backend} store at {}, the default policy, a simulated clock from {START}",
        demo.db.path().display()
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
    #[cfg(feature = "etcd")]
    let cluster = demo.cluster.take();
    drop(demo);
    // The store's keys go with the directory; on etcd its namespace goes too
    // when the demo named it (a namespace given with --namespace stays).
    #[cfg(feature = "etcd")]
    if let Some(place) = cluster.filter(|p| p.own) {
        shredkv::internal::delete_etcd_prefix(&place.endpoints, place.namespace.as_bytes())
            .map_err(|e| anyhow::anyhow!("remove the demo's namespace {}: {e}", place.namespace))?;
    }
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
                "account_records",
                "ledger-2024".into(),
                format!("{MARKER}-LEDGER {account}: 2024 billing ledger, 12 payments received"),
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
                .map(|(subject, class, key, value, options)| Written {
                    subject,
                    class,
                    key,
                    value,
                    expires_at: options.expires_at,
                }),
        );
    }
    demo.db.flush()?;
    Ok(())
}

fn stored(demo: &mut Demo) -> Result<()> {
    let stats = demo.db.stats()?;
    let text = store::stats_text(demo.db.path(), &stats);
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

fn backup_early(demo: &mut Demo) -> Result<()> {
    let path = demo.early_backup.clone();
    demo.say(&format!(
        "The operator backs the store up (the key file stays out of the backup):\n  shredkv backup {}",
        path.display()
    ))?;
    let report = demo.db.backup(&path)?;
    demo.say(&format!(
        "  {} entries written at {}; decryptable only with the live key file, and only within the purge window",
        report.entries,
        output::time(report.taken_at)
    ))
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

fn deletion_request(demo: &mut Demo) -> Result<()> {
    demo.say(&format!(
        "{REQUESTING_USER} files a deletion request; the policy decides, class by class:\n  shredkv request-deletion {REQUESTING_USER}\n"
    ))?;
    let receipt = demo
        .db
        .request_deletion(REQUESTING_USER, ErasureReason::DeletionRequest)?;
    demo.receipt(&receipt)?;
    let messages_gone = matches!(
        demo.read(REQUESTING_USER, "message_content", "message-0001"),
        Read::Erased
    );
    demo.check(
        "erase_now classes are erased at once (the messages read as erased)",
        messages_gone,
    )?;
    let policy = demo.db.policy().clone();
    // An end user holds none of the classes kept by law (invoices and
    // records are its account's): its receipt names none (hole 11).
    let explained = receipt.retained.iter().all(|r| {
        policy.class(&r.class).is_some_and(|c| {
            r.reason.contains(c.legal_basis())
                && (r.until.is_some() || c.clock() == ClockStart::ManualRelease)
        })
    });
    demo.check(
        "retained classes (only those held) are listed with a date (or `until released`) and their legal basis",
        explained,
    )?;
    let pending = demo
        .db
        .certificate(REQUESTING_USER)
        .is_ok_and(|c| !c.is_complete());
    demo.check(
        "a certificate issued now says PENDING: old epochs still wrap copies of the keys",
        pending,
    )
}

fn marketing_opt_out(demo: &mut Demo) -> Result<()> {
    demo.say(&format!(
        "{OPTED_OUT_ACCOUNT} unsubscribes from the newsletter:\n  shredkv opt-out {OPTED_OUT_ACCOUNT}\n"
    ))?;
    let scheduled = demo.db.opt_out_of_marketing(OPTED_OUT_ACCOUNT)?;
    let tag = demo.db.subject_tag(OPTED_OUT_ACCOUNT);
    let table = retention::scheduled_text(
        &scheduled,
        demo.db.now(),
        &|t| (*t == tag).then(|| OPTED_OUT_ACCOUNT.to_string()),
        "subjects",
    );
    write!(demo.out, "{}", indent_text(&table))?;
    demo.advance_days(2);
    demo.compact()?;
    let day2 = demo.read_word(OPTED_OUT_ACCOUNT, "marketing_contacts", "newsletter");
    demo.advance_days(1);
    demo.compact()?;
    let day3 = demo.read_word(OPTED_OUT_ACCOUNT, "marketing_contacts", "newsletter");
    demo.say(&format!(
        "  compaction 2 days later: the newsletter contact is {day2}; 3 days later: {day3}"
    ))?;
    demo.expect_erased(OPTED_OUT_ACCOUNT, "marketing_contacts");
    demo.check(
        "marketing contacts are kept 2 days after the opt-out and erased 3 days after it",
        day2 == "readable" && day3 == "erased",
    )
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
        "The audit is closed; the hold is released, which carries out the shred it parked (no second request):\n  shredkv release {HELD_ACCOUNT} --class invoices\n"
    ))?;
    let released = demo.db.release_hold(HELD_ACCOUNT, Some("invoices"))?;
    demo.check("the hold existed and is released", released)?;
    let erased = demo
        .db
        .subject(HELD_ACCOUNT)?
        .is_some_and(|s| s.state == shredkv::SubjectState::Erased);
    demo.check(
        "the account is erased by the release itself, as the shred asked",
        erased,
    )?;
    if erased {
        demo.erased.insert((HELD_ACCOUNT.to_string(), None));
    }
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

/// Indents every line of `text` by two spaces.
fn indent_text(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// `at` plus a calendar span, in UTC.
fn after(at: Timestamp, years: i16, days: i32) -> Result<Timestamp> {
    let span = jiff::Span::new().years(years).days(days);
    Ok(at
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .checked_add(span)
        .context("a milestone date")?
        .timestamp())
}

/// What a read of one record returned.
enum Read {
    /// Its value.
    Value(Vec<u8>),
    /// Nothing (absent or expired).
    Absent,
    /// `erased` (or, for a closed subject, left out of its export).
    Erased,
    /// Another error.
    Failed,
}

/// When closing an account at `closed` erases `class`, if it does: classes
/// kept for a span after closure, those kept until termination, and the
/// marketing classes (closing ends marketing consent; the demo's closed
/// account never opted out before).
fn closure_deadline(class: &ClassPolicy, closed: Timestamp) -> Option<Timestamp> {
    match class.clock() {
        ClockStart::AccountClosure | ClockStart::MarketingOptOut => class.deadline(closed),
        ClockStart::Write if class.until_account_closure() => Some(closed),
        _ => None,
    }
}

fn close_and_wait(demo: &mut Demo) -> Result<()> {
    demo.say(&format!(
        "{CLOSED_ACCOUNT} closes its account; each class's retention clock starts:\n  shredkv close-account {CLOSED_ACCOUNT}\n"
    ))?;
    let scheduled = demo.db.close_account(CLOSED_ACCOUNT)?;
    let closed = demo.db.now();
    let tag = demo.db.subject_tag(CLOSED_ACCOUNT);
    let table = retention::scheduled_text(
        &scheduled,
        closed,
        &|t| (*t == tag).then(|| CLOSED_ACCOUNT.to_string()),
        "end users",
    );
    write!(demo.out, "{}", indent_text(&table))?;

    // The columns: class, the record read, and when the policy erases it.
    let users: Vec<&str> = PLATFORM
        .iter()
        .find(|(a, _)| *a == CLOSED_ACCOUNT)
        .map(|(_, u)| u.to_vec())
        .unwrap_or_default();
    let user = users.first().copied().unwrap_or(RESTRICTED_USER);
    let columns: [(&str, &str, &str, &str); 5] = [
        (
            "profile",
            CLOSED_ACCOUNT,
            "account_profile",
            "billing-contact",
        ),
        (
            "support",
            CLOSED_ACCOUNT,
            "support_communications",
            "ticket-1",
        ),
        ("records", CLOSED_ACCOUNT, "account_records", "ledger-2024"),
        ("invoices", CLOSED_ACCOUNT, "invoices", "invoice-2024-01"),
        ("messages", user, "message_content", "message-0001"),
    ];
    let policy = demo.db.policy().clone();
    let deadline = |class: &str| -> Timestamp {
        policy
            .class(class)
            .and_then(|c| closure_deadline(c, closed))
            .unwrap_or(Timestamp::MAX)
    };
    demo.say(&format!(
        "\nThen compaction runs at each milestone (`shredkv compact`, from cron or the background compactor). Reads of {CLOSED_ACCOUNT}'s records (messages: of its end user {user}):"
    ))?;
    let milestones: [(&str, i16, i32); 6] = [
        ("30 days", 0, 30),
        ("61 days", 0, 61),
        ("1 year", 1, 0),
        ("3 years 1 day", 3, 1),
        ("7 years 1 day", 7, 1),
        ("10 years 1 day", 10, 1),
    ];
    let mut table = Table::new(&[
        "after closure",
        "profile",
        "support",
        "records",
        "invoices",
        "messages",
        "epochs live",
        "destroyed",
    ])
    .right(&[6, 7]);
    let mut as_expected = [true; 5];
    let mut destroyed = 0u32;
    for (label, years, days) in milestones {
        let at = after(closed, years, days)?;
        demo.clock.set(at);
        demo.compact()?;
        let mut row = vec![label.to_string()];
        for (i, (_, subject, class, key)) in columns.iter().enumerate() {
            let word = demo.read_word(subject, class, key);
            let expected = if at >= deadline(class) {
                "erased"
            } else {
                "readable"
            };
            if let Some(ok) = as_expected.get_mut(i) {
                *ok &= word == expected;
            }
            row.push(word.to_string());
        }
        let stats = demo.db.stats()?;
        let live = u32::try_from(stats.live_epochs.len()).unwrap_or(u32::MAX);
        destroyed = stats.current_epoch.saturating_sub(live);
        row.push(live.to_string());
        row.push(destroyed.to_string());
        table.row(row);
    }
    write!(demo.out, "{}", indent_text(&table.render()))?;
    demo.say(
        "  (profile = account_profile, support = support_communications, records = account_records)",
    )?;
    for (i, (_, _, class, _)) in columns.iter().enumerate() {
        let when = output::span_words(closed, deadline(class));
        let what = if deadline(class) <= closed {
            format!("{class} is erased at closure (kept only until termination of the account)")
        } else {
            format!("{class} is readable until {when} after closure and erased after")
        };
        demo.check(&what, as_expected.get(i).copied().unwrap_or(false))?;
    }
    demo.check(
        &format!("epochs are rotated and destroyed as time passes ({destroyed} destroyed)"),
        destroyed > 0,
    )?;
    // Everything of the account the policy ties to closure is gone now,
    // for the account and its end users.
    let now = demo.db.now();
    for (subject, class) in std::iter::once(CLOSED_ACCOUNT)
        .chain(users.iter().copied())
        .flat_map(|s| {
            policy
                .classes()
                .iter()
                .filter(|c| closure_deadline(c, closed).is_some_and(|d| d <= now))
                .map(move |c| (s, c.name().to_string()))
        })
        .collect::<Vec<_>>()
    {
        demo.expect_erased(subject, &class);
    }
    Ok(())
}

fn restore_early(demo: &mut Demo) -> Result<()> {
    let target = demo.root.join("restore-early");
    demo.say(&format!(
        "The backup taken on day one ({START}) is restored next to the store:\n  shredkv restore {} --into {}",
        demo.early_backup.display(),
        target.display()
    ))?;
    let config = Config::new(&target)
        .backend(demo.local_backend())
        .clock(Arc::new(demo.clock.clone()))
        .maintenance_every(None);
    let outcome = Db::restore(&demo.early_backup, config, ErasureSource::Live(&demo.db));
    let refused = match &outcome {
        Ok(_) => {
            demo.say("  -> restored (it should not have been)")?;
            false
        }
        Err(err) => {
            demo.say(&format!("  -> error: {err}"))?;
            matches!(err, Error::StoreKeysDestroyed { .. })
        }
    };
    drop(outcome);
    demo.check(
        "the early backup cannot be restored: StoreKeysDestroyed (older than the purge window, by design)",
        refused,
    )
}

fn restore_recent(demo: &mut Demo) -> Result<()> {
    let backup = demo.root.join("backup-recent");
    let target = demo.root.join("restore-recent");
    demo.say(&format!(
        "A backup is taken now; afterwards {LATE_ACCOUNT} is shredded; then the backup is restored, replaying the live store's erasure ledger:\n  shredkv backup {}\n  shredkv shred {LATE_ACCOUNT}\n  shredkv restore {} --into {}",
        backup.display(),
        backup.display(),
        target.display()
    ))?;
    demo.db.backup(&backup)?;
    let receipt = demo.db.shred(LATE_ACCOUNT, Classes::All)?;
    for scope in &receipt.erased {
        demo.erased
            .insert((demo.name(&scope.subject), scope.class.clone()));
    }
    let config = Config::new(&target)
        .backend(demo.local_backend())
        .clock(Arc::new(demo.clock.clone()))
        .maintenance_every(None);
    let (restored, report) = Db::restore(&backup, config, ErasureSource::Live(&demo.db))?;
    demo.say(&format!(
        "  -> {} entries copied, {} erasures replayed, {} keys destroyed",
        report.entries, report.erasures_replayed, report.keys_destroyed
    ))?;
    let line = match restored.get(LATE_ACCOUNT, "invoices", b"invoice-2024-01") {
        Ok(Some(_)) => "readable".to_string(),
        Ok(None) => "absent".to_string(),
        Err(err) => format!("error: {err}"),
    };
    demo.say(&format!(
        "  get {LATE_ACCOUNT} invoices invoice-2024-01 (restored copy) -> {line}"
    ))?;
    let stays_erased = ["invoices", "account_profile", "account_records"]
        .iter()
        .all(|class| {
            restored
                .scan(LATE_ACCOUNT, class)
                .is_err_and(|e| e.is_erased())
        });
    demo.check(
        &format!("{LATE_ACCOUNT}, erased after the backup, stays erased in the restored copy"),
        stays_erased && report.erasures_replayed > 0,
    )?;
    let live = restored
        .get(OPTED_OUT_ACCOUNT, "invoices", b"invoice-2024-01")
        .is_ok_and(|v| v.is_some());
    demo.check(
        &format!("{OPTED_OUT_ACCOUNT}'s invoices read back from the restored copy"),
        live,
    )?;
    restored.flush()?;
    Ok(())
}

fn certificate(demo: &mut Demo) -> Result<()> {
    demo.say(&format!(
        "{FORGOTTEN_USER} asks for proof of erasure:\n  shredkv certificate {FORGOTTEN_USER}\n"
    ))?;
    let certificate = demo.db.certificate(FORGOTTEN_USER)?;
    write!(demo.out, "{}", indent_text(&certificate.to_string()))?;
    demo.check(
        "the certificate is COMPLETE: keys, every epoch that wrapped them and the dead ciphertext are gone",
        certificate.is_complete(),
    )
}

fn verify(demo: &mut Demo) -> Result<()> {
    // 1. Every erased record is unreadable through the API.
    let mut erased_records = 0usize;
    let mut erased_ok = true;
    let mut live_records = 0usize;
    let mut live_ok = true;
    let mut expired_records = 0usize;
    let mut expired_ok = true;
    let now = demo.db.now();
    for w in &demo.written {
        let read = demo.read(&w.subject, w.class, &w.key);
        if demo.is_erased(&w.subject, w.class) {
            erased_records += 1;
            erased_ok &= matches!(read, Read::Erased);
        } else if w.expires_at.is_some_and(|e| e <= now) {
            expired_records += 1;
            expired_ok &= matches!(read, Read::Absent);
        } else {
            live_records += 1;
            live_ok &= matches!(read, Read::Value(v) if v == w.value.as_bytes());
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
            // A closed subject refuses every scan; its erased scopes are
            // left out of its export instead.
            scopes_ok &= match demo.db.scan(subject, class) {
                Err(e) if e.is_closed() => demo.db.export(subject).is_ok_and(|export| {
                    let tag = demo.db.subject_tag(subject);
                    !export
                        .subjects
                        .iter()
                        .filter(|s| s.tag == tag)
                        .flat_map(|s| &s.classes)
                        .any(|(name, _)| name == class)
                }),
                other => other.is_err_and(|e| e.is_erased()),
            };
        }
    }
    demo.check(
        &format!("all {scopes} erased scopes (subject x class) fail to scan with `erased`"),
        scopes_ok,
    )?;
    demo.check(
        &format!(
            "all {expired_records} expired records (the customer's 90-day TTL) read as absent"
        ),
        expired_ok && expired_records > 0,
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
    let scan = scan_dir(&demo.root, &needles)?;
    #[cfg_attr(not(feature = "etcd"), allow(unused_mut))]
    let mut found: Vec<String> = scan
        .found
        .iter()
        .map(|(needle, file)| format!("`{needle}` in {file}"))
        .collect();
    #[cfg_attr(not(feature = "etcd"), allow(unused_mut))]
    let mut what = format!(
        "the {} files of the store, its backups and restored copies ({})",
        scan.files,
        output::bytes(scan.bytes)
    );
    #[cfg_attr(not(feature = "etcd"), allow(unused_mut))]
    let mut control_in_cluster = None;
    #[cfg(feature = "etcd")]
    if let Some(place) = &demo.cluster {
        // The store's bytes are in the cluster: every key and value its
        // history holds under the namespace, old revisions included.
        let history =
            shredkv::internal::read_etcd_history(&place.endpoints, place.namespace.as_bytes())
                .map_err(|e| {
                    anyhow::anyhow!("read the etcd cluster's history of the store: {e}")
                })?;
        let bytes: usize = history.puts.iter().map(|(k, v)| k.len() + v.len()).sum();
        for (key, value) in &history.puts {
            for needle in &needles {
                if contains(key, needle.as_bytes()) || contains(value, needle.as_bytes()) {
                    found.push(format!(
                        "`{needle}` in the cluster under {}",
                        String::from_utf8_lossy(key)
                    ));
                }
            }
        }
        let compacted = history.compacted_before.map_or(String::new(), |rev| {
            format!(", since its compaction at revision {rev}")
        });
        what = format!(
            "{what}, nor in the {} puts ({}) the etcd cluster's history holds under the store's namespace{compacted}",
            history.puts.len(),
            output::bytes(u64::try_from(bytes).unwrap_or(u64::MAX))
        );
        control_in_cluster = Some(
            history
                .puts
                .iter()
                .any(|(k, v)| contains(k, b"account_profile") || contains(v, b"account_profile")),
        );
    }
    demo.check(
        &format!(
            "no value marker, subject id or record key in any byte of {what} ({} needles)",
            needles.len()
        ),
        found.is_empty() && scan.files > 0,
    )?;
    for hit in &found {
        demo.say(&format!("        found {hit}"))?;
    }
    // A control: the class names are kept in plain text (store metadata),
    // so the same scan must find one, or it is not looking at the data.
    if let Some(found_in_cluster) = control_in_cluster {
        return demo.check(
            "control: the same search does find the plain-text class name `account_profile` in the store's metadata in the cluster",
            found_in_cluster,
        );
    }
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
