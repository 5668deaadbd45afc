#!/usr/bin/env bash
# The whole test suite: formatting, lints, Rust unit and whole-app tests (against a
# real PostgreSQL the harness starts itself), the contracts' forge tests (unit,
# fuzz, invariant) with the artifact freshness check, and the observability check
# (dashboards and alerts evaluated by a real Prometheus scraping the service).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> contracts (forge)"
contracts/scripts/test.sh 2>&1 | tee -a "$log"
echo "==> cargo test"
cargo test --workspace --all-targets --locked 2>&1 | tee -a "$log"
echo "==> observability (promtool, Prometheus against rewardflow dev)"
scripts/check-observability.sh

# One closing line for the whole suite.
awk '
    /^test result: / { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
    /tests passed, [0-9]+ failed/ { for (i = 1; i <= NF; i++) { if ($(i+1) == "tests" && $(i+2) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
    END { printf "total: %d passed, %d failed\n", p, f }
' "$log"
