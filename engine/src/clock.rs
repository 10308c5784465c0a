//! Time, injected: "7 years after closure" is tested in milliseconds.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use jiff::{SignedDuration, Timestamp};

/// Where the engine reads the current time from.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told to; clones share the same time.
///
/// ```
/// use shredkv::{Clock, ManualClock};
/// use shredkv::jiff::{SignedDuration, Timestamp};
///
/// let clock = ManualClock::new(Timestamp::from_second(1_700_000_000)?);
/// clock.advance(SignedDuration::from_hours(24));
/// assert_eq!(clock.now().as_second(), 1_700_086_400);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    nanos: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        let nanos = i64::try_from(start.as_nanosecond()).unwrap_or(i64::MAX);
        Self {
            nanos: Arc::new(AtomicI64::new(nanos)),
        }
    }

    /// Moves the clock to `to` (also backwards, for tests of clock skew).
    pub fn set(&self, to: Timestamp) {
        let nanos = i64::try_from(to.as_nanosecond()).unwrap_or(i64::MAX);
        self.nanos.store(nanos, Ordering::SeqCst);
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: SignedDuration) {
        let delta = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
        self.nanos.fetch_add(delta, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_nanosecond(i128::from(self.nanos.load(Ordering::SeqCst)))
            .unwrap_or(Timestamp::MAX)
    }
}

/// The meta key of the store's time floor: i64 BE, whole seconds.
pub(crate) const STORE_TIME_KEY: &[u8] = b"store_time";

/// The store's time: the configured clock, never earlier than a time the
/// store already handed out (to the second, the resolution of every time
/// the store keeps).
///
/// Erasures, key creations, expiries and deadlines are compared with one
/// another across time; a wall clock set back would make an erasure look
/// older than the key it destroyed, or an expired record live again. The
/// floor is kept in memory, raised by every reading, and written to the
/// meta tree ([`STORE_TIME_KEY`]) with each key creation, by the flush
/// thread, and on close; an open starts from it and from the audit
/// chain's last entry. A clock set back therefore stands still, for the
/// store, until it passes the floor again.
pub(crate) struct StoreClock {
    source: Arc<dyn Clock>,
    /// Whole seconds: no reading is earlier.
    floor: AtomicI64,
    /// The floor as last written to the store.
    persisted: AtomicI64,
}

impl fmt::Debug for StoreClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreClock")
            .field("source", &self.source)
            .field("floor", &self.floor.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl StoreClock {
    /// A store clock reading `source`, never earlier than `floor` (whole
    /// seconds, as last persisted).
    pub(crate) fn new(source: Arc<dyn Clock>, floor: i64) -> Self {
        Self {
            source,
            floor: AtomicI64::new(floor),
            persisted: AtomicI64::new(floor),
        }
    }

    /// This clock, never earlier than `seconds` either (a restore takes
    /// over the time of the store whose erasures it replays). Not written
    /// to the store until the next stamp.
    pub(crate) fn at_least(self, seconds: Option<i64>) -> Self {
        if let Some(seconds) = seconds {
            self.floor.fetch_max(seconds, Ordering::AcqRel);
        }
        self
    }

    /// The current time of the store: the clock's, or the floor while the
    /// clock stands before it.
    pub(crate) fn now(&self) -> Timestamp {
        let wall = self.source.now();
        let seconds = wall.as_second();
        let floor = self.floor.load(Ordering::Acquire);
        if seconds >= floor {
            if seconds > floor {
                self.floor.fetch_max(seconds, Ordering::AcqRel);
            }
            wall
        } else {
            // The floor came from a reading, so it is in range.
            Timestamp::from_second(floor).unwrap_or(wall)
        }
    }

    /// The floor as stored: [`STORE_TIME_KEY`]'s value, if it decodes.
    pub(crate) fn decode(stored: &[u8]) -> Option<i64> {
        <[u8; 8]>::try_from(stored).ok().map(i64::from_be_bytes)
    }

    /// What the configured clock reads, floor or not.
    pub(crate) fn configured_now(&self) -> Timestamp {
        self.source.now()
    }

    /// The floor, whole seconds.
    pub(crate) fn floor(&self) -> i64 {
        self.floor.load(Ordering::Acquire)
    }

    /// Adds the floor to `batch` if it is later than the one last written,
    /// and returns it: pass it to [`StoreClock::landed`] once `batch` has
    /// landed. Call it after reading the times the batch stores, so that
    /// the floor written is no earlier than any of them.
    pub(crate) fn stamp(&self, batch: &mut crate::storage::WriteBatch) -> Option<i64> {
        let floor = self.floor();
        (floor > self.persisted.load(Ordering::Acquire)).then(|| {
            batch.put(
                crate::storage::Tree::Meta,
                STORE_TIME_KEY,
                floor.to_be_bytes().to_vec(),
            );
            floor
        })
    }

    /// Records that a floor [`StoreClock::stamp`] added has landed.
    pub(crate) fn landed(&self, stamped: Option<i64>) {
        if let Some(floor) = stamped {
            self.persisted.fetch_max(floor, Ordering::AcqRel);
        }
    }

    /// Writes the floor to `storage` if it moved since it was last written
    /// (the flush thread and close call it; the write is buffered, made
    /// durable by the flush that follows).
    pub(crate) fn persist(
        &self,
        storage: &dyn crate::storage::Storage,
    ) -> Result<(), crate::storage::StorageError> {
        let mut batch = crate::storage::WriteBatch::new();
        let stamped = self.stamp(&mut batch);
        if stamped.is_some() {
            storage.apply(&batch, crate::storage::Durability::Buffered)?;
            self.landed(stamped);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::WriteBatch;

    const START: i64 = 1_800_000_000;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).expect("a valid time")
    }

    fn store_clock(floor: i64) -> (ManualClock, StoreClock) {
        let wall = ManualClock::new(at(START));
        let clock = StoreClock::new(Arc::new(wall.clone()), floor);
        (wall, clock)
    }

    #[test]
    fn stands_at_the_floor_while_the_clock_is_behind_it() {
        let (wall, clock) = store_clock(START + 100);
        assert_eq!(clock.now(), at(START + 100));
        wall.set(at(START + 150) + SignedDuration::from_millis(250));
        assert_eq!(
            clock.now(),
            at(START + 150) + SignedDuration::from_millis(250)
        );
        wall.set(at(START + 120));
        assert_eq!(
            clock.now(),
            at(START + 150),
            "set back: the last second read"
        );
    }

    #[test]
    fn a_stamp_is_written_once_per_floor_and_only_once_landed() {
        let (wall, clock) = store_clock(START);
        let mut batch = WriteBatch::new();
        assert_eq!(
            clock.stamp(&mut batch),
            None,
            "the floor as loaded is stored"
        );
        wall.set(at(START + 5));
        clock.now();
        let stamped = clock.stamp(&mut batch);
        assert_eq!(stamped, Some(START + 5));
        assert_eq!(
            clock.stamp(&mut batch),
            Some(START + 5),
            "not landed yet: a failed batch must not stop the next stamp"
        );
        clock.landed(stamped);
        assert_eq!(clock.stamp(&mut batch), None, "landed");
        wall.set(at(START + 6));
        clock.now();
        assert_eq!(clock.stamp(&mut batch), Some(START + 6));
    }

    #[test]
    fn the_stored_floor_decodes_only_from_eight_bytes() {
        assert_eq!(StoreClock::decode(&START.to_be_bytes()), Some(START));
        assert_eq!(StoreClock::decode(&[1, 2, 3]), None);
    }
}
