//! The harness: one throwaway PostgreSQL cluster per test process (started here,
//! stopped when the process exits), a fresh migrated database per test, and the
//! real service on 127.0.0.1:0.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use rewardflow::app::{App, AppContext, AppError};
use rewardflow::config::{Secret, Settings};
use rewardflow::db::local_cluster::LocalCluster;
use rewardflow::domain::{session_token, siwe};
use serde_json::Value;
use sqlx::Connection;
use tokio::sync::OnceCell;

const TEMPLATE: &str = "rewardflow_template";

pub fn cluster() -> &'static LocalCluster {
    static CLUSTER: OnceLock<LocalCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        LocalCluster::start_ephemeral(Path::new("")).expect("starting the test PostgreSQL cluster")
    })
}

/// A new database with every migration applied (cloned from a migrated template).
pub async fn fresh_database() -> String {
    static TEMPLATE_READY: OnceCell<()> = OnceCell::const_new();
    let cluster = cluster();
    TEMPLATE_READY
        .get_or_init(|| async {
            admin(&format!("CREATE DATABASE {TEMPLATE}")).await;
            let pool = sqlx::PgPool::connect(&cluster.url(TEMPLATE)).await.unwrap();
            rewardflow::db::migrate(&pool).await.unwrap();
            pool.close().await;
        })
        .await;
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    admin(&format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}")).await;
    cluster.url(&name)
}

/// A new database with nothing in it.
pub async fn empty_database() -> String {
    let name = format!("e_{}", uuid::Uuid::new_v4().simple());
    admin(&format!("CREATE DATABASE {name}")).await;
    cluster().url(&name)
}

pub async fn admin(sql: &str) {
    let mut conn = sqlx::PgConnection::connect(&cluster().url("postgres"))
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

pub fn test_settings(database_url: &str) -> Settings {
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    settings.database.url = Secret::new(database_url);
    settings.database.max_connections = 5;
    settings.database.min_connections = 0;
    settings.auth.jwt_secret =
        Secret::new(format!("test-secret-{}", uuid::Uuid::new_v4().simple()));
    settings
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub ctx: Arc<AppContext>,
    pub client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), AppError>>>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = test_settings(&fresh_database().await);
        adjust(&mut settings);
        Self::start(settings).await.expect("the app starts")
    }

    pub async fn start(settings: Settings) -> Result<Self, AppError> {
        let listener = tokio::net::TcpListener::bind(settings.server.listen)
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let app = App::build(settings).await?;
        let ctx = app.context();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(app.serve(listener, async move {
            let _ = rx.await;
        }));
        Ok(Self {
            addr,
            ctx,
            client: reqwest::Client::new(),
            shutdown: Some(tx),
            server: Some(server),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A session token for `wallet`, as `rewardflow token` would mint it.
    pub fn token(&self, wallet: Address) -> String {
        session_token::mint(
            self.ctx.jwt_secret.expose().as_bytes(),
            wallet,
            chrono::Utc::now().timestamp(),
            3600,
        )
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        read(request.send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, body: &Value, token: Option<&str>) -> (u16, Value) {
        let mut request = self.client.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        read(request.send().await.unwrap()).await
    }

    pub async fn patch_json(&self, path: &str, body: &Value, token: &str) -> (u16, Value) {
        let request = self
            .client
            .patch(self.url(path))
            .json(body)
            .bearer_auth(token);
        read(request.send().await.unwrap()).await
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let response = self.client.get(self.url("/metrics")).send().await.unwrap();
        response.text().await.unwrap()
    }

    /// Nonce → EIP-4361 message for `domain` → EIP-191 signature → sign-in request.
    pub async fn sign_in_as(&self, signer: &PrivateKeySigner, domain: &str) -> (u16, Value) {
        let (status, nonce) = self.post("/v1/auth/nonce", &Value::Null, None).await;
        assert_eq!(status, 201, "{nonce}");
        let message = siwe_message(signer.address(), domain, nonce["nonce"].as_str().unwrap());
        let signature = signer.sign_message_sync(message.as_bytes()).unwrap();
        self.post(
            "/v1/auth/wallet",
            &serde_json::json!({"message": message, "signature": format!("0x{}", hex::encode(signature.as_bytes()))}),
            None,
        )
        .await
    }

    /// Fails the product's running actor; its supervisor starts another.
    pub fn crash_product_actor(&self, product: &str) {
        let key = rewardflow::domain::ids::parse_bytes32(product).unwrap();
        let handle = self.ctx.ingest.products.get(&key).expect("running");
        handle
            .actor
            .cast(rewardflow::actors::product::ProductMsg::Crash)
            .unwrap();
    }

    /// Sends `attempt` until it is answered `expected` — a product actor that is
    /// restarting answers 503 meanwhile, never anything else — for at most 10 s;
    /// returns that answer's body.
    pub async fn until_served<F, Fut>(&self, expected: u16, mut attempt: F) -> Value
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = (u16, Value)>,
    {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = attempt().await;
            if status == expected {
                return body;
            }
            assert_eq!(status, 503, "{body}");
            assert!(
                Instant::now() < deadline,
                "the product actor never came back"
            );
        }
    }

    /// Graceful shutdown; returns what `serve` returned.
    pub async fn stop(mut self) -> Result<(), AppError> {
        let _ = self.shutdown.take().unwrap().send(());
        self.server.take().unwrap().await.unwrap()
    }
}

pub fn siwe_message(address: Address, domain: &str, nonce: &str) -> String {
    let now = chrono::Utc::now();
    siwe::format_message(
        domain,
        address,
        &format!("http://{domain}"),
        31337,
        nonce,
        now,
        Some(now + chrono::Duration::minutes(10)),
    )
}

/// Status and JSON body (Null when the body is not JSON).
pub async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Asserts a problem+json body of the given status.
pub fn assert_problem(status: u16, body: &Value, expected: u16) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["status"], expected, "{body}");
    for key in ["type", "title", "detail", "errors"] {
        assert!(body.get(key).is_some(), "problem without {key}: {body}");
    }
}
