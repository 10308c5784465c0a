//! The purge timeline: when re-keys run and when epoch keys die, so that
//! every copy of erased data is undecryptable within its class's purge
//! window W counted from the erasure *decision* (G2).
//!
//! ```text
//!  t: delete/overwrite     t + R: re-key destroys       retired    t + W
//!  (the decision)          the old key version (d)         │         │
//!  ──┬──────────────────────────┬──────────────┬───────────┼─────────┤
//!    │◄──────── R ─────────────►│              │           │         │
//!    │        epoch E current at d: started s ≤ d, destroyed at s + L │
//!    │                          │◄──────────── L ───────────────────►│
//!    │                          │  (+ at most P of maintenance slack) │
//! ```
//!
//! With P the epoch rotation period and Wmin the shortest purge window:
//!
//! - an epoch key is destroyed once **L = (Wmin − P) / 2** has passed since it
//!   started (and no live entry is wrapped under it);
//! - a record deleted or overwritten at t owes a re-key due at **t + R**,
//!   **R = W − L − P**, which destroys the old key version;
//! - the epoch current when that version died started no later than the
//!   destruction, so it dies by `t + R + L = t + W − P`: one period P is left
//!   for maintenance running late (a pass at least every P / 2 keeps both
//!   steps inside it).
//!
//! Keys destroyed at their decision (a shred, a class deadline) die with
//! their epoch by `t + L ≤ t + W`; an expiry bucket's key is destroyed at the
//! end of its UTC day, so by `expiry + 1 day + L`, which [`Timeline::new`]
//! checks is within W. A backup stays restorable for at least `L − P` after
//! it was taken. The rules need `Wmin ≥ 4P`; the default P is one day, or
//! `Wmin / 4` for policies with shorter windows.

use jiff::SignedDuration;

use crate::error::{Error, Result};

const DAY: i64 = 86_400;

/// The purge timeline of an open store (all in seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeline {
    /// P: how often the epoch key is rotated.
    pub(crate) rotation: i64,
    /// L: how long an epoch key lives from its start.
    pub(crate) epoch_lifetime: i64,
    /// Wmin: the shortest purge window of the policy.
    pub(crate) min_window: i64,
}

impl Timeline {
    /// The timeline for a policy whose shortest purge window is
    /// `min_window`, rotating every `rotation` (the default when `None`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the rotation is not positive or is
    /// longer than a quarter of the shortest purge window, or when an expiry
    /// bucket (one day) cannot die within the window.
    pub(crate) fn new(
        min_window: SignedDuration,
        rotation: Option<SignedDuration>,
    ) -> Result<Self> {
        let min_window = min_window.as_secs();
        let rotation = match rotation {
            Some(p) => p.as_secs(),
            None => DAY.min(min_window / 4),
        };
        if rotation <= 0 || rotation.saturating_mul(4) > min_window {
            return Err(Error::InvalidArgument {
                what: "epoch rotation",
                detail: format!(
                    "every {rotation} s does not fit the shortest purge window of {min_window} s: \
                     rotate at most every quarter of it (Config::epoch_rotation), or lengthen \
                     the policy's purge windows"
                ),
            });
        }
        let timeline = Self {
            rotation,
            epoch_lifetime: (min_window - rotation) / 2,
            min_window,
        };
        if DAY + timeline.epoch_lifetime + rotation > min_window {
            return Err(Error::InvalidArgument {
                what: "purge window",
                detail: format!(
                    "{min_window} s is too short for records that expire: their day's key dies \
                     up to a day after the expiry, and its epoch {} s later; use purge \
                     windows of 3 days or more",
                    timeline.epoch_lifetime + rotation
                ),
            });
        }
        Ok(timeline)
    }

    /// R: how long after a delete or overwrite in a class with purge window
    /// `window` its bucket is re-keyed.
    pub(crate) fn rekey_delay(&self, window: SignedDuration) -> i64 {
        window
            .as_secs()
            .saturating_sub(self.epoch_lifetime)
            .saturating_sub(self.rotation)
            .max(0)
    }

    /// How late maintenance may run before a purge is overdue: the slack the
    /// timeline keeps (one rotation period for two steps).
    pub(crate) fn grace(&self) -> i64 {
        self.rotation / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(n: i64) -> SignedDuration {
        SignedDuration::from_hours(24 * n)
    }

    #[test]
    fn default_policy_splits_thirty_days() {
        let t = Timeline::new(days(30), None).expect("valid");
        assert_eq!(t.rotation, DAY);
        assert_eq!(t.epoch_lifetime, 29 * DAY / 2); // 14.5 days
        assert_eq!(t.rekey_delay(days(30)), 14 * DAY + DAY / 2);
        // The worst case: a re-key at t + R destroys a version wrapped by an
        // epoch that started just then; it dies W − P after the decision.
        assert_eq!(t.rekey_delay(days(30)) + t.epoch_lifetime, 29 * DAY);
        // A longer window re-keys later, the epochs being the same.
        assert_eq!(t.rekey_delay(days(60)), 44 * DAY + DAY / 2);
    }

    #[test]
    fn short_windows_rotate_faster_and_bad_rotations_are_refused() {
        let t = Timeline::new(days(4), None).expect("valid");
        assert_eq!(t.rotation, DAY);
        assert_eq!(t.epoch_lifetime, 3 * DAY / 2);
        assert!(Timeline::new(days(30), Some(days(8))).is_err());
        assert!(Timeline::new(days(30), Some(SignedDuration::ZERO)).is_err());
        assert!(Timeline::new(days(30), Some(days(7))).is_ok());
        // Too short for a day's expiry bucket to die in time.
        assert!(Timeline::new(days(2), None).is_err());
    }
}
