#!/usr/bin/env bash
# Installs the contracts' toolchain (solc-js, forge, anvil, OpenZeppelin) with npm ci
# when node_modules is missing or stale. Idempotent.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_deps
