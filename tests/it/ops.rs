use std::time::{Duration, Instant};

use alloy::primitives::Address;
use rewardflow::app::{App, AppError};
use serde_json::json;

use crate::common::{TestApp, assert_problem, empty_database, test_settings};

#[tokio::test]
async fn readiness_latch_reports_each_condition() {
    let app = TestApp::spawn().await;
    let (status, body) = app.get("/readyz", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"ready": true, "migrations_applied": true, "state_loaded": true, "database_reachable": true, "draining": false})
    );
    app.ctx.readiness.start_draining();
    let (status, body) = app.get("/readyz", None).await;
    assert_eq!(status, 503);
    assert_eq!(body["draining"], true);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn readiness_follows_the_database() {
    let app = TestApp::spawn_with(|s| s.supervisor.maintenance_interval_ms = 20).await;
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&app.ctx.pool)
        .await
        .unwrap();
    crate::common::admin(&format!("DROP DATABASE {database} WITH (FORCE)")).await;
    // The maintenance actor probes every 20 ms; wait (bounded) for the latch to open.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = app.get("/readyz", None).await;
        if status == 503 {
            assert_eq!(body["database_reachable"], false, "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readiness never noticed the database was gone"
        );
        tokio::task::yield_now().await;
    }
    // Liveness is about the actor system, not the database.
    let (status, _) = app.get("/healthz", None).await;
    assert_eq!(status, 200);
}

/// A server that turned read-only (as after a failover) cannot do the work now:
/// 503 with Retry-After for the API and for interactions, not a 500.
#[tokio::test]
async fn a_read_only_database_is_unavailable_not_an_internal_error() {
    let app = TestApp::spawn().await;
    let owner = app.token(Address::repeat_byte(0xee));
    let product = crate::interactions::create_product(&app, "ro.example").await;
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&app.ctx.pool)
        .await
        .unwrap();
    crate::common::admin(&format!(
        "ALTER DATABASE {database} SET default_transaction_read_only = on"
    ))
    .await;
    // The pool's sessions started before; new ones are read-only.
    crate::common::admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
    ))
    .await;
    let answer = |path: &'static str, body: serde_json::Value| {
        let (app, owner) = (&app, &owner);
        async move {
            let response = app
                .client
                .post(app.url(path))
                .bearer_auth(owner)
                .json(&body)
                .send()
                .await
                .unwrap();
            let retry_after = response.headers().get("retry-after").is_some();
            let (status, body) = crate::common::read(response).await;
            (status, retry_after, body)
        }
    };
    // The first attempt may meet a terminated session; the next ones read-only ones.
    for _ in 0..3 {
        let (status, retry_after, body) = answer(
            "/v1/products",
            json!({"domain": "ro-2.example", "name": "RO"}),
        )
        .await;
        assert_eq!((status, retry_after), (503, true), "{body}");
        let (status, retry_after, body) = answer(
            "/v1/interactions",
            json!({"product_id": product, "type": "webshop.open"}),
        )
        .await;
        assert_eq!((status, retry_after), (503, true), "{body}");
    }
    crate::common::admin(&format!(
        "ALTER DATABASE {database} RESET default_transaction_read_only"
    ))
    .await;
}

#[tokio::test]
async fn unapplied_migrations_block_start_unless_migrating() {
    let mut settings = test_settings(&empty_database().await);
    settings.database.migrate_on_start = false;
    match App::build(settings.clone()).await {
        Err(AppError::PendingMigrations(n)) => assert!(n >= 1),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("started with an unmigrated database"),
    }
    settings.database.migrate_on_start = true;
    let app = crate::common::TestApp::start(settings).await.unwrap();
    let (status, _) = app.get("/readyz", None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn healthz_lists_the_supervised_actors() {
    let app = TestApp::spawn().await;
    let (status, body) = app.get("/healthz", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["actors"][0]["actor"], "maintenance");
    assert_eq!(body["actors"][0]["running"], true);
}

#[tokio::test]
async fn metrics_expose_requests_by_route_and_status() {
    let app = TestApp::spawn().await;
    app.get("/readyz", None).await;
    app.get("/v1/products/0x12", None).await;
    app.get("/no/such/route", None).await;
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for needle in [
        "# TYPE rewardflow_http_requests_total counter",
        r#"rewardflow_http_requests_total{route="/readyz",method="GET",status="200"}"#,
        r#"rewardflow_http_requests_total{route="/v1/products/{id}",method="GET",status="401"}"#,
        r#"rewardflow_http_requests_total{route="unmatched",method="GET",status="404"}"#,
        "# TYPE rewardflow_http_request_duration_seconds histogram",
        r#"rewardflow_http_request_duration_seconds_bucket{route="/readyz",method="GET",status="200",le="0.005"}"#,
        "rewardflow_ready ",
        "rewardflow_build_info{",
        r#"rewardflow_db_pool_connections{state="idle"}"#,
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_with_or_without_content_length() {
    let app = TestApp::spawn_with(|s| s.server.body_limit_bytes = 1024).await;
    let token = app.token(Address::repeat_byte(0x05));
    let big = json!({"domain": "big.example", "name": "x".repeat(2000)});
    let (status, body) = app.post("/v1/products", &big, Some(&token)).await;
    assert_problem(status, &body, 413);

    // Chunked: no Content-Length, the cap applies while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b' '; 200])).collect();
    let response = app
        .client
        .post(app.url("/v1/products"))
        .bearer_auth(&token)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    let (status, body) = crate::common::read(response).await;
    assert_problem(status, &body, 413);
}

#[tokio::test]
async fn default_body_limit_is_one_mebibyte() {
    let app = TestApp::spawn().await;
    let token = app.token(Address::repeat_byte(0x06));
    let response = app
        .client
        .post(app.url("/v1/products"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(vec![b' '; 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    let (status, body) = crate::common::read(response).await;
    assert_problem(status, &body, 413);
}

#[tokio::test]
async fn malformed_requests_are_problem_json_never_500() {
    let app = TestApp::spawn().await;
    let token = app.token(Address::repeat_byte(0x07));
    for raw in ["{", "", "nul", "[1,2", "\u{0}", "{\"domain\": }"] {
        let response = app
            .client
            .post(app.url("/v1/products"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(raw.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let (status, body) = crate::common::read(response).await;
        assert_problem(status, &body, 400);
    }
    let (status, body) = app.get("/nowhere", None).await;
    assert_problem(status, &body, 404);
    let response = app
        .client
        .delete(app.url("/v1/auth/nonce"))
        .send()
        .await
        .unwrap();
    let (status, body) = crate::common::read(response).await;
    assert_problem(status, &body, 405);
    let response = app
        .client
        .get(app.url("/v1/products"))
        .header("content-length", "x")
        .send()
        .await;
    if let Ok(response) = response {
        assert!(response.status().is_client_error());
    }
}

#[tokio::test]
async fn openapi_document_is_served() {
    let app = TestApp::spawn().await;
    let (status, body) = app.get("/openapi.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["openapi"], "3.1.0");
    assert!(body["paths"]["/v1/products/{id}"]["get"].is_object());
}

#[tokio::test]
async fn graceful_stop_finishes_cleanly() {
    let app = TestApp::spawn().await;
    let pool = app.ctx.pool.clone();
    app.stop().await.unwrap();
    assert!(pool.is_closed());
}
