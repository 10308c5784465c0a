//! Pause points for tests that force one interleaving of concurrent
//! operations (e.g. an erasure committing between a read's vault lookup and
//! its cache insert).
//!
//! A test arms a [`PausePoint`] through `FaultControl::pause_at`; the first
//! thread of a fault-injected store to reach that point stops there, calls
//! the test's arrival callback, and waits until the test resumes it (or
//! drops the [`Pause`]). Points: a key provider `unwrap` and a storage
//! `apply` (in the fault layer, before the call), and the scope gate's
//! write lock, before it is requested ([`PausePoint::GateWrite`]) or when a
//! stripe it needs is held by another thread, before blocking on it
//! ([`PausePoint::GateWriteContended`]). The last one lets a test tell "this
//! erasure is blocked by the reader" from "this erasure finished" without
//! waiting on the clock. The vault's creation lock has the same pair
//! ([`PausePoint::CreationLock`], [`PausePoint::CreationLockContended`]), and
//! a day forest's removal a point between its check for a live key and the
//! deletion of its nodes ([`PausePoint::ForestRemoval`]).
//!
//! Armed nothing, a point costs a lock-free check (the gate, the vault) or
//! one mutex (the fault layer, already a test-only wrapper).

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// Where a test can stop a thread (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PausePoint {
    /// A key provider `unwrap`, before it runs (a key is being loaded).
    ProviderUnwrap,
    /// A storage `apply`, before it runs (a batch is about to be written).
    StorageApply,
    /// The scope gate's write lock, before it is requested (erasure,
    /// closure, registration and state changes take it).
    GateWrite,
    /// The scope gate's write lock, when a stripe it needs is held by
    /// another thread: the caller would block now.
    GateWriteContended,
    /// The vault's creation lock, before it is requested (a key or a key
    /// tree node is about to be made, or nodes re-keyed or removed).
    CreationLock,
    /// The vault's creation lock, when another thread holds it: the caller
    /// would block now.
    CreationLockContended,
    /// A day forest's removal, after its check that the day holds no live
    /// key and before its nodes are deleted (the creation lock held).
    ForestRemoval,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Armed,
    Paused,
    Resumed,
}

struct Slot {
    point: PausePoint,
    stage: Mutex<Stage>,
    changed: Condvar,
    on_arrival: Box<dyn Fn() + Send + Sync>,
}

impl Slot {
    fn stage(&self) -> MutexGuard<'_, Stage> {
        self.stage.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The pause points armed in one store.
#[derive(Default)]
pub(crate) struct Pauses {
    armed: Mutex<Vec<Arc<Slot>>>,
}

impl fmt::Debug for Pauses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let armed: Vec<PausePoint> = self.slots().iter().map(|s| s.point).collect();
        f.debug_struct("Pauses").field("armed", &armed).finish()
    }
}

impl Pauses {
    fn slots(&self) -> MutexGuard<'_, Vec<Arc<Slot>>> {
        self.armed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Arms `point` once; `on_arrival` runs on the paused thread when it
    /// stops there.
    pub(crate) fn arm(
        self: &Arc<Self>,
        point: PausePoint,
        on_arrival: Box<dyn Fn() + Send + Sync>,
    ) -> Pause {
        let slot = Arc::new(Slot {
            point,
            stage: Mutex::new(Stage::Armed),
            changed: Condvar::new(),
            on_arrival,
        });
        self.slots().push(Arc::clone(&slot));
        Pause {
            slot,
            pauses: Arc::clone(self),
        }
    }

    /// Whether `point` is armed.
    #[cfg_attr(
        feature = "loom",
        allow(
            dead_code,
            reason = "the gate and the creation lock have no contended point under loom"
        )
    )]
    pub(crate) fn is_armed(&self, point: PausePoint) -> bool {
        self.slots().iter().any(|s| s.point == point)
    }

    /// Called by the engine at `point`: if it is armed, stops this thread
    /// until the test resumes it.
    pub(crate) fn reached(&self, point: PausePoint) {
        let slot = {
            let mut slots = self.slots();
            let Some(i) = slots.iter().position(|s| s.point == point) else {
                return;
            };
            slots.remove(i)
        };
        {
            let mut stage = slot.stage();
            if *stage == Stage::Resumed {
                return;
            }
            *stage = Stage::Paused;
            slot.changed.notify_all();
        }
        (slot.on_arrival)();
        let mut stage = slot.stage();
        while *stage != Stage::Resumed {
            stage = slot
                .changed
                .wait(stage)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// An armed pause point (see the module docs). Dropping it resumes the
/// paused thread, or disarms the point if no thread reached it.
pub struct Pause {
    slot: Arc<Slot>,
    pauses: Arc<Pauses>,
}

impl fmt::Debug for Pause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pause")
            .field("point", &self.slot.point)
            .field("stage", &*self.slot.stage())
            .finish()
    }
}

impl Pause {
    /// Blocks until a thread has stopped at the point (or it was resumed).
    pub fn wait_arrived(&self) {
        let mut stage = self.slot.stage();
        while *stage == Stage::Armed {
            stage = self
                .slot
                .changed
                .wait(stage)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Whether a thread is stopped at the point now.
    pub fn is_paused(&self) -> bool {
        *self.slot.stage() == Stage::Paused
    }

    /// Lets the paused thread go on (or disarms the point if none reached it).
    pub fn resume(&self) {
        self.pauses.slots().retain(|s| !Arc::ptr_eq(s, &self.slot));
        *self.slot.stage() = Stage::Resumed;
        self.slot.changed.notify_all();
    }
}

impl Drop for Pause {
    fn drop(&mut self) {
        self.resume();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_thread_stops_at_an_armed_point_until_resumed() {
        let pauses = Arc::new(Pauses::default());
        let (arrived, arrivals) = mpsc::channel();
        let pause = pauses.arm(
            PausePoint::StorageApply,
            Box::new(move || arrived.send(()).unwrap_or_default()),
        );
        let (done, finished) = mpsc::channel();
        let worker = {
            let pauses = Arc::clone(&pauses);
            std::thread::spawn(move || {
                pauses.reached(PausePoint::ProviderUnwrap);
                pauses.reached(PausePoint::StorageApply);
                done.send(()).unwrap_or_default();
            })
        };
        arrivals
            .recv()
            .expect("the worker stops at the armed point");
        assert!(pause.is_paused());
        assert!(finished.try_recv().is_err(), "paused, not finished");
        pause.resume();
        finished.recv().expect("the worker goes on once resumed");
        worker.join().expect("worker");
        assert!(!pauses.is_armed(PausePoint::StorageApply), "fires once");
    }
}
