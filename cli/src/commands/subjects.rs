//! Subjects: `subjects`, `show`, `restrict`, `unrestrict`, `re-register`.

use anyhow::Result;
use serde_json::json;
use shredkv::Error;

use crate::context::Global;
use crate::exit::Code;
use crate::output::{self, Table};

/// A subject named by its id.
#[derive(Debug, clap::Args)]
pub(crate) struct SubjectArg {
    /// The subject's id (an account or end-user id).
    pub(crate) subject: String,
}

/// `subjects`: every subject, by tag.
pub(crate) fn list(global: &Global) -> Result<Code> {
    let db = global.access()?;
    let subjects = db.subjects()?;
    if global.json {
        output::print_json(&json!({ "subjects": serde_json::to_value(&subjects)? }))?;
        return Ok(Code::Ok);
    }
    let mut table = Table::new(&[
        "tag", "kind", "parent", "state", "created", "closed", "erased",
    ]);
    for info in &subjects {
        table.row([
            info.tag.to_hex(),
            output::kind(info.kind).to_string(),
            info.parent.map_or_else(|| "-".into(), |p| p.to_hex()),
            output::state(info.state).to_string(),
            output::time(info.created_at),
            output::opt_time(info.closed_at),
            output::opt_time(info.erased_at),
        ]);
    }
    table.print();
    println!("{} subjects", subjects.len());
    Ok(Code::Ok)
}

/// `show`: one subject, its end users and its holds.
pub(crate) fn show(global: &Global, args: &SubjectArg) -> Result<Code> {
    let db = global.access()?;
    let tag = db.subject_tag(&args.subject)?;
    let info = db
        .subject(&args.subject)?
        .ok_or(Error::UnknownSubject { subject: tag })?;
    let end_users = db.end_users_of(&tag)?;
    let holds: Vec<_> = db
        .holds()?
        .into_iter()
        .filter(|h| h.subject == tag)
        .collect();
    if global.json {
        output::print_json(&output::json_with(
            &info,
            [
                ("end_users", serde_json::to_value(&end_users)?),
                ("holds", serde_json::to_value(&holds)?),
            ],
        )?)?;
        return Ok(Code::Ok);
    }
    output::print_fields(&[
        ("subject", args.subject.clone()),
        ("tag", tag.to_hex()),
        ("kind", output::kind(info.kind).to_string()),
        (
            "account",
            info.parent.map_or_else(|| "-".into(), |p| p.to_hex()),
        ),
        ("state", output::state(info.state).to_string()),
        ("generation", info.generation.to_string()),
        ("created", output::time(info.created_at)),
        ("closed", output::opt_time(info.closed_at)),
        ("opted out", output::opt_time(info.opted_out_at)),
        ("released", output::opt_time(info.released_at)),
        ("erased", output::opt_time(info.erased_at)),
        ("end users", end_users.len().to_string()),
    ]);
    for user in &end_users {
        println!("  {user}");
    }
    if holds.is_empty() {
        println!("no legal holds");
    } else {
        println!();
        let mut table = Table::new(&["hold on class", "placed", "reason"]);
        for h in &holds {
            table.row([
                h.class.clone().unwrap_or_else(|| "(every class)".into()),
                output::time(h.placed_at),
                h.reason.clone(),
            ]);
        }
        table.print();
    }
    Ok(Code::Ok)
}

fn state_changed(
    global: &Global,
    subject: &str,
    tag: &str,
    state: &str,
    what: &str,
) -> Result<Code> {
    if global.json {
        output::print_json(&json!({ "subject": tag, "state": state }))?;
    } else {
        println!("{subject} ({tag}): {what}");
    }
    Ok(Code::Ok)
}

/// `restrict`: export only, until `unrestrict`.
pub(crate) fn restrict(global: &Global, args: &SubjectArg) -> Result<Code> {
    let db = global.access()?;
    db.restrict(&args.subject)?;
    let tag = db.subject_tag(&args.subject)?.to_hex();
    state_changed(
        global,
        &args.subject,
        &tag,
        "restricted",
        "processing restricted; its data can be exported, not read or written",
    )
}

/// `unrestrict`: lifts a restriction.
pub(crate) fn unrestrict(global: &Global, args: &SubjectArg) -> Result<Code> {
    let db = global.access()?;
    db.lift_restriction(&args.subject)?;
    let tag = db.subject_tag(&args.subject)?.to_hex();
    state_changed(global, &args.subject, &tag, "active", "restriction lifted")
}

/// A subject to register again, whole or one class.
#[derive(Debug, clap::Args)]
pub(crate) struct ReRegisterArgs {
    /// The subject's id (an account or end-user id).
    pub(crate) subject: String,
    /// Register only this erased class again; the rest of the subject is
    /// untouched (default: the whole subject, every erased class).
    #[arg(long)]
    pub(crate) class: Option<String>,
}

/// `re-register`: an erased subject (or class) may store new data again.
pub(crate) fn re_register(global: &Global, args: &ReRegisterArgs) -> Result<Code> {
    let db = global.access()?;
    db.re_register(&args.subject, args.class.as_deref())?;
    let tag = db.subject_tag(&args.subject)?.to_hex();
    match &args.class {
        None => state_changed(
            global,
            &args.subject,
            &tag,
            "active",
            "registered again with new keys; nothing erased comes back",
        ),
        Some(class) => {
            if global.json {
                output::print_json(&json!({ "subject": tag, "class": class, "state": "active" }))?;
            } else {
                println!(
                    "{} ({tag}): class {class} registered again with new keys; nothing erased comes back",
                    args.subject
                );
            }
            Ok(Code::Ok)
        }
    }
}
