#!/usr/bin/env bash
# Reproducible benchmark: builds release binaries, starts rewardflow on a fresh
# durable local PostgreSQL (fsync and synchronous_commit on), measures the
# machine's limits (bare warp echo, COPY), runs the single-interaction and batched
# scenarios with exactly-once verification, and prints every figure.
#
#   load-tests/run-benchmarks.sh [interactions] [single_concurrency] [batch_concurrency]
#
# Environment: CAMPAIGNS_PER_PRODUCT (default 0: no campaigns) gives every product a
# bank and that many active campaigns; SCENARIOS (default "limits single batch copy")
# picks what runs.
set -euo pipefail
cd "$(dirname "$0")/.."

INTERACTIONS=${1:-1000000}
SINGLE_CONCURRENCY=${2:-256}
BATCH_CONCURRENCY=${3:-16}
DIR=${BENCH_DIR:-/tmp/rewardflow-bench}
PORT=${BENCH_PORT:-18090}
PG_PORT=${BENCH_PG_PORT:-54400}
CAMPAIGNS=${CAMPAIGNS_PER_PRODUCT:-0}
SCENARIOS=${SCENARIOS:-limits single batch copy}
runs() { [[ " $SCENARIOS " == *" $1 "* ]]; }

scripts/setup.sh
cargo build --release -p rewardflow -p rewardflow-load-tests >&2

rm -rf "$DIR"
log="$DIR.service.log"
out="$DIR.service.out"
# Benchmarks send up to ~interactions/wallets per wallet per run; the per-wallet
# limit stays active (its cost is measured) but is set above that.
REWARDFLOW_DEV__DATA_DIR="$DIR" REWARDFLOW_DEV__POSTGRES_PORT="$PG_PORT" \
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
load setup --campaigns-per-product "$CAMPAIGNS" >/dev/null
echo "campaigns_per_product=$CAMPAIGNS"
if runs limits; then
    echo "## limits"
    target/release/rewardflow-load limits echo --requests 300000 --concurrency "$SINGLE_CONCURRENCY"
fi
if runs single; then
    echo "## single-interaction requests"
    load run --mode single --interactions "$INTERACTIONS" --concurrency "$SINGLE_CONCURRENCY" --run-id single --seed 11 --database-url "$DATABASE_URL"
fi
if runs batch; then
    echo "## batched requests (100 per request)"
    load run --mode batch --batch-size 100 --interactions "$INTERACTIONS" --concurrency "$BATCH_CONCURRENCY" --run-id batch --seed 12 --database-url "$DATABASE_URL"
fi
if runs copy; then
    echo "## limits (PostgreSQL)"
    target/release/rewardflow-load limits copy --rows 1000000
fi
psql "$DATABASE_URL" -Atc "SELECT 'rewards_stored=' || count(*) FROM rewards"
psql "$DATABASE_URL" -Atc "SELECT 'rows_stored=' || count(*) FROM interactions"
