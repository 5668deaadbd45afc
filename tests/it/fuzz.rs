//! Hostile input over HTTP: random methods, paths (mostly the real route
//! templates with random parameters), headers (tokens, origins, signatures) and
//! bodies (valid requests mutated, random JSON, random bytes, huge and deeply
//! nested ones), plus raw malformed bytes on TCP. Every answer must be a 2xx or a
//! problem+json 4xx — never a 5xx, a dropped connection or a hang — and the
//! service must still be healthy, with no actor restarted, at the end.
//!
//! `FUZZ_CASES` (default 10,000) and `FUZZ_SEED` (default 1) repeat a run:
//! `FUZZ_CASES=100000 cargo nextest run --test it fuzz`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::Address;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rewardflow::domain::webhook::{Platform, sign};
use rewardflow::http::ROUTES;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::campaigns::{campaign, product_with_bank};
use crate::common::TestApp;
use crate::webhooks::configure;

const WORKERS: u64 = 16;
const REQUEST_LIMIT: Duration = Duration::from_secs(15);
/// `server.body_limit_bytes` by default.
const BODY_LIMIT: u64 = 1024 * 1024;

/// What the generator knows of the service under test.
struct Target {
    product: String,
    campaign: i64,
    secret: String,
    tokens: Vec<String>,
}

