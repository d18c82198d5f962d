//! The `retcd` server's own code beyond the crates it wires: its configuration (etcd's flags,
//! `ETCD_*` variables and YAML keys), its identity (member and cluster ids, kept in the data
//! dir) and its transports (listeners and TLS). The binary is `src/main.rs`.

pub mod config;
pub mod identity;
pub mod transport;
