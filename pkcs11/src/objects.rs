//! What the provider keeps in the token: names and byte formats.
//!
//! For a store label `S` (see [`StoreLabel`]):
//!
//! ```text
//! object                      class           CKA_LABEL               CKA_ID
//! epoch key, one per epoch    CKO_SECRET_KEY  shredkv/S/epoch/<id>    shredkv/S/epoch
//! epoch counter, two blocks   CKO_DATA        shredkv/S/counter/a|b   -
//! anchor, two blocks          CKO_DATA        shredkv/S/anchor/a|b    -
//! ```
//!
//! Epoch keys are AES-256, generated in the token: `CKA_TOKEN`,
//! `CKA_PRIVATE`, `CKA_SENSITIVE` true, `CKA_EXTRACTABLE` and
//! `CKA_MODIFIABLE` false, `CKA_ENCRYPT`/`CKA_DECRYPT` true (nothing else).
//! `<id>` is the epoch id in decimal. The shared `CKA_ID` lets one search
//! list a store's keys (a search cannot match a label's prefix).
//!
//! The data objects are `CKA_TOKEN` and `CKA_PRIVATE`, with
//! `CKA_APPLICATION` "shredkv". Their `CKA_VALUE` is one block:
//!
//! ```text
//! counter block, 16 bytes
//!   0  1  format version (1)
//!   1  3  reserved, zero
//!   4  4  next epoch id          u32 big-endian (>= 1)
//!   8  4  reserved, zero
//!  12  4  CRC32 of bytes 0..12   u32 big-endian
//! anchor block, 64 bytes
//!   0  1  format version (1)
//!   1  7  reserved, zero
//!   8  8  generation             u64 big-endian
//!  16  8  audit entry seq        u64 big-endian (0: no anchor yet)
//!  24 32  audit entry hash
//!  56  4  reserved, zero
//!  60  4  CRC32 of bytes 0..60   u32 big-endian
//! ```
//!
//! Each of the two pairs is written as the key file writes its anchor: the
//! block that does not hold the newest value is replaced (its object
//! destroyed, then created with the new value, as tokens need not allow a
//! data object's value to change), so a crash damages or removes only that
//! block and the other one still holds the value before it. The newest is the valid block with the higher
//! value (next epoch id; anchor position).

use std::fmt;

use shredkv_crypto::Anchor;

/// Version byte of both block formats.
pub(crate) const BLOCK_VERSION: u8 = 1;
pub(crate) const COUNTER_LEN: usize = 16;
pub(crate) const ANCHOR_LEN: usize = 64;
/// Longest store label accepted.
pub const MAX_STORE_LABEL_LEN: usize = 64;

/// The name that separates one store's objects from another's on a shared
/// token: 1 to 64 characters from `A-Z a-z 0-9 - _ .`.
///
/// ```
/// use shredkv_pkcs11::StoreLabel;
///
/// assert!(StoreLabel::new("orders-eu").is_ok());
/// assert!(StoreLabel::new("a/b").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLabel(String);

impl StoreLabel {
    /// Checks `label`.
    ///
    /// # Errors
    /// A sentence saying what is wrong with it.
    pub fn new(label: &str) -> Result<Self, String> {
        if label.is_empty() || label.len() > MAX_STORE_LABEL_LEN {
            return Err(format!(
                "a store label has 1 to {MAX_STORE_LABEL_LEN} characters, not {}",
                label.len()
            ));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(format!(
                "a store label holds only A-Z, a-z, 0-9, '-', '_' and '.', not {bad:?}"
            ));
        }
        Ok(Self(label.to_owned()))
    }

    /// The label as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `CKA_LABEL` of an epoch's key.
    pub(crate) fn epoch_key(&self, epoch: u32) -> String {
        format!("shredkv/{}/epoch/{epoch}", self.0)
    }

    /// `CKA_ID` shared by all of this store's epoch keys.
    pub(crate) fn epoch_key_id(&self) -> Vec<u8> {
        format!("shredkv/{}/epoch", self.0).into_bytes()
    }

