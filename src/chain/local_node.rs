//! A local anvil node (installed from npm with the contracts' toolchain), for
//! `rewardflow dev` and the test harness. It runs under a guardian shell that stops
//! it (gracefully: anvil then writes its state file) when this process lets go of
//! the guardian's stdin — also when this process is killed.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("anvil not found at {0} (run scripts/setup.sh, or set dev.anvil_bin)")]
    NotFound(PathBuf),
    #[error("{step}: {source}")]
    Io {
        step: &'static str,
        source: std::io::Error,
    },
    #[error("anvil did not answer on port {port} (0: any) within {secs} s")]
    Timeout { port: u16, secs: u64 },
}

pub struct LocalNode {
    guardian: Option<Child>,
    pub port: u16,
}

/// Options of a local node.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// 0: a port the system chooses (then [`LocalNode::port`] says which).
    pub port: u16,
    /// Seconds between blocks; `None`: a block per transaction.
    pub block_time_secs: Option<u64>,
    /// Chain state loaded at start and written at exit.
    pub state_file: Option<PathBuf>,
}

impl LocalNode {
    pub fn start(bin: &Path, options: &NodeOptions) -> Result<Self, NodeError> {
        if !bin.is_file() {
            return Err(NodeError::NotFound(bin.to_owned()));
        }
        // Port 0: anvil binds a port the system chooses and says which. (A port
        // found free beforehand could be taken by another process before anvil
        // binds it.)
        let mut args = vec![
            "--host".to_owned(),
            "127.0.0.1".to_owned(),
            "--port".to_owned(),
            options.port.to_string(),
        ];
        if let Some(secs) = options.block_time_secs {
            args.extend(["--block-time".to_owned(), secs.to_string()]);
        }
        if let Some(state) = &options.state_file {
            args.extend(["--state".to_owned(), state.display().to_string()]);
        }
        // The guardian: starts anvil (its output is ours) and stops it when stdin closes.
        let script = r#"
"$@" </dev/null &
pid=$!
read _ignored || true
kill -TERM "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
"#;
        let mut guardian = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("anvil-guardian")
            .arg(bin)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| NodeError::Io {
                step: "starting anvil",
                source,
            })?;
        let stdout = guardian.stdout.take().expect("piped stdout");
        let mut node = Self {
            guardian: Some(guardian),
            port: options.port,
        };
        // anvil says "Listening on 127.0.0.1:PORT" once it accepts requests; the
        // rest of its output is drained so that it never blocks on a full pipe.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut ready = Some(ready_tx);
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = listening_port(&line)
                    && let Some(tx) = ready.take()
                {
                    let _ = tx.send(port);
                }
            }
        });
        let within = Duration::from_secs(30);
        node.port = ready_rx
            .recv_timeout(within)
            .map_err(|_| NodeError::Timeout {
                port: options.port,
                secs: within.as_secs(),
            })?;
        Ok(node)
    }

    pub fn rpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops anvil and waits for it (and its state file) to be done.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(mut guardian) = self.guardian.take() {
            drop(guardian.stdin.take());
            let _ = guardian.wait();
        }
    }
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The port of anvil's "Listening on 127.0.0.1:PORT" line.
fn listening_port(line: &str) -> Option<u16> {
    let (_, address) = line.split_once("Listening on ")?;
    address.trim().rsplit_once(':')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_is_read_from_the_listening_line() {
        assert_eq!(listening_port("Listening on 127.0.0.1:39239"), Some(39239));
        assert_eq!(
            listening_port("  Listening on 127.0.0.1:8545\r"),
            Some(8545)
        );
        assert_eq!(listening_port("Available Accounts"), None);
        assert_eq!(listening_port("Listening on 127.0.0.1:"), None);
    }
}
