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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};

    use super::protocol::Request;
    use super::*;
    use crate::{Config, SubjectTag};

    fn config(root: &Path) -> Config {
        Config::new(root.join("store"))
            .key_file(root.join("keys"))
            .maintenance_every(None)
            .flush_every(None)
    }

    #[test]
    fn dropping_the_server_removes_its_owner_only_socket() {
        let root = tempfile::tempdir().expect("temp dir");
        let db = Db::open(config(root.path())).expect("open");
        let socket = root.path().join("admin.sock");
        let server = db.serve_admin(&socket).expect("serve");
        assert_eq!(server.path(), socket);
        let meta = std::fs::symlink_metadata(&socket).expect("socket");
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let mut client = AdminClient::connect(&socket).expect("connect");
        assert_eq!(client.store_path(), db.path());
        let tag: SubjectTag = client
            .call(Request::SubjectTag {
                subject: "acct-1".into(),
            })
            .expect("tag");
        assert_eq!(tag, db.subject_tag("acct-1"));
        drop(server);
        assert!(!socket.exists(), "the socket is removed");
        // The open connection was shut: its next request fails.
        assert!(client.call::<serde_json::Value>(Request::Now).is_err());
    }

    #[test]
    fn the_server_does_not_keep_a_dropped_store_open() {
        let root = tempfile::tempdir().expect("temp dir");
        let db = Db::open(config(root.path())).expect("open");
        let socket = root.path().join("admin.sock");
        let server = db.serve_admin(&socket).expect("serve");
        drop(db);
        // The store's lock is released while the server handle lives on.
        let again = Db::open(config(root.path())).expect("reopen");
        let err = AdminClient::connect(&socket).expect_err("the store is closed");
        assert!(err.to_string().contains("the store is closed"), "{err}");
        drop(server);
        drop(again);
    }

    #[test]
    fn config_admin_socket_serves_until_the_last_db_is_dropped() {
        let root = tempfile::tempdir().expect("temp dir");
        let socket = root.path().join("admin.sock");
        let db = Db::open(config(root.path()).admin_socket(&socket)).expect("open");
        db.register_account("acct-1").expect("register");
        let mut client = AdminClient::connect(&socket).expect("connect");
        // Nothing of it was erased: the store's own error, as in-process.
        let err = client
            .call::<crate::Certificate>(Request::Certificate {
                subject: "acct-1".into(),
            })
            .expect_err("nothing to certify");
        let local = db.certificate("acct-1").expect_err("nothing to certify");
        assert_eq!(err.kind(), "invalid_argument");
        assert_eq!(err.kind(), local.kind());
        assert_eq!(err.category(), local.category());
        assert_eq!(err.to_string(), local.to_string());
        let (Error::Remote(remote), Error::InvalidArgument { detail, .. }) = (&err, &local) else {
            panic!("a remote error and an invalid argument: {err:?}, {local:?}");
        };
        assert_eq!(remote.detail.as_ref(), Some(detail));
        drop(client);
        let clone = db.clone();
        drop(db);
        assert!(socket.exists(), "a clone keeps the store, and its socket");
        drop(clone);
        assert!(!socket.exists(), "the last Db takes the socket with it");
    }

    #[test]
    fn a_socket_path_holding_a_file_or_a_live_server_is_refused() {
        let root = tempfile::tempdir().expect("temp dir");
        let db = Db::open(config(root.path())).expect("open");
        let file = root.path().join("not-a-socket");
        std::fs::write(&file, b"x").expect("write");
        let err = db.serve_admin(&file).expect_err("a file");
        assert!(err.to_string().contains("is not a socket"), "{err}");
        assert_eq!(std::fs::read(&file).expect("read"), b"x", "left alone");
        let socket = root.path().join("admin.sock");
        let _server = db.serve_admin(&socket).expect("serve");
        let err = db.serve_admin(&socket).expect_err("taken");
        assert!(err.to_string().contains("another admin server"), "{err}");
    }

    #[test]
    fn another_uid_is_refused_with_an_error_frame() {
        let root = tempfile::tempdir().expect("temp dir");
        let db = Db::open(config(root.path())).expect("open");
        let socket = root.path().join("admin.sock");
        let other = rustix::process::getuid().as_raw().wrapping_add(1);
        let _server = db
            .serve_admin_with(
                &socket,
                AdminOptions {
                    allowed_uid: Some(other),
                },
            )
            .expect("serve");
        let err = AdminClient::connect(&socket).expect_err("refused");
        assert_eq!(err.kind(), "admin");
        assert!(
            err.to_string()
                .contains(&format!("is not the store owner's uid {other}")),
            "{err}"
        );
    }

    #[test]
    fn connections_past_the_limit_are_refused_and_served_again_once_one_closes() {
        let root = tempfile::tempdir().expect("temp dir");
        let db = Db::open(config(root.path())).expect("open");
        let socket = root.path().join("admin.sock");
        let _server = db.serve_admin(&socket).expect("serve");
        let mut open: Vec<AdminClient> = (0..MAX_CONNECTIONS)
            .map(|_| AdminClient::connect(&socket).expect("within the limit"))
            .collect();
        let err = AdminClient::connect(&socket).expect_err("one too many");
        assert!(err.to_string().contains("busy"), "{err}");
        drop(open.pop());
        // The closed connection's thread leaves the table shortly after.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut client = loop {
            match AdminClient::connect(&socket) {
                Ok(client) => break client,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(err) => panic!("a slot freed: {err}"),
            }
        };
        let err = client
            .call::<crate::Receipt>(Request::Shred {
                subject: "nobody".into(),
                classes: Vec::new(),
            })
            .expect_err("unknown subject");
        // The predicates answer for a remote error as for a local one.
        assert!(err.is_not_found(), "{err}");
        assert!(!err.is_erased());
    }

    #[test]
    fn a_backup_through_the_socket_reports_its_progress() {
        let root = tempfile::tempdir().expect("temp dir");
        let db = Db::open(config(root.path())).expect("open");
        db.register_account("acct-1").expect("register");
        db.put("acct-1", "account_profile", b"email", b"ops@example.com")
            .expect("put");
        let socket = root.path().join("admin.sock");
        let _server = db.serve_admin(&socket).expect("serve");
        let mut client = AdminClient::connect(&socket).expect("connect");
        let relative = client.call::<crate::BackupReport>(Request::Backup {
            dir: "backup".into(),
        });
        assert_eq!(relative.expect_err("relative").kind(), "invalid_argument");
        let mut seen = Vec::new();
        let report: crate::BackupReport = client
            .call_with_progress(
                Request::Backup {
                    dir: root.path().join("backup"),
                },
                &mut |done, _| seen.push(done),
            )
            .expect("backup");
        assert!(report.entries > 0);
        assert_eq!(seen.last(), Some(&report.entries), "{seen:?}");
        assert!(root.path().join("backup/store.redb").is_file());
    }
}
