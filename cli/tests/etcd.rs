//! The CLI against a store kept in a real 3-member etcd cluster
//! (`--backend etcd --endpoints ... --namespace ...`; feature `etcd`, run by
//! `.ci/run` in its step "etcd backend").
#![cfg(feature = "etcd")]

mod common;

use common::{fails_with, json, ok, run_on};
use shredkv::internal::EtcdTestCluster;

#[test]
fn the_cli_operates_a_store_kept_in_etcd() {
    let cluster = EtcdTestCluster::shared();
    let dir = tempfile::tempdir().expect("a local directory");
    let store = dir.path().join("store");
    let endpoints = cluster.endpoints.join(",");
    let max_txn_ops = cluster.max_txn_ops.to_string();
    let namespace = format!("cli/{}/", dir.path().display());
    let run = |args: &[&str]| {
        let mut all = vec![
            "--backend",
            "etcd",
            "--endpoints",
            &endpoints,
            "--namespace",
            &namespace,
            "--max-txn-ops",
            &max_txn_ops,
        ];
        all.extend_from_slice(args);
        run_on(&store, &all)
    };
    // Nothing to open before `init`: no key file, so no store.
    let missing = fails_with(&run(&["stats"]), 3);
    assert!(missing.contains("shredkv init"), "{missing}");
    ok(&run(&["init"]));
    ok(&run(&[
        "put",
        "acct-1",
        "account_profile",
        "email",
        "ops@example.com",
        "--register-account",
    ]));
    ok(&run(&[
        "put",
        "user-1",
        "message_content",
        "msg-1",
        "see you at noon",
        "--account",
        "acct-1",
    ]));
    assert_eq!(
        ok(&run(&["get", "acct-1", "account_profile", "email"])),
        "ops@example.com\n"
    );
    let stats = json(&run(&["--json", "stats"]));
    assert_eq!(stats["backend"], "etcd", "{stats}");
    // The cluster's quota (etcd's default, 2 GiB: the shared test cluster
    // sets none) and what is left of it.
    assert_eq!(stats["capacity_bytes"].as_u64(), Some(2 << 30), "{stats}");
    assert!(stats["headroom_bytes"].as_u64() > Some(0), "{stats}");
    // A backup of the store, taken before the shred, is local files.
    let backup = dir.path().join("backup");
    ok(&run(&["backup", backup.to_str().expect("a UTF-8 path")]));
    assert!(backup.join("store.redb").is_file(), "a redb store");
    let receipt = json(&run(&["--json", "shred", "acct-1"]));
    assert_eq!(
        receipt["erased"].as_array().map(Vec::len),
        Some(2),
        "{receipt}"
    );
    let erased = fails_with(&run(&["get", "user-1", "message_content", "msg-1"]), 4);
    assert!(erased.contains("erased"), "{erased}");
    // The same shred again: the same receipt (a retry after a lost answer).
    assert_eq!(json(&run(&["--json", "shred", "acct-1"])), receipt);
    // Clean: exit 0.
    ok(&run(&["verify"]));
    // Restored into a local store with the live store's erasures replayed:
    // the shred made after the backup holds there too.
    let restored = dir.path().join("restored");
    let keys = store.join("keys"); // the live store's key file
    ok(&run(&[
        "--key-file",
        keys.to_str().expect("a UTF-8 path"),
        "restore",
        backup.to_str().expect("a UTF-8 path"),
        "--into",
        restored.to_str().expect("a UTF-8 path"),
    ]));
    let local = |args: &[&str]| {
        let mut all = vec!["--key-file", keys.to_str().expect("a UTF-8 path")];
        all.extend_from_slice(args);
        run_on(&restored, &all)
    };
    let erased = fails_with(&local(&["get", "user-1", "message_content", "msg-1"]), 4);
    assert!(erased.contains("erased"), "{erased}");
    ok(&local(&["verify"]));
    // Without --namespace the CLI says what is missing.
    let usage = run_on(
        &store,
        &["--backend", "etcd", "--endpoints", &endpoints, "stats"],
    );
    let err = fails_with(&usage, 2);
    assert!(err.contains("--namespace"), "{err}");
    // Without --endpoints the demo says what is missing.
    let demo = fails_with(&common::shredkv(&["--backend", "etcd", "demo"]), 2);
    assert!(demo.contains("--endpoints"), "{demo}");
}

/// The demo on a store in etcd: every check passes, the forensic one
/// searching the cluster's history of the store's namespace.
#[test]
fn the_demo_runs_on_etcd() {
    let cluster = EtcdTestCluster::shared();
    let endpoints = cluster.endpoints.join(",");
    let out = ok(&common::shredkv(&[
        "--backend",
        "etcd",
        "--endpoints",
        &endpoints,
        "demo",
    ]));
    assert!(out.contains("checks passed"), "{out}");
    assert!(out.contains("the etcd cluster's history holds"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    // The namespace the demo made is gone with its keys.
    let left = cluster.keys_with_prefix(b"shredkv-demo/");
    assert!(left.is_empty(), "{} keys left behind", left.len());
}
