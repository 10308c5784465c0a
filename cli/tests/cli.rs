//! The `shredkv` binary end to end: every subcommand, its exit codes, its
//! JSON output, and what it says about bad input (missing store, bad key
//! file, bad policy, tampered and corrupt data, unknown and erased subjects).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

mod common;
use common::{code, fails_with, json, ok, run_on, shredkv, stderr, stdout};

/// A temporary directory with a store path inside it (not yet created).
struct Fixture {
    dir: tempfile::TempDir,
    store: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = dir.path().join("store");
        Self { dir, store }
    }

    /// A fixture whose store is created.
    fn init() -> Self {
        let f = Self::new();
        ok(&f.run(&["init"]));
        f
    }

    /// A store on sled, for the tests that damage its files with sled itself.
    fn init_sled() -> Self {
        let f = Self::new();
        ok(&f.run(&["--backend", "sled", "init"]));
        f
    }

    /// Runs `shredkv --store STORE args...`.
    fn run(&self, args: &[&str]) -> Output {
        run_on(&self.store, args)
    }

    /// Puts one record, registering the subject as an account.
    fn put_account(&self, subject: &str, class: &str, key: &str, value: &str) {
        ok(&self.run(&["put", subject, class, key, value, "--register-account"]));
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// Flips a bit in the GCM tag of the only record in the sled `data` tree of
/// a closed store; with `recompute_crc` the envelope's CRC is made to match,
/// so the damage reads as tampering rather than corruption.
fn damage_the_only_record(store: &Path, recompute_crc: bool) -> Vec<u8> {
    let db = sled::open(store.join("sled")).expect("open the store's sled directory");
    let tree = db.open_tree("data").expect("data tree");
    let mut entries = tree.iter();
    let (key, value) = entries.next().expect("one record").expect("read it");
    assert!(entries.next().is_none(), "the fixture holds one record");
    let mut value = value.to_vec();
    let body = value.len() - 4;
    value[body - 1] ^= 0x01;
    if recompute_crc {
        let crc = crc32fast::hash(&value[..body]);
        value[body..].copy_from_slice(&crc.to_be_bytes());
    }
    tree.insert(&key, value).expect("write it back");
    db.flush().expect("flush");
    key.to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn init_put_get_delete_round_trip() {
    let f = Fixture::init();
    f.put_account("acct-1", "account_profile", "email", "ops@example.com");
    ok(&f.run(&[
        "put",
        "user-1",
        "message_content",
        "msg-1",
        "see you at noon",
        "--account",
        "acct-1",
        "--expires-in",
        "30 days",
    ]));
    assert_eq!(
        ok(&f.run(&["get", "acct-1", "account_profile", "email"])),
        "ops@example.com\n"
    );
    let doc = json(&f.run(&["--json", "get", "user-1", "message_content", "msg-1"]));
    assert_eq!(doc["value"], "see you at noon");
    assert_eq!(doc["value_encoding"], "utf-8");
    assert!(doc["expires_at"].is_string(), "{doc}");

    ok(&f.run(&["delete", "user-1", "message_content", "msg-1"]));
    let err = fails_with(&f.run(&["get", "user-1", "message_content", "msg-1"]), 3);
    assert!(err.contains("no record `msg-1`"), "{err}");
    fails_with(&f.run(&["delete", "user-1", "message_content", "msg-1"]), 3);
}

#[test]
fn put_with_expires_at_and_policy_violations() {
    let f = Fixture::init();
    f.put_account("acct-1", "account_profile", "k", "v");
    let doc = json(&f.run(&[
        "--json",
        "put",
        "acct-1",
        "usage_records",
        "u1",
        "v",
        "--expires-at",
        "2999-01-01T00:00:00Z",
    ]));
    assert_eq!(doc["expires_at"], "2999-01-01T00:00:00Z");
    // account_profile's clock starts at account closure: no customer TTL.
    let err = fails_with(
        &f.run(&[
            "put",
            "acct-1",
            "account_profile",
            "k2",
            "v",
            "--expires-in",
            "3 days",
        ]),
        6,
    );
    assert!(err.contains("account_profile"), "{err}");
    fails_with(&f.run(&["put", "acct-1", "no_such_class", "k", "v"]), 2);
    // clap rejects a malformed span: usage.
    assert_eq!(
        code(&f.run(&[
            "put",
            "acct-1",
            "usage_records",
            "k",
            "v",
            "--expires-in",
            "soon"
        ])),
        2
    );
}

/// Messaging TTLs are often hours: `--expires-in` takes seconds, minutes
/// and hours as well as the policy's calendar units, and `-` reads the value
/// from standard input (bytes, so binary values work).
#[test]
fn put_takes_hour_ttls_and_a_value_from_stdin() {
    let f = Fixture::init();
    f.put_account("acct-1", "account_profile", "k", "v");
    let before = jiff::Timestamp::now();
    let doc = json(&f.run(&[
        "--json",
        "put",
        "acct-1",
        "message_content",
        "m1",
        "v",
        "--expires-in",
        "12 hours",
    ]));
    let at: jiff::Timestamp = doc["expires_at"]
        .as_str()
        .expect("a time")
        .parse()
        .expect("RFC 3339");
    let ttl = at.duration_since(before).as_secs();
    assert!((12 * 3600 - 5..=12 * 3600 + 60).contains(&ttl), "{ttl} s");
    for span in ["90 seconds", "15 minutes", "1 hour", "30 days"] {
        ok(&f.run(&[
            "put",
            "acct-1",
            "message_content",
            "m2",
            "v",
            "--expires-in",
            span,
        ]));
    }
    assert_eq!(
        code(&f.run(&[
            "put",
            "acct-1",
            "message_content",
            "m3",
            "v",
            "--expires-in",
            "12 fortnights"
        ])),
        2
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_shredkv"))
        .args([
            "--store",
            path_str(&f.store),
            "put",
            "acct-1",
            "message_content",
            "bin",
            "-",
        ])
        .env_remove("SHREDKV_STORE")
        .env_remove("SHREDKV_KEY_FILE")
        .env("SHREDKV_ALLOW_KEY_FILE_IN_STORE", "true")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run shredkv");
    let value: Vec<u8> = (0..=255u8).chain(b"-\n".iter().copied()).collect();
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), &value).expect("write");
    ok(&child.wait_with_output().expect("wait"));
    let doc = json(&f.run(&["--json", "get", "acct-1", "message_content", "bin"]));
    assert_eq!(doc["value_encoding"], "base64", "{doc}");
    assert_ne!(
        doc["value"], "-",
        "the value came from stdin, not the literal `-`"
    );
}

#[test]
fn init_refuses_a_non_empty_directory() {
    let f = Fixture::init();
    let err = fails_with(&f.run(&["init"]), 1);
    assert!(err.contains("already holds a shredkv store"), "{err}");
    let other = f.dir.path().join("other");
    std::fs::create_dir(&other).expect("mkdir");
    std::fs::write(other.join("file"), b"x").expect("write");
    let err = fails_with(&shredkv(&["--store", path_str(&other), "init"]), 1);
    assert!(err.contains("is not empty"), "{err}");
}

/// Without the opt-in, a key file inside the store directory (the default
/// place) is refused with exit 7 before anything is created; a key file
/// outside works with no opt-in.
#[test]
fn a_key_file_inside_the_store_is_refused_unless_allowed() {
    let f = Fixture::new();
    let strict = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_shredkv"))
            .args(args)
            .env_remove("SHREDKV_STORE")
            .env_remove("SHREDKV_KEY_FILE")
            .env_remove("SHREDKV_ALLOW_KEY_FILE_IN_STORE")
            .output()
            .expect("run shredkv")
    };
    let err = fails_with(&strict(&["--store", path_str(&f.store), "init"]), 7);
    assert!(
        err.contains("inside store") && err.contains("--key-file"),
        "{err}"
    );
    assert!(!f.store.exists(), "a refused init created the store");

    let keys = f.dir.path().join("store.keys");
    let with_keys = |args: &[&str]| {
        let mut all = vec!["--store", path_str(&f.store), "--key-file", path_str(&keys)];
        all.extend_from_slice(args);
        strict(&all)
    };
    ok(&with_keys(&["init"]));
    ok(&with_keys(&[
        "put",
        "alice",
        "invoices",
        "inv-1",
        "42 EUR",
        "--register-account",
    ]));
    assert_eq!(
        ok(&with_keys(&["get", "alice", "invoices", "inv-1"])).trim(),
        "42 EUR"
    );
    assert!(keys.is_file() && !f.store.join("keys").exists());
}

