//! Browsers: CORS for the products' own origins (and the operator's), the
//! per-product `Origin` check of SDK calls, and the limits on request heads.

use std::time::Duration;

use alloy::primitives::Address;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{TestApp, assert_problem, read};
use crate::interactions::create_product;

async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.client
        .request(reqwest::Method::OPTIONS, app.url("/v1/interactions"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap()
}

fn allow_origin(response: &reqwest::Response) -> Option<&str> {
    response
        .headers()
        .get("access-control-allow-origin")
        .and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn only_the_products_own_origins_may_call_from_a_browser() {
    let app = TestApp::spawn_with(|s| {
        s.server.cors_origins = vec!["https://dashboard.example".into()];
    })
    .await;
    let shop = create_product(&app, "shop.example").await;
    let other = create_product(&app, "other.example").await;
    let user = app.token(Address::repeat_byte(0x42));

    // Preflights: a product's default origin (https://<domain>) and the
    // configured dashboard pass; anybody else is refused without CORS headers.
    for origin in [
        "https://shop.example",
        "https://other.example",
        "https://dashboard.example",
    ] {
        let response = preflight(&app, origin).await;
        assert_eq!(response.status(), 204, "{origin}");
        assert_eq!(allow_origin(&response), Some(origin));
        let methods = response.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap();
        assert!(
            methods.contains("POST") && methods.contains("PATCH"),
            "{methods}"
        );
        let headers = response.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap();
        assert!(headers.contains("authorization"), "{headers}");
    }
    for origin in ["https://evil.example", "http://shop.example", "null"] {
        let response = preflight(&app, origin).await;
        assert_eq!(allow_origin(&response), None, "{origin}");
        let (status, body) = read(response).await;
        assert_problem(status, &body, 403);
    }

    // The actual call: allowed origins get the CORS headers; the SDK route also
    // checks that the origin belongs to the product named in the body.
    let call = |origin: &'static str, product: &str| {
        app.client
            .post(app.url("/v1/interactions"))
            .bearer_auth(&user)
            .header("origin", origin)
            .json(&json!({"product_id": product, "type": "webshop.open", "data": {"o": origin}}))
            .send()
    };
    let response = call("https://shop.example", &shop).await.unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(allow_origin(&response), Some("https://shop.example"));
    assert!(
        response.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-request-id")
    );
    assert_eq!(response.headers()["vary"], "origin");
    // other.example may use CORS, but not to report interactions of shop.example.
    let response = call("https://other.example", &shop).await.unwrap();
    let (status, body) = read(response).await;
    assert_problem(status, &body, 403);
    let response = call("https://evil.example", &shop).await.unwrap();
    assert_eq!(allow_origin(&response), None);
    let (status, body) = read(response).await;
    assert_problem(status, &body, 403);

    // A PATCH of the allowed origins applies to CORS at once.
    let response = app
        .client
        .patch(app.url(&format!("/v1/products/{shop}")))
        .bearer_auth(app.token(Address::repeat_byte(0xee)))
        .json(&json!({"allowed_origins": ["http://localhost:3000"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(preflight(&app, "http://localhost:3000").await.status(), 204);
    assert_eq!(preflight(&app, "https://shop.example").await.status(), 403);
    // Deactivating a product withdraws its origins.
    crate::interactions::deactivate_product(&app, &other).await;
    assert_eq!(preflight(&app, "https://other.example").await.status(), 403);
}

#[tokio::test]
async fn oversized_and_slow_request_heads_are_refused() {
    let app = TestApp::spawn_with(|s| s.server.header_read_timeout_ms = 300).await;
    // A 64 KiB header, over the 16 KiB default.
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-padding", "a".repeat(64 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);

    // A client that sends half a request head and stops is disconnected.
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buffer))
        .await
        .expect("the server closes a slow connection");
    assert!(read.is_ok() || buffer.is_empty(), "{read:?}");
    let text = String::from_utf8_lossy(&buffer);
    assert!(!text.contains("200 OK"), "{text}");

    // Normal requests still work.
    let (status, _) = app.get("/healthz", None).await;
    assert_eq!(status, 200);
}
