#!/usr/bin/env bash
# Reproducible benchmark: builds release binaries, starts rewardflow on a fresh
# durable local PostgreSQL (fsync and synchronous_commit on), measures the
# machine's limits (bare warp echo, COPY), runs the single-interaction and batched
# scenarios with exactly-once verification (and, with campaigns, every stored reward
# against an independent recomputation), and prints every figure.
#
#   load-tests/run-benchmarks.sh [interactions] [single_concurrency] [batch_concurrency]
#
# Environment: CAMPAIGNS_PER_PRODUCT (default 0: no campaigns) gives every product a
# bank and that many active campaigns; PRODUCTS (default 1000) and WALLETS (default
# 100000) size the scenario, EVERY_WALLET=1 makes every wallet act in turn (for the
# memory line printed after the runs); SCENARIOS (default "limits single batch copy";
# "push" is also available) picks what runs.
#
# The push scenario (SCENARIOS=push) sends PUSH_PURCHASES (default 20000) purchases
# to the dev demo product and waits until the service's pusher has put every reward
# on the dev anvil, then sends PUSH_LIMIT_BATCHES (default 24) batches of the same
# size directly, twice (new, then returning recipients): the machine's limit (24
# batches: a longer burst of full blocks raises the base fee past the 2x fee cap the
# sender sets, and anvil drops what it can no longer include). Chain
# settings of the run: pushers wake every second (dev.push_interval_ms=1000), a batch
# holds up to PUSH_MAX_BATCH (default 300) recipients — within chain.max_gas_per_tx
# (10M) at the budgeted 30k gas per recipient + 120k per batch — 2 confirmations,
# anvil mining a block every second.
set -euo pipefail
cd "$(dirname "$0")/.."

INTERACTIONS=${1:-1000000}
SINGLE_CONCURRENCY=${2:-256}
BATCH_CONCURRENCY=${3:-16}
DIR=${BENCH_DIR:-/tmp/rewardflow-bench}
PORT=${BENCH_PORT:-18090}
PG_PORT=${BENCH_PG_PORT:-54400}
CAMPAIGNS=${CAMPAIGNS_PER_PRODUCT:-0}
PRODUCTS=${PRODUCTS:-1000}
WALLETS=${WALLETS:-100000}
SPREAD=(); [ -n "${EVERY_WALLET:-}" ] && SPREAD=(--every-wallet)
SCENARIOS=${SCENARIOS:-limits single batch copy}
ANVIL_PORT=${BENCH_ANVIL_PORT:-18545}
PUSH_PURCHASES=${PUSH_PURCHASES:-20000}
PUSH_MAX_BATCH=${PUSH_MAX_BATCH:-300}
PUSH_LIMIT_BATCHES=${PUSH_LIMIT_BATCHES:-24}
runs() { [[ " $SCENARIOS " == *" $1 "* ]]; }

scripts/setup.sh
cargo build --release -p rewardflow -p rewardflow-load-tests >&2

rm -rf "$DIR"
log="$DIR.service.log"
out="$DIR.service.out"
# Benchmarks send up to ~interactions/wallets per wallet per run; the per-wallet
# limit stays active (its cost is measured) but is set above that.
REWARDFLOW_DEV__DATA_DIR="$DIR" REWARDFLOW_DEV__POSTGRES_PORT="$PG_PORT" REWARDFLOW_DEV__ANVIL_PORT="$ANVIL_PORT" \
REWARDFLOW_DEV__PUSH_INTERVAL_MS=1000 REWARDFLOW_CHAIN__MAX_BATCH="$PUSH_MAX_BATCH" \
REWARDFLOW_RATE_LIMIT__PER_WALLET_PER_HOUR=1000000 REWARDFLOW_TELEMETRY__LOG_LEVEL=warn \
    target/release/rewardflow dev --listen "127.0.0.1:$PORT" >"$out" 2>"$log" &
