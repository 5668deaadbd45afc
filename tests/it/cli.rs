//! The `rewardflow` binary as operators and scripts use it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use alloy::primitives::Address;

use crate::common::{TestApp, fresh_database, test_settings};

fn rewardflow() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rewardflow"));
    // Start from a clean slate: no inherited REWARDFLOW_* and no ./config.toml (the
    // commands only read their working directory, so every test shares one, kept
    // under the build's own scratch space).
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("REWARDFLOW_")) {
        command.env_remove(key);
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-workdir");
    std::fs::create_dir_all(&dir).unwrap();
    command.current_dir(dir);
    command
}

/// A data directory of the test's own under the system's temporary directory,
/// removed when dropped (a `rewardflow dev` cluster is tens of megabytes).
struct DataDir(PathBuf);

impl DataDir {
    fn new(prefix: &str) -> Self {
        Self(std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple())))
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `rewardflow` child stopped (SIGTERM, then waited for) when dropped, so that a
/// failing test leaves no service, cluster or node running.
struct Running(Child);

impl Running {
    /// Stops the child and returns how it exited.
    fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .unwrap();
        self.0.wait().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.terminate();
        }
    }
}

#[test]
fn print_config_redacts_secrets() {
    let output = rewardflow()
        .arg("print-config")
        .env(
            "REWARDFLOW_AUTH__JWT_SECRET",
            "super-secret-value-super-secret-value",
        )
        .env(
            "REWARDFLOW_DATABASE__URL",
            "postgres://app:pa55word@db.internal:5432/rf",
        )
        .env("REWARDFLOW_SERVER__LISTEN", "0.0.0.0:9999")
        .env(
            "REWARDFLOW_CHAIN__RPC_URL",
            "https://eth.example/v2/N0DEKEY",
        )
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("listen = \"0.0.0.0:9999\""), "{text}");
    assert!(
        text.contains("postgres://app:***@db.internal:5432/rf"),
        "{text}"
    );
    assert!(
        text.contains("rpc_url = \"https://eth.example/…\""),
        "{text}"
    );
    for secret in ["pa55word", "super-secret-value", "N0DEKEY"] {
        assert!(!text.contains(secret), "{text}");
    }
    // A password given as a query parameter of the database URL.
    let output = rewardflow()
        .arg("print-config")
        .env(
            "REWARDFLOW_DATABASE__URL",
            "postgres://db.internal:5432/rf?user=app&password=s3cret",
        )
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("user=app&password=***"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}

#[test]
fn bad_configuration_names_the_key_and_fails() {
    let output = rewardflow()
        .arg("print-config")
        .env("REWARDFLOW_DATABASE__MAX_CONNECTIONS", "lots")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("database.max_connections"), "{stderr}");
    // "For ever" would overflow the dates it is added to.
    let output = rewardflow()
        .arg("print-config")
        .env("REWARDFLOW_AUTH__TOKEN_TTL_SECS", "10000000000000")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("auth.token_ttl_secs"), "{stderr}");

    let output = rewardflow()
        .args(["serve", "--listen", "not-an-address"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("server.listen") && stderr.contains("--listen"),
        "{stderr}"
    );

    let output = rewardflow().arg("serve").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8(output.stderr)
            .unwrap()
            .contains("database.url")
    );

    // Keys checked once the service builds are configuration errors too (exit 2).
    let output = rewardflow()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("REWARDFLOW_AUTH__JWT_SECRET", "short")
        .env(
            "REWARDFLOW_DATABASE__URL",
            "postgres://nobody@127.0.0.1:1/none",
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("auth.jwt_secret"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // A database that cannot be reached is not a configuration error (exit 1).
    let output = rewardflow()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env(
            "REWARDFLOW_AUTH__JWT_SECRET",
            "cli-test-secret-cli-test-secret-cli",
        )
        .env(
            "REWARDFLOW_DATABASE__URL",
            "postgres://nobody@127.0.0.1:1/none",
        )
        .env("REWARDFLOW_DATABASE__ACQUIRE_TIMEOUT_MS", "500")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
}

#[tokio::test]
async fn token_command_mints_what_the_server_accepts() {
    let data_dir = DataDir::new("rf-data");
    let wallet = Address::repeat_byte(0x42);
    let output = rewardflow()
        .args(["token", "--wallet", &format!("{wallet:#x}")])
        .env("REWARDFLOW_DEV__DATA_DIR", &data_dir.0)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap();
    let token = token.trim();
    assert_eq!(token.lines().count(), 1);

    // A server configured with the same data directory (and no explicit secret).
    let mut settings = test_settings(&fresh_database().await);
    settings.auth.jwt_secret = Default::default();
    settings.dev.data_dir = data_dir.0.clone();
    let app = TestApp::start(settings).await.unwrap();
    let (status, body) = app.get("/v1/products", Some(token)).await;
    assert_eq!(status, 200, "{body}");

    let output = rewardflow()
        .args(["token", "--wallet", "0xnope"])
        .output()
        .unwrap();
    assert!(!output.status.success());
}

/// Reads stdout lines until one starts with `prefix`. Unbuffered (a byte at a
/// time), so that nothing after the line is consumed before the next call.
fn wait_for_line(child: &mut Running, prefix: &str, seen: &mut Vec<String>) -> String {
    let stdout = child.0.stdout.as_mut().unwrap();
    loop {
        let mut bytes = Vec::new();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
            bytes.push(byte[0]);
        }
        assert!(
            !bytes.is_empty() || byte[0] == b'\n',
            "exited before printing {prefix:?}; saw {seen:?}"
        );
        let line = String::from_utf8_lossy(&bytes).trim().to_owned();
        seen.push(line.clone());
        if line.starts_with(prefix) {
            return line;
        }
    }
}

