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

use shredkv::internal::{ETCD_OWNER_LEASE_TTL, ETCD_TEST_MAX_TXN_OPS, EtcdTestCluster};
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
/// the store's writes are acknowledged again; once the old leader runs
/// again, every read returns the new values at once, whichever member
/// answers it (reads are linearizable: the resumed member never answers
/// from its state before the pause). The store's owner lease survives the
/// pause (its keep-alives move to another member).
#[test]
fn a_paused_leader_serves_no_stale_reads_when_it_resumes() {
    let cluster = EtcdTestCluster::own();
    let local = tempfile::tempdir().expect("a local directory");
    let db = open_on(&cluster.endpoints, local.path(), "paused-leader/");
    db.register_account("acct").expect("register");
    let keys: Vec<Vec<u8>> = (0..12u8).map(|i| vec![b'k', i]).collect();
    for key in &keys {
        db.put("acct", "message_content", key, b"before the pause")
            .expect("put");
    }
    let leader = cluster.leader(ELECTION_WAIT);
    cluster.pause(leader);
    // Requests that reach the paused member time out; the test retries
    // each write until it is acknowledged.
    let started = Instant::now();
    for key in &keys {
        loop {
            match db.put("acct", "message_content", key, b"while it was paused") {
                Ok(()) => break,
                Err(err) => {
                    eprintln!(
                        "DEBUG {:?} {}",
                        started.elapsed(),
                        err.to_string().chars().take(160).collect::<String>()
                    );
                    assert!(!err.is_fenced(), "the owner lease lapsed: {err}");
                    assert!(
                        started.elapsed() < 4 * ELECTION_WAIT,
                        "no write acknowledged without the paused leader: {err}"
                    );
                }
            }
        }
    }
    cluster.resume(leader);
    // Read at once, several times over, so reads land on every member.
    for round in 0..3 {
        for key in &keys {
            assert_eq!(
                db.get("acct", "message_content", key)
                    .expect("a read after the resume")
                    .as_deref(),
                Some(&b"while it was paused"[..]),
                "round {round}: a stale read"
            );
        }
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

/// The environment of the node the fencing test runs as a second process.
const CHILD_ENDPOINTS: &str = "SHREDKV_ETCD_FENCING_CHILD_ENDPOINTS";
const CHILD_DIR: &str = "SHREDKV_ETCD_FENCING_CHILD_DIR";
const FENCING_NAMESPACE: &str = "fencing/";

fn describe(result: shredkv::Result<String>) -> String {
    match result {
        Ok(said) => said,
        Err(err) if err.is_fenced() => "fenced".into(),
        Err(err) => format!("error: {err}"),
    }
}

/// Not a test of its own: the first node of the fencing test, run as a
/// second process (this test binary again, `--ignored`, with the
/// environment above). Ignored otherwise, so it never counts as a passing
/// test that checked nothing. It opens the store, writes, says `ready`,
/// then answers `put`, `get` and `shred` lines on stdin until `exit`.
#[test]
#[ignore = "the fencing test's second process; run by that test"]
fn fencing_child_node() {
    let (Ok(endpoints), Ok(dir)) = (std::env::var(CHILD_ENDPOINTS), std::env::var(CHILD_DIR))
    else {
        return;
    };
    let endpoints: Vec<String> = endpoints.split(',').map(String::from).collect();
    let db = open_on(&endpoints, Path::new(&dir), FENCING_NAMESPACE);
    db.register_account("acct").expect("register");
    db.put("acct", "message_content", b"k", b"from the first node")
        .expect("put");
    println!("CHILD ready");
    for line in std::io::stdin().lines() {
        let answer = match line.expect("a command").as_str() {
            "put" => describe(
                db.put("acct", "message_content", b"k", b"a late write")
                    .map(|()| "written".into()),
            ),
            "get" => describe(db.get("acct", "message_content", b"k").map(|v| {
                format!(
                    "read {:?}",
                    v.map(|v| String::from_utf8_lossy(&v).into_owned())
                )
            })),
            "shred" => describe(db.shred("acct", Classes::All).map(|_| "shredded".into())),
            _ => break,
        };
        println!("CHILD {answer}");
    }
}

/// Two nodes and one store. While the first (a second process) serves it,
/// the second's open is refused. The first is paused (SIGSTOP) past its
/// lease; the second takes the store over and writes. When the first runs
/// again, its write, its read and its shred are all refused as fenced:
/// nothing late lands and nothing stale is served.
#[test]
fn a_paused_owner_past_its_lease_is_fenced_when_it_resumes() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    let cluster = EtcdTestCluster::own();
    let local = tempfile::tempdir().expect("a local directory");
    let first_dir = local.path().join("first");
    // The second node shares the first's key file: both serve one store.
    let open_second = || {
        Db::open(
            Config::new(local.path().join("second"))
                .key_file(first_dir.join("keys"))
                .maintenance_every(None)
                .etcd(
                    cluster.endpoints.clone(),
                    FENCING_NAMESPACE,
                    ETCD_TEST_MAX_TXN_OPS,
                ),
        )
    };
    let mut child = Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "fencing_child_node",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENDPOINTS, cluster.endpoints.join(","))
        .env(CHILD_DIR, &first_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the first node starts");
    let mut said = BufReader::new(child.stdout.take().expect("its stdout")).lines();
    let mut tell = child.stdin.take().expect("its stdin");
    let mut answer = |command: Option<&str>| -> String {
        if let Some(command) = command {
            writeln!(tell, "{command}").expect("a command to the first node");
        }
        loop {
            let line = said
                .next()
                .expect("the first node answers")
                .expect("a line");
            // The harness's "test fencing_child_node ... " may lead the line.
            if let Some(at) = line.find("CHILD ") {
                return line[at + "CHILD ".len()..].to_string();
            }
        }
    };
    assert_eq!(answer(None), "ready");

    let refused = open_second().expect_err("the store is served by the first node");
    assert!(refused.is_locked(), "{refused}");
    assert!(refused.to_string().contains("pid"), "{refused}");

    let pid = child.id().to_string();
    let signal = |sig: &str| {
        assert!(
            Command::new("kill")
                .args([sig, &pid])
                .status()
                .expect("kill")
                .success()
        );
    };
    signal("-STOP");
    std::thread::sleep(ETCD_OWNER_LEASE_TTL + Duration::from_secs(2));
    let second = open_second().expect("the second node takes the store over");
    assert_eq!(
        second
            .get("acct", "message_content", b"k")
            .expect("get")
            .as_deref(),
        Some(&b"from the first node"[..])
    );
    second
        .put("acct", "message_content", b"k", b"from the second node")
        .expect("put");
    signal("-CONT");
    assert_eq!(answer(Some("put")), "fenced", "a late write");
    assert_eq!(answer(Some("get")), "fenced", "a read past the lease");
    assert_eq!(answer(Some("shred")), "fenced", "a late shred");
    writeln!(tell, "exit").expect("exit");
    assert!(child.wait().expect("the first node ends").success());
    assert_eq!(
        second
            .get("acct", "message_content", b"k")
            .expect("get")
            .as_deref(),
        Some(&b"from the second node"[..]),
        "the late write did not land"
    );
    assert_eq!(
        second
            .subject("acct")
            .expect("subject")
            .expect("known")
            .state,
        SubjectState::Active,
        "the late shred did not land"
    );
    assert!(second.verify().expect("verify").is_clean());
}

/// The whole cluster put back to a copy taken before a shred (what
/// restoring every member from an etcd snapshot does): the store is refused
/// at open as rolled back (the key provider's anchor vouches for the audit
/// entry of the shred, which the restored cluster does not have), so the
/// shredded account's records, live again in the cluster, are not served.
/// Then the recovery operations.md gives: the latest backup (taken before
/// the shred), restored into a new namespace with the erasure log exported
/// after the shred, serves the other account and keeps the shredded one
/// erased; the rolled-back namespace stays refused.
#[test]
fn a_cluster_put_back_to_before_a_shred_is_refused_and_recovered_by_a_replayed_restore() {
    let cluster = EtcdTestCluster::own();
    let local = tempfile::tempdir().expect("a local directory");
    let open = || {
        Db::open(
            Config::new(local.path().join("store"))
                .key_file(local.path().join("keys"))
                .maintenance_every(None)
                .etcd(
                    cluster.endpoints.clone(),
                    "rolled-back/",
                    ETCD_TEST_MAX_TXN_OPS,
                ),
        )
    };
    let db = open().expect("open");
    db.register_account("acct").expect("register");
    db.register_end_user("acct-user", "acct").expect("register");
    for (subject, class, key, value) in shred_target_records("acct") {
        db.put(&subject, class, &key, &value).expect("put");
    }
    db.register_account("kept").expect("register");
    db.put("kept", "account_profile", b"email", b"kept@example.com")
        .expect("put");
    let backup = local.path().join("backup");
    db.backup(&backup).expect("a backup before the shred");
    drop(db);
    let copy = local.path().join("cluster-copy");
    cluster.kill_all();
    cluster.copy_data(&copy);
    cluster.restart_all();

    let db = open().expect("reopen");
    db.shred("acct", Classes::All).expect("shred");
    let log = local.path().join("erasures.log");
    db.export_erasure_log(&log)
        .expect("the erasure log, exported after the shred");
    drop(db);
    cluster.kill_all();
    cluster.put_back_data(&copy);
    cluster.restart_all();

    let refused = open().expect_err("a store from before the shred");
    assert!(
        matches!(refused, shredkv::Error::StoreRolledBack { .. }),
        "{refused}"
    );

    let (recovered, report) = Db::restore(
        &backup,
        Config::new(local.path().join("recovered"))
            .key_file(local.path().join("keys"))
            .maintenance_every(None)
            .etcd(
                cluster.endpoints.clone(),
                "recovered/",
                ETCD_TEST_MAX_TXN_OPS,
            ),
        shredkv::ErasureSource::File(&log),
    )
    .expect("the backup restored with the erasure log");
    assert!(report.erasures_replayed >= 2, "{report:?}");
    for (subject, class, key, _) in shred_target_records("acct") {
        let read = recovered.get(&subject, class, &key);
        assert!(
            matches!(&read, Err(e) if e.is_erased()),
            "{subject}/{class}: {read:?}"
        );
    }
    assert_eq!(
        recovered
            .get("kept", "account_profile", b"email")
            .expect("read")
            .as_deref(),
        Some(&b"kept@example.com"[..])
    );
    assert!(recovered.verify().expect("verify").is_clean());
    drop(recovered);
    let still = open().expect_err("the rolled-back namespace");
    assert!(
        matches!(still, shredkv::Error::StoreRolledBack { .. }),
        "{still}"
    );
}

const CHUNK_CHILD_ENDPOINTS: &str = "SHREDKV_ETCD_CHUNK_CHILD_ENDPOINTS";
const CHUNK_CHILD_DIR: &str = "SHREDKV_ETCD_CHUNK_CHILD_DIR";
const CHUNK_NAMESPACE: &str = "chunk-kill/";
/// End users of the account the chunk-kill test shreds: about 8 operations
/// each, so its erasure needs several transactions of 128.
const CHUNK_END_USERS: usize = 60;

/// The store of the chunk-kill test, as either node opens it.
fn chunk_store_config(endpoints: Vec<String>, local: &Path) -> Config {
    // No background writer: the flush thread's tick writes the store's
    // time through the same apply the child pauses, and a tick taking one
    // of the two pauses left the marker chunk held (or the rest unpaused).
    Config::new(local.join("store"))
        .key_file(local.join("keys"))
        .maintenance_every(None)
        .flush_every(None)
        .etcd(endpoints, CHUNK_NAMESPACE, 128)
}

fn chunk_end_users() -> Vec<String> {
    (0..CHUNK_END_USERS).map(|i| format!("user-{i}")).collect()
}

/// Not a test of its own: the node the chunk-kill test kills, run as a
/// second process (ignored otherwise). It fills an account with end users,
/// starts its shred with the store's writes paused before each of the
/// first two transactions, lets the first (the erasure's marker chunk)
/// land, says `between chunks` while the second waits, and waits to be
/// killed.
#[test]
#[ignore = "the chunk-kill test's second process; run by that test"]
fn chunk_kill_child_node() {
    use shredkv::internal::{FaultPlan, PausePoint, TestStore, open_with_faults};
    let (Ok(endpoints), Ok(dir)) = (
        std::env::var(CHUNK_CHILD_ENDPOINTS),
        std::env::var(CHUNK_CHILD_DIR),
    ) else {
        return;
    };
    let endpoints = endpoints.split(',').map(String::from).collect();
    let (db, control) = open_with_faults(
        chunk_store_config(endpoints, Path::new(&dir)),
        &TestStore::Configured,
        FaultPlan::none(),
    )
    .expect("open on etcd");
    db.register_account("acct").expect("register");
    for user in chunk_end_users() {
        db.register_end_user(&user, "acct").expect("register");
        db.put(&user, "message_content", b"m1", b"hello")
            .expect("put");
        db.put(&user, "account_profile", b"name", b"a name")
            .expect("put");
    }
    let (arrived, arrivals) = std::sync::mpsc::channel();
    let first = {
        let arrived = arrived.clone();
        control.pause_at(PausePoint::StorageApply, move || {
            let _ = arrived.send(1);
        })
    };
    let _second = control.pause_at(PausePoint::StorageApply, move || {
        let _ = arrived.send(2);
    });
    let shred = std::thread::spawn(move || db.shred("acct", Classes::All));
    assert_eq!(arrivals.recv(), Ok(1), "the shred's first write");
    drop(first);
    assert_eq!(arrivals.recv(), Ok(2), "the shred's second write");
    println!("CHILD between chunks");
    // The test kills this process now; this is only a bound.
    std::thread::sleep(Duration::from_secs(120));
    println!("CHILD not killed");
    drop(shred);
    std::process::exit(1);
}

/// A node killed with SIGKILL between two transactions of a large
/// account's erasure, on a cluster with etcd's default limit of 128
/// operations: the first transaction (the marker, with the account's own
/// erasure) is in the cluster, the others are not. The next open of the
/// store finishes the erasure: the marker is gone, every end user's
/// records are refused as erased with no live key under their scopes, the
/// shred retried answers with the whole family erased, and `verify` is
/// clean. Without the finish at open, end users not reached by the dead
/// node would be served.
#[test]
fn a_node_killed_between_erasure_chunks_leaves_the_family_erased_at_the_next_open() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let cluster = EtcdTestCluster::with_default_txn_limit();
    let local = tempfile::tempdir().expect("a local directory");
    let mut child = Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "chunk_kill_child_node",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHUNK_CHILD_ENDPOINTS, cluster.endpoints.join(","))
        .env(CHUNK_CHILD_DIR, local.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the node starts");
    let said = BufReader::new(child.stdout.take().expect("its stdout"));
    let mut between = false;
    for line in said.lines() {
        let line = line.expect("a line");
        if line.contains("CHILD between chunks") {
            between = true;
            break;
        }
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert!(between, "the node never reached its second erasure chunk");

    let marker = |keys: &[Vec<u8>]| {
        keys.iter()
            .any(|k| k.windows(16).any(|w| w == b"erasure_pending/"))
    };
    let before = cluster.keys_with_prefix(CHUNK_NAMESPACE.as_bytes());
    assert!(
        marker(&before),
        "the kill landed between chunks: the marker is in the cluster"
    );

    // The same store again; its open waits out the dead node's lease.
    let db = Db::open(chunk_store_config(cluster.endpoints.clone(), local.path()))
        .expect("open after the kill");
    assert!(
        !marker(&cluster.keys_with_prefix(CHUNK_NAMESPACE.as_bytes())),
        "the open finished the erasure"
    );
    let users = chunk_end_users();
    for user in &users {
        for (class, key) in [
            ("message_content", &b"m1"[..]),
            ("account_profile", b"name"),
        ] {
            let err = db.get(user, class, key).expect_err("erased");
            assert!(err.is_erased(), "{user}/{class}: {err}");
        }
        assert_eq!(
            db.certificate(user)
                .expect("certificate")
                .keys_live_in_erased_scopes,
            0,
            "{user}"
        );
        assert_eq!(
            db.subject(user).expect("subject").expect("known").state,
            SubjectState::Erased,
            "{user}"
        );
    }
    let receipt = db.shred("acct", Classes::All).expect("the shred retried");
    assert_eq!(receipt.erased.len(), users.len() + 1, "{receipt:?}");
    assert!(db.verify().expect("verify").is_clean());
}

/// How many `keys destroyed` audit entries name `subject`.
fn keys_destroyed_entries(db: &Db, subject: &str) -> usize {
    let tag = db.subject_tag(subject);
    db.audit_entries(0, usize::MAX)
        .expect("audit entries")
        .iter()
        .filter(|e| e.event == shredkv::AuditEvent::KeysDestroyed && e.subject == Some(tag))
        .count()
}

/// Retries the shred of `account`, whose answer was lost after it landed:
/// the retry writes nothing (counted by `control`) and answers with the
/// receipt of the erasure that landed, naming each of `family` and the
/// `keys destroyed` audit entry that recorded it; each of `family` has
/// one such entry.
fn retried_shred_answers_with_its_receipt(
    db: &Db,
    control: &shredkv::internal::FaultControl,
    account: &str,
    family: &[String],
) -> shredkv::Receipt {
    let before = control.counts();
    let receipt = db.shred(account, Classes::All).expect("the retry");
    assert_eq!(control.counts().since(before).writes, 0, "the retry wrote");
    assert_eq!(receipt.erased.len(), family.len(), "{receipt:?}");
    let recorded = db
        .audit_entries(receipt.audit_head.seq, 1)
        .expect("the receipt's audit entry");
    assert_eq!(recorded[0].hash, receipt.audit_head.hash);
    assert_eq!(recorded[0].event, shredkv::AuditEvent::KeysDestroyed);
    for subject in family {
        assert_eq!(keys_destroyed_entries(db, subject), 1, "{subject}");
    }
    receipt
}

/// A shred whose answer is lost on its way back from etcd (the fault layer
/// applies the batch to the cluster, then fails the call): the retry writes
/// nothing and answers with the receipt of the erasure that landed, whose
/// audit entry it names; each subject has one `keys destroyed` entry; a new
/// client (reopened) gets the same receipt.
#[test]
fn a_shred_whose_answer_was_lost_on_etcd_is_answered_by_its_retry() {
    use shredkv::internal::{ApplyFailure, FaultPlan, FaultPoint, TestStore, open_with_faults};
    let cluster = EtcdTestCluster::shared();
    let local = tempfile::tempdir().expect("a local directory");
    let namespace = format!("lost-answer/{}/", local.path().display());
    let config = || {
        Config::new(local.path().join("store"))
            .key_file(local.path().join("keys"))
            .maintenance_every(None)
            .etcd(cluster.endpoints.clone(), &namespace, cluster.max_txn_ops)
    };
    let (db, control) = open_with_faults(config(), &TestStore::Configured, FaultPlan::none())
        .expect("open on etcd");
    db.register_account("acct").expect("register");
    let users: Vec<String> = (0..5).map(|i| format!("user-{i}")).collect();
    for user in &users {
        db.register_end_user(user, "acct").expect("register");
        db.put(user, "message_content", b"m1", b"hello")
            .expect("put");
    }
    control.fail_nth(FaultPoint::DurableApply, 1, ApplyFailure::AppliedNotSynced);
    db.shred("acct", Classes::All)
        .expect_err("the answer is lost");
    let family: Vec<String> = std::iter::once("acct".to_string())
        .chain(users.iter().cloned())
        .collect();
    let receipt = retried_shred_answers_with_its_receipt(&db, &control, "acct", &family);
    drop(db);
    let db = Db::open(config()).expect("reopen");
    assert_eq!(
        db.shred("acct", Classes::All).expect("after reopening"),
        receipt
    );
}

#[path = "support/wire.rs"]
mod wire;

/// The bytes a request carries when it writes `key` of `tree` in the
/// store at `namespace` (the backend's layout: namespace ‖ tree ‖ 0 ‖ key).
fn on_the_wire(namespace: &str, tree: &str, key: &[u8]) -> Vec<u8> {
    let mut bytes = namespace.as_bytes().to_vec();
    bytes.extend_from_slice(tree.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(key);
    bytes
}

/// Answers lost on the wire, not in the fault layer: the store reaches
/// the cluster through a TCP proxy in front of each member, which closes
/// the connection of the request that writes what the test names after
/// that request reached the member, dropping its answer. A registration, a
/// put and a shred each fail in the caller (the error says the outcome is
/// unknown), their writes landed (read from the cluster directly), and each
/// retry answers as if the first answer had arrived: the registration and
/// the put are there once; a read whose answer is lost is sent again and
/// answers; and the shred
/// is answered with the receipt of the erasure that landed, writing
/// nothing, with one `keys destroyed` audit entry per subject, also after
/// reopening.
#[test]
fn answers_lost_on_the_wire_are_answered_by_their_retries() {
    use shredkv::internal::{FaultPlan, TestStore, open_with_faults};
    use wire::{Request, WireProxies};
    let cluster = EtcdTestCluster::shared();
    let proxies = WireProxies::start(&cluster.endpoints);
    let local = tempfile::tempdir().expect("a local directory");
    let namespace = format!("wire-lost-answer/{}/", local.path().display());
    let config = |endpoints: &[String]| {
        Config::new(local.path().join("store"))
            .key_file(local.path().join("keys"))
            .maintenance_every(None)
            .etcd(endpoints.to_vec(), &namespace, cluster.max_txn_ops)
    };
    let (db, control) = open_with_faults(
        config(&proxies.urls),
        &TestStore::Configured,
        FaultPlan::none(),
    )
    .expect("open on etcd through the proxies");
    let arm = |pattern: &[u8]| proxies.arm(Request::Put, pattern);
    let disarm = || proxies.disarm();
    let cuts = || proxies.cuts();
    let in_cluster = |tree: &str, key: &[u8]| {
        !cluster
            .keys_with_prefix(&on_the_wire(&namespace, tree, key))
            .is_empty()
    };

    // A registration (insert-if-absent) whose answer is lost.
    let account_tag = db.subject_tag("acct");
    arm(&on_the_wire(&namespace, "subjects", b""));
    let lost = db.register_account("acct");
    disarm();
    assert_eq!(cuts(), 1, "the registration crossed no proxy: {lost:?}");
    assert!(
        lost.is_err(),
        "the registration's answer was lost: {lost:?}"
    );
    assert!(
        in_cluster("subjects", b""),
        "the registration reached a member"
    );
    assert_eq!(db.register_account("acct").expect("the retry"), account_tag);

    let users: Vec<String> = (0..5).map(|i| format!("user-{i}")).collect();
    for user in &users {
        db.register_end_user(user, "acct").expect("register");
        db.put(user, "message_content", b"m1", b"hello")
            .expect("put");
    }

    // A put whose answer is lost: the record is there, and the put again
    // leaves it as the test wrote it.
    arm(&on_the_wire(&namespace, "data", b""));
    let lost = db.put("acct", "account_profile", b"email", b"acct@example.com");
    disarm();
    assert_eq!(cuts(), 2, "the put crossed no proxy: {lost:?}");
    let lost = lost.expect_err("the put's answer was lost");
    assert!(
        lost.to_string()
            .contains("may or may not have been applied"),
        "the error says the outcome is unknown: {lost}"
    );
    assert_eq!(
        db.get("acct", "account_profile", b"email").expect("get"),
        Some(b"acct@example.com".to_vec()),
        "the put landed"
    );
    db.put("acct", "account_profile", b"email", b"acct@example.com")
        .expect("the put again");
    // A read whose answer is lost is sent again, to the next member.
    proxies.arm(Request::Read, &on_the_wire(&namespace, "data", b""));
    let read = db.get("acct", "account_profile", b"email");
    disarm();
    assert_eq!(cuts(), 3, "the read crossed no proxy: {read:?}");
    assert_eq!(
        read.expect("a read is sent again"),
        Some(b"acct@example.com".to_vec())
    );

    // A shred whose answer is lost: the stored receipt is the last key its
    // erasure writes.
    arm(&on_the_wire(&namespace, "meta", b"receipt/"));
    let lost = db.shred("acct", Classes::All);
    disarm();
    assert_eq!(cuts(), 4, "the shred crossed no proxy: {lost:?}");
    let lost = lost.expect_err("the shred's answer was lost");
    assert!(!lost.is_erased(), "{lost}");
    assert!(
        in_cluster("meta", b"receipt/"),
        "the shred's erasure reached a member"
    );
    for subject in std::iter::once("acct").chain(users.iter().map(String::as_str)) {
        let read = db.get(subject, "message_content", b"m1");
        assert!(
            matches!(&read, Err(e) if e.is_erased()),
            "{subject} after the lost answer: {read:?}"
        );
    }
    let family: Vec<String> = std::iter::once("acct".to_string())
        .chain(users.iter().cloned())
        .collect();
    let receipt = retried_shred_answers_with_its_receipt(&db, &control, "acct", &family);
    assert!(db.verify().expect("verify").problems.is_empty());
    drop(db);
    // A new client, straight to the members.
    let db = Db::open(config(&cluster.endpoints)).expect("reopen");
    assert_eq!(
        db.shred("acct", Classes::All).expect("after reopening"),
        receipt
    );
}

/// Shards on the cluster, two nodes (two `Shards` over the same four
/// namespaces): each serves the shards it opened, a shard served by one is
/// refused to the other (`is_locked`) until released, an account routes to
/// the node serving its shard and is refused elsewhere
/// (`is_shard_not_served`), each family stays in its shard's namespace,
/// and a shard taken over carries what the first node wrote.
#[test]
fn shards_on_etcd_are_served_by_one_node_each_and_change_hands() {
    use shredkv::Shards;
    let cluster = EtcdTestCluster::shared();
    let local = tempfile::tempdir().expect("a local directory");
    let node = || {
        let dir = local.path().to_path_buf();
        let endpoints = cluster.endpoints.clone();
        let max_txn_ops = cluster.max_txn_ops;
        Shards::new(4, move |shard| {
            Config::new(dir.join(format!("shard-{shard}")))
                .key_file(dir.join(format!("shard-{shard}.keys")))
                .maintenance_every(None)
                .etcd(
                    endpoints.clone(),
                    &format!("shards/{}/shard-{shard}/", dir.display()),
                    max_txn_ops,
                )
        })
        .expect("shards")
    };
    let (a, b) = (node(), node());
    for shard in [0, 1] {
        a.serve(shard).expect("node A serves 0 and 1");
    }
    for shard in [2, 3] {
        b.serve(shard).expect("node B serves 2 and 3");
    }
    let err = a.serve(2).expect_err("shard 2 is node B's");
    assert!(err.is_locked(), "{err}");

    let accounts: Vec<String> = (0..24).map(|i| format!("acct-{i}")).collect();
    let serving = |account: &str| {
        if a.shard_of(account).expect("route") < 2 {
            &a
        } else {
            &b
        }
    };
    for account in &accounts {
        let (home, away) = if std::ptr::eq(serving(account), &a) {
            (&a, &b)
        } else {
            (&b, &a)
        };
        let err = away.for_account(account).expect_err("not served there");
        assert!(err.is_shard_not_served(), "{account}: {err}");
        let db = home.for_account(account).expect("served");
        db.register_account(account).expect("register");
        db.register_end_user(&format!("{account}-user"), account)
            .expect("register");
        db.put(
            &format!("{account}-user"),
            "message_content",
            b"m1",
            account.as_bytes(),
        )
        .expect("put");
    }
    // Each family is in its shard's namespace and no other.
    for account in &accounts {
        let home = a.shard_of(account).expect("route");
        for shard in 0..4 {
            let db = a.get(shard).or_else(|| b.get(shard)).expect("served");
            let found = db.subject(&format!("{account}-user")).expect("subject");
            assert_eq!(found.is_some(), shard == home, "{account} in shard {shard}");
        }
    }

    // Node B lets shard 2 go; node A takes it over and serves what B wrote.
    assert!(b.release(2));
    a.serve(2).expect("node A takes shard 2 over");
    let on_two: Vec<&String> = accounts
        .iter()
        .filter(|account| a.shard_of(account).expect("route") == 2)
        .collect();
    assert!(!on_two.is_empty());
    for account in &on_two {
        let err = b.for_account(account).expect_err("B let shard 2 go");
        assert!(err.is_shard_not_served(), "{err}");
        let db = a.for_account(account).expect("A serves shard 2");
        assert_eq!(
            db.get(&format!("{account}-user"), "message_content", b"m1")
                .expect("read"),
            Some(account.as_bytes().to_vec())
        );
    }
    // A shred on shard 2 erases the family there; shard 3's stay.
    let shredded = on_two[0];
    let receipt = a
        .for_account(shredded)
        .expect("served")
        .shred(shredded, Classes::All)
        .expect("shred");
    assert_eq!(receipt.erased.len(), 2, "{receipt:?}");
    for account in &accounts {
        let db = a
            .for_account(account)
            .or_else(|_| b.for_account(account))
            .expect("served by one node");
        let read = db.get(&format!("{account}-user"), "message_content", b"m1");
        if account == shredded {
            assert!(matches!(&read, Err(e) if e.is_erased()), "{read:?}");
        } else {
            assert_eq!(read.expect("read"), Some(account.as_bytes().to_vec()));
        }
    }
}

/// etcd refuses a request larger than `--max-request-bytes` (1.5 MiB by
/// default), and a stored receipt grows with the family (25 bytes a
/// subject), as does the marker of an erasure of several families at once
/// (16 bytes a subject; one family's marker names no subject). On a
/// cluster of its own limited to 64 KiB a request (values to 32 KiB):
///
/// - an account with 2,200 end users (a listing marker would take 35 KiB,
///   the receipt 55 KiB) is erased whole, its marker the same size as any
///   family's, its receipt stored in two pages and a head: its retry, in
///   this process and after a reopen, answers with the whole receipt;
/// - two accounts of 1,100 end users erased at once (`shred_each`: a
///   listing of 35 KiB) are erased, their listing in pages written before
///   the marker, and no marker or page is left.
///
/// Before, an erasure whose marker fit and whose receipt did not left its
/// marker in the store behind a last chunk the cluster refused, and every
/// open after it failed; then, until receipts were paged, its retry
/// answered with an empty receipt.
#[test]
fn erasures_past_the_request_limit_page_their_listing_and_their_receipt() {
    const LIMIT: usize = 64 << 10;
    let cluster = EtcdTestCluster::with_request_limit(LIMIT);
    let local = tempfile::tempdir().expect("a local directory");
    let namespace = "request-limit/";
    let config = || {
        Config::new(local.path().join("store"))
            .key_file(local.path().join("keys"))
            .maintenance_every(None)
            // Before `etcd`: either order holds.
            .max_request_bytes(LIMIT)
            .etcd(cluster.endpoints.clone(), namespace, cluster.max_txn_ops)
    };
    let db = Db::open(config()).expect("open on etcd");
    let families = [("large", 2_200), ("pair-a", 1_100), ("pair-b", 1_100)];
    std::thread::scope(|scope| {
        for (account, users) in families {
            let db = &db;
            scope.spawn(move || {
                db.register_account(account).expect("register");
                for i in 0..users {
                    db.register_end_user(&format!("{account}-user-{i}"), account)
                        .expect("register");
                }
                for i in 0..3 {
                    db.put(
                        &format!("{account}-user-{i}"),
                        "message_content",
                        b"m1",
                        b"hello",
                    )
                    .expect("put");
                }
            });
        }
    });
    let meta_keys =
        |prefix: &str| cluster.keys_with_prefix(format!("{namespace}meta\0{prefix}").as_bytes());

    // 2,202 subjects listed: 35 KiB, in two pages before the marker.
    let receipts = db
        .shred_each(&["pair-a", "pair-b"], Classes::All)
        .expect("a listing past half a request, in pages");
    assert_eq!(
        receipts.iter().map(|r| r.erased.len()).sum::<usize>(),
        2_202
    );
    assert!(
        meta_keys("erasure_pending").is_empty(),
        "a marker or its pages stayed"
    );
    for account in ["pair-a", "pair-b"] {
        let read = db.get(&format!("{account}-user-0"), "message_content", b"m1");
        assert!(matches!(&read, Err(e) if e.is_erased()), "{read:?}");
    }

    let receipt = db.shred("large", Classes::All).expect("the shred");
    assert_eq!(receipt.erased.len(), 2_201);
    assert!(
        meta_keys("erasure_pending/").is_empty(),
        "the marker stayed"
    );
    // 2,201 scopes of 25 bytes: two pages of at most 32 KiB, and a head.
    assert_eq!(meta_keys("receipt/").len(), 1, "the receipt's head");
    assert_eq!(meta_keys("receipt_page/").len(), 2, "the receipt's pages");
    for i in 0..3 {
        let read = db.get(&format!("large-user-{i}"), "message_content", b"m1");
        assert!(matches!(&read, Err(e) if e.is_erased()), "{read:?}");
    }
    let retry = db.shred("large", Classes::All).expect("the retry");
    assert!(
        retry == receipt,
        "the retry named {} scopes",
        retry.erased.len()
    );
    drop(db);
    let db = Db::open(config()).expect("the store reopens");
    let read = db.get("large-user-0", "message_content", b"m1");
    assert!(matches!(&read, Err(e) if e.is_erased()), "{read:?}");
    let retry = db.shred("large", Classes::All).expect("the retry");
    assert!(
        retry == receipt,
        "after reopening: {} scopes",
        retry.erased.len()
    );
    assert!(db.verify().expect("verify").problems.is_empty());
}

/// A chunked erasure whose answers are lost on the wire, on a cluster with
/// etcd's default of 128 operations (so an account with 40 end users is
/// erased in chunks): the first chunk (the marker, the account's own
/// erasure) lands and its answer is cut; the family is refused at once,
/// and the retry finishes the erasure at the first attempt's time, with
/// one `keys destroyed` entry per subject. Then a second account's last
/// chunk (the marker's removal and the stored receipt) lands with its
/// answer cut, and the retry answers with the receipt, writing nothing.
#[test]
fn chunks_whose_answers_are_lost_on_the_wire_are_finished_by_the_retry() {
    use shredkv::internal::{FaultPlan, TestStore, open_with_faults};
    use wire::{Request, WireProxies};
    let cluster = EtcdTestCluster::with_default_txn_limit();
    let proxies = WireProxies::start(&cluster.endpoints);
    let local = tempfile::tempdir().expect("a local directory");
    let namespace = "wire-chunks/";
    let (db, control) = open_with_faults(
        Config::new(local.path().join("store"))
            .key_file(local.path().join("keys"))
            .maintenance_every(None)
            .etcd(proxies.urls.clone(), namespace, cluster.max_txn_ops),
        &TestStore::Configured,
        FaultPlan::none(),
    )
    .expect("open on etcd through the proxies");
    let family = |account: &str| -> Vec<String> {
        std::iter::once(account.to_string())
            .chain((0..40).map(|i| format!("{account}-user-{i}")))
            .collect()
    };
    for account in ["first", "last"] {
        db.register_account(account).expect("register");
        for subject in &family(account)[1..] {
            db.register_end_user(subject, account).expect("register");
        }
        for subject in family(account) {
            db.put(&subject, "message_content", b"m1", b"hello")
                .expect("put");
        }
    }
    let in_cluster = |key: &str| {
        !cluster
            .keys_with_prefix(on_the_wire(namespace, "meta", key.as_bytes()).as_slice())
            .is_empty()
    };

    // The first chunk's answer lost.
    proxies.arm(
        Request::Put,
        &on_the_wire(namespace, "meta", b"erasure_pending/"),
    );
    let lost = db.shred("first", Classes::All);
    proxies.disarm();
    assert_eq!(proxies.cuts(), 1, "the marker crossed no proxy: {lost:?}");
    lost.expect_err("the first chunk's answer was lost");
    assert!(in_cluster("erasure_pending/"), "the first chunk landed");
    for subject in family("first") {
        let read = db.get(&subject, "message_content", b"m1");
        assert!(
            matches!(&read, Err(e) if e.is_erased()),
            "{subject}: {read:?}"
        );
    }
    let receipt = db
        .shred("first", Classes::All)
        .expect("the retry finishes it");
    assert_eq!(receipt.erased.len(), 41, "{receipt:?}");
    assert!(!in_cluster("erasure_pending/"), "the marker stayed");
    let erased_at = db
        .subject("first")
        .expect("subject")
        .and_then(|info| info.erased_at);
    assert_eq!(
        erased_at,
        Some(receipt.erased_at),
        "the first attempt's time"
    );
    for subject in family("first") {
        assert_eq!(keys_destroyed_entries(&db, &subject), 1, "{subject}");
        let info = db.subject(&subject).expect("subject").expect("known");
        assert_eq!(info.erased_at, Some(receipt.erased_at), "{subject}");
    }

    // The last chunk's answer lost.
    proxies.arm(Request::Put, &on_the_wire(namespace, "meta", b"receipt/"));
    let lost = db.shred("last", Classes::All);
    proxies.disarm();
    assert_eq!(proxies.cuts(), 2, "the receipt crossed no proxy: {lost:?}");
    lost.expect_err("the last chunk's answer was lost");
    assert!(
        !in_cluster("erasure_pending/"),
        "the last chunk did not land"
    );
    retried_shred_answers_with_its_receipt(&db, &control, "last", &family("last"));
    assert!(db.verify().expect("verify").problems.is_empty());
}
