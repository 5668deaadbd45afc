use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use rewardflow::domain::session_token;
use serde_json::json;

use crate::common::{TestApp, assert_problem, siwe_message};

#[tokio::test]
async fn sign_in_with_ethereum_returns_a_token_the_api_accepts() {
    let app = TestApp::spawn().await;
    let signer = PrivateKeySigner::random();
    let (status, body) = app.sign_in_as(&signer, "localhost:3000").await;
    assert_eq!(status, 200, "{body}");
    let wallet = format!("{:#x}", signer.address());
    assert_eq!(body["wallet"], wallet);
    let token = body["token"].as_str().unwrap();
    let (status, body) = app.get("/v1/products", Some(token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["products"], json!([]));
}

/// Requests a nonce and returns a signed message for it.
async fn signed_message(
    app: &TestApp,
    signer: &PrivateKeySigner,
    domain: &str,
) -> (String, String, String) {
    let (_, nonce) = app
        .post("/v1/auth/nonce", &serde_json::Value::Null, None)
        .await;
    let nonce = nonce["nonce"].as_str().unwrap().to_owned();
    let message = siwe_message(signer.address(), domain, &nonce);
    let signature = format!(
        "0x{}",
        hex::encode(
            signer
                .sign_message_sync(message.as_bytes())
                .unwrap()
                .as_bytes()
        )
    );
    (nonce, message, signature)
}

#[tokio::test]
async fn every_sign_in_failure_is_a_clear_4xx() {
    let app = TestApp::spawn().await;
    let signer = PrivateKeySigner::random();
    let other = PrivateKeySigner::random();

    // A signature by another key.
    let (_, message, _) = signed_message(&app, &signer, "localhost").await;
    let forged = format!(
        "0x{}",
        hex::encode(
            other
                .sign_message_sync(message.as_bytes())
                .unwrap()
                .as_bytes()
        )
    );
    let (status, body) = app
        .post(
            "/v1/auth/wallet",
            &json!({"message": message, "signature": forged}),
            None,
        )
        .await;
    assert_problem(status, &body, 401);
    assert!(
        body["detail"].as_str().unwrap().contains("not made by"),
        "{body}"
    );

    // Garbage signature.
    let (status, body) = app
        .post(
            "/v1/auth/wallet",
            &json!({"message": message, "signature": "0x1234"}),
            None,
        )
        .await;
    assert_problem(status, &body, 401);

    // The nonce was not spent by the failures above: the real signature still works once…
    let signature = format!(
        "0x{}",
        hex::encode(
            signer
                .sign_message_sync(message.as_bytes())
                .unwrap()
                .as_bytes()
        )
    );
    let request = json!({"message": message, "signature": signature});
    let (status, body) = app.post("/v1/auth/wallet", &request, None).await;
    assert_eq!(status, 200, "{body}");
    // …and only once.
    let (status, body) = app.post("/v1/auth/wallet", &request, None).await;
    assert_problem(status, &body, 401);
    assert!(
        body["detail"].as_str().unwrap().contains("already used"),
        "{body}"
    );

    // Wrong domain.
    let (_, message, signature) = signed_message(&app, &signer, "evil.example").await;
    let (status, body) = app
        .post(
            "/v1/auth/wallet",
            &json!({"message": message, "signature": signature}),
            None,
        )
        .await;
    assert_problem(status, &body, 401);
    assert!(
        body["detail"].as_str().unwrap().contains("evil.example"),
        "{body}"
    );

    // A nonce we never issued.
    let message = siwe_message(signer.address(), "localhost", "NeverIssued123");
    let signature = format!(
        "0x{}",
        hex::encode(
            signer
                .sign_message_sync(message.as_bytes())
                .unwrap()
                .as_bytes()
        )
    );
    let (status, body) = app
        .post(
            "/v1/auth/wallet",
            &json!({"message": message, "signature": signature}),
            None,
        )
        .await;
    assert_problem(status, &body, 401);

    // Not an EIP-4361 message at all → 422 naming the field.
    let (status, body) = app
        .post(
            "/v1/auth/wallet",
            &json!({"message": "hello", "signature": signature}),
            None,
        )
        .await;
    assert_problem(status, &body, 422);
    assert_eq!(body["errors"][0]["field"], "message");

    // A missing field → 422 naming it.
    let (status, body) = app
        .post("/v1/auth/wallet", &json!({"message": "hello"}), None)
        .await;
    assert_problem(status, &body, 422);
    assert!(
        body["detail"].as_str().unwrap().contains("signature"),
        "{body}"
    );
}

#[tokio::test]
async fn an_expired_nonce_is_refused() {
    let app = TestApp::spawn().await;
    let signer = PrivateKeySigner::random();
    let (nonce, message, signature) = signed_message(&app, &signer, "localhost").await;
    sqlx::query("UPDATE auth_nonces SET expires_at = now() - interval '1 second' WHERE nonce = $1")
        .bind(&nonce)
        .execute(&app.ctx.pool)
        .await
        .unwrap();
    let (status, body) = app
        .post(
            "/v1/auth/wallet",
            &json!({"message": message, "signature": signature}),
            None,
        )
        .await;
    assert_problem(status, &body, 401);
    assert!(
        body["detail"].as_str().unwrap().contains("expired"),
        "{body}"
    );
}

#[tokio::test]
async fn tokens_expire_and_must_be_signed_with_our_secret() {
    let app = TestApp::spawn().await;
    let wallet = PrivateKeySigner::random().address();
    let secret = app.ctx.jwt_secret.expose().as_bytes().to_vec();
    let now = chrono::Utc::now().timestamp();

    let expired = session_token::mint(&secret, wallet, now - 120, 60);
    let (status, body) = app.get("/v1/products", Some(&expired)).await;
    assert_problem(status, &body, 401);
    assert!(
        body["detail"].as_str().unwrap().contains("expired"),
        "{body}"
    );

    let foreign = session_token::mint(b"some-other-secret-some-other-secret", wallet, now, 60);
    let (status, body) = app.get("/v1/products", Some(&foreign)).await;
    assert_problem(status, &body, 401);

    let (status, body) = app.get("/v1/products", None).await;
    assert_problem(status, &body, 401);

    let response = app
        .client
        .get(app.url("/v1/products"))
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(response.status(), 401);

    let valid = session_token::mint(&secret, wallet, now, 60);
    let (status, _) = app.get("/v1/products", Some(&valid)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn sign_in_nonces_are_limited_per_source_ip() {
    let app = TestApp::spawn_with(|s| s.rate_limit.nonces_per_ip_per_hour = 2).await;
    for _ in 0..2 {
        let (status, body) = app
            .post("/v1/auth/nonce", &serde_json::Value::Null, None)
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let refused = app
        .client
        .post(app.url("/v1/auth/nonce"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    // A full bucket of 2 per hour: one nonce is back within half an hour.
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1800).contains(&retry_after), "{retry_after}");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM auth_nonces")
        .fetch_one(&app.ctx.pool)
        .await
        .unwrap();
    assert_eq!(stored, 2);
}
