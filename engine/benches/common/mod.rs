//! Helpers shared by the engine benchmarks; use it from a bench with `mod common;`.

#![allow(dead_code)]

use std::path::PathBuf;

/// The environment variable `name` parsed as a `T`, or `default` when it is unset.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} does not parse")),
        Err(_) => default,
    }
}

/// A fresh temporary directory named `prefix…` under `RETCD_BENCH_DIR` (default: cargo's
/// target/tmp), which is created if missing.
pub fn bench_tempdir(prefix: &str) -> tempfile::TempDir {
    let base = std::env::var_os("RETCD_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&base).expect("create bench dir");
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .expect("temp dir")
}
