//! Telemetry as a spec: what `/metrics` exports is exactly the catalogue (names,
//! types, help, label names), the dashboards and alerts only query declared
//! metrics, and every request gets an id back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use rewardflow::telemetry::{CATALOGUE, MetricDef, MetricKind};
use serde_json::{Value, json};

use crate::campaigns::{campaign, owner, product_with_bank, purchase, refer, wallet};
use crate::common::TestApp;

/// Emitted by the on-chain pusher and the indexer: present only when another test
/// of this process ran them (the recorder is process-wide), so not required here;
/// `scripts/check-observability.sh` requires them against `rewardflow dev`.
const NOT_EMITTED_BY_TEST_APP: &[&str] = &[
    "rewardflow_rewards_outstanding",
    "rewardflow_rewards_oldest_pending_age_seconds",
    "rewardflow_push_rewards_total",
    "rewardflow_push_batches_total",
    "rewardflow_push_duration_seconds",
    "rewardflow_push_gas_per_reward",
    "rewardflow_push_errors_total",
    "rewardflow_chain_calls_total",
    "rewardflow_indexer_head_lag_blocks",
    "rewardflow_indexer_block",
    "rewardflow_indexer_events_total",
    "rewardflow_indexer_reorgs_total",
    "rewardflow_webhooks_total",
];

/// One exported family: its TYPE, HELP and the label names of its series.
#[derive(Debug, Default)]
struct Family {
    kind: Option<String>,
    help: Option<String>,
    label_sets: BTreeSet<Vec<String>>,
}

#[tokio::test]
async fn metrics_export_exactly_the_catalogue() {
    let app = TestApp::spawn_with(|s| {
        s.supervisor.maintenance_interval_ms = 50;
        s.rate_limit.per_wallet_per_hour = 20;
    })
    .await;
    drive_traffic(&app).await;
    // The campaign and process gauges come from the maintenance tick.
    let text = wait_for_metric(&app, "rewardflow_campaigns{").await;
    let families = parse_exposition(&text);

    for def in CATALOGUE {
        let listed = NOT_EMITTED_BY_TEST_APP.contains(&def.name);
        let Some(family) = families.get(def.name) else {
            assert!(listed, "{} is declared but not exported", def.name);
            continue;
        };
        // (The recorder is process-wide: the chain tests in this binary may have
        // exported a listed family already; it is then checked like the others.)
        let _ = listed;
        assert_eq!(
            family.kind.as_deref(),
            Some(kind_name(def)),
            "TYPE of {}",
            def.name
        );
        assert_eq!(
            family.help.as_deref(),
            Some(def.help),
            "HELP of {}",
            def.name
        );
        let declared: Vec<String> = def.labels.iter().map(|l| l.to_string()).collect();
        for labels in &family.label_sets {
            let mut labels = labels.clone();
            if def.kind == MetricKind::Histogram {
                labels.retain(|l| l != "le");
            }
            assert_eq!(
                sorted(labels),
                sorted(declared.clone()),
                "label names of {}",
                def.name
            );
        }
    }
    for name in families.keys().filter(|n| n.starts_with("rewardflow_")) {
        assert!(
            CATALOGUE.iter().any(|d| d.name == name),
            "{name} is exported but not declared in telemetry.rs"
        );
    }
}

