//! Retention policies: `policy show`, `policy check`, `policy apply`.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::{Value, json};
use shredkv::{AuditEvent, ClassPolicy, Policy};

use crate::commands::store::hex;
use crate::context::Global;
use crate::exit::{CliError, Code};
use crate::output::{self, Table};

/// `policy` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum PolicyCommand {
    /// Show the classes of the policy in force (the store's, or --policy).
    #[command(
        after_help = "Examples:\n  shredkv policy show\n  shredkv --store /var/lib/shredkv --policy /etc/shredkv/policy.toml policy show"
    )]
    Show,
    /// Check a policy file: prints OK and its digest, or what is wrong and where.
    #[command(after_help = "Example:\n  shredkv policy check policy/default.toml")]
    Check {
        /// The policy file (TOML).
        file: PathBuf,
    },
    /// Apply a changed policy to the store (audited): retention deadlines
    /// are recomputed under it. --policy names the policy in force now.
    #[command(
        after_help = "Example:\n  shredkv --store /var/lib/shredkv --policy /etc/shredkv/policy.toml policy apply /etc/shredkv/policy-2026.toml\n\nAfterwards pass the new file as --policy to every command."
    )]
    Apply {
        /// The new policy file (TOML).
        file: PathBuf,
    },
}

/// Runs a `policy` subcommand.
pub(crate) fn run(global: &Global, command: PolicyCommand) -> Result<Code> {
    match command {
        PolicyCommand::Show => show(global),
        PolicyCommand::Check { file } => check(global, &file),
        PolicyCommand::Apply { file } => apply(global, &file),
    }
}

fn class_json(class: &ClassPolicy) -> Value {
    json!({
        "name": class.name(),
        "role": class.role().as_str(),
        "clock": class.clock().as_str(),
        "retain": class.retain().map(|r| r.to_string()),
        "purge_window": class.purge_window().to_string(),
        "on_deletion_request": class.on_deletion_request().as_str(),
        "max_customer_ttl": class.max_customer_ttl().map(|r| r.to_string()),
        "until_account_closure": class.until_account_closure(),
        "keys": class.keys().as_str(),
        "legal_basis": class.legal_basis(),
        "clause": class.clause(),
    })
}

/// How long a class keeps its records, in words.
fn retention_words(class: &ClassPolicy) -> String {
    let clock = class.clock().as_str();
    match class.retain() {
        Some(r) => format!("{r} after {clock}"),
        None if clock == "manual_release" => "until released".into(),
        None if class.until_account_closure() => "as instructed, until account closure".into(),
        None => "as instructed".into(),
    }
}

fn show(global: &Global) -> Result<Code> {
    // With a store, open it: that checks the policy is the one it records.
    let (policy, source) = match &global.store {
        Some(_) => {
            // Live or opened here: the policy the store is run with.
            let store = global.access()?;
            let source = format!("in force in {}", store.path().display());
            (store.policy()?, source)
        }
        None => (
            global.load_policy()?,
            global.policy.as_ref().map_or_else(
                || "embedded default policy".to_string(),
                |p| p.display().to_string(),
            ),
        ),
    };
    let digest = hex(&policy.digest());
    if global.json {
        output::print_json(&json!({
            "source": source,
            "digest": digest,
            "classes": policy.classes().iter().map(class_json).collect::<Vec<_>>(),
        }))?;
        return Ok(Code::Ok);
    }
    println!("Policy: {source}, digest {digest}");
    let mut table = Table::new(&[
        "class",
        "role",
        "kept",
        "purge",
        "on deletion request",
        "max customer TTL",
        "keys",
    ]);
    for class in policy.classes() {
        table.row([
            class.name().to_string(),
            class.role().to_string(),
            retention_words(class),
            class.purge_window().to_string(),
            class.on_deletion_request().to_string(),
            class
                .max_customer_ttl()
                .map_or_else(|| "-".into(), |r| r.to_string()),
            class.keys().to_string(),
        ]);
    }
    table.print();
    Ok(Code::Ok)
}

/// Loads a policy file; a bad one is exit 6 with where to fix it.
fn load(file: &PathBuf) -> Result<Policy> {
    match Policy::load(file) {
        Ok(policy) => Ok(policy),
        Err(err) => {
            let hint = match err.location() {
                Some((line, column)) => format!(
                    "fix line {line}, column {column} of {}, then run `shredkv policy check` again",
                    file.display()
                ),
                None => "check the path and its permissions".to_string(),
            };
            Err(CliError::new(Code::Policy, err.to_string())
                .hint(hint)
                .into())
        }
    }
}

