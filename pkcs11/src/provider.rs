//! The provider: epoch keys as AES-256 keys in a PKCS#11 token.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use rand::TryRng as _;
use shredkv_crypto::{
    Anchor, DataKey, EpochId, KEY_LEN, KeyProvider, ProviderError, WrapContext, WrappedKey,
};
use zeroize::Zeroize;

use crate::error::Pkcs11Error;
use crate::objects::{self, StoreLabel};
use crate::pin::Pin;

const APPLICATION: &[u8] = b"shredkv";
const TAG_BITS: u64 = 128;

/// Where the provider finds its token and store: the module (the HSM
/// vendor's PKCS#11 library), the token's label, the store label that
/// separates this store's objects from others on the token, and the user
/// PIN.
///
/// ```
/// use shredkv_pkcs11::{Pin, Pkcs11Config, StoreLabel};
///
/// let config = Pkcs11Config::new(
///     "/usr/lib/softhsm/libsofthsm2.so",
///     "shredkv",
///     StoreLabel::new("orders")?,
///     Pin::new(std::env::var("SHREDKV_PKCS11_PIN").unwrap_or_default()),
/// );
/// assert!(!format!("{config:?}").contains("PIN="));
/// # Ok::<(), String>(())
/// ```
#[derive(Debug)]
pub struct Pkcs11Config {
    module: PathBuf,
    token: String,
    store: StoreLabel,
    pin: Pin,
}

impl Pkcs11Config {
    /// A configuration for the token labelled `token` in `module`.
    pub fn new(
        module: impl Into<PathBuf>,
        token: impl Into<String>,
        store: StoreLabel,
        pin: Pin,
    ) -> Self {
        Self {
            module: module.into(),
            token: token.into(),
            store,
            pin,
        }
    }
}

/// Epoch keys kept in a PKCS#11 token (an HSM), which wraps and unwraps
/// data keys itself: an epoch key never leaves the token, and destroying
/// an epoch is `C_DestroyObject` of its key. The object layout is in
/// `docs/design.md` ("PKCS#11 provider").
///
/// Only one process at a time should change one store label's epochs
/// (the engine's store lock sees to that); two processes creating an epoch
/// at the same moment both fail rather than share an id.
///
/// ```no_run
/// use shredkv_crypto::{DataKey, KeyProvider, WrapContext};
/// use shredkv_pkcs11::{Pin, Pkcs11Config, Pkcs11KeyProvider, StoreLabel};
///
/// let config = Pkcs11Config::new(
///     "/usr/lib/softhsm/libsofthsm2.so",
///     "shredkv",
///     StoreLabel::new("orders")?,
///     Pin::new(std::env::var("SHREDKV_PKCS11_PIN")?),
/// );
/// let provider = Pkcs11KeyProvider::open_or_create(config)?;
/// let epoch = provider.create_epoch()?;
/// let wrapped = provider.wrap(epoch, &WrapContext::StoreSecret, &DataKey::generate())?;
/// provider.destroy_epoch(epoch)?;
/// assert!(provider.unwrap(&WrapContext::StoreSecret, &wrapped).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Pkcs11KeyProvider {
    module: PathBuf,
    token: String,
    store: StoreLabel,
    pin: Pin,
    pkcs11: Pkcs11,
    /// The logged-in session; `None` after the token went away, until the
    /// next call opens a new one.
    session: Mutex<Option<Session>>,
}

impl fmt::Debug for Pkcs11KeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11KeyProvider")
            .field("module", &self.module)
            .field("token", &self.token)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// The two blocks of a pair, as found: handle and decoded value of each.
struct Pair<T> {
    handles: [Option<ObjectHandle>; 2],
    values: [Option<T>; 2],
}

impl<T: Copy> Pair<T> {
    fn newest<K: Ord>(&self, order: impl Fn(&T) -> K) -> Option<(T, usize)> {
        objects::newest(self.values, order)
    }

    fn present(&self) -> usize {
        self.handles.iter().flatten().count()
    }
}

impl Pkcs11KeyProvider {
    /// Opens the store's objects on the token, creating them (an empty
    /// store: no epochs, no anchor) if the token has none for this store
    /// label.
    ///
    /// # Errors
    /// The module cannot be loaded, the token is not there or refuses the
    /// PIN, lacks AES-GCM, or holds damaged or contradictory objects for
    /// this store label.
    pub fn open_or_create(config: Pkcs11Config) -> Result<Self, Pkcs11Error> {
        Self::open_with(config, true)
    }

