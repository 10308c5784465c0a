//! The admin protocol: frames, the hello exchange, requests and replies.
//!
//! A frame is a `u32` big-endian length followed by that many bytes of JSON
//! (at most [`MAX_FRAME_LEN`]). The client speaks first with
//! [`ClientFrame::Hello`]; the server answers [`ServerFrame::Welcome`] or an
//! error and closes. Then each [`ClientFrame::Request`] gets exactly one
//! final frame, [`ServerFrame::Reply`] or [`ServerFrame::Error`], preceded
//! for long work by [`ServerFrame::Progress`] frames (verify, compact) and,
//! for an export, by one [`ServerFrame::Record`] per record. The full
//! description is in `docs/design.md`, "Admin protocol".

use std::io::{self, Read, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Error, Record, RemoteError, Result, SubjectKind, SubjectTag};

/// The protocol version this build speaks; both sides must agree exactly.
/// Version 2: a backup's reply names its restore window
/// (`BackupReport::restorable_until`, `unrestorable_after`).
pub const PROTOCOL_VERSION: u32 = 2;

/// The largest frame either side sends or accepts (16 MiB). A record whose
/// JSON is larger cannot cross the socket (see `docs/operations.md`).
pub const MAX_FRAME_LEN: usize = 16 << 20;

/// A frame from the client.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientFrame {
    /// The first frame: the protocol version the client speaks.
    Hello {
        /// [`PROTOCOL_VERSION`] of the client.
        protocol: u32,
    },
    /// One request; answered by one [`ServerFrame::Reply`] or
    /// [`ServerFrame::Error`].
    Request(Request),
}

/// A frame from the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerFrame {
    /// The answer to a hello the server accepts.
    Welcome {
        /// [`PROTOCOL_VERSION`] of the server.
        protocol: u32,
        /// The store directory the server holds open.
        store: PathBuf,
        /// The store's backend (`sled`, `redb`).
        backend: String,
        /// The server's shredkv version.
        version: String,
    },
    /// How much of a long request is done (records checked, items done,
    /// entries copied, subjects exported); `total` when known.
    Progress {
        /// Units done so far.
        done: u64,
        /// Units in all, when known.
        total: Option<u64>,
    },
    /// One record of an export.
    Record(ExportedRecord),
    /// The request's result (the type its [`Request`] variant documents).
    Reply(serde_json::Value),
    /// The request failed (or the connection is refused): the error as the
    /// store's process saw it. After a refusal the server closes.
    Error(RemoteError),
}