#[test]
fn missing_store_exits_3_naming_the_path() {
    let f = Fixture::new();
    let err = fails_with(&f.run(&["stats"]), 3);
    assert!(err.contains(path_str(&f.store)), "{err}");
    assert!(err.contains("hint: "), "{err}");
    assert!(
        !f.store.exists(),
        "a command other than init creates nothing"
    );
    // An existing directory without a store is missing too.
    std::fs::create_dir(&f.store).expect("mkdir");
    fails_with(&f.run(&["get", "a", "invoices", "k"]), 3);
}

#[test]
fn store_is_required_except_for_demo_and_policy_check() {
    let err = fails_with(&shredkv(&["stats"]), 2);
    assert!(err.contains("--store"), "{err}");
    assert_eq!(code(&shredkv(&["no-such-command"])), 2);
}

#[test]
fn store_comes_from_the_environment() {
    let f = Fixture::init();
    let output = Command::new(env!("CARGO_BIN_EXE_shredkv"))
        .args(["--json", "stats", "--allow-key-file-in-store"])
        .env("SHREDKV_STORE", &f.store)
        .output()
        .expect("run");
    let doc = json(&output);
    assert_eq!(doc["backend"], "redb", "the default backend");
}

#[cfg(unix)]
#[test]
fn world_readable_key_file_exits_7_mentioning_chmod_600() {
    use std::os::unix::fs::PermissionsExt as _;
    let f = Fixture::init();
    let keys = f.store.join("keys");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = fails_with(&f.run(&["stats"]), 7);
    assert!(err.contains("chmod 600"), "{err}");
}

#[test]
fn missing_key_file_exits_7() {
    let f = Fixture::init();
    let elsewhere = f.dir.path().join("keys-moved");
    std::fs::rename(f.store.join("keys"), &elsewhere).expect("move the key file");
    let err = fails_with(&f.run(&["stats"]), 7);
    assert!(err.contains("is missing"), "{err}");
    assert!(!f.store.join("keys").exists(), "no fresh key file is made");
    ok(&f.run(&["--key-file", path_str(&elsewhere), "stats"]));
}

#[test]
fn another_stores_key_file_exits_7() {
    let a = Fixture::init();
    let b = Fixture::init();
    let foreign = b.store.join("keys");
    let err = fails_with(&a.run(&["--key-file", path_str(&foreign), "stats"]), 7);
    assert!(err.contains("cannot be opened with"), "{err}");
    assert!(err.contains(path_str(&foreign)), "{err}");
    assert!(err.contains("hint: "), "{err}");
}

#[test]
fn emptied_backend_files_exit_3_without_starting_over() {
    let f = Fixture::init_sled();
    f.put_account("a", "invoices", "inv-1", "one");
    std::fs::remove_dir_all(f.store.join("sled")).expect("remove the backend files");
    std::fs::create_dir(f.store.join("sled")).expect("an empty sled directory");
    let err = fails_with(&f.run(&["stats"]), 3);
    assert!(err.contains("no data"), "{err}");
    assert!(err.contains("hint: "), "{err}");
}

#[test]
fn key_file_off_the_store_volume() {
    let f = Fixture::new();
    let keys = f.dir.path().join("secrets").join("shredkv.keys");
    std::fs::create_dir(keys.parent().expect("parent")).expect("mkdir");
    let init = f.run(&["--key-file", path_str(&keys), "init"]);
    ok(&init);
    assert!(!stderr(&init).contains("inside the store directory"));
    assert!(keys.exists());
    ok(&f.run(&[
        "--key-file",
        path_str(&keys),
        "put",
        "a",
        "invoices",
        "k",
        "v",
        "--register-account",
    ]));
    // Without --key-file the store's own directory has no key file.
    fails_with(&f.run(&["get", "a", "invoices", "k"]), 7);
    // init never takes over an existing key file.
    let other = Fixture::new();
    let err = fails_with(&other.run(&["--key-file", path_str(&keys), "init"]), 1);
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn corrupt_policy_file_exits_6_with_line_and_column() {
    let f = Fixture::new();
    let bad = f.dir.path().join("bad.toml");
    let text = std::fs::read_to_string(default_policy_path())
        .expect("read the default policy")
        .replacen("role = \"processor\"", "role = \"boss\"", 1);
    let line = text
        .lines()
        .position(|l| l.contains("\"boss\""))
        .expect("the edit is there")
        + 1;
    std::fs::write(&bad, &text).expect("write");
    let err = fails_with(&shredkv(&["policy", "check", path_str(&bad)]), 6);
    assert!(err.contains(&format!("line {line}, column")), "{err}");
    assert!(err.contains(path_str(&bad)), "{err}");
    assert!(err.contains("boss"), "{err}");

    std::fs::write(&bad, "version = 1\n[[class]\n").expect("write");
    let err = fails_with(&shredkv(&["policy", "check", path_str(&bad)]), 6);
    assert!(err.contains("line 2, column"), "{err}");

    // A store opened with a broken --policy fails the same way.
    fails_with(&f.run(&["--policy", path_str(&bad), "init"]), 6);
    fails_with(
        &shredkv(&[
            "policy",
            "check",
            path_str(&f.dir.path().join("absent.toml")),
        ]),
        6,
    );
}

fn default_policy_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy/default.toml")
}

#[test]
fn policy_check_and_show() {
    let default = default_policy_path();
    let out = ok(&shredkv(&["policy", "check", path_str(&default)]));
    assert!(out.starts_with("OK: "), "{out}");
    let doc = json(&shredkv(&["--json", "policy", "check", path_str(&default)]));
    let digest = doc["digest"].as_str().expect("digest").to_string();
    assert_eq!(digest.len(), 64);

    let shown = ok(&shredkv(&["policy", "show"]));
    for class in [
        "account_profile",
        "account_records",
        "invoices",
        "subscriber_records",
        "support_communications",
        "marketing_contacts",
        "usage_records",
        "message_content",
        "retained_usage_copy",
    ] {
        assert!(shown.contains(class), "{class} missing from:\n{shown}");
    }
    let f = Fixture::init();
    let doc = json(&f.run(&["--json", "policy", "show"]));
    assert_eq!(doc["digest"], digest.as_str());
    assert_eq!(doc["classes"].as_array().map(Vec::len), Some(9));
}

#[test]
fn a_store_refuses_a_different_policy_with_exit_6() {
    let f = Fixture::init();
    let text = std::fs::read_to_string(default_policy_path())
        .expect("read")
        .replace("retain = \"3 years\"", "retain = \"4 years\"");
    let changed = f.dir.path().join("changed.toml");
    std::fs::write(&changed, text).expect("write");
    let err = fails_with(&f.run(&["--policy", path_str(&changed), "stats"]), 6);
    assert!(err.contains("different retention policy"), "{err}");
}

#[test]
fn unknown_subject_exits_3() {
    let f = Fixture::init();
    let err = fails_with(&f.run(&["get", "nobody", "invoices", "k"]), 3);
    assert!(err.contains("unknown subject"), "{err}");
    fails_with(&f.run(&["show", "nobody"]), 3);
    fails_with(&f.run(&["shred", "nobody"]), 3);
    fails_with(&f.run(&["export", "nobody"]), 3);
    // --json also prints the error as a document.
    let output = f.run(&["--json", "show", "nobody"]);
    assert_eq!(code(&output), 3);
    let doc: Value = serde_json::from_str(&stdout(&output)).expect("JSON error");
    assert_eq!(doc["error"]["code"], 3);
    assert_eq!(doc["error"]["kind"], "not_found");
}

