//! The audit log: `audit tail`, `audit verify`.

use anyhow::Result;
use serde_json::json;

use crate::access::StoreAccess;
use crate::context::Global;
use crate::exit::Code;
use crate::output::{self, Table};

/// `audit` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AuditCommand {
    /// Show the last entries of the audit log, oldest first.
    #[command(after_help = "Example:\n  shredkv --store /var/lib/shredkv audit tail -n 50")]
    Tail {
        /// How many entries.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
    },
    /// Check the hash chain from its first entry; names the first break.
    #[command(after_help = "Example:\n  shredkv --store /var/lib/shredkv audit verify")]
    Verify,
}

/// Runs an `audit` subcommand.
pub(crate) fn run(global: &Global, command: AuditCommand) -> Result<Code> {
    match command {
        AuditCommand::Tail { lines } => tail(global, lines),
        AuditCommand::Verify => verify(global),
    }
}

fn tail(global: &Global, n: usize) -> Result<Code> {
    let db = global.access()?;
    let entries = db.audit_tail(n)?;
    if global.json {
        // Entries hold class numbers; the store knows their names.
        let entries = entries
            .iter()
            .map(|e| {
                output::json_with(
                    e,
                    [("class_name", json!(class_name(db.as_ref(), e.class)?))],
                )
            })
            .collect::<Result<Vec<_>>>()?;
        output::print_json(&json!({ "entries": entries }))?;
        return Ok(Code::Ok);
    }
    let mut table = Table::new(&["seq", "time", "event", "subject", "class", "detail"]).right(&[0]);
    for e in &entries {
        table.row([
            e.seq.to_string(),
            output::time(e.time),
            e.event.name().to_string(),
            e.subject.map_or_else(|| "-".into(), |t| t.to_hex()),
            match e.class {
                None => "-".into(),
                Some(c) => db.class_name(c)?.unwrap_or_else(|| format!("#{c}")),
            },
            e.detail.clone(),
        ]);
    }
    table.print();
    Ok(Code::Ok)
}

/// The name of an entry's class number, if it has one.
fn class_name(db: &dyn StoreAccess, class: Option<u16>) -> Result<Option<String>> {
    Ok(match class {
        Some(c) => db.class_name(c)?,
        None => None,
    })
}

/// The refusal of a store behind its anchor (its audit tail cut, an
/// anchored entry rewritten, its files rolled back): `audit verify` reports
/// it as a broken log rather than failing to open.
fn behind_anchor(err: &anyhow::Error) -> Option<String> {
    match err.downcast_ref::<shredkv::Error>() {
        Some(e @ shredkv::Error::StoreRolledBack { .. }) => Some(e.to_string()),
        _ => None,
    }
}

fn verify(global: &Global) -> Result<Code> {
    let db = match global.access() {
        Ok(db) => db,
        Err(err) => {
            let Some(why) = behind_anchor(&err) else {
                return Err(err);
            };
            if global.json {
                // No chain report: the store is refused before its chain is
                // walked; the report's fields are null.
                output::print_json(&json!({
                    "intact": false,
                    "entries": null,
                    "head": null,
                    "head_hex": null,
                    "keyed_from": null,
                    "breaks": null,
                    "first_break": why,
                }))?;
            } else {
                println!("BROKEN: {why}");
            }
            return Ok(Code::Integrity);
        }
    };
    let report = db.verify_audit()?;
    let first = report.breaks.first().map(ToString::to_string);
    if global.json {
        output::print_json(&output::json_with(
            &report,
            [
                ("intact", json!(report.breaks.is_empty())),
                ("first_break", json!(first)),
            ],
        )?)?;
    } else if let Some(first) = &first {
        println!("BROKEN: {first}");
        if report.breaks.len() > 1 {
            println!("({} more breaks after it)", report.breaks.len() - 1);
        }
        println!(
            "The log cannot be trusted from that entry on; keep the store as it is for investigation and compare it with a backup."
        );
    } else {
        let keyed = match report.keyed_from {
            Some(1) => "keyed".to_string(),
            Some(from) => format!("keyed from entry {from}"),
            None => "plain hashes (a store made before keyed chains)".to_string(),
        };
        println!(
            "OK: {} entries, chain intact ({keyed}), head: entry {}, hash {}",
            report.entries, report.head.seq, report.head_hex
        );
    }
    Ok(if report.breaks.is_empty() {
        Code::Ok
    } else {
        Code::Integrity
    })
}
