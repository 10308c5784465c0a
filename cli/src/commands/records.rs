//! Records: `get`, `put`, `delete`, `export`.
//!
//! Record keys and values are given as text on the command line. Output
//! shows them as a record serializes them: as UTF-8 when they are valid
//! UTF-8 and as base64 otherwise, with the encoding named (`key_encoding`,
//! `value_encoding`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Result;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use serde_json::json;
use shredkv::{Record, Retention, SubjectKind, SubjectTag};

use crate::context::Global;
use crate::exit::{CliError, Code};
use crate::output;

/// Arguments of `get`.
#[derive(Debug, clap::Args)]
pub(crate) struct GetArgs {
    /// The subject's id.
    subject: String,
    /// The retention class.
    class: String,
    /// The record key.
    key: String,
}

/// Arguments of `put`.
#[derive(Debug, clap::Args)]
pub(crate) struct PutArgs {
    /// The subject's id.
    subject: String,
    /// The retention class.
    class: String,
    /// The record key.
    key: String,
    /// The value, or `-` to read it from standard input (as bytes, to its end).
    value: String,
    /// Expire the record at this time (RFC 3339, e.g. 2026-01-31T00:00:00Z).
    #[arg(long, value_name = "RFC3339", conflicts_with = "expires_in")]
    expires_at: Option<Timestamp>,
    /// Expire the record after this span ("90 seconds", "15 minutes",
    /// "12 hours", "30 days", "6 months", "1 year").
    #[arg(long, value_name = "SPAN")]
    expires_in: Option<Ttl>,
    /// Register the subject as an account first, if it is not registered.
    #[arg(long, conflicts_with = "account")]
    register_account: bool,
    /// Register the subject as an end user of ACCOUNT first, if it is not registered.
    #[arg(long, value_name = "ACCOUNT")]
    account: Option<String>,
}

/// Arguments of `delete`.
#[derive(Debug, clap::Args)]
pub(crate) struct DeleteArgs {
    /// The subject's id.
    subject: String,
    /// The retention class.
    class: String,
    /// The record key.
    key: String,
}

/// Arguments of `export`.
#[derive(Debug, clap::Args)]
pub(crate) struct ExportArgs {
    /// The subject's id (an account exports its end users too); every
    /// subject when left out.
    subject: Option<String>,
    /// Write to this file (created owner-only) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// `get`: prints a record's value (text, or base64 when not UTF-8).
pub(crate) fn get(global: &Global, args: &GetArgs) -> Result<Code> {
    let db = global.access()?;
    let Some(record) = db.get_record(&args.subject, &args.class, args.key.as_bytes())? else {
        let tag = db.subject_tag(&args.subject)?;
        return Err(CliError::new(
            Code::NotFound,
            format!(
                "no record `{}` in class `{}` of subject {tag} (absent, deleted or expired)",
                args.key, args.class
            ),
        )
        .into());
    };
    let line = RecordLine {
        subject: db.subject_tag(&args.subject)?,
        kind: None,
        class: &args.class,
        record: &record,
    };
    if global.json {
        output::print_json(&line)?;
        return Ok(Code::Ok);
    }
    // The value as the JSON shows it: the text, or base64 when not UTF-8.
    let shown = serde_json::to_value(&line)?;
    if shown["value_encoding"] != "utf-8" {
        eprintln!("note: the value is not UTF-8; printed as base64");
    }
    println!("{}", shown["value"].as_str().unwrap_or_default());
    if let Some(at) = record.expires_at {
        eprintln!("expires at {}", output::time(at));
    }
    Ok(Code::Ok)
}

/// `put`: writes a record, registering its subject when asked.
pub(crate) fn put(global: &Global, args: &PutArgs) -> Result<Code> {
    let db = global.access()?;
    if args.register_account {
        db.register_account(&args.subject)?;
    } else if let Some(account) = &args.account {
        db.register_end_user(&args.subject, account)?;
    }
    let expires_at = match (&args.expires_at, &args.expires_in) {
        (Some(at), _) => Some(*at),
        (None, Some(span)) => Some(span.add_to(db.now()?).ok_or_else(|| {
            CliError::new(
                Code::Usage,
                format!("--expires-in {span} lands past the year 9999"),
            )
        })?),
        (None, None) => None,
    };
    let value = if args.value == "-" {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)?;
        bytes
    } else {
        args.value.clone().into_bytes()
    };
    db.put(
        &args.subject,
        &args.class,
        Record {
            key: args.key.as_bytes().to_vec(),
            value,
            expires_at,
        },
    )?;
    let tag = db.subject_tag(&args.subject)?.to_hex();
    if global.json {
        output::print_json(&json!({
            "subject": tag,
            "class": args.class,
            "key": args.key,
            "expires_at": expires_at,
        }))?;
    } else {
        print!(
            "stored `{}` in {} of {} ({tag})",
            args.key, args.class, args.subject
        );
        match expires_at {
            Some(at) => println!(", expires {}", output::time(at)),
            None => println!(),
        }
    }
    Ok(Code::Ok)
}

