//! Compiles `ringkv/v1/*.proto` with protox (a pure-Rust protobuf compiler),
//! so building ringkv needs no `protoc` on the machine. The encoded file
//! descriptor set is kept for gRPC server reflection.

use prost::Message;
use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "ringkv/v1/common.proto",
    "ringkv/v1/kv.proto",
    "ringkv/v1/admin.proto",
    "ringkv/v1/internal.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("ringkv_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .bytes(".ringkv.v1")
        .compile_fds(fds)?;
    Ok(())
}
