//! Retention policies: `policy show`, `policy check`.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::{Value, json};
use shredkv::{ClassPolicy, Policy};

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
}

/// Runs a `policy` subcommand.
pub(crate) fn run(global: &Global, command: PolicyCommand) -> Result<Code> {
    match command {
        PolicyCommand::Show => show(global),
        PolicyCommand::Check { file } => check(global, &file),
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
            let db = global.open()?;
            let source = format!("in force in {}", db.path().display());
            (db.policy().clone(), source)
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

fn check(global: &Global, file: &PathBuf) -> Result<Code> {
    let policy = match Policy::load(file) {
        Ok(policy) => policy,
        Err(err) => {
            let hint = match err.location() {
                Some((line, column)) => format!(
                    "fix line {line}, column {column} of {}, then run `shredkv policy check` again",
                    file.display()
                ),
                None => "check the path and its permissions".to_string(),
            };
            return Err(CliError::new(Code::Policy, err.to_string())
                .hint(hint)
                .into());
        }
    };
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