/// `delete`: deletes a record; exit 3 if there was none.
pub(crate) fn delete(global: &Global, args: &DeleteArgs) -> Result<Code> {
    let db = global.access()?;
    let existed = db.delete(&args.subject, &args.class, args.key.as_bytes())?;
    let tag = db.subject_tag(&args.subject)?.to_hex();
    if !existed {
        return Err(CliError::new(
            Code::NotFound,
            format!(
                "no record `{}` in class `{}` of subject {tag}: nothing to delete",
                args.key, args.class
            ),
        )
        .into());
    }
    if global.json {
        output::print_json(
            &json!({ "subject": tag, "class": args.class, "key": args.key, "deleted": true }),
        )?;
    } else {
        println!(
            "deleted `{}` from {} of {} ({tag}); its old ciphertext is purged within the class's purge window",
            args.key, args.class, args.subject
        );
    }
    Ok(Code::Ok)
}

/// A record with where it belongs: what `get --json` prints, and each line
/// of an export.
#[derive(Debug, Serialize)]
struct RecordLine<'a> {
    subject: SubjectTag,
    /// Exports say whether the subject is an account or an end user.
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<SubjectKind>,
    class: &'a str,
    #[serde(flatten)]
    record: &'a Record,
}

/// Opens the export's destination: a new owner-only file, or stdout.
fn destination(path: Option<&PathBuf>) -> Result<Box<dyn Write>> {
    let Some(path) = path else {
        return Ok(Box::new(BufWriter::new(std::io::stdout().lock())));
    };
    let mut options = File::options();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let file = options.open(path).map_err(|err| {
        CliError::new(
            Code::Failure,
            format!("cannot create {}: {err}", path.display()),
        )
        .hint("an export never overwrites a file; choose a new path")
    })?;
    Ok(Box::new(BufWriter::new(file)))
}

/// `export`: JSON Lines of one subject (and its end users) or of all,
/// written record by record (a live store streams them).
pub(crate) fn export(global: &Global, args: &ExportArgs) -> Result<Code> {
    let db = global.access()?;
    let mut out = destination(args.output.as_ref())?;
    let bar = match &args.subject {
        Some(_) => indicatif::ProgressBar::hidden(),
        None => output::progress(None, "export"),
    };
    let summary = db.export(
        args.subject.as_deref(),
        &mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        },
        &mut |exported| {
            let line = RecordLine {
                subject: exported.subject,
                kind: Some(exported.kind),
                class: &exported.class,
                record: &exported.record,
            };
            serde_json::to_writer(&mut out, &line)?;
            out.write_all(b"\n")?;
            Ok(())
        },
    )?;
    bar.finish_and_clear();
    if summary.erased_skipped > 0 {
        eprintln!(
            "note: {} erased subjects skipped (their data is gone)",
            summary.erased_skipped
        );
    }
    out.flush()?;
    drop(out);
    let where_to = args
        .output
        .as_ref()
        .map_or_else(|| "stdout".to_string(), |p| p.display().to_string());
    eprintln!(
        "exported {} records of {} subjects to {where_to}",
        summary.records, summary.subjects
    );
    Ok(Code::Ok)
}

/// A record's time to live for `--expires-in`: seconds, minutes and hours
/// (what messaging TTLs use) as well as the policy file's days, weeks,
/// months and years.
#[derive(Debug, Clone)]
pub(crate) enum Ttl {
    /// A fixed number of seconds, and how it was written.
    Exact(u64, String),
    /// A calendar span, as in the policy file.
    Calendar(Retention),
}

impl Ttl {
    fn add_to(&self, now: Timestamp) -> Option<Timestamp> {
        match self {
            Ttl::Exact(seconds, _) => now
                .checked_add(SignedDuration::from_secs(i64::try_from(*seconds).ok()?))
                .ok(),
            Ttl::Calendar(span) => span.add_to(now),
        }
    }
}

impl std::fmt::Display for Ttl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ttl::Exact(_, text) => f.write_str(text),
            Ttl::Calendar(span) => write!(f, "{span}"),
        }
    }
}

impl std::str::FromStr for Ttl {
    type Err = String;

    fn from_str(text: &str) -> Result<Ttl, String> {
        let mut words = text.split_whitespace();
        if let (Some(number), Some(unit), None) = (words.next(), words.next(), words.next()) {
            let per_unit = match unit.to_ascii_lowercase().trim_end_matches('s') {
                "second" | "sec" => Some(1u64),
                "minute" | "min" => Some(60),
                "hour" => Some(3_600),
                _ => None,
            };
            if let Some(per_unit) = per_unit {
                let count: u64 = number
                    .parse()
                    .map_err(|_| format!("`{number}` is not a whole number"))?;
                let seconds = count
                    .checked_mul(per_unit)
                    .ok_or_else(|| format!("`{text}` is too long"))?;
                return Ok(Ttl::Exact(seconds, text.to_string()));
            }
        }
        text.parse::<Retention>().map(Ttl::Calendar).map_err(|err| {
            format!("{err} (seconds, minutes and hours are accepted too, e.g. \"12 hours\")")
        })
    }
}
