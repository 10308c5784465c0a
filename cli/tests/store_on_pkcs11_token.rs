//! The CLI with its keys on a SoftHSM2 token (`--pkcs11-module`): init,
//! put, shred, read back, reopen; the PIN comes from the environment or a
//! file and never shows in any output.
//!
//! The binary is a child process, so each test gives it its own SoftHSM2
//! configuration (`SOFTHSM2_CONF`, a token directory in the test's temp
//! dir) and makes its token with `softhsm2-util`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PIN: &str = "cli-pin-8080";

struct Token {
    dir: tempfile::TempDir,
    conf: PathBuf,
    module: PathBuf,
}

impl Token {
    /// A token labelled `label`, alone in a new token directory.
    fn new(label: &str) -> Self {
        let module = std::env::var_os("SHREDKV_PKCS11_MODULE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"));
        assert!(
            module.exists(),
            "no PKCS#11 module at {}: install SoftHSM2 or set SHREDKV_PKCS11_MODULE",
            module.display()
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .expect("conf");
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", label])
            .args(["--pin", PIN, "--so-pin", "cli-so-pin"])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .expect("run softhsm2-util (apt-get install softhsm2)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir, conf, module }
    }

    fn store(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `shredkv --store STORE --pkcs11-module M --token-label cli
    /// --store-label LABEL args...`, PIN in the environment.
    fn run(&self, store: &Path, label: &str, args: &[&str]) -> Output {
        self.command(store, label, args)
            .env("SHREDKV_PKCS11_PIN", PIN)
            .output()
            .expect("run shredkv")
    }

    fn command(&self, store: &Path, label: &str, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_shredkv"));
        command
            .arg("--store")
            .arg(store)
            .arg("--pkcs11-module")
            .arg(&self.module)
            .args(["--token-label", "cli", "--store-label", label])
            .args(args)
            .env("SOFTHSM2_CONF", &self.conf)
            .env_remove("SHREDKV_STORE")
            .env_remove("SHREDKV_PKCS11_PIN");
        command
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Asserts the exit code and that the PIN is nowhere in the output.
fn exits(output: &Output, code: i32) -> String {
    let all = text(output);
    assert_eq!(output.status.code(), Some(code), "{all}");
    assert!(!all.contains(PIN), "the PIN was printed: {all}");
    all
}

#[test]
fn a_store_on_a_token_puts_shreds_and_reads_back() {
    let token = Token::new("cli");
    let store = token.store("store");
    let init = exits(&token.run(&store, "orders", &["init"]), 0);
    assert!(
        init.contains("PKCS#11 token \"cli\"") && init.contains("orders"),
        "{init}"
    );
    assert!(!store.join("keys").exists(), "no key file is written");
    for (subject, value) in [("keep", "kept value"), ("gone", "erased value")] {
        exits(
            &token.run(
                &store,
                "orders",
                &[
                    "put",
                    subject,
                    "account_profile",
                    "email",
                    value,
                    "--register-account",
                ],
            ),
            0,
        );
    }
    let got = exits(
        &token.run(
            &store,
            "orders",
            &["get", "gone", "account_profile", "email"],
        ),
        0,
    );
    assert_eq!(got, "erased value\n");
    exits(&token.run(&store, "orders", &["shred", "gone"]), 0);
    // Each command is a new process: the token is reopened every time.
    let err = exits(
        &token.run(
            &store,
            "orders",
            &["get", "gone", "account_profile", "email"],
        ),
        4,
    );
    assert!(err.contains("erased"), "{err}");
    let kept = exits(
        &token.run(
            &store,
            "orders",
            &["get", "keep", "account_profile", "email"],
        ),
        0,
    );
    assert_eq!(kept, "kept value\n");

    // Another store label on the same token is another store's keys.
    let err = exits(
        &token.run(
            &store,
            "other",
            &["get", "keep", "account_profile", "email"],
        ),
        7,
    );
    assert!(err.contains("no shredkv store labelled"), "{err}");
    // init refuses a store label the token already holds.
    let err = exits(&token.run(&token.store("second"), "orders", &["init"]), 1);
    assert!(err.contains("already holds a store labelled"), "{err}");
}

#[test]
fn the_pin_comes_from_a_file_or_the_environment_never_the_command_line() {
    let token = Token::new("cli");
    let store = token.store("store");
    let no_pin = token.command(&store, "s", &["init"]).output().expect("run");
    let err = exits(&no_pin, 2);
    assert!(err.contains("SHREDKV_PKCS11_PIN"), "{err}");
    let on_the_command_line = token
        .command(&store, "s", &["--pin", PIN, "init"])
        .output()
        .expect("run");
    assert_eq!(
        on_the_command_line.status.code(),
        Some(2),
        "no --pin option"
    );

    let pin_file = token.dir.path().join("pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).expect("pin file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let open = token
            .command(
                &store,
                "s",
                &["--pin-file", pin_file.to_str().expect("utf-8"), "init"],
            )
            .output()
            .expect("run");
        let err = exits(&open, 7);
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let with_file = token
        .command(
            &store,
            "s",
            &["--pin-file", pin_file.to_str().expect("utf-8"), "init"],
        )
        .output()
        .expect("run");
    exits(&with_file, 0);
    std::fs::write(&pin_file, "wrong-pin\n").expect("pin file");
    let wrong = token
        .command(
            &store,
            "s",
            &["--pin-file", pin_file.to_str().expect("utf-8"), "stats"],
        )
        .output()
        .expect("run");
    let err = exits(&wrong, 7);
    assert!(
        err.contains("refused the user PIN") && !err.contains("wrong-pin"),
        "{err}"
    );
}

/// A store on a token is backed up and restored with its keys staying on
/// the token: from the live store (sharing its keys) and from an exported
/// erasure log; nothing erased after the backup comes back, and the
/// restored store takes the keys over (the store it replaced is refused).
#[test]
fn a_store_on_a_token_is_restored_with_its_keys_on_the_token() {
    let token = Token::new("cli");
    let store = token.store("store");
    exits(&token.run(&store, "orders", &["init"]), 0);
    for subject in ["keep", "gone"] {
        exits(
            &token.run(
                &store,
                "orders",
                &[
                    "put",
                    subject,
                    "account_profile",
                    "email",
                    subject,
                    "--register-account",
                ],
            ),
            0,
        );
    }
    let backup = token.store("backup");
    exits(
        &token.run(
            &store,
            "orders",
            &["backup", backup.to_str().expect("utf-8")],
        ),
        0,
    );
    exits(&token.run(&store, "orders", &["shred", "gone"]), 0);
    let log = token.store("erasures.log");
    exits(
        &token.run(
            &store,
            "orders",
            &["export-erasure-log", log.to_str().expect("utf-8")],
        ),
        0,
    );

    // From an erasure log: the token's keys under the store label, no key file.
    let from_log = token.store("from-log");
    let out = token
        .command(
            &from_log,
            "orders",
            &[
                "restore",
                backup.to_str().expect("utf-8"),
                "--into",
                from_log.to_str().expect("utf-8"),
                "--erasure-log",
                log.to_str().expect("utf-8"),
            ],
        )
        .env_remove("SHREDKV_STORE")
        .env("SHREDKV_PKCS11_PIN", PIN)
        .output()
        .expect("run");
    let said = exits(&out, 0);
    assert!(
        said.contains("--pkcs11-module") && said.contains("--store-label orders"),
        "{said}"
    );
    assert!(!from_log.join("keys").exists(), "no key file is written");
    exits(
        &token.run(
            &from_log,
            "orders",
            &["get", "gone", "account_profile", "email"],
        ),
        4,
    );
    let kept = exits(
        &token.run(
            &from_log,
            "orders",
            &["get", "keep", "account_profile", "email"],
        ),
        0,
    );
    assert_eq!(kept, "keep\n");
    // It took the keys over: the store it came from is refused now.
    exits(
        &token.run(
            &store,
            "orders",
            &["get", "keep", "account_profile", "email"],
        ),
        5,
    );

    // From the (restored) live store: shares its keys.
    let again = token.store("again");
    exits(
        &token.run(
            &from_log,
            "orders",
            &[
                "restore",
                backup.to_str().expect("utf-8"),
                "--into",
                again.to_str().expect("utf-8"),
            ],
        ),
        0,
    );
    exits(
        &token.run(
            &again,
            "orders",
            &["get", "gone", "account_profile", "email"],
        ),
        4,
    );
    exits(
        &token.run(
            &from_log,
            "orders",
            &["get", "keep", "account_profile", "email"],
        ),
        5,
    );
}
