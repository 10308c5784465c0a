//! The key cache: ready-to-use ciphers, bounded in bytes.
//!
//! Entries are reference-counted; an evicted entry is dropped (and its key
//! material zeroized) once the last operation using it finishes. The cache
//! also remembers each bucket's current key version, so a write finds its key
//! with one lookup.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use shredkv_crypto::{KeyId, SubjectTag};

use crate::sync::{self, Mutex};
use crate::tag_hash::TagMap;

/// A scope-bucket: the keys of one subject, class and bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BucketId {
    /// The subject.
    pub subject: SubjectTag,
    /// The class number.
    pub class: u16,
    /// The bucket.
    pub bucket: u32,
}

impl BucketId {
    /// The bucket of a key id.
    pub fn of(id: &KeyId) -> Self {
        Self {
            subject: id.subject,
            class: id.class,
            bucket: id.bucket,
        }
    }
}

/// One cached value, its cost, and its place in the eviction order.
#[derive(Debug)]
struct Entry<V> {
    value: Arc<V>,
    bytes: usize,
    /// Matches the one `order` item that stands for this entry; older items
    /// naming the same id are stale and skipped.
    seq: u64,
}

#[derive(Debug)]
struct Inner<V> {
    entries: TagMap<KeyId, Entry<V>>,
    /// Every cached id, sorted: a subject's (or scope's) entries are one
    /// range, so evicting them costs their number, not the cache's size.
    index: BTreeSet<KeyId>,
    /// Each bucket's current key with its value, so a write (or a blinded
    /// lookup) finds it with one probe; always also in `entries`.
    current: TagMap<BucketId, (KeyId, Arc<V>)>,
    /// Insertion order, oldest first. Removal leaves its item behind (found
    /// stale by its sequence number when it reaches the front, or dropped by
    /// [`Inner::compact_order`]), so no removal scans the queue.
    order: VecDeque<(KeyId, u64)>,
    next_seq: u64,
    bytes: usize,
}

impl<V> Inner<V> {
    /// Removes `id`'s entry and returns its value, so that a caller
    /// removing many can drop them (and so zeroize) after the lock.
    fn remove(&mut self, id: &KeyId) -> Option<Arc<V>> {
        let bucket = BucketId::of(id);
        if self
            .current
            .get(&bucket)
            .is_some_and(|(current, _)| current == id)
        {
            self.current.remove(&bucket);
        }
        let entry = self.entries.remove(id)?;
        self.bytes = self.bytes.saturating_sub(entry.bytes);
        self.index.remove(id);
        Some(entry.value)
    }

    /// Removes the entries of `ids` and returns their values.
    fn remove_many<'a>(&mut self, ids: impl ExactSizeIterator<Item = &'a KeyId>) -> Vec<Arc<V>> {
        let mut removed = Vec::with_capacity(ids.len());
        removed.extend(ids.filter_map(|id| self.remove(id)));
        self.compact_order();
        removed
    }

    /// Drops stale order items once they outnumber the live ones: each
    /// removal pays for its own item once, amortized.
    fn compact_order(&mut self) {
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order
                .retain(|(id, seq)| entries.get(id).is_some_and(|e| e.seq == *seq));
        }
    }
}

/// Cached values of type `V` (in the engine: unwrapped keys) by key id.
#[derive(Debug)]
pub struct KeyCache<V> {
    inner: Mutex<Inner<V>>,
    capacity_bytes: usize,
}

