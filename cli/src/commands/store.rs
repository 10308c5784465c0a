//! Store-wide commands: `init`, `stats`, `verify`.

use anyhow::Result;
use serde::Serialize;
use serde_json::{Value, json};
use shredkv::{IntegrityReport, OverduePurge, ProblemKind, Stats};

use crate::context::Global;
use crate::exit::Code;
use crate::output::{self, Table};

/// `init`: creates a store in a new or empty directory.
pub(crate) fn init(global: &Global) -> Result<Code> {
    global.refuse_live(
        "init",
        "init creates a new store: choose a new --store directory",
    )?;
    let db = global.create()?;
    let dir = db.path().to_path_buf();
    let key_file = global.key_file_for(&dir);
    let digest = hex(&db.policy().digest());
    db.flush()?;
    if global.pkcs11_module.is_some() {
        let keys = global.keys_description(&dir);
        if global.json {
            output::print_json(&json!({
                "store": dir.display().to_string(),
                "backend": db.backend().name(),
                "keys": keys,
                "policy_digest": digest,
                "classes": db.policy().classes().len(),
            }))?;
        } else {
            println!("Created a {} store at {}", db.backend(), dir.display());
            output::print_fields(&[
                ("keys", keys),
                (
                    "policy",
                    format!("{} classes, digest {digest}", db.policy().classes().len()),
                ),
            ]);
        }
        return Ok(Code::Ok);
    }
    if global.json {
        output::print_json(&json!({
            "store": dir.display().to_string(),
            "backend": db.backend().name(),
            "key_file": key_file.display().to_string(),
            "policy_digest": digest,
            "classes": db.policy().classes().len(),
        }))?;
        return Ok(Code::Ok);
    }
    println!("Created a {} store at {}", db.backend(), dir.display());
    output::print_fields(&[
        ("key file", key_file.display().to_string()),
        (
            "policy",
            format!("{} classes, digest {digest}", db.policy().classes().len()),
        ),
    ]);
    if key_file.starts_with(&dir) {
        eprintln!(
            "note: the key file is inside the store directory (--allow-key-file-in-store); in production move it out, off the volume that is backed up with the store, and pass --key-file: every copy of the store carries the keys that decrypt it"
        );
    }
    Ok(Code::Ok)
}

/// Arguments of `shard-of`.
#[derive(Debug, clap::Args)]
pub(crate) struct ShardOfArgs {
    /// The account's id (an end user lives in its account's shard).
    pub(crate) account: String,
    /// How many shards the deployment has.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) shards: u32,
}

/// `shard-of`: the shard an account lives in (no store needed).
pub(crate) fn shard_of(global: &Global, args: &ShardOfArgs) -> Result<Code> {
    let shard = shredkv::shard_of(&args.account, args.shards)?;
    if global.json {
        output::print_json(&json!({ "shard": shard, "shards": args.shards }))?;
    } else {
        println!("shard {shard} of {}", args.shards);
    }
    Ok(Code::Ok)
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `stats`: the store's vital statistics.
pub(crate) fn stats(global: &Global) -> Result<Code> {
    let db = global.access()?;
    let stats = db.stats()?;
    if global.json {
        output::print_json(&with_purge(&stats, &stats.overdue)?)?;
    } else {
        print!("{}", stats_text(&db.path(), &stats));
    }
    Ok(if stats.overdue.is_overdue() {
        Code::PurgeOverdue
    } else {
        Code::Ok
    })
}

/// A report with overdue purge work (`overdue`) as JSON: its serialization,
/// with that work under `purge` and flagged `overdue` when any of it is (the
/// names the CLI has always used; scripts test `.purge.overdue`).
///
/// # Errors
/// Serializing the report failing.
fn with_purge(report: &impl Serialize, overdue: &OverduePurge) -> Result<Value> {
    let mut doc = serde_json::to_value(report)?;
    let purge = output::json_with(overdue, [("overdue", json!(overdue.is_overdue()))])?;
    if let Some(fields) = doc.as_object_mut() {
        fields.remove("overdue");
        fields.insert("purge".into(), purge);
    }
    Ok(doc)
}

/// What the backend may still take before it refuses writes, and of what.
fn headroom_text(stats: &Stats) -> String {
    match (stats.headroom_bytes, stats.capacity_bytes) {
        (Some(free), Some(capacity)) if capacity > 0 => {
            let percent = u128::from(free) * 100 / u128::from(capacity);
            let warning = if free == 0 {
                " - FULL: writes and shreds are refused until room is made"
            } else {
                ""
            };
            format!(
                "{} of {} ({percent}% free){warning}",
                output::bytes(free),
                output::bytes(capacity)
            )
        }
        (Some(free), _) => output::bytes(free),
        (None, _) => "not reported by this backend".into(),
    }
}

/// The store's time, and the clock's when it stands behind it.
fn time_text(stats: &Stats) -> String {
    let store = output::time(stats.store_time);
    let behind = stats.store_time.as_second() - stats.clock_time.as_second();
    let by = match behind {
        ..1 => return store,
        1..120 => format!("{behind} s"),
        120..7_200 => format!("{} min", behind / 60),
        7_200..172_800 => format!("{} h", behind / 3_600),
        _ => output::span_words(stats.clock_time, stats.store_time),
    };
    format!(
        "{store} - the clock reads {}, {by} behind: the store's time stands until the clock passes it (it was set back, or corrected after running ahead)",
        output::time(stats.clock_time)
    )
}

/// The statistics as text: the store's figures, then a table of classes.
pub(crate) fn stats_text(path: &std::path::Path, stats: &Stats) -> String {
    let epochs: Vec<String> = stats.live_epochs.iter().map(u32::to_string).collect();
    let mut out = output::fields_text(&[
        ("store", path.display().to_string()),
        (
            "backend",
            format!(
                "{} ({} on disk)",
                stats.backend,
                output::bytes(stats.size_on_disk)
            ),
        ),
        ("headroom", headroom_text(stats)),
        ("time", time_text(stats)),
        (
            "shard",
            match (stats.shard, stats.shards) {
                (Some(shard), Some(shards)) => format!("{shard} of {shards}"),
                _ => "none (not split into shards)".into(),
            },
        ),
        (
            "subjects",
            format!(
                "{} accounts, {} end users ({} active, {} restricted, {} erased)",
                stats.accounts, stats.end_users, stats.active, stats.restricted, stats.erased
            ),
        ),
        (
            "keys",
            format!(
                "{} live in {} scopes, {} destroyed",
                stats.keys_live, stats.scopes, stats.keys_destroyed
            ),
        ),
        (
            "re-key debts",
            format!(
                "{} (earliest re-key due {})",
                stats.rekey_debts,
                output::opt_time(stats.oldest_purge_deadline)
            ),
        ),
        (
            "deadlines",
            format!(
                "{} (next {})",
                stats.deadlines,
                output::opt_time(stats.next_deadline)
            ),
        ),
        ("legal holds", stats.holds.to_string()),
        ("audit entries", stats.audit_entries.to_string()),
        (
            "epochs",
            format!(
                "current {}, live [{}]",
                stats.current_epoch,
                epochs.join(", ")
            ),
        ),
        ("purge", stats.overdue.to_string()),
    ]);
    out.push('\n');
    let mut table = Table::new(&["class", "records", "dead", "bytes"]).right(&[1, 2, 3]);
    for class in &stats.classes {
        table.row([
            class.name.clone(),
            class.records.to_string(),
            class.dead.to_string(),
            output::bytes(class.bytes),
        ]);
    }
    out.push_str(&table.render());
    out
}

fn kind_name(kind: ProblemKind) -> &'static str {
    match kind {
        ProblemKind::Corrupt => "corrupt",
        ProblemKind::Tampered => "tampered",
    }
}

