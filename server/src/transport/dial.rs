//! Dialling a peer over mutual TLS: TCP, then a TLS handshake with the
//! connector current at that moment, so a reloaded certificate is used by
//! every connection opened after the reload.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::tls::{Tls, PEER_SERVER_NAME};

#[derive(Clone)]
pub struct TlsDial {
    tls: Arc<Tls>,
    timeout: Duration,
}

impl TlsDial {
    pub fn new(tls: Arc<Tls>, timeout: Duration) -> Self {
        Self { tls, timeout }
    }
}

type Dialled = TokioIo<TlsStream<TcpStream>>;

impl tower_service::Service<http::Uri> for TlsDial {
    type Response = Dialled;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Dialled>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (tls, timeout) = (self.tls.clone(), self.timeout);
        Box::pin(async move {
            use std::io::{Error, ErrorKind};
            let host = uri
                .host()
                .ok_or_else(|| Error::new(ErrorKind::InvalidInput, format!("no host in {uri}")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(80);
            let connector = tls
                .connector()
                .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "the peer port runs no TLS"))?;
            let dial = async {
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                let name = ServerName::try_from(PEER_SERVER_NAME)
                    .map_err(|e| Error::new(ErrorKind::InvalidInput, e))?;
                connector.connect(name, tcp).await
            };
            match tokio::time::timeout(timeout, dial).await {
                Ok(stream) => Ok(TokioIo::new(stream?)),
                Err(_) => Err(Error::new(
                    ErrorKind::TimedOut,
                    format!("no TLS connection to {host}:{port} within {timeout:?}"),
                )),
            }
        })
    }
}