/// One case's failure, for the report.
struct Failure {
    case: String,
    problem: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_never_get_a_5xx_a_panic_or_a_hang() {
    let cases: u64 = env_number("FUZZ_CASES", 10_000);
    let seed: u64 = env_number("FUZZ_SEED", 1);
    let app = Arc::new(
        TestApp::spawn_with(|s| {
            // Limits stay on, but high enough that random requests reach the handlers.
            s.rate_limit.per_wallet_per_hour = 1_000_000;
            s.rate_limit.per_ip_per_hour = 0;
            s.database.max_connections = 10;
        })
        .await,
    );
    let product = product_with_bank(&app, "fuzz.example").await;
    let campaign = campaign(
        &app,
        &product,
        json!({"budget_cap": "1000000000000000000000"}),
    )
    .await;
    let secret = configure(&app, &product, json!({"platform": "custom"})).await;
    let tokens = vec![
        app.token(Address::repeat_byte(0xee)),
        app.token(Address::repeat_byte(0x01)),
        app.token(Address::ZERO),
    ];
    // The product's actor, spawned now: the same one must still be running at the end.
    let product_id: alloy::primitives::B256 = product.parse().expect("a product id");
    let actor = app
        .ctx
        .ingest
        .open(product_id)
        .await
        .expect("the product opens");
    let target = Arc::new(Target {
        product,
        campaign,
        secret,
        tokens,
    });

    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let (app, target) = (app.clone(), target.clone());
        let share = cases / WORKERS + u64::from(worker < cases % WORKERS);
        workers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(worker));
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            let mut failures = Vec::new();
            for _ in 0..share {
                let outcome = if rng.random_ratio(1, 20) {
                    raw_case(&app, &mut rng).await
                } else {
                    http_case(&app, &target, &mut rng).await
                };
                match outcome {
                    Ok(status) => *statuses.entry(status).or_default() += 1,
                    Err(failure) => failures.push(failure),
                }
            }
            (statuses, failures)
        }));
    }
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut failures = Vec::new();
    for worker in workers {
        let (s, f) = worker.await.expect("a worker panicked");
        for (status, n) in s {
            *statuses.entry(status).or_default() += n;
        }
        failures.extend(f);
    }
    eprintln!("fuzz: {cases} cases, seed {seed}, statuses {statuses:?}");
    let report: Vec<String> = failures
        .iter()
        .take(5)
        .map(|f| format!("{} => {}", f.case, f.problem))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed (seed {seed}); first ones:\n{}",
        failures.len(),
        report.join("\n")
    );
    assert!(
        statuses.keys().all(|s| *s < 500),
        "5xx answers: {statuses:?}"
    );
    // Some requests must have got through to the handlers and stored something.
    assert!(
        statuses.get(&202).copied().unwrap_or(0) + statuses.get(&200).copied().unwrap_or(0) > 0
    );

    let (status, _) = app.get("/readyz", None).await;
    assert_eq!(status, 200, "the service is still ready");
    // Restarts of this app's actors (the metrics registry is shared by every test
    // of the process, so it cannot tell this app's restarts from another test's).
    let (_, health) = app.get("/healthz", None).await;
    let restarted: Vec<&Value> = health["actors"]
        .as_array()
        .expect("the supervised actors")
        .iter()
        .filter(|a| a["restarts"] != 0)
        .collect();
    assert!(restarted.is_empty(), "actors restarted: {restarted:?}");
    let current = app.ctx.ingest.products.get(&product_id);
    assert!(
        current.is_some_and(|h| h.actor.get_id() == actor.actor.get_id()),
        "the product actor failed and was replaced"
    );
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One generated request through reqwest; `Ok(status)` when the answer is fine.
async fn http_case(app: &TestApp, target: &Target, rng: &mut StdRng) -> Result<u16, Failure> {
    let (route_method, path) = random_path(rng, target);
    let method = if rng.random_ratio(4, 5) {
        route_method
    } else {
        *pick(
            rng,
            &["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"],
        )
    };
    let body = random_body(rng, target, &path);
    let mut request = app.client.request(
        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
        format!("http://{}{path}", app.addr),
    );
    match rng.random_range(0..7) {
        0..=2 => request = request.bearer_auth(pick(rng, &target.tokens)),
        3 => request = request.header("authorization", printable(rng, 0..80)),
        4 => request = request.bearer_auth(printable(rng, 0..300)),
        _ => {}
    }
    if rng.random_ratio(1, 3) {
        let origin = *pick(
            rng,
            &["https://fuzz.example", "https://evil.example", "null", ""],
        );
        request = request.header("origin", origin);
    }
    if rng.random_ratio(1, 6) {
        request = request.header("access-control-request-method", "POST");
    }
    if rng.random_ratio(2, 3) {
        request = request.header("content-type", "application/json");
    }
    if let Some(body) = &body {
        let signature = if rng.random_ratio(1, 2) {
            sign(Platform::Custom, target.secret.as_bytes(), body)
        } else {
            printable(rng, 0..100)
        };
        let header = pick(
            rng,
            &[
                "x-signature",
                "x-shopify-hmac-sha256",
                "x-wc-webhook-signature",
            ],
        );
        request = request.header(*header, signature);
    }
    for _ in 0..rng.random_range(0..3) {
        let name = format!("x-fuzz-{}", rng.random_range(0..1000));
        request = request.header(name, printable(rng, 0..200));
    }
    if rng.random_ratio(1, 10) {
        request = request.header("x-request-id", printable(rng, 0..200));
    }
    if let Some(body) = body.clone() {
        request = request.body(body);
    }
    let case = format!(
        "{method} {path} body({} bytes)={}",
        body.as_ref().map_or(0, Vec::len),
        body.as_deref()
            .map(|b| String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned())
            .unwrap_or_default()
    );
    let fail = |problem: String| Failure {
        case: case.clone(),
        problem,
    };
    let oversized = body.as_ref().is_some_and(|b| b.len() as u64 > BODY_LIMIT);
    let response = match tokio::time::timeout(REQUEST_LIMIT, request.send()).await {
        Err(_) => return Err(fail("no answer in time (hang)".into())),
        // The server answers 413 and closes while a too large body is still
        // being written: the client may only see the connection close.
        Ok(Err(_)) if oversized => return Ok(0),
        Ok(Err(err)) => return Err(fail(format!("connection failed: {err:?}"))),
        Ok(Ok(response)) => response,
    };
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = match tokio::time::timeout(REQUEST_LIMIT, response.text()).await {
        Ok(Ok(text)) => text,
        // Closing with unread request bytes resets the connection (TCP RST),
        // which may cut the answer short: only for a too large request body.
        Ok(Err(_)) if oversized => return Ok(0),
        Ok(Err(err)) => return Err(fail(format!("body failed: {err}"))),
        Err(_) => return Err(fail("body never ended (hang)".into())),
    };
    if status >= 500 {
        return Err(fail(format!("{status}: {text}")));
    }
    // 431 comes from the HTTP codec itself, before any route; HEAD has no body.
    if status >= 400 && status != 431 && method != "HEAD" {
        let problem: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if content_type != "application/problem+json" || problem["status"] != status {
            return Err(fail(format!(
                "{status} without a problem+json body ({content_type}): {text}"
            )));
        }
    }
    Ok(status)
}