    /// Opens the store's objects on the token; refuses a store label the
    /// token has no objects for.
    ///
    /// # Errors
    /// As [`Pkcs11KeyProvider::open_or_create`], and
    /// [`Pkcs11Error::StoreNotFound`].
    pub fn open(config: Pkcs11Config) -> Result<Self, Pkcs11Error> {
        Self::open_with(config, false)
    }

    fn open_with(config: Pkcs11Config, create: bool) -> Result<Self, Pkcs11Error> {
        let Pkcs11Config {
            module,
            token,
            store,
            pin,
        } = config;
        let pkcs11 = crate::module::load(&module)?;
        let provider = Self {
            module,
            token,
            store,
            pin,
            pkcs11,
            session: Mutex::new(None),
        };
        provider.with_session(|session| {
            provider.check_mechanisms()?;
            provider.initialise(session, create)?;
            // Reads everything once, so a damaged store is refused here.
            provider.counter(session)?;
            provider.anchor_pair(session)?;
            provider.epochs(session)?;
            Ok(())
        })?;
        Ok(provider)
    }

    /// Where the provider is, for errors: token, module and store label.
    fn location(&self) -> PathBuf {
        PathBuf::from(format!(
            "PKCS#11 token {:?} (module {}, store label {:?})",
            self.token,
            self.module.display(),
            self.store.as_str()
        ))
    }

    fn lock(&self) -> MutexGuard<'_, Option<Session>> {
        // The session holds no state of ours that a panic could leave half
        // changed; a poisoned lock is still safe to use.
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the logged-in session, opening one if needed; drops a
    /// session the token no longer knows, so the next call opens another.
    fn with_session<T>(
        &self,
        f: impl FnOnce(&Session) -> Result<T, Pkcs11Error>,
    ) -> Result<T, Pkcs11Error> {
        let mut guard = self.lock();
        let session = match guard.take() {
            Some(session) => session,
            None => self.login()?,
        };
        let result = f(&session);
        if !matches!(&result, Err(err) if err.session_lost()) {
            *guard = Some(session);
        }
        result
    }

    /// Runs `f` and converts its error for the [`KeyProvider`] trait.
    fn run<T>(
        &self,
        f: impl FnOnce(&Session) -> Result<T, Pkcs11Error>,
    ) -> Result<T, ProviderError> {
        self.with_session(f)
            .map_err(|err| err.into_provider(self.location()))
    }

    fn token_error(&self, action: &'static str) -> impl Fn(CkError) -> Pkcs11Error + '_ {
        move |source| Pkcs11Error::Token {
            action,
            token: self.token.clone(),
            source,
        }
    }

    fn corrupt(&self, detail: String) -> Pkcs11Error {
        Pkcs11Error::Corrupt {
            token: self.token.clone(),
            store: self.store.to_string(),
            detail,
        }
    }

    fn slot(&self) -> Result<Slot, Pkcs11Error> {
        let slots = self
            .pkcs11
            .get_slots_with_initialized_token()
            .map_err(self.token_error("list the module's slots"))?;
        let mut matching = Vec::new();
        let mut found = Vec::new();
        for slot in slots {
            let info = self
                .pkcs11
                .get_token_info(slot)
                .map_err(self.token_error("read a token's label"))?;
            let label = info.label().trim_end().to_owned();
            if label == self.token {
                matching.push(slot);
            }
            found.push(label);
        }
        match matching.as_slice() {
            [slot] => Ok(*slot),
            [] => Err(Pkcs11Error::TokenNotFound {
                module: self.module.clone(),
                token: self.token.clone(),
                found,
            }),
            _ => Err(Pkcs11Error::AmbiguousToken {
                token: self.token.clone(),
                count: matching.len(),
            }),
        }
    }

    fn login(&self) -> Result<Session, Pkcs11Error> {
        let slot = self.slot()?;
        let session = self
            .pkcs11
            .open_rw_session(slot)
            .map_err(self.token_error("open a session"))?;
        match session.login(UserType::User, Some(&self.pin.auth_pin())) {
            // Login is per application and token: another provider in this
            // process may have logged in already.
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(source) => Err(Pkcs11Error::Login {
                token: self.token.clone(),
                source,
            }),
        }
    }

    fn check_mechanisms(&self) -> Result<(), Pkcs11Error> {
        let offered = self
            .pkcs11
            .get_mechanism_list(self.slot()?)
            .map_err(self.token_error("list the token's mechanisms"))?;
        for (mechanism, name) in [
            (MechanismType::AES_KEY_GEN, "CKM_AES_KEY_GEN"),
            (MechanismType::AES_GCM, "CKM_AES_GCM"),
        ] {
            if !offered.contains(&mechanism) {
                return Err(Pkcs11Error::MissingMechanism {
                    token: self.token.clone(),
                    mechanism: name,
                });
            }
        }
        Ok(())
    }

    fn find(
        &self,
        session: &Session,
        template: &[Attribute],
    ) -> Result<Vec<ObjectHandle>, Pkcs11Error> {
        session
            .find_objects(template)
            .map_err(self.token_error("search the token's objects"))
    }

    fn data_template(label: &str) -> Vec<Attribute> {
        vec![
            Attribute::Class(ObjectClass::DATA),
            Attribute::Label(label.as_bytes().to_vec()),
        ]
    }

    /// The data object labelled `label`: `None` if absent, an error if
    /// there are several.
    fn find_data(
        &self,
        session: &Session,
        label: &str,
    ) -> Result<Option<ObjectHandle>, Pkcs11Error> {
        match self.find(session, &Self::data_template(label))?.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            many => Err(self.corrupt(format!(
                "{} data objects are labelled {label:?}",
                many.len()
            ))),
        }
    }

