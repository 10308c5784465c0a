//! Shared helpers for shredkv integration tests.
