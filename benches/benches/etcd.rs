//! shredkv on etcd beside shredkv on redb: one durable put, one get, and
//! one shred of a subject, on a real 3-member etcd cluster on loopback
//! ports (started by the bench, `shredkv::internal::EtcdTestCluster`) and
//! on a local redb store with durable writes (`Config::sync_writes`), so
//! both acknowledge only what survives a crash of the machine (etcd: of a
//! minority of its members).
//!
//! ```text
//! cargo bench -p shredkv-benches --features etcd --bench etcd -- --noplot
//! SHREDKV_BENCH_QUICK=1 cargo bench -p shredkv-benches --features etcd --bench etcd -- --quick   # CI
//! ```
//!
//! Needs `etcd` on the PATH (Debian's etcd-server) and protoc to build.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use shredkv::internal::{ETCD_TEST_MAX_TXN_OPS, EtcdTestCluster};
use shredkv::{Classes, Config, Db};

const CLASS: &str = "message_content";
const RECORDS_PER_SUBJECT: usize = 10;

fn subjects() -> usize {
    if std::env::var_os("SHREDKV_BENCH_QUICK").is_some() {
        20
    } else {
        1_000
    }
}

/// The two stores, each loaded with `subjects()` subjects of ten 100-byte records.
struct Stores {
    _local: tempfile::TempDir,
    stores: Vec<(&'static str, Db)>,
}

fn load(db: &Db, subjects: usize) {
    let value = [0x5A_u8; 100];
    for s in 0..subjects {
        let subject = format!("subject-{s}");
        db.register_account(&subject).expect("register");
        let mut batch = shredkv::Batch::new();
        for r in 0..RECORDS_PER_SUBJECT {
            batch.put(&subject, CLASS, &(r as u64).to_be_bytes(), &value);
        }
        db.apply(batch).expect("load");
    }
    db.flush().expect("flush");
}

fn stores() -> Stores {
    let local = tempfile::tempdir().expect("a local directory");
    let cluster = EtcdTestCluster::shared();
    let etcd = Db::open(
        Config::new(local.path().join("etcd-local"))
            .key_file(local.path().join("etcd-keys"))
            .maintenance_every(None)
            .etcd(
                cluster.endpoints.clone(),
                &format!("bench/{}/", std::process::id()),
                ETCD_TEST_MAX_TXN_OPS,
            ),
    )
    .expect("open on etcd");
    let redb = Db::open(
        Config::new(local.path().join("redb"))
            .key_file(local.path().join("redb-keys"))
            .maintenance_every(None)
            .sync_writes(true),
    )
    .expect("open on redb");
    for db in [&etcd, &redb] {
        load(db, subjects());
    }
    Stores {
        _local: local,
        stores: vec![("shredkv-etcd", etcd), ("shredkv-redb-durable", redb)],
    }
}

fn latency(c: &mut Criterion) {
    let stores = stores();
    let subjects = u64::try_from(subjects()).expect("a small count");
    let value = [0xA5_u8; 100];
    let mut group = c.benchmark_group("etcd-vs-redb");
    for (name, db) in &stores.stores {
        let next = AtomicU64::new(0);
        group.bench_function(format!("put/{name}"), |b| {
            b.iter(|| {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let subject = format!("subject-{}", n % subjects);
                db.put(&subject, CLASS, &(n % 10).to_be_bytes(), &value)
                    .expect("put");
            });
        });
        let next = AtomicU64::new(0);
        group.bench_function(format!("get/{name}"), |b| {
            b.iter(|| {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let subject = format!("subject-{}", n % subjects);
                black_box(
                    db.get(&subject, CLASS, &(n % 10).to_be_bytes())
                        .expect("get"),
                );
            });
        });
        let fresh = AtomicU64::new(0);
        group.bench_function(format!("shred/{name}"), |b| {
            b.iter_custom(|iters| {
                // A subject of ten records per shred, made before the clock starts.
                let names: Vec<String> = (0..iters)
                    .map(|_| format!("shredded-{}", fresh.fetch_add(1, Ordering::Relaxed)))
                    .collect();
                for subject in &names {
                    db.register_account(subject).expect("register");
                    let mut batch = shredkv::Batch::new();
                    for r in 0..RECORDS_PER_SUBJECT {
                        batch.put(subject, CLASS, &(r as u64).to_be_bytes(), &value);
                    }
                    db.apply(batch).expect("load");
                }
                db.flush().expect("flush");
                let started = Instant::now();
                for subject in &names {
                    let receipt = db.shred(subject, Classes::All).expect("shred");
                    assert!(receipt.keys_destroyed() > 0);
                }
                started.elapsed()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, latency);
criterion_main!(benches);
