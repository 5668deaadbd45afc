#!/usr/bin/env node
// export-artifacts.js OUT_DIR DEST_DIR Name... : copies {abi, bytecode, deployedBytecode}
// of each contract from forge's out/ into DEST_DIR/Name.json with stable formatting.
'use strict';
const fs = require('fs');
const path = require('path');

const [outDir, destDir, ...names] = process.argv.slice(2);
fs.mkdirSync(destDir, { recursive: true });
for (const name of names) {
  const src = path.join(outDir, `${name}.sol`, `${name}.json`);
  const built = JSON.parse(fs.readFileSync(src, 'utf8'));
  const hex = (b) => {
    const s = typeof b === 'string' ? b : b.object;
    return s.startsWith('0x') ? s : `0x${s}`;
  };
  const artifact = {
    contractName: name,
    abi: built.abi,
    bytecode: hex(built.bytecode),
    deployedBytecode: hex(built.deployedBytecode),
  };
  if (artifact.bytecode.length <= 2) throw new Error(`${name}: empty bytecode`);
  fs.writeFileSync(path.join(destDir, `${name}.json`), JSON.stringify(artifact, null, 2) + '\n');
}
