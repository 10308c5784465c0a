//! What the CLI's end-to-end tests share: running the binary and reading
//! what it printed and how it exited.

#![allow(dead_code, reason = "each test binary uses its own subset")]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// Runs the binary with `args`, without `SHREDKV_STORE`, `SHREDKV_KEY_FILE`
/// or `SHREDKV_ADMIN_SOCKET` from the environment. The fixtures keep the key
/// file at its default place, inside the store directory, which the CLI
/// refuses unless allowed (see
/// `a_key_file_inside_the_store_is_refused_unless_allowed`).
pub(crate) fn shredkv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shredkv"))
        .args(args)
        .env_remove("SHREDKV_STORE")
        .env_remove("SHREDKV_KEY_FILE")
        .env_remove("SHREDKV_ADMIN_SOCKET")
        .env("SHREDKV_ALLOW_KEY_FILE_IN_STORE", "true")
        .output()
        .expect("run shredkv")
}

/// Runs `shredkv --store STORE args...`.
pub(crate) fn run_on(store: &Path, args: &[&str]) -> Output {
    let mut all = vec!["--store", store.to_str().expect("temp paths are UTF-8")];
    all.extend_from_slice(args);
    shredkv(&all)
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub(crate) fn code(output: &Output) -> i32 {
    output.status.code().expect("exited, not killed")
}

/// Asserts success and returns stdout.
pub(crate) fn ok(output: &Output) -> String {
    assert_eq!(
        code(output),
        0,
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
    stdout(output)
}

/// Asserts the exit code and an `error: ` line, and returns stderr.
pub(crate) fn fails_with(output: &Output, expected: i32) -> String {
    assert_eq!(
        code(output),
        expected,
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
    let err = stderr(output);
    assert!(err.contains("error: "), "{err}");
    err
}

/// Asserts success and parses stdout as one JSON document.
pub(crate) fn json(output: &Output) -> Value {
    serde_json::from_str(&ok(output)).expect("stdout is one JSON document")
}
