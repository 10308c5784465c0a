//! Memory of reading one large scope: `Db::records` (page by page) against
//! `Db::scan` (one `Vec`), on redb.
//!
//! A child process writes N records of 100 bytes to one subject; a second
//! child opens the store and iterates every record with `Db::records`,
//! sampling its resident set (`VmRSS`) every 10,000 records; a third
//! collects them with `Db::scan`. Each reads twice and reports each pass's
//! growth over the resident set at its start: the first pass also fills the
//! backend's page cache, the second shows what the reading itself holds.
//!
//! ```text
//! cargo run --release -p shredkv-benches --bin scan_memory            # 1M records
//! cargo run --release -p shredkv-benches --bin scan_memory -- --quick # 20k records
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use shredkv::{Batch, Config, Db, ScanOptions};
use shredkv_benches::Result;
use shredkv_benches::measure::{current_rss, mib};

const CLASS: &str = "message_content";
const SUBJECT: &str = "acct-large";

fn config(dir: &Path) -> Config {
    Config::new(dir.join("store"))
        .key_file(dir.join("keys"))
        .maintenance_every(None)
        .flush_every(None)
}

fn write(dir: &Path, records: u64) -> Result<()> {
    let db = Db::open(config(dir))?;
    db.register_account(SUBJECT)?;
    let value = [0x5a_u8; 100];
    let mut n = 0u64;
    while n < records {
        let mut batch = Batch::new();
        for _ in 0..1_000.min(records - n) {
            batch.put(SUBJECT, CLASS, &n.to_be_bytes(), &value);
            n += 1;
        }
        db.apply(batch)?;
    }
    db.flush()?;
    Ok(())
}

/// Reads every record one way, twice; prints "records growth_first
/// growth_second seconds_second". The first pass also fills the backend's
/// page cache (pages the open's integrity check did not keep); the second
/// shows what reading itself holds.
fn read(dir: &Path, collect: bool) -> Result<()> {
    let db = Db::open(config(dir))?;
    let mut line = Vec::new();
    let mut count = 0u64;
    let mut secs = 0.0;
    for _pass in 0..2 {
        let base = current_rss().ok_or("VmRSS is not available")?;
        let started = Instant::now();
        let mut peak = base;
        count = 0;
        if collect {
            let all = db.scan(SUBJECT, CLASS)?;
            count = u64::try_from(all.len())?;
            peak = peak.max(current_rss().unwrap_or(0));
            drop(all);
        } else {
            for record in db.records(SUBJECT, CLASS, ScanOptions::all()) {
                record?;
                count += 1;
                if count.is_multiple_of(10_000) {
                    peak = peak.max(current_rss().unwrap_or(0));
                }
            }
            peak = peak.max(current_rss().unwrap_or(0));
        }
        secs = started.elapsed().as_secs_f64();
        line.push(peak.saturating_sub(base));
    }
    println!("{count} {} {} {secs:.2}", line[0], line[1]);
    Ok(())
}

fn child(args: &[&str]) -> Result<String> {
    let output = Command::new(std::env::current_exe()?).args(args).output()?;
    if !output.status.success() {
        return Err(format!(
            "{args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_string())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["--write", dir, n] => return write(Path::new(dir), n.parse()?),
        ["--iterate", dir] => return read(Path::new(dir), false),
        ["--collect", dir] => return read(Path::new(dir), true),
        _ => {}
    }
    let quick = args.contains(&"--quick") || std::env::var_os("SHREDKV_BENCH_QUICK").is_some();
    let records: u64 = if quick { 20_000 } else { 1_000_000 };
    let temp = tempfile::tempdir()?;
    let dir: PathBuf = temp.path().to_path_buf();
    let dir_text = dir.to_str().ok_or("temporary path is not UTF-8")?;
    let started = Instant::now();
    child(&["--write", dir_text, &records.to_string()])?;
    println!(
        "wrote {records} records of 100 B to one subject in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "| read | records | resident set growth, first pass | second pass | time (second pass) |"
    );
    println!("|---|---|---|---|---|");
    for (name, flag) in [
        ("Db::records (pages)", "--iterate"),
        ("Db::scan (one Vec)", "--collect"),
    ] {
        let line = child(&[flag, dir_text])?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [count, first, second, secs] = fields.as_slice() else {
            return Err(format!("unexpected child output: {line}").into());
        };
        println!(
            "| {name} | {count} | {:.1} MiB | {:.1} MiB | {secs} s |",
            mib(first.parse()?),
            mib(second.parse()?)
        );
    }
    Ok(())
}
