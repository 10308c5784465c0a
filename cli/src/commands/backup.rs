//! Backups: `backup`, `restore`, `export-erasure-log`.
//!
//! A backup is a consistent copy of the store's trees, without the key
//! file: it is decrypted with the live key file, so it expires with the
//! purge window (once compaction has destroyed the epoch that wrapped its
//! keys, it cannot be decrypted, by design). A restore replays the erasures
//! of the live store (or of an exported erasure log) before the restored
//! store serves anything, so nothing erased comes back.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::json;
use shredkv::{Backend, Config, Db, ErasureSource, Error, RestoreOptions};

use crate::context::{self, Global};
use crate::exit::{CliError, Code};
use crate::output;

/// Arguments of `backup`.
#[derive(Debug, clap::Args)]
pub(crate) struct BackupArgs {
    /// Where to write the backup: a new or empty directory.
    dir: PathBuf,
}

/// Arguments of `restore`.
#[derive(Debug, clap::Args)]
pub(crate) struct RestoreArgs {
    /// The backup directory (written by `shredkv backup`).
    backup: PathBuf,
    /// The new store's directory: new or empty.
    #[arg(long, value_name = "DIR")]
    into: PathBuf,
    /// Replay this exported erasure log instead of the live store's
    /// (`--store`) erasures; needs the live key file (--key-file).
    #[arg(long, value_name = "FILE")]
    erasure_log: Option<PathBuf>,
    /// Restore even though some records of the backup cannot come back (a
    /// re-key after the backup destroyed their key version); they are
    /// listed and audited. Without it such a restore is refused (exit 4).
    #[arg(long)]
    accept_loss: bool,
}

/// Arguments of `export-erasure-log`.
#[derive(Debug, clap::Args)]
pub(crate) struct ExportLogArgs {
    /// The file to write (must not exist).
    file: PathBuf,
}

/// `backup`: a consistent copy of the store, without its key file.
pub(crate) fn backup(global: &Global, args: &BackupArgs) -> Result<Code> {
    let db = global.access()?;
    let bar = output::progress(None, "entries copied");
    let report = db.backup(&args.dir, &mut |done| bar.set_position(done));
    bar.finish_and_clear();
    let report = report?;
    let (at_least, at_most) = (report.restorable_until, report.unrestorable_after);
    let key_file = if db.is_live() && global.key_file.is_none() && global.pkcs11_module.is_none() {
        // The application configured its keys; this process does not know them.
        "KEY_FILE (the live store's key file)".to_string()
    } else {
        global.keys_description(&db.path())
    };
    if global.json {
        output::print_json(&output::json_with(
            &report,
            [
                ("backend", json!(db.backend().name())),
                ("restorable_until_at_least", json!(at_least)),
                ("unrestorable_after", json!(at_most)),
                ("key_file", json!(key_file)),
            ],
        )?)?;
        return Ok(Code::Ok);
    }
    println!(
        "Backup of {} written to {}",
        db.path().display(),
        report.path.display()
    );
    output::print_fields(&[
        ("entries", report.entries.to_string()),
        ("taken at", output::time(report.taken_at)),
        (
            "restorable",
            format!(
                "until at least {}; not after about {} (purge window {}, with maintenance on schedule)",
                output::time(at_least),
                output::time(at_most),
                output::span_words(report.taken_at, at_most)
            ),
        ),
        ("key file", format!("{} (not in the backup)", key_file)),
    ]);
    println!(
        "Restore it with: shredkv --store {} --key-file {} restore {} --into NEW_DIR",
        db.path().display(),
        key_file,
        report.path.display()
    );
    Ok(Code::Ok)
}

/// Whether `dir` is absent or an empty directory.
fn absent_or_empty(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(source) => Err(Error::Io {
            action: "inspect the restore target",
            path: dir.to_path_buf(),
            source,
        }
        .into()),
    }
}

