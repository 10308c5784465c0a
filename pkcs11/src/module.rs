//! One loaded and initialised PKCS#11 module per path, for the whole
//! process.
//!
//! `C_Initialize` and `C_Finalize` act on the module for the entire
//! process: a second `C_Initialize` is refused, and a `C_Finalize` would
//! end every other user's sessions. So each module is loaded and
//! initialised once, on first use, and kept until the process exits
//! (never finalised): every provider opened on it shares the one context.
//! A module that another part of the process initialised first
//! (`CKR_CRYPTOKI_ALREADY_INITIALIZED`) is used as it is.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};

use crate::error::Pkcs11Error;

static MODULES: Mutex<Vec<(PathBuf, Pkcs11)>> = Mutex::new(Vec::new());

/// The module at `path`, loaded and initialised.
pub(crate) fn load(path: &Path) -> Result<Pkcs11, Pkcs11Error> {
    // A panic while holding the lock leaves at worst a module not yet in
    // the list; the list itself is always consistent.
    let mut modules = MODULES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, loaded)) = modules.iter().find(|(p, _)| p == path) {
        return Ok(loaded.clone());
    }
    let fail = |source| Pkcs11Error::Module {
        module: path.to_owned(),
        source,
    };
    let pkcs11 = Pkcs11::new(path).map_err(fail)?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(source) => return Err(fail(source)),
    }
    modules.push((path.to_owned(), pkcs11.clone()));
    Ok(pkcs11)
}
