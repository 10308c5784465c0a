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
//! end of its bucket, so by `expiry + B + L`. A class's bucket width B is the
//! longest of a day, 12, 8, 6, 4, 3, 2 or 1 hours with `B ≤ W − L − P`
//! ([`Timeline::bucket_width`]): a day for windows of 3 days or more, 8
//! hours for a 1-day window. A backup stays restorable for at least `L − P`
//! after it was taken. The rules need `Wmin ≥ 4P`; the default P is one day,
//! or `Wmin / 4` for policies with shorter windows.

use jiff::SignedDuration;

use crate::error::{Error, Result};

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;
/// Widths an expiry bucket may have, longest first. Each divides a day, so
/// buckets never straddle a UTC day.
const BUCKET_WIDTHS: [i64; 8] = [
    DAY,
    12 * HOUR,
    8 * HOUR,
    6 * HOUR,
    4 * HOUR,
    3 * HOUR,
    2 * HOUR,
    HOUR,
];

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
    /// longer than a quarter of the shortest purge window, or when even an
    /// hour-long expiry bucket cannot die within the window.
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
        if HOUR + timeline.epoch_lifetime + rotation > min_window {
            return Err(Error::InvalidArgument {
                what: "purge window",
                detail: format!(
                    "{min_window} s is too short for records that expire: their bucket's key \
                     dies up to an hour after the expiry, and its epoch {} s later; rotate \
                     less often (Config::epoch_rotation) or lengthen the policy's purge windows",
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

    /// B: how long the expiry buckets of a class with purge window `window`
    /// are, in seconds: the longest of [`BUCKET_WIDTHS`] whose key, destroyed
    /// at the bucket's end, has its last epoch die within the window
    /// (`B + L + P ≤ W`).
    pub(crate) fn bucket_width(&self, window: SignedDuration) -> i64 {
        let room = self.rekey_delay(window);
        BUCKET_WIDTHS
            .into_iter()
            .find(|width| *width <= room)
            .unwrap_or(HOUR)
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
        // Too short for even an hour's expiry bucket to die in time.
        let err = Timeline::new(SignedDuration::from_hours(2), None).expect_err("too short");
        assert!(
            err.to_string()
                .contains("too short for records that expire"),
            "{err}"
        );
    }

    /// The widths worked by hand from `B + L + P ≤ W`, B one of a day, 12,
    /// 8, 6, 4, 3, 2, 1 hours.
    #[test]
    fn expiry_buckets_shrink_with_the_window() {
        let hours = SignedDuration::from_hours;
        // W = 1 day: P = 6 h, L = 9 h, so B ≤ 9 h: 8 h (dies by 23 h).
        let one_day = Timeline::new(days(1), None).expect("a 1-day window is allowed");
        assert_eq!(
            (one_day.rotation, one_day.epoch_lifetime),
            (6 * HOUR, 9 * HOUR)
        );
        assert_eq!(one_day.bucket_width(days(1)), 8 * HOUR);
        // The store's other classes, with longer windows, keep day buckets
        // once their window leaves a day of room: 24 h + 9 h + 6 h = 39 h.
        assert_eq!(one_day.bucket_width(hours(38)), 12 * HOUR);
        assert_eq!(one_day.bucket_width(hours(39)), DAY);
        assert_eq!(one_day.bucket_width(days(30)), DAY);
        // W = 2 days: P = 12 h, L = 18 h, so B ≤ 18 h: 12 h.
        assert_eq!(
            Timeline::new(days(2), None)
                .expect("valid")
                .bucket_width(days(2)),
            12 * HOUR
        );
        // W = 3 days: P = 18 h, L = 27 h, so B ≤ 27 h: a day.
        assert_eq!(
            Timeline::new(days(3), None)
                .expect("valid")
                .bucket_width(days(3)),
            DAY
        );
        assert_eq!(
            Timeline::new(days(30), None)
                .expect("valid")
                .bucket_width(days(30)),
            DAY
        );
        // A faster rotation leaves more room: P = 1 h, L = 11.5 h: 8 h still.
        let fast = Timeline::new(days(1), Some(hours(1))).expect("valid");
        assert_eq!(fast.bucket_width(days(1)), 8 * HOUR);
        // W = 6 h (no policy allows it, the timeline does): P = 1.5 h,
        // L = 2.25 h, so B ≤ 2.25 h: 2 h.
        assert_eq!(
            Timeline::new(hours(6), None)
                .expect("valid")
                .bucket_width(hours(6)),
            2 * HOUR
        );
    }
}