    /// The epoch id an epoch key's `CKA_LABEL` names, if it is one of ours.
    pub(crate) fn parse_epoch_key(&self, label: &[u8]) -> Option<u32> {
        let label = std::str::from_utf8(label).ok()?;
        let digits = label.strip_prefix(&format!("shredkv/{}/epoch/", self.0))?;
        if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().filter(|id| *id >= 1)
    }

    /// `CKA_LABEL` of a counter block (0: A, 1: B).
    pub(crate) fn counter(&self, block: usize) -> String {
        format!("shredkv/{}/counter/{}", self.0, block_name(block))
    }

    /// `CKA_LABEL` of an anchor block (0: A, 1: B).
    pub(crate) fn anchor(&self, block: usize) -> String {
        format!("shredkv/{}/anchor/{}", self.0, block_name(block))
    }
}

impl fmt::Display for StoreLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn block_name(block: usize) -> &'static str {
    if block == 0 { "a" } else { "b" }
}

/// Adds the CRC32 of everything before the last four bytes.
fn seal_block(block: &mut [u8]) {
    let body = block.len().saturating_sub(4);
    let crc = crc32fast::hash(&block[..body]);
    block[body..].copy_from_slice(&crc.to_be_bytes());
}

/// Checks length, CRC, version and reserved bytes (at `reserved`).
fn open_block(block: &[u8], len: usize, reserved: &[std::ops::Range<usize>]) -> Option<()> {
    if block.len() != len {
        return None;
    }
    let (body, crc) = block.split_last_chunk::<4>()?;
    if u32::from_be_bytes(*crc) != crc32fast::hash(body) || body.first() != Some(&BLOCK_VERSION) {
        return None;
    }
    let clean = reserved.iter().all(|r| {
        body.get(r.clone())
            .is_some_and(|b| b.iter().all(|x| *x == 0))
    });
    clean.then_some(())
}

/// A counter block holding `next`.
pub(crate) fn encode_counter(next: u32) -> [u8; COUNTER_LEN] {
    let mut out = [0u8; COUNTER_LEN];
    out[0] = BLOCK_VERSION;
    out[4..8].copy_from_slice(&next.to_be_bytes());
    seal_block(&mut out);
    out
}

/// The next epoch id a counter block holds; `None` if it is damaged.
pub(crate) fn decode_counter(block: &[u8]) -> Option<u32> {
    open_block(block, COUNTER_LEN, &[1..4, 8..12])?;
    let next = u32::from_be_bytes(block.get(4..8)?.try_into().ok()?);
    (next >= 1).then_some(next)
}

/// An anchor block; `None` is the empty one.
pub(crate) fn encode_anchor(anchor: Option<&Anchor>) -> [u8; ANCHOR_LEN] {
    let mut out = [0u8; ANCHOR_LEN];
    out[0] = BLOCK_VERSION;
    if let Some(a) = anchor {
        out[8..16].copy_from_slice(&a.generation.to_be_bytes());
        out[16..24].copy_from_slice(&a.seq.to_be_bytes());
        out[24..56].copy_from_slice(&a.head);
    }
    seal_block(&mut out);
    out
}

/// An anchor block read back: `None` if damaged, `Some(None)` if empty.
pub(crate) fn decode_anchor(block: &[u8]) -> Option<Option<Anchor>> {
    open_block(block, ANCHOR_LEN, &[1..8, 56..60])?;
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_be_bytes(block.get(at..at + 8)?.try_into().ok()?))
    };
    let (generation, seq) = (u64_at(8)?, u64_at(16)?);
    if seq == 0 {
        return (generation == 0).then_some(None);
    }
    let head: [u8; 32] = block.get(24..56)?.try_into().ok()?;
    Some(Some(Anchor {
        generation,
        seq,
        head,
    }))
}

