//! The `rewardflow` command line: parse, load the settings, call the library.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rewardflow::commands;
use rewardflow::config::{ConfigSource, Override, Settings};

#[derive(Parser)]
#[command(name = "rewardflow", version, about = "Referral-and-rewards engine")]
struct Cli {
    /// Configuration file (default: ./config.toml when present).
    #[arg(long, global = true, env = "REWARDFLOW_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ServerFlags {
    /// Address to listen on (server.listen).
    #[arg(long, env = "REWARDFLOW_SERVER__LISTEN")]
    listen: Option<String>,
    /// PostgreSQL URL (database.url).
    #[arg(long, env = "REWARDFLOW_DATABASE__URL", hide_env_values = true)]
    database_url: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service against database.url.
    Serve(ServerFlags),
    /// Run the service on its own local PostgreSQL cluster (kept under dev.data_dir).
    Dev(ServerFlags),
    /// Apply pending database migrations.
    Migrate {
        /// PostgreSQL URL (database.url).
        #[arg(long, env = "REWARDFLOW_DATABASE__URL", hide_env_values = true)]
        database_url: Option<String>,
    },
    /// Print the effective configuration, secrets redacted.
    PrintConfig,
    /// Print a session token for a wallet, signed with the configured secret.
    Token {
        /// The wallet address (0x…).
        #[arg(long, env = "REWARDFLOW_TOKEN_WALLET")]
        wallet: String,
        /// Token lifetime in seconds (default: auth.token_ttl_secs).
        #[arg(long, env = "REWARDFLOW_TOKEN_TTL_SECS")]
        ttl_secs: Option<u64>,
    },
}

fn overrides(listen: Option<String>, database_url: Option<String>) -> Vec<Override> {
    let mut out = Vec::new();
    if let Some(listen) = listen {
        out.push(Override {
            key: "server.listen".into(),
            value: listen.into(),
            flag: "--listen".into(),
        });
    }
    if let Some(url) = database_url {
        out.push(Override {
            key: "database.url".into(),
            value: url.into(),
            flag: "--database-url".into(),
        });
    }
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut source = ConfigSource::from_process(cli.config);
    source.overrides = match &cli.command {
        Command::Serve(f) | Command::Dev(f) => overrides(f.listen.clone(), f.database_url.clone()),
        Command::Migrate { database_url } => overrides(None, database_url.clone()),
        _ => Vec::new(),
    };
    let settings = match Settings::load(&source) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    rewardflow::telemetry::init_logging(&settings.telemetry);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(_) => commands::serve(settings).await,
            Command::Dev(_) => commands::dev(settings).await,
            Command::Migrate { .. } => commands::migrate(settings).await.map(|n| {
                eprintln!("applied {n} migration(s)");
            }),
            Command::PrintConfig => {
                print!("{}", settings.to_redacted_toml());
                Ok(())
            }
            Command::Token { wallet, ttl_secs } => {
                commands::token(&settings, &wallet, ttl_secs).map(|token| println!("{token}"))
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            if err.is_config() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
