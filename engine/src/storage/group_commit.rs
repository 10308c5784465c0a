//! Group commit: concurrent writers share one backend transaction.
//!
//! A backend whose commit has a fixed cost (redb: one write transaction at a
//! time, each with its own commit) would serialise writers one commit each.
//! Here a writer that finds no commit in progress becomes the *leader*: it
//! takes every batch queued so far, appends its own, and commits them in one
//! transaction. Writers that arrive meanwhile queue a copy of their batch and
//! wait; each returns only once the transaction holding its batch has
//! committed (or failed, in which case none of that group's batches were
//! applied). Batches are applied in the order their writers queued them.

use std::collections::HashMap;
use std::mem;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use super::{Backend, StorageError, StorageErrorKind, WriteBatch};

/// Commits a group: every batch, in order, in one transaction, durable on
/// stable storage before returning when the flag is set.
pub(super) type CommitFn<'a> = &'a dyn Fn(&[&WriteBatch], bool) -> Result<(), StorageError>;

/// The queue and leader flag shared by a store's writers.
#[derive(Debug)]
pub(super) struct GroupCommit {
    backend: Backend,
    path: PathBuf,
    state: Mutex<State>,
    /// Signalled when a group has finished (its outcomes are published).
    finished: Condvar,
}

/// Everything behind the lock.
#[derive(Debug, Default)]
struct State {
    /// Whether a leader is committing a group right now.
    leading: bool,
    /// Batches waiting for the next leader, in arrival order.
    queue: Vec<Queued>,
    /// Ticket of the next queued batch.
    next_ticket: u64,
    /// Outcomes of finished groups, by ticket, until their writer picks them up.
    outcomes: HashMap<u64, Outcome>,
}

/// A follower's batch waiting for a leader.
#[derive(Debug)]
struct Queued {
    ticket: u64,
    batch: WriteBatch,
    durable: bool,
}

/// A group's result, shared by all of its writers.
type Outcome = Result<(), Failure>;

/// A failed group commit, in a form every writer of the group can rebuild a
/// [`StorageError`] from (the error itself is not `Clone`).
#[derive(Debug, Clone)]
struct Failure {
    action: &'static str,
    kind: StorageErrorKind,
    source: Arc<dyn std::error::Error + Send + Sync>,
}

impl Failure {
    /// Keeps what every writer of the group needs from the leader's error.
    fn from_error(error: StorageError) -> Self {
        Self {
            action: error.action,
            kind: error.kind,
            source: Arc::from(error.source),
        }
    }
}

impl GroupCommit {
    /// An idle queue for the store at `path`.
    pub(super) fn new(backend: Backend, path: PathBuf) -> Self {
        Self {
            backend,
            path,
            state: Mutex::new(State::default()),
            finished: Condvar::new(),
        }
    }

    /// Commits `batch` (durably if `durable`) together with whatever other
    /// writers submit meanwhile, through `commit`. Returns once the
    /// transaction holding `batch` has committed.
    pub(super) fn submit(
        &self,
        batch: &WriteBatch,
        durable: bool,
        commit: CommitFn<'_>,
    ) -> Result<(), StorageError> {
        let mut state = self.lock();
        if !state.leading {
            return self.lead(state, Some((batch, durable)), None, commit);
        }
        let ticket = state.next_ticket;
        state.next_ticket = state.next_ticket.wrapping_add(1);
        state.queue.push(Queued {
            ticket,
            batch: batch.clone(),
            durable,
        });
        loop {
            state = self
                .finished
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(outcome) = state.outcomes.remove(&ticket) {
                return outcome.map_err(|f| self.rebuild(&f));
            }
            if !state.leading {
                // Our batch is still queued and nobody is committing: lead.
                return self.lead(state, None, Some(ticket), commit);
            }
        }
    }

    /// Commits every queued batch, then `own` (the leader's batch when it did
    /// not queue it), and publishes the outcome to the queued writers.
    fn lead(
        &self,
        mut state: MutexGuard<'_, State>,
        own: Option<(&WriteBatch, bool)>,
        own_ticket: Option<u64>,
        commit: CommitFn<'_>,
    ) -> Result<(), StorageError> {
        state.leading = true;
        let group = mem::take(&mut state.queue);
        drop(state);

        let mut turn = LeaderTurn {
            queue: self,
            tickets: group.iter().map(|q| q.ticket).collect(),
            own_ticket,
            done: false,
        };
        let mut batches: Vec<&WriteBatch> = group.iter().map(|q| &q.batch).collect();
        let mut durable = group.iter().any(|q| q.durable);
        if let Some((batch, own_durable)) = own {
            batches.push(batch);
            durable |= own_durable;
        }
        let outcome = commit(&batches, durable).map_err(Failure::from_error);
        turn.finish(&outcome);
        outcome.map_err(|f| self.rebuild(&f))
    }

