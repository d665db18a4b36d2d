//! Client tokens: what a bearer token allows, and how the cluster's table
//! of tokens converges.
//!
//! A token reads `rkv_<id>_<secret>`: `id` (16 hex digits) names its
//! record, `secret` is 32 random bytes in unpadded base64url. No node
//! stores a secret: a record keeps the SHA-256 of the whole token, and a
//! presented token is hashed and compared with it in constant time. (A
//! fast hash is enough: the secret is 256 random bits, not a password
//! that could be guessed from a list.)
//!
//! A record grants scopes (read, write, admin; admin does not imply the
//! others), optionally only for keys that start with a prefix, until an
//! optional expiry. The root token, read from `auth.root_token_file` on
//! each node, holds every scope and no prefix; it creates the others.
//!
//! **Replication.** The table is a state-based CRDT, so nodes converge by
//! exchanging it in any order, any number of times: a record never
//! changes after creation except `revoked`, which only turns true; a merge
//! is the union by id with `revoked` from either side. A stale peer can
//! therefore never bring a revoked token back. Nodes exchange tables
//! with a random live member every gossip interval (`node::auth`).
//!
//! Everything here is pure: time is passed in, and randomness comes from
//! the caller's generator.

use std::collections::BTreeMap;
use std::fmt;

use base64_engine::encode_base64url;
use rand::Rng;
use ringkv_common::bytes::{put_varint, ByteReader, DecodeError};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

/// The start of every token, so a token is recognisable in a leak scan.
pub const TOKEN_PREFIX: &str = "rkv_";

/// Bytes of randomness in a token's secret.
const SECRET_BYTES: usize = 32;

/// Most tokens a cluster holds (revoked ones included): the whole table
/// travels in one message.
pub const MAX_TOKENS: usize = 10_000;

/// Longest token name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// Shortest root token accepted from `auth.root_token_file`.
pub const MIN_ROOT_TOKEN_CHARS: usize = 32;

/// The stored encoding's format version.
const FORMAT_VERSION: u8 = 1;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// KV.Get.
    Read,
    /// KV.Put and KV.Delete.
    Write,
    /// Every Admin call: cluster changes, tokens, status.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];

    fn bit(self) -> u8 {
        match self {
            Scope::Read => 1,
            Scope::Write => 2,
            Scope::Admin => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = Error;

    fn from_str(s: &str) -> Result<Scope> {
        match s.trim().to_ascii_lowercase().as_str() {
            "read" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            "admin" => Ok(Scope::Admin),
            other => Err(Error::InvalidArgument(format!(
                "unknown scope {other:?}: expected read, write or admin"
            ))),
        }
    }
}

/// A set of scopes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Scopes(u8);

impl Scopes {
    pub fn all() -> Scopes {
        Scopes(Scope::ALL.iter().map(|s| s.bit()).sum())
    }

    pub fn of(scopes: &[Scope]) -> Scopes {
        Scopes(scopes.iter().fold(0, |acc, s| acc | s.bit()))
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Scope::name).collect();
        f.write_str(&names.join(","))
    }
}

/// One token as every node stores it: everything but the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    /// Random; names the token in lists, revocations and logs.
    pub id: u64,
    /// The operator's label ("billing-reader").
    pub name: String,
    pub scopes: Scopes,
    /// Only keys starting with these bytes; `None`: every key.
    pub prefix: Option<Vec<u8>>,
    /// When it was created (ms since the Unix epoch), for lists.
    pub created_ms: u64,
    /// When it stops working (ms since the Unix epoch); `None`: never.
    pub expires_ms: Option<u64>,
    /// SHA-256 of the whole token string.
    pub hash: [u8; 32],
    /// Turns true once and never back (see the module doc).
    pub revoked: bool,
}

/// What a new token asks for.
#[derive(Clone, Debug, Default)]
pub struct TokenSpec {
    pub name: String,
    pub scopes: Scopes,
    pub prefix: Option<Vec<u8>>,
    /// Lifetime from creation; `None`: no expiry.
    pub ttl_ms: Option<u64>,
}

/// Who a request comes from, once its token was checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's id; `None` for the root token.
    pub token: Option<u64>,
    pub name: String,
    pub scopes: Scopes,
    pub prefix: Option<Vec<u8>>,
}

impl Principal {
    /// The root token's principal.
    pub fn root() -> Principal {
        Principal {
            token: None,
            name: "root".to_string(),
            scopes: Scopes::all(),
            prefix: None,
        }
    }

    /// Refuses (PERMISSION_DENIED) unless the token holds `scope`.
    pub fn require(&self, scope: Scope, what: &str) -> Result<()> {
        if self.scopes.contains(scope) {
            return Ok(());
        }
        Err(Error::PermissionDenied(format!(
            "token {} ({}) has scopes [{}]; {what} needs the {} scope",
            self.describe(),
            self.name,
            self.scopes,
            scope.name()
        )))
    }

