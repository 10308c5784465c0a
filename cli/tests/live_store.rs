//! The CLI against a live store: a second process (the `live_store`
//! example) holds the store open and serves its admin socket; the CLI runs
//! every store command through the socket, prints what it prints when it
//! opens the store itself, exits with the same codes, and refuses the
//! commands that need the store to itself. Also: the socket is owner-only,
//! peers of another uid are refused, a client that leaves mid-request or
//! sends garbage does not hurt the server, and the socket goes away with
//! the store.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};

use serde_json::Value;

mod common;
use common::{code, fails_with, json, ok, run_on, shredkv, stderr, stdout};

/// A store directory (key file inside, as the CLI tests allow).
struct Fixture {
    dir: tempfile::TempDir,
    store: PathBuf,
}

impl Fixture {
    /// A new store with an account, an end user with a message, and a hold.
    fn seeded() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = dir.path().join("store");
        let f = Self { dir, store };
        ok(&f.run(&["init"]));
        ok(&f.run(&[
            "put",
            "acct-1",
            "account_profile",
            "email",
            "ops@example.com",
            "--register-account",
        ]));
        ok(&f.run(&[
            "put",
            "user-7",
            "message_content",
            "msg-1",
            "see you at noon",
            "--account",
            "acct-1",
        ]));
        ok(&f.run(&[
            "hold", "acct-1", "--class", "invoices", "--reason", "case-117",
        ]));
        f
    }

    fn socket(&self) -> PathBuf {
        self.store.join("admin.sock")
    }

    /// `shredkv --store STORE args...`
    fn run(&self, args: &[&str]) -> Output {
        run_on(&self.store, args)
    }

    /// A closed copy of the store (made before it is served).
    fn copy(&self) -> PathBuf {
        let to = self.dir.path().join("copy");
        copy_dir(&self.store, &to);
        to
    }

    /// Starts the application holding the store, serving its socket: this
    /// test binary again, running only [`live_store_process`].
    fn serve(&self, allowed_uid: Option<u32>) -> Live {
        let plan = [
            self.store.display().to_string(),
            self.store.join("keys").display().to_string(),
            self.socket().display().to_string(),
            allowed_uid.map_or_else(|| "-".to_string(), |uid| uid.to_string()),
        ]
        .join("\n");
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "live_store_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(LIVE_STORE_PLAN, plan)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the live store process");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        loop {
            let line = lines
                .next()
                .expect("the live store process said ready")
                .expect("read its stdout");
            // The test harness prints its own line first, without a newline.
            if line.trim_end().ends_with(READY) {
                break;
            }
        }
        // The rest of its output (the test harness's) is read and dropped,
        // so its writes never fail.
        std::thread::spawn(move || lines.for_each(drop));
        let stdin = child.stdin.take();
        Live { child, stdin }
    }
}

/// The environment variable that turns this test binary into the live
/// store process: the store, key file, socket and allowed uid (`-` for the
/// process's own), one a line.
const LIVE_STORE_PLAN: &str = "SHREDKV_TEST_LIVE_STORE";

/// What the live store process prints once it serves.
const READY: &str = "live store ready";

/// Not a test of its own: the application holding the store open, when
/// [`Fixture::serve`] runs this binary again with [`LIVE_STORE_PLAN`] set.
/// Opens the store with an admin socket, prints `ready`, and serves until
/// its stdin closes (then drops the store, which removes the socket) or it
/// is killed.
#[test]
fn live_store_process() {
    let Ok(plan) = std::env::var(LIVE_STORE_PLAN) else {
        return;
    };
    let lines: Vec<&str> = plan.lines().collect();
    let [store, key_file, socket, uid] = lines[..] else {
        panic!("a plan of four lines: {plan:?}");
    };
    let mut config = shredkv::Config::new(store)
        .key_file(key_file)
        .allow_key_file_in_store(true)
        .sync_writes(true)
        .maintenance_every(None)
        .admin_socket(socket);
    if uid != "-" {
        config = config.admin_allowed_uid(uid.parse().expect("a uid"));
    }
    let db = shredkv::Db::open(config).expect("open the store");
    println!("{READY}");
    std::io::stdout().flush().expect("flush");
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(db);
}