    /// The error one writer of a failed group returns.
    fn rebuild(&self, failure: &Failure) -> StorageError {
        StorageError {
            backend: self.backend,
            action: failure.action,
            path: self.path.clone(),
            kind: failure.kind,
            source: Box::new(Arc::clone(&failure.source)),
        }
    }

    /// The shared state; a panic elsewhere never leaves it inconsistent, so poison is ignored.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The leader's duty to publish its group's outcome, also when `commit`
/// panics: without it the followers would wait forever.
struct LeaderTurn<'a> {
    queue: &'a GroupCommit,
    tickets: Vec<u64>,
    own_ticket: Option<u64>,
    done: bool,
}

impl LeaderTurn<'_> {
    /// Publishes `outcome` to the group's queued writers and ends the turn.
    fn finish(&mut self, outcome: &Outcome) {
        let mut state = self.queue.lock();
        for &ticket in &self.tickets {
            if Some(ticket) != self.own_ticket {
                state.outcomes.insert(ticket, outcome.clone());
            }
        }
        state.leading = false;
        self.done = true;
        drop(state);
        self.queue.finished.notify_all();
    }
}

impl Drop for LeaderTurn<'_> {
    fn drop(&mut self) {
        if !self.done {
            let failure = Failure {
                action: "write",
                kind: StorageErrorKind::Other,
                source: Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(
                    "the writer committing this batch's group panicked; the batch was not applied",
                )),
            };
            self.finish(&Err(failure));
        }
    }
}

