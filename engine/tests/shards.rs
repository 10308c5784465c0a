//! Accounts routed to shards (`Shards`, `Config::shard`) on local redb
//! stores: each family (an account with its end users) lives in the store
//! of the account's shard and nowhere else, is erased there, and a store
//! refuses what belongs to another shard.
//!
//! The oracle routes by the definition in docs/scale-out.md ("accounts
//! routed to shards"), written out here: SHA-256 of `shredkv/shard/v1` ‖
//! 0x00 ‖ the id, its first 8 bytes big-endian, into Lamping and Veach's
//! jump consistent hash.

use std::path::Path;

use sha2::{Digest, Sha256};
use shredkv::{Classes, Config, Db, ErrorCategory, Shards};

/// The shard of `account_id` among `count`, per the documented routing.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    reason = "the jump hash is defined on doubles"
)]
fn routed(account_id: &str, count: u32) -> u32 {
    let digest = Sha256::digest([b"shredkv/shard/v1\0".as_slice(), account_id.as_bytes()].concat());
    let mut key = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    // Jump consistent hash, as the paper gives it.
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < i64::from(count) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1i64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    u32::try_from(b).expect("a shard")
}

fn shard_config(dir: &Path, shard: u32) -> Config {
    Config::new(dir.join(format!("shard-{shard}")))
        .key_file(dir.join(format!("shard-{shard}.keys")))
        .maintenance_every(None)
}

fn shards_in(dir: &Path, count: u32) -> Shards {
    let dir = dir.to_path_buf();
    Shards::new(count, move |shard| shard_config(&dir, shard)).expect("shards")
}

/// The id of an account that routes to `shard` of `count` (per the oracle).
fn account_on(shard: u32, count: u32) -> String {
    (0..)
        .map(|i| format!("acct-{i}"))
        .find(|id| routed(id, count) == shard)
        .expect("an account")
}

#[test]
fn each_family_lives_in_its_accounts_shard_and_is_erased_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shards = shards_in(dir.path(), 4);
    shards.serve_all().expect("serve");
    assert_eq!(shards.served(), vec![0, 1, 2, 3]);
    let accounts: Vec<String> = (0..80).map(|i| format!("acct-{i}")).collect();
    let mut per_shard = [0; 4];
    for account in &accounts {
        let shard = routed(account, 4);
        per_shard[shard as usize] += 1;
        assert_eq!(shards.shard_of(account).expect("route"), shard, "{account}");
        let db = shards.for_account(account).expect("served");
        db.register_account(account).expect("register");
        // End users follow their account, whatever their own id routes to.
        for n in 0..2 {
            let user = format!("{account}-user-{n}");
            db.register_end_user(&user, account).expect("register");
            db.put(&user, "message_content", b"m1", user.as_bytes())
                .expect("put");
        }
        db.put(account, "account_profile", b"email", account.as_bytes())
            .expect("put");
    }
    assert!(per_shard.iter().all(|&n| n > 0), "{per_shard:?}");

    // Every subject is in its account's shard and in no other.
    let subjects_in = |shard: u32| -> Db { shards.get(shard).expect("served") };
    for account in &accounts {
        let home = routed(account, 4);
        for shard in 0..4 {
            for subject in [
                account.clone(),
                format!("{account}-user-0"),
                format!("{account}-user-1"),
            ] {
                let found = subjects_in(shard).subject(&subject).expect("subject");
                assert_eq!(found.is_some(), shard == home, "{subject} in shard {shard}");
            }
        }
    }

    // Shred every fourth account: its family is erased in its shard, and
    // every other family, in every shard, reads as it was written.
    let shredded: Vec<&String> = accounts.iter().step_by(4).collect();
    for account in &shredded {
        let receipt = shards
            .for_account(account)
            .expect("served")
            .shred(account, Classes::All)
            .expect("shred");
        assert_eq!(receipt.erased.len(), 3, "{account}: {receipt:?}");
    }
    for account in &accounts {
        let db = shards.for_account(account).expect("served");
        let user = format!("{account}-user-1");
        let read = db.get(&user, "message_content", b"m1");
        if shredded.contains(&account) {
            assert!(matches!(&read, Err(e) if e.is_erased()), "{user}: {read:?}");
        } else {
            assert_eq!(read.expect("read"), Some(user.as_bytes().to_vec()));
        }
    }
    for shard in 0..4 {
        let report = subjects_in(shard).verify().expect("verify");
        assert!(report.problems.is_empty(), "shard {shard}: {report:?}");
    }
}