#[test]
fn erased_subject_exits_4_until_re_registered() {
    let f = Fixture::init();
    f.put_account("acct-1", "account_profile", "email", "ops@example.com");
    ok(&f.run(&[
        "put",
        "user-1",
        "message_content",
        "m",
        "hi",
        "--account",
        "acct-1",
    ]));
    let receipt = json(&f.run(&["--json", "shred", "acct-1"]));
    assert_eq!(
        receipt["erased"].as_array().map(Vec::len),
        Some(2),
        "{receipt}"
    );
    assert!(receipt["keys_destroyed"].as_u64() > Some(0));

    let err = fails_with(&f.run(&["get", "user-1", "message_content", "m"]), 4);
    assert!(err.contains("erased"), "{err}");
    assert!(err.contains("hint: "), "{err}");
    fails_with(&f.run(&["get", "acct-1", "account_profile", "email"]), 4);
    fails_with(&f.run(&["export", "acct-1"]), 4);
    fails_with(
        &f.run(&["put", "acct-1", "account_profile", "email", "x"]),
        4,
    );
    // Shredding again erases nothing more and answers with the same
    // receipt (a retry after a lost answer gets the receipt it missed).
    assert_eq!(json(&f.run(&["--json", "shred", "acct-1"])), receipt);

    ok(&f.run(&["re-register", "acct-1"]));
    fails_with(&f.run(&["get", "acct-1", "account_profile", "email"]), 3);
    f.put_account("acct-1", "account_profile", "email", "new@example.com");
    let show = json(&f.run(&["--json", "show", "acct-1"]));
    assert_eq!(show["state"], "active");
    assert_eq!(show["generation"], 2);
}

#[test]
fn shred_of_some_classes() {
    let f = Fixture::init();
    f.put_account("a", "marketing_contacts", "k", "v");
    f.put_account("a", "invoices", "k", "v");
    let out = ok(&f.run(&["shred", "a", "--class", "marketing_contacts"]));
    assert!(out.contains("marketing_contacts"), "{out}");
    fails_with(&f.run(&["get", "a", "marketing_contacts", "k"]), 4);
    assert_eq!(ok(&f.run(&["get", "a", "invoices", "k"])), "v\n");
    fails_with(&f.run(&["shred", "a", "--class", "nope"]), 2);
}

#[test]
fn one_erased_class_is_registered_again() {
    let f = Fixture::init();
    f.put_account("a", "usage_records", "k", "old");
    f.put_account("a", "invoices", "k", "v");
    ok(&f.run(&["shred", "a", "--class", "usage_records"]));
    let err = fails_with(&f.run(&["put", "a", "usage_records", "k2", "x"]), 4);
    assert!(
        err.contains("--class CLASS"),
        "the hint names the way back: {err}"
    );
    // Not erased: a conflict, and nothing changes.
    fails_with(&f.run(&["re-register", "a", "--class", "invoices"]), 1);
    let done = json(&f.run(&["--json", "re-register", "a", "--class", "usage_records"]));
    assert_eq!(done["class"], "usage_records", "{done}");
    assert_eq!(done["state"], "active", "{done}");
    ok(&f.run(&["put", "a", "usage_records", "k2", "new"]));
    assert_eq!(ok(&f.run(&["get", "a", "usage_records", "k2"])), "new\n");
    fails_with(&f.run(&["get", "a", "usage_records", "k"]), 3);
    assert_eq!(ok(&f.run(&["get", "a", "invoices", "k"])), "v\n");
    let cert = json(&f.run(&["--json", "certificate", "a"]));
    assert!(
        cert["erasures"][0]["reopened_at"].is_string(),
        "the certificate marks the class re-opened: {cert}"
    );
    let text = ok(&f.run(&["certificate", "a"]));
    assert!(text.contains("class registered again at"), "{text}");
    let show = json(&f.run(&["--json", "show", "a"]));
    assert_eq!(show["generation"], 1, "the subject kept its generation");
}

#[test]
fn legal_hold_retains_a_class_until_released() {
    let f = Fixture::init();
    f.put_account("acct-1", "invoices", "inv-1", "1200 EUR");
    f.put_account("acct-1", "account_profile", "email", "ops@example.com");
    ok(&f.run(&[
        "hold",
        "acct-1",
        "--class",
        "invoices",
        "--reason",
        "case TAX-1",
    ]));
    let holds = json(&f.run(&["--json", "holds"]));
    assert_eq!(holds["holds"][0]["class"], "invoices");
    assert_eq!(holds["holds"][0]["reason"], "case TAX-1");
    assert!(ok(&f.run(&["holds"])).contains("case TAX-1"));
    assert!(ok(&f.run(&["show", "acct-1"])).contains("case TAX-1"));

    let receipt = json(&f.run(&["--json", "shred", "acct-1"]));
    assert_eq!(receipt["retained"][0]["class"], "invoices", "{receipt}");
    assert!(
        receipt["retained"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("case TAX-1")),
        "{receipt}"
    );
    assert_eq!(
        ok(&f.run(&["get", "acct-1", "invoices", "inv-1"])),
        "1200 EUR\n"
    );
    fails_with(&f.run(&["get", "acct-1", "account_profile", "email"]), 4);

    ok(&f.run(&["release", "acct-1", "--class", "invoices"]));
    fails_with(&f.run(&["release", "acct-1", "--class", "invoices"]), 3);
    assert!(ok(&f.run(&["holds"])).contains("no legal holds"));
    let human = ok(&f.run(&["shred", "acct-1"]));
    assert!(human.starts_with("Receipt: "), "{human}");
    fails_with(&f.run(&["get", "acct-1", "invoices", "inv-1"]), 4);
    // A hold needs a reason.
    assert_eq!(code(&f.run(&["hold", "acct-1"])), 2);
}

#[test]
fn restricted_subject_cannot_be_read_but_can_be_exported() {
    let f = Fixture::init();
    f.put_account("a", "support_communications", "t-1", "my webhooks time out");
    ok(&f.run(&["restrict", "a"]));
    let err = fails_with(&f.run(&["get", "a", "support_communications", "t-1"]), 1);
    assert!(err.contains("restricted"), "{err}");
    let export = ok(&f.run(&["export", "a"]));
    assert!(export.contains("my webhooks time out"), "{export}");
    assert_eq!(
        json(&f.run(&["--json", "show", "a"]))["state"],
        "restricted"
    );
    ok(&f.run(&["unrestrict", "a"]));
    ok(&f.run(&["get", "a", "support_communications", "t-1"]));
}