/// Of two blocks, read back as `Some(value)` or `None` when damaged, the
/// newest value and the block to write next (the other one, or a damaged
/// one); `None` if both are damaged.
pub(crate) fn newest<T: Copy, K: Ord>(
    blocks: [Option<T>; 2],
    order: impl Fn(&T) -> K,
) -> Option<(T, usize)> {
    match blocks {
        [None, None] => None,
        [Some(a), None] => Some((a, 1)),
        [None, Some(b)] => Some((b, 0)),
        [Some(a), Some(b)] => {
            if order(&b) > order(&a) {
                Some((b, 0))
            } else {
                Some((a, 1))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anchor(generation: u64, seq: u64) -> Anchor {
        Anchor {
            generation,
            seq,
            head: [seq.to_be_bytes()[7]; 32],
        }
    }

    #[test]
    fn blocks_round_trip_and_every_flip_is_refused() {
        assert_eq!(decode_counter(&encode_counter(7)), Some(7));
        assert_eq!(decode_anchor(&encode_anchor(None)), Some(None));
        let a = anchor(2, 9);
        assert_eq!(decode_anchor(&encode_anchor(Some(&a))), Some(Some(a)));
        let counter = encode_counter(u32::MAX);
        for i in 0..COUNTER_LEN * 8 {
            let mut bad = counter;
            bad[i / 8] ^= 1 << (i % 8);
            assert_eq!(decode_counter(&bad), None, "counter bit {i}");
        }
        let block = encode_anchor(Some(&a));
        for i in 0..ANCHOR_LEN * 8 {
            let mut bad = block;
            bad[i / 8] ^= 1 << (i % 8);
            assert_eq!(decode_anchor(&bad), None, "anchor bit {i}");
        }
        assert_eq!(decode_counter(&counter[..8]), None, "truncated");
        assert_eq!(decode_counter(&encode_counter(0)), None, "ids start at 1");
    }

    #[test]
    fn reserved_bytes_must_be_zero_even_with_a_good_crc() {
        for at in [1, 3, 8, 11] {
            let mut bad = encode_counter(3);
            bad[at] = 1;
            seal_block(&mut bad);
            assert_eq!(decode_counter(&bad), None, "counter byte {at}");
        }
        for at in [1, 7, 56, 59] {
            let mut bad = encode_anchor(Some(&anchor(0, 1)));
            bad[at] = 1;
            seal_block(&mut bad);
            assert_eq!(decode_anchor(&bad), None, "anchor byte {at}");
        }
    }

    #[test]
    fn the_newest_block_wins_and_the_other_is_written_next() {
        assert_eq!(newest([Some(3), Some(4)], |v| *v), Some((4, 0)));
        assert_eq!(newest([Some(5), Some(4)], |v| *v), Some((5, 1)));
        assert_eq!(newest([None, Some(4)], |v| *v), Some((4, 0)));
        assert_eq!(newest([Some(4), None], |v| *v), Some((4, 1)));
        assert_eq!(newest::<u32, u32>([None, None], |v| *v), None);
    }

    #[test]
    fn labels_name_the_store_and_parse_back() {
        let store = StoreLabel::new("orders.eu_1").expect("valid");
        assert_eq!(store.epoch_key(12), "shredkv/orders.eu_1/epoch/12");
        assert_eq!(
            store.parse_epoch_key(b"shredkv/orders.eu_1/epoch/12"),
            Some(12)
        );
        for foreign in [
            &b"shredkv/orders/epoch/12"[..],
            b"shredkv/orders.eu_1/epoch/012",
            b"shredkv/orders.eu_1/epoch/0",
            b"shredkv/orders.eu_1/epoch/1x",
            b"shredkv/orders.eu_1/epoch/",
            b"shredkv/orders.eu_1/epoch/99999999999",
        ] {
            assert_eq!(store.parse_epoch_key(foreign), None, "{foreign:?}");
        }
        assert_eq!(store.counter(0), "shredkv/orders.eu_1/counter/a");
        assert_eq!(store.anchor(1), "shredkv/orders.eu_1/anchor/b");
        for bad in ["", "a/b", "with space", &"x".repeat(65)] {
            assert!(StoreLabel::new(bad).is_err(), "{bad:?}");
        }
    }
}
