#!/usr/bin/env bash
# Gas benchmark on a real anvil (standard OpenZeppelin ERC20): runs script/GasBench.s.sol
# as transactions, reads the receipts, writes contracts/gas-report.md and the
# "## Gas (contracts)" section of BENCHMARKS.md at the repository root.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_deps
cd "$CONTRACTS_DIR"
port=$((20000 + RANDOM % 20000))
"$ANVIL" --port "$port" --silent &
anvil_pid=$!
logs="$(mktemp)"
trap 'kill "$anvil_pid" 2>/dev/null || true; rm -f "$logs"' EXIT
for _ in $(seq 50); do
  node -e "fetch('http://127.0.0.1:$port',{method:'POST',headers:{'content-type':'application/json'},body:'{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_chainId\"}'}).then(()=>process.exit(0),()=>process.exit(1))" && break
  sleep 0.1
done
"$FORGE" script script/GasBench.s.sol:GasBench --rpc-url "http://127.0.0.1:$port" --broadcast --slow >"$logs" 2>&1 \
  || { cat "$logs" >&2; log "ERROR: gas bench failed"; exit 1; }
node scripts/gas-report.js "$logs" broadcast/GasBench.s.sol/31337/run-latest.json \
  "$CONTRACTS_DIR/gas-report.md" "$CONTRACTS_DIR/../BENCHMARKS.md"
