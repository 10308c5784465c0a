//! The `shredkv` binary end to end: every subcommand, its exit codes, its
//! JSON output, and what it says about bad input (missing store, bad key
//! file, bad policy, tampered and corrupt data, unknown and erased subjects).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

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

    /// Runs `shredkv --store STORE args...`.
    fn run(&self, args: &[&str]) -> Output {
        let mut all = vec!["--store", path_str(&self.store)];
        all.extend_from_slice(args);
        shredkv(&all)
    }

    /// Puts one record, registering the subject as an account.
    fn put_account(&self, subject: &str, class: &str, key: &str, value: &str) {
        ok(&self.run(&["put", subject, class, key, value, "--register-account"]));
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// Runs the binary with `args`, without `SHREDKV_STORE` from the environment.
fn shredkv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shredkv"))
        .args(args)
        .env_remove("SHREDKV_STORE")
        .output()
        .expect("run shredkv")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exited, not killed")
}

/// Asserts success and returns stdout.
fn ok(output: &Output) -> String {
    assert_eq!(
        code(output),
        0,
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
    stdout(output)
}

/// Asserts the exit code and returns stderr.
fn fails_with(output: &Output, expected: i32) -> String {
    assert_eq!(
        code(output),
        expected,
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
    let err = stderr(output);
    assert!(err.contains("error: "), "{err}");
    err
}

fn json(output: &Output) -> Value {
    serde_json::from_str(&ok(output)).expect("stdout is one JSON document")
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
        .args(["--json", "stats"])
        .env("SHREDKV_STORE", &f.store)
        .output()
        .expect("run");
    let doc = json(&output);
    assert_eq!(doc["backend"], "sled");
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
    assert!(err.contains("does not unlock"), "{err}");
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
    // Shredding again is a no-op receipt.
    assert!(ok(&f.run(&["shred", "acct-1"])).contains("already erased"));

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
    let f = Fixture::init();
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
    let f = Fixture::init();
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
    let doc = json(&f.run(&["--json", "stats"]));
    assert_eq!(doc["accounts"], 1);
    assert_eq!(doc["end_users"], 1);

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

    assert!(ok(&f.run(&["audit", "verify"])).starts_with("OK: 3 entries"));
    let doc = json(&f.run(&["--json", "audit", "verify"]));
    assert_eq!(doc["intact"], true);
}

/// Rewrites the reason in the last audit entry of a closed store
/// ("case 9" to "case 8"), recomputing the entry's CRC when asked.
fn edit_last_audit_entry(store: &Path, recompute_crc: bool) {
    let db = sled::open(store.join("sled")).expect("open sled");
    let audit = db.open_tree("audit").expect("audit tree");
    let (key, value) = audit.last().expect("read").expect("an entry");
    let mut value = value.to_vec();
    let at = value
        .windows(6)
        .position(|w| w == b"case 9")
        .expect("the reason is in the entry");
    value[at + 5] = b'8';
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
    let f = Fixture::init();
    f.put_account("a", "invoices", "inv-1", "one");
    ok(&f.run(&["hold", "a", "--reason", "case 9"]));
    edit_last_audit_entry(&f.store, true);
    let output = f.run(&["audit", "verify"]);
    assert_eq!(code(&output), 5, "{}", stderr(&output));
    let out = stdout(&output);
    assert!(out.contains("BROKEN: audit entry 2 was edited"), "{out}");
    let doc: Value =
        serde_json::from_str(&stdout(&f.run(&["--json", "audit", "verify"]))).expect("JSON report");
    assert_eq!(doc["intact"], false);
    assert!(
        doc["first_break"]
            .as_str()
            .is_some_and(|b| b.contains("entry 2"))
    );
    assert_eq!(code(&f.run(&["verify"])), 5);
}

#[test]
fn a_corrupt_audit_head_refuses_to_open_with_exit_5() {
    let f = Fixture::init();
    f.put_account("a", "invoices", "inv-1", "one");
    ok(&f.run(&["hold", "a", "--reason", "case 9"]));
    edit_last_audit_entry(&f.store, false);
    let err = fails_with(&f.run(&["audit", "verify"]), 5);
    assert!(err.contains("tree `audit`"), "{err}");
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

    let output = shredkv(&["--json", "--backend", "redb", "demo"]);
    let doc: Value = serde_json::from_str(&stdout(&output)).expect("JSON summary");
    assert_eq!(doc["ok"], true, "{doc}");
    assert_eq!(code(&output), 0);
}
