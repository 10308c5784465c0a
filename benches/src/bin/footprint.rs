//! Size on disk, peak memory and disk growth of every peer on the same data.
//!
//! Each peer runs in a child process of its own (so its peak RSS, `VmHWM`,
//! is its own): load the data set in batches of 1,000, flush, read the peak
//! RSS, close, sum the file sizes; then reopen and overwrite every record
//! `--rounds` times (update-heavy load), close, and sum them again.
//!
//! ```text
//! cargo run --release -p shredkv-benches --bin footprint            # 1M records, 10 rounds
//! cargo run --release -p shredkv-benches --bin footprint -- --quick # 20k records
//! ```
//!
//! Options: `--quick`, `--records N`, `--subjects N`, `--rounds N`,
//! `--peers a,b,...`, `--dir DIR` (where the stores are created). Every peer
//! runs by default; the design's floors (`sled-floor`, `redb-floor`) keep
//! their keys in memory only and cannot reopen, so they are measured up to
//! the load (size, peak RSS: what the design costs in memory) and skip the
//! overwrite rounds.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use shredkv_benches::measure::{dir_size, mib, peak_rss};
use shredkv_benches::workload::{Sizes, load};
use shredkv_benches::{Peer, Result};

/// What one child reports.
#[derive(Debug, Clone, Copy)]
struct Report {
    peer: Peer,
    load_secs: f64,
    size: u64,
    peak_rss: u64,
    grown: u64,
    growth_secs: f64,
}

/// Parsed command line.
struct Options {
    sizes: Sizes,
    rounds: u64,
    peers: Vec<Peer>,
    dir: Option<PathBuf>,
    child: Option<Peer>,
}

fn parse_options() -> Result<Options> {
    let mut sizes = if Sizes::quick_from_env() {
        Sizes::QUICK
    } else {
        Sizes::FULL
    };
    let mut options = Options {
        sizes,
        rounds: 10,
        peers: Peer::ALL.to_vec(),
        dir: None,
        child: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--quick" => sizes = Sizes::QUICK,
            "--records" => sizes.records = value()?.parse()?,
            "--subjects" => sizes.subjects = value()?.parse()?,
            "--rounds" => options.rounds = value()?.parse()?,
            "--dir" => options.dir = Some(PathBuf::from(value()?)),
            "--peers" => {
                options.peers = value()?
                    .split(',')
                    .map(|name| Peer::from_name(name).ok_or(format!("unknown peer `{name}`")))
                    .collect::<std::result::Result<_, _>>()?;
            }
            "--child" => {
                let name = value()?;
                options.child =
                    Some(Peer::from_name(&name).ok_or(format!("unknown peer `{name}`"))?);
            }
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    options.sizes = sizes;
    Ok(options)
}

/// The child's work: one peer, measured.
fn run_child(peer: Peer, options: &Options) -> Result<Report> {
    let dir = match &options.dir {
        Some(parent) => tempfile::Builder::new()
            .prefix(peer.name())
            .tempdir_in(parent)?,
        None => tempfile::Builder::new().prefix(peer.name()).tempdir()?,
    };
    let store = peer.open(dir.path())?;
    let started = Instant::now();
    load(store.as_ref(), &options.sizes, 0)?;
    let load_secs = started.elapsed().as_secs_f64();
    let peak_rss = peak_rss().unwrap_or(0);
    drop(store);
    let size = dir_size(dir.path())?;

    let started = Instant::now();
    if options.rounds > 0 && peer.reopens() {
        let store = peer.open(dir.path())?;
        for round in 1..=options.rounds {
            load(store.as_ref(), &options.sizes, round)?;
        }
    }
    let growth_secs = started.elapsed().as_secs_f64();
    let grown = dir_size(dir.path())?;
    Ok(Report {
        peer,
        load_secs,
        size,
        peak_rss,
        grown,
        growth_secs,
    })
}

/// Runs `peer` in a child process and reads its report line.
fn spawn_child(peer: Peer, options: &Options) -> Result<Report> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["--child", peer.name()])
        .args(["--records", &options.sizes.records.to_string()])
        .args(["--subjects", &options.sizes.subjects.to_string()])
        .args(["--rounds", &options.rounds.to_string()]);
    if let Some(dir) = &options.dir {
        command.arg("--dir").arg(dir);
    }
    let output = command.output()?;
    if !output.status.success() {
        return Err(format!(
            "{peer} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let stdout = String::from_utf8(output.stdout)?;
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("REPORT "))
        .ok_or(format!("{peer} printed no report"))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [load_secs, size, peak_rss, grown, growth_secs] = fields.as_slice() else {
        return Err(format!("{peer}: malformed report `{line}`").into());
    };
    Ok(Report {
        peer,
        load_secs: load_secs.parse()?,
        size: size.parse()?,
        peak_rss: peak_rss.parse()?,
        grown: grown.parse()?,
        growth_secs: growth_secs.parse()?,
    })
}

/// `value / base` as "1.23×", or "–" without a base.
fn ratio(value: u64, base: Option<u64>) -> String {
    match base {
        Some(base) if base > 0 => format!("{:.2}×", mib(value) / mib(base)),
        _ => "–".into(),
    }
}

fn print_table(reports: &[Report], options: &Options) {
    let base = |peer: Peer, field: fn(&Report) -> u64| {
        reports
            .iter()
            .find(|r| r.peer == peer.baseline())
            .map(field)
    };
    let sizes = options.sizes;
    println!(
        "{} records of 100 B in {} subjects; growth: {} rounds overwriting every record\n",
        sizes.records, sizes.subjects, options.rounds
    );
    println!(
        "| peer | load (s) | size (MiB) | vs plain | peak RSS (MiB) | vs plain | size after {} rounds (MiB) | growth | vs plain | rounds (s) |",
        options.rounds
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in reports {
        let growth = if !r.peer.reopens() || options.rounds == 0 {
            "– | – | – | –".to_string()
        } else {
            let times = if r.size > 0 {
                mib(r.grown) / mib(r.size)
            } else {
                0.0
            };
            format!(
                "{:.1} | {times:.2}× | {} | {:.1}",
                mib(r.grown),
                ratio(r.grown, base(r.peer, |r| r.grown)),
                r.growth_secs
            )
        };
        println!(
            "| {} | {:.1} | {:.1} | {} | {:.1} | {} | {growth} |",
            r.peer,
            r.load_secs,
            mib(r.size),
            ratio(r.size, base(r.peer, |r| r.size)),
            mib(r.peak_rss),
            ratio(r.peak_rss, base(r.peer, |r| r.peak_rss)),
        );
    }
}

fn main() -> Result<()> {
    let options = parse_options()?;
    if let Some(peer) = options.child {
        let r = run_child(peer, &options)?;
        println!(
            "REPORT {:.3} {} {} {} {:.3}",
            r.load_secs, r.size, r.peak_rss, r.grown, r.growth_secs
        );
        return Ok(());
    }
    let mut reports = Vec::new();
    for &peer in &options.peers {
        eprintln!("footprint: {peer} ...");
        let report = spawn_child(peer, &options)?;
        eprintln!(
            "footprint: {peer}: {:.1} MiB, peak RSS {:.1} MiB, {:.1} MiB after {} rounds",
            mib(report.size),
            mib(report.peak_rss),
            mib(report.grown),
            options.rounds
        );
        reports.push(report);
    }
    print_table(&reports, &options);
    Ok(())
}
