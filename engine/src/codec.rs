//! Big-endian encoding helpers shared by every persisted structure.
//!
//! Every structure the engine persists starts with a version byte and ends
//! with a CRC32 of the bytes before it; [`Writer::finish`] appends the CRC and
//! [`Reader::checked`] verifies it before any field is read.

use shredkv_crypto::FormatError;

/// The time `secs` unix seconds, saturating at the range jiff represents, at
/// whole seconds (so a decoded time encodes back to the same seconds and
/// decodes to the same value). Stored times outside that range only come
/// from damage; the CRC cannot tell, so decoders saturate instead of failing.
pub(crate) fn saturating_time(secs: i64) -> jiff::Timestamp {
    let min = jiff::Timestamp::MIN.as_second();
    let max = jiff::Timestamp::MAX.as_second();
    jiff::Timestamp::from_second(secs.clamp(min, max)).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// Builds an encoded structure.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// Starts a structure with its version byte.
    pub(crate) fn new(version: u8, capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity + 5);
        buf.push(version);
        Self { buf }
    }

    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// An optional time: a presence byte, then the seconds.
    pub(crate) fn opt_i64(&mut self, v: Option<i64>) -> &mut Self {
        match v {
            Some(v) => self.u8(1).i64(v),
            None => self.u8(0).i64(0),
        }
    }

    pub(crate) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    /// A length-prefixed (u32) byte string.
    pub(crate) fn var_bytes(&mut self, v: &[u8]) -> &mut Self {
        let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
        self.u32(len);
        let take = usize::try_from(len).unwrap_or(usize::MAX).min(v.len());
        self.bytes(v.get(..take).unwrap_or_default())
    }

    /// Appends the CRC32 and returns the bytes.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        let crc = crc32fast::hash(&self.buf);
        self.buf.extend_from_slice(&crc.to_be_bytes());
        self.buf
    }
}

/// Reads an encoded structure field by field; every read is bounds-checked.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    what: &'static str,
    rest: &'a [u8],
    total: usize,
}

/// What the sealed storage view hands a decoder in place of a control value
/// that fails its MAC (see `storage::sealed`): [`Reader::checked`] refuses
/// it as [`FormatError::Unauthenticated`], so every decoder reports
/// tampering where it already reports damage. Its last four bytes are not
/// the CRC of the rest, so no well-formed value equals it.
pub(crate) const UNAUTHENTICATED: &[u8] = b"\xffshredkv: fails its control MAC\xff\xff\xff\xff";

