//! Reloading what may be rotated while a node runs: the TLS certificates
//! and CA bundles, and the root token. A reload happens on SIGHUP and when
//! a watched file changes (checked every `tls.reload_check_ms`). A reload
//! that fails changes nothing and says why; the node keeps serving with
//! what it had.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::Shutdown;
use crate::tls::{Tls, Watched};
use ringkv_core::error::{Error, Result};
use ringkv_node::auth::Tokens;

/// The root token's file and where its hash goes.
#[derive(Clone)]
pub struct RootToken {
    file: Option<PathBuf>,
    tokens: Arc<Tokens>,
}

impl RootToken {
    pub fn new(file: Option<PathBuf>, tokens: Arc<Tokens>) -> Self {
        Self { file, tokens }
    }

    /// Reads the file (if configured) and installs its token.
    pub fn load(&self) -> Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let token = std::fs::read_to_string(file).map_err(|e| {
            Error::Config(format!("auth.root_token_file = {}: {e}", file.display()))
        })?;
        self.tokens
            .set_root(&token)
            .map_err(|e| Error::Config(format!("auth.root_token_file = {}: {e}", file.display())))
    }
}

/// Reloads on SIGHUP and on file changes until shutdown.
pub async fn watch(
    tls: Option<Arc<Tls>>,
    root: RootToken,
    check_every: Duration,
    mut stop: Shutdown,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut files: Vec<PathBuf> = tls.as_ref().map(|t| t.files()).unwrap_or_default();
    files.extend(root.file.clone());
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!("cannot listen for SIGHUP ({e}); certificates reload on file changes only");
            None
        }
    };
    let mut seen = Watched::of(&files);
    let mut tick = tokio::time::interval(if check_every.is_zero() {
        Duration::from_secs(3600)
    } else {
        check_every
    });
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let signalled = tokio::select! {
            _ = stop.recv() => return,
            _ = async { match &mut hangup { Some(h) => { h.recv().await; } None => std::future::pending().await } } => true,
            _ = tick.tick() => false,
        };
        let now = Watched::of(&files);
        if !signalled && (check_every.is_zero() || now == seen) {
            continue;
        }
        seen = now;
        info!(
            trigger = if signalled {
                "SIGHUP"
            } else {
                "a file changed"
            },
            "reloading certificates and the root token"
        );
        // Reading files blocks: off the runtime (STYLE rule 9).
        let (tls, root) = (tls.clone(), root.clone());
        let reloaded = tokio::task::spawn_blocking(move || {
            if let Some(tls) = &tls {
                if let Err(e) = tls.reload() {
                    warn!("TLS reload refused, the certificates in use stay: {e}");
                }
            }
            if let Err(e) = root.load() {
                warn!("root token reload refused, the token in use stays: {e}");
            }
        })
        .await;
        if let Err(e) = reloaded {
            warn!("the reload task failed: {e}");
        }
    }
}
