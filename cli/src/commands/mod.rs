//! The subcommands, one module per group, and the dispatch between them.
//!
//! Every command returns the exit [`Code`] of a run that did its job (a
//! `verify` that found damage did its job, and exits 5); failures travel as
//! errors and are classified in [`crate::exit`].

mod audit;
mod backup;
mod demo;
mod erasure;
mod holds;
mod policy;
mod records;
mod retention;
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
    /// Register an erased subject (or one erased class of it) again, with
    /// new keys (nothing erased comes back).
    #[command(
        after_help = "Examples:\n  shredkv --store /var/lib/shredkv re-register user-7\n  shredkv --store /var/lib/shredkv re-register user-7 --class message_content"
    )]
    ReRegister(subjects::ReRegisterArgs),
    /// Place a legal hold on a subject (every class, or one).
    #[command(
        after_help = "Example:\n  shredkv --store /var/lib/shredkv hold acct-42 --class invoices --reason 'case TAX-2025-117'"
    )]
    Hold(holds::HoldArgs),
    /// Release a legal hold (to end the retention of a class kept until
    /// released, see `release-data`).
    #[command(
        after_help = "Example:\n  shredkv --store /var/lib/shredkv release acct-42 --class invoices"
    )]
    Release(holds::ReleaseArgs),
    /// List the legal holds in force.
    #[command(after_help = "Example:\n  shredkv --store /var/lib/shredkv holds")]
    Holds,
    /// Close an account and its end users: schedules the erasure of every
    /// class whose retention runs from closure (60 days, 3, 7, 10 years...).
    #[command(
        after_help = "Example:\n  shredkv --store /var/lib/shredkv close-account acct-42\n\nNothing is erased now; `shredkv compact` erases each scope when its date passes."
    )]
    CloseAccount(retention::CloseArgs),
    /// Record a marketing opt-out: marketing classes are erased 3 days later.
    #[command(after_help = "Example:\n  shredkv --store /var/lib/shredkv opt-out acct-42")]
    OptOut(retention::OptOutArgs),
    /// End the retention of a class kept until released (e.g.
    /// subscriber_records): it is erased at the next compaction.
    #[command(
        after_help = "Example:\n  shredkv --store /var/lib/shredkv release-data acct-42 subscriber_records\n\nA class whose clock is not `manual_release` is refused (exit 6)."
    )]
    ReleaseData(retention::ReleaseDataArgs),
    /// A deletion request: erases now what the policy allows and prints the
    /// receipt (what was erased; what is retained, until when and why).
    #[command(
        after_help = "Examples:\n  shredkv --store /var/lib/shredkv request-deletion user-7\n  shredkv --store /var/lib/shredkv request-deletion acct-42 --underage --json > receipt.json"
    )]
    RequestDeletion(retention::DeletionArgs),
    /// Run one compaction pass: erase what is due, destroy expired keys,
    /// re-key, remove dead ciphertext, rotate and destroy epochs.
    #[command(
        after_help = "Examples:\n  shredkv --store /var/lib/shredkv compact\n  shredkv --store /var/lib/shredkv compact --budget 10000   # from cron, every few minutes"
    )]
    Compact(retention::CompactArgs),
    /// Rotate the epoch key now (compaction also does it daily).
    #[command(after_help = "Example:\n  shredkv --store /var/lib/shredkv rotate-epoch")]
    RotateEpoch,
    /// Write a consistent backup of the store (without its key file).
    #[command(
        after_help = "Example:\n  shredkv --store /var/lib/shredkv backup /backups/shredkv-2025-06-01\n\nA backup is restorable only within the purge window (30 days by default)."
    )]
    Backup(backup::BackupArgs),
    /// Restore a backup into a new directory, replaying the erasures made
    /// since (from the live store, or from an exported erasure log).
    #[command(
        after_help = "Examples:\n  shredkv --store /var/lib/shredkv --key-file /etc/shredkv/keys restore /backups/shredkv-2025-06-01 --into /var/lib/shredkv-restored\n  shredkv --key-file /etc/shredkv/keys restore /backups/shredkv-2025-06-01 --into /var/lib/shredkv-restored --erasure-log /backups/erasures.log\n\nA backup older than the purge window cannot be decrypted (exit 4), by design. A backup taken before a re-key cannot bring back the records the re-key sealed again: the restore is refused (exit 4, with the count per subject and class) unless --accept-loss."
    )]
    Restore(backup::RestoreArgs),
    /// Export the erasure log (ledger and destroyed key ids; no personal
    /// data), for restores when the live store is not available.
    #[command(
        after_help = "Example:\n  shredkv --store /var/lib/shredkv export-erasure-log /backups/erasures-2025-06-01.log"
    )]
    ExportErasureLog(backup::ExportLogArgs),
    /// Issue a certificate of erasure for a subject (after NIST SP 800-88):
    /// COMPLETE once keys, epochs and dead ciphertext are gone, else PENDING.
    #[command(
        after_help = "Examples:\n  shredkv --store /var/lib/shredkv certificate user-7\n  shredkv --store /var/lib/shredkv certificate user-7 --json | jq -r .purge_status\n\nExits 0 whether the purge is complete or pending; the status is printed."
    )]
    Certificate(erasure::CertificateArgs),
    /// Check every record, key and subject, and the audit chain.
    #[command(
        after_help = "Example:\n  shredkv --store /var/lib/shredkv verify || echo \"damaged: exit $?\""
    )]
    Verify,
    /// Read and check the audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Show, check or apply retention policies.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Tell which shard an account (and its end users) lives in, among the
    /// deployment's shards (no store needed).
    #[command(
        after_help = "Example:\n  shredkv shard-of acct-42 --shards 8   # then: shredkv --store /var/lib/shredkv/shard-N shred acct-42"
    )]
    ShardOf(store::ShardOfArgs),
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
        Command::CloseAccount(args) => retention::close_account(global, &args),
        Command::OptOut(args) => retention::opt_out(global, &args),
        Command::ReleaseData(args) => retention::release_data(global, &args),
        Command::RequestDeletion(args) => retention::request_deletion(global, &args),
        Command::Compact(args) => retention::compact(global, &args),
        Command::RotateEpoch => retention::rotate_epoch(global),
        Command::Backup(args) => backup::backup(global, &args),
        Command::Restore(args) => backup::restore(global, &args),
        Command::ExportErasureLog(args) => backup::export_erasure_log(global, &args),
        Command::Certificate(args) => erasure::certificate(global, &args),
        Command::Audit(command) => audit::run(global, command),
        Command::Policy(command) => policy::run(global, command),
        Command::ShardOf(args) => store::shard_of(global, &args),
        Command::Demo => demo::run(global),
    }
}
