//! The standard gRPC health service and the Prometheus request counters.

use super::*;

#[tokio::test]
async fn health_service_reports_serving() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let node = start(&[]).await;
    let mut health = HealthClient::new(connect(&node.server.grpc).await);
    for service in ["", "ringkv.v1.KV"] {
        let reply = health
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .unwrap_or_else(|s| panic!("health check of {service:?}: {s:?}"))
            .into_inner();
        assert_eq!(
            reply.status,
            ServingStatus::Serving as i32,
            "service {service:?}"
        );
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn metrics_count_requests_by_operation_and_code() {
    let node = start(&[]).await;
    const PUTS: usize = 7;
    for i in 0..PUTS {
        node.put(put_req(format!("m{i}"), "v")).await.unwrap();
    }
    let ok = r#"ringkv_requests_total{op="put",code="OK"}"#;
    let invalid = r#"ringkv_requests_total{op="put",code="INVALID_ARGUMENT"}"#;
    let before = scrape(&node.server.metrics);
    assert_eq!(before.get(ok), Some(&(PUTS as f64)), "{before:#?}");
    assert_eq!(before.get(invalid), None, "{before:#?}");

    assert_invalid(node.put(put_req("m", "")).await, &["value"]);
    let after = scrape(&node.server.metrics);
    assert_eq!(after.get(invalid), Some(&1.0), "{after:#?}");
    assert_eq!(after.get(ok), Some(&(PUTS as f64)));
}
