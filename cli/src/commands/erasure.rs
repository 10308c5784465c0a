//! Erasure: `shred`, `certificate`, and how a receipt is shown (also by
//! the demo and `request-deletion`).

use anyhow::Result;
use serde_json::{Value, json};
use shredkv::{Error, Receipt, SubjectTag};

use crate::context::Global;
use crate::exit::{CliError, Code};
use crate::output::{self, Table};

/// Arguments of `shred`.
#[derive(Debug, clap::Args)]
pub(crate) struct ShredArgs {
    /// The subject's id; an account's end users are erased with it.
    subject: String,
    /// Erase only this class (repeatable); every class when left out.
    #[arg(long = "class", value_name = "CLASS")]
    classes: Vec<String>,
}

/// `shred`: destroys the subject's keys and prints the receipt.
pub(crate) fn shred(global: &Global, args: &ShredArgs) -> Result<Code> {
    let db = global.access()?;
    let receipt = db.shred(&args.subject, &args.classes)?;
    if global.json {
        output::print_json(&receipt_json(&receipt)?)?;
    } else {
        print!("{}", receipt_text(&receipt, &|tag| tag.to_hex()));
    }
    Ok(Code::Ok)
}

/// Arguments of `certificate`.
#[derive(Debug, clap::Args)]
pub(crate) struct CertificateArgs {
    /// The subject's id.
    subject: String,
}

/// `certificate`: a certificate of erasure; exit 0 whether the purge is
/// complete or pending (the status is printed, and in JSON).
pub(crate) fn certificate(global: &Global, args: &CertificateArgs) -> Result<Code> {
    let db = global.access()?;
    let certificate = match db.certificate(&args.subject) {
        Ok(certificate) => certificate,
        // Nothing of the subject was ever erased (said the same way by a
        // live store, whose error carries the detail).
        Err(err) if err.kind() == "invalid_argument" => {
            let detail = match err {
                Error::InvalidArgument { detail, .. } => detail,
                Error::Remote(remote) => remote.detail.unwrap_or(remote.message),
                other => other.to_string(),
            };
            if db.subject(&args.subject)?.is_none() {
                return Err(Error::UnknownSubject {
                    subject: db.subject_tag(&args.subject)?,
                }
                .into());
            }
            return Err(CliError::new(Code::NotFound, detail)
                .hint("a certificate is issued once `shredkv shred` or `shredkv request-deletion` (or compaction) has erased something of the subject")
                .into());
        }
        Err(err) => return Err(err.into()),
    };
    if global.json {
        // Said on the document, so a certificate filed on its own says
        // what it is.
        output::print_json(&output::json_with(
            &certificate,
            [
                ("certificate", json!("erasure")),
                (
                    "standard",
                    json!("NIST SP 800-88 Rev. 1, appendix G (sample certificate of sanitization)"),
                ),
            ],
        )?)?;
    } else {
        print!("{certificate}");
    }
    if !certificate.is_complete() {
        eprintln!(
            "note: the purge is PENDING; the keys are destroyed, but the steps listed remain. Issue the certificate again after compaction has run past the date shown."
        );
    }
    Ok(Code::Ok)
}

/// A receipt as JSON: its serialization, with the total of keys destroyed.
///
/// # Errors
/// Serializing it failing.
pub(crate) fn receipt_json(receipt: &Receipt) -> Result<Value> {
    output::json_with(
        receipt,
        [("keys_destroyed", json!(receipt.keys_destroyed()))],
    )
}

/// A receipt as text: what was erased (with key counts) and what was kept
/// and why. `name` labels a subject (its tag, or a name the caller knows).
pub(crate) fn receipt_text(receipt: &Receipt, name: &dyn Fn(&SubjectTag) -> String) -> String {
    let mut out = format!(
        "Receipt: {} erased at {} ({}), {} keys destroyed\n  audit: {}\n",
        name(&receipt.subject),
        output::time(receipt.erased_at),
        receipt.reason.name(),
        receipt.keys_destroyed(),
        receipt.audit_head
    );
    if receipt.erased.is_empty() && receipt.retained.is_empty() {
        out.push_str("  nothing to erase: already erased\n");
        return out;
    }
    if !receipt.erased.is_empty() {
        let mut table = Table::new(&["erased subject", "class", "keys destroyed"]).right(&[2]);
        // Classes that never held a key are erased too (no later write can
        // revive them); one row per subject says so.
        let mut empty: Vec<(SubjectTag, usize)> = Vec::new();
        for e in &receipt.erased {
            if e.class.is_some() && e.keys_destroyed == 0 {
                match empty.iter_mut().find(|(t, _)| *t == e.subject) {
                    Some((_, n)) => *n += 1,
                    None => empty.push((e.subject, 1)),
                }
                continue;
            }
            table.row([
                name(&e.subject),
                e.class.clone().unwrap_or_else(|| "(every class)".into()),
                e.keys_destroyed.to_string(),
            ]);
        }
        for (subject, n) in empty {
            table.row([
                name(&subject),
                format!("({n} more classes that held no data)"),
                "0".to_string(),
            ]);
        }
        indent(&mut out, &table);
    }
    if !receipt.retained.is_empty() {
        let mut table = Table::new(&["retained subject", "class", "until", "why"]);
        for r in &receipt.retained {
            table.row([
                name(&r.subject),
                r.class.clone(),
                r.until
                    .map_or_else(|| "until released".into(), output::time),
                r.reason.clone(),
            ]);
        }
        indent(&mut out, &table);
    }
    out
}

fn indent(out: &mut String, table: &Table) {
    for line in table.render().lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
}
