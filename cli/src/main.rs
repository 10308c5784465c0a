//! `shredkv`: inspect and operate a shredkv store; `shredkv demo` (being built).

fn main() {}