#[tokio::test]
async fn serve_and_migrate_print_and_exit_as_documented() {
    let url = crate::common::empty_database().await;
    let output = rewardflow()
        .args(["migrate", "--database-url", &url])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let applied = format!(
        "applied {} migration",
        rewardflow::db::MIGRATOR.iter().count()
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains(&applied));

    let mut child = Running(
        rewardflow()
            .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &url])
            .env("REWARDFLOW_DATABASE__MIGRATE_ON_START", "false")
            .env(
                "REWARDFLOW_AUTH__JWT_SECRET",
                "cli-test-secret-cli-test-secret-cli",
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut seen = Vec::new();
    let line = wait_for_line(&mut child, "listening on http://", &mut seen);
    let base = line.trim_start_matches("listening on ").to_owned();
    let response = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(response.status(), 200);
    let status = child.terminate();
    assert!(status.success(), "{status:?}");
}

/// `rewardflow dev`: its own durable cluster, the documented lines, and data that
/// survives a restart.
#[tokio::test]
async fn dev_runs_on_its_own_cluster_and_keeps_data_across_restarts() {
    let data_dir = DataDir::new("rf-dev");
    let start = || {
        Running(
            rewardflow()
                .args(["dev", "--listen", "127.0.0.1:0"])
                .env("REWARDFLOW_DEV__DATA_DIR", &data_dir.0)
                // PostgreSQL and anvil on free ports: the DATABASE_URL and RPC_URL
                // lines say which.
                .env("REWARDFLOW_DEV__POSTGRES_PORT", "0")
                .env("REWARDFLOW_DEV__ANVIL_PORT", "0")
                // The command runs in a scratch directory: the repository's tools by path.
                .env(
                    "REWARDFLOW_DEV__ANVIL_BIN",
                    crate::chain_fixture::anvil_bin(),
                )
                .env(
                    "REWARDFLOW_DEV__DEPLOY_SCRIPT",
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("contracts/scripts/deploy.sh"),
                )
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let wallet = Address::repeat_byte(0x99);
    let token = {
        let output = rewardflow()
            .args(["token", "--wallet", &format!("{wallet:#x}")])
            .env("REWARDFLOW_DEV__DATA_DIR", &data_dir.0)
            .output()
            .unwrap();
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    let client = reqwest::Client::new();

    let mut child = start();
    let mut seen = Vec::new();
    let db_line = wait_for_line(&mut child, "DATABASE_URL=postgres://", &mut seen);
    let pg_port: u16 = db_line
        .split_once("@127.0.0.1:")
        .and_then(|(_, rest)| rest.strip_suffix("/rewardflow"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{db_line}"));
    assert_ne!(pg_port, 0, "{db_line}");
    let value = |line: String| line.split_once('=').unwrap().1.to_owned();
    let rpc = value(wait_for_line(&mut child, "RPC_URL=", &mut seen));
    let anvil_port: u16 = rpc
        .strip_prefix("http://127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("RPC_URL {rpc}"));
    assert_ne!(anvil_port, 0, "{rpc}");
    wait_for_line(&mut child, "MULTI_TOKEN_PUSH_PULL=0x", &mut seen);
    let demo_product = value(wait_for_line(&mut child, "DEMO_PRODUCT_ID=0x", &mut seen));
    let demo_campaign = value(wait_for_line(&mut child, "DEMO_CAMPAIGN_ID=", &mut seen));
    let demo_token = value(wait_for_line(&mut child, "DEMO_TOKEN=0x", &mut seen));
    assert!(demo_campaign.parse::<i64>().is_ok(), "{seen:?}");
    let base = wait_for_line(&mut child, "listening on http://", &mut seen)
        .trim_start_matches("listening on ")
        .to_owned();
    // A browser on the demo product's origin may call the API.
    let preflight = client
        .request(reqwest::Method::OPTIONS, format!("{base}/v1/interactions"))
        .header("origin", "https://demo.rewardflow.local")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    // The demo campaign pays a purchase; the reward lands on-chain, claimable.
    let response = client
        .post(format!("{base}/v1/interactions"))
        .bearer_auth(&token)
        .json(
            &serde_json::json!({"product_id": demo_product, "type": "purchase.completed",
            "data": {"order_id": "dev-1"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let balances: serde_json::Value = client
            .get(format!("{base}/v1/wallets/{wallet:#x}/rewards"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token_balance = &balances["tokens"][0];
        if token_balance["claimable"] == "5000000000000000000" {
            assert_eq!(token_balance["token"], demo_token.to_lowercase());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the demo reward never became claimable: {balances}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let response = client
        .post(format!("{base}/v1/products"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"domain": "dev.example", "name": "Dev shop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert!(child.terminate().success());

    let mut child = start();
    let mut seen = Vec::new();
    let base = wait_for_line(&mut child, "listening on http://", &mut seen)
        .trim_start_matches("listening on ")
        .to_owned();
    let products: serde_json::Value = client
        .get(format!("{base}/v1/products"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        products["products"][0]["domain"], "dev.example",
        "{products}"
    );
    // A second `dev` on the same data directory refuses to start, and leaves the
    // running one (and its PostgreSQL) alone.
    let second = rewardflow()
        .args(["dev", "--listen", "127.0.0.1:0"])
        .env("REWARDFLOW_DEV__DATA_DIR", &data_dir.0)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("another `rewardflow dev` runs on"),
        "{stderr}"
    );
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert!(child.terminate().success());
}
