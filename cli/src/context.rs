//! The global options and how a command opens its store.
//!
//! `Db::open` creates a store where there is none, which is right for
//! `init` and wrong for every other command: a typo in `--store` must not
//! create an empty store. So the CLI checks that the store exists (and
//! detects its backend) before it opens it. The engine itself refuses to
//! replace a missing key file, to open a store with another store's key
//! file (`KeysDoNotMatch`) and to start over a store whose data files are
//! gone (`StoreDataMissing`); [`crate::exit`] gives those their codes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use shredkv::{Backend, Config, Db, Error, Policy};
use shredkv_pkcs11::{Pin, Pkcs11Config, Pkcs11Error, Pkcs11KeyProvider, StoreLabel};

use crate::access::{LiveStore, StoreAccess};
use crate::exit::{CliError, Code};

/// The storage backends, as spelled on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BackendArg {
    /// sled 0.34.7 (files in `DIR/sled/`).
    Sled,
    /// redb (one file, `DIR/store.redb`).
    Redb,
    /// A namespace of an etcd cluster (`--endpoints`, `--namespace`); DIR
    /// keeps the key file and the lock (a build with `--features etcd`).
    #[cfg(feature = "etcd")]
    Etcd,
}

impl From<BackendArg> for Backend {
    fn from(arg: BackendArg) -> Self {
        match arg {
            BackendArg::Sled => Backend::Sled,
            BackendArg::Redb => Backend::Redb,
            #[cfg(feature = "etcd")]
            BackendArg::Etcd => Backend::Etcd,
        }
    }
}

/// Options every command accepts.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Global {
    /// The store directory (required except for `demo`, `policy check` and
    /// `restore --erasure-log`).
    #[arg(long, global = true, env = "SHREDKV_STORE", value_name = "DIR")]
    pub(crate) store: Option<PathBuf>,

    /// The storage backend [default: redb; an existing store's own backend is detected].
    #[arg(long, global = true, value_enum, value_name = "BACKEND")]
    pub(crate) backend: Option<BackendArg>,

    /// The key file, outside the store directory and off its backup volume
    /// [default: DIR/keys, refused unless --allow-key-file-in-store].
    #[arg(long, global = true, env = "SHREDKV_KEY_FILE", value_name = "PATH")]
    pub(crate) key_file: Option<PathBuf>,

    /// Accept a key file inside the store directory (tests and demos only:
    /// every copy of the store would carry the keys that decrypt it).
    #[arg(long, global = true, env = "SHREDKV_ALLOW_KEY_FILE_IN_STORE")]
    pub(crate) allow_key_file_in_store: bool,

    /// Keep the epoch keys in an HSM: the PKCS#11 module (the vendor's
    /// library, e.g. /usr/lib/softhsm/libsofthsm2.so) instead of a key file.
    /// The user PIN comes from SHREDKV_PKCS11_PIN or --pin-file, never from
    /// the command line.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        requires_all = ["token_label", "store_label"],
        conflicts_with = "key_file"
    )]
    pub(crate) pkcs11_module: Option<PathBuf>,

    /// The label of the PKCS#11 token holding the store's keys.
    #[arg(long, global = true, value_name = "LABEL", requires = "pkcs11_module")]
    pub(crate) token_label: Option<String>,

    /// The name of this store's keys on the token (several stores may share
    /// one token): 1 to 64 of A-Z a-z 0-9 - _ .
    #[arg(long, global = true, value_name = "LABEL", requires = "pkcs11_module")]
    pub(crate) store_label: Option<String>,

    /// A file whose first line is the token's user PIN (owner-only
    /// permissions) [default: the SHREDKV_PKCS11_PIN environment variable].
    #[arg(long, global = true, value_name = "PATH", requires = "pkcs11_module")]
    pub(crate) pin_file: Option<PathBuf>,

    /// The retention policy file [default: the embedded default policy].
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) policy: Option<PathBuf>,

    /// Operate a live store through the admin socket of the application
    /// holding it open [default: DIR/admin.sock, when it exists].
    #[arg(long, global = true, env = "SHREDKV_ADMIN_SOCKET", value_name = "PATH")]
    pub(crate) admin_socket: Option<PathBuf>,

    /// Machine output: one JSON document (JSON Lines for `export`).
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// With `--backend etcd`: the cluster's client URLs, comma-separated
    /// (http://host:port,...).
    #[cfg(feature = "etcd")]
    #[arg(
        long,
        global = true,
        env = "SHREDKV_ETCD_ENDPOINTS",
        value_delimiter = ',',
        value_name = "URLS"
    )]
    pub(crate) endpoints: Vec<String>,

    /// With `--backend etcd`: the store's key prefix in the cluster; no
    /// other store may use it or a prefix of it.
    #[cfg(feature = "etcd")]
    #[arg(
        long,
        global = true,
        env = "SHREDKV_ETCD_NAMESPACE",
        value_name = "PREFIX"
    )]
    pub(crate) namespace: Option<String>,

    /// With `--backend etcd`: the cluster's --max-txn-ops.
    #[cfg(feature = "etcd")]
    #[arg(long, global = true, default_value_t = 128, value_name = "N")]
    pub(crate) max_txn_ops: usize,

    /// With `--backend etcd`: the cluster's --max-request-bytes (etcd's
    /// default 1.5 MiB); an erasure of an account whose marker would take
    /// more than half of it is refused (docs/scale-out.md).
    #[cfg(feature = "etcd")]
    #[arg(long, global = true, default_value_t = 1_572_864, value_name = "BYTES")]
    pub(crate) max_request_bytes: usize,
}