#[test]
fn export_all_writes_json_lines_and_skips_erased_subjects() {
    let f = Fixture::init();
    f.put_account("a", "invoices", "inv-1", "one");
    ok(&f.run(&["put", "u", "message_content", "m", "two", "--account", "a"]));
    f.put_account("b", "invoices", "inv-1", "three");
    f.put_account("gone", "invoices", "inv-1", "four");
    ok(&f.run(&["shred", "gone"]));

    let output = f.run(&["export"]);
    let text = ok(&output);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    let values: Vec<&str> = lines.iter().filter_map(|l| l["value"].as_str()).collect();
    for v in ["one", "two", "three"] {
        assert!(values.contains(&v), "{values:?}");
    }
    assert!(
        lines
            .iter()
            .all(|l| l["subject"].as_str().map(str::len) == Some(32))
    );
    assert!(
        stderr(&output).contains("1 erased subjects skipped"),
        "{}",
        stderr(&output)
    );

    // One account exports its end users too; -o writes an owner-only file.
    let file = f.dir.path().join("a.jsonl");
    ok(&f.run(&["export", "a", "-o", path_str(&file)]));
    let written = std::fs::read_to_string(&file).expect("read export");
    assert_eq!(written.lines().count(), 2, "{written}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // An export never overwrites a file.
    fails_with(&f.run(&["export", "a", "-o", path_str(&file)]), 1);
}

#[test]
fn tampered_value_fails_get_and_verify_with_exit_5() {
    let f = Fixture::init_sled();
    f.put_account("a", "invoices", "inv-1", "1200 EUR");
    let tag = json(&f.run(&["--json", "show", "a"]))["tag"]
        .as_str()
        .expect("tag")
        .to_string();
    let key = damage_the_only_record(&f.store, true);

    let err = fails_with(&f.run(&["get", "a", "invoices", "inv-1"]), 5);
    assert!(err.contains("tampered"), "{err}");
    assert!(!err.contains("1200 EUR"), "never returned as data");

    let output = f.run(&["verify"]);
    assert_eq!(code(&output), 5, "{}", stdout(&output));
    let report = stdout(&output);
    assert!(report.contains("tampered"), "{report}");
    assert!(report.contains(&tag), "{report}");

    let output = f.run(&["--json", "verify"]);
    assert_eq!(code(&output), 5);
    let doc: Value = serde_json::from_str(&stdout(&output)).expect("JSON report");
    assert_eq!(doc["clean"], false);
    let problem = &doc["problems"][0];
    assert_eq!(problem["kind"], "tampered");
    assert_eq!(problem["location"]["tree"], "data");
    assert_eq!(problem["location"]["subject"], tag.as_str());
    assert_eq!(problem["location"]["class"], "invoices");
    assert_eq!(problem["location"]["key"], hex(&key).as_str());
}

#[test]
fn corrupt_value_is_reported_as_corrupt_with_exit_5() {
    let f = Fixture::init_sled();
    f.put_account("a", "invoices", "inv-1", "1200 EUR");
    damage_the_only_record(&f.store, false);
    let err = fails_with(&f.run(&["get", "a", "invoices", "inv-1"]), 5);
    assert!(err.contains("corrupt"), "{err}");
    let output = f.run(&["--json", "verify"]);
    assert_eq!(code(&output), 5);
    let doc: Value = serde_json::from_str(&stdout(&output)).expect("JSON report");
    assert_eq!(doc["problems"][0]["kind"], "corrupt");
    assert_eq!(doc["problems"][0]["location"]["tree"], "data");
}

#[test]
fn verify_of_a_clean_store_exits_0() {
    let f = Fixture::init();
    f.put_account("a", "invoices", "inv-1", "1200 EUR");
    let out = ok(&f.run(&["verify"]));
    assert!(out.contains("OK: no damage found"), "{out}");
    let doc = json(&f.run(&["--json", "verify"]));
    assert_eq!(doc["clean"], true);
    assert_eq!(doc["records_checked"], 1);
}

#[test]
fn stats_subjects_and_show_print_tables_and_json() {
    let f = Fixture::init();
    f.put_account("a", "invoices", "inv-1", "one");
    ok(&f.run(&["put", "u", "message_content", "m", "two", "--account", "a"]));

    let stats = ok(&f.run(&["stats"]));
    assert!(stats.contains("1 accounts, 1 end users"), "{stats}");
    let headroom = stats
        .lines()
        .find(|line| line.starts_with("headroom"))
        .unwrap_or_else(|| panic!("a headroom line: {stats}"));
    assert!(headroom.contains("% free)"), "{headroom}");
    let doc = json(&f.run(&["--json", "stats"]));
    assert_eq!(doc["accounts"], 1);
    assert_eq!(doc["end_users"], 1);
    let (free, capacity) = (
        doc["headroom_bytes"].as_u64(),
        doc["capacity_bytes"].as_u64(),
    );
    assert!(
        matches!((free, capacity), (Some(free), Some(capacity)) if free <= capacity),
        "{doc}"
    );

    let subjects = json(&f.run(&["--json", "subjects"]));
    let list = subjects["subjects"].as_array().expect("list");
    assert_eq!(list.len(), 2);
    let table = ok(&f.run(&["subjects"]));
    assert!(table.starts_with("tag "), "{table}");
    assert!(table.contains("end_user"), "{table}");

    let show = json(&f.run(&["--json", "show", "u"]));
    assert_eq!(show["kind"], "end_user");
    let account = json(&f.run(&["--json", "show", "a"]));
    assert_eq!(show["parent"], account["tag"]);
    assert_eq!(account["end_users"][0], show["tag"]);
}

#[test]
fn stats_shows_the_store_time_standing_ahead_of_a_clock_set_back() {
    let f = Fixture::init();
    let before = ok(&f.run(&["stats"]));
    let line = before
        .lines()
        .find(|line| line.starts_with("time"))
        .unwrap_or_else(|| panic!("a time line: {before}"));
    assert!(!line.contains("behind"), "{line}");
    // The library, on a clock two days ahead, uses the store; then the CLI
    // opens it on the system clock, which stands two days behind.
    let ahead = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(48);
    let clock = shredkv::ManualClock::new(ahead);
    let db = shredkv::Db::open(
        shredkv::Config::new(&f.store)
            .allow_key_file_in_store(true)
            .clock(std::sync::Arc::new(clock))
            .maintenance_every(None),
    )
    .expect("open on a clock ahead");
    assert_eq!(db.now(), ahead);
    drop(db);
    let doc = json(&f.run(&["--json", "stats"]));
    assert_eq!(
        time(&doc["store_time"]).as_second(),
        ahead.as_second(),
        "{doc}"
    );
    let behind = time(&doc["store_time"]).as_second() - time(&doc["clock_time"]).as_second();
    assert!((47 * 3_600..=48 * 3_600).contains(&behind), "{doc}");
    let text = ok(&f.run(&["stats"]));
    let line = text
        .lines()
        .find(|line| line.starts_with("time"))
        .unwrap_or_else(|| panic!("a time line: {text}"));
    assert!(
        line.contains("47 h behind") || line.contains("2 days behind"),
        "{line}"
    );
    assert!(line.contains("the clock reads"), "{line}");
}

#[test]
fn audit_tail_and_verify() {
    let f = Fixture::init();
    f.put_account("a", "invoices", "inv-1", "one");
    ok(&f.run(&["hold", "a", "--reason", "case 9"]));
    ok(&f.run(&["release", "a"]));
    let tail = json(&f.run(&["--json", "audit", "tail", "-n", "2"]));
    let entries = tail["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["event"], "hold-placed");
    assert_eq!(entries[1]["event"], "hold-released");
    assert!(ok(&f.run(&["audit", "tail"])).contains("store-created"));
    // Class numbers are named.
    ok(&f.run(&["hold", "a", "--class", "invoices", "--reason", "case 10"]));
    let last = json(&f.run(&["--json", "audit", "tail", "-n", "1"]));
    assert_eq!(last["entries"][0]["class_name"], "invoices", "{last}");
    assert!(ok(&f.run(&["audit", "tail", "-n", "1"])).contains(" invoices "));
    ok(&f.run(&["release", "a", "--class", "invoices"]));

    // store created, control plane sealed, a registered, two holds placed
    // and released.
    assert!(ok(&f.run(&["audit", "verify"])).starts_with("OK: 7 entries"));
    let doc = json(&f.run(&["--json", "audit", "verify"]));
    assert_eq!(doc["intact"], true);
}

/// Rewrites the detail of the last audit entry of a closed store ("hold
/// placed" to "hold plated"), recomputing the entry's CRC when asked.
fn edit_last_audit_entry(store: &Path, recompute_crc: bool) {
    let db = sled::open(store.join("sled")).expect("open sled");
    let audit = db.open_tree("audit").expect("audit tree");
    let (key, value) = audit.last().expect("read").expect("an entry");
    let mut value = value.to_vec();
    let at = value
        .windows(11)
        .position(|w| w == b"hold placed")
        .expect("the hold's entry is the last");
    value[at + 8] = b't';
    if recompute_crc {
        let body = value.len() - 4;
        let crc = crc32fast::hash(&value[..body]);
        value[body..].copy_from_slice(&crc.to_be_bytes());
    }
    audit.insert(key, value).expect("write");
    db.flush().expect("flush");
}

#[test]
fn an_edited_audit_entry_breaks_the_chain_with_exit_5() {
    let f = Fixture::init_sled();
    f.put_account("a", "invoices", "inv-1", "one");
    ok(&f.run(&["hold", "a", "--reason", "case 9"]));
    edit_last_audit_entry(&f.store, true);
    let output = f.run(&["audit", "verify"]);
    assert_eq!(code(&output), 5, "{}", stderr(&output));
    let out = stdout(&output);
    // The edited entry is the one the key file's anchor vouches for: the
    // store is refused at open, and the report names the entry.
    assert!(
        out.starts_with("BROKEN: ") && out.contains("audit entry 4 is not the one anchored"),
        "{out}"
    );
    let doc: Value =
        serde_json::from_str(&stdout(&f.run(&["--json", "audit", "verify"]))).expect("JSON report");
    assert_eq!(doc["intact"], false);
    assert!(
        doc["first_break"]
            .as_str()
            .is_some_and(|b| b.contains("entry 4"))
    );
    assert_eq!(code(&f.run(&["verify"])), 5);
}

#[test]
fn a_corrupt_audit_head_is_reported_by_audit_verify_with_exit_5() {
    let f = Fixture::init_sled();
    f.put_account("a", "invoices", "inv-1", "one");
    ok(&f.run(&["hold", "a", "--reason", "case 9"]));
    edit_last_audit_entry(&f.store, false);
    // The damaged entry is the anchored one: reported, the store refused.
    let output = f.run(&["audit", "verify"]);
    assert_eq!(code(&output), 5, "{}", stderr(&output));
    let out = stdout(&output);
    assert!(out.starts_with("BROKEN: "), "{out}");
    assert_eq!(code(&f.run(&["verify"])), 5);
}

/// A fixture whose store was written 40 days ago, through the library on a
/// clock set back (the CLI runs on the system clock): its first epoch is
/// then older than any epoch may live, so tests can reach "past the purge
/// window" without waiting for it.
struct Aged {
    f: Fixture,
    then: shredkv::ManualClock,
}

impl Aged {
    fn init() -> Self {
        let f = Fixture::new();
        let then = shredkv::ManualClock::new(
            jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * 40),
        );
        drop(Self::open(&f.store, &then));
        Self { f, then }
    }

    fn open(store: &Path, clock: &shredkv::ManualClock) -> shredkv::Db {
        shredkv::Db::open(
            shredkv::Config::new(store)
                .allow_key_file_in_store(true)
                .clock(std::sync::Arc::new(clock.clone()))
                .sync_writes(true)
                .maintenance_every(None),
        )
        .expect("open the store 40 days ago")
    }

    /// Works on the store as it was 40 days ago.
    fn then(&self, work: impl FnOnce(&shredkv::Db)) {
        work(&Self::open(&self.f.store, &self.then));
    }

    fn run(&self, args: &[&str]) -> Output {
        self.f.run(args)
    }
}

fn time(value: &Value) -> jiff::Timestamp {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a timestamp: {value}"))
}

#[test]
fn close_account_schedules_each_class_with_its_date() {
    let f = Fixture::init();
    f.put_account("acct-1", "account_profile", "email", "ops@example.com");
    ok(&f.run(&[
        "put",
        "u-1",
        "message_content",
        "m",
        "hi",
        "--account",
        "acct-1",
    ]));
    let out = ok(&f.run(&["close-account", "acct-1"]));
    assert!(out.contains("with 1 end user"), "{out}");
    for line in [
        "60 days",
        "3 years",
        "7 years",
        "10 years",
        "now (next compaction)",
    ] {
        assert!(out.contains(line), "{line} missing from:\n{out}");
    }
    assert!(out.contains("acct-1 + 1 end user"), "{out}");
    // Closing again changes nothing.
    let again = json(&f.run(&["--json", "close-account", "acct-1"]));
    assert_eq!(again["newly_closed"], false, "{again}");
    assert_eq!(again["scheduled"].as_array().map(Vec::len), Some(0));
    let show = json(&f.run(&["--json", "show", "acct-1"]));
    let closed = time(&show["closed_at"]);
    // The JSON lists every subject and class.
    let f2 = Fixture::init();
    f2.put_account("acct-2", "invoices", "inv-1", "1200 EUR");
    let doc = json(&f2.run(&["--json", "close-account", "acct-2"]));
    let invoices = doc["scheduled"]
        .as_array()
        .expect("scheduled")
        .iter()
        .find(|s| s["class"] == "invoices")
        .expect("invoices are scheduled");
    let days =
        (time(&invoices["erase_at"]).as_second() - time(&doc["closed_at"]).as_second()) / 86_400;
    assert!((3650..=3653).contains(&days), "{invoices}");
    assert!(closed <= time(&doc["closed_at"]));
    // Bad input: an unknown account, an end user.
    fails_with(&f.run(&["close-account", "nobody"]), 3);
    let err = fails_with(&f.run(&["close-account", "u-1"]), 1);
    assert!(err.contains("end user"), "{err}");
}

#[test]
fn opt_out_schedules_marketing_three_days_later() {
    let f = Fixture::init();
    f.put_account("a", "marketing_contacts", "newsletter", "news@a.example");
    let doc = json(&f.run(&["--json", "opt-out", "a"]));
    let scheduled = doc["scheduled"].as_array().expect("scheduled");
    assert_eq!(scheduled.len(), 1, "{doc}");
    assert_eq!(scheduled[0]["class"], "marketing_contacts");
    let wait = time(&scheduled[0]["erase_at"]).as_second() - time(&doc["opted_out_at"]).as_second();
    assert_eq!(wait, 3 * 86_400, "{doc}");
    // Still readable until then; a second opt-out schedules nothing new.
    ok(&f.run(&["get", "a", "marketing_contacts", "newsletter"]));
    assert!(ok(&f.run(&["opt-out", "a"])).contains("nothing new"));
    fails_with(&f.run(&["opt-out", "nobody"]), 3);
}

#[test]
fn release_data_erases_a_manual_class_and_refuses_others() {
    let f = Fixture::init();
    f.put_account("a", "subscriber_records", "passport", "X1234567");
    f.put_account("a", "invoices", "inv-1", "1200 EUR");
    let out = ok(&f.run(&["release-data", "a", "subscriber_records"]));
    assert!(out.contains("next compaction"), "{out}");
    ok(&f.run(&["compact"]));
    fails_with(&f.run(&["get", "a", "subscriber_records", "passport"]), 4);
    // A class on another clock: the policy forbids it.
    let err = fails_with(&f.run(&["release-data", "a", "invoices"]), 6);
    assert!(err.contains("invoices"), "{err}");
    assert_eq!(ok(&f.run(&["get", "a", "invoices", "inv-1"])), "1200 EUR\n");
    fails_with(&f.run(&["release-data", "a", "no_such_class"]), 2);
    fails_with(&f.run(&["release-data", "nobody", "subscriber_records"]), 3);
    let doc = json(&f.run(&["--json", "release-data", "a", "retained_usage_copy"]));
    assert_eq!(doc["class"], "retained_usage_copy");
    assert!(doc["erase_at"].is_string(), "{doc}");
}

#[test]
fn request_deletion_erases_now_and_retains_with_reasons() {
    let f = Fixture::init();
    f.put_account("acct-1", "account_profile", "email", "ops@example.com");
    f.put_account("acct-1", "invoices", "inv-1", "1200 EUR");
    ok(&f.run(&[
        "put",
        "u-1",
        "message_content",
        "m",
        "hi",
        "--account",
        "acct-1",
    ]));
    let receipt = json(&f.run(&["--json", "request-deletion", "acct-1"]));
    assert_eq!(receipt["reason"], "deletion request");
    let erased: Vec<&str> = receipt["erased"]
        .as_array()
        .expect("erased")
        .iter()
        .filter_map(|e| e["class"].as_str())
        .collect();
    assert!(erased.contains(&"account_profile"), "{receipt}");
    assert!(erased.contains(&"message_content"), "{receipt}");
    let invoices = receipt["retained"]
        .as_array()
        .expect("retained")
        .iter()
        .find(|r| r["class"] == "invoices")
        .expect("invoices are retained");
    assert!(invoices["until"].is_string(), "{invoices}");
    assert!(
        invoices["reason"]
            .as_str()
            .is_some_and(|r| r.contains("tax")),
        "{invoices}"
    );
    // The request closed the account: no more reads or writes of it or
    // its end users; what is retained is read through export.
    for (subject, class, key) in [
        ("acct-1", "account_profile", "email"),
        ("u-1", "message_content", "m"),
        ("acct-1", "invoices", "inv-1"),
    ] {
        let err = fails_with(&f.run(&["get", subject, class, key]), 1);
        assert!(err.contains("closed"), "{err}");
    }
    let export = ok(&f.run(&["export", "acct-1"]));
    assert!(export.contains("1200 EUR"), "{export}");
    assert!(!export.contains("ops@example.com"), "{export}");

    // For people: the receipt names the subject and says why.
    f.put_account("acct-2", "invoices", "inv-1", "900 EUR");
    let out = ok(&f.run(&["request-deletion", "acct-2"]));
    assert!(out.starts_with("Receipt: acct-2 erased at "), "{out}");
    assert!(out.contains("retained subject"), "{out}");
    assert!(out.contains("accounting, tax and audit"), "{out}");

    // An underage account: everything goes, obligations notwithstanding.
    f.put_account("minor", "invoices", "inv-1", "5 EUR");
    let receipt = json(&f.run(&["--json", "request-deletion", "minor", "--underage"]));
    assert_eq!(receipt["reason"], "underage account");
    assert_eq!(receipt["retained"].as_array().map(Vec::len), Some(0));
    fails_with(&f.run(&["get", "minor", "invoices", "inv-1"]), 4);

    fails_with(&f.run(&["request-deletion", "nobody"]), 3);
}

#[test]
fn compact_reports_and_honours_its_budget() {
    let f = Fixture::init();
    for account in ["a", "b", "c"] {
        f.put_account(account, "usage_records", "u", "v");
        ok(&f.run(&["close-account", account]));
    }
    let output = f.run(&["--json", "compact", "--budget", "1"]);
    let doc = json(&output);
    assert_eq!(doc["items"], 1, "{doc}");
    assert!(doc["remaining"].as_u64() > Some(0), "{doc}");
    assert!(stderr(&output).contains("run `shredkv compact` again"));
    let out = ok(&f.run(&["compact"]));
    assert!(out.starts_with("Compaction at "), "{out}");
    assert!(out.contains("remaining          0"), "{out}");
    let err = fails_with(&f.run(&["get", "a", "usage_records", "u"]), 1);
    assert!(err.contains("closed"), "{err}");
    let export = ok(&f.run(&["export", "a"]));
    assert!(
        !export.contains("usage_records"),
        "erased at closure: {export}"
    );
    assert_eq!(code(&f.run(&["compact", "--budget", "many"])), 2);
}

#[test]
fn rotate_epoch_creates_an_epoch_and_rewraps_keys() {
    let f = Fixture::init();
    f.put_account("a", "invoices", "inv-1", "one");
    let doc = json(&f.run(&["--json", "rotate-epoch"]));
    assert_eq!(doc["created"], 2, "{doc}");
    assert!(doc["keys_rewrapped"].as_u64() >= Some(1), "{doc}");
    assert_eq!(doc["live_epochs"], serde_json::json!([1, 2]));
    let out = ok(&f.run(&["rotate-epoch"]));
    assert!(out.starts_with("epoch 3 created"), "{out}");
    assert_eq!(ok(&f.run(&["get", "a", "invoices", "inv-1"])), "one\n");
    fails_with(&Fixture::new().run(&["rotate-epoch"]), 3);
}

#[test]
fn restore_replays_erasures_made_after_the_backup() {
    let f = Fixture::init();
    f.put_account("kept", "invoices", "inv-1", "kept invoice");
    f.put_account("gone", "invoices", "inv-1", "gone invoice");
    let backup = f.dir.path().join("backup");
    let out = ok(&f.run(&["backup", path_str(&backup)]));
    assert!(out.contains("restorable"), "{out}");
    ok(&f.run(&["shred", "gone"]));

    let restored = f.dir.path().join("restored");
    let keys = f.store.join("keys");
    let doc = json(&f.run(&[
        "--json",
        "restore",
        path_str(&backup),
        "--into",
        path_str(&restored),
    ]));
    assert!(doc["erasures_replayed"].as_u64() >= Some(1), "{doc}");
    let r = |args: &[&str]| {
        let mut all = vec![
            "--store",
            path_str(&restored),
            "--key-file",
            path_str(&keys),
        ];
        all.extend_from_slice(args);
        shredkv(&all)
    };
    assert_eq!(
        ok(&r(&["get", "kept", "invoices", "inv-1"])),
        "kept invoice\n"
    );
    fails_with(&r(&["get", "gone", "invoices", "inv-1"]), 4);
    ok(&r(&["verify"]));

    // The restore took the key file over: the old store is refused now.
    let err = fails_with(&f.run(&["stats"]), 5);
    assert!(err.contains("a restore has taken over"), "{err}");

    // Bad input: non-empty targets, a directory that is no backup, no source.
    let err = fails_with(&r(&["backup", path_str(&backup)]), 2);
    assert!(err.contains("not empty"), "{err}");
    let err = fails_with(
        &f.run(&["restore", path_str(&backup), "--into", path_str(&restored)]),
        2,
    );
    assert!(err.contains("not empty"), "{err}");
    let fresh = f.dir.path().join("fresh");
    fails_with(
        &f.run(&[
            "restore",
            path_str(&f.dir.path().join("nothing")),
            "--into",
            path_str(&fresh),
        ]),
        3,
    );
    fails_with(
        &shredkv(&["restore", path_str(&backup), "--into", path_str(&fresh)]),
        2,
    );
    assert!(!fresh.exists());
}

/// G6: `--store` naming a backup directory is refused (exit 2) with the
/// live key file too: served as a store, the backup would bring back the
/// subject erased since it was taken.
#[test]
fn backup_directory_is_not_served_as_a_store() {
    let f = Fixture::init();
    f.put_account("gone", "invoices", "inv-1", "gone invoice");
    let backup = f.dir.path().join("backup");
    ok(&f.run(&["backup", path_str(&backup)]));
    ok(&f.run(&["shred", "gone"]));
    let keys = f.store.join("keys");
    for key_file in [&["--key-file", path_str(&keys)][..], &[][..]] {
        let mut args = vec!["--store", path_str(&backup)];
        args.extend_from_slice(key_file);
        args.extend_from_slice(&["get", "gone", "invoices", "inv-1"]);
        let out = shredkv(&args);
        assert!(
            !stdout(&out).contains("gone invoice"),
            "the backup served erased data: {}",
            stdout(&out)
        );
        let err = fails_with(&out, 2);
        assert!(err.contains("is a backup"), "{err}");
        assert!(err.contains("restore"), "{err}");
    }
}

/// G6 without silent loss: restoring a backup taken before a re-key (which
/// destroyed the key version the backup's copy of a live record is sealed
/// under) exits 4 naming the loss and writes nothing; with --accept-loss it
/// restores and lists the loss. The live store is prepared through the
/// engine, on a manual clock, since the re-key is weeks away.
#[test]
fn restore_before_rekey_exits_4_unless_the_loss_is_accepted() {
    use shredkv::jiff::{SignedDuration, Timestamp};
    let f = Fixture::new();
    let backup = f.dir.path().join("backup");
    let clock = shredkv::ManualClock::new(Timestamp::now());
    let tag = {
        let db = shredkv::Db::open(
            shredkv::Config::new(&f.store)
                .allow_key_file_in_store(true)
                .clock(std::sync::Arc::new(clock.clone()))
                .flush_every(None)
                .maintenance_every(None),
        )
        .expect("open");
        db.register_account("a").expect("register");
        db.put("a", "account_profile", b"still-live", b"kept")
            .expect("put");
        db.put("a", "account_profile", b"deleted", b"gone")
            .expect("put");
        assert!(
            db.delete("a", "account_profile", b"deleted")
                .expect("delete")
        );
        let next_day = || {
            clock.advance(SignedDuration::from_hours(24));
            db.compact().expect("compact");
        };
        for _ in 0..5 {
            next_day();
        }
        db.backup(&backup).expect("backup");
        let tag = db.subject_tag("a");
        let mut days = 0;
        while !db
            .audit_entries(1, usize::MAX)
            .expect("audit")
            .iter()
            .any(|e| e.event == shredkv::AuditEvent::Rekeyed && e.subject == Some(tag))
        {
            days += 1;
            assert!(days <= 60, "no re-key within 60 days");
            next_day();
        }
        db.flush().expect("flush");
        tag
    };
    let target = f.dir.path().join("restored");
    let err = fails_with(
        &f.run(&["restore", path_str(&backup), "--into", path_str(&target)]),
        4,
    );
    assert!(
        err.contains("would not bring back 1 of its records"),
        "{err}"
    );
    assert!(err.contains(&tag.to_hex()), "{err}");
    assert!(err.contains("--accept-loss"), "{err}");
    assert!(
        !target.exists(),
        "a refused restore wrote {}",
        target.display()
    );
    let doc = json(&f.run(&[
        "--json",
        "restore",
        path_str(&backup),
        "--into",
        path_str(&target),
        "--accept-loss",
    ]));
    let lost = doc["lost"].as_array().expect("lost");
    assert_eq!(lost.len(), 1, "{doc}");
    assert_eq!(lost[0]["subject"], tag.to_hex().as_str(), "{doc}");
    assert_eq!(lost[0]["class"], "account_profile", "{doc}");
    assert_eq!(lost[0]["records"], 1, "{doc}");
}

#[test]
fn restore_from_an_exported_erasure_log_and_a_damaged_one() {
    let f = Fixture::init();
    f.put_account("kept", "invoices", "inv-1", "kept invoice");
    f.put_account("gone", "invoices", "inv-1", "gone invoice");
    let backup = f.dir.path().join("backup");
    ok(&f.run(&["backup", path_str(&backup)]));
    ok(&f.run(&["shred", "gone"]));
    let log = f.dir.path().join("erasures.log");
    let doc = json(&f.run(&["--json", "export-erasure-log", path_str(&log)]));
    assert!(doc["items"].as_u64() >= Some(2), "{doc}");
    // Never overwritten.
    let err = fails_with(&f.run(&["export-erasure-log", path_str(&log)]), 1);
    assert!(err.contains("never overwrites"), "{err}");

    // Without the live store: the log and the live key file.
    let keys = f.store.join("keys");
    let restored = f.dir.path().join("restored");
    let out = ok(&shredkv(&[
        "--key-file",
        path_str(&keys),
        "restore",
        path_str(&backup),
        "--into",
        path_str(&restored),
        "--erasure-log",
        path_str(&log),
    ]));
    assert!(out.contains("erasures replayed"), "{out}");
    let get = |who: &str| {
        shredkv(&[
            "--store",
            path_str(&restored),
            "--key-file",
            path_str(&keys),
            "get",
            who,
            "invoices",
            "inv-1",
        ])
    };
    assert_eq!(ok(&get("kept")), "kept invoice\n");
    fails_with(&get("gone"), 4);

    // A damaged log: integrity, and nothing is left in the target.
    let mut bytes = std::fs::read(&log).expect("read the log");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    let damaged = f.dir.path().join("damaged.log");
    std::fs::write(&damaged, bytes).expect("write");
    let target = f.dir.path().join("target");
    let err = fails_with(
        &shredkv(&[
            "--key-file",
            path_str(&keys),
            "restore",
            path_str(&backup),
            "--into",
            path_str(&target),
            "--erasure-log",
            path_str(&damaged),
        ]),
        5,
    );
    assert!(err.contains("erasure log"), "{err}");
    assert!(err.contains("hint: "), "{err}");
    assert!(!target.exists(), "a failed restore leaves nothing behind");
    // A log without a key file to decrypt with: usage.
    fails_with(
        &shredkv(&[
            "restore",
            path_str(&backup),
            "--into",
            path_str(&target),
            "--erasure-log",
            path_str(&log),
        ]),
        2,
    );
}

#[test]
fn a_backup_older_than_the_purge_window_cannot_be_restored_exit_4() {
    let s = Aged::init();
    let backup = s.f.dir.path().join("old-backup");
    s.then(|db| {
        db.register_account("a").expect("register");
        db.put("a", "invoices", b"inv-1", b"one").expect("put");
        db.backup(&backup).expect("backup");
    });
    // The backup's epoch started 40 days ago: the rotation retires and
    // destroys it at once.
    let doc = json(&s.run(&["--json", "rotate-epoch"]));
    assert_eq!(doc["epochs_destroyed"], 1, "{doc}");
    let target = s.f.dir.path().join("restored");
    let err = fails_with(
        &s.run(&["restore", path_str(&backup), "--into", path_str(&target)]),
        4,
    );
    assert!(err.contains("older than the purge window"), "{err}");
    assert!(err.contains("hint: "), "{err}");
    assert!(!target.exists(), "a failed restore leaves nothing behind");
    // The live store is unaffected.
    assert_eq!(ok(&s.run(&["get", "a", "invoices", "inv-1"])), "one\n");
}

#[test]
fn certificate_is_pending_then_complete() {
    let s = Aged::init();
    s.then(|db| {
        for (subject, value) in [("a", b"one"), ("b", b"two")] {
            db.register_account(subject).expect("register");
            db.put(subject, "invoices", b"inv-1", value).expect("put");
        }
        db.shred("a", shredkv::Classes::All).expect("shred");
    });

    let output = s.run(&["certificate", "a"]);
    let out = ok(&output);
    assert!(out.starts_with("CERTIFICATE OF ERASURE"), "{out}");
    assert!(out.contains("PENDING"), "{out}");
    assert!(stderr(&output).contains("PENDING"), "{}", stderr(&output));
    let doc = json(&s.run(&["--json", "certificate", "a"]));
    assert_eq!(doc["purge_status"], "pending", "{doc}");
    assert!(doc["purge_due_by"].is_string(), "{doc}");

    // Compaction removes the dead ciphertext; the rotation destroys the
    // epoch that wrapped the destroyed keys.
    ok(&s.run(&["compact"]));
    ok(&s.run(&["rotate-epoch"]));
    let out = ok(&s.run(&["certificate", "a"]));
    assert!(out.contains("COMPLETE"), "{out}");
    let doc = json(&s.run(&["--json", "certificate", "a"]));
    assert_eq!(doc["purge_status"], "complete", "{doc}");
    assert_eq!(doc["keys_live_in_erased_scopes"], 0);
    assert_eq!(doc["dead_records_remaining"], 0);

    // Nothing erased, or nobody: not found.
    let err = fails_with(&s.run(&["certificate", "b"]), 3);
    assert!(err.contains("nothing"), "{err}");
    let err = fails_with(&s.run(&["certificate", "nobody"]), 3);
    assert!(err.contains("unknown subject"), "{err}");
}

#[test]
fn policy_apply_shows_the_change_and_recomputes_deadlines() {
    let f = Fixture::init();
    f.put_account("a", "support_communications", "t-1", "ticket");
    ok(&f.run(&["close-account", "a"]));
    let text = std::fs::read_to_string(default_policy_path())
        .expect("read")
        .replace("retain = \"3 years\"", "retain = \"4 years\"");
    let changed = f.dir.path().join("changed.toml");
    std::fs::write(&changed, text).expect("write");
    let old = json(&shredkv(&[
        "--json",
        "policy",
        "check",
        path_str(&default_policy_path()),
    ]))["digest"]
        .clone();
    let new = json(&shredkv(&["--json", "policy", "check", path_str(&changed)]))["digest"].clone();

    let out = ok(&f.run(&["policy", "apply", path_str(&changed)]));
    assert!(out.contains(old.as_str().expect("digest")), "{out}");
    assert!(out.contains(new.as_str().expect("digest")), "{out}");
    assert!(out.contains("recomputed"), "{out}");
    assert!(
        out.contains("support_communications  retain 3 years -> 4 years"),
        "{out}"
    );
    // The store now needs the new file, and the deadline moved a year.
    fails_with(&f.run(&["stats"]), 6);
    let with_new = |args: &[&str]| {
        let mut all = vec!["--policy", path_str(&changed)];
        all.extend_from_slice(args);
        f.run(&all)
    };
    let stats = json(&with_new(&["--json", "stats"]));
    assert!(stats["deadlines"].as_u64() > Some(0), "{stats}");
    let tail = json(&with_new(&["--json", "audit", "tail", "-n", "3"]));
    assert!(
        tail["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["event"] == "policy-applied"),
        "{tail}"
    );
    let doc = json(&with_new(&[
        "--json",
        "policy",
        "apply",
        path_str(&changed),
    ]));
    assert_eq!(doc["applied"], false, "{doc}");

    // A broken file, or the wrong policy in force: exit 6.
    let bad = f.dir.path().join("bad.toml");
    std::fs::write(&bad, "version = 1\n[[class]\n").expect("write");
    let err = fails_with(&with_new(&["policy", "apply", path_str(&bad)]), 6);
    assert!(err.contains("line 2, column"), "{err}");
    fails_with(&f.run(&["policy", "apply", path_str(&changed)]), 6);
}

#[test]
fn redb_stores_are_detected() {
    let f = Fixture::new();
    ok(&f.run(&["--backend", "redb", "init"]));
    f.put_account("a", "invoices", "inv-1", "one");
    assert_eq!(
        ok(&f.run(&["--backend", "redb", "get", "a", "invoices", "inv-1"])),
        "one\n"
    );
    let err = fails_with(&f.run(&["--backend", "sled", "stats"]), 3);
    assert!(err.contains("redb"), "{err}");
}

#[test]
fn every_subcommand_has_an_example_in_its_help() {
    let help = ok(&shredkv(&["--help"]));
    assert!(help.contains("Exit codes:"), "{help}");
    for code in [
        "0  ok",
        "3  not found",
        "4  erased",
        "5  integrity",
        "6  policy",
        "7  key provider",
    ] {
        assert!(help.contains(code), "{code} missing from --help");
    }
    for sub in [
        &["init"][..],
        &["stats"],
        &["subjects"],
        &["show"],
        &["get"],
        &["put"],
        &["delete"],
        &["export"],
        &["shred"],
        &["restrict"],
        &["unrestrict"],
        &["re-register"],
        &["hold"],
        &["release"],
        &["holds"],
        &["verify"],
        &["audit", "tail"],
        &["audit", "verify"],
        &["policy", "show"],
        &["policy", "check"],
        &["policy", "apply"],
        &["close-account"],
        &["opt-out"],
        &["release-data"],
        &["request-deletion"],
        &["compact"],
        &["rotate-epoch"],
        &["backup"],
        &["restore"],
        &["export-erasure-log"],
        &["certificate"],
        &["demo"],
    ] {
        let mut args = sub.to_vec();
        args.push("--help");
        let text = ok(&shredkv(&args));
        assert!(
            text.contains("Example"),
            "`{}` has no example",
            sub.join(" ")
        );
        assert!(
            text.contains("shredkv") || text.contains("cargo run"),
            "{text}"
        );
    }
}

#[test]
fn demo_runs_and_passes() {
    let output = shredkv(&["demo"]);
    let out = ok(&output);
    assert!(out.contains("All "), "{out}");
    assert!(out.contains("checks passed"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    assert!(out.contains("legal hold: case TAX-2025-117"), "{out}");
    for line in [
        "PASS  marketing contacts are kept 2 days after the opt-out and erased 3 days after it",
        "PASS  account_profile is readable until 60 days after closure and erased after",
        "PASS  invoices is readable until 10 years after closure and erased after",
        "PASS  the early backup cannot be restored: StoreKeysDestroyed",
        "PASS  hooli-io, erased after the backup, stays erased in the restored copy",
        "CERTIFICATE OF ERASURE",
        "purge           COMPLETE",
    ] {
        assert!(out.contains(line), "{line} missing from:\n{out}");
    }

    let output = shredkv(&["--json", "--backend", "redb", "demo"]);
    let doc: Value = serde_json::from_str(&stdout(&output)).expect("JSON summary");
    assert_eq!(doc["ok"], true, "{doc}");
    assert_eq!(code(&output), 0);
}

/// Purge must not depend on anyone remembering to compact: work left undone
/// past the timeline makes `stats` and `verify` exit 8 and say what is late.
#[test]
fn overdue_purge_exits_8_from_stats_and_verify() {
    let f = Fixture::new();
    // The application ran 40 days ago with its background maintenance off,
    // and overwrote a record: its re-key is long overdue by now.
    let clock = shredkv::ManualClock::new(
        jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * 40),
    );
    {
        let db = shredkv::Db::open(
            shredkv::Config::new(&f.store)
                .allow_key_file_in_store(true)
                .clock(std::sync::Arc::new(clock.clone()))
                .sync_writes(true)
                .maintenance_every(None),
        )
        .expect("open");
        db.register_account("acct").expect("register");
        db.put("acct", "account_profile", b"k", b"v1").expect("put");
        db.put("acct", "account_profile", b"k", b"v2")
            .expect("overwrite");
    }
    let out = f.run(&["stats", "--json"]);
    assert_eq!(code(&out), 8, "{}", stderr(&out));
    let doc: Value = serde_json::from_str(&stdout(&out)).expect("stats JSON");
    assert_eq!(doc["purge"]["overdue"], true);
    assert_eq!(doc["purge"]["rekeys"], 1);
    let out = f.run(&["verify"]);
    assert_eq!(code(&out), 8, "{}", stdout(&out));
    assert!(stdout(&out).contains("purge overdue"), "{}", stdout(&out));
    // Compaction catches up; both are clean again.
    ok(&f.run(&["compact"]));
    ok(&f.run(&["stats"]));
    ok(&f.run(&["verify"]));
}

/// `shard-of` names the shard whose store takes the account: of four
/// shard stores (bound by the library), only the one it names registers
/// the account, and the next refuses it (exit 2, naming both shards).
/// `stats` names a shard store's shard, and a plain store's none.
#[test]
fn shard_of_names_the_store_that_takes_the_account() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = |shard: u32| dir.path().join(format!("shard-{shard}"));
    let keys = |shard: u32| dir.path().join(format!("shard-{shard}.keys"));
    for shard in 0..4 {
        drop(
            shredkv::Db::open(
                shredkv::Config::new(store(shard))
                    .key_file(keys(shard))
                    .maintenance_every(None)
                    .shard(shard, 4),
            )
            .expect("a shard store"),
        );
    }
    let mut named = std::collections::BTreeSet::new();
    for account in ["acct-1", "acct-2", "acct-3", "acct-4", "acct-5", "acct-6"] {
        let out = ok(&shredkv(&["shard-of", account, "--shards", "4"]));
        let shard: u32 = out
            .trim()
            .strip_prefix("shard ")
            .and_then(|rest| rest.strip_suffix(" of 4"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("shard-of printed {out:?}"));
        let doc = json(&shredkv(&["--json", "shard-of", account, "--shards", "4"]));
        assert_eq!(doc["shard"], shard, "{doc}");
        assert_eq!(doc["shards"], 4, "{doc}");
        named.insert(shard);
        let put = |shard: u32| {
            run_on(
                &store(shard),
                &[
                    "--key-file",
                    path_str(&keys(shard)),
                    "put",
                    account,
                    "account_profile",
                    "email",
                    "ops@example.com",
                    "--register-account",
                ],
            )
        };
        let other = (shard + 1) % 4;
        let err = fails_with(&put(other), 2);
        assert!(
            err.contains(&format!("belongs to shard {shard} of 4"))
                && err.contains(&format!("is shard {other} of 4")),
            "{err}"
        );
        ok(&put(shard));
    }
    assert!(named.len() > 1, "six accounts all in one shard: {named:?}");

    let stats = ok(&run_on(
        &store(2),
        &["--key-file", path_str(&keys(2)), "stats"],
    ));
    assert!(
        stats
            .lines()
            .any(|l| l.starts_with("shard") && l.ends_with("2 of 4")),
        "{stats}"
    );
    let doc = json(&run_on(
        &store(2),
        &["--json", "--key-file", path_str(&keys(2)), "stats"],
    ));
    assert_eq!(
        (doc["shard"].clone(), doc["shards"].clone()),
        (2.into(), 4.into())
    );
    let plain = Fixture::init();
    let stats = ok(&plain.run(&["stats"]));
    assert!(stats.contains("none (not split into shards)"), "{stats}");
    fails_with(&shredkv(&["shard-of", "acct-1", "--shards", "0"]), 2);
}
