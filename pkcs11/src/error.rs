//! What can go wrong between the provider and its token.

use std::fmt;
use std::path::PathBuf;

use cryptoki::error::{Error as CkError, RvError};
use shredkv_crypto::ProviderError;

/// A failure to reach or use the token, or a store on it that cannot be
/// trusted. Converts into [`ProviderError`]: corruption into
/// [`ProviderError::Corrupt`], everything else into
/// [`ProviderError::Unavailable`] (never into "destroyed").
#[derive(Debug)]
#[non_exhaustive]
pub enum Pkcs11Error {
    /// The module (the vendor's PKCS#11 library) could not be loaded or
    /// initialised.
    Module {
        /// The module's path.
        module: PathBuf,
        /// The loader's or `C_Initialize`'s failure.
        source: CkError,
    },
    /// No initialised token carries the label.
    TokenNotFound {
        /// The module searched.
        module: PathBuf,
        /// The label asked for.
        token: String,
        /// The labels of the tokens that are there.
        found: Vec<String>,
    },
    /// Several tokens carry the label.
    AmbiguousToken {
        /// The label asked for.
        token: String,
        /// How many tokens carry it.
        count: usize,
    },
    /// The token refused the user PIN (wrong, locked or expired).
    Login {
        /// The token.
        token: String,
        /// The token's answer.
        source: CkError,
    },
    /// The token lacks a mechanism the provider needs.
    MissingMechanism {
        /// The token.
        token: String,
        /// The mechanism's name.
        mechanism: &'static str,
    },
    /// The store label is not acceptable.
    InvalidStoreLabel {
        /// Why.
        detail: String,
    },
    /// The token has no objects for this store label (and the caller asked
    /// not to create them).
    StoreNotFound {
        /// The token.
        token: String,
        /// The store label.
        store: String,
    },
    /// A PKCS#11 call failed.
    Token {
        /// What the provider was doing.
        action: &'static str,
        /// The token.
        token: String,
        /// The call and its return value.
        source: CkError,
    },
    /// Another process created the same epoch at the same moment; both
    /// copies were removed and nothing was acknowledged.
    ConcurrentCreation {
        /// The epoch both took.
        epoch: u32,
    },
    /// The operating system's random number generator failed (no nonce,
    /// so nothing was wrapped).
    Random {
        /// The generator's failure.
        detail: String,
    },
    /// The store's objects on the token contradict each other or are
    /// damaged. Nothing was changed.
    Corrupt {
        /// The token.
        token: String,
        /// The store label.
        store: String,
        /// What is wrong.
        detail: String,
    },
}

impl Pkcs11Error {
    /// Whether the session is worth dropping and opening again (the token
    /// went away, or the module lost its state).
    pub(crate) fn session_lost(&self) -> bool {
        let rv = match self {
            Self::Token {
                source: CkError::Pkcs11(rv, _),
                ..
            } => rv,
            _ => return false,
        };
        matches!(
            rv,
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::UserNotLoggedIn
                | RvError::CryptokiNotInitialized
        )
    }

