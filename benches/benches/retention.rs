//! Compaction throughput on a store holding many keys: due keys destroyed per
//! second, records re-keyed per second, and an epoch rotation's cost (it
//! re-wraps the key tree's roots, one per loaded day and forest 0's, not the
//! keys).
//!
//! Full run (1M data keys: 10,000 subjects × 100 expiry days):
//! `cargo bench -p shredkv-benches --bench retention`
//! Quick run (CI): `SHREDKV_BENCH_QUICK=1 cargo bench -p shredkv-benches --bench retention -- --quick`

use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use shredkv::jiff::{SignedDuration, Timestamp};
use shredkv::{Batch, Db, ManualClock};
use shredkv_benches::due_floor::DueKeysFloor;
use shredkv_benches::expiring::{self, CLASS, start};

struct Sizes {
    subjects: usize,
    days: usize,
    rekey_records: usize,
}

fn sizes() -> Sizes {
    if std::env::var_os("SHREDKV_BENCH_QUICK").is_some() {
        Sizes {
            subjects: 200,
            days: 40,
            rekey_records: 2_000,
        }
    } else {
        Sizes {
            subjects: 10_000,
            days: 100,
            rekey_records: 100_000,
        }
    }
}

/// When the keys of records expiring on loaded day `d` are due.
fn due_at(d: usize) -> Timestamp {
    expiring::due_at(d).expect("a valid time")
}

/// A store whose every subject has one record expiring on each of `days`
/// days: `subjects × days` expiry-bucket keys, plus a scope key per subject.
fn store_with_expiring_keys(sizes: &Sizes) -> (tempfile::TempDir, Db, ManualClock) {
    expiring::store_with_expiring_keys(sizes.subjects, sizes.days).expect("load the store")
}

/// A store with expiring keys and the next loaded day whose keys are not
/// yet due.
struct DueDays {
    sizes: Sizes,
    loaded: Option<((tempfile::TempDir, Db, ManualClock), usize)>,
}

impl DueDays {
    fn new(sizes: Sizes) -> Self {
        Self {
            sizes,
            loaded: None,
        }
    }

    /// Time to destroy one more day's due keys (one per subject). Loading
    /// (the first time, and again once every loaded day is spent) is not
    /// timed: every timed pass destroys a full day's keys.
    fn time_one_pass(&mut self) -> Duration {
        if self
            .loaded
            .as_ref()
            .is_none_or(|(_, day)| *day == self.sizes.days)
        {
            self.loaded = None; // the old store goes before the new one loads
            self.loaded = Some((store_with_expiring_keys(&self.sizes), 0));
        }
        let Some(((_, db, clock), day)) = self.loaded.as_mut() else {
            unreachable!("loaded just above");
        };
        clock.set(due_at(*day));
        *day += 1;
        let started = Instant::now();
        let report = db.compact().expect("compact");
        let spent = started.elapsed();
        assert!(
            report.keys_destroyed >= self.sizes.subjects as u64,
            "{report:?}"
        );
        // Each pass on its own line: the weekly sweep days (records removed)
        // cost several times the others, and a mean hides which is which.
        eprintln!(
            "pass: {} keys destroyed, {} dead records removed, {:.1} ms ({:.0} keys/s)",
            report.keys_destroyed,
            report.records_removed,
            spent.as_secs_f64() * 1e3,
            report.keys_destroyed as f64 / spent.as_secs_f64()
        );
        spent
    }
}

fn destroy_due_keys(c: &mut Criterion) {
    let sizes = sizes();
    let mut group = c.benchmark_group("compaction");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    // Each iteration: one more day passes, so one day's keys (one per subject) are due.
    group.throughput(Throughput::Elements(sizes.subjects as u64));
    // Loaded on first use: a run filtered to another benchmark skips it.
    let mut days = DueDays::new(sizes);
    group.bench_function("destroy one day's due keys", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| days.time_one_pass()).sum());
    });
    group.finish();
}

/// The subjects (= due keys per pass) of the scaling group: compaction's
/// cost per destroyed key must not grow with the keys it destroys.
fn scaling_subjects() -> &'static [usize] {
    if std::env::var_os("SHREDKV_BENCH_QUICK").is_some() {
        &[500, 2_000]
    } else {
        &[2_000, 8_000, 32_000]
    }
}

