//! A store on a real 3-member etcd cluster, through failures and limits
//! (feature `etcd`; `.ci/run` runs these in its step "etcd backend", one
//! test at a time): members killed with SIGKILL under puts and shreds, two
//! of three members down, a paused leader; and etcd's default of 128
//! operations per transaction, which a large shred and a compaction of many
//! due keys exceed. Each test runs a cluster of its own
//! (`EtcdTestCluster::own`), so stopping members disturbs nothing else.
//!
//! The oracle is what the store acknowledged, kept by the test: every
//! acknowledged put stays readable with its value, every acknowledged shred
//! stays erased, and an operation that failed left all of itself or none
//! (a failed request may still have been committed: its response was lost).
#![cfg(feature = "etcd")]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shredkv::internal::{ETCD_TEST_MAX_TXN_OPS, EtcdTestCluster};
use shredkv::{Classes, Config, Db, SubjectState};

/// How long an election may take on this loaded 2-core machine.
const ELECTION_WAIT: Duration = Duration::from_secs(30);
/// How long one failing operation may take: the backend's request timeout
/// (10 s) for each of the storage requests an operation makes, with room.
const FAILURE_BOUND: Duration = Duration::from_secs(60);

fn open_on(endpoints: &[String], local: &Path, namespace: &str) -> Db {
    Db::open(
        Config::new(local.join("store"))
            .key_file(local.join("keys"))
            .maintenance_every(None)
            .etcd(endpoints.to_vec(), namespace, ETCD_TEST_MAX_TXN_OPS),
    )
    .expect("open on etcd")
}

