//! Compiles `proto/meshmon/v1/*.proto` without `protoc`.
//!
//! The schema is parsed and type-checked by the pure-Rust `protox` compiler
//! into a `FileDescriptorSet`, which `tonic-prost-build` turns into prost
//! messages plus tonic client/server stubs. Well-known types
//! (`google.protobuf.Timestamp`, `google.protobuf.Duration`) are not
//! generated: prost-build maps them onto `::prost_types` by default.

use std::path::Path;

const PROTO_ROOT: &str = "proto";
const PROTO_FILES: &[&str] = &["proto/meshmon/v1/meshmon.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={file}");
    }

    let fds = protox::compile(PROTO_FILES, [Path::new(PROTO_ROOT)])?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        // We emit our own precise rerun-if-changed lines above.
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}