/// What a client asks of the store. Each variant names its reply type;
/// subjects are sent by id (the socket is owner-only) and answered by tag.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The store clock now: `Timestamp`.
    Now,
    /// A subject's tag: `SubjectTag`.
    SubjectTag {
        /// The subject's id.
        subject: String,
    },
    /// `Db::stats`: `Stats`.
    Stats,
    /// The TOML text of the policy in force (`Db::policy`): `String`.
    Policy,
    /// `Db::subjects`: `Vec<SubjectInfo>`.
    Subjects,
    /// `Db::subject`: `Option<SubjectInfo>`.
    Subject {
        /// The subject's id.
        subject: String,
    },
    /// `Db::end_users_of`: `Vec<SubjectTag>`.
    EndUsersOf {
        /// The account's tag.
        account: SubjectTag,
    },
    /// `Db::holds`: `Vec<Hold>`.
    Holds,
    /// `Db::get_record`: `Option<Record>`.
    GetRecord {
        /// The subject's id.
        subject: String,
        /// The class name.
        class: String,
        /// The record key.
        key: Vec<u8>,
    },
    /// `Db::put_with`: `()`.
    Put {
        /// The subject's id.
        subject: String,
        /// The class name.
        class: String,
        /// The record (key, value, expiry).
        record: Record,
    },
    /// `Db::register_account`: `SubjectTag`.
    RegisterAccount {
        /// The account's id.
        subject: String,
    },
    /// `Db::register_end_user`: `SubjectTag`.
    RegisterEndUser {
        /// The end user's id.
        subject: String,
        /// The account's id.
        account: String,
    },
    /// `Db::delete`: `bool` (whether the record existed).
    Delete {
        /// The subject's id.
        subject: String,
        /// The class name.
        class: String,
        /// The record key.
        key: Vec<u8>,
    },
    /// An export ([`super::export_each`]): [`ServerFrame::Record`] frames
    /// and progress, then `ExportSummary`.
    Export {
        /// One subject (an account with its end users); every subject when
        /// absent.
        subject: Option<String>,
    },
    /// `Db::shred`: `Receipt`.
    Shred {
        /// The subject's id.
        subject: String,
        /// The classes to erase; every class when empty.
        classes: Vec<String>,
    },
    /// `Db::certificate`: `Certificate`.
    Certificate {
        /// The subject's id.
        subject: String,
    },
    /// `Db::restrict`: `()`.
    Restrict {
        /// The subject's id.
        subject: String,
    },
    /// `Db::lift_restriction`: `()`.
    LiftRestriction {
        /// The subject's id.
        subject: String,
    },
    /// `Db::re_register`: `()`.
    ReRegister {
        /// The subject's id.
        subject: String,
    },
    /// `Db::re_register_class`: `()`. A request of its own, not a field of
    /// `re_register`: a server that predates it refuses it as unknown
    /// instead of re-registering the whole subject.
    ReRegisterClass {
        /// The subject's id.
        subject: String,
        /// The erased class to register again.
        class: String,
    },
    /// `Db::place_hold`: `()`.
    PlaceHold {
        /// The subject's id.
        subject: String,
        /// One class, or every class when absent.
        class: Option<String>,
        /// Why (a case reference; audited).
        reason: String,
    },
    /// `Db::release_hold`: `bool` (whether there was such a hold).
    ReleaseHold {
        /// The subject's id.
        subject: String,
        /// The held class, or the whole-subject hold when absent.
        class: Option<String>,
    },
    /// `Db::close_account`: `Vec<Scheduled>`.
    CloseAccount {
        /// The account's id.
        account: String,
    },
    /// `Db::opt_out_of_marketing`: `Vec<Scheduled>`.
    OptOut {
        /// The subject's id.
        subject: String,
    },
    /// `Db::release`: `Scheduled`.
    ReleaseData {
        /// The subject's id.
        subject: String,
        /// A class kept until released.
        class: String,
    },
    /// `Db::request_deletion`: `Receipt`.
    RequestDeletion {
        /// The subject's id.
        subject: String,
        /// The account belongs to a minor (`ErasureReason::Underage`).
        underage: bool,
    },
    /// `Db::compact_with`: progress frames, then `CompactionReport`.
    Compact {
        /// At most this many due items.
        budget: u64,
    },
    /// `Db::rotate_epoch`: `EpochReport`.
    RotateEpoch,
    /// `Db::verify_with`: progress frames, then `IntegrityReport`.
    Verify,
    /// `Db::audit_tail`: `Vec<AuditEntry>`.
    AuditTail {
        /// How many entries.
        entries: u64,
    },
    /// `Db::class_name`: `Option<String>`.
    ClassName {
        /// The class number an audit entry holds.
        number: u16,
    },
    /// `Db::verify_audit`: `ChainReport`.
    VerifyAudit,
    /// `Db::backup_with` into a directory of the server's file system (an
    /// absolute path): progress frames (entries copied), then
    /// `BackupReport`.
    Backup {
        /// The backup directory: new or empty.
        dir: PathBuf,
    },
    /// `Db::export_erasure_log` into a file of the server's file system
    /// (an absolute path): `u64` (items written).
    ExportErasureLog {
        /// The file to write (must not exist).
        file: PathBuf,
    },
}

/// One record of an export, with where it belongs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedRecord {
    /// The subject's tag.
    pub subject: SubjectTag,
    /// Whether the subject is an account or an end user.
    pub kind: SubjectKind,
    /// The class name.
    pub class: String,
    /// The record.
    pub record: Record,
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExportSummary {
    /// Records exported.
    pub records: u64,
    /// Subjects exported.
    pub subjects: u64,
    /// Erased subjects skipped (an export of every subject; their data is
    /// gone).
    pub erased_skipped: u64,
}

