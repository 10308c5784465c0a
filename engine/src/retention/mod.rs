//! Retention: the policy, the deadline index, compaction.

pub(crate) mod deadlines;
pub(crate) mod policy;

pub use policy::{
    ClassPolicy, ClockStart, DataRole, DeletionRule, KeyMode, Policy, PolicyError, Retention,
};