fn check(global: &Global, file: &PathBuf) -> Result<Code> {
    let policy = load(file)?;
    let digest = hex(&policy.digest());
    if global.json {
        output::print_json(&json!({
            "ok": true,
            "file": file.display().to_string(),
            "digest": digest,
            "classes": policy.classes().iter().map(|c| c.name()).collect::<Vec<_>>(),
        }))?;
    } else {
        println!(
            "OK: {} is a valid policy with {} classes",
            file.display(),
            policy.classes().len()
        );
        println!("digest {digest}");
    }
    Ok(Code::Ok)
}

/// What changed from `old` to `new`, one line per class: added, removed, or
/// the fields that differ (long texts are only said to have changed).
fn policy_changes(old: &Policy, new: &Policy) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for class in new.classes() {
        let Some(before) = old.class(class.name()) else {
            out.push((
                class.name().to_string(),
                format!("added: kept {}", retention_words(class)),
            ));
            continue;
        };
        let (a, b) = (class_json(before), class_json(class));
        let mut fields = Vec::new();
        if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
            for (field, new_value) in b {
                let old_value = a.get(field).unwrap_or(&Value::Null);
                if old_value == new_value {
                    continue;
                }
                fields.push(match field.as_str() {
                    "legal_basis" | "clause" => format!("{field} changed"),
                    _ => format!("{field} {} -> {}", words(old_value), words(new_value)),
                });
            }
        }
        if !fields.is_empty() {
            out.push((class.name().to_string(), fields.join("; ")));
        }
    }
    for class in old.classes() {
        if new.class(class.name()).is_none() {
            out.push((
                class.name().to_string(),
                "removed: its stored records stay until erased".to_string(),
            ));
        }
    }
    out
}

fn words(value: &Value) -> String {
    match value {
        Value::Null => "none".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `policy apply`: opens the store with the new policy, accepting the
/// change; the engine audits it and recomputes the event deadlines.
fn apply(global: &Global, file: &PathBuf) -> Result<Code> {
    let new = load(file)?;
    global.refuse_live(
        "policy apply",
        "stop the application, apply the policy, and start it again with the new policy file",
    )?;
    let old = {
        // Opening with the policy in force checks it is the store's.
        let db = global.open()?;
        db.policy().clone()
    };
    let (old_digest, new_digest) = (hex(&old.digest()), hex(&new.digest()));
    let changes = policy_changes(&old, &new);
    if old_digest == new_digest {
        if global.json {
            output::print_json(&json!({
                "applied": false, "old_digest": old_digest, "new_digest": new_digest,
                "changes": [],
            }))?;
        } else {
            println!(
                "{} is already the policy in force (digest {new_digest}); nothing to apply",
                file.display()
            );
        }
        return Ok(Code::Ok);
    }
    let db = global.open_with_policy(new, true)?;
    // The engine audits the change and the recomputation; quote it.
    let recomputed = db
        .audit_tail(4)?
        .into_iter()
        .rev()
        .find(|e| e.event == AuditEvent::PolicyApplied && e.detail.starts_with("deadlines"))
        .map(|e| e.detail);
    if global.json {
        output::print_json(&json!({
            "applied": true,
            "old_digest": old_digest,
            "new_digest": new_digest,
            "changes": changes.iter().map(|(class, change)| json!({"class": class, "change": change})).collect::<Vec<_>>(),
            "deadlines": recomputed,
        }))?;
        return Ok(Code::Ok);
    }
    println!("Applied {} to {}", file.display(), db.path().display());
    output::print_fields(&[
        ("old digest", old_digest),
        ("new digest", new_digest),
        (
            "deadlines",
            recomputed.as_deref().map_or_else(
                || "recomputed".to_string(),
                |d| d.trim_start_matches("deadlines ").to_string(),
            ),
        ),
    ]);
    if changes.is_empty() {
        println!("No class changed (only formatting or ordering).");
    } else {
        let mut table = Table::new(&["class", "change"]);
        for (class, change) in &changes {
            table.row([class.clone(), change.clone()]);
        }
        table.print();
    }
    println!(
        "The change is in the audit log. From now on pass --policy {} to every command.",
        file.display()
    );
    Ok(Code::Ok)
}
