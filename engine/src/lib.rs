//! shredkv: an embedded key-value store with per-subject cryptographic erasure.
#![deny(unsafe_code)]
#![allow(dead_code)] // while the engine is assembled

mod storage;

pub use storage::Backend;
