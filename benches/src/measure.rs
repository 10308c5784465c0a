//! What the footprint run measures: bytes on disk and peak memory.

use std::path::Path;

/// The sum of the sizes of every file under `dir` (apparent sizes, as `du
/// --apparent-size -b` counts them).
///
/// # Errors
/// A directory or file that cannot be read.
pub fn dir_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            total += dir_size(&entry.path())?;
        } else {
            total += meta.len();
        }
    }
    Ok(total)
}

/// This process's peak resident set size in bytes (`VmHWM` of
/// `/proc/self/status`); `None` where that is not available.
pub fn peak_rss() -> Option<u64> {
    status_bytes("VmHWM:")
}

/// This process's current resident set size in bytes (`VmRSS` of
/// `/proc/self/status`); `None` where that is not available.
pub fn current_rss() -> Option<u64> {
    status_bytes("VmRSS:")
}

/// A `kB` field of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line
        .trim_start_matches(field)
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// `bytes` in MiB, for tables.
pub fn mib(bytes: u64) -> f64 {
    // Exact below 2^53 bytes, which every size here is.
    #[allow(clippy::cast_precision_loss)]
    let bytes = bytes as f64;
    bytes / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_memory_are_measured() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("a"), [0u8; 10]).expect("write");
        std::fs::write(dir.path().join("sub/b"), [0u8; 5]).expect("write");
        assert_eq!(dir_size(dir.path()).expect("size"), 15);
        if cfg!(target_os = "linux") {
            assert!(peak_rss().expect("VmHWM") > 0);
            assert!(current_rss().expect("VmRSS") > 0);
        }
    }
}
