//! retcd-bench: a load generator that speaks etcd's v3 gRPC API, so it drives retcd and real etcd
//! alike. The binary is a thin wrapper around [`cli::main_with`].
//!
//! - [`cli`]: etcd benchmark's commands and flags, `run`, `null-server`, `compare`;
//! - [`client`]: connections, TLS, auth token, leader targeting; [`coalesce`]: their writes
//!   gathered into fewer system calls;
//! - [`load`]: the closed-loop driver and the request-response operations;
//! - [`watch`]: the watch workloads;
//! - [`keys`]: key spelling and key choice (uniform, sequential, Zipf);
//! - [`profile`]: fio-style job files; [`run`]: runs them and reports as fio does;
//! - [`report`]: latency statistics and the reports (etcd's text, fio's, JSON, CSV, HTML);
//! - [`progress`]: the progress bar; [`null`]: the instant server that measures the generator;
//! - [`compare`]: two stores' results side by side.

pub mod cli;
pub mod client;
pub mod coalesce;
pub mod compare;
pub mod keys;
pub mod load;
pub mod null;
pub mod profile;
pub mod progress;
pub mod report;
pub mod run;
pub mod watch;
