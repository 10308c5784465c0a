//! The admin server: a thread accepting connections on the store's Unix
//! socket, and one thread per connection (at most [`MAX_CONNECTIONS`])
//! executing its requests on the open [`Db`].
//!
//! The server holds only a weak handle on the store: it never keeps a
//! dropped store open, and a request arriving after the last `Db` is gone
//! is answered with an error.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter};
use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, PermissionsExt as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use super::protocol::{
    ClientFrame, ExportSummary, PROTOCOL_VERSION, Request, ServerFrame, admin_error, decode,
    read_frame, write_frame,
};
use crate::db::DbInner;
use crate::{Classes, Db, ErasureReason, Error, PutOptions, RemoteError, Result};

/// Connections served at once; more are refused with an error frame.
pub const MAX_CONNECTIONS: usize = 8;

/// How often the accept thread looks at its stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// How long a connection may stay silent between requests.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// How long a frame may wait for a client that does not read; then the
/// client is taken for gone.
const STALLED_CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Options of an admin server beyond its socket path (for tests).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default)]
pub struct AdminOptions {
    /// The only uid allowed to connect; the process's own uid when `None`.
    pub allowed_uid: Option<u32>,
}

/// A running admin server (see [`Db::serve_admin`]). Dropping it stops the
/// server, closes its connections (a request being executed completes) and
/// removes the socket file.
#[derive(Debug)]
pub struct AdminServer {
    path: PathBuf,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    next_id: AtomicU64,
    /// A handle on each open connection, to shut it down when stopping.
    connections: Mutex<HashMap<u64, UnixStream>>,
}