    /// The action, for [`ProviderError::Unavailable`].
    fn action(&self) -> &'static str {
        match self {
            Self::Module { .. } => "load the PKCS#11 module",
            Self::TokenNotFound { .. } | Self::AmbiguousToken { .. } => "find the token",
            Self::Login { .. } => "log in to the token",
            Self::MissingMechanism { .. } => "check the token's mechanisms",
            Self::InvalidStoreLabel { .. } => "check the store label",
            Self::StoreNotFound { .. } => "find the store's objects on the token",
            Self::Token { action, .. } => action,
            Self::ConcurrentCreation { .. } => "create an epoch key",
            Self::Random { .. } => "draw a nonce",
            Self::Corrupt { .. } => "read the store's objects on the token",
        }
    }

    /// Converts into a [`ProviderError`], as the [`shredkv_crypto::KeyProvider`]
    /// methods report it.
    ///
    /// ```
    /// use shredkv_crypto::ProviderError;
    /// use shredkv_pkcs11::Pkcs11Error;
    ///
    /// let err = Pkcs11Error::AmbiguousToken { token: "hsm".into(), count: 2 };
    /// assert!(matches!(err.into_provider_error(), ProviderError::Unavailable { .. }));
    /// ```
    pub fn into_provider_error(self) -> ProviderError {
        let location = PathBuf::from(match &self {
            Self::Module { module, .. } | Self::TokenNotFound { module, .. } => {
                format!("PKCS#11 module {}", module.display())
            }
            Self::AmbiguousToken { token, .. }
            | Self::Login { token, .. }
            | Self::MissingMechanism { token, .. }
            | Self::StoreNotFound { token, .. }
            | Self::Token { token, .. }
            | Self::Corrupt { token, .. } => format!("PKCS#11 token {token:?}"),
            Self::InvalidStoreLabel { .. }
            | Self::ConcurrentCreation { .. }
            | Self::Random { .. } => "PKCS#11 provider".to_owned(),
        });
        self.into_provider(location)
    }

    /// Converts into a [`ProviderError`] naming `location`.
    pub(crate) fn into_provider(self, location: PathBuf) -> ProviderError {
        match self {
            Self::Corrupt { detail, .. } => ProviderError::Corrupt {
                path: location,
                detail,
            },
            other => ProviderError::Unavailable {
                action: other.action(),
                location,
                source: std::io::Error::other(other),
            },
        }
    }
}

impl fmt::Display for Pkcs11Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Module { module, source } => write!(
                f,
                "could not load the PKCS#11 module {}: {source}; check the path of the HSM vendor's library (--pkcs11-module)",
                module.display()
            ),
            Self::TokenNotFound {
                module,
                token,
                found,
            } => write!(
                f,
                "no initialised token labelled {token:?} in PKCS#11 module {} (tokens there: {found:?}); check the token label and that the HSM is connected",
                module.display()
            ),
            Self::AmbiguousToken { token, count } => write!(
                f,
                "{count} tokens are labelled {token:?}; give each token its own label"
            ),
            Self::Login { token, source } => write!(
                f,
                "token {token:?} refused the user PIN ({}); check SHREDKV_PKCS11_PIN or --pin-file, and that the PIN is not locked",
                rv_name(source)
            ),
            Self::MissingMechanism { token, mechanism } => write!(
                f,
                "token {token:?} does not offer {mechanism}, which the shredkv provider needs; use a token that does"
            ),
            Self::InvalidStoreLabel { detail } => write!(f, "invalid store label: {detail}"),
            Self::StoreNotFound { token, store } => write!(
                f,
                "token {token:?} holds no shredkv store labelled {store:?}; check the store label and token, or create the store with `init`"
            ),
            Self::Token {
                action,
                token,
                source,
            } => write!(f, "token {token:?} failed to {action}: {}", rv_name(source)),
            Self::ConcurrentCreation { epoch } => write!(
                f,
                "another process created epoch {epoch} on the same store label at the same moment; both copies were removed, retry"
            ),
            Self::Random { detail } => write!(
                f,
                "the operating system's random number generator failed ({detail}); nothing was wrapped"
            ),
            Self::Corrupt {
                token,
                store,
                detail,
            } => write!(
                f,
                "the objects of store {store:?} on token {token:?} are inconsistent: {detail}; nothing was changed, check the token's objects (pkcs11-tool --list-objects) before going on"
            ),
        }
    }
}

/// A PKCS#11 failure named by its function and return value, without the
/// specification's paragraph of explanation.
fn rv_name(err: &CkError) -> String {
    match err {
        CkError::Pkcs11(rv, function) => format!("{function:?} returned {rv:?}"),
        other => other.to_string(),
    }
}

impl std::error::Error for Pkcs11Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Module { source, .. }
            | Self::Login { source, .. }
            | Self::Token { source, .. } => Some(source),
            _ => None,
        }
    }
}