/// `verify`: the full integrity scan, with progress; exit 5 on damage, 8
/// when purge work is overdue (and nothing is damaged).
pub(crate) fn verify(global: &Global) -> Result<Code> {
    let db = global.access()?;
    let bar = output::progress(None, "records checked");
    let report = db.verify(&mut |done| bar.set_position(done))?;
    bar.finish_and_clear();
    if global.json {
        output::print_json(&report_json(&report)?)?;
    } else {
        print_report(&report);
    }
    Ok(if !report.is_clean() {
        Code::Integrity
    } else if report.overdue.is_overdue() {
        Code::PurgeOverdue
    } else {
        Code::Ok
    })
}

/// The scan's report as JSON, with whether it is `clean`.
fn report_json(report: &IntegrityReport) -> Result<Value> {
    let mut doc = with_purge(report, &report.overdue)?;
    if let Some(fields) = doc.as_object_mut() {
        fields.insert("clean".into(), json!(report.is_clean()));
    }
    Ok(doc)
}

fn print_report(report: &IntegrityReport) {
    output::print_fields(&[
        (
            "records",
            format!(
                "{} authenticated, {} dead (keys destroyed or expired, awaiting compaction)",
                report.records_checked, report.records_dead
            ),
        ),
        (
            "keys",
            format!("{} vault entries decoded", report.keys_checked),
        ),
        (
            "subjects",
            format!("{} subject records decoded", report.subjects_checked),
        ),
        (
            "audit chain",
            format!(
                "{} entries, head {}",
                report.audit.entries, report.audit.head_hex
            ),
        ),
    ]);
    if !report.problems.is_empty() {
        println!();
        let mut table = Table::new(&["problem", "tree", "subject", "class", "key", "detail"]);
        for p in &report.problems {
            table.row([
                kind_name(p.kind).to_string(),
                p.location.tree.to_string(),
                p.location
                    .subject
                    .map_or_else(|| "-".to_string(), |t| t.to_hex()),
                p.location.class.clone().unwrap_or_else(|| "-".into()),
                p.location.key_hex.clone(),
                p.detail.clone(),
            ]);
        }
        table.print();
        println!();
        println!(
            "corrupt: the bytes are damaged (media or file-system fault); restore the affected records from a backup."
        );
        println!(
            "tampered: the bytes are well formed but fail authentication (altered, or moved from another record); treat it as a security incident and restore from a backup."
        );
    }
    for b in &report.audit.breaks {
        println!("audit: {b}");
    }
    if report.overdue.is_overdue() {
        println!("purge overdue: {}", report.overdue);
    }
    println!(
        "{}",
        if !report.is_clean() {
            "DAMAGED: see above"
        } else if report.overdue.is_overdue() {
            "OVERDUE: no damage found, but purge work is late (see above)"
        } else {
            "OK: no damage found, no purge overdue"
        }
    );
}
