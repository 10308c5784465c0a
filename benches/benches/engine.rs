//! Engine workloads, every peer side by side in one criterion group each:
//! put (one record), get (random), scan (one subject), mixed 50/50
//! get/update, and erasure of one subject until durable, beside each plain
//! backend's bare durable commit and that commit followed by an anchor's
//! synced write (the floor of an erasure under G6); and what the
//! anchor adds to a shred (`engine-shred-anchor`: the same shred on redb
//! with the file provider's anchor, and with a provider that keeps none).
//!
//! Full run: `cargo bench -p shredkv-benches --bench engine` (1M records of
//! 100 B in 10k subjects). CI: `SHREDKV_BENCH_QUICK=1` or criterion's
//! `--quick` shrinks the data set (see `Sizes::QUICK`). Each peer is loaded
//! once per process, the first time a benchmark needs it, outside any timing.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use shredkv_benches::Peer;
use shredkv_benches::shred_writes::ShredWrites;
use shredkv_benches::workload::{Fixture, Sizes, VALUE_LEN, value};

/// The loaded stores, one per peer, built on first use.
struct Fixtures {
    sizes: Sizes,
    loaded: Vec<Fixture>,
}

impl Fixtures {
    fn get(&mut self, peer: Peer) -> &mut Fixture {
        let index = match self.loaded.iter().position(|f| f.store().peer() == peer) {
            Some(index) => index,
            None => {
                let fixture = Fixture::load(peer, self.sizes, None).expect("the peer loads");
                self.loaded.push(fixture);
                self.loaded.len() - 1
            }
        };
        self.loaded.get_mut(index).expect("just found or pushed")
    }
}

/// A few values to write, cycled through (generating them is not timed).
fn values() -> Vec<[u8; VALUE_LEN]> {
    (0..16).map(|i| value(0xfeed + i)).collect()
}

fn put(c: &mut Criterion, fixtures: &mut Fixtures) {
    let mut group = c.benchmark_group("engine-put");
    group.throughput(Throughput::Elements(1));
    let values = values();
    for peer in Peer::ALL {
        group.bench_function(peer.name(), |b| {
            let fixture = fixtures.get(peer);
            b.iter_custom(|iters| {
                let picks = fixture.fresh_records(iters);
                let store = fixture.store();
                let start = Instant::now();
                for ((s, key), value) in picks.iter().zip(values.iter().cycle()) {
                    store
                        .put(fixture.subject(*s), key, value)
                        .expect("put succeeds");
                }
                start.elapsed()
            });
        });
    }
    group.finish();
}

fn get(c: &mut Criterion, fixtures: &mut Fixtures) {
    let mut group = c.benchmark_group("engine-get");
    group.throughput(Throughput::Elements(1));
    for peer in Peer::ALL {
        group.bench_function(peer.name(), |b| {
            let fixture = fixtures.get(peer);
            b.iter_custom(|iters| {
                let picks = fixture.random_records(iters);
                let store = fixture.store();
                let mut out = Vec::with_capacity(VALUE_LEN);
                let start = Instant::now();
                for (s, key) in &picks {
                    let found = store
                        .get(fixture.subject(*s), key, &mut out)
                        .expect("get succeeds");
                    assert!(found, "every picked record was loaded");
                    black_box(&out);
                }
                start.elapsed()
            });
        });
    }
    group.finish();
}

fn scan(c: &mut Criterion, fixtures: &mut Fixtures) {
    let mut group = c.benchmark_group("engine-scan");
    group.throughput(Throughput::Elements(fixtures.sizes.per_subject()));
    for peer in Peer::ALL {
        group.bench_function(peer.name(), |b| {
            let fixture = fixtures.get(peer);
            b.iter_custom(|iters| {
                let picks = fixture.random_subjects(iters);
                let store = fixture.store();
                let mut bytes = 0usize;
                let start = Instant::now();
                for s in &picks {
                    store
                        .scan(fixture.subject(*s), &mut |k, v| bytes += k.len() + v.len())
                        .expect("scan succeeds");
                }
                let elapsed = start.elapsed();
                black_box(bytes);
                elapsed
            });
        });
    }
    group.finish();
}

fn mixed(c: &mut Criterion, fixtures: &mut Fixtures) {
    let mut group = c.benchmark_group("engine-mixed");
    group.throughput(Throughput::Elements(1));
    let values = values();
    for peer in Peer::ALL {
        group.bench_function(peer.name(), |b| {
            let fixture = fixtures.get(peer);
            b.iter_custom(|iters| {
                let picks = fixture.random_records(iters);
                let reads = fixture.coin_flips(iters);
                let store = fixture.store();
                let mut out = Vec::with_capacity(VALUE_LEN);
                let start = Instant::now();
                for (((s, key), read), value) in picks.iter().zip(&reads).zip(values.iter().cycle())
                {
                    let subject = fixture.subject(*s);
                    if *read {
                        store.get(subject, key, &mut out).expect("get succeeds");
                        black_box(&out);
                    } else {
                        store.put(subject, key, value).expect("update succeeds");
                    }
                }
                start.elapsed()
            });
        });
    }
    group.finish();
}

