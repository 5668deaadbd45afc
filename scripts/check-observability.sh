#!/usr/bin/env bash
# Proves the observability files against the real service and a real Prometheus:
#   - promtool: prometheus/prometheus.yml, prometheus/alerts.yml and its unit tests;
#   - scripts/check_observability.py: `rewardflow dev` with real traffic, `promtool
#     check metrics` on /metrics, Prometheus scraping it, and every Grafana panel
#     query and alert rule evaluated through Prometheus' HTTP API.
# Installs Prometheus (which includes promtool) from Debian when missing. Part of
# scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        say "need root to run: $*"; exit 1
    fi
}

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    say "installing Prometheus (and promtool) from Debian"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >&2
fi
if ! command -v python3 >/dev/null; then
    say "installing python3"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 >&2
fi

say "promtool check config / rules / test rules"
promtool check config prometheus/prometheus.yml
promtool check rules prometheus/alerts.yml
(cd prometheus && promtool test rules alerts.test.yml)

say "building rewardflow"
cargo build --locked --bin rewardflow
python3 scripts/check_observability.py