/// Raw bytes on a fresh connection: whatever comes back must not be a 5xx, and
/// the connection must not hang.
async fn raw_case(app: &TestApp, rng: &mut StdRng) -> Result<u16, Failure> {
    let request: Vec<u8> = match rng.random_range(0..4) {
        0 => (0..rng.random_range(1..512))
            .map(|_| rng.random())
            .collect(),
        1 => format!(
            "{} {} HTTP/1.1\r\nHost: x\r\n\r\n",
            printable(rng, 0..20),
            printable(rng, 0..200)
        )
        .into_bytes(),
        2 => format!(
            "POST /v1/interactions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{}",
            pick(rng, &["5", "-1", "99999999999999999999", "abc", "0"]),
            printable(rng, 0..50)
        )
        .into_bytes(),
        _ => format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\n{}: {}\r\nTransfer-Encoding: {}\r\n\r\n",
            printable(rng, 1..30).replace(':', ""),
            printable(rng, 0..100),
            pick(rng, &["chunked", "gzip", "chunked, chunked", "identity"])
        )
        .into_bytes(),
    };
    let case = format!(
        "raw {:?}",
        String::from_utf8_lossy(&request[..request.len().min(200)])
    );
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(app.addr).await?;
        stream.write_all(&request).await?;
        stream.shutdown().await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = match tokio::time::timeout(REQUEST_LIMIT, exchange).await {
        Err(_) => {
            return Err(Failure {
                case,
                problem: "no answer in time (hang)".into(),
            });
        }
        // A reset connection is a fair answer to garbage.
        Ok(Err(_)) => return Ok(0),
        Ok(Ok(answer)) => answer,
    };
    let head = String::from_utf8_lossy(&answer[..answer.len().min(12)]).into_owned();
    let status: u16 = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    if status >= 500 {
        return Err(Failure {
            case,
            problem: String::from_utf8_lossy(&answer).into_owned(),
        });
    }
    Ok(status)
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// Printable ASCII (what reqwest accepts in a header value).
fn printable(rng: &mut StdRng, len: std::ops::Range<usize>) -> String {
    let n = rng.random_range(len);
    (0..n)
        .map(|_| rng.random_range(b' '..=b'~') as char)
        .collect()
}

/// A path and the method of the route it was made from.
fn random_path(rng: &mut StdRng, target: &Target) -> (&'static str, String) {
    if rng.random_ratio(1, 10) {
        let segments: Vec<String> = (0..rng.random_range(0..6))
            .map(|_| {
                pick(
                    rng,
                    &[
                        "v1",
                        "..",
                        "%00",
                        "%2e%2e",
                        "products",
                        "webhooks",
                        "interactions",
                        "x",
                    ],
                )
                .to_string()
            })
            .collect();
        return ("GET", format!("/{}", segments.join("/")));
    }
    let (method, template) = *pick(rng, ROUTES);
    let mut path = String::new();
    for segment in template.trim_start_matches('/').split('/') {
        path.push('/');
        let value = match segment {
            "{id}" if template.starts_with("/v1/campaigns") => match rng.random_range(0..4) {
                0 | 1 => target.campaign.to_string(),
                2 => rng.random::<i64>().to_string(),
                _ => printable(rng, 0..20).replace(['/', '?', '#', ' ', '%'], "x"),
            },
            "{id}" | "{product_id}" => match rng.random_range(0..4) {
                0 | 1 => target.product.clone(),
                2 => format!("0x{}", hex::encode(rng.random::<[u8; 32]>())),
                _ => printable(rng, 0..80).replace(['/', '?', '#', ' ', '%'], "x"),
            },
            "{wallet}" | "{address}" => match rng.random_range(0..3) {
                0 => format!("0x{}", hex::encode(rng.random::<[u8; 20]>())),
                1 => "0xEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEE".into(),
                _ => printable(rng, 0..50).replace(['/', '?', '#', ' ', '%'], "x"),
            },
            "{platform}" => {
                pick(rng, &["custom", "shopify", "woocommerce", "magento", ""]).to_string()
            }
            literal => literal.to_owned(),
        };
        path.push_str(&value);
    }
    if rng.random_ratio(1, 4) {
        let query = pick(
            rng,
            &[
                "limit=-1",
                "limit=99999999999",
                "type=purchase.completed",
                "type=",
                "a=%ff",
                "limit=abc",
            ],
        );
        path = format!("{path}?{query}");
    }
    (method, path)
}

fn random_body(rng: &mut StdRng, target: &Target, path: &str) -> Option<Vec<u8>> {
    match rng.random_range(0..20) {
        0..=2 => None,
        3..=11 => {
            let mut value = valid_body(rng, target, path);
            if rng.random_ratio(1, 2) {
                for _ in 0..rng.random_range(1..3) {
                    mutate(rng, &mut value);
                }
            }
            Some(value.to_string().into_bytes())
        }
        12..=14 => Some(random_json(rng, 4).to_string().into_bytes()),
        15 | 16 => {
            let mut bytes = valid_body(rng, target, path).to_string().into_bytes();
            let cut = rng.random_range(0..=bytes.len());
            bytes.truncate(cut);
            if !bytes.is_empty() {
                let i = rng.random_range(0..bytes.len());
                bytes[i] = rng.random();
            }
            Some(bytes)
        }
        17 => Some(
            (0..rng.random_range(0..2048))
                .map(|_| rng.random())
                .collect(),
        ),
        18 => {
            let depth = rng.random_range(10..5000);
            Some(format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes())
        }
        _ => {
            let size = pick(rng, &[1024 * 1024 - 10, 1024 * 1024 + 1, 3 * 1024 * 1024]);
            Some(format!("{{\"x\":\"{}\"}}", "a".repeat(*size)).into_bytes())
        }
    }
}

