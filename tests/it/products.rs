use alloy::primitives::{Address, keccak256};
use serde_json::json;

use crate::common::{TestApp, assert_problem};

#[tokio::test]
async fn create_get_list_and_conflict() {
    let app = TestApp::spawn().await;
    let owner = Address::repeat_byte(0x01);
    let token = app.token(owner);

    let (status, created) = app
        .post(
            "/v1/products",
            &json!({"domain": "Shop.Example.COM", "name": "My shop", "metadata": {"tier": "gold"}}),
            Some(&token),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let expected_id = format!("0x{}", hex::encode(keccak256(b"shop.example.com")));
    assert_eq!(created["id"], expected_id);
    assert_eq!(created["domain"], "shop.example.com");
    assert_eq!(created["owner"], format!("{owner:#x}"));
    assert_eq!(
        created["allowed_origins"],
        json!(["https://shop.example.com"])
    );
    assert_eq!(created["metadata"], json!({"tier": "gold"}));
    assert_eq!(
        created["roles"],
        json!([
            "admin",
            "campaign_manager",
            "interaction_manager",
            "oracle_updater"
        ])
    );

    // Read back, with the id in upper case.
    let (status, got) = app
        .get(
            &format!(
                "/v1/products/{}",
                expected_id.to_uppercase().replace("0X", "0x")
            ),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["name"], "My shop");

    // The same domain, any case, by anyone → 409.
    let other = app.token(Address::repeat_byte(0x02));
    let (status, body) = app
        .post(
            "/v1/products",
            &json!({"domain": "shop.example.com", "name": "Copy"}),
            Some(&other),
        )
        .await;
    assert_problem(status, &body, 409);

    // Another wallet can neither read it nor see it in its list.
    let (status, body) = app
        .get(&format!("/v1/products/{expected_id}"), Some(&other))
        .await;
    assert_problem(status, &body, 403);
    let (_, mine) = app.get("/v1/products", Some(&other)).await;
    assert_eq!(mine["products"], json!([]));
    let (_, mine) = app.get("/v1/products", Some(&token)).await;
    assert_eq!(mine["products"][0]["id"], expected_id);

    // Unknown and malformed ids.
    let unknown = format!("0x{}", "ab".repeat(32));
    let (status, body) = app
        .get(&format!("/v1/products/{unknown}"), Some(&token))
        .await;
    assert_problem(status, &body, 404);
    let (status, body) = app.get("/v1/products/not-an-id", Some(&token)).await;
    assert_problem(status, &body, 422);
    assert_eq!(body["errors"][0]["field"], "id");
}

#[tokio::test]
async fn invalid_products_name_every_bad_field_and_store_nothing() {
    let app = TestApp::spawn().await;
    let token = app.token(Address::repeat_byte(0x03));
    let (status, body) = app
        .post(
            "/v1/products",
            &json!({"domain": "https://bad/path", "name": " ", "allowed_origins": ["shop.example"], "product_types": -1}),
            Some(&token),
        )
        .await;
    assert_problem(status, &body, 422);
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        vec!["domain", "name", "allowed_origins", "product_types"]
    );
    let (status, body) = app
        .post(
            "/v1/products",
            &json!({"domain": "a.example", "name": "x", "colour": 1}),
            Some(&token),
        )
        .await;
    assert_problem(status, &body, 422);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM products")
        .fetch_one(&app.ctx.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
    // Without a token nothing is even parsed.
    let (status, body) = app
        .post(
            "/v1/products",
            &json!({"domain": "a.example", "name": "x"}),
            None,
        )
        .await;
    assert_problem(status, &body, 401);
}