/// The admin socket's default name inside a store directory.
pub(crate) const ADMIN_SOCKET: &str = "admin.sock";

/// The sled backend's directory inside a store directory.
const SLED_DIR: &str = "sled";
/// The redb backend's file inside a store directory.
const REDB_FILE: &str = "store.redb";

impl Global {
    /// The store directory, or a usage error naming the option.
    pub(crate) fn store_dir(&self) -> Result<&Path> {
        self.store.as_deref().ok_or_else(|| {
            CliError::new(
                Code::Usage,
                "this command needs a store: pass --store DIR or set SHREDKV_STORE",
            )
            .into()
        })
    }

    /// The key file of the store in `dir`.
    pub(crate) fn key_file_for(&self, dir: &Path) -> PathBuf {
        self.key_file.clone().unwrap_or_else(|| dir.join("keys"))
    }

    /// What keeps the store's keys, for reports: the key file, or the
    /// PKCS#11 token and store label.
    pub(crate) fn keys_description(&self, dir: &Path) -> String {
        match (&self.pkcs11_module, &self.token_label, &self.store_label) {
            (Some(module), Some(token), Some(store)) => format!(
                "PKCS#11 token {token:?} (module {}), store label {store:?}",
                module.display()
            ),
            _ => self.key_file_for(dir).display().to_string(),
        }
    }

    /// The options that name the store's keys, as a command line needs them
    /// (`--key-file PATH`, or the PKCS#11 module, token and store label).
    pub(crate) fn keys_arguments(&self, dir: &Path) -> String {
        match (&self.pkcs11_module, &self.token_label, &self.store_label) {
            (Some(module), Some(token), Some(store)) => format!(
                "--pkcs11-module {} --token-label {token} --store-label {store}",
                module.display()
            ),
            _ => format!("--key-file {}", self.key_file_for(dir).display()),
        }
    }

