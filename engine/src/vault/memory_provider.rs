//! A key provider that keeps its epoch keys in memory: nothing is durable,
//! nothing touches the disk. For fuzzing and fast tests
//! (`shredkv::internal::MemoryKeyProvider`); a store opened with it cannot
//! be read by another process or after this one exits.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use shredkv_crypto::{
    Anchor, DataKey, EpochCipher, EpochId, EpochKey, KeyProvider, ProviderError, WrapContext,
    WrappedKey,
};

struct Epochs {
    next: u32,
    /// Boxed, as in the file provider: B-tree nodes move their values.
    live: BTreeMap<EpochId, Box<EpochCipher>>,
    anchor: Option<Anchor>,
}

/// Epoch keys in memory, with the file provider's semantics: ids increase
/// from 1 and are never reused, and a destroyed epoch is reported as
/// [`ProviderError::EpochDestroyed`].
pub struct MemoryKeyProvider {
    epochs: Mutex<Epochs>,
}

impl fmt::Debug for MemoryKeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryKeyProvider").finish_non_exhaustive()
    }
}

impl Default for MemoryKeyProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryKeyProvider {
    /// A provider without epochs.
    pub fn new() -> Self {
        Self {
            epochs: Mutex::new(Epochs {
                next: 1,
                live: BTreeMap::new(),
                anchor: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Epochs> {
        self.epochs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn missing(epochs: &Epochs, epoch: EpochId) -> ProviderError {
    if epoch.0 >= 1 && epoch.0 < epochs.next {
        ProviderError::EpochDestroyed { epoch }
    } else {
        ProviderError::UnknownEpoch { epoch }
    }
}

impl KeyProvider for MemoryKeyProvider {
    fn create_epoch(&self) -> Result<EpochId, ProviderError> {
        let mut epochs = self.lock();
        let epoch = EpochId(epochs.next);
        epochs.next = epochs.next.saturating_add(1);
        epochs.live.insert(
            epoch,
            Box::new(EpochCipher::new(epoch, &EpochKey::generate())),
        );
        Ok(epoch)
    }

    fn live_epochs(&self) -> Result<Vec<EpochId>, ProviderError> {
        Ok(self.lock().live.keys().copied().collect())
    }

    fn wrap(
        &self,
        epoch: EpochId,
        context: &WrapContext,
        key: &DataKey,
    ) -> Result<WrappedKey, ProviderError> {
        let epochs = self.lock();
        match epochs.live.get(&epoch) {
            Some(cipher) => Ok(cipher.wrap(context, key)),
            None => Err(missing(&epochs, epoch)),
        }
    }

    fn unwrap(
        &self,
        context: &WrapContext,
        wrapped: &WrappedKey,
    ) -> Result<DataKey, ProviderError> {
        let epochs = self.lock();
        match epochs.live.get(&wrapped.epoch()) {
            Some(cipher) => cipher
                .unwrap(context, wrapped)
                .map_err(|_| ProviderError::Authentication),
            None => Err(missing(&epochs, wrapped.epoch())),
        }
    }

    fn destroy_epoch(&self, epoch: EpochId) -> Result<(), ProviderError> {
        let mut epochs = self.lock();
        if epoch.0 == 0 || epoch.0 >= epochs.next {
            return Err(ProviderError::UnknownEpoch { epoch });
        }
        epochs.live.remove(&epoch);
        Ok(())
    }

    fn describe(&self) -> String {
        "in-memory key provider (tests only: nothing is durable)".into()
    }

    fn keeps_anchor(&self) -> bool {
        true
    }

    fn anchor(&self) -> Result<Option<Anchor>, ProviderError> {
        Ok(self.lock().anchor)
    }

    fn advance_anchor(&self, anchor: &Anchor) -> Result<(), ProviderError> {
        let mut epochs = self.lock();
        if let Some(kept) = epochs.anchor
            && (anchor.position() < kept.position()
                || (anchor.position() == kept.position() && anchor.head != kept.head))
        {
            return Err(ProviderError::AnchorRegression {
                kept,
                offered: *anchor,
            });
        }
        epochs.anchor = Some(*anchor);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_unwraps_and_destroys_like_the_file_provider() {
        let provider = MemoryKeyProvider::new();
        let first = provider.create_epoch().expect("create");
        let second = provider.create_epoch().expect("create");
        assert!(second > first);
        let key = DataKey::generate();
        let wrapped = provider
            .wrap(first, &WrapContext::StoreSecret, &key)
            .expect("wrap");
        let back = provider
            .unwrap(&WrapContext::StoreSecret, &wrapped)
            .expect("unwrap");
        assert_eq!(back.expose_secret(), key.expose_secret());
        provider.destroy_epoch(first).expect("destroy");
        provider
            .destroy_epoch(first)
            .expect("destroying twice succeeds");
        assert!(matches!(
            provider.unwrap(&WrapContext::StoreSecret, &wrapped),
            Err(ProviderError::EpochDestroyed { .. })
        ));
        assert!(matches!(
            provider.destroy_epoch(EpochId(99)),
            Err(ProviderError::UnknownEpoch { .. })
        ));
        assert_eq!(provider.live_epochs().expect("live"), vec![second]);
    }
}
