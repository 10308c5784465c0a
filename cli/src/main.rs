//! `shredkv`: inspect and operate a shredkv store, and `shredkv demo`, a full
//! erasure lifecycle on a temporary store.
//!
//! Layout: [`commands`] has one module per command group, [`context`] opens
//! the store from the global options, [`output`] prints tables and JSON, and
//! [`exit`] turns errors into exit codes and hints.
#![deny(unsafe_code)]

mod access;
mod commands;
mod context;
mod exit;
mod output;

use clap::Parser as _;
use serde_json::json;

use crate::commands::Command;
use crate::context::Global;
use crate::exit::{Code, EXIT_CODES_HELP};

/// Operate a shredkv store: records, subjects, erasure and deletion
/// requests, retention events and compaction, legal holds, backups and
/// restores, certificates, verification, audit and policy.
#[derive(Debug, clap::Parser)]
#[command(name = "shredkv", version, about, after_help = EXIT_CODES_HELP)]
struct Cli {
    #[command(flatten)]
    global: Global,

    #[command(subcommand)]
    command: Command,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let json = cli.global.json;
    match commands::run(&cli.global, cli.command) {
        Ok(code) => code.as_exit(),
        Err(err) => {
            let (code, hint) = exit::classify(&err);
            eprintln!("error: {err}");
            if let Some(hint) = &hint {
                eprintln!("hint: {hint}");
            }
            if json {
                let doc = json!({
                    "error": {
                        "code": code as u8,
                        "kind": code.name(),
                        "message": err.to_string(),
                        "hint": hint,
                    }
                });
                // stdout may be closed; the exit code still tells.
                let _ = output::print_json(&doc);
            }
            if code == Code::Ok {
                Code::Failure.as_exit()
            } else {
                code.as_exit()
            }
        }
    }
}
