//! The CLI's commands, one module per group, and what they share: the
//! argument parsers and the JSON forms of values, contexts and reply meta.

pub mod auth;
pub mod changes;
pub mod kv;
pub mod status;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use ringkv_client::{Context, Error, Level, ReplyMeta};
use serde_json::json;

pub fn parse_level(s: &str) -> Result<Level, String> {
    s.parse::<Level>().map_err(|e| e.to_string())
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 30s, 1h)"))?;
    if d.is_zero() {
        return Err("must be positive".into());
    }
    Ok(d)
}

pub fn parse_context(s: &str) -> Result<Context, Error> {
    URL_SAFE_NO_PAD
        .decode(s.trim())
        .map(|b| Context(Bytes::from(b)))
        .map_err(|e| {
            Error::InvalidArgument(format!(
                "--context is not a context printed by ringkv ({e}); copy it exactly from get --show-context"
            ))
        })
}

pub fn encode_context(c: &Context) -> String {
    URL_SAFE_NO_PAD.encode(&c.0)
}

/// A value as JSON: text when it is UTF-8, base64 otherwise.
pub fn json_value(v: &Bytes) -> serde_json::Value {
    match std::str::from_utf8(v) {
        Ok(s) => json!({ "value": s }),
        Err(_) => json!({ "value_base64": base64::engine::general_purpose::STANDARD.encode(v) }),
    }
}

pub fn print_meta_json(meta: &ReplyMeta) -> serde_json::Value {
    serde_json::to_value(meta).unwrap_or(serde_json::Value::Null)
}
