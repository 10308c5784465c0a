//! Record layout in tree `data`.
//!
//! ```text
//! key:   subject tag (16) ‖ class u16 ‖ record part
//!          record part = HMAC-SHA256(scope blinding key, record key)[..16]  (blinded classes)
//!                      = the record key itself                              (ordered classes)
//! value: value envelope (shredkv-crypto), associated data = store id (16) ‖ key above
//! plaintext inside the envelope:
//!          blinded: record key length u32 ‖ record key ‖ value
//!          ordered: value
//! ```
//!
//! The associated data binds a value to its store, subject, class and record,
//! so copying it anywhere else fails authentication (G5).

use jiff::Timestamp;
use shredkv_crypto::{Envelope, KeyId, SubjectTag};

/// One record as returned by scans and exports. Its `Debug` shows lengths,
/// not the key or value (personal data does not belong in logs).
///
/// With the `serde` feature it serializes as `key`, `key_encoding`,
/// `value`, `value_encoding` and `expires_at`: the key and the value are
/// text when they are valid UTF-8 (encoding `"utf-8"`), else standard
/// padded base64 (encoding `"base64"`), so text stays readable and any bytes
/// come back exactly.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    /// The record key, as written.
    pub key: Vec<u8>,
    /// The value, as written.
    pub value: Vec<u8>,
    /// When the record expires, if it does.
    pub expires_at: Option<Timestamp>,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("key", &format_args!("<{} bytes>", self.key.len()))
            .field("value", &format_args!("<{} bytes>", self.value.len()))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// One record borrowed from the scan that reads it ([`crate::Db::scan_with`]):
/// its key and value live in the scan's buffers until the visitor returns,
/// so a scan that only looks at its records allocates nothing per record.
/// [`RecordRef::to_record`] keeps one. Its `Debug` shows lengths only.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The record key, as written.
    pub key: &'a [u8],
    /// The value, as written.
    pub value: &'a [u8],
    /// When the record expires, if it does.
    pub expires_at: Option<Timestamp>,
}

impl RecordRef<'_> {
    /// The record, owned.
    pub fn to_record(&self) -> Record {
        Record {
            key: self.key.to_vec(),
            value: self.value.to_vec(),
            expires_at: self.expires_at,
        }
    }
}

impl std::fmt::Debug for RecordRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordRef")
            .field("key", &format_args!("<{} bytes>", self.key.len()))
            .field("value", &format_args!("<{} bytes>", self.value.len()))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[cfg(feature = "serde")]
mod text {
    //! [`Record`] in serde formats (documented on the type).

    use std::borrow::Cow;

    use jiff::Timestamp;
    use serde::{Deserialize, Serialize};

    use super::Record;

    /// How bytes are written as text.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    enum Encoding {
        /// The bytes are valid UTF-8 and written as they are.
        #[serde(rename = "utf-8")]
        Utf8,
        /// Standard padded base64 (RFC 4648).
        #[serde(rename = "base64")]
        Base64,
    }

    /// The serialized shape of a record.
    #[derive(Serialize, Deserialize)]
    #[serde(rename = "Record")]
    struct RecordText<'a> {
        key: Cow<'a, str>,
        key_encoding: Encoding,
        value: Cow<'a, str>,
        value_encoding: Encoding,
        expires_at: Option<Timestamp>,
    }

    fn to_text(bytes: &[u8]) -> (Cow<'_, str>, Encoding) {
        match std::str::from_utf8(bytes) {
            Ok(text) => (Cow::Borrowed(text), Encoding::Utf8),
            Err(_) => (Cow::Owned(base64::encode(bytes)), Encoding::Base64),
        }
    }

    fn from_text<E: serde::de::Error>(
        field: &str,
        text: Cow<'_, str>,
        encoding: Encoding,
    ) -> Result<Vec<u8>, E> {
        match encoding {
            Encoding::Utf8 => Ok(text.into_owned().into_bytes()),
            Encoding::Base64 => base64::decode(&text).ok_or_else(|| {
                E::custom(format_args!(
                    "record {field} is not valid base64 (standard alphabet, padded)"
                ))
            }),
        }
    }

    impl Serialize for Record {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let (key, key_encoding) = to_text(&self.key);
            let (value, value_encoding) = to_text(&self.value);
            RecordText {
                key,
                key_encoding,
                value,
                value_encoding,
                expires_at: self.expires_at,
            }
            .serialize(serializer)
        }
    }

    impl<'de> Deserialize<'de> for Record {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let text = RecordText::deserialize(deserializer)?;
            Ok(Record {
                key: from_text("key", text.key, text.key_encoding)?,
                value: from_text("value", text.value, text.value_encoding)?,
                expires_at: text.expires_at,
            })
        }
    }

    /// Standard base64 (RFC 4648, section 4), padded.
    pub(super) mod base64 {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

        pub(in super::super) fn encode(data: &[u8]) -> String {
            let symbol = |index: u32| char::from(ALPHABET[(index & 63) as usize]);
            let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
            for chunk in data.chunks(3) {
                let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
                let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
                out.push(symbol(n >> 18));
                out.push(symbol(n >> 12));
                out.push(if chunk.len() > 1 { symbol(n >> 6) } else { '=' });
                out.push(if chunk.len() > 2 { symbol(n) } else { '=' });
            }
            out
        }

        /// `None` unless `text` is padded base64 of the standard alphabet.
        pub(in super::super) fn decode(text: &str) -> Option<Vec<u8>> {
            let value = |c: u8| {
                ALPHABET
                    .iter()
                    .position(|&a| a == c)
                    .and_then(|v| u32::try_from(v).ok())
            };
            let bytes = text.as_bytes();
            if !bytes.len().is_multiple_of(4) {
                return None;
            }
            let groups = bytes.len() / 4;
            let mut out = Vec::with_capacity(groups * 3);
            for (i, group) in bytes.chunks_exact(4).enumerate() {
                let padding = group.iter().rev().take_while(|&&c| c == b'=').count();
                // Padding only ends the last group, one or two symbols of it.
                if padding > 2 || (padding > 0 && i + 1 != groups) {
                    return None;
                }
                let mut n = 0u32;
                for (j, &c) in group.iter().enumerate() {
                    let v = if j < 4 - padding { value(c)? } else { 0 };
                    n = (n << 6) | v;
                }
                let [_, a, b, c] = n.to_be_bytes();
                out.extend_from_slice(&[a, b, c][..3 - padding]);
            }
            Some(out)
        }
    }
}