svc=$!
trap 'kill -TERM $svc 2>/dev/null; wait $svc 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do grep -q '^listening on' "$out" 2>/dev/null && break; sleep 0.1; done
grep -q '^listening on' "$out" || { echo "the service did not start" >&2; cat "$log" >&2; exit 1; }
export DATABASE_URL; DATABASE_URL=$(sed -n 's/^DATABASE_URL=//p' "$out")
load() { target/release/rewardflow-load "$@" --addr "127.0.0.1:$PORT" --jwt-secret-file "$DIR/jwt-secret"; }

echo "## machine"
echo "cpus=$(nproc) model=\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\" memory=$(free -g | awk '/Mem:/{print $2}')GiB postgres=\"$(psql --version | cut -d' ' -f3)\""
if runs single || runs batch; then
    load setup --products "$PRODUCTS" --campaigns-per-product "$CAMPAIGNS" >/dev/null
    echo "campaigns_per_product=$CAMPAIGNS"
fi
if runs limits; then
    echo "## limits"
    target/release/rewardflow-load limits echo --requests 300000 --concurrency "$SINGLE_CONCURRENCY"
fi
if runs single; then
    echo "## single-interaction requests"
    load run --mode single --interactions "$INTERACTIONS" --concurrency "$SINGLE_CONCURRENCY" --run-id single --seed 11 \
        --products "$PRODUCTS" --wallets "$WALLETS" "${SPREAD[@]}" --database-url "$DATABASE_URL"
fi
if runs batch; then
    echo "## batched requests (100 per request)"
    load run --mode batch --batch-size 100 --interactions "$INTERACTIONS" --concurrency "$BATCH_CONCURRENCY" --run-id batch --seed 12 \
        --products "$PRODUCTS" --wallets "$WALLETS" "${SPREAD[@]}" --database-url "$DATABASE_URL"
fi
if [ "$CAMPAIGNS" -gt 0 ] && { runs single || runs batch; }; then
    echo "## every stored reward against an independent recomputation"
    target/release/rewardflow-load recompute --database-url "$DATABASE_URL"
fi
if runs copy; then
    echo "## limits (PostgreSQL)"
    target/release/rewardflow-load limits copy --rows 1000000
fi
if runs push; then
    echo "## pushing rewards on-chain (dev.push_interval_ms=1000 chain.max_batch=$PUSH_MAX_BATCH chain.confirmations=2, anvil block time 1 s)"
    for name in RPC_URL MULTI_TOKEN_PUSH_PULL DEMO_PRODUCT_ID DEMO_CAMPAIGN_ID DEMO_TOKEN; do
        export "$name=$(sed -n "s/^$name=//p" "$out")"
    done
    echo "anvil=\"$("$(sed -n 's/^anvil_bin = "\(.*\)"/\1/p' config.toml)" --version | head -1)\""
    load push --purchases "$PUSH_PURCHASES" --batch-size "$PUSH_MAX_BATCH" --limit-batches "$PUSH_LIMIT_BATCHES" --database-url "$DATABASE_URL"
fi
if runs single || runs batch; then
    echo "## memory of the service after the runs"
    grep -E '^(VmRSS|VmHWM)' "/proc/$svc/status" | tr -s ' \t' ' '
    psql "$DATABASE_URL" -Atc "SELECT 'products=' || (SELECT count(*) FROM products)
        || ' active_campaigns=' || (SELECT count(*) FROM campaigns WHERE status = 'active')
        || ' wallets_known=' || (SELECT count(*) FROM (SELECT wallet FROM interactions
            UNION SELECT referrer_wallet FROM interactions) w WHERE wallet IS NOT NULL)"
fi
psql "$DATABASE_URL" -Atc "SELECT 'rewards_stored=' || count(*) FROM rewards"
psql "$DATABASE_URL" -Atc "SELECT 'rows_stored=' || count(*) FROM interactions"
