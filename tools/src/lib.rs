//! retcd's command-line tools. `retcdutl` (src/bin/retcdutl.rs) is the offline tool: it reads
//! and writes files (snapshot files, data dirs) and never talks to a server, as etcdutl. What it
//! prints follows etcd's tools byte for byte, so scripts written for them keep working.
//!
//! - [`output`]: etcd's printers (the `-w simple|table|json|fields` formats, the table layout,
//!   go-humanize's byte sizes) and exit codes.
//! - [`snapshot`]: `snapshot status` of an etcd-format snapshot file.
//! - [`restore`]: `snapshot restore`, a new member's data dir from a snapshot file.
//! - [`defrag`]: `defrag --data-dir`, a stopped member's page store rewritten to its live pages.
//! - [`hashkv`]: `hashkv FILE`, etcd's KV history hash of an etcd or retcd db file.
//! - [`backup`]: `backup --data-dir --backup-dir`, an offline copy of a stopped member's data dir.

pub mod backup;
pub mod ctl;
pub mod defrag;
pub mod hashkv;
pub mod output;
pub mod restore;
pub mod snapshot;