/// The prefix of a scope's records: subject tag ‖ class.
pub(crate) fn scope_prefix(tag: &SubjectTag, class: u16) -> [u8; 18] {
    let mut out = [0u8; 18];
    out[..16].copy_from_slice(&tag.0);
    out[16..].copy_from_slice(&class.to_be_bytes());
    out
}

/// The key a stored record's envelope names: its scope's bucket and key
/// version. Unauthenticated until the envelope opens under that key.
pub(crate) fn sealing_key(subject: SubjectTag, class: u16, envelope: &Envelope<'_>) -> KeyId {
    let r = envelope.key_ref();
    KeyId {
        subject,
        class,
        bucket: r.bucket,
        version: r.version,
    }
}

/// The full data-tree key of a record.
pub(crate) fn data_key(tag: &SubjectTag, class: u16, record_part: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(18 + record_part.len());
    out.extend_from_slice(&scope_prefix(tag, class));
    out.extend_from_slice(record_part);
    out
}

/// The associated data of a record's envelope.
pub(crate) fn associated_data(store_id: &[u8; 16], data_key: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(store_id);
    out.extend_from_slice(data_key);
}

/// The plaintext of a blinded record.
pub(crate) fn blinded_payload(record_key: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(4 + record_key.len() + value.len());
    out.extend_from_slice(
        &u32::try_from(record_key.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(record_key);
    out.extend_from_slice(value);
}

/// Splits a blinded record's plaintext into record key and value.
pub(crate) fn split_blinded_payload(plain: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = plain.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    (len <= rest.len()).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "serde")]
    #[test]
    fn base64_matches_rfc_4648_vectors_and_refuses_malformed_text() {
        use text::base64;
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64::encode(plain.as_bytes()), encoded);
            assert_eq!(base64::decode(encoded).as_deref(), Some(plain.as_bytes()));
        }
        let every_byte: Vec<u8> = (0..=u8::MAX).collect();
        assert_eq!(
            base64::decode(&base64::encode(&every_byte)),
            Some(every_byte)
        );
        for bad in ["Zg", "Zg=", "Zg===", "Z===", "Zg==Zm8=", "Zm9v!A==", "=Zm9"] {
            assert_eq!(base64::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn payload_round_trips_and_rejects_bad_lengths() {
        let mut buf = Vec::new();
        blinded_payload(b"key", b"value", &mut buf);
        assert_eq!(
            split_blinded_payload(&buf),
            Some((&b"key"[..], &b"value"[..]))
        );
        assert_eq!(split_blinded_payload(&buf[..2]), None);
        let mut bad = buf.clone();
        bad[3] = 200;
        assert_eq!(split_blinded_payload(&bad), None);
    }
}
