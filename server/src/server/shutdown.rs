//! The one shutdown signal every loop listens to. It is shared by every
//! layer, so it lives in `ringkv-common`; this path stays for the wiring.

pub use ringkv_common::shutdown::{channel, Shutdown, ShutdownTrigger};