    /// The PKCS#11 configuration, if `--pkcs11-module` was given.
    fn pkcs11_config(&self) -> Result<Option<Pkcs11Config>> {
        let (Some(module), Some(token), Some(store)) =
            (&self.pkcs11_module, &self.token_label, &self.store_label)
        else {
            return Ok(None);
        };
        let store = StoreLabel::new(store)
            .map_err(|detail| CliError::new(Code::Usage, format!("--store-label: {detail}")))?;
        let pin = match &self.pin_file {
            Some(file) => {
                check_pin_file_permissions(file)?;
                let text =
                    zeroize::Zeroizing::new(std::fs::read_to_string(file).map_err(|err| {
                        CliError::new(
                            Code::KeyProvider,
                            format!("cannot read the PIN file {}: {err}", file.display()),
                        )
                    })?);
                Pin::from_file_text(&text).ok_or_else(|| {
                    CliError::new(
                        Code::KeyProvider,
                        format!("the PIN file {} is empty", file.display()),
                    )
                })?
            }
            None => match std::env::var("SHREDKV_PKCS11_PIN") {
                Ok(pin) if !pin.is_empty() => Pin::new(pin),
                _ => {
                    return Err(CliError::new(
                        Code::Usage,
                        "--pkcs11-module needs the token's user PIN: set SHREDKV_PKCS11_PIN or pass --pin-file",
                    )
                    .into());
                }
            },
        };
        Ok(Some(Pkcs11Config::new(module, token, store, pin)))
    }

    /// Gives `config` its keys: the PKCS#11 token's store (created for
    /// `init`, which refuses a store label already on the token), or the
    /// key file.
    pub(crate) fn with_keys(&self, config: Config, dir: &Path, create: bool) -> Result<Config> {
        let Some(pkcs11) = self.pkcs11_config()? else {
            return Ok(config
                .key_file(self.key_file_for(dir))
                .allow_key_file_in_store(self.allow_key_file_in_store));
        };
        let provider = if create {
            match Pkcs11KeyProvider::open(pkcs11) {
                Ok(_) => {
                    return Err(CliError::new(
                        Code::Failure,
                        format!(
                            "the token already holds a store labelled {:?}; init creates a new store with keys of its own",
                            self.store_label.as_deref().unwrap_or_default()
                        ),
                    )
                    .hint("pass another --store-label")
                    .into());
                }
                Err(Pkcs11Error::StoreNotFound { .. }) => {
                    self.pkcs11_config()?.map(Pkcs11KeyProvider::open_or_create)
                }
                Err(err) => Some(Err(err)),
            }
        } else {
            Some(Pkcs11KeyProvider::open(pkcs11))
        };
        match provider {
            Some(Ok(provider)) => Ok(config.key_provider(Arc::new(provider))),
            Some(Err(err)) => Err(CliError::new(Code::KeyProvider, err.to_string()).into()),
            None => Err(CliError::new(
                Code::Usage,
                "--pkcs11-module needs --token-label and --store-label",
            )
            .into()),
        }
    }

    /// The policy: `--policy FILE`, or the embedded default.
    pub(crate) fn load_policy(&self) -> Result<Policy> {
        Ok(match &self.policy {
            Some(file) => Policy::load(file)?,
            None => Policy::default_policy()?,
        })
    }

    /// The backend of an existing store in `dir`, or a not-found error.
    pub(crate) fn detect_backend(&self, dir: &Path) -> Result<Backend> {
        detect_backend(dir, self.backend.map(Backend::from))
    }

    /// The admin socket of a live store, if one is named (`--admin-socket`,
    /// `SHREDKV_ADMIN_SOCKET`) or present in the store directory; `true`
    /// when it was named explicitly.
    fn admin_socket(&self) -> Option<(PathBuf, bool)> {
        if let Some(socket) = &self.admin_socket {
            return Some((socket.clone(), true));
        }
        let default = self.store.as_ref()?.join(ADMIN_SOCKET);
        default.exists().then_some((default, false))
    }

