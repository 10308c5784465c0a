//! Retention events and their enforcement: `close-account`, `opt-out`,
//! `release-data`, `request-deletion`, `compact`, `rotate-epoch`.
//!
//! An event (closure, opt-out, release) erases nothing itself: it starts the
//! retention clocks of the classes the policy ties to it and schedules each
//! scope's erasure; compaction erases what is due. A deletion request erases
//! at once what the policy lets go and answers with a receipt for the rest.

use std::collections::BTreeMap;

use anyhow::Result;
use jiff::Timestamp;
use serde_json::json;
use shredkv::{CompactionReport, Scheduled, SubjectTag};

use crate::commands::erasure;
use crate::context::Global;
use crate::exit::Code;
use crate::output::{self, Table};

/// Arguments of `close-account`.
#[derive(Debug, clap::Args)]
pub(crate) struct CloseArgs {
    /// The account's id; its end users close with it.
    account: String,
}

/// Arguments of `opt-out`.
#[derive(Debug, clap::Args)]
pub(crate) struct OptOutArgs {
    /// The subject's id (an account or an end user).
    subject: String,
}

/// Arguments of `release-data`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReleaseDataArgs {
    /// The subject's id.
    subject: String,
    /// A class kept until released (`clock = "manual_release"`).
    class: String,
}

/// Arguments of `request-deletion`.
#[derive(Debug, clap::Args)]
pub(crate) struct DeletionArgs {
    /// The subject's id; an account's end users are included.
    subject: String,
    /// The account belongs to a minor: erase everything not under a legal
    /// hold now, retention obligations notwithstanding.
    #[arg(long)]
    underage: bool,
}

/// Arguments of `compact`.
#[derive(Debug, clap::Args)]
pub(crate) struct CompactArgs {
    /// Do at most N due items, leaving the rest for the next run.
    #[arg(long, value_name = "N")]
    budget: Option<usize>,
}

/// Scheduled erasures as a table, one row per date and class, earliest
/// first. `name` labels the subject the caller knows by id; the others are
/// counted as `others` ("end users").
pub(crate) fn scheduled_text(
    scheduled: &[Scheduled],
    now: Timestamp,
    name: &dyn Fn(&SubjectTag) -> Option<String>,
    others: &str,
) -> String {
    // (erase at, class) -> (named subjects, others)
    let mut rows: BTreeMap<(Timestamp, String), (Vec<String>, usize)> = BTreeMap::new();
    for s in scheduled {
        let row = rows.entry((s.erase_at, s.class.clone())).or_default();
        match name(&s.subject) {
            Some(label) => row.0.push(label),
            None => row.1 += 1,
        }
    }
    let mut table = Table::new(&["erase at", "in", "class", "subjects"]);
    for ((at, class), (mut who, n)) in rows {
        if n > 0 {
            who.push(count(n, others));
        }
        let when = if at <= now {
            "now (next compaction)".to_string()
        } else {
            output::span_words(now, at)
        };
        table.row([output::time(at), when, class, who.join(" + ")]);
    }
    table.render()
}

/// "1 end user", "3 end users".
fn count(n: usize, plural: &str) -> String {
    if n == 1 {
        format!("1 {}", plural.strip_suffix('s').unwrap_or(plural))
    } else {
        format!("{n} {plural}")
    }
}