impl AdminServer {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Binds `path` (owner-only) and starts serving `inner`.
    pub(crate) fn start(inner: &Arc<DbInner>, path: &Path, options: AdminOptions) -> Result<Self> {
        let allowed_uid = options
            .allowed_uid
            .unwrap_or_else(|| rustix::process::getuid().as_raw());
        let listener = bind_owner_only(path)?;
        listener.set_nonblocking(true).map_err(|source| Error::Io {
            action: "configure the admin socket",
            path: path.to_path_buf(),
            source,
        })?;
        let shared = Arc::new(Shared::default());
        let weak = Arc::downgrade(inner);
        let accept = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("shredkv-admin".into())
                .spawn(move || accept_loop(&listener, &weak, &shared, allowed_uid))
                .map_err(|source| Error::Io {
                    action: "start the admin server thread",
                    path: path.to_path_buf(),
                    source,
                })?
        };
        Ok(AdminServer {
            path: path.to_path_buf(),
            shared,
            accept: Some(accept),
        })
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take()
            && accept.thread().id() != std::thread::current().id()
        {
            let _ = accept.join();
        }
        // Idle connections wake up and end; one executing a request ends
        // after it (its reply finds the socket shut).
        let connections = std::mem::take(
            &mut *self
                .shared
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for stream in connections.values() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds a Unix socket at `path` that no other user can ever connect to:
/// it is bound inside a new directory only the owner can enter, made 0600,
/// and only then renamed into place. A stale socket file (no server
/// behind it) is replaced; a live one is refused.
fn bind_owner_only(path: &Path) -> Result<UnixListener> {
    let io = |action: &'static str, at: &Path| {
        let at = at.to_path_buf();
        move |source| Error::Io {
            action,
            path: at,
            source,
        }
    };
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(admin_error(format!(
            "the admin socket path {} has no file name",
            path.display()
        )));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(admin_error(format!(
                "{} exists and is not a socket; the admin socket is not created over it",
                path.display()
            )));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(admin_error(format!(
                "another admin server is listening on {}",
                path.display()
            )));
        }
        std::fs::remove_file(path).map_err(io("remove a stale admin socket", path))?;
    }
    // Unique per process and bind, so two servers starting at once in one
    // process do not share it.
    static BINDS: AtomicU64 = AtomicU64::new(0);
    let private = parent.join(format!(
        ".{}.{}.{}.bind",
        name.to_string_lossy(),
        std::process::id(),
        BINDS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(io("create the admin socket's private directory", &private))?;
    let staged = private.join("admin.sock");
    let bound = (|| {
        let listener = UnixListener::bind(&staged).map_err(io("bind the admin socket", &staged))?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
            .map_err(io("restrict the admin socket to its owner", &staged))?;
        std::fs::rename(&staged, path).map_err(io("move the admin socket into place", path))?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    bound
}

fn accept_loop(listener: &UnixListener, db: &Weak<DbInner>, shared: &Arc<Shared>, uid: u32) {
    while !shared.stop.load(Ordering::SeqCst) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
            // A connection that failed while queued: the next one is served.
            Err(_) => continue,
        };
        // A store already dropped is said so after the hello.
        let _ = admit(stream, db, shared, uid);
    }
}

/// Checks the peer and the connection limit, then serves the connection
/// on a thread of its own.
fn admit(stream: UnixStream, db: &Weak<DbInner>, shared: &Arc<Shared>, uid: u32) -> Result<()> {
    stream
        .set_nonblocking(false)
        .map_err(|err| admin_error(format!("cannot configure a connection: {err}")))?;
    let mut writer = BufWriter::new(&stream);
    let peer = rustix::net::sockopt::socket_peercred(&stream)
        .map(|cred| cred.uid.as_raw())
        .map_err(|err| admin_error(format!("cannot read the peer's credentials: {err}")));
    let refusal = match peer {
        Ok(peer) if peer == uid => None,
        Ok(peer) => Some(format!(
            "connection refused: peer uid {peer} is not the store owner's uid {uid}"
        )),
        Err(err) => Some(err.to_string()),
    };
    if let Some(detail) = refusal {
        return refuse(&mut writer, detail);
    }
    let mut connections = shared
        .connections
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if connections.len() >= MAX_CONNECTIONS {
        drop(connections);
        return refuse(
            &mut writer,
            format!("busy: {MAX_CONNECTIONS} admin connections are open; retry later"),
        );
    }
    drop(writer);
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let handle = stream
        .try_clone()
        .map_err(|err| admin_error(format!("cannot track a connection: {err}")))?;
    connections.insert(id, handle);
    drop(connections);
    let (db, shared) = (db.clone(), Arc::clone(shared));
    let spawned = std::thread::Builder::new()
        .name("shredkv-admin-conn".into())
        .spawn({
            let shared = Arc::clone(&shared);
            move || {
                let _ = serve_connection(&stream, &db);
                let _ = stream.shutdown(std::net::Shutdown::Both);
                shared
                    .connections
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
            }
        });
    if spawned.is_err() {
        shared
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }
    Ok(())
}

/// Sends a refusal and lets the connection close.
fn refuse(out: &mut impl std::io::Write, detail: String) -> Result<()> {
    write_frame(
        out,
        &ServerFrame::Error(RemoteError::from_error(&admin_error(detail))),
    )
}

/// The hello exchange, then requests until the client closes. Any error
/// here ends the connection; the store is untouched by it.
fn serve_connection(stream: &UnixStream, db: &Weak<DbInner>) -> Result<()> {
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    // A client that stops reading must not hold the store open for ever
    // (a request in flight holds a `Db`).
    let _ = stream.set_write_timeout(Some(STALLED_CLIENT_TIMEOUT));
    let mut input = BufReader::new(stream);
    let mut out = BufWriter::new(stream);
    let hello = match read_frame(&mut input) {
        Ok(Some(hello)) => hello,
        Ok(None) => return Ok(()),
        Err(err) => return refuse_with(&mut out, &err),
    };
    let protocol = match decode::<ClientFrame>(&hello, "hello") {
        Ok(ClientFrame::Hello { protocol }) => protocol,
        Ok(ClientFrame::Request(_)) => {
            return refuse(&mut out, "the first frame must be a hello".into());
        }
        Err(err) => return refuse_with(&mut out, &err),
    };
    if protocol != PROTOCOL_VERSION {
        return refuse(
            &mut out,
            format!(
                "protocol version {protocol} is not supported: this store speaks version {PROTOCOL_VERSION} (use a shredkv CLI of the same version as the application)"
            ),
        );
    }
    let Some(inner) = db.upgrade() else {
        return refuse(&mut out, "the store is closed".into());
    };
    let welcome = ServerFrame::Welcome {
        protocol: PROTOCOL_VERSION,
        // Absolute, so the client can compare it with the store it means.
        store: std::fs::canonicalize(&inner.path).unwrap_or_else(|_| inner.path.clone()),
        backend: inner.storage.backend().name().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    drop(inner);
    write_frame(&mut out, &welcome)?;
    loop {
        let body = match read_frame(&mut input) {
            Ok(Some(body)) => body,
            Ok(None) => return Ok(()),
            // Over the limit or cut short: said (if the client still
            // listens), then the connection ends.
            Err(err) => {
                let _ = refuse_with(&mut out, &err);
                return Err(err);
            }
        };
        let request = match decode::<ClientFrame>(&body, "request") {
            Ok(ClientFrame::Request(request)) => request,
            Ok(ClientFrame::Hello { .. }) => {
                return refuse(&mut out, "hello sent twice".into());
            }
            // A client that sends garbage loses its connection, nothing else.
            Err(err) => return refuse_with(&mut out, &err),
        };
        let Some(inner) = db.upgrade() else {
            return refuse(&mut out, "the store is closed".into());
        };
        let db = Db { inner };
        let mut replies = Replies {
            out: &mut out,
            broken: false,
        };
        let result = execute(&db, request, &mut replies);
        drop(db);
        if replies.broken {
            // The client left mid-request; the request itself completed.
            return Ok(());
        }
        match result {
            Ok(reply) => write_frame(&mut out, &ServerFrame::Reply(reply))?,
            Err(err) => write_frame(&mut out, &ServerFrame::Error(RemoteError::from_error(&err)))?,
        }
    }
}

fn refuse_with(out: &mut impl std::io::Write, err: &Error) -> Result<()> {
    write_frame(out, &ServerFrame::Error(RemoteError::from_error(err)))
}

/// Frames sent before a request's reply (progress, export records). Once
/// the client is gone nothing more is written; the work goes on to its end
/// (an erasure or a compaction is not left half done by a disconnect).
struct Replies<'a, W: std::io::Write> {
    out: &'a mut W,
    broken: bool,
}

impl<W: std::io::Write> Replies<'_, W> {
    fn send(&mut self, frame: &ServerFrame) {
        if !self.broken && write_frame(self.out, frame).is_err() {
            self.broken = true;
        }
    }

    fn progress(&mut self, done: u64, total: Option<u64>) {
        self.send(&ServerFrame::Progress { done, total });
    }
}

