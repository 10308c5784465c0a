//! What the key provider costs: the PKCS#11 provider on SoftHSM2 against
//! the key file, side by side.
//!
//! - `key-provider-rotation`: the provider's part of an epoch rotation,
//!   creating an epoch and destroying the one before (rewrapping the old
//!   epoch's data keys adds one `unwrap` and one `wrap` per key: measured
//!   in `key-provider-wrap` and `key-provider-unwrap`).
//! - `key-provider-shred`: an engine shred of a 100-record subject on redb,
//!   until durable (each durable commit advances the anchor in the
//!   provider).
//!
//! `cargo bench -p shredkv-benches --bench key_provider`. Needs SoftHSM2
//! (`apt-get install softhsm2`; the module at `SHREDKV_PKCS11_MODULE`,
//! default Debian's path): the bench makes its own token in a temporary
//! directory. Criterion's `--quick` or `SHREDKV_BENCH_QUICK=1` shortens it.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use shredkv_benches::workload::{Sizes, value};
use shredkv_crypto::{DataKey, FileKeyProvider, KeyProvider, WrapContext};
use shredkv_pkcs11::{Pin, Pkcs11Config, Pkcs11KeyProvider, StoreLabel};

/// The bench token's PIN (a throwaway token; not a secret).
const PIN: &str = "bench-pin";
const TOKEN: &str = "bench";

/// Makes a SoftHSM2 token in `dir` and points this process at it. Runs
/// before the module is loaded.
fn softhsm_token(dir: &std::path::Path) -> PathBuf {
    let module = std::env::var_os("SHREDKV_PKCS11_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"));
    assert!(
        module.exists(),
        "no PKCS#11 module at {}: apt-get install softhsm2, or set SHREDKV_PKCS11_MODULE",
        module.display()
    );
    let tokens = dir.join("tokens");
    std::fs::create_dir(&tokens).expect("token dir");
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .expect("conf");
    // SAFETY: called first thing in `main`, before criterion or the module
    // start any thread; nothing else reads the environment concurrently.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("SOFTHSM2_CONF", &conf);
    }
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", TOKEN])
        .args(["--pin", PIN, "--so-pin", "bench-so-pin"])
        .output()
        .expect("run softhsm2-util");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    module
}

fn pkcs11(module: &std::path::Path, store: &str) -> Pkcs11KeyProvider {
    Pkcs11KeyProvider::open_or_create(Pkcs11Config::new(
        module,
        TOKEN,
        StoreLabel::new(store).expect("label"),
        Pin::new(PIN.to_owned()),
    ))
    .expect("open the token")
}

fn providers(
    module: &std::path::Path,
    dir: &std::path::Path,
    group: &str,
) -> Vec<(&'static str, Arc<dyn KeyProvider>)> {
    let file =
        FileKeyProvider::open_or_create(dir.join(format!("{group}.keys"))).expect("key file");
    vec![
        ("key-file", Arc::new(file)),
        ("pkcs11-softhsm2", Arc::new(pkcs11(module, group))),
    ]
}

fn rotation(c: &mut Criterion, module: &std::path::Path, dir: &std::path::Path) {
    let mut group = c.benchmark_group("key-provider-rotation");
    group.throughput(Throughput::Elements(1));
    for (name, provider) in providers(module, dir, "rotation") {
        let mut previous = provider.create_epoch().expect("create");
        group.bench_function(name, |b| {
            b.iter(|| {
                let next = provider.create_epoch().expect("create");
                provider.destroy_epoch(previous).expect("destroy");
                previous = next;
            });
        });
    }
    group.finish();
}

fn wrap_unwrap(c: &mut Criterion, module: &std::path::Path, dir: &std::path::Path) {
    let key = DataKey::generate();
    let context = WrapContext::StoreSecret;
    for (name, provider) in providers(module, dir, "wrap") {
        let epoch = provider.create_epoch().expect("create");
        let wrapped = provider.wrap(epoch, &context, &key).expect("wrap");
        let mut group = c.benchmark_group("key-provider-wrap");
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| {
            b.iter(|| provider.wrap(epoch, &context, &key).expect("wrap"));
        });
        group.finish();
        let mut group = c.benchmark_group("key-provider-unwrap");
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| {
            b.iter(|| provider.unwrap(&context, &wrapped).expect("unwrap"));
        });
        group.finish();
    }
}

fn shred(c: &mut Criterion, module: &std::path::Path, dir: &std::path::Path) {
    let mut group = c.benchmark_group("key-provider-shred");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    for (name, provider) in providers(module, dir, "shred") {
        let config = shredkv::Config::new(dir.join(format!("store-{name}")))
            .backend(shredkv::Backend::Redb)
            .key_provider(provider)
            .flush_every(None)
            .maintenance_every(None);
        let db = shredkv::Db::open(config).expect("open");
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
    let dir = tempfile::tempdir().expect("temp dir");
    let module = softhsm_token(dir.path());
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
        "key provider benches: the key file against PKCS#11 on SoftHSM2 ({}){}",
        module.display(),
        if sizes.quick { " (quick)" } else { "" }
    );
    rotation(&mut c, &module, dir.path());
    wrap_unwrap(&mut c, &module, dir.path());
    shred(&mut c, &module, dir.path());
    c.final_summary();
}