/// A record as the test wrote it: subject, class, key, value.
type Record = (String, &'static str, Vec<u8>, Vec<u8>);

/// The records an account to be shredded holds: its own and its end
/// user's, in two classes.
fn shred_target_records(account: &str) -> Vec<Record> {
    let user = format!("{account}-user");
    vec![
        (
            account.to_string(),
            "account_profile",
            b"email".to_vec(),
            format!("{account}@example.com").into_bytes(),
        ),
        (
            account.to_string(),
            "message_content",
            b"m1".to_vec(),
            format!("{account}: hello").into_bytes(),
        ),
        (
            user.clone(),
            "message_content",
            b"m1".to_vec(),
            format!("{user}: see you at noon").into_bytes(),
        ),
        (
            user,
            "message_content",
            b"m2".to_vec(),
            b"bring the files".to_vec(),
        ),
    ]
}

/// What `db` serves of `records`: `Some(true)` if all are readable with
/// their values, `Some(false)` if all are erased, `None` if mixed (a
/// half-applied shred) or anything else.
fn all_or_nothing(db: &Db, records: &[Record]) -> Option<bool> {
    let mut readable = 0;
    let mut erased = 0;
    for (subject, class, key, value) in records {
        match db.get(subject, class, key) {
            Ok(Some(found)) if &found == value => readable += 1,
            Err(err) if err.is_erased() => erased += 1,
            other => {
                eprintln!("{subject}/{class}: unexpected {other:?}");
                return None;
            }
        }
    }
    match (readable, erased) {
        (r, 0) if r == records.len() => Some(true),
        (0, e) if e == records.len() => Some(false),
        _ => None,
    }
}

/// A put as the test made it: subject, key, value, acknowledged, when.
type PutOutcome = (String, Vec<u8>, Vec<u8>, bool, Instant);

#[derive(Default)]
struct Outcomes {
    puts: Vec<PutOutcome>,
    /// (account, acknowledged, when) of accounts whose records were all
    /// acknowledged before the shred.
    shreds: Vec<(String, bool, Instant)>,
    /// Accounts never shredded (their setup failed part way).
    unfinished: Vec<String>,
}

impl Outcomes {
    /// Acknowledged puts and shreds since `since`.
    fn acknowledged_since(&self, since: Instant) -> (usize, usize) {
        (
            self.puts
                .iter()
                .filter(|(_, _, _, ok, at)| *ok && *at > since)
                .count(),
            self.shreds
                .iter()
                .filter(|(_, ok, at)| *ok && *at > since)
                .count(),
        )
    }
}

/// Waits until the store has acknowledged puts and a shred since `since`:
/// it serves in the cluster's present state.
fn wait_for_service(outcomes: &Mutex<Outcomes>, since: Instant, what: &str) {
    let started = Instant::now();
    loop {
        let (puts, shreds) = outcomes.lock().expect("outcomes").acknowledged_since(since);
        if puts >= 5 && shreds >= 1 {
            return;
        }
        assert!(
            started.elapsed() < ELECTION_WAIT,
            "{what}: {puts} puts and {shreds} shreds acknowledged in {ELECTION_WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGKILL of a follower, then of the leader, while one thread writes and
/// another registers accounts, fills and shreds them: the store serves
/// while the follower is down and again after the leader died (puts and
/// shreds acknowledged in each phase), and afterwards, read through a new
/// client, every acknowledged put is there, every acknowledged shred
/// erased, and every failed shred all or nothing.
#[test]
fn kill_9_of_a_follower_and_of_the_leader_loses_nothing_acknowledged() {
    let cluster = EtcdTestCluster::own();
    let local = tempfile::tempdir().expect("a local directory");
    let namespace = "kill-9/";
    let db = Arc::new(open_on(&cluster.endpoints, local.path(), namespace));
    let writers = ["writer-0", "writer-1", "writer-2"];
    for writer in writers {
        db.register_account(writer).expect("register");
    }

    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, outcomes, stop) = (db.clone(), outcomes.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let subject = writers[n as usize % writers.len()];
                let key = n.to_be_bytes().to_vec();
                let value = format!("value {n}").into_bytes();
                let acknowledged = db.put(subject, "message_content", &key, &value).is_ok();
                outcomes.lock().expect("outcomes").puts.push((
                    subject.to_string(),
                    key,
                    value,
                    acknowledged,
                    Instant::now(),
                ));
                n += 1;
            }
        })
    };
    let shredder = {
        let (db, outcomes, stop) = (db.clone(), outcomes.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let account = format!("target-{n}");
                n += 1;
                let set_up = db.register_account(&account).is_ok()
                    && db
                        .register_end_user(&format!("{account}-user"), &account)
                        .is_ok()
                    && shred_target_records(&account)
                        .iter()
                        .all(|(subject, class, key, value)| {
                            db.put(subject, class, key, value).is_ok()
                        });
                if !set_up {
                    outcomes.lock().expect("outcomes").unfinished.push(account);
                    continue;
                }
                let acknowledged = db.shred(&account, Classes::All).is_ok();
                outcomes.lock().expect("outcomes").shreds.push((
                    account,
                    acknowledged,
                    Instant::now(),
                ));
            }
        })
    };

    wait_for_service(&outcomes, Instant::now(), "a healthy cluster");
    let leader = cluster.leader(ELECTION_WAIT);
    let follower = (leader + 1) % 3;
    cluster.kill(follower);
    wait_for_service(&outcomes, Instant::now(), "a follower down");
    cluster.restart(follower);
    cluster.wait_until_serving();
    let leader = cluster.leader(ELECTION_WAIT);
    cluster.kill(leader);
    wait_for_service(&outcomes, Instant::now(), "the leader killed");
    cluster.restart(leader);
    cluster.wait_until_serving();
    wait_for_service(&outcomes, Instant::now(), "the old leader back");
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    shredder.join().expect("shredder");
    let outcomes = std::mem::take(&mut *outcomes.lock().expect("outcomes"));

    // Read back through a new client of the same store.
    drop(db);
    let db = open_on(&cluster.endpoints, local.path(), namespace);
    for (subject, key, value, acknowledged, _) in &outcomes.puts {
        let found = db
            .get(subject, "message_content", key)
            .expect("a written subject reads");
        if *acknowledged {
            assert_eq!(
                found.as_ref(),
                Some(value),
                "acknowledged put of {subject} lost"
            );
        } else {
            assert!(
                found.is_none() || found.as_ref() == Some(value),
                "failed put of {subject} left {found:?}"
            );
        }
    }
    for (account, acknowledged, _) in &outcomes.shreds {
        let served = all_or_nothing(&db, &shred_target_records(account));
        if *acknowledged {
            assert_eq!(
                served,
                Some(false),
                "acknowledged shred of {account} undone"
            );
            assert_eq!(
                db.subject(account).expect("subject").expect("known").state,
                SubjectState::Erased
            );
        } else {
            assert!(served.is_some(), "failed shred of {account} half applied");
        }
    }
    assert!(db.verify().expect("verify").is_clean());
}