impl<'a> Reader<'a> {
    /// Verifies the trailing CRC and the version byte, and positions the
    /// reader after the version.
    pub(crate) fn checked(
        what: &'static str,
        bytes: &'a [u8],
        version: u8,
    ) -> Result<Self, FormatError> {
        if bytes == UNAUTHENTICATED {
            return Err(FormatError::Unauthenticated { what });
        }
        let Some((body, crc)) = bytes.split_last_chunk::<4>() else {
            return Err(FormatError::Truncated {
                what,
                needed: 5,
                got: bytes.len(),
            });
        };
        let expected = u32::from_be_bytes(*crc);
        let got = crc32fast::hash(body);
        if expected != got {
            return Err(FormatError::ChecksumMismatch {
                what,
                expected,
                got,
            });
        }
        let Some((found, rest)) = body.split_first() else {
            return Err(FormatError::Truncated {
                what,
                needed: 5,
                got: bytes.len(),
            });
        };
        if *found != version {
            return Err(FormatError::UnsupportedVersion {
                what,
                found: *found,
            });
        }
        Ok(Self {
            what,
            rest,
            total: bytes.len(),
        })
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(FormatError::Truncated {
                what: self.what,
                needed: self.total + N - self.rest.len(),
                got: self.total,
            })?;
        self.rest = rest;
        Ok(*head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_be_bytes(self.take()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_be_bytes(self.take()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_be_bytes(self.take()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, FormatError> {
        Ok(i64::from_be_bytes(self.take()?))
    }

    pub(crate) fn opt_i64(&mut self) -> Result<Option<i64>, FormatError> {
        let present = self.u8()?;
        let value = self.i64()?;
        match present {
            0 => Ok(None),
            1 => Ok(Some(value)),
            _ => Err(FormatError::InvalidField {
                what: self.what,
                detail: "presence byte is neither 0 nor 1",
            }),
        }
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        self.take()
    }

    pub(crate) fn var_bytes(&mut self) -> Result<&'a [u8], FormatError> {
        let len = usize::try_from(self.u32()?).unwrap_or(usize::MAX);
        if len > self.rest.len() {
            return Err(FormatError::Truncated {
                what: self.what,
                needed: self.total - self.rest.len() + len,
                got: self.total,
            });
        }
        let (head, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(head)
    }

    /// Fails unless every byte was read: trailing bytes mean a format this
    /// build does not understand.
    pub(crate) fn end(self) -> Result<(), FormatError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(FormatError::InvalidField {
                what: self.what,
                detail: "unexpected trailing bytes",
            })
        }
    }

    /// An error for a field whose value is out of range.
    pub(crate) fn invalid(&self, detail: &'static str) -> FormatError {
        FormatError::InvalidField {
            what: self.what,
            detail,
        }
    }
}

/// Encodes a time (unix seconds) so that byte order is time order.
pub(crate) fn sortable_time(secs: i64) -> [u8; 8] {
    (secs.cast_unsigned() ^ (1 << 63)).to_be_bytes()
}

/// Decodes [`sortable_time`].
pub(crate) fn time_from_sortable(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)).cast_signed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_crc() {
        let mut w = Writer::new(3, 16);
        w.u8(1)
            .u16(2)
            .u32(3)
            .u64(4)
            .i64(-5)
            .opt_i64(Some(6))
            .opt_i64(None)
            .var_bytes(b"xy");
        let bytes = w.finish();
        let mut r = Reader::checked("test", &bytes, 3).expect("reader");
        assert_eq!(r.u8().expect("u8"), 1);
        assert_eq!(r.u16().expect("u16"), 2);
        assert_eq!(r.u32().expect("u32"), 3);
        assert_eq!(r.u64().expect("u64"), 4);
        assert_eq!(r.i64().expect("i64"), -5);
        assert_eq!(r.opt_i64().expect("opt"), Some(6));
        assert_eq!(r.opt_i64().expect("opt"), None);
        assert_eq!(r.var_bytes().expect("bytes"), b"xy");
        r.end().expect("end");
        assert!(matches!(
            Reader::checked("test", UNAUTHENTICATED, 3),
            Err(FormatError::Unauthenticated { what: "test" })
        ));
        let (body, crc) = UNAUTHENTICATED
            .split_last_chunk::<4>()
            .expect("long enough");
        assert_ne!(crc32fast::hash(body).to_be_bytes(), *crc);
        let mut bad = bytes.clone();
        bad[2] ^= 1;
        assert!(matches!(
            Reader::checked("test", &bad, 3),
            Err(FormatError::ChecksumMismatch { .. })
        ));
        assert!(matches!(
            Reader::checked("test", &bytes, 4),
            Err(FormatError::UnsupportedVersion { .. })
        ));
        for len in 0..bytes.len() {
            assert!(Reader::checked("test", &bytes[..len], 3).is_err());
        }
    }

    #[test]
    fn sortable_time_orders_like_time() {
        let times = [i64::MIN, -86_400, -1, 0, 1, 1_700_000_000, i64::MAX];
        for pair in times.windows(2) {
            assert!(sortable_time(pair[0]) < sortable_time(pair[1]));
            assert_eq!(time_from_sortable(sortable_time(pair[0])), pair[0]);
        }
    }
}
