//! Compiles the two small protocols `ringkv-bench` speaks besides ringkv's
//! own: the echo service it uses to measure the bare gRPC round trip, and
//! the subset of etcd's KV API it drives etcd with. Like `proto/`, it uses
//! protox (a pure-Rust protobuf compiler), so no `protoc` is needed.

const PROTOS: &[&str] = &["ringkv/bench/v1/echo.proto", "etcdserverpb/kv.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed=proto/{proto}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
