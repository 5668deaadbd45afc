use alloy::primitives::{Address, U256};
use serde_json::{Value, json};

use crate::common::{TestApp, assert_problem};
use crate::interactions::create_product;

const TOKEN: &str = "0x7070707070707070707070707070707070707070";
const TEN_UNITS: &str = "10000000000000000000";

pub fn wallet(n: u64) -> Address {
    let mut bytes = [0u8; 20];
    bytes[0] = 0x5a;
    bytes[12..].copy_from_slice(&n.to_be_bytes());
    Address::from(bytes)
}

pub fn owner(app: &TestApp) -> String {
    app.token(Address::repeat_byte(0xee))
}

/// A product with a bank for TOKEN; returns its id.
pub async fn product_with_bank(app: &TestApp, domain: &str) -> String {
    let product = create_product(app, domain).await;
    let (status, body) = app
        .post(
            &format!("/v1/products/{product}/banks"),
            &json!({"chain_id": 31337, "bank_address": format!("0x{}", "ba".repeat(20)),
                    "token": TOKEN, "symbol": "RWD", "decimals": 18}),
            Some(&owner(app)),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    product
}

/// Creates and activates a campaign; returns its id.
pub async fn campaign(app: &TestApp, product: &str, extra: Value) -> i64 {
    let mut body = json!({"name": "C", "trigger": "purchase.completed", "token": TOKEN,
        "reward": {"type": "fixed", "amount": TEN_UNITS}});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, created) = app
        .post(
            &format!("/v1/products/{product}/campaigns"),
            &body,
            Some(&owner(app)),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "draft");
    let id = created["id"].as_i64().unwrap();
    switch(app, id, "activate").await;
    id
}

/// Posts `action` (pause, activate, …) on the campaign; it must succeed.
pub async fn switch(app: &TestApp, id: i64, action: &str) {
    let (status, body) = app
        .post(
            &format!("/v1/campaigns/{id}/{action}"),
            &Value::Null,
            Some(&owner(app)),
        )
        .await;
    assert_eq!(status, 200, "{action}: {body}");
}

pub async fn refer(app: &TestApp, product: &str, who: Address, referrer: Address) {
    let (status, body) = app
        .post(
            "/v1/interactions",
            &json!({"product_id": product, "type": "referral.referred", "referrer": format!("{referrer:#x}")}),
            Some(&app.token(who)),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["referral"], "registered", "{body}");
}