fn erase(c: &mut Criterion, fixtures: &mut Fixtures) {
    let mut group = c.benchmark_group("engine-erase");
    // One iteration can cost seconds of preparation (a fresh subject of up
    // to 100k records): ten flat samples keep the run bounded.
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    for size in fixtures.sizes.erase {
        group.throughput(Throughput::Elements(size));
        for peer in Peer::ALL {
            group.bench_function(BenchmarkId::new(peer.name(), size), |b| {
                let fixture = fixtures.get(peer);
                // Each erasure right after its own subject was loaded and
                // flushed, whatever the size: loading every victim first and
                // then erasing them back to back measured small subjects in
                // a run of warm fsyncs and large ones cold, one per sample.
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let victim = fixture.fresh_subject(size).expect("the subject loads");
                        let start = Instant::now();
                        fixture.store().erase(&victim).expect("erase succeeds");
                        total += start.elapsed();
                    }
                    total
                });
            });
        }
        // The floors of a durable erasure on each plain backend, on a store
        // that just loaded the same subject:
        // - `*-durable-commit`: one small durable commit (a 100-byte put,
        //   then the backend's durable flush). shredkv's erasure is one
        //   durable commit too, so "flat in N" means within a small factor
        //   of this at every size (issue 14: 1.5×);
        // - `*-anchored-commit`: the same commit, then the anchor's write
        //   that a shred makes after it under G6 (a 64-byte block of a small
        //   file beside the store, synced), in sequence, since the anchor
        //   may never name a commit that is not yet durable. No erasure
        //   under G6 beats this on its backend;
        // - `*-shred-writes`: one durable commit of the entries a shred
        //   writes (`shred_writes::SHRED_WRITES`; on sled in one
        //   transaction, the only way its trees commit together), then the
        //   anchor: a shred's commit without the engine. Its trees are its
        //   own and small, where the engine's hold every subject's entries,
        //   so it is a lower bound.
        for floor in [
            Floor::DurableCommit,
            Floor::AnchoredCommit,
            Floor::ShredWrites,
        ] {
            for peer in [Peer::Sled, Peer::Redb] {
                let id = BenchmarkId::new(format!("{}-{}", peer.name(), floor.name()), size);
                group.bench_function(id, |b| {
                    let fixture = fixtures.get(peer);
                    let mut anchor = (floor != Floor::DurableCommit)
                        .then(|| AnchorFile::create(fixture.dir()).expect("anchor file"));
                    b.iter_custom(|iters| {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let subject = fixture.fresh_subject(size).expect("the subject loads");
                            let writes = (floor == Floor::ShredWrites)
                                .then(|| ShredWrites::new(subject.as_bytes()));
                            let start = Instant::now();
                            if let Some(writes) = &writes {
                                fixture
                                    .store()
                                    .commit_to_trees(&writes.entries())
                                    .expect("commit to trees");
                            } else {
                                fixture
                                    .store()
                                    .put(&subject, b"durable-commit-probe", &[0x5A; 100])
                                    .expect("put");
                                fixture.store().flush().expect("durable flush");
                            }
                            if let Some(anchor) = &mut anchor {
                                anchor.advance().expect("anchor write");
                            }
                            total += start.elapsed();
                        }
                        total
                    });
                });
            }
        }
    }
    group.finish();
}

/// A floor of a durable erasure on a plain backend (see `erase`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Floor {
    DurableCommit,
    AnchoredCommit,
    ShredWrites,
}

impl Floor {
    fn name(self) -> &'static str {
        match self {
            Floor::DurableCommit => "durable-commit",
            Floor::AnchoredCommit => "anchored-commit",
            Floor::ShredWrites => "shred-writes",
        }
    }
}

/// A stand-in for the key file's anchor blocks: a file of the key file's
/// size (128 slots), whose two 64-byte blocks after the slots are written
/// in turn and synced, as `FileKeyProvider::advance_anchor` does.
struct AnchorFile {
    file: std::fs::File,
    next_block: u64,
}

impl AnchorFile {
    /// Header (32) and 128 slots (48 each), then the two blocks.
    const BLOCKS_AT: u64 = 32 + 48 * 128;
    const BLOCK_LEN: usize = 64;

