//! The metrics endpoint: `GET /metrics` (and `GET /`) over HTTP/1.1.
//!
//! An axum router answers the request; hyper serves each connection, with
//! a timer so a scraper that never finishes its request head is cut off.
//! The accept loop is ours rather than `axum::serve` because that one has no
//! header read timeout and waits without limit for connections at shutdown;
//! here every connection is bounded in time, their number is capped, and
//! shutdown gives in-flight scrapes a short drain before aborting them.
//! One request per connection (`Connection: close`), as Prometheus scrapes.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::encoding::prometheus_text;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use ringkv_common::Shutdown;
use ringkv_node::metrics::Metrics;
use ringkv_storage::Engine;

/// How long a scraper may take to send its request head.
const HTTP_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest one connection is served, request to last byte of the answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections served at once; further ones are closed unanswered.
const MAX_CONNECTIONS: usize = 64;

/// How long shutdown waits for scrapes in flight before aborting them.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(1);

/// What a scrape reads.
#[derive(Clone)]
struct Scrape {
    metrics: Arc<Metrics>,
    engine: Arc<dyn Engine>,
}

/// Serves `/metrics` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    engine: Arc<dyn Engine>,
    mut shutdown: Shutdown,
) {
    let app = router(Scrape { metrics, engine });
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.recv() => break,
            Some(_) = connections.join_next() => continue,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        if connections.len() >= MAX_CONNECTIONS {
            continue; // dropping the stream closes it
        }
        let service = TowerToHyperService::new(app.clone());
        connections.spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HTTP_READ_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    // Dropping the set aborts what is left.
}

fn router(scrape: Scrape) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/", get(metrics_page))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found: metrics are at /metrics\n",
            )
        })
        .with_state(scrape)
}

async fn metrics_page(State(scrape): State<Scrape>) -> Response {
    // The engine's size estimate may read RocksDB properties.
    let rendered =
        tokio::task::spawn_blocking(move || scrape.metrics.render(scrape.engine.as_ref())).await;
    match rendered {
        Ok(body) => (
            [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