impl<V> KeyCache<V> {
    /// A cache holding at most `capacity_bytes` of entries (as costed by the
    /// caller on insert), and always at least one entry.
    pub fn new(capacity_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: TagMap::default(),
                index: BTreeSet::new(),
                current: TagMap::default(),
                order: VecDeque::new(),
                next_seq: 0,
                bytes: 0,
            }),
            capacity_bytes,
        }
    }

    /// The entry for `id`, if cached.
    pub fn get(&self, id: &KeyId) -> Option<Arc<V>> {
        sync::lock(&self.inner)
            .entries
            .get(id)
            .map(|e| Arc::clone(&e.value))
    }

    /// The current key of a bucket, if cached.
    pub fn current(&self, bucket: &BucketId) -> Option<(KeyId, Arc<V>)> {
        sync::lock(&self.inner)
            .current
            .get(bucket)
            .map(|(id, value)| (*id, Arc::clone(value)))
    }

    /// Caches `value` under `id`, costing `bytes`, and makes it its bucket's
    /// current key if `current`. Evicts the oldest entries beyond capacity.
    pub fn insert(&self, id: KeyId, value: Arc<V>, bytes: usize, current: bool) {
        let mut inner = sync::lock(&self.inner);
        let inner = &mut *inner;
        let bucket = BucketId::of(&id);
        if current {
            inner.current.insert(bucket, (id, Arc::clone(&value)));
        } else if let Some((current_id, current_value)) = inner.current.get_mut(&bucket)
            && *current_id == id
        {
            // Replaced in place while current: the bucket serves the new value.
            *current_value = Arc::clone(&value);
        }
        match inner.entries.get_mut(&id) {
            // Replaced in place: it keeps its place in the order.
            Some(entry) => {
                inner.bytes = inner.bytes.saturating_sub(entry.bytes);
                entry.value = value;
                entry.bytes = bytes;
            }
            None => {
                let seq = inner.next_seq;
                inner.next_seq += 1;
                inner.entries.insert(id, Entry { value, bytes, seq });
                inner.index.insert(id);
                inner.order.push_back((id, seq));
            }
        }
        inner.bytes = inner.bytes.saturating_add(bytes);
        while inner.bytes > self.capacity_bytes && inner.entries.len() > 1 {
            let Some((oldest, seq)) = inner.order.pop_front() else {
                break;
            };
            if inner.entries.get(&oldest).is_none_or(|e| e.seq != seq) {
                continue; // stale: removed (or replaced) since
            }
            if oldest == id {
                inner.order.push_back((oldest, seq));
                continue;
            }
            drop(inner.remove(&oldest));
        }
    }

    /// Stops using `id` as its bucket's current key (it stays readable).
    pub fn retire(&self, id: &KeyId) {
        let mut inner = sync::lock(&self.inner);
        let bucket = BucketId::of(id);
        if inner
            .current
            .get(&bucket)
            .is_some_and(|(current, _)| current == id)
        {
            inner.current.remove(&bucket);
        }
    }

    /// Drops one entry (its value after the lock).
    pub fn remove(&self, id: &KeyId) {
        let removed = {
            let mut inner = sync::lock(&self.inner);
            let removed = inner.remove(id);
            inner.compact_order();
            removed
        };
        drop(removed);
    }

    /// Drops the entries of `ids` under one acquisition of the lock. Their
    /// values are dropped after it is released, so readers do not wait on
    /// the zeroizing.
    pub fn remove_many(&self, ids: &[KeyId]) {
        let removed = sync::lock(&self.inner).remove_many(ids.iter());
        drop(removed);
    }

    /// Drops every entry of a subject (all classes, or one).
    pub fn evict_subject(&self, subject: &SubjectTag, class: Option<u16>) {
        let mut inner = sync::lock(&self.inner);
        let (first, last) = match class {
            Some(c) => (c, c),
            None => (0, u16::MAX),
        };
        let from = KeyId {
            subject: *subject,
            class: first,
            bucket: 0,
            version: 0,
        };
        let to = KeyId {
            subject: *subject,
            class: last,
            bucket: u32::MAX,
            version: u32::MAX,
        };
        let doomed: Vec<KeyId> = inner.index.range(from..=to).copied().collect();
        let removed = inner.remove_many(doomed.iter());
        drop(inner);
        drop(removed);
    }

    /// Number of cached entries.
    pub fn len(&self) -> usize {
        sync::lock(&self.inner).entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops everything.
    pub fn clear(&self) {
        let mut inner = sync::lock(&self.inner);
        inner.entries.clear();
        inner.index.clear();
        inner.current.clear();
        inner.order.clear();
        inner.bytes = 0;
    }
}

