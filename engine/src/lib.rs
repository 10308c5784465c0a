//! shredkv: an embedded key-value store with per-subject cryptographic erasure.
#![deny(unsafe_code)]
#![allow(dead_code)] // while the engine is assembled

mod retention;
mod storage;

pub use retention::{
    ClassPolicy, ClockStart, DataRole, DeletionRule, KeyMode, ParseRetentionError, Policy,
    PolicyError, Retention, RetentionUnit,
};
pub use storage::Backend;