    /// The store a command operates: live through its application's admin
    /// socket when there is one, else opened here (it must exist; its key
    /// file is checked by the engine). A socket found in the store
    /// directory that nobody listens on (the application has stopped) is
    /// passed over: the store is opened here.
    pub(crate) fn access(&self) -> Result<Box<dyn StoreAccess>> {
        let Some((socket, named)) = self.admin_socket() else {
            return Ok(Box::new(self.open()?));
        };
        let live = match LiveStore::connect(&socket) {
            Ok(live) => live,
            Err(Error::Admin { .. }) if !named && !listening(&socket) => {
                return Ok(Box::new(self.open()?));
            }
            Err(err) => return Err(err.into()),
        };
        if let Some(dir) = &self.store {
            let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
                (Ok(a), Ok(b)) => a == b,
                _ => a == b,
            };
            if !same(dir, &live.path()) {
                return Err(CliError::new(
                    Code::Usage,
                    format!(
                        "the admin socket {} serves the store at {}, not {}",
                        socket.display(),
                        live.path().display(),
                        dir.display()
                    ),
                )
                .hint("pass the --store the application opened, or leave --store out")
                .into());
            }
        }
        self.note_options_a_live_store_ignores(&socket);
        Ok(Box::new(live))
    }

    /// The options that choose how a store is opened (its backend, policy
    /// and key provider) mean nothing to a store the application already
    /// opened: said on stderr, so that no one believes they took effect.
    /// (`--key-file` is left out: it is often set in the environment.)
    fn note_options_a_live_store_ignores(&self, socket: &Path) {
        let ignored: Vec<&str> = [
            ("--backend", self.backend.is_some()),
            ("--policy", self.policy.is_some()),
            ("--pkcs11-module", self.pkcs11_module.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect();
        if !ignored.is_empty() {
            eprintln!(
                "note: {} not used: the store is live, served by its application through {} with the backend, policy and keys it opened",
                ignored.join(", "),
                socket.display()
            );
        }
    }

    /// Refuses `command` when the store is live (an admin socket is named
    /// or in the store directory with an application listening): it needs
    /// the store to itself.
    pub(crate) fn refuse_live(&self, command: &str, instead: &str) -> Result<()> {
        let Some((socket, named)) = self.admin_socket() else {
            return Ok(());
        };
        if named || listening(&socket) {
            return Err(CliError::new(
                Code::Failure,
                format!(
                    "{command} cannot run against a live store: it needs the store to itself, and an application serves it on {}",
                    socket.display()
                ),
            )
            .hint(instead)
            .into());
        }
        Ok(())
    }

    /// `config` with the store's backend: etcd as `--endpoints` and
    /// `--namespace` say; for a new local store (`creating`) the one asked
    /// for (redb by default); for an existing one, the one its directory
    /// holds.
    fn with_backend(&self, config: Config, dir: &Path, creating: bool) -> Result<Config> {
        #[cfg(feature = "etcd")]
        if self.backend == Some(BackendArg::Etcd) {
            let Some(namespace) = self.namespace.as_deref().filter(|n| !n.is_empty()) else {
                return Err(CliError::new(Code::Usage, "--backend etcd needs --namespace")
                    .hint("name the store's key prefix in the cluster, e.g. --namespace shredkv/prod/")
                    .into());
            };
            if self.endpoints.is_empty() {
                return Err(CliError::new(Code::Usage, "--backend etcd needs --endpoints")
                    .hint("give the cluster's client URLs, e.g. --endpoints http://10.0.0.1:2379,http://10.0.0.2:2379")
                    .into());
            }
            // The cluster holds no files to find: an existing store is
            // known by its key file (only `init` may create one).
            let key_file = self.key_file_for(dir);
            if !creating && self.pkcs11_module.is_none() && !key_file.exists() {
                return Err(CliError::new(
                    Code::NotFound,
                    format!(
                        "no etcd store is kept from {}: its key file {} does not exist",
                        dir.display(),
                        key_file.display()
                    ),
                )
                .hint("create the store with `shredkv init`, or pass the --store (or --key-file) it was created with")
                .into());
            }
            return Ok(config
                .etcd(self.endpoints.clone(), namespace, self.max_txn_ops)
                .max_request_bytes(self.max_request_bytes));
        }
        let backend = if creating {
            self.backend.map_or(Backend::Redb, Backend::from)
        } else {
            self.detect_backend(dir)?
        };
        Ok(config.backend(backend))
    }

    /// Opens the existing store: it must exist (its key file is checked by
    /// the engine).
    pub(crate) fn open(&self) -> Result<Db> {
        self.open_with_policy(self.load_policy()?, false)
    }

    /// Opens the existing store with `policy`; `apply_change` accepts a
    /// policy that differs from the store's (an audited policy change).
    pub(crate) fn open_with_policy(&self, policy: Policy, apply_change: bool) -> Result<Db> {
        let dir = self.store_dir()?;
        let config = self
            .with_backend(Config::new(dir), dir, false)?
            .policy(policy)
            .sync_writes(true)
            // One command, then exit: `shredkv compact` runs its pass itself.
            .maintenance_every(None)
            .apply_policy_change(apply_change);
        let config = self.with_keys(config, dir, false)?;
        Ok(Db::open(config)?)
    }
    /// Creates a new store (for `init`): the directory must be absent or empty.
    pub(crate) fn create(&self) -> Result<Db> {
        let dir = self.store_dir()?;
        if dir.exists() {
            let mut entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
                action: "read the store directory",
                path: dir.to_path_buf(),
                source,
            })?;
            if entries.next().is_some() {
                let what = if dir.join(SLED_DIR).exists() || dir.join(REDB_FILE).exists() {
                    "already holds a shredkv store"
                } else {
                    "is not empty"
                };
                return Err(CliError::new(
                    Code::Failure,
                    format!(
                        "{} {what}; init creates a store only in a new or empty directory",
                        dir.display()
                    ),
                )
                .hint("choose another --store directory, or use the existing store as it is")
                .into());
            }
        }
        let policy = self.load_policy()?;
        let config = self
            .with_backend(Config::new(dir), dir, true)?
            .policy(policy)
            .sync_writes(true)
            .maintenance_every(None);
        let config = self.with_keys(config, dir, true)?;
        Db::open(config).map_err(|err| match err {
            Error::StoreDataMissing { key_file, .. } => CliError::new(
                Code::Failure,
                format!(
                    "key file {} already exists; init creates a new store with a new key file",
                    key_file.display()
                ),
            )
            .hint("pass --key-file with a path that does not exist yet; every store has its own key file")
            .into(),
            err => err.into(),
        })
    }
}

