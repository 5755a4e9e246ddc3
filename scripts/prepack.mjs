#!/usr/bin/env node
// `prepack` (npm pack / npm publish at the package root): builds what the tarball holds — dist/ from
// `tsc` — and refuses to pack build output whose source is gone (a stale dist/src/x.js would ship).
// The tarball's content is package.json `files` (dist/src/**/*.js, dist/proxy/**/*.js) plus README
// and LICENSE. Release tarballs with the platform packages' optionalDependencies come from
// `npm run pack` (scripts/pack.mjs) or from `napi pre-publish` in a release job.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const tsc = spawnSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
if (tsc.status !== 0) {
  console.error('pgha prepack: tsc failed');
  process.exit(1);
}
const stale = [];
const walk = (dir) => {
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) walk(p);
    else if (p.endsWith('.js') && !existsSync(join(root, relative(join(root, 'dist'), p)).replace(/\.js$/, '.ts'))) stale.push(relative(root, p));
  }
};
for (const d of ['src', 'proxy']) if (existsSync(join(root, 'dist', d))) walk(join(root, 'dist', d));
if (stale.length > 0) {
  console.error(`pgha prepack: dist/ holds build output with no source (${stale.join(', ')}): remove dist/ and pack again`);
  process.exit(1);
}
