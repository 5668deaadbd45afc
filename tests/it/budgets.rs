//! Budget accounting of unlimited campaigns: their spend is the sum of their
//! rewards (no budget row update per flush), and a cap set later starts from
//! exactly that sum, even while interactions are being written. A capped campaign
//! activated again, or loaded by a restarted product actor, while its writes are
//! in flight counts them once; a restarted writer lets its predecessor's flushes
//! finish first; and a product start that waits for such writes holds up no other
//! product.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use alloy::primitives::{Address, B256};
use rewardflow::actors::product::ProductMsg;
use rewardflow::domain::ids::parse_bytes32;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::campaigns::{campaign, owner, product_with_bank, purchase, switch, wallet};
use crate::chain_fixture::eventually;
use crate::common::{TestApp, assert_problem};

const UNIT: u128 = 1_000_000_000_000_000_000;

fn units(n: u128) -> String {
    (n * UNIT).to_string()
}

/// The campaign's `used_budget` column and the sum of its rewards not cancelled.
async fn column_and_sum(app: &TestApp, id: i64) -> (String, String) {
    sqlx::query_as(
        "SELECT c.used_budget::text, (SELECT coalesce(sum(amount), 0) FROM rewards
             WHERE campaign_id = c.id AND status <> 'cancelled')::text
         FROM campaigns c WHERE c.id = $1",
    )
    .bind(id)
    .fetch_one(&app.ctx.pool)
    .await
    .unwrap()
}

async fn shown(app: &TestApp, id: i64) -> Value {
    let (status, body) = app
        .get(&format!("/v1/campaigns/{id}"), Some(&owner(app)))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn an_unlimited_campaign_spends_its_rewards_and_a_later_cap_starts_from_them() {
    let app = TestApp::spawn().await;
    let product = product_with_bank(&app, "unlimited.example").await;
    // Every purchase pays 10 units to the (unreferred) buyer.
    let id = campaign(&app, &product, json!({"user_bps": 10000})).await;
    for n in 0..3 {
        assert_eq!(
            purchase(&app, &product, wallet(n)).await["rewards"][0]["amount"],
            units(10)
        );
    }
    assert_eq!(shown(&app, id).await["used_budget"], units(30));
    let (status, stats) = app
        .get(&format!("/v1/campaigns/{id}/stats"), Some(&owner(&app)))
        .await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["budget"]["used"], units(30));
    assert_eq!(stats["budget"]["remaining"], Value::Null);
    // Nothing wrote the budget row: the flushes charged no unlimited campaign.
    assert_eq!(column_and_sum(&app, id).await, ("0".into(), units(30)));

    // A cap below what was paid is refused and changes nothing.
    let path = format!("/v1/campaigns/{id}");
    let (status, body) = app
        .patch_json(&path, &json!({"budget_cap": units(20)}), &owner(&app))
        .await;
    assert_problem(status, &body, 422);
    assert!(body.to_string().contains(&units(30)), "{body}");
    assert_eq!(shown(&app, id).await["budget_cap"], "0");

    // A cap above it starts from it: 20 units are left, two more rewards.
    let (status, body) = app
        .patch_json(&path, &json!({"budget_cap": units(50)}), &owner(&app))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["used_budget"], units(30));
    assert_eq!(body["remaining_budget"], units(20));
    let mut rewarded = 0;
    for n in 10..13 {
        rewarded += purchase(&app, &product, wallet(n)).await["rewards"]
            .as_array()
            .unwrap()
            .len();
    }
    assert_eq!(rewarded, 2);
    let body = shown(&app, id).await;
    assert_eq!(body["status"], "budget_exhausted");
    assert_eq!(column_and_sum(&app, id).await, (units(50), units(50)));

    // Unlimited again: the spend is read from the rewards, the cap is gone.
    let (status, body) = app
        .patch_json(&path, &json!({"budget_cap": "0"}), &owner(&app))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["used_budget"], units(50));
}

