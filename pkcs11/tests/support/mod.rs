//! SoftHSM2 for the tests: one token directory per test process, one token
//! per test.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once, in `C_Initialize`, and a module is
//! initialised once per process (a second `C_Initialize` is refused and the
//! provider never finalises). So a test process cannot give each test its
//! own configuration: the first test to get here writes a configuration
//! whose `directories.tokendir` is in a temporary directory of this
//! process, points `SOFTHSM2_CONF` at it, and every test then initialises
//! its own token (its own label, in the next free slot; SoftHSM2 adds a
//! free slot each time one is taken). Child processes (the crash test's)
//! inherit the variable and see the same tokens.
//!
//! The directory is made under cargo's `CARGO_TARGET_TMPDIR` (the target
//! directory's `tmp/`), not the system's: it lives in a static, which is
//! never dropped, so it outlasts the process; `cargo clean` removes it.
#![allow(dead_code, unsafe_code)]

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, PoisonError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use shredkv_pkcs11::{Pin, Pkcs11Config, StoreLabel};

/// The user PIN of every test token (a test value, not a secret).
pub(crate) const USER_PIN: &str = "4711-user";
const SO_PIN: &str = "4711-so";

/// The module the tests load: `SHREDKV_PKCS11_MODULE`, or SoftHSM2 where
/// Debian installs it.
pub(crate) fn module() -> PathBuf {
    std::env::var_os("SHREDKV_PKCS11_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"))
}

struct Softhsm {
    /// Kept for the life of the process: the tokens live in it (a child's
    /// tokens are its parent's).
    _dir: Option<tempfile::TempDir>,
    pkcs11: Pkcs11,
}

static SOFTHSM: OnceLock<Softhsm> = OnceLock::new();
/// Taking the free slot and initialising it is one step.
static TOKEN_INIT: Mutex<()> = Mutex::new(());

fn softhsm() -> &'static Softhsm {
    SOFTHSM.get_or_init(|| {
        let module = module();
        assert!(
            module.exists(),
            "no PKCS#11 module at {}: install SoftHSM2 (apt-get install softhsm2) or set SHREDKV_PKCS11_MODULE",
            module.display()
        );
        let dir = match std::env::var_os("SOFTHSM2_CONF") {
            // A child of a test: its parent's configuration, already set.
            Some(_) if std::env::var_os(CHILD_MARK).is_some() => None,
            _ => {
                let dir = scratch_dir();
                let tokens = dir.path().join("tokens");
                std::fs::create_dir(&tokens).expect("token dir");
                let conf = dir.path().join("softhsm2.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                        tokens.display()
                    ),
                )
                .expect("write the SoftHSM2 configuration");
                // SAFETY: the only C code in this process that reads the
                // environment concurrently would be the PKCS#11 module, and
                // it is loaded only below, after this call, by the one
                // thread inside this `get_or_init`; Rust's own accesses
                // to the environment are serialised by std.
                unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
                Some(dir)
            }
        };
        let pkcs11 = Pkcs11::new(&module).expect("load the module");
        match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(err) => panic!("C_Initialize: {err}"),
        }
        Softhsm { _dir: dir, pkcs11 }
    })
}

fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("softhsm-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("a scratch directory under the target directory")
}

/// Set in a child process the test started, which must use its parent's
/// configuration instead of writing its own.
pub(crate) const CHILD_MARK: &str = "SHREDKV_PKCS11_TEST_CHILD";

/// Initialises a new token labelled `label` with the test PINs.
pub(crate) fn new_token(label: &str) {
    let softhsm = softhsm();
    let _one_at_a_time = TOKEN_INIT.lock().unwrap_or_else(PoisonError::into_inner);
    let pkcs11 = &softhsm.pkcs11;
    let slot = pkcs11
        .get_all_slots()
        .expect("slots")
        .into_iter()
        .find(|slot| {
            pkcs11
                .get_token_info(*slot)
                .is_ok_and(|info| !info.token_initialized())
        })
        .expect("SoftHSM2 always has a free slot");
    let so_pin = AuthPin::from(SO_PIN);
    pkcs11
        .init_token(slot, &so_pin, label)
        .expect("C_InitToken");
    // The slot is now the token's; find it by label (SoftHSM2 renumbers).
    let slot = pkcs11
        .get_slots_with_initialized_token()
        .expect("slots")
        .into_iter()
        .find(|slot| {
            pkcs11
                .get_token_info(*slot)
                .is_ok_and(|info| info.label().trim_end() == label)
        })
        .expect("the new token");
    let session = pkcs11.open_rw_session(slot).expect("session");
    session
        .login(UserType::So, Some(&so_pin))
        .expect("SO login");
    session
        .init_pin(&AuthPin::from(USER_PIN))
        .expect("C_InitPIN");
    session.logout().expect("logout");
}

/// Makes sure the module is set up in this process (for a child that only
/// opens tokens its parent made).
pub(crate) fn setup() {
    softhsm();
}

/// A provider configuration for `store` on the token labelled `token`.
pub(crate) fn config(token: &str, store: &str) -> Pkcs11Config {
    Pkcs11Config::new(
        module(),
        token,
        StoreLabel::new(store).expect("store label"),
        Pin::new(USER_PIN.to_owned()),
    )
}