#[test]
fn a_shard_store_refuses_accounts_of_other_shards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shards = shards_in(dir.path(), 3);
    shards.serve_all().expect("serve");
    let here = shards.get(1).expect("served");
    let elsewhere = account_on(2, 3);
    let err = here
        .register_account(&elsewhere)
        .expect_err("an account of shard 2 in shard 1");
    assert!(err.is_wrong_shard(), "{err}");
    assert_eq!(err.category(), ErrorCategory::Usage);
    let message = err.to_string();
    assert!(
        message.contains("belongs to shard 2 of 3") && message.contains("is shard 1 of 3"),
        "{message}"
    );
    assert!(!message.contains(&elsewhere), "the id leaked: {message}");
    assert!(here.subject(&elsewhere).expect("subject").is_none());
    // An end user joins its account's shard, whatever its own id routes to.
    let account = account_on(1, 3);
    here.register_account(&account).expect("its own account");
    let user = account_on(0, 3);
    here.register_end_user(&user, &account)
        .expect("an end user follows its account");
}

#[test]
fn a_store_opened_as_another_shard_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || shard_config(dir.path(), 1);
    let account = account_on(1, 4);
    {
        let db = Db::open(config().shard(1, 4)).expect("bind as shard 1 of 4");
        db.register_account(&account).expect("register");
    }
    for (index, count) in [(1, 5), (2, 4), (0, 1)] {
        let err = Db::open(config().shard(index, count)).expect_err("another shard");
        assert!(err.is_wrong_shard(), "{index} of {count}: {err}");
        assert!(
            err.to_string().contains("is shard 1 of 4"),
            "{index} of {count}: {err}"
        );
    }
    // A node configured with another shard count is refused the same way.
    let other_count = shards_in(dir.path(), 5);
    let err = other_count
        .serve(1)
        .expect_err("5 shards over a store of 4");
    assert!(err.is_wrong_shard(), "{err}");
    // Opened without naming a shard, the store keeps its binding.
    let db = Db::open(config()).expect("open without a shard");
    let err = db
        .register_account(&account_on(3, 4))
        .expect_err("still shard 1 of 4");
    assert!(err.is_wrong_shard(), "{err}");
    assert!(db.subject(&account).expect("subject").is_some());
    drop(db);
    // No shard past the count.
    for (index, count) in [(4, 4), (0, 0)] {
        let err = Db::open(config().shard(index, count)).expect_err("no such shard");
        assert_eq!(err.category(), ErrorCategory::Usage, "{err}");
        assert!(!err.is_wrong_shard(), "{err}");
    }
}

#[test]
fn only_a_store_without_subjects_becomes_a_shard() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = || {
        Config::new(dir.path().join("plain"))
            .key_file(dir.path().join("plain.keys"))
            .maintenance_every(None)
    };
    let empty = || {
        Config::new(dir.path().join("empty"))
            .key_file(dir.path().join("empty.keys"))
            .maintenance_every(None)
    };
    Db::open(plain())
        .expect("create")
        .register_account("acct-0")
        .expect("register");
    drop(Db::open(empty()).expect("create"));

    let err = Db::open(plain().shard(0, 2)).expect_err("a store with subjects");
    assert_eq!(err.category(), ErrorCategory::Usage, "{err}");
    assert!(err.to_string().contains("holds subjects"), "{err}");
    // Nothing was bound: the store still takes any account.
    let db = Db::open(plain()).expect("open as before");
    for i in 0..8 {
        db.register_account(&format!("acct-{i}"))
            .expect("a plain store takes every account");
    }
    drop(db);

    let db = Db::open(empty().shard(0, 2)).expect("an empty store becomes shard 0");
    db.register_account(&account_on(0, 2)).expect("its account");
    let err = db
        .register_account(&account_on(1, 2))
        .expect_err("not its account");
    assert!(err.is_wrong_shard(), "{err}");
}