/// A request body one of the routes would accept; mostly the one of `path`.
fn valid_body(rng: &mut StdRng, target: &Target, path: &str) -> Value {
    let product = &target.product;
    let wallet = format!("0x{}", hex::encode(rng.random::<[u8; 20]>()));
    let order = format!("F-{}", rng.random_range(0..1_000_000));
    let fitting = [
        ("/v1/interactions", 0..2),
        ("/v1/webhooks/", 2..3),
        ("/campaigns", 4..5),
        ("/banks", 5..6),
        ("/administrators", 6..7),
        ("/webhook", 7..8),
        ("/v1/auth/wallet", 8..9),
        ("/v1/products", 3..4),
    ]
    .into_iter()
    .find(|(part, _)| path.contains(part))
    .map(|(_, kinds)| kinds);
    let kind = match fitting {
        Some(kinds) if rng.random_ratio(4, 5) => rng.random_range(kinds),
        _ => rng.random_range(0..10),
    };
    match kind {
        0 => json!({"product_id": product, "type": "purchase.completed",
            "data": {"order_id": order, "amount": "12.90"}, "idempotency_key": order}),
        1 => json!({"interactions": [
            {"product_id": product, "type": "webshop.open", "data": {"p": order}},
            {"product_id": product, "type": "referral.referred", "referrer": wallet}]}),
        2 => json!({"id": order, "status": pick(rng, &["paid", "refunded", "cancelled"]),
            "wallet": wallet, "amount": "10.00", "currency": "EUR", "items": [{"sku": "a"}]}),
        3 => json!({"domain": format!("f{}.example", rng.random_range(0..1000)), "name": "Fuzz"}),
        4 => {
            json!({"name": "Fuzz", "trigger": "purchase.completed", "token": format!("0x{}", "70".repeat(20)),
            "reward": {"type": "range", "min": "1", "max": "100", "beta_bps": 20000}, "budget_cap": "1000"})
        }
        5 => {
            json!({"chain_id": 31337, "bank_address": wallet, "token": wallet, "symbol": "F", "decimals": 18})
        }
        6 => json!({"wallet": wallet, "roles": ["campaign_manager"]}),
        7 => json!({"platform": "custom", "grace_period_secs": 60}),
        8 => json!({"message": "fuzz.example wants you to sign in", "signature": "0x00"}),
        _ => json!({"allowed_origins": ["https://fuzz.example"], "is_active": true}),
    }
}

/// Replaces, removes or adds one field somewhere in the value.
fn mutate(rng: &mut StdRng, value: &mut Value) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = pick(rng, &keys).clone();
            match rng.random_range(0..4) {
                0 => {
                    map.remove(&key);
                }
                1 => {
                    map.insert(printable(rng, 0..10), random_json(rng, 2));
                }
                2 => mutate(rng, map.get_mut(&key).expect("present")),
                _ => {
                    map.insert(key, random_json(rng, 3));
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let i = rng.random_range(0..items.len());
            mutate(rng, &mut items[i]);
        }
        other => *other = random_json(rng, 2),
    }
}

fn random_json(rng: &mut StdRng, depth: u32) -> Value {
    let leaf = depth == 0 || rng.random_ratio(1, 2);
    match rng.random_range(0..if leaf { 7 } else { 9 }) {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!(rng.random::<i64>()),
        3 => json!(*pick(rng, &[u64::MAX, 0, 1, 255, 1 << 53])),
        4 => json!(rng.random::<f64>() * 1e300),
        5 => json!(printable(rng, 0..40)),
        6 => {
            let chars: String = (0..rng.random_range(0..20))
                .map(|_| char::from_u32(rng.random_range(0..0x10_FFFF)).unwrap_or('\u{FFFD}'))
                .collect();
            json!(chars)
        }
        7 => Value::Array(
            (0..rng.random_range(0..5))
                .map(|_| random_json(rng, depth - 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.random_range(0..5))
                .map(|_| (printable(rng, 0..12), random_json(rng, depth - 1)))
                .collect(),
        ),
    }
}
