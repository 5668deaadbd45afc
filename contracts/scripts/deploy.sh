#!/usr/bin/env bash
# deploy.sh RPC_URL — deploys MultiTokenPushPull, ProductBankFactory, a TestToken (minted
# to the deployer), the bank of PRODUCT_ID through the factory; authorizes the bank as a
# pusher, grants DISTRIBUTOR_ROLE, deposits FUND_AMOUNT. Prints on stdout exactly:
#   MULTI_TOKEN_PUSH_PULL=0x…  PRODUCT_BANK_FACTORY=0x…  DEMO_TOKEN=0x…  PRODUCT_BANK=0x…
# (one per line); everything else goes to stderr.
# Environment (all optional):
#   DEPLOYER_PRIVATE_KEY  deployer = pushPull owner = bank owner/manager (anvil account 0)
#   DISTRIBUTOR           address granted DISTRIBUTOR_ROLE (default: the deployer)
#   PRODUCT_ID            bytes32 (default keccak256("demo.rewardflow.local"))
#   FUND_AMOUNT           base units deposited into the bank (default 1e24; 0 = none)
#   PRODUCT_BANK_FACTORY  reuse this factory (and its MultiTokenPushPull) instead of deploying
#   DEMO_TOKEN            reuse this token instead of deploying one (deployer must hold FUND_AMOUNT)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if [[ $# -ne 1 ]]; then
  echo "usage: $0 RPC_URL" >&2
  exit 2
fi
ensure_deps
cd "$CONTRACTS_DIR"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
if ! "$FORGE" script script/Deploy.s.sol:Deploy --rpc-url "$1" --broadcast --slow >"$out" 2>&1; then
  cat "$out" >&2
  log "ERROR: deployment failed"
  exit 1
fi
cat "$out" >&2
lines="$(sed -n -E 's/^ *((MULTI_TOKEN_PUSH_PULL|PRODUCT_BANK_FACTORY|DEMO_TOKEN|PRODUCT_BANK)=0x[0-9a-fA-F]{40}) *$/\1/p' "$out")"
if [[ "$(wc -l <<<"$lines")" -ne 4 ]]; then
  log "ERROR: could not read the deployed addresses"
  exit 1
fi
echo "$lines"
