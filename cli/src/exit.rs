//! Exit codes, and how an error becomes one (with a hint for the operator).
//!
//! Engine errors travel through `anyhow` unchanged; [`classify`] finds the
//! [`shredkv::Error`] (or the CLI's own [`CliError`]) in the chain and maps
//! its variant to a [`Code`]. The table is documented in `shredkv --help`
//! ([`EXIT_CODES_HELP`]) and in `docs/operations.md`.

use std::fmt;

use shredkv::{Error, ErrorCategory, PolicyError, StorageError};

/// What the process reports to its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    /// Success.
    Ok = 0,
    /// Any other failure (storage, I/O, a conflict).
    Failure = 1,
    /// Bad arguments: clap's own errors, an unknown class, an invalid value.
    Usage = 2,
    /// Unknown subject, absent record or hold, missing store.
    NotFound = 3,
    /// The data asked for was erased.
    Erased = 4,
    /// Corrupt or tampered stored data (integrity).
    Integrity = 5,
    /// Invalid policy file, or the policy forbids the request.
    Policy = 6,
    /// Key provider: missing, world-readable, corrupt or mismatched key file.
    KeyProvider = 7,
    /// Purge work is overdue (`stats`, `verify`): maintenance is not keeping
    /// up, and the purge window or a retention deadline is at risk.
    PurgeOverdue = 8,
}

impl Code {
    /// A short machine name, used in `--json` error documents.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Code::Ok => "ok",
            Code::Failure => "failure",
            Code::Usage => "usage",
            Code::NotFound => "not_found",
            Code::Erased => "erased",
            Code::Integrity => "integrity",
            Code::Policy => "policy",
            Code::KeyProvider => "key_provider",
            Code::PurgeOverdue => "purge_overdue",
        }
    }

    /// The process exit code.
    pub(crate) fn as_exit(self) -> std::process::ExitCode {
        std::process::ExitCode::from(self as u8)
    }
}

/// The exit-code table shown at the end of `shredkv --help`.
pub(crate) const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  ok
  1  other failure (storage, I/O, subject conflict, restricted subject,
     interrupted restore)
  2  usage: bad arguments, unknown class, invalid value, non-empty
     backup or restore target, a backup directory given as --store
  3  not found: unknown subject, absent record or hold, missing store or
     store data, nothing erased to certify
  4  erased: the data asked for was erased; a backup older than its purge
     window (its keys are destroyed); a restore that would lose records a
     re-key after the backup made unrecoverable (without --accept-loss)
  5  integrity: corrupt or tampered data (get, verify, audit verify), a
     damaged erasure log
  6  policy: invalid policy file, policy violation (e.g. release-data of a
     class not released manually), legal hold, policy mismatch
  7  key provider: missing, world-readable, corrupt or mismatched key file
  8  purge overdue (stats, verify): due erasures, re-keys or epoch
     destructions are later than the purge timeline allows; run
     `compact` and check the key provider

`certificate` exits 0 whether the purge is complete or still pending; the
status (COMPLETE / PENDING) is printed and is `purge_status` in --json.

Subjects are named by their ids on the command line; the store keeps only
keyed tags, which is what `subjects`, `holds`, `audit` and receipts show.";

/// An error raised by the CLI itself (not the engine), with its exit code.
#[derive(Debug)]
pub(crate) struct CliError {
    pub(crate) code: Code,
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
}

impl CliError {
    /// An error with an exit code and a message.
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            hint: None,
        }
    }

    /// Adds what the operator should do next.
    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// The exit code of an error and a hint saying what to do next.
pub(crate) fn classify(err: &anyhow::Error) -> (Code, Option<String>) {
    for cause in err.chain() {
        if let Some(cli) = cause.downcast_ref::<CliError>() {
            return (cli.code, cli.hint.clone());
        }
        if let Some(engine) = cause.downcast_ref::<Error>() {
            return classify_engine(engine);
        }
        if cause.downcast_ref::<PolicyError>().is_some() {
            return (Code::Policy, None);
        }
        if cause.downcast_ref::<StorageError>().is_some() {
            return (Code::Failure, None);
        }
    }
    (Code::Failure, None)
}

fn hint(text: &str) -> Option<String> {
    Some(text.to_string())
}

fn classify_engine(err: &Error) -> (Code, Option<String>) {
    let hint = match err {
        Error::Corrupt { location, .. } if location.tree == "erasure log" => hint(
            "the erasure log file is damaged; export it again (`shredkv export-erasure-log FILE` on the live store), or restore with --store naming the live store instead of --erasure-log",
        ),
        Error::RestoreInterrupted { path } => Some(format!(
            "delete {} and run `shredkv restore` again into a new or empty directory",
            path.display()
        )),
        Error::IsBackup { path, .. } => Some(format!(
            "restore the backup instead, which replays the erasures made since: shredkv --store LIVE_STORE restore {} --into NEW_DIR (or --erasure-log FILE --key-file KEYS without the live store)",
            path.display()
        )),
        Error::Storage(storage) if storage.is_locked() => hint(
            "another process has the store open; stop it, or run this command through it: have it serve an admin socket (Config::admin_socket) and pass --admin-socket PATH",
        ),
        // A live store's error: the hint of its kind, as if it were local.
        err => kind_hint(err.kind(), err.category()),
    };
    (code_of(err.category()), hint)
}

