//! A whole store on a real 3-member etcd cluster (`storage::etcd_cluster`):
//! the engine's own paths — registration, writes, scans, a shred, a
//! compaction pass, verify, reopening — through the etcd backend.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};

use crate::storage::etcd_cluster::{Cluster, MAX_TXN_OPS};
use crate::{Classes, Clock, Config, Db, ManualClock, PutOptions};

fn config(local: &std::path::Path, namespace: &str, clock: &ManualClock) -> Config {
    Config::new(local.join("store"))
        .key_file(local.join("keys"))
        .clock(Arc::new(clock.clone()))
        .maintenance_every(None)
        .etcd(Cluster::shared().endpoints.clone(), namespace, MAX_TXN_OPS)
}

#[test]
fn a_store_on_etcd_writes_erases_and_survives_reopening() {
    let local = tempfile::tempdir().expect("a local directory");
    let namespace = format!("shredkv-db-test/{}/", local.path().display());
    let clock = ManualClock::new(Timestamp::from_second(1_800_000_000).expect("a time"));
    {
        let db = Db::open(config(local.path(), &namespace, &clock)).expect("open on etcd");
        assert_eq!(db.stats().expect("stats").backend, "etcd");
        db.register_account("acct").expect("register");
        db.register_end_user("user", "acct").expect("register");
        db.put("user", "message_content", b"m1", b"see you at noon")
            .expect("put");
        db.put("user", "message_content", b"m2", b"bring the files")
            .expect("put");
        let in_an_hour = clock.now() + SignedDuration::from_hours(1);
        db.put_with(
            "acct",
            "message_content",
            b"tmp",
            b"expires",
            PutOptions::expires_at(in_an_hour),
        )
        .expect("put with expiry");
        db.put("acct", "account_profile", b"email", b"a@example.com")
            .expect("put");
        assert_eq!(db.scan("user", "message_content").expect("scan").len(), 2);
        let receipt = db.shred("user", Classes::All).expect("shred on etcd");
        assert!(receipt.keys_destroyed() > 0, "{receipt:?}");
        assert!(
            db.get("user", "message_content", b"m1")
                .expect_err("erased")
                .is_erased()
        );
        // The expiry bucket's key dies with its day.
        clock.set(in_an_hour + SignedDuration::from_hours(24));
        let report = db.compact().expect("compact on etcd");
        assert!(report.keys_destroyed >= 1, "{report:?}");
        assert!(db.verify().expect("verify").is_clean());
    }
    // Reopened: a new client, the same namespace.
    let db = Db::open(config(local.path(), &namespace, &clock)).expect("reopen");
    assert!(
        db.get("user", "message_content", b"m2")
            .expect_err("still erased")
            .is_erased()
    );
    assert_eq!(
        db.get("acct", "message_content", b"tmp").expect("get"),
        None
    );
    assert_eq!(
        db.get("acct", "account_profile", b"email")
            .expect("get")
            .as_deref(),
        Some(&b"a@example.com"[..])
    );
    assert!(db.verify().expect("verify").is_clean());
}

