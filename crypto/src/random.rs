//! Randomness for keys and nonces, read from the operating system's
//! generator (`getrandom(2)` on Linux) on every call.
//!
//! Not a user-space generator: `rand`'s thread-local one keeps its state in
//! process memory, so a forked child or a restored VM snapshot would repeat
//! its output, and a repeated GCM nonce under one key leaks the XOR of two
//! plaintexts and the key's authentication secret. The kernel's generator
//! is reseeded across both.

use rand::TryRng as _;

/// Fills `bytes` from the operating system's generator.
///
/// # Panics
/// If the operating system cannot provide randomness (it only fails before
/// the kernel's pool is first seeded, early in boot, or in a sandbox that
/// forbids the call). No key or nonce may be made without it, and there is
/// no safe fallback; `rand`'s own generator panics in the same case.
pub(crate) fn fill(bytes: &mut [u8]) {
    if let Err(err) = rand::rngs::SysRng.try_fill_bytes(bytes) {
        panic!("the operating system's random number generator failed: {err}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fills_with_fresh_bytes() {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        super::fill(&mut a);
        super::fill(&mut b);
        assert_ne!(a, [0u8; 32]);
        assert_ne!(a, b);
    }
}