/// Two of three members down: operations fail with a storage error within
/// a bounded time instead of hanging or half applying; once the members
/// are back, the same store serves again, the failed shred left all of
/// itself or nothing, and shredding again completes it.
#[test]
fn two_of_three_members_down_fail_cleanly_and_recover() {
    let cluster = EtcdTestCluster::own();
    let local = tempfile::tempdir().expect("a local directory");
    let db = open_on(&cluster.endpoints, local.path(), "quorum-lost/");
    db.register_account("target").expect("register");
    db.register_end_user("target-user", "target")
        .expect("register");
    let records = shred_target_records("target");
    for (subject, class, key, value) in &records {
        db.put(subject, class, key, value).expect("put");
    }
    let leader = cluster.leader(ELECTION_WAIT);
    let down = [(leader + 1) % 3, (leader + 2) % 3];
    for i in down {
        cluster.kill(i);
    }

    let started = Instant::now();
    let put = db
        .put("target", "message_content", b"late", b"not acknowledged")
        .expect_err("a put without quorum fails");
    assert!(
        started.elapsed() < FAILURE_BOUND,
        "put took {:?}",
        started.elapsed()
    );
    assert!(!put.is_full(), "{put}");
    assert!(put.to_string().contains("etcd"), "{put}");
    let started = Instant::now();
    let shred = db
        .shred("target", Classes::All)
        .expect_err("a shred without quorum fails");
    assert!(
        started.elapsed() < FAILURE_BOUND,
        "shred took {:?}",
        started.elapsed()
    );
    assert!(shred.to_string().contains("etcd"), "{shred}");
    let started = Instant::now();
    db.get("target", "message_content", b"m1")
        .expect_err("a linearizable read without quorum fails");
    assert!(
        started.elapsed() < FAILURE_BOUND,
        "get took {:?}",
        started.elapsed()
    );

    for i in down {
        cluster.restart(i);
    }
    cluster.wait_until_serving();
    // The same handle serves again; the failed shred is all or nothing
    // (its transaction may have reached the surviving member's log and
    // been committed once quorum came back).
    let served = all_or_nothing(&db, &records);
    assert!(served.is_some(), "the failed shred was half applied");
    let late = db
        .get("target", "message_content", b"late")
        .or_else(|err| if err.is_erased() { Ok(None) } else { Err(err) })
        .expect("a read after recovery");
    assert!(late.is_none() || late.as_deref() == Some(&b"not acknowledged"[..]));
    db.shred("target", Classes::All)
        .expect("a shred after recovery");
    assert_eq!(all_or_nothing(&db, &records), Some(false));
    db.register_account("after")
        .expect("register after recovery");
    db.put("after", "message_content", b"m", b"v")
        .expect("put after recovery");
    drop(db);
    let db = open_on(&cluster.endpoints, local.path(), "quorum-lost/");
    assert_eq!(all_or_nothing(&db, &records), Some(false));
    assert_eq!(
        db.get("after", "message_content", b"m")
            .expect("get")
            .as_deref(),
        Some(&b"v"[..])
    );
    assert!(db.verify().expect("verify").is_clean());
}

/// A leader stopped with SIGSTOP: the two others elect a new leader and
/// acknowledge writes; once the old leader runs again, a client that
/// reaches only that member reads those writes at once — its reads are
/// linearizable, never its stale state from before the pause.
#[test]
fn a_paused_leader_serves_no_stale_reads_when_it_resumes() {
    let cluster = EtcdTestCluster::own();
    let local = tempfile::tempdir().expect("a local directory");
    let leader = cluster.leader(ELECTION_WAIT);
    let others: Vec<String> = (0..3)
        .filter(|i| *i != leader)
        .map(|i| cluster.endpoints[i].clone())
        .collect();
    let namespace = "paused-leader/";
    let writer = open_on(&others, &local.path().join("writer"), namespace);
    writer.register_account("acct").expect("register");
    let keys: Vec<Vec<u8>> = (0..8u8).map(|i| vec![b'k', i]).collect();
    for key in &keys {
        writer
            .put("acct", "message_content", key, b"before the pause")
            .expect("put");
    }
    // A second store handle that reaches only the old leader (the same
    // key file: it reads what the writer sealed).
    let reader = Db::open(
        Config::new(local.path().join("reader"))
            .key_file(local.path().join("writer").join("keys"))
            .maintenance_every(None)
            .etcd(
                [cluster.endpoints[leader].clone()],
                namespace,
                ETCD_TEST_MAX_TXN_OPS,
            ),
    )
    .expect("open through the old leader");
    assert_eq!(
        reader
            .get("acct", "message_content", &keys[0])
            .expect("get")
            .as_deref(),
        Some(&b"before the pause"[..])
    );

    cluster.pause(leader);
    // The writer's requests fail until the others elect a leader.
    let started = Instant::now();
    for key in &keys {
        loop {
            match writer.put("acct", "message_content", key, b"while it was paused") {
                Ok(()) => break,
                Err(err) => assert!(
                    started.elapsed() < ELECTION_WAIT,
                    "no write acknowledged without the paused leader: {err}"
                ),
            }
        }
    }
    cluster.resume(leader);
    for key in &keys {
        assert_eq!(
            reader
                .get("acct", "message_content", key)
                .expect("the resumed member answers")
                .as_deref(),
            Some(&b"while it was paused"[..]),
            "a stale read from the resumed leader"
        );
    }
}

