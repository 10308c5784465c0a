//! The subcommands, one module per group, and the dispatch between them.
//!
//! Every command returns the exit [`Code`] of a run that did its job (a
//! `verify` that found damage did its job, and exits 5); failures travel as
//! errors and are classified in [`crate::exit`].

mod audit;
mod demo;
mod erasure;
mod holds;
mod policy;
mod records;
mod store;
mod subjects;

use anyhow::Result;

use crate::context::Global;
use crate::exit::Code;

/// Every subcommand.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Create a store (in a new or empty directory).
    #[command(
        after_help = "Example:\n  shredkv --store /var/lib/shredkv --key-file /etc/shredkv/keys init"
    )]
    Init,
    /// Show the store's vital statistics: subjects, keys, records per class.
    #[command(after_help = "Example:\n  shredkv --store /var/lib/shredkv stats --json")]
    Stats,
    /// List every subject by tag: kind, parent, state, dates.
    #[command(after_help = "Example:\n  shredkv --store /var/lib/shredkv subjects")]
    Subjects,
    /// Show one subject: its tag, state, end users and legal holds.
    #[command(after_help = "Example:\n  shredkv --store /var/lib/shredkv show acct-42")]
    Show(subjects::SubjectArg),
    /// Read one record.
    #[command(
        after_help = "Example:\n  shredkv --store /var/lib/shredkv get user-7 message_content msg-1"
    )]
    Get(records::GetArgs),
    /// Write one record (optionally registering its subject).
    #[command(
        after_help = "Examples:\n  shredkv --store /var/lib/shredkv put acct-42 account_profile email ops@example.com --register-account\n  shredkv --store /var/lib/shredkv put user-7 message_content msg-1 'see you at noon' --account acct-42 --expires-in '30 days'"
    )]
    Put(records::PutArgs),
    /// Delete one record (its old ciphertext is purged within the purge window).
    #[command(
        after_help = "Example:\n  shredkv --store /var/lib/shredkv delete user-7 message_content msg-1"
    )]
    Delete(records::DeleteArgs),
    /// Export records as JSON Lines (an access or portability request).
    #[command(
        after_help = "Examples:\n  shredkv --store /var/lib/shredkv export acct-42 -o acct-42.jsonl\n  shredkv --store /var/lib/shredkv export > everything.jsonl"
    )]
    Export(records::ExportArgs),
    /// Erase a subject (or some of its classes) by destroying its keys.
    #[command(
        after_help = "Examples:\n  shredkv --store /var/lib/shredkv shred user-7\n  shredkv --store /var/lib/shredkv shred acct-42 --class marketing_contacts"
    )]
    Shred(erasure::ShredArgs),
    /// Restrict a subject's processing: export only, no reads or writes.
    #[command(after_help = "Example:\n  shredkv --store /var/lib/shredkv restrict user-7")]
    Restrict(subjects::SubjectArg),
    /// Lift a subject's restriction.
    #[command(after_help = "Example:\n  shredkv --store /var/lib/shredkv unrestrict user-7")]
    Unrestrict(subjects::SubjectArg),
    /// Register an erased subject again, with new keys (nothing erased comes back).
    #[command(after_help = "Example:\n  shredkv --store /var/lib/shredkv re-register user-7")]
    ReRegister(subjects::SubjectArg),
    /// Place a legal hold on a subject (every class, or one).
    #[command(
        after_help = "Example:\n  shredkv --store /var/lib/shredkv hold acct-42 --class invoices --reason 'case TAX-2025-117'"
    )]
    Hold(holds::HoldArgs),
    /// Release a legal hold.
    #[command(
        after_help = "Example:\n  shredkv --store /var/lib/shredkv release acct-42 --class invoices"
    )]
    Release(holds::ReleaseArgs),
    /// List the legal holds in force.
    #[command(after_help = "Example:\n  shredkv --store /var/lib/shredkv holds")]
    Holds,
    /// Check every record, key and subject, and the audit chain.
    #[command(
        after_help = "Example:\n  shredkv --store /var/lib/shredkv verify || echo \"damaged: exit $?\""
    )]
    Verify,
    /// Read and check the audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Show or check retention policies.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Run a full erasure lifecycle on a temporary store and check it
    /// (default policy; honours --backend and --json).
    #[command(
        after_help = "Examples:\n  cargo run --release -p shredkv-cli -- demo\n  shredkv demo --backend redb"
    )]
    Demo,
}

/// Runs one command.
pub(crate) fn run(global: &Global, command: Command) -> Result<Code> {
    match command {
        Command::Init => store::init(global),
        Command::Stats => store::stats(global),
        Command::Verify => store::verify(global),
        Command::Subjects => subjects::list(global),
        Command::Show(args) => subjects::show(global, &args),
        Command::Restrict(args) => subjects::restrict(global, &args),
        Command::Unrestrict(args) => subjects::unrestrict(global, &args),
        Command::ReRegister(args) => subjects::re_register(global, &args),
        Command::Get(args) => records::get(global, &args),
        Command::Put(args) => records::put(global, &args),
        Command::Delete(args) => records::delete(global, &args),
        Command::Export(args) => records::export(global, &args),
        Command::Shred(args) => erasure::shred(global, &args),
        Command::Hold(args) => holds::hold(global, &args),
        Command::Release(args) => holds::release(global, &args),
        Command::Holds => holds::list(global),
        Command::Audit(command) => audit::run(global, command),
        Command::Policy(command) => policy::run(global, command),
        Command::Demo => demo::run(global),
    }
}
