//! The checks every [`KeyProvider`] must pass, whatever keeps its keys.
//!
//! [`run_all`] takes a function that opens the provider: the first call
//! must give a provider over an empty store (no epochs, no anchor), every
//! later call the same store again (as a restarted process would see it).
//! Each check panics with a sentence naming what the provider got wrong.
//! The file provider runs them below; the PKCS#11 provider runs them in
//! its own crate against SoftHSM2.

use std::collections::BTreeSet;

use super::{Anchor, KeyProvider, ProviderError};
use crate::keys::{DataKey, EpochId, KeyId, SubjectTag};
use crate::wrap::{WrapContext, WrappedKey};

/// Runs every check, in order, on the store `open` opens.
///
/// # Panics
/// On the first check the provider fails, naming it.
pub fn run_all<P: KeyProvider>(open: impl Fn() -> P) {
    let provider = open();
    let mut model = Model::default();
    anchor_starts_empty(&provider);
    epochs_ascend_and_are_never_reused(&provider, &mut model);
    live_epochs_are_exactly_the_live_ones(&provider, &model);
    wrap_round_trips_and_binds_its_context(&provider, &mut model);
    every_flipped_byte_fails_authentication(&provider, &model);
    destroyed_epochs_are_reported_destroyed(&provider, &mut model);
    unknown_epochs_are_reported_unknown(&provider, &model);
    the_anchor_only_moves_forward(&provider, &mut model);
    drop(provider);
    state_survives_reopening(&open(), &mut model);
}

/// What the checks did, to compare the provider with.
#[derive(Default)]
struct Model {
    live: BTreeSet<EpochId>,
    destroyed: BTreeSet<EpochId>,
    /// A key wrapped under a live epoch, and the key.
    kept: Option<(WrappedKey, [u8; 32])>,
    /// A key wrapped under an epoch later destroyed.
    lost: Option<WrappedKey>,
    anchor: Option<Anchor>,
}

impl Model {
    fn highest(&self) -> EpochId {
        self.live
            .iter()
            .chain(&self.destroyed)
            .max()
            .copied()
            .unwrap_or(EpochId(0))
    }

    fn create(&mut self, provider: &impl KeyProvider) -> EpochId {
        let epoch = ok(provider.create_epoch(), "create_epoch");
        assert!(
            epoch > self.highest(),
            "create_epoch gave {epoch}, not above every earlier epoch ({}): ids must ascend and never be reused",
            self.highest()
        );
        self.live.insert(epoch);
        epoch
    }

    fn destroy(&mut self, provider: &impl KeyProvider, epoch: EpochId) {
        ok(provider.destroy_epoch(epoch), "destroy_epoch");
        self.live.remove(&epoch);
        self.destroyed.insert(epoch);
    }
}

fn ok<T>(result: Result<T, ProviderError>, what: &str) -> T {
    result.unwrap_or_else(|err| panic!("{what} failed: {err}"))
}

fn context(n: u32) -> WrapContext {
    WrapContext::DataKey(KeyId {
        subject: SubjectTag([7; 16]),
        class: 1,
        bucket: 2,
        version: n,
    })
}

fn anchor_at(generation: u64, seq: u64, salt: u8) -> Anchor {
    let mut head = [salt; 32];
    head[..8].copy_from_slice(&seq.to_be_bytes());
    Anchor {
        generation,
        seq,
        head,
    }
}

fn anchor_starts_empty(provider: &impl KeyProvider) {
    assert!(
        provider.keeps_anchor(),
        "the provider keeps no anchor: a store on it cannot detect a rollback"
    );
    assert_eq!(
        ok(provider.anchor(), "anchor"),
        None,
        "a new store's anchor must be None"
    );
    assert_eq!(
        ok(provider.live_epochs(), "live_epochs"),
        vec![],
        "a new store has no epochs"
    );
}

fn epochs_ascend_and_are_never_reused(provider: &impl KeyProvider, model: &mut Model) {
    let first = model.create(provider);
    let second = model.create(provider);
    // Destroying the newest epoch must not free its id.
    model.destroy(provider, second);
    let third = model.create(provider);
    assert!(
        third > second,
        "{third} reuses or goes below destroyed {second}"
    );
    model.create(provider);
    model.destroy(provider, first);
}

