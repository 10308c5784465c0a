//! The admin endpoint: operate a store this process holds open from another
//! process (the `shredkv` CLI) through a Unix domain socket.
//!
//! The backends lock the store for one process, so an application that
//! keeps its store open opts in with [`Config::admin_socket`](crate::Config::admin_socket)
//! (served from [`Db::open`] until the last `Db` is dropped) or
//! [`Db::serve_admin`] (served until the returned [`AdminServer`] is
//! dropped). The socket is owner-only (mode 0600, bound where no other user
//! can reach it first) and every connection's peer uid is checked.
//!
//! Every request is executed by the `Db` method an in-process caller would
//! use: the endpoint adds no capability and skips no guarantee. No key
//! material crosses it. [`protocol`] documents the frames; [`AdminClient`]
//! is the client the CLI uses.

mod client;
pub mod protocol;
mod server;

use std::collections::HashSet;
use std::path::Path;

pub use client::AdminClient;
pub use protocol::{ExportSummary, ExportedRecord, MAX_FRAME_LEN, PROTOCOL_VERSION};
#[doc(hidden)]
pub use server::AdminOptions;
pub use server::{AdminServer, MAX_CONNECTIONS};

use crate::{Db, Error, Export, Result, SubjectKind, SubjectState};

/// One step of [`export_each`].
#[derive(Debug)]
pub enum ExportEvent {
    /// A record.
    Record(ExportedRecord),
    /// Subjects done out of all (an export of every subject).
    Progress {
        /// Subjects done.
        done: u64,
        /// Subjects in all (erased ones included).
        total: u64,
    },
}

/// Exports one subject (an account with its end users) or, when `subject`
/// is `None`, every subject that is not erased (accounts with their end
/// users, then end users whose account is erased: they may keep held
/// classes), record by record. Memory holds one subject's export at a time
/// ([`Db::export_tag`]). `each` may stop the export by returning an error.
///
/// # Errors
/// As [`Db::export`] and [`Db::subjects`], or what `each` returns.
pub fn export_each<E: From<Error>>(
    db: &Db,
    subject: Option<&str>,
    each: &mut dyn FnMut(ExportEvent) -> Result<(), E>,
) -> Result<ExportSummary, E> {
    let Some(subject) = subject else {
        return export_all(db, each);
    };
    let export = db.export(subject)?;
    let subjects = u64::try_from(export.subjects.len()).unwrap_or(u64::MAX);
    let records = emit(export, each)?;
    Ok(ExportSummary {
        records,
        subjects,
        erased_skipped: 0,
    })
}

fn export_all<E: From<Error>>(
    db: &Db,
    each: &mut dyn FnMut(ExportEvent) -> Result<(), E>,
) -> Result<ExportSummary, E> {
    let all = db.subjects()?;
    let total = u64::try_from(all.len()).unwrap_or(u64::MAX);
    let mut done = HashSet::new();
    let mut summary = ExportSummary::default();
    let accounts_first = all
        .iter()
        .filter(|s| s.kind == SubjectKind::Account)
        .chain(all.iter().filter(|s| s.kind == SubjectKind::EndUser));
    for info in accounts_first {
        if info.state == SubjectState::Erased {
            summary.erased_skipped += 1;
            done.insert(info.tag);
            each(ExportEvent::Progress {
                done: u64::try_from(done.len()).unwrap_or(u64::MAX),
                total,
            })?;
            continue;
        }
        if done.contains(&info.tag) {
            continue;
        }
        let export = db.export_tag(info.tag)?;
        for subject in &export.subjects {
            if done.insert(subject.tag) {
                summary.subjects += 1;
            }
        }
        summary.records += emit(export, each)?;
        each(ExportEvent::Progress {
            done: u64::try_from(done.len()).unwrap_or(u64::MAX),
            total,
        })?;
    }
    Ok(summary)
}

/// Hands `export`'s records to `each`; returns how many.
fn emit<E>(export: Export, each: &mut dyn FnMut(ExportEvent) -> Result<(), E>) -> Result<u64, E> {
    let mut n = 0u64;
    for subject in export.subjects {
        for (class, records) in subject.classes {
            for record in records {
                each(ExportEvent::Record(ExportedRecord {
                    subject: subject.tag,
                    kind: subject.kind,
                    class: class.clone(),
                    record,
                }))?;
                n += 1;
            }
        }
    }
    Ok(n)
}

impl Db {
    /// Serves this store's admin endpoint on a Unix socket at `path` until
    /// the returned handle is dropped (or the last `Db` is). See
    /// [`crate::admin`].
    ///
    /// # Errors
    /// [`Error::Admin`] if `path` holds something other than a stale socket
    /// or another server listens there; [`Error::Io`] if the socket cannot
    /// be bound, restricted or moved into place.
    pub fn serve_admin(&self, path: impl AsRef<Path>) -> Result<AdminServer> {
        AdminServer::start(&self.inner, path.as_ref(), AdminOptions::default())
    }

    /// [`Db::serve_admin`] with options (tests: another allowed uid).
    ///
    /// # Errors
    /// As [`Db::serve_admin`].
    #[doc(hidden)]
    pub fn serve_admin_with(
        &self,
        path: impl AsRef<Path>,
        options: AdminOptions,
    ) -> Result<AdminServer> {
        AdminServer::start(&self.inner, path.as_ref(), options)
    }
}
