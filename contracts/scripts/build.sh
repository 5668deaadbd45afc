#!/usr/bin/env bash
# Builds the contracts and writes artifacts/<Name>.json ({contractName, abi, bytecode,
# deployedBytecode}) for the Rust side (alloy `sol!(Name, "path.json")`).
#   build.sh           regenerate artifacts/
#   build.sh --check   fail if artifacts/ differs from a fresh build (changes nothing)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_deps
cd "$CONTRACTS_DIR"
"$FORGE" build >&2

dest="$CONTRACTS_DIR/artifacts"
if [[ "${1:-}" == "--check" ]]; then
  dest="$(mktemp -d)"
  trap 'rm -rf "$dest"' EXIT
fi
node "$CONTRACTS_DIR/scripts/export-artifacts.js" "$CONTRACTS_DIR/out" "$dest" \
  ProductBank MultiTokenPushPull ProductBankFactory TestToken

if [[ "${1:-}" == "--check" ]]; then
  if ! diff -r -q "$dest" "$CONTRACTS_DIR/artifacts" >&2; then
    log "ERROR: contracts/artifacts/ is out of date with the Solidity sources."
    log "       Run contracts/scripts/build.sh and commit contracts/artifacts/."
    exit 1
  fi
  log "artifacts are up to date"
else
  log "artifacts written to $dest"
fi
