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
use shredkv_crypto::SubjectTag;

/// One record as returned by scans and exports. Its `Debug` shows lengths,
/// not the key or value (personal data does not belong in logs).
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

/// The prefix of a scope's records: subject tag ‖ class.
pub(crate) fn scope_prefix(tag: &SubjectTag, class: u16) -> [u8; 18] {
    let mut out = [0u8; 18];
    out[..16].copy_from_slice(&tag.0);
    out[16..].copy_from_slice(&class.to_be_bytes());
    out
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
