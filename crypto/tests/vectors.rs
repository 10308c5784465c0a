//! The crypto primitives against Project Wycheproof's published vectors.
//!
//! - AES-256-GCM (96-bit nonce, 128-bit tag, the only parameters shredkv
//!   uses) through `aes-gcm` directly, the same crate and version the
//!   envelope and key wrapping are built on: the envelope adds a header to the
//!   associated data and draws its own nonce, so vectors cannot be fed through
//!   it, but the primitive under it is exactly this one.
//! - HKDF-SHA256 through shredkv's own [`hkdf_sha256`].
//! - HMAC-SHA256 with full-length tags through shredkv's own [`hmac_sha256`].
//!
//! Each test counts the cases it ran and asserts a minimum, so an empty or
//! filtered-away vector set cannot pass.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use shredkv_crypto::{hkdf_sha256, hmac_sha256};
use wycheproof::TestResult;

/// Cases in Wycheproof's `aes_gcm` groups with a 256-bit key, 96-bit nonce
/// and 128-bit tag (39 valid, 27 invalid in wycheproof 0.7.0).
const MIN_AES_GCM_CASES: usize = 66;
/// Valid `hkdf_sha256` cases whose output fits HKDF-SHA256's 8160-byte limit.
const MIN_HKDF_CASES: usize = 83;
/// `hmac_sha256` cases with a 256-bit (untruncated) tag.
const MIN_HMAC_CASES: usize = 87;

#[test]
fn aes_256_gcm_matches_wycheproof() {
    let set = wycheproof::aead::TestSet::load(wycheproof::aead::TestName::AesGcm)
        .expect("aes_gcm vectors load");
    let (mut valid, mut invalid) = (0usize, 0usize);
    for group in set
        .test_groups
        .iter()
        .filter(|g| g.key_size == 256 && g.nonce_size == 96 && g.tag_size == 128)
    {
        for test in &group.tests {
            let id = test.tc_id;
            let cipher = Aes256Gcm::new_from_slice(&test.key).expect("256-bit key");
            let nonce_bytes: [u8; 12] = test.nonce.as_slice().try_into().expect("96-bit nonce");
            let nonce = Nonce::from(nonce_bytes);
            let mut sealed = test.ct.to_vec();
            sealed.extend_from_slice(&test.tag);
            let opened = cipher.decrypt(
                &nonce,
                Payload {
                    msg: &sealed,
                    aad: &test.aad,
                },
            );
            match test.result {
                TestResult::Valid | TestResult::Acceptable => {
                    let encrypted = cipher
                        .encrypt(
                            &nonce,
                            Payload {
                                msg: &test.pt,
                                aad: &test.aad,
                            },
                        )
                        .expect("encrypt");
                    assert_eq!(encrypted, sealed, "tcId {id}: ciphertext ‖ tag differ");
                    assert_eq!(
                        opened.as_deref().ok(),
                        Some(test.pt.as_slice()),
                        "tcId {id}: valid case did not open to its plaintext"
                    );
                    valid += 1;
                }
                TestResult::Invalid => {
                    assert!(opened.is_err(), "tcId {id}: invalid case opened");
                    invalid += 1;
                }
            }
        }
    }
    assert!(valid > 0 && invalid > 0, "valid {valid}, invalid {invalid}");
    assert!(
        valid + invalid >= MIN_AES_GCM_CASES,
        "only {} AES-256-GCM cases ran",
        valid + invalid
    );
}

#[test]
fn hkdf_sha256_matches_wycheproof() {
    let set = wycheproof::hkdf::TestSet::load(wycheproof::hkdf::TestName::HkdfSha256)
        .expect("hkdf_sha256 vectors load");
    let mut ran = 0usize;
    for group in &set.test_groups {
        for test in &group.tests {
            // An empty salt goes through the `None` path that `TagKey::derive`
            // uses (RFC 5869: absent salt = zeros, the same HMAC key).
            let salt = (!test.salt.is_empty()).then_some(test.salt.as_slice());
            let mut okm = vec![0u8; test.size];
            let result = hkdf_sha256(salt, &test.ikm, &test.info, &mut okm);
            if test.result == TestResult::Invalid {
                // Invalid cases ask for more than 255 × 32 bytes: an error,
                // never a short key.
                assert!(result.is_err(), "tcId {} must be refused", test.tc_id);
                assert!(
                    okm.iter().all(|b| *b == 0),
                    "tcId {} wrote output",
                    test.tc_id
                );
            } else {
                result.expect("a valid case expands");
                assert_eq!(okm, test.okm.as_slice(), "tcId {}", test.tc_id);
            }
            ran += 1;
        }
    }
    assert!(ran >= MIN_HKDF_CASES, "only {ran} HKDF-SHA256 cases ran");
}

#[test]
fn hmac_sha256_matches_wycheproof() {
    let set = wycheproof::mac::TestSet::load(wycheproof::mac::TestName::HmacSha256)
        .expect("hmac_sha256 vectors load");
    let (mut valid, mut invalid) = (0usize, 0usize);
    for group in set.test_groups.iter().filter(|g| g.tag_size == 256) {
        for test in &group.tests {
            let mac = hmac_sha256(&test.key, &[&test.msg]);
            match test.result {
                TestResult::Valid | TestResult::Acceptable => {
                    assert_eq!(mac.as_slice(), test.tag.as_slice(), "tcId {}", test.tc_id);
                    valid += 1;
                }
                TestResult::Invalid => {
                    assert_ne!(mac.as_slice(), test.tag.as_slice(), "tcId {}", test.tc_id);
                    invalid += 1;
                }
            }
        }
    }
    assert!(valid > 0 && invalid > 0, "valid {valid}, invalid {invalid}");
    assert!(
        valid + invalid >= MIN_HMAC_CASES,
        "only {} HMAC-SHA256 cases ran",
        valid + invalid
    );
}

/// HMAC over parts must equal HMAC over their concatenation: the engine
/// feeds tags in pieces, the vectors in one slice.
#[test]
fn hmac_sha256_over_parts_matches_wycheproof() {
    let set = wycheproof::mac::TestSet::load(wycheproof::mac::TestName::HmacSha256)
        .expect("hmac_sha256 vectors load");
    let mut ran = 0usize;
    for group in set.test_groups.iter().filter(|g| g.tag_size == 256) {
        for test in group.tests.iter().filter(|t| t.result == TestResult::Valid) {
            let (head, tail) = test.msg.split_at(test.msg.len() / 2);
            let mac = hmac_sha256(&test.key, &[head, &[], tail]);
            assert_eq!(mac.as_slice(), test.tag.as_slice(), "tcId {}", test.tc_id);
            ran += 1;
        }
    }
    assert!(ran >= 30, "only {ran} split HMAC cases ran");
}
