//! The store directories this process has open. A backend's file lock
//! cannot tell a second open in this process from one in another; this
//! registry can, so the error names the real cause (share the `Db`, which
//! is `Clone + Send + Sync`, instead of opening the directory twice).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

static OPEN: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// A directory marked open in this process until this is dropped.
#[derive(Debug)]
pub(crate) struct OpenStore {
    dir: PathBuf,
}

impl Drop for OpenStore {
    fn drop(&mut self) {
        OPEN.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.dir);
    }
}

/// Marks `dir` open in this process, waiting up to `wait` for an open of it
/// here to close (a `Db` being dropped on another thread, a compactor pass
/// ending). `None` if it stayed open.
pub(crate) fn mark_open(dir: &Path, wait: Duration) -> Option<OpenStore> {
    // One name per directory, however it was spelled.
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let deadline = Instant::now() + wait;
    loop {
        if OPEN
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(dir.clone())
        {
            return Some(OpenStore { dir });
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_open_once_per_process_until_dropped() {
        let dir = tempfile::tempdir().expect("dir");
        let first = mark_open(dir.path(), Duration::ZERO).expect("first");
        // Spelled another way: still the same directory.
        let other_spelling = dir.path().join(".");
        assert!(mark_open(&other_spelling, Duration::from_millis(20)).is_none());
        drop(first);
        assert!(mark_open(&other_spelling, Duration::ZERO).is_some());
        // A release on another thread within the wait lets the open through.
        let held = mark_open(dir.path(), Duration::ZERO).expect("held");
        let releaser = thread::spawn(move || {
            thread::sleep(Duration::from_millis(30));
            drop(held);
        });
        assert!(mark_open(dir.path(), Duration::from_secs(5)).is_some());
        releaser.join().expect("join");
    }
}
