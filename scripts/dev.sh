#!/usr/bin/env bash
# Sets everything up and runs rewardflow on its embedded defaults: a local
# PostgreSQL cluster it starts itself (kept under .rewardflow/ between runs).
# Extra arguments go to `rewardflow dev` (e.g. --listen 127.0.0.1:9090).
# Prints `DATABASE_URL=…` and `listening on http://…`; Ctrl-C stops it cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --bin rewardflow
exec target/release/rewardflow dev "$@"
