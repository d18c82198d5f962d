//! Compiles etcd's v3 protobuf API (`proto/`) into Rust with prost + tonic.
//!
//! Needs `protoc` (Debian: `protobuf-compiler`) on `PATH`, or `PROTOC` set.

use std::io;

/// Every `.proto` file compiled, relative to [`PROTO_ROOT`].
const PROTOS: &[&str] = &[
    "proto/mvccpb/kv.proto",
    "proto/authpb/auth.proto",
    "proto/etcdserverpb/rpc.proto",
    "proto/v3lockpb/v3lock.proto",
    "proto/v3electionpb/v3election.proto",
    "proto/retcdpeer/peer.proto",
];

/// Include root: imports are written as `etcdserverpb/rpc.proto` etc.
const PROTO_ROOT: &str = "proto";

fn main() -> io::Result<()> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PROTOC");

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // tonic is built without its "transport" feature: clients must not
        // get the `connect(...)` constructor that needs `tonic::transport`.
        .build_transport(false)
        .emit_rerun_if_changed(true)
        .compile_protos(PROTOS, &[PROTO_ROOT])
}
