//! retcd's storage engine: the WAL (the Raft log's durable storage), the copy-on-write B+tree page
//! store, and etcd's MVCC semantics on top of it. The byte layouts are specified in DESIGN.md.
//!
//! This crate knows nothing of consensus or the network: raft/ drives the WAL and the apply, net/
//! reads committed snapshots from any core.

pub mod auth;
pub mod bbolt;
pub mod btree;
pub mod disk;
pub mod etcd_db;
pub mod etcd_keys;
pub mod metrics;
pub mod mvcc;
pub mod page;
mod protowire;
pub mod request;
pub mod runtime;
pub mod wal;