fn live_epochs_are_exactly_the_live_ones(provider: &impl KeyProvider, model: &Model) {
    let live = ok(provider.live_epochs(), "live_epochs");
    let expected: Vec<EpochId> = model.live.iter().copied().collect();
    assert_eq!(
        live, expected,
        "live_epochs must list exactly the live epochs, ascending"
    );
}

fn wrap_round_trips_and_binds_its_context(provider: &impl KeyProvider, model: &mut Model) {
    let Some(&epoch) = model.live.iter().next_back() else {
        panic!("the checks before left no live epoch");
    };
    for ctx in [context(1), WrapContext::StoreSecret] {
        let key = DataKey::generate();
        let wrapped = ok(provider.wrap(epoch, &ctx, &key), "wrap");
        assert_eq!(wrapped.epoch(), epoch, "the wrapped key names its epoch");
        let again = ok(provider.wrap(epoch, &ctx, &key), "wrap");
        assert_ne!(wrapped, again, "two wraps of one key must use fresh nonces");
        let back = ok(provider.unwrap(&ctx, &wrapped), "unwrap");
        assert_eq!(
            back.expose_secret(),
            key.expose_secret(),
            "unwrap must give back the wrapped key"
        );
        let other = if ctx == WrapContext::StoreSecret {
            context(1)
        } else {
            context(2)
        };
        let result = provider.unwrap(&other, &wrapped).map(drop);
        assert!(
            matches!(result, Err(ProviderError::Authentication)),
            "unwrapping for another context must fail authentication, not give {result:?}"
        );
        model.kept = Some((wrapped, *key.expose_secret()));
    }
}

fn every_flipped_byte_fails_authentication(provider: &impl KeyProvider, model: &Model) {
    let Some((wrapped, _)) = &model.kept else {
        panic!("the checks before wrapped no key");
    };
    // Nonce, sealed key and tag; the CRC is recomputed so only
    // authentication can notice.
    for at in 5..65 {
        let mut bytes = *wrapped.as_bytes();
        bytes[at] ^= 0x01;
        let crc = crc32fast::hash(&bytes[..65]);
        bytes[65..].copy_from_slice(&crc.to_be_bytes());
        let tampered = ok(
            WrappedKey::from_bytes(&bytes).map_err(ProviderError::WrappedKeyFormat),
            "re-encode a tampered key",
        );
        let result = provider
            .unwrap(&WrapContext::StoreSecret, &tampered)
            .map(drop);
        assert!(
            matches!(result, Err(ProviderError::Authentication)),
            "a wrapped key with byte {at} flipped must fail authentication, not give {result:?}"
        );
    }
}

fn destroyed_epochs_are_reported_destroyed(provider: &impl KeyProvider, model: &mut Model) {
    let doomed = model.create(provider);
    let lost = ok(
        provider.wrap(doomed, &context(3), &DataKey::generate()),
        "wrap",
    );
    model.destroy(provider, doomed);
    ok(
        provider.destroy_epoch(doomed),
        "destroying an epoch a second time",
    );
    let is_destroyed = |r: &Result<_, ProviderError>| matches!(r, Err(ProviderError::EpochDestroyed { epoch }) if *epoch == doomed);
    assert!(
        is_destroyed(&provider.unwrap(&context(3), &lost).map(drop)),
        "unwrap under a destroyed epoch must say EpochDestroyed"
    );
    assert!(
        is_destroyed(
            &provider
                .wrap(doomed, &context(3), &DataKey::generate())
                .map(drop)
        ),
        "wrap under a destroyed epoch must say EpochDestroyed"
    );
    model.lost = Some(lost);
}

fn unknown_epochs_are_reported_unknown(provider: &impl KeyProvider, model: &Model) {
    let unknown = EpochId(model.highest().0 + 1000);
    for epoch in [unknown, EpochId(0)] {
        let is_unknown = |r: &Result<(), ProviderError>| matches!(r, Err(ProviderError::UnknownEpoch { epoch: e }) if *e == epoch);
        assert!(
            is_unknown(
                &provider
                    .wrap(epoch, &context(4), &DataKey::generate())
                    .map(drop)
            ),
            "wrap under never-created {epoch} must say UnknownEpoch"
        );
        assert!(
            is_unknown(&provider.destroy_epoch(epoch)),
            "destroying never-created {epoch} must say UnknownEpoch"
        );
        let forged = WrappedKey::from_parts(epoch, [1; 12], [2; 32], [3; 16]);
        assert!(
            is_unknown(&provider.unwrap(&context(4), &forged).map(drop)),
            "unwrap under never-created {epoch} must say UnknownEpoch"
        );
    }
}

