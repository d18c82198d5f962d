//! The `retcd` server's own code beyond the crates it wires: its configuration (etcd's flags,
//! `ETCD_*` variables and YAML keys). The binary is `src/main.rs`.

pub mod config;
