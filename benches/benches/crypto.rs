//! Sealing and opening value envelopes, against raw AES-256-GCM in the same
//! group, so the envelope's overhead (header, random nonce, CRC32, checks)
//! reads as a ratio; and the keyed tags every access computes (subject tag,
//! blinded record key), from `TagKey`'s precomputed HMAC state against HMAC
//! keyed afresh from the raw key.
//!
//! ```text
//! cargo bench -p shredkv-benches --bench crypto
//! ```
//!
//! Prints whether this CPU has the AES-NI and PCLMULQDQ instructions, which
//! the `aes` and `ghash` crates select at run time; without them AES-GCM
//! runs in constant-time software and is several times slower.

use std::hint::black_box;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use shredkv_crypto::{
    DataKey, Envelope, KeyRef, Label, TagKey, ValueCipher, hmac_sha256, seal_into,
};

/// Value sizes measured: a small record and a page-sized one.
const SIZES: [(usize, &str); 2] = [(100, "100B"), (4096, "4KiB")];
/// Associated data of the length the engine binds (store, subject tag,
/// class, blinded record key, key version).
const AAD: [u8; 64] = [0x5a; 64];
const KEY: [u8; 32] = [7; 32];
const KEY_REF: KeyRef = KeyRef {
    bucket: 1,
    version: 1,
};

/// Envelope seal and open, and raw `aes-gcm` encrypt and decrypt of the same
/// plaintext with the same associated data, into reused buffers.
fn envelope(c: &mut Criterion) {
    let cipher = ValueCipher::new(&DataKey::from_bytes(KEY));
    let raw = Aes256Gcm::new(&KEY.into());
    // A fixed nonce is only acceptable because nothing here is kept.
    let nonce = Nonce::from([9u8; 12]);
    let mut group = c.benchmark_group("envelope");
    for (size, label) in SIZES {
        let plaintext = vec![0xa5u8; size];
        group.throughput(Throughput::Bytes(size as u64));

        // Inputs of the open and decrypt benches are made here, not by the
        // seal and encrypt benches, so a filtered run still has them.
        let mut sealed = Vec::new();
        seal_into(&cipher, KEY_REF, None, &AAD, &plaintext, &mut sealed).expect("seal");
        let mut ciphertext = plaintext.clone();
        let tag = raw
            .encrypt_inout_detached(&nonce, &AAD, ciphertext.as_mut_slice().into())
            .expect("encrypt");
        let check = Envelope::parse(&sealed).expect("parse");
        assert_eq!(check.open(&cipher, &AAD).expect("open"), plaintext);

        let mut out = Vec::new();
        group.bench_function(BenchmarkId::new("seal", label), |b| {
            b.iter(|| {
                seal_into(
                    &cipher,
                    KEY_REF,
                    None,
                    black_box(&AAD),
                    black_box(&plaintext),
                    &mut out,
                )
                .expect("seal")
            })
        });

        let mut opened = Vec::new();
        group.bench_function(BenchmarkId::new("open", label), |b| {
            b.iter(|| {
                Envelope::parse(black_box(&sealed))
                    .expect("parse")
                    .open_into(&cipher, black_box(&AAD), &mut opened)
                    .expect("open")
            })
        });

        let mut buffer = Vec::with_capacity(size);
        group.bench_function(BenchmarkId::new("raw_aes_gcm_encrypt", label), |b| {
            b.iter(|| {
                buffer.clear();
                buffer.extend_from_slice(black_box(&plaintext));
                raw.encrypt_inout_detached(&nonce, black_box(&AAD), buffer.as_mut_slice().into())
                    .expect("encrypt")
            })
        });

        group.bench_function(BenchmarkId::new("raw_aes_gcm_decrypt", label), |b| {
            b.iter(|| {
                buffer.clear();
                buffer.extend_from_slice(black_box(&ciphertext));
                raw.decrypt_inout_detached(
                    &nonce,
                    black_box(&AAD),
                    buffer.as_mut_slice().into(),
                    &tag,
                )
                .expect("decrypt")
            })
        });
    }
    group.finish();
}

/// One keyed tag of a 16-byte record key: `TagKey::tag16` (HMAC's keyed
/// state cloned per call) against `hmac_sha256` from the 32-byte key (two
/// more SHA-256 blocks per call), both truncated to 16 bytes.
fn tags(c: &mut Criterion) {
    let mut group = c.benchmark_group("tag");
    group.throughput(Throughput::Elements(1));
    let record_key = *b"msg-000000001234";
    let tag_key = TagKey::derive(&KEY, Label::RecordKeyBlinding);
    let mut sub_key = [0u8; 32];
    shredkv_crypto::hkdf_sha256(None, &KEY, Label::RecordKeyBlinding.info(), &mut sub_key)
        .expect("32 bytes is within HKDF's limit");
    assert_eq!(
        tag_key.tag16(&record_key)[..],
        hmac_sha256(&sub_key, &[&record_key])[..16],
        "both compute the same tag"
    );
    group.bench_function("keyed_state", |b| {
        b.iter(|| tag_key.tag16(black_box(&record_key)))
    });
    group.bench_function("from_key", |b| {
        b.iter(|| {
            let full = hmac_sha256(black_box(&sub_key), &[black_box(&record_key)]);
            let mut out = [0u8; 16];
            out.copy_from_slice(&full[..16]);
            out
        })
    });
    group.finish();
}

/// Says whether the hardware AES path is available, so figures from
/// different machines are read correctly.
fn report_hardware() {
    #[cfg(target_arch = "x86_64")]
    {
        let aes = std::arch::is_x86_feature_detected!("aes");
        let pclmulqdq = std::arch::is_x86_feature_detected!("pclmulqdq");
        eprintln!(
            "hardware AES: aes={aes} pclmulqdq={pclmulqdq} ({})",
            if aes && pclmulqdq {
                "AES-NI and carry-less multiply in use"
            } else {
                "software fallback"
            }
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    eprintln!("hardware AES: not detected on this architecture by this bench");
}

criterion_group!(crypto, envelope, tags);

fn main() {
    report_hardware();
    crypto();
    Criterion::default().configure_from_args().final_summary();
}
