#!/usr/bin/env node
// Runs on `npm install`: builds the native addon from source (never downloads a prebuilt binary)
// and compiles the TypeScript to dist/. Without cargo the TypeScript twins are used, unless
// PGHA_REQUIRE_NATIVE=1 (CI), which makes a failed addon build fail the install.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const required = process.env.PGHA_REQUIRE_NATIVE === '1';
const run = (cmd, args) => spawnSync(cmd, args, { cwd: root, stdio: 'inherit', shell: false });

const cargo = spawnSync('cargo', ['--version'], { encoding: 'utf8' });
if (cargo.status !== 0) {
  const msg = 'pgha: cargo not found: the native addon is not built; the pure TypeScript implementation will be used';
  if (required) {
    console.error(`${msg} (PGHA_REQUIRE_NATIVE=1: failing)`);
    process.exit(1);
  }
  console.warn(msg);
} else {
  console.log(`pgha: building the native addon with ${cargo.stdout.trim()}`);
  const napi = join(root, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js');
  const r = run(process.execPath, [napi, 'build', '--platform', '--release', '--manifest-path', 'native/Cargo.toml', '--output-dir', 'native', '--js', 'binding.cjs', '--dts', 'binding.d.ts']);
  if (r.status !== 0) {
    const msg = 'pgha: native addon build failed; the pure TypeScript implementation will be used';
    if (required) {
      console.error(`${msg} (PGHA_REQUIRE_NATIVE=1: failing)`);
      process.exit(1);
    }
    console.warn(msg);
  }
}
const tsc = run(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json']);
process.exit(tsc.status ?? 1);