/// The application process; killed if the test did not stop it.
struct Live {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Live {
    /// Closes its stdin: it drops its store (and the admin server) and exits.
    fn stop(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "live_store exited with {status}");
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        let kind = entry.file_type().expect("type");
        if kind.is_dir() {
            copy_dir(&entry.path(), &target);
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The process's uid: the owner of a file it created.
fn my_uid(f: &Fixture) -> u32 {
    std::fs::metadata(f.dir.path()).expect("stat").uid()
}

#[test]
fn read_commands_through_the_socket_print_what_they_print_directly() {
    let f = Fixture::seeded();
    let copy = f.copy();
    let live = f.serve(None);
    let commands: &[&[&str]] = &[
        &["subjects"],
        &["subjects", "--json"],
        &["show", "acct-1"],
        &["show", "acct-1", "--json"],
        &["get", "user-7", "message_content", "msg-1"],
        &["get", "user-7", "message_content", "msg-1", "--json"],
        &["holds"],
        &["holds", "--json"],
        &["export"],
        &["export", "acct-1"],
        &["verify"],
        &["audit", "verify"],
        &["audit", "tail", "-n", "3", "--json"],
        // Failures: the same message, hint and exit code.
        &["get", "user-7", "message_content", "nope"],
        &["show", "nobody"],
        &["get", "user-7", "no_such_class", "k"],
        &["certificate", "acct-1"],
        &["shred", "nobody"],
    ];
    for args in commands {
        let through_socket = f.run(args);
        let direct = run_on(&copy, args);
        assert_eq!(
            (code(&through_socket), stdout(&through_socket)),
            (code(&direct), stdout(&direct)),
            "stdout of {args:?}; stderr live:\n{}",
            stderr(&through_socket)
        );
        assert_eq!(
            stderr(&through_socket),
            stderr(&direct),
            "stderr of {args:?}"
        );
    }
    // The policy in force, as the application runs it (the text names the
    // store's directory: each its own).
    for args in [&["policy", "show"][..], &["policy", "show", "--json"]] {
        let live = ok(&f.run(args));
        let direct = ok(&run_on(&copy, args));
        let named = |text: &str, dir: &Path| {
            let dir = std::fs::canonicalize(dir).expect("canonical");
            text.replace(dir.to_str().expect("UTF-8"), "STORE").replace(
                dir.to_str().expect("UTF-8").replace('/', "\\/").as_str(),
                "STORE",
            )
        };
        assert_eq!(named(&live, &f.store), named(&direct, &copy), "{args:?}");
        assert!(live.contains("message_content"), "{live}");
    }
    // The failures above did fail, with their own codes.
    fails_with(&f.run(&["show", "nobody"]), 3);
    fails_with(&f.run(&["get", "user-7", "no_such_class", "k"]), 2);
    // Stats differ only in the store's path (and its size on disk).
    let mut live_stats = json(&f.run(&["stats", "--json"]));
    let mut direct_stats = json(&run_on(&copy, &["stats", "--json"]));
    for doc in [&mut live_stats, &mut direct_stats] {
        let fields = doc.as_object_mut().expect("object");
        fields.remove("size_on_disk");
        fields.remove("headroom_bytes"); // the disk changes between the runs
        // The application's key cache is warm; the direct run's is not.
        fields.remove("cached_keys");
        // Read at two moments, on the same system clock: neither behind.
        let store_time = fields.remove("store_time").expect("the store's time");
        let clock_time = fields.remove("clock_time").expect("the clock's time");
        let seconds = |v: &serde_json::Value| {
            v.as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(jiff::Timestamp::as_second)
                .expect("a time")
        };
        assert!(
            seconds(&store_time) <= seconds(&clock_time) + 1,
            "{store_time} {clock_time}"
        );
    }
    assert_eq!(live_stats, direct_stats);
    assert_eq!(live_stats["accounts"], 1);
    let text = ok(&f.run(&["stats"]));
    assert!(
        text.contains(&f.store.display().to_string()),
        "stats names the live store: {text}"
    );
    live.stop();
}

#[test]
fn write_commands_through_the_socket_change_the_live_store() {
    let f = Fixture::seeded();
    let live = f.serve(None);

    // Records.
    ok(&f.run(&[
        "put",
        "user-8",
        "message_content",
        "m2",
        "hello",
        "--account",
        "acct-1",
        "--expires-in",
        "2 hours",
    ]));
    assert_eq!(
        ok(&f.run(&["get", "user-8", "message_content", "m2"])),
        "hello\n"
    );
    let put = json(&f.run(&["put", "user-8", "message_content", "m3", "x", "--json"]));
    assert_eq!(put["key"], "m3");
    ok(&f.run(&["delete", "user-8", "message_content", "m3"]));
    let err = fails_with(&f.run(&["delete", "user-8", "message_content", "m3"]), 3);
    assert!(err.contains("nothing to delete"), "{err}");

    // Restriction.
    ok(&f.run(&["restrict", "user-8"]));
    let err = fails_with(&f.run(&["get", "user-8", "message_content", "m2"]), 1);
    assert!(err.contains("restricted"), "{err}");
    let state = json(&f.run(&["unrestrict", "user-8", "--json"]));
    assert_eq!(state["state"], "active");
    ok(&f.run(&["get", "user-8", "message_content", "m2"]));

    // Holds.
    ok(&f.run(&["hold", "user-8", "--reason", "case-9"]));
    let holds = json(&f.run(&["holds", "--json"]));
    assert_eq!(holds["holds"].as_array().expect("list").len(), 2);
    ok(&f.run(&["release", "user-8"]));
    fails_with(&f.run(&["release", "user-8"]), 3);

    // Erasure: the receipt, then the data is gone.
    let receipt = json(&f.run(&["shred", "user-7", "--json"]));
    assert!(receipt["keys_destroyed"].as_u64().expect("count") > 0);
    let err = fails_with(&f.run(&["get", "user-7", "message_content", "msg-1"]), 4);
    assert!(err.contains("was erased"), "{err}");
    let certificate = ok(&f.run(&["certificate", "user-7"]));
    assert!(
        certificate.contains("PENDING") || certificate.contains("COMPLETE"),
        "{certificate}"
    );
    ok(&f.run(&["re-register", "user-7"]));
    // One class alone, through the socket too.
    ok(&f.run(&["shred", "user-7", "--class", "message_content"]));
    fails_with(&f.run(&["put", "user-7", "message_content", "m9", "x"]), 4);
    let reopened = json(&f.run(&[
        "re-register",
        "user-7",
        "--class",
        "message_content",
        "--json",
    ]));
    assert_eq!(reopened["class"], "message_content", "{reopened}");
    ok(&f.run(&["put", "user-7", "message_content", "m9", "x"]));

    // Retention events.
    let opt_out = json(&f.run(&["opt-out", "acct-1", "--json"]));
    assert!(opt_out["opted_out_at"].is_string(), "{opt_out}");
    let released = json(&f.run(&["release-data", "acct-1", "subscriber_records", "--json"]));
    assert_eq!(released["class"], "subscriber_records");
    fails_with(&f.run(&["release-data", "acct-1", "message_content"]), 6);
    let closed = json(&f.run(&["close-account", "acct-1", "--json"]));
    assert_eq!(closed["newly_closed"], true);
    let deletion = json(&f.run(&["request-deletion", "user-8", "--json"]));
    assert!(deletion["erased_at"].is_string(), "{deletion}");

    // Maintenance, with the same reports.
    let compaction = json(&f.run(&["compact", "--json"]));
    assert!(compaction["items"].is_u64(), "{compaction}");
    let epoch = json(&f.run(&["rotate-epoch", "--json"]));
    assert!(
        epoch["live_epochs"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    );
    let report = ok(&f.run(&["verify"]));
    assert!(report.contains("OK: no damage found"), "{report}");
    let audit = json(&f.run(&["audit", "tail", "-n", "100", "--json"]));
    let events: Vec<&str> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["event"].as_str())
        .collect();
    assert!(events.len() > 5, "{events:?}");

    // Files written by the application where the request says (relative
    // paths are made absolute by the CLI).
    let backup = f.dir.path().join("backup-1");
    let doc = json(&f.run(&["backup", backup.to_str().expect("UTF-8"), "--json"]));
    assert!(doc["entries"].as_u64().expect("entries") > 0);
    assert!(
        backup.join("store.redb").is_file(),
        "the backup was written"
    );
    let log = f.dir.path().join("erasures.log");
    let doc = json(&f.run(&["export-erasure-log", log.to_str().expect("UTF-8"), "--json"]));
    assert!(doc["items"].as_u64().expect("items") > 0);
    assert!(log.is_file());

    live.stop();
    // The same store, opened directly once the application is gone, holds
    // what the live commands did.
    let err = fails_with(&f.run(&["get", "user-7", "message_content", "msg-1"]), 1);
    assert!(err.contains("belongs to an account closed at"), "{err}");
    let account = json(&f.run(&["show", "acct-1", "--json"]));
    assert!(account["closed_at"].is_string(), "{account}");
    assert!(account["opted_out_at"].is_string(), "{account}");
    let subjects = json(&f.run(&["subjects", "--json"]));
    assert_eq!(subjects["subjects"].as_array().expect("list").len(), 3);
}

#[test]
fn commands_that_need_the_store_to_themselves_are_refused_live() {
    let f = Fixture::seeded();
    let live = f.serve(None);
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy/default.toml");
    let into = f.dir.path().join("restored");
    let backup = f.dir.path().join("backup");
    ok(&f.run(&["backup", backup.to_str().expect("UTF-8")]));
    for args in [
        vec!["init"],
        vec!["policy", "apply", policy.to_str().expect("UTF-8")],
        vec![
            "restore",
            backup.to_str().expect("UTF-8"),
            "--into",
            into.to_str().expect("UTF-8"),
        ],
    ] {
        let err = fails_with(&f.run(&args), 1);
        assert!(
            err.contains("cannot run against a live store"),
            "{args:?}: {err}"
        );
    }
    let err = fails_with(
        &shredkv(&[
            "--admin-socket",
            f.socket().to_str().expect("UTF-8"),
            "demo",
        ]),
        2,
    );
    assert!(err.contains("cannot run against a live store"), "{err}");
    assert!(!into.exists(), "nothing was restored");
    live.stop();
}

#[test]
fn the_socket_is_owner_only_and_goes_away_with_the_store() {
    let f = Fixture::seeded();
    let live = f.serve(None);
    let meta = std::fs::symlink_metadata(f.socket()).expect("the socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), my_uid(&f));
    // No staging directory is left next to it.
    let leftovers: Vec<_> = std::fs::read_dir(&f.store)
        .expect("read store dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".bind"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Through the socket, explicitly named, without --store.
    let stats = json(&shredkv(&[
        "--admin-socket",
        f.socket().to_str().expect("UTF-8"),
        "stats",
        "--json",
    ]));
    assert_eq!(stats["accounts"], 1);
    live.stop();
    assert!(
        !f.socket().exists(),
        "dropping the store removes its socket"
    );
    // The store is free again: the CLI opens it itself.
    let stats = json(&f.run(&["stats", "--json"]));
    assert_eq!(stats["accounts"], 1);
}

#[test]
fn options_that_choose_how_a_store_opens_are_noted_as_unused_live() {
    let f = Fixture::seeded();
    let _live = f.serve(None);
    let quiet = f.run(&["stats", "--json"]);
    ok(&quiet);
    assert_eq!(stderr(&quiet), "", "no note without such options");
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy/default.toml");
    let noted = f.run(&[
        "--backend",
        "sled",
        "--policy",
        policy.to_str().expect("UTF-8"),
        "stats",
        "--json",
    ]);
    assert_eq!(json(&noted)["accounts"], 1, "the command still runs");
    let err = stderr(&noted);
    assert!(
        err.contains("note: --backend, --policy not used") && err.contains("admin.sock"),
        "{err}"
    );
}

#[test]
fn a_stale_socket_is_passed_over_unless_named() {
    let f = Fixture::seeded();
    let mut live = f.serve(None);
    live.child.kill().expect("kill");
    live.child.wait().expect("wait");
    assert!(f.socket().exists(), "a killed server leaves its socket");
    let stats = json(&f.run(&["stats", "--json"]));
    assert_eq!(stats["accounts"], 1);
    let err = fails_with(
        &f.run(&[
            "--admin-socket",
            f.socket().to_str().expect("UTF-8"),
            "stats",
        ]),
        1,
    );
    assert!(err.contains("cannot connect to the admin socket"), "{err}");
    // A new server replaces the stale socket.
    let live = f.serve(None);
    ok(&f.run(&["subjects"]));
    live.stop();
}

#[test]
fn a_peer_of_another_uid_is_refused() {
    let f = Fixture::seeded();
    let other = my_uid(&f) + 1;
    let live = f.serve(Some(other));
    let output = f.run(&["get", "user-7", "message_content", "msg-1"]);
    let err = fails_with(&output, 1);
    assert!(
        err.contains(&format!(
            "peer uid {} is not the store owner's uid {other}",
            my_uid(&f)
        )),
        "{err}"
    );
    assert!(stdout(&output).is_empty(), "nothing was served");
    live.stop();
}

/// One frame: a big-endian length and the bytes.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(body.len())
        .expect("small")
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(body);
    out
}

fn read_frame(stream: &mut UnixStream) -> Value {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).expect("a frame header");
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).expect("a frame body");
    serde_json::from_slice(&body).expect("JSON")
}

fn hello(socket: &Path) -> UnixStream {
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream
        .write_all(&frame(br#"{"hello":{"protocol":2}}"#))
        .expect("hello");
    let welcome = read_frame(&mut stream);
    assert!(welcome["welcome"]["store"].is_string(), "{welcome}");
    stream
}

#[test]
fn clients_that_leave_or_send_garbage_do_not_hurt_the_server() {
    let f = Fixture::seeded();
    let live = f.serve(None);
    let socket = f.socket();

    // Leaves in the middle of a verify and of an export.
    for request in [
        &br#"{"request":"verify"}"#[..],
        br#"{"request":{"export":{"subject":null}}}"#,
    ] {
        let mut stream = hello(&socket);
        stream.write_all(&frame(request)).expect("request");
        drop(stream);
    }
    // Leaves right after asking for an erasure: the erasure is done anyway.
    let mut stream = hello(&socket);
    stream
        .write_all(&frame(
            br#"{"request":{"shred":{"subject":"user-7","classes":[]}}}"#,
        ))
        .expect("request");
    drop(stream);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let info = json(&f.run(&["show", "user-7", "--json"]));
        if info["state"] == "erased" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the abandoned shred completed: {info}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    fails_with(&f.run(&["get", "user-7", "message_content", "msg-1"]), 4);

    // Leaves inside a frame.
    let mut stream = hello(&socket);
    stream
        .write_all(&[0, 0, 0, 50, b'{'])
        .expect("half a frame");
    drop(stream);

    // A frame over the limit: an error frame, then the connection closes.
    let mut stream = hello(&socket);
    stream.write_all(&[0xff, 0xff, 0xff, 0xff]).expect("header");
    let refusal = read_frame(&mut stream);
    assert!(
        refusal["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("exceeds the limit")),
        "{refusal}"
    );
    assert_eq!(refusal["error"]["category"], "failure");

    // Not JSON, an unknown request naming a subject, and a known request
    // with a field this server does not know (a newer client's option must
    // be refused, never ignored): refused without echoing what was sent.
    for garbage in [
        &b"\x00\x01 not json"[..],
        br#"{"request":{"forget":{"subject":"alice@example.com"}}}"#,
        br#"{"request":{"re_register":{"subject":"alice@example.com","class":"x"}}}"#,
    ] {
        let mut stream = hello(&socket);
        stream.write_all(&frame(garbage)).expect("garbage");
        let refusal = read_frame(&mut stream);
        let message = refusal["error"]["message"].as_str().expect("message");
        assert!(message.contains("malformed request"), "{message}");
        assert!(!message.contains("alice"), "{message}");
    }

    // A request before the hello.
    let mut stream = UnixStream::connect(&socket).expect("connect");
    stream
        .write_all(&frame(br#"{"request":"stats"}"#))
        .expect("request");
    let refusal = read_frame(&mut stream);
    assert_eq!(refusal["error"]["kind"], "admin", "{refusal}");

    // Another protocol version.
    let mut stream = UnixStream::connect(&socket).expect("connect");
    stream
        .write_all(&frame(br#"{"hello":{"protocol":99}}"#))
        .expect("hello");
    let refusal = read_frame(&mut stream);
    assert!(
        refusal["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("protocol version 99")),
        "{refusal}"
    );

    // The server still serves, and the store is consistent.
    let report = ok(&f.run(&["verify"]));
    assert!(report.contains("OK: no damage found"), "{report}");
    let chain = ok(&f.run(&["audit", "verify"]));
    assert!(chain.starts_with("OK:"), "{chain}");
    ok(&f.run(&["put", "acct-1", "account_profile", "phone", "still here"]));
    assert_eq!(
        ok(&f.run(&["get", "acct-1", "account_profile", "phone"])),
        "still here\n"
    );
    live.stop();
}
