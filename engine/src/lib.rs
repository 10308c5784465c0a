//! shredkv: an embedded key-value store with per-subject cryptographic erasure.
