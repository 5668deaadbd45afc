//! Shop webhooks through HTTP: each platform's real header and encoding, every
//! way a signature can fail, redeliveries, secret rotation, and refunds before
//! and after the purchase and after the push.

use alloy::primitives::Address;
use rewardflow::domain::webhook::{Platform, sign};
use serde_json::{Value, json};

use crate::campaigns::{campaign, owner, product_with_bank, wallet};
use crate::common::{TestApp, assert_problem, read};

/// Sets the product's webhook; returns the secret the service answered with.
pub async fn configure(app: &TestApp, product: &str, body: Value) -> String {
    let response = app
        .client
        .put(app.url(&format!("/v1/products/{product}/webhook")))
        .bearer_auth(owner(app))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, reply) = read(response).await;
    assert_eq!(status, 200, "{reply}");
    reply["secret"].as_str().unwrap().to_owned()
}

/// Posts a raw body with the given headers to the product's webhook.
pub async fn deliver(
    app: &TestApp,
    product: &str,
    platform: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, Value) {
    let mut request = app
        .client
        .post(app.url(&format!("/v1/webhooks/{product}/{platform}")))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    read(request.send().await.unwrap()).await
}

/// A body signed the way `platform` signs it, with its topic header.
pub async fn deliver_signed(
    app: &TestApp,
    product: &str,
    platform: Platform,
    secret: &str,
    topic: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let raw = body.to_string();
    let mut headers = vec![(
        platform.signature_header(),
        sign(platform, secret.as_bytes(), raw.as_bytes()),
    )];
    if let (Some(name), Some(topic)) = (platform.topic_header(), topic) {
        headers.push((name, topic.to_owned()));
    }
    deliver(app, product, platform.as_str(), &headers, raw.as_bytes()).await
}

pub fn custom_order(id: &str, status: &str, buyer: Option<Address>) -> Value {
    let mut order = json!({"id": id, "status": status, "amount": "49.90", "currency": "EUR",
        "items": [{"sku": "TSHIRT-M", "quantity": 1}]});
    if let Some(buyer) = buyer {
        order["wallet"] = json!(format!("{buyer:#x}"));
    }
    order
}

/// A product's webhook endpoint, for deliveries whose answer is known.
struct Shop<'a> {
    app: &'a TestApp,
    product: &'a str,
}