fn the_anchor_only_moves_forward(provider: &impl KeyProvider, model: &mut Model) {
    let first = anchor_at(0, 5, 1);
    ok(provider.advance_anchor(&first), "advance_anchor");
    assert_eq!(ok(provider.anchor(), "anchor"), Some(first));
    ok(
        provider.advance_anchor(&first),
        "advancing to the same anchor again",
    );
    let regressed = |r: Result<(), ProviderError>| matches!(r, Err(ProviderError::AnchorRegression { kept, .. }) if kept == first);
    assert!(
        regressed(provider.advance_anchor(&anchor_at(0, 4, 1))),
        "an anchor behind the kept one must be refused with AnchorRegression"
    );
    assert!(
        regressed(provider.advance_anchor(&anchor_at(0, 5, 2))),
        "the kept position with another hash must be refused with AnchorRegression"
    );
    assert_eq!(
        ok(provider.anchor(), "anchor"),
        Some(first),
        "a refused anchor changes nothing"
    );
    let second = anchor_at(1, 2, 3);
    ok(provider.advance_anchor(&second), "advance_anchor");
    assert_eq!(ok(provider.anchor(), "anchor"), Some(second));
    model.anchor = Some(second);
}

fn state_survives_reopening(provider: &impl KeyProvider, model: &mut Model) {
    let expected: Vec<EpochId> = model.live.iter().copied().collect();
    assert_eq!(
        ok(provider.live_epochs(), "live_epochs after reopening"),
        expected,
        "the live epochs must survive reopening"
    );
    assert_eq!(
        ok(provider.anchor(), "anchor after reopening"),
        model.anchor,
        "the anchor must survive reopening"
    );
    if let Some((wrapped, key)) = &model.kept {
        let back = ok(
            provider.unwrap(&WrapContext::StoreSecret, wrapped),
            "unwrap after reopening",
        );
        assert_eq!(back.expose_secret(), key, "keys must survive reopening");
    }
    if let Some(lost) = &model.lost {
        assert!(
            matches!(
                provider.unwrap(&context(3), lost),
                Err(ProviderError::EpochDestroyed { .. })
            ),
            "a destroyed epoch must stay destroyed after reopening"
        );
    }
    let Some(&destroyed) = model.destroyed.iter().next_back() else {
        panic!("the checks before destroyed no epoch");
    };
    assert!(
        matches!(
            provider.wrap(destroyed, &context(5), &DataKey::generate()),
            Err(ProviderError::EpochDestroyed { .. })
        ),
        "{destroyed} must stay destroyed after reopening"
    );
    model.create(provider);
}

