//! A private PostgreSQL cluster started from the machine's PostgreSQL binaries.
//!
//! * [`LocalCluster::start_durable`] — `rewardflow dev`: a cluster under a data
//!   directory kept between runs, password-protected, defaults (fsync on).
//! * [`LocalCluster::start_ephemeral`] — the test harness: a throwaway cluster in a
//!   temporary directory, guarded by a small shell process that stops it and deletes
//!   its files as soon as the owning process exits, however it exits.
//!
//! PostgreSQL refuses to run as root; when we are root, its commands run as the
//! `postgres` user through `runuser`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

const DEV_USER: &str = "rewardflow";
const DEV_DATABASE: &str = "rewardflow";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL binaries not found (looked in {looked}); install PostgreSQL or set dev.postgres_bin_dir"
    )]
    BinariesNotFound { looked: String },
    #[error(
        "running as root, but the `postgres` system user does not exist; install the postgresql package"
    )]
    NoPostgresUser,
    #[error("{step} failed: {detail}")]
    Command { step: String, detail: String },
    #[error("port {0} is already in use by another process")]
    PortTaken(u16),
    #[error("io error while {step}: {source}")]
    Io {
        step: String,
        source: std::io::Error,
    },
}

fn io_err(step: &str) -> impl FnOnce(std::io::Error) -> ClusterError + '_ {
    move |source| ClusterError::Io {
        step: step.to_owned(),
        source,
    }
}

/// A running cluster. Dropping an ephemeral one stops it (its guardian sees stdin close).
#[derive(Debug)]
pub struct LocalCluster {
    port: u16,
    user: String,
    password: Option<String>,
    data_dir: PathBuf,
    bin_dir: PathBuf,
    guardian: Option<std::process::Child>,
}

impl LocalCluster {
    /// Starts (creating it on first use) the durable dev cluster under `state_dir`,
    /// and makes sure the `rewardflow` database exists. `port` 0: a free one (a
    /// cluster already running keeps its own), see [`Self::port`].
    pub async fn start_durable(
        state_dir: &Path,
        port: u16,
        configured_bins: &Path,
        server_settings: &[String],
    ) -> Result<Self, ClusterError> {
        let bin_dir = find_binaries(configured_bins)?;
        let as_root = is_root();
        std::fs::create_dir_all(state_dir).map_err(io_err("creating the data directory"))?;
        let state_dir = state_dir
            .canonicalize()
            .map_err(io_err("resolving the data directory"))?;
        let data_dir = cluster_dir(&state_dir, as_root).await;
        let password_file = state_dir.join("postgres-password");

        if !data_dir.join("PG_VERSION").exists() {
            let password = random_token(24);
            write_private(&password_file, &password)?;
            std::fs::create_dir_all(&data_dir).map_err(io_err("creating the cluster directory"))?;
            let pwfile = data_dir.with_extension("pwfile");
            write_private(&pwfile, &password)?;
            if as_root {
                chown_postgres(&data_dir)?;
                chown_postgres(&pwfile)?;
            }
            let result = run(
                as_root,
                bin_dir.join("initdb"),
                &[
                    "-D".as_ref(),
                    data_dir.as_os_str(),
                    "-U".as_ref(),
                    DEV_USER.as_ref(),
                    "--auth=scram-sha-256".as_ref(),
                    "--pwfile".as_ref(),
                    pwfile.as_os_str(),
                    "-E".as_ref(),
                    "UTF8".as_ref(),
                    "--locale=C".as_ref(),
                ],
                "initdb",
            )
            .await;
            let _ = std::fs::remove_file(&pwfile);
            result?;
        }
        let password = std::fs::read_to_string(&password_file)
            .map_err(io_err("reading the dev database password"))?
            .trim()
            .to_owned();

        let mut cluster = Self {
            port,
            user: DEV_USER.into(),
            password: Some(password),
            data_dir,
            bin_dir,
            guardian: None,
        };
        if cluster.is_running(as_root).await {
            if port == 0 {
                cluster.port = running_port(&cluster.data_dir).unwrap_or(0);
            }
            // Ours from an earlier run — unless it is still shutting down (a `dev`
            // that just stopped): then let the stop finish and start it again.
            match cluster.ensure_database(DEV_DATABASE).await {
                Ok(()) => return Ok(cluster),
                Err(err) => {
                    tracing::info!(error = %err, "the dev cluster is not accepting connections; restarting it");
                    let _ = cluster.stop_server().await;
                }
            }
        }
        cluster.start_server(as_root, port, server_settings).await?;
        cluster.ensure_database(DEV_DATABASE).await?;
        Ok(cluster)
    }