impl Shop<'_> {
    /// Delivers a signed body and asserts a 200 with the given `status`.
    async fn expect(
        &self,
        platform: Platform,
        secret: &str,
        topic: Option<&str>,
        body: &Value,
        status: &str,
    ) -> Value {
        let (code, reply) =
            deliver_signed(self.app, self.product, platform, secret, topic, body).await;
        assert_eq!(
            (code, reply["status"].as_str()),
            (200, Some(status)),
            "{reply}"
        );
        reply
    }
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&app.ctx.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn each_platform_delivers_orders_that_earn_rewards() {
    let app = TestApp::spawn().await;
    let product = product_with_bank(&app, "hooks.example").await;
    campaign(&app, &product, json!({})).await;
    let buyer = wallet(7);

    // Shopify: base64 X-Shopify-Hmac-Sha256, the wallet in a note attribute.
    let secret = configure(&app, &product, json!({"platform": "shopify"})).await;
    assert_eq!(secret.len(), 64, "a generated secret");
    let shopify = json!({"id": 820982911946154508u64, "email": "jon@example.com",
        "financial_status": "paid", "total_price": "199.00", "currency": "USD",
        "cancelled_at": null, "line_items": [{"id": 466157049, "quantity": 1}],
        "note_attributes": [{"name": "wallet", "value": format!("{buyer:#x}")}]});
    let shop = Shop {
        app: &app,
        product: &product,
    };
    let body = shop
        .expect(
            Platform::Shopify,
            &secret,
            Some("orders/paid"),
            &shopify,
            "accepted",
        )
        .await;
    assert_eq!(body["rewards"][0]["recipient"], format!("{buyer:#x}"));
    assert_eq!(body["rewards"][0]["amount"], "5000000000000000000");
    let first = body["id"].clone();
    // Redelivered five times: one interaction, answered 200 each time.
    for _ in 0..5 {
        let body = shop
            .expect(
                Platform::Shopify,
                &secret,
                Some("orders/paid"),
                &shopify,
                "duplicate",
            )
            .await;
        assert_eq!(body["id"], first);
    }
    // A pending order and a non-order topic are acknowledged, not stored.
    let mut pending = shopify.clone();
    pending["id"] = json!(1);
    pending["financial_status"] = json!("pending");
    shop.expect(
        Platform::Shopify,
        &secret,
        Some("orders/create"),
        &pending,
        "ignored",
    )
    .await;

    // WooCommerce: its unsigned ping, then base64 X-WC-Webhook-Signature, wallet in meta_data.
    let secret = configure(
        &app,
        &product,
        json!({"platform": "woocommerce", "grace_period_secs": 0}),
    )
    .await;
    let (status, body) = deliver(&app, &product, "woocommerce", &[], b"webhook_id=17").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ping")));
    let woo = json!({"id": 727, "status": "processing", "currency": "EUR", "total": "29.35",
        "billing": {"email": "a@example.com"},
        "meta_data": [{"id": 13106, "key": "wallet", "value": format!("{buyer:#x}")}]});
    let body = shop
        .expect(
            Platform::Woocommerce,
            &secret,
            Some("order.updated"),
            &woo,
            "accepted",
        )
        .await;
    assert_eq!(body["rewards"].as_array().unwrap().len(), 1);
    // Its later "completed" update is the same purchase.
    let mut completed = woo.clone();
    completed["status"] = json!("completed");
    shop.expect(
        Platform::Woocommerce,
        &secret,
        Some("order.updated"),
        &completed,
        "duplicate",
    )
    .await;

    // Custom: X-Signature: sha256=<hex>; an order naming no wallet is stored, unrewarded.
    let secret = configure(
        &app,
        &product,
        json!({"platform": "custom", "secret": "my-own-secret-0123456789"}),
    )
    .await;
    assert_eq!(secret, "my-own-secret-0123456789");
    let paid = custom_order("C-1", "paid", Some(buyer));
    let body = shop
        .expect(Platform::Custom, &secret, None, &paid, "accepted")
        .await;
    assert_eq!(body["rewards"].as_array().map(Vec::len), Some(1), "{body}");
    let anonymous = custom_order("C-2", "paid", None);
    let body = shop
        .expect(Platform::Custom, &secret, None, &anonymous, "accepted")
        .await;
    assert_eq!(body["rewards"], json!([]));

    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM interactions WHERE source = 'webhook'"
        )
        .await,
        4
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM interactions WHERE source = 'webhook' AND wallet IS NULL"
        )
        .await,
        1
    );
    assert_eq!(count(&app, "SELECT count(*) FROM rewards").await, 3);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"rewardflow_webhooks_total{platform="shopify",outcome="duplicate"} 5"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn every_signature_failure_is_401_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let product = product_with_bank(&app, "badsig.example").await;
    campaign(&app, &product, json!({})).await;
    let order = custom_order("S-1", "paid", Some(wallet(1)));
    let raw = order.to_string();

    // Before any configuration, even a well-signed body is refused.
    let signature = sign(Platform::Custom, b"0123456789abcdef", raw.as_bytes());
    let (status, body) = deliver(
        &app,
        &product,
        "custom",
        &[("x-signature", signature)],
        raw.as_bytes(),
    )
    .await;
    assert_problem(status, &body, 401);

    let secret = configure(&app, &product, json!({"platform": "custom"})).await;
    let good = sign(Platform::Custom, secret.as_bytes(), raw.as_bytes());
    let mut flipped_body = raw.clone().into_bytes();
    flipped_body[10] ^= 0x01;
    let mut flipped_signature = good.clone().into_bytes();
    let last = flipped_signature.len() - 1;
    flipped_signature[last] = if flipped_signature[last] == b'0' {
        b'1'
    } else {
        b'0'
    };
    // The same order re-serialized (other spacing): the signature covers the raw bytes.
    let reserialized = serde_json::to_string_pretty(&order).unwrap();
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, Vec<u8>);
    let cases: Vec<Case> = vec![
        ("missing", vec![], raw.clone().into_bytes()),
        (
            "wrong secret",
            vec![(
                "x-signature",
                sign(Platform::Custom, b"not-the-secret-at-all", raw.as_bytes()),
            )],
            raw.clone().into_bytes(),
        ),
        (
            "flipped body bit",
            vec![("x-signature", good.clone())],
            flipped_body,
        ),
        (
            "flipped signature",
            vec![("x-signature", String::from_utf8(flipped_signature).unwrap())],
            raw.clone().into_bytes(),
        ),
        (
            "re-serialized body",
            vec![("x-signature", good.clone())],
            reserialized.into_bytes(),
        ),
        (
            "base64 in a hex header",
            vec![(
                "x-signature",
                sign(Platform::Shopify, secret.as_bytes(), raw.as_bytes()),
            )],
            raw.clone().into_bytes(),
        ),
    ];
    for (case, headers, body_bytes) in cases {
        let (status, body) = deliver(&app, &product, "custom", &headers, &body_bytes).await;
        assert_eq!(status, 401, "{case}: {body}");
        assert_problem(status, &body, 401);
    }
    // Another platform's route, signed the way that platform signs: not configured.
    let (status, body) = deliver(
        &app,
        &product,
        "shopify",
        &[(
            "x-shopify-hmac-sha256",
            sign(Platform::Shopify, secret.as_bytes(), raw.as_bytes()),
        )],
        raw.as_bytes(),
    )
    .await;
    assert_problem(status, &body, 401);
    assert_eq!(count(&app, "SELECT count(*) FROM interactions").await, 0);

    // Unknown platform and product: 404.
    let (status, body) = deliver(&app, &product, "magento", &[], raw.as_bytes()).await;
    assert_problem(status, &body, 404);
    let (status, body) = deliver(
        &app,
        &format!("0x{}", "ab".repeat(32)),
        "custom",
        &[],
        raw.as_bytes(),
    )
    .await;
    assert_problem(status, &body, 404);

    // The good signature still works, and a signed but invalid order is 422.
    let (status, body) = deliver(
        &app,
        &product,
        "custom",
        &[("x-signature", good)],
        raw.as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let bad =
        json!({"id": "S-2", "status": "shipped", "amount": "1", "currency": "EUR"}).to_string();
    let (status, body) = deliver(
        &app,
        &product,
        "custom",
        &[(
            "x-signature",
            sign(Platform::Custom, secret.as_bytes(), bad.as_bytes()),
        )],
        bad.as_bytes(),
    )
    .await;
    assert_problem(status, &body, 422);
    assert_eq!(body["errors"][0]["field"], "status");
    assert_eq!(count(&app, "SELECT count(*) FROM interactions").await, 1);
}

