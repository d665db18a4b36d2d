//! get, put and delete: the key-value API, each sent to a replica of the
//! key when routing knows one, with failover for what was never sent.

use bytes::Bytes;
use ringkv_common::MAX_KEY_LIMIT;
use ringkv_proto::v1 as pb;
use ringkv_proto::v1::kv_client::KvClient;

use crate::types::meta_from_proto;
use crate::{
    Client, Context, GetResult, PutOptions, PutResult, ReplyMeta, RequestOptions, Result, Sibling,
    MAX_MESSAGE_BYTES,
};

/// Refuses a key no node accepts (empty, or above the largest limit a
/// node can be configured with) before sending anything; the node checks
/// its own, possibly lower, limit with the same message.
pub(crate) fn check_key(key: &[u8]) -> Result<()> {
    Ok(ringkv_common::check_key(key, MAX_KEY_LIMIT)?)
}

impl Client {
    pub async fn get(
        &self,
        key: impl Into<Bytes>,
        opts: RequestOptions,
        lww: bool,
    ) -> Result<GetResult> {
        let req = pb::GetRequest {
            key: key.into(),
            consistency: Some(opts.to_proto()),
            resolve: if lww {
                pb::Resolve::Lww
            } else {
                pb::Resolve::AllSiblings
            } as i32,
        };
        check_key(&req.key)?;
        self.ensure_routing().await;
        // Reads are idempotent: any failure that says "retry" may go to the next node.
        // Each try sends a clone, which shares the key's bytes.
        self.with_failover(Some(&req.key), true, opts.client_deadline(), |ch| {
            let req = req.clone();
            async move {
                KvClient::new(ch)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .get(req)
                    .await
            }
        })
        .await
        .map(|r| {
            let meta = meta_from_proto(r.meta);
            self.saw_layout(&meta);
            GetResult {
                siblings: r
                    .siblings
                    .into_iter()
                    .map(|s| Sibling {
                        value: s.value,
                        timestamp: s.timestamp,
                        expires_at_ms: s.expires_at_ms,
                    })
                    .collect(),
                context: Context(r.context),
                meta,
            }
        })
    }

    pub async fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let req = pb::PutRequest {
            key: key.into(),
            value: value.into(),
            context: opts.context.map(|c| c.0).unwrap_or_default(),
            consistency: Some(opts.consistency.to_proto()),
            ttl_ms: opts.ttl.map(|t| t.as_millis().max(1) as u64),
        };
        check_key(&req.key)?;
        self.ensure_routing().await;
        self.with_failover(
            Some(&req.key),
            false,
            opts.consistency.client_deadline(),
            |ch| {
                let req = req.clone();
                async move {
                    KvClient::new(ch)
                        .max_encoding_message_size(MAX_MESSAGE_BYTES)
                        .put(req)
                        .await
                }
            },
        )
        .await
        .map(|r| {
            let meta = meta_from_proto(r.meta);
            self.saw_layout(&meta);
            PutResult {
                context: Context(r.context),
                meta,
            }
        })
    }

    pub async fn delete(
        &self,
        key: impl Into<Bytes>,
        context: Option<Context>,
        opts: RequestOptions,
    ) -> Result<ReplyMeta> {
        let req = pb::DeleteRequest {
            key: key.into(),
            context: context.map(|c| c.0).unwrap_or_default(),
            consistency: Some(opts.to_proto()),
        };
        check_key(&req.key)?;
        self.ensure_routing().await;
        self.with_failover(Some(&req.key), false, opts.client_deadline(), |ch| {
            let req = req.clone();
            async move { KvClient::new(ch).delete(req).await }
        })
        .await
        .map(|r| {
            let meta = meta_from_proto(r.meta);
            self.saw_layout(&meta);
            meta
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    /// A bad key is refused before anything is sent: the endpoint here
    /// does not exist, so reaching the network would be `Unreachable`.
    #[tokio::test]
    async fn bad_keys_are_refused_without_a_round_trip() {
        let client = Client::new(&["127.0.0.1:1"]).unwrap().with_routing(false);
        let opts = RequestOptions::default();
        let empty = client.get("", opts, false).await.unwrap_err();
        assert!(
            matches!(&empty, Error::InvalidArgument(m) if m.contains("empty")),
            "{empty:?}"
        );
        let long = vec![b'k'; MAX_KEY_LIMIT + 1];
        let put = client
            .put(long.clone(), "v", PutOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(put, Error::InvalidArgument(_)), "{put:?}");
        let delete = client.delete(long.clone(), None, opts).await.unwrap_err();
        assert!(matches!(delete, Error::InvalidArgument(_)), "{delete:?}");
        let local = client.local_get(0, long).await.unwrap_err();
        assert!(matches!(local, Error::InvalidArgument(_)), "{local:?}");
        // A key at the hard limit passes the check and fails on the network.
        let at_limit = client.get(vec![b'k'; MAX_KEY_LIMIT], opts, false).await;
        assert!(
            matches!(at_limit, Err(Error::Unreachable(_))),
            "{at_limit:?}"
        );
    }
}