fn indented(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// `close-account`: closes an account and its end users, scheduling the
/// erasure of every class whose clock is the closure.
pub(crate) fn close_account(global: &Global, args: &CloseArgs) -> Result<Code> {
    let db = global.access()?;
    let tag = db.subject_tag(&args.account)?;
    let scheduled = db.close_account(&args.account)?;
    let info = db.subject(&args.account)?;
    let closed_at = info.as_ref().and_then(|i| i.closed_at);
    if global.json {
        output::print_json(&json!({
            "account": tag,
            "closed_at": closed_at,
            "newly_closed": !scheduled.is_empty(),
            "scheduled": serde_json::to_value(&scheduled)?,
        }))?;
        return Ok(Code::Ok);
    }
    if scheduled.is_empty() {
        println!(
            "{} ({tag}) was already closed at {}; its erasures stay as scheduled (`shredkv stats` shows the next deadline)",
            args.account,
            output::opt_time(closed_at)
        );
        return Ok(Code::Ok);
    }
    let users = db.end_users_of(&tag)?.len();
    println!(
        "{} ({tag}) closed at {}, with {}. Scheduled erasures (compaction erases each when due, unless a legal hold stands):",
        args.account,
        output::opt_time(closed_at),
        count(users, "end users")
    );
    let account = args.account.clone();
    print!(
        "{}",
        indented(&scheduled_text(
            &scheduled,
            db.now()?,
            &|t| (*t == tag).then(|| account.clone()),
            "end users",
        ))
    );
    Ok(Code::Ok)
}

/// `opt-out`: a marketing opt-out; marketing classes are scheduled.
pub(crate) fn opt_out(global: &Global, args: &OptOutArgs) -> Result<Code> {
    let db = global.access()?;
    let tag = db.subject_tag(&args.subject)?;
    let scheduled = db.opt_out(&args.subject)?;
    let opted_out_at = db.subject(&args.subject)?.and_then(|i| i.opted_out_at);
    if global.json {
        output::print_json(&json!({
            "subject": tag,
            "opted_out_at": opted_out_at,
            "scheduled": serde_json::to_value(&scheduled)?,
        }))?;
        return Ok(Code::Ok);
    }
    if scheduled.is_empty() {
        println!(
            "{} ({tag}) opted out at {}; nothing new to schedule",
            args.subject,
            output::opt_time(opted_out_at)
        );
        return Ok(Code::Ok);
    }
    println!(
        "{} ({tag}) opted out of marketing at {}. Scheduled erasures:",
        args.subject,
        output::opt_time(opted_out_at)
    );
    let subject = args.subject.clone();
    print!(
        "{}",
        indented(&scheduled_text(
            &scheduled,
            db.now()?,
            &|t| (*t == tag).then(|| subject.clone()),
            "subjects",
        ))
    );
    Ok(Code::Ok)
}

/// `release-data`: ends the retention of a class kept until released.
pub(crate) fn release_data(global: &Global, args: &ReleaseDataArgs) -> Result<Code> {
    let db = global.access()?;
    let scheduled = db.release_data(&args.subject, &args.class)?;
    let tag = scheduled.subject;
    if global.json {
        output::print_json(&scheduled)?;
        return Ok(Code::Ok);
    }
    let now = db.now()?;
    let when = if scheduled.erase_at <= now {
        "at the next compaction".to_string()
    } else {
        format!(
            "at {} (in {})",
            output::time(scheduled.erase_at),
            output::span_words(now, scheduled.erase_at)
        )
    };
    println!(
        "class {} of {} ({tag}) released: it is erased {when}, unless a legal hold stands",
        scheduled.class, args.subject
    );
    Ok(Code::Ok)
}

/// `request-deletion`: erases what the policy lets go now; prints the receipt.
pub(crate) fn request_deletion(global: &Global, args: &DeletionArgs) -> Result<Code> {
    let db = global.access()?;
    let receipt = db.request_deletion(&args.subject, args.underage)?;
    if global.json {
        output::print_json(&erasure::receipt_json(&receipt)?)?;
        return Ok(Code::Ok);
    }
    let tag = receipt.subject;
    let subject = args.subject.clone();
    print!(
        "{}",
        erasure::receipt_text(&receipt, &|t| if *t == tag {
            subject.clone()
        } else {
            t.to_hex()
        })
    );
    if !receipt.retained.is_empty() {
        println!(
            "Retained classes are erased by compaction when their date passes (`shredkv compact`)."
        );
    }
    if !receipt.erased.is_empty() {
        println!(
            "A certificate of erasure: `shredkv certificate {}` (pending until the purge window has passed).",
            args.subject
        );
    }
    Ok(Code::Ok)
}

/// A compaction report as text.
pub(crate) fn compaction_text(report: &CompactionReport) -> String {
    let mut out = format!(
        "Compaction at {}: {} due items done\n",
        output::opt_time(report.ran_at),
        report.items
    );
    out.push_str(&indented(&output::fields_text(&[
        (
            "scopes erased",
            format!("{} (retention ran out)", report.scopes_erased),
        ),
        ("keys destroyed", report.keys_destroyed.to_string()),
        (
            "records removed",
            format!("{} (dead ciphertext)", report.records_removed),
        ),
        (
            "buckets re-keyed",
            format!(
                "{} ({} records re-encrypted)",
                report.buckets_rekeyed, report.records_rekeyed
            ),
        ),
        ("blocked by a hold", report.blocked_by_hold.to_string()),
        (
            "key tree",
            format!(
                "{} nodes re-keyed (the paths of destroyed keys); {} day forests removed whole ({} nodes)",
                report.nodes_rekeyed, report.forests_removed, report.nodes_removed
            ),
        ),
        (
            "epochs",
            format!(
                "{} created, {} destroyed; {} keys re-wrapped",
                report.epochs_created, report.epochs_destroyed, report.keys_rewrapped
            ),
        ),
        ("remaining", report.remaining.to_string()),
    ])));
    out
}

/// `compact`: one compaction pass, with a progress spinner on a terminal.
pub(crate) fn compact(global: &Global, args: &CompactArgs) -> Result<Code> {
    let db = global.access()?;
    let bar = output::progress(None, "due items done");
    let report = db.compact(args.budget.unwrap_or(usize::MAX), &mut |done| {
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let report = report?;
    if global.json {
        output::print_json(&report)?;
    } else {
        print!("{}", compaction_text(&report));
    }
    if report.remaining > 0 {
        eprintln!(
            "note: the budget ran out with {} due items left; run `shredkv compact` again",
            report.remaining
        );
    }
    Ok(Code::Ok)
}

/// `rotate-epoch`: a new epoch key now; retired epochs past their wait go.
pub(crate) fn rotate_epoch(global: &Global) -> Result<Code> {
    let db = global.access()?;
    let report = db.rotate_epoch()?;
    let live = db.stats()?.live_epochs;
    if global.json {
        output::print_json(&output::json_with(&report, [("live_epochs", json!(live))])?)?;
        return Ok(Code::Ok);
    }
    let live: Vec<String> = live.iter().map(u32::to_string).collect();
    println!(
        "epoch {} created; {} keys re-wrapped under it; {} retired epochs destroyed; live epochs [{}]",
        report
            .created
            .map_or_else(|| "-".to_string(), |e| e.to_string()),
        report.keys_rewrapped,
        report.epochs_destroyed,
        live.join(", ")
    );
    Ok(Code::Ok)
}
