//! `rewardflow-load`: closed-loop HTTP load against a running rewardflow, reporting
//! throughput and latency percentiles. Bounded in requests and time; loopback only
//! by default (the target is whatever `--base-url` says).
#![forbid(unsafe_code)]

mod report;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "rewardflow-load", about = "HTTP load generator for rewardflow")]
struct Args {
    /// Base URL of the service.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    base_url: String,
    /// Path to request (GET), e.g. /readyz.
    #[arg(long, default_value = "/healthz")]
    path: String,
    /// Total requests to send.
    #[arg(long, default_value_t = 100_000)]
    requests: u64,
    /// Concurrent connections (closed loop: each sends its next request on answer).
    #[arg(long, default_value_t = 64)]
    concurrency: u64,
    /// Stop after this many seconds even if requests remain.
    #[arg(long, default_value_t = 60)]
    max_seconds: u64,
    /// Bearer token to send.
    #[arg(long, env = "REWARDFLOW_LOAD_TOKEN")]
    token: Option<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency as usize)
        .build()
        .expect("http client");
    let url = format!("{}{}", args.base_url.trim_end_matches('/'), args.path);
    let issued = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (client, url, issued, token) = (
                client.clone(),
                url.clone(),
                issued.clone(),
                args.token.clone(),
            );
            let total = args.requests;
            tokio::spawn(async move {
                let mut sample = report::Sample::default();
                while issued.fetch_add(1, Ordering::Relaxed) < total && Instant::now() < deadline {
                    let mut request = client.get(&url);
                    if let Some(token) = &token {
                        request = request.bearer_auth(token);
                    }
                    let sent = Instant::now();
                    let status = request.send().await.map(|r| r.status().as_u16()).ok();
                    sample.record(sent.elapsed(), status);
                }
                sample
            })
        })
        .collect();
    let mut total = report::Sample::default();
    for worker in workers {
        total.merge(worker.await.expect("worker"));
    }
    let summary = total.summarize(started.elapsed());
    println!("{summary}");
    if summary.errors > 0 {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