/// Real requests that make every metric the test app can emit appear.
async fn drive_traffic(app: &TestApp) {
    let product = product_with_bank(app, "telemetry.example").await;
    campaign(
        app,
        &product,
        json!({"budget_cap": "100000000000000000000"}),
    )
    .await;
    let (user, referrer) = (wallet(900), wallet(901));
    refer(app, &product, user, referrer).await;
    let body = purchase(app, &product, user).await;
    assert_eq!(body["rewards"].as_array().unwrap().len(), 2, "{body}");
    // Rejected: unknown product; refused: over the wallet's rate limit.
    let token = app.token(wallet(902));
    let (status, _) = app
        .post(
            "/v1/interactions",
            &json!({"product_id": format!("0x{}", "ab".repeat(32)), "type": "webshop.open"}),
            Some(&token),
        )
        .await;
    assert_eq!(status, 422);
    let mut limited = false;
    for i in 0..25 {
        let (status, _) = app
            .post(
                "/v1/interactions",
                &json!({"product_id": product, "type": "webshop.open", "data": {"i": i}}),
                Some(&token),
            )
            .await;
        limited |= status == 429;
    }
    assert!(limited, "the wallet limit never answered 429");
    let (status, body) = app
        .sign_in_as(&PrivateKeySigner::random(), "localhost")
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = app
        .get(&format!("/v1/products/{product}"), Some(&owner(app)))
        .await;
    assert_eq!(status, 200);
}

/// Scrapes until `needle` shows up (bounded), returning that scrape.
async fn wait_for_metric(app: &TestApp, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = app.metrics().await;
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{needle} never appeared:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn kind_name(def: &MetricDef) -> &'static str {
    match def.kind {
        MetricKind::Counter => "counter",
        MetricKind::Gauge => "gauge",
        MetricKind::Histogram => "histogram",
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The Prometheus text format, as far as this test needs it: HELP and TYPE per
/// family, and each series' label names (values may hold escaped quotes, commas
/// and braces).
fn parse_exposition(text: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            families.entry(name.into()).or_default().help = Some(help.into());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            families.entry(name.into()).or_default().kind = Some(kind.into());
        } else if !line.starts_with('#') {
            let (series, labels) = parse_sample(line);
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| series.strip_suffix(suffix))
                .find(|base| {
                    families
                        .get(*base)
                        .is_some_and(|f| f.kind.as_deref() == Some("histogram"))
                })
                .unwrap_or(series);
            let entry = families.get_mut(family);
            let entry = entry.unwrap_or_else(|| panic!("sample before its TYPE: {line}"));
            if family == series || series.ends_with("_bucket") {
                entry.label_sets.insert(labels);
            }
        }
    }
    families
}