    fn read_value(&self, session: &Session, handle: ObjectHandle) -> Result<Vec<u8>, Pkcs11Error> {
        let attributes = session
            .get_attributes(handle, &[AttributeType::Value])
            .map_err(self.token_error("read a data object"))?;
        Ok(attributes
            .into_iter()
            .find_map(|a| match a {
                Attribute::Value(v) => Some(v),
                _ => None,
            })
            .unwrap_or_default())
    }

    fn read_pair<T>(
        &self,
        session: &Session,
        label: impl Fn(usize) -> String,
        decode: impl Fn(&[u8]) -> Option<T>,
    ) -> Result<Pair<T>, Pkcs11Error> {
        let mut pair = Pair {
            handles: [None, None],
            values: [None, None],
        };
        for block in 0..2 {
            if let Some(handle) = self.find_data(session, &label(block))? {
                pair.handles[block] = Some(handle);
                pair.values[block] = decode(&self.read_value(session, handle)?);
            }
        }
        Ok(pair)
    }

    /// Writes `value` to a block. Tokens may refuse to change a data
    /// object's `CKA_VALUE` (SoftHSM2 does), so the block's object is
    /// destroyed and created anew: a crash in between leaves the block
    /// missing, which reads as damaged, while the other block keeps the
    /// newest value; the next write creates it again.
    fn write_block(
        &self,
        session: &Session,
        handle: Option<ObjectHandle>,
        label: &str,
        value: &[u8],
    ) -> Result<(), Pkcs11Error> {
        if let Some(handle) = handle {
            session
                .destroy_object(handle)
                .map_err(self.token_error("replace a data object"))?;
        }
        self.create_data(session, label, value)
    }