/// The backend of an existing store (or backup) in `dir`, or a not-found
/// error; `backend` is what the command line asked for, if anything.
pub(crate) fn detect_backend(dir: &Path, backend: Option<Backend>) -> Result<Backend> {
    let has_sled = dir.join(SLED_DIR).is_dir();
    let has_redb = dir.join(REDB_FILE).is_file();
    let missing = |why: String| -> anyhow::Error {
        CliError::new(
            Code::NotFound,
            format!("no shredkv store at {}: {why}", dir.display()),
        )
        .hint(format!(
            "check --store / SHREDKV_STORE, or create a store with `shredkv --store {} init`",
            dir.display()
        ))
        .into()
    };
    if !dir.exists() {
        return Err(missing("the directory does not exist".into()));
    }
    match (backend, has_sled, has_redb) {
        (None | Some(Backend::Sled), true, _) => Ok(Backend::Sled),
        (None | Some(Backend::Redb), _, true) => Ok(Backend::Redb),
        (Some(Backend::Sled), false, true) => Err(CliError::new(
            Code::NotFound,
            format!(
                "the store at {} is a redb store, not a sled store",
                dir.display()
            ),
        )
        .hint("pass --backend redb (or leave --backend out)")
        .into()),
        (Some(Backend::Redb), true, false) => Err(CliError::new(
            Code::NotFound,
            format!(
                "the store at {} is a sled store, not a redb store",
                dir.display()
            ),
        )
        .hint("pass --backend sled (or leave --backend out)")
        .into()),
        _ => Err(missing(format!(
            "neither {SLED_DIR}/ nor {REDB_FILE} is in that directory"
        ))),
    }
}

/// Whether an application listens on the socket at `path`.
fn listening(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

/// Refuses a PIN file that group or others may read, as the key file is
/// refused.
fn check_pin_file_permissions(file: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file)
            .map_err(|err| {
                CliError::new(
                    Code::KeyProvider,
                    format!("cannot read the PIN file {}: {err}", file.display()),
                )
            })?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(CliError::new(
                Code::KeyProvider,
                format!(
                    "the PIN file {} is readable by others (mode {mode:o})",
                    file.display()
                ),
            )
            .hint(format!("run `chmod 600 {}` and retry", file.display()))
            .into());
        }
    }
    Ok(())
}