    /// Starts a throwaway cluster (trust auth, fsync off) on a free port. It stops
    /// and its files are deleted when this value is dropped or the process exits.
    /// Synchronous and runtime-free, so one cluster can serve many test runtimes.
    pub fn start_ephemeral(configured_bins: &Path) -> Result<Self, ClusterError> {
        Self::start_ephemeral_with(configured_bins, free_port)
    }

    /// [`Self::start_ephemeral`] on the ports `next_port` gives: a port found free
    /// can be taken by another process before the server binds it, and then the
    /// cluster is started again on the next one (three tries).
    fn start_ephemeral_with(
        configured_bins: &Path,
        mut next_port: impl FnMut() -> Result<u16, ClusterError>,
    ) -> Result<Self, ClusterError> {
        let bin_dir = find_binaries(configured_bins)?;
        let mut tries = 0;
        loop {
            tries += 1;
            match Self::start_ephemeral_on(bin_dir.clone(), next_port()?) {
                Err(ClusterError::PortTaken(port)) if tries < PORT_TRIES => {
                    tracing::info!(port, "the test cluster's port was taken; trying another");
                }
                result => return result,
            }
        }
    }

    fn start_ephemeral_on(bin_dir: PathBuf, port: u16) -> Result<Self, ClusterError> {
        let as_root = is_root();
        let dir = std::env::temp_dir().join(format!("rewardflow-pg-{}", random_token(12)));
        std::fs::create_dir_all(&dir).map_err(io_err("creating a temporary cluster directory"))?;
        if as_root {
            chown_postgres(&dir)?;
        }
        let script = r#"
set -e
D="$1"; BIN="$2"; PORT="$3"
"$BIN/initdb" -D "$D/data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C >"$D/initdb.log" 2>&1
"$BIN/pg_ctl" -D "$D/data" -l "$D/server.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
  start >/dev/null
echo ready
read _ignored || true
"$BIN/pg_ctl" -D "$D/data" -m immediate stop >/dev/null 2>&1 || true
rm -rf "$D"
"#;
        let mut command = if as_root {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c", script, "guardian"]);
            c
        } else {
            let mut c = std::process::Command::new("sh");
            c.args(["-c", script, "guardian"]);
            c
        };
        command
            .arg(&dir)
            .arg(&bin_dir)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut guardian = command
            .spawn()
            .map_err(io_err("starting the cluster guardian"))?;
        let stdout = guardian.stdout.take().expect("piped stdout");
        let mut first = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut first)
            .map_err(io_err("waiting for the test cluster"))?;
        if first.trim() != "ready" {
            let server_log = read_tail(&dir.join("server.log")).unwrap_or_default();
            if bind_refused(&server_log) {
                let _ = guardian.wait();
                let _ = std::fs::remove_dir_all(&dir);
                return Err(ClusterError::PortTaken(port));
            }
            let log = read_tail(&dir.join("initdb.log"))
                .or_else(|| read_tail(&dir.join("server.log")))
                .unwrap_or_default();
            return Err(ClusterError::Command {
                step: "starting the test cluster".into(),
                detail: log,
            });
        }
        Ok(Self {
            port,
            user: "postgres".into(),
            password: None,
            data_dir: dir.join("data"),
            bin_dir,
            guardian: Some(guardian),
        })
    }

    /// The port the server listens on (the one found when started with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of a database of this cluster.
    pub fn url(&self, database: &str) -> String {
        match &self.password {
            Some(password) => format!(
                "postgres://{}:{}@127.0.0.1:{}/{}",
                self.user, password, self.port, database
            ),
            None => format!(
                "postgres://{}@127.0.0.1:{}/{}",
                self.user, self.port, database
            ),
        }
    }

    /// URL of the dev database (`rewardflow`).
    pub fn dev_url(&self) -> String {
        self.url(DEV_DATABASE)
    }

    /// Stops the cluster and waits for it. The durable cluster keeps its data.
    pub async fn stop(mut self) -> Result<(), ClusterError> {
        if let Some(mut guardian) = self.guardian.take() {
            drop(guardian.stdin.take());
            tokio::task::spawn_blocking(move || guardian.wait())
                .await
                .map_err(|e| ClusterError::Io {
                    step: "stopping the test cluster".into(),
                    source: std::io::Error::other(e),
                })?
                .map_err(io_err("stopping the test cluster"))?;
            return Ok(());
        }
        self.stop_server().await
    }

    /// Starts the durable server on `port`, or when it is 0 on a free one: a port
    /// found free can be taken by another process before the server binds it, and
    /// then the server is started on the next one (three tries).
    async fn start_server(
        &mut self,
        as_root: bool,
        port: u16,
        server_settings: &[String],
    ) -> Result<(), ClusterError> {
        let mut tries = 0;
        loop {
            tries += 1;
            self.port = if port == 0 { free_port()? } else { port };
            match self.start_server_on(as_root, server_settings).await {
                Err(ClusterError::PortTaken(taken)) if port == 0 && tries < PORT_TRIES => {
                    tracing::info!(
                        port = taken,
                        "the dev cluster's port was taken; trying another"
                    );
                }
                result => return result,
            }
        }
    }

    /// `pg_ctl start` on `self.port`; [`ClusterError::PortTaken`] when the server
    /// could not bind it.
    async fn start_server_on(
        &self,
        as_root: bool,
        server_settings: &[String],
    ) -> Result<(), ClusterError> {
        let port = self.port;
        let mut options =
            format!("-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories=''");
        for setting in server_settings {
            options.push_str(&format!(" -c {setting}"));
        }
        let logged_before =
            std::fs::metadata(self.data_dir.join("server.log")).map_or(0, |m| m.len() as usize);
        run(
            as_root,
            self.bin_dir.join("pg_ctl"),
            &[
                "-D".as_ref(),
                self.data_dir.as_os_str(),
                "-l".as_ref(),
                self.data_dir.join("server.log").as_os_str(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "-o".as_ref(),
                options.as_ref(),
                "start".as_ref(),
            ],
            "pg_ctl start",
        )
        .await
        .map_err(|err| {
            // The server log is kept across runs: only this start's lines count.
            let log = self.data_dir.join("server.log");
            let written = std::fs::read(&log).unwrap_or_default();
            let this_start = written.get(logged_before..).unwrap_or_default();
            if bind_refused(&String::from_utf8_lossy(this_start)) {
                ClusterError::PortTaken(port)
            } else {
                self.with_log(err)
            }
        })?;
        Ok(())
    }

    /// `pg_ctl stop -m fast -w`: also waits for a shutdown already under way.
    async fn stop_server(&self) -> Result<(), ClusterError> {
        run(
            is_root(),
            self.bin_dir.join("pg_ctl"),
            &[
                "-D".as_ref(),
                self.data_dir.as_os_str(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
            "pg_ctl stop",
        )
        .await
    }

    async fn is_running(&self, as_root: bool) -> bool {
        let args: [&std::ffi::OsStr; 3] =
            ["-D".as_ref(), self.data_dir.as_os_str(), "status".as_ref()];
        run(as_root, self.bin_dir.join("pg_ctl"), &args, "pg_ctl status")
            .await
            .is_ok()
    }

    async fn ensure_database(&self, name: &str) -> Result<(), ClusterError> {
        use sqlx::Connection;
        let step = |e: sqlx::Error| ClusterError::Command {
            step: format!("creating database {name}"),
            detail: e.to_string(),
        };
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .map_err(step)?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(name)
                .fetch_one(&mut conn)
                .await
                .map_err(step)?;
        if !exists {
            // `name` is one of our constants, never user input.
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                .execute(&mut conn)
                .await
                .map_err(step)?;
        }
        conn.close().await.map_err(step)?;
        Ok(())
    }

    fn with_log(&self, err: ClusterError) -> ClusterError {
        match (err, read_tail(&self.data_dir.join("server.log"))) {
            (ClusterError::Command { step, detail }, Some(log)) => ClusterError::Command {
                step,
                detail: format!("{detail}\n--- server.log ---\n{log}"),
            },
            (err, _) => err,
        }
    }
}

/// `<state_dir>/postgres`, unless we are root and the `postgres` user cannot reach
/// it (a checkout under `/root`, say): then a directory of its own under
/// `/var/lib/rewardflow`, named after the state directory.
async fn cluster_dir(state_dir: &Path, as_root: bool) -> PathBuf {
    let preferred = state_dir.join("postgres");
    if !as_root {
        return preferred;
    }
    let reachable = Command::new("runuser")
        .args(["-u", "postgres", "--", "test", "-x"])
        .arg(state_dir)
        .status()
        .await
        .map(|s| s.success())
        .unwrap_or(false);
    if reachable {
        return preferred;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(state_dir.as_os_str().as_encoded_bytes());
    let fallback = PathBuf::from("/var/lib/rewardflow").join(hex::encode(&digest[..8]));
    let _ = std::fs::create_dir_all(&fallback);
    tracing::info!(
        state_dir = %state_dir.display(),
        cluster_dir = %fallback.display(),
        "the postgres user cannot reach the data directory; keeping the dev cluster elsewhere"
    );
    fallback.join("postgres")
}

/// The configured directory, else the newest `/usr/lib/postgresql/*/bin`, else the PATH.
pub fn find_binaries(configured: &Path) -> Result<PathBuf, ClusterError> {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if !configured.as_os_str().is_empty() {
        return if has_initdb(configured) {
            Ok(configured.to_path_buf())
        } else {
            Err(ClusterError::BinariesNotFound {
                looked: configured.display().to_string(),
            })
        };
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_initdb(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|dir| has_initdb(dir))
        .ok_or(ClusterError::BinariesNotFound {
            looked: "/usr/lib/postgresql/*/bin and PATH".into(),
        })
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

async fn run(
    as_root: bool,
    program: PathBuf,
    args: &[&std::ffi::OsStr],
    step: &str,
) -> Result<(), ClusterError> {
    let mut command = if as_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&program);
        c
    } else {
        Command::new(&program)
    };
    let output = command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(io_err(step))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ClusterError::Command {
            step: step.to_owned(),
            detail: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
            .trim()
            .to_owned(),
        })
    }
}

fn chown_postgres(path: &Path) -> Result<(), ClusterError> {
    let output = std::process::Command::new("chown")
        .arg("postgres:postgres")
        .arg(path)
        .output()
        .map_err(io_err("chown"))?;
    if output.status.success() {
        Ok(())
    } else if String::from_utf8_lossy(&output.stderr).contains("invalid user") {
        Err(ClusterError::NoPostgresUser)
    } else {
        Err(ClusterError::Command {
            step: format!("chown postgres {}", path.display()),
            detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

fn write_private(path: &Path, contents: &str) -> Result<(), ClusterError> {
    std::fs::write(path, contents).map_err(io_err("writing a password file"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err("restricting a password file"))
}

/// Starts on a port found free: it can be taken by another process before the
/// server binds it, and the start is tried again on another one, this many times
/// in all.
const PORT_TRIES: u32 = 3;

/// Whether a server log says the server could not bind its port.
fn bind_refused(server_log: &str) -> bool {
    server_log.contains("could not bind")
}

/// The port a running cluster listens on: the fourth line of its `postmaster.pid`.
fn running_port(data_dir: &Path) -> Option<u16> {
    let pid_file = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    pid_file.lines().nth(3)?.trim().parse().ok()
}

fn free_port() -> Result<u16, ClusterError> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err("finding a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(io_err("finding a free port"))?
        .port())
}

fn read_tail(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    Some(lines[lines.len().saturating_sub(20)..].join("\n"))
}

fn random_token(len: usize) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;
    use crate::test_support::TempDir;

    #[test]
    fn a_port_taken_before_the_server_binds_it_is_replaced_by_another() {
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = holder.local_addr().unwrap().port();
        let mut offered = Vec::new();
        let cluster = LocalCluster::start_ephemeral_with(Path::new(""), || {
            let port = if offered.is_empty() {
                taken
            } else {
                free_port()?
            };
            offered.push(port);
            Ok(port)
        })
        .expect("a cluster on the second port");
        assert_eq!(offered.len(), 2, "{offered:?}");
        assert_eq!(cluster.port(), offered[1]);
        assert_ne!(cluster.port(), taken);
    }

    #[tokio::test]
    async fn a_durable_cluster_names_a_taken_port_and_on_port_0_finds_a_free_one() {
        let scratch = TempDir::new("rf-durable");
        let state = scratch.path().join("state");
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = holder.local_addr().unwrap().port();
        let refused = LocalCluster::start_durable(&state, taken, Path::new(""), &[]).await;
        assert!(
            matches!(refused, Err(ClusterError::PortTaken(port)) if port == taken),
            "{:?}",
            refused.err()
        );

        let cluster = LocalCluster::start_durable(&state, 0, Path::new(""), &[])
            .await
            .expect("a cluster on a free port");
        let port = cluster.port();
        assert!(port != 0 && port != taken, "{port}");
        let mut conn = sqlx::PgConnection::connect(&cluster.dev_url())
            .await
            .unwrap();
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(one, 1);
        // Started again while it runs, it keeps the port it has.
        let again = LocalCluster::start_durable(&state, 0, Path::new(""), &[])
            .await
            .unwrap();
        assert_eq!(again.port(), port);
        drop(conn);
        cluster.stop().await.unwrap();
    }
}
