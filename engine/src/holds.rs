//! Legal holds: a hold over a subject (all classes, or one) blocks key
//! destruction and expiry until it is released (guarantee G3).
//!
//! ```text
//! key:   subject tag (16) ‖ class u16 (0xFFFF: every class)
//! value: v1 ‖ placed at i64 ‖ reason (u32 length + UTF-8) ‖ CRC32
//! ```

use jiff::Timestamp;
use shredkv_crypto::{FormatError, SubjectTag};

use crate::codec::{Reader, Writer};

const VERSION: u8 = 1;
const WHAT: &str = "legal hold";

/// A legal hold as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The held subject.
    pub subject: SubjectTag,
    /// The held class, or `None` for every class.
    pub class: Option<String>,
    /// When it was placed.
    pub placed_at: Timestamp,
    /// Why (a case number, a regulator's request; no personal data).
    pub reason: String,
}

pub(crate) fn encode(placed_at: i64, reason: &str) -> Vec<u8> {
    let mut w = Writer::new(VERSION, 16 + reason.len());
    w.i64(placed_at).var_bytes(reason.as_bytes());
    w.finish()
}

pub(crate) fn decode(bytes: &[u8]) -> Result<(i64, String), FormatError> {
    let mut r = Reader::checked(WHAT, bytes, VERSION)?;
    let placed_at = r.i64()?;
    let reason =
        String::from_utf8(r.var_bytes()?.to_vec()).map_err(|_| r.invalid("reason is not UTF-8"))?;
    r.end()?;
    Ok((placed_at, reason))
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let bytes = super::encode(42, "case 17");
        assert_eq!(
            super::decode(&bytes).expect("decode"),
            (42, "case 17".to_string())
        );
        assert!(super::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
