use alloy::primitives::Address;
use serde_json::{Value, json};

use crate::common::{TestApp, assert_problem, read};
use crate::interactions::create_product;

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app.client.request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    read(request.send().await.unwrap()).await
}

#[tokio::test]
async fn every_role_boundary_of_the_business_routes() {
    use reqwest::Method;
    let app = TestApp::spawn().await;
    let product = create_product(&app, "roles.example").await;
    let owner = app.token(Address::repeat_byte(0xee));
    let (admin_w, manager_w, stranger_w) = (
        Address::repeat_byte(0xa1),
        Address::repeat_byte(0xa2),
        Address::repeat_byte(0xa3),
    );
    let (admin, manager, stranger) = (
        app.token(admin_w),
        app.token(manager_w),
        app.token(stranger_w),
    );
    let admins = format!("/v1/products/{product}/administrators");

    let (status, body) = send(
        &app,
        Method::POST,
        &admins,
        Some(&owner),
        Some(json!({"wallet": format!("{admin_w:#x}"), "roles": ["admin"]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = send(
        &app,
        Method::POST,
        &admins,
        Some(&admin),
        Some(json!({"wallet": format!("{manager_w:#x}"), "roles": ["campaign_manager"]})),
    )
    .await;
    assert_eq!(status, 200, "an admin can grant roles");
    let (status, listed) = send(&app, Method::GET, &admins, Some(&manager), None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["administrators"].as_array().unwrap().len(), 2);
    assert_eq!(
        listed["administrators"][1]["roles"],
        json!(["campaign_manager"])
    );

    let bank = json!({"chain_id": 1, "bank_address": format!("0x{}", "ba".repeat(20)), "token": format!("0x{}", "70".repeat(20)), "symbol": "R", "decimals": 18});
    let campaign = json!({"name": "C", "trigger": "webshop.open", "token": format!("0x{}", "70".repeat(20)), "reward": {"type": "fixed", "amount": "1"}});
    let banks = format!("/v1/products/{product}/banks");
    let campaigns = format!("/v1/products/{product}/campaigns");
    let patch = format!("/v1/products/{product}");
    let webhook = format!("/v1/products/{product}/webhook");
    // A campaign for the routes by id (the owner sets up its bank first).
    let (status, _) = send(&app, Method::POST, &banks, Some(&owner), Some(bank.clone())).await;
    assert_eq!(status, 201);
    let (status, created) = send(
        &app,
        Method::POST,
        &campaigns,
        Some(&owner),
        Some(campaign.clone()),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let one = format!("/v1/campaigns/{}", created["id"]);
    let (activate, pause, deactivate, stats) = (
        format!("{one}/activate"),
        format!("{one}/pause"),
        format!("{one}/deactivate"),
        format!("{one}/stats"),
    );
    let nobody = format!("{admins}/0x{}", "c4".repeat(20));
    // (route, method, body, allowed for: [owner, admin, manager, stranger])
    let cases: Vec<(&str, Method, Option<Value>, [bool; 4])> = vec![
        (&banks, Method::POST, Some(bank), [true, true, false, false]),
        (
            &campaigns,
            Method::POST,
            Some(campaign),
            [true, true, true, false],
        ),
        (&campaigns, Method::GET, None, [true, true, true, false]),
        (&patch, Method::GET, None, [true, true, true, false]),
        (
            &patch,
            Method::PATCH,
            Some(json!({"name": "Renamed"})),
            [true, true, false, false],
        ),
        (&admins, Method::GET, None, [true, true, true, false]),
        (
            &admins,
            Method::POST,
            Some(json!({"wallet": format!("0x{}", "b1".repeat(20)), "roles": ["oracle_updater"]})),
            [true, true, false, false],
        ),
        (&nobody, Method::DELETE, None, [true, true, false, false]),
        (&banks, Method::GET, None, [true, true, true, false]),
        (
            &webhook,
            Method::PUT,
            Some(json!({"platform": "custom"})),
            [true, true, false, false],
        ),
        (&one, Method::GET, None, [true, true, true, false]),
        (
            &one,
            Method::PATCH,
            Some(json!({"name": "Renamed"})),
            [true, true, true, false],
        ),
        (&activate, Method::POST, None, [true, true, true, false]),
        (&pause, Method::POST, None, [true, true, true, false]),
        (&stats, Method::GET, None, [true, true, true, false]),
        (&deactivate, Method::POST, None, [true, true, true, false]),
    ];
    for (path, method, body, allowed) in cases {
        for (who, token) in [&owner, &admin, &manager, &stranger]
            .into_iter()
            .enumerate()
        {
            let (status, reply) = send(&app, method.clone(), path, Some(token), body.clone()).await;
            // An allowed caller may still be told the state forbids it (409: already
            // active…) or that the target does not exist (404).
            let ok =
                (200..300).contains(&status) || (allowed[who] && (status == 409 || status == 404));
            assert_eq!(
                ok, allowed[who],
                "{method} {path} as #{who}: {status} {reply}"
            );
            if !allowed[who] {
                assert_problem(status, &reply, 403);
            }
        }
        let (status, reply) = send(&app, method.clone(), path, None, body.clone()).await;
        assert_problem(status, &reply, 401);
    }

    // Revoking takes effect at once; revoking again is 404; the owner cannot be granted.
    let revoke = format!("{admins}/{manager_w:#x}");
    let (status, _) = send(&app, Method::DELETE, &revoke, Some(&admin), None).await;
    assert_eq!(status, 204);
    let (status, body) = send(&app, Method::GET, &campaigns, Some(&manager), None).await;
    assert_problem(status, &body, 403);
    let (status, body) = send(&app, Method::DELETE, &revoke, Some(&admin), None).await;
    assert_problem(status, &body, 404);
    let (status, body) = send(
        &app,
        Method::POST,
        &admins,
        Some(&owner),
        Some(json!({"wallet": format!("{:#x}", Address::repeat_byte(0xee)), "roles": ["admin"]})),
    )
    .await;
    assert_problem(status, &body, 422);
    let (status, body) = send(
        &app,
        Method::POST,
        &admins,
        Some(&owner),
        Some(json!({"wallet": format!("{stranger_w:#x}"), "roles": ["root"]})),
    )
    .await;
    assert_problem(status, &body, 422);
}

#[tokio::test]
async fn a_product_patch_reaches_the_running_product_actor_at_once() {
    use reqwest::Method;
    let app = TestApp::spawn().await;
    let product = create_product(&app, "patch.example").await;
    let owner = app.token(Address::repeat_byte(0xee));
    let user = app.token(Address::repeat_byte(0x31));
    let interaction = |origin: &'static str| {
        app.client
            .post(app.url("/v1/interactions"))
            .bearer_auth(&user)
            .header("origin", origin)
            .json(&json!({"product_id": product, "type": "webshop.open", "data": {"o": origin}}))
            .send()
    };
    assert_eq!(
        interaction("https://patch.example").await.unwrap().status(),
        202
    );
    assert_eq!(
        interaction("http://localhost:3000").await.unwrap().status(),
        403
    );

    let path = format!("/v1/products/{product}");
    let (status, body) = send(
        &app,
        Method::PATCH,
        &path,
        Some(&owner),
        Some(json!({"allowed_origins": ["http://localhost:3000"]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["allowed_origins"], json!(["http://localhost:3000"]));
    assert_eq!(
        interaction("http://localhost:3000").await.unwrap().status(),
        202
    );
    assert_eq!(
        interaction("https://patch.example").await.unwrap().status(),
        403
    );

    let (status, _) = send(
        &app,
        Method::PATCH,
        &path,
        Some(&owner),
        Some(json!({"is_active": false})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = read(interaction("http://localhost:3000").await.unwrap()).await;
    assert_problem(status, &body, 422);
    let (status, body) = send(
        &app,
        Method::PATCH,
        &path,
        Some(&owner),
        Some(json!({"allowed_origins": ["nope"], "name": ""})),
    )
    .await;
    assert_problem(status, &body, 422);
    assert_eq!(body["errors"].as_array().unwrap().len(), 2);
}
