//! The replica stream's frames (`transport::wire`), as a node reads them
//! off a connection from a peer: a 4-byte length and one `PeerFrame`,
//! repeated, in whatever pieces the bytes arrive.
//!
//! Asserts: decoding never panics and ends in an error or in "more bytes
//! needed"; a frame over the limit is refused without being read; every
//! frame decoded encodes to exactly one frame that decodes to the same
//! frame; the bytes consumed by a frame are its length prefix and body.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringkv_server::transport::wire;

/// A small limit, so the fuzzer reaches it.
const MAX_FRAME: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        match wire::decode(&mut buf, MAX_FRAME) {
            Ok(Some(frame)) => {
                let consumed = before - buf.len();
                assert!(consumed >= 4 && consumed <= 4 + MAX_FRAME, "{consumed}");
                let mut again = BytesMut::new();
                wire::encode(frame.clone(), &mut again);
                let back = wire::decode(&mut again, usize::MAX)
                    .expect("a frame re-encoded decodes")
                    .expect("a frame re-encoded is whole");
                assert_eq!(back, frame);
                assert!(again.is_empty(), "one frame re-encodes to one frame");
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "nothing consumed while waiting");
                let declared = buf
                    .get(..4)
                    .map(|p| u32::from_be_bytes(p.try_into().unwrap()) as usize);
                if let Some(len) = declared {
                    assert!(len <= MAX_FRAME && buf.len() < 4 + len);
                }
                break;
            }
            Err(_) => break,
        }
    }
});