    fn create_data(&self, session: &Session, label: &str, value: &[u8]) -> Result<(), Pkcs11Error> {
        session
            .create_object(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Application(APPLICATION.to_vec()),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Value(value.to_vec()),
            ])
            .map(|_| ())
            .map_err(self.token_error("create a data object"))
    }

    fn counter_pair(&self, session: &Session) -> Result<Pair<u32>, Pkcs11Error> {
        self.read_pair(session, |b| self.store.counter(b), objects::decode_counter)
    }

    fn anchor_pair(&self, session: &Session) -> Result<Pair<Option<Anchor>>, Pkcs11Error> {
        let pair = self.read_pair(session, |b| self.store.anchor(b), objects::decode_anchor)?;
        if pair.newest(|a| a.map(|a| a.position())).is_none() {
            return Err(self.corrupt("both anchor objects are damaged or missing".into()));
        }
        Ok(pair)
    }

    /// The next epoch id and the counter block to write it to.
    fn counter(&self, session: &Session) -> Result<(u32, usize, Pair<u32>), Pkcs11Error> {
        let pair = self.counter_pair(session)?;
        let (next, block) = pair.newest(|n| *n).ok_or_else(|| {
            self.corrupt("both epoch counter objects are damaged or missing".into())
        })?;
        Ok((next, block, pair))
    }

    /// Creates the store's data objects where none exist. An initialisation
    /// a crash interrupted (some objects, all still at their initial values,
    /// no epoch key) is completed; anything else missing is corruption, as
    /// starting the counter over could reuse an epoch id.
    fn initialise(&self, session: &Session, create: bool) -> Result<(), Pkcs11Error> {
        let counter = self.counter_pair(session)?;
        let anchor = self.read_pair(session, |b| self.store.anchor(b), objects::decode_anchor)?;
        if counter.present() == 2 && anchor.present() == 2 {
            return Ok(());
        }
        let keys = self.find(session, &self.epoch_template())?;
        let untouched = keys.is_empty()
            && counter
                .handles
                .iter()
                .zip(counter.values)
                .all(|(h, v)| h.is_none() || v == Some(1))
            && anchor
                .handles
                .iter()
                .zip(anchor.values)
                .all(|(h, v)| h.is_none() || v == Some(None));
        let fresh = counter.present() == 0 && anchor.present() == 0 && keys.is_empty();
        if fresh && !create {
            return Err(Pkcs11Error::StoreNotFound {
                token: self.token.clone(),
                store: self.store.to_string(),
            });
        }
        if !untouched {
            // A pair with one object missing is a block a crash lost; the
            // other one holds the value and the next write recreates it.
            if counter.present() >= 1 && anchor.present() >= 1 {
                return Ok(());
            }
            return Err(self.corrupt(format!(
                "the {} objects are missing while the store has epochs or an anchor",
                if counter.present() == 0 {
                    "epoch counter"
                } else {
                    "anchor"
                }
            )));
        }
        for block in 0..2 {
            if anchor.handles[block].is_none() {
                self.create_data(
                    session,
                    &self.store.anchor(block),
                    &objects::encode_anchor(None),
                )?;
            }
        }
        // The counter last: its presence says the store exists.
        for block in [1, 0] {
            if counter.handles[block].is_none() {
                self.create_data(
                    session,
                    &self.store.counter(block),
                    &objects::encode_counter(1),
                )?;
            }
        }
        Ok(())
    }

    /// The search template of this store's epoch keys.
    fn epoch_template(&self) -> Vec<Attribute> {
        vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Id(self.store.epoch_key_id()),
        ]
    }

    /// The live epochs, ascending, read from the keys' labels.
    fn epochs(&self, session: &Session) -> Result<Vec<u32>, Pkcs11Error> {
        let mut epochs = Vec::new();
        for handle in self.find(session, &self.epoch_template())? {
            let attributes = session
                .get_attributes(handle, &[AttributeType::Label])
                .map_err(self.token_error("read an epoch key's label"))?;
            let label = attributes.into_iter().find_map(|a| match a {
                Attribute::Label(l) => Some(l),
                _ => None,
            });
            let epoch = label
                .as_deref()
                .and_then(|l| self.store.parse_epoch_key(l))
                .ok_or_else(|| {
                    self.corrupt(format!(
                        "a key of this store is labelled {:?}, not shredkv/{}/epoch/<id>",
                        String::from_utf8_lossy(label.as_deref().unwrap_or_default()),
                        self.store
                    ))
                })?;
            epochs.push(epoch);
        }
        epochs.sort_unstable();
        epochs.dedup();
        Ok(epochs)
    }

    /// The key of `epoch`, or why there is none.
    fn epoch_key(
        &self,
        session: &Session,
        epoch: EpochId,
    ) -> Result<Result<ObjectHandle, ProviderError>, Pkcs11Error> {
        let handles = self.find(
            session,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(self.store.epoch_key(epoch.0).into_bytes()),
            ],
        )?;
        match handles.as_slice() {
            [handle] => Ok(Ok(*handle)),
            [] => {
                let (next, _, _) = self.counter(session)?;
                Ok(Err(if epoch.0 >= 1 && epoch.0 < next {
                    ProviderError::EpochDestroyed { epoch }
                } else {
                    ProviderError::UnknownEpoch { epoch }
                }))
            }
            many => Err(self.corrupt(format!("{} keys are labelled as {epoch}", many.len()))),
        }
    }
}