/// A row the database refuses as a duplicate (its key gone from the service's
/// memory, as after a restart) exhausts nothing: the campaign's status follows what
/// was stored, not what was charged in memory and given back.
#[tokio::test]
async fn a_duplicate_the_database_refuses_does_not_exhaust_the_campaign() {
    let app = TestApp::spawn().await;
    let product = product_with_bank(&app, "refused.example").await;
    // 10 units per purchase to the (unreferred) buyer; room for two.
    let id = campaign(
        &app,
        &product,
        json!({"user_bps": 10000, "budget_cap": units(20)}),
    )
    .await;
    let order = json!({"product_id": product, "type": "purchase.completed",
        "data": {"order_id": "twice"}});
    let buyer = app.token(wallet(40));
    let (status, first) = app.post("/v1/interactions", &order, Some(&buyer)).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["rewards"][0]["amount"], units(10), "{first}");
    // The service forgets the order's key, as a restarted one would.
    app.ctx.ingest.dedup.invalidate_all();
    let (status, again) = app.post("/v1/interactions", &order, Some(&buyer)).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["status"], "duplicate", "{again}");
    assert_eq!(again["id"], first["id"], "{again}");
    let body = shown(&app, id).await;
    assert_eq!(body["status"], "active", "{body}");
    assert_eq!(body["used_budget"], units(10), "{body}");
    // The room left pays the next buyer, who exhausts the campaign.
    assert_eq!(
        purchase(&app, &product, wallet(41)).await["rewards"][0]["amount"],
        units(10)
    );
    assert_eq!(shown(&app, id).await["status"], "budget_exhausted");
    assert_eq!(column_and_sum(&app, id).await, (units(20), units(20)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cap_set_while_rewards_are_written_counts_every_one_of_them() {
    let app = TestApp::spawn().await;
    let product = product_with_bank(&app, "recap.example").await;
    let id = campaign(&app, &product, json!({"user_bps": 10000})).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let underway = Arc::new(Notify::new());
    let url = app.url("/v1/interactions");
    let buyers: Vec<_> = (0..8u64)
        .map(|b| {
            let (client, url, token) =
                (app.client.clone(), url.clone(), app.token(wallet(500 + b)));
            let (stop, sent, underway) = (stop.clone(), sent.clone(), underway.clone());
            let product = product.clone();
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Acquire) || n < 5 {
                    let body = json!({"product_id": product, "type": "purchase.completed",
                        "data": {"order_id": format!("r{b}-{n}")}});
                    let response = client
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 202);
                    if sent.fetch_add(1, Ordering::AcqRel) + 1 == 40 {
                        underway.notify_one();
                    }
                    n += 1;
                }
            })
        })
        .collect();
    // Cap the campaign while the buyers are writing; the cap leaves room for all.
    underway.notified().await;
    let (status, body) = app
        .patch_json(
            &format!("/v1/campaigns/{id}"),
            &json!({"budget_cap": units(1_000_000)}),
            &owner(&app),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    stop.store(true, Ordering::Release);
    for buyer in buyers {
        buyer.await.unwrap();
    }
    let (column, sum) = column_and_sum(&app, id).await;
    let paid: u64 =
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM rewards WHERE campaign_id = $1")
            .bind(id)
            .fetch_one(&app.ctx.pool)
            .await
            .unwrap() as u64;
    assert_eq!(paid, sent.load(Ordering::Acquire), "every purchase paid");
    assert_eq!(
        column, sum,
        "the charged budget is every reward paid, before and after the cap"
    );
    assert_eq!(shown(&app, id).await["used_budget"], sum);
}

#[tokio::test]
async fn a_refund_lowers_an_unlimited_campaigns_spend_without_touching_its_budget_row() {
    use crate::webhooks::{configure, custom_order, deliver_signed};
    use rewardflow::domain::webhook::Platform;
    let app = TestApp::spawn().await;
    let product = product_with_bank(&app, "unlimited-refund.example").await;
    let id = campaign(&app, &product, json!({"user_bps": 10000})).await;
    let secret = configure(&app, &product, json!({"platform": "custom"})).await;
    let buyer = wallet(700);
    for (order, status) in [("U-1", "paid"), ("U-2", "paid"), ("U-1", "refunded")] {
        let (code, body) = deliver_signed(
            &app,
            &product,
            Platform::Custom,
            &secret,
            None,
            &custom_order(order, status, Some(buyer)),
        )
        .await;
        assert_eq!(code, 200, "{body}");
    }
    // The refund cancelled U-1's reward; nothing was taken from the budget row
    // (which an unlimited campaign does not keep, and which cannot go below 0).
    assert_eq!(shown(&app, id).await["used_budget"], units(10));
    assert_eq!(column_and_sum(&app, id).await, ("0".into(), units(10)));
}

/// Holds every flush that counts per-user rewards (they write
/// `campaign_user_rewards`, which this lock blocks) until the transaction ends.
async fn hold_flushes(app: &TestApp) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut lock = app.ctx.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE campaign_user_rewards IN SHARE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    lock
}

/// Waits until a flush is blocked by [`hold_flushes`].
async fn flush_held(app: &TestApp) {
    let pool = app.ctx.pool.clone();
    eventually(
        Duration::from_secs(10),
        "the flush waiting on the lock",
        || {
            let pool = pool.clone();
            async move {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                (waiting > 0).then_some(())
            }
        },
    )
    .await;
}

