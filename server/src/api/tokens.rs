//! Admin handlers for client tokens: create, list, revoke. Any node
//! answers; the change is stored here, pushed to every live member at
//! once, and spread to the rest by the token-sync worker (`node::auth`).

use ringkv_proto::v1 as pb;
use tonic::{Response, Status};

use super::admin::AdminService;
use super::status;
use ringkv_core::auth::{self, Scope, Scopes, TokenRecord, TokenSpec};
use ringkv_node::auth::push_to_all;

fn info(record: &TokenRecord) -> pb::TokenInfo {
    pb::TokenInfo {
        id: auth::format_id(record.id),
        name: record.name.clone(),
        scopes: record.scopes.iter().map(|s| s.name().to_string()).collect(),
        prefix: record.prefix.clone().map(Into::into),
        created_ms: record.created_ms,
        expires_ms: record.expires_ms.unwrap_or(0),
        revoked: record.revoked,
    }
}

impl AdminService {
    pub(super) async fn do_create_token(
        &self,
        req: pb::CreateTokenRequest,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let scopes = req
            .scopes
            .iter()
            .map(|s| s.parse::<Scope>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(status)?;
        let spec = TokenSpec {
            name: req.name,
            scopes: Scopes::of(&scopes),
            prefix: req.prefix.map(|p| p.to_vec()),
            ttl_ms: (req.ttl_ms > 0).then_some(req.ttl_ms),
        };
        let (token, record) = self.tokens().create(&spec).await.map_err(status)?;
        let reached = push_to_all(self.cluster(), self.tokens()).await;
        Ok(Response::new(pb::CreateTokenResponse {
            token,
            info: Some(info(&record)),
            reached: reached as u32,
        }))
    }

    pub(super) fn do_list_tokens(&self) -> Result<Response<pb::ListTokensResponse>, Status> {
        Ok(Response::new(pb::ListTokensResponse {
            tokens: self.tokens().list().iter().map(info).collect(),
        }))
    }

    pub(super) async fn do_revoke_token(
        &self,
        req: pb::RevokeTokenRequest,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let id = auth::parse_id(&req.id).map_err(status)?;
        let revoked = self.tokens().revoke(id).await.map_err(status)?;
        let reached = push_to_all(self.cluster(), self.tokens()).await;
        Ok(Response::new(pb::RevokeTokenResponse {
            revoked,
            reached: reached as u32,
        }))
    }
}