impl Pkcs11KeyProvider {
    /// Whether `key` seals and opens a probe: tells a failed decryption of
    /// tampered input from a token that fails every decryption.
    fn key_works(&self, session: &Session, key: ObjectHandle) -> Result<bool, Pkcs11Error> {
        let probe = [0x5au8; KEY_LEN];
        let mut nonce = self.nonce()?;
        let params = GcmParams::new(&mut nonce, b"shredkv/probe", TAG_BITS.into())
            .map_err(self.token_error("set up AES-GCM"))?;
        let Ok(sealed) = session.encrypt(&Mechanism::AesGcm(params), key, &probe) else {
            return Ok(false);
        };
        let params = GcmParams::new(&mut nonce, b"shredkv/probe", TAG_BITS.into())
            .map_err(self.token_error("set up AES-GCM"))?;
        Ok(session
            .decrypt(&Mechanism::AesGcm(params), key, &sealed)
            .is_ok_and(|opened| opened == probe))
    }

    /// A fresh GCM nonce from the operating system's generator.
    fn nonce(&self) -> Result<[u8; 12], Pkcs11Error> {
        let mut nonce = [0u8; 12];
        rand::rngs::SysRng
            .try_fill_bytes(&mut nonce)
            .map_err(|err| Pkcs11Error::Random {
                detail: err.to_string(),
            })?;
        Ok(nonce)
    }
}

/// Runs a lookup that may end in a provider-level answer (destroyed,
/// unknown) rather than a token failure.
fn flatten<T>(result: Result<Result<T, ProviderError>, ProviderError>) -> Result<T, ProviderError> {
    result.and_then(|inner| inner)
}

