//! The machine's own limits, measured the way the service is measured:
//! * `copy`: COPY of interaction rows (same shape, same indexes: a table created
//!   `LIKE interactions INCLUDING ALL`) into the service's database;
//! * `echo`: a bare warp server that parses the JSON body and answers 202, loaded
//!   by the same client, body and concurrency as the single-interaction scenario.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use clap::{Args, Subcommand};
use sqlx::Connection as _;
use warp::Filter;

use crate::client::Connection;
use crate::report::Sample;
use crate::scenario::Scenario;

#[derive(Args)]
pub struct LimitArgs {
    #[command(subcommand)]
    which: Which,
}

#[derive(Subcommand)]
enum Which {
    /// COPY rows/s into a scratch copy of `interactions` (created and dropped).
    Copy {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        #[arg(long, default_value_t = 500_000)]
        rows: u64,
    },
    /// Requests/s of a bare warp JSON POST echo.
    Echo {
        #[arg(long, default_value_t = 200_000)]
        requests: u64,
        #[arg(long, default_value_t = 64)]
        concurrency: u64,
    },
}

pub async fn run(args: LimitArgs) -> anyhow::Result<()> {
    match args.which {
        Which::Copy { database_url, rows } => copy(&database_url, rows).await,
        Which::Echo {
            requests,
            concurrency,
        } => echo(requests, concurrency).await,
    }
}

const COLUMNS: &str = "id, product_id, wallet, type, data, idempotency_key, session_id, source, source_ip, created_at, processed_at";

async fn copy(database_url: &str, rows: u64) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect(database_url).await?;
    sqlx::query("DROP TABLE IF EXISTS copy_limit_probe")
        .execute(&mut conn)
        .await?;
    sqlx::query("CREATE TABLE copy_limit_probe (LIKE interactions INCLUDING ALL)")
        .execute(&mut conn)
        .await?;
    let scenario = Scenario::new("copy", 1, 1_000, 100_000, rows);
    let started = Instant::now();
    let statement = format!("COPY copy_limit_probe ({COLUMNS}) FROM STDIN");
    let mut sink = conn.copy_in_raw(&statement).await?;
    let mut chunk = String::with_capacity(1 << 20);
    for seq in 0..rows {
        let (wallet, body) = scenario.interaction(seq);
        let id = uuid_v7_like(seq);
        let data = body["data"].to_string().replace('\\', "\\\\");
        let _ = writeln!(
            chunk,
            "{id}\t\\\\x{}\t\\\\x{:040x}\t{}\t{data}\tcopy-{seq}\t{}\tsdk\t127.0.0.1\tnow\tnow",
            &body["product_id"].as_str().unwrap_or_default()[2..],
            u64::from(wallet) + 0x1000,
            body["type"].as_str().unwrap_or_default(),
            body["analytics"]["session_id"].as_str().unwrap_or("s"),
        );
        if chunk.len() > (1 << 20) - 4096 {
            sink.send(chunk.as_bytes()).await?;
            chunk.clear();
        }
    }
    sink.send(chunk.as_bytes()).await?;
    let copied = sink.finish().await?;
    let elapsed = started.elapsed();
    sqlx::query("DROP TABLE copy_limit_probe")
        .execute(&mut conn)
        .await?;
    println!(
        "limit=copy rows={copied} seconds={:.2} rows_per_s={:.0} (empty table with the indexes of interactions, one connection, durable)",
        elapsed.as_secs_f64(),
        copied as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

/// Distinct, time-ordered-ish UUID text for row `seq` (no randomness needed).
fn uuid_v7_like(seq: u64) -> String {
    let millis = 0x0190_0000_0000u64 + seq / 1000;
    format!(
        "{:08x}-{:04x}-7{:03x}-8{:03x}-{:012x}",
        millis >> 16,
        millis & 0xffff,
        (seq >> 48) & 0xfff,
        (seq >> 36) & 0xfff,
        seq & 0xffff_ffff_ffff
    )
}

async fn echo(requests: u64, concurrency: u64) -> anyhow::Result<()> {
    // The server gets its own runtime (threads), as a separate service would.
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let route = warp::path!("v1" / "interactions")
                .and(warp::post())
                .and(warp::body::bytes())
                .map(|body: Bytes| {
                    let value: serde_json::Value =
                        serde_json::from_slice(&body).unwrap_or_default();
                    warp::reply::with_status(
                        warp::reply::json(&value),
                        warp::http::StatusCode::ACCEPTED,
                    )
                });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let _ = addr_tx.send(listener.local_addr().expect("addr"));
            warp::serve(route).incoming(listener).run().await;
        });
    });
    let addr = addr_rx.await?;
    let scenario = Arc::new(Scenario::new("echo", 1, 1_000, 100_000, requests));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (scenario, next) = (scenario.clone(), next.clone());
            tokio::spawn(async move {
                let mut conn = Connection::new(addr);
                let mut sample = Sample::default();
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    if seq >= requests {
                        break;
                    }
                    let body = Bytes::from(
                        serde_json::to_vec(&scenario.interaction(seq).1).expect("json"),
                    );
                    let sent = Instant::now();
                    let status = conn
                        .post("/v1/interactions", Some("token"), body)
                        .await
                        .ok()
                        .map(|a| a.status);
                    sample.record(sent.elapsed(), status);
                }
                sample
            })
        })
        .collect();
    let mut sample = Sample::default();
    for worker in workers {
        sample.merge(worker.await?);
    }
    println!("limit=echo {}", sample.summarize(started.elapsed()));
    Ok(())
}
