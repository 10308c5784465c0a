//! Decodes arbitrary bytes as a wrapped key and unwraps it with a fixed epoch
//! key under both kinds of context. Each input is tried as it is and with its
//! trailing CRC recomputed, so mutations reach the checks behind the checksum.
//! Must never panic; a decoded key must encode back to the same bytes.
//!
//! The epoch key and context are those of the golden fixtures
//! (`tests/fixtures/README.md`), so the seed wraps unwrap.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use shredkv_crypto::{EpochCipher, EpochId, EpochKey, KeyId, SubjectTag, WrapContext, WrappedKey};

/// The golden fixtures' epoch: id 7, key bytes 20 21 … 3f.
static EPOCH: LazyLock<EpochCipher> = LazyLock::new(|| {
    let mut key = [0u8; 32];
    for (byte, value) in key.iter_mut().zip(0x20u8..) {
        *byte = value;
    }
    EpochCipher::new(EpochId(7), &EpochKey::from_bytes(key))
});
const DATA_KEY_ID: KeyId = KeyId {
    subject: SubjectTag([0xaa; 16]),
    class: 3,
    bucket: 7,
    version: 2,
};

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(body_len) = data.len().checked_sub(4) {
        let mut fixed = data.to_vec();
        let crc = crc32fast::hash(&fixed[..body_len]);
        fixed[body_len..].copy_from_slice(&crc.to_be_bytes());
        check(&fixed);
    }
});

fn check(data: &[u8]) {
    let Ok(wrapped) = WrappedKey::from_bytes(data) else {
        return;
    };
    assert_eq!(wrapped.as_bytes().as_slice(), data);
    let as_data_key = EPOCH.unwrap(&WrapContext::DataKey(DATA_KEY_ID), &wrapped);
    let as_store_secret = EPOCH.unwrap(&WrapContext::StoreSecret, &wrapped);
    // One wrap authenticates under one context at most.
    assert!(as_data_key.is_err() || as_store_secret.is_err());
}
