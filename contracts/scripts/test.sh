#!/usr/bin/env bash
# The contracts' test command: toolchain, build, artifact check, forge test
# (fuzz 256 runs, invariants 256 runs x depth 100, from foundry.toml). Any cwd.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_deps
"$CONTRACTS_DIR/scripts/build.sh" --check
cd "$CONTRACTS_DIR"
"$FORGE" test "$@"