    /// Refuses (PERMISSION_DENIED) a key outside the token's prefix.
    pub fn allow_key(&self, key: &[u8]) -> Result<()> {
        match &self.prefix {
            Some(prefix) if !key.starts_with(prefix) => Err(Error::PermissionDenied(format!(
                "token {} ({}) is limited to keys starting with {:?}; this key does not",
                self.describe(),
                self.name,
                String::from_utf8_lossy(prefix)
            ))),
            _ => Ok(()),
        }
    }

    fn describe(&self) -> String {
        self.token
            .map(format_id)
            .unwrap_or_else(|| "root".to_string())
    }
}

/// A token id as it is written: 16 hex digits.
pub fn format_id(id: u64) -> String {
    format!("{id:016x}")
}

/// Reads a token id as written by [`format_id`].
pub fn parse_id(s: &str) -> Result<u64> {
    let s = s.trim();
    if s.len() != 16 {
        return Err(Error::InvalidArgument(format!(
            "token id {s:?} must be 16 hex digits (see `ringkv auth token list`)"
        )));
    }
    u64::from_str_radix(s, 16).map_err(|_| {
        Error::InvalidArgument(format!(
            "token id {s:?} must be 16 hex digits (see `ringkv auth token list`)"
        ))
    })
}

/// SHA-256 of a token string.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new token for `spec`: the token string (shown once, never stored)
/// and its record.
pub fn mint(spec: &TokenSpec, now_ms: u64, rng: &mut impl Rng) -> Result<(String, TokenRecord)> {
    if spec.scopes.is_empty() {
        return Err(Error::InvalidArgument(
            "a token needs at least one scope: read, write or admin".into(),
        ));
    }
    if spec.name.len() > MAX_NAME_BYTES {
        return Err(Error::InvalidArgument(format!(
            "token name is {} bytes; at most {MAX_NAME_BYTES}",
            spec.name.len()
        )));
    }
    if spec.prefix.is_some() && spec.scopes.contains(Scope::Admin) {
        return Err(Error::InvalidArgument(
            "a key prefix cannot limit the admin scope (an admin token can read any node's copies and make new tokens): make a separate admin token".into(),
        ));
    }
    if spec.prefix.as_ref().is_some_and(|p| p.is_empty()) {
        return Err(Error::InvalidArgument(
            "an empty key prefix allows every key: leave the prefix out instead".into(),
        ));
    }
    let id: u64 = rng.random();
    let mut secret = [0u8; SECRET_BYTES];
    rng.fill(&mut secret);
    let token = format!(
        "{TOKEN_PREFIX}{}_{}",
        format_id(id),
        encode_base64url(&secret)
    );
    let record = TokenRecord {
        id,
        name: spec.name.clone(),
        scopes: spec.scopes,
        prefix: spec.prefix.clone(),
        created_ms: now_ms,
        expires_ms: spec.ttl_ms.map(|ttl| now_ms.saturating_add(ttl)),
        hash: hash(&token),
        revoked: false,
    };
    Ok((token, record))
}

/// The id a token string names, if it has the shape of one.
fn token_id(token: &str) -> Option<u64> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 16 || secret.is_empty() {
        return None;
    }
    u64::from_str_radix(id, 16).ok()
}

/// Every token of the cluster (see the module doc for how tables merge).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenTable {
    records: BTreeMap<u64, TokenRecord>,
}

impl TokenTable {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn records(&self) -> impl Iterator<Item = &TokenRecord> {
        self.records.values()
    }

    pub fn get(&self, id: u64) -> Option<&TokenRecord> {
        self.records.get(&id)
    }

    /// Adds a new record (from [`mint`]).
    pub fn insert(&mut self, record: TokenRecord) -> Result<()> {
        if self.records.contains_key(&record.id) {
            return Err(Error::FailedPrecondition(format!(
                "token id {} is taken; create the token again",
                format_id(record.id)
            )));
        }
        if self.records.len() >= MAX_TOKENS {
            return Err(Error::Overloaded(format!(
                "the cluster holds {MAX_TOKENS} tokens, the most it keeps"
            )));
        }
        self.merge_one(record);
        Ok(())
    }

    /// Revokes a token. Returns false when it was revoked already.
    pub fn revoke(&mut self, id: u64) -> Result<bool> {
        let record = self.records.get_mut(&id).ok_or_else(|| {
            Error::NotFound(format!(
                "no token {} (see `ringkv auth token list`)",
                format_id(id)
            ))
        })?;
        Ok(!std::mem::replace(&mut record.revoked, true))
    }

    /// Merges another table's records in. Returns whether this table
    /// changed.
    pub fn merge(&mut self, other: &TokenTable) -> bool {
        let mut changed = false;
        for record in other.records.values() {
            changed |= self.merge_one(record.clone());
        }
        changed
    }