#[cfg(test)]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::keys::EpochKey;
    use crate::provider::FileKeyProvider;
    use crate::wrap::EpochCipher;

    #[test]
    fn the_file_provider_conforms() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys");
        run_all(|| FileKeyProvider::open_or_create(&path).expect("open"));
    }

    /// One fault each, that the suite must catch.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Fault {
        None,
        ReusesDestroyedIds,
        ForgetsDestroyed,
        DestroyedReadsUnknown,
        IgnoresContext,
        AcceptsRegression,
        ForgetsOnReopen,
    }

    #[derive(Default)]
    struct State {
        next: u32,
        live: Vec<(EpochId, [u8; 32])>,
        anchor: Option<Anchor>,
    }

    /// A provider in memory with one deliberate fault; `State` is shared
    /// between "reopened" instances.
    #[derive(Debug)]
    struct Mutant {
        fault: Fault,
        state: Arc<Mutex<State>>,
    }

    impl std::fmt::Debug for State {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("State").finish_non_exhaustive()
        }
    }

    impl Mutant {
        fn cipher(&self, epoch: EpochId) -> Result<EpochCipher, ProviderError> {
            let state = self.state.lock().expect("lock");
            match state.live.iter().find(|(e, _)| *e == epoch) {
                Some((_, key)) => Ok(EpochCipher::new(epoch, &EpochKey::from_bytes(*key))),
                None if epoch.0 >= 1
                    && epoch.0 <= state.next
                    && self.fault != Fault::DestroyedReadsUnknown =>
                {
                    Err(ProviderError::EpochDestroyed { epoch })
                }
                None => Err(ProviderError::UnknownEpoch { epoch }),
            }
        }
    }

    impl KeyProvider for Mutant {
        fn create_epoch(&self) -> Result<EpochId, ProviderError> {
            let mut state = self.state.lock().expect("lock");
            if self.fault != Fault::ReusesDestroyedIds
                || state.live.iter().all(|(e, _)| e.0 != state.next)
            {
                state.next += 1;
            }
            let epoch = EpochId(state.next);
            let mut key = [0u8; 32];
            crate::random::fill(&mut key);
            state.live.push((epoch, key));
            Ok(epoch)
        }
        fn live_epochs(&self) -> Result<Vec<EpochId>, ProviderError> {
            let state = self.state.lock().expect("lock");
            Ok(state.live.iter().map(|(e, _)| *e).collect())
        }
        fn wrap(
            &self,
            epoch: EpochId,
            context: &WrapContext,
            key: &DataKey,
        ) -> Result<WrappedKey, ProviderError> {
            let context = if self.fault == Fault::IgnoresContext {
                &WrapContext::StoreSecret
            } else {
                context
            };
            Ok(self.cipher(epoch)?.wrap(context, key))
        }
        fn unwrap(
            &self,
            context: &WrapContext,
            wrapped: &WrappedKey,
        ) -> Result<DataKey, ProviderError> {
            let context = if self.fault == Fault::IgnoresContext {
                &WrapContext::StoreSecret
            } else {
                context
            };
            self.cipher(wrapped.epoch())?
                .unwrap(context, wrapped)
                .map_err(|_| ProviderError::Authentication)
        }
        fn destroy_epoch(&self, epoch: EpochId) -> Result<(), ProviderError> {
            match self.cipher(epoch) {
                Ok(_) if self.fault == Fault::ForgetsDestroyed => Ok(()),
                Ok(_) => {
                    let mut state = self.state.lock().expect("lock");
                    state.live.retain(|(e, _)| *e != epoch);
                    Ok(())
                }
                Err(ProviderError::EpochDestroyed { .. }) => Ok(()),
                Err(ProviderError::UnknownEpoch { .. })
                    if self.fault == Fault::DestroyedReadsUnknown
                        && epoch.0 >= 1
                        && epoch.0 <= self.state.lock().expect("lock").next =>
                {
                    Ok(())
                }
                Err(err) => Err(err),
            }
        }
        fn describe(&self) -> String {
            format!("mutant provider ({:?})", self.fault)
        }
        fn keeps_anchor(&self) -> bool {
            true
        }
        fn anchor(&self) -> Result<Option<Anchor>, ProviderError> {
            Ok(self.state.lock().expect("lock").anchor)
        }
        fn advance_anchor(&self, anchor: &Anchor) -> Result<(), ProviderError> {
            let mut state = self.state.lock().expect("lock");
            if let Some(kept) = state.anchor
                && self.fault != Fault::AcceptsRegression
                && (anchor.position() < kept.position()
                    || (anchor.position() == kept.position() && anchor.head != kept.head))
            {
                return Err(ProviderError::AnchorRegression {
                    kept,
                    offered: *anchor,
                });
            }
            state.anchor = Some(*anchor);
            Ok(())
        }
    }

    fn passes(fault: Fault) -> bool {
        let state = Arc::new(Mutex::new(State::default()));
        let opened = Mutex::new(0);
        catch_unwind(AssertUnwindSafe(|| {
            run_all(|| {
                let mut count = opened.lock().expect("lock");
                *count += 1;
                if fault == Fault::ForgetsOnReopen && *count > 1 {
                    *state.lock().expect("lock") = State::default();
                }
                Mutant {
                    fault,
                    state: Arc::clone(&state),
                }
            });
        }))
        .is_ok()
    }

    /// The suite is not a formality: a correct provider passes it, and
    /// each fault makes it fail.
    #[test]
    fn the_suite_catches_every_fault() {
        assert!(passes(Fault::None), "the fault-free provider must pass");
        for fault in [
            Fault::ReusesDestroyedIds,
            Fault::ForgetsDestroyed,
            Fault::DestroyedReadsUnknown,
            Fault::IgnoresContext,
            Fault::AcceptsRegression,
            Fault::ForgetsOnReopen,
        ] {
            assert!(!passes(fault), "the suite let {fault:?} pass");
        }
    }
}