/// A sample line's series name and label names.
fn parse_sample(line: &str) -> (&str, Vec<String>) {
    let name_end = line.find(['{', ' ']).expect("a sample has a value");
    let name = &line[..name_end];
    let mut labels = Vec::new();
    if line[name_end..].starts_with('{') {
        let mut rest = &line[name_end + 1..];
        while !rest.starts_with('}') {
            let (label, after) = rest.split_once("=\"").expect("label=\"value\"");
            labels.push(label.trim_start_matches(',').to_owned());
            let mut chars = after.char_indices();
            let close = loop {
                match chars.next().expect("closing quote") {
                    (_, '\\') => {
                        chars.next();
                    }
                    (i, '"') => break i,
                    _ => {}
                }
            };
            rest = &after[close + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    (name, labels)
}

#[tokio::test]
async fn every_request_gets_an_id_back() {
    let app = TestApp::spawn().await;
    let id_of = |response: &reqwest::Response| {
        response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    let generated = id_of(&response);
    assert_eq!(
        uuid::Uuid::parse_str(&generated).unwrap().get_version_num(),
        7
    );
    let again = id_of(&app.client.get(app.url("/healthz")).send().await.unwrap());
    assert_ne!(generated, again, "ids are per request");

    let product = crate::interactions::create_product(&app, "request-id.example").await;
    let response = app
        .client
        .post(app.url("/v1/interactions"))
        .bearer_auth(app.token(Address::repeat_byte(0x31)))
        .header("x-request-id", "checkout-7f3a")
        .json(&json!({"product_id": product, "type": "webshop.open"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(
        id_of(&response),
        "checkout-7f3a",
        "a sane client id is kept"
    );

    // Rejections (no route, bad token) carry one too; an unusable client id is replaced.
    let response = app
        .client
        .get(app.url("/no/such/route"))
        .header("x-request-id", "not acceptable: spaces")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(uuid::Uuid::parse_str(&id_of(&response)).is_ok());
    let response = app
        .client
        .get(app.url("/v1/products"))
        .bearer_auth("garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(!id_of(&response).is_empty());
}

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn dashboards() -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo_file("grafana/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((path, value));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every `rewardflow_*` name in `text` must be declared (histograms also as their
/// `_bucket`, `_sum` and `_count` series).
fn undeclared_names(text: &str) -> Vec<String> {
    let mut undeclared = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("rewardflow_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let declared = CATALOGUE.iter().any(|d| {
            d.name == name
                || (d.kind == MetricKind::Histogram
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name.strip_suffix(s) == Some(d.name)))
        });
        if !declared {
            undeclared.push(name.to_owned());
        }
        rest = &tail[end..];
    }
    undeclared
}

#[test]
fn dashboards_are_complete_and_query_only_declared_metrics() {
    let dashboards = dashboards();
    let uids: BTreeSet<&str> = dashboards
        .iter()
        .map(|(_, d)| d["uid"].as_str().expect("a fixed uid"))
        .collect();
    assert_eq!(
        uids,
        BTreeSet::from([
            "rewardflow-campaigns",
            "rewardflow-chain",
            "rewardflow-ingestion",
            "rewardflow-runtime"
        ])
    );
    for (path, dashboard) in &dashboards {
        let file = path.display();
        assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
        let panels = dashboard["panels"].as_array().expect("panels");
        let mut ids = BTreeSet::new();
        for panel in panels.iter().filter(|p| p["type"] != "row") {
            let title = panel["title"].as_str().unwrap_or_default();
            assert!(!title.is_empty(), "{file}: a panel without a title");
            assert!(
                ids.insert(panel["id"].as_u64().expect("panel id")),
                "{file}: {title}: duplicate id"
            );
            assert!(
                panel["description"].as_str().is_some_and(|d| d.len() > 20),
                "{file}: {title}: no description"
            );
            assert!(
                panel["fieldConfig"]["defaults"]["unit"]
                    .as_str()
                    .is_some_and(|u| !u.is_empty()),
                "{file}: {title}: no unit"
            );
            assert_eq!(
                panel["datasource"]["uid"], "rewardflow-prometheus",
                "{file}: {title}: datasource"
            );
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{file}: {title}: no query");
            for target in targets {
                let expr = target["expr"].as_str().expect("expr");
                assert!(expr.contains("rewardflow_"), "{file}: {title}: {expr}");
                assert_eq!(
                    undeclared_names(expr),
                    Vec::<String>::new(),
                    "{file}: {title}"
                );
            }
        }
    }
}

#[test]
fn alert_rules_query_only_declared_metrics() {
    let rules = std::fs::read_to_string(repo_file("prometheus/alerts.yml")).unwrap();
    assert!(rules.matches("- alert: ").count() >= 10, "{rules}");
    assert_eq!(undeclared_names(&rules), Vec::<String>::new());
    for (name, text) in rules
        .split("- alert: ")
        .skip(1)
        .map(|r| r.split_once('\n').unwrap())
    {
        for key in ["expr:", "summary:", "description:", "runbook:"] {
            assert!(text.contains(key), "alert {name} has no {key}");
        }
    }
}

#[test]
fn the_scanner_catches_undeclared_names() {
    assert_eq!(
        undeclared_names("sum(rate(rewardflow_http_requests_total[1m])) / rewardflow_nope"),
        vec!["rewardflow_nope".to_owned()]
    );
    assert!(undeclared_names("rewardflow_writer_batch_rows_bucket").is_empty());
    assert_eq!(
        undeclared_names("rewardflow_ready_bucket"),
        vec!["rewardflow_ready_bucket".to_owned()]
    );
}
