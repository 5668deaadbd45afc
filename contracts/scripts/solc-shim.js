#!/usr/bin/env node
// Minimal `solc` command-line stand-in backed by solc-js, enough for forge:
//   solc --version
//   solc [ignored flags...] --standard-json   (input on stdin, output on stdout)
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require('solc');

const args = process.argv.slice(2);
if (args.includes('--version')) {
  const v = solc.version().replace('.Emscripten.clang', '');
  process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${v}.Linux.g++\n`);
  process.exit(0);
}
if (!args.includes('--standard-json')) {
  process.stderr.write('solc-shim: only --version and --standard-json are supported\n');
  process.exit(1);
}

// Base directory for relative imports: --base-path if given, else cwd.
const baseIdx = args.indexOf('--base-path');
const base = baseIdx >= 0 ? args[baseIdx + 1] : process.cwd();
const includes = [];
args.forEach((a, i) => { if (a === '--include-path') includes.push(args[i + 1]); });

function findImports(p) {
  for (const root of [base, ...includes, process.cwd()]) {
    const full = path.isAbsolute(p) ? p : path.join(root, p);
    if (fs.existsSync(full)) return { contents: fs.readFileSync(full, 'utf8') };
  }
  return { error: `File not found: ${p}` };
}

const input = fs.readFileSync(0, 'utf8');
process.stdout.write(solc.compile(input, { import: findImports }));