/// A purchase (order `order`) by `buyer`, sent in the background: its status and body.
pub fn spawn_purchase(
    app: &TestApp,
    product: &str,
    buyer: Address,
    order: &str,
) -> JoinHandle<(u16, Value)> {
    let (client, url, token) = (
        app.client.clone(),
        app.url("/v1/interactions"),
        app.token(buyer),
    );
    let body = json!({"product_id": product, "type": "purchase.completed",
        "data": {"order_id": order}});
    tokio::spawn(async move {
        let response = client
            .post(url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap(),
        )
    })
}

/// The number of rewards in each accepted answer, in order.
async fn rewards_of(requests: Vec<JoinHandle<(u16, Value)>>) -> Vec<usize> {
    let mut rewarded = Vec::new();
    for request in requests {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["status"], "accepted", "{body}");
        rewarded.push(body["rewards"].as_array().unwrap().len());
    }
    rewarded
}

/// The number of rewards of campaign `id` paid to `wallet`.
async fn rewards_to(app: &TestApp, id: i64, wallet: Address) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM rewards WHERE campaign_id = $1 AND wallet = $2")
        .bind(id)
        .bind(wallet.as_slice())
        .fetch_one(&app.ctx.pool)
        .await
        .unwrap()
}

/// Crashes the product's actor while `request`, whose write set is in flight, waits
/// on it: that request is answered 503 (its data may still commit). Returns once
/// the directory has unregistered the actor, with the product's key.
async fn crash(app: &TestApp, product: &str, request: JoinHandle<(u16, Value)>) -> B256 {
    let key = parse_bytes32(product).unwrap();
    let crashed = app.ctx.ingest.products.get(&key).expect("running");
    crashed.actor.cast(ProductMsg::Crash).unwrap();
    let (status, body) = request.await.unwrap();
    assert_eq!(status, 503, "{body}");
    eventually(Duration::from_secs(10), "the crash noticed", || async {
        app.ctx.ingest.products.get(&key).is_none().then_some(())
    })
    .await;
    key
}

#[tokio::test]
async fn a_campaign_activated_again_counts_the_writes_still_in_flight() {
    let app = TestApp::spawn().await;
    let product = product_with_bank(&app, "inflight.example").await;
    // Each purchase pays 10 units to the buyer; the cap fits three.
    let cap = units(30);
    let id = campaign(
        &app,
        &product,
        json!({"user_bps": 10000, "budget_cap": cap, "max_rewards_per_user": 5}),
    )
    .await;
    let lock = hold_flushes(&app).await;
    let send = |n: u64| spawn_purchase(&app, &product, wallet(300 + n), &format!("inflight-{n}"));
    // The first purchase is charged in memory and its flush waits on the lock.
    let first = send(0);
    flush_held(&app).await;
    // Paused and activated again while it is in flight: the database says 0 spent.
    switch(&app, id, "pause").await;
    switch(&app, id, "activate").await;
    let others = (1..=3).map(send);
    let requests: Vec<_> = std::iter::once(first).chain(others).collect();
    lock.commit().await.unwrap();

    let rewarded = rewards_of(requests).await;
    // Three rewards fit: the first and two of the others, never a fourth.
    assert_eq!(rewarded[0], 1);
    assert_eq!(rewarded.iter().sum::<usize>(), 3, "{rewarded:?}");
    assert_eq!(column_and_sum(&app, id).await, (cap.clone(), cap));
    assert_eq!(shown(&app, id).await["status"], "budget_exhausted");
}

