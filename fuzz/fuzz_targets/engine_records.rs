//! Every persisted engine record format, decoded from arbitrary bytes by the
//! engine's own decoders (`shredkv::internal::decode_any`): the first byte
//! picks the format (vault entry, subject record, ledger entry, audit entry,
//! seal record, hold, deadline key), the rest is the record. No input may
//! panic, and a record that decodes must encode to bytes that decode to the
//! same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shredkv::internal::{RecordKind, decode_any};

fuzz_target!(|data: &[u8]| {
    let Some((selector, bytes)) = data.split_first() else {
        return;
    };
    let kind = RecordKind::ALL[usize::from(*selector) % RecordKind::ALL.len()];
    if let Ok(decoded) = decode_any(kind, bytes) {
        assert!(
            decoded.round_trips,
            "{kind:?} decoded to a value its encoding does not decode back to: {decoded:?}"
        );
    }
});
