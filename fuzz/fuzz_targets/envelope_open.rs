//! Parses arbitrary bytes as a value envelope and opens it with a fixed key.
//!
//! The key and associated data are those of the golden fixtures
//! (`tests/fixtures/README.md`), so the seed envelopes open and the fuzzer
//! explores the success path too. Each input is tried as it is and with its
//! trailing CRC recomputed (as a tamperer would), so mutations reach the
//! fields behind the checksum. Must never panic; an envelope that opens must
//! seal again to one that opens to the same plaintext.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use shredkv_crypto::{DataKey, Envelope, ValueCipher, seal};

/// The golden fixtures' envelope key: bytes 00 01 … 1f.
static CIPHER: LazyLock<ValueCipher> = LazyLock::new(|| {
    let mut key = [0u8; 32];
    for (byte, value) in key.iter_mut().zip(0u8..) {
        *byte = value;
    }
    ValueCipher::new(&DataKey::from_bytes(key))
});
const AAD: &[u8] = b"golden/v1 store-1 subject-a class-3 record-42";

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
    let Ok(envelope) = Envelope::parse(data) else {
        return;
    };
    let Ok(plaintext) = envelope.open(&CIPHER, AAD) else {
        return;
    };
    assert_eq!(plaintext.len(), envelope.plaintext_len());
    let resealed = seal(
        &CIPHER,
        envelope.key_ref(),
        envelope.expiry(),
        AAD,
        &plaintext,
    )
    .expect("a plaintext that was sealed once fits again");
    let again = Envelope::parse(&resealed).expect("a fresh seal parses");
    assert_eq!(again.key_ref(), envelope.key_ref());
    assert_eq!(again.expiry(), envelope.expiry());
    assert_eq!(
        again.open(&CIPHER, AAD).as_deref(),
        Ok(plaintext.as_slice())
    );
}