fn destroy_due_keys_at_scale(c: &mut Criterion) {
    let mut group = c.benchmark_group("compaction scaling");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    for &subjects in scaling_subjects() {
        group.throughput(Throughput::Elements(subjects as u64));
        // 16 loaded days per store: about one store per criterion sample.
        let mut days = DueDays::new(Sizes {
            subjects,
            days: 16,
            rekey_records: 0,
        });
        group.bench_function(format!("destroy {subjects} due keys"), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| days.time_one_pass()).sum());
        });
        drop(days);
        // The design's floor in the same run: the same writes on plain redb
        // (benches/src/due_floor.rs).
        let mut floor: Option<(tempfile::TempDir, DueKeysFloor)> = None;
        group.bench_function(format!("floor: plain redb, {subjects} due keys"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        if floor.as_ref().is_none_or(|(_, f)| f.days_left() == 0) {
                            floor = None;
                            let dir = tempfile::tempdir().expect("a temporary directory");
                            let loaded = DueKeysFloor::load(dir.path(), subjects, 16)
                                .expect("load the floor");
                            floor = Some((dir, loaded));
                        }
                        let (_, f) = floor.as_mut().expect("loaded just above");
                        let pass = f.pass().expect("a floor pass");
                        assert_eq!(pass.destroyed, subjects);
                        eprintln!(
                            "floor pass: {} keys destroyed, {} dead records removed, {:.1} ms ({:.0} keys/s)",
                            pass.destroyed,
                            pass.records_removed,
                            pass.spent.as_secs_f64() * 1e3,
                            pass.destroyed as f64 / pass.spent.as_secs_f64()
                        );
                        pass.spent
                    })
                    .sum()
            });
        });
    }
    group.finish();
}

fn rewrap_on_rotation(c: &mut Criterion) {
    let sizes = sizes();
    let mut group = c.benchmark_group("epoch rotation");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    // Every loaded key (subjects × days) plus one scope key per subject.
    let keys = (sizes.subjects * (sizes.days + 1)) as u64;
    // Under the key tree (store format 4) a rotation re-wraps the roots:
    // one day forest per loaded day, and forest 0 for the scope keys.
    let roots = (sizes.days + 1) as u64;
    group.throughput(Throughput::Elements(roots));
    let mut store = None;
    group.bench_function("re-wrap the key tree's roots", |b| {
        let (_dir, db, _clock) = store.get_or_insert_with(|| store_with_expiring_keys(&sizes));
        assert_eq!(db.stats().expect("stats").keys_live, keys);
        b.iter_custom(|iters| {
            let started = Instant::now();
            for _ in 0..iters {
                let report = db.rotate_epoch().expect("rotate");
                assert_eq!(report.keys_rewrapped, roots, "{report:?}");
            }
            started.elapsed()
        });
    });
    group.finish();
}

fn rekey_a_bucket(c: &mut Criterion) {
    let sizes = sizes();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let clock = ManualClock::new(start());
    let db = Db::open(expiring::bench_config(dir.path(), &clock)).expect("open the store");
    db.register_account("big").expect("register");
    let value = [0x5Au8; 100];
    let mut batch = Batch::new();
    for r in 0..sizes.rekey_records {
        batch.put("big", CLASS, &(r as u64).to_be_bytes(), &value);
        if batch.len() >= 1_000 {
            db.apply(std::mem::take(&mut batch)).expect("load");
        }
    }
    db.apply(batch).expect("load");
    let mut group = c.benchmark_group("re-key");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group.throughput(Throughput::Elements(sizes.rekey_records as u64));
    group.bench_function("re-encrypt a bucket after an overwrite", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for i in 0..iters {
                // An overwrite makes the bucket owe a re-key, due well within 31 days.
                db.put("big", CLASS, &0u64.to_be_bytes(), &i.to_be_bytes())
                    .expect("overwrite");
                clock.advance(SignedDuration::from_hours(24 * 31));
                let started = Instant::now();
                let report = db.compact().expect("compact");
                spent += started.elapsed();
                assert_eq!(
                    report.records_rekeyed, sizes.rekey_records as u64,
                    "{report:?}"
                );
            }
            spent
        });
    });
    group.finish();
}

criterion_group! {
    name = retention;
    config = Criterion::default().warm_up_time(Duration::from_millis(100)).measurement_time(Duration::from_secs(1));
    targets = destroy_due_keys, destroy_due_keys_at_scale, rekey_a_bucket, rewrap_on_rotation
}
criterion_main!(retention);
