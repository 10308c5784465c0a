//! Checks arbitrary bytes as a key file, the way `FileKeyProvider::open` does
//! before it trusts a file. Each input is tried as it is and with the header's
//! and every whole slot's CRC recomputed, so mutations reach the state and
//! epoch checks behind the checksums. Must never panic, and never count more
//! live epochs than the bytes have slots.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shredkv_crypto::internal::check_key_file_bytes;

/// Header and slot sizes of key file v1 (`docs/design.md`).
const HEADER_LEN: usize = 32;
const SLOT_LEN: usize = 48;

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut fixed = data.to_vec();
    if let Some(header) = fixed.get_mut(..HEADER_LEN) {
        fix_crc(header);
    }
    if let Some(slots) = fixed.get_mut(HEADER_LEN..) {
        slots.chunks_exact_mut(SLOT_LEN).for_each(fix_crc);
    }
    check(&fixed);
});

fn check(data: &[u8]) {
    if let Ok(live) = check_key_file_bytes(data) {
        let slots = data.len().saturating_sub(HEADER_LEN) / SLOT_LEN;
        assert!(live <= slots, "{live} live epochs in {slots} slots");
    }
}

/// Writes the big-endian CRC32 of all but the last 4 bytes into those 4.
fn fix_crc(bytes: &mut [u8]) {
    let body_len = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..body_len]);
    bytes[body_len..].copy_from_slice(&crc.to_be_bytes());
}