#[tokio::test]
async fn a_rotated_secret_keeps_working_for_its_grace_period_only() {
    let app = TestApp::spawn().await;
    let product = product_with_bank(&app, "rotate.example").await;
    let a = configure(&app, &product, json!({"platform": "custom"})).await;
    let response = app
        .client
        .put(app.url(&format!("/v1/products/{product}/webhook")))
        .bearer_auth(owner(&app))
        .json(&json!({"platform": "custom", "grace_period_secs": 3600}))
        .send()
        .await
        .unwrap();
    let (status, rotated) = read(response).await;
    assert_eq!(status, 200, "{rotated}");
    let b = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(a, b);
    assert!(
        rotated["previous_secret_valid_until"].is_string(),
        "{rotated}"
    );

    let mut n = 0;
    let mut try_secret = |secret: String| {
        n += 1;
        let order = custom_order(&format!("R-{n}"), "paid", Some(wallet(n)));
        let (app, product) = (&app, &product);
        async move {
            deliver_signed(app, product, Platform::Custom, &secret, None, &order)
                .await
                .0
        }
    };
    assert_eq!(
        try_secret(a.clone()).await,
        200,
        "the old secret in its grace period"
    );
    assert_eq!(try_secret(b.clone()).await, 200, "the new secret");

    // Rotating again without grace: only the newest secret works.
    let c = configure(
        &app,
        &product,
        json!({"platform": "custom", "grace_period_secs": 0}),
    )
    .await;
    assert_eq!(try_secret(a).await, 401);
    assert_eq!(try_secret(b).await, 401);
    assert_eq!(try_secret(c.clone()).await, 200);

    // The secret is never shown again; the product says only the platform.
    let (status, body) = app
        .get(&format!("/v1/products/{product}"), Some(&owner(&app)))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["webhook_platform"], "custom");
    assert!(!body.to_string().contains(&c));
    // Validation, and only owners and admins may set it.
    let response = app
        .client
        .put(app.url(&format!("/v1/products/{product}/webhook")))
        .bearer_auth(owner(&app))
        .json(&json!({"platform": "ftp", "secret": "short", "grace_period_secs": 99999999}))
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_problem(status, &body, 422);
    assert_eq!(body["errors"].as_array().unwrap().len(), 3, "{body}");
}