/// A cluster past its quota (etcd's NOSPACE alarm) fails writes and shreds
/// with an error that says the store is full, applies nothing of them, and
/// still serves reads.
#[test]
fn a_full_cluster_fails_writes_and_shreds_as_full_and_still_reads() {
    let cluster = Cluster::with_quota(4 << 20);
    let local = tempfile::tempdir().expect("a local directory");
    let clock = ManualClock::new(Timestamp::from_second(1_800_000_000).expect("a time"));
    let db = Db::open(
        Config::new(local.path().join("store"))
            .key_file(local.path().join("keys"))
            .clock(Arc::new(clock.clone()))
            .maintenance_every(None)
            .etcd(cluster.endpoints.clone(), "full/", MAX_TXN_OPS),
    )
    .expect("open on etcd");
    db.register_account("acct").expect("register");
    db.put("acct", "message_content", b"first", b"kept")
        .expect("put");
    // The quota the cluster was started with, read back from a member.
    let before = db.stats().expect("stats");
    assert_eq!(before.capacity_bytes, Some(4 << 20), "{before:?}");
    let room = before.headroom_bytes.expect("headroom on etcd");
    assert!(room > 1 << 20 && room < 4 << 20, "{room} B of room");
    let value = vec![0x5A_u8; 256 << 10];
    let mut written = 0u32;
    let err = loop {
        match db.put("acct", "message_content", &written.to_be_bytes(), &value) {
            Ok(()) => written += 1,
            Err(err) => break err,
        }
        assert!(
            written < 200,
            "4 MiB of quota took {written} writes of 256 KiB"
        );
    };
    assert!(err.is_full(), "{err}");
    assert!(err.to_string().contains("NOSPACE"), "{err}");
    // What stats reports as left is less than the write it refused.
    let full = db.stats().expect("stats on a full cluster");
    let left = full.headroom_bytes.expect("headroom on etcd");
    assert!(
        left < (256 << 10) + (64 << 10),
        "{left} B left on a full cluster"
    );
    let shred = db
        .shred("acct", Classes::All)
        .expect_err("a full cluster refuses a shred");
    assert!(shred.is_full(), "{shred}");
    // Nothing of the shred was applied, and reads go on.
    assert_eq!(
        db.get("acct", "message_content", b"first")
            .expect("reads work on a full cluster")
            .as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(
        db.subject("acct").expect("subject").expect("known").state,
        crate::SubjectState::Active
    );
}

/// A backup of a store on etcd is a local redb store; restored into a new,
/// empty namespace it serves what the store served and replays the
/// erasures made since (a subject shredded after the backup stays erased).
/// A restore into a namespace that holds a store is refused, and that
/// store is untouched.
#[test]
fn a_store_on_etcd_backs_up_to_local_files_and_restores_into_a_new_namespace() {
    let local = tempfile::tempdir().expect("a local directory");
    let base = format!("shredkv-backup-test/{}", local.path().display());
    let clock = ManualClock::new(Timestamp::from_second(1_800_000_000).expect("a time"));
    let db = Db::open(config(local.path(), &format!("{base}/live/"), &clock)).expect("open");
    for account in ["kept", "gone"] {
        db.register_account(account).expect("register");
        db.put(account, "account_profile", b"email", b"someone@example.com")
            .expect("put");
    }
    let backup = local.path().join("backup");
    let report = db.backup(&backup).expect("a backup of an etcd store");
    assert!(report.entries > 0, "{report:?}");
    assert_eq!(crate::Backend::detect(&backup), Some(crate::Backend::Redb));
    db.shred("gone", Classes::All)
        .expect("shred after the backup");

    let target = |dir: &str, namespace: &str| {
        Config::new(local.path().join(dir))
            .key_file(local.path().join("keys"))
            .clock(Arc::new(clock.clone()))
            .maintenance_every(None)
            .etcd(Cluster::shared().endpoints.clone(), namespace, MAX_TXN_OPS)
    };
    let restored_namespace = format!("{base}/restored/");
    let (restored, _) = Db::restore(
        &backup,
        target("restored", &restored_namespace),
        crate::ErasureSource::Live(&db),
    )
    .expect("a restore into a new namespace");
    assert_eq!(restored.stats().expect("stats").backend, "etcd");
    assert_eq!(
        restored
            .get("kept", "account_profile", b"email")
            .expect("get")
            .as_deref(),
        Some(&b"someone@example.com"[..])
    );
    assert!(
        restored
            .get("gone", "account_profile", b"email")
            .expect_err("erased after the backup")
            .is_erased()
    );
    assert!(restored.verify().expect("verify").is_clean());
    drop(restored);

    let refused = Db::restore(
        &backup,
        target("again", &restored_namespace),
        crate::ErasureSource::Live(&db),
    )
    .expect_err("a restore into a namespace that holds a store is refused");
    assert!(
        refused.to_string().contains("already holds a store"),
        "{refused}"
    );
    let reopened = Db::open(target("restored", &restored_namespace)).expect("reopen");
    assert_eq!(
        reopened
            .get("kept", "account_profile", b"email")
            .expect("get")
            .as_deref(),
        Some(&b"someone@example.com"[..]),
        "the refused restore changed nothing"
    );
}

/// A shard's backup restored into a namespace as another shard is refused
/// before the namespace holds anything: the same namespace then takes the
/// restore as the right shard. (A local target's files are removed after
/// a failed restore; a namespace's keys would stay, and refuse every later
/// restore into it as "a failed restore".)
#[test]
fn a_shards_backup_restored_as_another_shard_leaves_the_namespace_empty() {
    let local = tempfile::tempdir().expect("a local directory");
    let base = format!("shredkv-shard-restore-test/{}", local.path().display());
    let clock = ManualClock::new(Timestamp::from_second(1_800_000_000).expect("a time"));
    let account = (0..)
        .map(|i| format!("acct-{i}"))
        .find(|id| crate::shard_of(id, 4).is_ok_and(|shard| shard == 1))
        .expect("an account of shard 1");
    let db = Db::open(config(local.path(), &format!("{base}/live/"), &clock).shard(1, 4))
        .expect("open shard 1 of 4");
    db.register_account(&account).expect("register");
    db.put(
        &account,
        "account_profile",
        b"email",
        b"someone@example.com",
    )
    .expect("put");
    let backup = local.path().join("backup");
    db.backup(&backup).expect("backup");
    let namespace = format!("{base}/restored/");
    let target = |dir: &str| {
        Config::new(local.path().join(dir))
            .key_file(local.path().join("keys"))
            .clock(Arc::new(clock.clone()))
            .maintenance_every(None)
            .etcd(Cluster::shared().endpoints.clone(), &namespace, MAX_TXN_OPS)
    };
    let refused = Db::restore(
        &backup,
        target("wrong").shard(2, 4),
        crate::ErasureSource::Live(&db),
    )
    .expect_err("restored as shard 2 of 4");
    assert!(refused.is_wrong_shard(), "{refused}");
    let (restored, _) = Db::restore(
        &backup,
        target("right").shard(1, 4),
        crate::ErasureSource::Live(&db),
    )
    .expect("the namespace takes the restore as the right shard");
    assert_eq!(restored.shard(), Some((1, 4)));
    assert_eq!(
        restored
            .get(&account, "account_profile", b"email")
            .expect("get")
            .as_deref(),
        Some(&b"someone@example.com"[..])
    );
}

/// A local store of large values moved into a cluster by a restore: the
/// copy's batches stay under etcd's request size (1.5 MiB by default;
/// 40 values of 100 KiB would make one 4 MB batch of a page of entries),
/// and every value reads back.
#[test]
fn a_restore_of_large_values_into_etcd_fits_its_requests() {
    let local = tempfile::tempdir().expect("a local directory");
    let clock = ManualClock::new(Timestamp::from_second(1_800_000_000).expect("a time"));
    let (backup, source) = large_local_backup(local.path(), &clock, 40);
    let namespace = format!("shredkv-large-restore-test/{}/", local.path().display());
    let (restored, _) = Db::restore(
        &backup,
        Config::new(local.path().join("restored"))
            .key_file(local.path().join("keys"))
            .clock(Arc::new(clock.clone()))
            .maintenance_every(None)
            .etcd(Cluster::shared().endpoints.clone(), &namespace, MAX_TXN_OPS),
        crate::ErasureSource::Live(&source),
    )
    .expect("a restore into etcd");
    for i in 0..40u32 {
        assert_eq!(
            restored
                .get("acct", "message_content", &i.to_be_bytes())
                .expect("get"),
            Some(large_value(i)),
            "record {i}"
        );
    }
}

/// A restore that does not fit the cluster (etcd's NOSPACE past its
/// quota) fails, and leaves nothing in the namespace: not the copied
/// entries, not the restore-pending mark.
///
/// etcd checks its quota against the size of its last backend commit (every
/// 100 ms), so writes arriving faster than that overshoot it: with 6 MB, the
/// restore fitted the 4 MiB cluster in two runs of six once `get_many` on
/// etcd went in batches (fewer round trips between the copy's writes). Five
/// times the quota cannot all arrive within one commit interval.
#[test]
fn a_restore_past_the_clusters_quota_fails_and_leaves_the_namespace_empty() {
    let cluster = Cluster::with_quota(4 << 20);
    let local = tempfile::tempdir().expect("a local directory");
    let clock = ManualClock::new(Timestamp::from_second(1_800_000_000).expect("a time"));
    let (backup, source) = large_local_backup(local.path(), &clock, 200);
    let err = Db::restore(
        &backup,
        Config::new(local.path().join("restored"))
            .key_file(local.path().join("keys"))
            .clock(Arc::new(clock.clone()))
            .maintenance_every(None)
            .etcd(cluster.endpoints.clone(), "too-large/", MAX_TXN_OPS),
        crate::ErasureSource::Live(&source),
    )
    .expect_err("20 MB restored into a 4 MiB cluster");
    assert!(err.is_full(), "{err}");
    let left = cluster.keys_with_prefix(b"too-large/");
    assert!(
        left.is_empty(),
        "the failed restore left {} keys, e.g. {:?}",
        left.len(),
        String::from_utf8_lossy(&left[0])
    );
}

/// A 100 KiB value, different for each record.
fn large_value(i: u32) -> Vec<u8> {
    let seed = i.to_be_bytes();
    (0..100usize << 10)
        .map(|j| seed[j % 4] ^ u8::try_from(j % 251).unwrap_or(0))
        .collect()
}

/// A local redb store holding `records` values of 100 KiB, and its backup.
fn large_local_backup(
    local: &std::path::Path,
    clock: &ManualClock,
    records: u32,
) -> (std::path::PathBuf, Db) {
    let source = Db::open(
        Config::new(local.join("source"))
            .key_file(local.join("keys"))
            .backend(crate::Backend::Redb)
            .clock(Arc::new(clock.clone()))
            .maintenance_every(None),
    )
    .expect("open a local store");
    source.register_account("acct").expect("register");
    for i in 0..records {
        source
            .put("acct", "message_content", &i.to_be_bytes(), &large_value(i))
            .expect("put");
    }
    let backup = local.join("backup");
    source.backup(&backup).expect("backup");
    (backup, source)
}

/// A restore into a namespace that fails after the copy, when the restored
/// store opens (the key provider cannot unwrap its store secret: the first
/// unwrap is the restore's check of the backup, before the copy): the
/// namespace is left empty, and the same namespace then takes the restore.
#[test]
fn a_restore_failing_after_its_copy_leaves_the_namespace_empty() {
    use crate::internal::{FaultControl, FaultPlan, MemoryKeyProvider, ProviderCall};
    use crate::storage::faults::FaultyProvider;
    let local = tempfile::tempdir().expect("a local directory");
    let base = format!("shredkv-late-restore-failure/{}", local.path().display());
    let clock = ManualClock::new(Timestamp::from_second(1_800_000_000).expect("a time"));
    let control = FaultControl::new(FaultPlan::none());
    let provider: Arc<dyn shredkv_crypto::KeyProvider> = Arc::new(FaultyProvider::new(
        Arc::new(MemoryKeyProvider::new()),
        control.faults(),
    ));
    let on = |dir: &str, namespace: &str| {
        Config::new(local.path().join(dir))
            .key_provider(Arc::clone(&provider))
            .clock(Arc::new(clock.clone()))
            .maintenance_every(None)
            .etcd(Cluster::shared().endpoints.clone(), namespace, MAX_TXN_OPS)
    };
    let db = Db::open(on("live", &format!("{base}/live/"))).expect("open");
    db.register_account("acct").expect("register");
    db.put("acct", "account_profile", b"email", b"someone@example.com")
        .expect("put");
    let backup = local.path().join("backup");
    db.backup(&backup).expect("backup");
    let namespace = format!("{base}/restored/");
    control.fail_provider_nth(ProviderCall::Unwrap, 2);
    let err = Db::restore(
        &backup,
        on("first", &namespace),
        crate::ErasureSource::Live(&db),
    )
    .expect_err("the restored store cannot open");
    assert!(!control.armed(), "the failure was not reached: {err}");
    let left = Cluster::shared().keys_with_prefix(namespace.as_bytes());
    assert!(
        left.is_empty(),
        "the failed restore left {} keys ({err})",
        left.len()
    );
    let (restored, _) = Db::restore(
        &backup,
        on("second", &namespace),
        crate::ErasureSource::Live(&db),
    )
    .expect("the namespace takes the restore");
    assert_eq!(
        restored
            .get("acct", "account_profile", b"email")
            .expect("get")
            .as_deref(),
        Some(&b"someone@example.com"[..])
    );
}
