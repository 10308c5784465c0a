//! A shredkv key provider whose epoch keys live in a PKCS#11 token: an HSM,
//! or SoftHSM2 for tests.
//!
//! Epoch keys are generated in the token as non-extractable, sensitive
//! AES-256 keys; the token wraps and unwraps data keys with AES-GCM into
//! the same [`shredkv_crypto::WrappedKey`] format the key file uses, so the
//! engine does not know which provider it has. Destroying an epoch is
//! `C_DestroyObject` of its key. The epoch counter and the store's anchor
//! are data objects in the token; their names and byte formats are in
//! `docs/design.md` ("PKCS#11 provider").
//!
//! ```no_run
//! use std::sync::Arc;
//! use shredkv_crypto::KeyProvider;
//! use shredkv_pkcs11::{Pin, Pkcs11Config, Pkcs11KeyProvider, StoreLabel};
//!
//! let provider = Pkcs11KeyProvider::open_or_create(Pkcs11Config::new(
//!     "/usr/lib/softhsm/libsofthsm2.so",
//!     "shredkv",
//!     StoreLabel::new("orders")?,
//!     Pin::new(std::env::var("SHREDKV_PKCS11_PIN")?),
//! ))?;
//! let provider: Arc<dyn KeyProvider> = Arc::new(provider);
//! println!("{}", provider.describe());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]

mod error;
mod module;
mod objects;
mod pin;
mod provider;

pub use error::Pkcs11Error;
pub use objects::{MAX_STORE_LABEL_LEN, StoreLabel};
pub use pin::Pin;
pub use provider::{Pkcs11Config, Pkcs11KeyProvider};