/// `restore`: the backup into a new directory, with the erasures replayed.
pub(crate) fn restore(global: &Global, args: &RestoreArgs) -> Result<Code> {
    let backend = context::detect_backend(&args.backup, None).map_err(|_| {
        CliError::new(
            Code::NotFound,
            format!(
                "no shredkv backup at {}: neither sled/ nor store.redb is there",
                args.backup.display()
            ),
        )
        .hint("pass the directory `shredkv backup DIR` wrote")
    })?;
    let into = &args.into;
    if !absent_or_empty(into)? {
        return Err(CliError::new(
            Code::Usage,
            format!(
                "{} exists and is not empty; restore writes into a new or empty directory",
                into.display()
            ),
        )
        .hint("choose another --into directory")
        .into());
    }
    let on_token = global.pkcs11_module.is_some();
    let policy = global.load_policy()?;
    let (key_file, source_name, from) = match &args.erasure_log {
        Some(log) => {
            let key_file = match (&global.key_file, &global.store) {
                (Some(file), _) => Some(file.clone()),
                (None, Some(store)) => Some(global.key_file_for(store)),
                // The keys are on the token, under the live store's label.
                (None, None) if on_token => None,
                (None, None) => {
                    return Err(CliError::new(
                        Code::Usage,
                        "restore needs the live key file: pass --key-file (or --store, whose key file is used)",
                    )
                    .into());
                }
            };
            if !log.is_file() {
                return Err(CliError::new(
                    Code::NotFound,
                    format!("no erasure log at {}", log.display()),
                )
                .hint("write one with `shredkv export-erasure-log FILE` on the live store")
                .into());
            }
            (
                key_file,
                format!("erasure log {}", log.display()),
                Source::Log(log),
            )
        }
        None => {
            let store = global.store.as_deref().ok_or_else(|| {
                CliError::new(
                    Code::Usage,
                    "restore replays the live store's erasures: pass --store (the live store) or --erasure-log FILE",
                )
            })?;
            global.refuse_live(
                "restore from the live store's erasures",
                "export the erasure log through the application (`shredkv --store DIR export-erasure-log FILE`), then restore with --erasure-log FILE",
            )?;
            let db = global.open()?;
            (
                Some(global.key_file_for(store)),
                format!("the live store at {}", store.display()),
                Source::Live(db),
            )
        }
    };
    // The backup's backend, unless --backend moves the store to another
    // local one; a cluster's (--backend etcd) names where the live store
    // is, and `--into` is a directory.
    let target_backend = match global.backend.map(Backend::from) {
        Some(local @ (Backend::Sled | Backend::Redb)) => local,
        _ => backend,
    };
    let config = Config::new(into)
        .backend(target_backend)
        .policy(policy)
        .sync_writes(true)
        .maintenance_every(None);
    // The live store's keys: its key file, or its label on the PKCS#11
    // token (the restored store takes them over, as with a key file).
    let (config, keys, keys_arguments) = match key_file {
        Some(key_file) if !on_token => (
            config
                .key_file(&key_file)
                .allow_key_file_in_store(global.allow_key_file_in_store),
            key_file.display().to_string(),
            format!("--key-file {}", key_file.display()),
        ),
        // On a token: a restore from the live store shares its open
        // provider (one handle on the keys, as with a key file); one from
        // an erasure log opens the store label's keys itself.
        _ => (
            match &from {
                Source::Live(_) => config,
                Source::Log(_) => global.with_keys(config, into, false)?,
            },
            global.keys_description(into),
            global.keys_arguments(into),
        ),
    };
    let source = match &from {
        Source::Live(db) => ErasureSource::Live(db),
        Source::Log(log) => ErasureSource::File(log),
    };
    // A failed restore removes what it wrote into the target itself.
    let options = RestoreOptions::default().accept_lost_records(args.accept_loss);
    let (restored, report) = Db::restore_with(&args.backup, config, source, options)
        .map_err(|err| restore_error(err, &args.backup))?;
    restored.flush()?;
    if global.json {
        output::print_json(&output::json_with(
            &report,
            [
                ("backup", json!(args.backup.display().to_string())),
                ("store", json!(into.display().to_string())),
                ("backend", json!(restored.backend().name())),
                ("erasure_source", json!(source_name)),
                ("key_file", json!(keys)),
            ],
        )?)?;
        return Ok(Code::Ok);
    }
    println!(
        "Restored {} into {} ({})",
        args.backup.display(),
        into.display(),
        restored.backend()
    );
    output::print_fields(&[
        ("entries copied", report.entries.to_string()),
        (
            "erasures replayed",
            format!(
                "{} from {source_name}, {} keys destroyed: nothing erased since the backup comes back",
                report.erasures_replayed, report.keys_destroyed
            ),
        ),
        ("keys", format!("{keys} (shared)")),
    ]);
    for lost in &report.lost {
        println!("not restored (--accept-loss): {lost}");
    }
    println!(
        "Open it with: shredkv --store {} {keys_arguments} verify",
        into.display(),
    );
    eprintln!(
        "note: the restored store uses the live store's keys and has taken them over: the store it replaced is refused from now on; serve the restored one"
    );
    Ok(Code::Ok)
}

/// Where a restore's erasures come from.
enum Source<'a> {
    /// The live store, open.
    Live(Db),
    /// An exported erasure log.
    Log(&'a Path),
}

/// Explains a failed restore; a backup past its purge window is expected.
fn restore_error(err: Error, backup: &Path) -> anyhow::Error {
    match err {
        Error::StoreKeysDestroyed { epoch, .. } => CliError::new(
            Code::Erased,
            format!(
                "backup {} cannot be restored: it is older than the purge window (epoch {epoch}, which wrapped its keys, has been destroyed); erased data must not come back from old backups, so this is by design",
                backup.display()
            ),
        )
        .hint("restore a more recent backup (one taken within the purge window)")
        .into(),
        err => err.into(),
    }
}

/// `export-erasure-log`: the ledger and destroyed key ids, for restores
/// when the live store is not available.
pub(crate) fn export_erasure_log(global: &Global, args: &ExportLogArgs) -> Result<Code> {
    if args.file.exists() {
        return Err(CliError::new(
            Code::Failure,
            format!(
                "{} exists; export-erasure-log never overwrites a file",
                args.file.display()
            ),
        )
        .hint("choose a new file name (e.g. with the date)")
        .into());
    }
    let db = global.access()?;
    let items = db.export_erasure_log(&args.file)?;
    if global.json {
        output::print_json(&json!({
            "file": args.file.display().to_string(),
            "items": items,
            "exported_at": db.now()?,
        }))?;
        return Ok(Code::Ok);
    }
    println!(
        "{items} erasure log items (ledger entries and destroyed key ids; no personal data) written to {}",
        args.file.display()
    );
    println!(
        "Keep it with the backups and export it again after every erasure; a restore replays it with: shredkv --key-file KEYS restore BACKUP --into NEW_DIR --erasure-log {}",
        args.file.display()
    );
    Ok(Code::Ok)
}
