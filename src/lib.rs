//! The `retcd` server's own code beyond the crates it wires: its configuration (etcd's flags,
//! `ETCD_*` variables and YAML keys), its identity (member and cluster ids, kept in the data
//! dir), the import of etcd's data (`import`: data dirs from an etcd db), its transports
//! (listeners and TLS), and its life under a service manager (`systemd` notifications, `stop` on
//! SIGTERM and SIGINT). The binary is `src/main.rs`.

pub mod config;
pub mod identity;
pub mod import;
pub mod logging;
pub mod stop;
pub mod systemd;
pub mod transport;
