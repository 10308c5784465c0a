//! The anchor check at open (guarantee G6 against rollback).
//!
//! The key provider keeps the position of the store's last durable audit
//! entry (audit.rs, "The anchor"), outside the store's files. At open the
//! store's own chain is compared with it:
//!
//! - **behind** (an older generation, or fewer entries): the files were
//!   rolled back (a copy or snapshot put back, a backend that dropped its
//!   damaged tail) or the audit tail was cut; refused with
//!   [`Error::StoreRolledBack`], naming both positions;
//! - **the anchored entry differs** (same generation, but the entry at the
//!   anchored position is missing or has another hash): the chain was
//!   rewritten; refused the same way;
//! - **ahead**: a crash between the store's commit and the anchor's, or
//!   buffered entries made durable since; the anchor is brought level.
//!
//! A provider that keeps no anchor gives no such protection (documented in
//! docs/threat-model.md).

use std::path::Path;

use shredkv_crypto::{Anchor, KeyProvider};

use crate::audit::AuditLog;
use crate::error::{Error, Result};
use crate::storage::{Storage, Tree};

/// Compares the store with its anchor; refuses a store behind it, brings
/// the anchor level with a store ahead of it.
pub(super) fn check(
    storage: &dyn Storage,
    audit: &AuditLog,
    provider: &dyn KeyProvider,
    path: &Path,
) -> Result<()> {
    if !provider.keeps_anchor() {
        return Ok(());
    }
    let ours = audit.position(storage)?;
    let refuse = |kept: Anchor, detail: String| Error::StoreRolledBack {
        path: path.to_path_buf(),
        store: ours.position(),
        anchor: kept,
        detail,
    };
    if let Some(kept) = provider.anchor()? {
        if ours.position() < kept.position() {
            let detail = if ours.generation < kept.generation {
                "a restore has taken over this key file since this store's state".to_string()
            } else {
                format!("{} durable audit entries are missing", kept.seq - ours.seq)
            };
            return Err(refuse(kept, detail));
        }
        if ours.generation == kept.generation {
            let found = storage
                .get(Tree::Audit, &kept.seq.to_be_bytes())?
                .map(|bytes| audit.entry_hash(kept.seq, &bytes));
            if found != Some(kept.head) {
                return Err(refuse(
                    kept,
                    format!("audit entry {} is not the one anchored", kept.seq),
                ));
            }
        }
        if ours.position() == kept.position() {
            return Ok(());
        }
    }
    if ours.seq > 0 {
        provider.advance_anchor(&ours)?;
    }
    Ok(())
}