#[cfg(test)]
/// The queue alone, with a fake commit.
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    use super::*;
    use crate::storage::Tree;

    /// An idle queue.
    fn queue() -> GroupCommit {
        GroupCommit::new(Backend::Redb, PathBuf::from("/test"))
    }

    /// A one-put batch recording its writer (key) and sequence number (value).
    fn batch(writer: u8, seq: u16) -> WriteBatch {
        let mut b = WriteBatch::new();
        b.put(Tree::Data, vec![writer], seq.to_be_bytes().to_vec());
        b
    }

    /// Waits until `len` batches are queued behind the leader.
    fn wait_for_queue(gc: &GroupCommit, len: usize) {
        while gc.lock().queue.len() < len {
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Every batch is committed exactly once, each writer's in its own order,
    /// and writers do share transactions.
    #[test]
    fn concurrent_writers_commit_everything_in_order() {
        let gc = queue();
        let log = Mutex::new(Vec::<(u8, u16)>::new());
        let groups = AtomicUsize::new(0);
        let commit = |batches: &[&WriteBatch], _durable: bool| {
            groups.fetch_add(1, Ordering::Relaxed);
            // Commits take a while, so writers pile up behind the leader.
            thread::sleep(Duration::from_micros(200));
            let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
            for b in batches {
                for op in &b.ops {
                    if let crate::storage::Op::Put { key, value, .. } = op {
                        let seq = u16::from_be_bytes([value[0], value[1]]);
                        log.push((key[0], seq));
                    }
                }
            }
            Ok(())
        };
        thread::scope(|s| {
            for writer in 0..8u8 {
                let (gc, commit) = (&gc, &commit);
                s.spawn(move || {
                    for seq in 0..200u16 {
                        gc.submit(&batch(writer, seq), false, commit)
                            .expect("fake commit never fails");
                    }
                });
            }
        });
        let log = log.into_inner().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(log.len(), 8 * 200);
        for writer in 0..8u8 {
            let seqs: Vec<u16> = log
                .iter()
                .filter(|(w, _)| *w == writer)
                .map(|(_, s)| *s)
                .collect();
            assert_eq!(seqs, (0..200).collect::<Vec<_>>(), "writer {writer}");
        }
        let groups = groups.load(Ordering::Relaxed);
        assert!(groups < 8 * 200, "no commit was shared ({groups} commits)");
        assert!(gc.lock().outcomes.is_empty());
    }

    /// Batches queued behind a leader are committed in arrival order, in
    /// one transaction, durable if any of them asked for it.
    #[test]
    fn queued_batches_commit_in_arrival_order() {
        let gc = queue();
        let (release, gate) = mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let commits = Mutex::new(Vec::<(Vec<u8>, bool)>::new());
        let commit = |batches: &[&WriteBatch], durable: bool| {
            let writers: Vec<u8> = batches
                .iter()
                .flat_map(|b| &b.ops)
                .filter_map(|op| match op {
                    crate::storage::Op::Put { key, .. } => key.first().copied(),
                    crate::storage::Op::Remove { .. } => None,
                })
                .collect();
            let first = writers.first() == Some(&0);
            commits
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((writers, durable));
            if first {
                let _ = gate
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .recv_timeout(Duration::from_secs(5));
            }
            Ok(())
        };
        thread::scope(|s| {
            let (gc, commit) = (&gc, &commit);
            s.spawn(move || gc.submit(&batch(0, 0), false, commit));
            while !gc.lock().leading {
                thread::sleep(Duration::from_millis(1));
            }
            for writer in 1..=5u8 {
                s.spawn(move || gc.submit(&batch(writer, 0), writer == 3, commit));
                wait_for_queue(gc, usize::from(writer));
            }
            release.send(()).expect("commit is waiting");
        });
        let commits = commits.into_inner().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(commits, vec![(vec![0], false), (vec![1, 2, 3, 4, 5], true)]);
    }

    /// A failed group commit fails every writer in it, with the same kind.
    #[test]
    fn failure_reaches_every_writer_of_the_group() {
        let gc = queue();
        let (release, gate) = mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let commit = |_: &[&WriteBatch], _| -> Result<(), StorageError> {
            let _ = gate
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .recv_timeout(Duration::from_secs(5));
            Err(StorageError {
                backend: Backend::Redb,
                action: "write",
                path: PathBuf::from("/test"),
                kind: StorageErrorKind::Io,
                source: "disk full".into(),
            })
        };
        thread::scope(|s| {
            let leader = s.spawn(|| gc.submit(&batch(0, 0), false, &commit));
            while !gc.lock().leading {
                thread::sleep(Duration::from_millis(1));
            }
            let followers: Vec<_> = (1..4u8)
                .map(|w| {
                    let (gc, commit) = (&gc, &commit);
                    s.spawn(move || gc.submit(&batch(w, 0), true, commit))
                })
                .collect();
            wait_for_queue(&gc, 3);
            // Release the leader's commit, then the followers' group commit.
            for _ in 0..2 {
                release.send(()).expect("commit is waiting");
            }
            for handle in std::iter::once(leader).chain(followers) {
                let result = handle.join().expect("no panic");
                let err = result.expect_err("the commit failed");
                assert_eq!(err.kind, StorageErrorKind::Io);
                assert_eq!(
                    err.to_string(),
                    "redb backend failed to write at /test: disk full"
                );
            }
        });
        assert!(gc.lock().outcomes.is_empty());
        assert!(!gc.lock().leading);
    }

    /// A leader that panics mid-commit does not leave its group waiting.
    #[test]
    fn panicking_leader_releases_its_group() {
        let gc = queue();
        let (release, gate) = mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let calls = AtomicUsize::new(0);
        let commit = |_: &[&WriteBatch], _| -> Result<(), StorageError> {
            match calls.fetch_add(1, Ordering::SeqCst) {
                // The first leader holds the turn until both followers queued.
                0 => {
                    let _ = gate
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .recv_timeout(Duration::from_secs(5));
                    Ok(())
                }
                // The follower that leads the next group panics.
                1 => panic!("injected panic in a group leader's commit"),
                _ => Ok(()),
            }
        };
        thread::scope(|s| {
            let first = s.spawn(|| gc.submit(&batch(0, 0), false, &commit));
            while !gc.lock().leading {
                thread::sleep(Duration::from_millis(1));
            }
            let followers: Vec<_> = (1..3u8)
                .map(|w| {
                    let (gc, commit) = (&gc, &commit);
                    s.spawn(move || gc.submit(&batch(w, 0), false, commit))
                })
                .collect();
            wait_for_queue(&gc, 2);
            release.send(()).expect("commit is waiting");
            assert!(first.join().expect("no panic").is_ok());
            let (mut panicked, mut failed) = (0, 0);
            for follower in followers {
                match follower.join() {
                    Err(_) => panicked += 1,
                    Ok(Err(err)) => {
                        assert_eq!(err.kind, StorageErrorKind::Other);
                        failed += 1;
                    }
                    Ok(Ok(())) => panic!("a batch of the panicked group was reported committed"),
                }
            }
            assert_eq!((panicked, failed), (1, 1));
        });
        // The queue is usable afterwards.
        assert!(!gc.lock().leading);
        gc.submit(&batch(3, 0), false, &commit)
            .expect("later commits work");
    }
}