    fn create(dir: &std::path::Path) -> std::io::Result<Self> {
        use std::io::Write;
        let mut file = std::fs::File::create(dir.join("anchor-floor"))?;
        let len = usize::try_from(Self::BLOCKS_AT).unwrap_or(0) + 2 * Self::BLOCK_LEN;
        file.write_all(&vec![0u8; len])?;
        file.sync_all()?;
        Ok(Self {
            file,
            next_block: 0,
        })
    }

    fn advance(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let block = [u8::try_from(self.next_block % 251).unwrap_or(0); Self::BLOCK_LEN];
        let offset = Self::BLOCKS_AT + (self.next_block % 2) * Self::BLOCK_LEN as u64;
        self.file.write_all_at(&block, offset)?;
        self.file.sync_data()?;
        self.next_block += 1;
        Ok(())
    }
}

/// The file key provider without its anchor: the baseline of
/// `engine-shred-anchor`.
#[derive(Debug)]
struct Unanchored(shredkv_crypto::FileKeyProvider);

impl shredkv_crypto::KeyProvider for Unanchored {
    fn create_epoch(&self) -> Result<shredkv_crypto::EpochId, shredkv_crypto::ProviderError> {
        self.0.create_epoch()
    }
    fn live_epochs(&self) -> Result<Vec<shredkv_crypto::EpochId>, shredkv_crypto::ProviderError> {
        self.0.live_epochs()
    }
    fn wrap(
        &self,
        epoch: shredkv_crypto::EpochId,
        context: &shredkv_crypto::WrapContext,
        key: &shredkv_crypto::DataKey,
    ) -> Result<shredkv_crypto::WrappedKey, shredkv_crypto::ProviderError> {
        self.0.wrap(epoch, context, key)
    }
    fn unwrap(
        &self,
        context: &shredkv_crypto::WrapContext,
        wrapped: &shredkv_crypto::WrappedKey,
    ) -> Result<shredkv_crypto::DataKey, shredkv_crypto::ProviderError> {
        self.0.unwrap(context, wrapped)
    }
    fn destroy_epoch(
        &self,
        epoch: shredkv_crypto::EpochId,
    ) -> Result<(), shredkv_crypto::ProviderError> {
        self.0.destroy_epoch(epoch)
    }
    fn describe(&self) -> String {
        self.0.describe()
    }
}

/// A shred of a 100-record subject on redb, with and without the anchor
/// (one more fsync'd write, of the key file, per durable commit).
fn shred_anchor(c: &mut Criterion) {
    use std::sync::Arc;
    let mut group = c.benchmark_group("engine-shred-anchor");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    for anchored in [true, false] {
        let dir = tempfile::tempdir().expect("dir");
        let keys = dir.path().join("keys");
        let mut config = shredkv::Config::new(dir.path().join("store"))
            .backend(shredkv::Backend::Redb)
            .key_file(&keys)
            .flush_every(None)
            .maintenance_every(None);
        if !anchored {
            let provider = shredkv_crypto::FileKeyProvider::open_or_create(&keys).expect("keys");
            config = config.key_provider(Arc::new(Unanchored(provider)));
        }
        let db = shredkv::Db::open(config).expect("open");
        let name = if anchored { "anchored" } else { "unanchored" };
        let mut next = 0u64;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    next += 1;
                    let subject = format!("s{next}");
                    db.register_account(&subject).expect("register");
                    let mut batch = shredkv::Batch::new();
                    for r in 0..100u32 {
                        batch.put(
                            &subject,
                            "message_content",
                            &r.to_be_bytes(),
                            &value(u64::from(r)),
                        );
                    }
                    db.apply(batch).expect("apply");
                    db.flush().expect("flush");
                    let start = Instant::now();
                    db.shred(&subject, shredkv::Classes::All).expect("shred");
                    total += start.elapsed();
                }
                total
            });
        });
    }
    group.finish();
}

fn main() {
    let sizes = Sizes::for_criterion();
    let mut c = Criterion::default();
    if sizes.quick {
        c = c
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(1))
            .nresamples(10_000);
    }
    let mut c = c.configure_from_args();
    eprintln!(
        "engine benches: {} records of {VALUE_LEN} B in {} subjects, erasing subjects of {:?} records{}",
        sizes.records,
        sizes.subjects,
        sizes.erase,
        if sizes.quick { " (quick)" } else { "" }
    );
    let mut fixtures = Fixtures {
        sizes,
        loaded: Vec::new(),
    };
    put(&mut c, &mut fixtures);
    get(&mut c, &mut fixtures);
    scan(&mut c, &mut fixtures);
    mixed(&mut c, &mut fixtures);
    erase(&mut c, &mut fixtures);
    shred_anchor(&mut c);
    c.final_summary();
}