    fn merge_one(&mut self, record: TokenRecord) -> bool {
        match self.records.get_mut(&record.id) {
            None => {
                if self.records.len() >= MAX_TOKENS {
                    return false;
                }
                self.records.insert(record.id, record);
                true
            }
            Some(mine) => {
                // Two tokens drawing the same id: keep one deterministically,
                // so every node keeps the same.
                let revoked = mine.revoked || record.revoked;
                let replaced = record.hash < mine.hash;
                if replaced {
                    *mine = record;
                }
                let changed = replaced || mine.revoked != revoked;
                mine.revoked = revoked;
                changed
            }
        }
    }

    /// Checks a presented token at time `now_ms`: UNAUTHENTICATED when it is
    /// malformed, unknown, wrong, revoked or expired. `root` is the hash of
    /// the root token, when one is configured.
    pub fn authenticate(
        &self,
        token: &str,
        root: Option<&[u8; 32]>,
        now_ms: u64,
    ) -> Result<Principal> {
        let presented = hash(token);
        if let Some(root) = root {
            if bool::from(presented.ct_eq(root)) {
                return Ok(Principal::root());
            }
        }
        let id = token_id(token).ok_or_else(|| {
            Error::Unauthenticated(
                "malformed token: expected rkv_<16 hex digits>_<secret> as made by `ringkv auth token create`"
                    .into(),
            )
        })?;
        let unknown = || {
            Error::Unauthenticated(format!(
                "token {} is not valid on this cluster",
                format_id(id)
            ))
        };
        let record = self.records.get(&id).ok_or_else(unknown)?;
        if !bool::from(presented.ct_eq(&record.hash)) {
            return Err(unknown());
        }
        if record.revoked {
            return Err(Error::Unauthenticated(format!(
                "token {} ({}) was revoked",
                format_id(id),
                record.name
            )));
        }
        if let Some(expires) = record.expires_ms {
            if now_ms >= expires {
                return Err(Error::Unauthenticated(format!(
                    "token {} ({}) expired {} s ago; create a new one",
                    format_id(id),
                    record.name,
                    (now_ms - expires) / 1000
                )));
            }
        }
        Ok(Principal {
            token: Some(id),
            name: record.name.clone(),
            scopes: record.scopes,
            prefix: record.prefix.clone(),
        })
    }

    /// The stored and wire encoding: a format byte, then the records.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT_VERSION];
        put_varint(&mut out, self.records.len() as u64);
        for r in self.records.values() {
            out.extend_from_slice(&r.id.to_le_bytes());
            put_bytes(&mut out, r.name.as_bytes());
            out.push(r.scopes.0);
            match &r.prefix {
                None => out.push(0),
                Some(p) => {
                    out.push(1);
                    put_bytes(&mut out, p);
                }
            }
            put_varint(&mut out, r.created_ms);
            match r.expires_ms {
                None => out.push(0),
                Some(e) => {
                    out.push(1);
                    put_varint(&mut out, e);
                }
            }
            out.extend_from_slice(&r.hash);
            out.push(u8::from(r.revoked));
        }
        out
    }

    /// Reads [`TokenTable::encode`]'s output; malformed bytes are an error
    /// (`make` picks the error's kind: corrupt storage or a bad message).
    pub fn decode(bytes: &[u8], make: fn(String) -> Error) -> Result<TokenTable> {
        decode_records(bytes).map_err(|e| make(format!("token table: {e}")))
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn decode_records(bytes: &[u8]) -> std::result::Result<TokenTable, DecodeError> {
    let mut r = ByteReader::new(bytes);
    let version = r.u8("format version")?;
    if version != FORMAT_VERSION {
        return Err(r.error(format!("unknown format version {version}")));
    }
    let count = r.varint("record count")?;
    if count > MAX_TOKENS as u64 {
        return Err(r.error(format!("{count} records; at most {MAX_TOKENS}")));
    }
    let mut table = TokenTable::default();
    for _ in 0..count {
        let id = r.u64_le("id")?;
        let name = r.varint("name length").and_then(|n| r.take(n, "name"))?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| r.error("name is not UTF-8"))?;
        let scopes = Scopes(r.u8("scopes")? & Scopes::all().0);
        let prefix = match r.u8("prefix flag")? {
            0 => None,
            _ => Some(
                r.varint("prefix length")
                    .and_then(|n| r.take(n, "prefix"))?
                    .to_vec(),
            ),
        };
        let created_ms = r.varint("created")?;
        let expires_ms = match r.u8("expiry flag")? {
            0 => None,
            _ => Some(r.varint("expiry")?),
        };
        let hash: [u8; 32] = r
            .take(32, "hash")?
            .try_into()
            .map_err(|_| r.error("hash is not 32 bytes"))?;
        let revoked = r.u8("revoked")? != 0;
        table.merge_one(TokenRecord {
            id,
            name,
            scopes,
            prefix,
            created_ms,
            expires_ms,
            hash,
            revoked,
        });
    }
    r.finish()?;
    Ok(table)
}

/// Unpadded base64url, for token secrets (no dependency for 40 bytes).
mod base64_engine {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    pub fn encode_base64url(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
