use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use rewardflow::config::Settings;
use rewardflow::domain::ids::parse_bytes32;
use serde_json::{Value, json};

use crate::common::{TestApp, assert_problem, test_settings};

/// A product owned by a fixed wallet; returns its id.
pub async fn create_product(app: &TestApp, domain: &str) -> String {
    let owner = app.token(Address::repeat_byte(0xee));
    let (status, body) = app
        .post(
            "/v1/products",
            &json!({"domain": domain, "name": domain}),
            Some(&owner),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// Deactivates the product (owner's PATCH); it must succeed.
pub async fn deactivate_product(app: &TestApp, product: &str) {
    let response = app
        .client
        .patch(app.url(&format!("/v1/products/{product}")))
        .bearer_auth(app.token(Address::repeat_byte(0xee)))
        .json(&json!({"is_active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

fn wallet(n: u64) -> Address {
    let mut bytes = [0u8; 20];
    bytes[12..].copy_from_slice(&n.to_be_bytes());
    Address::from(bytes)
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&app.ctx.pool)
        .await
        .unwrap()
}

async fn send(app: &TestApp, who: Address, body: &Value) -> (u16, Value) {
    app.post("/v1/interactions", body, Some(&app.token(who)))
        .await
}

#[tokio::test]
async fn an_interaction_is_acknowledged_after_it_is_stored() {
    let app = TestApp::spawn().await;
    let product = create_product(&app, "shop.example").await;
    let (status, body) = send(
        &app,
        wallet(1),
        &json!({"product_id": product, "type": "webshop.open", "data": {"page": "/"},
                "analytics": {"session_id": "s-1"}}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "accepted");
    assert_eq!(body["rewards"], json!([]));
    let id: uuid::Uuid = body["id"].as_str().unwrap().parse().unwrap();
    let row: (Vec<u8>, String, Value, String, Option<String>) = sqlx::query_as(
        "SELECT wallet, type, data, host(source_ip), session_id FROM interactions WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&app.ctx.pool)
    .await
    .unwrap();
    assert_eq!(row.0, wallet(1).to_vec());
    assert_eq!(row.1, "webshop.open");
    assert_eq!(row.2, json!({"page": "/"}));
    assert_eq!(row.3, "127.0.0.1");
    assert_eq!(row.4.as_deref(), Some("s-1"));
}

#[tokio::test]
async fn a_batch_stores_the_valid_items_and_names_the_invalid_ones() {
    let app = TestApp::spawn().await;
    let product = create_product(&app, "batch.example").await;
    let unknown = format!("0x{}", "12".repeat(32));
    let (status, body) = send(
        &app,
        wallet(2),
        &json!({"interactions": [
            {"product_id": product, "type": "press.open_article", "data": {"a": 1}},
            {"product_id": product, "type": "page.view"},
            {"product_id": unknown, "type": "webshop.open"},
            {"product_id": product, "type": "purchase.completed", "data": {"order_id": "O-1"}},
        ]}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let items = body["interactions"].as_array().unwrap();
    assert_eq!(items[0]["status"], "accepted");
    assert_eq!(items[1]["status"], "rejected");
    assert_eq!(items[1]["errors"][0]["field"], "type");
    assert_eq!(items[2]["status"], "rejected");
    assert_eq!(items[2]["errors"][0]["message"], "unknown product");
    assert_eq!(items[3]["status"], "accepted");
    assert_eq!(count(&app, "SELECT count(*) FROM interactions").await, 2);

    // Nothing valid at all → 422 naming each item's fields.
    let (status, body) = send(&app, wallet(2), &json!({"interactions": [{"type": 1}]})).await;
    assert_problem(status, &body, 422);
    assert!(
        body["errors"][0]["field"]
            .as_str()
            .unwrap()
            .starts_with("interactions[0]"),
        "{body}"
    );
    // Envelope errors.
    let (status, body) = send(&app, wallet(2), &json!({"interactions": []})).await;
    assert_problem(status, &body, 422);
    let many: Vec<Value> = (0..1001).map(|_| json!({})).collect();
    let (status, body) = send(&app, wallet(2), &json!({"interactions": many})).await;
    assert_problem(status, &body, 422);
    // A single invalid interaction → 422, nothing stored.
    let (status, body) = send(
        &app,
        wallet(2),
        &json!({"product_id": product, "type": "referral.referred"}),
    )
    .await;
    assert_problem(status, &body, 422);
    assert_eq!(body["errors"][0]["field"], "referrer");
    // Nobody can be referred by the zero address: a reward to it is unpayable.
    let zero = "0x0000000000000000000000000000000000000000";
    let referral = json!({"product_id": product, "type": "referral.referred", "referrer": zero});
    let (status, body) = send(&app, wallet(2), &referral).await;
    assert_problem(status, &body, 422);
    assert_eq!(body["errors"][0]["field"], "referrer");
    assert_eq!(body["errors"][0]["message"], "must not be the zero address");
    assert_eq!(count(&app, "SELECT count(*) FROM interactions").await, 2);
}

#[tokio::test]
async fn duplicates_by_key_natural_key_and_window_even_across_restarts() {
    let mut settings = test_settings(&crate::common::fresh_database().await);
    settings.rate_limit.per_wallet_per_hour = 0;
    let app = TestApp::start(settings.clone()).await.unwrap();
    let product = create_product(&app, "dedup.example").await;
    let w = wallet(3);
    let keyed = json!({"product_id": product, "type": "webshop.open", "idempotency_key": "k-1"});
    let order =
        json!({"product_id": product, "type": "purchase.completed", "data": {"order_id": "A-1"}});
    let order_again = json!({"product_id": product, "type": "purchase.completed",
        "data": {"order_id": "A-1", "amount": "5"}});
    let page = json!({"product_id": product, "type": "press.read_article", "data": {"article": 7}});
    let other_page =
        json!({"product_id": product, "type": "press.read_article", "data": {"article": 8}});

    let (_, first_keyed) = send(&app, w, &keyed).await;
    let (_, first_order) = send(&app, w, &order).await;
    let (_, first_page) = send(&app, w, &page).await;
    for (body, first) in [
        (&keyed, &first_keyed),
        (&order_again, &first_order),
        (&page, &first_page),
    ] {
        let (status, again) = send(&app, w, body).await;
        assert_eq!(status, 202, "{again}");
        assert_eq!(again["status"], "duplicate", "{again}");
        assert_eq!(again["id"], first["id"]);
    }
    let (_, other) = send(&app, w, &other_page).await;
    assert_eq!(other["status"], "accepted");
    // The same page by another wallet is not a duplicate.
    let (_, by_other) = send(&app, wallet(4), &page).await;
    assert_eq!(by_other["status"], "accepted");

    // Duplicates inside one batch: one row, the same id twice.
    let (_, batch) = send(
        &app,
        w,
        &json!({"interactions": [
            {"product_id": product, "type": "webshop.open", "idempotency_key": "k-2"},
            {"product_id": product, "type": "webshop.open", "idempotency_key": "k-2"},
        ]}),
    )
    .await;
    assert_eq!(batch["interactions"][0]["status"], "accepted", "{batch}");
    assert_eq!(batch["interactions"][1]["status"], "duplicate", "{batch}");
    assert_eq!(
        batch["interactions"][0]["id"],
        batch["interactions"][1]["id"]
    );
    assert_eq!(count(&app, "SELECT count(*) FROM interactions").await, 6);

    // A new instance has empty memory: the unique indexes and the reloaded window answer.
    app.stop().await.unwrap();
    let app = TestApp::start(settings).await.unwrap();
    for (body, first) in [
        (&keyed, &first_keyed),
        (&order, &first_order),
        (&page, &first_page),
    ] {
        let (status, again) = send(&app, w, body).await;
        assert_eq!(status, 202, "{again}");
        assert_eq!(again["status"], "duplicate", "{again}");
        assert_eq!(again["id"], first["id"]);
    }
    assert_eq!(count(&app, "SELECT count(*) FROM interactions").await, 6);
}

#[tokio::test]
async fn the_rate_limit_answers_429_and_stores_nothing() {
    let app = TestApp::spawn_with(|s| s.rate_limit.per_wallet_per_hour = 3).await;
    let product = create_product(&app, "limited.example").await;
    for i in 0..3 {
        let (status, body) = send(
            &app,
            wallet(5),
            &json!({"product_id": product,
            "type": "webshop.open", "data": {"i": i}}),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    let response = app
        .client
        .post(app.url("/v1/interactions"))
        .bearer_auth(app.token(wallet(5)))
        .json(&json!({"product_id": product, "type": "webshop.open", "data": {"i": 99}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1200).contains(&retry_after), "{retry_after}");
    assert_eq!(count(&app, "SELECT count(*) FROM interactions").await, 3);
    // Another wallet is not affected.
    let (status, _) = send(
        &app,
        wallet(6),
        &json!({"product_id": product, "type": "webshop.open"}),
    )
    .await;
    assert_eq!(status, 202);
    // A batch larger than the limit could ever admit is refused as such, not
    // "retry in a second" for ever.
    let batch: Vec<Value> = (0..4)
        .map(|i| json!({"product_id": product, "type": "webshop.open", "data": {"b": i}}))
        .collect();
    let (status, body) = send(&app, wallet(7), &json!({"interactions": batch})).await;
    assert_problem(status, &body, 422);
    assert_eq!(body["errors"][0]["field"], "interactions", "{body}");
}

/// Deduplication comes before the rate limit: a retry of what is stored already
/// takes nothing from the limit, and one over it gets the duplicate's id, not 429.
#[tokio::test]
async fn a_retry_over_the_rate_limit_is_answered_as_the_duplicate_it_is() {
    let app = TestApp::spawn_with(|s| s.rate_limit.per_wallet_per_hour = 2).await;
    let product = create_product(&app, "retried.example").await;
    let keyed = json!({"product_id": product, "type": "webshop.open",
        "data": {"page": "/"}, "idempotency_key": "open-1"});
    let order = json!({"product_id": product, "type": "purchase.completed",
        "data": {"order_id": "R-1", "amount": "100", "currency": "EUR"}});
    let (_, first) = send(&app, wallet(8), &keyed).await;
    // A retry under the limit takes nothing from it.
    let (status, again) = send(&app, wallet(8), &keyed).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["status"], "duplicate", "{again}");
    let (status, bought) = send(&app, wallet(8), &order).await;
    assert_eq!(status, 202, "{bought}");
    assert_eq!(bought["status"], "accepted", "{bought}");
    let fresh = json!({"product_id": product, "type": "webshop.open", "data": {"page": "/new"}});
    let (status, body) = send(&app, wallet(8), &fresh).await;
    assert_problem(status, &body, 429);
    // The same key, and the same order (its natural key), alone or together.
    for (retry, original) in [(&keyed, &first), (&order, &bought)] {
        let (status, again) = send(&app, wallet(8), retry).await;
        assert_eq!(status, 202, "{again}");
        assert_eq!(again["status"], "duplicate", "{again}");
        assert_eq!(again["id"], original["id"], "{again}");
    }
    let both = json!({"interactions": [keyed, order]});
    let (status, again) = send(&app, wallet(8), &both).await;
    assert_eq!(status, 202, "{again}");
    let statuses: Vec<&Value> = again["interactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| &item["status"])
        .collect();
    assert_eq!(statuses, ["duplicate", "duplicate"], "{again}");
    // A batch with anything new in it is still over the limit, and stores nothing.
    let mixed = json!({"interactions": [keyed, fresh]});
    let (status, body) = send(&app, wallet(8), &mixed).await;
    assert_problem(status, &body, 429);
    assert_eq!(count(&app, "SELECT count(*) FROM interactions").await, 2);
}

/// Text PostgreSQL cannot hold (the NUL character) is a 422 naming the field, not a
/// 500 or a 503 the client would retry for ever; limits on text count characters.
#[tokio::test]
async fn text_is_refused_or_taken_as_the_database_can_store_it() {
    let app = TestApp::spawn().await;
    let product = create_product(&app, "text.example").await;
    let (status, body) = send(
        &app,
        wallet(8),
        &json!({"product_id": product, "type": "webshop.open", "data": {"note": "a\u{0}b"}}),
    )
    .await;
    assert_problem(status, &body, 422);
    assert_eq!(body["errors"][0]["field"], "data.note", "{body}");
    let (status, body) = app
        .post(
            "/v1/products",
            &json!({"domain": "nul.example", "name": "x\u{0}"}),
            Some(&app.token(Address::repeat_byte(0xee))),
        )
        .await;
    assert_problem(status, &body, 422);
    assert_eq!(body["errors"][0]["field"], "name", "{body}");
    assert_eq!(count(&app, "SELECT count(*) FROM interactions").await, 0);
    // 200 characters of two bytes each: within the 255-character limit.
    let key = "é".repeat(200);
    let (status, body) = send(
        &app,
        wallet(8),
        &json!({"product_id": product, "type": "webshop.open", "idempotency_key": key}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
}

/// A referral refused by the database as a duplicate (its idempotency key was
/// stored before, by another interaction a restarted service no longer remembers)
/// registers nothing: the wallet can still be referred.
#[tokio::test]
async fn a_referral_stored_as_a_duplicate_leaves_no_referrer_behind() {
    let database = crate::common::fresh_database().await;
    let first_run = TestApp::start(test_settings(&database)).await.unwrap();
    let product = create_product(&first_run, "dup-ref.example").await;
    let (user, first, second) = (wallet(20), wallet(21), wallet(22));
    let (status, body) = send(
        &first_run,
        user,
        &json!({"product_id": product, "type": "webshop.open", "idempotency_key": "k-1"}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    first_run.stop().await.unwrap();

    let app = TestApp::start(test_settings(&database)).await.unwrap();
    let refer = |referrer: Address, key: &str| {
        json!({"product_id": product, "type": "referral.referred",
               "referrer": format!("{referrer:#x}"), "idempotency_key": key})
    };
    let (status, duplicate) = send(&app, user, &refer(first, "k-1")).await;
    assert_eq!(status, 202, "{duplicate}");
    assert_eq!(duplicate["status"], "duplicate", "{duplicate}");
    let (status, body) = send(&app, user, &refer(second, "k-2")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["referral"], "registered", "{body}");
}

#[tokio::test]
async fn referral_rules_first_wins_no_self_no_cycle_per_product() {
    let app = TestApp::spawn().await;
    let p1 = create_product(&app, "ref-one.example").await;
    let p2 = create_product(&app, "ref-two.example").await;
    let (a, b, c) = (wallet(10), wallet(11), wallet(12));
    let refer = |product: &str, referrer: Address| json!({"product_id": product, "type": "referral.referred", "referrer": format!("{referrer:#x}")});
    let outcome = |body: &Value| body["referral"].as_str().unwrap_or("?").to_owned();

    // a → b → c
    assert_eq!(
        outcome(&send(&app, b, &refer(&p1, a)).await.1),
        "registered"
    );
    assert_eq!(
        outcome(&send(&app, c, &refer(&p1, b)).await.1),
        "registered"
    );
    // b already has a referrer.
    assert_eq!(
        outcome(&send(&app, b, &refer(&p1, c)).await.1),
        "already_referred"
    );
    assert_eq!(
        outcome(&send(&app, a, &refer(&p1, a)).await.1),
        "self_referral"
    );
    // c → a would close a → b → c → a.
    assert_eq!(outcome(&send(&app, a, &refer(&p1, c)).await.1), "cycle");
    // Another product has its own graph.
    assert_eq!(
        outcome(&send(&app, a, &refer(&p2, c)).await.1),
        "registered"
    );

    let edges = count(
        &app,
        "SELECT count(*) FROM interactions WHERE referrer_wallet IS NOT NULL",
    )
    .await;
    assert_eq!(edges, 3);
    let rejected: Vec<(Option<Vec<u8>>, Value)> = sqlx::query_as(
        "SELECT referrer_wallet, data FROM interactions WHERE type = 'referral.referred' AND referrer_wallet IS NULL ORDER BY created_at",
    )
    .fetch_all(&app.ctx.pool)
    .await
    .unwrap();
    assert_eq!(rejected.len(), 3);
    assert_eq!(rejected[0].1["claimed_referrer"], format!("{c:#x}"));
    assert_eq!(rejected[0].1["referral"], "already_referred");

    // A new instance reloads the graph from PostgreSQL.
    let settings = (*app.ctx.settings).clone();
    app.stop().await.unwrap();
    let app = TestApp::start(settings).await.unwrap();
    assert_eq!(
        outcome(&send(&app, c, &refer(&p1, a)).await.1),
        "already_referred"
    );
    let d = wallet(13);
    assert_eq!(
        outcome(&send(&app, d, &refer(&p1, c)).await.1),
        "registered"
    );
    // a ← d would close d → c → b → a → d: found through the reloaded graph.
    assert_eq!(outcome(&send(&app, a, &refer(&p1, d)).await.1), "cycle");
}

#[tokio::test]
async fn origins_and_product_state_are_checked() {
    let app = TestApp::spawn().await;
    let product = create_product(&app, "origin.example").await;
    let body = json!({"product_id": product, "type": "webshop.open"});
    let post = |origin: &'static str| {
        app.client
            .post(app.url("/v1/interactions"))
            .bearer_auth(app.token(wallet(20)))
            .header("origin", origin)
            .json(&body)
            .send()
    };
    let (status, body) = crate::common::read(post("https://evil.example").await.unwrap()).await;
    assert_problem(status, &body, 403);
    let (status, _) = crate::common::read(post("https://origin.example").await.unwrap()).await;
    assert_eq!(status, 202);

    let inactive = create_product(&app, "inactive.example").await;
    sqlx::query("UPDATE products SET is_active = false WHERE id = $1")
        .bind(parse_bytes32(&inactive).unwrap().as_slice())
        .execute(&app.ctx.pool)
        .await
        .unwrap();
    let (status, body) = send(
        &app,
        wallet(20),
        &json!({"product_id": inactive, "type": "webshop.open"}),
    )
    .await;
    assert_problem(status, &body, 422);
    assert!(
        body["detail"].as_str().unwrap().contains("not active"),
        "{body}"
    );
    let (status, body) = send(
        &app,
        wallet(20),
        &json!({"product_id": format!("0x{}", "34".repeat(32)), "type": "webshop.open"}),
    )
    .await;
    assert_problem(status, &body, 422);
    let (status, body) = app
        .post(
            "/v1/interactions",
            &json!({"product_id": product, "type": "webshop.open"}),
            None,
        )
        .await;
    assert_problem(status, &body, 401);
}

#[tokio::test]
async fn each_write_set_of_a_refused_flush_gets_its_own_answer() {
    let app = TestApp::spawn_with(|s: &mut Settings| s.ingest.writer_flush_concurrency = 1).await;
    let product = create_product(&app, "refused-flush.example").await;
    // The database refuses rows by their data: for good, or for now.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_marked() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
             IF NEW.data->>'marker' = 'bad' THEN
                 RAISE EXCEPTION 'refused for good' USING ERRCODE = 'P0001';
             ELSIF NEW.data->>'marker' = 'retry' THEN
                 RAISE EXCEPTION 'refused for now' USING ERRCODE = '40001';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_marked BEFORE INSERT ON interactions
             FOR EACH ROW EXECUTE FUNCTION refuse_marked();",
    )
    .execute(&app.ctx.pool)
    .await
    .unwrap();
    let open = |n: u64, marker: &str| {
        let (client, url, token) = (
            app.client.clone(),
            app.url("/v1/interactions"),
            app.token(wallet(n)),
        );
        let body = json!({"product_id": product, "type": "webshop.open",
            "data": {"marker": marker}});
        tokio::spawn(async move {
            let response = client.post(url).bearer_auth(token).json(&body).send().await;
            response.unwrap().status().as_u16()
        })
    };
    assert_eq!(open(40, "warm").await.unwrap(), 202);
    // Three sets wait behind a flush held on a lock, then go in one flush.
    let mut blocker = app.ctx.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE interactions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let held = open(41, "held");
    wait_for_blocked_insert(&app).await;
    let queued = |rows: u64| {
        let gate = app.ctx.ingest.gate.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while gate.pending_rows() < rows {
                assert!(
                    Instant::now() < deadline,
                    "the set never reached the writer"
                );
                tokio::task::yield_now().await;
            }
        }
    };
    // In this order: the set refused for now comes before the fine one.
    let bad = open(42, "bad");
    queued(2).await;
    let retry = open(43, "retry");
    queued(3).await;
    let fine = open(44, "fine");
    queued(4).await;
    blocker.commit().await.unwrap();
    assert_eq!(held.await.unwrap(), 202);
    assert_ne!(bad.await.unwrap(), 202);
    assert_eq!(retry.await.unwrap(), 503);
    // The set after the one refused for now was written, not forgotten.
    assert_eq!(fine.await.unwrap(), 202);
    let stored = "SELECT count(*) FROM interactions WHERE data->>'marker' = 'fine'";
    assert_eq!(count(&app, stored).await, 1);
}

#[tokio::test]
async fn no_acknowledgement_before_the_commit() {
    let app = TestApp::spawn_with(|s: &mut Settings| s.ingest.writer_retry_interval_ms = 10).await;
    let product = create_product(&app, "commit.example").await;
    // Start the product actor first (it reads the table when it starts).
    let warm = json!({"product_id": product, "type": "webshop.open", "data": {"warm": true}});
    assert_eq!(send(&app, wallet(31), &warm).await.0, 202);
    // Hold the table: the writer's insert waits on the lock.
    let mut blocker = app.ctx.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE interactions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let request = {
        let client = app.client.clone();
        let url = app.url("/v1/interactions");
        let token = app.token(wallet(30));
        let body = json!({"product_id": product, "type": "webshop.open"});
        tokio::spawn(async move { client.post(url).bearer_auth(token).json(&body).send().await })
    };
    let writer_pid = wait_for_blocked_insert(&app).await;
    assert!(!request.is_finished(), "answered before the commit");
    // The writer's connection dies mid-flush: the request must fail, not succeed.
    kill_writer(blocker, writer_pid).await;
    let response = request.await.unwrap().unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(count(&app, "SELECT count(*) FROM interactions").await, 1);

    // The writer recovers by itself; the retry is stored once.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = send(
            &app,
            wallet(30),
            &json!({"product_id": product, "type": "webshop.open"}),
        )
        .await;
        if status == 202 {
            assert_eq!(body["status"], "accepted");
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "the writer never recovered");
    }
    assert_eq!(count(&app, "SELECT count(*) FROM interactions").await, 2);
}

/// The backend blocked on our lock while inserting interactions.
/// Ends the writer's session `pid` (waiting on `blocker`'s lock), then lets go of
/// the lock: its flush fails.
pub async fn kill_writer(mut blocker: sqlx::Transaction<'_, sqlx::Postgres>, pid: i32) {
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&mut *blocker)
        .await
        .unwrap();
    blocker.rollback().await.unwrap();
}

/// Runs `request` while `interactions` is locked; once its insert waits on the
/// lock, the writer's connection is killed (the flush fails), and the lock goes.
pub async fn with_its_write_killed<T>(
    app: &TestApp,
    request: impl std::future::Future<Output = T>,
) -> T {
    let mut blocker = app.ctx.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE interactions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let kill_the_write = async {
        let writer = wait_for_blocked_insert(app).await;
        kill_writer(blocker, writer).await;
    };
    tokio::join!(request, kill_the_write).0
}

/// Holds inserts into `interactions` until the transaction ends; reads (the
/// referral graph, the dedup window) go on.
async fn lock_interactions(app: &TestApp) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut blocker = app.ctx.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE interactions IN SHARE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    blocker
}

pub async fn wait_for_blocked_insert(app: &TestApp) -> i32 {
    wait_for_blocked_insert_into(app, "interactions").await
}

/// The backend whose `INSERT INTO table` waits on a lock, once there is one.
pub async fn wait_for_blocked_insert_into(app: &TestApp, table: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()
               AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO ' || $1 || '%'",
        )
        .bind(table)
        .fetch_optional(&app.ctx.pool)
        .await
        .unwrap();
        if let Some(pid) = pid {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "the writer never reached the table"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_crashed_product_actor_is_replaced_and_serves_again() {
    let app = TestApp::spawn_with(|s| s.supervisor.restart_backoff_initial_ms = 1).await;
    let product = create_product(&app, "crash.example").await;
    let body = json!({"product_id": product, "type": "webshop.open"});
    assert_eq!(send(&app, wallet(40), &body).await.0, 202);
    let id = parse_bytes32(&product).unwrap();
    let handle = app.ctx.ingest.products.get(&id).expect("running");
    app.crash_product_actor(&product);
    // Requests may get 503 while it restarts, never hang, and then succeed.
    let mut i = 0;
    app.until_served(202, || {
        i += 1;
        let body = json!({"product_id": product, "type": "webshop.open", "data": {"i": i}});
        let app = &app;
        async move { send(app, wallet(40), &body).await }
    })
    .await;
    let replaced = app.ctx.ingest.products.get(&id).expect("running again");
    assert_ne!(replaced.actor.get_id(), handle.actor.get_id());
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"rewardflow_actor_restarts_total{actor="product",reason="failed"}"#),
        "{metrics}"
    );
}

/// A flush stuck past the request timeout commits after its request expired: the
/// product's actor stops, and the next request's actor starts from what that flush
/// stored — its referral pays the referrer and refuses a competing one, and a
/// keyless retry of its page is a duplicate, not a second row.
#[tokio::test]
async fn a_write_that_commits_after_its_request_expired_is_not_forgotten() {
    let app = TestApp::spawn_with(|s| {
        s.server.request_timeout_ms = 1000;
        s.supervisor.restart_backoff_initial_ms = 1;
    })
    .await;
    let product = crate::campaigns::product_with_bank(&app, "late.example").await;
    // 10 units per purchase: 5 to the buyer, 4 to a direct referrer.
    crate::campaigns::campaign(&app, &product, json!({})).await;
    let (buyer, referrer) = (wallet(60), wallet(61));
    let referral = |by: Address| json!({"product_id": product, "type": "referral.referred", "referrer": format!("{by:#x}")});
    let page = json!({"product_id": product, "type": "press.read_article", "data": {"n": 1}});

    let blocker = lock_interactions(&app).await;
    let late = json!({"interactions": [referral(referrer), page.clone()]});
    let (status, body) = tokio::join!(send(&app, buyer, &late), wait_for_blocked_insert(&app)).0;
    assert_eq!(status, 503, "{body}");
    let key = parse_bytes32(&product).unwrap();
    crate::chain_fixture::eventually(
        Duration::from_secs(10),
        "the product actor stopped",
        || async { app.ctx.ingest.products.get(&key).is_none().then_some(()) },
    )
    .await;
    blocker.commit().await.unwrap();

    let bought = crate::campaigns::purchase(&app, &product, buyer).await;
    let recipients: Vec<(&str, &str)> = bought["rewards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["recipient"].as_str().unwrap(),
                r["recipient_type"].as_str().unwrap(),
            )
        })
        .collect();
    let (buyer_hex, referrer_hex) = (format!("{buyer:#x}"), format!("{referrer:#x}"));
    assert_eq!(
        recipients,
        [
            (buyer_hex.as_str(), "user"),
            (referrer_hex.as_str(), "referrer_l1")
        ],
        "{bought}"
    );
    let (status, competing) = send(&app, buyer, &referral(wallet(62))).await;
    assert_eq!(status, 202, "{competing}");
    assert_eq!(competing["referral"], "already_referred", "{competing}");
    let (status, again) = send(&app, buyer, &page).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["status"], "duplicate", "{again}");
    assert_eq!(
        count(&app, "SELECT count(*) FROM interactions").await,
        4,
        "the late batch's two rows, the purchase and the competing referral"
    );
}

/// A purchase sent while its buyer's referral is still being written waits for
/// that write. The write fails, so the purchase earns as an unreferred one: the
/// referrer, whom no stored referral names, is paid nothing.
#[tokio::test]
async fn a_reward_never_relies_on_a_referral_whose_write_fails() {
    let app = TestApp::spawn_with(|s| s.rate_limit.per_wallet_per_hour = 0).await;
    let product = crate::campaigns::product_with_bank(&app, "unstored.example").await;
    // 10 units per purchase: 5 to the buyer, the rest to its referrers.
    crate::campaigns::campaign(&app, &product, json!({})).await;
    let (buyer, referrer) = (wallet(70), wallet(71));
    // The product's actor and referral graph are loaded before the lock.
    crate::campaigns::purchase(&app, &product, wallet(72)).await;
    let key = parse_bytes32(&product).unwrap();
    let handle = app.ctx.ingest.products.get(&key).expect("running");
    let referral = json!({"product_id": product, "type": "referral.referred",
        "referrer": format!("{referrer:#x}")});

    let blocker = lock_interactions(&app).await;
    let (referred, bought) = tokio::join!(send(&app, buyer, &referral), async {
        let writer = wait_for_blocked_insert(&app).await;
        let purchase = crate::budgets::spawn_purchase(&app, &product, buyer, "unstored-1");
        // Held by the product's actor (or, were it not, buffered behind the
        // referral in the writer) when the referral's write fails.
        crate::chain_fixture::eventually(Duration::from_secs(10), "the purchase held", || {
            let held = handle.held.load(Ordering::Acquire) == 1;
            let buffered = app.ctx.ingest.gate.pending_rows() == 2;
            async move { (held || buffered).then_some(()) }
        })
        .await;
        kill_writer(blocker, writer).await;
        purchase.await.unwrap()
    });
    assert_eq!(referred.0, 503, "{}", referred.1);
    // Refused while the writer finds the database again, then stored.
    let bought = match bought {
        (202, body) => body,
        (status, body) => {
            assert_eq!(status, 503, "{body}");
            let again = json!({"product_id": product, "type": "purchase.completed",
                "data": {"order_id": "unstored-1"}});
            app.until_served(202, || send(&app, buyer, &again)).await
        }
    };
    let paid: Vec<&str> = bought["rewards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["recipient_type"].as_str().unwrap())
        .collect();
    assert_eq!(paid, ["user"], "{bought}");
    let to_referrer = format!(
        "SELECT count(*) FROM rewards WHERE wallet = '\\x{}'",
        hex::encode(referrer)
    );
    assert_eq!(count(&app, &to_referrer).await, 0);
    assert_eq!(handle.held.load(Ordering::Acquire), 0);
    // The referral, sent again, is stored and counts from then on.
    let (status, again) = send(&app, buyer, &referral).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["referral"], "registered", "{again}");

    // Held again, behind a referral whose write commits: paid with the referrer.
    let blocker = lock_interactions(&app).await;
    let second = wallet(73);
    let (referred, bought) = tokio::join!(send(&app, second, &referral), async {
        wait_for_blocked_insert(&app).await;
        let purchase = crate::budgets::spawn_purchase(&app, &product, second, "unstored-2");
        crate::chain_fixture::eventually(Duration::from_secs(10), "the purchase held", || {
            let held = handle.held.load(Ordering::Acquire) == 1;
            async move { held.then_some(()) }
        })
        .await;
        blocker.commit().await.unwrap();
        purchase.await.unwrap()
    });
    assert_eq!(referred.1["referral"], "registered", "{}", referred.1);
    assert_eq!(bought.0, 202, "{}", bought.1);
    assert_eq!(
        bought.1["rewards"][1]["recipient"],
        format!("{referrer:#x}")
    );
}

#[tokio::test]
async fn overload_is_refused_at_once_with_503() {
    let app = TestApp::spawn_with(|s| s.ingest.writer_max_pending_rows = 0).await;
    let product = create_product(&app, "full.example").await;
    let response = app
        .client
        .post(app.url("/v1/interactions"))
        .bearer_auth(app.token(wallet(50)))
        .json(&json!({"product_id": product, "type": "webshop.open"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(count(&app, "SELECT count(*) FROM interactions").await, 0);

    let app = TestApp::spawn_with(|s| s.ingest.product_mailbox_capacity = 0).await;
    let product = create_product(&app, "busy.example").await;
    let (status, body) = send(
        &app,
        wallet(51),
        &json!({"product_id": product, "type": "webshop.open"}),
    )
    .await;
    assert_problem(status, &body, 503);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"rewardflow_interactions_total{type="webshop.open",outcome="unavailable",reason="overloaded"}"#),
        "{metrics}"
    );
}