#[cfg(all(test, not(feature = "loom")))]
mod tests {
    use super::*;

    fn id(subject: u8, class: u16, bucket: u32, version: u32) -> KeyId {
        KeyId {
            subject: SubjectTag([subject; 16]),
            class,
            bucket,
            version,
        }
    }

    #[test]
    fn bounded_by_bytes_and_evicts_oldest() {
        let cache = KeyCache::new(300);
        for v in 1..=5 {
            cache.insert(id(1, 1, 1, v), Arc::new(v), 100, true);
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&id(1, 1, 1, 1)).is_none());
        assert_eq!(
            cache
                .current(&BucketId::of(&id(1, 1, 1, 5)))
                .map(|(k, _)| k.version),
            Some(5)
        );
    }

    #[test]
    fn evicted_entries_are_dropped_when_unused() {
        let cache = KeyCache::new(100);
        let value = Arc::new(7u32);
        cache.insert(id(1, 1, 1, 1), Arc::clone(&value), 100, true);
        // Held by the entry and by its bucket's current slot.
        assert_eq!(Arc::strong_count(&value), 3);
        cache.evict_subject(&SubjectTag([1; 16]), None);
        assert_eq!(Arc::strong_count(&value), 1);
        assert!(cache.is_empty());
        assert!(cache.current(&BucketId::of(&id(1, 1, 1, 1))).is_none());
    }

    /// The current slot never outlives its entry and always serves the
    /// entry's latest value: replaced in place, evicted, removed, retired.
    #[test]
    fn the_current_key_follows_its_entry() {
        let cache = KeyCache::new(200);
        let bucket = BucketId::of(&id(1, 1, 1, 1));
        let current = |cache: &KeyCache<u32>| cache.current(&bucket).map(|(k, v)| (k.version, *v));
        cache.insert(id(1, 1, 1, 1), Arc::new(10), 100, true);
        assert_eq!(current(&cache), Some((1, 10)));
        // Replaced in place without the flag: still current, new value.
        cache.insert(id(1, 1, 1, 1), Arc::new(11), 100, false);
        assert_eq!(current(&cache), Some((1, 11)));
        // Another bucket's keys evict it: the slot goes with it.
        cache.insert(id(2, 1, 1, 1), Arc::new(20), 100, true);
        cache.insert(id(2, 1, 1, 2), Arc::new(21), 100, true);
        assert!(cache.get(&id(1, 1, 1, 1)).is_none());
        assert_eq!(current(&cache), None);
        // A newer version takes the slot; removing the older leaves it.
        cache.insert(id(1, 1, 1, 1), Arc::new(10), 100, true);
        cache.insert(id(1, 1, 1, 2), Arc::new(12), 100, true);
        cache.remove(&id(1, 1, 1, 1));
        assert_eq!(current(&cache), Some((2, 12)));
        cache.remove(&id(1, 1, 1, 2));
        assert_eq!(current(&cache), None);
        cache.insert(id(1, 1, 1, 3), Arc::new(13), 100, true);
        cache.retire(&id(1, 1, 1, 3));
        assert_eq!(current(&cache), None);
        assert!(cache.get(&id(1, 1, 1, 3)).is_some());
    }

    #[test]
    fn a_removed_then_reinserted_entry_is_the_youngest() {
        let cache = KeyCache::new(300);
        for v in 1..=3 {
            cache.insert(id(1, 1, 1, v), Arc::new(v), 100, false);
        }
        cache.remove(&id(1, 1, 1, 1));
        cache.insert(id(1, 1, 1, 1), Arc::new(1), 100, false);
        // Full: the next insert evicts the oldest live entry, version 2, not
        // the re-inserted version 1 whose stale order item came first.
        cache.insert(id(1, 1, 1, 4), Arc::new(4), 100, false);
        assert!(cache.get(&id(1, 1, 1, 2)).is_none());
        for v in [1, 3, 4] {
            assert!(cache.get(&id(1, 1, 1, v)).is_some(), "version {v}");
        }
    }

    #[test]
    fn removals_never_let_the_order_grow_past_the_entries() {
        let cache = KeyCache::new(1 << 30);
        for v in 0..10_000 {
            cache.insert(id(1, 1, 1, v), Arc::new(v), 1, false);
            if v >= 10 {
                cache.remove(&id(1, 1, 1, v - 10));
            }
        }
        let inner = sync::lock(&cache.inner);
        assert_eq!(inner.entries.len(), 10);
        assert_eq!(inner.index.len(), 10);
        assert!(
            inner.order.len() <= 2 * 10 + 64 + 1,
            "{}",
            inner.order.len()
        );
    }

    /// A page's removal drops exactly the ids named (absent ones are no
    /// error), their current slots and their bytes, and keeps no reference
    /// to their values.
    #[test]
    fn removing_many_drops_only_those_entries_and_their_values() {
        let cache = KeyCache::new(400);
        let values: Vec<Arc<u8>> = (1..=4).map(Arc::new).collect();
        for value in &values {
            cache.insert(id(**value, 1, 1, 1), Arc::clone(value), 100, true);
        }
        cache.remove_many(&[id(1, 1, 1, 1), id(3, 1, 1, 1), id(9, 1, 1, 1)]);
        assert_eq!(cache.len(), 2);
        for v in [1u8, 3] {
            assert!(cache.get(&id(v, 1, 1, 1)).is_none(), "subject {v}");
            assert!(cache.current(&BucketId::of(&id(v, 1, 1, 1))).is_none());
        }
        assert_eq!(Arc::strong_count(&values[0]), 1);
        assert_eq!(Arc::strong_count(&values[2]), 1);
        // Their bytes are freed too: two more fit without evicting the rest.
        cache.insert(id(5, 1, 1, 1), Arc::new(5), 100, true);
        cache.insert(id(6, 1, 1, 1), Arc::new(6), 100, true);
        for v in [2u8, 4, 5, 6] {
            assert!(cache.get(&id(v, 1, 1, 1)).is_some(), "subject {v}");
        }
    }

    #[test]
    fn evicting_a_subject_touches_only_its_range() {
        let cache = KeyCache::new(1 << 20);
        for subject in [1u8, 2, 3] {
            for class in [0u16, 1, u16::MAX] {
                cache.insert(id(subject, class, u32::MAX, u32::MAX), Arc::new(0), 1, true);
                cache.insert(id(subject, class, 0, 0), Arc::new(0), 1, true);
            }
        }
        cache.evict_subject(&SubjectTag([2; 16]), Some(u16::MAX));
        assert!(cache.get(&id(2, u16::MAX, 0, 0)).is_none());
        assert!(cache.get(&id(2, u16::MAX, u32::MAX, u32::MAX)).is_none());
        assert_eq!(cache.len(), 16);
        cache.evict_subject(&SubjectTag([2; 16]), None);
        assert_eq!(cache.len(), 12);
        for subject in [1u8, 3] {
            for class in [0u16, 1, u16::MAX] {
                assert!(cache.get(&id(subject, class, 0, 0)).is_some());
                assert!(cache.get(&id(subject, class, u32::MAX, u32::MAX)).is_some());
            }
        }
    }

    #[test]
    fn evict_one_class_keeps_the_others_and_retire_keeps_readable() {
        let cache = KeyCache::new(10_000);
        cache.insert(id(1, 1, 1, 1), Arc::new(1), 10, true);
        cache.insert(id(1, 2, 1, 1), Arc::new(2), 10, true);
        cache.evict_subject(&SubjectTag([1; 16]), Some(1));
        assert!(cache.get(&id(1, 1, 1, 1)).is_none());
        assert!(cache.get(&id(1, 2, 1, 1)).is_some());
        cache.retire(&id(1, 2, 1, 1));
        assert!(cache.current(&BucketId::of(&id(1, 2, 1, 1))).is_none());
        assert!(cache.get(&id(1, 2, 1, 1)).is_some());
    }
}