/// An admin-endpoint error with `detail`.
pub(crate) fn admin_error(detail: impl Into<String>) -> Error {
    Error::Admin {
        detail: detail.into(),
    }
}

/// Writes `frame` as one frame.
///
/// # Errors
/// [`Error::Admin`] if it would exceed [`MAX_FRAME_LEN`] or the write fails.
pub(crate) fn write_frame(out: &mut impl Write, frame: &impl Serialize) -> Result<()> {
    let body = serde_json::to_vec(frame)
        .map_err(|err| admin_error(format!("cannot encode a frame: {}", err.classify_name())))?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&len| len as usize <= MAX_FRAME_LEN)
        .ok_or_else(|| {
            admin_error(format!(
                "a frame of {} bytes exceeds the limit of {MAX_FRAME_LEN} bytes (a record that large cannot cross the admin socket; operate the store in-process)",
                body.len()
            ))
        })?;
    let io = |err: io::Error| admin_error(format!("cannot write to the admin socket: {err}"));
    out.write_all(&len.to_be_bytes()).map_err(io)?;
    out.write_all(&body).map_err(io)?;
    out.flush().map_err(io)
}

/// Reads one frame's bytes; `None` when the peer closed the connection
/// between frames.
///
/// # Errors
/// [`Error::Admin`] for a frame over [`MAX_FRAME_LEN`] (nothing more is
/// read), a connection cut inside a frame, or a read failure.
pub(crate) fn read_frame(input: &mut impl Read) -> Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < len.len() {
        match input.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(admin_error("the connection closed inside a frame header")),
            Ok(n) => got += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                return Err(admin_error(format!(
                    "cannot read from the admin socket: {err}"
                )));
            }
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_LEN {
        return Err(admin_error(format!(
            "a frame of {len} bytes exceeds the limit of {MAX_FRAME_LEN} bytes"
        )));
    }
    let mut body = vec![0u8; len];
    input
        .read_exact(&mut body)
        .map_err(|err| admin_error(format!("the connection broke inside a frame: {err}")))?;
    Ok(Some(body))
}

/// Decodes a frame's JSON as `T`. The error names the kind of problem and
/// where, never the text (it may hold a subject id).
///
/// # Errors
/// [`Error::Admin`] if the bytes are not a `T`.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(body).map_err(|err| {
        admin_error(format!(
            "malformed {what} ({} error at line {}, column {})",
            err.classify_name(),
            err.line(),
            err.column()
        ))
    })
}

/// The name of a JSON error's class, without the input it quotes.
trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "truncation",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_with_a_big_endian_length() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &ClientFrame::Hello { protocol: 1 }).expect("write");
        let body = br#"{"hello":{"protocol":1}}"#;
        assert_eq!(
            &wire[..4],
            &u32::try_from(body.len()).expect("len").to_be_bytes()
        );
        assert_eq!(&wire[4..], body);
        let read = read_frame(&mut wire.as_slice())
            .expect("read")
            .expect("a frame");
        assert!(matches!(
            decode::<ClientFrame>(&read, "hello").expect("decode"),
            ClientFrame::Hello { protocol: 1 }
        ));
        assert!(read_frame(&mut &[][..]).expect("eof").is_none());
    }

    #[test]
    fn oversized_and_truncated_frames_are_refused() {
        let too_big = u32::try_from(MAX_FRAME_LEN + 1)
            .expect("fits")
            .to_be_bytes();
        let err = read_frame(&mut &too_big[..]).expect_err("over the limit");
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
        let cut = [0, 0, 0, 9, b'{'];
        let err = read_frame(&mut &cut[..]).expect_err("cut");
        assert!(err.to_string().contains("inside a frame"), "{err}");
    }

    #[test]
    fn malformed_json_errors_do_not_quote_the_input() {
        let err = decode::<ClientFrame>(
            br#"{"request":{"shred":{"subject":"alice@example.com"}}"#,
            "request",
        )
        .expect_err("missing field");
        assert!(!err.to_string().contains("alice"), "{err}");
    }
}