async fn used_budget(app: &TestApp, campaign: i64) -> String {
    let (_, body) = app
        .get(&format!("/v1/campaigns/{campaign}"), Some(&owner(app)))
        .await;
    body["used_budget"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn refunds_cancel_pending_rewards_and_give_back_budget_and_counters() {
    let app = TestApp::spawn_with(|s| s.supervisor.restart_backoff_initial_ms = 1).await;
    let product = product_with_bank(&app, "refunds.example").await;
    let id = campaign(
        &app,
        &product,
        json!({"budget_cap": "30000000000000000000", "max_rewards_per_user": 1}),
    )
    .await;
    let secret = configure(&app, &product, json!({"platform": "custom"})).await;
    let (referrer, buyer) = (wallet(100), wallet(101));
    crate::campaigns::refer(&app, &product, buyer, referrer).await;
    let send = |order: Value| {
        let (app, product, secret) = (&app, &product, &secret);
        async move { deliver_signed(app, product, Platform::Custom, secret, None, &order).await }
    };

    let (status, paid) = send(custom_order("P-1", "paid", Some(buyer))).await;
    assert_eq!(status, 200, "{paid}");
    assert_eq!(
        paid["rewards"].as_array().unwrap().len(),
        2,
        "user and referrer"
    );
    assert_eq!(used_budget(&app, id).await, "10000000000000000000");
    // The per-user cap of 1 is reached.
    let (_, capped) = send(custom_order("P-2", "paid", Some(buyer))).await;
    assert_eq!(capped["rewards"], json!([]), "{capped}");

    // The refund cancels both rewards and gives back the budget and the count.
    let (status, refund) = send(custom_order("P-1", "refunded", Some(buyer))).await;
    assert_eq!(status, 200, "{refund}");
    assert_eq!(refund["refund"]["purchase_id"], paid["id"]);
    assert_eq!(refund["refund"]["cancelled_rewards"], 2);
    assert_eq!(refund["refund"]["kept_rewards"], 0);
    assert_eq!(used_budget(&app, id).await, "0");
    assert_eq!(
        count(&app, "SELECT count(*) FROM rewards WHERE status = 'cancelled' AND cancel_reason LIKE 'order refunded%'").await,
        2
    );
    assert_eq!(
        count(
            &app,
            "SELECT coalesce(sum(reward_count), 0) FROM campaign_user_rewards"
        )
        .await,
        0
    );
    // A cancellation of the same order is the same refund: a no-op.
    let (status, again) = send(custom_order("P-1", "cancelled", Some(buyer))).await;
    assert_eq!((status, again["status"].as_str()), (200, Some("duplicate")));
    // The buyer can be rewarded again, at once (the hot state was given back too).
    let (_, third) = send(custom_order("P-3", "paid", Some(buyer))).await;
    assert_eq!(third["rewards"].as_array().unwrap().len(), 2, "{third}");

    // A refund before its purchase is remembered, also across an actor restart.
    let (status, early) = send(custom_order("P-4", "refunded", Some(wallet(102)))).await;
    assert_eq!(status, 200, "{early}");
    assert_eq!(early["refund"]["purchase_id"], Value::Null);
    app.crash_product_actor(&product);
    let late = app
        .until_served(200, || send(custom_order("P-4", "paid", Some(wallet(102)))))
        .await;
    assert_eq!(late["status"], "accepted", "{late}");
    assert_eq!(late["rewards"], json!([]), "a refunded order earns nothing");
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM interactions WHERE data->>'refunded_before_purchase' = 'true'"
        )
        .await,
        1
    );
    assert_eq!(used_budget(&app, id).await, "10000000000000000000");
}

/// A deactivated product earns nothing more, but a refund of one of its orders
/// still cancels that order's pending rewards (they would be pushed otherwise).
#[tokio::test]
async fn a_deactivated_product_still_takes_refunds_and_nothing_else() {
    let app = TestApp::spawn().await;
    let product = product_with_bank(&app, "closed.example").await;
    campaign(&app, &product, json!({})).await;
    let secret = configure(&app, &product, json!({"platform": "custom"})).await;
    let buyer = wallet(110);
    let send = |order: Value| {
        let (app, product, secret) = (&app, &product, &secret);
        async move { deliver_signed(app, product, Platform::Custom, secret, None, &order).await }
    };
    let (status, paid) = send(custom_order("C-1", "paid", Some(buyer))).await;
    assert_eq!(status, 200, "{paid}");
    assert_eq!(paid["rewards"].as_array().unwrap().len(), 1, "{paid}");
    crate::interactions::deactivate_product(&app, &product).await;

    // Not stored, not refused: a platform disables a webhook that keeps failing.
    let (status, body) = send(custom_order("C-2", "paid", Some(buyer))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ignored", "{body}");
    let stored = |order: &str| {
        format!("SELECT count(*) FROM interactions WHERE data->>'order_id' = '{order}'")
    };
    assert_eq!(count(&app, &stored("C-1")).await, 1);
    assert_eq!(count(&app, &stored("C-2")).await, 0);
    let (status, refund) = send(custom_order("C-1", "refunded", Some(buyer))).await;
    assert_eq!(status, 200, "{refund}");
    assert_eq!(refund["refund"]["cancelled_rewards"], 1, "{refund}");
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM rewards WHERE status = 'pending'"
        )
        .await,
        0
    );
}