static ORDER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub async fn purchase(app: &TestApp, product: &str, who: Address) -> Value {
    let order = ORDER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (status, body) = app
        .post(
            "/v1/interactions",
            &json!({"product_id": product, "type": "purchase.completed", "data": {"order_id": format!("o{order}")}}),
            Some(&app.token(who)),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    body
}

fn paid(body: &Value) -> Vec<(String, String)> {
    body["rewards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["recipient_type"].as_str().unwrap().to_owned(),
                r["amount"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_design_example_end_to_end() {
    let app = TestApp::spawn().await;
    let product = product_with_bank(&app, "design.example").await;
    let id = campaign(&app, &product, json!({})).await;
    let (user, r1, r2, r3) = (wallet(1), wallet(2), wallet(3), wallet(4));
    refer(&app, &product, r2, r3).await;
    refer(&app, &product, r1, r2).await;
    refer(&app, &product, user, r1).await;
    let body = purchase(&app, &product, user).await;
    assert_eq!(
        paid(&body),
        vec![
            ("user".into(), "5000000000000000000".into()),
            ("referrer_l1".into(), "4000000000000000000".into()),
            ("referrer_l2".into(), "800000000000000000".into()),
            ("referrer_l3".into(), "200000000000000000".into()),
        ]
    );
    assert_eq!(body["rewards"][1]["recipient"], format!("{r1:#x}"));
    assert_eq!(body["rewards"][0]["token"], TOKEN);

    // Stored with the interaction, budget and counter charged in the same commit.
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT recipient_type, amount::text, status FROM rewards WHERE campaign_id = $1 ORDER BY amount DESC",
    )
    .bind(id)
    .fetch_all(&app.ctx.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r.2 == "pending"));
    let (status, stats) = app
        .get(&format!("/v1/campaigns/{id}/stats"), Some(&owner(&app)))
        .await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["interactions_matched"], 1);
    assert_eq!(stats["distinct_rewarded_wallets"], 4);
    assert_eq!(stats["budget"]["used"], TEN_UNITS);

    // A duplicate of the purchase earns nothing more.
    let (_, again) = app
        .post("/v1/interactions", &json!({"product_id": product, "type": "purchase.completed",
            "data": {"order_id": format!("o{}", ORDER.load(std::sync::atomic::Ordering::Relaxed) - 1)}}), Some(&app.token(user)))
        .await;
    assert_eq!(again["status"], "duplicate");
    let (_, stats) = app
        .get(&format!("/v1/campaigns/{id}/stats"), Some(&owner(&app)))
        .await;
    assert_eq!(stats["budget"]["used"], TEN_UNITS);
}

#[tokio::test]
async fn referral_requirement_per_user_cap_depth_and_isolation() {
    let app = TestApp::spawn().await;
    let a = product_with_bank(&app, "rules-a.example").await;
    let b = product_with_bank(&app, "rules-b.example").await;
    campaign(
        &app,
        &a,
        json!({"requires_referral": true, "max_rewards_per_user": 2, "max_depth": 1}),
    )
    .await;
    campaign(&app, &b, json!({"requires_referral": true})).await;
    let (user, r1, r2) = (wallet(10), wallet(11), wallet(12));
    // Not referred yet: nothing.
    assert!(paid(&purchase(&app, &a, user).await).is_empty());
    refer(&app, &a, r1, r2).await;
    refer(&app, &a, user, r1).await;
    // Depth 1: the level-1 referrer takes everything after the user's share.
    let first = paid(&purchase(&app, &a, user).await);
    assert_eq!(
        first,
        vec![
            ("user".into(), "5000000000000000000".into()),
            ("referrer_l1".into(), "5000000000000000000".into())
        ]
    );
    assert_eq!(paid(&purchase(&app, &a, user).await).len(), 2);
    // Cap of 2 reached.
    assert!(paid(&purchase(&app, &a, user).await).is_empty());
    // Product B knows nothing of A's referrals.
    assert!(paid(&purchase(&app, &b, user).await).is_empty());
}

/// SPEC §4's rules apply per interaction, in order: in a batch, what a wallet did
/// before its referral earns its referrer nothing; what it did after does.
#[tokio::test]
async fn a_referral_in_a_batch_counts_from_its_place_on() {
    let app = TestApp::spawn().await;
    let product = product_with_bank(&app, "batch-order.example").await;
    campaign(&app, &product, json!({"trigger": "webshop.open"})).await;
    let (user, referrer) = (wallet(30), wallet(31));
    let open =
        |page: &str| json!({"product_id": product, "type": "webshop.open", "data": {"page": page}});
    let batch = json!({"interactions": [
        open("/before"),
        {"product_id": product, "type": "referral.referred", "referrer": format!("{referrer:#x}")},
        open("/after"),
    ]});
    let (status, body) = app
        .post("/v1/interactions", &batch, Some(&app.token(user)))
        .await;
    assert_eq!(status, 202, "{body}");
    let items = body["interactions"].as_array().unwrap();
    assert_eq!(items[1]["referral"], "registered", "{body}");
    assert_eq!(
        paid(&items[0]),
        vec![("user".into(), "5000000000000000000".into())],
        "{body}"
    );
    assert_eq!(
        paid(&items[2]),
        vec![
            ("user".into(), "5000000000000000000".into()),
            ("referrer_l1".into(), "5000000000000000000".into())
        ],
        "{body}"
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM rewards WHERE wallet = $1")
        .bind(referrer.as_slice())
        .fetch_one(&app.ctx.pool)
        .await
        .unwrap();
    assert_eq!(stored, 1);
}

#[tokio::test]
async fn pause_and_activate_take_effect_for_the_next_interaction() {
    let app = TestApp::spawn().await;
    let product = product_with_bank(&app, "pause.example").await;
    let id = campaign(&app, &product, json!({})).await;
    assert_eq!(paid(&purchase(&app, &product, wallet(20)).await).len(), 1);
    let (status, body) = app
        .post(
            &format!("/v1/campaigns/{id}/pause"),
            &Value::Null,
            Some(&owner(&app)),
        )
        .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("paused")));
    assert!(paid(&purchase(&app, &product, wallet(20)).await).is_empty());
    app.post(
        &format!("/v1/campaigns/{id}/activate"),
        &Value::Null,
        Some(&owner(&app)),
    )
    .await;
    // A PATCH applies at once too.
    let response = app
        .client
        .patch(app.url(&format!("/v1/campaigns/{id}")))
        .bearer_auth(owner(&app))
        .json(&json!({"user_bps": 10000}))
        .send()
        .await
        .unwrap();
    let (status, body) = crate::common::read(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_bps"], 10000);
    assert_eq!(
        paid(&purchase(&app, &product, wallet(20)).await),
        vec![("user".into(), TEN_UNITS.into())]
    );
    // Deactivation is terminal.
    app.post(
        &format!("/v1/campaigns/{id}/deactivate"),
        &Value::Null,
        Some(&owner(&app)),
    )
    .await;
    assert!(paid(&purchase(&app, &product, wallet(20)).await).is_empty());
    let (status, body) = app
        .post(
            &format!("/v1/campaigns/{id}/activate"),
            &Value::Null,
            Some(&owner(&app)),
        )
        .await;
    assert_problem(status, &body, 409);
}

#[tokio::test]
async fn a_capped_budget_is_never_overspent_under_concurrency() {
    let app = TestApp::spawn().await;
    let product = product_with_bank(&app, "budget.example").await;
    // Each reward pays the whole base to the (unreferred) user: the cap fits exactly 7.
    let cap = "70000000000000000000";
    let id = campaign(
        &app,
        &product,
        json!({"user_bps": 10000, "budget_cap": cap}),
    )
    .await;
    let requests: Vec<_> = (0..20)
        .map(|i| {
            let (client, url, token) = (app.client.clone(), app.url("/v1/interactions"), app.token(wallet(100 + i)));
            let body = json!({"product_id": product, "type": "purchase.completed", "data": {"order_id": format!("b{i}")}});
            tokio::spawn(async move { client.post(url).bearer_auth(token).json(&body).send().await.unwrap().json::<Value>().await.unwrap() })
        })
        .collect();
    let mut rewarded = 0;
    for request in requests {
        let body = request.await.unwrap();
        assert_eq!(body["status"], "accepted", "{body}");
        rewarded += body["rewards"].as_array().unwrap().len();
    }
    assert_eq!(rewarded, 7);
    let (status, campaign) = app
        .get(&format!("/v1/campaigns/{id}"), Some(&owner(&app)))
        .await;
    assert_eq!(status, 200);
    assert_eq!(campaign["used_budget"], cap);
    assert_eq!(campaign["remaining_budget"], "0");
    assert_eq!(campaign["status"], "budget_exhausted");
    let sum: String =
        sqlx::query_scalar("SELECT sum(amount)::text FROM rewards WHERE campaign_id = $1")
            .bind(id)
            .fetch_one(&app.ctx.pool)
            .await
            .unwrap();
    assert_eq!(sum, cap);
}

#[tokio::test]
async fn a_row_the_database_refuses_earns_nothing() {
    let app = TestApp::spawn().await;
    let product = product_with_bank(&app, "refused.example").await;
    let cap = "50000000000000000000";
    let id = campaign(
        &app,
        &product,
        json!({"user_bps": 10000, "budget_cap": cap, "max_rewards_per_user": 3}),
    )
    .await;
    // An interaction holding the idempotency key, stored behind the product
    // actor's back: its memory does not know the key, the unique index does.
    let holder = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO interactions (id, product_id, wallet, type, idempotency_key, source)
         VALUES ($1, decode($2, 'hex'), $3, 'webshop.open', 'held-key', 'api')",
    )
    .bind(holder)
    .bind(product.trim_start_matches("0x"))
    .bind(wallet(60).as_slice())
    .execute(&app.ctx.pool)
    .await
    .unwrap();
    let body = json!({"interactions": [
        {"product_id": product, "type": "purchase.completed", "idempotency_key": "held-key",
         "data": {"order_id": "refused-1"}},
        {"product_id": product, "type": "purchase.completed", "data": {"order_id": "kept-1"}},
    ]});
    let (status, answer) = app
        .post("/v1/interactions", &body, Some(&app.token(wallet(61))))
        .await;
    assert_eq!(status, 202, "{answer}");
    let refused = &answer["interactions"][0];
    assert_eq!(refused["status"], "duplicate", "{answer}");
    assert_eq!(refused["id"], holder.to_string());
    assert_eq!(answer["interactions"][1]["status"], "accepted", "{answer}");

    // Only the stored purchase's reward, budget charge and count.
    let rows: Vec<(String, uuid::Uuid)> =
        sqlx::query_as("SELECT amount::text, interaction_id FROM rewards WHERE campaign_id = $1")
            .bind(id)
            .fetch_all(&app.ctx.pool)
            .await
            .unwrap();
    let kept: uuid::Uuid = answer["interactions"][1]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(rows, vec![(TEN_UNITS.to_owned(), kept)]);
    let (used, counted): (String, i32) = sqlx::query_as(
        "SELECT c.used_budget::text, (SELECT reward_count FROM campaign_user_rewards
             WHERE campaign_id = c.id AND wallet = $2)
         FROM campaigns c WHERE c.id = $1",
    )
    .bind(id)
    .bind(wallet(61).as_slice())
    .fetch_one(&app.ctx.pool)
    .await
    .unwrap();
    assert_eq!(used, TEN_UNITS);
    assert_eq!(counted, 1);
}

