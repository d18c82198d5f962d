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

    let descriptors = std::path::PathBuf::from(std::env::var("OUT_DIR").map_err(io::Error::other)?)
        .join("descriptors.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptors)
        .build_server(true)
        .build_client(true)
        // tonic is built without its "transport" feature: clients must not
        // get the `connect(...)` constructor that needs `tonic::transport`.
        .build_transport(false)
        // prost's codec with the encode buffer sized for the whole message (src/codec.rs).
        .codec_path("crate::codec::Codec")
        .emit_rerun_if_changed(true)
        .compile_protos(PROTOS, &[PROTO_ROOT])?;
    // serde for the JSON gateway: protobuf's JSON mapping with the proto field names (etcd's
    // gateway marshals with OrigName), unknown fields ignored (etcd 3.5's DiscardUnknown).
    let set = std::fs::read(&descriptors)?;
    pbjson_build::Builder::new()
        .register_descriptors(&set)
        .map_err(io::Error::other)?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[
            ".mvccpb",
            ".authpb",
            ".etcdserverpb",
            ".v3lockpb",
            ".v3electionpb",
        ])
        .map_err(io::Error::other)
}
