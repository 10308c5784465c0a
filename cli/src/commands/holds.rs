//! Legal holds: `hold`, `release`, `holds`.

use anyhow::Result;
use serde_json::json;

use crate::context::Global;
use crate::exit::{CliError, Code};
use crate::output::{self, Table};

/// Arguments of `hold`.
#[derive(Debug, clap::Args)]
pub(crate) struct HoldArgs {
    /// The subject's id.
    subject: String,
    /// Hold only this class; every class when left out.
    #[arg(long, value_name = "CLASS")]
    class: Option<String>,
    /// Why: a case or request reference (no personal data: it is audited).
    #[arg(long, value_name = "REASON")]
    reason: String,
}

/// Arguments of `release`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReleaseArgs {
    /// The subject's id.
    subject: String,
    /// The held class; the whole-subject hold when left out.
    #[arg(long, value_name = "CLASS")]
    class: Option<String>,
}

fn scope(class: Option<&String>) -> String {
    class.map_or_else(|| "every class".into(), |c| format!("class {c}"))
}

/// `hold`: places a legal hold.
pub(crate) fn hold(global: &Global, args: &HoldArgs) -> Result<Code> {
    let db = global.access()?;
    db.place_hold(&args.subject, args.class.as_deref(), &args.reason)?;
    let tag = db.subject_tag(&args.subject)?.to_hex();
    if global.json {
        output::print_json(&json!({
            "subject": tag, "class": args.class, "reason": args.reason, "held": true,
        }))?;
    } else {
        println!(
            "legal hold placed on {} of {} ({tag}): {}; nothing it covers is erased until it is released",
            scope(args.class.as_ref()),
            args.subject,
            args.reason
        );
    }
    Ok(Code::Ok)
}

/// `release`: releases a legal hold; exit 3 if there was none.
pub(crate) fn release(global: &Global, args: &ReleaseArgs) -> Result<Code> {
    let db = global.access()?;
    let tag = db.subject_tag(&args.subject)?.to_hex();
    if !db.release_hold(&args.subject, args.class.as_deref())? {
        return Err(CliError::new(
            Code::NotFound,
            format!(
                "no legal hold on {} of subject {tag}",
                scope(args.class.as_ref())
            ),
        )
        .hint("`shredkv holds` lists the holds in force; a class hold is released with --class")
        .into());
    }
    if global.json {
        output::print_json(&json!({ "subject": tag, "class": args.class, "held": false }))?;
    } else {
        println!(
            "legal hold released on {} of {} ({tag}); the erasures it blocked are done, the expiries it blocked are purged at the next compaction",
            scope(args.class.as_ref()),
            args.subject
        );
    }
    Ok(Code::Ok)
}

/// `holds`: every legal hold in force.
pub(crate) fn list(global: &Global) -> Result<Code> {
    let db = global.access()?;
    let holds = db.holds()?;
    if global.json {
        output::print_json(&json!({ "holds": serde_json::to_value(&holds)? }))?;
        return Ok(Code::Ok);
    }
    if holds.is_empty() {
        println!("no legal holds");
        return Ok(Code::Ok);
    }
    let mut table = Table::new(&["subject", "class", "placed", "reason"]);
    for h in &holds {
        table.row([
            h.subject.to_hex(),
            h.class.clone().unwrap_or_else(|| "(every class)".into()),
            output::time(h.placed_at),
            h.reason.clone(),
        ]);
    }
    table.print();
    Ok(Code::Ok)
}