impl KeyProvider for Pkcs11KeyProvider {
    fn create_epoch(&self) -> Result<EpochId, ProviderError> {
        self.run(|session| {
            let (epoch, block, pair) = self.counter(session)?;
            let next = epoch
                .checked_add(1)
                .ok_or_else(|| self.corrupt("epoch ids are exhausted".into()))?;
            // The id is taken before the key exists: a crash in between
            // leaves an id without a key (read as destroyed), never a key
            // whose id could be handed out again.
            self.write_block(
                session,
                pair.handles[block],
                &self.store.counter(block),
                &objects::encode_counter(next),
            )?;
            let label = self.store.epoch_key(epoch).into_bytes();
            let key = session
                .generate_key(
                    &Mechanism::AesKeyGen,
                    &[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::AES),
                        Attribute::ValueLen(32.into()),
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::Modifiable(false),
                        Attribute::Encrypt(true),
                        Attribute::Decrypt(true),
                        Attribute::Wrap(false),
                        Attribute::Unwrap(false),
                        Attribute::Derive(false),
                        Attribute::Sign(false),
                        Attribute::Verify(false),
                        Attribute::Label(label.clone()),
                        Attribute::Id(self.store.epoch_key_id()),
                    ],
                )
                .map_err(self.token_error("generate an epoch key"))?;
            let same = self.find(
                session,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::Label(label),
                ],
            )?;
            if same.len() != 1 {
                session
                    .destroy_object(key)
                    .map_err(self.token_error("remove a duplicate epoch key"))?;
                return Err(Pkcs11Error::ConcurrentCreation { epoch });
            }
            Ok(EpochId(epoch))
        })
    }

    fn live_epochs(&self) -> Result<Vec<EpochId>, ProviderError> {
        self.run(|session| Ok(self.epochs(session)?.into_iter().map(EpochId).collect()))
    }

    fn wrap(
        &self,
        epoch: EpochId,
        context: &WrapContext,
        key: &DataKey,
    ) -> Result<WrappedKey, ProviderError> {
        flatten(self.run(|session| {
            let handle = match self.epoch_key(session, epoch)? {
                Ok(handle) => handle,
                Err(missing) => return Ok(Err(missing)),
            };
            let mut nonce = self.nonce()?;
            let nonce_used = nonce;
            let aad = context.associated_data(epoch);
            let params = GcmParams::new(&mut nonce, &aad, TAG_BITS.into())
                .map_err(self.token_error("set up AES-GCM"))?;
            let sealed = session
                .encrypt(&Mechanism::AesGcm(params), handle, key.expose_secret())
                .map_err(self.token_error("wrap a data key"))?;
            let (Some(body), Some(tag)) = (sealed.get(..KEY_LEN), sealed.get(KEY_LEN..)) else {
                return Err(
                    self.corrupt(format!("the token sealed 32 bytes into {}", sealed.len()))
                );
            };
            let (Ok(body), Ok(tag)) = (body.try_into(), tag.try_into()) else {
                return Err(
                    self.corrupt(format!("the token sealed 32 bytes into {}", sealed.len()))
                );
            };
            Ok(Ok(WrappedKey::from_parts(epoch, nonce_used, body, tag)))
        }))
    }

    fn unwrap(
        &self,
        context: &WrapContext,
        wrapped: &WrappedKey,
    ) -> Result<DataKey, ProviderError> {
        let epoch = wrapped.epoch();
        flatten(self.run(|session| {
            let handle = match self.epoch_key(session, epoch)? {
                Ok(handle) => handle,
                Err(missing) => return Ok(Err(missing)),
            };
            let mut nonce = wrapped.nonce();
            let aad = context.associated_data(epoch);
            let params = GcmParams::new(&mut nonce, &aad, TAG_BITS.into())
                .map_err(self.token_error("set up AES-GCM"))?;
            let mut plain = match session.decrypt(
                &Mechanism::AesGcm(params),
                handle,
                &wrapped.sealed_key_and_tag(),
            ) {
                Ok(plain) => plain,
                Err(CkError::Pkcs11(
                    RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange,
                    _,
                )) => return Ok(Err(ProviderError::Authentication)),
                // SoftHSM2 reports a failed tag as CKR_GENERAL_ERROR; it is
                // taken as such only if the key still seals and opens.
                Err(
                    source @ CkError::Pkcs11(RvError::GeneralError | RvError::FunctionFailed, _),
                ) => {
                    return if self.key_works(session, handle)? {
                        Ok(Err(ProviderError::Authentication))
                    } else {
                        Err(self.token_error("unwrap a data key")(source))
                    };
                }
                Err(source) => return Err(self.token_error("unwrap a data key")(source)),
            };
            let key = <[u8; KEY_LEN]>::try_from(plain.as_slice())
                .ok()
                .map(DataKey::from_bytes);
            plain.zeroize();
            Ok(key.ok_or(ProviderError::Authentication))
        }))
    }

    fn destroy_epoch(&self, epoch: EpochId) -> Result<(), ProviderError> {
        flatten(self.run(|session| {
            let handle = match self.epoch_key(session, epoch)? {
                Ok(handle) => handle,
                Err(ProviderError::EpochDestroyed { .. }) => return Ok(Ok(())),
                Err(other) => return Ok(Err(other)),
            };
            session
                .destroy_object(handle)
                .map_err(self.token_error("destroy an epoch key"))?;
            // Confirmed by the token, not assumed from the call's success.
            match self.epoch_key(session, epoch)? {
                Err(ProviderError::EpochDestroyed { .. }) => Ok(Ok(())),
                _ => Err(self.corrupt(format!(
                    "{epoch}'s key is still on the token after C_DestroyObject"
                ))),
            }
        }))
    }

    fn describe(&self) -> String {
        format!(
            "PKCS#11 key provider: token {:?} via module {}, store label {:?}",
            self.token,
            self.module.display(),
            self.store.as_str()
        )
    }

    fn keeps_anchor(&self) -> bool {
        true
    }

    fn anchor(&self) -> Result<Option<Anchor>, ProviderError> {
        self.run(|session| {
            let pair = self.anchor_pair(session)?;
            Ok(pair
                .newest(|a| a.map(|a| a.position()))
                .and_then(|(a, _)| a))
        })
    }

    fn advance_anchor(&self, anchor: &Anchor) -> Result<(), ProviderError> {
        flatten(self.run(|session| {
            let pair = self.anchor_pair(session)?;
            let Some((kept, block)) = pair.newest(|a| a.map(|a| a.position())) else {
                return Err(self.corrupt("both anchor objects are damaged or missing".into()));
            };
            if let Some(kept) = kept {
                if anchor.position() < kept.position()
                    || (anchor.position() == kept.position() && anchor.head != kept.head)
                {
                    return Ok(Err(ProviderError::AnchorRegression {
                        kept,
                        offered: *anchor,
                    }));
                }
                if *anchor == kept {
                    return Ok(Ok(()));
                }
            }
            self.write_block(
                session,
                pair.handles[block],
                &self.store.anchor(block),
                &objects::encode_anchor(Some(anchor)),
            )?;
            Ok(Ok(()))
        }))
    }
}
