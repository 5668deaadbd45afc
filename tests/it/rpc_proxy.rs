//! A JSON-RPC proxy in front of anvil that can play a node lagging behind the
//! chain: the way a failed-over or load-balanced RPC endpoint answers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use warp::Filter;

/// How the proxy answers while it lags.
#[derive(Debug, Clone, Copy)]
pub struct Lag {
    /// The newest block the lagging node has.
    pub head: u64,
    /// Blocks too (`eth_blockNumber`, `eth_getBlockByNumber`): a node that is
    /// behind. Without it, only state and receipts lag: two nodes behind one URL,
    /// the blocks read from an up-to-date one.
    pub blocks: bool,
}

/// What the proxy does besides forwarding.
#[derive(Debug, Clone, Copy, Default)]
struct Behaviour {
    lag: Option<Lag>,
    /// `eth_getLogs` over more blocks than this is refused, as providers do.
    max_log_range: Option<u64>,
}

type Shared = (
    Arc<Mutex<Behaviour>>,
    reqwest::Client,
    String,
    Arc<AtomicU64>,
);

pub struct RpcProxy {
    pub url: String,
    behaviour: Arc<Mutex<Behaviour>>,
    /// Calls answered while lagging.
    lagged: Arc<AtomicU64>,
    _server: tokio::task::JoinHandle<()>,
}

impl RpcProxy {
    pub async fn start(upstream: String) -> Self {
        let behaviour: Arc<Mutex<Behaviour>> = Arc::default();
        let lagged: Arc<AtomicU64> = Arc::default();
        let client = reqwest::Client::new();
        let state = (behaviour.clone(), client, upstream, lagged.clone());
        let route = warp::post()
            .and(warp::body::json())
            .and(warp::any().map(move || state.clone()))
            .then(|body: Value, state: Shared| async move {
                let (behaviour, client, upstream, lagged) = state;
                let behaviour = *behaviour.lock().unwrap();
                if behaviour.lag.is_some() {
                    lagged.fetch_add(1, Ordering::SeqCst);
                }
                let answer = match body {
                    Value::Array(calls) => {
                        let mut answers = Vec::new();
                        for call in calls {
                            answers.push(answer(&client, &upstream, call, behaviour).await);
                        }
                        Value::Array(answers)
                    }
                    call => answer(&client, &upstream, call, behaviour).await,
                };
                warp::reply::json(&answer)
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(warp::serve(route).incoming(listener).run());
        Self {
            url,
            behaviour,
            lagged,
            _server: server,
        }
    }

    pub fn lag(&self, lag: Option<Lag>) {
        self.behaviour.lock().unwrap().lag = lag;
    }

    pub fn refuse_log_ranges_over(&self, blocks: Option<u64>) {
        self.behaviour.lock().unwrap().max_log_range = blocks;
    }

    /// Requests answered while lagging, so far.
    pub fn lagged_answers(&self) -> u64 {
        self.lagged.load(Ordering::SeqCst)
    }
}

fn hex(n: u64) -> Value {
    json!(format!("{n:#x}"))
}

fn number(value: &Value) -> Option<u64> {
    u64::from_str_radix(value.as_str()?.strip_prefix("0x")?, 16).ok()
}

/// The block-tag parameter of the methods that read state.
fn tag_index(method: &str) -> Option<usize> {
    match method {
        "eth_call"
        | "eth_getCode"
        | "eth_getBalance"
        | "eth_getTransactionCount"
        | "eth_estimateGas" => Some(1),
        "eth_getStorageAt" => Some(2),
        _ => None,
    }
}

async fn answer(
    client: &reqwest::Client,
    upstream: &str,
    mut call: Value,
    behaviour: Behaviour,
) -> Value {
    let id = call["id"].clone();
    let method = call["method"].as_str().unwrap_or_default().to_owned();
    let error = |message: String| json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32005, "message": message}});
    if let Some(most) = behaviour.max_log_range
        && method == "eth_getLogs"
    {
        let range = &call["params"][0];
        if let (Some(from), Some(to)) = (number(&range["fromBlock"]), number(&range["toBlock"]))
            && to - from + 1 > most
        {
            return error(format!("query exceeds the {most}-block range limit"));
        }
    }
    let Some(lag) = behaviour.lag else {
        return forward(client, upstream, &call).await;
    };
    let reply = |result: Value| json!({"jsonrpc": "2.0", "id": id, "result": result});
    let behind = |n: u64| error(format!("header not found: {n}"));
    if lag.blocks && method == "eth_blockNumber" {
        return reply(hex(lag.head));
    }
    if lag.blocks && method == "eth_getBlockByNumber" {
        match call["params"][0].as_str() {
            Some("latest" | "pending" | "safe" | "finalized") => call["params"][0] = hex(lag.head),
            _ if number(&call["params"][0]).is_some_and(|n| n > lag.head) => {
                return reply(Value::Null);
            }
            _ => {}
        }
    }
    if let Some(at) = tag_index(&method) {
        let params = call["params"].as_array_mut().unwrap();
        match params.get(at).and_then(Value::as_str) {
            None | Some("latest" | "pending" | "safe" | "finalized") => {
                params.truncate(at);
                params.push(hex(lag.head));
            }
            Some(_) => match number(&params[at]) {
                Some(n) if n > lag.head => return behind(n),
                _ => {}
            },
        }
    }
    let answer = forward(client, upstream, &call).await;
    if method == "eth_getTransactionReceipt"
        && number(&answer["result"]["blockNumber"]).is_some_and(|n| n > lag.head)
    {
        return reply(Value::Null);
    }
    answer
}

async fn forward(client: &reqwest::Client, upstream: &str, call: &Value) -> Value {
    client
        .post(upstream)
        .json(call)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
