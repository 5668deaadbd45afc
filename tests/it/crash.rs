//! `kill -9` under load: after a restart, every interaction that got a 202 is
//! stored exactly once, and retrying the others (same idempotency keys) completes
//! the set without duplicates.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::common::{fresh_database, read};

const SECRET: &str = "crash-test-secret-crash-test-secret-0123";
const INTERACTIONS: u64 = 6_000;
const WORKERS: u64 = 48;
const KILL_AFTER_ACKS: u64 = 1_500;

fn start_service(url: &str, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rewardflow"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database-url",
            url,
        ])
        .env("REWARDFLOW_AUTH__JWT_SECRET", SECRET)
        .env("REWARDFLOW_RATE_LIMIT__PER_IP_PER_HOUR", "0")
        .env("REWARDFLOW_RATE_LIMIT__PER_WALLET_PER_HOUR", "0")
        .env("REWARDFLOW_TELEMETRY__LOG_LEVEL", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn token(wallet: Address) -> String {
    rewardflow::domain::session_token::mint(
        SECRET.as_bytes(),
        wallet,
        chrono::Utc::now().timestamp(),
        3600,
    )
}

/// Waits (bounded) until the service answers on `base`.
async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "the service did not come up");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_interaction_survives_a_kill_9_exactly_once() {
    let url = fresh_database().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut service = start_service(&url, port);
    wait_ready(&client, &base).await;
    let owner = token(Address::repeat_byte(0xee));
    let (status, product) = read(
        client
            .post(format!("{base}/v1/products"))
            .bearer_auth(&owner)
            .json(&json!({"domain": "crash.example", "name": "Crash"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{product}");
    let product = product["id"].as_str().unwrap().to_owned();

    let next = Arc::new(AtomicU64::new(0));
    let acks = Arc::new(AtomicU64::new(0));
    let acked: Arc<Mutex<HashMap<u64, String>>> = Arc::default();
    let kill_now = Arc::new(Notify::new());
    let deadline = Instant::now() + Duration::from_secs(120);
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (client, base, product) = (client.clone(), base.clone(), product.clone());
            let (next, acks, acked, kill_now) =
                (next.clone(), acks.clone(), acked.clone(), kill_now.clone());
            tokio::spawn(async move {
                let mut wallet_bytes = [0u8; 20];
                wallet_bytes[19] = w as u8 + 1;
                let token = token(Address::from(wallet_bytes));
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    if seq >= INTERACTIONS {
                        return;
                    }
                    let kind = if seq % 3 == 0 {
                        "purchase.completed"
                    } else {
                        "webshop.open"
                    };
                    let body = json!({"product_id": product, "type": kind,
                        "data": {"order_id": format!("o-{seq}"), "n": seq},
                        "idempotency_key": format!("crash-{seq}")});
                    loop {
                        assert!(
                            Instant::now() < deadline,
                            "interaction {seq} never acknowledged"
                        );
                        let sent = client
                            .post(format!("{base}/v1/interactions"))
                            .bearer_auth(&token)
                            .json(&body)
                            .send()
                            .await;
                        match sent {
                            Ok(response) if response.status() == 202 => {
                                let reply: Value = response.json().await.unwrap();
                                acked
                                    .lock()
                                    .unwrap()
                                    .insert(seq, reply["id"].as_str().unwrap().to_owned());
                                if acks.fetch_add(1, Ordering::Relaxed) + 1 == KILL_AFTER_ACKS {
                                    kill_now.notify_one();
                                }
                                break;
                            }
                            // Refused or cut off: retry the same interaction.
                            Ok(response) => assert_eq!(response.status(), 503),
                            Err(_) => tokio::task::yield_now().await,
                        }
                    }
                }
            })
        })
        .collect();

    kill_now.notified().await;
    service.kill().unwrap(); // SIGKILL: no shutdown, no flush.
    service.wait().unwrap();
    let at_kill = acked.lock().unwrap().clone();
    let mut service = start_service(&url, port);
    wait_ready(&client, &base).await;
    for worker in workers {
        worker.await.unwrap();
    }
    service.kill().unwrap();
    service.wait().unwrap();

    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let rows: Vec<(uuid::Uuid, String)> = sqlx::query_as(
        "SELECT id, idempotency_key FROM interactions WHERE idempotency_key LIKE 'crash-%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let by_id: HashMap<String, String> = rows
        .iter()
        .map(|(id, key)| (id.to_string(), key.clone()))
        .collect();
    assert_eq!(
        rows.len() as u64,
        INTERACTIONS,
        "each interaction stored exactly once"
    );
    assert_eq!(by_id.len(), rows.len());
    let acked = acked.lock().unwrap();
    assert_eq!(acked.len() as u64, INTERACTIONS);
    assert!(at_kill.len() as u64 >= KILL_AFTER_ACKS);
    for (seq, id) in acked.iter() {
        assert_eq!(
            by_id.get(id),
            Some(&format!("crash-{seq}")),
            "acknowledged interaction {seq} ({id}) not stored as answered"
        );
    }
}