fn json(value: impl serde::Serialize) -> Result<serde_json::Value> {
    serde_json::to_value(value)
        .map_err(|_| admin_error("a reply could not be encoded as JSON".to_string()))
}

/// A verify's progress frame at most every this many records.
const VERIFY_PROGRESS_EVERY: u64 = 1024;
/// A compaction's progress frame at most every this many due items.
const COMPACT_PROGRESS_EVERY: u64 = 64;

/// Executes one request with the same `Db` method an in-process caller
/// uses, so every guarantee (durability, gate locking, audit) is the same.
fn execute<W: std::io::Write>(
    db: &Db,
    request: Request,
    replies: &mut Replies<'_, W>,
) -> Result<serde_json::Value> {
    match request {
        Request::Now => json(db.now()),
        Request::SubjectTag { subject } => json(db.subject_tag(&subject)),
        Request::Stats => json(db.stats()?),
        Request::Policy => json(db.policy().toml()),
        Request::Subjects => json(db.subjects()?),
        Request::Subject { subject } => json(db.subject(&subject)?),
        Request::EndUsersOf { account } => json(db.end_users_of(&account)?),
        Request::Holds => json(db.holds()?),
        Request::GetRecord {
            subject,
            class,
            key,
        } => json(db.get_record(&subject, class.as_str(), &key)?),
        Request::Put {
            subject,
            class,
            record,
        } => json(db.put_with(
            &subject,
            class.as_str(),
            &record.key,
            &record.value,
            PutOptions {
                expires_at: record.expires_at,
            },
        )?),
        Request::RegisterAccount { subject } => json(db.register_account(&subject)?),
        Request::RegisterEndUser { subject, account } => {
            json(db.register_end_user(&subject, &account)?)
        }
        Request::Delete {
            subject,
            class,
            key,
        } => json(db.delete(&subject, class.as_str(), &key)?),
        Request::Export { subject } => {
            let summary: ExportSummary =
                super::export_each(db, subject.as_deref(), &mut |event| {
                    match event {
                        super::ExportEvent::Record(record) => {
                            replies.send(&ServerFrame::Record(record));
                        }
                        super::ExportEvent::Progress { done, total } => {
                            replies.progress(done, Some(total));
                        }
                    }
                    // A client gone mid-export: stop reading the store.
                    if replies.broken {
                        Err(admin_error("the client left during the export"))
                    } else {
                        Ok(())
                    }
                })?;
            json(summary)
        }
        Request::Shred { subject, classes } => {
            let names: Vec<&str> = classes.iter().map(String::as_str).collect();
            let classes = if names.is_empty() {
                Classes::All
            } else {
                Classes::Only(&names)
            };
            json(db.shred(&subject, classes)?)
        }
        Request::Certificate { subject } => json(db.certificate(&subject)?),
        Request::Restrict { subject } => json(db.restrict(&subject)?),
        Request::LiftRestriction { subject } => json(db.lift_restriction(&subject)?),
        Request::ReRegister { subject } => json(db.re_register(&subject)?),
        Request::ReRegisterClass { subject, class } => {
            json(db.re_register_class(&subject, class.as_str())?)
        }
        Request::PlaceHold {
            subject,
            class,
            reason,
        } => json(db.place_hold(&subject, class.as_deref(), &reason)?),
        Request::ReleaseHold { subject, class } => {
            json(db.release_hold(&subject, class.as_deref())?)
        }
        Request::CloseAccount { account } => json(db.close_account(&account)?),
        Request::OptOut { subject } => json(db.opt_out_of_marketing(&subject)?),
        Request::ReleaseData { subject, class } => json(db.release(&subject, &class)?),
        Request::RequestDeletion { subject, underage } => {
            let reason = if underage {
                ErasureReason::Underage
            } else {
                ErasureReason::DeletionRequest
            };
            json(db.request_deletion(&subject, reason)?)
        }
        Request::Compact { budget } => {
            let budget = usize::try_from(budget).unwrap_or(usize::MAX);
            let mut last = 0;
            let report = db.compact_with(budget, &mut |done| {
                if done >= last + COMPACT_PROGRESS_EVERY {
                    last = done;
                    replies.progress(done, None);
                }
            })?;
            json(report)
        }
        Request::RotateEpoch => json(db.rotate_epoch()?),
        Request::Verify => {
            let mut last = 0;
            let report = db.verify_with(&mut |done| {
                if done >= last + VERIFY_PROGRESS_EVERY {
                    last = done;
                    replies.progress(done, None);
                }
            })?;
            json(report)
        }
        Request::AuditTail { entries } => {
            json(db.audit_tail(usize::try_from(entries).unwrap_or(usize::MAX))?)
        }
        Request::ClassName { number } => json(db.class_name(number)),
        Request::VerifyAudit => json(db.verify_audit()?),
        Request::Backup { dir } => {
            require_absolute(&dir)?;
            json(db.backup_with(&dir, &mut |done| replies.progress(done, None))?)
        }
        Request::ExportErasureLog { file } => {
            require_absolute(&file)?;
            json(db.export_erasure_log(&file)?)
        }
    }
}

/// A path from a client must not depend on the server's working directory.
fn require_absolute(path: &Path) -> Result<()> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(Error::InvalidArgument {
            what: "path",
            detail: format!(
                "{} is relative; the admin server writes only to absolute paths",
                path.display()
            ),
        })
    }
}
