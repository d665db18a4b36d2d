//! ringkv-server: the gRPC edge of a ringkv node.
//!
//! `api` holds the handlers (validate, convert, delegate to the node) of
//! the gRPC services and of the replica stream, `transport` is the peer
//! layer's network (the replica stream, and gRPC for the rest),
//! `metrics_http` serves the metrics page, `tls` loads and rotates the certificates of both ports,
//! `certs` makes certificates for test and local clusters, `probe` is the
//! health check the `health` subcommand runs, and `server` loads the
//! configuration, opens storage, assembles the node (`ringkv-node`), binds
//! the client and peer listeners and owns start-up and shutdown. Nothing below this crate names a gRPC or
//! protobuf type: Cargo refuses it, as none of them depends on tonic.

pub mod api;
pub mod certs;
pub mod metrics_http;
pub mod probe;
pub mod server;
pub mod tls;
pub mod transport;

pub use ringkv_core::error::{Error, Result};
