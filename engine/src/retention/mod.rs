//! Retention: which classes of data a store keeps, for how long, and what
//! starts their clocks.
//!
//! [`policy`] parses and validates the policy file (TOML) and computes
//! deadlines from it; the engine's deadline index and compaction enforce them.

pub(crate) mod policy;

pub use policy::{
    ClassPolicy, ClockStart, DataRole, DeletionRule, KeyMode, ParseRetentionError, Policy,
    PolicyError, Retention, RetentionUnit,
};