#[tokio::test]
async fn schedules_validation_roles_and_the_estimate() {
    let app = TestApp::spawn().await;
    let product = product_with_bank(&app, "sched.example").await;
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    campaign(&app, &product, json!({"starts_at": future})).await;
    assert!(
        paid(&purchase(&app, &product, wallet(30)).await).is_empty(),
        "not started yet"
    );

    // An ended campaign cannot be activated.
    let (_, created) = app
        .post(
            &format!("/v1/products/{product}/campaigns"),
            &json!({"name": "Old", "trigger": "purchase.completed", "token": TOKEN,
                    "reward": {"type": "fixed", "amount": "1"}, "ends_at": past}),
            Some(&owner(&app)),
        )
        .await;
    let (status, body) = app
        .post(
            &format!("/v1/campaigns/{}/activate", created["id"]),
            &Value::Null,
            Some(&owner(&app)),
        )
        .await;
    assert_problem(status, &body, 409);
    // A draft cannot be paused.
    let (status, body) = app
        .post(
            &format!("/v1/campaigns/{}/pause", created["id"]),
            &Value::Null,
            Some(&owner(&app)),
        )
        .await;
    assert_problem(status, &body, 409);

    // A token without a bank; bad bps.
    let (status, body) = app
        .post(&format!("/v1/products/{product}/campaigns"),
            &json!({"name": "X", "trigger": "webshop.open", "token": format!("0x{}", "11".repeat(20)),
                    "reward": {"type": "fixed", "amount": "1"}}), Some(&owner(&app)))
        .await;
    assert_problem(status, &body, 422);
    assert_eq!(body["errors"][0]["field"], "token");
    let (status, body) = app
        .post(
            &format!("/v1/products/{product}/campaigns"),
            &json!({"name": "X", "trigger": "webshop.open", "token": TOKEN, "user_bps": 12000,
                    "reward": {"type": "fixed", "amount": "1"}}),
            Some(&owner(&app)),
        )
        .await;
    assert_problem(status, &body, 422);
    assert_eq!(body["errors"][0]["field"], "user_bps");

    // Someone without a role on the product.
    let stranger = app.token(wallet(999));
    let (status, body) = app
        .post(&format!("/v1/products/{product}/campaigns"),
            &json!({"name": "X", "trigger": "webshop.open", "token": TOKEN, "reward": {"type": "fixed", "amount": "1"}}),
            Some(&stranger))
        .await;
    assert_problem(status, &body, 403);
    let (status, body) = app
        .get(&format!("/v1/campaigns/{}", created["id"]), Some(&stranger))
        .await;
    assert_problem(status, &body, 403);

    // The public estimate: a live referral-only campaign.
    campaign(
        &app,
        &product,
        json!({"trigger": "webshop.open", "requires_referral": true,
        "reward": {"type": "range", "min": "100", "max": "1000", "beta_bps": 10000}}),
    )
    .await;
    let (status, estimate) = app
        .get(
            &format!("/v1/products/{product}/estimate?type=webshop.open"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{estimate}");
    assert_eq!(
        estimate["campaigns"][0]["referred"],
        json!({"min": "50", "max": "500"})
    );
    assert_eq!(estimate["campaigns"][0]["non_referred"], Value::Null);
    let (status, body) = app
        .get(&format!("/v1/products/{product}/estimate?type=nope"), None)
        .await;
    assert_problem(status, &body, 422);
}

#[tokio::test]
async fn an_ended_campaign_stops_paying_and_becomes_expired() {
    let app = TestApp::spawn_with(|s| s.supervisor.maintenance_interval_ms = 20).await;
    let product = product_with_bank(&app, "expire.example").await;
    let id = campaign(&app, &product, json!({})).await;
    assert_eq!(paid(&purchase(&app, &product, wallet(40)).await).len(), 1);
    // Move its end into the past (as time would), through the API.
    let past = (chrono::Utc::now() - chrono::Duration::seconds(1)).to_rfc3339();
    let response = app
        .client
        .patch(app.url(&format!("/v1/campaigns/{id}")))
        .bearer_auth(owner(&app))
        .json(&json!({"starts_at": null, "ends_at": past}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(paid(&purchase(&app, &product, wallet(40)).await).is_empty());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, body) = app
            .get(&format!("/v1/campaigns/{id}"), Some(&owner(&app)))
            .await;
        if body["status"] == "expired" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never expired: {body}"
        );
        tokio::task::yield_now().await;
    }
}

/// What a PATCH may not do to a live campaign, and what it does at once.
#[tokio::test]
async fn a_live_campaign_keeps_its_token_and_a_lower_cap_exhausts_it_at_once() {
    let app = TestApp::spawn().await;
    let product = product_with_bank(&app, "patch.example").await;
    let other_token = format!("0x{}", "71".repeat(20));
    let (status, body) = app
        .post(
            &format!("/v1/products/{product}/banks"),
            &json!({"chain_id": 31337, "bank_address": format!("0x{}", "bb".repeat(20)),
                    "token": other_token, "symbol": "OTH", "decimals": 18}),
            Some(&owner(&app)),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let owner = owner(&app);

    // A draft may still move to another bank; an activated campaign may not.
    let (status, draft) = app
        .post(
            &format!("/v1/products/{product}/campaigns"),
            &json!({"name": "D", "trigger": "webshop.open", "token": TOKEN,
                    "reward": {"type": "fixed", "amount": "1"}}),
            Some(&owner),
        )
        .await;
    assert_eq!(status, 201, "{draft}");
    let (status, body) = app
        .patch_json(
            &format!("/v1/campaigns/{}", draft["id"]),
            &json!({"token": other_token}),
            &owner,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token"], other_token);
    let capped = campaign(
        &app,
        &product,
        json!({"budget_cap": "100", "reward": {"type": "fixed", "amount": "10"}}),
    )
    .await;
    let (status, body) = app
        .patch_json(
            &format!("/v1/campaigns/{capped}"),
            &json!({"token": other_token}),
            &owner,
        )
        .await;
    assert_problem(status, &body, 409);

    // 10 per non-referred purchase is 5 to the user; after one, 5 of 100 are used.
    assert_eq!(paid(&purchase(&app, &product, wallet(70)).await).len(), 1);
    // A cap of 9 leaves 4: less than the smallest reward (5).
    let (status, body) = app
        .patch_json(
            &format!("/v1/campaigns/{capped}"),
            &json!({"budget_cap": "9"}),
            &owner,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "budget_exhausted", "{body}");
    assert!(paid(&purchase(&app, &product, wallet(71)).await).is_empty());

    // Values the formula or the database cannot hold are refused, not a 500.
    for (field, value) in [
        ("max_rewards_per_user", json!(3_000_000_000u64)),
        (
            "reward",
            json!({"type": "range", "min": "1", "max": "2", "beta_bps": 3_000_000_000u64}),
        ),
        (
            "reward",
            json!({"type": "fixed", "amount": format!("2{}", "0".repeat(73))}),
        ),
    ] {
        let mut body = json!({"name": "Big", "trigger": "webshop.open", "token": TOKEN,
            "reward": {"type": "fixed", "amount": "1"}});
        body[field] = value;
        let (status, answer) = app
            .post(
                &format!("/v1/products/{product}/campaigns"),
                &body,
                Some(&owner),
            )
            .await;
        assert_problem(status, &answer, 422);
    }
}

/// A per-user cap added to a campaign that paid without one counts what each
/// wallet already earned there, also after the product actor restarts.
#[tokio::test]
async fn a_per_user_cap_added_later_counts_the_rewards_already_paid() {
    let app = TestApp::spawn_with(|s| s.supervisor.restart_backoff_initial_ms = 1).await;
    let product = product_with_bank(&app, "later-cap.example").await;
    let id = campaign(&app, &product, json!({})).await;
    let (frequent, once) = (wallet(80), wallet(81));
    for _ in 0..2 {
        assert_eq!(paid(&purchase(&app, &product, frequent).await).len(), 1);
    }
    assert_eq!(paid(&purchase(&app, &product, once).await).len(), 1);

    let (status, body) = app
        .patch_json(
            &format!("/v1/campaigns/{id}"),
            &json!({"max_rewards_per_user": 2}),
            &owner(&app),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        paid(&purchase(&app, &product, frequent).await).is_empty(),
        "two already paid"
    );
    assert_eq!(paid(&purchase(&app, &product, once).await).len(), 1);

    // The counts are in the database: a restarted actor keeps them.
    app.crash_product_actor(&product);
    let after_restart = app
        .until_served(202, || {
            let order = ORDER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let body = json!({"product_id": product, "type": "purchase.completed",
                              "data": {"order_id": format!("o{order}")}});
            let (app, token) = (&app, app.token(once));
            async move { app.post("/v1/interactions", &body, Some(&token)).await }
        })
        .await;
    assert!(paid(&after_restart).is_empty(), "{after_restart}");
}

/// The public estimate says what would be paid now: a referred purchase needs the
/// whole reward to fit the budget left, and a deactivated product pays nothing.
#[tokio::test]
async fn the_estimate_follows_the_budget_left_and_the_product() {
    let app = TestApp::spawn().await;
    let product = product_with_bank(&app, "estimate.example").await;
    campaign(
        &app,
        &product,
        json!({"budget_cap": "14", "reward": {"type": "fixed", "amount": "10"}}),
    )
    .await;
    let estimate = || async {
        let (status, body) = app
            .get(
                &format!("/v1/products/{product}/estimate?type=purchase.completed"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["campaigns"].clone()
    };
    let five = json!({"min": "5", "max": "5"});
    let now = estimate().await;
    assert_eq!(
        (&now[0]["referred"], &now[0]["non_referred"]),
        (&five, &five)
    );
    // A plain purchase uses 5: 9 left fits a plain one (5), not a referred one (10).
    assert_eq!(paid(&purchase(&app, &product, wallet(90)).await).len(), 1);
    let now = estimate().await;
    assert_eq!(now[0]["referred"], Value::Null, "{now}");
    assert_eq!(now[0]["non_referred"], five, "{now}");

    crate::interactions::deactivate_product(&app, &product).await;
    assert_eq!(estimate().await, json!([]));
}

/// SPEC §5's finer rules through HTTP: no row for a zero share, `available_at`
/// from `lockup_seconds`, a range draw that recomputes to what was stored, and a
/// budget that fits a user's share alone but not a referred set pays nothing.
#[tokio::test]
async fn zero_shares_lockup_range_draws_and_the_all_or_nothing_fit() {
    let app = TestApp::spawn().await;
    let product = product_with_bank(&app, "finer.example").await;
    let (buyer, referrer) = (wallet(120), wallet(121));
    refer(&app, &product, buyer, referrer).await;
    let open = |who: Address, kind: &'static str| {
        let (app, product) = (&app, &product);
        async move {
            let (status, body) = app
                .post(
                    "/v1/interactions",
                    &json!({"product_id": product, "type": kind, "data": {"n": ORDER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)}}),
                    Some(&app.token(who)),
                )
                .await;
            assert_eq!(status, 202, "{body}");
            body
        }
    };

    // A base of 1: the user's half floors to 0 and gets no row; the referrer the 1.
    campaign(
        &app,
        &product,
        json!({"trigger": "webshop.open", "reward": {"type": "fixed", "amount": "1"},
               "lockup_seconds": 3600}),
    )
    .await;
    let body = open(buyer, "webshop.open").await;
    assert_eq!(paid(&body), vec![("referrer_l1".into(), "1".into())]);
    let lockup: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM available_at - created_at)::float8 FROM rewards
         WHERE interaction_id = $1::text::uuid",
    )
    .bind(body["id"].as_str().unwrap())
    .fetch_one(&app.ctx.pool)
    .await
    .unwrap();
    assert_eq!(lockup, 3600.0);

    // A range draw is a function of the campaign and the interaction.
    let range = campaign(
        &app,
        &product,
        json!({"trigger": "press.open_article",
               "reward": {"type": "range", "min": "100", "max": "1000", "beta_bps": 20000}}),
    )
    .await;
    let rule = rewardflow::db::campaigns::get(&app.ctx.pool, range)
        .await
        .unwrap()
        .and_then(|row| row.rule())
        .unwrap();
    for _ in 0..5 {
        let body = open(wallet(122), "press.open_article").await;
        let id: uuid::Uuid = body["id"].as_str().unwrap().parse().unwrap();
        let base = rule.base_amount(id);
        assert!(base >= U256::from(100u32) && base <= U256::from(1000u32));
        let user = rewardflow::domain::campaign::split(base, 5_000, 8_000, 0)[0];
        assert_eq!(paid(&body), vec![("user".into(), user.to_string())]);
    }

    // 14 of budget: a plain purchase takes 5 and leaves 9, which fits another
    // plain one (5) but not a referred one (10): that one is paid nothing at all.
    let capped = campaign(
        &app,
        &product,
        json!({"budget_cap": "14", "reward": {"type": "fixed", "amount": "10"}}),
    )
    .await;
    assert_eq!(paid(&purchase(&app, &product, wallet(123)).await).len(), 1);
    assert!(paid(&purchase(&app, &product, buyer).await).is_empty());
    assert_eq!(paid(&purchase(&app, &product, wallet(124)).await).len(), 1);
    let (_, view) = app
        .get(&format!("/v1/campaigns/{capped}"), Some(&owner(&app)))
        .await;
    assert_eq!(view["used_budget"], "10", "{view}");
}

#[tokio::test]
async fn a_referral_whose_actor_died_before_its_write_failed_pays_nobody() {
    // (Retries while the actor restarts are not rate limited.)
    let app = TestApp::spawn_with(|s| s.rate_limit.per_wallet_per_hour = 0).await;
    let product = product_with_bank(&app, "ghost-edge.example").await;
    campaign(&app, &product, json!({})).await;
    // The product's actor runs and its referral edges are cached.
    purchase(&app, &product, wallet(60)).await;
    let (buyer, referrer) = (wallet(61), wallet(62));
    let referral = json!({"product_id": product, "type": "referral.referred",
        "referrer": format!("{referrer:#x}")});

    // The referral is decided and its write waits; the actor dies; the write fails.
    let mut blocker = app.ctx.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE interactions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let token = app.token(buyer);
    let sent = app.post("/v1/interactions", &referral, Some(&token));
    let fail_it = async {
        let writer = crate::interactions::wait_for_blocked_insert(&app).await;
        app.crash_product_actor(&product);
        crate::interactions::kill_writer(blocker, writer).await;
    };
    let ((status, body), ()) = tokio::join!(sent, fail_it);
    assert_eq!(status, 503, "{body}");

    // Nothing stored it: the buyer's purchase pays the buyer alone, and the
    // referral sent again registers.
    let order = json!({"product_id": product, "type": "purchase.completed",
        "data": {"order_id": "after-the-ghost"}});
    let paid_now = app
        .until_served(202, || app.post("/v1/interactions", &order, Some(&token)))
        .await;
    let recipients: Vec<&str> = paid_now["rewards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["recipient_type"].as_str().unwrap())
        .collect();
    assert_eq!(recipients, ["user"], "{paid_now}");
    refer(&app, &product, buyer, referrer).await;
}

#[tokio::test]
async fn a_campaign_changed_while_it_is_deactivated_stays_deactivated() {
    let app = TestApp::spawn().await;
    let product = product_with_bank(&app, "late-change.example").await;
    let id = campaign(&app, &product, json!({})).await;
    // The product's actor runs and its referral edges are cached.
    purchase(&app, &product, wallet(70)).await;

    // A purchase's write is held: the deactivation waits for it, and a change of
    // the campaign's name is made meanwhile (read while it was still active).
    let mut blocker = app.ctx.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE interactions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let held = purchase(&app, &product, wallet(71));
    let deactivation = async {
        crate::interactions::wait_for_blocked_insert(&app).await;
        let (path, owner) = (format!("/v1/campaigns/{id}/deactivate"), owner(&app));
        let deactivated = app.post(&path, &Value::Null, Some(&owner));
        let rename = async {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while app.ctx.ingest.gate.settles_waiting() == 0 {
                assert!(std::time::Instant::now() < deadline, "never waited");
                tokio::task::yield_now().await;
            }
            let renamed = json!({"name": "Renamed"});
            let path = format!("/v1/campaigns/{id}");
            let (status, body) = app.patch_json(&path, &renamed, &owner).await;
            assert_eq!(status, 200, "{body}");
            blocker.commit().await.unwrap();
        };
        let ((status, body), ()) = tokio::join!(deactivated, rename);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "deactivated", "{body}");
    };
    let (paid, ()) = tokio::join!(held, deactivation);
    assert_eq!(paid["rewards"].as_array().unwrap().len(), 1, "{paid}");
    // Computed after: nothing.
    let after = purchase(&app, &product, wallet(72)).await;
    assert_eq!(after["rewards"], json!([]), "{after}");
}
