//! Helpers shared by the engine's integration tests; use it from a test file with `mod common;`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use retcd_engine::btree::StoreOptions;
use retcd_engine::mvcc::{Mvcc, RawEntry};

/// The page store's file under a data directory (etcd's layout).
pub fn db_path(dir: &Path) -> PathBuf {
    dir.join("member/snap/db")
}

/// Options of the page store under the data directory `dir`.
pub fn store_options(dir: &Path) -> StoreOptions {
    StoreOptions::new(db_path(dir))
}

/// Deterministic pseudo-random numbers (xorshift) so failures reproduce.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform-ish in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Every entry of `m`'s published state, as a Raft snapshot carries them (DESIGN.md §4.7: every
/// key but this member's identity, in key order).
pub fn state_entries(m: &Mvcc) -> Vec<RawEntry> {
    let snap = m.reader().state_snapshot();
    let mut entries = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let chunk = snap
            .chunk(after.as_deref(), 1 << 20)
            .expect("a chunk of the state");
        let Some(last) = chunk.last() else { break };
        after = Some(last.0.clone());
        entries.extend(chunk);
    }
    entries
}
