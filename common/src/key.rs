//! What a valid key is.
//!
//! A key is 1 to `max` bytes, where `max` is the node's
//! `limits.max_key_bytes` (default [`DEFAULT_MAX_KEY_BYTES`], never above
//! [`MAX_KEY_LIMIT`]). Every place that accepts a key (the client API, the
//! internal API, the admin API, the coordinator, the client library before
//! it sends anything) calls [`check_key`], so a bad key is refused with the
//! same message wherever it is caught.

use crate::Error;

/// Default `limits.max_key_bytes`.
pub const DEFAULT_MAX_KEY_BYTES: usize = 4 * 1024;

/// Largest accepted `limits.max_key_bytes`: no node accepts a longer key,
/// so the client refuses one without asking.
pub const MAX_KEY_LIMIT: usize = 64 * 1024;

/// Whether `key` is a key a node with limit `max` accepts.
pub fn is_valid_key(key: &[u8], max: usize) -> bool {
    !key.is_empty() && key.len() <= max
}

/// Refuses an empty key or one longer than `max` bytes, saying which and
/// what the limit is.
pub fn check_key(key: &[u8], max: usize) -> Result<(), Error> {
    if is_valid_key(key, max) {
        return Ok(());
    }
    let what = if key.is_empty() {
        "key must not be empty"
    } else {
        "key is too long"
    };
    Err(Error::InvalidArgument(format!(
        "{what}: keys are 1..={max} bytes, got {}",
        key.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_one_byte_to_the_limit_are_accepted() {
        assert!(check_key(b"k", 4).is_ok());
        assert!(check_key(b"kkkk", 4).is_ok());
        assert!(check_key(&[0u8; MAX_KEY_LIMIT], MAX_KEY_LIMIT).is_ok());
    }

    #[test]
    fn empty_and_long_keys_say_why_and_the_limit() {
        let Err(Error::InvalidArgument(empty)) = check_key(b"", 4096) else {
            panic!("an empty key must be refused");
        };
        assert_eq!(
            empty,
            "key must not be empty: keys are 1..=4096 bytes, got 0"
        );
        let Err(Error::InvalidArgument(long)) = check_key(&[b'k'; 4097], 4096) else {
            panic!("a 4097-byte key must be refused");
        };
        assert_eq!(long, "key is too long: keys are 1..=4096 bytes, got 4097");
        assert!(!is_valid_key(b"", 1));
        assert!(!is_valid_key(b"kk", 1));
    }
}
