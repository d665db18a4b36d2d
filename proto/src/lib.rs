//! The ringkv gRPC API, generated from `proto/ringkv/v1/*.proto`.
//!
//! This crate holds generated code only. Servers and clients convert these
//! messages to their own domain types at the edge; nothing past the gRPC
//! handlers sees a proto type.

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("ringkv.v1");
}

/// Encoded `FileDescriptorSet` of the API, served through gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ringkv_descriptor");
