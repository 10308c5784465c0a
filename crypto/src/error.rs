//! Errors of the crypto crate.
//!
//! Two kinds are kept apart on purpose: [`FormatError`] says bytes are damaged
//! (truncated, checksum mismatch, unknown version) and is safe to describe in
//! detail; [`AuthError`] says authentication failed and carries no reason an
//! attacker could use.

use std::fmt;

/// Stored bytes are not a well-formed structure: media corruption, truncation,
/// or a format this build does not know. Never returned for a wrong key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// Fewer bytes than the structure needs.
    Truncated {
        /// What was being decoded.
        what: &'static str,
        /// Bytes needed at least.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// The CRC32 stored with the structure does not match its bytes.
    ChecksumMismatch {
        /// What was being decoded.
        what: &'static str,
        /// The checksum stored in the bytes.
        expected: u32,
        /// The checksum computed over the bytes.
        got: u32,
    },
    /// The version byte names a format this build cannot read.
    UnsupportedVersion {
        /// What was being decoded.
        what: &'static str,
        /// The version byte found.
        found: u8,
    },
    /// A field holds a value the format does not allow.
    InvalidField {
        /// What was being decoded.
        what: &'static str,
        /// Which field, and why it is invalid.
        detail: &'static str,
    },
    /// A control value (subject record, deadline, hold, ledger entry, ...)
    /// fails the MAC the store keeps over it under a key derived from the
    /// store secret: it was written, edited or moved by someone without the
    /// store's keys. Unlike [`AuthError`] this may be described: the MAC
    /// guards integrity only, the value itself is not secret.
    Unauthenticated {
        /// What was being decoded.
        what: &'static str,
    },
    /// The input is larger than the format can hold.
    TooLarge {
        /// What was being encoded.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The largest length allowed.
        max: usize,
    },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { what, needed, got } => write!(
                f,
                "{what} is truncated: needs at least {needed} bytes, found {got}"
            ),
            Self::ChecksumMismatch {
                what,
                expected,
                got,
            } => write!(
                f,
                "{what} checksum mismatch: stored crc32 {expected:08x}, computed {got:08x} (media corruption)"
            ),
            Self::UnsupportedVersion { what, found } => write!(
                f,
                "{what} has format version {found}, which this build cannot read; upgrade shredkv"
            ),
            Self::InvalidField { what, detail } => write!(f, "{what} is malformed: {detail}"),
            Self::Unauthenticated { what } => write!(
                f,
                "{what} fails its MAC under the store secret: it was written, edited or moved by someone without the store's keys (tampering)"
            ),
            Self::TooLarge { what, len, max } => {
                write!(f, "{what} is too large: {len} bytes, at most {max} allowed")
            }
        }
    }
}

impl std::error::Error for FormatError {}

/// Authentication failed: the bytes were altered, moved to another record, or
/// opened with the wrong key. Deliberately says nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthError;

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("authentication failed")
    }
}

impl std::error::Error for AuthError {}