/// An account with 60 end users on a cluster with etcd's default of 128
/// operations per transaction: its shred (about 60 × 6 operations) lands in
/// chunks, every record of the family is refused afterwards, through this
/// client and a new one, and a retry answers with the same receipt.
#[test]
fn a_large_account_shreds_on_a_cluster_with_the_default_transaction_limit() {
    let cluster = EtcdTestCluster::with_default_txn_limit();
    let local = tempfile::tempdir().expect("a local directory");
    let open = || {
        Db::open(
            Config::new(local.path().join("store"))
                .key_file(local.path().join("keys"))
                .maintenance_every(None)
                .etcd(
                    cluster.endpoints.clone(),
                    "default-limit/",
                    cluster.max_txn_ops,
                ),
        )
        .expect("open on etcd")
    };
    let db = open();
    db.register_account("acct").expect("register");
    let users: Vec<String> = (0..60).map(|i| format!("user-{i}")).collect();
    for user in &users {
        db.register_end_user(user, "acct").expect("register");
        db.put(user, "message_content", b"m1", b"hello")
            .expect("put");
        db.put(user, "account_profile", b"name", b"a name")
            .expect("put");
    }
    let receipt = db.shred("acct", Classes::All).expect("a shred in chunks");
    assert_eq!(receipt.erased.len(), users.len() + 1, "{receipt:?}");
    for user in &users {
        for (class, key) in [
            ("message_content", &b"m1"[..]),
            ("account_profile", b"name"),
        ] {
            let err = db.get(user, class, key).expect_err("erased");
            assert!(err.is_erased(), "{user}/{class}: {err}");
        }
    }
    assert_eq!(db.shred("acct", Classes::All).expect("retry"), receipt);
    drop(db);
    let db = open();
    for user in &users {
        assert!(
            db.get(user, "message_content", b"m1")
                .expect_err("erased")
                .is_erased()
        );
        assert_eq!(
            db.certificate(user)
                .expect("certificate")
                .keys_live_in_erased_scopes,
            0
        );
    }
    assert_eq!(db.shred("acct", Classes::All).expect("retry"), receipt);
    assert!(db.verify().expect("verify").is_clean());
}

/// Compaction and an epoch rotation on a cluster with etcd's default of
/// 128 operations per transaction: 60 end users' expired buckets (about six
/// writes each in one page of due keys, ~360 in all), an expired bucket of
/// 300 records whose ciphertext is then removed, and an epoch rotation
/// re-wrapping every live key. Each batch is sized to the limit; without
/// that, the pages are refused whole and the pass fails.
#[test]
fn compaction_and_epoch_rotation_fit_the_default_transaction_limit() {
    use jiff::SignedDuration;
    use shredkv::{Clock, ManualClock, PutOptions};

    let cluster = EtcdTestCluster::with_default_txn_limit();
    let local = tempfile::tempdir().expect("a local directory");
    let clock = ManualClock::new(jiff::Timestamp::from_second(1_800_000_000).expect("a time"));
    let db = Db::open(
        Config::new(local.path().join("store"))
            .key_file(local.path().join("keys"))
            .clock(Arc::new(clock.clone()))
            .maintenance_every(None)
            .etcd(
                cluster.endpoints.clone(),
                "default-limit-compaction/",
                cluster.max_txn_ops,
            ),
    )
    .expect("open on etcd");
    let expires = clock.now() + SignedDuration::from_hours(1);
    db.register_account("acct").expect("register");
    let users: Vec<String> = (0..60).map(|i| format!("user-{i}")).collect();
    for user in &users {
        db.register_end_user(user, "acct").expect("register");
        db.put_with(
            user,
            "message_content",
            b"m",
            b"soon gone",
            PutOptions::expires_at(expires),
        )
        .expect("put");
        db.put(user, "account_profile", b"name", b"kept")
            .expect("put");
    }
    for i in 0..300u32 {
        db.put_with(
            "acct",
            "message_content",
            &i.to_be_bytes(),
            b"soon gone",
            PutOptions::expires_at(expires),
        )
        .expect("put");
    }
    // Past the expiry: the expired buckets' keys die; a week later (the
    // removal sweep runs once a week, `removal_sweep_time`) their ciphertext is
    // removed: 300 records of one scope.
    clock.set(expires + SignedDuration::from_hours(24));
    let report = db.compact().expect("compaction within the limit");
    assert!(report.keys_destroyed > users.len() as u64, "{report:?}");
    clock.set(expires + SignedDuration::from_hours(24 * 9));
    let report = db.compact().expect("the sweep within the limit");
    assert!(
        report.records_removed >= 300 + users.len() as u64,
        "{report:?}"
    );
    db.rotate_epoch()
        .expect("an epoch rotation within the limit");
    for user in &users {
        assert_eq!(db.get(user, "message_content", b"m").expect("get"), None);
        assert_eq!(
            db.get(user, "account_profile", b"name")
                .expect("get")
                .as_deref(),
            Some(&b"kept"[..])
        );
    }
    assert_eq!(
        db.scan("acct", "message_content").expect("scan").len(),
        0,
        "expired records are not served"
    );
    assert!(db.verify().expect("verify").is_clean());
}
