#!/usr/bin/env bash
# What active campaigns cost the ingestion path: pairs of run-benchmarks.sh runs,
# without campaigns and with CAMPAIGNS_PER_PRODUCT (default 10) per product, each on
# a fresh cluster, then every pair's change and the median. Run-to-run noise on a
# shared machine is larger than the change within one pair, hence pairs. Odd pairs
# run without campaigns first and even pairs with campaigns first, so that the order
# cannot weigh on the median.
#
#   load-tests/compare-campaigns.sh [pairs] [interactions] [concurrency]
#
# Environment: SCENARIO (default single; or batch), CAMPAIGNS_PER_PRODUCT (default 10).
# Each run's whole output is kept in $COMPARE_DIR (default /tmp/rewardflow-compare).
# Exits non-zero when a run fails or its exactly-once verification does not pass.
set -euo pipefail
cd "$(dirname "$0")/.."

PAIRS=${1:-3}
INTERACTIONS=${2:-300000}
CONCURRENCY=${3:-256}
SCENARIO=${SCENARIO:-single}
CAMPAIGNS=${CAMPAIGNS_PER_PRODUCT:-10}
OUT=${COMPARE_DIR:-/tmp/rewardflow-compare}
mkdir -p "$OUT"
case "$SCENARIO" in
    single) single=$CONCURRENCY batch=16 ;;
    batch) single=256 batch=$CONCURRENCY ;;
    *) echo "SCENARIO must be single or batch" >&2; exit 2 ;;
esac

# One run; prints "rate p50 p99" of its scenario.
run() {
    local campaigns=$1 log="$OUT/campaigns-$1-pair-$2.log"
    CAMPAIGNS_PER_PRODUCT=$campaigns SCENARIOS=$SCENARIO \
        load-tests/run-benchmarks.sh "$INTERACTIONS" "$single" "$batch" >"$log" 2>&1 ||
        { echo "run failed: $log" >&2; exit 1; }
    grep -q '=> OK' "$log" || { echo "verification failed: $log" >&2; exit 1; }
    sed -n 's/.*interactions_per_s=\([0-9]*\).* p50=\([0-9.]*ms\) p99=\([0-9.]*ms\).*/\1 \2 \3/p' "$log"
}

echo "## machine"
echo "cpus=$(nproc) model=\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\" memory=$(free -g | awk '/Mem:/{print $2}')GiB"
echo "## $SCENARIO: $INTERACTIONS interactions, concurrency $CONCURRENCY, 0 vs $CAMPAIGNS campaigns per product"
echo "| pair | order | no campaigns: acked/s (p50, p99) | $CAMPAIGNS campaigns per product: acked/s (p50, p99) | change |"
echo "|---|---|---:|---:|---:|"
changes=() bases=() withs=()
for pair in $(seq 1 "$PAIRS"); do
    if ((pair % 2)); then
        order="without first"
        base_result=$(run 0 "$pair")
        with_result=$(run "$CAMPAIGNS" "$pair")
    else
        order="with first"
        with_result=$(run "$CAMPAIGNS" "$pair")
        base_result=$(run 0 "$pair")
    fi
    read -r base base_p50 base_p99 <<<"$base_result"
    read -r with with_p50 with_p99 <<<"$with_result"
    change=$(awk -v a="$base" -v b="$with" 'BEGIN { printf "%+.1f", (b - a) * 100 / a }')
    changes+=("$change") bases+=("$base") withs+=("$with")
    echo "| $pair | $order | $base ($base_p50, $base_p99) | $with ($with_p50, $with_p99) | $change% |"
done
median=$(printf '%s\n' "${changes[@]}" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
echo "median change: $median%"
# The median is of the pairs' changes; the means, of the runs themselves.
printf '%s %s\n' "${bases[*]}" "${withs[*]}" | awk -v n="$PAIRS" '{
    for (i = 1; i <= n; i++) { a += $i; b += $(n + i) }
    printf "means: %.0f without, %.0f with campaigns acked/s: %+.1f%%\n", a / n, b / n, (b - a) * 100 / a
}'
