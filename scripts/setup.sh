#!/usr/bin/env bash
# Installs what rewardflow needs on a fresh machine (idempotent):
#   - a Rust toolchain (must already be there: cargo);
#   - PostgreSQL server binaries (initdb, pg_ctl, postgres) — Debian's postgresql;
#   - Node.js and npm, for the contracts' toolchain (solc-js, forge, anvil from npm);
#   - the contracts' npm packages (npm ci, from the committed lock file).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        say "need root to run: $*"; exit 1
    fi
}

apt_updated=0
apt_install() {
    if [ $apt_updated = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

if ! command -v cargo >/dev/null; then
    say "cargo not found: install a Rust toolchain (rustup) first"; exit 1
fi

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
    say "installing PostgreSQL server binaries"
    apt_install postgresql
fi
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    say "creating the postgres system user"
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

if ! command -v npm >/dev/null; then
    say "installing Node.js and npm"
    apt_install nodejs npm
fi

contracts/scripts/install.sh
