//! The gate layer around a stand-in service: admission, the refusal's
//! status, the handler's level label and the code in the metrics.

use std::convert::Infallible;
use std::sync::Arc;

use ringkv_node::metrics::Metrics;
use ringkv_storage::MemoryEngine;
use tokio::sync::{oneshot, Mutex as AsyncMutex};

use super::*;

/// A service that answers each call as told: it sets the level label the
/// way a handler does, waits for `release` (when given), then answers
/// with `code`.
#[derive(Clone)]
struct StandIn {
    code: Code,
    level: &'static str,
    release: Arc<AsyncMutex<Option<oneshot::Receiver<()>>>>,
}

impl StandIn {
    fn answering(code: Code, level: &'static str) -> Self {
        Self {
            code,
            level,
            release: Arc::default(),
        }
    }
}

impl Service<http::Request<()>> for StandIn {
    type Response = http::Response<String>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<()>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if let Some(label) = request.extensions().get::<LevelLabel>() {
                label.set(this.level);
            }
            let wait = this.release.lock().await.take();
            if let Some(wait) = wait {
                let _ = wait.await;
            }
            Ok(match this.code {
                Code::Ok => http::Response::new("answer".to_string()),
                code => Status::new(code, "refused").into_http(),
            })
        })
    }
}

fn call(path: &str) -> http::Request<()> {
    http::Request::builder().uri(path).body(()).unwrap()
}

fn sample(metrics: &Metrics, name: &str) -> Option<String> {
    let text = metrics.render(&MemoryEngine::new());
    text.lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
}

#[tokio::test]
async fn a_call_past_the_limit_is_refused_before_the_handler_runs() {
    let metrics = Metrics::new();
    let (release, wait) = oneshot::channel();
    let inner = StandIn::answering(Code::Ok, "quorum");
    *inner.release.lock().await = Some(wait);
    let mut service = GateLayer::new(Gate::new(1, metrics.clone())).layer(inner);

    let first = tokio::spawn(service.call(call("/ringkv.v1.KV/Put")));
    tokio::task::yield_now().await;
    let refused = service.call(call("/ringkv.v1.KV/Get")).await.unwrap();
    assert_eq!(code_of(&refused), Code::ResourceExhausted);
    assert_eq!(
        sample(
            &metrics,
            r#"ringkv_requests_total{op="get",code="RESOURCE_EXHAUSTED"}"#
        )
        .as_deref(),
        Some("1")
    );

    // Calls the layer does not meter never wait for a permit.
    let health = service.call(call("/grpc.health.v1.Health/Check"));
    assert_eq!(code_of(&health.await.unwrap()), Code::Ok);

    release.send(()).unwrap();
    assert_eq!(code_of(&first.await.unwrap().unwrap()), Code::Ok);
    // The permit came back with the answer.
    let again = service.call(call("/ringkv.v1.KV/Get")).await.unwrap();
    assert_eq!(code_of(&again), Code::Ok);
}

#[tokio::test]
async fn the_handler_s_level_and_the_answer_s_code_are_recorded() {
    let metrics = Metrics::new();
    let gate = Gate::new(8, metrics.clone());
    let mut ok = GateLayer::new(gate.clone()).layer(StandIn::answering(Code::Ok, "quorum"));
    let mut failing = GateLayer::new(gate).layer(StandIn::answering(Code::Unavailable, "all"));
    ok.call(call("/ringkv.v1.KV/Put")).await.unwrap();
    ok.call(call("/ringkv.v1.KV/Put")).await.unwrap();
    failing.call(call("/ringkv.v1.KV/Get")).await.unwrap();
    failing
        .call(call("/ringkv.v1.Internal/Gossip"))
        .await
        .unwrap();

    let v = |name: &str| sample(&metrics, name);
    assert_eq!(
        v(r#"ringkv_requests_total{op="put",code="OK"}"#).as_deref(),
        Some("2")
    );
    assert_eq!(
        v(r#"ringkv_requests_total{op="get",code="UNAVAILABLE"}"#).as_deref(),
        Some("1")
    );
    assert_eq!(
        v(r#"ringkv_request_duration_seconds_count{op="put",level="quorum"}"#).as_deref(),
        Some("2")
    );
    assert_eq!(
        v(r#"ringkv_request_duration_seconds_count{op="get",level="all"}"#).as_deref(),
        Some("1")
    );
    assert_eq!(v("ringkv_quorum_failures_total").as_deref(), Some("1"));
    // Gossip is not metered.
    let text = metrics.render(&MemoryEngine::new());
    assert!(!text.contains(r#"op="gossip""#), "{text}");
}

#[test]
fn every_metered_path_is_a_method_of_a_served_service() {
    use ringkv_proto::v1 as pb;
    let services = [
        pb::kv_server::SERVICE_NAME,
        pb::admin_server::SERVICE_NAME,
        pb::internal_server::SERVICE_NAME,
    ];
    for (path, op) in OPS {
        let (service, method) = path[1..].split_once('/').unwrap();
        assert!(services.contains(&service), "{path}");
        // The label is the method's name in snake case.
        let mut snake = String::new();
        for (i, c) in method.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                snake.push('_');
            }
            snake.push(c.to_ascii_lowercase());
        }
        assert_eq!(&snake, op, "{path}");
    }
    assert_eq!(op_of("/ringkv.v1.KV/Put"), Some("put"));
    assert_eq!(op_of("/ringkv.v1.Internal/Batch"), None);
}
