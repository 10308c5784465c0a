//! Retention: which classes of data a store keeps, for how long, and what
//! starts their clocks.
//!
//! [`policy`] parses and validates the policy file (TOML) and computes
//! deadlines from it; [`deadlines`] is the index of what is due when, and
//! compaction enforces it.

pub(crate) mod compaction;
pub(crate) mod deadlines;
mod epochs;
mod events;
mod maintenance;
mod node_debts;
mod overdue;
pub(crate) mod poisoned;
pub(crate) mod policy;
#[cfg(test)]
mod tests;
pub(crate) mod timeline;

pub use compaction::{CompactionOutcome, CompactionReport, Compactor};
pub use epochs::EpochReport;
pub use events::Scheduled;
pub(crate) use maintenance::start_maintenance;
pub use overdue::OverduePurge;

pub use policy::{
    ClassPolicy, ClockStart, DataRole, DeletionRule, KeyMode, ParseRetentionError, Policy,
    PolicyError, Retention, RetentionUnit,
};