/// A refund that was not stored (its write failed) leaves nothing behind: the
/// order's purchase arriving afterwards earns as usual.
#[tokio::test]
async fn a_refund_that_was_not_stored_does_not_mark_its_order() {
    let app = TestApp::spawn().await;
    let product = product_with_bank(&app, "lost-refund.example").await;
    campaign(&app, &product, json!({})).await;
    let secret = configure(&app, &product, json!({"platform": "custom"})).await;
    let buyer = wallet(120);
    // Warm the product actor and the writer up.
    let (status, _) = deliver_signed(
        &app,
        &product,
        Platform::Custom,
        &secret,
        None,
        &custom_order("W-0", "paid", Some(buyer)),
    )
    .await;
    assert_eq!(status, 200);

    // The writer's connection dies while the refund's insert waits on a lock.
    let refunded = custom_order("F-1", "refunded", Some(buyer));
    let refund = deliver_signed(&app, &product, Platform::Custom, &secret, None, &refunded);
    let (status, body) = crate::interactions::with_its_write_killed(&app, refund).await;
    assert_eq!(status, 503, "{body}");

    let order = custom_order("F-1", "paid", Some(buyer));
    let paid = app
        .until_served(200, || {
            deliver_signed(&app, &product, Platform::Custom, &secret, None, &order)
        })
        .await;
    assert_eq!(paid["status"], "accepted", "{paid}");
    assert_eq!(paid["rewards"].as_array().unwrap().len(), 1, "{paid}");

    // A refund that is stored, delivered again once its key has left the dedup
    // cache, whose second write fails: the order stays refunded.
    let refunded = custom_order("F-2", "refunded", Some(buyer));
    let (status, body) =
        deliver_signed(&app, &product, Platform::Custom, &secret, None, &refunded).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("accepted")),
        "{body}"
    );
    app.ctx.ingest.dedup.invalidate_all();
    let again = deliver_signed(&app, &product, Platform::Custom, &secret, None, &refunded);
    let (status, body) = crate::interactions::with_its_write_killed(&app, again).await;
    assert_eq!(status, 503, "{body}");
    let order = custom_order("F-2", "paid", Some(buyer));
    let paid = app
        .until_served(200, || {
            deliver_signed(&app, &product, Platform::Custom, &secret, None, &order)
        })
        .await;
    assert_eq!(paid["status"], "accepted", "{paid}");
    assert_eq!(paid["rewards"], json!([]), "{paid}");
}

#[tokio::test]
async fn a_webhook_set_while_its_product_starts_is_the_one_checked() {
    let app = TestApp::spawn().await;
    let product = product_with_bank(&app, "starting.example").await;
    // The product's actor starts (a first SDK request) and waits in its start,
    // after reading the product, while the webhook is set.
    let mut blocker = app.ctx.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE interactions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let first = json!({"product_id": product, "type": "webshop.open", "data": {"page": "/"}});
    let token = app.token(wallet(130));
    let starting = app.post("/v1/interactions", &first, Some(&token));
    let set_webhook = async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                   AND wait_event_type = 'Lock' AND query LIKE '%FROM interactions%'",
            )
            .fetch_one(&app.ctx.pool)
            .await
            .unwrap();
            if waiting > 0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the start never read");
            tokio::task::yield_now().await;
        }
        let secret = configure(&app, &product, json!({"platform": "custom"})).await;
        blocker.commit().await.unwrap();
        secret
    };
    let ((status, body), secret) = tokio::join!(starting, set_webhook);
    assert_eq!(status, 202, "{body}");
    let order = custom_order("S-1", "paid", Some(wallet(131)));
    let (status, body) =
        deliver_signed(&app, &product, Platform::Custom, &secret, None, &order).await;
    assert_eq!(status, 200, "{body}");
}
