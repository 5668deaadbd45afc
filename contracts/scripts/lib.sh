# Shared helpers for the contracts scripts (sourced, not run).
set -euo pipefail
CONTRACTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FORGE="$CONTRACTS_DIR/node_modules/.bin/forge"
ANVIL="$CONTRACTS_DIR/node_modules/.bin/anvil"

log() { echo "contracts: $*" >&2; }

# npm ci when node_modules is missing or was installed from another package-lock.json.
ensure_deps() {
  local stamp="$CONTRACTS_DIR/node_modules/.rewardflow-lock.sha256"
  local want
  want="$(sha256sum "$CONTRACTS_DIR/package-lock.json" | cut -d' ' -f1)"
  if [[ ! -x "$FORGE" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    log "installing the toolchain (npm ci)"
    # --ignore-scripts: the binaries come from the platform packages; nothing is downloaded.
    (cd "$CONTRACTS_DIR" && npm ci --ignore-scripts --no-audit --no-fund >&2)
    echo "$want" >"$stamp"
  fi
}
