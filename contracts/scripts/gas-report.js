#!/usr/bin/env node
// gas-report.js FORGE_LOG RUN_JSON REPORT_MD BENCHMARKS_MD
// Pairs the GAS_LABEL=... lines of the GasBench script with the receipts of its
// pushRewards / pullReward / pullRewards transactions (same order) and writes the table.
'use strict';
const fs = require('fs');
const [logFile, runFile, reportFile, benchFile] = process.argv.slice(2);

const labels = [...fs.readFileSync(logFile, 'utf8').matchAll(/GAS_LABEL=(\S+)/g)].map((m) => m[1]);
const run = JSON.parse(fs.readFileSync(runFile, 'utf8'));
const gasByHash = new Map(run.receipts.map((r) => [r.transactionHash, Number(BigInt(r.gasUsed))]));
const measured = run.transactions.filter((t) => /^(pushRewards|pullReward|pullRewards)\(/.test(t.function || ''));
if (measured.length !== labels.length) {
  throw new Error(`labels (${labels.length}) and measured transactions (${measured.length}) differ`);
}
const g = {};
measured.forEach((t, i) => {
  if (labels[i] !== 'setup') g[labels[i]] = gasByHash.get(t.hash);
});
for (const [k, v] of Object.entries(g)) if (!Number.isFinite(v)) throw new Error(`no receipt for ${k}`);

const fmt = (n) => Math.round(n).toLocaleString('en-US');
const slope = (big, small, n) => (g[big] - g[small]) / (n - 1);
const perNew = slope('push_capped_new_100', 'push_capped_new_1', 100);
const perRet = slope('push_capped_returning_100', 'push_capped_returning_1', 100);
const perNewU = slope('push_unlimited_new_100', 'push_unlimited_new_1', 100);
const perRetU = slope('push_unlimited_returning_100', 'push_unlimited_returning_1', 100);
const fixed = g.push_capped_new_1 - perNew;
const fixedU = g.push_unlimited_new_1 - perNewU;
const ok = (v, max) => (v <= max ? 'yes' : `**no** (+${fmt(v - max)})`);

const rows = [
  ['Per pushed reward, first-time recipient (capped campaign)', perNew, 27000, '≈24,800 (22,100 zero→non-zero SSTORE + RewardAdded log + calldata)'],
  ['Per pushed reward, first-time recipient (unlimited campaign)', perNewU, 27000, '≈24,800'],
  ['Per pushed reward, returning recipient (capped)', perRet, 9000, '≈7,700 (5,000 warm-able SSTORE + log + calldata)'],
  ['Per pushed reward, returning recipient (unlimited)', perRetU, 9000, '≈7,700'],
  ['Fixed per batch, capped (whole tx, incl. the 21,000 base)', fixed, 80000, '≈92,000 for this design: 21,000 tx + 22,100 fresh nonce + 3,000 ecrecover + ~15,000 bank→claim-contract ERC20 transfer + 6 cold slots (paused, signer role, budget, allocated, pusher, totalPending) + 3 updates + 2 cold calls + RewardsPushed log'],
  ['Fixed per batch, capped (execution, excl. the 21,000 base)', fixed - 21000, 80000, ''],
  ['Fixed per batch, unlimited (whole tx)', fixedU, 80000, 'budget check reads the balance instead of updating two slots'],
  ['Fixed per batch, unlimited (execution, excl. the 21,000 base)', fixedU - 21000, 80000, ''],
  ['pullReward, claimer holds no token yet', g.pullReward_fresh_holder, 70000, '≈63,000: 21,000 tx + 22,100 new ERC20 balance slot + 2×5,000 ours + transfer/logs'],
  ['pullReward, claimer already holds the token', g.pullReward_returning_holder, 70000, ''],
];
for (const kind of ['fresh_holder', 'returning_holder']) {
  for (let k = 1; k <= 3; k++) {
    rows.push([`pullRewards k=${k}, ${kind === 'fresh_holder' ? 'claimer holds none of the tokens' : 'claimer already holds them'}`,
      g[`pullRewards_${k}_${kind}`], 35000 + 35000 * k,
      kind === 'fresh_holder' ? '≈21,000 + 44,000·k: each new token costs the ERC20 its 22,100 new-balance slot' : '≈21,000 + 27,000·k']);
  }
}
const batches = [
  ['Batch of 1, first-time (capped)', g.push_capped_new_1],
  ['Batch of 10, first-time (capped)', g.push_capped_new_10],
  ['Batch of 100, first-time (capped)', g.push_capped_new_100],
  ['Batch of 100, returning (capped)', g.push_capped_returning_100],
  ['Batch of 100, first-time (unlimited)', g.push_unlimited_new_100],
  ['Batch of 100, returning (unlimited)', g.push_unlimited_returning_100],
];

const date = new Date().toISOString().slice(0, 10);
const md = [
  `Measured ${date} on anvil 1.7.1 (real transactions, receipts' gasUsed), solc 0.8.30 (optimizer 10,000 runs, cancun),`,
  'standard OpenZeppelin 5.4 ERC20 (`TestToken`), realistic non-zero amounts and random recipient addresses.',
  'Command: `contracts/scripts/gas.sh` (runs `script/GasBench.s.sol` on a fresh anvil; per-reward figures are the',
  'slope between batches of 1 and 100, the fixed cost is the intercept).',
  '',
  '| Measure | Gas | SPEC §12 target | Within | Floor / note |',
  '|---|---:|---:|---|---|',
  ...rows.map(([n, v, max, note]) => `| ${n} | ${fmt(v)} | ≤ ${fmt(max)} | ${ok(v, max)} | ${note} |`),
  '',
  '| Whole batch | Gas | Per reward | vs design estimate (~900k / 100 rewards) | vs role-based push hub without signatures (~15k / op) |',
  '|---|---:|---:|---:|---:|',
  ...batches.map(([n, v]) => {
    const size = Number(n.match(/of (\d+)/)[1]);
    return `| ${n} | ${fmt(v)} | ${fmt(v / size)} | ${size === 100 ? (v / 900000).toFixed(2) + '×' : ''} | ${(v / size / 15000).toFixed(2)}× |`;
  }),
  '',
  'Reading: per pushed reward the contracts spend about 600 gas above the storage floor (returning recipients',
  'are a warm 5,000-gas update because `earned`/`claimed` are cumulative and never reset to zero). The design',
  "estimate of ~900k per 100 rewards is only reachable with returning recipients; a first-time recipient's",
  'zero-to-non-zero slot (22,100) alone exceeds it. Where a SPEC target is missed, the excess is storage the',
  'design must touch, not code: the whole-transaction fixed cost contains the 21,000 transaction base, a fresh',
  'random nonce slot (22,100) and the ERC20 transfer bank → claim contract (~15,000), so it is within 80,000',
  'only when the base is excluded; `pullRewards` for a claimer holding none of the k tokens pays the ERC20',
  "its 22,100 new-balance slot per token, and is within target as soon as the claimer holds the tokens.",
  '',
].join('\n');

fs.writeFileSync(reportFile, `# Gas report (contracts)\n\n${md}`);

const section = `## Gas (contracts)\n\n${md}\nDetails and design notes: \`contracts/README.md\`, raw report \`contracts/gas-report.md\`.\n`;
let bench = fs.existsSync(benchFile) ? fs.readFileSync(benchFile, 'utf8') : '# rewardflow benchmarks\n\n';
const start = bench.indexOf('## Gas (contracts)');
if (start < 0) {
  bench = bench.replace(/\n*$/, '\n\n') + section;
} else {
  const rest = bench.slice(start + 1);
  const next = rest.search(/^## /m);
  bench = bench.slice(0, start) + section + (next < 0 ? '' : '\n' + rest.slice(next));
}
fs.writeFileSync(benchFile, bench);
process.stdout.write(md + '\n');
