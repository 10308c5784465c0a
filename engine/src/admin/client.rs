//! The admin client: one connection to a store's admin endpoint, requests
//! one at a time.

use std::io::{BufReader, BufWriter};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::protocol::{
    ClientFrame, ExportSummary, ExportedRecord, PROTOCOL_VERSION, Request, ServerFrame,
    admin_error, decode, read_frame, write_frame,
};
use crate::{Backend, Error, Result};

/// A connection to a live store's admin endpoint.
#[derive(Debug)]
pub struct AdminClient {
    input: BufReader<UnixStream>,
    out: BufWriter<UnixStream>,
    store: PathBuf,
    backend: Backend,
}

impl AdminClient {
    /// Connects to the socket at `path` and exchanges hellos.
    ///
    /// # Errors
    /// [`Error::Admin`] if nothing listens there, the server refuses the
    /// connection (another uid, too many connections) or speaks another
    /// protocol version; [`Error::Remote`] for a refusal the server explains.
    pub fn connect(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).map_err(|err| {
            admin_error(format!(
                "cannot connect to the admin socket {}: {err}",
                path.display()
            ))
        })?;
        let clone = stream
            .try_clone()
            .map_err(|err| admin_error(format!("cannot use the admin socket: {err}")))?;
        let mut client = AdminClient {
            input: BufReader::new(stream),
            out: BufWriter::new(clone),
            store: PathBuf::new(),
            backend: Backend::default(),
        };
        write_frame(
            &mut client.out,
            &ClientFrame::Hello {
                protocol: PROTOCOL_VERSION,
            },
        )?;
        match client.next_frame()? {
            ServerFrame::Welcome {
                protocol,
                store,
                backend,
                ..
            } if protocol == PROTOCOL_VERSION => {
                client.store = store;
                client.backend = match backend.as_str() {
                    "sled" => Backend::Sled,
                    _ => Backend::Redb,
                };
                Ok(client)
            }
            ServerFrame::Welcome { protocol, .. } => Err(admin_error(format!(
                "the store speaks admin protocol version {protocol}, this client {PROTOCOL_VERSION}"
            ))),
            ServerFrame::Error(err) => Err(Error::Remote(err)),
            _ => Err(admin_error("the server did not answer the hello")),
        }
    }

    /// The store directory the server holds open.
    pub fn store_path(&self) -> &Path {
        &self.store
    }

    /// The store's backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn next_frame(&mut self) -> Result<ServerFrame> {
        let body = read_frame(&mut self.input)?
            .ok_or_else(|| admin_error("the store closed the admin connection"))?;
        decode(&body, "frame from the store")
    }

    /// Sends `request` and waits for its reply, as `T` (the type the
    /// request documents). Progress frames go to `progress`; export records
    /// to `record` (refused for other requests).
    ///
    /// # Errors
    /// [`Error::Remote`] with the store's error; [`Error::Admin`] if the
    /// connection breaks or a frame is malformed.
    pub fn call_streaming<T: DeserializeOwned, E: From<Error>>(
        &mut self,
        request: Request,
        progress: &mut dyn FnMut(u64, Option<u64>),
        record: &mut dyn FnMut(ExportedRecord) -> Result<(), E>,
    ) -> Result<T, E> {
        write_frame(&mut self.out, &ClientFrame::Request(request))?;
        loop {
            match self.next_frame()? {
                ServerFrame::Reply(value) => {
                    return Ok(serde_json::from_value(value).map_err(|_| {
                        admin_error("the store's reply does not have the expected shape")
                    })?);
                }
                ServerFrame::Error(err) => return Err(Error::Remote(err).into()),
                ServerFrame::Progress { done, total } => progress(done, total),
                ServerFrame::Record(one) => record(one)?,
                ServerFrame::Welcome { .. } => {
                    return Err(admin_error("the store sent a second welcome").into());
                }
            }
        }
    }

    /// Sends `request` and waits for its reply, as `T`.
    ///
    /// # Errors
    /// As [`AdminClient::call_streaming`].
    pub fn call<T: DeserializeOwned>(&mut self, request: Request) -> Result<T> {
        self.call_streaming(request, &mut |_, _| {}, &mut |_| {
            Err(admin_error(
                "the store sent a record to a request that is not an export",
            ))
        })
    }

    /// Sends `request`, reporting its progress frames to `progress`.
    ///
    /// # Errors
    /// As [`AdminClient::call_streaming`].
    pub fn call_with_progress<T: DeserializeOwned>(
        &mut self,
        request: Request,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<T> {
        self.call_streaming(request, progress, &mut |_| {
            Err(admin_error(
                "the store sent a record to a request that is not an export",
            ))
        })
    }

    /// An export ([`Request::Export`]): each record to `record` as it
    /// arrives, progress to `progress`.
    ///
    /// # Errors
    /// As [`AdminClient::call_streaming`], or what `record` returns.
    pub fn export<E: From<Error>>(
        &mut self,
        subject: Option<&str>,
        progress: &mut dyn FnMut(u64, Option<u64>),
        record: &mut dyn FnMut(ExportedRecord) -> Result<(), E>,
    ) -> Result<ExportSummary, E> {
        self.call_streaming(
            Request::Export {
                subject: subject.map(str::to_string),
            },
            progress,
            record,
        )
    }
}