#[test]
fn an_account_of_a_shard_not_served_here_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shards = shards_in(dir.path(), 4);
    shards.serve(0).expect("serve 0");
    shards.serve(2).expect("serve 2");
    assert_eq!(shards.served(), vec![0, 2]);
    assert!(shards.for_account(&account_on(0, 4)).is_ok());
    let err = shards
        .for_account(&account_on(1, 4))
        .expect_err("shard 1 is not served");
    assert!(err.is_shard_not_served(), "{err}");
    assert_eq!(err.category(), ErrorCategory::Failure);
    assert!(err.to_string().contains("shard 1 of 4"), "{err}");

    assert!(shards.release(2));
    assert!(!shards.release(2), "released twice");
    let err = shards.for_account(&account_on(2, 4)).expect_err("released");
    assert!(err.is_shard_not_served(), "{err}");
    // Served again: the same store, bound as before.
    shards.serve(2).expect("serve 2 again");
    assert!(shards.for_account(&account_on(2, 4)).is_ok());

    let err = shards.serve(4).expect_err("no shard 4");
    assert_eq!(err.category(), ErrorCategory::Usage, "{err}");
    let err = Shards::new(0, |_| Config::new("unused")).expect_err("no shards");
    assert_eq!(err.category(), ErrorCategory::Usage, "{err}");
    let err = shards.shard_of("").expect_err("an invalid id");
    assert_eq!(err.category(), ErrorCategory::Usage, "{err}");
}

/// A shard's backup restores only as that shard: restored as another
/// shard, or under another count, it is refused before the target holds
/// anything (the target directory stays empty, ready for the right
/// restore). Restored as its own shard, or with no shard named, it serves
/// its accounts and still refuses other shards'. A backup of an unbound
/// store holding subjects (accounts no routing placed) cannot become a
/// shard either.
#[test]
fn a_shards_backup_restores_only_as_that_shard() {
    use shredkv::ErasureSource;
    let dir = tempfile::tempdir().expect("tempdir");
    let mine = account_on(1, 4);
    let other = account_on(2, 4);
    let config = shard_config(dir.path(), 1).shard(1, 4);
    let keys = dir.path().join("shard-1.keys");
    let db = Db::open(config).expect("open shard 1 of 4");
    db.register_account(&mine).expect("register");
    db.put(&mine, "message_content", b"m1", b"hello")
        .expect("put");
    db.backup(dir.path().join("backup")).expect("backup");
    let target = |name: &str| {
        Config::new(dir.path().join(name))
            .key_file(&keys)
            .maintenance_every(None)
    };
    for (name, index, count) in [("as-2-of-4", 2, 4), ("as-1-of-8", 1, 8)] {
        let err = Db::restore(
            dir.path().join("backup"),
            target(name).shard(index, count),
            ErasureSource::Live(&db),
        )
        .expect_err("restored as another shard");
        assert!(err.is_wrong_shard(), "{name}: {err}");
        assert_eq!(err.category(), ErrorCategory::Usage, "{name}");
        assert!(err.to_string().contains("shard 1 of 4"), "{name}: {err}");
        let left = std::fs::read_dir(dir.path().join(name)).map_or(0, Iterator::count);
        assert_eq!(left, 0, "{name}: the refused restore left {left} files");
    }
    for (name, shard) in [("as-1-of-4", Some((1, 4))), ("unnamed", None)] {
        let mut config = target(name);
        if let Some((index, count)) = shard {
            config = config.shard(index, count);
        }
        let (restored, _) =
            Db::restore(dir.path().join("backup"), config, ErasureSource::Live(&db))
                .expect("restored as its shard");
        assert_eq!(
            restored
                .get(&mine, "message_content", b"m1")
                .expect("read")
                .as_deref(),
            Some(&b"hello"[..]),
            "{name}"
        );
        assert_eq!(restored.shard(), Some((1, 4)), "{name}");
        let err = restored
            .register_account(&other)
            .expect_err("another shard's account");
        assert!(err.is_wrong_shard(), "{name}: {err}");
    }

    let unbound = Db::open(
        Config::new(dir.path().join("unbound"))
            .key_file(dir.path().join("unbound.keys"))
            .maintenance_every(None),
    )
    .expect("open");
    unbound.register_account(&mine).expect("register");
    unbound
        .backup(dir.path().join("unbound-backup"))
        .expect("backup");
    let err = Db::restore(
        dir.path().join("unbound-backup"),
        Config::new(dir.path().join("unbound-as-shard"))
            .key_file(dir.path().join("unbound.keys"))
            .maintenance_every(None)
            .shard(1, 4),
        ErasureSource::Live(&unbound),
    )
    .expect_err("an unrouted store's backup as a shard");
    assert_eq!(err.category(), ErrorCategory::Usage, "{err}");
    assert!(err.to_string().contains("serves no shard"), "{err}");
}