/// The exit code of an engine error's category (local or from a live
/// store's admin socket).
fn code_of(category: ErrorCategory) -> Code {
    match category {
        ErrorCategory::Usage => Code::Usage,
        ErrorCategory::NotFound => Code::NotFound,
        ErrorCategory::Erased => Code::Erased,
        ErrorCategory::Integrity => Code::Integrity,
        ErrorCategory::Policy => Code::Policy,
        ErrorCategory::KeyProvider => Code::KeyProvider,
        _ => Code::Failure,
    }
}

/// The hint for an error of `kind` ([`Error::kind`]) that needs none of
/// its fields.
fn kind_hint(kind: &str, category: ErrorCategory) -> Option<String> {
    match kind {
        "unknown_subject" => hint(
            "check the subject id (`shredkv subjects` lists tags only); to create it, put a record with --register-account or --account ACCOUNT",
        ),
        "unknown_class" => hint("`shredkv policy show` lists the classes"),
        "erased" => hint(
            "erasure is final; `shredkv re-register SUBJECT` (or `--class CLASS` for one erased class) lets the subject store new data (nothing erased comes back)",
        ),
        "restricted" => hint(
            "`shredkv export SUBJECT` works while restricted; `shredkv unrestrict SUBJECT` lifts the restriction",
        ),
        "closed" => hint(
            "the account is closed: its data is kept only until its retention dates; `shredkv export SUBJECT` returns what is still retained",
        ),
        "on_hold" => {
            hint("`shredkv holds` lists the holds; `shredkv release SUBJECT [--class C]` ends one")
        }
        "policy_changed" => hint(
            "pass the --policy file in force (the one the store was created with, or last applied); changing it is an explicit, audited step: `shredkv policy apply NEW_FILE`",
        ),
        "corrupt" | "tampered" => hint(
            "run `shredkv verify` for every damaged item; corrupt means media damage (restore from a backup), tampered means altered or moved data (treat it as a security incident)",
        ),
        "keys_do_not_match" => hint(
            "pass --key-file with this store's own key file (a restored backup uses the live store's key file); if it is the right file, the store's metadata was altered: treat it as a security incident",
        ),
        "key_file_missing" => hint(
            "pass --key-file with the key file's real location (keep it off the backup volume); a store whose key file is lost is unreadable by design",
        ),
        "key_file_in_store" => hint(
            "pass --key-file (or SHREDKV_KEY_FILE) with a path outside the store directory; for an existing store, move its key file there first (e.g. mv DIR/keys /etc/shredkv/keys); --allow-key-file-in-store accepts it for tests and demos",
        ),
        "store_data_missing" => hint(
            "restore the store directory's backend files from a backup (`shredkv restore`), or point --store at the right directory",
        ),
        "store_rolled_back" => hint(
            "put the store's latest files back, or restore the latest backup (`shredkv restore`), which replays the erasures made since",
        ),
        "restore_loses_records" => hint(
            "restore a newer backup (taken after the re-key), or pass --accept-loss to restore without those records (they are listed and audited)",
        ),
        "wrong_shard" => hint(
            "the store is one shard of several, fixed when it was first opened as one: run the command against the store of the account's shard (docs/scale-out.md, \"accounts routed to shards\")",
        ),
        "store_keys_destroyed" => hint(
            "this is expected for a store or backup older than its purge window: restore a more recent backup",
        ),
        "storage" if category == ErrorCategory::Integrity => {
            hint("the backend's files are damaged; restore the store from a backup")
        }
        "admin" => hint(
            "check that the application holding the store is running and serves its admin socket (Config::admin_socket), and that the CLI runs as the same user",
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use shredkv::{RemoteError, SubjectTag};

    use super::*;

    /// A live store's errors reach the CLI as `Error::Remote`: the same
    /// exit code and hint as the error raised here.
    #[test]
    fn remote_errors_exit_and_hint_as_local_ones() {
        let subject = SubjectTag([7; 16]);
        let cases = [
            (Error::UnknownSubject { subject }, Code::NotFound),
            (
                Error::UnknownClass {
                    class: "nope".into(),
                },
                Code::Usage,
            ),
            (
                Error::Erased {
                    subject,
                    class: None,
                    erased_at: jiff::Timestamp::UNIX_EPOCH,
                },
                Code::Erased,
            ),
            (Error::Restricted { subject }, Code::Failure),
            (
                Error::OnHold {
                    subject,
                    class: None,
                },
                Code::Policy,
            ),
            (
                Error::InvalidArgument {
                    what: "value",
                    detail: "too long".into(),
                },
                Code::Usage,
            ),
            (
                Error::Admin {
                    detail: "refused".into(),
                },
                Code::Failure,
            ),
        ];
        for (local, code) in cases {
            let remote = Error::Remote(RemoteError::from_error(&local));
            let (local_code, local_hint) = classify(&local.into());
            assert_eq!(local_code, code);
            assert_eq!(classify(&remote.into()), (local_code, local_hint));
        }
    }
}
