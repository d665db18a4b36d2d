//! Conversions between proto messages and domain types, with validation of
//! everything a client can get wrong.

use std::time::Duration;

use ringkv_proto::v1 as pb;

use ringkv_core::error::{Error, Result};
use ringkv_core::version::{Value, Version, VersionVector};
use ringkv_node::coordinator::{Level, ReplyMeta, RequestConsistency, Resolve};

pub fn consistency(c: Option<pb::Consistency>) -> Result<RequestConsistency> {
    let Some(c) = c else {
        return Ok(RequestConsistency::default());
    };
    let level = match c.required {
        None => None,
        Some(pb::consistency::Required::Level(raw)) => match pb::Level::try_from(raw) {
            Ok(pb::Level::Unspecified) => None,
            Ok(pb::Level::One) => Some(Level::One),
            Ok(pb::Level::Quorum) => Some(Level::Quorum),
            Ok(pb::Level::All) => Some(Level::All),
            Err(_) => {
                return Err(Error::InvalidArgument(format!(
                    "unknown consistency level {raw}: use ONE, QUORUM, ALL or a replica count"
                )))
            }
        },
        Some(pb::consistency::Required::Count(n)) => Some(Level::Count(n)),
    };
    let timeout = match c.timeout_ms {
        None => None,
        Some(0) => {
            return Err(Error::InvalidArgument(
                "timeout_ms must be positive; omit it to use the node's default".into(),
            ))
        }
        Some(ms) => Some(Duration::from_millis(ms as u64)),
    };
    Ok(RequestConsistency {
        level,
        sloppy: c.sloppy,
        timeout,
    })
}

/// Label of the requested level for metrics.
pub fn level_label(c: &RequestConsistency) -> &'static str {
    c.level.map_or("default", Level::label)
}

/// An empty context means "none": a blind write.
pub fn context(bytes: &[u8]) -> Result<Option<VersionVector>> {
    if bytes.is_empty() {
        return Ok(None);
    }
    VersionVector::decode_context(bytes).map(Some)
}

pub fn resolve(raw: i32) -> Result<Resolve> {
    match pb::Resolve::try_from(raw) {
        Ok(pb::Resolve::Unspecified) | Ok(pb::Resolve::AllSiblings) => Ok(Resolve::AllSiblings),
        Ok(pb::Resolve::Lww) => Ok(Resolve::Lww),
        Err(_) => Err(Error::InvalidArgument(format!(
            "unknown resolve mode {raw}: use ALL_SIBLINGS or LWW"
        ))),
    }
}

pub fn ttl(ttl_ms: Option<u64>) -> Result<Option<Duration>> {
    match ttl_ms {
        None => Ok(None),
        Some(0) => Err(Error::InvalidArgument(
            "ttl_ms must be positive; omit it for a value that never expires".into(),
        )),
        Some(ms) => Ok(Some(Duration::from_millis(ms))),
    }
}

pub fn sibling(v: &Version) -> pb::Sibling {
    let value = match &v.value {
        Value::Data(b) => b.clone(),
        Value::Tombstone => Default::default(),
    };
    pb::Sibling {
        value,
        timestamp: v.timestamp.0,
        expires_at_ms: v.expires_at_ms,
    }
}

pub fn local_version(v: &Version) -> pb::LocalVersion {
    let (tombstone, value) = match &v.value {
        Value::Data(b) => (false, b.clone()),
        Value::Tombstone => (true, Default::default()),
    };
    pb::LocalVersion {
        node: v.dot.node.to_string(),
        counter: v.dot.counter,
        timestamp: v.timestamp.0,
        tombstone,
        value,
        expires_at_ms: v.expires_at_ms,
    }
}

pub fn meta(m: ReplyMeta) -> pb::ReplyMeta {
    pb::ReplyMeta {
        coordinator: m.coordinator,
        replicas: m.replicas,
        fallbacks: m
            .fallbacks
            .into_iter()
            .map(|(node, stands_in_for)| pb::FallbackUse {
                node,
                stands_in_for,
            })
            .collect(),
        read_repaired: m.read_repaired,
        replication: m.replication,
        replication_capped: m.replication_capped,
        required: m.required,
        layout_version: m.layout_version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unknown_enums_and_zero_values() {
        let bad_level = pb::Consistency {
            required: Some(pb::consistency::Required::Level(42)),
            ..Default::default()
        };
        assert!(matches!(
            consistency(Some(bad_level)),
            Err(Error::InvalidArgument(_))
        ));
        let zero_timeout = pb::Consistency {
            timeout_ms: Some(0),
            ..Default::default()
        };
        assert!(consistency(Some(zero_timeout)).is_err());
        assert!(resolve(9).is_err());
        assert!(ttl(Some(0)).is_err());
        assert!(matches!(
            context(&[0xde, 0xad]),
            Err(Error::MalformedContext(_))
        ));
    }

    #[test]
    fn absent_fields_take_defaults() {
        assert_eq!(consistency(None).unwrap(), RequestConsistency::default());
        assert_eq!(resolve(0).unwrap(), Resolve::AllSiblings);
        assert_eq!(context(&[]).unwrap(), None);
        let count = pb::Consistency {
            required: Some(pb::consistency::Required::Count(2)),
            sloppy: Some(false),
            timeout_ms: Some(250),
        };
        let c = consistency(Some(count)).unwrap();
        assert_eq!(c.level, Some(Level::Count(2)));
        assert_eq!(c.sloppy, Some(false));
        assert_eq!(c.timeout, Some(Duration::from_millis(250)));
    }

    /// A count is a request's own field: counts no cluster accepts must
    /// not each become a label value of the latency metric, or a client
    /// sending many of them grows every scrape without end.
    #[test]
    fn level_labels_are_bounded_whatever_count_a_client_sends() {
        let label = |count| {
            let c = pb::Consistency {
                required: Some(pb::consistency::Required::Count(count)),
                ..Default::default()
            };
            level_label(&consistency(Some(c)).unwrap())
        };
        let labels: std::collections::HashSet<String> = (0..=10_000)
            .chain([u32::MAX])
            .map(|c| label(c).to_string())
            .collect();
        assert_eq!(labels.len(), 17, "{labels:?}");
        assert_eq!(label(3), "3");
        assert_eq!(label(1_000), "invalid");
        assert_eq!(level_label(&consistency(None).unwrap()), "default");
    }
}