#[tokio::test]
async fn a_restarted_product_actor_counts_the_writes_its_predecessor_left_in_flight() {
    let app = TestApp::spawn_with(|s| s.supervisor.restart_backoff_initial_ms = 1).await;
    let product = product_with_bank(&app, "restarted.example").await;
    // One reward per buyer, 10 units each; the cap fits three.
    let cap = units(30);
    let id = campaign(
        &app,
        &product,
        json!({"user_bps": 10000, "budget_cap": cap, "max_rewards_per_user": 1}),
    )
    .await;
    let lock = hold_flushes(&app).await;
    let buyer = wallet(350);
    let first = spawn_purchase(&app, &product, buyer, "restarted-0");
    flush_held(&app).await;

    // The product actor dies with the first purchase's write set still in the
    // writer's lane.
    crash(&app, &product, first).await;

    // The next purchases start a new actor, which must not read the campaign
    // before the first purchase's flush has settled.
    let requests = vec![
        spawn_purchase(&app, &product, buyer, "restarted-1"),
        spawn_purchase(&app, &product, wallet(351), "restarted-2"),
        spawn_purchase(&app, &product, wallet(352), "restarted-3"),
        spawn_purchase(&app, &product, wallet(353), "restarted-4"),
    ];
    eventually(
        Duration::from_secs(10),
        "the new actor waiting for the held flush",
        || async { (app.ctx.ingest.gate.settles_waiting() == 1).then_some(()) },
    )
    .await;
    lock.commit().await.unwrap();

    let rewarded = rewards_of(requests).await;
    // The buyer was rewarded by the first purchase, and its one reward is all it
    // gets; two of the other three fill the budget.
    assert_eq!(rewarded[0], 0, "{rewarded:?}");
    assert_eq!(rewarded.iter().sum::<usize>(), 2, "{rewarded:?}");
    assert_eq!(rewards_to(&app, id, buyer).await, 1);
    assert_eq!(column_and_sum(&app, id).await, (cap.clone(), cap));
    assert_eq!(shown(&app, id).await["status"], "budget_exhausted");
}

#[tokio::test]
async fn a_restarted_writer_lets_its_predecessors_flush_finish_before_anything_else() {
    let app = TestApp::spawn_with(|s| s.supervisor.restart_backoff_initial_ms = 1).await;
    let product = product_with_bank(&app, "writer-restart.example").await;
    let id = campaign(
        &app,
        &product,
        json!({"user_bps": 10000, "budget_cap": units(30), "max_rewards_per_user": 1}),
    )
    .await;
    let lock = hold_flushes(&app).await;
    let buyer = wallet(360);
    let first = spawn_purchase(&app, &product, buyer, "writer-restart-0");
    flush_held(&app).await;

    // The writer dies while its flush of the first purchase is held; the flush
    // runs on. Then the product actor dies too (the first request gets 503).
    let killed = app.ctx.ingest.writer.get().expect("writer running");
    killed.get_cell().kill();
    crash(&app, &product, first).await;

    // While that flush is held, no writer serves: a product actor cannot start.
    let second = spawn_purchase(&app, &product, buyer, "writer-restart-1");
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the purchase was taken while the old flush was held")
        .unwrap();
    assert_eq!(status, 503, "{body}");
    lock.commit().await.unwrap();

    // Once it committed, the new writer serves, and the buyer's one reward counts.
    let (status, body) = eventually(Duration::from_secs(10), "a writer again", || async {
        let (status, body) = spawn_purchase(&app, &product, buyer, "writer-restart-1")
            .await
            .unwrap();
        (status != 503).then_some((status, body))
    })
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "accepted", "{body}");
    assert_eq!(body["rewards"], json!([]), "{body}");
    assert_ne!(
        app.ctx.ingest.writer.get().unwrap().get_id(),
        killed.get_id()
    );
    assert_eq!(rewards_to(&app, id, buyer).await, 1);
}

#[tokio::test]
async fn a_start_waiting_for_its_products_writes_holds_up_no_other_product() {
    // One start at a time may read the database: the waiting one must not hold it.
    let app = TestApp::spawn_with(|s| {
        s.supervisor.restart_backoff_initial_ms = 1;
        s.ingest.product_loads_at_once = 1;
    })
    .await;
    let product = product_with_bank(&app, "slow-start.example").await;
    campaign(
        &app,
        &product,
        json!({"user_bps": 10000, "max_rewards_per_user": 1}),
    )
    .await;
    let lock = hold_flushes(&app).await;
    let first = spawn_purchase(&app, &product, wallet(370), "slow-start-0");
    flush_held(&app).await;
    let key = crash(&app, &product, first).await;

    // The product's next start waits for the held flush...
    let second = spawn_purchase(&app, &product, wallet(371), "slow-start-1");
    eventually(
        Duration::from_secs(10),
        "the start waiting for the held flush",
        || async { (app.ctx.ingest.gate.settles_waiting() == 1).then_some(()) },
    )
    .await;
    // ...and another product starts meanwhile.
    let other = product_with_bank(&app, "other-start.example").await;
    let other_key = parse_bytes32(&other).unwrap();
    let elsewhere = spawn_purchase(&app, &other, wallet(372), "other-start-0");
    eventually(
        Duration::from_secs(10),
        "the other product started",
        || async { app.ctx.ingest.products.get(&other_key).map(|_| ()) },
    )
    .await;
    assert!(app.ctx.ingest.products.get(&key).is_none());
    lock.commit().await.unwrap();

    assert_eq!(rewards_of(vec![second, elsewhere]).await, vec![1, 0]);
}
