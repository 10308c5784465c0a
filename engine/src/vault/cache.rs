//! The key cache: ready-to-use ciphers, bounded in bytes.
//!
//! Entries are reference-counted; an evicted entry is dropped (and its key
//! material zeroized) once the last operation using it finishes. The cache
//! also remembers each bucket's current key version, so a write finds its key
//! with one lookup.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use shredkv_crypto::{KeyId, SubjectTag};

use crate::sync::{self, Mutex};

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

#[derive(Debug)]
struct Inner<V> {
    entries: HashMap<KeyId, (Arc<V>, usize)>,
    current: HashMap<BucketId, KeyId>,
    order: VecDeque<KeyId>,
    bytes: usize,
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
                entries: HashMap::new(),
                current: HashMap::new(),
                order: VecDeque::new(),
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
            .map(|(v, _)| Arc::clone(v))
    }

    /// The current key of a bucket, if cached.
    pub fn current(&self, bucket: &BucketId) -> Option<(KeyId, Arc<V>)> {
        let inner = sync::lock(&self.inner);
        let id = inner.current.get(bucket)?;
        inner.entries.get(id).map(|(v, _)| (*id, Arc::clone(v)))
    }

    /// Caches `value` under `id`, costing `bytes`, and makes it its bucket's
    /// current key if `current`. Evicts the oldest entries beyond capacity.
    pub fn insert(&self, id: KeyId, value: Arc<V>, bytes: usize, current: bool) {
        let mut inner = sync::lock(&self.inner);
        if let Some((_, old_bytes)) = inner.entries.insert(id, (value, bytes)) {
            inner.bytes = inner.bytes.saturating_sub(old_bytes);
        } else {
            inner.order.push_back(id);
        }
        inner.bytes = inner.bytes.saturating_add(bytes);
        if current {
            inner.current.insert(BucketId::of(&id), id);
        }
        while inner.bytes > self.capacity_bytes && inner.entries.len() > 1 {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if oldest == id {
                inner.order.push_back(oldest);
                continue;
            }
            Self::remove_locked(&mut inner, &oldest);
        }
    }

    /// Stops using `id` as its bucket's current key (it stays readable).
    pub fn retire(&self, id: &KeyId) {
        let mut inner = sync::lock(&self.inner);
        let bucket = BucketId::of(id);
        if inner.current.get(&bucket) == Some(id) {
            inner.current.remove(&bucket);
        }
    }

    /// Drops one entry.
    pub fn remove(&self, id: &KeyId) {
        let mut inner = sync::lock(&self.inner);
        Self::remove_locked(&mut inner, id);
        inner.order.retain(|k| k != id);
    }

    /// Drops every entry of a subject (all classes, or one).
    pub fn evict_subject(&self, subject: &SubjectTag, class: Option<u16>) {
        let mut inner = sync::lock(&self.inner);
        let doomed: Vec<KeyId> = inner
            .entries
            .keys()
            .filter(|id| id.subject == *subject && class.is_none_or(|c| c == id.class))
            .copied()
            .collect();
        for id in &doomed {
            Self::remove_locked(&mut inner, id);
        }
        inner
            .order
            .retain(|k| !(k.subject == *subject && class.is_none_or(|c| c == k.class)));
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
        inner.current.clear();
        inner.order.clear();
        inner.bytes = 0;
    }

    fn remove_locked(inner: &mut Inner<V>, id: &KeyId) {
        if let Some((_, bytes)) = inner.entries.remove(id) {
            inner.bytes = inner.bytes.saturating_sub(bytes);
        }
        let bucket = BucketId::of(id);
        if inner.current.get(&bucket) == Some(id) {
            inner.current.remove(&bucket);
        }
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
        assert_eq!(Arc::strong_count(&value), 2);
        cache.evict_subject(&SubjectTag([1; 16]), None);
        assert_eq!(Arc::strong_count(&value), 1);
        assert!(cache.is_empty());
        assert!(cache.current(&BucketId::of(&id(1, 1, 1, 1))).is_none());
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
