//! Purge work past its time: what `stats` and `verify` report as overdue,
//! so that a store whose maintenance stopped (a dead thread, a failing key
//! provider, a poisoned item, an operator's missing cron job) is noticed
//! before the purge window is broken, not after.

use std::ops::{Bound, ControlFlow};

use jiff::Timestamp;

use crate::db::{DbInner, meta};
use crate::error::Result;
use crate::retention::deadlines::{self, Due};
use crate::storage::{Order, Tree};

/// Purge work whose time has passed by more than the maintenance slack the
/// deletion timeline allows (half an epoch rotation period). Any of it means
/// the purge window (G2) or a retention deadline (G3) is at risk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct OverduePurge {
    /// Items of the deadline index (key destructions, scope erasures,
    /// re-keys, dead-record removals) past their time.
    pub items: u64,
    /// The earliest deadline among them.
    pub oldest_item: Option<Timestamp>,
    /// Re-keys (unpaid purge debts of deleted or overwritten records) among
    /// them, and the earliest one's deadline.
    pub rekeys: u64,
    /// The earliest overdue re-key's deadline.
    pub oldest_rekey: Option<Timestamp>,
    /// Epoch keys the key provider still holds past their destruction time:
    /// (epoch, when it was due); in serde formats, objects `{epoch, due}`.
    #[cfg_attr(feature = "serde", serde(with = "epochs_due"))]
    pub epochs: Vec<(u32, Timestamp)>,
    /// Items compaction set aside after they failed on their own data (a
    /// damaged record, a vault entry failing authentication): retried with
    /// backoff, but each needs an operator's look (`verify`, the audit log).
    pub set_aside: u64,
    /// The earliest deadline among the set-aside items.
    pub oldest_set_aside: Option<Timestamp>,
}

/// [`OverduePurge::epochs`] in serde formats: named fields rather than pairs.
#[cfg(feature = "serde")]
mod epochs_due {
    use jiff::Timestamp;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct EpochDue {
        epoch: u32,
        due: Timestamp,
    }

    pub(super) fn serialize<S: serde::Serializer>(
        epochs: &[(u32, Timestamp)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(epochs.iter().map(|&(epoch, due)| EpochDue { epoch, due }))
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(u32, Timestamp)>, D::Error> {
        Ok(Vec::<EpochDue>::deserialize(deserializer)?
            .into_iter()
            .map(|e| (e.epoch, e.due))
            .collect())
    }
}

impl OverduePurge {
    /// Whether anything is overdue.
    pub fn is_overdue(&self) -> bool {
        self.items > 0 || !self.epochs.is_empty() || self.set_aside > 0
    }
}

impl std::fmt::Display for OverduePurge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.is_overdue() {
            return f.write_str("no purge work overdue");
        }
        let mut parts = Vec::new();
        if let Some(oldest) = self.oldest_item {
            parts.push(format!(
                "{} due item(s) overdue since {oldest} ({} re-key(s))",
                self.items, self.rekeys
            ));
        }
        for (epoch, due) in &self.epochs {
            parts.push(format!("epoch {epoch} due for destruction since {due}"));
        }
        if self.set_aside > 0 {
            parts.push(format!(
                "{} item(s) set aside after failing on damaged data (see `verify` and the audit log)",
                self.set_aside
            ));
        }
        write!(
            f,
            "{}; run compaction (`shredkv compact`) and check the key provider",
            parts.join("; ")
        )
    }
}

impl DbInner {
    /// What purge work is overdue at the store clock's `now`.
    pub(crate) fn overdue_purge(&self) -> Result<OverduePurge> {
        let now = self.clock.now().as_second();
        let late = now.saturating_sub(self.timeline.grace());
        let mut overdue = OverduePurge::default();
        let end = deadlines::upper_bound(late.saturating_sub(1));
        self.storage.scan(
            Tree::Deadlines,
            Bound::Unbounded,
            Bound::Excluded(&end),
            Order::Ascending,
            &mut |k, _| {
                if let Some((at, due)) = deadlines::decode_key(k) {
                    let at = Timestamp::from_second(at).unwrap_or(Timestamp::MIN);
                    overdue.items += 1;
                    overdue.oldest_item.get_or_insert(at);
                    if matches!(due, Due::Rekey(_)) {
                        overdue.rekeys += 1;
                        overdue.oldest_rekey.get_or_insert(at);
                    }
                }
                ControlFlow::Continue(())
            },
        )?;
        let current = self.vault.current_epoch();
        for epoch in self.vault.provider().live_epochs()? {
            if epoch >= current {
                continue;
            }
            if let Some(started) = self.epoch_time(meta::EPOCH_STARTED, epoch)? {
                let due = started.saturating_add(self.timeline.epoch_lifetime);
                if due < late {
                    overdue.epochs.push((
                        epoch.0,
                        Timestamp::from_second(due).unwrap_or(Timestamp::MIN),
                    ));
                }
            }
        }
        let poisoned = self.poisoned_summary()?;
        overdue.set_aside = poisoned.count;
        overdue.oldest_set_aside = poisoned.oldest_deadline;
        Ok(overdue)
    }
}
