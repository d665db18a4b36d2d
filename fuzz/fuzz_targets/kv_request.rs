//! Client requests of the `KV` service (`GetRequest`, `PutRequest`,
//! `DeleteRequest`), prost-decoded and converted into domain types by the
//! server's `api::convert`, as the handlers do before the coordinator
//! sees anything.
//!
//! Asserts: the consistency block converts to the level it names (an
//! unknown level is `InvalidArgument`), its timeout to exactly that many
//! milliseconds (zero is refused), and a converted level asked for its
//! replica count either refuses or needs between 1 and N replicas; the
//! resolve mode converts or is `InvalidArgument`; a TTL converts to
//! exactly its milliseconds (zero refused); an empty context is none, and
//! any other converts exactly when it decodes, re-encoding to the same
//! bytes (a bad one is `MalformedContext`); the key check accepts exactly
//! the keys of 1 to `max_key_bytes` bytes.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use ringkv_common::{check_key, DEFAULT_MAX_KEY_BYTES};
use ringkv_core::error::Error;
use ringkv_node::coordinator::{Level, Resolve};
use ringkv_proto::v1 as pb;
use ringkv_server::api::convert;

fn check_consistency(raw: Option<pb::Consistency>) {
    let converted = convert::consistency(raw.clone());
    let Some(raw) = raw else {
        assert_eq!(
            converted.expect("no block is the default"),
            Default::default()
        );
        return;
    };
    let level = match raw.required {
        None => Some(None),
        Some(pb::consistency::Required::Count(n)) => Some(Some(Level::Count(n))),
        Some(pb::consistency::Required::Level(l)) => match pb::Level::try_from(l) {
            Ok(pb::Level::Unspecified) => Some(None),
            Ok(pb::Level::One) => Some(Some(Level::One)),
            Ok(pb::Level::Quorum) => Some(Some(Level::Quorum)),
            Ok(pb::Level::All) => Some(Some(Level::All)),
            Err(_) => None,
        },
    };
    match converted {
        Ok(c) => {
            assert_eq!(Some(c.level), level);
            assert_eq!(c.sloppy, raw.sloppy);
            match raw.timeout_ms {
                None => assert_eq!(c.timeout, None),
                Some(ms) => {
                    assert_ne!(ms, 0);
                    assert_eq!(c.timeout, Some(Duration::from_millis(u64::from(ms))));
                }
            }
            if let Some(level) = c.level {
                for n in 1..=5 {
                    // Refusing (a count of 0 or above N) is the one error.
                    if let Ok(needed) = level.required(n, n) {
                        assert!((1..=n).contains(&needed), "{level} of {n}: {needed}");
                    }
                }
            }
        }
        Err(Error::InvalidArgument(_)) => {
            assert!(level.is_none() || raw.timeout_ms == Some(0));
        }
        Err(other) => panic!("a bad consistency must be InvalidArgument, not {other:?}"),
    }
}

fn check_context(bytes: &[u8]) {
    match convert::context(bytes) {
        Ok(None) => assert!(bytes.is_empty()),
        Ok(Some(vv)) => assert_eq!(vv.encode_context(), bytes),
        Err(Error::MalformedContext(_)) => assert!(!bytes.is_empty()),
        Err(other) => panic!("a bad context must be MalformedContext, not {other:?}"),
    }
}

fn check_key_rule(key: &[u8]) {
    let valid = !key.is_empty() && key.len() <= DEFAULT_MAX_KEY_BYTES;
    assert_eq!(check_key(key, DEFAULT_MAX_KEY_BYTES).is_ok(), valid);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(get) = pb::GetRequest::decode(data) {
        check_key_rule(&get.key);
        check_consistency(get.consistency);
        match (
            pb::Resolve::try_from(get.resolve),
            convert::resolve(get.resolve),
        ) {
            (Ok(pb::Resolve::Lww), Ok(resolve)) => assert_eq!(resolve, Resolve::Lww),
            (Ok(_), Ok(resolve)) => assert_eq!(resolve, Resolve::AllSiblings),
            (Err(_), Err(Error::InvalidArgument(_))) => {}
            (raw, converted) => panic!("resolve {raw:?} converted to {converted:?}"),
        }
    }
    if let Ok(put) = pb::PutRequest::decode(data) {
        check_key_rule(&put.key);
        check_consistency(put.consistency);
        check_context(&put.context);
        match (put.ttl_ms, convert::ttl(put.ttl_ms)) {
            (None, Ok(None)) | (Some(0), Err(Error::InvalidArgument(_))) => {}
            (Some(ms), Ok(Some(ttl))) => assert_eq!(ttl, Duration::from_millis(ms)),
            (raw, converted) => panic!("ttl {raw:?} converted to {converted:?}"),
        }
    }
    if let Ok(delete) = pb::DeleteRequest::decode(data) {
        check_key_rule(&delete.key);
        check_consistency(delete.consistency);
        check_context(&delete.context);
    }
});
